//! The response cache (docs/design.md §5): exact match on the tenant and the
//! canonicalised request, a TTL per route, the client's `Cache-Control`,
//! streamed answers recorded when they end cleanly and replayed as a
//! stream, and stale-if-error: when the whole chain fails, an expired
//! entry still within `stale_ttl` is served and flagged.
//!
//! **What the key covers.** The route, the API the client speaks and every
//! request field that can change the answer (messages, sampling
//! parameters, tools, response format, unknown fields), serialised with
//! sorted object keys. Not the API key, the request id, `stream` or
//! `stream_options` (a streamed and a whole answer are the same answer),
//! nor `user`/`metadata`. Tenants never share an entry.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use keel_wire::openai::{
    ChatChunk, ChatResponse, Choice, ChunkChoice, Content, Delta, FunctionCallDelta, Message, Role,
    ToolCall, ToolCallDelta,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::call::{
    CacheControl, CacheStatus, ChatCall, ClientApi, EngineError, FullAnswer, ItemQueue,
    RequestReport, StreamItem, StreamItems,
};
use crate::chain;
use crate::config::{CachePolicy, Config, Route};
use crate::outcome::{Mode, Success};
use crate::EngineState;

/// A stored answer: a chat response, or a plain answer's JSON
/// (embeddings).
#[derive(Serialize, Deserialize)]
struct Entry {
    /// Wall-clock time of storage (shared by replicas), in ms since the epoch.
    stored_at_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<ChatResponse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    plain: Option<String>,
}

