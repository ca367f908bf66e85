/*
 * db.c - the job queue and the Postgres workers (see db.h).
 *
 * Worker state:
 *
 *   DISCONNECTED --connect ok--> READY --group/read--> READY
 *        ^   |                     |
 *        |   +--fail: backoff------+ connection lost
 *        +-----------------------------+
 *
 * One queue feeds every worker.  A worker that is free takes the oldest
 * jobs it may: a client's transactions are taken by one worker at a time
 * (struct pin), so they are applied in the order they arrived and never
 * race each other for the client's row.  A job is bound to a worker only
 * when that worker starts on it, so no job waits behind a slow group
 * while another worker is idle.
 */
#include "services/write/db.h"

#include <libpq-fe.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <weft/error.h>

#include "common/alloc.h"
#include "common/buf.h"
#include "common/clock.h"
#include "common/hash.h"
#include "common/log.h"
#include "proto/json.h"

#include "common/banned.h"

/* DB_RETRIES - attempts of a group that hit a deadlock or a
 * serialisation failure before its jobs are answered EUNAVAILABLE. */
#define DB_RETRIES 3

/* DB_BACKOFF_MAX_MS - longest wait between reconnection attempts. */
#define DB_BACKOFF_MAX_MS 2000

/* PRUNE_BATCH, PRUNE_BATCHES - stored results past --results-ttl are
 * deleted this many at a time, at most this many times per pass, so one
 * pass keeps a worker from its groups for a bounded time */
#define PRUNE_BATCH   5000
#define PRUNE_BATCHES 20

static const char SQL_APPLY[] =
	"SELECT weft_apply($1, $2, $3::bigint, $4::jsonb, $5::int, $6::int, "
	"$7::jsonb, $8::int)::text";
static const char SQL_FAST[] =
	"SELECT o_n, o_result FROM weft_apply_fast($1::text[], $2::text[], "
	"$3::bigint[], $4::text[], $5::text[], $6::smallint[], $7::text[], "
	"$8::jsonb[], $9::int, $10::int)";
/* the BRIN index on created_at finds the old rows; ctid = ANY is a TID
 * scan of just those */
static const char SQL_PRUNE[] =
	"DELETE FROM weft_client_results WHERE ctid = ANY (ARRAY("
	"SELECT ctid FROM weft_client_results "
	"WHERE created_at < now() - $1::bigint * interval '1 millisecond' "
	"LIMIT $2::int))";
static const char SQL_GC[] =
	"SELECT o_deleted, o_scanned, o_tbl, o_id FROM "
	"weft_gc_tombstones_from($1::bigint, $2::int, $3, $4)";
static const char SQL_FETCH[] =
	"SELECT coalesce(jsonb_agg(weft_row_json(r)), '[]')::text "
	"FROM (SELECT DISTINCT * FROM jsonb_to_recordset($2::jsonb) "
	"AS x(\"table\" text, id text)) AS k "
	"JOIN weft_records r ON r.tbl = k.\"table\" AND r.id = k.id "
	"JOIN weft_members m ON m.space = r.space AND m.user_id = $1";
static const char SQL_ROLE[] =
	"SELECT weft_role_rank($2, $1), pg_current_wal_lsn()::text, "
	"CASE WHEN $3 THEN (SELECT count(*) FROM weft_records "
	"WHERE space = $2) END";
/* plain columns: the record elements are built here, not by
 * weft_row_json() (which made Postgres spend 15 us a row building JSON
 * that was parsed again at once) */
static const char SQL_PAGE[] =
	"SELECT r.tbl, r.id, r.space, r.version, r.deleted, r.data::text "
	"FROM weft_records r "
	"WHERE r.space = $1 AND (r.tbl, r.id) > ($2, $3) "
	"ORDER BY r.tbl, r.id LIMIT $4::int";

struct worker {
	struct db *db;
	int index;
	pthread_t thread;
	PGconn *pg;	   /* NULL while disconnected */
	pthread_cond_t cv; /* there may be work, or stopping (db->mu) */
	bool idle;	   /* waiting on cv: only then is it signalled */
	bool up;	   /* connected (under db->mu) */
	bool trying;	   /* connecting, or not yet tried (under db->mu) */
	/* the last committed group, answered once the next group's
	 * statement is on its way to Postgres (or before w waits): the
	 * answers are sent while Postgres works.  Only w touches it */
	struct answers {
		struct job **jobs;
		char **results; /* NULL: not known to be committed */
		int n;
	} pending;
};

/*
 * A client's transactions must commit in mid order.  While a worker has
 * taken one of them and not yet answered it, no other worker takes the
 * client's next ones (they stay queued, in order; the same worker may add
 * them to its next group).  The pin lives while the client has any job
 * queued or taken.  Before this, jobs were bound to a worker when they
 * were queued (by a hash of the client id, later the least busy worker),
 * so a transaction waited behind its worker's slow group while others
 * sat idle.
 */
#define PIN_BUCKETS 1024

struct pin {
	struct pin *next;
	char *client; /* owned */
	int worker;   /* the worker with jobs of it taken; -1: none */
	int taken;    /* taken by that worker, not yet answered */
	int jobs;     /* queued or taken, not yet answered */
};

struct db {
	struct db_config cfg;
	pthread_mutex_t mu;
	bool stopping;
	struct job *head; /* the queue, oldest first (under mu) */
	struct job *tail;
	int queued;
	int trying;		/* workers connecting, or not yet tried */
	uint64_t next_prune_ns; /* when stored results are next pruned */
	uint64_t next_gc_ns;	/* when old tombstones are next deleted */
	/* where the tombstone pass stopped, if it stopped before the end
	 * (only the worker that holds `pruning` uses these) */
	char *gc_tbl, *gc_id;
	bool pruning; /* a worker is at one of those */
	struct worker *workers;
	struct pin *pins[PIN_BUCKETS]; /* under mu */
	unsigned next_wake;	       /* where the idle-worker scan starts */
	int in_pg;		  /* workers in Postgres (a group or a read) */
	int last_group;		  /* transactions in the last group taken */
	struct worker *gathering; /* waiting for its group to fill */
	struct db_stats stats;	  /* under mu */
};

void
job_free(struct job *job)
{
	if (!job)
		return;
	if (!job->client_kept)
		free(job->client_id);
	free(job->ops_json);
	free(job->reject_json);
	free(job->keys_json);
	free(job->space);
	free(job->after);
	free(job->fast_tbl);
	free(job->fast_id);
	free(job->fast_field);
	free(job->fast_value);
	if (job->page) {
		free(job->page->next);
		free(job->page->recs);
		buf_fini(&job->page->data);
		PQclear(job->page->pgres);
		free(job->page);
	}
	free(job);
}

/* mu held: where client's pin is linked in its bucket (*result is NULL
 * if it has none: the place to link a new one) */
