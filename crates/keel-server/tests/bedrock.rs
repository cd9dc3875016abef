//! AWS Bedrock deployments through Keel: the official `openai` and
//! `anthropic` Python SDKs reach `kind = "bedrock"` deployments (Keel
//! translates to Converse, signs with SigV4 and reads eventstream answers)
//! on `keel chaos`, plain and streaming, tools and JSON schema; Bedrock's
//! faults are retried or fallen over, and a `max_tokens` stop is continued.
//! Upstream attempts are counted from chaos's stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;

use keel_chaos::{ChaosServer, Scenario};
use keel_engine::config::Config;

mod support;

const ALL: [&str; 7] = [
    "br",
    "br-b",
    "br-throttle",
    "br-503",
    "br-trunc",
    "br-exc",
    "br-cut",
];

const MODEL: &str = "anthropic.claude-3-5-sonnet-20240620-v1:0";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdks_reach_bedrock_deployments_through_keel() {
    let mut scenario = String::new();
    for (name, fault) in [
        ("br", ""),
        ("br-b", ""),
        (
            "br-throttle",
            "[[upstream.fault]]\nkind = \"rate_limit\"\nsequence = [1, 3]\n",
        ),
        ("br-503", "[[upstream.fault]]\nkind = \"overloaded\"\n"),
        (
            "br-trunc",
            "[[upstream.fault]]\nkind = \"truncate\"\nsequence = [1]\n",
        ),
        (
            "br-exc",
            "[[upstream.fault]]\nkind = \"stream_error\"\nafter_chunks = 2\nsequence = [1]\n",
        ),
        (
            "br-cut",
            "[[upstream.fault]]\nkind = \"cut_stream\"\nafter_chunks = 2\nsequence = [1]\n",
        ),
    ] {
        scenario.push_str(&format!(
            "[[upstream]]\nname = \"{name}\"\nkind = \"bedrock\"\napi_key = \"AKIDKEELTEST\"\n{fault}\n"
        ));
    }
    let ch = ChaosServer::start(
        Scenario::from_toml_str(&scenario, "bedrock.toml").unwrap(),
        5,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let root = format!("http://{}", ch.addr());
    let mut text = String::new();
    for name in ALL {
        // One provider names its keys; the others take the AWS_* variables.
        let keys = if name == "br" {
            "access_key_id = \"AKIDKEELTEST\"\nsecret_access_key = \"${SECRET}\"\n"
        } else {
            ""
        };
        text.push_str(&format!(
            "[providers.{name}]\nkind = \"bedrock\"\nregion = \"us-east-1\"\nbase_url = \"{root}/{name}\"\n{keys}\
             [deployments.{name}]\nprovider = \"{name}\"\nmodel = \"{MODEL}\"\n"
        ));
    }
    text.push_str(
        r#"
[routes.bedrock]
chain = ["br"]
[routes.throttled]
chain = ["br-throttle"]
[routes.failover]
chain = ["br-503", "br-b"]
[routes.trunc]
chain = ["br-trunc"]
[routes.stream-exception]
chain = ["br-exc"]
[routes.stream-cut]
chain = ["br-cut"]
[routes.trunc.policy]
truncation = "continue"
[policy]
max_attempts = 3
backoff_base = "10ms"
backoff_cap = "50ms"
[breaker]
consecutive_failures = 1000
"#,
    );
    let env = |k: &str| match k {
        "AWS_ACCESS_KEY_ID" => Some("AKIDKEELTEST".to_owned()),
        "AWS_SECRET_ACCESS_KEY" | "SECRET" => Some("keel-test-secret".to_owned()),
        _ => None,
    };
    let config = Config::from_toml_str(&text, "bedrock.toml", &env).unwrap();
    let addr = support::keel(config).await;
    let stdout = support::sdk_script(
        "sdk/bedrock_gateway.py",
        vec![format!("http://{addr}")],
        "all bedrock checks passed",
    )
    .await;
    println!("{stdout}");
    let reported: BTreeMap<&str, u64> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("ATTEMPTS "))
        .filter_map(|l| l.split_once(' '))
        .map(|(route, n)| (route, n.parse().unwrap()))
        .collect();
    let stats = |name: &str| ch.stats(name).unwrap();
    // Every attempt reached chaos signed with the configured access key
    // (chaos answers an unsigned or wrongly keyed one with a 403).
    for name in ALL {
        assert_eq!(stats(name).by_outcome.get("auth"), None, "{name}");
    }
    // Throttled: the 1st and 3rd attempts failed, each retried once.
    let throttle = stats("br-throttle");
    assert_eq!(throttle.attempts, 4, "{throttle:?}");
    assert_eq!(throttle.by_outcome.get("rate_limit"), Some(&2));
    assert_eq!(reported["throttled"], 4);
    // Failover: each request ended on br-b after br-503's attempts.
    let (dead, b) = (stats("br-503"), stats("br-b"));
    assert_eq!(b.attempts, 2, "{b:?}");
    assert!(dead.attempts >= 2, "{dead:?}");
    assert_eq!(dead.by_outcome.get("overloaded"), Some(&dead.attempts));
    assert_eq!(reported["failover"], dead.attempts + b.attempts);
    // Truncated once, then one continuation.
    let trunc = stats("br-trunc");
    assert_eq!(trunc.attempts, 2, "{trunc:?}");
    let continuation = &trunc.log[1].body;
    assert!(continuation.contains("\"assistant\""), "{continuation}");
    // An exception event and a cut, both inside the commit window: each
    // stream was opened again, invisibly.
    for (name, outcome) in [("br-exc", "stream_error"), ("br-cut", "cut_stream")] {
        let s = stats(name);
        assert_eq!(s.attempts, 2, "{s:?}");
        assert_eq!(s.by_outcome.get(outcome), Some(&1), "{s:?}");
    }
    assert_eq!(reported["stream-exception"], 2);
}
