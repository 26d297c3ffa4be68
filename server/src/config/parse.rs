//! One rule file: YAML text → raw descriptors, with every field checked where it stands.
//!
//! The reference service checks field names against one flat list, so `requests_per_unit` written
//! on a descriptor instead of inside `rate_limit` loads and is silently ignored, and the resulting
//! limit of 0 rejects every request. Here each mapping has its own field list, and a field that
//! belongs elsewhere is reported with where it belongs. Everything the reference accepts in the
//! right place is accepted, including YAML 1.1 booleans (`yes`, `on`) and merge keys (`<<`),
//! because its parser (Go's yaml.v2) reads them.

use super::model::{Limit, Unit};
use super::yaml::{self, Kind, Mark, Yaml};

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
}

#[derive(Debug)]
pub(super) struct RawDescriptor {
    pub key: Spanned<String>,
    /// `None` for a bare key; an empty `value` counts as none, as in the reference.
    pub value: Option<String>,
    pub rate_limit: Option<RawRateLimit>,
    pub descriptors: Vec<RawDescriptor>,
    pub shadow_mode: bool,
    pub quota_mode: bool,
    pub detailed_metric: bool,
    pub value_to_metric: bool,
    pub share_threshold: bool,
}

#[derive(Debug)]
pub(super) struct RawRateLimit {
    pub limit: Limit,
    pub name: Option<String>,
    pub replaces: Vec<String>,
}

/// A problem at a position of the file being read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Problem {
    Syntax(Mark, String),
    Invalid(Mark, String),
}

/// The mappings of the format, each with its own fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    Top,
    Descriptor,
    RateLimit,
    Replaces,
}

const TOP_FIELDS: &[&str] = &["domain", "descriptors"];
const DESCRIPTOR_FIELDS: &[&str] = &[
    "key",
    "value",
    "rate_limit",
    "descriptors",
    "shadow_mode",
    "quota_mode",
    "detailed_metric",
    "value_to_metric",
    "share_threshold",
    "metadata",
];
const RATE_LIMIT_FIELDS: &[&str] = &["unit", "requests_per_unit", "unlimited", "name", "replaces"];
const REPLACES_FIELDS: &[&str] = &["name"];

impl Place {
    fn fields(self) -> &'static [&'static str] {
        match self {
            Place::Top => TOP_FIELDS,
            Place::Descriptor => DESCRIPTOR_FIELDS,
            Place::RateLimit => RATE_LIMIT_FIELDS,
            Place::Replaces => REPLACES_FIELDS,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Place::Top => "at the top level",
            Place::Descriptor => "in a descriptor",
            Place::RateLimit => "in `rate_limit`",
            Place::Replaces => "in a `replaces` entry",
        }
    }

    /// Where a field that is not allowed here does belong, if anywhere.
    fn home_of(self, field: &str) -> Option<&'static str> {
        if self != Place::RateLimit && RATE_LIMIT_FIELDS.contains(&field) {
            Some("inside a descriptor's `rate_limit`")
        } else if self != Place::Descriptor && DESCRIPTOR_FIELDS.contains(&field) {
            Some("on a descriptor (an entry of `descriptors`)")
        } else if self != Place::Top && TOP_FIELDS.contains(&field) {
            Some("at the top level of the file")
        } else {
            None
        }
    }
}

/// The fields of one mapping, looked up by name.
struct Fields<'y> {
    at: Mark,
    entries: Vec<(&'y str, &'y Yaml)>,
}

impl<'y> Fields<'y> {
    fn get(&self, name: &str) -> Option<&'y Yaml> {
        self.entries
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| *v)
    }
}

/// Reads one file. Never fails outright: problems are collected and as much as possible is still
/// read, so that one load reports everything wrong with a file.
pub(super) fn read(text: &str) -> (Option<RawFile>, Vec<Problem>) {
    let mut reader = Reader {
        problems: Vec::new(),
    };
    let file = match yaml::parse(text) {
        Err(e) => {
            reader.problems.push(Problem::Syntax(e.at, e.message));
            None
        }
        Ok(None) => {
            reader.invalid(
                Mark { line: 1, column: 1 },
                "the file is empty: a rule file needs a `domain`",
            );
            None
        }
        Ok(Some(root)) => reader.file(&root),
    };
    (file, reader.problems)
}

struct Reader {
    problems: Vec<Problem>,
}

impl Reader {
    fn invalid(&mut self, at: Mark, reason: impl Into<String>) {
        self.problems.push(Problem::Invalid(at, reason.into()));
    }

