//! Reading settings: every setting `ACE_X` may instead be given as `ACE_X_FILE`, the path
//! of a file holding the value (for secrets: DSNs with passwords, keys). A service's
//! settings may also come from a TOML file named by `ACE_CONFIG_FILE` whose keys are the
//! same names (`ACE_BATCH_MAX_DELAY_MS = 20`, `ACE_DATABASE_URL_FILE = "/etc/ace/dsn"`):
//! a name set both there and in the environment is refused, and so is a name the service
//! does not read, so a typo or a conflict never passes silently. Only the services'
//! `config.rs` call this; tests build their `Config` structs directly.

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

/// The variable naming a service's settings file.
pub const CONFIG_FILE_VAR: &str = "ACE_CONFIG_FILE";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{var}: both {var} and {var}_FILE are set; set only one")]
    Ambiguous { var: String },
    #[error("{var}_FILE: cannot read {path}: {source}")]
    File {
        var: String,
        path: String,
        source: std::io::Error,
    },
    #[error("{var}: {message} (got {value:?})")]
    Invalid {
        var: String,
        value: String,
        message: String,
    },
    #[error("{var} is required: {hint}")]
    Missing { var: String, hint: String },
    #[error("{CONFIG_FILE_VAR} {path}: {reason}")]
    ConfigFile { path: String, reason: String },
    #[error(
        "{var} is set both in the environment and in {CONFIG_FILE_VAR} {path}; set it in one place"
    )]
    Conflict { var: String, path: String },
    #[error("{CONFIG_FILE_VAR} {path}: {var} is not a setting of this service{hint}")]
    Unknown {
        var: String,
        path: String,
        hint: &'static str,
    },
}

/// A setting that must not appear in logs or Debug output.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

/// `url` (a Postgres DSN or a NATS URL) with any password replaced, for logs and errors:
/// `scheme://user:<redacted>@host/…`, and `password=<redacted>` in key=value DSNs.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if let Some((userinfo, host)) = authority.rsplit_once('@') {
            let user = userinfo.split_once(':').map_or(userinfo, |(u, _)| u);
            let shown = if userinfo.contains(':') {
                format!("{user}:<redacted>")
            } else {
                user.to_string()
            };
            return format!("{scheme}://{shown}@{host}{}", redact_query(tail));
        }
        return format!("{scheme}://{authority}{}", redact_query(tail));
    }
    redact_pairs(url, ' ')
}

/// `path?query` with any `password=` in the query replaced.
fn redact_query(tail: &str) -> String {
    match tail.split_once('?') {
        Some((path, query)) => format!("{path}?{}", redact_pairs(query, '&')),
        None => tail.to_string(),
    }
}

/// `password=…` values in `sep`-separated key=value text replaced.
fn redact_pairs(text: &str, sep: char) -> String {
    text.split(sep)
        .map(|item| {
            if item.to_ascii_lowercase().starts_with("password=") {
                format!("{}<redacted>", &item[.."password=".len()])
            } else {
                item.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join(&sep.to_string())
}

/// For command-line parsers (clap's `env = ...`): the value is kept whole, and shown only
/// through [`Secret::expose`].
impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Secret(s.to_string()))
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// The environment a config is read from; a closure so that tests need not touch the
/// process environment.
type Lookup<'a> = Box<dyn Fn(&str) -> Option<String> + 'a>;

pub struct Env<'a> {
    get: Lookup<'a>,
    file: Option<ConfigFile>,
    /// Every name looked up, to refuse the file's names no setting read.
    asked: RefCell<BTreeSet<String>>,
}

/// The settings of an `ACE_CONFIG_FILE`, as text.
struct ConfigFile {
    path: String,
    values: BTreeMap<String, String>,
}

impl ConfigFile {
    fn read(path: &str) -> Result<ConfigFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::ConfigFile {
            path: path.into(),
            reason: format!("cannot read it: {e}"),
        })?;
        Self::parse(path, &text)
    }

    /// Top-level keys only, each an `ACE_` name; strings, numbers and booleans as their
    /// text, arrays of them joined by commas (the list settings' form).
    fn parse(path: &str, text: &str) -> Result<ConfigFile, ConfigError> {
        let bad = |reason: String| ConfigError::ConfigFile {
            path: path.into(),
            reason,
        };
        let table: toml::Table = text.parse().map_err(|e| bad(format!("not TOML: {e}")))?;
        let scalar = |key: &str, v: &toml::Value| -> Result<String, ConfigError> {
            Ok(match v {
                toml::Value::String(s) => s.clone(),
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Float(f) => f.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                other => {
                    return Err(bad(format!(
                        "{key} is a {}; give a string, number, boolean or an array of them",
                        other.type_str()
                    )))
                }
            })
        };
        let mut values = BTreeMap::new();
        for (key, v) in &table {
            if !key.starts_with("ACE_") || key == CONFIG_FILE_VAR {
                return Err(bad(format!(
                    "{key}: the keys are the services' ACE_ settings (not {CONFIG_FILE_VAR})"
                )));
            }
            let text = match v {
                toml::Value::Array(items) => items
                    .iter()
                    .map(|i| scalar(key, i))
                    .collect::<Result<Vec<_>, _>>()?
                    .join(","),
                other => scalar(key, other)?,
            };
            values.insert(key.clone(), text);
        }
        Ok(ConfigFile {
            path: path.into(),
            values,
        })
    }
}

