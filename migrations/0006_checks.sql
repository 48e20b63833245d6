-- Maintenance and check jobs: each run's verdict (ok | warning | critical)
-- and what it found, as JSON, next to the run it belongs to.
ALTER TABLE runs ADD COLUMN result TEXT;
ALTER TABLE runs ADD COLUMN details TEXT;

-- Metric values those runs produced, exported by the daemon at scrape time,
-- so `drctl run` outside the daemon counts and a restart loses nothing.
-- Gauges are replaced per (job, name) by each run; counters accumulate.
CREATE TABLE metric_values (
    name       TEXT    NOT NULL,
    labels     TEXT    NOT NULL,             -- JSON array of [key, value] pairs
    job        TEXT    NOT NULL,
    counter    INTEGER NOT NULL,             -- 1: counter, 0: gauge
    value      REAL    NOT NULL,
    updated_at INTEGER NOT NULL,             -- unix ms
    PRIMARY KEY (name, labels)
);
CREATE INDEX metric_values_job ON metric_values (job, name);

-- Health checks flip state only after failure_threshold / success_threshold
-- consecutive results; the streaks live here between runs and processes.
CREATE TABLE health_state (
    job        TEXT    NOT NULL,
    check_name TEXT    NOT NULL,
    up         INTEGER NOT NULL,
    failures   INTEGER NOT NULL,             -- consecutive failed runs
    successes  INTEGER NOT NULL,             -- consecutive passed runs
    changed_at INTEGER NOT NULL,             -- unix ms of the last flip
    last_error TEXT,
    PRIMARY KEY (job, check_name)
);
