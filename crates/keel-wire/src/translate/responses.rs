//! Responses API <-> canonical Chat Completions.
//!
//! A Responses request becomes one chat request (instructions first, then
//! the items in order: messages, function calls grouped into the assistant
//! message they belong to, function outputs as tool messages), and a chat
//! answer becomes a Response's output items. An input that cannot be
//! expressed is an [`InputError`] naming the item, found before any
//! upstream call.

use serde_json::{json, Value};

use crate::openai::{
    ChatResponse, Content, ContentPart, Extra, JsonSchemaFormat, Message, ResponseFormat, Role,
    Tool, ToolCall,
};
use crate::responses::{Response, ResponseUsage, ResponsesRequest, TextFormat};

/// Why a Responses request could not be translated; the message names the field.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct InputError {
    /// Where, e.g. `input[2].call_id`.
    pub path: String,
    /// What is wrong.
    pub message: String,
}

fn bad(path: impl Into<String>, message: impl Into<String>) -> InputError {
    InputError {
        path: path.into(),
        message: message.into(),
    }
}

/// The canonical chat request of `req`, whose conversation is `history`
/// (the items of the responses it continues, oldest first) followed by the
/// request's own input.
pub fn responses_to_chat(
    req: &ResponsesRequest,
    history: &[Value],
) -> Result<crate::openai::ChatRequest, InputError> {
    let mut messages = Vec::new();
    if let Some(text) = &req.instructions {
        messages.push(Message::system(text.clone()));
    }
    let own = req.input_items();
    let mut calls: Vec<String> = Vec::new();
    let items = history
        .iter()
        .map(|v| (None, v))
        .chain(own.iter().enumerate().map(|(i, v)| (Some(i), v)));
    for (index, item) in items {
        let path = match index {
            Some(i) => format!("input[{i}]"),
            None => "previous_response_id".to_string(),
        };
        add_item(&mut messages, &mut calls, item, &path)?;
    }
    if messages.is_empty() {
        return Err(bad(
            "input",
            "holds nothing to answer: no message, function_call or function_call_output",
        ));
    }
    let mut chat = crate::openai::ChatRequest::new(req.model.clone(), messages);
    chat.stream = req.stream.filter(|s| *s);
    chat.max_completion_tokens = req.max_output_tokens;
    chat.temperature = req.temperature;
    chat.top_p = req.top_p;
    chat.user = req.user.clone();
    chat.tool_choice = req.tool_choice.as_ref().map(tool_choice).transpose()?;
    if let Some(tools) = &req.tools {
        // Built-in tools go to native deployments only: not in the chat request.
        let tools = tools
            .iter()
            .enumerate()
            .filter(|(_, t)| !is_builtin(t))
            .map(|(i, t)| tool(t, i))
            .collect::<Result<Vec<_>, _>>()?;
        chat.tools = (!tools.is_empty()).then_some(tools);
    }
    if let (Some(p), Some(_)) = (req.parallel_tool_calls, &chat.tools) {
        chat.extra.insert("parallel_tool_calls".into(), p.into());
    }
    chat.response_format = match req.text.as_ref().and_then(|t| t.format.clone()) {
        None | Some(TextFormat::Text) => None,
        Some(TextFormat::JsonObject) => Some(ResponseFormat::JsonObject),
        Some(TextFormat::JsonSchema {
            name,
            schema,
            description,
            strict,
        }) => Some(ResponseFormat::JsonSchema {
            json_schema: JsonSchemaFormat {
                name,
                description,
                schema,
                strict,
                extra: Extra::new(),
            },
        }),
    };
    Ok(chat)
}

