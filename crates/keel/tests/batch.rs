#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keel batch` end to end: against the chaos upstream, in process and as
//! the real binary (kill -9 and rerun), with every item accounted for
//! exactly once, the configured rate held, and bad input refused clearly.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use keel::batch::{self, BatchOptions, BatchSummary, Concurrency};
use keel_chaos::{
    ChaosHandle, ChaosServer, Fault, FaultPlan, FaultRule, Kind, RetryAfterStyle, Scenario,
    Trigger, UpstreamSpec,
};
use keel_engine::config::Config;
use keel_engine::Engine;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};
use tokio::sync::watch;

const BIN: &str = env!("CARGO_BIN_EXE_keel");

// ------------------------------------------------------------------ helpers

async fn chaos(upstreams: Vec<UpstreamSpec>, seed: u64) -> ChaosHandle {
    ChaosServer::start(Scenario { upstreams }, seed, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn p(fault: Fault, prob: f64) -> FaultRule {
    FaultRule::new(fault, Trigger::Probability(prob))
}

/// 20% transient faults (status codes only: every 200 is an answer).
fn faults_20pct() -> Vec<FaultRule> {
    vec![
        p(Fault::ServerError { status: 500 }, 0.06),
        p(Fault::ServerError { status: 502 }, 0.04),
        p(
            Fault::RateLimit {
                retry_after: Some(Duration::from_millis(50)),
                header_style: RetryAfterStyle::All,
            },
            0.04,
        ),
        p(Fault::Overloaded, 0.03),
        p(Fault::Reset, 0.03),
    ]
}

/// Two deployments (flaky OpenAI-style primary, healthy Anthropic-style
/// secondary) on route `extract`, with prices.
fn two_tier_config(chaos: &ChaosHandle, primary_extra: &str) -> String {
    format!(
        r#"
[providers.primary]
kind = "openai"
base_url = "{}"
api_key = "sk-test"
[providers.secondary]
kind = "anthropic"
base_url = "{}"
api_key = "sk-ant-test"
[deployments.primary-gpt]
provider = "primary"
model = "gpt-4o-mini"
context_window = 8000
input_price = 0.15
output_price = 0.60
{primary_extra}
[deployments.secondary-claude]
provider = "secondary"
model = "claude-haiku-4-5"
context_window = 8000
input_price = 1.0
output_price = 5.0
[routes.extract]
chain = ["primary-gpt", "secondary-claude"]
[policy]
max_attempts = 3
backoff_base = "10ms"
backoff_cap = "200ms"
timeout = "10s"
attempt_timeout = "2s"
failover_after = "100ms"
[breaker]
consecutive_failures = 5
open_for = "300ms"
max_open_for = "1s"
"#,
        chaos.base_url("primary"),
        chaos.base_url("secondary"),
    )
}

/// The primary alone, with deadlines no test reaches: a hanging primary
/// keeps the run going until the test ends it.
fn primary_only_patient_config(chaos: &ChaosHandle) -> String {
    two_tier_config(chaos, "")
        .replace(
            r#"chain = ["primary-gpt", "secondary-claude"]"#,
            r#"chain = ["primary-gpt"]"#,
        )
        .replace(r#"timeout = "10s""#, r#"timeout = "1h""#)
        .replace(
            r#"attempt_timeout = "2s""#,
            "attempt_timeout = \"1h\"\nfirst_token_timeout = \"1h\"",
        )
}

fn engine(text: &str) -> Engine {
    let config = Config::from_toml_str(text, "keel.toml", &|_| None).unwrap();
    Engine::with_seed(config, 11).unwrap()
}

fn request_line(id: &str, prompt: &str) -> String {
    json!({
        "custom_id": id,
        "method": "POST",
        "url": "/v1/chat/completions",
        // No max_tokens: a truncated answer would be continued (a second
        // upstream answer), and the tests count one answer per item.
        "body": {"model": "extract",
                 "messages": [{"role": "user", "content": prompt}]}
    })
    .to_string()
}

fn write_input(path: &Path, n: usize) -> Vec<String> {
    let ids: Vec<String> = (0..n).map(|i| format!("doc-{i:05}")).collect();
    let text: String = ids
        .iter()
        .map(|id| request_line(id, &format!("Extract the fields of {id}.")) + "\n")
        .collect();
    std::fs::write(path, text).unwrap();
    ids
}

fn read_lines(path: &Path) -> Vec<Value> {
    match std::fs::read_to_string(path) {
        Ok(t) => t
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).unwrap())
            .collect(),
        Err(_) => Vec::new(),
    }
}

fn count_lines(path: &Path) -> usize {
    std::fs::read(path)
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

fn ids_of(lines: &[Value]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| l["custom_id"].as_str().map(str::to_string))
        .collect()
}

/// Every expected id exactly once across output and dead letter, nothing else.
fn assert_exactly_once(out: &Path, dead: &Path, expected: &[String]) {
    let mut seen: HashMap<String, u32> = HashMap::new();
    for id in ids_of(&read_lines(out))
        .into_iter()
        .chain(ids_of(&read_lines(dead)))
    {
        *seen.entry(id).or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, &n)| n > 1).collect();
    assert!(dups.is_empty(), "written more than once: {dups:?}");
    let missing: Vec<_> = expected
        .iter()
        .filter(|id| !seen.contains_key(*id))
        .collect();
    assert!(missing.is_empty(), "never written: {missing:?}");
    assert_eq!(seen.len(), expected.len(), "unexpected ids written");
}

