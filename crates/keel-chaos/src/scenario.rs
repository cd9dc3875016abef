//! Scenarios: which fake upstreams to serve and how each one misbehaves.
//!
//! A scenario is read from TOML (or, for a fault plan, from the control API's
//! JSON). Both are first turned into an untyped tree and then walked by hand,
//! so that every rejection names the exact key path
//! (`upstream[0].fault[1].probability`) and what was expected there: serde's
//! derived errors only know line and column.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

/// A set of fake upstreams, each with its own provider kind, limits and faults.
#[derive(Debug, Clone, PartialEq)]
pub struct Scenario {
    /// The upstreams, served under `/{name}/v1/...`.
    pub upstreams: Vec<UpstreamSpec>,
}

/// Which provider API an upstream speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// OpenAI Chat Completions (`POST /v1/chat/completions`).
    #[serde(rename = "openai")]
    OpenAi,
    /// Anthropic Messages (`POST /v1/messages`).
    Anthropic,
    /// Azure OpenAI (`POST /openai/deployments/{deployment}/chat/completions?api-version=...`
    /// or `POST /openai/v1/chat/completions`).
    Azure,
    /// Google Gemini (`POST /v1beta/models/{model}:generateContent`).
    Gemini,
    /// AWS Bedrock Runtime's Converse (`POST /model/{modelId}/converse`
    /// and `/converse-stream`).
    Bedrock,
}

impl Kind {
    /// The name used in scenario files: `openai` or `anthropic`.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::OpenAi => "openai",
            Kind::Anthropic => "anthropic",
            Kind::Azure => "azure",
            Kind::Gemini => "gemini",
            Kind::Bedrock => "bedrock",
        }
    }
}

/// One fake upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct UpstreamSpec {
    /// Path prefix: the upstream is served at `/{name}/v1`.
    pub name: String,
    /// Provider API spoken.
    pub kind: Kind,
    /// When set, requests without this key get the provider's real 401.
    pub api_key: Option<String>,
    /// Requests per minute, enforced like the provider (429 + rate-limit headers).
    pub rpm: Option<u32>,
    /// Tokens per minute (prompt estimate + `max_tokens`), enforced likewise.
    pub tpm: Option<u32>,
    /// Base time to first byte of every answer.
    pub latency: Duration,
    /// Time between two stream chunks.
    pub token_delay: Duration,
    /// Models served; empty means any model name is accepted.
    pub models: Vec<String>,
    /// Context window in tokens; a longer prompt gets the provider's
    /// context-length error. `None`: unlimited.
    pub context_window: Option<u32>,
    /// Most inputs one embeddings request may carry (OpenAI's own: 2048);
    /// a longer array gets the provider's 400.
    pub max_inputs: Option<u32>,
    /// Gemini: refuse, as Gemini 3 models do, a request whose current turn
    /// has a function-calling step without a valid thought signature on
    /// its first call (Google's skip signature accepted).
    pub require_thought_signatures: bool,
    /// Faults injected into this upstream's answers.
    pub faults: FaultPlan,
}

impl UpstreamSpec {
    /// A healthy, unlimited, instant upstream.
    pub fn new(name: impl Into<String>, kind: Kind) -> Self {
        UpstreamSpec {
            name: name.into(),
            kind,
            api_key: None,
            rpm: None,
            tpm: None,
            latency: Duration::ZERO,
            token_delay: Duration::ZERO,
            models: Vec::new(),
            context_window: None,
            max_inputs: None,
            require_thought_signatures: false,
            faults: FaultPlan::default(),
        }
    }
}

/// An ordered list of fault rules; for each attempt the first rule that matches wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// The rules, in priority order.
    pub faults: Vec<FaultRule>,
}

/// One fault and when it fires.
#[derive(Debug, Clone, PartialEq)]
pub struct FaultRule {
    /// What goes wrong.
    pub fault: Fault,
    /// On which attempts.
    pub when: Trigger,
    /// Only between these offsets from server start (or from the last plan
    /// change, or the last reset). `None`: always.
    pub window: Option<(Duration, Duration)>,
    /// Only for streaming requests.
    pub streaming_only: bool,
    /// Only for non-streaming requests.
    pub non_streaming_only: bool,
}

impl FaultRule {
    /// A rule that fires on the attempts chosen by `when`, at any time.
    pub fn new(fault: Fault, when: Trigger) -> Self {
        FaultRule {
            fault,
            when,
            window: None,
            streaming_only: false,
            non_streaming_only: false,
        }
    }

