/*
 * relay.c - see relay.h.
 */
#include "services/relay/relay.h"

#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <msgpack.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <weft/error.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/log.h"
#include "proto/entry.h"
#include "proto/json.h"
#include "proto/mp.h"
#include "services/relay/pgoutput.h"
#include "services/shared/redis.h"

#include "common/banned.h"

/* STATUS_MS - a standby status update at least this often */
#define STATUS_MS      1000
/* PRUNE_MS - how often the active relay prunes the outbox, at most: a
 * quarter of the retention if that is shorter (at least PRUNE_MIN_MS) */
#define PRUNE_MS       10000
#define PRUNE_MIN_MS   250
/* PRUNE_ROWS - rows deleted per statement while pruning */
#define PRUNE_ROWS     5000
/* BACKOFF_MAX_MS - longest wait between reconnection attempts */
#define BACKOFF_MAX_MS 2000

/* the outbox columns the relay reads, by name */
enum col {
	COL_TBL,
	COL_ID,
	COL_SPACE,
	COL_PREV,
	COL_VERSION,
	COL_OP,
	COL_DELETED,
	COL_DATA,
	COL_CLIENT,
	COL_MID,
	COL_USER,
	COL_N
};
static const char *const col_names[COL_N] = {
	"tbl",	   "id",   "space",	"prev_space", "version", "op",
	"deleted", "data", "client_id", "mid",	      "user_id"
};
/* one stream entry waiting for its XADD: XADD <stream> MAXLEN ~ <n> <id>
 * e <change> (proto/entry.h).  Entries move (the array grows, answered ones
 * leave its front), so argv points only at constants and into mem, never
 * into the entry itself. */
struct entry {
	char id[48]; /* <lsn>-<idx> */
	int nargs;
	const char *argv[8];
	size_t lens[8];
	char *mem; /* owns the id, then the change's msgpack */
};

/* FLIGHTS - MULTI/EXEC pipelines in flight at once.  With one, the relay
 * waited for Redis' answer (its fsync) before sending the next batch, and
 * Redis sat idle meanwhile; with two, the next batch is already in Redis'
 * socket when it finishes one.  Redis answers in order, so the answers are
 * read pipeline by pipeline. */
#define FLIGHTS 2

/* one pipeline in flight: its n pending entries, and what its answer lets
 * us count and confirm */
struct flight {
	int n;		    /* entries */
	uint64_t seen_end;  /* commits decoded when it was sent */
	uint64_t txns;	    /* of which not yet counted */
	int64_t first_time; /* the oldest of those */
	int got;	    /* answers read: MULTI, QUEUED..., EXEC */
	uint64_t added, dups;
	bool bad; /* an answer other than a new or duplicate id */
};

struct relay {
	const struct relay_config *cfg;
	const atomic_int *stop;
	PGconn *repl;	      /* replication connection */
	redisContext *r;      /* NULL while down */
	struct buf resp;      /* the RESP of one pipeline */
	msgpack_sbuffer data; /* scratch: one row's data as msgpack */
	msgpack_sbuffer ent;  /* scratch: one entry's change */
	char maxlen[24];
	/* the outbox relation, from the last Relation message */
	uint32_t outbox_relid;
	int colmap[COL_N]; /* column index of each enum col, or -1 */
	/* the transaction being decoded */
	bool in_txn;
	uint64_t txn_lsn; /* its commit LSN (from BEGIN) */
	uint32_t txn_idx; /* entries of it so far */
	int64_t txn_time; /* its commit time, Unix µs */
	/* entries decoded and not yet in Redis */
	struct entry *pending;
	int npending, cap;
	uint64_t seen_end;   /* end LSN of the last commit decoded */
	int64_t seen_time;   /* its commit time */
	int64_t first_time;  /* commit time of the oldest commit not
			      * yet flushed: lag is measured on it */
	uint64_t seen_txns;  /* commits decoded, not yet counted */
	uint64_t confirmed;  /* flushed LSN told to Postgres */
	uint64_t last_added; /* commit LSN of the newest entry Redis
			      * acknowledged */
	uint64_t wal_end;    /* latest server WAL end */
	/* the pipelines in flight, oldest first: together the first
	 * `inflight` pending entries, sent and not yet answered */
	struct flight fl[FLIGHTS];
	int nfl;		 /* pipelines in flight */
	int inflight;		 /* their entries */
	uint64_t next_status_ms; /* when to send a status update */
	uint64_t next_lag_warn_ms;
};

static pthread_mutex_t stats_mu = PTHREAD_MUTEX_INITIALIZER;
static struct relay_stats stats;

void
relay_stats(struct relay_stats *out)
{
	pthread_mutex_lock(&stats_mu);
	*out = stats;
	pthread_mutex_unlock(&stats_mu);
}