/// Appends the chat message(s) of one input item.
fn add_item(
    messages: &mut Vec<Message>,
    calls: &mut Vec<String>,
    item: &Value,
    path: &str,
) -> Result<(), InputError> {
    let Some(obj) = item.as_object() else {
        return Err(bad(path, "expected an input item (an object)"));
    };
    let str_field = |name: &str| -> Result<&str, InputError> {
        obj.get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| bad(format!("{path}.{name}"), "expected a string"))
    };
    let kind = match obj.get("type") {
        None => "message",
        Some(Value::String(s)) => s.as_str(),
        Some(_) => return Err(bad(format!("{path}.type"), "expected a string")),
    };
    match kind {
        "message" => messages.push(message(obj, path)?),
        "function_call" => {
            let call_id = str_field("call_id")?;
            let call = ToolCall::function(call_id, str_field("name")?, str_field("arguments")?);
            calls.push(call_id.to_string());
            match messages.last_mut() {
                Some(m) if m.role == Role::Assistant && m.tool_call_id.is_none() => {
                    m.tool_calls.get_or_insert_with(Vec::new).push(call)
                }
                _ => {
                    let mut m = Message::assistant("");
                    m.content = None;
                    m.tool_calls = Some(vec![call]);
                    messages.push(m);
                }
            }
        }
        "function_call_output" => {
            let call_id = str_field("call_id")?;
            if !calls.iter().any(|c| c == call_id) {
                return Err(bad(
                    format!("{path}.call_id"),
                    format!("no function_call with call_id {call_id:?} precedes this function_call_output"),
                ));
            }
            let output = match obj.get("output") {
                Some(Value::String(s)) => s.clone(),
                Some(v @ Value::Array(_)) => text_of(v, &format!("{path}.output"))?,
                _ => return Err(bad(format!("{path}.output"), "expected a string")),
            };
            let mut m = Message::new(Role::Tool, output);
            m.tool_call_id = Some(call_id.to_string());
            messages.push(m);
        }
        // Reasoning items and the provider's own tool calls carry nothing
        // a chat upstream can use (a built-in tool's results are in the
        // answer that follows it).
        "reasoning" => {}
        k if crate::responses::PROVIDER_CALL_ITEMS.contains(&k) => {}
        other => {
            return Err(bad(
                format!("{path}.type"),
                format!("input items of type `{other}` are not supported (expected message, function_call, function_call_output, reasoning or a built-in tool's call)"),
            ))
        }
    }
    Ok(())
}

/// A `message` item as a chat message.
fn message(obj: &serde_json::Map<String, Value>, path: &str) -> Result<Message, InputError> {
    let role = match obj.get("role").and_then(Value::as_str) {
        Some(r @ ("user" | "system" | "developer" | "assistant")) => Role::named(r),
        Some(r) => {
            return Err(bad(
                format!("{path}.role"),
                format!("role `{r}` is not one of user, system, developer, assistant"),
            ))
        }
        None => return Err(bad(format!("{path}.role"), "expected a string")),
    };
    let content = match obj.get("content") {
        Some(Value::String(s)) => Content::Text(s.clone()),
        Some(Value::Array(parts)) => {
            let mut out = Vec::with_capacity(parts.len());
            for (j, part) in parts.iter().enumerate() {
                out.push(content_part(part, &format!("{path}.content[{j}]"))?);
            }
            match role {
                // The chat API wants an assistant's content as text.
                Role::Assistant => Content::Text(Content::Parts(out).joined_text()),
                _ => Content::Parts(out),
            }
        }
        _ => {
            return Err(bad(
                format!("{path}.content"),
                "expected a string or a list of content parts",
            ))
        }
    };
    let mut m = Message::new(role, "");
    m.content = Some(content);
    Ok(m)
}

/// One content part of a message item.
fn content_part(part: &Value, path: &str) -> Result<ContentPart, InputError> {
    let kind = part.get("type").and_then(Value::as_str).unwrap_or("");
    match kind {
        "input_text" | "output_text" => match part.get("text").and_then(Value::as_str) {
            Some(t) => Ok(ContentPart::text(t)),
            None => Err(bad(format!("{path}.text"), "expected a string")),
        },
        "input_image" => match part.get("image_url").and_then(Value::as_str) {
            Some(url) => {
                let mut p = ContentPart::image_url(url);
                if let (ContentPart::ImageUrl { image_url, .. }, Some(d)) =
                    (&mut p, part.get("detail").and_then(Value::as_str))
                {
                    image_url.detail = Some(d.to_string());
                }
                Ok(p)
            }
            None => Err(bad(
                format!("{path}.image_url"),
                "expected a URL (file_id images are not supported)",
            )),
        },
        other => Err(bad(
            format!("{path}.type"),
            format!("content parts of type `{other}` are not supported (expected input_text, output_text or input_image)"),
        )),
    }
}

