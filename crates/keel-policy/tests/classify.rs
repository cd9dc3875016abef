//! Table-driven classification tests: one or more cases per row of docs/design.md §2.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use keel_policy::{
    classify_completion, classify_invalid_output, classify_response, classify_transport, Action,
    FailureClass, HintSource, RetryHint, TransportError,
};

const RETRY_FALLBACK: Action = Action {
    retry_same: true,
    fall_back: true,
};
const FALLBACK_ONLY: Action = Action {
    retry_same: false,
    fall_back: true,
};
const RETRY_ONLY: Action = Action {
    retry_same: true,
    fall_back: false,
};
const NEITHER: Action = Action::FAIL_FAST;

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_718_000_000)
}

fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.insert(
            http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

struct Case {
    name: &'static str,
    status: u16,
    headers: &'static [(&'static str, &'static str)],
    body: &'static str,
    class: FailureClass,
    action: Action,
    code: Option<&'static str>,
}

const OPENAI_RATE_LIMIT: &str = r#"{"error":{"message":"Rate limit reached for gpt-4o in organization org-abc on tokens per min (TPM): Limit 30000, Used 29500, Requested 1200. Please try again in 1.4s.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
const OPENAI_QUOTA: &str = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
const OPENAI_CONTEXT: &str = r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130412 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;
const OPENAI_SERVER: &str = r#"{"error":{"message":"The server had an error while processing your request. Sorry about that!","type":"server_error","param":null,"code":null}}"#;
const OPENAI_BAD_PARAM: &str = r#"{"error":{"message":"Invalid value for 'temperature': expected a number <= 2.","type":"invalid_request_error","param":"temperature","code":"invalid_value"}}"#;
const OPENAI_MODEL_404: &str = r#"{"error":{"message":"The model `gpt-5-turbo` does not exist or you do not have access to it.","type":"invalid_request_error","param":null,"code":"model_not_found"}}"#;
const OPENAI_AUTH: &str = r#"{"error":{"message":"Incorrect API key provided: sk-abc***. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
const OPENAI_BILLING: &str = r#"{"error":{"message":"Billing hard limit has been reached","type":"billing_hard_limit_reached","param":null,"code":null}}"#;
const AZURE_FILTER: &str = r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy.","type":null,"param":"prompt","code":"content_filter","status":400}}"#;
const ANTHROPIC_RATE_LIMIT: &str = r#"{"type":"error","error":{"type":"rate_limit_error","message":"This request would exceed the rate limit for your organization of 50,000 input tokens per minute."}}"#;
const ANTHROPIC_OVERLOADED: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
const ANTHROPIC_API_ERROR: &str =
    r#"{"type":"error","error":{"type":"api_error","message":"Internal server error"}}"#;
const ANTHROPIC_AUTH: &str =
    r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#;
const ANTHROPIC_PERMISSION: &str = r#"{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}}"#;
const ANTHROPIC_NOT_FOUND: &str =
    r#"{"type":"error","error":{"type":"not_found_error","message":"model: claude-9-opus"}}"#;
const ANTHROPIC_TOO_LARGE: &str = r#"{"type":"error","error":{"type":"request_too_large","message":"Request exceeds the maximum allowed number of bytes."}}"#;
const ANTHROPIC_PROMPT_TOO_LONG: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 215010 tokens > 200000 maximum"}}"#;
const ANTHROPIC_INVALID: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"messages: roles must alternate between \"user\" and \"assistant\""}}"#;
const ANTHROPIC_CREDIT: &str = r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#;

