//! Descriptors from request data, one per configured definition.
//!
//! What an action reads from the request is either absent or present, and a present value is
//! usable or not:
//!
//! - **Absent** (no such header, query parameter, host property, bearer token or claim): Envoy's
//!   rule. The whole descriptor is dropped, unless the action says `skip_if_absent`, which leaves
//!   its entry out instead.
//! - **Present but unusable** (the bytes that would become the entry value are not UTF-8, or not
//!   once percent-decoded, or longer than `max_value_bytes`; a bearer token longer than
//!   `max_token_bytes` or that does not decode; a claim that is an object or an array): the
//!   request is [`Invalid`] and the filter refuses it. Dropping the descriptor instead would let a
//!   client over its limit through just by sending a value the filter cannot use. Whether a
//!   descriptor is refused does not depend on the order of its actions: one unusable value
//!   refuses the request even when another action of the same descriptor found nothing.
//!
//! Actions whose entry value comes from the configuration (`generic_key`, `path`, `method` with
//! `methods`) only compare request bytes and never find an unusable value. `remote_address`
//! reads the address the proxy reports, not client bytes; one that is not an IP (a Unix socket,
//! an internal listener) yields no value, as in Envoy.
//!
//! Last, the descriptors together must fit `max_request_bytes` of domain, keys and values, as
//! Sluice counts its own request bound: a check Sluice would refuse is refused here instead.

use std::fmt;

use crate::address;
use crate::config::{Action, Config, PathMatch};
use crate::jwt;

mod query;
pub use query::query_param;

/// What the filter can read about the request. The glue reads it from the host; tests from maps.
pub trait RequestData {
    /// A request header (lower-case name, pseudo-headers included), raw bytes.
    fn header(&mut self, name: &str) -> Option<Vec<u8>>;
    /// A host property by path, e.g. `["source", "address"]`.
    fn property(&mut self, path: &[String]) -> Option<Vec<u8>>;
}

/// One descriptor of the request: its entries and the definition it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Descriptor {
    /// Index into [`Config::descriptors`].
    pub def: usize,
    pub entries: Vec<(String, String)>,
}

/// A descriptor left out of the request, and why (for debug logs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dropped {
    pub def: usize,
    pub action: usize,
    pub reason: &'static str,
}

/// The descriptors of a request that may be checked, and the ones left out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Built {
    pub descriptors: Vec<Descriptor>,
    pub dropped: Vec<Dropped>,
}

/// Why a present value cannot be an entry value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    /// The bytes are not UTF-8 (entry values are strings on the wire).
    NotUtf8,
    /// The percent-decoded bytes of a query parameter are not UTF-8.
    DecodedNotUtf8,
    /// Longer than `max_value_bytes`.
    TooLong { bytes: usize, max: usize },
    /// A bearer token longer than `max_token_bytes`.
    TokenTooLong { bytes: usize, max: usize },
    /// A bearer token that is not a compact JWS with a base64url JSON payload.
    TokenUndecodable,
    /// A claim that is an object or an array.
    ClaimNotScalar,
}

impl fmt::Display for Unusable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotUtf8 => f.write_str("the value is not UTF-8"),
            Self::DecodedNotUtf8 => f.write_str("the percent-decoded value is not UTF-8"),
            Self::TooLong { bytes, max } => {
                write!(
                    f,
                    "the value is {bytes} bytes, over max_value_bytes ({max})"
                )
            }
            Self::TokenTooLong { bytes, max } => write!(
                f,
                "the bearer token is {bytes} bytes, over max_token_bytes ({max})"
            ),
            Self::TokenUndecodable => f.write_str("the bearer token does not decode as a JWT"),
            Self::ClaimNotScalar => f.write_str("the claim is not a string, number or boolean"),
        }
    }
}

/// A request the filter refuses instead of checking it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalid {
    /// Action `action` of descriptor definition `def` found a value it cannot use.
    Unusable {
        def: usize,
        action: usize,
        why: Unusable,
    },
    /// The descriptors carry `bytes` of domain, keys and values, over `max_request_bytes`.
    TooLarge { bytes: usize },
}

