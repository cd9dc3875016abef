//! The Keel pipeline as a library. `keel serve`, `keel demo`, `keel batch`
//! and Rust users all call the same two functions: [`Engine::chat`] and its
//! streaming twin [`Engine::chat_stream`]. The HTTP server only translates
//! HTTP to engine calls and back.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use keel_engine::{config::Config, ChatCall, Engine};
//! let config = Config::load(std::path::Path::new("keel.toml"))?;
//! let engine = Engine::new(config)?;
//! let request = serde_json::from_str(r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#)?;
//! let outcome = engine.chat(ChatCall::openai(request)).await;
//! # let _ = outcome; Ok(()) }
//! ```

// EngineError carries the attempt log by design; it is returned once per request.
#![allow(clippy::result_large_err)]

mod admit;
mod assemble;
mod attempt;
mod bedrock;
mod cache;
pub mod call;
mod chain;
mod conclude;
pub mod config;
pub mod content;
mod cost;
mod decide;
mod embed;
mod gemini;
mod keypool;
mod metrics;
mod observe;
mod outcome;
mod plain;
mod plan;
mod pump;
pub mod reload;
mod requirements;
mod responses;
mod routing;
mod shared;
mod slowstart;
mod status;
mod stream;
mod tenants;
mod timeline;
mod traceparent;
mod traces;
mod transport;
mod upstream;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use keel_policy::{
    AdaptiveBackoff, AdaptiveConfig, BreakerState, Bulkhead, CircuitBreaker, FailureClass,
    RateLimiter, RetryBudget,
};
use rand::rngs::StdRng;
use rand::SeedableRng;
use serde::Serialize;
use tracing::info;

pub use call::{
    AttemptRecord, CacheControl, CacheStatus, CallOptions, ChatCall, ChatOutcome, ClientApi,
    EmbeddingsCall, EmbeddingsOutcome, EngineError, ErrorKind, RawAnswer, RequestReport,
    StreamChunk, StreamItem, StreamItems, StreamOutcome, Tier, TokenCount,
};
/// The former name of [`RequestReport`].
#[deprecated(note = "renamed `RequestReport`")]
pub type Meta = RequestReport;
use call::EmbeddingsPart;
use config::{Config, Deployment};
pub use keel_store::{Month, SpendReport, Store, StoreStats};
pub use metrics::{ShedReason, METRICS_CONTENT_TYPE};
use outcome::{Mode, Success};
pub use reload::{LiveEngine, ReloadError, Reloaded};
pub use responses::ResponsesNeeds;
pub use status::{
    ConfigStatus, DeploymentStatus, HeadroomStatus, RouteStatus, StatusReport, Totals,
};

/// The current instant on tokio's clock (so paused-time tests drive it).
pub(crate) fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