static void
set_state(enum relay_state s)
{
	pthread_mutex_lock(&stats_mu);
	if (s == RELAY_ACTIVE && stats.state != RELAY_ACTIVE)
		stats.takeovers++;
	stats.state = s;
	pthread_mutex_unlock(&stats_mu);
}

static void
count(uint64_t *c, uint64_t n)
{
	pthread_mutex_lock(&stats_mu);
	*c += n;
	pthread_mutex_unlock(&stats_mu);
}

static int64_t
unix_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

static void
lsn_text(uint64_t lsn, char out[24])
{
	snprintf(out, 24, "%X/%X", (unsigned)(lsn >> 32), (unsigned)lsn);
}

static void
entry_free(struct entry *e)
{
	free(e->mem);
	e->mem = NULL;
}

/* forget the oldest n pending entries (Redis holds them) */
static void
drop_first(struct relay *rl, int n)
{
	if (n == 0)
		return;
	for (int i = 0; i < n; i++)
		entry_free(&rl->pending[i]);
	if (rl->npending > n)
		memmove(rl->pending, rl->pending + n,
			(size_t)(rl->npending - n) * sizeof(*rl->pending));
	rl->npending -= n;
}

/* ---- Redis ---- */

/* close Redis; the pipelines in flight are unanswered, so their entries
 * go again with the next one (Redis refuses those it already holds) */
static void unsend(struct relay *rl);

static void
redis_drop(struct relay *rl)
{
	unsend(rl);
	redisFree(rl->r);
	rl->r = NULL;
}

/* connect and check the stream did not lose what was confirmed */
static bool
redis_up(struct relay *rl)
{
	char why[256];
	redisReply *top;

	if (rl->r)
		return true;
	rl->r = redis_open(rl->cfg->redis_url, 5000, why, sizeof(why));
	if (!rl->r) {
		log_event(LOG_WARN, "redis_connect_failed", "why=\"%s\"", why);
		count(&stats.redis_errors, 1);
		return false;
	}
	top = redisCommand(rl->r, "XREVRANGE %s + - COUNT 1", rl->cfg->stream);
	if (!top) {
		redis_drop(rl);
		return false;
	}
	if (top->type == REDIS_REPLY_ARRAY && top->elements == 1 &&
	    top->element[0]->type == REDIS_REPLY_ARRAY &&
	    top->element[0]->elements >= 1 &&
	    top->element[0]->element[0]->type == REDIS_REPLY_STRING) {
		uint64_t lsn =
			strtoull(top->element[0]->element[0]->str, NULL, 10);

		if (lsn < rl->last_added) {
			char a[24], b[24];

			lsn_text(lsn, a);
			lsn_text(rl->last_added, b);
			log_event(LOG_ERROR, "redis_lost_entries",
				  "stream_top=%s acked=%s msg=\"Redis lost "
				  "entries it had acknowledged (is appendfsync "
				  "always?); fanout nodes will send catch-up\"",
				  a, b);
		}
	}
	freeReplyObject(top);
	log_event(LOG_INFO, "redis_connected", "url=%s", rl->cfg->redis_url);
	return true;
}

static size_t
hist_bucket(uint64_t n)
{
	size_t b = 0;

	while (n > 1 && b < 7) {
		n >>= 1;
		b++;
	}
	return b;
}

/* a RESP header: kind ('*' array, '$' bulk), n, CRLF.  printf here was
 * half of the relay's CPU while draining a backlog. */
static void
resp_head(struct buf *b, char kind, size_t n)
{
	char t[24];
	size_t i = sizeof(t);

	t[--i] = '\n';
	t[--i] = '\r';
	do {
		t[--i] = (char)('0' + n % 10);
		n /= 10;
	} while (n);
	t[--i] = kind;
	buf_append(b, t + i, sizeof(t) - i);
}

/* count commits whose entries Redis answered, with their lag */
static void
count_txns(uint64_t txns, int64_t first_time)
{
	double ms = (double)(unix_us() - first_time) / 1000.0;
	size_t b = 0;

	if (!txns)
		return;
	while (b < 15 && ms >= 0.25 * (double)(2u << b))
		b++;
	pthread_mutex_lock(&stats_mu);
	stats.txns += txns;
	stats.lag_hist[b]++;
	stats.lag_sum_s += ms / 1000.0;
	stats.lag_n++;
	stats.last_lag_ms = ms;
	pthread_mutex_unlock(&stats_mu);
}

/* every commit up to end is in Redis: the next status update says so */
static void
confirm(struct relay *rl, uint64_t end)
{
	if (end > rl->confirmed) {
		rl->confirmed = end;
		rl->next_status_ms = 0; /* tell Postgres now */
	}
}

/*
 * The pipeline: flush_send XADDs the pending entries not yet sent in one
 * write and returns without waiting; flush_collect reads the answers.
 * While Redis appends (and fsyncs) one pipeline, the relay decodes and
 * sends the next: up to FLIGHTS are in flight.  An LSN is confirmed only
 * once Redis has answered every entry before it.
 *
 * flush_send - send the pending entries not in flight, if a pipeline is
 * free.  Commits without entries need no Redis: they are counted and
 * confirmed at once when nothing is in flight (otherwise later, behind
 * what is).  false when Redis is down.
 */
