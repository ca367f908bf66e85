/*
 * store.c - the store file: opening and locking it, its SQLite layout,
 * rows in and out, and the read API (weft_get, weft_each, counts).
 *
 * Layout (format STORE_FORMAT; weft_meta.format says which):
 *
 *   weft_meta        k -> v: format, client_id, cursor, schema name
 *   weft_base        the row the server confirmed, for the records that
 *                    queued transactions touch (tombstones too: a version
 *                    must never go backwards); for every other record the
 *                    view's row is the confirmed one, so a bootstrap writes
 *                    each record once.  A commit copies a record's view row
 *                    here when its first queued transaction touches it, and
 *                    the rebase after the last one leaves drops it.
 *   weft_rows        the view: base + queued transactions; what the app
 *                    reads, with a pending count per row
 *   weft_queue       queued transactions by mutation id: the TXN frame as
 *                    it goes on the wire, and the ops that undo it
 *   weft_subs        subscriptions, how far their bootstrap got, and
 *                    whether the server refused them (retried)
 *   weft_undo        the ops that reverse each answered commit, by its
 *                    mutation id (moved from weft_queue when it leaves;
 *                    the newest UNDO_KEEP are kept)
 *   weft_redo        the ops that reverse each undo, until a new commit
 *   weft_sweep       rows of a space that loads again after CATCHUP, not
 *                    yet listed by the server since: what is left when
 *                    the space has loaded is gone from it (sync.c)
 *
 * A commit touches as few pages as it can (each is a 4 KiB WAL write):
 * the view row and the queue row (with its undo).  Which queued
 * transactions touch which record is kept in memory (qindex.c), rebuilt
 * from the queue's frames at open.  So mutation
 * ids need no AUTOINCREMENT: the highest id answered is kept in weft_meta
 * (mid_hwm) when it leaves the queue, and the next id is past both.
 *   "<table>"        a view per schema table, one column per field
 *
 * The file is locked with flock() on "<path>.lock" for the store's life,
 * so a second process gets WEFT_EBUSY rather than sharing the queue.  The
 * lock is on a side file, not on the database: another SQLite connection
 * may still read the views.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <unistd.h>

#include "client/src/internal.h"
#include "proto/json.h"

#include "common/banned.h"

static const char *const ddl =
	"CREATE TABLE IF NOT EXISTS weft_meta (k TEXT PRIMARY KEY, v)"
	" WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS weft_base (tbl TEXT NOT NULL,"
	" id TEXT NOT NULL, space TEXT NOT NULL, version INTEGER NOT NULL,"
	" deleted INTEGER NOT NULL, data TEXT, PRIMARY KEY (tbl, id))"
	" WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS weft_rows (tbl TEXT NOT NULL,"
	" id TEXT NOT NULL, space TEXT NOT NULL, version INTEGER NOT NULL,"
	" deleted INTEGER NOT NULL, data TEXT,"
	" pending INTEGER NOT NULL DEFAULT 0, PRIMARY KEY (tbl, id))"
	" WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS weft_rows_space ON weft_rows"
	" (space, tbl, id);"
	"CREATE TABLE IF NOT EXISTS weft_queue (mid INTEGER PRIMARY KEY,"
	" frame BLOB NOT NULL, created_ms INTEGER NOT NULL, undo BLOB);"
	"CREATE TABLE IF NOT EXISTS weft_subs (key TEXT PRIMARY KEY,"
	" loaded INTEGER NOT NULL DEFAULT 0, page BLOB,"
	" refused INTEGER NOT NULL DEFAULT 0) WITHOUT ROWID;"
	"CREATE TABLE IF NOT EXISTS weft_undo (seq INTEGER PRIMARY KEY,"
	" frame BLOB NOT NULL);"
	"CREATE TABLE IF NOT EXISTS weft_redo (seq INTEGER PRIMARY KEY,"
	" frame BLOB NOT NULL);"
	"CREATE TABLE IF NOT EXISTS weft_sweep (tbl TEXT NOT NULL,"
	" id TEXT NOT NULL, space TEXT NOT NULL, PRIMARY KEY (tbl, id))"
	" WITHOUT ROWID;"
	"CREATE INDEX IF NOT EXISTS weft_sweep_space ON weft_sweep (space);";

static const char *const sql[Q_N] = {
	[Q_VIEW_GET] = "SELECT space, version, deleted, data, pending"
		       " FROM weft_rows WHERE tbl = ?1 AND id = ?2",
	[Q_VIEW_PUT] = "INSERT OR REPLACE INTO weft_rows (tbl, id, space,"
		       " version, deleted, data, pending)"
		       " VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
	[Q_VIEW_UPD] = "UPDATE weft_rows SET version = ?4, deleted = ?5,"
		       " data = ?6, pending = ?7 WHERE tbl = ?1 AND id = ?2",
	[Q_VIEW_DEL] = "DELETE FROM weft_rows WHERE tbl = ?1 AND id = ?2",
	[Q_BASE_GET] = "SELECT space, version, deleted, data FROM weft_base"
		       " WHERE tbl = ?1 AND id = ?2",
	[Q_BASE_PUT] = "INSERT OR REPLACE INTO weft_base (tbl, id, space,"
		       " version, deleted, data)"
		       " VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
	[Q_BASE_DEL] = "DELETE FROM weft_base WHERE tbl = ?1 AND id = ?2",
	/* a subscription (not refused) to either key */
	[Q_SUB_FOLLOWS] = "SELECT 1 FROM weft_subs WHERE key IN (?1, ?2)"
			  " AND refused = 0",
	/* a confirmed row older than a change that took it out of sight */
	[Q_VIEW_DROP] = "DELETE FROM weft_rows WHERE tbl = ?1 AND id = ?2"
			" AND version < ?3 AND pending = 0",
	/* the server still lists the record: not swept (sync.c) */
	[Q_SWEEP_SEEN] = "DELETE FROM weft_sweep WHERE tbl = ?1 AND id = ?2",
	[Q_META_GET] = "SELECT v FROM weft_meta WHERE k = ?1",
	[Q_META_SET] = "INSERT OR REPLACE INTO weft_meta (k, v) VALUES (?1,"
		       " ?2)",
	[Q_QUEUE_ADD] = "INSERT INTO weft_queue (mid, frame, created_ms, undo)"
			" VALUES (?1, ?2, ?3, ?4)",
	/* a server row goes in only if it is newer (sqlite3_changes says) */
	[Q_BASE_UPSERT] = "INSERT INTO weft_base (tbl, id, space, version,"
			  " deleted, data) VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
			  " ON CONFLICT (tbl, id) DO UPDATE SET"
			  " space = excluded.space, version = excluded.version,"
			  " deleted = excluded.deleted, data = excluded.data"
			  " WHERE excluded.version > weft_base.version",
	/* a server row of a record nothing queued touches: its view row is
	 * its confirmed row, replaced only by a newer one, in place */
	[Q_VIEW_UPSERT] = "INSERT INTO weft_rows (tbl, id, space, version,"
			  " deleted, data, pending)"
			  " VALUES (?1, ?2, ?3, ?4, ?5, ?6, 0)"
			  " ON CONFLICT (tbl, id) DO UPDATE SET"
			  " space = excluded.space, version = excluded.version,"
			  " deleted = excluded.deleted, data = excluded.data,"
			  " pending = 0"
			  " WHERE excluded.version > weft_rows.version",
	/* a record's first queued transaction: its confirmed row moves
	 * aside before the view changes */
	[Q_BASE_COPY] = "INSERT OR REPLACE INTO weft_base (tbl, id, space,"
			" version, deleted, data) SELECT tbl, id, space,"
			" version, deleted, data FROM weft_rows"
			" WHERE tbl = ?1 AND id = ?2",
	[Q_JSON_VALID] = "SELECT json_valid(?1)",
	/* the fast commit (txn.c): a live row's state and one field's value,
	 * as JSON text (NULL: absent), without parsing the row here */
	/* one field of a live row, in place; weft_keep() sees the row
	 * before the change (and returns 1): the field's old value for the
	 * undo, and the whole row when no queued transaction touched it yet,
	 * which becomes its confirmed row */
	[Q_FIELD_SET] = "UPDATE weft_rows SET data = json_set(data, ?3,"
			" json(?4)), pending = pending + ?5"
			" WHERE tbl = ?1 AND id = ?2 AND deleted = 0 AND"
			" weft_keep(data -> ?3, version, pending, space,"
			" CASE WHEN pending = 0 THEN data END)",
	[Q_FIELD_DEL] = "UPDATE weft_rows SET data = json_remove(data, ?3),"
			" pending = pending + ?5"
			" WHERE tbl = ?1 AND id = ?2 AND deleted = 0 AND"
			" weft_keep(data -> ?3, version, pending, space,"
			" CASE WHEN pending = 0 THEN data END)",
	[Q_UNDO_KEEP] = "INSERT INTO weft_undo (seq, frame) SELECT mid, undo"
			" FROM weft_queue WHERE mid = ?1 AND undo IS NOT NULL",
	[Q_UNDO_PRUNE] = "DELETE FROM weft_undo WHERE seq < (SELECT seq FROM"
			 " weft_undo ORDER BY seq DESC LIMIT 1 OFFSET ?1)",
	[Q_REDO_ADD] = "INSERT INTO weft_redo (frame) VALUES (?1)",
	[Q_REDO_CLEAR] = "DELETE FROM weft_redo",
	[Q_HWM] = "INSERT INTO weft_meta (k, v) VALUES ('mid_hwm', ?1)"
		  " ON CONFLICT (k) DO UPDATE SET v = max(v, excluded.v)",
	[Q_QUEUE_DEL] = "DELETE FROM weft_queue WHERE mid = ?1",
	[Q_QUEUE_FRAME] = "SELECT frame FROM weft_queue WHERE mid = ?1",
	[Q_BEGIN] = "BEGIN IMMEDIATE",
	[Q_COMMIT] = "COMMIT",
	[Q_ROLLBACK] = "ROLLBACK",
};

