/*
 * client_test.c - libweft without a network: the store, local commits of
 * every op, validation, the lock, undo / redo, the SQL views.  Only the
 * public API (the test links the shared library).  The sync engine is
 * tested against the real services in tests/e2e/client_test.c.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <weft/weft.h>

static char dir[64], path[128];

static void
setup(void)
{
	snprintf(dir, sizeof(dir), "/tmp/weft-client-XXXXXX");
	cr_assert_not_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/store.db", dir);
}

static void
teardown(void)
{
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	(void)!system(cmd);
}

TestSuite(client, .init = setup, .fini = teardown);

static weft_store *
open_store_with(int durability, int share_file)
{
	struct weft_options o = { 0 };
	char err[256] = "";
	weft_store *st = NULL;
	int rc;

	o.path = path;
	o.durability = durability;
	o.share_file = share_file;
	o.schema_path = getenv("WEFT_DEMO_SCHEMA");
	o.errbuf = err;
	o.errlen = sizeof(err);
	rc = weft_open(&o, &st);
	cr_assert(eq(int, rc, 0), "weft_open: %s (%s)", weft_strerror(rc), err);
	return st;
}

static weft_store *
open_store_at(int durability)
{
	return open_store_with(durability, 0);
}

static weft_store *
open_store(void)
{
	return open_store_at(WEFT_DURABLE_APP);
}

/* one op in its own transaction */
#define COMMIT1(st, call)                                                      \
	do {                                                                   \
		weft_txn *tx_;                                                 \
		int rc_;                                                       \
		cr_assert(eq(int, weft_begin(st, &tx_), 0));                   \
		rc_ = (call);                                                  \
		cr_assert(eq(int, rc_, 0), "%s", weft_last_error(st));         \
		rc_ = weft_commit(tx_, NULL);                                  \
		cr_assert(eq(int, rc_, 0), "commit: %s", weft_last_error(st)); \
	} while (0)

static char *
get(weft_store *st, const char *id)
{
	char *json = NULL;
	int rc = weft_get(st, "issues", id, &json, NULL, NULL);

	return rc == 0 ? json : NULL;
}

static void
assert_json(weft_store *st, const char *id, const char *want)
{
	char *got = get(st, id);

	cr_assert_not_null(got, "issues/%s missing", id);
	cr_assert_str_eq(got, want);
	weft_free(got);
}

Test(client, commit_is_visible_at_once_and_survives_reopen)
{
	weft_store *st = open_store();
	char id1[64];
	uint64_t mid = 0;
	weft_txn *tx;

	snprintf(id1, sizeof(id1), "%s", weft_client_id(st));
	cr_assert(eq(int, weft_begin(st, &tx), 0));
	cr_assert(eq(int,
		     weft_create(tx, "issues", "i1", "team",
				 "{\"title\":\"first\"}"),
		     0));
	cr_assert(
		eq(int, weft_set(tx, "issues", "i1", "status", "\"todo\""), 0));
	cr_assert(eq(int, weft_commit(tx, &mid), 0), "%s", weft_last_error(st));
	cr_assert(eq(u64, mid, 1));
	/* schema defaults filled in; the set applied on top */
	assert_json(st, "i1",
		    "{\"title\":\"first\",\"description\":\"\",\"status\":"
		    "\"todo\",\"priority\":0,\"assignee\":null,\"labels\":[]}");
	cr_assert(eq(u64, weft_pending(st), 1));
	cr_assert(eq(u64, weft_pending_record(st, "issues", "i1"), 1));
	COMMIT1(st, weft_set(tx_, "issues", "i1", "priority", "2"));
	cr_assert(eq(u64, weft_pending_record(st, "issues", "i1"), 2));
	weft_close(st);

	st = open_store();
	cr_assert_str_eq(weft_client_id(st), id1, "the client id is kept");
	cr_assert(eq(u64, weft_pending(st), 2), "the queue is kept");
	cr_assert(eq(u64, weft_pending_record(st, "issues", "i1"), 2),
		  "and which records it touches");
	cr_assert(eq(u64, weft_pending_record(st, "issues", "nope"), 0));
	assert_json(st, "i1",
		    "{\"title\":\"first\",\"description\":\"\",\"status\":"
		    "\"todo\",\"priority\":2,\"assignee\":null,\"labels\":[]}");
	/* ids stay dense across the reopen */
	cr_assert(eq(int, weft_begin(st, &tx), 0));
	cr_assert(eq(int, weft_set(tx, "issues", "i1", "priority", "3"), 0));
	cr_assert(eq(int, weft_commit(tx, &mid), 0));
	cr_assert(eq(u64, mid, 3));
	weft_close(st);
}

