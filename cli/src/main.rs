//! acectl: the ACE Ledger command line.

/// `println!` for acectl's output: when stdout is gone (`acectl audit | head`) the process
/// ends quietly with 141, as a Unix tool killed by SIGPIPE does, instead of panicking as
/// `println!` does on a broken pipe.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout().lock(), $($arg)*) {
            $crate::stdout_failed(e);
        }
    }};
}

mod audit;
mod collect;
mod http;
mod key_events;
mod keyfile;
mod nats_users;
mod operator_audit;
mod policy;
mod provision;
mod publish;
mod receipts;
mod registry;
mod state;
mod verify;

use std::path::PathBuf;
use std::time::Duration;

use ace_core::checkpoint::NoteSigner;
use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::ids::{KeyId, ProducerId};
use anyhow::{bail, Context, Result};
use clap::{Args, Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "acectl",
    version,
    about = "ACE Ledger command line: setup, onboarding, signing and publishing"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct DbArgs {
    /// Postgres DSN of an owner or admin role (migrations and registry changes).
    #[arg(long, env = "ACE_DATABASE_URL", hide_env_values = true)]
    database_url: String,
}

#[derive(Args, Clone)]
struct NatsArgs {
    #[arg(long, env = "ACE_NATS_URL", default_value = "nats://127.0.0.1:4222")]
    nats_url: String,
    /// NATS .creds file.
    #[arg(long, env = "ACE_NATS_CREDS")]
    nats_creds: Option<String>,
    /// File holding an NKey seed.
    #[arg(long, env = "ACE_NATS_NKEY_FILE")]
    nats_nkey_file: Option<String>,
    /// PEM CA certificate(s) to trust for the NATS server's TLS certificate, instead of
    /// the system roots; makes TLS required.
    #[arg(long, env = "ACE_NATS_TLS_CA_FILE")]
    nats_tls_ca_file: Option<PathBuf>,
    /// PEM client certificate for a server that verifies clients (mutual TLS); needs
    /// --nats-tls-key-file.
    #[arg(long, env = "ACE_NATS_TLS_CERT_FILE")]
    nats_tls_cert_file: Option<PathBuf>,
    /// PEM private key of --nats-tls-cert-file.
    #[arg(long, env = "ACE_NATS_TLS_KEY_FILE")]
    nats_tls_key_file: Option<PathBuf>,
    #[arg(long, env = "ACE_PREFIX", default_value = "ace")]
    prefix: String,
}

#[derive(Subcommand)]
enum Cmd {
    /// Database schema.
    Db {
        #[command(subcommand)]
        cmd: DbCmd,
    },
    /// JetStream streams and consumers.
    Nats {
        #[command(subcommand)]
        cmd: NatsCmd,
    },
    /// The ledger's checkpoint signing key.
    LedgerKey {
        #[command(subcommand)]
        cmd: LedgerKeyCmd,
    },
    /// Producers.
    Producer {
        #[command(subcommand)]
        cmd: ProducerCmd,
    },
    /// Producers' signing keys.
    Key {
        #[command(subcommand)]
        cmd: KeyCmd,
    },
    /// Sign a statement into a DSSE envelope (printed, or written with --out).
    Sign(SignArgs),
    /// Sign (or take) an envelope, publish it, wait for the ledger's ack and print it.
    /// Exits 0 for accepted or duplicate, 3 for rejected, 4 when no ack came in time.
    Publish(publish::PublishArgs),
    /// Verify what a reader serves, with nothing but the ledger's verifier key. Exits 0
    /// when verified, 1 when a check fails (the step is named), 2 when it cannot run.
    Verify {
        #[command(subcommand)]
        cmd: verify::VerifyCmd,
    },
    /// Recompute the whole ledger from its stored rows: every leaf, tile, block root, the
    /// hash chain and every checkpoint. Exits 0 when everything matches, 1 at the first
    /// entry, tile or block that does not (named), 2 when the audit cannot run.
    Audit(audit::AuditArgs),
    /// A service's state components as in-toto statements (printed): code, configuration,
    /// environment, data mutations. Exits 0, or 2 when a component cannot be collected.
    Collect {
        #[command(subcommand)]
        cmd: collect::CollectCmd,
    },
    /// The writer's admission policy, off line: validate a file, or dry-run an envelope.
    Policy {
        #[command(subcommand)]
        cmd: policy::PolicyCmd,
    },
    /// Collect a service's state signals, publish each, then the snapshot that binds them.
    /// Refuses when the determinism contract's mandatory signals are not all given
    /// (unless --partial). Exits 0 recorded, 1 refused or rejected, 2 could not run,
    /// 3 recorded partial.
    Snapshot(state::SnapshotArgs),
    /// The state of a service at a time, proven from the log (docs/state.md).
    State {
        #[command(subcommand)]
        cmd: state::StateCmd,
    },
}

#[derive(Subcommand)]
enum DbCmd {
    /// Create roles if missing and apply pending migrations (under an advisory lock).
    Migrate(DbArgs),
    /// Create the five roles if missing, set their passwords (from files; SCRAM computed
    /// here) or certificate auth, attributes and connection limits, then migrate (the
    /// grants). Idempotent: says what it changed and what was already right.
    Provision(provision::ProvisionArgs),
}

#[derive(Subcommand)]
enum NatsCmd {
    /// Create or update the streams and the writer's durable consumer. Idempotent.
    Init {
        #[command(flatten)]
        nats: NatsArgs,
        /// Seconds a delivered message may stay unacked before redelivery; must exceed the
        /// writer's worst batch time.
        #[arg(long, default_value_t = 30)]
        ack_wait_secs: u64,
        /// Stream replicas (3 on a JetStream cluster). Unset: existing streams keep theirs,
        /// new ones get 1.
        #[arg(long)]
        replicas: Option<usize>,
    },
    /// Make an NKey user for a producer or a service: the seed goes to --seed-out (0600,
    /// never overwritten), the public key into the ledger's `nats_users`. Idempotent.
    AddUser {
        /// The producer id, or a service's name (writer, anchor, dashboard, admin).
        name: String,
        /// producer, writer, anchor, dashboard or admin.
        #[arg(long)]
        kind: String,
        #[arg(long)]
        seed_out: PathBuf,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Write nats-server's authorization block: each user allowed only its own subjects
    /// (suspended producers left out), then SIGHUP the server with --reload-pid.
    Render {
        #[arg(long)]
        out: PathBuf,
        #[arg(long, env = "ACE_PREFIX", default_value = "ace")]
        prefix: String,
        #[arg(long)]
        reload_pid: Option<u32>,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Subcommand)]
enum LedgerKeyCmd {
    /// Generate a ledger key; writes the signer key file (0600) and prints the verifier key.
    Generate {
        #[arg(long)]
        out: PathBuf,
        /// The log's origin line (also the key's name).
        #[arg(long, env = "ACE_LOG_ORIGIN")]
        origin: String,
    },
}

#[derive(Subcommand)]
enum ProducerCmd {
    /// Register a producer, and optionally its first signing key and its NATS user (then
    /// re-render nats-server's authorization). Idempotent: what exists is reported.
    Add {
        id: String,
        /// Generate the producer's first DSSE signing key; its seed goes here (0600). If
        /// the file exists (a rerun), the key in it is registered instead.
        #[arg(long, conflicts_with = "public_key", value_name = "FILE")]
        key_out: Option<PathBuf>,
        /// Register this ed25519 public key (64 hex) as its first key instead.
        #[arg(long, value_name = "HEX")]
        public_key: Option<String>,
        /// Make the producer's NATS NKey user; its seed goes here (0600).
        #[arg(long, value_name = "FILE")]
        nats_seed_out: Option<PathBuf>,
        #[command(flatten)]
        nats: registry::NatsSync,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Suspend a producer: the writer refuses its envelopes (policy_denied, rule
    /// producer_active) from now on, and a re-rendered NATS authorization drops its user.
    Suspend {
        id: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        nats: registry::NatsSync,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Resume a suspended producer.
    Resume {
        id: String,
        #[arg(long, default_value = "")]
        reason: String,
        #[command(flatten)]
        nats: registry::NatsSync,
        #[command(flatten)]
        db: DbArgs,
    },
}

/// The key a `key add` or `key rotate` registers: made here, or brought.
#[derive(Args)]
struct NewKey {
    /// Generate a new key and write its seed (hex, 0600) to --out.
    #[arg(long, requires = "out", conflicts_with = "public_key")]
    generate: bool,
    #[arg(long)]
    out: Option<PathBuf>,
    /// An existing ed25519 public key, 64 hex characters.
    #[arg(long, required_unless_present = "generate")]
    public_key: Option<String>,
}

impl NewKey {
    fn verifying_key(self) -> Result<ed25519_dalek::VerifyingKey> {
        match (self.generate, self.out, self.public_key) {
            (true, Some(out), _) => new_signing_key(&out),
            (true, None, _) => bail!("--generate needs --out FILE"),
            (false, _, Some(hexkey)) => keyfile::parse_public_key(&hexkey),
            (false, _, None) => bail!("give --generate --out FILE or --public-key HEX"),
        }
    }
}

#[derive(Subcommand)]
enum KeyCmd {
    /// Register a signing key for a producer; prints its keyid.
    Add {
        producer: String,
        #[command(flatten)]
        key: NewKey,
        /// Start of validity (RFC 3339); default now.
        #[arg(long)]
        valid_from: Option<String>,
        /// End of validity (RFC 3339); default none.
        #[arg(long)]
        valid_until: Option<String>,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Rotate a producer's key: register the new key from now, and end every other usable
    /// key of the producer after the overlap (both sign meanwhile). Prints the new keyid.
    Rotate {
        producer: String,
        #[command(flatten)]
        key: NewKey,
        /// How long the old keys stay valid beside the new one: 90s, 15m, 24h, 7d.
        #[arg(long, default_value = "24h")]
        overlap: String,
        #[command(flatten)]
        db: DbArgs,
    },
    /// Revoke a key: envelopes it signs from now on are rejected as key_revoked; entries
    /// it signed before stay valid. Final.
    Revoke {
        keyid: String,
        #[arg(long)]
        reason: String,
        #[command(flatten)]
        db: DbArgs,
    },
}

#[derive(Args)]
struct SignArgs {
    /// The producer's signing key file (hex seed, from `acectl key add --generate`).
    #[arg(long)]
    key: PathBuf,
    /// The statement (or other payload) file.
    #[arg(long)]
    statement: PathBuf,
    #[arg(long, default_value = IN_TOTO_PAYLOAD_TYPE)]
    payload_type: String,
    #[arg(long)]
    out: Option<PathBuf>,
}

/// Where [`say!`] goes when stdout cannot be written.
pub(crate) fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("acectl: writing to standard output: {e}");
    std::process::exit(2);
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ACE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let code = match run(Cli::parse()).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("acectl: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

async fn run(cli: Cli) -> Result<i32> {
    match cli.cmd {
        Cmd::Db {
            cmd: DbCmd::Migrate(db),
        } => {
            let mut client = ace_core::db::connect(&db.database_url).await?;
            let report = ace_core::db::migrate(&mut client).await?;
            if report.applied.is_empty() {
                say!("schema up to date");
            }
            for m in report.applied {
                say!("applied {m}");
            }
            for g in report.restored_grants {
                say!("restored grant: {g}");
            }
        }
        Cmd::Db {
            cmd: DbCmd::Provision(args),
        } => {
            for line in provision::provision(&args).await? {
                say!("{line}");
            }
        }
        Cmd::Nats {
            cmd:
                NatsCmd::Init {
                    nats,
                    ack_wait_secs,
                    replicas,
                },
        } => {
            let names = ace_core::nats::Names::new(&nats.prefix)?;
            let client = connect_nats(&nats).await?;
            let js = async_nats::jetstream::new(client);
            let opts = ace_core::nats::InitOptions {
                ack_wait: Duration::from_secs(ack_wait_secs),
                replicas,
                ..Default::default()
            };
            ace_core::nats::init(&js, &names, &opts).await?;
            say!(
                "streams {}, {}, {}, {} and consumer {} ready",
                names.intake_stream(),
                names.acks_stream(),
                names.dlq_stream(),
                names.checkpoints_stream(),
                ace_core::nats::WRITER_CONSUMER
            );
        }
        Cmd::Nats {
            cmd:
                NatsCmd::AddUser {
                    name,
                    kind,
                    seed_out,
                    db,
                },
        } => say!(
            "{}",
            nats_users::add_user(&db.database_url, &name, &kind, &seed_out).await?
        ),
        Cmd::Nats {
            cmd:
                NatsCmd::Render {
                    out,
                    prefix,
                    reload_pid,
                    db,
                },
        } => say!(
            "{}",
            nats_users::render(&db.database_url, &prefix, &out, reload_pid).await?
        ),
        Cmd::LedgerKey {
            cmd: LedgerKeyCmd::Generate { out, origin },
        } => {
            let signer = NoteSigner::generate(&origin).context("generating the ledger key")?;
            keyfile::write_secret(&out, &format!("{}\n", signer.to_key_file()))?;
            say!("{}", signer.verifier_key());
        }
        Cmd::Producer { cmd } => return producer_cmd(cmd).await,
        Cmd::Key { cmd } => return key_cmd(cmd).await,
        Cmd::Sign(a) => {
            let key = keyfile::read_signing_key(&a.key)?;
            let payload = std::fs::read(&a.statement)
                .with_context(|| format!("reading {}", a.statement.display()))?;
            let env = Envelope::sign(&a.payload_type, &payload, &key);
            let json = env.to_json();
            match a.out {
                Some(out) => std::fs::write(&out, &json)
                    .with_context(|| format!("writing {}", out.display()))?,
                None => say!("{}", String::from_utf8_lossy(&json)),
            }
        }
        Cmd::Publish(a) => return publish::run(a).await,
        Cmd::Verify { cmd } => return Ok(verify::run(cmd).await),
        Cmd::Audit(a) => return Ok(audit::run(a).await),
        Cmd::Policy { cmd } => return policy::run(cmd),
        Cmd::Collect { cmd } => return Ok(collect::run(cmd)),
        Cmd::Snapshot(a) => return Ok(state::snapshot(a).await),
        Cmd::State { cmd } => return Ok(state::run(cmd).await),
    }
    Ok(0)
}

async fn producer_cmd(cmd: ProducerCmd) -> Result<i32> {
    let parse = |id: &str| ProducerId::parse(id).with_context(|| format!("producer id {id:?}"));
    match cmd {
        ProducerCmd::Add {
            id,
            key_out,
            public_key,
            nats_seed_out,
            nats,
            db,
        } => {
            let id = parse(&id)?;
            let mut c = ace_core::db::connect(&db.database_url).await?;
            let added = registry::add_producer(&mut c, &id).await?;
            say!(
                "producer {id} {}",
                if added { "added" } else { "already registered" }
            );
            let vk = match (key_out, public_key) {
                // A rerun finds the key file of the first run: the same key, not a new one.
                (Some(out), _) if out.exists() => {
                    Some(keyfile::read_signing_key(&out)?.verifying_key())
                }
                (Some(out), _) => Some(new_signing_key(&out)?),
                (None, Some(hexkey)) => Some(keyfile::parse_public_key(&hexkey)?),
                (None, None) => None,
            };
            if let Some(vk) = vk {
                match registry::add_key(&mut c, &id, &vk, None, None).await? {
                    registry::KeyAdded::Added(k) => say!("key {k} added"),
                    registry::KeyAdded::Already(k) => say!("key {k} already registered"),
                }
            }
            if let Some(seed_out) = nats_seed_out {
                say!(
                    "{}",
                    nats_users::add_user(&db.database_url, id.as_str(), "producer", &seed_out)
                        .await?
                );
            }
            if let Some(said) = nats.apply(&db.database_url).await? {
                say!("{said}");
            }
        }
        ProducerCmd::Suspend {
            id,
            reason,
            nats,
            db,
        } => set_status(parse(&id)?, true, &reason, &nats, &db).await?,
        ProducerCmd::Resume {
            id,
            reason,
            nats,
            db,
        } => set_status(parse(&id)?, false, &reason, &nats, &db).await?,
    }
    Ok(0)
}

/// Suspends or resumes a producer, then re-renders NATS' authorization when asked to.
async fn set_status(
    id: ProducerId,
    suspend: bool,
    reason: &str,
    nats: &registry::NatsSync,
    db: &DbArgs,
) -> Result<()> {
    let mut c = ace_core::db::connect(&db.database_url).await?;
    let changed = registry::set_suspended(&mut c, &id, suspend, reason).await?;
    let said = match (suspend, changed) {
        (true, true) => "suspended",
        (true, false) => "was already suspended",
        (false, true) => "resumed",
        (false, false) => "was not suspended",
    };
    say!("producer {id} {said}");
    if let Some(said) = nats.apply(&db.database_url).await? {
        say!("{said}");
    }
    Ok(())
}

/// A fresh producer signing key, its seed written (hex, 0600) to `out`.
fn new_signing_key(out: &std::path::Path) -> Result<ed25519_dalek::VerifyingKey> {
    let sk = ed25519_dalek::SigningKey::generate(&mut rand_core::OsRng);
    keyfile::write_secret(out, &format!("{}\n", hex::encode(sk.to_bytes())))?;
    Ok(sk.verifying_key())
}

async fn key_cmd(cmd: KeyCmd) -> Result<i32> {
    let parse = |id: &str| ProducerId::parse(id).with_context(|| format!("producer id {id:?}"));
    match cmd {
        KeyCmd::Add {
            producer,
            key,
            valid_from,
            valid_until,
            db,
        } => {
            let producer = parse(&producer)?;
            let from = parse_time("--valid-from", valid_from.as_deref())?;
            let until = parse_time("--valid-until", valid_until.as_deref())?;
            let vk = key.verifying_key()?;
            let mut c = ace_core::db::connect(&db.database_url).await?;
            match registry::add_key(&mut c, &producer, &vk, from, until).await? {
                registry::KeyAdded::Added(k) => say!("{k}"),
                registry::KeyAdded::Already(k) => {
                    eprintln!("key {k} is already registered to {producer}");
                    say!("{k}");
                }
            }
        }
        KeyCmd::Rotate {
            producer,
            key,
            overlap,
            db,
        } => {
            let producer = parse(&producer)?;
            let overlap = registry::parse_duration(&overlap).context("--overlap")?;
            let vk = key.verifying_key()?;
            let mut c = ace_core::db::connect(&db.database_url).await?;
            let r = registry::rotate_key(&mut c, &producer, &vk, overlap).await?;
            for (k, until) in &r.retiring {
                eprintln!(
                    "key {k} stays valid until {}",
                    until.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                );
            }
            match r.new {
                registry::KeyAdded::Added(k) | registry::KeyAdded::Already(k) => say!("{k}"),
            }
        }
        KeyCmd::Revoke { keyid, reason, db } => {
            let keyid = KeyId::parse(&keyid).with_context(|| format!("keyid {keyid:?}"))?;
            let mut c = ace_core::db::connect(&db.database_url).await?;
            let (now, at) = registry::revoke_key(&mut c, &keyid, &reason).await?;
            let at = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            if now {
                say!("revoked {keyid} at {at}");
            } else {
                say!("key {keyid} was already revoked at {at}");
            }
        }
    }
    Ok(0)
}

fn parse_time(flag: &str, v: Option<&str>) -> Result<Option<chrono::DateTime<chrono::Utc>>> {
    v.map(|s| {
        chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| t.with_timezone(&chrono::Utc))
            .with_context(|| format!("{flag} {s:?} is not an RFC 3339 time"))
    })
    .transpose()
}

async fn connect_nats(n: &NatsArgs) -> Result<async_nats::Client> {
    Ok(ace_core::nats::connect(&ace_core::nats::ConnectOptions {
        url: n.nats_url.clone(),
        creds_file: n.nats_creds.clone(),
        nkey_file: n.nats_nkey_file.clone(),
        name: "acectl".into(),
        tls: ace_core::nats::Tls::new(
            n.nats_tls_ca_file.clone(),
            n.nats_tls_cert_file.clone(),
            n.nats_tls_key_file.clone(),
        )?,
    })
    .await?)
}
