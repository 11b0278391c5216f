//! ace-writer: loads its config from the environment and runs until SIGTERM or SIGINT.

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
    let config = ace_writer::Config::from_env().context("writer configuration")?;
    let (tx, rx) = tokio::sync::watch::channel(false);
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: finishing the current batch, then stopping"),
            _ = int.recv() => tracing::info!("SIGINT: finishing the current batch, then stopping"),
        }
        let _ = tx.send(true);
    });
    ace_writer::run(config, rx).await?;
    Ok(())
}
