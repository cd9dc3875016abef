//! Stream translation, both ways, as small state machines fed one event at a time.

use std::collections::HashMap;

use serde_json::Value;

use super::{
    delta_usage_from_openai, finish_to_stop_reason, stop_to_finish_reason, usage_from_anthropic,
};
use crate::anthropic::{
    ARole, AUsage, BlockDelta, ContentBlock, Extra, MessageDeltaBody, MessagesResponse, StreamEvent,
};
use crate::openai::{ChatChunk, ChunkChoice, Delta, FunctionCallDelta, Role, ToolCallDelta, Usage};

/// Turns Anthropic stream events into OpenAI chunks.
///
/// `message_start` gives the first chunk (role, empty content); text deltas
/// become content deltas; a `tool_use` block becomes a tool call whose
/// arguments grow with its `input_json_delta`s; `message_delta` gives the
/// chunk with `finish_reason` and then the usage chunk (no choices). Ping,
/// stop, thinking and error events give nothing: an `error` event is for the
/// engine to classify, and `data: [DONE]` for the engine to write.
#[derive(Debug)]
pub struct AnthropicToOpenAiStream {
    model: String,
    id: String,
    created: u64,
    include_usage: bool,
    json_tool: Option<String>,
    /// Anthropic block index to OpenAI tool-call index.
    tool_index: HashMap<u32, u32>,
    /// The OpenAI index of the next tool call (one per `tool_use` start, even
    /// if a block index is started twice, so no two calls share an index).
    next_tool_index: u32,
    /// Anthropic block index of the JSON-schema tool's block, whose input is the answer text.
    json_block: Option<u32>,
    input_tokens: u32,
    cache_creation: Option<u32>,
    cache_read: Option<u32>,
}

impl AnthropicToOpenAiStream {
    /// A translator whose chunks name `model` (the model the client asked for).
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            id: String::new(),
            created: 0,
            include_usage: true,
            json_tool: None,
            tool_index: HashMap::new(),
            next_tool_index: 0,
            json_block: None,
            input_tokens: 0,
            cache_creation: None,
            cache_read: None,
        }
    }

    /// Sets the `created` timestamp of every chunk (default 0; this crate does not read the clock).
    pub fn with_created(mut self, unix_secs: u64) -> Self {
        self.created = unix_secs;
        self
    }

    /// Whether to emit the usage chunk (default true; clients get it only
    /// with `stream_options.include_usage`).
    pub fn with_usage_chunk(mut self, include: bool) -> Self {
        self.include_usage = include;
        self
    }

    /// Streams the input of the JSON-schema tool named `tool_name` (see
    /// [`super::json_schema_tool`]) as text content, and its `tool_use`
    /// stop reason as `stop`.
    pub fn with_json_schema_tool(mut self, tool_name: &str) -> Self {
        self.json_tool = Some(tool_name.to_owned());
        self
    }

    /// Translates one event.
    pub fn push(&mut self, ev: &StreamEvent) -> Vec<ChatChunk> {
        match ev {
            StreamEvent::MessageStart { message } => {
                self.id.clone_from(&message.id);
                self.input_tokens = message.usage.input_tokens;
                self.cache_creation = message.usage.cache_creation_input_tokens;
                self.cache_read = message.usage.cache_read_input_tokens;
                vec![self.chunk(
                    Delta {
                        role: Some(Role::Assistant),
                        content: Some(String::new()),
                        ..Delta::default()
                    },
                    None,
                )]
            }
            StreamEvent::ContentBlockStart {
                index,
                content_block,
            } => match content_block {
                ContentBlock::Text { text, .. } if !text.is_empty() => {
                    vec![self.text_chunk(text.clone())]
                }
                ContentBlock::ToolUse {
                    id, name, input, ..
                } => {
                    if self.json_tool.as_deref() == Some(name.as_str()) {
                        self.json_block = Some(*index);
                        return Vec::new();
                    }
                    let tool_index = self.next_tool_index;
                    self.next_tool_index = self.next_tool_index.saturating_add(1);
                    self.tool_index.insert(*index, tool_index);
                    // The input is `{}` at the start and arrives as deltas; a non-empty
                    // one (not sent by Anthropic today) is passed on whole.
                    let arguments = match input {
                        Value::Object(map) if map.is_empty() => String::new(),
                        other => other.to_string(),
                    };
                    vec![self.chunk(
                        Delta {
                            tool_calls: Some(vec![ToolCallDelta {
                                index: tool_index,
                                id: Some(id.clone()),
                                r#type: Some("function".to_owned()),
                                function: Some(FunctionCallDelta {
                                    name: Some(name.clone()),
                                    arguments: Some(arguments),
                                    extra: Extra::new(),
                                }),
                                extra: Extra::new(),
                            }]),
                            ..Delta::default()
                        },
                        None,
                    )]
                }
                _ => Vec::new(),
            },
            StreamEvent::ContentBlockDelta { index, delta } => match delta {
                BlockDelta::TextDelta { text } if !text.is_empty() => {
                    vec![self.text_chunk(text.clone())]
                }
                BlockDelta::InputJsonDelta { partial_json } if !partial_json.is_empty() => {
                    if self.json_block == Some(*index) {
                        return vec![self.text_chunk(partial_json.clone())];
                    }
                    let Some(tool_index) = self.tool_index.get(index).copied() else {
                        return Vec::new();
                    };
                    vec![self.chunk(
                        Delta {
                            tool_calls: Some(vec![ToolCallDelta {
                                index: tool_index,
                                function: Some(FunctionCallDelta {
                                    arguments: Some(partial_json.clone()),
                                    ..FunctionCallDelta::default()
                                }),
                                ..ToolCallDelta::default()
                            }]),
                            ..Delta::default()
                        },
                        None,
                    )]
                }
                _ => Vec::new(),
            },
            StreamEvent::MessageDelta { delta, usage } => {
                let mut finish = delta
                    .stop_reason
                    .as_deref()
                    .map(stop_to_finish_reason)
                    .unwrap_or("stop");
                if finish == "tool_calls" && self.json_block.is_some() && self.tool_index.is_empty()
                {
                    finish = "stop";
                }
                let mut chunks = vec![self.chunk(Delta::default(), Some(finish.to_owned()))];
                if self.include_usage {
                    if let Some(n) = usage.input_tokens {
                        self.input_tokens = n;
                    }
                    if usage.cache_creation_input_tokens.is_some() {
                        self.cache_creation = usage.cache_creation_input_tokens;
                    }
                    if usage.cache_read_input_tokens.is_some() {
                        self.cache_read = usage.cache_read_input_tokens;
                    }
                    let mut last = self.chunk(Delta::default(), None);
                    last.choices.clear();
                    last.usage = Some(usage_from_anthropic(
                        self.input_tokens,
                        self.cache_creation,
                        self.cache_read,
                        usage.output_tokens,
                    ));
                    chunks.push(last);
                }
                chunks
            }
            _ => Vec::new(),
        }
    }

    fn text_chunk(&self, text: String) -> ChatChunk {
        self.chunk(
            Delta {
                content: Some(text),
                ..Delta::default()
            },
            None,
        )
    }

    fn chunk(&self, delta: Delta, finish_reason: Option<String>) -> ChatChunk {
        ChatChunk {
            id: self.id.clone(),
            object: "chat.completion.chunk".to_owned(),
            created: self.created,
            model: self.model.clone(),
            choices: vec![ChunkChoice {
                index: 0,
                delta,
                finish_reason,
                logprobs: None,
                extra: Extra::new(),
            }],
            usage: None,
            system_fingerprint: None,
            extra: Extra::new(),
        }
    }
}

