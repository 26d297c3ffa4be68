use super::*;
use crate::limiter::HeaderNames;
use crate::storage::backend::redis::Auth;
use crate::storage::layer::failover::{DenyWith, FailureMode};
use crate::storage::layer::local_share::Share;
use clap::Parser;
use std::collections::HashMap;

/// The serve flags, parsed as the binary parses them.
#[derive(clap::Parser)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn resolve(args: &[&str], env: &[(&str, &str)]) -> Result<Settings, SettingsError> {
    let mut argv = vec!["sluice"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).expect("flags parse");
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Settings::resolve(cli.serve, |k| env.get(k).cloned())
}

#[test]
fn defaults() {
    let s = resolve(&["--config", "rules.yaml"], &[]).expect("valid");
    assert_eq!(s.grpc_addr, "0.0.0.0:8081".parse().expect("addr"));
    assert_eq!(s.http_addr, "0.0.0.0:8080".parse().expect("addr"));
    assert_eq!(s.backend, Backend::Memory);
    assert!(!s.charge_rejected);
    assert!(s.watch);
    assert_eq!(s.near_limit_ratio, 0.8);
    assert_eq!(s.header_style, HeaderStyle::Off);
    assert_eq!(s.hash_values_key_file, None);
    assert_eq!(s.worker_threads, None);
}

#[test]
fn worker_threads_are_at_least_one() {
    let s = resolve(&["--config", "a", "--worker-threads", "3"], &[]).expect("valid");
    assert_eq!(s.worker_threads, Some(3));
    let err = resolve(&["--config", "a", "--worker-threads", "0"], &[]).expect_err("zero");
    assert!(err.to_string().contains("--worker-threads"), "{err}");
}

#[test]
fn reference_environment_names() {
    let s = resolve(
        &[],
        &[
            ("RUNTIME_ROOT", "/data"),
            ("RUNTIME_SUBDIRECTORY", "ratelimit"),
            ("GRPC_HOST", "127.0.0.1"),
            ("GRPC_PORT", "9081"),
            ("HOST", "::1"),
            ("PORT", "9080"),
            ("BACKEND_TYPE", "redis"),
            ("REDIS_URL", "127.0.0.1:6379"),
            ("REDIS_AUTH", "user:secret"),
            ("MERGE_DOMAIN_CONFIG", "true"),
            ("SHADOW_MODE", "1"),
            ("QUOTA_MODE", "true"),
            ("CACHE_KEY_PREFIX", "rl:"),
            ("NEAR_LIMIT_RATIO", "0.9"),
            ("LIMIT_RESPONSE_HEADERS_ENABLED", "true"),
            ("LIMIT_REMAINING_HEADER", "X-Left"),
            ("LOG_LEVEL", "DEBUG"),
            ("LOG_FORMAT", "json"),
            ("REDIS_POOL_SIZE", "8"),
        ],
    )
    .expect("valid");
    assert_eq!(
        s.rules,
        RuleSource::Files(PathBuf::from("/data/ratelimit/config"))
    );
    assert_eq!(s.grpc_addr, "127.0.0.1:9081".parse().expect("addr"));
    assert_eq!(s.http_addr, "[::1]:9080".parse().expect("addr"));
    assert_eq!(s.backend, Backend::Redis);
    assert_eq!(
        s.redis_url.as_deref(),
        Some("redis://user:secret@127.0.0.1:6379")
    );
    assert!(s.merge_domains);
    assert!(s.shadow_mode);
    assert!(s.quota_mode);
    assert_eq!(s.key_prefix, "rl:");
    assert_eq!(s.near_limit_ratio, 0.9);
    let HeaderStyle::RateLimit(headers) = s.header_style else {
        panic!("headers on: {:?}", s.header_style);
    };
    assert_eq!(headers.remaining, "X-Left");
    assert_eq!(headers.limit, "RateLimit-Limit");
    assert_eq!(s.log_level, "debug");
    assert_eq!(s.log_format, LogFormat::Json);
    assert_eq!(s.redis_pool_size, 8);
}

#[test]
fn flags_win_over_reference_names() {
    let s = resolve(
        &[
            "--config",
            "a.yaml",
            "--grpc-addr",
            "127.0.0.1:1",
            "--charge-rejected",
        ],
        &[("GRPC_PORT", "9081"), ("RUNTIME_ROOT", "/x")],
    )
    .expect("valid");
    assert_eq!(s.rules, RuleSource::Files(PathBuf::from("a.yaml")));
    assert_eq!(s.grpc_addr, "127.0.0.1:1".parse().expect("addr"));
    assert!(s.charge_rejected);
}

