//! The operator's view of an engine (`/admin/status` and the `/admin`
//! page): per deployment health, breaker state, limiter headroom, in
//! flight, the recent error mix and latency samples; per route success
//! rate. A snapshot, read at the moment it is asked for.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;

use keel_policy::BreakerState;
use serde::Serialize;

use crate::{now, DeploymentStats, EngineState, EngineStats};

/// The whole status report.
#[derive(Clone, Debug, Serialize)]
pub struct StatusReport {
    /// The config running now.
    pub config: ConfigStatus,
    /// Engine-wide counters.
    pub totals: Totals,
    /// One entry per deployment, in config order.
    pub deployments: Vec<DeploymentStatus>,
    /// One entry per configured route (plus `unknown` for unknown models).
    pub routes: Vec<RouteStatus>,
}

/// The config an engine runs, and the reloads so far.
#[derive(Clone, Debug, Serialize)]
pub struct ConfigStatus {
    /// The file.
    pub file: String,
    /// SHA-256 of its text (first 16 hex digits; see [`crate::config::Config::hash`]).
    pub hash: String,
    /// When it was loaded (Unix seconds).
    pub loaded_at: u64,
    /// Reloads that replaced the config.
    pub reloads_ok: u64,
    /// Reloads refused (the running config stayed).
    pub reloads_rejected: u64,
}

/// Engine-wide counters (see [`crate::EngineStats`]).
#[derive(Clone, Debug, Serialize)]
pub struct Totals {
    /// Requests finished.
    pub requests: u64,
    /// Requests answered.
    pub successes: u64,
    /// Requests that failed.
    pub failures: u64,
    /// Retries on the same deployment.
    pub retries: u64,
    /// Answers from a deployment other than the first.
    pub fallbacks: u64,
    /// Answers from the static tier.
    pub static_fallbacks: u64,
    /// Retries refused by the retry budget.
    pub budget_exhausted: u64,
    /// Retries the budget still allows now.
    pub retry_budget_available: u64,
    /// Streams broken after the first byte.
    pub stream_breaks: u64,
    /// Broken streams resumed.
    pub stream_resumes: u64,
}

/// Limiter capacity left now, as a share of the burst (1.0 = unlimited or idle).
#[derive(Clone, Copy, Debug, Serialize)]
pub struct HeadroomStatus {
    /// Requests.
    pub requests: f64,
    /// Tokens.
    pub tokens: f64,
}

/// One deployment as an operator sees it.
#[derive(Clone, Debug, Serialize)]
pub struct DeploymentStatus {
    /// Counters since start, breaker state and in flight.
    #[serde(flatten)]
    pub stats: DeploymentStats,
    /// Provider name.
    pub provider: String,
    /// Upstream model.
    pub model: String,
    /// `healthy`, `degraded` (half open or recent success rate below 90%) or `down` (breaker open).
    pub health: &'static str,
    /// Milliseconds until the open breaker lets a probe through.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub breaker_open_for_ms: Option<u64>,
    /// Rate limiter headroom.
    pub limiter_headroom: HeadroomStatus,
    /// Bulkhead size.
    pub max_in_flight: u32,
    /// Classes of the recent attempts (`ok` for successes).
    pub recent_mix: BTreeMap<&'static str, u64>,
    /// Latency of the recent attempts in ms, oldest first.
    pub recent_latency_ms: Vec<u64>,
    /// Class of each of those attempts (`ok` for a success).
    pub recent_classes: Vec<&'static str>,
    /// Share of the recent attempts that succeeded (`null` with none).
    pub recent_success_rate: Option<f64>,
}

/// One route.
#[derive(Clone, Debug, Serialize)]
pub struct RouteStatus {
    /// Route name.
    pub name: String,
    /// Deployment names, in chain order.
    pub chain: Vec<String>,
    /// Requests finished.
    pub requests: u64,
    /// Requests answered.
    pub successes: u64,
    /// `successes / requests` (`null` with no requests).
    pub success_rate: Option<f64>,
}

/// The status report of `/admin/status`. The recent window is the last
/// 60 attempts of each deployment.
pub(crate) fn report(inner: &EngineState, stats: EngineStats) -> StatusReport {
    let t = now();
    let budget_available = inner.lock_budget().available(t);
    let deployments = stats
        .deployments
        .iter()
        .zip(&inner.deployments)
        .enumerate()
        .map(|(i, (s, rt))| {
            let recent = inner.metrics.recent(i);
            let mut mix: BTreeMap<&'static str, u64> = BTreeMap::new();
            for r in &recent {
                *mix.entry(r.class.map_or("ok", |c| c.as_str())).or_insert(0) += 1;
            }
            let ok = mix.get("ok").copied().unwrap_or(0);
            let rate = (!recent.is_empty()).then(|| ok as f64 / recent.len() as f64);
            let state = rt.lock_breaker().state(t);
            let health = match state {
                BreakerState::Open { .. } => "down",
                BreakerState::HalfOpen => "degraded",
                BreakerState::Closed if rate.is_some_and(|r| r < 0.9) => "degraded",
                BreakerState::Closed => "healthy",
            };
            let headroom = rt.lock_limiter().headroom(t);
            DeploymentStatus {
                stats: s.clone(),
                provider: rt.spec.provider.clone(),
                model: rt.spec.model.clone(),
                health,
                breaker_open_for_ms: match state {
                    BreakerState::Open { until } => {
                        Some(until.saturating_duration_since(t).as_millis() as u64)
                    }
                    _ => None,
                },
                limiter_headroom: HeadroomStatus {
                    requests: headroom.requests,
                    tokens: headroom.tokens,
                },
                max_in_flight: rt.spec.max_in_flight,
                recent_mix: mix,
                recent_latency_ms: recent.iter().map(|r| r.latency_ms).collect(),
                recent_classes: recent
                    .iter()
                    .map(|r| r.class.map_or("ok", |c| c.as_str()))
                    .collect(),
                recent_success_rate: rate,
            }
        })
        .collect();
    let routes = inner
        .metrics
        .routes
        .iter()
        .map(|(name, c)| {
            let requests = c.requests.load(Ordering::Relaxed);
            let successes = c.successes.load(Ordering::Relaxed);
            RouteStatus {
                name: name.clone(),
                chain: inner
                    .config
                    .routes
                    .get(name)
                    .map(|r| {
                        r.chain
                            .iter()
                            .filter_map(|&i| inner.deployments.get(i))
                            .map(|d| d.spec.name.clone())
                            .collect()
                    })
                    .unwrap_or_default(),
                requests,
                successes,
                success_rate: (requests > 0).then(|| successes as f64 / requests as f64),
            }
        })
        .collect();
    let (reloads_ok, reloads_rejected) = inner.metrics.config_reloads();
    StatusReport {
        config: ConfigStatus {
            file: inner.config.file.clone(),
            hash: inner.config.hash.clone(),
            loaded_at: inner.loaded_at,
            reloads_ok,
            reloads_rejected,
        },
        totals: Totals {
            requests: stats.requests,
            successes: stats.successes,
            failures: stats.failures,
            retries: stats.retries,
            fallbacks: stats.fallbacks,
            static_fallbacks: stats.static_fallbacks,
            budget_exhausted: stats.budget_exhausted,
            retry_budget_available: budget_available,
            stream_breaks: stats.stream_breaks,
            stream_resumes: stats.stream_resumes,
        },
        deployments,
        routes,
    }
}
