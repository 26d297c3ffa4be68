use std::collections::HashMap;

use super::*;
use crate::config::parse;

/// Request data from maps, counting host reads.
#[derive(Default)]
pub struct MapRequest {
    pub headers: HashMap<String, Vec<u8>>,
    pub properties: HashMap<Vec<String>, Vec<u8>>,
}

impl MapRequest {
    pub fn with(headers: &[(&str, &str)]) -> Self {
        Self {
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
            properties: HashMap::new(),
        }
    }
}

impl RequestData for MapRequest {
    fn header(&mut self, name: &str) -> Option<Vec<u8>> {
        self.headers.get(name).cloned()
    }
    fn property(&mut self, path: &[String]) -> Option<Vec<u8>> {
        self.properties.get(path).cloned()
    }
}

fn config(descriptors: &str) -> Config {
    parse(
        format!(r#"{{"domain":"d","service":{{"cluster":"c"}},"descriptors":[{descriptors}]}}"#)
            .as_bytes(),
    )
    .unwrap()
}

fn entries(config: &Config, req: &mut MapRequest) -> Vec<Vec<(String, String)>> {
    build(config, req)
        .unwrap()
        .descriptors
        .into_iter()
        .map(|d| d.entries)
        .collect()
}

fn e(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn each_action_yields_its_entry() {
    let c = config(
        r#"{"actions":[{"generic_key":{"descriptor_value":"checkout"}},
                       {"request_header":{"header":"x-app-id","key":"app_id"}},
                       {"query_parameter":{"name":"plan","key":"plan"}},
                       {"method":{}},
                       {"path":{"prefix":"/api/","descriptor_value":"api"}}]}"#,
    );
    let mut req = MapRequest::with(&[
        (":path", "/api/v1?x=1&plan=gold%20plus#frag"),
        (":method", "POST"),
        ("x-app-id", "web"),
    ]);
    assert_eq!(
        entries(&c, &mut req),
        vec![e(&[
            ("generic_key", "checkout"),
            ("app_id", "web"),
            ("plan", "gold plus"),
            ("method", "POST"),
            ("header_match", "api")
        ])]
    );
}

#[test]
fn a_missing_value_drops_the_descriptor_unless_skipped() {
    let c = config(
        r#"{"actions":[{"request_header":{"header":"x-org","key":"org"}},{"request_header":{"header":"x-team","key":"team"}}]},
           {"actions":[{"request_header":{"header":"x-org","key":"org"}},{"request_header":{"header":"x-team","key":"team","skip_if_absent":true}}]},
           {"actions":[{"request_header":{"header":"x-none","key":"n","skip_if_absent":true}}]}"#,
    );
    let mut req = MapRequest::with(&[("x-org", "acme")]);
    let Built {
        descriptors: built,
        dropped,
    } = build(&c, &mut req).unwrap();
    assert_eq!(
        built
            .iter()
            .map(|d| (d.def, d.entries.clone()))
            .collect::<Vec<_>>(),
        vec![(1, e(&[("org", "acme")]))]
    );
    assert_eq!(
        dropped,
        vec![
            Dropped {
                def: 0,
                action: 1,
                reason: "header absent"
            },
            Dropped {
                def: 2,
                action: 0,
                reason: "every action skipped"
            },
        ]
    );
}

#[test]
fn matches_methods_and_paths() {
    let c = config(
        r#"{"actions":[{"method":{"methods":["POST","PUT"],"descriptor_value":"writes"}}]},
           {"actions":[{"path":{"exact":"/login","descriptor_value":"login"}}]},
           {"actions":[{"path":{"prefix":"/admin","descriptor_value":"public","expect_match":false}}]}"#,
    );
    let run = |method: &str, path: &str| {
        entries(
            &c,
            &mut MapRequest::with(&[(":method", method), (":path", path)]),
        )
    };
    assert_eq!(
        run("put", "/login?next=/"),
        vec![
            e(&[("method", "writes")]),
            e(&[("header_match", "login")]),
            e(&[("header_match", "public")])
        ]
    );
    assert_eq!(
        run("GET", "/admin/users"),
        Vec::<Vec<(String, String)>>::new()
    );
    assert_eq!(
        run("GET", "/login/x"),
        vec![e(&[("header_match", "public")])]
    );
}