    /// A rule that fires on every attempt.
    pub fn always(fault: Fault) -> Self {
        Self::new(fault, Trigger::Always)
    }

    /// Restrict the rule to a time window (offsets from server start or plan change).
    pub fn between(mut self, from: Duration, until: Duration) -> Self {
        self.window = Some((from, until));
        self
    }
}

/// Which attempts of an upstream a rule applies to.
///
/// Attempts are numbered from 1 per upstream, counting from the moment the
/// current plan was installed (server start, [`crate::ChaosHandle::set_faults`]
/// or [`crate::ChaosHandle::reset`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// Every attempt.
    Always,
    /// Each attempt independently with this probability, drawn from the
    /// server seed and the attempt number (so a seed replays exactly).
    Probability(f64),
    /// Attempts N, 2N, 3N, ...
    EveryNth(u64),
    /// Exactly these 1-based attempt numbers.
    Sequence(Vec<u64>),
}

/// Which `Retry-After`-like headers a rate-limit fault sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RetryAfterStyle {
    /// Everything the provider sends: `retry-after` (seconds) plus
    /// `retry-after-ms` and `x-ratelimit-*` (OpenAI) or `anthropic-ratelimit-*` (Anthropic).
    #[default]
    All,
    /// Only `retry-after` in whole seconds.
    Seconds,
    /// Only `retry-after-ms`.
    Milliseconds,
    /// Only `retry-after` as an HTTP date.
    HttpDate,
    /// Only the provider's rate-limit reset headers.
    Reset,
    /// No hint at all.
    None,
}

impl RetryAfterStyle {
    const NAMES: &'static [&'static str] = &["all", "seconds", "ms", "http_date", "reset", "none"];

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "all" => Self::All,
            "seconds" => Self::Seconds,
            "ms" => Self::Milliseconds,
            "http_date" => Self::HttpDate,
            "reset" => Self::Reset,
            "none" => Self::None,
            _ => return None,
        })
    }
}

/// Something that goes wrong with an attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 429 rate limit (OpenAI `rate_limit_exceeded`, Anthropic `rate_limit_error`).
    RateLimit {
        /// Suggested wait; default 1 s.
        retry_after: Option<Duration>,
        /// Which hint headers are sent.
        header_style: RetryAfterStyle,
    },
    /// Out of credit: OpenAI 429 `insufficient_quota`, Anthropic 402 `billing_error`.
    QuotaExhausted,
    /// Anthropic 529 `overloaded_error`, OpenAI 503.
    Overloaded,
    /// A 5xx with the provider's server-error body.
    ServerError {
        /// 500..=599.
        status: u16,
    },
    /// Any 4xx/5xx status with the provider's error body for it.
    Status {
        /// 400..=599.
        status: u16,
    },
    /// 401 invalid API key.
    Auth,
    /// 400 context length exceeded.
    ContextOverflow,
    /// 400 invalid request.
    BadRequest,
    /// 404 model not found.
    NotFound,
    /// Accept the request and never answer.
    Hang,
    /// Answer correctly after an extra delay before the first byte.
    SlowFirstByte {
        /// Extra delay.
        delay: Duration,
    },
    /// Answer correctly, but with this delay between stream chunks (for a
    /// non-streaming request: per generated token before the answer).
    SlowTokens {
        /// Delay per chunk.
        delay: Duration,
    },
    /// Close the connection without any response.
    Reset,
    /// Stop a stream after this many events (no terminal event); for a
    /// non-streaming request, send headers and half the body, then cut.
    CutStream {
        /// Events sent before the cut.
        after_chunks: u32,
    },
    /// 200 with a body that is not valid JSON.
    MalformedJson,
    /// 200 with no content and no tool call.
    Empty,
    /// 200 cut short: `finish_reason: length` / `stop_reason: max_tokens`.
    Truncate,
    /// 200 with a refusal ("I'm sorry, but I can't help with that.").
    Refusal,
    /// 200 whose content (or tool arguments) is not valid JSON although JSON was asked.
    InvalidJson,
    /// 200 whose answer is stopped by the provider's content filter after a
    /// few words (OpenAI `finish_reason: content_filter`, Anthropic
    /// `stop_reason: refusal`).
    ContentFilter,
    /// 400: the content filter blocked the prompt (Azure's `content_filter`
    /// error with its `innererror`; OpenAI's invalid-request shape with
    /// code `content_filter` elsewhere).
    PromptFilter,
    /// A stream that sends an error event after this many events and ends
    /// (OpenAI `data: {"error": ...}`, Anthropic `event: error`, both
    /// `overloaded`); a non-streaming request gets the overloaded error.
    StreamError {
        /// Events sent before the error.
        after_chunks: u32,
    },
}

