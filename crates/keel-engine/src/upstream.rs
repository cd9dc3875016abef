//! The transport to one deployment: builds the provider's request from the
//! canonical (OpenAI-shaped) request, sends it, and turns whatever comes back
//! into either a canonical response or a [`Classification`]. Classification
//! itself lives in `keel-policy`; this file only gathers its inputs.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use keel_policy::{
    classify_response, classify_transport, Classification, RateLimitHeaders, TransportError,
};
use keel_wire::anthropic::{MessagesRequest, MessagesResponse};
use keel_wire::openai::{ChatRequest, ChatResponse};
use keel_wire::translate;

use std::borrow::Cow;

use crate::call::{ChatCall, ClientApi, FullAnswer, RawAnswer};
use crate::config::{Deployment, ProviderKind};
use crate::transport::{self, HttpClient};
use keel_wire::answer_view::AnswerFacts;
use keel_wire::splice::Layout;

/// Largest upstream body Keel reads (a hostile upstream cannot exhaust memory).
pub const MAX_UPSTREAM_BODY: usize = 32 * 1024 * 1024;

/// Default `max_tokens` for Anthropic when the client gave none.
pub const DEFAULT_ANTHROPIC_MAX_TOKENS: u32 = 4096;

/// What a deployment is asked, as far as its body goes. The client's bytes
/// can be reached only through [`Ask::Client`], which holds the call itself:
/// a call's bytes always say what its request says (every edit drops them,
/// see [`ChatCall::follow_up`]), so no follow-up can send the client's
/// original request in place of its own.
#[derive(Clone, Copy)]
pub(crate) enum Ask<'a> {
    /// The client's own request, unedited: its bytes pass through where
    /// nothing but the model would change.
    Client(&'a ChatCall),
    /// The client's request adapted for this deployment (structured
    /// output): built from `request`, over the client's Anthropic request
    /// when there is one.
    Adapted {
        call: &'a ChatCall,
        request: &'a ChatRequest,
    },
    /// A request Keel wrote (continuation, resume, repair, raised limit):
    /// built from it alone.
    Edited(&'a ChatRequest),
}

impl<'a> Ask<'a> {
    /// What `dep` is asked: the call's own request while `edited` is `None`,
    /// adapted for `dep`'s structured output support.
    pub(crate) fn of(
        call: &'a ChatCall,
        edited: Option<&'a ChatRequest>,
        adapted: &'a Cow<'a, ChatRequest>,
    ) -> Ask<'a> {
        match (edited, adapted) {
            (Some(_), adapted) => Ask::Edited(adapted),
            (None, Cow::Borrowed(_)) => Ask::Client(call),
            (None, Cow::Owned(request)) => Ask::Adapted { call, request },
        }
    }

    /// `None` for a client of `api` (whose bytes are not a chat body).
    fn filter_api(self, api: ClientApi) -> Option<Ask<'a>> {
        match self {
            Ask::Client(call) if call.api == api => None,
            other => Some(other),
        }
    }

    /// The canonical request this body says.
    pub(crate) fn request(&self) -> &'a ChatRequest {
        match *self {
            Ask::Client(call) => call.request(),
            Ask::Adapted { request, .. } | Ask::Edited(request) => request,
        }
    }
}

/// The output limit a deployment of `kind` (whose maximum is `dep_max`) is
/// sent when a client of `api` asks for `asked`: the client's own, except
/// where Keel clamps it to the deployment's maximum. Anthropic deployments
/// require a limit (Keel's default when none was asked) and get it clamped;
/// a translated Anthropic request is clamped too (an Anthropic client's
/// required `max_tokens` is a ceiling: SDKs send the model's largest). An
/// OpenAI client's own limit goes to an OpenAI deployment as it is.
pub(crate) fn output_limit(
    kind: ProviderKind,
    api: ClientApi,
    asked: Option<u32>,
    dep_max: u32,
) -> Option<u32> {
    match (kind, api) {
        (ProviderKind::Anthropic | ProviderKind::Bedrock, _) => {
            Some(asked.unwrap_or(DEFAULT_ANTHROPIC_MAX_TOKENS).min(dep_max))
        }
        (ProviderKind::OpenAi | ProviderKind::Azure, ClientApi::Anthropic)
        | (ProviderKind::Gemini, _) => asked.map(|m| m.min(dep_max)),
        (
            ProviderKind::OpenAi | ProviderKind::Azure,
            ClientApi::OpenAi | ClientApi::Responses | ClientApi::Embeddings,
        ) => asked,
    }
}

