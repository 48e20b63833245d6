-- Point-in-time restores are journaled like logical ones: the data
-- directory they fill and the tablespace directories beside it, so a
-- restore killed anywhere is found by the next `drctl restore`, `status`
-- or daemon start, its server stopped and the directories it filled
-- (empty when it began) emptied again.
ALTER TABLE restore_journal ADD COLUMN datadir TEXT;
ALTER TABLE restore_journal ADD COLUMN spaces TEXT; -- JSON: ["/dir", ...]

-- A restore's `before` hooks and container stops are journaled before they
-- run, so the `after` hooks and container starts of a restore killed in
-- between are run by whoever finds it (the next restore, status or daemon
-- start); cleared once the restore brought the application back itself.
ALTER TABLE restore_journal ADD COLUMN app_stopped INTEGER NOT NULL DEFAULT 0;
ALTER TABLE restore_journal ADD COLUMN containers TEXT; -- JSON: ["name", ...] stopped
