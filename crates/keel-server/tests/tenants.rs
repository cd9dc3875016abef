//! Tenants (virtual keys) and cost over HTTP against `keel chaos`: 401 in
//! each API's shape (before the body is parsed, and on `/v1/models`),
//! per-tenant routes, limits and budgets refused with no upstream attempt
//! (counted by the chaos server), spend equal to the usage chaos reported
//! times the price, in `/admin/status` too.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_chaos::{ChaosHandle, ChaosServer, Scenario};
use keel_engine::config::Config;
use keel_engine::Engine;
use serde_json::{json, Value};

async fn chaos() -> ChaosHandle {
    let scenario =
        Scenario::from_toml_str("[[upstream]]\nname = \"a\"\nkind = \"openai\"\n", "t.toml")
            .unwrap();
    ChaosServer::start(scenario, 1, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

/// Keel with tenants `alpha` (rpm 6, i.e. a burst of one), `beta` (token
/// from the environment, rpm 6), `gamma` (a tiny budget) and `delta` (only
/// route `other`).
async fn keel(ch: &ChaosHandle) -> (String, Engine) {
    let text = format!(
        r#"
[providers.a]
kind = "openai"
base_url = "{a}"
[deployments.a]
provider = "a"
model = "m"
input_price = 2.0
output_price = 6.0
[routes.r]
chain = ["a"]
[routes.other]
chain = ["a"]
[[tenants]]
name = "alpha"
token = "tok-alpha"
rpm = 6
[[tenants]]
name = "beta"
token = "${{BETA_TOKEN}}"
rpm = 6
[[tenants]]
name = "gamma"
token = "tok-gamma"
monthly_budget_usd = 0.0001
[[tenants]]
name = "delta"
token = "tok-delta"
routes = ["other"]
"#,
        a = ch.base_url("a")
    );
    let env = |k: &str| (k == "BETA_TOKEN").then(|| "tok-beta".to_string());
    let config = Config::from_toml_str(&text, "keel.toml", &env).unwrap();
    let engine = Engine::with_seed(config, 7).unwrap();
    let addr = keel_server::spawn(engine.clone(), "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    (format!("http://{addr}"), engine)
}

fn openai_body() -> Value {
    json!({"model": "r", "max_tokens": 50, "messages": [{"role": "user", "content": "Say something."}]})
}

async fn openai(base: &str, auth: Option<&str>) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .json(&openai_body());
    if let Some(t) = auth {
        req = req.header("authorization", format!("Bearer {t}"));
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap())
}

async fn anthropic(base: &str, key: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}/v1/messages"))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "r", "max_tokens": 50, "messages": [{"role": "user", "content": "Hi"}]}));
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// The `x-keel-cost-usd` header of an answer.
fn cost_usd(headers: &reqwest::header::HeaderMap) -> f64 {
    headers["x-keel-cost-usd"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

fn attempts(ch: &ChaosHandle) -> u64 {
    ch.stats("a").map(|s| s.attempts).unwrap_or(0)
}

#[tokio::test]
async fn wrong_or_missing_token_is_401_in_each_api_shape() {
    let ch = chaos().await;
    let (base, _) = keel(&ch).await;
    for auth in [None, Some("sk-wrong")] {
        let (status, _, body) = openai(&base, auth).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["type"], "authentication_error");
        assert_eq!(body["error"]["code"], "invalid_api_key");
    }
    for key in [None, Some("sk-wrong")] {
        let (status, body) = anthropic(&base, key).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "authentication_error");
    }
    // Right token, in each API's own header.
    assert_eq!(openai(&base, Some("tok-alpha")).await.0, 200);
    assert_eq!(anthropic(&base, Some("tok-beta")).await.0, 200);
    assert_eq!(
        attempts(&ch),
        2,
        "only authenticated requests reach upstream"
    );
}

/// Posts `body` as raw bytes to `path` with `headers`.
async fn post_raw(base: &str, path: &str, headers: &[(&str, &str)], body: &str) -> (u16, Value) {
    let mut req = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .header("content-type", "application/json")
        .body(body.to_string());
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn a_bad_token_is_401_even_with_a_malformed_body() {
    let ch = chaos().await;
    let (base, _) = keel(&ch).await;
    let broken = "{\"model\": \"r\", \"messages\": [";
    for auth in [&[][..], &[("authorization", "Bearer sk-wrong")][..]] {
        let (status, body) = post_raw(&base, "/v1/chat/completions", auth, broken).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["type"], "authentication_error");
        assert_eq!(body["error"]["code"], "invalid_api_key");
    }
    for auth in [
        &[("anthropic-version", "2023-06-01")][..],
        &[
            ("anthropic-version", "2023-06-01"),
            ("x-api-key", "sk-wrong"),
        ][..],
    ] {
        let (status, body) = post_raw(&base, "/v1/messages", auth, broken).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "authentication_error");
    }
    // With a valid key the same body is a 400 about the JSON.
    let (status, body) = post_raw(
        &base,
        "/v1/chat/completions",
        &[("authorization", "Bearer tok-alpha")],
        broken,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("not valid JSON"));
    let (status, body) =
        post_raw(&base, "/v1/messages", &[("x-api-key", "tok-beta")], broken).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(attempts(&ch), 0);
}

async fn models(base: &str, headers: &[(&str, &str)]) -> (u16, Value) {
    let mut req = reqwest::Client::new().get(format!("{base}/v1/models"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

fn ids(list: &Value) -> Vec<&str> {
    let mut ids: Vec<&str> = list["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

#[tokio::test]
async fn models_need_a_token_and_list_the_tenants_routes() {
    let ch = chaos().await;
    let (base, _) = keel(&ch).await;
    for auth in [&[][..], &[("authorization", "Bearer sk-wrong")][..]] {
        let (status, body) = models(&base, auth).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["error"]["type"], "authentication_error");
        assert_eq!(body["error"]["code"], "invalid_api_key");
    }
    for auth in [
        &[("anthropic-version", "2023-06-01")][..],
        &[
            ("anthropic-version", "2023-06-01"),
            ("x-api-key", "sk-wrong"),
        ][..],
    ] {
        let (status, body) = models(&base, auth).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], "authentication_error");
    }
    let (status, body) = models(&base, &[("authorization", "Bearer tok-alpha")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["other", "r"]);
    // delta may only use `other`, in either API's header.
    let (status, body) = models(&base, &[("authorization", "Bearer tok-delta")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["other"]);
    assert_eq!(body["first_id"], "other");
    let (status, body) = models(
        &base,
        &[
            ("anthropic-version", "2023-06-01"),
            ("x-api-key", "tok-delta"),
        ],
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["other"]);
}

#[tokio::test]
async fn admin_status_reports_this_months_spend() {
    let ch = chaos().await;
    let (base, engine) = keel(&ch).await;
    let (status, headers, _) = openai(&base, Some("tok-alpha")).await;
    assert_eq!(status, 200);
    let cost = cost_usd(&headers);
    let report: Value = reqwest::get(format!("{base}/admin/status"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let spend = &report["spend"];
    assert_eq!(spend["month"], keel_engine::Month::now().to_string());
    let alpha = spend["tenants"]["alpha"].as_f64().unwrap();
    assert!((alpha - cost).abs() < 1e-6, "{alpha} vs header {cost}");
    assert_eq!(spend["deployments"]["a"].as_f64().unwrap(), alpha);
    assert_eq!(engine.spend().await.tenants["alpha"], alpha);
    assert!(
        report["deployments"].is_array(),
        "the status is still there"
    );
}

#[tokio::test]
async fn a_tenants_limit_does_not_consume_anothers() {
    let ch = chaos().await;
    let (base, _) = keel(&ch).await;
    assert_eq!(openai(&base, Some("tok-alpha")).await.0, 200);
    let (status, headers, body) = openai(&base, Some("tok-alpha")).await;
    assert_eq!(status, 429, "{body}");
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("tenant 'alpha' is over its own rpm limit"),
        "{msg}"
    );
    assert!(headers.contains_key("retry-after"));
    // beta has the same limit, untouched by alpha's traffic.
    assert_eq!(openai(&base, Some("tok-beta")).await.0, 200);
    assert_eq!(
        attempts(&ch),
        2,
        "the refused request made no upstream attempt"
    );
}

#[tokio::test]
async fn budget_exhaustion_blocks_with_no_upstream_attempt() {
    let ch = chaos().await;
    let (base, engine) = keel(&ch).await;
    let (status, headers, _) = openai(&base, Some("tok-gamma")).await;
    assert_eq!(status, 200);
    let cost = cost_usd(&headers);
    assert!(
        cost > 0.0001,
        "one answer already exceeds the tiny budget: {cost}"
    );
    let (status, headers, body) = openai(&base, Some("tok-gamma")).await;
    assert_eq!(status, 429, "{body}");
    assert_eq!(body["error"]["code"], "budget_exceeded");
    // Retry-After points at the start of next month (UTC), when the budget renews.
    let retry_after: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let next_month = keel_store::Month::of_unix(now).next().start_unix() as u64;
    assert!(
        retry_after.abs_diff(next_month - now) <= 5,
        "retry-after {retry_after}, expected about {}",
        next_month - now
    );
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.contains("monthly budget of $0.00"), "{msg}");
    let (status, body) = anthropic(&base, Some("tok-gamma")).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(attempts(&ch), 1);
    assert!(engine.spend().await.tenants["gamma"] > 0.0001);
}

#[tokio::test]
async fn a_tenant_is_limited_to_its_routes() {
    let ch = chaos().await;
    let (base, _) = keel(&ch).await;
    let (status, _, body) = openai(&base, Some("tok-delta")).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("may not use the model `r`"));
    assert_eq!(attempts(&ch), 0);
}

#[tokio::test]
async fn spend_matches_the_usage_chaos_reported() {
    let ch = chaos().await;
    let (base, engine) = keel(&ch).await;
    let mut from_usage = 0.0;
    let mut from_headers = 0.0;
    for _ in 0..5 {
        // gamma is out of budget after one; use a tenant without limits.
        let client = reqwest::Client::new();
        let resp = client
            .post(format!("{base}/v1/chat/completions"))
            .header("authorization", "Bearer tok-delta")
            .json(&json!({"model": "other", "max_tokens": 50, "messages": [{"role": "user", "content": "Tell me more."}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        from_headers += cost_usd(resp.headers());
        let body: Value = resp.json().await.unwrap();
        let u = &body["usage"];
        from_usage += (u["prompt_tokens"].as_f64().unwrap() * 2.0
            + u["completion_tokens"].as_f64().unwrap() * 6.0)
            / 1e6;
    }
    let spend = engine.spend().await;
    let tenant = spend.tenants["delta"];
    assert!(
        (tenant - from_usage).abs() < 1e-12,
        "{tenant} vs {from_usage}"
    );
    assert!((spend.deployments["a"] - from_usage).abs() < 1e-12);
    // The header is rounded to a millionth of a dollar.
    assert!(
        (from_headers - from_usage).abs() < 5.0 * 1e-6,
        "{from_headers} vs {from_usage}"
    );
    eprintln!("spend: 5 requests, ${tenant:.8} (chaos usage x price ${from_usage:.8})");
}

#[tokio::test]
async fn streamed_answers_are_charged_to_the_tenant() {
    let ch = chaos().await;
    let (base, engine) = keel(&ch).await;
    let resp = reqwest::Client::new()
        .post(format!("{base}/v1/chat/completions"))
        .header("authorization", "Bearer tok-delta")
        .json(&json!({"model": "other", "max_tokens": 50, "stream": true,
                      "messages": [{"role": "user", "content": "Stream it."}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(text.contains("[DONE]"));
    let spent = engine
        .spend()
        .await
        .tenants
        .get("delta")
        .copied()
        .unwrap_or(0.0);
    assert!(spent > 0.0, "stream usage charged: {spent}");
}

#[tokio::test]
async fn requests_are_counted_per_tenant_in_metrics() {
    let ch = chaos().await;
    let (base, engine) = keel(&ch).await;
    let (status, _, _) = openai(&base, Some("tok-alpha")).await;
    assert_eq!(status, 200);
    let (status, _, _) = openai(&base, Some("tok-beta")).await;
    assert_eq!(status, 200);
    let text = engine.render_metrics();
    for tenant in ["alpha", "beta"] {
        let line = text
            .lines()
            .find(|l| {
                l.starts_with("keel_requests_total{") && l.contains(&format!("tenant=\"{tenant}\""))
            })
            .unwrap_or_else(|| panic!("no request line for tenant {tenant}:\n{text}"));
        assert!(line.ends_with(" 1"), "{line}");
    }
    assert!(!text.contains("tok-alpha") && !text.contains("tok-beta"));
}

#[tokio::test]
async fn idempotency_keys_are_scoped_by_tenant_and_need_a_token() {
    let ch = chaos().await;
    let (base, _engine) = keel(&ch).await;
    let send = |token: Option<&'static str>| {
        let base = base.clone();
        async move {
            let mut req = reqwest::Client::new()
                .post(format!("{base}/v1/chat/completions"))
                .header("idempotency-key", "same-key")
                .json(&openai_body());
            if let Some(t) = token {
                req = req.header("authorization", format!("Bearer {t}"));
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            (status, resp.json::<Value>().await.unwrap())
        }
    };
    let (s1, a) = send(Some("tok-alpha")).await;
    assert_eq!(s1, 200);
    let (s2, a_again) = send(Some("tok-alpha")).await;
    assert_eq!(s2, 200);
    assert_eq!(a, a_again, "the same tenant replays its answer");
    assert_eq!(ch.stats("a").unwrap().attempts, 1);
    // Another tenant with the same key gets its own answer, not alpha's.
    let (s3, _) = send(Some("tok-beta")).await;
    assert_eq!(s3, 200);
    assert_eq!(ch.stats("a").unwrap().attempts, 2);
    // Without a token nothing is replayed.
    let (s4, body) = send(None).await;
    assert_eq!(s4, 401, "{body}");
    assert_eq!(ch.stats("a").unwrap().attempts, 2);
}
