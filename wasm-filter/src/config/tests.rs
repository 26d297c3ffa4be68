use super::*;

fn parse_str(s: &str) -> Result<Config, ConfigError> {
    parse(s.as_bytes())
}

const MINIMAL: &str = r#"{"domain":"edge","service":{"cluster":"ratelimit"},
    "descriptors":[{"actions":[{"request_header":{"header":"x-app-id","key":"app_id"}}]}]}"#;

#[test]
fn minimal_config_gets_the_defaults() {
    let c = parse_str(MINIMAL).unwrap();
    assert_eq!(c.domain, "edge");
    assert_eq!(
        c.service,
        Service {
            cluster: "ratelimit".into(),
            timeout_ms: 20,
            transport: Transport::Grpc
        }
    );
    assert_eq!(c.failure_mode, FailureMode::Allow);
    assert_eq!(c.header_style, HeaderStyle::Ratelimit);
    assert_eq!(c.request_headers, RequestHeaders::default());
    assert_eq!(c.shared_slots, 4096);
    assert_eq!(c.negative_cache_max_ms, 60_000);
    assert_eq!(c.max_response_bytes, 65_536);
    assert_eq!(c.max_token_bytes, 8192);
    assert_eq!(c.max_value_bytes, 4096);
    assert_eq!(
        c.max_request_bytes, 16_384,
        "Sluice's default --max-request-bytes"
    );
    assert_eq!(c.invalid_request_status, 400);
    assert_eq!(c.descriptors[0].name, "descriptors[0]");
    assert_eq!(
        c.descriptors[0].actions,
        vec![Action::RequestHeader {
            header: "x-app-id".into(),
            key: "app_id".into(),
            skip_if_absent: false
        }]
    );
}

#[test]
fn every_field_reads() {
    let c = parse_str(
        r#"{"domain":"edge","service":{"cluster":"rl","timeout_ms":250,"transport":"http","path":"/check","authority":"sluice.local"},
        "failure_mode":"deny","failure_status":500,"header_style":"x_ratelimit",
        "request_headers":{"request_id":"x-request-id","remaining":"x-quota-remaining","tenant":{"header":"x-tenant","key":"app_id"}},
        "shared_slots":16,"negative_cache_max_ms":0,"max_response_bytes":4096,"max_token_bytes":1024,
        "max_value_bytes":512,"max_request_bytes":8192,"invalid_request_status":422,
        "descriptors":[{"name":"everything","actions":[
            {"generic_key":{"descriptor_value":"v","key":"k"}},
            {"request_header":{"header":":authority","key":"host","skip_if_absent":true}},
            {"query_parameter":{"name":"api_key","key":"key"}},
            {"method":{}},
            {"method":{"methods":["post","put"],"descriptor_value":"writes","key":"m"}},
            {"path":{"prefix":"/api/","descriptor_value":"api","expect_match":false}},
            {"remote_address":{"v4_prefix_len":24,"v6_prefix_len":64}},
            {"metadata":{"property":["metadata","filter_metadata","jwt","sub"],"key":"sub","default_value":"anon"}},
            {"jwt_claim":{"claim":"org.id","key":"org","header":"x-token"}}],
          "local":{"max_tokens":10,"fill_interval_ms":1000},
          "charge":{"from":"response_header","header":"x-llm-tokens"}}]}"#,
    )
    .unwrap();
    assert_eq!(c.service.timeout_ms, 250);
    assert_eq!(
        c.service.transport,
        Transport::Http {
            path: "/check".into(),
            authority: "sluice.local".into()
        }
    );
    assert_eq!(c.failure_mode, FailureMode::Deny { status: 500 });
    assert_eq!(c.header_style, HeaderStyle::XRatelimit);
    assert_eq!(
        c.request_headers.tenant,
        Some(("x-tenant".into(), "app_id".into()))
    );
    let d = &c.descriptors[0];
    assert_eq!(d.name, "everything");
    assert_eq!(
        d.local,
        Some(BucketSpec {
            max_tokens: 10,
            tokens_per_fill: 10,
            fill_interval_ms: 1000
        })
    );
    assert_eq!(
        d.charge,
        Some(ChargeSource::ResponseHeader("x-llm-tokens".into()))
    );
    assert_eq!(d.actions.len(), 9);
    assert_eq!(
        d.actions[3],
        Action::Method {
            key: "method".into(),
            matching: None
        }
    );
    assert_eq!(
        d.actions[4],
        Action::Method {
            key: "m".into(),
            matching: Some((vec!["POST".into(), "PUT".into()], "writes".into()))
        }
    );
    assert_eq!(
        d.actions[5],
        Action::Path {
            key: "header_match".into(),
            matcher: PathMatch::Prefix("/api/".into()),
            value: "api".into(),
            expect_match: false
        }
    );
    assert_eq!(
        d.actions[6],
        Action::RemoteAddress {
            v4_prefix: Some(24),
            v6_prefix: Some(64)
        }
    );
    assert_eq!(
        d.actions[8],
        Action::JwtClaim {
            header: "x-token".into(),
            claim: vec!["org".into(), "id".into()],
            key: "org".into(),
            skip_if_absent: false
        }
    );
    assert_eq!(c.negative_cache_max_ms, 0);
    assert_eq!(
        (
            c.max_value_bytes,
            c.max_request_bytes,
            c.invalid_request_status
        ),
        (512, 8192, 422)
    );
}

