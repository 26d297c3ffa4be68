//! The ADS stream: connect, ask for `RateLimitConfig` resources, load each response, ACK or NACK
//! it, and open the stream again after a back-off when it breaks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use envoy_types::pb::envoy::config::core::v3::Node;
use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_client::AggregatedDiscoveryServiceClient;
use envoy_types::pb::envoy::service::discovery::v3::{DiscoveryRequest, DiscoveryResponse};
use envoy_types::pb::google::protobuf::{Struct, Value, value::Kind};
use envoy_types::pb::google::rpc::Status;
use envoy_types::pb::ratelimit::config::ratelimit::v3::RateLimitConfig;
use futures::SinkExt;
use prost::Message;
use tokio::sync::mpsc;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use super::{TYPE_URL, XdsSettings, convert};
use crate::config::{self, LoadOptions, RuleSet};

/// What the stream hands over: a rule set to serve, or why a pushed set was refused.
pub type Update = Result<Pushed, String>;

/// A rule set the control plane pushed, and its version.
#[derive(Debug)]
pub struct Pushed {
    pub rules: RuleSet,
    pub version: String,
}

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Keeps a stream open (and reopens it) until `updates` is closed, handing every pushed rule set
/// or refusal to it. A send waits for the receiver, so nothing is dropped and nothing is ACKed
/// before it was handed over.
pub async fn run(settings: XdsSettings, opts: LoadOptions, updates: mpsc::Sender<Update>) {
    let mut version = String::new();
    let mut failures = 0u32;
    loop {
        let outcome = session(&settings, &opts, &updates, &mut version).await;
        if updates.is_closed() {
            return;
        }
        let wait = match outcome {
            Ended::Unreachable(reason) => {
                tracing::warn!(server = %settings.server, %reason, "cannot reach the xDS server; retrying");
                settings.connect_retry
            }
            Ended::Broken { responded, reason } => {
                if responded {
                    failures = 0;
                }
                let wait = settings.backoff.wait(failures, unit());
                failures = failures.saturating_add(1);
                tracing::warn!(server = %settings.server, %reason, retry_in = ?wait, "the xDS stream ended");
                wait
            }
        };
        tokio::time::sleep(wait).await;
    }
}

/// Why a session ended.
enum Ended {
    /// No stream could be opened.
    Unreachable(String),
    /// The stream broke (or the server closed it); `responded`: it delivered a response first.
    Broken { responded: bool, reason: String },
}

async fn session(
    settings: &XdsSettings,
    opts: &LoadOptions,
    updates: &mpsc::Sender<Update>,
    version: &mut String,
) -> Ended {
    let channel = match connect(settings).await {
        Ok(channel) => channel,
        Err(reason) => return Ended::Unreachable(reason),
    };
    let mut client = AggregatedDiscoveryServiceClient::new(channel)
        .max_decoding_message_size(settings.max_message_bytes);
    let (mut requests, outgoing) = futures::channel::mpsc::channel::<DiscoveryRequest>(4);
    // The first request of a stream carries the last version served, so a server that restarted
    // can tell what this replica has.
    let first = request(settings, version, "", None);
    if requests.send(first).await.is_err() {
        return Ended::Unreachable("the request stream closed".into());
    }
    let mut call = tonic::Request::new(outgoing);
    for (name, value) in &settings.headers {
        // Validated when the settings were read.
        if let (Ok(name), Ok(value)) = (
            tonic::metadata::MetadataKey::from_bytes(name.as_bytes()),
            value.parse(),
        ) {
            call.metadata_mut().insert(name, value);
        }
    }
    let mut responses = match client.stream_aggregated_resources(call).await {
        Ok(stream) => stream.into_inner(),
        Err(status) => return Ended::Unreachable(status.to_string()),
    };
    let mut responded = false;
    loop {
        let response = match responses.message().await {
            Ok(Some(response)) => response,
            Ok(None) => {
                return Ended::Broken {
                    responded,
                    reason: "the server closed the stream".into(),
                };
            }
            Err(status) => {
                return Ended::Broken {
                    responded,
                    reason: status.to_string(),
                };
            }
        };
        responded = true;
        let reply = match load(&response, opts) {
            Ok(rules) => {
                let pushed = Pushed {
                    rules,
                    version: response.version_info.clone(),
                };
                if updates.send(Ok(pushed)).await.is_err() {
                    return Ended::Broken {
                        responded,
                        reason: "shutting down".into(),
                    };
                }
                *version = response.version_info.clone();
                request(settings, version, &response.nonce, None)
            }
            Err(reason) => {
                let _ = updates.send(Err(reason.clone())).await;
                // A NACK names the version still served, with the reason.
                request(settings, version, &response.nonce, Some(reason))
            }
        };
        if requests.send(reply).await.is_err() {
            return Ended::Broken {
                responded,
                reason: "the request stream closed".into(),
            };
        }
    }
}

