/*
 * relay_test.c - weft-relay as real processes against a private Postgres
 * (wal_level=logical) and Redis: commit order whatever the sequence
 * order, and every committed outbox row in the stream exactly once
 * across kill -9 of the active relay (the standby takes over), a Redis
 * restart and a Postgres restart, all under steady writes.
 *
 * The outbox rows are written straight into weft_outbox: the relay does
 * not care who wrote them.  Each test marks its rows with its own
 * client_id and numbers them in mid, and compares the two sides.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <hiredis/hiredis.h>
#include <libpq-fe.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "proto/entry.h"
#include "tests/lib/proc.h"

static char dir[64], pg_url[256], redis_url[128], redis_port[16];
static long bad_entries; /* entries without a sane id, commit time or data */

/* a writer that commits outbox rows until told to stop, reconnecting
 * through restarts; committed counts the commits that succeeded */
struct writer {
	pthread_t thread;
	const char *marker;
	volatile bool stop;
	long next; /* mid of the next row */
	long committed;
};

static void
setup(void)
{
	proc_stack_up(dir, pg_url);
	proc_stack_env(dir, "WEFT_REDIS_URL", redis_url, sizeof(redis_url));
	proc_stack_env(dir, "WEFT_REDIS_PORT", redis_port, sizeof(redis_port));
}

static struct writer *running; /* stopped by teardown if a test fails */

static void
teardown(void)
{
	if (running) {
		running->stop = true;
		pthread_join(running->thread, NULL);
		running = NULL;
	}
	proc_stack_destroy(dir);
}

TestSuite(relay, .init = setup, .fini = teardown, .timeout = 120);

/* start a relay; extra: one more flag, or NULL */
static void
start_relay_with(struct proc *p, const char *extra)
{
	char pg[300], rd[160];
	const char *argv[] = { getenv("WEFT_TEST_RELAY_BIN"),
			       pg,
			       rd,
			       "--log-level=warn",
			       "--outbox-retention=0",
			       "--standby-retry=200ms",
			       extra,
			       NULL };

	cr_assert_not_null(argv[0],
			   "WEFT_TEST_RELAY_BIN not set (run via ctest)");
	snprintf(pg, sizeof(pg), "--pg-url=%s", pg_url);
	snprintf(rd, sizeof(rd), "--redis-url=%s", redis_url);
	proc_start_svc(p, argv);
	/* streaming or standby: the slot exists from here on, so every
	 * commit after this point is decoded */
	for (int i = 0; i < 200; i++) {
		char body[256];

		if (proc_http_get(p, "/healthz", body, sizeof(body)) == 200)
			return;
		usleep(25000);
	}
	cr_fatal("the relay did not reach the slot");
}

static void
start_relay(struct proc *p)
{
	start_relay_with(p, NULL);
}

static PGconn *
pg_connect(void)
{
	PGconn *c = PQconnectdb(pg_url);

	cr_assert(eq(i64, PQstatus(c), CONNECTION_OK), "%s", PQerrorMessage(c));
	return c;
}

static void
exec_ok(PGconn *c, const char *fmt, ...)
{
	char sql[512];
	va_list ap;
	PGresult *r;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	r = PQexec(c, sql);
	cr_assert(PQresultStatus(r) == PGRES_COMMAND_OK ||
			  PQresultStatus(r) == PGRES_TUPLES_OK,
		  "%s: %s", sql, PQresultErrorMessage(r));
	PQclear(r);
}

static const char OUTBOX_ROW[] =
	"INSERT INTO weft_outbox (tbl, id, space, version, op, deleted, "
	"data, client_id, mid, user_id) VALUES ('items', '%s', 's', 1, 1, "
	"false, '{\"n\": %ld}', '%s', %ld, 'u')";

/* the mids of the stream entries marked client_id = marker, in stream
 * order, and whether their IDs strictly increase */
