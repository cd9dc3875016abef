//! Every fault kind, produced and observed over HTTP with reqwest.
#![allow(clippy::type_complexity)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

fn fault(kind_and_fields: &str) -> String {
    format!("[[upstream.fault]]\n{kind_and_fields}\n")
}

/// Start `o` (openai) and `a` (anthropic) with the same fault on both.
async fn start_with(f: &str) -> keel_chaos::ChaosHandle {
    let toml = format!(
        "[[upstream]]\nname = \"o\"\nkind = \"openai\"\n{0}\n[[upstream]]\nname = \"a\"\nkind = \"anthropic\"\n{0}\n",
        fault(f)
    );
    start(&toml).await
}

async fn openai_error(h: &keel_chaos::ChaosHandle) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = post_openai(h, "o", &openai_body(false)).await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap())
}

async fn anthropic_error(h: &keel_chaos::ChaosHandle) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = post_anthropic(h, "a", &anthropic_body(false))
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap())
}

fn header<'a>(h: &'a reqwest::header::HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("missing header {name}"))
        .to_str()
        .unwrap()
}

#[tokio::test]
async fn error_faults_use_each_providers_status_body_and_type() {
    // (fault, openai status, openai error.type, openai error.code, anthropic status, anthropic error.type)
    let cases: &[(&str, u16, &str, Option<&str>, u16, &str)] = &[
        (
            "kind = \"rate_limit\"",
            429,
            "requests",
            Some("rate_limit_exceeded"),
            429,
            "rate_limit_error",
        ),
        (
            "kind = \"quota_exhausted\"",
            429,
            "insufficient_quota",
            Some("insufficient_quota"),
            402,
            "billing_error",
        ),
        (
            "kind = \"overloaded\"",
            503,
            "server_error",
            None,
            529,
            "overloaded_error",
        ),
        (
            "kind = \"server_error\"",
            500,
            "server_error",
            None,
            500,
            "api_error",
        ),
        (
            "kind = \"server_error\"\nstatus = 502",
            502,
            "server_error",
            None,
            502,
            "api_error",
        ),
        (
            "kind = \"status\"\nstatus = 504",
            504,
            "server_error",
            None,
            504,
            "timeout_error",
        ),
        (
            "kind = \"status\"\nstatus = 403",
            403,
            "invalid_request_error",
            None,
            403,
            "permission_error",
        ),
        (
            "kind = \"status\"\nstatus = 408",
            408,
            "invalid_request_error",
            None,
            408,
            "invalid_request_error",
        ),
        (
            "kind = \"auth\"",
            401,
            "invalid_request_error",
            Some("invalid_api_key"),
            401,
            "authentication_error",
        ),
        (
            "kind = \"context_overflow\"",
            400,
            "invalid_request_error",
            Some("context_length_exceeded"),
            400,
            "invalid_request_error",
        ),
        (
            "kind = \"bad_request\"",
            400,
            "invalid_request_error",
            Some("invalid_value"),
            400,
            "invalid_request_error",
        ),
        (
            "kind = \"not_found\"",
            404,
            "invalid_request_error",
            Some("model_not_found"),
            404,
            "not_found_error",
        ),
    ];
    for (f, o_status, o_type, o_code, a_status, a_type) in cases {
        let h = start_with(f).await;
        let (status, headers, body) = openai_error(&h).await;
        assert_eq!(status, *o_status, "{f}: {body}");
        let err = &body["error"];
        assert_eq!(err["type"], *o_type, "{f}: {body}");
        assert_eq!(err["code"].as_str(), *o_code, "{f}: {body}");
        assert!(err["message"].as_str().unwrap().len() > 5);
        assert!(
            err.get("param").is_some(),
            "{f}: param present (maybe null)"
        );
        assert!(header(&headers, "x-request-id").starts_with("req_"));

        let (status, headers, body) = anthropic_error(&h).await;
        assert_eq!(status, *a_status, "{f}: {body}");
        assert_eq!(body["type"], "error");
        assert_eq!(body["error"]["type"], *a_type, "{f}: {body}");
        assert!(header(&headers, "request-id").starts_with("req_"));
        let o = h.stats("o").unwrap();
        let expected = f.split('"').nth(1).unwrap();
        assert_eq!(o.by_outcome.get(expected), Some(&1), "{f}: {o:?}");
        assert_eq!(o.log[0].status, *o_status);
        h.shutdown().await;
    }
}

#[tokio::test]
async fn context_overflow_messages_match_the_providers() {
    let h = start_with("kind = \"context_overflow\"").await;
    let (_, _, body) = openai_error(&h).await;
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.starts_with("This model's maximum context length is 128000 tokens."),
        "{msg}"
    );
    assert_eq!(body["error"]["param"], "messages");
    let (_, _, body) = anthropic_error(&h).await;
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(msg.starts_with("prompt is too long: "), "{msg}");
    assert!(msg.ends_with("tokens > 200000 maximum"), "{msg}");
}

