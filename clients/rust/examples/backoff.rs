//! Calls an API behind NGINX and Sluice with the back-off client and prints what happened.
//!
//!   cargo run -p sluice-client --example backoff -- http://127.0.0.1:8000/orders demo 8 5
//!
//! Arguments: URL, the X-App-Id to send, how many requests to make, and the longest wait in
//! seconds the client may make before a retry (a longer `Retry-After` is reported instead).
//! With `examples/nginx/nginx.conf` in front of Sluice the first five requests pass, the next
//! ones are refused with a Retry-After the client either waits out or reports.

use std::time::Duration;

use sluice_client::{Backoff, Client, RetryPolicy};

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let url = args
        .next()
        .unwrap_or_else(|| "http://127.0.0.1:8000/orders".into());
    let app_id = args.next().unwrap_or_else(|| "demo".into());
    let requests: u32 = args.next().map_or(Ok(8), |n| n.parse())?;
    let max_wait: u64 = args.next().map_or(Ok(5), |n| n.parse())?;

    let policy = RetryPolicy {
        max_wait: Duration::from_secs(max_wait),
        ..RetryPolicy::default()
    };
    let client = Client::new(reqwest::Client::new(), Backoff::new(policy));
    for i in 1..=requests {
        let answer = client
            .send(|http| http.get(&url).header("x-app-id", &app_id))
            .await?;
        let mut line = format!(
            "request {i}: {} after {} attempt(s)",
            answer.reply.status, answer.attempts
        );
        if !answer.waits.is_empty() {
            line.push_str(&format!(", waited {:?}", answer.waits));
        }
        if let Some(stop) = answer.stopped {
            line.push_str(&format!(", stopped: {stop:?}"));
        }
        if let Some(detail) = answer.problem.as_ref().and_then(|p| p.detail.as_deref()) {
            line.push_str(&format!(" ({detail})"));
        }
        println!("{line}");
    }
    Ok(())
}
