//! Gemini thought signatures through Keel: the official `openai` SDK gets
//! each function call's signature as `extra_content.google.
//! thought_signature` (plain and streamed) and, sending the message back
//! as it came, Keel restores it on the same `functionCall` part; history
//! without signatures (another model's, an Anthropic client's) reaches
//! Gemini with Google's skip signature. Chaos's Gemini upstream refuses,
//! as Gemini 3 does, a step without a valid signature, and what it
//! received is read back from its log.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_chaos::{ChaosServer, Scenario};
use serde_json::Value;

mod support;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thought_signatures_make_the_round_trip_through_keel() {
    let scenario = "[[upstream]]\nname = \"gs\"\nkind = \"gemini\"\napi_key = \"g-key\"\n\
                    require_thought_signatures = true\n";
    let ch = ChaosServer::start(
        Scenario::from_toml_str(scenario, "s.toml").unwrap(),
        5,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();
    let config = format!(
        "[providers.gs]\nkind = \"gemini\"\nbase_url = \"{}\"\napi_key = \"g-key\"\n\
         [deployments.gs]\nprovider = \"gs\"\nmodel = \"gemini-3-pro-preview\"\n\
         [routes.sig]\nchain = [\"gs\"]\n[policy]\nmax_attempts = 2\nbackoff_base = \"1ms\"\n",
        ch.base_url("gs").trim_end_matches("/v1")
    );
    let addr = support::keel_toml(&config, "keel.toml").await;
    let stdout = support::sdk_script(
        "sdk/gemini_signatures_sdk.py",
        vec![format!("http://{addr}")],
        "all gemini signature SDK checks passed",
    )
    .await;
    let issued = stdout
        .lines()
        .find_map(|l| l.strip_prefix("SIGNATURE "))
        .unwrap()
        .to_owned();

    let stats = ch.stats("gs").unwrap();
    // 2 + 2 + 1 + 2 + 2 calls, one attempt each: the refused signature
    // (an invalid request) is not retried.
    assert_eq!(stats.attempts, 9);
    assert_eq!(stats.by_outcome.get("invalid_request"), Some(&1));
    let bodies: Vec<Value> = stats
        .log
        .iter()
        .map(|r| serde_json::from_str(&r.body).unwrap())
        .collect();
    let first_call_signature = |body: &Value| -> Option<String> {
        body["contents"]
            .as_array()?
            .iter()
            .filter(|c| c["role"] == "model")
            .flat_map(|c| c["parts"].as_array().cloned().unwrap_or_default())
            .find(|p| p.get("functionCall").is_some())?
            .get("thoughtSignature")?
            .as_str()
            .map(str::to_owned)
    };
    // The follow-up of the first check carried the very signature the
    // client was given, on the call's part.
    assert_eq!(
        first_call_signature(&bodies[1]).as_deref(),
        Some(issued.as_str())
    );
    // Another model's call: Google's skip signature.
    assert_eq!(
        first_call_signature(&bodies[4]).as_deref(),
        Some("skip_thought_signature_validator")
    );
    // The Anthropic client's follow-up (tool_use blocks carry no signature).
    assert_eq!(
        first_call_signature(&bodies[8]).as_deref(),
        Some("skip_thought_signature_validator")
    );
}
