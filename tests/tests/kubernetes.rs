//! The Kubernetes manifests in `deploy/kubernetes/` and the Istio resources in `envoy-config/`:
//! every document parses and has what a cluster requires, and names, ports, labels and paths agree
//! across the files and with the Dockerfile. The rules in the ConfigMap pass `sluice check-config`,
//! and a real `sluice` reloads them when a ConfigMap-style `..data` symlink swap replaces them.
//! No cluster runs here; the API server's own checks are mirrored by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_yaml::Value;
use sluice_tests::sluice::{Sluice, run_to_exit};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every document of every manifest, with the file it came from.
fn documents(dir: &str) -> Vec<(String, Value)> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(root().join(dir))
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read manifest");
        let name = file
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        for doc in serde_yaml::Deserializer::from_str(&text) {
            let v = Value::deserialize(doc).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !v.is_null() {
                out.push((name.clone(), v));
            }
        }
    }
    out
}

fn manifests() -> Vec<(String, Value)> {
    documents("deploy/kubernetes")
        .into_iter()
        .filter(|(_, d)| d["kind"].as_str() != Some("Kustomization"))
        .collect()
}

fn find<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    &docs
        .iter()
        .find(|(_, d)| {
            d["kind"].as_str() == Some(kind) && d["metadata"]["name"].as_str() == Some(name)
        })
        .unwrap_or_else(|| panic!("no {kind} {name}"))
        .1
}

fn str_list(v: &Value) -> Vec<String> {
    v.as_sequence()
        .into_iter()
        .flatten()
        .map(|s| match s {
            Value::String(s) => s.clone(),
            other => serde_yaml::to_string(other)
                .expect("yaml")
                .trim()
                .to_owned(),
        })
        .collect()
}

fn labels(v: &Value) -> BTreeMap<String, String> {
    v.as_mapping()
        .into_iter()
        .flatten()
        .map(|(k, v)| {
            (
                k.as_str().expect("label key").to_owned(),
                v.as_str().expect("label value").to_owned(),
            )
        })
        .collect()
}

/// `selector` picks `target`: every selector label is on the target with the same value.
fn selects(selector: &BTreeMap<String, String>, target: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| target.get(k) == Some(v))
}

fn flag(args: &[String], name: &str) -> Option<String> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1).cloned())
}

/// What the Dockerfile says about the runtime image.
struct Image {
    uid: u64,
    exposed: BTreeSet<u16>,
    cmd: Vec<String>,
    copied: BTreeSet<String>,
    healthcheck: String,
}

fn dockerfile() -> Image {
    let text = std::fs::read_to_string(root().join("Dockerfile")).expect("Dockerfile");
    let mut image = Image {
        uid: 0,
        exposed: BTreeSet::new(),
        cmd: Vec::new(),
        copied: BTreeSet::new(),
        healthcheck: String::new(),
    };
    for line in text.lines() {
        if let Some(user) = line.strip_prefix("USER ") {
            image.uid = user
                .split(':')
                .next()
                .expect("uid")
                .trim()
                .parse()
                .expect("numeric uid");
        } else if let Some(ports) = line.strip_prefix("EXPOSE ") {
            image.exposed = ports
                .split_whitespace()
                .map(|p| p.parse().expect("port"))
                .collect();
        } else if let Some(cmd) = line.strip_prefix("CMD ") {
            image.cmd = serde_json::from_str(cmd).expect("CMD in exec form");
        } else if let Some(copy) = line.strip_prefix("COPY ") {
            image
                .copied
                .extend(copy.split_whitespace().map(str::to_owned));
        } else if line.contains("HEALTHCHECK") || line.contains("/dev/tcp") {
            image.healthcheck.push_str(line);
        }
    }
    image
}

