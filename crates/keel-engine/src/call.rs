//! What goes into the engine and what comes out of it.

use std::borrow::Cow;
use std::time::Duration;

use keel_policy::FailureClass;
use keel_wire::answer_view::AnswerFacts;
use keel_wire::anthropic::MessagesRequest;
use keel_wire::openai::{ChatChunk, ChatResponse, Content, Usage};
use serde::Serialize;

/// Which API the client speaks (decides error shapes and stream encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientApi {
    /// OpenAI Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// OpenAI Responses, translated to a chat request by the server; a
    /// native Responses deployment gets the client's Responses request
    /// itself (see [`ChatCall::from_responses_body`]).
    Responses,
    /// OpenAI embeddings (errors in OpenAI's shape).
    Embeddings,
}

/// What a call asks the chain for: the chain, its stages and its policies
/// are the same for each; only the body sent and the answer read differ.
#[derive(Clone, Debug)]
pub(crate) enum Work {
    /// A chat answer, whole or streamed.
    Chat,
    /// Vectors for a part of an embeddings request's inputs.
    Embeddings(EmbeddingsPart),
    /// An Anthropic token count of the call's Messages request.
    CountTokens,
}

/// Some of an embeddings request's inputs: the unit sent upstream (a
/// request longer than a deployment takes is split into parts).
#[derive(Clone, Debug)]
pub(crate) struct EmbeddingsPart {
    pub request: std::sync::Arc<keel_wire::embeddings::EmbeddingsRequest>,
    /// Which of the request's inputs.
    pub range: std::ops::Range<usize>,
    /// Estimated tokens of the part, and of its largest input.
    pub tokens: u32,
    pub largest: u32,
}

impl EmbeddingsPart {
    /// The part's inputs.
    pub(crate) fn inputs(&self) -> &[serde_json::Value] {
        &self.request.inputs[self.range.clone()]
    }
}

/// An embeddings request through the engine.
#[derive(Clone, Debug)]
pub struct EmbeddingsCall {
    /// The validated request; `model` names the route.
    pub request: keel_wire::embeddings::EmbeddingsRequest,
    /// Overrides.
    pub options: CallOptions,
}

/// An embeddings answer: the vectors in the client's order, usage summed
/// over the parts the request was split into.
#[derive(Debug)]
pub struct EmbeddingsOutcome {
    /// The answer in OpenAI's shape, with the client's model.
    pub body: serde_json::Value,
    /// What happened (every part's attempts).
    pub meta: RequestReport,
}

/// A token count (Anthropic's `count_tokens`).
#[derive(Debug)]
pub struct TokenCount {
    /// Input tokens of the request.
    pub input_tokens: u64,
    /// Keel's own estimate: the route has no Anthropic deployment to ask.
    pub estimated: bool,
    /// What happened.
    pub meta: RequestReport,
}

/// Per-request overrides (headers `x-keel-*`, SDK retry marker).
#[derive(Clone, Debug, Default)]
pub struct CallOptions {
    /// Request id (for logs and headers).
    pub request_id: String,
    /// `x-keel-max-attempts`: attempts per deployment.
    pub max_attempts: Option<u32>,
    /// `x-keel-timeout-ms`: total deadline.
    pub timeout: Option<Duration>,
    /// The client's own timeout (the official SDKs send it as
    /// `x-stainless-read-timeout` / `x-stainless-timeout`): Keel answers
    /// before it, whatever its own deadline (see [`client_deadline`]).
    pub client_timeout: Option<Duration>,
    /// `x-keel-fallbacks: off`: only the first deployment that can serve.
    pub no_fallbacks: bool,
    /// `x-stainless-retry-count`: the SDK is already retrying; Keel spends fewer attempts.
    pub sdk_retry_count: u32,
    /// The tenant the request belongs to (`None`: `"default"`); cache
    /// entries are never shared between tenants.
    pub tenant: Option<String>,
    /// The client's `Cache-Control` directives.
    pub cache_control: CacheControl,
    /// `x-keel-max-cost-usd`: deployments whose estimated cost exceeds it are skipped.
    pub max_cost_usd: Option<f64>,
    /// Request headers (lowercase names, credentials left out) that
    /// `rules` routes may match on.
    pub headers: Vec<(String, String)>,
    /// The client's W3C `traceparent` (read only when traces are on).
    pub traceparent: Option<String>,
    /// The client's W3C `tracestate`, passed on with its trace.
    pub tracestate: Option<String>,
    /// What a Responses request needs of a deployment beyond its chat
    /// translation (built-in tools, `reasoning`, native-only fields).
    pub responses: crate::responses::ResponsesNeeds,
}

/// The time Keel gives itself within a client's timeout `t`: `t` minus a
/// margin of 10% (at least 100 ms), so its answer, static tier or error
/// reaches the client before the client gives up (never under 10 ms).
pub fn client_deadline(t: Duration) -> Duration {
    let margin = (t / 10).max(Duration::from_millis(100));
    t.saturating_sub(margin).max(Duration::from_millis(10))
}

/// The client's request exactly as it arrived: its bytes, where their
/// top-level members lie, and for an Anthropic client the parsed Messages
/// request. A deployment of the client's own API gets these bytes with only
/// the model replaced, so no field is lost in translation.
///
/// Only a [`ChatCall`] holds one, and only while its request is the
/// client's own: every edit ([`ChatCall::request_mut`],
/// [`ChatCall::follow_up`]) drops it, so a continuation, resume, repair or
/// raised limit can never send the client's original bytes.
#[derive(Clone, Debug)]
pub struct ClientBody {
    bytes: bytes::Bytes,
    layout: Option<keel_wire::splice::Layout>,
    anthropic: Option<MessagesRequest>,
}

