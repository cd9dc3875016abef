//! A request's whole report as one stable, multi-line string, so that one
//! `assert_eq!` pins everything the engine decided and shows a readable
//! diff when any of it changes: every attempt record (all of it but the
//! measured latency), the answer's fields of [`RequestReport`], and how many attempts
//! each fake upstream saw.
//!
//! A test whose scenario makes a value depend on timing leaves that field
//! out ([`Report::without`]) or writes a measured number in a reason as `N`
//! ([`Report::mask`]), and says why beside it. The reports of many
//! requests go together with [`runs`] (in order), [`tally`] (each distinct
//! report with its count) or [`kinds`] (each distinct report, no counts).

use std::fmt::Write as _;

use keel_chaos::ChaosHandle;
use keel_engine::RequestReport;

/// The fields of an [`AttemptRecord`](keel_engine::call::AttemptRecord) and
/// of [`RequestReport`] a test may leave out.
const FIELDS: &[&str] = &[
    "class",
    "status",
    "next",
    "delay_ms",
    "reason",
    "deployment",
    "fallback_depth",
    "tier",
    "upstream_attempts",
    "cost_usd",
];

/// A request's report and the upstream counts to render with it.
pub struct Report<'a> {
    meta: &'a RequestReport,
    without: Vec<&'static str>,
    masked: Vec<&'static str>,
    upstreams: Vec<String>,
}

/// The report of `meta` with the chaos server's counts for `upstreams`.
pub fn report(meta: &RequestReport, ch: &ChaosHandle, upstreams: &[&str]) -> String {
    Report::new(meta).chaos(ch, upstreams).render()
}

impl<'a> Report<'a> {
    /// The report of one request.
    pub fn new(meta: &'a RequestReport) -> Self {
        Report {
            meta,
            without: Vec::new(),
            masked: Vec::new(),
            upstreams: Vec::new(),
        }
    }

    /// Writes the number that follows `needle` in a reason as `N` (a
    /// duration measured rather than chosen, such as the time a breaker
    /// has left).
    pub fn mask(mut self, needle: &'static str) -> Self {
        self.masked.push(needle);
        self
    }

    fn reason(&self, reason: &str) -> String {
        let mut out = reason.to_string();
        for needle in &self.masked {
            let mut from = 0;
            while let Some(i) = out[from..].find(needle) {
                let start = from + i + needle.len();
                let digits = out[start..]
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(out.len() - start);
                out.replace_range(start..start + digits, "N");
                from = start + 1;
            }
        }
        out
    }

    /// Leaves `field` out (one of [`FIELDS`]), everywhere it appears.
    pub fn without(mut self, field: &'static str) -> Self {
        assert!(FIELDS.contains(&field), "no field {field:?} to leave out");
        self.without.push(field);
        self
    }

    /// Adds what the chaos server saw on each of `upstreams`: attempts and
    /// outcomes.
    pub fn chaos(mut self, ch: &ChaosHandle, upstreams: &[&str]) -> Self {
        self.upstreams.extend(chaos_lines(ch, upstreams));
        self
    }

    /// Adds the attempt count of an upstream that is not a chaos server.
    pub fn upstream(mut self, name: &str, attempts: u64) -> Self {
        self.upstreams
            .push(format!("upstream {name}: attempts={attempts}"));
        self
    }

    fn has(&self, field: &str) -> bool {
        !self.without.contains(&field)
    }

