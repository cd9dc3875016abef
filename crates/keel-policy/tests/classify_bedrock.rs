//! Bedrock's error table: every exception of the Converse reference, by
//! its `x-amzn-ErrorType` header (with or without AWS's namespace suffix)
//! and by a stream's exception event.
#![allow(clippy::unwrap_used)]

use std::time::SystemTime;

use http::HeaderMap;
use keel_policy::{bedrock_error_type, classify_bedrock, classify_response, FailureClass};

fn answer(status: u16, error_type: &str, message: &str) -> keel_policy::Classification {
    let mut headers = HeaderMap::new();
    headers.insert("x-amzn-errortype", error_type.parse().unwrap());
    let body = serde_json::json!({ "message": message }).to_string();
    classify_response(status, &headers, body.as_bytes(), SystemTime::now()).unwrap()
}

#[test]
fn every_documented_exception_has_its_class() {
    use FailureClass::*;
    // (status, exception, message, class, retry same, fall back)
    let table = [
        (429, "ThrottlingException", "Too many requests, please wait before trying again.", RateLimited, true, true),
        (400, "ServiceQuotaExceededException", "Your request exceeds the service quota for your account.", QuotaExhausted, false, true),
        (503, "ServiceUnavailableException", "Bedrock is unable to process your request.", Overloaded, true, true),
        (429, "ModelNotReadyException", "Model is not ready for inference. Wait and try your request again.", Overloaded, true, true),
        (500, "InternalServerException", "The server encountered an internal error.", ServerError, true, true),
        (424, "ModelErrorException", "The request failed due to an error while processing the model.", ServerError, true, true),
        (408, "ModelTimeoutException", "Model has timed out in processing the request.", Timeout, true, true),
        (400, "ValidationException", "Input is too long for requested model.", ContextOverflow, false, true),
        (400, "ValidationException", "The model returned the following errors: prompt is too long: 210000 tokens > 200000 maximum", ContextOverflow, false, true),
        (400, "ValidationException", "400 Bad Request: Too many input tokens. Max input tokens: 8192, request input token count: 9000", ContextOverflow, false, true),
        (400, "ValidationException", "Malformed input request: #: extraneous key [foo] is not permitted", InvalidRequest, false, false),
        (403, "AccessDeniedException", "You don't have access to the model with the specified model ID.", Auth, false, true),
        (403, "UnrecognizedClientException", "The security token included in the request is invalid.", Auth, false, true),
        (403, "InvalidSignatureException", "The request signature we calculated does not match the signature you provided.", Auth, false, true),
        (403, "ExpiredTokenException", "The security token included in the request is expired", Auth, false, true),
        (404, "ResourceNotFoundException", "Model not found.", InvalidRequest, false, true),
        // Unknown exceptions are not retried; a server-side one may fall back.
        (400, "SomethingNewException", "?", InvalidRequest, false, false),
        (500, "SomethingNewException", "?", ServerError, false, true),
    ];
    for (status, name, message, class, retry, fall_back) in table {
        for header in [
            name.to_owned(),
            format!("{name}:http://internal.amazon.com/coral/com.amazon.bedrock/"),
        ] {
            let c = answer(status, &header, message);
            assert_eq!(c.class, class, "{header} {message}");
            assert_eq!(
                (c.action.retry_same, c.action.fall_back),
                (retry, fall_back),
                "{header}"
            );
            assert_eq!(c.status, Some(status));
            assert_eq!(c.provider_code.as_deref(), Some(name));
            assert_eq!(c.message.as_deref(), Some(message));
        }
    }
}

/// A stream's exception events name the exception in lower camel case.
#[test]
fn stream_exception_events_are_classified_alike() {
    use FailureClass::*;
    for (name, class) in [
        ("throttlingException", RateLimited),
        ("serviceUnavailableException", Overloaded),
        ("internalServerException", ServerError),
        ("modelStreamErrorException", ServerError),
        ("validationException", InvalidRequest),
    ] {
        let c = classify_bedrock(None, name, "x");
        assert_eq!(c.class, class, "{name}");
        assert_eq!(c.status, None);
    }
    assert_eq!(
        classify_bedrock(
            None,
            "validationException",
            "Input is too long for requested model."
        )
        .class,
        ContextOverflow
    );
    // Unknown in a stream: a failure of the upstream, not retried there.
    let c = classify_bedrock(None, "newException", "");
    assert_eq!(
        (c.class, c.action.retry_same, c.action.fall_back),
        (ServerError, false, true)
    );
}

/// Answers without the header are not Bedrock's: the generic table reads them.
#[test]
fn only_answers_naming_an_exception_are_read_by_this_table() {
    assert_eq!(bedrock_error_type(&HeaderMap::new()), None);
    let c = classify_response(
        400,
        &HeaderMap::new(),
        br#"{"message":"Input is too long for requested model."}"#,
        SystemTime::now(),
    )
    .unwrap();
    assert_eq!(c.provider_code, None);
    // A retry hint on a throttled answer is still honoured.
    let mut headers = HeaderMap::new();
    headers.insert("x-amzn-errortype", "ThrottlingException".parse().unwrap());
    headers.insert("retry-after", "3".parse().unwrap());
    let c = classify_response(429, &headers, b"{}", SystemTime::now()).unwrap();
    assert_eq!(c.class, FailureClass::RateLimited);
    assert!(c.hint.is_some());
    assert_eq!(c.message, None);
}
