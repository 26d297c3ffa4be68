//! Claims of a bearer token for `jwt_claim` descriptors, **decoded without verification**: the
//! filter must sit behind one that verifies the token (Envoy's `jwt_authn`, an ingress that checks
//! it), or a client picks whose quota it spends. Behind `jwt_authn`, the `metadata` action reading
//! the verified payload is the stronger choice; this one needs no proxy configuration.

use crate::descriptor::Unusable;
use crate::value::{self, Value};

/// The token in an `Authorization` value: after a case-insensitive `Bearer ` scheme. A value
/// with another scheme, or none, or an empty token holds no token: the claim is absent.
pub fn bearer_token(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The claim at `path` (object keys, outermost first) of a compact JWS, as an entry value:
/// strings as they are, numbers and booleans in their JSON form. `Ok(None)` when the token has
/// no such claim (or it is `null`): the claim is absent. An error when the token is present but
/// unusable: longer than `max_token_bytes`, not decodable, or the claim is an object or array.
pub fn claim(
    token: &str,
    path: &[String],
    max_token_bytes: usize,
) -> Result<Option<String>, Unusable> {
    if token.len() > max_token_bytes {
        return Err(Unusable::TokenTooLong {
            bytes: token.len(),
            max: max_token_bytes,
        });
    }
    let root = payload(token).ok_or(Unusable::TokenUndecodable)?;
    let mut value = &root;
    for key in path {
        match value.get(key) {
            Some(v) => value = v,
            None => return Ok(None),
        }
    }
    match value {
        Value::String(s) => Ok(Some(s.clone())),
        Value::Number(n) => Ok(Some(n.clone())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Null => Ok(None),
        Value::Array(_) | Value::Object(_) => Err(Unusable::ClaimNotScalar),
    }
}

/// The JSON payload of a compact JWS (`header.payload.signature`).
fn payload(token: &str) -> Option<Value> {
    let mut parts = token.split('.');
    let (_header, payload, _signature) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() {
        return None;
    }
    value::parse(&base64(payload)?).ok()
}

/// Base64 in either alphabet (JWTs use base64url without padding, proto3 JSON `bytes` the
/// standard one with it); padding is optional.
pub fn base64(text: &str) -> Option<Vec<u8>> {
    let text = text.trim_end_matches('=');
    let mut out = Vec::with_capacity(text.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0u32;
    for b in text.bytes() {
        let v = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'-' | b'+' => 62,
            b'_' | b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // One leftover character (6 bits) cannot encode a byte.
    if bits >= 6 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn encode(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |a, b| (a << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    fn token(payload: &str) -> String {
        format!(
            "{}.{}.sig",
            encode(br#"{"alg":"RS256"}"#),
            encode(payload.as_bytes())
        )
    }

    fn path(p: &str) -> Vec<String> {
        p.split('.').map(str::to_string).collect()
    }

    #[test]
    fn base64url_round_trips_every_length() {
        for n in 0..40u8 {
            let data: Vec<u8> = (0..n)
                .map(|i| i.wrapping_mul(37).wrapping_add(200))
                .collect();
            assert_eq!(base64(&encode(&data)), Some(data.clone()));
            assert_eq!(base64(&format!("{}==", encode(&data))), Some(data));
        }
        assert_eq!(base64("a"), None);
        assert_eq!(base64("ab+/"), Some(vec![0x69, 0xbf, 0xbf]));
        assert_eq!(base64("ab.c"), None);
    }

    #[test]
    fn reads_string_number_bool_and_nested_claims() {
        let t = token(r#"{"sub":"u-1","org":{"id":42,"paid":true,"tags":["a"]},"n":null}"#);
        let get = |p: &str| claim(&t, &path(p), 8192);
        assert_eq!(get("sub"), Ok(Some("u-1".into())));
        assert_eq!(get("org.id"), Ok(Some("42".into())));
        assert_eq!(get("org.paid"), Ok(Some("true".into())));
        // Absent: missing, null, or a path through a scalar.
        assert_eq!(get("n"), Ok(None));
        assert_eq!(get("missing"), Ok(None));
        assert_eq!(get("sub.deeper"), Ok(None));
        // Present but unusable as an entry value.
        assert_eq!(get("org.tags"), Err(Unusable::ClaimNotScalar));
        assert_eq!(get("org"), Err(Unusable::ClaimNotScalar));
    }

    #[test]
    fn refuses_malformed_and_oversized_tokens() {
        let good = token(r#"{"sub":"x"}"#);
        assert_eq!(
            claim(&good, &path("sub"), good.len() - 1),
            Err(Unusable::TokenTooLong {
                bytes: good.len(),
                max: good.len() - 1
            })
        );
        assert_eq!(claim(&good, &path("sub"), good.len()), Ok(Some("x".into())));
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "..",
            "x.!!!.y",
            &format!("h.{}.s", encode(b"not json")),
        ] {
            assert_eq!(
                claim(bad, &path("sub"), 8192),
                Err(Unusable::TokenUndecodable),
                "{bad}"
            );
        }
    }

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        assert_eq!(bearer_token("Bearer abc"), Some("abc"));
        assert_eq!(bearer_token("bearer   abc "), Some("abc"));
        assert_eq!(bearer_token("Basic abc"), None);
        assert_eq!(bearer_token("Bearer "), None);
        assert_eq!(bearer_token("abc"), None);
    }
}
