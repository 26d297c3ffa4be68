//! Reads the JSON document into [`Config`], checking each field where it is read so every error
//! carries its path. Unknown and duplicate fields are errors: a misspelt field silently ignored
//! is a limit silently not enforced.

use super::object::{Obj, Result, join, u32_of};
use super::{
    Action, BucketSpec, ChargeSource, Config, DescriptorDef, FailureMode, HeaderStyle, PathMatch,
    RequestHeaders, Service, Transport, err,
};
use crate::value::Value;

/// Bounds matching Sluice's own request bounds: anything past them would be refused there.
const MAX_DESCRIPTORS: u64 = 64;
const MAX_ACTIONS: u64 = 32;
/// The largest `max_value_bytes`: each value becomes part of a counter key in Sluice, and no
/// legitimate one comes near this.
const MAX_VALUE_BYTES: u64 = 64 * 1024;

pub(super) fn config(doc: &Value) -> Result<Config> {
    let mut o = Obj::new(doc, String::new())?;
    let domain = o.required_string("domain")?;
    let service = {
        let mut s = o
            .object("service")?
            .ok_or_else(|| err("service", "is required"))?;
        let svc = service(&mut s)?;
        s.done()?;
        svc
    };
    let failure_mode = match o.choice("failure_mode", &["allow", "deny"])? {
        Some(1) => FailureMode::Deny {
            status: u32_of(o.uint("failure_status", 200, 599)?, 503) as u16,
        },
        _ => {
            if o.uint("failure_status", 200, 599)?.is_some() {
                return Err(err(
                    "failure_status",
                    "only applies to `failure_mode: deny`",
                ));
            }
            FailureMode::Allow
        }
    };
    let header_style = match o.choice("header_style", &["ratelimit", "x_ratelimit", "none"])? {
        Some(1) => HeaderStyle::XRatelimit,
        Some(2) => HeaderStyle::None,
        _ => HeaderStyle::Ratelimit,
    };
    let request_headers = match o.object("request_headers")? {
        None => RequestHeaders::default(),
        Some(mut h) => {
            let r = request_headers(&mut h)?;
            h.done()?;
            r
        }
    };
    let items = o
        .array("descriptors")?
        .ok_or_else(|| err("descriptors", "is required"))?;
    if items.is_empty() || items.len() as u64 > MAX_DESCRIPTORS {
        return Err(err(
            "descriptors",
            format!("needs 1 to {MAX_DESCRIPTORS} descriptors"),
        ));
    }
    let descriptors = items
        .iter()
        .enumerate()
        .map(|(i, d)| descriptor(d, format!("descriptors[{i}]")))
        .collect::<Result<Vec<_>>>()?;
    let config = Config {
        domain,
        service,
        failure_mode,
        header_style,
        request_headers,
        descriptors,
        shared_slots: u32_of(o.uint("shared_slots", 1, 1 << 20)?, 4096),
        negative_cache_max_ms: o
            .uint("negative_cache_max_ms", 0, 86_400_000)?
            .unwrap_or(60_000),
        max_response_bytes: u32_of(o.uint("max_response_bytes", 512, 1 << 20)?, 64 * 1024) as usize,
        max_token_bytes: u32_of(o.uint("max_token_bytes", 64, 1 << 20)?, 8 * 1024) as usize,
        max_value_bytes: u32_of(o.uint("max_value_bytes", 1, MAX_VALUE_BYTES)?, 4096) as usize,
        max_request_bytes: u32_of(o.uint("max_request_bytes", 256, 1 << 20)?, 16 * 1024) as usize,
        invalid_request_status: u32_of(o.uint("invalid_request_status", 400, 599)?, 400) as u16,
        reports: None,
    };
    let config = Config {
        reports: match o.object("reports")? {
            None => None,
            Some(mut r) => {
                let spec = super::reports::read(&mut r, &config)?;
                r.done()?;
                Some(spec)
            }
        },
        ..config
    };
    o.done()?;
    super::wire::check(&config)?;
    Ok(config)
}