/* ------------------------------------------------------------------ */
/* errors */

static void
errslot_free(void *p)
{
	(void)p; /* slots live on st->errs and are freed at close */
}

static struct errslot *
errslot(weft_store *st)
{
	struct errslot *e = pthread_getspecific(st->err_key);

	if (e)
		return e;
	e = calloc(1, sizeof(*e));
	if (!e)
		return NULL;
	pthread_mutex_lock(&st->err_mu);
	e->next = st->errs;
	st->errs = e;
	pthread_mutex_unlock(&st->err_mu);
	pthread_setspecific(st->err_key, e);
	return e;
}

int
st_err(weft_store *st, int code, const char *fmt, ...)
{
	struct errslot *e = errslot(st);
	va_list ap;

	if (!e)
		return code;
	va_start(ap, fmt);
	vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	return code;
}

int
st_sqlerr(weft_store *st, const char *what)
{
	int rc = sqlite3_errcode(st->db);
	int code = rc == SQLITE_NOMEM			      ? WEFT_ENOMEM
		   : rc == SQLITE_BUSY || rc == SQLITE_LOCKED ? WEFT_EBUSY
							      : WEFT_EIO;

	return st_err(st, code, "cannot %s in '%s': %s", what, st->path,
		      sqlite3_errmsg(st->db));
}

