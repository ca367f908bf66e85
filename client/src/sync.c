/*
 * sync.c - the sync engine: one thread that keeps a store in step with
 * weft-write and weft-fanout.
 *
 * The thread owns both connections.  nng's receive callbacks only cut
 * frames and put them on the inbox; everything else (SQLite, callbacks,
 * sends) happens on the sync thread, so no store state is touched from
 * nng's threads.  App threads talk to it through the inbox too (a commit
 * kicks it; a fetch is a request it sends).
 *
 * Connection state (enum weft_state):
 *
 *            dial ok, HELLO sent          WELCOME
 *   OFFLINE ----------------------> CONNECTING ------> SYNCING <--+
 *      ^                                 |                |       | new commit,
 *      |  backoff (jittered, doubling)   | auth refused   | queue | subscribe,
 *      +---------------------------------+ and no token   | empty | catch-up
 *      |                                 v  (NEEDS_AUTH)  | and   |
 *      +--------- connection lost --------------------  LIVE -----+
 *
 *   transition                    function
 *   OFFLINE -> CONNECTING         link_dial()
 *   CONNECTING -> SYNCING         on_write_msg() (WELCOME)
 *   SYNCING <-> LIVE              update_state()
 *   any -> OFFLINE                link_drop()
 *   CONNECTING -> NEEDS_AUTH      on_write_msg() (ERROR EAUTH/EEXPIRED)
 *
 * What goes where:
 *   weft-write: HELLO, TXN (rid = mutation id), FETCH, BOOTSTRAP, PING.
 *   weft-fanout: HELLO, SUBSCRIBE (with the store's cursor), PING.
 *
 * Order and idempotence: the queue is sent in mutation-id order, up to
 * max_in_flight ahead of the answers, and from its start again after a
 * reconnect (the server answers a resend with the stored result).  A
 * BACKOFF for a transaction (weft-write overloaded, or the user over its
 * rate) halves how far ahead it sends, and each answer widens it by one
 * again, so a held-back client sends about what will be taken instead of
 * a window of requests to be refused.  Server
 * rows (ACK, REJECT, RECORDS, PAGE, PUSH) are applied to the base only if
 * their version is newer, so their order does not matter; each is followed
 * by a rebase of the record's view.
 */
#include <nng/nng.h>
#include <nng/supplemental/tls/tls.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "client/src/internal.h"
#include "common/clock.h"
#include "proto/frame.h"
#include "proto/json.h"

#include "common/banned.h"

/* RX_CHUNK - bytes per receive */
#define RX_CHUNK	 (16u << 10)
/* FRAME_MAX_CLIENT - the largest frame the client accepts: bootstrap
 * pages are bounded well below it */
#define FRAME_MAX_CLIENT (16u << 20)
/* DIAL_MS - a dial, or a send, that takes longer has failed */
#define DIAL_MS		 3000
/* BACKOFF_MIN_MS / BACKOFF_MAX_MS - reconnect delays (jittered) */
#define BACKOFF_MIN_MS	 100
#define BACKOFF_MAX_MS	 10000
/* PAGE_BYTES - bootstrap page size asked for */
#define PAGE_BYTES	 (256u << 10)
/* FETCH_RID_BASE - rids of requests other than TXN (whose rid is its
 * mutation id) */
#define FETCH_RID_BASE	 (1ull << 62)
/* UNSUB_RID_BASE - rids of UNSUBSCRIBE, whose answers are not grants */
#define UNSUB_RID_BASE	 (FETCH_RID_BASE + (3ull << 40))
/* RESUB_MS / RESUB_MAX_MS - a refused subscription is asked for again
 * after RESUB_MS, then after twice as long each time it is refused again,
 * up to RESUB_MAX_MS.  The fanout grants refused keys by itself when the
 * user's membership changes, so this is only the fallback (a record that
 * did not exist yet, a key past the fanout's REFUSED_MAX) */
#define RESUB_MS	 2000
#define RESUB_MAX_MS	 60000
/* MAX_SUB_KEYS - keys per SUBSCRIBE */
#define MAX_SUB_KEYS	 64

enum link_id { L_WRITE, L_FANOUT, L_N };

/* one connection */
struct link {
	struct sync *sy;
	enum link_id id;
	nng_stream *stream; /* NULL when down */
	nng_aio *rx_aio;
	uint8_t rx[RX_CHUNK];
	struct frame_reader fr;
	uint64_t gen;  /* bumped per connection: stale frames are
			* dropped */
	bool welcomed; /* WELCOME received */
	uint64_t next_dial_ms;
	uint32_t backoff_ms;
	uint32_t heartbeat_ms;
	uint64_t last_rx_ms, last_tx_ms;
	size_t url_idx; /* fanout: which URL */
};

/* one frame (or a link's end) for the sync thread */
struct inmsg {
	struct inmsg *next;
	enum link_id link;
	uint64_t gen;
	uint8_t *body; /* NULL: the link closed */
	uint32_t len;
};

/* a weft_fetch() waiting for its RECORDS */
struct fetchreq {
	struct fetchreq *next;
	uint64_t rid;
	struct buf frame; /* FETCH, encoded */
	bool sent, done;
	int result;
};

struct sync {
	weft_store *st;
	pthread_t thread;
	pthread_mutex_t mu;	/* the fields below */
	pthread_cond_t cv;	/* inbox, kick, stop */
	pthread_cond_t done_cv; /* progress for weft_wait_synced, fetch */
	bool stopping, kicked;
	struct inmsg *in_head, *in_tail;
	struct fetchreq *fetches;
	int state; /* enum weft_state */
	char detail[ERR_MAX];
	char *token; /* current token (owned) */
	bool token_refused;
	uint64_t acked_mid;  /* every mid <= this is answered */
	uint64_t queued_max; /* the highest mid queued */
	bool subs_loaded;    /* every subscription loaded */
	/* keys that left weft_subs, to UNSUBSCRIBE (owned strings) */
	char **dropped;
	size_t ndropped;
	/* sync thread only */
	struct link link[L_N];
	char *write_url;
	char **fanout_urls;
	size_t nfanout;
	char *ca_file;
	weft_token_fn token_fn;
	void *token_arg;
	unsigned max_in_flight;
	unsigned window;	       /* sent ahead of the answers now: 1 ..
					* max_in_flight (BACKOFF halves it) */
	uint64_t sent_mid;	       /* highest mid sent on this connection */
	uint64_t hold_until_ms;	       /* BACKOFF: no TXN before this */
	struct proto_cursor prev_push; /* fanout: last PUSH's cursor */
	struct proto_cursor cursor;    /* applied so far (also in meta) */
	char **subscribed;	       /* keys sent in SUBSCRIBE this session */
	bool *granted;		       /* subscribed[i] answered OK: only then
					* may it load (subscribe first) */
	size_t nsubscribed;
	char boot_key[KEY_MAX]; /* the subscription being loaded */
	uint64_t boot_rid, boot_records, boot_bytes, boot_total;
	uint64_t boot_v0; /* rec/ load: the local version when fetched */
	/* a record subscription refused EPERM: the fetch that checks, on
	 * the write link, whether the record is gone (one at a time) */
	uint64_t verify_rid, verify_v0;
	char verify_key[KEY_MAX];
	uint64_t next_rid;
	uint64_t resub_at_ms; /* refused keys are asked for again then */
	bool sweep_check;  /* a key loaded (or notes came): try sweep_loaded */
	uint32_t resub_ms; /* the wait after the last refusal; 0: none */
	bool trace; /* WEFT_CLIENT_TRACE set: a line per event on stderr */
};

#define TRACE(sy, ...)                                            \
	do {                                                      \
		if ((sy)->trace) {                                \
			fprintf(stderr, "libweft: " __VA_ARGS__); \
			fputc('\n', stderr);                      \
		}                                                 \
	} while (0)

/* ------------------------------------------------------------------ */
/* small helpers */

static uint64_t
now_ms(void)
{
	return clock_now_ms();
}

static uint32_t
jitter(uint32_t ms)
{
	uint32_t r = 0;

	(void)!getrandom(&r, sizeof(r), 0);
	return ms / 2 + (ms ? r % (ms / 2 + 1) : 0);
}

static char *
cstr(struct proto_str s)
{
	return s.p ? strndup(s.p, s.len) : strdup("");
}

static void
set_state(struct sync *sy, int state, const char *detail)
{
	struct weft_callbacks cb;
	bool changed;

	pthread_mutex_lock(&sy->mu);
	changed = sy->state != state;
	sy->state = state;
	snprintf(sy->detail, sizeof(sy->detail), "%s", detail ? detail : "");
	pthread_cond_broadcast(&sy->done_cv);
	pthread_mutex_unlock(&sy->mu);
	if (!changed)
		return;
	pthread_mutex_lock(&sy->st->mu);
	cb = sy->st->cb;
	pthread_mutex_unlock(&sy->st->mu);
	if (cb.state)
		cb.state(cb.arg, state, detail ? detail : "");
}

/* ------------------------------------------------------------------ */
/* links */

static void
rx_cb(void *arg)
{
	struct link *l = arg;
	struct sync *sy = l->sy;
	int rv = nng_aio_result(l->rx_aio);
	size_t n = rv ? 0 : nng_aio_count(l->rx_aio), off = 0;
	struct inmsg *head = NULL, **tail = &head;
	bool closed = rv != 0 || n == 0;

	while (!closed && off < n) {
		size_t used;

		if (frame_reader_feed(&l->fr, l->rx + off, n - off, &used)) {
			closed = true;
			break;
		}
		off += used;
		if (frame_reader_ready(&l->fr)) {
			uint32_t len;
			const uint8_t *body = frame_reader_body(&l->fr, &len);
			struct inmsg *m = calloc(1, sizeof(*m));

			if (!m || !(m->body = malloc(len))) {
				free(m);
				closed = true;
				break;
			}
			memcpy(m->body, body, len);
			m->len = len;
			m->link = l->id;
			m->gen = l->gen;
			*tail = m;
			tail = &m->next;
			frame_reader_next(&l->fr);
		}
	}
	if (closed) {
		struct inmsg *m = calloc(1, sizeof(*m));

		if (m) {
			m->link = l->id;
			m->gen = l->gen;
			*tail = m;
		}
	}
	pthread_mutex_lock(&sy->mu);
	if (head) {
		if (sy->in_tail)
			sy->in_tail->next = head;
		else
			sy->in_head = head;
		while (head->next)
			head = head->next;
		sy->in_tail = head;
	}
	pthread_cond_signal(&sy->cv);
	pthread_mutex_unlock(&sy->mu);
	if (!closed) {
		nng_iov iov = { l->rx, sizeof(l->rx) };

		nng_aio_set_iov(l->rx_aio, 1, &iov);
		nng_stream_recv(l->stream, l->rx_aio);
	}
}