#[test]
fn every_manifest_has_what_the_api_server_requires() {
    let docs = manifests();
    let known: BTreeMap<&str, &str> = BTreeMap::from([
        ("Namespace", "v1"),
        ("ConfigMap", "v1"),
        ("Service", "v1"),
        ("Deployment", "apps/v1"),
        ("PodDisruptionBudget", "policy/v1"),
        ("NetworkPolicy", "networking.k8s.io/v1"),
    ]);
    let namespace = find(&docs, "Namespace", "sluice");
    assert!(namespace["metadata"].get("namespace").is_none());
    for (file, d) in &docs {
        let kind = d["kind"]
            .as_str()
            .unwrap_or_else(|| panic!("{file}: no kind"));
        assert_eq!(
            d["apiVersion"].as_str(),
            known.get(kind).copied(),
            "{file}: {kind}"
        );
        let name = d["metadata"]["name"].as_str().expect("metadata.name");
        // RFC 1123 label: what the API server accepts for these names.
        assert!(
            name.len() <= 63
                && name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                && !name.starts_with('-'),
            "{file}: bad name {name:?}"
        );
        if kind != "Namespace" {
            assert_eq!(
                d["metadata"]["namespace"].as_str(),
                Some("sluice"),
                "{file}: {kind} {name}"
            );
        }
    }

    // kustomization.yaml lists exactly the manifests of the folder.
    let kustomization = documents("deploy/kubernetes")
        .into_iter()
        .find(|(_, d)| d["kind"].as_str() == Some("Kustomization"))
        .expect("kustomization.yaml")
        .1;
    let listed: BTreeSet<String> = str_list(&kustomization["resources"]).into_iter().collect();
    let files: BTreeSet<String> = docs.iter().map(|(f, _)| f.clone()).collect();
    assert_eq!(listed, files);

    for (file, d) in &docs {
        if d["kind"].as_str() != Some("Deployment") {
            continue;
        }
        let spec = &d["spec"];
        let selector = labels(&spec["selector"]["matchLabels"]);
        assert!(
            selects(&selector, &labels(&spec["template"]["metadata"]["labels"])),
            "{file}: the selector does not match the pod template"
        );
        for c in spec["template"]["spec"]["containers"]
            .as_sequence()
            .expect("containers")
        {
            let ports: BTreeSet<String> = c["ports"]
                .as_sequence()
                .expect("ports")
                .iter()
                .map(|p| {
                    let n = p["name"].as_str().expect("named port");
                    // IANA_SVC_NAME: what a probe's or Service's named port must be.
                    assert!(
                        n.len() <= 15 && n.chars().all(|ch| ch.is_ascii_lowercase() || ch == '-')
                    );
                    n.to_owned()
                })
                .collect();
            for probe in ["readinessProbe", "livenessProbe"] {
                let p = &c[probe];
                let port = p["httpGet"]["port"]
                    .as_str()
                    .or(p["tcpSocket"]["port"].as_str())
                    .unwrap_or_else(|| panic!("{file}: {probe} on a named port"));
                assert!(
                    ports.contains(port),
                    "{file}: {probe} on unknown port {port}"
                );
            }
            assert!(
                c["resources"]["requests"]["cpu"].is_string(),
                "{file}: cpu request"
            );
            assert!(
                c["resources"]["requests"]["memory"].is_string(),
                "{file}: memory request"
            );
            assert!(
                c["resources"]["limits"]["memory"].is_string(),
                "{file}: memory limit"
            );
            let sc = &c["securityContext"];
            assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{file}");
            assert_eq!(
                sc["allowPrivilegeEscalation"].as_bool(),
                Some(false),
                "{file}"
            );
            assert_eq!(str_list(&sc["capabilities"]["drop"]), ["ALL"], "{file}");
        }
        let pod_sc = &spec["template"]["spec"]["securityContext"];
        assert_eq!(pod_sc["runAsNonRoot"].as_bool(), Some(true), "{file}");
        assert!(
            pod_sc["runAsUser"].as_u64().is_some_and(|u| u > 0),
            "{file}"
        );
    }
}

