/*
 * apply_test.c - weft_apply(), the SQL that applies one client transaction
 * (deploy/migrations/0002_core.sql), against the harness's Postgres:
 * every op, exactly-once, rejections that advance the id, authorisation,
 * one version bump and one outbox row per record, and a rejection inside
 * a group commit that rolls back only its own transaction.
 *
 * Tests run in parallel against one database, so each uses its own space,
 * client and user names (suffix from the test's pid).
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tests/lib/testenv.h"

static PGconn *pg;
static char sfx[32]; /* unique per test process */

static void
setup(void)
{
	pg = PQconnectdb(testenv_get("WEFT_PG_URL"));
	cr_assert(eq(i64, PQstatus(pg), CONNECTION_OK), "%s",
		  PQerrorMessage(pg));
	snprintf(sfx, sizeof(sfx), "%d", (int)getpid());
}

static void
teardown(void)
{
	PQfinish(pg);
}

TestSuite(apply, .init = setup, .fini = teardown);

/* name with the test's suffix: N("team") -> "team-1234" */
static const char *
N(const char *base)
{
	static char ring[16][64];
	static int next;
	char *out = ring[next++ % 16];

	snprintf(out, 64, "%s-%s", base, sfx);
	return out;
}

static json_t *
sql_json(const char *sql, int nparams, const char *const *params)
{
	PGresult *r =
		PQexecParams(pg, sql, nparams, NULL, params, NULL, NULL, 0);
	json_error_t jerr;
	json_t *j;

	cr_assert(eq(i64, PQresultStatus(r), PGRES_TUPLES_OK), "%s: %s", sql,
		  PQerrorMessage(pg));
	j = json_loads(PQgetvalue(r, 0, 0), JSON_DECODE_ANY, &jerr);
	cr_assert_not_null(j, "bad json from %s: %s", sql, jerr.text);
	PQclear(r);
	return j;
}

/* weft_apply(client, user, mid, ops) with ops as printf-style JSON; %S in
 * the format is not special: names are passed already suffixed */
static json_t *
apply(const char *client, const char *user, long mid, const char *fmt, ...)
{
	char ops[4096], midtxt[32];
	const char *params[4];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(ops, sizeof(ops), fmt, ap);
	va_end(ap);
	snprintf(midtxt, sizeof(midtxt), "%ld", mid);
	params[0] = client;
	params[1] = user;
	params[2] = midtxt;
	params[3] = ops;
	return sql_json("SELECT weft_apply($1, $2, $3::bigint, $4::jsonb)", 4,
			params);
}

static bool
is_true(json_t *j)
{
	return json_is_true(j);
}

static const char *
s_of(json_t *j)
{
	return json_string_value(json_object_get(j, "s"));
}

static json_t *
rec(json_t *res, size_t i)
{
	return json_array_get(json_object_get(res, "records"), i);
}

static long long
ver(json_t *r)
{
	return json_integer_value(json_object_get(r, "ver"));
}

static json_t *
field(json_t *r, const char *name)
{
	return json_object_get(json_object_get(r, "data"), name);
}

/* create a space owned by user with client (mid 1) */
static void
make_space(const char *space, const char *client, const char *user)
{
	json_t *r = apply(client, user, 1,
			  "[{\"op\":\"create\",\"table\":\"spaces\","
			  "\"id\":\"%s\",\"space\":\"%s\",\"data\":{}}]",
			  space, space);

	cr_assert_str_eq(s_of(r), "ack");
	json_decref(r);
}

Test(apply, every_op_kind)
{
	const char *sp = N("team"), *c = N("c"), *u = N("u");
	json_t *r;

	make_space(sp, c, u);
	r = apply(c, u, 2,
		  "[{\"op\":\"create\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"space\":\"%s\",\"data\":{\"title\":\"a\",\"labels\":"
		  "[\"x\"],\"gone\":1}},"
		  "{\"op\":\"set\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"status\",\"value\":\"open\"},"
		  "{\"op\":\"unset\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"gone\"},"
		  "{\"op\":\"list_add\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"labels\",\"value\":\"x\"},"
		  "{\"op\":\"list_add\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"labels\",\"value\":\"y\"},"
		  "{\"op\":\"list_remove\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"labels\",\"value\":\"nope\"},"
		  "{\"op\":\"list_add\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"tags\",\"value\":1},"
		  "{\"op\":\"incr\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"votes\",\"value\":3},"
		  "{\"op\":\"incr\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"votes\",\"value\":-1}]",
		  N("i"), sp, N("i"), N("i"), N("i"), N("i"), N("i"), N("i"),
		  N("i"), N("i"));
	cr_assert_str_eq(s_of(r), "ack", "%s", json_dumps(r, 0));
	cr_assert(eq(i64, json_array_size(json_object_get(r, "records")), 1),
		  "one record touched by nine ops");
	cr_assert(eq(i64, ver(rec(r, 0)), 1), "one version per transaction");
	cr_assert_str_eq(json_string_value(field(rec(r, 0), "status")), "open");
	cr_assert_null(field(rec(r, 0), "gone"), "unset removed the field");
	cr_assert(eq(i64, json_array_size(field(rec(r, 0), "labels")), 2),
		  "list_add of a duplicate is a no-op: [x, y]");
	cr_assert(eq(i64, json_array_size(field(rec(r, 0), "tags")), 1),
		  "list_add on a missing field makes a list");
	cr_assert(eq(i64, json_integer_value(field(rec(r, 0), "votes")), 2),
		  "incr on a missing field starts at 0");
	json_decref(r);

	/* delete makes a tombstone; create brings it back, version moves on */
	r = apply(c, u, 3,
		  "[{\"op\":\"delete\",\"table\":\"issues\",\"id\":\"%s\"}]",
		  N("i"));
	cr_assert(is_true(json_object_get(rec(r, 0), "deleted")));
	cr_assert_null(json_object_get(rec(r, 0), "data"));
	cr_assert(eq(i64, ver(rec(r, 0)), 2));
	json_decref(r);
	r = apply(c, u, 4,
		  "[{\"op\":\"set\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"x\",\"value\":1}]",
		  N("i"));
	cr_assert_str_eq(s_of(r), "reject");
	cr_assert(eq(i64, json_integer_value(json_object_get(r, "code")), -8),
		  "a tombstone is not found");
	json_decref(r);
	r = apply(c, u, 5,
		  "[{\"op\":\"create\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"space\":\"%s\",\"data\":{\"title\":\"b\"}},"
		  "{\"op\":\"list_remove\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"labels\",\"value\":\"x\"}]",
		  N("i"), sp, N("i"));
	cr_assert_str_eq(s_of(r), "ack", "%s", json_dumps(r, 0));
	cr_assert(eq(i64, ver(rec(r, 0)), 3), "re-create bumps past the "
					      "tombstone");
	cr_assert(eq(i64, json_array_size(field(rec(r, 0), "labels")), 0),
		  "list_remove on a missing field leaves an empty list");
	json_decref(r);
}

