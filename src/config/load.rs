//! Loading and validating a config file, reporting every problem with its key and line.
//!
//! serde stops at the first error, so loading works in rounds: deserialize, and on an error map
//! its span to a dotted key, record it, delete that key from the document (its default then
//! applies) and deserialize again, until it succeeds. Then the semantic checks in `validate` run
//! on the typed config. Lines always refer to the file as written: they come from a key-to-line
//! map built once from the original text, because deleting keys shifts the lines of the rest.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::ops::Range;
use std::path::Path;

use toml_edit::{ImDocument, InlineTable, Item, TableLike, Value};

use super::{validate, Config};

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Dotted key, e.g. `mqtt.url` or `camera[1].source`; empty for a TOML syntax error.
    pub key: String,
    /// 1-based line, when the key (or its table) is in the file.
    pub line: Option<usize>,
    pub message: String,
}

impl Problem {
    pub fn new(key: impl Into<String>, line: Option<usize>, message: impl Into<String>) -> Self {
        Problem {
            key: key.into(),
            line,
            message: message.into(),
        }
    }

    /// `<file>:<line>: <key>: <message>`, leaving out what is unknown.
    pub fn render(&self, origin: &str) -> String {
        let mut s = origin.to_string();
        if let Some(line) = self.line {
            s.push_str(&format!(":{line}"));
        }
        if !self.key.is_empty() {
            s.push_str(&format!(": {}", self.key));
        }
        s.push_str(&format!(": {}", self.message));
        s
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(line) = self.line {
            write!(f, "line {line}: ")?;
        }
        if !self.key.is_empty() {
            write!(f, "{}: ", self.key)?;
        }
        f.write_str(&self.message)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    /// Display: every problem, one per line, as `<file>:<line>: <key>: <message>`.
    #[error("{}", render_all(path, problems))]
    Invalid {
        path: String,
        problems: Vec<Problem>,
    },
}

fn render_all(path: &str, problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.render(path))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where each key of the file is: dotted key (`mqtt.url`, `camera[1]`) to 1-based line.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeyLines(BTreeMap<String, usize>);

impl KeyLines {
    /// The line of `key`, else of the nearest enclosing table in the file (so "mqtt.ca is
    /// required" points at `[mqtt]` when `ca` is absent), else `None`.
    pub fn line(&self, key: &str) -> Option<usize> {
        let mut k = key;
        loop {
            if let Some(&line) = self.0.get(k) {
                return Some(line);
            }
            k = parent_key(k)?;
        }
    }

    /// Whether `key` itself is written in the file (not just defaulted).
    pub fn contains(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// A problem on `key`, with its line looked up.
    pub fn problem(&self, key: &str, message: impl Into<String>) -> Problem {
        Problem::new(key, self.line(key), message)
    }

    fn from_text(text: &str) -> KeyLines {
        let mut map = BTreeMap::new();
        if let Ok(doc) = ImDocument::parse(text) {
            walk_item(doc.as_item(), &mut Vec::new(), &mut |path, spans| {
                if let Some(start) = spans.iter().flatten().map(|s| s.start).min() {
                    map.insert(render_path(path), line_of(text, start));
                }
            });
        }
        KeyLines(map)
    }
}

/// `mqtt.url` -> `mqtt`, `camera[1].source` -> `camera[1]`, `camera[1]` -> `camera`.
fn parent_key(key: &str) -> Option<&str> {
    let cut = key.rfind(['.', '['])?;
    Some(&key[..cut])
}

/// A config that loaded, with where each key was, for problems found after loading.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub config: Config,
    pub lines: KeyLines,
    /// The file name (or other origin) used in messages.
    pub origin: String,
}

impl Loaded {
    /// Checks that only `run` needs (at least one camera), with lines.
    pub fn check_for_run(&self) -> Vec<Problem> {
        validate::run_checks(&self.config, &self.lines)
    }

    /// Checks against this machine (files exist and are readable), with lines.
    pub fn check_machine(&self) -> Vec<Problem> {
        validate::machine_checks(&self.config, &self.lines, true)
    }

    /// `Ok(config)` if `problems` is empty, else the same error `load` gives.
    pub fn into_result(self, problems: Vec<Problem>) -> Result<Config, ConfigError> {
        if problems.is_empty() {
            Ok(self.config)
        } else {
            Err(ConfigError::Invalid {
                path: self.origin,
                problems,
            })
        }
    }
}

/// Reads, parses and checks a config file (all static checks; not the machine or run checks).
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_text(&text, &path.display().to_string())
}

/// What a command uses the config for: which checks beyond the static ones apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `run` and `check-config`: the machine checks (model, TLS, replay files) and the run checks.
    Run,
    /// `recognize`: only the files the models need; cameras are not used.
    Models,
}

