//! Time to first byte of a healthy stream through Keel with its commit
//! window on (the default, `stream_commit_chars = 48`) and off
//! (`stream_commit_chars = 0`), measured in the same run: what the window
//! costs a client while it reads a stream's first characters invisibly.
//!
//! Each side is its own `keel serve` on its own healthy copy of the
//! schedule's primary; requests go one at a time, alternating between the
//! sides, so neither queues behind the other.

use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_chaos::ChaosHandle;
use serde::Serialize;

use super::keel_proc::{free_port, KeelProcess};
use super::load::new_histogram;
use super::ResilienceArgs;
use crate::demo;

/// The healthy upstreams of the two sides (served by the run's chaos).
pub(crate) const UPSTREAMS: [&str; 2] = ["ttfb-window", "ttfb-no-window"];

/// Streams measured per side.
const STREAMS: u32 = 200;

/// The two sides' times to first byte.
#[derive(Debug, Clone, Serialize)]
pub struct TtfbReport {
    /// Streams measured per side.
    pub streams: u32,
    /// Window on: median, microseconds.
    pub window_p50_us: u64,
    /// Window on: 99th percentile.
    pub window_p99_us: u64,
    /// Window off (`stream_commit_chars = 0`): median.
    pub no_window_p50_us: u64,
    /// Window off: 99th percentile.
    pub no_window_p99_us: u64,
    /// Streams that did not end well (either side).
    pub failed: u32,
}

/// Runs the measurement against `chaos`'s healthy upstreams.
pub(crate) async fn measure(
    args: &ResilienceArgs,
    chaos: &ChaosHandle,
    client: &reqwest::Client,
) -> Result<TtfbReport, String> {
    let mut sides = Vec::new();
    for (name, window) in UPSTREAMS.iter().zip([true, false]) {
        let addr = free_port()?;
        let base = chaos.base_url(name);
        let mut config = demo::config_text_on(&addr.to_string(), &base, &base);
        if !window {
            config = config.replace("[policy]\n", "[policy]\nstream_commit_chars = 0\n");
        }
        let keel = KeelProcess::start(args.keel.keel_bin.as_ref(), &config, addr).await?;
        sides.push((keel, new_histogram()?));
    }
    let mut failed = 0;
    for i in 0..STREAMS {
        for (keel, hist) in &mut sides {
            let url = format!("http://{}/v1/chat/completions", keel.addr);
            match first_byte(client, &url, i).await {
                Some(t) => {
                    let us = (t.as_micros() as u64).clamp(1, hist.high());
                    let _ = hist.record(us);
                }
                None => failed += 1,
            }
        }
    }
    let (on, off) = (&sides[0].1, &sides[1].1);
    Ok(TtfbReport {
        streams: STREAMS,
        window_p50_us: on.value_at_quantile(0.5),
        window_p99_us: on.value_at_quantile(0.99),
        no_window_p50_us: off.value_at_quantile(0.5),
        no_window_p99_us: off.value_at_quantile(0.99),
        failed,
    })
}

/// Sends stream `i` and returns the time to the first byte of its body;
/// `None` when the stream failed or did not end with `[DONE]`.
async fn first_byte(client: &reqwest::Client, url: &str, i: u32) -> Option<Duration> {
    let body = Bytes::from(format!(
        r#"{{"model":"gpt-4o-mini","stream":true,"max_tokens":400,"messages":[{{"role":"user","content":"Summarise document #{i} in two sentences."}}]}}"#
    ));
    let sent = Instant::now();
    let mut resp = client
        .post(url)
        .bearer_auth("bench-client")
        .header(http::header::CONTENT_TYPE, "application/json")
        .timeout(Duration::from_secs(15))
        .body(body)
        .send()
        .await
        .ok()?;
    if !resp.status().is_success() {
        return None;
    }
    let first = resp.chunk().await.ok()??;
    let took = sent.elapsed();
    let mut all = first.to_vec();
    while let Some(c) = resp.chunk().await.ok()? {
        all.extend_from_slice(&c);
    }
    let text = String::from_utf8_lossy(&all);
    text.trim_end().ends_with("data: [DONE]").then_some(took)
}
