use std::sync::Arc;

use super::*;
use crate::config::{Limit, parse_str};

const RULES: &str = r#"
domain: edge
descriptors:
  - key: app_id
    rate_limit: {unit: minute, requests_per_unit: 100}
  - key: app_id
    value: vip
    rate_limit: {unit: minute, requests_per_unit: 1000}
  - key: team
    rate_limits:
      - {name: burst, unit: second, requests_per_unit: 10}
      - {name: daily, unit: day, requests_per_unit: 10000}
  - key: tenant
    rate_limit: {unit: second, capacity: 100}
  - key: upload
    rate_limit: {concurrency: 5}
  - key: free
    rate_limit: {unlimited: true}
"#;

fn rules() -> RuleSet {
    parse_str("r.yaml", RULES).unwrap()
}

fn request(json: serde_json::Value) -> OverrideRequest {
    serde_json::from_value(json).unwrap()
}

fn set(json: serde_json::Value) -> Result<Override, String> {
    validate(request(json), &rules(), "ops", 1_700_000_000_000)
}

fn limit_of(rule: &Rule, i: usize) -> u64 {
    rule.limit.limits()[i].requests_per_unit
}

#[test]
fn bad_overrides_are_refused_with_the_reason() {
    let cases = [
        (
            serde_json::json!({"domain": "nope", "descriptor": [{"key": "app_id", "value": "a"}], "limit": 5}),
            "no domain 'nope'",
        ),
        (
            serde_json::json!({"domain": "edge", "descriptor": [{"key": "nope", "value": "a"}], "limit": 5}),
            "unknown rule",
        ),
        (
            serde_json::json!({"domain": "edge", "descriptor": [{"key": "app_id", "value": "a"}]}),
            "nothing to override",
        ),
        (
            serde_json::json!({"domain": "edge", "descriptor": [{"key": "app_id", "value": "a"}], "weight": 2}),
            "not a fair-share pool",
        ),
        (
            serde_json::json!({"domain": "edge", "descriptor": [{"key": "app_id", "value": "a"}], "concurrency": 2}),
            "not a concurrency pool",
        ),
        (
            serde_json::json!({"domain": "edge", "descriptor": [{"key": "team", "value": "t"}], "limit": 2}),
            "name the one to change with `limit_name`",
        ),
        (
            serde_json::json!({"domain": "edge", "descriptor": [{"key": "team", "value": "t"}], "limit": 2, "limit_name": "hourly"}),
            "no counted limit named 'hourly'",
        ),
        (
            serde_json::json!({"domain": "edge", "descriptor": [{"key": "free", "value": "t"}], "limit": 2}),
            "unlimited",
        ),
        (
            serde_json::json!({"domain": "edge", "descriptor": [{"key": "tenant", "value": "t"}], "weight": 1001}),
            "at most 1000",
        ),
        (
            serde_json::json!({"domain": "edge", "descriptor": [{"key": "upload", "value": "u"}], "concurrency": 10001}),
            "at most 10000",
        ),
        (
            serde_json::json!({"domain": "edge", "descriptor": [{"key": "app_id", "value": "a"}], "limit": 5, "ttl_seconds": 0}),
            "at least 1",
        ),
        (
            serde_json::json!({"domain": "edge", "descriptor": [{"key": "app_id", "value": "a", "prefix": "a"}], "limit": 5}),
            "exactly one of `value` and `prefix`",
        ),
        (
            serde_json::json!({"domain": "edge", "descriptor": [], "limit": 5}),
            "at least one entry",
        ),
    ];
    for (json, want) in cases {
        let err = set(json.clone()).unwrap_err();
        assert!(err.contains(want), "{json}: {err}");
    }
    // Wrong types and unknown fields never get this far.
    for body in [
        r#"{"domain": "edge", "descriptor": [{"key": "app_id", "value": "a"}], "limit": "many"}"#,
        r#"{"domain": "edge", "descriptor": [{"key": "app_id", "value": "a"}], "limit": -1}"#,
        r#"{"domain": "edge", "descriptor": [{"key": "app_id", "value": "a"}], "limt": 5}"#,
        r#"{"domain": "edge", "descriptor": [{"key": "app_id", "value": "a"}], "mode": "loud"}"#,
    ] {
        assert!(
            serde_json::from_str::<OverrideRequest>(body).is_err(),
            "{body}"
        );
    }
}

