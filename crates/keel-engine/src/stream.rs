//! Upstream streams: an upstream stream is "open" once its first token has
//! arrived; until then every failure is retried invisibly by the chain.
//! After that, [`crate::pump`] forwards its chunks as [`OpenStream`] reads
//! them ([`Upcoming`]).

use std::collections::VecDeque;
use std::ops::Range;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use keel_policy::{classify_response, Classification, TransportError};
use keel_wire::anthropic::StreamEvent;
use keel_wire::bedrock::{ConverseItem, ConverseStreamReader};
use keel_wire::chunk_view::{same_but_text, ChunkView};
use keel_wire::openai::{ChatChunk, Usage};
use keel_wire::sse::SseDecoder;
use keel_wire::translate::AnthropicToOpenAiStream;

use crate::config::{CommitWindow, Deployment, ProviderKind};
use crate::upstream::{self, transport_failure};

type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, hyper::Error>> + Send>>;

enum Converter {
    OpenAi,
    Anthropic(Box<AnthropicToOpenAiStream>),
    Gemini(Box<keel_wire::gemini::GeminiToOpenAiStream>),
    /// Bedrock's event-stream frames, read as Anthropic events.
    Bedrock(Box<(ConverseStreamReader, AnthropicToOpenAiStream)>),
    /// A native Responses deployment's events.
    Responses(Box<keel_wire::translate::ResponsesToChatStream>),
}

/// A chunk read from an upstream stream, not yet taken by the pump.
pub(crate) enum Upcoming {
    /// A chunk converted from another API (boxed: the raw one is the
    /// common case).
    Parsed(Box<ChatChunk>),
    /// An OpenAI upstream's chunk as its JSON bytes, with what the pump
    /// decides on read from them once, as it was decoded.
    Raw(RawChunk),
    /// A chunk that is not a readable chunk: the stream is broken there.
    Unreadable(Classification),
    /// A native Responses deployment's event and the chunk it reads as, if
    /// any: a Responses client may get the event itself.
    Native(Box<NativeEvent>),
}

/// An event of a native Responses stream.
pub(crate) struct NativeEvent {
    /// Its JSON, as the provider sent it.
    pub(crate) event: Bytes,
    /// The canonical chunk it reads as (`None`: it has no chat reading).
    pub(crate) chunk: Option<ChatChunk>,
}

impl Upcoming {
    fn has_payload(&self) -> Result<bool, Classification> {
        match self {
            Upcoming::Parsed(c) => Ok(c.has_payload()),
            Upcoming::Raw(c) => Ok(c.payload),
            Upcoming::Unreadable(c) => Err(c.clone()),
            Upcoming::Native(n) => Ok(n.chunk.as_ref().is_some_and(ChatChunk::has_payload)),
        }
    }
}

/// What a chunk tells the commit window besides its text.
#[derive(Default, Clone, Copy)]
struct Marks {
    tools: bool,
    refusal: bool,
    /// A `content_filter` finish.
    filtered: bool,
    /// Any finish reason.
    finished: bool,
}

impl Marks {
    fn of(view: &ChunkView<'_>) -> Marks {
        let mut m = Marks::default();
        for c in &view.choices {
            m.tools |= c.delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty());
            m.refusal |= c.delta.refusal.as_ref().is_some_and(|r| !r.is_empty());
            m.filtered |= c.finish_reason.as_deref() == Some("content_filter");
            m.finished |= c.finish_reason.is_some();
        }
        m
    }

    fn of_chunk(chunk: &ChatChunk) -> Marks {
        let mut m = Marks::default();
        for c in &chunk.choices {
            m.tools |= c.delta.tool_calls.as_ref().is_some_and(|t| !t.is_empty());
            m.refusal |= c.delta.refusal.as_ref().is_some_and(|r| !r.is_empty());
            m.filtered |= c.finish_reason.as_deref() == Some("content_filter");
            m.finished |= c.finish_reason.is_some();
        }
        m
    }
}

/// Text of a stream's prefix kept for judging: enough for the refusal
/// phrases (the first 80 characters are compared).
const PREFIX_TEXT: usize = 320;

