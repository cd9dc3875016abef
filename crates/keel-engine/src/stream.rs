//! Streaming: an upstream stream is "open" once its first token has arrived;
//! until then every failure is retried invisibly by the pipeline. After that,
//! the pump forwards the chunks (an OpenAI chunk it changes only in `model`
//! as the provider's own bytes, any other as a canonical chunk) and, when
//! the stream breaks, either
//! resumes on another deployment (asking for the continuation of the partial
//! answer) or ends with a well-formed error item. A broken stream never
//! looks like a clean end.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use keel_policy::{classify_response, Classification, TransportError};
use keel_wire::anthropic::StreamEvent;
use keel_wire::chunk_view::ChunkView;
use keel_wire::openai::ChatChunk;
use keel_wire::sse::SseDecoder;
use keel_wire::translate::AnthropicToOpenAiStream;
use tokio::sync::mpsc;
use tracing::warn;

use crate::call::{ChatCall, ClientApi, Meta, StreamChunk, StreamItem};
use crate::config::{Deployment, ProviderKind, StreamFailure};
use crate::pipeline::{self, Mode, Success};
use crate::upstream::{self, transport_failure};
use crate::{now, Inner};

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, hyper::Error>> + Send>>;

enum Converter {
    OpenAi,
    Anthropic(Box<AnthropicToOpenAiStream>),
}

/// A chunk read from an upstream stream, not yet looked at by the pump.
pub(crate) enum Upcoming {
    /// A chunk converted from another API (boxed: the raw one is the
    /// common case and stays small).
    Parsed(Box<ChatChunk>),
    /// An OpenAI upstream's chunk as its JSON bytes: the pump reads what it
    /// decides on through a [`ChunkView`] and passes the bytes on when it
    /// changes nothing but `model`.
    Raw(Bytes),
}

impl Upcoming {
    fn has_payload(&self) -> Result<bool, Classification> {
        match self {
            Upcoming::Parsed(c) => Ok(c.has_payload()),
            Upcoming::Raw(json) => ChunkView::parse(json)
                .map(|v| v.has_payload())
                .map_err(|e| unreadable_chunk(&e)),
        }
    }
}

fn unreadable_chunk(e: &serde_json::Error) -> Classification {
    transport_failure(
        TransportError::BodyCut,
        &format!("unreadable stream chunk: {e}"),
    )
}

/// Bytes of raw chunks one shared buffer holds before the next is started.
const RAW_BUFFER: usize = 4096;

/// What the decoded events of an upstream stream have made so far.
struct Events {
    converter: Converter,
    /// Chunks read and not yet taken.
    pending: VecDeque<Upcoming>,
    /// The stream's end event has come.
    done: bool,
    /// The buffer raw chunks are sliced from.
    raw: BytesMut,
}

/// An upstream stream whose first token has been read.
pub(crate) struct OpenStream {
    body: ByteStream,
    decoder: SseDecoder,
    events: Events,
    inter_token_timeout: Duration,
    /// The request's total deadline also bounds the stream after its first
    /// token, so an upstream that sends tokens forever is cut.
    deadline: tokio::time::Instant,
}

