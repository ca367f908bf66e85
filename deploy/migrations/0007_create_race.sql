-- 0007_create_race: two transactions that create the same id at the same
-- moment.
--
-- weft_apply_ops() looks a record up (FOR UPDATE) before it creates it. When
-- the id is new (or its tombstone was deleted, 0005), there is no row to
-- lock, so two groups can both decide to insert it. The second insert waits
-- for the first transaction and then fails with a unique violation, which
-- weft_apply() turned into an internal-error rejection (-11, SQLSTATE
-- 23505). It is now the rejection a create of an existing id gets: EEXIST
-- (-9). It still advances the client's mid and stores the rejection, like
-- any other.
--
-- weft_apply as in 0004, with that one handler added.
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
		WHEN unique_violation THEN
			-- another transaction created the same id (or space)
			-- at the same time: the insert met its row only once
			-- it committed
			res := jsonb_build_object('s', 'reject', 'mid', p_mid,
				'code', -9, 'msg', 'already exists: another '
				'transaction created it at the same time');
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

