//! Metrics against the chaos upstream's own counts: after a scripted run,
//! `/metrics` must agree exactly with what the fake upstreams saw
//! (attempts per deployment and class, fallbacks), and the breaker gauge
//! must follow an outage started and stopped with `set_faults`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use keel_chaos::{ChaosHandle, ChaosServer, Fault, FaultPlan, FaultRule, Scenario};
use keel_engine::config::Config;
use keel_engine::{ChatCall, Engine, StreamItem};
use keel_wire::openai::{ChatRequest, Message};

mod common;
use common::report::{record, record_report, recorded, report, runs, upstreams, Report};

async fn chaos(a_faults: &str) -> ChaosHandle {
    let toml = format!(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\napi_key = \"sk-a\"\n{a_faults}\n\
         [[upstream]]\nname = \"b\"\nkind = \"anthropic\"\napi_key = \"sk-b\"\n"
    );
    let scenario = Scenario::from_toml_str(&toml, "test.toml").unwrap();
    ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn engine(ch: &ChaosHandle, extra: &str) -> Engine {
    let text = format!(
        r#"
[providers.a]
kind = "openai"
base_url = "{a}"
api_key = "sk-a"
[providers.b]
kind = "anthropic"
base_url = "{b}"
api_key = "sk-b"
[deployments.a]
provider = "a"
model = "gpt-test"
input_price = 2.5
output_price = 10.0
[deployments.b]
provider = "b"
model = "claude-test"
[routes.r]
chain = ["a", "b"]
[policy]
backoff_base = "5ms"
backoff_cap = "20ms"
attempt_timeout = "2s"
first_token_timeout = "2s"
{extra}
"#,
        a = ch.base_url("a"),
        b = ch.base_url("b"),
    );
    Engine::with_seed(
        Config::from_toml_str(&text, "test.toml", &|_| None).unwrap(),
        7,
    )
    .unwrap()
}

fn call(model: &str, stream: bool) -> ChatCall {
    let mut r = ChatRequest::new(model, vec![Message::user("Say something.")]);
    r.max_tokens = Some(500);
    if stream {
        r.stream = Some(true);
    }
    ChatCall::openai(r)
}

/// Parses the exposition into (name, labels) -> value.
fn parse(text: &str) -> Vec<(String, BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value
            .parse()
            .unwrap_or_else(|_| panic!("bad value: {line}"));
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').unwrap();
                let labels = body
                    .split("\",")
                    .filter(|p| !p.is_empty())
                    .map(|p| {
                        let (k, v) = p.split_once("=\"").unwrap();
                        (k.to_string(), v.trim_end_matches('"').to_string())
                    })
                    .collect();
                (name.to_string(), labels)
            }
        };
        out.push((name, labels, value));
    }
    out
}

