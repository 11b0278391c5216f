//! The policy file: TOML, global `[[rule]]`s plus `[producers.<id>]` sections that
//! replace rules by id, add rules, or `disable` global ones. docs/policy.md has a full
//! example. Every problem is reported with the line it is on, all at once.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use globset::{GlobBuilder, GlobSetBuilder};
use serde::Deserialize;
use toml::Spanned;

use super::{Check, Mode, Patterns, Rule};
use crate::ids::ProducerId;

/// One thing wrong with a policy file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// 1-based; 0 when the problem has no place in the file.
    pub line: usize,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: {}", self.line, self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Not TOML, or not the policy's shape; toml's message carries line and column.
    #[error("{file}{message}")]
    Syntax { file: String, message: String },
    #[error("{file}{}", list(.problems))]
    Invalid {
        file: String,
        problems: Vec<Problem>,
    },
}

fn list(problems: &[Problem]) -> String {
    let n = problems.len();
    let mut s = format!("{n} problem{}:", if n == 1 { "" } else { "s" });
    for p in problems {
        s.push_str("\n  ");
        s.push_str(&p.to_string());
    }
    s
}

impl PolicyError {
    /// Name the file the text came from.
    pub fn in_file(self, path: &std::path::Path) -> PolicyError {
        let file = format!("policy file {}: ", path.display());
        match self {
            PolicyError::Syntax { message, .. } => PolicyError::Syntax { file, message },
            PolicyError::Invalid { problems, .. } => PolicyError::Invalid { file, problems },
            e @ PolicyError::Read { .. } => e,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSpec {
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RuleSpec>>,
    #[serde(default)]
    producers: BTreeMap<Spanned<String>, Spanned<ProducerSpec>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProducerSpec {
    /// Global rule ids that do not apply to this producer.
    #[serde(default)]
    disable: Vec<String>,
    /// Rules that replace the global rule of the same id, or add to them.
    #[serde(default, rename = "rule")]
    rules: Vec<Spanned<RuleSpec>>,
}

/// A rule as written: every kind's settings, of which each kind takes its own.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleSpec {
    id: String,
    kind: String,
    mode: String,
    /// Free text for the operator; ignored by the writer.
    #[serde(default)]
    #[allow(dead_code)]
    description: Option<String>,
    allow: Option<Vec<String>>,
    require: Option<Vec<String>>,
    forbid: Option<Vec<String>>,
    max: Option<i64>,
    min: Option<i64>,
    predicate_types: Option<Vec<String>>,
    schema: Option<String>,
    rate: Option<f64>,
    burst: Option<i64>,
}

const KINDS: [&str; 9] = [
    "payload_types",
    "predicate_types",
    "subject_names",
    "digest_algorithms",
    "max_subjects",
    "max_envelope_bytes",
    "min_signatures",
    "predicate_schema",
    "rate_limit",
];

/// Settings each kind takes; any other setting on a rule of that kind is a mistake.
fn settings_of(kind: &str) -> &'static [&'static str] {
    match kind {
        "payload_types" | "predicate_types" | "subject_names" => &["allow"],
        "digest_algorithms" => &["require", "forbid"],
        "max_subjects" | "max_envelope_bytes" => &["max"],
        "min_signatures" => &["min"],
        "predicate_schema" => &["predicate_types", "schema"],
        "rate_limit" => &["rate", "burst"],
        _ => &[],
    }
}

pub(super) type Compiled = (Vec<Rule>, Vec<usize>, HashMap<String, Vec<usize>>);

struct Lines<'a>(&'a str);

impl Lines<'_> {
    fn of(&self, span: Range<usize>) -> usize {
        let end = span.start.min(self.0.len());
        self.0.as_bytes()[..end]
            .iter()
            .filter(|b| **b == b'\n')
            .count()
            + 1
    }
}

