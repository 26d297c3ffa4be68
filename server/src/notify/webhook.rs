//! The webhook sink: each event POSTed as JSON to the configured URL, signed, retried with
//! exponential back-off and jitter up to `max_attempts` (at least once; receivers de-duplicate on
//! the event id).
//!
//! ```text
//! POST /sluice HTTP/1.1
//! Host: hooks.example.com
//! Content-Type: application/json
//! X-Sluice-Event-Id: 3f0c9a…              the event's `id`
//! X-Sluice-Event-Kind: quota_exhausted
//! X-Sluice-Signature: sha256=<hex>        HMAC-SHA256 of the body with the signing key
//! ```
//!
//! One task per sink delivers in order over one kept-alive HTTP/1.1 connection (remade after
//! any failure), so a receiver that hangs holds this task alone, `timeout_ms` per attempt: its
//! queue fills, further events are dropped and counted, and nothing else waits. A 2xx answer
//! delivers; 408, 429, 5xx, a timeout or a broken connection are retried (after `Retry-After`
//! when the receiver gives one in seconds, up to a minute); any other answer (a 4xx, a redirect)
//! fails the event at once, since sending it again would get the same answer.
//!
//! HTTPS is rustls on ring with the platform's CA roots (`rustls-native-certs`, as the Redis
//! client reads them; `SSL_CERT_FILE` and `SSL_CERT_DIR` point elsewhere).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full, Limited};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use ring::hmac;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::mpsc;

use super::dispatch::{Delivery, SinkCounters};
use crate::config::notifications::{Webhook, WebhookUrl};

/// The longest wait between two attempts, whatever the back-off or `Retry-After` say.
pub const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// The first back-off; it doubles with each failed attempt.
pub const FIRST_BACKOFF: Duration = Duration::from_millis(250);
/// A receiver's answer body is read (so the connection can be kept) up to this much.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// `sha256=` and the hex HMAC-SHA256 of `body` under `key`: the `X-Sluice-Signature` value.
pub fn signature(key: &[u8], body: &[u8]) -> String {
    sign(&hmac::Key::new(hmac::HMAC_SHA256, key), body)
}

fn sign(key: &hmac::Key, body: &[u8]) -> String {
    let tag = hmac::sign(key, body);
    let mut out = String::with_capacity(7 + 64);
    out.push_str("sha256=");
    for b in tag.as_ref() {
        out.push(char::from(HEX[usize::from(b >> 4)]));
        out.push(char::from(HEX[usize::from(b & 0xf)]));
    }
    out
}

const HEX: &[u8; 16] = b"0123456789abcdef";

/// The wait before attempt `attempt + 1`: [`FIRST_BACKOFF`] doubling per attempt, capped at
/// [`MAX_BACKOFF`], then scaled into its upper half by `jitter` in [0, 1) so that sinks failing
/// together do not retry in step.
pub fn backoff(attempt: u32, jitter: f64) -> Duration {
    let full = FIRST_BACKOFF
        .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
        .min(MAX_BACKOFF);
    full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

fn jitter() -> f64 {
    (getrandom::u32().unwrap_or_default() as f64) / (f64::from(u32::MAX) + 1.0)
}

/// How one attempt went.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Delivered,
    /// Worth another attempt, after this long if the receiver said.
    Retry(String, Option<Duration>),
    /// Another attempt would get the same answer.
    Refused(String),
}

/// Starts the sink's task; returns its queue.
pub(super) fn start(
    spec: Webhook,
    label: String,
    counters: SinkCounters,
) -> mpsc::Sender<Arc<Delivery>> {
    let (tx, rx) = mpsc::channel(spec.queue_size.max(1));
    tokio::spawn(run(spec, label, rx, counters));
    tx
}

type Sender = SendRequest<Full<Bytes>>;

async fn run(
    spec: Webhook,
    label: String,
    mut queue: mpsc::Receiver<Arc<Delivery>>,
    counters: SinkCounters,
) {
    let key = hmac::Key::new(hmac::HMAC_SHA256, spec.signing_key.bytes());
    let mut conn: Option<Sender> = None;
    let mut failing = false;
    while let Some(delivery) = queue.recv().await {
        let signature = sign(&key, &delivery.body);
        let mut attempt = 1;
        let failure = loop {
            let outcome = match tokio::time::timeout(
                spec.timeout,
                post(&mut conn, &spec.url, &delivery, &signature),
            )
            .await
            {
                Ok(outcome) => outcome,
                Err(_) => Attempt::Retry(format!("no answer within {:?}", spec.timeout), None),
            };
            match outcome {
                Attempt::Delivered => break None,
                Attempt::Retry(why, after) if attempt < spec.max_attempts => {
                    // The connection may be half-way through a request: start afresh.
                    conn = None;
                    tracing::debug!(sink = %label, attempt, reason = %why, "webhook attempt failed; retrying");
                    let wait =
                        after.map_or_else(|| backoff(attempt, jitter()), |a| a.min(MAX_BACKOFF));
                    tokio::time::sleep(wait).await;
                    attempt += 1;
                }
                Attempt::Retry(why, _) | Attempt::Refused(why) => {
                    conn = None;
                    break Some(why);
                }
            }
        };
        match failure {
            None => {
                counters.delivered.inc();
                if failing {
                    tracing::info!(sink = %label, "webhook delivering again");
                    failing = false;
                }
            }
            Some(why) => {
                counters.failed.inc();
                // Once per streak of failures: a dead receiver must not flood the log.
                if !failing {
                    tracing::warn!(sink = %label, event = %delivery.id, attempts = attempt, reason = %why, "webhook delivery failed; the event is dropped");
                    failing = true;
                }
            }
        }
    }
}

