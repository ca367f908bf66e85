/*
 * fanout.c - see fanout.h.
 *
 * Locks: f->mu (session list, the key index, the request queues) is
 * always taken before a session's mu, never after it.  nng callbacks
 * hold only the session's mu, so they never touch the index: they hand
 * SUBSCRIBE and UNSUBSCRIBE to the auth thread.
 *
 * Lifetime: a session holds a reference for its pending receive, one
 * while a send is in flight, one per request queued for the auth thread,
 * and one while it is in the reader's dirty list (pumped by the reader or
 * the send helper, which then drops it).  The last reference marks it CLOSED,
 * takes it out of the index and the list (under f->mu) and frees it, so the
 * reader, which only touches sessions under f->mu, never sees a freed one.
 */
#include "services/fanout/fanout.h"

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <weft/error.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/hash.h"
#include "common/log.h"
#include "proto/entry.h"
#include "proto/frame.h"
#include "proto/msg.h"
#include "services/shared/listen.h"
#include "services/shared/redis.h"
#include "services/shared/sender.h"

#include "common/banned.h"

/* RX_CHUNK - bytes read per receive: clients send small requests (a
 * frame larger than this arrives in several reads, into the frame
 * reader's own buffer), and every idle session holds this buffer; 2 KiB
 * made an idle session 5.5 KB, 256 bytes under 4 KiB */
#define RX_CHUNK	256
/* OUT_SMALL - output buffers up to this size are freed when a session
 * goes idle */
#define OUT_SMALL	(4u << 10)
/* PUSH_MAX / PUSH_BYTES - one PUSH frame carries at most this many
 * changes and, beyond its first change, about this many bytes (a client
 * accepts 1 MiB frames by default) */
#define PUSH_MAX	256
#define PUSH_BYTES	(512u << 10)
/* XREAD_COUNT / XREAD_BLOCK_MS - one stream read */
#define XREAD_COUNT	1000
/* ROUTE_CHUNK - entries routed between two pumps of the sessions */
#define ROUTE_CHUNK	256
#define XREAD_BLOCK_MS	100
/* KEY_MAX - bytes of a subscription key */
#define KEY_MAX		(2 * PROTO_MAX_NAME + 8)
/* WAIT_VISIBLE_MS - how long a regrant waits for its membership to be
 * visible to a new snapshot (wait_visible) */
#define WAIT_VISIBLE_MS 500
/* MEMBER_RING / MEMBER_FRESH_MS - the members changes of the last
 * MEMBER_FRESH_MS the reader met (at most MEMBER_RING): a grant that one
 * of them contradicts came from a snapshot that did not see it yet */
#define MEMBER_RING	1024
#define MEMBER_FRESH_MS 2000
/* EPOCH_BUCKETS - membership change counters, by hash of the user */
#define EPOCH_BUCKETS	256
/* REFUSED_MAX - refused keys a session keeps, to grant them when the
 * user's membership changes; a key beyond it waits for the client's own
 * retry */
#define REFUSED_MAX	64

/* ------------------------------------------------------------------ */
/* changes: one per stream entry, shared by every session it goes to */

struct change {
	atomic_int refs;
	struct proto_cursor cursor;
	char *table, *id, *space, *prev; /* prev: NULL unless it moved */
	uint32_t table_len, id_len, space_len;
	uint32_t rec_hash; /* of table and id: coalescing compares it first */
	uint64_t version;
	uint32_t op;
	bool deleted;
	uint8_t *data; /* msgpack map; NULL for tombstones */
	uint32_t data_len;
	int64_t when_us; /* commit time, Unix µs; 0: unknown */
	char *mem;	 /* owns the strings and data */
	/* the change as a PUSH element for its space's subscribers (key
	 * space/<space>, with data), encoded once by the reader; NULL if it
	 * could not be (then each session encodes, and reports the error) */
	uint8_t *enc;
	size_t enc_len;
};

static void
change_unref(struct change *c)
{
	if (c && atomic_fetch_sub(&c->refs, 1) == 1) {
		free(c->enc);
		free(c->mem);
		free(c);
	}
}

static bool
parse_cursor(const char *id, struct proto_cursor *out)
{
	unsigned long long lsn, idx;

	if (sscanf(id, "%llu-%llu", &lsn, &idx) != 2 || idx > UINT32_MAX)
		return false;
	out->lsn = lsn;
	out->idx = (uint32_t)idx;
	return true;
}

/* c as a PUSH element under key, with its data unless hide */
static struct proto_change
change_proto(const struct change *c, const char *key, bool hide)
{
	return (struct proto_change){
		c->cursor,
		proto_str_c(key),
		proto_str_c(c->table),
		proto_str_c(c->id),
		proto_str_c(c->space),
		c->version,
		c->op,
		c->deleted,
		{ hide ? NULL : c->data, hide ? 0 : c->data_len },
	};
}

/* c as its space subscribers receive it, once for all of them */
static void
change_encode(struct change *c)
{
	char key[KEY_MAX];
	struct proto_change pc;
	struct buf b;

	snprintf(key, sizeof(key), "space/%s", c->space);
	pc = change_proto(c, key, false);
	buf_init(&b, 0);
	if (proto_encode_change(&b, &pc, NULL) == 0 && b.data) {
		c->enc = b.data;
		c->enc_len = b.len;
	} else {
		buf_fini(&b);
	}
}

static struct proto_str
reply_str(const redisReply *r)
{
	return (struct proto_str){ r->str, (uint32_t)r->len };
}

/*
 * An entry's fields as a change: the one field "e" (proto/entry.h), or a
 * field per column, as relays wrote them before it (t, i, s, p, v, o, x,
 * d, c, m, u, w), which a stream may still hold after an upgrade.  false
 * if neither.
 */
static bool
entry_change(const redisReply *f, struct stream_change *sc)
{
	const redisReply *v[128] = { 0 };

	for (size_t k = 0; k + 1 < f->elements; k += 2) {
		const redisReply *name = f->element[k];

		if (name->type != REDIS_REPLY_STRING || name->len != 1 ||
		    (unsigned char)name->str[0] > 127 ||
		    f->element[k + 1]->type != REDIS_REPLY_STRING ||
		    f->element[k + 1]->len > UINT32_MAX)
			continue;
		v[(unsigned char)name->str[0]] = f->element[k + 1];
	}
	if (v['e'])
		return stream_change_parse((const uint8_t *)v['e']->str,
					   v['e']->len, sc) == 0 &&
		       sc->table.len && sc->id.len && sc->space.len;
	memset(sc, 0, sizeof(*sc));
	if (!v['t'] || !v['i'] || !v['s'] || !v['v'] || !v['o'] ||
	    !v['t']->len || !v['i']->len || !v['s']->len)
		return false;
	sc->table = reply_str(v['t']);
	sc->id = reply_str(v['i']);
	sc->space = reply_str(v['s']);
	if (v['p'] && v['p']->len)
		sc->prev = reply_str(v['p']);
	sc->version = strtoull(v['v']->str, NULL, 10);
	sc->op = (uint32_t)strtoul(v['o']->str, NULL, 10);
	sc->deleted = v['x'] && v['x']->len &&
		      (v['x']->str[0] == 't' || v['x']->str[0] == '1');
	if (v['d']) {
		sc->data = (const uint8_t *)v['d']->str;
		sc->data_len = (uint32_t)v['d']->len;
	}
	sc->when_ms = v['w'] ? strtoll(v['w']->str, NULL, 10) : 0;
	return sc->version != 0 && sc->op != 0 && sc->op <= PROTO_OP_MAX;
}

/* copy s, NUL-terminated, to *p; returns the copy (NULL stays NULL) */
static char *
take(char **p, struct proto_str s)
{
	char *out = *p;

	if (!s.p)
		return NULL;
	memcpy(out, s.p, s.len);
	out[s.len] = '\0';
	*p += s.len + 1;
	return out;
}

/* a stream entry ([id, [field, value, ...]]) as a change, or NULL */
static struct change *
change_from_entry(const redisReply *e)
{
	struct stream_change sc;
	struct change *c;
	char *p;

	if (e->type != REDIS_REPLY_ARRAY || e->elements != 2 ||
	    e->element[0]->type != REDIS_REPLY_STRING ||
	    e->element[1]->type != REDIS_REPLY_ARRAY ||
	    !entry_change(e->element[1], &sc))
		return NULL;
	c = xcalloc(1, sizeof(*c));
	if (!parse_cursor(e->element[0]->str, &c->cursor)) {
		free(c);
		return NULL;
	}
	if (sc.deleted)
		sc.data = NULL;
	atomic_init(&c->refs, 1);
	c->mem = p = xmalloc((size_t)sc.table.len + sc.id.len + sc.space.len +
			     sc.prev.len + (sc.data ? sc.data_len : 0) + 5);
	c->table = take(&p, sc.table);
	c->id = take(&p, sc.id);
	c->space = take(&p, sc.space);
	c->table_len = sc.table.len;
	c->id_len = sc.id.len;
	c->space_len = sc.space.len;
	c->rec_hash = hash_bytes(HASH_INIT, c->table,
				 (size_t)c->table_len + 1 + c->id_len);
	c->prev = take(&p, sc.prev);
	c->version = sc.version;
	c->op = sc.op;
	c->deleted = sc.deleted;
	if (sc.data) {
		c->data = (uint8_t *)p;
		c->data_len = sc.data_len;
		memcpy(p, sc.data, sc.data_len);
	}
	/* a time from outside any sane range is unknown (and cannot
	 * overflow) */
	if (sc.when_ms > 0 && sc.when_ms < INT64_MAX / 1000 - 1)
		c->when_us = sc.when_ms * 1000 + sc.when_us;
	change_encode(c);
	return c;
}

/* ------------------------------------------------------------------ */
/* sessions */

enum sess_state { S_HELLO, S_LIVE, S_DRAINING, S_CLOSED };
enum sub_state { SUB_CATCHING_UP, SUB_LIVE };

struct sub {
	char key[KEY_MAX];
	char space[PROTO_MAX_NAME + 1]; /* rec/ keys: the record's space */
	enum sub_state state;
};

/* which of a change's keys a queued change matched */
enum pend_key { PK_SPACE, PK_PREV, PK_REC };