static long
stream_mids(const char *marker, long *mids, long cap, bool *increasing)
{
	redisContext *r = redisConnect("127.0.0.1", atoi(redis_port));
	char last[64] = "-";
	long n = 0;
	uint64_t prev_ms = 0, prev_seq = 0;

	cr_assert(r && !r->err, "redis");
	*increasing = true;
	for (;;) {
		redisReply *rep = redisCommand(
			r, "XRANGE weft:changes %s + COUNT 1000", last);

		cr_assert_not_null(rep);
		cr_assert(eq(i64, rep->type, REDIS_REPLY_ARRAY));
		if (rep->elements == 0 ||
		    (rep->elements == 1 && strcmp(last, "-") != 0 &&
		     strcmp(rep->element[0]->element[0]->str, last) == 0)) {
			freeReplyObject(rep);
			break;
		}
		for (size_t i = 0; i < rep->elements; i++) {
			redisReply *e = rep->element[i], *f = e->element[1];
			unsigned long long ms, seq;
			struct stream_change sc;
			bool ok;

			if (strcmp(e->element[0]->str, last) == 0)
				continue; /* the page boundary */
			sscanf(e->element[0]->str, "%llu-%llu", &ms, &seq);
			if (ms < prev_ms || (ms == prev_ms && seq <= prev_seq))
				*increasing = false;
			prev_ms = ms;
			prev_seq = seq;
			snprintf(last, sizeof(last), "%s", e->element[0]->str);
			/* one field, "e": the change (proto/entry.h) */
			ok = f->elements == 2 &&
			     strcmp(f->element[0]->str, STREAM_FIELD) == 0 &&
			     stream_change_parse(
				     (const uint8_t *)f->element[1]->str,
				     f->element[1]->len, &sc) == 0;
			/* commit time in Unix ms, after 2023, and data */
			if (!ok || sc.when_ms < 1700000000000LL || !sc.data ||
			    ms == 0) {
				bad_entries++;
				continue;
			}
			if (sc.client.p && sc.client.len == strlen(marker) &&
			    memcmp(sc.client.p, marker, sc.client.len) == 0 &&
			    n < cap)
				mids[n++] = (long)sc.mid;
		}
		freeReplyObject(rep);
	}
	redisFree(r);
	return n;
}

/* wait until the stream holds want entries of marker (or 20 s) */
static long
wait_for(const char *marker, long want, long *mids, long cap, bool *inc)
{
	long n = 0;

	for (int i = 0; i < 200; i++) {
		n = stream_mids(marker, mids, cap, inc);
		if (n >= want)
			break;
		usleep(100000);
	}
	return n;
}

Test(relay, commit_order_not_sequence_order)
{
	struct proc r;
	PGconn *a = pg_connect(), *b = pg_connect(), *c = pg_connect();
	long mids[16];
	bool inc;

	start_relay(&r);
	/* A takes its outbox seq first and commits last */
	exec_ok(a, "BEGIN");
	exec_ok(a, OUTBOX_ROW, "a", 1L, "order", 1L);
	exec_ok(b, "BEGIN");
	exec_ok(b, OUTBOX_ROW, "b", 2L, "order", 2L);
	exec_ok(c, "BEGIN");
	exec_ok(c, OUTBOX_ROW, "c", 3L, "order", 3L);
	exec_ok(c, "COMMIT");
	exec_ok(b, "COMMIT");
	exec_ok(a, "COMMIT");
	cr_assert(eq(i64, wait_for("order", 3, mids, 16, &inc), 3),
		  "every commit delivered");
	cr_assert(inc, "stream IDs increase");
	cr_assert(mids[0] == 3 && mids[1] == 2 && mids[2] == 1,
		  "commit order: %ld %ld %ld", mids[0], mids[1], mids[2]);
	PQfinish(a);
	PQfinish(b);
	PQfinish(c);
	proc_stop(&r);
}

static int64_t
unix_us_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* an entry carries its commit time to the microsecond (w and f): each
 * lies between the moment its transaction was sent and its COMMIT's
 * answer, which whole milliseconds would miss by up to 999 µs */
