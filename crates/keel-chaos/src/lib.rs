//! keel-chaos: a fault-injecting fake OpenAI/Anthropic upstream.
//!
//! Everything Keel claims is proven against this server, so it has to be two
//! things at once: faithful enough that the official `openai` and `anthropic`
//! SDKs cannot tell it from the real APIs (same routes, bodies, SSE events,
//! error shapes and rate-limit headers), and nasty enough to produce every
//! failure of the taxonomy on demand, deterministically for a seed.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use keel_chaos::{ChaosServer, Scenario};
//! let listen = std::net::SocketAddr::from(([127, 0, 0, 1], 0)); // port 0: any free port
//! let chaos = ChaosServer::start(Scenario::demo(), 42, listen).await?;
//! let base_url = chaos.base_url("primary"); // http://127.0.0.1:PORT/primary/v1
//! # let _ = base_url;
//! chaos.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Routes
//! Per upstream `{name}`: `POST /{name}/v1/chat/completions`,
//! `POST /{name}/v1/responses` (OpenAI's Responses API, plain and streamed,
//! every fault) and `POST /{name}/v1/embeddings` (kind `openai`),
//! `POST /{name}/v1/messages`
//! and `POST /{name}/v1/messages/count_tokens` (kind `anthropic`),
//! `GET /{name}/v1/models`. Embedding vectors are a pure function of the
//! seed, the model and the input (so two upstreams of one model agree);
//! `dimensions` and `encoding_format` (`float`, `base64`) are honoured.
//! Anything else gets a 404 in that provider's shape. The control API lives
//! under `/_chaos` (see below).
//!
//! # Scenario format (TOML)
//! ```toml
//! [[upstream]]
//! name = "primary"               # served at /primary/v1
//! kind = "openai"                # or "anthropic", "azure", "gemini", "bedrock"
//! api_key = "sk-chaos-primary"   # optional: requests without it get the provider's 401
//! rpm = 600                      # optional: 429 + x-ratelimit-* / anthropic-ratelimit-* when exceeded
//! tpm = 200000                   # optional: prompt estimate + max_tokens per minute
//! latency = "20ms"               # base time to first byte (default 0)
//! token_delay = "2ms"            # between stream chunks; a whole answer comes when its stream would end (default 0)
//! models = ["gpt-4o-mini"]       # optional: other models get the provider's 404
//! context_window = 128000        # optional: longer prompts get the context-length error
//! max_inputs = 16                # optional: embeddings arrays longer than this get a 400 (default 2048)
//! require_thought_signatures = true  # gemini only: a function-calling step of the current turn without its thought signature gets Gemini 3's 400
//!
//! [[upstream.fault]]             # first matching fault wins
//! kind = "rate_limit"            # a fault kind, see below
//! probability = 0.1              # or every = 5, or sequence = [1, 2], or nothing = always
//! window = { from = "10s", until = "30s" }  # optional, offsets from start / plan change
//! streaming_only = false         # optional (or non_streaming_only)
//! retry_after = "1s"             # kind-specific field
//! ```
//!
//! Fault kinds and their fields: `rate_limit` (`retry_after`, `header_style` =
//! `all`|`seconds`|`ms`|`http_date`|`reset`|`none`), `quota_exhausted`,
//! `overloaded`, `server_error` (`status`, default 500), `status` (`status`,
//! required), `auth`, `context_overflow`, `bad_request`, `not_found`, `hang`,
//! `slow_first_byte` (`delay`), `slow_tokens` (`delay`), `reset`,
//! `cut_stream` (`after_chunks`, default 3), `malformed_json`, `empty`,
//! `truncate`, `refusal`, `invalid_json`. On the embeddings (OpenAI's
//! `/v1/embeddings`, Gemini's `:embedContent` and `:batchEmbedContents`)
//! and token counting endpoints, `empty` answers no vectors, `malformed_json` and
//! `cut_stream` cut the body, and the content faults that have no meaning
//! there (`truncate`, `refusal`, `invalid_json`) deliver the plain answer.
//!
//! Attempts are numbered from 1 per upstream since the current plan was
//! installed (start, [`ChaosHandle::set_faults`], [`ChaosHandle::reset`]);
//! `sequence`, `every` and the seeded `probability` draw refer to those
//! numbers, so a run replays exactly for a seed.
//!
//! Invalid scenarios are rejected with the file, the key path and what was
//! expected: `examples/x.toml: upstream[0].fault[1].probability: expected a
//! number in 0..=1, got 1.5`.
//!
//! # Control API
//! - `GET /_chaos/stats`: `{"upstreams": {name: {attempts, by_outcome, log}}}`
//!   (`?log=false` omits the logs)
//! - `PUT /_chaos/upstreams/{name}/faults`: body `{"faults":[{"kind":"server_error","status":500}]}`,
//!   the same fields as a TOML fault list; replaces the plan
//! - `POST /_chaos/reset`: zero stats and attempt counters
//! - `GET /_chaos/health`

mod answer;
mod chat;
mod control;
mod dialect;
mod embeddings;
mod gemini_embeddings;
mod generate;
mod limits;
mod reply;
mod scenario;
mod server;
mod shared;
mod stats;
mod upstream;

pub use scenario::{
    Fault, FaultPlan, FaultRule, Kind, RetryAfterStyle, Scenario, ScenarioError, Trigger,
    UpstreamSpec, FAULT_KINDS,
};
pub use server::{ChaosHandle, ChaosServer};
pub use shared::ChaosError;
pub use stats::{AttemptRecord, UpstreamStats, LOG_CAPACITY};
