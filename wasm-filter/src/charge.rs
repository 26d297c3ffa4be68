//! Charges after the response, for quotas counted in bytes or tokens (`egress_bytes`,
//! `llm_tokens`): the request is checked with its usual cost of one, and at stream end a second
//! `ShouldRateLimit` charges the rest of the measured amount through per-descriptor `hits_addend`.
//!
//! The charge is capped at the quota the check reported remaining. Sluice's all-or-nothing
//! admission charges nothing for a request that would go over, so an uncapped charge bigger than
//! what is left would be dropped whole and the quota would never run out; capped, it empties the
//! quota and the next check is rejected until the window resets.

use crate::check::DescriptorStatus;
use crate::config::{ChargeSource, Config};
use crate::descriptor::Descriptor;

/// A descriptor to charge at stream end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pending {
    /// Index into the request's descriptors.
    pub descriptor: usize,
    pub source: ChargeSource,
    /// What the check said was left, when it reported a limit.
    pub cap: Option<u64>,
}

/// The descriptors to charge later, from the check's statuses (absent when Sluice did not
/// answer and the request went through under `failure_mode: allow`).
pub fn plan(
    config: &Config,
    descriptors: &[Descriptor],
    statuses: Option<&[DescriptorStatus]>,
) -> Vec<Pending> {
    descriptors
        .iter()
        .enumerate()
        .filter_map(|(i, d)| {
            let source = config.descriptors.get(d.def)?.charge.clone()?;
            let cap = statuses
                .and_then(|s| s.get(i))
                .filter(|s| s.current_limit.is_some())
                .map(|s| u64::from(s.limit_remaining));
            Some(Pending {
                descriptor: i,
                source,
                cap,
            })
        })
        .collect()
}

/// What the response measured.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Measured {
    pub body_bytes: u64,
    /// Values of the response headers (and trailers) that charges read, by lower-case name.
    pub headers: Vec<(String, String)>,
}

/// A header value as a charge amount: a non-negative decimal integer, surrounding spaces allowed.
pub fn parse_amount(value: &str) -> Option<u64> {
    let v = value.trim();
    (!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
        .then(|| v.parse().ok())
        .flatten()
}

/// `(descriptor index, hits_addend)` for each pending charge with something left to charge.
pub fn amounts(pending: &[Pending], measured: &Measured) -> Vec<(usize, u64)> {
    pending
        .iter()
        .filter_map(|p| {
            let amount = match &p.source {
                ChargeSource::ResponseBytes => measured.body_bytes,
                ChargeSource::ResponseHeader(name) => measured
                    .headers
                    .iter()
                    .find(|(k, _)| k == name)
                    .and_then(|(_, v)| parse_amount(v))?,
            };
            // The check already counted one.
            let rest = amount.saturating_sub(1);
            let hits = p.cap.map_or(rest, |cap| rest.min(cap));
            (hits > 0).then_some((p.descriptor, hits))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::{Code, Limit};

    fn config() -> Config {
        crate::config::parse(
            br#"{"domain":"d","service":{"cluster":"c"},"descriptors":[
                {"actions":[{"generic_key":{"descriptor_value":"plain"}}]},
                {"actions":[{"generic_key":{"descriptor_value":"bytes"}}],"charge":{"from":"response_bytes"}},
                {"actions":[{"generic_key":{"descriptor_value":"tokens"}}],
                 "charge":{"from":"response_header","header":"x-llm-tokens"}}]}"#,
        )
        .unwrap()
    }

    fn descriptors() -> Vec<Descriptor> {
        (0..3)
            .map(|def| Descriptor {
                def,
                entries: vec![("generic_key".into(), def.to_string())],
            })
            .collect()
    }

    fn status(remaining: Option<u32>) -> DescriptorStatus {
        DescriptorStatus {
            code: Code::Ok,
            current_limit: remaining.map(|_| Limit {
                requests_per_unit: 1000,
                unit: 4,
            }),
            limit_remaining: remaining.unwrap_or(0),
            duration_until_reset_ms: None,
        }
    }

    #[test]
    fn charges_the_rest_of_the_measured_amount() {
        let c = config();
        let statuses = [status(Some(5)), status(Some(10_000)), status(None)];
        let pending = plan(&c, &descriptors(), Some(&statuses));
        assert_eq!(pending.len(), 2);
        let measured = Measured {
            body_bytes: 1500,
            headers: vec![("x-llm-tokens".into(), " 42 ".into())],
        };
        assert_eq!(amounts(&pending, &measured), vec![(1, 1499), (2, 41)]);
    }

    #[test]
    fn caps_at_the_remaining_quota_and_skips_nothing_to_charge() {
        let c = config();
        let statuses = [status(None), status(Some(100)), status(Some(0))];
        let pending = plan(&c, &descriptors(), Some(&statuses));
        let measured = Measured {
            body_bytes: 1_000_000,
            headers: vec![("x-llm-tokens".into(), "9".into())],
        };
        assert_eq!(amounts(&pending, &measured), vec![(1, 100)]);
        let nothing = Measured {
            body_bytes: 1,
            headers: vec![("x-llm-tokens".into(), "-3".into())],
        };
        assert!(amounts(&pending, &nothing).is_empty());
    }

    #[test]
    fn fail_open_requests_are_charged_uncapped() {
        let pending = plan(&config(), &descriptors(), None);
        let measured = Measured {
            body_bytes: 70,
            headers: Vec::new(),
        };
        assert_eq!(amounts(&pending, &measured), vec![(1, 69)]);
    }

    #[test]
    fn amounts_are_plain_decimal_integers() {
        assert_eq!(parse_amount("17"), Some(17));
        for bad in ["", " ", "1.5", "+3", "0x10", "99999999999999999999999"] {
            assert_eq!(parse_amount(bad), None, "{bad:?}");
        }
    }
}
