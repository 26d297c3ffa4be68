//! Raw descriptors of all files of a load → one [`RuleSet`]: the three-tier tree, one [`Rule`] per
//! node with a `rate_limit`, and duplicate checks across files.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::error::{ConfigError, Position};
use super::model::{Algorithm, HttpDescriptor, Level, Node, Rule, RuleSet};
use super::parse::{Problem, RawDescriptor, RawFile};
use super::yaml::Mark;

type Seen = (Position, String, Option<String>);

fn describe(key: &str, value: Option<&str>) -> String {
    match value {
        Some(v) => format!("(key '{key}', value '{v}')"),
        None => format!("(key '{key}')"),
    }
}

struct Domain {
    name: Arc<str>,
    root: Node,
    /// Where the domain was first named, for the duplicate-domain message.
    first: Position,
    /// Descriptor path (the reference's `key` / `key_value` segments) → where it was defined and
    /// its key and value.
    seen: HashMap<Vec<String>, Seen>,
    /// The domain's `http_descriptors` and where they were given.
    http: Option<(Position, Vec<HttpDescriptor>)>,
    settings: super::domain::Settings,
}

pub(super) struct Builder {
    merge_domains: bool,
    memory_store: bool,
    domains: HashMap<String, Domain>,
    rules: Vec<Arc<Rule>>,
    errors: Vec<ConfigError>,
    sources: Vec<PathBuf>,
}

impl Builder {
    pub fn new(opts: &super::LoadOptions) -> Self {
        Builder {
            merge_domains: opts.merge_domains,
            memory_store: opts.memory_store,
            domains: HashMap::new(),
            rules: Vec::new(),
            errors: Vec::new(),
            sources: Vec::new(),
        }
    }

    pub fn error(&mut self, e: ConfigError) {
        self.errors.push(e);
    }

    /// Reads one file's text and adds its rules. Errors are sorted by position within the file.
    pub fn add_text(&mut self, path: &Path, text: &str) {
        self.sources.push(path.to_path_buf());
        let start = self.errors.len();
        let (file, problems) = super::parse::read(text);
        self.errors.extend(errors_at(path, problems));
        if let Some(file) = file {
            self.add_file(path, file);
        }
        self.errors[start..].sort_by_key(|e| e.position().map(|p| (p.line, p.column)));
    }

    fn add_file(&mut self, path: &Path, mut file: RawFile) {
        let Some(domain) = file.domain.take() else {
            return;
        };
        let at = position(path, domain.at);
        if let Some(existing) = self.domains.get(&domain.value)
            && !self.merge_domains
        {
            let reason = format!(
                "duplicate domain '{}': already defined at {} (enable domain merging to combine \
                 files of one domain)",
                domain.value, existing.first
            );
            self.errors.push(ConfigError::Invalid { at, reason });
            return;
        }
        // The reference's MERGE_DOMAIN_CONFIG: a later file's top-level descriptors are added
        // beside the earlier ones. Nothing merges deeper, so a top-level descriptor named in two
        // files is a duplicate.
        let entry = self
            .domains
            .entry(domain.value.clone())
            .or_insert_with(|| Domain {
                name: Arc::from(domain.value.as_str()),
                root: Node::default(),
                first: at,
                seen: HashMap::new(),
                http: None,
                settings: Default::default(),
            });
        let name = entry.name.clone();
        entry
            .settings
            .take(path, &name, &mut file, self.memory_store, &mut self.errors);
        if let Some(http) = file.http_descriptors {
            let at = position(path, http.at);
            match &entry.http {
                // Merged files would otherwise have to agree on one header mapping silently.
                Some((first, _)) => self.errors.push(ConfigError::Invalid {
                    reason: format!(
                        "`http_descriptors` for domain '{}' are already given at {first}: give \
                         them in one file of the domain",
                        entry.name
                    ),
                    at,
                }),
                None => entry.http = Some((at, http.value)),
            }
        }
        let mut walk = Walk {
            path,
            domain: entry.name.clone(),
            seen: &mut entry.seen,
            rules: &mut self.rules,
            errors: &mut self.errors,
            levels: Vec::new(),
            segments: Vec::new(),
        };
        walk.insert(&mut entry.root, file.descriptors);
    }

