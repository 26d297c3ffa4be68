//! The dispatcher: one task between the check path's queue and the sinks. It takes events in
//! order, finds the sinks that want each (its domain's block and the global file's, each only for
//! the kinds its `events` name), serialises it once and offers the same bytes to each sink's own
//! queue without waiting.
//!
//! Sinks are keyed by their whole configuration: a rule reload that keeps a sink's block as it was
//! keeps its task, its queue and its connection; a sink named in several domains' blocks (or in a
//! block and the global file) is one sink, and an event reaching it by two routes is sent once.
//! A sink no reload names any more is dropped from the routes: its task delivers what is queued
//! and ends.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, watch};

use super::{
    Blocks, DRAIN_EVERY, Envelope, EventKind, EventSet, Metrics, Notifications, Scope, SinkLabels,
};
use crate::config::notifications::{RedisStream, Webhook};
use crate::storage::backend::redis::RedisStore;

/// One event as every sink sends it.
pub(crate) struct Delivery {
    pub id: String,
    pub kind: EventKind,
    /// The event's JSON.
    pub body: Bytes,
}

/// A sink's configuration, which is also its identity.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum SinkSpec {
    Webhook(Webhook),
    Stream(RedisStream),
}

/// A running sink: its queue, and what it is called in metrics.
#[derive(Clone)]
pub(crate) struct Sink {
    id: u64,
    queue: mpsc::Sender<Arc<Delivery>>,
}

/// The counters of one sink's results.
#[derive(Clone)]
pub(crate) struct SinkCounters {
    pub delivered: Counter,
    pub failed: Counter,
}

impl SinkCounters {
    pub fn new(metrics: &Metrics, sink: &str) -> SinkCounters {
        let get = |result| {
            metrics
                .sent
                .get_or_create(&SinkLabels {
                    sink: sink.to_owned(),
                    result,
                })
                .clone()
        };
        SinkCounters {
            delivered: get("delivered"),
            failed: get("failed"),
        }
    }
}

/// Sinks reached for some events.
struct Route {
    events: EventSet,
    sinks: Vec<Sink>,
}

/// Where events go: the global sinks, each domain's, and every sink running.
pub(super) struct Routes {
    global: Option<Route>,
    domains: HashMap<String, Route>,
    running: HashMap<SinkSpec, Sink>,
    redis: Option<RedisStore>,
    metrics: Metrics,
    next_id: u64,
}

impl Routes {
    pub fn new(
        global: Option<&Notifications>,
        redis: Option<RedisStore>,
        metrics: Metrics,
    ) -> Self {
        let mut routes = Routes {
            global: None,
            domains: HashMap::new(),
            running: HashMap::new(),
            redis,
            metrics,
            next_id: 0,
        };
        routes.global = global.map(|g| routes.route(g));
        routes
    }

    /// The route of one block, starting the sinks not running yet.
    fn route(&mut self, block: &Notifications) -> Route {
        let specs = block
            .webhooks
            .iter()
            .cloned()
            .map(SinkSpec::Webhook)
            .chain(block.redis_stream.clone().map(SinkSpec::Stream));
        let sinks = specs.filter_map(|spec| self.sink(spec)).collect();
        Route {
            events: block.events,
            sinks,
        }
    }

    fn sink(&mut self, spec: SinkSpec) -> Option<Sink> {
        if let Some(sink) = self.running.get(&spec) {
            return Some(sink.clone());
        }
        let queue = match &spec {
            SinkSpec::Webhook(w) => {
                let label = format!("webhook:{}", w.url.authority());
                let counters = SinkCounters::new(&self.metrics, &label);
                super::webhook::start(w.clone(), label, counters)
            }
            SinkSpec::Stream(s) => {
                let Some(redis) = &self.redis else {
                    // The config refuses this with the memory store; nothing else gets here.
                    tracing::error!(key = %s.key, "redis_stream sink without a Redis store: not started");
                    return None;
                };
                let label = format!("redis_stream:{}", s.key);
                let counters = SinkCounters::new(&self.metrics, &label);
                super::stream::start(s.clone(), redis.clone(), label, counters)
            }
        };
        self.next_id += 1;
        let sink = Sink {
            id: self.next_id,
            queue,
        };
        self.running.insert(spec, sink.clone());
        Some(sink)
    }

