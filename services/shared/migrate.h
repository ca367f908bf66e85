/*
 * migrate.h - apply deploy/migrations/NNNN_name.sql to a database, in
 * order, each exactly once (the same contract as deploy/local/migrate,
 * for services and containers that have no shell tools).
 *
 * Each file runs in one transaction together with its row in
 * weft_schema_migrations, under a transaction-level advisory lock, so
 * concurrent migrators apply each version once.  A file may not end the
 * transaction itself.
 */
#ifndef WEFT_SVC_MIGRATE_H
#define WEFT_SVC_MIGRATE_H

#include <stddef.h>

/* MIGRATE_LOCK_KEY - the advisory lock every weft migrator takes ('weft'
 * in ASCII); deploy/local/migrate uses the same key. */
#define MIGRATE_LOCK_KEY 2003133044

/*
 * migrate_run - apply what is missing from dir to the database at pg_url;
 * *applied counts the files applied now.  Errors: WEFT_EIO (dir, files),
 * WEFT_EUNAVAILABLE (cannot connect), WEFT_EINVAL (a file failed, ended
 * the transaction, or a recorded version has another name); why says
 * which file and what Postgres said.
 */
int migrate_run(const char *pg_url, const char *dir, int *applied, char *why,
		size_t whylen);

#endif
