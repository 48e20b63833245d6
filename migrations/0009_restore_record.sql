-- Every restore is a record and an RTO: what it was (a restore or an undo),
-- who started it (an operator or a drill), how long each phase took and
-- whether the service checks after it passed.
ALTER TABLE restore_journal ADD COLUMN action TEXT NOT NULL DEFAULT 'restore'; -- restore | undo
ALTER TABLE restore_journal ADD COLUMN origin TEXT NOT NULL DEFAULT 'operator'; -- operator | drill
ALTER TABLE restore_journal ADD COLUMN phases TEXT;    -- JSON: [{"phase", "seconds", "ok"}]
ALTER TABLE restore_journal ADD COLUMN total_ms INTEGER; -- wall time of the whole restore (the RTO)
ALTER TABLE restore_journal ADD COLUMN health TEXT;    -- passed | failed: the `verify` checks; NULL without any