struct pend {
	struct change *ch;
	uint8_t key;	/* enum pend_key: the key is rebuilt when sent */
	bool hide_data; /* moved out of the subscriber's space */
};

struct sess {
	struct fanout *f;
	uint64_t id;
	nng_stream *stream;
	nng_aio *rx_aio;
	pthread_mutex_t mu; /* everything below */
	enum sess_state state;
	int refs;
	struct frame_reader fr;
	uint8_t rx[RX_CHUNK];
	struct sender tx; /* replies and PUSHes */
	char user[AUTH_USER_MAX];
	int64_t token_exp;
	/* subscriptions (under f->mu for the index's sake, and mu) */
	struct sub *subs;
	uint32_t nsubs;
	/* keys refused EPERM (asked for, or revoked): checked again when a
	 * members change adds this user somewhere (regrant); under mu */
	char **refused; /* each its own allocation; NULL when none */
	uint32_t nrefused, caprefused;
	bool regrant_queued; /* a regrant request of this session waits */
	char regrant_space[PROTO_MAX_NAME + 1]; /* the latest one's space */
	/* changes waiting for the next PUSH, oldest first */
	struct pend *pend;
	uint32_t npend, cappend;
	struct proto_cursor prev; /* cursor of the last PUSH queued */
	bool dirty;		  /* on the reader's list of sessions to pump */
	uint64_t last_tx_ms;	  /* the last frame queued: the next PING is due
				   * a heartbeat after it (less this session's
				   * ping_skew_ms), so a session that gets pushes
				   * gets no pings */
	uint64_t opened_ms;	  /* accepted: HELLO is due within idle_ms */
	uint64_t frame_start_ms;  /* first byte of a partial frame, or 0:
				   * a frame must complete within idle_ms,
				   * so a byte-dribbling peer cannot hold a
				   * session (slowloris) */
	struct sess *lprev, *lnext; /* f's list */
};

/* a queued request for the auth thread */
struct req {
	struct req *next;
	struct sess *s; /* holds a reference */
	uint64_t rid;
	bool unsubscribe;
	bool regrant; /* a check of refused keys: answer only the granted */
	struct proto_cursor cursor;
	uint32_t nkeys;
	char (*keys)[KEY_MAX];
};

/* a catch-up for the reader thread: these subscriptions of s */
struct catchup {
	struct catchup *next;
	struct sess *s; /* holds a reference */
	struct proto_cursor cursor;
	uint32_t nkeys;
	char (*keys)[KEY_MAX];
	/* the SUBSCRIBED answer, encoded: sent after the catch-up, so a
	 * client that has it has everything up to now (or a CATCHUP) */
	struct buf reply;
};

/* the index: key -> sessions subscribed to it */
struct route {
	struct route *next; /* bucket chain */
	char key[KEY_MAX];
	struct sess **sess;
	uint32_t n, cap;
};

#define ROUTE_BUCKETS 65536

struct fanout {
	struct fanout_config cfg;
	nng_stream_listener *listener;
	nng_aio *accept_aio;
	pthread_mutex_t mu;
	pthread_cond_t cv; /* requests queued, stopping */
	bool stopping;
	struct sess *sessions;
	uint32_t nsessions;
	struct sess *house_next; /* where the housekeeping goes on */
	uint64_t next_id;
	struct route **routes;
	struct req *reqs, *reqs_tail;
	uint32_t refusing; /* sessions holding refused keys */
	/* bumped by the members changes the reader meets, in the bucket of
	 * the user they name (and all of them for a deleted space): a
	 * SUBSCRIBE whose Postgres checks ran across a bump of its user's
	 * bucket is checked again (serve_req) */
	atomic_uint member_epoch[EPOCH_BUCKETS];
	/* recent members changes, a ring (under mu): see member_removed */
	struct member_event {
		uint64_t at_ms;
		bool deleted;
		char user[AUTH_USER_MAX]; /* "" for a deleted space: all */
		char space[PROTO_MAX_NAME + 1];
	} * mring;
	uint32_t mring_next;
	uint64_t mring_lost_until; /* a fresh entry was overwritten: until
				    * then, no entry found means "maybe" */
	struct catchup *catchups;
	pthread_t auth_thread, reader_thread, house_thread;
	atomic_bool redis_ok;
	atomic_ullong pushes;	/* PUSH frames encoded (under s->mu only) */
	struct fanout_stats st; /* under mu */
	/* the reader's sessions with changes offered since its last pump;
	 * each holds a reference (reader thread only, but for the half the
	 * send helper pumps while the reader waits for it) */
	struct sess **dirty;
	uint32_t ndirty, capdirty;
	bool send_now; /* sessions write on the caller's thread (sender.h) */
	/* the send helper: pumps the second half of a routed chunk's sessions
	 * while the reader pumps the first (pump_dirty); started only on a
	 * machine with more than one CPU */
	struct {
		bool on;	    /* the thread runs */
		pthread_t th;	    /* the thread */
		pthread_mutex_t mu; /* the fields below */
		pthread_cond_t cv;  /* work given, work done, stop */
		struct sess **v;    /* its sessions (reader's dirty array) */
		uint32_t n;	    /* how many; 0 when done */
		bool stop;	    /* fanout_free */
	} helper;
};

static void sess_recv_cb(void *arg);
static bool member_removed(const struct fanout *f, const char *user,
			   const char *space);
static void sess_send_cb(void *arg);
static void catchup_msg_locked(struct sess *s, const char *msg,
			       struct proto_cursor oldest);

static uint32_t
hash_key(const char *s)
{
	return hash_str(HASH_INIT, s) % ROUTE_BUCKETS;
}

/* f->mu held */
static struct route *
route_get(struct fanout *f, const char *key, bool create)
{
	uint32_t b = hash_key(key);
	struct route *r;

	for (r = f->routes[b]; r; r = r->next)
		if (strcmp(r->key, key) == 0)
			return r;
	if (!create)
		return NULL;
	r = xcalloc(1, sizeof(*r));
	snprintf(r->key, sizeof(r->key), "%s", key);
	r->next = f->routes[b];
	f->routes[b] = r;
	return r;
}

/* f->mu held */
static void
route_add(struct fanout *f, const char *key, struct sess *s)
{
	struct route *r = route_get(f, key, true);

	if (r->n == r->cap) {
		r->cap = r->cap ? r->cap * 2 : 4;
		r->sess = xrealloc(r->sess, r->cap * sizeof(*r->sess));
	}
	r->sess[r->n++] = s;
}

/* f->mu held */
static void
route_del(struct fanout *f, const char *key, struct sess *s)
{
	uint32_t b = hash_key(key);
	struct route **pp, *r;

	for (pp = &f->routes[b]; (r = *pp); pp = &r->next)
		if (strcmp(r->key, key) == 0)
			break;
	if (!r)
		return;
	for (uint32_t i = 0; i < r->n; i++)
		if (r->sess[i] == s) {
			r->sess[i] = r->sess[--r->n];
			break;
		}
	if (r->n == 0) {
		*pp = r->next;
		free(r->sess);
		free(r);
	}
}

static void
sess_free(struct sess *s)
{
	struct fanout *f = s->f;

	pthread_mutex_lock(&f->mu);
	for (uint32_t i = 0; i < s->nsubs; i++)
		route_del(f, s->subs[i].key, s);
	f->st.subscriptions -= s->nsubs;
	if (s->nrefused)
		f->refusing--;
	for (uint32_t i = 0; i < s->nrefused; i++)
		free(s->refused[i]);
	if (f->house_next == s)
		f->house_next = s->lnext;
	if (s->lprev)
		s->lprev->lnext = s->lnext;
	else
		f->sessions = s->lnext;
	if (s->lnext)
		s->lnext->lprev = s->lprev;
	f->nsessions--;
	f->st.sessions_open--;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
	for (uint32_t i = 0; i < s->npend; i++)
		change_unref(s->pend[i].ch);
	free(s->pend);
	free(s->subs);
	free(s->refused);
	nng_stream_free(s->stream);
	nng_aio_reap(s->rx_aio);
	sender_fini(&s->tx);
	frame_reader_fini(&s->fr);
	pthread_mutex_destroy(&s->mu);
	free(s);
}

/* s->mu held on entry, released here */
static void
sess_unref_locked(struct sess *s)
{
	bool last = --s->refs == 0;

	if (last)
		s->state = S_CLOSED;
	pthread_mutex_unlock(&s->mu);
	if (last)
		sess_free(s);
}

static void
sess_close_locked(struct sess *s, const char *why)
{
	if (s->state == S_CLOSED)
		return;
	s->state = S_CLOSED;
	log_event(LOG_DEBUG, "session_closed", "session=%llu why=%s",
		  (unsigned long long)s->id, why);
	nng_stream_close(s->stream);
}

/* s->mu held: the oldest queued changes (up to PUSH_MAX and about
 * PUSH_BYTES) as one PUSH at the end of s->tx.out */
static void
push_encode_locked(struct sess *s)
{
	struct fanout *f = s->f;
	struct proto_change ch;
	struct proto_msg m = { .type = PROTO_PUSH };
	struct buf enc;
	uint32_t n = 0;
	/* a client accepts frames of 1 MiB by default (FRAME_MAX_DEFAULT) */
	size_t bytes = 0;

	if (s->npend == 0)
		return;
	for (n = 0; n < s->npend && n < PUSH_MAX; n++) {
		const struct change *c = s->pend[n].ch;
		size_t sz = 2 * KEY_MAX + c->table_len + c->id_len +
			    c->space_len +
			    (s->pend[n].hide_data ? 0 : c->data_len);

		if (n > 0 && bytes + sz > PUSH_BYTES)
			break;
		bytes += sz;
	}
	/* each change as a PUSH element: the space subscribers'
	 * form was encoded once by the reader; the others here */
	buf_init(&enc, 0);
	for (uint32_t i = 0; i < n; i++) {
		const struct change *c = s->pend[i].ch;
		bool hide = s->pend[i].hide_data;
		char key[KEY_MAX];

		if (s->pend[i].key == PK_SPACE && !hide && c->enc) {
			buf_append(&enc, c->enc, c->enc_len);
			continue;
		}
		if (s->pend[i].key == PK_REC)
			snprintf(key, KEY_MAX, "rec/%s/%s", c->table, c->id);
		else
			snprintf(key, KEY_MAX, "space/%s",
				 s->pend[i].key == PK_PREV && c->prev
					 ? c->prev
					 : c->space);
		ch = change_proto(c, key, hide);
		if (proto_encode_change(&enc, &ch, NULL) != 0)
			enc.err = WEFT_EINVAL; /* fails the PUSH */
	}
	/* n >= 1: npend > 0 */
	m.u.push =
		(struct proto_push){ s->pend[n - 1].ch->cursor, s->prev,
				     proto_list_changes(n, enc.data, enc.len) };
	if (!enc.err && proto_encode(&s->tx.out, &m, 0, NULL) == 0) {
		s->prev = m.u.push.cursor;
		atomic_fetch_add(&f->pushes, 1);
	} else { /* cannot happen within PUSH_BYTES; never silent */
		log_event(LOG_ERROR, "push_encode_failed",
			  "session=%llu changes=%u", (unsigned long long)s->id,
			  n);
		catchup_msg_locked(s,
				   "a push could not be encoded; "
				   "catch up from your cursor",
				   (struct proto_cursor){ 0, 0 });
	}
	buf_fini(&enc);
	for (uint32_t i = 0; i < n; i++)
		change_unref(s->pend[i].ch);
	memmove(s->pend, s->pend + n, (s->npend - n) * sizeof(*s->pend));
	s->npend -= n;
}