static struct pin **
pin_slot(struct db *db, const char *client)
{
	struct pin **pp = &db->pins[hash_str(HASH_INIT, client) % PIN_BUCKETS];

	while (*pp && strcmp((*pp)->client, client) != 0)
		pp = &(*pp)->next;
	return pp;
}

static void wake_one(struct db *db);

/* mu held: a transaction of client was answered (taken: by the worker
 * that took it); the last one unpins it */
static void
pin_release(struct db *db, const char *client, bool taken)
{
	struct pin **pp = pin_slot(db, client);

	if (*pp && taken && --(*pp)->taken == 0) {
		(*pp)->worker = -1;
		if ((*pp)->jobs > 1) /* its next ones may go to any worker */
			wake_one(db);
	}
	if (*pp && --(*pp)->jobs == 0) {
		struct pin *p = *pp;

		*pp = p->next;
		free(p->client);
		free(p);
	}
}

/* mu held: wake one idle connected worker, scanning from a rotating
 * start so that work spreads */
static void
wake_one(struct db *db)
{
	int n = db->cfg.workers;

	for (int k = 0; k < n; k++) {
		struct worker *w = &db->workers[(db->next_wake + (unsigned)k) %
						(unsigned)n];

		if (w->up && w->idle) {
			w->idle = false; /* not signalled twice */
			pthread_cond_signal(&w->cv);
			db->next_wake++;
			return;
		}
	}
}

int
db_submit(struct db *db, struct job *job)
{
	pthread_mutex_lock(&db->mu);
	if (db->stopping || db->queued >= db->cfg.queue_max) {
		pthread_mutex_unlock(&db->mu);
		return WEFT_EAGAIN;
	}
	if (db->stats.connected == 0 && db->trying == 0) {
		db->stats.unavailable++;
		pthread_mutex_unlock(&db->mu);
		return WEFT_EUNAVAILABLE;
	}
	if (job->kind == JOB_TXN && job->client_id) {
		struct pin **slot = pin_slot(db, job->client_id);

		if (!*slot) { /* linked at the end of its bucket */
			*slot = xcalloc(1, sizeof(**slot));
			(*slot)->client = xstrdup(job->client_id);
			(*slot)->worker = -1;
		}
		(*slot)->jobs++;
	}
	job->next = NULL;
	job->taken = false;
	job->queued_ns = clock_now_ns();
	if (db->tail)
		db->tail->next = job;
	else
		db->head = job;
	db->tail = job;
	db->queued++;
	if (!db->gathering) /* else it is the waiting worker's */
		wake_one(db);
	else if (db->queued >= db->cfg.batch_max)
		pthread_cond_signal(&db->gathering->cv); /* full: go */
	pthread_mutex_unlock(&db->mu);
	return 0;
}

void
db_stats(struct db *db, struct db_stats *out)
{
	pthread_mutex_lock(&db->mu);
	*out = db->stats;
	out->queued = db->queued;
	pthread_mutex_unlock(&db->mu);
}

static void
count(struct db *db, uint64_t *counter, uint64_t n)
{
	pthread_mutex_lock(&db->mu);
	*counter += n;
	pthread_mutex_unlock(&db->mu);
}

static bool
prepare(PGconn *pg, const char *name, const char *sql)
{
	PGresult *r = PQprepare(pg, name, sql, 0, NULL);
	bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;

	if (!ok)
		log_event(LOG_ERROR, "pg_prepare_failed", "stmt=%s err=\"%s\"",
			  name, PQerrorMessage(pg));
	PQclear(r);
	return ok;
}

static void
disconnect(struct worker *w)
{
	if (!w->pg)
		return;
	PQfinish(w->pg);
	w->pg = NULL;
	pthread_mutex_lock(&w->db->mu);
	w->up = false;
	w->db->stats.connected--;
	pthread_mutex_unlock(&w->db->mu);
}

static bool
connect_pg(struct worker *w)
{
	/* keepalives and a TCP timeout: a silently dead database must fail
	 * the connection (and its jobs, retryably), never hang a worker */
	static const char *const keys[] = {
		"dbname",	    "keepalives",
		"keepalives_idle",  "keepalives_interval",
		"keepalives_count", "tcp_user_timeout",
		"connect_timeout",  NULL
	};
	const char *vals[] = { w->db->cfg.pg_url, "1", "10", "5", "3",
			       "20000",		  "5", NULL };
	PGconn *pg = PQconnectdbParams(keys, vals, 1);

	if (PQstatus(pg) != CONNECTION_OK) {
		log_event(LOG_WARN, "pg_connect_failed", "worker=%d err=\"%s\"",
			  w->index, PQerrorMessage(pg));
		PQfinish(pg);
		return false;
	}
	if (!prepare(pg, "apply", SQL_APPLY) ||
	    !prepare(pg, "fast", SQL_FAST) ||
	    !prepare(pg, "fetch", SQL_FETCH) ||
	    (w->db->cfg.results_ttl_ms > 0 &&
	     !prepare(pg, "prune", SQL_PRUNE)) ||
	    (w->db->cfg.tombstone_ttl_ms > 0 && !prepare(pg, "gc", SQL_GC)) ||
	    !prepare(pg, "role", SQL_ROLE) || !prepare(pg, "page", SQL_PAGE)) {
		PQfinish(pg);
		return false;
	}
	w->pg = pg;
	pthread_mutex_lock(&w->db->mu);
	w->up = true;
	w->db->stats.connected++;
	pthread_mutex_unlock(&w->db->mu);
	log_event(LOG_INFO, "pg_connected", "worker=%d", w->index);
	return true;
}

/* the job's reply goes first, then its pin: the client's next
 * transaction, on whichever worker, is answered after this one */
static void
answer(struct db *db, struct job *job, int status, json_t *res)
{
	char *client = NULL;
	bool taken = job->taken;

	if (job->kind == JOB_TXN && job->client_id) {
		client = job->client_id; /* freed here, not by done() */
		job->client_kept = true;
	}
	job->done(job, status, res);
	if (client) {
		pthread_mutex_lock(&db->mu);
		pin_release(db, client, taken);
		pthread_mutex_unlock(&db->mu);
		free(client);
	}
}

/* every job of a list gets status (no result); the list is consumed */
static void
answer_all(struct db *db, struct job *jobs, int status)
{
	uint64_t n = 0;

	while (jobs) {
		struct job *next = jobs->next;

		answer(db, jobs, status, NULL);
		jobs = next;
		n++;
	}
	if (status == WEFT_EUNAVAILABLE)
		count(db, &db->stats.unavailable, n);
}

/* SQLSTATE classes worth retrying the whole group for */
static bool
transient(const PGresult *r)
{
	const char *st = PQresultErrorField(r, PG_DIAG_SQLSTATE);

	return st && (strcmp(st, "40P01") == 0 || strcmp(st, "40001") == 0 ||
		      strcmp(st, "55P03") == 0);
}

