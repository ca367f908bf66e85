/*
 * client_test.c - libweft against the real services, every part a
 * process: a private Postgres and Redis, weft-write, weft-relay and two
 * weft-fanout nodes.  Clients are libweft stores; the server's rows are
 * read back from Postgres.
 *
 * It proves: commits made with every service down are visible at once,
 * survive a restart and reach the server exactly once; two clients editing
 * different fields of one record converge; a rejected transaction is
 * rolled back locally and reported while later ones land; kill -9 of a
 * client mid-commit and mid-push, 50 times, loses and duplicates nothing;
 * undo and redo reach every client; a client offline beyond the stream
 * window re-bootstraps and keeps its pending writes; bootstrap reports
 * progress; on-demand fetch works; a user over weft-write's rate is held
 * back and loses nothing.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <weft/weft.h>

#include "common/clock.h"
#include "services/shared/auth.h"
#include "tests/lib/proc.h"

#define WAIT_MS 20000

static struct proc_cluster cl;
static void
setup(void)
{
	/* a small window: the re-bootstrap test outruns it */
	const char *rextra[] = { "--stream-maxlen=1000", NULL };

	proc_cluster_up(&cl, "client", rextra);
}

static void
teardown(void)
{
	proc_cluster_down(&cl);
}

TestSuite(client, .init = setup, .fini = teardown, .timeout = 240);

/* ---- helpers ---- */

/* the options of a store named name in this suite's scratch dir, against
 * the running services; fanout_urls / nfanout as given */
struct opened {
	struct weft_options o;
	char path[256];
	char err[256];
};

static void
options(struct opened *op, const char *name, const char *const *fan,
	size_t nfan)
{
	memset(op, 0, sizeof(*op));
	snprintf(op->path, sizeof(op->path), "%s/%s.db", cl.tmp, name);
	op->o.path = op->path;
	op->o.schema_path = getenv("WEFT_DEMO_SCHEMA");
	op->o.write_url = cl.wr.url;
	op->o.fanout_urls = fan;
	op->o.nfanout = nfan;
	op->o.errbuf = op->err;
	op->o.errlen = sizeof(op->err);
}

struct client {
	weft_store *st;
	struct auth_minter minter; /* its token callback's */
	char path[256];
	char user[32];
	/* callbacks */
	int rejects, last_code;
	uint64_t last_mid;
	uint64_t progress_records, progress_calls;
	int progress_done;
	/* change notes about one id: how many said deleted */
	char watch[32];
	int watch_deleted;
};

static void
on_change(void *arg, const char *table, const char *id, uint64_t version,
	  int deleted, int origin)
{
	struct client *c = arg;

	(void)table;
	(void)version;
	(void)origin;
	if (deleted && strcmp(id, c->watch) == 0)
		__atomic_add_fetch(&c->watch_deleted, 1, __ATOMIC_SEQ_CST);
}

static void
on_reject(void *arg, uint64_t mid, int code, const char *msg, unsigned opnum,
	  const char *field)
{
	struct client *c = arg;

	(void)msg;
	(void)opnum;
	(void)field;
	c->rejects++;
	c->last_code = code;
	c->last_mid = mid;
}

static void
on_progress(void *arg, const char *space, uint64_t records, uint64_t bytes,
	    uint64_t total, int done)
{
	struct client *c = arg;

	(void)space;
	(void)bytes;
	(void)total;
	c->progress_calls++;
	c->progress_records = records;
	c->progress_done |= done;
}

/* open a store for user; write/fanout NULL = the running services; "down"
 * = a port where nothing listens */
static void
client_open(struct client *c, const char *name, const char *user,
	    const char *write_url, const char *fanout_url)
{
	struct weft_options o = { 0 };
	const char *fan[1];
	char err[256] = "", down[64];
	struct weft_callbacks cb = { 0 };
	int rc;

	snprintf(down, sizeof(down), "tcp://127.0.0.1:%d", proc_free_port());
	c->rejects = c->last_code = c->progress_done = 0;
	c->progress_calls = c->progress_records = 0;
	snprintf(c->path, sizeof(c->path), "%s/%s.db", cl.tmp, name);
	snprintf(c->user, sizeof(c->user), "%s", user);
	fan[0] = fanout_url ? (strcmp(fanout_url, "down") ? fanout_url : down)
			    : cl.fa.url;
	o.path = c->path;
	o.schema_path = getenv("WEFT_DEMO_SCHEMA");
	o.write_url = write_url ? (strcmp(write_url, "down") ? write_url : down)
				: cl.wr.url;
	o.fanout_urls = fan;
	o.nfanout = 1;
	c->minter = (struct auth_minter){ PROC_SECRET, c->user, "" };
	o.token_fn = auth_minter_token;
	o.token_arg = &c->minter;
	o.errbuf = err;
	o.errlen = sizeof(err);
	rc = weft_open(&o, &c->st);
	cr_assert(eq(int, rc, 0), "weft_open: %s", err);
	cb.reject = on_reject;
	cb.progress = on_progress;
	cb.change = on_change;
	cb.arg = c;
	weft_set_callbacks(c->st, &cb);
}

static void
client_close(struct client *c)
{
	weft_close(c->st);
	c->st = NULL;
}

/* the mid of the last COMMIT */
static uint64_t committed;

