//! Request translation, both ways.

use serde_json::{json, Value};

use super::TranslateError;
use crate::anthropic::{
    AContent, AMessage, ARole, ATool, ContentBlock, Extra, ImageSource, MessagesRequest, System,
};
use crate::openai::{
    ChatRequest, Content, ContentPart, JsonSchemaFormat, Message, ResponseFormat, Role, Stop,
    StreamOptions, Tool, ToolCall,
};

/// Translates an OpenAI request for an Anthropic deployment.
///
/// - `system` and `developer` messages become the system prompt (one
///   message: a string; several: one text block each);
/// - `tool` messages become `tool_result` blocks in a user message, and an
///   assistant's `tool_calls` become `tool_use` blocks;
/// - images: `data:` URLs become base64 sources, other URLs URL sources;
/// - consecutive messages of the same role are merged, as Anthropic requires;
/// - `max_completion_tokens` (else `max_tokens`, else `default_max_tokens`)
///   becomes `max_tokens`, `stop` becomes `stop_sequences`, `user` becomes
///   `metadata.user_id`, `temperature` is clamped to Anthropic's 0–1, and
///   `top_p` is dropped when `temperature` is set (Anthropic takes one of
///   the two; recent Claude models refuse both);
/// - `tool_choice` maps `auto`/`none`/`required`/a named function to
///   `auto`/`none`/`any`/`tool`, and `parallel_tool_calls: false` to
///   `disable_parallel_tool_use`;
/// - `response_format` is left to the caller: see [`json_schema_tool`].
pub fn openai_to_anthropic_request(
    req: &ChatRequest,
    default_max_tokens: u32,
) -> Result<MessagesRequest, TranslateError> {
    if let Some(n) = req.n.filter(|n| *n > 1) {
        return Err(TranslateError::UnsupportedParameter {
            field: "n",
            reason: format!("Anthropic generates one choice per request, {n} were asked"),
        });
    }

    let mut system: Vec<String> = Vec::new();
    let mut messages: Vec<AMessage> = Vec::new();
    for (index, msg) in req.messages.iter().enumerate() {
        let (role, blocks) = match &msg.role {
            Role::System | Role::Developer => {
                system.push(system_text(msg, index)?);
                continue;
            }
            Role::User => (ARole::User, user_blocks(msg, index)?),
            Role::Assistant => (ARole::Assistant, assistant_blocks(msg, index)?),
            Role::Tool => (ARole::User, vec![tool_result_block(msg, index)?]),
            other => {
                return Err(TranslateError::UnsupportedRole {
                    index,
                    role: other.as_str().to_owned(),
                })
            }
        };
        push_merged(&mut messages, role, blocks);
    }
    if messages.is_empty() {
        return Err(TranslateError::NoMessages);
    }

    let system = match system.len() {
        0 => None,
        1 => system.pop().map(System::Text),
        _ => Some(System::Blocks(
            system.into_iter().map(ContentBlock::text).collect(),
        )),
    };

    let tools = req.tools.as_ref().map(|tools| {
        tools
            .iter()
            .map(|t| ATool {
                name: t.function.name.clone(),
                description: t.function.description.clone(),
                input_schema: t
                    .function
                    .parameters
                    .clone()
                    .unwrap_or_else(|| json!({"type": "object", "properties": {}})),
                extra: Extra::new(),
            })
            .collect()
    });

    let parallel = req
        .extra
        .get("parallel_tool_calls")
        .and_then(Value::as_bool);
    let tool_choice = openai_tool_choice_to_anthropic(req.tool_choice.as_ref(), parallel)?;

    let mut out = MessagesRequest::new(
        req.model.clone(),
        messages,
        req.effective_max_tokens().unwrap_or(default_max_tokens),
    );
    out.system = system;
    out.stop_sequences = req.stop.as_ref().map(Stop::to_vec);
    out.stream = req.stream;
    out.temperature = req.temperature.map(|t| t.clamp(0.0, 1.0));
    // Anthropic asks for one of the two, and recent Claude models refuse
    // both: the temperature is kept.
    out.top_p = req.top_p.filter(|_| out.temperature.is_none());
    out.tools = tools;
    out.tool_choice = tool_choice;
    out.metadata = req.user.as_ref().map(|u| json!({ "user_id": u }));
    Ok(out)
}

