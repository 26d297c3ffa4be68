//! docker-compose.yml with its optional `observability` profile: every file a service mounts
//! exists, every published port is one its service listens on, and the services find each other
//! (Prometheus scrapes Sluice's HTTP port, Grafana reads Prometheus and loads the dashboard,
//! Envoy calls Sluice and the app). No container runs here: there is no Docker engine.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn yaml(relative: &str) -> Value {
    let text = std::fs::read_to_string(root().join(relative))
        .unwrap_or_else(|e| panic!("reading {relative}: {e}"));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("parsing {relative}: {e}"))
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .map(str::to_owned)
        .collect()
}

/// The port a `host:port` or `:port` address names.
fn port_of(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no port in {addr:?}"))
}

/// The ports each service listens on, read from how it is configured.
fn listening(compose: &Value) -> BTreeMap<String, Vec<u16>> {
    let services = &compose["services"];
    let mut out = BTreeMap::new();
    let flag = |service: &str, name: &str| -> Option<String> {
        let cmd = strings(&services[service]["command"]);
        cmd.iter().enumerate().find_map(|(i, a)| {
            a.strip_prefix(&format!("{name}="))
                .map(str::to_owned)
                .or_else(|| (a == name).then(|| cmd.get(i + 1).cloned()).flatten())
        })
    };
    let sluice: Vec<u16> = ["--http-addr", "--grpc-addr"]
        .iter()
        .map(|f| port_of(&flag("sluice", f).expect("sluice listener flag")))
        .collect();
    out.insert("sluice".into(), sluice);
    let envoy = yaml("envoy-config/envoy.yaml");
    let mut envoy_ports = vec![
        envoy["admin"]["address"]["socket_address"]["port_value"]
            .as_u64()
            .expect("admin port") as u16,
    ];
    for l in envoy["static_resources"]["listeners"]
        .as_sequence()
        .expect("listeners")
    {
        envoy_ports.push(
            l["address"]["socket_address"]["port_value"]
                .as_u64()
                .expect("port") as u16,
        );
    }
    out.insert("envoy".into(), envoy_ports);
    out.insert(
        "upstream".into(),
        vec![port_of(&flag("upstream", "-listen").expect("-listen"))],
    );
    out.insert(
        "prometheus".into(),
        vec![port_of(
            &flag("prometheus", "--web.listen-address").expect("--web.listen-address"),
        )],
    );
    out.insert(
        "grafana".into(),
        vec![
            services["grafana"]["environment"]["GF_SERVER_HTTP_PORT"]
                .as_str()
                .expect("GF_SERVER_HTTP_PORT")
                .parse()
                .expect("port"),
        ],
    );
    // The image's default; the test below checks nothing overrides it.
    out.insert("redis".into(), vec![6379]);
    out
}

/// Host path → container path of each short-syntax volume.
fn mounts(service: &Value) -> Vec<(String, String)> {
    strings(&service["volumes"])
        .iter()
        .filter_map(|v| {
            let mut parts = v.splitn(3, ':');
            Some((parts.next()?.to_owned(), parts.next()?.to_owned()))
        })
        .collect()
}

/// The host file behind `container_path` in `service`, through its mounts.
fn host_file(service: &Value, container_path: &str) -> Option<PathBuf> {
    mounts(service).into_iter().find_map(|(host, inside)| {
        let rest = container_path.strip_prefix(&inside)?;
        match rest {
            "" => Some(root().join(host)),
            _ if rest.starts_with('/') => Some(root().join(host).join(&rest[1..])),
            // `/etc/prometheus` does not contain `/etc/prometheus2/…`.
            _ => None,
        }
    })
}

#[test]
fn every_mounted_file_exists_and_every_published_port_is_listened_on() {
    let compose = yaml("docker-compose.yml");
    let listening = listening(&compose);
    let services = compose["services"].as_mapping().expect("services");
    assert!(
        strings(&compose["services"]["redis"]["command"])
            .iter()
            .all(|a| a != "--port"),
        "redis port overridden"
    );
    for (name, service) in services {
        let name = name.as_str().expect("name");
        for (host, _) in mounts(service) {
            assert!(
                root().join(&host).exists(),
                "{name} mounts {host}, which does not exist"
            );
        }
        for published in strings(&service["ports"]) {
            let container = port_of(&published);
            assert!(
                published.starts_with("127.0.0.1:"),
                "{name} publishes {published} beyond loopback"
            );
            assert!(
                listening[name].contains(&container),
                "{name} publishes {published}, but listens on {:?}",
                listening[name]
            );
        }
    }
}

