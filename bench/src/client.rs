//! The two ways to ask for a decision, and how an answer is classified.
//!
//! gRPC goes over tonic channels (one HTTP/2 connection each). `POST /json` goes over HTTP/1.1,
//! which has no multiplexing: each outstanding request holds a keep-alive connection of its own,
//! taken from an idle pool or opened on demand, so the connection count follows the concurrency.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::coalesce::Coalesce;
use crate::workload::Payload;

/// What happened to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    OverLimit,
    Error(&'static str),
}

/// An answered request, and whether its statuses list was empty (allowed by
/// `--allow-empty-statuses`, counted apart).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    pub outcome: Outcome,
    pub empty_statuses: bool,
}

impl Answer {
    fn error(kind: &'static str) -> Self {
        Answer {
            outcome: Outcome::Error(kind),
            empty_statuses: false,
        }
    }
}

/// A handle to the target; cheap to clone.
#[derive(Clone)]
pub enum Client {
    Grpc(RateLimitServiceClient<Channel>),
    /// A new connection for every request (`--reconnect`).
    GrpcFresh(Box<Endpoint>),
    Json(Arc<JsonPool>),
}

/// How gRPC connections are made: TLS (the CA file and the server's name), and whether each
/// request gets a connection of its own.
pub struct Connect<'a> {
    pub tls: Option<(&'a std::path::Path, &'a str)>,
    pub reconnect: bool,
}

impl Client {
    /// A gRPC client on a connection of its own, connected lazily: a missing server shows up as
    /// counted `UNAVAILABLE` errors, not a start-up failure. With `coalesce`, requests ready in
    /// the same runtime pass share one write ([`Coalesce`]), as Envoy's do: its HTTP/2 codec
    /// writes once per event-loop pass, while tonic's client writes each request as its task sends
    /// it, which would load the server with many more, smaller reads than Envoy does.
    /// With TLS, writes are not coalesced (the TLS stream is tonic's own).
    pub fn grpc(
        addr: SocketAddr,
        timeout: Duration,
        coalesce: bool,
        connect: &Connect<'_>,
    ) -> anyhow::Result<Self> {
        let scheme = if connect.tls.is_some() {
            "https"
        } else {
            "http"
        };
        let mut endpoint = Endpoint::from_shared(format!("{scheme}://{addr}"))
            .context("building the gRPC endpoint")?
            .connect_timeout(timeout)
            .tcp_nodelay(true);
        if let Some((ca, name)) = connect.tls {
            let pem = std::fs::read(ca).with_context(|| format!("reading {}", ca.display()))?;
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem))
                .domain_name(name);
            endpoint = endpoint.tls_config(tls).context("TLS settings")?;
        }
        if connect.reconnect {
            return Ok(Client::GrpcFresh(Box::new(endpoint)));
        }
        let channel = if coalesce && connect.tls.is_none() {
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| async move {
                let tcp = tokio::net::TcpStream::connect(addr).await?;
                tcp.set_nodelay(true)?;
                Ok::<_, std::io::Error>(TokioIo::new(Coalesce::new(tcp)))
            }))
        } else {
            endpoint.connect_lazy()
        };
        Ok(Client::Grpc(RateLimitServiceClient::new(channel)))
    }

    pub fn json(addr: SocketAddr) -> Self {
        Client::Json(Arc::new(JsonPool {
            addr,
            idle: Mutex::new(Vec::new()),
        }))
    }

    /// Sends `payload` and classifies the answer; `sent` is the number of descriptors in it.
    pub async fn send(&self, payload: Payload, sent: usize, allow_empty: bool) -> Answer {
        match (self, payload) {
            (Client::Grpc(client), Payload::Grpc(request)) => {
                let result = client.clone().should_rate_limit(request).await;
                match result {
                    Ok(response) => classify_grpc(&response.into_inner(), sent, allow_empty),
                    Err(status) => Answer::error(code_name(status.code())),
                }
            }
            (Client::GrpcFresh(endpoint), Payload::Grpc(request)) => {
                let channel = match endpoint.connect().await {
                    Ok(channel) => channel,
                    Err(_) => return Answer::error("CONNECT"),
                };
                match RateLimitServiceClient::new(channel)
                    .should_rate_limit(request)
                    .await
                {
                    Ok(response) => classify_grpc(&response.into_inner(), sent, allow_empty),
                    Err(status) => Answer::error(code_name(status.code())),
                }
            }
            (Client::Json(pool), Payload::Json(body)) => match pool.post(body).await {
                Ok((status, body)) => classify_json(status, &body, sent, allow_empty),
                Err(kind) => Answer::error(kind),
            },
            _ => Answer::error("CLIENT_PAYLOAD_MISMATCH"),
        }
    }
}

