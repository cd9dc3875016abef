//! `keel demo`: no config, no key. Starts the chaos upstream with two fake
//! providers (a flaky OpenAI-style primary with a 20 s outage in the middle,
//! a healthy but slower Anthropic-style secondary), the gateway on free
//! ports, and a fixed-rate workload, half of it streaming, sent both
//! straight to the primary and through Keel. Ends with a table.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use keel_chaos::{
    ChaosServer, Fault, FaultPlan, FaultRule, Kind, RetryAfterStyle, Scenario, Trigger,
    UpstreamSpec,
};
use keel_engine::config::Config;
use keel_engine::{Engine, EngineStats};
use tokio::sync::Mutex;

/// Workload shape.
#[derive(Clone, Copy, Debug)]
pub struct DemoPlan {
    /// Requests sent each way (direct and through Keel).
    pub requests: u32,
    /// Arrival rate per way, requests per second.
    pub rate: f64,
    /// Primary outage window, from the start.
    pub outage: (Duration, Duration),
}

impl Default for DemoPlan {
    fn default() -> Self {
        DemoPlan {
            requests: 3000,
            rate: 50.0,
            outage: (Duration::from_secs(20), Duration::from_secs(40)),
        }
    }
}

/// The demo's upstreams: primary with 30% transient faults and an outage.
pub fn scenario(plan: &DemoPlan) -> Scenario {
    let mut primary = UpstreamSpec::new("primary", Kind::OpenAi);
    primary.latency = Duration::from_millis(15);
    primary.token_delay = Duration::from_millis(1);
    let p = |fault, prob| FaultRule::new(fault, Trigger::Probability(prob));
    primary.faults = FaultPlan {
        faults: vec![
            FaultRule::always(Fault::ServerError { status: 503 })
                .between(plan.outage.0, plan.outage.1),
            p(
                Fault::RateLimit {
                    retry_after: Some(Duration::from_millis(100)),
                    header_style: RetryAfterStyle::All,
                },
                0.08,
            ),
            p(Fault::ServerError { status: 500 }, 0.08),
            p(Fault::ServerError { status: 502 }, 0.04),
            p(Fault::Overloaded, 0.03),
            p(Fault::Reset, 0.03),
            p(Fault::CutStream { after_chunks: 3 }, 0.02),
            p(
                Fault::SlowFirstByte {
                    delay: Duration::from_secs(5),
                },
                0.02,
            ),
        ],
    };
    let mut secondary = UpstreamSpec::new("secondary", Kind::Anthropic);
    secondary.latency = Duration::from_millis(60);
    secondary.token_delay = Duration::from_millis(2);
    Scenario {
        upstreams: vec![primary, secondary],
    }
}

/// The gateway config of the demo.
pub fn config_text(primary: &str, secondary: &str) -> String {
    config_text_on("127.0.0.1:0", primary, secondary)
}

/// The gateway config of the demo, listening on `listen` (`keel bench
/// resilience` runs it as a child `keel serve`).
pub fn config_text_on(listen: &str, primary: &str, secondary: &str) -> String {
    format!(
        r#"
[server]
listen = "{listen}"

[providers.primary]
kind = "openai"
base_url = "{primary}"
api_key = "sk-demo-primary"

[providers.secondary]
kind = "anthropic"
base_url = "{secondary}"
api_key = "sk-ant-demo-secondary"

[deployments.primary-gpt]
provider = "primary"
model = "gpt-4o-mini"

[deployments.secondary-claude]
provider = "secondary"
model = "claude-haiku-4-5"

[routes.gpt-4o-mini]
chain = ["primary-gpt", "secondary-claude"]

[policy]
max_attempts = 3
backoff = "full_jitter"
backoff_base = "50ms"
backoff_cap = "1s"
timeout = "10s"
attempt_timeout = "1s"
first_token_timeout = "1s"
inter_token_timeout = "1s"
failover_after = "250ms"

[breaker]
consecutive_failures = 5
open_for = "2s"
max_open_for = "10s"
"#
    )
}

#[derive(Default)]
struct Side {
    ok: u64,
    failed: u64,
    attempts: u64,
    fallbacks: u64,
    latency: Option<Histogram<u64>>,
    outage_requests: u64,
    outage_attempts: u64,
}

impl Side {
    /// Successes over requests, percent.
    fn success_rate(&self) -> f64 {
        if self.total() == 0 {
            0.0
        } else {
            self.ok as f64 * 100.0 / self.total() as f64
        }
    }

