-- 0005_tombstone_gc: tombstones are deleted once they are old.
--
-- A deleted record stays as a tombstone (deleted, a version bump) so that
-- subscribers hear of the delete. They hear of it through the change log:
-- pushes, and catch-up from the stream, which keeps its own copy. A
-- bootstrap or fetch that no longer finds the record tells a client just as
-- well (libweft sweeps what a space's bootstrap did not list, and drops
-- what a record subscription's fetch reports missing). So weft-write
-- deletes tombstones older than --tombstone-ttl (7 days by default),
-- instead of keeping every deleted record forever.
--
-- A record created again after its tombstone is gone must not start over
-- at version 1: a client still holding the tombstone, at a higher version,
-- would ignore the new record. Each table keeps the highest version of the
-- tombstones deleted from it, and a record inserted into that table starts
-- above it.

CREATE TABLE weft_version_floor (
	tbl   text   PRIMARY KEY,
	floor bigint NOT NULL   -- highest version of a deleted tombstone
);

-- the tombstones alone, to find the old ones without reading every record.
-- Only columns a set or unset never changes, so those updates stay HOT.
CREATE INDEX weft_records_tombstones ON weft_records (tbl, id)
	WHERE deleted;

CREATE FUNCTION weft_above_floor() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
	f bigint;
BEGIN
	SELECT floor INTO f FROM weft_version_floor WHERE tbl = NEW.tbl;
	IF f IS NOT NULL AND NEW.version <= f THEN
		NEW.version := f + 1;
	END IF;
	RETURN NEW;
END
$$;

CREATE TRIGGER weft_records_above_floor BEFORE INSERT ON weft_records
	FOR EACH ROW EXECUTE FUNCTION weft_above_floor();

-- weft_gc_tombstones: delete up to p_limit tombstones older than p_age_ms
-- and raise their tables' floors, in one statement. A tombstone re-created
-- meanwhile is live again and stays. Returns how many went.
CREATE FUNCTION weft_gc_tombstones(p_age_ms bigint, p_limit int)
RETURNS bigint LANGUAGE sql AS $$
	WITH d AS (
		DELETE FROM weft_records WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM weft_records
			WHERE deleted AND updated_at <
			      now() - p_age_ms * interval '1 millisecond'
			LIMIT p_limit)) AND deleted
		RETURNING tbl, version
	), f AS (
		INSERT INTO weft_version_floor (tbl, floor)
		SELECT tbl, max(version) FROM d GROUP BY tbl
		ON CONFLICT (tbl) DO UPDATE SET floor =
			greatest(weft_version_floor.floor, excluded.floor)
	)
	SELECT count(*) FROM d
$$;
