//! `keel bench`: Keel's two published numbers, measured so anyone can
//! reproduce them on their own machine.
//!
//! - `overhead`: what Keel adds. The same workload goes straight to a fast
//!   fixed upstream, through a bare pass-through forwarder (one extra hop, no
//!   parsing: the physical limit of any proxy) and through Keel, in
//!   alternating short slices of one run, so machine noise hits all three
//!   alike. The load is open-loop: requests leave on a fixed schedule and
//!   latency counts from the *scheduled* send time, so a stall is charged to
//!   every request it delayed (no coordinated omission). A closed-loop pass
//!   at fixed concurrency measures throughput.
//! - `resilience`: what Keel saves. The reference chaos schedule of docs/design.md §12
//!   (30% transient faults, a 20 s outage, a healthy slower secondary) is
//!   sent straight to the primary, through a naive client-side retry loop,
//!   and through Keel; each path gets its own copy of the upstreams so the
//!   upstream's attempt counts are per path.
//!
//! Keel runs as a child `keel serve` process, so its CPU time and peak RSS
//! can be read from `/proc`. `--target URL` adds an external gateway (for
//! example LiteLLM, see `bench/peers/litellm.sh`) as one more path.

mod forwarder;
mod keel_proc;
mod load;
mod machine;
mod overhead;
mod resilience;
mod ttfb;
mod upstream;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;

pub use machine::Machine;
pub use overhead::{OverheadReport, PathStats, RateReport, ThroughputReport};
pub use resilience::{ResiliencePath, ResilienceReport};
pub use ttfb::TtfbReport;

/// The `keel bench` modes.
#[derive(Debug, Subcommand)]
pub enum BenchMode {
    /// Added latency, throughput, CPU and memory: direct vs forwarder vs Keel.
    Overhead(OverheadArgs),
    /// Success rate and amplification under the reference chaos schedule.
    Resilience(ResilienceArgs),
    /// The bare pass-through forwarder alone, in its own process (the
    /// overhead mode starts it).
    #[command(hide = true)]
    Forwarder {
        /// Address to listen on.
        #[arg(long)]
        listen: SocketAddr,
        /// host:port everything is forwarded to.
        #[arg(long)]
        upstream: SocketAddr,
    },
}

/// Where the load can also go: an external gateway.
#[derive(Debug, Clone, Args)]
pub struct TargetArgs {
    /// An external gateway's chat completions URL, measured as one more path
    /// (e.g. http://127.0.0.1:4000/v1/chat/completions for LiteLLM).
    #[arg(long)]
    pub target: Option<String>,
    /// The name the external gateway gets in the report.
    #[arg(long, default_value = "target")]
    pub target_name: String,
    /// Bearer token sent to the external gateway.
    #[arg(long, default_value = "sk-bench")]
    pub target_key: String,
}

/// How Keel itself is run.
#[derive(Debug, Clone, Args)]
pub struct KeelArgs {
    /// The `keel` binary to run as the gateway (default: this executable).
    #[arg(long)]
    pub keel_bin: Option<PathBuf>,
    /// Print the report as JSON instead of Markdown.
    #[arg(long)]
    pub json: bool,
}

/// `keel bench overhead`.
#[derive(Debug, Clone, Args)]
pub struct OverheadArgs {
    /// Open-loop arrival rates, requests per second, each measured in turn.
    #[arg(long, value_delimiter = ',', default_value = "1000,2000,5000")]
    pub rates: Vec<u32>,
    /// Measured time per path at each rate (slices add up to this).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    pub duration: Duration,
    /// Length of one slice; the paths take turns slice by slice.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "1s")]
    pub slice: Duration,
    /// Independent rounds of `--duration` at each rate. The main table pools
    /// them; a second one shows each round's added latency and the median
    /// round, so a tail percentile's spread from run to run is on record.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub rounds: u32,
    /// Connections of the closed-loop throughput pass (0 skips it).
    #[arg(long, default_value_t = 32)]
    pub concurrency: u32,
    /// Measured time per path of the throughput pass.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "6s")]
    pub throughput_duration: Duration,
    /// Streaming requests (SSE) instead of plain ones.
    #[arg(long)]
    pub stream: bool,
    /// Address of the fixed upstream (port 0: any; fix it for --target).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub upstream_listen: String,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub keel: KeelArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,
}

