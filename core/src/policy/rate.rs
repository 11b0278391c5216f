//! Per-producer rate limits: one token bucket per (rule, producer), held by the active
//! writer. Buckets are settled in message order after the parallel checks, so the same
//! batch gives the same decisions whatever the thread count.
//!
//! Buckets survive policy reloads (a changed `burst` clamps the tokens held) but not a
//! writer restart or failover: a new leader starts every producer with a full bucket.

use std::collections::HashMap;

use super::{Check, Evaluation, Outcome, Policy};

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last_ms: i64,
}

#[derive(Debug, Default)]
pub struct RateLimiter {
    /// rule id → producer → bucket; nested so a lookup allocates nothing.
    buckets: HashMap<String, HashMap<String, Bucket>>,
}

impl RateLimiter {
    pub fn new() -> RateLimiter {
        RateLimiter::default()
    }

    /// Settle every pending rate limit of `e` at time `now_ms`: take one token per rule,
    /// or mark the rule violated when the bucket is empty. An envelope some other deny
    /// rule already refuses takes no token.
    pub fn settle(&mut self, policy: &Policy, producer: &str, e: &mut Evaluation, now_ms: i64) {
        let denied = e.verdicts.iter().any(|(i, o)| {
            matches!(o, Outcome::Violated(_)) && policy.rule(*i).mode == super::Mode::Deny
        });
        for (i, outcome) in e.verdicts.iter_mut() {
            if *outcome != Outcome::Pending {
                continue;
            }
            let rule = policy.rule(*i);
            let Check::RateLimit { rate, burst } = rule.check else {
                *outcome = Outcome::NotApplicable;
                continue;
            };
            if denied {
                *outcome = Outcome::NotApplicable;
                continue;
            }
            let per_rule = match self.buckets.get_mut(rule.id.as_str()) {
                Some(m) => m,
                None => self.buckets.entry(rule.id.clone()).or_default(),
            };
            let b = match per_rule.get_mut(producer) {
                Some(b) => b,
                None => per_rule.entry(producer.to_string()).or_insert(Bucket {
                    tokens: burst,
                    last_ms: now_ms,
                }),
            };
            let elapsed = (now_ms - b.last_ms).max(0) as f64 / 1000.0;
            b.tokens = (b.tokens + elapsed * rate).min(burst);
            b.last_ms = b.last_ms.max(now_ms);
            if b.tokens >= 1.0 {
                b.tokens -= 1.0;
                *outcome = Outcome::Pass;
            } else {
                *outcome = Outcome::Violated(format!(
                    "producer {producer} is over its rate limit of {rate} envelopes/s (burst {burst})"
                ));
            }
        }
    }
}