enum group_outcome { GROUP_OK, GROUP_RETRY, GROUP_FAILED, GROUP_LOST };

/* an element of a Postgres array literal: "..." with \ and " escaped */
static void
arr_put(struct buf *b, const char *s)
{
	if (b->len > 1)
		buf_append(b, ",", 1);
	buf_append(b, "\"", 1);
	for (const char *p = s; *p; p++) {
		size_t run = strcspn(p, "\\\"");

		buf_append(b, p, run);
		p += run;
		if (!*p)
			break;
		buf_append(b, "\\", 1);
		buf_append(b, p, 1);
	}
	buf_append(b, "\"", 1);
}

/*
 * pick_fast - mark the jobs the set-based path may take: a single set or
 * unset (job->fast_op) that is the first job of its client in the group.
 * Later jobs of that client must follow it, through weft_apply(), so its
 * ids stay in order whatever the fast path does.  Returns how many.
 */
static int
pick_fast(struct job **jobs, int n, char **done, bool *fast)
{
	size_t cap = 16, mask;
	const char **seen;
	int picked = 0;

	while (cap < (size_t)n * 2)
		cap <<= 1;
	mask = cap - 1;
	seen = xcalloc(cap, sizeof(*seen));
	for (int i = 0; i < n; i++) {
		size_t h = hash_str(HASH_INIT, jobs[i]->client_id) & mask;
		bool first = true;

		fast[i] = false;
		for (; seen[h]; h = (h + 1) & mask)
			if (strcmp(seen[h], jobs[i]->client_id) == 0) {
				first = false;
				break;
			}
		if (!first)
			continue;
		seen[h] = jobs[i]->client_id;
		if (jobs[i]->fast_op && !jobs[i]->reject_json && !done[i]) {
			fast[i] = true;
			picked++;
		}
	}
	free(seen);
	return picked;
}

/* the parameters of weft_apply_fast() for the jobs marked fast */
static void
fast_params(struct job **jobs, int n, const bool *fast, struct buf arrays[8])
{
	static const char *const op[] = { "", "3", "4" };

	for (int a = 0; a < 8; a++) {
		buf_init(&arrays[a], 0);
		buf_append(&arrays[a], "{", 1);
	}
	for (int i = 0; i < n; i++) {
		char mid[24];

		if (!fast[i])
			continue;
		snprintf(mid, sizeof(mid), "%llu",
			 (unsigned long long)jobs[i]->mid);
		arr_put(&arrays[0], jobs[i]->client_id);
		arr_put(&arrays[1], jobs[i]->user);
		arr_put(&arrays[2], mid);
		arr_put(&arrays[3], jobs[i]->fast_tbl);
		arr_put(&arrays[4], jobs[i]->fast_id);
		arr_put(&arrays[5], op[jobs[i]->fast_op]);
		arr_put(&arrays[6], jobs[i]->fast_field);
		arr_put(&arrays[7], jobs[i]->fast_value);
	}
	for (int a = 0; a < 8; a++)
		buf_append(&arrays[a], "}", 2); /* with the NUL */
}

/* read one pipelined query's results up to its NULL; rows (o_n, text)
 * of weft_apply_fast() or one row of weft_apply() land in results */
static enum group_outcome
read_query(struct worker *w, const char *what, int *map, int nmap,
	   char **results, enum group_outcome out)
{
	PGconn *pg = w->pg;
	PGresult *r;

	while ((r = PQgetResult(pg))) {
		switch (PQresultStatus(r)) {
		case PGRES_TUPLES_OK:
			for (int k = 0; k < PQntuples(r); k++) {
				/* fast: (o_n, result); apply: (result) */
				int at = PQnfields(r) == 2
						 ? (int)strtol(
							   PQgetvalue(r, k, 0),
							   NULL, 10) -
							   1
						 : 0;
				const char *v =
					PQgetvalue(r, k, PQnfields(r) - 1);

				if (at >= 0 && at < nmap && !results[map[at]])
					results[map[at]] = xstrdup(v);
			}
			break;
		case PGRES_FATAL_ERROR:
			if (out == GROUP_OK) {
				out = transient(r) ? GROUP_RETRY : GROUP_FAILED;
				log_event(out == GROUP_RETRY ? LOG_INFO
							     : LOG_ERROR,
					  "group_failed",
					  "worker=%d stage=%s err=\"%s\"",
					  w->index, what,
					  PQresultErrorMessage(r));
			}
			break;
		default: /* COMMAND_OK, PIPELINE_ABORTED */
			break;
		}
		PQclear(r);
	}
	if (PQstatus(pg) != CONNECTION_OK)
		return GROUP_LOST;
	return out;
}

/* the Sync that ends a pipeline section */
static enum group_outcome
read_sync(PGconn *pg, enum group_outcome out)
{
	PGresult *r = PQgetResult(pg);

	if (!r || PQresultStatus(r) != PGRES_PIPELINE_SYNC)
		out = GROUP_LOST;
	PQclear(r);
	return out;
}

/* ROLLBACK after a failed first section; false if the connection is
 * gone */
static bool
rollback(struct worker *w)
{
	PQsendQueryParams(w->pg, "ROLLBACK", 0, NULL, NULL, NULL, NULL, 0);
	if (!PQpipelineSync(w->pg))
		return false;
	return read_query(w, "rollback", NULL, 0, NULL, GROUP_OK) !=
		       GROUP_LOST &&
	       read_sync(w->pg, GROUP_OK) != GROUP_LOST;
}

/*
 * One attempt at a group.  Jobs whose results[i] is set are done (a
 * committed earlier attempt) and skipped; the others receive their
 * result text, and durable[i] is set for results already committed.
 *
 * With use_fast, the jobs pick_fast() marks go first, in one
 * weft_apply_fast() call.  When every pending job is marked, that call
 * runs on its own, committed at its Sync: one round trip, no BEGIN.
 * Otherwise it opens the transaction (BEGIN; fast; Sync) and the rest
 * follow in it once its answer is in: every unmarked job, and every
 * marked one it did not apply, through weft_apply() in the group's order
 * (applies; COMMIT; Sync).  The ones an autocommitted fast call did not
 * apply go the same way, in a transaction of their own: each is the only
 * job of its client in the group, so no order changes.
 */
static void answer_pending(struct worker *w);

