/*
 * internal.h - what the files of libweft share: the store struct, the
 * local row model and the functions each file exports to the others.
 *
 * Locking: st->mu guards the SQLite connection and every field marked
 * "mu" below.  Callbacks are never called with st->mu held, so a callback
 * may call any weft_* function except weft_close.
 */
#ifndef WEFT_CLIENT_INTERNAL_H
#define WEFT_CLIENT_INTERNAL_H

#include <jansson.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdint.h>

#include <weft/weft.h>

#include "common/buf.h"
#include "proto/msg.h"
#include "proto/schema.h"

/* STORE_FORMAT - the layout of the store file this library writes; a file
 * with a higher one was made by a newer library (WEFT_EVERSION).
 *   1  weft_base held every confirmed row
 *   2  weft_base holds the confirmed row only of records that queued
 *      transactions touch (store.c); format 1 files migrate at open */
#define STORE_FORMAT 2

/* UNDO_KEEP - undo entries kept for answered commits: enough for any
 * person's session, and the table stays small */
#define UNDO_KEEP 1000

/* ERR_MAX - bytes of an error sentence */
#define ERR_MAX 512

/* KEY_MAX - a subscription key: "rec/<table>/<id>" */
#define KEY_MAX (2 * PROTO_MAX_NAME + 8)

/* one record as the client holds it (base or view), data parsed */
struct lrow {
	bool exists;	    /* false: nothing known about the record */
	bool deleted;	    /* tombstone */
	char *space;	    /* owned */
	uint64_t version;   /* server version it is based on (0: local only) */
	json_t *data;	    /* owned reference; NULL for tombstones */
	int64_t pending;    /* view rows: queued transactions touching it */
	char *stored_space; /* as loaded from the file, or NULL if the row
			     * is not there: an update in place then skips
			     * the space index */
};

/* a change to report through weft_change_fn after st->mu is released */
struct note {
	char *table, *id; /* owned */
	uint64_t version;
	int deleted;
	int origin; /* enum weft_origin */
};

struct notes {
	struct note *v;
	size_t n, cap;
	bool off; /* no change callback is set: keep nothing */
};

/* the thread-specific last error of a store */
struct errslot {
	struct errslot *next;
	char msg[ERR_MAX];
};

struct sync; /* sync.c */

/* queued transactions by record (qindex.c): may hold more, never less */
struct qindex {
	struct qentry **buckets; /* QI_BUCKETS chains; NULL until used */
	size_t entries;		 /* records with queued transactions */
	bool stale;		 /* an add failed: rebuild before use */
};

/* the store's prepared statements (store.c has their SQL) */
enum sid {
	Q_VIEW_GET,
	Q_VIEW_PUT,
	Q_VIEW_UPD,
	Q_VIEW_DEL,
	Q_BASE_GET,
	Q_BASE_PUT,
	Q_BASE_DEL,
	Q_META_GET,
	Q_META_SET,
	Q_QUEUE_ADD,
	Q_BASE_UPSERT,
	Q_VIEW_UPSERT,
	Q_BASE_COPY,
	Q_JSON_VALID,
	Q_FIELD_SET,
	Q_FIELD_DEL,
	Q_UNDO_KEEP,
	Q_UNDO_PRUNE,
	Q_REDO_ADD,
	Q_REDO_CLEAR,
	Q_HWM,
	Q_QUEUE_DEL,
	Q_QUEUE_FRAME,
	Q_BEGIN,
	Q_COMMIT,
	Q_ROLLBACK,
	Q_SUB_FOLLOWS,
	Q_VIEW_DROP,
	Q_SWEEP_SEEN,
	Q_N
};

/* what weft_keep() saw of the row a Q_FIELD_SET or Q_FIELD_DEL changed,
 * before the change (see commit_fast) */
struct kept {
	bool hit;	  /* the function ran for the row */
	bool has_old;	  /* the field was there: old is its value */
	bool has_row;	  /* pending was 0: row is the confirmed data */
	struct buf old;	  /* the field's value, JSON text */
	struct buf row;	  /* the whole data, JSON text */
	struct buf space; /* the row's space */
	uint64_t version; /* the row's version */
	int64_t pending;  /* queued transactions touching it, before */
};

/* buffers a commit reuses, so that it allocates little (mu) */
struct scratch {
	struct buf val;	  /* a set's value as JSON text */
	struct buf undo;  /* an old value as msgpack */
	struct buf frame; /* the queued TXN frame */
	struct buf inv;	  /* its undo, as a TXN frame */
};

struct weft_store {
	pthread_mutex_t mu;
	sqlite3 *db; /* mu */
	char *path, *lock_path;
	int lock_fd; /* flock()ed for the store's life */
	struct schema *schema;
	char client_id[40];
	uint64_t next_mid;	  /* mu: the next mutation id to commit */
	struct weft_callbacks cb; /* mu (copied out before calling) */
	/* per-thread error sentences (weft_last_error) */
	pthread_key_t err_key;
	pthread_mutex_t err_mu; /* errs (never held with mu wanted) */
	struct errslot *errs;	/* every slot, freed at close */
	struct sync *sync;	/* NULL when offline only */
	sqlite3_stmt *q[Q_N];	/* mu: prepared on first use */
	bool redo_empty;	/* mu: weft_redo has no rows */
	bool sweeping;		/* mu: weft_sweep may have rows (sync.c) */
	struct qindex qi;	/* mu */
	struct kept kept;	/* mu */
	struct scratch scr;	/* mu */
};

