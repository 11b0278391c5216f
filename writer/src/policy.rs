//! The policy in force, and its hot reload.
//!
//! The policy file is read at start (an invalid one refuses the start). Afterwards it is
//! re-read on SIGHUP and, every `ACE_POLICY_POLL_MS`, when its bytes change. A new file is
//! compiled first: if it is valid it takes effect for the next batch; if not, the error
//! is logged with its line numbers, `ace_writer_policy_file_refused` is 1, and the old
//! policy stays in force. Each batch takes one snapshot, so a batch is decided by one
//! policy version, the one recorded with its entries.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use ace_core::policy::{version_of, Policy, PolicyError};
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use crate::metrics::Metrics;

/// Load the configured policy (or the built-in one) and keep it current until
/// `shutdown`. The receiver always holds a valid, compiled policy.
pub fn start(
    file: Option<PathBuf>,
    poll: Duration,
    metrics: Arc<Metrics>,
    shutdown: watch::Receiver<bool>,
) -> Result<watch::Receiver<Arc<Policy>>, PolicyError> {
    let initial = match &file {
        Some(path) => Policy::load(path)?,
        None => Policy::builtin(),
    };
    tracing::info!(
        version = initial.version(),
        file = file
            .as_ref()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "built-in".into()),
        rules = initial.rules().len(),
        "policy in force"
    );
    metrics
        .policy_info
        .with_label_values(&[initial.version()])
        .set(1);
    let (tx, rx) = watch::channel(Arc::new(initial));
    // A SIGHUP handler is installed even without a file: the default action would kill
    // the writer.
    let hangup = signal(SignalKind::hangup()).map_err(|source| PolicyError::Read {
        path: "SIGHUP handler".into(),
        source,
    })?;
    tokio::spawn(watch_file(file, poll, hangup, tx, metrics, shutdown));
    Ok(rx)
}

async fn watch_file(
    file: Option<PathBuf>,
    poll: Duration,
    mut hangup: tokio::signal::unix::Signal,
    tx: watch::Sender<Arc<Policy>>,
    metrics: Arc<Metrics>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut watcher = Watcher {
        refused: None,
        tx,
        metrics,
    };
    loop {
        let forced = tokio::select! {
            _ = hangup.recv() => true,
            _ = sleep_or_forever(poll) => false,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        match &file {
            Some(path) => watcher.check(path, forced),
            None if forced => tracing::info!(
                "SIGHUP: no policy file is configured (ACE_POLICY_FILE); the built-in policy stays in force"
            ),
            None => {}
        }
    }
}

async fn sleep_or_forever(poll: Duration) {
    if poll.is_zero() {
        std::future::pending::<()>().await;
    } else {
        tokio::time::sleep(poll).await;
    }
}

struct Watcher {
    /// What was last refused (file version, or the read error), so that an unchanged
    /// bad file is reported once, not every poll.
    refused: Option<String>,
    tx: watch::Sender<Arc<Policy>>,
    metrics: Arc<Metrics>,
}

impl Watcher {
    fn check(&mut self, path: &Path, forced: bool) {
        let current = self.tx.borrow().version().to_string();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                let why = format!("cannot read {}: {e}", path.display());
                self.refuse(why, &current, forced);
                return;
            }
        };
        let version = version_of(&bytes);
        if version == current {
            if forced {
                tracing::info!(version, "SIGHUP: the policy file is unchanged");
            }
            self.clear_refusal();
            return;
        }
        if !forced && self.refused.as_deref() == Some(version.as_str()) {
            return;
        }
        let parsed = String::from_utf8(bytes)
            .map_err(|e| format!("policy file {} is not UTF-8: {e}", path.display()))
            .and_then(|text| Policy::parse(&text).map_err(|e| e.in_file(path).to_string()));
        match parsed {
            Ok(policy) => {
                tracing::info!(
                    version = policy.version(),
                    previous = current,
                    rules = policy.rules().len(),
                    "policy reloaded; it applies from the next batch"
                );
                self.metrics.policy_info.reset();
                self.metrics
                    .policy_info
                    .with_label_values(&[policy.version()])
                    .set(1);
                self.metrics
                    .policy_reloads
                    .with_label_values(&["applied"])
                    .inc();
                self.clear_refusal();
                self.tx.send_replace(Arc::new(policy));
            }
            Err(why) => {
                self.refuse(why, &current, forced);
                self.refused = Some(version);
            }
        }
    }

    fn refuse(&mut self, why: String, current: &str, forced: bool) {
        self.metrics.policy_file_refused.set(1);
        if forced || self.refused.as_deref() != Some(why.as_str()) {
            self.metrics
                .policy_reloads
                .with_label_values(&["refused"])
                .inc();
            tracing::error!(
                in_force = current,
                error = %why,
                "policy file refused; the policy in force stays"
            );
        }
        self.refused = Some(why);
    }

    fn clear_refusal(&mut self) {
        if self.refused.take().is_some() {
            self.metrics.policy_file_refused.set(0);
        }
    }
}