#[test]
fn remote_addresses_plain_and_masked() {
    let c = config(
        r#"{"actions":[{"remote_address":{}}]},{"actions":[{"remote_address":{"v4_prefix_len":24,"v6_prefix_len":48}}]}"#,
    );
    let mut req = MapRequest::default();
    req.properties.insert(
        vec!["source".into(), "address".into()],
        b"198.51.100.23:50432".to_vec(),
    );
    assert_eq!(
        entries(&c, &mut req),
        vec![
            e(&[("remote_address", "198.51.100.23")]),
            e(&[("masked_remote_address", "198.51.100.0/24")])
        ]
    );
    req.properties.insert(
        vec!["source".into(), "address".into()],
        b"[2001:db8:1:2::9]:443".to_vec(),
    );
    assert_eq!(
        entries(&c, &mut req),
        vec![
            e(&[("remote_address", "2001:db8:1:2::9")]),
            e(&[("masked_remote_address", "2001:db8:1::/48")])
        ]
    );
    req.properties.insert(
        vec!["source".into(), "address".into()],
        b"not an address".to_vec(),
    );
    assert!(entries(&c, &mut req).is_empty());
}

#[test]
fn metadata_and_jwt_claims() {
    let c = config(
        r#"{"actions":[{"metadata":{"property":["metadata","jwt","sub"],"key":"user"}}]},
           {"actions":[{"metadata":{"property":["metadata","jwt","plan"],"key":"plan","default_value":"free"}}]},
           {"actions":[{"jwt_claim":{"claim":"org.id","key":"org"}}]}"#,
    );
    let payload = crate::jwt::tests::encode(br#"{"org":{"id":"acme"}}"#);
    let mut req = MapRequest::with(&[("authorization", &format!("Bearer h.{payload}.s"))]);
    req.properties.insert(
        vec!["metadata".into(), "jwt".into(), "sub".into()],
        b"alice".to_vec(),
    );
    assert_eq!(
        entries(&c, &mut req),
        vec![
            e(&[("user", "alice")]),
            e(&[("plan", "free")]),
            e(&[("org", "acme")])
        ]
    );
}

/// The invalid outcome of one request, as (descriptor, action, why).
fn invalid(c: &Config, req: &mut MapRequest) -> (usize, usize, Unusable) {
    match build(c, req) {
        Err(Invalid::Unusable { def, action, why }) => (def, action, why),
        other => panic!("not invalid: {other:?}"),
    }
}

#[test]
fn present_request_header_values_that_cannot_be_used_refuse_the_request() {
    let c = config(
        r#"{"actions":[{"request_header":{"header":"x-a","key":"a","skip_if_absent":true}}]}"#,
    );
    let mut req = MapRequest::default();
    req.headers.insert("x-a".into(), vec![b'w', 0xff, 0xfe]);
    assert_eq!(invalid(&c, &mut req), (0, 0, Unusable::NotUtf8));
    req.headers.insert("x-a".into(), vec![b'a'; 4097]);
    assert_eq!(
        invalid(&c, &mut req),
        (
            0,
            0,
            Unusable::TooLong {
                bytes: 4097,
                max: 4096
            }
        )
    );
    // At the bound, and empty, are values.
    req.headers.insert("x-a".into(), vec![b'a'; 4096]);
    assert_eq!(entries(&c, &mut req)[0][0].1.len(), 4096);
    req.headers.insert("x-a".into(), Vec::new());
    assert_eq!(entries(&c, &mut req), vec![e(&[("a", "")])]);
    // Absent: skipped, as configured; the request goes on without the descriptor.
    req.headers.clear();
    assert_eq!(build(&c, &mut req).unwrap().descriptors, vec![]);
}

#[test]
fn the_value_bound_is_configurable() {
    let c = parse(
        br#"{"domain":"d","service":{"cluster":"c"},"max_value_bytes":8,
             "descriptors":[{"actions":[{"request_header":{"header":"x-a","key":"a"}}]}]}"#,
    )
    .unwrap();
    let mut req = MapRequest::with(&[("x-a", "12345678")]);
    assert_eq!(entries(&c, &mut req), vec![e(&[("a", "12345678")])]);
    let mut req = MapRequest::with(&[("x-a", "123456789")]);
    assert_eq!(
        invalid(&c, &mut req),
        (0, 0, Unusable::TooLong { bytes: 9, max: 8 })
    );
}