/// Every fault kind, as written in scenario files.
pub const FAULT_KINDS: &[&str] = &[
    "rate_limit",
    "quota_exhausted",
    "overloaded",
    "server_error",
    "status",
    "auth",
    "context_overflow",
    "bad_request",
    "not_found",
    "hang",
    "slow_first_byte",
    "slow_tokens",
    "reset",
    "cut_stream",
    "malformed_json",
    "empty",
    "truncate",
    "refusal",
    "invalid_json",
    "content_filter",
    "stream_error",
    "prompt_filter",
];

impl Fault {
    /// The snake_case kind name, also the outcome name in [`crate::UpstreamStats`].
    pub fn name(&self) -> &'static str {
        match self {
            Fault::RateLimit { .. } => "rate_limit",
            Fault::QuotaExhausted => "quota_exhausted",
            Fault::Overloaded => "overloaded",
            Fault::ServerError { .. } => "server_error",
            Fault::Status { .. } => "status",
            Fault::Auth => "auth",
            Fault::ContextOverflow => "context_overflow",
            Fault::BadRequest => "bad_request",
            Fault::NotFound => "not_found",
            Fault::Hang => "hang",
            Fault::SlowFirstByte { .. } => "slow_first_byte",
            Fault::SlowTokens { .. } => "slow_tokens",
            Fault::Reset => "reset",
            Fault::CutStream { .. } => "cut_stream",
            Fault::MalformedJson => "malformed_json",
            Fault::Empty => "empty",
            Fault::Truncate => "truncate",
            Fault::Refusal => "refusal",
            Fault::InvalidJson => "invalid_json",
            Fault::ContentFilter => "content_filter",
            Fault::PromptFilter => "prompt_filter",
            Fault::StreamError { .. } => "stream_error",
        }
    }
}

/// A scenario or fault plan that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("{file}: cannot read: {source}")]
    Io {
        /// The file.
        file: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Not valid TOML (or JSON) at all.
    #[error("{file}: invalid {format}: {message}")]
    Syntax {
        /// The file (or `request body`).
        file: String,
        /// `TOML` or `JSON`.
        format: &'static str,
        /// The parser's message.
        message: String,
    },
    /// Well-formed, but a value is wrong.
    #[error("{file}: {path}: {message}")]
    Invalid {
        /// The file (or `request body`).
        file: String,
        /// Key path, e.g. `upstream[0].fault[1].probability`.
        path: String,
        /// What was expected and what was found.
        message: String,
    },
}

impl Scenario {
    /// Parse a TOML scenario; `file` is only used in error messages.
    pub fn from_toml_str(text: &str, file: &str) -> Result<Self, ScenarioError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| ScenarioError::Syntax {
            file: file.to_owned(),
            format: "TOML",
            message: e.message().to_owned(),
        })?;
        let value = serde_json::to_value(table).map_err(|e| ScenarioError::Syntax {
            file: file.to_owned(),
            format: "TOML",
            message: e.to_string(),
        })?;
        parse_scenario(&value).map_err(|e| e.in_file(file))
    }

    /// Read and parse a TOML scenario file.
    pub fn load(path: &Path) -> Result<Self, ScenarioError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ScenarioError::Io {
            file: file.clone(),
            source,
        })?;
        Self::from_toml_str(&text, &file)
    }

    /// The scenario of `keel demo`: a flaky OpenAI-style `primary` (30%
    /// transient faults, a full outage from 10 s to 30 s) and a healthy
    /// Anthropic-style `secondary`.
    pub fn demo() -> Self {
        let mut primary = UpstreamSpec::new("primary", Kind::OpenAi);
        primary.latency = Duration::from_millis(20);
        primary.token_delay = Duration::from_millis(2);
        let transient = |fault, p| FaultRule::new(fault, Trigger::Probability(p));
        primary.faults = FaultPlan {
            faults: vec![
                FaultRule::always(Fault::ServerError { status: 503 })
                    .between(Duration::from_secs(10), Duration::from_secs(30)),
                transient(
                    Fault::RateLimit {
                        retry_after: Some(Duration::from_millis(200)),
                        header_style: RetryAfterStyle::All,
                    },
                    0.10,
                ),
                transient(Fault::ServerError { status: 500 }, 0.10),
                transient(
                    Fault::SlowFirstByte {
                        delay: Duration::from_secs(3),
                    },
                    0.05,
                ),
                transient(Fault::Reset, 0.05),
            ],
        };
        let mut secondary = UpstreamSpec::new("secondary", Kind::Anthropic);
        secondary.latency = Duration::from_millis(30);
        secondary.token_delay = Duration::from_millis(2);
        Scenario {
            upstreams: vec![primary, secondary],
        }
    }
}