    /// Follows a rule reload: each domain's route from its block, and the sinks no route names
    /// any more stopped (their tasks finish what is queued).
    pub fn reload(&mut self, blocks: &Blocks) {
        let mut domains = HashMap::with_capacity(blocks.len());
        for (domain, block) in blocks.iter() {
            domains.insert(domain.clone(), self.route(block));
        }
        self.domains = domains;
        let named: Vec<u64> = self
            .global
            .iter()
            .chain(self.domains.values())
            .flat_map(|r| r.sinks.iter().map(|s| s.id))
            .collect();
        self.running.retain(|_, sink| named.contains(&sink.id));
    }

    /// The sinks an event of `kind` in `domain` goes to within `scope`, each once.
    fn targets(&self, kind: EventKind, domain: Option<&str>, scope: Scope) -> Vec<&Sink> {
        let wants = |r: &&Route| r.events.contains(kind);
        let mut routes: Vec<&Route> = Vec::new();
        if scope != Scope::Domain {
            routes.extend(self.global.iter().filter(wants));
        }
        if scope != Scope::Global {
            match domain {
                Some(domain) => routes.extend(self.domains.get(domain).filter(wants)),
                None => routes.extend(self.domains.values().filter(wants)),
            }
        }
        let mut sinks: Vec<&Sink> = routes.iter().flat_map(|r| r.sinks.iter()).collect();
        sinks.sort_by_key(|s| s.id);
        sinks.dedup_by_key(|s| s.id);
        sinks
    }

    /// Hands the event to its sinks without waiting (built only if some sink takes it); a full
    /// sink queue drops it (counted).
    fn dispatch(&self, envelope: Envelope, instance: &str) {
        let (kind, domain, scope) = envelope.route();
        let sinks = self.targets(kind, domain, scope);
        if sinks.is_empty() {
            return;
        }
        let (event, _) = envelope.open(instance);
        let body = match serde_json::to_vec(&event) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::error!(error = %e, "cannot serialise a notification");
                return;
            }
        };
        let delivery = Arc::new(Delivery {
            id: event.id,
            kind: event.kind,
            body,
        });
        for sink in sinks {
            if sink.queue.try_send(Arc::clone(&delivery)).is_err() {
                self.metrics.dropped("sink_queue_full");
            }
        }
    }
}

