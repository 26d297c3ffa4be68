//! Pool queues through `RateLimiter::check_within`: who is granted, in which order, and when a
//! waiter gives up. Tokio's clock is paused, so waits take no real time and are exact.

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::clock::ManualClock;
use crate::config::parse_str;
use crate::storage::backend::memory::MemoryStore;

const RULES: &str = r#"
domain: d
descriptors:
  - key: pool
    value: uploads
    descriptors:
      - key: tenant
        rate_limit:
          concurrency: 1
          lease_ttl: 600
          weights: {heavy: 2}
          queue: {max_wait_ms: 5000, max_depth: 100}
  - key: small
    rate_limit: {concurrency: 1, queue: {max_wait_ms: 1000, max_depth: 2}}
  - key: rate
    rate_limit: {unit: hour, requests_per_unit: 1}
  - key: share
    rate_limit: {unit: second, capacity: 2, queue: {max_wait_ms: 3000, max_depth: 10}}
"#;

const T0: Duration = Duration::from_secs(1_700_000_000);

type Limiter = Arc<RateLimiter<Arc<MemoryStore>>>;

fn limiter() -> (Limiter, Arc<MemoryStore>) {
    limiter_on(Arc::new(ManualClock::new(T0)))
}

fn limiter_on(clock: Arc<ManualClock>) -> (Limiter, Arc<MemoryStore>) {
    let store = Arc::new(MemoryStore::new(10_000, clock));
    let limiter = RateLimiter::new(
        parse_str("rules.yaml", RULES).unwrap(),
        Arc::clone(&store),
        Arc::new(Metrics::new()),
        LimiterOptions::default(),
    )
    .with_top_consumers();
    (Arc::new(limiter), store)
}

fn desc(entries: &[(&str, &str)], lease: Option<&str>) -> Descriptor {
    let mut all: Vec<(String, String)> = entries
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    if let Some(id) = lease {
        all.push((LEASE_ENTRY.into(), id.into()));
    }
    Descriptor::from_parts(all, None, None, lease.is_some())
}

fn req(descriptors: Vec<Descriptor>) -> CheckRequest {
    CheckRequest {
        domain: "d".into(),
        descriptors,
        hits_addend: 0,
    }
}

fn tenant(t: &str) -> Vec<Descriptor> {
    vec![desc(&[("pool", "uploads"), ("tenant", t)], None)]
}

async fn release(l: &Limiter, entries: &[(&str, &str)], id: &str) {
    let d = l.check(&req(vec![desc(entries, Some(id))])).await.unwrap();
    assert_eq!(d.overall, Code::Ok);
}