/// The JSON schema of an Anthropic request's native structured output
/// (`output_config.format`, or the older beta `output_format`, of type
/// `json_schema`), if it asks for one.
pub fn native_json_schema(req: &MessagesRequest) -> Option<&Value> {
    let format = req
        .extra
        .get("output_config")
        .and_then(|c| c.get("format"))
        .or_else(|| req.extra.get("output_format"))?;
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => format.get("schema"),
        _ => None,
    }
}

/// The Anthropic tool for the "tool-use technique" of structured output: a
/// tool whose input schema is the requested JSON schema. Forcing the model to
/// call it (with [`force_tool_choice`]) makes its input the answer; turn the
/// answer back into text with [`super::json_schema_tool_to_text`].
///
/// `None` unless the format is `json_schema`.
pub fn json_schema_tool(format: &ResponseFormat) -> Option<ATool> {
    let ResponseFormat::JsonSchema { json_schema } = format else {
        return None;
    };
    Some(ATool {
        name: json_schema.name.clone(),
        description: Some(
            json_schema
                .description
                .clone()
                .unwrap_or_else(|| "Respond with a JSON document matching this schema.".to_owned()),
        ),
        input_schema: json_schema
            .schema
            .clone()
            .unwrap_or_else(|| json!({"type": "object"})),
        extra: Extra::new(),
    })
}

/// An Anthropic `tool_choice` that forces the named tool.
pub fn force_tool_choice(name: &str) -> Value {
    json!({ "type": "tool", "name": name })
}

fn openai_tool_choice_to_anthropic(
    choice: Option<&Value>,
    parallel: Option<bool>,
) -> Result<Option<Value>, TranslateError> {
    let mut out =
        match choice {
            None => None,
            Some(Value::String(s)) => match s.as_str() {
                "auto" => Some(json!({"type": "auto"})),
                "none" => Some(json!({"type": "none"})),
                "required" => Some(json!({"type": "any"})),
                other => {
                    return Err(TranslateError::UnsupportedParameter {
                        field: "tool_choice",
                        reason: format!("unknown value `{other}`"),
                    })
                }
            },
            Some(v) => match v.pointer("/function/name").and_then(Value::as_str) {
                Some(name) => Some(force_tool_choice(name)),
                None => return Err(TranslateError::UnsupportedParameter {
                    field: "tool_choice",
                    reason:
                        "expected a string or {\"type\":\"function\",\"function\":{\"name\":...}}"
                            .to_owned(),
                }),
            },
        };
    if parallel == Some(false) {
        let choice = out.get_or_insert_with(|| json!({"type": "auto"}));
        if let Value::Object(map) = choice {
            // `none` takes no options.
            if map.get("type").and_then(Value::as_str) != Some("none") {
                map.insert("disable_parallel_tool_use".to_owned(), Value::Bool(true));
            }
        }
    }
    Ok(out)
}

fn system_text(msg: &Message, index: usize) -> Result<String, TranslateError> {
    match &msg.content {
        None => Ok(String::new()),
        Some(Content::Text(s)) => Ok(s.clone()),
        Some(Content::Parts(parts)) => {
            let mut text = String::new();
            for (i, part) in parts.iter().enumerate() {
                match part {
                    ContentPart::Text { text: t, .. } => text.push_str(t),
                    other => {
                        return Err(TranslateError::UnsupportedContent {
                            path: format!("messages[{index}].content[{i}]"),
                            kind: format!("{} in a system message", part_kind(other)),
                        })
                    }
                }
            }
            Ok(text)
        }
    }
}

fn user_blocks(msg: &Message, index: usize) -> Result<Vec<ContentBlock>, TranslateError> {
    match &msg.content {
        None => Ok(Vec::new()),
        Some(Content::Text(s)) => Ok(vec![ContentBlock::text(s.clone())]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(i, part)| part_to_block(part, &format!("messages[{index}].content[{i}]")))
            .collect(),
    }
}

