//! A second reading of a `RateLimitRequest` that prost refused: the same fields with every string
//! read as bytes. Envoy copies request header bytes into descriptor values as they are, and an
//! HTTP header may carry bytes that are not UTF-8, which a proto3 `string` must be; so a client
//! can make Envoy send a request that does not decode. Answered `INVALID_ARGUMENT`, Envoy would
//! let that client through whenever it fails open. When this reading succeeds, the message was
//! well formed apart from its text, and the request is refused instead, like any other whose
//! values cannot be counted.

use prost::Message;

/// `envoy.service.ratelimit.v3.RateLimitRequest`, strings as bytes; fields Sluice does not need
/// to tell "well formed" are skipped like unknown fields.
#[derive(Clone, PartialEq, Message)]
struct Request {
    #[prost(bytes = "vec", tag = "1")]
    domain: Vec<u8>,
    #[prost(message, repeated, tag = "2")]
    descriptors: Vec<Descriptor>,
}

/// `envoy.extensions.common.ratelimit.v3.RateLimitDescriptor`: its entries.
#[derive(Clone, PartialEq, Message)]
struct Descriptor {
    #[prost(message, repeated, tag = "1")]
    entries: Vec<Entry>,
}

#[derive(Clone, PartialEq, Message)]
struct Entry {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

/// The number of descriptors, when `bytes` is a well-formed request whose only fault is text
/// that is not UTF-8; `None` when it is malformed in some other way too.
pub(super) fn descriptors_if_only_text_is_bad(bytes: &[u8]) -> Option<usize> {
    let request = Request::decode(bytes).ok()?;
    let bad_text = std::str::from_utf8(&request.domain).is_err()
        || request.descriptors.iter().any(|d| {
            d.entries.iter().any(|e| {
                std::str::from_utf8(&e.key).is_err() || std::str::from_utf8(&e.value).is_err()
            })
        });
    bad_text.then_some(request.descriptors.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry as PbEntry;
    use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;

    fn encoded(value: &[u8]) -> Vec<u8> {
        // Encoded with a placeholder, then the placeholder's bytes replaced: prost will not
        // encode a String that is not UTF-8.
        let request = RateLimitRequest {
            domain: "edge".into(),
            descriptors: vec![RateLimitDescriptor {
                entries: vec![PbEntry {
                    key: "app_id".into(),
                    value: "PLACEHOLDER".into(),
                }],
                ..Default::default()
            }],
            hits_addend: 0,
        };
        let bytes = request.encode_to_vec();
        let at = bytes
            .windows(11)
            .position(|w| w == b"PLACEHOLDER")
            .expect("placeholder");
        assert_eq!(value.len(), 11, "same length keeps the framing");
        let mut out = bytes.clone();
        out[at..at + 11].copy_from_slice(value);
        out
    }

    #[test]
    fn a_value_that_is_not_utf8_is_told_apart_from_a_malformed_message() {
        let bad = encoded(b"abc\xffdefghi\xfe");
        assert!(RateLimitRequest::decode(&bad[..]).is_err());
        assert_eq!(descriptors_if_only_text_is_bad(&bad), Some(1));
        // Well formed and valid text: not this reading's business.
        assert_eq!(
            descriptors_if_only_text_is_bad(&encoded(b"abcdefghijk")),
            None
        );
        // Truncated: malformed whatever its text.
        assert_eq!(descriptors_if_only_text_is_bad(&bad[..bad.len() - 3]), None);
    }
}