impl ClientBody {
    /// The body as received.
    pub(crate) fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// Where the body's top-level members lie, when the server's reader
    /// found them (checked against the body before use).
    pub(crate) fn layout(&self) -> Option<&keel_wire::splice::Layout> {
        self.layout.as_ref()
    }

    /// The client's Anthropic request, for an Anthropic client.
    pub(crate) fn anthropic(&self) -> Option<&MessagesRequest> {
        self.anthropic.as_ref()
    }
}

/// One chat request through the engine, in the canonical (OpenAI) shape.
#[derive(Clone, Debug)]
pub struct ChatCall {
    /// The canonical request; `model` names the route.
    request: keel_wire::openai::ChatRequest,
    /// The client's own body, while `request` is exactly what it says.
    client: Option<ClientBody>,
    /// The API the client speaks.
    pub api: ClientApi,
    /// Overrides.
    pub options: CallOptions,
    /// What the chain is asked for.
    pub(crate) work: Work,
}

impl ChatCall {
    /// A call in the OpenAI shape with default options.
    pub fn openai(request: keel_wire::openai::ChatRequest) -> Self {
        ChatCall {
            request,
            client: None,
            api: ClientApi::OpenAi,
            options: CallOptions::default(),
            work: Work::Chat,
        }
    }

    /// An OpenAI client's request with the bytes it was read from (`layout`:
    /// where their members lie, when the reader found them).
    pub fn from_openai_body(
        request: keel_wire::openai::ChatRequest,
        bytes: bytes::Bytes,
        layout: Option<keel_wire::splice::Layout>,
        options: CallOptions,
    ) -> Self {
        ChatCall {
            request,
            client: Some(ClientBody {
                bytes,
                layout,
                anthropic: None,
            }),
            api: ClientApi::OpenAi,
            options,
            work: Work::Chat,
        }
    }

    /// A Responses client's request, already translated to `request` (the
    /// client's body is not a chat body, so none is kept).
    pub fn from_responses(request: keel_wire::openai::ChatRequest, options: CallOptions) -> Self {
        ChatCall {
            request,
            client: None,
            api: ClientApi::Responses,
            options,
            work: Work::Chat,
        }
    }

    /// A Responses client's request, translated to `request`, with the
    /// Responses body `bytes` a native Responses deployment is sent (the
    /// client's own, its history spliced in by the server when it continues
    /// a stored response). Every other deployment gets `request`.
    pub fn from_responses_body(
        request: keel_wire::openai::ChatRequest,
        bytes: bytes::Bytes,
        options: CallOptions,
    ) -> Self {
        ChatCall {
            request,
            client: Some(ClientBody {
                bytes,
                layout: None,
                anthropic: None,
            }),
            api: ClientApi::Responses,
            options,
            work: Work::Chat,
        }
    }

    /// An Anthropic client's request: `request` is its canonical
    /// translation, `original` what `bytes` say.
    pub fn from_anthropic_body(
        request: keel_wire::openai::ChatRequest,
        original: MessagesRequest,
        bytes: bytes::Bytes,
        options: CallOptions,
    ) -> Self {
        ChatCall {
            request,
            client: Some(ClientBody {
                bytes,
                layout: None,
                anthropic: Some(original),
            }),
            api: ClientApi::Anthropic,
            options,
            work: Work::Chat,
        }
    }

    /// The canonical request; `model` names the route.
    pub fn request(&self) -> &keel_wire::openai::ChatRequest {
        &self.request
    }

    /// The request to edit. The client's own body is dropped: once edited,
    /// the request is Keel's, and only it goes upstream.
    pub fn request_mut(&mut self) -> &mut keel_wire::openai::ChatRequest {
        self.client = None;
        &mut self.request
    }

    /// The client's own body, while the request is unedited.
    pub(crate) fn client_body(&self) -> Option<&ClientBody> {
        self.client.as_ref()
    }

    /// The client's Anthropic request, while the request is unedited.
    pub(crate) fn anthropic_original(&self) -> Option<&MessagesRequest> {
        self.client.as_ref().and_then(ClientBody::anthropic)
    }

    /// A call that asks `request` (a continuation, resume or repair Keel
    /// wrote) for the same client, with the same options and none of the
    /// client's bytes.
    pub(crate) fn follow_up(&self, request: keel_wire::openai::ChatRequest) -> ChatCall {
        ChatCall {
            request,
            client: None,
            api: self.api,
            options: self.options.clone(),
            work: self.work.clone(),
        }
    }

    /// The call for one part of an embeddings request: its request only
    /// names the route (the chain reads the inputs from `part`).
    pub(crate) fn embeddings_part(
        route: &str,
        part: EmbeddingsPart,
        options: CallOptions,
    ) -> Result<ChatCall, serde_json::Error> {
        let request = serde_json::from_value(serde_json::json!({"model": route, "messages": []}))?;
        Ok(ChatCall {
            request,
            client: None,
            api: ClientApi::Embeddings,
            options,
            work: Work::Embeddings(part),
        })
    }
}

/// One line of the attempt log of a request.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct AttemptRecord {
    /// Deployment name.
    pub deployment: String,
    /// 1-based attempt number on that deployment (0 when skipped).
    pub attempt: u32,
    /// Failure class, or `None` for a success or a skip.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<&'static str>,
    /// Upstream HTTP status, when there was one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Latency of the attempt.
    pub latency_ms: u64,
    /// What Keel did next: `"ok"`, `"retry"`, `"fallback"`, `"fail"`, `"skip"`.
    pub next: &'static str,
    /// Delay chosen before the next attempt.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_ms: Option<u64>,
    /// Why (hint, backoff, breaker open, budget exhausted, ...).
    pub reason: String,
}

