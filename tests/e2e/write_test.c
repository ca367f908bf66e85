/*
 * write_test.c - weft-write as a real process against the harness's
 * Postgres, driven over its wire protocol: sessions and every kind of
 * bad token, transactions acked with their rows, exactly-once resends,
 * gaps, rejections, concurrent field sets, reads, a user over its rate,
 * and hostile input that must not bring the service down.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <dirent.h>
#include <jwt.h>
#include <libpq-fe.h>
#include <msgpack.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <weft/error.h>

#include "common/clock.h"
#include "proto/json.h"
#include "services/shared/auth.h"
#include "tests/lib/proc.h"
#include "tests/lib/testenv.h"
#include "tests/lib/wclient.h"

#define S(x)	proto_str_c(x)
#define WAIT_MS 5000

static struct proc svc, svc2; /* svc2: a second weft-write, when a test
			       * starts one */
static char sfx[32];
static char own_stack[64]; /* a test's own stack, when it needs one */

static void
setup(void)
{
	snprintf(sfx, sizeof(sfx), "%d", (int)getpid());
	setenv("WEFT_TEST_PG_URL", testenv_get("WEFT_PG_URL"), 1);
	proc_start_write(&svc, NULL);
}

static void
teardown(void)
{
	proc_stop(&svc);
	if (svc2.pid > 0)
		proc_stop(&svc2);
	proc_stack_destroy(own_stack);
}

TestSuite(write, .init = setup, .fini = teardown, .timeout = 60);

static const char *
N(const char *base)
{
	static char ring[16][80];
	static int next;
	char *out = ring[next++ % 16];

	snprintf(out, 80, "%s-%s", base, sfx);
	return out;
}

static char *
token(const char *user)
{
	return auth_mint_hs256(PROC_SECRET, user, (int64_t)time(NULL), 3600);
}

/* connect to the service at url and HELLO as user; fails the test unless
 * WELCOME comes back */
static void
session_at(struct wclient *c, const char *user, const char *url)
{
	struct proto_msg r;
	char *tok = token(user);

	cr_assert(eq(i64, wclient_dial(c, url), 0));
	cr_assert(eq(i64, wclient_hello(c, tok, "client", &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_WELCOME), "got %s (%.*s)",
		  proto_type_name(r.type), (int)r.u.error.msg.len,
		  r.u.error.msg.p);
	cr_assert(proto_str_eq(r.u.welcome.user, user));
	free(tok);
}

static void
session(struct wclient *c, const char *user)
{
	session_at(c, user, svc.url);
}

static struct proto_bytes
map0(void)
{
	static const uint8_t empty_map = 0x80;

	return (struct proto_bytes){ &empty_map, 1 };
}

/* a create of table/id in space with no fields (the strings are borrowed
 * for as long as the op is used) */
static struct proto_op
create_op(const char *table, const char *id, const char *space)
{
	return (struct proto_op){ .kind = PROTO_OP_CREATE,
				  .table = S(table),
				  .id = S(id),
				  .space = S(space),
				  .data = map0() };
}

static struct proto_bytes
str_value(const char *s)
{
	static uint8_t store[8][64];
	static int next;
	uint8_t *d = store[next++ % 8];
	size_t n = strlen(s);

	d[0] = (uint8_t)(0xa0 | n); /* fixstr: tests use short strings */
	memcpy(d + 1, s, n);
	return (struct proto_bytes){ d, (uint32_t)(n + 1) };
}

/* send one transaction and return the reply (borrowed until next recv) */
static struct proto_msg
txn(struct wclient *c, const char *client, uint64_t mid,
    const struct proto_op *ops, uint32_t n)
{
	struct proto_msg m = { .type = PROTO_TXN }, r;

	m.u.txn = (struct proto_txn){ mid, S(client), mid, PROTO_LIST(n, ops) };
	cr_assert(eq(i64, wclient_send(c, &m), 0));
	cr_assert(eq(i64, wclient_recv(c, &r, WAIT_MS), 0));
	return r;
}

static void
make_space(struct wclient *c, const char *client, const char *space)
{
	struct proto_op op = create_op("spaces", space, space);
	struct proto_msg r = txn(c, client, 1, &op, 1);

	cr_assert(eq(i64, r.type, PROTO_ACK), "got %s",
		  proto_type_name(r.type));
}

Test(write, tokens_of_every_kind)
{
	static const struct {
		const char *what;
		int code;
	} cases[] = {
		{ "expired", WEFT_EEXPIRED },
		{ "unsigned", WEFT_EUNSIGNED },
		{ "badsig", WEFT_EBADSIG },
		{ "malformed", WEFT_EAUTH },
	};
	int64_t now = (int64_t)time(NULL);

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		struct proto_msg r;
		struct wclient c;
		char *tok;

		if (i == 0) {
			tok = auth_mint_hs256(PROC_SECRET, "u", now - 7200, 60);
		} else if (i == 1) {
			jwt_t *j;

			jwt_new(&j);
			jwt_add_grant(j, "sub", "u");
			jwt_add_grant_int(j, "exp", (long)now + 60);
			tok = jwt_encode_str(j);
			jwt_free(j);
		} else if (i == 2) {
			tok = auth_mint_hs256(
				"not-the-secret-not-the-secret-12", "u", now,
				60);
		} else {
			tok = strdup("not.a.jwt");
		}
		cr_assert(eq(i64, wclient_dial(&c, svc.url), 0));
		cr_assert(eq(i64, wclient_hello(&c, tok, "c", &r, WAIT_MS), 0));
		cr_assert(eq(i64, r.type, PROTO_ERROR), "%s", cases[i].what);
		cr_assert(eq(i64, r.u.error.code, cases[i].code), "%s: %.*s",
			  cases[i].what, (int)r.u.error.msg.len,
			  r.u.error.msg.p);
		cr_assert(r.u.error.fatal);
		cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), WEFT_ECLOSED),
			  "%s: the server closes the session", cases[i].what);
		wclient_close(&c);
		free(tok);
	}
}

Test(write, requests_before_hello_are_refused)
{
	struct wclient c;
	struct proto_op op = { .kind = PROTO_OP_DELETE,
			       .table = S("t"),
			       .id = S("i") };
	struct proto_msg r;

	cr_assert(eq(i64, wclient_dial(&c, svc.url), 0));
	r = txn(&c, "c", 1, &op, 1);
	cr_assert(eq(i64, r.type, PROTO_ERROR));
	cr_assert(eq(i64, r.u.error.code, WEFT_EAUTH));
	wclient_close(&c);
}

Test(write, transactions_exactly_once)
{
	const char *sp = N("team"), *cl = N("client");
	struct proto_op create = create_op("issues", "i1", sp);
	struct proto_op set = { .kind = PROTO_OP_SET,
				.table = S("issues"),
				.id = S("i1"),
				.field = S("title"),
				.value = str_value("hello") };
	struct proto_iter it;
	struct proto_record rec;
	struct wclient c;
	struct proto_msg r;

	session(&c, N("alice"));
	make_space(&c, cl, sp);
	r = txn(&c, cl, 2, &create, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK));
	r = txn(&c, cl, 3, &set, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK));
	cr_assert(eq(u64, r.u.ack.mid, 3));
	cr_assert(eq(u64, r.u.ack.rid, 3));
	proto_iter_init(&it, &r.u.ack.records);
	cr_assert(eq(i64, proto_next_record(&it, &rec), 1));
	cr_assert(proto_str_eq(rec.id, "i1"));
	cr_assert(eq(u64, rec.version, 2), "the ack carries the new version");
	cr_assert_not_null(memmem(rec.data.p, rec.data.len, "hello", 5),
			   "and the row");
	/* the same mutation again: the stored result, no second effect */
	r = txn(&c, cl, 3, &set, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK));
	cr_assert(r.u.ack.replay);
	proto_iter_init(&it, &r.u.ack.records);
	cr_assert(eq(i64, proto_next_record(&it, &rec), 1));
	cr_assert(eq(u64, rec.version, 2), "not applied twice");
	/* a gap is refused with the id expected */
	r = txn(&c, cl, 9, &set, 1);
	cr_assert(eq(i64, r.type, PROTO_ERROR));
	cr_assert(eq(i64, r.u.error.code, WEFT_EGAP));
	cr_assert(eq(u64, r.u.error.expected, 4));
	/* a rejected mutation advances the id */
	set.expect = 1;
	r = txn(&c, cl, 4, &set, 1);
	cr_assert(eq(i64, r.type, PROTO_REJECT));
	cr_assert(eq(i64, r.u.reject.code, WEFT_ECONFLICT));
	cr_assert(eq(u32, r.u.reject.opnum, 1));
	set.expect = 2;
	r = txn(&c, cl, 5, &set, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK), "not wedged after a rejection");
	wclient_close(&c);
}