/// Lets spawned waiters run until `depth` of them wait on the rule's queue.
async fn until_queued(l: &Limiter, rule: &str, depth: i64) {
    let labels = crate::metrics::RuleLabels {
        rule: crate::metrics::Shared(rule.into()),
    };
    for _ in 0..10_000 {
        if l.metrics.queues.waiting.get_or_create(&labels).get() == depth {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("{depth} waiters never queued");
}

#[tokio::test(start_paused = true)]
async fn backlogged_tenants_are_granted_by_weight() {
    let (l, _) = limiter();
    let first = l.check_within(&req(tenant("x")), None).await.unwrap();
    let mut holder = first.lease.unwrap().id.to_string();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for n in 0..40 {
        let (l, tx) = (Arc::clone(&l), tx.clone());
        let name = if n % 2 == 0 { "heavy" } else { "light" };
        tokio::spawn(async move {
            let d = l.check_within(&req(tenant(name)), None).await.unwrap();
            let _ = tx.send((name, d));
        });
    }
    until_queued(&l, "d.pool_uploads.tenant", 40).await;
    let mut heavy = 0;
    for _ in 0..30 {
        release(&l, &[("pool", "uploads"), ("tenant", "any")], &holder).await;
        let (name, d) = rx.recv().await.unwrap();
        assert_eq!(d.overall, Code::Ok);
        heavy += usize::from(name == "heavy");
        holder = d.lease.unwrap().id.to_string();
    }
    assert_eq!(heavy, 20, "weights 2:1 over 30 grants");
    // Who queued, per tenant, for the admin API.
    let top = l.top_consumers().unwrap();
    let (queued, total) = top.top("d.pool_uploads.tenant/queued", 5).unwrap();
    assert_eq!(total, 40);
    assert_eq!(queued[0].hits + queued[1].hits, 40);
    assert!(queued[0].descriptor.contains("tenant=heavy"), "{queued:?}");
}

#[tokio::test(start_paused = true)]
async fn a_waiter_is_refused_before_its_deadline_and_leaves_nothing() {
    let (l, store) = limiter();
    let held = l.check_within(&req(tenant("a")), None).await.unwrap();
    assert_eq!(held.overall, Code::Ok);
    let started = tokio::time::Instant::now();
    let d = l
        .check_within(&req(tenant("b")), Some(Duration::from_millis(300)))
        .await
        .unwrap();
    assert_eq!(d.overall, Code::OverLimit);
    assert!(d.rejection.is_some());
    let waited = started.elapsed();
    assert!(
        waited <= Duration::from_millis(300) && waited >= Duration::from_millis(280),
        "{waited:?}"
    );
    let key = l.store.holders_now(&pool_key(&l, "b"));
    assert_eq!(key.len(), 1, "only the first holder");
    // The queue is empty: the next release leaves the pool empty.
    release_held(&l, "a", &held).await;
    assert!(store.holders_now(&pool_key(&l, "a")).is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_request_another_limit_refuses_never_waits() {
    let (l, _) = limiter();
    l.check_within(&req(tenant("a")), None).await.unwrap();
    let rate = desc(&[("rate", "r")], None);
    l.check(&req(vec![rate.clone()])).await.unwrap();
    let started = tokio::time::Instant::now();
    let mut both = tenant("b");
    both.push(rate);
    let d = l.check_within(&req(both), None).await.unwrap();
    assert_eq!(d.overall, Code::OverLimit);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_waiter_is_withdrawn_and_never_granted() {
    let (l, store) = limiter();
    let held = l.check_within(&req(tenant("a")), None).await.unwrap();
    let waiter = {
        let l = Arc::clone(&l);
        tokio::spawn(async move { l.check_within(&req(tenant("b")), None).await })
    };
    until_queued(&l, "d.pool_uploads.tenant", 1).await;
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    until_queued(&l, "d.pool_uploads.tenant", 0).await;
    let withdrawn = l
        .metrics
        .queues
        .waits
        .get_or_create(&crate::metrics::OutcomeLabels {
            rule: crate::metrics::Shared("d.pool_uploads.tenant".into()),
            outcome: "withdrawn",
        })
        .get();
    assert_eq!(withdrawn, 1);
    // The withdrawal runs in the background: until the queue is empty. Then a release leaves
    // the pool empty.
    let policy = l
        .rules()
        .lookup("d", &[("pool", "uploads"), ("tenant", "a")])
        .unwrap()
        .limit
        .limits()[0]
        .policy();
    let nobody = crate::algorithm::queue::Op::Poll(crate::algorithm::lease::LeaseId([0; 16]));
    for _ in 0..10_000 {
        if store.queue_now(&pool_key(&l, "a"), &policy, &nobody).depth == 0 {
            break;
        }
        tokio::task::yield_now().await;
    }
    release_held(&l, "a", &held).await;
    assert!(store.holders_now(&pool_key(&l, "a")).is_empty());
}

async fn release_held(l: &Limiter, t: &str, held: &Decision) {
    let id = held.lease.unwrap().id.to_string();
    release(l, &[("pool", "uploads"), ("tenant", t)], &id).await;
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_refuses_at_once_and_check_does_not_wait() {
    let (l, _) = limiter();
    let small = || req(vec![desc(&[("small", "s")], None)]);
    assert_eq!(
        l.check_within(&small(), None).await.unwrap().overall,
        Code::Ok
    );
    for _ in 0..2 {
        let l = Arc::clone(&l);
        tokio::spawn(async move { l.check_within(&small(), None).await });
    }
    until_queued(&l, "d.small", 2).await;
    let started = tokio::time::Instant::now();
    let d = l.check_within(&small(), None).await.unwrap();
    assert_eq!(d.overall, Code::OverLimit, "the queue holds its 2");
    // Without a caller that waits, a request is granted only if nobody is ahead.
    assert_eq!(l.check(&small()).await.unwrap().overall, Code::OverLimit);
    assert_eq!(started.elapsed(), Duration::ZERO);
}

/// The counter key of the shared pool (its last level is named by its configured value, none).
fn pool_key(l: &Limiter, t: &str) -> Vec<u8> {
    let rules = l.rules();
    let rule = rules
        .lookup("d", &[("pool", "uploads"), ("tenant", t)])
        .unwrap();
    l.keys().counter_key_in(
        "d",
        [("pool", "uploads"), ("tenant", "")],
        &rule.limit.limits()[0].policy(),
        None,
    )
}

#[tokio::test(start_paused = true)]
async fn a_fair_share_request_waits_for_the_next_window() {
    let clock = Arc::new(ManualClock::new(T0));
    let (l, _) = limiter_on(Arc::clone(&clock));
    let share = || req(vec![desc(&[("share", "t")], None)]);
    for _ in 0..2 {
        assert_eq!(
            l.check_within(&share(), None).await.unwrap().overall,
            Code::Ok
        );
    }
    let waiter = {
        let l = Arc::clone(&l);
        tokio::spawn(async move { l.check_within(&share(), None).await })
    };
    until_queued(&l, "d.share", 1).await;
    // The window is spent: it waits until the store's clock reaches the next one.
    clock.advance(Duration::from_secs(1));
    let d = waiter.await.unwrap().unwrap();
    assert_eq!(d.overall, Code::Ok);
    // It was charged once: one unit of the new window is left.
    assert_eq!(
        l.check_within(&share(), None).await.unwrap().overall,
        Code::Ok
    );
    let d = l
        .check_within(&share(), Some(Duration::from_millis(100)))
        .await
        .unwrap();
    assert_eq!(d.overall, Code::OverLimit);
}
