//! The `notifications:` block: what loads, and every refusal with its `file:line:column`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::notifications::{EventKind, EventSet, WebhookUrl};
use super::*;

const KEY: &str = "0123456789abcdef-signing-key\n";

/// A directory holding `hook.key`, and the path a rule file in it would have.
fn dir_with_key() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("hook.key"), KEY).unwrap();
    let file = dir.path().join("rules.yaml");
    (dir, file)
}

fn rules(block: &str) -> String {
    format!(
        "domain: api\ndescriptors:\n  - key: tenant\n    rate_limit: {{unit: day, requests_per_unit: 10}}\n{block}"
    )
}

fn load_at(file: &Path, text: &str, opts: &LoadOptions) -> Result<RuleSet, ConfigErrors> {
    parse_many(&[(file, text)], opts)
}

/// The errors of loading `text` as `rules.yaml` beside the key, relative to the directory.
fn errors(text: &str, opts: &LoadOptions) -> Vec<String> {
    let (dir, file) = dir_with_key();
    let err = load_at(&file, text, opts).expect_err("expected errors");
    let prefix = format!("{}/", dir.path().display());
    err.iter()
        .map(|e| e.to_string().replace(&prefix, ""))
        .collect()
}

#[test]
fn a_full_block_loads_with_its_key_read_beside_the_file() {
    let (_dir, file) = dir_with_key();
    let text = rules(
        "notifications:\n  events: [near_limit, quota_exhausted]\n  override_lead_secs: 120\n  \
         webhooks:\n    - url: https://hooks.example.com:8443/sluice?team=a\n      \
         signing_key_file: hook.key\n      timeout_ms: 500\n      max_attempts: 3\n      \
         queue_size: 10\n  redis_stream: {key: \"sluice:events\", max_len: 100}\n",
    );
    let set = load_at(&file, &text, &LoadOptions::default()).unwrap();
    let block = set.options["api"].notifications.as_ref().unwrap();
    assert_eq!(
        block.events,
        EventSet::of([EventKind::NearLimit, EventKind::QuotaExhausted])
    );
    assert_eq!(block.override_lead, Duration::from_secs(120));
    let hook = &block.webhooks[0];
    assert_eq!(hook.signing_key.bytes(), KEY.trim_end().as_bytes());
    assert_eq!(hook.url.authority(), "hooks.example.com:8443");
    assert_eq!(hook.url.path_and_query, "/sluice?team=a");
    assert!(hook.url.https);
    assert_eq!(
        (hook.timeout, hook.max_attempts, hook.queue_size),
        (Duration::from_millis(500), 3, 10)
    );
    let stream = block.redis_stream.as_ref().unwrap();
    assert_eq!(
        (stream.key.as_str(), stream.max_len),
        ("sluice:events", 100)
    );
    // `/rlconfig` says what is configured, never where (a webhook path may hold a secret).
    assert!(
        set.dump.contains(
            "domain api: notifications=[webhooks=1 redis_stream=sluice:events \
             events=near_limit,quota_exhausted]"
        ),
        "{}",
        set.dump
    );
    assert!(!set.dump.contains("hooks.example.com"));
}

#[test]
fn defaults_take_every_event() {
    let (_dir, file) = dir_with_key();
    let text = rules("notifications:\n  redis_stream: {key: events}\n");
    let set = load_at(&file, &text, &LoadOptions::default()).unwrap();
    let block = set.options["api"].notifications.as_ref().unwrap();
    assert_eq!(block.events, EventSet::ALL);
    assert_eq!(block.redis_stream.as_ref().unwrap().max_len, 10_000);
    assert_eq!(block.override_lead, Duration::from_secs(600));
}

