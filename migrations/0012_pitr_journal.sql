-- Point-in-time restores are journaled like logical ones: the data
-- directory they fill and the tablespace directories beside it, so a
-- restore killed anywhere is found by the next `drctl restore`, `status`
-- or daemon start, its server stopped and the directories it filled
-- (empty when it began) emptied again.
ALTER TABLE restore_journal ADD COLUMN datadir TEXT;
ALTER TABLE restore_journal ADD COLUMN spaces TEXT; -- JSON: ["/dir", ...]
