//! The parts every fault-injection test shares: Sluice with one domain per failure policy under
//! steady load, the two timelines (kill, restart, hang and resume one node; kill a master and
//! wait for its replica's promotion), and the checks each timeline's answers must pass. A test
//! file then reads as its deployment and the node it breaks.

use std::time::{Duration, Instant};

use super::{
    Phase, assert_decisions, budget, count, decided_within, margin, metric, metrics, normal_again,
    rules,
};
use crate::load::{Answer, Load, Sample};
use crate::rls::{descriptor, request};
use crate::sluice::Sluice;

/// The load's requests, by position: one domain per failure policy, named after it.
pub const ALLOW: usize = 0;
pub const DENY: usize = 1;
pub const LOCAL: usize = 2;

async fn pause_for(d: Duration) {
    tokio::time::sleep(d).await;
}

/// Sluice deciding through Redis under steady load.
pub struct UnderLoad {
    pub sluice: Sluice,
    load: Load,
    /// When the load started.
    pub t0: Instant,
}

impl UnderLoad {
    /// Sluice on Redis (`redis`: `--redis-type`, `--redis-url` …) with one domain per policy of
    /// `modes` (`allow`, `deny`, then optionally `local`), the fault budget, `deny` answering
    /// `OVER_LIMIT`, and 250 ms to connect; once it is ready (so the healthy phase is decided by
    /// Redis), two workers check every domain in turn every 5 ms.
    pub async fn start(modes: &[&str], shard_by: bool, redis: &[&str]) -> Self {
        let mut builder = Sluice::builder(&rules(modes[0], shard_by));
        for mode in &modes[1..] {
            builder = builder.file(&format!("{mode}.yaml"), &rules(mode, shard_by));
        }
        builder = builder.arg("--backend").arg("redis");
        for arg in redis {
            builder = builder.arg(arg);
        }
        let sluice = builder
            .arg("--store-budget-ms")
            .arg(&budget().as_millis().to_string())
            .arg("--deny-with")
            .arg("over_limit")
            .arg("--redis-timeout-ms")
            .arg("250")
            .start();
        let requests = modes
            .iter()
            .map(|d| request(d, vec![descriptor(&[("k", "v")])]))
            .collect();
        sluice.wait_ready(Duration::from_secs(10)).await;
        let load = Load::start(
            sluice.grpc_addr,
            requests,
            2,
            Duration::from_millis(5),
            Duration::from_secs(60),
        )
        .await;
        Self {
            sluice,
            load,
            t0: Instant::now(),
        }
    }

    /// One second healthy, then the node is killed (`Step::Kill`), restarted after 1.5 s
    /// (`Step::Restart`, then `Step::Rejoin` until it serves again), left 2.5 s, hung
    /// (`Step::Pause`) for 1.5 s, resumed (`Step::Resume`) and left 2.5 s. Each fault has the
    /// instant it started and the instant it was in effect: answers sent in between may still
    /// come from Redis.
    pub async fn kill_restart_hang(self, mut fault: impl FnMut(Step)) -> KillAndHang {
        let mut step = |s| tokio::task::block_in_place(|| fault(s));
        let t0 = self.t0;
        pause_for(Duration::from_secs(1)).await;
        let killing = Instant::now();
        step(Step::Kill);
        let killed = Instant::now();
        pause_for(Duration::from_millis(1500)).await;
        step(Step::Restart);
        let restarted = Instant::now();
        step(Step::Rejoin);
        let back = Instant::now();
        eprintln!(
            "the restarted node served again {:?} after its process started",
            back.duration_since(restarted)
        );
        pause_for(Duration::from_millis(2500)).await;
        let stopping = Instant::now();
        step(Step::Pause);
        let stopped = Instant::now();
        pause_for(Duration::from_millis(1500)).await;
        let resuming = Instant::now();
        step(Step::Resume);
        let resumed = Instant::now();
        pause_for(Duration::from_millis(2500)).await;
        let samples = self.load.stop().await;
        KillAndHang {
            sluice: self.sluice,
            samples,
            t0,
            killing,
            killed,
            restarted,
            back,
            stopping,
            stopped,
            resuming,
            resumed,
            end: Instant::now(),
        }
    }

