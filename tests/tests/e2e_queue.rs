//! End-to-end: concurrency pools with a queue, through the real `sluice` binary. Waiters are
//! granted in weighted fair order as slots free (weights 2:1 give grants 2:1), on one replica with
//! the memory store and across three replicas sharing a real redis-server; a waiter whose deadline
//! comes first is refused in time for it (gRPC `grpc-timeout`, HTTP `x-sluice-wait-ms` and
//! `wait_ms`); a cancelled call's ticket is withdrawn, so no lease goes to a caller that is gone;
//! a replica killed with waiters queued leaves nothing held once its tickets and leases expire;
//! and a pool without a queue still refuses at once.
//!
//! The tests take turns ([`SERIAL`]): each bounds how late an answer may arrive to 20 ms past its
//! deadline, which other tests' replicas starting on the same cores would make a measure of the
//! machine rather than of the queue.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::Entry;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_client::RateLimitServiceClient;
use envoy_types::pb::google::protobuf::value::Kind;
use prost::Message;
use serde_json::{Value, json};
use sluice_tests::redis::RedisServer;
use sluice_tests::rls::{OK, OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::{Sluice, sample_of};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

type Client = RateLimitServiceClient<Channel>;
type Entries = &'static [(&'static str, &'static str)];

const DOMAIN: &str = "q";
const RULES: &str = r#"
domain: q
descriptors:
  - key: pool
    value: uploads
    descriptors:
      - key: tenant
        rate_limit:
          concurrency: 3
          lease_ttl: 60
          weights: {heavy: 2}
          queue: {max_wait_ms: 30000, max_depth: 500}
  - key: pool
    value: short
    rate_limit:
      concurrency: 2
      lease_ttl: 2
      queue: {max_wait_ms: 8000, max_depth: 100}
  - key: pool
    value: plain
    rate_limit: {concurrency: 1, lease_ttl: 60}
  - key: share
    rate_limit:
      unit: second
      capacity: 2
      queue: {max_wait_ms: 8000, max_depth: 100}
"#;

/// The weighted pool's tenants: `heavy` has weight 2, the others the default 1. All share the
/// pool's 3 slots.
const HEAVY: Entries = &[("pool", "uploads"), ("tenant", "heavy")];
const LIGHT: Entries = &[("pool", "uploads"), ("tenant", "light")];
const FILLER: Entries = &[("pool", "uploads"), ("tenant", "filler")];
/// Two slots, leases of 2 s, one tenant.
const SHORT: Entries = &[("pool", "short")];
/// One slot and no queue.
const PLAIN: Entries = &[("pool", "plain")];
/// A fair-share pool of 2 units a second, with a queue.
const SHARE: Entries = &[("share", "t")];

/// The pools' rules, as metrics label them.
const UPLOADS_RULE: &str = "q.pool_uploads.tenant";
const SHORT_RULE: &str = "q.pool_short";
const PLAIN_RULE: &str = "q.pool_plain";

/// How late past its deadline a waiter's answer may reach the client.
const LATE: Duration = Duration::from_millis(20);
/// Long enough never to run out while the test hands slots out.
const GENEROUS: Duration = Duration::from_secs(20);

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn check(
    client: &mut Client,
    entries: Entries,
    deadline: Option<Duration>,
) -> Result<RateLimitResponse, tonic::Status> {
    let mut call = tonic::Request::new(request(DOMAIN, vec![descriptor(entries)]));
    if let Some(deadline) = deadline {
        call.set_timeout(deadline);
    }
    client
        .should_rate_limit(call)
        .await
        .map(tonic::Response::into_inner)
}

fn header<'r>(r: &'r RateLimitResponse, name: &str) -> Option<&'r str> {
    r.response_headers_to_add
        .iter()
        .find(|h| h.key.eq_ignore_ascii_case(name))
        .map(|h| h.value.as_str())
}

/// The lease an OK answer holds: the id in the header and in the dynamic metadata, which agree.
fn lease_of(r: &RateLimitResponse) -> String {
    assert_eq!(r.overall_code, OK, "{r:?}");
    let id = header(r, "x-sluice-lease-id").unwrap_or_else(|| panic!("no lease id: {r:?}"));
    assert_eq!(id.len(), 32, "{id}");
    let metadata = r.dynamic_metadata.as_ref().expect("dynamic metadata");
    assert_eq!(
        metadata.fields["lease_id"].kind,
        Some(Kind::StringValue(id.to_owned())),
        "{r:?}"
    );
    id.to_owned()
}