    /// Checks the field names of a mapping: unknown, misplaced, duplicate or non-scalar keys.
    fn fields<'y>(&mut self, map: &'y Yaml, place: Place) -> Fields<'y> {
        let Kind::Map(pairs) = &map.kind else {
            return Fields {
                at: map.at,
                entries: Vec::new(),
            };
        };
        let mut entries: Vec<(&'y str, &'y Yaml)> = Vec::with_capacity(pairs.len());
        let mut first_at: Vec<Mark> = Vec::with_capacity(pairs.len());
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
            if let Some(i) = entries.iter().position(|(k, _)| *k == name) {
                let first = first_at[i];
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
            first_at.push(key.at);
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
        Some(RawFile {
            domain,
            descriptors,
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
        items.iter().filter_map(|d| self.descriptor(d)).collect()
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

        let rate_limit = f.get("rate_limit").and_then(|r| self.rate_limit(r));
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
        })
    }

    fn rate_limit(&mut self, y: &Yaml) -> Option<RawRateLimit> {
        if !matches!(y.kind, Kind::Map(_)) {
            self.invalid(
                y.at,
                format!(
                    "`rate_limit` must be a mapping with `unit` and `requests_per_unit` \
                     (or `unlimited: true`), found {}",
                    y.describe()
                ),
            );
            return None;
        }
        let f = self.fields(y, Place::RateLimit);
        let unlimited = self.flag(&f, "unlimited");
        // A missing `requests_per_unit` is 0, as in the reference: every request is over limit.
        let requests_per_unit = match f.get("requests_per_unit") {
            None => Some(0),
            Some(n) => self.count(n),
        };
        let unit = f.get("unit").and_then(|u| {
            let text = self.string(u, "unit")?;
            Some((text, u.at))
        });
        let name = f.get("name").and_then(|n| self.string(n, "name"));
        let name = name.filter(|n| !n.is_empty());
        let replaces = self.replaces(f.get("replaces"), name.as_deref());

        let limit = if unlimited {
            if let Some((_, at)) = unit {
                self.invalid(at, "`unit` must not be set together with `unlimited: true`");
            }
            Some(Limit::Unlimited)
        } else {
            match unit {
                None => {
                    self.invalid(f.at, "`rate_limit` needs a `unit` (or `unlimited: true`)");
                    None
                }
                Some((text, at)) => match Unit::parse(&text) {
                    Some(unit) => requests_per_unit.map(|requests_per_unit| Limit::PerUnit {
                        requests_per_unit,
                        unit,
                    }),
                    None => {
                        self.invalid(
                            at,
                            format!(
                                "unknown unit '{text}'; expected one of: second, minute, hour, \
                                 day, week, month, year"
                            ),
                        );
                        None
                    }
                },
            }
        };
        Some(RawRateLimit {
            limit: limit?,
            name,
            replaces,
        })
    }

    fn replaces(&mut self, y: Option<&Yaml>, own_name: Option<&str>) -> Vec<String> {
        let Some(y) = y else {
            return Vec::new();
        };
        if y.is_null() {
            return Vec::new();
        }
        let Kind::Seq(items) = &y.kind else {
            self.invalid(
                y.at,
                format!(
                    "`replaces` must be a list of `name:` entries, found {}",
                    y.describe()
                ),
            );
            return Vec::new();
        };
        let mut names = Vec::with_capacity(items.len());
        for item in items {
            if !matches!(item.kind, Kind::Map(_)) {
                self.invalid(
                    item.at,
                    format!(
                        "each `replaces` entry must be a mapping with a `name`, found {}",
                        item.describe()
                    ),
                );
                continue;
            }
            let f = self.fields(item, Place::Replaces);
            let name = f.get("name").and_then(|n| self.string(n, "name"));
            match name {
                Some(n) if !n.is_empty() => {
                    if Some(n.as_str()) == own_name {
                        let at = f.get("name").map_or(f.at, |y| y.at);
                        self.invalid(at, format!("rule '{n}' cannot replace itself"));
                    } else {
                        names.push(n);
                    }
                }
                _ => {
                    let at = f.get("name").map_or(f.at, |y| y.at);
                    self.invalid(at, "a `replaces` entry needs a non-empty `name`");
                }
            }
        }
        names
    }

    /// A string field. Any scalar is read by its text, as yaml.v2 does for a string target, so
    /// `value: 200` is the string "200". Null reads as absent.
    fn string(&mut self, y: &Yaml, field: &str) -> Option<String> {
        match &y.kind {
            _ if y.is_null() => None,
            Kind::Scalar { text, .. } => Some(text.clone()),
            _ => {
                self.invalid(
                    y.at,
                    format!("`{field}` must be a string, found {}", y.describe()),
                );
                None
            }
        }
    }

    /// A boolean field; absent or null is false. Unquoted YAML 1.1 spellings are accepted.
    fn flag(&mut self, f: &Fields<'_>, field: &str) -> bool {
        let Some(y) = f.get(field) else {
            return false;
        };
        if y.is_null() {
            return false;
        }
        if let Kind::Scalar { text, plain: true } = &y.kind {
            match text.as_str() {
                "true" | "True" | "TRUE" | "yes" | "Yes" | "YES" | "on" | "On" | "ON" | "y"
                | "Y" => return true,
                "false" | "False" | "FALSE" | "no" | "No" | "NO" | "off" | "Off" | "OFF" | "n"
                | "N" => return false,
                _ => {}
            }
        }
        let found = match &y.kind {
            Kind::Scalar { text, plain: true } => format!("'{text}'"),
            Kind::Scalar { text, plain: false } => format!("the quoted string \"{text}\""),
            _ => y.describe().to_owned(),
        };
        self.invalid(
            y.at,
            format!("`{field}` must be true or false, found {found}"),
        );
        false
    }

    /// `requests_per_unit`: an unquoted non-negative integer that fits in 32 bits.
    fn count(&mut self, y: &Yaml) -> Option<u32> {
        let field = "requests_per_unit";
        let text = match &y.kind {
            Kind::Scalar { text, plain: true } if !y.is_null() => text.as_str(),
            Kind::Scalar { text, plain: false } => {
                self.invalid(
                    y.at,
                    format!("`{field}` must be an integer, found the quoted string \"{text}\""),
                );
                return None;
            }
            _ => {
                self.invalid(
                    y.at,
                    format!("`{field}` must be an integer, found {}", y.describe()),
                );
                return None;
            }
        };
        match parse_count(text) {
            Ok(n) => Some(n),
            Err(why) => {
                self.invalid(y.at, format!("`{field}` {why}, found '{text}'"));
                None
            }
        }
    }
}