Test(write, concurrent_sets_of_different_fields_both_land)
{
	const char *sp = N("team"), *ca = N("ca"), *cb = N("cb");
	struct proto_op create = create_op("issues", "x", sp);
	struct proto_op seta = { .kind = PROTO_OP_SET,
				 .table = S("issues"),
				 .id = S("x"),
				 .field = S("a"),
				 .value = str_value("A") };
	struct proto_op setb = { .kind = PROTO_OP_SET,
				 .table = S("issues"),
				 .id = S("x"),
				 .field = S("b"),
				 .value = str_value("B") };
	struct proto_op member = { .kind = PROTO_OP_CREATE,
				   .table = S("members"),
				   .space = S(sp),
				   .data = { NULL, 0 } };
	static uint8_t mdata[256];
	struct proto_msg ma = { .type = PROTO_TXN }, mb = ma, r;
	struct wclient a, b;
	char mid[160];
	uint64_t va, vb;
	struct proto_iter it;
	struct proto_record rec;
	msgpack_sbuffer sb;
	msgpack_packer pk;

	session(&a, N("alice"));
	session(&b, N("bob"));
	make_space(&a, ca, sp);
	snprintf(mid, sizeof(mid), "%s:%s", sp, N("bob"));
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	msgpack_pack_str_with_body(&pk, "user", 4);
	msgpack_pack_str_with_body(&pk, N("bob"), strlen(N("bob")));
	msgpack_pack_str_with_body(&pk, "role", 4);
	msgpack_pack_str_with_body(&pk, "writer", 6);
	memcpy(mdata, sb.data, sb.size);
	member.id = S(mid);
	member.data = (struct proto_bytes){ mdata, (uint32_t)sb.size };
	msgpack_sbuffer_destroy(&sb);
	r = txn(&a, ca, 2, &member, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK), "add bob");
	r = txn(&a, ca, 3, &create, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK));
	/* both in flight at once */
	ma.u.txn = (struct proto_txn){ 4, S(ca), 4, PROTO_LIST(1, &seta) };
	mb.u.txn = (struct proto_txn){ 1, S(cb), 1, PROTO_LIST(1, &setb) };
	cr_assert(eq(i64, wclient_send(&a, &ma), 0));
	cr_assert(eq(i64, wclient_send(&b, &mb), 0));
	cr_assert(eq(i64, wclient_recv(&a, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_ACK));
	proto_iter_init(&it, &r.u.ack.records);
	proto_next_record(&it, &rec);
	va = rec.version;
	cr_assert(eq(i64, wclient_recv(&b, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_ACK));
	proto_iter_init(&it, &r.u.ack.records);
	proto_next_record(&it, &rec);
	vb = rec.version;
	cr_assert(va + vb == 5 && va != vb && (va == 2 || va == 3),
		  "dense versions: %llu, %llu", (unsigned long long)va,
		  (unsigned long long)vb);
	/* the later one's row holds both fields */
	if (vb == 3) {
		cr_assert_not_null(memmem(rec.data.p, rec.data.len,
					  "\xa1"
					  "A",
					  2));
		cr_assert_not_null(memmem(rec.data.p, rec.data.len,
					  "\xa1"
					  "B",
					  2));
	}
	wclient_close(&a);
	wclient_close(&b);
}

Test(write, fetch_and_bootstrap_are_authorised)
{
	const char *sp = N("team"), *cl = N("client");
	struct proto_op ops[30];
	char ids[30][16];
	struct proto_keyref keys[2] = { { S("issues"), S("n0") },
					{ S("issues"), S("nope") } };
	struct proto_msg m = { .type = PROTO_FETCH }, r;
	struct wclient c, other;
	uint8_t token[1024];
	uint32_t token_len = 0, total = 0;

	session(&c, N("alice"));
	make_space(&c, cl, sp);
	for (int i = 0; i < 30; i++) {
		snprintf(ids[i], sizeof(ids[i]), "n%d", i);
		ops[i] = create_op("issues", ids[i], sp);
	}
	r = txn(&c, cl, 2, ops, 30);
	cr_assert(eq(i64, r.type, PROTO_ACK));
	m.u.fetch = (struct proto_fetch){ 7, PROTO_LIST(2, keys) };
	cr_assert(eq(i64, wclient_send(&c, &m), 0));
	cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_RECORDS));
	cr_assert(eq(u32, r.u.records.records.n, 1));
	cr_assert(eq(u32, r.u.records.missing.n, 1));
	/* pages of at least one record until no next token; 31 records in
	 * the space: 30 issues and alice's membership */
	for (int page = 0; page < 100; page++) {
		/* every other page asks for the fields as JSON text */
		bool json = page % 2 == 1;
		struct proto_iter it;
		struct proto_record rec;

		m = (struct proto_msg){ .type = PROTO_BOOTSTRAP };
		m.u.bootstrap =
			(struct proto_bootstrap){ 8,
						  S(sp),
						  { token_len ? token : NULL,
						    token_len },
						  200,
						  json };
		cr_assert(eq(i64, wclient_send(&c, &m), 0));
		cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0));
		cr_assert(eq(i64, r.type, PROTO_PAGE));
		if (page == 0)
			cr_assert(eq(u64, r.u.page.total, 32),
				  "with the space");
		total += r.u.page.records.n;
		proto_iter_init(&it, &r.u.page.records);
		while (proto_next_record(&it, &rec) == 1) {
			if (rec.deleted)
				continue;
			cr_assert(eq(int, rec.json.p != NULL, json),
				  "page %d: JSON text only when asked", page);
			cr_assert(eq(int, rec.data.p != NULL, !json),
				  "page %d: msgpack otherwise", page);
			if (json)
				cr_assert(eq(int, rec.json.p[0], '{'));
		}
		if (!r.u.page.next.p)
			break;
		token_len = r.u.page.next.len;
		memcpy(token, r.u.page.next.p, token_len);
	}
	cr_assert(eq(u32, total, 32), "every record once, across pages");
	/* a stranger sees nothing */
	session(&other, N("mallory"));
	m = (struct proto_msg){ .type = PROTO_BOOTSTRAP };
	m.u.bootstrap =
		(struct proto_bootstrap){ 9, S(sp), { NULL, 0 }, 0, false };
	wclient_send(&other, &m);
	cr_assert(eq(i64, wclient_recv(&other, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_ERROR));
	cr_assert(eq(i64, r.u.error.code, WEFT_EPERM));
	m = (struct proto_msg){ .type = PROTO_FETCH };
	m.u.fetch = (struct proto_fetch){ 10, PROTO_LIST(1, keys) };
	wclient_send(&other, &m);
	cr_assert(eq(i64, wclient_recv(&other, &r, WAIT_MS), 0));
	cr_assert(eq(u32, r.u.records.records.n, 0));
	cr_assert(eq(u32, r.u.records.missing.n, 1));
	wclient_close(&c);
	wclient_close(&other);
}

/* send raw bytes as one frame body */
static void
send_body(struct wclient *c, const void *body, uint32_t len)
{
	uint8_t hdr[4];

	frame_put_header(hdr, len);
	wclient_send_raw(c, hdr, 4);
	wclient_send_raw(c, body, len);
}

