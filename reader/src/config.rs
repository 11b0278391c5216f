//! The reader's settings. Every one is read from `ACE_<NAME>` or, for a file holding the
//! value, `ACE_<NAME>_FILE` (docs/reader.md lists them with their defaults).

use std::net::SocketAddr;
use std::time::Duration;

use ace_core::checkpoint::NoteVerifier;
use ace_core::config::{ConfigError, Env, Secret};

/// Largest page a search or block listing returns; larger `limit`s are capped to it.
pub const MAX_PAGE: u32 = 100;
/// Page size when the client gives no `limit`.
pub const DEFAULT_PAGE: u32 = 25;

#[derive(Debug, Clone)]
pub struct Config {
    /// `ACE_DATABASE_URL`: the ace_reader role's DSN (required).
    pub database_url: Secret,
    /// `ACE_LEDGER_VKEYS` (comma list of note verifier keys `name+hash+base64`, required):
    /// served by `/v1/keys`, and the latest checkpoint must verify with one of them at start.
    pub ledger_keys: Vec<NoteVerifier>,
    /// `ACE_READER_LISTEN`, default `127.0.0.1:8081`.
    pub listen: SocketAddr,
    /// `ACE_READER_POOL_SIZE`, default 16: Postgres connections.
    pub pool_size: usize,
    /// `ACE_READER_STATEMENT_TIMEOUT_MS`, default 5000: server-side limit on every query,
    /// and on waiting for a pooled connection.
    pub statement_timeout: Duration,
    /// `ACE_READER_REQUEST_TIMEOUT_MS`, default 10000: a request still running after this
    /// is answered 503.
    pub request_timeout: Duration,
    /// `ACE_READER_MAX_CONCURRENT`, default 512: requests in flight; more are answered 503
    /// with `Retry-After`, rather than queued without bound.
    pub max_concurrent: usize,
    /// `ACE_READER_TILE_CACHE_MB`, default 512: memory for immutable tiles (with their inner
    /// Merkle levels). 0 disables the cache; every proof then reads its tiles from Postgres.
    pub tile_cache_bytes: u64,
    /// `ACE_READER_HEAD_MAX_AGE_MS`, default 100: how stale the latest checkpoint may be
    /// when a request asks for "the latest". 0 reads it from Postgres on every request.
    pub head_max_age: Duration,
}

impl Config {
    /// From the environment and, if `ACE_CONFIG_FILE` names one, the settings file.
    pub fn from_env() -> Result<Config, ConfigError> {
        let env = Env::service()?;
        let config = Self::from(&env)?;
        env.finish()?;
        Ok(config)
    }

    /// Every setting at its default (the one place defaults live), for the given database
    /// and keys.
    pub fn with_defaults(database_url: Secret, ledger_keys: Vec<NoteVerifier>) -> Config {
        Config {
            database_url,
            ledger_keys,
            listen: SocketAddr::from(([127, 0, 0, 1], 8081)),
            pool_size: 16,
            statement_timeout: Duration::from_millis(5000),
            request_timeout: Duration::from_millis(10_000),
            max_concurrent: 512,
            tile_cache_bytes: 512 << 20,
            head_max_age: Duration::from_millis(100),
        }
    }

    pub fn from(env: &Env) -> Result<Config, ConfigError> {
        let ms = |var: &str, default: Duration| -> Result<Duration, ConfigError> {
            env.parse(var, default.as_millis() as u64)
                .map(Duration::from_millis)
        };
        let ledger_keys = env.ledger_vkeys()?;
        let d = Config::with_defaults(
            Secret::new(env.required(
                "ACE_DATABASE_URL",
                "the reader's DSN, e.g. postgres://ace_reader@127.0.0.1/ace",
            )?),
            ledger_keys,
        );
        let cache_mb: u64 = env.parse("ACE_READER_TILE_CACHE_MB", d.tile_cache_bytes >> 20)?;
        let cfg = Config {
            listen: env.parse("ACE_READER_LISTEN", d.listen)?,
            pool_size: env.parse("ACE_READER_POOL_SIZE", d.pool_size)?,
            statement_timeout: ms("ACE_READER_STATEMENT_TIMEOUT_MS", d.statement_timeout)?,
            request_timeout: ms("ACE_READER_REQUEST_TIMEOUT_MS", d.request_timeout)?,
            max_concurrent: env.parse("ACE_READER_MAX_CONCURRENT", d.max_concurrent)?,
            tile_cache_bytes: cache_mb.saturating_mul(1 << 20),
            head_max_age: ms("ACE_READER_HEAD_MAX_AGE_MS", d.head_max_age)?,
            ..d
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reject settings that cannot work, naming the variable.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |var: &str, value: String, message: &str| {
            Err(ConfigError::Invalid {
                var: var.into(),
                value,
                message: message.into(),
            })
        };
        if self.pool_size == 0 || self.pool_size > 1000 {
            return bad(
                "ACE_READER_POOL_SIZE",
                self.pool_size.to_string(),
                "must be between 1 and 1000",
            );
        }
        if self.statement_timeout < Duration::from_millis(10) {
            return bad(
                "ACE_READER_STATEMENT_TIMEOUT_MS",
                self.statement_timeout.as_millis().to_string(),
                "must be at least 10",
            );
        }
        if self.request_timeout < Duration::from_millis(10) {
            return bad(
                "ACE_READER_REQUEST_TIMEOUT_MS",
                self.request_timeout.as_millis().to_string(),
                "must be at least 10",
            );
        }
        if self.max_concurrent == 0 {
            return bad(
                "ACE_READER_MAX_CONCURRENT",
                "0".into(),
                "must be at least 1",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";

    fn env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from(&Env::from_fn(move |k| m.get(k).cloned()))
    }

    #[test]
    fn defaults_follow_design() {
        let c = env(&[
            ("ACE_DATABASE_URL", "postgres://r:pw@h/d"),
            ("ACE_LEDGER_VKEYS", VKEY),
        ])
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.ledger_keys.len(), 1);
        assert_eq!(c.ledger_keys[0].to_vkey(), VKEY);
        assert_eq!(c.tile_cache_bytes, 512 << 20);
        assert_eq!(c.statement_timeout, Duration::from_secs(5));
        assert!(!format!("{c:?}").contains("pw@h"));
    }

    #[test]
    fn missing_and_bad_settings_are_named() {
        let e = env(&[("ACE_DATABASE_URL", "x")]).unwrap_err().to_string();
        assert!(e.contains("ACE_LEDGER_VKEYS"), "{e}");
        let e = env(&[("ACE_DATABASE_URL", "x"), ("ACE_LEDGER_VKEYS", "nope")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ACE_LEDGER_VKEYS") && e.contains("nope"), "{e}");
        let two = format!(
            "{VKEY}\n{}\n",
            "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
        );
        let c = env(&[("ACE_DATABASE_URL", "x"), ("ACE_LEDGER_VKEYS", &two)]).unwrap();
        assert_eq!(c.ledger_keys.len(), 2);
        let e = env(&[("ACE_LEDGER_VKEYS", VKEY)]).unwrap_err().to_string();
        assert!(e.contains("ACE_DATABASE_URL"), "{e}");
        let e = env(&[
            ("ACE_DATABASE_URL", "x"),
            ("ACE_LEDGER_VKEYS", VKEY),
            ("ACE_READER_POOL_SIZE", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("ACE_READER_POOL_SIZE"), "{e}");
    }
}