#[test]
fn sluice_deployment_service_budget_and_image_agree() {
    let docs = manifests();
    let image = dockerfile();
    let deployment = find(&docs, "Deployment", "sluice");
    let pod = &deployment["spec"]["template"]["spec"];
    let container = &pod["containers"][0];
    let args = str_list(&container["args"]);
    let ports: BTreeMap<String, u16> = container["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .map(|p| {
            (
                p["name"].as_str().expect("name").to_owned(),
                p["containerPort"].as_u64().expect("port") as u16,
            )
        })
        .collect();
    let port_of = |addr: String| -> u16 {
        addr.rsplit(':')
            .next()
            .expect("port")
            .parse()
            .expect("port")
    };

    // Listeners, container ports, the image's EXPOSE.
    assert_eq!(Some(ports["http"]), flag(&args, "--http-addr").map(port_of));
    assert_eq!(Some(ports["grpc"]), flag(&args, "--grpc-addr").map(port_of));
    assert_eq!(
        ports.values().copied().collect::<BTreeSet<_>>(),
        image.exposed
    );

    // The probes hit /healthcheck on the HTTP port, as the image's HEALTHCHECK does.
    for probe in ["readinessProbe", "livenessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["path"].as_str(),
            Some("/healthcheck")
        );
        assert_eq!(container[probe]["httpGet"]["port"].as_str(), Some("http"));
    }
    assert!(image.healthcheck.contains("/healthcheck"));
    assert!(
        image
            .healthcheck
            .contains(&format!("/dev/tcp/127.0.0.1/{}", ports["http"]))
    );

    // The image's user; the drain fits in the grace period.
    assert_eq!(
        pod["securityContext"]["runAsUser"].as_u64(),
        Some(image.uid)
    );
    let grace: u64 = flag(&args, "--shutdown-grace-secs").map_or(10, |s| s.parse().expect("secs"));
    // The drain window replaces a preStop sleep (which needs a shell tool in the image).
    let window: u64 = flag(&args, "--drain-window-secs").map_or(0, |s| s.parse().expect("secs"));
    assert!(
        window > 0,
        "a drain window lets the pod leave its Service first"
    );
    assert!(container.get("lifecycle").is_none());
    let termination = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace period");
    assert!(
        termination > grace + window,
        "{termination} ≤ {grace} + {window}"
    );

    // --config is the mounted ConfigMap, as a directory (subPath mounts never see updates), and
    // the image's default --config is the same path.
    let config = flag(&args, "--config").expect("--config");
    assert_eq!(
        flag(&image.cmd, "--config").as_deref(),
        Some(config.as_str())
    );
    let mount = container["volumeMounts"]
        .as_sequence()
        .expect("mounts")
        .iter()
        .find(|m| m["mountPath"].as_str() == Some(config.as_str()))
        .expect("a volume mounted at --config");
    assert!(
        mount.get("subPath").is_none(),
        "subPath mounts do not update"
    );
    let volume = pod["volumes"]
        .as_sequence()
        .expect("volumes")
        .iter()
        .find(|v| v["name"] == mount["name"])
        .expect("the mounted volume");
    let configmap = volume["configMap"]["name"]
        .as_str()
        .expect("a ConfigMap volume");
    find(&docs, "ConfigMap", configmap);

    // Redis: REDIS_URL names the Redis Service of the manifests.
    let env: BTreeMap<String, String> = container["env"]
        .as_sequence()
        .expect("env")
        .iter()
        .map(|e| {
            (
                e["name"].as_str().expect("name").into(),
                e["value"].as_str().expect("value").into(),
            )
        })
        .collect();
    let redis = find(&docs, "Service", "redis");
    assert_eq!(
        env["REDIS_URL"],
        format!(
            "redis.{}.svc.cluster.local:{}",
            redis["metadata"]["namespace"].as_str().expect("ns"),
            redis["spec"]["ports"][0]["port"].as_u64().expect("port")
        )
    );

    // The Service selects the pods and targets their named ports; the budget selects them too
    // and leaves replicas running.
    let pod_labels = labels(&deployment["spec"]["template"]["metadata"]["labels"]);
    let service = find(&docs, "Service", "sluice");
    assert!(selects(&labels(&service["spec"]["selector"]), &pod_labels));
    for p in service["spec"]["ports"].as_sequence().expect("ports") {
        let target = p["targetPort"].as_str().expect("named targetPort");
        assert_eq!(
            p["port"].as_u64(),
            Some(u64::from(ports[target])),
            "{target}"
        );
    }
    let pdb = find(&docs, "PodDisruptionBudget", "sluice");
    assert!(selects(
        &labels(&pdb["spec"]["selector"]["matchLabels"]),
        &pod_labels
    ));
    let replicas = deployment["spec"]["replicas"].as_u64().expect("replicas");
    assert!(
        pdb["spec"]["maxUnavailable"]
            .as_u64()
            .is_some_and(|m| m >= 1 && m < replicas)
    );

    // The image builds: every workspace member's manifest is copied into the build stage, by
    // itself or with the folder that holds it.
    let workspace: toml_members::Members = toml_members::read(&root().join("Cargo.toml"));
    for member in workspace {
        assert!(
            image
                .copied
                .iter()
                .any(|c| *c == member || member.starts_with(&format!("{c}/"))),
            "the Dockerfile does not copy {member}/"
        );
    }
}

