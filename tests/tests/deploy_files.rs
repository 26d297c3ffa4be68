//! The deployment files parse and agree with each other: docker-compose.yml, the Envoy bootstrap,
//! the Istio EnvoyFilter and the example rules. Nothing here starts a container or an Envoy; the
//! point is to catch a renamed cluster, domain or mount before someone runs `docker compose up`.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn load(relative: &str) -> Value {
    let path = repo_root().join(relative);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

fn str_at<'a>(value: &'a Value, key: &str) -> Option<&'a str> {
    value.get(key).and_then(Value::as_str)
}

/// Every mapping in the tree, depth first, so assertions need not know the exact nesting.
fn mappings(value: &Value) -> Vec<&Value> {
    let mut found = Vec::new();
    let mut stack = vec![value];
    while let Some(v) = stack.pop() {
        match v {
            Value::Mapping(m) => {
                found.push(v);
                stack.extend(m.values());
            }
            Value::Sequence(items) => stack.extend(items.iter()),
            _ => {}
        }
    }
    found
}

/// The `typed_config` of every `envoy.filters.http.ratelimit` filter in an Envoy or Istio file.
fn ratelimit_filters(doc: &Value) -> Vec<&Value> {
    mappings(doc)
        .into_iter()
        .filter(|m| str_at(m, "name") == Some("envoy.filters.http.ratelimit"))
        .filter_map(|m| m.get("typed_config"))
        .collect()
}

fn example_domain() -> String {
    let rules = load("examples/config/quotas.yaml");
    str_at(&rules, "domain")
        .expect("quotas.yaml has a domain")
        .to_owned()
}

/// `environment:` as a list of `KEY=value` or as a mapping; both are valid compose.
fn env_var(service: &Value, name: &str) -> Option<String> {
    match service.get("environment")? {
        Value::Mapping(m) => m.get(name).map(|v| match v {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .unwrap_or_default()
                .trim()
                .to_owned(),
        }),
        Value::Sequence(items) => items.iter().filter_map(Value::as_str).find_map(|kv| {
            kv.split_once('=')
                .filter(|(k, _)| *k == name)
                .map(|(_, v)| v.to_owned())
        }),
        _ => None,
    }
}