Test(relay, entries_carry_the_commit_time_to_the_microsecond)
{
	enum { N = 20 };
	struct proc r;
	PGconn *c = pg_connect();
	int64_t before[N + 1], after[N + 1];
	redisContext *rc;
	redisReply *rep;
	long mids[N + 1];
	bool inc;
	int seen = 0, sub_ms = 0;

	start_relay(&r);
	for (long k = 1; k <= N; k++) {
		char id[16];

		snprintf(id, sizeof(id), "clk%ld", k);
		before[k] = unix_us_now();
		exec_ok(c, OUTBOX_ROW, id, k, "clock", k);
		after[k] = unix_us_now();
	}
	cr_assert(eq(i64, wait_for("clock", N, mids, N + 1, &inc), N));
	rc = redisConnect("127.0.0.1", atoi(redis_port));
	cr_assert(rc && !rc->err, "redis");
	rep = redisCommand(rc, "XRANGE weft:changes - +");
	cr_assert(rep && rep->type == REDIS_REPLY_ARRAY);
	for (size_t i = 0; i < rep->elements; i++) {
		redisReply *f = rep->element[i]->element[1];
		struct stream_change sc;
		int64_t when;

		if (f->elements != 2 ||
		    stream_change_parse((const uint8_t *)f->element[1]->str,
					f->element[1]->len, &sc) != 0 ||
		    !sc.client.p || sc.client.len != 5 ||
		    memcmp(sc.client.p, "clock", 5) != 0)
			continue;
		cr_assert(sc.mid >= 1 && sc.mid <= N);
		when = sc.when_ms * 1000 + sc.when_us;
		cr_assert(when >= before[sc.mid] && when <= after[sc.mid],
			  "commit %llu at %lld µs, sent at %lld, answered at "
			  "%lld",
			  (unsigned long long)sc.mid, (long long)when,
			  (long long)before[sc.mid], (long long)after[sc.mid]);
		sub_ms += sc.when_us != 0;
		seen++;
	}
	cr_assert(eq(int, seen, N));
	cr_assert(sub_ms > 0, "the microseconds are there");
	freeReplyObject(rep);
	redisFree(rc);
	PQfinish(c);
	proc_stop(&r);
}

/* the rows of marker (NULL: all) in the outbox (the truth, whatever the
 * writer saw) */
static long
outbox_count(const char *marker)
{
	PGconn *c = pg_connect();
	char sql[256];
	PGresult *r;
	long n;

	snprintf(sql, sizeof(sql), "SELECT count(*) FROM weft_outbox%s%s%s",
		 marker ? " WHERE client_id = '" : "", marker ? marker : "",
		 marker ? "'" : "");
	r = PQexec(c, sql);
	n = strtol(PQgetvalue(r, 0, 0), NULL, 10);
	PQclear(r);
	PQfinish(c);
	return n;
}

/* rows older than the retention are deleted, on the side: a change
 * committed while a long prune runs is relayed before the prune ends.
 * The relay reads the slot, so the rows it deletes were relayed all the
 * same. */
Test(relay, outbox_rows_are_pruned_on_the_side)
{
	static long mids[400];
	struct proc r;
	PGconn *c = pg_connect();
	bool inc, seen = false;
	long old_left = -1;
	uint64_t t0;

	/* 300,000 rows an hour old, written before the slot exists: only
	 * the pruning sees them */
	exec_ok(c, "INSERT INTO weft_outbox (tbl, id, space, version, op, "
		   "deleted, data, client_id, mid, user_id, created_at) "
		   "SELECT 'items', 'o' || g, 's', 1, 1, false, '{}', 'old', "
		   "g, 'u', now() - interval '1 hour' "
		   "FROM generate_series(1, 300000) g");
	start_relay_with(&r, "--outbox-retention=1s");
	t0 = clock_now_ms();
	while (outbox_count("old") == 300000 && clock_now_ms() - t0 < 10000)
		usleep(20000);
	exec_ok(c, OUTBOX_ROW, "probe", 1L, "probe", 1L);
	t0 = clock_now_ms();
	while (!seen && clock_now_ms() - t0 < 20000) {
		seen = stream_mids("probe", mids, 400, &inc) == 1;
		if (seen)
			old_left = outbox_count("old");
		else
			usleep(10000);
	}
	cr_log_info("old rows left when the probe was relayed: %ld", old_left);
	cr_assert(seen, "the probe was relayed");
	cr_assert(lt(i64, 0, old_left),
		  "relayed while the prune still ran (0 old rows left: it "
		  "waited for the prune)");
	/* rows written now go too, once past the retention */
	exec_ok(c, "INSERT INTO weft_outbox (tbl, id, space, version, op, "
		   "deleted, data, client_id, mid, user_id) SELECT 'items', "
		   "'p' || g, 's', 1, 1, false, jsonb_build_object('n', g), "
		   "'pruned', g, 'u' FROM generate_series(1, 300) g");
	cr_assert(eq(i64, wait_for("pruned", 300, mids, 400, &inc), 300),
		  "every row relayed");
	t0 = clock_now_ms();
	while (outbox_count(NULL) > 0 && clock_now_ms() - t0 < 30000)
		usleep(100000);
	cr_assert(eq(i64, outbox_count(NULL), 0),
		  "every row past the retention deleted");
	cr_assert(ge(i64, proc_metric(&r, "weft_relay_outbox_pruned_total"),
		     300301));
	cr_assert(eq(i64, wait_for("pruned", 300, mids, 400, &inc), 300),
		  "the stream keeps what was pruned from the table");
	PQfinish(c);
	proc_stop(&r);
}

