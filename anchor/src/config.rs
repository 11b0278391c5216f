//! The anchor's settings. Every one is read from `ACE_<NAME>` or, for a file holding the
//! value, `ACE_<NAME>_FILE` (docs/anchor.md lists them with their defaults). The sinks are
//! described in their own TOML file, `ACE_ANCHOR_SINKS_FILE` (see [`crate::sink`]).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ace_core::checkpoint::NoteVerifier;
use ace_core::config::{ConfigError, Env, Secret};

use crate::sink::{self, SinkSpec};

#[derive(Debug, Clone)]
pub struct Config {
    /// `ACE_DATABASE_URL`: the ace_anchor role's DSN (required).
    pub database_url: Secret,
    /// `ACE_LEDGER_VKEYS` (required): a checkpoint is anchored only if it verifies with one
    /// of these note verifier keys.
    pub ledger_keys: Vec<NoteVerifier>,
    /// `ACE_ANCHOR_SINKS_FILE` (required): the sinks, compiled at start.
    pub sinks_file: PathBuf,
    pub sinks: Vec<SinkSpec>,
    /// `ACE_NATS_URL`, default `nats://127.0.0.1:4222`; used only by `nats` sinks.
    pub nats_url: String,
    /// `ACE_NATS_CREDS`, `ACE_NATS_NKEY_FILE`: NATS credentials, if the server wants them.
    pub nats_creds: Option<String>,
    pub nats_nkey_file: Option<String>,
    /// `ACE_NATS_TLS_CA_FILE` (PEM CA to trust; default the system roots),
    /// `ACE_NATS_TLS_CERT_FILE` + `ACE_NATS_TLS_KEY_FILE` (client certificate, only
    /// together): TLS to NATS, required once any is set; default none.
    pub nats_tls: ace_core::nats::Tls,
    /// `ACE_PREFIX`, default `ace`: subjects and stream names (`<prefix>.checkpoint`).
    pub prefix: String,
    /// `ACE_ANCHOR_LISTEN`, default `127.0.0.1:9102`: `/healthz`, `/readyz`, `/metrics`.
    pub listen: SocketAddr,
    /// `ACE_ANCHOR_POLL_MS`, default 5000: how often the latest block is read when no
    /// notification came (notifications are lost while the connection is down).
    pub poll: Duration,
    /// `ACE_ANCHOR_RETRY_MIN_MS`, default 1000, and `ACE_ANCHOR_RETRY_MAX_MS`, default
    /// 300000: a failing sink is retried after min·2^(failures−1), capped at max, with full
    /// jitter.
    pub retry_min: Duration,
    pub retry_max: Duration,
    /// `ACE_ANCHOR_REQUEST_TIMEOUT_MS`, default 10000: one HTTP exchange with a TSA,
    /// webhook or witness, or one NATS publish and its acknowledgement.
    pub request_timeout: Duration,
    /// `ACE_ANCHOR_MAX_BACKLOG`, default 16: an `every_block` sink more than this many
    /// blocks behind anchors only the latest (it covers the others by consistency).
    pub max_backlog: u64,
}

impl Config {
    /// From the environment and, if `ACE_CONFIG_FILE` names one, the settings file.
    pub fn from_env() -> Result<Config, ConfigError> {
        let env = Env::service()?;
        let config = Self::from(&env)?;
        env.finish()?;
        Ok(config)
    }

