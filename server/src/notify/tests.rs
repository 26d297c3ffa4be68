//! Events as raised and sent: their JSON, one per window on a manual clock, the breaker's once
//! per outage, overrides once per expiry, bounds, and the webhook sink against a real HTTP
//! receiver on loopback.

use std::time::Duration;

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use super::*;
use crate::clock::ManualClock;
use crate::config::notifications::{SigningKey, Webhook, WebhookUrl};
use crate::config::parse_str;
use crate::overrides::TargetEntry;

/// 2023-11-14T22:13:20Z, the start of a minute.
const T0: Duration = Duration::from_secs(1_700_000_040);

const RULES: &str = "domain: api\ndescriptors:\n  - key: tenant\n    rate_limit: {unit: minute, \
                     requests_per_unit: 100, kind: quota, name: per-tenant}\n  - key: job\n    \
                     rate_limit: {concurrency: 2}\n";

fn rule(entries: &[(&str, &str)]) -> Arc<Rule> {
    let rules = parse_str("r.yaml", RULES).unwrap();
    Arc::clone(rules.lookup("api", entries).unwrap())
}

fn raise(n: &Notifier, kind: EventKind, rule: &Arc<Rule>, value: &str, used: u64, capacity: u64) {
    let key = rule.levels[0].key.as_str();
    n.raise(Raised {
        kind,
        rule,
        limit_index: 0,
        descriptor: [(key, value)].into_iter(),
        used,
        capacity,
        hits: 1,
    });
}

/// What the dispatcher would take from the queue, built as it builds them.
fn drain(rx: &mut std::sync::mpsc::Receiver<Envelope>) -> Vec<Event> {
    std::iter::from_fn(|| rx.try_recv().ok().map(|e| e.open("test-host").0)).collect()
}

/// A notifier whose queue the caller reads (unit tests, without a dispatcher), of `capacity`.
fn detached(
    clock: Arc<dyn Clock>,
    global: Option<Notifications>,
    capacity: usize,
) -> (Notifier, std::sync::mpsc::Receiver<Envelope>, Registry) {
    let mut registry = Registry::default();
    let (queue, events) = std::sync::mpsc::sync_channel(capacity);
    let global_block = global.map(Arc::new);
    let shared = Arc::new(Shared {
        queue,
        recent: event::Recent::new(RECENT_SLOTS),
        clock,
        global: global_block.as_ref().map_or(EventSet::NONE, |g| g.events),
        global_block,
        instance: "test-host".into(),
        nonce: 7,
        breaker_open: AtomicBool::new(false),
        breaker_changes: AtomicU64::new(0),
        blocks: watch::channel(Blocks::default()).0,
        metrics: Metrics::new(&mut registry),
    });
    (Notifier { shared }, events, registry)
}

fn manual() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(T0))
}

#[test]
fn a_request_event_carries_its_rule_limit_descriptor_and_counts() {
    let (n, mut rx, _) = detached(manual(), None, 16);
    let tenant = rule(&[("tenant", "acme")]);
    raise(&n, EventKind::NearLimit, &tenant, "acme", 80, 100);
    let events = drain(&mut rx);
    assert_eq!(events.len(), 1);
    let mut got = serde_json::to_value(&events[0]).unwrap();
    let id = got["id"].take();
    assert_eq!(id.as_str().unwrap().len(), 32, "{id}");
    assert_eq!(
        got,
        json!({
            "id": null,
            "kind": "near_limit",
            "time": "2023-11-14T22:14:00.000Z",
            "instance": "test-host",
            "domain": "api",
            "rule": "api.tenant",
            "descriptor": [{"key": "tenant", "value": "acme"}],
            "limit": {
                "name": "per-tenant",
                "requests_per_unit": 100,
                "capacity": 100,
                "window": "minute",
                "window_secs": 60,
                "algorithm": "fixed_window",
                "kind": "quota"
            },
            "used": 80,
            "remaining": 20,
            "detail": "near the limit: 80 of 100 per minute used"
        })
    );

    let pool = rule(&[("job", "export")]);
    raise(&n, EventKind::PoolFull, &pool, "export", 2, 2);
    let event = drain(&mut rx).remove(0);
    assert_eq!(
        event.detail,
        "pool full: 2 of 2 leases held; an acquire was refused"
    );
    let limit = event.limit.unwrap();
    assert_eq!(
        (limit.window.as_str(), limit.algorithm),
        ("lease of 60 s", "concurrency")
    );
}

