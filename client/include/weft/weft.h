/*
 * weft/weft.h - the weft client library (libweft).
 *
 * libweft keeps a local SQLite copy of the data a user may see, applies
 * the app's writes to it at once, and syncs with the weft services in the
 * background.  Include this header and nothing else.
 *
 * The model (docs/client.md has the guide):
 *
 *   - A store is one SQLite file owned by one process at a time.  It holds
 *     the rows the server confirmed (the base), the queue of transactions
 *     not yet confirmed, and the view the app reads: the base with the
 *     queued transactions applied on top.
 *   - weft_commit() applies a transaction to the view and queues it, in one
 *     SQLite transaction, without touching the network.
 *   - A sync thread (started by weft_open when a write URL is given) sends
 *     the queue in order, applies the server's answers and the live pushes
 *     of subscribed spaces, and rebases the queued transactions over them.
 *
 * Conventions:
 *   - Functions return 0 or a negative enum weft_err (weft/error.h);
 *     weft_strerror() names it and weft_last_error() says more.
 *   - Row data and values are JSON text in and out.
 *   - Strings passed in are copied; strings handed out are owned by the
 *     caller and freed with weft_free(), unless a comment says otherwise.
 *   - Thread safety: every function may be called from any thread, and
 *     concurrently, unless a comment says otherwise.  A weft_txn is used
 *     by one thread at a time.
 *   - Callbacks run on the sync thread (or, for local commits, on the
 *     thread that committed: see weft_change_fn).  They must not call
 *     weft_close(); they may call anything else.
 */
#ifndef WEFT_WEFT_H
#define WEFT_WEFT_H

#include <stddef.h>
#include <stdint.h>

#include <weft/error.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0

/*
 * weft_version - the library's version, "MAJOR.MINOR.PATCH".  Static
 * string.  Compare with WEFT_VERSION_* to detect a header / library
 * mismatch.
 */
WEFT_API const char *weft_version(void);

/* weft_protocol_version - the wire protocol version this library speaks. */
WEFT_API unsigned weft_protocol_version(void);

/* weft_free - free a string or array this library handed out. */
WEFT_API void weft_free(void *p);

typedef struct weft_store weft_store;
typedef struct weft_txn weft_txn;

/* ------------------------------------------------------------------ */
/* opening a store */

/* Connection states, as weft_state_fn reports them. */
enum weft_state {
	WEFT_OFFLINE = 0,    /* no write URL, or waiting to reconnect */
	WEFT_CONNECTING = 1, /* dialing and saying hello */
	WEFT_SYNCING = 2,    /* connected; sending the queue, catching up */
	WEFT_LIVE = 3,	     /* queue sent, subscriptions live */
	WEFT_ERROR = 4,	     /* a server refused us for good (detail says
			      * why); retried with backoff */
	WEFT_NEEDS_AUTH = 5, /* the token was refused and the token callback
			      * had no new one: call weft_set_token() */
};

/* weft_state_name - "offline", "connecting", ...; static. */
WEFT_API const char *weft_state_name(int state);

/* Durability of local commits (SQLite's synchronous setting, WAL mode). */
enum weft_durability {
	/* survives an app crash; the last commits may be lost on power
	 * loss (synchronous=NORMAL).  The default. */
	WEFT_DURABLE_APP = 0,
	/* survives power loss: each commit waits for fsync
	 * (synchronous=FULL) */
	WEFT_DURABLE_POWER = 1,
};

/*
 * weft_token_fn - return a JWT for the store's user, as a string the
 * library copies, or NULL if there is none now (the store then reports
 * WEFT_NEEDS_AUTH until weft_set_token()).  Called on the sync thread when
 * connecting and when a server says the token expired.
 */
typedef const char *(*weft_token_fn)(void *arg);

