//! Routing, hedging and tenant keys of the config: what they resolve to,
//! and the exact message of each rejection (file, key, expectation).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_engine::config::{Config, ConfigError, RouteStrategy};

const BASE: &str = r#"
[providers.p]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
[deployments.a]
provider = "p"
model = "m"
[deployments.b]
provider = "p"
model = "m"
input_price = 1.0
"#;

fn env(k: &str) -> Option<String> {
    (k == "TEAM_TOKEN").then(|| "tok-team".to_string())
}

fn load(extra: &str) -> Result<Config, ConfigError> {
    Config::from_toml_str(&format!("{BASE}{extra}"), "keel.toml", &env)
}

fn err(extra: &str) -> String {
    match load(extra) {
        Ok(_) => panic!("config unexpectedly valid:\n{extra}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn strategies_resolve() {
    let c = load(
        r#"
[routes.p]
chain = ["a", "b"]
[routes.w]
chain = ["a", "b"]
weights = { a = 3, b = 1 }
[routes.l]
chain = ["a", "b"]
strategy = "least-latency"
decay = "2s"
[routes.r]
chain = ["a", "b"]
[[routes.r.rules]]
when = { min_prompt_tokens = 2000 }
chain = ["b"]
[routes.t]
chain = ["a", "b"]
strategy = "learned"
learned = { success = 1.0, latency = 0.0, cost = 0.5, exploration = 0.1 }
[routes.h]
chain = ["a", "b"]
hedge = true
hedge_after = "150ms"
"#,
    )
    .unwrap();
    assert_eq!(c.routes["p"].routing.strategy, RouteStrategy::Priority);
    assert_eq!(
        c.routes["w"].routing.strategy,
        RouteStrategy::Weighted(vec![(0, 3.0), (1, 1.0)])
    );
    assert_eq!(c.routes["l"].routing.strategy, RouteStrategy::LeastLatency);
    assert_eq!(
        c.routes["l"].routing.decay,
        std::time::Duration::from_secs(2)
    );
    match &c.routes["r"].routing.strategy {
        RouteStrategy::Rules(r) => {
            assert_eq!(r[0].chain, vec![1]);
            assert_eq!(r[0].when.min_prompt_tokens, Some(2000));
        }
        other => panic!("{other:?}"),
    }
    match &c.routes["t"].routing.strategy {
        RouteStrategy::Learned(l) => {
            assert_eq!(
                (l.success_weight, l.latency_weight, l.cost_weight),
                (1.0, 0.0, 0.5)
            );
            assert_eq!(l.exploration, 0.1);
        }
        other => panic!("{other:?}"),
    }
    let h = c.routes["h"].hedge.as_ref().unwrap();
    assert_eq!(h.fixed, Some(std::time::Duration::from_millis(150)));
    assert!(c.routes["p"].hedge.is_none());
}

#[test]
fn routing_errors_name_file_key_and_expectation() {
    let cases = [
        (
            "[routes.r]\nchain = [\"a\", \"b\"]\nweights = { a = -1, b = 1 }\n",
            "keel.toml: routes.r.weights.a: expected a weight >= 0, got -1",
        ),
        (
            "[routes.r]\nchain = [\"a\", \"b\"]\nweights = { a = 0, b = 0 }\n",
            "keel.toml: routes.r.weights: expected at least one weight > 0, got all weights 0",
        ),
        (
            "[routes.r]\nchain = [\"a\"]\nweights = { b = 1 }\n",
            "keel.toml: routes.r.weights.b: expected a deployment of the chain (a), got \"b\"",
        ),
        (
            "[routes.r]\nchain = [\"a\"]\n[[routes.r.rules]]\nwhen = { tools = true }\nchain = [\"gpt-9\"]\n",
            "keel.toml: routes.r.rules[0].chain[0]: expected one of the deployments (a, b), got \"gpt-9\"",
        ),
        (
            "[routes.r]\nchain = [\"a\"]\nstrategy = \"fastest\"\n",
            "keel.toml: routes.r.strategy: expected one of priority, weighted, least-busy, least-latency, cost, rules, learned, got \"fastest\"",
        ),
        (
            "[routes.r]\nchain = [\"a\"]\nstrategy = \"cost\"\nweights = { a = 1 }\n",
            "keel.toml: routes.r.weights: expected no weights unless strategy = \"weighted\", got strategy = \"cost\"",
        ),
        (
            "[routes.r]\nchain = [\"a\"]\nstrategy = \"learned\"\nlearned = { exploration = 2.0 }\n",
            "keel.toml: routes.r.learned.exploration: expected a share in 0..=1, got 2",
        ),
        (
            "[routes.r]\nchain = [\"a\"]\nhedge_after = \"100ms\"\n",
            "keel.toml: routes.r.hedge_after: expected no hedge_after unless hedge = true, got hedge off",
        ),
        (
            "[routes.r]\nchain = [\"a\"]\nhedge = true\nhedge_after = \"soon\"\n",
            "keel.toml: routes.r.hedge_after: expected \"p95\" or a duration like \"200ms\", got \"soon\"",
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(err(extra), want, "for:\n{extra}");
    }
}

#[test]
fn tenants_resolve_with_hashed_tokens() {
    let c = load(
        r#"
[routes.r]
chain = ["a"]
[[tenants]]
name = "team"
token = "${TEAM_TOKEN}"
routes = ["r"]
rpm = 60
monthly_budget_usd = 5.0
[[tenants]]
name = "ops"
token_sha256 = "0000000000000000000000000000000000000000000000000000000000000001"
"#,
    )
    .unwrap();
    assert_eq!(c.tenants.len(), 2);
    assert_eq!(c.tenants[0].limits.rpm, Some(60));
    assert_eq!(c.tenants[0].monthly_budget_usd, Some(5.0));
    assert_eq!(c.tenants[1].token_sha256[31], 1);
    // The token itself is not kept, nor printed.
    assert!(!format!("{:?}", c.tenants).contains("tok-team"));
}

#[test]
fn tenant_errors_name_file_key_and_expectation() {
    let route = "[routes.r]\nchain = [\"a\"]\n";
    let cases = [
        (
            "[[tenants]]\nname = \"t\"\n",
            "keel.toml: tenants[0].token: expected a token (\"${VAR}\") or token_sha256, got none",
        ),
        (
            "[[tenants]]\nname = \"t\"\ntoken = \"x\"\n[[tenants]]\nname = \"u\"\ntoken = \"x\"\n",
            "keel.toml: tenants[1].token: expected a token no other tenant has, got the token of tenant \"t\"",
        ),
        (
            "[[tenants]]\nname = \"t\"\ntoken_sha256 = \"abc\"\n",
            "keel.toml: tenants[0].token_sha256: expected 64 hex digits (the SHA-256 of the token), got 3 characters",
        ),
        (
            "[[tenants]]\nname = \"t\"\ntoken = \"x\"\nroutes = [\"nope\"]\n",
            "keel.toml: tenants[0].routes[0]: expected one of the routes (r), got \"nope\"",
        ),
        (
            "[[tenants]]\nname = \"t\"\ntoken = \"x\"\nmonthly_budget_usd = -1.0\n",
            "keel.toml: tenants[0].monthly_budget_usd: expected an amount >= 0 (USD), got -1",
        ),
        (
            "[[tenants]]\nname = \"t\"\ntoken = \"${MISSING_TOKEN}\"\n",
            "keel.toml: tenants[0].token: environment variable MISSING_TOKEN is not set",
        ),
    ];
    for (extra, want) in cases {
        assert_eq!(err(&format!("{route}{extra}")), want, "for:\n{extra}");
    }
}

#[test]
fn tenant_max_concurrency_is_positive() {
    let route = "[routes.r]\nchain = [\"a\"]\n";
    assert_eq!(
        err(&format!(
            "{route}[[tenants]]\nname = \"t\"\ntoken = \"x\"\nmax_concurrency = 0\n"
        )),
        "keel.toml: tenants[0].max_concurrency: expected a positive number (omit for no limit), got 0"
    );
    let c = load(&format!(
        "{route}[[tenants]]\nname = \"t\"\ntoken = \"x\"\nmax_concurrency = 3\n[[tenants]]\nname = \"u\"\ntoken = \"y\"\n"
    ))
    .unwrap();
    assert_eq!(c.tenants[0].max_concurrency.map(|n| n.get()), Some(3));
    assert_eq!(c.tenants[1].max_concurrency, None);
}
