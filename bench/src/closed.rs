//! Closed loop: `connections × in_flight` workers, each sending one request, waiting for its
//! answer and only then sending the next, so the offered load follows the server's speed.
//!
//! That makes runs comparable between builds, but like every closed-loop generator it
//! under-reports tail latency when the server stalls: a stalled worker sends nothing, so the stall
//! is sampled once, not once per request that would have arrived. Use the open loop for SLOs.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::Plan;
use crate::client::{Client, Outcome};
use crate::tally::Tally;
use crate::workload::XorShift;

pub async fn worker(client: Client, plan: Arc<Plan>, stream: u64) -> anyhow::Result<Tally> {
    let mut rng = XorShift::new(plan.seed, stream);
    let mut tally = Tally::new()?;
    // Both bounds are checked before every request: the deadline by time, `claim` by count.
    while Instant::now() < plan.deadline && plan.claim() {
        let payload = plan.workload.next(&mut rng);
        let sent = payload.descriptors(&plan.workload);
        let started = Instant::now();
        let answer = plan.send(&client, payload, sent).await;
        let done = Instant::now();
        if started >= plan.measure_from {
            tally.record(answer, done - started, done);
        }
        // With no server listening every call fails at once; a short pause keeps the loop from
        // spinning a core on reconnect attempts while the run waits out its deadline.
        if matches!(
            answer.outcome,
            Outcome::Error("UNAVAILABLE" | "CONNECT_FAILED")
        ) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    Ok(tally)
}