/// The dispatcher's loop: every [`DRAIN_EVERY`], the rule reload's blocks if they changed, then
/// every event queued, in order; while events keep coming it drains again at once (yielding to
/// the runtime in between), so a burst is not held to 4096 per tick. Ends once every
/// [`super::Notifier`] is gone and the queue is empty.
pub(super) async fn run(
    events: std::sync::mpsc::Receiver<Envelope>,
    mut blocks: watch::Receiver<Blocks>,
    mut routes: Routes,
    instance: Arc<str>,
) {
    let mut tick = tokio::time::interval(DRAIN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let current = blocks.borrow_and_update().clone();
    routes.reload(&current);
    loop {
        tick.tick().await;
        loop {
            // Before the events: one raised under new rules finds its domain's sinks.
            if blocks.has_changed().unwrap_or(false) {
                let current = blocks.borrow_and_update().clone();
                routes.reload(&current);
            }
            let mut drained = 0usize;
            loop {
                match events.try_recv() {
                    Ok(envelope) => routes.dispatch(envelope, &instance),
                    Err(std::sync::mpsc::TryRecvError::Empty) => break,
                    Err(std::sync::mpsc::TryRecvError::Disconnected) => return,
                }
                drained += 1;
            }
            if drained == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::time::Duration;

    use prometheus_client::registry::Registry;

    use super::*;
    use crate::config::notifications::{SigningKey, WebhookUrl};
    use crate::notify::Event;

    fn hook(port: u16) -> Webhook {
        Webhook {
            url: WebhookUrl::parse(&format!("http://127.0.0.1:{port}/")).unwrap(),
            signing_key: SigningKey::new(b"0123456789abcdef"),
            timeout: Duration::from_millis(100),
            max_attempts: 1,
            queue_size: 4,
        }
    }

    fn block(events: EventSet, hooks: &[u16]) -> Arc<Notifications> {
        Arc::new(Notifications {
            events,
            webhooks: hooks.iter().map(|p| hook(*p)).collect(),
            redis_stream: None,
            override_lead: Duration::from_secs(600),
        })
    }

    fn envelope(kind: EventKind, domain: Option<&str>, scope: Scope) -> (Event, Scope) {
        (
            Event {
                id: "x".into(),
                kind,
                time: String::new(),
                instance: String::new(),
                domain: domain.map(str::to_owned),
                rule: None,
                descriptor: None,
                limit: None,
                used: None,
                remaining: None,
                override_: None,
                change: None,
                detail: String::new(),
            },
            scope,
        )
    }

    /// The ports of the webhooks an envelope reaches.
    fn ports(routes: &Routes, (e, scope): &(Event, Scope)) -> Vec<u16> {
        let ids: Vec<u64> = routes
            .targets(e.kind, e.domain.as_deref(), *scope)
            .iter()
            .map(|s| s.id)
            .collect();
        let mut ports: Vec<u16> = routes
            .running
            .iter()
            .filter(|(_, s)| ids.contains(&s.id))
            .map(|(spec, _)| match spec {
                SinkSpec::Webhook(w) => w.url.port,
                SinkSpec::Stream(_) => 0,
            })
            .collect();
        ports.sort_unstable();
        ports
    }

    #[tokio::test]
    async fn events_reach_their_domains_and_the_global_sinks_once_each() {
        let metrics = Metrics::new(&mut Registry::default());
        let breaker = EventSet::of([EventKind::BreakerOpen, EventKind::BreakerClosed]);
        let global = block(breaker.union(EventSet::REQUEST), &[1]);
        let mut routes = Routes::new(Some(&global), None, metrics);
        let blocks: Blocks = Arc::new(HashMap::from([
            ("api".to_owned(), block(EventSet::ALL, &[1, 2])),
            ("web".to_owned(), block(EventSet::REQUEST, &[3])),
        ]));
        routes.reload(&blocks);
        assert_eq!(routes.running.len(), 3, "a sink named twice runs once");

        let near = |d| envelope(EventKind::NearLimit, Some(d), Scope::All);
        assert_eq!(ports(&routes, &near("api")), [1, 2]);
        assert_eq!(ports(&routes, &near("web")), [1, 3]);
        assert_eq!(ports(&routes, &near("other")), [1]);
        let open = envelope(EventKind::BreakerOpen, None, Scope::All);
        assert_eq!(ports(&routes, &open), [1, 2], "every block that takes it");
        let lapse = |scope| envelope(EventKind::OverrideExpiring, Some("api"), scope);
        assert_eq!(ports(&routes, &lapse(Scope::Domain)), [1, 2]);
        assert!(
            ports(&routes, &lapse(Scope::Global)).is_empty(),
            "not in the global events"
        );

        // A reload keeps the sinks it still names (same id) and stops the others.
        let kept = routes.running[&SinkSpec::Webhook(hook(2))].id;
        let blocks: Blocks = Arc::new(HashMap::from([(
            "api".to_owned(),
            block(EventSet::ALL, &[2]),
        )]));
        routes.reload(&blocks);
        assert_eq!(routes.running.len(), 2);
        assert_eq!(routes.running[&SinkSpec::Webhook(hook(2))].id, kept);
        assert_eq!(ports(&routes, &near("web")), [1]);
    }
}
