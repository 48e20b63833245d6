-- Runs per job and outcome, maintained on write by triggers so /metrics reads
-- one row per job and outcome (not the whole history), and the counters never
-- go down when `history` prunes old runs.
CREATE TABLE run_totals (
    job    TEXT    NOT NULL,
    status TEXT    NOT NULL,            -- succeeded | failed | interrupted | skipped
    n      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (job, status)
);
INSERT INTO run_totals (job, status, n)
    SELECT job, status, count(*) FROM runs WHERE status != 'running' GROUP BY job, status;

-- A run inserted already finished (a skip).
CREATE TRIGGER run_totals_insert AFTER INSERT ON runs
WHEN NEW.status != 'running'
BEGIN
    INSERT INTO run_totals (job, status, n) VALUES (NEW.job, NEW.status, 1)
        ON CONFLICT (job, status) DO UPDATE SET n = n + 1;
END;

-- A run that finishes (or is closed as interrupted).
CREATE TRIGGER run_totals_finish AFTER UPDATE OF status ON runs
WHEN OLD.status = 'running' AND NEW.status != 'running'
BEGIN
    INSERT INTO run_totals (job, status, n) VALUES (NEW.job, NEW.status, 1)
        ON CONFLICT (job, status) DO UPDATE SET n = n + 1;
END;

-- The newest run of each outcome per job, and the history prune, by index.
CREATE INDEX runs_job_status_finished ON runs (job, status, finished_at);
CREATE INDEX runs_finished ON runs (finished_at);
CREATE INDEX alert_deliveries_created ON alert_deliveries (created_at);
