//! The `keel` command line: serve, batch, chaos, demo, bench, check-config.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod demo;
mod serve;

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
    Batch {
        /// Input JSONL (OpenAI Batch API shape).
        input: PathBuf,
    },
    /// Run the fault-injecting fake OpenAI/Anthropic upstream.
    Chaos {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: String,
        /// Scenario file (TOML).
        #[arg(long)]
        scenario: Option<PathBuf>,
        /// Seed for deterministic answers and faults.
        #[arg(long, default_value_t = 0)]
        seed: u64,
    },
    /// Show Keel turning a flaky provider into a reliable one (no config, no key).
    Demo,
    /// Measure Keel's overhead and resilience side by side.
    Bench,
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

fn not_built(what: &str) -> ExitCode {
    eprintln!("error: `keel {what}` is not built yet");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let cli_log_json = cli.log_format == LogFormat::Json;
    match cli.command {
        Command::Serve { config } => {
            init_logs(cli_log_json);
            serve::serve(&config)
        }
        Command::Batch { .. } => not_built("batch"),
        Command::Chaos { .. } => not_built("chaos"),
        Command::Demo => demo::run(),
        Command::Bench => not_built("bench"),
        Command::CheckConfig { file } => serve::check_config(&file),
    }
}