Test(client, a_second_opener_gets_ebusy)
{
	weft_store *st = open_store(), *st2 = NULL;
	struct weft_options o = { 0 };
	char err[256] = "";
	pid_t pid;
	int status;

	o.path = path;
	o.schema_path = getenv("WEFT_DEMO_SCHEMA");
	o.errbuf = err;
	o.errlen = sizeof(err);
	cr_assert(eq(int, weft_open(&o, &st2), WEFT_EBUSY));
	cr_assert_null(st2);
	cr_assert_not_null(strstr(err, "another process"), "%s", err);
	/* and from another process */
	pid = fork();
	if (pid == 0) {
		int rc = weft_open(&o, &st2);

		_exit(rc == WEFT_EBUSY ? 0 : 1);
	}
	cr_assert(eq(int, waitpid(pid, &status, 0), pid));
	cr_assert(eq(int, status, 0), "the child could open the store");
	weft_close(st);
	/* free again once closed */
	st = open_store();
	weft_close(st);
}

Test(client, writes_that_do_not_fit_are_refused_before_queueing)
{
	weft_store *st = open_store();
	weft_txn *tx;
	int rc;

	cr_assert(eq(int, weft_begin(st, &tx), 0));
	rc = weft_create(tx, "issues", "i1", "team", "{\"status\":\"done\"}");
	cr_assert(eq(int, rc, WEFT_EVALIDATION));
	cr_assert_not_null(strstr(weft_last_error(st), "title"), "%s",
			   weft_last_error(st));
	rc = weft_set(tx, "issues", "i1", "status", "\"lost\"");
	cr_assert(eq(int, rc, WEFT_EVALIDATION), "enum");
	rc = weft_set(tx, "nosuch", "i1", "x", "1");
	cr_assert(eq(int, rc, WEFT_EVALIDATION), "unknown table");
	rc = weft_set(tx, "issues", "i1", "priority", "not json");
	cr_assert(eq(int, rc, WEFT_EINVAL));
	cr_assert_not_null(strstr(weft_last_error(st), "not JSON"));
	/* nothing was added: an empty transaction */
	cr_assert(eq(int, weft_commit(tx, NULL), WEFT_EINVAL));
	/* ops that cannot apply to the view fail the commit, atomically */
	cr_assert(eq(int, weft_begin(st, &tx), 0));
	cr_assert(
		eq(int,
		   weft_create(tx, "issues", "i2", "team", "{\"title\":\"t\"}"),
		   0));
	cr_assert(
		eq(int, weft_set(tx, "issues", "missing", "priority", "1"), 0));
	rc = weft_commit(tx, NULL);
	cr_assert(eq(int, rc, WEFT_ENOTFOUND));
	cr_assert_not_null(strstr(weft_last_error(st), "op 2"), "%s",
			   weft_last_error(st));
	cr_assert_null(get(st, "i2"), "the first op was rolled back too");
	cr_assert(eq(u64, weft_pending(st), 0));
	weft_close(st);
}

