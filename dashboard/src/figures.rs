//! The figures the overview shows and the alerts watch, read from Postgres, JetStream and
//! the services' `/metrics`. Every query is bounded by what happened recently (the last
//! hour's blocks and entries, one row per sink), never by the size of the log.

use std::collections::BTreeMap;

use ace_core::db::DbError;
use ace_core::nats::{Names, WRITER_CONSUMER};
use async_nats::jetstream;
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::db::Db;
use crate::error::DashError;
use crate::scrape::{quantile, Scrape};

/// Beyond this many entries in the last hour the chart counts per minute from block
/// sizes (all producers together) instead of grouping entries by producer.
pub const CHART_MAX_ENTRIES: i64 = 1_000_000;

#[derive(Debug, Clone, Serialize)]
pub struct Head {
    pub height: i64,
    pub tree_size: i64,
    pub sealed_at: DateTime<Utc>,
    pub age_secs: i64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SinkLag {
    pub sink: String,
    pub anchored_height: i64,
    pub lag_blocks: i64,
    pub last_receipt: DateTime<Utc>,
}

/// What the alerts watch (all from Postgres and JetStream).
#[derive(Debug, Clone, Serialize)]
pub struct Health {
    pub head: Option<Head>,
    pub dlq_open: i64,
    pub sinks: Vec<SinkLag>,
    /// Intake messages not yet taken or not yet acked by the writer; None when JetStream
    /// could not be asked (then `pending_error` says why).
    pub intake_pending: Option<u64>,
    pub pending_error: Option<String>,
}

fn ms_to_time(ms: i64) -> DateTime<Utc> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default()
}

pub async fn head(c: &tokio_postgres::Client) -> Result<Option<Head>, DashError> {
    let r = c
        .query_opt(
            "SELECT height, tree_size, sealed_at FROM ledger_blocks ORDER BY height DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(DbError::query("reading the latest block"))?;
    Ok(r.map(|r| {
        let sealed_at = ms_to_time(r.get(2));
        Head {
            height: r.get(0),
            tree_size: r.get(1),
            sealed_at,
            age_secs: (Utc::now() - sealed_at).num_seconds().max(0),
        }
    }))
}

pub async fn dlq_open(c: &tokio_postgres::Client) -> Result<i64, DashError> {
    Ok(c
        .query_one(
            "SELECT count(*) FROM dlq_items d WHERE NOT EXISTS (SELECT 1 FROM dlq_actions a WHERE a.dlq_id = d.id)",
            &[],
        )
        .await
        .map_err(DbError::query("counting open DLQ items"))?
        .get(0))
}

/// Each sink's latest receipt, one index probe per sink (a skip scan over
/// anchor_receipts_sink), and how far behind the head it is.
pub async fn sinks(
    c: &tokio_postgres::Client,
    head_height: i64,
) -> Result<Vec<SinkLag>, DashError> {
    let rows = c
        .query(
            "WITH RECURSIVE s AS ( \
               (SELECT sink, height, created_at FROM anchor_receipts ORDER BY sink, height DESC LIMIT 1) \
               UNION ALL \
               SELECT n.sink, n.height, n.created_at FROM s, LATERAL ( \
                 SELECT sink, height, created_at FROM anchor_receipts WHERE sink > s.sink \
                 ORDER BY sink, height DESC LIMIT 1) n \
             ) SELECT sink, height, created_at FROM s",
            &[],
        )
        .await
        .map_err(DbError::query("reading each sink's latest receipt"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let h: i64 = r.get(1);
            SinkLag {
                sink: r.get(0),
                anchored_height: h,
                lag_blocks: (head_height - h).max(0),
                last_receipt: r.get(2),
            }
        })
        .collect())
}

pub async fn intake_pending(js: &jetstream::Context, names: &Names) -> Result<u64, String> {
    let mut consumer: jetstream::consumer::PullConsumer = js
        .get_consumer_from_stream(WRITER_CONSUMER, names.intake_stream())
        .await
        .map_err(|e| {
            format!(
                "consumer {WRITER_CONSUMER} on {}: {e}",
                names.intake_stream()
            )
        })?;
    let info = consumer.info().await.map_err(|e| {
        format!(
            "consumer {WRITER_CONSUMER} on {}: {e}",
            names.intake_stream()
        )
    })?;
    Ok(info.num_pending + info.num_ack_pending as u64)
}