impl FaultPlan {
    /// A plan with no faults.
    pub fn none() -> Self {
        FaultPlan::default()
    }

    /// Parse the control API's JSON shape: `{"faults":[{"kind":"server_error","status":500}]}`.
    pub fn from_json_str(text: &str) -> Result<Self, ScenarioError> {
        const FILE: &str = "request body";
        let value: Value = serde_json::from_str(text).map_err(|e| ScenarioError::Syntax {
            file: FILE.to_owned(),
            format: "JSON",
            message: e.to_string(),
        })?;
        let obj = Obj::new(&value, String::new()).map_err(|e| e.in_file(FILE))?;
        let plan = (|| {
            obj.only(&["faults"])?;
            match obj.get("faults") {
                None => Ok(FaultPlan::none()),
                Some(v) => parse_plan(v, &obj.path_of("faults")),
            }
        })();
        plan.map_err(|e| e.in_file(FILE))
    }
}

/// A rejection before the file name is known.
#[derive(Debug)]
struct PathError {
    path: String,
    message: String,
}

impl PathError {
    fn in_file(self, file: &str) -> ScenarioError {
        ScenarioError::Invalid {
            file: file.to_owned(),
            path: self.path,
            message: self.message,
        }
    }
}

type Res<T> = Result<T, PathError>;

fn fail<T>(path: &str, message: impl Into<String>) -> Res<T> {
    Err(PathError {
        path: if path.is_empty() {
            "(top level)".to_owned()
        } else {
            path.to_owned()
        },
        message: message.into(),
    })
}

/// How a value is shown in "got ..." messages.
fn describe(v: &Value) -> String {
    match v {
        Value::Null => "nothing".to_owned(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => Value::String(s.clone()).to_string(),
        Value::Array(_) => "an array".to_owned(),
        Value::Object(_) => "a table".to_owned(),
    }
}

/// A table being read, with its key path.
struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
}

impl<'a> Obj<'a> {
    fn new(v: &'a Value, path: String) -> Res<Self> {
        match v {
            Value::Object(map) => Ok(Obj { map, path }),
            other => fail(&path, format!("expected a table, got {}", describe(other))),
        }
    }

    fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    fn get(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key)
    }

    /// Reject keys outside `allowed`.
    fn only(&self, allowed: &[&str]) -> Res<()> {
        for key in self.map.keys() {
            if !allowed.contains(&key.as_str()) {
                return fail(
                    &self.path_of(key),
                    format!("unknown key, expected one of {}", allowed.join(", ")),
                );
            }
        }
        Ok(())
    }

    fn string(&self, key: &str) -> Res<Option<&'a str>> {
        match self.get(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(other) => fail(
                &self.path_of(key),
                format!("expected a string, got {}", describe(other)),
            ),
        }
    }

    fn required_string(&self, key: &str, expected: &str) -> Res<&'a str> {
        match self.string(key)? {
            Some(s) => Ok(s),
            None => fail(&self.path_of(key), format!("missing, expected {expected}")),
        }
    }

    fn positive(&self, key: &str) -> Res<Option<u64>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_u64() {
                Some(n) if n > 0 => Ok(Some(n)),
                _ => fail(
                    &self.path_of(key),
                    format!("expected a positive integer, got {}", describe(v)),
                ),
            },
        }
    }

    fn positive_u32(&self, key: &str) -> Res<Option<u32>> {
        match self.positive(key)? {
            None => Ok(None),
            Some(n) => match u32::try_from(n) {
                Ok(n) => Ok(Some(n)),
                Err(_) => fail(
                    &self.path_of(key),
                    format!("expected an integer up to {}, got {n}", u32::MAX),
                ),
            },
        }
    }

    fn bool(&self, key: &str) -> Res<bool> {
        match self.get(key) {
            None => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => fail(
                &self.path_of(key),
                format!("expected true or false, got {}", describe(other)),
            ),
        }
    }

    fn duration(&self, key: &str) -> Res<Option<Duration>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => match v.as_str().map(humantime::parse_duration) {
                Some(Ok(d)) => Ok(Some(d)),
                _ => fail(
                    &self.path_of(key),
                    format!(
                        "expected a duration such as \"150ms\" or \"20s\", got {}",
                        describe(v)
                    ),
                ),
            },
        }
    }
}

