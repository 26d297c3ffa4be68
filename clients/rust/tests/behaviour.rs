//! Replays `clients/fixtures/behaviour.json`, the table of scripted answers and expected results
//! that the Rust, Python and TypeScript clients all pass (`clients/behaviour.md`). Every case of
//! every section runs; time is a manual clock that only the sleeper moves.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use sluice_client::{
    Backoff, BreakerState, CircuitBreaker, FixedJitter, Kind, ManualClock, Pacer, PacerSettings,
    Problem, RateView, Recorded, Reply, Reporter, ReporterSettings, RetryBudget, RetryPolicy, Stop,
    WorkQueue, retry_after,
};

fn fixture() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/behaviour.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("the fixture")).expect("JSON")
}

fn cases<'a>(f: &'a Value, section: &str) -> &'a Vec<Value> {
    let cases = f[section].as_array().expect(section);
    assert!(!cases.is_empty(), "{section} has no cases");
    cases
}

fn ms(v: &Value) -> Duration {
    Duration::from_secs_f64(v.as_f64().expect("ms") / 1000.0)
}

fn opt_u64(v: &Value) -> Option<u64> {
    v.as_u64()
}

fn headers(v: &Value) -> HeaderMap {
    let mut map = HeaderMap::new();
    for pair in v.as_array().expect("headers") {
        let name = HeaderName::from_bytes(pair[0].as_str().unwrap().as_bytes()).unwrap();
        map.append(
            name,
            HeaderValue::from_str(pair[1].as_str().unwrap()).unwrap(),
        );
    }
    map
}

fn view(v: &Value) -> RateView {
    RateView {
        limit: opt_u64(&v["limit"]),
        remaining: opt_u64(&v["remaining"]),
        reset_s: opt_u64(&v["reset_s"]),
        window_s: opt_u64(&v["window_s"]),
    }
}

fn pacer_settings(v: &Value) -> PacerSettings {
    let d = PacerSettings::default();
    let get = |k: &str, default: f64| v.get(k).and_then(Value::as_f64).unwrap_or(default);
    PacerSettings {
        safety: get("safety", d.safety),
        min_factor: get("min_factor", d.min_factor),
        decrease: get("decrease", d.decrease),
        increase: get("increase", d.increase),
    }
}

fn close(actual: Duration, expected: &Value, what: &str) {
    let (a, e) = (actual.as_secs_f64() * 1000.0, expected.as_f64().unwrap());
    assert!((a - e).abs() <= 1.0, "{what}: waited {a} ms, expected {e}");
}

#[test]
fn retry_after_values() {
    for case in cases(&fixture(), "retry_after") {
        let epoch = Duration::from_secs(case["now_epoch_s"].as_u64().unwrap());
        let got = retry_after(case["value"].as_str(), epoch).map(|d| d.as_millis() as u64);
        assert_eq!(got, case["expect_ms"].as_u64(), "{}", case["name"]);
    }
}

#[test]
fn problem_documents() {
    for case in cases(&fixture(), "problem") {
        let got = Problem::parse(
            case["content_type"].as_str(),
            case["body"].as_str().unwrap().as_bytes(),
        );
        let expect = &case["expect"];
        let name = &case["name"];
        if expect.is_null() {
            assert_eq!(got, None, "{name}");
            continue;
        }
        let got = got.unwrap_or_else(|| panic!("{name}: no document"));
        let kind = expect["kind"].as_str().map(|k| match k {
            "quota" => Kind::Quota,
            _ => Kind::Throttle,
        });
        let want = Problem {
            status: expect["status"].as_u64().map(|s| s as u16),
            title: expect["title"].as_str().map(str::to_owned),
            detail: expect["detail"].as_str().map(str::to_owned),
            rule: expect["rule"].as_str().map(str::to_owned),
            retry_after: expect["retry_after"].as_u64(),
            kind,
        };
        assert_eq!(got, want, "{name}");
    }
}

#[test]
fn rate_headers() {
    for case in cases(&fixture(), "rate_headers") {
        let got = RateView::read(&headers(&case["headers"]));
        let want = (!case["expect"].is_null()).then(|| view(&case["expect"]));
        assert_eq!(got, want, "{}", case["name"]);
    }
}

