//! Prometheus metrics of one engine (docs/design.md §8).
//!
//! Why a registry per engine and not a global one: tests (and embedders)
//! run several engines in one process, and each must count only its own
//! traffic. The families are typed and created up front; per-deployment
//! handles are resolved once at build time so the hot path only touches
//! atomics (no label hashing, no allocation).
//!
//! Cardinality is bounded by the config: routes and deployments come from
//! it (a request for an unknown model is counted as `route="unknown"`),
//! classes are the closed [`FailureClass`] set, and no request id or raw
//! client string ever becomes a label.
//!
//! Metric families (all prefixed `keel_`):
//!
//! | name | type | labels |
//! |---|---|---|
//! | `keel_requests_total` | counter | route, tenant, api, outcome |
//! | `keel_request_duration_seconds` | histogram | route, stream (end to end, retries included) |
//! | `keel_time_to_first_token_seconds` | histogram | route |
//! | `keel_attempts_total` | counter | deployment, class (`ok` for success) |
//! | `keel_attempt_duration_seconds` | histogram | deployment, outcome (`ok`/`error`) |
//! | `keel_retries_total` | counter | class |
//! | `keel_fallbacks_total` | counter | route, tier (`chain`, `static`, ...), depth |
//! | `keel_breaker_state` | gauge | deployment (0 closed, 1 half open, 2 open) |
//! | `keel_breaker_transitions_total` | counter | deployment, from, to |
//! | `keel_breaker_rejections_total` | counter | deployment |
//! | `keel_limiter_wait_seconds` | histogram | deployment |
//! | `keel_limiter_rejections_total` | counter | deployment, cause |
//! | `keel_bulkhead_rejections_total` | counter | deployment |
//! | `keel_in_flight` | gauge | deployment |
//! | `keel_retry_budget_exhausted_total` | counter | |
//! | `keel_retry_budget_available` | gauge | |
//! | `keel_retry_budget_ratio` | gauge | |
//! | `keel_store_redis_up` | gauge | |
//! | `keel_store_redis_errors_total` | counter | |
//! | `keel_store_local_fallbacks_total` | counter | |
//! | `keel_store_redis_down_transitions_total` | counter | |
//! | `keel_tokens_total` | counter | deployment, direction (`in`/`out`) |
//! | `keel_tokens_estimated_total` | counter | deployment, direction: the part of `keel_tokens_total` Keel estimated because the provider reported no usage |
//! | `keel_cost_usd_total` | counter | deployment |
//! | `keel_stream_breaks_total` | counter | deployment, class |
//! | `keel_stream_resumes_total` | counter | route |
//! | `keel_answer_resumes_total` | counter | route: plain answers asked as a stream, cut mid-way and continued from their text |
//! | `keel_stream_rejections_total` | counter | deployment, class: streams rejected before their commit |
//! | `keel_stream_commits_total` | counter | deployment: streams committed to the client |
//! | `keel_stream_json_buffered_total` | counter | route: JSON streams asked whole, validated and sent as a stream |
//! | `keel_upstream_streamed_answers_total` | counter | deployment: plain answers assembled from an upstream stream |
//! | `keel_first_token_deadline_hits_total` | counter | deployment: attempts given up at the first-token deadline |
//! | `keel_shed_total` | counter | reason (`in_flight`, `connections`, `tenant_concurrency`) |
//! | `keel_config_reloads_total` | counter | result (`ok`, `rejected`) |

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use keel_policy::{BreakerState, FailureClass, Transition};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

use crate::call::{ClientApi, ErrorKind, RequestReport, Tier};
use crate::config::{Config, Deployment};
use crate::{lock, now, EngineState};

