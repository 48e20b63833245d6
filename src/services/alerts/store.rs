//! The alert tables: condition state and the outbox.
//!
//! A state change and the outbox rows it produces are written in one
//! `BEGIN IMMEDIATE` transaction: a crash can lose neither one without the
//! other, and two processes (daemon, `drctl run`) raising the same
//! condition at once notify once.

use super::message::Notification;
use super::{Condition, Event, Severity, Timing};
use crate::base::error::Result;
use crate::services::state::State;
use crate::services::state::{from_ms, ms};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{Row, SqliteConnection};
use std::time::Duration;

/// Where notifications come from and how long they may wait.
pub(crate) struct Ctx<'a> {
    pub host: &'a str,
    pub max_age: Duration,
}

/// Where a condition is in its life: a closed set, stored as its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum AlertState {
    /// Holding, waiting out `for` before it notifies.
    Pending,
    /// Notified; repeats every `repeat_interval` while it holds.
    Firing,
    /// No longer holds; the resolve was sent.
    Resolved,
}

impl AlertState {
    /// Pending or firing: the condition holds.
    pub fn active(self) -> bool {
        matches!(self, AlertState::Pending | AlertState::Firing)
    }
}

names!(AlertState {
    Pending => "pending",
    Firing => "firing",
    Resolved => "resolved",
});

/// What an active condition is due for at `now` (pure: the alert state
/// machine's timing). `since_start`/`since_notified` are milliseconds.
pub(crate) fn due(
    state: AlertState,
    escalated: bool,
    since_start: i64,
    since_notified: Option<i64>,
    for_ms: i64,
    repeat_ms: i64,
) -> Option<Event> {
    match state {
        // A firing warning that turned critical notifies at once.
        AlertState::Firing if escalated => Some(Event::Firing),
        AlertState::Pending if since_start >= for_ms => Some(Event::Firing),
        AlertState::Firing if since_notified.is_some_and(|t| t >= repeat_ms) => Some(Event::Repeat),
        _ => None,
    }
}

/// What clearing a condition in `state` does: (resolve it, notify).
/// A pending one never notified, so it resolves silently (damping).
pub(crate) fn on_clear(state: AlertState) -> (bool, bool) {
    match state {
        AlertState::Pending => (true, false),
        AlertState::Firing => (true, true),
        AlertState::Resolved => (false, false),
    }
}

/// A row of `alerts` as `drctl alerts` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AlertRow {
    /// The condition's key (`kind:subject`).
    pub key: String,
    /// What went wrong.
    pub kind: String,
    /// How urgent.
    pub severity: Severity,
    /// The job concerned, if any.
    pub job: Option<String>,
    /// Pending, firing or resolved.
    pub state: AlertState,
    /// One line.
    pub summary: String,
    /// The whole story.
    pub detail: Option<String>,
    /// Channels it was routed to.
    pub channels: Vec<String>,
    /// When the condition started to hold.
    pub started_at: DateTime<Utc>,
    /// When it first notified (after `for`).
    pub fired_at: Option<DateTime<Utc>>,
    /// When it last notified (firing or repeat).
    pub last_notified_at: Option<DateTime<Utc>>,
    /// Notifications sent for it so far.
    pub notifications: i64,
    #[serde(skip)]
    hint: Option<String>,
    #[serde(skip)]
    for_ms: i64,
    #[serde(skip)]
    repeat_ms: i64,
}

/// Where an outbox row is: a closed set, stored by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, sqlx::Type)]
#[serde(rename_all = "lowercase")]
#[sqlx(rename_all = "lowercase")]
pub enum DeliveryState {
    /// Waiting for its (next) attempt.
    Pending,
    /// The channel accepted it.
    Delivered,
    /// Rejected for good (the receiver refuses this payload; channel gone).
    Failed,
    /// Older than `max_age` before it could be delivered.
    Expired,
}

names!(DeliveryState {
    Pending => "pending",
    Delivered => "delivered",
    Failed => "failed",
    Expired => "expired",
});