/// The body to send upstream, in the deployment's wire format, for a
/// client of `api`.
pub(crate) fn build_body(
    dep: &Deployment,
    ask: Ask<'_>,
    api: ClientApi,
    stream: bool,
) -> Result<Vec<u8>, String> {
    let request = ask.request();
    let anthropic_original = match ask {
        Ask::Client(call) | Ask::Adapted { call, .. } => call.anthropic_original(),
        Ask::Edited(_) => None,
    };
    if let Some(body) = responses_body(dep, ask) {
        return body;
    }
    if let Some(Ask::Client(call)) = ask.filter_api(ClientApi::Responses) {
        if let Some(body) = call.client_body().and_then(|b| {
            pass_through(
                dep,
                request,
                anthropic_original,
                b.bytes(),
                b.layout(),
                stream,
            )
        }) {
            return Ok(body);
        }
    }
    match dep.kind {
        ProviderKind::OpenAi | ProviderKind::Azure => {
            let mut req = request.clone();
            req.model = dep.model.clone();
            // A Responses client's `reasoning`, only where it is taken.
            if api == ClientApi::Responses && !dep.responses.reasoning {
                req.extra.remove("reasoning_effort");
            }
            if api == ClientApi::Anthropic {
                let limit = output_limit(
                    dep.kind,
                    api,
                    req.effective_max_tokens(),
                    dep.max_output_tokens,
                );
                match (&mut req.max_completion_tokens, &mut req.max_tokens) {
                    (Some(m), _) | (None, Some(m)) => *m = limit.unwrap_or(*m),
                    (None, None) => {}
                }
            }
            req.stream = if stream { Some(true) } else { None };
            if stream {
                req.stream_options = Some(keel_wire::openai::StreamOptions {
                    include_usage: Some(true),
                    ..Default::default()
                });
            } else {
                req.stream_options = None;
            }
            serde_json::to_vec(&req).map_err(|e| e.to_string())
        }
        ProviderKind::Anthropic => {
            let mut req = match anthropic_original {
                Some(orig) => orig.clone(),
                None => {
                    translate::openai_to_anthropic_request(request, DEFAULT_ANTHROPIC_MAX_TOKENS)
                        .map_err(|e| e.to_string())?
                }
            };
            req.model = dep.model.clone();
            req.max_tokens = req.max_tokens.min(dep.max_output_tokens);
            // Structured output on Anthropic: the client's own native
            // format when it is an Anthropic client's, else the tool-use
            // technique.
            if let Some(format) = request
                .response_format
                .as_ref()
                .filter(|_| !native_format(anthropic_original))
            {
                if let Some(tool) = translate::json_schema_tool(format) {
                    req.tool_choice = Some(translate::force_tool_choice(&tool.name));
                    req.tools.get_or_insert_with(Vec::new).push(tool);
                }
            }
            req.stream = if stream { Some(true) } else { None };
            serde_json::to_vec(&req).map_err(|e| e.to_string())
        }
        ProviderKind::Gemini => {
            let asked = request.effective_max_tokens();
            let limit = output_limit(dep.kind, api, asked, dep.max_output_tokens);
            crate::gemini::body(request, limit)
        }
        ProviderKind::Bedrock => crate::bedrock::build_body(
            dep,
            request,
            anthropic_original,
            DEFAULT_ANTHROPIC_MAX_TOKENS,
        ),
    }
}

/// The client's Responses body with only the model replaced, for a native
/// Responses deployment asked the client's own request (`None` otherwise:
/// the deployment gets the chat translation).
fn responses_body(dep: &Deployment, ask: Ask<'_>) -> Option<Result<Vec<u8>, String>> {
    if !native_responses(dep, ask) {
        return None;
    }
    let Ask::Client(call) = ask else { return None };
    let raw = call.client_body()?.bytes();
    let obj = keel_wire::splice::Object::parse(raw)?;
    Some(
        obj.rewrite("model", &dep.model, None)
            .ok_or_else(|| "the Responses request has no model to replace".to_string()),
    )
}

