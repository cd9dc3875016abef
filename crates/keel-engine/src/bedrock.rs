//! The Bedrock transport: the Converse body a deployment is sent and the
//! SigV4 signature every attempt carries.
//!
//! **Why sign per attempt.** A SigV4 signature covers the time (AWS
//! refuses one more than five minutes off), the path and a hash of the
//! body, so a retry, a continuation or a resume later in a long request
//! is signed anew rather than sent with its first attempt's headers. The
//! signing itself is `aws-sigv4`'s (canonical request, double-encoded
//! path, scope, HMAC chain): the one part of the protocol that must be
//! exactly AWS's.

use std::time::SystemTime;

use aws_sigv4::http_request::{sign, SignableBody, SignableRequest, SigningSettings};
use aws_sigv4::sign::v4;
use http::{HeaderMap, HeaderName, HeaderValue};
use keel_wire::anthropic::MessagesRequest;
use keel_wire::openai::ChatRequest;
use keel_wire::translate;

use crate::config::{BedrockAuth, Deployment};

/// The signing name of Bedrock Runtime.
const SERVICE: &str = "bedrock";

/// The Converse body for `dep`: the client's Messages request (or the
/// canonical request translated into one, `default_max` tokens unless it
/// names a limit), its limit clamped to the
/// deployment's, structured output as a forced tool (the technique Keel
/// uses on Anthropic; Converse has no JSON-schema output of its own that
/// every model takes), then turned into Converse.
pub(crate) fn build_body(
    dep: &Deployment,
    request: &ChatRequest,
    anthropic_original: Option<&MessagesRequest>,
    default_max: u32,
) -> Result<Vec<u8>, String> {
    let mut req = match anthropic_original {
        Some(orig) => orig.clone(),
        None => translate::openai_to_anthropic_request(request, default_max)
            .map_err(|e| e.to_string())?,
    };
    req.max_tokens = req.max_tokens.min(dep.max_output_tokens);
    if let Some(format) = &request.response_format {
        if let Some(tool) = translate::json_schema_tool(format) {
            req.tool_choice = Some(translate::force_tool_choice(&tool.name));
            req.tools.get_or_insert_with(Vec::new).push(tool);
        }
    }
    let body = keel_wire::bedrock::converse_request(&req)
        .map_err(|what| format!("deployment {} (bedrock) cannot take {what}", dep.name))?;
    serde_json::to_vec(&body).map_err(|e| e.to_string())
}

/// The address and signed headers of an attempt on `dep`: Converse or
/// ConverseStream, signed at `now` over `body`: `headers` (the
/// deployment's own) with the signature added. An error says why no
/// request can be made (no secret in it).
pub(crate) fn signed_parts(
    dep: &Deployment,
    auth: &BedrockAuth,
    mut headers: HeaderMap,
    body: &[u8],
    stream: bool,
    now: SystemTime,
) -> Result<(http::Uri, HeaderMap), String> {
    let invalid = || format!("deployment {}: base_url is not a valid URL", dep.name);
    let uri = match (stream, &dep.endpoint) {
        (false, Some(uri)) => uri.clone(),
        (false, None) => return Err(invalid()),
        (true, _) => http::Uri::try_from(format!(
            "{}{}",
            dep.base_url,
            keel_wire::bedrock::converse_path(&dep.model, true)
        ))
        .map_err(|_| invalid())?,
    };
    // Signed: the content type and, on plain HTTP, the `Host` Keel sends
    // (over TLS the signer takes the URI's authority, as the client does).
    let signed: Vec<(&str, &str)> = [http::header::CONTENT_TYPE, http::header::HOST]
        .iter()
        .filter_map(|name| {
            let v = headers.get(name)?.to_str().ok()?;
            Some((name.as_str(), v))
        })
        .collect();
    let added = sign_request(auth, SERVICE, "POST", &uri.to_string(), &signed, body, now)
        .map_err(|e| format!("deployment {}: cannot sign the request: {e}", dep.name))?;
    for (name, value) in added {
        let name = HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
        let mut value = HeaderValue::from_str(&value).map_err(|_| invalid())?;
        value.set_sensitive(true);
        headers.insert(name, value);
    }
    Ok((uri, headers))
}

