//! Keel inside your Rust program: [`Client`], the whole pipeline (routes,
//! retries with backoff and server hints, retry budget, circuit breakers,
//! rate limits, fallbacks across deployments and providers, streaming with
//! resume, cache, content checks) without a gateway process in the path.
//!
//! It is a thin facade over [`keel_engine::Engine`], the same engine that
//! `keel serve` and `keel batch` run, so a request behaves exactly as it
//! would through the gateway, and it is configured with the same
//! `keel.toml`: every key, default and error message is the gateway's.
//!
//! # Quick start
//!
//! ```no_run
//! use keel::Client;
//! use keel_wire::openai::{ChatRequest, Message};
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = Client::from_toml_file("keel.toml")?;
//! let request = ChatRequest::new("gpt-4o", vec![Message::user("Say hello.")]);
//! let response = client.chat(request).await?;
//! println!("{}", response.text().unwrap_or_default());
//! # Ok(()) }
//! ```
//!
//! The request and response are OpenAI Chat Completions types
//! ([`keel_wire::openai`]) whatever the provider: a route may fall back from
//! GPT to Claude and the answer still comes back in the OpenAI shape. The
//! request's `model` names a route of the config.
//!
//! # Building without a file
//!
//! [`Client::builder`] assembles the same TOML tables in code and validates
//! them with the same function as a file ([`Config::from_toml_str`]), so a
//! mistake gives the same message as it would in `keel.toml`. Keys without
//! a dedicated method are set by their dotted path:
//!
//! ```no_run
//! use keel::client::{Client, ProviderSpec};
//!
//! # fn build() -> Result<(), keel::client::BuildError> {
//! let client = Client::builder()
//!     .provider("openai", ProviderSpec::openai().api_key("sk-..."))
//!     .provider("anthropic", ProviderSpec::anthropic().api_key("sk-ant-..."))
//!     .deployment("gpt-4o", "openai", "gpt-4o")
//!     .deployment("sonnet", "anthropic", "claude-sonnet-4-5")
//!     .route("gpt-4o", ["gpt-4o", "sonnet"])
//!     .set("policy.max_attempts", 2)
//!     .set("deployments.gpt-4o.rpm", 500)
//!     .build()?;
//! # let _ = client; Ok(()) }
//! ```
//!
//! # Streaming
//!
//! [`Client::chat_stream`] yields OpenAI chunks. Failures before the first
//! token are retried and fallen back invisibly, exactly like
//! [`Client::chat`]; a stream that breaks later is resumed on the next
//! deployment (`stream_failure = "resume"`, the default) or ends with one
//! `Err` item.
//!
//! ```no_run
//! use futures_util::StreamExt;
//! # async fn run(client: keel::Client) -> Result<(), keel::client::ClientError> {
//! use keel_wire::openai::{ChatRequest, Message};
//! let request = ChatRequest::new("gpt-4o", vec![Message::user("Count to ten.")]);
//! let mut stream = std::pin::pin!(client.chat_stream(request));
//! while let Some(chunk) = stream.next().await {
//!     for choice in chunk?.choices {
//!         print!("{}", choice.delta.content.unwrap_or_default());
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Errors and the attempt log
//!
//! A [`ClientError`] carries the HTTP status the gateway would have
//! answered, a message, and [`RequestReport`]: every attempt with its deployment,
//! failure class, status, latency and what Keel did next. For the log of a
//! successful answer too, use [`Client::chat_call`].
//!
//! # Testing with the chaos server
//!
//! Point a provider's `base_url` at an in-process `keel_chaos::ChaosServer`
//! (port 0) and count the attempts it saw; the example
//! `cargo run -p keel --example client_chaos` does exactly that.

use std::path::Path;
use std::time::Duration;

use futures_util::Stream;
use keel_engine::config::{Config, ConfigError};
use keel_engine::{
    ChatCall, ChatOutcome, Engine, EngineError, ErrorKind, RequestReport, StreamItem, StreamItems,
};
use keel_wire::openai::{ChatChunk, ChatRequest, ChatResponse};

/// The name used for the configuration in messages when it was assembled
/// by [`ClientBuilder`].
pub const BUILDER_FILE: &str = "<builder>";
/// The name used for the configuration in messages when it came from
/// [`Client::from_toml_str`].
pub const STRING_FILE: &str = "<string>";

/// An embedded Keel: the gateway's pipeline as a library. Cheap to clone
/// (clones share breakers, limiters, budget and cache).
#[derive(Clone)]
pub struct Client {
    engine: Engine,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("routes", &self.engine.config().routes.keys())
            .finish()
    }
}

