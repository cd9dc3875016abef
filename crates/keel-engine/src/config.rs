//! Configuration: one TOML file (`keel.toml`), parsed into raw structs that
//! reject unknown keys, then converted into validated types that cannot hold
//! an invalid value. Every error names the file, the key path and what was
//! expected, because a gateway that starts with a half-understood config is
//! worse than one that refuses to start.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use keel_policy::{
    Backoff, BackoffConfig, BackoffKind, BreakerConfig, BreakerMode, BudgetConfig, LimiterConfig,
    PolicyError,
};
use serde::Deserialize;

mod aws_profile;
mod azure;
mod bedrock;
pub mod content;
mod embeddings;
mod responses;
mod routing;
mod store;
mod telemetry;
mod tenants;
pub use azure::{AzureApi, AzureAuth, AzureVersion};
pub use bedrock::BedrockAuth;
pub use responses::{ResponsesConfig, ResponsesSupport};
pub use routing::{LearnedConfig, RouteStrategy, Routing, Rule, RuleMatch};
pub use store::CachePolicy;
pub use telemetry::Telemetry;
pub(crate) use tenants::hash_token;
pub use tenants::Tenant;

/// A configuration error, with the file, the key and what was expected.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{file}: cannot read: {message}")]
    Io {
        /// The file.
        file: String,
        /// The OS error.
        message: String,
    },
    /// The file is not valid TOML.
    #[error("{file}: invalid TOML: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message (with line and column).
        message: String,
    },
    /// A key has the wrong shape (unknown key, wrong type, missing key).
    #[error("{file}: {key}: {message}")]
    Schema {
        /// The file.
        file: String,
        /// Dotted key path.
        key: String,
        /// What serde reported.
        message: String,
    },
    /// A value is out of its valid range or refers to something unknown.
    #[error("{file}: {key}: expected {expected}, got {got}")]
    Invalid {
        /// The file.
        file: String,
        /// Dotted key path.
        key: String,
        /// What would have been accepted.
        expected: String,
        /// What was found.
        got: String,
    },
    /// `${VAR}` names an environment variable that is not set.
    #[error("{file}: {key}: environment variable {var} is not set")]
    MissingEnv {
        /// The file.
        file: String,
        /// Dotted key path.
        key: String,
        /// The variable.
        var: String,
    },
}

/// A secret (an API key): never printed, never logged.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The secret itself, for the one place that sends it upstream.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// A masked form for display: the first 3 characters and the length.
    pub fn masked(&self) -> String {
        let head: String = self.0.chars().take(3).collect();
        format!("{head}***({} chars)", self.0.chars().count())
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// Which wire API a provider speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// OpenAI Chat Completions (and any OpenAI-compatible server).
    OpenAi,
    /// Anthropic Messages.
    Anthropic,
    /// Azure OpenAI: OpenAI's wire at Azure's addresses (docs/azure.md).
    Azure,
    /// Google Gemini API (`generateContent`).
    Gemini,
    /// AWS Bedrock Runtime's Converse API, signed with SigV4.
    Bedrock,
}

impl ProviderKind {
    /// The config spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::Azure => "azure",
            ProviderKind::Gemini => "gemini",
            ProviderKind::Bedrock => "bedrock",
        }
    }
}

/// An upstream provider account.
#[derive(Clone, Debug)]
pub struct Provider {
    /// Name in the config.
    pub name: String,
    /// Wire API.
    pub kind: ProviderKind,
    /// Base URL up to and including `/v1`.
    pub base_url: String,
    /// The key sent upstream (never leaves Keel): the first of the pool.
    pub api_key: Option<Secret>,
    /// The key pool: `api_key` (if set) then `api_keys`, in order.
    pub api_keys: Vec<Secret>,
    /// Address and auth of an Azure provider (`Some` exactly for `azure`).
    pub azure: Option<AzureApi>,
    /// A Bedrock provider's region and signing keys.
    pub bedrock: Option<Arc<BedrockAuth>>,
}

/// What a deployment can do, for capability matching.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Accepts tools.
    pub tools: bool,
    /// Accepts images.
    pub vision: bool,
    /// Native JSON-schema structured output.
    pub json_schema: bool,
    /// Supports streaming.
    pub streaming: bool,
}

/// One model on one provider: the unit of retry, breaker and limits.
#[derive(Clone, Debug)]
pub struct Deployment {
    /// Name in the config.
    pub name: String,
    /// Index in [`Config::deployments`].
    pub index: usize,
    /// Provider name.
    pub provider: String,
    /// Wire API of the provider.
    pub kind: ProviderKind,
    /// Base URL of the provider.
    pub base_url: String,
    /// The chat endpoint (`base_url` + `/chat/completions` or `/messages`),
    /// parsed once here: parsing it on every attempt cost ~5% of Keel's CPU.
    pub endpoint: Option<http::Uri>,
    /// The endpoint of streamed requests where it is not `endpoint`
    /// (Gemini names the streaming mode in the path).
    pub stream_endpoint: Option<http::Uri>,
    /// Key of the provider (the first of its pool).
    pub api_key: Option<Secret>,
    /// The embedding space this deployment's vectors belong to (`None`: a
    /// chat deployment). Only deployments of one space may stand in for
    /// each other: vectors of different models cannot be mixed.
    pub embedding_space: Option<String>,
    /// Most inputs one embeddings request to it may carry (the provider's
    /// maximum, 2048, when not set); longer arrays are split.
    pub max_batch_inputs: Option<u32>,
    /// Accepts `dimensions` on embeddings requests.
    pub dimensions: bool,
    /// Every key of the provider's pool (see [`Provider::api_keys`]).
    pub api_keys: Vec<Secret>,
    /// Address and auth of an Azure deployment (see [`Provider::azure`]).
    pub azure: Option<AzureApi>,
    /// Plain chat requests are asked of it as streams and the answer is
    /// assembled from the stream, so a hang is caught at the first token
    /// (`stream_upstream`; on by default for OpenAI, Azure and Anthropic
    /// deployments that stream, whose streams Keel assembles).
    pub stream_upstream: bool,
    /// Model name sent upstream.
    pub model: String,
    /// Context window in tokens (prompt + output).
    pub context_window: u32,
    /// Largest `max_tokens` this deployment accepts.
    pub max_output_tokens: u32,
    /// Capabilities.
    pub capabilities: Capabilities,
    /// Requests and tokens per minute.
    pub limits: LimiterConfig,
    /// Max in-flight requests.
    pub max_in_flight: u32,
    /// USD per million input tokens.
    pub input_price: f64,
    /// USD per million output tokens.
    pub output_price: f64,
    /// The headers of every request to this deployment (content type,
    /// key, API version; `Host` for a plain-HTTP endpoint), built once
    /// rather than formatted on every attempt (about 3 K instructions).
    /// Debug prints the key as `Sensitive`.
    pub request_headers: http::HeaderMap,
    /// A Bedrock deployment's region and signing keys (its requests are
    /// signed per attempt).
    pub bedrock: Option<Arc<BedrockAuth>>,
    /// Native Responses API support (`responses`, `reasoning`, `builtin_tools`).
    pub responses: ResponsesSupport,
}