/* one op in its own transaction (the op call sees the txn as tx_) */
#define COMMIT(c, call)                                                     \
	do {                                                                \
		weft_txn *tx_;                                              \
		int rc_;                                                    \
		cr_assert(eq(int, weft_begin((c)->st, &tx_), 0));           \
		rc_ = (call);                                               \
		cr_assert(eq(int, rc_, 0), "%s", weft_last_error((c)->st)); \
		rc_ = weft_commit(tx_, &committed);                         \
		cr_assert(eq(int, rc_, 0), "commit: %s",                    \
			  weft_last_error((c)->st));                        \
	} while (0)

static void
synced(struct client *c)
{
	int rc = weft_wait_synced(c->st, WAIT_MS);

	cr_assert(eq(int, rc, 0), "%s not in sync: state %s", c->path,
		  weft_state_name(weft_state(c->st)));
}

static char *
local(struct client *c, const char *id)
{
	char *json = NULL;

	return weft_get(c->st, "issues", id, &json, NULL, NULL) == 0 ? json
								     : NULL;
}

/* the same JSON value (key order aside: the server's jsonb has its own) */
static bool
json_same(const char *a, const char *b)
{
	json_t *x = json_loads(a, JSON_DECODE_ANY, NULL);
	json_t *y = json_loads(b, JSON_DECODE_ANY, NULL);
	bool eq = x && y && json_equal(x, y);

	json_decref(x);
	json_decref(y);
	return eq;
}

/* wait until the client's view of issues/id is want (or time out) */
static bool
wait_local(struct client *c, const char *id, const char *want)
{
	for (uint64_t until = clock_now_ms() + WAIT_MS; clock_now_ms() < until;
	     usleep(20000)) {
		char *got = local(c, id);
		bool same = got && want && json_same(got, want);

		weft_free(got);
		if (same || (!want && !got))
			return true;
	}
	return false;
}

/* the first value sql returns, from this suite's Postgres */
static void
pg_val(const char *sql, char *out, size_t cap)
{
	proc_pg_value(cl.pg_url, sql, out, cap);
}

/* alice creates team sp with bob as a writer, and both follow it */
static void
team(struct client *alice, const char *sp)
{
	char m[64];

	snprintf(m, sizeof(m), "%s:bob", sp);
	COMMIT(alice, weft_create(tx_, "spaces", sp, sp, "{\"name\":\"t\"}"));
	COMMIT(alice, weft_create(tx_, "members", m, sp,
				  "{\"user\":\"bob\",\"role\":\"writer\"}"));
	synced(alice);
}

/* ---- tests ---- */

Test(client, offline_commits_are_local_at_once_and_land_exactly_once)
{
	struct client a = { 0 }, b = { 0 };
	char v[64], *got;

	client_open(&a, "alice", "alice", NULL, NULL);
	team(&a, "off");
	client_close(&a);
	/* every service out of reach */
	client_open(&b, "bob", "bob", "down", "down");
	COMMIT(&b, weft_create(tx_, "issues", "o1", "off",
			       "{\"title\":\"made offline\"}"));
	COMMIT(&b, weft_set(tx_, "issues", "o1", "status", "\"todo\""));
	COMMIT(&b, weft_incr(tx_, "issues", "o1", "priority", "2"));
	got = local(&b, "o1");
	cr_assert_not_null(got, "visible at once");
	cr_assert_not_null(strstr(got, "\"todo\""));
	weft_free(got);
	cr_assert(eq(int, weft_wait_synced(b.st, 300), WEFT_ETIMEDOUT));
	cr_assert(eq(u64, weft_pending(b.st), 3));
	client_close(&b);
	/* back online after a restart */
	client_open(&b, "bob", "bob", NULL, NULL);
	cr_assert(eq(u64, weft_pending(b.st), 3), "the queue survived");
	synced(&b);
	cr_assert(eq(u64, weft_pending(b.st), 0));
	pg_val("SELECT version || ' ' || (data->>'status') || ' ' ||"
	       " (data->>'priority') FROM weft_records"
	       " WHERE tbl = 'issues' AND id = 'o1'",
	       v, sizeof(v));
	cr_assert_str_eq(v, "3 todo 2", "each op applied once");
	{
		char q[256], mid[32];

		snprintf(
			q, sizeof(q),
			"SELECT last_mid FROM weft_clients WHERE client_id = '%s'",
			weft_client_id(b.st));
		pg_val(q, mid, sizeof(mid));
		cr_assert_str_eq(mid, "3");
	}
	/* the local row now carries the server's version */
	{
		uint64_t ver = 0;

		cr_assert(eq(int,
			     weft_get(b.st, "issues", "o1", NULL, &ver, NULL),
			     0));
		cr_assert(eq(u64, ver, 3));
	}
	client_close(&b);
}