pub async fn health(db: &Db, js: &jetstream::Context, names: &Names) -> Result<Health, DashError> {
    let c = db.client().await?;
    let head = head(&c).await?;
    let dlq_open = dlq_open(&c).await?;
    let sinks = sinks(&c, head.as_ref().map(|h| h.height).unwrap_or(0)).await?;
    drop(c);
    let (intake_pending, pending_error) = match intake_pending(js, names).await {
        Ok(n) => (Some(n), None),
        Err(e) => (None, Some(e)),
    };
    Ok(Health {
        head,
        dlq_open,
        sinks,
        intake_pending,
        pending_error,
    })
}

/// Per-minute counts of the last hour, by producer.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Intake {
    /// Minute (unix ms of its start) → producer → accepted entries.
    pub accepted: BTreeMap<i64, BTreeMap<String, i64>>,
    /// Minute → producer → rejected envelopes.
    pub rejected: BTreeMap<i64, BTreeMap<String, i64>>,
    /// True when the hour held too many entries to group by producer; `accepted` then has
    /// the single producer "(all)".
    pub by_block: bool,
    pub since: i64,
}

pub async fn intake_last_hour(db: &Db, now_ms: i64) -> Result<Intake, DashError> {
    // The 60 minutes ending with the current one.
    let since = (now_ms / 60_000 - 59) * 60_000;
    let c = db.client().await?;
    // The newest block sealed before the hour: everything after it is this hour's.
    let first = c
        .query_opt(
            "SELECT tree_size FROM ledger_blocks WHERE sealed_at < $1 ORDER BY height DESC LIMIT 1",
            &[&since],
        )
        .await
        .map_err(DbError::query("finding the hour's first block"))?
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(0);
    let top = head(&c).await?.map(|h| h.tree_size).unwrap_or(0);
    let mut out = Intake {
        since,
        ..Intake::default()
    };
    if top - first > CHART_MAX_ENTRIES {
        out.by_block = true;
        let rows = c
            .query(
                "SELECT sealed_at / 60000 * 60000, sum(tree_size - first_index)::bigint FROM ledger_blocks \
                 WHERE tree_size > $1 AND sealed_at >= $2 GROUP BY 1",
                &[&first, &since],
            )
            .await
            .map_err(DbError::query("counting the hour's entries by block"))?;
        for r in rows {
            out.accepted
                .entry(r.get(0))
                .or_default()
                .insert("(all)".into(), r.get(1));
        }
    } else {
        let rows = c
            .query(
                "SELECT integrated_time / 60000 * 60000, producer, count(*) FROM ledger_entries \
                 WHERE idx >= $1 AND integrated_time >= $2 AND producer <> '_ledger' GROUP BY 1, 2",
                &[&first, &since],
            )
            .await
            .map_err(DbError::query("counting the hour's entries"))?;
        for r in rows {
            out.accepted
                .entry(r.get(0))
                .or_default()
                .insert(r.get(1), r.get(2));
        }
    }
    let since_t = ms_to_time(since);
    let rows = c
        .query(
            "SELECT (extract(epoch FROM received_at) * 1000)::bigint / 60000 * 60000, producer, count(*) \
             FROM dlq_items WHERE received_at >= $1 GROUP BY 1, 2",
            &[&since_t],
        )
        .await
        .map_err(DbError::query("counting the hour's rejections"))?;
    for r in rows {
        out.rejected
            .entry(r.get(0))
            .or_default()
            .insert(r.get(1), r.get(2));
    }
    Ok(out)
}

/// One writer as its metrics show it.
#[derive(Debug, Clone, Serialize)]
pub struct WriterView {
    pub url: String,
    /// "leader", "standby", or "unreachable: why".
    pub state: String,
    pub tree_size: Option<i64>,
}

/// Per-producer intake since the writers started, from their counters.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ProducerIntake {
    pub accepted: f64,
    pub duplicate: f64,
    pub rejected: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct WriterFigures {
    pub writers: Vec<WriterView>,
    pub leaders: i64,
    pub by_producer: BTreeMap<String, ProducerIntake>,
    pub accepted: f64,
    pub duplicate: f64,
    pub rejected: f64,
}

impl WriterFigures {
    /// Duplicates among envelopes that passed verification (accepted + duplicate).
    pub fn dedupe_ratio(&self) -> Option<f64> {
        let seen = self.accepted + self.duplicate;
        (seen > 0.0).then(|| self.duplicate / seen)
    }
}

