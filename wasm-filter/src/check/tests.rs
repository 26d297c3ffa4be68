use super::*;
use crate::config::parse;
use crate::headers::has_header;
use crate::shared::memory::MemoryStore;

const S: u64 = 1_000_000_000;

fn config(extra: &str) -> Config {
    parse(
        format!(
            r#"{{"domain":"edge","service":{{"cluster":"rl"}},{extra}
            "request_headers":{{"remaining":"x-remaining"}},
            "descriptors":[{{"actions":[{{"generic_key":{{"descriptor_value":"a"}}}}],"local":{{"max_tokens":2,"fill_interval_ms":1000}}}},
                           {{"actions":[{{"generic_key":{{"descriptor_value":"b"}}}}]}}]}}"#
        )
        .as_bytes(),
    )
    .unwrap()
}

fn descriptors() -> Vec<Descriptor> {
    ["a", "b"]
        .iter()
        .enumerate()
        .map(|(def, v)| Descriptor {
            def,
            entries: vec![("generic_key".into(), v.to_string())],
        })
        .collect()
}

fn status(code: Code, remaining: u32, reset_ms: Option<u64>) -> DescriptorStatus {
    DescriptorStatus {
        code,
        current_limit: Some(Limit {
            requests_per_unit: 10,
            unit: 2,
        }),
        limit_remaining: remaining,
        duration_until_reset_ms: reset_ms,
    }
}

fn answer(overall: Code, statuses: Vec<DescriptorStatus>) -> Answer {
    Answer {
        overall,
        statuses,
        ..Answer::default()
    }
}

#[test]
fn no_descriptor_passes_and_no_store_asks_sluice() {
    let c = config("");
    assert_eq!(start(&c, &[], None, 0), Start::Pass);
    for _ in 0..10 {
        assert_eq!(start(&c, &descriptors(), None, 0), Start::Remote);
    }
}

#[test]
fn buckets_answer_locally_with_retry_after() {
    let c = config("");
    let store = MemoryStore::default();
    assert_eq!(
        start(&c, &descriptors(), Some(&store), 10 * S),
        Start::Remote
    );
    assert_eq!(
        start(&c, &descriptors(), Some(&store), 10 * S),
        Start::Remote
    );
    let Start::Reject { reply, cause } = start(&c, &descriptors(), Some(&store), 10 * S) else {
        panic!("not rejected")
    };
    assert_eq!(cause, LocalCause::Bucket);
    assert_eq!(reply.status, 429);
    assert!(reply.headers.contains(&("retry-after".into(), "1".into())));
    assert_eq!(
        start(&c, &descriptors(), Some(&store), 11 * S),
        Start::Remote
    );
}

#[test]
fn over_limit_fills_the_negative_cache_for_the_wait() {
    let c = config("");
    let store = MemoryStore::default();
    let a = Answer {
        problem: Problem {
            status: Some(402),
            ..Problem::default()
        },
        ..answer(
            Code::OverLimit,
            vec![
                status(Code::Ok, 3, Some(5000)),
                status(Code::OverLimit, 0, Some(30_000)),
            ],
        )
    };
    let Verdict::Reject(reply) = finish(&c, &descriptors(), Ok(a), Some(&store), 100 * S) else {
        panic!("not rejected")
    };
    assert_eq!(reply.status, 402);
    assert!(reply.headers.contains(&("retry-after".into(), "30".into())));
    assert!(
        reply
            .headers
            .contains(&("ratelimit-remaining".into(), "0".into()))
    );
    assert!(has_header(&reply.headers, "content-type"));
    // Only the OVER_LIMIT descriptor is cached: a request with just `a` still goes to Sluice.
    let only_a = &descriptors()[..1];
    assert_eq!(start(&c, only_a, Some(&store), 100 * S), Start::Remote);
    let Start::Reject { reply, cause } = start(&c, &descriptors(), Some(&store), 110 * S) else {
        panic!("not cached")
    };
    assert_eq!((cause, reply.status), (LocalCause::NegativeCache, 402));
    assert!(reply.headers.contains(&("retry-after".into(), "20".into())));
    assert_eq!(
        start(&c, &descriptors()[1..], Some(&store), 130 * S),
        Start::Remote,
        "expired"
    );
}