/// Integers as yaml.v2 reads them for an unsigned target: decimal with optional `+` and `_`
/// separators, or `0x`/`0o`/`0b` prefixed. A leading `0` means octal to yaml.v2 (`010` is 8), which
/// no one writing a limit means, so it is refused rather than silently read either way.
fn parse_count(text: &str) -> Result<u32, &'static str> {
    let body = text.strip_prefix('+').unwrap_or(text);
    if let Some(magnitude) = body.strip_prefix('-') {
        let digits =
            !magnitude.is_empty() && magnitude.chars().all(|c| c.is_ascii_digit() || c == '_');
        return Err(if digits {
            "must not be negative"
        } else {
            "must be an integer"
        });
    }
    let (digits, radix) = if let Some(d) = body.strip_prefix("0x") {
        (d, 16)
    } else if let Some(d) = body.strip_prefix("0o") {
        (d, 8)
    } else if let Some(d) = body.strip_prefix("0b") {
        (d, 2)
    } else {
        if body.len() > 1 && body.starts_with('0') && body.chars().all(|c| c.is_ascii_digit()) {
            return Err("must not have a leading zero (YAML 1.1 would read it as octal)");
        }
        (body, 10)
    };
    let cleaned: String = digits.chars().filter(|&c| c != '_').collect();
    if cleaned.is_empty() || !cleaned.chars().all(|c| c.is_digit(radix)) {
        return Err("must be an integer");
    }
    u64::from_str_radix(&cleaned, radix)
        .ok()
        .and_then(|n| u32::try_from(n).ok())
        .ok_or("must be at most 4294967295")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn counts() {
        let cases: &[(&str, Result<u32, &str>)] = &[
            ("0", Ok(0)),
            ("10", Ok(10)),
            ("+7", Ok(7)),
            ("1_000", Ok(1000)),
            ("0x10", Ok(16)),
            ("0o10", Ok(8)),
            ("0b101", Ok(5)),
            ("4294967295", Ok(u32::MAX)),
            ("4294967296", Err("must be at most 4294967295")),
            ("99999999999999999999999", Err("must be at most 4294967295")),
            ("-1", Err("must not be negative")),
            ("1.5", Err("must be an integer")),
            ("1e3", Err("must be an integer")),
            ("ten", Err("must be an integer")),
            ("-", Err("must be an integer")),
            (
                "010",
                Err("must not have a leading zero (YAML 1.1 would read it as octal)"),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_count(text), *want, "{text}");
        }
    }

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
        assert_eq!(
            rl.limit,
            Limit::PerUnit {
                requests_per_unit: 5,
                unit: Unit::Minute
            }
        );
        assert_eq!(rl.replaces, ["b"]);
    }
}