/// What a stream said before it was committed to the client.
#[derive(Default, Debug)]
pub(crate) struct Prefix {
    /// Its text (at most [`PREFIX_TEXT`] bytes kept).
    pub text: String,
    /// Characters of text.
    pub chars: usize,
    pub tools: bool,
    /// A refusal field.
    pub refusal: bool,
    /// A `content_filter` finish.
    pub filtered: bool,
    /// A finish reason or the stream's end came within the window.
    pub ended: bool,
}

impl Prefix {
    fn add_text(&mut self, t: &str) {
        self.chars += t.chars().count();
        if self.text.len() < PREFIX_TEXT {
            self.text.push_str(t);
        }
    }

    fn mark(&mut self, m: Marks) {
        self.tools |= m.tools;
        self.refusal |= m.refusal;
        self.filtered |= m.filtered;
        self.ended |= m.finished;
    }

    /// Adds what `c` says.
    fn add(&mut self, c: &Upcoming) -> Result<(), Classification> {
        match c {
            Upcoming::Raw(raw) => {
                // Text the chunk view read: UTF-8.
                if let Some(t) = raw.content().and_then(|t| std::str::from_utf8(t).ok()) {
                    self.add_text(t);
                }
                self.mark(raw.marks);
            }
            Upcoming::Parsed(chunk) => self.add_chunk(chunk),
            Upcoming::Native(n) => {
                if let Some(chunk) = &n.chunk {
                    self.add_chunk(chunk);
                }
            }
            Upcoming::Unreadable(c) => return Err(c.clone()),
        }
        Ok(())
    }

    fn add_chunk(&mut self, chunk: &ChatChunk) {
        for choice in &chunk.choices {
            if let Some(t) = &choice.delta.content {
                self.add_text(t);
            }
        }
        self.mark(Marks::of_chunk(chunk));
    }

    /// Whether the window has seen enough (`chars` characters needed).
    fn decided(&self, chars: usize) -> bool {
        self.chars >= chars || self.tools || self.refusal || self.filtered || self.ended
    }
}

/// An OpenAI chunk's bytes and what a [`ChunkView`] read of them: the
/// view borrows the decoder's buffer, so its strings are kept as ranges
/// of the bytes (or, when they had escapes, as text).
pub(crate) struct RawChunk {
    pub(crate) json: Bytes,
    id: Text,
    /// Where `model`'s value lies, quotes included (`None`: it had escapes,
    /// or the chunk spans lines: only a one-line chunk passes through as
    /// its bytes, so it is one SSE `data:` line as it is).
    pub(crate) model_at: Option<Range<usize>>,
    pub(crate) usage: Option<Box<Usage>>,
    /// Whether it carries something a client waits for.
    payload: bool,
    /// Whether a choice ends with `finish_reason` `length`.
    pub(crate) length: bool,
    /// Whether a choice carries a finish reason (a traced request reads
    /// which from the bytes: a flag keeps the chunk as small as it was).
    pub(crate) finished: bool,
    /// What the commit window judges (see [`Prefix`]).
    marks: Marks,
    /// Whether it has no choices (a usage-only chunk).
    pub(crate) no_choices: bool,
    /// The text its choices add, in order.
    content: Option<Text>,
}

/// A string of a [`RawChunk`].
#[derive(Clone)]
enum Text {
    At(Range<usize>),
    Owned(Box<str>),
}

