//! `keel bench resilience`: the reference chaos schedule of docs/design.md §12 sent
//! straight to the primary, through a naive client-side retry loop (3
//! retries, a fixed 1 s apart), through Keel and optionally through an
//! external gateway. Every path has its own copy of the upstreams, so the
//! chaos server's per-upstream counters are that path's attempts.

use std::fmt::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use keel_chaos::{ChaosHandle, ChaosServer, Fault, FaultRule, Scenario, Trigger, UpstreamSpec};
use serde::Serialize;

use super::keel_proc::{admin_attempts, free_port, KeelProcess};
use super::load::{self, new_histogram, Outcome, Path};
use super::ttfb::{self, TtfbReport};
use super::{Machine, ResilienceArgs};
use crate::demo::{self, DemoPlan};

/// Attempts of the naive client: the first plus three retries.
const NAIVE_ATTEMPTS: u32 = 4;
/// The naive client's fixed sleep between attempts.
const NAIVE_SLEEP: Duration = Duration::from_secs(1);
/// Client timeout of one request (Keel's own deadline is 10 s).
const CLIENT_TIMEOUT: Duration = Duration::from_secs(15);

/// One path's results.
#[derive(Debug, Clone, Serialize)]
pub struct ResiliencePath {
    /// `direct`, `naive_retry`, `keel` or the target's name.
    pub name: String,
    /// Chaos upstreams this path uses.
    pub upstreams: Vec<String>,
    /// Requests sent.
    pub requests: u64,
    /// Complete answers.
    pub successes: u64,
    /// Everything else.
    pub failures: u64,
    /// Successes over requests, percent.
    pub success_rate: f64,
    /// Attempts the path's upstreams received (chaos-side count).
    pub upstream_attempts: u64,
    /// `upstream_attempts / requests`.
    pub attempts_per_request: f64,
    /// Requests sent during the outage.
    pub outage_requests: u64,
    /// Attempts the upstreams received during the outage.
    pub outage_attempts: u64,
    /// `outage_attempts / outage_requests`.
    pub outage_attempts_per_request: f64,
    /// Median latency, microseconds (from the scheduled send time).
    pub p50_us: u64,
    /// 99th percentile latency, microseconds.
    pub p99_us: u64,
    /// From the outage start to the first complete answer, to a request sent
    /// after it, that arrived before the outage ended; none if there was none.
    pub failover_ms: Option<u64>,
    /// From the outage end to the first successful attempt on the primary.
    pub recover_ms: Option<u64>,
}

/// The resilience report.
#[derive(Debug, Serialize)]
pub struct ResilienceReport {
    /// Where and when.
    pub machine: Machine,
    /// The command that produced this.
    pub command: String,
    /// Length of the schedule, seconds.
    pub duration_s: f64,
    /// Requests per second per path.
    pub rate: f64,
    /// Outage start, seconds from the start.
    pub outage_start_s: f64,
    /// Outage end.
    pub outage_end_s: f64,
    /// Percent of the primary's attempts that hang (`--hangs`).
    pub hangs_percent: f64,
    /// The gateway ran with Keel's default `[policy]` (`--default-policy`).
    pub default_policy: bool,
    /// Keel's deployments had `stream_upstream = false` (`--plain-upstream`).
    pub plain_upstream: bool,
    /// Time to first byte of a healthy stream, commit window on and off.
    pub ttfb: TtfbReport,
    /// Per path.
    pub paths: Vec<ResiliencePath>,
    /// Upstream attempts Keel counted (its `/admin/status`).
    pub keel_attempts_reported: Option<u64>,
    /// Attempts Keel's upstreams received (chaos-side).
    pub keel_attempts_seen_by_upstreams: u64,
}

/// One request as the client saw it.
#[derive(Clone, Copy, Debug)]
struct Sent {
    path: usize,
    /// Scheduled send time, from the start.
    at: Duration,
    /// Completion, from the start.
    done: Duration,
    ok: bool,
}