#[test]
fn budgets() {
    for case in cases(&fixture(), "budget") {
        let s = &case["settings"];
        let f = |k: &str| s[k].as_f64().unwrap();
        let budget = RetryBudget::new(f("ratio"), f("per_second"), f("max"));
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let at = ms(&step["at_ms"]);
            match step["op"].as_str().unwrap() {
                "deposit" => budget.deposit(at),
                _ => assert_eq!(
                    budget.withdraw(at),
                    step["expect"].as_bool().unwrap(),
                    "{} step {i}",
                    case["name"]
                ),
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("connection refused (scripted)")]
struct Refused;

#[tokio::test]
async fn retry_loops() {
    for case in cases(&fixture(), "retry") {
        let name = &case["name"];
        let p = &case["policy"];
        let policy = RetryPolicy {
            max_attempts: p["max_attempts"].as_u64().unwrap() as u32,
            base: ms(&p["base_ms"]),
            cap: ms(&p["cap_ms"]),
            max_wait: ms(&p["max_wait_ms"]),
        };
        let time = Arc::new(ManualClock::at_epoch(Duration::from_secs(
            case["now_epoch_s"].as_u64().unwrap(),
        )));
        let mut backoff = Backoff::new(policy)
            .with_sleeper(time.clone())
            .with_clock(time.clone())
            .with_jitter(Arc::new(FixedJitter(case["jitter"].as_f64().unwrap())));
        if let Some(b) = case["budget"].as_object() {
            let f = |k: &str| b[k].as_f64().unwrap();
            backoff = backoff.with_budget(Arc::new(RetryBudget::new(
                f("ratio"),
                f("per_second"),
                f("max"),
            )));
        }
        let replies: Mutex<VecDeque<Value>> = Mutex::new(
            case["replies"]
                .as_array()
                .unwrap()
                .iter()
                .cloned()
                .collect(),
        );
        let result = backoff
            .run(|| {
                let next = replies
                    .lock()
                    .unwrap()
                    .pop_front()
                    .expect("a scripted reply");
                async move {
                    if next.get("transport_error").is_some() {
                        return Err(Refused);
                    }
                    Ok(Reply {
                        status: next["status"].as_u64().unwrap() as u16,
                        headers: headers(&next["headers"]),
                        body: Bytes::from(next["body"].as_str().unwrap_or("").to_owned()),
                    })
                }
            })
            .await;
        let e = &case["expect"];
        let waits = |w: &[Duration]| w.iter().map(|d| d.as_millis() as u64).collect::<Vec<_>>();
        let want_waits: Vec<u64> = e["waits_ms"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap())
            .collect();
        let (attempts, got_waits, status, stopped, error) = match result {
            Ok(a) => (
                a.attempts,
                waits(&a.waits),
                Some(a.reply.status),
                a.stopped,
                false,
            ),
            Err(f) => (f.attempts, waits(&f.waits), None, Some(f.stop), true),
        };
        assert_eq!(
            u64::from(attempts),
            e["attempts"].as_u64().unwrap(),
            "{name}: attempts"
        );
        assert_eq!(got_waits, want_waits, "{name}: waits");
        assert_eq!(
            status.map(u64::from),
            e["status"].as_u64(),
            "{name}: status"
        );
        assert_eq!(
            stopped.map(Stop::name),
            e["stopped"].as_str(),
            "{name}: stopped"
        );
        assert_eq!(error, e["error"].as_bool().unwrap(), "{name}: error");
    }
}

#[test]
fn pacers() {
    for case in cases(&fixture(), "pacer") {
        let pacer = Pacer::new(pacer_settings(&case["settings"]));
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let at = ms(&step["at_ms"]);
            let what = format!("{} step {i}", case["name"]);
            if let Some(v) = step.get("observe") {
                pacer.observe(&view(v), at);
            } else if let Some(r) = step.get("refused") {
                pacer.refused((!r.is_null()).then(|| ms(r)), at);
            } else if let Some(w) = step.get("reserve") {
                close(pacer.reserve(at), w, &what);
            } else if let Some(w) = step.get("peek") {
                close(pacer.peek(at), w, &what);
            } else {
                panic!("{what}: unknown step");
            }
        }
    }
}

#[test]
fn queues() {
    for case in cases(&fixture(), "queue") {
        let pacer = Arc::new(Pacer::new(pacer_settings(&case["pacer_settings"])));
        if !case["observe"].is_null() {
            pacer.observe(&view(&case["observe"]), Duration::ZERO);
        }
        let queue = WorkQueue::new(pacer, case["max_depth"].as_u64().unwrap() as usize);
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let at = ms(&step["at_ms"]);
            let what = format!("{} step {i}", case["name"]);
            if let Some(item) = step.get("push") {
                let deadline = (!step["deadline_at"].is_null()).then(|| ms(&step["deadline_at"]));
                let pushed = queue.push(item.as_str().unwrap().to_owned(), deadline);
                let got = if pushed.is_ok() { "queued" } else { "full" };
                assert_eq!(got, step["expect"].as_str().unwrap(), "{what}");
            } else {
                let want = &step["take"];
                let taken = queue.take(at);
                let expired: Vec<String> = want["expired"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap().to_owned())
                    .collect();
                assert_eq!(taken.expired, expired, "{what}: expired");
                match taken.item {
                    Some((item, wait)) => {
                        assert_eq!(Some(item.as_str()), want["item"].as_str(), "{what}");
                        close(wait, &want["wait_ms"], &what);
                    }
                    None => assert!(want["item"].is_null(), "{what}: nothing taken"),
                }
            }
        }
    }
}