/// The configuration was invalid, or the engine could not start.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// The configuration was rejected (the same messages as `keel check-config`).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The engine could not be built from a valid configuration.
    #[error(transparent)]
    Engine(#[from] keel_engine::BuildError),
}

/// A request Keel could not answer.
#[derive(Clone, Debug, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ClientError {
    /// The HTTP status the gateway would have answered with.
    pub status: u16,
    /// What went wrong, broadly.
    pub kind: ErrorKind,
    /// The provider's code, for example `context_length_exceeded`.
    pub code: Option<String>,
    /// Human-readable message.
    pub message: String,
    /// When trying again may help.
    pub retry_after: Option<Duration>,
    /// The attempt log.
    pub meta: RequestReport,
}

impl From<EngineError> for ClientError {
    fn from(e: EngineError) -> Self {
        ClientError {
            status: e.status,
            kind: e.kind,
            code: e.code,
            message: e.message,
            retry_after: e.retry_after,
            meta: e.meta,
        }
    }
}

impl Client {
    /// Reads and validates a `keel.toml` (`${VAR}` from the environment).
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<Client, BuildError> {
        Client::from_config(Config::load(path.as_ref())?)
    }

    /// Validates configuration text (`${VAR}` from the environment).
    pub fn from_toml_str(text: &str) -> Result<Client, BuildError> {
        let config = Config::from_toml_str(text, STRING_FILE, &|k| std::env::var(k).ok())?;
        Client::from_config(config)
    }

    /// A client on an already validated configuration.
    pub fn from_config(config: Config) -> Result<Client, BuildError> {
        Ok(Client {
            engine: Engine::new(config)?,
        })
    }

    /// A client on an existing engine (sharing its state).
    pub fn from_engine(engine: Engine) -> Client {
        Client { engine }
    }

    /// Assembles a configuration in code.
    pub fn builder() -> ClientBuilder {
        ClientBuilder::default()
    }

    /// The engine underneath (configuration, [`Engine::stats`], status).
    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Answers a chat request (`request.model` names the route).
    pub async fn chat(&self, request: ChatRequest) -> Result<ChatResponse, ClientError> {
        Ok(self
            .chat_call(ChatCall::openai(request))
            .await?
            .into_response())
    }

    /// Answers a call with per-request options (deadline, attempts, no
    /// fallbacks, tenant, cache control) and returns the attempt log with
    /// the answer.
    pub async fn chat_call(&self, mut call: ChatCall) -> Result<ChatOutcome, ClientError> {
        call.request_mut().stream = None;
        call.request_mut().stream_options = None;
        Ok(self.engine.chat(call).await?)
    }

    /// Streams the answer to a chat request as OpenAI chunks.
    ///
    /// Nothing is sent until the stream is first polled. A failure before
    /// the first token is the stream's only item; a break after it ends the
    /// stream with an `Err` (unless the route resumes it elsewhere).
    pub fn chat_stream(
        &self,
        request: ChatRequest,
    ) -> impl Stream<Item = Result<ChatChunk, ClientError>> + Send + 'static {
        let mut call = ChatCall::openai(request);
        call.request_mut().stream = Some(true);
        futures_util::stream::unfold(
            StreamState::Start(self.engine.clone(), Box::new(call)),
            |state| async move {
                match state {
                    StreamState::Start(engine, call) => match engine.chat_stream(*call).await {
                        Ok(outcome) => next_chunk(outcome.items, outcome.meta).await,
                        Err(e) => Some((Err(e.into()), StreamState::Done)),
                    },
                    StreamState::Open(items, meta) => next_chunk(items, *meta).await,
                    StreamState::Done => None,
                }
            },
        )
    }
}

enum StreamState {
    Start(Engine, Box<ChatCall>),
    Open(StreamItems, Box<RequestReport>),
    Done,
}

async fn next_chunk(
    mut items: StreamItems,
    meta: RequestReport,
) -> Option<(Result<ChatChunk, ClientError>, StreamState)> {
    let (class, message) = match items.recv().await? {
        StreamItem::Chunk(chunk) => match chunk.into_parsed() {
            Ok(chunk) => return Some((Ok(chunk), StreamState::Open(items, Box::new(meta)))),
            Err(e) => (
                keel_policy::FailureClass::Network,
                format!("unreadable stream chunk: {e}"),
            ),
        },
        StreamItem::Error { class, message } => (class, message),
    };
    let error = ClientError {
        status: 502,
        kind: ErrorKind::Upstream,
        code: Some(class.as_str().to_string()),
        message: format!("the stream broke after its first token ({class}): {message}"),
        retry_after: None,
        meta,
    };
    Some((Err(error), StreamState::Done))
}