impl Invalid {
    /// The problem document's `detail`: which descriptor and action, and why. Never the value
    /// itself: values may be credentials, and problem bodies end up in logs.
    pub fn detail(&self, config: &Config) -> String {
        match self {
            Self::Unusable { def, action, why } => {
                let d = config.descriptors.get(*def);
                let name = d.map_or("?", |d| d.name.as_str());
                let action_name = d
                    .and_then(|d| d.actions.get(*action))
                    .map_or_else(|| "?".to_string(), describe);
                format!("descriptor {name:?}, action {action} ({action_name}): {why}")
            }
            Self::TooLarge { bytes } => format!(
                "the descriptors carry {bytes} bytes of domain, keys and values, over \
                 max_request_bytes ({})",
                config.max_request_bytes
            ),
        }
    }
}

/// An action as the operator configured it, for the detail of an invalid request.
fn describe(action: &Action) -> String {
    match action {
        Action::GenericKey { .. } => "generic_key".into(),
        Action::RequestHeader { header, .. } => format!("request_header {header:?}"),
        Action::QueryParameter { name, .. } => format!("query_parameter {name:?}"),
        Action::Method { .. } => "method".into(),
        Action::Path { .. } => "path".into(),
        Action::RemoteAddress { .. } => "remote_address".into(),
        Action::Metadata { property, .. } => format!("metadata {:?}", property.join(".")),
        Action::JwtClaim { header, claim, .. } => {
            format!("jwt_claim {:?} from {header:?}", claim.join("."))
        }
    }
}