/* s->mu held: what is queued, as PUSHes, while nothing is in flight;
 * sent from this thread while the socket takes it (sender.h) */
static void
sess_pump_locked(struct sess *s)
{
	for (;;) {
		if (s->state == S_CLOSED || s->tx.busy)
			return;
		if (s->tx.out.len == 0)
			push_encode_locked(s);
		switch (sender_kick(&s->tx)) {
		case KICK_STARTED:
			s->last_tx_ms = clock_now_ms();
			s->refs++; /* the send's */
			return;
		case KICK_FAILED:
			sess_close_locked(s, "send_failed");
			return;
		case KICK_WROTE:
			s->last_tx_ms = clock_now_ms();
			if (s->npend > 0)
				continue; /* the next PUSH */
			sender_trim(&s->tx, OUT_SMALL);
			if (s->state == S_DRAINING)
				sess_close_locked(s, "drained");
			return;
		case KICK_IDLE:
			return;
		}
	}
}

static void
sess_send_cb(void *arg)
{
	struct sess *s = arg;

	pthread_mutex_lock(&s->mu);
	switch (sender_done(&s->tx, s->state == S_CLOSED)) {
	case SENDER_FAILED:
		sess_close_locked(s, "send_failed");
		break;
	case SENDER_MORE:
		pthread_mutex_unlock(&s->mu);
		return; /* keeps its reference */
	case SENDER_IDLE:
		sess_pump_locked(s);
		/* idle with small buffers (replies, heartbeats): an idle
		 * session holds no output memory.  Big ones stay (at most
		 * PUSH_BYTES each): freeing them after every push churned
		 * the allocator and grew the node. */
		sender_trim(&s->tx, OUT_SMALL);
		if (!s->tx.busy && s->state == S_DRAINING)
			sess_close_locked(s, "drained");
		break;
	}
	sess_unref_locked(s);
}

/* s->mu held: queue one message (replies are small; the cap is on the
 * change queue, not here) */
static void
sess_queue_locked(struct sess *s, const struct proto_msg *m)
{
	struct proto_err err;

	if (s->state == S_CLOSED)
		return;
	if (proto_encode(&s->tx.out, m, 0, &err) != 0) {
		log_event(LOG_ERROR, "encode_failed", "type=%s err=%s",
			  proto_type_name(m->type), err.msg);
		return;
	}
	sess_pump_locked(s);
}

