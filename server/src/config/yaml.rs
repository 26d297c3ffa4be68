//! A small YAML document tree that remembers where every node starts.
//!
//! `serde_yaml::Value` drops positions, and a rule-set error without a line number sends the
//! operator hunting through a ConfigMap. So the event stream of `saphyr-parser` is folded into
//! this tree instead: scalars keep their source text and whether they were quoted (the reference
//! parser, Go's yaml.v2, treats unquoted `yes` as a boolean and quoted `"10"` as a string), and
//! mappings keep every key in file order, duplicates included, so validation can report them.
//!
//! The tree is bounded whatever the file holds: nesting deeper than [`MAX_DEPTH`] is refused while
//! reading (everything that walks the tree later may then recurse), and so is a tree that would
//! grow past [`MAX_NODES`] nodes or [`MAX_TEXT_BYTES`] of scalar text once aliases are expanded,
//! the "billion laughs" defence: a few hundred bytes of anchors and aliases can otherwise expand
//! to gigabytes.

use std::collections::{HashMap, HashSet};

use saphyr_parser::{Event, Parser, ScalarStyle, Span};

/// 1-based line and column of a node's first character.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    fn from_span(span: &Span) -> Mark {
        Mark {
            line: span.start.line(),
            column: span.start.col() + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Yaml {
    pub at: Mark,
    pub kind: Kind,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    Scalar {
        text: String,
        /// Unquoted and untagged: only such scalars may be read as null, bool or integer.
        plain: bool,
    },
    Seq(Vec<Yaml>),
    /// Entries in file order, duplicates kept.
    Map(Vec<(Yaml, Yaml)>),
}

impl Yaml {
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, Kind::Scalar { text, plain: true }
            if matches!(text.as_str(), "" | "~" | "null" | "Null" | "NULL"))
    }

    /// A short description for "expected X, found Y" messages.
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            _ if self.is_null() => "nothing",
            Kind::Scalar { .. } => "a scalar",
            Kind::Seq(_) => "a list",
            Kind::Map(_) => "a mapping",
        }
    }
}

/// A YAML syntax error or an unsupported construct, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SyntaxError {
    pub at: Mark,
    pub message: String,
}

/// Mappings and sequences nested inside each other, at most. A rule file nests two levels per
/// descriptor level, so this leaves room for the 64 descriptor levels `descriptors` allows and
/// their `rate_limit` blocks, and keeps every recursive walk of the tree a few hundred frames deep.
pub(crate) const MAX_DEPTH: usize = 160;
/// Nodes (scalars, mappings, sequences) in one file's tree, aliases expanded. A rule file with ten
/// thousand descriptors has about sixty thousand.
pub(crate) const MAX_NODES: usize = 500_000;
/// Bytes of scalar text in one file's tree, aliases expanded.
pub(crate) const MAX_TEXT_BYTES: usize = 16 * 1024 * 1024;

/// What a finished node costs: nodes, and bytes of scalar text.
#[derive(Debug, Clone, Copy, Default)]
struct Size {
    nodes: usize,
    text: usize,
}

impl Size {
    fn add(&mut self, other: Size) {
        self.nodes = self.nodes.saturating_add(other.nodes);
        self.text = self.text.saturating_add(other.text);
    }
}

enum Frame {
    Seq {
        at: Mark,
        anchor: usize,
        items: Vec<Yaml>,
        size: Size,
    },
    Map {
        at: Mark,
        anchor: usize,
        entries: Vec<(Yaml, Yaml)>,
        pending_key: Option<Yaml>,
        size: Size,
    },
}

impl Frame {
    fn size_mut(&mut self) -> &mut Size {
        match self {
            Frame::Seq { size, .. } | Frame::Map { size, .. } => size,
        }
    }
}

fn too_large(at: Mark, total: Size) -> Option<SyntaxError> {
    let message = if total.nodes > MAX_NODES {
        format!(
            "the document grows past {MAX_NODES} YAML nodes (aliases expanded); a rule file \
             is far smaller, so this looks like an alias bomb or a generated file to split"
        )
    } else if total.text > MAX_TEXT_BYTES {
        format!(
            "the document grows past {} MiB of text (aliases expanded); a rule file is far \
             smaller, so this looks like an alias bomb",
            MAX_TEXT_BYTES / (1024 * 1024)
        )
    } else {
        return None;
    };
    Some(SyntaxError { at, message })
}

