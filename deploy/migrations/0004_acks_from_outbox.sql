-- 0004_acks_from_outbox: an ack's result is its outbox rows; new client
-- ids take the set-based path.
--
-- 1. Every ack stored its result, the after-image of every record it
--    touched, in weft_client_results, and its outbox rows hold the same
--    after-images. That was a second row of a few hundred bytes per
--    transaction, inserted and later deleted, and the table (the largest in
--    the database after a few benchmark runs) was vacuumed under load.
--    Now only rejections are stored there. A resend of an acked mid is
--    answered from the outbox rows the transaction wrote (one per touched
--    record, in the order the ack listed them), found by (client_id, mid).
--    They live until the relay prunes them (--outbox-retention, 1 h by
--    default); after that the resend gets ENOTFOUND, as one older than
--    --keep-results or --results-ttl always did, and is not applied again.
--    See docs/performance.md for what it changed.
-- 2. weft_apply_fast() applied a transaction only when its client row
--    existed at mid - 1, so a client id's first transaction (mid 1, no row
--    yet) went through weft_apply() alone, at about 0.4 ms. 256 clients
--    connecting at once queued for 100 ms. It now registers the ids of its
--    mid-1 transactions first, with last_mid 0, as weft_apply() would.
--    That changes nothing else: an id at last_mid 0 is a new id; an id
--    another user holds is left as it is (its transaction misses and
--    weft_apply() refuses it as foreign); two connections racing with one
--    new id's mid 1 serialise on the row, and the second misses and is
--    answered by weft_apply() as a replay.
--
-- The index is built in this migration's transaction, which holds writes
-- to the outbox meanwhile: about a second per million rows here.

CREATE INDEX weft_outbox_client ON weft_outbox (client_id, mid);

-- weft_outbox_json: an outbox row as the protocol's record element, the
-- same element weft_row_json() made of the record when the row was written.
CREATE FUNCTION weft_outbox_json(o weft_outbox) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
	SELECT jsonb_build_object('table', o.tbl, 'id', o.id,
		'space', o.space, 'ver', o.version) ||
	       CASE WHEN o.deleted THEN '{"deleted":true}'::jsonb
		    ELSE jsonb_build_object('data', o.data) END
$$;

-- weft_apply: as in 0002, but a result is stored only for a rejection, and
-- a resend of an ack is answered from its outbox rows.
CREATE OR REPLACE FUNCTION weft_apply(p_client text, p_user text, p_mid bigint,
			   p_ops jsonb, p_max_record int DEFAULT 0,
			   p_keep_results int DEFAULT 256,
			   p_reject jsonb DEFAULT NULL,
			   p_max_reply int DEFAULT 0)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
	c      weft_clients;
	res    jsonb;
	stored jsonb;
	o      jsonb := p_ops->0;
	rec    jsonb;