/* send one encoded frame; false (and the link dropped) on failure */
static bool link_send_raw(struct link *l, const uint8_t *p, size_t n);
static void link_drop(struct link *l, const char *why);

static bool
link_send(struct link *l, const struct proto_msg *m)
{
	struct buf b;
	bool ok;

	buf_init(&b, 0);
	ok = proto_encode(&b, m, 0, NULL) == 0 &&
	     link_send_raw(l, b.data, b.len);
	buf_fini(&b);
	return ok;
}

static bool
link_send_raw(struct link *l, const uint8_t *p, size_t n)
{
	nng_aio *aio;
	size_t off = 0;
	int rv = 0;

	if (!l->stream)
		return false;
	if (nng_aio_alloc(&aio, NULL, NULL) != 0) {
		link_drop(l, "out of memory");
		return false;
	}
	nng_aio_set_timeout(aio, DIAL_MS);
	while (off < n && rv == 0) {
		nng_iov iov = { (uint8_t *)(uintptr_t)p + off, n - off };

		nng_aio_set_iov(aio, 1, &iov);
		nng_stream_send(l->stream, aio);
		nng_aio_wait(aio);
		rv = nng_aio_result(aio);
		off += nng_aio_count(aio);
	}
	nng_aio_free(aio);
	if (rv) {
		link_drop(l, nng_strerror(rv));
		return false;
	}
	l->last_tx_ms = now_ms();
	return true;
}

static const char *
link_name(const struct link *l)
{
	return l->id == L_WRITE ? "weft-write" : "weft-fanout";
}

static void
link_drop(struct link *l, const char *why)
{
	struct sync *sy = l->sy;
	char detail[ERR_MAX];

	if (!l->stream)
		return;
	nng_stream_close(l->stream);
	nng_aio_free(l->rx_aio); /* waits for a running rx_cb */
	l->rx_aio = NULL;
	nng_stream_free(l->stream);
	l->stream = NULL;
	l->welcomed = false;
	l->gen++;
	frame_reader_fini(&l->fr);
	l->backoff_ms = l->backoff_ms ? l->backoff_ms * 2 : BACKOFF_MIN_MS;
	if (l->backoff_ms > BACKOFF_MAX_MS)
		l->backoff_ms = BACKOFF_MAX_MS;
	l->next_dial_ms = now_ms() + jitter(l->backoff_ms);
	if (l->id == L_FANOUT) {
		for (size_t i = 0; i < sy->nsubscribed; i++)
			free(sy->subscribed[i]);
		sy->nsubscribed = 0;
		/* a new session holds nothing: no UNSUBSCRIBE to send */
		pthread_mutex_lock(&sy->mu);
		for (size_t i = 0; i < sy->ndropped; i++)
			free(sy->dropped[i]);
		sy->ndropped = 0;
		pthread_mutex_unlock(&sy->mu);
		sy->prev_push = (struct proto_cursor){ 0, 0 };
		if (sy->nfanout > 1) /* another node next time */
			l->url_idx = (l->url_idx + 1) % sy->nfanout;
	} else {
		sy->boot_rid = 0;
		sy->verify_rid = 0;
		for (struct fetchreq *f = sy->fetches; f; f = f->next)
			f->sent = false;
	}
	snprintf(detail, sizeof(detail), "%s: %s", link_name(l), why);
	TRACE(sy, "dropped %s", detail);
	if (l->id == L_WRITE ||
	    !sy->link[L_WRITE].stream) /* the write link is what counts */
		set_state(sy,
			  sy->token_refused ? WEFT_NEEDS_AUTH : WEFT_OFFLINE,
			  detail);
}

/* ask the callback for a token (a new one clears a refusal); a copy of
 * the current one, or NULL if there is none or it was refused */
static char *
current_token(struct sync *sy)
{
	const char *t;
	char *out = NULL;

	if (sy->token_fn && (t = sy->token_fn(sy->token_arg)) != NULL) {
		char *c = strdup(t);

		if (c) {
			pthread_mutex_lock(&sy->mu);
			if (!sy->token || strcmp(sy->token, c) != 0)
				sy->token_refused = false; /* a new one */
			free(sy->token);
			sy->token = c;
			pthread_mutex_unlock(&sy->mu);
		}
	}
	pthread_mutex_lock(&sy->mu);
	if (sy->token && !sy->token_refused)
		out = strdup(sy->token);
	pthread_mutex_unlock(&sy->mu);
	return out;
}

static void
link_dial(struct link *l)
{
	struct sync *sy = l->sy;
	const char *url =
		l->id == L_WRITE ? sy->write_url : sy->fanout_urls[l->url_idx];
	nng_stream_dialer *d = NULL;
	nng_aio *aio = NULL;
	struct proto_msg m = { .type = PROTO_HELLO };
	char agent[32];
	char *token;
	int rv;

	token = current_token(sy);
	if (!token) {
		l->next_dial_ms = now_ms() + 1000;
		set_state(sy, WEFT_NEEDS_AUTH, "no usable token");
		return;
	}
	if (l->id == L_WRITE)
		set_state(sy, WEFT_CONNECTING, url);
	rv = nng_stream_dialer_alloc(&d, url);
	if (rv == 0 && sy->ca_file &&
	    (strncmp(url, "tls+", 4) == 0 || strncmp(url, "wss", 3) == 0))
		rv = nng_stream_dialer_set_string(d, NNG_OPT_TLS_CA_FILE,
						  sy->ca_file);
	if (rv == 0)
		rv = nng_aio_alloc(&aio, NULL, NULL);
	if (rv == 0)
		rv = nng_aio_alloc(&l->rx_aio, rx_cb, l);
	if (rv == 0) {
		nng_aio_set_timeout(aio, DIAL_MS);
		nng_stream_dialer_dial(d, aio);
		nng_aio_wait(aio);
		rv = nng_aio_result(aio);
	}
	if (rv == 0)
		l->stream = nng_aio_get_output(aio, 0);
	nng_aio_free(aio);
	nng_stream_dialer_free(d);
	if (rv) {
		char detail[ERR_MAX];

		free(token);
		nng_aio_free(l->rx_aio);
		l->rx_aio = NULL;
		l->backoff_ms =
			l->backoff_ms ? l->backoff_ms * 2 : BACKOFF_MIN_MS;
		if (l->backoff_ms > BACKOFF_MAX_MS)
			l->backoff_ms = BACKOFF_MAX_MS;
		l->next_dial_ms = now_ms() + jitter(l->backoff_ms);
		if (l->id == L_FANOUT && sy->nfanout > 1)
			l->url_idx = (l->url_idx + 1) % sy->nfanout;
		snprintf(detail, sizeof(detail), "%s at %s: %s", link_name(l),
			 url, nng_strerror(rv));
		if (l->id == L_WRITE)
			set_state(sy, WEFT_OFFLINE, detail);
		return;
	}
	frame_reader_init(&l->fr, FRAME_MAX_CLIENT);
	l->last_rx_ms = l->last_tx_ms = now_ms();
	l->heartbeat_ms = 0;
	{
		nng_iov iov = { l->rx, sizeof(l->rx) };

		nng_aio_set_iov(l->rx_aio, 1, &iov);
		nng_stream_recv(l->stream, l->rx_aio);
	}
	snprintf(agent, sizeof(agent), "libweft/%s", weft_version());
	m.u.hello = (struct proto_hello){
		1,
		PROTO_VERSION,
		proto_str_c(token),
		proto_str_c(sy->st->client_id),
		sy->cursor,
		proto_str_c(agent),
	};
	link_send(l, &m);
	free(token);
}

/* ------------------------------------------------------------------ */
/* applying server rows */

/* mu held: one statement about a subscription key; 0 or the error */
static int
exec_key(weft_store *st, const char *sql, const char *key, int len,
	 const char *what)
{
	sqlite3_stmt *q;
	int rc = 0;

	if (sqlite3_prepare_v2(st->db, sql, -1, &q, NULL) != SQLITE_OK)
		return st_sqlerr(st, what);
	sqlite3_bind_text(q, 1, key, len, SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE)
		rc = st_sqlerr(st, what);
	sqlite3_finalize(q);
	return rc;
}

/* mu held on entry, released here: commit what rc says went well (or
 * roll back), then report the changes */
static int
finish_locked(weft_store *st, int rc, struct notes *ns)
{
	if (!rc)
		rc = st_commit(st);
	if (rc) {
		st_rollback(st);
		st->qi.stale = true; /* a dequeue may be undone */
	}
	pthread_mutex_unlock(&st->mu);
	notes_fire(st, ns);
	return rc;
}

/* mu held: is nothing queued (then no server row needs a rebase)? */
static bool
queue_empty(weft_store *st)
{
	return st_qindex(st)->entries == 0;
}

/* mu held: does text parse as JSON?  (The decoder checked that it is
 * UTF-8 shaped like an object; SQLite's parser checks the rest.) */
static bool
json_text_ok(weft_store *st, struct proto_str text)
{
	sqlite3_stmt *q = st_q(st, Q_JSON_VALID);
	bool ok;

	if (!q)
		return false;
	sqlite3_bind_text(q, 1, text.p, (int)text.len, SQLITE_STATIC);
	ok = sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 0) == 1;
	sqlite3_reset(q);
	return ok;
}

/*
 * mu held: one server row, if it is newer than the one held.  When
 * nothing queued touches the record it goes straight into the view, which
 * is its confirmed row (no JSON parsing, one row written: the bootstrap
 * path); else into the base, and the view is rebased.  qempty: the caller
 * knows the whole queue is empty.
 */
static int
apply_server_row(weft_store *st, const struct proto_record *r, bool qempty,
		 struct notes *ns)
{
	char t[PROTO_MAX_NAME + 1], id[PROTO_MAX_NAME + 1];
	struct buf js;
	sqlite3_stmt *q;
	bool queued = false;
	int rc = 0;

