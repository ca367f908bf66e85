/*
 * sqlite_peek.c - a process that is not the test: reads one integer from a
 * SQLite file with plain SQLite, as an app's other process or the sqlite3
 * shell would.  client_test execs it, since a forked child would share the
 * test's in-memory SQLite state (its locks and shared-memory index).
 *
 *   sqlite_peek FILE SQL [HOLD_MS]
 *       exit 10 + the first column of the first row, 2 if SQLite said the
 *       database is locked, 1 for anything else.  With HOLD_MS, after the
 *       read it prints "read" and keeps the file open that long, as an
 *       idle sqlite3 shell does.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

int
main(int argc, char **argv)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;
	int rc, v = -1;

	if (argc != 3 && argc != 4) {
		fprintf(stderr, "usage: sqlite_peek FILE SQL [HOLD_MS]\n");
		return 1;
	}
	rc = sqlite3_open_v2(argv[1], &db, SQLITE_OPEN_READONLY, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_prepare_v2(db, argv[2], -1, &q, NULL);
	if (rc == SQLITE_OK)
		rc = sqlite3_step(q);
	if (rc == SQLITE_ROW)
		v = sqlite3_column_int(q, 0);
	else
		fprintf(stderr, "sqlite_peek: %s\n", sqlite3_errmsg(db));
	sqlite3_finalize(q);
	if (argc == 4 && rc == SQLITE_ROW) {
		long ms = strtol(argv[3], NULL, 10);
		struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

		printf("read\n");
		fflush(stdout);
		nanosleep(&ts, NULL);
	}
	sqlite3_close(db);
	if (rc == SQLITE_ROW)
		return v >= 0 && v < 200 ? 10 + v : 1;
	return rc == SQLITE_BUSY ? 2 : 1;
}