Test(client, every_op_applies_locally_as_the_server_would)
{
	weft_store *st = open_store();
	weft_txn *tx;

	COMMIT1(st, weft_create(tx_, "issues", "i1", "team",
				"{\"title\":\"a\",\"labels\":[\"x\"]}"));
	COMMIT1(st, weft_list_add(tx_, "issues", "i1", "labels", "\"x\""));
	COMMIT1(st, weft_list_add(tx_, "issues", "i1", "labels", "\"y\""));
	COMMIT1(st, weft_list_remove(tx_, "issues", "i1", "labels", "\"z\""));
	COMMIT1(st, weft_list_remove(tx_, "issues", "i1", "labels", "\"x\""));
	COMMIT1(st, weft_incr(tx_, "issues", "i1", "priority", "5"));
	COMMIT1(st, weft_incr(tx_, "issues", "i1", "estimate", "1.5"));
	COMMIT1(st, weft_unset(tx_, "issues", "i1", "description"));
	assert_json(
		st, "i1",
		"{\"title\":\"a\",\"labels\":[\"y\"],\"status\":\"backlog\","
		"\"priority\":5,\"assignee\":null,\"estimate\":1.5}");
	COMMIT1(st, weft_put(tx_, "issues", "i1", NULL,
			     "{\"title\":\"b\",\"status\":\"done\"}"));
	assert_json(st, "i1", "{\"title\":\"b\",\"status\":\"done\"}");
	COMMIT1(st, weft_delete(tx_, "issues", "i1"));
	cr_assert_null(get(st, "i1"), "a tombstone reads as absent");
	cr_assert(eq(int, weft_begin(st, &tx), 0));
	cr_assert(eq(int, weft_set(tx, "issues", "i1", "priority", "1"), 0));
	cr_assert(eq(int, weft_commit(tx, NULL), WEFT_ENOTFOUND));
	/* re-create over the tombstone */
	COMMIT1(st,
		weft_create(tx_, "issues", "i1", "other", "{\"title\":\"c\"}"));
	{
		char *space = NULL;

		cr_assert(eq(int,
			     weft_get(st, "issues", "i1", NULL, NULL, &space),
			     0));
		cr_assert_str_eq(space, "other");
		weft_free(space);
	}
	cr_assert(eq(int, weft_begin(st, &tx), 0));
	cr_assert(eq(
		int,
		weft_create(tx, "issues", "i1", "team", "{\"title\":\"dup\"}"),
		0));
	cr_assert(eq(int, weft_commit(tx, NULL), WEFT_EEXIST));
	weft_close(st);
}

Test(client, undo_and_redo_restore_values)
{
	weft_store *st = open_store();

	COMMIT1(st,
		weft_create(tx_, "issues", "i1", "team", "{\"title\":\"a\"}"));
	COMMIT1(st, weft_set(tx_, "issues", "i1", "title", "\"b\""));
	COMMIT1(st, weft_set(tx_, "issues", "i1", "status", "\"done\""));
	COMMIT1(st, weft_list_add(tx_, "issues", "i1", "labels", "\"bug\""));
	cr_assert(eq(int, weft_undo(st, NULL), 0), "%s", weft_last_error(st));
	cr_assert(eq(int, weft_undo(st, NULL), 0));
	assert_json(st, "i1",
		    "{\"title\":\"b\",\"description\":\"\",\"status\":"
		    "\"backlog\",\"priority\":0,\"assignee\":null,\"labels\":"
		    "[]}");
	cr_assert(eq(int, weft_undo(st, NULL), 0));
	cr_assert(eq(int, weft_redo(st, NULL), 0));
	cr_assert(eq(int, weft_redo(st, NULL), 0));
	assert_json(st, "i1",
		    "{\"title\":\"b\",\"description\":\"\",\"status\":"
		    "\"done\",\"priority\":0,\"assignee\":null,\"labels\":[]}");
	/* undo all the way: the create is undone too */
	for (int i = 0; i < 3; i++)
		cr_assert(eq(int, weft_undo(st, NULL), 0), "undo %d: %s", i,
			  weft_last_error(st));
	cr_assert_null(get(st, "i1"));
	cr_assert(eq(int, weft_undo(st, NULL), WEFT_ENOTFOUND));
	cr_assert(eq(int, weft_redo(st, NULL), 0));
	assert_json(st, "i1",
		    "{\"title\":\"a\",\"description\":\"\",\"status\":"
		    "\"backlog\",\"priority\":0,\"assignee\":null,\"labels\":"
		    "[]}");
	/* a new commit ends the redo chain */
	COMMIT1(st, weft_set(tx_, "issues", "i1", "priority", "1"));
	cr_assert(eq(int, weft_redo(st, NULL), WEFT_ENOTFOUND));
	/* each undo and redo is a transaction of its own, queued */
	cr_assert(eq(u64, weft_pending(st), 14));
	weft_close(st);
}

static int
count_rows(void *arg, const char *table, const char *id, const char *space,
	   uint64_t version, const char *json)
{
	(void)table;
	(void)version;
	(void)json;
	(void)space;
	if (strcmp(id, "stop") == 0)
		return 42;
	(*(int *)arg)++;
	return 0;
}