/// Whether `dep` is sent the Responses request itself: a native Responses
/// deployment asked a Responses client's unedited request. A request Keel
/// wrote (continuation, resume, repair) goes to it translated, like to any
/// chat deployment.
pub(crate) fn native_responses(dep: &Deployment, ask: Ask<'_>) -> bool {
    match ask {
        Ask::Client(call) => {
            call.api == ClientApi::Responses
                && call.client_body().is_some()
                && dep.responses.native
                && dep.responses.endpoint.is_some()
        }
        Ask::Adapted { .. } | Ask::Edited(_) => false,
    }
}

/// The client's own bytes with only the model replaced, when the client
/// speaks the deployment's API and nothing else would change: no parse,
/// clone or serialisation of the request on the common path, and every
/// field reaches the provider exactly as the client sent it. `None` sends
/// the request down the typed path of [`build_body`].
fn pass_through(
    dep: &Deployment,
    request: &ChatRequest,
    anthropic_original: Option<&MessagesRequest>,
    raw: &[u8],
    layout: Option<&Layout>,
    stream: bool,
) -> Option<Vec<u8>> {
    // One scan of the client's body serves every look-up and the edit (the
    // server's reader may have made it already).
    let obj = match layout.and_then(|l| l.object(raw)) {
        Some(obj) => obj,
        None => keel_wire::splice::Object::parse(raw)?,
    };
    let stream_raw = obj.raw("stream");
    let streams = stream_raw == Some(b"true".as_slice());
    let plain = stream_raw.is_none() || stream_raw == Some(b"false".as_slice());
    // A plain request asked as a stream (`stream_upstream`): the client's
    // bytes and `"stream": true`, nothing else changed.
    let asked_as_stream = stream && plain;
    match (dep.kind, anthropic_original) {
        (ProviderKind::OpenAi | ProviderKind::Azure, None) => {
            // The client's own stream options: the typed path merges them.
            if (streams != stream && !asked_as_stream) || obj.has("stream_options") {
                return None;
            }
            // Keel needs the usage chunk of a stream (cost, limits).
            let usage = ("stream_options", r#"{"include_usage":true}"#);
            match (stream, asked_as_stream) {
                (true, true) => obj.rewrite_setting("model", &dep.model, &[STREAM, usage]),
                (true, false) => obj.rewrite("model", &dep.model, Some(usage)),
                (false, _) => obj.rewrite("model", &dep.model, None),
            }
        }
        (ProviderKind::Anthropic, Some(orig)) => {
            if (stream && !streams && !asked_as_stream) || (!stream && !plain) {
                return None;
            }
            if orig.max_tokens > dep.max_output_tokens
                || (request.response_format.is_some() && !native_format(Some(orig)))
            {
                return None;
            }
            match asked_as_stream {
                true => obj.rewrite_setting("model", &dep.model, &[STREAM]),
                false => obj.rewrite("model", &dep.model, None),
            }
        }
        _ => None,
    }
}

/// The member that makes a plain request a stream request.
const STREAM: (&str, &str) = ("stream", "true");

/// Whether an Anthropic client's request asks for structured output in
/// Anthropic's own form (sent as it is to Anthropic deployments).
fn native_format(original: Option<&MessagesRequest>) -> bool {
    original.is_some_and(|o| translate::native_json_schema(o).is_some())
}

/// The name of the JSON-schema tool used on Anthropic deployments, if any.
pub(crate) fn schema_tool_name<'a>(dep: &Deployment, ask: Ask<'a>) -> Option<&'a str> {
    let original = match ask {
        Ask::Client(call) | Ask::Adapted { call, .. } => call.anthropic_original(),
        Ask::Edited(_) => None,
    };
    if native_format(original) && dep.kind != ProviderKind::Bedrock {
        return None;
    }
    match (&ask.request().response_format, dep.kind) {
        (
            Some(keel_wire::openai::ResponseFormat::JsonSchema { json_schema }),
            ProviderKind::Anthropic | ProviderKind::Bedrock,
        ) => Some(json_schema.name.as_str()),
        _ => None,
    }
}