static bool
flush_send(struct relay *rl)
{
	int done = 0, from = rl->inflight;
	struct flight *f;

	if (rl->npending == from) {
		if (rl->nfl == 0) {
			count_txns(rl->seen_txns, rl->first_time);
			rl->seen_txns = 0;
			confirm(rl, rl->seen_end);
		}
		return true;
	}
	if (rl->nfl == FLIGHTS)
		return true; /* sent when one is answered */
	if (!redis_up(rl))
		return false;
	/* the whole pipeline as one RESP buffer: hiredis' own formatting
	 * (sdscatfmt per argument) was a third of the relay's CPU.  It is one
	 * MULTI/EXEC: with appendfsync always, Redis fsyncs its AOF once per
	 * event-loop turn that wrote to it, and it reads 16 KiB per client per
	 * turn, so a plain pipeline of 1,000 entries cost about fifteen
	 * fsyncs; queued commands reach the AOF together, at EXEC */
	buf_reset(&rl->resp);
	buf_append(&rl->resp, "*1\r\n$5\r\nMULTI\r\n", 15);
	for (int i = from; i < rl->npending; i++) {
		struct entry *e = &rl->pending[i];

		resp_head(&rl->resp, '*', (size_t)e->nargs);
		for (int a = 0; a < e->nargs; a++) {
			resp_head(&rl->resp, '$', e->lens[a]);
			buf_append(&rl->resp, e->argv[a], e->lens[a]);
			buf_append(&rl->resp, "\r\n", 2);
		}
	}
	buf_append(&rl->resp, "*1\r\n$4\r\nEXEC\r\n", 14);
	if (rl->resp.err ||
	    redisAppendFormattedCommand(rl->r, (const char *)rl->resp.data,
					rl->resp.len) != REDIS_OK) {
		log_event(LOG_ERROR, "resp_failed", "entries=%d",
			  rl->npending - from);
		redis_drop(rl);
		return false;
	}
	while (!done)
		if (redisBufferWrite(rl->r, &done) != REDIS_OK) {
			log_event(LOG_WARN, "redis_failed", "why=\"%s\"",
				  rl->r->errstr);
			count(&stats.redis_errors, 1);
			redis_drop(rl);
			return false;
		}
	f = &rl->fl[rl->nfl++];
	*f = (struct flight){ .n = rl->npending - from,
			      .seen_end = rl->seen_end,
			      .txns = rl->seen_txns,
			      .first_time = rl->first_time };
	rl->inflight = rl->npending;
	rl->seen_txns = 0;
	return true;
}

/* the pipelines in flight failed or went unanswered: their entries stay
 * pending, to go again with the next one, and their commits wait too */
static void
unsend(struct relay *rl)
{
	uint64_t txns = 0;

	for (int k = 0; k < rl->nfl; k++)
		txns += rl->fl[k].txns;
	if (txns) {
		rl->seen_txns += txns;
		for (int k = 0; k < rl->nfl; k++)
			if (rl->fl[k].txns) {
				rl->first_time = rl->fl[k].first_time;
				break;
			}
	}
	rl->nfl = 0;
	rl->inflight = 0;
}

/* Redis failed: the pipelines in flight go again with the next */
static void
redis_failed(struct relay *rl)
{
	log_event(LOG_WARN, "redis_failed", "why=\"%s\"", rl->r->errstr);
	count(&stats.redis_errors, 1);
	redis_drop(rl);
}

/* the oldest pipeline's answer at position got: MULTI's, a QUEUED per
 * entry, EXEC's (its entries are the first pending ones) */
static void
take_answer(struct relay *rl, const redisReply *rep)
{
	struct flight *f = &rl->fl[0];
	int i = f->got++;

	if (f->bad)
		return; /* already logged; the batch goes again */
	if (i <= f->n) {
		if (rep->type == REDIS_REPLY_ERROR) {
			log_event(LOG_ERROR, "xadd_refused", "id=%s err=\"%s\"",
				  i ? rl->pending[i - 1].id : "MULTI",
				  rep->str);
			f->bad = true;
		}
		return;
	}
	if (rep->type != REDIS_REPLY_ARRAY || rep->elements != (size_t)f->n) {
		log_event(LOG_ERROR, "exec_failed", "err=\"%s\"",
			  rep->type == REDIS_REPLY_ERROR ? rep->str : "?");
		f->bad = true;
		return;
	}
	for (size_t k = 0; k < rep->elements && !f->bad; k++) {
		const redisReply *x = rep->element[k];

		if (x->type != REDIS_REPLY_ERROR) {
			f->added++;
		} else if (strstr(x->str, "equal or smaller")) {
			f->dups++;
		} else {
			log_event(LOG_ERROR, "xadd_failed", "id=%s err=\"%s\"",
				  rl->pending[k].id, x->str);
			f->bad = true;
		}
	}
}

