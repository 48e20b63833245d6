//! Cron schedules: parsing (seconds optional), time zones, next and previous
//! occurrences. The daemon fires jobs with tokio-cron-scheduler; this module
//! answers "when is the next run" for `status` and "was a run missed" for
//! catch-up, with the same parser (croner, day-of-month AND day-of-week).

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds};
use croner::Cron;

/// A cron expression as the config writes it, parsed: 5 fields (minute
/// precision) or 6 (seconds first).
#[derive(Debug, Clone)]
pub struct CronExpr {
    cron: Cron,
    /// The expression with a seconds field, as the scheduler wants it.
    expr6: String,
}

impl crate::base::values::FromConfig for CronExpr {
    fn from_config(expr: &str) -> Result<Self, String> {
        let expr6 = match expr.split_whitespace().count() {
            5 => format!("0 {}", expr.trim()),
            6 => expr.trim().to_owned(),
            _ => {
                return Err(format!("expected a cron expression of 5 or 6 fields (\"0 0 2 * * *\" is 02:00 daily), got {expr:?}"))
            }
        };
        let cron = CronParser::builder()
            .seconds(Seconds::Required)
            .dom_and_dow(true)
            .build()
            .parse(&expr6)
            .map_err(|e| format!("invalid cron expression {expr:?}: {e}"))?;
        Ok(CronExpr { cron, expr6 })
    }
}

/// A parsed cron schedule in its time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    /// The expression with a seconds field, as the scheduler wants it.
    pub expr: String,
    /// The zone the expression is read in.
    pub tz: Tz,
}

/// An IANA zone name, default UTC.
pub fn parse_timezone(tz: Option<&str>) -> Result<Tz, String> {
    tz.map_or(
        Ok(Tz::UTC),
        <Tz as crate::base::values::FromConfig>::from_config,
    )
}

impl Schedule {
    /// `cron` read in `tz`: no parsing, both were parsed with the config.
    pub fn new(cron: &CronExpr, tz: Tz) -> Self {
        Schedule {
            cron: cron.cron.clone(),
            expr: cron.expr6.clone(),
            tz,
        }
    }

    /// The schedule of a `schedule` / `timezone` pair of config keys.
    pub fn of(
        schedule: &crate::base::values::Parsed<CronExpr>,
        timezone: Option<&crate::base::values::Parsed<Tz>>,
    ) -> crate::Result<Self> {
        Ok(Schedule::new(
            schedule.get()?,
            crate::base::values::zone(timezone)?,
        ))
    }