/// The headers SigV4 adds to a request (`authorization`, `x-amz-date`,
/// `x-amz-security-token`) for `service` in `auth`'s region at `time`.
/// Errors carry no secret.
pub(crate) fn sign_request(
    auth: &BedrockAuth,
    service: &str,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
    body: &[u8],
    time: SystemTime,
) -> Result<Vec<(String, String)>, String> {
    let identity = aws_credential_identity(auth);
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(&auth.region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let request = SignableRequest::new(
        method,
        uri,
        headers.iter().copied(),
        SignableBody::Bytes(body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    Ok(instructions
        .headers()
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect())
}

fn aws_credential_identity(
    auth: &BedrockAuth,
) -> aws_smithy_runtime_api::client::identity::Identity {
    aws_credential_types::Credentials::new(
        auth.access_key_id.expose(),
        auth.secret_access_key.expose(),
        auth.session_token.as_ref().map(|t| t.expose().to_owned()),
        None,
        "keel-config",
    )
    .into()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use crate::config::Secret;

    fn example() -> BedrockAuth {
        BedrockAuth {
            region: "us-east-1".into(),
            access_key_id: Secret::new("AKIDEXAMPLE"),
            secret_access_key: Secret::new("wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"),
            session_token: None,
        }
    }

    /// 2015-08-30T12:36:00Z, the time of AWS's SigV4 test suite.
    fn suite_time() -> SystemTime {
        SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_440_938_160)
    }

    fn header<'a>(added: &'a [(String, String)], name: &str) -> Option<&'a str> {
        added
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// AWS's published SigV4 test suite, `get-vanilla` and
    /// `post-x-www-form-urlencoded`: the Authorization header Keel signs
    /// is the documented one, character for character.
    #[test]
    fn signatures_match_the_documented_test_vectors() {
        let auth = example();
        let added = sign_request(
            &auth,
            "service",
            "GET",
            "https://example.amazonaws.com/",
            &[("host", "example.amazonaws.com")],
            b"",
            suite_time(),
        )
        .unwrap();
        assert_eq!(
            header(&added, "authorization"),
            Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=host;x-amz-date, Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31")
        );
        assert_eq!(header(&added, "x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(header(&added, "x-amz-security-token"), None);

        let added = sign_request(
            &auth,
            "service",
            "POST",
            "https://example.amazonaws.com/",
            &[
                ("content-type", "application/x-www-form-urlencoded"),
                ("host", "example.amazonaws.com"),
            ],
            b"Param1=value1",
            suite_time(),
        )
        .unwrap();
        assert_eq!(
            header(&added, "authorization"),
            Some("AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=ff11897932ad3f4e8b18135d722051e5ac45fc38421b1da7b9d196a0fe09473a")
        );
    }

    /// A session token is sent (and signed); a changed body or time changes
    /// the signature.
    #[test]
    fn session_tokens_are_sent_and_the_body_and_time_are_signed() {
        let mut auth = example();
        auth.session_token = Some(Secret::new("FQoGZXIvYXdzEXAMPLE"));
        let sign_at = |body: &[u8], t: SystemTime| {
            sign_request(
                &auth,
                "bedrock",
                "POST",
                "https://bedrock-runtime.us-east-1.amazonaws.com/model/anthropic.claude-3-5-sonnet-20240620-v1%3A0/converse",
                &[("content-type", "application/json")],
                body,
                t,
            )
            .unwrap()
        };
        let a = sign_at(b"{}", suite_time());
        assert_eq!(
            header(&a, "x-amz-security-token"),
            Some("FQoGZXIvYXdzEXAMPLE")
        );
        let auth_a = header(&a, "authorization").unwrap();
        assert!(
            auth_a.contains("/20150830/us-east-1/bedrock/aws4_request")
                && auth_a
                    .contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"),
            "{auth_a}"
        );
        let b = sign_at(b"{ }", suite_time());
        let c = sign_at(b"{}", suite_time() + std::time::Duration::from_secs(1));
        assert_ne!(header(&b, "authorization"), Some(auth_a));
        assert_ne!(header(&c, "authorization"), Some(auth_a));
        // The secret is never printed.
        assert!(!format!("{auth:?}").contains("EXAMPLEKEY"));
    }
}