/// What to do when a stream breaks after the first byte reached the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamFailure {
    /// Ask the next deployment for the continuation and keep streaming.
    Resume,
    /// End the stream with a well-formed error event.
    Fail,
}

/// How long a stream stays invisible to the client after its first token:
/// until `chars` characters of text (or a tool call, a refusal, the end),
/// or `after` has passed. Until then a bad stream is retried like a bad
/// answer; `chars` 0 turns the window off.
#[derive(Clone, Copy, Debug)]
pub struct CommitWindow {
    /// Characters of text that commit a stream.
    pub chars: usize,
    /// Time after the first token that commits it.
    pub after: Duration,
}

impl CommitWindow {
    /// Whether the window is on.
    pub fn is_on(&self) -> bool {
        self.chars > 0 && !self.after.is_zero()
    }
}

/// The first-token deadline of an upstream stream, adapted to the
/// deployment: `factor` x its recent p99 time to first token, at least
/// `floor`, never above `first_token_timeout`. A healthy deployment's
/// first token comes in well under it; a hung one is given up on in about
/// `floor` rather than the whole attempt timeout.
#[derive(Clone, Copy, Debug)]
pub struct FirstTokenDeadline {
    /// The least it is (`first_token_floor`, default 1s).
    pub floor: Duration,
    /// Times the recent p99 (`first_token_p99_factor`, default 4).
    pub factor: f64,
}

impl FirstTokenDeadline {
    /// The deadline for a deployment whose recent p99 time to first token
    /// is `p99` (`None`: nothing seen yet), capped at `timeout`.
    pub fn deadline(&self, p99: Option<Duration>, timeout: Duration) -> Duration {
        let learned = p99.map_or(Duration::ZERO, |p| p.mul_f64(self.factor));
        learned.max(self.floor).min(timeout)
    }
}

/// What a streamed request that asks for JSON gets (`stream_json`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StreamJson {
    /// The answer is asked for whole, validated and repaired like a plain
    /// answer, then sent as a well-formed stream: the client never sees
    /// invalid JSON.
    Validate,
    /// Streamed as it comes (not validated).
    Pass,
}

/// Per-request policy: defaults in `[policy]`, overridable per route.
#[derive(Clone, Debug)]
pub struct RequestPolicy {
    /// Retry schedule on one deployment.
    pub backoff: Backoff,
    /// Total deadline of a request, retries and fallbacks included.
    pub timeout: Duration,
    /// Deadline of one attempt (non-streaming: whole answer).
    pub attempt_timeout: Duration,
    /// Streaming: time to the first token.
    pub first_token_timeout: Duration,
    /// The adaptive first-token deadline under `first_token_timeout`.
    pub first_token: FirstTokenDeadline,
    /// Streaming: longest silence between two events.
    pub inter_token_timeout: Duration,
    /// When a hint or backoff asks to wait longer than this and another
    /// deployment can serve now, fall over at once instead of sleeping.
    pub failover_after: Duration,
    /// Mid-stream failure policy.
    pub stream_failure: StreamFailure,
    /// Streaming: how long a stream stays invisible to the client while it
    /// is judged (`stream_commit_chars`, default 48; `stream_commit_after`,
    /// default 400ms; either 0 turns it off).
    pub stream_commit: CommitWindow,
    /// Streaming with `response_format` JSON (or a route `json_schema`).
    pub stream_json: StreamJson,
    /// Longest a request waits in a deployment's rate limiter queue.
    pub max_queue_wait: Duration,
    /// Truncation, repairs and refusals.
    pub content: content::ContentPolicy,
}

/// A route: the `model` clients ask for.
#[derive(Clone, Debug)]
pub struct Route {
    /// The name clients send as `model`.
    pub name: String,
    /// Ordered deployment indices.
    pub chain: Vec<usize>,
    /// Policy for requests on this route.
    pub policy: RequestPolicy,
    /// Text answered when every deployment failed (last tier).
    pub static_response: Option<String>,
    /// Response cache of the route (`None`: off).
    pub cache: Option<CachePolicy>,
    /// Deployments tried after a refusal (empty: the rest of the chain).
    pub refusal_fallbacks: Vec<usize>,
    /// A JSON Schema every answer on this route must match.
    pub json_schema: Option<serde_json::Value>,
    /// How the chain is ordered for each request (`strategy`).
    pub routing: Routing,
    /// Hedged requests (`hedge = true`; `None`: off).
    pub hedge: Option<keel_policy::HedgePolicy>,
    /// The embedding space of every deployment of the chain (`None`: a chat
    /// route).
    pub embedding_space: Option<String>,
}