enum { COLLECT_FAILED = -1, COLLECT_WAIT = 0, COLLECT_DONE = 1 };

/*
 * flush_collect - read the answers to the oldest pipeline in flight, if
 * any.  With block it waits for all of them; without, it reads from the
 * socket at most once per *read (false on the first call: call it when
 * the socket is readable) and may return COLLECT_WAIT.  COLLECT_DONE when
 * Redis holds every entry of it (new or duplicate); COLLECT_FAILED when
 * every pipeline in flight goes again with the next one.
 */
static int
flush_collect(struct relay *rl, bool block, bool *read)
{
	struct flight f;

	if (rl->nfl == 0)
		return COLLECT_DONE;
	while (rl->fl[0].got < rl->fl[0].n + 2) {
		redisReply *rep = NULL;

		if (redisGetReplyFromReader(rl->r, (void **)&rep) != REDIS_OK) {
			redis_failed(rl);
			return COLLECT_FAILED;
		}
		if (rep) {
			take_answer(rl, rep);
			freeReplyObject(rep);
			continue;
		}
		if (!block && *read)
			return COLLECT_WAIT;
		*read = true;
		if (redisBufferRead(rl->r) != REDIS_OK) {
			redis_failed(rl);
			return COLLECT_FAILED;
		}
	}
	if (rl->fl[0].bad) { /* sent again with the next pipeline */
		count(&stats.redis_errors, 1);
		if (rl->nfl > 1)
			redis_drop(rl); /* the later answers would be misread */
		else
			unsend(rl);
		return COLLECT_FAILED;
	}
	f = rl->fl[0];
	memmove(&rl->fl[0], &rl->fl[1], (size_t)(rl->nfl - 1) * sizeof(f));
	rl->nfl--;
	rl->inflight -= f.n;
	rl->last_added = strtoull(rl->pending[f.n - 1].id, NULL, 10);
	pthread_mutex_lock(&stats_mu);
	stats.rows += f.added;
	stats.duplicates += f.dups;
	stats.batches++;
	stats.batch_hist[hist_bucket((uint64_t)f.n)]++;
	pthread_mutex_unlock(&stats_mu);
	drop_first(rl, f.n);
	count_txns(f.txns, f.first_time);
	confirm(rl, f.seen_end);
	return COLLECT_DONE;
}

/* every pipeline in flight answered (blocking) */
static int
collect_all(struct relay *rl)
{
	bool read = false;

	while (rl->nfl > 0) {
		int c = flush_collect(rl, true, &read);

		if (c != COLLECT_DONE)
			return c;
	}
	return COLLECT_DONE;
}

/* ---- decoding ---- */

static void
map_relation(struct relay *rl, const struct pgo_msg *m)
{
	if (m->relname.len != 11 || memcmp(m->relname.p, "weft_outbox", 11))
		return;
	rl->outbox_relid = m->relid;
	for (int c = 0; c < COL_N; c++) {
		rl->colmap[c] = -1;
		for (int i = 0; i < m->ncols; i++)
			if (m->names[i].len == strlen(col_names[c]) &&
			    memcmp(m->names[i].p, col_names[c],
				   m->names[i].len) == 0)
				rl->colmap[c] = i;
	}
}

/* a text column as an unsigned number; 0 if it is not one */
static uint64_t
col_u64(const struct pgo_str *s)
{
	uint64_t v = 0;

	if (s->len == 0 || s->len > 20)
		return 0;
	for (uint32_t i = 0; i < s->len; i++) {
		uint64_t d = (uint64_t)(s->p[i] - '0');

		if (d > 9 || v > (UINT64_MAX - d) / 10)
			return 0;
		v = v * 10 + d;
	}
	return v;
}

static struct proto_str
col_str(const struct pgo_str *s)
{
	return (struct proto_str){ s->p ? s->p : "", s->len };
}

/* the row decoded from an outbox insert as a change; its data converted
 * into rl->data */
static void
row_change(struct relay *rl, const struct pgo_msg *m, const char *id,
	   struct stream_change *sc)
{
	struct pgo_str v[COL_N];
	bool have[COL_N];

