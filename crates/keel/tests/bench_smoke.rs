//! `keel bench` in miniature: each mode for about two seconds at a low rate.
//! Only the report's shape and its bookkeeping are checked, never timings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;

use serde_json::Value;

fn bench(args: &[&str]) -> Value {
    let out = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("bench")
        .args(args)
        .arg("--json")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "keel bench {args:?} failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("not JSON ({e}):\n{stdout}"))
}

fn n(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a count in {v}"))
}

#[test]
fn overhead_report_parses_and_adds_up() {
    overhead_adds_up(&[]);
}

#[test]
fn streaming_overhead_report_parses_and_adds_up() {
    overhead_adds_up(&["--stream"]);
}

#[test]
fn overhead_rounds_pool_into_the_main_table() {
    let r = bench(&[
        "overhead",
        "--rates",
        "100",
        "--duration",
        "400ms",
        "--slice",
        "200ms",
        "--rounds",
        "3",
        "--concurrency",
        "0",
    ]);
    let rate = &r["rates"][0];
    let rounds = rate["rounds"].as_array().unwrap();
    assert_eq!(rounds.len(), 3);
    for (i, p) in rate["paths"].as_array().unwrap().iter().enumerate() {
        // The pooled counts are the rounds' counts added up.
        for key in ["requests", "successes", "failures"] {
            let sum: u64 = rounds.iter().map(|round| n(&round[i], key)).sum();
            assert_eq!(n(p, key), sum, "{key} of {p}");
        }
        assert_eq!(n(p, "failures"), 0, "{p}");
        // Three rounds of 400 ms per path at 100/s.
        assert!(n(p, "requests").abs_diff(120) <= 6, "{p}");
        // A pooled percentile lies within the rounds' range.
        let each: Vec<u64> = rounds.iter().map(|round| n(&round[i], "p50_us")).collect();
        let (lo, hi) = (each.iter().min().unwrap(), each.iter().max().unwrap());
        assert!(
            (*lo..=*hi).contains(&n(p, "p50_us")),
            "{p} against {each:?}"
        );
    }
    assert!((rate["seconds_per_path"].as_f64().unwrap() - 1.2).abs() < 1e-9);
    assert!(r["throughput"].is_null());
}

/// The fixed upstream answers everything, so every path succeeds on every
/// request (a path that fails them all is a broken bench, not a slow one).
fn overhead_adds_up(extra: &[&str]) {
    let mut args = vec![
        "overhead",
        "--rates",
        "50,100",
        "--duration",
        "600ms",
        "--slice",
        "200ms",
        "--concurrency",
        "4",
        "--throughput-duration",
        "300ms",
    ];
    args.extend_from_slice(extra);
    let r = bench(&args);
    assert_eq!(r["mode"], "overhead");
    let rates = r["rates"].as_array().unwrap();
    assert_eq!(rates.len(), 2);
    for (rate, want) in rates.iter().zip([50u64, 100]) {
        assert_eq!(n(rate, "rate"), want);
        let paths = rate["paths"].as_array().unwrap();
        let names: Vec<&str> = paths.iter().map(|p| p["name"].as_str().unwrap()).collect();
        assert_eq!(names, ["direct", "forwarder", "keel"]);
        // One round: no per-round list.
        assert!(rate.get("rounds").is_none(), "{rate}");
        for p in paths {
            assert_eq!(
                n(p, "requests"),
                n(p, "successes") + n(p, "failures"),
                "{p}"
            );
            assert_eq!(n(p, "failures"), 0, "{p}");
            // 600 ms per path at the rate, give or take rounding.
            let expected = want * 6 / 10;
            assert!(n(p, "requests").abs_diff(expected) <= 3, "{p}");
            assert!(n(p, "p50_us") <= n(p, "p99_us"), "{p}");
            assert!(n(p, "p99_us") <= n(p, "p999_us"), "{p}");
        }
    }
    let tp = &r["throughput"];
    assert_eq!(n(tp, "connections"), 4);
    for p in tp["paths"].as_array().unwrap() {
        assert_eq!(n(p, "requests"), n(p, "successes") + n(p, "failures"));
        assert!(n(p, "successes") > 0, "{p}");
        assert_eq!(n(p, "failures"), 0, "{p}");
    }
    assert!(r["machine"]["nproc"].as_u64().unwrap() >= 1);
}

#[test]
fn resilience_report_parses_and_attempts_match() {
    let r = bench(&["resilience", "--duration", "2s", "--rate", "10"]);
    assert_eq!(r["mode"], "resilience");
    let paths = r["paths"].as_array().unwrap();
    let names: Vec<&str> = paths.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["direct", "naive_retry", "keel"]);
    for p in paths {
        assert_eq!(n(p, "requests"), 20, "{p}");
        assert_eq!(
            n(p, "requests"),
            n(p, "successes") + n(p, "failures"),
            "{p}"
        );
        assert!(n(p, "upstream_attempts") >= n(p, "requests"), "{p}");
    }
    // The direct path makes exactly one attempt per request.
    assert_eq!(n(&paths[0], "upstream_attempts"), 20);
    // What Keel says it sent is what its upstreams received.
    assert_eq!(
        n(&r, "keel_attempts_reported"),
        n(&r, "keel_attempts_seen_by_upstreams")
    );
}
