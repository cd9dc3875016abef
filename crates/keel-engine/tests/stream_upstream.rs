//! Plain answers asked upstream as streams (`stream_upstream = true` on a
//! deployment): a hang is caught at the
//! deployment's first-token deadline instead of the attempt timeout, and
//! the answer assembled from the stream is the one the provider's plain
//! answer carries. Against `keel chaos`, attempts counted from its stats.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use keel_chaos::ChaosHandle;
use keel_engine::config::Config;
use keel_engine::{ChatCall, Engine};
use keel_wire::openai::{ChatRequest, Message};

mod common;
use common::report::report;

/// Upstreams `a` (OpenAI) and `b` (Anthropic) with the given faults, each
/// served by a streaming deployment (`a`, `b`) and a plain one (`a_plain`,
/// `b_plain`); routes `ab` = [a, b], `a_plain`, `b`, `b_plain`.
async fn setup(a_faults: &str, policy: &str) -> (ChaosHandle, Engine) {
    setup_both(a_faults, "", policy).await
}

/// [`setup`], with faults on `b` too.
async fn setup_both(a_faults: &str, b_faults: &str, policy: &str) -> (ChaosHandle, Engine) {
    let ch = common::chaos(
        &format!(
            "[[upstream]]\nname = \"a\"\nkind = \"openai\"\n{a_faults}\n\
             [[upstream]]\nname = \"b\"\nkind = \"anthropic\"\n{b_faults}\n"
        ),
        3,
    )
    .await;
    let text = format!(
        r#"
[providers.a]
kind = "openai"
base_url = "{a}"
[providers.b]
kind = "anthropic"
base_url = "{b}"
[deployments.a]
provider = "a"
model = "gpt-test"
stream_upstream = true
[deployments.a_plain]
provider = "a"
model = "gpt-test"
stream_upstream = false
[deployments.b]
provider = "b"
model = "claude-test"
stream_upstream = true
[deployments.b_plain]
provider = "b"
model = "claude-test"
stream_upstream = false
[routes.ab]
chain = ["a", "b"]
[routes.a_plain]
chain = ["a_plain"]
[routes.b]
chain = ["b"]
[routes.b_plain]
chain = ["b_plain"]
[policy]
max_attempts = 2
backoff_base = "1ms"
backoff_cap = "2ms"
attempt_timeout = "30s"
{policy}
[breaker]
consecutive_failures = 1000
"#,
        a = ch.base_url("a"),
        b = ch.base_url("b"),
    );
    let config = Config::from_toml_str(&text, "keel.toml", &|_| None).unwrap();
    (ch, Engine::with_seed(config, 7).unwrap())
}

fn call(route: &str) -> ChatCall {
    let mut r = ChatRequest::new(route, vec![Message::user("Tell me about rivers.")]);
    r.max_tokens = Some(200);
    ChatCall::openai(r)
}

fn metric(e: &Engine, prefix: &str) -> Vec<String> {
    e.render_metrics()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .map(str::to_owned)
        .collect()
}

/// A plain request whose first attempt hangs is given up at the first-token
/// deadline (here its floor, 50 ms: nothing was learned yet), not at the
/// 30 s attempt timeout, and retried; the upstream saw two streams.
#[tokio::test]
async fn a_hang_is_given_up_at_the_first_token_deadline() {
    let (ch, e) = setup(
        "[[upstream.fault]]\nkind = \"hang\"\nsequence = [1]\n",
        "first_token_floor = \"50ms\"",
    )
    .await;
    let out = e.chat(call("ab")).await.unwrap();
    assert!(out.response().text().is_some_and(|t| !t.is_empty()));
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=ab\n\
         attempt a#1 class=timeout status=- next=retry delay_ms=0 reason=\"no first token within 50 ms; backoff\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 hang=1 ok=1\n\
         upstream b: attempts=0\n"
    );
    let log = ch.stats("a").unwrap().log;
    assert!(log.iter().all(|a| a.stream), "{log:?}");
    assert_eq!(
        metric(&e, "keel_first_token_deadline_hits_total"),
        ["keel_first_token_deadline_hits_total{deployment=\"a\"} 1"]
    );
    assert_eq!(
        metric(&e, "keel_upstream_streamed_answers_total"),
        ["keel_upstream_streamed_answers_total{deployment=\"a\"} 1"]
    );
}

/// With `stream_upstream = false` (the default) the plain request is sent
/// as it is, not as a stream.
#[tokio::test]
async fn without_stream_upstream_the_request_passes_as_it_is() {
    let (ch, e) = setup("", "").await;
    let out = e.chat(call("a_plain")).await.unwrap();
    assert_eq!(out.meta.upstream_attempts, 1);
    let log = ch.stats("a").unwrap().log;
    assert_eq!(log.len(), 1);
    assert!(!log[0].stream && !log[0].body.contains("stream"), "{log:?}");
    assert!(metric(&e, "keel_upstream_streamed_answers_total").is_empty());
}

