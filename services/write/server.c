/*
 * server.c - listener, connections and request handling (see server.h).
 *
 * Connection state:
 *
 *   HELLO --valid HELLO--> READY --recv error, bad frame, idle--> CLOSED
 *     |                      |                                      ^
 *     +--bad token/version---+--fatal ERROR queued--> DRAINING -----+
 *                                                  (close once sent)
 *
 *   conn_recv_cb: HELLO->READY, any->DRAINING, any->CLOSED
 *   conn_send_cb: DRAINING->CLOSED once the out-queue is empty
 *
 * Lifetime: a connection holds one reference for its pending receive, one
 * while a send is in flight, and one per database job it submitted.  The
 * last reference frees it; aios are released with nng_aio_reap because
 * that may happen inside their own callback.
 */
#include "services/write/server.h"

#include <jansson.h>
#include <msgpack.h>
#include <nng/nng.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <weft/error.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/frame.h"
#include "proto/json.h"
#include "proto/msg.h"
#include "proto/schema.h"
#include "services/shared/listen.h"
#include "services/shared/ratelimit.h"
#include "services/shared/sender.h"

#include "common/banned.h"

/* CONN_RX_CHUNK - bytes read per receive: a typical request in one go. */
#define CONN_RX_CHUNK (16u << 10)

enum conn_state { CONN_HELLO, CONN_READY, CONN_DRAINING, CONN_CLOSED };

struct conn {
	struct server *srv;
	uint64_t id;
	nng_stream *stream;
	nng_aio *rx_aio;
	pthread_mutex_t mu; /* everything below */
	enum conn_state state;
	int refs;
	struct frame_reader fr;
	uint8_t rx[CONN_RX_CHUNK];
	struct sender tx; /* replies (each buffer bounded by max-out) */
	char user[AUTH_USER_MAX];
	int64_t token_exp; /* Unix seconds */
	/* the last transaction refused for the user's rate: until
	 * held_until_ms, the same client's later ones (the rest of its
	 * window) are refused too, without taking the tokens its resend
	 * needs */
	char held_client[PROTO_MAX_NAME + 1];
	uint64_t held_mid, held_until_ms;
	struct conn *prev, *next; /* server's list */
};

struct server {
	struct server_config cfg;
	const struct auth *auth;
	const struct schema *schema; /* NULL: any table and field */
	struct db *db;
	struct ratelimit *limit; /* transactions per user */
	nng_stream_listener *listener;
	bool send_now; /* connections write on the caller's thread (sender.h) */
	nng_aio *accept_aio;
	pthread_mutex_t mu;  /* list, stopping, next_id; taken before a
			      * conn's mu, never after it */
	pthread_cond_t gone; /* a connection was freed */
	struct conn *conns;
	bool stopping;
	atomic_bool draining; /* SIGTERM: no new requests, finish the rest */
	atomic_int pending;   /* jobs submitted and not yet answered */
	uint64_t next_id;
	struct { /* atomics: counted under a conn's mu */
		atomic_ullong conns, open, requests, bad_frames;
		atomic_ullong auth_failed, backoffs, rate_limited;
		atomic_ullong rejects[64], lat_hist[16], lat_sum_us;
	} st;
};

static void
stat_add(atomic_ullong *counter, long long n)
{
	atomic_fetch_add_explicit(counter, (unsigned long long)n,
				  memory_order_relaxed);
}

static void conn_recv_cb(void *arg);
static void conn_send_cb(void *arg);

/* ------------------------------------------------------------------ */
/* lifetime */

static void
conn_free(struct conn *c)
{
	struct server *srv = c->srv;

	pthread_mutex_lock(&srv->mu);
	if (c->prev)
		c->prev->next = c->next;
	else
		srv->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	stat_add(&srv->st.open, -1);
	pthread_cond_broadcast(&srv->gone);
	pthread_mutex_unlock(&srv->mu);
	nng_stream_free(c->stream);
	nng_aio_reap(c->rx_aio); /* we may be inside its callback */
	sender_fini(&c->tx);
	frame_reader_fini(&c->fr);
	pthread_mutex_destroy(&c->mu);
	free(c);
}

/* drop a reference; c->mu held on entry, released here */
static void
conn_unref_locked(struct conn *c)
{
	bool last = --c->refs == 0;

	pthread_mutex_unlock(&c->mu);
	if (last)
		conn_free(c);
}

/* c->mu held: move to CLOSED and close the stream (pending aios fail) */
static void
conn_close_locked(struct conn *c, const char *why)
{
	if (c->state == CONN_CLOSED)
		return;
	c->state = CONN_CLOSED;
	log_event(LOG_DEBUG, "conn_closed", "conn=%llu why=%s",
		  (unsigned long long)c->id, why);
	nng_stream_close(c->stream);
}

/* ------------------------------------------------------------------ */
/* sending */

/* c->mu held: send what waits if nothing is in flight, from this thread
 * while the socket takes it (sender.h) */