struct weft_options {
	/* the store file (created if missing); required */
	const char *path;
	/* the app schema file (JSON; deploy/schema/issues.json is the
	 * demo's); required: writes are checked against it before they
	 * are queued, and it defines the per-table SQL views */
	const char *schema_path;
	/* weft-write's URL, e.g. "tcp://127.0.0.1:7400"; NULL = offline only
	 * (no sync thread) */
	const char *write_url;
	/* weft-fanout URLs; the client uses one at a time and moves to the
	 * next when one fails or directs it elsewhere.  May be empty. */
	const char *const *fanout_urls;
	size_t nfanout;
	/* the token: a fixed string, or a callback (preferred: it lets the
	 * app refresh an expired token) */
	const char *token;
	weft_token_fn token_fn;
	void *token_arg;
	/* PEM file of the CA that signs the servers' certificates, for
	 * tls+tcp:// and wss:// URLs; NULL = the system's */
	const char *tls_ca_file;
	/* see enum weft_durability */
	int durability;
	/* transactions sent ahead of their answers (default 64; a BACKOFF
	 * halves it for a while, see docs/client.md) */
	unsigned max_in_flight;
	/* 0 (default): the store file is SQLite-locked for this process
	 * (SQLite's unix-excl VFS).  Other connections in this process may
	 * read it with plain SQL; other processes get SQLITE_BUSY
	 * ("database is locked") until the process's last connection to
	 * the file closes, and weft_open() gives EBUSY if another process
	 * has it open.  A connection of this process that read the file
	 * before weft_open() makes the lock fall back to sharing.
	 * Nonzero: other processes may read it too, and each commit then
	 * takes and drops SQLite's file locks (about a third slower; see
	 * docs/client.md). */
	int share_file;
	/* where weft_open writes a sentence about why it failed (may be
	 * NULL): there is no store yet to ask weft_last_error() */
	char *errbuf;
	size_t errlen;
};

/*
 * weft_open - open (or create) a store.  The file is locked for this
 * process until weft_close(); another process (or another weft_open of
 * the same file) gets WEFT_EBUSY, and other processes' SQLite reads get
 * SQLITE_BUSY unless opts->share_file is set (and without it, a file
 * another process has open gives WEFT_EBUSY).  A store created by a newer
 * library gives WEFT_EVERSION; an older one is migrated.  The client id is made
 * on first open and kept in the file.  Errors: EINVAL (options),
 * ECONFIG (schema file), EBUSY, EIO, EVERSION, ENOMEM.
 */
WEFT_API int weft_open(const struct weft_options *opts, weft_store **out);

/*
 * weft_close - stop syncing and close.  Commits already returned are in
 * the file and are sent on the next open.  Not from a callback.
 */
WEFT_API void weft_close(weft_store *st);

/* weft_client_id - this store's client id (static for the store's life). */
WEFT_API const char *weft_client_id(weft_store *st);

/* weft_set_token - a new token; reconnects if the old one was refused. */
WEFT_API int weft_set_token(weft_store *st, const char *token);

/*
 * weft_last_error - a sentence about the last error this thread got from
 * a weft_* call on st ("issues.title: expected string").  Valid until the
 * thread's next call on st.
 */
WEFT_API const char *weft_last_error(weft_store *st);

/* ------------------------------------------------------------------ */
/* writing: transactions */

/*
 * weft_begin - start a transaction.  Ops are checked as they are added
 * (against the schema and the current view); a failing op returns its
 * error and leaves the transaction as it was.  Nothing is visible until
 * weft_commit().  Errors: ENOMEM.
 */
WEFT_API int weft_begin(weft_store *st, weft_txn **out);

/* create: a new record with the fields in json (an object); schema
 * defaults fill missing fields */
WEFT_API int weft_create(weft_txn *tx, const char *table, const char *id,
			 const char *space, const char *json);
/* put: replace every field; space NULL keeps it, another space moves it */
WEFT_API int weft_put(weft_txn *tx, const char *table, const char *id,
		      const char *space, const char *json);
/* set one field to a JSON value ("\"done\"", "3", "null") */
WEFT_API int weft_set(weft_txn *tx, const char *table, const char *id,
		      const char *field, const char *json_value);
/* unset (remove) one field */
WEFT_API int weft_unset(weft_txn *tx, const char *table, const char *id,
			const char *field);