pub(super) fn compile(source: &str) -> Result<Compiled, PolicyError> {
    let spec: FileSpec = toml::from_str(source).map_err(|e| PolicyError::Syntax {
        file: String::new(),
        message: e.to_string().trim_end().to_string(),
    })?;
    let lines = Lines(source);
    let mut problems = Vec::new();
    let mut rules = Vec::new();

    let mut global = Vec::new();
    let mut global_ids: HashMap<String, usize> = HashMap::new();
    for r in &spec.rules {
        let line = lines.of(r.span());
        if let Some(first) = global_ids.get(&r.get_ref().id) {
            problems.push(Problem {
                line,
                message: format!(
                    "rule id {:?} is already used on line {first}; ids must be unique",
                    r.get_ref().id
                ),
            });
            continue;
        }
        global_ids.insert(r.get_ref().id.clone(), line);
        if let Some(rule) = compile_rule(r.get_ref(), line, None, &mut problems) {
            global.push(rules.len());
            rules.push(rule);
        }
    }

    let mut overrides = HashMap::new();
    for (name, section) in &spec.producers {
        let producer = name.get_ref();
        let line = lines.of(name.span());
        if let Err(e) = ProducerId::parse(producer) {
            problems.push(Problem {
                line,
                message: format!("[producers.{producer}]: {e}"),
            });
            continue;
        }
        let section_line = lines.of(section.span());
        let disabled: HashSet<&str> = section
            .get_ref()
            .disable
            .iter()
            .map(|s| s.as_str())
            .collect();
        for id in &section.get_ref().disable {
            if !global_ids.contains_key(id) {
                problems.push(Problem {
                    line: section_line,
                    message: format!(
                        "[producers.{producer}] disables rule {id:?}, which is not a global rule"
                    ),
                });
            }
        }
        let mut set: Vec<usize> = global
            .iter()
            .copied()
            .filter(|&i| !disabled.contains(rules[i].id.as_str()))
            .collect();
        let mut seen: HashMap<String, usize> = HashMap::new();
        for r in &section.get_ref().rules {
            let line = lines.of(r.span());
            let id = &r.get_ref().id;
            if let Some(first) = seen.get(id) {
                problems.push(Problem {
                    line,
                    message: format!(
                        "[producers.{producer}] defines rule {id:?} twice (first on line {first})"
                    ),
                });
                continue;
            }
            seen.insert(id.clone(), line);
            if disabled.contains(id.as_str()) {
                problems.push(Problem {
                    line,
                    message: format!(
                        "[producers.{producer}] both disables and redefines rule {id:?}; do one"
                    ),
                });
                continue;
            }
            let Some(rule) = compile_rule(r.get_ref(), line, Some(producer), &mut problems) else {
                continue;
            };
            let at = rules.len();
            rules.push(rule);
            // Replace in place, so that rule order (and which deny is named first) is
            // the global order.
            match set.iter().position(|&i| rules[i].id == *id) {
                Some(pos) => set[pos] = at,
                None => set.push(at),
            }
        }
        overrides.insert(producer.clone(), set);
    }

    if problems.is_empty() {
        Ok((rules, global, overrides))
    } else {
        problems.sort_by_key(|p| p.line);
        Err(PolicyError::Invalid {
            file: String::new(),
            problems,
        })
    }
}

