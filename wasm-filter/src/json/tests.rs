use super::*;

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn requests_are_proto3_json() {
    let a = owned(&[("app_id", "w\"eb")]);
    let body = encode_request(
        "edge",
        &[
            WireDescriptor {
                entries: &a,
                hits_addend: None,
                ..Default::default()
            },
            WireDescriptor {
                entries: &a,
                hits_addend: Some(42),
                ..Default::default()
            },
        ],
    );
    assert_eq!(
        String::from_utf8(body).unwrap(),
        r#"{"domain":"edge","descriptors":[{"entries":[{"key":"app_id","value":"w\"eb"}]},{"entries":[{"key":"app_id","value":"w\"eb"}],"hitsAddend":"42"}]}"#
    );
}

#[test]
fn requests_say_how_long_the_caller_waits() {
    let headers = request_headers("/json", "sluice", "2000");
    assert_eq!(
        headers,
        [
            (":method", "POST"),
            (":path", "/json"),
            (":authority", "sluice"),
            ("content-type", "application/json"),
            ("accept", "application/json, application/problem+json"),
            ("x-sluice-wait-ms", "2000"),
        ]
    );
}

#[test]
fn ok_answers_decode() {
    let body = br#"{"overallCode":"OK","statuses":[{"code":"OK","currentLimit":{"requestsPerUnit":2,"unit":"HOUR"},"limitRemaining":1,"durationUntilReset":"3599.000000001s"},{"code":"OK"}],
        "responseHeadersToAdd":[{"key":"RateLimit-Limit","value":"2"}],"requestHeadersToAdd":[{"key":"x-a","value":"b"}]}"#;
    let a = decode_response(200, Some("application/json"), body).unwrap();
    assert_eq!(a.overall, Code::Ok);
    assert_eq!(
        a.statuses[0],
        DescriptorStatus {
            code: Code::Ok,
            current_limit: Some(Limit {
                requests_per_unit: 2,
                unit: 3
            }),
            limit_remaining: 1,
            duration_until_reset_ms: Some(3_599_001)
        }
    );
    assert_eq!(
        a.statuses[1],
        DescriptorStatus {
            code: Code::Ok,
            ..Default::default()
        }
    );
    assert_eq!(a.response_headers, owned(&[("RateLimit-Limit", "2")]));
    assert_eq!(a.request_headers, owned(&[("x-a", "b")]));
    assert!(a.body.is_empty());
    // snake_case and numeric enums are proto3 JSON too.
    let snake = br#"{"overall_code":1,"statuses":[{"code":1,"current_limit":{"requests_per_unit":"5","unit":1},"limit_remaining":"4"}]}"#;
    let a = decode_response(200, None, snake).unwrap();
    assert_eq!(
        a.statuses[0].current_limit,
        Some(Limit {
            requests_per_unit: 5,
            unit: 1
        })
    );
    assert_eq!(a.statuses[0].limit_remaining, 4);
}

#[test]
fn over_limit_answers_plain_and_problem() {
    let plain = br#"{"overallCode":"OVER_LIMIT","statuses":[{"code":"OVER_LIMIT","currentLimit":{"requestsPerUnit":2,"unit":"HOUR"},"durationUntilReset":"10s"}]}"#;
    let a = decode_response(429, Some("application/json"), plain).unwrap();
    assert_eq!(a.overall, Code::OverLimit);
    assert!(a.body.is_empty(), "plain proto3 JSON is not for clients");
    let problem = br#"{"type":"https://sluice.dev/quota","title":"Quota exceeded","status":402,"retry_after":"86400","kind":"quota",
        "overallCode":"OVER_LIMIT","statuses":[{"code":"OVER_LIMIT"}],"responseHeadersToAdd":[{"key":"Retry-After","value":"86400"}]}"#;
    let a = decode_response(
        402,
        Some("application/problem+json; charset=utf-8"),
        problem,
    )
    .unwrap();
    assert_eq!(a.body, problem.to_vec());
    assert_eq!(
        (
            a.problem.status,
            a.problem.retry_after_s,
            a.problem.concurrency
        ),
        (Some(402), Some(86_400), false)
    );
    assert_eq!(
        a.response_headers,
        owned(&[
            ("Retry-After", "86400"),
            ("content-type", "application/problem+json")
        ])
    );
}

