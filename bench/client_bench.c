/*
 * client_bench.c - libweft's local commit and bootstrap, each beside a raw
 * SQLite limit measured in the same run, on the same file system.
 *
 *   client_bench commit DIR SCHEMA N
 *       N commits of one `set` each (over 1,000 local records), timed one
 *       by one, at synchronous=NORMAL, offline, in a store of the default
 *       options and in one with share_file=1, and N raw SQLite
 *       transactions of one single-row INSERT (WAL, synchronous=NORMAL,
 *       prepared), alternating in rounds.  Prints p50/p99 µs and
 *       commits/s for each, and the ratios of the rates.
 *
 *   client_bench bootstrap DIR SCHEMA WRITE_URL FANOUT_URL SECRET SPACE
 *       an empty store subscribes to SPACE and is timed from that call
 *       until weft_wait_synced() returns (live); prints records, seconds
 *       and the process's peak RSS.
 *
 *   client_bench bulk DIR N
 *       the raw limit of the bootstrap: N rows shaped like the demo's
 *       issues (about 130 bytes of JSON each) inserted into an empty
 *       SQLite file in one transaction (WAL, prepared, a (table, id) key).
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include <weft/weft.h>

#include "common/clock.h"
#include "services/shared/auth.h"

#include "common/banned.h"

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

static void
report(const char *what, uint64_t *ns, int n, double secs)
{
	qsort(ns, (size_t)n, sizeof(*ns), cmp_u64);
	printf("  %-34s p50 %7.1f us  p99 %7.1f us  %9.0f commits/s\n", what,
	       (double)ns[n / 2] / 1000.0, (double)ns[n * 99 / 100] / 1000.0,
	       n / secs);
}

static long
peak_rss_kb(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_maxrss;
}

/* the demo's issue, about 130 bytes */
static void
issue_json(char *out, size_t cap, int i)
{
	snprintf(out, cap,
		 "{\"title\":\"Issue %06d: the sync badge flickers\","
		 "\"status\":\"todo\",\"priority\":%d,\"assignee\":"
		 "\"user%02d\",\"labels\":[\"bug\",\"p%d\"]}",
		 i, i % 4, i % 50, i % 3);
}

/* the store to edit: 1,000 local records */
static weft_store *
commit_store(const char *dir, const char *schema, int share_file)
{
	struct weft_options o = { 0 };
	char path[512], err[256] = "", js[256];
	weft_store *st;

	snprintf(path, sizeof(path), "%s/commit%s.db", dir,
		 share_file ? "-shared" : "");
	o.path = path;
	o.schema_path = schema;
	o.share_file = share_file;
	o.errbuf = err;
	o.errlen = sizeof(err);
	if (weft_open(&o, &st) != 0) {
		fprintf(stderr, "client_bench: %s\n", err);
		return NULL;
	}
	for (int b = 0; b < 4; b++) {
		weft_txn *tx;

		weft_begin(st, &tx);
		for (int i = b * 250; i < (b + 1) * 250; i++) {
			char id[16];

			snprintf(id, sizeof(id), "i%d", i);
			issue_json(js, sizeof(js), i);
			weft_create(tx, "issues", id, "bench", js);
		}
		if (weft_commit(tx, NULL) != 0) {
			fprintf(stderr, "client_bench: %s\n",
				weft_last_error(st));
			weft_close(st);
			return NULL;
		}
	}
	return st;
}

struct raw {
	sqlite3 *db;
	sqlite3_stmt *ins, *begin, *commit;
};