    /// One second healthy, then `kill` kills the master serving the load's counters in
    /// `deployment`, and `promoted` is polled (for up to 20 s) until it names the replica that
    /// took over; the load then runs 2.5 s more.
    pub async fn fail_over<D, T: std::fmt::Debug>(
        self,
        deployment: &mut D,
        kill: impl FnOnce(&mut D),
        mut promoted: impl FnMut(&mut D) -> Option<T>,
    ) -> FailedOver<T> {
        let t0 = self.t0;
        pause_for(Duration::from_secs(1)).await;
        let killing = Instant::now();
        tokio::task::block_in_place(|| kill(deployment));
        let killed = Instant::now();
        let deadline = Instant::now() + Duration::from_secs(20);
        let new_master = loop {
            if let Some(m) = tokio::task::block_in_place(|| promoted(deployment)) {
                break m;
            }
            assert!(Instant::now() < deadline, "no replica was promoted");
            pause_for(Duration::from_millis(20)).await;
        };
        let promoted = Instant::now();
        pause_for(Duration::from_millis(2500)).await;
        let samples = self.load.stop().await;
        eprintln!(
            "failover: {new_master:?} took over {:?} after the kill",
            promoted.duration_since(killed)
        );
        FailedOver {
            sluice: self.sluice,
            samples,
            t0,
            killing,
            killed,
            promoted,
            end: Instant::now(),
            new_master,
        }
    }
}

/// What [`UnderLoad::kill_restart_hang`] asks of the test's node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `SIGKILL`.
    Kill,
    /// Start the process again.
    Restart,
    /// Wait until the restarted node serves the load's counters (a Cluster node rejoins its
    /// peers first).
    Rejoin,
    /// `SIGSTOP`.
    Pause,
    /// `SIGCONT`.
    Resume,
}

/// The answers of a kill, restart, hang and resume.
pub struct KillAndHang {
    pub sluice: Sluice,
    pub samples: Vec<Sample>,
    t0: Instant,
    killing: Instant,
    killed: Instant,
    restarted: Instant,
    back: Instant,
    stopping: Instant,
    stopped: Instant,
    resuming: Instant,
    resumed: Instant,
    end: Instant,
}

impl KillAndHang {
    /// Every answer within the budget plus the margin (phases named `label: …`) and a decision;
    /// `allow` and `local` always admit; `deny` admits while healthy and refuses while the node
    /// is killed or hung; normal decisions within 2 s of each return. Then, with `stored`
    /// reading a domain's count in Redis: nothing Redis acknowledged is lost, `local`'s hits
    /// reached Redis, and the metrics show the policies, the reconciliation and the breaker
    /// opening. Returns the metrics text for the test's own checks.
    pub async fn check(&self, label: &str, stored: impl Fn(&str) -> u64) -> String {
        let s = &self.samples;
        let bound = budget() + margin();
        let phases = [
            Phase::new(format!("{label}: healthy"), s, self.t0, self.killing),
            Phase::new(
                format!("{label}: killed (SIGKILL)"),
                s,
                self.killing,
                self.restarted,
            ),
            Phase::new(
                format!("{label}: restarted"),
                s,
                self.restarted,
                self.stopping,
            ),
            Phase::new(
                format!("{label}: hung (SIGSTOP)"),
                s,
                self.stopping,
                self.resumed,
            ),
            Phase::new(
                format!("{label}: resumed (SIGCONT)"),
                s,
                self.resumed,
                self.end,
            ),
        ];
        for p in &phases {
            p.report_and_bound(bound);
        }
        assert_decisions(s, self.t0);
        // The policies while Redis is away, and normal decisions otherwise.
        for p in &phases {
            for request in [ALLOW, LOCAL] {
                assert!(
                    p.answers(request).iter().all(|a| *a == Answer::Ok),
                    "{}",
                    p.name
                );
            }
        }
        let healthy = decided_within(s, DENY, self.t0, self.killing);
        assert!(healthy.iter().all(|a| *a == Answer::Ok), "{healthy:?}");
        for (name, from, to) in [
            ("killed", self.killed, self.restarted),
            ("hung", self.stopped, self.resuming),
        ] {
            let deny = decided_within(s, DENY, from, to);
            assert!(
                !deny.is_empty() && deny.iter().all(|a| *a == Answer::OverLimit),
                "{name}: deny answers {deny:?}"
            );
        }
        for (name, returned, until) in [
            ("restart", self.back, self.stopping),
            ("SIGCONT", self.resumed, self.end),
        ] {
            let after = normal_again(s, DENY, returned, until, Answer::Ok)
                .unwrap_or_else(|| panic!("decisions never normal again after the {name}"));
            eprintln!("normal decisions {after:?} after the {name}");
            assert!(after <= Duration::from_secs(2), "{name}: {after:?}");
        }

        // Nothing Redis acknowledged is lost, and what `local` admitted was handed over. A call
        // that timed out during the hang may still have run when Redis resumed: counts may
        // exceed the acknowledged hits by at most the timed-out calls.
        let metrics = metrics(&self.sluice).await;
        let timeouts = metric(&metrics, "sluice_store_failures_total", "kind=\"timeout\"") as u64;
        let acknowledged = count(s, DENY, Answer::Ok);
        let in_redis = tokio::task::block_in_place(|| stored("deny"));
        assert!(
            (acknowledged..=acknowledged + timeouts).contains(&in_redis),
            "deny: {acknowledged} acknowledged, {timeouts} timeouts, {in_redis} in Redis"
        );
        let admitted = count(s, LOCAL, Answer::Ok);
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let in_redis = tokio::task::block_in_place(|| stored("local"));
            if in_redis >= admitted {
                assert!(
                    in_redis <= admitted + timeouts,
                    "local: {admitted} admitted, {timeouts} timeouts, {in_redis} in Redis"
                );
                break;
            }
            assert!(
                Instant::now() < deadline,
                "local: {admitted} admitted, only {in_redis} in Redis"
            );
            pause_for(Duration::from_millis(50)).await;
        }
        let reconciled = metric(&metrics, "sluice_reconciled_hits_total", "");
        assert!(reconciled > 0.0, "local hits were reconciled: {metrics}");
        for (mode, result) in [("allow", "ok"), ("deny", "over_limit"), ("local", "ok")] {
            let labels = format!("mode=\"{mode}\",result=\"{result}\"");
            assert!(
                metric(&metrics, "sluice_failure_mode_decisions_total", &labels) > 0.0,
                "{labels}"
            );
        }
        assert!(metric(&metrics, "sluice_breaker_transitions_total", "to=\"open\"") >= 2.0);
        metrics
    }
}

