use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::config::Unit;
use crate::config::parse_str;
use crate::storage::backend::memory::MemoryStore;

const RULES: &str = r#"
domain: d
descriptors:
  - key: app
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: team
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: quota_a
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: quota_b
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: old
    rate_limit: {name: old, unit: minute, requests_per_unit: 1}
  - key: new
    rate_limit:
      unit: minute
      requests_per_unit: 5
      replaces: [{name: old}]
  - key: free
    rate_limit: {unlimited: true}
  - key: detailed
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 9}
  - key: shared
    value: "web-*"
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 2}
"#;

/// 10:00:30 on some day: 30 s into a minute window, 30 min into an hour window.
const T0: Duration = Duration::from_secs(1_700_000_000 - 1_700_000_000 % 3600 + 1830);

struct Fixture {
    clock: Arc<ManualClock>,
    limiter: RateLimiter<Arc<MemoryStore>>,
}

fn fixture(options: LimiterOptions) -> Fixture {
    let clock = Arc::new(ManualClock::new(T0));
    let store = Arc::new(MemoryStore::new(10_000, clock.clone()));
    let limiter = RateLimiter::new(
        parse_str("rules.yaml", RULES).unwrap(),
        store,
        Arc::new(Metrics::new()),
        options,
    );
    Fixture { clock, limiter }
}

