//! ace-anchor: loads its config from the environment and anchors until SIGTERM or SIGINT.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    ace_core::service::init_logging();
    let config = ace_anchor::Config::from_env().context("anchor configuration")?;
    let stop = ace_core::service::stop_on_signal("abandoning deliveries in flight")
        .context("installing the signal handlers")?;
    ace_anchor::run(config, stop).await?;
    Ok(())
}