static void sess_error_locked(struct sess *s, uint64_t rid, int code,
			      bool fatal, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static void
sess_error_locked(struct sess *s, uint64_t rid, int code, bool fatal,
		  const char *fmt, ...)
{
	struct proto_msg m = { .type = PROTO_ERROR };
	char text[PROTO_MAX_TEXT];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	m.u.error =
		(struct proto_error){ rid, code, proto_str_c(text), 0, fatal };
	sess_queue_locked(s, &m);
	if (fatal && s->state != S_CLOSED) {
		s->state = S_DRAINING;
		if (!s->tx.busy)
			sess_close_locked(s, "fatal_error");
	}
}

/* the subscription keys of a session (s->mu held), for CATCHUP */
static void
catchup_msg_locked(struct sess *s, const char *msg, struct proto_cursor oldest)
{
	struct proto_str keys[64];
	struct proto_msg m = { .type = PROTO_CATCHUP };
	uint32_t done = 0;

	while (done < s->nsubs || (done == 0 && s->nsubs == 0)) {
		uint32_t n = 0;

		for (; done < s->nsubs && n < 64; done++)
			keys[n++] = proto_str_c(s->subs[done].key);
		if (n == 0)
			break;
		m.u.catchup =
			(struct proto_catchup){ PROTO_LIST(n, keys), oldest,
						proto_str_c(msg) };
		sess_queue_locked(s, &m);
	}
}

/* s->mu held (and f->mu): queue a change; coalesce with an unsent one
 * of the same record; past queue_max, drop the queue and ask the client
 * to catch up from its cursor */
static void
sess_offer_locked(struct sess *s, struct change *c, enum pend_key key,
		  bool hide, struct fanout_stats *st)
{
	if (s->state != S_LIVE)
		return;
	for (uint32_t i = s->npend; i-- > 0;) {
		struct change *o = s->pend[i].ch;

		if (o->rec_hash == c->rec_hash && strcmp(o->id, c->id) == 0 &&
		    strcmp(o->table, c->table) == 0) {
			/* the newer version replaces it, keeping stream order
			 * among the others: drop the old, append the new */
			change_unref(o);
			memmove(s->pend + i, s->pend + i + 1,
				(s->npend - i - 1) * sizeof(*s->pend));
			s->npend--;
			st->coalesced++;
			break;
		}
	}
	if (s->npend >= s->f->cfg.queue_max) {
		for (uint32_t i = 0; i < s->npend; i++)
			change_unref(s->pend[i].ch);
		s->npend = 0;
		st->overflows++;
		catchup_msg_locked(s,
				   "too far behind: changes were dropped; "
				   "catch up from your cursor",
				   (struct proto_cursor){ 0, 0 });
		return;
	}
	if (s->npend == s->cappend) {
		s->cappend = s->cappend ? s->cappend * 2 : 16;
		s->pend = xrealloc(s->pend, s->cappend * sizeof(*s->pend));
	}
	atomic_fetch_add(&c->refs, 1);
	s->pend[s->npend++] = (struct pend){ c, (uint8_t)key, hide };
	st->delivered++;
}

/* ------------------------------------------------------------------ */
/* requests from clients (nng callback threads, s->mu held) */

/* append a list of requests in order; the caller holds no session lock
 * (f->mu comes first) */
static void
enqueue_reqs(struct fanout *f, struct req *head)
{
	struct req *last = head;

	while (last->next)
		last = last->next;
	pthread_mutex_lock(&f->mu);
	if (f->reqs_tail)
		f->reqs_tail->next = head;
	else
		f->reqs = head;
	f->reqs_tail = last;
	pthread_cond_broadcast(&f->cv);
	pthread_mutex_unlock(&f->mu);
}

static void
handle_hello(struct sess *s, const struct proto_hello *h)
{
	struct fanout *f = s->f;
	struct proto_msg m = { .type = PROTO_WELCOME };
	char why[160], user[AUTH_USER_MAX];
	int64_t exp;
	int rc;

	if (h->proto != PROTO_VERSION) {
		sess_error_locked(s, h->rid, WEFT_EVERSION, true,
				  "protocol %u not supported; this server "
				  "speaks %u",
				  h->proto, PROTO_VERSION);
		return;
	}
	rc = auth_verify(f->cfg.auth, h->token.p, h->token.len,
			 (int64_t)time(NULL), user, &exp, why, sizeof(why));
	if (rc == 0 && s->state == S_LIVE && strcmp(user, s->user) != 0)
		rc = WEFT_EPERM;
	if (rc) {
		sess_error_locked(s, h->rid, rc, true, "%s",
				  rc == WEFT_EPERM ? "a session keeps its user"
						   : why);
		return;
	}
	memcpy(s->user, user, sizeof(s->user));
	s->token_exp = exp;
	s->state = S_LIVE;
	m.u.welcome = (struct proto_welcome){ h->rid,
					      PROTO_VERSION,
					      proto_str_c(s->user),
					      proto_str_c(f->cfg.node),
					      s->id,
					      f->cfg.heartbeat_ms,
					      f->cfg.max_frame,
					      0 };
	sess_queue_locked(s, &m);
}

/* s->mu held; returns a request to queue (after unlocking), or NULL */
static struct req *
handle_subscribe(struct sess *s, const struct proto_subscribe *sub,
		 bool unsubscribe)
{
	struct proto_iter it;
	struct proto_str k;
	struct req *r;
	uint32_t n = 0;

	if (sub->keys.n > s->f->cfg.max_subs) {
		sess_error_locked(s, sub->rid, WEFT_ELIMIT, false,
				  "%u keys, more than the limit of %u",
				  sub->keys.n, s->f->cfg.max_subs);
		return NULL;
	}
	r = xcalloc(1, sizeof(*r));
	r->keys = xcalloc(sub->keys.n ? sub->keys.n : 1, sizeof(*r->keys));
	proto_iter_init(&it, &sub->keys);
	while (proto_next_str(&it, &k) == 1 && n < sub->keys.n) {
		uint32_t len = k.len < KEY_MAX - 1 ? k.len : KEY_MAX - 1;

		memcpy(r->keys[n], k.p, len);
		r->keys[n][len] = '\0';
		n++;
	}
	r->nkeys = n;
	r->s = s;
	r->rid = sub->rid;
	r->unsubscribe = unsubscribe;
	r->cursor = sub->cursor;
	s->refs++;
	return r;
}

/* s->mu held: one frame; a SUBSCRIBE or UNSUBSCRIBE becomes a request
 * appended to *reqs, queued for the auth thread once s->mu is released */
static void
handle_frame(struct sess *s, const uint8_t *body, uint32_t len,
	     struct req ***tail)
{
	struct proto_msg m;
	struct proto_err err;
	int rc = proto_decode(body, len, &m, &err);
	struct req *r;

	if (rc) {
		sess_error_locked(s, 0, rc, false, "%s", err.msg);
		return;
	}
	switch (m.type) {
	case PROTO_HELLO:
		handle_hello(s, &m.u.hello);
		return;
	case PROTO_PING:
		m.type = PROTO_PONG;
		sess_queue_locked(s, &m);
		return;
	case PROTO_PONG:
		return;
	default:
		break;
	}
	if (s->state != S_LIVE) {
		sess_error_locked(s, 0, WEFT_EAUTH, true,
				  "send HELLO with a token first");
		return;
	}
	if (m.type == PROTO_SUBSCRIBE || m.type == PROTO_UNSUBSCRIBE) {
		r = handle_subscribe(s, &m.u.subscribe,
				     m.type == PROTO_UNSUBSCRIBE);
		if (r) {
			**tail = r;
			*tail = &r->next;
		}
		return;
	}
	sess_error_locked(s, 0, WEFT_EINVAL, false,
			  "%s is not a request this node serves "
			  "(writes and reads go to weft-write)",
			  proto_type_name(m.type));
}

static bool
sess_recv(struct sess *s)
{
	nng_iov iov = { s->rx, sizeof(s->rx) };

	if (s->state == S_CLOSED || s->state == S_DRAINING)
		return false;
	nng_aio_set_iov(s->rx_aio, 1, &iov);
	nng_aio_set_timeout(s->rx_aio, (nng_duration)s->f->cfg.idle_ms);
	nng_stream_recv(s->stream, s->rx_aio);
	return true;
}

static void
sess_recv_cb(void *arg)
{
	struct sess *s = arg;
	int rv = nng_aio_result(s->rx_aio);
	size_t n, off = 0;
	struct req *reqs = NULL, **tail = &reqs;

	pthread_mutex_lock(&s->mu);
	if (rv != 0 || s->state == S_CLOSED) {
		sess_close_locked(s, rv == NNG_ETIMEDOUT ? "idle" : "recv");
		sess_unref_locked(s);
		return;
	}
	n = nng_aio_count(s->rx_aio);
	while (off < n && s->state != S_CLOSED && s->state != S_DRAINING) {
		size_t used;
		int frc =
			frame_reader_feed(&s->fr, s->rx + off, n - off, &used);

		off += used;
		if (frc) {
			sess_error_locked(s, 0, frc, true,
					  "bad frame (cap %u bytes)",
					  s->fr.max);
			break;
		}
		if (frame_reader_ready(&s->fr)) {
			uint32_t len;
			const uint8_t *body = frame_reader_body(&s->fr, &len);

			handle_frame(s, body, len, &tail);
			frame_reader_next(&s->fr);
		}
	}
	if (s->fr.state == FRAME_HDR && s->fr.hdr_have == 0) {
		s->frame_start_ms = 0;
		frame_reader_trim(&s->fr); /* idle sessions hold no body */
	} else if (!s->frame_start_ms)
		s->frame_start_ms = clock_now_ms();
	if (reqs) { /* f->mu comes before s->mu: queue them unlocked */
		pthread_mutex_unlock(&s->mu);
		enqueue_reqs(s->f, reqs);
		pthread_mutex_lock(&s->mu);
	}
	if ((s->state == S_HELLO || s->state == S_LIVE) && sess_recv(s)) {
		pthread_mutex_unlock(&s->mu);
		return;
	}
	sess_unref_locked(s);
}

static void
accept_cb(void *arg)
{
	struct fanout *f = arg;
	int rv = nng_aio_result(f->accept_aio);
	struct sess *s;
	bool full;

	if (rv != 0) {
		if (rv != NNG_ECLOSED && rv != NNG_ECANCELED)
			log_event(LOG_WARN, "accept_failed", "err=\"%s\"",
				  nng_strerror(rv));
		pthread_mutex_lock(&f->mu);
		if (!f->stopping)
			nng_stream_listener_accept(f->listener, f->accept_aio);
		pthread_mutex_unlock(&f->mu);
		return;
	}
	s = xcalloc(1, sizeof(*s));
	s->f = f;
	s->stream = nng_aio_get_output(f->accept_aio, 0);
	s->state = S_HELLO;
	s->refs = 1; /* the pending receive */
	s->last_tx_ms = s->opened_ms = clock_now_ms();
	pthread_mutex_init(&s->mu, NULL);
	frame_reader_init(&s->fr, f->cfg.max_frame);
	if (nng_aio_alloc(&s->rx_aio, sess_recv_cb, s) != 0 ||
	    sender_init(&s->tx, s->stream, 0, f->send_now, sess_send_cb, s) !=
		    0)
		alloc_oom(sizeof(nng_aio *));
	pthread_mutex_lock(&f->mu);
	full = f->nsessions >= f->cfg.max_sessions;
	s->id = ++f->next_id;
	s->lnext = f->sessions;
	if (f->sessions)
		f->sessions->lprev = s;
	f->sessions = s;
	f->nsessions++;
	f->st.sessions_total++;
	f->st.sessions_open++;
	if (full)
		f->st.sessions_refused++;
	if (!f->stopping)
		nng_stream_listener_accept(f->listener, f->accept_aio);
	pthread_mutex_unlock(&f->mu);
	pthread_mutex_lock(&s->mu);
	if (full) {
		struct proto_msg m = { .type = PROTO_BACKOFF };

		m.u.backoff = (struct proto_backoff){
			0, 1000, true,
			proto_str_c("this node is full; try another")
		};
		sess_queue_locked(s, &m);
		s->state = S_DRAINING;
		if (!s->tx.busy)
			sess_close_locked(s, "full");
		sess_unref_locked(s);
		return;
	}
	if (!sess_recv(s)) {
		sess_unref_locked(s);
		return;
	}
	pthread_mutex_unlock(&s->mu);
}

/* ------------------------------------------------------------------ */
/* the auth thread: SUBSCRIBE and UNSUBSCRIBE */

static PGconn *
pg_open(const char *url)
{
	static const char *const keys[] = { "dbname", "connect_timeout",
					    "keepalives", NULL };
	const char *vals[] = { url, "5", "1", NULL };
	PGconn *pg = PQconnectdbParams(keys, vals, 1);

	if (PQstatus(pg) != CONNECTION_OK) {
		log_event(LOG_WARN, "pg_connect_failed", "err=\"%s\"",
			  PQerrorMessage(pg));
		PQfinish(pg);
		return NULL;
	}
	return pg;
}

/*
 * check one key for user: 0 allowed (space[] gets the space a rec/ key
 * is in), or a weft_err with msg.  EUNAVAILABLE when Postgres is down.
 */
static int
check_key(PGconn **pg, const char *url, const char *user, const char *key,
	  char *space, size_t spacelen, const char **msg)
{
	const char *params[3];
	char tbl[PROTO_MAX_NAME + 1];
	const char *sql;
	PGresult *res;
	int n = 1, rc;

	if (strncmp(key, "space/", 6) == 0 && key[6]) {
		params[0] = key + 6;
		params[1] = user;
		n = 2;
		sql = "SELECT space FROM weft_members WHERE space = $1 AND "
		      "user_id = $2";
	} else if (strncmp(key, "rec/", 4) == 0) {
		const char *slash = strchr(key + 4, '/');
		size_t tl = slash ? (size_t)(slash - key - 4) : 0;

		if (!slash || tl == 0 || tl >= sizeof(tbl) || !slash[1]) {
			*msg = "a record key is rec/<table>/<id>";
			return WEFT_EINVAL;
		}
		memcpy(tbl, key + 4, tl);
		tbl[tl] = '\0';
		params[0] = tbl;
		params[1] = slash + 1;
		params[2] = user;
		n = 3;
		sql = "SELECT r.space FROM weft_records r JOIN weft_members m "
		      "ON m.space = r.space AND m.user_id = $3 "
		      "WHERE r.tbl = $1 AND r.id = $2";
	} else {
		*msg = "a key is space/<id> or rec/<table>/<id>";
		return WEFT_EINVAL;
	}
	if (!*pg && !(*pg = pg_open(url))) {
		*msg = "the membership database is unavailable; retry";
		return WEFT_EUNAVAILABLE;
	}
	res = PQexecParams(*pg, sql, n, NULL, params, NULL, NULL, 0);
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		log_event(LOG_WARN, "membership_query_failed", "err=\"%s\"",
			  PQresultErrorMessage(res));
		PQclear(res);
		PQfinish(*pg);
		*pg = NULL;
		*msg = "the membership database is unavailable; retry";
		return WEFT_EUNAVAILABLE;
	}
	if (PQntuples(res) == 1) {
		snprintf(space, spacelen, "%s", PQgetvalue(res, 0, 0));
		rc = 0;
	} else {
		*msg = n == 2 ? "not a member of this space"
			      : "no such record, or not in a space you "
				"are a member of";
		rc = WEFT_EPERM;
	}
	PQclear(res);
	return rc;
}

/*
 * A regrant is triggered by a members change read from the stream, and
 * the stream can be ahead of what a new snapshot sees: Postgres sends a
 * commit to logical decoding once its WAL is flushed, a moment before the
 * committing backend makes it visible, and that moment grows on a loaded
 * machine. Checked in that moment, the user is still refused and the
 * client waits for its own retry. So wait (up to WAIT_VISIBLE_MS) until
 * the membership the change recorded is visible; if it never is (removed
 * since), the checks that follow refuse as they should.
 */
static void
wait_visible(struct fanout *f, struct sess *s, PGconn **pg, const char *user,
	     const char *space)
{
	char key[KEY_MAX], got[PROTO_MAX_NAME + 1];

	if (!space[0])
		return;
	snprintf(key, sizeof(key), "space/%s", space);
	for (int waited = 0; waited < WAIT_VISIBLE_MS; waited += 5) {
		const char *msg = NULL;
		bool give_up;

		if (check_key(pg, f->cfg.pg_url, user, key, got, sizeof(got),
			      &msg) != WEFT_EPERM)
			return; /* visible, or Postgres is away */
		/* removed again since, or gone: nothing to wait for */
		pthread_mutex_lock(&f->mu);
		pthread_mutex_lock(&s->mu);
		give_up =
			s->state == S_CLOSED || member_removed(f, user, space);
		pthread_mutex_unlock(&s->mu);
		pthread_mutex_unlock(&f->mu);
		if (give_up)
			return;
		clock_sleep_ms(5);
	}
}

