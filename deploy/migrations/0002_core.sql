-- 0002_core: the tables weft-write owns and the function that applies one
-- client transaction (DESIGN.md §2-§4).
--
-- Everything an app stores is a record in weft_records, including the two
-- system tables `spaces` and `members`, so membership changes reach clients
-- through the outbox like any other change. weft_spaces and weft_members are
-- indexes derived from those records in the same transaction; they are what
-- authorisation reads.
--
-- Error codes returned in results are weft_err values (client/include/weft/
-- error.h): -2 EINVAL, -8 ENOTFOUND, -9 EEXIST, -11 EINTERNAL, -22 EPERM,
-- -30 EVALIDATION, -31 ECONFLICT, -33 ELIMIT.

CREATE TABLE weft_records (
	tbl        text        NOT NULL,
	id         text        NOT NULL,
	space      text        NOT NULL,
	version    bigint      NOT NULL CHECK (version >= 1),
	data       jsonb,                  -- NULL exactly for tombstones
	deleted    boolean     NOT NULL DEFAULT false,
	created_at timestamptz NOT NULL DEFAULT now(),
	updated_at timestamptz NOT NULL DEFAULT now(),
	updated_by text        NOT NULL,
	PRIMARY KEY (tbl, id),
	CHECK (deleted = (data IS NULL))
) WITH (fillfactor = 80);  -- room on each page for HOT updates of a row
-- bootstrap lists a space in a stable order: (space, tbl, id)
CREATE INDEX weft_records_space ON weft_records (space, tbl, id);

-- One row per changed record per transaction, with the after-image. seq is
-- for inspection and pruning only: the relay reads this table through
-- logical decoding, in commit order, never by seq.
CREATE TABLE weft_outbox (
	seq        bigserial   PRIMARY KEY,
	tbl        text        NOT NULL,
	id         text        NOT NULL,
	space      text        NOT NULL,
	prev_space text,                   -- set when the record moved
	version    bigint      NOT NULL,
	op         smallint    NOT NULL,   -- enum proto_op_kind of the last op
	deleted    boolean     NOT NULL,
	data       jsonb,
	client_id  text        NOT NULL,
	mid        bigint      NOT NULL,
	user_id    text        NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);
-- pruning by age: rows arrive in time order, so a BRIN index (a few
-- pages, next to free to maintain) finds old ones as well as a btree
CREATE INDEX weft_outbox_created ON weft_outbox USING brin (created_at);
CREATE PUBLICATION weft_outbox_pub FOR TABLE weft_outbox
	WITH (publish = 'insert');

-- A client id belongs to one user; last_mid is the last mutation applied
-- (or rejected) for it, so ids are dense and each applies once.
CREATE TABLE weft_clients (
	client_id  text        PRIMARY KEY,
	user_id    text        NOT NULL,
	last_mid   bigint      NOT NULL DEFAULT 0,
	updated_at timestamptz NOT NULL DEFAULT now()
) WITH (fillfactor = 50);  -- updated once per mutation: keep updates HOT

-- The stored result of recent mutations, returned again on a resend.
-- client_id is a weft_clients id, but not a foreign key: client rows are
-- never deleted, and the key's trigger cost 18 us per mutation.
CREATE TABLE weft_client_results (
	client_id text   NOT NULL,
	mid       bigint NOT NULL,
	result    jsonb  NOT NULL,
	PRIMARY KEY (client_id, mid)
);