impl RawChunk {
    /// What `view` (read from `json`) decides, with the template it makes.
    fn new(mut view: ChunkView<'_>, json: Bytes) -> (Option<Template>, RawChunk) {
        let usage = view.usage.take().map(Box::new);
        let text = |t: &std::borrow::Cow<'_, str>| match view.span(t) {
            Some(at) => Text::At(at),
            None => Text::Owned(t.as_ref().into()),
        };
        let mut contents = view.choices.iter().filter_map(|c| c.delta.content.as_ref());
        let content = match (contents.next(), contents.next()) {
            (None, _) => None,
            (Some(one), None) => Some(text(one)),
            (Some(first), Some(second)) => {
                let mut all = format!("{first}{second}");
                all.extend(contents.map(|t| t.as_ref()));
                Some(Text::Owned(all.into()))
            }
        };
        let chunk = RawChunk {
            marks: Marks::of(&view),
            id: text(&view.id),
            model_at: view
                .model_span()
                // An SSE decoder's data holds no `\r`: it ends lines.
                .filter(|_| memchr::memchr(b'\n', &json).is_none()),
            payload: view.has_payload(),
            length: view.finishes_with("length"),
            finished: view.choices.iter().any(|c| c.finish_reason.is_some()),
            no_choices: view.choices.is_empty(),
            usage,
            content,
            json,
        };
        (Template::of(&view, &chunk), chunk)
    }

    /// The bytes of one of its strings: text the view read, so UTF-8.
    fn bytes<'a>(&'a self, t: &'a Text) -> &'a [u8] {
        match t {
            // A range within the bytes (the view read the text there).
            Text::At(at) => self.json.get(at.clone()).unwrap_or_default(),
            Text::Owned(t) => t.as_bytes(),
        }
    }

    pub(crate) fn id_is(&self, id: &str) -> bool {
        self.bytes(&self.id) == id.as_bytes()
    }

    pub(crate) fn id(&self) -> String {
        String::from_utf8_lossy(self.bytes(&self.id)).into_owned()
    }

    /// The chunk, parsed (when it cannot pass as its bytes).
    pub(crate) fn parse(&self) -> Result<ChatChunk, Classification> {
        serde_json::from_slice::<ChatChunk>(&self.json).map_err(|e| unreadable_chunk(&e))
    }

    /// The text its choices add, as UTF-8 bytes.
    pub(crate) fn content(&self) -> Option<&[u8]> {
        self.content.as_ref().map(|t| self.bytes(t))
    }
}

fn unreadable_chunk(e: &serde_json::Error) -> Classification {
    transport_failure(
        TransportError::BodyCut,
        &format!("unreadable stream chunk: {e}"),
    )
}

/// Chunks a stream's queue has room for before it grows (an upstream
/// packet often carries several).
const PENDING: usize = 16;

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
    /// The last token chunk read in full, which the next may repeat but
    /// for its text.
    template: Option<Template>,
}

/// A chunk that carries only text (one choice; no role, tool call,
/// refusal, finish reason or usage): a chunk that is the same bytes but
/// for that text reads the same but for it ([`same_but_text`]).
struct Template {
    json: Bytes,
    /// Where its text lies in `json`.
    text: Range<usize>,
    id: Text,
    model_at: Option<Range<usize>>,
}

impl Template {
    /// The template `chunk` (just read from `view`) makes, if it is one.
    fn of(view: &ChunkView<'_>, chunk: &RawChunk) -> Option<Template> {
        let [only] = view.choices.as_slice() else {
            return None;
        };
        let d = &only.delta;
        if d.role.is_some()
            || d.tool_calls.is_some()
            || d.refusal.is_some()
            || only.finish_reason.is_some()
            || chunk.usage.is_some()
        {
            return None;
        }
        let Some(Text::At(text)) = &chunk.content else {
            return None;
        };
        Some(Template {
            json: chunk.json.clone(),
            text: text.clone(),
            id: chunk.id.clone(),
            model_at: chunk.model_at.clone(),
        })
    }

    /// `data` read as this template's chunk with other text, if it is one;
    /// its bytes are copied into `raw`'s buffer. The template becomes it.
    fn apply(&mut self, data: &str, raw: &mut BytesMut) -> Option<RawChunk> {
        let text = same_but_text(&self.json, self.text.clone(), data)?;
        // What lies after the text moved by the change in its length.
        let (old_end, new_end) = (self.text.end, text.end);
        let shift = |r: &Range<usize>| match r.start >= old_end {
            true => r.start - old_end + new_end..r.end - old_end + new_end,
            false => r.clone(),
        };
        let id = match &self.id {
            Text::At(r) => Text::At(shift(r)),
            Text::Owned(t) => Text::Owned(t.clone()),
        };
        let model_at = self.model_at.as_ref().map(shift);
        let json = copy_into(raw, data);
        *self = Template {
            json: json.clone(),
            text: text.clone(),
            id: id.clone(),
            model_at: model_at.clone(),
        };
        Some(RawChunk {
            json,
            id,
            model_at,
            usage: None,
            payload: !text.is_empty(),
            length: false,
            finished: false,
            marks: Marks::default(),
            no_choices: false,
            content: Some(Text::At(text)),
        })
    }
}