Test(apply, exactly_once_replay_gap_and_rejection_advance)
{
	const char *sp = N("team"), *c = N("c"), *u = N("u");
	char sql[256];
	json_t *r, *again, *n;

	make_space(sp, c, u);
	r = apply(c, u, 2,
		  "[{\"op\":\"create\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"space\":\"%s\",\"data\":{\"n\":0}}]",
		  N("i"), sp);
	again = apply(c, u, 2,
		      "[{\"op\":\"incr\",\"table\":\"issues\","
		      "\"id\":\"%s\",\"field\":\"n\",\"value\":5}]",
		      N("i"));
	cr_assert(is_true(json_object_get(again, "replay")));
	json_object_del(again, "replay");
	cr_assert(json_equal(r, again), "a replay returns the stored result");
	json_decref(r);
	json_decref(again);
	snprintf(sql, sizeof(sql),
		 "SELECT to_jsonb(count(*)) FROM weft_outbox WHERE "
		 "client_id = '%s' AND mid = 2",
		 c);
	n = sql_json(sql, 0, NULL);
	cr_assert(eq(i64, json_integer_value(n), 1), "no second effect");
	json_decref(n);

	r = apply(c, u, 9, "[]");
	cr_assert_str_eq(s_of(r), "gap");
	cr_assert(
		eq(i64, json_integer_value(json_object_get(r, "expected")), 3));
	json_decref(r);

	/* a rejected mutation advances the id, and its replay is a reject */
	r = apply(c, u, 3,
		  "[{\"op\":\"set\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"n\",\"value\":1,\"expect\":99}]",
		  N("i"));
	cr_assert_str_eq(s_of(r), "reject");
	cr_assert(eq(i64, json_integer_value(json_object_get(r, "code")), -31));
	json_decref(r);
	r = apply(c, u, 3, "[]");
	cr_assert_str_eq(s_of(r), "reject");
	cr_assert(is_true(json_object_get(r, "replay")));
	json_decref(r);
	r = apply(c, u, 4,
		  "[{\"op\":\"set\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"n\",\"value\":1,\"expect\":1}]",
		  N("i"));
	cr_assert_str_eq(s_of(r), "ack", "the client is not wedged");
	cr_assert(eq(i64, ver(rec(r, 0)), 2));
	json_decref(r);

	/* a client id belongs to one user */
	r = apply(c, N("mallory"), 5, "[]");
	cr_assert_str_eq(s_of(r), "foreign");
	json_decref(r);
}

Test(apply, authorisation)
{
	const char *sp = N("team"), *other = N("other");
	const char *ca = N("ca"), *ua = N("alice");
	const char *cb = N("cb"), *ub = N("bob");
	const char *co = N("co"), *uo = N("olga");
	json_t *r;

	make_space(sp, ca, ua);
	make_space(other, co, uo);
	/* bob is not a member: cannot write */
	r = apply(cb, ub, 1,
		  "[{\"op\":\"create\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"space\":\"%s\",\"data\":{}}]",
		  N("i"), sp);
	cr_assert(eq(i64, json_integer_value(json_object_get(r, "code")), -22));
	json_decref(r);
	/* alice (admin) adds bob as a writer; bob writes */
	r = apply(ca, ua, 2,
		  "[{\"op\":\"create\",\"table\":\"members\",\"id\":\"%s:%s\","
		  "\"space\":\"%s\",\"data\":{\"user\":\"%s\","
		  "\"role\":\"writer\"}}]",
		  sp, ub, sp, ub);
	cr_assert_str_eq(s_of(r), "ack", "%s", json_dumps(r, 0));
	json_decref(r);
	r = apply(cb, ub, 2,
		  "[{\"op\":\"create\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"space\":\"%s\",\"data\":{}}]",
		  N("i"), sp);
	cr_assert_str_eq(s_of(r), "ack");
	json_decref(r);
	/* a writer cannot add members */
	r = apply(cb, ub, 3,
		  "[{\"op\":\"create\",\"table\":\"members\",\"id\":\"%s:%s\","
		  "\"space\":\"%s\",\"data\":{\"user\":\"%s\","
		  "\"role\":\"admin\"}}]",
		  sp, N("eve"), sp, N("eve"));
	cr_assert(eq(i64, json_integer_value(json_object_get(r, "code")), -22));
	json_decref(r);
	/* moving a record needs writer in both spaces */
	r = apply(cb, ub, 4,
		  "[{\"op\":\"put\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"space\":\"%s\",\"data\":{}}]",
		  N("i"), other);
	cr_assert(eq(i64, json_integer_value(json_object_get(r, "code")), -22));
	json_decref(r);
	/* alice removes bob; bob can no longer write */
	r = apply(
		ca, ua, 3,
		"[{\"op\":\"delete\",\"table\":\"members\",\"id\":\"%s:%s\"}]",
		sp, ub);
	cr_assert_str_eq(s_of(r), "ack");
	json_decref(r);
	r = apply(cb, ub, 5,
		  "[{\"op\":\"set\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"a\",\"value\":1}]",
		  N("i"));
	cr_assert(eq(i64, json_integer_value(json_object_get(r, "code")), -22));
	json_decref(r);
}