impl Deployment {
    /// Builds [`Deployment::request_headers`] from the deployment's kind,
    /// endpoint and current key (call it again after changing the key).
    pub(crate) fn refresh_request_headers(&mut self) {
        use http::header::{HeaderName, HeaderValue, AUTHORIZATION, CONTENT_TYPE, HOST};
        const X_API_KEY: HeaderName = HeaderName::from_static("x-api-key");
        const ANTHROPIC_VERSION: HeaderName = HeaderName::from_static("anthropic-version");
        let mut h = http::HeaderMap::with_capacity(4);
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let key = self.api_key.as_ref().map(|k| k.expose());
        match (self.kind, key) {
            (ProviderKind::OpenAi, Some(k)) => {
                if let Some(v) = transport::secret_header(&format!("Bearer {k}")) {
                    h.insert(AUTHORIZATION, v);
                }
            }
            (ProviderKind::Anthropic, Some(k)) => {
                if let Some(v) = transport::secret_header(k) {
                    h.insert(X_API_KEY, v);
                }
            }
            (ProviderKind::Azure, Some(k)) => {
                if let Some((name, v)) = self.azure.as_ref().and_then(|az| az.auth_header(k)) {
                    h.insert(name, v);
                }
            }
            (ProviderKind::Gemini, Some(k)) => {
                if let Some(v) = transport::secret_header(k) {
                    h.insert(HeaderName::from_static("x-goog-api-key"), v);
                }
            }
            _ => {}
        }
        if self.kind == ProviderKind::Anthropic {
            h.insert(ANTHROPIC_VERSION, HeaderValue::from_static("2023-06-01"));
        }
        // A plain-HTTP endpoint is sent over HTTP/1.1, where the client
        // would otherwise format `Host` from the URI on every request. Over
        // TLS the connection may be HTTP/2, which names the host in
        // `:authority` instead: left to the client.
        if let Some(uri) = &self.endpoint {
            if uri.scheme() == Some(&http::uri::Scheme::HTTP) {
                if let Some(host) = uri.host() {
                    let value = match uri.port_u16() {
                        Some(port) if port != 80 => {
                            HeaderValue::from_str(&format!("{host}:{port}"))
                        }
                        _ => HeaderValue::from_str(host),
                    };
                    if let Ok(v) = value {
                        h.insert(HOST, v);
                    }
                }
            }
        }
        self.request_headers = h;
    }
}

/// The address and headers of a request to `dep` (its key included) at
/// `endpoint`.
fn endpoint_parts(
    dep: &Deployment,
    endpoint: &Option<http::Uri>,
) -> Result<(http::Uri, http::HeaderMap), Classification> {
    match endpoint {
        Some(uri) => {
            let mut headers = dep.request_headers.clone();
            if let Some(c) = crate::traces::upstream_context() {
                const TRACEPARENT: http::HeaderName = http::HeaderName::from_static("traceparent");
                const TRACESTATE: http::HeaderName = http::HeaderName::from_static("tracestate");
                headers.insert(TRACEPARENT, c.traceparent);
                if let Some(ts) = c.tracestate {
                    headers.insert(TRACESTATE, ts);
                }
            }
            Ok((uri.clone(), headers))
        }
        None => Err(transport_failure(
            TransportError::Connect,
            &format!("deployment {}: base_url is not a valid URL", dep.name),
        )),
    }
}

/// Sends `body` to `dep` and returns the response head.
pub(crate) async fn post(
    client: &HttpClient,
    dep: &Deployment,
    body: Vec<u8>,
) -> Result<http::Response<hyper::body::Incoming>, Classification> {
    post_to(client, dep, body, false).await
}

/// Sends `body` to `dep`'s chat endpoint, or its streaming one where the
/// kind has its own (Gemini's `streamGenerateContent`, Bedrock's
/// `converse-stream`), and returns the response head. A Bedrock request is
/// signed here, per attempt.
pub(crate) async fn post_to(
    client: &HttpClient,
    dep: &Deployment,
    body: Vec<u8>,
    stream: bool,
) -> Result<http::Response<hyper::body::Incoming>, Classification> {
    let endpoint = match &dep.stream_endpoint {
        Some(_) if stream => &dep.stream_endpoint,
        _ => &dep.endpoint,
    };
    let (uri, headers) = match &dep.bedrock {
        Some(auth) => {
            let headers = endpoint_parts(dep, endpoint)?.1;
            crate::bedrock::signed_parts(dep, auth, headers, &body, stream, SystemTime::now())
                .map_err(|e| transport_failure(TransportError::Connect, &e))?
        }
        None => endpoint_parts(dep, endpoint)?,
    };
    client
        .post(uri, headers, body)
        .await
        .map_err(|e| transport_failure(e.kind, &e.message))
}