static enum group_outcome
try_group(struct worker *w, struct job **jobs, int n, char **results,
	  bool *durable, bool use_fast, int *n_fast)
{
	PGconn *pg = w->pg;
	enum group_outcome out = GROUP_OK;
	char max_record[16], keep[16], max_reply[16];
	bool *fast = xcalloc((size_t)n, sizeof(*fast));
	int *map = xcalloc((size_t)n, sizeof(*map));
	int nfast = 0, pending = 0, m = 0;
	bool autocommit = false, in_txn = false;

	for (int i = 0; i < n; i++)
		pending += !results[i];
	if (use_fast)
		nfast = pick_fast(jobs, n, results, fast);
	autocommit = nfast == pending;
	snprintf(max_record, sizeof(max_record), "%d", w->db->cfg.max_record);
	snprintf(keep, sizeof(keep), "%d", w->db->cfg.keep_results);
	snprintf(max_reply, sizeof(max_reply), "%d", w->db->cfg.max_reply);
	if (!PQenterPipelineMode(pg)) {
		out = GROUP_LOST;
		goto out_free;
	}
	if (nfast) {
		struct buf arrays[8];
		const char *params[10];

		fast_params(jobs, n, fast, arrays);
		for (int a = 0; a < 8; a++)
			params[a] = (const char *)arrays[a].data;
		params[8] = max_record;
		params[9] = keep;
		for (int i = 0; i < n; i++)
			if (fast[i])
				map[m++] = i;
		if (!autocommit)
			PQsendQueryParams(pg, "BEGIN", 0, NULL, NULL, NULL,
					  NULL, 0);
		PQsendQueryPrepared(pg, "fast", 10, params, NULL, NULL, 0);
		for (int a = 0; a < 8; a++)
			buf_fini(&arrays[a]);
		if (!PQpipelineSync(pg)) {
			out = GROUP_LOST;
			goto out_exit;
		}
		answer_pending(w); /* while Postgres applies this group */
		if (!autocommit)
			out = read_query(w, "begin", map, 0, results, out);
		if (out != GROUP_LOST)
			out = read_query(w, "fast", map, m, results, out);
		if (out != GROUP_LOST)
			out = read_sync(pg, out);
		if (out != GROUP_OK) {
			if (out != GROUP_LOST && !autocommit && !rollback(w))
				out = GROUP_LOST;
			for (int k = 0; k < m; k++) { /* none of it stands */
				free(results[map[k]]);
				results[map[k]] = NULL;
			}
			goto out_exit;
		}
		for (int k = 0; k < m; k++)
			if (results[map[k]]) {
				(*n_fast)++;
				durable[map[k]] = autocommit;
			}
		in_txn = !autocommit;
	}
	m = 0;
	for (int i = 0; i < n; i++) {
		char mid[24];
		const char *params[8];

		if (results[i]) /* done: by the fast path, or before */
			continue;
		if (!in_txn) {
			PQsendQueryParams(pg, "BEGIN", 0, NULL, NULL, NULL,
					  NULL, 0);
			in_txn = true;
		}
		snprintf(mid, sizeof(mid), "%llu",
			 (unsigned long long)jobs[i]->mid);
		params[0] = jobs[i]->client_id;
		params[1] = jobs[i]->user;
		params[2] = mid;
		params[3] = jobs[i]->ops_json ? jobs[i]->ops_json : "[]";
		params[4] = max_record;
		params[5] = keep;
		params[6] = jobs[i]->reject_json;
		params[7] = max_reply;
		PQsendQueryPrepared(pg, "apply", 8, params, NULL, NULL, 0);
		map[m++] = i;
	}
	if (!in_txn) /* all done by an autocommitted fast call */
		goto out_exit;
	PQsendQueryParams(pg, "COMMIT", 0, NULL, NULL, NULL, NULL, 0);
	if (!PQpipelineSync(pg)) {
		out = GROUP_LOST;
		goto out_exit;
	}
	answer_pending(w);
	if (!nfast || autocommit) /* BEGIN is in this section */
		out = read_query(w, "begin", map, 0, results, out);
	for (int k = 0; k < m && out != GROUP_LOST; k++)
		out = read_query(w, "apply", map + k, 1, results, out);
	if (out != GROUP_LOST)
		out = read_query(w, "commit", map, 0, results, out);
	if (out != GROUP_LOST)
		out = read_sync(pg, out);
	if (out == GROUP_OK)
		for (int i = 0; i < n; i++)
			durable[i] = results[i] != NULL;
out_exit:
	if (out != GROUP_LOST && !PQexitPipelineMode(pg))
		out = GROUP_LOST;
out_free:
	if (out != GROUP_OK) /* what did not commit does not stand */
		for (int i = 0; i < n; i++)
			if (!durable[i]) {
				free(results[i]);
				results[i] = NULL;
			}
	free(fast);
	free(map);
	return out;
}

static size_t
hist_bucket(int n)
{
	size_t b = 0;

	while (n > 1 && b < 7) {
		n >>= 1;
		b++;
	}
	return b;
}

/* the latency histograms' bucket of us microseconds: k < 15 holds up to
 * (2 << k) * 100 us, 15 beyond */
static unsigned
lat_bucket(uint64_t us)
{
	unsigned b = 0;

	for (uint64_t v = us / 100; v > 1 && b < 15; v >>= 1)
		b++;
	return b;
}

/* answer the last group w committed, if it has not been: in order, so a
 * client's acks keep its mid order (its next transactions are pinned to
 * w meanwhile) */
static void
answer_pending(struct worker *w)
{
	struct answers a = w->pending;

	if (!a.jobs)
		return;
	w->pending = (struct answers){ 0 };
	for (int i = 0; i < a.n; i++) {
		json_error_t jerr;
		json_t *res;

		a.jobs[i]->next = NULL;
		if (!a.results[i]) {
			/* not known to be committed: a retryable error,
			 * never an ack */
			answer(w->db, a.jobs[i], WEFT_EUNAVAILABLE, NULL);
			count(w->db, &w->db->stats.unavailable, 1);
			continue;
		}
		count(w->db, &w->db->stats.txns, 1);
		res = json_loads(a.results[i], 0, &jerr);
		if (!res) {
			log_event(LOG_ERROR, "bad_apply_result",
				  "worker=%d mid=%llu", w->index,
				  (unsigned long long)a.jobs[i]->mid);
			answer(w->db, a.jobs[i], WEFT_EINTERNAL, NULL);
			continue;
		}
		answer(w->db, a.jobs[i], 0, res);
		json_decref(res);
	}
	for (int i = 0; i < a.n; i++)
		free(a.results[i]);
	free(a.results);
	free(a.jobs);
}

/* commit a group; its answers stay pending (answer_pending) until the
 * next group's statement is sent or w has nothing else to do */
