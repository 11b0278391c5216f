//! The dashboard's settings. Every one is read from `ACE_<NAME>` or, for a file holding
//! the value, `ACE_<NAME>_FILE` (docs/dashboard.md lists them with their defaults).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ace_core::config::{ConfigError, Env, Secret};

/// Thresholds of the alert hooks. The same conditions, with the same defaults, are in
/// prometheus/ace-alerts.yml; change both together.
#[derive(Debug, Clone)]
pub struct AlertThresholds {
    /// `ACE_DASHBOARD_ALERT_DLQ_OPEN`, default 100: open DLQ items (held 5 minutes).
    pub dlq_open: i64,
    /// `ACE_DASHBOARD_ALERT_ANCHOR_LAG_BLOCKS`, default 10: blocks a sink is behind
    /// (held 10 minutes).
    pub anchor_lag_blocks: i64,
    /// `ACE_DASHBOARD_ALERT_STALL_SECS`, default 120: intake is waiting and no block was
    /// sealed for this long (held 2 minutes).
    pub stall: Duration,
    /// How long each condition must hold before it fires (as the rules' `for:`):
    /// `ACE_DASHBOARD_ALERT_DLQ_OPEN_FOR_SECS` 300, `..._ANCHOR_LAG_FOR_SECS` 600,
    /// `..._STALL_FOR_SECS` 120, `..._NO_LEADER_FOR_SECS` 60.
    pub dlq_open_for: Duration,
    pub anchor_lag_for: Duration,
    pub stall_for: Duration,
    pub no_leader_for: Duration,
}

#[derive(Debug, Clone)]
pub struct Config {
    /// `ACE_DATABASE_URL`: the ace_dashboard role's DSN (required).
    pub database_url: Secret,
    /// `ACE_DASHBOARD_USERS_FILE` (required): the operator accounts, TOML (see
    /// docs/dashboard.md); passwords as argon2 PHC hashes only.
    pub users_file: PathBuf,
    /// `ACE_DASHBOARD_LISTEN`, default `127.0.0.1:8080`.
    pub listen: SocketAddr,
    /// `ACE_NATS_URL`, default `nats://127.0.0.1:4222`: retries are re-published here.
    pub nats_url: String,
    /// `ACE_NATS_CREDS`, `ACE_NATS_NKEY_FILE`: NATS credentials, if the server wants them.
    pub nats_creds: Option<String>,
    pub nats_nkey_file: Option<String>,
    /// `ACE_NATS_TLS_CA_FILE` (PEM CA to trust; default the system roots),
    /// `ACE_NATS_TLS_CERT_FILE` + `ACE_NATS_TLS_KEY_FILE` (client certificate, only
    /// together): TLS to NATS, required once any is set; default none.
    pub nats_tls: ace_core::nats::Tls,
    /// `ACE_PREFIX`, default `ace`.
    pub prefix: String,
    /// `ACE_DASHBOARD_WRITER_URLS`, default `http://127.0.0.1:9101`: each writer's health
    /// and metrics address (comma list): leader and standby, intake counters, latency.
    pub writer_urls: Vec<String>,
    /// `ACE_DASHBOARD_ANCHOR_URLS`, default `http://127.0.0.1:9102`: anchors' metrics
    /// (delivery failures per sink). Empty disables.
    pub anchor_urls: Vec<String>,
    /// `ACE_DASHBOARD_POOL_SIZE`, default 8: Postgres connections.
    pub pool_size: usize,
    /// `ACE_DASHBOARD_STATEMENT_TIMEOUT_MS`, default 5000: limit on every query and on
    /// waiting for a pooled connection; a page that needs longer answers 503.
    pub statement_timeout: Duration,
    /// `ACE_DASHBOARD_SESSION_IDLE_SECS`, default 1800: a session unused this long ends.
    pub session_idle: Duration,
    /// `ACE_DASHBOARD_SESSION_MAX_SECS`, default 28800: a session ends this long after
    /// login, used or not.
    pub session_max: Duration,
    /// `ACE_DASHBOARD_COOKIE_SECURE`, default false: mark the session cookie `Secure`. Set
    /// it whenever the dashboard is reached over HTTPS (through a TLS proxy).
    pub cookie_secure: bool,
    /// `ACE_DASHBOARD_LOGIN_MAX_FAILURES`, default 5: failed logins per client address,
    /// and per account name, within the window; then 429 until the window passes.
    pub login_max_failures: usize,
    /// `ACE_DASHBOARD_LOGIN_WINDOW_SECS`, default 300.
    pub login_window: Duration,
    /// `ACE_DASHBOARD_REFRESH_SECS`, default 10: the overview reloads itself this often.
    pub refresh: Duration,
    /// `ACE_DASHBOARD_BULK_RETRY_MAX`, default 1000: items one bulk retry re-submits;
    /// the rest wait for the next bulk retry.
    pub bulk_retry_max: usize,
    /// `ACE_DASHBOARD_ALERT_WEBHOOK_URL` (a secret: it may carry a token): where alert
    /// hooks POST; unset, alerts are evaluated and exported as metrics only.
    pub alert_webhook: Option<Secret>,
    /// `ACE_DASHBOARD_ALERT_INTERVAL_SECS`, default 15: how often alerts are evaluated.
    pub alert_interval: Duration,
    pub alerts: AlertThresholds,
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
    pub fn with_defaults(database_url: Secret, users_file: PathBuf) -> Config {
        Config {
            database_url,
            users_file,
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_creds: None,
            nats_nkey_file: None,
            nats_tls: ace_core::nats::Tls::default(),
            prefix: "ace".into(),
            writer_urls: vec!["http://127.0.0.1:9101".into()],
            anchor_urls: vec!["http://127.0.0.1:9102".into()],
            pool_size: 8,
            statement_timeout: Duration::from_millis(5000),
            session_idle: Duration::from_secs(1800),
            session_max: Duration::from_secs(8 * 3600),
            cookie_secure: false,
            login_max_failures: 5,
            login_window: Duration::from_secs(300),
            refresh: Duration::from_secs(10),
            bulk_retry_max: 1000,
            alert_webhook: None,
            alert_interval: Duration::from_secs(15),
            alerts: AlertThresholds {
                dlq_open: 100,
                anchor_lag_blocks: 10,
                stall: Duration::from_secs(120),
                dlq_open_for: Duration::from_secs(300),
                anchor_lag_for: Duration::from_secs(600),
                stall_for: Duration::from_secs(120),
                no_leader_for: Duration::from_secs(60),
            },
        }
    }