async fn connect(settings: &XdsSettings) -> Result<Channel, String> {
    let scheme = if settings.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut endpoint = Endpoint::from_shared(format!("{scheme}://{}", settings.server))
        .map_err(|e| e.to_string())?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    if let Some(tls) = &settings.tls {
        // Read at every connection, so rotated files are picked up.
        let read = |path: &Path| {
            std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
        };
        let mut config =
            ClientTlsConfig::new().ca_certificate(Certificate::from_pem(read(&tls.ca)?));
        if let Some((cert, key)) = &tls.identity {
            config = config.identity(Identity::from_pem(read(cert)?, read(key)?));
        }
        if let Some(name) = &tls.server_name {
            config = config.domain_name(name.clone());
        }
        endpoint = endpoint.tls_config(config).map_err(|e| e.to_string())?;
    }
    endpoint.connect().await.map_err(|e| format!("{e:?}"))
}

/// A request: the first of a stream, an ACK (`error: None`) or a NACK.
fn request(
    settings: &XdsSettings,
    version: &str,
    nonce: &str,
    error: Option<String>,
) -> DiscoveryRequest {
    let metadata = Struct {
        fields: settings
            .node_metadata
            .iter()
            .map(|(k, v)| {
                let value = Value {
                    kind: Some(Kind::StringValue(v.clone())),
                };
                (k.clone(), value)
            })
            .collect(),
    };
    DiscoveryRequest {
        version_info: version.to_owned(),
        node: Some(Node {
            id: settings.node_id.clone(),
            metadata: Some(metadata),
            user_agent_name: "sluice".into(),
            ..Default::default()
        }),
        type_url: TYPE_URL.into(),
        response_nonce: nonce.to_owned(),
        error_detail: error.map(|message| Status {
            // google.rpc.Code.INVALID_ARGUMENT
            code: 3,
            message,
            details: Vec::new(),
        }),
        ..Default::default()
    }
}

/// Loads a response's resources as one rule set, one "file" per resource, named `xds:<name>`.
pub fn load(response: &DiscoveryResponse, opts: &LoadOptions) -> Result<RuleSet, String> {
    if response.type_url != TYPE_URL {
        return Err(format!(
            "Sluice asks only for {TYPE_URL}, not {}",
            response.type_url
        ));
    }
    let mut files: Vec<(PathBuf, String)> = Vec::with_capacity(response.resources.len());
    for (i, any) in response.resources.iter().enumerate() {
        if any.type_url != TYPE_URL {
            return Err(format!(
                "resource {i} is a {}, not a {TYPE_URL}",
                any.type_url
            ));
        }
        let resource = RateLimitConfig::decode(any.value.as_slice())
            .map_err(|e| format!("resource {i} does not decode: {e}"))?;
        let name = if resource.name.is_empty() {
            &resource.domain
        } else {
            &resource.name
        };
        files.push((
            PathBuf::from(format!("xds:{name}")),
            convert::to_yaml(&resource),
        ));
    }
    let texts: Vec<(&Path, &str)> = files
        .iter()
        .map(|(path, text)| (path.as_path(), text.as_str()))
        .collect();
    config::parse_many(&texts, opts).map_err(|errors| errors.to_string())
}

/// A uniform draw in [0, 1), for the back-off's spread.
fn unit() -> f64 {
    let mut bytes = [0u8; 8];
    // Without randomness the back-off is unspread, which is only less even.
    let _ = getrandom::fill(&mut bytes);
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