/* delete: the record becomes a tombstone */
WEFT_API int weft_delete(weft_txn *tx, const char *table, const char *id);
/* list_add / list_remove: set semantics on a list field */
WEFT_API int weft_list_add(weft_txn *tx, const char *table, const char *id,
			   const char *field, const char *json_value);
WEFT_API int weft_list_remove(weft_txn *tx, const char *table, const char *id,
			      const char *field, const char *json_value);
/* incr: add a number (JSON number text) to a numeric field (missing: 0) */
WEFT_API int weft_incr(weft_txn *tx, const char *table, const char *id,
		       const char *field, const char *json_number);
/*
 * weft_expect - the last op added applies only if the server's record is
 * at this version (else the transaction is rejected with ECONFLICT).
 */
WEFT_API int weft_expect(weft_txn *tx, uint64_t version);

/*
 * weft_commit - apply the transaction to the view and queue it, in one
 * SQLite transaction; frees tx whatever the result.  Never blocks on the
 * network.  *mid_out (may be NULL) is the transaction's mutation id, the
 * one weft_reject_fn reports.  An empty transaction is EINVAL.  Errors:
 * EINVAL, EVALIDATION (should have been caught by the op functions),
 * EIO, ENOMEM.
 */
WEFT_API int weft_commit(weft_txn *tx, uint64_t *mid_out);

/* weft_abort - drop an uncommitted transaction; frees tx. */
WEFT_API void weft_abort(weft_txn *tx);

/*
 * weft_undo - commit a transaction that restores what the newest
 * not-yet-undone transaction of this store changed (field by field, so
 * others' later edits to other fields stay).  weft_redo undoes the last
 * undo.  A new commit clears the redo stack.  WEFT_ENOTFOUND when there is
 * nothing to undo (or redo).
 */
WEFT_API int weft_undo(weft_store *st, uint64_t *mid_out);
WEFT_API int weft_redo(weft_store *st, uint64_t *mid_out);

/* ------------------------------------------------------------------ */
/* reading */

/*
 * weft_get - a record of the view as JSON text (*json_out, free with
 * weft_free) and its version (the server version it is based on; 0 for a
 * record created locally and not yet confirmed).  Tombstones and unknown
 * records are WEFT_ENOTFOUND.  space_out (may be NULL) gets its space
 * (free with weft_free).
 */
WEFT_API int weft_get(weft_store *st, const char *table, const char *id,
		      char **json_out, uint64_t *version_out, char **space_out);

/*
 * weft_row_fn - one record of an iteration; return nonzero to stop.  The
 * strings are valid during the call only.
 */
typedef int (*weft_row_fn)(void *arg, const char *table, const char *id,
			   const char *space, uint64_t version,
			   const char *json);

/*
 * weft_each - every live record of table (NULL: all tables) in space
 * (NULL: all spaces), in (table, id) order.  Returns 0, the callback's
 * nonzero value, or an error.
 */
WEFT_API int weft_each(weft_store *st, const char *table, const char *space,
		       weft_row_fn fn, void *arg);

/*
 * weft_db_path - the store file, for reading with plain SQL from another
 * SQLite connection.  Each schema table is a view there: `"issues"` with
 * columns id, space, version, pending (queued transactions touching the
 * row) and one column per schema field.  Open it read-only; the store's
 * own connection is the only writer.  Static for the store's life.
 */
WEFT_API const char *weft_db_path(weft_store *st);

/*
 * weft_fetch - get these records from the server now (reads of records
 * that are not local yet).  Blocks up to timeout_ms.  Records the user may
 * not see are simply not there afterwards.  Errors: EUNAVAILABLE
 * (offline), ETIMEDOUT.
 */
WEFT_API int weft_fetch(weft_store *st, const char *table,
			const char *const *ids, size_t n, int timeout_ms);

/* ------------------------------------------------------------------ */
/* subscriptions and bootstrap */