#[tokio::test]
async fn rate_limit_headers_follow_the_style() {
    let h = start_with("kind = \"rate_limit\"\nretry_after = \"1500ms\"").await;
    let (_, headers, _) = openai_error(&h).await;
    assert_eq!(header(&headers, "retry-after"), "2");
    assert_eq!(header(&headers, "retry-after-ms"), "1500");
    assert_eq!(header(&headers, "x-ratelimit-remaining-requests"), "0");
    assert_eq!(header(&headers, "x-ratelimit-reset-requests"), "1.5s");
    let (_, headers, _) = anthropic_error(&h).await;
    assert_eq!(header(&headers, "retry-after"), "2");
    assert_eq!(
        header(&headers, "anthropic-ratelimit-requests-remaining"),
        "0"
    );
    let reset = header(&headers, "anthropic-ratelimit-requests-reset");
    assert_eq!(reset.len(), 20, "{reset}");
    assert!(
        reset.ends_with('Z') && reset.as_bytes()[10] == b'T',
        "{reset}"
    );

    let styles: &[(&str, &[&str], &[&str])] = &[
        (
            "seconds",
            &["retry-after"],
            &["retry-after-ms", "x-ratelimit-reset-requests"],
        ),
        (
            "ms",
            &["retry-after-ms"],
            &["retry-after", "x-ratelimit-reset-requests"],
        ),
        (
            "reset",
            &["x-ratelimit-reset-requests"],
            &["retry-after", "retry-after-ms"],
        ),
        (
            "none",
            &[],
            &[
                "retry-after",
                "retry-after-ms",
                "x-ratelimit-reset-requests",
            ],
        ),
        ("http_date", &["retry-after"], &["retry-after-ms"]),
    ];
    for (style, present, absent) in styles {
        let h = start_with(&format!(
            "kind = \"rate_limit\"\nheader_style = \"{style}\""
        ))
        .await;
        let (status, headers, _) = openai_error(&h).await;
        assert_eq!(status, 429);
        for p in *present {
            assert!(headers.contains_key(*p), "{style}: {p} missing");
        }
        for a in *absent {
            assert!(!headers.contains_key(*a), "{style}: {a} present");
        }
        if *style == "http_date" {
            assert!(header(&headers, "retry-after").ends_with(" GMT"));
        }
    }
}

#[tokio::test]
async fn reset_closes_the_connection_without_a_response() {
    let h = start_with("kind = \"reset\"").await;
    let err = post_openai(&h, "o", &openai_body(false)).await.unwrap_err();
    assert!(!err.is_timeout() && err.status().is_none(), "{err:?}");
    let err = post_anthropic(&h, "a", &anthropic_body(true))
        .await
        .unwrap_err();
    assert!(err.status().is_none(), "{err:?}");
    let o = h.stats("o").unwrap();
    assert_eq!(o.by_outcome.get("reset"), Some(&1));
    assert_eq!(o.log[0].status, 0);
}

#[tokio::test]
async fn hang_never_answers_until_the_client_gives_up() {
    let h = start_with("kind = \"hang\"").await;
    let err = client()
        .post(format!("{}/chat/completions", h.base_url("o")))
        .json(&openai_body(false))
        .timeout(Duration::from_millis(150))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert_eq!(h.stats("o").unwrap().by_outcome.get("hang"), Some(&1));
    // The client gave up: the request is counted closed by its client (a
    // bound on the wait only; it ends when the count changes).
    tokio::time::timeout(Duration::from_secs(20), h.closed_by_client("o", 1))
        .await
        .expect("the hang counted closed by its client");
    // Shutdown drops hanging connections instead of waiting for them.
    h.shutdown().await;
}

#[tokio::test]
async fn cut_stream_stops_without_terminal_event() {
    let h = start_with("kind = \"cut_stream\"\nafter_chunks = 3").await;
    let resp = post_openai(&h, "o", &openai_body(true)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let (text, errored) = read_until_end(resp).await;
    assert!(errored, "the body must end in an error: {text}");
    assert_eq!(sse_data(&text).len(), 3, "{text}");
    assert!(!text.contains("[DONE]"));

    let resp = post_anthropic(&h, "a", &anthropic_body(true))
        .await
        .unwrap();
    let (text, errored) = read_until_end(resp).await;
    assert!(errored);
    assert_eq!(sse_data(&text).len(), 3, "{text}");
    assert!(!text.contains("message_stop"));

    // Non-streaming: headers and part of the body, then the cut.
    let resp = post_openai(&h, "o", &openai_body(false)).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.bytes().await.is_err());
    assert_eq!(h.stats("o").unwrap().by_outcome.get("cut_stream"), Some(&2));
    // Chaos cut them itself: not closed by the client.
    assert_eq!(h.stats("o").unwrap().closed_by_client, 0);
    assert_eq!(h.stats("a").unwrap().closed_by_client, 0);
}

#[tokio::test]
async fn cut_stream_with_token_delay_also_cuts() {
    let toml = "[[upstream]]\nname = \"o\"\nkind = \"openai\"\ntoken_delay = \"2ms\"\n[[upstream.fault]]\nkind = \"cut_stream\"\nafter_chunks = 2\n";
    let h = start(toml).await;
    let resp = post_openai(&h, "o", &openai_body(true)).await.unwrap();
    let (text, errored) = read_until_end(resp).await;
    assert!(errored);
    assert_eq!(sse_data(&text).len(), 2, "{text}");
}