impl<'a> Env<'a> {
    /// The process environment and, when `ACE_CONFIG_FILE` names one, its settings file.
    /// A service reads its config from this, then calls [`Env::finish`].
    ///
    /// # Errors
    /// The file cannot be read or is not a settings file.
    pub fn service() -> Result<Self, ConfigError> {
        Self::with_config_file(|k| std::env::var(k).ok())
    }

    /// As [`Env::service`] with another environment (tests).
    pub fn with_config_file(f: impl Fn(&str) -> Option<String> + 'a) -> Result<Self, ConfigError> {
        let file = match f(CONFIG_FILE_VAR).filter(|p| !p.is_empty()) {
            Some(path) => Some(ConfigFile::read(&path)?),
            None => None,
        };
        Ok(Env {
            get: Box::new(f),
            file,
            asked: RefCell::default(),
        })
    }

    pub fn from_fn(f: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Env {
            get: Box::new(f),
            file: None,
            asked: RefCell::default(),
        }
    }

    /// After the config is read: every name of the settings file must be one the service
    /// read (a misspelt or misplaced setting is an error, not a silent default).
    ///
    /// # Errors
    /// [`ConfigError::Unknown`] naming the first such name.
    pub fn finish(&self) -> Result<(), ConfigError> {
        let Some(file) = &self.file else {
            return Ok(());
        };
        let asked = self.asked.borrow();
        match file.values.keys().find(|k| !asked.contains(*k)) {
            None => Ok(()),
            Some(var) => Err(ConfigError::Unknown {
                var: var.clone(),
                path: file.path.clone(),
                hint: match var.as_str() {
                    "ACE_LOG" | "ACE_WRITER_CRASH_AT" => " (it is read from the environment only)",
                    _ => " (see docs/operator.md, \"Settings\")",
                },
            }),
        }
    }

    /// One name, from the environment or the settings file (never both).
    fn lookup(&self, var: &str) -> Result<Option<String>, ConfigError> {
        self.asked.borrow_mut().insert(var.to_string());
        let env = (self.get)(var).filter(|v| !v.is_empty());
        let file = self
            .file
            .as_ref()
            .and_then(|f| f.values.get(var).cloned().map(|v| (v, &f.path)))
            .filter(|(v, _)| !v.is_empty());
        match (env, file) {
            (Some(_), Some((_, path))) => Err(ConfigError::Conflict {
                var: var.into(),
                path: path.clone(),
            }),
            (Some(v), None) | (None, Some((v, _))) => Ok(Some(v)),
            (None, None) => Ok(None),
        }
    }

    /// `var` or the trimmed contents of the file named by `var_FILE`.
    pub fn get(&self, var: &str) -> Result<Option<String>, ConfigError> {
        let direct = self.lookup(var)?;
        let file = self.lookup(&format!("{var}_FILE"))?;
        match (direct, file) {
            (Some(_), Some(_)) => Err(ConfigError::Ambiguous { var: var.into() }),
            (Some(v), None) => Ok(Some(v)),
            (None, Some(path)) => std::fs::read_to_string(&path)
                .map(|s| Some(s.trim().to_string()))
                .map_err(|source| ConfigError::File {
                    var: var.into(),
                    path,
                    source,
                }),
            (None, None) => Ok(None),
        }
    }

    pub fn string(&self, var: &str, default: &str) -> Result<String, ConfigError> {
        Ok(self.get(var)?.unwrap_or_else(|| default.to_string()))
    }