#[test]
fn header_styles() {
    for (flag, want) in [
        ("--response-headers=off", HeaderStyle::Off),
        (
            "--response-headers",
            HeaderStyle::RateLimit(HeaderNames::default()),
        ),
        (
            "--response-headers=true",
            HeaderStyle::RateLimit(HeaderNames::default()),
        ),
        ("--response-headers=x-ratelimit", HeaderStyle::XRateLimit),
        ("--response-headers=IETF", HeaderStyle::Ietf),
    ] {
        let s = resolve(&["--config", "a", flag], &[]).expect("valid");
        assert_eq!(s.header_style, want, "{flag}");
    }
    let err = resolve(&["--config", "a", "--response-headers=fancy"], &[]).expect_err("bad");
    assert!(err.to_string().contains("x-ratelimit"), "{err}");
    let s = resolve(
        &["--config", "a", "--hash-values-key-file", "/run/secret"],
        &[],
    )
    .expect("valid");
    assert_eq!(s.hash_values_key_file, Some(PathBuf::from("/run/secret")));
}

#[test]
fn bad_values_are_named() {
    let err = resolve(&["--config", "a"], &[("SHADOW_MODE", "yes")]).expect_err("invalid");
    assert_eq!(
        err.to_string(),
        "SHADOW_MODE=\"yes\": expected true or false"
    );
    let err = resolve(&["--config", "a"], &[("BACKEND_TYPE", "memcache")]).expect_err("invalid");
    assert!(err.to_string().contains("BACKEND_TYPE"), "{err}");
    let err = resolve(&["--config", "a", "--backend", "redis"], &[]).expect_err("invalid");
    assert!(err.to_string().contains("--redis-url"), "{err}");
    let err = resolve(
        &["--config", "a"],
        &[
            ("REDIS_URL", "r:6379"),
            ("REDIS_TLS", "true"),
            ("REDIS_TLS_SKIP_HOSTNAME_VERIFICATION", "true"),
        ],
    )
    .expect_err("hostname checks stay on");
    assert!(err.to_string().contains("certificate"), "{err}");
    let err = resolve(&["--config", "a", "--redis-tls-cert", "c.pem"], &[]).expect_err("no key");
    assert!(err.to_string().contains("--redis-tls-key"), "{err}");
    let err = resolve(
        &["--config", "a"],
        &[("REDIS_TYPE", "sentinel"), ("REDIS_URL", "127.0.0.1:26379")],
    )
    .expect_err("no master name");
    assert!(err.to_string().contains("master"), "{err}");
    for flag in [
        "--failure-mode=maybe",
        "--deny-with=teapot",
        "--replicas=0",
        "--local-share=2",
        "--store-budget-ms=0",
        "--redis-type=ring",
    ] {
        assert!(resolve(&["--config", "a", flag], &[]).is_err(), "{flag}");
    }
    let err = resolve(&["--config", "a", "--log-level", "loud=="], &[]).expect_err("filter");
    assert!(err.to_string().contains("log level"), "{err}");
    let s = resolve(&["--config", "a"], &[("LOG_LEVEL", "WARNING")]).expect("logrus name");
    assert_eq!(s.log_level, "warn");
    let err = resolve(&[], &[]).expect_err("no config");
    assert!(err.to_string().contains("--config"), "{err}");
}

#[test]
fn store_deployments_tls_and_failure_handling() {
    let s = resolve(&["--config", "a"], &[]).expect("defaults");
    assert_eq!(s.store.redis_type, RedisType::Single);
    assert_eq!(s.store.budget, Duration::from_millis(10));
    assert_eq!(s.store.failure_mode, FailureMode::Deny);
    assert_eq!(s.store.deny_with, DenyWith::Unavailable);
    assert_eq!(s.store.share, Share::of_replicas(1));
    assert_eq!(s.store.l1_entries, 100_000);
    assert!(!s.store.tls);

    // The reference's names: the TLS files, the type, a cache size in bytes.
    let s = resolve(
        &["--config", "a"],
        &[
            ("REDIS_TYPE", "CLUSTER"),
            ("REDIS_URL", "10.0.0.1:7000,10.0.0.2:7000"),
            ("REDIS_AUTH", "sluice:pw"),
            ("REDIS_TLS", "true"),
            ("REDIS_TLS_CACERT", "/tls/ca.crt"),
            ("REDIS_TLS_CLIENT_CERT", "/tls/tls.crt"),
            ("REDIS_TLS_CLIENT_KEY", "/tls/tls.key"),
            ("LOCAL_CACHE_SIZE_IN_BYTES", "1280000"),
        ],
    )
    .expect("valid");
    assert_eq!(s.store.redis_type, RedisType::Cluster);
    assert_eq!(s.redis_url.as_deref(), Some("10.0.0.1:7000,10.0.0.2:7000"));
    assert_eq!(s.store.redis_auth, Some(Auth::parse("sluice:pw")));
    assert!(s.store.tls);
    assert_eq!(s.store.tls_ca, Some(PathBuf::from("/tls/ca.crt")));
    assert_eq!(s.store.tls_key, Some(PathBuf::from("/tls/tls.key")));
    assert_eq!(s.store.l1_entries, 10_000);

    let s = resolve(
        &[
            "--config",
            "a",
            "--redis-type",
            "sentinel",
            "--redis-url",
            "mymaster,127.0.0.1:26379",
            "--failure-mode",
            "local",
            "--deny-with",
            "over_limit",
            "--replicas",
            "4",
            "--store-budget-ms",
            "5",
        ],
        &[],
    )
    .expect("valid");
    assert_eq!(s.store.redis_type, RedisType::Sentinel);
    assert_eq!(s.store.failure_mode, FailureMode::Local);
    assert_eq!(s.store.deny_with, DenyWith::OverLimit);
    assert_eq!(s.store.share, Share::of_replicas(4));
    assert_eq!(s.store.budget, Duration::from_millis(5));
    let err = resolve(
        &[
            "--config",
            "a",
            "--redis-type",
            "cluster",
            "--key-prefix",
            "{rl}:",
        ],
        &[],
    )
    .expect_err("braces in a cluster prefix");
    assert!(err.to_string().contains("hash slot"), "{err}");
    let s = resolve(&["--config", "a", "--local-share", "0.25"], &[]).expect("valid");
    assert_eq!(s.store.share.fraction(), 0.25);
}