#[test]
fn one_event_per_rule_descriptor_and_kind_per_window() {
    let clock = manual();
    let (n, mut rx, _) = detached(clock.clone(), None, 64);
    let tenant = rule(&[("tenant", "acme")]);
    let quota = EventKind::QuotaExhausted;
    raise(&n, quota, &tenant, "acme", 100, 100);
    raise(&n, quota, &tenant, "acme", 100, 100);
    clock.advance(Duration::from_secs(59));
    raise(&n, quota, &tenant, "acme", 100, 100);
    let first = drain(&mut rx);
    assert_eq!(first.len(), 1, "one per window: {first:?}");
    assert_eq!(
        first[0].detail,
        "quota exhausted: 100 of 100 per minute used; a request for 1 was refused"
    );

    // Another descriptor, another kind: events of their own.
    raise(&n, quota, &tenant, "globex", 100, 100);
    raise(&n, EventKind::NearLimit, &tenant, "acme", 80, 100);
    assert_eq!(drain(&mut rx).len(), 2);

    // The next window raises it again, under a new id.
    clock.advance(Duration::from_secs(1));
    raise(&n, quota, &tenant, "acme", 100, 100);
    raise(&n, quota, &tenant, "acme", 100, 100);
    let next = drain(&mut rx);
    assert_eq!(next.len(), 1);
    assert_ne!(next[0].id, first[0].id);

    // Another replica raising the same event in the same window gives it the same id.
    let (other, mut other_rx, _) = detached(clock.clone(), None, 4);
    raise(&other, quota, &tenant, "acme", 100, 100);
    assert_eq!(drain(&mut other_rx)[0].id, next[0].id);
}

#[test]
fn the_breaker_raises_one_event_per_opening_and_closing() {
    let (n, mut rx, _) = detached(manual(), None, 16);
    for state in [
        BreakerState::Closed,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::Open,
        BreakerState::HalfOpen,
        BreakerState::Closed,
        BreakerState::Closed,
        BreakerState::Open,
    ] {
        n.breaker_changed(state);
    }
    let events = drain(&mut rx);
    let kinds: Vec<EventKind> = events.iter().map(|e| e.kind).collect();
    assert_eq!(
        kinds,
        [
            EventKind::BreakerOpen,
            EventKind::BreakerClosed,
            EventKind::BreakerOpen
        ]
    );
    assert_ne!(events[0].id, events[2].id);
    let json = serde_json::to_value(&events[1]).unwrap();
    assert_eq!(json["domain"], serde_json::Value::Null);
    assert!(json.get("descriptor").is_none() && json.get("limit").is_none());
}

fn block(events: EventSet, lead_secs: u64) -> Notifications {
    Notifications {
        events,
        webhooks: Vec::new(),
        redis_stream: None,
        override_lead: Duration::from_secs(lead_secs),
    }
}

fn an_override(id: &str, expires_at: u64) -> Override {
    Override {
        id: id.into(),
        domain: "api".into(),
        descriptor: vec![TargetEntry {
            key: "tenant".into(),
            value: Some("acme".into()),
            prefix: None,
        }],
        limit: Some(500),
        limit_name: None,
        concurrency: None,
        weight: None,
        mode: None,
        expires_at: Some(expires_at),
        reason: Some("launch".into()),
        by: "ops".into(),
        set_at: 0,
    }
}

#[test]
fn an_override_is_raised_once_per_block_within_its_lead() {
    let now = T0.as_secs();
    let blocks: Blocks = Arc::new(HashMap::from([(
        "api".to_owned(),
        Arc::new(block(EventSet::ALL, 600)),
    )]));
    let global = block(EventSet::of([EventKind::OverrideExpiring]), 60);
    let list = [
        an_override("near", now + 300),
        an_override("far", now + 3_600),
        an_override("lapsed", now),
    ];
    let mut raised = expiry::Raised::default();
    let due = raised.due(&list, &blocks, Some(&global), now);
    let got: Vec<(&str, Scope)> = due.iter().map(|d| (d.item.id.as_str(), d.scope)).collect();
    assert_eq!(got, [("near", Scope::Domain)]);
    assert!(
        raised
            .due(&list, &blocks, Some(&global), now + 1)
            .is_empty()
    );
    // The global file's shorter lead comes later.
    let later = raised.due(&list, &blocks, Some(&global), now + 250);
    assert_eq!(later.len(), 1);
    assert_eq!(
        (later[0].item.id.as_str(), later[0].scope),
        ("near", Scope::Global)
    );
    // Set again with a new expiry: raised again when that one nears.
    let renewed = [an_override("near", now + 900)];
    let again = raised.due(&renewed, &blocks, Some(&global), now + 400);
    assert_eq!(again.len(), 1);

    let (n, _rx, _) = detached(manual(), None, 4);
    let event = expiry::event_of(&n, &list[0], now + 300, T0);
    let json = serde_json::to_value(&event).unwrap();
    assert_eq!(json["kind"], "override_expiring");
    assert_eq!(json["domain"], "api");
    assert_eq!(
        json["override"],
        json!({"id": "near", "descriptor": [{"key": "tenant", "value": "acme"}],
               "expires_at": "2023-11-14T22:19:00.000Z", "by": "ops", "reason": "launch"})
    );
    assert_eq!(
        event.detail,
        "override near of [tenant=acme] lapses in 5 min 0 s; the rules apply again after that"
    );
}

#[test]
fn rfc3339_in_utc() {
    assert_eq!(rfc3339(Duration::ZERO), "1970-01-01T00:00:00.000Z");
    assert_eq!(
        rfc3339(Duration::from_millis(951_782_400_250)),
        "2000-02-29T00:00:00.250Z"
    );
    assert_eq!(
        rfc3339(Duration::from_secs(4_102_444_799)),
        "2099-12-31T23:59:59.000Z"
    );
}

