//! SDF: the ledger's end-to-end scenario harness. [`run`] starts a whole stack in a clean
//! namespace ([`stack`]), runs the scenarios of a file ([`spec`]) against it in order
//! ([`runner`]), prints one line per scenario and a final `N passed, N failed`.

pub mod envelopes;
pub mod expect;
pub mod runner;
pub mod spec;
pub mod stack;

use std::io::Write;
use std::path::PathBuf;

pub use spec::SdfFile;
pub use stack::{Stack, StackOptions};

/// What a run ended with.
pub struct Summary {
    pub passed: usize,
    pub failed: usize,
}

pub struct RunOptions {
    pub file: PathBuf,
    /// Run only the scenarios whose name contains this.
    pub only: Option<String>,
    /// Keep the stack's directory (logs, keys, configs) even when every scenario passed.
    pub keep: bool,
    pub stack: StackOptions,
}

/// Why a run could not happen at all (as opposed to scenarios failing).
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Spec(#[from] spec::SpecError),
    #[error("starting the stack: {0}")]
    Stack(#[from] stack::StackError),
    #[error("no scenario's name contains {0:?}")]
    NothingSelected(String),
    #[error("{0}")]
    Runner(String),
}

/// Runs the file's scenarios, printing to `out` as it goes.
pub async fn run(opts: &RunOptions, out: &mut impl Write) -> Result<Summary, RunError> {
    let file = SdfFile::load(&opts.file)?;
    let selected: Vec<&spec::Scenario> = file
        .scenarios
        .iter()
        .filter(|s| {
            opts.only
                .as_ref()
                .is_none_or(|o| s.name.contains(o.as_str()))
        })
        .collect();
    if selected.is_empty() {
        return Err(RunError::NothingSelected(
            opts.only.clone().unwrap_or_default(),
        ));
    }
    let started = std::time::Instant::now();
    let mut stack = Stack::start(&file.stack, &opts.stack).await?;
    let _ = writeln!(
        out,
        "stack up in {:.1} s: database {}, prefix {}, nats {}, writer {}, reader {}, anchor {}, dashboard {} (state in {})",
        started.elapsed().as_secs_f64(),
        stack.db.name,
        stack.prefix,
        stack.nats.url(),
        stack.url("writer"),
        stack.url("reader"),
        stack.url("anchor"),
        stack.url("dashboard"),
        stack.dir.display()
    );
    let mut summary = Summary {
        passed: 0,
        failed: 0,
    };
    {
        let mut runner = runner::Runner::new(&mut stack).map_err(RunError::Runner)?;
        for sc in selected {
            let v = runner.scenario(sc).await;
            match &v.failure {
                None => {
                    summary.passed += 1;
                    let _ = writeln!(out, "ok    {:>5.1}s  {}", v.elapsed.as_secs_f64(), v.name);
                }
                Some(why) => {
                    summary.failed += 1;
                    let _ = writeln!(
                        out,
                        "FAIL  {:>5.1}s  {}\n      {}",
                        v.elapsed.as_secs_f64(),
                        v.name,
                        why.replace('\n', "\n      ")
                    );
                }
            }
            let _ = out.flush();
        }
    }
    let dir = stack.dir.clone();
    stack.stop().await;
    if summary.failed > 0 || opts.keep {
        let _ = writeln!(
            out,
            "the stack's logs, keys and configs are kept in {}",
            dir.display()
        );
    } else {
        let _ = std::fs::remove_dir_all(&dir);
    }
    let _ = writeln!(out, "{} passed, {} failed", summary.passed, summary.failed);
    Ok(summary)
}