/// The text of a list of text parts (a function output given as parts).
fn text_of(parts: &Value, path: &str) -> Result<String, InputError> {
    let mut text = String::new();
    for (j, part) in parts.as_array().into_iter().flatten().enumerate() {
        match content_part(part, &format!("{path}[{j}]"))? {
            ContentPart::Text { text: t, .. } => text.push_str(&t),
            _ => return Err(bad(format!("{path}[{j}]"), "expected a text part")),
        }
    }
    Ok(text)
}

/// Whether `t` is one of OpenAI's built-in tools.
fn is_builtin(t: &Value) -> bool {
    t.get("type")
        .and_then(Value::as_str)
        .is_some_and(|k| crate::responses::BUILTIN_TOOLS.contains(&k))
}

/// A function tool as a chat tool.
fn tool(t: &Value, i: usize) -> Result<Tool, InputError> {
    let path = format!("tools[{i}]");
    match t.get("type").and_then(Value::as_str) {
        Some("function") => {}
        Some(other) => {
            return Err(bad(
                format!("{path}.type"),
                format!(
                    "tools of type `{other}` are not supported (function tools, or a built-in tool: {})",
                    crate::responses::BUILTIN_TOOLS.join(", ")
                ),
            ))
        }
        None => return Err(bad(format!("{path}.type"), "expected a string")),
    }
    let Some(name) = t.get("name").and_then(Value::as_str) else {
        return Err(bad(format!("{path}.name"), "expected a string"));
    };
    let description = t
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_string);
    let mut tool = Tool::function(name, description, t.get("parameters").cloned());
    tool.function.strict = t.get("strict").and_then(Value::as_bool);
    Ok(tool)
}

/// A Responses tool choice as a chat tool choice.
fn tool_choice(c: &Value) -> Result<Value, InputError> {
    match c {
        Value::String(s) if matches!(s.as_str(), "none" | "auto" | "required") => Ok(c.clone()),
        Value::Object(o) if o.get("type").and_then(Value::as_str) == Some("function") => {
            match o.get("name").and_then(Value::as_str) {
                Some(name) => Ok(json!({"type": "function", "function": {"name": name}})),
                None => Err(bad("tool_choice.name", "expected a string")),
            }
        }
        _ => Err(bad(
            "tool_choice",
            "expected \"none\", \"auto\", \"required\" or {\"type\": \"function\", \"name\": ...}",
        )),
    }
}

/// A response to `req` with no output yet (`status: in_progress`): what a
/// stream announces first, and what [`chat_to_response`] fills in.
pub fn response_shell(req: &ResponsesRequest, id: &str, created_at: u64) -> Response {
    let text = match &req.text {
        Some(t) => serde_json::to_value(t).unwrap_or(Value::Null),
        None => json!({"format": {"type": "text"}}),
    };
    Response {
        id: id.to_string(),
        object: "response".to_string(),
        created_at,
        status: "in_progress".to_string(),
        error: None,
        incomplete_details: None,
        instructions: req.instructions.clone(),
        max_output_tokens: req.max_output_tokens,
        model: req.model.clone(),
        output: Vec::new(),
        parallel_tool_calls: req.parallel_tool_calls.unwrap_or(true),
        previous_response_id: req.previous_response_id.clone(),
        store: req.store.unwrap_or(true),
        temperature: req.temperature,
        text,
        tool_choice: req.tool_choice.clone().unwrap_or_else(|| json!("auto")),
        tools: req.tools.clone().unwrap_or_default(),
        top_p: req.top_p,
        usage: None,
        user: req.user.clone(),
        metadata: req.metadata.clone().unwrap_or_else(|| json!({})),
        extra: crate::responses::Extra::new(),
    }
}