#[test]
fn breakers() {
    let name = BreakerState::name;
    for case in cases(&fixture(), "breaker") {
        let changes = Arc::new(Mutex::new(Vec::new()));
        let seen = changes.clone();
        let s = &case["settings"];
        let breaker =
            CircuitBreaker::new(s["threshold"].as_u64().unwrap() as u32, ms(&s["open_ms"]))
                .on_change(Box::new(move |from, to| {
                    seen.lock().unwrap().push(vec![name(from), name(to)]);
                }));
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let at = ms(&step["at_ms"]);
            let what = format!("{} step {i}", case["name"]);
            match step["op"].as_str().unwrap() {
                "allow" => assert_eq!(
                    breaker.allow(at),
                    step["expect"].as_bool().unwrap(),
                    "{what}"
                ),
                "success" => breaker.success(at),
                _ => breaker.failure(at),
            }
            assert_eq!(
                name(breaker.state()),
                step["state"].as_str().unwrap(),
                "{what}: state"
            );
        }
        let want: Vec<Vec<&str>> = case["changes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| {
                c.as_array()
                    .unwrap()
                    .iter()
                    .map(|s| s.as_str().unwrap())
                    .collect()
            })
            .collect();
        assert_eq!(*changes.lock().unwrap(), want, "{}", case["name"]);
    }
}

/// A latency of the fixture: a number, or `"NaN"` / `"Infinity"` (which JSON cannot spell).
fn latency(v: &Value) -> f64 {
    match v.as_str() {
        Some("NaN") => f64::NAN,
        Some("Infinity") => f64::INFINITY,
        _ => v.as_f64().unwrap(),
    }
}

fn descriptor(v: &Value) -> Vec<(String, String)> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| (e[0].as_str().unwrap().into(), e[1].as_str().unwrap().into()))
        .collect()
}

/// Records and the batches a flush cuts, without HTTP (`take_batches` and `body` are what
/// `flush` posts).
#[test]
fn reports() {
    for case in cases(&fixture(), "reports") {
        let s = &case["settings"];
        let d = ReporterSettings::default();
        let get = |k: &str, default: usize| s[k].as_u64().map_or(default, |v| v as usize);
        let settings = ReporterSettings {
            max_pending: get("max_pending", d.max_pending),
            max_batch: get("max_batch", d.max_batch),
            max_batch_bytes: get("max_batch_bytes", d.max_batch_bytes),
            ..d
        };
        let reporter = Reporter::new(
            reqwest::Client::new(),
            "http://sluice.invalid",
            case["domain"].as_str().unwrap(),
            settings,
        );
        for (i, step) in case["steps"].as_array().unwrap().iter().enumerate() {
            let what = format!("{} step {i}", case["name"]);
            let outcome = |r: Recorded| match r {
                Recorded::Pending => "pending",
                Recorded::Invalid => "invalid",
                Recorded::Overflow => "overflow",
            };
            if let Some(r) = step.get("record") {
                let got = reporter.record_ms(
                    descriptor(&r["descriptor"]),
                    latency(&r["latency_ms"]),
                    r["status"].as_u64().unwrap() as u16,
                );
                assert_eq!(outcome(got), step["expect"], "{what}");
            } else if let Some(r) = step.get("record_many") {
                for _ in 0..r["times"].as_u64().unwrap() {
                    let got = reporter.record_ms(
                        descriptor(&r["descriptor"]),
                        latency(&r["latency_ms"]),
                        r["status"].as_u64().unwrap() as u16,
                    );
                    assert_eq!(outcome(got), step["expect"], "{what}");
                }
            } else if let Some(want) = step.get("counts") {
                let got = reporter.counts();
                assert_eq!(got.invalid, want["invalid"], "{what}: invalid");
                assert_eq!(got.overflow, want["overflow"], "{what}: overflow");
                assert_eq!(got.pending, want["pending"], "{what}: pending");
            } else if let Some(want) = step.get("take") {
                let batches = reporter.take_batches();
                let sizes: Vec<Value> = batches.iter().map(|b| b.len().into()).collect();
                assert_eq!(&Value::from(sizes), want, "{what}: batch sizes");
                if let Some(first) = step.get("first") {
                    let body = reporter.body(&batches[0]);
                    assert_eq!(body["domain"], first["domain"], "{what}");
                    let (got, want) = (
                        body["reports"].as_array().unwrap(),
                        first["reports"].as_array().unwrap(),
                    );
                    assert_eq!(got.len(), want.len(), "{what}");
                    for (g, w) in got.iter().zip(want) {
                        // 0 and 0.0 are one latency; serde_json's equality tells them apart.
                        assert_eq!(g["latency_ms"].as_f64(), w["latency_ms"].as_f64(), "{what}");
                        assert_eq!(g["status"], w["status"], "{what}");
                        assert_eq!(g["descriptor"], w["descriptor"], "{what}");
                    }
                }
            } else {
                panic!("{what}: unknown step {step}");
            }
        }
    }
}