/// An upstream provider account for [`ClientBuilder::provider`]: the
/// `[providers.NAME]` table.
#[derive(Clone, Debug)]
pub struct ProviderSpec {
    table: toml::Table,
}

impl ProviderSpec {
    fn of_kind(kind: &str) -> ProviderSpec {
        let mut table = toml::Table::new();
        table.insert("kind".into(), kind.into());
        ProviderSpec { table }
    }

    /// OpenAI, or any OpenAI-compatible server (`kind = "openai"`).
    pub fn openai() -> ProviderSpec {
        ProviderSpec::of_kind("openai")
    }

    /// Anthropic Messages (`kind = "anthropic"`).
    pub fn anthropic() -> ProviderSpec {
        ProviderSpec::of_kind("anthropic")
    }

    /// `base_url`, up to and including `/v1` (default: the provider's public API).
    pub fn base_url(mut self, url: impl Into<String>) -> ProviderSpec {
        self.table.insert("base_url".into(), url.into().into());
        self
    }

    /// `api_key` (`${VAR}` is read from the environment).
    pub fn api_key(mut self, key: impl Into<String>) -> ProviderSpec {
        self.table.insert("api_key".into(), key.into().into());
        self
    }
}

/// Assembles a `keel.toml` in code; see the [module docs](self).
#[derive(Clone, Debug, Default)]
pub struct ClientBuilder {
    root: toml::Table,
    seed: Option<u64>,
}

impl ClientBuilder {
    /// `[providers.NAME]`.
    pub fn provider(mut self, name: &str, provider: ProviderSpec) -> Self {
        insert_path(
            &mut self.root,
            &["providers", name],
            toml::Value::Table(provider.table),
        );
        self
    }

    /// `[deployments.NAME]` with `provider` and `model`; more keys with
    /// [`set`](Self::set) (`deployments.NAME.rpm`, `.context_window`...).
    pub fn deployment(mut self, name: &str, provider: &str, model: &str) -> Self {
        let mut table = toml::Table::new();
        table.insert("provider".into(), provider.into());
        table.insert("model".into(), model.into());
        insert_path(
            &mut self.root,
            &["deployments", name],
            toml::Value::Table(table),
        );
        self
    }

    /// `[routes.NAME] chain = [...]`: the `model` clients ask for and the
    /// deployments tried in order.
    pub fn route<I, S>(mut self, name: &str, chain: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let chain: Vec<toml::Value> = chain
            .into_iter()
            .map(|d| toml::Value::String(d.into()))
            .collect();
        let mut table = toml::Table::new();
        table.insert("chain".into(), toml::Value::Array(chain));
        insert_path(&mut self.root, &["routes", name], toml::Value::Table(table));
        self
    }

    /// Sets any key by its dotted path, as in `keel.toml`:
    /// `"policy.max_attempts"`, `"routes.chat.policy.timeout"`,
    /// `"breaker.open_for"`. Intermediate tables are created; a value in the
    /// way is replaced by a table.
    pub fn set(mut self, path: &str, value: impl Into<toml::Value>) -> Self {
        let parts: Vec<&str> = path.split('.').collect();
        insert_path(&mut self.root, &parts, value.into());
        self
    }

    /// Seeds the retry jitter (deterministic tests).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The assembled configuration as `keel.toml` text.
    pub fn to_toml(&self) -> String {
        toml::to_string(&self.root).unwrap_or_default()
    }

    /// Validates the configuration (exactly as a file would be; messages
    /// name the file [`BUILDER_FILE`]) and starts the client.
    pub fn build(self) -> Result<Client, BuildError> {
        let config =
            Config::from_toml_str(&self.to_toml(), BUILDER_FILE, &|k| std::env::var(k).ok())?;
        let engine = match self.seed {
            Some(seed) => Engine::with_seed(config, seed)?,
            None => Engine::new(config)?,
        };
        Ok(Client { engine })
    }
}

/// Inserts `value` at `path`, creating (or replacing non-table values with)
/// intermediate tables.
fn insert_path(table: &mut toml::Table, path: &[&str], value: toml::Value) {
    match path {
        [] => {}
        [last] => {
            table.insert((*last).to_string(), value);
        }
        [first, rest @ ..] => {
            let mut sub = match table.remove(*first) {
                Some(toml::Value::Table(t)) => t,
                _ => toml::Table::new(),
            };
            insert_path(&mut sub, rest, value);
            table.insert((*first).to_string(), toml::Value::Table(sub));
        }
    }
}
