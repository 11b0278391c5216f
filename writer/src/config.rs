//! The writer's settings. Every one is read from `ACE_<NAME>` or, for a file holding the
//! value, `ACE_<NAME>_FILE` (docs/writer.md lists them with their defaults).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ace_core::config::{ConfigError, Env, Secret};
use ace_core::envelope::IN_TOTO_PAYLOAD_TYPE;

#[derive(Debug, Clone)]
pub struct Config {
    /// `ACE_NATS_URL`, default `nats://127.0.0.1:4222`.
    pub nats_url: String,
    /// `ACE_NATS_CREDS`: a .creds file; unset = no credentials.
    pub nats_creds: Option<String>,
    /// `ACE_NATS_NKEY_FILE`: a file holding the writer's NKey seed.
    pub nats_nkey_file: Option<String>,
    /// `ACE_NATS_TLS_CA_FILE` (PEM CA to trust; default the system roots),
    /// `ACE_NATS_TLS_CERT_FILE` + `ACE_NATS_TLS_KEY_FILE` (client certificate, only
    /// together): TLS to NATS, required once any is set; default none.
    pub nats_tls: ace_core::nats::Tls,
    /// `ACE_DATABASE_URL`: the ace_writer role's DSN (required).
    pub database_url: Secret,
    /// `ACE_PREFIX`, default `ace`.
    pub prefix: String,
    /// `ACE_LOG_ORIGIN`: the checkpoint origin line; default the ledger key's name. Must
    /// equal the key's name when both are set.
    pub log_origin: Option<String>,
    /// `ACE_LEDGER_KEY_FILE`: the ledger's note signing key (required).
    pub ledger_key_file: PathBuf,
    /// `ACE_LEDGER_EXTRA_KEY_FILES` (comma list), default none: more ledger keys, with the
    /// same name, that also sign every checkpoint and key event. Set during a ledger key
    /// rotation's overlap, so that verifiers holding either key verify every checkpoint
    /// (docs/security.md, "Rotating the ledger key").
    pub ledger_extra_key_files: Vec<PathBuf>,
    /// `ACE_WRITER_LISTEN`, default `127.0.0.1:9101` (health and metrics).
    pub listen: SocketAddr,
    /// `ACE_BATCH_MAX_ENTRIES`, default 1000: a batch is cut at this many messages…
    pub batch_max_entries: usize,
    /// `ACE_BATCH_MAX_DELAY_MS`, default 25: …or after this long, whichever comes first.
    /// Under a backlog batches fill by size whatever the delay; at moderate load the delay
    /// is most of an envelope's wait (docs/performance.md: 25 ms against 50 halved p50).
    pub batch_max_delay: Duration,
    /// `ACE_MAX_ENVELOPE_BYTES`, default 524288: larger envelopes are `too_large`.
    pub max_envelope_bytes: usize,
    /// `ACE_ALLOWED_PAYLOAD_TYPES` (comma list), default the in-toto type only: what this
    /// deployment stores at all (others are `unsupported_payload_type`, before any
    /// signature check). Admission rules live in the policy file.
    pub allowed_payload_types: Vec<String>,
    /// `ACE_POLICY_FILE`: the admission policy (docs/policy.md); unset = the built-in
    /// policy (at most 1024 subjects per statement).
    pub policy_file: Option<PathBuf>,
    /// `ACE_POLICY_POLL_MS`, default 1000: how often the policy file is checked for
    /// changes; 0 = reload on SIGHUP only.
    pub policy_poll: Duration,
    /// `ACE_STANDBY_POLL_MS`, default 1000: how often a standby tries to take the lead.
    pub standby_poll: Duration,
    /// `ACE_RETRY_MAX_MS`, default 5000: longest pause between reconnection attempts.
    pub retry_max: Duration,
    /// `ACE_DB_TIMEOUT_MS`, default 15000: longest wait for Postgres (a batch's whole
    /// transaction, a registry read, a connect). Past it the batch is handed back and the
    /// writer reconnects, instead of hanging on a stalled network.
    pub db_timeout: Duration,
    /// `ACE_NAK_DELAY_MS`, default 1000: redelivery delay asked for a batch abandoned
    /// on a transient fault.
    pub nak_delay: Duration,
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
    /// and ledger key.
    pub fn with_defaults(database_url: Secret, ledger_key_file: PathBuf) -> Config {
        Config {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_creds: None,
            nats_nkey_file: None,
            nats_tls: ace_core::nats::Tls::default(),
            database_url,
            prefix: "ace".into(),
            log_origin: None,
            ledger_key_file,
            ledger_extra_key_files: Vec::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 9101)),
            batch_max_entries: 1000,
            batch_max_delay: Duration::from_millis(25),
            max_envelope_bytes: 512 * 1024,
            allowed_payload_types: vec![IN_TOTO_PAYLOAD_TYPE.to_string()],
            policy_file: None,
            policy_poll: Duration::from_millis(1000),
            standby_poll: Duration::from_millis(1000),
            retry_max: Duration::from_millis(5000),
            db_timeout: Duration::from_millis(15000),
            nak_delay: Duration::from_millis(1000),
        }
    }

    pub fn from(env: &Env) -> Result<Config, ConfigError> {
        let ms = |var: &str, default: Duration| -> Result<Duration, ConfigError> {
            env.parse(var, default.as_millis() as u64)
                .map(Duration::from_millis)
        };
        // Settings that moved into the policy file: refuse them rather than ignore them.
        for (var, rule) in [
            ("ACE_ALLOWED_PREDICATE_TYPES", "predicate_types"),
            ("ACE_MAX_SUBJECTS", "max_subjects"),
        ] {
            if let Some(value) = env.get(var)? {
                return Err(ConfigError::Invalid {
                    var: var.into(),
                    value,
                    message: format!(
                        "no longer a setting: write a `{rule}` rule in the policy file (ACE_POLICY_FILE, docs/policy.md)"
                    ),
                });
            }
        }
        let d = Config::with_defaults(
            Secret::new(env.required(
                "ACE_DATABASE_URL",
                "the writer's DSN, e.g. postgres://ace_writer@127.0.0.1/ace",
            )?),
            PathBuf::from(env.required(
                "ACE_LEDGER_KEY_FILE",
                "the ledger key made by `acectl ledger-key generate --out FILE`",
            )?),
        );
        let payload_default: Vec<&str> =
            d.allowed_payload_types.iter().map(String::as_str).collect();
        let cfg = Config {
            nats_url: env.string("ACE_NATS_URL", &d.nats_url)?,
            nats_creds: env.get("ACE_NATS_CREDS")?,
            nats_nkey_file: env.get("ACE_NATS_NKEY_FILE")?,
            nats_tls: ace_core::nats::Tls::from_env(env)?,
            prefix: env.string("ACE_PREFIX", &d.prefix)?,
            log_origin: env.get("ACE_LOG_ORIGIN")?,
            ledger_extra_key_files: env
                .list("ACE_LEDGER_EXTRA_KEY_FILES", &[])?
                .into_iter()
                .map(PathBuf::from)
                .collect(),
            listen: env.parse("ACE_WRITER_LISTEN", d.listen)?,
            batch_max_entries: env.parse("ACE_BATCH_MAX_ENTRIES", d.batch_max_entries)?,
            batch_max_delay: ms("ACE_BATCH_MAX_DELAY_MS", d.batch_max_delay)?,
            max_envelope_bytes: env.parse("ACE_MAX_ENVELOPE_BYTES", d.max_envelope_bytes)?,
            allowed_payload_types: env.list("ACE_ALLOWED_PAYLOAD_TYPES", &payload_default)?,
            policy_file: env.get("ACE_POLICY_FILE")?.map(PathBuf::from),
            policy_poll: ms("ACE_POLICY_POLL_MS", d.policy_poll)?,
            standby_poll: ms("ACE_STANDBY_POLL_MS", d.standby_poll)?,
            retry_max: ms("ACE_RETRY_MAX_MS", d.retry_max)?,
            db_timeout: ms("ACE_DB_TIMEOUT_MS", d.db_timeout)?,
            nak_delay: ms("ACE_NAK_DELAY_MS", d.nak_delay)?,
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
        if self.batch_max_entries == 0 || self.batch_max_entries > 100_000 {
            return bad(
                "ACE_BATCH_MAX_ENTRIES",
                self.batch_max_entries.to_string(),
                "must be between 1 and 100000",
            );
        }
        if self.batch_max_delay < Duration::from_millis(1) {
            return bad(
                "ACE_BATCH_MAX_DELAY_MS",
                self.batch_max_delay.as_millis().to_string(),
                "must be at least 1",
            );
        }
        if self.db_timeout < Duration::from_millis(100) {
            return bad(
                "ACE_DB_TIMEOUT_MS",
                self.db_timeout.as_millis().to_string(),
                "must be at least 100 (a batch's transaction must fit in it)",
            );
        }
        if self.max_envelope_bytes == 0 {
            return bad("ACE_MAX_ENVELOPE_BYTES", "0".into(), "must be positive");
        }
        if self.allowed_payload_types.is_empty() {
            return bad(
                "ACE_ALLOWED_PAYLOAD_TYPES",
                String::new(),
                "must admit at least one payload type",
            );
        }
        if ace_core::nats::Names::new(&self.prefix).is_err() {
            return bad(
                "ACE_PREFIX",
                self.prefix.clone(),
                "must be a NATS subject token: letters, digits, '-' or '_'",
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

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
            ("ACE_DATABASE_URL", "postgres://w@h/d"),
            ("ACE_LEDGER_KEY_FILE", "/k"),
        ])
        .unwrap();
        assert_eq!(c.nats_url, "nats://127.0.0.1:4222");
        assert_eq!(c.prefix, "ace");
        assert_eq!(c.listen.to_string(), "127.0.0.1:9101");
        assert_eq!(c.batch_max_entries, 1000);
        assert_eq!(c.batch_max_delay, Duration::from_millis(25));
        assert_eq!(
            c.allowed_payload_types,
            vec![IN_TOTO_PAYLOAD_TYPE.to_string()]
        );
        assert_eq!(c.policy_file, None);
        assert_eq!(c.policy_poll, Duration::from_secs(1));
        assert!(!format!("{c:?}").contains("postgres://w@h/d"));
    }

    #[test]
    fn missing_and_bad_settings_are_named() {
        let e = env(&[("ACE_LEDGER_KEY_FILE", "/k")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("ACE_DATABASE_URL"), "{e}");
        let e = env(&[
            ("ACE_DATABASE_URL", "x"),
            ("ACE_LEDGER_KEY_FILE", "/k"),
            ("ACE_BATCH_MAX_ENTRIES", "0"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("ACE_BATCH_MAX_ENTRIES"), "{e}");
        let e = env(&[
            ("ACE_DATABASE_URL", "x"),
            ("ACE_LEDGER_KEY_FILE", "/k"),
            ("ACE_PREFIX", "a.b"),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains("ACE_PREFIX"), "{e}");
        let e = env(&[
            ("ACE_DATABASE_URL", "x"),
            ("ACE_LEDGER_KEY_FILE", "/k"),
            ("ACE_MAX_SUBJECTS", "10"),
        ])
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("ACE_MAX_SUBJECTS") && e.contains("max_subjects"),
            "{e}"
        );
    }
}