Test(client, rows_are_listed_and_queryable_with_plain_sql)
{
	weft_store *st = open_store();
	sqlite3 *db;
	sqlite3_stmt *q;
	int n = 0;

	for (int i = 0; i < 300; i++) {
		char id[16], js[64];

		snprintf(id, sizeof(id), "i%03d", i);
		snprintf(js, sizeof(js), "{\"title\":\"t%d\",\"priority\":%d}",
			 i, i % 3);
		COMMIT1(st, weft_create(tx_, "issues", id,
					i % 2 ? "odd" : "even", js));
	}
	COMMIT1(st, weft_delete(tx_, "issues", "i000"));
	cr_assert(eq(int, weft_each(st, "issues", NULL, count_rows, &n), 0));
	cr_assert(eq(int, n, 299), "tombstones are not listed");
	n = 0;
	cr_assert(eq(int, weft_each(st, NULL, "odd", count_rows, &n), 0));
	cr_assert(eq(int, n, 150));
	COMMIT1(st,
		weft_create(tx_, "issues", "stop", "odd", "{\"title\":\"s\"}"));
	n = 0;
	cr_assert(eq(int, weft_each(st, NULL, NULL, count_rows, &n), 42),
		  "the callback's value ends the walk");
	/* another connection reads the per-table views */
	cr_assert(eq(int,
		     sqlite3_open_v2(weft_db_path(st), &db,
				     SQLITE_OPEN_READONLY, NULL),
		     SQLITE_OK));
	cr_assert(eq(int,
		     sqlite3_prepare_v2(db,
					"SELECT title, status, labels, pending,"
					" space FROM issues WHERE id = 'i007'",
					-1, &q, NULL),
		     SQLITE_OK),
		  "%s", sqlite3_errmsg(db));
	cr_assert(eq(int, sqlite3_step(q), SQLITE_ROW));
	cr_assert_str_eq((const char *)sqlite3_column_text(q, 0), "t7");
	cr_assert_str_eq((const char *)sqlite3_column_text(q, 1), "backlog");
	cr_assert_str_eq((const char *)sqlite3_column_text(q, 2), "[]");
	cr_assert(eq(int, sqlite3_column_int(q, 3), 1));
	cr_assert_str_eq((const char *)sqlite3_column_text(q, 4), "odd");
	sqlite3_finalize(q);
	cr_assert(eq(int,
		     sqlite3_prepare_v2(db,
					"SELECT count(*) FROM issues"
					" WHERE priority = 1",
					-1, &q, NULL),
		     SQLITE_OK));
	cr_assert(eq(int, sqlite3_step(q), SQLITE_ROW));
	cr_assert(eq(int, sqlite3_column_int(q, 0), 100));
	sqlite3_finalize(q);
	sqlite3_close(db);
	weft_close(st);
}

struct seen {
	int n;
	char last[64];
	int origin;
};

static void
on_change(void *arg, const char *table, const char *id, uint64_t version,
	  int deleted, int origin)
{
	struct seen *s = arg;

	(void)version;
	(void)deleted;
	s->n++;
	snprintf(s->last, sizeof(s->last), "%s/%s", table, id);
	s->origin = origin;
}

Test(client, local_commits_call_the_change_callback)
{
	weft_store *st = open_store();
	struct seen seen = { 0 };
	struct weft_callbacks cb = { .change = on_change, .arg = &seen };

	weft_set_callbacks(st, &cb);
	COMMIT1(st,
		weft_create(tx_, "issues", "i1", "team", "{\"title\":\"a\"}"));
	cr_assert(eq(int, seen.n, 1));
	cr_assert_str_eq(seen.last, "issues/i1");
	cr_assert(eq(int, seen.origin, WEFT_LOCAL));
	cr_assert(eq(int, weft_state(st), WEFT_OFFLINE));
	cr_assert(eq(int, weft_wait_synced(st, 10), WEFT_EUNAVAILABLE),
		  "no server configured");
	weft_close(st);
}

