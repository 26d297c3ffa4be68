//! Standing on a manual clock, over the memory override store: tenants refused window after
//! window are penalised once, recover after quiet windows, tiers and operators' overrides are
//! left alone; and what `check-config` refuses.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use parking_lot::Mutex;

use super::*;
use crate::config::{RuleSet, parse_str};
use crate::overrides::{OverrideStore, target_id};

const RULES: &str = "domain: d
descriptors:
  - key: tenant
    rate_limit:
      unit: second
      capacity: 100
      weights: {gold: 8, \"paid-*\": 6}
      weight: 4
      standing: {penalty: 0.5, after: 3, recover_after: 2, keep_tier_weights: true}
";

const RULE: &str = "d.tenant";

struct Rig {
    refusals: Arc<Refusals>,
    store: Arc<OverrideStore>,
    standing: Standing,
    applied: Arc<Mutex<Vec<Override>>>,
    rules: Arc<RuleSet>,
    /// The window the next [`Rig::window`] covers, in seconds since the epoch.
    k: u64,
}

fn rig() -> Rig {
    rig_with(RULES)
}

fn rig_with(text: &str) -> Rig {
    let rules = Arc::new(parse_str("rules.yaml", text).unwrap());
    let refusals = Arc::new(Refusals::default());
    let store = Arc::new(OverrideStore::memory());
    let applied = Arc::new(Mutex::new(Vec::new()));
    let seen = Arc::clone(&applied);
    let r = Arc::clone(&rules);
    let standing = Standing::new(
        Arc::clone(&refusals),
        Arc::new(Fleet::local()),
        Arc::clone(&store),
        Arc::new(move || Arc::clone(&r)),
        Arc::new(move |list| *seen.lock() = list),
        StandingMetrics::default(),
    );
    Rig {
        refusals,
        store,
        standing,
        applied,
        rules,
        k: 1_700_000_000,
    }
}

impl Rig {
    async fn start(&mut self) {
        self.standing.tick(self.k * 1000 + 10).await;
    }

    /// One window in which the pool refused `refused`; returns what its decision did.
    async fn window(&mut self, refused: &[&str]) -> Decided {
        let rule: Arc<str> = Arc::from(RULE);
        for t in refused {
            self.refusals.refused(&rule, t);
        }
        self.k += 1;
        // The boundary hands the refusals in; the settling delay later, the window is decided.
        assert!(self.standing.tick(self.k * 1000 + 10).await.is_empty());
        let mut out = self.standing.tick(self.k * 1000 + 250).await;
        assert_eq!(out.len(), 1);
        out.pop().unwrap().1
    }

    /// The weight in force for `tenant`: an override's, else none.
    fn weight(&self, tenant: &str) -> Option<(u32, String)> {
        let id = target_id(
            "d",
            &target(
                self.rules.lookup("d", &[("tenant", tenant)]).unwrap(),
                tenant,
            ),
        );
        self.applied
            .lock()
            .iter()
            .find(|o| o.id == id)
            .map(|o| (o.weight.unwrap(), o.by.clone()))
    }
}

fn penalised(names: &[&str]) -> Decided {
    Decided {
        penalised: names.iter().map(|n| (*n).to_owned()).collect(),
        recovered: Vec::new(),
    }
}

#[tokio::test]
async fn a_tenant_refused_window_after_window_is_penalised_once_and_recovers() {
    let mut rig = rig();
    rig.start().await;
    // Refused in two windows, then one without: no penalty.
    assert_eq!(rig.window(&["noisy", "gappy"]).await, Decided::default());
    assert_eq!(rig.window(&["noisy"]).await, Decided::default());
    // The third consecutive window: weight 4 × 0.5.
    assert_eq!(rig.window(&["noisy", "gappy"]).await, penalised(&["noisy"]));
    assert_eq!(rig.weight("noisy"), Some((2, ACTOR.to_owned())));
    assert_eq!(rig.weight("gappy"), None);
    // Still refused: the penalty stays, not compounded, and is not written again.
    let audit_before = rig.store.audit(100).await.unwrap().len();
    assert_eq!(rig.window(&["noisy", "gappy"]).await, Decided::default());
    assert_eq!(rig.window(&["gappy"]).await, penalised(&["gappy"]));
    assert_eq!(rig.weight("noisy"), Some((2, ACTOR.to_owned())));
    assert_eq!(rig.store.audit(100).await.unwrap().len(), audit_before + 1);
    // Two quiet windows for noisy (recover_after: 2): its weight comes back.
    let d = rig.window(&["gappy"]).await;
    assert_eq!(d.recovered, vec!["noisy".to_owned()], "{d:?}");
    assert_eq!(rig.weight("noisy"), None);
    assert_eq!(rig.weight("gappy"), Some((2, ACTOR.to_owned())));

    // Every change is audited by `standing`, with why.
    let audit = rig.store.audit(100).await.unwrap();
    let delete = &audit[0];
    assert_eq!(
        (delete.who.as_str(), delete.action.as_str()),
        (ACTOR, "override.delete")
    );
    assert_eq!(delete.before["weight"], 2);
    assert_eq!(delete.after["standing"]["recovered_after_windows"], 2);
    let set = audit.iter().find(|e| e.action == "override.set").unwrap();
    assert_eq!(set.who, ACTOR);
    assert_eq!(set.after["standing"]["refused_windows"], 3);
    assert_eq!(set.after["standing"]["configured_weight"], 4);
    assert!(
        set.after["reason"]
            .as_str()
            .unwrap()
            .starts_with("standing: refused in 3 consecutive windows of 1 s; weight 4 -> 2")
    );
}

#[tokio::test]
async fn tiers_keep_their_weight_and_an_operators_override_wins() {
    let mut rig = rig();
    rig.start().await;
    // An operator's own weight for `op`, set before it misbehaves.
    let request = OverrideRequest {
        domain: "d".into(),
        descriptor: target(rig.rules.lookup("d", &[("tenant", "op")]).unwrap(), "op"),
        limit: None,
        limit_name: None,
        concurrency: None,
        weight: Some(3),
        mode: None,
        ttl_seconds: None,
        reason: Some("a deal".into()),
    };
    let o = crate::overrides::validate(request, &rig.rules, "alice", 0).unwrap();
    let audit = AuditEntry {
        at: 0,
        who: "alice".into(),
        action: "override.set".into(),
        target: serde_json::Value::Null,
        after: serde_json::Value::Null,
        before: serde_json::Value::Null,
    };
    rig.store.put(&o, &audit).await.unwrap();
    *rig.applied.lock() = rig.store.load().await.unwrap();
    for _ in 0..5 {
        assert_eq!(
            rig.window(&["gold", "paid-7", "op"]).await,
            Decided::default()
        );
    }
    assert_eq!(rig.weight("gold"), None);
    assert_eq!(rig.weight("paid-7"), None);
    assert_eq!(rig.weight("op"), Some((3, "alice".to_owned())));
    // Once the operator's override is gone, the next streak is standing's to judge.
    let gone = AuditEntry {
        action: "override.delete".into(),
        ..audit
    };
    rig.store.delete(&o.id, &gone).await.unwrap();
    // Its streak went on all along: the next refused window penalises it.
    assert_eq!(rig.window(&["op"]).await, penalised(&["op"]));
}

#[tokio::test]
async fn a_rule_holds_at_most_max_penalised_penalties() {
    let mut rig = rig_with(&RULES.replace("after: 3", "after: 1"));
    rig.start().await;
    // More tenants refused than a rule may penalise, all in one window.
    let names: Vec<String> = (0..MAX_PENALISED + 5).map(|i| format!("t{i}")).collect();
    let refused: Vec<&str> = names.iter().map(String::as_str).collect();
    let d = rig.window(&refused).await;
    assert_eq!(d.penalised.len(), MAX_PENALISED);
    let by_standing = rig
        .store
        .load()
        .await
        .unwrap()
        .into_iter()
        .filter(|o| o.by == ACTOR);
    assert_eq!(by_standing.count(), MAX_PENALISED);
    // The next window penalises nobody new while the rule is full.
    assert_eq!(rig.window(&refused).await, Decided::default());
}

#[test]
fn a_penalty_rounds_down() {
    let spec = crate::config::standing::StandingSpec {
        penalty_ppm: 500_000,
        after: 3,
        recover_after: 5,
        keep_tier_weights: false,
    };
    assert_eq!(
        [1, 2, 3, 4, 999, 1000].map(|w| spec.penalised(w)),
        [0, 1, 1, 2, 499, 500]
    );
}

#[test]
fn blocks_that_do_not_fit_are_refused_where_they_stand() {
    let rules = |limit: &str| {
        format!("domain: d\ndescriptors:\n  - key: tenant\n    rate_limit: {limit}\n")
    };
    for (text, why) in [
        (
            rules("{unit: second, capacity: 10, standing: {penalty: 1.5, after: 3, recover_after: 5}}"),
            "rules.yaml:4:66: `penalty` must be a number between 0 and 1 (both excluded), found '1.5'",
        ),
        (
            rules("{unit: second, capacity: 10, standing: {penalty: 0.5, after: 0, recover_after: 5}}"),
            "rules.yaml:4:78: `after` must be at least 1, found '0'",
        ),
        (
            rules("{unit: second, capacity: 10, standing: {penalty: 0.5, after: 3}}"),
            "rules.yaml:4:56: `standing` needs `recover_after`",
        ),
        (
            rules("{unit: second, capacity: 10, standing: {penalty: 0.5, after: 3, recover_after: 5, floor: 2}}"),
            "rules.yaml:4:99: unknown field `floor` in `standing`; expected one of: penalty, after, recover_after, keep_tier_weights",
        ),
        (
            rules("{unit: second, capacity: 10, standing: {penalty: 0.5, after: 3, recover_after: 5, after: 4}}"),
            "rules.yaml:4:99: duplicate field `after` (first given at line 4, column 71)",
        ),
        (
            rules("{unit: second, requests_per_unit: 10, standing: {penalty: 0.5, after: 3, recover_after: 5}}"),
            "rules.yaml:4:65: `standing` applies only to a fair-share pool, one with a `capacity`",
        ),
        (
            rules("{unit: second, capacity: 10, standing: {penalty: 0.5, after: 3, recover_after: 5, keep_tier_weights: yes}}"),
            "rules.yaml:4:118: unknown keep_tier_weights 'yes'; expected one of: true, false",
        ),
        (
            "domain: d\ndescriptors:\n  - key: org\n    value: \"team-*\"\n    descriptors:\n      - key: tenant\n        rate_limit: {unit: second, capacity: 10, standing: {penalty: 0.5, after: 3, recover_after: 5}}\n".to_owned(),
            "rules.yaml:7:60: `standing` needs a rule whose path names exact values above its last level",
        ),
    ] {
        let e = parse_str("rules.yaml", &text).unwrap_err().to_string();
        assert!(e.contains(why), "{text}\n{e}");
    }
    // A tenant level that is a pattern is fine: its tenants are the values it matches.
    parse_str(
        "rules.yaml",
        "domain: d\ndescriptors:\n  - key: org\n    value: acme\n    descriptors:\n      - key: tenant\n        value: \"app-*\"\n        rate_limit: {unit: minute, capacity: 10, standing: {penalty: 0.25, after: 2, recover_after: 4}}\n",
    )
    .unwrap();
}