/// A classification for a transport failure, with a readable message.
pub(crate) fn transport_failure(kind: TransportError, detail: &str) -> Classification {
    let mut c = classify_transport(kind);
    c.message = Some(detail.to_string());
    c
}

/// Reads a body up to [`MAX_UPSTREAM_BODY`].
pub(crate) async fn read_body(
    resp: http::Response<hyper::body::Incoming>,
) -> Result<Bytes, Classification> {
    use hyper::body::Body as _;
    let too_large =
        || transport_failure(TransportError::BodyCut, "upstream body larger than 32 MiB");
    let mut body = resp.into_body();
    if body
        .size_hint()
        .exact()
        .is_some_and(|n| n > MAX_UPSTREAM_BODY as u64)
    {
        return Err(too_large());
    }
    let mut buf = Vec::new();
    while let Some(chunk) = transport::next_chunk(&mut body).await {
        let chunk = chunk.map_err(|e| {
            transport_failure(
                TransportError::BodyCut,
                &format!("reading body: {}", transport::chain(&e)),
            )
        })?;
        if buf.len() + chunk.len() > MAX_UPSTREAM_BODY {
            return Err(too_large());
        }
        if buf.is_empty() && body.is_end_stream() {
            // The whole body in one chunk (the usual case): no copy.
            return Ok(chunk);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Bytes::from(buf))
}

/// What one non-streaming attempt produced.
pub(crate) struct Answer {
    pub response: FullAnswer,
    pub rate_limits: RateLimitHeaders,
    /// When it was asked as a stream: its time to first token.
    pub first_token: Option<Duration>,
}

/// Classifies a non-2xx upstream answer of a deployment of `kind`.
pub(crate) fn classify_error(
    kind: ProviderKind,
    status: u16,
    headers: &http::HeaderMap,
    body: &[u8],
) -> Classification {
    let classified = match kind {
        ProviderKind::Azure => {
            keel_policy::classify_azure_response(status, headers, body, SystemTime::now())
        }
        ProviderKind::Gemini => crate::gemini::classify(status, headers, body),
        _ => classify_response(status, headers, body, SystemTime::now()),
    };
    classified.unwrap_or_else(|| {
        transport_failure(
            TransportError::BodyCut,
            &format!("unexpected status {status}"),
        )
    })
}

/// Parses a 2xx body into the canonical response, keeping the body beside
/// it unless the answer had to be rewritten (the JSON-schema tool's call
/// turned into text).
pub(crate) fn parse_success(
    dep: &Deployment,
    body: Bytes,
    schema_tool: Option<&str>,
) -> Result<FullAnswer, Classification> {
    let malformed = |e: serde_json::Error| {
        let mut c = classify_transport(TransportError::BodyCut);
        c.message = Some(format!(
            "upstream sent an unreadable {} response: {e}",
            dep.kind.as_str()
        ));
        c
    };
    match dep.kind {
        // Read in one pass when the bytes allow it (the typed response is
        // then built only if something asks for it); by serde otherwise,
        // which also names what is wrong with a bad body.
        // A native Responses answer: judged on its chat reading, its own
        // bytes kept for the client.
        ProviderKind::OpenAi if dep.responses.speaks => {
            serde_json::from_slice::<keel_wire::responses::Response>(&body)
                .and_then(|r| translate::response_to_chat(&r))
                .map(|chat| {
                    let api = ClientApi::Responses;
                    FullAnswer::with_raw(chat, RawAnswer { api, body })
                })
                .map_err(malformed)
        }
        ProviderKind::OpenAi | ProviderKind::Azure => {
            let api = ClientApi::OpenAi;
            match AnswerFacts::read(&body) {
                Some(facts) => Ok(FullAnswer::read(facts, RawAnswer { api, body })),
                None => serde_json::from_slice::<ChatResponse>(&body)
                    .map(|r| FullAnswer::with_raw(r, RawAnswer { api, body }))
                    .map_err(malformed),
            }
        }
        ProviderKind::Anthropic => serde_json::from_slice::<MessagesResponse>(&body)
            .map(|r| {
                let (r, exact) = match schema_tool {
                    Some(name) => (translate::json_schema_tool_to_text(&r, name), false),
                    None => (r, true),
                };
                let mut resp = translate::anthropic_to_openai_response(&r);
                resp.created = unix_now();
                if exact {
                    let api = ClientApi::Anthropic;
                    FullAnswer::with_raw(resp, RawAnswer { api, body })
                } else {
                    FullAnswer::new(resp)
                }
            })
            .map_err(malformed),
        ProviderKind::Gemini => crate::gemini::parse_success(dep, &body, unix_now()),
        ProviderKind::Bedrock => keel_wire::bedrock::read_converse_response(&body, &dep.model)
            .map(|r| {
                let r = match schema_tool {
                    Some(name) => translate::json_schema_tool_to_text(&r, name),
                    None => r,
                };
                let mut resp = translate::anthropic_to_openai_response(&r);
                resp.created = unix_now();
                FullAnswer::new(resp)
            })
            .map_err(|e| {
                let mut c = classify_transport(TransportError::BodyCut);
                c.message = Some(format!("upstream sent an unreadable bedrock response: {e}"));
                c
            }),
    }
}

/// Sends one non-streaming attempt.
pub(crate) async fn send(
    client: &HttpClient,
    dep: &Deployment,
    body: Vec<u8>,
    timeout: Duration,
    schema_tool: Option<&str>,
) -> Result<Answer, Classification> {
    let fut = async {
        let mut resp = post(client, dep, body).await?;
        let status = resp.status().as_u16();
        // Taken, not cloned (hot path); the body is read without them.
        let headers = std::mem::take(resp.headers_mut());
        let rate_limits = keel_policy::rate_limit_headers(&headers, SystemTime::now());
        let body = read_body(resp).await?;
        if !(200..300).contains(&status) {
            return Err(classify_error(dep.kind, status, &headers, &body));
        }
        let response = parse_success(dep, body, schema_tool)?;
        Ok(Answer {
            response,
            rate_limits,
            first_token: None,
        })
    };
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(transport_failure(
            TransportError::AttemptTimeout,
            &format!("no answer within {} ms", timeout.as_millis()),
        )),
    }
}