Test(client, two_clients_editing_different_fields_converge)
{
	struct client a = { 0 }, b = { 0 };
	char *ga, *gb, v[512];

	client_open(&a, "alice", "alice", NULL, NULL);
	team(&a, "conv");
	client_open(&b, "bob", "bob", NULL, cl.fb.url); /* the other node */
	cr_assert(eq(int, weft_subscribe_space(a.st, "conv"), 0));
	cr_assert(eq(int, weft_subscribe_space(b.st, "conv"), 0));
	COMMIT(&a, weft_create(tx_, "issues", "c1", "conv",
			       "{\"title\":\"start\"}"));
	synced(&a);
	synced(&b);
	cr_assert(wait_local(&b, "c1",
			     "{\"title\":\"start\",\"description\":\"\","
			     "\"status\":\"backlog\",\"priority\":0,"
			     "\"assignee\":null,\"labels\":[]}"),
		  "bob sees the create");
	/* both edit at once, different fields */
	COMMIT(&a, weft_set(tx_, "issues", "c1", "title", "\"by alice\""));
	COMMIT(&b, weft_set(tx_, "issues", "c1", "status", "\"done\""));
	synced(&a);
	synced(&b);
	pg_val("SELECT data::text FROM weft_records WHERE id = 'c1'", v,
	       sizeof(v));
	cr_assert_not_null(strstr(v, "by alice"), "%s", v);
	cr_assert_not_null(strstr(v, "done"), "%s", v);
	/* each hears of the other's edit and ends at the server's row */
	cr_assert(wait_local(&a, "c1", v), "alice converges to the server");
	cr_assert(wait_local(&b, "c1", v), "bob converges to the server");
	ga = local(&a, "c1");
	gb = local(&b, "c1");
	cr_assert_str_eq(ga, gb);
	cr_assert_not_null(strstr(gb, "by alice"), "%s", gb);
	cr_assert_not_null(strstr(gb, "done"), "%s", gb);
	weft_free(ga);
	weft_free(gb);
	client_close(&a);
	client_close(&b);
}

/* alice's team `from` (bob a writer, following it) and her own space
 * `to`; in `from`, record `leaves` (to be moved) and `stays`, both at bob */
static void
two_spaces(struct client *a, struct client *b, const char *from, const char *to,
	   const char *leaves, const char *stays)
{
	char *got;

	client_open(a, "alice", "alice", NULL, NULL);
	team(a, from);
	COMMIT(a, weft_create(tx_, "spaces", to, to, "{\"name\":\"t\"}"));
	cr_assert(eq(int, weft_subscribe_space(a->st, from), 0));
	cr_assert(eq(int, weft_subscribe_space(a->st, to), 0));
	client_open(b, "bob", "bob", NULL, NULL);
	cr_assert(eq(int, weft_subscribe_space(b->st, from), 0));
	COMMIT(a, weft_create(tx_, "issues", leaves, from,
			      "{\"title\":\"leaves\"}"));
	COMMIT(a, weft_create(tx_, "issues", stays, from,
			      "{\"title\":\"stays\"}"));
	synced(a);
	synced(b);
	cr_assert(wait_local(b, stays,
			     "{\"title\":\"stays\",\"description\":\"\","
			     "\"status\":\"backlog\",\"priority\":0,"
			     "\"assignee\":null,\"labels\":[]}"),
		  "bob has %s", stays);
	got = local(b, leaves);
	cr_assert_not_null(got, "bob has %s", leaves);
	weft_free(got);
}

/* a record moved into a space bob does not follow leaves bob's store (it
 * used to stay in the old space for good); alice, who follows both, has
 * it in the new one */
Test(client, a_record_moved_out_of_sight_leaves_the_store)
{
	struct client a = { 0 }, b = { 0 };
	char *ga;

	two_spaces(&a, &b, "mvfrom", "mvto", "mv1", "mv2");
	COMMIT(&a,
	       weft_put(tx_, "issues", "mv1", "mvto", "{\"title\":\"moved\"}"));
	synced(&a);
	cr_assert(wait_local(&b, "mv1", NULL), "mv1 left bob's store");
	ga = local(&b, "mv2");
	cr_assert_not_null(ga, "the other record stays");
	weft_free(ga);
	ga = local(&a, "mv1");
	cr_assert_not_null(ga);
	cr_assert_not_null(strstr(ga, "moved"), "%s", ga);
	weft_free(ga);
	client_close(&a);
	client_close(&b);
}

/* a record subscription to a record the server no longer has (its
 * tombstone deleted after --tombstone-ttl, so no push will come) is
 * refused, and the local copy leaves the store, as the tombstone would
 * have taken it */
Test(client, a_record_the_server_no_longer_has_leaves_the_store)
{
	struct client a = { 0 };
	char n[16], *got;

	client_open(&a, "gone", "alice", NULL, NULL);
	team(&a, "gonesp");
	cr_assert(eq(int, weft_subscribe_space(a.st, "gonesp"), 0));
	COMMIT(&a, weft_create(tx_, "issues", "gone-1", "gonesp",
			       "{\"title\":\"here\"}"));
	COMMIT(&a, weft_create(tx_, "issues", "gone-2", "gonesp",
			       "{\"title\":\"stays\"}"));
	synced(&a);
	got = local(&a, "gone-1");
	cr_assert_not_null(got);
	weft_free(got);
	/* gone from the server without a push, as the deletion of an old
	 * tombstone leaves a client that missed the tombstone itself */
	pg_val("WITH d AS (DELETE FROM weft_records WHERE tbl = 'issues' "
	       "AND id = 'gone-1' RETURNING 1) SELECT count(*) FROM d",
	       n, sizeof(n));
	cr_assert_str_eq(n, "1");
	cr_assert(eq(int, weft_subscribe_record(a.st, "issues", "gone-1"), 0));
	cr_assert(wait_local(&a, "gone-1", NULL), "dropped from the store");
	got = local(&a, "gone-2");
	cr_assert_not_null(got, "the other record stays");
	weft_free(got);
	client_close(&a);
}

/*
 * A space the user is refused (not a member yet) loads once an admin adds
 * them, without waiting for the client's own next try. That try comes 2 s
 * after the first refusal, then 4 s after the second: not before 6 s. The
 * member is added at 2.3 s, and the space must have loaded by 5.5 s, which
 * only the fanout's unasked grant can do.
 */
