/*
 * txn.c - transactions: building them, committing them to the view and
 * the queue in one SQLite transaction, undo / redo, and rebasing the view
 * of a record over the queue.
 *
 * Invariant: for every record, weft_rows holds its confirmed row with
 * every queued transaction that touches the record applied in mutation-id
 * order (a transaction that no longer applies is left out), and its
 * pending count is the number of those transactions.  The confirmed row
 * is in weft_base while that count is above zero, and is the view row
 * itself when it is zero (store.c).  commit() keeps this by moving the
 * view row aside on a record's first queued transaction and applying the
 * new transaction to the current view; everything that changes the base
 * or the queue calls rebase(), which drops the base row once the queue
 * has left the record.  A transaction of only set and unset on live rows
 * (the common edit) is applied by SQLite's JSON functions in place
 * (commit_fast); everything else goes through a jansson tree of the row
 * (apply.c), as rebases do.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "client/src/internal.h"
#include "proto/json.h"

#include "common/banned.h"

/* TXN_MAX_OPS - ops in one transaction: weft-write's default --max-ops,
 * so a transaction the client accepts is one the server accepts */
#define TXN_MAX_OPS 256

/* an op that owns its strings and values */
struct oop {
	struct proto_op op; /* points into the fields below */
	char *table, *id, *space, *field;
	uint8_t *value, *data;
};

struct oplist {
	struct oop *v;
	size_t n, cap;
};

struct weft_txn {
	weft_store *st;
	struct oplist ops;
};