/// The kind of the Anthropic block currently open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OpenBlock {
    Text,
    Tool(u32),
}

/// Turns OpenAI chunks into Anthropic stream events.
///
/// The first chunk gives `message_start`; content opens a text block and
/// grows it with `text_delta`s; each tool call opens a `tool_use` block and
/// grows it with `input_json_delta`s. Only the first choice is translated.
/// OpenAI sends the finish reason and the usage in different chunks, so the
/// message is closed by [`finish`](Self::finish): call it when the upstream
/// stream ends (at `data: [DONE]`).
///
/// ```
/// use keel_wire::openai::ChatChunk;
/// use keel_wire::translate::OpenAiToAnthropicStream;
///
/// let chunk: ChatChunk = serde_json::from_str(
///     r#"{"id":"c1","object":"chat.completion.chunk","created":1,"model":"gpt-4o",
///         "choices":[{"index":0,"delta":{"content":"Hi"},"finish_reason":"stop"}]}"#,
/// ).unwrap();
/// let mut stream = OpenAiToAnthropicStream::new("claude-route");
/// let mut events = stream.push(&chunk);
/// events.extend(stream.finish());
/// let names: Vec<&str> = events.iter().map(|e| e.event_name()).collect();
/// assert_eq!(names, ["message_start", "content_block_start", "content_block_delta",
///                    "content_block_stop", "message_delta", "message_stop"]);
/// ```
#[derive(Debug)]
pub struct OpenAiToAnthropicStream {
    model: String,
    started: bool,
    finished: bool,
    next_block: u32,
    open: Option<(u32, OpenBlock)>,
    /// OpenAI tool-call index to Anthropic block index.
    tool_blocks: HashMap<u32, u32>,
    finish_reason: Option<String>,
    usage: Option<Usage>,
}