/// `keel bench resilience`.
#[derive(Debug, Clone, Args)]
pub struct ResilienceArgs {
    /// Length of the run; the primary's outage starts at a third of it and
    /// lasts a third of it, at most 20 s.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "60s")]
    pub duration: Duration,
    /// Arrival rate per path, requests per second (half of them streaming).
    #[arg(long, default_value_t = 50.0)]
    pub rate: f64,
    /// Address of the chaos upstream (port 0: any; fix it for --target).
    /// Paths `direct-primary`, `naive-primary`, `keel-primary`,
    /// `keel-secondary`, `target-primary` and `target-secondary` are served.
    #[arg(long, default_value = "127.0.0.1:0")]
    pub chaos_listen: String,
    /// Seed of the chaos upstream's faults and answers.
    #[arg(long, default_value_t = 7)]
    pub seed: u64,
    /// Percent of the primary's attempts that hang (accept the request and
    /// never answer), on top of the schedule's faults.
    #[arg(long, default_value_t = 0.0)]
    pub hangs: f64,
    /// Run the gateway with Keel's default `[policy]` (its own timeouts,
    /// retries and first-token deadline) instead of the demo's tuned one.
    #[arg(long)]
    pub default_policy: bool,
    /// Send Keel's plain requests upstream as they are (`stream_upstream =
    /// false` on its deployments) instead of as streams: a control run.
    #[arg(long)]
    pub plain_upstream: bool,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub keel: KeelArgs,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub target: TargetArgs,
}

/// A report of either mode, as `--json` prints it.
#[derive(Debug, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum BenchReport {
    /// `keel bench overhead`.
    Overhead(OverheadReport),
    /// `keel bench resilience`.
    Resilience(ResilienceReport),
}

impl BenchReport {
    /// The Markdown rendering.
    pub fn markdown(&self) -> String {
        match self {
            BenchReport::Overhead(r) => r.markdown(),
            BenchReport::Resilience(r) => r.markdown(),
        }
    }
}

/// Runs a mode and returns its report.
pub async fn run_mode(mode: BenchMode) -> Result<BenchReport, String> {
    match mode {
        BenchMode::Overhead(a) => overhead::run(&a).await.map(BenchReport::Overhead),
        BenchMode::Resilience(a) => resilience::run(&a).await.map(BenchReport::Resilience),
        BenchMode::Forwarder { listen, upstream } => {
            forwarder::spawn(listen, upstream)
                .await
                .map_err(|e| format!("forwarder on {listen}: {e}"))?;
            std::future::pending().await
        }
    }
}

/// `keel bench MODE`: runs it and prints the Markdown table or the JSON report.
pub fn run(mode: BenchMode) -> ExitCode {
    let json = match &mode {
        BenchMode::Overhead(a) => a.keel.json,
        BenchMode::Resilience(a) => a.keel.json,
        BenchMode::Forwarder { .. } => false,
    };
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run_mode(mode)) {
        Ok(report) => {
            if json {
                match serde_json::to_string_pretty(&report) {
                    Ok(s) => println!("{s}"),
                    Err(e) => {
                        eprintln!("error: cannot encode the report: {e}");
                        return ExitCode::FAILURE;
                    }
                }
            } else {
                println!("{}", report.markdown());
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Microseconds as milliseconds with three decimals, for tables.
pub(crate) fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

/// A signed microsecond difference as milliseconds.
pub(crate) fn ms_signed(us: i64) -> String {
    format!("{:+.3}", us as f64 / 1000.0)
}