static void
conn_kick_locked(struct conn *c)
{
	if (c->state == CONN_CLOSED)
		return;
	switch (sender_kick(&c->tx)) {
	case KICK_STARTED:
		c->refs++; /* the send's */
		break;
	case KICK_FAILED:
		conn_close_locked(c, "send_failed");
		break;
	case KICK_WROTE:
		if (c->state == CONN_DRAINING)
			conn_close_locked(c, "drained");
		break;
	case KICK_IDLE:
		break;
	}
}

static void
conn_send_cb(void *arg)
{
	struct conn *c = arg;

	pthread_mutex_lock(&c->mu);
	switch (sender_done(&c->tx, c->state == CONN_CLOSED)) {
	case SENDER_FAILED:
		conn_close_locked(c, "send_failed");
		break;
	case SENDER_MORE:
		pthread_mutex_unlock(&c->mu);
		return; /* keeps its reference */
	case SENDER_IDLE:
		conn_kick_locked(c);
		if (!c->tx.busy && c->state == CONN_DRAINING)
			conn_close_locked(c, "drained");
		break;
	}
	conn_unref_locked(c);
}

/* c->mu held: queue one message; a client that lets its out-queue fill
 * is closed (it resends what it has not seen acknowledged) */
static void
conn_queue_locked(struct conn *c, const struct proto_msg *m)
{
	struct proto_err err;
	int rc;

	if (c->state == CONN_CLOSED)
		return;
	rc = proto_encode(&c->tx.out, m, 0, &err);
	if (rc == WEFT_EAGAIN) {
		conn_close_locked(c, "out_queue_full");
		return;
	}
	if (rc) {
		log_event(LOG_ERROR, "encode_failed",
			  "conn=%llu type=%s err=%s", (unsigned long long)c->id,
			  proto_type_name(m->type), err.msg);
		return;
	}
	conn_kick_locked(c);
}

static void conn_error_locked(struct conn *c, uint64_t rid, int code,
			      bool fatal, uint64_t expected, const char *fmt,
			      ...) __attribute__((format(printf, 6, 7)));

static void
conn_error_locked(struct conn *c, uint64_t rid, int code, bool fatal,
		  uint64_t expected, const char *fmt, ...)
{
	struct proto_msg m = { .type = PROTO_ERROR };
	char text[PROTO_MAX_TEXT];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(text, sizeof(text), fmt, ap);
	va_end(ap);
	m.u.error = (struct proto_error){ rid, code, proto_str_c(text),
					  expected, fatal };
	conn_queue_locked(c, &m);
	if (fatal && c->state != CONN_CLOSED) {
		c->state = CONN_DRAINING;
		if (!c->tx.busy)
			conn_close_locked(c, "fatal_error");
	}
}

/* ------------------------------------------------------------------ */
/* replies from the database (worker threads) */

/* records of a JSON result as proto records; data packed into scratch */
struct recset {
	struct proto_record *recs;
	uint32_t n;
	msgpack_sbuffer scratch;
};