/// The future `make` builds, in a box it is built in.
///
/// `Box::pin(fut)` builds the future on the stack and then copies all of it
/// into the heap: several KB for a request's future, since a future's size
/// is that of its largest state, not of what it starts with. Allocating
/// first lets the compiler write the future straight into the box, so only
/// its arguments are written.
#[inline(always)]
pub fn boxed_in_place<F: std::future::Future>(make: impl FnOnce() -> F) -> std::pin::Pin<Box<F>> {
    Box::into_pin(Box::write(Box::new_uninit(), make()))
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A poisoned lock only means another request panicked mid-update; the
    // policy state is still usable, so keep serving.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters of the whole engine.
#[derive(Default)]
pub(crate) struct Counters {
    requests: AtomicU64,
    successes: AtomicU64,
    failures: AtomicU64,
    retries: AtomicU64,
    fallbacks: AtomicU64,
    static_fallbacks: AtomicU64,
    budget_exhausted: AtomicU64,
    stream_breaks: AtomicU64,
    stream_resumes: AtomicU64,
}

#[derive(Default)]
pub(crate) struct DeploymentCounters {
    attempts: AtomicU64,
    successes: AtomicU64,
    failures: [AtomicU64; 13],
    limiter_wait_ms: AtomicU64,
}

/// A deployment with its live policy state. The state is behind `Arc`s so
/// that a config reload hands it to the next engine when the deployment's
/// identity is unchanged (see [`reload`]).
pub(crate) struct DeploymentRuntime {
    pub spec: Deployment,
    breaker: Arc<Mutex<CircuitBreaker>>,
    limiter: Arc<Mutex<RateLimiter>>,
    bulkhead: Arc<Bulkhead>,
    adaptive: Arc<Mutex<AdaptiveBackoff>>,
    counters: Arc<DeploymentCounters>,
    /// Where breaker transitions are published for the other replicas.
    store: keel_store::Store,
    metrics: Arc<metrics::Metrics>,
    /// Latency and outcomes as routing and hedging see them.
    signals: Arc<routing::DeploymentSignals>,
    /// Cooling state of the deployment's API keys.
    keys: Arc<keypool::KeyPool>,
    /// When the breaker last closed again (slow start).
    recovery: Arc<slowstart::Recovery>,
}

impl DeploymentRuntime {
    fn lock_breaker(&self) -> MutexGuard<'_, CircuitBreaker> {
        lock(&self.breaker)
    }
    fn lock_limiter(&self) -> MutexGuard<'_, RateLimiter> {
        lock(&self.limiter)
    }
    fn lock_adaptive(&self) -> MutexGuard<'_, AdaptiveBackoff> {
        lock(&self.adaptive)
    }

    /// Whether a request could start here now (breaker not open).
    fn available(&self, t: Instant) -> bool {
        !matches!(self.lock_breaker().state(t), BreakerState::Open { .. })
    }

    /// Feeds an attempt's outcome to the breaker, adaptive backoff and counters;
    /// `timing` says what `latency` measured (see [`routing::Timing`]).
    fn record_outcome(
        &self,
        t: Instant,
        failure: Option<FailureClass>,
        latency: Duration,
        timing: routing::Timing,
    ) -> Option<keel_policy::Transition> {
        let transition = self.lock_breaker().on_outcome(t, failure, latency);
        if let Some(tr) = &transition {
            if tr.to == keel_policy::BreakerStateKind::Closed {
                self.recovery.mark(t);
            }
            let open_for = shared::local_open_for(self, t);
            shared::publish_transition(&self.store, self, tr, open_for);
            self.metrics.breaker_transition(self.spec.index, tr);
            info!(
                deployment = %self.spec.name,
                from = tr.from.as_str(),
                to = tr.to.as_str(),
                failure = failure.map_or("ok", |c| c.as_str()),
                "breaker transition"
            );
        }
        let health_failure = failure.is_some_and(|c| c.counts_for_health());
        self.lock_adaptive().record(t, health_failure);
        self.signals.observe(t, !health_failure, latency, timing);
        match failure {
            None => {
                self.counters.successes.fetch_add(1, Ordering::Relaxed);
            }
            Some(c) => {
                let i = FailureClass::ALL.iter().position(|x| *x == c).unwrap_or(0);
                self.counters.failures[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        transition
    }
}

/// Shared engine state.
pub(crate) struct EngineState {
    config: Config,
    /// Shared state: the response cache, idempotency records, spend per
    /// tenant and deployment, and (with Redis) limits and breakers shared
    /// by replicas.
    store: keel_store::Store,
    deployments: Vec<DeploymentRuntime>,
    client: transport::HttpClient,
    budget: Arc<Mutex<RetryBudget>>,
    rng: Mutex<StdRng>,
    counters: Arc<Counters>,
    metrics: Arc<metrics::Metrics>,
    /// `[[tenants]]` with their limiters.
    tenants: tenants::Tenants,
    /// When this config was loaded (Unix seconds).
    loaded_at: u64,
    /// Request headers that `rules` routes match on (lowercase).
    rule_headers: Vec<String>,
    /// OpenTelemetry traces (`None`: `[telemetry]` off).
    tracer: Option<Arc<traces::Tracer>>,
}

impl EngineState {
    fn lock_budget(&self) -> MutexGuard<'_, RetryBudget> {
        lock(&self.budget)
    }
    fn lock_rng(&self) -> MutexGuard<'_, StdRng> {
        lock(&self.rng)
    }
}

