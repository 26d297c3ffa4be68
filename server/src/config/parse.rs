//! One rule file: YAML text → raw descriptors, with every field checked where it stands.
//!
//! The reference service checks field names against one flat list, so `requests_per_unit` written
//! on a descriptor instead of inside `rate_limit` loads and is silently ignored, and the resulting
//! limit of 0 rejects every request. Here each mapping has its own field list, and a field that
//! belongs elsewhere is reported with where it belongs. Everything the reference accepts in the
//! right place is accepted, including YAML 1.1 booleans (`yes`, `on`) and merge keys (`<<`),
//! because its parser (Go's yaml.v2) reads them.

use std::collections::HashMap;

use super::fields::{Fields, Place};
use super::limit::RawLimits;
use super::model::HttpDescriptor;
use super::notification_block::RawNotifications;
use super::yaml::{self, Kind, Mark, Yaml};
use crate::storage::FailureMode;

/// A value with the position of its first character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Spanned<T> {
    pub value: T,
    pub at: Mark,
}

#[derive(Debug)]
pub(super) struct RawFile {
    /// `None` when missing or invalid (already reported).
    pub domain: Option<Spanned<String>>,
    pub descriptors: Vec<RawDescriptor>,
    /// `http_descriptors`, when given and valid.
    pub http_descriptors: Option<Spanned<Vec<HttpDescriptor>>>,
    /// Sluice's domain settings, when given (and valid).
    pub failure_mode: Option<Spanned<FailureMode>>,
    pub shard_by: Option<Spanned<String>>,
    /// The `notifications` block, when given and valid (its key files not read yet).
    pub notifications: Option<Spanned<RawNotifications>>,
}

#[derive(Debug)]
pub(super) struct RawDescriptor {
    pub key: Spanned<String>,
    /// `None` for a bare key; an empty `value` counts as none, as in the reference.
    pub value: Option<String>,
    /// From `rate_limit` or `rate_limits`; `None` when absent or invalid (already reported).
    pub rate_limit: Option<RawLimits>,
    pub descriptors: Vec<RawDescriptor>,
    pub shadow_mode: bool,
    pub quota_mode: bool,
    pub detailed_metric: bool,
    pub value_to_metric: bool,
    pub share_threshold: bool,
    /// `trial: {shadow_for}`, when given and valid.
    pub trial: Option<super::trial::TrialSpec>,
}

/// Descriptors nested inside each other, at most. Real rule files use a handful of levels (org,
/// team, app, route); the bound keeps every walk of the rule tree (building, matching, dumping,
/// dropping) shallow whatever a file holds, on any thread's stack.
pub const MAX_DESCRIPTOR_DEPTH: usize = 64;

/// Problems reported for one file, at most: past this, the rest are summed up in one line, so a
/// generated file with a million mistakes cannot make a load's report (or its memory) grow with it.
const MAX_PROBLEMS: usize = 100;

/// A problem at a position of the file being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Problem {
    Syntax(Mark, String),
    Invalid(Mark, String),
}

/// Reads one file. Never fails outright: problems are collected and as much as possible is still
/// read, so that one load reports everything wrong with a file.
pub(super) fn read(text: &str) -> (Option<RawFile>, Vec<Problem>) {
    read_with(
        text,
        "the file is empty: a rule file needs a `domain`",
        |r, root| r.file(root),
    )
}

/// Reads one YAML document with `read_root`; `empty` is the problem of a file without one.
pub(super) fn read_with<T>(
    text: &str,
    empty: &str,
    read_root: impl FnOnce(&mut Reader, &Yaml) -> Option<T>,
) -> (Option<T>, Vec<Problem>) {
    let mut reader = Reader {
        problems: Vec::new(),
        dropped: 0,
        depth: 0,
    };
    let file = match yaml::parse(text) {
        Err(e) => {
            reader.problems.push(Problem::Syntax(e.at, e.message));
            None
        }
        Ok(None) => {
            reader.invalid(Mark { line: 1, column: 1 }, empty);
            None
        }
        Ok(Some(root)) => read_root(&mut reader, &root),
    };
    if reader.dropped > 0 {
        let at = reader
            .problems
            .last()
            .map_or(Mark { line: 1, column: 1 }, |p| match p {
                Problem::Syntax(at, _) | Problem::Invalid(at, _) => *at,
            });
        reader.problems.push(Problem::Invalid(
            at,
            format!(
                "and {} more problems in this file (only the first {MAX_PROBLEMS} are listed)",
                reader.dropped
            ),
        ));
    }
    (file, reader.problems)
}

