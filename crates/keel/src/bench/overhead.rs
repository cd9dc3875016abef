//! `keel bench overhead`: direct vs bare forwarder vs Keel (vs an external
//! gateway), interleaved slice by slice in one run.

use std::fmt::Write;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use serde::Serialize;

use super::keel_proc::{free_port, KeelProcess};
use super::load::{self, Path, Recorder};
use super::{ms, ms_signed, upstream, Machine, OverheadArgs};

/// One path at one rate.
#[derive(Debug, Clone, Serialize)]
pub struct PathStats {
    /// `direct`, `forwarder`, `keel` or the target's name.
    pub name: String,
    /// Requests sent.
    pub requests: u64,
    /// Complete answers.
    pub successes: u64,
    /// Everything else.
    pub failures: u64,
    /// Latency from the scheduled send time, microseconds.
    pub p50_us: u64,
    /// 99th percentile.
    pub p99_us: u64,
    /// 99.9th percentile.
    pub p999_us: u64,
    /// Worst.
    pub max_us: u64,
    /// This path's p50 minus the direct path's.
    pub added_p50_us: i64,
    /// This path's p99 minus the direct path's.
    pub added_p99_us: i64,
    /// This path's p99.9 minus the direct path's.
    pub added_p999_us: i64,
}

/// Every path at one open-loop rate.
#[derive(Debug, Clone, Serialize)]
pub struct RateReport {
    /// Requests per second during each path's slices.
    pub rate: u32,
    /// Measured seconds per path.
    pub seconds_per_path: f64,
    /// Direct first, then forwarder, Keel and the target: every round pooled.
    pub paths: Vec<PathStats>,
    /// With `--rounds` above 1, the same for each round on its own (each
    /// path's added latency over that round's direct path).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub rounds: Vec<Vec<PathStats>>,
    /// Keel's user+system CPU time over the run divided by its requests.
    pub keel_cpu_us_per_request: Option<f64>,
    /// The same for the forwarder process.
    pub forwarder_cpu_us_per_request: Option<f64>,
    /// Keel's peak resident memory so far (VmHWM), KiB.
    pub keel_rss_peak_kib: Option<u64>,
}

/// One path of the closed-loop pass.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputPath {
    /// Path name.
    pub name: String,
    /// Requests completed.
    pub requests: u64,
    /// Complete answers.
    pub successes: u64,
    /// Everything else.
    pub failures: u64,
    /// Complete answers per second.
    pub rps: f64,
    /// CPU time of the bench process (load generator, fixed upstream) per
    /// request during this path's slices.
    pub bench_cpu_us_per_request: f64,
    /// CPU time of the path's proxy process (forwarder or Keel) per request.
    pub proxy_cpu_us_per_request: f64,
}

/// The closed-loop pass at fixed concurrency.
#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    /// Concurrent connections per path.
    pub connections: u32,
    /// Per path.
    pub paths: Vec<ThroughputPath>,
    /// Keel's throughput over the forwarder's.
    pub keel_to_forwarder: f64,
}

/// The whole overhead report.
#[derive(Debug, Serialize)]
pub struct OverheadReport {
    /// Where and when.
    pub machine: Machine,
    /// The command that produced this.
    pub command: String,
    /// Streaming workload.
    pub stream: bool,
    /// Keel's resident memory before any load, KiB.
    pub keel_rss_idle_kib: Option<u64>,
    /// Keel's peak resident memory over the run, KiB.
    pub keel_rss_peak_kib: Option<u64>,
    /// One entry per rate.
    pub rates: Vec<RateReport>,
    /// The fixed-concurrency pass, unless skipped.
    pub throughput: Option<ThroughputReport>,
}

fn request_body(stream: bool) -> Bytes {
    Bytes::from(format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"system","content":"You are a concise assistant."}},{{"role":"user","content":"Say hello in one short sentence."}}],"max_tokens":32,"temperature":0.2,"stream":{stream}}}"#
    ))
}

/// Keel's config for the overhead run: one deployment on the fixed upstream.
fn keel_config(listen: SocketAddr, upstream: SocketAddr) -> String {
    format!(
        r#"
[server]
listen = "{listen}"

[providers.bench]
kind = "openai"
base_url = "http://{upstream}/v1"
api_key = "sk-bench-upstream"

[deployments.bench]
provider = "bench"
model = "bench-upstream"

[routes.gpt-4o-mini]
chain = ["bench"]
"#
    )
}