/// One request of the schedule. `max_tokens` leaves room for the whole
/// answer: with a limit the answer hits, Keel's truncation policy asks for
/// the rest (an extra, productive attempt the direct paths never make),
/// which would count as amplification here.
fn body(i: u64, stream: bool) -> Bytes {
    Bytes::from(format!(
        r#"{{"model":"gpt-4o-mini","stream":{stream},"max_tokens":400,"messages":[{{"role":"user","content":"Summarise document #{i} in two sentences."}}]}}"#
    ))
}

async fn naive(client: &reqwest::Client, path: &Path, body: Bytes, stream: bool) -> Outcome {
    for attempt in 1..=NAIVE_ATTEMPTS {
        let o = load::request(client, path, body.clone(), stream, CLIENT_TIMEOUT).await;
        if o.ok || attempt == NAIVE_ATTEMPTS {
            return o;
        }
        tokio::time::sleep(NAIVE_SLEEP).await;
    }
    Outcome::default()
}

fn renamed(spec: &UpstreamSpec, name: &str) -> UpstreamSpec {
    let mut s = spec.clone();
    s.name = name.to_string();
    s
}

/// Runs the resilience mode.
pub(crate) async fn run(args: &ResilienceArgs) -> Result<ResilienceReport, String> {
    let mut machine = Machine::now();
    let duration = args.duration.max(Duration::from_millis(500));
    let outage_start = duration / 3;
    let outage = Outage {
        start: outage_start,
        end: outage_start + (duration / 3).min(Duration::from_secs(20)),
    };
    let upstreams = chaos_upstreams(args, outage)?;
    let listen: SocketAddr = args
        .chaos_listen
        .parse()
        .map_err(|e| format!("--chaos-listen {}: {e}", args.chaos_listen))?;
    let chaos = ChaosServer::start(Scenario { upstreams }, args.seed, listen)
        .await
        .map_err(|e| format!("cannot start the chaos upstream on {listen}: {e}"))?;
    let chaos_started = Instant::now();

    let keel_addr = free_port()?;
    let mut config = demo::config_text_on(
        &keel_addr.to_string(),
        &chaos.base_url("keel-primary"),
        &chaos.base_url("keel-secondary"),
    );
    if args.default_policy {
        config = default_policy(&config);
    }
    if args.plain_upstream {
        config = plain_upstream(&config);
    }
    let keel = KeelProcess::start(args.keel.keel_bin.as_ref(), &config, keel_addr).await?;
    let paths = paths(args, &chaos, keel.addr);

    let client = load::client()?;
    // Fault windows and counters restart now: the schedule's time zero.
    chaos.reset();
    let start = Instant::now();
    let chaos_offset_ms = start.duration_since(chaos_started).as_millis() as i64;
    let n = (duration.as_secs_f64() * args.rate).round() as u64;
    let gap = Duration::from_secs_f64(1.0 / args.rate.max(0.001));
    let sent = send_schedule(&client, &paths, start, n, gap).await;
    let keel_attempts_reported = admin_attempts(&client, keel.addr).await;
    drop(keel);

    let mut out = Vec::new();
    let mut keel_seen = 0;
    for (p, (path, ups)) in paths.iter().enumerate() {
        let mine: Vec<&Sent> = sent.iter().filter(|s| s.path == p).collect();
        let seen = UpstreamsSeen::count(&chaos, ups, outage, chaos_offset_ms);
        if path.name == "keel" {
            keel_seen = seen.attempts;
        }
        out.push(path_result(path, ups, &mine, &seen, outage)?);
    }
    let ttfb = ttfb::measure(args, &chaos, &client).await?;
    chaos.shutdown().await;
    machine.finish();
    Ok(ResilienceReport {
        machine,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        duration_s: duration.as_secs_f64(),
        rate: args.rate,
        outage_start_s: outage.start.as_secs_f64(),
        outage_end_s: outage.end.as_secs_f64(),
        hangs_percent: args.hangs,
        default_policy: args.default_policy,
        plain_upstream: args.plain_upstream,
        ttfb,
        paths: out,
        keel_attempts_reported,
        keel_attempts_seen_by_upstreams: keel_seen,
    })
}