fn statuses_outcome(count: usize, sent: usize, allow_empty: bool, outcome: Outcome) -> Answer {
    let empty_statuses = count == 0 && allow_empty;
    // Envoy pairs statuses with descriptors by position; a list of another length is a bug.
    if count != sent && !empty_statuses {
        return Answer::error("STATUS_COUNT_MISMATCH");
    }
    Answer {
        outcome,
        empty_statuses,
    }
}

pub fn classify_grpc(response: &RateLimitResponse, sent: usize, allow_empty: bool) -> Answer {
    let outcome = match Code::try_from(response.overall_code) {
        Ok(Code::Ok) => Outcome::Ok,
        Ok(Code::OverLimit) => Outcome::OverLimit,
        _ => return Answer::error("OVERALL_CODE_UNKNOWN"),
    };
    statuses_outcome(response.statuses.len(), sent, allow_empty, outcome)
}

/// The reference answers `/json` with 200 (OK) or 429 (OVER_LIMIT) and the response as JSON.
pub fn classify_json(status: u16, body: &[u8], sent: usize, allow_empty: bool) -> Answer {
    #[derive(serde::Deserialize)]
    struct Reply {
        #[serde(default, rename = "overallCode", alias = "overall_code")]
        overall_code: String,
        #[serde(default)]
        statuses: Vec<serde::de::IgnoredAny>,
    }
    let expected = match status {
        200 => Outcome::Ok,
        429 => Outcome::OverLimit,
        400 => return Answer::error("HTTP_400"),
        500 => return Answer::error("HTTP_500"),
        503 => return Answer::error("HTTP_503"),
        _ => return Answer::error("HTTP_OTHER"),
    };
    let Ok(reply) = serde_json::from_slice::<Reply>(body) else {
        return Answer::error("JSON_UNPARSABLE");
    };
    let code_agrees = matches!(
        (reply.overall_code.as_str(), expected),
        ("OK", Outcome::Ok) | ("OVER_LIMIT", Outcome::OverLimit)
    );
    if !code_agrees {
        return Answer::error("OVERALL_CODE_UNKNOWN");
    }
    statuses_outcome(reply.statuses.len(), sent, allow_empty, expected)
}

/// Keep-alive HTTP/1.1 connections to one address.
pub struct JsonPool {
    addr: SocketAddr,
    idle: Mutex<Vec<http1::SendRequest<Full<Bytes>>>>,
}

impl JsonPool {
    fn take_idle(&self) -> Option<http1::SendRequest<Full<Bytes>>> {
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        while let Some(conn) = idle.pop() {
            if !conn.is_closed() {
                return Some(conn);
            }
        }
        None
    }

    fn give_back(&self, conn: http1::SendRequest<Full<Bytes>>) {
        self.idle
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(conn);
    }

    async fn connect(&self) -> Result<http1::SendRequest<Full<Bytes>>, &'static str> {
        let tcp = tokio::net::TcpStream::connect(self.addr)
            .await
            .map_err(|_| "CONNECT_FAILED")?;
        // Small requests and answers: Nagle would hold them for a delayed ACK.
        tcp.set_nodelay(true).map_err(|_| "CONNECT_FAILED")?;
        let (sender, connection) = http1::handshake(TokioIo::new(tcp))
            .await
            .map_err(|_| "CONNECT_FAILED")?;
        tokio::spawn(async move {
            // The connection ends when its sender is dropped or the server closes it; either is
            // seen by the next request on it.
            let _ = connection.await;
        });
        Ok(sender)
    }

    async fn post(&self, body: Bytes) -> Result<(u16, Bytes), &'static str> {
        let mut conn = match self.take_idle() {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        conn.ready().await.map_err(|_| "HTTP_IO")?;
        let request = hyper::Request::post("/json")
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|_| "CLIENT_REQUEST")?;
        let response = conn.send_request(request).await.map_err(|_| "HTTP_IO")?;
        let status = response.status().as_u16();
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|_| "HTTP_IO")?
            .to_bytes();
        self.give_back(conn);
        Ok((status, body))
    }
}

