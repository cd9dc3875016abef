//! Key pools (docs/design.md §7): a provider may hold several API keys. A 429 or a
//! quota error is usually about the key, not the deployment, so the next
//! attempt goes to another key of the same deployment before any fallback.
//! Key switches have their own budget (each other key of the pool at most
//! once per request), separate from the retry budget and the fallback
//! chain. Each key remembers until when it is cooling, so later requests
//! start on a key that is not. Keys are only ever named by their index.

use std::borrow::Cow;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::config::Deployment;
use crate::lock;

/// How long a key cools after a 429 that carried no retry hint.
pub(crate) const DEFAULT_COOLING: Duration = Duration::from_secs(30);

/// The live state of a deployment's keys: per key, cooling until when.
#[derive(Default)]
pub(crate) struct KeyPool {
    cooling: Mutex<Vec<Option<Instant>>>,
}

impl KeyPool {
    /// A pool of `n` keys, none cooling.
    pub(crate) fn new(n: usize) -> KeyPool {
        KeyPool {
            cooling: Mutex::new(vec![None; n]),
        }
    }

    /// The key to use at `t` among those not in `tried`: the first that is
    /// not cooling, or (when `allow_cooling`) the one that stops cooling first.
    fn pick(&self, t: Instant, tried: &[usize], allow_cooling: bool) -> Option<usize> {
        let c = lock(&self.cooling);
        let free = (0..c.len()).find(|i| !tried.contains(i) && c[*i].is_none_or(|u| u <= t));
        if free.is_some() || !allow_cooling {
            return free;
        }
        (0..c.len())
            .filter(|i| !tried.contains(i))
            .min_by_key(|i| c[*i])
    }

    /// Marks key `i` as cooling until `until` (a later mark wins).
    fn cool(&self, i: usize, until: Instant) {
        let mut c = lock(&self.cooling);
        if let Some(slot) = c.get_mut(i) {
            *slot = Some(slot.map_or(until, |u| u.max(until)));
        }
    }

    /// Whether key `i` is cooling at `t`.
    #[cfg(test)]
    fn is_cooling(&self, i: usize, t: Instant) -> bool {
        lock(&self.cooling)
            .get(i)
            .is_some_and(|c| c.is_some_and(|u| u > t))
    }
}

/// One request's use of one deployment's pool.
pub(crate) struct KeyState {
    /// Index of the key the next attempt uses.
    pub current: usize,
    tried: Vec<usize>,
    /// Switches left for this request on this deployment.
    left: usize,
}

impl KeyState {
    /// Starts on the preferred key of `pool` at `t`.
    pub(crate) fn start(pool: &KeyPool, t: Instant) -> KeyState {
        let n = lock(&pool.cooling).len();
        let current = pool.pick(t, &[], true).unwrap_or(0);
        KeyState {
            current,
            tried: vec![current],
            left: n.saturating_sub(1),
        }
    }

    /// The current key was rate limited or out of quota at `t`: it cools
    /// for `hint` (or [`DEFAULT_COOLING`]); returns the key to switch to,
    /// if the pool has an untried key that is not cooling and the switch
    /// budget allows.
    pub(crate) fn on_rate_limited(
        &mut self,
        pool: &KeyPool,
        t: Instant,
        hint: Option<Duration>,
    ) -> Option<usize> {
        let cooling = hint.filter(|h| !h.is_zero()).unwrap_or(DEFAULT_COOLING);
        pool.cool(self.current, t + cooling);
        if self.left == 0 {
            return None;
        }
        let next = pool.pick(t, &self.tried, false)?;
        self.left -= 1;
        self.tried.push(next);
        self.current = next;
        Some(next)
    }
}

/// `dep` as the attempt sends it: with key `index` of its pool.
pub(crate) fn keyed(dep: &Deployment, index: usize) -> Cow<'_, Deployment> {
    match dep.api_keys.get(index) {
        Some(k) if dep.api_keys.len() > 1 && dep.api_key.as_ref() != Some(k) => {
            let mut d = dep.clone();
            d.api_key = Some(k.clone());
            d.refresh_request_headers();
            Cow::Owned(d)
        }
        _ => Cow::Borrowed(dep),
    }
}

/// Logs a key switch: the keys by index only, never their value.
pub(crate) fn log_switch(
    call: &crate::call::ChatCall,
    route: &crate::config::Route,
    dep: &Deployment,
    attempt: u32,
    c: &keel_policy::Classification,
    from: usize,
    to: usize,
) {
    tracing::warn!(
        request_id = %call.options.request_id,
        route = %route.name,
        deployment = %dep.name,
        attempt,
        class = c.class.as_str(),
        status = c.status.unwrap_or(0),
        key_index = from,
        next_key_index = to,
        next = "key_switch",
        "attempt failed"
    );
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    #[test]
    fn switches_once_per_other_key_and_prefers_keys_not_cooling() {
        let pool = KeyPool::new(3);
        let t = Instant::now();
        let mut s = KeyState::start(&pool, t);
        assert_eq!(s.current, 0);
        assert_eq!(s.on_rate_limited(&pool, t, None), Some(1));
        assert_eq!(
            s.on_rate_limited(&pool, t, Some(Duration::from_secs(2))),
            Some(2)
        );
        assert_eq!(s.on_rate_limited(&pool, t, None), None, "budget spent");
        assert!(pool.is_cooling(0, t + Duration::from_secs(29)));
        assert!(!pool.is_cooling(1, t + Duration::from_secs(3)));
        // A later request starts on a key that is not cooling.
        assert_eq!(
            KeyState::start(&pool, t + Duration::from_secs(3)).current,
            1
        );
        // All cooling: the one that stops first.
        assert_eq!(KeyState::start(&pool, t).current, 1);
    }

    #[test]
    fn keyed_sends_the_chosen_key() {
        let text = r#"
[providers.p]
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "k-zero"
api_keys = ["k-one"]
[deployments.d]
provider = "p"
model = "m"
[routes.r]
chain = ["d"]
"#;
        let c = crate::config::Config::from_toml_str(text, "t.toml", &|_| None).unwrap();
        let d = &c.deployments[0];
        assert_eq!(d.api_keys.len(), 2);
        assert_eq!(keyed(d, 0).api_key.as_ref().unwrap().expose(), "k-zero");
        assert_eq!(keyed(d, 1).api_key.as_ref().unwrap().expose(), "k-one");
        assert!(matches!(keyed(d, 0), Cow::Borrowed(_)));
        // What goes on the wire follows the key.
        let auth = |d: &Deployment| {
            d.request_headers["authorization"]
                .to_str()
                .unwrap()
                .to_string()
        };
        assert_eq!(auth(&keyed(d, 0)), "Bearer k-zero");
        assert_eq!(auth(&keyed(d, 1)), "Bearer k-one");
    }

    #[test]
    fn a_single_key_never_switches() {
        let pool = KeyPool::new(1);
        let t = Instant::now();
        let mut s = KeyState::start(&pool, t);
        assert_eq!(s.on_rate_limited(&pool, t, None), None);
        let empty = KeyPool::new(0);
        let mut s = KeyState::start(&empty, t);
        assert_eq!(s.current, 0);
        assert_eq!(s.on_rate_limited(&empty, t, None), None);
    }
}