static void
run_group(struct worker *w, struct job *list, int n)
{
	struct job **jobs = xcalloc((size_t)n, sizeof(*jobs));
	char **results = xcalloc((size_t)n, sizeof(*results));
	bool *durable = xcalloc((size_t)n, sizeof(*durable));
	enum group_outcome out = GROUP_RETRY;
	bool use_fast = true;
	int i = 0, attempt, n_fast = 0;
	uint64_t t0 = clock_now_ns(), us;
	unsigned b;

	for (struct job *j = list; j; j = j->next)
		jobs[i++] = j;
	for (attempt = 0; attempt < DB_RETRIES && out == GROUP_RETRY;
	     attempt++) {
		if (attempt)
			count(w->db, &w->db->stats.retries, 1);
		out = try_group(w, jobs, n, results, durable, use_fast,
				&n_fast);
		if (out == GROUP_FAILED && use_fast) {
			/* whatever the set-based path tripped on, weft_apply()
			 * turns into a stored rejection of one transaction */
			use_fast = false;
			out = GROUP_RETRY;
		}
	}
	if (out == GROUP_LOST)
		disconnect(w);
	us = (clock_now_ns() - t0) / 1000;
	b = lat_bucket(us);
	pthread_mutex_lock(&w->db->mu);
	if (out == GROUP_OK) {
		w->db->stats.commits++;
		w->db->stats.group_hist[hist_bucket(n)]++;
		w->db->stats.group_txns += (uint64_t)n;
		w->db->stats.pg_hist[b]++;
		w->db->stats.pg_sum_us += us;
	}
	w->db->stats.fast += (uint64_t)n_fast;
	pthread_mutex_unlock(&w->db->mu);
	free(durable);
	answer_pending(w); /* if no statement went out */
	w->pending = (struct answers){ jobs, results, n };
}

static json_t *
parse_or_null(const char *text)
{
	json_error_t jerr;

	return json_loads(text, JSON_DECODE_ANY, &jerr);
}

static void
run_fetch(struct worker *w, struct job *job)
{
	const char *params[2] = { job->user, job->keys_json };
	PGresult *r = PQexecPrepared(w->pg, "fetch", 2, params, NULL, NULL, 0);
	json_t *recs, *res;

	if (PQresultStatus(r) != PGRES_TUPLES_OK) {
		log_event(LOG_ERROR, "fetch_failed", "err=\"%s\"",
			  PQerrorMessage(w->pg));
		PQclear(r);
		if (PQstatus(w->pg) != CONNECTION_OK)
			disconnect(w);
		answer(w->db, job, WEFT_EUNAVAILABLE, NULL);
		return;
	}
	if (w->db->cfg.max_reply &&
	    PQgetlength(r, 0, 0) > w->db->cfg.max_reply) {
		PQclear(r); /* the reply could not be sent: refuse it */
		answer(w->db, job, WEFT_ELIMIT, NULL);
		return;
	}
	recs = parse_or_null(PQgetvalue(r, 0, 0));
	PQclear(r);
	count(w->db, &w->db->stats.reads, 1);
	res = json_pack("{so}", "records", recs ? recs : json_array());
	answer(w->db, job, 0, res);
	json_decref(res);
}

static int
mp_to_buf(void *data, const char *p, size_t len)
{
	return buf_append(data, p, len) ? -1 : 0;
}

/* the JSON text of a row's data as msgpack, appended to b; false if it
 * does not parse */
static bool
data_to_mp(struct buf *b, const char *text, size_t len)
{
	msgpack_packer pk;

	msgpack_packer_init(&pk, b, mp_to_buf);
	return json_text_to_mp(&pk, text, len) == 0 && !b->err;
}