impl OpenAiToAnthropicStream {
    /// A translator whose events name `model` (the model the client asked for).
    pub fn new(model: &str) -> Self {
        Self {
            model: model.to_owned(),
            started: false,
            finished: false,
            next_block: 0,
            open: None,
            tool_blocks: HashMap::new(),
            finish_reason: None,
            usage: None,
        }
    }

    /// Translates one chunk. Chunks after [`finish`](Self::finish) give nothing.
    pub fn push(&mut self, chunk: &ChatChunk) -> Vec<StreamEvent> {
        if self.finished {
            return Vec::new();
        }
        let mut events = Vec::new();
        self.start(&chunk.id, &mut events);
        if let Some(usage) = &chunk.usage {
            self.usage = Some(usage.clone());
        }
        let Some(choice) = chunk.choices.iter().find(|c| c.index == 0) else {
            return events;
        };
        let delta = &choice.delta;
        for text in [&delta.content, &delta.refusal].into_iter().flatten() {
            if text.is_empty() {
                continue;
            }
            let index = self.open_text(&mut events);
            events.push(StreamEvent::ContentBlockDelta {
                index,
                delta: BlockDelta::TextDelta { text: text.clone() },
            });
        }
        for call in delta.tool_calls.iter().flatten() {
            let block = match self.tool_blocks.get(&call.index) {
                Some(block) => *block,
                None => self.open_tool(call, &mut events),
            };
            let arguments = call.function.as_ref().and_then(|f| f.arguments.as_deref());
            if let Some(arguments) = arguments.filter(|a| !a.is_empty()) {
                events.push(StreamEvent::ContentBlockDelta {
                    index: block,
                    delta: BlockDelta::InputJsonDelta {
                        partial_json: arguments.to_owned(),
                    },
                });
            }
        }
        if let Some(reason) = &choice.finish_reason {
            self.finish_reason = Some(reason.clone());
        }
        events
    }

    /// Ends the message: closes the open block, then `message_delta` (stop
    /// reason and usage) and `message_stop`. Calling it again gives nothing.
    ///
    /// Without a finish reason from upstream the stop reason is `end_turn`.
    pub fn finish(&mut self) -> Vec<StreamEvent> {
        if self.finished {
            return Vec::new();
        }
        let mut events = Vec::new();
        self.start("", &mut events);
        self.close_open(&mut events);
        let stop_reason = finish_to_stop_reason(self.finish_reason.as_deref().unwrap_or("stop"));
        let usage = self
            .usage
            .as_ref()
            .map(delta_usage_from_openai)
            .unwrap_or_default();
        events.push(StreamEvent::MessageDelta {
            delta: MessageDeltaBody {
                stop_reason: Some(stop_reason.to_owned()),
                stop_sequence: None,
                extra: Extra::new(),
            },
            usage,
        });
        events.push(StreamEvent::MessageStop);
        self.finished = true;
        events
    }

    fn start(&mut self, id: &str, events: &mut Vec<StreamEvent>) {
        if self.started {
            return;
        }
        self.started = true;
        events.push(StreamEvent::MessageStart {
            message: MessagesResponse {
                id: id.to_owned(),
                r#type: "message".to_owned(),
                role: ARole::Assistant,
                model: self.model.clone(),
                content: Vec::new(),
                stop_reason: None,
                stop_sequence: None,
                usage: AUsage::default(),
                extra: Extra::new(),
            },
        });
    }

    fn close_open(&mut self, events: &mut Vec<StreamEvent>) {
        if let Some((index, _)) = self.open.take() {
            events.push(StreamEvent::ContentBlockStop { index });
        }
    }

    /// The index of the open text block, opening one if needed.
    fn open_text(&mut self, events: &mut Vec<StreamEvent>) -> u32 {
        if let Some((index, OpenBlock::Text)) = self.open {
            return index;
        }
        self.close_open(events);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, OpenBlock::Text));
        events.push(StreamEvent::ContentBlockStart {
            index,
            content_block: ContentBlock::text(""),
        });
        index
    }

    fn open_tool(&mut self, call: &ToolCallDelta, events: &mut Vec<StreamEvent>) -> u32 {
        self.close_open(events);
        let index = self.next_block;
        self.next_block += 1;
        self.open = Some((index, OpenBlock::Tool(call.index)));
        self.tool_blocks.insert(call.index, index);
        let id = call
            .id
            .clone()
            .unwrap_or_else(|| format!("toolu_keel_{}", call.index));
        let name = call
            .function
            .as_ref()
            .and_then(|f| f.name.clone())
            .unwrap_or_default();
        events.push(StreamEvent::ContentBlockStart {
            index,
            content_block: ContentBlock::tool_use(id, name, Value::Object(serde_json::Map::new())),
        });
        index
    }
}