    /// Every setting at its default (the one place defaults live).
    pub fn with_defaults(
        database_url: Secret,
        ledger_keys: Vec<NoteVerifier>,
        sinks: Vec<SinkSpec>,
    ) -> Config {
        Config {
            database_url,
            ledger_keys,
            sinks_file: PathBuf::new(),
            sinks,
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_creds: None,
            nats_nkey_file: None,
            nats_tls: ace_core::nats::Tls::default(),
            prefix: "ace".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 9102)),
            poll: Duration::from_millis(5000),
            retry_min: Duration::from_millis(1000),
            retry_max: Duration::from_millis(300_000),
            request_timeout: Duration::from_millis(10_000),
            max_backlog: 16,
        }
    }

    pub fn from(env: &Env) -> Result<Config, ConfigError> {
        let ms = |var: &str, default: Duration| -> Result<Duration, ConfigError> {
            env.parse(var, default.as_millis() as u64)
                .map(Duration::from_millis)
        };
        let ledger_keys = env.ledger_vkeys()?;
        let sinks_file = PathBuf::from(env.required(
            "ACE_ANCHOR_SINKS_FILE",
            "the TOML file describing the sinks (docs/anchor.md, \"Sinks\")",
        )?);
        let sinks = sink::load(&sinks_file).map_err(|e| ConfigError::Invalid {
            var: "ACE_ANCHOR_SINKS_FILE".into(),
            value: sinks_file.display().to_string(),
            message: e.to_string(),
        })?;
        let d = Config::with_defaults(
            Secret::new(env.required(
                "ACE_DATABASE_URL",
                "the anchor's DSN, e.g. postgres://ace_anchor@127.0.0.1/ace",
            )?),
            ledger_keys,
            sinks,
        );
        let cfg = Config {
            sinks_file,
            nats_url: env.string("ACE_NATS_URL", &d.nats_url)?,
            nats_creds: env.get("ACE_NATS_CREDS")?,
            nats_nkey_file: env.get("ACE_NATS_NKEY_FILE")?,
            nats_tls: ace_core::nats::Tls::from_env(env)?,
            prefix: env.string("ACE_PREFIX", &d.prefix)?,
            listen: env.parse("ACE_ANCHOR_LISTEN", d.listen)?,
            poll: ms("ACE_ANCHOR_POLL_MS", d.poll)?,
            retry_min: ms("ACE_ANCHOR_RETRY_MIN_MS", d.retry_min)?,
            retry_max: ms("ACE_ANCHOR_RETRY_MAX_MS", d.retry_max)?,
            request_timeout: ms("ACE_ANCHOR_REQUEST_TIMEOUT_MS", d.request_timeout)?,
            max_backlog: env.parse("ACE_ANCHOR_MAX_BACKLOG", d.max_backlog)?,
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
        if self.poll < Duration::from_millis(10) {
            return bad(
                "ACE_ANCHOR_POLL_MS",
                self.poll.as_millis().to_string(),
                "must be at least 10",
            );
        }
        if self.retry_min.is_zero() || self.retry_max < self.retry_min {
            return bad(
                "ACE_ANCHOR_RETRY_MAX_MS",
                self.retry_max.as_millis().to_string(),
                "ACE_ANCHOR_RETRY_MIN_MS must be at least 1 and ACE_ANCHOR_RETRY_MAX_MS at least ACE_ANCHOR_RETRY_MIN_MS",
            );
        }
        if self.request_timeout < Duration::from_millis(10) {
            return bad(
                "ACE_ANCHOR_REQUEST_TIMEOUT_MS",
                self.request_timeout.as_millis().to_string(),
                "must be at least 10",
            );
        }
        if self.sinks.is_empty() {
            return bad(
                "ACE_ANCHOR_SINKS_FILE",
                self.sinks_file.display().to_string(),
                "describes no sink: an anchor without sinks has nothing to do",
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
    fn defaults_and_named_problems() {
        let dir = std::env::temp_dir().join(format!("ace-anchor-cfg-{}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let sinks = dir.join("sinks.toml");
        std::fs::write(&sinks, "[[sink]]\nname = \"m\"\nkind = \"nats\"\n").unwrap();
        let sinks = sinks.to_str().unwrap();
        let c = env(&[
            ("ACE_DATABASE_URL", "postgres://a:pw@h/d"),
            ("ACE_LEDGER_VKEYS", VKEY),
            ("ACE_ANCHOR_SINKS_FILE", sinks),
        ])
        .unwrap();
        assert_eq!(c.listen.to_string(), "127.0.0.1:9102");
        assert_eq!(c.sinks.len(), 1);
        assert_eq!(c.retry_max, Duration::from_secs(300));
        assert!(!format!("{c:?}").contains("pw@h"));

        let e = env(&[("ACE_DATABASE_URL", "x"), ("ACE_LEDGER_VKEYS", VKEY)])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ACE_ANCHOR_SINKS_FILE"), "{e}");
        let e = env(&[
            ("ACE_DATABASE_URL", "x"),
            ("ACE_LEDGER_VKEYS", VKEY),
            ("ACE_ANCHOR_SINKS_FILE", "/nonexistent/sinks.toml"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("cannot read /nonexistent/sinks.toml"), "{e}");
        let e = env(&[
            ("ACE_DATABASE_URL", "x"),
            ("ACE_LEDGER_VKEYS", VKEY),
            ("ACE_ANCHOR_SINKS_FILE", sinks),
            ("ACE_ANCHOR_RETRY_MAX_MS", "10"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("ACE_ANCHOR_RETRY_MAX_MS"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