impl Entry {
    /// The answer it holds, as the chain would have produced it.
    fn success(self) -> Option<Success> {
        match (self.response, self.plain) {
            (Some(r), _) => Some(Success::Full(FullAnswer::new(r))),
            (None, Some(body)) => Some(Success::Plain(crate::outcome::PlainAnswer {
                body: body.into(),
                input_tokens: 0,
                rate_limits: Default::default(),
            })),
            (None, None) => None,
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The cache's view of one request: its key and what it may do.
pub(crate) struct Slot {
    key: Option<String>,
    policy: Option<CachePolicy>,
    control: CacheControl,
}

impl Slot {
    /// The slot of `call` on `route` (inactive when the route has no cache
    /// or the client said `no-store`).
    pub(crate) fn of(call: &ChatCall, route: &Route, config: &Config) -> Slot {
        let control = call.options.cache_control;
        // A token count is cheap and not an answer worth keeping.
        let countable = !matches!(call.work, crate::call::Work::CountTokens);
        let policy = route.cache.filter(|_| !control.no_store && countable);
        Slot {
            key: policy.map(|_| key(call, route, config)),
            policy,
            control,
        }
    }

    /// Answers from the cache, or runs the chain (storing whole answers and
    /// falling back to a stale entry when it fails).
    pub(crate) async fn run(
        &self,
        inner: &EngineState,
        call: &ChatCall,
        route: &Route,
        mode: Mode,
        meta: &mut RequestReport,
    ) -> Result<(Success, usize), EngineError> {
        let (Some(key), Some(policy)) = (&self.key, self.policy) else {
            return crate::boxed_in_place(|| chain::run(inner, call, route, mode, None, meta))
                .await;
        };
        let entry = inner
            .store
            .cache_get(key)
            .await
            .and_then(|bytes| serde_json::from_slice::<Entry>(&bytes).ok());
        let mut stale = None;
        if let Some(e) = entry {
            let age = Duration::from_millis(now_ms().saturating_sub(e.stored_at_ms));
            let fresh = age < policy.ttl && self.control.max_age.is_none_or(|m| age <= m);
            let usable = age < policy.ttl + policy.stale_ttl && !self.control.no_cache;
            match e.success() {
                Some(answer) if fresh && !self.control.no_cache => {
                    meta.cache = CacheStatus::Hit;
                    return Ok((answer, usize::MAX));
                }
                Some(answer) if usable => stale = Some(answer),
                _ => {}
            }
        }
        meta.cache = CacheStatus::Miss;
        let result = match (&stale, &route.static_response) {
            // A stale answer is a better last tier than the static one.
            (Some(_), Some(_)) => {
                let mut no_static = route.clone();
                no_static.static_response = None;
                crate::boxed_in_place(|| chain::run(inner, call, &no_static, mode, None, meta))
                    .await
            }
            _ => crate::boxed_in_place(|| chain::run(inner, call, route, mode, None, meta)).await,
        };
        match result {
            Ok((Success::Full(resp), di)) => {
                if meta.tier == crate::Tier::Chain {
                    self.store(inner, resp.get()).await;
                }
                Ok((Success::Full(resp), di))
            }
            Ok((Success::Plain(p), di)) => {
                if let Ok(text) = std::str::from_utf8(&p.body) {
                    let entry = Entry {
                        stored_at_ms: now_ms(),
                        response: None,
                        plain: Some(text.to_owned()),
                    };
                    put(inner, key, policy, &entry).await;
                }
                Ok((Success::Plain(p), di))
            }
            Ok(other) => Ok(other),
            Err(e) => match stale {
                Some(resp) => {
                    *meta = e.meta;
                    meta.cache = CacheStatus::Stale;
                    meta.deployment = None;
                    let m = &inner.metrics;
                    m.fallback(m.route_label(&route.name), "stale_cache", route.chain.len());
                    Ok((resp, usize::MAX))
                }
                None => Err(e),
            },
        }
    }

    async fn store(&self, inner: &EngineState, resp: &ChatResponse) {
        store_entry(inner, self.key.as_deref(), self.policy, resp).await;
    }

    /// Forwards a streamed answer and stores it once it ended cleanly.
    pub(crate) fn record(
        &self,
        inner: &Arc<EngineState>,
        meta: &RequestReport,
        items: StreamItems,
    ) -> StreamItems {
        let (Some(key), Some(policy)) = (self.key.clone(), self.policy) else {
            return items;
        };
        if meta.cache != CacheStatus::Miss || meta.tier != crate::Tier::Chain {
            return items;
        }
        let inner = inner.clone();
        let mut acc = Assembler::default();
        // Sees every item the client takes; a client that leaves early
        // never reaches the end, so an incomplete answer is not stored.
        items.tapped(Box::new(move |item| match item {
            Some(item) => acc.push(item),
            None => {
                if let Some(resp) = std::mem::take(&mut acc).finish() {
                    let (inner, key) = (inner.clone(), key.clone());
                    tokio::spawn(async move {
                        store_entry(&inner, Some(&key), Some(policy), &resp).await;
                    });
                }
            }
        }))
    }
}

async fn store_entry(
    inner: &EngineState,
    key: Option<&str>,
    policy: Option<CachePolicy>,
    resp: &ChatResponse,
) {
    let (Some(key), Some(policy)) = (key, policy) else {
        return;
    };
    let entry = Entry {
        stored_at_ms: now_ms(),
        response: Some(resp.clone()),
        plain: None,
    };
    put(inner, key, policy, &entry).await;
}

async fn put(inner: &EngineState, key: &str, policy: CachePolicy, entry: &Entry) {
    if let Ok(bytes) = serde_json::to_vec(entry) {
        inner
            .store
            .cache_put(key, bytes, policy.ttl + policy.stale_ttl)
            .await;
    }
}

/// The cache key of a request: SHA-256 over the tenant, the route, the
/// identities of the route's chain (so a config reload that changes a
/// deployment's upstream drops what it answered), the client API and the
/// canonical request.
pub(crate) fn key(call: &ChatCall, route: &Route, config: &Config) -> String {
    let tenant = call.options.tenant.as_deref().unwrap_or("default");
    let (api, body) = match (&call.work, &call.api, call.anthropic_original()) {
        // The part's inputs and every other member; not the route or `user`.
        (crate::call::Work::Embeddings(part), _, _) => {
            ("embeddings", Ok(part.request.body_for("", part.inputs())))
        }
        (_, ClientApi::Anthropic, Some(orig)) => ("anthropic", serde_json::to_value(orig)),
        // A Responses request as a native deployment would get it (built-in
        // tools, `reasoning`, `include` ... are not in its chat translation).
        (_, ClientApi::Responses, _) if call.client_body().is_some() => (
            "responses",
            call.client_body()
                .map_or(Ok(Value::Null), |b| serde_json::from_slice(b.bytes())),
        ),
        _ => ("openai", serde_json::to_value(call.request())),
    };
    let mut body = body.unwrap_or(Value::Null);
    if let Value::Object(m) = &mut body {
        for k in [
            "model",
            "stream",
            "stream_options",
            "user",
            "metadata",
            "store",
        ] {
            m.remove(k);
        }
    }
    let mut canonical = String::new();
    write_canonical(&body, &mut canonical);
    let mut chain = Vec::new();
    for d in route
        .chain
        .iter()
        .filter_map(|&i| config.deployments.get(i))
    {
        for part in [d.kind.as_str(), &d.base_url, &d.model]
            .into_iter()
            .chain(d.api_keys.iter().map(|k| k.expose()))
        {
            chain.extend_from_slice(&(part.len() as u64).to_be_bytes());
            chain.extend_from_slice(part.as_bytes());
        }
    }
    keel_store::digest_hex(&[
        b"keel-cache-v1",
        tenant.as_bytes(),
        route.name.as_bytes(),
        &chain,
        api.as_bytes(),
        canonical.as_bytes(),
    ])
}

/// JSON with object keys sorted, so field order never changes the key.
fn write_canonical(v: &Value, out: &mut String) {
    match v {
        Value::Object(m) => {
            let mut keys: Vec<&String> = m.keys().collect();
            keys.sort();
            out.push('{');
            for (i, k) in keys.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String((*k).clone()).to_string());
                out.push(':');
                if let Some(x) = m.get(*k) {
                    write_canonical(x, out);
                }
            }
            out.push('}');
        }
        Value::Array(a) => {
            out.push('[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(x, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Sends a whole answer as a stream: role and text, tool calls, the finish
/// reason, and usage when the client asked for it.
pub(crate) fn replay(resp: &ChatResponse, call: &ChatCall, queue: &ItemQueue) {
    let model = &call.request().model;
    for choice in &resp.choices {
        let text = choice.message.content.as_ref().map(Content::joined_text);
        let mut first = chunk(resp, model, choice.index);
        first.choices[0].delta.role = Some(Role::Assistant);
        first.choices[0].delta.content = Some(text.unwrap_or_default());
        first.choices[0].delta.refusal = choice.message.refusal.clone();
        queue.push(StreamItem::Chunk(first.into()));
        if let Some(calls) = choice.message.tool_calls.as_ref().filter(|c| !c.is_empty()) {
            let mut c = chunk(resp, model, choice.index);
            c.choices[0].delta.tool_calls = Some(
                calls
                    .iter()
                    .enumerate()
                    .map(|(i, t)| ToolCallDelta {
                        index: u32::try_from(i).unwrap_or(u32::MAX),
                        id: Some(t.id.clone()),
                        r#type: Some(t.r#type.clone()),
                        function: Some(FunctionCallDelta {
                            name: Some(t.function.name.clone()),
                            arguments: Some(t.function.arguments.clone()),
                            extra: Default::default(),
                        }),
                        extra: Default::default(),
                    })
                    .collect(),
            );
            queue.push(StreamItem::Chunk(c.into()));
        }
        let mut last = chunk(resp, model, choice.index);
        last.choices[0].finish_reason = Some(
            choice
                .finish_reason
                .clone()
                .unwrap_or_else(|| "stop".into()),
        );
        queue.push(StreamItem::Chunk(last.into()));
    }
    if call.request().wants_stream_usage() {
        if let Some(u) = &resp.usage {
            let mut c = chunk(resp, model, 0);
            c.choices.clear();
            c.usage = Some(u.clone());
            queue.push(StreamItem::Chunk(c.into()));
        }
    }
}

fn chunk(resp: &ChatResponse, model: &str, index: u32) -> ChatChunk {
    ChatChunk {
        id: resp.id.clone(),
        object: "chat.completion.chunk".into(),
        created: resp.created,
        model: model.to_string(),
        choices: vec![ChunkChoice {
            index,
            delta: Delta::default(),
            finish_reason: None,
            logprobs: None,
            extra: Default::default(),
        }],
        usage: None,
        system_fingerprint: resp.system_fingerprint.clone(),
        extra: Default::default(),
    }
}

/// One choice of a streamed answer, as far as it has come.
#[derive(Default)]
struct ChoiceSoFar {
    text: String,
    refusal: Option<String>,
    calls: Vec<ToolCall>,
    finish: Option<String>,
}

/// Rebuilds a whole answer from stream chunks.
#[derive(Default)]
struct Assembler {
    id: String,
    created: u64,
    model: String,
    choices: Vec<ChoiceSoFar>,
    usage: Option<keel_wire::openai::Usage>,
    broken: bool,
}

impl Assembler {
    fn push(&mut self, item: &StreamItem) {
        let chunk = match item {
            StreamItem::Chunk(c) => match c.parsed() {
                Ok(c) => c,
                Err(_) => {
                    self.broken = true;
                    return;
                }
            },
            StreamItem::Error { .. } => {
                self.broken = true;
                return;
            }
        };
        if self.id.is_empty() {
            self.id = chunk.id.clone();
            self.created = chunk.created;
            self.model = chunk.model.clone();
        }
        if chunk.usage.is_some() {
            self.usage = chunk.usage.clone();
        }
        for c in &chunk.choices {
            let i = c.index as usize;
            if i > 64 {
                self.broken = true;
                return;
            }
            while self.choices.len() <= i {
                self.choices.push(Default::default());
            }
            let ChoiceSoFar {
                text,
                refusal,
                calls,
                finish,
            } = &mut self.choices[i];
            if let Some(t) = &c.delta.content {
                text.push_str(t);
            }
            if let Some(r) = &c.delta.refusal {
                refusal.get_or_insert_with(String::new).push_str(r);
            }
            for d in c.delta.tool_calls.iter().flatten() {
                let j = d.index as usize;
                if j > 128 {
                    self.broken = true;
                    return;
                }
                while calls.len() <= j {
                    calls.push(ToolCall::function("", "", ""));
                }
                let call = &mut calls[j];
                if let Some(id) = &d.id {
                    call.id = id.clone();
                }
                if let Some(f) = &d.function {
                    if let Some(n) = &f.name {
                        call.function.name.push_str(n);
                    }
                    if let Some(a) = &f.arguments {
                        call.function.arguments.push_str(a);
                    }
                }
            }
            if c.finish_reason.is_some() {
                *finish = c.finish_reason.clone();
            }
        }
    }

    /// The whole answer, if the stream ended cleanly with every choice finished.
    fn finish(self) -> Option<ChatResponse> {
        if self.broken || self.choices.is_empty() || self.choices.iter().any(|c| c.finish.is_none())
        {
            return None;
        }
        Some(ChatResponse {
            id: self.id,
            object: "chat.completion".into(),
            created: self.created,
            model: self.model,
            choices: self
                .choices
                .into_iter()
                .enumerate()
                .map(|(i, c)| Choice {
                    index: u32::try_from(i).unwrap_or(u32::MAX),
                    message: Message {
                        refusal: c.refusal,
                        tool_calls: (!c.calls.is_empty()).then_some(c.calls),
                        ..Message::assistant(c.text)
                    },
                    finish_reason: c.finish,
                    logprobs: None,
                    extra: Default::default(),
                })
                .collect(),
            usage: self.usage,
            system_fingerprint: None,
            extra: Default::default(),
        })
    }
}
