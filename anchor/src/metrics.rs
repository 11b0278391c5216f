//! The anchor's Prometheus metrics, each set where the event happens.

use prometheus::{
    Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// Receipts recorded, by sink and kind.
    pub receipts: IntCounterVec,
    /// Failed attempts, by sink and kind.
    pub failures: IntCounterVec,
    /// Blocks sealed since the sink's last receipt.
    pub lag_blocks: IntGaugeVec,
    /// Seconds since the oldest block not covered by the sink's receipts was sealed.
    pub lag_seconds: IntGaugeVec,
    /// Seconds one successful delivery took, by sink.
    pub send_seconds: HistogramVec,
    /// Height of the latest sealed block seen.
    pub latest_height: IntGauge,
    /// 1 while this process holds the anchoring lock.
    pub leader: IntGauge,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    // Names are static and distinct, so registration cannot collide.
    let _ = r.register(Box::new(c.clone()));
    c
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let r = Registry::new();
        Ok(Metrics {
            receipts: register(
                &r,
                IntCounterVec::new(
                    Opts::new("ace_anchor_receipts_total", "Receipts recorded, by sink and kind"),
                    &["sink", "kind"],
                )?,
            ),
            failures: register(
                &r,
                IntCounterVec::new(
                    Opts::new("ace_anchor_failures_total", "Failed anchoring attempts, by sink and kind"),
                    &["sink", "kind"],
                )?,
            ),
            lag_blocks: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("ace_anchor_lag_blocks", "Blocks sealed after the sink's last receipt"),
                    &["sink"],
                )?,
            ),
            lag_seconds: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("ace_anchor_lag_seconds", "Age of the oldest sealed block the sink's receipts do not cover (0 when none)"),
                    &["sink"],
                )?,
            ),
            send_seconds: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("ace_anchor_send_seconds", "Duration of successful deliveries, by sink")
                        .buckets(prometheus::exponential_buckets(0.001, 2.0, 16)?),
                    &["sink"],
                )?,
            ),
            latest_height: register(
                &r,
                IntGauge::new("ace_anchor_latest_height", "Height of the latest sealed block seen")?,
            ),
            leader: register(
                &r,
                IntGauge::new("ace_anchor_leader", "1 while this process holds the anchoring lock")?,
            ),
            registry: r,
        })
    }

    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        // Encoding gathered metrics into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}