impl OpenStream {
    /// Sends the request and reads up to the first token within
    /// `first_token_timeout`; the whole stream must end within `remaining`.
    pub(crate) async fn open(
        client: &crate::transport::HttpClient,
        dep: &Deployment,
        body: Vec<u8>,
        first_token_timeout: Duration,
        inter_token_timeout: Duration,
        remaining: Duration,
        schema_tool: Option<&str>,
    ) -> Result<OpenStream, Classification> {
        let deadline = tokio::time::Instant::now() + remaining;
        let fut = async {
            let resp = upstream::post(client, dep, body).await?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                let headers = resp.headers().clone();
                let body = upstream::read_body(resp).await?;
                return Err(upstream::classify_error(status, &headers, &body));
            }
            let mut s = OpenStream {
                body: Box::pin(crate::transport::body_stream(resp)),
                decoder: SseDecoder::new(),
                events: Events {
                    converter: match dep.kind {
                        ProviderKind::OpenAi => Converter::OpenAi,
                        ProviderKind::Anthropic => Converter::Anthropic(Box::new({
                            let conv = AnthropicToOpenAiStream::new(&dep.model)
                                .with_created(upstream::unix_now());
                            match schema_tool {
                                Some(name) => conv.with_json_schema_tool(name),
                                None => conv,
                            }
                        })),
                    },
                    pending: VecDeque::new(),
                    done: false,
                    raw: BytesMut::new(),
                },
                inter_token_timeout,
                deadline,
            };
            // Read until the first chunk that carries something.
            let mut buffered = VecDeque::new();
            loop {
                match s.fill().await? {
                    false => {
                        return Err(transport_failure(
                            TransportError::BodyCut,
                            "stream ended before the first token",
                        ));
                    }
                    true => {
                        let mut got = false;
                        // The chunks behind the first with a payload are
                        // read by the pump; they need no look here.
                        while let Some(c) = s.events.pending.pop_front() {
                            got = got || c.has_payload()?;
                            buffered.push_back(c);
                        }
                        if got {
                            break;
                        }
                    }
                }
            }
            s.events.pending = buffered;
            Ok(s)
        };
        match tokio::time::timeout(first_token_timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(transport_failure(
                TransportError::FirstByteTimeout,
                &format!(
                    "no first token within {} ms",
                    first_token_timeout.as_millis()
                ),
            )),
        }
    }

    /// Reads more bytes until at least one chunk is pending (true) or the
    /// stream ended cleanly (false). A dirty end is an error.
    async fn fill(&mut self) -> Result<bool, Classification> {
        while self.events.pending.is_empty() {
            if self.events.done {
                return Ok(false);
            }
            let Some(next) = self.body.next().await else {
                return Err(transport_failure(
                    TransportError::BodyCut,
                    "stream cut before its end event",
                ));
            };
            let bytes = next.map_err(|e| {
                transport_failure(
                    TransportError::BodyCut,
                    &format!("stream broke: {}", crate::transport::chain(&e)),
                )
            })?;
            // The first failing event stops the reading; later ones in
            // the same packet are not looked at.
            let mut failed = None;
            let events = &mut self.events;
            self.decoder
                .push_with(&bytes, |name, data| {
                    if failed.is_none() {
                        failed = events.on_event(name, data).err();
                    }
                })
                .map_err(|e| {
                    transport_failure(
                        TransportError::BodyCut,
                        &format!("bad SSE from upstream: {e}"),
                    )
                })?;
            if let Some(c) = failed {
                return Err(c);
            }
        }
        Ok(true)
    }
}

impl Events {
    fn on_event(&mut self, name: Option<&str>, data: &str) -> Result<(), Classification> {
        match &mut self.converter {
            Converter::OpenAi => {
                let trimmed = data.trim();
                if trimmed == "[DONE]" {
                    self.done = true;
                    return Ok(());
                }
                if trimmed.starts_with("{\"error\"") {
                    return Err(in_stream_error(500, trimmed));
                }
                // Read (and checked) by the pump, once. The chunks share
                // one buffer (a slice each), not an allocation each.
                if self.raw.capacity() - self.raw.len() < data.len() {
                    self.raw.reserve(data.len().max(RAW_BUFFER));
                }
                self.raw.extend_from_slice(data.as_bytes());
                self.pending
                    .push_back(Upcoming::Raw(self.raw.split().freeze()));
            }
            Converter::Anthropic(conv) => {
                if name == Some("error") {
                    let status = if data.contains("overloaded_error") {
                        529
                    } else {
                        500
                    };
                    return Err(in_stream_error(status, data));
                }
                let ev: StreamEvent = match serde_json::from_str(data) {
                    Ok(ev) => ev,
                    Err(e) => {
                        return Err(transport_failure(
                            TransportError::BodyCut,
                            &format!("unreadable stream event: {e}"),
                        ))
                    }
                };
                if matches!(ev, StreamEvent::MessageStop) {
                    self.done = true;
                }
                self.pending.extend(
                    conv.push(&ev)
                        .into_iter()
                        .map(|c| Upcoming::Parsed(Box::new(c))),
                );
            }
        }
        Ok(())
    }
}

