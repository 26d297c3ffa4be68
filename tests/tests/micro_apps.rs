//! `examples/micro-apps/README.md` replayed as written: every `sh` block that talks to
//! `localhost:8080` runs under `bash` with the real `curl` against a fresh `sluice` serving the
//! example's rules, and its output must match the `text` block that follows it. Only the seconds
//! until a window ends (`t=`, `Retry-After`, `retry_after`, "retry in N s",
//! `durationUntilReset`) are free; headers the README leaves out are not compared, and a JSON body
//! in the README is a subset of the real one.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use sluice_tests::sluice::Sluice;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// (language, text) of every fenced block.
fn blocks(markdown: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut current: Option<(String, String)> = None;
    for line in markdown.lines() {
        let fence = line.trim_start().strip_prefix("```");
        match (&mut current, fence) {
            (None, Some(lang)) => current = Some((lang.trim().to_owned(), String::new())),
            (Some(_), Some(_)) => out.extend(current.take()),
            (Some((_, text)), None) => {
                text.push_str(line);
                text.push('\n');
            }
            (None, None) => {}
        }
    }
    out
}

/// Replaces the digits after each `marker` (up to `end`, which must follow them) with `_`.
fn mask_after(text: &str, marker: &str, end: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find(marker) {
        out.push_str(&rest[..at + marker.len()]);
        rest = &rest[at + marker.len()..];
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 && rest[digits..].starts_with(end) {
            out.push('_');
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

fn mask(text: &str) -> String {
    mask_after(&mask_after(text, "t=", ""), "retry in ", " s")
}

fn mask_json(v: &mut Value) {
    match v {
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                if k == "retry_after" || k == "durationUntilReset" {
                    *v = Value::Null;
                } else {
                    mask_json(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_json),
        Value::String(s) => *s = mask(s),
        _ => {}
    }
}

/// Every member of `want` is in `got` with an equal (sub)value; lists have the same length.
fn is_subset(want: &Value, got: &Value) -> bool {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => w
            .iter()
            .all(|(k, v)| g.get(k).is_some_and(|gv| is_subset(v, gv))),
        (Value::Array(w), Value::Array(g)) => {
            w.len() == g.len() && w.iter().zip(g).all(|(a, b)| is_subset(a, b))
        }
        _ => want == got,
    }
}

/// Status line, headers (lower-case names) and body of `curl -si` output.
fn split_http(text: &str) -> (String, Vec<(String, String)>, String) {
    let (head, body) = text.split_once("\n\n").unwrap_or((text, ""));
    let mut lines = head.lines();
    let status = lines.next().unwrap_or_default().trim().to_owned();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| {
            let k = k.trim().to_ascii_lowercase();
            let v = if k == "retry-after" {
                "_".to_owned()
            } else {
                mask(v.trim())
            };
            (k, v)
        })
        .collect();
    (status, headers, body.trim().to_owned())
}

fn compare(step: usize, command: &str, want: &str, got: &str) {
    let context = || format!("step {step}:\n{command}\nexpected:\n{want}\ngot:\n{got}");
    if !want.starts_with("HTTP/") {
        let norm = |t: &str| -> Vec<String> {
            t.lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
                .filter(|l| !l.is_empty())
                .collect()
        };
        assert_eq!(norm(want), norm(got), "{}", context());
        return;
    }
    let (want_status, want_headers, want_body) = split_http(want);
    let (got_status, got_headers, got_body) = split_http(got);
    assert_eq!(want_status, got_status, "{}", context());
    for (name, value) in &want_headers {
        assert!(
            got_headers.iter().any(|(n, v)| n == name && v == value),
            "header {name}: {value} missing; {}",
            context()
        );
    }
    if !want_body.is_empty() {
        let mut w: Value = serde_json::from_str(&want_body)
            .unwrap_or_else(|e| panic!("step {step}: the README's body is not JSON: {e}"));
        let mut g: Value = serde_json::from_str(&got_body)
            .unwrap_or_else(|e| panic!("step {step}: the answer is not JSON: {e}\n{got_body}"));
        mask_json(&mut w);
        mask_json(&mut g);
        assert!(is_subset(&w, &g), "body differs; {}", context());
    }
}

#[test]
fn the_readme_runs_as_written() {
    let readme =
        std::fs::read_to_string(root().join("examples/micro-apps/README.md")).expect("README");
    let rules_dir = root().join("examples/micro-apps/config");
    let rules = std::fs::read_to_string(rules_dir.join("quotas.yaml")).expect("rules");
    let sluice = Sluice::builder(&rules)
        .arg("--response-headers=ietf")
        .start();
    let address = sluice.http_addr.to_string();
    // The README's steps fill per-minute windows (aligned to the epoch, on Sluice's wall clock)
    // and show what is left; started late in a minute, the steps would straddle a reset. They
    // take seconds, so they start in the first half of a minute.
    wait_for_early_in_a_minute();

    let blocks = blocks(&readme);
    let mut steps = 0;
    for (i, (lang, text)) in blocks.iter().enumerate() {
        if lang != "sh" || !text.contains("localhost:8080") {
            continue;
        }
        let (next_lang, want) = blocks
            .get(i + 1)
            .unwrap_or_else(|| panic!("no output shown after:\n{text}"));
        assert_eq!(
            next_lang, "text",
            "the block after a request shows its answer:\n{text}"
        );
        let command = text.replace("localhost:8080", &address);
        let out = Command::new("bash")
            .args(["-o", "pipefail", "-c", &command])
            .output()
            .expect("bash (and curl, installed by scripts/test.sh)");
        assert!(
            out.status.success(),
            "{command}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let got = String::from_utf8_lossy(&out.stdout).replace("\r\n", "\n");
        steps += 1;
        compare(steps, text, want, &got);
    }
    assert_eq!(steps, 7, "the README's requests were not all found");
}

/// Returns once the wall clock is in the first 30 seconds of a minute (at most a 30 s wait).
fn wait_for_early_in_a_minute() {
    let second_of_minute = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs()
            % 60
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(31);
    while second_of_minute() >= 30 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        second_of_minute() < 30,
        "the clock did not reach a new minute"
    );
}