/// The canonical gRPC status names, as `grpcurl` and Envoy's stats print them.
pub fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code as C;
    match code {
        C::Ok => "OK",
        C::Cancelled => "CANCELLED",
        C::Unknown => "UNKNOWN",
        C::InvalidArgument => "INVALID_ARGUMENT",
        C::DeadlineExceeded => "DEADLINE_EXCEEDED",
        C::NotFound => "NOT_FOUND",
        C::AlreadyExists => "ALREADY_EXISTS",
        C::PermissionDenied => "PERMISSION_DENIED",
        C::ResourceExhausted => "RESOURCE_EXHAUSTED",
        C::FailedPrecondition => "FAILED_PRECONDITION",
        C::Aborted => "ABORTED",
        C::OutOfRange => "OUT_OF_RANGE",
        C::Unimplemented => "UNIMPLEMENTED",
        C::Internal => "INTERNAL",
        C::Unavailable => "UNAVAILABLE",
        C::DataLoss => "DATA_LOSS",
        C::Unauthenticated => "UNAUTHENTICATED",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(code: Code, statuses: usize) -> RateLimitResponse {
        RateLimitResponse {
            overall_code: code as i32,
            statuses: vec![Default::default(); statuses],
            ..Default::default()
        }
    }

    fn outcome(a: Answer) -> Outcome {
        a.outcome
    }

    #[test]
    fn classifies_grpc_answers() {
        assert_eq!(
            outcome(classify_grpc(&answer(Code::Ok, 2), 2, false)),
            Outcome::Ok
        );
        assert_eq!(
            outcome(classify_grpc(&answer(Code::OverLimit, 1), 1, false)),
            Outcome::OverLimit
        );
        assert_eq!(
            outcome(classify_grpc(&answer(Code::Ok, 1), 2, false)),
            Outcome::Error("STATUS_COUNT_MISMATCH")
        );
        assert_eq!(
            outcome(classify_grpc(&answer(Code::Unknown, 1), 1, false)),
            Outcome::Error("OVERALL_CODE_UNKNOWN")
        );
        assert_eq!(code_name(tonic::Code::Unavailable), "UNAVAILABLE");
    }

    #[test]
    fn empty_statuses_pass_only_when_allowed() {
        assert_eq!(
            outcome(classify_grpc(&answer(Code::Ok, 0), 1, false)),
            Outcome::Error("STATUS_COUNT_MISMATCH")
        );
        let lenient = classify_grpc(&answer(Code::Ok, 0), 1, true);
        assert_eq!(lenient.outcome, Outcome::Ok);
        assert!(lenient.empty_statuses);
        // A short, non-empty list is still a protocol bug.
        assert_eq!(
            outcome(classify_grpc(&answer(Code::Ok, 1), 2, true)),
            Outcome::Error("STATUS_COUNT_MISMATCH")
        );
    }

    #[test]
    fn classifies_json_answers() {
        let ok = br#"{"overallCode":"OK","statuses":[{"code":"OK"}]}"#;
        let over = br#"{"overallCode":"OVER_LIMIT","statuses":[{"code":"OVER_LIMIT"}]}"#;
        assert_eq!(outcome(classify_json(200, ok, 1, false)), Outcome::Ok);
        assert_eq!(
            outcome(classify_json(429, over, 1, false)),
            Outcome::OverLimit
        );
        assert_eq!(
            outcome(classify_json(429, ok, 1, false)),
            Outcome::Error("OVERALL_CODE_UNKNOWN")
        );
        assert_eq!(
            outcome(classify_json(200, b"not json", 1, false)),
            Outcome::Error("JSON_UNPARSABLE")
        );
        assert_eq!(
            outcome(classify_json(400, b"{}", 1, false)),
            Outcome::Error("HTTP_400")
        );
        assert_eq!(
            outcome(classify_json(200, ok, 2, false)),
            Outcome::Error("STATUS_COUNT_MISMATCH")
        );
    }
}
