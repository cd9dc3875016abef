//! `keel batch`: push a file of requests through the pipeline, resumably.
//!
//! A data team runs 100,000 extraction requests overnight. What matters is
//! the most throughput the provider's limits allow, nothing lost or
//! duplicated after a crash, and a dead-letter file of what needs a human.
//! So:
//!
//! - Every item goes through [`keel_engine::Engine::chat`] (or, for a
//!   `/v1/embeddings` line, [`keel_engine::Engine::embeddings`]), in process: the
//!   same retries, breakers, limiters, fallbacks and static tier as `keel
//!   serve`. Items the models cannot answer go to the optional rule tier
//!   ([`rule`]), then to the dead-letter file, with every attempt.
//! - The output file is the checkpoint ([`journal`]): a rerun of the same
//!   command skips every `custom_id` already written (to the output or the
//!   dead-letter file), so each is written exactly once and nothing already
//!   answered is asked again.
//! - `--concurrency auto` is an AIMD controller ([`aimd`]) held under what
//!   the configured RPM/TPM can keep busy; the engine's limiter enforces the
//!   limits themselves.
//! - Items refused for capacity only (every deployment rate limited or its
//!   breaker open) are put back in the queue after the engine's
//!   `retry_after`, a bounded number of times, instead of being dead-lettered
//!   for a passing storm.
//! - One run per output ([`lock`]): a second run on the same output or
//!   dead-letter file exits at once instead of answering every item again.

pub mod aimd;
pub mod input;
pub mod journal;
pub mod lock;
pub mod rule;

use std::collections::{BTreeSet, HashSet, VecDeque};
use std::fmt::Write as _;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use keel_engine::config::Config;
use keel_engine::{
    CallOptions, ChatCall, ClientApi, EmbeddingsCall, Engine, EngineError, ErrorKind,
    RequestReport, Tier,
};
use keel_wire::translate;
use serde::Serialize;
use serde_json::{json, Map, Value};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

use aimd::{Aimd, AimdConfig, Completion};
use input::{BatchRequest, Item, Malformed, RouteChoice};
use journal::{Journal, Target};

/// Times an item refused for capacity alone is put back in the queue.
pub const MAX_REQUEUES: u32 = 5;
/// Longest wait before a requeued item runs again.
pub const MAX_REQUEUE_DELAY: Duration = Duration::from_secs(30);

/// How many items run at once.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Concurrency {
    /// Exactly this many.
    Fixed(NonZeroU32),
    /// AIMD (see [`aimd`]).
    Auto,
}

impl FromStr for Concurrency {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        if s.eq_ignore_ascii_case("auto") {
            return Ok(Concurrency::Auto);
        }
        s.parse::<NonZeroU32>()
            .map(Concurrency::Fixed)
            .map_err(|_| format!("expected a positive number or `auto`, got {s:?}"))
    }
}

/// What to run and where to write it.
#[derive(Clone, Debug)]
pub struct BatchOptions {
    /// JSONL file (OpenAI Batch API shape) or a directory of text files.
    pub input: PathBuf,
    /// Output JSONL (also the checkpoint).
    pub out: PathBuf,
    /// Dead-letter JSONL; default: next to the output, see [`default_dead_letter`].
    pub dead_letter: Option<PathBuf>,
    /// Items in flight.
    pub concurrency: Concurrency,
    /// Route for every item (overrides `body.model`).
    pub route: Option<String>,
    /// Prompt template for a directory input (`{{content}}`, `{{file_name}}`).
    pub template: Option<PathBuf>,
    /// Rule-based tier: `sh -c CMD`, request JSON on stdin, response JSON on stdout.
    pub rule_fallback: Option<String>,
    /// Draw a progress bar (only when stderr is a terminal).
    pub progress: bool,
    /// Print warnings (malformed lines) to stderr.
    pub report: bool,
}

impl BatchOptions {
    /// Defaults: auto concurrency, no progress bar, no messages.
    pub fn new(input: impl Into<PathBuf>, out: impl Into<PathBuf>) -> Self {
        BatchOptions {
            input: input.into(),
            out: out.into(),
            dead_letter: None,
            concurrency: Concurrency::Auto,
            route: None,
            template: None,
            rule_fallback: None,
            progress: false,
            report: false,
        }
    }
}

