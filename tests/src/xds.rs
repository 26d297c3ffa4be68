//! A small State-of-the-World xDS server for the tests: one aggregated discovery service on a
//! loopback port that pushes `RateLimitConfig` snapshots (or anything else, to test refusals) to
//! every stream, records every request it receives (ACKs, NACKs, first requests), and can be
//! stopped and started again on the same port.

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::discovery::v3::aggregated_discovery_service_server::{
    AggregatedDiscoveryService, AggregatedDiscoveryServiceServer,
};
use envoy_types::pb::envoy::service::discovery::v3::{
    DeltaDiscoveryRequest, DeltaDiscoveryResponse, DiscoveryRequest, DiscoveryResponse,
};
use envoy_types::pb::google::protobuf::Any;
use envoy_types::pb::ratelimit::config::ratelimit::v3::RateLimitConfig;
use futures::{SinkExt, Stream, StreamExt};
use prost::Message;
use tokio::sync::watch;
use tonic::{Request, Response, Status, Streaming};

pub const TYPE_URL: &str = "type.googleapis.com/ratelimit.config.ratelimit.v3.RateLimitConfig";

/// What the server sends every stream: the latest snapshot, as soon as it changes.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub version: String,
    pub type_url: String,
    pub resources: Vec<Any>,
}

impl Snapshot {
    /// These rule sets as version `version`.
    pub fn of(version: &str, configs: &[RateLimitConfig]) -> Self {
        let resources = configs
            .iter()
            .map(|c| Any {
                type_url: TYPE_URL.into(),
                value: c.encode_to_vec(),
            })
            .collect();
        Snapshot {
            version: version.into(),
            type_url: TYPE_URL.into(),
            resources,
        }
    }
}

/// One request the server received, with the metadata of its stream.
#[derive(Debug, Clone)]
pub struct Received {
    pub request: DiscoveryRequest,
    pub metadata: Vec<(String, String)>,
}

struct Shared {
    snapshot: watch::Sender<Option<Snapshot>>,
    received: Mutex<Vec<Received>>,
}

/// The running server.
pub struct XdsServer {
    pub addr: SocketAddr,
    /// Served over TLS with this identity, requiring client certificates from this CA (PEM).
    tls: Option<(String, String, Option<String>)>,
    shared: Arc<Shared>,
    task: Option<tokio::task::JoinHandle<()>>,
    /// A second handle on every accepted socket, to cut them all at once.
    sockets: Arc<Mutex<Vec<std::net::TcpStream>>>,
}

impl XdsServer {
    /// Starts on `port` of 127.0.0.1 (0: any free port).
    pub async fn start(port: u16) -> Self {
        Self::start_with(port, None).await
    }

    /// Starts over TLS: `cert` and `key` (PEM text), and with `client_ca`, mTLS.
    pub async fn start_tls(cert: String, key: String, client_ca: Option<String>) -> Self {
        Self::start_with(0, Some((cert, key, client_ca))).await
    }

    async fn start_with(port: u16, tls: Option<(String, String, Option<String>)>) -> Self {
        let (snapshot, _) = watch::channel(None);
        let shared = Arc::new(Shared {
            snapshot,
            received: Mutex::new(Vec::new()),
        });
        let mut server = Self {
            tls,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            shared,
            task: None,
            sockets: Arc::new(Mutex::new(Vec::new())),
        };
        server.listen(port).await;
        server
    }