Test(apply, rejection_rolls_back_only_its_own_transaction_in_a_group)
{
	const char *sp = N("team"), *c = N("c"), *u = N("u");
	char a[512], b[512], cc[512];
	PGresult *res;
	json_t *r;

	make_space(sp, c, u);
	snprintf(a, sizeof(a),
		 "SELECT weft_apply('%s-a', '%s', 1, '[{\"op\":\"create\","
		 "\"table\":\"t\",\"id\":\"%s\",\"space\":\"%s\","
		 "\"data\":{}}]')",
		 c, u, N("a"), sp);
	/* b's first op would succeed, its second fails: all of b undone */
	snprintf(b, sizeof(b),
		 "SELECT weft_apply('%s-b', '%s', 1, '[{\"op\":\"create\","
		 "\"table\":\"t\",\"id\":\"%s\",\"space\":\"%s\",\"data\":{}},"
		 "{\"op\":\"set\",\"table\":\"t\",\"id\":\"nope\","
		 "\"field\":\"f\",\"value\":1}]')",
		 c, u, N("b"), sp);
	snprintf(cc, sizeof(cc),
		 "SELECT weft_apply('%s-c', '%s', 1, '[{\"op\":\"create\","
		 "\"table\":\"t\",\"id\":\"%s\",\"space\":\"%s\","
		 "\"data\":{}}]')",
		 c, u, N("c"), sp);
	PQclear(PQexec(pg, "BEGIN"));
	res = PQexec(pg, a);
	cr_assert(eq(i64, PQresultStatus(res), PGRES_TUPLES_OK));
	PQclear(res);
	res = PQexec(pg, b);
	cr_assert(eq(i64, PQresultStatus(res), PGRES_TUPLES_OK),
		  "a rejection does not abort the group: %s",
		  PQerrorMessage(pg));
	cr_assert_not_null(strstr(PQgetvalue(res, 0, 0), "\"reject\""));
	PQclear(res);
	res = PQexec(pg, cc);
	cr_assert(eq(i64, PQresultStatus(res), PGRES_TUPLES_OK));
	PQclear(res);
	res = PQexec(pg, "COMMIT");
	cr_assert(eq(i64, PQresultStatus(res), PGRES_COMMAND_OK));
	PQclear(res);
	snprintf(a, sizeof(a),
		 "SELECT jsonb_agg(id ORDER BY id) FROM weft_records "
		 "WHERE space = '%s' AND tbl = 't'",
		 sp);
	r = sql_json(a, 0, NULL);
	cr_assert(eq(i64, json_array_size(r), 2), "a and c only: %s",
		  json_dumps(r, 0));
	cr_assert_str_eq(json_string_value(json_array_get(r, 0)), N("a"));
	cr_assert_str_eq(json_string_value(json_array_get(r, 1)), N("c"));
	json_decref(r);
	/* b's rejection is stored: its id advanced */
	snprintf(a, sizeof(a),
		 "SELECT to_jsonb(last_mid) FROM weft_clients WHERE "
		 "client_id = '%s-b'",
		 c);
	r = sql_json(a, 0, NULL);
	cr_assert(eq(i64, json_integer_value(r), 1));
	json_decref(r);
}

Test(apply, outbox_gets_one_after_image_per_record_per_transaction)
{
	const char *sp = N("team"), *c = N("c"), *u = N("u");
	char sql[512];
	json_t *r;

	make_space(sp, c, u);
	r = apply(c, u, 2,
		  "[{\"op\":\"create\",\"table\":\"t\",\"id\":\"%s\","
		  "\"space\":\"%s\",\"data\":{}},"
		  "{\"op\":\"set\",\"table\":\"t\",\"id\":\"%s\","
		  "\"field\":\"f\",\"value\":1},"
		  "{\"op\":\"create\",\"table\":\"t\",\"id\":\"%s\","
		  "\"space\":\"%s\",\"data\":{}}]",
		  N("x"), sp, N("x"), N("y"), sp);
	cr_assert_str_eq(s_of(r), "ack");
	json_decref(r);
	snprintf(sql, sizeof(sql),
		 "SELECT jsonb_agg(jsonb_build_object('id', id, 'v', version, "
		 "'op', op, 'data', data) ORDER BY seq) FROM weft_outbox "
		 "WHERE client_id = '%s' AND mid = 2",
		 c);
	r = sql_json(sql, 0, NULL);
	cr_assert(eq(i64, json_array_size(r), 2), "%s", json_dumps(r, 0));
	cr_assert(
		eq(i64,
		   json_integer_value(json_object_get(
			   json_object_get(json_array_get(r, 0), "data"), "f")),
		   1),
		"the after-image, not the first op's image");
	cr_assert(eq(i64,
		     json_integer_value(
			     json_object_get(json_array_get(r, 0), "op")),
		     3),
		  "op of the last change to the record (set)");
	json_decref(r);
}

