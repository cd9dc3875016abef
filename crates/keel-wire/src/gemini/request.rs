//! Canonical (OpenAI-shaped) requests to Gemini `generateContent` bodies.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::{
    Blob, Extra, FileData, FunctionCallingConfig, FunctionDeclaration, GContent, GFunctionCall,
    GFunctionResponse, GTool, GenerateContentRequest, GenerationConfig, Part, ToolConfig,
};
use crate::openai::{ChatRequest, Content, ContentPart, Message, ResponseFormat, Role};
use crate::translate::TranslateError;

/// Translates a canonical request for a Gemini deployment (the model goes
/// in the URL, see [`super::generate_path`]).
///
/// - `system` and `developer` messages become `systemInstruction`;
/// - `user` turns stay `user`, `assistant` turns become `model`, their
///   `tool_calls` `functionCall` parts (arguments parsed);
/// - `tool` messages become `functionResponse` parts of a `user` turn, named
///   after the call they answer (found by `tool_call_id` earlier in the
///   conversation); a result that is a JSON object is sent as it is, any
///   other as `{"result": ...}`;
/// - consecutive turns of one role are merged (the results of parallel
///   calls then share one turn, as Gemini expects);
/// - images: `data:` URLs become `inlineData`, other URLs `fileData` with a
///   media type guessed from the extension;
/// - `tools` become `functionDeclarations`, `tool_choice` `auto`/`none`/
///   `required`/a named function the calling modes `AUTO`/`NONE`/`ANY`/`ANY`
///   restricted to that name;
/// - `response_format` `json_schema` becomes `responseMimeType`
///   `application/json` with the schema as `responseSchema` (see
///   [`super::response_schema`]), `json_object` the media type alone;
/// - `max_completion_tokens` (else `max_tokens`) becomes `maxOutputTokens`,
///   `stop` `stopSequences`, `temperature`, `top_p` and `seed` are kept.
pub fn openai_to_gemini_request(
    req: &ChatRequest,
) -> Result<GenerateContentRequest, TranslateError> {
    if let Some(n) = req.n.filter(|n| *n > 1) {
        return Err(TranslateError::UnsupportedParameter {
            field: "n",
            reason: format!("Keel asks Gemini for one candidate per request, {n} were asked"),
        });
    }
    let mut system = Vec::new();
    let mut contents: Vec<GContent> = Vec::new();
    // Call id -> function name, for the results that answer them.
    let mut calls: HashMap<&str, &str> = HashMap::new();
    for (index, msg) in req.messages.iter().enumerate() {
        let (role, parts) = match &msg.role {
            Role::System | Role::Developer => {
                system.extend(parts_of(msg, index)?);
                continue;
            }
            Role::User => ("user", parts_of(msg, index)?),
            Role::Assistant => {
                for call in msg.tool_calls.iter().flatten() {
                    calls.insert(&call.id, &call.function.name);
                }
                ("model", model_parts(msg, index)?)
            }
            Role::Tool => ("user", vec![function_response(msg, index, &calls)?]),
            other => {
                return Err(TranslateError::UnsupportedRole {
                    index,
                    role: other.as_str().to_owned(),
                })
            }
        };
        push_merged(&mut contents, role, parts);
    }
    if contents.is_empty() {
        return Err(TranslateError::NoMessages);
    }
    let system_instruction = (!system.is_empty()).then(|| GContent {
        role: None,
        parts: system,
        extra: Extra::new(),
    });
    Ok(GenerateContentRequest {
        contents,
        system_instruction,
        tools: tools(req),
        tool_config: tool_config(req.tool_choice.as_ref()),
        generation_config: generation_config(req),
        extra: Extra::new(),
    })
}

/// The parts of a user or system message.
fn parts_of(msg: &Message, index: usize) -> Result<Vec<Part>, TranslateError> {
    match &msg.content {
        None => Ok(Vec::new()),
        Some(Content::Text(s)) => Ok(vec![Part::text(s.clone())]),
        Some(Content::Parts(parts)) => parts
            .iter()
            .enumerate()
            .map(|(i, p)| content_part(p, &format!("messages[{index}].content[{i}]")))
            .collect(),
    }
}