/// One POST of `delivery` over `conn` (connected first if need be).
async fn post(
    conn: &mut Option<Sender>,
    url: &WebhookUrl,
    delivery: &Delivery,
    signature: &str,
) -> Attempt {
    if conn.as_ref().is_none_or(|c| c.is_closed()) {
        match connect(url).await {
            Ok(sender) => *conn = Some(sender),
            Err(why) => return Attempt::Retry(why, None),
        }
    }
    let Some(sender) = conn.as_mut() else {
        return Attempt::Retry("not connected".into(), None);
    };
    if let Err(e) = sender.ready().await {
        *conn = None;
        return Attempt::Retry(format!("connection closed: {e}"), None);
    }
    let request = http::Request::post(url.path_and_query.as_str())
        .header(http::header::HOST, url.host_header())
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(
            http::header::USER_AGENT,
            concat!("sluice/", env!("CARGO_PKG_VERSION")),
        )
        .header("x-sluice-event-id", delivery.id.as_str())
        .header("x-sluice-event-kind", delivery.kind.as_str())
        .header("x-sluice-signature", signature)
        .body(Full::new(delivery.body.clone()));
    let request = match request {
        Ok(r) => r,
        Err(e) => return Attempt::Refused(format!("cannot build the request: {e}")),
    };
    let answer = match sender.send_request(request).await {
        Ok(answer) => answer,
        Err(e) => {
            *conn = None;
            return Attempt::Retry(format!("request failed: {e}"), None);
        }
    };
    let status = answer.status();
    let retry_after = answer
        .headers()
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    // Read the answer so the connection can carry the next event; one too large is dropped.
    if Limited::new(answer.into_body(), MAX_ANSWER_BYTES)
        .collect()
        .await
        .is_err()
    {
        *conn = None;
    }
    match status.as_u16() {
        200..=299 => Attempt::Delivered,
        408 | 429 | 500..=599 => Attempt::Retry(format!("answered {status}"), retry_after),
        _ => Attempt::Refused(format!("answered {status}")),
    }
}

async fn connect(url: &WebhookUrl) -> Result<Sender, String> {
    let tcp = tokio::net::TcpStream::connect((url.host.as_str(), url.port))
        .await
        .map_err(|e| format!("cannot connect to {}: {e}", url.authority()))?;
    let _ = tcp.set_nodelay(true);
    if !url.https {
        return handshake(tcp).await;
    }
    let config = tls_config()?;
    let name = rustls::pki_types::ServerName::try_from(url.host.clone())
        .map_err(|e| format!("{}: not a TLS server name: {e}", url.host))?;
    let tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS with {}: {e}", url.authority()))?;
    handshake(tls).await
}

async fn handshake<T>(io: T) -> Result<Sender, String>
where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    // Ends when the sender is dropped or the receiver closes the connection.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// The TLS client configuration of every https webhook, made on first use.
fn tls_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(format!(
                    "no CA certificates found on this host to verify https webhooks ({} errors)",
                    found.errors.len()
                ));
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS configuration: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Ok(Arc::new(config))
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231, test case 2.
    #[test]
    fn signature_matches_the_rfc_4231_vector() {
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn backoff_doubles_within_its_jitter_and_is_capped() {
        assert_eq!(backoff(1, 0.999), Duration::from_micros(249_875));
        assert_eq!(backoff(1, 0.0), Duration::from_millis(125));
        assert_eq!(backoff(3, 0.0), Duration::from_millis(500));
        assert_eq!(backoff(3, 0.998), Duration::from_millis(999));
        assert_eq!(backoff(30, 0.0), MAX_BACKOFF / 2);
        for attempt in 1..40 {
            let b = backoff(attempt, 0.5);
            assert!(
                b <= MAX_BACKOFF && b >= FIRST_BACKOFF * 3 / 8,
                "{attempt}: {b:?}"
            );
        }
    }
}
