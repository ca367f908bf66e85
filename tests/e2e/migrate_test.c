/*
 * migrate_test.c - weft-write --migrate on an empty database applies every
 * migration once, a second run applies nothing, and the history is the
 * one deploy/local/migrate keeps (the two interoperate).
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tests/lib/proc.h"

static char dir[64];

static void
teardown(void)
{
	proc_stack_destroy(dir);
}

static int
run(const char *url, char *out, size_t cap)
{
	char cmd[1024];
	FILE *p;
	size_t n;

	snprintf(cmd, sizeof(cmd), "%s --migrate --pg-url '%s' 2>&1",
		 getenv("WEFT_WRITE_BIN"), url);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	n = fread(out, 1, cap - 1, p);
	out[n] = '\0';
	return pclose(p);
}

Test(migrate, applies_each_migration_once, .fini = teardown, .timeout = 120)
{
	char url[256], out[512];
	PGconn *pg;
	PGresult *r;

	proc_stack_up(dir, url); /* the stack migrated it with the script */
	pg = PQconnectdb(url);
	cr_assert(eq(i64, PQstatus(pg), CONNECTION_OK));
	cr_assert(eq(i64, run(url, out, sizeof(out)), 0), "%s", out);
	cr_assert_not_null(strstr(out, "applied: 0"), "already there: %s", out);
	/* empty the database, then migrate from scratch */
	PQclear(PQexec(pg, "SET client_min_messages = warning"));
	r = PQexec(pg, "DROP PUBLICATION weft_outbox_pub; DROP SCHEMA public "
		       "CASCADE; CREATE SCHEMA public");
	cr_assert(eq(i64, PQresultStatus(r), PGRES_COMMAND_OK), "%s",
		  PQerrorMessage(pg));
	PQclear(r);
	cr_assert(eq(i64, run(url, out, sizeof(out)), 0), "%s", out);
	cr_assert_not_null(strstr(out, "applied: 8"), "%s", out);
	cr_assert(eq(i64, run(url, out, sizeof(out)), 0), "%s", out);
	cr_assert_not_null(strstr(out, "applied: 0"), "idempotent: %s", out);
	r = PQexec(pg, "SELECT string_agg(version || ':' || name, ',' ORDER "
		       "BY version) FROM weft_schema_migrations");
	cr_assert_str_eq(PQgetvalue(r, 0, 0),
			 "1:bootstrap,2:core,3:results_age,"
			 "4:acks_from_outbox,5:tombstone_gc,"
			 "6:tombstone_gc_scan,7:create_race,"
			 "8:fast_ack_text");
	PQclear(r);
	r = PQexec(pg, "SELECT count(*) FROM pg_publication_tables WHERE "
		       "pubname = 'weft_outbox_pub' AND tablename = "
		       "'weft_outbox'");
	cr_assert_str_eq(PQgetvalue(r, 0, 0), "1",
			 "the publication covers only the outbox");
	PQclear(r);
	PQfinish(pg);
}
