/*
 * harness_test.c - the servers the harness started are the ones weft
 * needs: Postgres with logical decoding, Redis with AOF, both reachable
 * from C through libpq and hiredis, on loopback.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <hiredis.h>
#include <libpq-fe.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/testenv.h"

static PGconn *
pg(void)
{
	PGconn *c = PQconnectdb(testenv_get("WEFT_PG_URL"));

	cr_assert(eq(i64, PQstatus(c), CONNECTION_OK), "connect '%s': %s",
		  testenv_get("WEFT_PG_URL"), PQerrorMessage(c));
	return c;
}

static char *
pg_scalar(PGconn *c, const char *sql)
{
	static char out[256];
	PGresult *r = PQexec(c, sql);

	cr_assert(eq(i64, PQresultStatus(r), PGRES_TUPLES_OK), "%s: %s", sql,
		  PQerrorMessage(c));
	snprintf(out, sizeof(out), "%s", PQgetvalue(r, 0, 0));
	PQclear(r);
	return out;
}

static redisContext *
redis(void)
{
	long port = strtol(testenv_get("WEFT_REDIS_PORT"), NULL, 10);
	redisContext *c = redisConnect("127.0.0.1", (int)port);

	cr_assert(c && !c->err, "connect redis :%ld: %s", port,
		  c ? c->errstr : "no memory");
	return c;
}

Test(harness, postgres_has_logical_decoding)
{
	PGconn *c = pg();

	cr_assert_str_eq(pg_scalar(c, "SHOW wal_level"), "logical");
	cr_assert_str_eq(pg_scalar(c, "SELECT rolreplication::text FROM "
				      "pg_roles WHERE rolname = current_user"),
			 "true");
	cr_assert_str_eq(pg_scalar(c, "SHOW listen_addresses"), "127.0.0.1");
	PQfinish(c);
}

Test(harness, postgres_migrations_applied_once)
{
	PGconn *c = pg();

	cr_assert_str_eq(pg_scalar(c, "SELECT count(*) FROM "
				      "weft_schema_migrations WHERE "
				      "version = 1"),
			 "1");
	PQfinish(c);
}

Test(harness, redis_has_aof_and_rejects_replayed_stream_ids)
{
	redisContext *c = redis();
	redisReply *r;

	r = redisCommand(c, "CONFIG GET appendonly");
	cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
	cr_assert_str_eq(r->element[1]->str, "yes");
	freeReplyObject(r);
	r = redisCommand(c, "DEL harness:s");
	freeReplyObject(r);
	/* the relay's idempotence rests on this: an explicit ID at or
	 * below the top of the stream is refused */
	r = redisCommand(c, "XADD harness:s 100-0 k v");
	cr_assert(r && r->type == REDIS_REPLY_STRING, "first XADD");
	cr_assert_str_eq(r->str, "100-0");
	freeReplyObject(r);
	r = redisCommand(c, "XADD harness:s 100-0 k v");
	cr_assert(r && r->type == REDIS_REPLY_ERROR, "replayed XADD must fail");
	cr_assert_not_null(strstr(r->str, "equal or smaller"), "got: %s",
			   r->str);
	freeReplyObject(r);
	redisFree(c);
}