/// Seconds since the Unix epoch (for `created` on translated answers).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn deployments(text: &str) -> Vec<Deployment> {
        crate::config::Config::from_toml_str(text, "t.toml", &|_| None)
            .unwrap()
            .deployments
    }

    #[test]
    fn request_headers_are_built_once_per_deployment() {
        let d = deployments(
            r#"
[providers.oa]
kind = "openai"
base_url = "http://127.0.0.1:8080/v1"
api_key = "sk-oa"
[providers.an]
kind = "anthropic"
base_url = "https://api.anthropic.com/v1"
api_key = "sk-an"
[providers.local]
kind = "openai"
base_url = "http://localhost/v1"
[deployments.a]
provider = "oa"
model = "m"
[deployments.b]
provider = "an"
model = "m"
[deployments.c]
provider = "local"
model = "m"
[routes.r]
chain = ["a", "b", "c"]
"#,
        );
        let text = |d: &Deployment, name: &str| {
            d.request_headers
                .get(name)
                .map(|v| v.to_str().unwrap().to_string())
        };
        let (oa, an, local) = (&d[0], &d[1], &d[2]);
        assert_eq!(text(oa, "authorization").as_deref(), Some("Bearer sk-oa"));
        assert!(oa.request_headers["authorization"].is_sensitive());
        assert_eq!(text(oa, "host").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(
            text(oa, "content-type").as_deref(),
            Some("application/json")
        );
        assert_eq!(text(an, "x-api-key").as_deref(), Some("sk-an"));
        assert!(an.request_headers["x-api-key"].is_sensitive());
        assert_eq!(text(an, "anthropic-version").as_deref(), Some("2023-06-01"));
        // Over TLS (maybe HTTP/2), the client names the host itself.
        assert_eq!(text(an, "host"), None);
        // Port 80 is not named; no key, no auth header.
        assert_eq!(text(local, "host").as_deref(), Some("localhost"));
        assert_eq!(text(local, "authorization"), None);
        // Debug never shows the key.
        assert!(!format!("{oa:?}").contains("sk-oa"));
        let (uri, headers) = endpoint_parts(oa, &oa.endpoint).unwrap();
        assert_eq!(uri.to_string(), "http://127.0.0.1:8080/v1/chat/completions");
        assert_eq!(headers, oa.request_headers);
    }
}
