//! Load errors. Every error names the file and, when the file could be read, the 1-based line and
//! column it is about, so `sluice` can print them in the `path:line:col: reason` form editors and
//! CI logs turn into links.

use std::fmt;
use std::path::PathBuf;

/// Where in which file an error is.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub path: PathBuf,
    /// 1-based.
    pub line: usize,
    /// 1-based, in characters.
    pub column: usize,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}:{}", self.path.display(), self.line, self.column)
    }
}

/// One problem found while loading a rule set.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The path, a directory entry or a file could not be read.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not well-formed YAML (or holds more than one document).
    #[error("{at}: invalid YAML: {message}")]
    Syntax { at: Position, message: String },
    /// Well-formed YAML that is not a valid rule set.
    #[error("{at}: {reason}")]
    Invalid { at: Position, reason: String },
    /// Errors past the first `MAX_REPORTED` of a load, counted only.
    #[error("... and {0} more errors")]
    More(usize),
}

/// Errors one load reports, at most: a generated rule set with a mistake in every descriptor
/// should not turn into a million log lines.
pub const MAX_REPORTED: usize = 200;

impl ConfigError {
    /// `None` only for [`ConfigError::Io`] and [`ConfigError::More`].
    pub fn position(&self) -> Option<&Position> {
        match self {
            ConfigError::Io { .. } | ConfigError::More(_) => None,
            ConfigError::Syntax { at, .. } | ConfigError::Invalid { at, .. } => Some(at),
        }
    }
}

/// Every error of one load, in file order and, within a file, by position. Never empty.
#[derive(Debug)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl ConfigErrors {
    /// The errors of one load, the first `MAX_REPORTED` of them and a count of the rest.
    pub fn capped(mut errors: Vec<ConfigError>) -> Self {
        if errors.len() > MAX_REPORTED {
            let more = errors.len() - MAX_REPORTED;
            errors.truncate(MAX_REPORTED);
            errors.push(ConfigError::More(more));
        }
        ConfigErrors(errors)
    }

    pub fn iter(&self) -> std::slice::Iter<'_, ConfigError> {
        self.0.iter()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for ConfigErrors {
    /// One error per line, no trailing newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl From<ConfigError> for ConfigErrors {
    fn from(e: ConfigError) -> Self {
        ConfigErrors(vec![e])
    }
}

impl<'a> IntoIterator for &'a ConfigErrors {
    type Item = &'a ConfigError;
    type IntoIter = std::slice::Iter<'a, ConfigError>;

    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}
