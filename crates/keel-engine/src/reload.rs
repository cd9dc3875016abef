//! Config reload without a restart (`SIGHUP`, `POST /admin/reload`).
//!
//! **Why swap whole engines.** An [`Engine`] is a snapshot: its config and
//! the state built for it never change under a request. A reload validates
//! the file exactly as `keel check-config` does, builds the next engine
//! beside the running one and swaps one pointer ([`LiveEngine`], an
//! `ArcSwap`). A request loads the pointer once, when it starts, and keeps
//! its engine to the end, so requests in flight finish on the config they
//! started with and the hot path pays one atomic load.
//!
//! **What is kept.** A deployment is the same upstream when its provider
//! kind, base URL, model and keys are unchanged; then its breaker, limiter,
//! bulkhead, adaptive backoff, latency and learned-routing signals, key
//! cooling and counters are handed over (shared, so the requests still
//! running on the old engine feed the same state). A policy whose own
//! parameters changed (`rpm`, `[breaker]`, `max_in_flight`) starts fresh.
//! Everything of a deployment whose identity changed is dropped, cache
//! entries included: the cache key covers the identities of the route's
//! chain. The store (cache, idempotency records, spend), the HTTP
//! connection pool and the metric series are the process's and stay.
//!
//! What a reload cannot change is reported, not applied: the listen
//! address, connection and in-flight limits, header and drain timeouts and
//! `[store]` take effect at the next start.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use rand::Rng;
use serde::Serialize;
use tracing::{error, info, warn};

use crate::config::{Config, ConfigError, Deployment};
use crate::{build, lock, metrics, BuildError, DeploymentRuntime, Engine, EngineState};

/// The engine a server runs, replaced whole by [`LiveEngine::reload`].
/// Cheap to clone; every clone sees the same current engine.
#[derive(Clone)]
pub struct LiveEngine {
    shared: Arc<Shared>,
}

struct Shared {
    current: ArcSwap<EngineState>,
    /// The config file reloads read (`None`: the engine was built in code).
    path: Option<PathBuf>,
    /// One reload at a time: two at once would both build from the same
    /// running engine, and the second swap would lose the first's state.
    reloading: Mutex<()>,
}

/// Why a reload left the running config in place.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The engine was not started from a file.
    #[error("this gateway was not started from a config file; nothing to reload")]
    NoFile,
    /// The file failed validation (the same error as `keel check-config`).
    #[error("{0}")]
    Invalid(ConfigError),
    /// The file is valid but its policies could not be built.
    #[error("{0}")]
    Build(BuildError),
}

/// What a reload did.
#[derive(Clone, Debug, Serialize)]
pub struct Reloaded {
    /// The file read.
    pub file: String,
    /// Hash of the file now running (see [`Config::hash`]).
    pub hash: String,
    /// Deployments whose state was carried over.
    pub kept: Vec<String>,
    /// Deployments that start with fresh state (new, or a changed identity).
    pub fresh: Vec<String>,
    /// Deployments of the previous config that are gone.
    pub removed: Vec<String>,
    /// Changed settings that take effect only at the next start.
    pub restart_required: Vec<&'static str>,
}

impl LiveEngine {
    /// Serves `engine`; reloads read `path`.
    pub fn new(engine: Engine, path: Option<PathBuf>) -> LiveEngine {
        LiveEngine {
            shared: Arc::new(Shared {
                current: ArcSwap::new(engine.inner),
                path,
                reloading: Mutex::new(()),
            }),
        }
    }

    /// The engine running now. A request takes it once and keeps it.
    #[inline]
    pub fn engine(&self) -> Engine {
        Engine {
            inner: self.shared.current.load_full(),
        }
    }

