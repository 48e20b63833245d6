-- Restore drills: one row per drill run. Times are RFC 3339 UTC text like
-- the runs table; phases and checks are JSON.
CREATE TABLE drills (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    drill              TEXT    NOT NULL,
    job                TEXT    NOT NULL,
    host               TEXT    NOT NULL,
    trigger            TEXT    NOT NULL,
    started_at         TEXT    NOT NULL,
    finished_at        TEXT,
    outcome            TEXT    NOT NULL,   -- running | passed | over_rto | failed | interrupted
    failed_phase       TEXT,
    error              TEXT,
    backup_id          TEXT,
    backup_age_seconds REAL,
    target             TEXT,
    phases             TEXT    NOT NULL DEFAULT '[]',
    total_seconds      REAL,
    rto_seconds        REAL,
    checks             TEXT    NOT NULL DEFAULT '[]'
);
CREATE INDEX drills_drill_started ON drills (drill, started_at);