/// Where the answer came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Tier {
    /// A deployment of the chain.
    Chain,
    /// The route's static fallback response.
    Static,
}

/// What happened to a request: every attempt, where the answer came from,
/// its flags and cost.
#[derive(Clone, Debug, Serialize)]
pub struct RequestReport {
    /// Request id.
    pub request_id: String,
    /// Route name.
    pub route: String,
    /// Every attempt and skip, in order.
    pub attempts: Vec<AttemptRecord>,
    /// The deployment that answered.
    pub deployment: Option<String>,
    /// Position of that deployment among those that could serve (0 = first).
    pub fallback_depth: usize,
    /// Tier of the answer.
    pub tier: Tier,
    /// Upstream attempts actually sent.
    pub upstream_attempts: u32,
    /// The answer was cut by `max_tokens`.
    pub truncated: bool,
    /// What the response cache did (`x-keel-cache`).
    pub cache: CacheStatus,
    /// The answer is a refusal (returned because nothing better came).
    pub refusal: bool,
    /// What the request cost upstream in USD, failed attempts, repairs and
    /// hedges included (usage times the deployment's prices).
    pub cost_usd: f64,
    /// The request's trace id (hex), when traces are on (`x-keel-trace-id`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// The request's trace as it happens (`None`: traces off).
    #[serde(skip)]
    pub(crate) trace: Option<Box<crate::timeline::RequestTrace>>,
}

impl RequestReport {
    pub(crate) fn new(request_id: &str, route: &str) -> Self {
        RequestReport {
            request_id: request_id.to_string(),
            route: route.to_string(),
            attempts: Vec::new(),
            deployment: None,
            fallback_depth: 0,
            tier: Tier::Chain,
            upstream_attempts: 0,
            truncated: false,
            cache: CacheStatus::None,
            refusal: false,
            cost_usd: 0.0,
            trace_id: None,
            trace: None,
        }
    }
}

/// A completed non-streaming answer.
#[derive(Debug)]
pub struct ChatOutcome {
    answer: FullAnswer,
    /// What happened.
    pub meta: RequestReport,
}

impl ChatOutcome {
    pub(crate) fn new(answer: FullAnswer, meta: RequestReport) -> Self {
        ChatOutcome { answer, meta }
    }

    /// The answer, as the engine holds it.
    pub(crate) fn answer(&self) -> &FullAnswer {
        &self.answer
    }

    /// The canonical response (the server translates it for Anthropic
    /// clients), with the client's model. When the provider's bytes were
    /// kept, it is read from them on first use.
    pub fn response(&self) -> &ChatResponse {
        self.answer.get()
    }

    /// The response, owned (read from the provider's bytes if it was not
    /// built yet).
    pub fn into_response(self) -> ChatResponse {
        self.answer.into_response()
    }

    /// The provider's own bytes, when they say exactly what
    /// [`response`](Self::response) says (only `model` replaced by the
    /// client's): the server sends them to a client of the same API instead
    /// of re-serialising the response.
    pub fn raw(&self) -> Option<&RawAnswer> {
        self.answer.raw.as_ref()
    }
}

/// A provider's answer body, byte for byte, in the API it was written in.
#[derive(Clone, Debug)]
pub struct RawAnswer {
    /// The API whose shape `body` has.
    pub api: ClientApi,
    /// The JSON body.
    pub body: bytes::Bytes,
}

/// A complete answer inside the engine. The provider's bytes ride along for
/// as long as nothing edits the answer: the only way to change the response
/// is [`FullAnswer::edit`], which drops them, so stale bytes cannot reach a
/// client.
///
/// An OpenAI answer whose bytes [`AnswerFacts`] could read is not parsed
/// into a [`ChatResponse`] at once: what the pipeline decides on (usage,
/// the first choice's text, refusal and finish reason) comes from the
/// facts, and the typed response is read from the bytes the first time
/// something asks for it (a cache, a translation, an edit). The bytes go to
/// a client of the same API untouched, so on the usual path the typed
/// response is never built.
#[derive(Debug)]
pub(crate) struct FullAnswer {
    /// The typed response, when built at once or edited (boxed: the
    /// answer moves through several futures, and the usual one has none).
    response: Option<Box<ChatResponse>>,
    /// The typed response read late from `raw` (set at most once).
    late: std::sync::OnceLock<Box<ChatResponse>>,
    /// What the pipeline reads, while the typed response is not built
    /// (boxed like the response: the answer moves through every stage).
    facts: Option<Box<AnswerFacts>>,
    raw: Option<RawAnswer>,
}

/// What [`content::judge`](crate::content::judge) reads of an answer's
/// first choice.
pub(crate) struct FirstChoice<'a> {
    /// Whether there is a choice at all.
    pub present: bool,
    /// Its text (its text parts joined; empty when it has none).
    pub text: std::borrow::Cow<'a, str>,
    /// Whether it calls tools.
    pub tools: bool,
    /// Whether it carries a non-empty refusal.
    pub refusal: bool,
    /// Its finish reason.
    pub finish_reason: Option<&'a str>,
}

impl FullAnswer {
    /// An answer Keel made or re-read (static tier, cache): no bytes.
    pub(crate) fn new(response: ChatResponse) -> Self {
        FullAnswer {
            response: Some(Box::new(response)),
            late: std::sync::OnceLock::new(),
            facts: None,
            raw: None,
        }
    }

