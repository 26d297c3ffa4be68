//! Steady gRPC load for fault-injection tests: a few workers send checks in turn at a fixed pace
//! while the test breaks Redis, and every answer is recorded with its latency, so the test can
//! judge each phase of the fault on its own.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use tokio::sync::Mutex;

/// What one check got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Ok,
    OverLimit,
    /// gRPC UNAVAILABLE.
    Unavailable,
    /// Anything else (the gRPC code, or the unknown overall code + 100): always a failure of
    /// the test.
    Error(i32),
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    /// When the check was sent.
    pub at: Instant,
    pub latency: Duration,
    /// Which of the load's requests it was.
    pub request: usize,
    pub answer: Answer,
}

/// Load running in the background until [`Load::stop`].
pub struct Load {
    stop: Arc<AtomicBool>,
    samples: Arc<Mutex<Vec<Sample>>>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    /// `workers` tasks, each sending one of `requests` (in turn) every `every`, over its own
    /// connection, for at most `limit` (a bound in case the test never stops it).
    pub async fn start(
        addr: SocketAddr,
        requests: Vec<RateLimitRequest>,
        workers: usize,
        every: Duration,
        limit: Duration,
    ) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let samples = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(requests);
        let deadline = Instant::now() + limit;
        let mut handles = Vec::new();
        for w in 0..workers {
            let client = RateLimitServiceClient::connect(format!("http://{addr}"))
                .await
                .expect("connect gRPC");
            let (stop, samples, requests) = (stop.clone(), samples.clone(), requests.clone());
            handles.push(tokio::spawn(async move {
                let mut client = client;
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut i = w;
                while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                    tick.tick().await;
                    let request = i % requests.len();
                    i += workers;
                    let at = Instant::now();
                    let result = client.should_rate_limit(requests[request].clone()).await;
                    let latency = at.elapsed();
                    let answer = match result {
                        Ok(r) => match r.into_inner().overall_code {
                            1 => Answer::Ok,
                            2 => Answer::OverLimit,
                            other => Answer::Error(100 + other),
                        },
                        Err(s) if s.code() == tonic::Code::Unavailable => Answer::Unavailable,
                        Err(s) => {
                            eprintln!("check failed: {s:?}");
                            Answer::Error(s.code() as i32)
                        }
                    };
                    samples.lock().await.push(Sample {
                        at,
                        latency,
                        request,
                        answer,
                    });
                }
            }));
        }
        Self {
            stop,
            samples,
            workers: handles,
        }
    }

    /// Stops the workers and returns every sample, in sending order.
    pub async fn stop(self) -> Vec<Sample> {
        self.stop.store(true, Ordering::Relaxed);
        for w in self.workers {
            let _ = w.await;
        }
        let mut samples = std::mem::take(&mut *self.samples.lock().await);
        samples.sort_by_key(|s| s.at);
        samples
    }
}

/// p50, p99 and max latency of `samples`, in milliseconds.
pub fn percentiles(samples: &[Sample]) -> (f64, f64, f64) {
    if samples.is_empty() {
        return (0.0, 0.0, 0.0);
    }
    let mut ms: Vec<f64> = samples
        .iter()
        .map(|s| s.latency.as_secs_f64() * 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() - 1) as f64 * q).round() as usize];
    (at(0.5), at(0.99), ms[ms.len() - 1])
}

/// The samples sent between `from` and `to`.
pub fn between(samples: &[Sample], from: Instant, to: Instant) -> Vec<Sample> {
    samples
        .iter()
        .filter(|s| s.at >= from && s.at < to)
        .copied()
        .collect()
}