fn cases() -> Vec<Case> {
    use FailureClass::*;
    vec![
        // rate_limited
        Case {
            name: "openai 429 rate limit",
            status: 429,
            headers: &[],
            body: OPENAI_RATE_LIMIT,
            class: RateLimited,
            action: RETRY_FALLBACK,
            code: Some("rate_limit_exceeded"),
        },
        Case {
            name: "anthropic 429 rate_limit_error",
            status: 429,
            headers: &[],
            body: ANTHROPIC_RATE_LIMIT,
            class: RateLimited,
            action: RETRY_FALLBACK,
            code: Some("rate_limit_error"),
        },
        Case {
            name: "bare 429",
            status: 429,
            headers: &[],
            body: "",
            class: RateLimited,
            action: RETRY_FALLBACK,
            code: None,
        },
        // quota_exhausted
        Case {
            name: "openai 429 insufficient_quota",
            status: 429,
            headers: &[],
            body: OPENAI_QUOTA,
            class: QuotaExhausted,
            action: FALLBACK_ONLY,
            code: Some("insufficient_quota"),
        },
        Case {
            name: "openai billing hard limit",
            status: 400,
            headers: &[],
            body: OPENAI_BILLING,
            class: QuotaExhausted,
            action: FALLBACK_ONLY,
            code: Some("billing_hard_limit_reached"),
        },
        Case {
            name: "anthropic credit balance",
            status: 400,
            headers: &[],
            body: ANTHROPIC_CREDIT,
            class: QuotaExhausted,
            action: FALLBACK_ONLY,
            code: Some("invalid_request_error"),
        },
        Case {
            name: "402 payment required",
            status: 402,
            headers: &[],
            body: "Payment Required",
            class: QuotaExhausted,
            action: FALLBACK_ONLY,
            code: None,
        },
        // overloaded
        Case {
            name: "anthropic 529 overloaded",
            status: 529,
            headers: &[],
            body: ANTHROPIC_OVERLOADED,
            class: Overloaded,
            action: RETRY_FALLBACK,
            code: Some("overloaded_error"),
        },
        Case {
            name: "503 html",
            status: 503,
            headers: &[],
            body: "<html><body>503 Service Unavailable</body></html>",
            class: Overloaded,
            action: RETRY_FALLBACK,
            code: None,
        },
        // server_error
        Case {
            name: "openai 500",
            status: 500,
            headers: &[],
            body: OPENAI_SERVER,
            class: ServerError,
            action: RETRY_FALLBACK,
            code: Some("server_error"),
        },
        Case {
            name: "anthropic 500 api_error",
            status: 500,
            headers: &[],
            body: ANTHROPIC_API_ERROR,
            class: ServerError,
            action: RETRY_FALLBACK,
            code: Some("api_error"),
        },
        Case {
            name: "502 bad gateway",
            status: 502,
            headers: &[],
            body: "<html>Bad Gateway</html>",
            class: ServerError,
            action: RETRY_FALLBACK,
            code: None,
        },
        Case {
            name: "504 gateway timeout",
            status: 504,
            headers: &[],
            body: "",
            class: ServerError,
            action: RETRY_FALLBACK,
            code: None,
        },
        Case {
            name: "unexpected 501 is not retried",
            status: 501,
            headers: &[],
            body: "",
            class: ServerError,
            action: FALLBACK_ONLY,
            code: None,
        },
        // timeout
        Case {
            name: "408",
            status: 408,
            headers: &[],
            body: "Request Timeout",
            class: Timeout,
            action: RETRY_FALLBACK,
            code: None,
        },
        // context_overflow
        Case {
            name: "openai context_length_exceeded",
            status: 400,
            headers: &[],
            body: OPENAI_CONTEXT,
            class: ContextOverflow,
            action: FALLBACK_ONLY,
            code: Some("context_length_exceeded"),
        },
        Case {
            name: "anthropic prompt is too long",
            status: 400,
            headers: &[],
            body: ANTHROPIC_PROMPT_TOO_LONG,
            class: ContextOverflow,
            action: FALLBACK_ONLY,
            code: Some("invalid_request_error"),
        },
        Case {
            name: "anthropic 413 request_too_large",
            status: 413,
            headers: &[],
            body: ANTHROPIC_TOO_LARGE,
            class: ContextOverflow,
            action: FALLBACK_ONLY,
            code: Some("request_too_large"),
        },
        // invalid_request
        Case {
            name: "openai 400 bad param",
            status: 400,
            headers: &[],
            body: OPENAI_BAD_PARAM,
            class: InvalidRequest,
            action: NEITHER,
            code: Some("invalid_value"),
        },
        Case {
            name: "anthropic 400 invalid",
            status: 400,
            headers: &[],
            body: ANTHROPIC_INVALID,
            class: InvalidRequest,
            action: NEITHER,
            code: Some("invalid_request_error"),
        },
        Case {
            name: "422",
            status: 422,
            headers: &[],
            body: r#"{"detail":[{"loc":["body","messages"],"msg":"field required"}]}"#,
            class: InvalidRequest,
            action: NEITHER,
            code: None,
        },
        Case {
            name: "openai 404 model_not_found falls back",
            status: 404,
            headers: &[],
            body: OPENAI_MODEL_404,
            class: InvalidRequest,
            action: FALLBACK_ONLY,
            code: Some("model_not_found"),
        },
        Case {
            name: "anthropic 404 not_found_error falls back",
            status: 404,
            headers: &[],
            body: ANTHROPIC_NOT_FOUND,
            class: InvalidRequest,
            action: FALLBACK_ONLY,
            code: Some("not_found_error"),
        },
        Case {
            name: "unexpected 418",
            status: 418,
            headers: &[],
            body: "teapot",
            class: InvalidRequest,
            action: NEITHER,
            code: None,
        },
        // auth
        Case {
            name: "openai 401",
            status: 401,
            headers: &[],
            body: OPENAI_AUTH,
            class: Auth,
            action: FALLBACK_ONLY,
            code: Some("invalid_api_key"),
        },
        Case {
            name: "anthropic 401",
            status: 401,
            headers: &[],
            body: ANTHROPIC_AUTH,
            class: Auth,
            action: FALLBACK_ONLY,
            code: Some("authentication_error"),
        },
        Case {
            name: "anthropic 403",
            status: 403,
            headers: &[],
            body: ANTHROPIC_PERMISSION,
            class: Auth,
            action: FALLBACK_ONLY,
            code: Some("permission_error"),
        },
        // content_filtered (HTTP form; the completion form is tested below)
        Case {
            name: "azure 400 content_filter",
            status: 400,
            headers: &[],
            body: AZURE_FILTER,
            class: ContentFiltered,
            action: FALLBACK_ONLY,
            code: Some("content_filter"),
        },
    ]
}

