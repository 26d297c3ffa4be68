//! The notifications' metrics: events raised (by kind), dropped (by reason) and delivered or
//! failed (by sink). The check path's series are looked up once, here, not per event.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use super::EventKind;
use crate::metrics::{KindLabels, ReasonLabels};

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub(crate) struct SinkLabels {
    pub sink: String,
    pub result: &'static str,
}

#[derive(Clone)]
pub(crate) struct Metrics {
    emitted: Family<KindLabels, Counter>,
    /// `emitted`'s series, by [`EventKind`] (looked up once, not on the check path).
    emitted_by_kind: Vec<Counter>,
    dropped: Family<ReasonLabels, Counter>,
    queue_full: Counter,
    pub sent: Family<SinkLabels, Counter>,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Metrics {
        let emitted = Family::<KindLabels, Counter>::default();
        let dropped = Family::<ReasonLabels, Counter>::default();
        let queue_full = dropped
            .get_or_create(&ReasonLabels {
                reason: "queue_full",
            })
            .clone();
        let m = Metrics {
            emitted_by_kind: EventKind::ALL
                .iter()
                .map(|k| {
                    emitted
                        .get_or_create(&KindLabels { kind: k.as_str() })
                        .clone()
                })
                .collect(),
            queue_full,
            emitted,
            dropped,
            sent: Family::default(),
        };
        registry.register(
            "notifications_emitted",
            "Notification events raised and queued, by kind",
            m.emitted.clone(),
        );
        registry.register(
            "notifications_dropped",
            "Notification events dropped because a bounded queue was full, by reason",
            m.dropped.clone(),
        );
        registry.register(
            "notifications_sent",
            "Notification deliveries by sink and result (delivered, or failed after the last \
             attempt)",
            m.sent.clone(),
        );
        let _ = m.dropped.get_or_create(&ReasonLabels {
            reason: "sink_queue_full",
        });
        m
    }

    /// One event of `kind` queued.
    pub fn emitted(&self, kind: EventKind) {
        self.emitted_by_kind[kind as usize].inc();
    }

    /// One event the dispatcher's queue could not take.
    pub fn queue_full(&self) {
        self.queue_full.inc();
    }

    pub fn dropped(&self, reason: &'static str) {
        self.dropped.get_or_create(&ReasonLabels { reason }).inc();
    }
}