    fn record(
        &mut self,
        ok: bool,
        attempts: u64,
        fallback: bool,
        latency: Duration,
        in_outage: bool,
    ) {
        if ok {
            self.ok += 1;
        } else {
            self.failed += 1;
        }
        self.attempts += attempts;
        if fallback {
            self.fallbacks += 1;
        }
        if in_outage {
            self.outage_requests += 1;
            self.outage_attempts += attempts;
        }
        if let Some(h) = self.latency.as_mut() {
            let _ = h.record(latency.as_micros().max(1) as u64);
        }
    }
    fn total(&self) -> u64 {
        self.ok + self.failed
    }
    fn pct(&self, q: f64) -> String {
        match &self.latency {
            Some(h) if !h.is_empty() => format!("{:.1} ms", h.value_at_quantile(q) as f64 / 1000.0),
            _ => "-".into(),
        }
    }
}

fn body(i: u32, stream: bool) -> serde_json::Value {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "max_tokens": 200,
        "messages": [{"role": "user", "content": format!("Summarise document #{i} in two sentences.")}]
    })
}

/// Sends one request; true when a complete answer arrived.
async fn one(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    i: u32,
    stream: bool,
) -> (bool, u64, bool) {
    let resp = client
        .post(url)
        .bearer_auth(auth)
        .timeout(Duration::from_secs(15))
        .json(&body(i, stream))
        .send()
        .await;
    let Ok(resp) = resp else {
        return (false, 1, false);
    };
    let attempts = resp
        .headers()
        .get("x-keel-attempts")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    let fallback = resp
        .headers()
        .get("x-keel-fallback-depth")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v != "0");
    if !resp.status().is_success() {
        return (false, attempts, fallback);
    }
    let Ok(text) = resp.text().await else {
        return (false, attempts, fallback);
    };
    let ok = if stream {
        // A complete stream ends with [DONE] and carries no error event.
        text.trim_end().ends_with("data: [DONE]") && !text.contains("\"error\"")
    } else {
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| {
                v["choices"][0]["message"]["content"]
                    .as_str()
                    .map(|s| !s.is_empty())
            })
            .unwrap_or(false)
    };
    (ok, attempts, fallback)
}