/// The status and `incomplete_details` of a chat finish reason.
pub fn finish_status(finish_reason: Option<&str>) -> (&'static str, Option<Value>) {
    match finish_reason {
        Some("length") => ("incomplete", Some(json!({"reason": "max_output_tokens"}))),
        Some("content_filter") => ("incomplete", Some(json!({"reason": "content_filter"}))),
        _ => ("completed", None),
    }
}

/// A message output item holding `text`.
pub fn message_item(id: &str, text: &str, status: &str) -> Value {
    json!({
        "id": id, "type": "message", "role": "assistant", "status": status,
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    })
}

/// A function call output item.
pub fn function_call_item(id: &str, call: &ToolCall, status: &str) -> Value {
    json!({
        "id": id, "type": "function_call", "status": status, "call_id": call.id,
        "name": call.function.name, "arguments": call.function.arguments,
    })
}

/// Chat usage as Responses usage.
pub fn usage(u: &crate::openai::Usage) -> ResponseUsage {
    // Cached and reasoning tokens where the answer counted them.
    let detail = |outer: &str, inner: &str| {
        u.extra
            .get(outer)
            .and_then(|d| d.get(inner))
            .and_then(Value::as_u64)
            .unwrap_or(0)
    };
    ResponseUsage {
        input_tokens: u.prompt_tokens,
        input_tokens_details: json!({"cached_tokens": detail("prompt_tokens_details", "cached_tokens")}),
        output_tokens: u.completion_tokens,
        output_tokens_details: json!({"reasoning_tokens": detail("completion_tokens_details", "reasoning_tokens")}),
        total_tokens: u.total_tokens,
    }
}