impl OpenStream {
    /// What is left of the request's total deadline (`None` once it has
    /// passed). A resume or continuation of this stream runs within it, so
    /// a broken stream cannot stretch the request past its deadline.
    pub(crate) fn time_left(&self) -> Option<Duration> {
        let left = self
            .deadline
            .saturating_duration_since(tokio::time::Instant::now());
        (!left.is_zero()).then_some(left)
    }

    /// The next chunk, `None` at a clean end, or the failure.
    pub(crate) async fn next_chunk(&mut self) -> Result<Option<Upcoming>, Classification> {
        if self.events.pending.is_empty() {
            let t = self.inter_token_timeout;
            let left = self
                .deadline
                .saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(transport_failure(
                    TransportError::AttemptTimeout,
                    "stream still running at the request deadline",
                ));
            }
            match tokio::time::timeout(t.min(left), self.fill()).await {
                Ok(Ok(true)) => {}
                Ok(Ok(false)) => return Ok(None),
                Ok(Err(c)) => return Err(c),
                Err(_) if left < t => {
                    return Err(transport_failure(
                        TransportError::AttemptTimeout,
                        "stream still running at the request deadline",
                    ))
                }
                Err(_) => {
                    return Err(transport_failure(
                        TransportError::InterTokenTimeout,
                        &format!("no token for {} ms", t.as_millis()),
                    ))
                }
            }
        }
        Ok(self.events.pending.pop_front())
    }
}

fn in_stream_error(status: u16, body: &str) -> Classification {
    let mut c = classify_response(
        status,
        &http::HeaderMap::new(),
        body.as_bytes(),
        SystemTime::now(),
    )
    .unwrap_or_else(|| transport_failure(TransportError::BodyCut, "error event"));
    c.status = None;
    if c.message.is_none() {
        c.message = Some("error event in stream".into());
    }
    c
}

