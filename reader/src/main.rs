//! ace-reader: loads its config from the environment and serves until SIGTERM or SIGINT.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ace_core::service::init_logging();
    let config = ace_reader::Config::from_env().context("reader configuration")?;
    let stop = ace_core::service::stop_on_signal("finishing requests in flight")
        .context("installing the signal handlers")?;
    ace_reader::run(config, stop).await?;
    Ok(())
}
