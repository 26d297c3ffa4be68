//! `http_descriptors`: how `/auth/{domain}` (NGINX `auth_request` and other proxies that ask
//! over HTTP) turns the headers of a request into descriptors, as Envoy's route actions do.
//!
//! ```yaml
//! http_descriptors:
//!   - entries: [{ key: app_id, header: X-App-Id }]
//!   - entries: [{ key: org, header: X-Org }, { key: team, header: X-Team }]
//!   - entries: [{ key: remote_address, header: X-Real-IP }]
//!   - entries: [{ key: generic_key, value: checkout }]
//!     hits_addend_header: X-Upload-Bytes
//! ```
//!
//! Header names are checked here, so a typo such as `X-App Id` is a load error with its position
//! rather than a descriptor that silently never appears.

use std::fmt::Write as _;

use super::fields::{Fields, Place};
use super::model::{EntrySource, HttpDescriptor, HttpEntry};
use super::parse::{Reader, Spanned};
use super::yaml::{Kind, Yaml};

impl Reader {
    /// The top-level `http_descriptors` list; `None` when invalid (already reported).
    pub(super) fn http_descriptors(&mut self, y: &Yaml) -> Option<Spanned<Vec<HttpDescriptor>>> {
        let Kind::Seq(items) = &y.kind else {
            self.invalid(
                y.at,
                format!(
                    "`http_descriptors` must be a list of descriptors (mappings with `entries`), \
                     found {}",
                    y.describe()
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.invalid(y.at, "`http_descriptors` must hold at least one descriptor");
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut complete = true;
        for item in items {
            match self.http_descriptor(item) {
                Some(d) => out.push(d),
                None => complete = false,
            }
        }
        complete.then_some(Spanned {
            value: out,
            at: y.at,
        })
    }

    fn http_descriptor(&mut self, y: &Yaml) -> Option<HttpDescriptor> {
        if !matches!(y.kind, Kind::Map(_)) {
            self.invalid(
                y.at,
                format!(
                    "each entry of `http_descriptors` must be a mapping with `entries`, found {}",
                    y.describe()
                ),
            );
            return None;
        }
        let f = self.fields(y, Place::HttpDescriptor);
        let hits_addend_header = match f.get("hits_addend_header") {
            None => Some(None),
            Some(h) => self.header_name(h, "hits_addend_header").map(Some),
        };
        let entries = match f.get("entries") {
            None => {
                self.invalid(f.at, "an HTTP descriptor needs `entries`");
                None
            }
            Some(list) => self.http_entries(list),
        };
        Some(HttpDescriptor {
            entries: entries?,
            hits_addend_header: hits_addend_header?,
        })
    }

    fn http_entries(&mut self, y: &Yaml) -> Option<Vec<HttpEntry>> {
        let Kind::Seq(items) = &y.kind else {
            self.invalid(
                y.at,
                format!(
                    "`entries` must be a list of `{{key, header}}` or `{{key, value}}` \
                     mappings, found {}",
                    y.describe()
                ),
            );
            return None;
        };
        if items.is_empty() {
            self.invalid(y.at, "`entries` must hold at least one entry");
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        let mut complete = true;
        for item in items {
            match self.http_entry(item) {
                Some(e) => out.push(e),
                None => complete = false,
            }
        }
        complete.then_some(out)
    }

    fn http_entry(&mut self, y: &Yaml) -> Option<HttpEntry> {
        if !matches!(y.kind, Kind::Map(_)) {
            self.invalid(
                y.at,
                format!(
                    "each entry must be a mapping with `key` and either `header` or `value`, \
                     found {}",
                    y.describe()
                ),
            );
            return None;
        }
        let f = self.fields(y, Place::HttpEntry);
        let key = self.entry_key(&f);
        let source = match (f.get("header"), f.get("value")) {
            (Some(_), Some(v)) => {
                self.invalid(
                    v.at,
                    "an entry takes its value from a `header` or is a constant `value`, not both",
                );
                None
            }
            (Some(h), None) => self.header_name(h, "header").map(EntrySource::Header),
            (None, Some(v)) => match self.string(v, "value") {
                Some(text) if !text.is_empty() => Some(EntrySource::Value(text)),
                Some(_) => {
                    self.invalid(v.at, "a constant `value` must not be empty");
                    None
                }
                None => {
                    if v.is_null() {
                        self.invalid(v.at, "a constant `value` must not be empty");
                    }
                    None
                }
            },
            (None, None) => {
                self.invalid(f.at, "an entry needs a `header` or a constant `value`");
                None
            }
        };
        Some(HttpEntry {
            key: key?,
            source: source?,
        })
    }

    fn entry_key(&mut self, f: &Fields<'_>) -> Option<String> {
        match f.get("key") {
            None => {
                self.invalid(f.at, "an entry needs a `key`");
                None
            }
            Some(k) => match self.string(k, "key") {
                Some(s) if !s.is_empty() => Some(s),
                _ => {
                    if matches!(k.kind, Kind::Scalar { .. }) {
                        self.invalid(k.at, "an entry's `key` must not be empty");
                    }
                    None
                }
            },
        }
    }

    /// A header name as RFC 9110 allows it (a token), returned in lower case.
    fn header_name(&mut self, y: &Yaml, field: &str) -> Option<String> {
        let text = match self.string(y, field) {
            Some(t) => t,
            None => {
                if y.is_null() {
                    self.invalid(y.at, format!("`{field}` must name a header"));
                }
                return None;
            }
        };
        if text.is_empty() || !text.bytes().all(is_token_byte) {
            self.invalid(
                y.at,
                format!(
                    "`{field}`: '{text}' is not a header name (letters, digits and \
                     !#$%&'*+-.^_`|~ only)"
                ),
            );
            return None;
        }
        Some(text.to_ascii_lowercase())
    }
}

/// The `/rlconfig` line of a domain's mapping:
/// `domain http_descriptors: [key=header:name, key2=value] hits_addend=header:name; [...]`
pub(super) fn dump(out: &mut String, domain: &str, descriptors: &[HttpDescriptor]) {
    let _ = write!(out, "{domain} http_descriptors: ");
    for (i, d) in descriptors.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        out.push('[');
        for (j, e) in d.entries.iter().enumerate() {
            if j > 0 {
                out.push_str(", ");
            }
            let _ = match &e.source {
                EntrySource::Header(h) => write!(out, "{}=header:{h}", e.key),
                EntrySource::Value(v) => write!(out, "{}={v}", e.key),
            };
        }
        out.push(']');
        if let Some(h) = &d.hits_addend_header {
            let _ = write!(out, " hits_addend=header:{h}");
        }
    }
    out.push('\n');
}

pub(super) fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::{EntrySource, parse_str};

    const RULES: &str = "domain: edge\ndescriptors:\n  - key: app_id\n    rate_limit: {unit: minute, requests_per_unit: 5}\n";

    #[test]
    fn reads_headers_constants_and_the_cost_header() {
        let text = format!(
            "{RULES}http_descriptors:\n  - entries:\n      - {{key: app_id, header: X-App-Id}}\n  \
             - entries: [{{key: generic_key, value: checkout}}]\n    hits_addend_header: X-Bytes\n"
        );
        let rules = parse_str("r.yaml", &text).unwrap();
        let map = &rules.http_descriptors["edge"];
        assert_eq!(map.len(), 2);
        assert_eq!(
            map[0].entries[0].source,
            EntrySource::Header("x-app-id".into())
        );
        assert_eq!(
            map[1].entries[0].source,
            EntrySource::Value("checkout".into())
        );
        assert_eq!(map[1].hits_addend_header.as_deref(), Some("x-bytes"));
        assert!(
            rules.dump.contains("edge http_descriptors"),
            "{}",
            rules.dump
        );
    }

    #[test]
    fn every_mistake_is_reported_with_its_position() {
        let text = format!(
            "{RULES}http_descriptors:\n  - entries:\n      - {{key: app_id, header: X App}}\n      \
             - {{key: team, header: X-Team, value: t}}\n      - {{header: X-Org}}\n      \
             - {{key: a, value: ''}}\n      - {{key: b, heder: X-B}}\n  - entries: []\n  \
             - {{hits_addend_header: X-B}}\n"
        );
        let errors = parse_str("r.yaml", &text).unwrap_err().to_string();
        for want in [
            "r.yaml:7:31: `header`: 'X App' is not a header name",
            "r.yaml:8:44: an entry takes its value from a `header` or is a constant `value`",
            "r.yaml:9:9: an entry needs a `key`",
            "r.yaml:10:25: a constant `value` must not be empty",
            "r.yaml:11:18: unknown field `heder` in an HTTP descriptor's entry",
            "r.yaml:12:14: `entries` must hold at least one entry",
            "r.yaml:13:5: an HTTP descriptor needs `entries`",
        ] {
            assert!(errors.contains(want), "missing {want:?} in\n{errors}");
        }
    }

    #[test]
    fn one_mapping_per_domain_even_when_merging() {
        let file = |n: &str| {
            format!(
                "domain: edge\ndescriptors:\n  - key: {n}\n    rate_limit: {{unit: minute, \
                 requests_per_unit: 5}}\nhttp_descriptors:\n  - entries: [{{key: {n}, header: X-{n}}}]\n"
            )
        };
        let (a, b) = (file("a"), file("b"));
        let opts = crate::config::LoadOptions {
            merge_domains: true,
            ..Default::default()
        };
        let errors =
            crate::config::parse_many(&[("a.yaml", a.as_str()), ("b.yaml", b.as_str())], &opts)
                .unwrap_err()
                .to_string();
        assert!(
            errors.contains(
                "b.yaml:6:3: `http_descriptors` for domain 'edge' are already given at a.yaml:6:3"
            ),
            "{errors}"
        );
    }
}
