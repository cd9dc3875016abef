//! Triggers, windows, run-time plans, stats, reset and rpm/tpm limits.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use keel_chaos::{Fault, FaultPlan, FaultRule, Trigger};
use serde_json::{json, Value};

/// Status of each of `n` non-streaming attempts on `o`.
async fn statuses(h: &keel_chaos::ChaosHandle, n: usize) -> Vec<u16> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(
            post_openai(h, "o", &openai_body(false))
                .await
                .unwrap()
                .status()
                .as_u16(),
        );
    }
    out
}

#[tokio::test]
async fn sequence_and_every_nth_pick_exact_attempts() {
    let h = start(&both(
        "[[upstream.fault]]\nkind = \"server_error\"\nsequence = [1, 2]\n[[upstream.fault]]\nkind = \"rate_limit\"\nevery = 3\n",
    ))
    .await;
    // First matching rule wins: 1 and 2 are 500s; 3 and 6 are 429s.
    assert_eq!(
        statuses(&h, 7).await,
        vec![500, 500, 429, 200, 200, 429, 200]
    );
    let stats = h.stats("o").unwrap();
    assert_eq!(stats.attempts, 7);
    assert_eq!(stats.by_outcome.get("server_error"), Some(&2));
    assert_eq!(stats.by_outcome.get("rate_limit"), Some(&2));
    assert_eq!(stats.by_outcome.get("ok"), Some(&3));
    let outcomes: Vec<&str> = stats.log.iter().map(|r| r.outcome.as_str()).collect();
    assert_eq!(
        outcomes,
        [
            "server_error",
            "server_error",
            "rate_limit",
            "ok",
            "ok",
            "rate_limit",
            "ok"
        ]
    );
    assert!(stats
        .log
        .iter()
        .all(|r| r.model == "gpt-4o-mini" && !r.stream));
    // The other upstream is untouched.
    assert_eq!(h.stats("a").unwrap().attempts, 0);
    assert!(h.stats("nope").is_none());
}

#[tokio::test]
async fn probability_is_deterministic_for_a_seed() {
    let toml = both("[[upstream.fault]]\nkind = \"server_error\"\nprobability = 0.5\n");
    let a = statuses(&start_seeded(&toml, 1).await, 40).await;
    let b = statuses(&start_seeded(&toml, 1).await, 40).await;
    let c = statuses(&start_seeded(&toml, 2).await, 40).await;
    assert_eq!(a, b);
    assert_ne!(a, c);
    let failures = a.iter().filter(|s| **s == 500).count();
    assert!((8..=32).contains(&failures), "{failures} of 40");
}

