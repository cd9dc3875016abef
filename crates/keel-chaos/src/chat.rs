//! The chat endpoint: one attempt at an upstream's chat path, from reading
//! the request through the fault the plan selects and the provider's own
//! checks to the answer, bent as the fault asks. The embeddings and
//! token-counting endpoints are attempts of the same kind ([`Endpoint`]):
//! the same key check, faults, limits and stats, another body.

use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use futures_util::stream;
use http::{header, HeaderMap, HeaderValue, Request, Response};
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::answer::{Answer, ChatRequest, Twist};
use crate::dialect::{Dialect, Failure, ResponseIds};
use crate::generate::{self, mix};
use crate::limits::Which;
use crate::reply::{error_response, unix_now, with_headers, DropConnection};
use crate::scenario::Fault;
use crate::shared::Shared;
use crate::upstream::Upstream;

/// Which endpoint an attempt is at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// Chat completions or messages.
    Chat,
    /// OpenAI `/v1/embeddings` (Gemini's `:embedContent` and
    /// `:batchEmbedContents` on a Gemini upstream).
    Embeddings,
    /// Anthropic `/v1/messages/count_tokens`.
    CountTokens,
}

/// The deployment an Azure path names (`/openai/deployments/{name}/...`),
/// put in the request's extensions by the router: it is the model asked,
/// whatever the body says.
#[derive(Debug, Clone)]
pub(crate) struct PathModel(pub(crate) String);

/// Largest request body accepted.
const MAX_BODY: usize = 32 << 20;

/// How a successful answer is bent by a non-error fault.
#[derive(Debug, Clone, Copy)]
struct Delivery {
    twist: Twist,
    first_byte: Duration,
    token_delay: Duration,
    slow_tokens: Option<Duration>,
    cut: Option<u32>,
    /// A stream's error event after this many events.
    error_after: Option<u32>,
    malformed: bool,
}

impl Delivery {
    /// The upstream's answer as configured, before any fault.
    fn plain(up: &Upstream) -> Self {
        Delivery {
            twist: Twist::None,
            first_byte: up.spec.latency,
            token_delay: up.spec.token_delay,
            slow_tokens: None,
            cut: None,
            error_after: None,
            malformed: false,
        }
    }

    /// Delivers the answer with `twist`.
    fn twisted(&mut self, twist: Twist) -> FaultEffect {
        self.twist = twist;
        FaultEffect::Deliver
    }
}

/// What a selected fault does to the attempt.
enum FaultEffect {
    /// Answer with this error.
    Fail(Failure),
    /// Never answer.
    Hang,
    /// Drop the connection.
    Reset,
    /// Answer, as the (already bent) delivery says.
    Deliver,
}

/// One attempt at an upstream, as its stats record it.
struct Attempt<'a> {
    up: &'a Upstream,
    d: &'static dyn Dialect,
    at_ms: u64,
    body: Bytes,
    traceparent: Option<http::HeaderValue>,
    tracestate: Option<http::HeaderValue>,
}

impl Attempt<'_> {
    fn record(&self, outcome: &'static str, status: u16, stream: bool, model: &str) {
        self.up.stats.record(
            self.at_ms,
            outcome,
            status,
            stream,
            model,
            (
                &self.body,
                self.traceparent.as_ref(),
                self.tracestate.as_ref(),
            ),
        );
    }

    /// Answers with an error after the base latency, and records it.
    async fn fail(
        &self,
        failure: Failure,
        outcome: &'static str,
        stream: bool,
        model: &str,
        headers: HeaderMap,
    ) -> Result<Response<Body>, DropConnection> {
        let resp = with_headers(error_response(self.d, &failure, model), headers);
        self.record(outcome, resp.status().as_u16(), stream, model);
        let latency = self.up.spec.latency;
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        Ok(resp)
    }
}

/// One attempt, its answer watched to its end: a client that goes away
/// first is counted ([`crate::UpstreamStats::closed_by_client`]).
pub(crate) async fn chat(
    shared: &Shared,
    up: &Upstream,
    d: &'static dyn Dialect,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let guard = up.stats.answer_guard();
    match answer(shared, up, d, endpoint, req).await {
        Ok(resp) => Ok(resp.map(|body| guard.watch(body))),
        Err(DropConnection) => {
            guard.finished();
            Err(DropConnection)
        }
    }
}

