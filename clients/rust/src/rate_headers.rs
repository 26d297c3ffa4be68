//! The rate-limit headers of an answer, in any of Sluice's styles, read as one view of the
//! limit that binds now (`clients/behaviour.md` §1): the IETF draft's `RateLimit` and
//! `RateLimit-Policy`, Envoy's `X-RateLimit-*`, or `RateLimit-Limit/-Remaining/-Reset`.

use http::HeaderMap;

use crate::problem::digits;

/// What the headers say about the binding limit; each part may be missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RateView {
    pub limit: Option<u64>,
    pub remaining: Option<u64>,
    /// Seconds until the window resets.
    pub reset_s: Option<u64>,
    /// The window's length in seconds.
    pub window_s: Option<u64>,
}

impl RateView {
    /// The first style present wins (IETF, then `X-RateLimit-*`, then `RateLimit-*`); `None`
    /// when nothing readable is there. Never fails.
    pub fn read(headers: &HeaderMap) -> Option<RateView> {
        let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let view = if let Some(current) = get("ratelimit") {
            ietf(current, get("ratelimit-policy"))
        } else if let Some(limit) = get("x-ratelimit-limit") {
            let mut elements = limit.split(',');
            let limit = elements.next().and_then(digits);
            let window_s = limit.and_then(|l| {
                elements.find_map(|e| {
                    let mut params = e.split(';');
                    (digits(params.next()?) == Some(l)).then(|| param(params, "w"))?
                })
            });
            RateView {
                limit,
                remaining: get("x-ratelimit-remaining").and_then(digits),
                reset_s: get("x-ratelimit-reset").and_then(digits),
                window_s,
            }
        } else {
            RateView {
                limit: get("ratelimit-limit").and_then(digits),
                remaining: get("ratelimit-remaining").and_then(digits),
                reset_s: get("ratelimit-reset").and_then(digits),
                window_s: None,
            }
        };
        view.settle()
    }

    fn settle(mut self) -> Option<RateView> {
        if let (Some(r), Some(l)) = (self.remaining, self.limit) {
            self.remaining = Some(r.min(l));
        }
        self.window_s = self.window_s.filter(|w| *w > 0);
        (self != RateView::default()).then_some(self)
    }
}

/// `RateLimit: "name";r=R;t=T, ...` with `RateLimit-Policy: "name";q=Q;w=W, ...`.
fn ietf(current: &str, policy: Option<&str>) -> RateView {
    let mut chosen: Option<(String, u64, Option<u64>)> = None;
    for (name, params) in items(current) {
        let Some(r) = param(params.iter().copied(), "r") else {
            continue;
        };
        let t = param(params.iter().copied(), "t");
        let better = match &chosen {
            None => true,
            Some((_, best_r, best_t)) => r < *best_r || (r == *best_r && t > *best_t),
        };
        if better {
            chosen = Some((name, r, t));
        }
    }
    let Some((name, remaining, reset_s)) = chosen else {
        return RateView::default();
    };
    let policy = policy
        .map(items)
        .and_then(|ps| ps.into_iter().find(|(n, _)| *n == name));
    RateView {
        limit: policy
            .as_ref()
            .and_then(|(_, p)| param(p.iter().copied(), "q")),
        remaining: Some(remaining),
        reset_s,
        window_s: policy.and_then(|(_, p)| param(p.iter().copied(), "w")),
    }
}

/// Splits a list of `name;key=value;...` items; the name may be a quoted string.
fn items(text: &str) -> Vec<(String, Vec<&str>)> {
    let mut out = Vec::new();
    let mut rest = text;
    while !rest.trim().is_empty() {
        rest = rest.trim_start();
        let (name, after) = if let Some(quoted) = rest.strip_prefix('"') {
            let mut name = String::new();
            let mut chars = quoted.char_indices();
            let mut end = None;
            while let Some((i, c)) = chars.next() {
                match c {
                    '\\' => {
                        if let Some((_, e)) = chars.next() {
                            name.push(e);
                        }
                    }
                    '"' => {
                        end = Some(i + 1);
                        break;
                    }
                    _ => name.push(c),
                }
            }
            match end {
                Some(end) => (name, &quoted[end..]),
                None => return out,
            }
        } else {
            let end = rest.find([';', ',']).unwrap_or(rest.len());
            (rest[..end].trim().to_owned(), &rest[end..])
        };
        let end = after.find(',').unwrap_or(after.len());
        let params = after[..end].split(';').skip(1).collect();
        out.push((name, params));
        rest = after.get(end + 1..).unwrap_or("");
    }
    out
}

fn param<'a>(params: impl IntoIterator<Item = &'a str>, key: &str) -> Option<u64> {
    params.into_iter().find_map(|p| {
        let (k, v) = p.split_once('=')?;
        (k.trim() == key).then(|| digits(v))?
    })
}