	for (int c = 0; c < COL_N; c++) {
		int k = rl->colmap[c];

		have[c] = k >= 0 && k < m->ncols &&
			  m->cols[k].kind == PGO_COL_TEXT;
		v[c] = have[c] ? m->cols[k].value : (struct pgo_str){ 0 };
	}
	memset(sc, 0, sizeof(*sc));
	sc->table = col_str(&v[COL_TBL]);
	sc->id = col_str(&v[COL_ID]);
	sc->space = col_str(&v[COL_SPACE]);
	if (have[COL_PREV] && v[COL_PREV].len)
		sc->prev = col_str(&v[COL_PREV]);
	sc->version = col_u64(&v[COL_VERSION]);
	/* an op that does not fit is 0, which the fanout refuses */
	sc->op = col_u64(&v[COL_OP]) <= UINT32_MAX
			 ? (uint32_t)col_u64(&v[COL_OP])
			 : 0;
	if (!have[COL_TBL] || !have[COL_ID] || !have[COL_SPACE])
		log_event(LOG_ERROR, "bad_outbox_row",
			  "id=%s msg=\"no table, id or space: the fanout will"
			  " skip it\"",
			  id);
	sc->deleted = have[COL_DELETED] && v[COL_DELETED].len &&
		      v[COL_DELETED].p[0] == 't';
	if (have[COL_CLIENT])
		sc->client = col_str(&v[COL_CLIENT]);
	if (have[COL_USER])
		sc->user = col_str(&v[COL_USER]);
	sc->mid = col_u64(&v[COL_MID]);
	/* floored, so that the microseconds are 0..999 for any time */
	sc->when_ms = rl->txn_time >= 0 ? rl->txn_time / 1000
					: -((999 - rl->txn_time) / 1000);
	sc->when_us = (uint32_t)(rl->txn_time - sc->when_ms * 1000);
	if (have[COL_DATA] && !sc->deleted) {
		msgpack_packer pk;

		rl->data.size = 0;
		msgpack_packer_init(&pk, &rl->data, msgpack_sbuffer_write);
		/* a row's data is a JSON object; the entry needs a map */
		if (json_text_to_mp(&pk, v[COL_DATA].p, v[COL_DATA].len) == 0 &&
		    rl->data.size && mp_map_head((uint8_t)rl->data.data[0])) {
			sc->data = (const uint8_t *)rl->data.data;
			sc->data_len = (uint32_t)rl->data.size;
		} else {
			log_event(LOG_ERROR, "bad_outbox_data", "id=%s", id);
		}
	}
}

static void
add_entry(struct relay *rl, const struct pgo_msg *m)
{
	struct stream_change sc;
	struct entry *e;
	msgpack_packer pk;
	size_t idlen, len;

	if (rl->npending == rl->cap) {
		rl->cap = rl->cap ? rl->cap * 2 : 256;
		rl->pending = xrealloc(rl->pending,
				       (size_t)rl->cap * sizeof(*rl->pending));
	}
	e = &rl->pending[rl->npending++];
	memset(e, 0, sizeof(*e));
	idlen = (size_t)snprintf(e->id, sizeof(e->id), "%llu-%u",
				 (unsigned long long)rl->txn_lsn,
				 rl->txn_idx++);
	row_change(rl, m, e->id, &sc);
	/* packed in a scratch buffer, then kept at its size: an sbuffer's
	 * first write allocates 8 KiB, and a pipeline holds many entries */
	rl->ent.size = 0;
	msgpack_packer_init(&pk, &rl->ent, msgpack_sbuffer_write);
	if (stream_change_pack(&pk, &sc) != 0)
		alloc_oom(rl->ent.size + 256);
	len = rl->ent.size;
	e->mem = xmalloc(idlen + len);
	memcpy(e->mem, e->id, idlen);
	memcpy(e->mem + idlen, rl->ent.data, len);
	e->argv[0] = "XADD";
	e->argv[1] = rl->cfg->stream;
	e->argv[2] = "MAXLEN";
	e->argv[3] = "~";
	e->argv[4] = rl->maxlen;
	e->argv[6] = STREAM_FIELD;
	for (int i = 0; i < 7; i++)
		if (i != 5)
			e->lens[i] = strlen(e->argv[i]);
	e->argv[5] = e->mem;
	e->lens[5] = idlen;
	e->argv[7] = e->mem + idlen;
	e->lens[7] = len;
	e->nargs = 8;
}

/* one XLogData payload; false on a decoding error */
static bool
on_wal(struct relay *rl, const struct pgo_copy *cp)
{
	static struct pgo_msg m; /* large; one relay thread */
	int rc = pgo_decode(cp->data, cp->len, &m);

	if (rc) {
		log_event(LOG_ERROR, "pgoutput_bad", "err=%s at=%llu",
			  weft_errname(rc), (unsigned long long)cp->wal_start);
		return false;
	}
	switch (m.kind) {
	case PGO_BEGIN:
		rl->in_txn = true;
		rl->txn_lsn = m.final_lsn;
		rl->txn_idx = 0;
		/* Unix µs.  A broken peer's time outside 2000..about 73,000
		 * years later is clamped: no sum or difference of it can
		 * overflow */
		rl->txn_time =
			(m.commit_time < 0		 ? 0
			 : m.commit_time > INT64_MAX / 4 ? INT64_MAX / 4
							 : m.commit_time) +
			PGO_EPOCH_OFFSET_US;
		break;
	case PGO_RELATION:
		map_relation(rl, &m);
		break;
	case PGO_INSERT:
		if (rl->in_txn && m.relid == rl->outbox_relid)
			add_entry(rl, &m);
		break;
	case PGO_COMMIT:
		rl->in_txn = false;
		rl->seen_end = m.end_lsn;
		rl->seen_time = rl->txn_time;
		if (rl->seen_txns++ == 0)
			rl->first_time = rl->txn_time;
		break;
	default:
		break;
	}
	return true;
}