/// Takes a slot that is free now.
async fn hold(client: &mut Client, entries: Entries) -> String {
    let reply = check(client, entries, None).await.expect("a decision");
    lease_of(&reply)
}

/// Releases a lease as the filter does at stream end: the id entry and `is_negative_hits`.
async fn release(client: &mut Client, entries: Entries, id: &str) {
    let mut d = descriptor(entries);
    d.entries.push(Entry {
        key: "sluice.lease_id".into(),
        value: id.to_owned(),
    });
    d.is_negative_hits = true;
    let reply = client
        .should_rate_limit(request(DOMAIN, vec![d]))
        .await
        .expect("release")
        .into_inner();
    assert_eq!(reply.overall_code, OK, "{reply:?}");
}

fn body(entries: Entries) -> Value {
    let entries: Vec<Value> = entries
        .iter()
        .map(|(k, v)| json!({"key": k, "value": v}))
        .collect();
    json!({"domain": DOMAIN, "descriptors": [{"entries": entries}]})
}

/// Leases in use in `entries`'s pool, from `POST /leases/holders`.
async fn in_use(sluice: &Sluice, entries: Entries) -> u64 {
    let reply: Value = reqwest::Client::new()
        .post(sluice.url("/leases/holders"))
        .json(&body(entries))
        .send()
        .await
        .expect("holders")
        .json()
        .await
        .expect("JSON");
    reply["pools"][0]["in_use"]
        .as_u64()
        .unwrap_or_else(|| panic!("no in_use: {reply}"))
}

/// One sample summed over replicas.
async fn total(replicas: &[&Sluice], sample: &str) -> f64 {
    let mut sum = 0.0;
    for r in replicas {
        sum += sample_of(&r.metrics().await, sample);
    }
    sum
}

fn waiting(rule: &str) -> String {
    format!("sluice_queue_waiting{{rule=\"{rule}\"}}")
}

fn waits(rule: &str, outcome: &str) -> String {
    format!("sluice_queue_waits_total{{rule=\"{rule}\",outcome=\"{outcome}\"}}")
}

fn grants(rule: &str, weight: u32) -> String {
    format!("sluice_queue_grants_total{{rule=\"{rule}\",weight=\"{weight}\"}}")
}

/// Polls `done` until it holds, failing after `within`.
async fn eventually(what: &str, within: Duration, mut done: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !done().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The keys of the queues in `redis`: `K|q` (the tickets), `K|qd`, `K|qt`, `K|qv`.
fn queue_keys(redis: &RedisServer) -> Vec<String> {
    redis
        .keys()
        .into_iter()
        .filter(|k| ["|q", "|qd", "|qt", "|qv"].iter().any(|s| k.ends_with(s)))
        .collect()
}

/// Tickets queued in `redis`.
fn tickets_in_redis(redis: &RedisServer) -> u64 {
    queue_keys(redis)
        .iter()
        .filter(|k| k.ends_with("|q"))
        .map(|k| {
            redis
                .cli(&["ZCARD", k])
                .trim()
                .parse::<u64>()
                .expect("ZCARD")
        })
        .sum()
}

/// How one waiter's call ended.
#[derive(Debug)]
struct Answer {
    entries: Entries,
    replica: usize,
    /// The decision, or why there was none.
    reply: Result<RateLimitResponse, String>,
    took: Duration,
    deadline: Duration,
}

impl Answer {
    fn tenant(&self) -> &'static str {
        self.entries.last().map_or("", |e| e.1)
    }

    /// Answered by the server (no `DEADLINE_EXCEEDED` or other error), and in time.
    fn in_time(&self) -> &RateLimitResponse {
        let reply = self
            .reply
            .as_ref()
            .unwrap_or_else(|e| panic!("the server did not answer: {e:?} ({self:?})"));
        assert!(
            self.took <= self.deadline + LATE,
            "answered {:?} after a deadline of {:?}",
            self.took,
            self.deadline
        );
        reply
    }
}

