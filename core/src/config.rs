//! Reading settings: every setting `ACE_X` may instead be given as `ACE_X_FILE`, the path
//! of a file holding the value (for secrets: DSNs with passwords, keys). Only the services'
//! `config.rs` call this; tests build their `Config` structs directly.

use std::fmt;
use std::str::FromStr;

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
}

impl Default for Env<'_> {
    fn default() -> Self {
        Self::process()
    }
}

impl<'a> Env<'a> {
    pub fn process() -> Self {
        Env {
            get: Box::new(|k| std::env::var(k).ok()),
        }
    }

    pub fn from_fn(f: impl Fn(&str) -> Option<String> + 'a) -> Self {
        Env { get: Box::new(f) }
    }

    /// `var` or the trimmed contents of the file named by `var_FILE`.
    pub fn get(&self, var: &str) -> Result<Option<String>, ConfigError> {
        let direct = (self.get)(var).filter(|v| !v.is_empty());
        let file = (self.get)(&format!("{var}_FILE")).filter(|v| !v.is_empty());
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
        let dir = std::env::temp_dir().join(format!("ace-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dsn");
        std::fs::write(&path, "postgres://x@y/z\n").unwrap();
        let vars = env(&[("ACE_DATABASE_URL_FILE", path.to_str().unwrap())]);
        let e = Env::from_fn(|k| vars.get(k).cloned());
        assert_eq!(
            e.get("ACE_DATABASE_URL").unwrap().as_deref(),
            Some("postgres://x@y/z")
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