/// `OUT.jsonl` -> `OUT.dead-letter.jsonl`, in the same directory.
pub fn default_dead_letter(out: &Path) -> PathBuf {
    let stem = out
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "batch".into());
    out.with_file_name(format!("{stem}.dead-letter.jsonl"))
}

/// Why a batch could not start (or had to stop).
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The config file is invalid.
    #[error("{0}")]
    Config(String),
    /// The input cannot be read.
    #[error("{}: {message}", path.display())]
    Input {
        /// The input (or template) path.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// Two lines share a `custom_id`.
    #[error("{}:{line}: duplicate custom_id {custom_id:?} (first on line {first}); every custom_id must be unique, nothing was run", path.display())]
    Duplicate {
        /// The input.
        path: PathBuf,
        /// The second occurrence (1-based).
        line: usize,
        /// The first occurrence.
        first: usize,
        /// The id.
        custom_id: String,
    },
    /// `--route` names no route.
    #[error("--route {route}: no such route in {file} (routes: {known})")]
    Route {
        /// The requested route.
        route: String,
        /// The config file.
        file: String,
        /// Configured routes.
        known: String,
    },
    /// Two of input, output and dead letter are the same file.
    #[error("{what} are the same file ({}); use different paths", path.display())]
    SamePath {
        /// Which two.
        what: &'static str,
        /// The path.
        path: PathBuf,
    },
    /// An output file cannot be opened or written.
    #[error("{}: cannot write: {message}", path.display())]
    Output {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// A write failed in the middle of the run (disk full, ...); what was
    /// written before is intact, and a rerun continues.
    #[error("{}: write failed: {message}; a rerun continues from what was written", path.display())]
    Write {
        /// The file.
        path: PathBuf,
        /// The OS error.
        message: String,
    },
    /// Another run holds the lock of this output (or dead-letter) file.
    #[error("another keel batch (pid {pid}) is writing {}", path.display())]
    Locked {
        /// The holder's pid, as it wrote it in the lock file.
        pid: String,
        /// The output or dead-letter file.
        path: PathBuf,
    },
    /// An existing output file holds something that is not a batch line.
    #[error("{}:{line}: {message}; refusing to append to or cut this file", path.display())]
    OutputCorrupt {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: u64,
        /// What is wrong.
        message: String,
    },
}

/// Answers by tier.
#[derive(Clone, Debug, Default, Serialize, PartialEq, Eq)]
pub struct Tiers {
    /// A deployment of the chain.
    pub chain: u64,
    /// The route's static response.
    #[serde(rename = "static")]
    pub static_: u64,
    /// The rule command.
    pub rule: u64,
}

/// What a run did.
#[derive(Clone, Debug, Default, Serialize)]
pub struct BatchSummary {
    /// Valid items in the input.
    pub input_items: usize,
    /// Malformed lines in the input.
    pub malformed_lines: usize,
    /// Items finished by a previous run (skipped).
    pub already_done: usize,
    /// Items answered by this run.
    pub answered: u64,
    /// This run's answers by tier.
    pub tiers: Tiers,
    /// Lines this run wrote to the dead-letter file (malformed lines included).
    pub dead_letters: u64,
    /// Items not finished (interrupted run).
    pub remaining: usize,
    /// Retries on the same deployment.
    pub retries: u64,
    /// Items answered by another deployment than the first, or a later tier.
    pub fallbacks: u64,
    /// Items put back in the queue after a capacity refusal.
    pub requeues: u64,
    /// Upstream attempts sent.
    pub upstream_attempts: u64,
    /// Upstream attempts answered with 429.
    pub upstream_429: u64,
    /// Cost of this run's answers (deployment prices × usage).
    pub cost_usd: f64,
    /// Wall time of this run.
    pub elapsed_secs: f64,
    /// Items finished per minute by this run.
    pub items_per_min: f64,
    /// Concurrency at the end.
    pub concurrency_final: u32,
    /// Highest concurrency reached.
    pub concurrency_peak: u32,
    /// Bytes of a torn last line cut from the output files on start.
    pub torn_bytes_cut: u64,
    /// Stopped by Ctrl-C before the end.
    pub interrupted: bool,
    /// Output file.
    pub output: String,
    /// Dead-letter file.
    pub dead_letter: String,
}

impl BatchSummary {
    /// The final table.
    pub fn table(&self) -> String {
        let mut t = String::new();
        let row = |t: &mut String, k: &str, v: String| {
            let _ = writeln!(t, "| {k:<28} | {v:>16} |");
        };
        let _ = writeln!(
            t,
            "\nkeel batch: {}",
            if self.interrupted {
                "interrupted (rerun the same command to continue)"
            } else if self.remaining > 0 {
                "stopped"
            } else {
                "complete"
            }
        );
        let _ = writeln!(t, "| {:<28} | {:>16} |", "", "this run");
        let _ = writeln!(t, "|{:-<30}|{:->18}|", "", "");
        row(&mut t, "input items", self.input_items.to_string());
        row(
            &mut t,
            "already done (skipped)",
            self.already_done.to_string(),
        );
        row(&mut t, "answered", self.answered.to_string());
        row(
            &mut t,
            "  by a chain deployment",
            self.tiers.chain.to_string(),
        );
        row(
            &mut t,
            "  by the static response",
            self.tiers.static_.to_string(),
        );
        row(&mut t, "  by the rule command", self.tiers.rule.to_string());
        row(&mut t, "dead letters", self.dead_letters.to_string());
        row(
            &mut t,
            "  malformed input lines",
            self.malformed_lines.to_string(),
        );
        row(&mut t, "remaining", self.remaining.to_string());
        row(
            &mut t,
            "upstream attempts",
            self.upstream_attempts.to_string(),
        );
        row(&mut t, "retries", self.retries.to_string());
        row(&mut t, "fallbacks", self.fallbacks.to_string());
        row(&mut t, "requeued (capacity)", self.requeues.to_string());
        row(&mut t, "upstream 429s", self.upstream_429.to_string());
        row(&mut t, "cost", format!("${:.6}", self.cost_usd));
        row(&mut t, "elapsed", format!("{:.1} s", self.elapsed_secs));
        row(
            &mut t,
            "items per minute",
            format!("{:.1}", self.items_per_min),
        );
        row(
            &mut t,
            "concurrency (final / peak)",
            format!("{} / {}", self.concurrency_final, self.concurrency_peak),
        );
        let _ = writeln!(t, "output:      {}", self.output);
        let _ = write!(t, "dead letter: {}", self.dead_letter);
        t
    }
}

/// One item waiting to run (again).
struct Pending {
    item: Arc<Item>,
    prior: Vec<Value>,
    requeues: u32,
}

/// How an item ended.
enum Outcome {
    Answered {
        line: String,
        tier: Tier,
        rule: bool,
        fallback: bool,
        cost: f64,
    },
    Dead {
        line: String,
    },
    Requeue {
        pending: Pending,
        after: Duration,
    },
}

struct Finished {
    outcome: Outcome,
    completion: Completion,
    retries: u64,
    upstream_attempts: u64,
    upstream_429: u64,
}

/// Shared by every item task.
struct Ctx {
    engine: Engine,
    rule: Option<String>,
}

/// Runs a batch with `engine` until every item is written, or `stop` turns
/// true (then the items in flight finish and the rest stay for a rerun).
pub async fn run(
    engine: Engine,
    opts: BatchOptions,
    mut stop: watch::Receiver<bool>,
) -> Result<BatchSummary, BatchError> {
    let started = Instant::now();
    let config = engine.config().clone();
    let routes = route_choice(&config, opts.route.as_deref())?;
    let dead_path = opts
        .dead_letter
        .clone()
        .unwrap_or_else(|| default_dead_letter(&opts.out));
    check_files_distinct(&opts, &dead_path)?;

    let input = input::load(&opts.input, opts.template.as_deref(), &routes)?;
    // Held until the journal is finished (the end of this function).
    let _locks = (lock::acquire(&opts.out)?, lock::acquire(&dead_path)?);
    let (out_file, out_rec) = journal::recover(&opts.out)?;
    let (dead_file, dead_rec) = journal::recover(&dead_path)?;

    let mut summary = BatchSummary {
        input_items: input.items.len(),
        malformed_lines: input.malformed.len(),
        torn_bytes_cut: out_rec.truncated_bytes + dead_rec.truncated_bytes,
        output: opts.out.display().to_string(),
        dead_letter: dead_path.display().to_string(),
        ..BatchSummary::default()
    };
    let queue = pending_items(input.items, &out_rec, &dead_rec, &mut summary);

    let (fail_tx, mut fail_rx) = tokio::sync::mpsc::unbounded_channel();
    let journal = Journal::start(
        (out_file, opts.out.clone()),
        (dead_file, dead_path.clone()),
        fail_tx,
    )?;
    let bar = progress_bar(opts.progress, queue.len() as u64);
    let malformed = MalformedLines {
        lines: &input.malformed,
        input: &opts.input,
        report: opts.report,
        already_written: &dead_rec.malformed_done,
    };
    malformed.dead_letter(&journal, &bar, &mut summary);

    let aimd = Aimd::new(aimd_config(&config, &queue, opts.concurrency));
    let mut scheduler = Scheduler::new(queue, aimd, opts.concurrency);
    let ctx = Arc::new(Ctx {
        engine,
        rule: opts.rule_fallback.clone(),
    });
    let mut stopping = false;
    let mut stop_open = true;
    let mut write_failure = None;

    loop {
        let now = Instant::now();
        scheduler.release_due(now);
        if !stopping {
            scheduler.fill(&ctx);
        }
        if scheduler.tasks.is_empty() && (stopping || scheduler.is_drained()) {
            break;
        }
        let next_delayed = scheduler.next_delayed();
        tokio::select! {
            Some(joined) = scheduler.tasks.join_next() => {
                let Ok(f) = joined else { continue };
                scheduler.settle(f, &mut summary, &journal, &bar);
            }
            _ = tokio::time::sleep_until(next_delayed.unwrap_or(now)), if next_delayed.is_some() && !stopping => {}
            changed = stop.changed(), if stop_open && !stopping => {
                match changed {
                    Ok(()) => stopping = *stop.borrow(),
                    Err(_) => stop_open = false,
                }
                if stopping {
                    bar.suspend(|| if opts.report {
                        eprintln!("stopping: finishing {} items in flight (Ctrl-C again to stop at once; a rerun continues)", scheduler.tasks.len());
                    });
                }
            }
            Some(failure) = fail_rx.recv() => {
                write_failure = Some(failure);
                stopping = true;
            }
            else => break,
        }
    }
    bar.finish_and_clear();
    let journal_result = journal.finish();
    if let Some(f) = write_failure.or(journal_result.err()) {
        return Err(BatchError::Write {
            path: f.path,
            message: f.message,
        });
    }
    Ok(scheduler.close(summary, started, stopping))
}

/// The input, the output and the dead-letter file must be three files.
fn check_files_distinct(opts: &BatchOptions, dead_path: &Path) -> Result<(), BatchError> {
    distinct(&opts.input, &opts.out, "the input and the output")?;
    distinct(&opts.input, dead_path, "the input and the dead-letter file")?;
    distinct(&opts.out, dead_path, "the output and the dead-letter file")
}

/// The items not yet written to either file, in input order (the others
/// are counted as already done).
fn pending_items(
    items: Vec<Item>,
    out_rec: &journal::Recovered,
    dead_rec: &journal::Recovered,
    summary: &mut BatchSummary,
) -> VecDeque<Pending> {
    let done: HashSet<&str> = out_rec
        .done
        .iter()
        .chain(dead_rec.done.iter())
        .map(String::as_str)
        .collect();
    let mut queue: VecDeque<Pending> = VecDeque::new();
    for item in items {
        if done.contains(item.custom_id.as_str()) {
            summary.already_done += 1;
        } else {
            queue.push_back(Pending {
                item: Arc::new(item),
                prior: Vec::new(),
                requeues: 0,
            });
        }
    }
    queue
}

/// The input lines that are not items, on their way to the dead-letter file.
struct MalformedLines<'a> {
    lines: &'a [Malformed],
    input: &'a Path,
    report: bool,
    /// Raw lines a previous run already wrote.
    already_written: &'a HashSet<String>,
}