/* run SQL on the store file, outside the library (it is closed) */
static void
raw_sql(const char *sql)
{
	sqlite3 *db;
	char *err = NULL;

	cr_assert(eq(int, sqlite3_open(path, &db), SQLITE_OK));
	cr_assert(eq(int, sqlite3_exec(db, sql, NULL, NULL, &err), SQLITE_OK),
		  "%s: %s", sql, err ? err : "");
	sqlite3_close(db);
}

static long
raw_count(const char *sql)
{
	sqlite3 *db;
	sqlite3_stmt *q;
	long n = -1;

	cr_assert(eq(int, sqlite3_open(path, &db), SQLITE_OK));
	cr_assert(
		eq(int, sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK));
	if (sqlite3_step(q) == SQLITE_ROW)
		n = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	sqlite3_close(db);
	return n;
}

Test(client, a_format_1_store_keeps_base_rows_only_for_queued_records)
{
	weft_store *st = open_store();

	weft_close(st);
	/* as format 1 left it: a base row for every confirmed record; c1 has
	 * a queued edit (pending 1), c2 has none */
	raw_sql("INSERT INTO weft_rows VALUES ('issues', 'c1', 't', 3, 0,"
		" '{\"title\":\"mine\"}', 1);"
		"INSERT INTO weft_base VALUES ('issues', 'c1', 't', 3, 0,"
		" '{\"title\":\"server\"}');"
		"INSERT INTO weft_rows VALUES ('issues', 'c2', 't', 5, 0,"
		" '{\"title\":\"both\"}', 0);"
		"INSERT INTO weft_base VALUES ('issues', 'c2', 't', 5, 0,"
		" '{\"title\":\"both\"}');"
		"UPDATE weft_meta SET v = '1' WHERE k = 'format'");
	st = open_store();
	weft_close(st);
	cr_assert(eq(i64,
		     raw_count("SELECT v FROM weft_meta"
			       " WHERE k = 'format'"),
		     2));
	cr_assert(eq(i64,
		     raw_count("SELECT count(*) FROM weft_base"
			       " WHERE id = 'c2'"),
		     0),
		  "c2's view row is its confirmed row now");
	cr_assert(eq(i64,
		     raw_count("SELECT count(*) FROM weft_base"
			       " WHERE id = 'c1' AND version = 3"),
		     1),
		  "c1's confirmed row stays aside while its edit is queued");
	st = open_store();
	assert_json(st, "c1", "{\"title\":\"mine\"}");
	assert_json(st, "c2", "{\"title\":\"both\"}");
	weft_close(st);
}

Test(client, a_local_create_sets_no_confirmed_row_aside)
{
	weft_store *st = open_store();

	COMMIT1(st, weft_create(tx_, "issues", "n1", "t",
				"{\"title\":\"new\", \"status\":\"todo\"}"));
	COMMIT1(st, weft_set(tx_, "issues", "n1", "title", "\"newer\""));
	weft_close(st);
	cr_assert(eq(i64, raw_count("SELECT count(*) FROM weft_base"), 0),
		  "the server has no row of n1 to keep");
	cr_assert(eq(i64,
		     raw_count("SELECT pending FROM weft_rows"
			       " WHERE id = 'n1'"),
		     2));
}

/* sets and unsets on live rows are done in SQL (txn.c's commit_fast):
 * several on one record, on two records, unsets of present and absent
 * fields, and their undo; a set on a deleted record still gets its
 * error from the general path */