    pub fn finish(mut self) -> Result<RuleSet, Vec<ConfigError>> {
        for d in self.domains.values() {
            let uses = |key: &str| d.seen.values().any(|(_, k, _)| k == key);
            d.settings.check(&d.name, uses, &mut self.errors);
        }
        if !self.errors.is_empty() {
            return Err(self.errors);
        }
        let options = super::domain::options(self.domains.iter().map(|(n, d)| (n, &d.settings)));
        let mut rules = self.rules;
        rules.sort_by(|a, b| a.stat_key.cmp(&b.stat_key));
        let mut http_descriptors = super::Map::default();
        let mut domains = super::Map::default();
        for (name, d) in self.domains {
            if let Some((_, http)) = d.http {
                http_descriptors.insert(name.clone(), http);
            }
            domains.insert(name, d.root);
        }
        let dump = super::dump::render(&rules, &http_descriptors, &options);
        Ok(RuleSet {
            domains,
            http_descriptors,
            options,
            sources: self.sources,
            dump,
        })
    }
}

/// The problems of the file at `path` as load errors.
pub(super) fn errors_at(path: &Path, problems: Vec<Problem>) -> Vec<ConfigError> {
    problems
        .into_iter()
        .map(|p| match p {
            Problem::Syntax(at, message) => ConfigError::Syntax {
                at: position(path, at),
                message,
            },
            Problem::Invalid(at, reason) => ConfigError::Invalid {
                at: position(path, at),
                reason,
            },
        })
        .collect()
}

fn position(path: &Path, at: Mark) -> Position {
    Position {
        path: path.to_path_buf(),
        line: at.line,
        column: at.column,
    }
}

struct Walk<'a> {
    path: &'a Path,
    domain: Arc<str>,
    seen: &'a mut HashMap<Vec<String>, Seen>,
    rules: &'a mut Vec<Arc<Rule>>,
    errors: &'a mut Vec<ConfigError>,
    levels: Vec<Level>,
    /// `key` or `key_value` per level, as the reference names nodes.
    segments: Vec<String>,
}

