//! The controller on a manual clock, over the memory override store: a simulated upstream whose
//! latency grows with the requests in flight, reports each interval, and the limit the
//! controller writes as an override.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use prometheus_client::metrics::family::Family;

use super::*;
use crate::adaptive::fleet::Fleet;
use crate::adaptive::{ACTOR, Report, Reports};
use crate::config::{RuleSet, parse_str};
use crate::overrides::{Override, OverrideStore};

const RULES: &str = "domain: d\ndescriptors:\n  - key: upstream\n    value: pay\n    rate_limit: {concurrency: 20, adaptive: {signal: latency, target: 200ms, min: 5, max: 300, interval: 1s}}\n";

struct Rig {
    rules: Arc<RuleSet>,
    reports: Arc<Reports>,
    store: Arc<OverrideStore>,
    controller: Controller,
    applied: Arc<parking_lot::Mutex<Vec<Override>>>,
}

fn rig() -> Rig {
    let rules = Arc::new(parse_str("a.yaml", RULES).unwrap());
    let reports = Arc::new(Reports::new(Family::default()));
    let store = Arc::new(OverrideStore::memory());
    let applied = Arc::new(parking_lot::Mutex::new(Vec::new()));
    let seen = Arc::clone(&applied);
    let r = Arc::clone(&rules);
    let controller = Controller::new(
        Arc::clone(&reports),
        Arc::new(Fleet::local()),
        Arc::clone(&store),
        Arc::new(move || Arc::clone(&r)),
        Arc::new(move |list| *seen.lock() = list),
        AdaptiveMetrics::default(),
    );
    Rig {
        rules,
        reports,
        store,
        controller,
        applied,
    }
}

impl Rig {
    /// The pool's size: the adaptive override's, else the config's 20.
    fn limit(&self) -> u64 {
        self.applied
            .lock()
            .iter()
            .find(|o| o.by == ACTOR)
            .and_then(|o| o.concurrency)
            .unwrap_or(20)
    }

    /// One interval starting at `start_ms`: `per_request_ms` of latency per request in flight
    /// (the pool full, demand being higher), 300 reports; returns the p99 the upstream had.
    async fn interval(&self, start_ms: u64, per_request_ms: f64) -> f64 {
        let limit = self.limit();
        let mut agg = crate::adaptive::sketch::Aggregate::default();
        let batch: Vec<Report> = (0..300)
            .map(|i| {
                let ms =
                    (5.0 + per_request_ms * limit as f64) * (1.0 + 0.1 * f64::from(i % 10) / 10.0);
                agg.add(ms, false);
                Report {
                    entries: vec![("upstream".into(), "pay".into())],
                    latency_ms: ms,
                    status: 200,
                }
            })
            .collect();
        self.controller.tick(start_ms + 10).await;
        self.reports.record(&self.rules, "d", &batch);
        // The boundary hands the reports in; the settling delay later, the interval is decided.
        self.controller.tick(start_ms + 1000).await;
        self.controller.tick(start_ms + 1000 + 200).await;
        agg.quantile(0.99).unwrap()
    }
}

#[tokio::test]
async fn the_controller_settles_near_target_backs_off_and_rises_again() {
    let rig = rig();
    let mut t = 1_000_000_000u64;
    rig.controller.tick(t).await;
    let mut trace = Vec::new();
    // 4 ms per request in flight: the target 200 ms is met near 48.
    for _ in 0..20 {
        let p99 = rig.interval(t, 4.0).await;
        trace.push((rig.limit(), p99));
        t += 1000;
    }
    let settled = rig.limit();
    let (_, p99) = *trace.last().unwrap();
    assert!((180.0..=200.0).contains(&p99), "{trace:?}");
    assert!((40..=50).contains(&settled), "{trace:?}");
    // Overload: 12 ms per request. The limit comes down within a few intervals.
    trace.clear();
    for _ in 0..10 {
        let p99 = rig.interval(t, 12.0).await;
        trace.push((rig.limit(), p99));
        t += 1000;
    }
    assert!(rig.limit() < settled / 2, "{trace:?}");
    // Faster again: it rises past where it was.
    trace.clear();
    for _ in 0..15 {
        let p99 = rig.interval(t, 2.0).await;
        trace.push((rig.limit(), p99));
        t += 1000;
    }
    assert!(rig.limit() > settled, "{trace:?}");
    let (_, p99) = *trace.last().unwrap();
    assert!((180.0..=205.0).contains(&p99), "{trace:?}");
    // Every change is audited by `adaptive`, with the signal that caused it.
    let audit = rig.store.audit(1000).await.unwrap();
    assert!(audit.len() > 5);
    for e in &audit {
        assert_eq!(e.who, ACTOR);
        assert_eq!(e.after["signal"]["signal"], "latency");
        let limit = e.after["concurrency"].as_u64().unwrap();
        assert!((5..=300).contains(&limit), "{e:?}");
    }
    assert!(audit[0].before["concurrency"].is_u64(), "{:?}", audit[0]);
}

#[tokio::test]
async fn few_reports_change_nothing_and_an_operators_override_wins() {
    let rig = rig();
    let t = 2_000_000_000u64;
    rig.controller.tick(t).await;
    // 10 reports, under `min_reports`: nothing is written.
    let few: Vec<Report> = (0..10)
        .map(|_| Report {
            entries: vec![("upstream".into(), "pay".into())],
            latency_ms: 900.0,
            status: 200,
        })
        .collect();
    rig.reports.record(&rig.rules, "d", &few);
    rig.controller.tick(t + 1000).await;
    rig.controller.tick(t + 1200).await;
    assert!(rig.store.load().await.unwrap().is_empty());

    // An operator sets the pool; slow reports do not move it.
    let request: crate::overrides::OverrideRequest = serde_json::from_value(serde_json::json!({
        "domain": "d", "descriptor": [{"key": "upstream", "value": "pay"}], "concurrency": 70
    }))
    .unwrap();
    let o = crate::overrides::validate(request, &rig.rules, "ops (alice)", t).unwrap();
    let audit = crate::overrides::AuditEntry {
        at: t,
        who: o.by.clone(),
        action: "override.set".into(),
        target: serde_json::Value::Null,
        after: serde_json::Value::Null,
        before: serde_json::Value::Null,
    };
    rig.store.put(&o, &audit).await.unwrap();
    let slow: Vec<Report> = (0..100).map(|_| few[0].clone()).collect();
    rig.reports.record(&rig.rules, "d", &slow);
    rig.controller.tick(t + 2000).await;
    rig.controller.tick(t + 2200).await;
    let list = rig.store.load().await.unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        (list[0].by.as_str(), list[0].concurrency),
        ("ops (alice)", Some(70))
    );

    // The guard holds even when the controller's view is stale.
    let mine = Override {
        by: ACTOR.into(),
        concurrency: Some(6),
        ..o.clone()
    };
    assert!(matches!(
        rig.store.put_guarded(&mine, &audit).await.unwrap(),
        crate::overrides::backend::Guarded::Kept(_)
    ));
}
