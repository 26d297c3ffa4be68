//! Which rate-limit headers answers carry: Sluice's `--response-headers` styles, and the
//! reference's `LIMIT_RESPONSE_HEADERS_ENABLED` with its header names.

use super::SettingsError;
use crate::limiter::{HeaderNames, HeaderStyle};

/// The header flags, as given.
pub(super) struct Args {
    pub style: Option<String>,
    pub limit: Option<String>,
    pub remaining: Option<String>,
    pub reset: Option<String>,
}

pub(super) fn resolve(
    args: Args,
    get: &impl Fn(&'static str) -> Option<String>,
) -> Result<HeaderStyle, SettingsError> {
    let style = match args.style {
        Some(style) => Some(("--response-headers", style)),
        None => {
            get("LIMIT_RESPONSE_HEADERS_ENABLED").map(|v| ("LIMIT_RESPONSE_HEADERS_ENABLED", v))
        }
    };
    Ok(match style {
        None => HeaderStyle::Off,
        Some((name, style)) => match style.to_ascii_lowercase().as_str() {
            "off" | "false" | "0" | "no" => HeaderStyle::Off,
            "ratelimit" | "true" | "1" | "yes" => {
                let d = HeaderNames::default();
                HeaderStyle::RateLimit(HeaderNames {
                    limit: args
                        .limit
                        .or_else(|| get("LIMIT_LIMIT_HEADER"))
                        .unwrap_or(d.limit),
                    remaining: args
                        .remaining
                        .or_else(|| get("LIMIT_REMAINING_HEADER"))
                        .unwrap_or(d.remaining),
                    reset: args
                        .reset
                        .or_else(|| get("LIMIT_RESET_HEADER"))
                        .unwrap_or(d.reset),
                })
            }
            "x-ratelimit" => HeaderStyle::XRateLimit,
            "ietf" => HeaderStyle::Ietf,
            _ => {
                return Err(SettingsError::Env {
                    name,
                    value: style,
                    reason: "expected off, ratelimit, x-ratelimit or ietf (or true/false)".into(),
                });
            }
        },
    })
}