    /// An answer parsed from `raw`.
    pub(crate) fn with_raw(response: ChatResponse, raw: RawAnswer) -> Self {
        FullAnswer {
            raw: Some(raw),
            ..FullAnswer::new(response)
        }
    }

    /// An answer read from `raw` by `facts`; typed when asked.
    pub(crate) fn read(facts: AnswerFacts, raw: RawAnswer) -> Self {
        FullAnswer {
            response: None,
            late: std::sync::OnceLock::new(),
            facts: Some(Box::new(facts)),
            raw: Some(raw),
        }
    }

    /// The response, to read.
    pub(crate) fn get(&self) -> &ChatResponse {
        match &self.response {
            Some(r) => r,
            None => self.late.get_or_init(|| Box::new(self.read_late())),
        }
    }

    /// The typed response from the bytes the facts were read from. The
    /// facts reader accepts only what the typed parse accepts, so this
    /// reads; were it not to, the answer is rebuilt from the facts rather
    /// than lost.
    fn read_late(&self) -> ChatResponse {
        let body = self.raw.as_ref().map(|r| &r.body[..]).unwrap_or_default();
        match serde_json::from_slice::<ChatResponse>(body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "an answer read in one pass did not parse; rebuilt from what was read");
                let model = serde_json::from_slice::<serde_json::Value>(body)
                    .ok()
                    .and_then(|v| Some(v.get("model")?.as_str()?.to_owned()))
                    .unwrap_or_default();
                match &self.facts {
                    Some(f) => f.response(&model),
                    None => AnswerFacts::default().response(&model),
                }
            }
        }
    }

    /// The response, owned.
    pub(crate) fn into_response(mut self) -> ChatResponse {
        match self.response.take().or_else(|| self.late.take()) {
            Some(r) => *r,
            None => self.read_late(),
        }
    }

    /// The response, to change: the provider's bytes no longer match it.
    pub(crate) fn edit(&mut self) -> &mut ChatResponse {
        let r = match self.response.take().or_else(|| self.late.take()) {
            Some(r) => r,
            None => Box::new(self.read_late()),
        };
        self.raw = None;
        self.facts = None;
        self.response.insert(r)
    }

    /// Token usage.
    pub(crate) fn usage(&self) -> Option<&Usage> {
        match (&self.response, &self.facts) {
            (None, Some(f)) => f.usage.as_ref(),
            _ => self.get().usage.as_ref(),
        }
    }

    /// What the content checks read of the first choice.
    pub(crate) fn first_choice(&self) -> FirstChoice<'_> {
        if let (None, Some(f)) = (&self.response, &self.facts) {
            return FirstChoice {
                present: f.choices > 0,
                text: std::borrow::Cow::Borrowed(f.text.as_deref().unwrap_or_default()),
                tools: false,
                refusal: f.refusal.as_ref().is_some_and(|r| !r.is_empty()),
                finish_reason: f.finish_reason.as_deref(),
            };
        }
        let resp = self.get();
        let first = resp.choices.first();
        FirstChoice {
            present: first.is_some(),
            text: first_text(resp),
            tools: first
                .and_then(|c| c.message.tool_calls.as_ref())
                .is_some_and(|t| !t.is_empty()),
            refusal: first
                .and_then(|c| c.message.refusal.as_ref())
                .is_some_and(|r| !r.is_empty()),
            finish_reason: first.and_then(|c| c.finish_reason.as_deref()),
        }
    }

    /// Gives the answer the client's model name: in the typed response if
    /// it is built, and in the provider's bytes (which then read as the
    /// client's answer). When the bytes cannot take the name in place, the
    /// typed response is built and the bytes dropped (re-serialised
    /// instead).
    pub(crate) fn rename(&mut self, model: &str) {
        if let Some(raw) = &self.raw {
            let spliced = match &mut self.facts {
                Some(f) => f.set_model(&raw.body, model),
                // The typed parse accepted these bytes (valid JSON, no key
                // twice), so the splice stops at the model.
                None => keel_wire::splice::replace_first_string(&raw.body, "model", model),
            };
            match spliced {
                Some(body) => {
                    let api = raw.api;
                    self.raw = Some(RawAnswer {
                        api,
                        body: body.into(),
                    });
                }
                None => {
                    self.edit();
                }
            }
        }
        if let Some(r) = &mut self.response {
            r.model = model.to_owned();
        } else if let Some(r) = self.late.get_mut() {
            r.model = model.to_owned();
        }
    }
}

/// Why the engine could not answer, in terms the server maps to HTTP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// The client's request is wrong (400/404/422).
    InvalidRequest,
    /// The route does not exist.
    UnknownRoute,
    /// Rate limited (by Keel or upstream).
    RateLimited,
    /// Every deployment is unavailable (breakers open, overloaded, budget spent).
    Unavailable,
    /// The upstreams failed.
    Upstream,
    /// The deadline passed.
    Timeout,
}

/// A failed request.
#[derive(Clone, Debug)]
pub struct EngineError {
    /// HTTP status to answer with.
    pub status: u16,
    /// Kind (for the API's error type).
    pub kind: ErrorKind,
    /// Provider-style code, for example `context_length_exceeded`.
    pub code: Option<String>,
    /// Human message.
    pub message: String,
    /// When the client may try again.
    pub retry_after: Option<Duration>,
    /// Whether the client's own retry may help (`x-should-retry`): false
    /// when the request itself was refused (invalid, unauthorised, too long
    /// for every deployment), true when the failure was transient.
    pub retryable: bool,
    /// What happened.
    pub meta: RequestReport,
}