/* ---- Postgres ---- */

static void
send_status(struct relay *rl, bool force)
{
	uint8_t msg[34];
	uint64_t now = clock_now_ms();

	if (!force && now < rl->next_status_ms)
		return;
	pgo_status_update(
		msg, rl->wal_end > rl->confirmed ? rl->wal_end : rl->confirmed,
		rl->confirmed, unix_us(), false);
	if (PQputCopyData(rl->repl, (const char *)msg, sizeof(msg)) == 1)
		PQflush(rl->repl);
	rl->next_status_ms = now + STATUS_MS;
	pthread_mutex_lock(&stats_mu);
	stats.confirmed = rl->confirmed;
	stats.wal_end = rl->wal_end;
	pthread_mutex_unlock(&stats_mu);
}

static PGconn *
pg_open(const char *url, bool replication)
{
	static const char *const keys[] = {
		"dbname",	   "replication",     "keepalives",
		"keepalives_idle", "connect_timeout", NULL
	};
	/* libpq ignores a keyword whose value is NULL */
	const char *vals[] = { url, replication ? "database" : NULL,
			       "1", "10",
			       "5", NULL };
	PGconn *pg = PQconnectdbParams(keys, vals, 1);

	if (PQstatus(pg) != CONNECTION_OK) {
		log_event(LOG_WARN, "pg_connect_failed", "err=\"%s\"",
			  PQerrorMessage(pg));
		PQfinish(pg);
		count(&stats.pg_errors, 1);
		return NULL;
	}
	return pg;
}

static void
pg_drop(struct relay *rl)
{
	PQfinish(rl->repl);
	rl->repl = NULL;
	rl->in_txn = false;
	rl->outbox_relid = 0;
	/* its answers must not wait on the connection */
	collect_all(rl);
	unsend(rl);
	drop_first(rl, rl->npending); /* Postgres sends them again */
	rl->seen_txns = 0;
	rl->seen_end = rl->confirmed;
}

/* 1 streaming, 0 slot busy (standby), -1 failed */
static int
start_streaming(struct relay *rl)
{
	char sql[512];
	PGresult *res;
	const char *st;

	rl->repl = pg_open(rl->cfg->pg_url, true);
	if (!rl->repl)
		return -1;
	snprintf(sql, sizeof(sql),
		 "CREATE_REPLICATION_SLOT \"%s\" LOGICAL pgoutput "
		 "(SNAPSHOT 'nothing')",
		 rl->cfg->slot);
	res = PQexec(rl->repl, sql);
	st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (PQresultStatus(res) == PGRES_TUPLES_OK)
		log_event(LOG_INFO, "slot_created", "slot=%s", rl->cfg->slot);
	else if (!st || strcmp(st, "42710") != 0) /* not "already exists" */
		log_event(LOG_WARN, "slot_create_failed", "err=\"%s\"",
			  PQresultErrorMessage(res));
	PQclear(res);
	snprintf(sql, sizeof(sql),
		 "START_REPLICATION SLOT \"%s\" LOGICAL 0/0 "
		 "(proto_version '1', publication_names '\"%s\"')",
		 rl->cfg->slot, rl->cfg->publication);
	res = PQexec(rl->repl, sql);
	if (PQresultStatus(res) == PGRES_COPY_BOTH) {
		PQclear(res);
		return 1;
	}
	st = PQresultErrorField(res, PG_DIAG_SQLSTATE);
	if (st && strcmp(st, "55006") == 0) { /* active for another PID */
		PQclear(res);
		PQfinish(rl->repl);
		rl->repl = NULL;
		return 0;
	}
	log_event(LOG_WARN, "start_replication_failed", "err=\"%s\"",
		  PQresultErrorMessage(res));
	PQclear(res);
	count(&stats.pg_errors, 1);
	PQfinish(rl->repl);
	rl->repl = NULL;
	return -1;
}

