//! The generated part of the corpora (`sluice-fuzz seed`): inputs taken from the repository's
//! own examples, so the fuzzers start from what users really send and write. Files it writes are
//! named `seed-…`; hand-written inputs and regressions sit beside them under other names.
//!
//! - `config`: every rule file under `examples/` and `server/tests/fixtures/`, the fixture
//!   directories as multi-file loads, and the YAML blocks of `docs/` that hold a rule file.
//! - `json`, `leases`, `admin`: the bodies of the `curl` commands in `docs/` and `examples/`,
//!   with their paths and methods.
//! - `grpc`: each `/json` request of those, as Envoy sends it: a prost-encoded, framed
//!   `RateLimitRequest`.
//! - `filter_config`: the plugin configurations of `envoy-config/` and the JSON blocks of
//!   `docs/filter.md`.

use std::path::{Path, PathBuf};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::{
    RateLimitDescriptor, rate_limit_descriptor::Entry,
};
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use prost::Message as _;

/// One generated input: its target, file name and bytes.
pub struct Seed {
    pub target: &'static str,
    pub name: String,
    pub bytes: Vec<u8>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn files(dir: &str, exts: &[&str]) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![root().join(dir)];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p
                .extension()
                .and_then(|x| x.to_str())
                .is_some_and(|x| exts.contains(&x))
            {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// `docs/a.md` → `docs-a`.
fn slug(path: &Path) -> String {
    let rel = path.strip_prefix(root()).unwrap_or(path);
    rel.with_extension("")
        .to_string_lossy()
        .replace(['/', '\\', '.'], "-")
}

/// The fenced blocks of `lang` in a markdown text.
fn blocks<'a>(text: &'a str, lang: &str) -> Vec<&'a str> {
    let fence = format!("```{lang}\n");
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(&fence) {
        let body = &rest[start + fence.len()..];
        let Some(end) = body.find("```") else { break };
        out.push(&body[..end]);
        rest = &body[end..];
    }
    out
}

/// A `curl` command of a document: method, path (after the port) and body.
struct Curl {
    method: String,
    path: String,
    body: Option<String>,
}

/// Every `curl … localhost:PORT/path … -d '…'` command in `text`, continuation lines joined.
fn curls(text: &str) -> Vec<Curl> {
    let mut out = Vec::new();
    for (start, _) in text.match_indices("curl ") {
        // The command runs to a newline outside quotes that is not escaped.
        let mut end = start;
        let mut quoted = false;
        let bytes = text.as_bytes();
        while end < bytes.len() {
            match bytes[end] {
                b'\'' => quoted = !quoted,
                b'\n' if !quoted && (end == 0 || bytes[end - 1] != b'\\') => break,
                _ => {}
            }
            end += 1;
        }
        let command = &text[start..end];
        let Some(at) = command.find("localhost:") else {
            continue;
        };
        let after = &command[at..];
        let Some(slash) = after.find('/') else {
            continue;
        };
        let path: String = after[slash..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '\'' && *c != '"')
            .collect();
        let body = command.find("-d '").and_then(|d| {
            let b = &command[d + 4..];
            b.find('\'').map(|e| b[..e].to_owned())
        });
        let method = if command.contains("-X PUT") {
            "PUT"
        } else if command.contains("-X DELETE") {
            "DELETE"
        } else if body.is_some() {
            "POST"
        } else {
            "GET"
        };
        out.push(Curl {
            method: method.into(),
            path,
            body,
        });
    }
    out
}

fn framed(request: &RateLimitRequest) -> Vec<u8> {
    let message = request.encode_to_vec();
    let mut out = vec![0];
    out.extend_from_slice(&(message.len() as u32).to_be_bytes());
    out.extend_from_slice(&message);
    out
}

