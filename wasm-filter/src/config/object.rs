//! An object of the configuration being read: typed field readers that name the field's path in
//! every error, and the check that no field was left unread.

use super::{ConfigError, err};
use crate::value::Value;

pub(super) type Result<T> = std::result::Result<T, ConfigError>;

/// An object being read: the fields asked for so far, to report the ones nobody asked for.
pub(super) struct Obj<'a> {
    pub(super) path: String,
    members: &'a [(String, Value)],
    asked: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    pub(super) fn new(v: &'a Value, path: String) -> Result<Self> {
        let members = v.as_object().ok_or_else(|| {
            err(
                path.as_str(),
                format!("must be an object, not {}", v.kind()),
            )
        })?;
        for (i, (k, _)) in members.iter().enumerate() {
            if members.iter().take(i).any(|(earlier, _)| earlier == k) {
                return Err(err(join(&path, k), "appears twice"));
            }
        }
        Ok(Self {
            path,
            members,
            asked: Vec::new(),
        })
    }

    pub(super) fn at(&self, name: &str) -> String {
        join(&self.path, name)
    }

    pub(super) fn take(&mut self, name: &'static str) -> Option<&'a Value> {
        self.asked.push(name);
        self.members
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v)
            .filter(|v| **v != Value::Null)
    }

    pub(super) fn string(&mut self, name: &'static str) -> Result<Option<String>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::String(s)) if !s.is_empty() => Ok(Some(s.clone())),
            Some(Value::String(_)) => Err(err(self.at(name), "must not be empty")),
            Some(v) => Err(err(
                self.at(name),
                format!("must be a string, not {}", v.kind()),
            )),
        }
    }

    pub(super) fn required_string(&mut self, name: &'static str) -> Result<String> {
        self.string(name)?
            .ok_or_else(|| err(self.at(name), "is required"))
    }

    pub(super) fn uint(&mut self, name: &'static str, min: u64, max: u64) -> Result<Option<u64>> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
                _ => Err(err(
                    self.at(name),
                    format!("must be an integer from {min} to {max}"),
                )),
            },
        }
    }

    pub(super) fn boolean(&mut self, name: &'static str) -> Result<Option<bool>> {
        match self.take(name) {
            None => Ok(None),
            Some(Value::Bool(b)) => Ok(Some(*b)),
            Some(v) => Err(err(
                self.at(name),
                format!("must be true or false, not {}", v.kind()),
            )),
        }
    }

    pub(super) fn array(&mut self, name: &'static str) -> Result<Option<&'a [Value]>> {
        match self.take(name) {
            None => Ok(None),
            Some(v) => v
                .as_array()
                .map(Some)
                .ok_or_else(|| err(self.at(name), format!("must be an array, not {}", v.kind()))),
        }
    }

    pub(super) fn strings(&mut self, name: &'static str) -> Result<Option<Vec<String>>> {
        let Some(items) = self.array(name)? else {
            return Ok(None);
        };
        items
            .iter()
            .enumerate()
            .map(|(i, v)| match v.as_str() {
                Some(s) if !s.is_empty() => Ok(s.to_string()),
                _ => Err(err(
                    format!("{}[{i}]", self.at(name)),
                    "must be a non-empty string",
                )),
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }

    pub(super) fn object(&mut self, name: &'static str) -> Result<Option<Obj<'a>>> {
        let path = self.at(name);
        self.take(name).map(|v| Obj::new(v, path)).transpose()
    }

    /// The index in `options` of a string field's value.
    pub(super) fn choice(&mut self, name: &'static str, options: &[&str]) -> Result<Option<usize>> {
        let Some(v) = self.string(name)? else {
            return Ok(None);
        };
        options
            .iter()
            .position(|o| *o == v)
            .map(Some)
            .ok_or_else(|| {
                err(
                    self.at(name),
                    format!("must be one of {}, not {v:?}", options.join(", ")),
                )
            })
    }

    /// Fails on the first field nobody asked for.
    pub(super) fn done(self) -> Result<()> {
        match self
            .members
            .iter()
            .find(|(k, _)| !self.asked.contains(&k.as_str()))
        {
            None => Ok(()),
            Some((k, _)) => Err(err(
                join(&self.path, k),
                format!("unknown field (known here: {})", self.asked.join(", ")),
            )),
        }
    }
}

pub(super) fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

pub(super) fn u32_of(n: Option<u64>, default: u32) -> u32 {
    n.and_then(|n| u32::try_from(n).ok()).unwrap_or(default)
}