enum Outcome {
    Value(String, String),
    Skip,
    Drop(&'static str),
    Unusable(Unusable),
}

/// Builds every descriptor the request yields, in configuration order, or finds it invalid.
pub fn build(config: &Config, req: &mut dyn RequestData) -> Result<Built, Invalid> {
    let mut built = Built {
        descriptors: Vec::with_capacity(config.descriptors.len()),
        dropped: Vec::new(),
    };
    for (def, d) in config.descriptors.iter().enumerate() {
        let mut entries = Vec::with_capacity(d.actions.len());
        let mut dropped = None;
        for (action, a) in d.actions.iter().enumerate() {
            match evaluate(a, req, config.max_token_bytes) {
                Outcome::Value(_, v) if v.len() > config.max_value_bytes => {
                    let why = Unusable::TooLong {
                        bytes: v.len(),
                        max: config.max_value_bytes,
                    };
                    return Err(Invalid::Unusable { def, action, why });
                }
                Outcome::Unusable(why) => return Err(Invalid::Unusable { def, action, why }),
                Outcome::Value(k, v) => entries.push((k, v)),
                Outcome::Skip => {}
                // The other actions still run: an unusable value among them refuses the request.
                Outcome::Drop(reason) => {
                    dropped.get_or_insert(Dropped {
                        def,
                        action,
                        reason,
                    });
                }
            }
        }
        match dropped {
            Some(d) => built.dropped.push(d),
            None if entries.is_empty() => built.dropped.push(Dropped {
                def,
                action: 0,
                reason: "every action skipped",
            }),
            None => built.descriptors.push(Descriptor { def, entries }),
        }
    }
    let bytes = built
        .descriptors
        .iter()
        .flat_map(|d| &d.entries)
        .fold(config.domain.len(), |n, (k, v)| n + k.len() + v.len());
    if bytes > config.max_request_bytes {
        return Err(Invalid::TooLarge { bytes });
    }
    Ok(built)
}

fn evaluate(action: &Action, req: &mut dyn RequestData, max_token_bytes: usize) -> Outcome {
    let absent = |skip: bool, reason| {
        if skip {
            Outcome::Skip
        } else {
            Outcome::Drop(reason)
        }
    };
    match action {
        Action::GenericKey { key, value } => Outcome::Value(key.clone(), value.clone()),
        Action::RequestHeader {
            header,
            key,
            skip_if_absent,
        } => match req.header(header) {
            None => absent(*skip_if_absent, "header absent"),
            Some(bytes) => from_request(key, bytes),
        },
        Action::QueryParameter {
            name,
            key,
            skip_if_absent,
        } => match req.header(":path").and_then(|p| query_param(&p, name)) {
            None => absent(*skip_if_absent, "query parameter absent"),
            Some(Ok(v)) => Outcome::Value(key.clone(), v),
            Some(Err(why)) => Outcome::Unusable(why),
        },
        Action::Method { key, matching } => match (req.header(":method"), matching) {
            (None, _) => Outcome::Drop(":method absent"),
            (Some(m), None) => from_request(key, m),
            (Some(m), Some((methods, value)))
                if methods
                    .iter()
                    .any(|x| x.as_bytes().eq_ignore_ascii_case(&m)) =>
            {
                Outcome::Value(key.clone(), value.clone())
            }
            (Some(_), Some(_)) => Outcome::Drop("method does not match"),
        },
        Action::Path {
            key,
            matcher,
            value,
            expect_match,
        } => {
            let Some(full) = req.header(":path") else {
                return Outcome::Drop(":path absent");
            };
            // Bytes, not text: a path that is not UTF-8 still matches (or not) the configured one.
            let path = full
                .split(|b| *b == b'?' || *b == b'#')
                .next()
                .unwrap_or_default();
            let matched = match matcher {
                PathMatch::Exact(e) => path == e.as_bytes(),
                PathMatch::Prefix(p) => path.starts_with(p.as_bytes()),
            };
            if matched == *expect_match {
                Outcome::Value(key.clone(), value.clone())
            } else {
                Outcome::Drop("path does not match")
            }
        }
        Action::RemoteAddress {
            v4_prefix,
            v6_prefix,
        } => {
            let source = ["source".to_string(), "address".to_string()];
            match req
                .property(&source)
                .and_then(|a| String::from_utf8(a).ok())
                .and_then(|a| address::parse(&a))
            {
                Some(ip) => {
                    let (masked, value) = address::entry_value(ip, *v4_prefix, *v6_prefix);
                    let key = if masked {
                        "masked_remote_address"
                    } else {
                        "remote_address"
                    };
                    Outcome::Value(key.into(), value)
                }
                None => Outcome::Drop("source.address absent or not an IP"),
            }
        }
        Action::Metadata {
            property,
            key,
            default_value,
            skip_if_absent,
        } => match (req.property(property), default_value) {
            (Some(bytes), _) => from_request(key, bytes),
            (None, Some(d)) => Outcome::Value(key.clone(), d.clone()),
            (None, None) => absent(*skip_if_absent, "property absent"),
        },
        Action::JwtClaim {
            header,
            claim,
            key,
            skip_if_absent,
        } => {
            let Some(bytes) = req.header(header) else {
                return absent(*skip_if_absent, "header absent");
            };
            let Ok(text) = String::from_utf8(bytes) else {
                return Outcome::Unusable(Unusable::NotUtf8);
            };
            let Some(token) = jwt::bearer_token(&text) else {
                return absent(*skip_if_absent, "no bearer token");
            };
            match jwt::claim(token, claim, max_token_bytes) {
                Ok(Some(v)) => Outcome::Value(key.clone(), v),
                Ok(None) => absent(*skip_if_absent, "claim absent"),
                Err(why) => Outcome::Unusable(why),
            }
        }
    }
}

/// A present value read from the request: entry values are strings on the wire.
fn from_request(key: &str, bytes: Vec<u8>) -> Outcome {
    match String::from_utf8(bytes) {
        Ok(v) => Outcome::Value(key.to_string(), v),
        Err(_) => Outcome::Unusable(Unusable::NotUtf8),
    }
}

#[cfg(test)]
mod tests;
