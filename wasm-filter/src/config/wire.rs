//! What the filter itself puts in every check (keys, configured values), against what Sluice
//! takes. A key or a configured value Sluice would refuse would make every request reaching that
//! action invalid: a configuration mistake, reported at start-up. It also means that when Sluice
//! refuses a check as malformed, the client's values are the cause.

use super::object::Result;
use super::{Action, Config, err};
use crate::lease::LEASE_ENTRY;

pub(super) fn check(config: &Config) -> Result<()> {
    if config.max_value_bytes > config.max_request_bytes {
        return Err(err(
            "max_value_bytes",
            format!(
                "must not exceed max_request_bytes ({})",
                config.max_request_bytes
            ),
        ));
    }
    fixed_parts_fit(config)
}

/// Keys and configured values within `max_value_bytes`, and no key Sluice reserves.
fn fixed_parts_fit(config: &Config) -> Result<()> {
    let max = config.max_value_bytes;
    for (i, d) in config.descriptors.iter().enumerate() {
        for (j, a) in d.actions.iter().enumerate() {
            let (kind, parts): (&str, Vec<(&str, &str)>) = match a {
                Action::GenericKey { key, value } => (
                    "generic_key",
                    vec![("key", key), ("descriptor_value", value)],
                ),
                Action::RequestHeader { key, .. } => ("request_header", vec![("key", key)]),
                Action::QueryParameter { key, .. } => ("query_parameter", vec![("key", key)]),
                Action::Method { key, matching } => {
                    let mut parts = vec![("key", key.as_str())];
                    if let Some((_, v)) = matching {
                        parts.push(("descriptor_value", v));
                    }
                    ("method", parts)
                }
                Action::Path { key, value, .. } => {
                    ("path", vec![("key", key), ("descriptor_value", value)])
                }
                Action::RemoteAddress { .. } => continue,
                Action::Metadata {
                    key, default_value, ..
                } => {
                    let mut parts = vec![("key", key.as_str())];
                    if let Some(v) = default_value {
                        parts.push(("default_value", v));
                    }
                    ("metadata", parts)
                }
                Action::JwtClaim { key, .. } => ("jwt_claim", vec![("key", key)]),
            };
            let at = |field: &str| format!("descriptors[{i}].actions[{j}].{kind}.{field}");
            if let Some((field, _)) = parts.iter().find(|(_, v)| v.len() > max) {
                return Err(err(
                    at(field),
                    format!("is longer than max_value_bytes ({max})"),
                ));
            }
            if parts.iter().any(|(f, v)| *f == "key" && *v == LEASE_ENTRY) {
                return Err(err(
                    at("key"),
                    format!("{LEASE_ENTRY:?} is the entry Sluice reads lease ids from"),
                ));
            }
        }
    }
    Ok(())
}