/// Server settings.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// Listen address.
    pub listen: SocketAddr,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// When set, `/admin` and `/admin/status` require `Authorization: Bearer <token>`.
    pub admin_token: Option<Secret>,
    /// Chat requests handled at once; beyond this Keel answers 503 with
    /// `Retry-After` at once (load shedding) instead of queueing.
    pub max_in_flight: std::num::NonZeroUsize,
    /// Open client connections served; beyond this a few more are accepted
    /// only to be answered 503 with `Retry-After` and closed, and past those
    /// Keel stops accepting (the kernel backlog holds the rest).
    pub max_connections: std::num::NonZeroUsize,
    /// Time a client has to send a request's headers; it also closes a
    /// kept-alive connection that sends nothing for this long (slowloris).
    pub header_read_timeout: Duration,
    /// On shutdown, how long in-flight requests may run before Keel exits.
    pub drain_timeout: Duration,
}

/// The validated configuration.
#[derive(Clone, Debug)]
pub struct Config {
    /// The file it came from (for messages).
    pub file: String,
    /// SHA-256 of the file's text (hex, first 16 digits): which version of
    /// the file is running (`/admin/status`). `${VAR}` values are not in it.
    pub hash: String,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[providers.*]`.
    pub providers: BTreeMap<String, Provider>,
    /// `[deployments.*]`, in name order; routes refer to them by index.
    pub deployments: Vec<Deployment>,
    /// `[routes.*]`.
    pub routes: BTreeMap<String, Route>,
    /// `[breaker]`: per-deployment circuit breaker.
    pub breaker: BreakerConfig,
    /// `[retry_budget]`: shared by all requests.
    pub retry_budget: BudgetConfig,
    /// `[store]`: where shared state lives (memory, or Redis).
    pub store: keel_store::StoreConfig,
    /// `[store] idempotency_ttl`: how long a completed `Idempotency-Key` is replayed.
    pub idempotency_ttl: Duration,
    /// `[[tenants]]`: virtual keys (empty: Keel runs open).
    pub tenants: Vec<Tenant>,
    /// `[breaker] slow_start`: ramp over which a deployment whose breaker
    /// closed again gets its traffic back (`None`: off).
    pub slow_start: Option<Duration>,
    /// `[telemetry]`: OpenTelemetry traces (`None`: off).
    pub telemetry: Option<Telemetry>,
    /// `[responses]`: how stored responses are kept.
    pub responses: ResponsesConfig,
}

// ---------------------------------------------------------------- raw layer

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    deployments: BTreeMap<String, RawDeployment>,
    #[serde(default)]
    routes: BTreeMap<String, RawRoute>,
    #[serde(default)]
    policy: RawPolicy,
    #[serde(default)]
    breaker: RawBreaker,
    #[serde(default)]
    retry_budget: RawBudget,
    #[serde(default)]
    store: store::RawStore,
    #[serde(default)]
    cache: store::RawCache,
    #[serde(default)]
    tenants: Vec<tenants::RawTenant>,
    #[serde(default)]
    telemetry: telemetry::RawTelemetry,
    #[serde(default)]
    responses: responses::RawResponsesConfig,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawServer {
    listen: Option<String>,
    max_body_bytes: Option<u64>,
    admin_token: Option<String>,
    max_in_flight: Option<u64>,
    max_connections: Option<u64>,
    header_read_timeout: Option<String>,
    drain_timeout: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawProvider {
    kind: Option<String>,
    base_url: Option<String>,
    api_key: Option<String>,
    api_keys: Option<Vec<String>>,
    api_version: Option<String>,
    azure_ad_token: Option<String>,
    region: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    session_token: Option<String>,
    /// Where a Bedrock provider's missing keys were looked for in AWS's
    /// shared credentials file, and why none were there (for the error).
    #[serde(skip)]
    shared_credentials: Option<(String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    provider: String,
    model: String,
    context_window: Option<u32>,
    max_output_tokens: Option<u32>,
    tools: Option<bool>,
    vision: Option<bool>,
    json_schema: Option<bool>,
    streaming: Option<bool>,
    stream_upstream: Option<bool>,
    rpm: Option<u32>,
    tpm: Option<u32>,
    max_in_flight: Option<u32>,
    input_price: Option<f64>,
    output_price: Option<f64>,
    embedding_space: Option<String>,
    max_batch_inputs: Option<u32>,
    dimensions: Option<bool>,
    responses: Option<bool>,
    reasoning: Option<bool>,
    builtin_tools: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    chain: Vec<String>,
    static_response: Option<String>,
    cache_ttl: Option<String>,
    stale_ttl: Option<String>,
    #[serde(default)]
    refusal_fallbacks: Vec<String>,
    json_schema: Option<toml::Value>,
    #[serde(default)]
    policy: RawPolicy,
    strategy: Option<String>,
    weights: Option<BTreeMap<String, f64>>,
    #[serde(default)]
    rules: Vec<routing::RawRule>,
    learned: Option<routing::RawLearned>,
    decay: Option<String>,
    hedge: Option<bool>,
    hedge_after: Option<String>,
}

#[derive(Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
struct RawPolicy {
    max_attempts: Option<u32>,
    backoff: Option<String>,
    backoff_base: Option<String>,
    backoff_cap: Option<String>,
    timeout: Option<String>,
    attempt_timeout: Option<String>,
    first_token_timeout: Option<String>,
    first_token_floor: Option<String>,
    first_token_p99_factor: Option<f64>,
    inter_token_timeout: Option<String>,
    failover_after: Option<String>,
    stream_failure: Option<String>,
    stream_commit_chars: Option<u32>,
    stream_commit_after: Option<String>,
    stream_json: Option<String>,
    max_queue_wait: Option<String>,
    truncation: Option<String>,
    max_continuations: Option<u32>,
    continue_past_client_limit: Option<bool>,
    max_repairs: Option<u32>,
    refusal: Option<String>,
    refusal_phrases: Option<Vec<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBreaker {
    consecutive_failures: Option<u32>,
    failure_ratio: Option<f64>,
    window: Option<String>,
    min_throughput: Option<u32>,
    open_for: Option<String>,
    max_open_for: Option<String>,
    half_open_probes: Option<u32>,
    slow_call: Option<String>,
    slow_start: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawBudget {
    ratio: Option<f64>,
    min_per_sec: Option<u32>,
    window: Option<String>,
}

impl RawPolicy {
    /// Route values win over the defaults.
    fn overlay(&self, over: &RawPolicy) -> RawPolicy {
        fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
            b.clone().or_else(|| a.clone())
        }
        RawPolicy {
            max_attempts: pick(&self.max_attempts, &over.max_attempts),
            backoff: pick(&self.backoff, &over.backoff),
            backoff_base: pick(&self.backoff_base, &over.backoff_base),
            backoff_cap: pick(&self.backoff_cap, &over.backoff_cap),
            timeout: pick(&self.timeout, &over.timeout),
            attempt_timeout: pick(&self.attempt_timeout, &over.attempt_timeout),
            first_token_timeout: pick(&self.first_token_timeout, &over.first_token_timeout),
            first_token_floor: pick(&self.first_token_floor, &over.first_token_floor),
            first_token_p99_factor: pick(
                &self.first_token_p99_factor,
                &over.first_token_p99_factor,
            ),
            inter_token_timeout: pick(&self.inter_token_timeout, &over.inter_token_timeout),
            failover_after: pick(&self.failover_after, &over.failover_after),
            stream_failure: pick(&self.stream_failure, &over.stream_failure),
            stream_commit_chars: pick(&self.stream_commit_chars, &over.stream_commit_chars),
            stream_commit_after: pick(&self.stream_commit_after, &over.stream_commit_after),
            stream_json: pick(&self.stream_json, &over.stream_json),
            max_queue_wait: pick(&self.max_queue_wait, &over.max_queue_wait),
            truncation: pick(&self.truncation, &over.truncation),
            max_continuations: pick(&self.max_continuations, &over.max_continuations),
            continue_past_client_limit: pick(
                &self.continue_past_client_limit,
                &over.continue_past_client_limit,
            ),
            max_repairs: pick(&self.max_repairs, &over.max_repairs),
            refusal: pick(&self.refusal, &over.refusal),
            refusal_phrases: pick(&self.refusal_phrases, &over.refusal_phrases),
        }
    }
}

// ---------------------------------------------------------------- loading

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Io {
            file: file.clone(),
            message: e.to_string(),
        })?;
        Config::from_toml_str(&text, &file, &|k| std::env::var(k).ok())
    }

    /// Parses and validates config text. `env` resolves `${VAR}`.
    pub fn from_toml_str(
        text: &str,
        file: &str,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let mut value: toml::Value = toml::from_str(text).map_err(|e| ConfigError::Syntax {
            file: file.to_string(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        interpolate(&mut value, "", file, env)?;
        let mut raw: RawConfig = serde_path_to_error::deserialize(value).map_err(|e| {
            let key = e.path().to_string();
            ConfigError::Schema {
                file: file.to_string(),
                key: if key == "." {
                    "(top level)".into()
                } else {
                    key
                },
                message: e
                    .inner()
                    .to_string()
                    .lines()
                    .next()
                    .unwrap_or_default()
                    .to_string(),
            }
        })?;
        bedrock::default_credentials(&mut raw, env);
        let raw_telemetry = std::mem::take(&mut raw.telemetry);
        let mut config = Validator { file }.config(raw)?;
        config.telemetry = Validator { file }.telemetry(&raw_telemetry, env)?;
        config.hash = keel_store::digest_hex(&[text.as_bytes()])[..16].to_string();
        Ok(config)
    }
}

/// Replaces `${VAR}` in every string value.
fn interpolate(
    value: &mut toml::Value,
    path: &str,
    file: &str,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(), ConfigError> {
    match value {
        toml::Value::String(s) => {
            let mut out = String::with_capacity(s.len());
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                out.push_str(&rest[..start]);
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else {
                    return Err(ConfigError::Invalid {
                        file: file.into(),
                        key: path.into(),
                        expected: "`${NAME}` with a closing brace".into(),
                        got: format!("{s:?}"),
                    });
                };
                let var = &after[..end];
                let val = env(var).ok_or_else(|| ConfigError::MissingEnv {
                    file: file.into(),
                    key: path.into(),
                    var: var.into(),
                })?;
                out.push_str(&val);
                rest = &after[end + 1..];
            }
            out.push_str(rest);
            *s = out;
        }
        toml::Value::Table(t) => {
            for (k, v) in t.iter_mut() {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                interpolate(v, &p, file, env)?;
            }
        }
        toml::Value::Array(a) => {
            for (i, v) in a.iter_mut().enumerate() {
                interpolate(v, &format!("{path}[{i}]"), file, env)?;
            }
        }
        _ => {}
    }
    Ok(())
}

struct Validator<'a> {
    file: &'a str,
}

impl Validator<'_> {
    fn invalid(&self, key: &str, expected: &str, got: impl fmt::Display) -> ConfigError {
        ConfigError::Invalid {
            file: self.file.into(),
            key: key.into(),
            expected: expected.into(),
            got: got.to_string(),
        }
    }

    fn policy_err(&self, prefix: &str, e: PolicyError) -> ConfigError {
        let PolicyError::InvalidParameter {
            name,
            expected,
            got,
        } = e;
        // Policy names ("backoff.base", "breaker.threshold") -> config keys.
        let key = match name {
            "backoff.base" => "backoff_base",
            "backoff.cap" => "backoff_cap",
            "backoff.max_attempts" => "max_attempts",
            "breaker.threshold" => "consecutive_failures",
            "breaker.ratio" => "failure_ratio",
            other => other.split_once('.').map_or(other, |(_, field)| field),
        };
        self.invalid(&format!("{prefix}.{key}"), &expected, got)
    }

    fn duration(
        &self,
        key: &str,
        v: &Option<String>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match v {
            None => Ok(default),
            Some(s) => humantime::parse_duration(s.trim()).map_err(|_| {
                self.invalid(
                    key,
                    "a duration like \"30s\" or \"250ms\"",
                    format!("{s:?}"),
                )
            }),
        }
    }

    fn config(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let listen_s = raw
            .server
            .listen
            .clone()
            .unwrap_or_else(|| "127.0.0.1:8080".into());
        let listen: SocketAddr = listen_s.parse().map_err(|_| {
            self.invalid(
                "server.listen",
                "an address like \"127.0.0.1:8080\"",
                format!("{listen_s:?}"),
            )
        })?;
        let max_body_bytes = raw.server.max_body_bytes.unwrap_or(10 * 1024 * 1024);
        if max_body_bytes == 0 {
            return Err(self.invalid("server.max_body_bytes", "a positive number of bytes", 0));
        }
        let positive = |key: &str, v: Option<u64>, default: usize, what: &str| {
            let n = v.unwrap_or(default as u64);
            usize::try_from(n)
                .ok()
                .and_then(std::num::NonZeroUsize::new)
                .ok_or_else(|| self.invalid(key, what, n))
        };
        let max_in_flight = positive(
            "server.max_in_flight",
            raw.server.max_in_flight,
            4096,
            "a positive number of requests",
        )?;
        let max_connections = positive(
            "server.max_connections",
            raw.server.max_connections,
            16384,
            "a positive number of connections",
        )?;
        let header_read_timeout = self.duration(
            "server.header_read_timeout",
            &raw.server.header_read_timeout,
            Duration::from_secs(10),
        )?;
        if header_read_timeout.is_zero() {
            return Err(self.invalid(
                "server.header_read_timeout",
                "a positive duration",
                "\"0s\"",
            ));
        }
        let drain_timeout = self.duration(
            "server.drain_timeout",
            &raw.server.drain_timeout,
            Duration::from_secs(30),
        )?;

        let mut providers = BTreeMap::new();
        for (name, p) in &raw.providers {
            let key = format!("providers.{name}");
            let kind_s = p.kind.clone().unwrap_or_else(|| name.clone());
            let kind = match kind_s.as_str() {
                "openai" => ProviderKind::OpenAi,
                "anthropic" => ProviderKind::Anthropic,
                "azure" => ProviderKind::Azure,
                "gemini" => ProviderKind::Gemini,
                "bedrock" => ProviderKind::Bedrock,
                other => {
                    return Err(self.invalid(
                        &format!("{key}.kind"),
                        "\"openai\", \"anthropic\", \"azure\", \"gemini\" or \"bedrock\"",
                        format!("{other:?}"),
                    ))
                }
            };
            let bedrock = self.bedrock(&key, kind == ProviderKind::Bedrock, p)?;
            let base_url = p.base_url.clone().unwrap_or_else(|| match kind {
                ProviderKind::OpenAi => "https://api.openai.com/v1".into(),
                ProviderKind::Anthropic => "https://api.anthropic.com/v1".into(),
                // Checked present by `azure` below.
                ProviderKind::Azure => String::new(),
                ProviderKind::Gemini => keel_wire::gemini::DEFAULT_BASE_URL.into(),
                ProviderKind::Bedrock => match &bedrock {
                    Some(b) => format!("https://bedrock-runtime.{}.amazonaws.com", b.region),
                    None => String::new(),
                },
            });
            let azure = self.azure(&key, p, kind == ProviderKind::Azure)?;
            if !(base_url.starts_with("http://") || base_url.starts_with("https://")) {
                return Err(self.invalid(
                    &format!("{key}.base_url"),
                    "an http:// or https:// URL",
                    format!("{base_url:?}"),
                ));
            }
            let api_key = p
                .api_key
                .clone()
                .or_else(|| azure.as_ref().and_then(|(_, token)| token.clone()))
                .filter(|k| !k.is_empty())
                .map(Secret::new);
            let mut api_keys: Vec<Secret> = api_key.iter().cloned().collect();
            if let Some(list) = &p.api_keys {
                if list.is_empty() {
                    return Err(self.invalid(&format!("{key}.api_keys"), "at least one key", "[]"));
                }
                for (i, k) in list.iter().enumerate() {
                    if k.is_empty() {
                        return Err(self.invalid(
                            &format!("{key}.api_keys[{i}]"),
                            "a non-empty key",
                            "\"\"",
                        ));
                    }
                    let k = Secret::new(k.clone());
                    if api_keys.contains(&k) {
                        // The value is never printed, only where it repeats.
                        return Err(self.invalid(
                            &format!("{key}.api_keys[{i}]"),
                            "a key not already in the pool",
                            "a duplicate",
                        ));
                    }
                    api_keys.push(k);
                }
            }
            providers.insert(
                name.clone(),
                Provider {
                    name: name.clone(),
                    kind,
                    base_url: base_url.trim_end_matches('/').to_string(),
                    api_key: api_keys.first().cloned(),
                    api_keys,
                    azure: azure.map(|(api, _)| api),
                    bedrock,
                },
            );
        }

        let mut deployments = Vec::new();
        let mut index_of = BTreeMap::new();
        for (i, (name, d)) in raw.deployments.iter().enumerate() {
            let key = format!("deployments.{name}");
            let provider = providers.get(&d.provider).ok_or_else(|| {
                self.invalid(
                    &format!("{key}.provider"),
                    &format!("one of the providers ({})", names(providers.keys())),
                    format!("{:?}", d.provider),
                )
            })?;
            let embedding = self.embedding(&key, d, provider.kind)?;
            if provider.kind == ProviderKind::Azure && !azure::deployment_name(&d.model) {
                return Err(self.invalid(
                    &format!("{key}.model"),
                    "an Azure deployment name (letters, digits, '-', '_', '.')",
                    format!("{:?}", d.model),
                ));
            }
            let responses = self.responses_support(&key, d, provider.kind, &provider.base_url)?;
            // Claude's window is 200,000 tokens; OpenAI's current models'
            // 128,000; its embedding models take 8,192 per input, Gemini's
            // 2,048.
            let context_window = d.context_window.unwrap_or(match provider.kind {
                ProviderKind::Gemini if embedding.space.is_some() => 2_048,
                _ if embedding.space.is_some() => 8_192,
                ProviderKind::Anthropic | ProviderKind::Bedrock => 200_000,
                ProviderKind::OpenAi | ProviderKind::Azure => 128_000,
                ProviderKind::Gemini => keel_wire::gemini::DEFAULT_CONTEXT_WINDOW,
            });
            if context_window == 0 {
                return Err(self.invalid(
                    &format!("{key}.context_window"),
                    "a positive token count",
                    0,
                ));
            }
            let max_output_tokens = d.max_output_tokens.unwrap_or(context_window.min(16_384));
            if max_output_tokens == 0 || max_output_tokens > context_window {
                return Err(self.invalid(
                    &format!("{key}.max_output_tokens"),
                    &format!("1..={context_window} (the context window)"),
                    max_output_tokens,
                ));
            }
            let max_in_flight = d.max_in_flight.unwrap_or(1024);
            if max_in_flight == 0 {
                return Err(self.invalid(&format!("{key}.max_in_flight"), "a positive number", 0));
            }
            for (field, v) in [("rpm", d.rpm), ("tpm", d.tpm)] {
                if v == Some(0) {
                    return Err(self.invalid(
                        &format!("{key}.{field}"),
                        "a positive number (omit for no limit)",
                        0,
                    ));
                }
            }
            for (field, v) in [
                ("input_price", d.input_price),
                ("output_price", d.output_price),
            ] {
                if let Some(p) = v {
                    if !(p.is_finite() && p >= 0.0) {
                        return Err(self.invalid(
                            &format!("{key}.{field}"),
                            "a price >= 0 (USD per million tokens)",
                            p,
                        ));
                    }
                }
            }
            index_of.insert(name.clone(), i);
            let mut deployment = Deployment {
                name: name.clone(),
                index: i,
                provider: provider.name.clone(),
                kind: provider.kind,
                base_url: provider.base_url.clone(),
                endpoint: http::Uri::try_from(match (provider.kind, &provider.azure) {
                    (ProviderKind::Azure, Some(az)) => {
                        az.url(&provider.base_url, &d.model, "/chat/completions")
                    }
                    (ProviderKind::Anthropic, _) => format!("{}/messages", provider.base_url),
                    (ProviderKind::Gemini, _) => format!(
                        "{}{}",
                        provider.base_url,
                        keel_wire::gemini::generate_path(&d.model)
                    ),
                    (ProviderKind::Bedrock, _) => format!(
                        "{}{}",
                        provider.base_url,
                        keel_wire::bedrock::converse_path(&d.model, false)
                    ),
                    _ => format!("{}/chat/completions", provider.base_url),
                })
                .ok(),
                // Gemini names the streaming mode in the path.
                stream_endpoint: (provider.kind == ProviderKind::Gemini)
                    .then(|| {
                        let path = keel_wire::gemini::stream_path(&d.model);
                        http::Uri::try_from(format!("{}{path}", provider.base_url)).ok()
                    })
                    .flatten(),
                api_key: provider.api_key.clone(),
                embedding_space: embedding.space,
                max_batch_inputs: embedding.max_batch_inputs,
                dimensions: embedding.dimensions,
                api_keys: provider.api_keys.clone(),
                azure: provider.azure.clone(),
                stream_upstream: d.stream_upstream.unwrap_or(
                    d.streaming.unwrap_or(true)
                        && matches!(
                            provider.kind,
                            ProviderKind::OpenAi | ProviderKind::Azure | ProviderKind::Anthropic
                        ),
                ),
                model: d.model.clone(),
                context_window,
                max_output_tokens,
                capabilities: Capabilities {
                    tools: d.tools.unwrap_or(true),
                    vision: d.vision.unwrap_or(true),
                    json_schema: d.json_schema.unwrap_or(matches!(
                        provider.kind,
                        ProviderKind::OpenAi | ProviderKind::Azure | ProviderKind::Gemini
                    )),
                    streaming: d.streaming.unwrap_or(true),
                },
                limits: LimiterConfig {
                    rpm: d.rpm,
                    tpm: d.tpm,
                    ..LimiterConfig::default()
                },
                max_in_flight,
                input_price: d.input_price.unwrap_or(0.0),
                output_price: d.output_price.unwrap_or(0.0),
                request_headers: http::HeaderMap::new(),
                bedrock: provider.bedrock.clone(),
                responses,
            };
            deployment.refresh_request_headers();
            deployments.push(deployment);
        }

        // The defaults first, so an error in `[policy]` is reported there.
        self.request_policy("policy", &raw.policy)?;
        let mut routes = BTreeMap::new();
        for (name, r) in &raw.routes {
            let key = format!("routes.{name}");
            if r.chain.is_empty() {
                return Err(self.invalid(&format!("{key}.chain"), "at least one deployment", "[]"));
            }
            let mut chain = Vec::new();
            for (i, d) in r.chain.iter().enumerate() {
                let idx = index_of.get(d).ok_or_else(|| {
                    self.invalid(
                        &format!("{key}.chain[{i}]"),
                        &format!("one of the deployments ({})", names(index_of.keys())),
                        format!("{d:?}"),
                    )
                })?;
                chain.push(*idx);
            }
            let policy =
                self.request_policy(&format!("{key}.policy"), &raw.policy.overlay(&r.policy))?;
            let mut refusal_fallbacks = Vec::new();
            for (i, d) in r.refusal_fallbacks.iter().enumerate() {
                let idx = index_of.get(d).ok_or_else(|| {
                    self.invalid(
                        &format!("{key}.refusal_fallbacks[{i}]"),
                        &format!("one of the deployments ({})", names(index_of.keys())),
                        format!("{d:?}"),
                    )
                })?;
                refusal_fallbacks.push(*idx);
            }
            let json_schema = match &r.json_schema {
                None => None,
                Some(t) => {
                    let v = serde_json::to_value(t).map_err(|e| {
                        self.invalid(&format!("{key}.json_schema"), "a JSON Schema", e)
                    })?;
                    content::compile_schema(&v).map_err(|e| {
                        self.invalid(&format!("{key}.json_schema"), "a valid JSON Schema", e)
                    })?;
                    Some(v)
                }
            };
            let routing = self.routing(&key, r, &chain, &index_of)?;
            let embedding_space = self.route_space(&key, r, &chain, &deployments)?;
            routes.insert(
                name.clone(),
                Route {
                    name: name.clone(),
                    chain,
                    policy,
                    static_response: r.static_response.clone(),
                    cache: self.route_cache(&key, &r.cache_ttl, &r.stale_ttl, &raw.cache)?,
                    refusal_fallbacks,
                    json_schema,
                    routing,
                    hedge: self.hedge(&key, r)?,
                    embedding_space,
                },
            );
        }

        let store = self.store(&raw.store)?;
        let tenants = self.tenants(&raw.tenants, &routes)?;
        Ok(Config {
            file: self.file.into(),
            hash: String::new(),
            server: ServerConfig {
                listen,
                max_body_bytes: max_body_bytes as usize,
                admin_token: raw
                    .server
                    .admin_token
                    .clone()
                    .filter(|t| !t.is_empty())
                    .map(Secret::new),
                max_in_flight,
                max_connections,
                header_read_timeout,
                drain_timeout,
            },
            providers,
            deployments,
            routes,
            breaker: self.breaker(&raw.breaker)?,
            retry_budget: self.budget(&raw.retry_budget)?,
            store: store.store,
            idempotency_ttl: store.idempotency_ttl,
            tenants,
            slow_start: match self.duration(
                "breaker.slow_start",
                &raw.breaker.slow_start,
                Duration::ZERO,
            )? {
                d if d.is_zero() => None,
                d => Some(d),
            },
            telemetry: None,
            responses: self.responses_config(&raw.responses)?,
        })
    }

    fn request_policy(&self, prefix: &str, p: &RawPolicy) -> Result<RequestPolicy, ConfigError> {
        let k = |f: &str| format!("{prefix}.{f}");
        let kind =
            match p.backoff.as_deref().unwrap_or("full_jitter") {
                "immediate" => BackoffKind::Immediate,
                "fixed" => BackoffKind::Fixed,
                "exponential" => BackoffKind::Exponential,
                "full_jitter" => BackoffKind::FullJitter,
                "equal_jitter" => BackoffKind::EqualJitter,
                "decorrelated" => BackoffKind::Decorrelated,
                other => return Err(self.invalid(
                    &k("backoff"),
                    "one of immediate, fixed, exponential, full_jitter, equal_jitter, decorrelated",
                    format!("{other:?}"),
                )),
            };
        let backoff = Backoff::new(BackoffConfig {
            kind,
            base: self.duration(
                &k("backoff_base"),
                &p.backoff_base,
                Duration::from_millis(100),
            )?,
            cap: self.duration(&k("backoff_cap"), &p.backoff_cap, Duration::from_secs(5))?,
            max_attempts: p.max_attempts.unwrap_or(3),
        })
        .map_err(|e| self.policy_err(prefix, e))?;
        let stream_failure = match p.stream_failure.as_deref().unwrap_or("resume") {
            "resume" => StreamFailure::Resume,
            "fail" => StreamFailure::Fail,
            other => {
                return Err(self.invalid(
                    &k("stream_failure"),
                    "\"resume\" or \"fail\"",
                    format!("{other:?}"),
                ))
            }
        };
        let stream_json = match p.stream_json.as_deref().unwrap_or("validate") {
            "validate" => StreamJson::Validate,
            "pass" => StreamJson::Pass,
            other => {
                let (key, expected) = (k("stream_json"), "\"validate\" or \"pass\"");
                return Err(self.invalid(&key, expected, format!("{other:?}")));
            }
        };
        let timeout = self.duration(&k("timeout"), &p.timeout, Duration::from_secs(60))?;
        let attempt_timeout = self.duration(
            &k("attempt_timeout"),
            &p.attempt_timeout,
            Duration::from_secs(30),
        )?;
        for (f, d) in [("timeout", timeout), ("attempt_timeout", attempt_timeout)] {
            if d.is_zero() {
                return Err(self.invalid(&k(f), "a positive duration", "0s"));
            }
        }
        Ok(RequestPolicy {
            backoff,
            timeout,
            attempt_timeout,
            first_token_timeout: self.duration(
                &k("first_token_timeout"),
                &p.first_token_timeout,
                Duration::from_secs(15),
            )?,
            first_token: FirstTokenDeadline {
                floor: self.duration(
                    &k("first_token_floor"),
                    &p.first_token_floor,
                    Duration::from_secs(1),
                )?,
                factor: match p.first_token_p99_factor {
                    None => 4.0,
                    Some(f) if f.is_finite() && f > 0.0 => f,
                    Some(f) => {
                        let key = k("first_token_p99_factor");
                        return Err(self.invalid(&key, "a number > 0", f));
                    }
                },
            },
            inter_token_timeout: self.duration(
                &k("inter_token_timeout"),
                &p.inter_token_timeout,
                Duration::from_secs(10),
            )?,
            failover_after: self.duration(
                &k("failover_after"),
                &p.failover_after,
                Duration::from_millis(250),
            )?,
            stream_failure,
            stream_json,
            stream_commit: CommitWindow {
                chars: p.stream_commit_chars.unwrap_or(48) as usize,
                after: self.duration(
                    &k("stream_commit_after"),
                    &p.stream_commit_after,
                    Duration::from_millis(400),
                )?,
            },
            max_queue_wait: self.duration(
                &k("max_queue_wait"),
                &p.max_queue_wait,
                Duration::from_secs(5),
            )?,
            content: self.content_policy(prefix, p)?,
        })
    }

    fn content_policy(
        &self,
        prefix: &str,
        p: &RawPolicy,
    ) -> Result<content::ContentPolicy, ConfigError> {
        use content::{ContentPolicy, RefusalPolicy, TruncationPolicy};
        let k = |f: &str| format!("{prefix}.{f}");
        let d = ContentPolicy::default();
        let truncation = match p.truncation.as_deref() {
            None => d.truncation,
            Some("continue") => TruncationPolicy::Continue,
            Some("raise") => TruncationPolicy::Raise,
            Some("accept") => TruncationPolicy::Accept,
            Some(other) => {
                return Err(self.invalid(
                    &k("truncation"),
                    "\"continue\", \"raise\" or \"accept\"",
                    format!("{other:?}"),
                ))
            }
        };
        let refusal = match p.refusal.as_deref() {
            None => d.refusal,
            Some("fallback") => RefusalPolicy::Fallback,
            Some("accept") => RefusalPolicy::Accept,
            Some(other) => {
                return Err(self.invalid(
                    &k("refusal"),
                    "\"fallback\" or \"accept\"",
                    format!("{other:?}"),
                ))
            }
        };
        let max_continuations = p.max_continuations.unwrap_or(d.max_continuations);
        if max_continuations > 10 {
            return Err(self.invalid(&k("max_continuations"), "0..=10", max_continuations));
        }
        let max_repairs = p.max_repairs.unwrap_or(d.max_repairs);
        if max_repairs > 10 {
            return Err(self.invalid(&k("max_repairs"), "0..=10", max_repairs));
        }
        Ok(ContentPolicy {
            truncation,
            max_continuations,
            continue_past_client_limit: p
                .continue_past_client_limit
                .unwrap_or(d.continue_past_client_limit),
            max_repairs,
            refusal,
            refusal_phrases: match &p.refusal_phrases {
                Some(list) => std::sync::Arc::new(list.iter().map(|s| s.to_lowercase()).collect()),
                None => d.refusal_phrases,
            },
        })
    }

    fn breaker(&self, b: &RawBreaker) -> Result<BreakerConfig, ConfigError> {
        let d = BreakerConfig::default();
        let mode = match (b.failure_ratio, b.consecutive_failures) {
            (Some(ratio), _) => BreakerMode::FailureRatio {
                ratio,
                window: self.duration("breaker.window", &b.window, Duration::from_secs(30))?,
                min_throughput: b.min_throughput.unwrap_or(10),
            },
            (None, Some(threshold)) => BreakerMode::ConsecutiveFailures { threshold },
            (None, None) => d.mode.clone(),
        };
        let open_for = self.duration("breaker.open_for", &b.open_for, d.open_for)?;
        let cfg = BreakerConfig {
            mode,
            open_for,
            max_open_for: self.duration(
                "breaker.max_open_for",
                &b.max_open_for,
                d.max_open_for.max(open_for),
            )?,
            half_open_probes: b.half_open_probes.unwrap_or(d.half_open_probes),
            slow_call: match &b.slow_call {
                Some(_) => {
                    Some(self.duration("breaker.slow_call", &b.slow_call, Duration::ZERO)?)
                }
                None => None,
            },
            ..d
        };
        keel_policy::CircuitBreaker::new(cfg.clone()).map_err(|e| self.policy_err("breaker", e))?;
        Ok(cfg)
    }

    fn budget(&self, b: &RawBudget) -> Result<BudgetConfig, ConfigError> {
        let d = BudgetConfig::default();
        let cfg = BudgetConfig {
            ratio: b.ratio.unwrap_or(d.ratio),
            min_per_sec: b.min_per_sec.unwrap_or(d.min_per_sec),
            window: self.duration("retry_budget.window", &b.window, d.window)?,
        };
        keel_policy::RetryBudget::new(cfg.clone())
            .map_err(|e| self.policy_err("retry_budget", e))?;
        Ok(cfg)
    }
}

fn names<'a>(it: impl Iterator<Item = &'a String>) -> String {
    let v: Vec<&str> = it.map(String::as_str).collect();
    if v.is_empty() {
        "none defined".into()
    } else {
        v.join(", ")
    }
}

impl Config {
    /// The resolved config as TOML-like text with keys masked (`keel check-config`).
    pub fn describe(&self) -> String {
        use std::fmt::Write;
        let mut s = String::new();
        let _ = writeln!(s, "# {} (resolved; keys masked)", self.file);
        let _ = writeln!(
            s,
            "[server]\nlisten = \"{}\"\nmax_body_bytes = {}\nadmin_token = \"{}\"\n",
            self.server.listen,
            self.server.max_body_bytes,
            self.server
                .admin_token
                .as_ref()
                .map_or_else(|| "(none)".into(), Secret::masked)
        );
        for p in self.providers.values() {
            let key = match p.api_keys.len() {
                0 => "(none)".to_string(),
                1 => p.api_keys[0].masked(),
                n => format!("{} (+{} more in the pool)", p.api_keys[0].masked(), n - 1),
            };
            let _ = writeln!(
                s,
                "[providers.{}]\nkind = \"{}\"\nbase_url = \"{}\"\napi_key = \"{}\"\n",
                p.name,
                p.kind.as_str(),
                p.base_url,
                key
            );
        }
        for d in &self.deployments {
            let _ = writeln!(
                s,
                "[deployments.{}]\nprovider = \"{}\"\nmodel = \"{}\"\ncontext_window = {}\nmax_output_tokens = {}\ntools = {}\nvision = {}\njson_schema = {}\nstreaming = {}\nrpm = {}\ntpm = {}\nmax_in_flight = {}\ninput_price = {}\noutput_price = {}\n",
                d.name, d.provider, d.model, d.context_window, d.max_output_tokens,
                d.capabilities.tools, d.capabilities.vision, d.capabilities.json_schema, d.capabilities.streaming,
                d.limits.rpm.map_or("unlimited".into(), |v| v.to_string()),
                d.limits.tpm.map_or("unlimited".into(), |v| v.to_string()),
                d.max_in_flight, d.input_price, d.output_price
            );
        }
        for r in self.routes.values() {
            let chain: Vec<&str> = r
                .chain
                .iter()
                .map(|&i| self.deployments[i].name.as_str())
                .collect();
            let p = &r.policy;
            let _ = writeln!(
                s,
                "[routes.{}]\nchain = {:?}\nmax_attempts = {}\ntimeout = \"{:?}\"\nattempt_timeout = \"{:?}\"\nfirst_token_timeout = \"{:?}\"\ninter_token_timeout = \"{:?}\"\nfailover_after = \"{:?}\"\nstream_failure = \"{:?}\"\nstatic_response = {:?}\n",
                r.name, chain, p.backoff.max_attempts(), p.timeout, p.attempt_timeout, p.first_token_timeout,
                p.inter_token_timeout, p.failover_after, p.stream_failure, r.static_response
            );
        }
        let _ = writeln!(
            s,
            "[breaker]\n{:?}\n\n[retry_budget]\n{:?}",
            self.breaker, self.retry_budget
        );
        s
    }
}
