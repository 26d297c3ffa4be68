//! `override_expiring`: every [`SCAN_EVERY`], the overrides in force are compared with each
//! block's `override_lead_secs`; an override whose expiry is that close is raised once per block
//! that wants the event (its domain's, and the global file's), at most once for each expiry it
//! has: an override set again with a new expiry is raised again when that one nears.
//!
//! Every replica scans the same overrides, so each raises the event: its id (from the override's
//! id and expiry) is the same on all of them, for receivers to de-duplicate.

use std::collections::HashSet;
use std::time::Duration;

use tokio::sync::watch;

use super::{Blocks, Envelope, EventKind, Notifications, Notifier, OverrideFacts, Scope, event};
use crate::overrides::Override;

/// How often the overrides are looked at: a fraction of any lead time worth configuring.
pub const SCAN_EVERY: Duration = Duration::from_secs(1);

/// Overrides already raised, by block: `(global, override id, expiry)`. Entries leave once the
/// override lapsed, so it holds at most the overrides in force, twice.
#[derive(Debug, Default)]
pub(super) struct Raised {
    seen: HashSet<(bool, String, u64)>,
}

/// An override to raise now, and which block it is for.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Due<'a> {
    pub item: &'a Override,
    pub expires_at: u64,
    pub scope: Scope,
}

impl Raised {
    /// The overrides of `list` to raise at `now_secs`: within a block's lead of their expiry,
    /// not lapsed, not raised before for that block and expiry.
    pub fn due<'a>(
        &mut self,
        list: &'a [Override],
        blocks: &Blocks,
        global: Option<&Notifications>,
        now_secs: u64,
    ) -> Vec<Due<'a>> {
        self.seen.retain(|(_, _, at)| *at > now_secs);
        let mut due = Vec::new();
        for o in list {
            let Some(expires_at) = o.expires_at.filter(|at| *at > now_secs) else {
                continue;
            };
            let domain = blocks.get(&o.domain).map(|b| &**b);
            for (is_global, block) in [(false, domain), (true, global)] {
                let Some(block) = block.filter(|b| b.events.contains(EventKind::OverrideExpiring))
                else {
                    continue;
                };
                if expires_at - now_secs > block.override_lead.as_secs() {
                    continue;
                }
                if self.seen.insert((is_global, o.id.clone(), expires_at)) {
                    let scope = if is_global {
                        Scope::Global
                    } else {
                        Scope::Domain
                    };
                    due.push(Due {
                        item: o,
                        expires_at,
                        scope,
                    });
                }
            }
        }
        due
    }
}

/// The event of one override about to lapse.
pub(super) fn event_of(
    notifier: &Notifier,
    o: &Override,
    expires_at: u64,
    now: Duration,
) -> super::Event {
    let id = event::id_of([
        EventKind::OverrideExpiring.as_str().as_bytes(),
        o.id.as_bytes(),
        &expires_at.to_le_bytes(),
    ]);
    let left = expires_at.saturating_sub(now.as_secs());
    let target: Vec<String> = o
        .descriptor
        .iter()
        .map(|e| match (&e.value, &e.prefix) {
            (Some(v), _) => format!("{}={v}", e.key),
            (None, Some(p)) => format!("{}={p}*", e.key),
            (None, None) => e.key.clone(),
        })
        .collect();
    let detail = format!(
        "override {} of [{}] lapses in {} min {} s; the rules apply again after that",
        o.id,
        target.join(", "),
        left / 60,
        left % 60
    );
    let mut event = notifier.bare_event(id, EventKind::OverrideExpiring, now, detail);
    event.domain = Some(o.domain.clone());
    event.override_ = Some(OverrideFacts {
        id: o.id.clone(),
        descriptor: o.descriptor.clone(),
        expires_at: super::rfc3339(Duration::from_secs(expires_at)),
        by: o.by.clone(),
        reason: o.reason.clone(),
    });
    event
}

/// Scans `source` every [`SCAN_EVERY`] until it answers `None`.
pub(super) async fn run(
    notifier: Notifier,
    blocks: watch::Receiver<Blocks>,
    source: impl Fn() -> Option<Vec<Override>> + Send + 'static,
) {
    let global = notifier.global_block();
    let mut raised = Raised::default();
    let mut tick = tokio::time::interval(SCAN_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(list) = source() else {
            return;
        };
        let now = notifier.shared.clock.now();
        let current = blocks.borrow().clone();
        for due in raised.due(&list, &current, global.as_deref(), now.as_secs()) {
            let event = event_of(&notifier, due.item, due.expires_at, now);
            notifier.offer(
                EventKind::OverrideExpiring,
                Envelope::Built(Box::new(event), due.scope),
            );
        }
    }
}
