-- What verifications and drills found per backup, for retention: a backup
-- last found damaged fills no retention slot, and the newest one proven
-- restorable (a deep verification or a drill passed) is always kept.
CREATE TABLE verdicts (
    repository TEXT    NOT NULL,
    job        TEXT    NOT NULL,
    backup_id  TEXT    NOT NULL,
    damaged    INTEGER NOT NULL,             -- 1: the last check failed its integrity
    proven_at  INTEGER,                      -- unix ms of the last deep pass or drill pass
    checked_at INTEGER NOT NULL,             -- unix ms
    PRIMARY KEY (repository, job, backup_id)
);
