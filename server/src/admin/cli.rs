//! `sluice admin …`: the admin API from a shell.
//!
//! ```text
//! sluice admin --url http://127.0.0.1:8080 --token-file /run/secrets/admin counters edge app_id=weather-bot
//! sluice admin set edge app_id=weather-bot --limit 500 --ttl 3600 --reason "launch week"
//! sluice admin set shared tenant^=premium- --weight 4
//! sluice admin overrides | unset ID | reset edge app_id=weather-bot | top edge.app_id | audit
//! ```
//!
//! Entries are `key=value`, or `key^=prefix` for the last entry of an override's target. The
//! answer's JSON is printed; the exit status is 0 for a 2xx answer, 1 otherwise (with the error).

use std::path::PathBuf;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;

use super::ACTOR_HEADER;

#[derive(Debug, clap::Args)]
pub struct AdminArgs {
    /// Sluice's HTTP listener.
    #[arg(
        long,
        env = "SLUICE_ADMIN_URL",
        default_value = "http://127.0.0.1:8080"
    )]
    pub url: String,
    /// A file with the bearer token (its first token, `name:token` or bare, as the server reads).
    #[arg(long, env = "SLUICE_ADMIN_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// The bearer token itself.
    #[arg(long, env = "SLUICE_ADMIN_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Who is acting, for the audit log.
    #[arg(long = "as", env = "SLUICE_ADMIN_ACTOR")]
    pub actor: Option<String>,
    #[command(subcommand)]
    pub command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum AdminCommand {
    /// A descriptor's counters: used, remaining, reset and algorithm of each limit.
    Counters {
        domain: String,
        entries: Vec<String>,
    },
    /// Empty a descriptor's counters (a pool's leases are all released).
    Reset {
        domain: String,
        entries: Vec<String>,
    },
    /// A rule's heaviest consumers on that instance (no rule: the rules tracked).
    Top {
        rule: Option<String>,
        #[arg(short = 'n', long, default_value_t = 10)]
        limit: usize,
    },
    /// The holders of a descriptor's concurrency pools.
    Leases {
        domain: String,
        entries: Vec<String>,
    },
    /// Every runtime override.
    Overrides,
    /// Set an override for a descriptor (`key=value ...`) or a value prefix (`key^=prefix`).
    Set {
        domain: String,
        entries: Vec<String>,
        #[arg(long)]
        limit: Option<u64>,
        #[arg(long)]
        limit_name: Option<String>,
        #[arg(long)]
        concurrency: Option<u64>,
        #[arg(long)]
        weight: Option<u32>,
        /// shadow or enforce.
        #[arg(long)]
        mode: Option<String>,
        /// Seconds until the override lapses.
        #[arg(long)]
        ttl: Option<u64>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// Remove an override by id.
    Unset { id: String },
    /// The latest admin changes.
    Audit {
        #[arg(short = 'n', long, default_value_t = 20)]
        limit: usize,
    },
    /// A value's trial period (`DOMAIN key=value ...`); with `--end` or `--extend SECONDS`,
    /// end it now or keep the value in shadow mode that much longer (both audited overrides).
    Trial {
        domain: String,
        entries: Vec<String>,
        #[arg(long, conflicts_with = "extend")]
        end: bool,
        #[arg(long)]
        extend: Option<u64>,
        #[arg(long)]
        reason: Option<String>,
    },
    /// What a request would get now, and why, charging nothing: `DOMAIN key=value ...`, with
    /// `+` between descriptors.
    Explain {
        domain: String,
        entries: Vec<String>,
        /// The request's `hits_addend`.
        #[arg(long)]
        hits: Option<u64>,
    },
}

/// A `POST /json` body for `domain` and `key=value` arguments, `+` separating descriptors.
pub fn explain_body(
    domain: &str,
    args: &[String],
    hits: Option<u64>,
) -> Result<serde_json::Value, String> {
    let descriptors = args
        .split(|a| a == "+")
        .map(|one| Ok(serde_json::json!({ "entries": entries(one, false)? })))
        .collect::<Result<Vec<_>, String>>()?;
    let mut body = serde_json::json!({ "domain": domain, "descriptors": descriptors });
    if let Some(hits) = hits {
        body["hits_addend"] = serde_json::json!(hits);
    }
    Ok(body)
}

/// `key=value` entries as JSON; with `prefixes`, the last may be `key^=prefix`.
fn entries(args: &[String], prefixes: bool) -> Result<serde_json::Value, String> {
    let mut out = Vec::with_capacity(args.len());
    for (i, arg) in args.iter().enumerate() {
        let Some((key, value)) = arg.split_once('=') else {
            return Err(format!("'{arg}' is not key=value"));
        };
        match key.strip_suffix('^') {
            Some(key) if prefixes && i + 1 == args.len() => {
                out.push(serde_json::json!({ "key": key, "prefix": value }));
            }
            Some(_) => {
                return Err(format!(
                    "'{arg}': only an override's last entry takes a prefix"
                ));
            }
            None => out.push(serde_json::json!({ "key": key, "value": value })),
        }
    }
    Ok(serde_json::Value::Array(out))
}

fn token(args: &AdminArgs) -> Result<String, String> {
    if let Some(t) = &args.token {
        return Ok(t.clone());
    }
    let Some(path) = &args.token_file else {
        return Err("no token: pass --token-file PATH or set SLUICE_ADMIN_TOKEN".into());
    };
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty() && !l.starts_with('#'))
        .map(|l| match l.split_once(':') {
            Some((name, t)) if !name.is_empty() && !name.contains(' ') => t.trim().to_owned(),
            _ => l.to_owned(),
        })
        .ok_or_else(|| format!("{}: no token in the file", path.display()))
}