fn part_to_block(part: &ContentPart, path: &str) -> Result<ContentBlock, TranslateError> {
    match part {
        ContentPart::Text { text, .. } => Ok(ContentBlock::text(text.clone())),
        ContentPart::ImageUrl { image_url, .. } => Ok(ContentBlock::Image {
            source: image_source(&image_url.url, &format!("{path}.image_url.url"))?,
            extra: Extra::new(),
        }),
        ContentPart::Other(_) => Err(TranslateError::UnsupportedContent {
            path: path.to_owned(),
            kind: part_kind(part).to_owned(),
        }),
    }
}

fn part_kind(part: &ContentPart) -> &str {
    match part {
        ContentPart::Text { .. } => "text",
        ContentPart::ImageUrl { .. } => "image_url",
        ContentPart::Other(v) => v.get("type").and_then(Value::as_str).unwrap_or("unknown"),
    }
}

/// `data:<media type>;base64,<data>` to a base64 source, anything else to a URL source.
fn image_source(url: &str, path: &str) -> Result<ImageSource, TranslateError> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(ImageSource::Url {
            url: url.to_owned(),
        });
    };
    let invalid = |reason: &str| TranslateError::InvalidImageUrl {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| invalid("data: URL has no `,` before its data"))?;
    let media_type = meta
        .strip_suffix(";base64")
        .ok_or_else(|| invalid("data: URL must be base64-encoded (`;base64,`)"))?;
    if media_type.is_empty() {
        return Err(invalid("data: URL has no media type"));
    }
    Ok(ImageSource::Base64 {
        media_type: media_type.to_owned(),
        data: data.to_owned(),
    })
}

fn assistant_blocks(msg: &Message, index: usize) -> Result<Vec<ContentBlock>, TranslateError> {
    let mut blocks = user_blocks(msg, index)?;
    if let Some(refusal) = &msg.refusal {
        blocks.push(ContentBlock::text(refusal.clone()));
    }
    // Anthropic rejects empty text blocks, which OpenAI clients send next to tool calls.
    blocks.retain(|b| !matches!(b, ContentBlock::Text { text, .. } if text.is_empty()));
    for (i, call) in msg.tool_calls.iter().flatten().enumerate() {
        blocks.push(ContentBlock::ToolUse {
            id: call.id.clone(),
            name: call.function.name.clone(),
            input: parse_arguments(
                &call.function.arguments,
                &format!("messages[{index}].tool_calls[{i}].function.arguments"),
            )?,
            extra: Extra::new(),
        });
    }
    Ok(blocks)
}

fn parse_arguments(arguments: &str, path: &str) -> Result<Value, TranslateError> {
    if arguments.trim().is_empty() {
        return Ok(json!({}));
    }
    serde_json::from_str(arguments).map_err(|source| TranslateError::InvalidToolArguments {
        path: path.to_owned(),
        source,
    })
}

fn tool_result_block(msg: &Message, index: usize) -> Result<ContentBlock, TranslateError> {
    let tool_use_id = msg
        .tool_call_id
        .clone()
        .ok_or(TranslateError::MissingToolCallId { index })?;
    let content = match &msg.content {
        None => None,
        Some(Content::Text(s)) => Some(AContent::Text(s.clone())),
        Some(Content::Parts(_)) => Some(AContent::Blocks(user_blocks(msg, index)?)),
    };
    Ok(ContentBlock::ToolResult {
        tool_use_id,
        content,
        is_error: None,
        extra: Extra::new(),
    })
}

/// Appends a message, merging it into the previous one if the role is the same.
fn push_merged(messages: &mut Vec<AMessage>, role: ARole, blocks: Vec<ContentBlock>) {
    if let Some(last) = messages.last_mut().filter(|m| m.role == role) {
        let previous = std::mem::replace(&mut last.content, AContent::Blocks(Vec::new()));
        let mut merged = previous.into_blocks();
        merged.extend(blocks);
        last.content = AContent::Blocks(merged);
        return;
    }
    // A lone text block is sent as a plain string, the form clients usually write.
    let content = match <[ContentBlock; 1]>::try_from(blocks) {
        Ok([ContentBlock::Text { text, extra }]) if extra.is_empty() => AContent::Text(text),
        Ok([block]) => AContent::Blocks(vec![block]),
        Err(blocks) => AContent::Blocks(blocks),
    };
    messages.push(AMessage {
        role,
        content,
        extra: Extra::new(),
    });
}