/// An outbox row as `drctl alerts --outbox` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct DeliveryRow {
    /// Row id.
    pub id: i64,
    /// The condition it is about.
    pub alert_key: String,
    /// The channel it goes to.
    pub channel: String,
    /// Firing, repeat, resolved or notice.
    pub event: String,
    /// Where it is.
    pub state: DeliveryState,
    /// Attempts made so far.
    pub attempts: i64,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it is tried next.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it expires unsent (`max_age`).
    pub expires_at: DateTime<Utc>,
    /// When the channel accepted it.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The last failure, redacted.
    pub last_error: Option<String>,
    /// The message itself.
    pub notification: Notification,
}

/// A row of `alerts`; an unknown severity or state is an error, never a
/// silent default.
fn alert_row(r: &sqlx::sqlite::SqliteRow) -> Result<AlertRow> {
    let channels: String = r.get("channels");
    let closed = |col: &str, e: sqlx::Error| {
        crate::Error::unreadable(
            format!("alert {}: unreadable {col}", r.get::<String, _>("key")),
            e,
        )
    };
    Ok(AlertRow {
        key: r.get("key"),
        kind: r.get("kind"),
        severity: r.try_get("severity").map_err(|e| closed("severity", e))?,
        job: r.get("job"),
        state: r.try_get("state").map_err(|e| closed("state", e))?,
        summary: r.get("summary"),
        detail: r.get("detail"),
        channels: serde_json::from_str(&channels).unwrap_or_default(),
        started_at: from_ms(r.get("started_at")),
        fired_at: r.get::<Option<i64>, _>("fired_at").map(from_ms),
        last_notified_at: r.get::<Option<i64>, _>("last_notified_at").map(from_ms),
        notifications: r.get("notifications"),
        hint: r.get("hint"),
        for_ms: r.get("for_ms"),
        repeat_ms: r.get("repeat_ms"),
    })
}

fn delivery_row(r: &sqlx::sqlite::SqliteRow) -> Result<DeliveryRow> {
    let payload: String = r.get("payload");
    let notification = serde_json::from_str(&payload).map_err(|e| {
        crate::Error::unreadable(
            format!(
                "outbox row {} holds an unreadable notification",
                r.get::<i64, _>("id")
            ),
            e,
        )
    })?;
    let state: DeliveryState = r.try_get("state").map_err(|e| {
        crate::Error::unreadable(
            format!("outbox row {}: unreadable state", r.get::<i64, _>("id")),
            e,
        )
    })?;
    Ok(DeliveryRow {
        id: r.get("id"),
        alert_key: r.get("alert_key"),
        channel: r.get("channel"),
        event: r.get("event"),
        attempts: r.get("attempts"),
        created_at: from_ms(r.get("created_at")),
        next_attempt_at: (state == DeliveryState::Pending)
            .then(|| from_ms(r.get("next_attempt_at"))),
        expires_at: from_ms(r.get("expires_at")),
        delivered_at: r.get::<Option<i64>, _>("delivered_at").map(from_ms),
        last_error: r.get("last_error"),
        state,
        notification,
    })
}

async fn begin(state: &State) -> Result<sqlx::Transaction<'static, sqlx::Sqlite>> {
    state
        .pool()
        .begin_with("BEGIN IMMEDIATE")
        .await
        .map_err(|e| state.err(e))
}

async fn get(state: &State, conn: &mut SqliteConnection, key: &str) -> Result<Option<AlertRow>> {
    let r = sqlx::query("SELECT * FROM alerts WHERE key = ?")
        .bind(key)
        .fetch_optional(conn)
        .await
        .map_err(|e| state.err(e))?;
    r.as_ref().map(alert_row).transpose()
}

fn notification_of(a: &AlertRow, event: Event, now: DateTime<Utc>, host: &str) -> Notification {
    Notification {
        id: uuid::Uuid::new_v4().to_string(),
        event,
        key: a.key.clone(),
        kind: a.kind.clone(),
        severity: a.severity,
        host: host.to_owned(),
        job: a.job.clone(),
        summary: a.summary.clone(),
        detail: a.detail.clone(),
        hint: a.hint.clone(),
        since: Some(a.started_at),
        at: now,
        count: a.notifications,
        html: None,
    }
}