fn chaos_ok(chaos: &ChaosHandle) -> u64 {
    ["primary", "secondary"]
        .iter()
        .filter_map(|u| chaos.stats(u))
        .map(|s| s.by_outcome.get("ok").copied().unwrap_or(0))
        .sum()
}

fn tiers(lines: &[Value]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for l in lines {
        *m.entry(l["tier"].as_str().unwrap_or("?").to_string())
            .or_default() += 1;
    }
    m
}

async fn run_lib(engine: Engine, opts: BatchOptions) -> BatchSummary {
    let (_tx, rx) = watch::channel(false);
    batch::run(engine, opts, rx).await.unwrap()
}

// ------------------------------------------------------------------ tests

/// 2,000 items, 20% faults and a primary outage: every item ends up in the
/// output or the dead-letter file exactly once, and no answered item was
/// asked twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_thousand_items_through_faults_and_an_outage_are_each_written_once() {
    let mut primary = UpstreamSpec::new("primary", Kind::OpenAi);
    primary.latency = Duration::from_millis(2);
    let mut faults = vec![FaultRule::always(Fault::ServerError { status: 503 })
        .between(Duration::from_millis(500), Duration::from_millis(2000))];
    faults.extend(faults_20pct());
    primary.faults = FaultPlan { faults };
    let mut secondary = UpstreamSpec::new("secondary", Kind::Anthropic);
    secondary.latency = Duration::from_millis(4);
    let chaos = chaos(vec![primary, secondary], 2000).await;

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    let mut ids = write_input(&input, 1990);
    // Ten prompts too long for every deployment: no tier can answer them.
    let long = "word ".repeat(40_000);
    let mut text = std::fs::read_to_string(&input).unwrap();
    for i in 0..10 {
        let id = format!("too-long-{i}");
        text.push_str(&(request_line(&id, &long) + "\n"));
        ids.push(id);
    }
    text.push_str("{this is not json\n");
    std::fs::write(&input, text).unwrap();

    let out = dir.path().join("out.jsonl");
    let dead = dir.path().join("dead.jsonl");
    let mut opts = BatchOptions::new(&input, &out);
    opts.dead_letter = Some(dead.clone());
    let engine = engine(&two_tier_config(&chaos, ""));
    let s = run_lib(engine.clone(), opts.clone()).await;
    println!("{}", s.table());

    assert_exactly_once(&out, &dead, &ids);
    let out_lines = read_lines(&out);
    let dead_lines = read_lines(&dead);
    // The dead letters: the ten unanswerable items and the malformed line.
    assert_eq!(dead_lines.len(), 11, "{dead_lines:#?}");
    let malformed: Vec<_> = dead_lines
        .iter()
        .filter(|l| l["keel_error"]["kind"] == "malformed_input")
        .collect();
    assert_eq!(malformed.len(), 1);
    assert_eq!(malformed[0]["keel_error"]["line"], 2001);
    for l in dead_lines.iter().filter(|l| l["custom_id"].is_string()) {
        // Ready to be fed back: the request fields are all there.
        assert_eq!(l["url"], "/v1/chat/completions");
        assert_eq!(l["method"], "POST");
        assert!(l["body"]["messages"].is_array());
        assert!(l["keel_error"]["message"].is_string());
        assert!(l["keel_error"]["attempts"].is_array());
    }
    let mut by_deployment: BTreeMap<&str, usize> = BTreeMap::new();
    for l in &out_lines {
        *by_deployment
            .entry(l["deployment"].as_str().unwrap_or("-"))
            .or_default() += 1;
    }
    println!("answers by deployment: {by_deployment:?}");
    assert_eq!(out_lines.len(), 1990);
    assert_eq!(s.answered, 1990);
    assert_eq!(s.dead_letters, 11);
    assert_eq!(s.tiers.chain, 1990);
    assert!(s.fallbacks > 0, "the outage must show as fallbacks");
    assert!(s.retries > 0);
    assert!(s.cost_usd > 0.0);
    for l in &out_lines {
        assert_eq!(l["response"]["status_code"], 200);
        assert!(l["response"]["body"]["choices"][0]["message"]["content"].is_string());
        assert!(l["attempts"].as_u64().unwrap() >= 1);
        assert!(l["deployment"].is_string());
        assert!(l["cost_usd"].as_f64().unwrap() > 0.0);
    }
    // Each answered item was answered upstream exactly once.
    assert_eq!(chaos_ok(&chaos), 1990);

    // Rerunning the finished batch does nothing at all.
    chaos.reset();
    let again = run_lib(engine, opts).await;
    assert_eq!(again.already_done, 2000);
    assert_eq!(again.answered + again.dead_letters, 0);
    assert_eq!(chaos.stats("primary").unwrap().attempts, 0);
    assert_exactly_once(&out, &dead, &ids);
    chaos.shutdown().await;
}

