//! Native Responses deployments (`responses = true`): the official `openai`
//! Python SDK straight at `keel chaos`'s `/v1/responses` (faithfulness),
//! then through Keel with faults on the native primary, falling back to a
//! chat-completions deployment and to an Anthropic one (each posted at its
//! own path). Upstream attempts are counted from the chaos stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_chaos::{ChaosServer, Scenario};
use keel_engine::config::Config;
use serde_json::Value;

mod support;

const SCENARIO: &str = r#"
[[upstream]]
name = "direct"
kind = "openai"
[[upstream]]
name = "native"
kind = "openai"
[[upstream.fault]]
kind = "server_error"
status = 500
every = 3
[[upstream]]
name = "chat"
kind = "openai"
[[upstream]]
name = "native_down"
kind = "openai"
[[upstream.fault]]
kind = "server_error"
status = 503
every = 1
[[upstream]]
name = "an"
kind = "anthropic"
[[upstream]]
name = "native_cut"
kind = "openai"
[[upstream.fault]]
kind = "cut_stream"
after_chunks = 19
every = 1
"#;

fn config(ch: &keel_chaos::ChaosHandle) -> Config {
    let mut text = String::new();
    let native = "responses = true\n";
    for (name, kind, model, extra) in [
        (
            "direct",
            "openai",
            "gpt-4o-mini",
            "responses = true\nbuiltin_tools = [\"web_search\"]\n",
        ),
        ("native", "openai", "gpt-4o-mini", native),
        ("chat", "openai", "gpt-4o-mini", ""),
        ("native_down", "openai", "gpt-4o-mini", native),
        ("an", "anthropic", "claude-haiku-4-5", ""),
        ("native_cut", "openai", "gpt-4o-mini", native),
    ] {
        text.push_str(&format!(
            "[providers.{name}]\nkind = \"{kind}\"\nbase_url = \"{}\"\n\
             [deployments.{name}]\nprovider = \"{name}\"\nmodel = \"{model}\"\n{extra}",
            ch.base_url(name)
        ));
    }
    text.push_str(
        "[routes.tools]\nchain = [\"direct\", \"chat\"]\n\
         [routes.translated]\nchain = [\"chat\", \"an\"]\n\
         [responses]\nmax_items = 60\n\
         [routes.gpt]\nchain = [\"native\", \"chat\"]\n\
         [routes.claude]\nchain = [\"native_down\", \"an\"]\n\
         [routes.resume]\nchain = [\"native_cut\", \"an\"]\n\
         [routes.resume.policy]\nstream_commit_chars = 0\n\
         [policy]\nmax_attempts = 1\n[breaker]\nconsecutive_failures = 1000\n",
    );
    Config::from_toml_str(&text, "native.toml", &|_| None).unwrap()
}