CREATE TABLE weft_spaces (
	id         text        PRIMARY KEY,
	created_by text        NOT NULL,
	created_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE weft_members (
	space   text NOT NULL REFERENCES weft_spaces ON DELETE CASCADE,
	user_id text NOT NULL,
	role    text NOT NULL CHECK (role IN ('reader', 'writer', 'admin')),
	PRIMARY KEY (space, user_id)
);
CREATE INDEX weft_members_user ON weft_members (user_id);

-- weft_role_rank: reader 1 < writer 2 < admin 3; no membership 0.
-- PL/pgSQL, not SQL: a SQL function called from PL/pgSQL is planned
-- afresh on every call (about 90 us here); this one keeps its plan.
CREATE FUNCTION weft_role_rank(p_space text, p_user text) RETURNS int
LANGUAGE plpgsql STABLE AS $$
DECLARE
	r text;
BEGIN
	SELECT role INTO r FROM weft_members
		WHERE space = p_space AND user_id = p_user;
	RETURN CASE r WHEN 'reader' THEN 1 WHEN 'writer' THEN 2
		      WHEN 'admin' THEN 3 ELSE 0 END;
END
$$;

-- weft_reject: abandon the current client transaction with a reason. The
-- caller's EXCEPTION block rolls back that transaction's effects only.
CREATE FUNCTION weft_reject(p_code int, p_msg text, p_opnum int,
			    p_field text, p_tbl text, p_id text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	RAISE EXCEPTION USING ERRCODE = 'WF001',
		MESSAGE = jsonb_build_object('code', p_code, 'msg', p_msg,
			'opnum', p_opnum, 'field', p_field,
			'table', p_tbl, 'id', p_id)::text;
END
$$;

-- weft_need_role: reject unless p_user has at least p_rank in p_space.
CREATE FUNCTION weft_need_role(p_space text, p_user text, p_rank int,
			       p_opnum int, p_tbl text, p_id text)
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
	IF weft_role_rank(p_space, p_user) < p_rank THEN
		PERFORM weft_reject(-22, format('user %s needs the %s role in '
			'space %s', quote_literal(p_user),
			CASE p_rank WHEN 3 THEN 'admin' WHEN 2 THEN 'writer'
			ELSE 'reader' END, quote_literal(p_space)),
			p_opnum, NULL, p_tbl, p_id);
	END IF;
END
$$;

-- weft_row_json: a record as the protocol's record element.
CREATE FUNCTION weft_row_json(r weft_records) RETURNS jsonb
LANGUAGE sql IMMUTABLE AS $$
	SELECT jsonb_build_object('table', r.tbl, 'id', r.id,
		'space', r.space, 'ver', r.version) ||
	       CASE WHEN r.deleted THEN '{"deleted":true}'::jsonb
		    ELSE jsonb_build_object('data', r.data) END
$$;

-- weft_apply_ops: apply the ops of one client transaction; raise WF001
-- (weft_reject) to reject it.  Returns the touched records.
--
-- Each op applies to the latest committed row (locked FOR UPDATE), so
-- concurrent field-level sets from two clients both land, last writer
-- wins per field, in commit order.  A record touched by several ops of one
-- transaction gets one version bump and one outbox row.
CREATE FUNCTION weft_apply_ops(p_client text, p_user text, p_mid bigint,
			       p_ops jsonb, p_max_record int,
			       p_max_reply int DEFAULT 0)
RETURNS jsonb LANGUAGE plpgsql AS $$
DECLARE
	o        jsonb;
	n        int := 0;
	k        text;
	t        text;
	i        text;
	sp       text;
	fld      text;
	val      jsonb;
	r        weft_records;
	cur      jsonb;
	arr      jsonb;
	ex       boolean;                 -- the record exists (maybe deleted)
	touched  text[] := '{}';          -- 'tbl' || E'\x1f' || 'id'
	last_op  jsonb := '{}';           -- key -> op code
	moved    jsonb := '{}';           -- key -> previous space
	kinds    CONSTANT jsonb := '{"create":1,"put":2,"set":3,"unset":4,
		"delete":5,"list_add":6,"list_remove":7,"incr":8}';
	result   jsonb := '[]';
	key      text;
	total    bigint := 0;          -- bytes of the rows the reply carries
BEGIN
	FOR o IN SELECT * FROM jsonb_array_elements(p_ops) LOOP
		n := n + 1;
		k := o->>'op';
		t := o->>'table';
		i := o->>'id';
		fld := o->>'field';
		val := o->'value';
		key := t || E'\x1f' || i;
		-- fast path: one statement for a field op on a live record of
		-- an ordinary table the user may write; anything else (or a
		-- miss) takes the general path below, which explains a refusal
		IF k IN ('set', 'unset') AND NOT o ? 'expect' AND
		   t NOT IN ('members', 'spaces') THEN
			UPDATE weft_records SET
				data = CASE WHEN k = 'set'
					THEN jsonb_set(data, ARRAY[fld], val, true)
					ELSE data - fld END,
				version = CASE WHEN key = ANY(touched)
					THEN version ELSE version + 1 END,
				updated_at = now(), updated_by = p_user
			WHERE tbl = t AND id = i AND NOT deleted AND
			      EXISTS (SELECT 1 FROM weft_members m
				      WHERE m.space = weft_records.space AND
					    m.user_id = p_user AND
					    m.role IN ('writer', 'admin'))
			RETURNING * INTO r;
			IF FOUND THEN
				cur := r.data;
				IF p_max_record > 0 AND
				   octet_length(cur::text) > p_max_record THEN
					PERFORM weft_reject(-33, format('%s/%s '
						'would be %s bytes, over the '
						'%s-byte record limit', t, i,
						octet_length(cur::text),
						p_max_record), n, NULL, t, i);
				END IF;
				IF NOT key = ANY(touched) THEN
					touched := touched || key;
				END IF;
				last_op := last_op ||
					   jsonb_build_object(key, kinds->k);
				CONTINUE;
			END IF;
		END IF;
		SELECT * INTO r FROM weft_records WHERE tbl = t AND id = i
			FOR UPDATE;
		ex := FOUND;  -- FOUND changes with every PERFORM below
		IF o ? 'expect' AND (NOT ex OR
				      r.version <> (o->>'expect')::bigint) THEN
			PERFORM weft_reject(-31, format('%s/%s is at version '
				'%s, expected %s', t, i,
				coalesce(r.version::text, 'none'),
				o->>'expect'), n, NULL, t, i);
		END IF;
		IF k = 'create' THEN
			sp := o->>'space';
			cur := o->'data';
			IF ex AND NOT r.deleted THEN
				PERFORM weft_reject(-9, format('%s/%s already '
					'exists', t, i), n, NULL, t, i);
			END IF;
			IF t = 'spaces' THEN
				IF sp <> i THEN
					PERFORM weft_reject(-30, 'a space '
						'record''s space is its own id',
						n, 'space', t, i);
				END IF;
				IF EXISTS (SELECT 1 FROM weft_spaces
					   WHERE id = i) THEN
					PERFORM weft_reject(-9, format(
						'space %s already exists', i),
						n, NULL, t, i);
				END IF;
				-- a deleted space's id is never reused: its old
				-- records would come with it to the new owner
				IF EXISTS (SELECT 1 FROM weft_records
					   WHERE space = i AND
						 NOT (tbl = 'spaces' AND id = i))
				THEN
					PERFORM weft_reject(-9, format(
						'space id %s was used before and '
						'cannot be reused', i),
						n, NULL, t, i);
				END IF;
				-- the creator is its first admin, as a members
				-- record (so it syncs) and at once in the
				-- derived index (so later ops of this same
				-- transaction may write in the new space)
				INSERT INTO weft_spaces (id, created_by)
					VALUES (i, p_user);
				INSERT INTO weft_members (space, user_id, role)
					VALUES (i, p_user, 'admin');
				INSERT INTO weft_records AS m (tbl, id, space,
					version, data, updated_by)
				VALUES ('members', i || ':' || p_user, i, 1,
					jsonb_build_object('user', p_user,
							   'role', 'admin'),
					p_user)
				ON CONFLICT (tbl, id) DO UPDATE SET
					space = excluded.space,
					data = excluded.data, deleted = false,
					version = m.version + 1,
					updated_at = now(),
					updated_by = p_user;
				key := 'members' || E'\x1f' || i || ':' ||
				       p_user;
				touched := touched || key;
				last_op := last_op || jsonb_build_object(key, 1);
				key := t || E'\x1f' || i;
			ELSE
				IF NOT EXISTS (SELECT 1 FROM weft_spaces
					       WHERE id = sp) THEN
					PERFORM weft_reject(-8, format(
						'no space %s', sp), n, 'space',
						t, i);
				END IF;
				PERFORM weft_need_role(sp, p_user,
					CASE WHEN t = 'members' THEN 3 ELSE 2
					END, n, t, i);
			END IF;
			IF ex AND r.space <> sp THEN
				-- re-creating in another space moves the id:
				-- the old space must allow it and hear of it
				PERFORM weft_need_role(r.space, p_user, 2, n, t,
						       i);
				IF NOT moved ? key THEN
					moved := moved ||
						jsonb_build_object(key, r.space);
				END IF;
			END IF;
			IF ex THEN         -- re-create over a tombstone
				UPDATE weft_records SET space = sp,
					data = o->'data', deleted = false,
					version = CASE WHEN key = ANY(touched)
						THEN version ELSE version + 1 END,
					updated_at = now(), updated_by = p_user
				WHERE tbl = t AND id = i;
			ELSE
				INSERT INTO weft_records (tbl, id, space,
					version, data, updated_by)
				VALUES (t, i, sp, 1, o->'data', p_user);
				touched := touched || key;  -- version 1 is its bump
			END IF;
		ELSE
			IF NOT ex OR r.deleted THEN
				PERFORM weft_reject(-8, format('no record %s/%s',
					t, i), n, NULL, t, i);
			END IF;
			sp := r.space;
			PERFORM weft_need_role(sp, p_user,
				CASE WHEN t IN ('members', 'spaces') THEN 3
				ELSE 2 END, n, t, i);
			cur := r.data;
			IF k = 'put' THEN
				IF o ? 'space' AND o->>'space' <> r.space THEN
					IF t IN ('spaces', 'members') THEN
						PERFORM weft_reject(-30,
							'system records cannot '
							'move between spaces',
							n, 'space', t, i);
					END IF;
					PERFORM weft_need_role(o->>'space',
						p_user, 2, n, t, i);
					IF NOT moved ? key THEN
						moved := moved ||
						  jsonb_build_object(key, r.space);
					END IF;
					sp := o->>'space';
				END IF;
				cur := o->'data';
			ELSIF k = 'set' THEN
				cur := jsonb_set(cur, ARRAY[fld], val, true);
			ELSIF k = 'unset' THEN
				cur := cur - fld;
			ELSIF k = 'delete' THEN
				IF t = 'spaces' THEN
					DELETE FROM weft_spaces WHERE id = i;
				END IF;
				cur := NULL;
			ELSIF k IN ('list_add', 'list_remove') THEN
				arr := coalesce(cur->fld, '[]');
				IF jsonb_typeof(arr) <> 'array' THEN
					PERFORM weft_reject(-30, format('field '
						'%s of %s/%s is not a list', fld,
						t, i), n, fld, t, i);
				END IF;
				IF k = 'list_add' THEN
					IF NOT EXISTS (SELECT 1 FROM
						jsonb_array_elements(arr) e
						WHERE e = val) THEN
						arr := arr || jsonb_build_array(val);
					END IF;
				ELSE
					SELECT coalesce(jsonb_agg(e ORDER BY
						ord), '[]') INTO arr FROM
						jsonb_array_elements(arr)
						WITH ORDINALITY AS x(e, ord)
						WHERE e <> val;
				END IF;
				cur := jsonb_set(cur, ARRAY[fld], arr, true);
			ELSIF k = 'incr' THEN
				arr := coalesce(cur->fld, '0');
				IF jsonb_typeof(arr) <> 'number' THEN
					PERFORM weft_reject(-30, format('field '
						'%s of %s/%s is not a number',
						fld, t, i), n, fld, t, i);
				END IF;
				cur := jsonb_set(cur, ARRAY[fld], to_jsonb(
					(arr#>>'{}')::numeric +
					(val#>>'{}')::numeric), true);
			ELSE
				PERFORM weft_reject(-2, format('unknown op %s',
					k), n, NULL, t, i);
			END IF;
			UPDATE weft_records SET space = sp, data = cur,
				deleted = (cur IS NULL),
				version = CASE WHEN key = ANY(touched)
					THEN version ELSE version + 1 END,
				updated_at = now(), updated_by = p_user
			WHERE tbl = t AND id = i;
		END IF;
		IF p_max_record > 0 AND cur IS NOT NULL AND
		   octet_length(cur::text) > p_max_record THEN
			PERFORM weft_reject(-33, format('%s/%s would be %s '
				'bytes, over the %s-byte record limit', t, i,
				octet_length(cur::text), p_max_record), n,
				NULL, t, i);
		END IF;
		IF NOT key = ANY(touched) THEN
			touched := touched || key;
		END IF;
		last_op := last_op || jsonb_build_object(key, kinds->k);
	END LOOP;

	-- derived authorisation state, then the outbox, then the reply rows
	FOREACH key IN ARRAY touched LOOP
		SELECT * INTO r FROM weft_records
			WHERE tbl = split_part(key, E'\x1f', 1)
			AND id = split_part(key, E'\x1f', 2);
		IF r.tbl = 'members' THEN
			IF r.deleted THEN
				DELETE FROM weft_members
				WHERE space = r.space AND user_id =
				      substr(r.id, length(r.space) + 2);
			ELSE
				IF coalesce(r.data->>'role', '') NOT IN
					('reader', 'writer', 'admin') OR
				   r.id IS DISTINCT FROM
					r.space || ':' || (r.data->>'user') THEN
					PERFORM weft_reject(-30, 'a members '
						'record has id <space>:<user>, '
						'data.user = <user> and a role '
						'of reader, writer or admin',
						NULL, NULL, r.tbl, r.id);
				END IF;
				INSERT INTO weft_members (space, user_id, role)
				VALUES (r.space, r.data->>'user',
					r.data->>'role')
				ON CONFLICT (space, user_id)
				DO UPDATE SET role = excluded.role;
			END IF;
		END IF;
		INSERT INTO weft_outbox (tbl, id, space, prev_space, version,
			op, deleted, data, client_id, mid, user_id)
		VALUES (r.tbl, r.id, r.space, moved->>key, r.version,
			(last_op->>key)::smallint, r.deleted, r.data, p_client,
			p_mid, p_user);
		result := result || weft_row_json(r);
		total := total + coalesce(octet_length(r.data::text), 0);
	END LOOP;
	-- the ack carries every touched row: keep it sendable (and its
	-- stored copy resendable), or the client could never get an answer
	IF p_max_reply > 0 AND total > p_max_reply THEN
		PERFORM weft_reject(-33, format('the records this transaction '
			'touches total %s bytes, over the %s-byte reply limit; '
			'split it', total, p_max_reply), NULL, NULL, NULL,
			NULL);
	END IF;
	RETURN result;
END
$$;

-- weft_apply: one client transaction, exactly once.  Never raises for a
-- client's mistake: the EXCEPTION block is a savepoint per client
-- transaction, so a rejection rolls back that transaction only and many
-- client transactions can share one Postgres transaction (group commit).
-- Transient failures (deadlock, serialisation, shutdown) are re-raised:
-- the whole group is retried, and nothing was stored.
--
-- Result (jsonb):
--   {"s":"ack","mid":N,"records":[...]}            applied
--   {"s":"reject","mid":N,"code":C,"msg":...}      rejected, id advanced
--   either of those with "replay":true             a resend of N
--   {"s":"gap","expected":E}                       N skips ahead
--   {"s":"expired","mid":N}                        N applied, result gone
--   {"s":"foreign"}                                client id of another user
--
-- p_reject, when set, is a rejection decided before the database (schema
-- validation, limits): it is stored and advances the id like any other.
CREATE FUNCTION weft_apply(p_client text, p_user text, p_mid bigint,
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
		SELECT result INTO stored FROM weft_client_results
			WHERE client_id = p_client AND mid = p_mid;
		IF NOT FOUND THEN
			RETURN jsonb_build_object('s', 'expired', 'mid', p_mid);
		END IF;
		RETURN stored || '{"replay":true}';
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
	INSERT INTO weft_client_results (client_id, mid, result)
		VALUES (p_client, p_mid, res);
	IF p_mid % 32 = 0 THEN  -- prune in steps: keeps at most keep + 31
		DELETE FROM weft_client_results
			WHERE client_id = p_client
			AND mid <= p_mid - p_keep_results;
	END IF;
	RETURN res;
END
$$;

-- weft_apply_fast: the common case of group commit, set-based.  Many client
-- transactions of one `set` or `unset` each (p_ops: 3 set, 4 unset), as
-- parallel arrays, applied by one statement rather than one weft_apply()
-- each (about 55 us per transaction here, against 200).
--
-- The caller passes at most one transaction per client.  A transaction
-- applies here only when all is plain: its client row exists, belongs to
-- p_users[n] and is at p_mids[n] - 1; the record is live, in a space where
-- the user is writer or admin; the new row is within p_max_record.  Two
-- transactions on one record: one applies, the other misses.  Returns
-- (n, result) for each transaction applied, with the result weft_apply()
-- would have stored (and stores it).  The caller then sends every other
-- transaction through weft_apply(), in order, which applies it or explains
-- the refusal.  Ops on the system tables never come here.
CREATE FUNCTION weft_apply_fast(p_clients text[], p_users text[],
				p_mids bigint[], p_tbls text[], p_ids text[],
				p_ops smallint[], p_fields text[],
				p_values jsonb[], p_max_record int,
				p_keep_results int)
RETURNS TABLE (o_n int, o_result text) LANGUAGE plpgsql AS $$
BEGIN
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
	), st AS (
		INSERT INTO weft_client_results (client_id, mid, result)
		SELECT res.client, res.mid, res.r FROM res
	), pr AS (  -- prune in steps, as weft_apply() does
		DELETE FROM weft_client_results x USING u
		WHERE u.mid % 32 = 0 AND x.client_id = u.client AND
		      x.mid <= u.mid - p_keep_results
	)
	SELECT res.n::int, res.r::text FROM res;
END
$$;