/// `depends_on:` as a list of names or as a mapping of name → condition.
fn depends_on(service: &Value) -> Vec<String> {
    match service.get("depends_on") {
        Some(Value::Sequence(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        Some(Value::Mapping(m)) => m
            .keys()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

/// Short-syntax volumes, `host:container[:mode]`.
fn volumes(service: &Value) -> Vec<(String, String)> {
    service
        .get("volumes")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter_map(|v| {
            let mut parts = v.splitn(3, ':');
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

fn command_flag<'a>(service: &'a Value, flag: &str) -> Option<&'a str> {
    let args: Vec<&str> = service
        .get("command")?
        .as_sequence()?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    let at = args.iter().position(|a| *a == flag)?;
    args.get(at + 1).copied()
}

#[test]
fn compose_services_are_complete_and_consistent() {
    let compose = load("docker-compose.yml");
    let services = compose
        .get("services")
        .and_then(Value::as_mapping)
        .expect("docker-compose.yml has services");
    let names: BTreeSet<&str> = services.keys().filter_map(Value::as_str).collect();
    for wanted in ["redis", "sluice", "envoy", "upstream"] {
        assert!(
            names.contains(wanted),
            "service {wanted} missing: {names:?}"
        );
    }

    for (name, service) in services {
        for dep in depends_on(service) {
            assert!(
                names.contains(dep.as_str()),
                "{name:?} depends on undefined service {dep:?}"
            );
        }
        for (host, _) in volumes(service) {
            if host.starts_with('.') {
                let path = repo_root().join(&host);
                assert!(path.exists(), "{name:?} mounts missing {host}");
            }
        }
    }

    let sluice = &compose["services"]["sluice"];
    let container_ports: BTreeSet<&str> = sluice
        .get("ports")
        .and_then(Value::as_sequence)
        .expect("sluice publishes ports")
        .iter()
        .filter_map(Value::as_str)
        .filter_map(|p| p.rsplit(':').next())
        .collect();
    assert_eq!(container_ports, BTreeSet::from(["8080", "8081"]));

    assert_eq!(env_var(sluice, "BACKEND_TYPE").as_deref(), Some("redis"));
    assert_eq!(env_var(sluice, "REDIS_URL").as_deref(), Some("redis:6379"));

    // The directory handed to --config is the one the example rules are mounted at.
    let config_dir = command_flag(sluice, "--config").expect("sluice gets --config");
    let mounted = volumes(sluice);
    let (host, _) = mounted
        .iter()
        .find(|(_, container)| container == config_dir)
        .unwrap_or_else(|| panic!("nothing mounted at {config_dir}: {mounted:?}"));
    assert!(repo_root().join(host).join("quotas.yaml").is_file());

    let dockerfile = sluice
        .get("build")
        .and_then(|b| str_at(b, "dockerfile"))
        .unwrap_or("Dockerfile");
    assert!(
        repo_root().join(dockerfile).is_file(),
        "{dockerfile} missing"
    );

    let envoy = &compose["services"]["envoy"];
    assert!(
        volumes(envoy)
            .iter()
            .any(|(host, _)| host.ends_with("envoy-config/envoy.yaml")),
        "envoy does not mount envoy-config/envoy.yaml"
    );
}

#[test]
fn envoy_bootstrap_points_at_sluice_with_the_example_domain() {
    let envoy = load("envoy-config/envoy.yaml");
    let clusters: BTreeSet<&str> = envoy["static_resources"]["clusters"]
        .as_sequence()
        .expect("static clusters")
        .iter()
        .filter_map(|c| str_at(c, "name"))
        .collect();

    let filters = ratelimit_filters(&envoy);
    assert_eq!(filters.len(), 1, "one ratelimit filter expected");
    let filter = filters[0];
    assert_eq!(str_at(filter, "domain"), Some(example_domain().as_str()));
    assert_eq!(
        filter["rate_limit_service"]["transport_api_version"].as_str(),
        Some("V3")
    );
    let rls_cluster = filter["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"]
        .as_str()
        .expect("rate_limit_service names a cluster");
    assert!(clusters.contains(rls_cluster), "no cluster {rls_cluster}");

    // gRPC to the service needs HTTP/2 on that cluster.
    let sluice_cluster = envoy["static_resources"]["clusters"]
        .as_sequence()
        .into_iter()
        .flatten()
        .find(|c| str_at(c, "name") == Some(rls_cluster))
        .expect("rate-limit cluster");
    assert!(
        mappings(sluice_cluster)
            .iter()
            .any(|m| m.get("http2_protocol_options").is_some()),
        "cluster {rls_cluster} is not HTTP/2"
    );

    // Every route targets a defined cluster.
    for m in mappings(&envoy) {
        if let Some(route) = m.get("route").filter(|r| r.is_mapping())
            && let Some(target) = str_at(route, "cluster")
        {
            assert!(
                clusters.contains(target),
                "route to undefined cluster {target}"
            );
        }
    }
}

#[test]
fn envoy_descriptors_start_with_keys_the_example_rules_know() {
    let rules = load("examples/config/quotas.yaml");
    let top_keys: BTreeSet<&str> = rules["descriptors"]
        .as_sequence()
        .expect("descriptors")
        .iter()
        .filter_map(|d| str_at(d, "key"))
        .collect();

    for file in [
        "envoy-config/envoy.yaml",
        "envoy-config/istio-envoyfilter.yaml",
    ] {
        let doc = load(file);
        let mut seen = 0;
        for m in mappings(&doc) {
            let Some(actions) = m.get("actions").and_then(Value::as_sequence) else {
                continue;
            };
            let first = actions.first().expect("an action");
            // The entry key each action type produces, as Envoy names it.
            let key = if let Some(h) = first.get("request_headers") {
                str_at(h, "descriptor_key").expect("descriptor_key")
            } else if first.get("remote_address").is_some() {
                "remote_address"
            } else if let Some(g) = first.get("generic_key") {
                str_at(g, "descriptor_key").unwrap_or("generic_key")
            } else {
                panic!("{file}: unexpected action {first:?}");
            };
            assert!(
                top_keys.contains(key),
                "{file}: descriptor key {key:?} has no top-level rule"
            );
            seen += 1;
        }
        assert!(seen > 0, "{file} has no rate-limit actions");
    }
}

#[test]
fn istio_filter_calls_the_cluster_istio_makes_for_the_service() {
    let doc = load("envoy-config/istio-envoyfilter.yaml");
    assert_eq!(str_at(&doc, "kind"), Some("EnvoyFilter"));
    let filters = ratelimit_filters(&doc);
    assert_eq!(filters.len(), 1);
    assert_eq!(
        str_at(filters[0], "domain"),
        Some(example_domain().as_str())
    );
    let cluster = filters[0]["rate_limit_service"]["grpc_service"]["envoy_grpc"]["cluster_name"]
        .as_str()
        .expect("cluster_name");
    // `outbound|PORT||FQDN`: the cluster Istio generates for a Service port, which carries its
    // automatic mTLS; a cluster of the filter's own would be plaintext.
    let mut parts = cluster.split('|');
    assert_eq!(parts.next(), Some("outbound"), "{cluster}");
    assert!(
        parts.next().is_some_and(|p| p.parse::<u16>().is_ok()),
        "{cluster}"
    );
    assert_eq!(parts.next(), Some(""), "{cluster}");
    assert!(
        parts
            .next()
            .is_some_and(|h| h.ends_with(".svc.cluster.local")),
        "{cluster}"
    );
}

/// The reference service rejects any key outside this flat list, so the examples stay within it.
const RULE_KEYS: [&str; 12] = [
    "domain",
    "key",
    "value",
    "descriptors",
    "rate_limit",
    "unit",
    "requests_per_unit",
    "unlimited",
    "shadow_mode",
    "name",
    "replaces",
    "detailed_metric",
];

fn check_rule_node(node: &Value, file: &str) {
    let map = node.as_mapping().expect("descriptor is a mapping");
    for k in map.keys() {
        let k = k.as_str().expect("string keys");
        assert!(RULE_KEYS.contains(&k), "{file}: unknown key {k:?}");
    }
    assert!(
        str_at(node, "key").is_some_and(|k| !k.is_empty()),
        "{file}: empty key"
    );
    if let Some(limit) = node.get("rate_limit") {
        for k in limit.as_mapping().expect("rate_limit mapping").keys() {
            let k = k.as_str().expect("string keys");
            assert!(RULE_KEYS.contains(&k), "{file}: unknown key {k:?}");
        }
        let unlimited = limit.get("unlimited").and_then(Value::as_bool) == Some(true);
        match str_at(limit, "unit") {
            Some(unit) => {
                assert!(!unlimited, "{file}: unlimited rule with a unit");
                assert!(
                    ["second", "minute", "hour", "day"].contains(&unit),
                    "{file}: unit {unit:?}"
                );
                assert!(
                    limit
                        .get("requests_per_unit")
                        .and_then(Value::as_u64)
                        .is_some(),
                    "{file}: limit without requests_per_unit"
                );
            }
            None => assert!(unlimited, "{file}: limit without unit"),
        }
    }
    for child in node
        .get("descriptors")
        .and_then(Value::as_sequence)
        .into_iter()
        .flatten()
    {
        check_rule_node(child, file);
    }
}

#[test]
fn example_rules_use_only_reference_fields() {
    let dir = repo_root().join("examples/config");
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).expect("examples/config") {
        let path = entry.expect("dir entry").path();
        if !matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            continue;
        }
        let file = path.display().to_string();
        let text = std::fs::read_to_string(&path).expect("readable");
        let doc: Value = serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert!(
            str_at(&doc, "domain").is_some_and(|d| !d.is_empty()),
            "{file}: domain"
        );
        for top in doc.as_mapping().expect("mapping").keys() {
            let k = top.as_str().expect("string keys");
            assert!(
                ["domain", "descriptors"].contains(&k),
                "{file}: top-level {k:?}"
            );
        }
        for d in doc["descriptors"].as_sequence().expect("descriptors") {
            check_rule_node(d, &file);
        }
        files += 1;
    }
    assert!(files > 0, "no YAML in {}", dir.display());
}