/// The real binary, killed with SIGKILL at a seeded random point, then the
/// same command again: the union is complete, nothing is duplicated, and
/// the rerun asks upstream only for what was not written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_nine_then_rerun_writes_each_item_once_and_reasks_nothing_answered() {
    let mut primary = UpstreamSpec::new("primary", Kind::OpenAi);
    primary.latency = Duration::from_millis(3);
    primary.faults = FaultPlan {
        faults: faults_20pct(),
    };
    let mut secondary = UpstreamSpec::new("secondary", Kind::Anthropic);
    secondary.latency = Duration::from_millis(3);
    let chaos = chaos(vec![primary, secondary], 9).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(&config, two_tier_config(&chaos, "")).unwrap();
    let input = dir.path().join("input.jsonl");
    let ids = write_input(&input, 800);
    let out = dir.path().join("out.jsonl");
    let dead = batch::default_dead_letter(&out);
    let cmd = |json: bool| {
        let mut c = Command::new(BIN);
        c.arg("batch")
            .arg(&input)
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if json {
            c.arg("--json-summary");
        }
        c
    };

    let kill_at = rand::rngs::StdRng::seed_from_u64(0x6b69_6c6c).random_range(80..500);
    let mut child = cmd(false).spawn().unwrap();
    loop {
        if count_lines(&out) >= kill_at {
            break;
        }
        if let Some(status) = child.try_wait().unwrap() {
            panic!("batch ended before the kill point: {status}");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    // The killed run's lock is left in its file, and free.
    assert_eq!(
        std::fs::read_to_string(batch::lock::lock_path(&out))
            .unwrap()
            .trim(),
        child.id().to_string()
    );
    let first_ok = chaos_ok(&chaos);
    let written_1 = read_lines(&out);
    let chain_1 = tiers(&written_1).get("chain").copied().unwrap_or(0) as u64;
    assert!(written_1.len() >= kill_at && written_1.len() < ids.len());
    // Answered upstream but not yet written when killed: at most what was in flight.
    assert!(first_ok >= chain_1);
    assert!(
        first_ok - chain_1 <= 512,
        "{first_ok} answers for {chain_1} lines"
    );
    // A torn write as a kill in mid-line leaves it.
    let mut torn = std::fs::OpenOptions::new().append(true).open(&out).unwrap();
    std::io::Write::write_all(&mut torn, br#"{"id":"batch_req_x","custom_id":"doc-0"#).unwrap();
    drop(torn);

    chaos.reset();
    let second = cmd(true).output().unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let summary: Value = serde_json::from_slice(&second.stdout).unwrap();
    assert_eq!(summary["already_done"], written_1.len() as u64);
    assert!(summary["torn_bytes_cut"].as_u64().unwrap() > 0);
    assert_exactly_once(&out, &dead, &ids);
    let written = read_lines(&out);
    let chain_2 = tiers(&written).get("chain").copied().unwrap_or(0) as u64 - chain_1;
    // The rerun's upstream answers are exactly the lines it wrote: no item
    // already in the output was asked again.
    assert_eq!(chaos_ok(&chaos), chain_2);
    assert_eq!(summary["answered"].as_u64().unwrap(), chain_2);
    chaos.shutdown().await;
}

/// A cron job that overlaps the previous night's: the second run on the
/// same output exits 2 at once, naming the first's pid, and writes nothing;
/// the first, killed with SIGKILL while it holds the lock, leaves it free,
/// and the rerun takes it over and writes every item exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overlapping_run_exits_2_and_a_killed_runs_lock_is_taken_over() {
    // The first run's attempts never answer: it holds the lock until killed.
    let mut primary = UpstreamSpec::new("primary", Kind::OpenAi);
    primary.faults = FaultPlan {
        faults: vec![FaultRule::always(Fault::Hang)],
    };
    let secondary = UpstreamSpec::new("secondary", Kind::Anthropic);
    let chaos = chaos(vec![primary, secondary], 12).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(&config, primary_only_patient_config(&chaos)).unwrap();
    let input = dir.path().join("input.jsonl");
    let ids = write_input(&input, 40);
    let out = dir.path().join("out.jsonl");
    let dead = batch::default_dead_letter(&out);
    let cmd = || {
        let mut c = Command::new(BIN);
        c.arg("batch")
            .arg(&input)
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .args(["--concurrency", "4"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let mut first = cmd().spawn().unwrap();
    // Requests go out only after the lock is taken.
    while chaos.stats("primary").unwrap().attempts == 0 {
        assert!(first.try_wait().unwrap().is_none(), "first run ended");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let second = cmd().output().unwrap();
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "error: another keel batch (pid {}) is writing {}",
            first.id(),
            out.display()
        )),
        "{stderr}"
    );
    assert_eq!(count_lines(&out) + count_lines(&dead), 0);
    assert!(first.try_wait().unwrap().is_none(), "the first run goes on");

    first.kill().unwrap(); // SIGKILL: no chance to unlock
    first.wait().unwrap();
    let lock_file = batch::lock::lock_path(&out);
    assert_eq!(
        std::fs::read_to_string(&lock_file).unwrap().trim(),
        first.id().to_string()
    );
    chaos.set_faults("primary", FaultPlan::default()).unwrap();
    chaos.reset();
    let rerun = cmd().output().unwrap();
    assert!(
        rerun.status.success(),
        "{}",
        String::from_utf8_lossy(&rerun.stderr)
    );
    assert_exactly_once(&out, &dead, &ids);
    assert_eq!(read_lines(&out).len(), ids.len());
    assert_eq!(chaos_ok(&chaos), ids.len() as u64);
    assert_ne!(
        std::fs::read_to_string(&lock_file).unwrap().trim(),
        first.id().to_string()
    );
    chaos.shutdown().await;
}

/// Two runs writing different outputs but one dead-letter file: the second
/// is refused on the dead-letter file, before reading or cutting anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_dead_letter_file_is_locked_too() {
    let mut primary = UpstreamSpec::new("primary", Kind::OpenAi);
    primary.faults = FaultPlan {
        faults: vec![FaultRule::always(Fault::Hang)],
    };
    let secondary = UpstreamSpec::new("secondary", Kind::Anthropic);
    let chaos = chaos(vec![primary, secondary], 13).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    write_input(&input, 4);
    let dead = dir.path().join("dead.jsonl");
    let mut opts = BatchOptions::new(&input, dir.path().join("a.jsonl"));
    opts.dead_letter = Some(dead.clone());
    let eng = engine(&primary_only_patient_config(&chaos));
    let (tx, rx) = watch::channel(false);
    let first = tokio::spawn(batch::run(eng.clone(), opts.clone(), rx));
    while chaos.stats("primary").unwrap().attempts == 0 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    opts.out = dir.path().join("b.jsonl");
    let (_tx2, rx2) = watch::channel(false);
    match batch::run(eng, opts, rx2).await {
        Err(e @ batch::BatchError::Locked { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "another keel batch (pid {}) is writing {}",
                std::process::id(),
                dead.display()
            )
        ),
        other => panic!("expected Locked, got {:?}", other.map(|s| s.answered)),
    }
    assert!(!dir.path().join("b.jsonl").exists());
    let _ = tx.send(true);
    first.abort();
    chaos.shutdown().await;
}

/// Ctrl-C (SIGINT) to the real binary: the first finishes the items in
/// flight, a second stops at once; either way the rerun completes the rest
/// and writes each item once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_twice_stops_at_once_and_the_rerun_completes() {
    use std::io::BufRead;
    let mut primary = UpstreamSpec::new("primary", Kind::OpenAi);
    primary.latency = Duration::from_millis(300);
    let secondary = UpstreamSpec::new("secondary", Kind::Anthropic);
    let chaos = chaos(vec![primary, secondary], 8).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("keel.toml");
    std::fs::write(&config, two_tier_config(&chaos, "")).unwrap();
    let input = dir.path().join("input.jsonl");
    let ids = write_input(&input, 100);
    let out = dir.path().join("out.jsonl");
    let cmd = || {
        let mut c = Command::new(BIN);
        c.arg("batch")
            .arg(&input)
            .arg("--config")
            .arg(&config)
            .arg("--out")
            .arg(&out)
            .args(["--concurrency", "8"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        c
    };
    let sigint = |pid: u32| {
        let ok = Command::new("kill")
            .args(["-INT", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok);
    };
    let mut child = cmd().spawn().unwrap();
    while count_lines(&out) < 16 {
        assert!(child.try_wait().unwrap().is_none(), "ended too early");
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    sigint(child.id());
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    loop {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "no stop message");
        if line.starts_with("stopping: finishing") {
            break;
        }
    }
    sigint(child.id());
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{rest}");
    assert!(rest.contains("stopped at once"), "{rest}");
    let written = count_lines(&out);
    assert!(written < ids.len());

    let second = cmd().output().unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    assert_exactly_once(&out, &batch::default_dead_letter(&out), &ids);
    chaos.shutdown().await;
}

/// R = 600 RPM at the provider and in the config: after the limiter's burst,
/// the batch holds at least 95% of R and the provider never says 429.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_concurrency_holds_the_configured_rate_without_exceeding_it() {
    const R: u32 = 600;
    let mut primary = UpstreamSpec::new("primary", Kind::OpenAi);
    primary.rpm = Some(R);
    primary.latency = Duration::from_millis(20);
    let secondary = UpstreamSpec::new("secondary", Kind::Anthropic);
    let chaos = chaos(vec![primary, secondary], 3).await;
    let text = two_tier_config(&chaos, &format!("rpm = {R}")).replace(
        r#"chain = ["primary-gpt", "secondary-claude"]"#,
        r#"chain = ["primary-gpt"]"#,
    );
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    // The limiter's burst (1/6 of a minute: 100) plus ~10 s at R.
    let ids = write_input(&input, 200);
    let out = dir.path().join("out.jsonl");
    let s = run_lib(engine(&text), BatchOptions::new(&input, &out)).await;
    println!("{}", s.table());
    assert_exactly_once(&out, &batch::default_dead_letter(&out), &ids);
    assert_eq!(s.answered, 200);

    let stats = chaos.stats("primary").unwrap();
    assert_eq!(
        stats.by_outcome.get("rpm_limit").copied().unwrap_or(0),
        0,
        "the provider had to refuse: {:?}",
        stats.by_outcome
    );
    assert_eq!(s.upstream_429, 0);
    let mut at: Vec<u64> = stats.log.iter().map(|r| r.at_ms).collect();
    at.sort_unstable();
    assert_eq!(at.len(), 200, "one attempt per item");
    // Steady state: the limiter's burst (100, plus what refills while it is
    // spent) is over well before the last 80 starts; measure those.
    let steady = &at[at.len() - 80..];
    let span_min = (steady[steady.len() - 1] - steady[0]) as f64 / 60_000.0;
    let rate = (steady.len() - 1) as f64 / span_min;
    println!(
        "steady-state rate: {rate:.1} RPM of R = {R} ({:.1}%); concurrency peak {}",
        rate * 100.0 / f64::from(R),
        s.concurrency_peak
    );
    // Never more than R per minute beyond the limiter's burst (1/6 of R), at
    // any point of the run.
    for (i, t) in at.iter().enumerate() {
        let allowed = f64::from(R) / 6.0 + 1.0 + (t - at[0]) as f64 * f64::from(R) / 60_000.0;
        assert!((i + 1) as f64 <= allowed, "{} starts by {t} ms", i + 1);
    }
    assert!(rate >= 0.95 * f64::from(R), "rate {rate:.1} < 95% of {R}");
    assert!(rate <= 1.02 * f64::from(R), "rate {rate:.1} > {R}");
    chaos.shutdown().await;
}

/// The rule tier answers what every deployment failed; what it cannot
/// answer goes to the dead letter with the rule's error and every attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rule_tier_answers_what_the_models_cannot_and_the_rest_is_dead_lettered() {
    let mut primary = UpstreamSpec::new("primary", Kind::OpenAi);
    primary.faults = FaultPlan {
        faults: vec![FaultRule::always(Fault::BadRequest)],
    };
    let mut secondary = UpstreamSpec::new("secondary", Kind::Anthropic);
    secondary.faults = FaultPlan {
        faults: vec![FaultRule::always(Fault::ServerError { status: 500 })],
    };
    let chaos = chaos(vec![primary, secondary], 4).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    let lines = [
        request_line("a", "simple invoice 42"),
        request_line("b", "needs-human: a messy scan"),
        request_line("c", "simple invoice 43"),
    ];
    std::fs::write(&input, lines.join("\n") + "\n").unwrap();
    let out = dir.path().join("out.jsonl");
    let mut opts = BatchOptions::new(&input, &out);
    opts.rule_fallback = Some(
        r#"if grep -q needs-human; then echo 'cannot parse this one' >&2; exit 3; fi; echo '{"content":"total: 42"}'"#
            .into(),
    );
    let s = run_lib(engine(&two_tier_config(&chaos, "")), opts).await;
    assert_eq!(s.tiers.rule, 2);
    let out_lines = read_lines(&out);
    let mut answered = ids_of(&out_lines);
    answered.sort();
    assert_eq!(answered, vec!["a", "c"]);
    for l in &out_lines {
        assert_eq!(l["tier"], "rule");
        assert_eq!(
            l["response"]["body"]["choices"][0]["message"]["content"],
            "total: 42"
        );
    }
    let dead = read_lines(&batch::default_dead_letter(&out));
    assert_eq!(ids_of(&dead), vec!["b"]);
    let err = &dead[0]["keel_error"];
    assert!(
        err["rule_error"]
            .as_str()
            .unwrap()
            .contains("cannot parse this one"),
        "{err}"
    );
    assert!(!err["attempts"].as_array().unwrap().is_empty());
    // Fed back as input, a dead letter parses as a request again.
    let back = dir.path().join("retry.jsonl");
    std::fs::write(&back, dead[0].to_string() + "\n").unwrap();
    let parsed = batch::input::load(
        &back,
        None,
        &batch::input::RouteChoice {
            forced: None,
            default: None,
        },
    )
    .unwrap();
    assert_eq!(parsed.items.len(), 1);
    assert!(!parsed.items[0].original.contains_key("keel_error"));
    chaos.shutdown().await;
}

/// The first stop finishes the items in flight and starts no more; the
/// rerun completes the rest, each item once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_finishes_in_flight_items_and_the_rerun_completes() {
    let mut primary = UpstreamSpec::new("primary", Kind::OpenAi);
    primary.latency = Duration::from_millis(20);
    let secondary = UpstreamSpec::new("secondary", Kind::Anthropic);
    let chaos = chaos(vec![primary, secondary], 5).await;
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    let ids = write_input(&input, 300);
    let out = dir.path().join("out.jsonl");
    let mut opts = BatchOptions::new(&input, &out);
    opts.concurrency = Concurrency::Fixed(8.try_into().unwrap());
    let eng = engine(&two_tier_config(&chaos, ""));
    let (tx, rx) = watch::channel(false);
    let task = tokio::spawn(batch::run(eng.clone(), opts.clone(), rx));
    while count_lines(&out) < 40 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    tx.send(true).unwrap();
    let first = task.await.unwrap().unwrap();
    assert!(first.interrupted);
    assert!(first.remaining > 0);
    let written = count_lines(&out);
    assert_eq!(written as u64, first.answered);
    // Nothing answered upstream was lost: every answer was written.
    assert_eq!(chaos_ok(&chaos), first.answered);

    let second = run_lib(eng, opts).await;
    assert_eq!(second.already_done, written);
    assert!(!second.interrupted);
    assert_exactly_once(&out, &batch::default_dead_letter(&out), &ids);
    assert_eq!(chaos_ok(&chaos), 300);
    chaos.shutdown().await;
}