fn desc(entries: &[(&str, &str)]) -> Descriptor {
    Descriptor {
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

fn req(descriptors: Vec<Descriptor>) -> CheckRequest {
    CheckRequest {
        domain: "d".into(),
        descriptors,
        hits_addend: 0,
    }
}

impl Fixture {
    async fn check(&self, descriptors: Vec<Descriptor>) -> Decision {
        self.limiter.check(&req(descriptors)).await.unwrap()
    }

    async fn codes(&self, descriptors: Vec<Descriptor>) -> (Code, Vec<(Code, u32)>) {
        let d = self.check(descriptors).await;
        (
            d.overall,
            d.statuses
                .iter()
                .map(|s| (s.code, s.limit_remaining))
                .collect(),
        )
    }
}

use Code::{Ok as OK, OverLimit as Over};

#[tokio::test]
async fn fixed_window_resets_at_the_epoch_aligned_boundary() {
    let f = fixture(LimiterOptions::default());
    let app = || vec![desc(&[("app", "a")])];
    assert_eq!(f.codes(app()).await, (OK, vec![(OK, 1)]));
    let d = f.check(app()).await;
    assert_eq!(
        d.statuses[0].duration_until_reset,
        Some(Duration::from_secs(30))
    );
    assert_eq!(f.codes(app()).await, (Over, vec![(Over, 0)]));
    // 29 s later: same window.
    f.clock.advance(Duration::from_secs(29));
    assert_eq!(f.codes(app()).await, (Over, vec![(Over, 0)]));
    // The next minute starts a fresh counter.
    f.clock.advance(Duration::from_secs(1));
    assert_eq!(f.codes(app()).await, (OK, vec![(OK, 1)]));
    let d = f.check(app()).await;
    assert_eq!(
        d.statuses[0].duration_until_reset,
        Some(Duration::from_secs(60))
    );
}

#[tokio::test]
async fn rejected_requests_charge_nothing_by_default() {
    let f = fixture(LimiterOptions::default());
    let both = || vec![desc(&[("team", "t")]), desc(&[("app", "a")])];
    assert_eq!(f.codes(both()).await, (OK, vec![(OK, 2), (OK, 1)]));
    assert_eq!(f.codes(both()).await, (OK, vec![(OK, 1), (OK, 0)]));
    // app is exhausted: the request is rejected and team keeps its last unit.
    assert_eq!(f.codes(both()).await, (Over, vec![(OK, 1), (Over, 0)]));
    assert_eq!(
        f.codes(vec![desc(&[("team", "t")])]).await,
        (OK, vec![(OK, 0)])
    );
}

#[tokio::test]
async fn charge_rejected_counts_every_descriptor_like_the_reference() {
    let f = fixture(LimiterOptions {
        admission: Admission::ChargeAll,
        ..Default::default()
    });
    let both = || vec![desc(&[("team", "t")]), desc(&[("app", "a")])];
    f.check(both()).await;
    f.check(both()).await;
    assert_eq!(f.codes(both()).await, (Over, vec![(OK, 0), (Over, 0)]));
    assert_eq!(
        f.codes(vec![desc(&[("team", "t")])]).await,
        (Over, vec![(Over, 0)])
    );
}

#[tokio::test]
async fn shadow_mode_counts_but_never_rejects() {
    let f = fixture(LimiterOptions::default());
    let s = || vec![desc(&[("shadow", "x")])];
    assert_eq!(f.codes(s()).await, (OK, vec![(OK, 0)]));
    assert_eq!(f.codes(s()).await, (OK, vec![(OK, 0)]));
    let metrics = f.limiter.metrics().encode();
    assert!(
        metrics.contains("sluice_rule_shadow_mode_total{rule=\"d.shadow\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn global_shadow_mode_reports_over_but_answers_ok() {
    let f = fixture(LimiterOptions {
        global_shadow_mode: true,
        ..Default::default()
    });
    let app = || vec![desc(&[("app", "a")])];
    f.check(app()).await;
    f.check(app()).await;
    assert_eq!(f.codes(app()).await, (OK, vec![(Over, 0)]));
    assert!(
        f.limiter
            .metrics()
            .encode()
            .contains("sluice_global_shadow_mode_total 1")
    );
}

#[tokio::test]
async fn quota_mode_rejects_only_when_every_quota_descriptor_is_over() {
    let f = fixture(LimiterOptions::default());
    let q = || vec![desc(&[("quota_a", "x")]), desc(&[("quota_b", "x")])];
    assert_eq!(f.codes(q()).await, (OK, vec![(OK, 0), (OK, 2)]));
    // quota_a is over, quota_b is not: let through, with quota_a's status still OVER_LIMIT.
    assert_eq!(f.codes(q()).await, (OK, vec![(Over, 0), (OK, 1)]));
    assert_eq!(f.codes(q()).await, (OK, vec![(Over, 0), (OK, 0)]));
    assert_eq!(f.codes(q()).await, (Over, vec![(Over, 0), (Over, 0)]));
    // A non-quota descriptor over the limit still rejects.
    let mixed = || vec![desc(&[("quota_b", "y")]), desc(&[("app", "z")])];
    f.check(mixed()).await;
    f.check(mixed()).await;
    assert_eq!(f.codes(mixed()).await, (Over, vec![(OK, 1), (Over, 0)]));
}

#[tokio::test]
async fn global_quota_mode_treats_every_rule_as_quota() {
    let f = fixture(LimiterOptions {
        global_quota_mode: true,
        ..Default::default()
    });
    let both = || vec![desc(&[("app", "a")]), desc(&[("team", "t")])];
    f.check(both()).await;
    f.check(both()).await;
    // app is over, team is not: let through.
    assert_eq!(f.codes(both()).await, (OK, vec![(Over, 0), (OK, 0)]));
    assert_eq!(f.codes(both()).await, (Over, vec![(Over, 0), (Over, 0)]));
}

#[tokio::test]
async fn replaces_drops_the_named_rule() {
    let f = fixture(LimiterOptions::default());
    let d = f
        .check(vec![desc(&[("old", "x")]), desc(&[("new", "x")])])
        .await;
    assert_eq!(d.statuses[0], DescriptorStatus::no_limit());
    assert_eq!(d.statuses[1].limit_remaining, 4);
    // Alone, the old rule applies.
    assert_eq!(
        f.codes(vec![desc(&[("old", "x")])]).await,
        (OK, vec![(OK, 0)])
    );
}

#[tokio::test]
async fn unlimited_and_unmatched() {
    let f = fixture(LimiterOptions::default());
    let d = f
        .check(vec![desc(&[("free", "x")]), desc(&[("nope", "x")])])
        .await;
    assert_eq!(d.statuses[0], DescriptorStatus::unlimited());
    assert_eq!(d.statuses[1], DescriptorStatus::no_limit());
    let other_domain = CheckRequest {
        domain: "zzz".into(),
        ..req(vec![desc(&[("app", "a")])])
    };
    let d = f.limiter.check(&other_domain).await.unwrap();
    assert_eq!(d.statuses, vec![DescriptorStatus::no_limit()]);
}

#[tokio::test]
async fn hits_addend_look_refund_and_override() {
    let f = fixture(LimiterOptions::default());
    let mut r = req(vec![desc(&[("team", "t")])]);
    r.hits_addend = 2;
    let d = f.limiter.check(&r).await.unwrap();
    assert_eq!(d.statuses[0].limit_remaining, 1);
    // Per-descriptor 0 looks without consuming, even over a request-level addend.
    let mut look = desc(&[("team", "t")]);
    look.hits_addend = Some(0);
    r.descriptors = vec![look];
    let d = f.limiter.check(&r).await.unwrap();
    assert_eq!(d.statuses[0].limit_remaining, 1);
    // Over the limit with a large addend: rejected and not charged.
    let mut big = desc(&[("team", "t")]);
    big.hits_addend = Some(2);
    assert_eq!(f.codes(vec![big]).await, (Over, vec![(Over, 0)]));
    // A refund floors at zero.
    let mut refund = desc(&[("team", "t")]);
    refund.hits_addend = Some(10);
    refund.negative_hits = true;
    assert_eq!(f.codes(vec![refund]).await, (OK, vec![(OK, 3)]));
    // An override replaces the rule's limit and unit.
    let mut o = desc(&[("app", "o")]);
    o.limit = Some(LimitOverride {
        requests_per_unit: 1,
        unit: Unit::Second,
    });
    let d = f.check(vec![o.clone()]).await;
    let limit = d.statuses[0].current_limit.clone().unwrap();
    assert_eq!((limit.requests_per_unit, limit.unit), (1, Unit::Second));
    assert_eq!(
        d.statuses[0].duration_until_reset,
        Some(Duration::from_secs(1))
    );
    assert_eq!(f.codes(vec![o]).await, (Over, vec![(Over, 0)]));
}

#[tokio::test]
async fn share_threshold_values_share_one_counter() {
    let f = fixture(LimiterOptions::default());
    assert_eq!(
        f.codes(vec![desc(&[("shared", "web-1")])]).await,
        (OK, vec![(OK, 1)])
    );
    assert_eq!(
        f.codes(vec![desc(&[("shared", "web-2")])]).await,
        (OK, vec![(OK, 0)])
    );
    assert_eq!(
        f.codes(vec![desc(&[("shared", "web-3")])]).await,
        (Over, vec![(Over, 0)])
    );
}

#[tokio::test]
async fn headers_come_from_the_tightest_limit() {
    let f = fixture(LimiterOptions {
        header_style: HeaderStyle::RateLimit(HeaderNames::default()),
        ..Default::default()
    });
    let both = || vec![desc(&[("team", "t")]), desc(&[("app", "a")])];
    let d = f.check(both()).await;
    assert_eq!(
        d.response_headers,
        vec![
            ("RateLimit-Limit".to_string(), "2".to_string()),
            ("RateLimit-Remaining".to_string(), "1".to_string()),
            ("RateLimit-Reset".to_string(), "30".to_string()),
        ]
    );
    f.check(both()).await;
    let d = f.check(both()).await;
    assert_eq!(d.overall, Over);
    assert!(
        d.response_headers
            .contains(&("Retry-After".to_string(), "30".to_string())),
        "{:?}",
        d.response_headers
    );
    // Nothing limited: no headers.
    assert!(
        f.check(vec![desc(&[("nope", "x")])])
            .await
            .response_headers
            .is_empty()
    );
}

#[tokio::test]
async fn metrics_count_hits_per_rule() {
    let f = fixture(LimiterOptions::default());
    let app = || vec![desc(&[("app", "a")])];
    for _ in 0..3 {
        f.check(app()).await;
    }
    f.check(vec![desc(&[("detailed", "v1")])]).await;
    let m = f.limiter.metrics().encode();
    for line in [
        "sluice_rule_total_hits_total{rule=\"d.app\"} 3",
        "sluice_rule_within_limit_total{rule=\"d.app\"} 2",
        "sluice_rule_over_limit_total{rule=\"d.app\"} 1",
        // 0.8 × 2 floors to 1: the second hit (count 2) is near the limit.
        "sluice_rule_near_limit_total{rule=\"d.app\"} 1",
        "sluice_rule_total_hits_total{rule=\"d.detailed_v1\"} 1",
    ] {
        assert!(m.contains(line), "missing {line} in\n{m}");
    }
}

#[tokio::test]
async fn malformed_requests_are_invalid() {
    let f = fixture(LimiterOptions {
        bounds: RequestBounds {
            max_descriptors: 2,
            max_entries: 2,
            max_bytes: 64,
        },
        ..Default::default()
    });
    let cases: Vec<(CheckRequest, &str)> = vec![
        (
            CheckRequest {
                domain: String::new(),
                ..req(vec![desc(&[("app", "a")])])
            },
            "domain must not be empty",
        ),
        (req(vec![]), "request has no descriptors"),
        (req(vec![desc(&[])]), "descriptor 0 has no entries"),
        (
            req(vec![desc(&[("", "a")])]),
            "descriptor 0 entry 0 has an empty key",
        ),
        (
            req(vec![desc(&[("a", "1")]); 3]),
            "request has 3 descriptors; at most 2 are accepted",
        ),
        (
            req(vec![desc(&[("a", "1"), ("b", "2"), ("c", "3")])]),
            "descriptor 0 has 3 entries; at most 2 are accepted",
        ),
    ];
    for (r, want) in cases {
        match f.limiter.check(&r).await {
            Err(CheckError::Invalid(msg)) => assert_eq!(msg, want),
            other => panic!("{want}: got {other:?}"),
        }
    }
    // Values past the bound come from the proxy's client: unusable, which adapters refuse.
    let r = req(vec![desc(&[("a", &"x".repeat(100))])]);
    match f.limiter.check(&r).await {
        Err(CheckError::Unusable(msg)) => assert_eq!(
            msg,
            "request carries 102 bytes of domain, keys and values; at most 64 are accepted"
        ),
        other => panic!("got {other:?}"),
    }
}

#[tokio::test]
async fn reload_swaps_rules_for_new_requests() {
    let f = fixture(LimiterOptions::default());
    f.limiter.replace_rules(
            parse_str(
                "new.yaml",
                "domain: d\ndescriptors:\n  - key: app\n    rate_limit: {unit: minute, requests_per_unit: 9}\n",
            )
            .unwrap(),
        );
    assert_eq!(
        f.codes(vec![desc(&[("app", "a")])]).await,
        (OK, vec![(OK, 8)])
    );
}

const QUOTA_RULES: &str = r#"
domain: q
descriptors:
  - key: lim_a
    rate_limit: {name: lim_a, unit: minute, requests_per_unit: 5}
  - key: free
    rate_limit:
      unlimited: true
      replaces: [{name: lim_a}]
  - key: team
    rate_limits:
      - {unit: second, requests_per_unit: 10, algorithm: token_bucket, burst: 3, name: team_burst}
      - {unit: day, requests_per_unit: 4, name: team_daily}
  - key: app
    rate_limit:
      unit: minute
      unit_multiplier: 5
      requests_per_unit: 2
      algorithm: sliding_window
  - key: storage_bytes
    rate_limit:
      unit: month
      requests_per_unit: 10737418240
      calendar: true
      over_limit_status: 402
"#;

fn quota_fixture(style: HeaderStyle) -> Fixture {
    let clock = Arc::new(ManualClock::new(T0));
    let store = Arc::new(MemoryStore::new(10_000, clock.clone()));
    let limiter = RateLimiter::new(
        parse_str("quotas.yaml", QUOTA_RULES).unwrap(),
        store,
        Arc::new(Metrics::new()),
        LimiterOptions {
            header_style: style,
            ..Default::default()
        },
    );
    Fixture { clock, limiter }
}

fn qreq(descriptors: Vec<Descriptor>) -> CheckRequest {
    CheckRequest {
        domain: "q".into(),
        descriptors,
        hits_addend: 0,
    }
}

impl Fixture {
    async fn qcheck(&self, descriptors: Vec<Descriptor>) -> Decision {
        self.limiter.check(&qreq(descriptors)).await.unwrap()
    }
}

fn problem(d: &Decision) -> serde_json::Value {
    serde_json::from_str(&d.rejection.as_ref().expect("rejected").body()).unwrap()
}

#[tokio::test]
async fn an_unlimited_rule_replaces_limits_of_other_descriptors() {
    let f = quota_fixture(HeaderStyle::Off);
    let d = f
        .qcheck(vec![desc(&[("lim_a", "x")]), desc(&[("free", "y")])])
        .await;
    // lim_a is dropped (not counted, no limit), the unlimited rule answers unlimited.
    assert_eq!(d.statuses[0], DescriptorStatus::no_limit());
    assert_eq!(d.statuses[1], DescriptorStatus::unlimited());
    // lim_a was not charged: alone it still has all 5.
    let d = f.qcheck(vec![desc(&[("lim_a", "x")])]).await;
    assert_eq!(d.statuses[0].limit_remaining, 4);
}

#[tokio::test]
async fn several_limits_all_must_pass_and_the_tightest_is_reported() {
    let f = quota_fixture(HeaderStyle::Off);
    let team = || vec![desc(&[("team", "t")])];
    // Burst of 3 tokens, 4 a day: the bucket is tighter at first.
    let d = f.qcheck(team()).await;
    assert_eq!(d.statuses[0].limit_remaining, 2);
    assert_eq!(
        d.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .name
            .as_deref(),
        Some("team_burst")
    );
    f.qcheck(team()).await;
    f.qcheck(team()).await;
    // The bucket is empty: rejected for exactly one refill interval (100 ms), and the daily
    // limit was not charged for it.
    let d = f.qcheck(team()).await;
    assert_eq!(d.overall, Over);
    assert_eq!(
        d.statuses[0].duration_until_reset,
        Some(Duration::from_millis(100))
    );
    f.clock.advance(Duration::from_millis(100));
    let d = f.qcheck(team()).await;
    assert_eq!(d.overall, OK);
    // Four admitted today: now the daily limit rejects, whatever the bucket holds.
    f.clock.advance(Duration::from_secs(10));
    let d = f.qcheck(team()).await;
    assert_eq!(d.overall, Over);
    let limit = d.statuses[0].current_limit.as_ref().unwrap();
    assert_eq!(limit.name.as_deref(), Some("team_daily"));
    assert_eq!(problem(&d)["kind"], "quota");
    assert_eq!(problem(&d)["rule"], "team_daily");
}

#[tokio::test]
async fn a_rejected_request_charges_no_limit_of_any_descriptor() {
    let f = quota_fixture(HeaderStyle::Off);
    let app = || desc(&[("app", "a")]);
    let team = || desc(&[("team", "t")]);
    f.qcheck(vec![app(), team()]).await;
    f.qcheck(vec![app(), team()]).await;
    // app (2 per 5 minutes) is spent: team's bucket and daily count stay as they were.
    let d = f.qcheck(vec![app(), team()]).await;
    assert_eq!(d.overall, Over);
    assert_eq!(d.statuses[0].code, Over);
    assert_eq!(d.statuses[1].code, OK);
    // A second later the bucket is full again; the day has 2 of 4 left, not 1.
    f.clock.advance(Duration::from_secs(1));
    let d = f.qcheck(vec![team()]).await;
    assert_eq!(d.overall, OK);
    assert_eq!(
        d.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .name
            .as_deref(),
        Some("team_daily")
    );
    assert_eq!(d.statuses[0].limit_remaining, 1);
}

#[tokio::test]
async fn cost_based_calendar_quota_with_its_own_status() {
    let f = quota_fixture(HeaderStyle::Ietf);
    let mut upload = desc(&[("storage_bytes", "acme")]);
    upload.hits_addend = Some(10_000_000_000);
    let d = f.qcheck(vec![upload.clone()]).await;
    assert_eq!(d.overall, OK);
    assert_eq!(d.statuses[0].limit_remaining, 737_418_240);
    assert_eq!(
        d.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .requests_per_unit,
        u32::MAX,
        "the protocol's field is 32 bits"
    );
    let d = f.qcheck(vec![upload]).await;
    assert_eq!(d.overall, Over);
    let rejection = d.rejection.as_ref().unwrap();
    assert_eq!(rejection.status, 402);
    let p = problem(&d);
    assert_eq!(p["status"], 402);
    assert_eq!(p["title"], "Payment Required");
    assert_eq!(p["kind"], "quota");
    assert_eq!(p["limit"], 10_737_418_240u64);
    assert_eq!(p["level"], "storage_bytes");
    assert_eq!(p["type"], problem::PROBLEM_TYPE);
    // The calendar month of T0 (2023-11-14) ends on December 1st.
    let until_december = 1_701_388_800 - T0.as_secs();
    assert_eq!(p["retry_after"], until_december);
    assert!(
        d.response_headers
            .contains(&("Retry-After".to_string(), until_december.to_string())),
        "{:?}",
        d.response_headers
    );
    assert!(d.response_headers.contains(&(
        "content-type".to_string(),
        "application/problem+json".to_string()
    )));
}

#[tokio::test]
async fn header_styles_describe_every_limit() {
    let f = quota_fixture(HeaderStyle::Ietf);
    let d = f.qcheck(vec![desc(&[("team", "t")])]).await;
    assert_eq!(
        d.response_headers,
        vec![
            (
                "RateLimit-Policy".to_string(),
                "\"team_burst\";q=10;w=1;sluice-burst=3, \"team_daily\";q=4;w=86400".to_string()
            ),
            (
                "RateLimit".to_string(),
                format!(
                    "\"team_burst\";r=2;t=1, \"team_daily\";r=3;t={}",
                    86_400 - T0.as_secs() % 86_400
                )
            ),
        ]
    );
    let f = quota_fixture(HeaderStyle::XRateLimit);
    let d = f.qcheck(vec![desc(&[("team", "t")])]).await;
    assert_eq!(
        d.response_headers,
        vec![
            (
                "X-RateLimit-Limit".to_string(),
                "10, 10;w=1;name=\"team_burst\", 4;w=86400;name=\"team_daily\"".to_string()
            ),
            ("X-RateLimit-Remaining".to_string(), "2".to_string()),
            ("X-RateLimit-Reset".to_string(), "1".to_string()),
        ]
    );
}

#[tokio::test]
async fn sliding_window_rejection_tells_the_exact_wait() {
    let f = quota_fixture(HeaderStyle::Off);
    let app = || vec![desc(&[("app", "a")])];
    f.qcheck(app()).await;
    f.clock.advance(Duration::from_secs(100));
    f.qcheck(app()).await;
    let d = f.qcheck(app()).await;
    assert_eq!(d.overall, Over);
    // A 300 s window in 15 s sub-windows: the first hit's sub-window [T0, T0 + 15 s) stops
    // counting one window after it ends, at T0 + 315 s: 215 s from now.
    let wait = d.statuses[0].duration_until_reset.unwrap();
    assert_eq!(wait, Duration::from_secs(215));
    let p = problem(&d);
    assert_eq!(p["algorithm"], "sliding_window");
    assert_eq!(p["window"], 300);
    assert_eq!(p["kind"], "throttle");
    assert_eq!(
        p["detail"],
        format!(
            "app is over its limit of 2 per 5 minutes (sliding_window); retry in {} s",
            wait.as_secs()
        )
    );
}
