/*
 * migrate.c - versioned, idempotent schema migrations (see migrate.h).
 */
#include "services/shared/migrate.h"

#include <ctype.h>
#include <dirent.h>
#include <libpq-fe.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/error.h>

#include "common/file.h"

#include "common/banned.h"

/* MIGRATE_MAX_FILES - migrations in one directory. */
#define MIGRATE_MAX_FILES 1024
/* MIGRATE_MAX_BYTES - one migration file. */
#define MIGRATE_MAX_BYTES (4u << 20)

static int
cmp_names(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* "0002_core.sql" -> 2; -1 if the name is not NNNN_*.sql */
static int
version_of(const char *name)
{
	size_t n = strlen(name);

	if (n < 10 || !isdigit((unsigned char)name[0]) ||
	    !isdigit((unsigned char)name[1]) ||
	    !isdigit((unsigned char)name[2]) ||
	    !isdigit((unsigned char)name[3]) || name[4] != '_' ||
	    strcmp(name + n - 4, ".sql") != 0)
		return -1;
	return (name[0] - '0') * 1000 + (name[1] - '0') * 100 +
	       (name[2] - '0') * 10 + (name[3] - '0');
}

static bool
ok(PGconn *pg, PGresult *r, const char *what, char *why, size_t whylen)
{
	ExecStatusType st = PQresultStatus(r);
	bool good = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

	if (!good)
		snprintf(why, whylen, "%s: %s", what, PQerrorMessage(pg));
	return good;
}

/* one file in its own transaction; 1 applied, 0 already there, <0 error */
static int
apply_one(PGconn *pg, const char *dir, const char *name, char *why,
	  size_t whylen)
{
	char path[1024], ver[16], label[256];
	const char *params[2] = { ver, label };
	PGresult *r;
	char *sql;
	int rc = WEFT_EINVAL;

	snprintf(ver, sizeof(ver), "%d", version_of(name));
	/* recorded as deploy/local/migrate does: "0002_core.sql" -> "core" */
	snprintf(label, sizeof(label), "%.*s", (int)(strlen(name) - 9),
		 name + 5);
	PQclear(PQexec(pg, "BEGIN"));
	snprintf(path, sizeof(path), "SELECT pg_advisory_xact_lock(%d)",
		 MIGRATE_LOCK_KEY);
	r = PQexec(pg, path);
	if (!ok(pg, r, "lock", why, whylen))
		goto out_rollback;
	PQclear(r);
	r = PQexecParams(pg,
			 "SELECT name FROM weft_schema_migrations WHERE "
			 "version = $1::int",
			 1, NULL, params, NULL, NULL, 0);
	if (!ok(pg, r, "read weft_schema_migrations", why, whylen))
		goto out_rollback;
	if (PQntuples(r) == 1) {
		if (strcmp(PQgetvalue(r, 0, 0), label) != 0) {
			snprintf(why, whylen,
				 "version %s is recorded as '%s', but the file "
				 "is '%s': never rename or reuse a version",
				 ver, PQgetvalue(r, 0, 0), name);
			goto out_rollback;
		}
		PQclear(r);
		PQclear(PQexec(pg, "COMMIT"));
		return 0;
	}
	PQclear(r);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (file_read(path, MIGRATE_MAX_BYTES, &sql, NULL) != 0) {
		snprintf(why, whylen, "cannot read '%s'", path);
		r = NULL;
		rc = WEFT_EIO;
		goto out_rollback;
	}
	r = PQexec(pg, sql);
	free(sql);
	if (!ok(pg, r, name, why, whylen))
		goto out_rollback;
	PQclear(r);
	if (PQtransactionStatus(pg) != PQTRANS_INTRANS) {
		snprintf(why, whylen,
			 "%s ends the transaction itself (no "
			 "BEGIN/COMMIT in migrations)",
			 name);
		r = NULL;
		goto out_rollback;
	}
	r = PQexecParams(pg,
			 "INSERT INTO weft_schema_migrations (version, name) "
			 "VALUES ($1::int, $2)",
			 2, NULL, params, NULL, NULL, 0);
	if (!ok(pg, r, "record the migration", why, whylen))
		goto out_rollback;
	PQclear(r);
	r = PQexec(pg, "COMMIT");
	if (!ok(pg, r, "commit", why, whylen))
		goto out_rollback;
	PQclear(r);
	return 1;
out_rollback:
	PQclear(r);
	PQclear(PQexec(pg, "ROLLBACK"));
	return rc;
}

int
migrate_run(const char *pg_url, const char *dir, int *applied, char *why,
	    size_t whylen)
{
	char *names[MIGRATE_MAX_FILES];
	int n = 0, rc = 0;
	struct dirent *e;
	PGconn *pg;
	PGresult *r;
	DIR *d;

	*applied = 0;
	d = opendir(dir);
	if (!d) {
		snprintf(why, whylen, "cannot open migrations dir '%s'", dir);
		return WEFT_EIO;
	}
	while ((e = readdir(d)) && n < MIGRATE_MAX_FILES)
		if (version_of(e->d_name) >= 0)
			names[n++] = strdup(e->d_name);
	closedir(d);
	qsort(names, (size_t)n, sizeof(names[0]), cmp_names);
	for (int i = 1; i < n; i++) {
		if (version_of(names[i]) == version_of(names[i - 1])) {
			snprintf(why, whylen, "'%s' and '%s' share a version",
				 names[i - 1], names[i]);
			rc = WEFT_EINVAL;
			goto out_free;
		}
	}
	pg = PQconnectdb(pg_url);
	if (PQstatus(pg) != CONNECTION_OK) {
		snprintf(why, whylen, "cannot connect: %s", PQerrorMessage(pg));
		PQfinish(pg);
		rc = WEFT_EUNAVAILABLE;
		goto out_free;
	}
	PQclear(PQexec(pg, "SET client_min_messages = warning"));
	r = PQexec(pg, "CREATE TABLE IF NOT EXISTS weft_schema_migrations ("
		       "version int PRIMARY KEY, name text NOT NULL, "
		       "applied_at timestamptz NOT NULL DEFAULT now())");
	if (!ok(pg, r, "create weft_schema_migrations", why, whylen))
		rc = WEFT_EINVAL;
	PQclear(r);
	for (int i = 0; i < n && !rc; i++) {
		int one = apply_one(pg, dir, names[i], why, whylen);

		if (one < 0)
			rc = one;
		else
			*applied += one;
	}
	PQfinish(pg);
out_free:
	for (int i = 0; i < n; i++)
		free(names[i]);
	return rc;
}