static void
oplist_fini(struct oplist *l)
{
	for (size_t i = 0; i < l->n; i++) {
		struct oop *o = &l->v[i];

		free(o->table);
		free(o->id);
		free(o->space);
		free(o->field);
		free(o->value);
		free(o->data);
	}
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static char *
dup_str(struct proto_str s)
{
	return s.p ? strndup(s.p, s.len) : NULL;
}

static uint8_t *
dup_bytes(struct proto_bytes b)
{
	uint8_t *p;

	if (!b.p)
		return NULL;
	p = malloc(b.len ? b.len : 1);
	if (p)
		memcpy(p, b.p, b.len);
	return p;
}

/* append a copy of op (its strings and bytes owned by the list) */
static int
oplist_add(struct oplist *l, const struct proto_op *op)
{
	struct oop *o;

	if (l->n == l->cap) {
		size_t cap = l->cap ? l->cap * 2 : 4;
		struct oop *v = realloc(l->v, cap * sizeof(*v));

		if (!v)
			return WEFT_ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	o = &l->v[l->n];
	memset(o, 0, sizeof(*o));
	o->table = dup_str(op->table);
	o->id = dup_str(op->id);
	o->space = dup_str(op->space);
	o->field = dup_str(op->field);
	o->value = dup_bytes(op->value);
	o->data = dup_bytes(op->data);
	o->op = *op;
	o->op.table = proto_str_c(o->table);
	o->op.id = proto_str_c(o->id);
	o->op.space = proto_str_c(o->space);
	o->op.field = proto_str_c(o->field);
	o->op.value.p = o->value;
	o->op.data.p = o->data;
	l->n++;
	if (!o->table || !o->id || (op->space.p && !o->space) ||
	    (op->field.p && !o->field) || (op->value.p && !o->value) ||
	    (op->data.p && !o->data))
		return WEFT_ENOMEM; /* freed with the list */
	return 0;
}

/* append src's ops to l, taking their strings and values (src keeps
 * none of them; the caller still finis it) */
static int
oplist_move(struct oplist *l, struct oplist *src)
{
	if (l->n + src->n > l->cap) {
		size_t cap = l->cap ? l->cap : 4;
		struct oop *v;

		while (cap < l->n + src->n)
			cap *= 2;
		if (!(v = realloc(l->v, cap * sizeof(*v))))
			return WEFT_ENOMEM;
		l->v = v;
		l->cap = cap;
	}
	memcpy(l->v + l->n, src->v, src->n * sizeof(*src->v));
	l->n += src->n;
	src->n = 0; /* moved: its fini frees only the array */
	return 0;
}

/* an op from C strings and jansson values (NULL = absent) */
static int
oplist_addj(struct oplist *l, unsigned kind, const char *table, const char *id,
	    const char *space, const char *field, const json_t *value,
	    const json_t *data)
{
	struct buf vb, db;
	struct proto_op op = { .kind = kind };
	int rc = 0;

	buf_init(&vb, 0);
	buf_init(&db, 0);
	op.table = proto_str_c(table);
	op.id = proto_str_c(id);
	op.space = proto_str_c(space);
	op.field = proto_str_c(field);
	if (value && (rc = json_to_mpbuf(&vb, value)) == 0)
		op.value = (struct proto_bytes){ vb.data, (uint32_t)vb.len };
	if (!rc && data && (rc = json_to_mpbuf(&db, data)) == 0)
		op.data = (struct proto_bytes){ db.data, (uint32_t)db.len };
	if (!rc)
		rc = oplist_add(l, &op);
	buf_fini(&vb);
	buf_fini(&db);
	return rc;
}

/* the ops as a TXN frame (with its length prefix), newest first when
 * reversed (an undo runs the inverse ops backwards) */
static int
encode_txn(weft_store *st, const struct oplist *l, bool reversed, uint64_t mid,
	   struct buf *out)
{
	struct proto_op one, *ops = &one;
	struct proto_msg m = { .type = PROTO_TXN };
	struct proto_err err;
	int rc;

	if (l->n > 1 && !(ops = malloc(l->n * sizeof(*ops))))
		return WEFT_ENOMEM;
	for (size_t i = 0; i < l->n; i++)
		ops[i] = l->v[reversed ? l->n - 1 - i : i].op;
	/* rid = mid: an ERROR or BACKOFF about it names it */
	m.u.txn = (struct proto_txn){ mid, proto_str_c(st->client_id), mid,
				      PROTO_LIST(l->n, ops) };
	rc = proto_encode(out, &m, 0, &err);
	if (ops != &one)
		free(ops);
	if (rc)
		return st_err(st, rc, "cannot encode the transaction: %s",
			      err.msg);
	return 0;
}

/* the ops of a TXN frame (with its prefix) appended to l */
static int
decode_txn(const uint8_t *frame, size_t len, struct oplist *l)
{
	struct proto_msg m;
	struct proto_err err;
	struct proto_iter it;
	struct proto_op op;
	int rc;

	if (len < 4 || proto_decode(frame + 4, len - 4, &m, &err) != 0 ||
	    m.type != PROTO_TXN)
		return WEFT_EINTERNAL;
	proto_iter_init(&it, &m.u.txn.ops);
	while ((rc = proto_next_op(&it, &op)) == 1)
		if ((rc = oplist_add(l, &op)) != 0)
			return rc;
	return rc < 0 ? WEFT_EINTERNAL : 0;
}

int
txn_keys(const uint8_t *frame, size_t len, char ***keys, size_t *n)
{
	struct oplist ops = { 0 };
	char **v;
	int rc = decode_txn(frame, len, &ops);

	*keys = NULL;
	*n = 0;
	if (rc) {
		oplist_fini(&ops);
		return rc;
	}
	v = calloc(2 * ops.n + 1, sizeof(*v));
	if (!v) {
		oplist_fini(&ops);
		return WEFT_ENOMEM;
	}
	for (size_t i = 0; i < ops.n; i++) {
		bool seen = false;

		for (size_t k = 0; k < *n && !seen; k += 2)
			seen = strcmp(v[k], ops.v[i].table) == 0 &&
			       strcmp(v[k + 1], ops.v[i].id) == 0;
		if (seen)
			continue;
		v[*n] = strdup(ops.v[i].table);
		v[*n + 1] = strdup(ops.v[i].id);
		if (!v[*n] || !v[*n + 1]) {
			free(v[*n]);
			free(v[*n + 1]);
			rc = WEFT_ENOMEM;
			break;
		}
		*n += 2;
	}
	oplist_fini(&ops);
	*keys = v;
	return rc;
}

/* ------------------------------------------------------------------ */
/* building */

int
weft_begin(weft_store *st, weft_txn **out)
{
	weft_txn *tx;

	if (!st || !out)
		return WEFT_EINVAL;
	tx = calloc(1, sizeof(*tx));
	if (!tx)
		return WEFT_ENOMEM;
	tx->st = st;
	*out = tx;
	return 0;
}

void
weft_abort(weft_txn *tx)
{
	if (!tx)
		return;
	oplist_fini(&tx->ops);
	free(tx);
}

static bool
name_ok(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	return n > 0 && n <= PROTO_MAX_NAME;
}

static json_t *
parse_json(weft_txn *tx, const char *what, const char *text)
{
	json_error_t je;
	json_t *j =
		json_loads(text, JSON_DECODE_ANY | JSON_REJECT_DUPLICATES, &je);

	if (!j)
		st_err(tx->st, WEFT_EINVAL, "%s is not JSON: %s (column %d)",
		       what, je.text, je.column);
	return j;
}

/* the common part of every op function: check, encode, schema, add */
static int
add_op(weft_txn *tx, unsigned kind, const char *table, const char *id,
       const char *space, const char *field, const char *value_json,
       const char *data_json)
{
	struct oplist one = { 0 };
	json_t *value = NULL, *data = NULL;
	struct buf done;
	bool completed = false;
	const char *badfield = NULL;
	char why[ERR_MAX];
	int rc;

	if (!tx)
		return WEFT_EINVAL;
	if (!name_ok(table) || !name_ok(id) || (space && !name_ok(space)) ||
	    (field && !name_ok(field)))
		return st_err(tx->st, WEFT_EINVAL,
			      "table, id, space and field are 1 to %d bytes",
			      PROTO_MAX_NAME);
	if (tx->ops.n >= TXN_MAX_OPS)
		return st_err(tx->st, WEFT_ELIMIT,
			      "a transaction holds at most %d ops",
			      TXN_MAX_OPS);
	if (value_json && !(value = parse_json(tx, "the value", value_json)))
		return WEFT_EINVAL;
	if (data_json && !(data = parse_json(tx, "the data", data_json))) {
		json_decref(value);
		return WEFT_EINVAL;
	}
	if (data && !json_is_object(data)) {
		json_decref(value);
		json_decref(data);
		return st_err(tx->st, WEFT_EINVAL,
			      "%s/%s: data must be a JSON object", table, id);
	}
	rc = oplist_addj(&one, kind, table, id, space, field, value, data);
	json_decref(value);
	json_decref(data);
	if (rc) {
		oplist_fini(&one);
		return st_err(tx->st, rc,
			      "%s/%s: a value outside JSON's domain", table,
			      id);
	}
	buf_init(&done, 0);
	rc = schema_check_op(tx->st->schema, &one.v[0].op, &done, &completed,
			     why, sizeof(why), &badfield);
	if (rc) {
		buf_fini(&done);
		oplist_fini(&one);
		return st_err(tx->st, rc, "%s", why);
	}
	if (completed) { /* a create with its defaults filled in */
		free(one.v[0].data);
		one.v[0].data = done.data;
		one.v[0].op.data =
			(struct proto_bytes){ done.data, (uint32_t)done.len };
		done.data = NULL;
	}
	buf_fini(&done);
	rc = oplist_move(&tx->ops, &one);
	oplist_fini(&one);
	return rc;
}

int
weft_create(weft_txn *tx, const char *table, const char *id, const char *space,
	    const char *json)
{
	if (!space)
		return WEFT_EINVAL;
	return add_op(tx, PROTO_OP_CREATE, table, id, space, NULL, NULL,
		      json ? json : "{}");
}

int
weft_put(weft_txn *tx, const char *table, const char *id, const char *space,
	 const char *json)
{
	return add_op(tx, PROTO_OP_PUT, table, id, space, NULL, NULL,
		      json ? json : "{}");
}

int
weft_set(weft_txn *tx, const char *table, const char *id, const char *field,
	 const char *json_value)
{
	if (!field || !json_value)
		return WEFT_EINVAL;
	return add_op(tx, PROTO_OP_SET, table, id, NULL, field, json_value,
		      NULL);
}

int
weft_unset(weft_txn *tx, const char *table, const char *id, const char *field)
{
	if (!field)
		return WEFT_EINVAL;
	return add_op(tx, PROTO_OP_UNSET, table, id, NULL, field, NULL, NULL);
}

int
weft_delete(weft_txn *tx, const char *table, const char *id)
{
	return add_op(tx, PROTO_OP_DELETE, table, id, NULL, NULL, NULL, NULL);
}

int
weft_list_add(weft_txn *tx, const char *table, const char *id,
	      const char *field, const char *json_value)
{
	if (!field || !json_value)
		return WEFT_EINVAL;
	return add_op(tx, PROTO_OP_LIST_ADD, table, id, NULL, field, json_value,
		      NULL);
}

int
weft_list_remove(weft_txn *tx, const char *table, const char *id,
		 const char *field, const char *json_value)
{
	if (!field || !json_value)
		return WEFT_EINVAL;
	return add_op(tx, PROTO_OP_LIST_REMOVE, table, id, NULL, field,
		      json_value, NULL);
}

int
weft_incr(weft_txn *tx, const char *table, const char *id, const char *field,
	  const char *json_number)
{
	if (!field || !json_number)
		return WEFT_EINVAL;
	return add_op(tx, PROTO_OP_INCR, table, id, NULL, field, json_number,
		      NULL);
}

int
weft_expect(weft_txn *tx, uint64_t version)
{
	if (!tx || tx->ops.n == 0 || version == 0)
		return WEFT_EINVAL;
	tx->ops.v[tx->ops.n - 1].op.expect = version;
	return 0;
}

/* ------------------------------------------------------------------ */
/* committing */

/* a record touched by the transaction being committed */
struct touched {
	const char *table, *id; /* borrowed from the ops */
	struct lrow row;	/* the view as the transaction leaves it */
};

/*
 * the ops that undo op, given the row before it (appended to inv, which
 * is later reversed: undo runs the inverses newest first)
 */
static int
inverse_of(struct oplist *inv, const struct proto_op *op,
	   const struct lrow *before)
{
	char table[PROTO_MAX_NAME + 1], id[PROTO_MAX_NAME + 1];
	char field[PROTO_MAX_NAME + 1];
	json_t *old = NULL, *val;
	int rc = 0;

	str_copy(table, sizeof(table), op->table);
	str_copy(id, sizeof(id), op->id);
	str_copy(field, sizeof(field), op->field);
	if (before->data && op->field.p)
		old = json_object_get(before->data, field);
	switch (op->kind) {
	case PROTO_OP_CREATE:
		return oplist_addj(inv, PROTO_OP_DELETE, table, id, NULL, NULL,
				   NULL, NULL);
	case PROTO_OP_PUT:
		return oplist_addj(inv, PROTO_OP_PUT, table, id, before->space,
				   NULL, NULL, before->data);
	case PROTO_OP_DELETE:
		return oplist_addj(inv, PROTO_OP_CREATE, table, id,
				   before->space, NULL, NULL, before->data);
	case PROTO_OP_SET:
	case PROTO_OP_UNSET:
		if (old)
			return oplist_addj(inv, PROTO_OP_SET, table, id, NULL,
					   field, old, NULL);
		if (op->kind == PROTO_OP_UNSET)
			return 0; /* it removed nothing */
		return oplist_addj(inv, PROTO_OP_UNSET, table, id, NULL, field,
				   NULL, NULL);
	case PROTO_OP_LIST_ADD:
	case PROTO_OP_LIST_REMOVE:
		val = mp_to_json(op->value.p, op->value.len);
		if (!val)
			return WEFT_EINVAL;
		if (!old && op->kind == PROTO_OP_LIST_ADD) {
			rc = oplist_addj(inv, PROTO_OP_UNSET, table, id, NULL,
					 field, NULL, NULL);
		} else if (json_is_array(old)) {
			size_t i;
			json_t *e;
			bool had = false;

			json_array_foreach(old, i, e)
			{
				had = had || json_equal(e, val);
			}
			if (op->kind == PROTO_OP_LIST_ADD && !had)
				rc = oplist_addj(inv, PROTO_OP_LIST_REMOVE,
						 table, id, NULL, field, val,
						 NULL);
			else if (op->kind == PROTO_OP_LIST_REMOVE && had)
				rc = oplist_addj(inv, PROTO_OP_LIST_ADD, table,
						 id, NULL, field, val, NULL);
		}
		json_decref(val);
		return rc;
	case PROTO_OP_INCR:
		val = mp_to_json(op->value.p, op->value.len);
		if (!json_is_number(val)) {
			json_decref(val);
			return WEFT_EINVAL;
		}
		{
			json_t *neg =
				json_is_integer(val) &&
						json_integer_value(val) !=
							LLONG_MIN
					? json_integer(-json_integer_value(val))
					: json_real(-json_number_value(val));

			rc = oplist_addj(inv, PROTO_OP_INCR, table, id, NULL,
					 field, neg, NULL);
			json_decref(neg);
		}
		json_decref(val);
		return rc;
	default:
		return WEFT_EUNKNOWN;
	}
}

enum commit_kind { C_NEW, C_UNDO, C_REDO };

/* the most a commit's scratch frames keep allocated between commits: an
 * ordinary transaction's frames are a few hundred bytes */
#define SCRATCH_KEEP (64 * 1024)

/* st->mu held, in a transaction: the first queued transaction to touch a
 * record is about to change its view row, which is its confirmed row:
 * that moves to weft_base, for rebases, until the queue leaves it */
static int
base_aside(weft_store *st, const char *table, const char *id)
{
	return st_run_key(st, Q_BASE_COPY, table, id, "keep the confirmed row");
}

/* can SQLite's JSON path name this field as "$.\"<field>\""? */
static bool
path_safe(struct proto_str f)
{
	for (uint32_t i = 0; i < f.len; i++)
		if (f.p[i] == '"' || f.p[i] == '\\')
			return false;
	return f.len > 0;
}

/* st->mu held, in a transaction: no queued transaction touched this
 * record before, so the row Q_FIELD_SET saw (st->kept) is its confirmed
 * row, kept in weft_base for rebases until the queue leaves it */
static int
kept_aside(weft_store *st, const char *table, const char *id)
{
	sqlite3_stmt *q = st_q(st, Q_BASE_PUT);
	const struct kept *k = &st->kept;
	int rc;

	if (!q)
		return WEFT_EIO;
	sqlite3_bind_text(q, 1, table, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, (const char *)k->space.data, (int)k->space.len,
			  SQLITE_STATIC);
	sqlite3_bind_int64(q, 4, (sqlite3_int64)k->version);
	sqlite3_bind_int(q, 5, 0);
	sqlite3_bind_text(q, 6, (const char *)k->row.data, (int)k->row.len,
			  SQLITE_STATIC);
	rc = sqlite3_step(q) == SQLITE_DONE
		     ? 0
		     : st_sqlerr(st, "keep the confirmed row");
	sqlite3_reset(q);
	return rc;
}

/* op i's undo, from the field's old value in st->kept: the old value
 * back, or the field gone again (nothing when an unset found nothing) */
static int
undo_from_kept(weft_store *st, const struct proto_op *op, struct oplist *inv)
{
	const struct kept *k = &st->kept;
	struct buf *mp = &st->scr.undo;
	struct proto_op undo = *op;
	msgpack_packer pk;
	int rc = 0;

	undo.space = (struct proto_str){ NULL, 0 };
	undo.expect = 0;
	if (k->has_old) {
		buf_reset(mp);
		msgpack_packer_init(&pk, mp, buf_mp_write);
		rc = json_text_to_mp(&pk, (const char *)k->old.data,
				     k->old.len);
		if (!rc && mp->err)
			rc = WEFT_ENOMEM;
		undo.kind = PROTO_OP_SET;
		undo.value =
			(struct proto_bytes){ mp->data, (uint32_t)mp->len };
	} else {
		undo.kind = PROTO_OP_UNSET;
		undo.value = (struct proto_bytes){ NULL, 0 };
	}
	if (!rc && (k->has_old || op->kind == PROTO_OP_SET))
		rc = oplist_add(inv, &undo);
	return rc;
}

/*
 * commit_fast - st->mu held, in the commit's SQLite transaction: a
 * transaction of only set and unset on live rows, done in SQL.  Each op
 * is one UPDATE: SQLite's JSON functions change the view row in place,
 * and weft_keep() hands back, from the same statement, the field's old
 * value for the undo and, on a record's first queued transaction, the
 * confirmed row for weft_base.  No row is parsed into a jansson tree and
 * printed back, and no row is read by a statement of its own.
 *
 * Returns 1 done (tv and inv filled, the rows' pending counts raised), 0
 * the general path must do it and nothing was written, 2 the general path
 * must do it but this wrote (a later op found its record not live: roll
 * the SQLite transaction back first), or an error.
 */
static int
commit_fast(weft_store *st, const struct oplist *ops, struct touched *tv,
	    size_t *nt, struct oplist *inv)
{
	char path[PROTO_MAX_NAME + 8];
	struct buf *val = &st->scr.val;
	int rc = 0;

	for (size_t i = 0; i < ops->n; i++) {
		const struct proto_op *op = &ops->v[i].op;

		if ((op->kind != PROTO_OP_SET && op->kind != PROTO_OP_UNSET) ||
		    !path_safe(op->field) ||
		    (op->kind == PROTO_OP_SET && !op->value.p))
			return 0;
	}
	for (size_t i = 0; i < ops->n && !rc; i++) {
		const struct oop *o = &ops->v[i];
		struct touched *t = NULL;
		sqlite3_stmt *q;

		for (size_t k = 0; k < *nt && !t; k++)
			if (strcmp(tv[k].table, o->table) == 0 &&
			    strcmp(tv[k].id, o->id) == 0)
				t = &tv[k];
		snprintf(path, sizeof(path), "$.\"%s\"", o->field);
		q = st_q(st, o->op.kind == PROTO_OP_SET ? Q_FIELD_SET
							: Q_FIELD_DEL);
		if (!q) {
			rc = WEFT_EIO;
			break;
		}
		sqlite3_bind_text(q, 1, o->table, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 2, o->id, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 3, path, -1, SQLITE_STATIC);
		if (o->op.kind == PROTO_OP_SET) {
			buf_reset(val);
			rc = json_from_mp(val, o->op.value.p, o->op.value.len);
			if (rc) {
				sqlite3_reset(q);
				st_err(st, rc, "op %zu: value is not JSON",
				       i + 1);
				break;
			}
			sqlite3_bind_text(q, 4, (const char *)val->data,
					  (int)val->len, SQLITE_STATIC);
		}
		sqlite3_bind_int(q, 5, !t);
		st->kept.hit = false;
		if (sqlite3_step(q) != SQLITE_DONE)
			rc = st_sqlerr(st, "change a row");
		sqlite3_reset(q);
		if (rc)
			break;
		if (sqlite3_changes(st->db) == 0 || !st->kept.hit) {
			/* not live: the general path says why */
			rc = i == 0 ? 1 : 2;
			break;
		}
		if (!t) {
			t = &tv[(*nt)++];
			t->table = o->table;
			t->id = o->id;
			t->row.exists = true;
			t->row.version = st->kept.version;
			t->row.pending = st->kept.pending;
			if (st->kept.pending == 0 && st->kept.has_row &&
			    (rc = kept_aside(st, o->table, o->id)) != 0)
				break;
		}
		rc = undo_from_kept(st, &o->op, inv);
		if (rc)
			st_err(st, rc, "op %zu: cannot record its undo", i + 1);
	}
	if (rc == 1)
		return 0;
	if (rc)
		return rc;
	for (size_t k = 0; k < *nt; k++)
		tv[k].row.pending++; /* as stored */
	return 1;
}

/* st->mu held */
/* st->mu held; consume: the history entry an undo or redo replays (it
 * goes in the same SQLite transaction), or 0 */
static int
commit_locked(weft_store *st, const struct oplist *ops, enum commit_kind kind,
	      int64_t consume, uint64_t *mid_out, struct notes *ns)
{
	struct touched tv_few[4], *tv = tv_few;
	size_t nt = 0;
	struct oplist inv = { 0 };
	struct buf *frame = &st->scr.frame, *invframe = &st->scr.inv;
	uint64_t mid = st->next_mid;
	sqlite3_stmt *q;
	char why[ERR_MAX];
	int rc, fast;

	if (ops->n == 0)
		return st_err(st, WEFT_EINVAL, "an empty transaction");
	buf_reset(frame);
	buf_reset(invframe);
	if (ops->n <= sizeof(tv_few) / sizeof(tv_few[0]))
		memset(tv_few, 0, sizeof(tv_few));
	else if (!(tv = calloc(ops->n, sizeof(*tv))))
		return WEFT_ENOMEM;
	rc = st_begin(st);
	if (rc)
		goto out;
	fast = commit_fast(st, ops, tv, &nt, &inv);
	if (fast < 0) {
		rc = fast;
		goto out_rollback;
	}
	if (fast != 1) { /* what commit_fast looked at is read again */
		for (size_t k = 0; k < nt; k++)
			lrow_fini(&tv[k].row);
		nt = 0;
		oplist_fini(&inv);
		inv = (struct oplist){ 0 };
	}
	if (fast == 2) { /* it wrote: start again from the file's rows */
		st_rollback(st);
		rc = st_begin(st);
		if (rc)
			goto out;
		fast = 0;
	}
	for (size_t i = 0; i < ops->n && !rc && !fast; i++) {
		const struct oop *o = &ops->v[i];
		struct touched *t = NULL;

		for (size_t k = 0; k < nt; k++)
			if (strcmp(tv[k].table, o->table) == 0 &&
			    strcmp(tv[k].id, o->id) == 0)
				t = &tv[k];
		if (!t) {
			t = &tv[nt++];
			t->table = o->table;
			t->id = o->id;
			rc = st_load(st, false, o->table, o->id, &t->row);
			if (!rc && t->row.exists && t->row.pending == 0)
				rc = base_aside(st, o->table, o->id);
			if (rc)
				break;
		}
		rc = inverse_of(&inv, &o->op, &t->row);
		if (rc) {
			st_err(st, rc, "op %zu: cannot record its undo", i + 1);
			break;
		}
		rc = apply_op(&t->row, &o->op, why, sizeof(why));
		if (rc)
			st_err(st, rc, "op %zu: %s", i + 1, why);
	}
	if (rc)
		goto out_rollback;
	rc = encode_txn(st, ops, false, mid, frame);
	if (rc)
		goto out_rollback;
	/* its undo: the inverse ops, newest first (never sent) */
	if (inv.n > 0) {
		rc = encode_txn(st, &inv, true, mid, invframe);
		if (rc)
			goto out_rollback;
	}
	q = st_q(st, Q_QUEUE_ADD);
	if (!q) {
		rc = WEFT_EIO;
		goto out_rollback;
	}
	{
		struct timespec ts;

		clock_gettime(CLOCK_REALTIME, &ts);
		sqlite3_bind_int64(q, 1, (sqlite3_int64)mid);
		sqlite3_bind_blob(q, 2, frame->data, (int)frame->len,
				  SQLITE_STATIC);
		sqlite3_bind_int64(q, 3,
				   (sqlite3_int64)ts.tv_sec * 1000 +
					   ts.tv_nsec / 1000000);
		/* an undo's inverse is a redo (below); the others' ride with
		 * the queued transaction: no page of their own */
		if (inv.n > 0 && kind != C_UNDO)
			sqlite3_bind_blob(q, 4, invframe->data,
					  (int)invframe->len, SQLITE_STATIC);
		else
			sqlite3_bind_null(q, 4);
	}
	if (sqlite3_step(q) != SQLITE_DONE) {
		rc = st_sqlerr(st, "queue the transaction");
		goto out_rollback;
	}
	for (size_t k = 0; k < nt && !fast; k++) {
		rc = st_save(st, false, tv[k].table, tv[k].id, &tv[k].row,
			     tv[k].row.pending + 1);
		if (rc)
			goto out_rollback;
	}
	if (inv.n > 0) {
		if (kind == C_NEW && !st->redo_empty) {
			/* a new edit ends the redo chain */
			q = st_q(st, Q_REDO_CLEAR);
			if (!q || sqlite3_step(q) != SQLITE_DONE) {
				rc = st_sqlerr(st, "clear the redo history");
				goto out_rollback;
			}
			sqlite3_reset(q);
		}
		if (kind == C_UNDO) {
			q = st_q(st, Q_REDO_ADD);
			if (!q) {
				rc = WEFT_EIO;
				goto out_rollback;
			}
			sqlite3_bind_blob(q, 1, invframe->data,
					  (int)invframe->len, SQLITE_STATIC);
			rc = sqlite3_step(q) == SQLITE_DONE
				     ? 0
				     : st_sqlerr(st, "record the redo");
			sqlite3_reset(q);
			if (rc)
				goto out_rollback;
		}
	}
	if (consume > 0) {
		char del[160];

		/* the entry replayed: a redo, an undo of an answered commit,
		 * or the undo riding with a queued one */
		if (kind == C_REDO)
			snprintf(del, sizeof(del),
				 "DELETE FROM weft_redo WHERE seq = %lld",
				 (long long)consume);
		else
			snprintf(del, sizeof(del),
				 "DELETE FROM weft_undo WHERE seq = %lld;"
				 "UPDATE weft_queue SET undo = NULL"
				 " WHERE mid = %lld",
				 (long long)consume, (long long)consume);
		if (sqlite3_exec(st->db, del, NULL, NULL, NULL) != SQLITE_OK) {
			rc = st_sqlerr(st, "update the undo history");
			goto out_rollback;
		}
	}
	rc = st_commit(st);
	if (rc)
		goto out_rollback;
	if (inv.n > 0)
		st->redo_empty = kind == C_NEW	  ? true
				 : kind == C_UNDO ? false
						  : st->redo_empty;
	st->next_mid = mid + 1;
	/* durable now: the queue index learns of it (a failed add marks
	 * the index stale, and it is rebuilt from the queue) */
	for (size_t k = 0; k < nt; k++)
		qindex_add(&st->qi, tv[k].table, tv[k].id, mid);
	if (mid_out)
		*mid_out = mid;
	for (size_t k = 0; k < nt; k++)
		notes_add(ns, tv[k].table, tv[k].id, &tv[k].row, WEFT_LOCAL);
	goto out;
out_rollback:
	st_rollback(st);
out:
	for (size_t k = 0; k < nt; k++)
		lrow_fini(&tv[k].row);
	if (tv != tv_few)
		free(tv);
	oplist_fini(&inv);
	/* a big transaction's buffers are not kept for the store's life */
	if (frame->cap > SCRATCH_KEEP || invframe->cap > SCRATCH_KEEP) {
		buf_fini(frame);
		buf_fini(invframe);
	}
	return rc;
}

int
weft_commit(weft_txn *tx, uint64_t *mid_out)
{
	weft_store *st;
	struct notes ns = { 0 };
	int rc;

	if (!tx)
		return WEFT_EINVAL;
	st = tx->st;
	pthread_mutex_lock(&st->mu);
	rc = commit_locked(st, &tx->ops, C_NEW, 0, mid_out, &ns);
	pthread_mutex_unlock(&st->mu);
	weft_abort(tx);
	notes_fire(st, &ns);
	if (!rc)
		sync_kick(st);
	return rc;
}

/* undo (redo false) or redo the newest entry of the history */
static int
undo_redo(weft_store *st, bool redo, uint64_t *mid_out)
{
	struct oplist ops = { 0 };
	struct notes ns = { 0 };
	sqlite3_stmt *q;
	int64_t seq = 0;
	int rc;

	if (!st)
		return WEFT_EINVAL;
	pthread_mutex_lock(&st->mu);
	if (sqlite3_prepare_v2(st->db,
			       redo ? "SELECT seq, frame FROM weft_redo"
				      " ORDER BY seq DESC LIMIT 1"
				    : "SELECT mid, undo FROM weft_queue"
				      " WHERE undo IS NOT NULL"
				      " UNION ALL SELECT seq, frame FROM"
				      " weft_undo ORDER BY 1 DESC LIMIT 1",
			       -1, &q, NULL) != SQLITE_OK) {
		rc = st_sqlerr(st, "read the undo history");
		goto out;
	}
	if (sqlite3_step(q) == SQLITE_ROW) {
		seq = sqlite3_column_int64(q, 0);
		rc = decode_txn(sqlite3_column_blob(q, 1),
				(size_t)sqlite3_column_bytes(q, 1), &ops);
	} else {
		rc = st_err(st, WEFT_ENOTFOUND, "nothing to %s",
			    redo ? "redo" : "undo");
	}
	sqlite3_finalize(q);
	if (rc)
		goto out;
	rc = commit_locked(st, &ops, redo ? C_REDO : C_UNDO, seq, mid_out, &ns);
out:
	pthread_mutex_unlock(&st->mu);
	oplist_fini(&ops);
	notes_fire(st, &ns);
	if (!rc)
		sync_kick(st);
	return rc;
}

int
weft_undo(weft_store *st, uint64_t *mid_out)
{
	return undo_redo(st, false, mid_out);
}

int
weft_redo(weft_store *st, uint64_t *mid_out)
{
	return undo_redo(st, true, mid_out);
}

/* ------------------------------------------------------------------ */
/* rebase */

int
rebase(weft_store *st, const char *table, const char *id, struct notes *ns,
       int origin)
{
	struct lrow row;
	sqlite3_stmt *q;
	const uint64_t *mids;
	size_t nmids;
	int64_t pending = 0;
	int rc, step;

	rc = st_load(st, true, table, id, &row);
	if (rc)
		return rc;
	/* the index does not change while this runs (mu is held) */
	nmids = qindex_get(st_qindex(st), table, id, &mids);
	for (size_t m = 0; m < nmids; m++) {
		struct oplist ops = { 0 };
		struct lrow tmp;
		char why[ERR_MAX];
		bool ok = true;

		q = st_q(st, Q_QUEUE_FRAME);
		if (!q) {
			lrow_fini(&row);
			return WEFT_EIO;
		}
		sqlite3_bind_int64(q, 1, (sqlite3_int64)mids[m]);
		step = sqlite3_step(q);
		if (step != SQLITE_ROW) {
			sqlite3_reset(q);
			if (step == SQLITE_DONE)
				continue; /* left the queue */
			lrow_fini(&row);
			return st_sqlerr(st, "read the queue");
		}
		pending++;
		rc = decode_txn(sqlite3_column_blob(q, 0),
				(size_t)sqlite3_column_bytes(q, 0), &ops);
		sqlite3_reset(q);
		if (rc || lrow_copy(&tmp, &row) != 0) {
			rc = 0;
			oplist_fini(&ops);
			continue;
		}
		for (size_t i = 0; i < ops.n && ok; i++)
			if (strcmp(ops.v[i].table, table) == 0 &&
			    strcmp(ops.v[i].id, id) == 0)
				ok = apply_op(&tmp, &ops.v[i].op, why,
					      sizeof(why)) == 0;
		if (ok) {
			lrow_fini(&row);
			row = tmp;
		} else {
			lrow_fini(&tmp);
		}
		oplist_fini(&ops);
	}
	rc = st_save(st, false, table, id, &row, pending);
	if (!rc && pending == 0) /* nothing queued: the view is the base */
		rc = st_save(st, true, table, id,
			     &(struct lrow){ .exists = false }, 0);
	if (!rc)
		notes_add(ns, table, id, &row, origin);
	lrow_fini(&row);
	return rc;
}