#[test]
fn bad_blocks_are_refused_where_they_stand() {
    let opts = LoadOptions::default();
    let cases: &[(&str, &str)] = &[
        (
            "notifications:\n  events: [near_limit, over_quota]\n  redis_stream: {key: e}\n",
            "rules.yaml:6:24: unknown event `over_quota`; expected one of: near_limit, \
             quota_exhausted, pool_full, trial_would_block, breaker_open, breaker_closed, \
             override_expiring, adaptive_change",
        ),
        (
            "notifications:\n  webhooks:\n    - url: ftp://hooks.example.com/x\n      \
             signing_key_file: hook.key\n",
            "rules.yaml:7:12: `url` \"ftp://hooks.example.com/x\": the scheme must be http or \
             https, not ftp",
        ),
        (
            "notifications:\n  webhooks:\n    - url: hooks.example.com/x\n      \
             signing_key_file: hook.key\n",
            "rules.yaml:7:12: `url` \"hooks.example.com/x\" needs http:// or https://",
        ),
        (
            "notifications:\n  webhooks:\n    - url: http://hooks.example.com/x\n",
            "rules.yaml:7:7: a webhook needs `signing_key_file`: every event is signed \
             (HMAC-SHA256)",
        ),
        (
            "notifications:\n  redis_stream: {key: e, max_len: 0}\n",
            "rules.yaml:6:35: `max_len` must be at least 1, found '0'",
        ),
        (
            "notifications:\n  events: [near_limit]\n",
            "rules.yaml:6:3: `notifications` needs a sink: `webhooks` (a list) or \
             `redis_stream`",
        ),
        (
            "notifications:\n  webhooks:\n    - url: http://h/x\n      signing_key_file: \
             hook.key\n      retries: 3\n",
            "rules.yaml:9:7: unknown field `retries` in a webhook; expected one of: url, \
             signing_key_file, timeout_ms, max_attempts, queue_size",
        ),
        (
            "notifications: [redis_stream]\n",
            "rules.yaml:5:16: `notifications` must be a mapping with `webhooks` or \
             `redis_stream`, found a list",
        ),
        (
            "notifications:\n  webhooks:\n    - url: http://h/x\n      signing_key_file: \
             hook.key\n      timeout_ms: 0\n",
            "rules.yaml:9:19: `timeout_ms` must be at least 1, found '0'",
        ),
    ];
    for (block, want) in cases {
        assert_eq!(errors(&rules(block), &opts), [*want], "{block}");
    }
}

#[test]
fn key_files_that_cannot_serve_are_refused_at_their_line() {
    let (dir, file) = dir_with_key();
    std::fs::write(dir.path().join("short.key"), "too short\n").unwrap();
    let text = rules(
        "notifications:\n  webhooks:\n    - url: http://a/x\n      signing_key_file: missing.key\n    \
         - url: http://b/x\n      signing_key_file: short.key\n    - url: http://c/x\n      \
         signing_key_file: /dev/zero\n",
    );
    let err = load_at(&file, &text, &LoadOptions::default()).unwrap_err();
    let lines: Vec<String> = err.iter().map(ToString::to_string).collect();
    let at = |line| format!("{}:{line}:25: ", file.display());
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert_eq!(
        lines[2],
        format!("{}signing_key_file /dev/zero is not a regular file", at(12))
    );
    assert!(
        lines[0].starts_with(&format!(
            "{}cannot read signing_key_file {}",
            at(8),
            dir.path().join("missing.key").display()
        )),
        "{lines:?}"
    );
    assert_eq!(
        lines[1],
        format!(
            "{}the signing key in {} is 9 bytes; it needs at least 16",
            at(10),
            dir.path().join("short.key").display()
        )
    );
}

#[test]
fn a_redis_stream_needs_the_redis_store() {
    let text = rules("notifications:\n  redis_stream: {key: e}\n");
    let memory = LoadOptions {
        memory_store: true,
        ..LoadOptions::default()
    };
    assert_eq!(
        errors(&text, &memory),
        [
            "rules.yaml:6:17: `redis_stream` needs the Redis counter store (--backend redis): the \
          memory store has no Redis to write the stream to"
        ]
    );
}

