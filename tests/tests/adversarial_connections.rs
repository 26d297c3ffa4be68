//! Idle-socket floods under a 1024 open-file limit: ~1,100 idle TCP connections to each listener
//! used to take every descriptor, after which neither listener accepted anyone and each failed
//! accept logged a warning. Now each listener keeps at most what the descriptors allow, closes
//! the idlest connection for a newcomer, and a well-behaved client is still answered.

use std::time::Duration;

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
use sluice_tests::attack::{RULES, grpc_check, http_check};
use sluice_tests::sluice::{Sluice, sample_of};
use tokio::net::TcpStream;

const FLOOD: usize = 1100;

#[tokio::test(flavor = "multi_thread")]
async fn an_idle_socket_flood_does_not_lock_clients_out() {
    // This process holds both floods: 2,200 sockets and its own.
    let limit = getrlimit(Resource::Nofile);
    if let Some(hard) = limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(hard),
                maximum: Some(hard),
            },
        );
    }
    let own = getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX);
    assert!(
        own >= 2 * FLOOD as u64 + 200,
        "the test needs {} descriptors, its hard limit is {own}",
        2 * FLOOD + 200
    );

    let sluice = Sluice::builder(RULES)
        .under(&["prlimit", "--nofile=1024:1024", "--"])
        // Long enough that eviction, not a timeout, is what frees the descriptors here.
        .arg("--header-read-timeout-ms")
        .arg("60000")
        .arg("--handshake-timeout-ms")
        .arg("60000")
        .start();
    // (1024 - 64 kept for other files) / 2 listeners.
    assert!(
        sluice.wait_for_log("\"max_connections\":480", Duration::from_secs(5)),
        "{:?}",
        sluice.logs()
    );

    let mut idle = Vec::with_capacity(2 * FLOOD);
    for _ in 0..FLOOD {
        for addr in [sluice.grpc_addr, sluice.http_addr] {
            idle.push(TcpStream::connect(addr).await.expect("connect"));
        }
    }
    // Both listeners still answer a newcomer, at once.
    let grpc = grpc_check(sluice.grpc_addr, Duration::from_secs(2)).await;
    let http = http_check(&sluice, Duration::from_secs(2)).await;
    println!(
        "after {FLOOD} idle sockets on each listener: gRPC answered in {grpc:?}, HTTP in {http:?}"
    );

    let scrape = sluice.metrics().await;
    for listener in ["grpc", "http"] {
        let sample = |name: &str, reason: &str| {
            let labels = match reason {
                "" => format!("{{listener=\"{listener}\"}}"),
                reason => format!("{{listener=\"{listener}\",reason=\"{reason}\"}}"),
            };
            sample_of(&scrape, &format!("sluice_connections_{name}{labels}"))
        };
        let accepted = sample("accepted_total", "");
        let open = sample("open", "");
        let evicted = sample("closed_by_server_total", "evicted");
        println!("{listener}: {accepted} accepted, {evicted} evicted, {open} open");
        assert!(open <= 480.0, "{listener}: {open} open");
        // Every connection accepted is open, was evicted to make room, or is one of the checks
        // (closed by their clients); evictions in progress are counted but still open.
        assert!(
            evicted + open + 2.0 >= accepted,
            "{listener}: {evicted} evicted of {accepted}"
        );
        // The checks connected after the flood, so every flood socket was accepted before them.
        assert!(accepted >= FLOOD as f64, "{listener}: {accepted} accepted");
        assert!(
            evicted >= (FLOOD - 480) as f64,
            "{listener}: {evicted} evicted"
        );
    }
    // Nothing was refused (every flood socket was idle), and accept never ran out of descriptors.
    let logs = sluice.logs();
    let warned: Vec<&String> = logs
        .iter()
        .filter(|l| l.contains("cannot accept") || l.contains("connection refused"))
        .collect();
    assert!(warned.is_empty(), "{warned:?}");
    drop(idle);
}