Test(write, hostile_input_gets_errors_and_the_service_stays_up)
{
	static const uint8_t garbage[] = { 0xc1, 0xff, 0x00, 0x13 };
	static const uint8_t huge[] = { 0x7f, 0xff, 0xff, 0xff };
	struct proto_msg m = { .type = PROTO_PING }, r;
	const char *dir = getenv("WEFT_FUZZ_CORPUS");
	struct wclient c;
	DIR *d;
	struct dirent *e;
	int sent = 0;

	session(&c, N("alice"));
	send_body(&c, garbage, sizeof(garbage));
	cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_ERROR));
	cr_assert(not(r.u.error.fatal), "a bad message keeps the session");
	m.u.ping.nonce = 77;
	wclient_send(&c, &m);
	cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_PONG));
	cr_assert(eq(u64, r.u.ping.nonce, 77));
	/* every seed and past finding of the fuzzer, live */
	cr_assert_not_null(dir, "WEFT_FUZZ_CORPUS not set");
	d = opendir(dir);
	cr_assert_not_null(d);
	while ((e = readdir(d))) {
		char path[1024];
		uint8_t body[65536];
		FILE *f;
		size_t n;

		if (e->d_name[0] == '.')
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
		f = fopen(path, "rb");
		n = f ? fread(body, 1, sizeof(body), f) : 0;
		if (f)
			fclose(f);
		if (n == 0 || strstr(e->d_name, "HELLO"))
			continue; /* a HELLO for another user ends the test */
		send_body(&c, body, (uint32_t)n);
		sent++;
	}
	closedir(d);
	cr_assert_gt(sent, 10);
	m.u.ping.nonce = 78;
	wclient_send(&c, &m);
	for (int i = 0; i < 2 * sent + 2; i++) {
		cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0),
			  "a reply for every frame, then the pong");
		if (r.type == PROTO_PONG && r.u.ping.nonce == 78)
			break;
	}
	cr_assert(eq(i64, r.type, PROTO_PONG), "the session survived");
	/* database replies may still trail the pong: let them arrive */
	while (wclient_recv(&c, &r, 1000) == 0)
		;
	/* a frame over the cap: fatal error, closed */
	wclient_send_raw(&c, huge, sizeof(huge));
	cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_ERROR));
	cr_assert(eq(i64, r.u.error.code, WEFT_ETOOBIG));
	cr_assert(r.u.error.fatal);
	wclient_close(&c);
	/* and the service still serves new sessions */
	session(&c, N("alice"));
	wclient_close(&c);
}

Test(write, weft_token_mints_a_token_the_service_accepts)
{
	const char *cli = getenv("WEFT_CLI_BIN");
	struct proto_msg r;
	char cmd[512], tok[2048];
	struct wclient c;
	FILE *p;

	cr_assert_not_null(cli, "WEFT_CLI_BIN not set");
	snprintf(cmd, sizeof(cmd), "%s token --user cli-user --ttl 5m", cli);
	setenv("WEFT_JWT_SECRET", PROC_SECRET, 1);
	p = popen(cmd, "r");
	cr_assert_not_null(p);
	cr_assert_not_null(fgets(tok, sizeof(tok), p));
	cr_assert(eq(i64, pclose(p), 0));
	tok[strcspn(tok, "\n")] = '\0';
	cr_assert(eq(i64, wclient_dial(&c, svc.url), 0));
	cr_assert(eq(i64, wclient_hello(&c, tok, "c", &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_WELCOME));
	cr_assert(proto_str_eq(r.u.welcome.user, "cli-user"));
	wclient_close(&c);
}

Test(write, the_app_schema_is_enforced_and_fills_defaults)
{
	char arg[600];
	const char *extra[2] = { arg, NULL };
	const char *sp = N("team"), *cl = N("client");
	struct proto_op op = create_op("issues", N("schema-i1"), sp);
	struct proto_iter it;
	struct proto_record rec;
	struct proto_msg r;
	struct proc strict;
	struct wclient c;
	struct proc keep = svc;
	msgpack_sbuffer sb;
	msgpack_packer pk;

	snprintf(arg, sizeof(arg), "--schema=%s", getenv("WEFT_DEMO_SCHEMA"));
	proc_start_write(&strict, extra);
	svc = strict; /* session() dials svc.url */
	session(&c, N("alice"));
	make_space(&c, cl, sp);
	r = txn(&c, cl, 2, &op, 1);
	cr_assert(eq(i64, r.type, PROTO_REJECT));
	cr_assert(eq(i64, r.u.reject.code, WEFT_EVALIDATION));
	cr_assert(proto_str_eq(r.u.reject.field, "title"));
	cr_assert(eq(u32, r.u.reject.opnum, 1));
	cr_assert(proto_str_eq(r.u.reject.msg,
			       "issues.title: required field missing"));
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 1);
	msgpack_pack_str_with_body(&pk, "title", 5);
	msgpack_pack_str_with_body(&pk, "Fix", 3);
	op.data = (struct proto_bytes){ (const uint8_t *)sb.data,
					(uint32_t)sb.size };
	r = txn(&c, cl, 3, &op, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK), "mid 2's rejection advanced "
					      "the id");
	proto_iter_init(&it, &r.u.ack.records);
	cr_assert(eq(i64, proto_next_record(&it, &rec), 1));
	cr_assert_not_null(memmem(rec.data.p, rec.data.len, "backlog", 7),
			   "the status default was filled in");
	msgpack_sbuffer_destroy(&sb);
	wclient_close(&c);
	proc_stop(&strict);
	svc = keep;
}

Test(write, healthz_and_metrics)
{
	static char body[65536];
	struct proto_op op = create_op("spaces", N("m-space"), N("m-space"));
	struct wclient c;
	struct proto_msg r;

	/* the Postgres workers connect right after start */
	for (int i = 0; i < 100; i++) {
		if (proc_http_get(&svc, "/healthz", body, sizeof(body)) == 200)
			break;
		usleep(50000);
	}
	cr_assert(eq(i64, proc_http_get(&svc, "/healthz", body, sizeof(body)),
		     200));
	cr_assert(eq(i64, strncmp(body, "ok:", 3), 0), "%s", body);
	session(&c, N("alice"));
	r = txn(&c, N("m-client"), 1, &op, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK));
	r = txn(&c, N("m-client"), 2, &op, 1); /* exists: a rejection */
	cr_assert(eq(i64, r.type, PROTO_REJECT));
	wclient_close(&c);
	cr_assert(eq(i64, proc_http_get(&svc, "/metrics", body, sizeof(body)),
		     200));
	cr_assert_not_null(strstr(body, "# TYPE weft_write_txns_total "
					"counter\nweft_write_txns_total "),
			   "%s", body);
	cr_assert_null(strstr(body, "weft_write_txns_total 0\n"),
		       "transactions were counted");
	cr_assert_not_null(
		strstr(body,
		       "weft_write_rejections_total{code=\"WEFT_EEXIST\"} "
		       "1\n"),
		"%s", body);
	cr_assert_not_null(strstr(body, "weft_write_txn_latency_seconds_"
					"bucket{le=\"+Inf\"} 2\n"),
			   "%s", body);
	/* two groups of one: the sum counts transactions, and each group's
	 * time in Postgres is in its own histogram */
	cr_assert_not_null(strstr(body, "weft_write_group_size_sum 2\n"), "%s",
			   body);
	cr_assert_not_null(strstr(body, "weft_write_group_seconds_count 2\n"),
			   "%s", body);
	cr_assert_not_null(strstr(body, "weft_write_queue_seconds_count 2\n"),
			   "each transaction's wait for a worker: %s", body);
	cr_assert(
		eq(i64, proc_http_get(&svc, "/nope", body, sizeof(body)), 404));
}

/* a connection to url (NULL: this suite's Postgres), or fail the test */
static PGconn *
pg_connect(const char *url)
{
	PGconn *pg = PQconnectdb(url ? url : getenv("WEFT_TEST_PG_URL"));

	cr_assert(eq(i64, PQstatus(pg), CONNECTION_OK), "%s",
		  PQerrorMessage(pg));
	return pg;
}

/* the first value of sql (with $1 = param, if not NULL), as a number */
static long
pg_long(PGconn *pg, const char *sql, const char *param)
{
	PGresult *res = PQexecParams(pg, sql, param ? 1 : 0, NULL, &param, NULL,
				     NULL, 0);
	long n;

	cr_assert(eq(i64, PQresultStatus(res), PGRES_TUPLES_OK), "%s: %s", sql,
		  PQerrorMessage(pg));
	n = strtol(PQgetvalue(res, 0, 0), NULL, 10);
	PQclear(res);
	return n;
}

/* pipeline n transactions of client cl, each a create of row
 * "<prefix>-<i>" in space sp, with mids (and request ids) from mid on;
 * ops and ids hold what the frames point to */
static void
send_creates(struct wclient *c, const char *cl, const char *sp,
	     const char *prefix, int n, uint64_t mid, struct proto_op *ops,
	     char (*ids)[40])
{
	struct proto_msg m = { .type = PROTO_TXN };

	for (int i = 0; i < n; i++) {
		snprintf(ids[i], 40, "%s-%d", prefix, i);
		ops[i] = create_op("rows", ids[i], sp);
		m.u.txn = (struct proto_txn){ mid + (uint64_t)i, S(cl),
					      mid + (uint64_t)i,
					      PROTO_LIST(1, &ops[i]) };
		cr_assert(eq(i64, wclient_send(c, &m), 0));
	}
}

