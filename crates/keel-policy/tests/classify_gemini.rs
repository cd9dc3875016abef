//! Google's error table for Gemini deployments: one case per row, bodies
//! written from the Gemini API's documented errors (`google.rpc.Status`
//! with `details`), plus what a body that is not Google's falls back to.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, SystemTime};

use http::HeaderMap;
use keel_policy::{classify_gemini_response, FailureClass, HintSource};

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_718_000_000)
}

fn google(code: u16, status: &str, message: &str, details: &str) -> String {
    format!(
        r#"{{"error":{{"code":{code},"message":{},"status":"{status}","details":[{details}]}}}}"#,
        serde_json::Value::String(message.to_owned())
    )
}

const RETRY_INFO_12S: &str =
    r#"{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"12s"}"#;
const PER_MINUTE: &str = r#"{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerMinutePerProjectPerModel-FreeTier","quotaDimensions":{"location":"global","model":"gemini-2.5-flash"},"quotaValue":"10"}]}"#;
const PER_DAY: &str = r#"{"@type":"type.googleapis.com/google.rpc.QuotaFailure","violations":[{"quotaMetric":"generativelanguage.googleapis.com/generate_content_free_tier_requests","quotaId":"GenerateRequestsPerDayPerProjectPerModel-FreeTier","quotaValue":"250"}]}"#;
const KEY_INVALID: &str = r#"{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com","metadata":{"service":"generativelanguage.googleapis.com"}}"#;
const QUOTA_MESSAGE: &str = "You exceeded your current quota, please check your plan and billing details. For more information on this error, head to: https://ai.google.dev/gemini-api/docs/rate-limits.";

/// (HTTP status, body, class, retry same, fall back, retry hint)
#[test]
fn google_error_table() {
    let rows: Vec<(u16, String, FailureClass, bool, bool, Option<Duration>)> = vec![
        // A per-minute quota is a rate limit, its wait in RetryInfo (the
        // message says "quota" and "billing" all the same).
        (
            429,
            google(429, "RESOURCE_EXHAUSTED", QUOTA_MESSAGE, &format!("{PER_MINUTE},{RETRY_INFO_12S}")),
            FailureClass::RateLimited,
            true,
            true,
            Some(Duration::from_secs(12)),
        ),
        (
            429,
            google(429, "RESOURCE_EXHAUSTED", "Resource has been exhausted (e.g. check quota).", ""),
            FailureClass::RateLimited,
            true,
            true,
            None,
        ),
        // A per-day quota is not back within a request.
        (
            429,
            google(429, "RESOURCE_EXHAUSTED", QUOTA_MESSAGE, &format!("{PER_DAY},{RETRY_INFO_12S}")),
            FailureClass::QuotaExhausted,
            false,
            true,
            Some(Duration::from_secs(12)),
        ),
        (
            503,
            google(503, "UNAVAILABLE", "The model is overloaded. Please try again later.", ""),
            FailureClass::Overloaded,
            true,
            true,
            None,
        ),
        (
            504,
            google(504, "DEADLINE_EXCEEDED", "The request timed out. Please try again.", ""),
            FailureClass::Timeout,
            true,
            true,
            None,
        ),
        (
            500,
            google(500, "INTERNAL", "An internal error has occurred. Please retry or report in https://developers.generativeai.google/guide/troubleshooting", ""),
            FailureClass::ServerError,
            true,
            true,
            None,
        ),
        (
            400,
            google(400, "INVALID_ARGUMENT", "The input token count (1048591) exceeds the maximum number of tokens allowed (1048576).", ""),
            FailureClass::ContextOverflow,
            false,
            true,
            None,
        ),
        (
            400,
            google(400, "INVALID_ARGUMENT", "API key not valid. Please pass a valid API key.", KEY_INVALID),
            FailureClass::Auth,
            false,
            true,
            None,
        ),
        (
            400,
            google(400, "INVALID_ARGUMENT", "* GenerateContentRequest.generation_config.temperature: must be between 0 and 2, got 7\n", ""),
            FailureClass::InvalidRequest,
            false,
            false,
            None,
        ),
        (
            403,
            google(403, "PERMISSION_DENIED", "Method doesn't allow unregistered callers (callers without established identity). Please use API Key or other form of API consumer identity to call this API.", ""),
            FailureClass::Auth,
            false,
            true,
            None,
        ),
        (
            401,
            google(401, "UNAUTHENTICATED", "Request had invalid authentication credentials.", ""),
            FailureClass::Auth,
            false,
            true,
            None,
        ),
        (
            404,
            google(404, "NOT_FOUND", "models/gemini-9 is not found for API version v1beta, or is not supported for generateContent.", ""),
            FailureClass::InvalidRequest,
            false,
            true,
            None,
        ),
        (
            400,
            google(400, "FAILED_PRECONDITION", "User location is not supported for the API use.", ""),
            FailureClass::InvalidRequest,
            false,
            true,
            None,
        ),
        // An unknown status name keeps what its HTTP status says: a 501
        // is not retried on the same deployment.
        (
            501,
            google(501, "UNIMPLEMENTED", "Method not found.", ""),
            FailureClass::ServerError,
            false,
            true,
            None,
        ),
        // Not Google's shape (a proxy's page): the generic table.
        (
            502,
            "<html><body>Bad Gateway</body></html>".to_owned(),
            FailureClass::ServerError,
            true,
            true,
            None,
        ),
    ];
    for (status, body, class, retry, fall_back, hint) in rows {
        let c = classify_gemini_response(status, &HeaderMap::new(), body.as_bytes(), now())
            .unwrap_or_else(|| panic!("{status} {body}: not classified"));
        let ctx = format!("{status} {body}");
        assert_eq!(c.class, class, "{ctx}");
        assert_eq!(
            (c.action.retry_same, c.action.fall_back),
            (retry, fall_back),
            "{ctx}"
        );
        assert_eq!(c.hint.map(|h| h.after), hint, "{ctx}");
        if let Some(h) = c.hint {
            assert_eq!(h.source, HintSource::RetryInfo, "{ctx}");
        }
        assert_eq!(c.status, Some(status), "{ctx}");
        assert!(c.message.is_some(), "{ctx}");
    }
    assert!(classify_gemini_response(200, &HeaderMap::new(), b"{}", now()).is_none());
}

