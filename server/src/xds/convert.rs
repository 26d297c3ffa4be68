//! `RateLimitConfig` resources → the rule files' form, so the loader that validates files
//! validates pushed rules too, and reports their errors the same way (`xds:<name>:line:column`).

use envoy_types::pb::ratelimit::config::ratelimit::v3::{
    RateLimitConfig, RateLimitDescriptor, RateLimitPolicy, RateLimitUnit,
};
use serde_json::{Map, Value, json};

/// The YAML text of one resource.
pub fn to_yaml(config: &RateLimitConfig) -> String {
    let doc = json!({
        "domain": config.domain,
        "descriptors": config.descriptors.iter().map(descriptor).collect::<Vec<_>>(),
    });
    // Serialising a JSON value of strings, numbers and booleans cannot fail.
    serde_yaml::to_string(&doc).unwrap_or_default()
}

fn descriptor(d: &RateLimitDescriptor) -> Value {
    let mut out = Map::new();
    out.insert("key".into(), json!(d.key));
    if !d.value.is_empty() {
        out.insert("value".into(), json!(d.value));
    }
    if let Some(policy) = &d.rate_limit {
        out.insert("rate_limit".into(), rate_limit(policy));
    }
    if !d.descriptors.is_empty() {
        out.insert(
            "descriptors".into(),
            Value::Array(d.descriptors.iter().map(descriptor).collect()),
        );
    }
    for (name, on) in [
        ("shadow_mode", d.shadow_mode),
        ("detailed_metric", d.detailed_metric),
        ("quota_mode", d.quota_mode),
    ] {
        if on {
            out.insert(name.into(), json!(true));
        }
    }
    Value::Object(out)
}

fn rate_limit(p: &RateLimitPolicy) -> Value {
    let mut out = Map::new();
    if p.unlimited {
        out.insert("unlimited".into(), json!(true));
    } else {
        // An unknown unit stays as its number, for the loader to refuse with its position.
        let unit = match RateLimitUnit::try_from(p.unit) {
            Ok(RateLimitUnit::Second) => json!("second"),
            Ok(RateLimitUnit::Minute) => json!("minute"),
            Ok(RateLimitUnit::Hour) => json!("hour"),
            Ok(RateLimitUnit::Day) => json!("day"),
            Ok(RateLimitUnit::Week) => json!("week"),
            Ok(RateLimitUnit::Month) => json!("month"),
            Ok(RateLimitUnit::Year) => json!("year"),
            Ok(RateLimitUnit::Unknown) => json!("unknown"),
            Err(_) => json!(p.unit),
        };
        out.insert("unit".into(), unit);
        out.insert("requests_per_unit".into(), json!(p.requests_per_unit));
    }
    if !p.name.is_empty() {
        out.insert("name".into(), json!(p.name));
    }
    if !p.replaces.is_empty() {
        let replaces: Vec<Value> = p
            .replaces
            .iter()
            .map(|r| json!({ "name": r.name }))
            .collect();
        out.insert("replaces".into(), Value::Array(replaces));
    }
    Value::Object(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use envoy_types::pb::ratelimit::config::ratelimit::v3::RateLimitReplace;

    fn limit(unit: RateLimitUnit, n: u32) -> Option<RateLimitPolicy> {
        Some(RateLimitPolicy {
            unit: unit as i32,
            requests_per_unit: n,
            ..Default::default()
        })
    }

    #[test]
    fn a_resource_loads_as_the_same_rules_a_file_would() {
        let config = RateLimitConfig {
            name: "edge".into(),
            domain: "edge".into(),
            descriptors: vec![
                RateLimitDescriptor {
                    key: "app_id".into(),
                    rate_limit: limit(RateLimitUnit::Minute, 100),
                    ..Default::default()
                },
                RateLimitDescriptor {
                    key: "org".into(),
                    value: "acme: \"quoted\"".into(),
                    shadow_mode: true,
                    rate_limit: Some(RateLimitPolicy {
                        unit: RateLimitUnit::Week as i32,
                        requests_per_unit: 7,
                        name: "acme".into(),
                        replaces: vec![RateLimitReplace { name: "x".into() }],
                        ..Default::default()
                    }),
                    descriptors: vec![RateLimitDescriptor {
                        key: "team".into(),
                        rate_limit: Some(RateLimitPolicy {
                            unlimited: true,
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                    ..Default::default()
                },
            ],
        };
        let yaml = to_yaml(&config);
        let rules = crate::config::parse_str("xds:edge", &yaml).unwrap();
        assert!(rules.lookup("edge", &[("app_id", "a")]).is_some());
        assert!(
            rules
                .lookup("edge", &[("org", "acme: \"quoted\"")])
                .is_some()
        );
        let file = "domain: edge\ndescriptors:\n  - key: app_id\n    rate_limit: {unit: minute, requests_per_unit: 100}\n";
        let from_file = crate::config::parse_str("edge.yaml", file).unwrap();
        assert_eq!(
            format!(
                "{:?}",
                rules.lookup("edge", &[("app_id", "a")]).map(|r| &r.limit)
            ),
            format!(
                "{:?}",
                from_file
                    .lookup("edge", &[("app_id", "a")])
                    .map(|r| &r.limit)
            ),
        );
    }

    #[test]
    fn an_invalid_resource_fails_with_its_position() {
        let config = RateLimitConfig {
            name: "bad".into(),
            domain: "bad".into(),
            descriptors: vec![RateLimitDescriptor {
                key: "k".into(),
                rate_limit: limit(RateLimitUnit::Unknown, 5),
                ..Default::default()
            }],
        };
        let errors = crate::config::parse_str("xds:bad", &to_yaml(&config)).unwrap_err();
        assert!(errors.to_string().starts_with("xds:bad:"), "{errors}");
    }
}