/// Pumps `stream` into `tx`; resumes on another deployment when it breaks.
/// `hold` (a timer, a tenant's slot) is dropped when the pump ends.
pub(crate) async fn pump<H: Send>(
    inner: Arc<Inner>,
    call: ChatCall,
    mut stream: OpenStream,
    mut dep_index: usize,
    tx: mpsc::Sender<StreamItem>,
    hold: H,
) {
    let _hold = hold;
    let Some(route) = inner.config.routes.get(&call.request.model).cloned() else {
        return;
    };
    let mut partial = String::new();
    let mut stream_id: Option<String> = None;
    let mut resumed = 0u32;
    let mut suppress_role = false;
    let mut started = now();
    // Truncation policy `continue`: a `length` finish is held back, and the
    // rest is asked for when the stream ends; usage is summed over rounds.
    let content = route.policy.content.clone();
    let mut continuations = 0u32;
    let mut continue_pending = false;
    let mut usage_sum: Option<keel_wire::openai::Usage> = None;
    // The route's name as a JSON string, spliced into each passed-through chunk.
    let model_json: Arc<str> = serde_json::Value::from(call.request.model.as_str())
        .to_string()
        .into();
    loop {
        let next = match stream.next_chunk().await {
            Ok(Some(Upcoming::Raw(json))) => match ChunkView::parse(&json) {
                Err(e) => Err(unreadable_chunk(&e)),
                Ok(view) => {
                    // The chunk passes through as its own bytes when the
                    // pipeline would change nothing in it but `model`.
                    let unchanged = call.api == ClientApi::OpenAi
                        && !suppress_role
                        && !continue_pending
                        && (view.usage.is_none() || usage_sum.is_none())
                        && !(content.truncation == crate::content::TruncationPolicy::Continue
                            && continuations < content.max_continuations
                            && view.finishes_with("length"))
                        && stream_id.as_deref().is_none_or(|id| id == view.id);
                    let spliced = match unchanged {
                        true => view.model_span(),
                        false => None,
                    };
                    match spliced {
                        Some(at) => {
                            if let Some(u) = &view.usage {
                                crate::content::add_usage(&mut usage_sum, Some(u));
                                charge(&inner, &call, dep_index, u).await;
                            }
                            if stream_id.is_none() {
                                stream_id = Some(view.id.to_string());
                            }
                            for ch in &view.choices {
                                if let Some(t) = &ch.delta.content {
                                    partial.push_str(t);
                                }
                            }
                            let chunk = StreamChunk::raw(json.clone(), at, model_json.clone());
                            if tx.send(StreamItem::Chunk(chunk)).await.is_err() {
                                return; // the client left
                            }
                            continue;
                        }
                        None => serde_json::from_slice::<ChatChunk>(&json)
                            .map(Some)
                            .map_err(|e| unreadable_chunk(&e)),
                    }
                }
            },
            Ok(Some(Upcoming::Parsed(chunk))) => Ok(Some(*chunk)),
            Ok(None) => Ok(None),
            Err(c) => Err(c),
        };
        match next {
            Ok(Some(mut chunk)) => {
                if let Some(u) = chunk.usage.take() {
                    crate::content::add_usage(&mut usage_sum, Some(&u));
                    charge(&inner, &call, dep_index, &u).await;
                    if continue_pending {
                        if chunk.choices.is_empty() {
                            continue;
                        }
                    } else {
                        chunk.usage = usage_sum.clone();
                    }
                }
                for ch in &mut chunk.choices {
                    if ch.finish_reason.as_deref() == Some("length")
                        && content.truncation == crate::content::TruncationPolicy::Continue
                        && continuations < content.max_continuations
                    {
                        ch.finish_reason = None;
                        continue_pending = true;
                    }
                }
                // One id and model for the whole answer, whichever deployment wrote it.
                match &stream_id {
                    Some(id) => chunk.id = id.clone(),
                    None => stream_id = Some(chunk.id.clone()),
                }
                chunk.model = call.request.model.clone();
                for ch in &mut chunk.choices {
                    if let Some(t) = &ch.delta.content {
                        partial.push_str(t);
                    }
                    if suppress_role {
                        ch.delta.role = None;
                    }
                }
                if suppress_role
                    && chunk.usage.is_none()
                    && chunk.choices.iter().all(|c| {
                        c.delta.content.is_none()
                            && c.delta.tool_calls.is_none()
                            && c.finish_reason.is_none()
                    })
                {
                    continue;
                }
                if tx.send(StreamItem::Chunk(chunk.into())).await.is_err() {
                    return; // the client left
                }
            }
            Ok(None) => {
                let t = now();
                if let Some(rt) = inner.deployments.get(dep_index) {
                    rt.record_outcome(
                        t,
                        None,
                        t.saturating_duration_since(started),
                        crate::routing::Timing::StreamEnd,
                    );
                }
                if continue_pending {
                    continue_pending = false;
                    continuations += 1;
                    let mut cont = call.clone();
                    cont.anthropic_original = None;
                    cont.request = crate::content::continuation(&call.request, &partial);
                    // Within the request's deadline; past it, end flagged as cut.
                    cont.options.timeout = stream.time_left();
                    let mut meta = Meta::new(&call.options.request_id, &route.name);
                    let next = match cont.options.timeout {
                        Some(_) => {
                            // Boxed: a rare path that would otherwise make
                            // every stream's pump future as large as a pipeline's.
                            Box::pin(pipeline::run(
                                &inner,
                                &cont,
                                &route,
                                Mode::Stream,
                                None,
                                &mut meta,
                            ))
                            .await
                            .ok()
                        }
                        None => None,
                    };
                    if let Some((Success::Stream(s), di)) = next {
                        stream = s;
                        dep_index = di;
                        suppress_role = true;
                        started = now();
                        continue;
                    }
                    // No continuation: end cleanly, flagged as cut.
                    let mut chunk = crate::text_chunk(
                        stream_id.as_deref().unwrap_or("chatcmpl-keel"),
                        &call.request.model,
                        "",
                    );
                    chunk.choices[0].delta.content = None;
                    chunk.choices[0].finish_reason = Some("length".into());
                    chunk.usage = usage_sum.clone();
                    let _ = tx.send(StreamItem::Chunk(chunk.into())).await;
                }
                return;
            }
            Err(c) => {
                let t = now();
                let failed_name = inner
                    .deployments
                    .get(dep_index)
                    .map(|d| d.spec.name.clone())
                    .unwrap_or_default();
                if let Some(rt) = inner.deployments.get(dep_index) {
                    rt.record_outcome(
                        t,
                        Some(c.class),
                        t.saturating_duration_since(started),
                        crate::routing::Timing::StreamEnd,
                    );
                }
                inner.counters.stream_breaks.fetch_add(1, Ordering::Relaxed);
                inner.metrics.stream_break(dep_index, c.class);
                warn!(
                    request_id = %call.options.request_id,
                    deployment = %failed_name,
                    class = c.class.as_str(),
                    partial_chars = partial.len(),
                    "stream broke after the first byte"
                );
                // The resume shares the request's deadline: a stream that
                // broke late gets only what is left of it, and none at all
                // once it has passed.
                let left = stream.time_left();
                if route.policy.stream_failure == StreamFailure::Resume
                    && resumed < 2
                    && left.is_some()
                {
                    resumed += 1;
                    let mut cont = call.clone();
                    cont.anthropic_original = None;
                    cont.request = crate::content::continuation(&call.request, &partial);
                    cont.options.timeout = left;
                    let mut meta = Meta::new(&call.options.request_id, &route.name);
                    match Box::pin(pipeline::run(
                        &inner,
                        &cont,
                        &route,
                        Mode::Stream,
                        Some(dep_index),
                        &mut meta,
                    ))
                    .await
                    {
                        Ok((Success::Stream(s), di)) => {
                            inner
                                .counters
                                .stream_resumes
                                .fetch_add(1, Ordering::Relaxed);
                            inner.metrics.stream_resumed(&route.name);
                            stream = s;
                            dep_index = di;
                            suppress_role = true;
                            started = now();
                            continue;
                        }
                        Ok((Success::Full(resp), _)) => {
                            // Static tier: send its text as the rest.
                            if let Some(text) = resp.get().text() {
                                let mut chunk = crate::text_chunk(
                                    stream_id.as_deref().unwrap_or("chatcmpl-keel"),
                                    &call.request.model,
                                    text,
                                );
                                chunk.choices[0].finish_reason = Some("stop".into());
                                let _ = tx.send(StreamItem::Chunk(chunk.into())).await;
                            }
                            return;
                        }
                        Err(e) => {
                            let _ = tx
                                .send(StreamItem::Error {
                                    class: c.class,
                                    message: format!("stream from {failed_name} broke ({}) and could not be resumed: {}", c.class.as_str(), e.message),
                                })
                                .await;
                            return;
                        }
                    }
                }
                let _ = tx
                    .send(StreamItem::Error {
                        class: c.class,
                        message: format!(
                            "stream from {failed_name} broke after the first byte: {}",
                            c.message.unwrap_or_else(|| c.class.as_str().to_string())
                        ),
                    })
                    .await;
                return;
            }
        }
    }
}

/// Counts one round's usage, on the deployment that wrote it (not the
/// running sum), and charges its cost.
async fn charge(inner: &Inner, call: &ChatCall, dep_index: usize, u: &keel_wire::openai::Usage) {
    inner
        .metrics
        .usage(dep_index, u.prompt_tokens, u.completion_tokens);
    // Boxed: once per stream, and its store write is a large future.
    crate::boxed_in_place(|| crate::cost::charge_stream(inner, call, dep_index, u)).await;
}
