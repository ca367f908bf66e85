/*
 * group_test.c - group commit through the real service: client
 * transactions that share one Postgres transaction succeed or fail each
 * on its own, whichever path (set-based or weft_apply()) takes them.
 *
 * The tests hold a row lock so that weft-write's only Postgres worker is
 * stuck in one group: the first queues more transactions behind it, which
 * then commit together (the rows' xmin proves it); the second sends the
 * same client transaction to a second weft-write meanwhile.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <libpq-fe.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <weft/error.h>

#include "services/shared/auth.h"
#include "tests/lib/proc.h"
#include "tests/lib/testenv.h"
#include "tests/lib/wclient.h"

#define S(x)	proto_str_c(x)
#define WAIT_MS 10000

static struct proc svc;
static PGconn *pg;
static char sfx[32];

static void
setup(void)
{
	static const char *const one_worker[] = { "--pg-workers=1", NULL };

	snprintf(sfx, sizeof(sfx), "%d-%ld", (int)getpid(), (long)time(NULL));
	setenv("WEFT_TEST_PG_URL", testenv_get("WEFT_PG_URL"), 1);
	proc_start_write(&svc, one_worker);
	pg = PQconnectdb(testenv_get("WEFT_PG_URL"));
	cr_assert(eq(i64, PQstatus(pg), CONNECTION_OK));
}

static void
teardown(void)
{
	PQfinish(pg);
	proc_stop(&svc);
}

TestSuite(group, .init = setup, .fini = teardown, .timeout = 60);

/* a name unique to this run: base-sfx, into out[80] */
static const char *
name(char *out, const char *base)
{
	snprintf(out, 80, "%s-%s", base, sfx);
	return out;
}

/* the first column of the first row of a query, into a static buffer */
static char *
q1(const char *fmt, ...)
{
	static char out[1024];
	char sql[1024];
	va_list ap;
	PGresult *r;

	va_start(ap, fmt);
	vsnprintf(sql, sizeof(sql), fmt, ap);
	va_end(ap);
	r = PQexec(pg, sql);
	cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql,
		  PQresultErrorMessage(r));
	snprintf(out, sizeof(out), "%s",
		 PQntuples(r) ? PQgetvalue(r, 0, 0) : "(none)");
	PQclear(r);
	return out;
}

