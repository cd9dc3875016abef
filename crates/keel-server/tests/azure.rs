//! Azure OpenAI deployments behind Keel: the official `openai` and
//! `anthropic` Python SDKs reach them (dated and v1 API versions, plain and
//! streaming, tools, JSON schema, embeddings), and Azure's faults (keel-chaos'
//! azure dialect) are retried or fallen over to an OpenAI deployment, with
//! every attempt counted at the fake upstreams. The interpreter comes from
//! `KEEL_TEST_PYTHON`, as in tests/sdk.rs.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fmt::Write as _;

use keel_chaos::{ChaosServer, Scenario};

mod support;

/// Azure upstreams: name, fault (empty: healthy).
const AZURE: &[(&str, &str)] = &[
    ("az", ""),
    ("azv1", ""),
    (
        "az-429",
        "kind = \"rate_limit\"\nretry_after = \"150ms\"\nheader_style = \"ms\"\nsequence = [1]",
    ),
    (
        "az-429s",
        "kind = \"rate_limit\"\nretry_after = \"150ms\"\nsequence = [1]",
    ),
    ("az-500", "kind = \"server_error\"\nsequence = [1]"),
    ("az-408", "kind = \"status\"\nstatus = 408\nsequence = [1]"),
    ("az-503", "kind = \"overloaded\""),
    ("az-filter", "kind = \"prompt_filter\""),
    ("az-cf", "kind = \"content_filter\""),
    ("az-ctx", "kind = \"context_overflow\""),
    ("az-400", "kind = \"bad_request\""),
];

/// OpenAI upstreams the failing Azure routes fall over to.
const OPENAI: &[&str] = &["oa-503", "oa-filter", "oa-cf", "oa-ctx", "oa-400"];

/// Routes: name, chain, refusal fallbacks.
const ROUTES: &[(&str, &[&str], &[&str])] = &[
    ("azure", &["az"], &[]),
    ("azure-v1", &["azv1"], &[]),
    ("emb", &["az-emb"], &[]),
    ("r429", &["az-429"], &[]),
    ("r429s", &["az-429s"], &[]),
    ("r500", &["az-500"], &[]),
    ("r408", &["az-408"], &[]),
    ("r503", &["az-503", "oa-503"], &[]),
    ("rfilter", &["az-filter", "oa-filter"], &[]),
    ("rcf", &["az-cf"], &["oa-cf"]),
    ("rctx", &["az-ctx", "oa-ctx"], &[]),
    ("r400", &["az-400", "oa-400"], &[]),
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sdks_reach_azure_deployments_through_keel() {
    let mut scenario = String::new();
    for (name, fault) in AZURE {
        write!(
            scenario,
            "[[upstream]]\nname = \"{name}\"\nkind = \"azure\"\napi_key = \"az-key\"\n"
        )
        .unwrap();
        if !fault.is_empty() {
            write!(scenario, "[[upstream.fault]]\n{fault}\n").unwrap();
        }
    }
    for name in OPENAI {
        write!(
            scenario,
            "[[upstream]]\nname = \"{name}\"\nkind = \"openai\"\n"
        )
        .unwrap();
    }
    let ch = ChaosServer::start(
        Scenario::from_toml_str(&scenario, "azure.toml").unwrap(),
        5,
        "127.0.0.1:0".parse().unwrap(),
    )
    .await
    .unwrap();

    let mut text = String::new();
    for (name, _) in AZURE {
        let auth = match *name {
            "azv1" => "azure_ad_token = \"az-key\"\napi_version = \"v1\"",
            _ => "api_key = \"az-key\"\napi_version = \"2024-10-21\"",
        };
        write!(
            text,
            "[providers.{name}]\nkind = \"azure\"\nbase_url = \"http://{}/{name}\"\n{auth}\n\
             [deployments.{name}]\nprovider = \"{name}\"\nmodel = \"gpt4o-prod\"\n",
            ch.addr()
        )
        .unwrap();
    }
    text.push_str("[deployments.az-emb]\nprovider = \"az\"\nmodel = \"emb-small\"\nembedding_space = \"small\"\n");
    for name in OPENAI {
        write!(
            text,
            "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{}\"\n\
             [deployments.{name}]\nprovider = \"{name}\"\nmodel = \"gpt-4o-mini\"\n\
             context_window = 200000\n",
            ch.base_url(name)
        )
        .unwrap();
    }
    for (route, chain, refusal) in ROUTES {
        write!(
            text,
            "[routes.{route}]\nchain = {chain:?}\nrefusal_fallbacks = {refusal:?}\n"
        )
        .unwrap();
    }
    text.push_str("[policy]\nmax_attempts = 3\nbackoff_base = \"10ms\"\nbackoff_cap = \"50ms\"\n[breaker]\nconsecutive_failures = 1000\n");
    let addr = support::keel_toml(&text, "azure.toml").await;
    let stdout = support::sdk_script(
        "sdk/azure_gateway.py",
        vec![format!("http://{addr}")],
        "all azure gateway checks passed",
    )
    .await;
    println!("{stdout}");

    let attempts = |name: &str| ch.stats(name).unwrap().attempts;
    let outcomes = |name: &str| format!("{:?}", ch.stats(name).unwrap().by_outcome);
    // The healthy deployments: ten chat requests each (plain, stream, two
    // tool calls, JSON schema, from each client), one attempt each, the
    // deployment named as Azure expects; `az` also served the embeddings.
    assert_eq!(attempts("az"), 11, "{}", outcomes("az"));
    assert_eq!(attempts("azv1"), 10, "{}", outcomes("azv1"));
    for name in ["az", "azv1"] {
        let log = ch.stats(name).unwrap().log;
        assert!(log.iter().all(|a| a.status == 200), "{log:?}");
        assert!(log.iter().any(|a| a.stream), "{log:?}");
    }
    let counts: Vec<(&str, u64)> = [
        "az",
        "azv1",
        "az-429",
        "az-429s",
        "az-500",
        "az-408",
        "az-503",
        "oa-503",
        "az-filter",
        "oa-filter",
        "az-cf",
        "oa-cf",
        "az-ctx",
        "oa-ctx",
        "az-400",
        "oa-400",
    ]
    .iter()
    .map(|n| (*n, attempts(n)))
    .collect();
    println!("attempts: {counts:?}");
    // Rate limited, 5xx and 408 once: retried on the same deployment.
    assert_eq!(attempts("az-429"), 2, "{}", outcomes("az-429"));
    assert_eq!(attempts("az-429s"), 2, "{}", outcomes("az-429s"));
    assert_eq!(attempts("az-500"), 2);
    assert_eq!(attempts("az-408"), 2);
    // Overloaded every time: retried there up to max_attempts, then OpenAI.
    assert_eq!(
        (attempts("az-503"), attempts("oa-503")),
        (3, 1),
        "{counts:?}"
    );
    // The prompt filter and a context overflow are not retried there: one
    // attempt per request, then OpenAI (two requests to rfilter).
    assert_eq!((attempts("az-filter"), attempts("oa-filter")), (2, 2));
    assert_eq!((attempts("az-ctx"), attempts("oa-ctx")), (1, 1));
    // A completion the filter stopped goes to the refusal fallback.
    assert_eq!((attempts("az-cf"), attempts("oa-cf")), (1, 1));
    // A 400 is the request's fault: passed on, no retry, no fallback.
    assert_eq!((attempts("az-400"), attempts("oa-400")), (1, 0));
}