/*
 * weft_subscribe_space - keep space's records local and live: subscribe,
 * then load its snapshot in pages (the subscribe-first rule), then apply
 * live pushes.  Remembered in the store; resumed on the next open.
 * weft_subscribe_record does the same for one record.  Return at once;
 * weft_wait_synced() waits for the load.
 */
WEFT_API int weft_subscribe_space(weft_store *st, const char *space);
WEFT_API int weft_subscribe_record(weft_store *st, const char *table,
				   const char *id);
/*
 * weft_space_status - where this store's subscription to space stands: 0
 * when it is loaded (and live while connected); WEFT_EAGAIN while it waits
 * to be granted or is loading; WEFT_EPERM when the server refused it (the
 * user is not a member, or no longer is: it is asked for again every 2 s,
 * and the local rows stay); WEFT_ENOTFOUND when the store does not follow
 * space.  Errors: EINVAL, EIO.
 */
WEFT_API int weft_space_status(weft_store *st, const char *space);
/* stop; the local rows stay */
WEFT_API int weft_unsubscribe_space(weft_store *st, const char *space);
WEFT_API int weft_unsubscribe_record(weft_store *st, const char *table,
				     const char *id);

/*
 * weft_progress_fn - bootstrap progress of a space: records and bytes so
 * far, and the space's total records when the server knows it (else 0).
 * done is 1 on the last call, which comes before weft_wait_synced() can
 * return for that load.
 */
typedef void (*weft_progress_fn)(void *arg, const char *space, uint64_t records,
				 uint64_t bytes, uint64_t total, int done);

/* ------------------------------------------------------------------ */
/* sync state and callbacks */

/* where a change came from */
enum weft_origin {
	WEFT_LOCAL = 0,	   /* this store's commit (or undo / redo) */
	WEFT_REMOTE = 1,   /* the server: a push, an ack, a bootstrap page */
	WEFT_ROLLBACK = 2, /* a rejected transaction's effect was undone */
};

/*
 * weft_change_fn - a record of the view changed.  version is the server
 * version the row is based on; deleted is 1 for a tombstone.  Runs on the
 * committing thread for WEFT_LOCAL, on the sync thread otherwise.
 */
typedef void (*weft_change_fn)(void *arg, const char *table, const char *id,
			       uint64_t version, int deleted, int origin);

/* weft_state_fn - the connection state changed; detail says why. */
typedef void (*weft_state_fn)(void *arg, int state, const char *detail);

/*
 * weft_reject_fn - the server rejected transaction mid: code (a weft_err:
 * EPERM, EVALIDATION, ECONFLICT, ENOTFOUND, EEXIST, ELIMIT), a sentence,
 * and the op (1-based; 0 = the whole transaction) and field at fault.
 * Its effects are gone from the view by the time this runs.
 */
typedef void (*weft_reject_fn)(void *arg, uint64_t mid, int code,
			       const char *msg, unsigned opnum,
			       const char *field);

struct weft_callbacks {
	weft_change_fn change;
	weft_state_fn state;
	weft_reject_fn reject;
	weft_progress_fn progress;
	void *arg; /* passed to each */
};

/*
 * weft_set_callbacks - install callbacks (a copy of cb; NULL members are
 * not called).  Set them before subscribing to see the first changes.
 */
WEFT_API void weft_set_callbacks(weft_store *st,
				 const struct weft_callbacks *cb);

/* weft_state - the current enum weft_state. */
WEFT_API int weft_state(weft_store *st);

/*
 * weft_pending - transactions committed and not yet answered by the
 * server: overall, and touching one record.
 */
WEFT_API uint64_t weft_pending(weft_store *st);
WEFT_API uint64_t weft_pending_record(weft_store *st, const char *table,
				      const char *id);

/*
 * weft_wait_synced - wait until every transaction committed before the
 * call is answered and every subscribed space is loaded, or timeout_ms
 * pass (ETIMEDOUT).  Not from a callback.
 */
WEFT_API int weft_wait_synced(weft_store *st, int timeout_ms);

/* weft_cursor - the position in the change log applied so far */
WEFT_API void weft_cursor(weft_store *st, uint64_t *lsn, uint32_t *idx);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_WEFT_H */