/// The workspace members, read from the root `Cargo.toml`'s `members = [...]` line.
mod toml_members {
    pub type Members = Vec<String>;

    pub fn read(path: &std::path::Path) -> Members {
        let text = std::fs::read_to_string(path).expect("Cargo.toml");
        let line = text
            .lines()
            .find(|l| l.trim_start().starts_with("members"))
            .expect("members");
        let list = line.split_once('=').expect("members = [...]").1;
        serde_json::from_str(list.trim()).expect("a one-line list of strings")
    }
}

#[test]
fn istio_resources_point_at_the_sluice_service() {
    let docs = manifests();
    let service = find(&docs, "Service", "sluice");
    let grpc = service["spec"]["ports"]
        .as_sequence()
        .expect("ports")
        .iter()
        .find(|p| p["name"].as_str() == Some("grpc"))
        .expect("grpc port");
    let fqdn = format!(
        "{}.{}.svc.cluster.local",
        service["metadata"]["name"].as_str().expect("name"),
        service["metadata"]["namespace"]
            .as_str()
            .expect("namespace")
    );
    let mut addresses = 0;
    for (file, d) in documents("envoy-config")
        .into_iter()
        .filter(|(f, _)| f.starts_with("istio-"))
    {
        let kind = d["kind"].as_str().expect("kind");
        let expected_api = match kind {
            "EnvoyFilter" => "networking.istio.io/v1alpha3",
            "WasmPlugin" => "extensions.istio.io/v1alpha1",
            "PeerAuthentication" => "security.istio.io/v1",
            "DestinationRule" => "networking.istio.io/v1",
            "Namespace" => "v1",
            other => panic!("{file}: unexpected kind {other}"),
        };
        assert_eq!(d["apiVersion"].as_str(), Some(expected_api), "{file}");
        assert!(
            d["metadata"]["name"].is_string()
                && (kind == "Namespace" || d["metadata"]["namespace"].is_string()),
            "{file}"
        );
        let text = serde_yaml::to_string(&d).expect("yaml");
        for (at, _) in text.match_indices(".svc.cluster.local") {
            let start = text[..at]
                .rfind(|c: char| c.is_whitespace() || c == '"' || c == '/' || c == '|')
                .map_or(0, |i| i + 1);
            let host = &text[start..at + ".svc.cluster.local".len()];
            assert_eq!(host, fqdn, "{file} calls {host}");
            // Istio's own cluster name for a Service port: `outbound|PORT||FQDN`.
            if let Some(prefix) = text[..start].strip_suffix("||")
                && let Some(port) = prefix.rsplit('|').next()
            {
                assert_eq!(port.parse::<u64>().ok(), grpc["port"].as_u64(), "{file}");
            }
            addresses += 1;
        }
        if kind == "EnvoyFilter" {
            // The filter calls Istio's own cluster for the Service (so mTLS applies), and adds
            // none of its own (which would be plaintext and refused under STRICT mTLS).
            let patches = d["spec"]["configPatches"].as_sequence().expect("patches");
            assert!(
                patches
                    .iter()
                    .all(|p| p["applyTo"].as_str() != Some("CLUSTER")),
                "{file}: a cluster of its own"
            );
            let cluster = format!("outbound|{}||{fqdn}", grpc["port"].as_u64().expect("port"));
            assert!(text.contains(&cluster), "{file} does not call {cluster}");
        }
        if kind == "Namespace" {
            assert_eq!(
                d["metadata"]["name"], service["metadata"]["namespace"],
                "{file}"
            );
            assert_eq!(
                d["metadata"]["labels"]["istio-injection"], "enabled",
                "{file}"
            );
        }
        if kind == "PeerAuthentication" {
            assert_eq!(d["metadata"]["namespace"], service["metadata"]["namespace"]);
            assert_eq!(d["spec"]["mtls"]["mode"], "STRICT", "{file}");
        }
        if kind == "DestinationRule" {
            assert_eq!(d["spec"]["host"].as_str(), Some(fqdn.as_str()), "{file}");
            assert_eq!(
                d["spec"]["trafficPolicy"]["tls"]["mode"], "ISTIO_MUTUAL",
                "{file}"
            );
        }
    }
    assert!(addresses >= 1, "no Istio resource names the Sluice Service");
}

