//! NATS names and JetStream definitions. The only owner of subject, stream and consumer
//! names: every service and acectl builds them from `Names::new(prefix)`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use async_nats::rustls;

use crate::config::{ConfigError, Env};

/// Name of the writer's durable pull consumer on the intake stream.
pub const WRITER_CONSUMER: &str = "WRITER";

#[derive(Debug, thiserror::Error)]
pub enum NatsError {
    #[error("prefix {0:?} is not a valid NATS subject token (use letters, digits, '-' or '_')")]
    BadPrefix(String),
    #[error("cannot connect to NATS at {url}: {source}")]
    Connect {
        url: String,
        source: async_nats::ConnectError,
    },
    #[error("NATS URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("cannot read NATS credentials {path}: {source}")]
    Credentials {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "NATS TLS: {given} is set but {missing} is not; a client certificate needs both its certificate and its key"
    )]
    TlsIncomplete {
        given: &'static str,
        missing: &'static str,
    },
    #[error("NATS at {url}: TLS {what} {path} ({var}): {reason}")]
    TlsFile {
        url: String,
        what: &'static str,
        var: &'static str,
        path: String,
        reason: String,
    },
    #[error("cannot connect to NATS at {url}: {problem} ({source})")]
    Tls {
        url: String,
        problem: String,
        source: async_nats::ConnectError,
    },
    #[error("JetStream stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("JetStream consumer {consumer} on {stream}: {message}")]
    Consumer {
        stream: String,
        consumer: String,
        message: String,
    },
}

/// Subject and stream names for one ledger (DESIGN.md, "NATS subjects and streams").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    prefix: String,
}

impl Names {
    pub fn new(prefix: &str) -> Result<Names, NatsError> {
        let ok = !prefix.is_empty()
            && prefix.len() <= 32
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if ok {
            Ok(Names {
                prefix: prefix.to_string(),
            })
        } else {
            Err(NatsError::BadPrefix(prefix.to_string()))
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn stream(&self, suffix: &str) -> String {
        format!("{}_{suffix}", self.prefix.to_uppercase().replace('-', "_"))
    }

    pub fn intake_stream(&self) -> String {
        self.stream("INTAKE")
    }
    pub fn acks_stream(&self) -> String {
        self.stream("ACKS")
    }
    pub fn dlq_stream(&self) -> String {
        self.stream("DLQ")
    }
    pub fn checkpoints_stream(&self) -> String {
        self.stream("CHECKPOINTS")
    }

    pub fn intake_subject(&self, producer: &str) -> String {
        format!("{}.intake.{producer}", self.prefix)
    }
    pub fn intake_wildcard(&self) -> String {
        format!("{}.intake.>", self.prefix)
    }
    pub fn ack_subject(&self, producer: &str) -> String {
        format!("{}.ack.{producer}", self.prefix)
    }
    pub fn dlq_subject(&self, producer: &str) -> String {
        format!("{}.dlq.{producer}", self.prefix)
    }
    pub fn checkpoint_subject(&self) -> String {
        format!("{}.checkpoint", self.prefix)
    }

    /// The producer named by an intake subject: everything after `<prefix>.intake.`.
    /// The caller validates it as a producer id (a subject with extra tokens is not one).
    pub fn producer_of<'a>(&self, subject: &'a str) -> Option<&'a str> {
        subject
            .strip_prefix(self.prefix.as_str())
            .and_then(|s| s.strip_prefix(".intake."))
    }
}

/// Settings of `nats init` that operators tune.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// How long a delivered message may stay unacked before redelivery. Must exceed the
    /// worst batch time (DESIGN.md, "Known pitfalls").
    pub ack_wait: Duration,
    /// Most messages delivered to the writer and not yet acked.
    pub max_ack_pending: i64,
    /// How long the intake stream keeps messages (they are in Postgres once acked).
    pub intake_max_age: Duration,
    /// Replicas for every stream (1 on a single server; 3 on a cluster). `None` keeps an
    /// existing stream's count (so a rerun without it never shrinks a replicated stream)
    /// and makes new streams with 1.
    pub replicas: Option<usize>,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 20_000,
            intake_max_age: Duration::from_secs(30 * 24 * 3600),
            replicas: None,
        }
    }
}