/// `config` with `stream_upstream = false` on every deployment.
fn plain_upstream(config: &str) -> String {
    let mut out = String::with_capacity(config.len() + 128);
    for line in config.lines() {
        out.push_str(line);
        out.push('\n');
        if line.starts_with("[deployments.") {
            out.push_str("stream_upstream = false\n");
        }
    }
    out
}

/// `config` with its `[policy]` table emptied: Keel's defaults.
fn default_policy(config: &str) -> String {
    match (config.find("[policy]\n"), config.find("[breaker]")) {
        (Some(p), Some(b)) if p < b => {
            format!("{}[policy]\n\n{}", &config[..p], &config[b..])
        }
        _ => config.to_owned(),
    }
}

/// The primary's outage, as offsets from the schedule's start.
#[derive(Clone, Copy, Debug)]
struct Outage {
    start: Duration,
    end: Duration,
}

impl Outage {
    fn contains(&self, d: Duration) -> bool {
        d >= self.start && d < self.end
    }
}

/// The demo scenario's primary and secondary, one copy per path (and two
/// for an external target).
fn chaos_upstreams(args: &ResilienceArgs, outage: Outage) -> Result<Vec<UpstreamSpec>, String> {
    let plan = DemoPlan {
        requests: 0,
        rate: args.rate,
        outage: (outage.start, outage.end),
    };
    let base = demo::scenario(&plan);
    let find = |name: &str| {
        base.upstreams
            .iter()
            .find(|u| u.name == name)
            .cloned()
            .ok_or_else(|| format!("the demo scenario has no {name}"))
    };
    let (mut primary, secondary) = (find("primary")?, find("secondary")?);
    let healthy = primary.clone();
    if args.hangs > 0.0 {
        let hang = FaultRule::new(Fault::Hang, Trigger::Probability(args.hangs / 100.0));
        primary.faults.faults.insert(0, hang);
    }
    let mut upstreams = vec![
        renamed(&primary, "direct-primary"),
        renamed(&primary, "naive-primary"),
        renamed(&primary, "keel-primary"),
        renamed(&secondary, "keel-secondary"),
    ];
    // Always served, so a peer configured ahead of the run finds them.
    upstreams.push(renamed(&primary, "target-primary"));
    upstreams.push(renamed(&secondary, "target-secondary"));
    // The time-to-first-byte sides: healthy copies of the primary.
    let mut healthy = healthy;
    healthy.faults.faults.clear();
    for name in ttfb::UPSTREAMS {
        upstreams.push(renamed(&healthy, name));
    }
    Ok(upstreams)
}

/// Index of the naive-retry path in [`paths`].
const NAIVE: usize = 1;

/// The paths compared, each with the chaos upstreams it uses (its primary
/// first).
fn paths(
    args: &ResilienceArgs,
    chaos: &ChaosHandle,
    keel_addr: SocketAddr,
) -> Vec<(Path, Vec<String>)> {
    let chat = |name: &str| format!("{}/chat/completions", chaos.base_url(name));
    let mut paths = vec![
        (
            Path {
                name: "direct".into(),
                url: chat("direct-primary"),
                auth: "sk-demo-primary".into(),
            },
            vec!["direct-primary".to_string()],
        ),
        (
            Path {
                name: "naive_retry".into(),
                url: chat("naive-primary"),
                auth: "sk-demo-primary".into(),
            },
            vec!["naive-primary".to_string()],
        ),
        (
            Path {
                name: "keel".into(),
                url: format!("http://{keel_addr}/v1/chat/completions"),
                auth: "bench-client".into(),
            },
            vec!["keel-primary".to_string(), "keel-secondary".to_string()],
        ),
    ];
    if let Some(t) = &args.target.target {
        paths.push((
            Path {
                name: args.target.target_name.clone(),
                url: t.clone(),
                auth: args.target.target_key.clone(),
            },
            vec!["target-primary".to_string(), "target-secondary".to_string()],
        ));
    }
    paths
}

