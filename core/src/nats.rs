//! NATS names and JetStream definitions. The only owner of subject, stream and consumer
//! names: every service and acectl builds them from `Names::new(prefix)`.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};

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
    #[error("cannot read NATS credentials {path}: {source}")]
    Credentials {
        path: String,
        source: std::io::Error,
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
    /// Replicas for every stream (1 on a single server; 3 on a cluster).
    pub replicas: usize,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 20_000,
            intake_max_age: Duration::from_secs(30 * 24 * 3600),
            replicas: 1,
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
        num_replicas: opts.replicas,
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
    for cfg in stream_configs(names, opts) {
        let name = cfg.name.clone();
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
}

pub async fn connect(opts: &ConnectOptions) -> Result<async_nats::Client, NatsError> {
    let mut co = async_nats::ConnectOptions::new()
        .name(&opts.name)
        .max_reconnects(None);
    if let Some(path) = &opts.creds_file {
        co = async_nats::ConnectOptions::with_credentials_file(path)
            .await
            .map_err(|source| NatsError::Credentials {
                path: path.clone(),
                source,
            })?
            .name(&opts.name)
            .max_reconnects(None);
    }
    if let Some(path) = &opts.nkey_file {
        let seed = std::fs::read_to_string(path).map_err(|source| NatsError::Credentials {
            path: path.clone(),
            source,
        })?;
        co = co.nkey(seed.trim().to_string());
    }
    co.connect(&opts.url)
        .await
        .map_err(|source| NatsError::Connect {
            // A URL may carry a password (nats://user:pass@host): never in an error.
            url: crate::config::redact_url(&opts.url),
            source,
        })
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

    #[test]
    fn bad_prefixes_are_refused() {
        for p in ["", "a.b", "a*", "a>", "a b"] {
            assert!(Names::new(p).is_err(), "{p:?}");
        }
    }
}