pub fn stream_configs(names: &Names, opts: &InitOptions) -> Vec<stream::Config> {
    let base = |name: String, subjects: Vec<String>, max_age: Duration| stream::Config {
        name,
        subjects,
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        max_age,
        num_replicas: opts.replicas.unwrap_or(1),
        ..Default::default()
    };
    vec![
        stream::Config {
            duplicate_window: Duration::from_secs(120),
            ..base(
                names.intake_stream(),
                vec![names.intake_wildcard()],
                opts.intake_max_age,
            )
        },
        base(
            names.acks_stream(),
            vec![format!("{}.ack.>", names.prefix())],
            Duration::from_secs(24 * 3600),
        ),
        base(
            names.dlq_stream(),
            vec![format!("{}.dlq.>", names.prefix())],
            Duration::from_secs(30 * 24 * 3600),
        ),
        base(
            names.checkpoints_stream(),
            vec![names.checkpoint_subject()],
            Duration::ZERO,
        ),
    ]
}

pub fn writer_consumer_config(names: &Names, opts: &InitOptions) -> consumer::pull::Config {
    consumer::pull::Config {
        durable_name: Some(WRITER_CONSUMER.to_string()),
        description: Some("ACE Ledger writer: sequences intake into the log".to_string()),
        filter_subject: names.intake_wildcard(),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: opts.ack_wait,
        deliver_policy: consumer::DeliverPolicy::All,
        max_ack_pending: opts.max_ack_pending,
        // Transient faults are retried until they succeed; nothing is dropped.
        max_deliver: -1,
        ..Default::default()
    }
}

/// Create or update the streams and the writer's consumer. Idempotent.
pub async fn init(
    js: &jetstream::Context,
    names: &Names,
    opts: &InitOptions,
) -> Result<(), NatsError> {
    for mut cfg in stream_configs(names, opts) {
        let name = cfg.name.clone();
        if opts.replicas.is_none() {
            if let Ok(mut existing) = js.get_stream(&name).await {
                if let Ok(info) = existing.info().await {
                    cfg.num_replicas = info.config.num_replicas;
                }
            }
        }
        js.create_or_update_stream(cfg)
            .await
            .map_err(|e| NatsError::Stream {
                stream: name,
                message: e.to_string(),
            })?;
    }
    let stream_name = names.intake_stream();
    let stream = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| NatsError::Stream {
            stream: stream_name.clone(),
            message: e.to_string(),
        })?;
    let cfg = writer_consumer_config(names, opts);
    let consumer_err = |e: &dyn std::fmt::Display| NatsError::Consumer {
        stream: stream_name.clone(),
        consumer: WRITER_CONSUMER.to_string(),
        message: e.to_string(),
    };
    match stream
        .get_consumer::<consumer::pull::Config>(WRITER_CONSUMER)
        .await
    {
        Ok(_) => {
            stream
                .update_consumer(cfg)
                .await
                .map_err(|e| consumer_err(&e))?;
        }
        Err(_) => {
            stream
                .create_consumer(cfg)
                .await
                .map_err(|e| consumer_err(&e))?;
        }
    }
    Ok(())
}

/// TLS for the NATS connection, shared by every service's config and acectl:
/// `ACE_NATS_TLS_CA_FILE` (PEM CA certificate(s) to trust instead of the system roots),
/// `ACE_NATS_TLS_CERT_FILE` and `ACE_NATS_TLS_KEY_FILE` (PEM client certificate and key,
/// for a server with `verify: true`; only together). All unset (the default) = TLS only
/// if the URL is `tls://` or the server demands it, verified against the system roots.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tls {
    ca_file: Option<PathBuf>,
    cert_file: Option<PathBuf>,
    key_file: Option<PathBuf>,
}

/// What one TLS file should hold, for errors that name it.
#[derive(Clone, Copy)]
enum TlsFileKind {
    Ca,
    Cert,
    Key,
}

impl TlsFileKind {
    fn what(self) -> &'static str {
        match self {
            TlsFileKind::Ca => "CA file",
            TlsFileKind::Cert => "client certificate",
            TlsFileKind::Key => "client key",
        }
    }
    fn var(self) -> &'static str {
        match self {
            TlsFileKind::Ca => Tls::CA_VAR,
            TlsFileKind::Cert => Tls::CERT_VAR,
            TlsFileKind::Key => Tls::KEY_VAR,
        }
    }
}

