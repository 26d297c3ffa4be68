//! Query parameters of the request target (`:path`), read as bytes: a target that is not UTF-8
//! elsewhere does not hide a parameter, and a parameter whose value is not UTF-8 is present.

use super::Unusable;

/// The first value of query parameter `name` in a request target, percent-decoded (`+` is a
/// space, as in form encoding); parameters without `=` have an empty value. `None` when the
/// parameter is absent, an error when its decoded value is not UTF-8.
pub fn query_param(target: &[u8], name: &str) -> Option<Result<String, Unusable>> {
    let query = target.splitn(2, |b| *b == b'?').nth(1)?;
    let query = query.split(|b| *b == b'#').next().unwrap_or_default();
    query.split(|b| *b == b'&').find_map(|pair| {
        let mut kv = pair.splitn(2, |b| *b == b'=');
        let k = kv.next().unwrap_or_default();
        let v = kv.next().unwrap_or_default();
        (percent_decode(k) == name.as_bytes())
            .then(|| String::from_utf8(percent_decode(v)).map_err(|_| Unusable::DecodedNotUtf8))
    })
}

/// `%XX` and `+` decoded. A `%` not followed by two hex digits stays as it is, as in the WHATWG
/// URL standard's form decoding: the value is still one the client chose, and usable.
fn percent_decode(bytes: &[u8]) -> Vec<u8> {
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
    out
}
