//! Post-response reports for [adaptive limits](../../docs/adaptive.md): each response that came
//! from the upstream is reported to Sluice's `POST /reports` with its latency and status, once
//! per reported descriptor, so a limit can steer itself towards a latency or error target.
//!
//! A stream measures its response ([`measure`]) and files its reports in its worker's
//! [`Buffer`] when it ends; the root context posts them in batches ([`Buffer::next`]) on its
//! ticks, or soon after a batch fills. One post is in flight per worker at a time: while Sluice
//! is slow the buffer fills up to `max_pending` and drops what comes over it, instead of piling
//! up posts. A failed post is dropped, never retried: the reports are samples, and a retry loop
//! would only add load to a Sluice already in trouble.

use std::collections::VecDeque;

use crate::config::Reports;
use crate::value::write_str;

/// Sluice's largest `/reports` body (`server/src/http/reports.rs`): a bigger one is refused.
pub const MAX_BODY: usize = 1 << 20;
/// Sluice refuses a whole batch with a latency over an hour, so a longer one is never sent.
pub const MAX_LATENCY_US: u64 = 3_600_000_000;

/// One response as Sluice learns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub entries: Vec<(String, String)>,
    pub latency_us: u64,
    pub status: u16,
}

/// A response's latency in microseconds and its status, from the time the request was let
/// through upstream, the time its headers came back and their `:status`. `None` when the status
/// is not an HTTP status, the clock went back, or the latency is over what Sluice takes.
pub fn measure(since_ns: u64, now_ns: u64, status: Option<&[u8]>) -> Option<(u64, u16)> {
    let status = std::str::from_utf8(status?)
        .ok()?
        .trim()
        .parse::<u16>()
        .ok()
        .filter(|s| (100..=599).contains(s))?;
    let latency_us = now_ns.checked_sub(since_ns)? / 1000;
    (latency_us <= MAX_LATENCY_US).then_some((latency_us, status))
}

/// A post on its way.
#[derive(Debug, Clone, PartialEq, Eq)]
struct InFlight {
    token: u32,
    reports: usize,
    since_ns: u64,
}

/// A batch ready to post.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    pub body: Vec<u8>,
    pub reports: usize,
    /// Reports left out because one alone would not fit a body Sluice takes.
    pub oversized: usize,
}

/// What filing a response's reports did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Filed {
    pub queued: usize,
    /// Reports dropped because the buffer held `max_pending`.
    pub dropped: usize,
    /// A full batch waits and no post is in flight: post it now rather than at the next tick.
    pub batch_ready: bool,
}

/// The reports of one worker VM waiting to be posted.
#[derive(Debug)]
pub struct Buffer {
    pending: VecDeque<Report>,
    max_batch: usize,
    max_pending: usize,
    flush_ns: u64,
    /// How long a post may go unanswered before it is taken for lost (the host should always
    /// answer by its timeout; this only keeps a host that does not from stopping the reports).
    lost_ns: u64,
    /// When the oldest pending report was filed.
    oldest_ns: u64,
    in_flight: Option<InFlight>,
}

impl Buffer {
    pub fn new(spec: &Reports) -> Self {
        let ms = |n: u32| u64::from(n) * 1_000_000;
        Self {
            pending: VecDeque::new(),
            max_batch: spec.max_batch as usize,
            max_pending: spec.max_pending as usize,
            flush_ns: ms(spec.flush_ms),
            lost_ns: ms(spec.timeout_ms).saturating_mul(2) + ms(spec.flush_ms),
            oldest_ns: 0,
            in_flight: None,
        }
    }

    /// Files reports at `now_ns`, dropping those over `max_pending`. A report without entries
    /// is left out: Sluice would refuse the whole batch for it.
    pub fn file(&mut self, reports: impl IntoIterator<Item = Report>, now_ns: u64) -> Filed {
        let mut filed = Filed::default();
        for r in reports.into_iter().filter(|r| !r.entries.is_empty()) {
            if self.pending.len() >= self.max_pending {
                filed.dropped += 1;
                continue;
            }
            if self.pending.is_empty() {
                self.oldest_ns = now_ns;
            }
            self.pending.push_back(r);
            filed.queued += 1;
        }
        filed.batch_ready = self.in_flight.is_none() && self.pending.len() >= self.max_batch;
        filed
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The next batch to post at `now_ns`: when no post is in flight, and either a full batch
    /// waits or the oldest report has waited `flush_ms`. Its reports leave the buffer.
    pub fn next(&mut self, domain: &str, now_ns: u64) -> Option<Batch> {
        let due = self.pending.len() >= self.max_batch
            || now_ns.saturating_sub(self.oldest_ns) >= self.flush_ns;
        if self.in_flight.is_some() || self.pending.is_empty() || !due {
            return None;
        }
        let mut out = String::with_capacity(64 + 96 * self.max_batch.min(self.pending.len()));
        out.push_str("{\"domain\":");
        write_str(&mut out, domain);
        out.push_str(",\"reports\":[");
        let closing = "]}".len();
        let (mut reports, mut oversized) = (0, 0);
        let mut item = String::new();
        while reports < self.max_batch {
            let Some(r) = self.pending.front() else {
                break;
            };
            item.clear();
            encode(&mut item, r);
            let comma = usize::from(reports > 0);
            if out.len() + comma + item.len() + closing > MAX_BODY {
                if reports > 0 {
                    break; // the next batch takes it
                }
                oversized += 1;
                self.pending.pop_front();
                continue;
            }
            if comma == 1 {
                out.push(',');
            }
            out.push_str(&item);
            reports += 1;
            self.pending.pop_front();
        }
        out.push_str("]}");
        // What is left waits from now: it was not due on its own account.
        self.oldest_ns = now_ns;
        if reports == 0 {
            return (oversized > 0).then(|| Batch {
                body: Vec::new(),
                reports: 0,
                oversized,
            });
        }
        Some(Batch {
            body: out.into_bytes(),
            reports,
            oversized,
        })
    }

    /// The post of a batch of `reports` went out as callout `token`.
    pub fn sent(&mut self, token: u32, reports: usize, now_ns: u64) {
        self.in_flight = Some(InFlight {
            token,
            reports,
            since_ns: now_ns,
        });
    }

    /// The answer to callout `token` came: the number of reports its post held, when it was
    /// the post in flight (other callouts of the root answer there too).
    pub fn answered(&mut self, token: u32) -> Option<usize> {
        let f = self.in_flight.take_if(|f| f.token == token)?;
        Some(f.reports)
    }

    /// Forgets a post unanswered for far longer than its timeout; the number of its reports.
    pub fn lost(&mut self, now_ns: u64) -> Option<usize> {
        let lost_ns = self.lost_ns;
        let f = self
            .in_flight
            .take_if(|f| now_ns.saturating_sub(f.since_ns) > lost_ns)?;
        Some(f.reports)
    }
}

/// One report as `/reports` reads it; the latency in milliseconds with three decimals, written
/// without floating point.
fn encode(out: &mut String, r: &Report) {
    out.push_str("{\"descriptor\":[");
    for (j, (k, v)) in r.entries.iter().enumerate() {
        out.push_str(if j == 0 { "{\"key\":" } else { ",{\"key\":" });
        write_str(out, k);
        out.push_str(",\"value\":");
        write_str(out, v);
        out.push('}');
    }
    out.push_str(&format!(
        "],\"latency_ms\":{}.{:03},\"status\":{}}}",
        r.latency_us / 1000,
        r.latency_us % 1000,
        r.status
    ));
}

#[cfg(test)]
mod tests;