static void
run_bootstrap(struct worker *w, struct job *job)
{
	const char *after = job->after ? job->after : "";
	const char *sep = strchr(after, '\x1f');
	char tbl[600] = "", id[600] = "", rows[16];
	const char *params[4];
	struct page_out *pg = xcalloc(1, sizeof(*pg));
	size_t bytes = 0, *off;
	PGresult *r;
	int nrows;

	buf_init(&pg->data, 0);
	job->page = pg;
	if (sep) {
		snprintf(tbl, sizeof(tbl), "%.*s", (int)(sep - after), after);
		snprintf(id, sizeof(id), "%s", sep + 1);
	}
	params[0] = job->user;
	params[1] = job->space;
	params[2] = job->after ? "false" : "true"; /* count on page 1 */
	r = PQexecPrepared(w->pg, "role", 3, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		goto out_unavailable;
	if (strcmp(PQgetvalue(r, 0, 0), "0") == 0) {
		PQclear(r);
		pg->denied = true;
		answer(w->db, job, 0, NULL);
		return;
	}
	snprintf(pg->lsn, sizeof(pg->lsn), "%s", PQgetvalue(r, 0, 1));
	if (!PQgetisnull(r, 0, 2)) {
		pg->has_total = true;
		pg->total = strtoull(PQgetvalue(r, 0, 2), NULL, 10);
	}
	PQclear(r);
	snprintf(rows, sizeof(rows), "%d", w->db->cfg.page_rows);
	params[0] = job->space;
	params[1] = tbl;
	params[2] = id;
	params[3] = rows;
	r = PQexecPrepared(w->pg, "page", 4, params, NULL, NULL, 0);
	if (PQresultStatus(r) != PGRES_TUPLES_OK)
		goto out_unavailable;
	nrows = PQntuples(r);
	pg->pgres = r;
	pg->recs = xcalloc(nrows ? (size_t)nrows : 1, sizeof(*pg->recs));
	off = xcalloc(nrows ? (size_t)nrows : 1, sizeof(*off));
	for (int i = 0; i < nrows; i++) {
		struct proto_record *rec = &pg->recs[pg->n];

		rec->table = proto_str_c(PQgetvalue(r, i, 0));
		rec->id = proto_str_c(PQgetvalue(r, i, 1));
		rec->space = proto_str_c(PQgetvalue(r, i, 2));
		rec->version = strtoull(PQgetvalue(r, i, 3), NULL, 10);
		rec->deleted = PQgetvalue(r, i, 4)[0] == 't';
		off[pg->n] = pg->data.len;
		if (rec->deleted) {
			pg->n++;
		} else if (job->json) { /* the row's own text, as it is */
			rec->json = (struct proto_str){ PQgetvalue(r, i, 5),
							(uint32_t)PQgetlength(
								r, i, 5) };
			pg->n++;
		} else if (data_to_mp(&pg->data, PQgetvalue(r, i, 5),
				      (size_t)PQgetlength(r, i, 5))) {
			rec->data.len = (uint32_t)(pg->data.len - off[pg->n]);
			pg->n++;
		} else { /* left out; the page goes on past it */
			log_event(LOG_ERROR, "bad_record_data",
				  "table=%s id=%s", PQgetvalue(r, i, 0),
				  PQgetvalue(r, i, 1));
			pg->data.len = off[pg->n];
			pg->data.err = 0;
		}
		for (int c = 0; c < 6; c++)
			bytes += (size_t)PQgetlength(r, i, c);
		if (bytes >= job->max_bytes || i == nrows - 1) {
			/* more may follow only if we stopped early or the
			 * query filled its limit */
			if (i < nrows - 1 || nrows == w->db->cfg.page_rows) {
				size_t n = strlen(PQgetvalue(r, i, 0)) +
					   strlen(PQgetvalue(r, i, 1)) + 2;

				pg->next = xmalloc(n);
				snprintf(pg->next, n, "%s\x1f%s",
					 PQgetvalue(r, i, 0),
					 PQgetvalue(r, i, 1));
			}
			break;
		}
	}
	for (uint32_t i = 0; i < pg->n; i++) /* data has stopped moving */
		if (pg->recs[i].data.len)
			pg->recs[i].data.p = pg->data.data + off[i];
	free(off);
	count(w->db, &w->db->stats.reads, 1);
	answer(w->db, job, 0, NULL);
	return;
out_unavailable:
	log_event(LOG_ERROR, "bootstrap_failed", "err=\"%s\"",
		  PQerrorMessage(w->pg));
	PQclear(r);
	if (PQstatus(w->pg) != CONNECTION_OK)
		disconnect(w);
	answer(w->db, job, WEFT_EUNAVAILABLE, NULL);
}

/* mu held: unlink job (prev: the one before it, or NULL) from the queue */
static void
unlink_job(struct db *db, struct job *prev, struct job *job)
{
	if (prev)
		prev->next = job->next;
	else
		db->head = job->next;
	if (db->tail == job)
		db->tail = prev;
	job->next = NULL;
	db->queued--;
}

/* mu held: may w take job?  A client's transactions go to one worker at
 * a time; take() marks them */
static bool
may_take(struct db *db, struct worker *w, const struct job *job)
{
	const struct pin *pin;

	if (job->kind != JOB_TXN || !job->client_id)
		return true;
	pin = *pin_slot(db, job->client_id);
	return !pin || pin->worker < 0 || pin->worker == w->index;
}

/* mu held: the next unit of work for w, oldest first: a group of up to
 * batch_max transactions, or one read; NULL if it may take nothing */
static struct job *
take_some(struct worker *w, int *n)
{
	struct db *db = w->db;
	struct job *prev = NULL, *j = db->head, *first = NULL, *last = NULL;
	const char *skipped = NULL; /* the last client passed over */
	uint64_t now = clock_now_ns();

	*n = 0;
	while (j && *n < db->cfg.batch_max) {
		struct job *next = j->next;

		/* a client that queued many is passed over without a lookup
		 * per job; the whole queue is looked at, so one client's
		 * backlog never hides the others' jobs behind it */
		if ((skipped && j->kind == JOB_TXN && j->client_id &&
		     strcmp(skipped, j->client_id) == 0) ||
		    (*n && j->kind != JOB_TXN)) {
			prev = j;
			j = next;
			continue;
		}
		if (!may_take(db, w, j)) {
			skipped = j->client_id;
			prev = j;
			j = next;
			continue;
		}
		unlink_job(db, prev, j);
		if (j->kind == JOB_TXN) {
			uint64_t us = (now - j->queued_ns) / 1000;

			db->stats.queue_hist[lat_bucket(us)]++;
			db->stats.queue_sum_us += us;
		}
		if (j->kind == JOB_TXN && j->client_id) {
			struct pin *pin = *pin_slot(db, j->client_id);

			pin->worker = w->index;
			pin->taken++;
			j->taken = true;
		}
		if (last)
			last->next = j;
		else
			first = j;
		last = j;
		(*n)++;
		if (j->kind != JOB_TXN)
			break; /* a read goes alone */
		j = next;
	}
	return first;
}

/* how often something with this TTL is deleted: a quarter of the TTL,
 * within [250 ms, most] */
static uint64_t
every_ns(int64_t ttl_ms, int64_t most_ms)
{
	int64_t ms = ttl_ms / 4;

	ms = ms < 250 ? 250 : ms > most_ms ? most_ms : ms;
	return (uint64_t)ms * 1000000u;
}

/* stored results: at most every minute.  Tombstones: at most every hour,
 * as a pass reads every tombstone not yet old enough */
static uint64_t
prune_every_ns(const struct db *db)
{
	return every_ns(db->cfg.results_ttl_ms, 60000);
}

static uint64_t
gc_every_ns(const struct db *db)
{
	return every_ns(db->cfg.tombstone_ttl_ms, 3600000);
}

/* mu held: the soonest deletion pass, or UINT64_MAX if none is on */
static uint64_t
next_pass_ns(const struct db *db)
{
	uint64_t t = UINT64_MAX;

	if (db->cfg.results_ttl_ms > 0)
		t = db->next_prune_ns;
	if (db->cfg.tombstone_ttl_ms > 0 && db->next_gc_ns < t)
		t = db->next_gc_ns;
	return t;
}

/* mu held: whether stored results or tombstones are due for deleting and
 * no worker is at it */
static bool
prune_ready(const struct db *db)
{
	return !db->pruning && !db->stopping &&
	       clock_now_ns() >= next_pass_ns(db);
}

static bool
db_stopping(struct db *db)
{
	bool stop;

	pthread_mutex_lock(&db->mu);
	stop = db->stopping;
	pthread_mutex_unlock(&db->mu);
	return stop;
}

/* delete stored results past --results-ttl until a statement deletes
 * less than a batch, PRUNE_BATCHES times at most; returns the rows
 * deleted */
static uint64_t
prune_results(struct worker *w, bool *lost)
{
	struct db *db = w->db;
	char ttl[24], batch[16];
	const char *params[2] = { ttl, batch };
	uint64_t total = 0;

	snprintf(ttl, sizeof(ttl), "%lld", (long long)db->cfg.results_ttl_ms);
	snprintf(batch, sizeof(batch), "%d", PRUNE_BATCH);
	for (int i = 0; i < PRUNE_BATCHES && !*lost; i++) {
		PGresult *r;
		long n = 0;

		if (db_stopping(db))
			break;
		r = PQexecPrepared(w->pg, "prune", 2, params, NULL, NULL, 0);
		if (PQresultStatus(r) == PGRES_COMMAND_OK)
			n = strtol(PQcmdTuples(r), NULL, 10);
		else
			log_event(LOG_WARN, "prune_failed",
				  "worker=%d err=\"%s\"", w->index,
				  PQerrorMessage(w->pg));
		*lost = PQstatus(w->pg) != CONNECTION_OK;
		PQclear(r);
		total += (uint64_t)n;
		if (n < PRUNE_BATCH)
			break;
	}
	return total;
}

/*
 * Walk the tombstones from where the last pass stopped, PRUNE_BATCH at a
 * time in key order, deleting those past --tombstone-ttl; PRUNE_BATCHES
 * batches at most.  Returns the rows deleted; *more when the walk stopped
 * before the end (the next pass goes on from there, soon).
 */
static uint64_t
gc_tombstones(struct worker *w, bool *lost, bool *more)
{
	struct db *db = w->db;
	char ttl[24], batch[16];
	const char *params[4] = { ttl, batch, NULL, NULL };
	uint64_t total = 0;

	snprintf(ttl, sizeof(ttl), "%lld", (long long)db->cfg.tombstone_ttl_ms);
	snprintf(batch, sizeof(batch), "%d", PRUNE_BATCH);
	*more = true;
	for (int i = 0; i < PRUNE_BATCHES && !*lost; i++) {
		PGresult *r;
		long scanned = 0;

		if (db_stopping(db))
			return total;
		params[2] = db->gc_tbl ? db->gc_tbl : "";
		params[3] = db->gc_id ? db->gc_id : "";
		r = PQexecPrepared(w->pg, "gc", 4, params, NULL, NULL, 0);
		if (PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
			total += (uint64_t)strtoll(PQgetvalue(r, 0, 0), NULL,
						   10);
			scanned = strtol(PQgetvalue(r, 0, 1), NULL, 10);
			free(db->gc_tbl);
			free(db->gc_id);
			db->gc_tbl = db->gc_id = NULL;
			if (!PQgetisnull(r, 0, 2)) {
				db->gc_tbl = xstrdup(PQgetvalue(r, 0, 2));
				db->gc_id = xstrdup(PQgetvalue(r, 0, 3));
			}
		} else {
			log_event(LOG_WARN, "tombstone_gc_failed",
				  "worker=%d err=\"%s\"", w->index,
				  PQerrorMessage(w->pg));
			scanned = -1;
		}
		*lost = PQstatus(w->pg) != CONNECTION_OK;
		PQclear(r);
		if (scanned < 0) { /* from here again, at the next pass */
			*more = false;
			return total;
		}
		if (scanned < PRUNE_BATCH) { /* the end: from the start next */
			free(db->gc_tbl);
			free(db->gc_id);
			db->gc_tbl = db->gc_id = NULL;
			*more = false;
			return total;
		}
	}
	return total;
}

/* delete what is due: stored results older than --results-ttl, tombstones
 * older than --tombstone-ttl; a batch at a time */
static void
run_prune(struct worker *w)
{
	struct db *db = w->db;
	uint64_t results = 0, tombstones = 0, now = clock_now_ns();
	bool lost = false, do_results, do_gc, gc_ran = false, more = false;

	pthread_mutex_lock(&db->mu);
	do_results = db->cfg.results_ttl_ms > 0 && now >= db->next_prune_ns;
	do_gc = db->cfg.tombstone_ttl_ms > 0 && now >= db->next_gc_ns;
	pthread_mutex_unlock(&db->mu);
	/* never a long wait: behind a group's own trimming of the same
	 * rows, or its write of a tombstone, the pass is what gives way */
	PQclear(PQexec(w->pg, "SET lock_timeout = '200ms'; "
			      "SET statement_timeout = '5s'"));
	if (do_results)
		results = prune_results(w, &lost);
	if (do_gc && !lost) {
		tombstones = gc_tombstones(w, &lost, &more);
		gc_ran = true;
	}
	if (!lost) {
		PQclear(PQexec(w->pg, "RESET lock_timeout; "
				      "RESET statement_timeout"));
		lost = PQstatus(w->pg) != CONNECTION_OK;
	}
	if (results)
		log_event(LOG_INFO, "results_pruned", "rows=%llu",
			  (unsigned long long)results);
	if (tombstones)
		log_event(LOG_INFO, "tombstones_deleted", "rows=%llu",
			  (unsigned long long)tombstones);
	pthread_mutex_lock(&db->mu);
	db->pruning = false;
	now = clock_now_ns();
	if (do_results)
		db->next_prune_ns = now + prune_every_ns(db);
	/* a walk that stopped early goes on in a second; one that did not
	 * run (the connection went) is tried again with the next pass */
	if (gc_ran)
		db->next_gc_ns = now + (more ? 1000000000u : gc_every_ns(db));
	db->stats.results_pruned += results;
	db->stats.tombstones_deleted += tombstones;
	pthread_mutex_unlock(&db->mu);
	if (lost)
		disconnect(w);
}

/* mu held: wait for the next unit of work; NULL once stopping and w may
 * take nothing more, or when stored results are due for pruning, or
 * without may_wait when it would have to wait */
static struct job *
take(struct worker *w, int *n, bool may_wait)
{
	struct db *db = w->db;
	struct job *jobs;

	for (;;) {
		uint64_t now = clock_now_ns();
		struct timespec until;

		/* gather: while another worker is in Postgres, a group short
		 * of batch_max waits for more, until its oldest transaction
		 * has queued gather_us.  A call of weft_apply_fast() has a
		 * fixed cost (about 0.45 ms of Postgres CPU here, against
		 * 35 us per transaction), so under load larger groups leave
		 * the CPU for more of them.  Only under load: when no other
		 * worker is busy, or the last group was small (a quarter of
		 * batch_max or less; under 4, any group counts), nothing
		 * waits.  It goes early when the queue fills (db_submit) or
		 * when the last worker leaves Postgres (worker_main) */
		if (db->cfg.gather_us > 0 && db->in_pg > 0 && !db->stopping &&
		    db->last_group > db->cfg.batch_max / 4 && !db->gathering &&
		    db->head && db->head->kind == JOB_TXN &&
		    db->queued < db->cfg.batch_max &&
		    now < db->head->queued_ns +
				    (uint64_t)db->cfg.gather_us * 1000) {
			if (!may_wait)
				return NULL;
			clock_deadline(&until,
				       db->head->queued_ns +
					       (uint64_t)db->cfg.gather_us *
						       1000 -
					       now);
			db->gathering = w;
			db->stats.group_waits++;
			pthread_cond_timedwait(&w->cv, &db->mu, &until);
			db->gathering = NULL;
			continue;
		}
		/* a small group another worker is waiting to fill is its
		 * own (db_submit wakes no one else for it) */
		jobs = NULL;
		if ((db->stopping || !db->gathering ||
		     db->queued >= db->cfg.batch_max) &&
		    ((jobs = take_some(w, n)) || db->stopping))
			break;

		if (prune_ready(db) || !may_wait)
			return NULL;
		w->idle = true;
		if (!db->pruning && next_pass_ns(db) != UINT64_MAX &&
		    next_pass_ns(db) > now) { /* wake to prune then */
			clock_deadline(&until, next_pass_ns(db) - now);
			pthread_cond_timedwait(&w->cv, &db->mu, &until);
		} else { /* the pruner schedules the next pass */
			pthread_cond_wait(&w->cv, &db->mu);
		}
		w->idle = false;
	}
	if (jobs && jobs->kind == JOB_TXN)
		db->last_group = *n;
	if (jobs && db->head)
		wake_one(db); /* more than one group's worth is queued */
	return jobs;
}

/* whether w is trying to connect; while none is connected and none
 * trying, requests are answered EUNAVAILABLE rather than queued */
static void
set_trying(struct worker *w, bool on)
{
	pthread_mutex_lock(&w->db->mu);
	if (w->trying != on)
		w->db->trying += on ? 1 : -1;
	w->trying = on;
	pthread_mutex_unlock(&w->db->mu);
}

/* answer every queued job: no worker can reach the database */
static void
fail_queued(struct db *db)
{
	struct job *jobs;
	int n;

	pthread_mutex_lock(&db->mu);
	jobs = db->head;
	n = db->queued;
	db->head = db->tail = NULL;
	db->queued = 0;
	pthread_mutex_unlock(&db->mu);
	if (n)
		answer_all(db, jobs, WEFT_EUNAVAILABLE);
}

/*
 * The worker connects at start and after any loss, backing off up to
 * DB_BACKOFF_MAX_MS between attempts.  While it has no connection, jobs
 * routed to it are answered WEFT_EUNAVAILABLE at once (clients retry)
 * rather than left waiting.
 */
static void *
worker_main(void *arg)
{
	struct worker *w = arg;
	struct db *db = w->db;
	uint32_t backoff = 50;
	uint64_t next_try = 0;

	for (;;) {
		struct job *jobs;
		bool prune, stop;
		int n;

		if (!w->pg)
			answer_pending(w); /* what it committed before */
		if (!w->pg && clock_now_ns() >= next_try) {
			bool ok;

			set_trying(w, true);
			ok = connect_pg(w);
			set_trying(w, false);
			if (ok) {
				backoff = 50;
			} else {
				next_try = clock_now_ns() +
					   (uint64_t)backoff * 1000000u;
				backoff = backoff * 2 > DB_BACKOFF_MAX_MS
						  ? DB_BACKOFF_MAX_MS
						  : backoff * 2;
			}
		}
		if (!w->pg) {
			struct timespec until;
			uint64_t wait_ns = next_try > clock_now_ns()
						   ? next_try - clock_now_ns()
						   : 0;
			bool none_up;

			pthread_mutex_lock(&db->mu);
			none_up = db->stats.connected == 0;
			pthread_mutex_unlock(&db->mu);
			/* after a failed attempt, with no worker connected:
			 * answered now, not left to wait for a database that
			 * may be gone for long; else a connected worker takes
			 * them */
			if (none_up)
				fail_queued(db);
			clock_deadline(&until, wait_ns);
			pthread_mutex_lock(&db->mu);
			if (!db->stopping) {
				w->idle = true;
				pthread_cond_timedwait(&w->cv, &db->mu, &until);
				w->idle = false;
			}
			stop = db->stopping;
			pthread_mutex_unlock(&db->mu);
			if (stop)
				break;
			continue;
		}
		pthread_mutex_lock(&db->mu);
		prune = prune_ready(db);
		/* the last group's answers wait only for a group that can
		 * go now; before w waits, prunes or reads, they go */
		jobs = NULL;
		if (w->pending.jobs && !prune)
			jobs = take(w, &n, false);
		if (w->pending.jobs && (!jobs || jobs->kind != JOB_TXN)) {
			pthread_mutex_unlock(&db->mu);
			answer_pending(w);
			if (!jobs)
				continue;
			pthread_mutex_lock(&db->mu);
		}
		if (prune) {
			db->pruning = true;
			if (db->head) /* another worker takes them meanwhile */
				wake_one(db);
		}
		/* take() comes back empty when a prune is due: the next
		 * turn of the loop runs it */
		if (!jobs && !prune)
			jobs = take(w, &n, true);
		stop = !jobs && !prune && db->stopping;
		if (jobs)
			db->in_pg++;
		pthread_mutex_unlock(&db->mu);
		if (stop)
			break;
		if (prune) {
			run_prune(w);
			continue;
		}
		if (!jobs)
			continue;
		if (jobs->kind == JOB_TXN)
			run_group(w, jobs, n);
		else if (jobs->kind == JOB_FETCH)
			run_fetch(w, jobs);
		else
			run_bootstrap(w, jobs);
		pthread_mutex_lock(&db->mu);
		/* the last one out of Postgres: a worker waiting for its
		 * group to fill goes now */
		if (--db->in_pg == 0 && db->gathering)
			pthread_cond_signal(&db->gathering->cv);
		pthread_mutex_unlock(&db->mu);
	}
	disconnect(w);
	return NULL;
}

int
db_new(struct db **out, const struct db_config *cfg)
{
	struct db *db = xcalloc(1, sizeof(*db));

	db->cfg = *cfg;
	if (db->cfg.workers < 1)
		db->cfg.workers = 1;
	if (db->cfg.batch_max < 1)
		db->cfg.batch_max = 1;
	if (db->cfg.page_rows < 1)
		db->cfg.page_rows = 1000;
	pthread_mutex_init(&db->mu, NULL);
	db->workers = xcalloc((size_t)db->cfg.workers, sizeof(*db->workers));
	for (int i = 0; i < db->cfg.workers; i++) {
		pthread_cond_init(&db->workers[i].cv, NULL);
		db->workers[i].trying = true; /* until its first attempt */
	}
	db->trying = db->cfg.workers;
	db->next_prune_ns = clock_now_ns() + prune_every_ns(db);
	/* the first tombstone pass soon after start, not an hour later: a
	 * service restarted more often than that would never run one */
	db->next_gc_ns = clock_now_ns() + (gc_every_ns(db) < 60000000000u
						   ? gc_every_ns(db)
						   : 60000000000u);
	for (int i = 0; i < db->cfg.workers; i++) {
		db->workers[i].db = db;
		db->workers[i].index = i;
		if (pthread_create(&db->workers[i].thread, NULL, worker_main,
				   &db->workers[i]) != 0)
			alloc_oom(0);
	}
	*out = db;
	return 0;
}

void
db_free(struct db *db)
{
	if (!db)
		return;
	pthread_mutex_lock(&db->mu);
	db->stopping = true;
	for (int i = 0; i < db->cfg.workers; i++)
		pthread_cond_signal(&db->workers[i].cv);
	pthread_mutex_unlock(&db->mu);
	for (int i = 0; i < db->cfg.workers; i++)
		pthread_join(db->workers[i].thread, NULL);
	fail_queued(db); /* left if no worker had a connection at the end */
	for (int i = 0; i < db->cfg.workers; i++)
		pthread_cond_destroy(&db->workers[i].cv);
	pthread_mutex_destroy(&db->mu);
	for (int b = 0; b < PIN_BUCKETS; b++) /* jobs never answered */
		while (db->pins[b]) {
			struct pin *p = db->pins[b];

			db->pins[b] = p->next;
			free(p->client);
			free(p);
		}
	free(db->workers);
	free(db->gc_tbl);
	free(db->gc_id);
	free(db);
}
