//! The retry loop, independent of the HTTP library: an attempt is any future that yields a
//! [`Reply`] or a transport error.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use crate::breaker::CircuitBreaker;
use crate::budget::RetryBudget;
use crate::pacer::Pacer;
use crate::policy::{RetryPolicy, Stop, Verdict, verdict};
use crate::problem::{Problem, retry_after};
use crate::rate_headers::RateView;
use crate::runtime::{Clock, Jitter, RandomJitter, Sleeper, SystemClock, TokioSleeper};

/// One HTTP answer.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// The answer handed back: the last reply, what it said, and how the client got there.
#[derive(Debug, Clone)]
pub struct Answer {
    pub reply: Reply,
    /// The problem document of a refusal, when it had one.
    pub problem: Option<Problem>,
    /// Attempts made, the first included.
    pub attempts: u32,
    /// Every wait made before a retry, in order.
    pub waits: Vec<Duration>,
    /// The minimum the server asked for before each retry (`Retry-After` or the problem
    /// document's `retry_after`), beside `waits`.
    pub asked: Vec<Option<Duration>>,
    /// The time spent waiting for pacing slots, retries included.
    pub paced: Duration,
    /// Set when the reply is a refusal the client stopped retrying, and why.
    pub stopped: Option<Stop>,
}

/// No HTTP answer to hand back: every attempt failed in transport, or none could be sent (the
/// breaker is open, or pacing asked for more than `max_wait`).
#[derive(Debug, thiserror::Error)]
#[error("no answer after {attempts} attempts ({stop:?})")]
pub struct Failed<E: std::error::Error + 'static> {
    /// The last transport error; `None` when nothing was sent.
    #[source]
    pub source: Option<E>,
    pub attempts: u32,
    pub waits: Vec<Duration>,
    pub stop: Stop,
}

/// Retries attempts the way Sluice's answers ask. Cheap to clone; clones share the budget.
#[derive(Clone)]
pub struct Backoff {
    pub policy: RetryPolicy,
    budget: Arc<RetryBudget>,
    sleeper: Arc<dyn Sleeper>,
    clock: Arc<dyn Clock>,
    jitter: Arc<dyn Jitter>,
    pacer: Option<Arc<Pacer>>,
    breaker: Option<Arc<CircuitBreaker>>,
    #[cfg(feature = "opentelemetry")]
    telemetry: Option<crate::telemetry::Telemetry>,
}

impl Backoff {
    /// Tokio's sleep, the system clock, random jitter and a budget of its own.
    pub fn new(policy: RetryPolicy) -> Self {
        Self {
            policy,
            budget: Arc::new(RetryBudget::default()),
            sleeper: Arc::new(TokioSleeper),
            clock: Arc::new(SystemClock::default()),
            jitter: Arc::new(RandomJitter::default()),
            pacer: None,
            breaker: None,
            #[cfg(feature = "opentelemetry")]
            telemetry: None,
        }
    }

    /// Pace every attempt with this pacer (share it between the clients of one API).
    pub fn with_pacer(mut self, pacer: Arc<Pacer>) -> Self {
        self.pacer = Some(pacer);
        self
    }

    /// Fail at once while this breaker is open.
    pub fn with_breaker(mut self, breaker: Arc<CircuitBreaker>) -> Self {
        self.breaker = Some(breaker);
        self
    }