impl EngineError {
    pub(crate) fn new(
        status: u16,
        kind: ErrorKind,
        message: impl Into<String>,
        meta: RequestReport,
    ) -> Self {
        EngineError {
            status,
            kind,
            code: None,
            message: message.into(),
            retry_after: None,
            retryable: !matches!(kind, ErrorKind::InvalidRequest | ErrorKind::UnknownRoute),
            meta,
        }
    }
}

/// An item of a streamed answer.
#[derive(Debug, Clone)]
pub enum StreamItem {
    /// A canonical chunk (the server re-encodes it for Anthropic clients).
    Chunk(StreamChunk),
    /// The stream failed after its first byte; no clean end follows.
    Error {
        /// Class of the last failure.
        class: FailureClass,
        /// Message.
        message: String,
    },
}

/// A stream that has produced its first token.
pub struct StreamOutcome {
    /// What happened before the first byte.
    pub meta: RequestReport,
    /// Chunks until the end; a failure ends with [`StreamItem::Error`].
    pub items: StreamItems,
}

/// A recorder that sees every item a reader takes, then `None` at the end.
pub(crate) type Tap = Box<dyn FnMut(Option<&StreamItem>) + Send>;

/// The items a stream's driver has made and its reader not yet taken.
///
/// **Why a queue and not a channel.** The driver runs inside
/// [`StreamItems::recv`], on the reader's task, so nothing ever waits on
/// this across tasks: a channel's semaphore, waker and permit bookkeeping
/// cost as much per token as the rest of passing a chunk through. The lock
/// is never contended (one task uses both ends); it is only there because
/// the driver is a separate `Send` future that shares the queue.
#[derive(Clone)]
pub(crate) struct ItemQueue(
    std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<StreamItem>>>,
);

/// Items a queue has room for before it grows: a short answer's worth, so
/// the usual stream never regrows it (an empty `VecDeque` grew four times
/// on the way to a dozen items).
const QUEUE_START: usize = 16;

impl Default for ItemQueue {
    fn default() -> Self {
        ItemQueue(std::sync::Arc::new(std::sync::Mutex::new(
            std::collections::VecDeque::with_capacity(QUEUE_START),
        )))
    }
}

/// Items a driver makes before it waits for the reader to take some.
const QUEUE_CAPACITY: usize = 64;

impl ItemQueue {
    fn items(&self) -> std::sync::MutexGuard<'_, std::collections::VecDeque<StreamItem>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Adds `item` (a replay, which has no driver and a handful of items).
    pub(crate) fn push(&self, item: StreamItem) {
        self.items().push_back(item);
    }

    /// Adds `item`, first waiting while [`QUEUE_CAPACITY`] items wait
    /// (backpressure: a slow reader slows the upstream read). The wait
    /// registers no waker: the reader polls the driver again once it has
    /// taken what is queued.
    pub(crate) async fn send(&self, item: StreamItem) {
        std::future::poll_fn(|_| match self.items().len() < QUEUE_CAPACITY {
            true => std::task::Poll::Ready(()),
            false => std::task::Poll::Pending,
        })
        .await;
        self.push(item);
    }

    fn pop(&self) -> Option<StreamItem> {
        self.items().pop_front()
    }
}

/// Where a [`StreamItems`] takes its items from.
enum Source {
    /// A queue filled by a driver it polls (or by a replay, without one).
    Driven {
        queue: ItemQueue,
        driver: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    },
    /// A channel that something else sends on.
    Channel(tokio::sync::mpsc::Receiver<StreamItem>),
}

/// The items of a streamed answer, in order, driven by whoever reads them.
///
/// **Why no task of its own.** The part of the engine that reads the
/// upstream stream (and resumes it when it breaks) runs inside
/// [`StreamItems::recv`], on the reader's task. A spawned task behind a
/// channel cost a spawn per stream and a wake-up across threads per burst
/// of tokens; here a client that reads slowly also slows the upstream read
/// (backpressure), and a client that leaves drops the upstream at once.
pub struct StreamItems {
    source: Source,
    tap: Option<Tap>,
}

impl std::fmt::Debug for StreamItems {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let driving = matches!(
            &self.source,
            Source::Driven {
                driver: Some(_),
                ..
            }
        );
        f.debug_struct("StreamItems")
            .field("driving", &driving)
            .finish_non_exhaustive()
    }
}

/// Items that something else sends (a test, a gateway of one's own).
impl From<tokio::sync::mpsc::Receiver<StreamItem>> for StreamItems {
    fn from(rx: tokio::sync::mpsc::Receiver<StreamItem>) -> Self {
        StreamItems {
            source: Source::Channel(rx),
            tap: None,
        }
    }
}

impl StreamItems {
    /// Items put in `queue` by `driver`, which runs as the items are read
    /// (or already there, without a driver).
    pub(crate) fn new(
        queue: ItemQueue,
        driver: Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>>,
    ) -> Self {
        StreamItems {
            source: Source::Driven { queue, driver },
            tap: None,
        }
    }

    /// Adds a recorder of every item taken (and of the end, as `None`).
    pub(crate) fn tapped(mut self, tap: Tap) -> Self {
        self.tap = Some(tap);
        self
    }

    /// The next item; `None` after the last.
    pub async fn recv(&mut self) -> Option<StreamItem> {
        std::future::poll_fn(|cx| self.poll_recv(cx)).await
    }

