//! ace-reader: loads its config from the environment and serves until SIGTERM or SIGINT.

use anyhow::Context;
use tokio::signal::unix::{signal, SignalKind};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ACE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        // Colour only on a terminal: escape codes in a log file help nobody.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
    let config = ace_reader::Config::from_env().context("reader configuration")?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing requests in flight, then stopping"),
            _ = int.recv() => tracing::info!("SIGINT: finishing requests in flight, then stopping"),
        }
        let _ = tx.send(true);
    });
    ace_reader::run(config, rx).await?;
    Ok(())
}