	str_copy(t, sizeof(t), r->table);
	str_copy(id, sizeof(id), r->id);
	buf_init(&js, 0);
	/* the server lists it: a space loading again keeps it */
	if (st->sweeping &&
	    (rc = st_run_key(st, Q_SWEEP_SEEN, t, id, "mark a record seen")))
		goto out;
	if (r->json.p) { /* JSON already: stored as it is, once it parses */
		if (!json_text_ok(st, r->json)) {
			/* left out, and the rest of the page goes on */
			if (st->sync)
				TRACE(st->sync,
				      "record %s/%s left out: its dj is not JSON",
				      t, id);
			goto out;
		}
		buf_append(&js, r->json.p, r->json.len);
		if (buf_append(&js, "", 1)) {
			rc = WEFT_ENOMEM;
			goto out;
		}
	} else if (!r->deleted) {
		if (r->data.p)
			rc = json_from_mp(&js, r->data.p, r->data.len);
		else
			buf_append(&js, "{}", 2);
		if (!rc && buf_append(&js, "", 1))
			rc = WEFT_ENOMEM;
		if (rc)
			goto out;
	}
	if (!qempty) {
		const uint64_t *mids;

		queued = qindex_get(st_qindex(st), t, id, &mids) > 0;
	}
	/* a record nothing queued touches has no base row: its view row is
	 * its confirmed row; else the base takes it and the view is rebased */
	q = st_q(st, queued ? Q_BASE_UPSERT : Q_VIEW_UPSERT);
	if (!q) {
		rc = WEFT_EIO;
		goto out;
	}
	sqlite3_bind_text(q, 1, t, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 3, r->space.p ? r->space.p : "", (int)r->space.len,
			  SQLITE_STATIC);
	sqlite3_bind_int64(q, 4, (sqlite3_int64)r->version);
	sqlite3_bind_int(q, 5, r->deleted);
	if (r->deleted)
		sqlite3_bind_null(q, 6);
	else
		sqlite3_bind_text(q, 6, (const char *)js.data, -1,
				  SQLITE_STATIC);
	if (sqlite3_step(q) != SQLITE_DONE) {
		rc = st_sqlerr(st, "store a server row");
		sqlite3_reset(q);
		goto out;
	}
	sqlite3_reset(q);
	if (sqlite3_changes(st->db) == 0)
		goto out; /* not newer than what we hold */
	if (queued) {
		rc = rebase(st, t, id, ns, WEFT_REMOTE);
		goto out;
	}
	notes_addv(ns, t, id, r->version, r->deleted, WEFT_REMOTE);
out:
	buf_fini(&js);
	return rc;
}

/* mu held: mid leaves the queue (its touched records, from its frame,
 * are rebased); the highest id answered is kept for the next open */
static int
dequeue(weft_store *st, uint64_t mid, int origin, struct notes *ns)
{
	sqlite3_stmt *q = st_q(st, Q_QUEUE_FRAME);
	char **keys = NULL;
	size_t n = 0;
	int rc = 0;

	if (!q)
		return WEFT_EIO;
	sqlite3_bind_int64(q, 1, (sqlite3_int64)mid);
	if (sqlite3_step(q) != SQLITE_ROW) {
		sqlite3_reset(q);
		return 0; /* answered already */
	}
	rc = txn_keys(sqlite3_column_blob(q, 0),
		      (size_t)sqlite3_column_bytes(q, 0), &keys, &n);
	sqlite3_reset(q);
	if (rc)
		return st_err(st, rc, "queued transaction %llu is unreadable",
			      (unsigned long long)mid);
	/* its undo moves to weft_undo, then the row goes; the undo table
	 * keeps its newest UNDO_KEEP */
	for (int s = 0; s < 4 && !rc; s++) {
		static const enum sid steps[] = { Q_UNDO_KEEP, Q_QUEUE_DEL,
						  Q_HWM, Q_UNDO_PRUNE };

		if (steps[s] == Q_UNDO_PRUNE && mid % 64 != 0)
			break;
		if (steps[s] == Q_UNDO_KEEP && origin == WEFT_ROLLBACK)
			continue; /* rejected: nothing happened to undo */
		q = st_q(st, steps[s]);
		if (!q) {
			rc = WEFT_EIO;
			break;
		}
		sqlite3_bind_int64(q, 1,
				   steps[s] == Q_UNDO_PRUNE
					   ? UNDO_KEEP
					   : (sqlite3_int64)mid);
		if (sqlite3_step(q) != SQLITE_DONE)
			rc = st_sqlerr(st, "dequeue a transaction");
		sqlite3_reset(q);
	}
	/* the index forgets it at once: if this SQLite transaction rolls
	 * back, the frame is still queued but unindexed, so the index is
	 * marked stale and rebuilt (the caller's rollback path) */
	for (size_t i = 0; !rc && i + 1 < n; i += 2) {
		qindex_del(&st->qi, keys[i], keys[i + 1], mid);
		rc = rebase(st, keys[i], keys[i + 1], ns, origin);
	}
	for (size_t i = 0; i < n; i++)
		free(keys[i]);
	free(keys);
	return rc;
}

/* the mutation id below the queue's first: every id up to it is
 * answered */
static uint64_t
queue_floor(weft_store *st)
{
	sqlite3_stmt *q;
	uint64_t floor;

	pthread_mutex_lock(&st->mu);
	floor = st->next_mid - 1;
	if (sqlite3_prepare_v2(st->db, "SELECT min(mid) FROM weft_queue", -1,
			       &q, NULL) == SQLITE_OK) {
		if (sqlite3_step(q) == SQLITE_ROW &&
		    sqlite3_column_type(q, 0) != SQLITE_NULL)
			floor = (uint64_t)sqlite3_column_int64(q, 0) - 1;
		sqlite3_finalize(q);
	}
	pthread_mutex_unlock(&st->mu);
	return floor;
}

static void
note_answered(struct sync *sy, uint64_t mid)
{
	pthread_mutex_lock(&sy->mu);
	if (mid > sy->acked_mid)
		sy->acked_mid = mid;
	pthread_cond_broadcast(&sy->done_cv);
	pthread_mutex_unlock(&sy->mu);
}

/* an ACK or REJECT: the rows, then the transaction leaves the queue */
static void
on_answer(struct sync *sy, uint64_t mid, const struct proto_list *records,
	  const struct proto_reject *rej)
{
	weft_store *st = sy->st;
	struct notes ns = { 0 };
	struct proto_iter it;
	struct proto_record r;
	int origin = rej ? WEFT_ROLLBACK : WEFT_REMOTE;
	int rc;

	pthread_mutex_lock(&st->mu);
	ns.off = st->cb.change == NULL;
	rc = st_begin(st);
	proto_iter_init(&it, records);
	while (!rc && proto_next_record(&it, &r) == 1)
		rc = apply_server_row(st, &r, false, &ns);
	if (!rc)
		rc = dequeue(st, mid, origin, &ns);
	rc = finish_locked(st, rc, &ns);
	if (rc)
		return; /* left queued: resent, answered again */
	if (rej) {
		struct weft_callbacks cb;
		char *msg = cstr(rej->msg), *field = cstr(rej->field);

		pthread_mutex_lock(&st->mu);
		cb = st->cb;
		pthread_mutex_unlock(&st->mu);
		if (cb.reject)
			cb.reject(cb.arg, mid, rej->code, msg ? msg : "",
				  rej->opnum, rej->field.p ? field : NULL);
		free(msg);
		free(field);
	}
	note_answered(sy, mid);
}

/* rows of a RECORDS or PAGE */
static int
apply_rows(struct sync *sy, const struct proto_list *records, uint64_t *nrec)
{
	weft_store *st = sy->st;
	struct notes ns = { 0 };
	struct proto_iter it;
	struct proto_record r;
	bool qempty;
	int rc;

	pthread_mutex_lock(&st->mu);
	ns.off = st->cb.change == NULL;
	rc = st_begin(st);
	qempty = queue_empty(st);
	proto_iter_init(&it, records);
	while (!rc && proto_next_record(&it, &r) == 1) {
		rc = apply_server_row(st, &r, qempty, &ns);
		if (nrec)
			(*nrec)++;
	}
	return finish_locked(st, rc, &ns);
}

/* ------------------------------------------------------------------ */
/* the queue */

/* send queued transactions after sent_mid, up to the in-flight window */
static void
push_queue(struct sync *sy)
{
	weft_store *st = sy->st;
	struct link *l = &sy->link[L_WRITE];
	sqlite3_stmt *q;
	struct {
		uint64_t mid;
		uint8_t *frame;
		size_t len;
	} batch[64];
	size_t n = 0, want;
	uint64_t acked;

	if (!l->welcomed || now_ms() < sy->hold_until_ms)
		return;
	pthread_mutex_lock(&sy->mu);
	acked = sy->acked_mid;
	pthread_mutex_unlock(&sy->mu);
	if (sy->sent_mid < acked)
		sy->sent_mid = acked;
	if (sy->sent_mid - acked >= sy->window)
		return;
	want = sy->window - (size_t)(sy->sent_mid - acked);
	if (want > 64)
		want = 64;
	pthread_mutex_lock(&st->mu);
	if (sqlite3_prepare_v2(
		    st->db,
		    "SELECT mid, frame FROM weft_queue WHERE mid > ?1"
		    " ORDER BY mid LIMIT ?2",
		    -1, &q, NULL) == SQLITE_OK) {
		sqlite3_bind_int64(q, 1, (sqlite3_int64)sy->sent_mid);
		sqlite3_bind_int64(q, 2, (sqlite3_int64)want);
		while (n < want && sqlite3_step(q) == SQLITE_ROW) {
			size_t len = (size_t)sqlite3_column_bytes(q, 1);

			batch[n].mid = (uint64_t)sqlite3_column_int64(q, 0);
			batch[n].frame = malloc(len ? len : 1);
			if (!batch[n].frame)
				break;
			memcpy(batch[n].frame, sqlite3_column_blob(q, 1), len);
			batch[n].len = len;
			n++;
		}
		sqlite3_finalize(q);
	}
	pthread_mutex_unlock(&st->mu);
	for (size_t i = 0; i < n; i++) {
		if (l->stream && link_send_raw(l, batch[i].frame, batch[i].len))
			sy->sent_mid = batch[i].mid;
		free(batch[i].frame);
	}
}

/* ------------------------------------------------------------------ */
/* subscriptions and bootstrap */

/* key's place in this fanout session's subscribed list, or -1 */
static long
sub_index(const struct sync *sy, const char *key)
{
	for (size_t i = 0; i < sy->nsubscribed; i++)
		if (strcmp(sy->subscribed[i], key) == 0)
			return (long)i;
	return -1;
}

/* mu held: whether key is one of the store's subscriptions */
static bool
sub_stored(weft_store *st, const char *key, int len)
{
	sqlite3_stmt *q;
	bool found = false;

	if (sqlite3_prepare_v2(st->db, "SELECT 1 FROM weft_subs WHERE key = ?1",
			       -1, &q, NULL) != SQLITE_OK)
		return true; /* unknown: keep it */
	sqlite3_bind_text(q, 1, key, len, SQLITE_STATIC);
	found = sqlite3_step(q) == SQLITE_ROW;
	sqlite3_finalize(q);
	return found;
}

/* UNSUBSCRIBE keys (n <= MAX_SUB_KEYS) on the fanout link */
static void
send_unsubscribe(struct sync *sy, const struct proto_str *keys, size_t n)
{
	struct proto_msg m = { .type = PROTO_UNSUBSCRIBE };

	m.u.subscribe = (struct proto_subscribe){
		UNSUB_RID_BASE + ++sy->next_rid, PROTO_LIST(n, keys), { 0, 0 }
	};
	link_send(&sy->link[L_FANOUT], &m);
}