impl MalformedLines<'_> {
    /// Warns of each line (when reporting) and writes the ones not yet
    /// written to the dead-letter file.
    fn dead_letter(&self, journal: &Journal, bar: &ProgressBar, summary: &mut BatchSummary) {
        for m in self.lines {
            if self.report {
                let where_ = if m.line > 0 {
                    format!("{}:{}", self.input.display(), m.line)
                } else {
                    format!("{}/{}", self.input.display(), m.raw)
                };
                bar.suspend(|| {
                    eprintln!(
                        "warning: {where_}: {}; sent to the dead-letter file",
                        m.message
                    )
                });
            }
            if !self.already_written.contains(&m.raw) {
                journal.append(Target::DeadLetter, malformed_line(m));
                summary.dead_letters += 1;
            }
        }
    }
}

/// The items of a running batch: waiting, waiting out a requeue delay, or
/// in flight, and the concurrency that admits them.
struct Scheduler {
    queue: VecDeque<Pending>,
    delayed: Vec<(Instant, Pending)>,
    tasks: JoinSet<Finished>,
    aimd: Aimd,
    concurrency: Concurrency,
    finished_items: u64,
}

impl Scheduler {
    fn new(queue: VecDeque<Pending>, aimd: Aimd, concurrency: Concurrency) -> Self {
        Scheduler {
            queue,
            delayed: Vec::new(),
            tasks: JoinSet::new(),
            aimd,
            concurrency,
            finished_items: 0,
        }
    }

