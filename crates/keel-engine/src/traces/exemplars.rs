//! OpenMetrics exemplars on `keel_request_duration_seconds`: each bucket
//! of a route's histogram carries the trace id of the last traced request
//! that fell into it, so a slow bucket in Grafana links to a trace.
//!
//! Why here and not in the histogram: an exemplar histogram takes a lock
//! on every observation, traced or not. Keel keeps its plain histograms
//! (no cost with traces off) and the tracer keeps the last trace per
//! bucket, written only when a traced request ends and added to the
//! bucket lines when `/metrics` is rendered.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// The histogram the exemplars annotate, and its buckets (as
/// `metrics::latency_hist`: 5 ms doubling, 15 buckets, then `+Inf`).
const FAMILY: &str = "keel_request_duration_seconds_bucket{";
const FIRST: f64 = 0.005;
const BUCKETS: usize = 15;

#[derive(Clone, Debug)]
struct Exemplar {
    trace_id: String,
    value: f64,
    at: SystemTime,
}

/// The last traced request per (route, streamed, bucket).
#[derive(Default)]
pub(crate) struct Exemplars {
    last: Mutex<HashMap<(String, bool, usize), Exemplar>>,
}

fn bucket_of(secs: f64) -> usize {
    (0..BUCKETS)
        .find(|&i| secs <= FIRST * f64::from(1u32 << i))
        .unwrap_or(BUCKETS)
}

fn bucket_of_le(le: &str) -> Option<usize> {
    if le == "+Inf" {
        return Some(BUCKETS);
    }
    let v: f64 = le.parse().ok()?;
    (0..BUCKETS).find(|&i| (FIRST * f64::from(1u32 << i) - v).abs() < 1e-9)
}

/// The value of `name="..."` in a label list (Keel's label values hold no quotes).
fn label<'a>(labels: &'a str, name: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{name}=\""))? + name.len() + 2;
    let len = labels[start..].find('"')?;
    Some(&labels[start..start + len])
}

impl Exemplars {
    /// A traced request of `route` took `elapsed`.
    pub fn record(&self, route: &str, stream: bool, elapsed: Duration, trace_id: String) {
        let value = elapsed.as_secs_f64();
        let key = (route.to_string(), stream, bucket_of(value));
        let e = Exemplar {
            trace_id,
            value,
            at: SystemTime::now(),
        };
        crate::lock(&self.last).insert(key, e);
    }

    /// Adds the exemplars to the bucket lines of `text` (OpenMetrics).
    pub fn annotate(&self, text: &mut String) {
        let last = crate::lock(&self.last);
        if last.is_empty() || !text.contains(FAMILY) {
            return;
        }
        let mut out = String::with_capacity(text.len() + 128 * last.len());
        for line in text.lines() {
            out.push_str(line);
            if let Some(labels) = line.strip_prefix(FAMILY) {
                let key = (|| {
                    let route = label(labels, "route")?;
                    let stream = label(labels, "stream")? == "true";
                    Some((
                        route.to_string(),
                        stream,
                        bucket_of_le(label(labels, "le")?)?,
                    ))
                })();
                if let Some(e) = key.and_then(|k| last.get(&k)) {
                    let at = e.at.duration_since(UNIX_EPOCH).unwrap_or_default();
                    let _ = write!(
                        out,
                        " # {{trace_id=\"{}\"}} {} {}.{:03}",
                        e.trace_id,
                        e.value,
                        at.as_secs(),
                        at.subsec_millis()
                    );
                }
            }
            out.push('\n');
        }
        *text = out;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn buckets_match_the_histogram() {
        assert_eq!(bucket_of(0.001), 0);
        assert_eq!(bucket_of(0.005), 0);
        assert_eq!(bucket_of(0.0051), 1);
        assert_eq!(bucket_of(0.3), 6); // le 0.32
        assert_eq!(bucket_of(1e6), BUCKETS);
        assert_eq!(bucket_of_le("0.32"), Some(6));
        assert_eq!(bucket_of_le("+Inf"), Some(BUCKETS));
        assert_eq!(bucket_of_le("0.33"), None);
    }

    #[test]
    fn the_bucket_of_a_traced_request_carries_its_trace_id() {
        let x = Exemplars::default();
        x.record("r", false, Duration::from_millis(300), "ab".repeat(16));
        let mut text = "keel_request_duration_seconds_bucket{route=\"r\",stream=\"false\",le=\"0.16\"} 0\n\
                        keel_request_duration_seconds_bucket{route=\"r\",stream=\"false\",le=\"0.32\"} 1\n\
                        keel_request_duration_seconds_bucket{route=\"r\",stream=\"true\",le=\"0.32\"} 0\n\
                        # EOF\n"
            .to_string();
        x.annotate(&mut text);
        let lines: Vec<&str> = text.lines().collect();
        assert!(!lines[0].contains('#'));
        let tail = lines[1].split_once(" 1 # ").unwrap().1;
        assert!(
            tail.starts_with(&format!("{{trace_id=\"{}\"}} 0.3 ", "ab".repeat(16))),
            "{tail}"
        );
        assert!(!lines[2].contains("trace_id"));
        assert_eq!(lines[3], "# EOF");
    }
}
