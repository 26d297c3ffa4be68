//! The filter configurations shipped in `envoy-config/` are accepted by the filter's own parser
//! (the one `on_configure` runs) and use the example rules' domain.

use std::path::PathBuf;

use serde_yaml::Value;

fn load(path: &str) -> Value {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn example_domain() -> String {
    load("examples/config/quotas.yaml")["domain"]
        .as_str()
        .expect("domain")
        .to_string()
}

#[test]
fn envoy_wasm_bootstrap_configuration_is_valid() {
    let doc = load("envoy-config/envoy-wasm.yaml");
    let filter = &doc["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
        ["http_filters"][0];
    assert_eq!(filter["name"].as_str(), Some("envoy.filters.http.wasm"));
    let json = filter["typed_config"]["config"]["configuration"]["value"]
        .as_str()
        .expect("StringValue JSON");
    let config = sluice_filter::config::parse(json.as_bytes())
        .unwrap_or_else(|e| panic!("envoy-wasm.yaml: {e}"));
    assert_eq!(config.domain, example_domain());
    let clusters: Vec<&str> = doc["static_resources"]["clusters"]
        .as_sequence()
        .expect("clusters")
        .iter()
        .filter_map(|c| c["name"].as_str())
        .collect();
    assert!(
        clusters.contains(&config.service.cluster.as_str()),
        "{clusters:?}"
    );
}

#[test]
fn istio_wasmplugin_configuration_is_valid() {
    let doc = load("envoy-config/istio-wasmplugin.yaml");
    let plugin = serde_json::to_vec(&doc["spec"]["pluginConfig"]).expect("pluginConfig as JSON");
    let config = sluice_filter::config::parse(&plugin)
        .unwrap_or_else(|e| panic!("istio-wasmplugin.yaml: {e}"));
    assert_eq!(config.domain, example_domain());
    assert!(config.descriptors.iter().any(|d| d.charge.is_some()));
}