/* assert that a query's first value is want */
#define EXPECT_Q(want, ...)                                                 \
	do {                                                                \
		const char *got_ = q1(__VA_ARGS__);                         \
		cr_assert(strcmp(got_, (want)) == 0, "%s: got %s, want %s", \
			  #want, got_, (want));                             \
	} while (0)

static struct proto_bytes
str_value(const char *s)
{
	static uint8_t store[8][64];
	static int next;
	uint8_t *d = store[next++ % 8];
	size_t n = strlen(s);

	d[0] = (uint8_t)(0xa0 | n); /* fixstr: short test strings */
	memcpy(d + 1, s, n);
	return (struct proto_bytes){ d, (uint32_t)(n + 1) };
}

static void
send_txn(struct wclient *c, uint64_t rid, const char *client, uint64_t mid,
	 const struct proto_op *ops, uint32_t n)
{
	struct proto_msg m = { .type = PROTO_TXN };

	m.u.txn = (struct proto_txn){ rid, S(client), mid, PROTO_LIST(n, ops) };
	cr_assert(eq(i64, wclient_send(c, &m), 0));
}

/* the answer to rid (answers may come in any order) */
struct answer {
	int type;
	int code;
};

static void
collect(struct wclient *c, struct answer *out, int n)
{
	for (int got = 0; got < n; got++) {
		struct proto_msg r;
		uint64_t rid;

		cr_assert(eq(i64, wclient_recv(c, &r, WAIT_MS), 0),
			  "answer %d of %d", got + 1, n);
		rid = r.type == PROTO_ACK      ? r.u.ack.rid
		      : r.type == PROTO_REJECT ? r.u.reject.rid
					       : 0;
		cr_assert(rid >= 1 && (int)rid <= n, "got %s",
			  proto_type_name(r.type));
		out[rid - 1].type = (int)r.type;
		out[rid - 1].code =
			r.type == PROTO_REJECT ? r.u.reject.code : 0;
	}
}

/* dial url and say HELLO as alice */
static void
dial_hello(struct wclient *c, const char *url)
{
	struct proto_msg r;
	char *tok = auth_mint_hs256(PROC_SECRET, "alice", (int64_t)time(NULL),
				    3600);

	cr_assert(eq(i64, wclient_dial(c, url), 0));
	cr_assert(eq(i64, wclient_hello(c, tok, "group", &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_WELCOME));
	free(tok);
}

/* as send_txn, with one `set` of field to the string value */
static void
send_set(struct wclient *c, uint64_t rid, const char *client, uint64_t mid,
	 const char *id, const char *field, const char *value)
{
	struct proto_op op = { .kind = PROTO_OP_SET,
			       .table = S("issues"),
			       .id = S(id),
			       .field = S(field),
			       .value = str_value(value) };

	send_txn(c, rid, client, mid, &op, 1);
}

/* hold a row lock on issues/id in pg's transaction, opened here */
static void
hold_row(const char *id)
{
	PQclear(PQexec(pg, "BEGIN"));
	q1("SELECT id FROM weft_records WHERE tbl = 'issues' AND id = '%s' "
	   "FOR UPDATE",
	   id);
}

/* wait until some transaction waits for a lock (a worker, for the row) */
static void
wait_for_a_lock_waiter(void)
{
	bool waiting = false;

	for (int i = 0; i < 100 && !waiting; i++) {
		waiting = strcmp(q1("SELECT count(*) FROM pg_locks WHERE NOT "
				    "granted"),
				 "0") != 0;
		if (!waiting)
			usleep(50000);
	}
	cr_assert(waiting, "the worker waits for the lock");
}

static int64_t
metric(const char *name_)
{
	static char body[65536];
	char key[128];
	const char *p;

	cr_assert(eq(i64, proc_http_get(&svc, "/metrics", body, sizeof(body)),
		     200));
	snprintf(key, sizeof(key), "\n%s ", name_);
	p = strstr(body, key);
	cr_assert_not_null(p, "%s in /metrics", name_);
	return strtoll(p + strlen(key), NULL, 10);
}

Test(group, each_client_transaction_fails_alone_within_one_commit)
{
	char sp[80], owner[80], blk[80], x[4][80], none[80], cl[6][80];
	struct proto_op op, two[2];
	struct answer ans[7] = { 0 };
	struct wclient c;
	char xmin[4][32], x2_before[64];
	int64_t fast0;
	PGresult *res;

	name(sp, "grp");
	name(owner, "grp-owner");
	name(blk, "blk");
	name(none, "nothere");
	for (int i = 0; i < 4; i++) {
		char base[16];

		snprintf(base, sizeof(base), "x%d", i + 1);
		name(x[i], base);
	}
	for (int i = 0; i < 6; i++) {
		char base[16];

		snprintf(base, sizeof(base), "gc%d", i);
		name(cl[i], base);
	}
	dial_hello(&c, svc.url);

	/* a space and its records, one transaction each */
	{
		static const uint8_t empty = 0x80;
		const char *ids[6] = { sp, blk, x[0], x[1], x[2], x[3] };

		for (int i = 0; i < 6; i++) {
			struct answer a[1];

			op = (struct proto_op){
				.kind = PROTO_OP_CREATE,
				.table = S(i ? "issues" : "spaces"),
				.id = S(ids[i]),
				.space = S(sp),
				.data = { &empty, 1 },
			};
			send_txn(&c, 1, owner, (uint64_t)i + 1, &op, 1);
			collect(&c, a, 1);
			cr_assert(eq(i64, a[0].type, PROTO_ACK), "setup %d", i);
		}
	}
	/* the clients exist (their first mutation is never set-based) */
	for (int i = 0; i < 6; i++) {
		struct answer a[1];

		op = (struct proto_op){ .kind = PROTO_OP_SET,
					.table = S("issues"),
					.id = S(x[3]),
					.field = S("seen"),
					.value = str_value("y") };
		send_txn(&c, 1, cl[i], 1, &op, 1);
		collect(&c, a, 1);
		cr_assert(eq(i64, a[0].type, PROTO_ACK));
	}
	snprintf(x2_before, sizeof(x2_before), "%s",
		 q1("SELECT version || ' ' || data::text FROM weft_records "
		    "WHERE tbl = 'issues' AND id = '%s'",
		    x[1]));
	fast0 = metric("weft_write_fast_txns_total");

	/* hold blk so the only worker waits inside a group ... */
	hold_row(blk);
	send_set(&c, 1, cl[0], 2, blk, "f", "held");
	wait_for_a_lock_waiter();

	/* ... while these queue behind it, to be taken as one group */
	op = (struct proto_op){ .kind = PROTO_OP_SET, /* 2: plain set */
				.table = S("issues"),
				.id = S(x[0]),
				.field = S("a"),
				.value = str_value("one") };
	send_txn(&c, 2, cl[1], 2, &op, 1);
	op.id = S(none); /* 3: a set on a missing record */
	send_txn(&c, 3, cl[2], 2, &op, 1);
	two[0] = (struct proto_op){ .kind = PROTO_OP_SET, /* 4: half fails */
				    .table = S("issues"),
				    .id = S(x[1]),
				    .field = S("a"),
				    .value = str_value("lost") };
	two[1] = two[0];
	two[1].id = S(none);
	send_txn(&c, 4, cl[3], 2, two, 2);
	op.id = S(x[2]); /* 5: the second of client 1 in this group */
	op.value = str_value("three");
	send_txn(&c, 5, cl[1], 3, &op, 1);
	op = (struct proto_op){ .kind = PROTO_OP_SET, /* 6: x1 again */
				.table = S("issues"),
				.id = S(x[0]),
				.field = S("b"),
				.value = str_value("two") };
	send_txn(&c, 6, cl[4], 2, &op, 1);
	op = (struct proto_op){ .kind = PROTO_OP_UNSET, /* 7: unset */
				.table = S("issues"),
				.id = S(x[3]),
				.field = S("seen") };
	send_txn(&c, 7, cl[5], 2, &op, 1);
	usleep(200000); /* let them all reach the queue */
	res = PQexec(pg, "COMMIT");
	PQclear(res);

	collect(&c, ans, 7);
	cr_assert(eq(i64, ans[0].type, PROTO_ACK), "the held set");
	cr_assert(eq(i64, ans[1].type, PROTO_ACK));
	cr_assert(eq(i64, ans[2].type, PROTO_REJECT));
	cr_assert(eq(i64, ans[2].code, WEFT_ENOTFOUND));
	cr_assert(eq(i64, ans[3].type, PROTO_REJECT));
	cr_assert(eq(i64, ans[3].code, WEFT_ENOTFOUND));
	cr_assert(eq(i64, ans[4].type, PROTO_ACK));
	cr_assert(eq(i64, ans[5].type, PROTO_ACK));
	cr_assert(eq(i64, ans[6].type, PROTO_ACK));

	/* the rejected ones left nothing behind, and advanced their ids */
	EXPECT_Q(x2_before,
		 "SELECT version || ' ' || data::text FROM "
		 "weft_records WHERE tbl = 'issues' AND "
		 "id = '%s'",
		 x[1]);
	EXPECT_Q("0",
		 "SELECT count(*) FROM weft_records WHERE "
		 "tbl = 'issues' AND id = '%s'",
		 none);
	EXPECT_Q("3,2,2,2,2",
		 "SELECT string_agg(last_mid::text, ',' ORDER "
		 "BY client_id) FROM weft_clients WHERE "
		 "client_id IN ('%s', '%s', '%s', '%s', '%s')",
		 cl[1], cl[2], cl[3], cl[4], cl[5]);
	/* both sets on x1 landed, one version each */
	EXPECT_Q("3 onetwo",
		 "SELECT version || ' ' || (data->>'a') || "
		 "(data->>'b') FROM weft_records WHERE "
		 "tbl = 'issues' AND id = '%s'",
		 x[0]);
	EXPECT_Q("{}",
		 "SELECT data::text FROM weft_records WHERE "
		 "tbl = 'issues' AND id = '%s'",
		 x[3]);

	/* the applied ones committed together, after the held one */
	for (int i = 0; i < 4; i++)
		snprintf(xmin[i], sizeof(xmin[i]), "%s",
			 q1("SELECT xmin::text FROM weft_records WHERE "
			    "tbl = 'issues' AND id = '%s'",
			    i == 3 ? blk
				   : x[i == 0	? 0
				       : i == 1 ? 2
						: 3]));
	cr_assert(eq(str, xmin[0], xmin[1]), "x1 and x3 in one commit");
	cr_assert(eq(str, xmin[0], xmin[2]), "x1 and x4 in one commit");
	cr_assert(ne(str, xmin[0], xmin[3]), "the held group came before");
	EXPECT_Q("1 4",
		 "SELECT count(DISTINCT xmin::text) || ' ' || "
		 "count(*) FROM weft_outbox WHERE client_id IN "
		 "('%s', '%s', '%s') AND mid >= 2",
		 cl[1], cl[4], cl[5]);
	/* x1 (one of its two sets) and x4 took the set-based path; the rest
	 * went through weft_apply(), in order */
	cr_assert(eq(i64, metric("weft_write_fast_txns_total") - fast0, 3),
		  "the held set, x1 once and x4");
	wclient_close(&c);
}

/* the one record of an ack, and whether it was a replay */
struct acked {
	bool replay;
	char id[80];
};

static struct acked
recv_ack(struct wclient *c)
{
	struct proto_msg r;
	struct proto_iter it;
	struct proto_record rec;
	struct acked a = { 0 };

	cr_assert(eq(i64, wclient_recv(c, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_ACK), "%s", proto_type_name(r.type));
	cr_assert(eq(u64, r.u.ack.mid, 2));
	cr_assert(eq(u64, r.u.ack.records.n, 1));
	proto_iter_init(&it, &r.u.ack.records);
	cr_assert(eq(i64, proto_next_record(&it, &rec), 1));
	a.replay = r.u.ack.replay;
	snprintf(a.id, sizeof(a.id), "%.*s", (int)rec.id.len, rec.id.p);
	return a;
}

/*
 * Two weft-writes get the same mid of one client at the same moment (a
 * client that resent it to another instance, each carrying a different
 * set): it applies once.  svc's group for (X, 2) on r2 waits for the
 * test's lock on r2 while the second service takes (X, 2) on r1.  Once the
 * lock goes, one of them applies and the other is answered with its ack,
 * as a resend; the other record is untouched and (X, 2) has one outbox
 * row.
 */
Test(group, one_client_mid_sent_to_two_services_applies_once)
{
	static const uint8_t empty = 0x80;
	char sp[80], owner[80], x[80], r1[80], r2[80];
	char before[2][64], after[2][64];
	struct proc other;
	struct wclient c, c2;
	struct proto_op op;
	struct answer a[1];
	struct acked first, second;
	const struct acked *won;
	int kept;

	name(sp, "twice");
	name(owner, "twice-owner");
	name(x, "twice-x");
	name(r1, "twice-r1");
	name(r2, "twice-r2");
	proc_start_write(&other, NULL);
	dial_hello(&c, svc.url);
	dial_hello(&c2, other.url);
	for (int i = 0; i < 3; i++) {
		const char *ids[3] = { sp, r1, r2 };

		op = (struct proto_op){ .kind = PROTO_OP_CREATE,
					.table = S(i ? "issues" : "spaces"),
					.id = S(ids[i]),
					.space = S(sp),
					.data = { &empty, 1 } };
		send_txn(&c, 1, owner, (uint64_t)i + 1, &op, 1);
		collect(&c, a, 1);
		cr_assert(eq(i64, a[0].type, PROTO_ACK), "setup %d", i);
	}
	send_set(&c, 1, x, 1, r1, "seen", "y"); /* X exists, at mid 1 */
	collect(&c, a, 1);
	cr_assert(eq(i64, a[0].type, PROTO_ACK));
	for (int i = 0; i < 2; i++)
		snprintf(before[i], sizeof(before[i]), "%s",
			 q1("SELECT version || ' ' || data::text FROM "
			    "weft_records WHERE tbl = 'issues' AND id = '%s'",
			    i ? r2 : r1));

	hold_row(r2);
	send_set(&c, 1, x, 2, r2, "f", "first"); /* waits for r2 */
	wait_for_a_lock_waiter();
	send_set(&c2, 1, x, 2, r1, "f", "second");
	usleep(300000); /* the second service's group reaches Postgres */
	PQclear(PQexec(pg, "COMMIT"));
	first = recv_ack(&c);
	second = recv_ack(&c2);

	cr_assert(first.replay != second.replay,
		  "one applied, the other is its resend");
	won = first.replay ? &second : &first;
	cr_assert(eq(str, first.id, second.id), "both acks carry %s", won->id);
	for (int i = 0; i < 2; i++)
		snprintf(after[i], sizeof(after[i]), "%s",
			 q1("SELECT version || ' ' || data::text FROM "
			    "weft_records WHERE tbl = 'issues' AND id = '%s'",
			    i ? r2 : r1));
	kept = strcmp(won->id, r1) == 0 ? 1 : 0; /* the record not applied */
	cr_assert(eq(str, after[kept], before[kept]), "untouched");
	cr_assert(ne(str, after[1 - kept], before[1 - kept]), "applied");
	EXPECT_Q("2 1",
		 "SELECT (SELECT last_mid FROM weft_clients WHERE "
		 "client_id = '%s') || ' ' || count(*) FROM weft_outbox "
		 "WHERE client_id = '%s' AND mid = 2",
		 x, x);
	wclient_close(&c2);
	wclient_close(&c);
	proc_stop(&other);
}
