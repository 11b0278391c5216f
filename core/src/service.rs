//! What every service binary does around its `run`: logging, and turning SIGTERM or SIGINT
//! into the stop signal `run` watches. Shared so that the services behave alike.

use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

/// Logs to stdout, filtered by `ACE_LOG` (default `info`), coloured only on a terminal:
/// escape codes in a log file help nobody.
pub fn init_logging() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("ACE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()))
        .init();
}

/// A receiver that turns true on the first SIGTERM or SIGINT, logging `draining` (what the
/// service finishes before it stops). Must be called inside a Tokio runtime.
///
/// # Errors
/// When a signal handler cannot be installed.
pub fn stop_on_signal(draining: &'static str) -> std::io::Result<watch::Receiver<bool>> {
    let (tx, rx) = watch::channel(false);
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = term.recv() => tracing::info!("SIGTERM: {draining}, then stopping"),
            _ = int.recv() => tracing::info!("SIGINT: {draining}, then stopping"),
        }
        let _ = tx.send(true);
    });
    Ok(rx)
}