Test(client, set_and_unset_in_sql_apply_and_undo_as_the_general_path)
{
	weft_store *st = open_store();
	weft_txn *tx;
	int rc;

	COMMIT1(st, weft_create(tx_, "issues", "a", "t", "{\"title\":\"a\"}"));
	COMMIT1(st, weft_create(tx_, "issues", "b", "t",
				"{\"title\":\"b\",\"assignee\":\"ann\"}"));
	cr_assert(eq(int, weft_begin(st, &tx), 0));
	cr_assert(eq(int, weft_set(tx, "issues", "a", "title", "\"a1\""), 0));
	cr_assert(eq(int, weft_set(tx, "issues", "a", "title", "\"a2\""), 0));
	cr_assert(eq(int,
		     weft_set(tx, "issues", "a", "labels", "[\"x\",\"y\"]"),
		     0));
	cr_assert(eq(int, weft_unset(tx, "issues", "b", "assignee"), 0));
	cr_assert(eq(int, weft_unset(tx, "issues", "b", "assignee"), 0));
	cr_assert(eq(int, weft_set(tx, "issues", "b", "estimate", "2.5"), 0));
	cr_assert(eq(int, weft_commit(tx, NULL), 0), "%s", weft_last_error(st));
	assert_json(st, "a",
		    "{\"title\":\"a2\",\"description\":\"\",\"status\":"
		    "\"backlog\",\"priority\":0,\"assignee\":null,\"labels\":"
		    "[\"x\",\"y\"]}");
	assert_json(
		st, "b",
		"{\"title\":\"b\",\"description\":\"\",\"status\":"
		"\"backlog\",\"priority\":0,\"labels\":[],\"estimate\":2.5}");
	cr_assert(eq(u64, weft_pending(st), 3));
	cr_assert(eq(int, weft_undo(st, NULL), 0), "%s", weft_last_error(st));
	assert_json(st, "a",
		    "{\"title\":\"a\",\"description\":\"\",\"status\":"
		    "\"backlog\",\"priority\":0,\"assignee\":null,\"labels\":"
		    "[]}");
	/* the field comes back last, as a set appends it */
	assert_json(st, "b",
		    "{\"title\":\"b\",\"description\":\"\",\"status\":"
		    "\"backlog\",\"priority\":0,\"labels\":[],"
		    "\"assignee\":\"ann\"}");
	cr_assert(eq(int, weft_redo(st, NULL), 0), "%s", weft_last_error(st));
	assert_json(
		st, "b",
		"{\"title\":\"b\",\"description\":\"\",\"status\":"
		"\"backlog\",\"priority\":0,\"labels\":[],\"estimate\":2.5}");
	/* a deleted record: the general path's refusal, nothing changed */
	COMMIT1(st, weft_delete(tx_, "issues", "a"));
	cr_assert(eq(int, weft_begin(st, &tx), 0));
	cr_assert(eq(int, weft_set(tx, "issues", "a", "title", "\"z\""), 0));
	rc = weft_commit(tx, NULL);
	cr_assert(ne(int, rc, 0), "a set on a deleted record is refused");
	cr_assert_null(get(st, "a"));
	/* a live record changed first, then the deleted one: the general
	 * path starts again from the file, and the refusal leaves b as it was
	 */
	cr_assert(eq(int, weft_begin(st, &tx), 0));
	cr_assert(eq(int, weft_set(tx, "issues", "b", "title", "\"q\""), 0));
	cr_assert(eq(int, weft_set(tx, "issues", "a", "title", "\"z\""), 0));
	rc = weft_commit(tx, NULL);
	cr_assert(ne(int, rc, 0), "a set on a deleted record is refused");
	assert_json(
		st, "b",
		"{\"title\":\"b\",\"description\":\"\",\"status\":"
		"\"backlog\",\"priority\":0,\"labels\":[],\"estimate\":2.5}");
	cr_assert(eq(u64, weft_pending(st), 6));
	weft_close(st);
}

/* a record with no queued transaction: its view row is its confirmed row;
 * the first queued set keeps that row aside (for rebases) exactly as it
 * was, and a second set leaves it alone */
Test(client, a_first_queued_set_keeps_the_confirmed_row_aside)
{
	weft_store *st = open_store();

	weft_close(st);
	raw_sql("INSERT INTO weft_rows VALUES ('issues', 'c2', 't', 5, 0,"
		" '{\"title\":\"both\",\"status\":\"todo\"}', 0)");
	st = open_store();
	COMMIT1(st, weft_set(tx_, "issues", "c2", "title", "\"mine\""));
	COMMIT1(st, weft_set(tx_, "issues", "c2", "status", "\"done\""));
	assert_json(st, "c2", "{\"title\":\"mine\",\"status\":\"done\"}");
	weft_close(st);
	cr_assert(eq(i64,
		     raw_count("SELECT count(*) FROM weft_base WHERE id = 'c2'"
			       " AND space = 't' AND version = 5 AND"
			       " deleted = 0 AND data = '{\"title\":\"both\","
			       "\"status\":\"todo\"}'"),
		     1),
		  "the confirmed row, as it was before the first set");
	cr_assert(eq(i64,
		     raw_count("SELECT pending FROM weft_rows"
			       " WHERE id = 'c2'"),
		     2));
}

