/*
 * client_crash_helper.c - a libweft process for client_test.c to kill.
 *
 *   client_crash_helper STORE SCHEMA WRITE_URL FANOUT_URL SECRET run|sync
 *
 * run:  open STORE (syncing with the services, subscribed to the space
 *       "crash") and commit, as fast as it can, transactions of one incr
 *       by 1 of issues/k's priority, until killed: kill -9 lands
 *       mid-commit, mid-push and while pushes and acks are applied.
 * sync: open STORE, wait until everything is sent and answered, exit 0
 *       (1 if that takes more than 60 s).
 * The token is alice's, signed with SECRET.
 */
#define _DEFAULT_SOURCE
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <weft/weft.h>

#include "services/shared/auth.h"

static struct auth_minter minter = { NULL, "alice", "" };

int
main(int argc, char **argv)
{
	struct weft_options o = { 0 };
	const char *fan[1];
	char err[256] = "";
	weft_store *st;
	int rc;

	if (argc != 7)
		return 2;
	minter.secret = argv[5];
	fan[0] = argv[4];
	o.path = argv[1];
	o.schema_path = argv[2];
	o.write_url = argv[3];
	o.fanout_urls = fan;
	o.nfanout = 1;
	o.token_fn = auth_minter_token;
	o.token_arg = &minter;
	o.errbuf = err;
	o.errlen = sizeof(err);
	rc = weft_open(&o, &st);
	if (rc) {
		fprintf(stderr, "client_crash_helper: %s\n", err);
		return 1;
	}
	if (strcmp(argv[6], "sync") == 0) {
		rc = weft_wait_synced(st, 60000);
		weft_close(st);
		return rc ? 1 : 0;
	}
	weft_subscribe_space(st, "crash");
	for (;;) {
		weft_txn *tx;

		if (weft_begin(st, &tx) == 0 &&
		    weft_incr(tx, "issues", "k", "priority", "1") == 0)
			weft_commit(tx, NULL);
		usleep(300);
	}
}