Test(write, sigterm_answers_everything_it_took_then_exits)
{
	char sp[80], cl[80]; /* copies: N() reuses its buffers */
	struct proto_op ops[60];
	char ids[60][40];
	struct proto_msg r;
	struct wclient c;
	int acked = 0, status = 0;
	uint64_t next = 2;
	PGconn *pg;

	snprintf(sp, sizeof(sp), "%s", N("drain"));
	snprintf(cl, sizeof(cl), "%s", N("drain-client"));
	session(&c, N("alice"));
	make_space(&c, cl, sp);
	send_creates(&c, cl, sp, N("d"), 60, 2, ops, ids);
	/* the first answer shows requests are flowing; then stop */
	cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_ACK));
	cr_assert(eq(u64, r.u.ack.mid, next++));
	acked++;
	kill(svc.pid, SIGTERM);
	while (wclient_recv(&c, &r, WAIT_MS) == 0) {
		cr_assert(eq(i64, r.type, PROTO_ACK), "got %s",
			  proto_type_name(r.type));
		cr_assert(eq(u64, r.u.ack.mid, next++), "in order");
		acked++;
	}
	wclient_close(&c);
	cr_assert(eq(i64, waitpid(svc.pid, &status, 0), svc.pid));
	cr_assert(eq(i64, status, 0), "clean exit (wait status %d)", status);
	svc.pid = 0;
	/* every transaction applied was answered: none applied silently */
	pg = pg_connect(NULL);
	cr_assert(eq(i64,
		     pg_long(pg,
			     "SELECT count(*) FROM weft_records WHERE "
			     "tbl = 'rows' AND space = $1",
			     sp),
		     acked),
		  "rows in the database = acks received");
	PQfinish(pg);
}

/*
 * lock record "rows"/hot from a new Postgres session, then send a set of
 * it as client cl's mid and wait until the set's group waits for that
 * lock; the session is returned (its ROLLBACK lets the group go)
 */
static PGconn *
hold_a_group(struct wclient *c, const char *cl, const char *hot, uint64_t mid)
{
	static struct proto_op set;
	struct proto_msg m = { .type = PROTO_TXN };
	PGconn *pg = pg_connect(NULL);
	char sql[320];
	PGresult *res;

	snprintf(sql, sizeof(sql),
		 "BEGIN; SELECT 1 FROM weft_records WHERE tbl = 'rows' AND "
		 "id = '%s' FOR UPDATE",
		 hot);
	res = PQexec(pg, sql);
	cr_assert(eq(i64, PQresultStatus(res), PGRES_TUPLES_OK), "%s",
		  PQerrorMessage(pg));
	PQclear(res);
	set = (struct proto_op){ .kind = PROTO_OP_SET,
				 .table = S("rows"),
				 .id = S(hot),
				 .field = S("n"),
				 .value = str_value("x") };
	m.u.txn = (struct proto_txn){ mid, S(cl), mid, PROTO_LIST(1, &set) };
	cr_assert(eq(i64, wclient_send(c, &m), 0));
	snprintf(sql, sizeof(sql),
		 "SELECT count(*) FROM pg_stat_activity "
		 "WHERE %d = ANY (pg_blocking_pids(pid))",
		 PQbackendPID(pg));
	for (int i = 0; pg_long(pg, sql, NULL) == 0; i++) {
		cr_assert(lt(i64, i, 500), "the set's group never waited");
		usleep(10 * 1000);
	}
	return pg;
}

/*
 * A group held up in Postgres (here by a row lock another session holds)
 * must hold up only its own transactions: the others, sent while it
 * waits, are taken by the other workers.  When jobs were bound to a
 * worker as they arrived, some queued behind the blocked one.
 */
Test(write, a_blocked_group_holds_up_no_other_client)
{
	enum { OTHERS = 40 };
	char sp[80], cl[80], hot[80], clients[OTHERS][80];
	char ids[OTHERS][80];
	struct proto_op ops[OTHERS], create;
	struct proto_msg m = { .type = PROTO_TXN }, r;
	struct wclient c;
	bool seen[OTHERS] = { false };
	PGconn *pg;
	PGresult *res;

	snprintf(sp, sizeof(sp), "%s", N("blocked"));
	snprintf(cl, sizeof(cl), "%s", N("blocked-client"));
	snprintf(hot, sizeof(hot), "%s", N("hot"));
	session(&c, N("alice"));
	make_space(&c, cl, sp);
	create = create_op("rows", hot, sp);
	r = txn(&c, cl, 2, &create, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK));

	/* another session locks the record: the set's group waits for it.
	 * Sent earlier, the others could share that group and wait with it */
	pg = hold_a_group(&c, cl, hot, 3);

	/* many other clients at once, while it waits: all answered */
	for (int i = 0; i < OTHERS; i++) {
		snprintf(clients[i], sizeof(clients[i]), "%s-%d", N("other"),
			 i);
		snprintf(ids[i], sizeof(ids[i]), "%s-%d", N("cold"), i);
		ops[i] = create_op("rows", ids[i], sp);
		m.u.txn = (struct proto_txn){ 100 + (uint64_t)i, S(clients[i]),
					      1, PROTO_LIST(1, &ops[i]) };
		cr_assert(eq(i64, wclient_send(&c, &m), 0));
	}
	for (int i = 0; i < OTHERS; i++) {
		cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0),
			  "%d of %d others answered while one group waits", i,
			  OTHERS);
		cr_assert(eq(i64, r.type, PROTO_ACK), "got %s",
			  proto_type_name(r.type));
		cr_assert(ge(u64, r.u.ack.rid, 100), "not the blocked one");
		cr_assert(lt(u64, r.u.ack.rid, 100 + OTHERS));
		cr_assert(eq(int, seen[r.u.ack.rid - 100] ? 1 : 0, 0), "once");
		seen[r.u.ack.rid - 100] = true;
	}

	/* the lock goes: the waiting transaction is applied and acked */
	res = PQexec(pg, "ROLLBACK");
	PQclear(res);
	PQfinish(pg);
	cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_ACK));
	cr_assert(eq(u64, r.u.ack.mid, 3));
	wclient_close(&c);
}

/* the time, in ms, from now until c's next answer (an ACK, checked) */
static uint64_t
ms_to_ack(struct wclient *c)
{
	uint64_t t0 = clock_now_ms();
	struct proto_msg r;

	cr_assert(eq(i64, wclient_recv(c, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_ACK), "got %s",
		  proto_type_name(r.type));
	return clock_now_ms() - t0;
}

/*
 * --group-wait-us: while another worker is in Postgres (here held by a
 * row lock), a group short of --batch-max waits for more transactions,
 * up to the wait from its oldest one's arrival, and goes at once when it
 * fills.  With every worker free, nothing waits.
 */
Test(write, a_small_group_waits_for_more_while_another_worker_is_busy)
{
	static const char *const extra[] = { "--pg-workers=2", "--batch-max=2",
					     "--group-wait-us=600000", NULL };
	char sp[80], cl[80], hot[80], ids[5][80], clients[5][80];
	struct proto_op create, ops[5];
	struct proto_msg m = { .type = PROTO_TXN }, r;
	struct wclient c;
	uint64_t ms;
	PGconn *pg;
	PGresult *res;

	proc_start_write(&svc2, extra);
	snprintf(sp, sizeof(sp), "%s", N("gather"));
	snprintf(cl, sizeof(cl), "%s", N("gather-client"));
	snprintf(hot, sizeof(hot), "%s", N("gather-hot"));
	session_at(&c, N("alice"), svc2.url);
	make_space(&c, cl, sp);
	create = create_op("rows", hot, sp);
	r = txn(&c, cl, 2, &create, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK));
	for (int i = 0; i < 5; i++) {
		snprintf(clients[i], sizeof(clients[i]), "%s-%d",
			 N("gather-other"), i);
		snprintf(ids[i], sizeof(ids[i]), "%s-%d", N("gather-row"), i);
		ops[i] = create_op("rows", ids[i], sp);
	}

	/* one worker's group waits for a row lock */
	pg = hold_a_group(&c, cl, hot, 3);

	/* one transaction alone: it waits out the 600 ms for company */
	m.u.txn = (struct proto_txn){ 100, S(clients[0]), 1,
				      PROTO_LIST(1, &ops[0]) };
	cr_assert(eq(i64, wclient_send(&c, &m), 0));
	ms = ms_to_ack(&c);
	cr_assert(ge(u64, ms, 500), "a lone transaction went after %llu ms",
		  (unsigned long long)ms);
	cr_assert(lt(u64, ms, 5000));
	cr_assert(
		lt(i64, 0, proc_metric(&svc2, "weft_write_group_waits_total")));

	/* two at once fill the group (--batch-max=2): no wait */
	for (int i = 1; i <= 2; i++) {
		m.u.txn = (struct proto_txn){ 100 + (uint64_t)i, S(clients[i]),
					      1, PROTO_LIST(1, &ops[i]) };
		cr_assert(eq(i64, wclient_send(&c, &m), 0));
	}
	ms = ms_to_ack(&c) + ms_to_ack(&c);
	cr_assert(lt(u64, ms, 400), "a full group waited %llu ms",
		  (unsigned long long)ms);

	/* a lone one again, and the lock goes 150 ms later: it goes as soon
	 * as no other worker is in Postgres, not 600 ms after it came */
	m.u.txn = (struct proto_txn){ 103, S(clients[3]), 1,
				      PROTO_LIST(1, &ops[3]) };
	cr_assert(eq(i64, wclient_send(&c, &m), 0));
	usleep(150 * 1000);
	res = PQexec(pg, "ROLLBACK");
	PQclear(res);
	PQfinish(pg);
	ms = ms_to_ack(&c) + ms_to_ack(&c); /* the held set's, and its */
	cr_assert(lt(u64, ms, 350), "%llu ms after the lock went",
		  (unsigned long long)ms);

	/* with no worker in Postgres, nothing waits */
	m.u.txn = (struct proto_txn){ 104, S(clients[4]), 1,
				      PROTO_LIST(1, &ops[4]) };
	cr_assert(eq(i64, wclient_send(&c, &m), 0));
	ms = ms_to_ack(&c);
	cr_assert(lt(u64, ms, 400), "with every worker free, a wait of %llu ms",
		  (unsigned long long)ms);
	wclient_close(&c);
}