/// Sends `n` requests `gap` apart from `start` down every path at once,
/// and returns them as the client saw them once all have finished.
async fn send_schedule(
    client: &reqwest::Client,
    paths: &[(Path, Vec<String>)],
    start: Instant,
    n: u64,
    gap: Duration,
) -> Vec<Sent> {
    let sent: Arc<Mutex<Vec<Sent>>> = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..n {
        let at = gap * i as u32;
        tokio::time::sleep_until(tokio::time::Instant::from_std(start + at)).await;
        let stream = i % 2 == 1;
        for (p, (path, _)) in paths.iter().enumerate() {
            let (client, path, sent) = (client.clone(), path.clone(), sent.clone());
            let body = body(i, stream);
            tasks.push(tokio::spawn(async move {
                let o = if p == NAIVE {
                    naive(&client, &path, body, stream).await
                } else {
                    load::request(&client, &path, body, stream, CLIENT_TIMEOUT).await
                };
                sent.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push(Sent {
                        path: p,
                        at,
                        done: start.elapsed(),
                        ok: o.ok,
                    });
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut all = sent.lock().unwrap_or_else(PoisonError::into_inner);
    std::mem::take(&mut *all)
}

/// What a path's upstreams saw (the chaos server's count).
struct UpstreamsSeen {
    attempts: u64,
    outage_attempts: u64,
    /// From the outage end to the first successful attempt on the primary.
    recover_ms: Option<u64>,
}

impl UpstreamsSeen {
    /// Counts the attempts logged by `ups` (the primary first); the chaos
    /// log's times are shifted by `chaos_offset_ms` onto the schedule's.
    fn count(chaos: &ChaosHandle, ups: &[String], outage: Outage, chaos_offset_ms: i64) -> Self {
        let mut seen = UpstreamsSeen {
            attempts: 0,
            outage_attempts: 0,
            recover_ms: None,
        };
        for (k, name) in ups.iter().enumerate() {
            let Some(st) = chaos.stats(name) else {
                continue;
            };
            seen.attempts += st.attempts;
            for rec in &st.log {
                let off = rec.at_ms as i64 - chaos_offset_ms;
                let off = Duration::from_millis(off.max(0) as u64);
                if outage.contains(off) {
                    seen.outage_attempts += 1;
                }
                // The primary is the first upstream of each path.
                if k == 0 && seen.recover_ms.is_none() && rec.outcome == "ok" && off >= outage.end {
                    seen.recover_ms = Some((off - outage.end).as_millis() as u64);
                }
            }
        }
        seen
    }
}

/// One path's row of the report, from its requests and its upstreams' count.
fn path_result(
    path: &Path,
    ups: &[String],
    mine: &[&Sent],
    seen: &UpstreamsSeen,
    outage: Outage,
) -> Result<ResiliencePath, String> {
    let mut hist = new_histogram()?;
    for s in mine {
        let us = s.done.saturating_sub(s.at).as_micros() as u64;
        let _ = hist.record(us.clamp(1, hist.high()));
    }
    let requests = mine.len() as u64;
    let successes = mine.iter().filter(|s| s.ok).count() as u64;
    let outage_requests = mine.iter().filter(|s| outage.contains(s.at)).count() as u64;
    let failover_ms = mine
        .iter()
        .filter(|s| s.ok && s.at >= outage.start && s.done < outage.end)
        .map(|s| (s.done - outage.start).as_millis() as u64)
        .min();
    let per = |a: u64, n: u64| if n == 0 { 0.0 } else { a as f64 / n as f64 };
    Ok(ResiliencePath {
        name: path.name.clone(),
        upstreams: ups.to_vec(),
        requests,
        successes,
        failures: requests - successes,
        success_rate: per(successes * 100, requests),
        upstream_attempts: seen.attempts,
        attempts_per_request: per(seen.attempts, requests),
        outage_requests,
        outage_attempts: seen.outage_attempts,
        outage_attempts_per_request: per(seen.outage_attempts, outage_requests),
        p50_us: hist.value_at_quantile(0.5),
        p99_us: hist.value_at_quantile(0.99),
        failover_ms,
        recover_ms: seen.recover_ms,
    })
}

impl ResilienceReport {
    /// The Markdown table.
    pub fn markdown(&self) -> String {
        let mut t = String::new();
        let hangs = match self.hangs_percent > 0.0 {
            true => format!(", {}% of its attempts hang", self.hangs_percent),
            false => String::new(),
        };
        let mut policy = match self.default_policy {
            true => "; Keel with its default [policy]",
            false => "",
        }
        .to_string();
        if self.plain_upstream {
            policy.push_str(
                "; Keel's plain requests sent upstream as they are (stream_upstream = false)",
            );
        }
        let _ = writeln!(
            t,
            "### keel bench resilience: {:.0} s at {}/s per path, half streaming; primary 30% transient faults{hangs}, outage {:.0}-{:.0} s; secondary healthy and slower{policy}\n",
            self.duration_s, self.rate, self.outage_start_s, self.outage_end_s
        );
        let _ = writeln!(t, "{}\n", self.machine.markdown());
        let mut header = "| |".to_string();
        let mut rule = "|---|".to_string();
        for p in &self.paths {
            let _ = write!(header, " {} |", p.name);
            rule.push_str("---:|");
        }
        let _ = writeln!(t, "{header}\n{rule}");
        let row = |t: &mut String, name: &str, f: &dyn Fn(&ResiliencePath) -> String| {
            let cells: Vec<String> = self.paths.iter().map(f).collect();
            let _ = writeln!(t, "| {name} | {} |", cells.join(" | "));
        };
        row(&mut t, "success rate", &|p| {
            format!("{:.2}%", p.success_rate)
        });
        row(&mut t, "ok / sent", &|p| {
            format!("{}/{}", p.successes, p.requests)
        });
        row(&mut t, "upstream attempts per request", &|p| {
            format!("{:.2}", p.attempts_per_request)
        });
        row(&mut t, "  during the outage", &|p| {
            format!("{:.2}", p.outage_attempts_per_request)
        });
        row(&mut t, "p50 latency", &|p| {
            format!("{:.1} ms", p.p50_us as f64 / 1000.0)
        });
        row(&mut t, "p99 latency", &|p| {
            format!("{:.1} ms", p.p99_us as f64 / 1000.0)
        });
        row(&mut t, "time to fail over", &|p| {
            p.failover_ms.map_or("never".into(), |m| format!("{m} ms"))
        });
        row(&mut t, "time to recover", &|p| {
            p.recover_ms.map_or("never".into(), |m| format!("{m} ms"))
        });
        let _ = writeln!(
            t,
            "\nKeel counted {} upstream attempts; its upstreams saw {}.",
            self.keel_attempts_reported
                .map_or("?".into(), |n| n.to_string()),
            self.keel_attempts_seen_by_upstreams
        );
        let f = &self.ttfb;
        let ms = |us: u64| us as f64 / 1000.0;
        let _ = writeln!(
            t,
            "\nTime to first byte of a healthy stream through Keel ({} streams each, one at a time): \
             commit window on p50 {:.1} ms / p99 {:.1} ms; `stream_commit_chars = 0` p50 {:.1} ms / p99 {:.1} ms; {} failed.",
            f.streams,
            ms(f.window_p50_us),
            ms(f.window_p99_us),
            ms(f.no_window_p50_us),
            ms(f.no_window_p99_us),
            f.failed
        );
        let _ = writeln!(t, "\nCommand: `{}`", self.command);
        t
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The control run's config turns `stream_upstream` off on every
    /// deployment of the demo's config, and only that.
    #[test]
    fn plain_upstream_turns_stream_upstream_off_everywhere() {
        let text = demo::config_text("http://127.0.0.1:1/v1", "http://127.0.0.1:2/v1");
        let read = |t: &str| {
            keel_engine::config::Config::from_toml_str(t, "keel.toml", &|_| None).unwrap()
        };
        let (on, off) = (read(&text), read(&plain_upstream(&text)));
        assert!(on.deployments.len() >= 2);
        assert!(on.deployments.iter().all(|d| d.stream_upstream));
        assert!(off.deployments.iter().all(|d| !d.stream_upstream));
        assert_eq!(
            plain_upstream(&text).replace("stream_upstream = false\n", ""),
            text
        );
    }
}