fn array<'a>(v: &'a Value, path: &str, expected: &str) -> Res<&'a Vec<Value>> {
    match v {
        Value::Array(items) => Ok(items),
        other => fail(
            path,
            format!("expected {expected}, got {}", describe(other)),
        ),
    }
}

fn parse_scenario(root: &Value) -> Res<Scenario> {
    let top = Obj::new(root, String::new())?;
    top.only(&["upstream"])?;
    let Some(list) = top.get("upstream") else {
        return fail(
            "upstream",
            "missing, expected at least one [[upstream]] table",
        );
    };
    let items = array(list, "upstream", "an array of [[upstream]] tables")?;
    if items.is_empty() {
        return fail("upstream", "expected at least one [[upstream]] table");
    }
    let mut seen = HashSet::new();
    let mut upstreams = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        let path = format!("upstream[{i}]");
        let spec = parse_upstream(item, path.clone())?;
        if !seen.insert(spec.name.clone()) {
            return fail(
                &format!("{path}.name"),
                format!("duplicate upstream name \"{}\"", spec.name),
            );
        }
        upstreams.push(spec);
    }
    Ok(Scenario { upstreams })
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

fn parse_upstream(v: &Value, path: String) -> Res<UpstreamSpec> {
    let obj = Obj::new(v, path)?;
    obj.only(&[
        "name",
        "kind",
        "api_key",
        "rpm",
        "tpm",
        "latency",
        "token_delay",
        "models",
        "context_window",
        "max_inputs",
        "require_thought_signatures",
        "fault",
    ])?;
    let name = obj.required_string("name", "a string")?;
    if !valid_name(name) {
        return fail(
            &obj.path_of("name"),
            format!(
                "expected letters, digits, '-', '_' or '.' (starting with a letter or digit), got \"{name}\""
            ),
        );
    }
    let kind_expected = "\"openai\", \"anthropic\", \"azure\", \"gemini\" or \"bedrock\"";
    let kind = match obj.required_string("kind", kind_expected)? {
        "openai" => Kind::OpenAi,
        "anthropic" => Kind::Anthropic,
        "azure" => Kind::Azure,
        "gemini" => Kind::Gemini,
        "bedrock" => Kind::Bedrock,
        other => {
            return fail(
                &obj.path_of("kind"),
                format!("expected {kind_expected}, got \"{other}\""),
            )
        }
    };
    let mut spec = UpstreamSpec::new(name, kind);
    spec.api_key = obj.string("api_key")?.map(str::to_owned);
    spec.rpm = obj.positive_u32("rpm")?;
    spec.tpm = obj.positive_u32("tpm")?;
    spec.context_window = obj.positive_u32("context_window")?;
    spec.max_inputs = obj.positive_u32("max_inputs")?;
    spec.require_thought_signatures = obj.bool("require_thought_signatures")?;
    if spec.require_thought_signatures && kind != Kind::Gemini {
        return fail(
            &obj.path_of("require_thought_signatures"),
            format!("expected an upstream of kind \"gemini\" (thought signatures are Gemini's), got kind \"{}\"", obj.required_string("kind", "")?),
        );
    }
    spec.latency = obj.duration("latency")?.unwrap_or_default();
    spec.token_delay = obj.duration("token_delay")?.unwrap_or_default();
    if let Some(models) = obj.get("models") {
        let path = obj.path_of("models");
        for (i, m) in array(models, &path, "an array of model names")?
            .iter()
            .enumerate()
        {
            match m.as_str() {
                Some(s) => spec.models.push(s.to_owned()),
                None => {
                    return fail(
                        &format!("{path}[{i}]"),
                        format!("expected a model name, got {}", describe(m)),
                    )
                }
            }
        }
    }
    if let Some(faults) = obj.get("fault") {
        spec.faults = parse_plan(faults, &obj.path_of("fault"))?;
    }
    Ok(spec)
}