    /// Moves the requeued items whose delay is over back to the queue.
    fn release_due(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.delayed.len() {
            if self.delayed[i].0 <= now {
                self.queue.push_back(self.delayed.swap_remove(i).1);
            } else {
                i += 1;
            }
        }
    }

    /// Starts queued items while the concurrency limit allows.
    fn fill(&mut self, ctx: &Arc<Ctx>) {
        while self.tasks.len() < self.aimd.limit() as usize {
            let Some(p) = self.queue.pop_front() else {
                break;
            };
            let ctx = ctx.clone();
            self.tasks.spawn(async move { process(&ctx, p).await });
        }
    }

    /// Nothing waits, now or later.
    fn is_drained(&self) -> bool {
        self.queue.is_empty() && self.delayed.is_empty()
    }

    /// When the next requeued item is due.
    fn next_delayed(&self) -> Option<Instant> {
        self.delayed.iter().map(|d| d.0).min()
    }

    /// Counts a finished item, writes its line, or requeues it.
    fn settle(
        &mut self,
        f: Finished,
        summary: &mut BatchSummary,
        journal: &Journal,
        bar: &ProgressBar,
    ) {
        summary.retries += f.retries;
        summary.upstream_attempts += f.upstream_attempts;
        summary.upstream_429 += f.upstream_429;
        if self.concurrency == Concurrency::Auto {
            self.aimd.on_completion(&f.completion);
        }
        match f.outcome {
            Outcome::Answered {
                line,
                tier,
                rule,
                fallback,
                cost,
            } => {
                journal.append(Target::Output, line);
                summary.answered += 1;
                summary.cost_usd += cost;
                if fallback {
                    summary.fallbacks += 1;
                }
                match (rule, tier) {
                    (true, _) => summary.tiers.rule += 1,
                    (false, Tier::Static) => summary.tiers.static_ += 1,
                    (false, Tier::Chain) => summary.tiers.chain += 1,
                }
                self.finished_items += 1;
                bar.inc(1);
            }
            Outcome::Dead { line } => {
                journal.append(Target::DeadLetter, line);
                summary.dead_letters += 1;
                self.finished_items += 1;
                bar.inc(1);
            }
            Outcome::Requeue { pending, after } => {
                summary.requeues += 1;
                self.delayed.push((Instant::now() + after, pending));
            }
        }
        bar.set_message(format!(
            "retries {} · fallbacks {} · dead letters {} · concurrency {}",
            summary.retries,
            summary.fallbacks,
            summary.dead_letters,
            aimd_limit(&self.aimd, self.concurrency)
        ));
    }