Test(apply, a_reply_too_large_to_send_is_a_stored_rejection)
{
	const char *sp = N("team"), *c = N("c"), *u = N("u");
	const char *params[8];
	json_t *r;

	make_space(sp, c, u);
	params[0] = c;
	params[1] = u;
	params[2] = "2";
	params[4] = "0";
	params[5] = "256";
	params[6] = NULL;
	params[7] = "40"; /* bytes of rows one reply may carry */
	{
		char ops[512];

		snprintf(ops, sizeof(ops),
			 "[{\"op\":\"create\",\"table\":\"t\",\"id\":\"%s\","
			 "\"space\":\"%s\",\"data\":{\"s\":"
			 "\"0123456789012345678901234567890123456789\"}}]",
			 N("big"), sp);
		params[3] = ops;
		r = sql_json("SELECT weft_apply($1, $2, $3::bigint, $4::jsonb, "
			     "$5::int, $6::int, $7::jsonb, $8::int)",
			     8, params);
	}
	cr_assert_str_eq(s_of(r), "reject", "%s", json_dumps(r, 0));
	cr_assert(eq(i64, json_integer_value(json_object_get(r, "code")), -33));
	json_decref(r);
	r = apply(c, u, 3, "[]");
	cr_assert_str_eq(s_of(r), "ack", "the id advanced past it");
	json_decref(r);
}

Test(apply, a_deleted_space_id_cannot_be_taken_over)
{
	const char *sp = N("team"), *ca = N("ca"), *ua = N("alice");
	const char *ce = N("ce"), *ue = N("eve");
	json_t *r;

	make_space(sp, ca, ua);
	r = apply(ca, ua, 2,
		  "[{\"op\":\"create\",\"table\":\"t\",\"id\":\"%s\","
		  "\"space\":\"%s\",\"data\":{\"secret\":1}},"
		  "{\"op\":\"delete\",\"table\":\"spaces\",\"id\":\"%s\"}]",
		  N("doc"), sp, sp);
	cr_assert_str_eq(s_of(r), "ack", "%s", json_dumps(r, 0));
	json_decref(r);
	r = apply(ce, ue, 1,
		  "[{\"op\":\"create\",\"table\":\"spaces\",\"id\":\"%s\","
		  "\"space\":\"%s\",\"data\":{}}]",
		  sp, sp);
	cr_assert_str_eq(s_of(r), "reject", "%s", json_dumps(r, 0));
	cr_assert(eq(i64, json_integer_value(json_object_get(r, "code")), -9));
	json_decref(r);
}

Test(apply, recreating_a_tombstone_in_another_space_needs_the_old_space)
{
	const char *a = N("a"), *b = N("b");
	const char *ca = N("ca"), *ua = N("alice");
	const char *cb = N("cb"), *ub = N("bob");
	json_t *r;

	make_space(a, ca, ua);
	make_space(b, cb, ub);
	r = apply(ca, ua, 2,
		  "[{\"op\":\"create\",\"table\":\"t\",\"id\":\"%s\","
		  "\"space\":\"%s\",\"data\":{}},"
		  "{\"op\":\"delete\",\"table\":\"t\",\"id\":\"%s\"}]",
		  N("x"), a, N("x"));
	cr_assert_str_eq(s_of(r), "ack");
	json_decref(r);
	/* bob writes only in b: he may not take the id over from a */
	r = apply(cb, ub, 2,
		  "[{\"op\":\"create\",\"table\":\"t\",\"id\":\"%s\","
		  "\"space\":\"%s\",\"data\":{}}]",
		  N("x"), b);
	cr_assert_str_eq(s_of(r), "reject", "%s", json_dumps(r, 0));
	cr_assert(eq(i64, json_integer_value(json_object_get(r, "code")), -22));
	json_decref(r);
}

/* weft_apply_fast() with its arrays as literals; returns "n,n,..." of the
 * transactions it applied, in order, and in last (when not NULL) the
 * result of the last one applied */
static void
apply_fast(char *out, size_t cap, char *last, size_t lastcap,
	   const char *clients, const char *users, const char *mids,
	   const char *tbls, const char *ids, const char *ops,
	   const char *fields, const char *values, int max_record)
{
	char mr[16];
	const char *params[9] = { clients, users,  mids,   tbls, ids,
				  ops,	   fields, values, mr };
	PGresult *r;

	snprintf(mr, sizeof(mr), "%d", max_record);
	r = PQexecParams(pg,
			 "SELECT coalesce(string_agg(o_n::text, ',' ORDER BY "
			 "o_n), ''), coalesce((array_agg(o_result ORDER BY "
			 "o_n DESC))[1], '') FROM weft_apply_fast($1, $2, $3, "
			 "$4, $5, $6, $7, $8, $9::int, 256)",
			 9, NULL, params, NULL, NULL, 0);
	cr_assert(eq(i64, PQresultStatus(r), PGRES_TUPLES_OK), "%s",
		  PQerrorMessage(pg));
	snprintf(out, cap, "%s", PQgetvalue(r, 0, 0));
	if (last)
		snprintf(last, lastcap, "%s", PQgetvalue(r, 0, 1));
	PQclear(r);
}

/* a replay (r, consumed) says what the first answer (JSON text) said,
 * with "replay": true */
