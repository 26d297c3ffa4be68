//! Rule matching: which [`Rule`] a request descriptor's entries select, and the names a matched
//! rule gives its counters and metrics.
//!
//! The walk is the reference service's, step for step. For each entry, in order, the child of the
//! current node is chosen as
//!
//! 1. the child with that `key` and exactly that `value`, else
//! 2. the first child with that `key` whose wildcard `value` matches, in file order, else
//! 3. the child with that `key` and no `value` (the default),
//!
//! and the walk never backtracks: once an exact child is entered, a miss deeper down does not
//! retry the wildcard or default sibling. A rule applies only when every entry was consumed and
//! the last node has a `rate_limit`; a shorter or longer descriptor, or a last node without
//! `rate_limit` (a whitelist entry), matches nothing.
//!
//! One deliberate difference: the reference compares `key + "_" + value` strings, so a request
//! entry `(a_b, c)` can hit a rule written as `key: a, value: b_c`. Here keys and values are
//! compared separately, so only entries with key `a` reach rules with key `a`.

use std::sync::Arc;

use super::{Level, Node, Rule, RuleSet};

impl RuleSet {
    /// The root of a domain's tree.
    pub fn domain(&self, name: &str) -> Option<&Node> {
        self.domains.get(name)
    }

    /// The rule a descriptor selects in `domain`, or `None` (no limit) for an unknown domain or
    /// no match. An `unlimited` rule is returned like any other. Allocation-free.
    pub fn lookup(&self, domain: &str, entries: &[(&str, &str)]) -> Option<&Arc<Rule>> {
        let mut node = self.domains.get(domain)?;
        for (key, value) in entries {
            node = node.child(key, value)?;
        }
        node.rule.as_ref()
    }
}

impl Node {
    /// The child one entry leads to, in the reference's order: exact, wildcard, default.
    pub fn child(&self, key: &str, value: &str) -> Option<&Node> {
        if let Some(node) = self.exact.get(key).and_then(|by_value| by_value.get(value)) {
            return Some(node);
        }
        if let Some(patterns) = self.wildcard.get(key) {
            // The reference keeps patterns in the same map as exact values, so a request value
            // spelled exactly like a pattern is an exact hit even if an earlier pattern matches.
            let literal = if value.contains('*') {
                patterns.iter().find(|(p, _)| p == value)
            } else {
                None
            };
            let found = literal.or_else(|| patterns.iter().find(|(p, _)| wildcard_match(p, value)));
            if let Some((_, node)) = found {
                return Some(node);
            }
        }
        self.default.get(key)
    }
}

/// Whether `value` matches `pattern`, where each `*` stands for any run of characters (possibly
/// empty) and everything else is literal. The whole value must match.
pub fn wildcard_match(pattern: &str, value: &str) -> bool {
    let Some((first, rest)) = pattern.split_once('*') else {
        return pattern == value;
    };
    let (middle, last) = rest.rsplit_once('*').unwrap_or(("", rest));
    if value.len() < first.len() + last.len() || !value.starts_with(first) || !value.ends_with(last)
    {
        return false;
    }
    // Both ends matched at char boundaries, and they do not overlap (length check above).
    let mut hay = &value[first.len()..value.len() - last.len()];
    // Leftmost placement of each middle segment leaves the most room for the next one, so a
    // greedy scan is exact for `*`-only patterns.
    for segment in middle.split('*').filter(|s| !s.is_empty()) {
        match hay.find(segment) {
            Some(i) => hay = &hay[i + segment.len()..],
            None => return false,
        }
    }
    true
}

/// The value a level contributes to counter keys. With `share_threshold` (always on a wildcard
/// level) every matching request value shares one counter, named by the whole pattern as written
/// (`files/*`, `a*b*c`), as the reference's cache key does; otherwise it is the request's value.
pub fn counter_value<'a>(level: &'a Level, request_value: &'a str) -> &'a str {
    match (&level.value, level.share_threshold) {
        (Some(pattern), true) => pattern,
        _ => request_value,
    }
}

/// Whether every request matching `rule` is counted under its `stat_key` (no request value
/// reaches the metric name).
pub fn metric_key_is_stat_key(rule: &Rule) -> bool {
    !rule.detailed_metric && !rule.levels.iter().any(|l| l.value_to_metric)
}