/// The answer assembled from the stream is the provider's plain answer:
/// the same canonical answer and, for the provider's own client API, the
/// same body but for the per-attempt id and timestamp, on both providers.
#[tokio::test]
async fn the_assembled_answer_is_the_plain_answer() {
    for (streamed, plain) in [("ab", "a_plain"), ("b", "b_plain")] {
        let (ch, e) = setup("", "").await;
        let s = e.chat(call(streamed)).await.unwrap();
        let p = e.chat(call(plain)).await.unwrap();
        let (mut s, mut p) = (s.response().clone(), p.response().clone());
        for r in [&mut s, &mut p] {
            r.id.clear();
            r.created = 0;
            r.model.clear();
        }
        assert_eq!(s, p, "{streamed}");
        assert!(s.usage.as_ref().is_some_and(|u| u.completion_tokens > 0));
        let log = ch.stats(&streamed[..1]).unwrap().log;
        assert_eq!(
            log.iter().map(|a| a.stream).collect::<Vec<_>>(),
            [true, false],
            "{streamed}"
        );
    }
}

const CUT: &str = "[[upstream.fault]]\nkind = \"cut_stream\"\nafter_chunks = 6\nsequence = [1]\n";

/// A plain answer cut mid-way (nothing reached the client) is resumed like
/// a stream: the next attempt asks for the continuation of the text that
/// came, and the client gets the whole answer, the same text as an uncut
/// answer, on both providers. The upstream saw the text in the second
/// request.
#[tokio::test]
async fn a_cut_answer_is_continued_from_its_text() {
    for (route, plain, up) in [("ab", "a_plain", "a"), ("b", "b_plain", "b")] {
        let (a, b) = if up == "a" { (CUT, "") } else { ("", CUT) };
        let (ch, e) = setup_both(a, b, "").await;
        let out = e.chat(call(route)).await.unwrap();
        let whole = e.chat(call(plain)).await.unwrap();
        let text = out.response().text().unwrap_or_default().to_string();
        assert_eq!(Some(text.as_str()), whole.response().text(), "{route}");
        let first = &out.meta.attempts[0];
        let (class, next) = (first.class, first.next);
        assert_eq!((class, next), (Some("network"), "retry"), "{route}");
        let cut = first
            .reason
            .split("; cut after ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or_else(|| panic!("{route}: {}", first.reason));
        assert!(cut > 0 && cut < text.chars().count(), "{route}: {cut}");
        assert_eq!(out.meta.upstream_attempts, 2, "{route}");
        let stats = ch.stats(up).unwrap();
        assert_eq!(stats.attempts, 3, "{route}");
        let prefix: String = text.chars().take(cut).collect();
        let again = &stats.log[1].body;
        assert!(
            again.contains(&serde_json::to_string(&prefix).unwrap()[1..prefix.len()])
                && again.contains("Continue it exactly"),
            "{route}: {again}"
        );
        assert_eq!(
            metric(&e, "keel_answer_resumes_total"),
            [format!("keel_answer_resumes_total{{route=\"{route}\"}} 1")]
        );
    }
}

/// With `stream_failure = "fail"` a cut answer is retried from scratch.
#[tokio::test]
async fn with_stream_failure_fail_a_cut_answer_is_asked_again() {
    let (ch, e) = setup(CUT, "stream_failure = \"fail\"").await;
    let out = e.chat(call("ab")).await.unwrap();
    assert_eq!(
        report(&out.meta, &ch, &["a", "b"]),
        "request_id=\"\" route=ab\n\
         attempt a#1 class=network status=- next=retry delay_ms=0 reason=\"stream broke: error reading a body from connection: unexpected EOF during chunk size line; backoff\"\n\
         attempt a#2 class=- status=200 next=ok delay_ms=- reason=\"answered\"\n\
         deployment=a fallback_depth=0 tier=Chain upstream_attempts=2 truncated=false refusal=false cache=none cost_usd=0\n\
         upstream a: attempts=2 cut_stream=1 ok=1\n\
         upstream b: attempts=0\n"
    );
    assert!(!ch.stats("a").unwrap().log[1]
        .body
        .contains("Continue it exactly"));
    assert!(metric(&e, "keel_answer_resumes_total").is_empty());
}

/// After its first token an assembled answer is alive like a stream: an
/// answer still being written when `attempt_timeout` passes is read to its
/// end (a provider's plain answer of that length would take as long), in
/// one attempt.
#[tokio::test]
async fn a_long_answer_still_coming_is_not_cut_by_the_attempt_timeout() {
    let ch = common::chaos(
        "[[upstream]]\nname = \"a\"\nkind = \"openai\"\ntoken_delay = \"5ms\"\n",
        3,
    )
    .await;
    let text = format!(
        "[providers.a]\nkind = \"openai\"\nbase_url = \"{}\"\n\
         [deployments.a]\nprovider = \"a\"\nmodel = \"gpt-test\"\n\
         [routes.a]\nchain = [\"a\"]\n\
         [policy]\nmax_attempts = 1\nattempt_timeout = \"100ms\"\ninter_token_timeout = \"5s\"\n",
        ch.base_url("a")
    );
    let e = Engine::with_seed(
        Config::from_toml_str(&text, "k.toml", &|_| None).unwrap(),
        7,
    )
    .unwrap();
    let started = std::time::Instant::now();
    let out = e.chat(call("a")).await.unwrap();
    let took = started.elapsed();
    let text = out.response().text().unwrap_or_default();
    // The answer took longer than the attempt timeout to write.
    assert!(took > std::time::Duration::from_millis(100), "{took:?}");
    assert!(text.split(' ').count() > 20, "{text}");
    let stats = ch.stats("a").unwrap();
    assert_eq!((stats.attempts, stats.log[0].stream), (1, true));
}
