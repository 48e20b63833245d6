-- What child processes (pg_dump, pg_dumpall, ...) printed during a run, bounded.
ALTER TABLE runs ADD COLUMN output TEXT;