Test(client, a_member_added_later_gets_the_space_without_asking_again)
{
	struct client a = { 0 }, c = { 0 };
	uint64_t t0;
	char v[256];

	client_open(&a, "late-a", "alice", NULL, NULL);
	team(&a, "late");
	COMMIT(&a, weft_create(tx_, "issues", "late-1", "late",
			       "{\"title\":\"before carol\"}"));
	synced(&a);
	pg_val("SELECT data::text FROM weft_records WHERE id = 'late-1'", v,
	       sizeof(v));
	client_open(&c, "late-c", "carol", NULL, NULL);
	cr_assert(eq(int, weft_subscribe_space(c.st, "late"), 0));
	for (t0 = clock_now_ms(); clock_now_ms() < t0 + WAIT_MS &&
				  weft_space_status(c.st, "late") != WEFT_EPERM;
	     usleep(20000))
		;
	cr_assert(eq(int, weft_space_status(c.st, "late"), WEFT_EPERM));
	t0 = clock_now_ms();
	usleep(2300000); /* refused again at 2 s; the next try at 6 s */
	COMMIT(&a, weft_create(tx_, "members", "late:carol", "late",
			       "{\"user\":\"carol\",\"role\":\"reader\"}"));
	cr_assert(wait_local(&c, "late-1", v), "the space loads");
	cr_assert(lt(u64, clock_now_ms() - t0, 5500),
		  "granted unasked: %llu ms after the first refusal",
		  (unsigned long long)(clock_now_ms() - t0));
	cr_assert(eq(int, weft_space_status(c.st, "late"), 0));
	COMMIT(&a, weft_set(tx_, "issues", "late-1", "title", "\"after\""));
	synced(&a);
	pg_val("SELECT data::text FROM weft_records WHERE id = 'late-1'", v,
	       sizeof(v));
	cr_assert(wait_local(&c, "late-1", v), "and live from then on");
	client_close(&a);
	client_close(&c);
}

/*
 * weft_unsubscribe_space() tells the fanout: pushes for that space stop.
 * bob follows two spaces and drops one; alice then edits a record of each,
 * the dropped one first. When bob has the second edit, a push of the first
 * (earlier in the stream) would have come before it.
 */
Test(client, an_unsubscribed_space_gets_no_more_pushes)
{
	struct client a = { 0 }, b = { 0 };
	char *got;

	client_open(&a, "unsub-a", "alice", NULL, NULL);
	team(&a, "unsub1");
	team(&a, "unsub2");
	COMMIT(&a, weft_create(tx_, "issues", "u1", "unsub1",
			       "{\"title\":\"one\"}"));
	COMMIT(&a, weft_create(tx_, "issues", "u2", "unsub2",
			       "{\"title\":\"two\"}"));
	synced(&a);
	client_open(&b, "unsub-b", "bob", NULL, NULL);
	cr_assert(eq(int, weft_subscribe_space(b.st, "unsub1"), 0));
	cr_assert(eq(int, weft_subscribe_space(b.st, "unsub2"), 0));
	synced(&b);
	got = local(&b, "u1");
	cr_assert_not_null(got);
	weft_free(got);
	cr_assert(eq(int, weft_unsubscribe_space(b.st, "unsub1"), 0));
	synced(&b);
	COMMIT(&a, weft_set(tx_, "issues", "u1", "title", "\"one, later\""));
	COMMIT(&a, weft_set(tx_, "issues", "u2", "title", "\"two, later\""));
	synced(&a);
	for (uint64_t until = clock_now_ms() + WAIT_MS; clock_now_ms() < until;
	     usleep(20000)) {
		bool seen;

		got = local(&b, "u2");
		seen = got && strstr(got, "two, later");
		weft_free(got);
		if (seen)
			break;
	}
	got = local(&b, "u2");
	cr_assert(got && strstr(got, "two, later"), "the followed space moves");
	weft_free(got);
	got = local(&b, "u1");
	cr_assert(got && !strstr(got, "later"), "the dropped one does not: %s",
		  got ? got : "(none)");
	weft_free(got);
	client_close(&a);
	client_close(&b);
}

Test(client, a_rejected_transaction_rolls_back_and_later_ones_land)
{
	struct client a = { 0 };
	weft_txn *tx;
	uint64_t bad = 0, good;
	char v[64];

	client_open(&a, "alice", "alice", NULL, NULL);
	team(&a, "rej");
	cr_assert(eq(int, weft_subscribe_space(a.st, "rej"), 0));
	COMMIT(&a, weft_create(tx_, "issues", "r1", "rej",
			       "{\"title\":\"server\"}"));
	COMMIT(&a, weft_create(tx_, "issues", "r2", "rej",
			       "{\"title\":\"other\"}"));
	synced(&a);
	/* committed with weft-write out of reach, so that the optimistic
	 * state is seen before any answer can roll it back */
	client_close(&a);
	client_open(&a, "alice", "alice", "down", NULL);
	/* a conflict: expects a version the record is not at */
	cr_assert(eq(int, weft_begin(a.st, &tx), 0));
	cr_assert(
		eq(int, weft_set(tx, "issues", "r1", "title", "\"mine\""), 0));
	cr_assert(eq(int, weft_expect(tx, 99), 0));
	cr_assert(eq(int, weft_commit(tx, &bad), 0));
	COMMIT(&a, weft_set(tx_, "issues", "r2", "title", "\"later\""));
	good = committed;
	{
		char *g = local(&a, "r1");

		cr_assert(g && strstr(g, "mine"), "optimistic at first: %s",
			  g ? g : "(none)");
		weft_free(g);
	}
	client_close(&a);
	client_open(&a, "alice", "alice", NULL, NULL);
	synced(&a);
	cr_assert(eq(int, a.rejects, 1));
	cr_assert(eq(int, a.last_code, WEFT_ECONFLICT));
	cr_assert(eq(u64, a.last_mid, bad));
	cr_assert(wait_local(&a, "r1",
			     "{\"title\":\"server\",\"description\":\"\","
			     "\"status\":\"backlog\",\"priority\":0,"
			     "\"assignee\":null,\"labels\":[]}"),
		  "rolled back to the server's row");
	pg_val("SELECT data->>'title' FROM weft_records WHERE id = 'r2'", v,
	       sizeof(v));
	cr_assert_str_eq(v, "later", "mid %llu landed",
			 (unsigned long long)good);
	client_close(&a);
}

