-- RPO compliance per backup job: the current status and every transition,
-- with the exact time it happened (reconstructed from backup times, not
-- from when it was noticed). Times are Unix milliseconds.
CREATE TABLE rpo_state (
    job               TEXT PRIMARY KEY,
    target_ms         INTEGER NOT NULL,
    compliant         INTEGER NOT NULL,
    since             INTEGER NOT NULL,   -- current status holds since
    checked_at        INTEGER NOT NULL,   -- last evaluation
    newest_id         TEXT,
    newest_started_at INTEGER             -- the age is measured from here
);

CREATE TABLE rpo_transitions (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    job       TEXT    NOT NULL,
    at        INTEGER NOT NULL,
    compliant INTEGER NOT NULL,
    target_ms INTEGER NOT NULL,
    -- 1 for the first row of a job: tracking starts here, earlier is unknown.
    first     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX rpo_transitions_job_at ON rpo_transitions (job, at);
