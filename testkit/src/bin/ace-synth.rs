//! ace-synth: load a ledger database with synthetic entries, fast, in the writer's exact
//! row shapes (see `ace_testkit::synth`). For tests and benchmarks, never production.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ace_core::checkpoint::NoteSigner;
use ace_testkit::synth::{load_with_progress, SynthOptions};
use anyhow::{Context, Result};
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "ace-synth",
    version,
    about = "Append synthetic, really signed entries to an ACE Ledger database (tests and benchmarks)"
)]
struct Args {
    /// Postgres DSN of a superuser or the owner (producers and keys are registered too).
    #[arg(long, env = "ACE_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// The ledger's signing key file (as `acectl ledger-key generate` writes it); its name is
    /// the checkpoints' origin.
    #[arg(long, env = "ACE_LEDGER_KEY_FILE")]
    ledger_key: PathBuf,
    /// Entries to append.
    #[arg(long)]
    entries: u64,
    /// Entries per block.
    #[arg(long, default_value_t = 1000)]
    block_size: u64,
    /// Synthetic producers (synth-0 ..), each with a deterministic key.
    #[arg(long, default_value_t = 8)]
    producers: u32,
    /// Seed of the producer keys and statements.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Entries per database transaction (rounded up to whole blocks).
    #[arg(long, default_value_t = 50_000)]
    entries_per_transaction: u64,
    /// Connections writing consecutive transactions concurrently (committed in order).
    #[arg(long, default_value_t = 2)]
    connections: usize,
    /// Skip the per-row foreign-key checks (session_replication_role = replica; needs a
    /// superuser). The rows satisfy them by construction.
    #[arg(long)]
    skip_fk_checks: bool,
    /// Apply the migrations first (as `acectl db migrate` does).
    #[arg(long)]
    migrate: bool,
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.ledger_key)
        .with_context(|| format!("reading the ledger key file {}", args.ledger_key.display()))?;
    let signer = NoteSigner::parse_key_file(&text)
        .with_context(|| format!("ledger key file {}", args.ledger_key.display()))?;
    let mut clients = Vec::new();
    for _ in 0..args.connections.max(1) {
        clients.push(ace_core::db::connect(&args.database_url).await?);
    }
    if args.migrate {
        let Some(first) = clients.first_mut() else {
            anyhow::bail!("--connections must be at least 1");
        };
        let report = ace_core::db::migrate(first).await?;
        for m in report.applied {
            eprintln!("applied {m}");
        }
    }
    let opts = SynthOptions {
        entries: args.entries,
        block_size: args.block_size,
        producers: args.producers,
        seed: args.seed,
        entries_per_transaction: args.entries_per_transaction,
        skip_foreign_key_checks: args.skip_fk_checks,
        key_events: true,
    };
    let mut last_report = Instant::now();
    let report = load_with_progress(&mut clients, &signer, &opts, |p| {
        if last_report.elapsed() >= Duration::from_secs(5) || p.entries_done == p.entries_total {
            last_report = Instant::now();
            let secs = p.elapsed.as_secs_f64().max(1e-9);
            eprintln!(
                "ace-synth: {} / {} entries ({:.1}%), {:.0} entries/s, {:.0} s",
                p.entries_done,
                p.entries_total,
                100.0 * p.entries_done as f64 / p.entries_total.max(1) as f64,
                p.entries_done as f64 / secs,
                secs
            );
        }
    })
    .await
    .with_context(|| format!("loading {}", ace_core::db::describe_url(&args.database_url)))?;
    println!(
        "appended {} entries (indexes {}..{}) in {} blocks{}; tree size {}, root {}, height {}",
        report.entries,
        report.first_index,
        report.tree_size,
        report.blocks,
        if report.wrote_genesis {
            " after genesis"
        } else {
            ""
        },
        report.tree_size,
        hex::encode(report.root_hash),
        report.height
    );
    println!(
        "elapsed {:.1} s, {:.0} entries/s",
        report.elapsed.as_secs_f64(),
        report.entries_per_sec()
    );
    Ok(())
}