/* one pass of pruning on *sql (opened when NULL, dropped on error) */
static void
prune(const struct relay_config *cfg, PGconn **sql, const atomic_int *stop)
{
	char q[512], secs[24];
	const char *params[1] = { secs };

	if (!*sql && !(*sql = pg_open(cfg->pg_url, false)))
		return;
	snprintf(secs, sizeof(secs), "%d", cfg->retention_s);
	/* whole client transactions at a time: weft-write answers the
	 * resend of an acked mutation with its outbox rows, and must find
	 * all of them or none.  A transaction's rows share (client_id, mid)
	 * and created_at (its Postgres transaction's start). */
	snprintf(q, sizeof(q),
		 "DELETE FROM weft_outbox o USING (SELECT DISTINCT client_id, "
		 "mid FROM (SELECT client_id, mid FROM weft_outbox WHERE "
		 "created_at < now() - make_interval(secs => $1::int) LIMIT "
		 "%d) b) t WHERE o.client_id = t.client_id AND o.mid = t.mid "
		 "AND o.created_at < now() - make_interval(secs => $1::int)",
		 PRUNE_ROWS);
	for (int round = 0; round < 200 && !*stop; round++) {
		PGresult *res =
			PQexecParams(*sql, q, 1, NULL, params, NULL, NULL, 0);
		long n = PQresultStatus(res) == PGRES_COMMAND_OK
				 ? strtol(PQcmdTuples(res), NULL, 10)
				 : -1;

		if (n < 0) {
			log_event(LOG_WARN, "prune_failed", "err=\"%s\"",
				  PQresultErrorMessage(res));
			count(&stats.pg_errors, 1);
			PQclear(res);
			PQfinish(*sql);
			*sql = NULL;
			return;
		}
		PQclear(res);
		count(&stats.pruned, (uint64_t)n);
		if (n < PRUNE_ROWS)
			break;
	}
}

/* the pruner's thread: while this relay is active, prune every
 * PRUNE_MS (or a quarter of the retention) on a connection of its own.
 * Pruning used to run between reads of the replication stream, and a
 * backlog of deletes held up relaying for as long as they took. */
struct pruner {
	const struct relay_config *cfg;
	const atomic_int *stop;
	pthread_t th;
	bool on;
};

static void *
pruner_main(void *arg)
{
	struct pruner *p = arg;
	uint64_t every = (uint64_t)p->cfg->retention_s * 1000 / 4;
	PGconn *sql = NULL;

	if (every > PRUNE_MS)
		every = PRUNE_MS;
	if (every < PRUNE_MIN_MS)
		every = PRUNE_MIN_MS;
	while (!*p->stop) {
		bool active;

		for (uint64_t t = 0; t < every && !*p->stop; t += 50)
			clock_sleep_ms(50);
		pthread_mutex_lock(&stats_mu);
		active = stats.state == RELAY_ACTIVE;
		pthread_mutex_unlock(&stats_mu);
		if (active && !*p->stop) {
			prune(p->cfg, &sql, p->stop);
		} else if (sql) {
			PQfinish(sql);
			sql = NULL;
		}
	}
	PQfinish(sql);
	return NULL;
}

static void
check_lag(struct relay *rl)
{
	uint64_t now = clock_now_ms();
	uint64_t behind =
		rl->wal_end > rl->confirmed ? rl->wal_end - rl->confirmed : 0;

	if ((long long)behind < rl->cfg->lag_warn || now < rl->next_lag_warn_ms)
		return;
	rl->next_lag_warn_ms = now + 60000;
	log_event(LOG_WARN, "relay_behind",
		  "bytes=%llu msg=\"the relay is behind the WAL; Postgres "
		  "keeps WAL for the slot up to max_slot_wal_keep_size\"",
		  (unsigned long long)behind);
}

/*
 * flush_or_wait - send the pending entries not in flight, first waiting
 * for the oldest pipeline's answer if none is free; with wait, also wait
 * for every answer.  While Redis is down,
 * keep the replication connection (status updates keep it alive, nothing
 * more is read, so Postgres holds the backlog in the slot) and retry with
 * backoff.  false only when stopping.
 */
static bool
flush_or_wait(struct relay *rl, bool wait)
{
	uint32_t backoff = 50;

	bool read = false;

	while (!((rl->nfl < FLIGHTS ||
		  flush_collect(rl, true, &read) == COLLECT_DONE) &&
		 flush_send(rl) &&
		 (!wait || collect_all(rl) == COLLECT_DONE))) {
		for (uint32_t t = 0; t < backoff && !*rl->stop; t += 50) {
			clock_sleep_ms(50);
			send_status(rl, false);
		}
		if (*rl->stop)
			return false;
		backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
						       : backoff * 2;
	}
	return true;
}