fn content_part(part: &ContentPart, path: &str) -> Result<Part, TranslateError> {
    match part {
        ContentPart::Text { text, .. } => Ok(Part::text(text.clone())),
        ContentPart::ImageUrl { image_url, .. } => {
            image_part(&image_url.url, &format!("{path}.image_url.url"))
        }
        ContentPart::Other(v) => Err(TranslateError::UnsupportedContent {
            path: path.to_owned(),
            kind: v
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("unknown")
                .to_owned(),
        }),
    }
}

/// `data:<media type>;base64,<data>` to inline data, a URL to file data.
fn image_part(url: &str, path: &str) -> Result<Part, TranslateError> {
    let Some(rest) = url.strip_prefix("data:") else {
        return Ok(Part {
            file_data: Some(FileData {
                mime_type: Some(guess_mime(url).to_owned()),
                file_uri: url.to_owned(),
            }),
            ..Part::default()
        });
    };
    let invalid = |reason: &str| TranslateError::InvalidImageUrl {
        path: path.to_owned(),
        reason: reason.to_owned(),
    };
    let (meta, data) = rest
        .split_once(',')
        .ok_or_else(|| invalid("data: URL has no `,` before its data"))?;
    let mime_type = meta
        .strip_suffix(";base64")
        .ok_or_else(|| invalid("data: URL must be base64-encoded (`;base64,`)"))?;
    if mime_type.is_empty() {
        return Err(invalid("data: URL has no media type"));
    }
    Ok(Part {
        inline_data: Some(Blob {
            mime_type: mime_type.to_owned(),
            data: data.to_owned(),
        }),
        ..Part::default()
    })
}

/// The media type of a URL's file, by its extension (`image/jpeg` when
/// there is none Keel knows: the common case for photos).
fn guess_mime(url: &str) -> &'static str {
    let path = url.split(['?', '#']).next().unwrap_or(url);
    let ext = path
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default();
    match ext.as_str() {
        "png" => "image/png",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "heic" => "image/heic",
        "heif" => "image/heif",
        "pdf" => "application/pdf",
        _ => "image/jpeg",
    }
}

/// An assistant message's parts: its text (or refusal), then its calls.
fn model_parts(msg: &Message, index: usize) -> Result<Vec<Part>, TranslateError> {
    let mut parts = parts_of(msg, index)?;
    if let Some(refusal) = &msg.refusal {
        parts.push(Part::text(refusal.clone()));
    }
    // Gemini rejects empty text parts, which OpenAI clients send beside calls.
    parts.retain(|p| p.text.as_deref() != Some(""));
    for (i, call) in msg.tool_calls.iter().flatten().enumerate() {
        let arguments = call.function.arguments.trim();
        let args = if arguments.is_empty() {
            json!({})
        } else {
            serde_json::from_str(arguments).map_err(|source| {
                TranslateError::InvalidToolArguments {
                    path: format!("messages[{index}].tool_calls[{i}].function.arguments"),
                    source,
                }
            })?
        };
        parts.push(Part {
            function_call: Some(GFunctionCall {
                id: None,
                name: call.function.name.clone(),
                args: Some(args),
            }),
            thought_signature: super::thought_signature_of(&call.extra).map(str::to_owned),
            ..Part::default()
        });
    }
    sign_unsigned_calls(&mut parts);
    Ok(parts)
}

/// A model turn's function calls without any thought signature (made by
/// another model, or by a client that dropped it): the first call gets
/// the signature Google documents for this case
/// ([`super::SKIP_THOUGHT_SIGNATURE`]), as a Gemini 3 model rejects a
/// function-calling step whose first call carries none.
fn sign_unsigned_calls(parts: &mut [Part]) {
    let calls = || parts.iter().filter(|p| p.function_call.is_some());
    if calls().any(|p| p.thought_signature.is_some()) {
        return;
    }
    if let Some(first) = parts.iter_mut().find(|p| p.function_call.is_some()) {
        first.thought_signature = Some(super::SKIP_THOUGHT_SIGNATURE.to_owned());
    }
}

