-- 0006_tombstone_gc_scan: the tombstone pass walks the tombstones in key
-- order, a batch at a time, instead of searching them all for old ones on
-- every batch.
--
-- weft_gc_tombstones() (0005) read every tombstone not yet old enough in
-- each batch, and one pass deleted at most 100,000: with millions of recent
-- tombstones a batch could outlast its statement timeout, and a database
-- deleting more than about 28 records a second would have gained
-- tombstones faster than the hourly pass removed them. The pass now reads
-- each tombstone once: a batch takes the next p_limit tombstones after
-- (p_tbl, p_id) in the partial index's order, deletes the old ones among
-- them, and says where it stopped. weft-write carries the position from
-- batch to batch, and from pass to pass when a pass stops early.

DROP FUNCTION weft_gc_tombstones(bigint, int);

-- weft_gc_tombstones_from: look at up to p_limit tombstones after
-- (p_tbl, p_id); delete those older than p_age_ms and raise their tables'
-- floors. Returns how many went, how many were looked at (fewer than
-- p_limit: the end), and the last key looked at.
CREATE FUNCTION weft_gc_tombstones_from(p_age_ms bigint, p_limit int,
					p_tbl text, p_id text)
RETURNS TABLE (o_deleted bigint, o_scanned bigint, o_tbl text, o_id text)
LANGUAGE sql AS $$
	WITH s AS MATERIALIZED (
		SELECT ctid, tbl, id, updated_at FROM weft_records
		WHERE deleted AND (tbl, id) > (p_tbl, p_id)
		ORDER BY tbl, id
		LIMIT p_limit
	), d AS (
		DELETE FROM weft_records WHERE ctid = ANY (ARRAY(
			SELECT ctid FROM s WHERE updated_at <
				now() - p_age_ms * interval '1 millisecond'))
		      AND deleted  -- re-created meanwhile: live, it stays
		RETURNING tbl, version
	), f AS (
		INSERT INTO weft_version_floor (tbl, floor)
		SELECT tbl, max(version) FROM d GROUP BY tbl
		ON CONFLICT (tbl) DO UPDATE SET floor =
			greatest(weft_version_floor.floor, excluded.floor)
	), l AS (
		SELECT tbl, id FROM s ORDER BY tbl DESC, id DESC LIMIT 1
	)
	SELECT (SELECT count(*) FROM d), (SELECT count(*) FROM s),
	       (SELECT tbl FROM l), (SELECT id FROM l)
$$;
