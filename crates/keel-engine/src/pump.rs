//! The stream pump: forwards an open stream's chunks to the client's queue
//! (an OpenAI chunk it changes only in `model` passes as the provider's own
//! bytes, any other as a canonical chunk) and, when the stream ends cut or
//! breaks, asks the chain for the rest of the answer on the rules of
//! [`decide`]: a continuation of a `length` finish, a resume on another
//! deployment. A broken stream never looks like a clean end.

use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use keel_policy::Classification;
use keel_wire::openai::{ChatChunk, Usage};
use tracing::warn;

use crate::call::{
    ChatCall, ClientApi, EngineError, ItemQueue, RequestReport, StreamChunk, StreamItem,
};
use crate::config::Route;
use crate::outcome::{Mode, Success};
use crate::routing::Timing;
use crate::stream::{NativeEvent, OpenStream, RawChunk, Upcoming};
use crate::{chain, content, decide, now, EngineState};

/// Pumps `stream` into `tx`, the reader's queue; resumes on another
/// deployment when it breaks. `hold` (a timer, a tenant's slot) is dropped
/// when the pump ends.
pub(crate) async fn pump<H: Send>(
    inner: Arc<EngineState>,
    call: Box<ChatCall>,
    stream: Box<OpenStream>,
    dep_index: usize,
    tx: ItemQueue,
    hold: H,
    trace: Option<crate::traces::Open>,
) {
    let _hold = hold;
    let Some(route) = inner.config.routes.get(&call.request().model).cloned() else {
        return;
    };
    // The pump borrows what this future owns: the call and the route are
    // not moved again.
    let mut p = Pump::new(&inner, &call, &route, stream, dep_index, tx);
    p.trace = trace;
    loop {
        // Per chunk, the decisions are plain functions and the loop does
        // the awaiting: no future per chunk.
        let next = match p.stream.next_chunk().await {
            Ok(Some(Upcoming::Raw(mut raw))) => match p.pass_through(&mut raw) {
                Some((usage, send_at)) => {
                    if let Some(u) = usage {
                        p.add_usage(&u).await;
                    }
                    if let Some(at) = send_at {
                        let chunk = StreamChunk::raw(raw.json, at, p.model_json.clone());
                        p.tx.send(StreamItem::Chunk(chunk)).await;
                    }
                    continue;
                }
                None => raw.parse().map(Some),
            },
            Ok(Some(Upcoming::Native(ev))) => match p.pass_native(*ev).await {
                Some(chunk) => Ok(Some(chunk)),
                None => continue,
            },
            Ok(Some(Upcoming::Unreadable(c))) => Err(c),
            Ok(Some(Upcoming::Parsed(chunk))) => Ok(Some(*chunk)),
            Ok(None) => Ok(None),
            Err(c) => Err(c),
        };
        let more = match next {
            Ok(Some(mut chunk)) => {
                let usage = chunk.usage.take();
                if let Some(u) = &usage {
                    p.add_usage(u).await;
                }
                if let Some(chunk) = p.forward(chunk, usage.is_some()) {
                    p.tx.send(StreamItem::Chunk(chunk.into())).await;
                }
                true
            }
            Ok(None) => p.on_end().await,
            Err(c) => p.on_break(c).await,
        };
        if !more {
            return;
        }
    }
}

/// A raw chunk passed through: the usage it carried, and where its `model`
/// lies when it is sent.
type Passed = (Option<Box<Usage>>, Option<Range<usize>>);