impl Walk<'_> {
    fn insert(&mut self, parent: &mut Node, descriptors: Vec<RawDescriptor>) {
        // Adaptive rules on a bare key: (key, where `adaptive` stands), checked against their
        // siblings once all of them are in.
        let mut bare_adaptive = Vec::new();
        for d in descriptors {
            let key = d.key.value;
            let segment = match &d.value {
                Some(v) => format!("{key}_{v}"),
                None => key.clone(),
            };
            self.segments.push(segment);
            let at = position(self.path, d.key.at);
            // Keyed by the reference's `key_value` name, so `{key: a_b}` and
            // `{key: a, value: b}` side by side are duplicates here as there: they would share
            // one stats name.
            if let Some((first, first_key, first_value)) = self.seen.get(&self.segments) {
                let name = format!("{}.{}", self.domain, self.segments.join("."));
                let reason = if *first_key == key && *first_value == d.value {
                    format!("duplicate descriptor '{name}': already defined at {first}")
                } else {
                    format!(
                        "descriptor {} has the same name '{name}' as descriptor {} at {first}: \
                         they would share stats and counters in the reference service",
                        describe(&key, d.value.as_deref()),
                        describe(first_key, first_value.as_deref()),
                    )
                };
                self.errors.push(ConfigError::Invalid { at, reason });
                self.segments.pop();
                continue;
            }
            self.seen
                .insert(self.segments.clone(), (at, key.clone(), d.value.clone()));
            self.levels.push(Level {
                key: key.clone(),
                value: d.value.clone(),
                share_threshold: d.share_threshold,
                value_to_metric: d.value_to_metric,
            });

            let mut node = Node::default();
            if let Some(rl) = d.rate_limit {
                let overflow = rl.overflow.and_then(|at| self.overflow_target(parent, at));
                if let Some(at) = rl.standing {
                    self.check_standing_path(at);
                }
                if let Some(at) = rl.adaptive {
                    self.check_adaptive_path(at);
                    if d.value.is_none() {
                        bare_adaptive.push((key.clone(), at));
                    }
                }
                let rule = Arc::new(Rule {
                    domain: self.domain.clone(),
                    levels: self.levels.clone(),
                    limit: rl.limit,
                    replaces: rl.replaces,
                    // Per node, not inherited: the reference reads these from the descriptor
                    // that carries the `rate_limit`.
                    shadow_mode: d.shadow_mode,
                    quota_mode: d.quota_mode,
                    detailed_metric: d.detailed_metric,
                    trial: d.trial,
                    stat_key: format!("{}.{}", self.domain, self.segments.join(".")).into(),
                    overflow,
                    series: Default::default(),
                });
                self.rules.push(rule.clone());
                node.rule = Some(rule);
            }
            self.insert(&mut node, d.descriptors);
            self.levels.pop();
            self.segments.pop();

            match d.value {
                None => {
                    parent.default.insert(key, node);
                }
                Some(v) if v.contains('*') => {
                    parent.wildcard.entry(key).or_default().push((v, node))
                }
                Some(v) => {
                    parent.exact.entry(key).or_default().insert(v, node);
                }
            }
        }
        for (key, at) in bare_adaptive {
            if parent.exact.contains_key(&key) || parent.wildcard.contains_key(&key) {
                self.errors.push(ConfigError::Invalid {
                    at: position(self.path, at),
                    reason: format!(
                        "`adaptive` on a bare key with other descriptors with key `{key}` beside \
                         it: its limit is written as an override of every `{key}` value, which \
                         would change theirs too"
                    ),
                });
            }
        }
    }

    /// An adaptive limit is written as an override whose target is the rule's path: every level
    /// must name an exact value, but the last, which may be a bare key (any value).
    fn check_adaptive_path(&mut self, at: Mark) {
        let last = self.levels.len().saturating_sub(1);
        let fits = self.levels.iter().enumerate().all(|(i, l)| match &l.value {
            Some(v) => !v.contains('*'),
            None => i == last,
        });
        if !fits {
            self.errors.push(ConfigError::Invalid {
                at: position(self.path, at),
                reason: "`adaptive` needs a rule whose path names exact values (the last level \
                         may be a bare key): its limit is written as an override of that path, \
                         and overrides do not target patterns"
                    .to_owned(),
            });
        }
    }
}

impl Walk<'_> {
    /// A penalty is written as an override whose target is the rule's path with the tenant's
    /// value last: every level above the tenant's must name an exact value.
    fn check_standing_path(&mut self, at: Mark) {
        let last = self.levels.len().saturating_sub(1);
        let fits = self.levels[..last]
            .iter()
            .all(|l| l.value.as_deref().is_some_and(|v| !v.contains('*')));
        if !fits {
            self.errors.push(ConfigError::Invalid {
                at: position(self.path, at),
                reason: "`standing` needs a rule whose path names exact values above its last \
                         level (the tenants'): a penalty is written as an override of that path \
                         with the tenant's value, and overrides do not target patterns"
                    .to_owned(),
            });
        }
    }

    /// The rule `overflow: parent` (given at `at`) draws from: the parent node's, which must be
    /// one counted limit.
    fn overflow_target(&mut self, parent: &Node, at: Mark) -> Option<Arc<Rule>> {
        let at = position(self.path, at);
        let reason = if self.levels.len() < 2 {
            "`overflow: parent` on a top-level descriptor: it has no parent descriptor".to_owned()
        } else {
            match &parent.rule {
                None => "`overflow: parent` needs a `rate_limit` on the parent descriptor, whose \
                         budget overflow is charged to"
                    .to_owned(),
                Some(rule) => match rule.limit.limits() {
                    [one]
                        if !matches!(
                            one.algorithm,
                            Algorithm::Concurrency | Algorithm::FairShare
                        ) =>
                    {
                        return Some(Arc::clone(rule));
                    }
                    _ => format!(
                        "`overflow: parent`: the parent's limit must be a counted limit (one fixed \
                         window, sliding window or token bucket), and {} is not",
                        rule.stat_key
                    ),
                },
            }
        };
        self.errors.push(ConfigError::Invalid { at, reason });
        None
    }
}