/// The ConfigMap's rule files, as the kubelet writes them into the mount.
fn configmap_files() -> BTreeMap<String, String> {
    let docs = manifests();
    let cm = find(&docs, "ConfigMap", "sluice-rules");
    cm["data"]
        .as_mapping()
        .expect("data")
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().expect("key").into(),
                v.as_str().expect("text").into(),
            )
        })
        .collect()
}

#[test]
fn the_configmap_rules_are_valid_and_match_the_example() {
    let files = configmap_files();
    let example =
        std::fs::read_to_string(root().join("examples/config/quotas.yaml")).expect("example");
    assert_eq!(
        files["quotas.yaml"], example,
        "the ConfigMap drifted from examples/config"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text) in &files {
        std::fs::write(dir.path().join(name), text).expect("write");
    }
    let (status, stderr) = run_to_exit(
        &["check-config", dir.path().to_str().expect("utf-8")],
        Duration::from_secs(20),
    );
    assert!(status.is_some_and(|s| s.success()), "{stderr}");
}

/// The kubelet's update of a ConfigMap volume: the files are written into a new hidden directory,
/// a temporary symlink to it is renamed over `..data` in one step, the old directory goes.
fn kubelet_swap(dir: &Path, generation: u32, files: &BTreeMap<String, String>) {
    let data = format!("..2026_11_23_00_00_0{generation}.000");
    std::fs::create_dir(dir.join(&data)).expect("mkdir");
    for (name, text) in files {
        std::fs::write(dir.join(&data).join(name), text).expect("write");
    }
    let tmp = dir.join("..data_tmp");
    std::os::unix::fs::symlink(&data, &tmp).expect("symlink");
    let old = std::fs::read_link(dir.join("..data")).ok();
    std::fs::rename(&tmp, dir.join("..data")).expect("rename over ..data");
    for name in files.keys() {
        let link = dir.join(name);
        if std::fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(format!("..data/{name}"), &link).expect("symlink");
        }
    }
    if let Some(old) = old {
        std::fs::remove_dir_all(dir.join(old)).expect("remove the old generation");
    }
}