/// The condition holds: record it, then notify if due.
pub(crate) async fn raise(
    state: &State,
    ctx: &Ctx<'_>,
    c: &Condition,
    timing: Timing,
    channels: &[String],
    now: DateTime<Utc>,
) -> Result<usize> {
    let mut tx = begin(state).await?;
    let existing = get(state, &mut tx, &c.key).await?;
    let active = existing.as_ref().is_some_and(|a| a.state.active());
    // A firing warning that turns critical (a certificate from 20 to 5 days
    // left) notifies at once, on the critical route, instead of waiting for
    // the next repeat.
    let escalated = existing
        .as_ref()
        .is_some_and(|a| a.state == AlertState::Firing && c.severity > a.severity);
    let channels_json = serde_json::to_string(channels).unwrap_or_else(|_| "[]".into());
    let q = if active {
        "UPDATE alerts SET kind = ?, severity = ?, job = ?, summary = ?, detail = ?, hint = ?, channels = ?, for_ms = ?, repeat_ms = ?, updated_at = ? WHERE key = ?"
    } else {
        "INSERT OR REPLACE INTO alerts (kind, severity, job, summary, detail, hint, channels, for_ms, repeat_ms, updated_at, key, state, started_at, notifications) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?, 0)"
    };
    let mut query = sqlx::query(q)
        .bind(&c.kind)
        .bind(c.severity.as_str())
        .bind(&c.job)
        .bind(&c.summary)
        .bind(&c.detail)
        .bind(&c.hint)
        .bind(&channels_json)
        .bind(timing.for_.as_millis() as i64)
        .bind(timing.repeat.as_millis() as i64)
        .bind(ms(now))
        .bind(&c.key);
    if !active {
        query = query.bind(ms(now));
    }
    query.execute(&mut *tx).await.map_err(|e| state.err(e))?;
    let n = evaluate(state, &mut tx, ctx, &c.key, now, escalated).await?;
    tx.commit().await.map_err(|e| state.err(e))?;
    committed(n);
    Ok(n)
}

/// Promote or repeat one active condition if due; returns the rows queued.
async fn evaluate(
    state: &State,
    conn: &mut SqliteConnection,
    ctx: &Ctx<'_>,
    key: &str,
    now: DateTime<Utc>,
    escalated: bool,
) -> Result<usize> {
    let Some(mut a) = get(state, conn, key).await? else {
        return Ok(0);
    };
    let now_ms = ms(now);
    let Some(event) = due(
        a.state,
        escalated,
        now_ms - ms(a.started_at),
        a.last_notified_at.map(|t| now_ms - ms(t)),
        a.for_ms,
        a.repeat_ms,
    ) else {
        return Ok(0);
    };
    a.notifications += 1;
    sqlx::query(
        "UPDATE alerts SET state = 'firing', fired_at = COALESCE(fired_at, ?), last_notified_at = ?, notifications = ?, updated_at = ? WHERE key = ?",
    )
    .bind(now_ms)
    .bind(now_ms)
    .bind(a.notifications)
    .bind(now_ms)
    .bind(key)
    .execute(&mut *conn)
    .await
    .map_err(|e| state.err(e))?;
    let n = notification_of(&a, event, now, ctx.host);
    for ch in &a.channels {
        insert(state, &mut *conn, ch, &n, ctx.max_age).await?;
    }
    Ok(a.channels.len())
}

