//! Reading the work: a JSONL file in the OpenAI Batch API shape (chat
//! completions and embeddings lines), or a directory of text files and a
//! prompt template.
//!
//! The whole input is read and checked before anything is written, so a
//! duplicate `custom_id` on line 90,000 stops the run before it spends a
//! cent. A line that is merely malformed does not stop the run: it is
//! reported with its line number and sent to the dead-letter file, because
//! one bad line out of 100,000 should not hold up the other 99,999.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::{Path, PathBuf};

use keel_wire::embeddings::EmbeddingsRequest;
use keel_wire::openai::ChatRequest;
use serde_json::{Map, Value};

use super::BatchError;

/// The chat endpoint (a line's default).
pub const CHAT_URL: &str = "/v1/chat/completions";
/// The embeddings endpoint.
pub const EMBEDDINGS_URL: &str = "/v1/embeddings";
/// The Responses endpoint.
pub const RESPONSES_URL: &str = "/v1/responses";

/// What a line asks for.
#[derive(Clone, Debug)]
pub enum BatchRequest {
    /// A chat completion (boxed: much the larger).
    Chat(Box<ChatRequest>),
    /// Embeddings.
    Embeddings(EmbeddingsRequest),
    /// A Responses request (boxed: much the larger).
    Responses(Box<ResponsesLine>),
}

/// A `/v1/responses` line: the request, its chat translation, the body a
/// native Responses deployment is sent, and what it needs of a deployment.
#[derive(Clone, Debug)]
pub struct ResponsesLine {
    /// The request (`model` names the route).
    pub request: keel_wire::responses::ResponsesRequest,
    /// Its chat translation, for every deployment but native ones.
    pub chat: ChatRequest,
    /// The body a native Responses deployment gets.
    pub body: bytes::Bytes,
    /// Built-in tools, `reasoning`, native-only fields.
    pub needs: keel_engine::ResponsesNeeds,
}

impl BatchRequest {
    /// The route.
    pub fn model(&self) -> &str {
        match self {
            BatchRequest::Chat(r) => &r.model,
            BatchRequest::Embeddings(r) => &r.model,
            BatchRequest::Responses(r) => &r.request.model,
        }
    }

    /// Tokens it is expected to use (prompt and output), for pacing.
    pub fn estimated_tokens(&self) -> u64 {
        match self {
            BatchRequest::Chat(r) => chat_tokens(r),
            BatchRequest::Responses(r) => chat_tokens(&r.chat),
            BatchRequest::Embeddings(r) => r
                .inputs
                .iter()
                .map(|i| u64::from(keel_wire::embeddings::input_tokens(i)))
                .sum(),
        }
    }

    /// The chat request, for a chat line.
    pub fn chat(&self) -> Option<&ChatRequest> {
        match self {
            BatchRequest::Chat(r) => Some(r),
            BatchRequest::Embeddings(_) | BatchRequest::Responses(_) => None,
        }
    }
}

/// Tokens a chat request is expected to use (prompt and output).
fn chat_tokens(r: &ChatRequest) -> u64 {
    r.prompt_text_len() as u64 / 4
        + 4 * r.messages.len() as u64
        + 3
        + u64::from(r.effective_max_tokens().unwrap_or(512))
}

/// One request to run.
#[derive(Clone, Debug)]
pub struct Item {
    /// The caller's id, unique in the input.
    pub custom_id: String,
    /// 1-based line in a JSONL input; 0 for a file of a directory input.
    pub line: usize,
    /// The original line object (`custom_id`, `method`, `url`, `body`, and
    /// anything else), kept to write a dead letter that can be fed back.
    pub original: Map<String, Value>,
    /// The parsed request, `model` set to the route, `stream` off.
    pub request: BatchRequest,
}

