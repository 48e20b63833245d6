-- The live database's write counters (pg_stat_database) as a restore or
-- undo left it, so that an undo's plan can say how much was written since
-- (what the undo takes out of the live database).
ALTER TABLE restore_journal ADD COLUMN writes TEXT; -- JSON: undo::Writes
