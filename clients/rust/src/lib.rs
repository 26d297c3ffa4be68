//! A client for APIs that Sluice protects, directly (`POST /json`) or behind Envoy or NGINX,
//! that backs off the way the answers ask:
//!
//! - honours `Retry-After` and the RFC 9457 problem document's `retry_after`: a retry is never
//!   earlier than the server said;
//! - capped exponential back-off with full jitter (a uniform draw in `[0, min(cap, base × 2^n)]`,
//!   added on top of the server's wait), so a crowd of clients told the same thing spreads out;
//! - a [`RetryBudget`] shared by every client of a process: retries stay a bounded fraction of
//!   requests, so a fleet never turns an overload into a retry storm;
//! - no retry at all for a problem document of `kind: quota` (or a 402): a spent quota only comes
//!   back when its window resets, or with a payment;
//! - a wait longer than [`RetryPolicy::max_wait`] is handed back to the caller instead of slept;
//! - optional pacing ([`Pacer`]): the rate-limit headers, in any of Sluice's styles
//!   ([`RateView`]), set a local token bucket so that a well-behaved app rarely sees a 429;
//! - a [`WorkQueue`] releasing batch work at the paced rate, and a [`CircuitBreaker`] on
//!   consecutive transport failures;
//! - [`Leases`] for concurrency pools, with [`Leases::hold`] releasing when the work ends;
//! - a [`Reporter`] posting the latency and status of the app's calls to Sluice's `/reports`
//!   for adaptive limits, in batches, never on the call's path.
//!
//! The same behaviour, specified in `clients/behaviour.md` and replayed from
//! `clients/fixtures/behaviour.json`, holds in the Python and TypeScript clients beside this one.
//!
//! With the `opentelemetry` feature, `Backoff::with_telemetry` records each call as a span and
//! metrics (`Telemetry`, on the global providers or given ones); without it, nothing of
//! OpenTelemetry is compiled.
//!
//! Time, sleeping and chance are injected ([`Sleeper`], [`Clock`], [`Jitter`]; [`ManualClock`] and
//! [`FixedJitter`] are the doubles for tests and simulations) so tests prove the
//! timing without sleeping. [`Backoff::run`] works with any transport; [`Client`] wraps reqwest.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use sluice_client::{Backoff, Client, RetryPolicy};
//! let client = Client::new(reqwest::Client::new(), Backoff::new(RetryPolicy::default()));
//! let answer = client
//!     .send(|http| http.get("http://127.0.0.1:8000/orders").header("x-app-id", "demo"))
//!     .await?;
//! println!("{} after {} attempts", answer.reply.status, answer.attempts);
//! # Ok(()) }
//! ```

mod breaker;
mod budget;
mod leases;
mod pacer;
mod policy;
mod problem;
mod queue;
mod rate_headers;
mod reports;
mod retry;
mod runtime;
#[cfg(feature = "opentelemetry")]
mod telemetry;

pub use breaker::{BreakerState, CircuitBreaker, OnChange};
pub use budget::RetryBudget;
pub use leases::{Descriptor, Lease, LeaseError, Leases};
pub use pacer::{Pacer, PacerSettings};
pub use policy::{RetryPolicy, Stop, Verdict, verdict};
pub use problem::{Kind, MAX_SECONDS, Problem, retry_after};
pub use queue::{QueueFull, Taken, WorkQueue};
pub use rate_headers::RateView;
pub use reports::{
    MAX_BATCH, MAX_ENTRIES, MAX_LATENCY_MS, Recorded, Report, ReportCounts, Reporter,
    ReporterSettings,
};
pub use retry::{Answer, Backoff, Failed, Reply};
pub use runtime::{
    Clock, FixedJitter, Jitter, ManualClock, RandomJitter, Sleep, Sleeper, SystemClock,
    TokioSleeper,
};
#[cfg(feature = "opentelemetry")]
pub use telemetry::Telemetry;

/// [`Backoff`] over a `reqwest::Client`.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    backoff: Backoff,
}

impl Client {
    pub fn new(http: reqwest::Client, backoff: Backoff) -> Self {
        Self { http, backoff }
    }

    /// Sends the request `build` makes (once per attempt), retrying as the answers ask.
    pub async fn send(
        &self,
        build: impl Fn(&reqwest::Client) -> reqwest::RequestBuilder,
    ) -> Result<Answer, Failed<reqwest::Error>> {
        self.backoff
            .run(|| {
                let request = build(&self.http);
                async move {
                    let response = request.send().await?;
                    let status = response.status().as_u16();
                    let headers = response.headers().clone();
                    let body = response.bytes().await?;
                    Ok(Reply {
                        status,
                        headers,
                        body,
                    })
                }
            })
            .await
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests;
