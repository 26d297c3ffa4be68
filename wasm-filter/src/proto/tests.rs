//! The hand-written wire format against prost's generated code for Envoy's own protos.

use envoy_types::pb::envoy::config::core::v3::HeaderValue;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    DescriptorStatus as PbStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use envoy_types::pb::google::protobuf::Duration;
use prost::Message;

use super::*;

fn owned(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn requests_decode_with_envoys_protos() {
    let a = owned(&[("app_id", "web"), ("path", "/ünï")]);
    let b = owned(&[("bytes", "x")]);
    let wire = encode_request(
        "edge",
        &[
            WireDescriptor {
                entries: &a,
                hits_addend: None,
                ..Default::default()
            },
            WireDescriptor {
                entries: &b,
                hits_addend: Some(0),
                ..Default::default()
            },
            WireDescriptor {
                entries: &b,
                hits_addend: Some(300),
                ..Default::default()
            },
        ],
    );
    let req = RateLimitRequest::decode(wire.as_slice()).unwrap();
    assert_eq!(req.domain, "edge");
    assert_eq!(req.hits_addend, 0);
    assert_eq!(req.descriptors.len(), 3);
    let entries = |d: &RateLimitDescriptor| {
        d.entries
            .iter()
            .map(|e| (e.key.clone(), e.value.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(entries(&req.descriptors[0]), a);
    assert_eq!(req.descriptors[0].hits_addend, None);
    assert_eq!(
        req.descriptors[1].hits_addend.map(|h| h.value),
        Some(0),
        "present but zero: check only"
    );
    assert_eq!(req.descriptors[2].hits_addend.map(|h| h.value), Some(300));
}

fn pb_status(
    code: i32,
    limit: Option<(u32, i32)>,
    remaining: u32,
    reset: Option<(i64, i32)>,
) -> PbStatus {
    PbStatus {
        code,
        current_limit: limit.map(|(requests_per_unit, unit)| RateLimit {
            name: "rule".into(),
            requests_per_unit,
            unit,
        }),
        limit_remaining: remaining,
        duration_until_reset: reset.map(|(seconds, nanos)| Duration { seconds, nanos }),
        ..Default::default()
    }
}

#[test]
fn responses_encoded_by_prost_decode() {
    let body = br#"{"type":"about:blank","status":402,"retry_after":3600,"kind":"quota"}"#.to_vec();
    let pb = RateLimitResponse {
        overall_code: 2,
        statuses: vec![
            pb_status(1, Some((10, 2)), 7, Some((59, 500_000_001))),
            pb_status(2, Some((1, 4)), 0, Some((-5, 0))),
            pb_status(1, None, 0, None),
        ],
        response_headers_to_add: vec![
            HeaderValue {
                key: "content-type".into(),
                value: "application/problem+json".into(),
                ..Default::default()
            },
            HeaderValue {
                key: "x-raw".into(),
                value: "ignored".into(),
                raw_value: b"raw wins".to_vec(),
            },
        ],
        request_headers_to_add: vec![HeaderValue {
            key: "x-tenant".into(),
            value: "acme".into(),
            ..Default::default()
        }],
        raw_body: body.clone(),
        ..Default::default()
    };
    let a = decode_response(&pb.encode_to_vec()).unwrap();
    assert_eq!(a.overall, Code::OverLimit);
    assert_eq!(
        a.statuses,
        vec![
            DescriptorStatus {
                code: Code::Ok,
                current_limit: Some(Limit {
                    requests_per_unit: 10,
                    unit: 2
                }),
                limit_remaining: 7,
                duration_until_reset_ms: Some(59_501)
            },
            DescriptorStatus {
                code: Code::OverLimit,
                current_limit: Some(Limit {
                    requests_per_unit: 1,
                    unit: 4
                }),
                limit_remaining: 0,
                duration_until_reset_ms: Some(0)
            },
            DescriptorStatus {
                code: Code::Ok,
                current_limit: None,
                limit_remaining: 0,
                duration_until_reset_ms: None
            },
        ]
    );
    assert_eq!(
        a.response_headers,
        owned(&[
            ("content-type", "application/problem+json"),
            ("x-raw", "raw wins")
        ])
    );
    assert_eq!(a.request_headers, owned(&[("x-tenant", "acme")]));
    assert_eq!(a.body, body);
    assert_eq!(
        (
            a.problem.status,
            a.problem.retry_after_s,
            a.problem.concurrency
        ),
        (Some(402), Some(3600), false)
    );
}

#[test]
fn malformed_messages_are_errors() {
    let good = RateLimitResponse {
        overall_code: 1,
        statuses: vec![pb_status(1, Some((5, 1)), 4, Some((1, 0)))],
        ..Default::default()
    }
    .encode_to_vec();
    // [overall_code] is a whole message; any cut inside the status after it is not.
    for cut in 3..good.len() {
        assert!(decode_response(&good[..cut]).is_err(), "truncated at {cut}");
    }
    assert_eq!(
        decode_response(&[0x0b]),
        Err(DecodeError::BadWireType),
        "group start"
    );
    assert_eq!(
        decode_response(&[0x00, 0x01]),
        Err(DecodeError::BadWireType),
        "field 0"
    );
    assert_eq!(
        decode_response(&[
            0x08, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01
        ])
        .unwrap_err(),
        DecodeError::VarintTooLong
    );
    assert_eq!(
        decode_response(&[0x12, 0x02, 0x0a, 0x00]).map(|a| a.statuses.len()),
        Err(DecodeError::BadWireType),
        "code sent as bytes"
    );
    assert_eq!(
        decode_response(&[0x1a, 0x03, 0x0a, 0x01, 0xff]),
        Err(DecodeError::NotUtf8)
    );
    // Unknown fields of every wire type are skipped.
    let mut with_unknown = vec![
        0x48, 0x05, 0x51, 1, 2, 3, 4, 5, 6, 7, 8, 0x5a, 0x01, 0x00, 0x65, 1, 2, 3, 4,
    ];
    with_unknown.extend_from_slice(&good);
    assert_eq!(decode_response(&with_unknown).unwrap().overall, Code::Ok);
}

proptest::proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
        let _ = decode_response(&bytes);
    }

    #[test]
    fn arbitrary_responses_round_trip(
        code in 0i32..4,
        statuses in proptest::collection::vec((0i32..3, proptest::option::of((proptest::num::u32::ANY, 0i32..8)), proptest::num::u32::ANY, proptest::option::of((0i64..1_000_000, 0i32..1_000_000_000))), 0..8),
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
    ) {
        let pb = RateLimitResponse {
            overall_code: code,
            statuses: statuses.iter().map(|(c, l, r, d)| pb_status(*c, *l, *r, *d)).collect(),
            raw_body: body.clone(),
            ..Default::default()
        };
        let a = decode_response(&pb.encode_to_vec()).unwrap();
        proptest::prop_assert_eq!(a.overall, Code::from_wire(code));
        proptest::prop_assert_eq!(a.statuses.len(), statuses.len());
        for (s, (c, l, r, d)) in a.statuses.iter().zip(&statuses) {
            proptest::prop_assert_eq!(s.code, Code::from_wire(*c));
            proptest::prop_assert_eq!(s.current_limit.map(|l| (l.requests_per_unit, l.unit)), *l);
            proptest::prop_assert_eq!(s.limit_remaining, *r);
            proptest::prop_assert_eq!(s.duration_until_reset_ms, d.map(|(secs, n)| secs as u64 * 1000 + (n as u64).div_ceil(1_000_000)));
        }
        proptest::prop_assert_eq!(a.body, body);
    }
}

#[test]
fn lease_renewals_and_releases_decode_with_envoys_protos() {
    let a = owned(&[("upload", "app-1")]);
    let id = "0123456789abcdef0123456789abcdef";
    let wire = encode_request(
        "edge",
        &[
            WireDescriptor {
                entries: &a,
                lease: Some(id),
                negative_hits: true,
                ..Default::default()
            },
            WireDescriptor {
                entries: &a,
                lease: Some(id),
                ..Default::default()
            },
        ],
    );
    let req = RateLimitRequest::decode(wire.as_slice()).unwrap();
    let release = &req.descriptors[0];
    assert!(release.is_negative_hits);
    let entries: Vec<_> = release
        .entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(entries, [("upload", "app-1"), ("sluice.lease_id", id)]);
    assert!(!req.descriptors[1].is_negative_hits);
    assert_eq!(req.descriptors[1].entries.len(), 2);
}
