//! What goes into the engine and what comes out of it.

use std::time::Duration;

use keel_policy::FailureClass;
use keel_wire::anthropic::MessagesRequest;
use keel_wire::openai::{ChatChunk, ChatResponse};
use serde::Serialize;

/// Which API the client speaks (decides error shapes and stream encoding).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientApi {
    /// OpenAI Chat Completions.
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
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
    /// `x-keel-fallbacks: off`: only the first deployment that can serve.
    pub no_fallbacks: bool,
    /// `x-stainless-retry-count`: the SDK is already retrying; Keel spends fewer attempts.
    pub sdk_retry_count: u32,
    /// The tenant the request belongs to (`None`: `"default"`); cache
    /// entries are never shared between tenants.
    pub tenant: Option<String>,
    /// The client's `Cache-Control` directives.
    pub cache_control: crate::cache::CacheControl,
    /// `x-keel-max-cost-usd`: deployments whose estimated cost exceeds it are skipped.
    pub max_cost_usd: Option<f64>,
    /// Request headers (lowercase names, credentials left out) that
    /// `rules` routes may match on.
    pub headers: Vec<(String, String)>,
    /// The client's request body as received, when `request` (or
    /// `anthropic_original`) was parsed from it unchanged: a deployment of
    /// the client's own API gets these bytes with only the model replaced.
    pub original_body: Option<bytes::Bytes>,
}

/// One chat request through the engine, in the canonical (OpenAI) shape.
#[derive(Clone, Debug)]
pub struct ChatCall {
    /// The canonical request; `model` names the route.
    pub request: keel_wire::openai::ChatRequest,
    /// The client's original Anthropic request, sent untouched (but for the
    /// model) to Anthropic deployments so no field is lost in translation.
    pub anthropic_original: Option<MessagesRequest>,
    /// The API the client speaks.
    pub api: ClientApi,
    /// Overrides.
    pub options: CallOptions,
}

impl ChatCall {
    /// A call in the OpenAI shape with default options.
    pub fn openai(request: keel_wire::openai::ChatRequest) -> Self {
        ChatCall {
            request,
            anthropic_original: None,
            api: ClientApi::OpenAi,
            options: CallOptions::default(),
        }
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

/// What happened to a request.
#[derive(Clone, Debug, Serialize)]
pub struct Meta {
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
    pub cache: crate::cache::CacheStatus,
    /// The answer is a refusal (returned because nothing better came).
    pub refusal: bool,
    /// What the request cost upstream in USD, failed attempts, repairs and
    /// hedges included (usage times the deployment's prices).
    pub cost_usd: f64,
}

impl Meta {
    pub(crate) fn new(request_id: &str, route: &str) -> Self {
        Meta {
            request_id: request_id.to_string(),
            route: route.to_string(),
            attempts: Vec::new(),
            deployment: None,
            fallback_depth: 0,
            tier: Tier::Chain,
            upstream_attempts: 0,
            truncated: false,
            cache: crate::cache::CacheStatus::None,
            refusal: false,
            cost_usd: 0.0,
        }
    }
}

/// A completed non-streaming answer.
#[derive(Debug)]
pub struct ChatOutcome {
    /// Canonical response (the server translates for Anthropic clients).
    pub response: ChatResponse,
    /// The provider's own bytes, when they say exactly what `response`
    /// says (only `model` replaced by the client's): the server sends them
    /// to a client of the same API instead of re-serialising `response`.
    pub raw: Option<RawAnswer>,
    /// What happened.
    pub meta: Meta,
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
#[derive(Debug)]
pub(crate) struct FullAnswer {
    response: ChatResponse,
    raw: Option<RawAnswer>,
}

impl FullAnswer {
    /// An answer Keel made or re-read (static tier, cache): no bytes.
    pub(crate) fn new(response: ChatResponse) -> Self {
        FullAnswer {
            response,
            raw: None,
        }
    }

    /// An answer parsed from `raw`.
    pub(crate) fn with_raw(response: ChatResponse, raw: RawAnswer) -> Self {
        FullAnswer {
            response,
            raw: Some(raw),
        }
    }

    /// The response, to read.
    pub(crate) fn get(&self) -> &ChatResponse {
        &self.response
    }

    /// The response, to change: the provider's bytes no longer match it.
    pub(crate) fn edit(&mut self) -> &mut ChatResponse {
        self.raw = None;
        &mut self.response
    }

    /// The response and, if still exact, the provider's bytes.
    pub(crate) fn into_parts(self) -> (ChatResponse, Option<RawAnswer>) {
        (self.response, self.raw)
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
    /// What happened.
    pub meta: Meta,
}

impl EngineError {
    pub(crate) fn new(
        status: u16,
        kind: ErrorKind,
        message: impl Into<String>,
        meta: Meta,
    ) -> Self {
        EngineError {
            status,
            kind,
            code: None,
            message: message.into(),
            retry_after: None,
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
    pub meta: Meta,
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

    /// The chunk's fields (parsed from its bytes when it carries bytes).
    pub fn parsed(&self) -> Result<std::borrow::Cow<'_, ChatChunk>, serde_json::Error> {
        match &self.0 {
            ChunkRepr::Parsed(c) => Ok(std::borrow::Cow::Borrowed(c)),
            ChunkRepr::Raw { .. } => self.spliced_parse().map(std::borrow::Cow::Owned),
        }
    }

    /// The chunk as a [`ChatChunk`] (parsed from its bytes when it carries bytes).
    pub fn into_parsed(self) -> Result<ChatChunk, serde_json::Error> {
        match self.0 {
            ChunkRepr::Parsed(c) => Ok(*c),
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
            ChunkRepr::Parsed(_) => None,
        }
    }
}

impl From<ChatChunk> for StreamChunk {
    fn from(chunk: ChatChunk) -> Self {
        StreamChunk(ChunkRepr::Parsed(Box::new(chunk)))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

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