/// Chaos and Keel over it.
async fn start(seed: u64) -> (keel_chaos::ChaosHandle, std::net::SocketAddr) {
    let scenario = Scenario::from_toml_str(SCENARIO, "native.toml").unwrap();
    let ch = ChaosServer::start(scenario, seed, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let addr = support::keel(config(&ch)).await;
    (ch, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_responses_deployments_fall_back_to_chat_and_anthropic() {
    let (ch, addr) = start(21).await;
    let args = vec![format!("http://{addr}"), ch.base_url("direct")];
    let facts = support::sdk_facts("responses/responses_native.py", args).await;
    let gpt = facts["gpt_calls"].as_u64().unwrap();
    let claude = facts["claude_calls"].as_u64().unwrap();

    // Every gpt request met the native deployment once, at /v1/responses
    // (a Responses body); every third failed there and went to the chat
    // deployment at /v1/chat/completions (a chat body): every call succeeded.
    let native = ch.stats("native").unwrap();
    assert_eq!(native.attempts, gpt, "{native:?}");
    assert_eq!(native.by_outcome.get("server_error"), Some(&(gpt / 3)));
    assert!(native.log.iter().all(|a| a.body.contains("\"input\"")
        && !a.body.contains("\"messages\"")
        && a.body.contains("\"model\":\"gpt-4o-mini\"")));
    let chat = ch.stats("chat").unwrap();
    assert_eq!(chat.attempts, gpt / 3, "{chat:?}");
    assert_eq!(chat.by_outcome.get("ok"), Some(&(gpt / 3)));
    assert!(chat.log.iter().all(|a| a.body.contains("\"messages\"")));
    // The unknown field reached the native deployment as the client sent it.
    assert!(native
        .log
        .iter()
        .any(|a| a.body.contains("\"prompt_cache_key\":\"cache-key-7\"")));
    // The second turn went to the native deployment with the first turn
    // expanded by Keel in place of previous_response_id.
    let turns: Vec<String> = serde_json::from_value(facts["turns"].clone()).unwrap();
    let last = &native.log.last().unwrap().body;
    assert!(!last.contains("previous_response_id"), "{last}");
    for said in [
        "My name is Ada and I like turtles",
        &turns[0],
        "Which animal do I like?",
    ] {
        let quoted = serde_json::to_string(said).unwrap();
        assert!(last.contains(&quoted), "{said} not in {last}");
    }

    // Every claude request failed on the native deployment and was answered
    // by the Anthropic one, at /v1/messages.
    let down = ch.stats("native_down").unwrap();
    assert_eq!(down.attempts, claude, "{down:?}");
    assert_eq!(down.by_outcome.get("server_error"), Some(&claude));
    let an = ch.stats("an").unwrap();
    assert_eq!(an.attempts, claude, "{an:?}");
    assert_eq!(an.by_outcome.get("ok"), Some(&claude));

    // The SDK straight at chaos: one attempt per call, none failed.
    let direct = ch.stats("direct").unwrap();
    assert_eq!(direct.by_outcome.get("ok"), Some(&direct.attempts));
    assert!(direct.attempts >= 7, "{direct:?}");
}

/// A native deployment's reasoning summaries, encrypted reasoning and web
/// search calls reach the official SDK as chaos sent them: every stream
/// event in order (`create(stream=True)` and the `responses.stream` helper),
/// the items of a plain answer, and the stored responses. A conversation
/// with a web search goes on at the native deployment and at a chat one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn native_events_and_items_keel_does_not_model_reach_the_client() {
    let (ch, addr) = start(24).await;
    let args = vec![format!("http://{addr}"), ch.base_url("direct")];
    let facts = support::sdk_facts("responses/responses_events.py", args).await;
    let calls = facts["keel_calls"].as_u64().unwrap();
    // Every call through Keel but the last met the native deployment once
    // (and the SDK's straight calls: one per comparison); the last was
    // translated for the chat deployment, reasoning and search left out.
    // (The resumed stream is not counted in `keel_calls`: route `resume`.)
    let direct = ch.stats("direct").unwrap();
    assert_eq!(direct.by_outcome.get("ok"), Some(&direct.attempts));
    assert_eq!(direct.attempts, (calls - 1) + 3, "{direct:?}");
    let chat = ch.stats("chat").unwrap();
    assert_eq!(chat.attempts, 1, "{chat:?}");
    let sent = &chat.log[0].body;
    assert!(
        !sent.contains("web_search")
            && !sent.contains("encrypted")
            && sent.contains("\"messages\""),
        "{sent}"
    );
    // The native stream cut after its first words was resumed at the
    // Anthropic deployment, asked for the rest of the answer.
    let cut = ch.stats("native_cut").unwrap();
    assert_eq!(cut.by_outcome.get("cut_stream"), Some(&1), "{cut:?}");
    let an = ch.stats("an").unwrap();
    assert_eq!(an.attempts, 1, "{an:?}");
    let partial: String = serde_json::from_value(facts["partial"].clone()).unwrap();
    let quoted = serde_json::to_string(&partial).unwrap();
    let escaped = &quoted[1..quoted.len() - 1];
    assert!(
        !partial.is_empty() && an.log[0].body.contains(escaped),
        "{partial:?} not in {}",
        an.log[0].body
    );
    // The native continuation got the history without the provider's own items.
    let last = &direct
        .log
        .iter()
        .find(|a| a.body.contains("And what about whales?"))
        .unwrap()
        .body;
    assert!(
        last.contains("And what about whales?")
            && !last.contains("web_search_call")
            && !last.contains("\"type\":\"reasoning\""),
        "{last}"
    );
}

/// The `openai-agents` package runs an agent with two function tools ten
/// times through Keel, faults on the native primary: every run completes,
/// each model call met the primary once, and every third went to the chat
/// deployment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_agents_agent_completes_every_run_through_faults() {
    let (ch, addr) = start(22).await;
    let facts = support::sdk_facts(
        "responses/responses_agents.py",
        vec![format!("http://{addr}")],
    )
    .await;
    let calls = facts["model_calls"].as_u64().unwrap();
    // Each run: a call that asks for a tool, then one that answers with its output.
    assert_eq!(calls, 20, "{facts}");
    assert_eq!(facts["tool_calls"].as_u64(), Some(10), "{facts}");
    let native = ch.stats("native").unwrap();
    assert_eq!(native.attempts, calls, "{native:?}");
    assert_eq!(native.by_outcome.get("server_error"), Some(&(calls / 3)));
    let chat = ch.stats("chat").unwrap();
    assert_eq!(chat.attempts, calls / 3, "{chat:?}");
    assert_eq!(chat.by_outcome.get("ok"), Some(&(calls / 3)));
}

/// Built-in tools, `reasoning` and native-only fields reach only the
/// deployments that can serve them; a request none of a route's can serve,
/// a bad tool type, a conversation over `max_items` and a missing or
/// expired response id are answered before any upstream call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_only_native_deployments_serve_goes_only_to_them() {
    let (ch, addr) = start(23).await;
    let http = reqwest::Client::new();
    let post = |body: Value| {
        let req = http
            .post(format!("http://{addr}/v1/responses"))
            .json(&body)
            .send();
        async move {
            let r = req.await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let f = serde_json::json!({"type": "function", "name": "f", "parameters": {"type": "object"}});
    let (status, body) = post(serde_json::json!({
        "model": "tools", "input": "Hi", "tools": [{"type": "web_search"}, f],
        "reasoning": {"effort": "low"}, "truncation": "auto", "include": ["reasoning.encrypted_content"],
    }))
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["object"], "response");
    let direct = ch.stats("direct").unwrap();
    assert_eq!(direct.attempts, 1);
    let sent: Value = serde_json::from_str(&direct.log[0].body).unwrap();
    assert_eq!(sent["tools"][0]["type"], "web_search");
    assert_eq!(sent["reasoning"]["effort"], "low");
    assert_eq!(sent["truncation"], "auto");
    assert_eq!(sent["model"], "gpt-4o-mini");

    let rejected = [
        (
            serde_json::json!({"model": "tools", "input": "Hi", "tools": [{"type": "file_search"}]}),
            "no deployment of route 'tools' can serve this request (direct: does not serve the built-in tool `file_search` (not in its builtin_tools); chat: does not serve the built-in tool `file_search`",
        ),
        (
            serde_json::json!({"model": "translated", "input": "Hi", "truncation": "auto"}),
            "chat: cannot honour `truncation`: not a native Responses deployment (responses = true)",
        ),
        (
            serde_json::json!({"model": "tools", "input": "Hi", "tools": [{"type": "teleport"}]}),
            "tools[0].type: tools of type `teleport` are not supported",
        ),
        (
            serde_json::json!({"model": "tools", "input": vec![serde_json::json!({"role": "user", "content": "x"}); 61]}),
            "input: the conversation holds 61 items, more than [responses] max_items = 60",
        ),
    ];
    for (request, want) in rejected {
        let (status, body) = post(request.clone()).await;
        let message = body["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(status, 400, "{request}: {body}");
        assert!(message.contains(want), "{request}: {message}");
        assert_eq!(body["error"]["type"], "invalid_request_error");
    }
    // None of those reached an upstream.
    assert_eq!(ch.stats("direct").unwrap().attempts, 1);
    assert_eq!(ch.stats("chat").unwrap().attempts, 0);
    assert_eq!(ch.stats("an").unwrap().attempts, 0);

    // `reasoning` is passed where it is taken and dropped elsewhere: the chat
    // deployment (no `reasoning = true`) gets no `reasoning_effort`.
    let (status, body) = post(
        serde_json::json!({"model": "translated", "input": "Hi", "reasoning": {"effort": "high"}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let chat = ch.stats("chat").unwrap();
    assert_eq!(chat.attempts, 1);
    assert!(
        !chat.log[0].body.contains("reasoning"),
        "{}",
        chat.log[0].body
    );

    // A response id older than the TTL has expired; any other missing one is unknown.
    let get = |id: &str| {
        let req = http.get(format!("http://{addr}/v1/responses/{id}")).send();
        async move {
            let r = req.await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (status, body) = get("resp_00000001keel_x_1").await;
    assert_eq!(status, 404);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("has expired: stored responses are kept for 30 days ([responses] ttl)"),
        "{message}"
    );
    let (status, body) = get(body_id(
        &post(serde_json::json!({"model": "tools", "input": "Hi", "store": false}))
            .await
            .1,
    ))
    .await;
    assert_eq!(status, 404);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("no stored response with id"),
        "{body}"
    );
}

fn body_id(v: &Value) -> &str {
    v["id"].as_str().unwrap()
}