/// A call that queues in `entries`'s pool on `replica`; its answer goes to `answers`.
fn wait_in_queue(
    client: &Client,
    replica: usize,
    entries: Entries,
    deadline: Duration,
    answers: &mpsc::UnboundedSender<Answer>,
) -> JoinHandle<()> {
    let (mut client, answers) = (client.clone(), answers.clone());
    tokio::spawn(async move {
        let started = Instant::now();
        let reply = check(&mut client, entries, Some(deadline))
            .await
            .map_err(|e| format!("{e:?}"));
        let _ = answers.send(Answer {
            entries,
            replica,
            reply,
            took: started.elapsed(),
            deadline,
        });
    })
}

/// A call that queues in `entries`'s pool on the replica at `addr`, over a plain HTTP/2 client
/// that sends the `grpc-timeout` of `deadline` but does not enforce it. tonic cancels a call at
/// its deadline, so an answer a little late would show up as a `CANCELLED` of the client's own
/// making; here it arrives, and how late it is is measured.
fn wait_unenforced(
    addr: SocketAddr,
    replica: usize,
    entries: Entries,
    deadline: Duration,
    answers: &mpsc::UnboundedSender<Answer>,
) -> JoinHandle<()> {
    let answers = answers.clone();
    tokio::spawn(async move {
        let tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let (client, connection) = h2::client::handshake(tcp).await.expect("handshake");
        tokio::spawn(connection);
        let mut client = client.ready().await.expect("ready");
        let message = request(DOMAIN, vec![descriptor(entries)]).encode_to_vec();
        let mut framed = vec![0];
        framed.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
        framed.extend_from_slice(&message);
        let call = http::Request::post(format!(
            "http://{addr}/envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit"
        ))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("grpc-timeout", format!("{}m", deadline.as_millis()))
        .body(())
        .expect("request");
        let started = Instant::now();
        let (answer, mut send) = client.send_request(call, false).expect("send");
        send.send_data(Bytes::from(framed), true).expect("message");
        let reply = async {
            let (parts, mut body) = answer.await.map_err(|e| e.to_string())?.into_parts();
            let mut bytes = Vec::new();
            while let Some(chunk) = body.data().await {
                let chunk = chunk.map_err(|e| e.to_string())?;
                let _ = body.flow_control().release_capacity(chunk.len());
                bytes.extend_from_slice(&chunk);
            }
            // A trailers-only answer (an error) has its status in the headers.
            let trailers = body.trailers().await.map_err(|e| e.to_string())?;
            let field = |name: &str| {
                trailers
                    .as_ref()
                    .and_then(|t| t.get(name))
                    .or(parts.headers.get(name))
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_owned()
            };
            if field("grpc-status") != "0" {
                return Err(format!(
                    "grpc-status {:?}: {}",
                    field("grpc-status"),
                    field("grpc-message")
                ));
            }
            RateLimitResponse::decode(bytes.get(5..).unwrap_or_default()).map_err(|e| e.to_string())
        }
        .await;
        let _ = answers.send(Answer {
            entries,
            replica,
            reply,
            took: started.elapsed(),
            deadline,
        });
    })
}

async fn next(answers: &mut mpsc::UnboundedReceiver<Answer>, within: Duration) -> Answer {
    tokio::time::timeout(within, answers.recv())
        .await
        .unwrap_or_else(|_| panic!("no waiter answered within {within:?}"))
        .expect("waiters keep the channel open")
}

/// The `p`-th percentile of `samples` (nearest rank).
fn percentile(samples: &[Duration], p: usize) -> Duration {
    let mut sorted = samples.to_vec();
    sorted.sort();
    sorted[(sorted.len() * p).div_ceil(100).saturating_sub(1)]
}