/// Reads a config file and reports every problem in one round: the static ones together with
/// the checks against this machine (and those of `run`), so a user never fixes a file twice.
pub fn load_for(path: &Path, purpose: Purpose) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_text_for(&text, &path.display().to_string(), purpose)
}

/// As [`load_for`], from text; `origin` names it in messages.
pub fn load_text_for(text: &str, origin: &str, purpose: Purpose) -> Result<Config, ConfigError> {
    let (loaded, mut problems) = load_parts(text, origin)?;
    let run = purpose == Purpose::Run;
    let mut later = validate::machine_checks(&loaded.config, &loaded.lines, run);
    if run {
        later.extend(loaded.check_for_run());
    }
    // As in `load_parts`: a key reported as malformed holds its default, not the user's value.
    let reported: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();
    problems.extend(
        later
            .into_iter()
            .filter(|p| !reported.iter().any(|r| is_same_or_under(&p.key, r))),
    );
    loaded.into_result(problems)
}

/// As [`load`], from text; `origin` names it in messages.
pub fn load_text(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    let (loaded, problems) = load_parts(text, origin)?;
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(ConfigError::Invalid {
            path: origin.to_string(),
            problems,
        })
    }
}

/// Parses and runs the static checks: the config (malformed keys at their defaults) and its
/// problems. Only a TOML syntax error, which leaves nothing to check, is an `Err`.
fn load_parts(text: &str, origin: &str) -> Result<(Loaded, Vec<Problem>), ConfigError> {
    let invalid = |problems| ConfigError::Invalid {
        path: origin.to_string(),
        problems,
    };
    if let Err(e) = ImDocument::parse(text) {
        // A syntax error leaves no document to recover from: report it alone.
        let line = e.span().map(|s| line_of(text, s.start));
        return Err(invalid(vec![Problem::new(
            "",
            line,
            format!("TOML syntax error: {}", e.message().trim_end()),
        )]));
    }
    let lines = KeyLines::from_text(text);
    let (config, mut problems) = deserialize_all(text, &lines);
    let config = config.unwrap_or_default();
    // A key already reported as malformed now holds its default; checking that default would
    // report the same key twice (e.g. `ca = 5` and then "ca is required").
    let reported: Vec<String> = problems.iter().map(|p| p.key.clone()).collect();
    problems.extend(
        validate::static_checks(&config, &lines)
            .into_iter()
            .filter(|p| !reported.iter().any(|r| is_same_or_under(&p.key, r))),
    );
    let loaded = Loaded {
        config,
        lines,
        origin: origin.to_string(),
    };
    Ok((loaded, problems))
}

/// Reads, parses and checks a config file; see [`load`] for the lines of later checks.
pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    load(path).map(|l| l.config)
}

/// As [`load_file`], from text; `origin` names it in messages.
pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    load_text(text, origin).map(|l| l.config)
}

