-- Every restore journals its steps, so one killed at any point (even during
-- the swap of the job's own database) is finished or rolled back by the
-- next `drctl restore` or `drctl status`: connections re-opened, the
-- half-restored database dropped, temp files removed, the lease released.
CREATE TABLE restore_journal (
    id          INTEGER PRIMARY KEY,
    job         TEXT    NOT NULL,
    backup_id   TEXT    NOT NULL,
    repository  TEXT    NOT NULL,
    target      TEXT    NOT NULL,            -- what the per-target lock is named after (no password)
    lease       TEXT,                        -- the lease object's key in the repository
    temp_file   TEXT,
    database    TEXT,                        -- the database being replaced (own-database restores)
    restoring   TEXT,                        -- the database pg_restore fills
    created     INTEGER NOT NULL DEFAULT 0,  -- 1: drctl created `restoring` (so it may drop it)
    safety      TEXT,                        -- the safety copy's name after the swap
    step        TEXT    NOT NULL,            -- fetching | restoring | closed | swapped | done | rolled_back | failed
    pid         INTEGER NOT NULL,
    started_at  INTEGER NOT NULL,            -- unix ms
    updated_at  INTEGER NOT NULL,
    note        TEXT                         -- what recovery did
);
CREATE INDEX restore_journal_open ON restore_journal (step);
