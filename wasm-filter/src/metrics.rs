//! The filter's counters, defined once per worker VM through proxy-wasm metrics. Counters only:
//! every host supports them. Envoy shows them under `wasmcustom.` (e.g.
//! `wasmcustom.sluice_filter.local_rejects`).

use crate::check::ErrorKind;

/// One counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    /// Requests rejected by a local token bucket.
    LocalRejects,
    /// Requests rejected by the negative cache.
    NegativeCacheHits,
    /// Checks sent to Sluice.
    RemoteChecks,
    /// Requests Sluice rejected.
    RemoteOverLimit,
    /// Checks without a usable answer, by kind.
    RemoteErrors(ErrorKind),
    /// Requests let through because of `failure_mode: allow`.
    FailOpen,
    /// Requests rejected because of `failure_mode: deny`.
    FailClosed,
    /// Post-response charges sent.
    Charges,
    /// Post-response charges that could not be sent.
    ChargeErrors,
    /// Leases released at stream end.
    LeaseReleases,
    /// Leases renewed while their stream was open.
    LeaseRenewals,
    /// Lease releases or renewals that could not be sent.
    LeaseErrors,
    /// Requests the filter refused as invalid: a value present but unusable, or descriptors over
    /// `max_request_bytes`. Never sent to Sluice.
    InvalidRequests,
    /// Requests Sluice refused as invalid (HTTP 400 or 413, gRPC INVALID_ARGUMENT, or a problem
    /// document of kind `invalid`): client data, not an outage, so never `failure_mode`.
    RemoteInvalid,
    /// Reports Sluice took (`POST /reports` answered 200), counted per report.
    ReportsSent,
    /// Reports lost: over `reports.max_pending`, in a failed post, or alone bigger than a body
    /// Sluice takes.
    ReportsDropped,
    /// Report posts that failed: not sent, no answer, or a status other than 200.
    ReportErrors,
}

impl Counter {
    /// Every counter, in the order of [`Counter::index`].
    pub fn all() -> impl Iterator<Item = Counter> {
        [
            Self::LocalRejects,
            Self::NegativeCacheHits,
            Self::RemoteChecks,
            Self::RemoteOverLimit,
            Self::FailOpen,
            Self::FailClosed,
            Self::Charges,
            Self::ChargeErrors,
            Self::LeaseReleases,
            Self::LeaseRenewals,
            Self::LeaseErrors,
            Self::InvalidRequests,
            Self::RemoteInvalid,
            Self::ReportsSent,
            Self::ReportsDropped,
            Self::ReportErrors,
        ]
        .into_iter()
        .chain(ErrorKind::ALL.into_iter().map(Self::RemoteErrors))
    }

    /// Position in [`Counter::all`], for a table of metric ids.
    pub fn index(self) -> usize {
        match self {
            Self::LocalRejects => 0,
            Self::NegativeCacheHits => 1,
            Self::RemoteChecks => 2,
            Self::RemoteOverLimit => 3,
            Self::FailOpen => 4,
            Self::FailClosed => 5,
            Self::Charges => 6,
            Self::ChargeErrors => 7,
            Self::LeaseReleases => 8,
            Self::LeaseRenewals => 9,
            Self::LeaseErrors => 10,
            Self::InvalidRequests => 11,
            Self::RemoteInvalid => 12,
            Self::ReportsSent => 13,
            Self::ReportsDropped => 14,
            Self::ReportErrors => 15,
            Self::RemoteErrors(kind) => {
                16 + ErrorKind::ALL.iter().position(|k| *k == kind).unwrap_or(0)
            }
        }
    }

    pub fn name(self) -> String {
        let base = match self {
            Self::LocalRejects => "local_rejects",
            Self::NegativeCacheHits => "negative_cache_hits",
            Self::RemoteChecks => "remote_checks",
            Self::RemoteOverLimit => "remote_over_limit",
            Self::FailOpen => "fail_open",
            Self::FailClosed => "fail_closed",
            Self::Charges => "charges",
            Self::ChargeErrors => "charge_errors",
            Self::LeaseReleases => "lease_releases",
            Self::LeaseRenewals => "lease_renewals",
            Self::LeaseErrors => "lease_errors",
            Self::InvalidRequests => "invalid_requests",
            Self::RemoteInvalid => "remote_invalid",
            Self::ReportsSent => "reports_sent",
            Self::ReportsDropped => "reports_dropped",
            Self::ReportErrors => "report_errors",
            Self::RemoteErrors(kind) => {
                return format!("sluice_filter.remote_errors.{}", kind.name());
            }
        };
        format!("sluice_filter.{base}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_follow_the_listing_and_names_are_unique() {
        let all: Vec<Counter> = Counter::all().collect();
        for (i, c) in all.iter().enumerate() {
            assert_eq!(c.index(), i, "{c:?}");
        }
        let mut names: Vec<String> = all.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), all.len());
        assert_eq!(
            Counter::RemoteErrors(ErrorKind::Timeout).name(),
            "sluice_filter.remote_errors.timeout"
        );
    }
}