static int
raw_open(struct raw *r, const char *dir)
{
	char path[512];

	snprintf(path, sizeof(path), "%s/raw.db", dir);
	if (sqlite3_open(path, &r->db) != SQLITE_OK ||
	    sqlite3_exec(r->db,
			 "PRAGMA journal_mode = WAL;"
			 "PRAGMA synchronous = NORMAL;"
			 "CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT);",
			 NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(r->db, "INSERT INTO t (v) VALUES (?1)", -1,
			       &r->ins, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(r->db, "BEGIN", -1, &r->begin, NULL) !=
		    SQLITE_OK ||
	    sqlite3_prepare_v2(r->db, "COMMIT", -1, &r->commit, NULL) !=
		    SQLITE_OK) {
		fprintf(stderr, "client_bench: sqlite: %s\n",
			sqlite3_errmsg(r->db));
		return -1;
	}
	return 0;
}

static void
raw_close(struct raw *r)
{
	sqlite3_finalize(r->ins);
	sqlite3_finalize(r->begin);
	sqlite3_finalize(r->commit);
	sqlite3_close(r->db);
}

/* commits [from, to) of one set each; latencies into lat; elapsed ns */
static int64_t
weft_round(weft_store *st, int from, int to, uint64_t *lat)
{
	uint64_t t0 = clock_now_ns();

	for (int i = from; i < to; i++) {
		uint64_t a = clock_now_ns();
		weft_txn *tx;
		char id[16], v[8];

		snprintf(id, sizeof(id), "i%d", i % 1000);
		snprintf(v, sizeof(v), "%d", i % 4);
		weft_begin(st, &tx);
		weft_set(tx, "issues", id, "priority", v);
		if (weft_commit(tx, NULL) != 0) {
			fprintf(stderr, "client_bench: %s\n",
				weft_last_error(st));
			return -1;
		}
		lat[i] = clock_now_ns() - a;
	}
	return (int64_t)(clock_now_ns() - t0);
}

/* as many raw one-row insert transactions */
static int64_t
raw_round(struct raw *r, const char *js, int from, int to, uint64_t *lat)
{
	uint64_t t0 = clock_now_ns();

	for (int i = from; i < to; i++) {
		uint64_t a = clock_now_ns();

		sqlite3_step(r->begin);
		sqlite3_reset(r->begin);
		sqlite3_bind_text(r->ins, 1, js, -1, SQLITE_STATIC);
		if (sqlite3_step(r->ins) != SQLITE_DONE) {
			fprintf(stderr, "client_bench: sqlite: %s\n",
				sqlite3_errmsg(r->db));
			return -1;
		}
		sqlite3_reset(r->ins);
		sqlite3_step(r->commit);
		sqlite3_reset(r->commit);
		lat[i] = clock_now_ns() - a;
	}
	return (int64_t)(clock_now_ns() - t0);
}

/*
 * The three loops alternate in ROUNDS rounds, so all see the same phases of
 * a noisy machine (another VM's burst, a write-back of dirty pages); the
 * figures are over all rounds.
 */
#define ROUNDS 10

static int
run_commit(const char *dir, const char *schema, int n)
{
	uint64_t *lat = calloc((size_t)n, sizeof(*lat));
	uint64_t *slat = calloc((size_t)n, sizeof(*slat));
	uint64_t *rlat = calloc((size_t)n, sizeof(*rlat));
	weft_store *st = NULL, *shared = NULL;
	struct raw raw = { 0 };
	int64_t wns = 0, sns = 0, rns = 0, d;
	char js[256];
	int rc = 1;

	if (!lat || !slat || !rlat || n < ROUNDS)
		goto out;
	st = commit_store(dir, schema, 0);
	shared = st ? commit_store(dir, schema, 1) : NULL;
	if (!shared || raw_open(&raw, dir) != 0)
		goto out;
	issue_json(js, sizeof(js), 1);
	for (int r = 0; r < ROUNDS; r++) {
		int from = (int)((int64_t)n * r / ROUNDS);
		int to = (int)((int64_t)n * (r + 1) / ROUNDS);

		if ((d = weft_round(st, from, to, lat)) < 0)
			goto out;
		wns += d;
		if ((d = weft_round(shared, from, to, slat)) < 0)
			goto out;
		sns += d;
		if ((d = raw_round(&raw, js, from, to, rlat)) < 0)
			goto out;
		rns += d;
	}
	printf("bench/client commit: %d commits of one set, offline, "
	       "synchronous=NORMAL, %s, in %d alternating rounds\n",
	       n, dir, ROUNDS);
	report("weft_commit (one set)", lat, n, (double)wns / 1e9);
	report("  the same, share_file=1", slat, n, (double)sns / 1e9);
	report("raw SQLite (one-row insert txn)", rlat, n, (double)rns / 1e9);
	printf("  rate ratio weft/raw: %.2fx (share_file=1: %.2fx)\n",
	       (double)rns / (double)wns, (double)rns / (double)sns);
	rc = 0;
out:
	if (st)
		weft_close(st);
	if (shared)
		weft_close(shared);
	if (raw.db)
		raw_close(&raw);
	free(lat);
	free(slat);
	free(rlat);
	return rc;
}

static struct auth_minter minter = { NULL, "bench", "" };

struct prog {
	uint64_t records, bytes, total;
	uint64_t first_ns;
};

static void
on_progress(void *arg, const char *space, uint64_t records, uint64_t bytes,
	    uint64_t total, int done)
{
	struct prog *p = arg;

	(void)space;
	(void)done;
	if (!p->first_ns)
		p->first_ns = clock_now_ns();
	p->records = records;
	p->bytes = bytes;
	p->total = total;
}

static int
run_bootstrap(char **argv)
{
	struct weft_options o = { 0 };
	struct weft_callbacks cb = { 0 };
	struct prog pr = { 0 };
	const char *fan[1] = { argv[5] };
	char path[512], err[256] = "";
	weft_store *st;
	uint64_t t0, t1;
	int rc;

	minter.secret = argv[6];
	snprintf(path, sizeof(path), "%s/boot.db", argv[2]);
	o.path = path;
	o.schema_path = argv[3];
	o.write_url = argv[4];
	o.fanout_urls = fan;
	o.nfanout = 1;
	o.token_fn = auth_minter_token;
	o.token_arg = &minter;
	o.errbuf = err;
	o.errlen = sizeof(err);
	if (weft_open(&o, &st) != 0) {
		fprintf(stderr, "client_bench: %s\n", err);
		return 1;
	}
	cb.progress = on_progress;
	cb.arg = &pr;
	weft_set_callbacks(st, &cb);
	/* connected first: the figure is the bootstrap, not the dial */
	if (weft_wait_synced(st, 10000) != 0) {
		fprintf(stderr, "client_bench: not connected\n");
		return 1;
	}
	t0 = clock_now_ns();
	weft_subscribe_space(st, argv[7]);
	rc = weft_wait_synced(st, 120000);
	t1 = clock_now_ns();
	if (rc) {
		fprintf(stderr, "client_bench: bootstrap did not finish: %s\n",
			weft_strerror(rc));
		return 1;
	}
	printf("  %-34s %7llu records %7.1f MB  %6.3f s  "
	       "(first page after %.3f s)  client peak RSS %ld MB\n",
	       "libweft bootstrap (subscribe -> live)",
	       (unsigned long long)pr.records, (double)pr.bytes / 1e6,
	       (double)(t1 - t0) / 1e9,
	       pr.first_ns ? (double)(pr.first_ns - t0) / 1e9 : 0.0,
	       peak_rss_kb() / 1024);
	weft_close(st);
	return 0;
}

static int
run_bulk(const char *dir, int n)
{
	char path[512], js[256], id[16];
	sqlite3 *db;
	sqlite3_stmt *ins;
	uint64_t t0, t1;

	snprintf(path, sizeof(path), "%s/bulk.db", dir);
	if (sqlite3_open(path, &db) != SQLITE_OK ||
	    sqlite3_exec(db,
			 "PRAGMA journal_mode = WAL;"
			 "PRAGMA synchronous = NORMAL;"
			 "CREATE TABLE r (tbl TEXT, id TEXT, space TEXT,"
			 " version INTEGER, deleted INTEGER, data TEXT,"
			 " PRIMARY KEY (tbl, id)) WITHOUT ROWID;",
			 NULL, NULL, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db,
			       "INSERT INTO r VALUES ('issues', ?1, 'bench',"
			       " 1, 0, ?2)",
			       -1, &ins, NULL) != SQLITE_OK) {
		fprintf(stderr, "client_bench: sqlite: %s\n",
			sqlite3_errmsg(db));
		return 1;
	}
	t0 = clock_now_ns();
	sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
	for (int i = 0; i < n; i++) {
		snprintf(id, sizeof(id), "i%06d", i);
		issue_json(js, sizeof(js), i);
		sqlite3_bind_text(ins, 1, id, -1, SQLITE_STATIC);
		sqlite3_bind_text(ins, 2, js, -1, SQLITE_STATIC);
		sqlite3_step(ins);
		sqlite3_reset(ins);
	}
	sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	t1 = clock_now_ns();
	printf("  %-34s %7d rows               %6.3f s\n",
	       "raw SQLite bulk insert (one txn)", n, (double)(t1 - t0) / 1e9);
	sqlite3_finalize(ins);
	sqlite3_close(db);
	return 0;
}

int
main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "commit") == 0)
		return run_commit(argv[2], argv[3],
				  (int)strtol(argv[4], NULL, 10));
	if (argc == 8 && strcmp(argv[1], "bootstrap") == 0)
		return run_bootstrap(argv);
	if (argc == 4 && strcmp(argv[1], "bulk") == 0)
		return run_bulk(argv[2], (int)strtol(argv[3], NULL, 10));
	fprintf(stderr,
		"usage: client_bench commit DIR SCHEMA N\n"
		"       client_bench bootstrap DIR SCHEMA WRITE_URL FANOUT_URL "
		"SECRET SPACE\n"
		"       client_bench bulk DIR N\n");
	return 2;
}
