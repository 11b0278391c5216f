//! Fault-injection drill: `ACE_WRITER_CRASH_AT=<point>:<n>` makes the writer binary abort
//! (no destructors, no flush: as abrupt as SIGKILL) the n-th time it reaches `<point>`,
//! so that a test, or an operator rehearsing recovery, can kill it at the exact step of
//! the pipeline they want to prove safe. Unset (always, in production) it costs one
//! atomic load per step. Only `main` arms it; the library never reads the environment.
//!
//! Points, in pipeline order: `fetched` (a batch taken off the intake, nothing decided),
//! `parsed` (envelopes parsed, signatures not yet verified), `written` (every row written
//! in the open transaction, not committed), `committed` (committed in Postgres, nothing
//! acked on JetStream), `acked` (acked on JetStream, producer acks not yet published).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Point {
    Fetched,
    Parsed,
    Written,
    Committed,
    Acked,
}

impl Point {
    pub const ALL: [Point; 5] = [
        Point::Fetched,
        Point::Parsed,
        Point::Written,
        Point::Committed,
        Point::Acked,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Point::Fetched => "fetched",
            Point::Parsed => "parsed",
            Point::Written => "written",
            Point::Committed => "committed",
            Point::Acked => "acked",
        }
    }
}

static ARMED: OnceLock<(Point, AtomicU64)> = OnceLock::new();

/// Parses `<point>:<n>` (n ≥ 1).
pub fn parse(spec: &str) -> Result<(Point, u64), String> {
    let (p, n) = spec
        .split_once(':')
        .ok_or_else(|| format!("{spec:?} is not <point>:<n>"))?;
    let point = Point::ALL
        .into_iter()
        .find(|x| x.as_str() == p)
        .ok_or_else(|| {
            format!("{p:?} is not a crash point (fetched, parsed, written, committed, acked)")
        })?;
    let n: u64 = n
        .parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{n:?} is not a count of at least 1"))?;
    Ok((point, n))
}

/// Arms the crash point (once per process).
pub fn arm(point: Point, n: u64) {
    let _ = ARMED.set((point, AtomicU64::new(n)));
}

/// Called at each point: aborts the process if this is the armed point's n-th visit.
pub fn reached(point: Point) {
    if let Some((p, left)) = ARMED.get() {
        if *p == point && left.fetch_sub(1, Ordering::SeqCst) == 1 {
            eprintln!(
                "ACE_WRITER_CRASH_AT: aborting at crash point {}",
                point.as_str()
            );
            std::process::abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_parsed_and_bad_ones_named() {
        assert_eq!(parse("committed:3"), Ok((Point::Committed, 3)));
        assert!(parse("committed").unwrap_err().contains("<point>:<n>"));
        assert!(parse("midway:1").unwrap_err().contains("not a crash point"));
        assert!(parse("acked:0").unwrap_err().contains("at least 1"));
    }
}