/// 20 `heavy` (weight 2) and 20 `light` (weight 1) waiters queue behind 3 holders, spread
/// round-robin over `replicas`; slots are then freed one at a time (round-robin over the replicas
/// too), each granted waiter's lease released once its answer is in. Returns the tenants in grant
/// order, and how long each hand-off took (from sending the release to the granted waiter's
/// answer).
async fn grant_order(
    replicas: &[&Sluice],
    redis: Option<&RedisServer>,
) -> (Vec<&'static str>, Vec<Duration>) {
    let mut clients = Vec::new();
    for r in replicas {
        clients.push(r.grpc().await);
    }
    let mut holders = VecDeque::new();
    for _ in 0..3 {
        holders.push_back((FILLER, hold(&mut clients[0], FILLER).await));
    }
    let (tx, mut answers) = mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    for i in 0..40 {
        let entries = if i % 2 == 0 { HEAVY } else { LIGHT };
        let replica = i % replicas.len();
        tasks.push(wait_in_queue(
            &clients[replica],
            replica,
            entries,
            GENEROUS,
            &tx,
        ));
    }
    eventually("40 waiters queued", Duration::from_secs(10), async || {
        total(replicas, &waiting(UPLOADS_RULE)).await == 40.0
            && redis.is_none_or(|r| tickets_in_redis(r) == 40)
    })
    .await;
    if let Ok(early) = answers.try_recv() {
        panic!("answered while the pool was full: {early:?}");
    }

    let (mut order, mut handoffs) = (Vec::new(), Vec::new());
    let mut per_replica = vec![0; replicas.len()];
    for round in 0..40 {
        let (entries, id) = holders.pop_front().expect("3 holders");
        let freed = Instant::now();
        release(&mut clients[round % replicas.len()], entries, &id).await;
        // Each release frees one slot: exactly one waiter is granted it.
        let answer = next(&mut answers, Duration::from_secs(5)).await;
        let id = lease_of(answer.in_time());
        order.push(answer.tenant());
        handoffs.push(freed.elapsed());
        per_replica[answer.replica] += 1;
        holders.push_back((answer.entries, id));
    }
    for (entries, id) in holders {
        release(&mut clients[0], entries, &id).await;
    }
    // Every replica's waiters were granted, wherever the slot was freed.
    let spread: Vec<usize> = (0..replicas.len())
        .map(|r| (0..40).filter(|i| i % replicas.len() == r).count())
        .collect();
    assert_eq!(per_replica, spread);
    for task in tasks {
        task.await.expect("waiter");
    }
    assert_eq!(in_use(replicas[0], FILLER).await, 0);
    let scrape = async |sample: String| total(replicas, &sample).await;
    // The 3 holders went through the queue too: it was empty, and they were granted at once.
    assert_eq!(scrape(waits(UPLOADS_RULE, "granted")).await, 43.0);
    assert_eq!(scrape(grants(UPLOADS_RULE, 2)).await, 20.0);
    assert_eq!(scrape(grants(UPLOADS_RULE, 1)).await, 23.0);
    assert_eq!(scrape(waiting(UPLOADS_RULE)).await, 0.0);
    (order, handoffs)
}

/// Weights 2:1, both tenants backlogged: over the first 30 grants heavy:light must be within 10% of
/// 2:1, i.e. heavy/light in [1.8, 2.2]. With heavy + light = 30 that is heavy in [19.3, 20.6]:
/// exactly 20 heavy and 10 light, which is also what the virtual finish tags give (heavy's tags
/// are 0.5, 1, 1.5, …, light's 1, 2, 3, …: the 30 smallest are heavy's first 20, light's first
/// 10).
fn assert_two_to_one(label: &str, order: &[&str], handoffs: &[Duration]) {
    let first = &order[..30];
    let heavy = first.iter().filter(|t| **t == "heavy").count();
    let light = first.len() - heavy;
    let ratio = heavy as f64 / light.max(1) as f64;
    println!(
        "{label}: first 30 grants heavy:light = {heavy}:{light} ({ratio:.2}); all 40 in order: \
         {order:?}; release to grant p50 {:?}, p99 {:?}",
        percentile(handoffs, 50),
        percentile(handoffs, 99),
    );
    assert!(
        (1.8..=2.2).contains(&ratio),
        "{label}: {heavy}:{light} over the first 30 grants: {first:?}"
    );
    assert_eq!(
        order.iter().filter(|t| **t == "heavy").count(),
        20,
        "every waiter was granted once"
    );
}

/// Every answer is a refusal (OVER_LIMIT with Retry-After, never an error such as
/// `DEADLINE_EXCEEDED`), given after the waiter waited, and no later than 20 ms past its deadline.
fn assert_timely_refusals(label: &str, answers: &[Answer]) {
    let took: Vec<Duration> = answers.iter().map(|a| a.took).collect();
    println!(
        "{label}: {} refusals at a {:?} deadline took p50 {:?}, max {:?}",
        answers.len(),
        answers[0].deadline,
        percentile(&took, 50),
        percentile(&took, 100),
    );
    for a in answers {
        let reply = a.in_time();
        assert_eq!(reply.overall_code, OVER_LIMIT, "{a:?}");
        assert!(header(reply, "x-sluice-lease-id").is_none(), "{a:?}");
        assert!(header(reply, "Retry-After").is_some(), "{a:?}");
        // It waited in the queue: refused just before the deadline, not at once.
        assert!(a.took >= a.deadline / 2, "refused at once: {a:?}");
    }
}

