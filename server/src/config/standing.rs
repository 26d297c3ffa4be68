//! `standing: {...}` inside a fair-share `rate_limit`: a tenant's weight follows its behaviour
//! (`crate::adaptive::standing`).
//!
//! ```yaml
//! rate_limit:
//!   unit: second
//!   capacity: 1000
//!   weights: { acme: 8 }
//!   weight: 4
//!   standing: { penalty: 0.5, after: 3, recover_after: 5, keep_tier_weights: true }
//! ```
//!
//! A tenant the pool refused past its guarantee (where it could only borrow) in `after`
//! consecutive windows has its weight multiplied by
//! `penalty` (rounded down: a weight of 1 halved is 0, a tenant that only borrows) until it goes
//! `recover_after` windows without a refusal. With `keep_tier_weights`, a tenant named in
//! `weights` (a paid tier) keeps its weight whatever it does: the weight a tier pays for is its
//! floor. The rule's path must name exact values before its last level (the tenant's), since a
//! penalty is written as an override of the path with the tenant's value.

use super::fields::Place;
use super::parse::Reader;
use super::yaml::{Kind, Yaml};

/// The most consecutive windows `after` and `recover_after` may ask for.
pub const MAX_WINDOWS: u64 = 1_000;

/// A fair-share limit's `standing` block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandingSpec {
    /// The factor a penalised tenant's weight is multiplied by, in millionths (strictly between
    /// 0 and 1).
    pub penalty_ppm: u32,
    /// Consecutive windows with a refusal that bring the penalty.
    pub after: u64,
    /// Consecutive windows without one that lift it.
    pub recover_after: u64,
    /// Tenants named in `weights` are never penalised.
    pub keep_tier_weights: bool,
}

impl StandingSpec {
    /// A penalised weight: `weight × penalty`, rounded down.
    pub fn penalised(&self, weight: u32) -> u32 {
        (u64::from(weight) * u64::from(self.penalty_ppm) / 1_000_000) as u32
    }

    /// `standing=x0.5 after 3 recover 5 (tiers kept)`, for `/rlconfig`.
    pub fn describe(&self) -> String {
        format!(
            "standing=x{} after {} recover {}{}",
            f64::from(self.penalty_ppm) / 1e6,
            self.after,
            self.recover_after,
            if self.keep_tier_weights {
                " (tiers kept)"
            } else {
                ""
            }
        )
    }
}

impl Reader {
    /// The `standing` block, or `None` when it does not fit (already reported).
    pub(super) fn standing(&mut self, y: &Yaml) -> Option<StandingSpec> {
        if !matches!(y.kind, Kind::Map(_)) {
            self.invalid(
                y.at,
                format!(
                    "`standing` must be a mapping with `penalty`, `after` and `recover_after`, \
                     found {}",
                    y.describe()
                ),
            );
            return None;
        }
        let f = self.fields(y, Place::Standing);
        let mut required = |field: &str| {
            let v = f.get(field);
            if v.is_none() {
                self.invalid(y.at, format!("`standing` needs `{field}`"));
            }
            v
        };
        let (penalty_y, after_y, recover_y) = (
            required("penalty"),
            required("after"),
            required("recover_after"),
        );
        let penalty = penalty_y.and_then(|p| self.fraction(p, "penalty"));
        let after = after_y.and_then(|a| self.integer(a, "after", 1, MAX_WINDOWS));
        let recover_after =
            recover_y.and_then(|r| self.integer(r, "recover_after", 1, MAX_WINDOWS));
        let keep_tier_weights = match f.get("keep_tier_weights") {
            None => Some(false),
            Some(k) => self.choice(k, "keep_tier_weights", &[("true", true), ("false", false)]),
        };
        Some(StandingSpec {
            penalty_ppm: penalty?,
            after: after?,
            recover_after: recover_after?,
            keep_tier_weights: keep_tier_weights?,
        })
    }
}