#[test]
fn observability_profile_is_wired_to_sluice_and_the_dashboard() {
    let compose = yaml("docker-compose.yml");
    let listening = listening(&compose);
    let services = &compose["services"];
    for optional in ["prometheus", "grafana"] {
        assert_eq!(
            strings(&services[optional]["profiles"]),
            ["observability"],
            "{optional} must be optional"
        );
    }
    for always in ["sluice", "redis", "envoy", "upstream"] {
        assert!(
            services[always].get("profiles").is_none(),
            "{always} must always run"
        );
    }

    // Prometheus: its config and every rule file it names are mounted; it scrapes Sluice's HTTP
    // port by service name.
    let prometheus = &services["prometheus"];
    let config_flag = strings(&prometheus["command"])
        .into_iter()
        .find_map(|a| a.strip_prefix("--config.file=").map(str::to_owned))
        .expect("--config.file");
    let config_host = host_file(prometheus, &config_flag).expect("config mounted");
    let config: Value =
        serde_yaml::from_str(&std::fs::read_to_string(&config_host).expect("read")).expect("yaml");
    let config_dir = Path::new(&config_flag).parent().expect("dir");
    for rules in strings(&config["rule_files"]) {
        let inside = config_dir.join(&rules);
        let host = host_file(prometheus, inside.to_str().expect("utf-8"))
            .unwrap_or_else(|| panic!("rule file {rules} is not mounted"));
        assert!(host.is_file(), "{} missing", host.display());
    }
    let targets: Vec<String> = config["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .flat_map(|s| s["static_configs"].as_sequence().into_iter().flatten())
        .flat_map(|c| strings(&c["targets"]))
        .collect();
    assert!(!targets.is_empty());
    for t in &targets {
        let (host, port) = t.split_once(':').expect("host:port");
        assert!(
            listening[host].contains(&port.parse().expect("port")),
            "Prometheus scrapes {t}, which nothing listens on"
        );
    }
    assert!(targets.iter().any(|t| t.starts_with("sluice:")));

    // Grafana: the data source is the Prometheus service; the dashboard provider's folder is
    // where the dashboards are mounted, and the home dashboard is one of them.
    let grafana = &services["grafana"];
    let provisioning = host_file(grafana, "/etc/grafana/provisioning").expect("provisioning");
    let ds: Value = serde_yaml::from_str(
        &std::fs::read_to_string(provisioning.join("datasources/prometheus.yaml")).expect("read"),
    )
    .expect("yaml");
    let url = ds["datasources"][0]["url"].as_str().expect("url");
    let hostport = url.trim_start_matches("http://");
    let (host, port) = hostport.split_once(':').expect("host:port");
    assert!(
        listening[host].contains(&port.parse().expect("port")),
        "{url}"
    );
    let providers: Value = serde_yaml::from_str(
        &std::fs::read_to_string(provisioning.join("dashboards/sluice.yaml")).expect("read"),
    )
    .expect("yaml");
    let folder = providers["providers"][0]["options"]["path"]
        .as_str()
        .expect("path");
    let dashboards = host_file(grafana, folder).expect("dashboards mounted");
    assert!(dashboards.join("sluice.json").is_file());
    let home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
        .as_str()
        .expect("home dashboard");
    assert!(
        host_file(grafana, home).is_some_and(|p| p.is_file()),
        "{home}"
    );
    // The dashboard reads through the provisioned data source's type.
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(dashboards.join("sluice.json")).expect("read"),
    )
    .expect("json");
    assert_eq!(
        dash["templating"]["list"][0]["query"],
        ds["datasources"][0]["type"].as_str().expect("type")
    );
}

#[test]
fn envoy_reaches_the_services_it_names() {
    let compose = yaml("docker-compose.yml");
    let listening = listening(&compose);
    let envoy = yaml("envoy-config/envoy.yaml");
    for cluster in envoy["static_resources"]["clusters"]
        .as_sequence()
        .expect("clusters")
    {
        for group in cluster["load_assignment"]["endpoints"]
            .as_sequence()
            .expect("endpoints")
        {
            for e in group["lb_endpoints"].as_sequence().expect("lb_endpoints") {
                let addr = &e["endpoint"]["address"]["socket_address"];
                let host = addr["address"].as_str().expect("address");
                let port = addr["port_value"].as_u64().expect("port") as u16;
                assert!(
                    listening.get(host).is_some_and(|p| p.contains(&port)),
                    "Envoy calls {host}:{port}, which no service listens on"
                );
            }
        }
    }
}