/*
 * One client's backlog (a client back from offline resends everything it
 * queued) must not hide other clients' transactions queued behind it:
 * a free worker passes over the whole backlog, which only the worker
 * with the client's transactions may take.
 */
Test(write, one_clients_backlog_holds_up_no_other_client)
{
	enum { BACKLOG = 600 };
	static struct proto_op ops[BACKLOG];
	static char ids[BACKLOG][40];
	char sp[80], cl[80], other[80];
	struct proto_op op;
	struct proto_msg m = { .type = PROTO_TXN }, r;
	struct wclient c;
	int before = 0;

	snprintf(sp, sizeof(sp), "%s", N("backlog"));
	snprintf(cl, sizeof(cl), "%s", N("backlog-client"));
	snprintf(other, sizeof(other), "%s", N("backlog-other"));
	session(&c, N("alice"));
	make_space(&c, cl, sp);
	send_creates(&c, cl, sp, N("b"), BACKLOG, 2, ops, ids);
	op = create_op("rows", N("b-other"), sp);
	m.u.txn =
		(struct proto_txn){ 1000000, S(other), 1, PROTO_LIST(1, &op) };
	cr_assert(eq(i64, wclient_send(&c, &m), 0));
	for (;;) {
		cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0));
		cr_assert(eq(i64, r.type, PROTO_ACK), "got %s",
			  proto_type_name(r.type));
		if (r.u.ack.rid == 1000000)
			break;
		before++;
	}
	cr_assert(lt(i64, before, BACKLOG / 2),
		  "the other client was acked after %d of the backlog", before);
	for (; before < BACKLOG; before++) { /* the rest, in order */
		cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0));
		cr_assert(eq(i64, r.type, PROTO_ACK));
	}
	wclient_close(&c);
}

/* rows of weft_client_results for client cl */
static long
stored_results(PGconn *pg, const char *cl)
{
	return pg_long(pg,
		       "SELECT count(*) FROM weft_client_results WHERE "
		       "client_id = $1",
		       cl);
}

/*
 * A client's stored results (its rejections; an ack is kept by its outbox
 * rows) go when they are older than --results-ttl, even if it never writes
 * again (before, only its next writes pruned them, so every client id ever
 * seen kept its last results forever).  A resend of such a mutation gets
 * ENOTFOUND and has no second effect.  Its own stack: a TTL this short
 * would prune other tests' results.
 */
Test(write, stored_results_expire_after_the_ttl)
{
	const char *extra[] = { "--results-ttl=1s", NULL };
	char url[256], sp[80], cl[80];
	struct proto_op create, missing;
	struct wclient c;
	struct proto_msg r;
	PGconn *pg;
	uint64_t sent_ns;
	int i;

	proc_stack_up(own_stack, url);
	proc_start_write_pg(&svc2, url, extra);
	pg = pg_connect(url);
	snprintf(sp, sizeof(sp), "%s", N("ttl"));
	snprintf(cl, sizeof(cl), "%s", N("ttl-client"));
	session_at(&c, N("alice"), svc2.url);
	make_space(&c, cl, sp);
	missing = (struct proto_op){ .kind = PROTO_OP_SET,
				     .table = S("rows"),
				     .id = S(N("missing")),
				     .field = S("f"),
				     .value = str_value("x") };
	sent_ns = clock_now_ns(); /* the newest result is younger */
	r = txn(&c, cl, 2, &missing, 1);
	cr_assert(eq(i64, r.type, PROTO_REJECT));
	r = txn(&c, cl, 2, &missing, 1);
	cr_assert(eq(i64, r.type, PROTO_REJECT),
		  "stored: a resend is replayed");
	cr_assert(r.u.reject.replay);
	cr_assert(eq(i64, stored_results(pg, cl), 1), "the rejection only");

	/* nothing more from this client: its results go within the TTL and
	 * a pass (a quarter of it, at least 250 ms) */
	for (i = 0; i < 100 && stored_results(pg, cl) > 0; i++)
		usleep(100 * 1000);
	cr_assert(eq(i64, stored_results(pg, cl), 0), "pruned by age");
	cr_assert(ge(u64, (clock_now_ns() - sent_ns) / 1000000, 1000),
		  "not before the TTL");
	r = txn(&c, cl, 2, &missing, 1);
	cr_assert(eq(i64, r.type, PROTO_ERROR));
	cr_assert(eq(i64, r.u.error.code, WEFT_ENOTFOUND),
		  "a forgotten mutation, not applied again");
	/* the client goes on from where it was */
	create = create_op("rows", N("after"), sp);
	r = txn(&c, cl, 3, &create, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK));
	wclient_close(&c);
	cr_assert(lt(i64, 0,
		     proc_metric(&svc2, "weft_write_results_pruned_total")),
		  "counted");
	PQfinish(pg);
}

/*
 * Tombstones older than --tombstone-ttl are deleted, and the record's
 * table keeps the highest version they had: the same id created again
 * continues above it, so a client still holding the tombstone takes the
 * new record.  A fetch then reports the record missing, and a bootstrap
 * no longer lists it.  Its own stack, for the short TTL.
 */
Test(write, old_tombstones_are_deleted_and_versions_go_on)
{
	const char *extra[] = { "--tombstone-ttl=1s", NULL };
	char url[256], sp[80], cl[80], gone[80], kept[80];
	struct proto_op op;
	struct proto_keyref key;
	struct proto_msg m = { .type = PROTO_FETCH }, r;
	struct wclient c;
	struct proto_iter it;
	struct proto_record rec;
	PGconn *pg;
	uint64_t mid = 1;
	long left = -1;

	proc_stack_up(own_stack, url);
	proc_start_write_pg(&svc2, url, extra);
	pg = pg_connect(url);
	snprintf(sp, sizeof(sp), "%s", N("gc"));
	snprintf(cl, sizeof(cl), "%s", N("gc-client"));
	snprintf(gone, sizeof(gone), "%s", N("gone"));
	snprintf(kept, sizeof(kept), "%s", N("kept"));
	session_at(&c, N("alice"), svc2.url);
	make_space(&c, cl, sp);
	op = create_op("issues", kept, sp);
	cr_assert(eq(i64, txn(&c, cl, ++mid, &op, 1).type, PROTO_ACK));
	op.id = S(gone);
	cr_assert(eq(i64, txn(&c, cl, ++mid, &op, 1).type, PROTO_ACK));
	op = (struct proto_op){ .kind = PROTO_OP_SET,
				.table = S("issues"),
				.id = S(gone),
				.field = S("title"),
				.value = str_value("v2") };
	cr_assert(eq(i64, txn(&c, cl, ++mid, &op, 1).type, PROTO_ACK));
	op = (struct proto_op){ .kind = PROTO_OP_DELETE,
				.table = S("issues"),
				.id = S(gone) };
	r = txn(&c, cl, ++mid, &op, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK));
	proto_iter_init(&it, &r.u.ack.records);
	cr_assert(eq(i64, proto_next_record(&it, &rec), 1));
	cr_assert(rec.deleted);
	cr_assert(eq(u64, rec.version, 3), "the tombstone is version 3");

	/* within the TTL and a pass (a quarter of it, at least 250 ms) */
	for (int i = 0; i < 100 && left != 0; i++) {
		left = pg_long(pg,
			       "SELECT count(*) FROM weft_records WHERE "
			       "space = $1 AND deleted",
			       sp);
		if (left)
			usleep(100 * 1000);
	}
	cr_assert(eq(i64, left, 0), "the tombstone was deleted");
	cr_assert(eq(i64,
		     pg_long(pg,
			     "SELECT count(*) FROM weft_records WHERE "
			     "space = $1 AND NOT deleted AND tbl = 'issues'",
			     sp),
		     1),
		  "the live record stays");
	/* a fetch reports it missing */
	key = (struct proto_keyref){ S("issues"), S(gone) };
	m.u.fetch = (struct proto_fetch){ 7, PROTO_LIST(1, &key) };
	cr_assert(eq(i64, wclient_send(&c, &m), 0));
	cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_RECORDS));
	cr_assert(eq(u64, r.u.records.records.n, 0));
	cr_assert(eq(u64, r.u.records.missing.n, 1));
	/* created again: above the deleted tombstone's version */
	op = create_op("issues", gone, sp);
	r = txn(&c, cl, ++mid, &op, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK));
	proto_iter_init(&it, &r.u.ack.records);
	cr_assert(eq(i64, proto_next_record(&it, &rec), 1));
	cr_assert(eq(u64, rec.version, 4), "above the tombstone's 3");
	wclient_close(&c);
	cr_assert(lt(i64, 0,
		     proc_metric(&svc2, "weft_write_tombstones_deleted_total")),
		  "counted");
	PQfinish(pg);
}

