//! OpenMetrics exemplars on Keel's latency histograms: each bucket of
//! `keel_request_duration_seconds` (per route and stream),
//! `keel_time_to_first_token_seconds` (per route) and
//! `keel_attempt_duration_seconds` (per deployment and outcome) carries
//! the trace of the last traced request that fell into it (an attempt's
//! also its span), so a slow bucket in Grafana links to a trace.
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

/// The buckets of every latency histogram (as `metrics::latency_hist`:
/// 5 ms doubling, 15 buckets, then `+Inf`).
const FIRST: f64 = 0.005;
const BUCKETS: usize = 15;

/// A histogram the exemplars annotate: its bucket lines' start and the
/// labels (besides `le`) that tell its series apart.
pub(crate) struct Family {
    prefix: &'static str,
    labels: &'static [&'static str],
}

/// `keel_request_duration_seconds`, by route and stream.
pub(crate) const REQUEST: Family = Family {
    prefix: "keel_request_duration_seconds_bucket{",
    labels: &["route", "stream"],
};
/// `keel_time_to_first_token_seconds`, by route.
pub(crate) const FIRST_TOKEN: Family = Family {
    prefix: "keel_time_to_first_token_seconds_bucket{",
    labels: &["route"],
};
/// `keel_attempt_duration_seconds`, by deployment and outcome.
pub(crate) const ATTEMPT: Family = Family {
    prefix: "keel_attempt_duration_seconds_bucket{",
    labels: &["deployment", "outcome"],
};
const FAMILIES: [&Family; 3] = [&REQUEST, &FIRST_TOKEN, &ATTEMPT];

#[derive(Clone, Debug)]
struct Exemplar {
    trace_id: String,
    span_id: Option<String>,
    value: f64,
    at: SystemTime,
}

/// A series' bucket: its family's prefix, its label values, the bucket.
type Key = (&'static str, Vec<String>, usize);

/// The last traced observation per (family, series, bucket).
#[derive(Default)]
pub(crate) struct Exemplars {
    last: Mutex<HashMap<Key, Exemplar>>,
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

/// The key of a bucket line of `family` (`labels`: what follows its prefix).
fn key_of(family: &Family, labels: &str) -> Option<Key> {
    let series = family
        .labels
        .iter()
        .map(|name| label(labels, name).map(str::to_string))
        .collect::<Option<Vec<_>>>()?;
    Some((family.prefix, series, bucket_of_le(label(labels, "le")?)?))
}

impl Exemplars {
    /// A traced observation of `elapsed` in the series `series` (its label
    /// values, in `family`'s order) of `family`.
    pub fn record(
        &self,
        family: &Family,
        series: &[&str],
        elapsed: Duration,
        trace_id: &str,
        span_id: Option<String>,
    ) {
        let value = elapsed.as_secs_f64();
        let series = series.iter().map(|v| v.to_string()).collect();
        let key = (family.prefix, series, bucket_of(value));
        let e = Exemplar {
            trace_id: trace_id.to_string(),
            span_id,
            value,
            at: SystemTime::now(),
        };
        crate::lock(&self.last).insert(key, e);
    }

    /// Adds the exemplars to the bucket lines of `text` (OpenMetrics).
    pub fn annotate(&self, text: &mut String) {
        let last = crate::lock(&self.last);
        if last.is_empty() {
            return;
        }
        let mut out = String::with_capacity(text.len() + 128 * last.len());
        for line in text.lines() {
            out.push_str(line);
            let key = FAMILIES.iter().find_map(|f| {
                let labels = line.strip_prefix(f.prefix)?;
                key_of(f, labels)
            });
            if let Some(e) = key.and_then(|k| last.get(&k)) {
                let at = e.at.duration_since(UNIX_EPOCH).unwrap_or_default();
                let _ = write!(out, " # {{trace_id=\"{}\"", e.trace_id);
                if let Some(span) = &e.span_id {
                    let _ = write!(out, ",span_id=\"{span}\"");
                }
                let _ = write!(
                    out,
                    "}} {} {}.{:03}",
                    e.value,
                    at.as_secs(),
                    at.subsec_millis()
                );
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
        x.record(
            &REQUEST,
            &["r", "false"],
            Duration::from_millis(300),
            &"ab".repeat(16),
            None,
        );
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

    #[test]
    fn an_attempt_bucket_carries_its_trace_and_span() {
        let x = Exemplars::default();
        x.record(
            &ATTEMPT,
            &["a", "error"],
            Duration::from_millis(7),
            "t1",
            Some("s1".into()),
        );
        x.record(&FIRST_TOKEN, &["r"], Duration::from_millis(2), "t2", None);
        let mut text = "keel_attempt_duration_seconds_bucket{deployment=\"a\",outcome=\"ok\",le=\"0.01\"} 0\n\
                        keel_attempt_duration_seconds_bucket{deployment=\"a\",outcome=\"error\",le=\"0.01\"} 1\n\
                        keel_time_to_first_token_seconds_bucket{route=\"r\",le=\"0.005\"} 1\n\
                        keel_request_duration_seconds_bucket{route=\"r\",stream=\"true\",le=\"0.005\"} 1\n"
            .to_string();
        x.annotate(&mut text);
        let lines: Vec<&str> = text.lines().collect();
        assert!(!lines[0].contains('#'), "{text}");
        assert!(
            lines[1].ends_with(&format!(
                "1 # {{trace_id=\"t1\",span_id=\"s1\"}} 0.007 {}",
                lines[1].rsplit(' ').next().unwrap()
            )),
            "{text}"
        );
        assert!(lines[2].contains("# {trace_id=\"t2\"} 0.002 "), "{text}");
        assert!(!lines[3].contains('#'), "{text}");
    }
}
