//! The writer's Prometheus metrics. Every figure is counted where the event happens;
//! nothing here is computed for show.

use prometheus::{
    exponential_buckets, Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Label used for subjects that name no registered producer, so that a flood of bogus
/// subjects cannot grow the label set.
pub const UNKNOWN_PRODUCER_LABEL: &str = "_unknown";

pub struct Metrics {
    registry: Registry,
    pub envelopes: IntCounterVec,
    pub rejections: IntCounterVec,
    pub dlq_items: IntCounter,
    pub dedupe_hits: IntCounter,
    pub batch_size: Histogram,
    pub batch_duration: Histogram,
    pub publish_to_commit: HistogramVec,
    pub tree_size: IntGauge,
    pub block_height: IntGauge,
    pub leader: IntGauge,
    pub transient_errors: IntCounterVec,
    pub ack_failures: IntCounter,
    pub policy_decisions: IntCounterVec,
    pub policy_rules: IntCounterVec,
    pub policy_reloads: IntCounterVec,
    pub policy_info: IntGaugeVec,
    pub policy_file_refused: IntGauge,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(r: &Registry, c: T) -> T {
    // Names are static and distinct, so registration cannot collide.
    let _ = r.register(Box::new(c.clone()));
    c
}

impl Metrics {
    pub fn new() -> Result<Metrics, prometheus::Error> {
        let r = Registry::new();
        let m = Metrics {
            envelopes: register(
                &r,
                IntCounterVec::new(
                    Opts::new("ace_writer_envelopes_total", "Envelopes settled, by producer and outcome (accepted, duplicate, rejected)"),
                    &["producer", "outcome"],
                )?,
            ),
            rejections: register(
                &r,
                IntCounterVec::new(
                    Opts::new("ace_writer_rejections_total", "Rejected envelopes by rejection code"),
                    &["code"],
                )?,
            ),
            dlq_items: register(
                &r,
                IntCounter::new("ace_writer_dlq_items_total", "DLQ rows written")?,
            ),
            dedupe_hits: register(
                &r,
                IntCounter::new("ace_writer_dedupe_hits_total", "Envelopes whose digest was already in the log or earlier in the batch")?,
            ),
            batch_size: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("ace_writer_batch_size", "Messages per committed batch")
                        .buckets(exponential_buckets(1.0, 2.0, 15)?),
                )?,
            ),
            batch_duration: register(
                &r,
                Histogram::with_opts(
                    HistogramOpts::new("ace_writer_batch_duration_seconds", "From a batch taken off the intake to its commit (both pipeline stages)")
                        .buckets(exponential_buckets(0.001, 2.0, 15)?),
                )?,
            ),
            publish_to_commit: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new("ace_writer_publish_to_commit_seconds", "From the producer's Ace-Published-At to the batch's commit")
                        .buckets(exponential_buckets(0.001, 2.0, 18)?),
                    &["producer"],
                )?,
            ),
            tree_size: register(&r, IntGauge::new("ace_writer_tree_size", "Entries in the log")?),
            block_height: register(&r, IntGauge::new("ace_writer_block_height", "Height of the latest block")?),
            leader: register(&r, IntGauge::new("ace_writer_leader", "1 while this writer holds the sequencer lock")?),
            transient_errors: register(
                &r,
                IntCounterVec::new(
                    Opts::new("ace_writer_transient_errors_total", "Transient faults, by component (postgres, nats)"),
                    &["component"],
                )?,
            ),
            ack_failures: register(
                &r,
                IntCounter::new("ace_writer_jetstream_ack_failures_total", "JetStream acks that failed after commit (the message is redelivered and deduplicated)")?,
            ),
            policy_decisions: register(
                &r,
                IntCounterVec::new(
                    Opts::new("ace_writer_policy_decisions_total", "Policy decisions on verified envelopes, by outcome (allow, warn, deny), counted when their batch commits"),
                    &["outcome"],
                )?,
            ),
            policy_rules: register(
                &r,
                IntCounterVec::new(
                    Opts::new("ace_writer_policy_rule_verdicts_total", "Each policy rule's verdicts (pass, warn, deny), by rule id; rules that do not apply are not counted"),
                    &["rule", "verdict"],
                )?,
            ),
            policy_reloads: register(
                &r,
                IntCounterVec::new(
                    Opts::new("ace_writer_policy_reloads_total", "Policy file reloads, by result (applied, refused)"),
                    &["result"],
                )?,
            ),
            policy_info: register(
                &r,
                IntGaugeVec::new(
                    Opts::new("ace_writer_policy_info", "1 for the policy version in force"),
                    &["version"],
                )?,
            ),
            policy_file_refused: register(
                &r,
                IntGauge::new("ace_writer_policy_file_refused", "1 while the policy file on disk is invalid or unreadable and an older policy stays in force")?,
            ),
            registry: r,
        };
        Ok(m)
    }

    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let enc = TextEncoder::new();
        if let Err(e) = enc.encode(&self.registry.gather(), &mut buf) {
            return format!("# encoding metrics failed: {e}\n");
        }
        String::from_utf8_lossy(&buf).into_owned()
    }
}