static int
sub_find(const struct sess *s, const char *key)
{
	for (uint32_t i = 0; i < s->nsubs; i++)
		if (strcmp(s->subs[i].key, key) == 0)
			return (int)i;
	return -1;
}

/* f->mu and s->mu held: remove subscription i */
static void
sub_remove_locked(struct fanout *f, struct sess *s, uint32_t i)
{
	route_del(f, s->subs[i].key, s);
	s->subs[i] = s->subs[--s->nsubs];
	f->st.subscriptions--;
}

static int
refused_find(const struct sess *s, const char *key)
{
	for (uint32_t i = 0; i < s->nrefused; i++)
		if (strcmp(s->refused[i], key) == 0)
			return (int)i;
	return -1;
}

/* f->mu and s->mu held: remember a refused key (up to REFUSED_MAX); the
 * list grows as needed and is freed when it empties, so a session that
 * was never refused pays nothing */
static void
refused_add_locked(struct sess *s, const char *key)
{
	if (s->nrefused >= REFUSED_MAX || refused_find(s, key) >= 0)
		return;
	if (s->nrefused == s->caprefused) {
		s->caprefused = s->caprefused ? s->caprefused * 2 : 4;
		s->refused = xrealloc(s->refused,
				      s->caprefused * sizeof(*s->refused));
	}
	if (s->nrefused == 0)
		s->f->refusing++;
	s->refused[s->nrefused++] = xstrdup(key);
}

/* f->mu and s->mu held: forget a refused key (granted, or unsubscribed) */
static void
refused_del_locked(struct sess *s, const char *key)
{
	int at = refused_find(s, key);

	if (at < 0)
		return;
	free(s->refused[at]);
	s->refused[at] = s->refused[--s->nrefused];
	if (s->nrefused == 0) {
		s->f->refusing--;
		free(s->refused);
		s->refused = NULL;
		s->caprefused = 0;
	}
}

static void
serve_req(struct fanout *f, PGconn **pg, struct req *r)
{
	struct sess *s = r->s;
	struct proto_subres *res = NULL;
	char(*spaces)[PROTO_MAX_NAME + 1] = NULL;
	struct catchup *cu = NULL;
	struct proto_msg m = { .type = PROTO_SUBSCRIBED };
	char user[AUTH_USER_MAX];
	char wait_space[PROTO_MAX_NAME + 1] = "";
	atomic_uint *bucket;
	unsigned epoch;

	pthread_mutex_lock(&s->mu);
	memcpy(user, s->user, sizeof(user));
	pthread_mutex_unlock(&s->mu);
	bucket = &f->member_epoch[hash_key(user) % EPOCH_BUCKETS];
	/* Postgres first, without locks.  A change of this user's membership
	 * that the reader meets meanwhile may predate or follow what the
	 * checks read, and its revoke or regrant would miss this request's
	 * keys: check again, three passes at most.  The bucket also moves for
	 * users that share it and for deleted spaces; if it moved during all
	 * three, the refusals stand and the grants are answered EUNAVAILABLE
	 * (retry), since a removal may have slipped past them */
	for (int tries = 0;; tries++) {
		bool closed;

		epoch = atomic_load(bucket);
		pthread_mutex_lock(&s->mu);
		closed = s->state == S_CLOSED; /* nothing to check for */
		if (r->regrant) { /* the keys refused now; a later change
				   * queues another check */
			free(r->keys);
			r->keys = xcalloc(s->nrefused + 1, sizeof(*r->keys));
			for (uint32_t i = 0; i < s->nrefused; i++)
				snprintf(r->keys[i], KEY_MAX, "%s",
					 s->refused[i]);
			r->nkeys = s->nrefused;
			s->regrant_queued = false;
			memcpy(wait_space, s->regrant_space,
			       sizeof(wait_space));
		}
		pthread_mutex_unlock(&s->mu);
		if (r->regrant && !closed && tries == 0) {
			wait_visible(f, s, pg, user, wait_space);
			epoch = atomic_load(bucket); /* from here */
		}
		if (tries == 0 || r->regrant) {
			free(res);
			free(spaces);
			res = xcalloc(r->nkeys + 1, sizeof(*res));
			spaces = xcalloc(r->nkeys + 1, sizeof(*spaces));
		}
		for (uint32_t i = 0; i < r->nkeys; i++) {
			const char *msg = NULL;

			res[i].key = proto_str_c(r->keys[i]);
			if (!r->unsubscribe && !closed)
				res[i].code = check_key(
					pg, f->cfg.pg_url, user, r->keys[i],
					spaces[i], sizeof(spaces[i]), &msg);
			res[i].msg = proto_str_c(msg);
		}
		pthread_mutex_lock(&f->mu);
		if (r->unsubscribe || atomic_load(bucket) == epoch)
			break;
		if (tries == 2) {
			for (uint32_t i = 0; i < r->nkeys; i++)
				if (res[i].code == 0 && !r->unsubscribe) {
					f->st.subscribe_churned++;
					res[i].code = WEFT_EUNAVAILABLE;
					res[i].msg = proto_str_c(
						"membership changing; retry");
				}
			break;
		}
		pthread_mutex_unlock(&f->mu);
	}
	pthread_mutex_lock(&s->mu);
	for (uint32_t i = 0; i < r->nkeys && s->state != S_CLOSED; i++) {
		int at = sub_find(s, r->keys[i]);

		if (r->unsubscribe) {
			if (at >= 0)
				sub_remove_locked(f, s, (uint32_t)at);
			refused_del_locked(s, r->keys[i]);
			continue;
		}
		if (r->regrant &&
		    (res[i].code || at >= 0 || s->nsubs >= f->cfg.max_subs ||
		     refused_find(s, r->keys[i]) < 0)) {
			/* still refused, no room, or settled meanwhile: not
			 * said (the client's own retry gets the answer) */
			res[i].code = 1;
			continue;
		}
		if (res[i].code) {
			f->st.subscribe_refused++;
			if (res[i].code == WEFT_EPERM)
				refused_add_locked(s, r->keys[i]);
			continue;
		}
		if (member_removed(f, user, spaces[i])) {
			/* granted by a snapshot older than a removal the
			 * reader has met: refuse; the client asks again */
			res[i].code = WEFT_EUNAVAILABLE;
			res[i].msg = proto_str_c("membership changing; retry");
			f->st.subscribe_churned++;
			continue;
		}
		refused_del_locked(s, r->keys[i]);
		if (at >= 0)
			continue; /* already subscribed */
		if (s->nsubs >= f->cfg.max_subs) {
			res[i].code = WEFT_ELIMIT;
			res[i].msg = proto_str_c("too many subscriptions on "
						 "this session");
			continue;
		}
		s->subs = xrealloc(s->subs, (s->nsubs + 1) * sizeof(*s->subs));
		memset(&s->subs[s->nsubs], 0, sizeof(s->subs[0]));
		snprintf(s->subs[s->nsubs].key, KEY_MAX, "%s", r->keys[i]);
		snprintf(s->subs[s->nsubs].space, sizeof(s->subs[0].space),
			 "%s", spaces[i]);
		s->subs[s->nsubs].state =
			r->cursor.lsn ? SUB_CATCHING_UP : SUB_LIVE;
		route_add(f, r->keys[i], s);
		f->st.subscriptions++;
		if (r->cursor.lsn) {
			if (!cu) {
				cu = xcalloc(1, sizeof(*cu));
				cu->keys = xcalloc(r->nkeys, sizeof(*cu->keys));
				buf_init(&cu->reply, 0);
				cu->s = s;
				cu->cursor = r->cursor;
				s->refs++;
			}
			memcpy(cu->keys[cu->nkeys++], r->keys[i], KEY_MAX);
		}
		s->nsubs++;
		if (r->regrant)
			f->st.regranted++;
	}
	if (r->regrant) { /* only the keys granted now, if any */
		uint32_t n = 0;

		for (uint32_t i = 0; i < r->nkeys; i++)
			if (res[i].code == 0)
				res[n++] = res[i];
		r->nkeys = n;
	}
	m.u.subscribed =
		(struct proto_subscribed){ r->rid, PROTO_LIST(r->nkeys, res) };
	if (cu) /* answered once caught up (serve_catchup) */
		proto_encode(&cu->reply, &m, 0, NULL);
	else if (r->nkeys || !r->regrant)
		sess_queue_locked(s, &m);
	if (cu) {
		cu->next = f->catchups;
		f->catchups = cu;
	}
	pthread_mutex_unlock(&f->mu);
	sess_unref_locked(s); /* the request's reference */
	free(res);
	free(spaces);
	free(r->keys);
	free(r);
}

