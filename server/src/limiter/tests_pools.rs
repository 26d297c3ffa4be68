//! Leases, fair share and overflow through `RateLimiter::check`: what a client sends and sees.

use std::time::Duration;

use super::*;
use crate::clock::ManualClock;
use crate::config::parse_str;
use crate::storage::backend::memory::MemoryStore;

const RULES: &str = r#"
domain: d
descriptors:
  - key: upload
    rate_limits:
      - {concurrency: 2, lease_ttl: 30, name: uploads}
      - {unit: hour, requests_per_unit: 100}
  - key: job
    rate_limit: {concurrency: 1, lease_ttl: 60}
  - key: tenant
    rate_limit: {unit: minute, capacity: 30, weights: {gold: 2}}
  - key: member
    rate_limit: {unit: minute, capacity: 2, standing: {penalty: 0.5, after: 1, recover_after: 1}}
  - key: team
    rate_limit: {unit: hour, requests_per_unit: 3, name: team}
    descriptors:
      - key: app
        rate_limit: {unit: hour, requests_per_unit: 2, name: app, overflow: parent}
"#;

/// A round hour.
const T0: Duration = Duration::from_secs(1_700_000_000 - 1_700_000_000 % 3600);

struct Fixture {
    clock: Arc<ManualClock>,
    limiter: RateLimiter<Arc<MemoryStore>>,
}

fn fixture() -> Fixture {
    fixture_with(LimiterOptions::default())
}

fn fixture_with(options: LimiterOptions) -> Fixture {
    let clock = Arc::new(ManualClock::new(T0));
    let store = Arc::new(MemoryStore::new(10_000, clock.clone()));
    let limiter = RateLimiter::new(
        parse_str("rules.yaml", RULES).unwrap(),
        store,
        Arc::new(Metrics::new()),
        options,
    );
    Fixture { clock, limiter }
}

fn desc(entries: &[(&str, &str)]) -> Descriptor {
    Descriptor::from_parts(
        entries.iter().map(|(k, v)| (k.to_string(), v.to_string())),
        None,
        None,
        false,
    )
}

fn with_lease(entries: &[(&str, &str)], lease: &str, release: bool) -> Descriptor {
    let mut all: Vec<(&str, &str)> = entries.to_vec();
    all.push((LEASE_ENTRY, lease));
    Descriptor {
        negative_hits: release,
        ..desc(&all)
    }
}

fn req(descriptors: Vec<Descriptor>) -> CheckRequest {
    CheckRequest {
        domain: "d".into(),
        descriptors,
        hits_addend: 0,
    }
}

impl Fixture {
    async fn check(&self, descriptors: Vec<Descriptor>) -> Decision {
        self.limiter.check(&req(descriptors)).await.unwrap()
    }

    fn header<'d>(d: &'d Decision, name: &str) -> Option<&'d str> {
        d.response_headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[tokio::test]
