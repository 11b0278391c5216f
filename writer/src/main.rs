//! ace-writer: loads its config from the environment and runs until SIGTERM or SIGINT.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ace_core::service::init_logging();
    let config = ace_writer::Config::from_env().context("writer configuration")?;
    let stop = ace_core::service::stop_on_signal("finishing the current batch")
        .context("installing the signal handlers")?;
    ace_writer::run(config, stop).await?;
    Ok(())
}