impl Tls {
    pub const CA_VAR: &'static str = "ACE_NATS_TLS_CA_FILE";
    pub const CERT_VAR: &'static str = "ACE_NATS_TLS_CERT_FILE";
    pub const KEY_VAR: &'static str = "ACE_NATS_TLS_KEY_FILE";

    /// The client certificate and key come together or not at all: one without the other
    /// is a configuration mistake, not "no client certificate".
    pub fn new(
        ca_file: Option<PathBuf>,
        cert_file: Option<PathBuf>,
        key_file: Option<PathBuf>,
    ) -> Result<Tls, NatsError> {
        match (&cert_file, &key_file) {
            (Some(_), None) => Err(NatsError::TlsIncomplete {
                given: Tls::CERT_VAR,
                missing: Tls::KEY_VAR,
            }),
            (None, Some(_)) => Err(NatsError::TlsIncomplete {
                given: Tls::KEY_VAR,
                missing: Tls::CERT_VAR,
            }),
            _ => Ok(Tls {
                ca_file,
                cert_file,
                key_file,
            }),
        }
    }

    /// Reads the three settings and checks that each named file holds what it should,
    /// so that a service with a bad file refuses to start instead of retrying to connect.
    pub fn from_env(env: &Env) -> Result<Tls, ConfigError> {
        let path = |var: &str| -> Result<Option<PathBuf>, ConfigError> {
            Ok(env.get(var)?.map(PathBuf::from))
        };
        let tls = Tls::new(
            path(Tls::CA_VAR)?,
            path(Tls::CERT_VAR)?,
            path(Tls::KEY_VAR)?,
        )
        .map_err(|e| match e {
            NatsError::TlsIncomplete { given, missing } => ConfigError::Missing {
                var: missing.into(),
                hint: format!(
                    "{given} is set; a client certificate needs its key and its certificate"
                ),
            },
            other => ConfigError::Invalid {
                var: Tls::CA_VAR.into(),
                value: String::new(),
                message: other.to_string(),
            },
        })?;
        tls.check_files()
            .map_err(|(kind, path, reason)| ConfigError::Invalid {
                var: kind.var().into(),
                value: path.display().to_string(),
                message: reason,
            })?;
        Ok(tls)
    }

    pub fn ca_file(&self) -> Option<&Path> {
        self.ca_file.as_deref()
    }

    /// The client certificate and its key, if mutual TLS is configured.
    pub fn client_cert(&self) -> Option<(&Path, &Path)> {
        self.cert_file.as_deref().zip(self.key_file.as_deref())
    }

    /// Any TLS setting given: the connection must then be TLS, never plaintext.
    pub fn is_configured(&self) -> bool {
        self.ca_file.is_some() || self.cert_file.is_some()
    }