/// Sum of the series of `name` whose labels include `want`.
fn sum(text: &str, name: &str, want: &[(&str, &str)]) -> f64 {
    parse(text)
        .into_iter()
        .filter(|(n, l, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| v)
        .sum()
}

/// Chaos outcome names -> Keel failure classes.
fn class_of(outcome: &str) -> &str {
    match outcome {
        "ok" => "ok",
        "rate_limit" => "rate_limited",
        "reset" => "network",
        other => other, // server_error, overloaded, quota_exhausted
    }
}

#[tokio::test]
async fn metrics_match_chaos_stats_after_a_scripted_run() {
    let ch = chaos(
        "[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\nsequence = [1, 2]\n\
         [[upstream.fault]]\nkind = \"rate_limit\"\nsequence = [4]\nretry_after = \"10ms\"\nheader_style = \"ms\"\n\
         [[upstream.fault]]\nkind = \"overloaded\"\nsequence = [6]\n\
         [[upstream.fault]]\nkind = \"quota_exhausted\"\nsequence = [8]\n\
         [[upstream.fault]]\nkind = \"reset\"\nsequence = [9]\n",
    )
    .await;
    let e = engine(&ch, "");

    // Non-streaming phase: tokens and cost are checked against the answers.
    let (mut tokens_in, mut tokens_out, mut answered_by_b) = (0u64, 0u64, 0u64);
    let mut retries_by_class: BTreeMap<String, u64> = BTreeMap::new();
    for _ in 0..10 {
        let out = e.chat(call("r", false)).await.unwrap();
        record(&out.meta);
        for a in &out.meta.attempts {
            if a.next == "retry" {
                *retries_by_class
                    .entry(a.class.unwrap().to_string())
                    .or_default() += 1;
            }
        }
        match out.meta.deployment.as_deref() {
            Some("a") => {
                let u = out.response().usage.as_ref().unwrap();
                tokens_in += u64::from(u.prompt_tokens);
                tokens_out += u64::from(u.completion_tokens);
            }
            Some("b") => answered_by_b += 1,
            other => panic!("answered by {other:?}"),
        }
    }
    let m = e.render_metrics();
    let a = [("deployment", "a")];
    assert_eq!(
        sum(&m, "keel_tokens_total", &[a[0], ("direction", "in")]),
        tokens_in as f64
    );
    assert_eq!(
        sum(&m, "keel_tokens_total", &[a[0], ("direction", "out")]),
        tokens_out as f64
    );
    assert!(tokens_in > 0 && tokens_out > 0);
    let cost = sum(&m, "keel_cost_usd_total", &a);
    let expected = (tokens_in as f64 * 2.5 + tokens_out as f64 * 10.0) / 1e6;
    assert!((cost - expected).abs() < 1e-12, "cost {cost} vs {expected}");

    // Streaming phase, then an unknown model.
    for _ in 0..3 {
        let mut out = e.chat_stream(call("r", true)).await.unwrap();
        while let Some(item) = out.items.recv().await {
            assert!(matches!(item, StreamItem::Chunk(_)), "{item:?}");
        }
        record(&out.meta);
    }
    record(&e.chat(call("no-such-model", false)).await.unwrap_err().meta);
    assert_eq!(
        runs(&recorded()) + &upstreams(&ch, &["a", "b"]),
        "== request 1\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=retry delay_ms=0 reason=\"The server had an error while processing your request. Sorry about that!; backoff\"\n\
         attempt a#2 class=server_error status=500 next=retry delay_ms=6 reason=\"The server had an error while processing your request. Sorry about that!; backoff\"\n\
         attempt a#3 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=3 truncated=false refusal=false cache=none cost_usd=0.0003575\n\
         == request 2\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=rate_limited status=429 next=retry delay_ms=10 reason=\"Rate limit reached for gpt-test in organization org-chaos on requests per min (RPM): Limit 60, Used 60, Requested 1. Please try again in 10ms. Visit https://platform.openai.com/account/rate-limits to learn more.; hint retry-after-ms\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0.0003575\n\
         == request 3\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=overloaded status=503 next=retry delay_ms=2 reason=\"The engine is currently overloaded, please try again later.; backoff\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0.0003575\n\
         == request 4\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=quota_exhausted status=429 next=fallback delay_ms=- reason=\"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         == request 5\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=network status=- next=retry delay_ms=10 reason=\"client error (SendRequest): connection closed before message completed; backoff\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0.0003575\n\
         == requests 6-10\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0.0003575\n\
         == requests 11-13\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == request 14\n\
         request_id=\"\" route=no-such-model\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=0 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=18 ok=12 overloaded=1 quota_exhausted=1 rate_limit=1 reset=1 server_error=2\n\
         upstream b: attempts=1 ok=1\n"
    );
    let m = e.render_metrics();

    // Attempts per deployment and class == what each upstream saw.
    for dep in ["a", "b"] {
        let seen = ch.stats(dep).unwrap();
        assert_eq!(
            sum(&m, "keel_attempts_total", &[("deployment", dep)]),
            seen.attempts as f64,
            "attempts of {dep}"
        );
        for (outcome, n) in &seen.by_outcome {
            assert_eq!(
                sum(
                    &m,
                    "keel_attempts_total",
                    &[("deployment", dep), ("class", class_of(outcome))]
                ),
                *n as f64,
                "{dep}: chaos outcome {outcome}"
            );
        }
    }
    let seen_a = ch.stats("a").unwrap();
    // 13 requests on a, plus 4 retries (2 server errors, rate limit, overloaded, reset).
    assert_eq!(seen_a.attempts, 18, "{:?}", seen_a.by_outcome);
    assert_eq!(seen_a.by_outcome["server_error"], 2);

    // Fallbacks: each answer from b is one chain fallback at depth 1 and one b attempt.
    let seen_b = ch.stats("b").unwrap();
    assert_eq!(answered_by_b, 1);
    assert_eq!(
        sum(
            &m,
            "keel_fallbacks_total",
            &[("route", "r"), ("tier", "chain"), ("depth", "1")]
        ),
        seen_b.attempts as f64
    );
    assert_eq!(sum(&m, "keel_fallbacks_total", &[("tier", "static")]), 0.0);

    // Retries by class == the attempt logs.
    for (class, n) in &retries_by_class {
        assert_eq!(
            sum(&m, "keel_retries_total", &[("class", class)]),
            *n as f64,
            "{class}"
        );
    }
    assert_eq!(
        sum(&m, "keel_retries_total", &[]),
        retries_by_class.values().sum::<u64>() as f64
    );
    assert_eq!(retries_by_class.get("server_error"), Some(&2));

    // Requests by route, tenant, API and outcome; unknown models are `unknown`.
    let ok = [
        ("route", "r"),
        ("tenant", "default"),
        ("api", "openai"),
        ("outcome", "ok"),
    ];
    assert_eq!(sum(&m, "keel_requests_total", &ok), 13.0);
    assert_eq!(
        sum(
            &m,
            "keel_requests_total",
            &[("route", "unknown"), ("outcome", "unknown_route")]
        ),
        1.0
    );
    assert!(
        !m.contains("no-such-model"),
        "a raw model string became a label"
    );

    // Latency histograms: one end-to-end sample per request, one TTFT per stream.
    let e2e = |stream| {
        sum(
            &m,
            "keel_request_duration_seconds_count",
            &[("route", "r"), ("stream", stream)],
        )
    };
    assert_eq!(e2e("false"), 10.0);
    assert_eq!(e2e("true"), 3.0);
    assert_eq!(
        sum(
            &m,
            "keel_time_to_first_token_seconds_count",
            &[("route", "r")]
        ),
        3.0
    );
    assert_eq!(
        sum(&m, "keel_attempt_duration_seconds_count", &[]),
        (seen_a.attempts + seen_b.attempts) as f64
    );

    // Nothing tripped.
    assert_eq!(sum(&m, "keel_breaker_state", &[]), 0.0);
    assert_eq!(sum(&m, "keel_retry_budget_exhausted_total", &[]), 0.0);
    assert!(m.ends_with("# EOF\n"));

    // The status report agrees.
    let s = e.status();
    let route = s.routes.iter().find(|r| r.name == "r").unwrap();
    assert_eq!((route.requests, route.successes), (13, 13));
    let da = &s.deployments[0];
    assert_eq!(da.stats.name, "a");
    assert_eq!(da.recent_latency_ms.len() as u64, seen_a.attempts);
    assert_eq!(da.recent_mix.get("server_error"), Some(&2));
    // 6 failures in the last 18 attempts: below 90% success.
    assert_eq!(da.health, "degraded");
    assert_eq!(da.recent_success_rate, Some(12.0 / 18.0));
}

#[tokio::test]
async fn breaker_gauge_follows_an_outage() {
    let ch = chaos("").await;
    let e = engine(
        &ch,
        "[breaker]\nconsecutive_failures = 3\nopen_for = \"100ms\"\nmax_open_for = \"100ms\"\n",
    );
    let gauge = |e: &Engine| {
        sum(
            &e.render_metrics(),
            "keel_breaker_state",
            &[("deployment", "a")],
        )
    };
    assert_eq!(gauge(&e), 0.0);
    record(&e.chat(call("r", false)).await.unwrap().meta);

    // Outage: every attempt on `a` fails until the breaker opens.
    ch.set_faults(
        "a",
        FaultPlan {
            faults: vec![FaultRule::always(Fault::ServerError { status: 503 })],
        },
    )
    .unwrap();
    let mut sent = 0;
    while gauge(&e) != 2.0 {
        sent += 1;
        assert!(sent <= 10, "breaker did not open after {sent} requests");
        let out = e.chat(call("r", false)).await.unwrap();
        assert_eq!(out.meta.deployment.as_deref(), Some("b"));
        record(&out.meta);
    }
    assert_eq!(
        runs(&recorded()) + &upstreams(&ch, &["a", "b"]),
        "== request 1\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0.0003575\n\
         == request 2\n\
         request_id=\"\" route=r\n\
         attempt a#1 class=overloaded status=503 next=retry delay_ms=0 reason=\"The server is overloaded or not ready yet.; backoff\"\n\
         attempt a#2 class=overloaded status=503 next=retry delay_ms=6 reason=\"The server is overloaded or not ready yet.; backoff\"\n\
         attempt a#3 class=overloaded status=503 next=fallback delay_ms=- reason=\"The server is overloaded or not ready yet.\"\n\
         attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=b fallback_depth=1 tier=Chain upstream_attempts=4 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=4 ok=1 server_error=3\n\
         upstream b: attempts=1 ok=1\n"
    );
    let m = e.render_metrics();
    let tr = |from, to| {
        sum(
            &m,
            "keel_breaker_transitions_total",
            &[("deployment", "a"), ("from", from), ("to", to)],
        )
    };
    assert_eq!(tr("closed", "open"), 1.0);
    assert_eq!(sum(&m, "keel_breaker_state", &[("deployment", "b")]), 0.0);
    let status = e.status();
    assert_eq!(status.deployments[0].stats.breaker, "open");
    assert_eq!(status.deployments[0].health, "down");

    // While open, `a` is skipped without an attempt.
    let before = ch.stats("a").unwrap().attempts;
    let out = e.chat(call("r", false)).await.unwrap();
    if e.status().deployments[0].stats.breaker == "open" {
        assert_eq!(ch.stats("a").unwrap().attempts, before);
        assert!(out.meta.attempts[0].reason.contains("breaker open"));
        // Only while the breaker is open, and its time left is measured.
        assert_eq!(
            Report::new(&out.meta)
                .mask("breaker open for another ")
                .chaos(&ch, &["a", "b"])
                .render(),
            "request_id=\"\" route=r\n\
             attempt a#0 class=- status=- next=skip delay_ms=- reason=\"breaker open for another N ms\"\n\
             attempt b#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
             deployment=b fallback_depth=1 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
             upstream a: attempts=4 ok=1 server_error=3\n\
             upstream b: attempts=2 ok=2\n"
        );
        let m = e.render_metrics();
        assert!(sum(&m, "keel_breaker_rejections_total", &[("deployment", "a")]) >= 1.0);
    }

    // The outage ends: the next probe after `open_for` closes the breaker.
    ch.set_faults("a", FaultPlan::none()).unwrap();
    let mut polls = 0;
    while gauge(&e) != 0.0 {
        polls += 1;
        assert!(polls <= 200, "breaker did not close");
        tokio::time::sleep(Duration::from_millis(10)).await;
        e.chat(call("r", false)).await.unwrap();
    }
    let m = e.render_metrics();
    let tr = |from, to| {
        sum(
            &m,
            "keel_breaker_transitions_total",
            &[("deployment", "a"), ("from", from), ("to", to)],
        )
    };
    assert_eq!(tr("closed", "open"), 1.0);
    assert_eq!(tr("half_open", "closed"), 1.0);
    let status = e.status();
    assert_eq!(status.deployments[0].stats.breaker, "closed");
    assert_ne!(status.deployments[0].health, "down");
}

#[tokio::test]
async fn static_tier_and_limiter_are_counted() {
    let ch = chaos("").await;
    let e = engine(
        &ch,
        "max_attempts = 1\n\
         [deployments.c]\nprovider = \"b\"\nmodel = \"claude-test\"\nrpm = 1\n\
         [routes.s]\nchain = [\"a\"]\nstatic_response = \"Sorry, try later.\"\n\
         [routes.lim]\nchain = [\"c\"]\n",
    );
    // The static tier: the only deployment is down.
    ch.set_faults(
        "a",
        FaultPlan {
            faults: vec![FaultRule::always(Fault::ServerError { status: 500 })],
        },
    )
    .unwrap();
    let out = e.chat(call("s", false)).await.unwrap();
    assert_eq!(out.response().text(), Some("Sorry, try later."));
    let static_report = report(&out.meta, &ch, &["a", "b"]);
    // The limiter: one request a minute, the next is refused at once.
    let mut refused = 0;
    for _ in 0..5 {
        let out = e.chat(call("lim", false)).await;
        // The wait a refusal names is measured from the clock.
        record_report(
            Report::new(match &out {
                Ok(o) => &o.meta,
                Err(err) => &err.meta,
            })
            .mask("for another "),
        );
        if out.is_err() {
            refused += 1;
        }
    }
    assert!(refused >= 1);
    assert_eq!(
        static_report + "== limited\n" + &runs(&recorded()) + &upstreams(&ch, &["a", "b"]),
        "request_id=\"\" route=s\n\
         attempt a#1 class=server_error status=500 next=fallback delay_ms=- reason=\"The server had an error while processing your request. Sorry about that!\"\n\
         deployment=- fallback_depth=0 tier=Static upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 server_error=1\n\
         upstream b: attempts=0\n\
         == limited\n\
         == request 1\n\
         request_id=\"\" route=lim\n\
         attempt c#1 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=c fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         == requests 2-5\n\
         request_id=\"\" route=lim\n\
         attempt c#0 class=- status=- next=skip delay_ms=- reason=\"local rate limit (Rpm) for another N ms\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=0 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 server_error=1\n\
         upstream b: attempts=1 ok=1\n"
    );

    let m = e.render_metrics();
    assert_eq!(
        sum(
            &m,
            "keel_fallbacks_total",
            &[("route", "s"), ("tier", "static"), ("depth", "1")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &m,
            "keel_requests_total",
            &[("route", "s"), ("outcome", "static")]
        ),
        1.0
    );
    assert_eq!(
        sum(
            &m,
            "keel_limiter_rejections_total",
            &[("deployment", "c"), ("cause", "rpm")]
        ),
        f64::from(refused)
    );
    assert_eq!(
        sum(
            &m,
            "keel_requests_total",
            &[("route", "lim"), ("outcome", "rate_limited")]
        ),
        f64::from(refused)
    );
    assert_eq!(
        sum(
            &m,
            "keel_limiter_wait_seconds_count",
            &[("deployment", "c")]
        ),
        f64::from(5 - refused)
    );
    let s = e.status();
    let c = s.deployments.iter().find(|d| d.stats.name == "c").unwrap();
    assert!(
        c.limiter_headroom.requests < 1.0,
        "{:?}",
        c.limiter_headroom
    );
}

#[tokio::test]
async fn retry_budget_exhaustion_is_counted() {
    let ch = chaos("[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n").await;
    let e = engine(&ch, "[retry_budget]\nratio = 0.0\nmin_per_sec = 0\n");
    let err = e.chat(call("r", false)).await.unwrap_err();
    assert_eq!(err.status, 503, "{}", err.message);
    assert_eq!(ch.stats("a").unwrap().attempts, 1);
    assert_eq!(
        report(&err.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=r\n\
         attempt a#1 class=server_error status=500 next=retry delay_ms=0 reason=\"The server had an error while processing your request. Sorry about that!; backoff\"\n\
         attempt a#0 class=- status=- next=skip delay_ms=- reason=\"retry budget exhausted\"\n\
         attempt b#0 class=- status=- next=skip delay_ms=- reason=\"retry budget exhausted\"\n\
         deployment=- fallback_depth=0 tier=Chain upstream_attempts=1 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=1 server_error=1\n\
         upstream b: attempts=0\n"
    );
    let m = e.render_metrics();
    // Two attempts refused: the retry on `a`, then the fallback to `b`
    // (which has no record of answering well, so it is not exempt).
    assert_eq!(sum(&m, "keel_retry_budget_exhausted_total", &[]), 2.0);
    assert_eq!(sum(&m, "keel_retry_budget_available", &[]), 0.0);
    assert_eq!(sum(&m, "keel_retry_budget_ratio", &[]), 0.0);
    assert_eq!(
        sum(
            &m,
            "keel_requests_total",
            &[("route", "r"), ("outcome", "unavailable")]
        ),
        1.0
    );
    assert_eq!(sum(&m, "keel_attempts_total", &[("deployment", "b")]), 0.0);
}