type L1 = [(&'static str, String); 1];
type L2 = [(&'static str, String); 2];
type L3 = [(&'static str, String); 3];
type L4 = [(&'static str, String); 4];
type HistFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The tenant label until tenants exist (issue 7).
const DEFAULT_TENANT: &str = "default";
/// The route label of a request for a model that is not configured.
pub(crate) const UNKNOWN_ROUTE: &str = "unknown";
/// How many recent attempts per deployment feed `/admin/status`.
pub(crate) const RECENT: usize = 60;

fn latency_hist() -> Histogram {
    // 5 ms .. ~82 s
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

fn wait_hist() -> Histogram {
    // 1 ms .. ~16 s
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Where a deployment of the next config was in the running one.
pub(crate) type IndexOf<'a> = &'a dyn Fn(&Deployment) -> Option<usize>;

/// One recent attempt, for the status page.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    pub class: Option<FailureClass>,
    pub latency_ms: u64,
}

/// Handles of one deployment, resolved at build time.
struct DeploymentHandles {
    name: String,
    /// Index 0: `ok`; index i+1: `FailureClass::ALL[i]`.
    attempts: Vec<Counter>,
    attempt_ok: Histogram,
    attempt_err: Histogram,
    breaker_state: Gauge,
    breaker_rejections: Counter,
    limiter_wait: Histogram,
    bulkhead_rejections: Counter,
    in_flight: Gauge,
    tokens_in: Counter,
    tokens_out: Counter,
    estimated_in: Counter,
    estimated_out: Counter,
    cost: Counter<f64, AtomicU64>,
    input_price: f64,
    output_price: f64,
    /// Shared with the next engine while the deployment's identity stays.
    recent: Arc<Mutex<VecDeque<Sample>>>,
    /// Series of [`Metrics::per_deployment`] counters, made on first use
    /// (a series looked up by label hashes and allocates, per request).
    once: [OnceLock<Counter>; PER_DEPLOYMENT],
}

/// The per-deployment counters made on first use, by index in
/// [`DeploymentHandles::once`].
const STREAM_COMMITS: usize = 0;
const UPSTREAM_STREAMED: usize = 1;
const FIRST_TOKEN_HITS: usize = 2;
const PER_DEPLOYMENT: usize = 3;

/// Requests and successes of one route (for the status page), and the
/// handles of its most common series, made on first use: looking a series
/// up allocates its label strings and hashes them, on every request.
#[derive(Default)]
pub(crate) struct RouteCounts {
    pub requests: AtomicU64,
    pub successes: AtomicU64,
    /// `keel_requests_total` answered ok, default tenant, by API.
    ok: [OnceLock<Counter>; 4],
    /// `keel_request_duration_seconds`, plain and streamed.
    duration: [OnceLock<Histogram>; 2],
    /// `keel_time_to_first_token_seconds`.
    ttft: OnceLock<Histogram>,
}

/// The registry and its families: made once, then shared by every engine
/// a config reload builds, so counters run on across reloads (a series of
/// a deployment that stays is the same series).
pub(crate) struct Families {
    registry: Registry,
    requests: Family<L4, Counter>,
    request_duration: HistFamily<L2>,
    ttft: HistFamily<L1>,
    attempts: Family<L2, Counter>,
    attempt_duration: HistFamily<L2>,
    retries: Family<L1, Counter>,
    fallbacks: Family<L3, Counter>,
    breaker_state: Family<L1, Gauge>,
    breaker_transitions: Family<L3, Counter>,
    breaker_rejections: Family<L1, Counter>,
    limiter_wait: HistFamily<L1>,
    limiter_rejections: Family<L2, Counter>,
    bulkhead_rejections: Family<L1, Counter>,
    in_flight: Family<L1, Gauge>,
    tokens: Family<L2, Counter>,
    tokens_estimated: Family<L2, Counter>,
    cost: Family<L1, Counter<f64, AtomicU64>>,
    stream_breaks: Family<L2, Counter>,
    stream_resumes: Family<L1, Counter>,
    answer_resumes: Family<L1, Counter>,
    stream_rejections: Family<L2, Counter>,
    stream_commits: Family<L1, Counter>,
    stream_json_buffered: Family<L1, Counter>,
    upstream_streamed: Family<L1, Counter>,
    first_token_hits: Family<L1, Counter>,
    shed: [Counter; 3],
    budget_exhausted: Counter,
    budget_available: Gauge,
    budget_ratio: Gauge<f64, AtomicU64>,
    store: Arc<StoreHandles>,
    /// `keel_config_reloads_total`: `ok`, `rejected`.
    reloads: [Counter; 2],
}

/// The typed families of one engine, with the handles of its config's
/// deployments and routes resolved.
pub(crate) struct Metrics {
    families: Arc<Families>,
    requests: Family<L4, Counter>,
    request_duration: HistFamily<L2>,
    ttft: HistFamily<L1>,
    retries: Family<L1, Counter>,
    fallbacks: Family<L3, Counter>,
    breaker_transitions: Family<L3, Counter>,
    limiter_rejections: Family<L2, Counter>,
    stream_breaks: Family<L2, Counter>,
    stream_resumes: Family<L1, Counter>,
    answer_resumes: Family<L1, Counter>,
    stream_rejections: Family<L2, Counter>,
    stream_commits: Family<L1, Counter>,
    stream_json_buffered: Family<L1, Counter>,
    upstream_streamed: Family<L1, Counter>,
    first_token_hits: Family<L1, Counter>,
    /// Indexed by [`ShedReason::index`].
    shed: [Counter; 3],
    budget_exhausted: Counter,
    budget_available: Gauge,
    store: Arc<StoreHandles>,
    deployments: Vec<DeploymentHandles>,
    pub(crate) routes: BTreeMap<String, RouteCounts>,
}

impl Families {
    /// Registers every family.
    fn new() -> Families {
        let mut registry = Registry::default();
        let requests = Family::<L4, Counter>::default();
        let request_duration = HistFamily::<L2>::new_with_constructor(latency_hist);
        let ttft = HistFamily::<L1>::new_with_constructor(latency_hist);
        let attempts = Family::<L2, Counter>::default();
        let attempt_duration = HistFamily::<L2>::new_with_constructor(latency_hist);
        let retries = Family::<L1, Counter>::default();
        let fallbacks = Family::<L3, Counter>::default();
        let breaker_state = Family::<L1, Gauge>::default();
        let breaker_transitions = Family::<L3, Counter>::default();
        let breaker_rejections = Family::<L1, Counter>::default();
        let limiter_wait = HistFamily::<L1>::new_with_constructor(wait_hist);
        let limiter_rejections = Family::<L2, Counter>::default();
        let bulkhead_rejections = Family::<L1, Counter>::default();
        let in_flight = Family::<L1, Gauge>::default();
        let tokens = Family::<L2, Counter>::default();
        let tokens_estimated = Family::<L2, Counter>::default();
        let cost = Family::<L1, Counter<f64, AtomicU64>>::default();
        let stream_breaks = Family::<L2, Counter>::default();
        let stream_resumes = Family::<L1, Counter>::default();
        let answer_resumes = Family::<L1, Counter>::default();
        let stream_rejections = Family::<L2, Counter>::default();
        let stream_commits = Family::<L1, Counter>::default();
        let stream_json_buffered = Family::<L1, Counter>::default();
        let upstream_streamed = Family::<L1, Counter>::default();
        let first_token_hits = Family::<L1, Counter>::default();
        let shed_family = Family::<L1, Counter>::default();
        let budget_exhausted = Counter::default();
        let budget_available = Gauge::default();
        let budget_ratio = Gauge::<f64, AtomicU64>::default();

        let r = &mut registry;
        r.register(
            "keel_requests",
            "Requests finished, by route, tenant, client API and outcome (ok, static, or the error kind)",
            requests.clone(),
        );
        r.register(
            "keel_request_duration_seconds",
            "End-to-end request latency, retries and fallbacks included (streams: until the last byte)",
            request_duration.clone(),
        );
        r.register(
            "keel_time_to_first_token_seconds",
            "Streams: time until the first token reached the client, retries included",
            ttft.clone(),
        );
        r.register(
            "keel_attempts",
            "Upstream attempts by deployment and class (ok for a success)",
            attempts.clone(),
        );
        r.register(
            "keel_attempt_duration_seconds",
            "Latency of one upstream attempt (streams: to the first token)",
            attempt_duration.clone(),
        );
        r.register(
            "keel_retries",
            "Retries on the same deployment, by the class of the failure that caused them",
            retries.clone(),
        );
        r.register(
            "keel_fallbacks",
            "Fallback activations by route, tier (chain, static, ...) and depth",
            fallbacks.clone(),
        );
        r.register(
            "keel_breaker_state",
            "Circuit breaker state per deployment: 0 closed, 1 half open, 2 open",
            breaker_state.clone(),
        );
        r.register(
            "keel_breaker_transitions",
            "Circuit breaker state changes",
            breaker_transitions.clone(),
        );
        r.register(
            "keel_breaker_rejections",
            "Attempts skipped because the deployment's breaker was open",
            breaker_rejections.clone(),
        );
        r.register(
            "keel_limiter_wait_seconds",
            "Time waited in a deployment's rate limiter before an attempt",
            limiter_wait.clone(),
        );
        r.register(
            "keel_limiter_rejections",
            "Attempts refused by a deployment's rate limiter, by cause",
            limiter_rejections.clone(),
        );
        r.register(
            "keel_bulkhead_rejections",
            "Attempts refused because the deployment's bulkhead was full",
            bulkhead_rejections.clone(),
        );
        r.register(
            "keel_in_flight",
            "Upstream attempts in flight per deployment",
            in_flight.clone(),
        );
        r.register(
            "keel_retry_budget_exhausted",
            "Retries refused by the retry budget",
            budget_exhausted.clone(),
        );
        r.register(
            "keel_retry_budget_available",
            "Retries the budget still allows in its window",
            budget_available.clone(),
        );
        let store = StoreHandles::default();
        r.register(
            "keel_store_redis_up",
            "1 when Redis is configured and answering, else 0",
            store.up.clone(),
        );
        r.register(
            "keel_store_redis_errors",
            "Redis operations that failed or timed out",
            store.errors.clone(),
        );
        r.register(
            "keel_store_local_fallbacks",
            "Shared-state operations answered from local state because Redis was down",
            store.fallbacks.clone(),
        );
        r.register(
            "keel_store_redis_down_transitions",
            "Times Redis went from answering to not answering",
            store.down.clone(),
        );
        r.register(
            "keel_retry_budget_ratio",
            "Configured retry budget: retries allowed per request",
            budget_ratio.clone(),
        );
        r.register(
            "keel_tokens",
            "Tokens by deployment and direction (in: prompt, out: completion)",
            tokens.clone(),
        );
        r.register(
            "keel_tokens_estimated",
            "Tokens Keel estimated itself (the provider reported no usage), by deployment and direction; included in keel_tokens_total",
            tokens_estimated.clone(),
        );
        r.register(
            "keel_cost_usd",
            "Cost in USD from the deployment prices (per million tokens)",
            cost.clone(),
        );
        r.register(
            "keel_stream_breaks",
            "Streams that broke after the first byte, by deployment and class",
            stream_breaks.clone(),
        );
        r.register(
            "keel_stream_resumes",
            "Broken streams resumed on another deployment",
            stream_resumes.clone(),
        );
        r.register(
            "keel_answer_resumes",
            "Plain answers asked upstream as a stream (stream_upstream) that broke after their first token and were continued from their text, by route",
            answer_resumes.clone(),
        );
        r.register(
            "keel_stream_rejections",
            "Streams rejected in their commit window (before the client saw a byte), by deployment and class",
            stream_rejections.clone(),
        );
        r.register(
            "keel_stream_commits",
            "Streams committed to the client (judged good in their commit window, or committed at their first token with the window off), by deployment",
            stream_commits.clone(),
        );
        r.register(
            "keel_stream_json_buffered",
            "Streamed requests that asked for JSON, asked whole upstream, validated and sent as a stream (stream_json = \"validate\"), by route",
            stream_json_buffered.clone(),
        );
        r.register(
            "keel_upstream_streamed_answers",
            "Plain answers asked upstream as a stream and assembled (stream_upstream), by deployment",
            upstream_streamed.clone(),
        );
        r.register(
            "keel_first_token_deadline_hits",
            "Attempts given up at the first-token deadline (streams, and plain answers asked as streams), by deployment",
            first_token_hits.clone(),
        );
        r.register(
            "keel_shed",
            "Requests answered at once with 503/429 and Retry-After instead of being queued, by reason: in_flight ([server] max_in_flight), connections ([server] max_connections), tenant_concurrency (a tenant's max_concurrency)",
            shed_family.clone(),
        );
        // Created up front so every reason is exported from the start (at 0).
        let shed = ShedReason::ALL.map(|r| {
            shed_family
                .get_or_create(&[("reason", r.as_str().to_string())])
                .clone()
        });

        let reloads_family = Family::<L1, Counter>::default();
        r.register(
            "keel_config_reloads",
            "Config reloads (SIGHUP, POST /admin/reload) by result: ok, or rejected (the file failed validation; the running config stays)",
            reloads_family.clone(),
        );
        let reloads = ["ok", "rejected"].map(|r| {
            reloads_family
                .get_or_create(&[("result", r.to_string())])
                .clone()
        });
        Families {
            registry,
            requests,
            request_duration,
            ttft,
            attempts,
            attempt_duration,
            retries,
            fallbacks,
            breaker_state,
            breaker_transitions,
            breaker_rejections,
            limiter_wait,
            limiter_rejections,
            bulkhead_rejections,
            in_flight,
            tokens,
            tokens_estimated,
            cost,
            stream_breaks,
            stream_resumes,
            answer_resumes,
            stream_rejections,
            stream_commits,
            stream_json_buffered,
            upstream_streamed,
            first_token_hits,
            shed,
            budget_exhausted,
            budget_available,
            budget_ratio,
            store: Arc::new(store),
            reloads,
        }
    }
}

impl Metrics {
    /// A fresh registry, with the handles of `config` resolved.
    pub(crate) fn new(config: &Config) -> Metrics {
        Metrics::with_families(config, Arc::new(Families::new()), None)
    }

    /// The handles of `config` in `families` (those of a running engine
    /// when a reload builds the next one). With `previous`, a deployment
    /// that `index_of` finds in it keeps its recent attempts.
    pub(crate) fn with_families(
        config: &Config,
        families: Arc<Families>,
        previous: Option<(&Metrics, IndexOf<'_>)>,
    ) -> Metrics {
        let f = &*families;
        f.budget_ratio.set(config.retry_budget.ratio);
        let Families {
            attempts,
            attempt_duration,
            breaker_state,
            breaker_rejections,
            limiter_wait,
            bulkhead_rejections,
            in_flight,
            tokens,
            tokens_estimated,
            cost,
            ..
        } = f;
        let deployments = config
            .deployments
            .iter()
            .map(|d| {
                let l1: L1 = [("deployment", d.name.clone())];
                let l2 = |k: &'static str, v: &str| -> L2 {
                    [("deployment", d.name.clone()), (k, v.to_string())]
                };
                let attempts = std::iter::once("ok")
                    .chain(FailureClass::ALL.iter().map(|c| c.as_str()))
                    .map(|c| attempts.get_or_create(&l2("class", c)).clone())
                    .collect();
                // Separate statements: a family's read guard lives to the end
                // of the statement, and a second get_or_create on the same
                // family inside it deadlocks on the write lock.
                let attempt_ok = attempt_duration.get_or_create(&l2("outcome", "ok")).clone();
                let attempt_err = attempt_duration
                    .get_or_create(&l2("outcome", "error"))
                    .clone();
                let tokens_in = tokens.get_or_create(&l2("direction", "in")).clone();
                let tokens_out = tokens.get_or_create(&l2("direction", "out")).clone();
                let estimated_in = tokens_estimated
                    .get_or_create(&l2("direction", "in"))
                    .clone();
                let estimated_out = tokens_estimated
                    .get_or_create(&l2("direction", "out"))
                    .clone();
                DeploymentHandles {
                    name: d.name.clone(),
                    attempts,
                    attempt_ok,
                    attempt_err,
                    breaker_state: breaker_state.get_or_create(&l1).clone(),
                    breaker_rejections: breaker_rejections.get_or_create(&l1).clone(),
                    limiter_wait: limiter_wait.get_or_create(&l1).clone(),
                    bulkhead_rejections: bulkhead_rejections.get_or_create(&l1).clone(),
                    in_flight: in_flight.get_or_create(&l1).clone(),
                    tokens_in,
                    tokens_out,
                    estimated_in,
                    estimated_out,
                    cost: cost.get_or_create(&l1).clone(),
                    input_price: d.input_price,
                    output_price: d.output_price,
                    recent: previous
                        .and_then(|(m, index_of)| m.deployments.get(index_of(d)?))
                        .map_or_else(
                            || Arc::new(Mutex::new(VecDeque::with_capacity(RECENT))),
                            |h| h.recent.clone(),
                        ),
                    once: Default::default(),
                }
            })
            .collect();
        let routes = config
            .routes
            .keys()
            .cloned()
            .chain(std::iter::once(UNKNOWN_ROUTE.to_string()))
            .map(|r| (r, RouteCounts::default()))
            .collect();
        Metrics {
            requests: f.requests.clone(),
            request_duration: f.request_duration.clone(),
            ttft: f.ttft.clone(),
            retries: f.retries.clone(),
            fallbacks: f.fallbacks.clone(),
            breaker_transitions: f.breaker_transitions.clone(),
            limiter_rejections: f.limiter_rejections.clone(),
            stream_breaks: f.stream_breaks.clone(),
            stream_resumes: f.stream_resumes.clone(),
            answer_resumes: f.answer_resumes.clone(),
            stream_rejections: f.stream_rejections.clone(),
            stream_commits: f.stream_commits.clone(),
            stream_json_buffered: f.stream_json_buffered.clone(),
            upstream_streamed: f.upstream_streamed.clone(),
            first_token_hits: f.first_token_hits.clone(),
            shed: f.shed.clone(),
            budget_exhausted: f.budget_exhausted.clone(),
            budget_available: f.budget_available.clone(),
            store: f.store.clone(),
            deployments,
            routes,
            families,
        }
    }

    /// The families, for the next engine a reload builds.
    pub(crate) fn families(&self) -> Arc<Families> {
        self.families.clone()
    }

    /// A config reload finished: accepted, or rejected.
    pub(crate) fn config_reload(&self, ok: bool) {
        self.families.reloads[usize::from(!ok)].inc();
    }

    /// A reload removed deployment `name`: its gauges stop being exported
    /// (a breaker-open alert must not fire for a deployment that is gone).
    /// Its counters stay, as counters do.
    pub(crate) fn forget_deployment(&self, name: &str) {
        let l1: L1 = [("deployment", name.to_string())];
        self.families.breaker_state.remove(&l1);
        self.families.in_flight.remove(&l1);
    }

    /// Reloads so far: (ok, rejected).
    pub(crate) fn config_reloads(&self) -> (u64, u64) {
        let [ok, rejected] = &self.families.reloads;
        (ok.get(), rejected.get())
    }

    fn dep(&self, i: usize) -> Option<&DeploymentHandles> {
        self.deployments.get(i)
    }

    /// An upstream attempt finished (`class` is `None` for a success).
    pub(crate) fn attempt(&self, dep: usize, class: Option<FailureClass>, latency: Duration) {
        let Some(d) = self.dep(dep) else { return };
        let i = match class {
            None => 0,
            Some(c) => FailureClass::ALL
                .iter()
                .position(|x| *x == c)
                .map_or(0, |p| p + 1),
        };
        if let Some(c) = d.attempts.get(i) {
            c.inc();
        }
        let secs = latency.as_secs_f64();
        match class {
            None => d.attempt_ok.observe(secs),
            Some(_) => d.attempt_err.observe(secs),
        }
        let mut recent = lock(&d.recent);
        if recent.len() == RECENT {
            recent.pop_front();
        }
        recent.push_back(Sample {
            class,
            latency_ms: latency.as_millis() as u64,
        });
    }

    /// A retry on the same deployment after a failure of `class`.
    pub(crate) fn retry(&self, class: FailureClass) {
        self.retries
            .get_or_create(&[("class", class.as_str().to_string())])
            .inc();
    }

    /// The answer came from a fallback tier (`depth` > 0 for `chain`).
    pub(crate) fn fallback(&self, route: &str, tier: &'static str, depth: usize) {
        self.fallbacks
            .get_or_create(&[
                ("route", route.to_string()),
                ("tier", tier.to_string()),
                ("depth", depth.to_string()),
            ])
            .inc();
    }

    /// A breaker changed state.
    pub(crate) fn breaker_transition(&self, dep: usize, tr: &Transition) {
        let Some(d) = self.dep(dep) else { return };
        d.breaker_state.set(state_value(tr.to.as_str()));
        self.breaker_transitions
            .get_or_create(&[
                ("deployment", d.name.clone()),
                ("from", tr.from.as_str().to_string()),
                ("to", tr.to.as_str().to_string()),
            ])
            .inc();
    }

    /// An attempt was skipped because the breaker is open.
    pub(crate) fn breaker_rejected(&self, dep: usize) {
        if let Some(d) = self.dep(dep) {
            d.breaker_rejections.inc();
        }
    }

    /// Time waited in the rate limiter (zero included).
    pub(crate) fn limiter_wait(&self, dep: usize, wait: Duration) {
        if let Some(d) = self.dep(dep) {
            d.limiter_wait.observe(wait.as_secs_f64());
        }
    }

    /// The rate limiter refused an attempt.
    pub(crate) fn limiter_rejected(&self, dep: usize, cause: &str) {
        let Some(d) = self.dep(dep) else { return };
        self.limiter_rejections
            .get_or_create(&[("deployment", d.name.clone()), ("cause", cause.to_string())])
            .inc();
    }

    /// The bulkhead refused an attempt.
    pub(crate) fn bulkhead_rejected(&self, dep: usize) {
        if let Some(d) = self.dep(dep) {
            d.bulkhead_rejections.inc();
        }
    }

    /// The retry budget refused a retry.
    pub(crate) fn budget_exhausted(&self) {
        self.budget_exhausted.inc();
    }

    /// Tokens used by an answer of `dep`, and their cost.
    pub(crate) fn usage(&self, dep: usize, prompt: u32, completion: u32) {
        let Some(d) = self.dep(dep) else { return };
        d.tokens_in.inc_by(u64::from(prompt));
        d.tokens_out.inc_by(u64::from(completion));
        let usd =
            (f64::from(prompt) * d.input_price + f64::from(completion) * d.output_price) / 1e6;
        if usd > 0.0 {
            d.cost.inc_by(usd);
        }
    }

    /// Tokens of `dep` that Keel estimated (already counted by [`usage`](Self::usage)).
    pub(crate) fn usage_estimated(&self, dep: usize, prompt: u32, completion: u32) {
        let Some(d) = self.dep(dep) else { return };
        d.estimated_in.inc_by(u64::from(prompt));
        d.estimated_out.inc_by(u64::from(completion));
    }

    /// A stream of `dep` broke after its first byte.
    pub(crate) fn stream_break(&self, dep: usize, class: FailureClass) {
        let Some(d) = self.dep(dep) else { return };
        self.stream_breaks
            .get_or_create(&[
                ("deployment", d.name.clone()),
                ("class", class.as_str().to_string()),
            ])
            .inc();
    }

    /// A stream was rejected in its commit window.
    pub(crate) fn stream_rejected(&self, dep: usize, class: FailureClass) {
        let Some(d) = self.dep(dep) else { return };
        self.stream_rejections
            .get_or_create(&[
                ("deployment", d.name.clone()),
                ("class", class.as_str().to_string()),
            ])
            .inc();
    }

    /// Counts one on `family` for deployment `dep` (series `which` of its
    /// handles, looked up once).
    fn per_deployment(&self, family: &Family<L1, Counter>, which: usize, dep: usize) {
        let Some(d) = self.dep(dep) else { return };
        d.once[which]
            .get_or_init(|| {
                family
                    .get_or_create(&[("deployment", d.name.clone())])
                    .clone()
            })
            .inc();
    }

    /// A stream was committed to the client.
    pub(crate) fn stream_committed(&self, dep: usize) {
        self.per_deployment(&self.stream_commits, STREAM_COMMITS, dep);
    }

    /// A plain answer was assembled from an upstream stream.
    pub(crate) fn upstream_streamed(&self, dep: usize) {
        self.per_deployment(&self.upstream_streamed, UPSTREAM_STREAMED, dep);
    }

    /// An attempt was given up at its first-token deadline.
    pub(crate) fn first_token_deadline_hit(&self, dep: usize) {
        self.per_deployment(&self.first_token_hits, FIRST_TOKEN_HITS, dep);
    }

    /// A streamed JSON request was asked whole to be validated.
    pub(crate) fn stream_json_buffered(&self, route: &str) {
        self.stream_json_buffered
            .get_or_create(&[("route", route.to_string())])
            .inc();
    }

    /// A broken stream went on on another deployment.
    pub(crate) fn stream_resumed(&self, route: &str) {
        self.stream_resumes
            .get_or_create(&[("route", route.to_string())])
            .inc();
    }

    /// A plain answer cut mid-way is continued from its text.
    pub(crate) fn answer_resumed(&self, route: &str) {
        self.answer_resumes
            .get_or_create(&[("route", route.to_string())])
            .inc();
    }

    /// A request was shed.
    pub(crate) fn shed(&self, reason: ShedReason) {
        if let Some(c) = self.shed.get(reason.index()) {
            c.inc();
        }
    }

    /// Label of a request's route: configured, or `unknown`.
    pub(crate) fn route_label<'a>(&self, model: &'a str) -> &'a str {
        if model != UNKNOWN_ROUTE && self.routes.contains_key(model) {
            model
        } else {
            UNKNOWN_ROUTE
        }
    }

    /// A request finished (for a stream: its first token was sent, or it failed).
    pub(crate) fn request(
        &self,
        model: &str,
        tenant: Option<&str>,
        api: ClientApi,
        stream: bool,
        elapsed: Duration,
        result: Result<&RequestReport, &crate::EngineError>,
    ) {
        let route = self.route_label(model);
        let outcome = match result {
            Ok(m) if m.tier == Tier::Static => "static",
            Ok(_) => "ok",
            Err(e) => kind_str(e.kind),
        };
        let labels = || {
            [
                ("route", route.to_string()),
                // Tenant names come from the config (the server only
                // accepts configured tenants), so the label stays bounded.
                ("tenant", tenant.unwrap_or(DEFAULT_TENANT).to_string()),
                ("api", api_str(api).to_string()),
                ("outcome", outcome.to_string()),
            ]
        };
        let rc = self.routes.get(route);
        match rc {
            Some(rc) if outcome == "ok" && tenant.is_none() => {
                rc.ok[api as usize]
                    .get_or_init(|| self.requests.get_or_create(&labels()).clone())
                    .inc();
            }
            _ => {
                self.requests.get_or_create(&labels()).inc();
            }
        }
        if let Some(rc) = rc {
            rc.requests.fetch_add(1, Ordering::Relaxed);
            if result.is_ok() {
                rc.successes.fetch_add(1, Ordering::Relaxed);
            }
        }
        if stream && result.is_ok() {
            observe(
                &self.ttft,
                rc.map(|rc| &rc.ttft),
                || [("route", route.to_string())],
                elapsed,
            );
        } else {
            self.observe_duration(route, stream, elapsed);
        }
    }

    /// End-to-end latency (streams report it when they end).
    pub(crate) fn observe_duration(&self, route: &str, stream: bool, elapsed: Duration) {
        observe(
            &self.request_duration,
            self.routes
                .get(route)
                .map(|rc| &rc.duration[usize::from(stream)]),
            || [("route", route.to_string()), ("stream", stream.to_string())],
            elapsed,
        );
    }

    /// Recent attempts of a deployment, oldest first.
    pub(crate) fn recent(&self, dep: usize) -> Vec<Sample> {
        self.dep(dep)
            .map(|d| lock(&d.recent).iter().copied().collect())
            .unwrap_or_default()
    }
}

/// Observes `elapsed` in `family`'s series of `labels`, through the handle
/// cached in `slot` when there is one (a known route): looking a series up
/// allocates its label strings and hashes them.
fn observe<L: Clone + std::hash::Hash + Eq>(
    family: &HistFamily<L>,
    slot: Option<&OnceLock<Histogram>>,
    labels: impl Fn() -> L,
    elapsed: Duration,
) {
    let secs = elapsed.as_secs_f64();
    match slot {
        Some(slot) => slot
            .get_or_init(|| family.get_or_create(&labels()).clone())
            .observe(secs),
        None => family.get_or_create(&labels()).observe(secs),
    }
}

/// Records a stream's end-to-end latency when dropped (the pump ends at
/// several points; this covers all of them).
pub(crate) struct StreamTimer {
    inner: std::sync::Arc<EngineState>,
    route: String,
    started: Instant,
}

impl StreamTimer {
    pub(crate) fn new(inner: std::sync::Arc<EngineState>, model: &str, started: Instant) -> Self {
        let route = inner.metrics.route_label(model).to_string();
        StreamTimer {
            inner,
            route,
            started,
        }
    }
}

impl Drop for StreamTimer {
    fn drop(&mut self) {
        let elapsed = now().saturating_duration_since(self.started);
        self.inner
            .metrics
            .observe_duration(&self.route, true, elapsed);
    }
}

fn state_value(s: &str) -> i64 {
    match s {
        "open" => 2,
        "half_open" => 1,
        _ => 0,
    }
}

pub(crate) fn api_str(api: ClientApi) -> &'static str {
    match api {
        ClientApi::OpenAi => "openai",
        ClientApi::Anthropic => "anthropic",
        ClientApi::Responses => "responses",
        ClientApi::Embeddings => "embeddings",
    }
}

pub(crate) fn kind_str(k: ErrorKind) -> &'static str {
    match k {
        ErrorKind::InvalidRequest => "invalid_request",
        ErrorKind::UnknownRoute => "unknown_route",
        ErrorKind::RateLimited => "rate_limited",
        ErrorKind::Unavailable => "unavailable",
        ErrorKind::Upstream => "upstream",
        ErrorKind::Timeout => "timeout",
    }
}

/// Why a request was shed: refused at once, before any upstream call,
/// with a `Retry-After`, because Keel or the tenant is at a concurrency
/// ceiling (the label of `keel_shed_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedReason {
    /// `[server] max_in_flight` chat requests were already running (503).
    InFlight,
    /// `[server] max_connections` client connections were already open;
    /// the connection got a 503 and was closed.
    Connections,
    /// The tenant had `max_concurrency` requests running (429).
    TenantConcurrency,
}

impl ShedReason {
    /// Every reason, in label order.
    pub const ALL: [ShedReason; 3] = [
        ShedReason::InFlight,
        ShedReason::Connections,
        ShedReason::TenantConcurrency,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ShedReason::InFlight => "in_flight",
            ShedReason::Connections => "connections",
            ShedReason::TenantConcurrency => "tenant_concurrency",
        }
    }

    fn index(self) -> usize {
        match self {
            ShedReason::InFlight => 0,
            ShedReason::Connections => 1,
            ShedReason::TenantConcurrency => 2,
        }
    }
}

/// The engine's metrics in the Prometheus text exposition format
/// (OpenMetrics flavour, ending with `# EOF`); serve it with
/// [`METRICS_CONTENT_TYPE`]. Gauges of live state (breaker, in flight,
/// retry budget) are read at this moment.
pub(crate) fn render(inner: &EngineState) -> String {
    let m = &inner.metrics;
    let t = now();
    for (i, d) in inner.deployments.iter().enumerate() {
        let Some(h) = m.dep(i) else { continue };
        let state = match d.lock_breaker().state(t) {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open { .. } => 2,
        };
        h.breaker_state.set(state);
        h.in_flight.set(i64::from(d.bulkhead.in_flight()));
    }
    m.store.observe(&inner.store.stats());
    let available = inner.lock_budget().available(t);
    m.budget_available
        .set(i64::try_from(available).unwrap_or(i64::MAX));
    let mut out = String::new();
    // Writing to a String cannot fail.
    let _ = encode(&mut out, &m.families.registry);
    if let Some(tracer) = &inner.tracer {
        tracer.annotate(&mut out);
        trace_counters(&mut out, tracer.stats());
    }
    out
}

/// The exporter's counters, before the closing `# EOF`.
fn trace_counters(out: &mut String, s: &crate::traces::ExportStats) {
    use std::fmt::Write as _;
    let eof = out.rfind("# EOF").unwrap_or(out.len());
    let tail = out.split_off(eof);
    for (name, help, n) in [
        (
            "keel_trace_spans_exported",
            "Spans exported to the OTLP collector.",
            &s.exported,
        ),
        (
            "keel_trace_spans_dropped",
            "Spans dropped: the export queue was full or an export failed.",
            &s.dropped,
        ),
        (
            "keel_trace_exports_failed",
            "Exports the collector refused or did not answer in time.",
            &s.failed_exports,
        ),
    ] {
        let _ = write!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name}_total {}\n",
            n.load(Ordering::Relaxed)
        );
    }
    out.push_str(&tail);
}

/// The content type of [`Engine::render_metrics`].
pub const METRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Redis health, read from the store's own counters at scrape time.
#[derive(Default)]
struct StoreHandles {
    up: Gauge,
    errors: Counter,
    fallbacks: Counter,
    down: Counter,
    /// The store's totals already added to the counters.
    seen: [AtomicU64; 3],
}

impl StoreHandles {
    fn observe(&self, s: &keel_store::StoreStats) {
        self.up.set(i64::from(s.redis_up));
        for (i, (counter, total)) in [
            (&self.errors, s.redis_errors),
            (&self.fallbacks, s.local_fallbacks),
            (&self.down, s.redis_down_transitions),
        ]
        .into_iter()
        .enumerate()
        {
            let before = self.seen[i].swap(total, Ordering::Relaxed);
            if total > before {
                counter.inc_by(total - before);
            }
        }
    }
}