async fn answer(
    shared: &Shared,
    up: &Upstream,
    d: &'static dyn Dialect,
    endpoint: Endpoint,
    req: Request<Incoming>,
) -> Result<Response<Body>, DropConnection> {
    let (parts, body) = req.into_parts();
    let Ok(bytes) = axum::body::to_bytes(Body::new(body), MAX_BODY).await else {
        return Err(DropConnection);
    };
    let plan = up.plan();
    let number = plan.attempts.fetch_add(1, Ordering::Relaxed) + 1;
    let total = up.total.fetch_add(1, Ordering::Relaxed) + 1;
    let now = Instant::now();
    let at_ms = now.saturating_duration_since(shared.started).as_millis() as u64;
    let ids = ResponseIds {
        seed: mix(shared.seed ^ mix((up.index as u64) << 48 ^ total)),
        created: unix_now(),
    };
    let mut headers = HeaderMap::new();
    d.common_headers(&mut headers);
    let (name, value) = d.request_id(ids.seed ^ 0x5eed);
    headers.insert(name, value);
    let attempt = Attempt {
        up,
        d,
        at_ms,
        body: bytes,
        traceparent: parts.headers.get("traceparent").cloned(),
        tracestate: parts.headers.get("tracestate").cloned(),
    };

    if let Some(key) = &up.spec.api_key {
        if let Err(provided) = d.check_key(&parts.headers, key) {
            return attempt
                .fail(Failure::Auth(provided), "auth", false, "", headers)
                .await;
        }
    }
    let named = parts
        .extensions
        .get::<PathModel>()
        .and_then(|PathModel(m)| with_model(&attempt.body, m));
    let body = named.as_ref().unwrap_or(&attempt.body);
    let parsed = match endpoint {
        Endpoint::Chat => d
            .parse_at(parts.uri.path(), &parts.headers, body, shared.seed)
            .map(|r| (r, None)),
        Endpoint::Embeddings if up.spec.kind == crate::Kind::Gemini => {
            crate::gemini_embeddings::parse(parts.uri.path(), body, up.spec.max_inputs)
                .map(|(r, e)| (r, Some(e)))
        }
        Endpoint::Embeddings => {
            crate::embeddings::parse(body, up.spec.max_inputs).map(|(r, e)| (r, Some(e)))
        }
        Endpoint::CountTokens => {
            let body = crate::embeddings::count_tokens_body(&attempt.body);
            d.parse(&parts.headers, &body, shared.seed).map(|mut r| {
                r.stream = false;
                r.max_tokens = Some(0);
                (r, None)
            })
        }
    };
    let parsed = parsed.and_then(|r| {
        if endpoint == Endpoint::Chat && up.spec.require_thought_signatures {
            crate::dialect::gemini_signatures::check(body)?;
        }
        Ok(r)
    });
    let (req, embeddings) = match parsed {
        Ok(r) => r,
        Err(f) => return attempt.fail(f, "invalid_request", false, "", headers).await,
    };
    let (stream, model) = (req.stream, req.model.as_str());

    let mut delivery = Delivery::plain(up);
    let elapsed = now.saturating_duration_since(plan.since);
    let fault = plan.select(number, elapsed, stream, shared.seed, up.index);
    let outcome = fault.map_or("ok", Fault::name);
    if let Some(fault) = fault {
        match apply_fault(fault, up, &req, &mut delivery) {
            FaultEffect::Fail(failure) => {
                return attempt.fail(failure, outcome, stream, model, headers).await;
            }
            FaultEffect::Hang => {
                attempt.record(outcome, 0, stream, model);
                return std::future::pending().await;
            }
            FaultEffect::Reset => {
                attempt.record(outcome, 0, stream, model);
                return Err(DropConnection);
            }
            FaultEffect::Deliver => {}
        }
    }
    if let Err((failure, outcome)) = provider_checks(up, d, &req, &mut headers) {
        return attempt.fail(failure, outcome, stream, model, headers).await;
    }

    let plain = match (endpoint, &embeddings) {
        (Endpoint::Chat, _) => None,
        (Endpoint::Embeddings, Some(e)) if e.shape != crate::embeddings::Shape::OpenAi => Some(
            crate::gemini_embeddings::answer(shared.seed, &req, e, delivery.twist == Twist::Empty),
        ),
        (Endpoint::Embeddings, Some(e)) => Some(crate::embeddings::answer(
            shared.seed,
            &req,
            e,
            delivery.twist == Twist::Empty,
        )),
        _ => Some(crate::embeddings::count_answer(&req)),
    };
    attempt.record(outcome, 200, stream, model);
    if !delivery.first_byte.is_zero() {
        tokio::time::sleep(delivery.first_byte).await;
    }
    if let Some(body) = plain {
        if let Some(delay) = delivery.slow_tokens {
            tokio::time::sleep(delay).await;
        }
        return Ok(deliver_json(body, &delivery, headers));
    }
    let answer = req.answer(delivery.twist);
    let resp = if stream {
        stream_response(d, &req, &answer, ids, &delivery, headers)
    } else {
        complete_response(d, &req, &answer, ids, &delivery, headers).await
    };
    Ok(resp)
}