    /// Polls for the next item, letting the stream's driver make progress
    /// when none is queued.
    pub fn poll_recv(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<StreamItem>> {
        let polled = match &mut self.source {
            Source::Channel(rx) => rx.poll_recv(cx),
            Source::Driven { queue, driver } => loop {
                if let Some(item) = queue.pop() {
                    break std::task::Poll::Ready(Some(item));
                }
                let Some(d) = driver.as_mut() else {
                    break std::task::Poll::Ready(None);
                };
                if d.as_mut().poll(cx).is_ready() {
                    // Done: what it queued is still taken, then the end.
                    *driver = None;
                } else if queue.items().is_empty() {
                    break std::task::Poll::Pending;
                }
            },
        };
        if let std::task::Poll::Ready(item) = &polled {
            self.record(item.as_ref());
        }
        polled
    }

    /// An item already waiting, without driving the stream further:
    /// `Empty` when none is waiting yet, `Disconnected` after the last.
    pub fn try_recv(&mut self) -> Result<StreamItem, tokio::sync::mpsc::error::TryRecvError> {
        use tokio::sync::mpsc::error::TryRecvError;
        let item = match &mut self.source {
            Source::Channel(rx) => rx.try_recv(),
            Source::Driven { queue, driver } => match (queue.pop(), driver) {
                (Some(item), _) => Ok(item),
                (None, Some(_)) => Err(TryRecvError::Empty),
                (None, None) => Err(TryRecvError::Disconnected),
            },
        };
        match &item {
            Ok(item) => self.record(Some(item)),
            Err(TryRecvError::Disconnected) => self.record(None),
            Err(TryRecvError::Empty) => {}
        }
        item
    }

    fn record(&mut self, item: Option<&StreamItem>) {
        if let Some(tap) = self.tap.as_mut() {
            tap(item);
            if item.is_none() {
                self.tap = None;
            }
        }
    }
}

/// One chunk of a streamed answer, in the OpenAI shape: either a parsed
/// [`ChatChunk`], or the provider's own JSON bytes when nothing in the
/// pipeline changed the chunk but its `model` (whose span they carry, to be
/// replaced by whoever writes them out). The bytes pass to an OpenAI client
/// as they came, without a parse and a serialisation per token; whoever
/// needs the fields parses them.
#[derive(Debug, Clone)]
pub struct StreamChunk(ChunkRepr);

// Parsed chunks are the rare case (translations, resumes, replays); boxing
// them keeps the common, raw one small.
#[derive(Debug, Clone)]
enum ChunkRepr {
    Parsed(Box<ChatChunk>),
    /// The provider's bytes, whose `model` value (at `at`, quotes included)
    /// reads as `model` (a JSON string) instead: the splice is made by
    /// whoever writes the chunk, straight into its output.
    Raw {
        json: bytes::Bytes,
        at: std::ops::Range<usize>,
        model: std::sync::Arc<str>,
    },
    /// A native Responses deployment's event (its JSON), for a Responses
    /// client, with the canonical chunk it amounts to (no choices when it
    /// is none: a reasoning summary, a built-in tool's progress).
    Native {
        event: bytes::Bytes,
        chunk: Box<ChatChunk>,
    },
}

impl StreamChunk {
    /// A chunk of the provider's own JSON with the value at `at` (its
    /// `model`, quotes included) replaced by `model_json`. The engine only
    /// makes these of bytes that [`ChunkView`] accepted and that hold no
    /// line break (so neither does `model_json`, a JSON string); a reader that
    /// needs the fields and cannot parse them (a field the view skips has
    /// the wrong type) reports that as a broken stream.
    ///
    /// [`ChunkView`]: keel_wire::chunk_view::ChunkView
    pub(crate) fn raw(
        json: bytes::Bytes,
        at: std::ops::Range<usize>,
        model_json: std::sync::Arc<str>,
    ) -> Self {
        StreamChunk(ChunkRepr::Raw {
            json,
            at,
            model: model_json,
        })
    }

    /// A native Responses event passed through for a Responses client
    /// (the pump makes these only of events it changes nothing in).
    pub(crate) fn native(event: bytes::Bytes, chunk: ChatChunk) -> Self {
        StreamChunk(ChunkRepr::Native {
            event,
            chunk: Box::new(chunk),
        })
    }

    /// The native Responses event's JSON, when the chunk is one: a
    /// Responses client gets it as it is (renumbered, under its response id).
    pub fn native_event(&self) -> Option<&[u8]> {
        match &self.0 {
            ChunkRepr::Native { event, .. } => Some(event),
            _ => None,
        }
    }

    /// The chunk's fields (parsed from its bytes when it carries bytes).
    pub fn parsed(&self) -> Result<std::borrow::Cow<'_, ChatChunk>, serde_json::Error> {
        match &self.0 {
            ChunkRepr::Parsed(c) | ChunkRepr::Native { chunk: c, .. } => {
                Ok(std::borrow::Cow::Borrowed(c))
            }
            ChunkRepr::Raw { .. } => self.spliced_parse().map(std::borrow::Cow::Owned),
        }
    }

    /// The chunk as a [`ChatChunk`] (parsed from its bytes when it carries bytes).
    pub fn into_parsed(self) -> Result<ChatChunk, serde_json::Error> {
        match self.0 {
            ChunkRepr::Parsed(c) | ChunkRepr::Native { chunk: c, .. } => Ok(*c),
            ChunkRepr::Raw { .. } => self.spliced_parse(),
        }
    }

    fn spliced_parse(&self) -> Result<ChatChunk, serde_json::Error> {
        let parts = self.raw_json_parts().unwrap_or_default();
        serde_json::from_slice(&parts.concat())
    }

