/*
 * pgrestart_test.c - Postgres restarts under a stream of writes: no ack is
 * ever false, no acked write is lost, and weft-write recovers by itself.
 *
 * The test runs its own Postgres (deploy/local/stack in a scratch
 * directory), since the shared one serves other tests in parallel.  A
 * client creates one record per transaction, waiting for each answer and
 * resending the same mutation id on EUNAVAILABLE, as libweft does; a child
 * process stops and restarts the database meanwhile.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <weft/error.h>

#include "common/clock.h"
#include "services/shared/auth.h"
#include "tests/lib/proc.h"
#include "tests/lib/wclient.h"

#define S(x)   proto_str_c(x)
#define WRITES 150

static char dir[64];
static struct proc svc; /* killed by teardown if a check failed */

static void
teardown(void)
{
	if (svc.pid > 0)
		kill(svc.pid, SIGKILL);
	proc_stack_destroy(dir);
}

Test(pgrestart, no_false_ack_no_lost_write, .fini = teardown, .timeout = 180)
{
	const char *script = getenv("WEFT_STACK_SCRIPT");
	struct proto_msg r;
	char url[256], sql[256], id[32];
	struct proto_op op;
	struct wclient c;
	bool restarted = false;
	uint64_t mid = 1, t0;
	int acked = 0, unavailable = 0, status = -1;
	char *tok;
	pid_t chaos;
	PGconn *pg;
	PGresult *res;

	cr_assert_not_null(script, "WEFT_STACK_SCRIPT not set");
	proc_stack_up(dir, url);
	proc_start_write_pg(&svc, url, NULL);
	cr_assert(eq(i64, wclient_dial(&c, svc.url), 0));
	tok = auth_mint_hs256(PROC_SECRET, "u", (int64_t)time(NULL), 3600);
	cr_assert(eq(i64, wclient_hello(&c, tok, "c", &r, 5000), 0));
	cr_assert(eq(i64, r.type, PROTO_WELCOME));
	free(tok);

	chaos = fork();
	cr_assert(chaos >= 0);
	if (chaos == 0) { /* restart Postgres twice, under load */
		char cmd[2048];

		for (int k = 0; k < 2; k++) {
			usleep(700000);
			snprintf(cmd, sizeof(cmd),
				 "%s down --dir %s >/dev/null && sleep 1 && "
				 "{ %s up --dir %s --ports auto >%s/chaos.log"
				 " 2>&1 || { cat %s/chaos.log >&2; false; }; }",
				 script, dir, script, dir, dir, dir);
			if (system(cmd) != 0)
				_exit(1);
		}
		_exit(0);
	}
	t0 = clock_now_ms();
	/* write until both restarts are over and at least WRITES landed */
	while ((acked < WRITES || !restarted) && clock_now_ms() - t0 < 120000) {
		struct proto_msg t = { .type = PROTO_TXN };

		snprintf(id, sizeof(id), "r%llu", (unsigned long long)mid);
		op = (struct proto_op){
			.kind = PROTO_OP_CREATE,
			.table = S(mid == 1 ? "spaces" : "rows"),
			.id = S(mid == 1 ? "sp" : id),
			.space = S("sp"),
			.data = { (const uint8_t *)"\x80", 1 }
		};
		t.u.txn = (struct proto_txn){ mid, S("c"), mid,
					      PROTO_LIST(1, &op) };
		cr_assert(eq(i64, wclient_send(&c, &t), 0));
		cr_assert(eq(i64, wclient_recv(&c, &r, 30000), 0),
			  "the service answers even while Postgres is down");
		if (r.type == PROTO_ERROR &&
		    (r.u.error.code == WEFT_EUNAVAILABLE)) {
			unavailable++;
			usleep(100000); /* then resend the same mid */
			continue;
		}
		if (r.type == PROTO_BACKOFF) {
			usleep(r.u.backoff.retry_ms * 1000u);
			continue;
		}
		cr_assert(eq(i64, r.type, PROTO_ACK), "mid %llu: got %s",
			  (unsigned long long)mid, proto_type_name(r.type));
		acked++;
		mid++;
		if (!restarted && waitpid(chaos, &status, WNOHANG) == chaos)
			restarted = true;
	}
	if (!restarted)
		waitpid(chaos, &status, 0);
	cr_assert(eq(i64, status, 0), "the restarts worked");
	cr_assert(ge(i64, acked, WRITES), "writes kept being acked");
	cr_assert_gt(unavailable, 0,
		     "the restarts were felt (else this "
		     "test proves nothing)");
	wclient_close(&c);
	proc_stop(&svc);

	pg = PQconnectdb(url);
	cr_assert(eq(i64, PQstatus(pg), CONNECTION_OK));
	snprintf(sql, sizeof(sql),
		 "SELECT count(*), count(DISTINCT id), max(version) FROM "
		 "weft_records WHERE tbl = 'rows'");
	res = PQexec(pg, sql);
	cr_assert(eq(i64, PQresultStatus(res), PGRES_TUPLES_OK));
	cr_assert(eq(i64, strtol(PQgetvalue(res, 0, 0), NULL, 10), acked - 1),
		  "every acked create is there, nothing more");
	cr_assert(eq(i64, strtol(PQgetvalue(res, 0, 1), NULL, 10), acked - 1));
	cr_assert_str_eq(PQgetvalue(res, 0, 2), "1", "none applied twice");
	PQclear(res);
	res = PQexec(pg, "SELECT last_mid FROM weft_clients WHERE "
			 "client_id = 'c'");
	cr_assert(eq(i64, strtol(PQgetvalue(res, 0, 0), NULL, 10), acked),
		  "the client's last mid is the last acked");
	PQclear(res);
	PQfinish(pg);
}