/* the records of an ack, as "table/id@version:data|..." */
static void
ack_text(const struct proto_msg *r, char *out, size_t cap)
{
	struct proto_iter it;
	struct proto_record rec;
	size_t n = 0;

	out[0] = '\0';
	proto_iter_init(&it, &r->u.ack.records);
	while (proto_next_record(&it, &rec) == 1 && n < cap)
		n += (size_t)snprintf(
			out + n, cap - n, "%.*s/%.*s@%llu:%s:%.*s|",
			(int)rec.table.len, rec.table.p, (int)rec.id.len,
			rec.id.p, (unsigned long long)rec.version,
			rec.deleted ? "deleted" : "live", (int)rec.data.len,
			rec.data.p);
}

/*
 * An ack is not stored as a result: a resend of an acked mutation is
 * answered from the outbox rows it wrote, with the same records in the
 * same order, and has no second effect.  Once the relay has pruned those
 * rows (--outbox-retention; deleted here by hand, as its pruner does), the
 * resend gets ENOTFOUND and is still not applied again.
 */
Test(write, an_acks_resend_is_answered_from_its_outbox_rows)
{
	char sp[80], cl[80], a[80], b[80], first[2048], again[2048];
	struct proto_op ops[3];
	struct wclient c;
	struct proto_msg r;
	PGconn *pg = pg_connect(NULL);

	snprintf(sp, sizeof(sp), "%s", N("resend"));
	snprintf(cl, sizeof(cl), "%s", N("resend-client"));
	snprintf(a, sizeof(a), "%s", N("ra"));
	snprintf(b, sizeof(b), "%s", N("rb"));
	session(&c, N("alice"));
	make_space(&c, cl, sp);
	/* three ops, two records, one of them deleted: two outbox rows */
	ops[0] = create_op("issues", b, sp);
	ops[1] = create_op("issues", a, sp);
	ops[2] = (struct proto_op){ .kind = PROTO_OP_DELETE,
				    .table = S("issues"),
				    .id = S(b) };
	r = txn(&c, cl, 2, ops, 3);
	cr_assert(eq(i64, r.type, PROTO_ACK));
	cr_assert_not(r.u.ack.replay);
	ack_text(&r, first, sizeof(first));
	cr_assert(eq(i64, stored_results(pg, cl), 0), "no stored result");
	r = txn(&c, cl, 2, ops, 3);
	cr_assert(eq(i64, r.type, PROTO_ACK));
	cr_assert(r.u.ack.replay);
	ack_text(&r, again, sizeof(again));
	cr_assert_str_eq(again, first, "the same records, in the same order");
	cr_assert_not_null(strstr(first, ":deleted:"), "%s", first);
	/* one set: the set-based path, answered the same way */
	ops[0] = (struct proto_op){ .kind = PROTO_OP_SET,
				    .table = S("issues"),
				    .id = S(a),
				    .field = S("title"),
				    .value = str_value("once") };
	r = txn(&c, cl, 3, ops, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK));
	ack_text(&r, first, sizeof(first));
	r = txn(&c, cl, 3, ops, 1);
	cr_assert(r.u.ack.replay);
	ack_text(&r, again, sizeof(again));
	cr_assert_str_eq(again, first);
	/* pruned: forgotten, not applied again */
	cr_assert(eq(i64,
		     pg_long(pg,
			     "WITH d AS (DELETE FROM weft_outbox WHERE "
			     "client_id = $1 AND mid = 3 RETURNING 1) "
			     "SELECT count(*) FROM d",
			     cl),
		     1));
	r = txn(&c, cl, 3, ops, 1);
	cr_assert(eq(i64, r.type, PROTO_ERROR));
	cr_assert(eq(i64, r.u.error.code, WEFT_ENOTFOUND));
	cr_assert(eq(i64,
		     pg_long(pg,
			     "SELECT version FROM weft_records WHERE "
			     "tbl = 'issues' AND id = $1",
			     a),
		     2),
		  "no second effect");
	r = txn(&c, cl, 4, ops, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK), "and the client goes on");
	wclient_close(&c);
	PQfinish(pg);
}

Test(write, fetch_asks_for_at_most_max_ops_keys)
{
	static struct proto_keyref keys[257];
	struct proto_msg m = { .type = PROTO_FETCH }, r;
	struct wclient c;

	for (int i = 0; i < 257; i++)
		keys[i] = (struct proto_keyref){ S("t"), S("same") };
	session(&c, N("alice"));
	m.u.fetch = (struct proto_fetch){ 5, PROTO_LIST(257, keys) };
	cr_assert(eq(i64, wclient_send(&c, &m), 0));
	cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_ERROR));
	cr_assert(eq(i64, r.u.error.code, WEFT_ELIMIT));
	m.u.fetch.keys.n = 256; /* at the limit, duplicates are fine */
	cr_assert(eq(i64, wclient_send(&c, &m), 0));
	cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_RECORDS));
	wclient_close(&c);
}

/* msgpack of one small value, kept in a ring */
static struct proto_bytes
mp_int(int v)
{
	static uint8_t store[8][9];
	static int next;
	uint8_t *d = store[next++ % 8];
	msgpack_sbuffer sb;
	msgpack_packer pk;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_int(&pk, v);
	memcpy(d, sb.data, sb.size);
	struct proto_bytes b = { d, (uint32_t)sb.size };
	msgpack_sbuffer_destroy(&sb);
	return b;
}

/* the row of the single record an ack carries, as JSON text */
static void
ack_row(const struct proto_msg *r, char *out, size_t cap, uint64_t *ver,
	bool *deleted)
{
	struct proto_iter it;
	struct proto_record rec;
	struct buf b;

	cr_assert(eq(i64, r->type, PROTO_ACK), "got %s",
		  proto_type_name(r->type));
	proto_iter_init(&it, &r->u.ack.records);
	cr_assert(eq(i64, proto_next_record(&it, &rec), 1));
	*ver = rec.version;
	*deleted = rec.deleted;
	buf_init(&b, 0);
	if (rec.data.p)
		cr_assert(
			eq(i64, json_from_mp(&b, rec.data.p, rec.data.len), 0));
	buf_append(&b, "", 1);
	snprintf(out, cap, "%s", (const char *)b.data);
	buf_fini(&b);
}