fn parse_plan(v: &Value, path: &str) -> Res<FaultPlan> {
    let items = array(v, path, "an array of fault tables")?;
    let mut faults = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        faults.push(parse_rule(item, format!("{path}[{i}]"))?);
    }
    Ok(FaultPlan { faults })
}

const RULE_KEYS: &[&str] = &[
    "kind",
    "probability",
    "every",
    "sequence",
    "window",
    "streaming_only",
    "non_streaming_only",
];

fn parse_rule(v: &Value, path: String) -> Res<FaultRule> {
    let obj = Obj::new(v, path)?;
    let kind = fault_kind(&obj)?;
    let fault = parse_fault(&obj, kind)?;
    let when = parse_trigger(&obj)?;
    let window = parse_window(&obj)?;
    let streaming_only = obj.bool("streaming_only")?;
    let non_streaming_only = obj.bool("non_streaming_only")?;
    if streaming_only && non_streaming_only {
        return fail(
            &obj.path,
            "expected at most one of streaming_only, non_streaming_only",
        );
    }
    Ok(FaultRule {
        fault,
        when,
        window,
        streaming_only,
        non_streaming_only,
    })
}

/// The rule's `kind`, once the rule is known to hold only the keys every
/// rule may have and the ones of that kind.
fn fault_kind<'a>(obj: &Obj<'a>) -> Res<&'a str> {
    let kind_path = obj.path_of("kind");
    let expected_kinds = format!("one of {}", FAULT_KINDS.join(", "));
    let kind = obj.required_string("kind", &format!("a fault kind, {expected_kinds}"))?;
    let specific: &[&str] = match kind {
        "rate_limit" => &["retry_after", "header_style"],
        "server_error" | "status" => &["status"],
        "slow_first_byte" | "slow_tokens" => &["delay"],
        "cut_stream" | "stream_error" => &["after_chunks"],
        k if FAULT_KINDS.contains(&k) => &[],
        other => {
            return fail(
                &kind_path,
                format!("unknown fault kind \"{other}\", expected {expected_kinds}"),
            )
        }
    };
    let allowed: Vec<&str> = RULE_KEYS.iter().chain(specific).copied().collect();
    obj.only(&allowed)?;
    Ok(kind)
}

/// The fault of a rule of `kind` (one of [`FAULT_KINDS`]), with its fields.
fn parse_fault(obj: &Obj<'_>, kind: &str) -> Res<Fault> {
    let fault = match kind {
        "rate_limit" => {
            let header_style = header_style(obj)?;
            Fault::RateLimit {
                retry_after: obj.duration("retry_after")?,
                header_style,
            }
        }
        "quota_exhausted" => Fault::QuotaExhausted,
        "overloaded" => Fault::Overloaded,
        "server_error" => Fault::ServerError {
            status: fault_status(obj, Some(500), 500..=599)?,
        },
        "status" => Fault::Status {
            status: fault_status(obj, None, 400..=599)?,
        },
        "auth" => Fault::Auth,
        "context_overflow" => Fault::ContextOverflow,
        "bad_request" => Fault::BadRequest,
        "not_found" => Fault::NotFound,
        "hang" => Fault::Hang,
        "slow_first_byte" => Fault::SlowFirstByte {
            delay: fault_delay(obj)?,
        },
        "slow_tokens" => Fault::SlowTokens {
            delay: fault_delay(obj)?,
        },
        "reset" => Fault::Reset,
        "cut_stream" => Fault::CutStream {
            after_chunks: after_chunks(obj)?,
        },
        "malformed_json" => Fault::MalformedJson,
        "empty" => Fault::Empty,
        "truncate" => Fault::Truncate,
        "refusal" => Fault::Refusal,
        "content_filter" => Fault::ContentFilter,
        "prompt_filter" => Fault::PromptFilter,
        "stream_error" => Fault::StreamError {
            after_chunks: after_chunks(obj)?,
        },
        _ => Fault::InvalidJson,
    };
    Ok(fault)
}