/// A stream as the pump forwards it.
struct Pump<'a> {
    inner: &'a Arc<EngineState>,
    call: &'a ChatCall,
    route: &'a Route,
    tx: ItemQueue,
    stream: Box<OpenStream>,
    dep_index: usize,
    /// When the current round's stream opened.
    started: Instant,
    /// The answer's text so far, for a resume or continuation (UTF-8, in
    /// bytes: raw chunks add their text's bytes without a second check).
    partial: Vec<u8>,
    /// One id for the whole answer, whichever deployment wrote it.
    stream_id: Option<String>,
    resumed: u32,
    /// A follow-up's stream: its role chunk is not sent again.
    suppress_role: bool,
    /// Truncation policy `continue`: a `length` finish is held back, and
    /// the rest is asked for when the stream ends.
    continuations: u32,
    continue_pending: bool,
    /// Usage summed over rounds.
    usage_sum: Option<Usage>,
    /// Output tokens of the current round alone, for the client-limit rule.
    round_output: Option<u32>,
    /// The route's name as a JSON string, spliced into each passed-through chunk.
    model_json: Arc<str>,
    /// Whether the client gets usage (see [`Pump::new`]).
    client_usage: bool,
    /// The request's trace, ended when the pump is (`None`: traces off).
    trace: Option<crate::traces::Open>,
}