fn stats(name: &str, r: &Recorder, direct: Option<&Recorder>) -> PathStats {
    let q = |r: &Recorder, q: f64| r.latency.value_at_quantile(q);
    let added = |quant: f64| direct.map_or(0, |d| q(r, quant) as i64 - q(d, quant) as i64);
    PathStats {
        name: name.to_string(),
        requests: r.ok + r.failed,
        successes: r.ok,
        failures: r.failed,
        p50_us: q(r, 0.5),
        p99_us: q(r, 0.99),
        p999_us: q(r, 0.999),
        max_us: r.latency.max(),
        added_p50_us: added(0.5),
        added_p99_us: added(0.99),
        added_p999_us: added(0.999),
    }
}

/// Every path's stats, direct first (the others' added latency is over it).
fn path_stats(paths: &[Path], recs: &[Recorder]) -> Vec<PathStats> {
    paths
        .iter()
        .zip(recs)
        .enumerate()
        .map(|(i, (p, r))| stats(&p.name, r, (i > 0).then(|| &recs[0])))
        .collect()
}

/// The middle value (the mean of the two middle ones for an even count).
fn median(mut v: Vec<i64>) -> Option<i64> {
    v.sort_unstable();
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2),
    }
}

/// Runs the overhead mode.
pub(crate) async fn run(args: &OverheadArgs) -> Result<OverheadReport, String> {
    let mut machine = Machine::now();
    let listen: SocketAddr = args
        .upstream_listen
        .parse()
        .map_err(|e| format!("--upstream-listen {}: {e}", args.upstream_listen))?;
    let upstream = upstream::spawn(listen)
        .await
        .map_err(|e| format!("cannot start the fixed upstream on {listen}: {e}"))?;
    // The forwarder runs in its own process, like Keel: both pay the same
    // wake-up and scheduling costs, and both CPU times can be read.
    let fwd_addr = free_port()?;
    let forwarder = KeelProcess::forwarder(args.keel.keel_bin.as_ref(), fwd_addr, upstream).await?;
    let keel_addr = free_port()?;
    let keel = KeelProcess::start(
        args.keel.keel_bin.as_ref(),
        &keel_config(keel_addr, upstream),
        keel_addr,
    )
    .await?;
    let keel_rss_idle_kib = keel.rss_kib().map(|r| r.0);

    let bench = Bench {
        args,
        paths: paths(args, upstream, forwarder.addr, keel.addr),
        client: load::client()?,
        body: request_body(args.stream),
        keel: &keel,
        forwarder: &forwarder,
    };
    bench.warm_up().await?;
    let mut rates = Vec::new();
    for &rate in &args.rates {
        if rate == 0 {
            continue;
        }
        rates.push(bench.at_rate(rate).await?);
    }
    let throughput = if args.concurrency > 0 {
        Some(bench.throughput().await)
    } else {
        None
    };
    let keel_rss_peak_kib = keel.rss_kib().map(|r| r.1);
    drop(bench);
    drop(keel);
    machine.finish();
    Ok(OverheadReport {
        machine,
        command: std::env::args().collect::<Vec<_>>().join(" "),
        stream: args.stream,
        keel_rss_idle_kib,
        keel_rss_peak_kib,
        rates,
        throughput,
    })
}

/// Index of the forwarder's path in [`paths`].
const FORWARDER: usize = 1;
/// Index of Keel's path in [`paths`].
const KEEL: usize = 2;

/// The paths compared: direct, the forwarder, Keel, and an external
/// target if one is given.
fn paths(
    args: &OverheadArgs,
    upstream: SocketAddr,
    forwarder: SocketAddr,
    keel: SocketAddr,
) -> Vec<Path> {
    let url = |a: SocketAddr| format!("http://{a}/v1/chat/completions");
    let mut paths = vec![
        Path {
            name: "direct".into(),
            url: url(upstream),
            auth: "sk-bench-upstream".into(),
        },
        Path {
            name: "forwarder".into(),
            url: url(forwarder),
            auth: "sk-bench-upstream".into(),
        },
        Path {
            name: "keel".into(),
            url: url(keel),
            auth: "sk-bench-client".into(),
        },
    ];
    if let Some(t) = &args.target.target {
        paths.push(Path {
            name: args.target.target_name.clone(),
            url: t.clone(),
            auth: args.target.target_key.clone(),
        });
    }
    paths
}

/// What every measurement sends, where, and whose CPU it reads.
struct Bench<'a> {
    args: &'a OverheadArgs,
    paths: Vec<Path>,
    client: reqwest::Client,
    body: Bytes,
    keel: &'a KeelProcess,
    forwarder: &'a KeelProcess,
}