    /// Share one budget between clients, so a fleet's retries stay bounded together.
    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = budget;
        self
    }

    /// Record every call as a span and metrics (`clients/behaviour.md` §7).
    #[cfg(feature = "opentelemetry")]
    pub fn with_telemetry(mut self, telemetry: crate::telemetry::Telemetry) -> Self {
        self.telemetry = Some(telemetry);
        self
    }

    pub fn with_sleeper(mut self, sleeper: Arc<dyn Sleeper>) -> Self {
        self.sleeper = sleeper;
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_jitter(mut self, jitter: Arc<dyn Jitter>) -> Self {
        self.jitter = jitter;
        self
    }

    /// Runs `attempt` until it succeeds, is refused for good, or the policy or budget says stop.
    pub async fn run<F, Fut, E>(&self, attempt: F) -> Result<Answer, Failed<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Reply, E>>,
        E: std::error::Error + 'static,
    {
        #[cfg(feature = "opentelemetry")]
        if let Some(t) = &self.telemetry {
            return t.record(self.attempts(attempt)).await;
        }
        self.attempts(attempt).await
    }

    async fn attempts<F, Fut, E>(&self, mut attempt: F) -> Result<Answer, Failed<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Reply, E>>,
        E: std::error::Error + 'static,
    {
        self.budget.deposit(self.clock.now());
        let mut waits = Vec::new();
        let mut asked = Vec::new();
        let mut paced = Duration::ZERO;
        let mut attempts = 0;
        let mut last: Option<Result<Answer, E>> = None;
        loop {
            if let Some(stop) = self.admit(&mut paced).await {
                return match last {
                    Some(Ok(mut answer)) => {
                        answer.stopped = Some(stop);
                        Ok(answer)
                    }
                    Some(Err(e)) => Err(Failed {
                        source: Some(e),
                        attempts,
                        waits,
                        stop,
                    }),
                    None => Err(Failed {
                        source: None,
                        attempts,
                        waits,
                        stop,
                    }),
                };
            }
            attempts += 1;
            let outcome = attempt().await;
            let now = self.clock.now();
            let (server, pending) = match outcome {
                Ok(reply) => {
                    if let Some(b) = &self.breaker {
                        b.success(now);
                    }
                    let problem = Problem::parse(
                        reply
                            .headers
                            .get(http::header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok()),
                        &reply.body,
                    );
                    let header = reply
                        .headers
                        .get(http::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok());
                    let v = verdict(
                        reply.status,
                        retry_after(header, self.clock.epoch()),
                        problem.as_ref(),
                    );
                    if let Some(p) = &self.pacer {
                        if let Some(view) = RateView::read(&reply.headers) {
                            p.observe(&view, now);
                        }
                        if let Verdict::Retry(server) = v
                            && matches!(reply.status, 429 | 503)
                        {
                            p.refused(server, now);
                        }
                    }
                    let answer = |stopped| Answer {
                        reply,
                        problem,
                        attempts,
                        waits: waits.clone(),
                        asked: asked.clone(),
                        paced,
                        stopped,
                    };
                    match v {
                        Verdict::Done => return Ok(answer(None)),
                        Verdict::Stop(stop) => return Ok(answer(Some(stop))),
                        Verdict::Retry(server) => (server, Ok(answer(None))),
                    }
                }
                Err(e) => {
                    if let Some(b) = &self.breaker {
                        b.failure(now);
                    }
                    (None, Err(e))
                }
            };
            let wait = self.policy.wait(
                attempts,
                server,
                self.jitter.uniform(self.policy.backoff(attempts)),
            );
            let stop = if attempts >= self.policy.max_attempts {
                Some(Stop::Attempts)
            } else if wait > self.policy.max_wait {
                Some(Stop::WaitTooLong(wait))
            } else if !self.budget.withdraw(self.clock.now()) {
                Some(Stop::Budget)
            } else {
                None
            };
            if let Some(stop) = stop {
                return match pending {
                    Ok(mut answer) => {
                        answer.stopped = Some(stop);
                        answer.paced = paced;
                        Ok(answer)
                    }
                    Err(source) => Err(Failed {
                        source: Some(source),
                        attempts,
                        waits,
                        stop,
                    }),
                };
            }
            last = Some(pending);
            self.sleep(wait).await;
            waits.push(wait);
            asked.push(server);
        }
    }

    /// Before an attempt: the breaker's leave and the pacer's slot (slept here).
    async fn admit(&self, paced: &mut Duration) -> Option<Stop> {
        let now = self.clock.now();
        if let Some(b) = &self.breaker
            && !b.allow(now)
        {
            return Some(Stop::CircuitOpen);
        }
        if let Some(p) = &self.pacer {
            let wait = p.reserve(now);
            if wait > self.policy.max_wait {
                return Some(Stop::WaitTooLong(wait));
            }
            if !wait.is_zero() {
                self.sleep(wait).await;
                *paced += wait;
            }
        }
        None
    }

    async fn sleep(&self, wait: Duration) {
        self.sleeper.sleep(wait).await;
        #[cfg(feature = "opentelemetry")]
        if let Some(t) = &self.telemetry {
            t.slept(wait);
        }
    }
}