#[test]
fn every_response_case() {
    for case in cases() {
        let h = headers(case.headers);
        let c = classify_response(case.status, &h, case.body.as_bytes(), now())
            .unwrap_or_else(|| panic!("{}: expected a classification", case.name));
        assert_eq!(c.class, case.class, "{}", case.name);
        assert_eq!(c.action, case.action, "{}", case.name);
        assert_eq!(c.status, Some(case.status), "{}", case.name);
        assert_eq!(c.provider_code.as_deref(), case.code, "{}", case.name);
    }
}

#[test]
fn messages_are_extracted() {
    let c = classify_response(400, &HeaderMap::new(), ANTHROPIC_INVALID.as_bytes(), now()).unwrap();
    assert_eq!(
        c.message.as_deref(),
        Some("messages: roles must alternate between \"user\" and \"assistant\"")
    );
    let c =
        classify_response(502, &HeaderMap::new(), b"  upstream connect error  ", now()).unwrap();
    assert_eq!(c.message.as_deref(), Some("upstream connect error"));
}

#[test]
fn success_is_not_classified() {
    for status in [200, 201, 204, 299] {
        assert!(classify_response(status, &HeaderMap::new(), b"{}", now()).is_none());
    }
}

#[test]
fn transport_errors() {
    use TransportError::*;
    for (err, class) in [
        (Connect, FailureClass::Network),
        (Reset, FailureClass::Network),
        (Dns, FailureClass::Network),
        (Tls, FailureClass::Network),
        (BodyCut, FailureClass::Network),
        (AttemptTimeout, FailureClass::Timeout),
        (FirstByteTimeout, FailureClass::Timeout),
        (InterTokenTimeout, FailureClass::Timeout),
    ] {
        let c = classify_transport(err);
        assert_eq!(c.class, class, "{err:?}");
        assert_eq!(c.action, RETRY_FALLBACK, "{err:?}");
        assert_eq!(c.status, None);
    }
}

#[test]
fn completion_classes() {
    let cases: &[(Option<&str>, bool, bool, bool, Option<FailureClass>)] = &[
        (Some("stop"), true, false, false, None),
        (Some("end_turn"), true, false, false, None),
        (Some("tool_calls"), false, true, false, None),
        (Some("tool_use"), false, true, false, None),
        (
            Some("length"),
            true,
            false,
            false,
            Some(FailureClass::Truncated),
        ),
        (
            Some("max_tokens"),
            true,
            false,
            false,
            Some(FailureClass::Truncated),
        ),
        (
            Some("content_filter"),
            true,
            false,
            false,
            Some(FailureClass::ContentFiltered),
        ),
        (
            Some("refusal"),
            false,
            false,
            false,
            Some(FailureClass::ContentFiltered),
        ),
        (
            Some("stop"),
            true,
            false,
            true,
            Some(FailureClass::ContentFiltered),
        ),
        (Some("stop"), false, false, false, Some(FailureClass::Empty)),
        (None, false, false, false, Some(FailureClass::Empty)),
        (None, true, false, false, None),
    ];
    for &(finish, content, tools, refusal, want) in cases {
        let got = classify_completion(finish, content, tools, refusal).map(|c| c.class);
        assert_eq!(
            got, want,
            "{finish:?} content={content} tools={tools} refusal={refusal}"
        );
    }
    let t = classify_completion(Some("length"), true, false, false).unwrap();
    assert_eq!(t.action, RETRY_ONLY);
    let e = classify_completion(Some("stop"), false, false, false).unwrap();
    assert_eq!(e.action, RETRY_FALLBACK);
    let f = classify_completion(Some("content_filter"), true, false, false).unwrap();
    assert_eq!(f.action, FALLBACK_ONLY);
}

