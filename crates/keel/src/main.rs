//! The `keel` command line: serve, batch, chaos, demo, bench, check-config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod serve;

use keel::demo;

/// mimalloc instead of glibc's malloc: a gateway allocates and frees many
/// small buffers per request on every worker thread; glibc's arenas spent
/// ~10% of Keel's CPU under load (perf, `keel bench overhead`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Keel: a resilience layer for LLM APIs.
#[derive(Debug, Parser)]
#[command(name = "keel", version, about, long_about = None)]
struct Cli {
    /// Log format: human or json.
    #[arg(long, global = true, value_enum, default_value = "human")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (OpenAI and Anthropic APIs) with a config file.
    Serve {
        /// Path to keel.toml.
        #[arg(long, short, default_value = "keel.toml")]
        config: PathBuf,
    },
    /// Push a JSONL file of requests through the pipeline, resumably.
    ///
    /// Rerunning the same command after a crash or Ctrl-C skips every item
    /// already in the output or dead-letter file.
    Batch {
        /// Input JSONL (OpenAI Batch API shape: custom_id, method, url, body),
        /// or a directory of text files (one request per file, see --template).
        input: PathBuf,
        /// Path to keel.toml.
        #[arg(long, short, default_value = "keel.toml")]
        config: PathBuf,
        /// Output JSONL; also the checkpoint.
        #[arg(long)]
        out: PathBuf,
        /// Dead-letter JSONL (default: OUT's name with .dead-letter.jsonl).
        #[arg(long)]
        dead_letter: Option<PathBuf>,
        /// Items in flight: a number, or `auto` (AIMD under the configured limits).
        #[arg(long, default_value = "auto")]
        concurrency: keel::batch::Concurrency,
        /// Route for every item (overrides body.model).
        #[arg(long)]
        route: Option<String>,
        /// Prompt template for a directory input ({{content}}, {{file_name}}).
        #[arg(long)]
        template: Option<PathBuf>,
        /// Last tier before the dead letter: `sh -c CMD`, request JSON on stdin,
        /// response JSON on stdout.
        #[arg(long)]
        rule_fallback: Option<String>,
        /// Print the summary as JSON on stdout (the table goes to stderr).
        #[arg(long)]
        json_summary: bool,
    },
    /// Run the fault-injecting fake OpenAI/Anthropic upstream.
    ///
    /// Serves each upstream of the scenario at http://LISTEN/{name}/v1 and a
    /// control API at /_chaos (stats, faults, reset). See
    /// examples/chaos-outage.toml for the scenario format.
    Chaos {
        /// Address to listen on (port 0 picks a free port).
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: String,
        /// Scenario file (TOML); without it, the `keel demo` scenario.
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Seed for deterministic answers and faults.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Show Keel turning a flaky provider into a reliable one (no config, no key).
    Demo,
    /// Measure Keel's overhead and resilience side by side.
    Bench {
        #[command(subcommand)]
        mode: keel::bench::BenchMode,
    },
    /// Validate a config file and print it resolved, with keys masked.
    CheckConfig {
        /// Path to keel.toml.
        file: PathBuf,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Human,
    Json,
}

/// Logs to stderr; `RUST_LOG` filters (default `info`).
fn init_logs(json: bool) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn run_chaos(listen: &str, scenario: Option<&std::path::Path>, seed: u64) -> ExitCode {
    let scenario = match scenario.map(keel_chaos::Scenario::load) {
        None => keel_chaos::Scenario::demo(),
        Some(Ok(s)) => s,
        Some(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let addr: std::net::SocketAddr = match listen.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: --listen {listen}: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let names: Vec<(String, &str)> = scenario
            .upstreams
            .iter()
            .map(|u| (u.name.clone(), u.kind.as_str()))
            .collect();
        let chaos = match keel_chaos::ChaosServer::start(scenario, seed, addr).await {
            Ok(h) => h,
            Err(e) => {
                eprintln!("error: cannot listen on {addr}: {e}");
                return ExitCode::FAILURE;
            }
        };
        for (name, kind) in names {
            println!("{name:<12} {kind:<10} {}", chaos.base_url(&name));
        }
        println!("control API  http://{}/_chaos/stats", chaos.addr());
        let _ = tokio::signal::ctrl_c().await;
        chaos.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cli_log_json = cli.log_format == LogFormat::Json;
    match cli.command {
        Command::Serve { config } => {
            init_logs(cli_log_json);
            serve::serve(&config)
        }
        Command::Batch {
            input,
            config,
            out,
            dead_letter,
            concurrency,
            route,
            template,
            rule_fallback,
            json_summary,
        } => {
            // Per-attempt logs would drown the progress bar; RUST_LOG turns them on.
            if std::env::var_os("RUST_LOG").is_some() {
                init_logs(cli_log_json);
            }
            let mut options = keel::batch::BatchOptions::new(input, out);
            options.dead_letter = dead_letter;
            options.concurrency = concurrency;
            options.route = route;
            options.template = template;
            options.rule_fallback = rule_fallback;
            options.progress = true;
            options.report = true;
            keel::batch::cli(keel::batch::CliArgs {
                config,
                options,
                json_summary,
            })
        }
        Command::Chaos {
            listen,
            scenario,
            seed,
        } => run_chaos(&listen, scenario.as_deref(), seed),
        Command::Demo => demo::run(),
        Command::Bench { mode } => keel::bench::run(mode),
        Command::CheckConfig { file } => serve::check_config(&file),
    }
}