#[test]
fn local_batch_takes_an_interval_and_needs_redis() {
    let redis = [
        "--config",
        "a",
        "--backend",
        "redis",
        "--redis-url",
        "redis://127.0.0.1:6379",
    ];
    let s = resolve(&redis, &[]).expect("valid");
    assert_eq!(s.store.local_batch, None, "off by default");
    let with = |flag: &str| {
        let mut args = redis.to_vec();
        args.push(flag);
        resolve(&args, &[]).map(|s| s.store.local_batch)
    };
    let ms = |n| Some(Duration::from_millis(n));
    assert_eq!(with("--local-batch"), Ok(ms(200)));
    assert_eq!(with("--local-batch=50ms"), Ok(ms(50)));
    assert_eq!(with("--local-batch=2s"), Ok(ms(2000)));
    assert_eq!(with("--local-batch=150"), Ok(ms(150)));
    assert_eq!(with("--local-batch=off"), Ok(None));
    for bad in [
        "--local-batch=5ms",
        "--local-batch=2m",
        "--local-batch=fast",
    ] {
        let err = with(bad).expect_err(bad);
        assert!(err.to_string().contains("--local-batch"), "{err}");
    }
    let err = resolve(&["--config", "a", "--local-batch"], &[]).expect_err("memory");
    assert!(err.to_string().contains("--backend redis"), "{err}");
}

#[test]
fn the_pipeline_window_comes_from_the_flag_or_the_reference_names() {
    use crate::storage::backend::redis::Pipeline;
    let none = resolve(&["--config", "a.yaml"], &[]).expect("valid");
    assert_eq!(none.store.pipeline, Pipeline::default());
    let reference = resolve(
        &["--config", "a.yaml"],
        &[
            ("REDIS_PIPELINE_WINDOW", "150us"),
            ("REDIS_PIPELINE_LIMIT", "8"),
        ],
    )
    .expect("valid");
    assert_eq!(
        reference.store.pipeline,
        Pipeline {
            window: Duration::from_micros(150),
            limit: 8
        }
    );
    let flags = resolve(
        &[
            "--config",
            "a.yaml",
            "--redis-pipeline-window",
            "2ms",
            "--redis-pipeline-limit",
            "100",
        ],
        &[("REDIS_PIPELINE_WINDOW", "150us")],
    )
    .expect("valid");
    assert_eq!(flags.store.pipeline.window, Duration::from_millis(2));
    assert_eq!(
        flags.store.pipeline.limit, 64,
        "at most 64 checks share a call"
    );
    let zero = resolve(&["--config", "a.yaml"], &[("REDIS_PIPELINE_LIMIT", "0")]).expect("valid");
    assert_eq!(zero.store.pipeline.limit, 64, "0 means no limit of its own");
}

#[test]
fn a_pipeline_window_must_be_a_duration_shorter_than_the_store_budget() {
    let err = |args: &[&str], env: &[(&str, &str)]| {
        let mut all = vec!["--config", "a.yaml"];
        all.extend_from_slice(args);
        resolve(&all, env).expect_err("refused").to_string()
    };
    let long = err(&["--redis-pipeline-window", "10ms"], &[]);
    assert!(
        long.contains("--redis-pipeline-window") && long.contains("store budget"),
        "{long}"
    );
    let env = err(
        &["--store-budget-ms", "5"],
        &[("REDIS_PIPELINE_WINDOW", "5ms")],
    );
    assert!(env.contains("REDIS_PIPELINE_WINDOW"), "{env}");
    let bad = err(&["--redis-pipeline-window", "soon"], &[]);
    assert!(bad.contains("not a duration"), "{bad}");
    let bad_env = err(&[], &[("REDIS_PIPELINE_LIMIT", "many")]);
    assert!(bad_env.contains("REDIS_PIPELINE_LIMIT"), "{bad_env}");
    assert!(
        resolve(
            &["--config", "a.yaml", "--redis-pipeline-window", "9ms"],
            &[]
        )
        .is_ok()
    );
}