/// Translates an Anthropic request for an OpenAI deployment.
///
/// - the system prompt becomes a leading `system` message (blocks joined
///   with a blank line);
/// - `tool_result` blocks become `tool` messages, placed before the rest of
///   their user message; `tool_use` blocks become the assistant's
///   `tool_calls`; thinking blocks are dropped;
/// - images: base64 sources become `data:` URLs, URL sources URLs;
/// - `max_tokens` becomes `max_completion_tokens`, `stop_sequences` becomes
///   `stop`, `metadata.user_id` becomes `user`; a streamed request asks for
///   the usage chunk; `top_k` is dropped;
/// - structured output (`output_config.format`, or the older
///   `output_format`, with a JSON schema) becomes a `json_schema`
///   `response_format` named `output`;
/// - `tool_choice` maps `auto`/`none`/`any`/`tool` to
///   `auto`/`none`/`required`/a named function, and
///   `disable_parallel_tool_use` to `parallel_tool_calls: false`.
pub fn anthropic_to_openai_request(req: &MessagesRequest) -> Result<ChatRequest, TranslateError> {
    let mut messages = Vec::new();
    if let Some(system) = &req.system {
        if let System::Blocks(blocks) = system {
            for (i, block) in blocks.iter().enumerate() {
                if !matches!(block, ContentBlock::Text { .. }) {
                    return Err(TranslateError::UnsupportedContent {
                        path: format!("system[{i}]"),
                        kind: block.type_name().to_owned(),
                    });
                }
            }
        }
        messages.push(Message::system(system.joined_text()));
    }
    for (index, msg) in req.messages.iter().enumerate() {
        match msg.role {
            ARole::User => user_to_openai(&msg.content, index, &mut messages)?,
            ARole::Assistant => messages.push(assistant_to_openai(&msg.content, index)?),
        }
    }

    let tools = match &req.tools {
        None => None,
        Some(tools) => Some(
            tools
                .iter()
                .enumerate()
                .map(
                    |(index, t)| match t.extra.get("type").and_then(Value::as_str) {
                        Some(kind) if kind != "custom" => Err(TranslateError::UnsupportedTool {
                            index,
                            kind: kind.to_owned(),
                        }),
                        _ => Ok(Tool::function(
                            t.name.clone(),
                            t.description.clone(),
                            Some(t.input_schema.clone()),
                        )),
                    },
                )
                .collect::<Result<Vec<_>, _>>()?,
        ),
    };

    let mut out = ChatRequest::new(req.model.clone(), messages);
    out.max_completion_tokens = Some(req.max_tokens);
    out.stop = req.stop_sequences.clone().map(Stop::Many);
    out.stream = req.stream;
    if req.is_stream() {
        out.stream_options = Some(StreamOptions {
            include_usage: Some(true),
            extra: Extra::new(),
        });
    }
    out.temperature = req.temperature;
    out.top_p = req.top_p;
    out.tools = tools;
    if let Some(schema) = native_json_schema(req) {
        out.response_format = Some(ResponseFormat::JsonSchema {
            json_schema: JsonSchemaFormat {
                name: "output".to_owned(),
                description: None,
                schema: Some(schema.clone()),
                // Not `strict`: OpenAI refuses a strict schema outside its
                // subset; Keel validates the answer against it either way.
                strict: None,
                extra: Extra::new(),
            },
        });
    }
    if let Some(choice) = &req.tool_choice {
        let kind = choice.get("type").and_then(Value::as_str);
        out.tool_choice = Some(match kind {
            Some("auto") => json!("auto"),
            Some("none") => json!("none"),
            Some("any") => json!("required"),
            Some("tool") => match choice.get("name").and_then(Value::as_str) {
                Some(name) => json!({"type": "function", "function": {"name": name}}),
                None => {
                    return Err(TranslateError::UnsupportedParameter {
                        field: "tool_choice.name",
                        reason: "a `tool` choice must name the tool".to_owned(),
                    })
                }
            },
            _ => {
                return Err(TranslateError::UnsupportedParameter {
                    field: "tool_choice.type",
                    reason: format!("unknown tool choice {choice}"),
                })
            }
        });
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) && out.has_tools() {
            out.extra
                .insert("parallel_tool_calls".to_owned(), Value::Bool(false));
        }
    }
    out.user = req
        .metadata
        .as_ref()
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
        .map(str::to_owned);
    Ok(out)
}