Test(write, every_op_through_the_service)
{
	char sp[80], cl[80], id[80], row[512];
	struct proto_op ops[8];
	struct proto_msg r;
	struct wclient c;
	uint64_t ver;
	bool del;
	static uint8_t data[64];
	msgpack_sbuffer sb;
	msgpack_packer pk;

	snprintf(sp, sizeof(sp), "%s", N("ops"));
	snprintf(cl, sizeof(cl), "%s", N("ops-client"));
	snprintf(id, sizeof(id), "%s", N("rec"));
	session(&c, N("alice"));
	make_space(&c, cl, sp);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	msgpack_pack_str_with_body(&pk, "labels", 6);
	msgpack_pack_array(&pk, 1);
	msgpack_pack_int(&pk, 1);
	msgpack_pack_str_with_body(&pk, "gone", 4);
	msgpack_pack_true(&pk);
	memcpy(data, sb.data, sb.size);
	ops[0] = (struct proto_op){ .kind = PROTO_OP_CREATE,
				    .table = S("t"),
				    .id = S(id),
				    .space = S(sp),
				    .data = { data, (uint32_t)sb.size } };
	msgpack_sbuffer_destroy(&sb);
	/* list_add of a duplicate and of a new value, list_remove of a
	 * missing one, incr of a missing field twice, unset */
	ops[1] = (struct proto_op){ .kind = PROTO_OP_LIST_ADD,
				    .table = S("t"),
				    .id = S(id),
				    .field = S("labels"),
				    .value = mp_int(1) };
	ops[2] = (struct proto_op){ .kind = PROTO_OP_LIST_ADD,
				    .table = S("t"),
				    .id = S(id),
				    .field = S("labels"),
				    .value = mp_int(2) };
	ops[3] = (struct proto_op){ .kind = PROTO_OP_LIST_REMOVE,
				    .table = S("t"),
				    .id = S(id),
				    .field = S("labels"),
				    .value = mp_int(9) };
	ops[4] = (struct proto_op){ .kind = PROTO_OP_INCR,
				    .table = S("t"),
				    .id = S(id),
				    .field = S("n"),
				    .value = mp_int(5) };
	ops[5] = (struct proto_op){ .kind = PROTO_OP_INCR,
				    .table = S("t"),
				    .id = S(id),
				    .field = S("n"),
				    .value = mp_int(-2) };
	ops[6] = (struct proto_op){ .kind = PROTO_OP_UNSET,
				    .table = S("t"),
				    .id = S(id),
				    .field = S("gone") };
	r = txn(&c, cl, 2, ops, 7);
	ack_row(&r, row, sizeof(row), &ver, &del);
	cr_assert(eq(u64, ver, 1), "seven ops, one version");
	cr_assert_str_eq(row, "{\"n\":3,\"labels\":[1,2]}");
	/* list_remove of a present value */
	ops[0] = ops[1];
	ops[0].kind = PROTO_OP_LIST_REMOVE;
	r = txn(&c, cl, 3, ops, 1);
	ack_row(&r, row, sizeof(row), &ver, &del);
	cr_assert_str_eq(row, "{\"n\":3,\"labels\":[2]}");
	/* tombstone, then re-create: the version moves on */
	ops[0] = (struct proto_op){ .kind = PROTO_OP_DELETE,
				    .table = S("t"),
				    .id = S(id) };
	r = txn(&c, cl, 4, ops, 1);
	ack_row(&r, row, sizeof(row), &ver, &del);
	cr_assert(del);
	cr_assert(eq(u64, ver, 3));
	ops[0] = create_op("t", id, sp);
	r = txn(&c, cl, 5, ops, 1);
	ack_row(&r, row, sizeof(row), &ver, &del);
	cr_assert(not(del));
	cr_assert(eq(u64, ver, 4));
	cr_assert_str_eq(row, "{}");
	wclient_close(&c);
}

/* one session and one transaction over url; ca for TLS, or NULL */
static void
roundtrip_on(const char *url, const char *ca, const char *space)
{
	struct proto_msg r;
	struct proto_op op = create_op("spaces", space, space);
	char *tok = token(N("alice"));
	struct wclient c;

	cr_assert(eq(i64, wclient_dial_ca(&c, url, ca), 0), "dial %s", url);
	cr_assert(eq(i64, wclient_hello(&c, tok, "client", &r, WAIT_MS), 0),
		  "%s", url);
	cr_assert(eq(i64, r.type, PROTO_WELCOME), "%s", url);
	r = txn(&c, space, 1, &op, 1); /* the space names the client too */
	cr_assert(eq(i64, r.type, PROTO_ACK), "%s: got %s", url,
		  proto_type_name(r.type));
	wclient_close(&c);
	free(tok);
}

Test(write, tls_and_websocket_listeners)
{
	char dir[] = "/tmp/weft-tls-XXXXXX", cmd[512], pem[96], ca[96];
	char flag[128], sp[80];
	const char *extra[2] = { flag, NULL };
	struct proc keep = svc, tls, ws, wss;
	struct wclient c;
	struct proto_msg r;

	cr_assert_not_null(mkdtemp(dir));
	snprintf(ca, sizeof(ca), "%s/ca.pem", dir);
	snprintf(pem, sizeof(pem), "%s/server.pem", dir);
	snprintf(cmd, sizeof(cmd),
		 "openssl req -x509 -newkey rsa:2048 -nodes -days 1 "
		 "-subj /CN=localhost -addext subjectAltName=DNS:localhost "
		 "-keyout %s/key.pem -out %s 2>/dev/null && cat %s "
		 "%s/key.pem > %s",
		 dir, ca, ca, dir, pem);
	cr_assert(eq(i64, system(cmd), 0), "openssl made a certificate");
	snprintf(flag, sizeof(flag), "--tls-cert=%s", pem);

	proc_start_write_on(&tls, "tls+tcp", "", ca, extra);
	snprintf(sp, sizeof(sp), "%s", N("tls-space"));
	roundtrip_on(tls.url, ca, sp);
	/* a client that speaks plain TCP to it gets no session */
	{
		char plain[96];

		snprintf(plain, sizeof(plain), "tcp%s", tls.url + 7);
		cr_assert(eq(i64, wclient_dial(&c, plain), 0));
		cr_assert(
			ne(i64, wclient_hello(&c, "x", "client", &r, 2000), 0),
			"no reply in clear text");
		wclient_close(&c);
	}
	proc_stop(&tls);

	proc_start_write_on(&ws, "ws", "/weft", NULL, NULL);
	snprintf(sp, sizeof(sp), "%s", N("ws-space"));
	roundtrip_on(ws.url, NULL, sp);
	proc_stop(&ws);

	proc_start_write_on(&wss, "wss", "/weft", ca, extra);
	snprintf(sp, sizeof(sp), "%s", N("wss-space"));
	roundtrip_on(wss.url, ca, sp);
	proc_stop(&wss);

	svc = keep;
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert(eq(i64, system(cmd), 0));
}

/* the version and field n of a record an ack carries */
static void
ack_n(const struct proto_msg *r, uint64_t *ver, long *n)
{
	char row[256];
	bool del;
	const char *p;

	ack_row(r, row, sizeof(row), ver, &del);
	p = strstr(row, "\"n\":");
	*n = p ? strtol(p + 4, NULL, 10) : -1;
}

/*
 * DESIGN.md runs weft-write xN, stateless: two services on one Postgres
 * share a client's ids.  Its transactions alternate between them, then
 * one mutation goes to both at once, as a client does when it resends on
 * a new connection while the old one still has it in flight: it applies
 * once, and the other answer is the stored result.
 */