/* a client transaction's outbox rows are pruned in one statement, all or
 * none: weft-write answers the resend of an acked mutation with them, and
 * part of them would be a wrong answer.  1,000 transactions of 30 rows,
 * past the retention; while they are pruned (5,000 rows at a time), no
 * transaction is ever seen with some of its rows gone. */
Test(relay, a_transactions_rows_are_pruned_together)
{
	PGconn *c = pg_connect();
	struct proc r;
	long split = 0, left = 1, polls = 0;
	uint64_t t0;

	exec_ok(c, "INSERT INTO weft_outbox (tbl, id, space, version, op, "
		   "deleted, data, client_id, mid, user_id, created_at) "
		   "SELECT 'items', 'w' || g, 's', 1, 1, false, '{}', 'whole', "
		   "(g - 1) / 30 + 1, 'u', now() - interval '1 hour' "
		   "FROM generate_series(1, 30000) g");
	start_relay_with(&r, "--outbox-retention=1s");
	t0 = clock_now_ms();
	while (left > 0 && split == 0 && clock_now_ms() - t0 < 30000) {
		PGresult *res = PQexec(
			c, "SELECT count(*) FILTER (WHERE n <> 30), "
			   "coalesce(sum(n), 0) FROM (SELECT count(*) n FROM "
			   "weft_outbox WHERE client_id = 'whole' GROUP BY "
			   "mid) x");

		cr_assert(eq(i64, PQresultStatus(res), PGRES_TUPLES_OK), "%s",
			  PQerrorMessage(c));
		split = strtol(PQgetvalue(res, 0, 0), NULL, 10);
		left = strtol(PQgetvalue(res, 0, 1), NULL, 10);
		PQclear(res);
		polls++;
	}
	cr_log_info("%ld polls while pruning", polls);
	cr_assert(eq(i64, split, 0),
		  "%ld transactions seen with part of their rows pruned",
		  split);
	cr_assert(eq(i64, left, 0), "every row past the retention deleted");
	PQfinish(c);
	proc_stop(&r);
}

Test(relay, a_backlog_drains_whole_and_in_order)
{
	static long mids[6000];
	struct proc r;
	PGconn *c = pg_connect();
	bool inc;
	long n;

	start_relay(&r); /* the slot exists from here on */
	proc_stop(&r);
	/* 5,000 rows in two commits while no relay runs: a backlog that
	 * Postgres sends in long runs */
	for (int b = 0; b < 2; b++)
		exec_ok(c,
			"INSERT INTO weft_outbox (tbl, id, space, version, op, "
			"deleted, data, client_id, mid, user_id) SELECT "
			"'items', 'b' || g, 's', 1, 1, false, "
			"jsonb_build_object('n', g), 'backlog', g, 'u' "
			"FROM generate_series(%d, %d) g",
			b * 2500 + 1, b * 2500 + 2500);
	PQfinish(c);
	/* pipelines of 700 in flight while more are decoded: pending
	 * entries outlive the growth of their array, and move up as
	 * answered ones leave its front */
	start_relay_with(&r, "--batch-max=700");
	bad_entries = 0;
	n = wait_for("backlog", 5000, mids, 6000, &inc);
	cr_assert(eq(i64, n, 5000), "all of the backlog (%ld)", n);
	cr_assert(inc, "stream IDs increase");
	for (long i = 0; i < n; i++)
		cr_assert(eq(i64, mids[i], i + 1), "entry %ld is mid %ld", i,
			  mids[i]);
	cr_assert(eq(i64, bad_entries, 0),
		  "entries with a bad id, commit time or data");
	cr_assert(proc_metric(&r, "weft_relay_rows_total") >= 5000,
		  "counted as added");
	proc_stop(&r);
}