/// Runs the demo with the default plan.
pub fn run() -> ExitCode {
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
    match rt.block_on(run_plan(DemoPlan::default(), true)) {
        Ok(report) => {
            println!("{}", report.table);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The demo's numbers and printed table.
pub struct DemoReport {
    /// Success rate straight to the primary.
    pub direct_success: f64,
    /// Success rate through Keel.
    pub keel_success: f64,
    /// Upstream attempts per request through Keel during the outage.
    pub outage_amplification: f64,
    /// The table.
    pub table: String,
}

/// Runs a plan; `progress` draws a progress bar.
pub async fn run_plan(plan: DemoPlan, progress: bool) -> Result<DemoReport, String> {
    let chaos = ChaosServer::start(
        scenario(&plan),
        7,
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
    )
    .await
    .map_err(|e| format!("cannot start the chaos upstream: {e}"))?;
    let text = config_text(&chaos.base_url("primary"), &chaos.base_url("secondary"));
    let config =
        Config::from_toml_str(&text, "(demo config)", &|_| None).map_err(|e| e.to_string())?;
    let engine = Engine::with_seed(config, 7).map_err(|e| e.to_string())?;
    let gateway = keel_server::spawn(
        engine.clone(),
        "127.0.0.1:0".parse().map_err(|e| format!("{e}"))?,
    )
    .await
    .map_err(|e| format!("cannot start the gateway: {e}"))?;
    let keel_url = format!("http://{gateway}/v1/chat/completions");
    let direct_url = format!("{}/chat/completions", chaos.base_url("primary"));
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()
        .map_err(|e| e.to_string())?;

    let bar = progress_bar(progress, u64::from(plan.requests) * 2);
    let (d, k) = send_plan(&plan, &client, &direct_url, &keel_url, &bar).await;
    bar.finish_with_message("done");
    let stats = engine.stats();
    let report = DemoReport {
        direct_success: d.success_rate(),
        keel_success: k.success_rate(),
        outage_amplification: per(k.outage_attempts, k.outage_requests),
        table: table(&plan, &d, &k, &stats),
    };
    chaos.shutdown().await;
    Ok(report)
}

fn progress_bar(enabled: bool, len: u64) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let b = ProgressBar::new(len);
    b.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40.cyan/blue} {pos}/{len} {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    b
}

/// Sends the plan's requests both ways at its rate and returns what each
/// side saw: straight to the primary, then through Keel.
async fn send_plan(
    plan: &DemoPlan,
    client: &reqwest::Client,
    direct_url: &str,
    keel_url: &str,
    bar: &ProgressBar,
) -> (Side, Side) {
    let new_side = || Side {
        latency: Histogram::new_with_bounds(1, 60_000_000, 3).ok(),
        ..Side::default()
    };
    let direct = Arc::new(Mutex::new(new_side()));
    let keel = Arc::new(Mutex::new(new_side()));
    let start = tokio::time::Instant::now();
    let gap = Duration::from_secs_f64(1.0 / plan.rate);
    let mut tasks = Vec::with_capacity(plan.requests as usize * 2);
    for i in 0..plan.requests {
        let at = start + gap * i;
        tokio::time::sleep_until(at).await;
        let elapsed = start.elapsed();
        let in_outage = elapsed >= plan.outage.0 && elapsed < plan.outage.1;
        bar.set_message(if in_outage {
            "primary is DOWN (outage)"
        } else {
            "primary flaky (30% faults)"
        });
        let stream = i % 2 == 1;
        for (side, url, auth, is_keel) in [
            (
                direct.clone(),
                direct_url.to_owned(),
                "sk-demo-primary",
                false,
            ),
            (keel.clone(), keel_url.to_owned(), "demo-client", true),
        ] {
            let client = client.clone();
            let bar = bar.clone();
            tasks.push(tokio::spawn(async move {
                let t0 = Instant::now();
                let (ok, attempts, fallback) = one(&client, &url, auth, i, stream).await;
                let attempts = if is_keel { attempts } else { 1 };
                side.lock()
                    .await
                    .record(ok, attempts, fallback, t0.elapsed(), in_outage);
                bar.inc(1);
            }));
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let d = std::mem::take(&mut *direct.lock().await);
    let k = std::mem::take(&mut *keel.lock().await);
    (d, k)
}

/// `a / n`, 0 when `n` is 0.
fn per(a: u64, n: u64) -> f64 {
    if n == 0 {
        0.0
    } else {
        a as f64 / n as f64
    }
}

/// The printed comparison of the two sides, with Keel's own counters.
fn table(plan: &DemoPlan, d: &Side, k: &Side, stats: &EngineStats) -> String {
    let trips: u64 = stats.deployments.iter().map(|d| d.breaker_trips).sum();
    let mut table = String::new();
    use std::fmt::Write;
    let _ = writeln!(
        table,
        "\nKeel demo: {} requests each way at {}/s, half streaming; primary outage {}s-{}s\n",
        plan.requests,
        plan.rate,
        plan.outage.0.as_secs(),
        plan.outage.1.as_secs()
    );
    let _ = writeln!(
        table,
        "| {:<34} | {:>16} | {:>16} |",
        "", "direct to primary", "through Keel"
    );
    let _ = writeln!(table, "|{:-<36}|{:->18}|{:->18}|", "", "", "");
    let row = |t: &mut String, name: &str, a: String, b: String| {
        let _ = writeln!(t, "| {name:<34} | {a:>16} | {b:>16} |");
    };
    row(
        &mut table,
        "success rate",
        format!("{:.2}%", d.success_rate()),
        format!("{:.2}%", k.success_rate()),
    );
    row(
        &mut table,
        "succeeded / sent",
        format!("{}/{}", d.ok, d.total()),
        format!("{}/{}", k.ok, k.total()),
    );
    row(
        &mut table,
        "upstream attempts per request",
        format!("{:.2}", per(d.attempts, d.total())),
        format!("{:.2}", per(k.attempts, k.total())),
    );
    row(
        &mut table,
        "  during the outage",
        format!("{:.2}", per(d.outage_attempts, d.outage_requests)),
        format!("{:.2}", per(k.outage_attempts, k.outage_requests)),
    );
    row(
        &mut table,
        "retries (same deployment)",
        "-".into(),
        stats.retries.to_string(),
    );
    row(
        &mut table,
        "fallbacks (answered by secondary)",
        "-".into(),
        k.fallbacks.to_string(),
    );
    row(
        &mut table,
        "streams resumed mid-answer",
        "-".into(),
        stats.stream_resumes.to_string(),
    );
    row(&mut table, "breaker trips", "-".into(), trips.to_string());
    row(
        &mut table,
        "retries refused by the budget",
        "-".into(),
        stats.budget_exhausted.to_string(),
    );
    row(&mut table, "p50 latency", d.pct(0.50), k.pct(0.50));
    row(&mut table, "p99 latency", d.pct(0.99), k.pct(0.99));
    table
}