/// The condition stopped holding: resolve it, notifying where it fired.
pub(crate) async fn clear(
    state: &State,
    ctx: &Ctx<'_>,
    key: &str,
    summary: &str,
    now: DateTime<Utc>,
) -> Result<usize> {
    let mut tx = begin(state).await?;
    let Some(mut a) = get(state, &mut tx, key).await? else {
        return Ok(0);
    };
    let (resolve, notify) = on_clear(a.state);
    if !resolve {
        return Ok(0);
    }
    sqlx::query(
        "UPDATE alerts SET state = 'resolved', resolved_at = ?, updated_at = ? WHERE key = ?",
    )
    .bind(ms(now))
    .bind(ms(now))
    .bind(key)
    .execute(&mut *tx)
    .await
    .map_err(|e| state.err(e))?;
    let mut queued = 0;
    if notify {
        a.summary = summary.to_owned();
        a.hint = None;
        let n = notification_of(&a, Event::Resolved, now, ctx.host);
        for ch in &a.channels {
            insert(state, &mut tx, ch, &n, ctx.max_age).await?;
        }
        queued = a.channels.len();
    }
    tx.commit().await.map_err(|e| state.err(e))?;
    committed(queued);
    Ok(queued)
}

/// Evaluate every active condition (timed promotions and repeats).
pub(crate) async fn sweep(state: &State, ctx: &Ctx<'_>, now: DateTime<Utc>) -> Result<usize> {
    let keys: Vec<String> =
        sqlx::query_scalar("SELECT key FROM alerts WHERE state IN ('pending', 'firing')")
            .fetch_all(state.pool())
            .await
            .map_err(|e| state.err(e))?;
    let mut queued = 0;
    for key in keys {
        let mut tx = begin(state).await?;
        queued += evaluate(state, &mut tx, ctx, &key, now, false).await?;
        tx.commit().await.map_err(|e| state.err(e))?;
    }
    committed(queued);
    Ok(queued)
}

/// Woken whenever this process has committed new outbox rows, so the
/// daemon's worker delivers at once rather than at its next poll. Notified
/// only after the commit: woken earlier, the worker would find nothing and
/// sleep through the rows.
pub(crate) static QUEUED: tokio::sync::Notify = tokio::sync::Notify::const_new();