/// A tool message as a `functionResponse` part.
fn function_response(
    msg: &Message,
    index: usize,
    calls: &HashMap<&str, &str>,
) -> Result<Part, TranslateError> {
    let id = msg
        .tool_call_id
        .as_deref()
        .ok_or(TranslateError::MissingToolCallId { index })?;
    let name = calls
        .get(id)
        .ok_or_else(|| TranslateError::UnsupportedParameter {
            field: "messages.tool_call_id",
            reason: format!(
                "messages[{index}] answers call {id:?}, which no earlier assistant message made \
                 (Gemini matches a result to its call by the function's name)"
            ),
        })?;
    let text = msg.text().unwrap_or_default();
    let response = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(o)) => Value::Object(o),
        Ok(other) => json!({ "result": other }),
        Err(_) => json!({ "result": text }),
    };
    Ok(Part {
        function_response: Some(GFunctionResponse {
            id: None,
            name: (*name).to_owned(),
            response,
        }),
        ..Part::default()
    })
}

fn push_merged(contents: &mut Vec<GContent>, role: &str, parts: Vec<Part>) {
    if let Some(last) = contents
        .last_mut()
        .filter(|c| c.role.as_deref() == Some(role))
    {
        last.parts.extend(parts);
        return;
    }
    contents.push(GContent {
        role: Some(role.to_owned()),
        parts,
        extra: Extra::new(),
    });
}

fn tools(req: &ChatRequest) -> Option<Vec<GTool>> {
    let tools = req.tools.as_ref().filter(|t| !t.is_empty())?;
    let declarations = tools
        .iter()
        .map(|t| FunctionDeclaration {
            name: t.function.name.clone(),
            description: t.function.description.clone(),
            parameters: t
                .function
                .parameters
                .as_ref()
                .map(super::response_schema)
                // Gemini rejects an object schema without properties.
                .filter(|p| !is_empty_object(p)),
            extra: Extra::new(),
        })
        .collect();
    Some(vec![GTool {
        function_declarations: Some(declarations),
        extra: Extra::new(),
    }])
}

fn is_empty_object(schema: &Value) -> bool {
    schema.get("type").and_then(Value::as_str) == Some("object")
        && schema
            .get("properties")
            .and_then(Value::as_object)
            .is_none_or(serde_json::Map::is_empty)
}

fn tool_config(choice: Option<&Value>) -> Option<ToolConfig> {
    let (mode, names) = match choice? {
        Value::String(s) => match s.as_str() {
            "none" => ("NONE", None),
            "required" => ("ANY", None),
            _ => ("AUTO", None),
        },
        v => {
            let name = v
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)?;
            ("ANY", Some(vec![name.to_owned()]))
        }
    };
    Some(ToolConfig {
        function_calling_config: FunctionCallingConfig {
            mode: mode.to_owned(),
            allowed_function_names: names,
        },
    })
}

fn generation_config(req: &ChatRequest) -> Option<GenerationConfig> {
    let (mime, schema) = match &req.response_format {
        Some(ResponseFormat::JsonSchema { json_schema }) => (
            Some("application/json".to_owned()),
            json_schema.schema.as_ref().map(super::response_schema),
        ),
        Some(ResponseFormat::JsonObject) => (Some("application/json".to_owned()), None),
        Some(ResponseFormat::Text) | None => (None, None),
    };
    let config = GenerationConfig {
        stop_sequences: req.stop.as_ref().map(|s| s.to_vec()),
        response_mime_type: mime,
        response_schema: schema,
        candidate_count: None,
        max_output_tokens: req.effective_max_tokens(),
        temperature: req.temperature,
        top_p: req.top_p,
        seed: req.seed,
        extra: Extra::new(),
    };
    (config != GenerationConfig::default()).then_some(config)
}