#[test]
fn a_full_concurrency_pool_is_not_cached() {
    // A pool frees a slot as soon as a holder releases, long before the soonest expiry.
    let c = config("");
    let store = MemoryStore::default();
    let a = Answer {
        problem: Problem {
            concurrency: true,
            ..Problem::default()
        },
        ..answer(
            Code::OverLimit,
            vec![
                status(Code::Ok, 3, None),
                status(Code::OverLimit, 0, Some(60_000)),
            ],
        )
    };
    let Verdict::Reject(reply) = finish(&c, &descriptors(), Ok(a), Some(&store), 100 * S) else {
        panic!("not rejected")
    };
    assert!(reply.headers.contains(&("retry-after".into(), "60".into())));
    assert_eq!(
        start(&c, &descriptors()[1..], Some(&store), 100 * S),
        Start::Remote
    );
}

#[test]
fn negative_cache_wait_is_capped_and_can_be_off() {
    let store = MemoryStore::default();
    let long = || {
        answer(
            Code::OverLimit,
            vec![
                status(Code::Ok, 1, None),
                status(Code::OverLimit, 0, Some(86_400_000)),
            ],
        )
    };
    let capped = config(r#""negative_cache_max_ms":2000,"#);
    finish(&capped, &descriptors(), Ok(long()), Some(&store), 0);
    assert!(matches!(
        start(&capped, &descriptors()[1..], Some(&store), S),
        Start::Reject { .. }
    ));
    assert_eq!(
        start(&capped, &descriptors()[1..], Some(&store), 2 * S),
        Start::Remote
    );
    let off = config(r#""negative_cache_max_ms":0,"#);
    let store = MemoryStore::default();
    finish(&off, &descriptors(), Ok(long()), Some(&store), 0);
    assert!(store.map.borrow().is_empty());
}

#[test]
fn sluice_body_and_headers_are_forwarded() {
    let c = config("");
    let a = Answer {
        response_headers: vec![
            ("content-type".into(), "application/problem+json".into()),
            ("Retry-After".into(), "7".into()),
            ("RateLimit-Remaining".into(), "0".into()),
        ],
        body: b"{\"status\":429}".to_vec(),
        ..answer(
            Code::OverLimit,
            vec![
                status(Code::OverLimit, 0, Some(9000)),
                status(Code::Ok, 5, None),
            ],
        )
    };
    let Verdict::Reject(reply) = finish(&c, &descriptors(), Ok(a), None, 0) else {
        panic!("not rejected")
    };
    assert_eq!(reply.status, 429);
    assert_eq!(reply.body, b"{\"status\":429}");
    assert!(reply.headers.contains(&("Retry-After".into(), "7".into())));
    assert_eq!(
        reply
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("retry-after"))
            .count(),
        1
    );
    assert_eq!(
        reply
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case("ratelimit-remaining"))
            .count(),
        1
    );
}

#[test]
fn allowed_requests_carry_headers_both_ways() {
    let c = config("");
    let a = Answer {
        request_headers: vec![("x-from-sluice".into(), "1".into())],
        ..answer(
            Code::Ok,
            vec![
                status(Code::Ok, 8, Some(1500)),
                status(Code::Ok, 3, Some(40_000)),
            ],
        )
    };
    let Verdict::Allow(allowed) = finish(&c, &descriptors(), Ok(a), None, 0) else {
        panic!("not allowed")
    };
    assert_eq!(
        allowed.request_headers,
        vec![
            ("x-from-sluice".into(), "1".into()),
            ("x-remaining".into(), "3".into())
        ]
    );
    assert_eq!(
        allowed.response_headers,
        vec![
            ("ratelimit-limit".into(), "10".into()),
            ("ratelimit-remaining".into(), "3".into()),
            ("ratelimit-reset".into(), "40".into())
        ]
    );
}