/* stream until the connection ends or stop; false on trouble */
static bool
stream(struct relay *rl)
{
	for (;;) {
		char *buf = NULL;
		int n;

		if (*rl->stop)
			return true;
		n = PQgetCopyData(rl->repl, &buf, 1);
		if (n > 0) {
			struct pgo_copy cp;
			bool ok = pgo_copy_decode((uint8_t *)buf, (size_t)n,
						  &cp) == 0;

			if (ok && cp.wal_end > rl->wal_end)
				rl->wal_end = cp.wal_end;
			if (ok && cp.kind == 'w')
				ok = on_wal(rl, &cp);
			else if (ok && cp.kind == 'k') {
				/* nothing decoded is unconfirmed: every
				 * commit before wal_end has been seen */
				if (!rl->in_txn && !rl->npending &&
				    !rl->seen_txns &&
				    cp.wal_end > rl->confirmed) {
					rl->confirmed = cp.wal_end;
					rl->seen_end = cp.wal_end;
				}
				if (cp.reply_now)
					rl->next_status_ms = 0;
			}
			PQfreemem(buf);
			if (!ok)
				return false;
			/* a full batch goes while the one before is
			 * answered: decoding overlaps Redis' append */
			if (rl->npending - rl->inflight >= rl->cfg->batch_max &&
			    !flush_or_wait(rl, false))
				return true; /* stopping */
			continue;
		}
		if (n == 0) { /* nothing more for now */
			struct pollfd pfd[2] = {
				{ PQsocket(rl->repl), POLLIN, 0 },
				{ -1, POLLIN, 0 },
			};

			/* send what is decoded and read on: the answers
			 * are read when they come, while Postgres sends
			 * more */
			if (rl->nfl < FLIGHTS &&
			    (rl->npending > rl->inflight ||
			     (!rl->nfl && rl->seen_txns)) &&
			    !flush_or_wait(rl, false))
				return true; /* stopping */
			send_status(rl, false);
			check_lag(rl);
			if (rl->nfl && rl->r)
				pfd[1].fd = rl->r->fd;
			if (poll(pfd, 2, 100) < 0)
				continue;
			if (pfd[1].revents) {
				bool read = false;
				int c = COLLECT_DONE;

				while (rl->nfl && c == COLLECT_DONE)
					c = flush_collect(rl, false, &read);
				if (c == COLLECT_FAILED &&
				    !flush_or_wait(rl, false))
					return true; /* stopping */
			}
			if (pfd[0].revents && !PQconsumeInput(rl->repl))
				return false;
			continue;
		}
		return false; /* -1 end of copy, -2 error */
	}
}

int
relay_run(const struct relay_config *cfg, const atomic_int *stop)
{
	struct relay rl = { .cfg = cfg, .stop = stop };
	struct pruner pruner = { .cfg = cfg, .stop = stop };
	uint32_t backoff = 50;
	bool said_standby = false;

	snprintf(rl.maxlen, sizeof(rl.maxlen), "%lld", cfg->stream_maxlen);
	buf_init(&rl.resp, 0);
	msgpack_sbuffer_init(&rl.data);
	msgpack_sbuffer_init(&rl.ent);
	for (int c = 0; c < COL_N; c++)
		rl.colmap[c] = -1;
	if (cfg->retention_s > 0)
		pruner.on = pthread_create(&pruner.th, NULL, pruner_main,
					   &pruner) == 0;
	while (!*stop) {
		int s;

		/* a standby stays one while it retries the slot: health
		 * must not flap between its attempts */
		if (!said_standby)
			set_state(RELAY_CONNECTING);
		s = start_streaming(&rl);
		if (s == 0) {
			set_state(RELAY_STANDBY);
			if (!said_standby)
				log_event(LOG_INFO, "standby",
					  "slot=%s msg=\"another relay is "
					  "active\"",
					  cfg->slot);
			said_standby = true;
			for (int t = 0; t < cfg->standby_ms && !*stop; t += 50)
				clock_sleep_ms(50);
			continue;
		}
		if (s < 0) {
			set_state(RELAY_CONNECTING);
			said_standby = false;
			clock_sleep_ms(backoff);
			backoff = backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS
							       : backoff * 2;
			continue;
		}
		said_standby = false;
		backoff = 50;
		set_state(RELAY_ACTIVE);
		log_event(LOG_INFO, "active", "slot=%s stream=%s", cfg->slot,
			  cfg->stream);
		rl.next_status_ms = 0;
		if (!stream(&rl)) {
			log_event(LOG_WARN, "stream_interrupted",
				  "pg=\"%s\" msg=\"reconnecting; unconfirmed "
				  "changes are sent again\"",
				  rl.repl ? PQerrorMessage(rl.repl) : "");
			pg_drop(&rl);
			clock_sleep_ms(backoff);
			continue;
		}
		/* stopping: what is flushed gets confirmed */
		if (collect_all(&rl) == COLLECT_DONE && flush_send(&rl) &&
		    collect_all(&rl) == COLLECT_DONE)
			send_status(&rl, true);
		PQputCopyEnd(rl.repl, NULL);
		PQflush(rl.repl);
		pg_drop(&rl);
	}
	if (pruner.on)
		pthread_join(pruner.th, NULL);
	redis_drop(&rl);
	drop_first(&rl, rl.npending);
	free(rl.pending);
	buf_fini(&rl.resp);
	msgpack_sbuffer_destroy(&rl.data);
	msgpack_sbuffer_destroy(&rl.ent);
	return 0;
}