    /// `expr` has 5 fields (minute precision) or 6 (with seconds first);
    /// the error names the key at fault (`schedule` or `timezone`).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Self, (&'static str, String)> {
        use crate::base::values::FromConfig;
        let cron = CronExpr::from_config(expr).map_err(|m| ("schedule", m))?;
        let tz = parse_timezone(tz).map_err(|m| ("timezone", m))?;
        Ok(Schedule::new(&cron, tz))
    }

    /// The first occurrence strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&t.with_timezone(&self.tz), false)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The last occurrence at or before `t`.
    pub fn previous_at_or_before(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_previous_occurrence(&t.with_timezone(&self.tz), true)
            .ok()
            .map(|d| d.with_timezone(&Utc))
    }

    /// The length of the period `t` falls in: from the occurrence at or
    /// before `t` to the next one. For irregular schedules (weekdays only)
    /// it varies, which is what a "two periods without success" alert wants:
    /// Friday's run is not late on Sunday.
    pub fn period_at(&self, t: DateTime<Utc>) -> Option<chrono::Duration> {
        let prev = self.previous_at_or_before(t)?;
        Some(self.next_after(t)? - prev)
    }

    /// A run was missed if the last success predates the previous occurrence.
    pub fn missed(&self, last_success: Option<DateTime<Utc>>, now: DateTime<Utc>) -> bool {
        match (last_success, self.previous_at_or_before(now)) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(s), Some(prev)) => s < prev,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_period_is_the_gap_around_now() {
        let daily = Schedule::parse("30 2 * * *", None).unwrap();
        assert_eq!(
            daily.period_at(at("2026-11-22T03:00:00Z")),
            Some(chrono::Duration::days(1))
        );
        // Weekdays at 02:00: on Saturday the period is Friday to Monday.
        let weekdays = Schedule::parse("0 2 * * 1-5", None).unwrap();
        assert_eq!(
            weekdays.period_at(at("2026-11-28T12:00:00Z")),
            Some(chrono::Duration::days(3))
        );
        assert_eq!(
            weekdays.period_at(at("2026-11-25T12:00:00Z")),
            Some(chrono::Duration::days(1))
        );
    }

    #[test]
    fn five_and_six_fields_and_time_zones() {
        let s = Schedule::parse("30 2 * * *", None).unwrap();
        assert_eq!(s.expr, "0 30 2 * * *");
        assert_eq!(
            s.next_after(at("2026-11-22T03:00:00Z")),
            Some(at("2026-11-23T02:30:00Z"))
        );
        // 02:00 in Berlin is 01:00 UTC in winter and 00:00 UTC in summer.
        let b = Schedule::parse("0 0 2 * * *", Some("Europe/Berlin")).unwrap();
        assert_eq!(
            b.next_after(at("2026-11-22T12:00:00Z")),
            Some(at("2026-11-23T01:00:00Z"))
        );
        assert_eq!(
            b.next_after(at("2026-07-01T12:00:00Z")),
            Some(at("2026-07-02T00:00:00Z"))
        );
    }

    #[test]
    fn missed_runs_are_detected() {
        let s = Schedule::parse("0 0 2 * * *", None).unwrap();
        let now = at("2026-11-22T09:00:00Z");
        assert!(s.missed(None, now));
        assert!(s.missed(Some(at("2026-11-21T02:00:05Z")), now));
        assert!(!s.missed(Some(at("2026-11-22T02:00:05Z")), now));
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(
            Schedule::parse("every day", None).unwrap_err().0,
            "schedule"
        );
        assert_eq!(
            Schedule::parse("0 0 25 * * *", None).unwrap_err().0,
            "schedule"
        );
        assert_eq!(
            Schedule::parse("0 0 2 * * *", Some("Mars/Olympus"))
                .unwrap_err()
                .0,
            "timezone"
        );
    }
}

/// How long the scheduler is overdue for a job, if it is: `next_due` is
/// the job's first occurrence after its last tick (or after the daemon
/// started, if it never ticked); when that is more than `grace` in the past,
/// the tick that should have come did not. A scheduler that died ("cron
/// died months ago") shows here while the process looks alive.
pub fn overdue(
    next_due: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
    grace: chrono::TimeDelta,
) -> Option<chrono::TimeDelta> {
    let late = now - next_due?;
    (late > grace).then_some(late)
}

#[cfg(test)]
mod liveness_tests {
    use super::*;

    #[test]
    fn a_missing_tick_is_overdue_only_after_the_grace() {
        let t = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let g = chrono::TimeDelta::minutes(1);
        let every_second = Schedule::parse("* * * * * *", None).unwrap();
        let last = t("2026-12-01T02:00:00Z");
        let next = every_second.next_after(last);
        assert_eq!(next, Some(t("2026-12-01T02:00:01Z")));
        assert_eq!(overdue(next, t("2026-12-01T02:00:30Z"), g), None);
        assert_eq!(
            overdue(next, t("2026-12-01T02:05:01Z"), g),
            Some(chrono::TimeDelta::minutes(5))
        );
        let nightly = Schedule::parse("0 0 2 * * *", None).unwrap();
        let next = nightly.next_after(t("2026-12-01T02:00:00.1Z"));
        assert_eq!(overdue(next, t("2026-12-01T23:00:00Z"), g), None);
        assert!(overdue(next, t("2026-12-02T02:01:30Z"), g).is_some());
    }
}
