//! The dashboard's own Prometheus metrics, and the gauges the alert rules
//! (prometheus/ace-alerts.yml) watch, set by the alert loop from Postgres and JetStream.

use prometheus::{Encoder, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder};

pub struct Metrics {
    registry: Registry,
    pub requests: IntCounterVec,
    pub logins: IntCounterVec,
    pub actions: IntCounterVec,
    pub sessions: IntGauge,
    pub dlq_open: IntGauge,
    pub anchor_lag: IntGaugeVec,
    pub last_block_age: IntGauge,
    pub intake_pending: IntGauge,
    pub writer_leaders: IntGauge,
    pub figures_up: IntGauge,
    pub alerts_firing: IntGaugeVec,
    pub webhook: IntCounterVec,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    // Names are static and distinct, so registration cannot collide.
    let _ = r.register(Box::new(c.clone()));
    c
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let r = Registry::new();
        let counter =
            |name: &str, help: &str, labels: &[&str]| -> Result<IntCounterVec, prometheus::Error> {
                Ok(register(
                    &r,
                    IntCounterVec::new(Opts::new(name, help), labels)?,
                ))
            };
        let gauge = |name: &str, help: &str| -> Result<IntGauge, prometheus::Error> {
            Ok(register(&r, IntGauge::new(name, help)?))
        };
        Ok(Metrics {
            requests: counter("ace_dashboard_http_requests_total", "HTTP requests by route template and status", &["route", "status"])?,
            logins: counter("ace_dashboard_logins_total", "Login attempts by result (ok, failed, rate_limited)", &["result"])?,
            actions: counter("ace_dashboard_actions_total", "Operator actions committed, by action (dlq.retry, dlq.bulk_retry, dlq.discard, login, logout)", &["action"])?,
            sessions: gauge("ace_dashboard_sessions", "Live operator sessions")?,
            dlq_open: gauge("ace_dashboard_dlq_open_items", "DLQ items with no retry or discard yet")?,
            anchor_lag: register(&r, IntGaugeVec::new(Opts::new("ace_dashboard_anchor_lag_blocks", "Blocks sealed after the sink's latest receipt"), &["sink"])?),
            last_block_age: gauge("ace_dashboard_last_block_age_seconds", "Seconds since the latest block was sealed")?,
            intake_pending: gauge("ace_dashboard_intake_pending", "Intake messages the writer has not yet taken or acked")?,
            writer_leaders: gauge("ace_dashboard_writer_leaders", "Configured writers reporting that they hold the sequencer lock")?,
            figures_up: gauge("ace_dashboard_figures_up", "1 when the last evaluation read Postgres; 0 when it failed (the other gauges then hold older values)")?,
            alerts_firing: register(&r, IntGaugeVec::new(Opts::new("ace_dashboard_alert_firing", "1 while the alert hook's condition has held long enough"), &["alert"])?),
            webhook: counter("ace_dashboard_alert_webhook_total", "Alert webhook deliveries by result (ok, failed)", &["result"])?,
            registry: r,
        })
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8_lossy(&buf).into_owned()
    }
}