fn service(o: &mut Obj<'_>) -> Result<Service> {
    let cluster = o.required_string("cluster")?;
    let timeout_ms = u32_of(o.uint("timeout_ms", 1, 60_000)?, 20);
    let http = o.choice("transport", &["grpc", "http"])? == Some(1);
    let path = o.string("path")?;
    let authority = o.string("authority")?;
    let transport = if http {
        let path = path.unwrap_or_else(|| "/json".into());
        http_path(&o.at("path"), &path)?;
        let authority = authority.unwrap_or_else(|| cluster.clone());
        http_authority(&o.at("authority"), &authority)?;
        Transport::Http { path, authority }
    } else {
        if path.is_some() || authority.is_some() {
            return Err(err(
                o.at("transport"),
                "must be `http` for `path` and `authority`",
            ));
        }
        Transport::Grpc
    };
    Ok(Service {
        cluster,
        timeout_ms,
        transport,
    })
}

fn request_headers(o: &mut Obj<'_>) -> Result<RequestHeaders> {
    let name = |o: &mut Obj<'_>, field: &'static str| -> Result<Option<String>> {
        let v = o.string(field)?;
        v.map(|h| header_name(&o.at(field), &h, false).map(|()| h))
            .transpose()
    };
    let request_id = name(o, "request_id")?;
    let remaining = name(o, "remaining")?;
    let tenant = match o.object("tenant")? {
        None => None,
        Some(mut t) => {
            let header = t.required_string("header")?;
            header_name(&t.at("header"), &header, false)?;
            let key = t.required_string("key")?;
            t.done()?;
            Some((header, key))
        }
    };
    Ok(RequestHeaders {
        request_id,
        remaining,
        tenant,
    })
}

fn descriptor(v: &Value, at: String) -> Result<DescriptorDef> {
    let mut o = Obj::new(v, at.clone())?;
    let name = o.string("name")?;
    let items = o
        .array("actions")?
        .ok_or_else(|| err(o.at("actions"), "is required"))?;
    if items.is_empty() || items.len() as u64 > MAX_ACTIONS {
        return Err(err(
            o.at("actions"),
            format!("needs 1 to {MAX_ACTIONS} actions"),
        ));
    }
    let actions = items
        .iter()
        .enumerate()
        .map(|(j, a)| action(a, format!("{at}.actions[{j}]")))
        .collect::<Result<Vec<_>>>()?;
    let local = match o.object("local")? {
        None => None,
        Some(mut b) => {
            let max_tokens = u32_of(b.uint("max_tokens", 1, u64::from(u32::MAX))?, 0);
            if max_tokens == 0 {
                return Err(err(b.at("max_tokens"), "is required"));
            }
            let tokens_per_fill = u32_of(
                b.uint("tokens_per_fill", 1, u64::from(u32::MAX))?,
                max_tokens,
            );
            let fill_interval_ms = u32_of(b.uint("fill_interval_ms", 1, 86_400_000)?, 0);
            if fill_interval_ms == 0 {
                return Err(err(b.at("fill_interval_ms"), "is required"));
            }
            b.done()?;
            Some(BucketSpec {
                max_tokens,
                tokens_per_fill,
                fill_interval_ms,
            })
        }
    };
    let charge = match o.object("charge")? {
        None => None,
        Some(mut c) => {
            let from = c.choice("from", &["response_bytes", "response_header"])?;
            let header = c.string("header")?;
            let source = match (from, header) {
                (Some(0), None) => ChargeSource::ResponseBytes,
                (Some(0), Some(_)) => {
                    return Err(err(
                        c.at("header"),
                        "only applies to `from: response_header`",
                    ));
                }
                (Some(_), Some(h)) => {
                    header_name(&c.at("header"), &h, false)?;
                    ChargeSource::ResponseHeader(h)
                }
                (Some(_), None) => {
                    return Err(err(
                        c.at("header"),
                        "is required with `from: response_header`",
                    ));
                }
                (None, _) => return Err(err(c.at("from"), "is required")),
            };
            c.done()?;
            Some(source)
        }
    };
    o.done()?;
    Ok(DescriptorDef {
        name: name.unwrap_or(at),
        actions,
        local,
        charge,
    })
}

const ACTIONS: [&str; 8] = [
    "generic_key",
    "request_header",
    "query_parameter",
    "method",
    "path",
    "remote_address",
    "metadata",
    "jwt_claim",
];