const char *
weft_last_error(weft_store *st)
{
	struct errslot *e = st ? errslot(st) : NULL;

	return e && e->msg[0] ? e->msg : "no error";
}

void
weft_free(void *p)
{
	free(p);
}

const char *
weft_state_name(int state)
{
	static const char *const names[] = { "offline", "connecting",
					     "syncing", "live",
					     "error",	"needs-auth" };

	return state >= 0 && state <= WEFT_NEEDS_AUTH ? names[state] : "?";
}

/* ------------------------------------------------------------------ */
/* statements and meta */

sqlite3_stmt *
st_q(weft_store *st, enum sid id)
{
	sqlite3_stmt *q = st->q[id];

	if (q) {
		sqlite3_reset(q);
		sqlite3_clear_bindings(q);
		return q;
	}
	if (sqlite3_prepare_v3(st->db, sql[id], -1, SQLITE_PREPARE_PERSISTENT,
			       &st->q[id], NULL) != SQLITE_OK) {
		st_sqlerr(st, "prepare a statement");
		return NULL;
	}
	return st->q[id];
}

static int
exec_q(weft_store *st, enum sid id, const char *what)
{
	sqlite3_stmt *q = st_q(st, id);

	if (!q)
		return WEFT_EIO;
	if (sqlite3_step(q) != SQLITE_DONE)
		return st_sqlerr(st, what);
	sqlite3_reset(q);
	return 0;
}

int
st_begin(weft_store *st)
{
	return exec_q(st, Q_BEGIN, "begin a transaction");
}

int
st_commit(weft_store *st)
{
	return exec_q(st, Q_COMMIT, "commit");
}

void
st_rollback(weft_store *st)
{
	if (!sqlite3_get_autocommit(st->db))
		(void)exec_q(st, Q_ROLLBACK, "roll back");
}

int
st_meta_get(weft_store *st, const char *k, char *out, size_t cap)
{
	sqlite3_stmt *q = st_q(st, Q_META_GET);
	int rc;

	if (!q)
		return WEFT_EIO;
	sqlite3_bind_text(q, 1, k, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		const char *v = (const char *)sqlite3_column_text(q, 0);

		snprintf(out, cap, "%s", v ? v : "");
		sqlite3_reset(q);
		return 0;
	}
	sqlite3_reset(q);
	return rc == SQLITE_DONE ? WEFT_ENOTFOUND
				 : st_sqlerr(st, "read the store's meta");
}

