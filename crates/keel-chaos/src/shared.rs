//! The state every connection shares: the seed, the start time and the
//! upstreams. Its own module so that the data plane (`server`, `chat`) and
//! the control API (`control`) both read it without reaching into each other.

use tokio::time::Instant;

use crate::upstream::Upstream;

/// Errors of the run-time control surface.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChaosError {
    /// No upstream has this name.
    #[error("unknown upstream \"{name}\", expected one of {known}")]
    UnknownUpstream {
        /// The name asked for.
        name: String,
        /// The upstreams that exist, comma-separated.
        known: String,
    },
}

/// State shared by every connection.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) seed: u64,
    pub(crate) started: Instant,
    pub(crate) upstreams: Vec<Upstream>,
}

impl Shared {
    pub(crate) fn upstream(&self, name: &str) -> Result<&Upstream, ChaosError> {
        self.upstreams
            .iter()
            .find(|u| u.spec.name == name)
            .ok_or_else(|| ChaosError::UnknownUpstream {
                name: name.to_owned(),
                known: self
                    .upstreams
                    .iter()
                    .map(|u| u.spec.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}