Test(client, undo_and_redo_reach_every_client)
{
	struct client a = { 0 }, b = { 0 };

	client_open(&a, "alice", "alice", NULL, NULL);
	team(&a, "undo");
	client_open(&b, "bob", "bob", NULL, cl.fb.url);
	cr_assert(eq(int, weft_subscribe_space(b.st, "undo"), 0));
	COMMIT(&a,
	       weft_create(tx_, "issues", "u1", "undo", "{\"title\":\"one\"}"));
	COMMIT(&a, weft_set(tx_, "issues", "u1", "title", "\"two\""));
	synced(&a);
	cr_assert(eq(int, weft_undo(a.st, NULL), 0));
	synced(&a);
	cr_assert(wait_local(&b, "u1",
			     "{\"title\":\"one\",\"description\":\"\","
			     "\"status\":\"backlog\",\"priority\":0,"
			     "\"assignee\":null,\"labels\":[]}"),
		  "bob sees the undo");
	cr_assert(eq(int, weft_redo(a.st, NULL), 0));
	synced(&a);
	cr_assert(wait_local(&b, "u1",
			     "{\"title\":\"two\",\"description\":\"\","
			     "\"status\":\"backlog\",\"priority\":0,"
			     "\"assignee\":null,\"labels\":[]}"),
		  "bob sees the redo");
	client_close(&a);
	client_close(&b);
}

/* alice writes n records p<first>..p<first+n-1> into space sp: far more
 * than the stream keeps (--stream-maxlen=1000); then bob reopens, and
 * the fanout, unable to catch him up, makes the space load again */
static void
past_the_window(struct client *a, struct client *b, const char *sp,
		const char *p, int first, int n)
{
	for (int i = first; i < first + n; i++) {
		char id[16];

		snprintf(id, sizeof(id), "%s%d", p, i);
		COMMIT(a,
		       weft_create(tx_, "issues", id, sp, "{\"title\":\"x\"}"));
	}
	synced(a);
	client_open(b, "bob", "bob", NULL, NULL);
	synced(b);
	cr_assert(b->progress_done, "a bootstrap ran to its end");
}

Test(client, offline_beyond_the_window_rebootstraps_and_keeps_writes)
{
	struct client a = { 0 }, b = { 0 };
	char want[256];

	client_open(&a, "alice", "alice", NULL, NULL);
	team(&a, "win");
	cr_assert(eq(int, weft_subscribe_space(a.st, "win"), 0));
	client_open(&b, "bob", "bob", NULL, NULL);
	cr_assert(eq(int, weft_subscribe_space(b.st, "win"), 0));
	COMMIT(&a,
	       weft_create(tx_, "issues", "w0", "win", "{\"title\":\"zero\"}"));
	synced(&a);
	synced(&b);
	cr_assert(wait_local(&b, "w0",
			     "{\"title\":\"zero\",\"description\":\"\","
			     "\"status\":\"backlog\",\"priority\":0,"
			     "\"assignee\":null,\"labels\":[]}"));
	client_close(&b);
	/* bob offline: an edit of his own, then far more changes than the
	 * stream keeps (--stream-maxlen=1000) */
	client_open(&b, "bob", "bob", "down", "down");
	COMMIT(&b, weft_set(tx_, "issues", "w0", "status", "\"todo\""));
	client_close(&b);
	past_the_window(&a, &b, "win", "w", 1, 1500);
	cr_assert(ge(u64, b.progress_records, 1501), "%llu records loaded",
		  (unsigned long long)b.progress_records);
	cr_assert(wait_local(&b, "w1500",
			     "{\"title\":\"x\",\"description\":\"\","
			     "\"status\":\"backlog\",\"priority\":0,"
			     "\"assignee\":null,\"labels\":[]}"),
		  "bob has the changes the window lost");
	snprintf(want, sizeof(want),
		 "{\"title\":\"zero\",\"description\":\"\",\"status\":"
		 "\"todo\",\"priority\":0,\"assignee\":null,\"labels\":[]}");
	cr_assert(wait_local(&b, "w0", want), "and his own edit");
	cr_assert(wait_local(&a, "w0", want), "which reached alice");
	client_close(&a);
	client_close(&b);
}

/* a record moved out of bob's space while he was away past the change
 * log: the space loads again, and the record's old copy goes (it used to
 * stay for good); the records still there stay */