    /// The summary's closing figures: what remains, the pace and the
    /// concurrency reached.
    fn close(self, mut summary: BatchSummary, started: Instant, stopping: bool) -> BatchSummary {
        summary.remaining = self.queue.len() + self.delayed.len();
        summary.interrupted = stopping && summary.remaining > 0;
        summary.elapsed_secs = started.elapsed().as_secs_f64();
        summary.items_per_min = if summary.elapsed_secs > 0.0 {
            self.finished_items as f64 * 60.0 / summary.elapsed_secs
        } else {
            0.0
        };
        summary.concurrency_final = aimd_limit(&self.aimd, self.concurrency);
        summary.concurrency_peak = match self.concurrency {
            Concurrency::Fixed(n) => n.get(),
            Concurrency::Auto => self.aimd.peak(),
        };
        summary
    }
}

fn aimd_limit(aimd: &Aimd, c: Concurrency) -> u32 {
    match c {
        Concurrency::Fixed(n) => n.get(),
        Concurrency::Auto => aimd.limit(),
    }
}

fn progress_bar(enabled: bool, len: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30.cyan/blue} {pos}/{len} {per_sec} ETA {eta} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar
}

fn route_choice(config: &Config, forced: Option<&str>) -> Result<RouteChoice, BatchError> {
    if let Some(r) = forced {
        if !config.routes.contains_key(r) {
            return Err(BatchError::Route {
                route: r.to_string(),
                file: config.file.clone(),
                known: config.routes.keys().cloned().collect::<Vec<_>>().join(", "),
            });
        }
    }
    let default = if config.routes.len() == 1 {
        config.routes.keys().next().cloned()
    } else {
        None
    };
    Ok(RouteChoice {
        forced: forced.map(str::to_string),
        default,
    })
}