/// A `/json` body as the `RateLimitRequest` Envoy would send for it.
fn as_proto(body: &str) -> Option<RateLimitRequest> {
    let doc: serde_json::Value = serde_json::from_str(body).ok()?;
    let descriptors = doc["descriptors"]
        .as_array()?
        .iter()
        .map(|d| RateLimitDescriptor {
            entries: d["entries"]
                .as_array()
                .map(|es| {
                    es.iter()
                        .map(|e| Entry {
                            key: e["key"].as_str().unwrap_or_default().into(),
                            value: e["value"].as_str().unwrap_or_default().into(),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            hits_addend: d["hits_addend"]
                .as_u64()
                .or_else(|| d["hitsAddend"].as_str().and_then(|s| s.parse().ok()))
                .map(|value| envoy_types::pb::google::protobuf::UInt64Value { value }),
            is_negative_hits: d["is_negative_hits"].as_bool().unwrap_or(false),
            ..Default::default()
        })
        .collect();
    Some(RateLimitRequest {
        domain: doc["domain"].as_str()?.into(),
        descriptors,
        hits_addend: doc["hits_addend"].as_u64().unwrap_or(0) as u32,
    })
}

/// Every generated seed.
pub fn generate() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let mut push = |target: &'static str, name: String, bytes: Vec<u8>| {
        if !seeds
            .iter()
            .any(|s: &Seed| s.target == target && s.bytes == bytes)
        {
            seeds.push(Seed {
                target,
                name: format!("seed-{name}"),
                bytes,
            });
        }
    };

    for dir in ["examples", "server/tests/fixtures"] {
        for file in files(dir, &["yaml", "yml"]) {
            if let Ok(text) = std::fs::read(&file) {
                push("config", slug(&file), text);
            }
        }
    }
    // The directory loads of the fixtures, as one input of several files.
    for (dir, merge) in [
        ("server/tests/fixtures/config/duplicate_domain", false),
        ("server/tests/fixtures/config/duplicate_domain", true),
        ("server/tests/fixtures/config/valid", false),
    ] {
        let parts: Vec<String> = files(dir, &["yaml", "yml"])
            .iter()
            .filter_map(|f| std::fs::read_to_string(f).ok())
            .collect();
        let mut text = parts.join(sluice_server::fuzz::NEXT_FILE);
        if merge {
            text.insert_str(0, sluice_server::fuzz::MERGE);
        }
        let name = format!(
            "{}{}",
            slug(&root().join(dir)),
            if merge { "-merged" } else { "" }
        );
        push("config", name, text.into_bytes());
    }
    let docs: Vec<PathBuf> = files("docs", &["md"])
        .into_iter()
        .chain(files("examples", &["md"]))
        .chain([root().join("README.md")])
        .collect();
    let mut json_bodies = Vec::new();
    for file in &docs {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        for (i, block) in blocks(&text, "yaml").iter().enumerate() {
            if block.contains("domain:") && block.contains("descriptors:") {
                push(
                    "config",
                    format!("{}-{i}", slug(file)),
                    block.as_bytes().to_vec(),
                );
            }
        }
        for (i, curl) in curls(&text).iter().enumerate() {
            let name = format!("{}-{i}", slug(file));
            let body = curl.body.clone().unwrap_or_default();
            if curl.path == "/json" {
                json_bodies.push((name.clone(), body.clone()));
                push("json", name, body.into_bytes());
            } else if let Some(action) = curl.path.strip_prefix("/leases/") {
                push("leases", name, format!("{action}\n{body}").into_bytes());
            } else if let Some(target) = curl.path.strip_prefix("/admin/") {
                push(
                    "admin",
                    name,
                    format!("{} {target}\n{body}", curl.method).into_bytes(),
                );
            }
        }
        if file.ends_with("docs/filter.md") {
            for (i, block) in blocks(&text, "json").iter().enumerate() {
                push(
                    "filter_config",
                    format!("{}-{i}", slug(file)),
                    block.as_bytes().to_vec(),
                );
            }
        }
    }
    for (name, body) in &json_bodies {
        if let Some(request) = as_proto(body) {
            push("grpc", name.clone(), framed(&request));
        }
    }

    let yaml = |path: &str| -> Option<serde_yaml::Value> {
        serde_yaml::from_str(&std::fs::read_to_string(root().join(path)).ok()?).ok()
    };
    if let Some(doc) = yaml("envoy-config/envoy-wasm.yaml") {
        let filter = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
            ["http_filters"][0];
        if let Some(json) = filter["typed_config"]["config"]["configuration"]["value"].as_str() {
            push(
                "filter_config",
                "envoy-config-envoy-wasm".into(),
                json.as_bytes().to_vec(),
            );
        }
    }
    if let Some(doc) = yaml("envoy-config/istio-wasmplugin.yaml")
        && let Ok(json) = serde_json::to_vec_pretty(&doc["spec"]["pluginConfig"])
    {
        push(
            "filter_config",
            "envoy-config-istio-wasmplugin".into(),
            json,
        );
    }
    seeds
}