#[tokio::test]
async fn malformed_json_is_a_200_that_does_not_parse() {
    let h = start_with("kind = \"malformed_json\"").await;
    let resp = post_openai(&h, "o", &openai_body(false)).await.unwrap();
    assert_eq!(resp.status(), 200);
    let text = resp.text().await.unwrap();
    assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    let resp = post_anthropic(&h, "a", &anthropic_body(false))
        .await
        .unwrap();
    assert!(serde_json::from_str::<Value>(&resp.text().await.unwrap()).is_err());
    // Streaming: one event is broken, the stream still ends normally.
    let resp = post_openai(&h, "o", &openai_body(true)).await.unwrap();
    let text = resp.text().await.unwrap();
    let data = sse_data(&text);
    assert!(data
        .iter()
        .any(|d| d != "[DONE]" && serde_json::from_str::<Value>(d).is_err()));
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
}

#[tokio::test]
async fn content_faults_empty_truncate_refusal() {
    let h = start_with("kind = \"empty\"").await;
    let v: Value = post_openai(&h, "o", &openai_body(false))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "");
    assert_eq!(v["usage"]["completion_tokens"], 0);
    let v: Value = post_anthropic(&h, "a", &anthropic_body(false))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["content"], serde_json::json!([]));

    let h = start_with("kind = \"truncate\"").await;
    let v: Value = post_openai(&h, "o", &openai_body(false))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    let v: Value = post_anthropic(&h, "a", &anthropic_body(false))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["stop_reason"], "max_tokens");

    let h = start_with("kind = \"refusal\"").await;
    let v: Value = post_openai(&h, "o", &openai_body(false))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["refusal"], "I'm sorry, but I can't help with that.");
    assert!(msg["content"].is_null());
    let v: Value = post_anthropic(&h, "a", &anthropic_body(false))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["stop_reason"], "refusal");
    assert_eq!(
        v["content"][0]["text"],
        "I'm sorry, but I can't help with that."
    );
    // Streaming refusal: the refusal arrives in deltas.
    let text = post_openai(&h, "o", &openai_body(true))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("\"refusal\":\"I'm sorr"), "{text}");
}

#[tokio::test]
async fn invalid_json_breaks_structured_output() {
    let h = start_with("kind = \"invalid_json\"").await;
    let mut body = openai_body(false);
    body["response_format"] = serde_json::json!({"type": "json_object"});
    let v: Value = post_openai(&h, "o", &body)
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(serde_json::from_str::<Value>(content).is_err(), "{content}");
}

#[tokio::test]
async fn slow_first_byte_and_slow_tokens_delay_the_answer() {
    let h = start_with("kind = \"slow_first_byte\"\ndelay = \"60ms\"").await;
    let t = std::time::Instant::now();
    let resp = post_openai(&h, "o", &openai_body(false)).await.unwrap();
    assert!(t.elapsed() >= Duration::from_millis(60));
    assert_eq!(resp.status(), 200);

    let h = start_with("kind = \"slow_tokens\"\ndelay = \"3ms\"").await;
    let t = std::time::Instant::now();
    let text = post_openai(&h, "o", &openai_body(true))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let chunks = sse_data(&text).len() as u32;
    assert!(
        t.elapsed() >= Duration::from_millis(3) * (chunks - 1),
        "{chunks} chunks"
    );
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(
        h.stats("o").unwrap().by_outcome.get("slow_tokens"),
        Some(&1)
    );
}

#[tokio::test]
async fn an_answer_read_to_its_end_is_not_closed_by_its_client() {
    let h = start("[[upstream]]\nname = \"o\"\nkind = \"openai\"\ntoken_delay = \"1ms\"\n").await;
    let resp = post_openai(&h, "o", &openai_body(false)).await.unwrap();
    assert_eq!(resp.status(), 200);
    resp.bytes().await.unwrap();
    let resp = post_openai(&h, "o", &openai_body(true)).await.unwrap();
    let (text, errored) = read_until_end(resp).await;
    assert!(!errored && text.contains("[DONE]"), "{text}");
    let stats = h.stats("o").unwrap();
    assert_eq!((stats.attempts, stats.closed_by_client), (2, 0));
}

/// A whole answer comes no sooner than the same answer streamed ends:
/// `token_delay` between each two of the stream's events, for either.
#[tokio::test]
async fn a_whole_answer_takes_as_long_as_its_stream() {
    let h = start("[[upstream]]\nname = \"o\"\nkind = \"openai\"\ntoken_delay = \"4ms\"\n").await;
    let streamed = post_openai(&h, "o", &openai_body(true))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let gaps = sse_data(&streamed).len() as u32 - 1;
    assert!(gaps > 3, "{streamed}");
    let t = std::time::Instant::now();
    let whole = post_openai(&h, "o", &openai_body(false)).await.unwrap();
    assert_eq!(whole.status(), 200);
    whole.bytes().await.unwrap();
    assert!(
        t.elapsed() >= Duration::from_millis(4) * gaps,
        "{gaps} gaps"
    );
}
