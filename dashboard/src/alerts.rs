//! Alert hooks: the conditions of prometheus/ace-alerts.yml, evaluated by the dashboard
//! itself for teams without Prometheus, with a webhook POST when one starts firing and
//! when it resolves. The same loop sets the gauges the Prometheus rules watch.
//!
//! A condition fires once it has held for its `for` duration; an unknown value (NATS or
//! a writer unreachable) neither starts nor resolves it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;

use crate::config::AlertThresholds;
use crate::figures::Health;

/// One evaluation's conditions: alert name → (holding?, value, threshold, summary).
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    pub name: String,
    /// None when the input could not be read.
    pub holds: Option<bool>,
    pub value: f64,
    pub threshold: f64,
    pub hold_for: Duration,
    pub summary: String,
}

/// The conditions for one reading of the figures.
pub fn conditions(h: &Health, leaders: Option<i64>, t: &AlertThresholds) -> Vec<Condition> {
    let mut v = vec![Condition {
        name: "AceDlqOpenItems".into(),
        holds: Some(h.dlq_open > t.dlq_open),
        value: h.dlq_open as f64,
        threshold: t.dlq_open as f64,
        hold_for: t.dlq_open_for,
        summary: format!("{} open DLQ items (threshold {})", h.dlq_open, t.dlq_open),
    }];
    for s in &h.sinks {
        v.push(Condition {
            name: format!("AceAnchorLag:{}", s.sink),
            holds: Some(s.lag_blocks > t.anchor_lag_blocks),
            value: s.lag_blocks as f64,
            threshold: t.anchor_lag_blocks as f64,
            hold_for: t.anchor_lag_for,
            summary: format!(
                "sink {} is {} blocks behind (anchored {}, threshold {})",
                s.sink, s.lag_blocks, s.anchored_height, t.anchor_lag_blocks
            ),
        });
    }
    let age = h.head.as_ref().map(|b| b.age_secs).unwrap_or(0);
    v.push(Condition {
        name: "AceIntakeStalled".into(),
        holds: h
            .intake_pending
            .map(|p| p > 0 && age as u64 > t.stall.as_secs()),
        value: age as f64,
        threshold: t.stall.as_secs() as f64,
        hold_for: t.stall_for,
        summary: format!(
            "{} intake messages waiting and no block sealed for {age} s",
            h.intake_pending
                .map(|p| p.to_string())
                .unwrap_or_else(|| "an unknown number of".into())
        ),
    });
    v.push(Condition {
        name: "AceWriterWithoutLeader".into(),
        holds: leaders.map(|n| n < 1),
        value: leaders.unwrap_or(0) as f64,
        threshold: 1.0,
        hold_for: t.no_leader_for,
        summary: "no configured writer holds the sequencer lock: nothing is being appended".into(),
    });
    v
}

/// The webhook's body.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Notice {
    pub alert: String,
    /// "firing" or "resolved".
    pub status: &'static str,
    pub summary: String,
    pub value: f64,
    pub threshold: f64,
    /// RFC 3339.
    pub at: String,
    pub runbook: &'static str,
}

const RUNBOOK: &str = "docs/dashboard.md#alerts";

/// Remembers since when each condition holds, and which fire.
#[derive(Debug, Default)]
pub struct Tracker {
    since: BTreeMap<String, Instant>,
    firing: BTreeMap<String, bool>,
}

impl Tracker {
    /// Feeds one evaluation; returns the notices to send (state changes only).
    pub fn update(&mut self, now: Instant, conds: &[Condition]) -> Vec<Notice> {
        let mut out = Vec::new();
        for c in conds {
            let Some(holds) = c.holds else { continue };
            let was = self.firing.get(&c.name).copied().unwrap_or(false);
            let fires = if holds {
                let since = *self.since.entry(c.name.clone()).or_insert(now);
                now.duration_since(since) >= c.hold_for
            } else {
                self.since.remove(&c.name);
                false
            };
            if fires != was {
                out.push(Notice {
                    alert: c.name.clone(),
                    status: if fires { "firing" } else { "resolved" },
                    summary: c.summary.clone(),
                    value: c.value,
                    threshold: c.threshold,
                    at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    runbook: RUNBOOK,
                });
            }
            self.firing.insert(c.name.clone(), fires);
        }
        out
    }

    pub fn firing(&self) -> Vec<String> {
        self.firing
            .iter()
            .filter(|(_, f)| **f)
            .map(|(n, _)| n.clone())
            .collect()
    }
}