    /// One line per attempt, then the answer, then the upstreams.
    pub fn render(&self) -> String {
        let m = self.meta;
        let mut out = String::new();
        let _ = writeln!(out, "request_id={:?} route={}", m.request_id, m.route);
        for a in &m.attempts {
            let _ = write!(out, "attempt {}#{}", a.deployment, a.attempt);
            if self.has("class") {
                let _ = write!(out, " class={}", a.class.unwrap_or("-"));
            }
            if self.has("status") {
                match a.status {
                    Some(s) => {
                        let _ = write!(out, " status={s}");
                    }
                    None => out.push_str(" status=-"),
                }
            }
            if self.has("next") {
                let _ = write!(out, " next={}", a.next);
            }
            if self.has("delay_ms") {
                match a.delay_ms {
                    Some(d) => {
                        let _ = write!(out, " delay_ms={d}");
                    }
                    None => out.push_str(" delay_ms=-"),
                }
            }
            if self.has("reason") {
                let _ = write!(out, " reason={:?}", self.reason(&a.reason));
            }
            out.push('\n');
        }
        let mut answer = Vec::new();
        if self.has("deployment") {
            answer.push(format!(
                "deployment={}",
                m.deployment.as_deref().unwrap_or("-")
            ));
        }
        if self.has("fallback_depth") {
            answer.push(format!("fallback_depth={}", m.fallback_depth));
        }
        if self.has("tier") {
            answer.push(format!("tier={:?}", m.tier));
        }
        if self.has("upstream_attempts") {
            answer.push(format!("upstream_attempts={}", m.upstream_attempts));
        }
        answer.push(format!("truncated={}", m.truncated));
        answer.push(format!("refusal={}", m.refusal));
        answer.push(format!("cache={}", m.cache.as_str()));
        if self.has("cost_usd") {
            answer.push(format!("cost_usd={}", m.cost_usd));
        }
        out.push_str(&answer.join(" "));
        out.push('\n');
        for line in &self.upstreams {
            out.push_str(line);
            out.push('\n');
        }
        out
    }
}

/// What the chaos server saw on each of `upstreams`, alone (after the
/// reports of several requests).
pub fn upstreams(ch: &ChaosHandle, upstreams: &[&str]) -> String {
    chaos_lines(ch, upstreams)
        .into_iter()
        .map(|l| l + "\n")
        .collect()
}

fn chaos_lines(ch: &ChaosHandle, upstreams: &[&str]) -> Vec<String> {
    upstreams
        .iter()
        .map(|name| {
            let mut line = format!("upstream {name}:");
            match ch.stats(name) {
                Some(s) => {
                    let _ = write!(line, " attempts={}", s.attempts);
                    for (outcome, n) in &s.by_outcome {
                        let _ = write!(line, " {outcome}={n}");
                    }
                }
                None => line.push_str(" unknown"),
            }
            line
        })
        .collect()
}

/// The reports of a run of requests, one after the other, with a run of
/// identical reports written once under how many requests it covers
/// (`== requests 4-10`).
pub fn runs(reports: &[String]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < reports.len() {
        let mut j = i + 1;
        while j < reports.len() && reports[j] == reports[i] {
            j += 1;
        }
        if j - i == 1 {
            let _ = writeln!(out, "== request {}", i + 1);
        } else {
            let _ = writeln!(out, "== requests {}-{}", i + 1, j);
        }
        out.push_str(&reports[i]);
        i = j;
    }
    out
}

/// The distinct reports of many requests whose order is not the point
/// (a strategy's split, a share of hedged requests), each once, in the
/// order first seen, under how many requests it covers.
pub fn tally(reports: &[String]) -> String {
    let mut distinct: Vec<(&String, usize)> = Vec::new();
    for r in reports {
        match distinct.iter_mut().find(|(d, _)| *d == r) {
            Some((_, n)) => *n += 1,
            None => distinct.push((r, 1)),
        }
    }
    let mut out = String::new();
    for (r, n) in distinct {
        let _ = writeln!(out, "== {n} of {} requests", reports.len());
        out.push_str(r);
    }
    out
}

thread_local! {
    static RECORDED: std::cell::RefCell<Vec<String>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Keeps the report of `meta` (without upstream counts) for [`recorded`]:
/// for a test's helpers that return less than the whole outcome. Kept per
/// thread, and each test runs on a thread of its own (with its requests,
/// on the test's current-thread runtime).
pub fn record(meta: &RequestReport) {
    record_report(Report::new(meta));
}

/// Keeps `report` for [`recorded`].
pub fn record_report(report: Report<'_>) {
    RECORDED.with(|r| r.borrow_mut().push(report.render()));
}

/// The reports [`record`] kept since the last call, oldest first.
pub fn recorded() -> Vec<String> {
    RECORDED.with(|r| std::mem::take(&mut *r.borrow_mut()))
}

/// The distinct reports of requests whose split is measured rather than
/// chosen (a latency race): each kind once, sorted, without counts.
pub fn kinds(reports: &[String]) -> String {
    let mut distinct: Vec<&String> = reports.iter().collect();
    distinct.sort();
    distinct.dedup();
    let mut out = String::new();
    for r in distinct {
        out.push_str("== some requests\n");
        out.push_str(r);
    }
    out
}