/// Errors building an engine.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A policy rejected its parameters.
    #[error("deployment {deployment}: {source}")]
    Policy {
        /// Deployment name.
        deployment: String,
        /// The policy error.
        source: keel_policy::PolicyError,
    },
    /// The HTTP client could not be built.
    #[error("http client: {0}")]
    Client(String),
    /// The shared-state store could not be opened.
    #[error("{0}")]
    Store(keel_store::StoreError),
}

/// The resilience pipeline. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<EngineState>,
}

impl Engine {
    /// Builds an engine from a validated config (seeded from the OS).
    pub fn new(config: Config) -> Result<Engine, BuildError> {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x6b65_656c);
        Engine::with_seed(config, seed)
    }

    /// Builds an engine whose jitter comes from `seed` (deterministic tests).
    pub fn with_seed(config: Config, seed: u64) -> Result<Engine, BuildError> {
        let store = keel_store::Store::start(&config.store).map_err(BuildError::Store)?;
        Engine::with_store(config, seed, store)
    }

    /// Builds an engine on an opened store (see [`Engine::connect`]).
    pub fn with_store(
        config: Config,
        seed: u64,
        store: keel_store::Store,
    ) -> Result<Engine, BuildError> {
        let client = transport::HttpClient::new().map_err(BuildError::Client)?;
        let metrics = Arc::new(metrics::Metrics::new(&config));
        build(config, seed, store, client, metrics, None)
    }

    /// The config the engine runs.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The request headers that `rules` routes match on (lowercase; usually none).
    pub fn rule_headers(&self) -> &[String] {
        &self.inner.rule_headers
    }

    /// Whether `[[tenants]]` are configured (then every client must authenticate).
    pub fn has_tenants(&self) -> bool {
        !self.inner.tenants.is_empty()
    }

    /// The tenant whose token this is (compared in constant time).
    pub fn authenticate(&self, token: &str) -> Option<String> {
        self.inner.tenants.authenticate(token).map(str::to_string)
    }

    /// The routes `tenant` may call (`None`: every route).
    pub fn tenant_routes(&self, tenant: &str) -> Option<&[String]> {
        self.inner.tenants.routes_of(tenant)
    }

    /// Spend of the current month per tenant and per deployment: the
    /// fleet's with `[store] redis` (see [`Store::spend_report`]).
    pub async fn spend(&self) -> SpendReport {
        self.inner.store.spend_report(Month::now()).await
    }

    fn route_for(&self, call: &ChatCall) -> Result<&config::Route, EngineError> {
        let route = self.route_named(&call.request().model, &call.options)?;
        // A chat request (or a token count) on an embeddings route.
        if let Some(space) = &route.embedding_space {
            return Err(EngineError::new(
                400,
                ErrorKind::InvalidRequest,
                format!(
                    "the model `{}` is an embeddings route (embedding space {space:?}); send it to POST /v1/embeddings",
                    route.name
                ),
                RequestReport::new(&call.options.request_id, &route.name),
            ));
        }
        Ok(route)
    }

    fn route_named(
        &self,
        model: &str,
        options: &CallOptions,
    ) -> Result<&config::Route, EngineError> {
        self.inner.config.routes.get(model).ok_or_else(|| {
            let known: Vec<&str> = self
                .inner
                .config
                .routes
                .keys()
                .map(String::as_str)
                .collect();
            let mut e = EngineError::new(
                404,
                ErrorKind::UnknownRoute,
                format!(
                    "The model `{model}` does not exist on this gateway; configured routes: {}",
                    known.join(", ")
                ),
                RequestReport::new(&options.request_id, model),
            );
            e.code = Some("model_not_found".into());
            e
        })
    }

    /// Answers an embeddings request through the pipeline: the same stages
    /// as a chat request (limits on its input tokens), split into parts
    /// when it is longer than a deployment takes, and fallbacks only inside
    /// the route's embedding space.
    pub async fn embeddings(&self, call: EmbeddingsCall) -> Result<EmbeddingsOutcome, EngineError> {
        let started = now();
        let model = call.request.model.clone();
        let tenant = call.options.tenant.clone();
        let result = async {
            let route = self.route_named(&model, &call.options)?;
            let mut meta = RequestReport::new(&call.options.request_id, &route.name);
            if route.embedding_space.is_none() {
                return Err(EngineError::new(
                    400,
                    ErrorKind::InvalidRequest,
                    format!(
                        "the model `{model}` is a chat route: no deployment of its chain declares an embedding_space, so it serves no embeddings"
                    ),
                    meta,
                ));
            }
            // The tenant's checks see the whole request (all its inputs).
            let whole = EmbeddingsPart {
                tokens: call
                    .request
                    .inputs
                    .iter()
                    .map(keel_wire::embeddings::input_tokens)
                    .fold(0u32, u32::saturating_add),
                largest: 0,
                range: 0..call.request.inputs.len(),
                request: std::sync::Arc::new(call.request.clone()),
            };
            let probe = ChatCall::embeddings_part(&model, whole, call.options.clone())
                .map_err(|e| EngineError::new(500, ErrorKind::Upstream, e.to_string(), meta.clone()))?;
            let _running = self.inner.tenants.slot(&self.inner, &probe, &meta)?;
            self.inner.tenants.admit(&self.inner, &probe, route, &meta).await?;
            let body = embed::run(&self.inner, call.request, &call.options, route, &mut meta).await?;
            Ok(EmbeddingsOutcome { body, meta })
        }
        .await;
        let labels = (
            model.as_str(),
            tenant.as_deref(),
            ClientApi::Embeddings,
            false,
        );
        self.finish(labels, started, result.as_ref().map(|o| &o.meta));
        result
    }

    /// Counts the input tokens of an Anthropic Messages request: asked of
    /// an Anthropic deployment of the route, with the usual retries and
    /// fallbacks; Keel's own estimate (`estimated`) when the route has none.
    pub async fn count_tokens(&self, mut call: ChatCall) -> Result<TokenCount, EngineError> {
        call.work = call::Work::CountTokens;
        let started = now();
        let result = self.count_tokens_on_route(&call).await;
        let labels = (
            call.request().model.as_str(),
            call.options.tenant.as_deref(),
            call.api,
            false,
        );
        self.finish(labels, started, result.as_ref().map(|o| &o.meta));
        result
    }

    async fn count_tokens_on_route(&self, call: &ChatCall) -> Result<TokenCount, EngineError> {
        let route = self.route_for(call)?;
        let mut meta = RequestReport::new(&call.options.request_id, &route.name);
        // The tenant's route list and request limit hold for an estimate too.
        self.inner
            .tenants
            .admit(&self.inner, call, route, &meta)
            .await?;
        let anthropic = route
            .chain
            .iter()
            .any(|&i| self.inner.deployments[i].spec.kind == config::ProviderKind::Anthropic);
        if !anthropic {
            let input_tokens = u64::from(requirements::estimate_prompt_tokens(call.request()));
            return Ok(TokenCount {
                input_tokens,
                estimated: true,
                meta,
            });
        }
        let (success, _) =
            chain::run(&self.inner, call, route, Mode::Plain, None, &mut meta).await?;
        let input_tokens = match success {
            Success::Plain(p) => serde_json::from_slice::<serde_json::Value>(&p.body)
                .ok()
                .and_then(|v| v.get("input_tokens")?.as_u64()),
            _ => None,
        };
        match input_tokens {
            Some(input_tokens) => Ok(TokenCount {
                input_tokens,
                estimated: false,
                meta,
            }),
            None => Err(EngineError::new(
                500,
                ErrorKind::Upstream,
                "internal: a token count without input_tokens",
                meta,
            )),
        }
    }

    fn finish(
        &self,
        (model, tenant, api, stream): (&str, Option<&str>, ClientApi, bool),
        started: Instant,
        r: Result<&RequestReport, &EngineError>,
    ) {
        let elapsed = now().saturating_duration_since(started);
        self.inner
            .metrics
            .request(model, tenant, api, stream, elapsed, r);
        let c = &self.inner.counters;
        c.requests.fetch_add(1, Ordering::Relaxed);
        match r {
            Ok(_) => c.successes.fetch_add(1, Ordering::Relaxed),
            Err(_) => c.failures.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// Answers a chat request through the pipeline.
    pub async fn chat(&self, call: ChatCall) -> Result<ChatOutcome, EngineError> {
        let started = now();
        let trace = self.inner.tracer.as_ref().map(|t| t.begin(&call, started));
        // The request's future is built where it is awaited: one moved into
        // an `.await` is copied whole, on every request.
        let result = match trace.as_deref().map(traces::log_span) {
            None => self.answer(&call, trace).await,
            Some(span) => tracing::Instrument::instrument(self.answer(&call, trace), span).await,
        };
        if let Some(tracer) = &self.inner.tracer {
            traces::end_chat(tracer, &self.inner, &result);
        }
        let labels = (
            call.request().model.as_str(),
            call.options.tenant.as_deref(),
            call.api,
            false,
        );
        self.finish(labels, started, result.as_ref().map(|o| &o.meta));
        result
    }

    /// [`Engine::chat`]'s pipeline; its report holds `trace`.
    async fn answer(
        &self,
        call: &ChatCall,
        mut trace: Option<Box<timeline::RequestTrace>>,
    ) -> Result<ChatOutcome, EngineError> {
        let route = self.route_for(call)?;
        let mut meta = RequestReport::new(&call.options.request_id, &route.name);
        traces::attach(&mut trace, &mut meta);
        let _running = self.inner.tenants.slot(&self.inner, call, &meta)?;
        self.inner
            .tenants
            .admit(&self.inner, call, route, &meta)
            .await?;
        let slot = cache::Slot::of(call, route, &self.inner.config);
        match slot
            .run(&self.inner, call, route, Mode::Full, &mut meta)
            .await?
        {
            (Success::Full(mut answer), _) => {
                // The client's model name, in the provider's bytes too.
                answer.rename(&call.request().model);
                Ok(ChatOutcome::new(answer, meta))
            }
            (Success::Stream(_) | Success::Plain(_), _) => Err(EngineError::new(
                500,
                ErrorKind::Upstream,
                "internal: stream in full mode",
                meta,
            )),
        }
    }

    /// Answers a chat request as a stream. Retries and fallbacks happen before
    /// this returns (before the first byte reaches the client); afterwards a
    /// break is resumed or reported as a [`StreamItem::Error`].
    pub async fn chat_stream(&self, call: ChatCall) -> Result<StreamOutcome, EngineError> {
        let started = now();
        let (model, api) = (call.request().model.clone(), call.api);
        let tenant = call.options.tenant.clone();
        let trace = self.inner.tracer.as_ref().map(|t| t.begin(&call, started));
        // Boxed once: the call moves into the pipeline and on into the
        // pump, and each move of the whole call copies over a kilobyte.
        let call = Box::new(call);
        // Built where it is awaited, as in [`Engine::chat`].
        let result = match trace.as_deref().map(traces::log_span) {
            None => self.open_stream(call, started, trace).await,
            Some(span) => {
                let open = self.open_stream(call, started, trace);
                tracing::Instrument::instrument(open, span).await
            }
        };
        if let Some(tracer) = &self.inner.tracer {
            traces::end_stream(tracer, &self.inner, &result);
        }
        self.finish(
            (&model, tenant.as_deref(), api, true),
            started,
            result.as_ref().map(|o| &o.meta),
        );
        result
    }

    /// [`Engine::chat_stream`]'s pipeline; its report holds `trace`.
    async fn open_stream(
        &self,
        call: Box<ChatCall>,
        started: Instant,
        mut trace: Option<Box<timeline::RequestTrace>>,
    ) -> Result<StreamOutcome, EngineError> {
        let model = call.request().model.clone();
        let route = self.route_for(&call)?;
        let mut meta = RequestReport::new(&call.options.request_id, &route.name);
        traces::attach(&mut trace, &mut meta);
        // Held by the pump until the stream ends.
        let running = self.inner.tenants.slot(&self.inner, &call, &meta)?;
        self.inner
            .tenants
            .admit(&self.inner, &call, route, &meta)
            .await?;
        let queue = call::ItemQueue::default();
        let slot = cache::Slot::of(&call, route, &self.inner.config);
        // JSON asked on a stream: judged whole like a plain answer,
        // then sent as a stream.
        let mode = match route.policy.stream_json == config::StreamJson::Validate
            && (route.json_schema.is_some() || call.request().response_format.is_some())
            && content::JsonMode::of(call.request(), route.json_schema.as_ref())
                .is_ok_and(|m| m.is_on())
        {
            true => {
                let m = &self.inner.metrics;
                m.stream_json_buffered(m.route_label(&model));
                Mode::Full
            }
            false => Mode::Stream,
        };
        let items = match slot.run(&self.inner, &call, route, mode, &mut meta).await? {
            (Success::Stream(s), di) => {
                self.inner.metrics.stream_committed(di);
                let timer = metrics::StreamTimer::new(self.inner.clone(), &model, started);
                // The trace ends with the stream.
                let open = traces::Open::commit(&self.inner, &mut meta);
                // Runs as the reader reads (no task of its own); the
                // timer and the tenant's slot are held until it ends.
                let inner = self.inner.clone();
                let queue_in = queue.clone();
                let driver = boxed_in_place(move || {
                    pump::pump(inner, call, s, di, queue_in, (timer, running), open)
                });
                StreamItems::new(queue, Some(driver))
            }
            (Success::Full(resp), _) => {
                let m = &self.inner.metrics;
                let elapsed = now().saturating_duration_since(started);
                m.observe_duration(m.route_label(&model), true, elapsed);
                // Static tier or cached answer: replayed as a stream.
                cache::replay(resp.get(), &call, &queue);
                drop(running);
                StreamItems::new(queue, None)
            }
            (Success::Plain(_), _) => {
                return Err(EngineError::new(
                    500,
                    ErrorKind::Upstream,
                    "internal: a plain answer to a stream",
                    meta,
                ))
            }
        };
        let items = slot.record(&self.inner, &meta, items);
        Ok(StreamOutcome { meta, items })
    }

    /// Builds an engine and opens its store: with `[store] redis`, connects
    /// first, and fails when Redis is unreachable and `required = true`
    /// (with `required = false` it starts on local state and connects when
    /// Redis appears). `keel serve` starts this way.
    pub async fn connect(config: Config) -> Result<Engine, BuildError> {
        let store = keel_store::Store::connect(&config.store)
            .await
            .map_err(BuildError::Store)?;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x6b65_656c);
        Engine::with_store(config, seed, store)
    }

    /// Whether `[telemetry]` exports traces (the server then reads the
    /// client's `traceparent`).
    pub fn traces_on(&self) -> bool {
        self.inner.tracer.is_some()
    }

    /// Waits until the spans of every request that has ended are exported
    /// (or dropped): before a shutdown, and in tests.
    pub async fn flush_traces(&self) {
        if let Some(t) = &self.inner.tracer {
            t.flush().await;
        }
    }

    /// The shared-state store (the server keeps idempotency records in it).
    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The store's counters: backend, whether Redis is up, errors and
    /// operations answered from local state.
    pub fn store_stats(&self) -> StoreStats {
        self.inner.store.stats()
    }

    /// The status report of `/admin/status`. The recent window is the last
    /// 60 attempts of each deployment.
    pub fn status(&self) -> StatusReport {
        status::report(&self.inner, self.stats())
    }

    /// Counts a request shed by the server (`keel_shed_total{reason}`).
    pub fn record_shed(&self, reason: ShedReason) {
        self.inner.metrics.shed(reason);
    }

    /// Counts an answer from a fallback tier outside the chain (for example
    /// `stale_cache`, or `dead_letter` for `keel batch`), so
    /// `keel_fallbacks_total{tier=...}` and the last-tier alert see it.
    /// `route` is recorded as `unknown` unless it is configured.
    pub fn record_fallback(&self, route: &str, tier: &'static str, depth: usize) {
        let m = &self.inner.metrics;
        m.fallback(m.route_label(route), tier, depth);
    }

    /// The engine's metrics in the Prometheus text exposition format
    /// (OpenMetrics flavour, ending with `# EOF`); serve it with
    /// [`METRICS_CONTENT_TYPE`]. Gauges of live state (breaker, in flight,
    /// retry budget) are read at this moment.
    pub fn render_metrics(&self) -> String {
        metrics::render(&self.inner)
    }

    /// A snapshot of the engine's counters and each deployment's health.
    pub fn stats(&self) -> EngineStats {
        let c = &self.inner.counters;
        let t = now();
        EngineStats {
            requests: c.requests.load(Ordering::Relaxed),
            successes: c.successes.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            fallbacks: c.fallbacks.load(Ordering::Relaxed),
            static_fallbacks: c.static_fallbacks.load(Ordering::Relaxed),
            budget_exhausted: c.budget_exhausted.load(Ordering::Relaxed),
            stream_breaks: c.stream_breaks.load(Ordering::Relaxed),
            stream_resumes: c.stream_resumes.load(Ordering::Relaxed),
            deployments: self
                .inner
                .deployments
                .iter()
                .map(|d| {
                    let breaker = d.lock_breaker();
                    DeploymentStats {
                        name: d.spec.name.clone(),
                        attempts: d.counters.attempts.load(Ordering::Relaxed),
                        successes: d.counters.successes.load(Ordering::Relaxed),
                        failures: FailureClass::ALL
                            .iter()
                            .enumerate()
                            .filter_map(|(i, cl)| {
                                let n = d.counters.failures[i].load(Ordering::Relaxed);
                                (n > 0).then(|| (cl.as_str().to_string(), n))
                            })
                            .collect(),
                        breaker: match breaker.state(t) {
                            BreakerState::Closed => "closed",
                            BreakerState::Open { .. } => "open",
                            BreakerState::HalfOpen => "half_open",
                        },
                        breaker_trips: breaker.trips(),
                        in_flight: d.bulkhead.in_flight(),
                        limiter_wait_ms: d.counters.limiter_wait_ms.load(Ordering::Relaxed),
                    }
                })
                .collect(),
        }
    }
}