fn distinct(a: &Path, b: &Path, what: &'static str) -> Result<(), BatchError> {
    let norm = |p: &Path| {
        std::fs::canonicalize(p)
            .unwrap_or_else(|_| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf()))
    };
    if norm(a) == norm(b) {
        return Err(BatchError::SamePath {
            what,
            path: b.to_path_buf(),
        });
    }
    Ok(())
}

/// The rate the configured limits allow for the routes the queue uses.
fn aimd_config(config: &Config, queue: &VecDeque<Pending>, c: Concurrency) -> AimdConfig {
    if let Concurrency::Fixed(n) = c {
        return AimdConfig {
            initial: n.get(),
            min: n.get(),
            max: n.get(),
            ..AimdConfig::default()
        };
    }
    let mut routes = BTreeSet::new();
    let mut tokens: u64 = 0;
    for p in queue {
        let r = &p.item.request;
        routes.insert(r.model());
        tokens += r.estimated_tokens();
    }
    let avg_tokens = if queue.is_empty() {
        512.0
    } else {
        (tokens as f64 / queue.len() as f64).max(1.0)
    };
    let mut deployments = BTreeSet::new();
    for r in routes {
        if let Some(route) = config.routes.get(r) {
            deployments.extend(route.chain.iter().copied());
        }
    }
    let mut rate = Some(0.0);
    for i in deployments {
        let Some(d) = config.deployments.get(i) else {
            continue;
        };
        let rpm = d.limits.rpm.map(|v| f64::from(v) / 60.0);
        let tpm = d.limits.tpm.map(|v| f64::from(v) / 60.0 / avg_tokens);
        let dep_rate = match (rpm, tpm) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        rate = match (rate, dep_rate) {
            (Some(a), Some(b)) => Some(a + b),
            _ => None,
        };
    }
    AimdConfig {
        rate_per_sec: rate.filter(|r| *r > 0.0),
        ..AimdConfig::default()
    }
}

/// Capacity refusals: every deployment rate limited or unavailable right now.
fn requeueable(e: &EngineError) -> bool {
    matches!(e.kind, ErrorKind::RateLimited | ErrorKind::Unavailable)
        && matches!(e.status, 429 | 503)
}

/// An item's answer: the response body (OpenAI's shape for the line's
/// endpoint), what happened, and its cost.
struct Answered {
    body: Value,
    meta: RequestReport,
    cost: f64,
}

/// Runs `item` through the engine: a chat or Responses line through
/// `chat`, an embeddings line through `embeddings`.
async fn ask(engine: &Engine, item: &Item) -> Result<Answered, EngineError> {
    let options = CallOptions {
        request_id: format!("batch-{}", item.custom_id),
        ..CallOptions::default()
    };
    match &item.request {
        BatchRequest::Chat(r) => {
            let mut call = ChatCall::openai((**r).clone());
            call.options = options;
            let o = engine.chat(call).await?;
            let cost = cost_usd(engine.config(), o.meta.deployment.as_deref(), o.response());
            let body = serde_json::to_value(o.response()).unwrap_or(Value::Null);
            Ok(Answered {
                body,
                meta: o.meta,
                cost,
            })
        }
        BatchRequest::Responses(line) => {
            let mut options = options;
            options.responses = line.needs;
            let id = format!("resp_{}", options.request_id.replace('-', "_"));
            let call = ChatCall::from_responses_body(line.chat.clone(), line.body.clone(), options);
            let o = engine.chat(call).await?;
            let cost = cost_usd(engine.config(), o.meta.deployment.as_deref(), o.response());
            let created = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            let shell = translate::response_shell(&line.request, &id, created);
            // A native deployment's own Response, else the chat answer's.
            let response = o
                .raw()
                .filter(|raw| raw.api == ClientApi::Responses)
                .and_then(|raw| translate::native_response(&raw.body, &shell))
                .unwrap_or_else(|| translate::chat_to_response(o.response(), shell));
            Ok(Answered {
                body: serde_json::to_value(response).unwrap_or(Value::Null),
                meta: o.meta,
                cost,
            })
        }
        BatchRequest::Embeddings(r) => {
            let call = EmbeddingsCall {
                request: r.clone(),
                options,
            };
            let o = engine.embeddings(call).await?;
            let cost = o.meta.cost_usd;
            Ok(Answered {
                body: o.body,
                meta: o.meta,
                cost,
            })
        }
    }
}