#[test]
fn the_recent_table_is_bounded_and_forgets_by_eviction() {
    let recent = event::Recent::new(1);
    assert!(recent.first(10, 5));
    assert!(!recent.first(10, 5));
    assert!(recent.first(10, 6), "a new window");
    assert!(recent.first(11, 6), "another key in the only slot");
    assert!(recent.first(10, 6), "evicted: raised again, as documented");
}

#[test]
fn what_the_queue_cannot_take_is_dropped_and_counted() {
    let (n, mut rx, registry) = detached(manual(), None, 1);
    let tenant = rule(&[("tenant", "acme")]);
    for value in ["a", "b", "c"] {
        raise(&n, EventKind::QuotaExhausted, &tenant, value, 100, 100);
    }
    assert_eq!(drain(&mut rx).len(), 1);
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).unwrap();
    assert!(
        text.contains("notifications_dropped_total{reason=\"queue_full\"} 2"),
        "{text}"
    );
    assert!(
        text.contains("notifications_emitted_total{kind=\"quota_exhausted\"} 1"),
        "{text}"
    );
}

#[test]
fn checks_raise_only_what_some_sink_takes() {
    let global = block(EventSet::of([EventKind::BreakerOpen]), 60);
    let (n, _rx, _) = detached(manual(), Some(global), 1);
    assert!(n.raises(EventSet::NONE).is_empty());
    assert_eq!(
        n.raises(EventSet::ALL),
        EventSet::REQUEST,
        "breaker and override events are not the check's"
    );
}

/// A receiver on loopback answering each POST with the next status of `statuses` (then 200),
/// reporting every request's headers and body.
async fn receiver(statuses: Vec<u16>) -> (WebhookUrl, mpsc::UnboundedReceiver<(String, Vec<u8>)>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url =
        WebhookUrl::parse(&format!("http://{}/hook", listener.local_addr().unwrap())).unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut statuses = statuses.into_iter();
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            let mut buf = Vec::new();
            loop {
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                    let mut chunk = [0u8; 4096];
                    match socket.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                    continue;
                };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .map_or(0, |v| v.trim().parse().unwrap());
                while buf.len() < end + 4 + length {
                    let mut chunk = [0u8; 4096];
                    let n = socket.read(&mut chunk).await.unwrap();
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = buf[end + 4..end + 4 + length].to_vec();
                buf.drain(..end + 4 + length);
                tx.send((head, body)).unwrap();
                let status = statuses.next().unwrap_or(200);
                let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                socket.write_all(answer.as_bytes()).await.unwrap();
            }
        }
    });
    (url, rx)
}

fn hook(url: WebhookUrl, max_attempts: u32) -> Webhook {
    Webhook {
        url,
        signing_key: SigningKey::new(b"0123456789abcdef"),
        timeout: Duration::from_secs(5),
        max_attempts,
        queue_size: 8,
    }
}

#[tokio::test]
async fn the_webhook_signs_retries_server_errors_and_gives_up_on_refusals() {
    let (url, mut requests) = receiver(vec![503, 200, 400]).await;
    let host = format!("host: {}", url.host_header());
    let mut registry = Registry::default();
    let metrics = Metrics::new(&mut registry);
    let counters = dispatch::SinkCounters::new(&metrics, "webhook:test");
    let queue = webhook::start(hook(url, 3), "webhook:test".into(), counters.clone());
    for (id, body) in [("e1", &b"{\"n\":1}"[..]), ("e2", &b"{\"n\":2}"[..])] {
        let delivery = dispatch::Delivery {
            id: id.into(),
            kind: EventKind::QuotaExhausted,
            body: bytes::Bytes::from_static(body),
        };
        queue.send(Arc::new(delivery)).await.unwrap();
    }
    let mut seen = Vec::new();
    for _ in 0..3 {
        let got = tokio::time::timeout(Duration::from_secs(10), requests.recv()).await;
        seen.push(got.unwrap().unwrap());
    }
    // e1 answered 503 then 200 (one retry), e2 answered 400: not retried.
    let ids: Vec<&str> = seen
        .iter()
        .map(|(head, _)| {
            head.lines()
                .find_map(|l| l.strip_prefix("x-sluice-event-id: "))
                .unwrap()
        })
        .collect();
    assert_eq!(ids, ["e1", "e1", "e2"]);
    for (head, body) in &seen {
        assert!(head.starts_with("post /hook http/1.1"), "{head}");
        assert!(head.contains(&host), "{head}");
        assert!(head.contains("content-type: application/json"), "{head}");
        assert!(
            head.contains("x-sluice-event-kind: quota_exhausted"),
            "{head}"
        );
        let want = webhook::signature(b"0123456789abcdef", body);
        assert!(
            head.contains(&format!("x-sluice-signature: {want}")),
            "{head}"
        );
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while counters.delivered.get() + counters.failed.get() < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "results not counted"
        );
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!((counters.delivered.get(), counters.failed.get()), (1, 1));
    // Counted once its last attempt is answered: nothing more was sent.
    assert!(
        requests.try_recv().is_err(),
        "a refused event is not sent again"
    );
}
