//! Reports for adaptive limits (`clients/behaviour.md` §9, `docs/adaptive.md`): the app records
//! the latency and status of each call to an upstream an adaptive rule protects, and a
//! [`Reporter`] posts them to Sluice's `POST /reports` in batches.
//!
//! Recording never blocks and never does I/O: it checks the report, then pushes it on a bounded
//! queue under a lock held for a push. A report Sluice would refuse is dropped there, because
//! Sluice refuses a whole batch for one impossible report. A batch that fails is dropped, never
//! retried: Sluice decides each interval from the reports of that interval, so a late report
//! would only blur the next one.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use serde_json::{Value, json};

/// Sluice's own cap on reports per batch (`server/src/http/reports.rs`).
pub const MAX_BATCH: usize = 5_000;
/// The most entries Sluice takes in a report's descriptor.
pub const MAX_ENTRIES: usize = 64;
/// The longest latency Sluice takes: an hour.
pub const MAX_LATENCY_MS: f64 = 3_600_000.0;

/// One call's outcome, as Sluice reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub descriptor: Vec<(String, String)>,
    pub latency_ms: f64,
    pub status: u16,
}

impl Report {
    /// Whether Sluice would take it (a 400 for the whole batch otherwise).
    fn valid(&self) -> bool {
        !self.descriptor.is_empty()
            && self.descriptor.len() <= MAX_ENTRIES
            && self.latency_ms.is_finite()
            && (0.0..=MAX_LATENCY_MS).contains(&self.latency_ms)
            && (100..=599).contains(&self.status)
    }

    /// The estimate of its encoded size that batches are cut by.
    fn size(&self) -> usize {
        64 + self
            .descriptor
            .iter()
            .map(|(k, v)| 16 + k.len() + v.len())
            .sum::<usize>()
    }

    fn wire(&self) -> Value {
        let entries: Vec<Value> = self
            .descriptor
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        json!({"descriptor": entries, "latency_ms": self.latency_ms, "status": self.status})
    }
}

/// What became of a recorded report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Queued for the next flush.
    Pending,
    /// Dropped: Sluice would refuse it.
    Invalid,
    /// Dropped: `max_pending` reports were waiting.
    Overflow,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ReporterSettings {
    /// Reports waiting for a flush, at most; more are dropped.
    pub max_pending: usize,
    /// Reports per batch, at most (above [`MAX_BATCH`] counts as [`MAX_BATCH`]).
    pub max_batch: usize,
    /// Estimated bytes per batch, at most: half of Sluice's 1 MiB, room for JSON escaping.
    pub max_batch_bytes: usize,
    /// How often [`Reporter::run`] flushes.
    pub flush_interval: Duration,
}

impl Default for ReporterSettings {
    fn default() -> Self {
        Self {
            max_pending: 10_000,
            max_batch: 500,
            max_batch_bytes: 512 * 1024,
            flush_interval: Duration::from_secs(1),
        }
    }
}

/// Counts of reports. [`Reporter::flush`] returns one flush's `sent`, `failed`, `accepted` and
/// `unmatched`; [`Reporter::counts`] the totals.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ReportCounts {
    /// In batches Sluice answered 200.
    pub sent: u64,
    /// In batches that got no 200 (no answer, 4xx, 5xx): dropped.
    pub failed: u64,
    /// Of those sent, counted by an adaptive rule (Sluice's answer).
    pub accepted: u64,
    /// Of those sent, matching no adaptive rule (Sluice's answer).
    pub unmatched: u64,
    /// Dropped at record time: Sluice would refuse them.
    pub invalid: u64,
    /// Dropped at record time: `max_pending` were waiting.
    pub overflow: u64,
    /// Waiting for a flush now.
    pub pending: u64,
}

#[derive(Debug, Default)]
struct State {
    pending: VecDeque<Report>,
    counts: ReportCounts,
}

/// Buffers reports and posts them to one Sluice, for one domain. Clones share the buffer.
#[derive(Debug, Clone)]
pub struct Reporter {
    http: reqwest::Client,
    url: String,
    domain: String,
    settings: ReporterSettings,
    state: Arc<Mutex<State>>,
    /// Held for a whole flush, so two flushes never post out of order or twice.
    flushing: Arc<tokio::sync::Mutex<()>>,
}