static long
reader_long(sqlite3 *db, const char *sql)
{
	sqlite3_stmt *q;
	long n = -1;

	cr_assert(eq(int, sqlite3_prepare_v2(db, sql, -1, &q, NULL), SQLITE_OK),
		  "%s", sqlite3_errmsg(db));
	if (sqlite3_step(q) == SQLITE_ROW)
		n = sqlite3_column_int64(q, 0);
	sqlite3_finalize(q);
	return n;
}

/* the store writes its WAL through walvfs.c, which holds frames back and
 * writes a transaction's in one call: another connection, open all along,
 * must still see each commit as soon as weft_commit returns, small or
 * larger than what the shim holds (HOLD_MAX) or writes at once */
static void
every_commit_at_once(int durability, int share_file)
{
	weft_store *st = open_store_with(durability, share_file);
	char desc[1100], js[1300], id[16], v[16];
	sqlite3 *rd;
	int made = 0;

	COMMIT1(st, weft_create(tx_, "issues", "r", "t", "{\"title\":\"r\"}"));
	cr_assert(eq(int,
		     sqlite3_open_v2(path, &rd, SQLITE_OPEN_READONLY, NULL),
		     SQLITE_OK));
	memset(desc, 'd', sizeof(desc) - 1);
	desc[sizeof(desc) - 1] = '\0';
	for (int i = 1; i <= 300; i++) {
		snprintf(v, sizeof(v), "%d", i);
		COMMIT1(st, weft_set(tx_, "issues", "r", "priority", v));
		cr_assert(eq(i64,
			     reader_long(rd, "SELECT priority FROM issues"
					     " WHERE id = 'r'"),
			     i));
		if (i % 100 == 0) { /* 150 rows of 1 KB: about 40 pages */
			weft_txn *tx;

			cr_assert(eq(int, weft_begin(st, &tx), 0));
			for (int k = 0; k < 150; k++, made++) {
				snprintf(id, sizeof(id), "big%d", made);
				snprintf(js, sizeof(js),
					 "{\"title\":\"%s\",\"description\":"
					 "\"%s\"}",
					 id, desc);
				cr_assert(eq(
					int,
					weft_create(tx, "issues", id, "t", js),
					0));
			}
			cr_assert(eq(int, weft_commit(tx, NULL), 0), "%s",
				  weft_last_error(st));
			cr_assert(eq(i64,
				     reader_long(rd, "SELECT count(*) FROM"
						     " issues WHERE id LIKE"
						     " 'big%'"),
				     made));
		}
	}
	sqlite3_close(rd);
	weft_close(st);
	st = open_store();
	assert_json(st, "r",
		    "{\"title\":\"r\",\"description\":\"\",\"status\":"
		    "\"backlog\",\"priority\":300,\"assignee\":null,"
		    "\"labels\":[]}");
	weft_close(st);
	cr_assert(eq(i64,
		     raw_count("SELECT count(*) FROM weft_rows"
			       " WHERE id LIKE 'big%' AND length(data) > 1100"),
		     450));
	{
		sqlite3 *db;
		sqlite3_stmt *q;

		cr_assert(eq(int, sqlite3_open(path, &db), SQLITE_OK));
		cr_assert(eq(int,
			     sqlite3_prepare_v2(db, "PRAGMA integrity_check",
						-1, &q, NULL),
			     SQLITE_OK));
		cr_assert(eq(int, sqlite3_step(q), SQLITE_ROW));
		cr_assert_str_eq((const char *)sqlite3_column_text(q, 0), "ok");
		sqlite3_finalize(q);
		sqlite3_close(db);
	}
}

Test(client, another_connection_sees_every_commit_at_once)
{
	every_commit_at_once(WEFT_DURABLE_APP, 0);
}

/* synchronous=FULL: SQLite syncs the WAL at each commit, and may pad it
 * to a sector with copies of the commit frame */
Test(client, another_connection_sees_every_commit_at_once_when_durable)
{
	every_commit_at_once(WEFT_DURABLE_POWER, 0);
}

/* share_file: the default VFS's locks and shared-memory index */
Test(client, another_connection_sees_every_commit_at_once_when_shared)
{
	every_commit_at_once(WEFT_DURABLE_APP, 1);
}

