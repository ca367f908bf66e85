-- 0008_fast_ack_text: weft_apply_fast() writes its answers as text.
--
-- Each answer of the set-based path was built with jsonb_build_object() and
-- then cast to text. That costs about 12 µs per answer in Postgres (50,000
-- answers in a query: 612 ms), a tenth of Postgres' CPU per write under
-- load, mostly in resolving the type of every argument on every call. The
-- answer is now concatenated from its parts: to_json() quotes the table, id
-- and space, and the after-image is jsonb's own text (about 3 µs an
-- answer). weft-write parses the same object as before; only the
-- whitespace differs.
--
-- weft_apply_fast as in 0004, with that one change.
CREATE OR REPLACE FUNCTION weft_apply_fast(p_clients text[], p_users text[],
				p_mids bigint[], p_tbls text[], p_ids text[],
				p_ops smallint[], p_fields text[],
				p_values jsonb[], p_max_record int,
				p_keep_results int)
RETURNS TABLE (o_n int, o_result text) LANGUAGE plpgsql AS $$
BEGIN
	IF 1 = ANY (p_mids) THEN  -- first transactions: register their ids
		INSERT INTO weft_clients (client_id, user_id)
			SELECT x.client, x.usr
			FROM unnest(p_clients, p_users, p_mids)
				AS x(client, usr, mid)
			WHERE x.mid = 1
			ORDER BY x.client  -- one lock order for every group
			ON CONFLICT (client_id) DO NOTHING;
	END IF;
	RETURN QUERY
	WITH i AS (
		SELECT * FROM unnest(p_clients, p_users, p_mids, p_tbls, p_ids,
				     p_ops, p_fields, p_values) WITH ORDINALITY
			AS x(client, usr, mid, tbl, id, op, field, val, n)
		WHERE x.tbl NOT IN ('members', 'spaces') AND x.op IN (3, 4)
	), c AS (
		-- lock the client rows: no one else advances them meanwhile
		SELECT i.* FROM i JOIN weft_clients wc
			ON wc.client_id = i.client AND wc.user_id = i.usr AND
			   wc.last_mid = i.mid - 1
		ORDER BY i.tbl, i.id  -- the order records are locked in
		FOR UPDATE OF wc
	), u AS (
		UPDATE weft_records r SET
			data = CASE WHEN c.op = 3
				THEN jsonb_set(r.data, ARRAY[c.field], c.val,
					       true)
				ELSE r.data - c.field END,
			version = r.version + 1, updated_at = now(),
			updated_by = c.usr
		FROM c
		WHERE r.tbl = c.tbl AND r.id = c.id AND NOT r.deleted AND
		      EXISTS (SELECT 1 FROM weft_members m
			      WHERE m.space = r.space AND m.user_id = c.usr AND
				    m.role IN ('writer', 'admin')) AND
		      (p_max_record <= 0 OR octet_length((CASE WHEN c.op = 3
				THEN jsonb_set(r.data, ARRAY[c.field], c.val,
					       true)
				ELSE r.data - c.field END)::text)
			<= p_max_record)
		RETURNING c.n, c.client, c.usr, c.mid, c.op, r.tbl, r.id,
			  r.space, r.version, r.data
	), ob AS (
		INSERT INTO weft_outbox (tbl, id, space, version, op, deleted,
					 data, client_id, mid, user_id)
		SELECT u.tbl, u.id, u.space, u.version, u.op, false, u.data,
		       u.client, u.mid, u.usr FROM u
	), cu AS (
		UPDATE weft_clients wc SET last_mid = u.mid, updated_at = now()
		FROM u WHERE wc.client_id = u.client
	)
	SELECT u.n::int,
	       '{"s":"ack","mid":' || u.mid || ',"records":[{"table":' ||
	       to_json(u.tbl)::text || ',"id":' || to_json(u.id)::text ||
	       ',"space":' || to_json(u.space)::text || ',"ver":' ||
	       u.version || ',"data":' || u.data::text || '}]}'
	FROM u;
END
$$;