/// `data`'s bytes as a slice of `raw`'s shared buffer (a new buffer when
/// it is full): the chunks share an allocation, not one each.
fn copy_into(raw: &mut BytesMut, data: &str) -> Bytes {
    if raw.capacity() - raw.len() < data.len() {
        raw.reserve(data.len().max(RAW_BUFFER));
    }
    raw.extend_from_slice(data.as_bytes());
    raw.split().freeze()
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
    /// What it said within its commit window (`None`: no window).
    prefix: Option<Prefix>,
}

/// The time limits of an upstream stream.
#[derive(Clone, Copy, Debug)]
pub(crate) struct StreamLimits {
    pub first_token: Duration,
    pub inter_token: Duration,
    /// Until the request's deadline.
    pub remaining: Duration,
}

impl OpenStream {
    /// Sends the request and reads up to the first token within the
    /// limits' `first_token`; the whole stream must end within `remaining`.
    /// Its commit window is read afterwards ([`OpenStream::fill_window`]):
    /// a hedge race is decided at the first token.
    pub(crate) async fn open(
        client: &crate::transport::HttpClient,
        dep: &Deployment,
        body: Vec<u8>,
        limits: StreamLimits,
        schema_tool: Option<&str>,
    ) -> Result<OpenStream, Classification> {
        let (first_token_timeout, remaining) = (limits.first_token, limits.remaining);
        let inter_token_timeout = limits.inter_token;
        let deadline = tokio::time::Instant::now() + remaining;
        let fut = async {
            let resp = upstream::post_to(client, dep, body, true).await?;
            let status = resp.status().as_u16();
            if !(200..300).contains(&status) {
                let headers = resp.headers().clone();
                let body = upstream::read_body(resp).await?;
                return Err(upstream::classify_error(dep.kind, status, &headers, &body));
            }
            let mut s = OpenStream {
                body: Box::pin(crate::transport::body_stream(resp)),
                decoder: SseDecoder::new(),
                events: Events {
                    converter: match dep.kind {
                        ProviderKind::OpenAi if dep.responses.speaks => Converter::Responses(
                            Box::new(keel_wire::translate::ResponsesToChatStream::new(&dep.model)),
                        ),
                        ProviderKind::OpenAi | ProviderKind::Azure => Converter::OpenAi,
                        ProviderKind::Anthropic => Converter::Anthropic(Box::new({
                            let conv = AnthropicToOpenAiStream::new(&dep.model)
                                .with_created(upstream::unix_now());
                            match schema_tool {
                                Some(name) => conv.with_json_schema_tool(name),
                                None => conv,
                            }
                        })),
                        ProviderKind::Gemini => Converter::Gemini(Box::new(
                            keel_wire::gemini::GeminiToOpenAiStream::new(&dep.model)
                                .with_created(upstream::unix_now()),
                        )),
                        ProviderKind::Bedrock => Converter::Bedrock(Box::new((
                            ConverseStreamReader::new(&dep.model),
                            match schema_tool {
                                Some(name) => AnthropicToOpenAiStream::new(&dep.model)
                                    .with_created(upstream::unix_now())
                                    .with_json_schema_tool(name),
                                None => AnthropicToOpenAiStream::new(&dep.model)
                                    .with_created(upstream::unix_now()),
                            },
                        ))),
                    },
                    pending: VecDeque::with_capacity(PENDING),
                    done: false,
                    raw: BytesMut::new(),
                    template: None,
                },
                inter_token_timeout,
                deadline,
                prefix: None,
            };
            // Read until the first chunk that carries something; the
            // chunks stay pending for the pump, in order.
            let mut checked = 0;
            loop {
                let pending = &s.events.pending;
                let mut got = false;
                for c in pending.range(checked..) {
                    if c.has_payload()? {
                        got = true;
                        break;
                    }
                }
                if got {
                    break;
                }
                checked = pending.len();
                if !s.read_more().await? {
                    return Err(transport_failure(
                        TransportError::BodyCut,
                        "stream ended before the first token",
                    ));
                }
            }
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

    /// Reads on through the commit window: until the prefix decides (see
    /// [`Prefix::decided`]), the stream ends, or the window's time is up.
    /// A failure inside the window is the attempt's failure: nothing has
    /// reached the client.
    /// A refusal phrase longer than the window is compared as far as the
    /// window read.
    pub(crate) async fn fill_window(&mut self, window: CommitWindow) -> Result<(), Classification> {
        let until = tokio::time::Instant::now() + window.after;
        let mut prefix = Prefix::default();
        let mut checked = 0;
        // Usually what came with the first token decides: no timer then.
        if !self.judge_pending(&mut prefix, &mut checked, window.chars)? {
            // One timer for the whole window, not one per read.
            let time_up = tokio::time::sleep_until(until.min(self.deadline));
            tokio::pin!(time_up);
            loop {
                tokio::select! {
                    biased;
                    read = self.read_more() => {
                        read?;
                    }
                    // The window's time is up: what came is judged.
                    () = &mut time_up => break,
                }
                if self.judge_pending(&mut prefix, &mut checked, window.chars)? {
                    break;
                }
            }
        }
        self.prefix = Some(prefix);
        Ok(())
    }

    /// Adds the chunks pending after `checked` to `prefix`: whether it
    /// has seen enough (`chars` characters, a tool call, a refusal, the end).
    fn judge_pending(
        &self,
        prefix: &mut Prefix,
        checked: &mut usize,
        chars: usize,
    ) -> Result<bool, Classification> {
        for c in self.events.pending.range(*checked..) {
            prefix.add(c)?;
        }
        *checked = self.events.pending.len();
        prefix.ended |= self.events.done;
        Ok(prefix.decided(chars))
    }

    /// What the stream said within its commit window.
    pub(crate) fn prefix(&self) -> Option<&Prefix> {
        self.prefix.as_ref()
    }

    /// Reads more bytes until at least one chunk is pending (true) or the
    /// stream ended cleanly (false). A dirty end is an error.
    async fn fill(&mut self) -> Result<bool, Classification> {
        while self.events.pending.is_empty() {
            if !self.read_more().await? {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Reads and decodes the next bytes of the body: false when the
    /// stream's end event has come (nothing more is read), an error when
    /// the body ends without it or breaks.
    async fn read_more(&mut self) -> Result<bool, Classification> {
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
        if let Some(read) = self.events.on_frames(&bytes) {
            return read.map(|()| true);
        }
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
        match failed {
            Some(c) => Err(c),
            None => Ok(true),
        }
    }
}

impl Events {
    /// Reads `bytes` as Bedrock event-stream frames (`None`: the stream is
    /// SSE). An exception event fails the stream there, as an Anthropic
    /// `error` event does.
    fn on_frames(&mut self, bytes: &[u8]) -> Option<Result<(), Classification>> {
        let Converter::Bedrock(b) = &mut self.converter else {
            return None;
        };
        let (reader, conv) = &mut **b;
        let items = match reader.push(bytes) {
            Ok(items) => items,
            Err(e) => return Some(Err(transport_failure(TransportError::BodyCut, &e))),
        };
        for item in items {
            match item {
                ConverseItem::Event(ev) => {
                    if matches!(*ev, StreamEvent::MessageStop) {
                        self.done = true;
                    }
                    self.pending.extend(
                        conv.push(&ev)
                            .into_iter()
                            .map(|c| Upcoming::Parsed(Box::new(c))),
                    );
                }
                ConverseItem::Exception { kind, message } => {
                    let mut c = keel_policy::classify_bedrock(None, &kind, &message);
                    if c.message.is_none() {
                        c.message = Some(format!("{kind} event in stream"));
                    }
                    return Some(Err(c));
                }
            }
        }
        Some(Ok(()))
    }

    fn on_event(&mut self, name: Option<&str>, data: &str) -> Result<(), Classification> {
        match &mut self.converter {
            // Fed by `on_frames`, never by the SSE decoder.
            Converter::Bedrock(_) => {}
            Converter::OpenAi => {
                let trimmed = data.trim();
                if trimmed == "[DONE]" {
                    self.done = true;
                    return Ok(());
                }
                if trimmed.starts_with("{\"error\"") {
                    return Err(in_stream_error(500, trimmed));
                }
                // Read (and checked) here, once, from text the decoder has
                // checked: a token chunk like the last but for its text by
                // comparison, any other in full.
                if let Some(t) = self.template.as_mut() {
                    if let Some(chunk) = t.apply(data, &mut self.raw) {
                        self.pending.push_back(Upcoming::Raw(chunk));
                        return Ok(());
                    }
                }
                let chunk = match ChunkView::parse_str(data) {
                    Ok(view) => {
                        let json = copy_into(&mut self.raw, data);
                        let (template, chunk) = RawChunk::new(view, json);
                        self.template = template;
                        Upcoming::Raw(chunk)
                    }
                    // Taken in its turn: the chunks before it go out first.
                    Err(e) => Upcoming::Unreadable(unreadable_chunk(&e)),
                };
                self.pending.push_back(chunk);
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
            Converter::Gemini(conv) => {
                if data.trim_start().starts_with("{\"error\"") {
                    let status = crate::gemini::stream_error_status(data);
                    let mut c = upstream::classify_error(
                        ProviderKind::Gemini,
                        status,
                        &http::HeaderMap::new(),
                        data.as_bytes(),
                    );
                    c.status = None;
                    return Err(c);
                }
                let ev: keel_wire::gemini::GenerateContentResponse = serde_json::from_str(data)
                    .map_err(|e| {
                        transport_failure(
                            TransportError::BodyCut,
                            &format!("unreadable stream event: {e}"),
                        )
                    })?;
                self.pending.extend(
                    conv.push(&ev)
                        .into_iter()
                        .map(|c| Upcoming::Parsed(Box::new(c))),
                );
                // Gemini sends no end event: the finish ends the stream.
                self.done |= conv.finished();
            }
            Converter::Responses(conv) => {
                use keel_wire::translate::StreamReadError;
                let chunks = conv.push(data).map_err(|e| match e {
                    StreamReadError::Failed(event) => in_stream_error(500, &event),
                    StreamReadError::Unreadable(what) => transport_failure(
                        TransportError::BodyCut,
                        &format!("unreadable stream event: {what}"),
                    ),
                })?;
                self.done |= conv.done();
                // Each event reads as one chunk at most.
                let mut chunks = chunks.into_iter();
                let event = copy_into(&mut self.raw, data);
                let chunk = chunks.next();
                self.pending
                    .push_back(Upcoming::Native(Box::new(NativeEvent { event, chunk })));
                self.pending
                    .extend(chunks.map(|c| Upcoming::Parsed(Box::new(c))));
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

pub(crate) fn in_stream_error(status: u16, body: &str) -> Classification {
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;

    fn events() -> Events {
        Events {
            converter: Converter::OpenAi,
            pending: VecDeque::new(),
            done: false,
            raw: BytesMut::new(),
            template: None,
        }
    }

    const ONE: &str = r#"{"id":"c1","object":"chat.completion.chunk","model":"up","choices":[{"index":0,"delta":{"content":"a\"b"},"finish_reason":null}]}"#;

    /// A chunk is read once, as it is decoded: its id, text and model are
    /// kept as places in its bytes; a chunk whose JSON spans lines does not
    /// pass through as its bytes (it would not be one SSE data line); an
    /// unreadable chunk waits its turn behind the chunks before it.
    #[test]
    fn chunks_are_read_once_and_kept_in_order() {
        let mut ev = events();
        ev.on_event(None, ONE).unwrap();
        let two_lines = ONE.replace(",\"choices\"", ",\n\"choices\"");
        ev.on_event(None, &two_lines).unwrap();
        ev.on_event(
            None,
            r#"{"id":"c1","model":"up","choices":[{"delta":{"content":5}}]}"#,
        )
        .unwrap();
        ev.on_event(None, ONE).unwrap();
        ev.on_event(None, "[DONE]").unwrap();
        assert!(ev.done);
        let kinds: Vec<_> = ev
            .pending
            .iter()
            .map(|u| match u {
                Upcoming::Raw(r) => match r.model_at {
                    Some(_) => "raw",
                    None => "raw, re-encoded",
                },
                Upcoming::Unreadable(_) => "unreadable",
                Upcoming::Parsed(_) => "parsed",
                Upcoming::Native(_) => "native",
            })
            .collect();
        assert_eq!(
            kinds,
            ["raw", "raw, re-encoded", "unreadable", "raw"],
            "{kinds:?}"
        );
        let Some(Upcoming::Raw(first)) = ev.pending.front() else {
            panic!("not raw");
        };
        assert!(first.id_is("c1") && !first.id_is("c2"));
        assert_eq!(first.id(), "c1");
        // The text had an escape: it is kept unescaped, as text of its own.
        assert_eq!(first.content(), Some(&b"a\"b"[..]));
        assert_eq!(&first.json[first.model_at.clone().unwrap()], b"\"up\"");
        assert!(first.payload && !first.length);
    }

    /// What the pump reads of each pending chunk, as text to compare.
    fn readings(ev: &Events) -> Vec<String> {
        ev.pending
            .iter()
            .map(|u| match u {
                Upcoming::Raw(r) => format!(
                    "id={} model={} text={:?} payload={} usage={}",
                    r.id(),
                    r.model_at
                        .clone()
                        .map(|at| String::from_utf8_lossy(&r.json[at]).into_owned())
                        .unwrap_or_default(),
                    r.content().map(|t| String::from_utf8_lossy(t).into_owned()),
                    r.payload,
                    r.usage.is_some()
                ),
                Upcoming::Unreadable(_) => "unreadable".into(),
                Upcoming::Parsed(_) => "parsed".into(),
                Upcoming::Native(_) => "native".into(),
            })
            .collect()
    }

    /// Token chunks that repeat the last but for their text are read by
    /// comparison; they read exactly as a full reading of each reads,
    /// whatever the order of the fields (the model after the text moves
    /// with the text's length), and a chunk that differs elsewhere is read
    /// in full.
    #[test]
    fn token_chunks_like_the_last_read_as_a_full_reading_reads() {
        let chunks = [
            r#"{"id":"c1","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}],"model":"up"}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"},"finish_reason":null}],"model":"up"}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"lo, w"},"finish_reason":null}],"model":"up"}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":""},"finish_reason":null}],"model":"up"}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"or\"ld"},"finish_reason":null}],"model":"up"}"#,
            r#"{"id":"c1","choices":[{"index":0,"delta":{"content":"!"},"finish_reason":null}],"model":"up"}"#,
            r#"{"id":"c2","choices":[{"index":0,"delta":{"content":"?"},"finish_reason":null}],"model":"up"}"#,
            r#"{"id":"c2","choices":[{"index":0,"delta":{"content":"?"},"finish_reason":null}],"model":5}"#,
            r#"{"id":"c2","choices":[{"index":0,"delta":{},"finish_reason":"stop"}],"model":"up"}"#,
            r#"{"id":"c2","choices":[],"model":"up","usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3}}"#,
        ];
        let mut fast = events();
        for c in chunks {
            fast.on_event(None, c).unwrap();
        }
        // The same chunks, each read in full.
        let mut full = events();
        for c in chunks {
            full.template = None;
            full.on_event(None, c).unwrap();
        }
        assert_eq!(readings(&fast), readings(&full));
        assert_eq!(
            readings(&fast)[2],
            r#"id=c1 model="up" text=Some("lo, w") payload=true usage=false"#
        );
        assert_eq!(readings(&fast)[7], "unreadable");
        // Which were read by comparison: those that differ from the last
        // in their text alone, when the last's text had no escape (one
        // with an escape is not kept in place, so makes no template).
        let mut ev = events();
        let mut compared = Vec::new();
        for (i, c) in chunks.iter().enumerate() {
            let mut raw = BytesMut::new();
            if ev
                .template
                .as_mut()
                .and_then(|t| t.apply(c, &mut raw))
                .is_some()
            {
                compared.push(i);
            }
            ev.template = None;
            ev.on_event(None, c).unwrap();
        }
        assert_eq!(compared, [2, 3]);
    }
}