/*
 * Another process (sqlite_peek.c) counts the issues view of the store file
 * with plain SQLite: 10 + the count, or 2 if SQLite said the database is
 * locked, or 1 for anything else.  Not a fork: the child would inherit
 * this process's SQLite state, locks included.
 */
static int
count_in_another_process(void)
{
	pid_t pid = fork();
	int status;

	cr_assert(ge(int, pid, 0));
	if (pid == 0) {
		execl(SQLITE_PEEK, SQLITE_PEEK, path,
		      "SELECT count(*) FROM issues", (char *)NULL);
		_exit(127);
	}
	cr_assert(eq(int, waitpid(pid, &status, 0), pid));
	cr_assert(eq(int, WIFEXITED(status) ? 1 : 0, 1));
	return WEXITSTATUS(status);
}

/* another process that has the store file open (an idle sqlite3 shell)
 * makes weft_open refuse it at once with EBUSY and a sentence naming the
 * cause, unless the store is opened with share_file */
Test(client, a_file_another_process_has_open_is_refused_unless_shared)
{
	struct weft_options o = { 0 };
	char err[256] = "", line[16] = "";
	weft_store *st = open_store();
	int fds[2], status;
	uint64_t t0;
	FILE *from;
	pid_t pid;

	COMMIT1(st, weft_create(tx_, "issues", "a", "t", "{\"title\":\"a\"}"));
	weft_close(st);
	cr_assert(eq(int, pipe(fds), 0));
	pid = fork();
	cr_assert(ge(int, pid, 0));
	if (pid == 0) {
		dup2(fds[1], 1);
		close(fds[0]);
		execl(SQLITE_PEEK, SQLITE_PEEK, path,
		      "SELECT count(*) FROM issues", "4000", (char *)NULL);
		_exit(127);
	}
	close(fds[1]);
	from = fdopen(fds[0], "r");
	cr_assert(fgets(line, sizeof(line), from) != NULL &&
		  strcmp(line, "read\n") == 0);
	o.path = path;
	o.schema_path = getenv("WEFT_DEMO_SCHEMA");
	o.errbuf = err;
	o.errlen = sizeof(err);
	t0 = (uint64_t)time(NULL);
	cr_assert(eq(int, weft_open(&o, &st), WEFT_EBUSY), "%s", err);
	cr_assert(strstr(err, "another process has the file open") != NULL,
		  "%s", err);
	cr_assert(le(u64, (uint64_t)time(NULL) - t0, 2), "refused at once");
	o.share_file = 1;
	cr_assert(eq(int, weft_open(&o, &st), 0), "%s", err);
	cr_assert(eq(u64, weft_pending(st), 1));
	weft_close(st);
	kill(pid, SIGTERM);
	cr_assert(eq(int, waitpid(pid, &status, 0), pid));
	fclose(from);
}

/* by default the file is SQLite-locked for the owning process, whose
 * other connections still read it; share_file lets other processes in */
Test(client, other_processes_read_the_store_only_when_it_is_shared)
{
	weft_store *st = open_store();
	sqlite3 *db;

	COMMIT1(st, weft_create(tx_, "issues", "a", "t", "{\"title\":\"a\"}"));
	cr_assert(eq(int, count_in_another_process(), 2),
		  "another process is told the database is locked");
	COMMIT1(st, weft_create(tx_, "issues", "b", "t", "{\"title\":\"b\"}"));
	cr_assert(eq(int,
		     sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL),
		     SQLITE_OK));
	cr_assert(eq(i64, reader_long(db, "SELECT count(*) FROM issues"), 2),
		  "a connection of the owning process reads it");
	sqlite3_close(db);
	weft_close(st);
	cr_assert(eq(int, count_in_another_process(), 12),
		  "after weft_close another process reads every commit");

	st = open_store_with(WEFT_DURABLE_APP, 1);
	COMMIT1(st, weft_create(tx_, "issues", "c", "t", "{\"title\":\"c\"}"));
	cr_assert(eq(int, count_in_another_process(), 13),
		  "with share_file another process reads it while open");
	COMMIT1(st, weft_create(tx_, "issues", "d", "t", "{\"title\":\"d\"}"));
	weft_close(st);

	st = open_store();
	cr_assert(eq(u64, weft_pending(st), 4));
	weft_close(st);
}
