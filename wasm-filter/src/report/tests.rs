use super::*;
use crate::value::{self, Value};

const MS: u64 = 1_000_000;

fn spec(max_batch: u32, max_pending: u32) -> Reports {
    Reports {
        descriptors: vec![0],
        cluster: "sluice".into(),
        path: "/reports".into(),
        authority: "sluice".into(),
        timeout_ms: 1000,
        max_batch,
        flush_ms: 1000,
        max_pending,
    }
}

fn report(value: &str, latency_us: u64, status: u16) -> Report {
    Report {
        entries: vec![("upstream".into(), value.into())],
        latency_us,
        status,
    }
}

fn parsed(batch: &Batch) -> Value {
    value::parse(&batch.body).unwrap()
}

#[test]
fn measures_latency_and_status_and_refuses_what_sluice_would() {
    let t0 = 5_000 * MS;
    assert_eq!(
        measure(t0, t0 + 12_345_678, Some(b"200")),
        Some((12_345, 200))
    );
    assert_eq!(measure(t0, t0, Some(b" 503 ")), Some((0, 503)));
    for bad in [&b""[..], b"abc", b"99", b"600", b"2000", b"\xff"] {
        assert_eq!(measure(t0, t0 + MS, Some(bad)), None, "{bad:?}");
    }
    assert_eq!(measure(t0, t0 + MS, None), None, "no :status");
    assert_eq!(
        measure(t0, t0 - 1, Some(b"200")),
        None,
        "the clock went back"
    );
    let hour = 3_600_000 * MS;
    assert_eq!(
        measure(t0, t0 + hour, Some(b"200")),
        Some((3_600_000_000, 200))
    );
    assert_eq!(measure(t0, t0 + hour + 1000, Some(b"200")), None);
}

#[test]
fn a_batch_is_the_json_sluice_reads() {
    let mut b = Buffer::new(&spec(10, 100));
    let weird = Report {
        entries: vec![
            ("upstream".into(), "pay\"ments\n".into()),
            ("tenant".into(), "é".into()),
        ],
        latency_us: 212_500,
        status: 503,
    };
    let filed = b.file([report("a", 7, 200), weird], 0);
    assert_eq!(
        filed,
        Filed {
            queued: 2,
            dropped: 0,
            batch_ready: false
        }
    );
    assert!(b.next("api", 999 * MS).is_none(), "not full, not due");
    let batch = b.next("api", 1000 * MS).unwrap();
    assert_eq!(batch.reports, 2);
    assert_eq!(
        String::from_utf8(batch.body.clone()).unwrap(),
        r#"{"domain":"api","reports":[{"descriptor":[{"key":"upstream","value":"a"}],"latency_ms":0.007,"status":200},{"descriptor":[{"key":"upstream","value":"pay\"ments\n"},{"key":"tenant","value":"é"}],"latency_ms":212.500,"status":503}]}"#
    );
    let doc = parsed(&batch);
    assert_eq!(
        doc.get("reports").unwrap().as_array().unwrap().len(),
        2,
        "{doc:?}"
    );
    assert!(b.is_empty());
}

#[test]
fn full_batches_go_at_once_one_post_in_flight_at_a_time() {
    let mut b = Buffer::new(&spec(3, 10));
    let filed = b.file((0..2).map(|i| report(&i.to_string(), 1000, 200)), 0);
    assert!(!filed.batch_ready);
    let filed = b.file((2..7).map(|i| report(&i.to_string(), 1000, 200)), 0);
    assert!(filed.batch_ready, "{filed:?}");
    let first = b.next("d", 0).unwrap();
    assert_eq!((first.reports, b.len()), (3, 4));
    b.sent(7, first.reports, 0);
    assert!(b.next("d", 0).is_none(), "a post is in flight");
    assert!(
        !b.file([report("x", 1, 200)], 0).batch_ready,
        "in flight: the answer sends the next"
    );
    assert_eq!(b.answered(8), None, "another callout of the root");
    assert_eq!(b.answered(7), Some(3));
    assert_eq!(b.answered(7), None, "answered once");
    let second = b.next("d", 0).unwrap();
    assert_eq!(second.reports, 3);
    let doc = parsed(&second);
    let values: Vec<&str> = doc
        .get("reports")
        .unwrap()
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            r.get("descriptor").unwrap().as_array().unwrap()[0]
                .get("value")
                .unwrap()
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(values, ["3", "4", "5"], "in the order they were filed");
    b.sent(9, 3, 0);
    assert_eq!(b.answered(9), Some(3));
    assert!(
        b.next("d", 999 * MS).is_none(),
        "two left, waiting since the last post"
    );
    assert_eq!(b.next("d", 1000 * MS).unwrap().reports, 2);
}

#[test]
fn overflow_is_dropped_and_counted() {
    let mut b = Buffer::new(&spec(2, 4));
    let filed = b.file((0..7).map(|i| report(&i.to_string(), 1, 200)), 0);
    assert_eq!((filed.queued, filed.dropped), (4, 3));
    assert_eq!(b.len(), 4);
    let empty = Report {
        entries: Vec::new(),
        latency_us: 1,
        status: 200,
    };
    b.next("d", 0).unwrap();
    let filed = b.file([empty], 0);
    assert_eq!(
        (filed.queued, filed.dropped),
        (0, 0),
        "no entries: never sent"
    );
}

#[test]
fn an_unanswered_post_is_taken_for_lost_after_twice_its_timeout_and_a_flush() {
    let mut b = Buffer::new(&spec(1, 10));
    b.file([report("a", 1, 200), report("b", 1, 200)], 0);
    let batch = b.next("d", 0).unwrap();
    b.sent(1, batch.reports, 0);
    assert_eq!(b.lost(3000 * MS), None);
    assert!(b.next("d", 3000 * MS).is_none());
    assert_eq!(b.lost(3001 * MS), Some(1));
    assert_eq!(
        b.answered(1),
        None,
        "forgotten: a late answer changes nothing"
    );
    assert_eq!(b.next("d", 3001 * MS).unwrap().reports, 1);
}

#[test]
fn batches_stay_under_sluices_body_bound() {
    let mut b = Buffer::new(&spec(5000, 5000));
    let big = "v".repeat(300 * 1024);
    b.file((0..5).map(|_| report(&big, 1, 200)), 0);
    let first = b.next("d", 1000 * MS).unwrap();
    assert_eq!(first.reports, 3, "three of 300 KiB fit 1 MiB, four do not");
    assert!(first.body.len() <= MAX_BODY);
    parsed(&first);
    assert_eq!(b.len(), 2);

    let mut b = Buffer::new(&spec(10, 10));
    let huge = "v".repeat(MAX_BODY);
    b.file([report(&huge, 1, 200), report("small", 1, 200)], 0);
    let batch = b.next("d", 1000 * MS).unwrap();
    assert_eq!((batch.reports, batch.oversized), (1, 1));
    let mut b = Buffer::new(&spec(10, 10));
    b.file([report(&huge, 1, 200)], 0);
    let batch = b.next("d", 1000 * MS).unwrap();
    assert_eq!((batch.reports, batch.oversized), (0, 1));
    assert!(b.is_empty());
}