/// The request a command makes: method, path and query, body.
fn request_of(
    command: &AdminCommand,
) -> Result<(Method, String, Option<serde_json::Value>), String> {
    use AdminCommand as C;
    let descriptor = |domain: &str, e: &[String]| -> Result<serde_json::Value, String> {
        Ok(serde_json::json!({ "domain": domain, "descriptor": entries(e, false)? }))
    };
    Ok(match command {
        C::Counters { domain, entries } => (
            Method::POST,
            "/admin/counters".into(),
            Some(descriptor(domain, entries)?),
        ),
        C::Reset { domain, entries } => (
            Method::POST,
            "/admin/counters/reset".into(),
            Some(descriptor(domain, entries)?),
        ),
        C::Leases { domain, entries } => (
            Method::POST,
            "/admin/leases".into(),
            Some(descriptor(domain, entries)?),
        ),
        C::Top { rule: None, .. } => (Method::GET, "/admin/top".into(), None),
        C::Top {
            rule: Some(rule),
            limit,
        } => (
            Method::GET,
            format!("/admin/top?rule={}&limit={limit}", percent_encode(rule)),
            None,
        ),
        C::Overrides => (Method::GET, "/admin/overrides".into(), None),
        C::Set {
            domain,
            entries: e,
            limit,
            limit_name,
            concurrency,
            weight,
            mode,
            ttl,
            reason,
        } => {
            let mut body = serde_json::json!({ "domain": domain, "descriptor": entries(e, true)? });
            for (field, value) in [
                ("limit", limit.map(serde_json::Value::from)),
                (
                    "limit_name",
                    limit_name.clone().map(serde_json::Value::from),
                ),
                ("concurrency", concurrency.map(serde_json::Value::from)),
                ("weight", weight.map(serde_json::Value::from)),
                ("mode", mode.clone().map(serde_json::Value::from)),
                ("ttl_seconds", ttl.map(serde_json::Value::from)),
                ("reason", reason.clone().map(serde_json::Value::from)),
            ] {
                if let Some(v) = value {
                    body[field] = v;
                }
            }
            (Method::PUT, "/admin/overrides".into(), Some(body))
        }
        C::Unset { id } => (
            Method::DELETE,
            format!("/admin/overrides/{}", percent_encode(id)),
            None,
        ),
        C::Audit { limit } => (Method::GET, format!("/admin/audit?limit={limit}"), None),
        C::Trial {
            domain,
            entries,
            end,
            extend,
            reason,
        } => {
            let mut body = descriptor(domain, entries)?;
            body["action"] = match (end, extend) {
                (true, _) => "end",
                (false, Some(_)) => "extend",
                (false, None) => "status",
            }
            .into();
            if let Some(ttl) = extend {
                body["ttl_seconds"] = (*ttl).into();
            }
            if let Some(reason) = reason {
                body["reason"] = reason.clone().into();
            }
            (Method::POST, "/admin/trials".into(), Some(body))
        }
        C::Explain {
            domain,
            entries,
            hits,
        } => (
            Method::POST,
            "/admin/explain".into(),
            Some(explain_body(domain, entries, *hits)?),
        ),
    })
}

fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs the command; the process's exit status.
pub fn run(args: AdminArgs) -> std::process::ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sluice admin: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(call(&args)) {
        Ok(body) => {
            println!("{body}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sluice admin: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn call(args: &AdminArgs) -> Result<String, String> {
    let token = token(args)?;
    let (method, path, body) = request_of(&args.command)?;
    let authority = args
        .url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--url {}: only http:// URLs are supported", args.url))?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot connect to {authority}: {e}"))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(connection);
    let mut request = Request::builder()
        .method(method)
        .uri(&path)
        .header("host", authority)
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json");
    if let Some(actor) = &args.actor {
        request = request.header(ACTOR_HEADER, actor);
    }
    let payload = body.map(|b| b.to_string()).unwrap_or_default();
    let request = request
        .body(Full::new(Bytes::from(payload)))
        .map_err(|e| e.to_string())?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let bytes = response
        .into_body()
        .collect()
        .await
        .map_err(|e| e.to_string())?
        .to_bytes();
    let text = match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => serde_json::to_string_pretty(&v).unwrap_or_default(),
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    };
    if status.is_success() {
        Ok(text)
    } else {
        Err(format!("{status}: {text}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_and_prefixes() {
        let e = entries(&["team=t".into(), "app^=premium-".into()], true).unwrap();
        assert_eq!(
            e,
            serde_json::json!([{"key": "team", "value": "t"}, {"key": "app", "prefix": "premium-"}])
        );
        assert!(entries(&["app^=p".into(), "x=y".into()], true).is_err());
        assert!(entries(&["app^=p".into()], false).is_err());
        assert!(entries(&["novalue".into()], false).is_err());
        assert_eq!(percent_encode("edge.app_id"), "edge.app_id");
        assert_eq!(percent_encode("a b/c"), "a%20b%2Fc");
    }
}