/// A line that could not become an [`Item`].
#[derive(Clone, Debug)]
pub struct Malformed {
    /// 1-based line (0 for a file of a directory input).
    pub line: usize,
    /// Its `custom_id`, when one could be read.
    pub custom_id: Option<String>,
    /// The line as read (a file name for a directory input).
    pub raw: String,
    /// What is wrong with it.
    pub message: String,
}

/// The checked input.
#[derive(Debug, Default)]
pub struct Input {
    /// Requests, in input order.
    pub items: Vec<Item>,
    /// Lines that go straight to the dead-letter file.
    pub malformed: Vec<Malformed>,
}

/// How to turn a line's `body.model` into a route.
#[derive(Clone, Debug)]
pub struct RouteChoice {
    /// `--route`: every request goes there.
    pub forced: Option<String>,
    /// Used when a body has no `model` (and for directory inputs).
    pub default: Option<String>,
}

impl RouteChoice {
    fn pick(&self, model: Option<&str>) -> Option<String> {
        self.forced
            .clone()
            .or_else(|| model.map(str::to_string))
            .or_else(|| self.default.clone())
    }
}

/// Reads `path`: a JSONL file, or a directory rendered through `template`.
pub fn load(
    path: &Path,
    template: Option<&Path>,
    routes: &RouteChoice,
) -> Result<Input, BatchError> {
    let meta = std::fs::metadata(path).map_err(|e| BatchError::Input {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    if meta.is_dir() {
        load_dir(path, template, routes)
    } else {
        if template.is_some() {
            return Err(BatchError::Input {
                path: path.to_path_buf(),
                message: "--template applies to a directory input, and this is a file".into(),
            });
        }
        load_jsonl(path, routes)
    }
}

fn load_jsonl(path: &Path, routes: &RouteChoice) -> Result<Input, BatchError> {
    let file = std::fs::File::open(path).map_err(|e| BatchError::Input {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    let reader = std::io::BufReader::new(file);
    let mut input = Input::default();
    let mut first_seen: HashMap<String, usize> = HashMap::new();
    for (i, line) in reader.split(b'\n').enumerate() {
        let n = i + 1;
        let bytes = line.map_err(|e| BatchError::Input {
            path: path.to_path_buf(),
            message: format!("line {n}: {e}"),
        })?;
        let raw = match String::from_utf8(bytes) {
            Ok(s) => s,
            Err(e) => {
                input.malformed.push(Malformed {
                    line: n,
                    custom_id: None,
                    raw: String::from_utf8_lossy(e.as_bytes()).into_owned(),
                    message: "not UTF-8 text".into(),
                });
                continue;
            }
        };
        let text = raw.trim();
        if text.is_empty() {
            continue;
        }
        match parse_line(text, routes) {
            Ok(item) => {
                check_unique(path, &mut first_seen, &item.custom_id, n)?;
                input.items.push(Item { line: n, ..item });
            }
            Err((custom_id, message)) => {
                if let Some(id) = &custom_id {
                    check_unique(path, &mut first_seen, id, n)?;
                }
                input.malformed.push(Malformed {
                    line: n,
                    custom_id,
                    raw: text.to_string(),
                    message,
                });
            }
        }
    }
    Ok(input)
}

fn check_unique(
    path: &Path,
    seen: &mut HashMap<String, usize>,
    id: &str,
    line: usize,
) -> Result<(), BatchError> {
    if let Some(&first) = seen.get(id) {
        return Err(BatchError::Duplicate {
            path: path.to_path_buf(),
            line,
            first,
            custom_id: id.to_string(),
        });
    }
    seen.insert(id.to_string(), line);
    Ok(())
}

/// Parses one JSONL line; on failure, the `custom_id` (if readable) and why.
fn parse_line(text: &str, routes: &RouteChoice) -> Result<Item, (Option<String>, String)> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| (None, format!("not valid JSON: {e}")))?;
    let Value::Object(mut obj) = value else {
        return Err((None, "expected a JSON object".into()));
    };
    // Written by a previous run's dead letter; not part of the request.
    obj.remove("keel_error");
    let custom_id = match obj.get("custom_id") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        Some(Value::String(_)) => return Err((None, "`custom_id` is empty".into())),
        Some(other) => {
            return Err((
                None,
                format!("`custom_id` must be a string, got {}", type_name(other)),
            ))
        }
        None => return Err((None, "missing `custom_id`".into())),
    };
    let fail = |m: String| (Some(custom_id.clone()), m);
    match obj.get("method") {
        None => {}
        Some(Value::String(m)) if m.eq_ignore_ascii_case("POST") => {}
        Some(other) => return Err(fail(format!("`method` must be \"POST\", got {other}"))),
    }
    let url = match obj.get("url") {
        None => CHAT_URL,
        Some(Value::String(u)) if u == CHAT_URL || u == "/chat/completions" => CHAT_URL,
        Some(Value::String(u)) if u == EMBEDDINGS_URL || u == "/embeddings" => EMBEDDINGS_URL,
        Some(Value::String(u)) if u == RESPONSES_URL || u == "/responses" => RESPONSES_URL,
        Some(other) => {
            return Err(fail(format!(
                "`url` must be \"{CHAT_URL}\", \"{EMBEDDINGS_URL}\" or \"{RESPONSES_URL}\" (the endpoints keel batch runs), got {other}"
            )))
        }
    };
    let body = match obj.get("body") {
        Some(Value::Object(b)) => b.clone(),
        Some(other) => {
            return Err(fail(format!(
                "`body` must be an object, got {}",
                type_name(other)
            )))
        }
        None => return Err(fail("missing `body`".into())),
    };
    let request = match url {
        EMBEDDINGS_URL => embeddings_from_body(body, routes).map(BatchRequest::Embeddings),
        RESPONSES_URL => {
            responses_from_body(body, routes).map(|r| BatchRequest::Responses(Box::new(r)))
        }
        _ => request_from_body(body, routes).map(|r| BatchRequest::Chat(Box::new(r))),
    }
    .map_err(fail)?;
    Ok(Item {
        custom_id,
        line: 0,
        original: obj,
        request,
    })
}

/// Validates a body as a chat request and points it at its route.
fn request_from_body(
    mut body: Map<String, Value>,
    routes: &RouteChoice,
) -> Result<ChatRequest, String> {
    let model = body.get("model").and_then(Value::as_str);
    let Some(route) = routes.pick(model) else {
        return Err("`body.model` is missing and no --route was given".into());
    };
    body.insert("model".into(), Value::String(route));
    // A batch wants whole answers; a streamed one would have to be reassembled.
    body.remove("stream");
    body.remove("stream_options");
    serde_json::from_value::<ChatRequest>(Value::Object(body))
        .map_err(|e| format!("`body` is not a chat completion request: {e}"))
}

/// Validates a body as a Responses request, points it at its route and
/// translates it (a bad input item is the line's error, naming the item).
/// A batch line carries its whole conversation: `previous_response_id`
/// is refused (batch answers are not stored).
fn responses_from_body(
    mut body: Map<String, Value>,
    routes: &RouteChoice,
) -> Result<ResponsesLine, String> {
    let model = body.get("model").and_then(Value::as_str);
    let Some(route) = routes.pick(model) else {
        return Err("`body.model` is missing and no --route was given".into());
    };
    body.insert("model".into(), Value::String(route));
    body.remove("stream");
    if body.contains_key("previous_response_id") {
        return Err("`body.previous_response_id` is not supported by keel batch (its answers are not stored): give the whole conversation in `body.input`".into());
    }
    let bytes = serde_json::to_vec(&body).map_err(|e| e.to_string())?;
    let request: keel_wire::responses::ResponsesRequest =
        serde_json::from_value(Value::Object(body))
            .map_err(|e| format!("`body` is not a Responses request: {e}"))?;
    let needs = keel_engine::ResponsesNeeds::of(&request).map_err(|e| format!("`body.{e}"))?;
    let chat =
        keel_wire::translate::responses_to_chat(&request, &[]).map_err(|e| format!("`body.{e}"))?;
    Ok(ResponsesLine {
        request,
        chat,
        body: bytes.into(),
        needs,
    })
}

/// Validates a body as an embeddings request and points it at its route.
fn embeddings_from_body(
    mut body: Map<String, Value>,
    routes: &RouteChoice,
) -> Result<EmbeddingsRequest, String> {
    let model = body.get("model").and_then(Value::as_str);
    let Some(route) = routes.pick(model) else {
        return Err("`body.model` is missing and no --route was given".into());
    };
    body.insert("model".into(), Value::String(route));
    let bytes = serde_json::to_vec(&Value::Object(body)).map_err(|e| e.to_string())?;
    EmbeddingsRequest::from_json(&bytes)
        .map_err(|e| format!("`body` is not an embeddings request: {}", e.message))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The placeholder a template must contain.
pub const CONTENT_PLACEHOLDER: &str = "{{content}}";

fn load_dir(
    dir: &Path,
    template: Option<&Path>,
    routes: &RouteChoice,
) -> Result<Input, BatchError> {
    let template = match template {
        None => CONTENT_PLACEHOLDER.to_string(),
        Some(t) => {
            let text = std::fs::read_to_string(t).map_err(|e| BatchError::Input {
                path: t.to_path_buf(),
                message: format!("cannot read the template: {e}"),
            })?;
            if !text.contains(CONTENT_PLACEHOLDER) {
                return Err(BatchError::Input {
                    path: t.to_path_buf(),
                    message: format!(
                        "the template has no {CONTENT_PLACEHOLDER} placeholder for the file's text"
                    ),
                });
            }
            text
        }
    };
    let Some(route) = routes.pick(None) else {
        return Err(BatchError::Input {
            path: dir.to_path_buf(),
            message: "a directory input needs --route (the config has several routes)".into(),
        });
    };
    let entries = std::fs::read_dir(dir).map_err(|e| BatchError::Input {
        path: dir.to_path_buf(),
        message: e.to_string(),
    })?;
    let mut files: Vec<(String, PathBuf)> = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| BatchError::Input {
            path: dir.to_path_buf(),
            message: e.to_string(),
        })?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_file = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if is_file && !name.starts_with('.') {
            files.push((name, entry.path()));
        }
    }
    files.sort();
    let mut input = Input::default();
    for (name, path) in files {
        let text = match std::fs::read(&path).map(String::from_utf8) {
            Ok(Ok(t)) => t,
            Ok(Err(_)) => {
                input.malformed.push(Malformed {
                    line: 0,
                    custom_id: Some(name.clone()),
                    raw: name,
                    message: "not UTF-8 text".into(),
                });
                continue;
            }
            Err(e) => {
                return Err(BatchError::Input {
                    path,
                    message: e.to_string(),
                })
            }
        };
        let prompt = template
            .replace(CONTENT_PLACEHOLDER, &text)
            .replace("{{file_name}}", &name);
        let body = serde_json::json!({
            "model": route,
            "messages": [{"role": "user", "content": prompt}],
        });
        let mut original = Map::new();
        original.insert("custom_id".into(), Value::String(name.clone()));
        original.insert("method".into(), Value::String("POST".into()));
        original.insert("url".into(), Value::String(CHAT_URL.into()));
        original.insert("body".into(), body.clone());
        let Value::Object(body) = body else {
            continue;
        };
        match request_from_body(body, routes) {
            Ok(request) => input.items.push(Item {
                custom_id: name,
                line: 0,
                original,
                request: BatchRequest::Chat(Box::new(request)),
            }),
            Err(message) => input.malformed.push(Malformed {
                line: 0,
                custom_id: Some(name.clone()),
                raw: name,
                message,
            }),
        }
    }
    Ok(input)
}