/// A directory of text files and a template: one request per file,
/// custom_id = file name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_directory_and_a_template_make_one_request_per_file() {
    let primary = UpstreamSpec::new("primary", Kind::OpenAi);
    let secondary = UpstreamSpec::new("secondary", Kind::Anthropic);
    let chaos = chaos(vec![primary, secondary], 6).await;
    let dir = tempfile::tempdir().unwrap();
    let docs = dir.path().join("docs");
    std::fs::create_dir(&docs).unwrap();
    for (name, text) in [("a.txt", "alpha"), ("b.txt", "beta"), ("c.txt", "gamma")] {
        std::fs::write(docs.join(name), text).unwrap();
    }
    let template = dir.path().join("prompt.txt");
    std::fs::write(&template, "Summarise {{file_name}}: {{content}}").unwrap();
    let out = dir.path().join("out.jsonl");
    let mut opts = BatchOptions::new(&docs, &out);
    opts.template = Some(template.clone());
    let s = run_lib(engine(&two_tier_config(&chaos, "")), opts).await;
    assert_eq!(s.answered, 3);
    let mut got = ids_of(&read_lines(&out));
    got.sort();
    assert_eq!(got, vec!["a.txt", "b.txt", "c.txt"]);

    let parsed = batch::input::load(
        &docs,
        Some(&template),
        &batch::input::RouteChoice {
            forced: Some("extract".into()),
            default: None,
        },
    )
    .unwrap();
    let first = &parsed.items[0];
    assert_eq!(first.custom_id, "a.txt");
    assert_eq!(first.request.model(), "extract");
    assert_eq!(
        first.request.chat().unwrap().messages[0].text().as_deref(),
        Some("Summarise a.txt: alpha")
    );
    chaos.shutdown().await;
}

