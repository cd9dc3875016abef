//! The load generators: open-loop (a fixed arrival schedule, latency counted
//! from each request's scheduled send time) and closed-loop at a fixed
//! number of connections (for throughput).
//!
//! Why open-loop: a closed-loop client that waits for each answer before the
//! next request sends less when the server stalls, so the stall is hidden
//! from the histogram (coordinated omission). Here a pacer thread releases
//! requests at their scheduled instants whatever happens to earlier ones,
//! and a late request is charged from when it should have left.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;

/// Largest latency the histograms hold, in microseconds (60 s).
const MAX_US: u64 = 60_000_000;

/// Where one path's requests go.
#[derive(Clone, Debug)]
pub(crate) struct Path {
    /// Short name for the report.
    pub name: String,
    /// Chat completions URL.
    pub url: String,
    /// Bearer token.
    pub auth: String,
}

/// One path's results.
pub(crate) struct Recorder {
    /// Latency in microseconds from the scheduled send time.
    pub latency: Histogram<u64>,
    /// Complete answers.
    pub ok: u64,
    /// Errors, error statuses and incomplete answers.
    pub failed: u64,
}

impl Recorder {
    pub(crate) fn new() -> Result<Recorder, String> {
        Ok(Recorder {
            latency: new_histogram()?,
            ok: 0,
            failed: 0,
        })
    }

    pub(crate) fn record(&mut self, ok: bool, latency: Duration) {
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        let _ = self
            .latency
            .record((latency.as_micros() as u64).clamp(1, MAX_US));
    }

    /// Adds everything `other` recorded.
    pub(crate) fn merge(&mut self, other: &Recorder) -> Result<(), String> {
        self.ok += other.ok;
        self.failed += other.failed;
        self.latency
            .add(&other.latency)
            .map_err(|e| format!("histogram: {e}"))
    }
}

/// An empty microsecond histogram (1 µs to 60 s, 3 significant digits).
pub(crate) fn new_histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, MAX_US, 3).map_err(|e| format!("histogram: {e}"))
}

/// A stretch of the schedule given to one path.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Slice {
    /// Index into the paths.
    pub path: usize,
    /// Offset from the start of the run.
    pub start: Duration,
    /// Length.
    pub len: Duration,
}

/// What one request produced.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Outcome {
    /// A complete answer arrived.
    pub ok: bool,
}

/// The client every generator uses: pooled, no proxy, no Nagle.
pub(crate) fn client() -> Result<reqwest::Client, String> {
    reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(4096)
        .build()
        .map_err(|e| format!("http client: {e}"))
}

/// Sends one chat request and reads the whole answer.
pub(crate) async fn request(
    client: &reqwest::Client,
    path: &Path,
    body: Bytes,
    stream: bool,
    timeout: Duration,
) -> Outcome {
    let resp = client
        .post(&path.url)
        .bearer_auth(&path.auth)
        .header(http::header::CONTENT_TYPE, "application/json")
        .timeout(timeout)
        .body(body)
        .send()
        .await;
    let Ok(resp) = resp else {
        return Outcome::default();
    };
    if !resp.status().is_success() {
        // Read the error body so the connection can be reused.
        let _ = resp.bytes().await;
        return Outcome::default();
    }
    let Ok(text) = resp.bytes().await else {
        return Outcome::default();
    };
    let ok = if stream {
        // A complete stream ends with [DONE] and carries no error event.
        let t = trim_end(&text);
        t.ends_with(b"data: [DONE]") && !contains(&text, b"\"error\"")
    } else {
        contains(&text, b"\"choices\"") && !text.is_empty()
    };
    Outcome { ok }
}

