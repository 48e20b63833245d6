-- What a drill's restore processed, in bytes (a point-in-time drill: the base
-- backup's raw size plus the WAL it replayed), so that a restore's dry run can
-- estimate its time from the rate past drills of the same job achieved.
ALTER TABLE drills ADD COLUMN work_bytes INTEGER;
