//! The matcher's walk, step by step, for `explain`: which child each entry took (exact value,
//! wildcard, default key), what it passed over and why, and where the walk ended. It follows
//! [`super::matcher`] exactly; a test holds the two to the same rule.

use std::sync::Arc;

use serde::Serialize;

use super::matcher::wildcard_match;
use super::{Node, Rule, RuleSet};

/// One entry of the walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Step {
    pub key: String,
    pub value: String,
    /// How the entry was matched.
    pub taken: Taken,
    /// Siblings with this key that were passed over, each with why.
    pub passed_over: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "by", rename_all = "snake_case")]
pub enum Taken {
    /// The child with exactly this value.
    Exact,
    /// The first wildcard value, in file order, that matches.
    Wildcard { pattern: String },
    /// The child with this key and no value.
    Default,
    /// No child with this key: the walk stops here.
    Nothing,
}

/// Where the walk ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Ended {
    /// The domain is not in the rule set: every descriptor is OK.
    UnknownDomain,
    /// An entry found no child (the step that says `nothing`).
    NoMatch,
    /// Every entry was consumed, at a node without `rate_limit` (a whitelist entry, or a level
    /// that only holds deeper rules): no limit.
    NoRateLimit,
    /// A rule: its stats key.
    Rule { rule: String },
}

/// A descriptor's walk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Walk {
    pub steps: Vec<Step>,
    pub ended: Ended,
}

impl RuleSet {
    /// The walk of `entries` in `domain`, and the rule it reaches (what [`RuleSet::lookup`]
    /// returns).
    pub fn walk(&self, domain: &str, entries: &[(&str, &str)]) -> (Walk, Option<Arc<Rule>>) {
        let Some(mut node) = self.domain(domain) else {
            let walk = Walk {
                steps: Vec::new(),
                ended: Ended::UnknownDomain,
            };
            return (walk, None);
        };
        let mut steps = Vec::with_capacity(entries.len());
        for (key, value) in entries {
            let (step, next) = step(node, key, value);
            steps.push(step);
            match next {
                Some(n) => node = n,
                None => {
                    let walk = Walk {
                        steps,
                        ended: Ended::NoMatch,
                    };
                    return (walk, None);
                }
            }
        }
        match &node.rule {
            Some(rule) => {
                let ended = Ended::Rule {
                    rule: rule.stat_key.to_string(),
                };
                (Walk { steps, ended }, Some(Arc::clone(rule)))
            }
            None => {
                let ended = Ended::NoRateLimit;
                (Walk { steps, ended }, None)
            }
        }
    }
}

/// One entry's choice among `node`'s children, in [`Node::child`]'s order.
fn step<'n>(node: &'n Node, key: &str, value: &str) -> (Step, Option<&'n Node>) {
    let mut passed_over = Vec::new();
    let exact = node.exact.get(key);
    if let Some(child) = exact.and_then(|by_value| by_value.get(value)) {
        return (made(key, value, Taken::Exact, passed_over), Some(child));
    }
    if exact.is_some_and(|by_value| !by_value.is_empty()) {
        passed_over.push(format!("no rule for exactly {key}={value}"));
    }
    if let Some(patterns) = node.wildcard.get(key) {
        let literal = value
            .contains('*')
            .then(|| patterns.iter().find(|(p, _)| p == value));
        if let Some(Some((pattern, child))) = literal {
            let taken = Taken::Wildcard {
                pattern: pattern.clone(),
            };
            return (made(key, value, taken, passed_over), Some(child));
        }
        for (pattern, child) in patterns {
            if wildcard_match(pattern, value) {
                let taken = Taken::Wildcard {
                    pattern: pattern.clone(),
                };
                return (made(key, value, taken, passed_over), Some(child));
            }
            passed_over.push(format!("{key}={pattern} does not match"));
        }
    }
    match node.default.get(key) {
        Some(child) => (made(key, value, Taken::Default, passed_over), Some(child)),
        None => {
            if exact.is_none() && !node.wildcard.contains_key(key) {
                passed_over.push(format!("no rule has key {key} at this level"));
            }
            (made(key, value, Taken::Nothing, passed_over), None)
        }
    }
}

fn made(key: &str, value: &str, taken: Taken, passed_over: Vec<String>) -> Step {
    Step {
        key: key.to_owned(),
        value: value.to_owned(),
        taken,
        passed_over,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const RULES: &str = "domain: d\ndescriptors:\n  - key: path\n    value: /api/v1\n    rate_limit: {unit: second, requests_per_unit: 1}\n  - key: path\n    value: /api/*\n    rate_limit: {unit: second, requests_per_unit: 2}\n  - key: path\n    value: /files/*\n    rate_limit: {unit: second, requests_per_unit: 3}\n  - key: path\n    rate_limit: {unit: second, requests_per_unit: 4}\n  - key: org\n    descriptors:\n      - key: team\n        rate_limit: {unit: second, requests_per_unit: 5}\n  - key: internal\n";

    #[test]
    fn every_walk_ends_where_lookup_does() {
        let rules = crate::config::parse_str("t.yaml", RULES).unwrap();
        let cases: &[&[(&str, &str)]] = &[
            &[("path", "/api/v1")],
            &[("path", "/api/v2")],
            &[("path", "/files/a")],
            &[("path", "/other")],
            &[("org", "acme"), ("team", "x")],
            &[("org", "acme")],
            &[("org", "acme"), ("team", "x"), ("extra", "y")],
            &[("internal", "z")],
            &[("nope", "z")],
        ];
        for entries in cases {
            let (walk, rule) = rules.walk("d", entries);
            let looked = rules.lookup("d", entries);
            assert_eq!(
                rule.as_ref().map(|r| &r.stat_key),
                looked.map(|r| &r.stat_key),
                "{entries:?}"
            );
            assert_eq!(
                matches!(walk.ended, Ended::Rule { .. }),
                rule.is_some(),
                "{entries:?}"
            );
        }
        let (walk, _) = rules.walk("d", &[("path", "/files/a")]);
        assert_eq!(
            walk.steps[0].taken,
            Taken::Wildcard {
                pattern: "/files/*".into()
            }
        );
        assert_eq!(
            walk.steps[0].passed_over,
            [
                "no rule for exactly path=/files/a",
                "path=/api/* does not match"
            ]
        );
        let (walk, _) = rules.walk("d", &[("path", "/other")]);
        assert_eq!(walk.steps[0].taken, Taken::Default);
        let (walk, _) = rules.walk("d", &[("org", "acme")]);
        assert_eq!(walk.ended, Ended::NoRateLimit);
        let (walk, _) = rules.walk("d", &[("nope", "z")]);
        assert_eq!(walk.ended, Ended::NoMatch);
        assert_eq!(
            walk.steps[0].passed_over,
            ["no rule has key nope at this level"]
        );
        assert_eq!(rules.walk("other", &[]).0.ended, Ended::UnknownDomain);
    }
}