impl Reporter {
    /// `base` is Sluice's HTTP address, e.g. `http://127.0.0.1:8080`.
    pub fn new(
        http: reqwest::Client,
        base: impl AsRef<str>,
        domain: impl Into<String>,
        settings: ReporterSettings,
    ) -> Self {
        Self {
            http,
            url: format!("{}/reports", base.as_ref().trim_end_matches('/')),
            domain: domain.into(),
            settings,
            state: Arc::default(),
            flushing: Arc::default(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves the queue consistent (each step is one
        // push, pop or add), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Buffers one call's latency and status; never blocks on I/O.
    pub fn record<K, V>(
        &self,
        descriptor: impl IntoIterator<Item = (K, V)>,
        latency: Duration,
        status: u16,
    ) -> Recorded
    where
        K: Into<String>,
        V: Into<String>,
    {
        self.record_ms(descriptor, latency.as_secs_f64() * 1000.0, status)
    }

    /// [`Reporter::record`] with the latency in milliseconds.
    pub fn record_ms<K, V>(
        &self,
        descriptor: impl IntoIterator<Item = (K, V)>,
        latency_ms: f64,
        status: u16,
    ) -> Recorded
    where
        K: Into<String>,
        V: Into<String>,
    {
        let report = Report {
            descriptor: descriptor
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
            latency_ms,
            status,
        };
        let mut state = self.state();
        if !report.valid() {
            state.counts.invalid += 1;
            Recorded::Invalid
        } else if state.pending.len() >= self.settings.max_pending {
            state.counts.overflow += 1;
            Recorded::Overflow
        } else {
            state.pending.push_back(report);
            Recorded::Pending
        }
    }

    /// The totals so far.
    pub fn counts(&self) -> ReportCounts {
        let state = self.state();
        ReportCounts {
            pending: state.pending.len() as u64,
            ..state.counts
        }
    }

    /// Takes everything pending, cut into the batches a flush posts (behaviour.md §9). For an app
    /// that posts them itself; [`Reporter::flush`] does this and posts.
    pub fn take_batches(&self) -> Vec<Vec<Report>> {
        let pending = std::mem::take(&mut self.state().pending);
        let most = self.settings.max_batch.clamp(1, MAX_BATCH);
        let mut batches: Vec<Vec<Report>> = Vec::new();
        let mut bytes = 0;
        for report in pending {
            let size = report.size();
            match batches.last_mut() {
                Some(batch)
                    if batch.len() < most && bytes + size <= self.settings.max_batch_bytes =>
                {
                    bytes += size;
                    batch.push(report);
                }
                _ => {
                    bytes = size;
                    batches.push(vec![report]);
                }
            }
        }
        batches
    }

    /// The body of `POST /reports` for one batch.
    pub fn body(&self, batch: &[Report]) -> Value {
        let reports: Vec<Value> = batch.iter().map(Report::wire).collect();
        json!({"domain": self.domain, "reports": reports})
    }

    /// Posts what is pending, batch by batch. Never fails: a batch without a 200 is dropped and
    /// counted in `failed`.
    pub async fn flush(&self) -> ReportCounts {
        let _one_at_a_time = self.flushing.lock().await;
        let mut this = ReportCounts::default();
        for batch in self.take_batches() {
            let n = batch.len() as u64;
            match self.post(&batch).await {
                Some(answer) => {
                    this.sent += n;
                    this.accepted += answer["accepted"].as_u64().unwrap_or(0);
                    this.unmatched += answer["unmatched"].as_u64().unwrap_or(0);
                }
                None => this.failed += n,
            }
        }
        let mut state = self.state();
        state.counts.sent += this.sent;
        state.counts.failed += this.failed;
        state.counts.accepted += this.accepted;
        state.counts.unmatched += this.unmatched;
        this
    }

    /// Sluice's answer to one batch, if it was a 200.
    async fn post(&self, batch: &[Report]) -> Option<Value> {
        let response = self
            .http
            .post(&self.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(self.body(batch).to_string())
            .send()
            .await
            .ok()?;
        if response.status() != http::StatusCode::OK {
            return None;
        }
        // A 200 whose body is unreadable still took the batch.
        let body = response.bytes().await.unwrap_or_default();
        Some(serde_json::from_slice(&body).unwrap_or(Value::Null))
    }

    /// Flushes every `flush_interval`, forever: `tokio::spawn(reporter.clone().run())`. At
    /// shutdown, abort the task and `flush().await` once more.
    pub async fn run(self) {
        let mut tick = tokio::time::interval(self.settings.flush_interval);
        // A flush slower than the interval delays the next one rather than bunching them.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            self.flush().await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::Mutex as StdMutex;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A `/reports` on 127.0.0.1 answering each POST with the next status of `script` (then
    /// 200), and keeping the bodies it got.
    async fn sluice(script: Vec<u16>) -> (String, Arc<StdMutex<Vec<Value>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let bodies = Arc::new(StdMutex::new(Vec::new()));
        let seen = bodies.clone();
        tokio::spawn(async move {
            let mut script = script.into_iter();
            loop {
                let (mut socket, _) = listener.accept().await.unwrap();
                let mut got = Vec::new();
                let mut buf = [0u8; 8192];
                let body = loop {
                    let n = socket.read(&mut buf).await.unwrap();
                    got.extend_from_slice(&buf[..n]);
                    let text = String::from_utf8_lossy(&got).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length: usize = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse().unwrap())
                            })
                            .unwrap();
                        if got.len() >= end + 4 + length {
                            break serde_json::from_slice::<Value>(&got[end + 4..]).unwrap();
                        }
                    }
                };
                let n = body["reports"].as_array().unwrap().len();
                seen.lock().unwrap().push(body);
                let status = script.next().unwrap_or(200);
                let answer = format!(r#"{{"accepted":{},"unmatched":1,"dropped":0}}"#, n - 1);
                let reply = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
                socket.write_all(reply.as_bytes()).await.unwrap();
            }
        });
        (base, bodies)
    }

    fn reporter(base: &str, max_batch: usize) -> Reporter {
        let settings = ReporterSettings {
            max_batch,
            flush_interval: Duration::from_millis(20),
            ..ReporterSettings::default()
        };
        Reporter::new(reqwest::Client::new(), base, "api", settings)
    }

    #[tokio::test]
    async fn a_failed_batch_is_dropped_and_counted_and_the_flush_goes_on() {
        let (base, bodies) = sluice(vec![200, 503, 200]).await;
        let reporter = reporter(&format!("{base}/"), 2);
        for ms in 1..=5 {
            let got = reporter.record([("upstream", "pay")], Duration::from_millis(ms), 200);
            assert_eq!(got, Recorded::Pending);
        }
        let flushed = reporter.flush().await;
        assert_eq!((flushed.sent, flushed.failed), (3, 2));
        // Sluice's counts of the two batches it took: (2 - 1) + (1 - 1) accepted, 1 + 1 unmatched.
        assert_eq!((flushed.accepted, flushed.unmatched), (1, 2));
        let bodies = bodies.lock().unwrap().clone();
        // Three posts, none repeated: the 503's batch is not retried.
        let latencies: Vec<Vec<f64>> = bodies
            .iter()
            .map(|b| {
                let reports = b["reports"].as_array().unwrap();
                reports
                    .iter()
                    .map(|r| r["latency_ms"].as_f64().unwrap())
                    .collect()
            })
            .collect();
        assert_eq!(latencies, [vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0]]);
        assert_eq!(bodies[0]["domain"], "api");
        assert_eq!(
            bodies[0]["reports"][0]["descriptor"],
            json!([{"key": "upstream", "value": "pay"}])
        );
        // Nothing pending: a second flush posts nothing.
        assert_eq!(reporter.flush().await, ReportCounts::default());
        let totals = reporter.counts();
        assert_eq!((totals.sent, totals.failed, totals.pending), (3, 2, 0));
    }

    #[tokio::test]
    async fn no_answer_counts_as_failed() {
        let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let reporter = reporter(&base, 500);
        reporter.record_ms([("upstream", "pay")], 3.0, 200);
        reporter.record_ms(Vec::<(String, String)>::new(), 3.0, 200);
        let flushed = reporter.flush().await;
        assert_eq!((flushed.sent, flushed.failed), (0, 1));
        let totals = reporter.counts();
        assert_eq!((totals.failed, totals.invalid, totals.pending), (1, 1, 0));
    }

    #[tokio::test]
    async fn run_flushes_in_the_background() {
        let (base, bodies) = sluice(vec![]).await;
        let reporter = reporter(&base, 500);
        let task = tokio::spawn(reporter.clone().run());
        reporter.record_ms([("upstream", "pay")], 7.5, 504);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while reporter.counts().sent == 0 {
            assert!(tokio::time::Instant::now() < deadline, "never flushed");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        task.abort();
        assert_eq!(bodies.lock().unwrap()[0]["reports"][0]["status"], 504);
    }
}