/// The reference's per-request stats name for a matched rule: `rule.stat_key` unless the rule
/// opts in to request values.
///
/// - `detailed_metric` on the rule: `domain.key_value.key2_value2` from the request's entries
///   (the `_` is written even for an empty value), except that with any `share_threshold` level
///   those levels show their pattern and the others show `key` alone when the value is empty.
/// - otherwise, `value_to_metric` on a level puts the request's value in that level's segment
///   (a `share_threshold` level still shows its pattern); other levels keep the config's naming.
///
/// `entries` must be the ones `rule` was looked up with.
pub fn metric_key<'e>(
    rule: &Rule,
    entries: impl IntoIterator<Item = (&'e str, &'e str)>,
) -> Arc<str> {
    let any_share = rule.levels.iter().any(|l| l.share_threshold);
    if metric_key_is_stat_key(rule) {
        // The common case costs a reference count, not a string.
        return Arc::clone(&rule.stat_key);
    }
    let mut out = String::with_capacity(rule.stat_key.len() + 32);
    out.push_str(&rule.domain);
    // With detailed_metric and no shared level, every entry shows `key_value`, even when empty.
    let every_value = rule.detailed_metric && !any_share;
    for (level, (key, value)) in rule.levels.iter().zip(entries) {
        out.push('.');
        out.push_str(key);
        if every_value {
            out.push('_');
            out.push_str(value);
            continue;
        }
        let shown: &str = if level.share_threshold {
            level.value.as_deref().unwrap_or(value)
        } else if rule.detailed_metric {
            value
        } else {
            match &level.value {
                Some(pattern) if pattern.contains('*') && !level.value_to_metric => pattern,
                Some(_) => value,
                None if level.value_to_metric => value,
                None => "",
            }
        };
        if !shown.is_empty() {
            out.push('_');
            out.push_str(shown);
        }
    }
    Arc::from(out)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::{Limit, RateLimit, Unit, parse_str};

    const RULES: &str = r#"
domain: test
descriptors:
  - key: path
    value: /exact
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: path
    value: /api/*
    rate_limit: { unit: second, requests_per_unit: 2 }
  - key: path
    value: /a*
    rate_limit: { unit: second, requests_per_unit: 3 }
  - key: path
    rate_limit: { unit: second, requests_per_unit: 4 }
  - key: ext
    value: "*.png"
    rate_limit: { unit: second, requests_per_unit: 5 }
  - key: mid
    value: a*b*c
    rate_limit: { unit: second, requests_per_unit: 6 }
  - key: user
    value: alice
    descriptors:
      - key: op
        value: read
        rate_limit: { unit: minute, requests_per_unit: 7 }
  - key: user
    rate_limit: { unit: minute, requests_per_unit: 8 }
    descriptors:
      - key: op
        rate_limit: { unit: minute, requests_per_unit: 9 }
  - key: whitelisted
  - key: internal
    rate_limit: { unlimited: true }
  - key: tenant
    value: t-*
    share_threshold: true
    descriptors:
      - key: route
        rate_limit: { unit: hour, requests_per_unit: 10 }
  - key: heavy
    rate_limit: { unit: day, requests_per_unit: 11, name: heavy, replaces: [{ name: light }] }
"#;

    fn limit_of(rules: &RuleSet, entries: &[(&str, &str)]) -> Option<u32> {
        rules.lookup("test", entries).map(|rule| match &rule.limit {
            Limit::Limited(limits) => limits[0].requests_per_unit as u32,
            Limit::Unlimited { .. } => u32::MAX,
        })
    }

    #[test]
    fn matching_table() {
        let rules = parse_str("rules.yaml", RULES).unwrap();
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], Option<u32>);
        let cases: &[Case<'_>] = &[
            (
                "exact beats wildcard and default",
                &[("path", "/exact")],
                Some(1),
            ),
            ("wildcard beats default", &[("path", "/api/v1")], Some(2)),
            (
                "first wildcard in file order wins",
                &[("path", "/api/x")],
                Some(2),
            ),
            (
                "second wildcard when the first misses",
                &[("path", "/about")],
                Some(3),
            ),
            (
                "default when nothing else matches",
                &[("path", "/other")],
                Some(4),
            ),
            ("trailing star matches empty", &[("path", "/api/")], Some(2)),
            ("leading star", &[("ext", "logo.png")], Some(5)),
            ("leading star needs suffix", &[("ext", "logo.png.gz")], None),
            ("stars in the middle", &[("mid", "a1b2c")], Some(6)),
            ("middle stars may be empty", &[("mid", "abc")], Some(6)),
            ("middle segments in order", &[("mid", "acb")], None),
            (
                "nested exact path",
                &[("user", "alice"), ("op", "read")],
                Some(7),
            ),
            (
                "no backtracking: exact branch entered, deeper miss does not use default",
                &[("user", "alice"), ("op", "write")],
                None,
            ),
            (
                "default branch nested",
                &[("user", "bob"), ("op", "write")],
                Some(9),
            ),
            ("default node itself", &[("user", "bob")], Some(8)),
            (
                "exact node without rate_limit at the last entry",
                &[("user", "alice")],
                None,
            ),
            (
                "more entries than the rule path",
                &[("path", "/exact"), ("extra", "x")],
                None,
            ),
            (
                "fewer entries than the rule path",
                &[("tenant", "t-1")],
                None,
            ),
            (
                "wildcard level then nested",
                &[("tenant", "t-1"), ("route", "r")],
                Some(10),
            ),
            (
                "whitelist node without rate_limit",
                &[("whitelisted", "x")],
                None,
            ),
            ("unknown key", &[("nope", "x")], None),
            ("empty descriptor", &[], None),
            (
                "unlimited is returned",
                &[("internal", "x")],
                Some(u32::MAX),
            ),
            (
                "key order matters",
                &[("op", "read"), ("user", "alice")],
                None,
            ),
        ];
        for (name, entries, want) in cases {
            assert_eq!(limit_of(&rules, entries), *want, "{name}");
        }
        assert!(rules.lookup("other", &[("path", "/exact")]).is_none());
        assert!(rules.domain("test").is_some());
        assert!(rules.domain("other").is_none());
    }

    #[test]
    fn literal_pattern_value_is_an_exact_hit() {
        let rules = parse_str(
            "r.yaml",
            "domain: test\ndescriptors:\n  - {key: k, value: '*', rate_limit: {unit: second, requests_per_unit: 1}}\n  - {key: k, value: 'a*', rate_limit: {unit: second, requests_per_unit: 2}}\n",
        )
        .unwrap();
        assert_eq!(limit_of(&rules, &[("k", "a*")]), Some(2));
        assert_eq!(limit_of(&rules, &[("k", "ab")]), Some(1));
    }

    #[test]
    fn rule_details() {
        let rules = parse_str("rules.yaml", RULES).unwrap();
        let heavy = rules.lookup("test", &[("heavy", "x")]).unwrap();
        assert_eq!(heavy.limit.limits()[0].name.as_deref(), Some("heavy"));
        assert_eq!(heavy.replaces, ["light"]);
        assert_eq!(&*heavy.stat_key, "test.heavy");
        let nested = rules
            .lookup("test", &[("user", "alice"), ("op", "read")])
            .unwrap();
        assert_eq!(&*nested.stat_key, "test.user_alice.op_read");
        assert_eq!(nested.limit.limits(), [RateLimit::fixed(7, Unit::Minute)]);
        assert_eq!(nested.levels.len(), 2);
        assert_eq!(nested.levels[0].value.as_deref(), Some("alice"));
        let wild = rules.lookup("test", &[("path", "/api/v1")]).unwrap();
        assert_eq!(&*wild.stat_key, "test.path_/api/*");
    }

    #[test]
    fn share_threshold_counter_value() {
        let rules = parse_str("rules.yaml", RULES).unwrap();
        let rule = rules
            .lookup("test", &[("tenant", "t-42"), ("route", "/x")])
            .unwrap();
        assert_eq!(counter_value(&rule.levels[0], "t-42"), "t-*");
        assert_eq!(counter_value(&rule.levels[1], "/x"), "/x");
        let plain = rules.lookup("test", &[("path", "/api/v1")]).unwrap();
        assert_eq!(counter_value(&plain.levels[0], "/api/v1"), "/api/v1");
    }

    #[test]
    fn wildcard_match_table() {
        let cases = [
            ("*", "", true),
            ("*", "anything", true),
            ("foo*", "foo", true),
            ("foo*", "fo", false),
            ("*bar", "xbar", true),
            ("*bar", "barx", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "a-b-c", true),
            ("a*b*c", "a-c-b", false),
            ("ab*ba", "aba", false),
            ("a**b", "ab", true),
            ("héé*", "héé!", true),
            ("*é", "aé", true),
            ("exact", "exact", true),
            ("exact", "exactly", false),
        ];
        for (pattern, value, want) in cases {
            assert_eq!(wildcard_match(pattern, value), want, "{pattern} vs {value}");
        }
    }

    #[test]
    fn metric_keys() {
        let rules = parse_str(
            "m.yaml",
            r#"
domain: d
descriptors:
  - key: plain
    value: v
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: det
    detailed_metric: true
    rate_limit: { unit: second, requests_per_unit: 1 }
  - key: route
    value: api/*
    value_to_metric: true
    descriptors:
      - key: method
        rate_limit: { unit: second, requests_per_unit: 1 }
  - key: svc
    value: svc/*
    share_threshold: true
    descriptors:
      - key: endpoint
        detailed_metric: true
        rate_limit: { unit: second, requests_per_unit: 1 }
  - key: who
    value_to_metric: true
    rate_limit: { unit: second, requests_per_unit: 1 }
"#,
        )
        .unwrap();
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[("plain", "v")], "d.plain_v"),
            (&[("det", "x")], "d.det_x"),
            (&[("det", "")], "d.det_"),
            (
                &[("route", "api/users"), ("method", "GET")],
                "d.route_api/users.method",
            ),
            (
                &[("svc", "svc/a"), ("endpoint", "e1")],
                "d.svc_svc/*.endpoint_e1",
            ),
            (
                &[("svc", "svc/a"), ("endpoint", "")],
                "d.svc_svc/*.endpoint",
            ),
            (&[("who", "bob")], "d.who_bob"),
            (&[("who", "")], "d.who"),
        ];
        for (entries, want) in cases {
            let rule = rules.lookup("d", entries).unwrap();
            assert_eq!(
                &*metric_key(rule, entries.iter().copied()),
                *want,
                "{entries:?}"
            );
        }
    }
}