#[test]
fn query_parameters_that_do_not_decode_to_utf8_refuse_the_request() {
    let c = config(r#"{"actions":[{"query_parameter":{"name":"app","key":"app"}}]}"#);
    let run = |path: &[u8]| {
        let mut req = MapRequest::default();
        req.headers.insert(":path".into(), path.to_vec());
        build(&c, &mut req)
    };
    for bad in [
        &b"/p?app=%ff"[..],
        b"/p?app=%C3%28",
        b"/p?app=ok%E2%82",
        b"/p?app=\xff",
        b"/p?x=1&app=%fe&app=web",
    ] {
        assert_eq!(
            run(bad),
            Err(Invalid::Unusable {
                def: 0,
                action: 0,
                why: Unusable::DecodedNotUtf8
            }),
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    let long = format!("/p?app={}", "%41".repeat(4097));
    assert_eq!(
        run(long.as_bytes()),
        Err(Invalid::Unusable {
            def: 0,
            action: 0,
            why: Unusable::TooLong {
                bytes: 4097,
                max: 4096
            }
        })
    );
    // A path that is not UTF-8 elsewhere does not hide the parameter, and does not make it
    // unusable.
    let Ok(built) = run(b"/\xff/x?app=web%20app") else {
        panic!("refused")
    };
    assert_eq!(built.descriptors[0].entries, e(&[("app", "web app")]));
    // Malformed escapes stay as they are: a usable value.
    assert_eq!(
        run(b"/p?app=%zz%4").unwrap().descriptors[0].entries,
        e(&[("app", "%zz%4")])
    );
    // Absent, or a name that is not UTF-8: the descriptor is dropped, as in Envoy.
    for absent in [&b"/p?other=%ff"[..], b"/p", b"/p?ap%ffp=1"] {
        let built = run(absent).unwrap();
        assert!(built.descriptors.is_empty());
        assert_eq!(built.dropped[0].reason, "query parameter absent");
    }
}

#[test]
fn methods_and_metadata_that_cannot_be_used_refuse_the_request() {
    let c = config(
        r#"{"actions":[{"method":{}}]},
           {"actions":[{"metadata":{"property":["metadata","sub"],"key":"user","default_value":"anon"}}]}"#,
    );
    let mut req = MapRequest::default();
    req.headers.insert(":method".into(), b"GET".to_vec());
    req.properties
        .insert(vec!["metadata".into(), "sub".into()], vec![0xc3, 0x28]);
    assert_eq!(invalid(&c, &mut req), (1, 0, Unusable::NotUtf8));
    req.headers.insert(":method".into(), vec![0xff]);
    assert_eq!(invalid(&c, &mut req), (0, 0, Unusable::NotUtf8));
    // The default value is for an absent property only.
    req.headers.insert(":method".into(), b"GET".to_vec());
    req.properties.clear();
    assert_eq!(
        entries(&c, &mut req),
        vec![e(&[("method", "GET")]), e(&[("user", "anon")])]
    );
}

#[test]
fn configured_values_compare_request_bytes_and_are_never_unusable() {
    let c = config(
        r#"{"actions":[{"path":{"prefix":"/api/","descriptor_value":"api"}}]},
           {"actions":[{"method":{"methods":["POST"],"descriptor_value":"writes"}}]}"#,
    );
    let mut req = MapRequest::default();
    req.headers.insert(":path".into(), b"/api/\xff".to_vec());
    req.headers.insert(":method".into(), vec![0xff]);
    // The path still matches: a client cannot leave `/api/` unlimited with a byte that is not
    // UTF-8. The method is not POST, so that descriptor does not apply.
    let built = build(&c, &mut req).unwrap();
    assert_eq!(built.descriptors.len(), 1);
    assert_eq!(built.descriptors[0].entries, e(&[("header_match", "api")]));
    assert_eq!(built.dropped[0].reason, "method does not match");
}

#[test]
fn bearer_tokens_that_are_present_but_unusable_refuse_the_request() {
    let c = parse(
        br#"{"domain":"d","service":{"cluster":"c"},"max_token_bytes":256,
             "descriptors":[{"actions":[{"jwt_claim":{"claim":"org","key":"org","skip_if_absent":true}}]}]}"#,
    )
    .unwrap();
    let bearer = |payload: &str| {
        format!(
            "Bearer h.{}.s",
            crate::jwt::tests::encode(payload.as_bytes())
        )
    };
    let run = |auth: Option<Vec<u8>>| {
        let mut req = MapRequest::default();
        if let Some(a) = auth {
            req.headers.insert("authorization".into(), a);
        }
        build(&c, &mut req)
    };
    let unusable = |why| {
        Err(Invalid::Unusable {
            def: 0,
            action: 0,
            why,
        })
    };
    assert_eq!(
        run(Some(bearer(r#"{"org":"acme"}"#).into_bytes()))
            .unwrap()
            .descriptors[0]
            .entries,
        e(&[("org", "acme")])
    );
    let long = bearer(&format!(r#"{{"org":"acme","pad":"{}"}}"#, "x".repeat(300)));
    assert_eq!(
        run(Some(long.clone().into_bytes())),
        unusable(Unusable::TokenTooLong {
            bytes: long.len() - "Bearer ".len(),
            max: 256
        })
    );
    for bad in ["Bearer not-a-jwt", "Bearer a.!!!.b", "bearer a.b"] {
        assert_eq!(
            run(Some(bad.into())),
            unusable(Unusable::TokenUndecodable),
            "{bad}"
        );
    }
    assert_eq!(
        run(Some(bearer(r#"{"org":{"id":1}}"#).into_bytes())),
        unusable(Unusable::ClaimNotScalar)
    );
    assert_eq!(
        run(Some(b"Bearer \xff".to_vec())),
        unusable(Unusable::NotUtf8)
    );
    // Absent: no header, no bearer token in it, or no such claim. Skipped as configured.
    for absent in [
        None,
        Some(b"Basic dXNlcjpwdw==".to_vec()),
        Some(b"Bearer ".to_vec()),
        Some(bearer(r#"{"sub":"x"}"#).into_bytes()),
        Some(bearer(r#"{"org":null}"#).into_bytes()),
    ] {
        assert_eq!(run(absent).unwrap().descriptors, vec![]);
    }
}

#[test]
fn an_unusable_value_refuses_whatever_the_order_of_actions() {
    let c = config(
        r#"{"actions":[{"request_header":{"header":"x-org","key":"org"}},{"request_header":{"header":"x-app","key":"app"}}]}"#,
    );
    let mut req = MapRequest::default();
    req.headers.insert("x-app".into(), vec![0xff]);
    assert_eq!(invalid(&c, &mut req), (0, 1, Unusable::NotUtf8));
}

#[test]
fn descriptors_over_the_request_bound_refuse_the_request() {
    // Two descriptors of 4096-byte values in domain `d`: 1 + 2 * (1 + 4096) bytes, over 8000.
    let c = parse(
        br#"{"domain":"d","service":{"cluster":"c"},"max_request_bytes":8000,
             "descriptors":[{"actions":[{"request_header":{"header":"x-a","key":"a"}}]},
                            {"actions":[{"request_header":{"header":"x-b","key":"b"}}]}]}"#,
    )
    .unwrap();
    let v = "v".repeat(4096);
    let mut req = MapRequest::with(&[("x-a", &v), ("x-b", &v)]);
    assert_eq!(
        build(&c, &mut req),
        Err(Invalid::TooLarge {
            bytes: 1 + 2 * (1 + 4096)
        })
    );
    assert_eq!(
        Invalid::TooLarge { bytes: 8195 }.detail(&c),
        "the descriptors carry 8195 bytes of domain, keys and values, over max_request_bytes (8000)"
    );
    // Within the bound: checked as usual. Only the descriptors sent count.
    let mut req = MapRequest::with(&[("x-a", &v), ("x-b", "short")]);
    assert_eq!(build(&c, &mut req).unwrap().descriptors.len(), 2);
    let mut req = MapRequest::with(&[("x-a", &v)]);
    assert_eq!(build(&c, &mut req).unwrap().descriptors.len(), 1);
}

#[test]
fn the_detail_names_the_descriptor_and_action_but_never_the_value() {
    let c = config(
        r#"{"name":"per_app","actions":[{"generic_key":{"descriptor_value":"x"}},{"request_header":{"header":"x-app-id","key":"app_id"}}]},
           {"actions":[{"jwt_claim":{"claim":"org.id","key":"org"}}]},
           {"actions":[{"query_parameter":{"name":"plan","key":"plan"}}]}"#,
    );
    let secret = format!("s3cret{}", "x".repeat(5000));
    let mut req = MapRequest::with(&[("x-app-id", &secret)]);
    let err = build(&c, &mut req).unwrap_err();
    let detail = err.detail(&c);
    assert_eq!(
        detail,
        "descriptor \"per_app\", action 1 (request_header \"x-app-id\"): the value is 5006 bytes, over max_value_bytes (4096)"
    );
    assert!(!detail.contains("s3cret"));
    let mut req = MapRequest::with(&[("authorization", "Bearer s3cret")]);
    assert_eq!(
        build(&c, &mut req).unwrap_err().detail(&c),
        "descriptor \"descriptors[1]\", action 0 (jwt_claim \"org.id\" from \"authorization\"): the bearer token does not decode as a JWT"
    );
    let mut req = MapRequest::with(&[(":path", "/?plan=%ff")]);
    assert_eq!(
        build(&c, &mut req).unwrap_err().detail(&c),
        "descriptor \"descriptors[2]\", action 0 (query_parameter \"plan\"): the percent-decoded value is not UTF-8"
    );
}

#[test]
fn query_parameters_decode() {
    let q = |target: &str, name: &str| query_param(target.as_bytes(), name).map(|r| r.unwrap());
    assert_eq!(q("/p?a=1&b=x%2By+z&a=2", "a").as_deref(), Some("1"));
    assert_eq!(q("/p?a=1&b=x%2By+z", "b").as_deref(), Some("x+y z"));
    assert_eq!(q("/p?flag&b=1", "flag").as_deref(), Some(""));
    assert_eq!(q("/p?k%65y=v", "key").as_deref(), Some("v"));
    assert_eq!(q("/p?a=%zz%4", "a").as_deref(), Some("%zz%4"));
    assert_eq!(q("/p?a=1#frag&b=2", "b"), None);
    assert_eq!(q("/p", "a"), None);
    assert_eq!(
        query_param(b"/p?a=%ff", "a"),
        Some(Err(Unusable::DecodedNotUtf8))
    );
}

proptest::proptest! {
    /// Arbitrary header bytes, addresses and tokens never panic; every descriptor built has an
    /// entry per non-skipped action with a bounded value; and a value that cannot be used never
    /// lets the request go without its descriptor.
    #[test]
    fn arbitrary_requests_never_panic(
        path in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        app in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        addr in ".{0,40}",
        auth in "(Bearer |bearer |Basic )?[A-Za-z0-9_\\-=.]{0,200}",
    ) {
        let c = config(
            r#"{"actions":[{"request_header":{"header":"x-app","key":"app"}},{"query_parameter":{"name":"q","key":"q","skip_if_absent":true}}]},
               {"actions":[{"remote_address":{"v4_prefix_len":8,"v6_prefix_len":32}}]},
               {"actions":[{"jwt_claim":{"claim":"a.b","key":"ab"}}]},
               {"actions":[{"path":{"prefix":"/","descriptor_value":"root"}},{"method":{}}]}"#,
        );
        let mut req = MapRequest::default();
        let app_usable = std::str::from_utf8(&app).is_ok();
        let path_clean = std::str::from_utf8(&path).is_ok() && !path.contains(&b'%');
        let has_bearer = auth.to_ascii_lowercase().starts_with("bearer ");
        req.headers.insert(":path".into(), path);
        req.headers.insert("x-app".into(), app);
        req.headers.insert("authorization".into(), auth.into_bytes());
        req.properties.insert(vec!["source".into(), "address".into()], addr.into_bytes());
        match build(&c, &mut req) {
            Ok(built) => {
                proptest::prop_assert!(app_usable, "an unusable x-app was dropped");
                proptest::prop_assert_eq!(built.descriptors.len() + built.dropped.len(), 4);
                for d in built.descriptors {
                    proptest::prop_assert!(!d.entries.is_empty());
                    proptest::prop_assert!(d.entries.iter().all(|(_, v)| v.len() <= c.max_value_bytes));
                }
            }
            Err(Invalid::Unusable { .. }) => {
                proptest::prop_assert!(!app_usable || !path_clean || has_bearer);
            }
            Err(e @ Invalid::TooLarge { .. }) => proptest::prop_assert!(false, "{e:?}"),
        }
    }

    /// Any JSON payload, any claim path: no panic, and string claims come back as they were.
    #[test]
    fn arbitrary_jwt_payloads_never_panic(payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300), claim in "[a-z]{1,3}(\\.[a-z]{1,3}){0,3}") {
        let token = format!("h.{}.s", crate::jwt::tests::encode(&payload));
        let path: Vec<String> = claim.split('.').map(str::to_string).collect();
        let _ = crate::jwt::claim(&token, &path, 8192);
        let doc = format!(r#"{{"{}":"v\"1"}}"#, path[0]);
        let token = format!("h.{}.s", crate::jwt::tests::encode(doc.as_bytes()));
        let got = crate::jwt::claim(&token, &path[..1], 8192);
        proptest::prop_assert_eq!(got, Ok(Some("v\"1".to_string())));
    }
}
