//! Spend per tenant and per deployment, by calendar month (UTC).
//!
//! **Why in the store.** A tenant's monthly budget is a promise about the
//! whole fleet: two replicas that each keep their own total would let a
//! tenant spend its budget once per replica. With Redis every replica adds
//! to, and reads, the same per-month hashes; in memory the totals are one
//! process's.
//!
//! Amounts only ever grow, so adding is commutative: a replica that could
//! not reach Redis keeps what it spent locally and adds it later (see
//! [`crate::Store::spend_add`]).

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;

use serde::{Serialize, Serializer};

use crate::StoreError;

/// A calendar month in UTC: the period of a budget.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Month {
    year: i32,
    month: u8,
}

impl Month {
    /// `month` (1 to 12) of `year`, or `None`.
    pub fn new(year: i32, month: u8) -> Option<Month> {
        (1..=12).contains(&month).then_some(Month { year, month })
    }

    /// The month now (the system clock, UTC).
    pub fn now() -> Month {
        let secs = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        Month::of_unix(secs)
    }

    /// The month of a Unix time in seconds.
    pub fn of_unix(secs: u64) -> Month {
        // H. Hinnant's civil-from-days.
        let z = (secs / 86_400) as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z - era * 146_097;
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        Month {
            year: y as i32,
            month: m as u8,
        }
    }

    /// The month after this one.
    pub fn next(self) -> Month {
        if self.month == 12 {
            Month {
                year: self.year + 1,
                month: 1,
            }
        } else {
            Month {
                year: self.year,
                month: self.month + 1,
            }
        }
    }

    /// Unix time in seconds of the first instant of this month.
    pub fn start_unix(self) -> i64 {
        // H. Hinnant's days-from-civil.
        let (m, y) = (
            i64::from(self.month),
            i64::from(self.year) - i64::from(self.month <= 2),
        );
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = if m > 2 { m - 3 } else { m + 9 };
        let doy = (153 * mp + 2) / 5;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        (era * 146_097 + doe - 719_468) * 86_400
    }
}

impl fmt::Display for Month {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl Serialize for Month {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Spend of one month in USD, per tenant and per deployment. Also the unit
/// of adding: a report of amounts to add.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SpendReport {
    /// The month (`YYYY-MM` in JSON).
    pub month: Month,
    /// USD per tenant.
    pub tenants: BTreeMap<String, f64>,
    /// USD per deployment (every charge, with or without a tenant).
    pub deployments: BTreeMap<String, f64>,
}

impl SpendReport {
    /// Nothing spent in `month`.
    pub fn empty(month: Month) -> SpendReport {
        SpendReport {
            month,
            tenants: BTreeMap::new(),
            deployments: BTreeMap::new(),
        }
    }

    /// One charge: `usd` spent by `tenant` (if any) on `deployment`.
    pub fn charge(month: Month, tenant: Option<&str>, deployment: &str, usd: f64) -> SpendReport {
        let mut r = SpendReport::empty(month);
        if let Some(t) = tenant {
            r.tenants.insert(t.to_string(), usd);
        }
        r.deployments.insert(deployment.to_string(), usd);
        r
    }

    /// Whether nothing is recorded.
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty() && self.deployments.is_empty()
    }

    /// Adds `other`'s amounts (whatever its month); amounts that are not
    /// finite and positive are skipped.
    pub fn merge(&mut self, other: &SpendReport) {
        for (side, k, v) in other.amounts() {
            *self.side_mut(side).entry(k.to_string()).or_default() += v;
        }
    }

    pub(crate) fn side_mut(&mut self, side: SpendSide) -> &mut BTreeMap<String, f64> {
        match side {
            SpendSide::Tenant => &mut self.tenants,
            SpendSide::Deployment => &mut self.deployments,
        }
    }

    /// The amounts that can be stored: finite and positive.
    pub(crate) fn amounts(&self) -> impl Iterator<Item = (SpendSide, &str, f64)> {
        let t = self.tenants.iter().map(|(k, v)| (SpendSide::Tenant, k, *v));
        let d = self
            .deployments
            .iter()
            .map(|(k, v)| (SpendSide::Deployment, k, *v));
        t.chain(d)
            .filter(|(_, _, v)| v.is_finite() && *v > 0.0)
            .map(|(s, k, v)| (s, k.as_str(), v))
    }
}

/// Which total an amount belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SpendSide {
    Tenant,
    Deployment,
}

impl SpendSide {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            SpendSide::Tenant => "tenant",
            SpendSide::Deployment => "deployment",
        }
    }
}

/// Where spend lives.
pub trait SpendStore: Send + Sync {
    /// Adds every amount of `spend` to its month's totals; returns the new
    /// totals of the tenants and deployments it named.
    fn add_spend(
        &self,
        spend: &SpendReport,
    ) -> impl Future<Output = Result<SpendReport, StoreError>> + Send;
    /// What `tenant` spent in `month`.
    fn tenant_spend(
        &self,
        month: Month,
        tenant: &str,
    ) -> impl Future<Output = Result<f64, StoreError>> + Send;
    /// Everything spent in `month`.
    fn spend_report(
        &self,
        month: Month,
    ) -> impl Future<Output = Result<SpendReport, StoreError>> + Send;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn civil_months() {
        let day = |d: u64| Month::of_unix(d * 86_400).to_string();
        assert_eq!(day(0), "1970-01");
        assert_eq!(day(31), "1970-02");
        // 2024-02-29 is day 19782; 2024-03-01 is 19783.
        assert_eq!(day(19_782), "2024-02");
        assert_eq!(day(19_783), "2024-03");
        assert_eq!(day(20_454), "2026-01");
    }

    #[test]
    fn month_starts_round_trip() {
        let mut m = Month::of_unix(0).next();
        for _ in 0..(12 * 80 - 1) {
            let start = m.start_unix();
            assert_eq!(Month::of_unix(start as u64), m);
            assert_eq!(Month::of_unix(start as u64 - 1).next(), m);
            m = m.next();
        }
        assert_eq!(m.to_string(), "2050-01");
        assert_eq!(
            Month::new(2024, 3).map(|m| m.start_unix()),
            Some(19_783 * 86_400)
        );
        assert_eq!(Month::new(2024, 13), None);
    }

    #[test]
    fn reports_merge_and_skip_unstorable_amounts() {
        let m = Month::of_unix(0);
        let mut r = SpendReport::charge(m, Some("a"), "d1", 0.5);
        r.merge(&SpendReport::charge(m, None, "d1", 0.25));
        r.merge(&SpendReport::charge(m, Some("b"), "d2", f64::NAN));
        r.merge(&SpendReport::charge(m, Some("b"), "d2", -1.0));
        assert_eq!(r.tenants["a"], 0.5);
        assert_eq!(r.deployments["d1"], 0.75);
        let stored: Vec<_> = r.amounts().map(|(s, k, _)| (s.as_str(), k)).collect();
        assert_eq!(stored, [("tenant", "a"), ("deployment", "d1")]);
        let bad = SpendReport::charge(m, Some("b"), "d2", f64::INFINITY);
        assert_eq!(bad.amounts().count(), 0);
        let json = serde_json::to_value(&r).unwrap_or_default();
        assert_eq!(json["month"], "1970-01");
    }
}