/// The Response of a chat answer to `req`: `shell` (from
/// [`response_shell`]) with the first choice's text and tool calls as
/// output items. Item ids derive from the response's.
pub fn chat_to_response(chat: &ChatResponse, mut shell: Response) -> Response {
    let suffix = shell.id.trim_start_matches("resp_").to_string();
    let choice = chat.choices.first();
    let (status, details) = finish_status(choice.and_then(|c| c.finish_reason.as_deref()));
    if let Some(c) = choice {
        let text = c.message.text().unwrap_or_default();
        if !text.is_empty() || c.message.tool_calls.is_none() {
            shell
                .output
                .push(message_item(&format!("msg_{suffix}"), &text, status));
        }
        for (i, call) in c.message.tool_calls.iter().flatten().enumerate() {
            shell.output.push(function_call_item(
                &format!("fc_{suffix}_{i}"),
                call,
                "completed",
            ));
        }
    }
    shell.status = status.to_string();
    shell.incomplete_details = details;
    shell.usage = chat.usage.as_ref().map(usage);
    shell
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::openai::{ChatRequest, Choice, Usage};

    fn req(v: Value) -> ResponsesRequest {
        serde_json::from_value(v).unwrap()
    }

    fn chat_json(r: &ChatRequest) -> Value {
        serde_json::to_value(r).unwrap()
    }

    #[test]
    fn a_string_input_with_instructions_is_a_system_and_a_user_message() {
        let r = req(
            json!({"model": "gpt", "input": "Hi", "instructions": "Be brief",
            "max_output_tokens": 50, "temperature": 0.5}),
        );
        let chat = responses_to_chat(&r, &[]).unwrap();
        assert_eq!(
            chat_json(&chat),
            json!({"model": "gpt", "messages": [
                {"role": "system", "content": "Be brief"},
                {"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
                "max_completion_tokens": 50, "temperature": 0.5})
        );
    }

    #[test]
    fn items_become_messages_tool_calls_and_tool_results() {
        let r = req(json!({"model": "gpt", "input": [
            {"role": "user", "content": "What's the weather?"},
            {"type": "message", "role": "user", "content": [
                {"type": "input_text", "text": "In Paris"},
                {"type": "input_image", "image_url": "https://x/y.png", "detail": "low"}]},
            {"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{\"city\":\"Paris\"}"},
            {"type": "function_call", "call_id": "c2", "name": "time", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {"type": "function_call_output", "call_id": "c2", "output": "noon"},
            {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Sunny."}]}],
            "tools": [{"type": "function", "name": "weather", "parameters": {"type": "object"}, "strict": true}],
            "tool_choice": {"type": "function", "name": "weather"}, "parallel_tool_calls": false}));
        let chat = chat_json(&responses_to_chat(&r, &[]).unwrap());
        assert_eq!(
            chat["messages"],
            json!([
                {"role": "user", "content": "What's the weather?"},
                {"role": "user", "content": [{"type": "text", "text": "In Paris"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "low"}}]},
                {"role": "assistant", "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "c2", "type": "function", "function": {"name": "time", "arguments": "{}"}}]},
                {"role": "tool", "content": "sunny", "tool_call_id": "c1"},
                {"role": "tool", "content": "noon", "tool_call_id": "c2"},
                {"role": "assistant", "content": "Sunny."}])
        );
        assert_eq!(
            chat["tools"],
            json!([{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}, "strict": true}}])
        );
        assert_eq!(
            chat["tool_choice"],
            json!({"type": "function", "function": {"name": "weather"}})
        );
        assert_eq!(chat["parallel_tool_calls"], json!(false));
    }

    #[test]
    fn history_comes_before_the_input_and_answers_its_calls() {
        let history = vec![
            json!({"type": "message", "role": "user", "content": "Weather?"}),
            json!({"type": "function_call", "call_id": "c1", "name": "weather", "arguments": "{}"}),
        ];
        let r = req(json!({"model": "gpt", "input": [
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"}]}));
        let chat = responses_to_chat(&r, &history).unwrap();
        assert_eq!(chat.messages.len(), 3);
        assert_eq!(chat.messages[2].tool_call_id.as_deref(), Some("c1"));
    }

    #[test]
    fn text_formats_become_response_formats() {
        let schema = json!({"type": "object", "properties": {"a": {"type": "string"}}});
        let r = req(json!({"model": "gpt", "input": "x", "text": {"format":
            {"type": "json_schema", "name": "thing", "schema": schema, "strict": true}}}));
        assert_eq!(
            chat_json(&responses_to_chat(&r, &[]).unwrap())["response_format"],
            json!({"type": "json_schema", "json_schema": {"name": "thing", "schema": schema, "strict": true}})
        );
        let r =
            req(json!({"model": "gpt", "input": "x", "text": {"format": {"type": "json_object"}}}));
        assert_eq!(
            responses_to_chat(&r, &[]).unwrap().response_format,
            Some(ResponseFormat::JsonObject)
        );
        let r = req(json!({"model": "gpt", "input": "x", "text": {"format": {"type": "text"}}}));
        assert_eq!(responses_to_chat(&r, &[]).unwrap().response_format, None);
    }

    #[test]
    fn malformed_inputs_are_errors_that_name_the_item() {
        for (input, tools, want) in [
            (json!([{"type": "function_call_output", "call_id": "nope", "output": "x"}]), json!(null),
             "input[0].call_id: no function_call with call_id \"nope\" precedes this function_call_output"),
            (json!([{"role": "wizard", "content": "x"}]), json!(null),
             "input[0].role: role `wizard` is not one of user, system, developer, assistant"),
            (json!(["x"]), json!(null), "input[0]: expected an input item (an object)"),
            (json!([{"role": "user", "content": [{"type": "input_audio"}]}]), json!(null),
             "input[0].content[0].type: content parts of type `input_audio` are not supported (expected input_text, output_text or input_image)"),
            (json!([{"type": "computer_call_output"}]), json!(null),
             "input[0].type: input items of type `computer_call_output` are not supported (expected message, function_call, function_call_output, reasoning or a built-in tool's call)"),
            (json!([{"type": "web_search_call", "id": "ws_1"}]), json!(null),
             "input: holds nothing to answer: no message, function_call or function_call_output"),
            (json!([{"type": "function_call", "call_id": "c", "name": "f"}]), json!(null),
             "input[0].arguments: expected a string"),
            (json!("x"), json!([{"type": "teleport"}]),
             "tools[0].type: tools of type `teleport` are not supported (function tools, or a built-in tool: web_search, web_search_preview, file_search, code_interpreter, computer_use_preview, image_generation, mcp, local_shell, shell, custom)"),
        ] {
            let mut v = json!({"model": "gpt", "input": input});
            if !tools.is_null() {
                v["tools"] = tools;
            }
            let err = responses_to_chat(&req(v), &[]).unwrap_err();
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn reasoning_and_the_providers_own_tool_calls_are_left_out() {
        let history = [
            json!({"type": "message", "role": "user", "content": "News?"}),
            json!({"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAA"}),
            json!({"type": "web_search_call", "id": "ws_1", "status": "completed",
                   "action": {"type": "search", "query": "news"}}),
            json!({"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "Turtles.", "annotations": []}]}),
        ];
        let chat =
            responses_to_chat(&req(json!({"model": "gpt", "input": "More?"})), &history).unwrap();
        let texts: Vec<_> = chat.messages.iter().map(|m| m.text()).collect();
        assert_eq!(
            texts,
            [
                Some("News?".into()),
                Some("Turtles.".into()),
                Some("More?".into())
            ]
        );
    }

    fn answer(text: Option<&str>, calls: Option<Vec<ToolCall>>, finish: &str) -> ChatResponse {
        let mut m = Message::assistant(text.unwrap_or(""));
        if text.is_none() {
            m.content = None;
        }
        m.tool_calls = calls;
        let mut r: ChatResponse = serde_json::from_value(json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4o",
            "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}))
        .unwrap();
        r.choices.push(Choice {
            index: 0,
            message: m,
            finish_reason: Some(finish.to_string()),
            logprobs: None,
            extra: Extra::new(),
        });
        r.usage = Some(Usage {
            prompt_tokens: 5,
            completion_tokens: 7,
            total_tokens: 12,
            extra: Extra::new(),
        });
        r
    }

    #[test]
    fn an_answer_becomes_output_items_usage_and_a_status() {
        let r = req(json!({"model": "gpt", "input": "Hi", "metadata": {"k": "v"}}));
        let shell = response_shell(&r, "resp_abc", 7);
        let out = chat_to_response(&answer(Some("Hello"), None, "stop"), shell.clone());
        let v = serde_json::to_value(&out).unwrap();
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["model"], "gpt");
        assert_eq!(v["created_at"], 7);
        assert_eq!(v["metadata"], json!({"k": "v"}));
        assert_eq!(
            v["output"],
            json!([{"id": "msg_abc", "type": "message", "role": "assistant", "status": "completed",
                "content": [{"type": "output_text", "text": "Hello", "annotations": []}]}])
        );
        assert_eq!(v["usage"]["input_tokens"], 5);
        assert_eq!(v["usage"]["output_tokens"], 7);
        assert_eq!(v["usage"]["total_tokens"], 12);

        let cut = chat_to_response(&answer(Some("Hel"), None, "length"), shell.clone());
        assert_eq!(cut.status, "incomplete");
        assert_eq!(
            cut.incomplete_details,
            Some(json!({"reason": "max_output_tokens"}))
        );

        let calls = vec![ToolCall::function(
            "call_1",
            "weather",
            "{\"city\":\"Paris\"}",
        )];
        let out = chat_to_response(&answer(None, Some(calls), "tool_calls"), shell);
        assert_eq!(
            serde_json::to_value(&out.output).unwrap(),
            json!([{"id": "fc_abc_0", "type": "function_call", "status": "completed", "call_id": "call_1",
                "name": "weather", "arguments": "{\"city\":\"Paris\"}"}])
        );
    }
}
