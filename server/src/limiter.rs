//! The transport-free core: `RateLimiter::check` turns a request into one store batch and the
//! store's answer into per-descriptor statuses.
//!
//! Steps, in order: validate the request's shape; match each descriptor against the live rule
//! set (`descriptor`); drop unlimited and `replaces`-ed rules; build one [`Hit`] per remaining
//! limit (counter key, window, limit, delta, role); apply them in one atomic store call
//! (`storage`); derive each status, the overall code, the headers and the metrics from the
//! counters the store saw.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::config::{Level, Limit, Rule, RuleSet, Unit};
use crate::descriptor::{counter_value, metric_key};
use crate::metrics::{KindLabels, Metrics, RuleLabels, Shared};
use crate::storage::{Admission, Batch, Hit, Role, Store, StoreError, keys};

/// One descriptor entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
}

/// A descriptor's `limit` override (`RateLimitOverride`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimitOverride {
    pub requests_per_unit: u32,
    pub unit: Unit,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Descriptor {
    pub entries: Vec<Entry>,
    pub limit: Option<LimitOverride>,
    /// Per-descriptor `hits_addend`; when present it wins over the request's, and 0 means
    /// "check without consuming".
    pub hits_addend: Option<u64>,
    /// `is_negative_hits`: give the hits back instead of consuming them.
    pub negative_hits: bool,
}

impl Descriptor {
    /// A descriptor from its wire parts, shared by the gRPC and JSON adapters.
    pub fn from_parts(
        entries: impl IntoIterator<Item = (String, String)>,
        limit: Option<LimitOverride>,
        hits_addend: Option<u64>,
        negative_hits: bool,
    ) -> Self {
        Self {
            entries: entries
                .into_iter()
                .map(|(key, value)| Entry { key, value })
                .collect(),
            limit,
            hits_addend,
            negative_hits,
        }
    }
}

