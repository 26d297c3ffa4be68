//! Scalar values of a rule file, read as Go's yaml.v2 reads them for the reference's field types:
//! strings (any scalar's text), booleans (YAML 1.1 spellings included), unsigned integers, and a
//! choice among fixed names. Each reports a problem at the value's position and reads as absent.

use super::fields::Fields;
use super::parse::Reader;
use super::yaml::{Kind, Yaml};

impl Reader {
    /// A string field. Any scalar is read by its text, as yaml.v2 does for a string target, so
    /// `value: 200` is the string "200". Null reads as absent.
    pub(super) fn string(&mut self, y: &Yaml, field: &str) -> Option<String> {
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
    pub(super) fn flag(&mut self, f: &Fields<'_>, field: &str) -> bool {
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

    /// One of a fixed set of lower-case names.
    pub(super) fn choice<T: Copy>(
        &mut self,
        y: &Yaml,
        field: &str,
        options: &[(&str, T)],
    ) -> Option<T> {
        let text = self.string(y, field)?;
        match options.iter().find(|(name, _)| *name == text) {
            Some(&(_, v)) => Some(v),
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                self.invalid(
                    y.at,
                    format!(
                        "unknown {field} '{text}'; expected one of: {}",
                        names.join(", ")
                    ),
                );
                None
            }
        }
    }

    /// The text of a length field (`250ms`, `7d`: a number and a unit), split where the unit
    /// starts (the unit is empty when none is given); `examples` names good lengths for the
    /// error of a field that is not a scalar.
    pub(super) fn length_parts<'y>(
        &mut self,
        y: &'y Yaml,
        field: &str,
        examples: &str,
    ) -> Option<(&'y str, &'y str, &'y str)> {
        let text = match &y.kind {
            Kind::Scalar { text, .. } if !y.is_null() => text.trim(),
            _ => {
                self.invalid(
                    y.at,
                    format!(
                        "`{field}` must be a length such as {examples}, found {}",
                        y.describe()
                    ),
                );
                return None;
            }
        };
        let split = text
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(text.len());
        let (number, unit) = text.split_at(split);
        Some((text, number, unit))
    }

    /// An unquoted integer in `min..=max`.
    pub(super) fn integer(&mut self, y: &Yaml, field: &str, min: u64, max: u64) -> Option<u64> {
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
        match parse_integer(text, min, max) {
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
pub(super) fn parse_integer(text: &str, min: u64, max: u64) -> Result<u64, String> {
    let body = text.strip_prefix('+').unwrap_or(text);
    if let Some(magnitude) = body.strip_prefix('-') {
        let digits =
            !magnitude.is_empty() && magnitude.chars().all(|c| c.is_ascii_digit() || c == '_');
        return Err(if digits {
            "must not be negative".into()
        } else {
            "must be an integer".into()
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
            return Err("must not have a leading zero (YAML 1.1 would read it as octal)".into());
        }
        (body, 10)
    };
    let cleaned: String = digits.chars().filter(|&c| c != '_').collect();
    if cleaned.is_empty() || !cleaned.chars().all(|c| c.is_digit(radix)) {
        return Err("must be an integer".into());
    }
    match u64::from_str_radix(&cleaned, radix) {
        Ok(n) if n > max => Err(format!("must be at most {max}")),
        Err(_) => Err(format!("must be at most {max}")),
        Ok(n) if n < min => Err(format!("must be at least {min}")),
        Ok(n) => Ok(n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::algorithm::MAX_UNITS;

    #[test]
    fn integers() {
        let max = MAX_UNITS;
        let cases: &[(&str, Result<u64, &str>)] = &[
            ("0", Ok(0)),
            ("10", Ok(10)),
            ("+7", Ok(7)),
            ("1_000", Ok(1000)),
            ("0x10", Ok(16)),
            ("0o10", Ok(8)),
            ("0b101", Ok(5)),
            ("10737418240", Ok(10_737_418_240)),
            ("9007199254740991", Ok(MAX_UNITS)),
            ("9007199254740992", Err("must be at most 9007199254740991")),
            (
                "99999999999999999999999",
                Err("must be at most 9007199254740991"),
            ),
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
            assert_eq!(
                parse_integer(text, 0, max),
                want.map_err(String::from),
                "{text}"
            );
        }
        assert_eq!(
            parse_integer("0", 1, 9),
            Err("must be at least 1".to_string())
        );
    }
}