/// A rate limit's `header_style` (default: every header).
fn header_style(obj: &Obj<'_>) -> Res<RetryAfterStyle> {
    match obj.string("header_style")? {
        None => Ok(RetryAfterStyle::All),
        Some(s) => match RetryAfterStyle::parse(s) {
            Some(style) => Ok(style),
            None => fail(
                &obj.path_of("header_style"),
                format!(
                    "expected one of {}, got \"{s}\"",
                    RetryAfterStyle::NAMES.join(", ")
                ),
            ),
        },
    }
}

/// The `status` of a status fault, in `range`; `default` when absent (or
/// required when there is none).
fn fault_status(
    obj: &Obj<'_>,
    default: Option<u16>,
    range: std::ops::RangeInclusive<u16>,
) -> Res<u16> {
    let path = obj.path_of("status");
    match (obj.get("status"), default) {
        (None, Some(d)) => Ok(d),
        (None, None) => fail(
            &path,
            format!("missing, expected an HTTP status in {range:?}"),
        ),
        (Some(v), _) => match v.as_u64().and_then(|n| u16::try_from(n).ok()) {
            Some(s) if range.contains(&s) => Ok(s),
            _ => fail(
                &path,
                format!("expected an HTTP status in {range:?}, got {}", describe(v)),
            ),
        },
    }
}

/// The required `delay` of a slow fault.
fn fault_delay(obj: &Obj<'_>) -> Res<Duration> {
    match obj.duration("delay")? {
        Some(d) => Ok(d),
        None => fail(
            &obj.path_of("delay"),
            "missing, expected a duration such as \"150ms\" or \"20s\"",
        ),
    }
}

/// A stream cut's `after_chunks` (default 3).
fn after_chunks(obj: &Obj<'_>) -> Res<u32> {
    match obj.get("after_chunks") {
        None => Ok(3),
        Some(v) => match v.as_u64().and_then(|n| u32::try_from(n).ok()) {
            Some(n) => Ok(n),
            None => fail(
                &obj.path_of("after_chunks"),
                format!("expected a non-negative integer, got {}", describe(v)),
            ),
        },
    }
}

/// When the rule fires: at most one of `probability`, `every` and
/// `sequence`, else always.
fn parse_trigger(obj: &Obj<'_>) -> Res<Trigger> {
    let triggers: Vec<&str> = ["probability", "every", "sequence"]
        .into_iter()
        .filter(|k| obj.get(k).is_some())
        .collect();
    if triggers.len() > 1 {
        return fail(
            &obj.path,
            format!(
                "expected at most one of probability, every, sequence, got {}",
                triggers.join(" and ")
            ),
        );
    }
    if let Some(p) = obj.get("probability") {
        match p.as_f64() {
            Some(x) if (0.0..=1.0).contains(&x) => Ok(Trigger::Probability(x)),
            _ => fail(
                &obj.path_of("probability"),
                format!("expected a number in 0..=1, got {}", describe(p)),
            ),
        }
    } else if let Some(n) = obj.positive("every")? {
        Ok(Trigger::EveryNth(n))
    } else if let Some(seq) = obj.get("sequence") {
        parse_sequence(seq, &obj.path_of("sequence")).map(Trigger::Sequence)
    } else {
        Ok(Trigger::Always)
    }
}

/// A `sequence` trigger's attempt numbers (1-based).
fn parse_sequence(seq: &Value, path: &str) -> Res<Vec<u64>> {
    let items = array(seq, path, "an array of attempt numbers")?;
    let mut attempts = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match item.as_u64() {
            Some(n) if n > 0 => attempts.push(n),
            _ => {
                return fail(
                    &format!("{path}[{i}]"),
                    format!(
                        "expected a positive integer (1-based attempt number), got {}",
                        describe(item)
                    ),
                )
            }
        }
    }
    Ok(attempts)
}

/// The rule's time `window` (offsets from the plan's start), if any.
fn parse_window(obj: &Obj<'_>) -> Res<Option<(Duration, Duration)>> {
    let Some(w) = obj.get("window") else {
        return Ok(None);
    };
    let win = Obj::new(w, obj.path_of("window"))?;
    win.only(&["from", "until"])?;
    let from = win.duration("from")?.unwrap_or_default();
    let until = win.duration("until")?.unwrap_or(Duration::MAX);
    if from >= until {
        return fail(
            &win.path,
            format!(
                "expected from < until, got from = {}, until = {}",
                humantime::format_duration(from),
                humantime::format_duration(until)
            ),
        );
    }
    Ok(Some((from, until)))
}
