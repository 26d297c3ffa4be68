//! The retry loop against scripted replies, with a manual clock that only the sleeper moves, so
//! every wait is checked exactly and nothing really sleeps.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::HeaderMap;

use super::*;

fn reply(status: u16, retry_after: Option<u64>, problem: Option<&str>) -> Reply {
    let mut headers = HeaderMap::new();
    if let Some(s) = retry_after {
        headers.insert(http::header::RETRY_AFTER, s.into());
    }
    let body = match problem {
        Some(p) => {
            headers.insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/problem+json"),
            );
            Bytes::from(p.to_owned())
        }
        None => Bytes::new(),
    };
    Reply {
        status,
        headers,
        body,
    }
}

#[derive(Debug, thiserror::Error)]
#[error("connection refused")]
struct Refused;

fn backoff(time: &Arc<ManualClock>, jitter: f64) -> Backoff {
    Backoff::new(RetryPolicy {
        max_attempts: 4,
        base: Duration::from_millis(100),
        cap: Duration::from_millis(300),
        max_wait: Duration::from_secs(60),
    })
    .with_sleeper(time.clone())
    .with_clock(time.clone())
    .with_jitter(Arc::new(FixedJitter(jitter)))
}

async fn run_script(
    b: &Backoff,
    script: Vec<Result<Reply, Refused>>,
) -> Result<Answer, Failed<Refused>> {
    let script = Mutex::new(VecDeque::from(script));
    b.run(|| {
        let next = script
            .lock()
            .unwrap()
            .pop_front()
            .expect("script long enough");
        async move { next }
    })
    .await
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

#[tokio::test]
async fn waits_what_the_server_asks_plus_jitter_then_backs_off() {
    let time = Arc::new(ManualClock::default());
    let b = backoff(&time, 0.5);
    let throttle = r#"{"status":429,"kind":"throttle","retry_after":2}"#;
    let answer = run_script(
        &b,
        vec![
            Ok(reply(429, Some(1), Some(throttle))),
            Ok(reply(503, None, None)),
            Err(Refused),
            Ok(reply(200, None, None)),
        ],
    )
    .await
    .unwrap();
    assert_eq!(answer.reply.status, 200);
    assert_eq!(answer.attempts, 4);
    assert_eq!(answer.stopped, None);
    // Retry 1: the later of Retry-After (1 s) and the document's retry_after (2 s), plus half of
    // the 100 ms back-off. Retry 2: half of 200 ms. Retry 3: half of 300 ms (capped, not 400).
    let want = vec![ms(2050), ms(100), ms(150)];
    assert_eq!(answer.waits, want);
    assert_eq!(time.slept(), want);
    assert_eq!(time.now(), ms(2300));
}

#[tokio::test]
async fn full_jitter_spans_zero_to_the_capped_backoff() {
    for (fraction, want) in [(0.0, [0, 0, 0]), (1.0, [100, 200, 300])] {
        let time = Arc::new(ManualClock::default());
        let answer = run_script(
            &backoff(&time, fraction),
            (0..4).map(|_| Ok(reply(503, None, None))).collect(),
        )
        .await
        .unwrap();
        assert_eq!(answer.attempts, 4);
        assert_eq!(answer.stopped, Some(Stop::Attempts));
        assert_eq!(answer.waits, want.map(ms).to_vec());
    }
}

#[tokio::test]
async fn never_retries_a_quota() {
    let time = Arc::new(ManualClock::default());
    let b = backoff(&time, 0.5);
    let quota = r#"{"status":429,"kind":"quota","retry_after":3,"rule":"org-daily"}"#;
    let answer = run_script(&b, vec![Ok(reply(429, Some(3), Some(quota)))])
        .await
        .unwrap();
    assert_eq!(answer.attempts, 1);
    assert_eq!(answer.stopped, Some(Stop::Quota));
    assert_eq!(answer.problem.unwrap().rule.as_deref(), Some("org-daily"));
    let answer = run_script(&b, vec![Ok(reply(402, Some(3), None))])
        .await
        .unwrap();
    assert_eq!((answer.attempts, answer.stopped), (1, Some(Stop::Quota)));
    assert!(time.slept().is_empty());
    assert_eq!(time.now(), Duration::ZERO);
}

#[tokio::test]
async fn hands_back_waits_longer_than_max_wait_and_non_retryable_statuses() {
    let time = Arc::new(ManualClock::default());
    let b = backoff(&time, 0.5);
    let answer = run_script(&b, vec![Ok(reply(429, Some(3600), None))])
        .await
        .unwrap();
    assert_eq!(
        answer.stopped,
        Some(Stop::WaitTooLong(Duration::from_secs(3600) + ms(50)))
    );
    let answer = run_script(&b, vec![Ok(reply(403, None, None))])
        .await
        .unwrap();
    assert_eq!(answer.stopped, Some(Stop::NotRetryable));
    assert!(time.slept().is_empty());
}

#[tokio::test]
async fn transport_failures_are_retried_then_reported() {
    let time = Arc::new(ManualClock::default());
    let failed = run_script(&backoff(&time, 1.0), (0..4).map(|_| Err(Refused)).collect())
        .await
        .unwrap_err();
    assert_eq!(failed.attempts, 4);
    assert_eq!(failed.stop, Stop::Attempts);
    assert_eq!(failed.waits, vec![ms(100), ms(200), ms(300)]);
}

/// Forty clients sharing one budget, every answer a 503: retries stay within what the budget
/// allows (its initial reserve plus 10 % of requests), instead of three per request.
#[tokio::test]
async fn a_shared_budget_bounds_a_fleets_retries() {
    let time = Arc::new(ManualClock::default());
    let budget = Arc::new(RetryBudget::new(0.1, 0.0, 5.0));
    let mut retries = 0;
    let requests = 40;
    for _ in 0..requests {
        let b = backoff(&time, 0.5).with_budget(Arc::clone(&budget));
        let answer = run_script(&b, (0..4).map(|_| Ok(reply(503, None, None))).collect())
            .await
            .unwrap();
        retries += answer.attempts - 1;
    }
    // At most the 5 saved up plus 40 × 0.1 earned, where without a budget it would be 120. It is
    // one less: the first request's tenth is lost to a budget that is still full.
    assert!(retries <= 5 + 4);
    assert_eq!(retries, 8);
}

fn ietf(status: u16, remaining: u64) -> Reply {
    let mut r = reply(status, None, None);
    r.headers.insert(
        "ratelimit-policy",
        http::HeaderValue::from_static("\"per-app\";q=10;w=1"),
    );
    r.headers.insert(
        "ratelimit",
        http::HeaderValue::from_str(&format!("\"per-app\";r={remaining};t=1")).unwrap(),
    );
    r
}

#[tokio::test]
async fn pacing_spaces_calls_at_the_learned_rate_and_holds_after_a_refusal() {
    let time = Arc::new(ManualClock::default());
    let pacer = Arc::new(Pacer::new(PacerSettings {
        safety: 0.8,
        ..PacerSettings::default()
    }));
    let b = backoff(&time, 0.5).with_pacer(pacer.clone());
    // Nothing known yet: the first call goes at once and teaches 10 a second.
    let first = run_script(&b, vec![Ok(ietf(200, 9))]).await.unwrap();
    assert_eq!(first.paced, Duration::ZERO);
    // The second takes the next slot at once; the third waits 1000 / (10 × 0.8) = 125 ms.
    let second = run_script(&b, vec![Ok(ietf(200, 8))]).await.unwrap();
    assert_eq!(second.paced, Duration::ZERO);
    let third = run_script(&b, vec![Ok(ietf(200, 7))]).await.unwrap();
    assert_eq!(third.paced, ms(125));
    // The fourth is paced too (125 ms), refused with Retry-After 2 at 250 ms: every call is held
    // until 2.25 s and the rate halves. The retry sleeps its back-off (2 s + 50 ms) and needs no
    // further pacing wait.
    let fourth = run_script(&b, vec![Ok(reply(429, Some(2), None)), Ok(ietf(200, 5))])
        .await
        .unwrap();
    assert_eq!((fourth.reply.status, fourth.attempts), (200, 2));
    assert_eq!(fourth.waits, vec![ms(2050)]);
    assert_eq!(fourth.paced, ms(125));
    assert_eq!(time.now(), ms(2300));
    // Two whole windows since the refusal relaxed the factor from 0.5 to 0.7: the next slot is
    // 1000 / (10 × 0.8 × 0.7) ≈ 178.6 ms after the retry.
    let fifth = run_script(&b, vec![Ok(ietf(200, 4))]).await.unwrap();
    let gap = fifth.paced.as_secs_f64() * 1000.0;
    assert!((gap - 1000.0 / 5.6).abs() < 0.01, "{gap}");
}

#[tokio::test]
async fn a_pacing_wait_beyond_max_wait_sends_nothing() {
    let time = Arc::new(ManualClock::default());
    let pacer = Arc::new(Pacer::default());
    // Spent until its window resets in 120 s.
    pacer.observe(
        &RateView {
            limit: Some(10),
            remaining: Some(0),
            reset_s: Some(120),
            window_s: Some(120),
        },
        Duration::ZERO,
    );
    let b = backoff(&time, 0.5).with_pacer(pacer);
    let failed = run_script(&b, vec![]).await.unwrap_err();
    assert_eq!(failed.attempts, 0);
    assert_eq!(failed.stop, Stop::WaitTooLong(Duration::from_secs(120)));
    assert!(failed.source.is_none());
    assert!(time.slept().is_empty());
}

#[tokio::test]
async fn an_open_breaker_fails_at_once_then_lets_one_trial_through() {
    let time = Arc::new(ManualClock::default());
    let changes = Arc::new(Mutex::new(Vec::new()));
    let seen = changes.clone();
    let breaker = Arc::new(
        CircuitBreaker::new(2, Duration::from_secs(5)).on_change(Box::new(move |from, to| {
            seen.lock().unwrap().push((from, to))
        })),
    );
    let mut b = backoff(&time, 0.0).with_breaker(breaker.clone());
    b.policy.max_attempts = 3;
    // Two transport failures in a row open it; the third attempt is never made.
    let failed = run_script(&b, vec![Err(Refused), Err(Refused)])
        .await
        .unwrap_err();
    assert_eq!((failed.attempts, failed.stop), (2, Stop::CircuitOpen));
    assert!(failed.source.is_some());
    assert_eq!(breaker.state(), BreakerState::Open);
    // Still open: nothing is sent.
    let failed = run_script(&b, vec![]).await.unwrap_err();
    assert_eq!((failed.attempts, failed.stop), (0, Stop::CircuitOpen));
    // After 5 s one trial goes out; its answer closes the breaker.
    time.advance(Duration::from_secs(5));
    let answer = run_script(
        &b,
        vec![Ok(reply(503, None, None)), Ok(reply(200, None, None))],
    )
    .await
    .unwrap();
    assert_eq!((answer.reply.status, answer.attempts), (200, 2));
    use BreakerState::{Closed, HalfOpen, Open};
    assert_eq!(
        *changes.lock().unwrap(),
        vec![(Closed, Open), (Open, HalfOpen), (HalfOpen, Closed)]
    );
}