async fn process(ctx: &Ctx, mut p: Pending) -> Finished {
    let item = p.item.clone();
    let t0 = Instant::now();
    let result = ask(&ctx.engine, &item).await;
    let elapsed = t0.elapsed();
    let meta: &RequestReport = match &result {
        Ok(o) => &o.meta,
        Err(e) => &e.meta,
    };
    let spent_ms: u64 = meta
        .attempts
        .iter()
        .map(|a| a.latency_ms + a.delay_ms.unwrap_or(0))
        .sum();
    let service = Duration::from_millis(spent_ms).min(elapsed);
    let last_latency = meta
        .attempts
        .iter()
        .rev()
        .find(|a| a.status.is_some() || a.class.is_some())
        .map_or(0, |a| a.latency_ms);
    let upstream_429 = meta
        .attempts
        .iter()
        .filter(|a| a.status == Some(429))
        .count() as u64;
    let completion = Completion {
        service,
        attempt_latency: Duration::from_millis(last_latency),
        limiter_wait: elapsed.saturating_sub(service),
        upstream_429: upstream_429 > 0,
        limiter_refused: meta
            .attempts
            .iter()
            .any(|a| a.reason.starts_with("local rate limit")),
        clean: result.is_ok() && meta.upstream_attempts == 1,
    };
    let retries = meta.attempts.iter().filter(|a| a.next == "retry").count() as u64;
    let upstream_attempts = u64::from(meta.upstream_attempts);
    p.prior.extend(
        meta.attempts
            .iter()
            .filter_map(|a| serde_json::to_value(a).ok()),
    );
    let finished = |outcome| Finished {
        outcome,
        completion,
        retries,
        upstream_attempts,
        upstream_429,
    };
    let attempts_total = p
        .prior
        .iter()
        .filter(|a| a.get("next").and_then(Value::as_str) != Some("skip"))
        .count();
    match result {
        Ok(o) => {
            let deployment = o.meta.deployment.clone();
            let (body, cost) = (o.body, o.cost);
            let fallback = o.meta.fallback_depth > 0 || o.meta.tier != Tier::Chain;
            let tier = o.meta.tier;
            let line = output_line(
                &item,
                body,
                attempts_total,
                deployment.as_deref(),
                tier_name(tier, false),
                o.meta.fallback_depth,
                cost,
            );
            finished(Outcome::Answered {
                line,
                tier,
                rule: false,
                fallback,
                cost,
            })
        }
        Err(e) if requeueable(&e) && p.requeues < MAX_REQUEUES => {
            p.requeues += 1;
            let after = e
                .retry_after
                .unwrap_or(Duration::from_secs(1))
                .clamp(Duration::from_millis(10), MAX_REQUEUE_DELAY);
            finished(Outcome::Requeue { pending: p, after })
        }
        Err(e) => {
            let mut rule_error = None;
            // The rule tier answers text: chat lines only.
            let rule = ctx.rule.as_ref().filter(|_| item.request.chat().is_some());
            if let Some(cmd) = rule {
                match rule::answer(cmd, &item.original, item.request.model()).await {
                    Ok(body) => {
                        let line = output_line(&item, body, attempts_total, None, "rule", 0, 0.0);
                        return finished(Outcome::Answered {
                            line,
                            tier: Tier::Chain,
                            rule: true,
                            fallback: true,
                            cost: 0.0,
                        });
                    }
                    Err(msg) => rule_error = Some(msg),
                }
            }
            let line = dead_line(
                &item,
                &e,
                std::mem::take(&mut p.prior),
                p.requeues,
                rule_error,
            );
            finished(Outcome::Dead { line })
        }
    }
}