/// Sums the writers' counters (a standby's are those of its own leadership spells), and
/// merges their latency histograms before taking quantiles.
pub fn writer_figures(scrapes: &[Scrape]) -> WriterFigures {
    let mut f = WriterFigures::default();
    let mut buckets: BTreeMap<String, BTreeMap<String, f64>> = BTreeMap::new();
    for s in scrapes {
        let state = match &s.result {
            Err(e) => format!("unreachable: {e}"),
            Ok(_) => match s.value("ace_writer_leader") {
                Some(v) if v >= 1.0 => {
                    f.leaders += 1;
                    "leader".into()
                }
                Some(_) => "standby".into(),
                None => "no ace_writer_leader metric: is this a writer?".into(),
            },
        };
        f.writers.push(WriterView {
            url: s.url.clone(),
            state,
            tree_size: s.value("ace_writer_tree_size").map(|v| v as i64),
        });
        for sample in s.samples() {
            match sample.name.as_str() {
                "ace_writer_envelopes_total" => {
                    let p = f
                        .by_producer
                        .entry(sample.label("producer").to_string())
                        .or_default();
                    match sample.label("outcome") {
                        "accepted" => {
                            p.accepted += sample.value;
                            f.accepted += sample.value;
                        }
                        "duplicate" => {
                            p.duplicate += sample.value;
                            f.duplicate += sample.value;
                        }
                        "rejected" => {
                            p.rejected += sample.value;
                            f.rejected += sample.value;
                        }
                        _ => {}
                    }
                }
                "ace_writer_publish_to_commit_seconds_bucket" => {
                    *buckets
                        .entry(sample.label("producer").to_string())
                        .or_default()
                        .entry(sample.label("le").to_string())
                        .or_default() += sample.value;
                }
                _ => {}
            }
        }
    }
    for (producer, les) in buckets {
        let b: Vec<(f64, f64)> = les
            .iter()
            .filter_map(|(le, c)| {
                let bound = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().ok()?
                };
                Some((bound, *c))
            })
            .collect();
        let p = f.by_producer.entry(producer).or_default();
        p.p50_ms = quantile(0.5, &b).map(|s| s * 1000.0);
        p.p99_ms = quantile(0.99, &b).map(|s| s * 1000.0);
    }
    f
}

/// Failed deliveries per sink, from the anchors' counters.
pub fn anchor_failures(scrapes: &[Scrape]) -> BTreeMap<String, f64> {
    let mut m = BTreeMap::new();
    for s in scrapes {
        for sample in s
            .samples()
            .iter()
            .filter(|x| x.name == "ace_anchor_failures_total")
        {
            *m.entry(sample.label("sink").to_string()).or_default() += sample.value;
        }
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scrape::parse;

    #[test]
    fn writers_are_summed_and_histograms_merged() {
        let leader = Scrape {
            url: "http://w1".into(),
            result: Ok(parse(
                "ace_writer_leader 1\nace_writer_tree_size 10\n\
                 ace_writer_envelopes_total{outcome=\"accepted\",producer=\"acme\"} 8\n\
                 ace_writer_envelopes_total{outcome=\"duplicate\",producer=\"acme\"} 2\n\
                 ace_writer_envelopes_total{outcome=\"rejected\",producer=\"evil\"} 5\n\
                 ace_writer_publish_to_commit_seconds_bucket{producer=\"acme\",le=\"0.1\"} 4\n\
                 ace_writer_publish_to_commit_seconds_bucket{producer=\"acme\",le=\"+Inf\"} 8\n",
            )),
        };
        let standby = Scrape {
            url: "http://w2".into(),
            result: Ok(parse(
                "ace_writer_leader 0\n\
                 ace_writer_publish_to_commit_seconds_bucket{producer=\"acme\",le=\"0.1\"} 4\n\
                 ace_writer_publish_to_commit_seconds_bucket{producer=\"acme\",le=\"+Inf\"} 4\n",
            )),
        };
        let down = Scrape {
            url: "http://w3".into(),
            result: Err("unreachable: connection refused".into()),
        };
        let f = writer_figures(&[leader, standby, down]);
        assert_eq!(f.leaders, 1);
        let states: Vec<&str> = f.writers.iter().map(|w| w.state.as_str()).collect();
        assert_eq!(
            states,
            vec![
                "leader",
                "standby",
                "unreachable: unreachable: connection refused"
            ]
        );
        assert_eq!(f.dedupe_ratio(), Some(0.2));
        let acme = &f.by_producer["acme"];
        assert_eq!((acme.accepted, acme.duplicate), (8.0, 2.0));
        // 8 of 12 within 0.1 s: the median is inside the first bucket.
        assert!(
            acme.p50_ms.is_some_and(|v| v > 0.0 && v <= 100.0),
            "{acme:?}"
        );
        assert_eq!(f.by_producer["evil"].rejected, 5.0);
    }
}