static void *
writer_main(void *arg)
{
	struct writer *w = arg;
	PGconn *c = NULL;

	while (!w->stop) {
		char sql[512], id[32];
		PGresult *r;

		if (!c || PQstatus(c) != CONNECTION_OK) {
			PQfinish(c);
			c = PQconnectdb(pg_url);
			if (PQstatus(c) != CONNECTION_OK) {
				usleep(100000);
				continue;
			}
		}
		snprintf(id, sizeof(id), "w%ld", w->next);
		snprintf(sql, sizeof(sql), OUTBOX_ROW, id, w->next, w->marker,
			 w->next);
		r = PQexec(c, sql);
		if (PQresultStatus(r) == PGRES_COMMAND_OK)
			w->committed++;
		PQclear(r);
		w->next++; /* a failed one may or may not have committed */
		usleep(2000);
	}
	PQfinish(c);
	return NULL;
}

static int
cmp_long(const void *x, const void *y)
{
	long a = *(const long *)x, b = *(const long *)y;

	return (a > b) - (a < b);
}

/* every committed row of marker is in the stream, exactly once */
static void
check_exactly_once(const char *marker)
{
	static long mids[100000];
	long want = outbox_count(marker), n;
	bool inc;

	cr_assert(want > 100, "the writer wrote (%ld rows)", want);
	n = wait_for(marker, want, mids, 100000, &inc);
	cr_assert(inc, "stream IDs increase");
	qsort(mids, (size_t)n, sizeof(*mids), cmp_long);
	for (long i = 1; i < n; i++)
		cr_assert(mids[i] != mids[i - 1], "mid %ld twice", mids[i]);
	cr_assert(eq(i64, n, want), "stream has %ld of %ld committed rows", n,
		  want);
}

static bool
is_active(const struct proc *p)
{
	return proc_metric(p, "weft_relay_active") == 1;
}

Test(relay, kill9_of_the_active_relay_loses_nothing)
{
	struct proc r1, r2, *active, *standby;
	struct writer w = { .marker = "kill9", .next = 1 };
	uint64_t t0;
	int i;

	start_relay(&r1);
	start_relay(&r2);
	for (i = 0; i < 100 && !is_active(&r1) && !is_active(&r2); i++)
		usleep(50000);
	cr_assert(is_active(&r1) != is_active(&r2), "exactly one is active");
	active = is_active(&r1) ? &r1 : &r2;
	standby = active == &r1 ? &r2 : &r1;
	pthread_create(&w.thread, NULL, writer_main, &w);
	running = &w;
	usleep(700000);
	proc_kill9(active);
	t0 = clock_now_ms();
	while (!is_active(standby) && clock_now_ms() - t0 < 10000)
		usleep(20000);
	cr_assert(is_active(standby), "the standby took over");
	cr_assert(clock_now_ms() - t0 < 5000, "within 5 s (took %llu ms)",
		  (unsigned long long)(clock_now_ms() - t0));
	usleep(700000);
	w.stop = true;
	pthread_join(w.thread, NULL);
	running = NULL;
	check_exactly_once("kill9");
	/* the killed one comes back as the standby */
	start_relay(active);
	usleep(600000);
	cr_assert(is_active(standby), "still active");
	cr_assert(eq(i64, proc_metric(active, "weft_relay_active"), 0),
		  "the restarted one waits");
	proc_stop(active);
	proc_stop(standby);
}

Test(relay, redis_and_postgres_restarts_lose_nothing)
{
	struct proc r;
	struct writer w = { .marker = "restarts", .next = 1 };

	start_relay(&r);
	pthread_create(&w.thread, NULL, writer_main, &w);
	running = &w;
	usleep(600000);
	proc_stack_restart(dir, "run/redis.pid", SIGTERM);
	usleep(800000);
	proc_stack_restart(dir, "pg/data/postmaster.pid", SIGINT);
	usleep(1500000);
	w.stop = true;
	pthread_join(w.thread, NULL);
	running = NULL;
	check_exactly_once("restarts");
	cr_assert(proc_metric(&r, "weft_relay_active") == 1,
		  "the relay recovered by itself");
	proc_stop(&r);
}