impl<'a> Pump<'a> {
    fn new(
        inner: &'a Arc<EngineState>,
        call: &'a ChatCall,
        route: &'a Route,
        stream: Box<OpenStream>,
        dep_index: usize,
        tx: ItemQueue,
    ) -> Pump<'a> {
        let model_json: Arc<str> = serde_json::Value::from(call.request().model.as_str())
            .to_string()
            .into();
        // Keel asks every OpenAI-style provider for the usage chunk (cost,
        // limits); an OpenAI client that did not ask gets no usage: a chunk
        // without choices breaks the common `chunk.choices[0]` loop. One that
        // asked gets it even from a provider that sends none (Keel's estimate).
        let client_usage = match call.api {
            ClientApi::OpenAi => call.request().wants_stream_usage(),
            // Both build their final answer from the usage.
            ClientApi::Anthropic | ClientApi::Responses | ClientApi::Embeddings => true,
        };
        Pump {
            inner,
            call,
            route,
            tx,
            stream,
            dep_index,
            started: now(),
            partial: Vec::with_capacity(256),
            stream_id: None,
            resumed: 0,
            suppress_role: false,
            continuations: 0,
            continue_pending: false,
            usage_sum: None,
            round_output: None,
            model_json,
            client_usage,
            trace: None,
        }
    }

    /// Whether `raw` passes as its own bytes, the pump changing nothing in
    /// it but `model`: then the usage it carried, to count, and where its
    /// `model` lies, unless it is a usage-only chunk the client did not ask
    /// for. `None`: it must be parsed.
    fn pass_through(&mut self, raw: &mut RawChunk) -> Option<Passed> {
        let content = &self.route.policy.content;
        let unchanged = self.call.api == ClientApi::OpenAi
            && !self.suppress_role
            && !self.continue_pending
            && (raw.usage.is_none() || self.usage_sum.is_none())
            && !(raw.length && decide::may_continue(content, self.continuations, false))
            && self.stream_id.as_deref().is_none_or(|id| raw.id_is(id));
        let at = raw.model_at.clone().filter(|_| unchanged)?;
        if self.stream_id.is_none() {
            self.stream_id = Some(raw.id());
        }
        if let (Some(o), true) = (&mut self.trace, raw.finished) {
            let view = keel_wire::chunk_view::ChunkView::parse(&raw.json).ok();
            let reason = view
                .as_ref()
                .and_then(|v| v.choices.iter().find_map(|c| c.finish_reason.as_deref()));
            if let Some(f) = reason {
                o.finished_with(f);
            }
        }
        let usage = raw.usage.take();
        if raw.no_choices && !self.client_usage {
            return Some((usage, None));
        }
        if let Some(t) = raw.content() {
            self.partial.extend_from_slice(t);
        }
        Some((usage, Some(at)))
    }

    /// Counts one round's usage and charges it on its deployment.
    async fn add_usage(&mut self, u: &Usage) {
        self.round_output = Some(u.completion_tokens);
        content::add_usage(&mut self.usage_sum, Some(u));
        charge(self.inner, self.call, self.dep_index, u).await;
    }

    /// Passes a native Responses event to a Responses client as it is,
    /// when the pump changes nothing in what it says (the first round of
    /// the answer, no `length` finish held back for a continuation); its
    /// chunk is counted as any other. Otherwise the chunk it reads as, to
    /// forward as a canonical chunk (`None`: it has no chat reading, and
    /// the event is dropped).
    async fn pass_native(&mut self, ev: NativeEvent) -> Option<ChatChunk> {
        let NativeEvent { event, chunk } = ev;
        let content = &self.route.policy.content;
        let held = |c: &ChatChunk| {
            c.choices.iter().any(|ch| {
                ch.finish_reason.as_deref() == Some("length")
                    && decide::may_continue(content, self.continuations, false)
            })
        };
        let passes = self.call.api == ClientApi::Responses
            && !self.suppress_role
            && !self.continue_pending
            && chunk
                .as_ref()
                .is_none_or(|c| (c.usage.is_none() || self.usage_sum.is_none()) && !held(c));
        if !passes {
            return chunk;
        }
        let counted = match chunk {
            Some(mut c) => {
                let usage = c.usage.take();
                if let Some(u) = &usage {
                    self.add_usage(u).await;
                }
                self.forward(c, usage.is_some())
            }
            None => None,
        };
        let chunk = counted.unwrap_or_else(|| {
            let mut c = self.text_chunk("");
            c.choices.clear();
            c
        });
        let item = StreamItem::Chunk(StreamChunk::native(event, chunk));
        self.tx.send(item).await;
        None
    }

    /// A parsed chunk under the answer's id and the route's model, if it
    /// is sent (`had_usage`: it carried usage, counted already).
    fn forward(&mut self, mut chunk: ChatChunk, had_usage: bool) -> Option<ChatChunk> {
        if had_usage {
            if self.continue_pending {
                if chunk.choices.is_empty() {
                    return None;
                }
            } else {
                chunk.usage = self.usage_sum.clone();
            }
        }
        if !self.client_usage {
            chunk.usage = None;
            if chunk.choices.is_empty() {
                return None;
            }
        }
        let content = &self.route.policy.content;
        for ch in &mut chunk.choices {
            if ch.finish_reason.as_deref() == Some("length")
                && decide::may_continue(content, self.continuations, false)
            {
                ch.finish_reason = None;
                self.continue_pending = true;
            }
        }
        // One id and model for the whole answer, whichever deployment wrote it.
        match &self.stream_id {
            Some(id) => chunk.id = id.clone(),
            None => self.stream_id = Some(chunk.id.clone()),
        }
        chunk.model = self.call.request().model.clone();
        if let Some(o) = &mut self.trace {
            if let Some(f) = chunk
                .choices
                .iter()
                .find_map(|c| c.finish_reason.as_deref())
            {
                o.finished_with(f);
            }
        }
        for ch in &mut chunk.choices {
            if let Some(t) = &ch.delta.content {
                self.partial.extend_from_slice(t.as_bytes());
            }
            if self.suppress_role {
                ch.delta.role = None;
            }
        }
        if self.suppress_role
            && chunk.usage.is_none()
            && chunk.choices.iter().all(|c| {
                c.delta.content.is_none()
                    && c.delta.tool_calls.is_none()
                    && c.finish_reason.is_none()
            })
        {
            return None;
        }
        Some(chunk)
    }

    /// The stream ended: continues a held `length` finish, else ends the
    /// answer (with Keel's usage estimate when the provider sent none).
    /// Whether the pump goes on.
    async fn on_end(&mut self) -> bool {
        self.record(None, Timing::StreamEnd);
        if self.continue_pending {
            self.continue_pending = false;
            self.continuations += 1;
            if self.continue_cut().await {
                return true;
            }
        }
        if self.usage_sum.is_none() {
            self.estimate_usage().await;
        }
        false
    }

    /// Asks for the rest of an answer whose `length` finish was held back;
    /// without one, ends it cleanly, flagged as cut. Whether it continues.
    async fn continue_cut(&mut self) -> bool {
        // An answer cut by the client's own limit ends there.
        let content = &self.route.policy.content;
        let asked = self.call.request().effective_max_tokens();
        let client_cut = !content.continue_past_client_limit
            && self.inner.deployments.get(self.dep_index).is_none_or(|rt| {
                decide::client_cut(content, &rt.spec, self.call.api, asked, self.round_output)
            });
        // Within the request's deadline; past it, end flagged as cut.
        let left = self.stream.time_left();
        if left.is_some() && !client_cut {
            if let Ok((Success::Stream(s), di)) = self.follow_up(left, None).await {
                self.switch_to(s, di);
                return true;
            }
        }
        let mut chunk = self.text_chunk("");
        chunk.choices[0].delta.content = None;
        chunk.choices[0].finish_reason = Some("length".into());
        chunk.usage = self.usage_sum.clone().filter(|_| self.client_usage);
        self.tx.send(StreamItem::Chunk(chunk.into())).await;
        false
    }

    /// The provider reported no usage (some servers ignore
    /// `stream_options`): Keel's own count, marked estimated.
    async fn estimate_usage(&mut self) {
        let u = estimated_usage(self.call, self.partial.len());
        self.inner
            .metrics
            .usage_estimated(self.dep_index, u.prompt_tokens, u.completion_tokens);
        charge(self.inner, self.call, self.dep_index, &u).await;
        if self.client_usage && self.call.api != ClientApi::Anthropic {
            let mut chunk = self.text_chunk("");
            chunk.choices.clear();
            chunk.usage = Some(u);
            self.tx.send(StreamItem::Chunk(chunk.into())).await;
        }
    }

    /// The stream broke after its first token: resumes on another
    /// deployment, or ends with an error item. Whether the pump goes on.
    async fn on_break(&mut self, c: Classification) -> bool {
        let inner = self.inner.clone();
        let failed_name = inner
            .deployments
            .get(self.dep_index)
            .map(|d| d.spec.name.clone())
            .unwrap_or_default();
        self.record(Some(&c), Timing::StreamEnd);
        inner.counters.stream_breaks.fetch_add(1, Ordering::Relaxed);
        inner.metrics.stream_break(self.dep_index, c.class);
        warn!(
            request_id = %self.call.options.request_id,
            deployment = %failed_name,
            class = c.class.as_str(),
            partial_chars = self.partial.len(),
            commit = "after commit",
            "stream broke after the first byte"
        );
        // The resume shares the request's deadline: a stream that broke
        // late gets only what is left of it, and none at all once it has passed.
        let left = self.stream.time_left();
        if !decide::may_resume(self.route.policy.stream_failure, self.resumed, left) {
            let message = format!(
                "stream from {failed_name} broke after the first byte: {}",
                c.message.unwrap_or_else(|| c.class.as_str().to_string())
            );
            if let Some(o) = &mut self.trace {
                o.failed(c.class);
            }
            let item = StreamItem::Error {
                class: c.class,
                message,
            };
            self.tx.send(item).await;
            return false;
        }
        self.resumed += 1;
        match self.follow_up(left, Some(self.dep_index)).await {
            Ok((Success::Stream(s), di)) => {
                inner
                    .counters
                    .stream_resumes
                    .fetch_add(1, Ordering::Relaxed);
                inner.metrics.stream_resumed(&self.route.name);
                self.switch_to(s, di);
                return true;
            }
            Ok((Success::Full(resp), _)) => {
                // Static tier: send its text as the rest.
                if let Some(text) = resp.get().text() {
                    let mut chunk = self.text_chunk(text);
                    chunk.choices[0].finish_reason = Some("stop".into());
                    self.tx.send(StreamItem::Chunk(chunk.into())).await;
                }
            }
            // A stream's chain never answers plainly.
            Ok((Success::Plain(_), _)) => {}
            Err(e) => {
                if let Some(o) = &mut self.trace {
                    o.failed(c.class);
                }
                let message = format!(
                    "stream from {failed_name} broke ({}) and could not be resumed: {}",
                    c.class.as_str(),
                    e.message
                );
                let item = StreamItem::Error {
                    class: c.class,
                    message,
                };
                self.tx.send(item).await;
            }
        }
        false
    }

    /// Asks the chain for the rest of the answer (a continuation, or a
    /// resume without `exclude`), within `left` of the request's deadline.
    async fn follow_up(
        &mut self,
        left: Option<Duration>,
        exclude: Option<usize>,
    ) -> Result<(Success, usize), EngineError> {
        let partial = String::from_utf8_lossy(&self.partial);
        let rest = content::continuation(self.call.request(), &partial);
        let mut cont = self.call.follow_up(rest);
        cont.options.timeout = left;
        let mut meta = RequestReport::new(&self.call.options.request_id, &self.route.name);
        if let Some(o) = &mut self.trace {
            o.lend(
                &mut meta,
                if exclude.is_some() {
                    "resume"
                } else {
                    "continuation"
                },
            );
        }
        // Boxed: a rare path that would otherwise make every stream's pump
        // future as large as a chain's.
        let mut result = Box::pin(chain::run(
            self.inner,
            &cont,
            self.route,
            Mode::Stream,
            exclude,
            &mut meta,
        ))
        .await;
        if let Some(o) = &mut self.trace {
            match &mut result {
                Err(e) if meta.trace.is_none() => o.take_back(&mut e.meta),
                _ => o.take_back(&mut meta),
            }
        }
        result
    }

    /// Goes on with the follow-up's stream `s` from deployment `di`.
    fn switch_to(&mut self, s: Box<OpenStream>, di: usize) {
        self.stream = s;
        self.dep_index = di;
        self.suppress_role = true;
        self.started = now();
        self.round_output = None;
    }

    /// Feeds the round's end to its deployment's breaker and latency.
    fn record(&mut self, failure: Option<&Classification>, timing: Timing) {
        if let Some(o) = &mut self.trace {
            o.round_ended(
                failure.map(|c| c.class),
                self.usage_sum.as_ref(),
                self.stream_id.as_deref(),
            );
        }
        let t = now();
        if let Some(rt) = self.inner.deployments.get(self.dep_index) {
            let latency = t.saturating_duration_since(self.started);
            rt.record_outcome(t, failure.map(|c| c.class), latency, timing);
        }
    }

    /// A chunk of the answer carrying `text`.
    fn text_chunk(&self, text: &str) -> ChatChunk {
        crate::text_chunk(
            self.stream_id.as_deref().unwrap_or("chatcmpl-keel"),
            &self.call.request().model,
            text,
        )
    }
}

/// Keel's estimate of a streamed answer's usage: the prompt as the
/// capacity check counts it, and four bytes of text a token.
fn estimated_usage(call: &ChatCall, text_bytes: usize) -> Usage {
    let prompt_tokens = crate::requirements::estimate_prompt_tokens(call.request());
    let completion_tokens = u32::try_from(text_bytes.div_ceil(4)).unwrap_or(u32::MAX);
    Usage {
        prompt_tokens,
        completion_tokens,
        total_tokens: prompt_tokens.saturating_add(completion_tokens),
        ..Default::default()
    }
}

/// Counts one round's usage on the deployment that wrote it and charges its cost.
async fn charge(inner: &EngineState, call: &ChatCall, dep_index: usize, u: &Usage) {
    inner
        .metrics
        .usage(dep_index, u.prompt_tokens, u.completion_tokens);
    // Boxed: once per stream, and its store write is a large future.
    crate::boxed_in_place(|| crate::cost::charge_stream(inner, call, dep_index, u)).await;
}