fn compile_rule(
    r: &RuleSpec,
    line: usize,
    producer: Option<&str>,
    problems: &mut Vec<Problem>,
) -> Option<Rule> {
    let before = problems.len();
    let mut problem = |message: String| problems.push(Problem { line, message });
    let id = &r.id;
    if id.is_empty()
        || id.len() > 64
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
    {
        problem(format!(
            "rule id {id:?} must be 1 to 64 letters, digits, '-', '_' or '.'"
        ));
    }
    let mode = match r.mode.as_str() {
        "deny" => Some(Mode::Deny),
        "warn" => Some(Mode::Warn),
        other => {
            problem(format!(
                "rule {id:?}: mode {other:?} is neither \"deny\" nor \"warn\""
            ));
            None
        }
    };
    if !KINDS.contains(&r.kind.as_str()) {
        problem(format!(
            "rule {id:?}: unknown kind {:?} (kinds: {})",
            r.kind,
            KINDS.join(", ")
        ));
        return None;
    }
    let given: [(&str, bool); 9] = [
        ("allow", r.allow.is_some()),
        ("require", r.require.is_some()),
        ("forbid", r.forbid.is_some()),
        ("max", r.max.is_some()),
        ("min", r.min.is_some()),
        ("predicate_types", r.predicate_types.is_some()),
        ("schema", r.schema.is_some()),
        ("rate", r.rate.is_some()),
        ("burst", r.burst.is_some()),
    ];
    let takes = settings_of(&r.kind);
    for (name, set) in given {
        if set && !takes.contains(&name) {
            problem(format!(
                "rule {id:?}: `{name}` does not apply to kind {} (it takes {})",
                r.kind,
                takes.join(", ")
            ));
        }
    }
    let kind = r.kind.as_str();
    let mut need = |name: &str, have: bool| {
        if !have {
            problem(format!("rule {id:?}: kind {kind} needs `{name}`"));
        }
    };
    let check = match kind {
        "payload_types" | "predicate_types" | "subject_names" => {
            need("allow", r.allow.as_ref().is_some_and(|a| !a.is_empty()));
            let allow = r.allow.clone().unwrap_or_default();
            match kind {
                "payload_types" => Some(Check::PayloadTypes(Patterns::new(&allow))),
                "predicate_types" => Some(Check::PredicateTypes(Patterns::new(&allow))),
                _ => {
                    let mut b = GlobSetBuilder::new();
                    let mut ok = true;
                    for g in &allow {
                        match GlobBuilder::new(g).literal_separator(false).build() {
                            Ok(glob) => {
                                b.add(glob);
                            }
                            Err(e) => {
                                ok = false;
                                problems.push(Problem {
                                    line,
                                    message: format!("rule {id:?}: pattern {g:?}: {e}"),
                                });
                            }
                        }
                    }
                    match b.build() {
                        Ok(set) if ok => Some(Check::SubjectNames {
                            set,
                            written: allow,
                        }),
                        Ok(_) => None,
                        Err(e) => {
                            problems.push(Problem {
                                line,
                                message: format!("rule {id:?}: {e}"),
                            });
                            None
                        }
                    }
                }
            }
        }
        "digest_algorithms" => {
            let require = r.require.clone().unwrap_or_default();
            let forbid = r.forbid.clone().unwrap_or_default();
            if require.is_empty() && forbid.is_empty() {
                problem(format!(
                    "rule {id:?}: kind digest_algorithms needs `require` or `forbid`"
                ));
            }
            if let Some(both) = require.iter().find(|a| forbid.contains(a)) {
                problem(format!(
                    "rule {id:?}: {both:?} is both required and forbidden"
                ));
            }
            for a in require.iter().chain(&forbid) {
                if a.is_empty() || a.chars().any(|c| c.is_ascii_uppercase()) {
                    problem(format!(
                        "rule {id:?}: digest algorithm {a:?} must be a lowercase in-toto name (sha256, sha512, …)"
                    ));
                }
            }
            Some(Check::DigestAlgorithms { require, forbid })
        }
        "max_subjects" | "max_envelope_bytes" => {
            need("max", r.max.is_some());
            let max = r.max.unwrap_or(1);
            if max < 1 {
                problem(format!("rule {id:?}: `max` must be at least 1 (got {max})"));
            }
            let max = usize::try_from(max).unwrap_or(1);
            Some(if kind == "max_subjects" {
                Check::MaxSubjects(max)
            } else {
                Check::MaxEnvelopeBytes(max)
            })
        }
        "min_signatures" => {
            need("min", r.min.is_some());
            let min = r.min.unwrap_or(1);
            if !(1..=16).contains(&min) {
                problem(format!(
                    "rule {id:?}: `min` must be between 1 and 16 (got {min})"
                ));
            }
            Some(Check::MinSignatures(usize::try_from(min).unwrap_or(1)))
        }
        "predicate_schema" => {
            need(
                "predicate_types",
                r.predicate_types.as_ref().is_some_and(|p| !p.is_empty()),
            );
            need("schema", r.schema.is_some());
            let types = Patterns::new(&r.predicate_types.clone().unwrap_or_default());
            match r.schema.as_deref().map(compile_schema) {
                Some(Ok(validator)) => Some(Check::PredicateSchema {
                    predicate_types: types,
                    validator: Arc::new(validator),
                }),
                Some(Err(e)) => {
                    problems.push(Problem {
                        line,
                        message: format!("rule {id:?}: schema: {e}"),
                    });
                    None
                }
                None => None,
            }
        }
        "rate_limit" => {
            need("rate", r.rate.is_some());
            let rate = r.rate.unwrap_or(1.0);
            if !(rate.is_finite() && rate > 0.0) {
                problem(format!(
                    "rule {id:?}: `rate` (envelopes per second) must be positive (got {rate})"
                ));
            }
            // Default burst: one second's worth, and at least one envelope.
            let burst = r.burst.unwrap_or(rate.ceil().max(1.0) as i64);
            if burst < 1 {
                problem(format!(
                    "rule {id:?}: `burst` must be at least 1 (got {burst})"
                ));
            }
            Some(Check::RateLimit {
                rate,
                burst: burst as f64,
            })
        }
        _ => None,
    };
    if problems.len() > before {
        return None;
    }
    Some(Rule {
        id: id.clone(),
        mode: mode?,
        check: check?,
        line,
        producer: producer.map(str::to_string),
    })
}

/// A JSON Schema given as JSON text. References are resolved only inside the schema:
/// a policy never makes the writer fetch anything.
fn compile_schema(text: &str) -> Result<jsonschema::Validator, String> {
    let schema: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| format!("not JSON (line {} of the schema): {e}", e.line()))?;
    jsonschema::validator_for(&schema).map_err(|e| e.to_string())
}