#[test]
fn errors_name_the_field() {
    let with = |descriptor: &str| {
        format!(r#"{{"domain":"edge","service":{{"cluster":"rl"}},"descriptors":[{descriptor}]}}"#)
    };
    for (config, field, reason) in [
        (
            "not json".to_string(),
            "",
            "not JSON: invalid literal at line 1 column 1",
        ),
        ("[]".into(), "", "must be an object, not an array"),
        (
            r#"{"service":{"cluster":"rl"},"descriptors":[]}"#.into(),
            "domain",
            "is required",
        ),
        (
            r#"{"domain":"","service":{"cluster":"rl"}}"#.into(),
            "domain",
            "must not be empty",
        ),
        (
            r#"{"domain":"d","descriptors":[]}"#.into(),
            "service",
            "is required",
        ),
        (
            r#"{"domain":"d","service":{"cluster":"rl","timeout_ms":0},"descriptors":[]}"#.into(),
            "service.timeout_ms",
            "must be an integer from 1 to 60000",
        ),
        (
            r#"{"domain":"d","service":{"cluster":"rl","transport":"udp"},"descriptors":[]}"#
                .into(),
            "service.transport",
            "must be one of grpc, http, not \"udp\"",
        ),
        (
            r#"{"domain":"d","service":{"cluster":"rl","path":"/json"},"descriptors":[]}"#.into(),
            "service.transport",
            "must be `http` for `path` and `authority`",
        ),
        (
            r#"{"domain":"d","service":{"cluster":"rl"},"descriptors":[]}"#.into(),
            "descriptors",
            "needs 1 to 64 descriptors",
        ),
        (
            r#"{"domain":"d","domain":"e"}"#.into(),
            "domain",
            "appears twice",
        ),
        (
            r#"{"domain":"d","service":{"cluster":"rl"},"failure_status":500,"descriptors":[]}"#
                .into(),
            "failure_status",
            "only applies to `failure_mode: deny`",
        ),
        (
            with(r#"{"actions":[]}"#),
            "descriptors[0].actions",
            "needs 1 to 32 actions",
        ),
        (
            with(r#"{"actions":[{"request_header":{"header":"X-App","key":"a"}}]}"#),
            "descriptors[0].actions[0].request_header.header",
            "\"X-App\" is not a lower-case HTTP header name",
        ),
        (
            with(r#"{"actions":[{"request_header":{"header":"x","key":"a","bogus":1}}]}"#),
            "descriptors[0].actions[0].request_header.bogus",
            "unknown field (known here: header, key, skip_if_absent)",
        ),
        (
            with(r#"{"actions":[{"teleport":{}}]}"#),
            "descriptors[0].actions[0].teleport",
            "unknown action (known: generic_key, request_header, query_parameter, method, path, remote_address, metadata, jwt_claim)",
        ),
        (
            with(r#"{"actions":[{"generic_key":{"descriptor_value":"a"},"path":{}}]}"#),
            "descriptors[0].actions[0]",
            "must have exactly one of generic_key, request_header, query_parameter, method, path, remote_address, metadata, jwt_claim",
        ),
        (
            with(r#"{"actions":[{"path":{"exact":"/a","prefix":"/b","descriptor_value":"x"}}]}"#),
            "descriptors[0].actions[0].path",
            "needs exactly one of `exact` and `prefix`",
        ),
        (
            with(r#"{"actions":[{"remote_address":{"v4_prefix_len":33}}]}"#),
            "descriptors[0].actions[0].remote_address.v4_prefix_len",
            "must be an integer from 0 to 32",
        ),
        (
            with(r#"{"actions":[{"method":{"methods":["GET"]}}]}"#),
            "descriptors[0].actions[0].method",
            "`methods` (non-empty) and `descriptor_value` go together",
        ),
        (
            with(r#"{"actions":[{"jwt_claim":{"claim":"a..b","key":"k"}}]}"#),
            "descriptors[0].actions[0].jwt_claim.claim",
            "must be a dotted claim path",
        ),
        (
            with(r#"{"actions":[{"metadata":{"property":[],"key":"k"}}]}"#),
            "descriptors[0].actions[0].metadata.property",
            "needs a path of names",
        ),
        (
            with(
                r#"{"actions":[{"generic_key":{"descriptor_value":"a"}}],"local":{"max_tokens":0,"fill_interval_ms":1}}"#,
            ),
            "descriptors[0].local.max_tokens",
            "must be an integer from 1 to 4294967295",
        ),
        (
            with(
                r#"{"actions":[{"generic_key":{"descriptor_value":"a"}}],"local":{"max_tokens":1}}"#,
            ),
            "descriptors[0].local.fill_interval_ms",
            "is required",
        ),
        (
            with(
                r#"{"actions":[{"generic_key":{"descriptor_value":"a"}}],"charge":{"from":"response_header"}}"#,
            ),
            "descriptors[0].charge.header",
            "is required with `from: response_header`",
        ),
        (
            with(
                r#"{"actions":[{"generic_key":{"descriptor_value":"a"}}],"charge":{"from":"response_bytes","header":"x"}}"#,
            ),
            "descriptors[0].charge.header",
            "only applies to `from: response_header`",
        ),
        (
            with(r#"{"actions":[{"generic_key":{"descriptor_value":"a"}}]}"#).replace(
                "\"domain\":\"edge\",",
                "\"domain\":\"edge\",\"invalid_request_status\":200,",
            ),
            "invalid_request_status",
            "must be an integer from 400 to 599",
        ),
        (
            with(r#"{"actions":[{"generic_key":{"descriptor_value":"a"}}]}"#)
                .replace("\"domain\":\"edge\",", "\"domain\":\"edge\",\"max_value_bytes\":0,"),
            "max_value_bytes",
            "must be an integer from 1 to 65536",
        ),
        (
            with(r#"{"actions":[{"generic_key":{"descriptor_value":"a"}}]}"#)
                .replace("\"domain\":\"edge\",", "\"domain\":\"edge\",\"max_request_bytes\":100,"),
            "max_request_bytes",
            "must be an integer from 256 to 1048576",
        ),
        (
            with(r#"{"actions":[{"generic_key":{"descriptor_value":"a"}}]}"#)
                .replace("\"domain\":\"edge\",", "\"domain\":\"edge\",\"max_request_bytes\":1000,"),
            "max_value_bytes",
            "must not exceed max_request_bytes (1000)",
        ),
        (
            with(&format!(
                r#"{{"actions":[{{"request_header":{{"header":"x","key":"k"}}}},{{"path":{{"prefix":"/","descriptor_value":"{}"}}}}]}}"#,
                "v".repeat(4097)
            )),
            "descriptors[0].actions[1].path.descriptor_value",
            "is longer than max_value_bytes (4096)",
        ),
        (
            with(
                r#"{"actions":[{"metadata":{"property":["p"],"key":"k","default_value":"toolong"}}]}"#,
            )
            .replace("\"domain\":\"edge\",", "\"domain\":\"edge\",\"max_value_bytes\":4,"),
            "descriptors[0].actions[0].metadata.default_value",
            "is longer than max_value_bytes (4)",
        ),
        (
            with(r#"{"actions":[{"request_header":{"header":"x","key":"sluice.lease_id"}}]}"#),
            "descriptors[0].actions[0].request_header.key",
            "\"sluice.lease_id\" is the entry Sluice reads lease ids from",
        ),
    ] {
        let e = parse_str(&config).expect_err(&config);
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            (field, reason),
            "{config}"
        );
    }
    let e = parse_str(
        &with(r#"{"actions":[{"generic_key":{"descriptor_value":"a"}}]}"#)
            .replace("\"domain\":\"edge\",", "\"domain\":\"edge\",\"typo\":1,"),
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "typo: unknown field (known here: domain, service, failure_mode, failure_status, header_style, request_headers, descriptors, shared_slots, negative_cache_max_ms, max_response_bytes, max_token_bytes, max_value_bytes, max_request_bytes, invalid_request_status, reports)"
    );
}

/// Two named descriptors (one name twice) and one unnamed, over `service` and `reports`.
fn with_reports(service: &str, reports: &str) -> String {
    format!(
        r#"{{"domain":"api","service":{service},"reports":{reports},"descriptors":[
            {{"name":"per_app","actions":[{{"request_header":{{"header":"x-app","key":"app"}}}}]}},
            {{"name":"upstream","actions":[{{"generic_key":{{"descriptor_value":"pay","key":"upstream"}}}}]}},
            {{"actions":[{{"method":{{}}}}]}},
            {{"name":"upstream","actions":[{{"path":{{"prefix":"/b","descriptor_value":"b","key":"upstream"}}}}]}}]}}"#
    )
}

const HTTP: &str = r#"{"cluster":"sluice-http","transport":"http","authority":"sluice.internal"}"#;

#[test]
fn reports_default_to_every_descriptor_on_the_checks_http_upstream() {
    assert_eq!(
        parse_str(MINIMAL).unwrap().reports,
        None,
        "off unless asked"
    );
    let c = parse_str(&with_reports(HTTP, "{}")).unwrap();
    assert_eq!(
        c.reports,
        Some(Reports {
            descriptors: vec![0, 1, 2, 3],
            cluster: "sluice-http".into(),
            path: "/reports".into(),
            authority: "sluice.internal".into(),
            timeout_ms: 1000,
            max_batch: 100,
            flush_ms: 1000,
            max_pending: 10_000,
        })
    );
    let c = parse_str(&with_reports(
        HTTP,
        r#"{"descriptors":["upstream","descriptors[2]"],"cluster":"other","path":"/r",
            "timeout_ms":250,"max_batch":5000,"flush_ms":100,"max_pending":5000}"#,
    ))
    .unwrap();
    let r = c.reports.unwrap();
    assert_eq!(
        r.descriptors,
        vec![1, 2, 3],
        "every descriptor of a name, in order"
    );
    assert_eq!(
        (r.cluster.as_str(), r.authority.as_str(), r.path.as_str()),
        ("other", "other", "/r"),
        "a cluster of its own is its own authority"
    );
    assert_eq!(
        (r.timeout_ms, r.max_batch, r.flush_ms, r.max_pending),
        (250, 5000, 100, 5000)
    );
    let grpc = parse_str(&with_reports(
        r#"{"cluster":"ratelimit"}"#,
        r#"{"cluster":"sluice-http","authority":"a.b"}"#,
    ))
    .unwrap();
    let r = grpc.reports.unwrap();
    assert_eq!(
        (r.cluster.as_str(), r.authority.as_str()),
        ("sluice-http", "a.b")
    );
}

#[test]
fn bad_reports_blocks_are_refused_naming_the_field() {
    for (service, reports, field, reason) in [
        (
            r#"{"cluster":"ratelimit"}"#,
            "{}",
            "reports.cluster",
            "is required with `service.transport: grpc` (reports go to Sluice's HTTP listener)",
        ),
        (HTTP, "[]", "reports", "must be an object, not an array"),
        (
            HTTP,
            r#"{"descriptors":[]}"#,
            "reports.descriptors",
            "needs at least one descriptor name (leave it out to report every descriptor)",
        ),
        (
            HTTP,
            r#"{"descriptors":["upstream","nope"]}"#,
            "reports.descriptors[1]",
            "no descriptor is named \"nope\"",
        ),
        (
            HTTP,
            r#"{"descriptors":"upstream"}"#,
            "reports.descriptors",
            "must be an array, not a string",
        ),
        (
            HTTP,
            r#"{"max_batch":5001}"#,
            "reports.max_batch",
            "must be an integer from 1 to 5000",
        ),
        (
            HTTP,
            r#"{"max_batch":0}"#,
            "reports.max_batch",
            "must be an integer from 1 to 5000",
        ),
        (
            HTTP,
            r#"{"flush_ms":10}"#,
            "reports.flush_ms",
            "must be an integer from 100 to 60000",
        ),
        (
            HTTP,
            r#"{"max_pending":2000000}"#,
            "reports.max_pending",
            "must be an integer from 1 to 1000000",
        ),
        (
            HTTP,
            r#"{"max_batch":500,"max_pending":100}"#,
            "reports.max_pending",
            "must be at least max_batch (500)",
        ),
        (
            HTTP,
            r#"{"timeout_ms":0}"#,
            "reports.timeout_ms",
            "must be an integer from 1 to 60000",
        ),
        (
            HTTP,
            r#"{"path":"reports"}"#,
            "reports.path",
            "must be an absolute path without spaces",
        ),
        (
            HTTP,
            r#"{"authority":"a b"}"#,
            "reports.authority",
            "must be a host name without spaces",
        ),
        (
            HTTP,
            r#"{"flush":1000}"#,
            "reports.flush",
            "unknown field (known here: descriptors, cluster, path, authority, timeout_ms, max_batch, flush_ms, max_pending)",
        ),
    ] {
        let config = with_reports(service, reports);
        let e = parse_str(&config).expect_err(&config);
        assert_eq!(
            (e.field.as_str(), e.reason.as_str()),
            (field, reason),
            "{config}"
        );
    }
}