/* the keys the store stopped following (weft_unsubscribe_*): UNSUBSCRIBE
 * each one still gone, whether this session holds it, asked for it, or
 * was refused it (the fanout remembers those), so no more pushes come */
static void
send_unsubscribes(struct sync *sy)
{
	weft_store *st = sy->st;
	char **dropped;
	size_t n;
	struct proto_str ks[MAX_SUB_KEYS];
	size_t nk = 0;

	pthread_mutex_lock(&sy->mu);
	dropped = sy->dropped;
	n = sy->ndropped;
	sy->dropped = NULL;
	sy->ndropped = 0;
	pthread_mutex_unlock(&sy->mu);
	for (size_t d = 0; d < n; d++) {
		bool stored;

		pthread_mutex_lock(&st->mu);
		stored = sub_stored(st, dropped[d], -1);
		pthread_mutex_unlock(&st->mu);
		if (stored)
			continue; /* followed again since */
		for (size_t i = sy->nsubscribed; i-- > 0;) {
			if (strcmp(sy->subscribed[i], dropped[d]) != 0)
				continue;
			free(sy->subscribed[i]);
			sy->nsubscribed--;
			sy->subscribed[i] = sy->subscribed[sy->nsubscribed];
			sy->granted[i] = sy->granted[sy->nsubscribed];
		}
		TRACE(sy, "unsubscribe %s", dropped[d]);
		ks[nk++] = proto_str_c(dropped[d]);
		if (nk == MAX_SUB_KEYS) {
			send_unsubscribe(sy, ks, nk);
			nk = 0;
		}
	}
	if (nk)
		send_unsubscribe(sy, ks, nk);
	for (size_t d = 0; d < n; d++)
		free(dropped[d]);
	free(dropped);
}

/* SUBSCRIBE every stored key this fanout session does not have yet; a
 * refused one waits until resub_at_ms, the others go at once */
static void
send_subscribes(struct sync *sy)
{
	weft_store *st = sy->st;
	struct link *l = &sy->link[L_FANOUT];
	sqlite3_stmt *q;
	char *keys[MAX_SUB_KEYS];
	size_t n = 0;
	bool waiting;

	if (!l->welcomed)
		return;
	send_unsubscribes(sy);
	waiting = now_ms() < sy->resub_at_ms;
	pthread_mutex_lock(&st->mu);
	if (sqlite3_prepare_v2(st->db, "SELECT key, refused FROM weft_subs", -1,
			       &q, NULL) == SQLITE_OK) {
		while (n < MAX_SUB_KEYS && sqlite3_step(q) == SQLITE_ROW) {
			const char *k = (const char *)sqlite3_column_text(q, 0);

			if (waiting && sqlite3_column_int(q, 1))
				continue;
			if (sub_index(sy, k) < 0 && (keys[n] = strdup(k)))
				n++;
		}
		sqlite3_finalize(q);
	}
	pthread_mutex_unlock(&st->mu);
	if (n) {
		struct proto_str ks[MAX_SUB_KEYS];
		struct proto_msg m = { .type = PROTO_SUBSCRIBE };
		char **nv = realloc(sy->subscribed,
				    (sy->nsubscribed + n) * sizeof(*nv));
		bool *ng = realloc(sy->granted,
				   (sy->nsubscribed + n) * sizeof(*ng));

		for (size_t i = 0; i < n; i++)
			ks[i] = proto_str_c(keys[i]);
		m.u.subscribe = (struct proto_subscribe){ ++sy->next_rid,
							  PROTO_LIST(n, ks),
							  sy->cursor };
		if (nv)
			sy->subscribed = nv;
		if (ng)
			sy->granted = ng;
		if (nv && ng) {
			for (size_t i = 0; i < n; i++) {
				sy->granted[sy->nsubscribed] = false;
				sy->subscribed[sy->nsubscribed++] = keys[i];
			}
		}
		link_send(l, &m);
		if (!nv || !ng)
			for (size_t i = 0; i < n; i++)
				free(keys[i]);
	}
}

static bool
key_granted(const struct sync *sy, const char *key)
{
	long i = sub_index(sy, key);

	return i >= 0 && sy->granted[i];
}

static uint64_t droppable_version(weft_store *st, const char *t,
				  const char *id);
static int sweep_loaded(weft_store *st);

/* the next bootstrap page (or record fetch) of a subscription not loaded */
static void
continue_bootstrap(struct sync *sy)
{
	weft_store *st = sy->st;
	struct link *l = &sy->link[L_WRITE];
	sqlite3_stmt *q;
	char key[KEY_MAX] = "";
	uint8_t token[PROTO_MAX_PAGE_TOKEN];
	size_t tlen = 0;
	bool all = true, sweeping;

	if (!l->welcomed || sy->boot_rid)
		return;
	pthread_mutex_lock(&st->mu);
	if (sqlite3_prepare_v2(
		    st->db,
		    "SELECT key, page, loaded, refused FROM weft_subs"
		    " ORDER BY key",
		    -1, &q, NULL) == SQLITE_OK) {
		while (sqlite3_step(q) == SQLITE_ROW) {
			const char *k = (const char *)sqlite3_column_text(q, 0);

			if (sqlite3_column_int(q, 3))
				continue; /* refused: asked again later */
			/* subscribe first: load only what the fanout
			 * session already follows, so no change falls
			 * between the snapshot and the pushes; and the
			 * fanout answers a subscription once it has sent
			 * what the store missed (or CATCHUP) */
			if (sy->nfanout && !key_granted(sy, k)) {
				all = false;
				continue;
			}
			if (sqlite3_column_int(q, 2))
				continue; /* loaded */
			all = false;
			if (key[0])
				continue; /* one at a time */
			snprintf(key, sizeof(key), "%s", k);
			tlen = (size_t)sqlite3_column_bytes(q, 1);
			if (tlen > sizeof(token))
				tlen = 0;
			if (tlen)
				memcpy(token, sqlite3_column_blob(q, 1), tlen);
		}
		sqlite3_finalize(q);
	}
	sweeping = st->sweeping;
	pthread_mutex_unlock(&st->mu);
	/* sweep once every followed key has loaded (sweep_loaded); notes
	 * left by an earlier run of the store are swept the same way */
	if (all && sweeping && sy->sweep_check) {
		if (sweep_loaded(st) != 0) {
			link_drop(l, "could not sweep a space");
			return;
		}
		sy->sweep_check = false;
	}
	pthread_mutex_lock(&sy->mu);
	sy->subs_loaded = all;
	pthread_cond_broadcast(&sy->done_cv);
	pthread_mutex_unlock(&sy->mu);
	if (all || !key[0])
		return;
	sy->boot_rid = FETCH_RID_BASE + ++sy->next_rid;
	if (strcmp(sy->boot_key, key) != 0) {
		memcpy(sy->boot_key, key, sizeof(key));
		sy->boot_records = sy->boot_bytes = sy->boot_total = 0;
	}
	if (strncmp(key, "space/", 6) == 0) {
		struct proto_msg m = { .type = PROTO_BOOTSTRAP };

		m.u.bootstrap = (struct proto_bootstrap){ sy->boot_rid,
							  proto_str_c(key + 6),
							  { tlen ? token : NULL,
							    (uint32_t)tlen },
							  PAGE_BYTES,
							  true };
		link_send(l, &m);
	} else { /* rec/<table>/<id>: fetch it */
		char *t = key + 4, *id = strchr(t, '/');
		struct proto_keyref ref;
		struct proto_msg m = { .type = PROTO_FETCH };

		if (!id) { /* never stored: weft_subscribe_record checks */
			sy->boot_rid = 0;
			return;
		}
		*id++ = '\0';
		pthread_mutex_lock(&st->mu);
		sy->boot_v0 = droppable_version(st, t, id);
		pthread_mutex_unlock(&st->mu);
		ref = (struct proto_keyref){ proto_str_c(t), proto_str_c(id) };
		m.u.fetch = (struct proto_fetch){ sy->boot_rid,
						  PROTO_LIST(1, &ref) };
		link_send(l, &m);
	}
}

static void
mark_loaded(struct sync *sy, const char *key, const uint8_t *next, size_t nlen)
{
	weft_store *st = sy->st;
	sqlite3_stmt *q;

	sy->sweep_check |= next == NULL;
	pthread_mutex_lock(&st->mu);
	if (sqlite3_prepare_v2(st->db,
			       "UPDATE weft_subs SET loaded = ?2, page = ?3"
			       " WHERE key = ?1",
			       -1, &q, NULL) == SQLITE_OK) {
		sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
		sqlite3_bind_int(q, 2, next == NULL);
		if (next)
			sqlite3_bind_blob(q, 3, next, (int)nlen, SQLITE_STATIC);
		else
			sqlite3_bind_null(q, 3);
		sqlite3_step(q);
		sqlite3_finalize(q);
	}
	pthread_mutex_unlock(&st->mu);
}

/*
 * space has loaded again (after CATCHUP): its rows the server has not
 * listed since (weft_sweep) left it while the store was away, moved to a
 * space it does not follow (or, one day, collected).  They go, with a
 * change note each, unless queued writes touch them (their answers carry
 * the server's row) or the store follows the record itself.
 */
static int
sweep_space(weft_store *st, const char *space)
{
	static const char gone[] =
		" FROM weft_rows r JOIN weft_sweep s ON s.tbl = r.tbl AND"
		" s.id = r.id WHERE s.space = ?1 AND r.space = ?1 AND"
		" r.pending = 0 AND NOT EXISTS (SELECT 1 FROM weft_subs WHERE"
		" key = 'rec/' || r.tbl || '/' || r.id AND refused = 0)";
	struct notes ns = { 0 };
	struct buf sql;
	sqlite3_stmt *q = NULL;
	int rc;

	pthread_mutex_lock(&st->mu);
	if (!st->sweeping) {
		pthread_mutex_unlock(&st->mu);
		return 0;
	}
	ns.off = st->cb.change == NULL;
	buf_init(&sql, 0);
	rc = st_begin(st);
	if (!rc &&
	    (buf_appendf(&sql, "SELECT r.tbl, r.id, r.version%s", gone) ||
	     sqlite3_prepare_v2(st->db, (const char *)sql.data, -1, &q, NULL) !=
		     SQLITE_OK))
		rc = st_sqlerr(st, "find the rows a space lost");
	if (!rc) {
		int step;

		sqlite3_bind_text(q, 1, space, -1, SQLITE_STATIC);
		while ((step = sqlite3_step(q)) == SQLITE_ROW)
			notes_addv(&ns, (const char *)sqlite3_column_text(q, 0),
				   (const char *)sqlite3_column_text(q, 1),
				   (uint64_t)sqlite3_column_int64(q, 2), true,
				   WEFT_REMOTE);
		if (step != SQLITE_DONE)
			rc = st_sqlerr(st, "find the rows a space lost");
	}
	sqlite3_finalize(q);
	buf_reset(&sql);
	if (!rc && (buf_appendf(&sql,
				"DELETE FROM weft_rows WHERE (tbl, id) IN"
				" (SELECT r.tbl, r.id%s)",
				gone) ||
		    exec_key(st, (const char *)sql.data, space, -1,
			     "drop the rows a space lost") ||
		    exec_key(st, "DELETE FROM weft_sweep WHERE space = ?1",
			     space, -1, "end a sweep")))
		rc = rc ? rc : WEFT_EIO;
	buf_fini(&sql);
	if (!rc &&
	    sqlite3_prepare_v2(st->db, "SELECT 1 FROM weft_sweep LIMIT 1", -1,
			       &q, NULL) == SQLITE_OK) {
		st->sweeping = sqlite3_step(q) == SQLITE_ROW;
		sqlite3_finalize(q);
	}
	return finish_locked(st, rc, &ns);
}