async fn a_lease_is_acquired_announced_renewed_and_released() {
    let f = fixture();
    let first = f.check(vec![desc(&[("upload", "u1")])]).await;
    assert_eq!(first.overall, Code::Ok);
    let grant = first.lease.unwrap();
    assert_eq!(grant.ttl, Duration::from_secs(30));
    let id = grant.id.to_string();
    assert_eq!(Fixture::header(&first, LEASE_ID_HEADER), Some(id.as_str()));
    assert_eq!(Fixture::header(&first, LEASE_TTL_HEADER), Some("30"));
    let status = &first.statuses[0];
    assert_eq!(
        status.current_limit.as_ref().unwrap().name.as_deref(),
        Some("uploads")
    );
    assert_eq!(status.limit_remaining, 1);

    f.clock.advance(Duration::from_secs(10));
    let second = f.check(vec![desc(&[("upload", "u1")])]).await;
    assert_ne!(
        second.lease.unwrap().id,
        grant.id,
        "every request its own lease"
    );
    let full = f.check(vec![desc(&[("upload", "u1")])]).await;
    assert_eq!(full.overall, Code::OverLimit);
    assert!(full.lease.is_none());
    assert_eq!(
        Fixture::header(&full, "Retry-After"),
        Some("20"),
        "the first lease's expiry"
    );
    let problem = full.rejection.unwrap().problem;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("holds all 2 of its concurrent leases"),
        "{problem:?}"
    );

    // Renewing through the descriptor: OK, the lease announced again, the hourly limit untouched.
    f.clock.advance(Duration::from_secs(15));
    let renewed = f
        .check(vec![with_lease(&[("upload", "u1")], &id, false)])
        .await;
    assert_eq!(renewed.overall, Code::Ok);
    assert_eq!(renewed.lease.unwrap().id, grant.id);
    // 25 s in: without the renewal the first lease would expire in 5 s; now the pool's soonest
    // expiry is the second lease's, at 40 s.
    let full = f.check(vec![desc(&[("upload", "u1")])]).await;
    assert_eq!(Fixture::header(&full, "Retry-After"), Some("15"));

    let released = f
        .check(vec![with_lease(&[("upload", "u1")], &id, true)])
        .await;
    assert_eq!(released.overall, Code::Ok);
    assert!(released.lease.is_none());
    assert_eq!(released.statuses[0].limit_remaining, 1);
    let again = f.check(vec![desc(&[("upload", "u1")])]).await;
    assert_eq!(again.overall, Code::Ok);

    let look = f
        .check(vec![Descriptor {
            hits_addend: Some(0),
            ..desc(&[("upload", "u1")])
        }])
        .await;
    assert_eq!(look.overall, Code::Ok);
    let metrics = f.limiter.metrics().encode();
    for line in [
        "sluice_lease_acquisitions_total{rule=\"d.upload\"} 3",
        "sluice_lease_renewals_total{rule=\"d.upload\"} 1",
        "sluice_lease_rejections_total{rule=\"d.upload\"} 2",
        "sluice_lease_releases_total{rule=\"d.upload\"} 1",
        "sluice_lease_pool_capacity{rule=\"d.upload\"} 2",
        "sluice_lease_pool_in_use{rule=\"d.upload\"} 2",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn the_rate_limits_beside_a_pool_count_requests_not_renewals() {
    let f = fixture_with(LimiterOptions {
        header_style: HeaderStyle::Ietf,
        ..LimiterOptions::default()
    });
    let grant = f.check(vec![desc(&[("upload", "u")])]).await.lease.unwrap();
    let id = grant.id.to_string();
    for _ in 0..5 {
        f.check(vec![with_lease(&[("upload", "u")], &id, false)])
            .await;
    }
    f.check(vec![with_lease(&[("upload", "u")], &id, true)])
        .await;
    let look = f
        .check(vec![Descriptor {
            hits_addend: Some(0),
            ..desc(&[("upload", "u")])
        }])
        .await;
    // Only the acquisition counted against the hourly limit: 99 of 100 left.
    let current = Fixture::header(&look, "RateLimit").unwrap();
    assert!(current.contains("\"uploads\";r=2;t=0"), "{current}");
    assert!(current.contains("\"d.upload/3600s\";r=99;"), "{current}");
}

#[tokio::test]
async fn bad_lease_requests_are_invalid() {
    let f = fixture();
    let release_without_id = Descriptor {
        negative_hits: true,
        ..desc(&[("job", "j")])
    };
    let err = f
        .limiter
        .check(&req(vec![release_without_id]))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("needs the lease id in a sluice.lease_id entry"),
        "{err}"
    );
    let err = f
        .limiter
        .check(&req(vec![with_lease(&[("job", "j")], "not-an-id", true)]))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("is not a lease id"), "{err}");
    let twice = desc(&[
        ("job", "j"),
        (LEASE_ENTRY, &"a".repeat(32)),
        (LEASE_ENTRY, &"b".repeat(32)),
    ]);
    let err = f.limiter.check(&req(vec![twice])).await.unwrap_err();
    assert!(
        err.to_string().contains("more than one sluice.lease_id"),
        "{err}"
    );
    // A lease nobody holds releases nothing and is not an error.
    let ghost = f
        .check(vec![with_lease(&[("job", "j")], &"c".repeat(32), true)])
        .await;
    assert_eq!(ghost.overall, Code::Ok);
}

