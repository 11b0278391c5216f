//! The reader's Prometheus metrics, counted where requests are served.

use prometheus::{
    exponential_buckets, Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts,
    Registry, TextEncoder,
};

pub struct Metrics {
    registry: Registry,
    /// By route template (never the raw path, so clients cannot grow the label set) and status.
    pub requests: IntCounterVec,
    pub latency: HistogramVec,
    pub in_flight: IntGauge,
    /// Tile lookups by outcome (`hit`, `miss`).
    pub tile_cache: IntCounterVec,
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
            requests: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "ace_reader_http_requests_total",
                        "HTTP requests answered, by route template and status code",
                    ),
                    &["route", "status"],
                )?,
            ),
            latency: register(
                &r,
                HistogramVec::new(
                    HistogramOpts::new(
                        "ace_reader_http_request_duration_seconds",
                        "Time to answer, by route template",
                    )
                    .buckets(exponential_buckets(0.0001, 2.0, 17)?),
                    &["route"],
                )?,
            ),
            in_flight: register(
                &r,
                IntGauge::new("ace_reader_http_in_flight", "Requests being answered now")?,
            ),
            tile_cache: register(
                &r,
                IntCounterVec::new(
                    Opts::new(
                        "ace_reader_tile_cache_total",
                        "Tile lookups for proofs, by outcome (hit, miss)",
                    ),
                    &["outcome"],
                )?,
            ),
            registry: r,
        })
    }

    pub fn render(&self) -> Vec<u8> {
        let mut buf = Vec::new();
        // Encoding our own registry into a Vec cannot fail.
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        buf
    }
}
