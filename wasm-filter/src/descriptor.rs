//! Descriptors from request data, one per configured definition, with Envoy's rule: when one of
//! its actions yields no value, the whole descriptor is dropped (unless that action says
//! `skip_if_absent`, which leaves its entry out instead).

use crate::address;
use crate::config::{Action, Config, PathMatch};
use crate::jwt;

/// Entry values longer than this drop their descriptor: no legitimate key is that long, and each
/// value becomes part of a counter key in Sluice.
pub const MAX_VALUE_BYTES: usize = 4096;

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

enum Outcome {
    Value(String, String),
    Skip,
    Drop(&'static str),
}

/// Builds every descriptor the request yields, in configuration order.
pub fn build(config: &Config, req: &mut dyn RequestData) -> (Vec<Descriptor>, Vec<Dropped>) {
    let mut out = Vec::with_capacity(config.descriptors.len());
    let mut dropped = Vec::new();
    'defs: for (def, d) in config.descriptors.iter().enumerate() {
        let mut entries = Vec::with_capacity(d.actions.len());
        for (i, action) in d.actions.iter().enumerate() {
            match evaluate(action, req, config.max_token_bytes) {
                Outcome::Value(_, v) if v.len() > MAX_VALUE_BYTES => {
                    dropped.push(Dropped {
                        def,
                        action: i,
                        reason: "value too long",
                    });
                    continue 'defs;
                }
                Outcome::Value(k, v) => entries.push((k, v)),
                Outcome::Skip => {}
                Outcome::Drop(reason) => {
                    dropped.push(Dropped {
                        def,
                        action: i,
                        reason,
                    });
                    continue 'defs;
                }
            }
        }
        if entries.is_empty() {
            dropped.push(Dropped {
                def,
                action: 0,
                reason: "every action skipped",
            });
        } else {
            out.push(Descriptor { def, entries });
        }
    }
    (out, dropped)
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
        } => match text(req.header(header)) {
            Ok(v) => Outcome::Value(key.clone(), v),
            Err(reason) => absent(*skip_if_absent, reason),
        },
        Action::QueryParameter {
            name,
            key,
            skip_if_absent,
        } => {
            match text(req.header(":path"))
                .ok()
                .and_then(|p| query_param(&p, name))
            {
                Some(v) => Outcome::Value(key.clone(), v),
                None => absent(*skip_if_absent, "query parameter absent"),
            }
        }
        Action::Method { key, matching } => match (text(req.header(":method")), matching) {
            (Err(reason), _) => Outcome::Drop(reason),
            (Ok(m), None) => Outcome::Value(key.clone(), m),
            (Ok(m), Some((methods, value)))
                if methods.iter().any(|x| x.eq_ignore_ascii_case(&m)) =>
            {
                Outcome::Value(key.clone(), value.clone())
            }
            (Ok(_), Some(_)) => Outcome::Drop("method does not match"),
        },
        Action::Path {
            key,
            matcher,
            value,
            expect_match,
        } => {
            let Ok(full) = text(req.header(":path")) else {
                return Outcome::Drop(":path absent or not UTF-8");
            };
            let path = full.split(['?', '#']).next().unwrap_or_default();
            let matched = match matcher {
                PathMatch::Exact(e) => path == e,
                PathMatch::Prefix(p) => path.starts_with(p.as_str()),
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
            match text(req.property(&source))
                .ok()
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
        } => match (text(req.property(property)), default_value) {
            (Ok(v), _) => Outcome::Value(key.clone(), v),
            (Err(_), Some(d)) => Outcome::Value(key.clone(), d.clone()),
            (Err(reason), None) => absent(*skip_if_absent, reason),
        },
        Action::JwtClaim {
            header,
            claim,
            key,
            skip_if_absent,
        } => {
            let value = text(req.header(header)).ok().and_then(|h| {
                let token = jwt::bearer_token(&h)?;
                jwt::claim(token, claim, max_token_bytes)
            });
            match value {
                Some(v) => Outcome::Value(key.clone(), v),
                None => absent(*skip_if_absent, "no bearer token with that claim"),
            }
        }
    }
}

/// Entry values are strings on the wire: bytes that are not UTF-8 yield no value.
fn text(bytes: Option<Vec<u8>>) -> Result<String, &'static str> {
    match bytes {
        None => Err("absent"),
        Some(b) => String::from_utf8(b).map_err(|_| "not UTF-8"),
    }
}

/// The first value of query parameter `name` in a request target, percent-decoded (`+` is a
/// space, as in form encoding). Parameters without `=` have an empty value.
pub fn query_param(target: &str, name: &str) -> Option<String> {
    let query = target.split_once('?')?.1;
    let query = query.split('#').next().unwrap_or_default();
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k)? == name)
            .then(|| percent_decode(v))
            .flatten()
    })
}

/// `%XX` and `+` decoded; `None` when the result is not UTF-8. A `%` not followed by two hex
/// digits stays as it is.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = |at: usize| bytes.get(at).and_then(|c| (*c as char).to_digit(16));
        match b {
            b'%' => match (hex(i + 1), hex(i + 2)) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            other => out.push(other),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests;