#[test]
fn merged_files_give_the_block_once() {
    let (dir, file) = dir_with_key();
    let other = dir.path().join("more.yaml");
    let one = rules("notifications:\n  redis_stream: {key: e}\n");
    let two = "domain: api\ndescriptors:\n  - key: user\n    rate_limit: {unit: day, requests_per_unit: 1}\n\
               notifications:\n  redis_stream: {key: f}\n";
    let opts = LoadOptions {
        merge_domains: true,
        ..LoadOptions::default()
    };
    let err = parse_many(
        &[(file.as_path(), one.as_str()), (other.as_path(), two)],
        &opts,
    )
    .unwrap_err()
    .to_string();
    assert_eq!(
        err,
        format!(
            "{}:6:3: `notifications` for domain 'api' are already given at {}:6:3: give them in \
             one file of the domain",
            other.display(),
            file.display()
        )
    );
}

#[test]
fn a_notifications_file_holds_the_block_alone() {
    let (dir, _) = dir_with_key();
    let path = dir.path().join("notify.yaml");
    let good = "notifications:\n  events: [breaker_open, breaker_closed]\n  webhooks:\n    - url: \
                http://127.0.0.1:9/hook\n      signing_key_file: hook.key\n";
    let block = parse_notifications(&path, good, &LoadOptions::default()).unwrap();
    assert_eq!(
        block.events,
        EventSet::of([EventKind::BreakerOpen, EventKind::BreakerClosed])
    );
    assert_eq!(block.webhooks[0].url.authority(), "127.0.0.1:9");

    let bad = "domain: api\nnotifications:\n  redis_stream: {key: e, max_len: 0}\n";
    let err = parse_notifications(&path, bad, &LoadOptions::default())
        .unwrap_err()
        .to_string();
    let at = path.display();
    assert_eq!(
        err,
        format!(
            "{at}:1:1: unknown field `domain` at the top level of a notifications file; expected \
             one of: notifications\n{at}:3:35: `max_len` must be at least 1, found '0'"
        )
    );
    let missing = load_notifications(&dir.path().join("absent.yaml"), &LoadOptions::default());
    assert!(missing.unwrap_err().to_string().contains("absent.yaml"));
}

#[test]
fn webhook_urls() {
    let url = WebhookUrl::parse("http://[::1]:8080").unwrap();
    assert_eq!((url.host.as_str(), url.port), ("::1", 8080));
    assert_eq!(url.authority(), "[::1]:8080");
    assert_eq!(url.path_and_query, "/");
    assert_eq!(url.host_header(), "[::1]:8080");
    let default_port = WebhookUrl::parse("HTTPS://h/p").unwrap();
    assert_eq!(default_port.port, 443);
    assert_eq!(
        (default_port.host_header(), default_port.authority()),
        ("h".to_owned(), "h:443".to_owned())
    );
    assert!(
        WebhookUrl::parse("https://user:pw@h/p")
            .unwrap_err()
            .contains("carries credentials")
    );
    assert!(WebhookUrl::parse("/just/a/path").is_err());
}

#[test]
fn one_load_reports_every_problem_of_a_block() {
    let text = rules(
        "notifications:\n  events: [near_limit, over_quota]\n  webhooks:\n    - url: ftp://h/x\n      \
         signing_key_file: missing.key\n  redis_stream: {key: e, max_len: 0}\n",
    );
    let got = errors(&text, &LoadOptions::default());
    let at: Vec<&str> = got.iter().map(|e| e.split(": ").next().unwrap()).collect();
    assert_eq!(
        at,
        [
            "rules.yaml:6:24",
            "rules.yaml:8:12",
            "rules.yaml:9:25",
            "rules.yaml:10:35"
        ],
        "{got:#?}"
    );
    assert!(got[2].contains("cannot read signing_key_file"), "{got:#?}");
}
