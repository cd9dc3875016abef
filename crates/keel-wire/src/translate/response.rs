//! Non-streamed response translation, both ways.

use serde_json::Value;

use super::{
    ausage_from_openai, finish_to_stop_reason, stop_to_finish_reason, usage_from_anthropic,
};
use crate::anthropic::{ARole, ContentBlock, Extra, MessagesResponse};
use crate::openai::{ChatResponse, Choice, Content, Message, Role, ToolCall};

/// Translates an Anthropic response for an OpenAI client.
///
/// Text blocks are joined into the message content, `tool_use` blocks become
/// `tool_calls` (content is then `None` if there was no text), thinking
/// blocks are dropped. Usage counts cache reads and writes as prompt tokens.
///
/// `created` is 0: this crate does not read the clock, the caller stamps it.
pub fn anthropic_to_openai_response(resp: &MessagesResponse) -> ChatResponse {
    let mut text = String::new();
    let mut calls = Vec::new();
    for block in &resp.content {
        match block {
            ContentBlock::Text { text: t, .. } => text.push_str(t),
            ContentBlock::ToolUse {
                id, name, input, ..
            } => {
                calls.push(ToolCall::function(
                    id.clone(),
                    name.clone(),
                    input.to_string(),
                ));
            }
            _ => {}
        }
    }
    let mut message = Message::new(Role::Assistant, text);
    if !calls.is_empty() {
        if message.content == Some(Content::Text(String::new())) {
            message.content = None;
        }
        message.tool_calls = Some(calls);
    }
    let u = &resp.usage;
    ChatResponse {
        id: resp.id.clone(),
        object: "chat.completion".to_owned(),
        created: 0,
        model: resp.model.clone(),
        choices: vec![Choice {
            index: 0,
            message,
            finish_reason: resp
                .stop_reason
                .as_deref()
                .map(|s| stop_to_finish_reason(s).to_owned()),
            logprobs: None,
            extra: Extra::new(),
        }],
        usage: Some(usage_from_anthropic(
            u.input_tokens,
            u.cache_creation_input_tokens,
            u.cache_read_input_tokens,
            u.output_tokens,
        )),
        system_fingerprint: None,
        extra: Extra::new(),
    }
}

/// Translates an OpenAI response for an Anthropic client.
///
/// The first choice becomes the message: its text (or refusal) one text
/// block, each tool call a `tool_use` block. Arguments that are not valid
/// JSON are passed as a JSON string rather than dropped. Usage splits
/// OpenAI's cached prompt tokens out as `cache_read_input_tokens`.
pub fn openai_to_anthropic_response(resp: &ChatResponse) -> MessagesResponse {
    let mut content = Vec::new();
    let choice = resp.choices.first();
    if let Some(choice) = choice {
        let msg = &choice.message;
        let text = msg.text().unwrap_or_default();
        if !text.is_empty() {
            content.push(ContentBlock::text(text));
        }
        if let Some(refusal) = msg.refusal.as_ref().filter(|r| !r.is_empty()) {
            content.push(ContentBlock::text(refusal.clone()));
        }
        for call in msg.tool_calls.iter().flatten() {
            let input = serde_json::from_str(&call.function.arguments)
                .unwrap_or_else(|_| Value::String(call.function.arguments.clone()));
            content.push(ContentBlock::tool_use(
                call.id.clone(),
                call.function.name.clone(),
                input,
            ));
        }
    }
    MessagesResponse {
        id: resp.id.clone(),
        r#type: "message".to_owned(),
        role: ARole::Assistant,
        model: resp.model.clone(),
        content,
        stop_reason: choice
            .and_then(|c| c.finish_reason.as_deref())
            .map(|f| finish_to_stop_reason(f).to_owned()),
        stop_sequence: None,
        usage: resp
            .usage
            .as_ref()
            .map(ausage_from_openai)
            .unwrap_or_default(),
        extra: Extra::new(),
    }
}

/// Turns the answer of the JSON-schema tool (see [`super::json_schema_tool`])
/// into text: the `tool_use` block named `tool_name` becomes a text block
/// holding its input as JSON, other tool calls are dropped, and a
/// `tool_use` stop reason becomes `end_turn`. A response that did not call
/// the tool is returned unchanged.
pub fn json_schema_tool_to_text(resp: &MessagesResponse, tool_name: &str) -> MessagesResponse {
    let answer = resp.content.iter().find_map(|b| match b {
        ContentBlock::ToolUse { name, input, .. } if name == tool_name => Some(input.to_string()),
        _ => None,
    });
    let Some(answer) = answer else {
        return resp.clone();
    };
    let mut out = resp.clone();
    out.content = vec![ContentBlock::text(answer)];
    if out.stop_reason.as_deref() == Some("tool_use") {
        out.stop_reason = Some("end_turn".to_owned());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::anthropic::AUsage;

    #[test]
    fn default_usage_when_openai_has_none() {
        let resp = ChatResponse {
            id: "x".into(),
            object: "chat.completion".into(),
            created: 1,
            model: "m".into(),
            choices: vec![],
            usage: None,
            system_fingerprint: None,
            extra: Extra::new(),
        };
        let a = openai_to_anthropic_response(&resp);
        assert_eq!(a.usage, AUsage::default());
        assert!(a.content.is_empty());
        assert_eq!(a.stop_reason, None);
    }
}