fn is_same_or_under(key: &str, ancestor: &str) -> bool {
    key == ancestor
        || (key.starts_with(ancestor)
            && matches!(key.as_bytes().get(ancestor.len()), Some(b'.' | b'[')))
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Seg {
    Key(String),
    Index(usize),
}

fn render_path(path: &[Seg]) -> String {
    let mut s = String::new();
    for seg in path {
        match seg {
            Seg::Key(k) => {
                if !s.is_empty() {
                    s.push('.');
                }
                s.push_str(k);
            }
            Seg::Index(i) => s.push_str(&format!("[{i}]")),
        }
    }
    s
}

/// Deserializes, deleting each offending key and retrying, so every type error is found.
/// Returns the config if some round succeeded.
fn deserialize_all(original: &str, lines: &KeyLines) -> (Option<Config>, Vec<Problem>) {
    let mut text = original.to_string();
    let mut problems = Vec::new();
    let mut tried: BTreeSet<Vec<Seg>> = BTreeSet::new();
    // Each round deletes one key or ends, so the key count bounds the loop; the cap is a
    // second guard against a bug turning this into a hang at startup.
    for _ in 0..1000 {
        let err = match toml::from_str::<Config>(&text) {
            Ok(config) => return (Some(config), problems),
            Err(e) => e,
        };
        let Ok(doc) = ImDocument::parse(text.as_str()) else {
            break; // cannot happen: `text` is what toml_edit printed
        };
        let path = err
            .span()
            .map(|span| locate(doc.as_item(), &span))
            .unwrap_or_default();
        let (key, message) = describe(&path, err.message());
        let line = lines.line(&key).or_else(|| {
            // Unlocatable errors in the untouched text still have a usable line.
            (text == original)
                .then(|| err.span().map(|s| line_of(original, s.start)))
                .flatten()
        });
        // A key emptied or removed in an earlier round can fail again (now as "missing" or
        // still the wrong shape); one problem per key is enough.
        if !problems.iter().any(|p: &Problem| p.key == key) {
            problems.push(Problem::new(key, line, message));
        }

        // Delete the key; if that was tried and the same place fails again, widen to its
        // parent. Deleting the whole document means no progress is possible.
        let mut target = path;
        while tried.contains(&target) && !target.is_empty() {
            target.pop();
        }
        if target.is_empty() {
            break;
        }
        tried.insert(target.clone());
        let mut doc = doc.into_mut();
        if !delete_item(doc.as_item_mut(), &target) {
            break;
        }
        text = doc.to_string();
    }
    (None, problems)
}

/// serde's messages, made about keys: a missing field becomes a problem on that key.
fn describe(path: &[Seg], message: &str) -> (String, String) {
    let message = message.trim_end();
    let key = render_path(path);
    if let Some(rest) = message.strip_prefix("missing field `") {
        if let Some(field) = rest.strip_suffix('`') {
            let full = if key.is_empty() {
                field.to_string()
            } else {
                format!("{key}.{field}")
            };
            return (full, "required key is missing".to_string());
        }
    }
    let message = message
        .replace("unknown field", "unknown key")
        .replace("unknown variant", "unknown value")
        // toml's wording when an enum is given a number or array.
        .replace("wanted string or table", "invalid type: expected a string");
    (key, message)
}

type Visit<'a> = dyn FnMut(&[Seg], [Option<Range<usize>>; 2]) + 'a;

/// Visits every key of the document with its path and spans (key, and value or table header).
fn walk_item(item: &Item, path: &mut Vec<Seg>, f: &mut Visit) {
    match item {
        Item::Table(t) => walk_table(t, path, f),
        Item::ArrayOfTables(aot) => {
            for (i, t) in aot.iter().enumerate() {
                path.push(Seg::Index(i));
                f(path, [t.span(), None]);
                walk_table(t, path, f);
                path.pop();
            }
        }
        Item::Value(v) => walk_value(v, path, f),
        Item::None => {}
    }
}

fn walk_table(t: &dyn TableLike, path: &mut Vec<Seg>, f: &mut Visit) {
    for (name, _) in t.iter() {
        if let Some((key, child)) = t.get_key_value(name) {
            path.push(Seg::Key(name.to_string()));
            f(path, [key.span(), child.span()]);
            walk_item(child, path, f);
            path.pop();
        }
    }
}

fn walk_value(v: &Value, path: &mut Vec<Seg>, f: &mut Visit) {
    match v {
        Value::InlineTable(t) => walk_table(t, path, f),
        Value::Array(a) => {
            for (i, elem) in a.iter().enumerate() {
                path.push(Seg::Index(i));
                f(path, [elem.span(), None]);
                walk_value(elem, path, f);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The deepest key whose key, value or header span holds the start of the error's span.
fn locate(root: &Item, span: &Range<usize>) -> Vec<Seg> {
    let mut best: Vec<Seg> = Vec::new();
    walk_item(root, &mut Vec::new(), &mut |path, spans| {
        let hit = spans
            .iter()
            .flatten()
            .any(|s| s.start <= span.start && span.start < s.end.max(s.start + 1));
        if hit && path.len() > best.len() {
            best = path.to_vec();
        }
    });
    best
}

/// Deletes the key at `path` so its default applies. Array elements are emptied, not removed,
/// so the indices (and so the keys) of the elements after them stay as in the file.
fn delete_item(item: &mut Item, path: &[Seg]) -> bool {
    match (path, item) {
        ([], _) => false,
        ([Seg::Key(_), ..], item) => match item.as_table_like_mut() {
            Some(t) => delete_in_table(t, path),
            None => false,
        },
        ([Seg::Index(i), rest @ ..], Item::ArrayOfTables(aot)) => match aot.get_mut(*i) {
            Some(t) if rest.is_empty() => {
                t.clear();
                true
            }
            Some(t) => delete_in_table(t, rest),
            None => false,
        },
        (_, Item::Value(v)) => delete_value(v, path),
        _ => false,
    }
}

fn delete_in_table(t: &mut dyn TableLike, path: &[Seg]) -> bool {
    match path {
        [Seg::Key(k)] => t.remove(k).is_some(),
        [Seg::Key(k), rest @ ..] => t.get_mut(k).is_some_and(|child| delete_item(child, rest)),
        _ => false,
    }
}

fn delete_value(v: &mut Value, path: &[Seg]) -> bool {
    match (path, v) {
        ([Seg::Key(k)], Value::InlineTable(t)) => t.remove(k).is_some(),
        ([Seg::Key(k), rest @ ..], Value::InlineTable(t)) => {
            t.get_mut(k).is_some_and(|child| delete_value(child, rest))
        }
        ([Seg::Index(i)], Value::Array(a)) if *i < a.len() => {
            a.replace(*i, InlineTable::new());
            true
        }
        ([Seg::Index(i), rest @ ..], Value::Array(a)) => {
            a.get_mut(*i).is_some_and(|child| delete_value(child, rest))
        }
        _ => false,
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    let end = offset.min(text.len());
    text.as_bytes()[..end]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}