// ------------------------------------------------------------------ bad input (the binary)

struct Bin {
    code: Option<i32>,
    stderr: String,
}

fn keel_batch(dir: &Path, args: &[&str]) -> Bin {
    let config = dir.join("keel.toml");
    if !config.exists() {
        // Never called: these runs stop before the first request.
        std::fs::write(
            &config,
            r#"
[providers.p]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[deployments.d]
provider = "p"
model = "m"
[routes.extract]
chain = ["d"]
"#,
        )
        .unwrap();
    }
    let o = Command::new(BIN)
        .arg("batch")
        .args(args)
        .arg("--config")
        .arg(&config)
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    Bin {
        code: o.status.code(),
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

#[test]
fn a_missing_input_file_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let r = keel_batch(dir.path(), &["nope.jsonl", "--out", "out.jsonl"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("error: nope.jsonl: No such file or directory"),
        "{}",
        r.stderr
    );
    assert!(!dir.path().join("out.jsonl").exists());
}

#[test]
fn an_unwritable_output_directory_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), request_line("a", "x") + "\n").unwrap();
    let r = keel_batch(dir.path(), &["in.jsonl", "--out", "no-such-dir/out.jsonl"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("error: no-such-dir/out.jsonl: cannot write: No such file or directory"),
        "{}",
        r.stderr
    );
    // An output path that is a directory.
    std::fs::create_dir(dir.path().join("outdir")).unwrap();
    let r = keel_batch(dir.path(), &["in.jsonl", "--out", "outdir"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("outdir: cannot write: is a directory"),
        "{}",
        r.stderr
    );
}

#[test]
fn duplicate_custom_ids_are_refused_with_both_line_numbers_and_nothing_is_touched() {
    let dir = tempfile::tempdir().unwrap();
    let lines = [
        request_line("a", "x"),
        request_line("b", "y"),
        request_line("c", "z"),
        request_line("b", "again"),
    ];
    std::fs::write(dir.path().join("in.jsonl"), lines.join("\n") + "\n").unwrap();
    let previous = r#"{"custom_id":"a","response":{"status_code":200,"body":{}},"tier":"chain"}"#
        .to_string()
        + "\n";
    std::fs::write(dir.path().join("out.jsonl"), &previous).unwrap();
    let r = keel_batch(dir.path(), &["in.jsonl", "--out", "out.jsonl"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains(
            r#"error: in.jsonl:4: duplicate custom_id "b" (first on line 2); every custom_id must be unique, nothing was run"#
        ),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap(),
        previous
    );
    assert!(!dir.path().join("out.dead-letter.jsonl").exists());
}

#[test]
fn a_line_that_is_not_json_is_reported_with_its_line_number_and_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    // Both items are already answered; only the bad line is new.
    let lines = [
        request_line("a", "x"),
        "{\"custom_id\": \"b\", oops".to_string(),
        request_line("c", "z"),
    ];
    std::fs::write(dir.path().join("in.jsonl"), lines.join("\n") + "\n").unwrap();
    let previous = [
        r#"{"custom_id":"a","response":{"status_code":200,"body":{}},"tier":"chain"}"#,
        r#"{"custom_id":"c","response":{"status_code":200,"body":{}},"tier":"chain"}"#,
    ]
    .join("\n")
        + "\n";
    std::fs::write(dir.path().join("out.jsonl"), &previous).unwrap();
    let r = keel_batch(dir.path(), &["in.jsonl", "--out", "out.jsonl"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("warning: in.jsonl:2: not valid JSON: key must be a string at line 1 column 20; sent to the dead-letter file"),
        "{}",
        r.stderr
    );
    let dead = read_lines(&dir.path().join("out.dead-letter.jsonl"));
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["keel_error"]["line"], 2);
    assert_eq!(dead[0]["keel_raw_line"], lines[1]);
    assert_eq!(
        std::fs::read_to_string(dir.path().join("out.jsonl")).unwrap(),
        previous
    );
    // Rerun: the malformed line is not dead-lettered twice.
    let r = keel_batch(dir.path(), &["in.jsonl", "--out", "out.jsonl"]);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert_eq!(
        read_lines(&dir.path().join("out.dead-letter.jsonl")).len(),
        1
    );
}

#[test]
fn an_output_file_that_is_not_a_batch_output_is_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), request_line("a", "x") + "\n").unwrap();
    let precious = "line one\nline two\nline three\n";
    std::fs::write(dir.path().join("notes.txt"), precious).unwrap();
    let r = keel_batch(dir.path(), &["in.jsonl", "--out", "notes.txt"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("error: notes.txt:1: not a Keel batch line"),
        "{}",
        r.stderr
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("notes.txt")).unwrap(),
        precious
    );
    // The input as its own output.
    let r = keel_batch(dir.path(), &["in.jsonl", "--out", "in.jsonl"]);
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr
            .contains("the input and the output are the same file"),
        "{}",
        r.stderr
    );
}

#[test]
fn an_unknown_route_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("in.jsonl"), request_line("a", "x") + "\n").unwrap();
    let r = keel_batch(
        dir.path(),
        &["in.jsonl", "--out", "out.jsonl", "--route", "nope"],
    );
    assert_eq!(r.code, Some(2), "{}", r.stderr);
    assert!(
        r.stderr.contains("--route nope: no such route in"),
        "{}",
        r.stderr
    );
}