impl Bench<'_> {
    /// Warms connections, allocator and caches. Not recorded.
    async fn warm_up(&self) -> Result<(), String> {
        let first_rate = self
            .args
            .rates
            .first()
            .copied()
            .unwrap_or(1000)
            .clamp(1, 1000);
        let warm = load::interleave(
            self.paths.len(),
            Duration::from_millis(300),
            Duration::from_millis(300),
        );
        load::open_loop(
            &self.client,
            &self.paths,
            &warm,
            f64::from(first_rate),
            self.body.clone(),
            self.args.stream,
        )
        .await?;
        Ok(())
    }

    /// The open-loop measurement at `rate` requests per second per path,
    /// over every round.
    async fn at_rate(&self, rate: u32) -> Result<RateReport, String> {
        let args = self.args;
        let slices = load::interleave(self.paths.len(), args.duration, args.slice);
        let seconds_per_path: f64 = slices
            .iter()
            .filter(|s| s.path == 0)
            .map(|s| s.len.as_secs_f64())
            .sum();
        let (cpu0, fcpu0) = (self.keel.cpu_time(), self.forwarder.cpu_time());
        let mut recs: Vec<Recorder> = Vec::new();
        let mut rounds = Vec::new();
        for _ in 0..args.rounds {
            let round = load::open_loop(
                &self.client,
                &self.paths,
                &slices,
                f64::from(rate),
                self.body.clone(),
                args.stream,
            )
            .await?;
            if args.rounds > 1 {
                rounds.push(path_stats(&self.paths, &round));
            }
            if recs.is_empty() {
                recs = round;
            } else {
                for (all, r) in recs.iter_mut().zip(&round) {
                    all.merge(r)?;
                }
            }
        }
        let (cpu1, fcpu1) = (self.keel.cpu_time(), self.forwarder.cpu_time());
        let per_request = |a: Option<Duration>, b: Option<Duration>, r: &Recorder| {
            let n = r.ok + r.failed;
            match (a, b) {
                (Some(a), Some(b)) if n > 0 => {
                    Some(b.saturating_sub(a).as_micros() as f64 / n as f64)
                }
                _ => None,
            }
        };
        let keel_cpu_us_per_request = per_request(cpu0, cpu1, &recs[KEEL]);
        let forwarder_cpu_us_per_request = per_request(fcpu0, fcpu1, &recs[FORWARDER]);
        Ok(RateReport {
            rate,
            seconds_per_path: seconds_per_path * f64::from(args.rounds),
            paths: path_stats(&self.paths, &recs),
            rounds,
            keel_cpu_us_per_request,
            forwarder_cpu_us_per_request,
            keel_rss_peak_kib: self.keel.rss_kib().map(|r| r.1),
        })
    }

    /// The closed-loop measurement: as many requests as the connections
    /// carry.
    async fn throughput(&self) -> ThroughputReport {
        let args = self.args;
        let slices = load::interleave(self.paths.len(), args.throughput_duration, args.slice);
        let res = load::closed_loop(
            &self.client,
            &self.paths,
            &slices,
            args.concurrency,
            self.body.clone(),
            args.stream,
            &|path| match path {
                FORWARDER => self.forwarder.cpu_time(),
                KEEL => self.keel.cpu_time(),
                _ => None,
            },
        )
        .await;
        let tp: Vec<ThroughputPath> = self
            .paths
            .iter()
            .zip(&res)
            .map(|(p, r)| {
                let n = (r.ok + r.failed).max(1) as f64;
                ThroughputPath {
                    name: p.name.clone(),
                    requests: r.ok + r.failed,
                    successes: r.ok,
                    failures: r.failed,
                    rps: if r.elapsed.is_zero() {
                        0.0
                    } else {
                        r.ok as f64 / r.elapsed.as_secs_f64()
                    },
                    bench_cpu_us_per_request: r.own_cpu.as_micros() as f64 / n,
                    proxy_cpu_us_per_request: r.proxy_cpu.as_micros() as f64 / n,
                }
            })
            .collect();
        let keel_to_forwarder = if tp[FORWARDER].rps > 0.0 {
            tp[KEEL].rps / tp[FORWARDER].rps
        } else {
            0.0
        };
        ThroughputReport {
            connections: args.concurrency,
            paths: tp,
            keel_to_forwarder,
        }
    }
}