static const char *
jstr(json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

static void
recset_build(struct recset *rs, json_t *arr)
{
	size_t n = json_array_size(arr), *off, i;
	msgpack_packer pk;
	json_t *r;

	msgpack_sbuffer_init(&rs->scratch);
	msgpack_packer_init(&pk, &rs->scratch, msgpack_sbuffer_write);
	rs->recs = xcalloc(n ? n : 1, sizeof(*rs->recs));
	off = xcalloc(n ? n : 1, sizeof(*off));
	rs->n = 0;
	json_array_foreach(arr, i, r)
	{
		struct proto_record *p = &rs->recs[rs->n];
		json_t *data = json_object_get(r, "data");

		p->table = proto_str_c(jstr(r, "table"));
		p->id = proto_str_c(jstr(r, "id"));
		p->space = proto_str_c(jstr(r, "space"));
		p->version =
			(uint64_t)json_integer_value(json_object_get(r, "ver"));
		p->deleted = json_is_true(json_object_get(r, "deleted"));
		off[rs->n] = rs->scratch.size;
		if (data && !p->deleted && json_to_mp(&pk, data) == 0)
			p->data.len = (uint32_t)(rs->scratch.size - off[rs->n]);
		rs->n++;
	}
	for (i = 0; i < rs->n; i++) /* the scratch has stopped moving */
		if (rs->recs[i].data.len)
			rs->recs[i].data.p =
				(const uint8_t *)rs->scratch.data + off[i];
	free(off);
}

static void
recset_fini(struct recset *rs)
{
	free(rs->recs);
	msgpack_sbuffer_destroy(&rs->scratch);
}

static void
count_reject(struct server *srv, int code)
{
	if (code < 0 && code > -64)
		stat_add(&srv->st.rejects[-code], 1);
}

static void
count_latency(struct server *srv, uint64_t queued_ns)
{
	uint64_t us = (clock_now_ns() - queued_ns) / 1000;
	unsigned b = 0;

	for (uint64_t v = us / 100; v > 1 && b < 15; v >>= 1)
		b++;
	stat_add(&srv->st.lat_hist[b], 1);
	stat_add(&srv->st.lat_sum_us, (long long)us);
}

/* c->mu held */
static void
reply_txn(struct conn *c, struct job *job, json_t *res)
{
	const char *s = jstr(res, "s");
	struct proto_msg m;
	struct recset rs;

	if (!s) {
		conn_error_locked(c, job->rid, WEFT_EINTERNAL, false, 0,
				  "malformed database result");
		return;
	}
	if (strcmp(s, "ack") == 0 || strcmp(s, "reject") == 0) {
		bool ack = s[0] == 'a';

		recset_build(&rs, json_object_get(res, "records"));
		memset(&m, 0, sizeof(m));
		if (ack) {
			m.type = PROTO_ACK;
			m.u.ack.rid = job->rid;
			m.u.ack.mid = job->mid;
			m.u.ack.replay =
				json_is_true(json_object_get(res, "replay"));
			m.u.ack.records = PROTO_LIST(rs.n, rs.recs);
		} else {
			int code = (int)json_integer_value(
				json_object_get(res, "code"));

			m.type = PROTO_REJECT;
			m.u.reject.rid = job->rid;
			m.u.reject.mid = job->mid;
			m.u.reject.code = code < 0 ? code : WEFT_EINTERNAL;
			m.u.reject.msg =
				proto_str_c(jstr(res, "msg") ? jstr(res, "msg")
							     : "rejected");
			m.u.reject.opnum = (uint32_t)json_integer_value(
				json_object_get(res, "opnum"));
			m.u.reject.field = proto_str_c(jstr(res, "field"));
			m.u.reject.replay =
				json_is_true(json_object_get(res, "replay"));
			count_reject(c->srv, m.u.reject.code);
		}
		conn_queue_locked(c, &m);
		recset_fini(&rs);
	} else if (strcmp(s, "gap") == 0) {
		uint64_t exp = (uint64_t)json_integer_value(
			json_object_get(res, "expected"));

		conn_error_locked(c, job->rid, WEFT_EGAP, false, exp,
				  "mutation %llu of client %s skips ahead: "
				  "send %llu first",
				  (unsigned long long)job->mid, job->client_id,
				  (unsigned long long)exp);
	} else if (strcmp(s, "expired") == 0) {
		conn_error_locked(c, job->rid, WEFT_ENOTFOUND, false, 0,
				  "mutation %llu was applied long ago; its "
				  "result is no longer kept",
				  (unsigned long long)job->mid);
	} else if (strcmp(s, "foreign") == 0) {
		conn_error_locked(c, job->rid, WEFT_EPERM, false, 0,
				  "client id %s belongs to another user",
				  job->client_id);
	} else {
		conn_error_locked(c, job->rid, WEFT_EINTERNAL, false, 0,
				  "unknown database result '%s'", s);
	}
}

/* c->mu held */
static void
reply_fetch(struct conn *c, struct job *job, json_t *res)
{
	json_t *want = json_loads(job->keys_json, 0, NULL), *k;
	json_t *recs = json_object_get(res, "records");
	struct proto_keyref *missing;
	struct proto_msg m = { .type = PROTO_RECORDS };
	struct recset rs;
	uint32_t nmiss = 0;
	size_t i;

	recset_build(&rs, recs);
	missing = xcalloc(json_array_size(want) + 1, sizeof(*missing));
	json_array_foreach(want, i, k)
	{
		const char *t = jstr(k, "table"), *id = jstr(k, "id");
		bool found = false;

		for (uint32_t j = 0; j < rs.n && !found; j++)
			found = proto_str_eq(rs.recs[j].table, t) &&
				proto_str_eq(rs.recs[j].id, id);
		if (!found)
			missing[nmiss++] =
				(struct proto_keyref){ proto_str_c(t),
						       proto_str_c(id) };
	}
	m.u.records.rid = job->rid;
	m.u.records.records = PROTO_LIST(rs.n, rs.recs);
	m.u.records.missing = PROTO_LIST(nmiss, missing);
	conn_queue_locked(c, &m);
	free(missing);
	recset_fini(&rs);
	json_decref(want);
}

static uint64_t
parse_lsn(const char *s)
{
	unsigned long hi = 0, lo = 0;

	if (!s || sscanf(s, "%lX/%lX", &hi, &lo) != 2)
		return 0;
	return ((uint64_t)hi << 32) | (uint64_t)lo;
}

/* c->mu held */
static void
reply_page(struct conn *c, struct job *job)
{
	struct proto_msg m = { .type = PROTO_PAGE };
	const struct page_out *pg = job->page;

	if (pg->denied) {
		conn_error_locked(c, job->rid, WEFT_EPERM, false, 0,
				  "user %s is not a member of space %s",
				  c->user, job->space);
		return;
	}
	m.u.page.rid = job->rid;
	m.u.page.space = proto_str_c(job->space);
	m.u.page.records = PROTO_LIST(pg->n, pg->recs);
	if (pg->next)
		m.u.page.next =
			(struct proto_bytes){ (const uint8_t *)pg->next,
					      (uint32_t)strlen(pg->next) };
	m.u.page.cursor.lsn = parse_lsn(pg->lsn);
	m.u.page.total = pg->has_total ? pg->total : 0;
	conn_queue_locked(c, &m);
}

static void
job_done(struct job *job, int status, json_t *res)
{
	struct conn *c = job->owner;

	pthread_mutex_lock(&c->mu);
	if (job->kind == JOB_TXN)
		count_latency(c->srv, job->queued_ns);
	if (status == WEFT_ELIMIT)
		conn_error_locked(c, job->rid, status, false, 0,
				  "the result is too large for one reply: ask "
				  "for fewer records");
	else if (status != 0)
		conn_error_locked(
			c, job->rid, status, false, 0, "%s: try again",
			status == WEFT_EUNAVAILABLE ? "database unavailable"
						    : weft_strerror(status));
	else if (job->kind == JOB_TXN)
		reply_txn(c, job, res);
	else if (job->kind == JOB_FETCH)
		reply_fetch(c, job, res);
	else
		reply_page(c, job);
	job_free(job);
	atomic_fetch_sub(&c->srv->pending, 1);
	conn_unref_locked(c);
}

/* ------------------------------------------------------------------ */
/* requests (nng callback threads: nothing here blocks) */

static struct job *
job_for(struct conn *c, enum job_kind kind, uint64_t rid)
{
	struct job *job = xcalloc(1, sizeof(*job));

	job->kind = kind;
	job->done = job_done;
	job->owner = c;
	job->rid = rid;
	memcpy(job->user, c->user, sizeof(job->user));
	return job;
}

static char *
strndup_str(struct proto_str s)
{
	char *d = xmalloc(s.len + 1);

	memcpy(d, s.p, s.len);
	d[s.len] = '\0';
	return d;
}

/* c->mu held: hand a job to the database (0), or answer BACKOFF (or
 * EUNAVAILABLE: no connection to the database) and free it (-1) */
static int
submit_locked(struct conn *c, struct job *job)
{
	struct proto_msg m = { .type = PROTO_BACKOFF };
	int err;

	c->refs++;
	atomic_fetch_add(&c->srv->pending, 1);
	err = db_submit(c->srv->db, job);
	if (err == 0)
		return 0;
	atomic_fetch_sub(&c->srv->pending, 1);
	c->refs--;
	if (err == WEFT_EUNAVAILABLE) {
		conn_error_locked(c, job->rid, err, false, 0,
				  "database unavailable: try again");
		job_free(job);
		return -1;
	}
	stat_add(&c->srv->st.backoffs, 1);
	m.u.backoff = (struct proto_backoff){
		job->rid, c->srv->cfg.retry_ms, false,
		proto_str_c("overloaded: too many requests queued")
	};
	job_free(job);
	conn_queue_locked(c, &m);
	return -1;
}

/* a rejection as weft_apply()'s p_reject: {"code","msg","opnum","field"} */
static void
reject_json(struct buf *b, int code, uint32_t opnum, const char *field,
	    const char *msg)
{
	buf_reset(b);
	buf_appendf(b, "{\"code\":%d,\"opnum\":%u,\"msg\":", code, opnum);
	json_put_string(b, msg, (uint32_t)strlen(msg));
	if (field) {
		buf_append(b, ",\"field\":", 9);
		json_put_string(b, field, (uint32_t)strlen(field));
	}
	buf_append(b, "}", 2); /* with the NUL */
}

/* a transaction of this one op may take the set-based path (db.c) */
static void
mark_fast(struct job *job, const struct proto_op *op)
{
	struct buf v;

	if ((op->kind != PROTO_OP_SET && op->kind != PROTO_OP_UNSET) ||
	    op->expect || proto_str_eq(op->table, "members") ||
	    proto_str_eq(op->table, "spaces"))
		return;
	buf_init(&v, 0);
	if (op->kind == PROTO_OP_UNSET)
		buf_append(&v, "null", 4);
	else if (json_from_mp(&v, op->value.p, op->value.len) != 0) {
		buf_fini(&v);
		return;
	}
	buf_append(&v, "", 1);
	if (v.err) {
		buf_fini(&v);
		return;
	}
	job->fast_op = op->kind == PROTO_OP_SET ? 1 : 2;
	job->fast_tbl = strndup_str(op->table);
	job->fast_id = strndup_str(op->id);
	job->fast_field = strndup_str(op->field);
	job->fast_value = (char *)v.data;
}

/* the ops of a transaction as the JSON weft_apply() takes; on a client
 * mistake the rejection JSON instead (it is stored like any other) */
static void
txn_to_json(struct conn *c, const struct proto_txn *t, struct job *job)
{
	const struct server_config *cfg = &c->srv->cfg;
	struct buf b, why, data;
	struct proto_iter it;
	struct proto_op op, first = { 0 };
	char text[320];
	uint32_t n = 0;
	int rc = 0;

	buf_init(&b, 0);
	buf_init(&why, 0);
	buf_init(&data, 0);
	if (t->ops.n > cfg->max_ops) {
		snprintf(text, sizeof(text),
			 "%u ops, more than the limit of %u", t->ops.n,
			 cfg->max_ops);
		reject_json(&why, WEFT_ELIMIT, 0, NULL, text);
		goto out_reject;
	}
	buf_append(&b, "[", 1);
	proto_iter_init(&it, &t->ops);
	while (proto_next_op(&it, &op) == 1) {
		n++;
		if (c->srv->schema) {
			const char *field;
			bool completed;

			buf_reset(&data);
			rc = schema_check_op(c->srv->schema, &op, &data,
					     &completed, text, sizeof(text),
					     &field);
			if (rc == 0 && data.err)
				rc = WEFT_ELIMIT;
			if (rc) {
				reject_json(&why, WEFT_EVALIDATION, n, field,
					    text);
				goto out_reject;
			}
			if (completed) /* the defaults filled in */
				op.data = (struct proto_bytes){
					data.data, (uint32_t)data.len
				};
		}
		if (n == 1)
			first = op;
		else
			buf_append(&b, ",", 1);
		buf_appendf(&b, "{\"op\":\"%s\",\"table\":",
			    proto_op_name(op.kind));
		json_put_string(&b, op.table.p, op.table.len);
		buf_append(&b, ",\"id\":", 6);
		json_put_string(&b, op.id.p, op.id.len);
		if (op.space.p) {
			buf_append(&b, ",\"space\":", 9);
			json_put_string(&b, op.space.p, op.space.len);
		}
		if (op.field.p) {
			buf_append(&b, ",\"field\":", 9);
			json_put_string(&b, op.field.p, op.field.len);
		}
		if (op.expect)
			buf_appendf(&b, ",\"expect\":%llu",
				    (unsigned long long)op.expect);
		if (op.data.p && cfg->max_record &&
		    op.data.len > cfg->max_record) {
			snprintf(text, sizeof(text),
				 "data of %u bytes, over the %u-byte record "
				 "limit",
				 op.data.len, cfg->max_record);
			reject_json(&why, WEFT_ELIMIT, n, NULL, text);
			goto out_reject;
		}
		if (op.data.p) {
			buf_append(&b, ",\"data\":", 8);
			rc = json_from_mp(&b, op.data.p, op.data.len);
		}
		if (!rc && op.value.p) {
			buf_append(&b, ",\"value\":", 9);
			rc = json_from_mp(&b, op.value.p, op.value.len);
		}
		if (rc) {
			reject_json(&why, WEFT_EVALIDATION, n, NULL,
				    rc == WEFT_EVALIDATION
					    ? "a map has the same key twice"
					    : "value cannot be stored");
			goto out_reject;
		}
		buf_append(&b, "}", 1);
	}
	buf_append(&b, "]", 1);
	buf_append(&b, "", 1); /* NUL */
	if (b.err) {
		reject_json(&why, WEFT_ELIMIT, 0, NULL,
			    "transaction too large");
		goto out_reject;
	}
	job->ops_json = (char *)b.data;
	if (n == 1)
		mark_fast(job, &first);
	buf_fini(&why);
	buf_fini(&data);
	return;
out_reject:
	job->reject_json = (char *)why.data;
	buf_fini(&b);
	buf_fini(&data);
}

/* c->mu held: whether t is one of the window behind a transaction just
 * refused for the user's rate (see struct conn) */
static bool
held_back(struct conn *c, const struct proto_txn *t, uint64_t now_ms)
{
	bool same;

	if (!c->held_until_ms)
		return false;
	same = proto_str_eq(t->client_id, c->held_client);
	if (now_ms < c->held_until_ms && same && t->mid > c->held_mid)
		return true;
	if (now_ms >= c->held_until_ms || (same && t->mid <= c->held_mid))
		c->held_until_ms = 0; /* over, or the resend has come */
	return false;
}

static void
handle_txn(struct conn *c, const struct proto_txn *t)
{
	uint64_t now_ns = clock_now_ns(), now_ms = now_ns / 1000000u;
	uint32_t wait_ms = 0;
	struct job *job;

	if (held_back(c, t, now_ms))
		wait_ms = (uint32_t)(c->held_until_ms - now_ms);
	else
		wait_ms = ratelimit_take(c->srv->limit, c->user, now_ns);
	if (wait_ms) { /* not applied: the client sends it again */
		struct proto_msg m = { .type = PROTO_BACKOFF };

		if (!c->held_until_ms) {
			snprintf(c->held_client, sizeof(c->held_client), "%.*s",
				 (int)t->client_id.len, t->client_id.p);
			c->held_mid = t->mid;
			c->held_until_ms = now_ms + wait_ms;
		}
		stat_add(&c->srv->st.rate_limited, 1);
		m.u.backoff = (struct proto_backoff){
			t->rid, wait_ms, false,
			proto_str_c("rate limit: this user sends more "
				    "transactions than --user-rate allows")
		};
		conn_queue_locked(c, &m);
		return;
	}
	job = job_for(c, JOB_TXN, t->rid);

	job->client_id = strndup_str(t->client_id);
	job->mid = t->mid;
	txn_to_json(c, t, job);
	if (submit_locked(c, job) != 0) /* not served: its token back */
		ratelimit_refund(c->srv->limit, c->user, now_ns);
}

static void
handle_fetch(struct conn *c, const struct proto_fetch *f)
{
	struct job *job;
	struct proto_iter it;
	struct proto_keyref k;
	struct buf b;
	uint32_t n = 0;

	if (f->keys.n > c->srv->cfg.max_ops) {
		conn_error_locked(c, f->rid, WEFT_ELIMIT, false, 0,
				  "%u keys, more than the limit of %u",
				  f->keys.n, c->srv->cfg.max_ops);
		return;
	}
	job = job_for(c, JOB_FETCH, f->rid);
	buf_init(&b, 0);
	buf_append(&b, "[", 1);
	proto_iter_init(&it, &f->keys);
	while (proto_next_keyref(&it, &k) == 1) {
		if (n++)
			buf_append(&b, ",", 1);
		buf_append(&b, "{\"table\":", 9);
		json_put_string(&b, k.table.p, k.table.len);
		buf_append(&b, ",\"id\":", 6);
		json_put_string(&b, k.id.p, k.id.len);
		buf_append(&b, "}", 1);
	}
	buf_append(&b, "]", 2); /* with the NUL */
	job->keys_json = (char *)b.data;
	submit_locked(c, job);
}

static void
handle_bootstrap(struct conn *c, const struct proto_bootstrap *bs)
{
	struct job *job = job_for(c, JOB_BOOTSTRAP, bs->rid);
	uint32_t cap = c->srv->cfg.page_bytes;

	job->space = strndup_str(bs->space);
	if (bs->token.p) {
		job->after = xmalloc(bs->token.len + 1);
		memcpy(job->after, bs->token.p, bs->token.len);
		job->after[bs->token.len] = '\0';
	}
	job->max_bytes =
		bs->max_bytes && bs->max_bytes < cap ? bs->max_bytes : cap;
	job->json = bs->json;
	submit_locked(c, job);
}

static void
handle_hello(struct conn *c, const struct proto_hello *h)
{
	struct proto_msg m = { .type = PROTO_WELCOME };
	char why[160], user[AUTH_USER_MAX], q[LOG_QUOTE_MAX];
	int64_t exp;
	int rc;

	if (h->proto != PROTO_VERSION) {
		conn_error_locked(c, h->rid, WEFT_EVERSION, true, 0,
				  "protocol %u not supported; this server "
				  "speaks %u",
				  h->proto, PROTO_VERSION);
		return;
	}
	rc = auth_verify(c->srv->auth, h->token.p, h->token.len,
			 (int64_t)time(NULL), user, &exp, why, sizeof(why));
	if (rc == 0 && c->state == CONN_READY && strcmp(user, c->user) != 0)
		rc = WEFT_EPERM; /* a refreshed token must be the same user */
	if (rc) {
		stat_add(&c->srv->st.auth_failed, 1);
		log_event(LOG_INFO, "auth_failed", "conn=%llu code=%s why=%s",
			  (unsigned long long)c->id, weft_errname(rc),
			  log_quote(q, sizeof(q), why));
		conn_error_locked(c, h->rid, rc, true, 0, "%s",
				  rc == WEFT_EPERM ? "a session keeps its user"
						   : why);
		return;
	}
	memcpy(c->user, user, sizeof(c->user));
	c->token_exp = exp;
	c->state = CONN_READY;
	m.u.welcome = (struct proto_welcome){
		h->rid,
		PROTO_VERSION,
		proto_str_c(c->user),
		proto_str_c(c->srv->cfg.node),
		c->id,
		c->srv->cfg.heartbeat_ms,
		c->srv->cfg.max_frame,
		c->srv->cfg.max_ops,
	};
	conn_queue_locked(c, &m);
}

/* c->mu held: one decoded frame */
static void
handle_frame(struct conn *c, const uint8_t *body, uint32_t len)
{
	struct proto_msg m;
	struct proto_err err;
	char q[LOG_QUOTE_MAX];

	stat_add(&c->srv->st.requests, 1);
	if (proto_decode(body, len, &m, &err) != 0) {
		stat_add(&c->srv->st.bad_frames, 1);
		log_event(LOG_INFO, "bad_frame", "conn=%llu code=%s err=%s",
			  (unsigned long long)c->id, weft_errname(err.code),
			  log_quote(q, sizeof(q), err.msg));
		/* the framing is intact: answer and carry on */
		conn_error_locked(c, 0, err.code, false, 0, "%s", err.msg);
		return;
	}
	if (m.type == PROTO_HELLO) {
		handle_hello(c, &m.u.hello);
		return;
	}
	if (m.type == PROTO_PING) {
		m.type = PROTO_PONG;
		conn_queue_locked(c, &m);
		return;
	}
	if (m.type == PROTO_PONG)
		return;
	if (c->state != CONN_READY) {
		conn_error_locked(c, 0, WEFT_EAUTH, true, 0,
				  "send HELLO with a token first");
		return;
	}
	if (c->token_exp &&
	    (int64_t)time(NULL) > c->token_exp + AUTH_LEEWAY_S) {
		conn_error_locked(c, 0, WEFT_EEXPIRED, false, 0,
				  "token expired: send HELLO with a new one");
		return;
	}
	switch (m.type) {
	case PROTO_TXN:
		handle_txn(c, &m.u.txn);
		break;
	case PROTO_FETCH:
		handle_fetch(c, &m.u.fetch);
		break;
	case PROTO_BOOTSTRAP:
		handle_bootstrap(c, &m.u.bootstrap);
		break;
	default:
		conn_error_locked(c, 0, WEFT_EUNKNOWN, false, 0,
				  "weft-write does not handle %s messages",
				  proto_type_name(m.type));
		break;
	}
}

/* c->mu held: arm the next receive; false (nothing armed) while draining */
static bool
conn_recv(struct conn *c)
{
	nng_iov iov = { c->rx, sizeof(c->rx) };

	if (atomic_load(&c->srv->draining))
		return false;
	nng_aio_set_iov(c->rx_aio, 1, &iov);
	nng_aio_set_timeout(c->rx_aio, (nng_duration)c->srv->cfg.idle_ms);
	nng_stream_recv(c->stream, c->rx_aio);
	return true;
}

static void
conn_recv_cb(void *arg)
{
	struct conn *c = arg;
	int rv = nng_aio_result(c->rx_aio);
	size_t n, off = 0;

	pthread_mutex_lock(&c->mu);
	if (rv == NNG_ECANCELED && atomic_load(&c->srv->draining)) {
		/* draining: stop reading, keep answering and sending */
		conn_unref_locked(c);
		return;
	}
	if (rv != 0 || c->state == CONN_CLOSED) {
		conn_close_locked(c, rv == NNG_ETIMEDOUT ? "idle" : "recv");
		conn_unref_locked(c);
		return;
	}
	n = nng_aio_count(c->rx_aio);
	while (off < n && c->state != CONN_CLOSED &&
	       c->state != CONN_DRAINING) {
		size_t used;
		int frc =
			frame_reader_feed(&c->fr, c->rx + off, n - off, &used);

		off += used;
		if (frc) {
			conn_error_locked(c, 0, frc, true, 0,
					  frc == WEFT_ETOOBIG
						  ? "frame larger than %u bytes"
						  : "bad frame length (cap %u)",
					  c->fr.max);
			break;
		}
		if (frame_reader_ready(&c->fr)) {
			uint32_t len;
			const uint8_t *body = frame_reader_body(&c->fr, &len);

			handle_frame(c, body, len);
			frame_reader_next(&c->fr);
		}
	}
	if ((c->state == CONN_HELLO || c->state == CONN_READY) &&
	    conn_recv(c)) {
		pthread_mutex_unlock(&c->mu); /* the receive keeps its ref */
		return;
	}
	conn_unref_locked(c);
}

/* ------------------------------------------------------------------ */
/* accepting */

static void
accept_cb(void *arg)
{
	struct server *srv = arg;
	int rv = nng_aio_result(srv->accept_aio);
	struct conn *c;

	if (rv != 0) {
		if (rv != NNG_ECLOSED && rv != NNG_ECANCELED) /* stopping */
			log_event(LOG_WARN, "accept_failed", "err=\"%s\"",
				  nng_strerror(rv));
		pthread_mutex_lock(&srv->mu);
		if (!srv->stopping)
			nng_stream_listener_accept(srv->listener,
						   srv->accept_aio);
		pthread_mutex_unlock(&srv->mu);
		return;
	}
	c = xcalloc(1, sizeof(*c));
	c->srv = srv;
	c->stream = nng_aio_get_output(srv->accept_aio, 0);
	c->state = CONN_HELLO;
	c->refs = 1; /* the pending receive */
	pthread_mutex_init(&c->mu, NULL);
	frame_reader_init(&c->fr, srv->cfg.max_frame);
	if (nng_aio_alloc(&c->rx_aio, conn_recv_cb, c) != 0 ||
	    sender_init(&c->tx, c->stream, srv->cfg.max_out, srv->send_now,
			conn_send_cb, c) != 0)
		alloc_oom(sizeof(nng_aio *));
	pthread_mutex_lock(&srv->mu);
	c->id = ++srv->next_id;
	c->next = srv->conns;
	if (srv->conns)
		srv->conns->prev = c;
	srv->conns = c;
	stat_add(&srv->st.conns, 1);
	stat_add(&srv->st.open, 1);
	if (!srv->stopping)
		nng_stream_listener_accept(srv->listener, srv->accept_aio);
	pthread_mutex_unlock(&srv->mu);
	pthread_mutex_lock(&c->mu);
	if (!conn_recv(c)) {
		conn_unref_locked(c); /* draining: never read */
		return;
	}
	pthread_mutex_unlock(&c->mu);
}

int
server_new(struct server **out, const struct server_config *cfg,
	   const struct auth *auth, const struct schema *schema, struct db *db,
	   char *why, size_t whylen)
{
	struct server *srv = xcalloc(1, sizeof(*srv));
	int rv;

	*out = NULL;
	srv->cfg = *cfg;
	srv->auth = auth;
	srv->schema = schema;
	srv->db = db;
	pthread_mutex_init(&srv->mu, NULL);
	pthread_cond_init(&srv->gone, NULL);
	srv->send_now = sender_sends_now(cfg->listen_url);
	rv = listen_open(&srv->listener, cfg->listen_url, cfg->tls_cert,
			 cfg->max_frame, why, whylen);
	if (!rv && nng_aio_alloc(&srv->accept_aio, accept_cb, srv) != 0) {
		snprintf(why, whylen, "out of memory");
		nng_stream_listener_free(srv->listener);
		rv = WEFT_ENOMEM;
	}
	if (rv) {
		pthread_mutex_destroy(&srv->mu);
		pthread_cond_destroy(&srv->gone);
		free(srv);
		return rv;
	}
	srv->limit = ratelimit_new(cfg->user_rate, cfg->user_burst);
	nng_stream_listener_accept(srv->listener, srv->accept_aio);
	*out = srv;
	return 0;
}

void
server_stats(struct server *srv, struct server_stats *out)
{
	out->conns = atomic_load(&srv->st.conns);
	out->open = atomic_load(&srv->st.open);
	out->requests = atomic_load(&srv->st.requests);
	out->bad_frames = atomic_load(&srv->st.bad_frames);
	out->auth_failed = atomic_load(&srv->st.auth_failed);
	out->backoffs = atomic_load(&srv->st.backoffs);
	out->rate_limited = atomic_load(&srv->st.rate_limited);
	out->rate_users = ratelimit_keys(srv->limit);
	for (int i = 0; i < 64; i++)
		out->rejects[i] = atomic_load(&srv->st.rejects[i]);
	for (int i = 0; i < 16; i++)
		out->lat_hist[i] = atomic_load(&srv->st.lat_hist[i]);
	out->lat_sum_us = atomic_load(&srv->st.lat_sum_us);
}

/* are all answers given and all queued replies sent? */
static bool
drained(struct server *srv)
{
	bool done = atomic_load(&srv->pending) == 0;

	pthread_mutex_lock(&srv->mu);
	for (struct conn *c = srv->conns; c && done; c = c->next) {
		pthread_mutex_lock(&c->mu);
		done = c->state == CONN_CLOSED ||
		       (!c->tx.busy && c->tx.out.len == 0);
		pthread_mutex_unlock(&c->mu);
	}
	pthread_mutex_unlock(&srv->mu);
	return done;
}

int
server_drain(struct server *srv, uint32_t timeout_ms)
{
	uint64_t deadline = clock_now_ms() + timeout_ms;

	atomic_store(&srv->draining, true);
	pthread_mutex_lock(&srv->mu);
	srv->stopping = true;
	pthread_mutex_unlock(&srv->mu);
	nng_stream_listener_close(srv->listener);
	pthread_mutex_lock(&srv->mu);
	/* no new requests: cancel what is armed; conn_recv (under c->mu)
	 * arms nothing once `draining` is set */
	for (struct conn *c = srv->conns; c; c = c->next) {
		pthread_mutex_lock(&c->mu);
		nng_aio_cancel(c->rx_aio);
		pthread_mutex_unlock(&c->mu);
	}
	pthread_mutex_unlock(&srv->mu);
	while (!drained(srv)) {
		if (clock_now_ms() >= deadline)
			return WEFT_ETIMEDOUT;
		clock_sleep_ms(10);
	}
	return 0;
}

void
server_free(struct server *srv)
{
	if (!srv)
		return;
	pthread_mutex_lock(&srv->mu);
	srv->stopping = true;
	pthread_mutex_unlock(&srv->mu);
	nng_stream_listener_close(srv->listener);
	nng_aio_stop(srv->accept_aio);
	pthread_mutex_lock(&srv->mu);
	for (struct conn *c = srv->conns; c; c = c->next) {
		pthread_mutex_lock(&c->mu);
		conn_close_locked(c, "shutdown");
		pthread_mutex_unlock(&c->mu);
	}
	while (srv->conns)
		pthread_cond_wait(&srv->gone, &srv->mu);
	pthread_mutex_unlock(&srv->mu);
	nng_aio_free(srv->accept_aio);
	nng_stream_listener_free(srv->listener);
	ratelimit_free(srv->limit);
	pthread_mutex_destroy(&srv->mu);
	pthread_cond_destroy(&srv->gone);
	free(srv);
}
