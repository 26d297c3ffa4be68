//! Request data must not grow `/metrics` without bound. A request's `limit` override used to create
//! a series named after the descriptor's values (5,000 random values grew `/metrics` from 4.6 KB
//! to 850 KB); and a rule that opts into request values (`detailed_metric`) is held to
//! `--max-metric-series`.

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::RateLimitOverride;
use sluice_tests::rls::{OK, descriptor, request};
use sluice_tests::sluice::{Sluice, sample_of};

const RULES: &str = "
domain: edge
descriptors:
  - key: app_id
    rate_limit: { unit: hour, requests_per_unit: 1000000 }
  - key: user
    detailed_metric: true
    rate_limit: { unit: hour, requests_per_unit: 1000000 }
";

const REQUESTS: usize = 5000;

#[tokio::test(flavor = "multi_thread")]
async fn request_values_do_not_grow_the_metrics() {
    let sluice = Sluice::builder(RULES)
        .arg("--max-metric-series")
        .arg("100")
        .start();
    let mut client = sluice.grpc().await;
    // Warm: every fixed series exists.
    let mut d = descriptor(&[("app_id", "warm")]);
    d.limit = Some(RateLimitOverride {
        requests_per_unit: 5,
        unit: 3,
    });
    client
        .should_rate_limit(request("edge", vec![d]))
        .await
        .expect("check");
    let before = sluice.metrics().await.len();

    for i in 0..REQUESTS {
        let value = format!("v{i:x}-{}", i * 7919);
        let mut overridden = descriptor(&[("app_id", &value)]);
        overridden.limit = Some(RateLimitOverride {
            requests_per_unit: 5,
            unit: 3,
        });
        let detailed = descriptor(&[("user", &value)]);
        let r = client
            .should_rate_limit(request("edge", vec![overridden, detailed]))
            .await
            .expect("check");
        assert_eq!(r.get_ref().overall_code, OK);
    }
    let scrape = sluice.metrics().await;
    let after = scrape.len();
    println!("{REQUESTS} requests with distinct values: /metrics {before} -> {after} bytes");
    // The override's series is one name for the domain; the detailed rule's are capped at 100.
    assert_eq!(
        sample_of(
            &scrape,
            "sluice_rule_total_hits_total{rule=\"edge.limit_override\"}"
        ),
        (REQUESTS + 1) as f64
    );
    let series = scrape
        .lines()
        .filter(|l| l.starts_with("sluice_rule_total_hits_total{"))
        .count();
    assert!(series <= 100 + 2, "{series} series");
    let overflow = sample_of(
        &scrape,
        "sluice_metric_series_overflow_total{family=\"sluice_rule_total_hits\"}",
    );
    assert!(overflow >= (REQUESTS - 100) as f64, "{overflow}");
    // Bounded: a hundred series of each of the per-rule families, whatever the request count.
    assert!(
        after < before + 100 * 5 * 120,
        "/metrics grew from {before} to {after} bytes"
    );
}
