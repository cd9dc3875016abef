//! `--concurrency auto`: additive increase, multiplicative decrease.
//!
//! **Why AIMD, and why not on every signal.** The most a batch can get is
//! what the provider's limits allow; concurrency beyond `rate × latency`
//! (Little's law) buys nothing but a queue. So the controller grows while
//! answers come back fast and clean (doubling per round until the first
//! push-back, then one more slot per round, as TCP does), and halves when
//! something says the pipe is full: the provider's 429s, a latency blow-up,
//! or items waiting in Keel's own rate limiter longer than an answer takes.
//! A limiter wait never halves below what the configured rate needs, or the
//! batch would fall under the very limit it is trying to hold; and the limit
//! never rises above what the configured RPM/TPM can keep busy (the engine's
//! limiter enforces them in any case; the ceiling only keeps the queue
//! short). At most one decrease per round, so one burst of 429s counts once.
//!
//! The controller is a pure state machine: it is fed each finished item's
//! [`Completion`] and answers with the new limit; it never sleeps or calls.

use std::time::Duration;

/// Bounds and the rate the configuration allows.
#[derive(Clone, Debug, PartialEq)]
pub struct AimdConfig {
    /// Starting limit.
    pub initial: u32,
    /// Never below this.
    pub min: u32,
    /// Never above this.
    pub max: u32,
    /// Requests per second the configured RPM/TPM allow, when limited.
    pub rate_per_sec: Option<f64>,
    /// Limiter waits shorter than this (or than an answer takes) are noise.
    pub wait_tolerance: Duration,
}

impl Default for AimdConfig {
    fn default() -> Self {
        AimdConfig {
            initial: 4,
            min: 1,
            max: 512,
            rate_per_sec: None,
            wait_tolerance: Duration::from_millis(25),
        }
    }
}

/// What one finished item says about the pipe.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Completion {
    /// Time spent in upstream attempts (and backoff), not queued locally.
    pub service: Duration,
    /// Latency of the answering (or last) upstream attempt.
    pub attempt_latency: Duration,
    /// Time spent waiting in Keel's own rate limiter.
    pub limiter_wait: Duration,
    /// An upstream answered 429 on some attempt.
    pub upstream_429: bool,
    /// The local limiter refused an attempt outright.
    pub limiter_refused: bool,
    /// Answered on the first upstream attempt.
    pub clean: bool,
}

/// Why the limit changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// Grew after clean answers.
    Increase,
    /// Halved after a 429 from the provider.
    UpstreamRateLimited,
    /// Halved after waits in Keel's limiter.
    LimiterWait,
    /// Halved after latency rose well above its baseline.
    LatencyBlowUp,
}

/// The AIMD concurrency controller.
#[derive(Clone, Debug)]
pub struct Aimd {
    cfg: AimdConfig,
    limit: f64,
    slow_start: bool,
    /// Completions since the last decrease (one decrease per round).
    since_decrease: u32,
    /// Low-water mark of attempt latency, slowly drifting up.
    baseline: Option<f64>,
    /// EWMA of the service time of an item.
    service: Option<f64>,
    peak: u32,
}

impl Aimd {
    /// A controller at `cfg.initial`, clamped to the bounds.
    pub fn new(cfg: AimdConfig) -> Self {
        let min = cfg.min.max(1);
        let max = cfg.max.max(min);
        let cfg = AimdConfig { min, max, ..cfg };
        let limit = f64::from(cfg.initial.clamp(min, max));
        Aimd {
            cfg,
            limit,
            slow_start: true,
            since_decrease: u32::MAX,
            baseline: None,
            service: None,
            peak: limit as u32,
        }
    }

    /// In-flight items allowed now.
    pub fn limit(&self) -> u32 {
        (self.limit.floor() as u32).clamp(self.cfg.min, self.ceiling())
    }

    /// The highest limit reached.
    pub fn peak(&self) -> u32 {
        self.peak
    }

    /// The concurrency the configured rate needs (Little's law), if limited.
    fn rate_need(&self) -> Option<f64> {
        let rate = self.cfg.rate_per_sec?;
        Some(rate * self.service.unwrap_or(0.0))
    }

    /// The most the configured rate can keep busy, with headroom for jitter.
    pub fn ceiling(&self) -> u32 {
        match self.rate_need() {
            Some(need) if self.service.is_some() => {
                let c = (need * 1.5).ceil() as u32 + 2;
                c.clamp(self.cfg.min, self.cfg.max)
            }
            _ => self.cfg.max,
        }
    }

    /// Feeds one finished item; returns the change, if any.
    pub fn on_completion(&mut self, c: &Completion) -> Option<Change> {
        let lat = c.attempt_latency.as_secs_f64();
        let baseline = match self.baseline {
            None => lat,
            Some(b) if lat < b => lat,
            Some(b) => b + (lat - b) * 0.01,
        };
        self.baseline = Some(baseline);
        let svc = c.service.as_secs_f64();
        self.service = Some(match self.service {
            None => svc,
            Some(s) => s + (svc - s) * 0.05,
        });
        self.since_decrease = self.since_decrease.saturating_add(1);

        let wait_limit = self.cfg.wait_tolerance.as_secs_f64().max(baseline);
        let blow_up = lat > baseline * 3.0 && lat > baseline + 0.05;
        let signal = if c.upstream_429 {
            Some(Change::UpstreamRateLimited)
        } else if c.limiter_refused || c.limiter_wait.as_secs_f64() > wait_limit {
            Some(Change::LimiterWait)
        } else if blow_up {
            Some(Change::LatencyBlowUp)
        } else {
            None
        };
        let change = match signal {
            Some(why) => self.decrease(why),
            None if c.clean && c.limiter_wait.as_secs_f64() <= wait_limit => {
                let before = self.limit();
                if self.slow_start {
                    self.limit += 1.0;
                } else {
                    self.limit += 1.0 / self.limit.max(1.0);
                }
                self.limit = self.limit.min(f64::from(self.ceiling()));
                (self.limit() > before).then_some(Change::Increase)
            }
            None => None,
        };
        self.peak = self.peak.max(self.limit());
        change
    }

    fn decrease(&mut self, why: Change) -> Option<Change> {
        self.slow_start = false;
        // One decrease per round: the completions of the same window carry the same news.
        if f64::from(self.since_decrease) < self.limit {
            return None;
        }
        let floor = match why {
            Change::LimiterWait => self
                .rate_need()
                .map_or(f64::from(self.cfg.min), |n| n.ceil() + 1.0),
            _ => f64::from(self.cfg.min),
        };
        let halved = (self.limit / 2.0).max(floor).max(f64::from(self.cfg.min));
        if halved >= self.limit {
            return None;
        }
        self.limit = halved;
        self.since_decrease = 0;
        Some(why)
    }
}