fn action(v: &Value, at: String) -> Result<Action> {
    let members = v
        .as_object()
        .ok_or_else(|| err(at.as_str(), "must be an object with one action"))?;
    let [(kind, body)] = members else {
        return Err(err(
            at,
            format!("must have exactly one of {}", ACTIONS.join(", ")),
        ));
    };
    let Some(kind) = ACTIONS.iter().find(|a| *a == kind) else {
        return Err(err(
            join(&at, kind),
            format!("unknown action (known: {})", ACTIONS.join(", ")),
        ));
    };
    let mut o = Obj::new(body, join(&at, kind))?;
    let action = match *kind {
        "generic_key" => Action::GenericKey {
            value: o.required_string("descriptor_value")?,
            key: o.string("key")?.unwrap_or_else(|| "generic_key".into()),
        },
        "request_header" => {
            let header = o.required_string("header")?;
            header_name(&o.at("header"), &header, true)?;
            Action::RequestHeader {
                header,
                key: o.required_string("key")?,
                skip_if_absent: o.boolean("skip_if_absent")?.unwrap_or(false),
            }
        }
        "query_parameter" => Action::QueryParameter {
            name: o.required_string("name")?,
            key: o.required_string("key")?,
            skip_if_absent: o.boolean("skip_if_absent")?.unwrap_or(false),
        },
        "method" => {
            let key = o.string("key")?.unwrap_or_else(|| "method".into());
            let matching = match (o.strings("methods")?, o.string("descriptor_value")?) {
                (None, None) => None,
                (Some(m), Some(v)) if !m.is_empty() => {
                    Some((m.iter().map(|s| s.to_ascii_uppercase()).collect(), v))
                }
                _ => {
                    return Err(err(
                        o.path.as_str(),
                        "`methods` (non-empty) and `descriptor_value` go together",
                    ));
                }
            };
            Action::Method { key, matching }
        }
        "path" => {
            let matcher = match (o.string("exact")?, o.string("prefix")?) {
                (Some(e), None) => PathMatch::Exact(e),
                (None, Some(p)) => PathMatch::Prefix(p),
                _ => {
                    return Err(err(
                        o.path.as_str(),
                        "needs exactly one of `exact` and `prefix`",
                    ));
                }
            };
            Action::Path {
                matcher,
                value: o.required_string("descriptor_value")?,
                key: o.string("key")?.unwrap_or_else(|| "header_match".into()),
                expect_match: o.boolean("expect_match")?.unwrap_or(true),
            }
        }
        "remote_address" => Action::RemoteAddress {
            v4_prefix: o.uint("v4_prefix_len", 0, 32)?.map(|n| n as u8),
            v6_prefix: o.uint("v6_prefix_len", 0, 128)?.map(|n| n as u8),
        },
        "metadata" => Action::Metadata {
            property: o
                .strings("property")?
                .filter(|p| !p.is_empty())
                .ok_or_else(|| err(o.at("property"), "needs a path of names"))?,
            key: o.required_string("key")?,
            default_value: o.string("default_value")?,
            skip_if_absent: o.boolean("skip_if_absent")?.unwrap_or(false),
        },
        _ => {
            let header = o
                .string("header")?
                .unwrap_or_else(|| "authorization".into());
            header_name(&o.at("header"), &header, false)?;
            let claim: Vec<String> = o
                .required_string("claim")?
                .split('.')
                .map(str::to_string)
                .collect();
            if claim.iter().any(String::is_empty) {
                return Err(err(o.at("claim"), "must be a dotted claim path"));
            }
            Action::JwtClaim {
                header,
                claim,
                key: o.required_string("key")?,
                skip_if_absent: o.boolean("skip_if_absent")?.unwrap_or(false),
            }
        }
    };
    o.done()?;
    Ok(action)
}

pub(super) fn http_path(field: &str, path: &str) -> Result<()> {
    if !path.starts_with('/') || path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(err(field, "must be an absolute path without spaces"));
    }
    Ok(())
}

pub(super) fn http_authority(field: &str, authority: &str) -> Result<()> {
    if authority.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(err(field, "must be a host name without spaces"));
    }
    Ok(())
}

/// Lower-case HTTP token characters; pseudo-headers (`:path`) only where reading them makes sense.
fn header_name(field: &str, name: &str, pseudo_ok: bool) -> Result<()> {
    let body = match name.strip_prefix(':') {
        Some(rest) if pseudo_ok => rest,
        Some(_) => return Err(err(field, "pseudo-headers are not allowed here")),
        None => name,
    };
    let token =
        |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$%&'*+-.^_`|~".contains(&b);
    if body.is_empty() || !body.bytes().all(token) {
        return Err(err(
            field,
            format!("{name:?} is not a lower-case HTTP header name"),
        ));
    }
    Ok(())
}
