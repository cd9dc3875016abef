#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! `keel batch` parts on their own: the AIMD controller (pure), checkpoint
//! recovery of the output file, and input parsing.

use std::io::Write;
use std::time::Duration;

use keel::batch::aimd::{Aimd, AimdConfig, Change, Completion};
use keel::batch::input::{self, RouteChoice};
use keel::batch::journal;
use keel::batch::{BatchError, Concurrency};

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

fn clean(latency: u64) -> Completion {
    Completion {
        service: ms(latency),
        attempt_latency: ms(latency),
        limiter_wait: Duration::ZERO,
        upstream_429: false,
        limiter_refused: false,
        clean: true,
    }
}

// ------------------------------------------------------------------ AIMD

#[test]
fn aimd_grows_fast_until_the_first_push_back_then_by_one_per_round() {
    let mut a = Aimd::new(AimdConfig::default());
    assert_eq!(a.limit(), 4);
    for _ in 0..12 {
        a.on_completion(&clean(50));
    }
    assert_eq!(a.limit(), 16, "slow start: one more slot per clean answer");
    let rate_limited = Completion {
        upstream_429: true,
        clean: false,
        ..clean(50)
    };
    assert_eq!(
        a.on_completion(&rate_limited),
        Some(Change::UpstreamRateLimited)
    );
    assert_eq!(a.limit(), 8);
    // The rest of the same round carries the same news: no second halving.
    for _ in 0..7 {
        assert_eq!(a.on_completion(&rate_limited), None);
    }
    assert_eq!(a.limit(), 8);
    // Congestion avoidance: about one slot per round of `limit` answers.
    for _ in 0..9 {
        a.on_completion(&clean(50));
    }
    assert_eq!(a.limit(), 9);
}

#[test]
fn aimd_halves_on_a_latency_blow_up_and_on_long_limiter_waits() {
    let mut a = Aimd::new(AimdConfig {
        initial: 32,
        ..AimdConfig::default()
    });
    for _ in 0..4 {
        a.on_completion(&clean(100));
    }
    let before = a.limit();
    assert_eq!(a.on_completion(&clean(1000)), Some(Change::LatencyBlowUp));
    assert_eq!(a.limit(), before / 2);
    let mut b = Aimd::new(AimdConfig {
        initial: 32,
        ..AimdConfig::default()
    });
    let waited = Completion {
        limiter_wait: ms(500),
        ..clean(100)
    };
    assert_eq!(b.on_completion(&waited), Some(Change::LimiterWait));
    assert_eq!(b.limit(), 16);
    // A short wait (under one answer's latency) is not a signal to slow down.
    let mut c = Aimd::new(AimdConfig {
        initial: 32,
        ..AimdConfig::default()
    });
    let short = Completion {
        limiter_wait: ms(60),
        ..clean(100)
    };
    assert_eq!(c.on_completion(&short), Some(Change::Increase));
}

#[test]
fn aimd_never_exceeds_what_the_configured_rate_can_keep_busy() {
    // 10 requests/s at 200 ms each need 2 in flight (Little's law).
    let mut a = Aimd::new(AimdConfig {
        initial: 4,
        rate_per_sec: Some(10.0),
        ..AimdConfig::default()
    });
    for _ in 0..1000 {
        a.on_completion(&clean(200));
    }
    assert!(a.limit() <= 5, "ceiling: {}", a.limit());
    assert_eq!(a.limit(), a.ceiling());
    // Limiter waits never push it below what the rate needs.
    let waited = Completion {
        limiter_wait: ms(2000),
        ..clean(200)
    };
    for _ in 0..100 {
        a.on_completion(&waited);
    }
    assert!(a.limit() >= 3, "floor: {}", a.limit());
    // The provider's 429s may go lower.
    let limited = Completion {
        upstream_429: true,
        clean: false,
        ..clean(200)
    };
    for _ in 0..100 {
        a.on_completion(&limited);
    }
    assert_eq!(a.limit(), 1);
}

#[test]
fn concurrency_parses_numbers_and_auto() {
    assert_eq!("auto".parse::<Concurrency>(), Ok(Concurrency::Auto));
    assert_eq!(
        "16".parse::<Concurrency>(),
        Ok(Concurrency::Fixed(16.try_into().unwrap()))
    );
    assert_eq!(
        "0".parse::<Concurrency>(),
        Err("expected a positive number or `auto`, got \"0\"".into())
    );
}

// ------------------------------------------------------------------ checkpoint recovery