Test(client, a_space_loaded_again_drops_what_left_it_meanwhile)
{
	struct client a = { 0 }, b = { 0 };
	char *got;

	two_spaces(&a, &b, "swp", "swq", "s0", "s1");
	client_close(&b);
	/* bob away: s0 moves to a space he is not in, then far more
	 * changes than the stream keeps (--stream-maxlen=1000) */
	COMMIT(&a,
	       weft_put(tx_, "issues", "s0", "swq", "{\"title\":\"moved\"}"));
	past_the_window(&a, &b, "swp", "s", 2, 1499);
	cr_assert(wait_local(&b, "s0", NULL), "s0 left bob's store");
	got = local(&b, "s1");
	cr_assert_not_null(got, "s1 stays");
	weft_free(got);
	got = local(&b, "s1500");
	cr_assert_not_null(got, "the new records came");
	weft_free(got);
	client_close(&a);
	client_close(&b);
}

/*
 * A record that moved between two spaces the store follows, while the
 * store was away past the change log, just moves: both spaces load again,
 * the one it left first (keys load in order), and the store never reports
 * it deleted on the way.
 */
Test(client, a_record_moved_between_followed_spaces_is_never_reported_gone)
{
	struct client a = { 0 }, b = { 0 };
	uint64_t ver = 0;
	char v[256];

	client_open(&a, "mv-a", "alice", NULL, NULL);
	team(&a, "mvp1");
	team(&a, "mvp2");
	COMMIT(&a, weft_create(tx_, "issues", "mvr", "mvp1",
			       "{\"title\":\"moves\"}"));
	synced(&a);
	client_open(&b, "bob", "bob", NULL, NULL);
	cr_assert(eq(int, weft_subscribe_space(b.st, "mvp1"), 0));
	cr_assert(eq(int, weft_subscribe_space(b.st, "mvp2"), 0));
	synced(&b);
	cr_assert(
		eq(int, weft_get(b.st, "issues", "mvr", NULL, NULL, NULL), 0));
	client_close(&b);
	COMMIT(&a,
	       weft_put(tx_, "issues", "mvr", "mvp2", "{\"title\":\"moved\"}"));
	snprintf(b.watch, sizeof(b.watch), "mvr");
	past_the_window(&a, &b, "mvp1", "mv", 1, 1499);
	pg_val("SELECT data::text FROM weft_records WHERE id = 'mvr'", v,
	       sizeof(v));
	cr_assert(wait_local(&b, "mvr", v), "bob has it, moved: %s", v);
	cr_assert(
		eq(int, weft_get(b.st, "issues", "mvr", NULL, &ver, NULL), 0));
	cr_assert(eq(int, b.watch_deleted, 0), "never reported deleted");
	client_close(&a);
	client_close(&b);
}

Test(client, bootstrap_reports_progress_and_fetch_works_on_demand)
{
	struct client a = { 0 }, b = { 0 };
	const char *ids[] = { "f7" };
	char *got;

	client_open(&a, "alice", "alice", NULL, NULL);
	team(&a, "boot");
	for (int i = 0; i < 50; i++) {
		char id[16];

		snprintf(id, sizeof(id), "f%d", i);
		COMMIT(&a, weft_create(tx_, "issues", id, "boot",
				       "{\"title\":\"f\"}"));
	}
	synced(&a);
	client_open(&b, "bob", "bob", NULL, NULL);
	/* on demand, without a subscription */
	cr_assert_null(local(&b, "f7"));
	cr_assert(eq(int, weft_fetch(b.st, "issues", ids, 1, WAIT_MS), 0));
	got = local(&b, "f7");
	cr_assert_not_null(got, "fetched");
	weft_free(got);
	cr_assert_null(local(&b, "f8"), "only what was asked for");
	cr_assert(eq(int, weft_subscribe_space(b.st, "boot"), 0));
	synced(&b);
	cr_assert(b.progress_done);
	cr_assert(ge(u64, b.progress_records, 50), "%llu records",
		  (unsigned long long)b.progress_records);
	got = local(&b, "f49");
	cr_assert_not_null(got);
	weft_free(got);
	client_close(&a);
	client_close(&b);
}

/* the crash helper: a separate process killed at random moments */
Test(client, kill_9_mid_commit_and_mid_push_loses_and_duplicates_nothing)
{
	struct client a = { 0 };
	const char *helper = getenv("WEFT_TEST_CRASH_BIN");
	char path[256], count[32], mid[32], q[256], client_id[64];
	unsigned seed = (unsigned)time(NULL);

	cr_assert_not_null(helper, "WEFT_TEST_CRASH_BIN not set");
	client_open(&a, "crash", "alice", NULL, NULL);
	team(&a, "crash");
	COMMIT(&a, weft_create(tx_, "issues", "k", "crash",
			       "{\"title\":\"counter\",\"priority\":0}"));
	synced(&a);
	snprintf(path, sizeof(path), "%s", a.path);
	snprintf(client_id, sizeof(client_id), "%s", weft_client_id(a.st));
	client_close(&a);
	for (int i = 0; i < 50; i++) {
		pid_t pid = fork();

		if (pid == 0) {
			execl(helper, helper, path, getenv("WEFT_DEMO_SCHEMA"),
			      cl.wr.url, cl.fa.url, PROC_SECRET, "run", NULL);
			_exit(127);
		}
		cr_assert(lt(int, 0, pid));
		usleep(20000 + (useconds_t)(rand_r(&seed) % 150000));
		kill(pid, SIGKILL);
		waitpid(pid, NULL, 0);
	}
	/* once more, to the end: it syncs and says how many it committed */
	{
		pid_t pid = fork();
		int status = 0;

		if (pid == 0) {
			execl(helper, helper, path, getenv("WEFT_DEMO_SCHEMA"),
			      cl.wr.url, cl.fa.url, PROC_SECRET, "sync", NULL);
			_exit(127);
		}
		waitpid(pid, &status, 0);
		cr_assert(eq(int, status, 0), "the last run synced");
	}
	/* every mid of this client is one incr by 1 of issues/k, except the
	 * first three: the team (two) and the create */
	snprintf(q, sizeof(q),
		 "SELECT last_mid FROM weft_clients WHERE client_id = '%s'",
		 client_id);
	pg_val(q, mid, sizeof(mid));
	pg_val("SELECT data->>'priority' FROM weft_records"
	       " WHERE tbl = 'issues' AND id = 'k'",
	       count, sizeof(count));
	cr_assert(lt(int, 53, atoi(mid)), "commits happened");
	cr_assert(eq(int, atoi(count), atoi(mid) - 3),
		  "%s increments for %s mutations: each committed increment "
		  "applied exactly once",
		  count, mid);
	/* and the store agrees: nothing left queued, the same value */
	client_open(&a, "crash", "alice", NULL, NULL);
	synced(&a);
	cr_assert(eq(u64, weft_pending(a.st), 0));
	{
		char *g = local(&a, "k"), want[64];

		snprintf(want, sizeof(want), "\"priority\":%s", count);
		cr_assert_not_null(strstr(g, want), "%s vs %s", g, count);
		weft_free(g);
	}
	client_close(&a);
}