/// The status name is the provider code; the message is Google's.
#[test]
fn the_status_name_is_the_provider_code() {
    let body = google(
        503,
        "UNAVAILABLE",
        "The model is overloaded. Please try again later.",
        "",
    );
    let c = classify_gemini_response(503, &HeaderMap::new(), body.as_bytes(), now()).unwrap();
    assert_eq!(c.provider_code.as_deref(), Some("UNAVAILABLE"));
    assert_eq!(
        c.message.as_deref(),
        Some("The model is overloaded. Please try again later.")
    );
}

/// RetryInfo's delay forms: seconds with a fraction, the object form, and
/// an absurd one capped at a day; a `Retry-After` header counts when the
/// body has no RetryInfo.
#[test]
fn retry_info_delays() {
    let with = |delay: &str| {
        let details = format!(
            r#"{{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":{delay}}}"#
        );
        let body = google(429, "RESOURCE_EXHAUSTED", "slow down", &details);
        classify_gemini_response(429, &HeaderMap::new(), body.as_bytes(), now())
            .unwrap()
            .hint
            .map(|h| h.after)
    };
    assert_eq!(with(r#""0.250s""#), Some(Duration::from_millis(250)));
    assert_eq!(
        with(r#"{"seconds":"3","nanos":500000000}"#),
        Some(Duration::from_millis(3500))
    );
    assert_eq!(
        with(r#""999999999s""#),
        Some(Duration::from_secs(24 * 3600))
    );
    assert_eq!(with(r#""soon""#), None);
    let mut headers = HeaderMap::new();
    headers.insert("retry-after", "7".parse().unwrap());
    let body = google(429, "RESOURCE_EXHAUSTED", "slow down", "");
    let c = classify_gemini_response(429, &headers, body.as_bytes(), now()).unwrap();
    assert_eq!(c.hint.unwrap().after, Duration::from_secs(7));
}