#[test]
fn recovery_cuts_a_torn_last_line_and_lists_the_finished_ids() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let complete = "{\"custom_id\":\"a\",\"tier\":\"chain\"}\n\n{\"custom_id\":\"b\"}\n{\"custom_id\":null,\"keel_raw_line\":\"oops\"}\n";
    std::fs::write(&path, format!("{complete}{{\"custom_id\":\"c\",\"resp")).unwrap();
    let (mut file, rec) = journal::recover(&path).unwrap();
    assert_eq!(rec.lines, 3);
    assert_eq!(rec.truncated_bytes, 22);
    assert!(rec.done.contains("a") && rec.done.contains("b"));
    assert!(!rec.done.contains("c"));
    assert!(rec.malformed_done.contains("oops"));
    file.write_all(b"{\"custom_id\":\"c\"}\n").unwrap();
    drop(file);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{complete}{{\"custom_id\":\"c\"}}\n")
    );
}

#[test]
fn recovery_refuses_a_file_with_a_complete_line_that_is_not_json() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out.jsonl");
    let text = "{\"custom_id\":\"a\"}\nnot json\n{\"custom_id\":\"b\"}\n";
    std::fs::write(&path, text).unwrap();
    let err = journal::recover(&path).unwrap_err();
    assert!(matches!(err, BatchError::OutputCorrupt { line: 2, .. }));
    assert!(err
        .to_string()
        .ends_with("out.jsonl:2: not a Keel batch line (expected ident at line 1 column 2); refusing to append to or cut this file"), "{err}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
}

#[test]
fn recovery_creates_a_missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("new.jsonl");
    let (_f, rec) = journal::recover(&path).unwrap();
    assert_eq!(rec.lines, 0);
    assert!(path.exists());
}

// ------------------------------------------------------------------ input

fn routes() -> RouteChoice {
    RouteChoice {
        forced: None,
        default: Some("extract".into()),
    }
}

#[test]
fn input_lines_are_checked_one_by_one_with_their_line_numbers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    let lines = [
        r#"{"custom_id":"ok","method":"POST","url":"/v1/chat/completions","body":{"model":"gpt","messages":[{"role":"user","content":"hi"}],"stream":true}}"#,
        "",
        r#"[1,2]"#,
        r#"{"method":"POST","body":{}}"#,
        r#"{"custom_id":"wrong-url","url":"/v1/files","body":{"input":"x"}}"#,
        r#"{"custom_id":"no-messages","body":{"model":"gpt"}}"#,
        r#"{"custom_id":"no-model","body":{"messages":[]}}"#,
    ];
    std::fs::write(&path, lines.join("\n")).unwrap();
    let input = input::load(&path, None, &routes()).unwrap();
    assert_eq!(input.items.len(), 2);
    let ok = &input.items[0];
    assert_eq!((ok.custom_id.as_str(), ok.line), ("ok", 1));
    assert_eq!(ok.request.model(), "gpt");
    assert_eq!(
        ok.request.chat().unwrap().stream,
        None,
        "a batch asks for whole answers"
    );
    assert_eq!(
        input.items[1].request.model(),
        "extract",
        "the default route"
    );
    let got: Vec<(usize, Option<&str>, &str)> = input
        .malformed
        .iter()
        .map(|m| (m.line, m.custom_id.as_deref(), m.message.as_str()))
        .collect();
    assert_eq!(got.len(), 4);
    assert_eq!(got[0], (3, None, "expected a JSON object"));
    assert_eq!(got[1], (4, None, "missing `custom_id`"));
    assert_eq!(
        got[2],
        (
            5,
            Some("wrong-url"),
            "`url` must be \"/v1/chat/completions\", \"/v1/embeddings\" or \"/v1/responses\" (the endpoints keel batch runs), got \"/v1/files\""
        )
    );
    assert_eq!(got[3].0, 6);
    assert!(
        got[3]
            .2
            .starts_with("`body` is not a chat completion request: missing field `messages`"),
        "{}",
        got[3].2
    );
}

#[test]
fn forced_route_overrides_body_model() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.jsonl");
    std::fs::write(
        &path,
        r#"{"custom_id":"a","body":{"model":"gpt","messages":[{"role":"user","content":"hi"}]}}"#,
    )
    .unwrap();
    let input = input::load(
        &path,
        None,
        &RouteChoice {
            forced: Some("cheap".into()),
            default: None,
        },
    )
    .unwrap();
    assert_eq!(input.items[0].request.model(), "cheap");
    // The original line is kept as it was, for the dead letter.
    assert_eq!(input.items[0].original["body"]["model"], "gpt");
}

#[test]
fn a_template_without_the_content_placeholder_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("a.txt"), "x").unwrap();
    let t = dir.path().join("t.txt");
    std::fs::write(&t, "Summarise this").unwrap();
    let err = input::load(dir.path(), Some(&t), &routes()).unwrap_err();
    assert!(
        err.to_string()
            .ends_with("t.txt: the template has no {{content}} placeholder for the file's text"),
        "{err}"
    );
}
