//! The reference's stats, derived from Sluice's own metrics: the statsd names envoyproxy/ratelimit
//! emits (`ratelimit.service.rate_limit.<domain>.<key>.total_hits`, …) and the Prometheus names
//! its documented statsd_exporter mapping turns them into (`ratelimit_service_rate_limit_total_hits
//! {domain, key1, key2}`), so dashboards and alerts built on the reference keep working.
//!
//! Both are read from a scrape of Sluice's own registry ([`super::Metrics::encode`]), away from the
//! request path: the per-rule families are already bounded by `--max-metric-series`, and the
//! reference's names are a renaming of them.

use std::fmt::Write;

/// One sample of an exposition: its name, labels and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Vec<(String, String)>,
    pub value: f64,
}

impl Sample {
    fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The samples of a text exposition (comments skipped; a line that does not parse is skipped).
pub fn samples(exposition: &str) -> Vec<Sample> {
    exposition
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(parse_line)
        .collect()
}

fn parse_line(line: &str) -> Option<Sample> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(mut body) = rest.strip_prefix('{') {
        // name="value" pairs, values escaped with \\, \" and \n.
        loop {
            body = body.trim_start_matches(',');
            if let Some(after) = body.strip_prefix('}') {
                rest = after;
                break;
            }
            let eq = body.find("=\"")?;
            let label = body[..eq].to_owned();
            let mut value = String::new();
            let mut chars = body[eq + 2..].char_indices();
            let end = loop {
                let (i, c) = chars.next()?;
                match c {
                    '\\' => {
                        let (_, escaped) = chars.next()?;
                        value.push(if escaped == 'n' { '\n' } else { escaped });
                    }
                    '"' => break eq + 2 + i + 1,
                    c => value.push(c),
                }
            };
            labels.push((label, value));
            body = &body[end..];
        }
    }
    let value = rest.split_whitespace().next()?.parse::<f64>().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// The per-rule counts, as the reference names their stats.
const RULE_COUNTS: [(&str, &str); 5] = [
    ("sluice_rule_total_hits_total", "total_hits"),
    ("sluice_rule_over_limit_total", "over_limit"),
    ("sluice_rule_near_limit_total", "near_limit"),
    ("sluice_rule_within_limit_total", "within_limit"),
    ("sluice_rule_shadow_mode_total", "shadow_mode"),
];

/// The reference's statsd counters with their running totals, from a scrape of Sluice's metrics.
pub fn statsd_counters(exposition: &str) -> Vec<(String, u64)> {
    let mut out: Vec<(String, u64)> = Vec::new();
    let mut add = |name: String, value: f64| {
        let value = value.max(0.0) as u64;
        match out.iter_mut().find(|(n, _)| *n == name) {
            Some((_, total)) => *total += value,
            None => out.push((name, value)),
        }
    };
    for s in samples(exposition) {
        if let Some((_, count)) = RULE_COUNTS.iter().find(|(name, _)| *name == s.name) {
            match s.label("rule") {
                // Hits past --max-metric-series have no key of their own.
                Some(super::rules::OVERFLOW_SERIES) | None => {}
                Some(key) => add(
                    format!("ratelimit.service.rate_limit.{}.{count}", sanitize(key)),
                    s.value,
                ),
            }
            continue;
        }
        match (s.name.as_str(), s.label("result"), s.label("transport")) {
            ("sluice_config_loads_total", Some("ok"), _) => {
                add("ratelimit.service.config_load_success".into(), s.value);
            }
            ("sluice_config_loads_total", Some("error"), _) => {
                add("ratelimit.service.config_load_error".into(), s.value);
            }
            ("sluice_global_shadow_mode_total", _, _) => {
                add("ratelimit.service.global_shadow_mode".into(), s.value);
            }
            ("sluice_store_errors_total", _, _) => add(
                "ratelimit.service.call.should_rate_limit.redis_error".into(),
                s.value,
            ),
            ("sluice_requests_total", result, Some("grpc")) => {
                if result == Some("error") {
                    add(
                        "ratelimit.service.call.should_rate_limit.service_error".into(),
                        s.value,
                    );
                }
                add(
                    "ratelimit_server.ShouldRateLimit.total_requests".into(),
                    s.value,
                );
            }
            _ => {}
        }
    }
    out
}

/// The reference's stat-name sanitising: `:` and `|` (statsd's separators) become `_`, and so do
/// the dots of an IPv4 address (which would split the name).
pub fn sanitize(key: &str) -> String {
    let replaced: String = key
        .chars()
        .map(|c| if c == ':' || c == '|' { '_' } else { c })
        .collect();
    let bytes = replaced.as_bytes();
    let mut out = String::with_capacity(replaced.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(len) = ipv4_at(bytes, i) {
            out.push_str(&replaced[i..i + len].replace('.', "_"));
            i += len;
        } else {
            let c = replaced[i..].chars().next().unwrap_or_default();
            out.push(c);
            i += c.len_utf8().max(1);
        }
    }
    out
}

/// The length of a dotted IPv4 address (four groups of 1–3 digits) starting at `i`, if any.
fn ipv4_at(b: &[u8], i: usize) -> Option<usize> {
    if i > 0 && b[i - 1].is_ascii_digit() {
        return None;
    }
    let mut j = i;
    for group in 0..4 {
        let start = j;
        while j < b.len() && b[j].is_ascii_digit() && j - start < 3 {
            j += 1;
        }
        if j == start {
            return None;
        }
        if group < 3 {
            if b.get(j) != Some(&b'.') {
                return None;
            }
            j += 1;
        }
    }
    if b.get(j).is_some_and(u8::is_ascii_digit) {
        return None;
    }
    Some(j - i)
}

/// The Prometheus exposition the reference's default statsd_exporter mapping produces (its
/// README's `PROMETHEUS_MAPPER_YAML` default), from a scrape of Sluice's metrics.
pub fn prometheus_text(exposition: &str) -> String {
    let all = samples(exposition);
    let mut families: Vec<(String, &'static str, Vec<String>)> = Vec::new();
    let mut push = |name: String, kind: &'static str, line: String| match families
        .iter_mut()
        .find(|(n, _, _)| *n == name)
    {
        Some((_, _, lines)) => lines.push(line),
        None => families.push((name, kind, vec![line])),
    };
    for (stat, value) in statsd_counters(exposition) {
        let (name, labels) = map_stat(&stat);
        let line = format!("{name}{} {value}", render_labels(&labels));
        push(name, "counter", line);
    }
    // ratelimit_server.*.response_time, a timer in milliseconds, becomes a histogram in seconds:
    // Sluice's own check-duration histogram, under the reference's name.
    let name = "ratelimit_service_response_time_seconds";
    for s in all
        .iter()
        .filter(|s| s.name.starts_with("sluice_request_duration_seconds_"))
    {
        let suffix = &s.name["sluice_request_duration_seconds".len()..];
        let mut labels = vec![("grpc_method".to_owned(), "ShouldRateLimit".to_owned())];
        labels.extend(s.labels.iter().cloned());
        let line = format!("{name}{suffix}{} {}", render_labels(&labels), s.value);
        push(name.to_owned(), "histogram", line);
    }
    let mut out = String::new();
    for (name, kind, lines) in families {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for line in lines {
            let _ = writeln!(out, "{line}");
        }
    }
    out
}

/// A statsd name as the reference's default mapping names it in Prometheus, with its labels.
fn map_stat(stat: &str) -> (String, Vec<(String, String)>) {
    if let Some(rest) = stat.strip_prefix("ratelimit.service.rate_limit.") {
        let parts: Vec<&str> = rest.split('.').collect();
        let count = parts.last().copied().unwrap_or_default();
        let keys = &parts[..parts.len().saturating_sub(1)];
        let mapped = match keys.len() {
            // The default mapping has shadow_mode only for keys two levels below the domain.
            2 => count != "shadow_mode",
            3 => true,
            _ => false,
        };
        if mapped {
            let mut labels = vec![("domain".to_owned(), keys[0].to_owned())];
            labels.push(("key1".to_owned(), keys[1].to_owned()));
            if let Some(key2) = keys.get(2) {
                labels.push(("key2".to_owned(), (*key2).to_owned()));
            }
            return (format!("ratelimit_service_rate_limit_{count}"), labels);
        }
    }
    if let Some(err) = stat.strip_prefix("ratelimit.service.call.should_rate_limit.") {
        return (
            "ratelimit_service_should_rate_limit_error".into(),
            vec![("err_type".into(), err.into())],
        );
    }
    if let Some(method) = stat
        .strip_prefix("ratelimit_server.")
        .and_then(|s| s.strip_suffix(".total_requests"))
    {
        return (
            "ratelimit_service_total_requests".into(),
            vec![("grpc_method".into(), method.into())],
        );
    }
    // Unmapped: statsd_exporter's own escaping, every character outside [a-zA-Z0-9_] to `_`.
    let escaped = stat
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    (escaped, Vec::new())
}

fn render_labels(labels: &[(String, String)]) -> String {
    if labels.is_empty() {
        return String::new();
    }
    let body: Vec<String> = labels
        .iter()
        .map(|(k, v)| {
            let v = v
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n");
            format!("{k}=\"{v}\"")
        })
        .collect();
    format!("{{{}}}", body.join(","))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const SCRAPE: &str = r#"# HELP sluice_rule_total_hits Hits checked against a rule
# TYPE sluice_rule_total_hits counter
sluice_rule_total_hits_total{rule="edge.app_id"} 7
sluice_rule_total_hits_total{rule="edge.org_acme.team"} 3
sluice_rule_total_hits_total{rule="edge.remote_address_10.1.2.3"} 2
sluice_rule_total_hits_total{rule="overflow"} 9
sluice_rule_over_limit_total{rule="edge.app_id"} 2
sluice_rule_shadow_mode_total{rule="edge.app_id"} 1
sluice_rule_shadow_mode_total{rule="edge.org_acme.team"} 1
sluice_rule_within_limit_total{rule="we\"ird.k_a:b|c"} 1
sluice_requests_total{transport="grpc",result="ok"} 10
sluice_requests_total{transport="grpc",result="error"} 1
sluice_requests_total{transport="http",result="ok"} 5
sluice_store_errors_total{kind="timeout"} 4
sluice_config_loads_total{result="ok"} 1
sluice_global_shadow_mode_total 0
sluice_request_duration_seconds_bucket{le="0.001"} 11
sluice_request_duration_seconds_bucket{le="+Inf"} 15
sluice_request_duration_seconds_sum 0.02
sluice_request_duration_seconds_count 15
# EOF
"#;

    #[test]
    fn parses_labels_with_escapes() {
        let all = samples(SCRAPE);
        let weird = all
            .iter()
            .find(|s| s.name == "sluice_rule_within_limit_total")
            .unwrap();
        assert_eq!(weird.label("rule"), Some("we\"ird.k_a:b|c"));
        assert_eq!(weird.value, 1.0);
        let two = all
            .iter()
            .find(|s| s.label("result") == Some("error"))
            .unwrap();
        assert_eq!(two.label("transport"), Some("grpc"));
        assert!(samples("garbage{x=\"unterminated 1\nname 1\n").len() == 1);
    }

    #[test]
    fn statsd_names_are_the_references() {
        let counters = statsd_counters(SCRAPE);
        let get = |name: &str| counters.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
        assert_eq!(
            get("ratelimit.service.rate_limit.edge.app_id.total_hits"),
            Some(7)
        );
        assert_eq!(
            get("ratelimit.service.rate_limit.edge.app_id.over_limit"),
            Some(2)
        );
        assert_eq!(
            get("ratelimit.service.rate_limit.edge.org_acme.team.total_hits"),
            Some(3)
        );
        // An IPv4 address's dots, and statsd's separators, become underscores.
        assert_eq!(
            get("ratelimit.service.rate_limit.edge.remote_address_10_1_2_3.total_hits"),
            Some(2)
        );
        assert_eq!(
            get("ratelimit.service.rate_limit.we\"ird.k_a_b_c.within_limit"),
            Some(1)
        );
        assert_eq!(
            get("ratelimit_server.ShouldRateLimit.total_requests"),
            Some(11)
        );
        assert_eq!(
            get("ratelimit.service.call.should_rate_limit.service_error"),
            Some(1)
        );
        assert_eq!(
            get("ratelimit.service.call.should_rate_limit.redis_error"),
            Some(4)
        );
        assert_eq!(get("ratelimit.service.config_load_success"), Some(1));
        assert_eq!(get("ratelimit.service.global_shadow_mode"), Some(0));
        assert!(counters.iter().all(|(n, _)| !n.contains("overflow")));
    }

    #[test]
    fn sanitising_matches_the_reference() {
        assert_eq!(sanitize("d.k_1.2.3.4"), "d.k_1_2_3_4");
        assert_eq!(sanitize("d.k_11.2.3.4.5"), "d.k_11_2_3_4.5");
        assert_eq!(sanitize("d.k_1234.2.3.4"), "d.k_1234.2.3.4");
        assert_eq!(sanitize("d.a:b|c"), "d.a_b_c");
        assert_eq!(sanitize("d.k_\u{e9}t\u{e9}"), "d.k_\u{e9}t\u{e9}");
    }

    #[test]
    fn prometheus_names_follow_the_default_mapping() {
        let text = prometheus_text(SCRAPE);
        for line in [
            "# TYPE ratelimit_service_rate_limit_total_hits counter",
            r#"ratelimit_service_rate_limit_total_hits{domain="edge",key1="app_id"} 7"#,
            r#"ratelimit_service_rate_limit_total_hits{domain="edge",key1="org_acme",key2="team"} 3"#,
            r#"ratelimit_service_rate_limit_shadow_mode{domain="edge",key1="org_acme",key2="team"} 1"#,
            "ratelimit_service_rate_limit_edge_app_id_shadow_mode 1",
            r#"ratelimit_service_should_rate_limit_error{err_type="redis_error"} 4"#,
            r#"ratelimit_service_total_requests{grpc_method="ShouldRateLimit"} 11"#,
            "ratelimit_service_config_load_success 1",
            "# TYPE ratelimit_service_response_time_seconds histogram",
            r#"ratelimit_service_response_time_seconds_bucket{grpc_method="ShouldRateLimit",le="0.001"} 11"#,
            r#"ratelimit_service_response_time_seconds_count{grpc_method="ShouldRateLimit"} 15"#,
        ] {
            assert!(text.lines().any(|l| l == line), "no {line:?} in\n{text}");
        }
    }
}