int
st_meta_set(weft_store *st, const char *k, const char *v)
{
	sqlite3_stmt *q = st_q(st, Q_META_SET);

	if (!q)
		return WEFT_EIO;
	sqlite3_bind_text(q, 1, k, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, v, -1, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		return st_sqlerr(st, "write the store's meta");
	sqlite3_reset(q);
	return 0;
}

/* ------------------------------------------------------------------ */
/* rows */

void
lrow_fini(struct lrow *r)
{
	free(r->stored_space);
	free(r->space);
	json_decref(r->data);
	memset(r, 0, sizeof(*r));
}

int
lrow_copy(struct lrow *dst, const struct lrow *src)
{
	*dst = *src;
	dst->space = src->space ? strdup(src->space) : NULL;
	dst->stored_space =
		src->stored_space ? strdup(src->stored_space) : NULL;
	dst->data = src->data ? json_deep_copy(src->data) : NULL;
	if ((src->space && !dst->space) || (src->data && !dst->data) ||
	    (src->stored_space && !dst->stored_space)) {
		lrow_fini(dst);
		return WEFT_ENOMEM;
	}
	return 0;
}

int
st_load(weft_store *st, bool base, const char *table, const char *id,
	struct lrow *r)
{
	sqlite3_stmt *q = st_q(st, base ? Q_BASE_GET : Q_VIEW_GET);
	int rc;

	memset(r, 0, sizeof(*r));
	if (!q)
		return WEFT_EIO;
	sqlite3_bind_text(q, 1, table, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(q);
	if (rc == SQLITE_ROW) {
		const char *sp = (const char *)sqlite3_column_text(q, 0);
		const char *data = (const char *)sqlite3_column_text(q, 3);

		r->exists = true;
		r->space = strdup(sp ? sp : "");
		r->stored_space = strdup(sp ? sp : "");
		r->version = (uint64_t)sqlite3_column_int64(q, 1);
		r->deleted = sqlite3_column_int(q, 2) != 0;
		if (!base)
			r->pending = sqlite3_column_int64(q, 4);
		if (data && !r->deleted) {
			json_error_t je;

			r->data = json_loads(data, JSON_DECODE_ANY, &je);
			if (!r->data) {
				sqlite3_reset(q);
				lrow_fini(r);
				return st_err(st, WEFT_EINTERNAL,
					      "row %s/%s of '%s' is not JSON: "
					      "%s",
					      table, id, st->path, je.text);
			}
		}
		sqlite3_reset(q);
		if (!r->space || !r->stored_space) {
			lrow_fini(r);
			return WEFT_ENOMEM;
		}
		return 0;
	}
	sqlite3_reset(q);
	return rc == SQLITE_DONE ? 0 : st_sqlerr(st, "read a row");
}

int
st_run_key(weft_store *st, enum sid sid, const char *table, const char *id,
	   const char *what)
{
	sqlite3_stmt *q = st_q(st, sid);
	int rc;

	if (!q)
		return WEFT_EIO;
	sqlite3_bind_text(q, 1, table, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
	rc = sqlite3_step(q) == SQLITE_DONE ? 0 : st_sqlerr(st, what);
	sqlite3_reset(q);
	return rc;
}

int
st_save(weft_store *st, bool base, const char *table, const char *id,
	const struct lrow *r, int64_t pending)
{
	sqlite3_stmt *q;
	char *data = NULL;
	int rc;

	if (!r->exists) {
		q = st_q(st, base ? Q_BASE_DEL : Q_VIEW_DEL);
		if (!q)
			return WEFT_EIO;
		sqlite3_bind_text(q, 1, table, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
		rc = sqlite3_step(q);
		sqlite3_reset(q);
		return rc == SQLITE_DONE ? 0 : st_sqlerr(st, "delete a row");
	}
	if (r->data && !r->deleted) {
		data = json_dumps(r->data, JSON_COMPACT | JSON_ENCODE_ANY);
		if (!data)
			return WEFT_ENOMEM;
	}
	/* a view row that stays in its space is updated in place: a
	 * REPLACE would also rewrite its entry in the space index */
	q = st_q(st, base ? Q_BASE_PUT
		     : r->stored_space && r->space &&
				     strcmp(r->space, r->stored_space) == 0
			     ? Q_VIEW_UPD
			     : Q_VIEW_PUT);
	if (!q) {
		free(data);
		return WEFT_EIO;
	}
	sqlite3_bind_text(q, 1, table, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, r->space ? r->space : "", -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 4, (sqlite3_int64)r->version);
	sqlite3_bind_int(q, 5, r->deleted);
	if (data)
		sqlite3_bind_text(q, 6, data, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(q, 6);
	if (!base)
		sqlite3_bind_int64(q, 7, pending);
	rc = sqlite3_step(q);
	sqlite3_reset(q);
	free(data);
	return rc == SQLITE_DONE ? 0 : st_sqlerr(st, "write a row");
}

struct qindex *
st_qindex(weft_store *st)
{
	sqlite3_stmt *q;

	if (!st->qi.stale)
		return &st->qi;
	qindex_clear(&st->qi);
	if (sqlite3_prepare_v2(st->db,
			       "SELECT mid, frame FROM weft_queue ORDER BY mid",
			       -1, &q, NULL) != SQLITE_OK) {
		st->qi.stale = true;
		return &st->qi;
	}
	while (sqlite3_step(q) == SQLITE_ROW) {
		uint64_t mid = (uint64_t)sqlite3_column_int64(q, 0);
		char **keys = NULL;
		size_t n = 0;

		if (txn_keys(sqlite3_column_blob(q, 1),
			     (size_t)sqlite3_column_bytes(q, 1), &keys,
			     &n) != 0)
			st->qi.stale = true;
		for (size_t i = 0; i + 1 < n; i += 2)
			qindex_add(&st->qi, keys[i], keys[i + 1], mid);
		for (size_t i = 0; i < n; i++)
			free(keys[i]);
		free(keys);
	}
	sqlite3_finalize(q);
	return &st->qi;
}

/* ------------------------------------------------------------------ */
/* change notes */

void
notes_add(struct notes *ns, const char *table, const char *id,
	  const struct lrow *r, int origin)
{
	notes_addv(ns, table, id, r->version, !r->exists || r->deleted, origin);
}

void
notes_addv(struct notes *ns, const char *table, const char *id,
	   uint64_t version, bool deleted, int origin)
{
	struct note *n;

	if (!ns || ns->off)
		return;
	/* the same record twice in a row is one note (an ack, then its
	 * rebase); a record may still be reported more than once per batch:
	 * a full scan would make a bootstrap page quadratic */
	for (size_t i = ns->n; i-- > 0 && i + 4 >= ns->n;)
		if (strcmp(ns->v[i].id, id) == 0 &&
		    strcmp(ns->v[i].table, table) == 0) {
			ns->v[i].version = version;
			ns->v[i].deleted = deleted;
			ns->v[i].origin = origin;
			return;
		}
	if (ns->n == ns->cap) {
		size_t cap = ns->cap ? ns->cap * 2 : 16;
		struct note *v = realloc(ns->v, cap * sizeof(*v));

		if (!v)
			return; /* a lost note, not a lost change */
		ns->v = v;
		ns->cap = cap;
	}
	n = &ns->v[ns->n];
	n->table = strdup(table);
	n->id = strdup(id);
	if (!n->table || !n->id) {
		free(n->table);
		free(n->id);
		return;
	}
	n->version = version;
	n->deleted = deleted;
	n->origin = origin;
	ns->n++;
}

void
notes_fire(weft_store *st, struct notes *ns)
{
	struct weft_callbacks cb;

	pthread_mutex_lock(&st->mu);
	cb = st->cb;
	pthread_mutex_unlock(&st->mu);
	for (size_t i = 0; i < ns->n; i++) {
		struct note *n = &ns->v[i];

		if (cb.change)
			cb.change(cb.arg, n->table, n->id, n->version,
				  n->deleted, n->origin);
		free(n->table);
		free(n->id);
	}
	free(ns->v);
	memset(ns, 0, sizeof(*ns));
}

/* ------------------------------------------------------------------ */
/* opening */

/* "name" with embedded quotes doubled, for SQL identifiers */
static void
quote_ident(struct buf *b, const char *s)
{
	buf_append(b, "\"", 1);
	for (; *s; s++) {
		if (*s == '"')
			buf_append(b, "\"\"", 2);
		else
			buf_append(b, s, 1);
	}
	buf_append(b, "\"", 1);
}

/* 'text' with embedded quotes doubled, for SQL string literals */
static void
quote_str(struct buf *b, const char *s)
{
	buf_append(b, "'", 1);
	for (; *s; s++) {
		if (*s == '\'')
			buf_append(b, "''", 2);
		else
			buf_append(b, s, 1);
	}
	buf_append(b, "'", 1);
}

/* one view per schema table: plain SQL over the app's data */
static int
make_views(weft_store *st)
{
	struct buf b;
	char *err = NULL;
	int rc = 0;

	buf_init(&b, 0);
	for (size_t t = 0; t < schema_ntables(st->schema); t++) {
		const char *name = schema_table(st->schema, t);

		if (strncmp(name, "weft_", 5) == 0 ||
		    strncmp(name, "sqlite_", 7) == 0) {
			buf_fini(&b);
			return st_err(st, WEFT_ECONFIG,
				      "schema table '%s': names starting "
				      "with weft_ or sqlite_ are reserved "
				      "in the client store",
				      name);
		}
		buf_appendf(&b, "DROP VIEW IF EXISTS ");
		quote_ident(&b, name);
		buf_appendf(&b, "; CREATE VIEW ");
		quote_ident(&b, name);
		buf_appendf(&b, " AS SELECT id, space, version, pending");
		for (size_t f = 0; f < schema_nfields(st->schema, t); f++) {
			const char *fld = schema_field(st->schema, t, f, NULL);
			struct buf path;

			if (strchr(fld, '"')) {
				buf_fini(&b);
				return st_err(st, WEFT_ECONFIG,
					      "schema field %s.%s: a quote in "
					      "a field name cannot be a view "
					      "column",
					      name, fld);
			}
			buf_init(&path, 0);
			buf_append(&path, "$.", 2);
			quote_ident(&path, fld);
			buf_append(&path, "", 1);
			buf_appendf(&b, ", json_extract(data, ");
			quote_str(&b, (const char *)path.data);
			buf_appendf(&b, ") AS ");
			quote_ident(&b, fld);
			buf_fini(&path);
		}
		buf_appendf(&b, " FROM weft_rows WHERE tbl = ");
		quote_str(&b, name);
		buf_appendf(&b, " AND deleted = 0;");
	}
	buf_append(&b, "", 1);
	if (b.err)
		rc = WEFT_ENOMEM;
	else if (sqlite3_exec(st->db, (const char *)b.data, NULL, NULL, &err) !=
		 SQLITE_OK)
		rc = st_err(st, WEFT_EIO, "cannot make the table views: %s",
			    err ? err : "?");
	sqlite3_free(err);
	buf_fini(&b);
	return rc;
}

static int
new_client_id(char *out, size_t cap)
{
	uint8_t r[12];
	static const char hex[] = "0123456789abcdef";

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return WEFT_EIO;
	if (cap < 2 + 2 * sizeof(r) + 1)
		return WEFT_EINVAL;
	out[0] = 'c';
	out[1] = '-';
	for (size_t i = 0; i < sizeof(r); i++) {
		out[2 + 2 * i] = hex[r[i] >> 4];
		out[3 + 2 * i] = hex[r[i] & 15];
	}
	out[2 + 2 * sizeof(r)] = '\0';
	return 0;
}

/* the layout, the format check, the client id and the next mutation id */
static int
init_db(weft_store *st, int durability, int share_file)
{
	char v[64], *err = NULL;
	sqlite3_stmt *q;
	int rc;

	/* a commit rewrites two pages (view row, queue row), each whole in
	 * the WAL: 1 KiB pages wrote less, but made bulk loads (bootstrap)
	 * 20% slower, and commits gained little; so SQLite's 4 KiB.  A larger
	 * WAL before checkpoints means fewer fsyncs at synchronous=NORMAL. */
	if (sqlite3_exec(st->db,
			 "PRAGMA journal_mode = WAL;"
			 "PRAGMA wal_autocheckpoint = 8000;"
			 "PRAGMA foreign_keys = OFF;",
			 NULL, NULL, &err) != SQLITE_OK ||
	    sqlite3_exec(st->db,
			 durability == WEFT_DURABLE_POWER
				 ? "PRAGMA synchronous = FULL"
				 : "PRAGMA synchronous = NORMAL",
			 NULL, NULL, &err) != SQLITE_OK ||
	    sqlite3_exec(st->db, ddl, NULL, NULL, &err) != SQLITE_OK) {
		int code = sqlite3_errcode(st->db);

		if ((code == SQLITE_BUSY || code == SQLITE_LOCKED) &&
		    !share_file)
			rc = st_err(st, WEFT_EBUSY,
				    "cannot open '%s': another process has the"
				    " file open (SQLite: %s); the store locks"
				    " it for this process unless opened with"
				    " share_file",
				    st->path,
				    err ? err : sqlite3_errmsg(st->db));
		else
			rc = st_err(st,
				    code == SQLITE_BUSY || code == SQLITE_LOCKED
					    ? WEFT_EBUSY
					    : WEFT_EIO,
				    "cannot set up '%s': %s", st->path,
				    err ? err : sqlite3_errmsg(st->db));
		sqlite3_free(err);
		return rc;
	}
	rc = st_meta_get(st, "format", v, sizeof(v));
	if (rc == WEFT_ENOTFOUND) {
		snprintf(v, sizeof(v), "%d", STORE_FORMAT);
		rc = st_meta_set(st, "format", v);
	} else if (rc == 0 && strtol(v, NULL, 10) > STORE_FORMAT) {
		return st_err(st, WEFT_EVERSION,
			      "'%s' has store format %s; this libweft "
			      "(%s) reads up to %d",
			      st->path, v, weft_version(), STORE_FORMAT);
	}
	if (rc)
		return rc;
	/* formats below STORE_FORMAT migrate here, step by step */
	if (strtol(v, NULL, 10) == 1 &&
	    sqlite3_exec(st->db,
			 "BEGIN IMMEDIATE;"
			 "DELETE FROM weft_base WHERE NOT EXISTS (SELECT 1"
			 " FROM weft_rows v WHERE v.tbl = weft_base.tbl"
			 " AND v.id = weft_base.id AND v.pending > 0);"
			 "UPDATE weft_meta SET v = '2' WHERE k = 'format';"
			 "COMMIT;",
			 NULL, NULL, &err) != SQLITE_OK) {
		rc = st_err(st, WEFT_EIO, "cannot migrate '%s' to format 2: %s",
			    st->path, err ? err : sqlite3_errmsg(st->db));
		sqlite3_free(err);
		sqlite3_exec(st->db, "ROLLBACK", NULL, NULL, NULL);
		return rc;
	}
	rc = st_meta_get(st, "client_id", st->client_id, sizeof(st->client_id));
	if (rc == WEFT_ENOTFOUND) {
		rc = new_client_id(st->client_id, sizeof(st->client_id));
		if (!rc)
			rc = st_meta_set(st, "client_id", st->client_id);
	}
	if (rc)
		return rc;
	/* the next id: past every id queued and every id answered */
	st->next_mid = 1;
	if (sqlite3_prepare_v2(st->db,
			       "SELECT max(coalesce((SELECT max(mid) FROM"
			       " weft_queue), 0), coalesce((SELECT v FROM"
			       " weft_meta WHERE k = 'mid_hwm'), 0))",
			       -1, &q, NULL) == SQLITE_OK) {
		if (sqlite3_step(q) == SQLITE_ROW)
			st->next_mid = (uint64_t)sqlite3_column_int64(q, 0) + 1;
		sqlite3_finalize(q);
	}
	st->sweeping = false;
	if (sqlite3_prepare_v2(st->db, "SELECT 1 FROM weft_sweep LIMIT 1", -1,
			       &q, NULL) == SQLITE_OK) {
		st->sweeping = sqlite3_step(q) == SQLITE_ROW;
		sqlite3_finalize(q);
	}
	st->redo_empty = false; /* known after the first clear */
	st->qi.stale = true;	/* built from the queue on first use */
	return make_views(st);
}

static int
lock_store(weft_store *st)
{
	size_t n = strlen(st->path) + 6;

	st->lock_path = malloc(n);
	if (!st->lock_path)
		return WEFT_ENOMEM;
	snprintf(st->lock_path, n, "%s.lock", st->path);
	st->lock_fd = open(st->lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (st->lock_fd < 0)
		return st_err(st, WEFT_EIO, "cannot open '%s': %s",
			      st->lock_path, strerror(errno));
	if (flock(st->lock_fd, LOCK_EX | LOCK_NB) != 0)
		return st_err(st, errno == EWOULDBLOCK ? WEFT_EBUSY : WEFT_EIO,
			      "store '%s' is open in another process (or "
			      "twice in this one): one owner at a time",
			      st->path);
	return 0;
}

/* copies a text argument into b; false on out-of-memory */
static bool
keep_text(struct buf *b, sqlite3_value *v)
{
	const unsigned char *p = sqlite3_value_text(v);

	buf_reset(b);
	return p && buf_append(b, p, (size_t)sqlite3_value_bytes(v)) == 0;
}

/*
 * weft_keep(old_field, version, pending, space, row) - called by
 * Q_FIELD_SET and Q_FIELD_DEL on the row they are about to change, with
 * its values before the change: they land in st->kept, so one statement
 * both changes a field and tells the commit what the undo and the
 * confirmed row need.  Returns 1.  Registered SQLITE_DIRECTONLY: no
 * schema object can call it.
 */
static void
keep_fn(sqlite3_context *ctx, int argc, sqlite3_value **argv)
{
	weft_store *st = sqlite3_user_data(ctx);
	struct kept *k = &st->kept;
	bool ok = true;

	(void)argc;
	k->has_old = sqlite3_value_type(argv[0]) != SQLITE_NULL;
	if (k->has_old)
		ok = keep_text(&k->old, argv[0]);
	k->version = (uint64_t)sqlite3_value_int64(argv[1]);
	k->pending = sqlite3_value_int64(argv[2]);
	ok = ok && keep_text(&k->space, argv[3]);
	k->has_row = sqlite3_value_type(argv[4]) != SQLITE_NULL;
	if (k->has_row)
		ok = ok && keep_text(&k->row, argv[4]);
	if (!ok) {
		sqlite3_result_error_nomem(ctx);
		return;
	}
	k->hit = true;
	sqlite3_result_int(ctx, 1);
}

static void
store_free(weft_store *st)
{
	if (!st)
		return;
	for (int i = 0; i < Q_N; i++)
		sqlite3_finalize(st->q[i]);
	if (st->db)
		sqlite3_close(st->db);
	if (st->lock_fd >= 0)
		close(st->lock_fd); /* releases the flock */
	schema_free(st->schema);
	while (st->errs) {
		struct errslot *e = st->errs;

		st->errs = e->next;
		free(e);
	}
	qindex_fini(&st->qi);
	buf_fini(&st->kept.old);
	buf_fini(&st->kept.row);
	buf_fini(&st->kept.space);
	buf_fini(&st->scr.val);
	buf_fini(&st->scr.undo);
	buf_fini(&st->scr.frame);
	buf_fini(&st->scr.inv);
	pthread_key_delete(st->err_key);
	pthread_mutex_destroy(&st->err_mu);
	pthread_mutex_destroy(&st->mu);
	free(st->lock_path);
	free(st->path);
	free(st);
}

int
weft_open(const struct weft_options *o, weft_store **out)
{
	weft_store *st;
	char why[256];
	int rc;

	if (!out)
		return WEFT_EINVAL;
	*out = NULL;
	if (!o || !o->path || !*o->path || !o->schema_path)
		return WEFT_EINVAL;
	st = calloc(1, sizeof(*st));
	if (!st)
		return WEFT_ENOMEM;
	st->lock_fd = -1;
	buf_init(&st->kept.old, 0);
	buf_init(&st->kept.row, 0);
	buf_init(&st->kept.space, 0);
	buf_init(&st->scr.val, 0);
	buf_init(&st->scr.undo, 0);
	buf_init(&st->scr.frame, 0);
	buf_init(&st->scr.inv, 0);
	pthread_mutex_init(&st->mu, NULL);
	pthread_mutex_init(&st->err_mu, NULL);
	if (pthread_key_create(&st->err_key, errslot_free) != 0) {
		pthread_mutex_destroy(&st->err_mu);
		pthread_mutex_destroy(&st->mu);
		free(st);
		return WEFT_ENOMEM;
	}
	st->path = strdup(o->path);
	if (!st->path) {
		rc = WEFT_ENOMEM;
		goto out_free;
	}
	rc = schema_load(&st->schema, o->schema_path, why, sizeof(why));
	if (rc) {
		rc = st_err(st, rc, "%s", why);
		goto out_free;
	}
	rc = lock_store(st);
	if (rc)
		goto out_free;
	if (sqlite3_open_v2(st->path, &st->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
				    SQLITE_OPEN_NOMUTEX,
			    walvfs_name(!o->share_file)) != SQLITE_OK) {
		rc = st->db ? st_sqlerr(st, "open the store") : WEFT_ENOMEM;
		goto out_free;
	}
	/* the first statement takes SQLite's lock on the file for this
	 * process (unix-excl, unless share_file): another process holding
	 * the file open is not waited for long, and is named (init_db) */
	sqlite3_busy_timeout(st->db, o->share_file ? 5000 : 200);
	if (sqlite3_create_function_v2(
		    st->db, "weft_keep", 5, SQLITE_UTF8 | SQLITE_DIRECTONLY, st,
		    keep_fn, NULL, NULL, NULL) != SQLITE_OK) {
		rc = st_sqlerr(st, "register weft_keep()");
		goto out_free;
	}
	rc = init_db(st, o->durability, o->share_file);
	if (rc)
		goto out_free;
	sqlite3_busy_timeout(st->db, 5000);
	if (o->write_url) {
		rc = sync_start(st, o);
		if (rc)
			goto out_free;
	}
	*out = st;
	return 0;
out_free:
	if (o->errbuf && o->errlen) { /* the store and its slots go */
		struct errslot *e = pthread_getspecific(st->err_key);

		snprintf(o->errbuf, o->errlen, "%s",
			 e && e->msg[0] ? e->msg : weft_strerror(rc));
	}
	store_free(st);
	return rc;
}

void
weft_close(weft_store *st)
{
	if (!st)
		return;
	sync_stop(st);
	store_free(st);
}

const char *
weft_client_id(weft_store *st)
{
	return st->client_id;
}

const char *
weft_db_path(weft_store *st)
{
	return st->path;
}

void
weft_set_callbacks(weft_store *st, const struct weft_callbacks *cb)
{
	pthread_mutex_lock(&st->mu);
	if (cb)
		st->cb = *cb;
	else
		memset(&st->cb, 0, sizeof(st->cb));
	pthread_mutex_unlock(&st->mu);
}

/* ------------------------------------------------------------------ */
/* reading */

int
weft_get(weft_store *st, const char *table, const char *id, char **json_out,
	 uint64_t *version_out, char **space_out)
{
	struct lrow r;
	int rc;

	if (!st || !table || !id)
		return WEFT_EINVAL;
	pthread_mutex_lock(&st->mu);
	rc = st_load(st, false, table, id, &r);
	pthread_mutex_unlock(&st->mu);
	if (rc)
		return rc;
	if (!r.exists || r.deleted) {
		lrow_fini(&r);
		return st_err(st, WEFT_ENOTFOUND, "no record %s/%s here", table,
			      id);
	}
	if (json_out) {
		*json_out = json_dumps(r.data, JSON_COMPACT | JSON_ENCODE_ANY);
		if (!*json_out)
			rc = WEFT_ENOMEM;
	}
	if (version_out)
		*version_out = r.version;
	if (space_out && !rc) {
		*space_out = r.space;
		r.space = NULL;
	}
	lrow_fini(&r);
	return rc;
}

int
weft_each(weft_store *st, const char *table, const char *space, weft_row_fn fn,
	  void *arg)
{
	char last_t[PROTO_MAX_NAME + 1] = "", last_i[PROTO_MAX_NAME + 1] = "";
	sqlite3_stmt *q;
	int rc = 0, step;

	if (!st || !fn)
		return WEFT_EINVAL;
	/* rows are copied out under the lock in pages, so the callback runs
	 * unlocked and may call back into the store */
	for (;;) {
		struct rowcopy {
			char *t, *i, *s, *d;
			uint64_t v;
		} page[256];
		int n = 0;

		pthread_mutex_lock(&st->mu);
		if (sqlite3_prepare_v2(
			    st->db,
			    "SELECT tbl, id, space, version, data FROM"
			    " weft_rows WHERE deleted = 0"
			    " AND (?1 IS NULL OR tbl = ?1)"
			    " AND (?2 IS NULL OR space = ?2)"
			    " AND (tbl, id) > (?3, ?4)"
			    " ORDER BY tbl, id LIMIT 256",
			    -1, &q, NULL) != SQLITE_OK) {
			rc = st_sqlerr(st, "list rows");
			pthread_mutex_unlock(&st->mu);
			return rc;
		}
		if (table)
			sqlite3_bind_text(q, 1, table, -1, SQLITE_STATIC);
		if (space)
			sqlite3_bind_text(q, 2, space, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 3, last_t, -1, SQLITE_STATIC);
		sqlite3_bind_text(q, 4, last_i, -1, SQLITE_STATIC);
		while ((step = sqlite3_step(q)) == SQLITE_ROW) {
			struct rowcopy *c = &page[n];

			c->t = strdup((const char *)sqlite3_column_text(q, 0));
			c->i = strdup((const char *)sqlite3_column_text(q, 1));
			c->s = strdup((const char *)sqlite3_column_text(q, 2));
			c->v = (uint64_t)sqlite3_column_int64(q, 3);
			c->d = strdup(
				sqlite3_column_text(q, 4)
					? (const char *)sqlite3_column_text(q,
									    4)
					: "null");
			n++;
		}
		if (step != SQLITE_DONE)
			rc = st_sqlerr(st, "list rows");
		sqlite3_finalize(q);
		pthread_mutex_unlock(&st->mu);
		for (int k = 0; k < n; k++) {
			struct rowcopy *c = &page[k];

			if (!rc && (!c->t || !c->i || !c->s || !c->d))
				rc = WEFT_ENOMEM;
			if (!rc)
				rc = fn(arg, c->t, c->i, c->s, c->v, c->d);
			if (k == n - 1 && c->t && c->i) {
				snprintf(last_t, sizeof(last_t), "%s", c->t);
				snprintf(last_i, sizeof(last_i), "%s", c->i);
			}
			free(c->t);
			free(c->i);
			free(c->s);
			free(c->d);
		}
		if (rc || n < 256)
			return rc;
	}
}

uint64_t
weft_pending(weft_store *st)
{
	sqlite3_stmt *q;
	uint64_t n = 0;

	pthread_mutex_lock(&st->mu);
	if (sqlite3_prepare_v2(st->db, "SELECT count(*) FROM weft_queue", -1,
			       &q, NULL) == SQLITE_OK) {
		if (sqlite3_step(q) == SQLITE_ROW)
			n = (uint64_t)sqlite3_column_int64(q, 0);
		sqlite3_finalize(q);
	}
	pthread_mutex_unlock(&st->mu);
	return n;
}

uint64_t
weft_pending_record(weft_store *st, const char *table, const char *id)
{
	const uint64_t *mids;
	int64_t n;

	pthread_mutex_lock(&st->mu);
	n = (int64_t)qindex_get(st_qindex(st), table, id, &mids);
	pthread_mutex_unlock(&st->mu);
	return n > 0 ? (uint64_t)n : 0;
}
