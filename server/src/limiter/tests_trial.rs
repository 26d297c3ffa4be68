//! Trial periods through `RateLimiter::check`: new values start in shadow mode, are enforced once
//! their trial ends, every replica agrees, the hourly bound holds, and an operator's mode wins.
//! The store's clock is manual and tokio's is paused, so both move only when a test moves them.

use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::config::parse_str;
use crate::overrides::{Mode, Override, TargetEntry};
use crate::storage::backend::memory::MemoryStore;

const RULES: &str = r#"
domain: d
descriptors:
  - key: app
    trial: {shadow_for: 60s, max_new_per_hour: 2}
    rate_limit: {unit: hour, requests_per_unit: 1}
"#;

const T0: Duration = Duration::from_secs(1_700_000_000 - 1_700_000_000 % 3600);

fn replica(store: &Arc<MemoryStore>) -> RateLimiter<Arc<MemoryStore>> {
    RateLimiter::new(
        parse_str("rules.yaml", RULES).unwrap(),
        Arc::clone(store),
        Arc::new(Metrics::new()),
        LimiterOptions::default(),
    )
}

fn app(value: &str) -> CheckRequest {
    CheckRequest {
        domain: "d".into(),
        descriptors: vec![Descriptor::from_parts(
            [("app".to_owned(), value.to_owned())],
            None,
            None,
            false,
        )],
        hits_addend: 0,
    }
}

async fn code(l: &RateLimiter<Arc<MemoryStore>>, value: &str) -> Code {
    l.check(&app(value)).await.unwrap().overall
}

fn count(
    family: &prometheus_client::metrics::family::Family<
        crate::metrics::RuleLabels,
        prometheus_client::metrics::counter::Counter,
    >,
) -> u64 {
    family
        .get_or_create(&crate::metrics::RuleLabels {
            rule: crate::metrics::Shared("d.app".into()),
        })
        .get()
}

#[tokio::test(start_paused = true)]
async fn a_new_value_is_shadowed_for_its_trial_then_enforced_on_every_replica() {
    let clock = Arc::new(ManualClock::new(T0));
    let store = Arc::new(MemoryStore::new(1_000, clock.clone()));
    let (a, b) = (replica(&store), replica(&store));
    for _ in 0..3 {
        assert_eq!(code(&a, "new").await, Code::Ok, "in its trial");
    }
    assert_eq!(count(&a.metrics().trials_started), 1);
    assert_eq!(count(&a.metrics().trial_would_reject), 2);
    // Another replica agrees: the first sighting is in the store.
    assert_eq!(code(&b, "new").await, Code::Ok);
    assert_eq!(count(&b.metrics().trials_started), 0);

    clock.advance(Duration::from_secs(61));
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(code(&a, "new").await, Code::OverLimit, "the trial is over");
    assert_eq!(code(&b, "new").await, Code::OverLimit);
    // A replica that never saw it learns the same from the store.
    assert_eq!(code(&replica(&store), "new").await, Code::OverLimit);
}

#[tokio::test(start_paused = true)]
async fn each_replica_starts_at_most_the_hourly_bound_of_trials() {
    let store = Arc::new(MemoryStore::new(1_000, Arc::new(ManualClock::new(T0))));
    let l = replica(&store);
    for v in ["one", "two"] {
        assert_eq!(code(&l, v).await, Code::Ok);
        assert_eq!(code(&l, v).await, Code::Ok, "{v} is in its trial");
    }
    // The third new value this hour is enforced at once, and recorded nowhere.
    assert_eq!(code(&l, "three").await, Code::Ok, "its first request fits");
    assert_eq!(code(&l, "three").await, Code::OverLimit);
    assert_eq!(count(&l.metrics().trials_started), 2);
    // An hour later the bound allows new trials again: `three` had none recorded, so it
    // starts one now.
    tokio::time::advance(Duration::from_secs(3_601)).await;
    assert_eq!(code(&l, "three").await, Code::Ok);
    assert_eq!(count(&l.metrics().trials_started), 3);
}

#[tokio::test(start_paused = true)]
async fn an_operators_mode_ends_or_extends_a_trial() {
    let clock = Arc::new(ManualClock::new(T0));
    let store = Arc::new(MemoryStore::new(1_000, clock.clone()));
    let l = replica(&store);
    let mode = |value: &str, mode: Mode| Override {
        id: format!("{value}-{mode:?}"),
        domain: "d".into(),
        descriptor: vec![TargetEntry {
            key: "app".into(),
            value: Some(value.into()),
            prefix: None,
        }],
        limit: None,
        limit_name: None,
        concurrency: None,
        weight: None,
        mode: Some(mode),
        expires_at: None,
        reason: None,
        by: "test".into(),
        set_at: 0,
    };
    assert_eq!(code(&l, "ended").await, Code::Ok);
    assert_eq!(code(&l, "kept").await, Code::Ok);
    l.set_overrides(vec![
        mode("ended", Mode::Enforce),
        mode("kept", Mode::Shadow),
    ]);
    assert_eq!(code(&l, "ended").await, Code::OverLimit, "ended early");
    clock.advance(Duration::from_secs(61));
    tokio::time::advance(Duration::from_secs(61)).await;
    assert_eq!(code(&l, "kept").await, Code::Ok, "extended past its trial");
}