#[test]
fn errors_and_garbage_are_failures() {
    let kind = |status, body: &[u8]| {
        decode_response(status, Some("application/json"), body)
            .map(|_| ())
            .map_err(|f| f.kind)
    };
    assert_eq!(
        kind(500, br#"{"error":"store down"}"#),
        Err(ErrorKind::HttpStatus)
    );
    assert_eq!(kind(503, b"<html>"), Err(ErrorKind::HttpStatus));
    assert_eq!(kind(200, b"<html>"), Err(ErrorKind::Malformed));
    assert_eq!(kind(200, br#"{"statuses":{}}"#), Err(ErrorKind::Malformed));
    assert_eq!(
        kind(200, br#"{"statuses":[{"durationUntilReset":"soon"}]}"#),
        Err(ErrorKind::Malformed)
    );
    assert_eq!(
        kind(200, br#"{"responseHeadersToAdd":[{"value":"x"}]}"#),
        Err(ErrorKind::Malformed)
    );
    assert_eq!(kind(200, br#"{"rawBody":"!!"}"#), Err(ErrorKind::Malformed));
    assert_eq!(
        decode_response(200, None, br#"{"overallCode":"OK","rawBody":"aGk="}"#)
            .unwrap()
            .body,
        b"hi"
    );
}

#[test]
fn sluice_refusing_the_check_is_not_a_failure() {
    let refused = |status, content_type, body: &[u8]| {
        decode_response(status, content_type, body).map(|a| a.refused)
    };
    assert_eq!(
        refused(
            400,
            Some("application/json"),
            br#"{"error":"descriptor 0 entry 0 has an empty key"}"#
        ),
        Ok(Some(
            "HTTP 400: descriptor 0 entry 0 has an empty key".into()
        ))
    );
    assert_eq!(
        refused(413, Some("application/json"), br#"{"error":"too large"}"#),
        Ok(Some("HTTP 413: too large".into()))
    );
    // Not JSON, or JSON without `error`: still a refusal.
    assert_eq!(
        refused(413, Some("text/html"), b"<html>"),
        Ok(Some("HTTP 413".into()))
    );
    assert_eq!(refused(400, None, b"{}"), Ok(Some("HTTP 400".into())));
    // A 400 that says OVER_LIMIT is a rule's status (`over_limit_status: 400`), not a refusal.
    let a = decode_response(
        400,
        Some("application/problem+json"),
        br#"{"status":400,"kind":"throttle","overallCode":"OVER_LIMIT","statuses":[{"code":"OVER_LIMIT"}]}"#,
    )
    .unwrap();
    assert_eq!(
        (a.overall, a.refused, a.problem.status),
        (Code::OverLimit, None, Some(400))
    );
    assert!(!a.problem.invalid);
    let a = decode_response(
        400,
        Some("application/problem+json"),
        br#"{"status":400,"kind":"invalid","overallCode":"OVER_LIMIT","statuses":[{"code":"OVER_LIMIT"}]}"#,
    )
    .unwrap();
    assert!(a.problem.invalid);
    // Other statuses stay failures for `failure_mode`.
    for status in [401, 404, 429, 500, 502, 503] {
        assert_eq!(
            refused(status, Some("application/json"), br#"{"error":"x"}"#).map_err(|f| f.kind),
            Err(ErrorKind::HttpStatus),
            "{status}"
        );
    }
}

#[test]
fn durations() {
    assert_eq!(duration_ms("0s"), Some(0));
    assert_eq!(duration_ms("1.5s"), Some(1500));
    assert_eq!(duration_ms("0.000000001s"), Some(1));
    assert_eq!(duration_ms("-3.2s"), Some(0));
    for bad in ["", "s", "1", "1.s", "1.0000000001s", "a.5s", "1e3s", "--1s"] {
        assert_eq!(duration_ms(bad), None, "{bad}");
    }
}

proptest::proptest! {
    #[test]
    fn arbitrary_bodies_never_panic(status in 100u16..600, body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
        let _ = decode_response(status, Some("application/problem+json"), &body);
        let _ = problem_in(&body);
    }
}

#[test]
fn lease_releases_are_proto3_json() {
    let a = owned(&[("upload", "app-1")]);
    let body = encode_request(
        "edge",
        &[WireDescriptor {
            entries: &a,
            lease: Some("0123456789abcdef0123456789abcdef"),
            negative_hits: true,
            ..Default::default()
        }],
    );
    assert_eq!(
        String::from_utf8(body).unwrap(),
        r#"{"domain":"edge","descriptors":[{"entries":[{"key":"upload","value":"app-1"},{"key":"sluice.lease_id","value":"0123456789abcdef0123456789abcdef"}],"isNegativeHits":true}]}"#
    );
}