/// The answers of a failover.
pub struct FailedOver<T> {
    pub sluice: Sluice,
    pub samples: Vec<Sample>,
    pub new_master: T,
    t0: Instant,
    killing: Instant,
    killed: Instant,
    promoted: Instant,
    end: Instant,
}

impl<T> FailedOver<T> {
    /// Every answer within the budget plus the margin (phases named `label: …`) and a decision;
    /// `allow` always admits; `deny` refuses while the slot has no master; normal decisions
    /// within 2 s of the promotion.
    pub fn check(&self, label: &str) {
        let s = &self.samples;
        let bound = budget() + margin();
        let phases = [
            Phase::new(format!("{label}: healthy"), s, self.t0, self.killing),
            Phase::new(
                format!("{label}: master killed, failing over"),
                s,
                self.killing,
                self.promoted,
            ),
            Phase::new(
                format!("{label}: after the promotion"),
                s,
                self.promoted,
                self.end,
            ),
        ];
        for p in &phases {
            p.report_and_bound(bound);
            assert!(
                p.answers(ALLOW).iter().all(|a| *a == Answer::Ok),
                "{}",
                p.name
            );
        }
        assert_decisions(s, self.t0);
        // With no master reachable, `deny` answers OVER_LIMIT (--deny-with over_limit).
        assert!(
            phases[1].answers(DENY).contains(&Answer::OverLimit),
            "deny while failing over: {:?}",
            phases[1].answers(DENY)
        );
        // Normal again: measured from the kill, it must come within 2 s of the promotion.
        let after = normal_again(s, DENY, self.killed, self.end, Answer::Ok)
            .expect("decisions never normal again after the failover");
        let late = after.saturating_sub(self.promoted.duration_since(self.killed));
        eprintln!("normal decisions {late:?} after the promotion");
        assert!(
            late <= Duration::from_secs(2),
            "{late:?} after the promotion"
        );
    }

    /// `deny`'s answers to checks sent and answered while Redis was healthy.
    pub fn healthy_deny(&self) -> Vec<Answer> {
        decided_within(&self.samples, DENY, self.t0, self.killing)
    }

    /// How many `deny` checks Redis admitted (acknowledged hits).
    pub fn deny_acknowledged(&self) -> u64 {
        count(&self.samples, DENY, Answer::Ok)
    }
}