BEGIN
	-- the common case in one statement: p_mid is this client's next id
	UPDATE weft_clients SET last_mid = p_mid, updated_at = now()
		WHERE client_id = p_client AND user_id = p_user AND
		      last_mid = p_mid - 1;
	IF FOUND THEN
		c.last_mid := p_mid - 1;
	ELSE
	SELECT * INTO c FROM weft_clients WHERE client_id = p_client
		FOR UPDATE;
	IF NOT FOUND THEN  -- a new client id: it belongs to this user
		INSERT INTO weft_clients (client_id, user_id)
			VALUES (p_client, p_user)
			ON CONFLICT (client_id) DO NOTHING;
		SELECT * INTO c FROM weft_clients WHERE client_id = p_client
			FOR UPDATE;
	END IF;
	IF c.user_id <> p_user THEN
		RETURN '{"s":"foreign"}';
	END IF;
	IF p_mid <= c.last_mid THEN
		-- a rejection is stored; an ack is its outbox rows
		SELECT result INTO stored FROM weft_client_results
			WHERE client_id = p_client AND mid = p_mid;
		IF FOUND THEN
			RETURN stored || '{"replay":true}';
		END IF;
		SELECT jsonb_agg(weft_outbox_json(ob) ORDER BY ob.seq)
			INTO stored FROM weft_outbox ob
			WHERE ob.client_id = p_client AND ob.mid = p_mid;
		IF stored IS NULL THEN
			RETURN jsonb_build_object('s', 'expired', 'mid', p_mid);
		END IF;
		RETURN jsonb_build_object('s', 'ack', 'mid', p_mid,
					  'records', stored, 'replay', true);
	END IF;
	IF p_mid > c.last_mid + 1 THEN
		RETURN jsonb_build_object('s', 'gap', 'expected',
					  c.last_mid + 1);
	END IF;
	UPDATE weft_clients SET last_mid = p_mid, updated_at = now()
		WHERE client_id = p_client;
	END IF;
	IF p_reject IS NOT NULL THEN
		-- refused before reaching here (schema, limits): stored and
		-- advanced like any other rejection, so the client never wedges
		res := jsonb_build_object('s', 'reject', 'mid', p_mid) ||
		       p_reject;
	ELSE
	-- fast path: a transaction of one set/unset on a live record of an
	-- ordinary table the user may write, within the size limit, is one
	-- statement and needs no savepoint (it cannot half-apply); anything
	-- else, or a miss, takes the general path, which explains a refusal
	IF jsonb_array_length(p_ops) = 1 AND o->>'op' IN ('set', 'unset') AND
	   NOT o ? 'expect' AND o->>'table' NOT IN ('members', 'spaces') THEN
		WITH u AS (
			UPDATE weft_records SET
				data = CASE WHEN o->>'op' = 'set'
					THEN jsonb_set(data, ARRAY[o->>'field'],
						       o->'value', true)
					ELSE data - (o->>'field') END,
				version = version + 1, updated_at = now(),
				updated_by = p_user
			WHERE tbl = o->>'table' AND id = o->>'id' AND
			      NOT deleted AND
			      EXISTS (SELECT 1 FROM weft_members m
				      WHERE m.space = weft_records.space AND
					    m.user_id = p_user AND
					    m.role IN ('writer', 'admin')) AND
			      (p_max_record <= 0 OR octet_length((CASE
				WHEN o->>'op' = 'set' THEN jsonb_set(data,
					ARRAY[o->>'field'], o->'value', true)
				ELSE data - (o->>'field') END)::text)
				<= p_max_record)
			RETURNING tbl, id, space, version, data),
		ob AS (
			INSERT INTO weft_outbox (tbl, id, space, version, op,
				deleted, data, client_id, mid, user_id)
			SELECT tbl, id, space, version,
			       CASE WHEN o->>'op' = 'set' THEN 3 ELSE 4 END,
			       false, data, p_client, p_mid, p_user FROM u)
		SELECT jsonb_build_object('table', tbl, 'id', id,
			'space', space, 'ver', version, 'data', data)
		INTO rec FROM u;
	END IF;
	IF rec IS NOT NULL THEN
		res := jsonb_build_object('s', 'ack', 'mid', p_mid,
					  'records', jsonb_build_array(rec));
	ELSE
	BEGIN
		res := jsonb_build_object('s', 'ack', 'mid', p_mid,
			'records', weft_apply_ops(p_client, p_user, p_mid,
						  p_ops, p_max_record,
						  p_max_reply));
	EXCEPTION
		WHEN deadlock_detected OR serialization_failure OR
		     lock_not_available OR query_canceled OR
		     insufficient_resources OR operator_intervention OR
		     system_error THEN
			RAISE; /* passing conditions: retry, never reject */
		WHEN SQLSTATE 'WF001' THEN
			res := jsonb_build_object('s', 'reject',
				'mid', p_mid) || SQLERRM::jsonb;
		WHEN OTHERS THEN
			res := jsonb_build_object('s', 'reject', 'mid', p_mid,
				'code', -11, 'msg', format(
				'internal error (%s): %s', SQLSTATE, SQLERRM));
	END;
	END IF;
	END IF;
	IF res->>'s' = 'reject' THEN  -- an ack is kept by its outbox rows
		INSERT INTO weft_client_results (client_id, mid, result)
			VALUES (p_client, p_mid, res);
		DELETE FROM weft_client_results
			WHERE client_id = p_client
			AND mid <= p_mid - p_keep_results;
	END IF;
	RETURN res;
END
$$;


-- weft_apply_fast: as in 0002, but it registers the ids of first
-- transactions, and stores no result: an ack is kept by its outbox row.
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
	), res AS (
		SELECT u.n, u.client, u.mid,
		       jsonb_build_object('s', 'ack', 'mid', u.mid, 'records',
			       jsonb_build_array(jsonb_build_object(
				       'table', u.tbl, 'id', u.id,
				       'space', u.space, 'ver', u.version,
				       'data', u.data))) AS r
		FROM u
	)
	SELECT res.n::int, res.r::text FROM res;
END
$$;