#[tokio::test]
async fn streaming_only_rules_skip_other_requests() {
    let h = start(&both(
        "[[upstream.fault]]\nkind = \"server_error\"\nstreaming_only = true\n",
    ))
    .await;
    assert_eq!(
        post_openai(&h, "o", &openai_body(false))
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        post_openai(&h, "o", &openai_body(true))
            .await
            .unwrap()
            .status(),
        500
    );
    let h = start(&both(
        "[[upstream.fault]]\nkind = \"server_error\"\nnon_streaming_only = true\n",
    ))
    .await;
    assert_eq!(
        post_openai(&h, "o", &openai_body(false))
            .await
            .unwrap()
            .status(),
        500
    );
    assert_eq!(
        post_openai(&h, "o", &openai_body(true))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn windows_gate_rules_by_time_since_start() {
    // Active now (0..1h) versus not yet active (from 1h); the boundaries
    // themselves are covered by the unit tests of the plan selection.
    let h = start(&both(
        "[[upstream.fault]]\nkind = \"overloaded\"\nwindow = { from = \"1h\" }\n[[upstream.fault]]\nkind = \"server_error\"\nwindow = { until = \"1h\" }\n",
    ))
    .await;
    assert_eq!(statuses(&h, 2).await, vec![500, 500]);
}

#[tokio::test]
async fn set_faults_replaces_the_plan_and_restarts_attempt_numbers() {
    let h = start(&both("")).await;
    assert_eq!(statuses(&h, 2).await, vec![200, 200]);
    h.set_faults(
        "o",
        FaultPlan {
            faults: vec![FaultRule::new(Fault::Auth, Trigger::Sequence(vec![1]))],
        },
    )
    .unwrap();
    assert_eq!(statuses(&h, 2).await, vec![401, 200]);
    assert_eq!(
        h.set_faults("zzz", FaultPlan::none())
            .unwrap_err()
            .to_string(),
        "unknown upstream \"zzz\", expected one of o, a"
    );
}

#[tokio::test]
async fn control_api_sets_faults_reports_stats_and_resets() {
    let h = start(&both("")).await;
    let c = client();
    let root = format!("http://{}", h.addr());
    let resp = c
        .put(format!("{root}/_chaos/upstreams/o/faults"))
        .body(r#"{"faults":[{"kind":"server_error","status":502,"every":2}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(statuses(&h, 4).await, vec![200, 502, 200, 502]);

    // Invalid plans and unknown upstreams are refused with a reason.
    let resp = c
        .put(format!("{root}/_chaos/upstreams/o/faults"))
        .body(r#"{"faults":[{"kind":"explode"}]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .starts_with("request body: faults[0].kind: unknown fault kind \"explode\""));
    let resp = c
        .put(format!("{root}/_chaos/upstreams/zzz/faults"))
        .body(r#"{"faults":[]}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["error"]["message"],
        "unknown upstream \"zzz\", expected one of o, a"
    );

    let v: Value = c
        .get(format!("{root}/_chaos/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["upstreams"]["o"]["attempts"], 4);
    assert_eq!(
        v["upstreams"]["o"]["by_outcome"],
        json!({"ok": 2, "server_error": 2})
    );
    assert_eq!(v["upstreams"]["o"]["log"][1]["status"], 502);
    assert_eq!(v["upstreams"]["a"]["attempts"], 0);
    let v: Value = c
        .get(format!("{root}/_chaos/stats?log=false"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["upstreams"]["o"]["log"], json!([]));

    let resp = c.post(format!("{root}/_chaos/reset")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(h.stats("o").unwrap().attempts, 0);
    // Attempt numbers restart: every = 2 fires on the 2nd attempt again.
    assert_eq!(statuses(&h, 2).await, vec![200, 502]);
    let health = c.get(format!("{root}/_chaos/health")).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

#[tokio::test]
async fn rpm_limit_is_enforced_with_provider_headers() {
    let h = start(
        "[[upstream]]\nname = \"o\"\nkind = \"openai\"\nrpm = 2\ntpm = 100000\n[[upstream]]\nname = \"a\"\nkind = \"anthropic\"\nrpm = 1\n",
    )
    .await;
    let resp = post_openai(&h, "o", &openai_body(false)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ratelimit-limit-requests"], "2");
    assert_eq!(resp.headers()["x-ratelimit-remaining-requests"], "1");
    assert_eq!(resp.headers()["x-ratelimit-limit-tokens"], "100000");
    assert!(resp.headers().contains_key("x-ratelimit-reset-tokens"));
    assert_eq!(
        post_openai(&h, "o", &openai_body(false))
            .await
            .unwrap()
            .status(),
        200
    );
    let resp = post_openai(&h, "o", &openai_body(false)).await.unwrap();
    assert_eq!(resp.status(), 429);
    let headers = resp.headers().clone();
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=30).contains(&retry), "{retry}");
    assert!(headers.contains_key("retry-after-ms"));
    let reset = headers["x-ratelimit-reset-requests"].to_str().unwrap();
    assert!(reset.ends_with('s'), "{reset}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "rate_limit_exceeded");
    assert!(v["error"]["message"]
        .as_str()
        .unwrap()
        .contains("requests per min (RPM): Limit 2"));
    assert_eq!(h.stats("o").unwrap().by_outcome.get("rpm_limit"), Some(&1));

    assert_eq!(
        post_anthropic(&h, "a", &anthropic_body(false))
            .await
            .unwrap()
            .status(),
        200
    );
    let resp = post_anthropic(&h, "a", &anthropic_body(false))
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert_eq!(
        resp.headers()["anthropic-ratelimit-requests-remaining"],
        "0"
    );
    assert!(resp
        .headers()
        .contains_key("anthropic-ratelimit-requests-reset"));
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "rate_limit_error");

    // Reset refills the buckets.
    h.reset();
    assert_eq!(
        post_openai(&h, "o", &openai_body(false))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn tpm_limit_counts_prompt_and_max_tokens() {
    let h = start("[[upstream]]\nname = \"o\"\nkind = \"openai\"\ntpm = 1000\n").await;
    let mut body = openai_body(false);
    body["max_tokens"] = json!(600);
    assert_eq!(post_openai(&h, "o", &body).await.unwrap().status(), 200);
    let resp = post_openai(&h, "o", &body).await.unwrap();
    assert_eq!(resp.status(), 429);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "tokens");
    assert_eq!(h.stats("o").unwrap().by_outcome.get("tpm_limit"), Some(&1));
}
