//! The retry loop, independent of the HTTP library: an attempt is any future that yields a
//! [`Reply`] or a transport error.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use crate::budget::RetryBudget;
use crate::policy::{RetryPolicy, Stop, Verdict, verdict};
use crate::problem::{Problem, retry_after};
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
    /// Set when the reply is a refusal the client stopped retrying, and why.
    pub stopped: Option<Stop>,
}

/// Every attempt failed in transport (no HTTP answer at all).
#[derive(Debug, thiserror::Error)]
#[error("no answer after {attempts} attempts ({stop:?}): {source}")]
pub struct Failed<E: std::error::Error + 'static> {
    #[source]
    pub source: E,
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
        }
    }

    /// Share one budget between clients, so a fleet's retries stay bounded together.
    pub fn with_budget(mut self, budget: Arc<RetryBudget>) -> Self {
        self.budget = budget;
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
    pub async fn run<F, Fut, E>(&self, mut attempt: F) -> Result<Answer, Failed<E>>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<Reply, E>>,
        E: std::error::Error + 'static,
    {
        self.budget.deposit(self.clock.now());
        let mut waits = Vec::new();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = attempt().await;
            let (server, last) = match outcome {
                Ok(reply) => {
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
                    let v = verdict(reply.status, retry_after(header), problem.as_ref());
                    let answer = |stopped| Answer {
                        reply: reply.clone(),
                        problem: problem.clone(),
                        attempts,
                        waits: waits.clone(),
                        stopped,
                    };
                    match v {
                        Verdict::Done => return Ok(answer(None)),
                        Verdict::Stop(stop) => return Ok(answer(Some(stop))),
                        Verdict::Retry(server) => (server, Ok(answer(None))),
                    }
                }
                Err(e) => (None, Err(e)),
            };
            let stop = if attempts >= self.policy.max_attempts {
                Some(Stop::Attempts)
            } else {
                None
            };
            let wait = self.policy.wait(
                attempts,
                server,
                self.jitter.uniform(self.policy.backoff(attempts)),
            );
            let stop = stop
                .or_else(|| (wait > self.policy.max_wait).then_some(Stop::WaitTooLong(wait)))
                .or_else(|| (!self.budget.withdraw(self.clock.now())).then_some(Stop::Budget));
            if let Some(stop) = stop {
                return match last {
                    Ok(mut answer) => {
                        answer.stopped = Some(stop);
                        Ok(answer)
                    }
                    Err(source) => Err(Failed {
                        source,
                        attempts,
                        waits,
                        stop,
                    }),
                };
            }
            self.sleeper.sleep(wait).await;
            waits.push(wait);
        }
    }
}