impl LimitOverride {
    /// An override whose unit is `envoy.type.v3.RateLimitUnit` (which has no WEEK); the error
    /// names descriptor `index` and the unit as received.
    pub fn new(
        index: usize,
        requests_per_unit: u32,
        unit: Option<Unit>,
        received: impl std::fmt::Display,
    ) -> Result<Self, String> {
        match unit {
            Some(unit) => Ok(Self {
                requests_per_unit,
                unit,
            }),
            None => Err(format!(
                "descriptor {index} limit override has unit {received}, which is not SECOND, \
                 MINUTE, HOUR, DAY, MONTH or YEAR"
            )),
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckRequest {
    pub domain: String,
    pub descriptors: Vec<Descriptor>,
    /// Request-level `hits_addend`; 0 means 1, as in Envoy.
    pub hits_addend: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    Ok,
    OverLimit,
}

/// The limit a status was decided against (`current_limit`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentLimit {
    pub requests_per_unit: u32,
    pub unit: Unit,
    pub name: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorStatus {
    pub code: Code,
    pub current_limit: Option<CurrentLimit>,
    pub limit_remaining: u32,
    pub duration_until_reset: Option<Duration>,
}

impl DescriptorStatus {
    fn unlimited() -> Self {
        Self {
            code: Code::Ok,
            current_limit: None,
            limit_remaining: u32::MAX,
            duration_until_reset: None,
        }
    }

    fn no_limit() -> Self {
        Self {
            code: Code::Ok,
            current_limit: None,
            limit_remaining: 0,
            duration_until_reset: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub overall: Code,
    /// Same count and order as the request's descriptors.
    pub statuses: Vec<DescriptorStatus>,
    /// Headers for the client (`response_headers_to_add`), when enabled.
    pub response_headers: Vec<(String, String)>,
}

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// The request is malformed or over a size bound: the caller's fault, `INVALID_ARGUMENT`.
    #[error("{0}")]
    Invalid(String),
    /// The counters could not be read or written: `UNAVAILABLE`.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Names of the rate-limit headers (the reference's `LIMIT_*_HEADER` settings).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderNames {
    pub limit: String,
    pub remaining: String,
    pub reset: String,
}

impl Default for HeaderNames {
    fn default() -> Self {
        Self {
            limit: "RateLimit-Limit".into(),
            remaining: "RateLimit-Remaining".into(),
            reset: "RateLimit-Reset".into(),
        }
    }
}

/// Bounds on what one request may carry. Envoy sends a handful of short descriptors; anything far
/// past these is a bug or an attack, and each entry becomes part of a counter key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestBounds {
    pub max_descriptors: usize,
    pub max_entries: usize,
    /// Domain, keys and values together.
    pub max_bytes: usize,
}

impl Default for RequestBounds {
    fn default() -> Self {
        Self {
            max_descriptors: 64,
            max_entries: 32,
            max_bytes: 16 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LimiterOptions {
    pub admission: Admission,
    pub key_prefix: Vec<u8>,
    /// `NEAR_LIMIT_RATIO`: hits past `floor(limit × ratio)` count as near the limit.
    pub near_limit_ratio: f64,
    /// `SHADOW_MODE`: decide and count as usual, but always answer OK.
    pub global_shadow_mode: bool,
    /// `QUOTA_MODE`: every rule behaves as if it had `quota_mode: true`.
    pub global_quota_mode: bool,
    /// `LIMIT_RESPONSE_HEADERS_ENABLED`.
    pub response_headers: Option<HeaderNames>,
    pub bounds: RequestBounds,
}

impl Default for LimiterOptions {
    fn default() -> Self {
        Self {
            admission: Admission::AllOrNothing,
            key_prefix: Vec::new(),
            near_limit_ratio: 0.8,
            global_shadow_mode: false,
            global_quota_mode: false,
            response_headers: None,
            bounds: RequestBounds::default(),
        }
    }
}

pub struct RateLimiter<S> {
    rules: ArcSwap<RuleSet>,
    store: S,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    options: LimiterOptions,
}

/// A limit that survived matching, unlimited and `replaces`: it becomes one store hit.
struct Limited {
    index: usize,
    rule: Arc<Rule>,
    requests_per_unit: u32,
    unit: Unit,
}

impl<S: Store> RateLimiter<S> {
    pub fn new(
        rules: RuleSet,
        store: S,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        options: LimiterOptions,
    ) -> Self {
        metrics.config_rules.set(count_rules(&rules) as i64);
        Self {
            rules: ArcSwap::from_pointee(rules),
            store,
            clock,
            metrics,
            options,
        }
    }

    /// Swap in a new rule set. Requests in flight finish on the set they started with.
    pub fn replace_rules(&self, rules: RuleSet) {
        self.metrics.config_rules.set(count_rules(&rules) as i64);
        self.rules.store(Arc::new(rules));
    }

    pub fn rules(&self) -> Arc<RuleSet> {
        self.rules.load_full()
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    pub fn options(&self) -> &LimiterOptions {
        &self.options
    }

    /// Decide a request.
    pub async fn check(&self, request: &CheckRequest) -> Result<Decision, CheckError> {
        let started = Instant::now();
        let result = self.decide(request).await;
        self.metrics
            .request_duration
            .observe(started.elapsed().as_secs_f64());
        if let Err(CheckError::Store(e)) = &result {
            self.metrics
                .store_errors
                .get_or_create(&KindLabels { kind: e.kind() })
                .inc();
        }
        result
    }

    async fn decide(&self, request: &CheckRequest) -> Result<Decision, CheckError> {
        validate(request, &self.options.bounds)?;
        let rules = self.rules.load();
        let mut statuses = vec![DescriptorStatus::no_limit(); request.descriptors.len()];
        let limited = self.limits_to_check(&rules, request, &mut statuses)?;
        drop(rules);
        if limited.is_empty() {
            return Ok(Decision {
                overall: Code::Ok,
                statuses,
                response_headers: Vec::new(),
            });
        }

        let now = self.clock.now().as_secs();
        let default_addend = u64::from(request.hits_addend.max(1));
        let hits: Vec<Hit> = limited
            .iter()
            .map(|l| {
                let d = &request.descriptors[l.index];
                let window = l.unit.seconds();
                let start = now - now % window;
                let parts = l
                    .rule
                    .levels
                    .iter()
                    .zip(&d.entries)
                    .map(|(level, e)| (e.key.as_str(), counter_value(level, e.value.as_str())));
                let amount = d.hits_addend.unwrap_or(default_addend).min(i64::MAX as u64) as i64;
                Hit {
                    key: keys::counter_key(
                        &self.options.key_prefix,
                        &l.rule.domain,
                        parts,
                        window,
                        start,
                    ),
                    ttl_secs: start + window - now,
                    limit: u64::from(l.requests_per_unit),
                    delta: if d.negative_hits { -amount } else { amount },
                    role: if self.options.global_shadow_mode {
                        Role::Shadow
                    } else {
                        self.role(&l.rule)
                    },
                }
            })
            .collect();
        let batch = Batch {
            hits,
            admission: self.options.admission,
        };
        let outcome = self.store.apply(&batch).await?;
        // Judged with each rule's own role: under global shadow mode the store saw only shadow
        // hits, but the answer still reports what would have been rejected.
        let would_reject = crate::storage::decide(
            limited
                .iter()
                .zip(&batch.hits)
                .zip(&outcome.before)
                .map(|((l, h), &b)| (self.role(&l.rule), h.is_over(b))),
        );

        let mut worst: Option<usize> = None;
        let mut retry_after = 0u64;
        for ((l, hit), &before) in limited.iter().zip(&batch.hits).zip(&outcome.before) {
            let over = hit.is_over(before);
            let count = if outcome.charged {
                hit.after(before)
            } else {
                before
            };
            let reset = hit.ttl_secs;
            // As the reference: a quota descriptor over its limit still reports OVER_LIMIT even
            // when the request as a whole is let through; a shadow rule never does.
            let code = if over && !l.rule.shadow_mode {
                Code::OverLimit
            } else {
                Code::Ok
            };
            if code == Code::OverLimit {
                retry_after = retry_after.max(reset);
            }
            let remaining = if over {
                0
            } else {
                (hit.limit.saturating_sub(count)).min(u64::from(u32::MAX)) as u32
            };
            statuses[l.index] = DescriptorStatus {
                code,
                current_limit: Some(CurrentLimit {
                    requests_per_unit: l.requests_per_unit,
                    unit: l.unit,
                    name: l.rule.name.clone(),
                }),
                limit_remaining: remaining,
                duration_until_reset: Some(Duration::from_secs(reset)),
            };
            // The headers describe the tightest limit: the first with the fewest remaining, or
            // the latest enforced limit that rejects (the reference's choice).
            let rejecting = code == Code::OverLimit && self.role(&l.rule) == Role::Enforce;
            if rejecting || worst.is_none_or(|w| remaining < statuses[w].limit_remaining) {
                worst = Some(l.index);
            }
            self.record(request, l, hit, before, over);
        }

        let overall = if would_reject && !self.options.global_shadow_mode {
            Code::OverLimit
        } else {
            if would_reject {
                self.metrics.global_shadow_mode.inc();
            }
            Code::Ok
        };
        let response_headers = match (&self.options.response_headers, worst) {
            (Some(names), Some(w)) => {
                let status = &statuses[w];
                let mut headers = Vec::with_capacity(4);
                if let Some(limit) = &status.current_limit {
                    headers.push((names.limit.clone(), limit.requests_per_unit.to_string()));
                }
                headers.push((names.remaining.clone(), status.limit_remaining.to_string()));
                let reset = status.duration_until_reset.map_or(0, |d| d.as_secs());
                headers.push((names.reset.clone(), reset.to_string()));
                if overall == Code::OverLimit {
                    headers.push(("Retry-After".into(), retry_after.to_string()));
                }
                headers
            }
            _ => Vec::new(),
        };
        Ok(Decision {
            overall,
            statuses,
            response_headers,
        })
    }

    /// Match every descriptor, fill the statuses of those that will not be counted, and return
    /// the ones that will.
    fn limits_to_check(
        &self,
        rules: &RuleSet,
        request: &CheckRequest,
        statuses: &mut [DescriptorStatus],
    ) -> Result<Vec<Limited>, CheckError> {
        if rules.domain(&request.domain).is_none() {
            return Ok(Vec::new());
        }
        let mut limited = Vec::with_capacity(request.descriptors.len());
        let mut entries: Vec<(&str, &str)> = Vec::new();
        for (index, d) in request.descriptors.iter().enumerate() {
            let rule = if let Some(o) = d.limit {
                // An override from Envoy's route config: the reference applies it to any
                // descriptor of a known domain, matched or not, never in shadow mode.
                Arc::new(override_rule(&request.domain, d, o))
            } else {
                entries.clear();
                entries.extend(d.entries.iter().map(|e| (e.key.as_str(), e.value.as_str())));
                match rules.lookup(&request.domain, &entries) {
                    Some(rule) => Arc::clone(rule),
                    None => continue,
                }
            };
            match rule.limit {
                Limit::Unlimited => statuses[index] = DescriptorStatus::unlimited(),
                Limit::PerUnit {
                    requests_per_unit,
                    unit,
                } => limited.push(Limited {
                    index,
                    rule,
                    requests_per_unit,
                    unit,
                }),
            }
        }
        // Names are cloned only when a matched rule replaces another, which is rare.
        let replaced: Vec<String> = limited
            .iter()
            .flat_map(|l| l.rule.replaces.iter().cloned())
            .collect();
        if !replaced.is_empty() {
            // A replaced rule is kept as "no limit" (OK, not counted), as the reference does.
            limited.retain(|l| l.rule.name.as_ref().is_none_or(|n| !replaced.contains(n)));
        }
        Ok(limited)
    }

    fn role(&self, rule: &Rule) -> Role {
        if rule.shadow_mode {
            Role::Shadow
        } else if rule.quota_mode || self.options.global_quota_mode {
            Role::Quota
        } else {
            Role::Enforce
        }
    }

    /// Per-rule hit counts, split as the reference splits them: of a request's hits, only those
    /// past the limit count as over it, and only those past `floor(limit × ratio)` as near it.
    fn record(&self, request: &CheckRequest, l: &Limited, hit: &Hit, before: u64, over: bool) {
        if hit.delta < 0 {
            return;
        }
        let hits = hit.delta as u64;
        let after = hit.after(before);
        let limit = hit.limit;
        let near = (limit as f64 * self.options.near_limit_ratio).floor() as u64;
        let entries = request.descriptors[l.index]
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()));
        let labels = RuleLabels {
            rule: Shared(metric_key(&l.rule, entries)),
        };
        let stats = &self.metrics.rules;
        stats.total_hits.get_or_create(&labels).inc_by(hits);
        if over {
            let over_hits = if before >= limit { hits } else { after - limit };
            stats.over_limit.get_or_create(&labels).inc_by(over_hits);
            if before < limit {
                stats
                    .near_limit
                    .get_or_create(&labels)
                    .inc_by(limit - near.max(before));
            }
            if l.rule.shadow_mode {
                stats.shadow_mode.get_or_create(&labels).inc_by(over_hits);
            }
        } else {
            stats.within_limit.get_or_create(&labels).inc_by(hits);
            if after > near {
                let near_hits = if before >= near { hits } else { after - near };
                stats.near_limit.get_or_create(&labels).inc_by(near_hits);
            }
        }
    }
}

/// `domain.key_value.key2_value2`, the reference's key for a descriptor as sent.
fn descriptor_key(domain: &str, d: &Descriptor) -> String {
    let mut key = String::from(domain);
    for e in &d.entries {
        key.push('.');
        key.push_str(&e.key);
        if !e.value.is_empty() {
            key.push('_');
            key.push_str(&e.value);
        }
    }
    key
}

fn override_rule(domain: &str, d: &Descriptor, o: LimitOverride) -> Rule {
    Rule {
        domain: Arc::from(domain),
        levels: d
            .entries
            .iter()
            .map(|e| Level {
                key: e.key.clone(),
                value: Some(e.value.clone()),
                share_threshold: false,
                value_to_metric: false,
            })
            .collect(),
        limit: Limit::PerUnit {
            requests_per_unit: o.requests_per_unit,
            unit: o.unit,
        },
        name: None,
        replaces: Vec::new(),
        shadow_mode: false,
        quota_mode: false,
        detailed_metric: false,
        stat_key: descriptor_key(domain, d).into(),
    }
}

fn count_rules(rules: &RuleSet) -> usize {
    fn walk(node: &crate::config::Node) -> usize {
        usize::from(node.rule.is_some())
            + node
                .exact
                .values()
                .flat_map(|m| m.values())
                .map(walk)
                .sum::<usize>()
            + node
                .wildcard
                .values()
                .flatten()
                .map(|(_, n)| walk(n))
                .sum::<usize>()
            + node.default.values().map(walk).sum::<usize>()
    }
    rules.domains.values().map(walk).sum()
}

fn validate(request: &CheckRequest, bounds: &RequestBounds) -> Result<(), CheckError> {
    let invalid = |msg: String| Err(CheckError::Invalid(msg));
    if request.domain.is_empty() {
        return invalid("domain must not be empty".into());
    }
    if request.descriptors.is_empty() {
        return invalid("request has no descriptors".into());
    }
    if request.descriptors.len() > bounds.max_descriptors {
        return invalid(format!(
            "request has {} descriptors; at most {} are accepted",
            request.descriptors.len(),
            bounds.max_descriptors
        ));
    }
    let mut bytes = request.domain.len();
    for (i, d) in request.descriptors.iter().enumerate() {
        if d.entries.is_empty() {
            return invalid(format!("descriptor {i} has no entries"));
        }
        if d.entries.len() > bounds.max_entries {
            return invalid(format!(
                "descriptor {i} has {} entries; at most {} are accepted",
                d.entries.len(),
                bounds.max_entries
            ));
        }
        for (j, e) in d.entries.iter().enumerate() {
            if e.key.is_empty() {
                return invalid(format!("descriptor {i} entry {j} has an empty key"));
            }
            bytes += e.key.len() + e.value.len();
        }
    }
    if bytes > bounds.max_bytes {
        return invalid(format!(
            "request carries {bytes} bytes of domain, keys and values; at most {} are accepted",
            bounds.max_bytes
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::parse_str;
    use crate::storage::memory::MemoryStore;

    const RULES: &str = r#"
domain: d
descriptors:
  - key: app
    rate_limit: {unit: minute, requests_per_unit: 2}
  - key: team
    rate_limit: {unit: hour, requests_per_unit: 3}
  - key: shadow
    shadow_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: quota_a
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 1}
  - key: quota_b
    quota_mode: true
    rate_limit: {unit: minute, requests_per_unit: 3}
  - key: old
    rate_limit: {name: old, unit: minute, requests_per_unit: 1}
  - key: new
    rate_limit:
      unit: minute
      requests_per_unit: 5
      replaces: [{name: old}]
  - key: free
    rate_limit: {unlimited: true}
  - key: detailed
    detailed_metric: true
    rate_limit: {unit: minute, requests_per_unit: 9}
  - key: shared
    value: "web-*"
    share_threshold: true
    rate_limit: {unit: minute, requests_per_unit: 2}
"#;

    /// 10:00:30 on some day: 30 s into a minute window, 30 min into an hour window.
    const T0: Duration = Duration::from_secs(1_700_000_000 - 1_700_000_000 % 3600 + 1830);

    struct Fixture {
        clock: Arc<ManualClock>,
        limiter: RateLimiter<Arc<MemoryStore>>,
    }

    fn fixture(options: LimiterOptions) -> Fixture {
        let clock = Arc::new(ManualClock::new(T0));
        let store = Arc::new(MemoryStore::new(10_000, clock.clone()));
        let limiter = RateLimiter::new(
            parse_str("rules.yaml", RULES).unwrap(),
            store,
            clock.clone(),
            Arc::new(Metrics::new()),
            options,
        );
        Fixture { clock, limiter }
    }

    fn desc(entries: &[(&str, &str)]) -> Descriptor {
        Descriptor {
            entries: entries
                .iter()
                .map(|(k, v)| Entry {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            ..Default::default()
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

        async fn codes(&self, descriptors: Vec<Descriptor>) -> (Code, Vec<(Code, u32)>) {
            let d = self.check(descriptors).await;
            (
                d.overall,
                d.statuses
                    .iter()
                    .map(|s| (s.code, s.limit_remaining))
                    .collect(),
            )
        }
    }

    use Code::{Ok as OK, OverLimit as Over};

    #[tokio::test]
    async fn fixed_window_resets_at_the_epoch_aligned_boundary() {
        let f = fixture(LimiterOptions::default());
        let app = || vec![desc(&[("app", "a")])];
        assert_eq!(f.codes(app()).await, (OK, vec![(OK, 1)]));
        let d = f.check(app()).await;
        assert_eq!(
            d.statuses[0].duration_until_reset,
            Some(Duration::from_secs(30))
        );
        assert_eq!(f.codes(app()).await, (Over, vec![(Over, 0)]));
        // 29 s later: same window.
        f.clock.advance(Duration::from_secs(29));
        assert_eq!(f.codes(app()).await, (Over, vec![(Over, 0)]));
        // The next minute starts a fresh counter.
        f.clock.advance(Duration::from_secs(1));
        assert_eq!(f.codes(app()).await, (OK, vec![(OK, 1)]));
        let d = f.check(app()).await;
        assert_eq!(
            d.statuses[0].duration_until_reset,
            Some(Duration::from_secs(60))
        );
    }

    #[tokio::test]
    async fn rejected_requests_charge_nothing_by_default() {
        let f = fixture(LimiterOptions::default());
        let both = || vec![desc(&[("team", "t")]), desc(&[("app", "a")])];
        assert_eq!(f.codes(both()).await, (OK, vec![(OK, 2), (OK, 1)]));
        assert_eq!(f.codes(both()).await, (OK, vec![(OK, 1), (OK, 0)]));
        // app is exhausted: the request is rejected and team keeps its last unit.
        assert_eq!(f.codes(both()).await, (Over, vec![(OK, 1), (Over, 0)]));
        assert_eq!(
            f.codes(vec![desc(&[("team", "t")])]).await,
            (OK, vec![(OK, 0)])
        );
    }

    #[tokio::test]
    async fn charge_rejected_counts_every_descriptor_like_the_reference() {
        let f = fixture(LimiterOptions {
            admission: Admission::ChargeAll,
            ..Default::default()
        });
        let both = || vec![desc(&[("team", "t")]), desc(&[("app", "a")])];
        f.check(both()).await;
        f.check(both()).await;
        assert_eq!(f.codes(both()).await, (Over, vec![(OK, 0), (Over, 0)]));
        assert_eq!(
            f.codes(vec![desc(&[("team", "t")])]).await,
            (Over, vec![(Over, 0)])
        );
    }

    #[tokio::test]
    async fn shadow_mode_counts_but_never_rejects() {
        let f = fixture(LimiterOptions::default());
        let s = || vec![desc(&[("shadow", "x")])];
        assert_eq!(f.codes(s()).await, (OK, vec![(OK, 0)]));
        assert_eq!(f.codes(s()).await, (OK, vec![(OK, 0)]));
        let metrics = f.limiter.metrics().encode();
        assert!(
            metrics.contains("sluice_rule_shadow_mode_total{rule=\"d.shadow\"} 1"),
            "{metrics}"
        );
    }

    #[tokio::test]
    async fn global_shadow_mode_reports_over_but_answers_ok() {
        let f = fixture(LimiterOptions {
            global_shadow_mode: true,
            ..Default::default()
        });
        let app = || vec![desc(&[("app", "a")])];
        f.check(app()).await;
        f.check(app()).await;
        assert_eq!(f.codes(app()).await, (OK, vec![(Over, 0)]));
        assert!(
            f.limiter
                .metrics()
                .encode()
                .contains("sluice_global_shadow_mode_total 1")
        );
    }

    #[tokio::test]
    async fn quota_mode_rejects_only_when_every_quota_descriptor_is_over() {
        let f = fixture(LimiterOptions::default());
        let q = || vec![desc(&[("quota_a", "x")]), desc(&[("quota_b", "x")])];
        assert_eq!(f.codes(q()).await, (OK, vec![(OK, 0), (OK, 2)]));
        // quota_a is over, quota_b is not: let through, with quota_a's status still OVER_LIMIT.
        assert_eq!(f.codes(q()).await, (OK, vec![(Over, 0), (OK, 1)]));
        assert_eq!(f.codes(q()).await, (OK, vec![(Over, 0), (OK, 0)]));
        assert_eq!(f.codes(q()).await, (Over, vec![(Over, 0), (Over, 0)]));
        // A non-quota descriptor over the limit still rejects.
        let mixed = || vec![desc(&[("quota_b", "y")]), desc(&[("app", "z")])];
        f.check(mixed()).await;
        f.check(mixed()).await;
        assert_eq!(f.codes(mixed()).await, (Over, vec![(OK, 1), (Over, 0)]));
    }

    #[tokio::test]
    async fn global_quota_mode_treats_every_rule_as_quota() {
        let f = fixture(LimiterOptions {
            global_quota_mode: true,
            ..Default::default()
        });
        let both = || vec![desc(&[("app", "a")]), desc(&[("team", "t")])];
        f.check(both()).await;
        f.check(both()).await;
        // app is over, team is not: let through.
        assert_eq!(f.codes(both()).await, (OK, vec![(Over, 0), (OK, 0)]));
        assert_eq!(f.codes(both()).await, (Over, vec![(Over, 0), (Over, 0)]));
    }

    #[tokio::test]
    async fn replaces_drops_the_named_rule() {
        let f = fixture(LimiterOptions::default());
        let d = f
            .check(vec![desc(&[("old", "x")]), desc(&[("new", "x")])])
            .await;
        assert_eq!(d.statuses[0], DescriptorStatus::no_limit());
        assert_eq!(d.statuses[1].limit_remaining, 4);
        // Alone, the old rule applies.
        assert_eq!(
            f.codes(vec![desc(&[("old", "x")])]).await,
            (OK, vec![(OK, 0)])
        );
    }

    #[tokio::test]
    async fn unlimited_and_unmatched() {
        let f = fixture(LimiterOptions::default());
        let d = f
            .check(vec![desc(&[("free", "x")]), desc(&[("nope", "x")])])
            .await;
        assert_eq!(d.statuses[0], DescriptorStatus::unlimited());
        assert_eq!(d.statuses[1], DescriptorStatus::no_limit());
        let other_domain = CheckRequest {
            domain: "zzz".into(),
            ..req(vec![desc(&[("app", "a")])])
        };
        let d = f.limiter.check(&other_domain).await.unwrap();
        assert_eq!(d.statuses, vec![DescriptorStatus::no_limit()]);
    }

    #[tokio::test]
    async fn hits_addend_look_refund_and_override() {
        let f = fixture(LimiterOptions::default());
        let mut r = req(vec![desc(&[("team", "t")])]);
        r.hits_addend = 2;
        let d = f.limiter.check(&r).await.unwrap();
        assert_eq!(d.statuses[0].limit_remaining, 1);
        // Per-descriptor 0 looks without consuming, even over a request-level addend.
        let mut look = desc(&[("team", "t")]);
        look.hits_addend = Some(0);
        r.descriptors = vec![look];
        let d = f.limiter.check(&r).await.unwrap();
        assert_eq!(d.statuses[0].limit_remaining, 1);
        // Over the limit with a large addend: rejected and not charged.
        let mut big = desc(&[("team", "t")]);
        big.hits_addend = Some(2);
        assert_eq!(f.codes(vec![big]).await, (Over, vec![(Over, 0)]));
        // A refund floors at zero.
        let mut refund = desc(&[("team", "t")]);
        refund.hits_addend = Some(10);
        refund.negative_hits = true;
        assert_eq!(f.codes(vec![refund]).await, (OK, vec![(OK, 3)]));
        // An override replaces the rule's limit and unit.
        let mut o = desc(&[("app", "o")]);
        o.limit = Some(LimitOverride {
            requests_per_unit: 1,
            unit: Unit::Second,
        });
        let d = f.check(vec![o.clone()]).await;
        let limit = d.statuses[0].current_limit.clone().unwrap();
        assert_eq!((limit.requests_per_unit, limit.unit), (1, Unit::Second));
        assert_eq!(
            d.statuses[0].duration_until_reset,
            Some(Duration::from_secs(1))
        );
        assert_eq!(f.codes(vec![o]).await, (Over, vec![(Over, 0)]));
    }

    #[tokio::test]
    async fn share_threshold_values_share_one_counter() {
        let f = fixture(LimiterOptions::default());
        assert_eq!(
            f.codes(vec![desc(&[("shared", "web-1")])]).await,
            (OK, vec![(OK, 1)])
        );
        assert_eq!(
            f.codes(vec![desc(&[("shared", "web-2")])]).await,
            (OK, vec![(OK, 0)])
        );
        assert_eq!(
            f.codes(vec![desc(&[("shared", "web-3")])]).await,
            (Over, vec![(Over, 0)])
        );
    }

    #[tokio::test]
    async fn headers_come_from_the_tightest_limit() {
        let f = fixture(LimiterOptions {
            response_headers: Some(HeaderNames::default()),
            ..Default::default()
        });
        let both = || vec![desc(&[("team", "t")]), desc(&[("app", "a")])];
        let d = f.check(both()).await;
        assert_eq!(
            d.response_headers,
            vec![
                ("RateLimit-Limit".to_string(), "2".to_string()),
                ("RateLimit-Remaining".to_string(), "1".to_string()),
                ("RateLimit-Reset".to_string(), "30".to_string()),
            ]
        );
        f.check(both()).await;
        let d = f.check(both()).await;
        assert_eq!(d.overall, Over);
        assert_eq!(
            d.response_headers.last(),
            Some(&("Retry-After".to_string(), "30".to_string()))
        );
        // Nothing limited: no headers.
        assert!(
            f.check(vec![desc(&[("nope", "x")])])
                .await
                .response_headers
                .is_empty()
        );
    }

    #[tokio::test]
    async fn metrics_count_hits_per_rule() {
        let f = fixture(LimiterOptions::default());
        let app = || vec![desc(&[("app", "a")])];
        for _ in 0..3 {
            f.check(app()).await;
        }
        f.check(vec![desc(&[("detailed", "v1")])]).await;
        let m = f.limiter.metrics().encode();
        for line in [
            "sluice_rule_total_hits_total{rule=\"d.app\"} 3",
            "sluice_rule_within_limit_total{rule=\"d.app\"} 2",
            "sluice_rule_over_limit_total{rule=\"d.app\"} 1",
            // 0.8 × 2 floors to 1: the second hit (count 2) is near the limit.
            "sluice_rule_near_limit_total{rule=\"d.app\"} 1",
            "sluice_rule_total_hits_total{rule=\"d.detailed_v1\"} 1",
        ] {
            assert!(m.contains(line), "missing {line} in\n{m}");
        }
    }

    #[tokio::test]
    async fn malformed_requests_are_invalid() {
        let f = fixture(LimiterOptions {
            bounds: RequestBounds {
                max_descriptors: 2,
                max_entries: 2,
                max_bytes: 64,
            },
            ..Default::default()
        });
        let cases: Vec<(CheckRequest, &str)> = vec![
            (
                CheckRequest {
                    domain: String::new(),
                    ..req(vec![desc(&[("app", "a")])])
                },
                "domain must not be empty",
            ),
            (req(vec![]), "request has no descriptors"),
            (req(vec![desc(&[])]), "descriptor 0 has no entries"),
            (
                req(vec![desc(&[("", "a")])]),
                "descriptor 0 entry 0 has an empty key",
            ),
            (
                req(vec![desc(&[("a", "1")]); 3]),
                "request has 3 descriptors; at most 2 are accepted",
            ),
            (
                req(vec![desc(&[("a", "1"), ("b", "2"), ("c", "3")])]),
                "descriptor 0 has 3 entries; at most 2 are accepted",
            ),
            (
                req(vec![desc(&[("a", &"x".repeat(100))])]),
                "request carries 102 bytes of domain, keys and values; at most 64 are accepted",
            ),
        ];
        for (r, want) in cases {
            match f.limiter.check(&r).await {
                Err(CheckError::Invalid(msg)) => assert_eq!(msg, want),
                other => panic!("{want}: got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn reload_swaps_rules_for_new_requests() {
        let f = fixture(LimiterOptions::default());
        f.limiter.replace_rules(
            parse_str(
                "new.yaml",
                "domain: d\ndescriptors:\n  - key: app\n    rate_limit: {unit: minute, requests_per_unit: 9}\n",
            )
            .unwrap(),
        );
        assert_eq!(
            f.codes(vec![desc(&[("app", "a")])]).await,
            (OK, vec![(OK, 8)])
        );
    }
}