async fn fill(client: &mut Client, entries: Entries, slots: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for _ in 0..slots {
        ids.push(hold(client, entries).await);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weighted_fair_grants_on_memory() {
    let _serial = SERIAL.lock().await;
    let sluice = Sluice::builder(RULES).start();
    let (order, handoffs) = grant_order(&[&sluice], None).await;
    assert_two_to_one("memory", &order, &handoffs);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_waiter_is_refused_before_its_deadline() {
    let _serial = SERIAL.lock().await;
    let sluice = Sluice::builder(RULES).start();
    let mut client = sluice.grpc().await;
    let holders = fill(&mut client, FILLER, 3).await;

    let deadline = Duration::from_millis(300);
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..10 {
        let entries = if i % 2 == 0 { HEAVY } else { LIGHT };
        wait_unenforced(sluice.grpc_addr, 0, entries, deadline, &tx);
    }
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(next(&mut rx, Duration::from_secs(5)).await);
    }
    assert_timely_refusals("memory, gRPC", &answers);
    assert_eq!(sluice.metric(&waits(UPLOADS_RULE, "timed_out")).await, 10.0);
    assert_eq!(sluice.metric(&waiting(UPLOADS_RULE)).await, 0.0);

    // The same deadline over HTTP: `x-sluice-wait-ms` on POST /json, `wait_ms` on an acquire.
    let http = reqwest::Client::new();
    let started = Instant::now();
    let json = http
        .post(sluice.url("/json"))
        .header("x-sluice-wait-ms", "300")
        .json(&body(HEAVY))
        .send()
        .await
        .expect("POST /json");
    let took = started.elapsed();
    assert_eq!(json.status().as_u16(), 429);
    let decision: Value = json.json().await.expect("JSON");
    assert_eq!(decision["overallCode"], "OVER_LIMIT", "{decision}");
    assert!(
        took >= deadline / 2 && took <= deadline + LATE,
        "POST /json: {took:?}"
    );
    let mut acquire = body(LIGHT);
    acquire["wait_ms"] = json!(300);
    let started = Instant::now();
    let status = http
        .post(sluice.url("/leases/acquire"))
        .json(&acquire)
        .send()
        .await
        .expect("acquire")
        .status();
    let took = started.elapsed();
    assert_eq!(status.as_u16(), 429);
    assert!(
        took >= deadline / 2 && took <= deadline + LATE,
        "POST /leases/acquire: {took:?}"
    );
    println!("memory, HTTP: POST /json and /leases/acquire refused at 300 ms in time");

    for id in holders {
        release(&mut client, FILLER, &id).await;
    }
    assert_eq!(in_use(&sluice, FILLER).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancelled_waiter_is_never_granted_a_lease() {
    let _serial = SERIAL.lock().await;
    let sluice = Sluice::builder(RULES).start();
    let mut client = sluice.grpc().await;
    let holders = fill(&mut client, FILLER, 3).await;

    let (tx, _answers) = mpsc::unbounded_channel();
    let waiters: Vec<JoinHandle<()>> = (0..5)
        .map(|_| wait_in_queue(&client, 0, HEAVY, GENEROUS, &tx))
        .collect();
    eventually("5 waiters queued", Duration::from_secs(5), async || {
        sluice.metric(&waiting(UPLOADS_RULE)).await == 5.0
    })
    .await;
    // Dropping a call's future resets its HTTP/2 stream (RST_STREAM CANCEL).
    for w in &waiters {
        w.abort();
    }
    for w in waiters {
        assert!(w.await.expect_err("aborted").is_cancelled());
    }
    eventually(
        "the cancelled waiters leave the queue",
        Duration::from_secs(5),
        async || sluice.metric(&waiting(UPLOADS_RULE)).await == 0.0,
    )
    .await;
    assert_eq!(sluice.metric(&waits(UPLOADS_RULE, "withdrawn")).await, 5.0);

    // Every slot freed ends up free: none is left to a ticket whose caller is gone (such a lease
    // would be held for its 60 s TTL). A withdrawal still on its way when a slot frees may be
    // granted the slot first and give it back at once, hence the polling.
    for (i, id) in holders.iter().enumerate() {
        release(&mut client, FILLER, id).await;
        let left = 2 - i as u64;
        eventually(
            &format!("{left} leases held"),
            Duration::from_secs(2),
            async || in_use(&sluice, FILLER).await == left,
        )
        .await;
    }
    // The queue is empty: a newcomer takes a slot at once.
    let started = Instant::now();
    let id = hold(&mut client, LIGHT).await;
    assert!(started.elapsed() < Duration::from_millis(100));
    assert_eq!(in_use(&sluice, LIGHT).await, 1);
    release(&mut client, LIGHT, &id).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pool_without_a_queue_refuses_at_once() {
    let _serial = SERIAL.lock().await;
    let sluice = Sluice::builder(RULES).start();
    let mut client = sluice.grpc().await;
    let id = hold(&mut client, PLAIN).await;
    for deadline in [None, Some(GENEROUS)] {
        let started = Instant::now();
        let full = check(&mut client, PLAIN, deadline)
            .await
            .expect("a decision");
        let took = started.elapsed();
        assert_eq!(full.overall_code, OVER_LIMIT, "{full:?}");
        assert!(header(&full, "x-sluice-lease-id").is_none());
        let retry: u64 = header(&full, "Retry-After")
            .expect("Retry-After")
            .parse()
            .expect("secs");
        assert!((59..=60).contains(&retry), "{retry}");
        assert!(
            took < Duration::from_millis(50),
            "deadline {deadline:?}: refused after {took:?}"
        );
        println!("no queue, deadline {deadline:?}: refused in {took:?}");
    }
    let scrape = sluice.metrics().await;
    assert!(
        !scrape.contains(&format!("rule=\"{PLAIN_RULE}\",outcome")),
        "{scrape}"
    );
    assert_eq!(sample_of(&scrape, &waiting(PLAIN_RULE)), 0.0);
    release(&mut client, PLAIN, &id).await;
    assert_eq!(in_use(&sluice, PLAIN).await, 0);
}

fn replicas(redis: &RedisServer, n: usize) -> Vec<Sluice> {
    (0..n)
        .map(|_| Sluice::builder(RULES).redis(&redis.url()).start())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn weighted_fair_grants_across_three_replicas_on_redis() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let replicas = replicas(&redis, 3);
    for r in &replicas {
        r.wait_ready(Duration::from_secs(10)).await;
    }
    let refs: Vec<&Sluice> = replicas.iter().collect();
    let (order, handoffs) = grant_order(&refs, Some(&redis)).await;
    assert_two_to_one("redis, 3 replicas", &order, &handoffs);

    // Deadlines across replicas: two waiters on each, refused in time.
    let mut clients = Vec::new();
    for r in &replicas {
        clients.push(r.grpc().await);
    }
    let holders = fill(&mut clients[1], FILLER, 3).await;
    let deadline = Duration::from_millis(300);
    let (tx, mut rx) = mpsc::unbounded_channel();
    for i in 0..6 {
        let entries = if i % 2 == 0 { HEAVY } else { LIGHT };
        wait_unenforced(replicas[i % 3].grpc_addr, i % 3, entries, deadline, &tx);
    }
    let mut answers = Vec::new();
    for _ in 0..6 {
        answers.push(next(&mut rx, Duration::from_secs(5)).await);
    }
    assert_timely_refusals("redis, 3 replicas, gRPC", &answers);
    assert_eq!(
        total(&refs, &waits(UPLOADS_RULE, "timed_out")).await,
        6.0,
        "{answers:?}"
    );
    for (i, id) in holders.iter().enumerate() {
        release(&mut clients[i % 3], FILLER, id).await;
    }
    assert_eq!(in_use(&replicas[2], FILLER).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_replicas_waiters_leave_nothing_held_on_redis() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let mut replicas = replicas(&redis, 3);
    for r in &replicas {
        r.wait_ready(Duration::from_secs(10)).await;
    }
    let mut a = replicas[0].grpc().await;
    let mut b = replicas[1].grpc().await;
    let doomed = replicas[2].grpc().await;
    let holders = fill(&mut a, SHORT, 2).await;

    // The doomed replica's waiters queue first, so theirs are the head tickets when slots free.
    let (doomed_tx, _doomed_answers) = mpsc::unbounded_channel();
    let doomed_waiters: Vec<JoinHandle<()>> = (0..4)
        .map(|_| wait_in_queue(&doomed, 2, SHORT, Duration::from_millis(1000), &doomed_tx))
        .collect();
    eventually(
        "4 waiters queued on the doomed replica",
        Duration::from_secs(5),
        async || {
            replicas[2].metric(&waiting(SHORT_RULE)).await == 4.0 && tickets_in_redis(&redis) == 4
        },
    )
    .await;
    let deadline = Duration::from_secs(8);
    let (tx, mut answers) = mpsc::unbounded_channel();
    for _ in 0..4 {
        wait_in_queue(&b, 1, SHORT, deadline, &tx);
    }
    eventually(
        "4 waiters queued on replica B",
        Duration::from_secs(5),
        async || {
            replicas[1].metric(&waiting(SHORT_RULE)).await == 4.0 && tickets_in_redis(&redis) == 8
        },
    )
    .await;

    // SIGKILL (what `Child::kill`, run on drop, sends): no withdrawal, no release.
    let killed = Instant::now();
    drop(replicas.pop());
    drop(doomed);
    for w in doomed_waiters {
        w.abort();
    }
    for id in &holders {
        release(&mut a, SHORT, id).await;
    }
    println!(
        "redis, replica killed: {} leases in use right after the holders' release",
        in_use(&replicas[0], SHORT).await
    );

    // Replica B's waiters are granted as slots free: behind the dead tickets, which are granted leases
    // nobody releases (they expire after the 2 s TTL) or drop at their 1 s deadline.
    let mut waited = Vec::new();
    for _ in 0..4 {
        let answer = next(&mut answers, deadline + Duration::from_secs(1)).await;
        let id = lease_of(answer.in_time());
        waited.push(answer.took);
        release(&mut b, SHORT, &id).await;
    }
    println!(
        "redis, replica killed: replica B's 4 waiters granted after {waited:?} (the kill was {:?} ago)",
        killed.elapsed()
    );

    // Nothing is held once the dead replica's leases passed their TTL, and its tickets are gone.
    eventually(
        "the pool empties after the lease TTL",
        Duration::from_secs(5),
        async || in_use(&replicas[0], SHORT).await == 0,
    )
    .await;
    eventually(
        "the queue's keys are gone",
        Duration::from_secs(5),
        async || queue_keys(&redis).is_empty(),
    )
    .await;
    assert_eq!(replicas[1].metric(&waits(SHORT_RULE, "granted")).await, 4.0);
    assert_eq!(replicas[1].metric(&waiting(SHORT_RULE)).await, 0.0);
}

/// A fair-share pool's queue across two replicas on one Redis: six requests for a pool of two
/// units a second all go through, two per window, each waiting for the window its turn falls in
/// (without the queue, four would be refused).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_fair_share_queue_spreads_requests_over_windows_on_redis() {
    let _serial = SERIAL.lock().await;
    let redis = RedisServer::start();
    let replicas = replicas(&redis, 2);
    for r in &replicas {
        r.wait_ready(Duration::from_secs(10)).await;
    }
    let mut calls = Vec::new();
    for i in 0..6 {
        let mut client = replicas[i % 2].grpc().await;
        calls.push(tokio::spawn(async move {
            let started = Instant::now();
            let reply = check(&mut client, SHARE, Some(GENEROUS)).await;
            (reply, started.elapsed())
        }));
    }
    let mut took = Vec::new();
    for call in calls {
        let (reply, elapsed) = call.await.expect("the call's task");
        let reply = reply.expect("a decision");
        assert_eq!(reply.overall_code, OK, "{reply:?}");
        took.push(elapsed);
    }
    took.sort();
    // Three windows are needed, and the third starts at least a second after the first ends.
    assert!(took[5] >= Duration::from_secs(1), "{took:?}");
    assert!(took[5] < Duration::from_secs(4), "{took:?}");
    let refs: Vec<&Sluice> = replicas.iter().collect();
    assert_eq!(total(&refs, &waits("q.share", "granted")).await, 6.0);
    assert_eq!(total(&refs, &waits("q.share", "timed_out")).await, 0.0);
}