async fn insert(
    state: &State,
    conn: &mut SqliteConnection,
    channel: &str,
    n: &Notification,
    max_age: Duration,
) -> Result<()> {
    let payload = serde_json::to_string(n)
        .map_err(|e| crate::Error::unreadable("encoding a notification", e))?;
    let now = ms(Utc::now());
    sqlx::query(
        "INSERT INTO alert_deliveries (alert_key, channel, event, payload, created_at, expires_at, next_attempt_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&n.key)
    .bind(channel)
    .bind(n.event.as_str())
    .bind(payload)
    .bind(now)
    .bind(now + max_age.as_millis() as i64)
    .bind(now)
    .execute(conn)
    .await
    .map_err(|e| state.err(e))?;
    Ok(())
}

/// Queue one notification outside any condition (notices, pings).
pub(crate) async fn enqueue(
    state: &State,
    channel: &str,
    n: &Notification,
    max_age: Duration,
) -> Result<()> {
    let mut conn = state.pool().acquire().await.map_err(|e| state.err(e))?;
    insert(state, &mut conn, channel, n, max_age).await?;
    committed(1);
    Ok(())
}

fn committed(rows: usize) {
    if rows > 0 {
        QUEUED.notify_one();
    }
}

pub(crate) async fn active(state: &State) -> Result<Vec<AlertRow>> {
    let rows = sqlx::query(
        "SELECT * FROM alerts WHERE state IN ('pending', 'firing') ORDER BY started_at DESC",
    )
    .fetch_all(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    rows.iter().map(alert_row).collect()
}

pub(crate) async fn deliveries(state: &State, limit: i64) -> Result<Vec<DeliveryRow>> {
    let rows = sqlx::query("SELECT * FROM alert_deliveries ORDER BY id DESC LIMIT ?")
        .bind(limit)
        .fetch_all(state.pool())
        .await
        .map_err(|e| state.err(e))?;
    rows.iter().map(delivery_row).collect()
}

/// When the earliest undelivered row is due (None: the outbox is drained).
pub(crate) async fn next_due(state: &State) -> Result<Option<DateTime<Utc>>> {
    let at: Option<i64> = sqlx::query_scalar(
        "SELECT min(next_attempt_at) FROM alert_deliveries WHERE state = 'pending'",
    )
    .fetch_one(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    Ok(at.map(from_ms))
}

pub(crate) async fn has_pending(state: &State) -> Result<bool> {
    let row: Option<i64> =
        sqlx::query_scalar("SELECT 1 FROM alert_deliveries WHERE state = 'pending' LIMIT 1")
            .fetch_optional(state.pool())
            .await
            .map_err(|e| state.err(e))?;
    Ok(row.is_some())
}

/// Channels with undelivered rows.
pub(crate) async fn pending_channels(state: &State) -> Result<Vec<String>> {
    sqlx::query_scalar(
        "SELECT DISTINCT channel FROM alert_deliveries WHERE state = 'pending' ORDER BY channel",
    )
    .fetch_all(state.pool())
    .await
    .map_err(|e| state.err(e))
}

/// One channel's undelivered rows, oldest first: a channel delivers in order.
pub(crate) async fn pending_of(state: &State, channel: &str) -> Result<Vec<DeliveryRow>> {
    let rows = sqlx::query(
        "SELECT * FROM alert_deliveries WHERE state = 'pending' AND channel = ? ORDER BY id",
    )
    .bind(channel)
    .fetch_all(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    rows.iter().map(delivery_row).collect()
}

/// How an attempt ended.
pub(crate) enum Attempt {
    Delivered(String),
    /// Try again at the given time.
    Retry(String, DateTime<Utc>),
    /// Will never succeed: `Failed` (rejected, channel gone) or `Expired`.
    GiveUp(DeliveryState, String),
}

pub(crate) async fn record(state: &State, id: i64, attempt: &Attempt) -> Result<()> {
    let now = ms(Utc::now());
    let mut tx = begin(state).await?;
    let (ok, detail) = match attempt {
        Attempt::Delivered(d) => (true, d.as_str()),
        Attempt::Retry(e, _) | Attempt::GiveUp(_, e) => (false, e.as_str()),
    };
    let detail = crate::base::secret::redact(detail);
    let counts = !matches!(attempt, Attempt::GiveUp(DeliveryState::Expired, _));
    if counts {
        sqlx::query("INSERT INTO alert_attempts (delivery_id, at, ok, detail) VALUES (?, ?, ?, ?)")
            .bind(id)
            .bind(now)
            .bind(ok)
            .bind(&detail)
            .execute(&mut *tx)
            .await
            .map_err(|e| state.err(e))?;
    }
    let q = match attempt {
        Attempt::Delivered(_) => sqlx::query(
            "UPDATE alert_deliveries SET state = 'delivered', attempts = attempts + 1, delivered_at = ?, last_error = NULL WHERE id = ?",
        )
        .bind(now)
        .bind(id),
        Attempt::Retry(_, next) => sqlx::query(
            "UPDATE alert_deliveries SET attempts = attempts + 1, next_attempt_at = ?, last_error = ? WHERE id = ?",
        )
        .bind(ms(*next))
        .bind(&detail)
        .bind(id),
        Attempt::GiveUp(st, _) => sqlx::query(
            "UPDATE alert_deliveries SET state = ?, attempts = attempts + ?, last_error = ? WHERE id = ?",
        )
        .bind(*st)
        .bind(if counts { 1 } else { 0 })
        .bind(&detail)
        .bind(id),
    };
    q.execute(&mut *tx).await.map_err(|e| state.err(e))?;
    tx.commit().await.map_err(|e| state.err(e))?;
    Ok(())
}

/// What `/metrics` shows about alerting.
#[derive(Debug, Default)]
pub struct AlertStats {
    /// Firing conditions per severity.
    pub firing: Vec<(String, i64)>,
    /// Outbox rows per (channel, state).
    pub deliveries: Vec<(String, String, i64)>,
    /// When the oldest undelivered row was queued.
    pub oldest_pending: Option<DateTime<Utc>>,
}

pub(crate) async fn stats(state: &State) -> Result<AlertStats> {
    let firing = sqlx::query_as::<_, (String, i64)>(
        "SELECT severity, count(*) FROM alerts WHERE state = 'firing' GROUP BY severity",
    )
    .fetch_all(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    let deliveries = sqlx::query_as::<_, (String, String, i64)>(
        "SELECT channel, state, count(*) FROM alert_deliveries GROUP BY channel, state ORDER BY channel, state",
    )
    .fetch_all(state.pool())
    .await
    .map_err(|e| state.err(e))?;
    let oldest: Option<i64> =
        sqlx::query_scalar("SELECT min(created_at) FROM alert_deliveries WHERE state = 'pending'")
            .fetch_one(state.pool())
            .await
            .map_err(|e| state.err(e))?;
    Ok(AlertStats {
        firing,
        deliveries,
        oldest_pending: oldest.map(from_ms),
    })
}

/// Forget finished outbox rows (and their attempts) older than `keep`.
pub(crate) async fn forget_finished(
    state: &State,
    keep: Duration,
    now: DateTime<Utc>,
) -> Result<u64> {
    let before = ms(now) - keep.as_millis() as i64;
    let mut tx = begin(state).await?;
    sqlx::query(
        "DELETE FROM alert_attempts WHERE delivery_id IN (SELECT id FROM alert_deliveries WHERE state != 'pending' AND created_at < ?)",
    )
    .bind(before)
    .execute(&mut *tx)
    .await
    .map_err(|e| state.err(e))?;
    let r = sqlx::query("DELETE FROM alert_deliveries WHERE state != 'pending' AND created_at < ?")
        .bind(before)
        .execute(&mut *tx)
        .await
        .map_err(|e| state.err(e))?;
    tx.commit().await.map_err(|e| state.err(e))?;
    Ok(r.rows_affected())
}

#[cfg(test)]
mod state_machine {
    use super::*;
    use AlertState::*;

    /// (state, escalated, ms since start, ms since last notification, due)
    type Case = (AlertState, bool, i64, Option<i64>, Option<Event>);

    #[test]
    fn timing_of_firing_repeats_and_escalation() {
        const FOR: i64 = 60_000;
        const REPEAT: i64 = 4 * 3_600_000;
        let cases: [Case; 10] = [
            // Pending waits out `for`, then fires exactly at it.
            (Pending, false, 0, None, None),
            (Pending, false, FOR - 1, None, None),
            (Pending, false, FOR, None, Some(Event::Firing)),
            // Firing repeats at repeat_interval after the last notification.
            (Firing, false, REPEAT * 3, Some(REPEAT - 1), None),
            (Firing, false, REPEAT * 3, Some(REPEAT), Some(Event::Repeat)),
            // A firing warning that turns critical notifies at once.
            (Firing, true, 10, Some(10), Some(Event::Firing)),
            // Escalation of a pending one waits for `for` like any other.
            (Pending, true, 10, None, None),
            // Resolved is never due.
            (Resolved, false, REPEAT * 9, Some(REPEAT * 9), None),
            (Resolved, true, REPEAT * 9, None, None),
            // A firing row never notified (an old state file) does not repeat.
            (Firing, false, REPEAT * 2, None, None),
        ];
        for (state, escalated, start, notified, want) in cases {
            assert_eq!(
                due(state, escalated, start, notified, FOR, REPEAT),
                want,
                "{state} escalated={escalated} start={start} notified={notified:?}"
            );
        }
        assert_eq!(due(Pending, false, 0, None, 0, REPEAT), Some(Event::Firing));
    }

    #[test]
    fn clearing_resolves_active_ones_and_notifies_only_what_fired() {
        assert_eq!(on_clear(Pending), (true, false));
        assert_eq!(on_clear(Firing), (true, true));
        assert_eq!(on_clear(Resolved), (false, false));
        assert!(Pending.active() && Firing.active() && !Resolved.active());
    }
}