    async fn listen(&mut self, port: u16) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .expect("bind the xDS server");
        self.addr = listener.local_addr().expect("xDS server address");
        let service = AggregatedDiscoveryServiceServer::new(Ads {
            shared: Arc::clone(&self.shared),
        })
        .max_decoding_message_size(64 * 1024 * 1024)
        .max_encoding_message_size(64 * 1024 * 1024);
        let sockets = Arc::clone(&self.sockets);
        let incoming = futures::stream::unfold(listener, move |listener| {
            let sockets = Arc::clone(&sockets);
            async move {
                let accepted = listener.accept().await.and_then(|(tcp, _)| {
                    let std = tcp.into_std()?;
                    sockets.lock().expect("lock").push(std.try_clone()?);
                    tokio::net::TcpStream::from_std(std)
                });
                Some((accepted, listener))
            }
        });
        let mut builder = tonic::transport::Server::builder();
        if let Some((cert, key, client_ca)) = &self.tls {
            let mut tls = tonic::transport::ServerTlsConfig::new()
                .identity(tonic::transport::Identity::from_pem(cert, key));
            if let Some(ca) = client_ca {
                tls = tls.client_ca_root(tonic::transport::Certificate::from_pem(ca));
            }
            builder = builder.tls_config(tls).expect("server TLS");
        }
        self.task = Some(tokio::spawn(async move {
            let _ = builder
                .add_service(service)
                .serve_with_incoming(incoming)
                .await;
        }));
    }

    /// Drops the listener and every stream at once, as a crashed control plane would.
    pub async fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
        // The connections' own tasks outlive the accept loop: cut their sockets.
        for socket in self.sockets.lock().expect("lock").drain(..) {
            let _ = socket.shutdown(std::net::Shutdown::Both);
        }
    }

    /// Starts again on the same port, keeping the snapshot and the requests received.
    pub async fn restart(&mut self) {
        self.stop().await;
        let port = self.addr.port();
        self.listen(port).await;
    }

    /// Pushes these rule sets as version `version`.
    pub fn push(&self, version: &str, configs: &[RateLimitConfig]) {
        self.push_raw(Snapshot::of(version, configs));
    }

    /// Pushes anything.
    pub fn push_raw(&self, snapshot: Snapshot) {
        self.shared.snapshot.send_replace(Some(snapshot));
    }

    /// Every request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.lock().expect("lock").clone()
    }

    /// Waits (bounded) for a request that satisfies `pred`, and returns it.
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&Received) -> bool) -> Received {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(found) = self.received().into_iter().find(|r| pred(r)) {
                return found;
            }
            assert!(
                Instant::now() < deadline,
                "no request {what} within 20 s; received: {:#?}",
                self.received()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for XdsServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

struct Ads {
    shared: Arc<Shared>,
}

type Responses = Pin<Box<dyn Stream<Item = Result<DiscoveryResponse, Status>> + Send>>;
type DeltaResponses = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

#[tonic::async_trait]
impl AggregatedDiscoveryService for Ads {
    type StreamAggregatedResourcesStream = Responses;
    type DeltaAggregatedResourcesStream = DeltaResponses;

    async fn stream_aggregated_resources(
        &self,
        request: Request<Streaming<DiscoveryRequest>>,
    ) -> Result<Response<Responses>, Status> {
        let metadata: Vec<(String, String)> = request
            .metadata()
            .iter()
            .filter_map(|kv| match kv {
                tonic::metadata::KeyAndValueRef::Ascii(k, v) => {
                    Some((k.to_string(), v.to_str().ok()?.to_owned()))
                }
                tonic::metadata::KeyAndValueRef::Binary(..) => None,
            })
            .collect();
        let mut requests = request.into_inner();
        let (mut tx, rx) = futures::channel::mpsc::channel(4);
        let shared = Arc::clone(&self.shared);
        tokio::spawn(async move {
            let mut snapshots = shared.snapshot.subscribe();
            let mut nonce = 0u64;
            // Nothing is sent before the client's first request, as a SotW server does.
            let mut asked = false;
            loop {
                tokio::select! {
                    request = requests.next() => match request {
                        Some(Ok(request)) => {
                            shared.received.lock().expect("lock").push(Received {
                                request,
                                metadata: metadata.clone(),
                            });
                            if !asked {
                                asked = true;
                                snapshots.mark_changed();
                            }
                        }
                        _ => return,
                    },
                    changed = snapshots.changed(), if asked => {
                        if changed.is_err() {
                            return;
                        }
                        let snapshot = snapshots.borrow_and_update().clone();
                        if let Some(snapshot) = snapshot {
                            nonce += 1;
                            let response = DiscoveryResponse {
                                version_info: snapshot.version,
                                resources: snapshot.resources,
                                type_url: snapshot.type_url,
                                nonce: nonce.to_string(),
                                ..Default::default()
                            };
                            if tx.send(Ok(response)).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(rx)))
    }

    async fn delta_aggregated_resources(
        &self,
        _request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<DeltaResponses>, Status> {
        Err(Status::unimplemented(
            "this test server speaks State of the World only",
        ))
    }
}