    /// Each given file is readable and holds PEM of the right kind. async-nats would find
    /// the same problems only at connect time, with an error that does not name the file.
    fn check_files(&self) -> Result<(), (TlsFileKind, PathBuf, String)> {
        use rustls::pki_types::pem::PemObject;
        use rustls::pki_types::{CertificateDer, PrivateKeyDer};
        let files = [
            (TlsFileKind::Ca, &self.ca_file),
            (TlsFileKind::Cert, &self.cert_file),
            (TlsFileKind::Key, &self.key_file),
        ];
        for (kind, path) in files {
            let Some(path) = path else { continue };
            let fail = |reason: String| Err((kind, path.clone(), reason));
            let bytes = match std::fs::read(path) {
                Ok(b) => b,
                Err(e) => return fail(format!("cannot read it: {e}")),
            };
            match kind {
                TlsFileKind::Ca | TlsFileKind::Cert => {
                    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&bytes).collect();
                    match certs {
                        Ok(c) if c.is_empty() => {
                            return fail(
                                "holds no PEM certificate (no \"-----BEGIN CERTIFICATE-----\")"
                                    .into(),
                            )
                        }
                        Ok(_) => {}
                        Err(e) => return fail(format!("not a PEM certificate file: {e}")),
                    }
                }
                TlsFileKind::Key => {
                    if let Err(e) = PrivateKeyDer::from_pem_slice(&bytes) {
                        return fail(format!(
                            "holds no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }
}

/// Connection settings shared by every service and acectl.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    pub url: String,
    /// A `.creds` file (JWT + NKey seed), for operator/account deployments.
    pub creds_file: Option<String>,
    /// A file holding an NKey seed, for NKey-authenticated users.
    pub nkey_file: Option<String>,
    /// Client name shown in the server's connection list.
    pub name: String,
    /// TLS settings; the default is none (TLS only if the URL or the server asks for it).
    pub tls: Tls,
}

pub async fn connect(opts: &ConnectOptions) -> Result<async_nats::Client, NatsError> {
    let mut co = async_nats::ConnectOptions::new();
    if let Some(path) = &opts.creds_file {
        co = async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| NatsError::Credentials {
                path: path.clone(),
                source,
            })?;
    }
    co = co.name(&opts.name).max_reconnects(None);
    if let Some(path) = &opts.nkey_file {
        let seed = std::fs::read_to_string(path).map_err(|source| NatsError::Credentials {
            path: path.clone(),
            source,
        })?;
        co = co.nkey(seed.trim().to_string());
    }
    let tls = &opts.tls;
    tls.check_files()
        .map_err(|(kind, path, reason)| NatsError::TlsFile {
            url: crate::config::redact_url(&opts.url),
            what: kind.what(),
            var: kind.var(),
            path: path.display().to_string(),
            reason,
        })?;
    if let Some(ca) = tls.ca_file() {
        co = co.add_root_certificates(ca.to_path_buf());
    }
    if let Some((cert, key)) = tls.client_cert() {
        co = co.add_client_certificate(cert.to_path_buf(), key.to_path_buf());
    }
    // With a CA or a client certificate configured, a server that does not offer TLS is
    // refused rather than talked to in plaintext (async-nats upgrades on its own only
    // when the server demands TLS or the URL says `tls://`).
    let tls_url = opts
        .url
        .split(',')
        .any(|u| u.trim().to_ascii_lowercase().starts_with("tls://"));
    co = co.require_tls(tls.is_configured() || tls_url);
    // A cluster's seed list, `nats://a:4222,nats://b:4222`: async-nats takes a list of
    // addresses, not one comma-separated string.
    let servers = opts
        .url
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(|u| {
            u.parse::<async_nats::ServerAddr>()
                .map_err(|e| NatsError::BadUrl {
                    url: crate::config::redact_url(u),
                    reason: e.to_string(),
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    co.connect(servers).await.map_err(|source| {
        // A URL may carry a password (nats://user:pass@host): never in an error.
        let url = crate::config::redact_url(&opts.url);
        match tls_problem(&source, tls) {
            Some(problem) => NatsError::Tls {
                url,
                problem,
                source,
            },
            None => NatsError::Connect { url, source },
        }
    })
}

/// What a failed TLS connection means for the operator, when the cause is a TLS one.
/// async-nats reports a handshake failure as an I/O error wrapping the rustls error, so
/// the chain is searched for it (inside `io::Error`s too, whose `source()` skips it).
fn tls_problem(err: &async_nats::ConnectError, tls: &Tls) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(err);
    while let Some(e) = cur {
        let inner: Option<&(dyn std::error::Error + 'static)> = e
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
            .map(|i| i as &(dyn std::error::Error + 'static));
        for candidate in [Some(e), inner].into_iter().flatten() {
            if let Some(r) = candidate.downcast_ref::<rustls::Error>() {
                return Some(describe_tls_error(r, tls));
            }
        }
        cur = inner.and_then(|i| i.source()).or_else(|| e.source());
    }
    if err.kind() == async_nats::ConnectErrorKind::Tls {
        return Some("TLS setup failed".into());
    }
    None
}

fn describe_tls_error(e: &rustls::Error, tls: &Tls) -> String {
    use rustls::{AlertDescription as A, CertificateError as C};
    let ca = match tls.ca_file() {
        Some(p) => format!("the CA in {} ({})", p.display(), Tls::CA_VAR),
        None => format!("the system's trusted roots (no {} set)", Tls::CA_VAR),
    };
    match e {
        rustls::Error::InvalidCertificate(C::UnknownIssuer | C::BadSignature) => format!(
            "the server speaks TLS (TLS is required there) and its certificate is not signed by {ca}; \
             set {} to the CA that signed the server's certificate",
            Tls::CA_VAR
        ),
        rustls::Error::InvalidCertificate(
            C::NotValidForName | C::NotValidForNameContext { .. },
        ) => "the server's TLS certificate does not name the host in the URL (check its subjectAltName)".into(),
        rustls::Error::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "the server's TLS certificate has expired or is not valid yet".into(),
        rustls::Error::InvalidCertificate(other) => {
            format!("the server's TLS certificate was refused: {other:?}")
        }
        rustls::Error::AlertReceived(
            alert @ (A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired
            | A::AccessDenied
            | A::HandshakeFailure),
        ) => match tls.client_cert() {
            None => format!(
                "the server requires a client certificate (mutual TLS, server alert {alert:?}); \
                 set {} and {}",
                Tls::CERT_VAR,
                Tls::KEY_VAR
            ),
            Some((cert, _)) => format!(
                "the server refused the client certificate {} ({}; server alert {alert:?}): \
                 is it signed by a CA the server's tls block trusts (ca_file), and still valid?",
                cert.display(),
                Tls::CERT_VAR
            ),
        },
        rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
            "TLS is required by this client's settings but the server did not answer in TLS \
             (does the server's config have a tls block?)"
                .into()
        }
        other => format!("TLS handshake failed: {other}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_prefix() {
        let n = Names::new("t42").unwrap();
        assert_eq!(n.intake_stream(), "T42_INTAKE");
        assert_eq!(n.acks_stream(), "T42_ACKS");
        assert_eq!(n.dlq_stream(), "T42_DLQ");
        assert_eq!(n.checkpoints_stream(), "T42_CHECKPOINTS");
        assert_eq!(n.intake_subject("acme"), "t42.intake.acme");
        assert_eq!(n.ack_subject("acme"), "t42.ack.acme");
        assert_eq!(n.dlq_subject("acme"), "t42.dlq.acme");
        assert_eq!(n.checkpoint_subject(), "t42.checkpoint");
        assert_eq!(n.producer_of("t42.intake.acme"), Some("acme"));
        assert_eq!(n.producer_of("t42.ack.acme"), None);
        assert_eq!(Names::new("ace").unwrap().intake_stream(), "ACE_INTAKE");
    }

    fn tls_env(pairs: &[(&str, &str)]) -> Result<Tls, ConfigError> {
        let m: std::collections::HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Tls::from_env(&Env::from_fn(move |k| m.get(k).cloned()))
    }

    #[test]
    fn tls_settings_are_checked_when_read() {
        let none = tls_env(&[]).unwrap();
        assert!(!none.is_configured() && none.client_cert().is_none());

        let e = tls_env(&[(Tls::CERT_VAR, "/c.pem")])
            .unwrap_err()
            .to_string();
        assert!(e.contains(Tls::KEY_VAR) && e.contains(Tls::CERT_VAR), "{e}");
        let e = tls_env(&[(Tls::KEY_VAR, "/k.pem")])
            .unwrap_err()
            .to_string();
        assert!(e.contains(Tls::CERT_VAR), "{e}");

        let dir = std::env::temp_dir().join(format!("ace-tls-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = tls_env(&[(Tls::CA_VAR, missing.to_str().unwrap())])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(Tls::CA_VAR) && e.contains("missing.pem") && e.contains("cannot read"),
            "{e}"
        );
        let junk = dir.join("junk.pem");
        std::fs::write(&junk, "not PEM").unwrap();
        let e = tls_env(&[(Tls::CA_VAR, junk.to_str().unwrap())])
            .unwrap_err()
            .to_string();
        assert!(e.contains("junk.pem") && e.contains("PEM"), "{e}");
        let e = tls_env(&[
            (Tls::CERT_VAR, junk.to_str().unwrap()),
            (Tls::KEY_VAR, junk.to_str().unwrap()),
        ])
        .unwrap_err()
        .to_string();
        assert!(e.contains(Tls::CERT_VAR), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn bad_prefixes_are_refused() {
        for p in ["", "a.b", "a*", "a>", "a b"] {
            assert!(Names::new(p).is_err(), "{p:?}");
        }
    }
}