/* mu held: the prepared statement, reset and unbound; NULL on error (with
 * the error set) */
sqlite3_stmt *st_q(weft_store *st, enum sid id);

/* ---- store.c ---- */

/* mu held: run the prepared statement sid with ?1 = table, ?2 = id, to
 * its end; 0 or the error (what it was doing: what) */
int st_run_key(weft_store *st, enum sid sid, const char *table, const char *id,
	       const char *what);

/* set the calling thread's error sentence for st; returns code */
int st_err(weft_store *st, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* mu held: SQLite failed; map it (EIO, EBUSY, ENOMEM) and say what */
int st_sqlerr(weft_store *st, const char *what);

/* mu held: a row of weft_rows (view) or weft_base into r (zeroed first;
 * r->exists false when absent).  Caller frees with lrow_fini. */
int st_load(weft_store *st, bool base, const char *table, const char *id,
	    struct lrow *r);
/* mu held: write r as the row of table/id (the view also gets its
 * pending count); a row that does not exist is deleted */
int st_save(weft_store *st, bool base, const char *table, const char *id,
	    const struct lrow *r, int64_t pending);
/* mu held: the queue index, rebuilt from the queue if it went stale */
struct qindex *st_qindex(weft_store *st);
/* mu held: BEGIN IMMEDIATE / COMMIT / ROLLBACK */
/* walvfs.c: the VFS that writes a WAL frame in one system call, or NULL
 * (the default VFS) if it could not be built */
const char *walvfs_name(bool exclusive);

int st_begin(weft_store *st);
int st_commit(weft_store *st);
void st_rollback(weft_store *st);
/* mu held: a meta value */
int st_meta_get(weft_store *st, const char *k, char *out, size_t cap);
int st_meta_set(weft_store *st, const char *k, const char *v);

void lrow_fini(struct lrow *r);
/* copy (deep for data) */
int lrow_copy(struct lrow *dst, const struct lrow *src);

void notes_add(struct notes *ns, const char *table, const char *id,
	       const struct lrow *r, int origin);
void notes_addv(struct notes *ns, const char *table, const char *id,
		uint64_t version, bool deleted, int origin);
/* call the change callback for each, then free them (mu not held) */
void notes_fire(weft_store *st, struct notes *ns);

/* ---- qindex.c ---- */

void qindex_add(struct qindex *qi, const char *table, const char *id,
		uint64_t mid);
void qindex_del(struct qindex *qi, const char *table, const char *id,
		uint64_t mid);
/* the mids (ascending) queued for table/id, borrowed until the next
 * change of the index */
size_t qindex_get(struct qindex *qi, const char *table, const char *id,
		  const uint64_t **mids);
void qindex_clear(struct qindex *qi);
void qindex_fini(struct qindex *qi);

/* ---- apply.c ---- */

/*
 * apply_op - op to r in place, as the server would apply it (authorisation
 * aside).  0, or ENOTFOUND / EEXIST / EVALIDATION with a sentence in why.
 * r is unchanged on error.
 */
int apply_op(struct lrow *r, const struct proto_op *op, char *why,
	     size_t whylen);

/* s as a C string in out[cap] (cut to fit; "" for an absent string):
 * a commit copies names this way several times, and snprintf showed */
void str_copy(char *out, size_t cap, struct proto_str s);

/* a msgpack value as a jansson value (new reference), or NULL */
json_t *mp_to_json(const uint8_t *p, size_t len);
/* a jansson value as msgpack appended to out; 0 or WEFT_EINVAL */
/* a msgpack_packer write callback appending to a struct buf */
int buf_mp_write(void *data, const char *p, size_t len);
int json_to_mpbuf(struct buf *out, const json_t *v);

/* ---- txn.c ---- */

/*
 * rebase - recompute the view row of table/id: the base, then every
 * queued transaction that touches it, in order.  A queued op that no
 * longer applies is skipped with the rest of its transaction (for this
 * record); the server will answer for it.  Records the change in ns.
 */
int rebase(weft_store *st, const char *table, const char *id, struct notes *ns,
	   int origin);

/*
 * txn_keys - the records a TXN frame touches, as table and id pairs
 * (keys[2k], keys[2k + 1]), each once.  Caller frees each and the array.
 */
int txn_keys(const uint8_t *frame, size_t len, char ***keys, size_t *n);

/* ---- sync.c ---- */

int sync_start(weft_store *st, const struct weft_options *o);
void sync_stop(weft_store *st);
/* a commit was queued: wake the sync thread */
void sync_kick(weft_store *st);

#endif /* WEFT_CLIENT_INTERNAL_H */
