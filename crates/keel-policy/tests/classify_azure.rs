//! Azure OpenAI's error answers, one row per class (docs/azure.md), with
//! bodies and headers as Azure's REST reference and service send them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::type_complexity
)]

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use keel_policy::{
    classify_azure_response, classify_completion, rate_limit_headers, Action, FailureClass,
    HintSource,
};

const RETRY_FALLBACK: Action = Action {
    retry_same: true,
    fall_back: true,
};
const FALLBACK_ONLY: Action = Action {
    retry_same: false,
    fall_back: true,
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

const RATE_LIMIT: &str = r#"{"error":{"code":"429","message":"Requests to the ChatCompletions_Create Operation under Azure OpenAI API version 2024-10-21 have exceeded token rate limit of your current OpenAI S0 pricing tier. Please retry after 6 seconds. Please go here: https://aka.ms/oai/quotaincrease if you would like to further increase the default rate limit."}}"#;
const PROMPT_FILTERED: &str = r#"{"error":{"message":"The response was filtered due to the prompt triggering Azure OpenAI's content management policy. Please modify your prompt and retry. To learn more about our content filtering policies please read our documentation: https://go.microsoft.com/fwlink/?linkid=2198766","type":null,"param":"prompt","code":"content_filter","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"hate":{"filtered":true,"severity":"high"},"jailbreak":{"filtered":false,"detected":false},"self_harm":{"filtered":false,"severity":"safe"},"sexual":{"filtered":false,"severity":"safe"},"violence":{"filtered":true,"severity":"medium"}}}}}"#;
/// A prompt shield (jailbreak) block: the inner error only.
const JAILBREAK: &str = r#"{"error":{"message":"The request was blocked.","type":null,"param":"prompt","code":"BadRequest","status":400,"innererror":{"code":"ResponsibleAIPolicyViolation","content_filter_result":{"jailbreak":{"filtered":true,"detected":true}}}}}"#;
const CONTEXT: &str = r#"{"error":{"message":"This model's maximum context length is 128000 tokens. However, your messages resulted in 130412 tokens. Please reduce the length of the messages.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded","status":400}}"#;
const TIMEOUT: &str = r#"{"error":{"code":"Timeout","message":"The operation was timeout."}}"#;
const SERVER: &str = r#"{"error":{"code":"InternalServerError","message":"The server had an error while processing your request. Sorry about that!"}}"#;
const UNAVAILABLE: &str = r#"{"error":{"code":"ServiceUnavailable","message":"The service is temporarily unable to process your request. Please try again later."}}"#;
const ACCESS_DENIED: &str = r#"{"error":{"code":"401","message":"Access denied due to invalid subscription key or wrong API endpoint. Make sure to provide a valid key for an active subscription and use a correct regional API endpoint for your resource."}}"#;
const NO_DEPLOYMENT: &str = r#"{"error":{"code":"DeploymentNotFound","message":"The API deployment for this resource does not exist. If you created the deployment within the last 5 minutes, please wait a moment and try again."}}"#;
const NO_RESOURCE: &str = r#"{"error":{"code":"404","message":"Resource not found"}}"#;
const NOT_SUPPORTED: &str = r#"{"error":{"code":"OperationNotSupported","message":"The chatCompletion operation does not work with the specified model, text-embedding-3-small. Please choose different model and try again. You can learn more about which models can be used with each operation here: https://go.microsoft.com/fwlink/?linkid=2197993."}}"#;
const BAD_VERSION: &str =
    r#"{"error":{"code":"BadRequest","message":"API version not supported"}}"#;
const BAD_PARAM: &str = r#"{"error":{"message":"Invalid value for 'temperature': expected a number between 0 and 2.","type":"invalid_request_error","param":"temperature","code":"invalid_value","status":400}}"#;
const UNKNOWN: &str =
    r#"{"error":{"code":"SomethingNew","message":"An error nobody has seen yet."}}"#;

#[test]
fn azure_errors_by_class() {
    let cases: &[(&str, u16, &[(&str, &str)], &str, FailureClass, Action)] = &[
        (
            "429 token rate limit",
            429,
            &[("retry-after", "6"), ("retry-after-ms", "5800")],
            RATE_LIMIT,
            FailureClass::RateLimited,
            RETRY_FALLBACK,
        ),
        (
            "prompt filtered",
            400,
            &[],
            PROMPT_FILTERED,
            FailureClass::ContentFiltered,
            FALLBACK_ONLY,
        ),
        (
            "jailbreak shield",
            400,
            &[],
            JAILBREAK,
            FailureClass::ContentFiltered,
            FALLBACK_ONLY,
        ),
        (
            "context overflow",
            400,
            &[],
            CONTEXT,
            FailureClass::ContextOverflow,
            FALLBACK_ONLY,
        ),
        (
            "408 timeout",
            408,
            &[],
            TIMEOUT,
            FailureClass::Timeout,
            RETRY_FALLBACK,
        ),
        (
            "500",
            500,
            &[],
            SERVER,
            FailureClass::ServerError,
            RETRY_FALLBACK,
        ),
        (
            "503",
            503,
            &[],
            UNAVAILABLE,
            FailureClass::Overloaded,
            RETRY_FALLBACK,
        ),
        (
            "401 key",
            401,
            &[],
            ACCESS_DENIED,
            FailureClass::Auth,
            FALLBACK_ONLY,
        ),
        (
            "404 deployment",
            404,
            &[],
            NO_DEPLOYMENT,
            FailureClass::InvalidRequest,
            FALLBACK_ONLY,
        ),
        (
            "404 no api-version",
            404,
            &[],
            NO_RESOURCE,
            FailureClass::InvalidRequest,
            FALLBACK_ONLY,
        ),
        (
            "operation not supported by the deployment",
            400,
            &[],
            NOT_SUPPORTED,
            FailureClass::InvalidRequest,
            FALLBACK_ONLY,
        ),
        (
            "unknown api-version",
            400,
            &[],
            BAD_VERSION,
            FailureClass::InvalidRequest,
            NEITHER,
        ),
        (
            "bad parameter",
            400,
            &[],
            BAD_PARAM,
            FailureClass::InvalidRequest,
            NEITHER,
        ),
        (
            "unknown 4xx stays unretried",
            400,
            &[],
            UNKNOWN,
            FailureClass::InvalidRequest,
            NEITHER,
        ),
        (
            "non-JSON 502",
            502,
            &[],
            "<html>Bad Gateway</html>",
            FailureClass::ServerError,
            RETRY_FALLBACK,
        ),
    ];
    for (name, status, hs, body, class, action) in cases {
        let c = classify_azure_response(*status, &headers(hs), body.as_bytes(), now())
            .unwrap_or_else(|| panic!("{name}: not classified"));
        assert_eq!(c.class, *class, "{name}");
        assert_eq!(c.action, *action, "{name}");
        assert_eq!(c.status, Some(*status), "{name}");
    }
    assert!(classify_azure_response(200, &HeaderMap::new(), b"{}", now()).is_none());
}

#[test]
fn rate_limit_hints_prefer_retry_after_ms() {
    let hs = headers(&[
        ("retry-after", "6"),
        ("retry-after-ms", "5800"),
        ("x-ratelimit-remaining-requests", "0"),
        ("x-ratelimit-remaining-tokens", "120"),
    ]);
    let c = classify_azure_response(429, &hs, RATE_LIMIT.as_bytes(), now()).unwrap();
    let hint = c.hint.unwrap();
    assert_eq!(hint.after, Duration::from_millis(5800));
    assert_eq!(hint.source, HintSource::RetryAfterMs);
    assert_eq!(c.provider_code.as_deref(), Some("429"));
    // Seconds alone still hint.
    let hs = headers(&[("retry-after", "6")]);
    let c = classify_azure_response(429, &hs, RATE_LIMIT.as_bytes(), now()).unwrap();
    assert_eq!(c.hint.unwrap().after, Duration::from_secs(6));
    // The remaining counts are read as limit state.
    let rl = rate_limit_headers(
        &headers(&[
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-remaining-tokens", "120"),
        ]),
        now(),
    );
    assert_eq!(rl.remaining_requests, Some(0));
    assert_eq!(rl.remaining_tokens, Some(120));
}

#[test]
fn content_filter_names_the_categories_that_fired() {
    let c =
        classify_azure_response(400, &HeaderMap::new(), PROMPT_FILTERED.as_bytes(), now()).unwrap();
    assert_eq!(c.provider_code.as_deref(), Some("content_filter"));
    let message = c.message.unwrap();
    assert!(
        message.ends_with("[filtered: hate (high), violence (medium)]"),
        "{message}"
    );
    let c = classify_azure_response(400, &HeaderMap::new(), JAILBREAK.as_bytes(), now()).unwrap();
    assert!(c.message.unwrap().ends_with("[filtered: jailbreak]"));
}

#[test]
fn a_completion_the_filter_stopped_is_content_filtered() {
    // A 200 with `finish_reason: "content_filter"`, as for OpenAI.
    let c = classify_completion(Some("content_filter"), true, false, false).unwrap();
    assert_eq!(c.class, FailureClass::ContentFiltered);
    assert_eq!(c.action, FALLBACK_ONLY);
}