Test(write, two_services_share_a_client_exactly_once)
{
	const char *sp = N("pair"), *cl = N("pair-client"), *user = N("alice");
	struct proto_op create = create_op("t", "c", sp);
	struct proto_op incr = { .kind = PROTO_OP_INCR,
				 .table = S("t"),
				 .id = S("c"),
				 .field = S("n"),
				 .value = mp_int(1) };
	struct proto_msg m = { .type = PROTO_TXN }, r;
	struct wclient c[2];
	uint64_t mid = 1, ver = 0, v[2];
	long n = 0, got[2];
	bool replay[2];
	char sql[256];
	PGconn *pg;
	PGresult *res;

	proc_start_write(&svc2, NULL);
	session_at(&c[0], user, svc.url);
	session_at(&c[1], user, svc2.url);
	make_space(&c[0], cl, sp);
	r = txn(&c[1], cl, ++mid, &create, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK), "create through the second");
	for (int k = 0; k < 40; k++) {
		r = txn(&c[k % 2], cl, ++mid, &incr, 1);
		cr_assert(eq(i64, r.type, PROTO_ACK), "mid %llu: %s",
			  (unsigned long long)mid, proto_type_name(r.type));
		cr_assert(eq(int, r.u.ack.replay, 0), "a new mutation");
		ack_n(&r, &ver, &n);
		cr_assert(eq(i64, n, k + 1), "mid %llu",
			  (unsigned long long)mid);
	}
	cr_assert(eq(u64, ver, 41), "one version per transaction");
	/* the same mutation to both, neither waiting for the other */
	mid++;
	m.u.txn = (struct proto_txn){ mid, S(cl), mid, PROTO_LIST(1, &incr) };
	cr_assert(eq(i64, wclient_send(&c[0], &m), 0));
	cr_assert(eq(i64, wclient_send(&c[1], &m), 0));
	for (int i = 0; i < 2; i++) {
		cr_assert(eq(i64, wclient_recv(&c[i], &r, WAIT_MS), 0));
		cr_assert(eq(i64, r.type, PROTO_ACK), "service %d: %s", i + 1,
			  proto_type_name(r.type));
		replay[i] = r.u.ack.replay;
		ack_n(&r, &v[i], &got[i]);
	}
	cr_assert(ne(int, replay[0], replay[1]),
		  "one applied it, one replayed it");
	cr_assert(eq(u64, v[0], 42), "the one new version");
	cr_assert(eq(u64, v[1], 42), "the same, replayed");
	cr_assert(eq(i64, got[0], 41));
	cr_assert(eq(i64, got[1], 41));
	/* and the next id goes on from there, on either */
	r = txn(&c[1], cl, ++mid, &incr, 1);
	cr_assert(eq(i64, r.type, PROTO_ACK));
	ack_n(&r, &ver, &n);
	cr_assert(eq(i64, n, 42));
	wclient_close(&c[0]);
	wclient_close(&c[1]);
	/* Postgres agrees: one outbox row per applied change of the record */
	pg = pg_connect(NULL);
	snprintf(sql, sizeof(sql),
		 "SELECT count(*), count(DISTINCT version), max(version) "
		 "FROM weft_outbox WHERE tbl = 't' AND id = 'c' AND "
		 "space = '%s'",
		 sp);
	res = PQexec(pg, sql);
	cr_assert(eq(i64, PQresultStatus(res), PGRES_TUPLES_OK));
	cr_assert(strcmp(PQgetvalue(res, 0, 0), "43") == 0, "outbox rows: %s",
		  PQgetvalue(res, 0, 0));
	cr_assert(strcmp(PQgetvalue(res, 0, 1), "43") == 0, "versions: %s",
		  PQgetvalue(res, 0, 1));
	cr_assert(strcmp(PQgetvalue(res, 0, 2), "43") == 0, "newest: %s",
		  PQgetvalue(res, 0, 2));
	PQclear(res);
	PQfinish(pg);
	proc_stop(&svc2);
	svc2.pid = 0;
}

/* sleep until clock_now_ms() reaches at_ms (at once if it has) */
static void
sleep_until(uint64_t at_ms)
{
	uint64_t now = clock_now_ms();

	if (at_ms > now)
		clock_sleep_ms((uint32_t)(at_ms - now));
}

/*
 * --user-rate: a user's transactions beyond its rate (after a burst) get
 * BACKOFF naming when to come back, and are not applied; the rest of the
 * client's window behind a refused one is refused too, without taking the
 * tokens its resend will need; sent again then, they are applied once.
 * The user's other clients share the limit; other users are not held back.
 */
Test(write, a_user_over_its_rate_gets_backoff_and_others_do_not)
{
	/* one a second, 20 at once; a refusal waits for a tenth of the
	 * burst: two tokens, the second 1 s after the first */
	static const char *const extra[] = { "--user-rate=1", "--user-burst=20",
					     NULL };
	char sp[80], cl[80], cl2[80], q[512], v[64], ids[64][80];
	struct proto_op ops[64];
	struct proto_msg r = { 0 };
	struct wclient c, c2, o;
	uint64_t t0, refused_at, elapsed, mid;
	uint32_t retry;

	proc_start_write(&svc2, extra);
	snprintf(sp, sizeof(sp), "%s", N("rate"));
	snprintf(cl, sizeof(cl), "%s", N("rate-client"));
	snprintf(cl2, sizeof(cl2), "%s", N("rate-client2"));
	for (int i = 0; i < 64; i++) {
		snprintf(ids[i], sizeof(ids[i]), "%s-%d", N("rate-row"), i);
		ops[i] = create_op("rows", ids[i], sp);
	}
	/* every session first: nothing slow between the refusal and the
	 * checks that must come before the next token */
	session_at(&c, N("rate-ann"), svc2.url);
	session_at(&c2, N("rate-ann"), svc2.url);
	session_at(&o, N("rate-bo"), svc2.url);
	t0 = clock_now_ms();
	make_space(&c, cl, sp); /* mid 1: the first token */
	for (mid = 2; mid < 60; mid++) {
		r = txn(&c, cl, mid, &ops[mid], 1);
		if (r.type != PROTO_ACK)
			break;
	}
	refused_at = clock_now_ms();
	elapsed = refused_at - t0;
	cr_assert(eq(i64, r.type, PROTO_BACKOFF), "got %s",
		  proto_type_name(r.type));
	cr_assert(eq(u64, r.u.backoff.rid, mid));
	cr_assert(eq(int, r.u.backoff.reconnect, 0));
	cr_assert(r.u.backoff.msg.len > 10 &&
		  memcmp(r.u.backoff.msg.p, "rate limit", 10) == 0);
	/* the burst went, and what came back meanwhile (one a second) */
	cr_assert(ge(u64, mid - 1, 20), "%llu acked",
		  (unsigned long long)(mid - 1));
	cr_assert(le(u64, mid - 1, 20 + elapsed / 1000 + 1), "%llu acked",
		  (unsigned long long)(mid - 1));
	retry = r.u.backoff.retry_ms;
	cr_assert(ge(u32, retry, 1000), "%u ms", retry);
	cr_assert(le(u32, retry, 2000), "%u ms", retry);

	/* the same user's other client shares the limit, until the first
	 * token is back (retry - 1000 ms after the refusal) ... */
	r = txn(&c2, cl2, 1, &ops[63], 1);
	if (clock_now_ms() - refused_at + 50 < retry - 1000)
		cr_assert(eq(i64, r.type, PROTO_BACKOFF), "got %s",
			  proto_type_name(r.type));
	else
		cr_log_warn("the other client came too late to check");
	/* ... another user's does not */
	make_space(&o, N("rate-bo-client"), N("rate-bo-space"));

	/* nothing of them was applied: the client still expects mid */
	snprintf(q, sizeof(q),
		 "SELECT last_mid || ' ' || (SELECT count(*) FROM weft_records"
		 " WHERE tbl = 'rows' AND id IN ('%s', '%s')) FROM weft_clients"
		 " WHERE client_id = '%s'",
		 ids[mid], ids[mid + 1], cl);
	proc_pg_value(getenv("WEFT_TEST_PG_URL"), q, v, sizeof(v));
	snprintf(q, sizeof(q), "%llu 0", (unsigned long long)(mid - 1));
	cr_assert_str_eq(v, q);

	/* once the first token is back, the rest of the client's window
	 * (here mid + 1) is still held back with the refused one, and takes
	 * no token: else it would go, and be refused for its gap */
	sleep_until(refused_at + retry - 1000 + 100);
	r = txn(&c, cl, mid + 1, &ops[mid + 1], 1);
	cr_assert(eq(i64, r.type, PROTO_BACKOFF), "got %s",
		  proto_type_name(r.type));
	cr_assert(le(u32, r.u.backoff.retry_ms, retry));

	/* after the wait two tokens are back, both for the resends; each
	 * is applied once */
	sleep_until(refused_at + retry + 20);
	for (uint64_t k = mid; k <= mid + 1; k++) {
		r = txn(&c, cl, k, &ops[k], 1);
		cr_assert(eq(i64, r.type, PROTO_ACK), "mid %llu: got %s",
			  (unsigned long long)k, proto_type_name(r.type));
	}
	snprintf(q, sizeof(q),
		 "SELECT last_mid || ' ' || (SELECT sum(version) FROM"
		 " weft_records WHERE tbl = 'rows' AND id IN ('%s', '%s'))"
		 " FROM weft_clients WHERE client_id = '%s'",
		 ids[mid], ids[mid + 1], cl);
	proc_pg_value(getenv("WEFT_TEST_PG_URL"), q, v, sizeof(v));
	snprintf(q, sizeof(q), "%llu 2", (unsigned long long)(mid + 1));
	cr_assert_str_eq(v, q);
	cr_assert(le(i64, 3,
		     proc_metric(&svc2, "weft_write_rate_limited_total")));
	cr_assert(le(i64, 2, proc_metric(&svc2, "weft_write_rate_users")));
	wclient_close(&c);
	wclient_close(&c2);
	wclient_close(&o);
}