fn trim_end(b: &[u8]) -> &[u8] {
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    &b[..end]
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Sends at `rate` per second to each slice's path in turn and returns one
/// recorder per path. Requests still in flight at the end are awaited.
pub(crate) async fn open_loop(
    client: &reqwest::Client,
    paths: &[Path],
    slices: &[Slice],
    rate: f64,
    body: Bytes,
    stream: bool,
) -> Result<Vec<Recorder>, String> {
    let mut recs = Vec::with_capacity(paths.len());
    for _ in paths {
        recs.push(Mutex::new(Recorder::new()?));
    }
    let recorders: Arc<Vec<Mutex<Recorder>>> = Arc::new(recs);
    let paths: Arc<Vec<Path>> = Arc::new(paths.to_vec());
    let handle = tokio::runtime::Handle::current();
    let slices = slices.to_vec();
    let (client, recs) = (client.clone(), recorders.clone());
    // The pacer is an OS thread: std::thread::sleep is precise to tens of
    // microseconds, tokio's timer to a millisecond.
    let tasks = tokio::task::spawn_blocking(move || {
        let start = Instant::now() + Duration::from_millis(20);
        let gap = 1.0 / rate.max(0.001);
        let mut tasks = Vec::new();
        for s in &slices {
            let n = (s.len.as_secs_f64() * rate).round() as u64;
            for k in 0..n {
                let at = start + s.start + Duration::from_secs_f64(k as f64 * gap);
                let now = Instant::now();
                if at > now {
                    std::thread::sleep(at - now);
                }
                let (client, paths, recs, body) =
                    (client.clone(), paths.clone(), recs.clone(), body.clone());
                let p = s.path;
                tasks.push(handle.spawn(async move {
                    let out =
                        request(&client, &paths[p], body, stream, Duration::from_secs(30)).await;
                    let latency = at.elapsed();
                    recs[p]
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .record(out.ok, latency);
                }));
            }
        }
        tasks
    })
    .await
    .map_err(|e| format!("pacer: {e}"))?;
    for t in tasks {
        let _ = t.await;
    }
    let recorders = Arc::try_unwrap(recorders).map_err(|_| "recorders still shared".to_string())?;
    Ok(recorders
        .into_iter()
        .map(|m| m.into_inner().unwrap_or_else(PoisonError::into_inner))
        .collect())
}

/// One path's closed-loop totals.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct ClosedLoop {
    /// Complete answers.
    pub ok: u64,
    /// Everything else.
    pub failed: u64,
    /// Time measured.
    pub elapsed: Duration,
    /// CPU time of this process (load generator and fixed upstream).
    pub own_cpu: Duration,
    /// CPU time of the path's proxy process (forwarder or Keel).
    pub proxy_cpu: Duration,
}

/// Closed-loop throughput: during each slice, `connections` workers send
/// back-to-back to the slice's path. `proxy_cpu(path)` reads the CPU time of
/// the path's proxy process, if it has one.
pub(crate) async fn closed_loop(
    client: &reqwest::Client,
    paths: &[Path],
    slices: &[Slice],
    connections: u32,
    body: Bytes,
    stream: bool,
    proxy_cpu: &dyn Fn(usize) -> Option<Duration>,
) -> Vec<ClosedLoop> {
    let mut out = vec![ClosedLoop::default(); paths.len()];
    let own_cpu = || super::keel_proc::cpu_time_of("self");
    for s in slices {
        let (own0, proxy0) = (own_cpu(), proxy_cpu(s.path));
        let started = Instant::now();
        let end = started + s.len;
        let mut workers = Vec::new();
        for _ in 0..connections {
            let (client, path, body) = (client.clone(), paths[s.path].clone(), body.clone());
            workers.push(tokio::spawn(async move {
                let (mut ok, mut failed) = (0u64, 0u64);
                while Instant::now() < end {
                    let o = request(
                        &client,
                        &path,
                        body.clone(),
                        stream,
                        Duration::from_secs(30),
                    )
                    .await;
                    if o.ok {
                        ok += 1;
                    } else {
                        failed += 1;
                    }
                }
                (ok, failed)
            }));
        }
        let o = &mut out[s.path];
        for w in workers {
            if let Ok((ok, failed)) = w.await {
                o.ok += ok;
                o.failed += failed;
            }
        }
        o.elapsed += started.elapsed();
        if let (Some(a), Some(b)) = (own0, own_cpu()) {
            o.own_cpu += b.saturating_sub(a);
        }
        if let (Some(a), Some(b)) = (proxy0, proxy_cpu(s.path)) {
            o.proxy_cpu += b.saturating_sub(a);
        }
    }
    out
}

/// Alternating slices: `cycles` rounds over `paths` paths, each `len` long.
pub(crate) fn interleave(paths: usize, total_per_path: Duration, len: Duration) -> Vec<Slice> {
    let len = len.min(total_per_path).max(Duration::from_millis(10));
    let cycles = (total_per_path.as_secs_f64() / len.as_secs_f64())
        .round()
        .max(1.0) as u32;
    let mut slices = Vec::new();
    let mut at = Duration::ZERO;
    for _ in 0..cycles {
        for p in 0..paths {
            slices.push(Slice {
                path: p,
                start: at,
                len,
            });
            at += len;
        }
    }
    slices
}
