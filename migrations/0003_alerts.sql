-- Alerts: one row per condition (job + kind); times are Unix milliseconds.
CREATE TABLE alerts (
    key              TEXT PRIMARY KEY,          -- e.g. job_failed:appdb
    kind             TEXT    NOT NULL,          -- job_failed | rpo_violated | drill_failed | ...
    severity         TEXT    NOT NULL,          -- critical | warning | info
    job              TEXT,
    state            TEXT    NOT NULL,          -- pending | firing | resolved
    summary          TEXT    NOT NULL,
    detail           TEXT,
    hint             TEXT,
    channels         TEXT    NOT NULL DEFAULT '[]',  -- JSON list the firing went to; the resolve follows it
    for_ms           INTEGER NOT NULL DEFAULT 0,
    repeat_ms        INTEGER NOT NULL,
    started_at       INTEGER NOT NULL,          -- condition first seen (this episode)
    fired_at         INTEGER,
    last_notified_at INTEGER,
    resolved_at      INTEGER,
    updated_at       INTEGER NOT NULL,
    notifications    INTEGER NOT NULL DEFAULT 0
);

-- The outbox: written before any delivery is tried, one row per channel.
CREATE TABLE alert_deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    alert_key       TEXT    NOT NULL,
    channel         TEXT    NOT NULL,
    event           TEXT    NOT NULL,           -- firing | repeat | resolved | event | test | ping_start | ping_success | ping_fail
    payload         TEXT    NOT NULL,           -- the notification as JSON (no secrets)
    created_at      INTEGER NOT NULL,
    expires_at      INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    attempts        INTEGER NOT NULL DEFAULT 0,
    state           TEXT    NOT NULL DEFAULT 'pending',  -- pending | delivered | failed | expired
    last_error      TEXT,
    delivered_at    INTEGER
);
CREATE INDEX alert_deliveries_pending ON alert_deliveries (state, channel, id);

-- Every delivery attempt, for `drctl alerts` and post-mortems.
CREATE TABLE alert_attempts (
    delivery_id INTEGER NOT NULL REFERENCES alert_deliveries (id),
    at          INTEGER NOT NULL,
    ok          INTEGER NOT NULL,
    detail      TEXT
);
CREATE INDEX alert_attempts_delivery ON alert_attempts (delivery_id);
