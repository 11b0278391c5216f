//! What a sink anchors next and when it retries: plain functions over its state.

use std::time::{Duration, Instant};

use crate::sink::Schedule;

/// Where a sink stands.
#[derive(Debug, Clone, Default)]
pub struct SinkState {
    /// Height of its last receipt.
    pub anchored: Option<u64>,
    /// Failed attempts since its last receipt.
    pub failures: u32,
    /// No attempt before this instant (backoff, or a `latest` schedule's interval).
    pub not_before: Option<Instant>,
}

/// The height to anchor next, if any. Genesis (height 0, the empty tree) is never
/// anchored. A sink with no receipt yet starts at the latest block (the log's history is
/// covered by consistency), as does one catching up after failures or one more than
/// `max_backlog` blocks behind: a long outage ends with one anchor, not a flood.
pub fn next_height(
    schedule: Schedule,
    s: &SinkState,
    latest: u64,
    max_backlog: u64,
) -> Option<u64> {
    if latest == 0 {
        return None;
    }
    match s.anchored {
        Some(done) if done >= latest => None,
        Some(done)
            if schedule == Schedule::EveryBlock
                && s.failures == 0
                && latest - done <= max_backlog =>
        {
            Some(done + 1)
        }
        _ => Some(latest),
    }
}

/// Delay before retry number `failures` (1 = the first retry): `min·2^(failures−1)` capped
/// at `max`, scaled by `jitter` in [0, 1] ("full jitter", so failing anchors spread out).
pub fn backoff(min: Duration, max: Duration, failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(30);
    let base = min.saturating_mul(1u32 << exp).min(max);
    // Never zero: a sink that keeps failing must not spin.
    base.mul_f64(jitter.clamp(0.0, 1.0))
        .max(min.min(Duration::from_millis(10)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(anchored: Option<u64>, failures: u32) -> SinkState {
        SinkState {
            anchored,
            failures,
            not_before: None,
        }
    }

    #[test]
    fn every_block_walks_the_log_and_jumps_after_trouble() {
        let every = Schedule::EveryBlock;
        assert_eq!(
            next_height(every, &st(None, 0), 0, 16),
            None,
            "genesis only"
        );
        assert_eq!(
            next_height(every, &st(None, 0), 500, 16),
            Some(500),
            "first run"
        );
        assert_eq!(next_height(every, &st(Some(7), 0), 9, 16), Some(8));
        assert_eq!(next_height(every, &st(Some(9), 0), 9, 16), None);
        assert_eq!(
            next_height(every, &st(Some(7), 1), 9, 16),
            Some(9),
            "after a failure"
        );
        assert_eq!(
            next_height(every, &st(Some(7), 0), 100, 16),
            Some(100),
            "backlog"
        );
        assert_eq!(
            next_height(every, &st(Some(84), 0), 100, 16),
            Some(85),
            "at the limit"
        );
        let latest = Schedule::Latest(Duration::from_secs(60));
        assert_eq!(next_height(latest, &st(Some(7), 0), 9, 16), Some(9));
        assert_eq!(next_height(latest, &st(Some(9), 0), 9, 16), None);
    }

    #[test]
    fn backoff_doubles_to_the_cap_and_jitters() {
        let (min, max) = (Duration::from_secs(1), Duration::from_secs(300));
        assert_eq!(backoff(min, max, 1, 1.0), Duration::from_secs(1));
        assert_eq!(backoff(min, max, 4, 1.0), Duration::from_secs(8));
        assert_eq!(backoff(min, max, 40, 1.0), max);
        assert_eq!(backoff(min, max, 4, 0.5), Duration::from_secs(4));
        assert_eq!(backoff(min, max, 4, 0.0), Duration::from_millis(10));
    }
}