impl OverheadReport {
    /// The per-round table, when there are rounds: each proxy path's added
    /// p50 and p99 in every round, then the median round.
    fn rounds_markdown(&self, t: &mut String) {
        let Some(first) = self.rates.iter().find(|r| !r.rounds.is_empty()) else {
            return;
        };
        let names: Vec<&str> = first
            .paths
            .iter()
            .skip(1)
            .map(|p| p.name.as_str())
            .collect();
        let _ = writeln!(
            t,
            "Added latency in each round (ms over that round's direct path, p50 / p99):\n"
        );
        let _ = writeln!(t, "| rate (req/s) | round | {} |", names.join(" | "));
        let _ = writeln!(t, "|---:|---|{}", "---:|".repeat(names.len()));
        let pair = |p50: i64, p99: i64| format!("{} / {}", ms_signed(p50), ms_signed(p99));
        for r in self.rates.iter().filter(|r| !r.rounds.is_empty()) {
            for (i, round) in r.rounds.iter().enumerate() {
                let cells: Vec<String> = round
                    .iter()
                    .skip(1)
                    .map(|p| pair(p.added_p50_us, p.added_p99_us))
                    .collect();
                let _ = writeln!(t, "| {} | {} | {} |", r.rate, i + 1, cells.join(" | "));
            }
            let cells: Vec<String> = (1..=names.len())
                .map(|k| {
                    let col = |f: fn(&PathStats) -> i64| {
                        median(r.rounds.iter().filter_map(|x| x.get(k)).map(f).collect())
                    };
                    match (col(|p| p.added_p50_us), col(|p| p.added_p99_us)) {
                        (Some(a), Some(b)) => pair(a, b),
                        _ => "-".into(),
                    }
                })
                .collect();
            let _ = writeln!(t, "| {} | **median** | {} |", r.rate, cells.join(" | "));
        }
        let _ = writeln!(t);
    }

    /// The Markdown tables.
    pub fn markdown(&self) -> String {
        let mut t = String::new();
        let _ = writeln!(
            t,
            "### keel bench overhead ({})\n",
            if self.stream { "streaming" } else { "plain" }
        );
        let _ = writeln!(t, "{}\n", self.machine.markdown());
        let _ = writeln!(
            t,
            "Open loop, latency from the scheduled send time; \"added\" is over the direct path at the same percentile.\n"
        );
        let _ = writeln!(
            t,
            "| rate (req/s) | path | ok / sent | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | added p99.9 ms |"
        );
        let _ = writeln!(t, "|---:|---|---:|---:|---:|---:|---:|---:|---:|");
        for r in &self.rates {
            for p in &r.paths {
                let added = |v: i64| {
                    if p.name == "direct" {
                        "-".to_string()
                    } else {
                        ms_signed(v)
                    }
                };
                let _ = writeln!(
                    t,
                    "| {} | {} | {}/{} | {} | {} | {} | {} | {} | {} |",
                    r.rate,
                    p.name,
                    p.successes,
                    p.requests,
                    ms(p.p50_us),
                    ms(p.p99_us),
                    ms(p.p999_us),
                    added(p.added_p50_us),
                    added(p.added_p99_us),
                    added(p.added_p999_us)
                );
            }
        }
        let _ = writeln!(t);
        self.rounds_markdown(&mut t);
        let cpu: Vec<String> = self
            .rates
            .iter()
            .map(|r| {
                let f = |c: Option<f64>| c.map_or("-".into(), |c| format!("{c:.0}"));
                format!(
                    "{} µs at {}/s (forwarder {} µs)",
                    f(r.keel_cpu_us_per_request),
                    r.rate,
                    f(r.forwarder_cpu_us_per_request)
                )
            })
            .collect();
        let _ = writeln!(t, "Keel CPU time per request: {}.  ", cpu.join(", "));
        let mib =
            |k: Option<u64>| k.map_or("-".into(), |k| format!("{:.1} MiB", k as f64 / 1024.0));
        let _ = writeln!(
            t,
            "Keel resident memory: {} idle, {} peak.",
            mib(self.keel_rss_idle_kib),
            mib(self.keel_rss_peak_kib)
        );
        if let Some(tp) = &self.throughput {
            let _ = writeln!(
                t,
                "\nClosed loop, {} connections per path:\n",
                tp.connections
            );
            let _ = writeln!(
                t,
                "| path | ok / sent | req/s | vs forwarder | proxy CPU µs/req | bench CPU µs/req |"
            );
            let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|");
            let fwd = tp.paths.get(1).map_or(0.0, |p| p.rps);
            for p in &tp.paths {
                let _ = writeln!(
                    t,
                    "| {} | {}/{} | {:.0} | {} | {:.0} | {:.0} |",
                    p.name,
                    p.successes,
                    p.requests,
                    p.rps,
                    if fwd > 0.0 {
                        format!("{:.0}%", p.rps * 100.0 / fwd)
                    } else {
                        "-".into()
                    },
                    p.proxy_cpu_us_per_request,
                    p.bench_cpu_us_per_request
                );
            }
        }
        let _ = writeln!(t, "\nCommand: `{}`", self.command);
        t
    }
}
