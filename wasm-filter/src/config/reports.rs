//! The `reports` block: which descriptors' responses are reported to Sluice's `POST /reports`
//! for adaptive limits, where, and the bounds of the per-worker buffer.

use super::object::{Obj, Result, u32_of};
use super::read::{http_authority, http_path};
use super::{Config, Reports, Transport, err};

/// Sluice's bound on one batch (`server/src/http/reports.rs`): a bigger one is refused whole.
pub const MAX_BATCH: u64 = 5_000;

pub(super) fn read(o: &mut Obj<'_>, config: &Config) -> Result<Reports> {
    let descriptors = match o.strings("descriptors")? {
        None => (0..config.descriptors.len()).collect(),
        Some(names) if names.is_empty() => {
            return Err(err(
                o.at("descriptors"),
                "needs at least one descriptor name (leave it out to report every descriptor)",
            ));
        }
        Some(names) => {
            let named = |name: &String| config.descriptors.iter().any(|d| d.name == *name);
            if let Some((i, name)) = names.iter().enumerate().find(|(_, n)| !named(n)) {
                return Err(err(
                    format!("{}[{i}]", o.at("descriptors")),
                    format!("no descriptor is named {name:?}"),
                ));
            }
            // Names need not be unique: every descriptor of a listed name is reported.
            (0..config.descriptors.len())
                .filter(|j| {
                    config
                        .descriptors
                        .get(*j)
                        .is_some_and(|d| names.contains(&d.name))
                })
                .collect()
        }
    };
    // Reports go over HTTP to Sluice's HTTP listener. Over `transport: http` that is the check's
    // cluster; a gRPC cluster leads to the gRPC listener, so it must be named.
    let (default_cluster, default_authority) = match &config.service.transport {
        Transport::Http { authority, .. } => (
            Some(config.service.cluster.clone()),
            Some(authority.clone()),
        ),
        Transport::Grpc => (None, None),
    };
    // A cluster of its own comes with its own default authority, as `service` has.
    let (cluster, default_authority) = match (o.string("cluster")?, default_cluster) {
        (Some(c), _) => (c.clone(), c),
        (None, Some(c)) => (c.clone(), default_authority.unwrap_or(c)),
        (None, None) => {
            return Err(err(
                o.at("cluster"),
                "is required with `service.transport: grpc` (reports go to Sluice's HTTP listener)",
            ));
        }
    };
    let path = o.string("path")?.unwrap_or_else(|| "/reports".into());
    http_path(&o.at("path"), &path)?;
    let authority = o.string("authority")?.unwrap_or(default_authority);
    http_authority(&o.at("authority"), &authority)?;
    let timeout_ms = u32_of(o.uint("timeout_ms", 1, 60_000)?, 1000);
    let max_batch = u32_of(o.uint("max_batch", 1, MAX_BATCH)?, 100);
    let flush_ms = u32_of(o.uint("flush_ms", 100, 60_000)?, 1000);
    let max_pending = u32_of(o.uint("max_pending", 1, 1_000_000)?, 10_000);
    if max_pending < max_batch {
        return Err(err(
            o.at("max_pending"),
            format!("must be at least max_batch ({max_batch})"),
        ));
    }
    Ok(Reports {
        descriptors,
        cluster,
        path,
        authority,
        timeout_ms,
        max_batch,
        flush_ms,
        max_pending,
    })
}