    /// The chunk's JSON as it goes to an OpenAI client, in three pieces to
    /// write one after the other (the provider's bytes before `model`'s
    /// value, the client's model, the rest), when the chunk passes through
    /// with only its `model` changed. No piece holds a line break: the
    /// pieces make one SSE `data:` line as they are.
    pub fn raw_json_parts(&self) -> Option<[&[u8]; 3]> {
        match &self.0 {
            ChunkRepr::Raw { json, at, model } => {
                Some([json.get(..at.start)?, model.as_bytes(), json.get(at.end..)?])
            }
            ChunkRepr::Parsed(_) | ChunkRepr::Native { .. } => None,
        }
    }
}

impl From<ChatChunk> for StreamChunk {
    fn from(chunk: ChatChunk) -> Self {
        StreamChunk(ChunkRepr::Parsed(Box::new(chunk)))
    }
}

/// The client's `Cache-Control` request directives.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CacheControl {
    /// `no-store`: neither read nor write the cache.
    pub no_store: bool,
    /// `no-cache`: do not answer from the cache (a fresh answer is stored).
    pub no_cache: bool,
    /// `max-age=N`: only answer from an entry at most this old.
    pub max_age: Option<Duration>,
}

impl CacheControl {
    /// Parses a `Cache-Control` header value; unknown directives are ignored.
    pub fn parse(header: &str) -> CacheControl {
        let mut c = CacheControl::default();
        for d in header.split(',') {
            let d = d.trim().to_ascii_lowercase();
            match d.split_once('=') {
                None if d == "no-store" => c.no_store = true,
                None if d == "no-cache" => c.no_cache = true,
                Some(("max-age", v)) => {
                    if let Ok(secs) = v.trim().trim_matches('"').parse::<u64>() {
                        c.max_age = Some(Duration::from_secs(secs));
                    }
                }
                _ => {}
            }
        }
        c
    }
}

/// What the cache did for a request (`x-keel-cache`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStatus {
    /// The route has no cache, or the client said `no-store`.
    #[default]
    None,
    /// Answered from a fresh entry.
    Hit,
    /// Answered by the chain (and stored, when it succeeded).
    Miss,
    /// The chain failed; answered from an expired entry within `stale_ttl`.
    Stale,
}

impl CacheStatus {
    /// The header value.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::None => "none",
            CacheStatus::Hit => "hit",
            CacheStatus::Miss => "miss",
            CacheStatus::Stale => "stale",
        }
    }
}

/// The text of the first choice, borrowed when it is one string.
pub(crate) fn first_text(resp: &ChatResponse) -> Cow<'_, str> {
    match resp
        .choices
        .first()
        .and_then(|c| c.message.content.as_ref())
    {
        Some(Content::Text(s)) => Cow::Borrowed(s),
        Some(parts) => Cow::Owned(parts.joined_text()),
        None => Cow::Borrowed(""),
    }
}

impl RequestReport {
    /// Adds an attempt record, and notes it in the trace.
    #[inline]
    pub(crate) fn push_attempt(&mut self, rec: AttemptRecord) {
        if let Some(t) = &mut self.trace {
            t.on_record(rec.timeline());
        }
        self.attempts.push(rec);
    }

    /// Inserts an attempt record at `at`, and notes it in the trace.
    pub(crate) fn insert_attempt(&mut self, at: usize, rec: AttemptRecord) {
        if let Some(t) = &mut self.trace {
            t.on_record(rec.timeline());
        }
        self.attempts.insert(at, rec);
    }

    /// An attempt is sent to `deployment` (with key `key_index`) now: the
    /// `traceparent` it carries, when the request is traced.
    #[inline]
    pub(crate) fn trace_sent(
        &mut self,
        deployment: &str,
        key_index: usize,
        hedge: bool,
    ) -> Option<crate::traceparent::Propagated> {
        match &mut self.trace {
            None => None,
            Some(t) => t.sent(deployment, key_index, hedge),
        }
    }
}

