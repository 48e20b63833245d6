-- Every job run, successful or not: the history `drctl status` and alerts read.
CREATE TABLE runs (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    job         TEXT    NOT NULL,
    kind        TEXT    NOT NULL,
    host        TEXT    NOT NULL,
    trigger     TEXT    NOT NULL,            -- cli | schedule | catch_up
    started_at  TEXT    NOT NULL,            -- RFC 3339 UTC
    finished_at TEXT,
    status      TEXT    NOT NULL,            -- running | succeeded | failed | interrupted | skipped
    bytes       INTEGER,
    backup_id   TEXT,
    error       TEXT
);
CREATE INDEX runs_job_started ON runs (job, started_at);

-- A cache of committed backups seen in repositories (the repository stays the truth).
CREATE TABLE backups (
    repository  TEXT NOT NULL,
    job         TEXT NOT NULL,
    backup_id   TEXT NOT NULL,
    finished_at TEXT NOT NULL,
    stored_bytes INTEGER NOT NULL,
    manifest    TEXT NOT NULL,
    PRIMARY KEY (repository, job, backup_id)
);