    pub fn from(env: &Env) -> Result<Config, ConfigError> {
        let secs = |var: &str, default: Duration| -> Result<Duration, ConfigError> {
            env.parse(var, default.as_secs()).map(Duration::from_secs)
        };
        let d = Config::with_defaults(
            Secret::new(env.required(
                "ACE_DATABASE_URL",
                "the dashboard's DSN, e.g. postgres://ace_dashboard@127.0.0.1/ace",
            )?),
            PathBuf::from(env.required(
                "ACE_DASHBOARD_USERS_FILE",
                "the operator accounts file (docs/dashboard.md, \"Accounts\")",
            )?),
        );
        let writer_default: Vec<&str> = d.writer_urls.iter().map(String::as_str).collect();
        let anchor_default: Vec<&str> = d.anchor_urls.iter().map(String::as_str).collect();
        let cfg = Config {
            listen: env.parse("ACE_DASHBOARD_LISTEN", d.listen)?,
            nats_url: env.string("ACE_NATS_URL", &d.nats_url)?,
            nats_creds: env.get("ACE_NATS_CREDS")?,
            nats_nkey_file: env.get("ACE_NATS_NKEY_FILE")?,
            nats_tls: ace_core::nats::Tls::from_env(env)?,
            prefix: env.string("ACE_PREFIX", &d.prefix)?,
            writer_urls: env.list("ACE_DASHBOARD_WRITER_URLS", &writer_default)?,
            anchor_urls: env.list("ACE_DASHBOARD_ANCHOR_URLS", &anchor_default)?,
            pool_size: env.parse("ACE_DASHBOARD_POOL_SIZE", d.pool_size)?,
            statement_timeout: env
                .parse(
                    "ACE_DASHBOARD_STATEMENT_TIMEOUT_MS",
                    d.statement_timeout.as_millis() as u64,
                )
                .map(Duration::from_millis)?,
            session_idle: secs("ACE_DASHBOARD_SESSION_IDLE_SECS", d.session_idle)?,
            session_max: secs("ACE_DASHBOARD_SESSION_MAX_SECS", d.session_max)?,
            cookie_secure: env.parse("ACE_DASHBOARD_COOKIE_SECURE", d.cookie_secure)?,
            login_max_failures: env
                .parse("ACE_DASHBOARD_LOGIN_MAX_FAILURES", d.login_max_failures)?,
            login_window: secs("ACE_DASHBOARD_LOGIN_WINDOW_SECS", d.login_window)?,
            refresh: secs("ACE_DASHBOARD_REFRESH_SECS", d.refresh)?,
            bulk_retry_max: env.parse("ACE_DASHBOARD_BULK_RETRY_MAX", d.bulk_retry_max)?,
            alert_webhook: env.get("ACE_DASHBOARD_ALERT_WEBHOOK_URL")?.map(Secret::new),
            alert_interval: secs("ACE_DASHBOARD_ALERT_INTERVAL_SECS", d.alert_interval)?,
            alerts: AlertThresholds {
                dlq_open: env.parse("ACE_DASHBOARD_ALERT_DLQ_OPEN", d.alerts.dlq_open)?,
                anchor_lag_blocks: env.parse(
                    "ACE_DASHBOARD_ALERT_ANCHOR_LAG_BLOCKS",
                    d.alerts.anchor_lag_blocks,
                )?,
                stall: secs("ACE_DASHBOARD_ALERT_STALL_SECS", d.alerts.stall)?,
                dlq_open_for: secs(
                    "ACE_DASHBOARD_ALERT_DLQ_OPEN_FOR_SECS",
                    d.alerts.dlq_open_for,
                )?,
                anchor_lag_for: secs(
                    "ACE_DASHBOARD_ALERT_ANCHOR_LAG_FOR_SECS",
                    d.alerts.anchor_lag_for,
                )?,
                stall_for: secs("ACE_DASHBOARD_ALERT_STALL_FOR_SECS", d.alerts.stall_for)?,
                no_leader_for: secs(
                    "ACE_DASHBOARD_ALERT_NO_LEADER_FOR_SECS",
                    d.alerts.no_leader_for,
                )?,
            },
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
        if ace_core::nats::Names::new(&self.prefix).is_err() {
            return bad(
                "ACE_PREFIX",
                self.prefix.clone(),
                "must be one NATS token of [a-z0-9_-]",
            );
        }
        if self.pool_size == 0 || self.pool_size > 1000 {
            return bad(
                "ACE_DASHBOARD_POOL_SIZE",
                self.pool_size.to_string(),
                "must be between 1 and 1000",
            );
        }
        if self.statement_timeout < Duration::from_millis(10) {
            return bad(
                "ACE_DASHBOARD_STATEMENT_TIMEOUT_MS",
                self.statement_timeout.as_millis().to_string(),
                "must be at least 10",
            );
        }
        for (var, v) in [
            ("ACE_DASHBOARD_SESSION_IDLE_SECS", self.session_idle),
            ("ACE_DASHBOARD_SESSION_MAX_SECS", self.session_max),
            ("ACE_DASHBOARD_LOGIN_WINDOW_SECS", self.login_window),
            ("ACE_DASHBOARD_REFRESH_SECS", self.refresh),
            ("ACE_DASHBOARD_ALERT_INTERVAL_SECS", self.alert_interval),
        ] {
            if v.is_zero() {
                return bad(var, "0".into(), "must be at least 1");
            }
        }
        if self.login_max_failures == 0 {
            return bad(
                "ACE_DASHBOARD_LOGIN_MAX_FAILURES",
                "0".into(),
                "must be at least 1",
            );
        }
        if self.bulk_retry_max == 0 || self.bulk_retry_max > 100_000 {
            return bad(
                "ACE_DASHBOARD_BULK_RETRY_MAX",
                self.bulk_retry_max.to_string(),
                "must be between 1 and 100000",
            );
        }
        if self.writer_urls.is_empty() {
            return bad(
                "ACE_DASHBOARD_WRITER_URLS",
                String::new(),
                "must name at least one writer",
            );
        }
        for (var, urls) in [
            ("ACE_DASHBOARD_WRITER_URLS", &self.writer_urls),
            ("ACE_DASHBOARD_ANCHOR_URLS", &self.anchor_urls),
        ] {
            for u in urls.iter() {
                if !(u.starts_with("http://") || u.starts_with("https://")) {
                    return bad(var, u.clone(), "each must be an http:// or https:// URL");
                }
            }
        }
        if let Some(w) = &self.alert_webhook {
            let w = w.expose();
            if !(w.starts_with("http://") || w.starts_with("https://")) {
                // The value may hold a token: name the variable, not the value.
                return bad(
                    "ACE_DASHBOARD_ALERT_WEBHOOK_URL",
                    "<redacted>".into(),
                    "must be an http:// or https:// URL",
                );
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let vars: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let env = Env::from_fn(|k| vars.get(k).cloned());
        Config::from(&env)
    }

    const BASE: [(&str, &str); 2] = [
        ("ACE_DATABASE_URL", "postgres://ace_dashboard@127.0.0.1/ace"),
        ("ACE_DASHBOARD_USERS_FILE", "/etc/ace/users.toml"),
    ];

    #[test]
    fn defaults() {
        let c = env(&BASE).expect("config");
        assert_eq!(c.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.writer_urls, vec!["http://127.0.0.1:9101"]);
        assert_eq!(c.alerts.dlq_open, 100);
        assert!(c.alert_webhook.is_none());
    }

    #[test]
    fn required_and_bad_settings_are_named() {
        let e = env(&[BASE[0]]).unwrap_err().to_string();
        assert!(e.contains("ACE_DASHBOARD_USERS_FILE"), "{e}");
        let mut v = BASE.to_vec();
        v.push(("ACE_DASHBOARD_WRITER_URLS", "127.0.0.1:9101"));
        let e = env(&v).unwrap_err().to_string();
        assert!(e.contains("ACE_DASHBOARD_WRITER_URLS"), "{e}");
        let mut v = BASE.to_vec();
        v.push((
            "ACE_DASHBOARD_ALERT_WEBHOOK_URL",
            "ftp://hooks/secret-token",
        ));
        let e = env(&v).unwrap_err().to_string();
        assert!(
            e.contains("ACE_DASHBOARD_ALERT_WEBHOOK_URL") && !e.contains("secret-token"),
            "{e}"
        );
        let mut v = BASE.to_vec();
        v.push(("ACE_DASHBOARD_SESSION_IDLE_SECS", "0"));
        assert!(env(&v).unwrap_err().to_string().contains("SESSION_IDLE"));
    }
}