#[test]
fn exact_and_prefix_overrides_win_over_the_rules() {
    let rules = rules();
    let exact = set(serde_json::json!({
        "domain": "edge", "descriptor": [{"key": "app_id", "value": "bot"}], "limit": 5, "mode": "shadow"
    }))
    .unwrap();
    let prefix = set(serde_json::json!({
        "domain": "edge", "descriptor": [{"key": "app_id", "prefix": "b"}], "limit": 7
    }))
    .unwrap();
    let longer = set(serde_json::json!({
        "domain": "edge", "descriptor": [{"key": "app_id", "prefix": "bu"}], "limit": 8,
        "ttl_seconds": 60
    }))
    .unwrap();
    assert_eq!(longer.expires_at, Some(1_700_000_060));
    assert_ne!(exact.id, prefix.id);
    let set = OverrideSet::new(vec![exact, prefix, longer], &rules);
    let apply = |value: &str, now: u64| {
        let entries = [("app_id", value)];
        let rule = rules.lookup("edge", &entries).unwrap();
        set.apply("edge", &entries, rule, now)
    };
    let bot = apply("bot", 0);
    assert_eq!(limit_of(&bot, 0), 5);
    assert!(bot.shadow_mode);
    assert_eq!(limit_of(&apply("bob", 0), 0), 7);
    assert_eq!(limit_of(&apply("bus", 0), 0), 8, "the longest prefix wins");
    assert_eq!(
        limit_of(&apply("bus", 1_700_000_060), 0),
        7,
        "a lapsed override is skipped"
    );
    assert_eq!(limit_of(&apply("cat", 0), 0), 100);
    // The exact `vip` rule is a different rule; a prefix matching it overrides it too.
    let vip = set_for_vip();
    assert_eq!(limit_of(&vip, 0), 3);
    assert!(
        set.dump
            .contains("edge.app_id: override [app_id=bot] limit=5 mode=shadow"),
        "{}",
        set.dump
    );
    assert!(set.dump.starts_with("# runtime overrides"));
}

fn set_for_vip() -> Arc<Rule> {
    let rules = rules();
    let o = set(serde_json::json!({
        "domain": "edge", "descriptor": [{"key": "app_id", "prefix": "v"}], "limit": 3
    }))
    .unwrap();
    let set = OverrideSet::new(vec![o], &rules);
    let entries = [("app_id", "vip")];
    let rule = rules.lookup("edge", &entries).unwrap();
    set.apply("edge", &entries, rule, 0)
}

#[test]
fn pools_and_named_limits() {
    let rules = rules();
    let weight = set(serde_json::json!({
        "domain": "edge", "descriptor": [{"key": "tenant", "value": "acme"}], "weight": 4, "limit": 300
    }))
    .unwrap();
    let pool = set(serde_json::json!({
        "domain": "edge", "descriptor": [{"key": "upload", "value": "big"}], "concurrency": 9
    }))
    .unwrap();
    let daily = set(serde_json::json!({
        "domain": "edge", "descriptor": [{"key": "team", "value": "t"}], "limit": 50000, "limit_name": "daily"
    }))
    .unwrap();
    let set = OverrideSet::new(vec![weight, pool, daily], &rules);
    let get = |k: &str, v: &str| {
        let entries = [(k, v)];
        set.apply("edge", &entries, rules.lookup("edge", &entries).unwrap(), 0)
    };
    let acme = get("tenant", "acme");
    let l = &acme.limit.limits()[0];
    assert_eq!(
        (
            l.requests_per_unit,
            l.share.as_ref().unwrap().weight_of("acme")
        ),
        (300, 4)
    );
    assert_eq!(limit_of(&get("upload", "big"), 0), 9);
    let team = get("team", "t");
    assert_eq!((limit_of(&team, 0), limit_of(&team, 1)), (10, 50_000));
    assert!(matches!(get("team", "other").limit, Limit::Limited(_)));
    assert_eq!(limit_of(&get("team", "other"), 1), 10_000);
}

#[test]
fn an_override_the_rules_no_longer_fit_is_listed_not_applied() {
    let o = set(serde_json::json!({
        "domain": "edge", "descriptor": [{"key": "tenant", "value": "acme"}], "weight": 4
    }))
    .unwrap();
    let changed = parse_str(
        "r.yaml",
        "domain: edge\ndescriptors:\n  - key: tenant\n    rate_limit: {unit: second, requests_per_unit: 5}\n",
    )
    .unwrap();
    let set = OverrideSet::new(vec![o.clone()], &changed);
    assert!(
        set.dump.contains(&format!("{}: not applied", o.id)),
        "{}",
        set.dump
    );
    let entries = [("tenant", "acme")];
    let rule = changed.lookup("edge", &entries).unwrap();
    assert!(Arc::ptr_eq(&set.apply("edge", &entries, rule, 0), rule));
}

#[test]
fn a_ttl_is_never_cut_short_by_the_second_it_starts_in() {
    let body = serde_json::json!({
        "domain": "edge", "descriptor": [{"key": "app_id", "value": "bot"}], "limit": 5,
        "ttl_seconds": 1
    });
    for (now_ms, expires) in [
        (1_700_000_000_000, 1_700_000_001),
        (1_700_000_000_001, 1_700_000_002),
        (1_700_000_000_900, 1_700_000_002),
    ] {
        let o = validate(request(body.clone()), &rules(), "ops", now_ms).unwrap();
        assert_eq!(o.expires_at, Some(expires), "set at {now_ms} ms");
        // Still in force just under a whole second after it was set.
        let later_ms = now_ms + 999;
        assert!(!o.lapsed(later_ms / 1000));
    }
}