/// `body` with its `model` set to `model` (`None`: not a JSON object, left
/// for the parser to reject).
fn with_model(body: &Bytes, model: &str) -> Option<Bytes> {
    let mut v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.as_object_mut()?.insert("model".into(), model.into());
    Some(Bytes::from(v.to_string()))
}

/// What `fault` does: an error to answer with, no answer at all, or a
/// change to how the answer is delivered (made to `delivery`).
fn apply_fault(
    fault: &Fault,
    up: &Upstream,
    req: &ChatRequest,
    delivery: &mut Delivery,
) -> FaultEffect {
    let failure = match fault {
        Fault::RateLimit {
            retry_after,
            header_style,
        } => Failure::RateLimit {
            retry_after: retry_after.unwrap_or(Duration::from_secs(1)),
            style: *header_style,
        },
        Fault::QuotaExhausted => Failure::Quota,
        Fault::Overloaded => Failure::Overloaded,
        Fault::ServerError { status } => Failure::Server(*status),
        Fault::Status { status } => Failure::Status(*status),
        Fault::Auth => Failure::Auth(Some("sk-chaos-revoked".to_owned())),
        Fault::ContextOverflow => {
            let limit = up.spec.context_window.map_or(
                match up.spec.kind {
                    crate::Kind::OpenAi | crate::Kind::Azure => 128_000,
                    crate::Kind::Anthropic | crate::Kind::Bedrock => 200_000,
                    crate::Kind::Gemini => 1_048_576,
                },
                u64::from,
            );
            Failure::ContextOverflow {
                tokens: limit + 1 + req.prompt_tokens,
                limit,
            }
        }
        Fault::BadRequest => Failure::BadRequest,
        Fault::NotFound => Failure::NotFound {
            model: req.model.clone(),
        },
        Fault::Hang => return FaultEffect::Hang,
        Fault::Reset => return FaultEffect::Reset,
        Fault::SlowFirstByte { delay } => {
            delivery.first_byte += *delay;
            return FaultEffect::Deliver;
        }
        Fault::SlowTokens { delay } => {
            delivery.token_delay = *delay;
            delivery.slow_tokens = Some(*delay);
            return FaultEffect::Deliver;
        }
        Fault::CutStream { after_chunks } => {
            delivery.cut = Some(*after_chunks);
            return FaultEffect::Deliver;
        }
        Fault::MalformedJson => {
            delivery.malformed = true;
            return FaultEffect::Deliver;
        }
        Fault::Empty => return delivery.twisted(Twist::Empty),
        Fault::Truncate => return delivery.twisted(Twist::Truncate),
        Fault::Refusal => return delivery.twisted(Twist::Refusal),
        Fault::InvalidJson => return delivery.twisted(Twist::InvalidJson),
        Fault::ContentFilter => return delivery.twisted(Twist::ContentFilter),
        Fault::PromptFilter => Failure::InvalidBody {
            message: "The response was filtered due to the prompt triggering the content management policy.".into(),
            param: Some("prompt"),
            code: Some("content_filter"),
        },
        Fault::StreamError { after_chunks } if req.stream => {
            delivery.error_after = Some(*after_chunks);
            return FaultEffect::Deliver;
        }
        Fault::StreamError { .. } => Failure::Overloaded,
    };
    FaultEffect::Fail(failure)
}

/// The upstream's own checks, as the provider makes them: the models it
/// serves, its context window and its rate limits (whose headers go on
/// the answer). `Err` carries the failure and its outcome name.
fn provider_checks(
    up: &Upstream,
    d: &dyn Dialect,
    req: &ChatRequest,
    headers: &mut HeaderMap,
) -> Result<(), (Failure, &'static str)> {
    let model = req.model.as_str();
    if !up.spec.models.is_empty() && !up.spec.models.iter().any(|m| m == model) {
        let failure = Failure::NotFound {
            model: model.to_owned(),
        };
        return Err((failure, "not_found"));
    }
    if let Some(window) = up.spec.context_window {
        if req.prompt_tokens > u64::from(window) {
            let failure = Failure::ContextOverflow {
                tokens: req.prompt_tokens,
                limit: u64::from(window),
            };
            return Err((failure, "context_overflow"));
        }
    }
    let cost = req.prompt_tokens + req.max_tokens.unwrap_or(256);
    match up.admit(cost) {
        None => Ok(()),
        Some(Ok(snapshot)) => {
            d.limit_headers(&snapshot, headers);
            Ok(())
        }
        Some(Err(denied)) => {
            let outcome = match denied.which {
                Which::Requests => "rpm_limit",
                Which::Tokens => "tpm_limit",
            };
            Err((Failure::LimitExceeded(denied), outcome))
        }
    }
}