static void
assert_replayed(json_t *r, const char *first)
{
	json_t *want = json_loads(first, 0, NULL);

	cr_assert_not_null(want, "%s", first);
	cr_assert(is_true(json_object_get(r, "replay")));
	json_object_del(r, "replay");
	cr_assert(json_equal(want, r), "replayed as answered: %s", first);
	json_decref(want);
	json_decref(r);
}

/* a formatted string, in a buffer of its own */
static const char *
fmt(const char *f, ...)
{
	static char out[512];
	va_list ap;

	va_start(ap, f);
	vsnprintf(out, sizeof(out), f, ap);
	va_end(ap);
	return out;
}

static const char *
sql_text(const char *fmt, ...)
{
	static char out[1024];
	char sql[1024];
	va_list ap;
	PGresult *r;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	r = PQexec(pg, sql);
	cr_assert(eq(i64, PQresultStatus(r), PGRES_TUPLES_OK), "%s: %s", sql,
		  PQerrorMessage(pg));
	snprintf(out, sizeof(out), "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return out;
}

/*
 * A client id's first transaction (mid 1, no client row yet) takes the
 * set-based path: it registers the id and applies.  An id another user
 * holds stays theirs and misses; a second mid 1 of an id just registered
 * misses, and weft_apply() answers it as a replay of the first, from the
 * outbox row.  (Before, every mid 1 missed and took weft_apply() alone.)
 */
Test(apply, a_first_transaction_takes_the_set_based_path)
{
	char sp[64], ua[64], ub[64], id[64], na[64], nb[64], nf[64];
	char clients[256], users[256], ids[256], got[64], again[64];
	char one_user[80], one_id[80], first[1024];
	json_t *r;

	snprintf(sp, sizeof(sp), "%s", N("first"));
	snprintf(ua, sizeof(ua), "%s", N("alice"));
	snprintf(ub, sizeof(ub), "%s", N("bob"));
	snprintf(id, sizeof(id), "%s", N("first-rec"));
	snprintf(na, sizeof(na), "%s", N("new-a"));
	snprintf(nb, sizeof(nb), "%s", N("new-b"));
	snprintf(nf, sizeof(nf), "%s", N("bobs"));
	make_space(sp, N("first-maker"), ua);
	r = apply(N("first-maker"), ua, 2,
		  "[{\"op\":\"create\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"space\":\"%s\",\"data\":{}}]",
		  id, sp);
	cr_assert_str_eq(s_of(r), "ack");
	json_decref(r);
	/* bob's id, registered and never used */
	sql_text("WITH x AS (INSERT INTO weft_clients (client_id, user_id) "
		 "VALUES ('%s', '%s') RETURNING 1) SELECT count(*) FROM x",
		 nf, ub);
	snprintf(clients, sizeof(clients), "{%s,%s,%s}", na, nf, nb);
	snprintf(users, sizeof(users), "{%s,%s,%s}", ua, ua, ua);
	snprintf(ids, sizeof(ids), "{%s,%s,%s}", id, id, id);
	apply_fast(got, sizeof(got), first, sizeof(first), clients, users,
		   "{1,1,1}", "{issues,issues,issues}", ids, "{3,3,3}",
		   "{a,f,b}", "{1,2,3}", 0);
	cr_assert(strcmp(got, "1") == 0 || strcmp(got, "3") == 0,
		  "one new id applies on the record, the other misses: %s",
		  got);
	cr_assert_str_eq(sql_text("SELECT user_id || ' ' || last_mid FROM "
				  "weft_clients WHERE client_id = '%s'",
				  nf),
			 fmt("%s 0", ub), "bob's id is still bob's");
	/* the other new id on its own: applies */
	snprintf(one_user, sizeof(one_user), "{%s}", ua);
	snprintf(one_id, sizeof(one_id), "{%s}", id);
	snprintf(clients, sizeof(clients), "{%s}", got[0] == '1' ? nb : na);
	apply_fast(again, sizeof(again), NULL, 0, clients, one_user, "{1}",
		   "{issues}", one_id, "{3}", "{c}", "{4}", 0);
	cr_assert_str_eq(again, "1");
	cr_assert_str_eq(sql_text("SELECT string_agg(user_id || ' ' || "
				  "last_mid, ',') FROM weft_clients WHERE "
				  "client_id IN ('%s', '%s')",
				  na, nb),
			 fmt("%s 1,%s 1", ua, ua));
	cr_assert_str_eq(sql_text("SELECT version::text FROM weft_records "
				  "WHERE tbl = 'issues' AND id = '%s'",
				  id),
			 "3");
	/* the first one again, racing: misses here, replayed by weft_apply */
	snprintf(clients, sizeof(clients), "{%s}", got[0] == '1' ? na : nb);
	apply_fast(again, sizeof(again), NULL, 0, clients, one_user, "{1}",
		   "{issues}", one_id, "{3}", "{a}", "{1}", 0);
	cr_assert_str_eq(again, "");
	r = apply(got[0] == '1' ? na : nb, ua, 1,
		  "[{\"op\":\"set\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"a\",\"value\":1}]",
		  id);
	assert_replayed(r, first);
	cr_assert_str_eq(sql_text("SELECT version::text FROM weft_records "
				  "WHERE tbl = 'issues' AND id = '%s'",
				  id),
			 "3", "no second effect");
}

/* a JSON string's text without its quotes, in a buffer of its own */
static const char *
json_text(const char *raw)
{
	static char ring[4][256];
	static int next;
	char *out = ring[next++ % 4];
	json_t *j = json_string(raw);
	char *t = json_dumps(j, JSON_ENCODE_ANY);

	cr_assert_not_null(t);
	snprintf(out, 256, "%.*s", (int)strlen(t) - 2, t + 1);
	free(t);
	json_decref(j);
	return out;
}

/* a one-element array literal holding raw: {"..."} with " and \ escaped */
static const char *
array_of(const char *raw)
{
	static char ring[4][256];
	static int next;
	char *out = ring[next++ % 4];
	size_t n = 0;

	out[n++] = '{';
	out[n++] = '"';
	for (const char *c = raw; *c && n < 250; c++) {
		if (*c == '"' || *c == '\\')
			out[n++] = '\\';
		out[n++] = *c;
	}
	out[n++] = '"';
	out[n++] = '}';
	out[n] = '\0';
	return out;
}

/*
 * The set-based path writes its answer as text (0008): a table, id, space,
 * field and value holding quotes, backslashes, control characters and
 * non-ASCII still make one valid answer, equal to what a resend gets.
 */
Test(apply, a_set_based_answer_quotes_what_it_holds)
{
	char sp[64], id[64], cl[64], u[64], last[1024], got[16];
	const char *fld = "t\"i\\e\x01ld";
	const char *val = "li\"ne\n\\\xc3\xa9";
	json_t *r, *want, *rv;

	snprintf(sp, sizeof(sp), "%s", N("q\"sp\\ace"));
	snprintf(id, sizeof(id), "%s", N("q\"u\\o\tte-\xc3\xa9"));
	snprintf(cl, sizeof(cl), "%s", N("quoting"));
	snprintf(u, sizeof(u), "%s", N("alice"));
	make_space(json_text(sp), cl, u);
	r = apply(cl, u, 2,
		  "[{\"op\":\"create\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"space\":\"%s\",\"data\":{}}]",
		  json_text(id), json_text(sp));
	cr_assert_str_eq(s_of(r), "ack");
	json_decref(r);
	want = json_string(val);
	{
		char *vtext = json_dumps(want, JSON_ENCODE_ANY);
		char values[256];

		snprintf(values, sizeof(values), "%s", array_of(vtext));
		free(vtext);
		apply_fast(got, sizeof(got), last, sizeof(last), array_of(cl),
			   array_of(u), "{3}", "{issues}", array_of(id), "{3}",
			   array_of(fld), values, 0);
	}
	cr_assert_str_eq(got, "1", "the set took the set-based path");
	r = json_loads(last, 0, NULL);
	cr_assert_not_null(r, "the answer is JSON: %s", last);
	cr_assert_str_eq(s_of(r), "ack");
	rv = rec(r, 0);
	cr_assert_str_eq(json_string_value(json_object_get(rv, "table")),
			 "issues");
	cr_assert_str_eq(json_string_value(json_object_get(rv, "id")), id);
	cr_assert_str_eq(json_string_value(json_object_get(rv, "space")), sp);
	cr_assert(eq(i64, ver(rv), 2));
	cr_assert(json_equal(field(rv, fld), want), "%s", last);
	json_decref(r);
	json_decref(want);
	/* a resend is answered from the outbox row: the same answer */
	r = apply(cl, u, 3,
		  "[{\"op\":\"set\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"%s\",\"value\":\"x\"}]",
		  json_text(id), json_text(fld));
	assert_replayed(r, last);
}

/*
 * weft_gc_tombstones_from() walks the tombstones in key order, a batch at
 * a time, carrying the key where it stopped: with batches of 2, five old
 * tombstones among young ones all go, the young ones stay, and the
 * table's floor takes their highest version, so the id created again
 * continues above it.
 */
Test(apply, the_tombstone_walk_deletes_old_ones_batch_by_batch)
{
	char sp[64], cl[64], u[64], tbl[64], ops[2048], key[2][256];
	const char *params[4];
	long deleted = 0, batches = 0, scanned = 2;
	json_t *r;
	size_t n = 0;

	snprintf(sp, sizeof(sp), "%s", N("gcw"));
	snprintf(cl, sizeof(cl), "%s", N("gcw-client"));
	snprintf(u, sizeof(u), "%s", N("alice"));
	snprintf(tbl, sizeof(tbl), "%s", N("gcwt"));
	make_space(sp, cl, u);
	for (int pass = 0; pass < 2; pass++) { /* create, then delete, 8 */
		n = (size_t)snprintf(ops, sizeof(ops), "[");
		for (int i = 1; i <= 8; i++)
			n += (size_t)snprintf(
				ops + n, sizeof(ops) - n,
				pass ? "%s{\"op\":\"delete\",\"table\":\"%s\","
				       "\"id\":\"g%d\"}"
				     : "%s{\"op\":\"create\",\"table\":\"%s\","
				       "\"id\":\"g%d\",\"space\":\"%s\","
				       "\"data\":{}}",
				i > 1 ? "," : "", tbl, i, sp);
		snprintf(ops + n, sizeof(ops) - n, "]");
		r = apply(cl, u, pass + 2, "%s", ops);
		cr_assert_str_eq(s_of(r), "ack");
		json_decref(r);
	}
	/* g1..g5 deleted a day ago, g6..g8 just now */
	sql_text("WITH x AS (UPDATE weft_records SET updated_at = now() - "
		 "interval '1 day' WHERE tbl = '%s' AND id IN ('g1', 'g2', "
		 "'g3', 'g4', 'g5') RETURNING 1) SELECT count(*) FROM x",
		 tbl);
	snprintf(key[0], sizeof(key[0]), "%s", tbl); /* start at the table */
	key[1][0] = '\0';
	while (scanned == 2 && batches < 100) {
		PGresult *res;

		params[0] = "3600000";
		params[1] = "2";
		params[2] = key[0];
		params[3] = key[1];
		res = PQexecParams(pg,
				   "SELECT o_deleted, o_scanned, o_tbl, o_id "
				   "FROM weft_gc_tombstones_from($1::bigint, "
				   "$2::int, $3, $4)",
				   4, NULL, params, NULL, NULL, 0);
		cr_assert(eq(i64, PQresultStatus(res), PGRES_TUPLES_OK), "%s",
			  PQerrorMessage(pg));
		deleted += strtol(PQgetvalue(res, 0, 0), NULL, 10);
		scanned = strtol(PQgetvalue(res, 0, 1), NULL, 10);
		if (scanned) {
			snprintf(key[0], sizeof(key[0]), "%s",
				 PQgetvalue(res, 0, 2));
			snprintf(key[1], sizeof(key[1]), "%s",
				 PQgetvalue(res, 0, 3));
		}
		PQclear(res);
		batches++;
		/* past this test's table: the rest is other tests' */
		if (strcmp(key[0], tbl) != 0)
			break;
	}
	cr_assert(eq(i64, deleted, 5), "the five old tombstones");
	cr_assert(le(i64, 4, batches), "in batches of 2 (%ld)", batches);
	cr_assert_str_eq(sql_text("SELECT string_agg(id, ',' ORDER BY id) "
				  "FROM weft_records WHERE tbl = '%s'",
				  tbl),
			 "g6,g7,g8", "the young ones stay");
	cr_assert_str_eq(sql_text("SELECT floor::text FROM weft_version_floor "
				  "WHERE tbl = '%s'",
				  tbl),
			 "2");
	r = apply(cl, u, 4,
		  "[{\"op\":\"create\",\"table\":\"%s\",\"id\":\"g1\","
		  "\"space\":\"%s\",\"data\":{}}]",
		  tbl, sp);
	cr_assert_str_eq(s_of(r), "ack");
	cr_assert(eq(i64, ver(rec(r, 0)), 3), "above the floor of 2");
	json_decref(r);
}

/*
 * Two transactions create one new id at the same moment.  Neither finds a
 * row to lock, so the second insert waits for the first and then meets
 * its row: that is EEXIST, as for any create of an existing id (it was an
 * internal error), and the second client's mid still advances.
 */
Test(apply, a_create_racing_another_is_eexist)
{
	char sp[64], ca[64], cb[64], u[64], ops[512];
	const char *params[4];
	PGconn *other = PQconnectdb(testenv_get("WEFT_PG_URL"));
	PGresult *res;
	json_t *r;
	bool busy;

	cr_assert(eq(i64, PQstatus(other), CONNECTION_OK));
	snprintf(sp, sizeof(sp), "%s", N("race"));
	snprintf(ca, sizeof(ca), "%s", N("race-a"));
	snprintf(cb, sizeof(cb), "%s", N("race-b"));
	snprintf(u, sizeof(u), "%s", N("alice"));
	make_space(sp, ca, u);
	snprintf(ops, sizeof(ops),
		 "[{\"op\":\"create\",\"table\":\"issues\",\"id\":\"%s\","
		 "\"space\":\"%s\",\"data\":{}}]",
		 N("race-rec"), sp);
	PQclear(PQexec(pg, "BEGIN"));
	r = apply(ca, u, 2, "%s", ops); /* applied, not yet committed */
	cr_assert_str_eq(s_of(r), "ack");
	json_decref(r);
	params[0] = cb;
	params[1] = u;
	params[2] = "1";
	params[3] = ops;
	cr_assert(PQsendQueryParams(other,
				    "SELECT weft_apply($1, $2, $3::bigint, "
				    "$4::jsonb)::text",
				    4, NULL, params, NULL, NULL, 0));
	nanosleep(&(struct timespec){ 0, 300 * 1000 * 1000 }, NULL);
	cr_assert(PQconsumeInput(other));
	busy = PQisBusy(other);
	cr_assert(busy, "the second create waits for the first");
	PQclear(PQexec(pg, "COMMIT"));
	res = PQgetResult(other);
	cr_assert(eq(i64, PQresultStatus(res), PGRES_TUPLES_OK), "%s",
		  PQerrorMessage(other));
	r = json_loads(PQgetvalue(res, 0, 0), 0, NULL);
	PQclear(res);
	while ((res = PQgetResult(other)))
		PQclear(res);
	cr_assert_not_null(r);
	cr_assert_str_eq(s_of(r), "reject");
	cr_assert(eq(i64, json_integer_value(json_object_get(r, "code")), -9),
		  "EEXIST, not an internal error: %s",
		  json_string_value(json_object_get(r, "msg")));
	json_decref(r);
	cr_assert_str_eq(sql_text("SELECT last_mid::text FROM weft_clients "
				  "WHERE client_id = '%s'",
				  cb),
			 "1", "the id moved on");
	PQfinish(other);
}

Test(apply, set_based_path_applies_only_the_plain_cases)
{
	char sp[64], ua[64], ub[64], ids[5][64], cl[9][64], got[64];
	char clients[1024], users[1024], idarr[1024], values[1024];
	char big[400], stored[1024];
	json_t *r;

	snprintf(sp, sizeof(sp), "%s", N("fast"));
	snprintf(ua, sizeof(ua), "%s", N("alice"));
	snprintf(ub, sizeof(ub), "%s", N("bob"));
	for (int i = 0; i < 5; i++)
		snprintf(ids[i], sizeof(ids[i]), "%s-%d", N("fi"), i + 1);
	for (int i = 0; i < 9; i++)
		snprintf(cl[i], sizeof(cl[i]), "%s-%d", N("fc"), i + 1);
	make_space(sp, cl[0], ua);
	for (int i = 0; i < 5; i++) {
		r = apply(cl[0], ua, i + 2,
			  "[{\"op\":\"create\",\"table\":\"issues\","
			  "\"id\":\"%s\",\"space\":\"%s\",\"data\":{\"x\":1}}]",
			  ids[i], sp);
		cr_assert_str_eq(s_of(r), "ack");
		json_decref(r);
	}
	r = apply(cl[0], ua, 7,
		  "[{\"op\":\"delete\",\"table\":\"issues\","
		  "\"id\":\"%s\"}]",
		  ids[4]);
	cr_assert_str_eq(s_of(r), "ack");
	json_decref(r);
	r = apply(cl[0], ua, 8,
		  "[{\"op\":\"create\",\"table\":\"members\",\"id\":\"%s:%s\","
		  "\"space\":\"%s\",\"data\":{\"user\":\"%s\","
		  "\"role\":\"reader\"}}]",
		  sp, ub, sp, ub);
	cr_assert_str_eq(s_of(r), "ack");
	json_decref(r);
	/* every other client exists at mid 1 (a rejected no-op each) */
	for (int i = 1; i < 9; i++) {
		r = apply(cl[i], i == 1 ? ub : ua, 1,
			  "[{\"op\":\"set\",\"table\":\"issues\",\"id\":\"%s\","
			  "\"field\":\"x\",\"value\":1}]",
			  N("missing"));
		cr_assert_str_eq(s_of(r), "reject");
		json_decref(r);
	}
	memset(big, 'z', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	/*  1 alice  set i1.a         applies (or 6 does: same record)
	 *  2 bob    set i2           reader: misses
	 *  3 alice's client as bob   foreign: misses
	 *  4 alice  mid 5            a gap: misses
	 *  5 alice  set i5           a tombstone: misses
	 *  6 alice  set i1.b         same record as 1: one of them misses
	 *  7 alice  set i3 = 399 z   over the 200-byte record limit
	 *  8 alice  set members      a system table: never here
	 *  9 alice  unset i4.x       applies */
	snprintf(clients, sizeof(clients), "{%s,%s,%s,%s,%s,%s,%s,%s,%s}",
		 cl[0], cl[1], cl[2], cl[3], cl[4], cl[5], cl[6], cl[7], cl[8]);
	snprintf(users, sizeof(users), "{%s,%s,%s,%s,%s,%s,%s,%s,%s}", ua, ub,
		 ub, ua, ua, ua, ua, ua, ua);
	snprintf(idarr, sizeof(idarr), "{%s,%s,%s,%s,%s,%s,%s,%s:%s,%s}",
		 ids[0], ids[1], ids[1], ids[1], ids[4], ids[0], ids[2], sp, ua,
		 ids[3]);
	snprintf(values, sizeof(values), "{1,2,3,4,5,6,\"\\\"%s\\\"\",8,null}",
		 big);
	apply_fast(got, sizeof(got), stored, sizeof(stored), clients, users,
		   "{9,2,2,5,2,2,2,2,2}",
		   "{issues,issues,issues,issues,issues,issues,issues,members,"
		   "issues}",
		   idarr, "{3,3,3,3,3,3,3,3,4}", "{a,a,a,a,a,b,a,role,x}",
		   values, 200);
	cr_assert(strcmp(got, "1,9") == 0 || strcmp(got, "6,9") == 0,
		  "applied: %s", got);
	/* only the applied ones moved their client ids and wrote outbox rows */
	cr_assert_str_eq(sql_text("SELECT string_agg(last_mid::text, ',' ORDER "
				  "BY client_id) FROM weft_clients WHERE "
				  "client_id LIKE '%s-%%'",
				  N("fc")),
			 strcmp(got, "1,9") == 0 ? "9,1,1,1,1,1,1,1,2"
						 : "8,1,1,1,1,2,1,1,2");
	cr_assert_str_eq(sql_text("SELECT count(*) FROM weft_outbox WHERE "
				  "client_id LIKE '%s-%%' AND mid >= 2 AND "
				  "client_id <> '%s'",
				  N("fc"), cl[0]),
			 strcmp(got, "1,9") == 0 ? "1" : "2");
	cr_assert_str_eq(sql_text("SELECT version || ' ' || data::text FROM "
				  "weft_records WHERE tbl = 'issues' AND "
				  "id = '%s'",
				  ids[3]),
			 "2 {}");
	cr_assert_str_eq(sql_text("SELECT version::text FROM weft_records "
				  "WHERE tbl = 'issues' AND id = '%s'",
				  ids[2]),
			 "1");
	/* an ack is not stored: its outbox row answers a resend, with what
	 * the set-based path answered */
	cr_assert_str_eq(sql_text("SELECT count(*) FROM weft_client_results "
				  "WHERE client_id = '%s'",
				  cl[8]),
			 "1", "the rejection of mid 1 only");
	r = apply(cl[8], ua, 2,
		  "[{\"op\":\"unset\",\"table\":\"issues\",\"id\":\"%s\","
		  "\"field\":\"x\"}]",
		  ids[3]);
	cr_assert_str_eq(s_of(r), "ack");
	cr_assert(eq(i64, ver(rec(r, 0)), 2));
	cr_assert_null(field(rec(r, 0), "x"));
	assert_replayed(r, stored);
	cr_assert_str_eq(sql_text("SELECT version::text FROM weft_records "
				  "WHERE tbl = 'issues' AND id = '%s'",
				  ids[3]),
			 "2", "no second effect");
}