fn tier_name(t: Tier, rule: bool) -> &'static str {
    match (rule, t) {
        (true, _) => "rule",
        (false, Tier::Chain) => "chain",
        (false, Tier::Static) => "static",
    }
}

/// The deployment's prices × the answer's usage.
fn cost_usd(config: &Config, deployment: Option<&str>, r: &keel_wire::openai::ChatResponse) -> f64 {
    let (Some(name), Some(usage)) = (deployment, r.usage.as_ref()) else {
        return 0.0;
    };
    let Some(d) = config.deployments.iter().find(|d| d.name == name) else {
        return 0.0;
    };
    (f64::from(usage.prompt_tokens) * d.input_price
        + f64::from(usage.completion_tokens) * d.output_price)
        / 1_000_000.0
}

/// A stable id for an output line (FNV-1a of the custom_id).
fn line_id(custom_id: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in custom_id.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    format!("batch_req_{h:016x}")
}

fn output_line(
    item: &Item,
    body: Value,
    attempts: usize,
    deployment: Option<&str>,
    tier: &str,
    fallback_depth: usize,
    cost: f64,
) -> String {
    let line = json!({
        "id": line_id(&item.custom_id),
        "custom_id": item.custom_id,
        "response": {
            "status_code": 200,
            "request_id": format!("batch-{}", item.custom_id),
            "body": body,
        },
        "error": null,
        "attempts": attempts,
        "deployment": deployment,
        "tier": tier,
        "fallback_depth": fallback_depth,
        "cost_usd": cost,
    });
    line.to_string()
}

fn dead_line(
    item: &Item,
    e: &EngineError,
    attempts: Vec<Value>,
    requeues: u32,
    rule_error: Option<String>,
) -> String {
    let mut obj: Map<String, Value> = item.original.clone();
    let mut err = Map::new();
    err.insert("kind".into(), json!(e.kind));
    err.insert("status".into(), json!(e.status));
    if let Some(code) = &e.code {
        err.insert("code".into(), json!(code));
    }
    err.insert("message".into(), json!(e.message));
    if let Some(r) = rule_error {
        err.insert("rule_error".into(), json!(r));
    }
    err.insert("requeues".into(), json!(requeues));
    err.insert("attempts".into(), Value::Array(attempts));
    obj.insert("keel_error".into(), Value::Object(err));
    Value::Object(obj).to_string()
}

fn malformed_line(m: &Malformed) -> String {
    json!({
        "custom_id": m.custom_id,
        "keel_error": {
            "kind": "malformed_input",
            "line": m.line,
            "message": m.message,
        },
        "keel_raw_line": m.raw,
    })
    .to_string()
}

/// The command line's arguments, as parsed by `keel`.
#[derive(Clone, Debug)]
pub struct CliArgs {
    /// Config file.
    pub config: PathBuf,
    /// Everything else.
    pub options: BatchOptions,
    /// Print the summary as JSON on stdout (the table goes to stderr).
    pub json_summary: bool,
}

/// `keel batch ...`: loads the config, runs, prints the summary.
/// Exit codes: 0 done, 2 bad input or config, 1 write failure, 130 interrupted.
pub fn cli(args: CliArgs) -> ExitCode {
    let config = match Config::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let engine = match Engine::new(config) {
        Ok(e) => e,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
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
    let result = rt.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_err() {
                return;
            }
            let _ = stop_tx.send(true);
            if tokio::signal::ctrl_c().await.is_ok() {
                // Safe at any instant: a torn last line is cut on the next run.
                eprintln!("\nstopped at once; rerun the same command to continue");
                std::process::exit(130);
            }
        });
        run(engine, args.options, stop_rx).await
    });
    match result {
        Ok(summary) => {
            if args.json_summary {
                eprintln!("{}", summary.table());
                match serde_json::to_string_pretty(&summary) {
                    Ok(s) => println!("{s}"),
                    Err(e) => eprintln!("error: {e}"),
                }
            } else {
                println!("{}", summary.table());
            }
            if summary.interrupted {
                ExitCode::from(130)
            } else {
                ExitCode::SUCCESS
            }
        }
        Err(e @ BatchError::Write { .. }) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