static void *
auth_main(void *arg)
{
	struct fanout *f = arg;
	PGconn *pg = NULL;

	for (;;) {
		struct req *r;

		pthread_mutex_lock(&f->mu);
		while (!f->reqs && !f->stopping)
			pthread_cond_wait(&f->cv, &f->mu);
		r = f->reqs;
		if (r) {
			f->reqs = r->next;
			if (!f->reqs)
				f->reqs_tail = NULL;
		}
		pthread_mutex_unlock(&f->mu);
		if (!r)
			break;
		serve_req(f, &pg, r);
	}
	PQfinish(pg);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* the reader thread: the stream into the sessions */

/* f->mu and s->mu held: s has new changes; the reader pumps it once
 * after routing its batch, so one PUSH carries every change of the batch
 * for s (one send, one completion) rather than one each */
static void
mark_dirty(struct fanout *f, struct sess *s)
{
	if (s->dirty || s->state == S_CLOSED)
		return;
	if (f->ndirty == f->capdirty) {
		f->capdirty = f->capdirty ? f->capdirty * 2 : 256;
		f->dirty = xrealloc(f->dirty, f->capdirty * sizeof(*f->dirty));
	}
	s->dirty = true;
	s->refs++;
	f->dirty[f->ndirty++] = s;
}

/* pump these sessions, dropping the reference each held as dirty */
static void
pump_list(struct sess **v, uint32_t n)
{
	for (uint32_t i = 0; i < n; i++) {
		struct sess *s = v[i];

		pthread_mutex_lock(&s->mu);
		s->dirty = false;
		sess_pump_locked(s);
		sess_unref_locked(s);
	}
}

/* the send helper's loop (struct fanout's helper) */
static void *
helper_main(void *arg)
{
	struct fanout *f = arg;

	pthread_mutex_lock(&f->helper.mu);
	for (;;) {
		while (f->helper.n == 0 && !f->helper.stop)
			pthread_cond_wait(&f->helper.cv, &f->helper.mu);
		if (f->helper.stop)
			break;
		pthread_mutex_unlock(&f->helper.mu);
		pump_list(f->helper.v, f->helper.n);
		pthread_mutex_lock(&f->helper.mu);
		f->helper.n = 0;
		pthread_cond_broadcast(&f->helper.cv);
	}
	pthread_mutex_unlock(&f->helper.mu);
	return NULL;
}

/* HELPER_MIN - a routed chunk touching fewer sessions is sent by the
 * reader alone: handing over costs a wake-up, about what a few sends do */
#define HELPER_MIN 32

/*
 * f->mu not held: send what the routed batch queued.  With the helper,
 * the reader and the helper each send half: each write on loopback costs
 * the sender the receiver's TCP processing too, so one thread was the
 * node's limit with one change per session (bench/fanout).  Each session
 * is pumped by one thread under its own mutex, as before.
 */
static void
pump_dirty(struct fanout *f)
{
	uint32_t mine = f->ndirty;

	if (f->helper.on && f->ndirty >= HELPER_MIN) {
		mine = f->ndirty / 2;
		pthread_mutex_lock(&f->helper.mu);
		f->helper.v = f->dirty + mine;
		f->helper.n = f->ndirty - mine;
		pthread_cond_broadcast(&f->helper.cv);
		pthread_mutex_unlock(&f->helper.mu);
	}
	pump_list(f->dirty, mine);
	if (mine != f->ndirty) {
		pthread_mutex_lock(&f->helper.mu);
		while (f->helper.n != 0)
			pthread_cond_wait(&f->helper.cv, &f->helper.mu);
		pthread_mutex_unlock(&f->helper.mu);
	}
	f->ndirty = 0;
}

/* f->mu held: one change to every live subscriber of its keys */
static void
route_change(struct fanout *f, struct change *c)
{
	char key[KEY_MAX];
	struct route *r;

	/* space/<space>; and the space it left, without the data */
	for (int pass = 0; pass < 2; pass++) {
		const char *sp = pass == 0 ? c->space : c->prev;

		if (!sp || (pass == 1 && strcmp(sp, c->space) == 0))
			continue;
		snprintf(key, sizeof(key), "space/%s", sp);
		if (!(r = route_get(f, key, false)))
			continue;
		for (uint32_t i = 0; i < r->n; i++) {
			struct sess *s = r->sess[i];
			int at;

			pthread_mutex_lock(&s->mu);
			at = sub_find(s, key);
			if (at >= 0 && s->subs[at].state == SUB_LIVE) {
				sess_offer_locked(
					s, c, pass == 1 ? PK_PREV : PK_SPACE,
					pass == 1, &f->st);
				mark_dirty(f, s);
			}
			pthread_mutex_unlock(&s->mu);
		}
	}
	snprintf(key, sizeof(key), "rec/%s/%s", c->table, c->id);
	if ((r = route_get(f, key, false)))
		for (uint32_t i = 0; i < r->n; i++) {
			struct sess *s = r->sess[i];
			int at;

			pthread_mutex_lock(&s->mu);
			at = sub_find(s, key);
			if (at >= 0 && s->subs[at].state == SUB_LIVE) {
				/* the data only while it stays in a space
				 * the subscriber was allowed to see */
				bool hide = strcmp(s->subs[at].space,
						   c->space) != 0;

				sess_offer_locked(s, c, PK_REC, hide, &f->st);
				mark_dirty(f, s);
			}
			pthread_mutex_unlock(&s->mu);
		}
}

/* the user a members change is about (its id is "<space>:<user>"), or
 * NULL for any other change */
static const char *
member_user(const struct change *c)
{
	size_t sl = strlen(c->space);

	if (strcmp(c->table, "members") != 0 ||
	    strncmp(c->id, c->space, sl) != 0 || c->id[sl] != ':')
		return NULL;
	return c->id + sl + 1;
}

/* f->mu held: count a members change in its user's bucket, and a deleted
 * space in every bucket (serve_req checks again across either) */
static void
membership_moved(struct fanout *f, const struct change *c)
{
	const char *user = member_user(c);
	struct member_event *e;

	if (user) {
		atomic_fetch_add(
			&f->member_epoch[hash_key(user) % EPOCH_BUCKETS], 1);
	} else if (strcmp(c->table, "spaces") == 0 && c->deleted) {
		user = "";
		for (int i = 0; i < EPOCH_BUCKETS; i++)
			atomic_fetch_add(&f->member_epoch[i], 1);
	} else {
		return;
	}
	e = &f->mring[f->mring_next++ % MEMBER_RING];
	if (f->mring_next > MEMBER_RING &&
	    clock_now_ms() - e->at_ms <= MEMBER_FRESH_MS)
		f->mring_lost_until = clock_now_ms() + MEMBER_FRESH_MS;
	e->at_ms = clock_now_ms();
	e->deleted = c->deleted;
	snprintf(e->user, sizeof(e->user), "%s", user);
	snprintf(e->space, sizeof(e->space), "%s", c->space);
}

/*
 * f->mu held: whether the newest members change of the last
 * MEMBER_FRESH_MS for user in space (or the space's deletion) took the
 * user out. A Postgres check can run on a snapshot that does not see a
 * commit the stream already delivered (logical decoding gets a commit
 * once its WAL is flushed, a moment before it is visible), and grant
 * what a removal just took away; the stream's order wins.
 */
static bool
member_removed(const struct fanout *f, const char *user, const char *space)
{
	uint64_t now = clock_now_ms();

	for (uint32_t k = 1; k <= MEMBER_RING && k <= f->mring_next; k++) {
		const struct member_event *e =
			&f->mring[(f->mring_next - k) % MEMBER_RING];

		if (now - e->at_ms > MEMBER_FRESH_MS)
			break; /* older ones are visible by now */
		if (strcmp(e->space, space) == 0 &&
		    (!e->user[0] || strcmp(e->user, user) == 0))
			return e->deleted;
	}
	/* more changes than the ring holds came within the window: one of
	 * them may have been this removal */
	return now < f->mring_lost_until;
}

/* f->mu held: a members change that removes a user from a space (or a
 * space deleted) ends the affected subscriptions at once */
static void
revoke(struct fanout *f, const struct change *c)
{
	const char *space = c->space;
	const char *user = NULL;
	char key[KEY_MAX];

	if (strcmp(c->table, "members") == 0) {
		if (!c->deleted)
			return; /* a role change keeps read access */
		if (!(user = member_user(c)))
			return;
	} else if (strcmp(c->table, "spaces") != 0 || !c->deleted) {
		return;
	}
	snprintf(key, sizeof(key), "space/%s", space);
	/* every session of that user (or all, for a deleted space) that
	 * holds a key in the space */
	for (struct sess *s = f->sessions; s; s = s->lnext) {
		struct proto_subres res[64];
		struct proto_msg m = { .type = PROTO_SUBSCRIBED };
		uint32_t n = 0;

		pthread_mutex_lock(&s->mu);
		if (user && strcmp(s->user, user) != 0) {
			pthread_mutex_unlock(&s->mu);
			continue;
		}
		for (uint32_t i = s->nsubs; i-- > 0 && n < 64;) {
			struct sub *sub = &s->subs[i];
			bool in = strcmp(sub->key, key) == 0 ||
				  (strncmp(sub->key, "rec/", 4) == 0 &&
				   strcmp(sub->space, space) == 0);

			if (!in)
				continue;
			res[n].key = proto_str_c(sub->key);
			res[n].code = WEFT_EPERM;
			res[n].msg = proto_str_c(user ? "membership removed"
						      : "space deleted");
			n++;
		}
		if (n) {
			/* the changes queued before this one go first:
			 * the client sees them in stream order */
			while (s->npend > 0)
				push_encode_locked(s);
			/* encode while the key strings still exist */
			m.u.subscribed =
				(struct proto_subscribed){ 0,
							   PROTO_LIST(n, res) };
			sess_queue_locked(s, &m);
			for (uint32_t i = s->nsubs; i-- > 0;) {
				struct sub *sub = &s->subs[i];

				if (strcmp(sub->key, key) == 0 ||
				    (strncmp(sub->key, "rec/", 4) == 0 &&
				     strcmp(sub->space, space) == 0)) {
					/* a member again gets it back */
					if (user)
						refused_add_locked(s, sub->key);
					sub_remove_locked(f, s, i);
					f->st.revoked++;
				}
			}
		}
		pthread_mutex_unlock(&s->mu);
	}
}

/*
 * f->mu held: a members change that adds a user to a space (or changes
 * their role) has the auth thread check again every key that user's
 * sessions were refused. The granted ones are announced with an
 * unsolicited SUBSCRIBED (rid 0, code 0); their pushes start from this
 * point of the stream, so a client that loads the key after that answer
 * misses nothing (the subscribe-first rule). Clients need not poll for
 * the day they are let in.
 */
static void
regrant(struct fanout *f, const struct change *c)
{
	const char *user;
	struct req *head = NULL, **tail = &head;

	if (!f->refusing || c->deleted || !(user = member_user(c)))
		return;
	for (struct sess *s = f->sessions; s; s = s->lnext) {
		struct req *r;

		pthread_mutex_lock(&s->mu);
		if (!s->nrefused || s->state == S_CLOSED ||
		    strcmp(s->user, user) != 0) {
			pthread_mutex_unlock(&s->mu);
			continue;
		}
		snprintf(s->regrant_space, sizeof(s->regrant_space), "%s",
			 c->space);
		if (s->regrant_queued) {
			pthread_mutex_unlock(&s->mu);
			continue;
		}
		/* its keys are read when it is served: one request per
		 * session covers every change until then */
		r = xcalloc(1, sizeof(*r));
		r->s = s;
		r->regrant = true;
		s->regrant_queued = true;
		s->refs++;
		pthread_mutex_unlock(&s->mu);
		*tail = r;
		tail = &r->next;
	}
	if (!head)
		return;
	if (f->reqs_tail)
		f->reqs_tail->next = head;
	else
		f->reqs = head;
	for (f->reqs_tail = head; f->reqs_tail->next;)
		f->reqs_tail = f->reqs_tail->next;
	pthread_cond_broadcast(&f->cv);
}

static void
count_redis_error(struct fanout *f)
{
	pthread_mutex_lock(&f->mu);
	f->st.redis_errors++;
	pthread_mutex_unlock(&f->mu);
}

/* the stream's first and last IDs ("0-0" when empty) */
static bool
stream_bounds(redisContext *rc, const char *stream, struct proto_cursor *first,
	      struct proto_cursor *last)
{
	redisReply *a = redisCommand(rc, "XRANGE %s - + COUNT 1", stream);
	redisReply *b =
		a ? redisCommand(rc, "XREVRANGE %s + - COUNT 1", stream) : NULL;
	bool ok = a && b && a->type == REDIS_REPLY_ARRAY &&
		  b->type == REDIS_REPLY_ARRAY;

	*first = *last = (struct proto_cursor){ 0, 0 };
	if (ok && a->elements == 1)
		parse_cursor(a->element[0]->element[0]->str, first);
	if (ok && b->elements == 1)
		parse_cursor(b->element[0]->element[0]->str, last);
	freeReplyObject(a);
	freeReplyObject(b);
	return ok;
}

/* one catch-up: (cursor, upto] of the stream, for these keys of s */
static void
serve_catchup(struct fanout *f, redisContext *rc, struct catchup *cu,
	      struct proto_cursor upto)
{
	struct sess *s = cu->s;
	struct proto_cursor first, last;
	char from[48];
	bool gone = false;

	/* Redis trouble makes the catch-up unavailable: the client is told
	 * (CATCHUP) and catches up again; nothing is left half-done */
	if (!stream_bounds(rc, f->cfg.stream, &first, &last))
		gone = true;
	/* the entries after the cursor are all still there only if the
	 * oldest one kept is not newer than the one after the cursor */
	if (!gone && first.lsn && proto_cursor_cmp(cu->cursor, first) < 0)
		gone = true;
	snprintf(from, sizeof(from), "(%llu-%u",
		 (unsigned long long)cu->cursor.lsn, cu->cursor.idx);
	while (!gone && proto_cursor_cmp(cu->cursor, upto) < 0) {
		char to[48];
		redisReply *rep;

		snprintf(to, sizeof(to), "%llu-%u",
			 (unsigned long long)upto.lsn, upto.idx);
		rep = redisCommand(rc, "XRANGE %s %s %s COUNT 1000",
				   f->cfg.stream, from, to);
		if (!rep || rep->type != REDIS_REPLY_ARRAY) {
			freeReplyObject(rep);
			count_redis_error(f);
			gone = true;
			break;
		}
		pthread_mutex_lock(&f->mu);
		for (size_t i = 0; i < rep->elements; i++) {
			struct change *c = change_from_entry(rep->element[i]);
			char k1[KEY_MAX], k2[KEY_MAX], k3[KEY_MAX];

			if (!c)
				continue;
			snprintf(k1, sizeof(k1), "space/%s", c->space);
			snprintf(k2, sizeof(k2), "space/%s",
				 c->prev ? c->prev : "");
			snprintf(k3, sizeof(k3), "rec/%s/%s", c->table, c->id);
			pthread_mutex_lock(&s->mu);
			for (uint32_t k = 0; k < cu->nkeys; k++) {
				int at = sub_find(s, cu->keys[k]);
				bool moved_out =
					c->prev && strcmp(cu->keys[k], k2) == 0;

				if (at < 0 || (strcmp(cu->keys[k], k1) != 0 &&
					       strcmp(cu->keys[k], k3) != 0 &&
					       !moved_out))
					continue;
				sess_offer_locked(s, c,
						  moved_out ? PK_PREV
						  : strcmp(cu->keys[k], k3) == 0
							  ? PK_REC
							  : PK_SPACE,
						  moved_out, &f->st);
				break;
			}
			sess_pump_locked(s);
			pthread_mutex_unlock(&s->mu);
			cu->cursor = c->cursor;
			change_unref(c);
		}
		pthread_mutex_unlock(&f->mu);
		if (rep->elements == 0) {
			freeReplyObject(rep);
			break;
		}
		snprintf(from, sizeof(from), "(%llu-%u",
			 (unsigned long long)cu->cursor.lsn, cu->cursor.idx);
		freeReplyObject(rep);
	}
	pthread_mutex_lock(&f->mu);
	pthread_mutex_lock(&s->mu);
	if (gone) {
		struct proto_str keys[64];
		struct proto_msg m = { .type = PROTO_CATCHUP };
		uint32_t n = cu->nkeys < 64 ? cu->nkeys : 64;

		for (uint32_t k = 0; k < n; k++)
			keys[k] = proto_str_c(cu->keys[k]);
		m.u.catchup = (struct proto_catchup){
			PROTO_LIST(n, keys), first,
			proto_str_c("your cursor is older than the change "
				    "log window: bootstrap these again")
		};
		sess_queue_locked(s, &m);
		f->st.catchup_unavailable++;
	} else {
		f->st.catchups++;
	}
	for (uint32_t k = 0; k < cu->nkeys; k++) {
		int at = sub_find(s, cu->keys[k]);

		if (at >= 0)
			s->subs[at].state = SUB_LIVE;
	}
	/* then the answer, after every change of the catch-up */
	if (cu->reply.len && s->state != S_CLOSED) {
		while (s->npend > 0)
			push_encode_locked(s);
		buf_append(&s->tx.out, cu->reply.data, cu->reply.len);
		sess_pump_locked(s);
	}
	pthread_mutex_unlock(&f->mu);
	sess_unref_locked(s);
}

static void *
reader_main(void *arg)
{
	struct fanout *f = arg;
	redisContext *rc = NULL;
	struct proto_cursor last = { 0, 0 };
	bool started = false;
	uint32_t backoff = 50;

	for (;;) {
		struct catchup *cus;
		redisReply *rep;
		char id[48], why[256];

		pthread_mutex_lock(&f->mu);
		if (f->stopping) {
			pthread_mutex_unlock(&f->mu);
			break;
		}
		pthread_mutex_unlock(&f->mu);
		if (!rc) {
			rc = redis_open(f->cfg.redis_url, 5000, why,
					sizeof(why));
			if (!rc) {
				log_event(LOG_WARN, "redis_connect_failed",
					  "why=\"%s\"", why);
				count_redis_error(f);
				atomic_store(&f->redis_ok, false);
				clock_sleep_ms(backoff);
				backoff = backoff < 1000 ? backoff * 2 : 2000;
				continue;
			}
			backoff = 50;
			if (!started) { /* live from the current end */
				struct proto_cursor first;

				if (!stream_bounds(rc, f->cfg.stream, &first,
						   &last)) {
					redisFree(rc);
					rc = NULL;
					continue;
				}
				started = true;
			}
			atomic_store(&f->redis_ok, true);
		}
		/* catch-ups asked since the last round, up to what has been
		 * routed live (last): nothing missed, nothing twice */
		pthread_mutex_lock(&f->mu);
		cus = f->catchups;
		f->catchups = NULL;
		pthread_mutex_unlock(&f->mu);
		while (cus) {
			struct catchup *next = cus->next;

			serve_catchup(f, rc, cus, last);
			free(cus->keys);
			buf_fini(&cus->reply);
			free(cus);
			cus = next;
		}
		snprintf(id, sizeof(id), "%llu-%u",
			 (unsigned long long)last.lsn, last.idx);
		rep = redisCommand(rc, "XREAD COUNT %d BLOCK %d STREAMS %s %s",
				   XREAD_COUNT, XREAD_BLOCK_MS, f->cfg.stream,
				   id);
		if (!rep) {
			log_event(LOG_WARN, "redis_failed", "why=\"%s\"",
				  rc->errstr);
			count_redis_error(f);
			atomic_store(&f->redis_ok, false);
			redisFree(rc);
			rc = NULL;
			continue;
		}
		if (rep->type == REDIS_REPLY_NIL) {
			/* idle: did the stream go backwards (Redis lost its
			 * tail)?  Then everyone catches up. */
			struct proto_cursor first, top;

			freeReplyObject(rep);
			if (stream_bounds(rc, f->cfg.stream, &first, &top) &&
			    proto_cursor_cmp(top, last) < 0) {
				log_event(LOG_ERROR, "stream_regressed",
					  "msg=\"the stream lost entries; "
					  "every session catches up\"");
				pthread_mutex_lock(&f->mu);
				for (struct sess *s = f->sessions; s;
				     s = s->lnext) {
					pthread_mutex_lock(&s->mu);
					catchup_msg_locked(
						s,
						"the change log lost entries; "
						"bootstrap again",
						first);
					pthread_mutex_unlock(&s->mu);
				}
				pthread_mutex_unlock(&f->mu);
				last = top;
			}
			continue;
		}
		if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 1 &&
		    rep->element[0]->elements == 2) {
			redisReply *entries = rep->element[0]->element[1];

			pthread_mutex_lock(&f->mu);
			for (size_t i = 0; i < entries->elements; i++) {
				struct change *c;

				/* send every ROUTE_CHUNK entries, so the first
				 * change of a long read is not held back */
				if (i > 0 && i % ROUTE_CHUNK == 0) {
					pthread_mutex_unlock(&f->mu);
					pump_dirty(f);
					pthread_mutex_lock(&f->mu);
				}
				c = change_from_entry(entries->element[i]);

				if (!c) {
					log_event(LOG_WARN, "bad_entry",
						  "msg=\"an entry without the "
						  "fields of a change\"");
					continue;
				}
				last = c->cursor;
				f->st.entries++;
				if (c->when_us) {
					struct timespec ts;

					clock_gettime(CLOCK_REALTIME, &ts);
					f->st.stream_lag_ms =
						(double)(ts.tv_sec * 1000000 +
							 ts.tv_nsec / 1000 -
							 c->when_us) /
						1000.0;
				}
				route_change(f, c);
				membership_moved(f, c);
				revoke(f, c);
				regrant(f, c);
				change_unref(c);
			}
			pthread_mutex_unlock(&f->mu);
			pump_dirty(f);
		}
		freeReplyObject(rep);
	}
	redisFree(rc);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* housekeeping: pings, expired tokens
 *
 * Every HOUSE_TICK_MS the thread visits the next 1/HOUSE_SLICES of the
 * sessions, so each is visited about once a second.  Under f->mu it only
 * picks the sessions with something due (taking a reference); it acts on
 * them after releasing f->mu.  A whole pass under f->mu, sending its pings
 * inline, held the reader's routing for tens of milliseconds every second
 * at 15,000 sessions. */

#define HOUSE_TICK_MS 100
#define HOUSE_SLICES  10

/* up to a quarter of the heartbeat, fixed per session: sessions that
 * connected together (after a node restart, say) and stay idle ping at
 * different times, not in a wave */
static uint64_t
ping_skew_ms(const struct fanout *f, const struct sess *s)
{
	uint64_t h = s->id * 0x9e3779b97f4a7c15ull;

	return (h >> 33) % (f->cfg.heartbeat_ms / 4 + 1);
}

/* ms from t to now, 0 if t is later (set after now was read) */
static uint64_t
ms_since(uint64_t now, uint64_t t)
{
	return now > t ? now - t : 0;
}

/* s->mu held: what the housekeeping owes s at now (read under s->mu, so
 * no time s holds is later; ms_since guards anyway) */
enum house_due { DUE_NONE, DUE_HELLO, DUE_FRAME, DUE_TOKEN, DUE_PING };

static enum house_due
house_due_locked(const struct fanout *f, const struct sess *s, uint64_t now)
{
	if (s->state == S_HELLO &&
	    ms_since(now, s->opened_ms) >= f->cfg.idle_ms)
		return DUE_HELLO;
	if (s->state != S_LIVE)
		return DUE_NONE;
	if (s->frame_start_ms &&
	    ms_since(now, s->frame_start_ms) >= f->cfg.idle_ms)
		return DUE_FRAME;
	if (s->token_exp < (int64_t)time(NULL))
		return DUE_TOKEN;
	if (ms_since(now, s->last_tx_ms) + ping_skew_ms(f, s) >=
	    f->cfg.heartbeat_ms)
		return DUE_PING;
	return DUE_NONE;
}

/* s->mu held */
static void
house_act_locked(struct fanout *f, struct sess *s)
{
	uint64_t now = clock_now_ms();

	switch (house_due_locked(f, s, now)) {
	case DUE_NONE:
		break;
	case DUE_HELLO:
		sess_error_locked(s, 0, WEFT_ETIMEDOUT, true,
				  "no HELLO within %u ms", f->cfg.idle_ms);
		break;
	case DUE_FRAME:
		sess_error_locked(s, 0, WEFT_ETIMEDOUT, true,
				  "a frame took over %u ms to arrive",
				  f->cfg.idle_ms);
		break;
	case DUE_TOKEN:
		sess_error_locked(s, 0, WEFT_EEXPIRED, true,
				  "token expired: reconnect with a fresh one");
		break;
	case DUE_PING: {
		struct proto_msg m = { .type = PROTO_PING };

		m.u.ping.nonce = now;
		/* counted as sent now, even if it waits behind a send in
		 * flight: one PING per heartbeat, never a pile of them */
		s->last_tx_ms = now;
		sess_queue_locked(s, &m);
		break;
	}
	}
}

static void *
house_main(void *arg)
{
	struct fanout *f = arg;
	struct sess **due = NULL;
	uint32_t capdue = 0;

	for (;;) {
		uint32_t ndue = 0, budget, seen = 0;
		struct sess *s;

		clock_sleep_ms(HOUSE_TICK_MS);
		pthread_mutex_lock(&f->mu);
		if (f->stopping) {
			pthread_mutex_unlock(&f->mu);
			break;
		}
		budget = f->nsessions / HOUSE_SLICES + 1;
		if (budget > capdue) {
			capdue = budget;
			due = xrealloc(due, capdue * sizeof(*due));
		}
		s = f->house_next ? f->house_next : f->sessions;
		for (; s && seen < budget; s = s->lnext, seen++) {
			pthread_mutex_lock(&s->mu);
			if (s->state != S_CLOSED &&
			    house_due_locked(f, s, clock_now_ms()) !=
				    DUE_NONE) {
				s->refs++;
				due[ndue++] = s;
			}
			pthread_mutex_unlock(&s->mu);
		}
		f->house_next = s; /* NULL: the next tick starts over */
		pthread_mutex_unlock(&f->mu);
		for (uint32_t i = 0; i < ndue; i++) {
			pthread_mutex_lock(&due[i]->mu);
			house_act_locked(f, due[i]);
			sess_unref_locked(due[i]);
		}
	}
	free(due);
	return NULL;
}

/* ------------------------------------------------------------------ */

int
fanout_new(struct fanout **out, const struct fanout_config *cfg, char *why,
	   size_t whylen)
{
	struct fanout *f = xcalloc(1, sizeof(*f));
	int rc;

	*out = NULL;
	f->cfg = *cfg;
	f->routes = xcalloc(ROUTE_BUCKETS, sizeof(*f->routes));
	f->mring = xcalloc(MEMBER_RING, sizeof(*f->mring));
	pthread_mutex_init(&f->mu, NULL);
	pthread_cond_init(&f->cv, NULL);
	f->send_now = sender_sends_now(cfg->listen_url);
	rc = listen_open(&f->listener, cfg->listen_url, cfg->tls_cert,
			 cfg->max_frame, why, whylen);
	if (!rc && nng_aio_alloc(&f->accept_aio, accept_cb, f) != 0) {
		nng_stream_listener_free(f->listener);
		snprintf(why, whylen, "out of memory");
		rc = WEFT_ENOMEM;
	}
	if (rc) {
		free(f->routes);
		free(f->mring);
		free(f);
		return rc;
	}
	pthread_mutex_init(&f->helper.mu, NULL);
	pthread_cond_init(&f->helper.cv, NULL);
	if (sysconf(_SC_NPROCESSORS_ONLN) > 1) {
		if (pthread_create(&f->helper.th, NULL, helper_main, f) != 0)
			alloc_oom(0);
		f->helper.on = true;
	}
	if (pthread_create(&f->auth_thread, NULL, auth_main, f) != 0 ||
	    pthread_create(&f->reader_thread, NULL, reader_main, f) != 0 ||
	    pthread_create(&f->house_thread, NULL, house_main, f) != 0)
		alloc_oom(0);
	nng_stream_listener_accept(f->listener, f->accept_aio);
	*out = f;
	return 0;
}

void
fanout_stats(struct fanout *f, struct fanout_stats *out)
{
	pthread_mutex_lock(&f->mu);
	*out = f->st;
	pthread_mutex_unlock(&f->mu);
	out->pushes = atomic_load(&f->pushes);
}

bool
fanout_redis_ok(struct fanout *f)
{
	return atomic_load(&f->redis_ok);
}

void
fanout_free(struct fanout *f)
{
	uint64_t until;

	if (!f)
		return;
	pthread_mutex_lock(&f->mu);
	f->stopping = true;
	pthread_cond_broadcast(&f->cv);
	for (struct sess *s = f->sessions; s; s = s->lnext) {
		struct proto_msg m = { .type = PROTO_BACKOFF };

		pthread_mutex_lock(&s->mu);
		m.u.backoff = (struct proto_backoff){
			0, 100, true,
			proto_str_c("this node is shutting down; reconnect "
				    "to another")
		};
		sess_queue_locked(s, &m);
		if (s->state != S_CLOSED) {
			s->state = S_DRAINING;
			if (!s->tx.busy)
				sess_close_locked(s, "shutdown");
		}
		pthread_mutex_unlock(&s->mu);
	}
	pthread_mutex_unlock(&f->mu);
	nng_stream_listener_close(f->listener);
	nng_aio_stop(f->accept_aio);
	pthread_join(f->auth_thread, NULL);
	pthread_join(f->reader_thread, NULL);
	pthread_join(f->house_thread, NULL);
	if (f->helper.on) { /* idle: the reader waited for its last slice */
		pthread_mutex_lock(&f->helper.mu);
		f->helper.stop = true;
		pthread_cond_broadcast(&f->helper.cv);
		pthread_mutex_unlock(&f->helper.mu);
		pthread_join(f->helper.th, NULL);
	}
	/* requests the auth thread never took */
	while (f->reqs) {
		struct req *r = f->reqs;

		f->reqs = r->next;
		pthread_mutex_lock(&r->s->mu);
		sess_unref_locked(r->s);
		free(r->keys);
		free(r);
	}
	while (f->catchups) {
		struct catchup *c = f->catchups;

		f->catchups = c->next;
		pthread_mutex_lock(&c->s->mu);
		sess_unref_locked(c->s);
		free(c->keys);
		buf_fini(&c->reply);
		free(c);
	}
	/* give the goodbyes up to 2 s, then close what is left */
	until = clock_now_ms() + 2000;
	pthread_mutex_lock(&f->mu);
	while (f->sessions && clock_now_ms() < until) {
		struct timespec ts;

		clock_deadline(&ts, 50 * 1000000u);
		pthread_cond_timedwait(&f->cv, &f->mu, &ts);
	}
	for (struct sess *s = f->sessions; s; s = s->lnext) {
		pthread_mutex_lock(&s->mu);
		sess_close_locked(s, "shutdown");
		pthread_mutex_unlock(&s->mu);
	}
	while (f->sessions)
		pthread_cond_wait(&f->cv, &f->mu);
	pthread_mutex_unlock(&f->mu);
	nng_aio_free(f->accept_aio);
	nng_stream_listener_free(f->listener);
	for (uint32_t b = 0; b < ROUTE_BUCKETS; b++)
		while (f->routes[b]) {
			struct route *r = f->routes[b];

			f->routes[b] = r->next;
			free(r->sess);
			free(r);
		}
	free(f->routes);
	free(f->mring);
	free(f->dirty);
	pthread_cond_destroy(&f->helper.cv);
	pthread_mutex_destroy(&f->helper.mu);
	pthread_cond_destroy(&f->cv);
	pthread_mutex_destroy(&f->mu);
	free(f);
}