#[tokio::test]
async fn fair_share_tenants_are_the_values_and_weights_come_from_the_rule() {
    let f = fixture();
    // Gold (weight 2) and a default tenant (weight 1) both hammering: 20 and 10 of 30.
    let mut admitted = (0, 0);
    for _ in 0..60 {
        if f.check(vec![desc(&[("tenant", "gold")])]).await.overall == Code::Ok {
            admitted.0 += 1;
        }
        if f.check(vec![desc(&[("tenant", "tin")])]).await.overall == Code::Ok {
            admitted.1 += 1;
        }
    }
    assert_eq!(admitted, (20, 10));
    let over = f.check(vec![desc(&[("tenant", "tin")])]).await;
    let status = &over.statuses[0];
    assert_eq!(status.current_limit.as_ref().unwrap().requests_per_unit, 30);
    assert_eq!(status.duration_until_reset, Some(Duration::from_secs(60)));
}

#[tokio::test]
async fn an_app_over_its_limit_runs_on_its_teams_budget() {
    let f = fixture();
    let app = |a: &str| desc(&[("team", "t"), ("app", a)]);
    for _ in 0..2 {
        let d = f.check(vec![app("a")]).await;
        assert_eq!(
            d.statuses[0]
                .current_limit
                .as_ref()
                .unwrap()
                .name
                .as_deref(),
            Some("app")
        );
    }
    // Over its own 2: the team's 3 carry it, and the answer shows the team's budget.
    for left in [2, 1, 0] {
        let d = f.check(vec![app("a")]).await;
        assert_eq!(d.overall, Code::Ok);
        let s = &d.statuses[0];
        assert_eq!(
            s.current_limit.as_ref().unwrap().name.as_deref(),
            Some("team")
        );
        assert_eq!(s.limit_remaining, left);
    }
    let d = f.check(vec![app("b")]).await;
    assert_eq!(d.overall, Code::Ok, "another app still has its own limit");
    let d = f.check(vec![app("a")]).await;
    assert_eq!(d.overall, Code::OverLimit);
    assert_eq!(
        d.statuses[0]
            .current_limit
            .as_ref()
            .unwrap()
            .name
            .as_deref(),
        Some("app")
    );
    // Sending the team's own descriptor too: the team counter counts every request once.
    let f = fixture();
    let both = || vec![desc(&[("team", "u")]), app("x")];
    let mut admitted = 0;
    for _ in 0..5 {
        if f.check(both()).await.overall == Code::Ok {
            admitted += 1;
        }
    }
    assert_eq!(admitted, 3, "the team's 3 per hour bound the whole team");
}

#[tokio::test]
async fn refusals_by_a_pool_with_standing_are_recorded_for_its_controller() {
    let f = fixture();
    for _ in 0..2 {
        let d = f.check(vec![desc(&[("member", "a")])]).await;
        assert_eq!(d.overall, Code::Ok);
    }
    assert!(f.limiter.refusals().take("d.member").is_empty());
    for _ in 0..3 {
        let d = f.check(vec![desc(&[("member", "a")])]).await;
        assert_eq!(d.overall, Code::OverLimit);
    }
    // `b` comes once `a` has spent the window: refused within its own guarantee (one of two
    // units), which is not its doing, so not recorded.
    let d = f.check(vec![desc(&[("member", "b")])]).await;
    assert_eq!(d.overall, Code::OverLimit);
    let taken = f.limiter.refusals().take("d.member");
    assert_eq!(taken.into_iter().collect::<Vec<_>>(), ["a"]);
    // A pool without `standing` records nothing.
    let mut last = Code::Ok;
    for _ in 0..31 {
        last = f.check(vec![desc(&[("tenant", "t")])]).await.overall;
    }
    assert_eq!(last, Code::OverLimit);
    assert!(f.limiter.refusals().take("d.tenant").is_empty());
}
