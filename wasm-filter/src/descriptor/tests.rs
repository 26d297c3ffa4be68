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
        .0
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
    let (built, dropped) = build(&c, &mut req);
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
                reason: "absent"
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

#[test]
fn non_utf8_and_oversized_values_drop_the_descriptor() {
    let c = config(r#"{"actions":[{"request_header":{"header":"x-a","key":"a"}}]}"#);
    let mut req = MapRequest::default();
    req.headers.insert("x-a".into(), vec![0xff, 0xfe]);
    assert_eq!(build(&c, &mut req).1[0].reason, "not UTF-8");
    req.headers
        .insert("x-a".into(), vec![b'a'; MAX_VALUE_BYTES + 1]);
    assert_eq!(build(&c, &mut req).1[0].reason, "value too long");
}

#[test]
fn query_parameters_decode() {
    assert_eq!(
        query_param("/p?a=1&b=x%2By+z&a=2", "a").as_deref(),
        Some("1")
    );
    assert_eq!(
        query_param("/p?a=1&b=x%2By+z", "b").as_deref(),
        Some("x+y z")
    );
    assert_eq!(query_param("/p?flag&b=1", "flag").as_deref(), Some(""));
    assert_eq!(query_param("/p?k%65y=v", "key").as_deref(), Some("v"));
    assert_eq!(query_param("/p?a=%zz%4", "a").as_deref(), Some("%zz%4"));
    assert_eq!(query_param("/p?a=%ff", "a"), None);
    assert_eq!(query_param("/p", "a"), None);
}

proptest::proptest! {
    /// Arbitrary header bytes, addresses and tokens never panic, and every descriptor built has
    /// an entry per non-skipped action with a bounded UTF-8 value.
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
        req.headers.insert(":path".into(), path);
        req.headers.insert("x-app".into(), app);
        req.headers.insert("authorization".into(), auth.into_bytes());
        req.properties.insert(vec!["source".into(), "address".into()], addr.into_bytes());
        let (built, dropped) = build(&c, &mut req);
        proptest::prop_assert_eq!(built.len() + dropped.len(), 4);
        for d in built {
            proptest::prop_assert!(!d.entries.is_empty());
            proptest::prop_assert!(d.entries.iter().all(|(_, v)| v.len() <= MAX_VALUE_BYTES));
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
        proptest::prop_assert_eq!(got.as_deref(), Some("v\"1"));
    }
}
