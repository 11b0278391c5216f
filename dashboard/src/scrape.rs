//! Reading the other services' `/metrics` (Prometheus text format 0.0.4): the writer's
//! intake counters, leadership and latency histograms, the anchor's failures. Only the
//! sample lines are parsed; a line that does not parse is skipped, not fatal, so a newer
//! service's extra syntax cannot blank the dashboard.

use std::collections::BTreeMap;
use std::time::Duration;

/// One sample: metric name, labels, value.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

impl Sample {
    pub fn label(&self, k: &str) -> &str {
        self.labels.get(k).map(String::as_str).unwrap_or("")
    }
}

fn parse_labels(s: &str) -> Option<(BTreeMap<String, String>, &str)> {
    // s starts after '{'
    let mut labels = BTreeMap::new();
    let mut rest = s;
    loop {
        rest = rest.trim_start_matches([' ', ',']);
        if let Some(r) = rest.strip_prefix('}') {
            return Some((labels, r));
        }
        let eq = rest.find('=')?;
        let key = rest[..eq].trim().to_string();
        rest = rest[eq + 1..].trim_start().strip_prefix('"')?;
        let mut val = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next()?;
            match c {
                '\\' => match chars.next()?.1 {
                    'n' => val.push('\n'),
                    other => val.push(other),
                },
                '"' => break i,
                c => val.push(c),
            }
        };
        labels.insert(key, val);
        rest = &rest[end + 1..];
    }
}

/// The samples of a metrics page.
pub fn parse(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name_end = line
            .find(|c: char| c == '{' || c.is_whitespace())
            .unwrap_or(line.len());
        let name = &line[..name_end];
        let (labels, rest) = if line[name_end..].starts_with('{') {
            match parse_labels(&line[name_end + 1..]) {
                Some(x) => x,
                None => continue,
            }
        } else {
            (BTreeMap::new(), &line[name_end..])
        };
        let value = rest.split_whitespace().next().and_then(|v| match v {
            "+Inf" => Some(f64::INFINITY),
            "-Inf" => Some(f64::NEG_INFINITY),
            v => v.parse::<f64>().ok(),
        });
        if let (false, Some(value)) = (name.is_empty(), value) {
            out.push(Sample {
                name: name.to_string(),
                labels,
                value,
            });
        }
    }
    out
}

/// One service's metrics, or why they could not be read.
#[derive(Debug, Clone)]
pub struct Scrape {
    pub url: String,
    pub result: Result<Vec<Sample>, String>,
}

impl Scrape {
    pub fn samples(&self) -> &[Sample] {
        self.result.as_deref().unwrap_or(&[])
    }
    /// The first sample named `name` with no further condition.
    pub fn value(&self, name: &str) -> Option<f64> {
        self.samples()
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.value)
    }
}

/// Fetches `<base>/metrics` from each base URL, concurrently, each within `timeout`.
pub async fn fetch_all(http: &reqwest::Client, bases: &[String], timeout: Duration) -> Vec<Scrape> {
    let fetches = bases.iter().map(|base| async move {
        let url = format!("{}/metrics", base.trim_end_matches('/'));
        let result = async {
            let resp = http
                .get(&url)
                .timeout(timeout)
                .send()
                .await
                .map_err(|e| format!("unreachable: {e}"))?;
            if !resp.status().is_success() {
                return Err(format!("answered {}", resp.status()));
            }
            // A metrics page is small; a huge one is not a metrics page.
            let body = resp.bytes().await.map_err(|e| format!("reading: {e}"))?;
            if body.len() > 8 << 20 {
                return Err(format!(
                    "{} bytes: too large for a metrics page",
                    body.len()
                ));
            }
            Ok(parse(&String::from_utf8_lossy(&body)))
        }
        .await;
        Scrape {
            url: base.clone(),
            result,
        }
    });
    futures::future::join_all(fetches).await
}

/// `histogram_quantile` as Prometheus computes it: linear interpolation inside the bucket
/// that holds the rank. `buckets` are (upper bound, cumulative count), any order.
pub fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let mut b: Vec<(f64, f64)> = buckets.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    let total = b.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut prev_bound = 0.0;
    let mut prev_count = 0.0;
    for (bound, count) in &b {
        if *count >= rank {
            if bound.is_infinite() {
                // Above the highest finite bound: that bound is all that is known.
                return Some(prev_bound);
            }
            let in_bucket = count - prev_count;
            if in_bucket <= 0.0 {
                return Some(*bound);
            }
            return Some(prev_bound + (bound - prev_bound) * (rank - prev_count) / in_bucket);
        }
        prev_bound = *bound;
        prev_count = *count;
    }
    Some(prev_bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_text_format() {
        let s = parse(
            "# HELP ace_writer_leader 1 while leader\n# TYPE ace_writer_leader gauge\nace_writer_leader 1\n\
             ace_writer_envelopes_total{outcome=\"accepted\",producer=\"acme\"} 42\n\
             weird{a=\"x\\\"y\",b=\"z\"} +Inf\nbroken{a=\"x} 1\nno_value\n",
        );
        assert_eq!(s.len(), 3, "{s:?}");
        assert_eq!(s[0].name, "ace_writer_leader");
        assert_eq!(s[0].value, 1.0);
        assert_eq!(s[1].label("producer"), "acme");
        assert_eq!(s[1].value, 42.0);
        assert_eq!(s[2].label("a"), "x\"y");
        assert!(s[2].value.is_infinite());
    }

    #[test]
    fn quantiles_interpolate_like_prometheus() {
        let b = [
            (0.1, 50.0),
            (0.2, 90.0),
            (0.5, 100.0),
            (f64::INFINITY, 100.0),
        ];
        assert_eq!(quantile(0.5, &b), Some(0.1));
        let p90 = quantile(0.9, &b).expect("p90");
        assert!((p90 - 0.2).abs() < 1e-9, "{p90}");
        let p95 = quantile(0.95, &b).expect("p95");
        assert!((p95 - 0.35).abs() < 1e-9, "{p95}");
        assert_eq!(quantile(0.5, &[(f64::INFINITY, 0.0)]), None);
        assert_eq!(
            quantile(0.99, &[(0.1, 1.0), (f64::INFINITY, 10.0)]),
            Some(0.1)
        );
    }
}
