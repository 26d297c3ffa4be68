//! Open loop: requests leave at a fixed rate whatever the server does, and each one's latency runs
//! from its *intended* send time, so a stall is charged to every request that should have been
//! sent during it (no coordinated omission).
//!
//! A pacer thread owns the schedule: it builds request `i`, sleeps until `start + i / rate` and
//! hands it to lane `i % connections`. Each lane is a task holding its connection and every
//! request outstanding on it; it records answers into its own tally. The pacer sleeps with the
//! OS timer rather than tokio's (whose resolution is a millisecond), and when it wakes late it
//! sends every request already due at once; how late each left is reported as `send_lag_us`,
//! and that lag is inside the latency figures, never subtracted from them. With `--send-tick-us`
//! it sleeps a tick past each due time, so that it wakes once per tick rather than per request.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};
use tokio::time::Instant;

use crate::Plan;
use crate::client::{Answer, Client};
use crate::tally::Tally;
use crate::workload::{Payload, XorShift};

/// One scheduled request.
pub struct Job {
    intended: Instant,
    payload: Payload,
    sent: usize,
}

/// Runs the schedule on its own OS thread until the deadline or the request cap, then drops the
/// lanes' senders so they drain and finish. Returns the requests it could not send because
/// `--max-outstanding` were already waiting (`CLIENT_BACKLOG`).
pub fn spawn_pacer(
    plan: Arc<Plan>,
    rate: u64,
    lanes: Vec<UnboundedSender<Job>>,
) -> std::thread::JoinHandle<anyhow::Result<Tally>> {
    std::thread::spawn(move || {
        let mut rng = XorShift::new(plan.seed, u64::MAX);
        let mut backlog = Tally::new()?;
        let start = plan.start.into_std();
        let deadline = plan.deadline.into_std();
        for i in 0u64.. {
            let intended = start + Duration::from_secs_f64(i as f64 / rate as f64);
            if intended >= deadline || !plan.claim() {
                break;
            }
            let payload = plan.workload.next(&mut rng);
            let sent = payload.descriptors(&plan.workload);
            let now = std::time::Instant::now();
            if intended > now {
                // Past the due time by a tick: every request due meanwhile leaves on this wake.
                std::thread::sleep(intended - now + plan.send_tick);
            }
            let intended = Instant::from_std(intended);
            if plan.outstanding.load(Ordering::Relaxed) >= plan.max_outstanding {
                if intended >= plan.measure_from {
                    let now = Instant::now();
                    backlog.record(
                        Answer {
                            outcome: crate::client::Outcome::Error("CLIENT_BACKLOG"),
                            empty_statuses: false,
                        },
                        Duration::ZERO,
                        now,
                    );
                }
                continue;
            }
            plan.outstanding.fetch_add(1, Ordering::Relaxed);
            let lane = &lanes[(i % lanes.len() as u64) as usize];
            if lane
                .send(Job {
                    intended,
                    payload,
                    sent,
                })
                .is_err()
            {
                anyhow::bail!("an open-loop lane stopped before the schedule ended");
            }
        }
        Ok(backlog)
    })
}

/// One connection's share of the schedule: sends each job as it arrives, without waiting for
/// earlier answers, and records each answer against the job's intended time.
pub async fn lane(
    client: Client,
    plan: Arc<Plan>,
    mut jobs: UnboundedReceiver<Job>,
) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let mut pending = FuturesUnordered::new();
    let mut open = true;
    while open || !pending.is_empty() {
        tokio::select! {
            Some((intended, answer)) = pending.next(), if !pending.is_empty() => {
                let done = Instant::now();
                plan.outstanding.fetch_sub(1, Ordering::Relaxed);
                if intended >= plan.measure_from {
                    tally.record(answer, done - intended, done);
                }
            }
            job = jobs.recv(), if open => match job {
                Some(Job { intended, payload, sent }) => {
                    if intended >= plan.measure_from {
                        tally.record_lag(Instant::now().saturating_duration_since(intended));
                    }
                    let client = client.clone();
                    let plan = Arc::clone(&plan);
                    pending.push(async move {
                        (intended, plan.send(&client, payload, sent).await)
                    });
                }
                None => open = false,
            },
        }
    }
    Ok(tally)
}