/* the program in docs/client.md, built from the document, against the
 * services */
Test(client, the_documented_example_runs)
{
	struct client a = { 0 };
	const char *bin = getenv("WEFT_TEST_EXAMPLE_BIN");
	char cmd[2048], out[4096] = "", v[64], *tok;
	size_t len = 0;
	FILE *p;
	int status;

	cr_assert_not_null(bin, "WEFT_TEST_EXAMPLE_BIN not set");
	client_open(&a, "alice", "alice", NULL, NULL);
	team(&a, "docs");
	client_close(&a);
	tok = auth_mint_hs256(PROC_SECRET, "alice", (int64_t)time(NULL), 3600);
	snprintf(cmd, sizeof(cmd),
		 "WEFT_WRITE_URL='%s' WEFT_FANOUT_URL='%s' WEFT_TOKEN='%s' "
		 "WEFT_SPACE=docs WEFT_SCHEMA='%s' WEFT_STORE='%s/example.db' "
		 "'%s' 2>&1",
		 cl.wr.url, cl.fa.url, tok, getenv("WEFT_DEMO_SCHEMA"), cl.tmp,
		 bin);
	free(tok);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	while (len < sizeof(out) - 1) {
		size_t n = fread(out + len, 1, sizeof(out) - 1 - len, p);

		if (n == 0)
			break;
		len += n;
	}
	status = pclose(p);
	cr_assert(eq(int, status, 0), "the example failed:\n%s", out);
	cr_assert_not_null(strstr(out, "(version 0, 1 pending)"), "%s", out);
	cr_assert_not_null(strstr(out, "(version 1, 0 pending)"), "%s", out);
	cr_assert_not_null(strstr(out, "state: live"), "%s", out);
	pg_val("SELECT count(*) FROM weft_records WHERE space = 'docs'"
	       " AND tbl = 'issues' AND data->>'status' = 'todo'",
	       v, sizeof(v));
	cr_assert_str_eq(v, "1", "%s", out);
}

/* a token callback that hands out an expired token first */
static int token_calls;
static char alice_name[] = "alice";

static const char *
stale_then_fresh(void *arg)
{
	static char tok[1024];
	int64_t now = (int64_t)time(NULL);
	char *t = auth_mint_hs256(PROC_SECRET, arg,
				  token_calls++ == 0 ? now - 7200 : now, 3600);

	snprintf(tok, sizeof(tok), "%s", t ? t : "");
	free(t);
	return tok;
}

struct states {
	atomic_int seen[8]; /* bumped on the client's thread */
};

static void
on_state(void *arg, int state, const char *detail)
{
	struct states *s = arg;

	(void)detail;
	if (state >= 0 && state < 8)
		atomic_fetch_add(&s->seen[state], 1);
}

Test(client, an_expired_token_is_replaced_through_the_callback)
{
	const char *fan[1] = { cl.fa.url };
	struct opened op;
	weft_store *st;
	struct states states = { { 0 } };
	struct weft_callbacks cb = { .state = on_state, .arg = &states };

	options(&op, "tok", fan, 1);
	op.o.token_fn = stale_then_fresh;
	op.o.token_arg = alice_name;
	token_calls = 0;
	cr_assert(eq(int, weft_open(&op.o, &st), 0), "%s", op.err);
	weft_set_callbacks(st, &cb);
	cr_assert(eq(int, weft_wait_synced(st, WAIT_MS), 0),
		  "synced with the second token");
	cr_assert(ge(int, token_calls, 2), "the callback was asked again");
	cr_assert(eq(int, weft_state(st), WEFT_LIVE));
	weft_close(st);
}