#[test]
fn invalid_output() {
    let c = classify_invalid_output("expected object at $.items[0]");
    assert_eq!(c.class, FailureClass::InvalidOutput);
    assert_eq!(c.action, RETRY_FALLBACK);
    assert_eq!(c.message.as_deref(), Some("expected object at $.items[0]"));
}

#[test]
fn every_class_is_covered_by_some_case() {
    let mut seen: Vec<FailureClass> = cases().iter().map(|c| c.class).collect();
    seen.extend([
        FailureClass::Network,
        FailureClass::Truncated,
        FailureClass::Empty,
        FailureClass::InvalidOutput,
    ]);
    for class in FailureClass::ALL {
        assert!(seen.contains(&class), "no case for {class}");
    }
}

#[test]
fn class_names_round_trip() {
    let names: Vec<&str> = FailureClass::ALL.iter().map(|c| c.as_str()).collect();
    assert_eq!(
        names,
        [
            "rate_limited",
            "quota_exhausted",
            "overloaded",
            "server_error",
            "timeout",
            "network",
            "context_overflow",
            "invalid_request",
            "auth",
            "content_filtered",
            "truncated",
            "empty",
            "invalid_output"
        ]
    );
    for class in FailureClass::ALL {
        assert_eq!(class.as_str().parse::<FailureClass>(), Ok(class));
    }
    assert!("nope".parse::<FailureClass>().is_err());
}

#[test]
fn health_counting_classes() {
    use FailureClass::*;
    let counted: Vec<_> = FailureClass::ALL
        .into_iter()
        .filter(|c| c.counts_for_health())
        .collect();
    assert_eq!(
        counted,
        [
            QuotaExhausted,
            Overloaded,
            ServerError,
            Timeout,
            Network,
            Auth
        ]
    );
}

#[test]
fn rate_limit_hint_is_attached() {
    let h = headers(&[
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-reset-requests", "2s"),
        ("x-ratelimit-reset-tokens", "100ms"),
    ]);
    let c = classify_response(429, &h, OPENAI_RATE_LIMIT.as_bytes(), now()).unwrap();
    assert_eq!(
        c.hint,
        Some(RetryHint {
            after: Duration::from_secs(2),
            source: HintSource::RateLimitReset
        })
    );
}

#[test]
fn reset_headers_are_not_a_hint_for_server_errors() {
    // OpenAI sends x-ratelimit-* on every response; a 500 must not wait for a token window.
    let h = headers(&[
        ("x-ratelimit-reset-tokens", "6m0s"),
        ("x-ratelimit-remaining-tokens", "0"),
    ]);
    let c = classify_response(500, &h, OPENAI_SERVER.as_bytes(), now()).unwrap();
    assert_eq!(c.hint, None);
    // But an explicit Retry-After on a 503 is honoured.
    let h = headers(&[("retry-after", "3")]);
    let c = classify_response(503, &h, b"", now()).unwrap();
    assert_eq!(
        c.hint,
        Some(RetryHint {
            after: Duration::from_secs(3),
            source: HintSource::RetryAfter
        })
    );
}

#[test]
fn garbage_bodies_never_panic() {
    let huge = vec![b'{'; 2 * 1024 * 1024];
    let mut invalid_utf8 = b"{\"error\":{\"message\":\"".to_vec();
    invalid_utf8.extend([0xff, 0xfe, 0xc3]);
    let bodies: Vec<&[u8]> = vec![
        b"",
        b"null",
        b"[]",
        b"\"string\"",
        b"{\"error\":",
        b"{\"error\":{\"type\":42,\"code\":[1,2],\"message\":{}}}",
        b"{\"error\":\"just a string\"}",
        &invalid_utf8,
        &huge,
    ];
    for status in [
        0,
        99,
        100,
        302,
        400,
        404,
        429,
        500,
        503,
        529,
        600,
        999,
        u16::MAX,
    ] {
        for body in &bodies {
            let c = classify_response(status, &HeaderMap::new(), body, now());
            assert!(c.is_some(), "status {status}");
        }
    }
    let c = classify_response(
        400,
        &HeaderMap::new(),
        b"{\"error\":\"just a string\"}",
        now(),
    )
    .unwrap();
    assert_eq!(c.message.as_deref(), Some("just a string"));
}

#[test]
fn long_messages_are_cut() {
    let body = format!(
        r#"{{"error":{{"message":"{}","type":"invalid_request_error"}}}}"#,
        "é".repeat(5000)
    );
    let c = classify_response(400, &HeaderMap::new(), body.as_bytes(), now()).unwrap();
    assert!(c.message.unwrap().chars().count() <= 1025);
}
