//! Concurrency leases over Sluice's HTTP API (`docs/leases.md`, `clients/behaviour.md` §6):
//! acquire a slot in a pool, renew it while the work runs, release it when done. [`Leases::hold`]
//! releases when the work ends, also when it fails, and never lets a failed release hide the
//! work's own error.

use std::time::Duration;

use serde_json::{Value, json};

use crate::problem::{Problem, retry_after};

/// One descriptor: its entries as `(key, value)` pairs.
pub type Descriptor = Vec<(String, String)>;

/// A slot held in every pool the descriptors match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub id: String,
    pub ttl: Duration,
    pub domain: String,
    pub descriptors: Vec<Descriptor>,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    /// The pool stayed full (429): try again after `retry_after`.
    #[error("the pool is full; retry after {retry_after:?}")]
    Refused {
        retry_after: Option<Duration>,
        problem: Option<Problem>,
    },
    /// Any other status (400: no pool matched the descriptors).
    #[error("Sluice answered {status}: {body}")]
    Status { status: u16, body: String },
    #[error("no answer from Sluice: {0}")]
    Transport(#[from] reqwest::Error),
    #[error("Sluice's answer did not hold a lease: {0}")]
    Malformed(String),
}

/// The lease endpoints of one Sluice.
#[derive(Debug, Clone)]
pub struct Leases {
    http: reqwest::Client,
    base: String,
}

impl Leases {
    /// `base` is Sluice's HTTP address, e.g. `http://127.0.0.1:8080`.
    pub fn new(http: reqwest::Client, base: impl Into<String>) -> Self {
        let base = base.into().trim_end_matches('/').to_owned();
        Self { http, base }
    }

    /// Waits up to `wait` for a slot.
    pub async fn acquire(
        &self,
        domain: &str,
        descriptors: Vec<Descriptor>,
        wait: Duration,
    ) -> Result<Lease, LeaseError> {
        let mut body = request(domain, &descriptors);
        body["wait_ms"] = json!(wait.as_millis() as u64);
        let answer = self.post("acquire", &body).await?;
        granted(answer, domain, descriptors)
    }

    /// Extends the lease by its TTL from now.
    pub async fn renew(&self, lease: &Lease) -> Result<Lease, LeaseError> {
        let mut body = request(&lease.domain, &lease.descriptors);
        body["lease_id"] = json!(lease.id);
        let answer = self.post("renew", &body).await?;
        granted(answer, &lease.domain, lease.descriptors.clone())
    }

    /// Gives the slot back (releasing one nobody holds is not an error).
    pub async fn release(&self, lease: &Lease) -> Result<(), LeaseError> {
        let mut body = request(&lease.domain, &lease.descriptors);
        body["lease_id"] = json!(lease.id);
        self.post("release", &body).await.map(|_| ())
    }

    /// Runs `work` holding a lease and releases it afterwards, whatever `work` returned. A
    /// release that fails after `work` failed is dropped: the work's error is the one to see.
    pub async fn hold<T, E>(
        &self,
        domain: &str,
        descriptors: Vec<Descriptor>,
        wait: Duration,
        work: impl AsyncFnOnce(&Lease) -> Result<T, E>,
    ) -> Result<Result<T, E>, LeaseError> {
        let lease = self.acquire(domain, descriptors, wait).await?;
        let outcome = work(&lease).await;
        let released = self.release(&lease).await;
        match outcome {
            Ok(value) => released.map(|()| Ok(value)),
            Err(e) => Ok(Err(e)),
        }
    }

    async fn post(&self, action: &str, body: &Value) -> Result<Option<Value>, LeaseError> {
        let response = self
            .http
            .post(format!("{}/leases/{action}", self.base))
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await?;
        let status = response.status().as_u16();
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let (content_type, wait) = (
            header(http::header::CONTENT_TYPE),
            header(http::header::RETRY_AFTER),
        );
        let bytes = response.bytes().await?;
        match status {
            200 => Ok(serde_json::from_slice(&bytes).ok()),
            204 => Ok(None),
            429 => {
                let epoch = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap_or_default();
                Err(LeaseError::Refused {
                    retry_after: retry_after(wait.as_deref(), epoch),
                    problem: Problem::parse(content_type.as_deref(), &bytes),
                })
            }
            _ => Err(LeaseError::Status {
                status,
                body: String::from_utf8_lossy(&bytes).chars().take(512).collect(),
            }),
        }
    }
}

fn request(domain: &str, descriptors: &[Descriptor]) -> Value {
    let descriptors: Vec<Value> = descriptors
        .iter()
        .map(|d| {
            let entries: Vec<Value> = d
                .iter()
                .map(|(k, v)| json!({"key": k, "value": v}))
                .collect();
            json!({ "entries": entries })
        })
        .collect();
    json!({"domain": domain, "descriptors": descriptors})
}

fn granted(
    answer: Option<Value>,
    domain: &str,
    descriptors: Vec<Descriptor>,
) -> Result<Lease, LeaseError> {
    let answer = answer.ok_or_else(|| LeaseError::Malformed("no JSON body".into()))?;
    let id = answer["lease_id"]
        .as_str()
        .ok_or_else(|| LeaseError::Malformed("no lease_id".into()))?;
    let ttl = answer["ttl_seconds"]
        .as_u64()
        .ok_or_else(|| LeaseError::Malformed("no ttl_seconds".into()))?;
    Ok(Lease {
        id: id.to_owned(),
        ttl: Duration::from_secs(ttl),
        domain: domain.to_owned(),
        descriptors,
    })
}