Test(client, a_refused_token_waits_for_weft_set_token)
{
	const char *fan[1] = { cl.fa.url };
	struct opened op;
	char *good;
	weft_store *st;
	struct states states = { { 0 } };
	struct weft_callbacks cb = { .state = on_state, .arg = &states };

	options(&op, "auth", fan, 1);
	op.o.token = "not.a.token";
	cr_assert(eq(int, weft_open(&op.o, &st), 0), "%s", op.err);
	weft_set_callbacks(st, &cb);
	for (int i = 0; i < 200 && weft_state(st) != WEFT_NEEDS_AUTH; i++)
		usleep(25000);
	cr_assert(eq(int, weft_state(st), WEFT_NEEDS_AUTH));
	cr_assert(eq(int, weft_wait_synced(st, 300), WEFT_ETIMEDOUT));
	good = auth_mint_hs256(PROC_SECRET, "alice", (int64_t)time(NULL), 3600);
	cr_assert(eq(int, weft_set_token(st, good), 0));
	free(good);
	cr_assert(eq(int, weft_wait_synced(st, WAIT_MS), 0));
	/* the callback comes on the client's thread, maybe just after */
	for (int i = 0; i < 400 && atomic_load(&states.seen[WEFT_LIVE]) == 0;
	     i++)
		usleep(25000);
	cr_assert(lt(int, 0, atomic_load(&states.seen[WEFT_LIVE])),
		  "a LIVE state callback");
	weft_close(st);
}

Test(client, a_draining_fanout_node_sends_the_client_to_the_next)
{
	struct client a = { 0 }, b = { 0 };
	const char *fan[2] = { cl.fa.url, cl.fb.url };
	struct opened op;

	client_open(&a, "alice", "alice", NULL, cl.fb.url);
	team(&a, "drain");
	/* bob follows the space through fanout-a, then fanout-b */
	snprintf(b.user, sizeof(b.user), "bob");
	options(&op, "bob", fan, 2);
	b.minter = (struct auth_minter){ PROC_SECRET, b.user, "" };
	op.o.token_fn = auth_minter_token;
	op.o.token_arg = &b.minter;
	cr_assert(eq(int, weft_open(&op.o, &b.st), 0), "%s", op.err);
	cr_assert(eq(int, weft_subscribe_space(b.st, "drain"), 0));
	synced(&b);
	COMMIT(&a, weft_create(tx_, "issues", "d1", "drain",
			       "{\"title\":\"before\"}"));
	synced(&a);
	cr_assert(wait_local(&b, "d1",
			     "{\"title\":\"before\",\"description\":\"\","
			     "\"status\":\"backlog\",\"priority\":0,"
			     "\"assignee\":null,\"labels\":[]}"));
	/* fanout-a drains: SIGTERM sends "reconnect elsewhere" */
	proc_stop(&cl.fa);
	COMMIT(&a, weft_set(tx_, "issues", "d1", "title", "\"after\""));
	synced(&a);
	cr_assert(wait_local(&b, "d1",
			     "{\"title\":\"after\",\"description\":\"\","
			     "\"status\":\"backlog\",\"priority\":0,"
			     "\"assignee\":null,\"labels\":[]}"),
		  "bob follows through fanout-b");
	synced(&b);
	client_close(&a);
	client_close(&b);
}

/*
 * A user over weft-write's --user-rate is held back with BACKOFF: libweft
 * waits as told and sends again, so every transaction lands once and in
 * order, none is reported rejected, and the pace is the rate; it narrows
 * its window, so it is refused about once per transaction held back, not
 * a window's worth.
 */
Test(client, a_user_over_its_rate_is_held_back_and_loses_nothing)
{
	char schema[512], v[64], q[256];
	const char *extra[] = { "--user-rate=40", "--user-burst=10", schema,
				NULL };
	struct proc w = { 0 };
	struct client a = { 0 };
	uint64_t t0, ms;
	int64_t refused;

	snprintf(schema, sizeof(schema), "--schema=%s",
		 getenv("WEFT_DEMO_SCHEMA"));
	proc_start_write_pg(&w, cl.pg_url, extra);
	client_open(&a, "carol", "carol", w.url, NULL);
	t0 = clock_now_ms();
	COMMIT(&a, weft_create(tx_, "spaces", "rated", "rated",
			       "{\"name\":\"t\"}"));
	COMMIT(&a, weft_create(tx_, "issues", "rated1", "rated",
			       "{\"title\":\"busy\"}"));
	for (int i = 0; i < 118; i++)
		COMMIT(&a, weft_incr(tx_, "issues", "rated1", "priority", "1"));
	synced(&a);
	ms = clock_now_ms() - t0;
	/* 120 transactions: 10 at once, the other 110 at 40 a second */
	cr_assert(ge(u64, ms, 2500), "synced after %llu ms",
		  (unsigned long long)ms);
	cr_assert(eq(int, a.rejects, 0));
	pg_val("SELECT version || ' ' || (data->>'priority') FROM weft_records"
	       " WHERE tbl = 'issues' AND id = 'rated1'",
	       v, sizeof(v));
	cr_assert_str_eq(v, "119 118", "each applied once");
	snprintf(q, sizeof(q),
		 "SELECT last_mid FROM weft_clients WHERE client_id = '%s'",
		 weft_client_id(a.st));
	pg_val(q, v, sizeof(v));
	cr_assert_str_eq(v, "120");
	/* it was held back, and it sent about what would be taken: a refused
	 * window halves the next.  Measured: 150-170 refusals for these 110;
	 * with a full window each time, 1,000-1,100 */
	refused = proc_metric(&w, "weft_write_rate_limited_total");
	cr_assert(lt(i64, 0, refused));
	cr_assert(lt(i64, refused, 500), "%lld refusals for 110 held back",
		  (long long)refused);
	client_close(&a);
	proc_stop(&w);
}