/// Builds an engine's state; with `previous`, the state of every
/// deployment whose identity is unchanged is carried over (see [`reload`]).
fn build(
    config: Config,
    seed: u64,
    store: keel_store::Store,
    client: transport::HttpClient,
    metrics: Arc<metrics::Metrics>,
    previous: Option<&EngineState>,
) -> Result<Engine, BuildError> {
    let mut deployments = Vec::new();
    for d in &config.deployments {
        let err = |source| BuildError::Policy {
            deployment: d.name.clone(),
            source,
        };
        let old = previous.and_then(|p| reload::same_deployment(p, &config, d));
        deployments.push(DeploymentRuntime {
            breaker: match old {
                Some((o, same_breaker)) if same_breaker => o.breaker.clone(),
                _ => Arc::new(Mutex::new(
                    CircuitBreaker::new(config.breaker.clone()).map_err(err)?,
                )),
            },
            limiter: match old {
                Some((o, _)) if o.spec.limits == d.limits => o.limiter.clone(),
                _ => Arc::new(Mutex::new(RateLimiter::new(d.limits.clone()).map_err(err)?)),
            },
            bulkhead: match old {
                Some((o, _)) if o.spec.max_in_flight == d.max_in_flight => o.bulkhead.clone(),
                _ => Arc::new(Bulkhead::new(d.max_in_flight).map_err(err)?),
            },
            adaptive: match old {
                Some((o, _)) => o.adaptive.clone(),
                None => Arc::new(Mutex::new(
                    AdaptiveBackoff::new(AdaptiveConfig::default()).map_err(err)?,
                )),
            },
            counters: old.map_or_else(Default::default, |(o, _)| o.counters.clone()),
            store: store.clone(),
            metrics: metrics.clone(),
            signals: old.map_or_else(Default::default, |(o, _)| o.signals.clone()),
            keys: old.map_or_else(
                || Arc::new(keypool::KeyPool::new(d.api_keys.len())),
                |(o, _)| o.keys.clone(),
            ),
            recovery: old.map_or_else(Default::default, |(o, _)| o.recovery.clone()),
            spec: d.clone(),
        });
    }
    let budget = match previous {
        Some(p) if p.config.retry_budget == config.retry_budget => p.budget.clone(),
        _ => Arc::new(Mutex::new(
            RetryBudget::new(config.retry_budget.clone()).map_err(|source| BuildError::Policy {
                deployment: "(retry_budget)".into(),
                source,
            })?,
        )),
    };
    let tenants =
        tenants::Tenants::new(&config.tenants, previous.map(|p| &p.tenants)).map_err(|source| {
            BuildError::Policy {
                deployment: "(tenants)".into(),
                source,
            }
        })?;
    let mut rule_headers: Vec<String> = config
        .routes
        .values()
        .filter_map(|r| match &r.routing.strategy {
            config::RouteStrategy::Rules(rules) => Some(rules),
            _ => None,
        })
        .flatten()
        .filter_map(|rule| rule.when.header.as_ref().map(|h| h.to_ascii_lowercase()))
        .collect();
    rule_headers.sort();
    rule_headers.dedup();
    // The exporter (its queue and counters) outlives a reload that keeps `[telemetry]`.
    let tracer = match (&config.telemetry, previous.and_then(|p| p.tracer.as_ref())) {
        (None, _) => None,
        (Some(t), Some(old)) if old.config == *t => Some(old.clone()),
        (Some(t), _) => Some(Arc::new(traces::Tracer::new(t.clone(), client.clone()))),
    };
    Ok(Engine {
        inner: Arc::new(EngineState {
            tracer,
            rule_headers,
            tenants,
            config,
            deployments,
            client,
            budget,
            rng: Mutex::new(StdRng::seed_from_u64(seed)),
            counters: previous.map_or_else(Default::default, |p| p.counters.clone()),
            store,
            metrics,
            loaded_at: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs()),
        }),
    })
}