/*
 * Sweep every space that loaded again, once all of them have: not at
 * each one's last page. A record that moved between two followed spaces
 * while the store was away is noted in the one it left; swept at once,
 * it was reported deleted there and then created again by the other's
 * pages. Swept after all the loads, the other's page has cleared its
 * note, and it just moves. Spaces refused meanwhile keep their notes.
 */
static int
sweep_loaded(weft_store *st)
{
	char spaces[16][PROTO_MAX_NAME + 1];
	int n = 0, rc = 0;

	do {
		sqlite3_stmt *q;

		n = 0;
		pthread_mutex_lock(&st->mu);
		if (!st->sweeping) {
			pthread_mutex_unlock(&st->mu);
			return 0;
		}
		if (sqlite3_prepare_v2(
			    st->db,
			    "SELECT DISTINCT s.space FROM weft_sweep s JOIN"
			    " weft_subs k ON k.key = 'space/' || s.space AND"
			    " k.refused = 0 AND k.loaded LIMIT 16",
			    -1, &q, NULL) != SQLITE_OK) {
			rc = st_sqlerr(st, "find the spaces to sweep");
		} else {
			int step;

			while (n < 16 && (step = sqlite3_step(q)) == SQLITE_ROW)
				snprintf(spaces[n++], sizeof(spaces[0]), "%s",
					 (const char *)sqlite3_column_text(q,
									   0));
			if (n < 16 && step != SQLITE_DONE)
				rc = st_sqlerr(st, "find the spaces to sweep");
			sqlite3_finalize(q);
		}
		pthread_mutex_unlock(&st->mu);
		if (rc)
			return rc;
		for (int i = 0; i < n && !rc; i++)
			rc = sweep_space(st, spaces[i]);
	} while (!rc && n == 16);
	return rc;
}

static void save_cursor(struct sync *sy);

static void
on_page(struct sync *sy, const struct proto_page *p)
{
	uint64_t n = 0;
	struct weft_callbacks cb;

	if (p->rid != sy->boot_rid)
		return;
	sy->boot_rid = 0;
	if (p->total)
		sy->boot_total = p->total;
	if (p->next.p) {
		/* ask for the next page before storing this one: the
		 * server reads it while SQLite writes */
		struct proto_msg m = { .type = PROTO_BOOTSTRAP };

		sy->boot_rid = FETCH_RID_BASE + ++sy->next_rid;
		m.u.bootstrap =
			(struct proto_bootstrap){ sy->boot_rid,
						  proto_str_c(sy->boot_key + 6),
						  { p->next.p, p->next.len },
						  PAGE_BYTES,
						  true };
		link_send(&sy->link[L_WRITE], &m);
	}
	if (apply_rows(sy, &p->records, &n) != 0) {
		/* start again from the last page stored */
		link_drop(&sy->link[L_WRITE], "could not store a page");
		return;
	}
	sy->boot_records += n;
	sy->boot_bytes += p->records.raw_len;
	if (p->cursor.lsn && sy->cursor.lsn == 0) {
		/* no push applied yet: the snapshot's position is where a
		 * later session catches up from (what a store has is at
		 * least that new; pushes since are live on this session) */
		pthread_mutex_lock(&sy->st->mu);
		sy->cursor = p->cursor;
		save_cursor(sy);
		pthread_mutex_unlock(&sy->st->mu);
	}
	/* progress before the page is marked loaded: once the last one is,
	 * continue_bootstrap sweeps and wakes weft_wait_synced, which must
	 * find its "done" reported */
	pthread_mutex_lock(&sy->st->mu);
	cb = sy->st->cb;
	pthread_mutex_unlock(&sy->st->mu);
	if (cb.progress)
		cb.progress(cb.arg, sy->boot_key + 6, sy->boot_records,
			    sy->boot_bytes, sy->boot_total, p->next.p == NULL);
	mark_loaded(sy, sy->boot_key, p->next.p, p->next.len);
}

/* ------------------------------------------------------------------ */
/* pushes */

static void
save_cursor(struct sync *sy)
{
	char v[48];

	snprintf(v, sizeof(v), "%llu-%u", (unsigned long long)sy->cursor.lsn,
		 sy->cursor.idx);
	st_meta_set(sy->st, "cursor", v);
}

/* every subscription again, from the store's cursor */
static void
resubscribe(struct sync *sy)
{
	for (size_t i = 0; i < sy->nsubscribed; i++)
		free(sy->subscribed[i]);
	sy->nsubscribed = 0;
	sy->prev_push = (struct proto_cursor){ 0, 0 };
	send_subscribes(sy);
}

/*
 * mu held, in a store transaction: c moved a record out of a followed
 * space into c->space, and came without data.  Unless this client also
 * follows the new space or the record itself (those pushes carry the
 * row), its copy leaves the store: kept, it would stay in the old space
 * for good.  A record with queued transactions stays: their answers
 * carry the server's row.
 */
static int
drop_moved_out(weft_store *st, const struct proto_change *c, bool qempty,
	       struct notes *ns)
{
	char t[PROTO_MAX_NAME + 1], id[PROTO_MAX_NAME + 1];
	char sk[PROTO_MAX_NAME + 8], rk[2 * PROTO_MAX_NAME + 8];
	const uint64_t *mids;
	sqlite3_stmt *q;
	int step;