    /// Re-reads the config file, validates it and swaps the engine; on any
    /// error the running engine stays. Logs and counts the result
    /// (`keel_config_reloads_total{result}`).
    pub fn reload(&self) -> Result<Reloaded, ReloadError> {
        let path = self.shared.path.as_deref().ok_or(ReloadError::NoFile)?;
        let _one = lock(&self.shared.reloading);
        let running = self.engine();
        let result = Config::load(path)
            .map_err(ReloadError::Invalid)
            .and_then(|config| self.swap(&running, config).map_err(ReloadError::Build));
        running.inner.metrics.config_reload(result.is_ok());
        match &result {
            Ok(r) => {
                info!(
                    file = %r.file,
                    hash = %r.hash,
                    kept = r.kept.len(),
                    fresh = r.fresh.len(),
                    removed = r.removed.len(),
                    "config reloaded"
                );
                if !r.restart_required.is_empty() {
                    warn!(
                        settings = %r.restart_required.join(", "),
                        "config reloaded; these changes take effect at the next start"
                    );
                }
            }
            Err(e) => error!(
                file = %path.display(),
                error = %e,
                "config reload rejected; the running config stays"
            ),
        }
        result
    }

    fn swap(&self, running: &Engine, config: Config) -> Result<Reloaded, BuildError> {
        let old = &running.inner;
        let report = compare(old, &config);
        let seed = old.lock_rng().random();
        let index_of = |d: &Deployment| same_deployment(old, &config, d).map(|(o, _)| o.spec.index);
        let metrics = Arc::new(metrics::Metrics::with_families(
            &config,
            old.metrics.families(),
            Some((&old.metrics, &index_of)),
        ));
        let next = build(
            config,
            seed,
            old.store.clone(),
            old.client.clone(),
            metrics,
            Some(old),
        )?;
        self.shared.current.store(next.inner);
        for name in &report.removed {
            old.metrics.forget_deployment(name);
        }
        Ok(report)
    }

    /// The config file reloads read.
    pub fn path(&self) -> Option<&Path> {
        self.shared.path.as_deref()
    }
}

/// The state of `d` in the running engine, if its identity is unchanged
/// (the same name first, else any deployment of the same identity), and
/// whether `[breaker]` is unchanged too.
pub(crate) fn same_deployment<'a>(
    running: &'a EngineState,
    next: &Config,
    d: &Deployment,
) -> Option<(&'a DeploymentRuntime, bool)> {
    let same = |o: &&DeploymentRuntime| same_identity(&o.spec, d);
    let old = running
        .deployments
        .iter()
        .filter(same)
        .find(|o| o.spec.name == d.name)
        .or_else(|| running.deployments.iter().find(same))?;
    Some((old, running.config.breaker == next.breaker))
}

/// Provider kind, base URL, model and keys: the upstream a deployment is.
fn same_identity(a: &Deployment, b: &Deployment) -> bool {
    a.kind == b.kind && a.base_url == b.base_url && a.model == b.model && a.api_keys == b.api_keys
}

fn compare(old: &EngineState, next: &Config) -> Reloaded {
    let mut kept = Vec::new();
    let mut fresh = Vec::new();
    for d in &next.deployments {
        if same_deployment(old, next, d).is_some() {
            kept.push(d.name.clone());
        } else {
            fresh.push(d.name.clone());
        }
    }
    let removed = old
        .config
        .deployments
        .iter()
        .filter(|o| next.deployments.iter().all(|d| d.name != o.name))
        .map(|o| o.name.clone())
        .collect();
    let (a, b) = (&old.config.server, &next.server);
    let restart_required = [
        ("server.listen", a.listen != b.listen),
        ("server.max_in_flight", a.max_in_flight != b.max_in_flight),
        (
            "server.max_connections",
            a.max_connections != b.max_connections,
        ),
        (
            "server.header_read_timeout",
            a.header_read_timeout != b.header_read_timeout,
        ),
        ("server.drain_timeout", a.drain_timeout != b.drain_timeout),
        ("store", old.config.store != next.store),
    ]
    .into_iter()
    .filter_map(|(k, changed)| changed.then_some(k))
    .collect();
    Reloaded {
        file: next.file.clone(),
        hash: next.hash.clone(),
        kept,
        fresh,
        removed,
        restart_required,
    }
}