pub(super) struct Reader {
    problems: Vec<Problem>,
    /// Problems past [`MAX_PROBLEMS`], counted only.
    dropped: usize,
    /// How deep in `descriptors` the reader is.
    depth: usize,
}

impl Reader {
    pub(super) fn invalid(&mut self, at: Mark, reason: impl Into<String>) {
        if self.problems.len() >= MAX_PROBLEMS {
            self.dropped += 1;
            return;
        }
        self.problems.push(Problem::Invalid(at, reason.into()));
    }

    /// Checks the field names of a mapping: unknown, misplaced, duplicate or non-scalar keys.
    pub(super) fn fields<'y>(&mut self, map: &'y Yaml, place: Place) -> Fields<'y> {
        let Kind::Map(pairs) = &map.kind else {
            return Fields {
                at: map.at,
                entries: Vec::new(),
            };
        };
        let mut entries: Vec<(&'y str, &'y Yaml)> = Vec::with_capacity(pairs.len());
        // Where each name was first given. A map, not a scan of `entries`: a hostile mapping can
        // have hundreds of thousands of keys.
        let mut first_at: HashMap<&'y str, Mark> = HashMap::with_capacity(pairs.len());
        for (key, value) in pairs {
            let Kind::Scalar { text, .. } = &key.kind else {
                self.invalid(
                    key.at,
                    format!(
                        "field names must be plain strings, found {}",
                        key.describe()
                    ),
                );
                continue;
            };
            let name = text.as_str();
            if let Some(first) = first_at.get(name).copied() {
                self.invalid(
                    key.at,
                    format!(
                        "duplicate field `{name}` (first given at line {}, column {})",
                        first.line, first.column
                    ),
                );
                continue;
            }
            if !place.fields().contains(&name) {
                let reason = match place.home_of(name) {
                    Some(home) => format!(
                        "misplaced field `{name}` {}: it belongs {home}",
                        place.describe()
                    ),
                    None => format!(
                        "unknown field `{name}` {}; expected one of: {}",
                        place.describe(),
                        place.fields().join(", ")
                    ),
                };
                self.invalid(key.at, reason);
                continue;
            }
            entries.push((name, value));
            first_at.insert(name, key.at);
        }
        Fields {
            at: map.at,
            entries,
        }
    }

    fn file(&mut self, root: &Yaml) -> Option<RawFile> {
        if !matches!(root.kind, Kind::Map(_)) {
            self.invalid(
                root.at,
                format!(
                    "a rule file must be a mapping with `domain` and `descriptors`, found {}",
                    root.describe()
                ),
            );
            return None;
        }
        let fields = self.fields(root, Place::Top);
        let domain = match fields.get("domain") {
            None => {
                self.invalid(fields.at, "missing required field `domain`");
                None
            }
            Some(y) => match (&y.kind, self.string(y, "domain")) {
                (_, Some(d)) if !d.is_empty() => Some(Spanned { value: d, at: y.at }),
                (Kind::Scalar { .. }, _) => {
                    self.invalid(y.at, "`domain` must not be empty");
                    None
                }
                // Not a scalar: already reported.
                _ => None,
            },
        };
        let descriptors = self.descriptor_list(fields.get("descriptors"));
        let http_descriptors = fields
            .get("http_descriptors")
            .and_then(|y| self.http_descriptors(y));
        let failure_mode = fields.get("failure_mode").and_then(|y| {
            let text = self.string(y, "failure_mode")?;
            match FailureMode::parse(&text) {
                Some(value) => Some(Spanned { value, at: y.at }),
                None => {
                    self.invalid(
                        y.at,
                        format!("unknown failure_mode '{text}': expected allow, deny or local"),
                    );
                    None
                }
            }
        });
        let shard_by = fields.get("shard_by").and_then(|y| {
            let value = self.string(y, "shard_by")?;
            if value.is_empty() {
                self.invalid(y.at, "`shard_by` must name a descriptor key");
                return None;
            }
            Some(Spanned { value, at: y.at })
        });
        let notifications = fields.get("notifications").and_then(|y| {
            let value = self.notifications(y)?;
            Some(Spanned { value, at: y.at })
        });
        Some(RawFile {
            domain,
            descriptors,
            http_descriptors,
            failure_mode,
            shard_by,
            notifications,
        })
    }

    fn descriptor_list(&mut self, list: Option<&Yaml>) -> Vec<RawDescriptor> {
        let Some(list) = list else {
            return Vec::new();
        };
        if list.is_null() {
            return Vec::new();
        }
        let Kind::Seq(items) = &list.kind else {
            self.invalid(
                list.at,
                format!(
                    "`descriptors` must be a list of descriptors, found {}",
                    list.describe()
                ),
            );
            return Vec::new();
        };
        if self.depth >= MAX_DESCRIPTOR_DEPTH {
            self.invalid(
                list.at,
                format!(
                    "descriptors nest deeper than {MAX_DESCRIPTOR_DEPTH} levels here; a rule set \
                     needs a few (organisation, team, app, route)"
                ),
            );
            return Vec::new();
        }
        self.depth += 1;
        let read = items.iter().filter_map(|d| self.descriptor(d)).collect();
        self.depth -= 1;
        read
    }

    fn descriptor(&mut self, y: &Yaml) -> Option<RawDescriptor> {
        if !matches!(y.kind, Kind::Map(_)) {
            self.invalid(
                y.at,
                format!(
                    "each entry of `descriptors` must be a mapping with a `key`, found {}",
                    y.describe()
                ),
            );
            return None;
        }
        let f = self.fields(y, Place::Descriptor);

        let key = match f.get("key") {
            None => {
                self.invalid(f.at, "descriptor is missing `key`");
                None
            }
            Some(k) => match (&k.kind, self.string(k, "key")) {
                (_, Some(s)) if !s.is_empty() => Some(Spanned { value: s, at: k.at }),
                (Kind::Scalar { .. }, _) => {
                    self.invalid(k.at, "descriptor `key` must not be empty");
                    None
                }
                _ => None,
            },
        };
        let value = f
            .get("value")
            .and_then(|v| self.string(v, "value"))
            .filter(|v| !v.is_empty());

        let shadow_mode = self.flag(&f, "shadow_mode");
        let quota_mode = self.flag(&f, "quota_mode");
        let detailed_metric = self.flag(&f, "detailed_metric");
        let value_to_metric = self.flag(&f, "value_to_metric");
        let share_threshold = self.flag(&f, "share_threshold");
        if share_threshold && !value.as_deref().is_some_and(|v| v.contains('*')) {
            let at = f.get("share_threshold").map_or(f.at, |y| y.at);
            self.invalid(
                at,
                "`share_threshold` needs a wildcard `value` (one containing `*`) on the same descriptor",
            );
        }

        if let Some(m) = f.get("metadata")
            && !m.is_null()
            && !matches!(m.kind, Kind::Map(_))
        {
            self.invalid(
                m.at,
                format!("`metadata` must be a mapping, found {}", m.describe()),
            );
        }

        let rate_limit = match (f.get("rate_limit"), f.get("rate_limits")) {
            (Some(_), Some(list)) => {
                self.invalid(
                    list.at,
                    "`rate_limit` and `rate_limits` cannot both be set on one descriptor: put \
                     every limit in `rate_limits`",
                );
                None
            }
            (Some(one), None) => self.rate_limit(one),
            (None, Some(list)) => self.rate_limits(list),
            (None, None) => None,
        };
        let trial = f.get("trial").and_then(|t| {
            let length = self.trial(t)?;
            if f.get("rate_limit").is_none() && f.get("rate_limits").is_none() {
                self.invalid(
                    t.at,
                    "`trial` needs a `rate_limit` on the same descriptor: it is that limit's \
                     values that start in shadow mode",
                );
                return None;
            }
            if shadow_mode {
                self.invalid(
                    t.at,
                    "`trial` on a descriptor in `shadow_mode` changes nothing: every value is \
                     already in shadow mode",
                );
                return None;
            }
            Some(length)
        });
        let descriptors = self.descriptor_list(f.get("descriptors"));

        Some(RawDescriptor {
            key: key?,
            value,
            rate_limit,
            descriptors,
            shadow_mode,
            quota_mode,
            detailed_metric,
            value_to_metric,
            share_threshold,
            trial,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::config::model::{Limit, RateLimit, Unit};

    #[test]
    fn reads_a_full_descriptor() {
        let (file, problems) = read(
            "domain: d\ndescriptors:\n  - key: k\n    value: 200\n    shadow_mode: yes\n    \
             rate_limit: {unit: Minute, requests_per_unit: 5, name: a, replaces: [{name: b}]}\n",
        );
        assert_eq!(problems, []);
        let file = file.unwrap();
        assert_eq!(file.domain.unwrap().value, "d");
        let d = &file.descriptors[0];
        assert_eq!(d.value.as_deref(), Some("200"));
        assert!(d.shadow_mode);
        let rl = d.rate_limit.as_ref().unwrap();
        let mut want = RateLimit::fixed(5, Unit::Minute);
        want.name = Some("a".into());
        assert_eq!(rl.limit, Limit::Limited(Box::new([want])));
        assert_eq!(rl.replaces, ["b"]);
    }
}