	str_copy(t, sizeof(t), c->table);
	str_copy(id, sizeof(id), c->id);
	if (!qempty && qindex_get(st_qindex(st), t, id, &mids) > 0)
		return 0;
	snprintf(sk, sizeof(sk), "space/%.*s", (int)c->space.len,
		 c->space.p ? c->space.p : "");
	snprintf(rk, sizeof(rk), "rec/%s/%s", t, id);
	if (!(q = st_q(st, Q_SUB_FOLLOWS)))
		return WEFT_EIO;
	sqlite3_bind_text(q, 1, sk, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, rk, -1, SQLITE_STATIC);
	step = sqlite3_step(q);
	sqlite3_reset(q);
	if (step == SQLITE_ROW)
		return 0;
	if (step != SQLITE_DONE)
		return st_sqlerr(st, "look up a subscription");
	if (!(q = st_q(st, Q_VIEW_DROP)))
		return WEFT_EIO;
	sqlite3_bind_text(q, 1, t, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
	sqlite3_bind_int64(q, 3, (sqlite3_int64)c->version);
	step = sqlite3_step(q);
	sqlite3_reset(q);
	if (step != SQLITE_DONE)
		return st_sqlerr(st, "drop a record that moved away");
	if (sqlite3_changes(st->db) > 0)
		notes_addv(ns, t, id, c->version, true, WEFT_REMOTE);
	return 0;
}

/* st->mu held: the version of table/id's local row, 0 when there is none
 * or queued transactions touch it (then it is not ours to drop) */
static uint64_t
droppable_version(weft_store *st, const char *t, const char *id)
{
	const uint64_t *mids;
	sqlite3_stmt *q;
	uint64_t v = 0;

	if (!queue_empty(st) && qindex_get(st_qindex(st), t, id, &mids) > 0)
		return 0;
	if (!(q = st_q(st, Q_VIEW_GET)))
		return 0;
	sqlite3_bind_text(q, 1, t, -1, SQLITE_STATIC);
	sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
	if (sqlite3_step(q) == SQLITE_ROW && sqlite3_column_int(q, 4) == 0)
		v = (uint64_t)sqlite3_column_int64(q, 1);
	sqlite3_reset(q);
	return v;
}

/* "rec/<t>/<id>" into t and id; false if key is not one */
static bool
split_rec_key(const char *key, char *t, size_t tcap, char *id, size_t idcap)
{
	const char *slash;

	if (strncmp(key, "rec/", 4) != 0 || !(slash = strchr(key + 4, '/')) ||
	    (size_t)(slash - key - 4) >= tcap || strlen(slash + 1) >= idcap)
		return false;
	memcpy(t, key + 4, (size_t)(slash - key - 4));
	t[slash - key - 4] = '\0';
	snprintf(id, idcap, "%s", slash + 1);
	return true;
}

/*
 * The server no longer has rec/<t>/<id> for us: a fetch sent when the
 * local row was at version v0 reported it missing.  It was deleted, and
 * its tombstone too (--tombstone-ttl), while no push could reach us, or
 * it is out of sight.  The local copy leaves the store, as the tombstone
 * would have taken it, unless it changed since the fetch was sent (an
 * answer or push brought a newer row) or queued transactions touch it.
 */
static int
drop_missing(struct sync *sy, const char *key, uint64_t v0)
{
	weft_store *st = sy->st;
	struct notes ns = { 0 };
	char t[PROTO_MAX_NAME + 1], id[PROTO_MAX_NAME + 1];
	sqlite3_stmt *q;
	int rc, step;

	if (!v0 || !split_rec_key(key, t, sizeof(t), id, sizeof(id)))
		return 0;
	pthread_mutex_lock(&st->mu);
	ns.off = st->cb.change == NULL;
	rc = st_begin(st);
	if (!rc && droppable_version(st, t, id) == v0) {
		if (!(q = st_q(st, Q_VIEW_DROP))) {
			rc = WEFT_EIO;
		} else {
			sqlite3_bind_text(q, 1, t, -1, SQLITE_STATIC);
			sqlite3_bind_text(q, 2, id, -1, SQLITE_STATIC);
			sqlite3_bind_int64(q, 3, (sqlite3_int64)(v0 + 1));
			step = sqlite3_step(q);
			sqlite3_reset(q);
			if (step != SQLITE_DONE)
				rc = st_sqlerr(st, "drop a record the server "
						   "lacks");
			else if (sqlite3_changes(st->db) > 0)
				notes_addv(&ns, t, id, v0, true, WEFT_REMOTE);
		}
	}
	return finish_locked(st, rc, &ns);
}

/*
 * A record subscription was refused with EPERM: no such record, or out of
 * sight.  The refusal may be older than what the store has (the fanout
 * checked before our own create committed), so it is checked again with a
 * fetch on the write link, sent now: that fetch sees every commit whose
 * answer arrived before it.  Nothing to check for a record the store does
 * not hold or that queued transactions touch.
 */
static void
verify_refused(struct sync *sy, const struct proto_str *key)
{
	struct link *l = &sy->link[L_WRITE];
	char k[KEY_MAX], t[PROTO_MAX_NAME + 1], id[PROTO_MAX_NAME + 1];
	struct proto_msg m = { .type = PROTO_FETCH };
	struct proto_keyref ref;
	uint64_t v0;

	if (sy->verify_rid || !l->welcomed || key->len >= sizeof(k))
		return; /* the next refusal (see RESUB_MS) tries again */
	memcpy(k, key->p, key->len);
	k[key->len] = '\0';
	if (!split_rec_key(k, t, sizeof(t), id, sizeof(id)))
		return;
	pthread_mutex_lock(&sy->st->mu);
	v0 = droppable_version(sy->st, t, id);
	pthread_mutex_unlock(&sy->st->mu);
	if (!v0)
		return;
	sy->verify_rid = FETCH_RID_BASE + (2ull << 40) + ++sy->next_rid;
	sy->verify_v0 = v0;
	memcpy(sy->verify_key, k, key->len + 1);
	ref = (struct proto_keyref){ proto_str_c(t), proto_str_c(id) };
	m.u.fetch = (struct proto_fetch){ sy->verify_rid, PROTO_LIST(1, &ref) };
	link_send(l, &m);
}

static void
on_push(struct sync *sy, const struct proto_push *p)
{
	weft_store *st = sy->st;
	struct notes ns = { 0 };
	struct proto_iter it;
	struct proto_change c;
	bool qempty;
	int rc;

	if (proto_cursor_cmp(p->prev, sy->prev_push) != 0) {
		/* a push went missing: catch up from what we applied */
		TRACE(sy, "push gap: prev %llu-%u, expected %llu-%u",
		      (unsigned long long)p->prev.lsn, p->prev.idx,
		      (unsigned long long)sy->prev_push.lsn, sy->prev_push.idx);
		resubscribe(sy);
		return;
	}
	sy->prev_push = p->cursor;
	pthread_mutex_lock(&st->mu);
	ns.off = st->cb.change == NULL;
	rc = st_begin(st);
	qempty = queue_empty(st);
	proto_iter_init(&it, &p->changes);
	while (!rc && proto_next_change(&it, &c) == 1) {
		struct proto_record r = { c.table,    c.id,	 c.space,
					  c.version,  c.deleted, c.data,
					  { NULL, 0 } };

		if (!c.deleted && !c.data.p) {
			/* moved to a space we may not follow */
			rc = drop_moved_out(st, &c, qempty, &ns);
			continue;
		}
		rc = apply_server_row(st, &r, qempty, &ns);
	}
	if (!rc && proto_cursor_cmp(p->cursor, sy->cursor) > 0) {
		sy->cursor = p->cursor;
		save_cursor(sy);
	}
	rc = finish_locked(st, rc, &ns);
	if (rc)
		resubscribe(sy);
}

/* keys the fanout could not catch up: their spaces load again (queued
 * writes stay queued and are rebased over the new base) */
static void
on_catchup(struct sync *sy, const struct proto_catchup *c)
{
	weft_store *st = sy->st;
	struct proto_iter it;
	struct proto_str k;

	proto_iter_init(&it, &c->keys);
	pthread_mutex_lock(&st->mu);
	while (proto_next_str(&it, &k) == 1) {
		/* a load of this key in flight started before the CATCHUP:
		 * its pages are not listed again, so its answers are
		 * ignored and the load starts over */
		if (sy->boot_rid && strlen(sy->boot_key) == k.len &&
		    memcmp(sy->boot_key, k.p, k.len) == 0) {
			sy->boot_rid = 0;
			sy->boot_records = sy->boot_bytes = sy->boot_total = 0;
		}
		/* its rows are candidates to leave the store until the
		 * server lists them again (sweep_space) */
		if (k.len > 6 && memcmp(k.p, "space/", 6) == 0 &&
		    exec_key(
			    st,
			    "INSERT OR REPLACE INTO weft_sweep (tbl, id, space)"
			    " SELECT tbl, id, space FROM weft_rows"
			    " WHERE space = substr(?1, 7)",
			    k.p, (int)k.len, "note a space's rows") == 0) {
			st->sweeping = true;
			sy->sweep_check = true;
		}
		exec_key(st,
			 "UPDATE weft_subs SET loaded = 0, page = NULL"
			 " WHERE key = ?1",
			 k.p, (int)k.len, "reload a subscription");
	}
	pthread_mutex_unlock(&st->mu);
	pthread_mutex_lock(&sy->mu);
	sy->subs_loaded = false;
	pthread_mutex_unlock(&sy->mu);
}

/* a key the fanout granted without being asked: this session has it */
static void
add_subscribed(struct sync *sy, const struct proto_str *key)
{
	char **nv =
		realloc(sy->subscribed, (sy->nsubscribed + 1) * sizeof(*nv));
	bool *ng =
		nv ? realloc(sy->granted, (sy->nsubscribed + 1) * sizeof(*ng))
		   : NULL;
	char *k = ng ? strndup(key->p, key->len) : NULL;

	if (nv)
		sy->subscribed = nv;
	if (ng)
		sy->granted = ng;
	if (!k)
		return; /* out of memory: the next resubscribe has it */
	sy->subscribed[sy->nsubscribed] = k;
	sy->granted[sy->nsubscribed++] = true;
}

/*
 * SUBSCRIBED: a refused key (not a member, yet: the app may be creating
 * the space, or waiting to be added) or a revoked one stays stored, marked
 * refused, and is asked for again after a wait that doubles from RESUB_MS
 * to RESUB_MAX_MS; once granted, it loads from the start.  A grant may
 * come unasked (rid 0, code 0): the fanout checks refused keys again when
 * the user's membership changes.
 */
static void
on_subscribed(struct sync *sy, const struct proto_subscribed *s)
{
	weft_store *st = sy->st;
	struct proto_iter it;
	struct proto_subres r;
	bool refused = false;

	if (s->rid >= UNSUB_RID_BASE && s->rid < UNSUB_RID_BASE + (1ull << 40))
		return; /* an UNSUBSCRIBE's answer */
	proto_iter_init(&it, &s->results);
	while (proto_next_subres(&it, &r) == 1) {
		long at = -1;

		for (size_t i = 0; i < sy->nsubscribed && at < 0; i++)
			if (strlen(sy->subscribed[i]) == r.key.len &&
			    memcmp(sy->subscribed[i], r.key.p, r.key.len) == 0)
				at = (long)i;
		if (at < 0 && s->rid != 0)
			continue; /* a key dropped since it was asked for */
		TRACE(sy, "subscribed %.*s: %s", (int)r.key.len, r.key.p,
		      weft_errname(r.code));
		pthread_mutex_lock(&st->mu);
		exec_key(st,
			 r.code == 0 ? "UPDATE weft_subs SET refused = 0,"
				       " loaded = 0, page = NULL"
				       " WHERE key = ?1 AND refused"
				     : "UPDATE weft_subs SET refused = 1,"
				       " loaded = 1 WHERE key = ?1",
			 r.key.p, (int)r.key.len, "mark a subscription");
		pthread_mutex_unlock(&st->mu);
		if (at >= 0 && r.code == 0) {
			sy->granted[at] = true;
		} else if (at >= 0) {
			free(sy->subscribed[at]);
			sy->nsubscribed--;
			sy->subscribed[at] = sy->subscribed[sy->nsubscribed];
			sy->granted[at] = sy->granted[sy->nsubscribed];
		} else if (r.code == 0) { /* granted unasked (rid 0) */
			bool stored;

			pthread_mutex_lock(&st->mu);
			stored = sub_stored(st, r.key.p, (int)r.key.len);
			pthread_mutex_unlock(&st->mu);
			if (stored)
				add_subscribed(sy, &r.key);
			else /* followed no more: say so */
				send_unsubscribe(sy, &r.key, 1);
		}
		if (r.code == 0)
			sy->resub_ms = 0; /* memberships move: ask soon */
		refused |= r.code != 0;
		if (r.code == WEFT_EPERM)
			verify_refused(sy, &r.key);
	}
	if (refused) {
		sy->resub_ms = sy->resub_ms ? sy->resub_ms * 2 : RESUB_MS;
		if (sy->resub_ms > RESUB_MAX_MS)
			sy->resub_ms = RESUB_MAX_MS;
		sy->resub_at_ms = now_ms() + sy->resub_ms;
	}
}

/* ------------------------------------------------------------------ */
/* messages */

static void
on_error_msg(struct sync *sy, struct link *l, const struct proto_error *e)
{
	char msg[ERR_MAX];

	snprintf(msg, sizeof(msg), "%s: %.*s", link_name(l), (int)e->msg.len,
		 e->msg.p ? e->msg.p : "");
	if (e->code == WEFT_EAUTH || e->code == WEFT_EEXPIRED ||
	    e->code == WEFT_EBADSIG || e->code == WEFT_EUNSIGNED) {
		pthread_mutex_lock(&sy->mu);
		sy->token_refused = true;
		pthread_mutex_unlock(&sy->mu);
		link_drop(l, msg);
		/* the token callback may have a new one at once */
		if (sy->token_fn) {
			free(current_token(sy));
			l->next_dial_ms = now_ms();
		}
		return;
	}
	if (l->id == L_WRITE && e->rid && e->rid < FETCH_RID_BASE) {
		uint64_t mid = e->rid;

		if (e->code == WEFT_EGAP && e->expected) {
			/* the server wants an earlier one: resend from it */
			sy->sent_mid = e->expected - 1;
			return;
		}
		if (e->code == WEFT_ENOTFOUND) {
			/* applied long ago, result gone: it is done; the
			 * records come back through fetch or pushes */
			struct notes ns = { 0 };
			int rc;

			pthread_mutex_lock(&sy->st->mu);
			rc = st_begin(sy->st);
			if (!rc)
				rc = dequeue(sy->st, mid, WEFT_REMOTE, &ns);
			if (finish_locked(sy->st, rc, &ns) == 0)
				note_answered(sy, mid);
			return;
		}
	}
	if (l->id == L_WRITE && e->rid && e->rid == sy->verify_rid)
		sy->verify_rid = 0;
	if (l->id == L_WRITE && e->rid == sy->boot_rid && sy->boot_rid) {
		sy->boot_rid = 0; /* retried on the next round */
		if (e->code == WEFT_EPERM || e->code == WEFT_ENOTFOUND)
			mark_loaded(sy, sy->boot_key, NULL, 0); /* nothing */
	}
	if (e->fatal)
		link_drop(l, msg);
}

static void
on_fetch_reply(struct sync *sy, const struct proto_records *r)
{
	int rc = apply_rows(sy, &r->records, NULL);

	if (r->rid == sy->verify_rid && sy->verify_rid) {
		sy->verify_rid = 0;
		if (!rc && r->missing.n)
			drop_missing(sy, sy->verify_key, sy->verify_v0);
		return;
	}
	if (r->rid == sy->boot_rid && sy->boot_rid) { /* a rec/ sub */
		sy->boot_rid = 0;
		if (!rc && r->missing.n)
			rc = drop_missing(sy, sy->boot_key, sy->boot_v0);
		if (!rc)
			mark_loaded(sy, sy->boot_key, NULL, 0);
		return;
	}
	pthread_mutex_lock(&sy->mu);
	for (struct fetchreq *f = sy->fetches; f; f = f->next)
		if (f->rid == r->rid) {
			f->done = true;
			f->result = rc;
		}
	pthread_cond_broadcast(&sy->done_cv);
	pthread_mutex_unlock(&sy->mu);
}

static void
on_msg(struct sync *sy, struct link *l, const struct proto_msg *m)
{
	l->last_rx_ms = now_ms();
	TRACE(sy, "%s: %s", link_name(l), proto_type_name(m->type));
	switch (m->type) {
	case PROTO_WELCOME:
		l->welcomed = true;
		l->backoff_ms = 0;
		l->heartbeat_ms = m->u.welcome.heartbeat_ms;
		if (l->id == L_WRITE) {
			uint64_t floor = queue_floor(sy->st);

			pthread_mutex_lock(&sy->mu);
			/* everything still queued is sent again: the server
			 * answers a resend with its stored result */
			sy->sent_mid = floor;
			sy->acked_mid = floor;
			sy->token_refused = false;
			pthread_mutex_unlock(&sy->mu);
			set_state(sy, WEFT_SYNCING, "connected");
		} else {
			sy->prev_push = (struct proto_cursor){ 0, 0 };
			sy->resub_at_ms = 0; /* a new session: every key now */
			send_subscribes(sy);
		}
		break;
	case PROTO_ACK:
		on_answer(sy, m->u.ack.mid, &m->u.ack.records, NULL);
		if (sy->window < sy->max_in_flight)
			sy->window++;
		break;
	case PROTO_REJECT:
		on_answer(sy, m->u.reject.mid, &m->u.reject.records,
			  &m->u.reject);
		if (sy->window < sy->max_in_flight)
			sy->window++;
		break;
	case PROTO_RECORDS:
		on_fetch_reply(sy, &m->u.records);
		break;
	case PROTO_PAGE:
		on_page(sy, &m->u.page);
		break;
	case PROTO_PUSH:
		on_push(sy, &m->u.push);
		break;
	case PROTO_CATCHUP:
		on_catchup(sy, &m->u.catchup);
		break;
	case PROTO_SUBSCRIBED:
		on_subscribed(sy, &m->u.subscribed);
		break;
	case PROTO_ERROR:
		on_error_msg(sy, l, &m->u.error);
		break;
	case PROTO_PING: {
		struct proto_msg pong = *m;

		pong.type = PROTO_PONG;
		link_send(l, &pong);
		break;
	}
	case PROTO_BACKOFF:
		if (m->u.backoff.reconnect || m->u.backoff.rid == 0) {
			link_drop(l, "the server asked us to reconnect");
			l->next_dial_ms = now_ms() + m->u.backoff.retry_ms;
		} else if (m->u.backoff.rid < FETCH_RID_BASE) {
			/* that transaction was not taken: again, later.  The
			 * first refusal of a window halves it; the rest of
			 * that window's, which come while held, do not */
			uint64_t now = now_ms();

			if (m->u.backoff.rid - 1 < sy->sent_mid)
				sy->sent_mid = m->u.backoff.rid - 1;
			if (now >= sy->hold_until_ms && sy->window > 1)
				sy->window /= 2;
			/* a shorter wait (a full queue's) does not cut a
			 * longer one (the rate's) short */
			if (now + m->u.backoff.retry_ms > sy->hold_until_ms)
				sy->hold_until_ms = now + m->u.backoff.retry_ms;
		} else if (m->u.backoff.rid == sy->verify_rid) {
			sy->verify_rid = 0;
		} else if (m->u.backoff.rid == sy->boot_rid) {
			sy->boot_rid = 0;
		} else {
			for (struct fetchreq *f = sy->fetches; f; f = f->next)
				if (f->rid == m->u.backoff.rid)
					f->sent = false;
		}
		break;
	default:
		break;
	}
}

/* ------------------------------------------------------------------ */
/* the thread */

static void
update_state(struct sync *sy)
{
	uint64_t queued = weft_pending(sy->st);
	bool loaded;
	int state;

	pthread_mutex_lock(&sy->mu);
	loaded = sy->subs_loaded;
	state = sy->state;
	pthread_mutex_unlock(&sy->mu);
	if (!sy->link[L_WRITE].welcomed)
		return;
	if (queued == 0 && loaded &&
	    (sy->nfanout == 0 || sy->link[L_FANOUT].welcomed)) {
		if (state != WEFT_LIVE)
			set_state(sy, WEFT_LIVE, "in step");
	} else if (state == WEFT_LIVE) {
		set_state(sy, WEFT_SYNCING, "sending and catching up");
	}
}

static void
heartbeat(struct link *l)
{
	uint64_t now = now_ms();
	struct proto_msg ping = { .type = PROTO_PING };

	if (!l->welcomed || !l->heartbeat_ms)
		return;
	if (now - l->last_rx_ms > 3ull * l->heartbeat_ms) {
		link_drop(l, "no heartbeat from the server");
		return;
	}
	if (now - l->last_tx_ms >= l->heartbeat_ms / 2) {
		ping.u.ping.nonce = now;
		link_send(l, &ping);
	}
}

static void
send_fetches(struct sync *sy)
{
	struct link *l = &sy->link[L_WRITE];

	if (!l->welcomed)
		return;
	for (;;) {
		uint8_t *frame = NULL;
		size_t len = 0;

		/* one at a time, copied: weft_fetch may drop its request
		 * (timeout) while we send */
		pthread_mutex_lock(&sy->mu);
		for (struct fetchreq *f = sy->fetches; f && !frame;
		     f = f->next) {
			if (f->sent || f->done)
				continue;
			f->sent = true;
			frame = malloc(f->frame.len);
			if (frame) {
				memcpy(frame, f->frame.data, f->frame.len);
				len = f->frame.len;
			}
		}
		pthread_mutex_unlock(&sy->mu);
		if (!frame)
			return;
		link_send_raw(l, frame, len);
		free(frame);
	}
}

static void *
sync_main(void *arg)
{
	struct sync *sy = arg;

	for (;;) {
		struct inmsg *in;
		uint64_t now = now_ms();

		for (int i = 0; i < L_N; i++) {
			struct link *l = &sy->link[i];

			if (i == L_FANOUT && sy->nfanout == 0)
				continue;
			if (!l->stream && now >= l->next_dial_ms)
				link_dial(l);
			heartbeat(l);
		}
		pthread_mutex_lock(&sy->mu);
		if (!sy->in_head && !sy->kicked && !sy->stopping) {
			struct timespec ts;

			clock_deadline(&ts, 100 * 1000000u);
			pthread_cond_timedwait(&sy->cv, &sy->mu, &ts);
		}
		if (sy->stopping) {
			pthread_mutex_unlock(&sy->mu);
			break;
		}
		sy->kicked = false;
		in = sy->in_head;
		sy->in_head = sy->in_tail = NULL;
		pthread_mutex_unlock(&sy->mu);
		while (in) {
			struct inmsg *next = in->next;
			struct link *l = &sy->link[in->link];

			if (in->gen == l->gen && l->stream) {
				struct proto_msg m;
				struct proto_err err;

				if (!in->body)
					link_drop(l, "connection closed");
				else if (proto_decode(in->body, in->len, &m,
						      &err) == 0)
					on_msg(sy, l, &m);
				else
					link_drop(l, "undecodable frame");
			}
			free(in->body);
			free(in);
			in = next;
		}
		push_queue(sy);
		send_fetches(sy);
		send_subscribes(sy);
		continue_bootstrap(sy);
		update_state(sy);
	}
	for (int i = 0; i < L_N; i++)
		link_drop(&sy->link[i], "closing");
	return NULL;
}

/* ------------------------------------------------------------------ */
/* API */

static int
copy_urls(struct sync *sy, const struct weft_options *o)
{
	sy->write_url = strdup(o->write_url);
	if (!sy->write_url)
		return WEFT_ENOMEM;
	if (o->nfanout) {
		sy->fanout_urls = calloc(o->nfanout, sizeof(char *));
		if (!sy->fanout_urls)
			return WEFT_ENOMEM;
		for (size_t i = 0; i < o->nfanout; i++) {
			if (!o->fanout_urls[i])
				return WEFT_EINVAL;
			sy->fanout_urls[i] = strdup(o->fanout_urls[i]);
			if (!sy->fanout_urls[i])
				return WEFT_ENOMEM;
			sy->nfanout++;
		}
	}
	if (o->tls_ca_file && !(sy->ca_file = strdup(o->tls_ca_file)))
		return WEFT_ENOMEM;
	if (o->token && !(sy->token = strdup(o->token)))
		return WEFT_ENOMEM;
	return 0;
}

static void
sync_free(struct sync *sy)
{
	if (!sy)
		return;
	free(sy->write_url);
	for (size_t i = 0; i < sy->nfanout; i++)
		free(sy->fanout_urls[i]);
	free(sy->fanout_urls);
	free(sy->ca_file);
	free(sy->token);
	for (size_t i = 0; i < sy->nsubscribed; i++)
		free(sy->subscribed[i]);
	free(sy->subscribed);
	free(sy->granted);
	for (size_t i = 0; i < sy->ndropped; i++)
		free(sy->dropped[i]);
	free(sy->dropped);
	while (sy->in_head) {
		struct inmsg *m = sy->in_head;

		sy->in_head = m->next;
		free(m->body);
		free(m);
	}
	pthread_cond_destroy(&sy->cv);
	pthread_cond_destroy(&sy->done_cv);
	pthread_mutex_destroy(&sy->mu);
	free(sy);
}

int
sync_start(weft_store *st, const struct weft_options *o)
{
	struct sync *sy = calloc(1, sizeof(*sy));

	if (sy)
		sy->sweep_check = true; /* notes an earlier run left */
	char v[48];
	int rc;

	if (!sy)
		return WEFT_ENOMEM;
	pthread_mutex_init(&sy->mu, NULL);
	pthread_cond_init(&sy->cv, NULL);
	pthread_cond_init(&sy->done_cv, NULL);
	sy->st = st;
	sy->token_fn = o->token_fn;
	sy->token_arg = o->token_arg;
	sy->max_in_flight = o->max_in_flight ? o->max_in_flight : 64;
	sy->window = sy->max_in_flight;
	sy->trace = getenv("WEFT_CLIENT_TRACE") != NULL;
	rc = copy_urls(sy, o);
	for (int i = 0; i < L_N; i++) {
		sy->link[i].sy = sy;
		sy->link[i].id = (enum link_id)i;
	}
	if (rc) {
		sync_free(sy);
		return st_err(st, rc, "cannot set up syncing");
	}
	pthread_mutex_lock(&st->mu);
	if (st_meta_get(st, "cursor", v, sizeof(v)) == 0) {
		unsigned long long lsn;
		unsigned idx;

		if (sscanf(v, "%llu-%u", &lsn, &idx) == 2)
			sy->cursor = (struct proto_cursor){ lsn, idx };
	}
	pthread_mutex_unlock(&st->mu);
	sy->acked_mid = queue_floor(st);
	sy->state = WEFT_OFFLINE;
	st->sync = sy;
	if (pthread_create(&sy->thread, NULL, sync_main, sy) != 0) {
		st->sync = NULL;
		sync_free(sy);
		return st_err(st, WEFT_ENOMEM, "cannot start the sync thread");
	}
	return 0;
}

void
sync_stop(weft_store *st)
{
	struct sync *sy = st->sync;

	if (!sy)
		return;
	pthread_mutex_lock(&sy->mu);
	sy->stopping = true;
	pthread_cond_signal(&sy->cv);
	pthread_mutex_unlock(&sy->mu);
	pthread_join(sy->thread, NULL);
	while (sy->fetches) {
		struct fetchreq *f = sy->fetches;

		sy->fetches = f->next;
		buf_fini(&f->frame);
		free(f);
	}
	st->sync = NULL;
	sync_free(sy);
}

void
sync_kick(weft_store *st)
{
	struct sync *sy = st->sync;

	if (!sy)
		return;
	pthread_mutex_lock(&sy->mu);
	sy->kicked = true;
	pthread_cond_signal(&sy->cv);
	pthread_mutex_unlock(&sy->mu);
}

int
weft_state(weft_store *st)
{
	int s;

	if (!st->sync)
		return WEFT_OFFLINE;
	pthread_mutex_lock(&st->sync->mu);
	s = st->sync->state;
	pthread_mutex_unlock(&st->sync->mu);
	return s;
}

int
weft_set_token(weft_store *st, const char *token)
{
	struct sync *sy = st->sync;
	char *c;

	if (!token)
		return WEFT_EINVAL;
	if (!sy)
		return 0;
	c = strdup(token);
	if (!c)
		return WEFT_ENOMEM;
	pthread_mutex_lock(&sy->mu);
	free(sy->token);
	sy->token = c;
	sy->token_refused = false;
	sy->kicked = true;
	pthread_cond_signal(&sy->cv);
	pthread_mutex_unlock(&sy->mu);
	return 0;
}

void
weft_cursor(weft_store *st, uint64_t *lsn, uint32_t *idx)
{
	char v[48] = "";
	unsigned long long l = 0;
	unsigned i = 0;

	pthread_mutex_lock(&st->mu);
	if (st_meta_get(st, "cursor", v, sizeof(v)) == 0)
		(void)sscanf(v, "%llu-%u", &l, &i);
	pthread_mutex_unlock(&st->mu);
	if (lsn)
		*lsn = l;
	if (idx)
		*idx = i;
}

/* sy->mu held: remember a key the store stopped following, to
 * UNSUBSCRIBE on the fanout session (once) */
static void
note_dropped(struct sync *sy, const char *key)
{
	char **nv;

	for (size_t i = 0; i < sy->ndropped; i++)
		if (strcmp(sy->dropped[i], key) == 0)
			return;
	nv = realloc(sy->dropped, (sy->ndropped + 1) * sizeof(*nv));
	if (!nv)
		return;
	sy->dropped = nv;
	if ((nv[sy->ndropped] = strdup(key)))
		sy->ndropped++;
}

static int
add_sub(weft_store *st, const char *key, bool add)
{
	int rc;

	pthread_mutex_lock(&st->mu);
	rc = exec_key(st,
		      add ? "INSERT OR IGNORE INTO weft_subs (key) VALUES (?1)"
			  : "DELETE FROM weft_subs WHERE key = ?1",
		      key, -1, "store the subscription");
	/* a space no longer followed is not swept when it loads */
	if (!rc && !add && strncmp(key, "space/", 6) == 0)
		rc = exec_key(
			st,
			"DELETE FROM weft_sweep WHERE space = substr(?1, 7)",
			key, -1, "forget a sweep");
	pthread_mutex_unlock(&st->mu);
	if (!rc && st->sync) {
		pthread_mutex_lock(&st->sync->mu);
		st->sync->subs_loaded = false;
		if (!add && st->sync->nfanout)
			note_dropped(st->sync, key);
		pthread_mutex_unlock(&st->sync->mu);
	}
	sync_kick(st);
	return rc;
}

static bool
valid_name(const char *s)
{
	size_t n = s ? strlen(s) : 0;

	return n > 0 && n <= PROTO_MAX_NAME;
}

/* where the subscription with this key stands (see weft_space_status) */
static int
sub_status(weft_store *st, const char *key)
{
	sqlite3_stmt *q;
	int rc;

	pthread_mutex_lock(&st->mu);
	if (sqlite3_prepare_v2(st->db,
			       "SELECT loaded, refused FROM weft_subs"
			       " WHERE key = ?1",
			       -1, &q, NULL) != SQLITE_OK) {
		rc = st_sqlerr(st, "read a subscription");
		pthread_mutex_unlock(&st->mu);
		return rc;
	}
	sqlite3_bind_text(q, 1, key, -1, SQLITE_STATIC);
	switch (sqlite3_step(q)) {
	case SQLITE_ROW:
		rc = sqlite3_column_int(q, 1)	? WEFT_EPERM
		     : sqlite3_column_int(q, 0) ? 0
						: WEFT_EAGAIN;
		break;
	case SQLITE_DONE:
		rc = WEFT_ENOTFOUND;
		break;
	default:
		rc = st_sqlerr(st, "read a subscription");
		break;
	}
	sqlite3_finalize(q);
	pthread_mutex_unlock(&st->mu);
	return rc;
}

int
weft_space_status(weft_store *st, const char *space)
{
	char key[KEY_MAX];

	if (!st || !valid_name(space))
		return WEFT_EINVAL;
	snprintf(key, sizeof(key), "space/%s", space);
	return sub_status(st, key);
}

int
weft_subscribe_space(weft_store *st, const char *space)
{
	char key[KEY_MAX];

	if (!st || !valid_name(space))
		return WEFT_EINVAL;
	snprintf(key, sizeof(key), "space/%s", space);
	return add_sub(st, key, true);
}

int
weft_unsubscribe_space(weft_store *st, const char *space)
{
	char key[KEY_MAX];

	if (!st || !valid_name(space))
		return WEFT_EINVAL;
	snprintf(key, sizeof(key), "space/%s", space);
	return add_sub(st, key, false);
}

int
weft_subscribe_record(weft_store *st, const char *table, const char *id)
{
	char key[KEY_MAX];

	if (!st || !valid_name(table) || !valid_name(id) || strchr(table, '/'))
		return WEFT_EINVAL;
	snprintf(key, sizeof(key), "rec/%s/%s", table, id);
	return add_sub(st, key, true);
}

int
weft_unsubscribe_record(weft_store *st, const char *table, const char *id)
{
	char key[KEY_MAX];

	if (!st || !valid_name(table) || !valid_name(id))
		return WEFT_EINVAL;
	snprintf(key, sizeof(key), "rec/%s/%s", table, id);
	return add_sub(st, key, false);
}

int
weft_wait_synced(weft_store *st, int timeout_ms)
{
	struct sync *sy = st->sync;
	struct timespec ts;
	uint64_t target = 0;
	int rc = 0;

	if (!sy)
		return WEFT_EUNAVAILABLE;
	pthread_mutex_lock(&st->mu);
	target = st->next_mid - 1;
	pthread_mutex_unlock(&st->mu);
	clock_deadline(&ts,
		       timeout_ms > 0 ? (uint64_t)timeout_ms * 1000000u : 0);
	sync_kick(st);
	pthread_mutex_lock(&sy->mu);
	while (!(sy->acked_mid >= target && sy->subs_loaded &&
		 sy->state == WEFT_LIVE)) {
		if (pthread_cond_timedwait(&sy->done_cv, &sy->mu, &ts) != 0) {
			rc = WEFT_ETIMEDOUT;
			break;
		}
	}
	pthread_mutex_unlock(&sy->mu);
	return rc;
}

int
weft_fetch(weft_store *st, const char *table, const char *const *ids, size_t n,
	   int timeout_ms)
{
	struct sync *sy = st->sync;
	struct fetchreq *f, **pp;
	struct proto_keyref *refs;
	struct proto_msg m = { .type = PROTO_FETCH };
	struct timespec ts;
	int rc;

	if (!sy)
		return WEFT_EUNAVAILABLE;
	if (!valid_name(table) || n == 0 || n > 1024)
		return WEFT_EINVAL;
	f = calloc(1, sizeof(*f));
	refs = calloc(n, sizeof(*refs));
	if (!f || !refs) {
		free(f);
		free(refs);
		return WEFT_ENOMEM;
	}
	for (size_t i = 0; i < n; i++)
		refs[i] = (struct proto_keyref){ proto_str_c(table),
						 proto_str_c(ids[i]) };
	buf_init(&f->frame, 0);
	pthread_mutex_lock(&sy->mu);
	f->rid = FETCH_RID_BASE + (1ull << 40) + ++sy->next_rid;
	pthread_mutex_unlock(&sy->mu);
	m.u.fetch = (struct proto_fetch){ f->rid, PROTO_LIST(n, refs) };
	rc = proto_encode(&f->frame, &m, 0, NULL);
	free(refs);
	if (rc) {
		buf_fini(&f->frame);
		free(f);
		return WEFT_EINVAL;
	}
	clock_deadline(&ts,
		       timeout_ms > 0 ? (uint64_t)timeout_ms * 1000000u : 0);
	pthread_mutex_lock(&sy->mu);
	f->next = sy->fetches;
	sy->fetches = f;
	sy->kicked = true;
	pthread_cond_signal(&sy->cv);
	while (!f->done)
		if (pthread_cond_timedwait(&sy->done_cv, &sy->mu, &ts) != 0)
			break;
	rc = f->done ? f->result
		     : (sy->state == WEFT_SYNCING || sy->state == WEFT_LIVE
				? WEFT_ETIMEDOUT
				: WEFT_EUNAVAILABLE);
	for (pp = &sy->fetches; *pp; pp = &(*pp)->next)
		if (*pp == f) {
			*pp = f->next;
			break;
		}
	pthread_mutex_unlock(&sy->mu);
	buf_fini(&f->frame);
	free(f);
	return rc;
}
