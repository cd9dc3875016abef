//! Scenario parsing and validation: exact error messages.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::time::Duration;

use keel_chaos::{Fault, FaultPlan, FaultRule, Kind, RetryAfterStyle, Scenario, Trigger};

fn err(toml: &str) -> String {
    Scenario::from_toml_str(toml, "examples/x.toml")
        .unwrap_err()
        .to_string()
}

const HEAD: &str = "[[upstream]]\nname = \"p\"\nkind = \"openai\"\n";

fn with_fault(fault: &str) -> String {
    format!("{HEAD}[[upstream.fault]]\nkind = \"reset\"\n[[upstream.fault]]\n{fault}\n")
}

#[test]
fn full_scenario_parses() {
    let s = Scenario::from_toml_str(
        r#"
[[upstream]]
name = "primary"
kind = "openai"
api_key = "sk-chaos-primary"
rpm = 600
tpm = 200000
latency = "20ms"
token_delay = "2ms"
models = ["gpt-4o-mini"]
context_window = 1000
[[upstream.fault]]
kind = "rate_limit"
probability = 0.1
window = { from = "10s", until = "30s" }
retry_after = "1s"
header_style = "ms"
[[upstream.fault]]
kind = "cut_stream"
after_chunks = 2
every = 5
streaming_only = true
[[upstream.fault]]
kind = "status"
status = 418
sequence = [1, 2]

[[upstream]]
name = "secondary"
kind = "anthropic"
"#,
        "s.toml",
    )
    .unwrap();
    let p = &s.upstreams[0];
    assert_eq!(p.kind, Kind::OpenAi);
    assert_eq!(p.api_key.as_deref(), Some("sk-chaos-primary"));
    assert_eq!(
        (p.rpm, p.tpm, p.context_window),
        (Some(600), Some(200_000), Some(1000))
    );
    assert_eq!(p.latency, Duration::from_millis(20));
    assert_eq!(p.token_delay, Duration::from_millis(2));
    assert_eq!(p.models, vec!["gpt-4o-mini".to_owned()]);
    assert_eq!(
        p.faults.faults,
        vec![
            FaultRule {
                fault: Fault::RateLimit {
                    retry_after: Some(Duration::from_secs(1)),
                    header_style: RetryAfterStyle::Milliseconds
                },
                when: Trigger::Probability(0.1),
                window: Some((Duration::from_secs(10), Duration::from_secs(30))),
                streaming_only: false,
                non_streaming_only: false,
            },
            FaultRule {
                fault: Fault::CutStream { after_chunks: 2 },
                when: Trigger::EveryNth(5),
                window: None,
                streaming_only: true,
                non_streaming_only: false,
            },
            FaultRule::new(Fault::Status { status: 418 }, Trigger::Sequence(vec![1, 2])),
        ]
    );
    assert_eq!(s.upstreams[1].kind, Kind::Anthropic);
    assert!(s.upstreams[1].faults.faults.is_empty());
}

#[test]
fn every_fault_kind_parses() {
    for kind in keel_chaos::FAULT_KINDS {
        let extra = match *kind {
            "status" => "status = 500",
            "slow_first_byte" | "slow_tokens" => "delay = \"10ms\"",
            _ => "",
        };
        let s = Scenario::from_toml_str(
            &format!("{HEAD}[[upstream.fault]]\nkind = \"{kind}\"\n{extra}\n"),
            "k.toml",
        )
        .unwrap();
        assert_eq!(s.upstreams[0].faults.faults[0].fault.name(), *kind);
    }
}