    pub fn required(&self, var: &str, hint: &str) -> Result<String, ConfigError> {
        self.get(var)?.ok_or_else(|| ConfigError::Missing {
            var: var.into(),
            hint: hint.into(),
        })
    }

    pub fn parse<T: FromStr>(&self, var: &str, default: T) -> Result<T, ConfigError>
    where
        T::Err: fmt::Display,
    {
        match self.get(var)? {
            None => Ok(default),
            Some(v) => v.parse().map_err(|e: T::Err| ConfigError::Invalid {
                var: var.into(),
                message: e.to_string(),
                value: v,
            }),
        }
    }

    /// A comma-separated list; empty items are dropped.
    /// `ACE_LEDGER_VKEYS`: the ledger's note verifier keys (required, at least one),
    /// separated by commas or whitespace, so that a `_FILE` may hold one key per line.
    pub fn ledger_vkeys(&self) -> Result<Vec<crate::checkpoint::NoteVerifier>, ConfigError> {
        const VAR: &str = "ACE_LEDGER_VKEYS";
        let text = self.get(VAR)?.unwrap_or_default();
        let keys: Vec<&str> = text
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|k| !k.is_empty())
            .collect();
        if keys.is_empty() {
            return Err(ConfigError::Missing {
                var: VAR.into(),
                hint:
                    "the ledger's note verifier key(s), as `acectl ledger-key generate` prints them"
                        .into(),
            });
        }
        keys.iter()
            .map(|k| {
                crate::checkpoint::NoteVerifier::parse(k).map_err(|e| ConfigError::Invalid {
                    var: VAR.into(),
                    value: (*k).to_string(),
                    message: e.to_string(),
                })
            })
            .collect()
    }

    pub fn list(&self, var: &str, default: &[&str]) -> Result<Vec<String>, ConfigError> {
        Ok(match self.get(var)? {
            None => default.iter().map(|s| s.to_string()).collect(),
            Some(v) => v
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn file_form_is_read_and_trimmed() {
        let dir = Scratch::new("form");
        let path = dir.file("dsn", "postgres://x@y/z\n");
        let vars = env(&[("ACE_DATABASE_URL_FILE", path.as_str())]);
        let e = Env::from_fn(|k| vars.get(k).cloned());
        assert_eq!(
            e.get("ACE_DATABASE_URL").unwrap().as_deref(),
            Some("postgres://x@y/z")
        );
    }

    /// A scratch directory, removed when dropped.
    struct Scratch(std::path::PathBuf);

    impl Scratch {
        fn new(tag: &str) -> Scratch {
            let d = std::env::temp_dir().join(format!(
                "ace-config-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            std::fs::create_dir_all(&d).unwrap();
            Scratch(d)
        }

        fn file(&self, name: &str, text: &str) -> String {
            let path = self.0.join(name);
            std::fs::write(&path, text).unwrap();
            path.display().to_string()
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn a_settings_file_gives_settings_and_refuses_conflicts_and_strangers() {
        let dir = Scratch::new("file");
        let dsn = dir.file("dsn", "postgres://w@db/ace\n");
        let path = dir.file(
            "service.toml",
            &format!(
                "ACE_BATCH_MAX_DELAY_MS = 20\nACE_ALLOWED_PAYLOAD_TYPES = [\"a/b\", \"c/d\"]\n\
             ACE_DATABASE_URL_FILE = {dsn:?}\nACE_DASHBOARD_COOKIE_SECURE = true\n"
            ),
        );
        let vars = env(&[(CONFIG_FILE_VAR, path.as_str()), ("ACE_PREFIX", "p")]);
        let e = Env::with_config_file(|k| vars.get(k).cloned()).unwrap();
        assert_eq!(e.parse("ACE_BATCH_MAX_DELAY_MS", 50u64).unwrap(), 20);
        assert_eq!(
            e.list("ACE_ALLOWED_PAYLOAD_TYPES", &[]).unwrap(),
            vec!["a/b", "c/d"]
        );
        assert_eq!(
            e.get("ACE_DATABASE_URL").unwrap().as_deref(),
            Some("postgres://w@db/ace")
        );
        assert_eq!(e.string("ACE_PREFIX", "ace").unwrap(), "p");
        // A name the service never asked for: refused, named with the file.
        let err = e.finish().unwrap_err().to_string();
        assert_eq!(
            err,
            format!("ACE_CONFIG_FILE {path}: ACE_DASHBOARD_COOKIE_SECURE is not a setting of this service (see docs/operator.md, \"Settings\")")
        );
        assert!(e.parse("ACE_DASHBOARD_COOKIE_SECURE", false).unwrap());
        e.finish().unwrap();

        // Set in both places: refused.
        let vars = env(&[
            (CONFIG_FILE_VAR, path.as_str()),
            ("ACE_BATCH_MAX_DELAY_MS", "5"),
        ]);
        let e = Env::with_config_file(|k| vars.get(k).cloned()).unwrap();
        let err = e
            .parse("ACE_BATCH_MAX_DELAY_MS", 50u64)
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with(
                "ACE_BATCH_MAX_DELAY_MS is set both in the environment and in ACE_CONFIG_FILE"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_bad_settings_file_is_named() {
        let dir = Scratch::new("bad");
        for (text, why) in [
            ("ACE_X = [", "not TOML"),
            (
                "prefix = \"ace\"",
                "prefix: the keys are the services' ACE_ settings",
            ),
            ("ACE_CONFIG_FILE = \"x\"", "ACE_CONFIG_FILE: the keys"),
            ("[ACE_TABLE]\nx = 1", "ACE_TABLE is a table"),
        ] {
            let path = dir.file("service.toml", text);
            let vars = env(&[(CONFIG_FILE_VAR, path.as_str())]);
            let err = Env::with_config_file(|k| vars.get(k).cloned())
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(
                err.starts_with(&format!("ACE_CONFIG_FILE {path}: ")) && err.contains(why),
                "{text}: {err}"
            );
        }
        let vars = env(&[(CONFIG_FILE_VAR, "/nonexistent/ace.toml")]);
        let err = Env::with_config_file(|k| vars.get(k).cloned())
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("/nonexistent/ace.toml: cannot read it"),
            "{err}"
        );
    }

    #[test]
    fn both_forms_is_an_error_naming_the_variable() {
        let vars = env(&[("ACE_PREFIX", "a"), ("ACE_PREFIX_FILE", "/nonexistent")]);
        let e = Env::from_fn(|k| vars.get(k).cloned());
        let err = e.get("ACE_PREFIX").unwrap_err().to_string();
        assert!(err.contains("ACE_PREFIX"), "{err}");
    }

    #[test]
    fn bad_number_names_variable_and_value() {
        let vars = env(&[("ACE_BATCH_MAX_ENTRIES", "lots")]);
        let e = Env::from_fn(|k| vars.get(k).cloned());
        let err = e
            .parse("ACE_BATCH_MAX_ENTRIES", 1000usize)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("ACE_BATCH_MAX_ENTRIES") && err.contains("lots"),
            "{err}"
        );
    }

    #[test]
    fn urls_lose_their_passwords() {
        for (url, want) in [
            (
                "postgres://ace_writer:hunter2@db:5432/ace",
                "postgres://ace_writer:<redacted>@db:5432/ace",
            ),
            ("nats://u:hunter2@n:4222", "nats://u:<redacted>@n:4222"),
            (
                "postgres://ace_reader@db/ace?password=hunter2&sslmode=require",
                "postgres://ace_reader@db/ace?password=<redacted>&sslmode=require",
            ),
            (
                "host=db user=ace_anchor password=hunter2 dbname=ace",
                "host=db user=ace_anchor password=<redacted> dbname=ace",
            ),
            ("nats://127.0.0.1:4222", "nats://127.0.0.1:4222"),
        ] {
            assert_eq!(redact_url(url), want);
        }
    }

    #[test]
    fn secret_debug_is_redacted() {
        assert_eq!(
            format!("{:?}", Secret::new("hunter2")),
            "Secret(<redacted>)"
        );
        // Inside a config's derived Debug, a DSN's password is gone with the rest of it.
        #[derive(Debug)]
        #[allow(dead_code)]
        struct Cfg {
            database_url: Secret,
        }
        let dsn: Secret = "postgres://ace_writer:hunter2@db:5432/ace".parse().unwrap();
        let shown = format!(
            "{:?} {:#?}",
            Cfg {
                database_url: dsn.clone()
            },
            Cfg { database_url: dsn }
        );
        assert!(
            !shown.contains("hunter2") && shown.contains("<redacted>"),
            "{shown}"
        );
    }
}