/// Parses the first (and only) document of `text`. `Ok(None)` for a file with no document at all
/// (empty or only comments).
pub(crate) fn parse(text: &str) -> Result<Option<Yaml>, SyntaxError> {
    let mut stack: Vec<Frame> = Vec::new();
    let mut anchors: HashMap<usize, (Yaml, Size)> = HashMap::new();
    let mut root: Option<Yaml> = None;
    let mut documents = 0usize;
    // Everything built so far, aliases expanded.
    let mut total = Size::default();

    for item in Parser::new_from_str(text) {
        let (event, span) = item.map_err(|e| SyntaxError {
            at: Mark {
                line: e.marker().line(),
                column: e.marker().col() + 1,
            },
            message: e.info().to_owned(),
        })?;
        let at = Mark::from_span(&span);
        let (done, anchor, size) = match event {
            Event::DocumentStart(_) => {
                documents += 1;
                if documents > 1 {
                    return Err(SyntaxError {
                        at,
                        message: "a rule file holds exactly one YAML document; found a second one"
                            .to_owned(),
                    });
                }
                continue;
            }
            Event::Nothing | Event::StreamStart | Event::StreamEnd | Event::DocumentEnd => {
                continue;
            }
            Event::Alias(id) => match anchors.get(&id) {
                Some((node, size)) => {
                    // Checked before the copy is made, so a bomb never allocates.
                    let mut after = total;
                    after.add(*size);
                    if let Some(e) = too_large(at, after) {
                        return Err(e);
                    }
                    total = after;
                    (node.clone(), 0, *size)
                }
                None => {
                    return Err(SyntaxError {
                        at,
                        message: "alias refers to an anchor that is not defined before it"
                            .to_owned(),
                    });
                }
            },
            Event::Scalar(text, style, anchor, tag) => {
                // An explicit tag other than a core-schema one is not part of the rule format;
                // `!!str 10` is honoured as "this is a string", the others are read by their text.
                let is_str_tag = tag.as_ref().is_some_and(|t| t.suffix == "str");
                let plain = matches!(style, ScalarStyle::Plain) && !is_str_tag;
                let size = Size {
                    nodes: 1,
                    text: text.len(),
                };
                total.add(size);
                if let Some(e) = too_large(at, total) {
                    return Err(e);
                }
                let node = Yaml {
                    at,
                    kind: Kind::Scalar {
                        text: text.into_owned(),
                        plain,
                    },
                };
                (node, anchor, size)
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if stack.len() >= MAX_DEPTH => {
                return Err(SyntaxError {
                    at,
                    message: format!(
                        "mappings and lists nest deeper than {MAX_DEPTH} levels here; a rule \
                         file needs a few"
                    ),
                });
            }
            Event::SequenceStart(anchor, _) => {
                total.add(Size { nodes: 1, text: 0 });
                stack.push(Frame::Seq {
                    at,
                    anchor,
                    items: Vec::new(),
                    size: Size { nodes: 1, text: 0 },
                });
                continue;
            }
            Event::MappingStart(anchor, _) => {
                total.add(Size { nodes: 1, text: 0 });
                stack.push(Frame::Map {
                    at,
                    anchor,
                    entries: Vec::new(),
                    pending_key: None,
                    size: Size { nodes: 1, text: 0 },
                });
                continue;
            }
            Event::SequenceEnd => match stack.pop() {
                Some(Frame::Seq {
                    at,
                    anchor,
                    items,
                    size,
                }) => (
                    Yaml {
                        at,
                        kind: Kind::Seq(items),
                    },
                    anchor,
                    size,
                ),
                _ => unreachable_event(at)?,
            },
            Event::MappingEnd => match stack.pop() {
                Some(Frame::Map {
                    at,
                    anchor,
                    entries,
                    size,
                    ..
                }) => (
                    Yaml {
                        at,
                        kind: Kind::Map(apply_merge_keys(entries)),
                    },
                    anchor,
                    size,
                ),
                _ => unreachable_event(at)?,
            },
        };

        if anchor != 0 {
            anchors.insert(anchor, (done.clone(), size));
        }
        if let Some(parent) = stack.last_mut() {
            parent.size_mut().add(size);
        }
        match stack.last_mut() {
            None => root = Some(done),
            Some(Frame::Seq { items, .. }) => items.push(done),
            Some(Frame::Map {
                entries,
                pending_key,
                ..
            }) => match pending_key.take() {
                None => *pending_key = Some(done),
                Some(key) => entries.push((key, done)),
            },
        }
    }
    Ok(root)
}

fn unreachable_event(at: Mark) -> Result<(Yaml, usize, Size), SyntaxError> {
    Err(SyntaxError {
        at,
        message: "unbalanced YAML structure".to_owned(),
    })
}

/// YAML 1.1 merge keys (`<<: *defaults`), which the reference's parser honours: entries of the
/// merged mapping(s) are added unless the mapping already has that key. Earlier mappings in a
/// `<<: [*a, *b]` list win over later ones.
fn apply_merge_keys(entries: Vec<(Yaml, Yaml)>) -> Vec<(Yaml, Yaml)> {
    let is_merge = |k: &Yaml| matches!(&k.kind, Kind::Scalar { text, plain: true } if text == "<<");
    if !entries.iter().any(|(k, _)| is_merge(k)) {
        return entries;
    }
    let mut own = Vec::new();
    let mut merged = Vec::new();
    for (key, value) in entries {
        if !is_merge(&key) {
            own.push((key, value));
            continue;
        }
        match value.kind {
            Kind::Map(inner) => merged.extend(inner),
            Kind::Seq(items) => {
                for item in items {
                    match item.kind {
                        Kind::Map(inner) => merged.extend(inner),
                        _ => own.push((key.clone(), item)),
                    }
                }
            }
            // Not a mapping: keep it so validation reports `<<` as an unknown field.
            _ => own.push((key, value)),
        }
    }
    // A set, not a scan of `own` per merged entry: both can be large in a hostile file.
    let text_of = |y: &Yaml| match &y.kind {
        Kind::Scalar { text, .. } => Some(text.clone()),
        _ => None,
    };
    let mut names: HashSet<String> = own.iter().filter_map(|(k, _)| text_of(k)).collect();
    for (key, value) in merged {
        if let Some(name) = text_of(&key)
            && !names.insert(name)
        {
            continue;
        }
        own.push((key, value));
    }
    own
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn scalar(y: &Yaml) -> (&str, bool) {
        match &y.kind {
            Kind::Scalar { text, plain } => (text.as_str(), *plain),
            other => panic!("not a scalar: {other:?}"),
        }
    }

    #[test]
    fn positions_are_one_based() {
        let doc = parse("a: 1\nlist:\n  - key: x\n    value: 'y'\n")
            .unwrap()
            .unwrap();
        let Kind::Map(entries) = &doc.kind else {
            panic!()
        };
        assert_eq!(entries[0].0.at, Mark { line: 1, column: 1 });
        assert_eq!(entries[0].1.at, Mark { line: 1, column: 4 });
        let Kind::Seq(items) = &entries[1].1.kind else {
            panic!()
        };
        let Kind::Map(inner) = &items[0].kind else {
            panic!()
        };
        assert_eq!(
            inner[1].1.at,
            Mark {
                line: 4,
                column: 12
            }
        );
        assert_eq!(scalar(&inner[1].1), ("y", false));
        assert_eq!(scalar(&inner[0].1), ("x", true));
    }

    #[test]
    fn empty_file_has_no_document() {
        assert_eq!(parse("# only a comment\n").unwrap(), None);
        assert_eq!(parse("").unwrap(), None);
    }

    #[test]
    fn second_document_is_rejected() {
        let err = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert_eq!(err.at.line, 2);
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.at.line >= 1, "{err:?}");
    }

    #[test]
    fn aliases_and_merge_keys() {
        let doc =
            parse("base: &b {unit: minute, requests_per_unit: 5}\nx:\n  <<: *b\n  unit: hour\n")
                .unwrap()
                .unwrap();
        let Kind::Map(entries) = &doc.kind else {
            panic!()
        };
        let Kind::Map(x) = &entries[1].1.kind else {
            panic!()
        };
        let pairs: Vec<_> = x.iter().map(|(k, v)| (scalar(k).0, scalar(v).0)).collect();
        assert_eq!(pairs, [("unit", "hour"), ("requests_per_unit", "5")]);
    }

    #[test]
    fn duplicate_keys_are_kept() {
        let doc = parse("a: 1\na: 2\n").unwrap().unwrap();
        let Kind::Map(entries) = &doc.kind else {
            panic!()
        };
        assert_eq!(entries.len(), 2);
    }
}