/// A streamed answer: SSE events, paced, cut or broken as delivered.
fn stream_response(
    d: &dyn Dialect,
    req: &ChatRequest,
    answer: &Answer,
    ids: ResponseIds,
    delivery: &Delivery,
    mut headers: HeaderMap,
) -> Response<Body> {
    let mut events = d.stream(req, answer, ids);
    if delivery.malformed && events.len() > 1 {
        events[1] = d.break_event(&events[1]);
    }
    if let Some(n) = delivery.error_after {
        events.truncate(n as usize);
        events.push(d.stream_error());
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(d.stream_content_type()),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    let mut resp = Response::new(sse_body(events, delivery.token_delay, delivery.cut));
    *resp.headers_mut() = headers;
    resp
}

/// A whole answer: slowed, truncated or cut as delivered.
async fn complete_response(
    d: &dyn Dialect,
    req: &ChatRequest,
    answer: &Answer,
    ids: ResponseIds,
    delivery: &Delivery,
    headers: HeaderMap,
) -> Response<Body> {
    let body = d.complete(req, answer, ids);
    // A provider writes its tokens as fast for a whole answer as for a
    // stream: the answer comes when the same answer streamed would have
    // ended (`token_delay`, or a `slow_tokens` fault's delay, between each
    // two of its events).
    let delay = delivery.token_delay;
    if !delay.is_zero() {
        let gaps = d.stream(req, answer, ids).len().saturating_sub(1);
        let gaps = u32::try_from(gaps).unwrap_or(u32::MAX);
        tokio::time::sleep(delay.saturating_mul(gaps)).await;
    }
    deliver_json(body, delivery, headers)
}

/// A JSON body delivered whole, or cut short or mid-body as the delivery says.
fn deliver_json(mut body: Bytes, delivery: &Delivery, mut headers: HeaderMap) -> Response<Body> {
    if delivery.malformed {
        let keep =
            generate::cut(std::str::from_utf8(&body).unwrap_or(""), body.len() * 2 / 3).len();
        body = body.slice(..keep);
    }
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let resp_body = match delivery.cut {
        None => Body::from(body),
        Some(_) => {
            headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
            let half = body.slice(..body.len() / 2);
            cut_body(vec![half])
        }
    };
    let mut resp = Response::new(resp_body);
    *resp.headers_mut() = headers;
    resp
}
/// A body that sends `chunks` and then fails, which makes hyper abort the
/// connection mid-body.
fn cut_body(chunks: Vec<Bytes>) -> Body {
    let sent = stream::iter(chunks.into_iter().map(Ok::<Bytes, std::io::Error>));
    let cut = stream::once(async {
        // Let hyper flush what was sent before the connection is aborted.
        tokio::time::sleep(Duration::from_millis(1)).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::ConnectionAborted,
            "chaos: body cut",
        ))
    });
    Body::from_stream(futures_util::StreamExt::chain(sent, cut))
}

/// SSE events with `delay` between them, cut after `cut` events if asked.
fn sse_body(events: Vec<Bytes>, delay: Duration, cut: Option<u32>) -> Body {
    if let Some(n) = cut {
        let keep = (n as usize).min(events.len());
        let kept: Vec<Bytes> = events.into_iter().take(keep).collect();
        if delay.is_zero() {
            return cut_body(kept);
        }
        let paced = paced(kept, delay);
        let cut = stream::once(async move {
            tokio::time::sleep(delay).await;
            Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionAborted,
                "chaos: stream cut",
            ))
        });
        return Body::from_stream(futures_util::StreamExt::chain(paced, cut));
    }
    if delay.is_zero() {
        let len = events.iter().map(Bytes::len).sum();
        let mut all = Vec::with_capacity(len);
        events.iter().for_each(|e| all.extend_from_slice(e));
        return Body::from(all);
    }
    Body::from_stream(paced(events, delay))
}

fn paced(
    events: Vec<Bytes>,
    delay: Duration,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    // Event k goes at `k x delay` after the first, on a fixed schedule: a
    // sleep per event would add the timer's rounding (up to a millisecond)
    // to every gap, and a stream would take far longer than its tokens.
    stream::unfold(
        (events.into_iter(), None::<tokio::time::Instant>),
        move |(mut it, due)| async move {
            let next = it.next()?;
            let at = match due {
                None => tokio::time::Instant::now(),
                Some(at) => {
                    tokio::time::sleep_until(at).await;
                    at
                }
            };
            Some((Ok(next), (it, Some(at + delay))))
        },
    )
}
