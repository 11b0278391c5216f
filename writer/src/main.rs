//! ace-writer: loads its config from the environment and runs until SIGTERM or SIGINT.

use anyhow::Context;

/// The writer parses and verifies on rayon threads and frees on the sequencer's: glibc
/// malloc spent about 15% of the verification stage's CPU on that (perf, the policy
/// benchmark); acectl's audit measured the same pattern.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ace_core::service::init_logging();
    let config = ace_writer::Config::from_env().context("writer configuration")?;
    if let Ok(spec) = std::env::var("ACE_WRITER_CRASH_AT") {
        let (point, n) = ace_writer::crashpoint::parse(&spec)
            .map_err(|e| anyhow::anyhow!("ACE_WRITER_CRASH_AT: {e}"))?;
        tracing::warn!(point = point.as_str(), n, "ACE_WRITER_CRASH_AT is set: this writer will abort at that step (a fault-injection drill)");
        ace_writer::crashpoint::arm(point, n);
    }
    let stop = ace_core::service::stop_on_signal("finishing the current batch")
        .context("installing the signal handlers")?;
    ace_writer::run(config, stop).await?;
    Ok(())
}
