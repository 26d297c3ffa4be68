//! Small builders for RLS requests, so tests read as the scenario they check.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tonic::transport::Channel;

pub const OK: i32 = Code::Ok as i32;
pub const OVER_LIMIT: i32 = Code::OverLimit as i32;

/// A descriptor from `(key, value)` pairs.
pub fn descriptor(entries: &[(&str, &str)]) -> RateLimitDescriptor {
    RateLimitDescriptor {
        entries: entries
            .iter()
            .map(|(k, v)| Entry {
                key: (*k).into(),
                value: (*v).into(),
            })
            .collect(),
        ..Default::default()
    }
}

pub fn request(domain: &str, descriptors: Vec<RateLimitDescriptor>) -> RateLimitRequest {
    RateLimitRequest {
        domain: domain.into(),
        descriptors,
        hits_addend: 0,
    }
}

/// The overall code of each of `n` checks of `check`, sent one after another on `client`.
pub async fn overall_codes(
    client: &mut RateLimitServiceClient<Channel>,
    check: &RateLimitRequest,
    n: usize,
) -> Vec<i32> {
    let mut codes = Vec::with_capacity(n);
    for _ in 0..n {
        let reply = client
            .should_rate_limit(check.clone())
            .await
            .expect("a decision");
        codes.push(reply.into_inner().overall_code);
    }
    codes
}