#[test]
fn validation_messages_name_file_path_and_expectation() {
    let cases: &[(String, &str)] = &[
        (
            with_fault("kind = \"rate_limit\"\nprobability = 1.5"),
            "examples/x.toml: upstream[0].fault[1].probability: expected a number in 0..=1, got 1.5",
        ),
        (
            with_fault("kind = \"boom\""),
            "examples/x.toml: upstream[0].fault[1].kind: unknown fault kind \"boom\", expected one of rate_limit, quota_exhausted, overloaded, server_error, status, auth, context_overflow, bad_request, not_found, hang, slow_first_byte, slow_tokens, reset, cut_stream, malformed_json, empty, truncate, refusal, invalid_json, content_filter, stream_error, prompt_filter",
        ),
        (
            with_fault("kind = \"reset\"\nretry_after = \"1s\""),
            "examples/x.toml: upstream[0].fault[1].retry_after: unknown key, expected one of kind, probability, every, sequence, window, streaming_only, non_streaming_only",
        ),
        (
            format!("{HEAD}colour = \"red\""),
            "examples/x.toml: upstream[0].colour: unknown key, expected one of name, kind, api_key, rpm, tpm, latency, token_delay, models, context_window, max_inputs, require_thought_signatures, fault",
        ),
        (
            format!("{HEAD}require_thought_signatures = true"),
            "examples/x.toml: upstream[0].require_thought_signatures: expected an upstream of kind \"gemini\" (thought signatures are Gemini's), got kind \"openai\"",
        ),
        (
            "[[upstreams]]\nname = \"p\"".to_owned(),
            "examples/x.toml: upstreams: unknown key, expected one of upstream",
        ),
        (
            "".to_owned(),
            "examples/x.toml: upstream: missing, expected at least one [[upstream]] table",
        ),
        (
            "[[upstream]]\nkind = \"openai\"".to_owned(),
            "examples/x.toml: upstream[0].name: missing, expected a string",
        ),
        (
            "[[upstream]]\nname = \"p\"\nkind = \"cohere\"".to_owned(),
            "examples/x.toml: upstream[0].kind: expected \"openai\", \"anthropic\", \"azure\", \"gemini\" or \"bedrock\", got \"cohere\"",
        ),
        (
            format!("{HEAD}latency = \"fast\""),
            "examples/x.toml: upstream[0].latency: expected a duration such as \"150ms\" or \"20s\", got \"fast\"",
        ),
        (
            format!("{HEAD}rpm = 0"),
            "examples/x.toml: upstream[0].rpm: expected a positive integer, got 0",
        ),
        (
            format!("{HEAD}{HEAD}"),
            "examples/x.toml: upstream[1].name: duplicate upstream name \"p\"",
        ),
        (
            with_fault("kind = \"server_error\"\nstatus = 404"),
            "examples/x.toml: upstream[0].fault[1].status: expected an HTTP status in 500..=599, got 404",
        ),
        (
            with_fault("kind = \"status\""),
            "examples/x.toml: upstream[0].fault[1].status: missing, expected an HTTP status in 400..=599",
        ),
        (
            with_fault("kind = \"slow_tokens\""),
            "examples/x.toml: upstream[0].fault[1].delay: missing, expected a duration such as \"150ms\" or \"20s\"",
        ),
        (
            with_fault("kind = \"hang\"\nprobability = 0.5\nevery = 2"),
            "examples/x.toml: upstream[0].fault[1]: expected at most one of probability, every, sequence, got probability and every",
        ),
        (
            with_fault("kind = \"hang\"\nsequence = [1, 0]"),
            "examples/x.toml: upstream[0].fault[1].sequence[1]: expected a positive integer (1-based attempt number), got 0",
        ),
        (
            with_fault("kind = \"hang\"\nevery = 0"),
            "examples/x.toml: upstream[0].fault[1].every: expected a positive integer, got 0",
        ),
        (
            with_fault("kind = \"hang\"\nwindow = { from = \"30s\", until = \"10s\" }"),
            "examples/x.toml: upstream[0].fault[1].window: expected from < until, got from = 30s, until = 10s",
        ),
        (
            with_fault("kind = \"hang\"\nwindow = { start = \"1s\" }"),
            "examples/x.toml: upstream[0].fault[1].window.start: unknown key, expected one of from, until",
        ),
        (
            with_fault("kind = \"rate_limit\"\nheader_style = \"loud\""),
            "examples/x.toml: upstream[0].fault[1].header_style: expected one of all, seconds, ms, http_date, reset, none, got \"loud\"",
        ),
        (
            with_fault("kind = \"hang\"\nstreaming_only = true\nnon_streaming_only = true"),
            "examples/x.toml: upstream[0].fault[1]: expected at most one of streaming_only, non_streaming_only",
        ),
        (
            "[[upstream]]\nname = \"_chaos\"\nkind = \"openai\"".to_owned(),
            "examples/x.toml: upstream[0].name: expected letters, digits, '-', '_' or '.' (starting with a letter or digit), got \"_chaos\"",
        ),
    ];
    for (toml, expected) in cases {
        assert_eq!(err(toml), *expected, "for scenario:\n{toml}");
    }
}

#[test]
fn toml_syntax_errors_name_the_file() {
    let e = err("[[upstream]\nname = ");
    assert!(e.starts_with("examples/x.toml: invalid TOML: "), "{e}");
}

#[test]
fn missing_file_is_named() {
    let e = Scenario::load(Path::new("/nonexistent/chaos.toml")).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("/nonexistent/chaos.toml: cannot read: "),
        "{e}"
    );
}

#[test]
fn control_plan_json_is_validated_like_toml() {
    let plan =
        FaultPlan::from_json_str(r#"{"faults":[{"kind":"server_error","status":502,"every":2}]}"#)
            .unwrap();
    assert_eq!(
        plan.faults,
        vec![FaultRule::new(
            Fault::ServerError { status: 502 },
            Trigger::EveryNth(2)
        )]
    );
    assert_eq!(
        FaultPlan::from_json_str(r#"{"faults":[{"kind":"hang","probability":2}]}"#)
            .unwrap_err()
            .to_string(),
        "request body: faults[0].probability: expected a number in 0..=1, got 2"
    );
    assert_eq!(
        FaultPlan::from_json_str(r#"{"fault":[]}"#)
            .unwrap_err()
            .to_string(),
        "request body: fault: unknown key, expected one of faults"
    );
}

#[test]
fn shipped_examples_load_and_demo_matches_its_file() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples");
    let demo = Scenario::load(&root.join("chaos-demo.toml")).unwrap();
    assert_eq!(demo, Scenario::demo());
    let outage = Scenario::load(&root.join("chaos-outage.toml")).unwrap();
    assert_eq!(outage.upstreams.len(), 2);
}