#[test]
fn failures_follow_the_failure_mode() {
    let allow = config("");
    let deny = config(r#""failure_mode":"deny","failure_status":500,"#);
    let cases = [
        Err(Failure::new(ErrorKind::Timeout, "deadline")),
        Ok(answer(Code::Ok, vec![status(Code::Ok, 1, None)])),
        Ok(answer(
            Code::Unknown,
            vec![status(Code::Ok, 1, None), status(Code::Ok, 1, None)],
        )),
        Ok(answer(
            Code::Other(7),
            vec![status(Code::Ok, 1, None), status(Code::Ok, 1, None)],
        )),
    ];
    let kinds = [
        ErrorKind::Timeout,
        ErrorKind::Malformed,
        ErrorKind::Malformed,
        ErrorKind::Malformed,
    ];
    for (case, kind) in cases.into_iter().zip(kinds) {
        match finish(&allow, &descriptors(), case.clone(), None, 0) {
            Verdict::Failed {
                failure,
                reply: None,
            } => assert_eq!(failure.kind, kind),
            other => panic!("{other:?}"),
        }
        match finish(&deny, &descriptors(), case, None, 0) {
            Verdict::Failed {
                failure,
                reply: Some(reply),
            } => {
                assert_eq!(failure.kind, kind);
                assert_eq!(reply.status, 500);
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn tenant_is_the_first_entry_with_the_key() {
    let c = parse(br#"{"domain":"d","service":{"cluster":"c"},"request_headers":{"tenant":{"header":"x-tenant","key":"generic_key"}},
        "descriptors":[{"actions":[{"generic_key":{"descriptor_value":"a"}}]}]}"#).unwrap();
    assert_eq!(tenant_value(&c, &descriptors()), Some("a"));
    assert_eq!(tenant_value(&c, &[]), None);
}

/// Found by fuzzing (`fuzz/corpus/filter_request/regression-tenant-header-lf`): a tenant taken
/// from `?tenant=%0A` set the upstream header to a line feed, so a client could add headers of
/// its choosing to the request. A value that cannot be a header value sets no header.
#[test]
fn tenant_with_a_control_character_sets_no_header() {
    let c = parse(br#"{"domain":"d","service":{"cluster":"c"},"request_headers":{"tenant":{"header":"x-tenant","key":"tenant"}},
        "descriptors":[{"actions":[{"query_parameter":{"name":"tenant","key":"tenant"}}]}]}"#).unwrap();
    let with = |value: &str| {
        vec![Descriptor {
            def: 0,
            entries: vec![("tenant".into(), value.into())],
        }]
    };
    for bad in ["acme\r\nx-admin: 1", "\n", "a\0b", "a\u{7f}"] {
        assert_eq!(tenant_value(&c, &with(bad)), None, "{bad:?}");
    }
    for good in ["acme", "a\tb", "caf\u{e9}", ""] {
        assert_eq!(tenant_value(&c, &with(good)), Some(good), "{good:?}");
    }
}

/// Sluice's OVER_LIMIT answer over gRPC for a check it refuses as malformed (over-long or
/// non-UTF-8 values): every status OVER_LIMIT, and a `raw_body` problem document with
/// `status: 400`, encoded with Envoy's own protos.
fn grpc_invalid_answer(kind: &str) -> Vec<u8> {
    use envoy_types::pb::envoy::config::core::v3::HeaderValue;
    use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::DescriptorStatus;
    use prost::Message;
    let body = format!(
        r#"{{"type":"about:blank","title":"Bad Request","status":400,"detail":"descriptor 0 entry 0 value is not UTF-8","kind":"{kind}"}}"#
    );
    RateLimitResponse {
        overall_code: 2,
        statuses: vec![
            DescriptorStatus {
                code: 2,
                ..Default::default()
            };
            2
        ],
        response_headers_to_add: vec![HeaderValue {
            key: "content-type".into(),
            value: "application/problem+json".into(),
            ..Default::default()
        }],
        raw_body: body.into_bytes(),
        ..Default::default()
    }
    .encode_to_vec()
}

#[test]
fn grpc_over_limit_with_an_invalid_problem_replies_with_its_status_and_body() {
    let c = config("");
    let store = MemoryStore::default();
    let wire = grpc_invalid_answer("invalid");
    let answer = crate::proto::decode_response(&wire).unwrap();
    let body = answer.body.clone();
    let Verdict::Invalid(reply) = finish(&c, &descriptors(), Ok(answer), Some(&store), 0) else {
        panic!("not invalid")
    };
    assert_eq!(reply.status, 400);
    assert_eq!(reply.body, body);
    assert!(
        reply
            .headers
            .contains(&("content-type".into(), "application/problem+json".into()))
    );
    assert!(!has_header(&reply.headers, "retry-after"));
    assert!(store.map.borrow().is_empty(), "never negative-cached");

    // Without `kind: invalid` it is a rejection like any other, with the document's status.
    let answer = crate::proto::decode_response(&grpc_invalid_answer("throttle")).unwrap();
    let Verdict::Reject(reply) = finish(&c, &descriptors(), Ok(answer), None, 0) else {
        panic!("not rejected")
    };
    assert_eq!(reply.status, 400);
}

#[test]
fn sluice_refusing_the_check_is_an_invalid_request_whatever_the_failure_mode() {
    for extra in ["", r#""failure_mode":"deny","failure_status":503,"#] {
        let c = config(&format!(r#"{extra}"invalid_request_status":422,"#));
        for (answer, detail) in [
            (
                crate::json::decode_response(
                    413,
                    Some("application/json"),
                    br#"{"error":"the request body is larger than 65536 bytes"}"#,
                ),
                "the rate-limit service refused the request: HTTP 413: the request body is larger than 65536 bytes",
            ),
            (
                crate::json::decode_response(400, Some("text/plain"), b"bad request"),
                "the rate-limit service refused the request: HTTP 400",
            ),
            (
                from_grpc_status(3),
                "the rate-limit service refused the request: gRPC status INVALID_ARGUMENT",
            ),
        ] {
            let Verdict::Invalid(reply) = finish(&c, &descriptors(), answer, None, 0) else {
                panic!("not invalid: {extra}")
            };
            assert_eq!(reply.status, 422);
            let doc = crate::value::parse(&reply.body).unwrap();
            assert_eq!(doc.get("kind").and_then(|v| v.as_str()), Some("invalid"));
            assert_eq!(doc.get("status").and_then(|v| v.as_u64()), Some(422));
            assert_eq!(doc.get("detail").and_then(|v| v.as_str()), Some(detail));
        }
    }
}

#[test]
fn other_grpc_statuses_stay_failures() {
    for (status, kind) in [
        (4, ErrorKind::Timeout),
        (14, ErrorKind::Unavailable),
        (8, ErrorKind::GrpcStatus),
        (13, ErrorKind::GrpcStatus),
    ] {
        assert_eq!(from_grpc_status(status).map_err(|f| f.kind), Err(kind));
    }
}

#[test]
fn sluices_message_is_bounded_in_the_detail() {
    let c = config("");
    let long = format!("é{}", "x".repeat(1000));
    let Verdict::Invalid(reply) = finish(&c, &descriptors(), Ok(Answer::refused(long)), None, 0)
    else {
        panic!("not invalid")
    };
    let doc = crate::value::parse(&reply.body).unwrap();
    let detail = doc.get("detail").and_then(|v| v.as_str()).unwrap();
    assert!(detail.len() < 320, "{}", detail.len());
    assert!(detail.ends_with("x"));
}