impl AttemptRecord {
    /// What the request's trace reads of this record.
    fn timeline(&self) -> crate::timeline::Record<'_> {
        crate::timeline::Record {
            deployment: &self.deployment,
            attempt: self.attempt,
            class: self.class,
            status: self.status,
            next: self.next,
            delay_ms: self.delay_ms,
            reason: &self.reason,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn keel_keeps_a_margin_inside_the_clients_timeout() {
        let ms = Duration::from_millis;
        // 10%, at least 100 ms, never under 10 ms.
        assert_eq!(client_deadline(ms(3000)), ms(2700));
        assert_eq!(client_deadline(ms(600_000)), ms(540_000));
        assert_eq!(client_deadline(ms(500)), ms(400));
        assert_eq!(client_deadline(ms(50)), ms(10));
    }

    const ANSWER: &str = r#"{"id":"c1","object":"chat.completion","created":7,"model":"up-1","choices":[{"index":0,"message":{"role":"assistant","content":"Hi there","refusal":null,"annotations":[]},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5},"service_tier":"default"}"#;

    fn read(body: &str) -> FullAnswer {
        let facts = AnswerFacts::read(body.as_bytes()).unwrap();
        let raw = RawAnswer {
            api: ClientApi::OpenAi,
            body: bytes::Bytes::copy_from_slice(body.as_bytes()),
        };
        FullAnswer::read(facts, raw)
    }

    #[test]
    fn an_answer_read_in_one_pass_reads_as_the_typed_one_and_is_typed_only_when_asked() {
        let typed = FullAnswer::new(serde_json::from_str(ANSWER).unwrap());
        let mut answer = read(ANSWER);
        // What the pipeline decides on, from the facts: no typed response.
        assert_eq!(answer.usage(), typed.usage());
        let (a, t) = (answer.first_choice(), typed.first_choice());
        assert_eq!(
            (a.present, &*a.text, a.tools, a.refusal, a.finish_reason),
            (t.present, &*t.text, t.tools, t.refusal, t.finish_reason)
        );
        assert!(answer.response.is_none() && answer.late.get().is_none());

        // The client's model goes into the bytes, which stay exact: the
        // typed response read from them later says the same.
        answer.rename("route \"r\"");
        let raw = answer.raw.clone().unwrap();
        let body: serde_json::Value = serde_json::from_slice(&raw.body).unwrap();
        let mut expected: serde_json::Value = serde_json::from_str(ANSWER).unwrap();
        expected["model"] = "route \"r\"".into();
        assert_eq!(body, expected);
        assert!(answer.late.get().is_none());
        let mut renamed: ChatResponse = serde_json::from_str(ANSWER).unwrap();
        renamed.model = "route \"r\"".into();
        assert_eq!(answer.get(), &renamed);

        // Renaming again (a typed response now exists) changes both.
        answer.rename("again");
        assert_eq!(answer.get().model, "again");
        let body: serde_json::Value =
            serde_json::from_slice(&answer.raw.as_ref().unwrap().body).unwrap();
        assert_eq!(body["model"], "again");

        // An edit drops the bytes and the facts; reads go to the edit.
        answer.edit().usage = None;
        assert!(answer.raw.is_none());
        assert_eq!(answer.usage(), None);
        assert_eq!(answer.first_choice().finish_reason, Some("length"));
        assert_eq!(answer.into_response().model, "again");
    }

    #[test]
    fn bytes_the_typed_parse_refuses_are_rebuilt_from_the_facts_not_lost() {
        // Facts from one body, bytes that are not an answer: the typed
        // response is built from the facts (the reader never lets this
        // happen; the engine still must not panic if it did).
        let facts = AnswerFacts::read(ANSWER.as_bytes()).unwrap();
        let raw = RawAnswer {
            api: ClientApi::OpenAi,
            body: bytes::Bytes::from_static(br#"{"model":"up-1","choices":7}"#),
        };
        let answer = FullAnswer::read(facts, raw);
        let r = answer.get();
        assert_eq!((r.id.as_str(), r.model.as_str()), ("c1", "up-1"));
        assert_eq!(
            (r.text(), r.finish_reason()),
            (Some("Hi there"), Some("length"))
        );
        assert_eq!(r.usage.as_ref().map(|u| u.total_tokens), Some(5));
    }

    fn item(i: usize) -> StreamItem {
        StreamItem::Chunk(crate::text_chunk("c", "m", &i.to_string()).into())
    }

    fn text(item: &StreamItem) -> String {
        match item {
            StreamItem::Chunk(c) => c.parsed().unwrap().choices[0]
                .delta
                .content
                .clone()
                .unwrap_or_default(),
            StreamItem::Error { message, .. } => message.clone(),
        }
    }

    /// A driver that makes more than the queue holds waits for the reader:
    /// every item arrives once, in order, and the queue never holds more
    /// than its capacity.
    #[tokio::test]
    async fn the_driver_waits_for_the_reader_and_nothing_is_lost() {
        let queue = ItemQueue::default();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (q, most) = (queue.clone(), seen.clone());
        let driver = Box::pin(async move {
            for i in 0..QUEUE_CAPACITY * 3 + 5 {
                q.send(item(i)).await;
                most.fetch_max(q.items().len(), std::sync::atomic::Ordering::Relaxed);
            }
        });
        let mut items = StreamItems::new(queue, Some(driver));
        let mut got = Vec::new();
        while let Some(it) = items.recv().await {
            got.push(text(&it));
        }
        let expected: Vec<String> = (0..QUEUE_CAPACITY * 3 + 5).map(|i| i.to_string()).collect();
        assert_eq!(got, expected);
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::Relaxed),
            QUEUE_CAPACITY
        );
        // After the end, the end again.
        assert!(items.recv().await.is_none());
    }

    /// `try_recv` takes what is queued without driving, says `Empty` while
    /// the driver may still add, and `Disconnected` once it is done and
    /// the queue is drained.
    #[tokio::test]
    async fn try_recv_does_not_drive_the_stream() {
        use tokio::sync::mpsc::error::TryRecvError;
        let queue = ItemQueue::default();
        let q = queue.clone();
        let (go, wait) = tokio::sync::oneshot::channel::<()>();
        let driver = Box::pin(async move {
            q.send(item(1)).await;
            q.send(item(2)).await;
            let _ = wait.await;
            q.send(item(3)).await;
        });
        let mut items = StreamItems::new(queue, Some(driver));
        assert_eq!(items.try_recv().unwrap_err(), TryRecvError::Empty);
        assert_eq!(text(&items.recv().await.unwrap()), "1");
        assert_eq!(text(&items.try_recv().unwrap()), "2");
        // The driver waits and is not driven: nothing yet, not the end.
        assert_eq!(items.try_recv().unwrap_err(), TryRecvError::Empty);
        go.send(()).unwrap();
        assert_eq!(items.try_recv().unwrap_err(), TryRecvError::Empty);
        assert_eq!(text(&items.recv().await.unwrap()), "3");
        assert!(items.recv().await.is_none());
        assert_eq!(items.try_recv().unwrap_err(), TryRecvError::Disconnected);
        // A replay: queued items and no driver.
        let queue = ItemQueue::default();
        queue.push(item(7));
        let mut items = StreamItems::new(queue, None);
        assert_eq!(text(&items.try_recv().unwrap()), "7");
        assert_eq!(items.try_recv().unwrap_err(), TryRecvError::Disconnected);
    }
}
