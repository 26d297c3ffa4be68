//! Rule files an attacker (or a careless generator) could write: a descriptor tree 1,000 levels
//! deep (1,500 passed `check-config`, started, and then killed every replica's reload thread), two
//! megabytes of nested lists (it crashed `check-config`), alias bombs of a few hundred bytes (they
//! grew the server to 1.4 GB or aborted it), a file far past any real one. Each is refused with
//! its file, line and reason by `check-config`, by start-up and by hot reload alike, within a
//! bounded time and under a 256 MiB data limit, while a running server keeps serving its rules.

use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use sluice_tests::rls::{OVER_LIMIT, descriptor, request};
use sluice_tests::sluice::{Sluice, run_to_exit_under};

/// A data-segment limit far above what any real rule file needs, far below what the bombs used
/// to take.
const DATA_LIMIT: &str = "--data=268435456";

const GOOD: &str = "
domain: edge
descriptors:
  - key: app_id
    rate_limit: { unit: hour, requests_per_unit: 1 }
";

/// A descriptor tree `levels` deep, indented as tightly as YAML allows (the 1,500-level tree of
/// the report, at this indentation, is past the file-size bound by itself).
fn deep_descriptors(levels: usize) -> String {
    let mut text = String::from("domain: deep\ndescriptors:\n");
    for level in 0..levels {
        let pad = " ".repeat(2 * level);
        writeln!(text, "{pad}- key: k{level}").expect("write");
        writeln!(text, "{pad}  descriptors:").expect("write");
    }
    text
}

fn alias_bomb() -> String {
    let mut text = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for level in 1..10 {
        let items = vec![format!("*a{}", level - 1); 10].join(", ");
        writeln!(text, "a{level}: &a{level} [{items}]").expect("write");
    }
    text.push_str("domain: bomb\n");
    text
}

/// Each bomb, named, with what its error must say.
fn bombs() -> Vec<(&'static str, String, &'static str)> {
    let depth = 1024 * 1024;
    vec![
        (
            "deep descriptors",
            deep_descriptors(1000),
            "nest deeper than",
        ),
        (
            "nested block lists",
            format!("domain:\n{}x\n", "- ".repeat(depth)),
            "nest deeper than",
        ),
        (
            "nested flow lists",
            format!("domain: {}{}", "[".repeat(depth), "]".repeat(depth)),
            "recursion limit",
        ),
        ("alias bomb", alias_bomb(), "aliases expanded"),
        (
            "alias of a large scalar",
            format!(
                "big: &big \"{}\"\ncopies: [{}]\ndomain: d\n",
                "x".repeat(1 << 20),
                "*big, ".repeat(20)
            ),
            "aliases expanded",
        ),
        (
            "five megabytes",
            format!("domain: d\n# {}\n", "x".repeat(5 << 20)),
            "larger than 4 MiB",
        ),
    ]
}

/// Runs `sluice args…` under the data limit until it exits (bounded): its exit code, stderr and
/// how long it took.
fn run_limited(args: &[&str]) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let (status, stderr) = run_to_exit_under(
        &["prlimit", DATA_LIMIT, "--"],
        args,
        Duration::from_secs(30),
    );
    (status.and_then(|s| s.code()), stderr, started.elapsed())
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).expect("write bomb");
    path.to_str().expect("utf-8").to_owned()
}

#[test]
fn check_config_and_start_up_refuse_every_bomb_with_its_position() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (name, text, says) in bombs() {
        let path = write(dir.path(), "bomb.yaml", &text);
        let (status, stderr, took) = run_limited(&["check-config", &path]);
        println!("check-config, {name}: exit {status:?} in {took:?}");
        assert_eq!(status, Some(1), "{name}: {stderr}");
        assert!(stderr.contains("bomb.yaml"), "{name}: {stderr}");
        assert!(stderr.contains(says), "{name}: {stderr}");
        assert!(took < Duration::from_secs(10), "{name}: {took:?}");

        // Start-up reads the same way and refuses the same file.
        let (status, stderr, _) = run_limited(&[
            "--config",
            &path,
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ]);
        assert_eq!(status, Some(1), "start-up, {name}: {stderr}");
        assert!(stderr.contains(says), "start-up, {name}: {stderr}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn hot_reload_refuses_every_bomb_and_keeps_serving() {
    let mut sluice = Sluice::builder(GOOD)
        .under(&["prlimit", DATA_LIMIT, "--"])
        .start();
    let mut client = sluice.grpc().await;
    let spent = request("edge", vec![descriptor(&[("app_id", "a")])]);
    client
        .should_rate_limit(spent.clone())
        .await
        .expect("check");
    let mut rejected = 0;
    for (name, text, says) in bombs() {
        sluice.write_rules("rules.yaml", &text);
        rejected += 1;
        let lines = sluice.wait_for_logs(
            "rule set change rejected",
            rejected,
            Duration::from_secs(20),
        );
        assert_eq!(lines.len(), rejected, "{name}: no rejection logged");
        assert!(
            lines[rejected - 1].contains(says),
            "{name}: {}",
            lines[rejected - 1]
        );
        assert!(sluice.is_running(), "{name} killed the server");
        // The old rules still decide.
        let r = client
            .should_rate_limit(spent.clone())
            .await
            .expect("still answering");
        assert_eq!(r.get_ref().overall_code, OVER_LIMIT, "{name}");
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", sluice.pid())).expect("status");
    let peak = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .expect("VmHWM")
        .to_owned();
    println!("after {rejected} bombs reloaded: peak {peak}");
    let peak_kb: u64 = peak
        .trim_start_matches("VmHWM:")
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("kB");
    assert!(peak_kb < 256 * 1024, "peak resident memory {peak_kb} kB");
}
