//! The official `openai` and `anthropic` Python SDKs through Keel, both APIs,
//! plain and streaming, with chains that cross providers. The interpreter
//! comes from `KEEL_TEST_PYTHON`, set by `scripts/test` (which installs the
//! SDKs into a venv).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_chaos::{ChaosServer, Scenario};

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_work_unchanged_through_keel() {
    let scenario = Scenario::from_toml_str(
        "[[upstream]]\nname = \"oa\"\nkind = \"openai\"\n\
         [[upstream]]\nname = \"an\"\nkind = \"anthropic\"\n\
         [[upstream]]\nname = \"flaky\"\nkind = \"openai\"\n[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\nevery = 2\n\
         [[upstream]]\nname = \"dead\"\nkind = \"openai\"\n[[upstream.fault]]\nkind = \"server_error\"\nstatus = 500\n",
        "sdk.toml",
    )
    .unwrap();
    let ch = ChaosServer::start(scenario, 9, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let text = format!(
        r#"
[providers.oa]
kind = "openai"
base_url = "{oa}"
api_key = "sk-upstream-oa"
[providers.an]
kind = "anthropic"
base_url = "{an}"
api_key = "sk-upstream-an"
[providers.flaky]
kind = "openai"
base_url = "{flaky}"
[providers.dead]
kind = "openai"
base_url = "{dead}"
[deployments.oa]
provider = "oa"
model = "gpt-4o-mini"
[deployments.an]
provider = "an"
model = "claude-haiku-4-5"
[deployments.flaky]
provider = "flaky"
model = "gpt-4o-mini"
[deployments.dead]
provider = "dead"
model = "gpt-4o-mini"
[routes.gpt]
chain = ["oa"]
[routes.claude]
chain = ["an"]
[routes.gpt-x]
chain = ["an"]
[routes.claude-x]
chain = ["oa"]
[routes.flaky]
chain = ["flaky", "an"]
[routes.dead]
chain = ["dead"]
[policy]
max_attempts = 1
[breaker]
consecutive_failures = 1000
"#,
        oa = ch.base_url("oa"),
        an = ch.base_url("an"),
        flaky = ch.base_url("flaky"),
        dead = ch.base_url("dead"),
    );
    let addr = support::keel_toml(&text, "sdk.toml").await;
    support::sdk_script(
        "sdk/gateway_sdk.py",
        vec![format!("http://{addr}")],
        "all SDK checks passed",
    )
    .await;
    // The flaky upstream failed every second attempt; Keel fell back each time.
    assert!(ch.stats("flaky").unwrap().attempts > 0);
    assert!(ch.stats("dead").unwrap().attempts >= 2);
}

/// The SDKs' own timeouts (`x-stainless-read-timeout`, `x-stainless-timeout`)
/// bound Keel's deadline: with a hanging primary and a very slow secondary,
/// each SDK client (3 s timeout, no retries) gets Keel's 504 before it
/// gives up, plain and streaming. The upstreams saw one attempt each per
/// request at most: Keel stopped at the client's deadline.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_answers_before_the_sdk_client_times_out() {
    let scenario = Scenario::from_toml_str(
        "[[upstream]]\nname = \"hang\"\nkind = \"openai\"\n[[upstream.fault]]\nkind = \"hang\"\n\
         [[upstream]]\nname = \"slow\"\nkind = \"anthropic\"\n[[upstream.fault]]\nkind = \"slow_first_byte\"\ndelay = \"30s\"\n",
        "deadline.toml",
    )
    .unwrap();
    let ch = ChaosServer::start(scenario, 9, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let text = format!(
        r#"
[providers.hang]
kind = "openai"
base_url = "{hang}"
[providers.slow]
kind = "anthropic"
base_url = "{slow}"
[deployments.hang]
provider = "hang"
model = "gpt-4o-mini"
[deployments.slow]
provider = "slow"
model = "claude-haiku-4-5"
[routes.slow]
chain = ["hang", "slow"]
[policy]
max_attempts = 1
timeout = "60s"
attempt_timeout = "60s"
first_token_timeout = "60s"
"#,
        hang = ch.base_url("hang"),
        slow = ch.base_url("slow"),
    );
    let addr = support::keel_toml(&text, "deadline.toml").await;
    support::sdk_script(
        "sdk/client_deadline.py",
        vec![format!("http://{addr}")],
        "all client deadline checks passed",
    )
    .await;
    // Four requests, each tried on the hanging primary first and given up
    // at the adaptive first-token deadline (its 1 s floor; plain requests
    // are asked as streams, `stream_upstream`), then sent to the slow
    // secondary, which the client's deadline cut.
    assert_eq!(ch.stats("hang").unwrap().attempts, 4);
    assert_eq!(ch.stats("slow").unwrap().attempts, 4);
}

/// `stream_upstream`: a plain answer Keel assembled from the provider's
/// stream parses in the official SDKs exactly as the provider's plain
/// answer does (but for its id and timestamp), text and tool calls, both
/// client APIs on both providers. Each pair of routes serves the same
/// upstream through a streaming deployment and a plain one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_assembled_from_a_stream_parses_like_the_plain_answer() {
    let scenario = Scenario::from_toml_str(
        "[[upstream]]\nname = \"oa\"\nkind = \"openai\"\n\
         [[upstream]]\nname = \"an\"\nkind = \"anthropic\"\n",
        "assembled.toml",
    )
    .unwrap();
    let ch = ChaosServer::start(scenario, 9, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let text = format!(
        r#"
[providers.oa]
kind = "openai"
base_url = "{oa}"
[providers.an]
kind = "anthropic"
base_url = "{an}"
[deployments.oa]
provider = "oa"
model = "gpt-4o-mini"
stream_upstream = true
[deployments.oa-plain]
provider = "oa"
model = "gpt-4o-mini"
stream_upstream = false
[deployments.an]
provider = "an"
model = "claude-haiku-4-5"
stream_upstream = true
[deployments.an-plain]
provider = "an"
model = "claude-haiku-4-5"
stream_upstream = false
[routes.oa]
chain = ["oa"]
[routes.oa-plain]
chain = ["oa-plain"]
[routes.an]
chain = ["an"]
[routes.an-plain]
chain = ["an-plain"]
[policy]
max_attempts = 1
"#,
        oa = ch.base_url("oa"),
        an = ch.base_url("an"),
    );
    let addr = support::keel_toml(&text, "assembled.toml").await;
    support::sdk_script(
        "sdk/assembled.py",
        vec![format!("http://{addr}")],
        "all assembled checks passed",
    )
    .await;
    // Each upstream saw the streaming deployment's requests as streams and
    // the plain one's as plain requests: 4 requests each way per upstream.
    for name in ["oa", "an"] {
        let log = ch.stats(name).unwrap().log;
        let streamed = log.iter().filter(|a| a.stream).count();
        assert_eq!((streamed, log.len()), (4, 8), "{name}");
    }
}