/// Engine counters.
#[derive(Clone, Debug, Serialize)]
pub struct EngineStats {
    /// Requests finished.
    pub requests: u64,
    /// Requests answered (chain or static tier).
    pub successes: u64,
    /// Requests that failed.
    pub failures: u64,
    /// Attempts on the same deployment after its first.
    pub retries: u64,
    /// Requests answered by a deployment other than the first that could serve.
    pub fallbacks: u64,
    /// Requests answered by the static tier.
    pub static_fallbacks: u64,
    /// Attempts refused by the retry budget.
    pub budget_exhausted: u64,
    /// Streams that broke after the first byte.
    pub stream_breaks: u64,
    /// Broken streams resumed on another deployment.
    pub stream_resumes: u64,
    /// Per deployment.
    pub deployments: Vec<DeploymentStats>,
}

/// One deployment's counters and state.
#[derive(Clone, Debug, Serialize)]
pub struct DeploymentStats {
    /// Name.
    pub name: String,
    /// Upstream attempts.
    pub attempts: u64,
    /// Successful attempts.
    pub successes: u64,
    /// Failed attempts by class.
    pub failures: Vec<(String, u64)>,
    /// Breaker state.
    pub breaker: &'static str,
    /// Times the breaker opened.
    pub breaker_trips: u64,
    /// In-flight requests.
    pub in_flight: u32,
    /// Total time spent waiting in the limiter.
    pub limiter_wait_ms: u64,
}

/// A chunk carrying `text` as one delta.
pub(crate) fn text_chunk(id: &str, model: &str, text: &str) -> keel_wire::openai::ChatChunk {
    use keel_wire::openai::{ChatChunk, ChunkChoice, Delta};
    ChatChunk {
        id: id.to_string(),
        object: "chat.completion.chunk".into(),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        model: model.to_string(),
        choices: vec![ChunkChoice {
            index: 0,
            delta: Delta {
                content: Some(text.to_string()),
                ..Delta::default()
            },
            finish_reason: None,
            logprobs: None,
            extra: Default::default(),
        }],
        usage: None,
        system_fingerprint: None,
        extra: Default::default(),
    }
}