async fn wait_for_rules(sluice: &Sluice, needle: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(15);
    while Instant::now() < deadline {
        let dump = reqwest::get(sluice.url("/rlconfig"))
            .await
            .expect("GET /rlconfig")
            .text()
            .await
            .expect("text");
        if dump.contains(needle) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread")]
async fn a_configmap_update_reloads_the_rules() {
    let mut files = configmap_files();
    // Start from an unrelated file, then lay the directory out as the kubelet does.
    let sluice = Sluice::builder("domain: boot\ndescriptors: []\n").start();
    let dir = sluice.config_dir.path().to_path_buf();
    kubelet_swap(&dir, 1, &files);
    std::fs::remove_file(dir.join("rules.yaml")).expect("remove the boot file");
    assert!(
        wait_for_rules(&sluice, "edge.app_id: 600 per MINUTE").await,
        "the ConfigMap layout was not loaded"
    );

    // An update: the kubelet swaps ..data to a new generation.
    let quotas = files.get_mut("quotas.yaml").expect("quotas.yaml");
    *quotas = quotas.replace("requests_per_unit: 600", "requests_per_unit: 7");
    kubelet_swap(&dir, 2, &files);
    assert!(
        wait_for_rules(&sluice, "edge.app_id: 7 per MINUTE").await,
        "the ..data swap was not picked up"
    );

    // A broken update is refused and the previous rules keep serving.
    let mut broken = files.clone();
    broken.insert("quotas.yaml".into(), "domain: edge\ndescriptors:\n  - key: app_id\n    rate_limit: { unit: fortnight, requests_per_unit: 1 }\n".into());
    kubelet_swap(&dir, 3, &broken);
    assert!(
        sluice.wait_for_log("rule set change rejected", Duration::from_secs(15)),
        "the broken update was not refused"
    );
    assert!(wait_for_rules(&sluice, "edge.app_id: 7 per MINUTE").await);
}

/// The NetworkPolicy selects the Sluice pods, leaves gRPC open to the cluster's proxies and
/// keeps the HTTP port (the admin API among it) to labelled namespaces; and the Deployment's
/// connection cap fits its memory limit at the per-connection bound docs/security.md states.
#[test]
fn the_network_policy_and_the_memory_bound_match_the_deployment() {
    let docs = manifests();
    let deployment = find(&docs, "Deployment", "sluice");
    let policy = find(&docs, "NetworkPolicy", "sluice");
    let pod_labels = labels(&deployment["spec"]["template"]["metadata"]["labels"]);
    assert!(selects(
        &labels(&policy["spec"]["podSelector"]["matchLabels"]),
        &pod_labels
    ));
    let rules = policy["spec"]["ingress"].as_sequence().expect("ingress");
    let port_of = |rule: &Value| rule["ports"][0]["port"].as_u64().expect("port");
    let grpc = rules
        .iter()
        .find(|r| port_of(r) == 8081)
        .expect("a gRPC rule");
    assert!(
        grpc.get("from").is_none(),
        "gRPC is for every proxy of the cluster"
    );
    let http = rules
        .iter()
        .find(|r| port_of(r) == 8080)
        .expect("an HTTP rule");
    assert!(
        http["from"].as_sequence().is_some_and(|f| !f.is_empty()),
        "the HTTP port is restricted"
    );

    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    let args = str_list(&container["args"]);
    let connections: u64 = flag(&args, "--max-connections")
        .expect("--max-connections")
        .parse()
        .expect("a number");
    let limit = container["resources"]["limits"]["memory"]
        .as_str()
        .expect("a memory limit");
    let limit_mib: u64 = match limit.strip_suffix("Gi") {
        Some(g) => g.parse::<u64>().expect("Gi") * 1024,
        None => limit
            .strip_suffix("Mi")
            .expect("Mi or Gi")
            .parse()
            .expect("Mi"),
    };
    // Two listeners at ~1.2 MiB a connection, plus what Sluice itself uses.
    let worst_mib = 2 * connections * 12 / 10 + 64;
    assert!(
        worst_mib <= limit_mib,
        "{connections} connections need ~{worst_mib} MiB; the limit is {limit}"
    );
}

#[test]
fn the_image_is_set_through_the_kustomization_as_the_docs_say() {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes/kustomization.yaml"))
        .expect("read kustomization");
    let kustomization: Value = serde_yaml::from_str(&text).expect("kustomization YAML");
    let images = kustomization["images"]
        .as_sequence()
        .expect("an images: list");
    let docs = manifests();
    let deployment = find(&docs, "Deployment", "sluice");
    let placeholder = deployment["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .expect("an image");
    // kustomize replaces an image whose name (without tag) is the entry's `name`.
    let entry = images
        .iter()
        .find(|i| i["name"].as_str() == Some(placeholder))
        .unwrap_or_else(|| panic!("no images: entry for the Deployment's image {placeholder:?}"));
    assert!(
        !placeholder.contains(['/', ':']),
        "the placeholder is a bare name: {placeholder}"
    );
    assert!(
        entry["newName"].is_string() && entry["newTag"].is_string(),
        "{entry:?}"
    );
    // And the walk-through says how to set it.
    let docs_text = std::fs::read_to_string(root().join("docs/kubernetes.md")).expect("docs");
    assert!(docs_text.contains(&format!(
        "kustomize edit set image \"{placeholder}=$IMAGE\""
    )));
    assert!(docs_text.contains("docker build -t \"$IMAGE\" ."));
}