fn user_to_openai(
    content: &AContent,
    index: usize,
    out: &mut Vec<Message>,
) -> Result<(), TranslateError> {
    let blocks = match content {
        AContent::Text(s) => {
            out.push(Message::user(s.clone()));
            return Ok(());
        }
        AContent::Blocks(blocks) => blocks,
    };
    let mut parts = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let path = format!("messages[{index}].content[{i}]");
        match block {
            ContentBlock::ToolResult {
                tool_use_id,
                content,
                is_error,
                ..
            } => {
                let mut text = match content {
                    None => String::new(),
                    Some(AContent::Text(s)) => s.clone(),
                    Some(AContent::Blocks(inner)) => {
                        let mut text = String::new();
                        for (k, b) in inner.iter().enumerate() {
                            match b {
                                ContentBlock::Text { text: t, .. } => text.push_str(t),
                                other => {
                                    return Err(TranslateError::UnsupportedContent {
                                        path: format!("{path}.content[{k}]"),
                                        kind: format!("{} in a tool_result", other.type_name()),
                                    })
                                }
                            }
                        }
                        text
                    }
                };
                if *is_error == Some(true) && text.is_empty() {
                    text.push_str("error");
                }
                let mut msg = Message::new(Role::Tool, text);
                msg.tool_call_id = Some(tool_use_id.clone());
                out.push(msg);
            }
            ContentBlock::Text { text, .. } => parts.push(ContentPart::text(text.clone())),
            ContentBlock::Image { source, .. } => {
                parts.push(ContentPart::image_url(image_url(source, &path)?));
            }
            other => {
                return Err(TranslateError::UnsupportedContent {
                    path,
                    kind: other.type_name().to_owned(),
                })
            }
        }
    }
    if !parts.is_empty() {
        let content = match <[ContentPart; 1]>::try_from(parts) {
            Ok([ContentPart::Text { text, .. }]) => Content::Text(text),
            Ok([part]) => Content::Parts(vec![part]),
            Err(parts) => Content::Parts(parts),
        };
        let mut msg = Message::user(String::new());
        msg.content = Some(content);
        out.push(msg);
    }
    Ok(())
}

fn image_url(source: &ImageSource, path: &str) -> Result<String, TranslateError> {
    match source {
        ImageSource::Base64 { media_type, data } => Ok(format!("data:{media_type};base64,{data}")),
        ImageSource::Url { url } => Ok(url.clone()),
        ImageSource::Other(v) => Err(TranslateError::UnsupportedContent {
            path: format!("{path}.source"),
            kind: v
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
        }),
    }
}

fn assistant_to_openai(content: &AContent, index: usize) -> Result<Message, TranslateError> {
    let blocks = match content {
        AContent::Text(s) => return Ok(Message::assistant(s.clone())),
        AContent::Blocks(blocks) => blocks,
    };
    let mut text = String::new();
    let mut calls = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        match block {
            ContentBlock::Text { text: t, .. } => text.push_str(t),
            ContentBlock::ToolUse {
                id, name, input, ..
            } => calls.push(ToolCall::function(
                id.clone(),
                name.clone(),
                input.to_string(),
            )),
            ContentBlock::Thinking { .. } | ContentBlock::RedactedThinking { .. } => {}
            other => {
                return Err(TranslateError::UnsupportedContent {
                    path: format!("messages[{index}].content[{i}]"),
                    kind: other.type_name().to_owned(),
                })
            }
        }
    }
    let mut msg = Message::assistant(text);
    if !calls.is_empty() {
        if msg.content == Some(Content::Text(String::new())) {
            msg.content = None;
        }
        msg.tool_calls = Some(calls);
    }
    Ok(msg)
}