/// Evaluates until `stop`, every `cfg.alert_interval`.
pub async fn run(state: Arc<crate::web::AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tracker = Tracker::default();
    let mut tick = tokio::time::interval(state.cfg.alert_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let m = &state.metrics;
        let health = match crate::figures::health(&state.db, &state.intake.js, &state.names).await {
            Ok(h) => h,
            Err(e) => {
                m.figures_up.set(0);
                tracing::warn!(error = %e, "alert evaluation: cannot read the figures; alerts keep their state");
                continue;
            }
        };
        m.figures_up.set(1);
        let writers = state.writer_scrapes().await;
        let figures = crate::figures::writer_figures(&writers);
        // An unreachable writer is not a leader: with every configured writer down, none
        // holds the lock (0), which is what the alert is for. Only without configured
        // writers is the count unknown.
        let leaders = (!writers.is_empty()).then_some(figures.leaders);
        m.dlq_open.set(health.dlq_open);
        for s in &health.sinks {
            m.anchor_lag.with_label_values(&[&s.sink]).set(s.lag_blocks);
        }
        m.last_block_age
            .set(health.head.as_ref().map(|h| h.age_secs).unwrap_or(0));
        if let Some(p) = health.intake_pending {
            m.intake_pending.set(p as i64);
        }
        if let Some(l) = leaders {
            m.writer_leaders.set(l);
        }
        m.sessions.set(state.sessions.count() as i64);
        let conds = conditions(&health, leaders, &state.cfg.alerts);
        let notices = tracker.update(Instant::now(), &conds);
        for c in &conds {
            let firing = tracker.firing().contains(&c.name);
            m.alerts_firing
                .with_label_values(&[&c.name])
                .set(i64::from(firing));
        }
        for n in notices {
            tracing::warn!(alert = %n.alert, status = n.status, summary = %n.summary, "alert");
            if let Some(url) = &state.cfg.alert_webhook {
                let sent = state
                    .http
                    .post(url.expose())
                    .timeout(Duration::from_secs(5))
                    .json(&n)
                    .send()
                    .await
                    .map_err(|e| e.without_url().to_string())
                    .and_then(|r| {
                        if r.status().is_success() {
                            Ok(())
                        } else {
                            Err(format!("answered {}", r.status()))
                        }
                    });
                match sent {
                    Ok(()) => m.webhook.with_label_values(&["ok"]).inc(),
                    Err(e) => {
                        m.webhook.with_label_values(&["failed"]).inc();
                        // The URL may hold a token: it is not logged.
                        tracing::warn!(alert = %n.alert, error = %e, "alert webhook (ACE_DASHBOARD_ALERT_WEBHOOK_URL) failed");
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::figures::{Head, SinkLag};

    fn thresholds() -> AlertThresholds {
        crate::Config::with_defaults(Default::default(), Default::default()).alerts
    }

    fn health(dlq_open: i64, lag: i64, age: i64, pending: Option<u64>) -> Health {
        Health {
            head: Some(Head {
                height: 50,
                tree_size: 500,
                sealed_at: chrono::Utc::now(),
                age_secs: age,
            }),
            dlq_open,
            sinks: vec![SinkLag {
                sink: "tsa".into(),
                anchored_height: 50 - lag,
                lag_blocks: lag,
                last_receipt: chrono::Utc::now(),
            }],
            intake_pending: pending,
            pending_error: None,
        }
    }

    #[test]
    fn alerts_fire_after_holding_and_resolve() {
        let t = thresholds();
        let mut tr = Tracker::default();
        let t0 = Instant::now();
        let bad = conditions(&health(150, 11, 500, Some(3)), Some(0), &t);
        assert!(
            tr.update(t0, &bad).is_empty(),
            "nothing fires before its `for`"
        );
        let n = tr.update(t0 + Duration::from_secs(61), &bad);
        assert_eq!(
            n.iter().map(|n| n.alert.as_str()).collect::<Vec<_>>(),
            vec!["AceWriterWithoutLeader"]
        );
        let n = tr.update(t0 + Duration::from_secs(601), &bad);
        let mut names: Vec<&str> = n.iter().map(|n| n.alert.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            vec!["AceAnchorLag:tsa", "AceDlqOpenItems", "AceIntakeStalled"]
        );
        assert!(n.iter().all(|n| n.status == "firing"));
        // Unknown inputs change nothing.
        let unknown = conditions(&health(150, 11, 500, None), None, &t);
        assert!(tr
            .update(t0 + Duration::from_secs(602), &unknown)
            .is_empty());
        let good = conditions(&health(3, 0, 1, Some(0)), Some(1), &t);
        let n = tr.update(t0 + Duration::from_secs(700), &good);
        assert_eq!(n.len(), 4);
        assert!(n.iter().all(|n| n.status == "resolved"));
        assert!(tr.firing().is_empty());
    }

    #[test]
    fn a_condition_that_lapses_restarts_its_clock() {
        let t = thresholds();
        let mut tr = Tracker::default();
        let t0 = Instant::now();
        let bad = conditions(&health(150, 0, 0, Some(0)), Some(1), &t);
        let good = conditions(&health(10, 0, 0, Some(0)), Some(1), &t);
        tr.update(t0, &bad);
        tr.update(t0 + Duration::from_secs(200), &good);
        assert!(tr.update(t0 + Duration::from_secs(400), &bad).is_empty());
        assert!(tr.update(t0 + Duration::from_secs(650), &bad).is_empty());
        assert_eq!(tr.update(t0 + Duration::from_secs(701), &bad).len(), 1);
    }
}
