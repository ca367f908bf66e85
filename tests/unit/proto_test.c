/*
 * proto_test.c - every message round-trips with every field; malformed
 * frames (truncated, oversized, wrong types, huge claimed counts, deep
 * nesting, trailing bytes, missing and duplicate fields, bad encodings)
 * each get their own error naming the field; decoding allocates nothing.
 */
#define _GNU_SOURCE /* memmem */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <msgpack.h>
#include <string.h>

#include <weft/error.h>

#include "proto/frame.h"
#include "proto/msg.h"

/* ---- allocation counting (the binary links with --wrap=malloc...) ---- */
void *__real_malloc(size_t n);
void *__wrap_malloc(size_t n);
void *__real_calloc(size_t a, size_t b);
void *__wrap_calloc(size_t a, size_t b);
void *__real_realloc(void *p, size_t n);
void *__wrap_realloc(void *p, size_t n);

static unsigned long allocs;

void *
__wrap_malloc(size_t n)
{
	allocs++;
	return __real_malloc(n);
}

void *
__wrap_calloc(size_t a, size_t b)
{
	allocs++;
	return __real_calloc(a, b);
}

void *
__wrap_realloc(void *p, size_t n)
{
	allocs++;
	return __real_realloc(p, n);
}

/* ---- helpers ---- */

static struct buf out;
static msgpack_sbuffer sb;
static msgpack_packer pk;

static void
setup(void)
{
	buf_init(&out, 0);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
}

static void
teardown(void)
{
	buf_fini(&out);
	msgpack_sbuffer_destroy(&sb);
}

TestSuite(proto, .init = setup, .fini = teardown);

#define S(x) proto_str_c(x)

static void
assert_str(struct proto_str got, const char *want, const char *what)
{
	cr_assert_not_null(got.p, "%s: absent, expected '%s'", what, want);
	cr_assert(got.len == strlen(want) && memcmp(got.p, want, got.len) == 0,
		  "%s: expected '%s', got '%.*s'", what, want, (int)got.len,
		  got.p);
}

/* both absent, or both present with the same bytes */
static void
assert_same(struct proto_str got, struct proto_str want, const char *what)
{
	cr_assert(eq(i64, got.p != NULL, want.p != NULL), "%s presence", what);
	if (!want.p)
		return;
	cr_assert(got.len == want.len && memcmp(got.p, want.p, got.len) == 0,
		  "%s: expected '%.*s', got '%.*s'", what, (int)want.len,
		  want.p, (int)got.len, got.p);
}

static void
assert_bytes(struct proto_bytes got, struct proto_bytes want, const char *what)
{
	cr_assert(eq(i64, got.len, want.len), "%s: length %u, expected %u",
		  what, got.len, want.len);
	cr_assert(eq(i64, memcmp(got.p, want.p, got.len), 0), "%s differs",
		  what);
}

/* a small row {"title": t, "n": n, "tags": ["a","b"]}, kept in a static */
static struct proto_bytes
row(const char *title, int n)
{
	static char store[8][128];
	static int next;
	msgpack_sbuffer s;
	msgpack_packer p;
	char *dst = store[next++ % 8];

	msgpack_sbuffer_init(&s);
	msgpack_packer_init(&p, &s, msgpack_sbuffer_write);
	msgpack_pack_map(&p, 3);
	msgpack_pack_str_with_body(&p, "title", 5);
	msgpack_pack_str_with_body(&p, title, strlen(title));
	msgpack_pack_str_with_body(&p, "n", 1);
	msgpack_pack_int(&p, n);
	msgpack_pack_str_with_body(&p, "tags", 4);
	msgpack_pack_array(&p, 2);
	msgpack_pack_str_with_body(&p, "a", 1);
	msgpack_pack_str_with_body(&p, "b", 1);
	cr_assert(le(i64, s.size, 128));
	memcpy(dst, s.data, s.size);
	struct proto_bytes b = { (const uint8_t *)dst, (uint32_t)s.size };
	msgpack_sbuffer_destroy(&s);
	return b;
}

static struct proto_bytes
scalar_int(int v)
{
	static uint8_t store[8][9];
	static int next;
	uint8_t *dst = store[next++ % 8];
	msgpack_sbuffer s;
	msgpack_packer p;

	msgpack_sbuffer_init(&s);
	msgpack_packer_init(&p, &s, msgpack_sbuffer_write);
	msgpack_pack_int(&p, v);
	memcpy(dst, s.data, s.size);
	struct proto_bytes b = { dst, (uint32_t)s.size };
	msgpack_sbuffer_destroy(&s);
	return b;
}

/*
 * encode m, check the frame header, decode the body into *got, then
 * re-encode *got and check the bytes are identical (decoded lists are
 * copied verbatim, so this proves nothing is lost or reordered)
 */
static void
round_trip(const struct proto_msg *m, struct proto_msg *got)
{
	struct proto_err err;
	struct buf again;
	uint32_t len;
	int rc;

	buf_reset(&out);
	rc = proto_encode(&out, m, FRAME_MAX_DEFAULT, NULL);
	cr_assert(eq(i64, rc, 0), "encode %s: %s", proto_type_name(m->type),
		  weft_errname(rc));
	len = frame_get_header(out.data);
	cr_assert(eq(i64, len, out.len - FRAME_HEADER), "frame length prefix");
	rc = proto_decode(out.data + FRAME_HEADER, len, got, &err);
	cr_assert(eq(i64, rc, 0), "decode %s: %s (%s)",
		  proto_type_name(m->type), weft_errname(rc), err.msg);
	cr_assert(eq(i64, got->type, m->type));
	buf_init(&again, 0);
	cr_assert(
		eq(i64, proto_encode(&again, got, FRAME_MAX_DEFAULT, NULL), 0));
	cr_assert(eq(i64, again.len, out.len), "re-encoded length differs");
	cr_assert(eq(i64, memcmp(again.data, out.data, out.len), 0),
		  "re-encoded bytes differ");
	buf_fini(&again);
}

/* ---- round trips: one test per message ---- */

Test(proto, hello)
{
	struct proto_msg m = { .type = PROTO_HELLO }, g;

	m.u.hello = (struct proto_hello){ 7,
					  PROTO_VERSION,
					  S("eyJ.a.b"),
					  S("client-1"),
					  { 123456789, 3 },
					  S("libweft/0.1.0") };
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.hello.rid, 7));
	cr_assert(eq(i64, g.u.hello.proto, PROTO_VERSION));
	assert_str(g.u.hello.token, "eyJ.a.b", "token");
	assert_str(g.u.hello.client_id, "client-1", "client");
	cr_assert(eq(i64, g.u.hello.cursor.lsn, 123456789));
	cr_assert(eq(i64, g.u.hello.cursor.idx, 3));
	assert_str(g.u.hello.agent, "libweft/0.1.0", "agent");
}

Test(proto, welcome)
{
	struct proto_msg m = { .type = PROTO_WELCOME }, g;

	m.u.welcome =
		(struct proto_welcome){ 7,  1,	   S("user-9"), S("fanout-a"),
					42, 15000, 1 << 20,	256 };
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.welcome.rid, 7));
	assert_str(g.u.welcome.user, "user-9", "user");
	assert_str(g.u.welcome.node, "fanout-a", "node");
	cr_assert(eq(i64, g.u.welcome.session, 42));
	cr_assert(eq(i64, g.u.welcome.heartbeat_ms, 15000));
	cr_assert(eq(i64, g.u.welcome.max_frame, 1 << 20));
	cr_assert(eq(i64, g.u.welcome.max_ops, 256));
}

Test(proto, txn_with_every_op_kind)
{
	struct proto_op ops[] = {
		{ .kind = PROTO_OP_CREATE,
		  .table = S("issues"),
		  .id = S("i1"),
		  .space = S("team-a"),
		  .data = row("first", 1) },
		{ .kind = PROTO_OP_PUT,
		  .table = S("issues"),
		  .id = S("i2"),
		  .space = S("team-b"),
		  .data = row("moved", 2),
		  .expect = 4 },
		{ .kind = PROTO_OP_SET,
		  .table = S("issues"),
		  .id = S("i1"),
		  .field = S("status"),
		  .value = scalar_int(3),
		  .expect = 1 },
		{ .kind = PROTO_OP_UNSET,
		  .table = S("issues"),
		  .id = S("i1"),
		  .field = S("assignee") },
		{ .kind = PROTO_OP_DELETE,
		  .table = S("comments"),
		  .id = S("c1"),
		  .expect = 9 },
		{ .kind = PROTO_OP_LIST_ADD,
		  .table = S("issues"),
		  .id = S("i1"),
		  .field = S("labels"),
		  .value = scalar_int(5) },
		{ .kind = PROTO_OP_LIST_REMOVE,
		  .table = S("issues"),
		  .id = S("i1"),
		  .field = S("labels"),
		  .value = scalar_int(6) },
		{ .kind = PROTO_OP_INCR,
		  .table = S("issues"),
		  .id = S("i1"),
		  .field = S("votes"),
		  .value = scalar_int(-2) },
	};
	const size_t nops = sizeof(ops) / sizeof(ops[0]);
	struct proto_msg m = { .type = PROTO_TXN }, g;
	struct proto_iter it;
	struct proto_op op;
	size_t i = 0;
	int rc;

	m.u.txn = (struct proto_txn){ 11, S("client-1"), 1234,
				      PROTO_LIST((uint32_t)nops, ops) };
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.txn.rid, 11));
	assert_str(g.u.txn.client_id, "client-1", "client");
	cr_assert(eq(i64, g.u.txn.mid, 1234));
	cr_assert(eq(i64, g.u.txn.ops.n, nops));
	proto_iter_init(&it, &g.u.txn.ops);
	while ((rc = proto_next_op(&it, &op)) == 1) {
		const struct proto_op *w = &ops[i++];

		cr_assert(eq(i64, op.kind, w->kind), "op %zu kind", i);
		assert_same(op.table, w->table, "table");
		assert_same(op.id, w->id, "id");
		assert_same(op.space, w->space, "space");
		assert_same(op.field, w->field, "field");
		cr_assert(eq(i64, op.value.p != NULL, w->value.p != NULL));
		if (w->value.p)
			assert_bytes(op.value, w->value, "value");
		cr_assert(eq(i64, op.data.p != NULL, w->data.p != NULL));
		if (w->data.p)
			assert_bytes(op.data, w->data, "data");
		cr_assert(eq(i64, op.expect, w->expect), "op %zu expect", i);
	}
	cr_assert(eq(i64, rc, 0));
	cr_assert(eq(i64, i, nops));
}

static struct proto_record recs[] = {
	{ { "issues", 6 },
	  { "i1", 2 },
	  { "team-a", 6 },
	  3,
	  false,
	  { 0, 0 },
	  { 0, 0 } },
	{ { "issues", 6 },
	  { "i2", 2 },
	  { "team-a", 6 },
	  9,
	  true,
	  { 0, 0 },
	  { 0, 0 } },
};

static void
check_records(const struct proto_list *l)
{
	struct proto_iter it;
	struct proto_record r;
	size_t i = 0;

	cr_assert(eq(i64, l->n, 2));
	proto_iter_init(&it, l);
	while (proto_next_record(&it, &r) == 1) {
		assert_str(r.table, "issues", "table");
		assert_str(r.id, i == 0 ? "i1" : "i2", "id");
		assert_str(r.space, "team-a", "space");
		cr_assert(eq(i64, r.version, recs[i].version));
		cr_assert(eq(i64, r.deleted, recs[i].deleted));
		cr_assert(eq(i64, r.data.p != NULL, recs[i].data.p != NULL));
		if (recs[i].data.p)
			assert_bytes(r.data, recs[i].data, "data");
		i++;
	}
	cr_assert(eq(i64, i, 2));
}

Test(proto, ack)
{
	struct proto_msg m = { .type = PROTO_ACK }, g;

	recs[0].data = row("hello", 7);
	m.u.ack = (struct proto_ack){ 12, 1234, true, PROTO_LIST(2, recs) };
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.ack.rid, 12));
	cr_assert(eq(i64, g.u.ack.mid, 1234));
	cr_assert(eq(i64, g.u.ack.replay, true));
	check_records(&g.u.ack.records);
}

Test(proto, reject)
{
	struct proto_msg m = { .type = PROTO_REJECT }, g;

	recs[0].data = row("server", 1);
	m.u.reject = (struct proto_reject){ 13,
					    1235,
					    WEFT_ECONFLICT,
					    S("issues/i1 is at version 3, "
					      "expected 2"),
					    2,
					    S("status"),
					    true,
					    PROTO_LIST(2, recs) };
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.reject.rid, 13));
	cr_assert(eq(i64, g.u.reject.mid, 1235));
	cr_assert(eq(i64, g.u.reject.code, WEFT_ECONFLICT));
	assert_str(g.u.reject.msg, "issues/i1 is at version 3, expected 2",
		   "msg");
	cr_assert(eq(i64, g.u.reject.opnum, 2));
	assert_str(g.u.reject.field, "status", "field");
	cr_assert(g.u.reject.replay);
	check_records(&g.u.reject.records);
}

Test(proto, fetch_and_records)
{
	struct proto_keyref refs[] = { { S("issues"), S("i1") },
				       { S("comments"), S("c9") } };
	struct proto_msg m = { .type = PROTO_FETCH }, g;
	struct proto_iter it;
	struct proto_keyref r;

	m.u.fetch = (struct proto_fetch){ 14, PROTO_LIST(2, refs) };
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.fetch.rid, 14));
	proto_iter_init(&it, &g.u.fetch.keys);
	cr_assert(eq(i64, proto_next_keyref(&it, &r), 1));
	assert_str(r.table, "issues", "table");
	assert_str(r.id, "i1", "id");
	cr_assert(eq(i64, proto_next_keyref(&it, &r), 1));
	assert_str(r.table, "comments", "table");
	assert_str(r.id, "c9", "id");
	cr_assert(eq(i64, proto_next_keyref(&it, &r), 0));

	recs[0].data = row("fetched", 2);
	m = (struct proto_msg){ .type = PROTO_RECORDS };
	m.u.records = (struct proto_records){ 14, PROTO_LIST(2, recs),
					      PROTO_LIST(1, &refs[1]) };
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.records.rid, 14));
	check_records(&g.u.records.records);
	proto_iter_init(&it, &g.u.records.missing);
	cr_assert(eq(i64, proto_next_keyref(&it, &r), 1));
	assert_str(r.id, "c9", "missing id");
	cr_assert(eq(i64, proto_next_keyref(&it, &r), 0));
}

Test(proto, bootstrap_and_page)
{
	static const uint8_t tok[] = { 0, 1, 2, 0xff };
	struct proto_msg m = { .type = PROTO_BOOTSTRAP }, g;

	m.u.bootstrap = (struct proto_bootstrap){
		15, S("team-a"), { tok, sizeof(tok) }, 256 * 1024, true
	};
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.bootstrap.rid, 15));
	cr_assert(g.u.bootstrap.json, "the JSON-text flag survives");
	assert_str(g.u.bootstrap.space, "team-a", "space");
	assert_bytes(g.u.bootstrap.token,
		     (struct proto_bytes){ tok, sizeof(tok) }, "token");
	cr_assert(eq(i64, g.u.bootstrap.max_bytes, 256 * 1024));

	recs[0].data = row("page", 3);
	m = (struct proto_msg){ .type = PROTO_PAGE };
	m.u.page = (struct proto_page){ 15,
					S("team-a"),
					PROTO_LIST(2, recs),
					{ tok, sizeof(tok) },
					{ 0x16B3748, 0 },
					100000 };
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.page.rid, 15));
	assert_str(g.u.page.space, "team-a", "space");
	check_records(&g.u.page.records);
	assert_bytes(g.u.page.next, (struct proto_bytes){ tok, sizeof(tok) },
		     "next");
	cr_assert(eq(i64, g.u.page.cursor.lsn, 0x16B3748));
	cr_assert(eq(i64, g.u.page.total, 100000));
}

Test(proto, last_page_has_no_next_token)
{
	struct proto_msg m = { .type = PROTO_PAGE }, g;

	m.u.page = (struct proto_page){ .rid = 1, .space = S("s") };
	round_trip(&m, &g);
	cr_assert_null(g.u.page.next.p);
	cr_assert(eq(i64, g.u.page.records.n, 0));
}

Test(proto, subscribe_unsubscribe_subscribed)
{
	struct proto_str keys[] = { S("space/team-a"), S("rec/issues/i1") };
	struct proto_subres res[] = {
		{ S("space/team-a"), 0, { NULL, 0 } },
		{ S("space/team-z"), WEFT_EPERM,
		  S("not a member of 'team-z'") },
	};
	struct proto_msg m = { .type = PROTO_SUBSCRIBE }, g;
	struct proto_iter it;
	struct proto_str k;
	struct proto_subres r;

	m.u.subscribe =
		(struct proto_subscribe){ 16, PROTO_LIST(2, keys), { 99, 1 } };
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.subscribe.rid, 16));
	cr_assert(eq(i64, g.u.subscribe.cursor.lsn, 99));
	cr_assert(eq(i64, g.u.subscribe.cursor.idx, 1));
	proto_iter_init(&it, &g.u.subscribe.keys);
	cr_assert(eq(i64, proto_next_str(&it, &k), 1));
	assert_str(k, "space/team-a", "key 0");
	cr_assert(eq(i64, proto_next_str(&it, &k), 1));
	assert_str(k, "rec/issues/i1", "key 1");
	cr_assert(eq(i64, proto_next_str(&it, &k), 0));

	m.type = PROTO_UNSUBSCRIBE;
	m.u.subscribe.cursor = (struct proto_cursor){ 0, 0 };
	round_trip(&m, &g);
	cr_assert(eq(i64, g.type, PROTO_UNSUBSCRIBE));
	cr_assert(eq(i64, g.u.subscribe.keys.n, 2));

	m = (struct proto_msg){ .type = PROTO_SUBSCRIBED };
	m.u.subscribed = (struct proto_subscribed){ 16, PROTO_LIST(2, res) };
	round_trip(&m, &g);
	proto_iter_init(&it, &g.u.subscribed.results);
	cr_assert(eq(i64, proto_next_subres(&it, &r), 1));
	assert_str(r.key, "space/team-a", "key");
	cr_assert(eq(i64, r.code, 0));
	cr_assert_null(r.msg.p);
	cr_assert(eq(i64, proto_next_subres(&it, &r), 1));
	cr_assert(eq(i64, r.code, WEFT_EPERM));
	assert_str(r.msg, "not a member of 'team-z'", "msg");
}

Test(proto, push)
{
	struct proto_change ch[] = {
		{ { 500, 0 },
		  S("space/team-a"),
		  S("issues"),
		  S("i1"),
		  S("team-a"),
		  4,
		  PROTO_OP_SET,
		  false,
		  row("x", 1) },
		{ { 500, 1 },
		  S("space/team-a"),
		  S("issues"),
		  S("i2"),
		  S("team-a"),
		  2,
		  PROTO_OP_DELETE,
		  true,
		  { NULL, 0 } },
	};
	struct proto_msg m = { .type = PROTO_PUSH }, g;
	struct proto_iter it;
	struct proto_change c;

	m.u.push = (struct proto_push){ { 500, 1 },
					{ 420, 7 },
					PROTO_LIST(2, ch) };
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.push.cursor.lsn, 500));
	cr_assert(eq(i64, g.u.push.cursor.idx, 1));
	cr_assert(eq(i64, g.u.push.prev.lsn, 420));
	cr_assert(eq(i64, g.u.push.prev.idx, 7));
	proto_iter_init(&it, &g.u.push.changes);
	for (int i = 0; i < 2; i++) {
		cr_assert(eq(i64, proto_next_change(&it, &c), 1));
		cr_assert(eq(i64, c.cursor.lsn, ch[i].cursor.lsn));
		cr_assert(eq(i64, c.cursor.idx, ch[i].cursor.idx));
		assert_str(c.key, "space/team-a", "key");
		assert_str(c.table, "issues", "table");
		assert_str(c.id, i ? "i2" : "i1", "id");
		assert_str(c.space, "team-a", "space");
		cr_assert(eq(i64, c.version, ch[i].version));
		cr_assert(eq(i64, c.op, ch[i].op));
		cr_assert(eq(i64, c.deleted, ch[i].deleted));
		if (ch[i].data.p)
			assert_bytes(c.data, ch[i].data, "data");
		else
			cr_assert_null(c.data.p);
	}
	cr_assert(eq(i64, proto_next_change(&it, &c), 0));
}

Test(proto, catchup_unavailable)
{
	struct proto_str keys[] = { S("space/team-a") };
	struct proto_msg m = { .type = PROTO_CATCHUP }, g;
	struct proto_iter it;
	struct proto_str k;

	m.u.catchup = (struct proto_catchup){ PROTO_LIST(1, keys),
					      { 1000, 0 },
					      S("cursor older than window") };
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.catchup.oldest.lsn, 1000));
	assert_str(g.u.catchup.msg, "cursor older than window", "msg");
	proto_iter_init(&it, &g.u.catchup.keys);
	cr_assert(eq(i64, proto_next_str(&it, &k), 1));
	assert_str(k, "space/team-a", "key");
}

Test(proto, error)
{
	struct proto_msg m = { .type = PROTO_ERROR }, g;

	m.u.error =
		(struct proto_error){ 17, WEFT_EGAP,
				      S("mutation 9 skips ahead"), 5, true };
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.error.rid, 17));
	cr_assert(eq(i64, g.u.error.code, WEFT_EGAP));
	assert_str(g.u.error.msg, "mutation 9 skips ahead", "msg");
	cr_assert(eq(i64, g.u.error.expected, 5));
	cr_assert(g.u.error.fatal);
}

Test(proto, ping_pong)
{
	struct proto_msg m = { .type = PROTO_PING }, g;

	m.u.ping.nonce = 0xdeadbeefcafe;
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.ping.nonce, 0xdeadbeefcafe));
	m.type = PROTO_PONG;
	round_trip(&m, &g);
	cr_assert(eq(i64, g.type, PROTO_PONG));
	cr_assert(eq(i64, g.u.ping.nonce, 0xdeadbeefcafe));
}

Test(proto, backoff)
{
	struct proto_msg m = { .type = PROTO_BACKOFF }, g;

	m.u.backoff =
		(struct proto_backoff){ 18, 2500, true, S("node draining") };
	round_trip(&m, &g);
	cr_assert(eq(i64, g.u.backoff.rid, 18));
	cr_assert(eq(i64, g.u.backoff.retry_ms, 2500));
	cr_assert(g.u.backoff.reconnect);
	assert_str(g.u.backoff.msg, "node draining", "msg");
}

Test(proto, set_to_null_is_not_absent)
{
	static const uint8_t nil = 0xc0;
	struct proto_op op = { .kind = PROTO_OP_SET,
			       .table = S("t"),
			       .id = S("i"),
			       .field = S("f"),
			       .value = { &nil, 1 } };
	struct proto_msg m = { .type = PROTO_TXN }, g;
	struct proto_iter it;
	struct proto_op got;

	m.u.txn = (struct proto_txn){ 1, S("c"), 1, PROTO_LIST(1, &op) };
	round_trip(&m, &g);
	proto_iter_init(&it, &g.u.txn.ops);
	cr_assert(eq(i64, proto_next_op(&it, &got), 1));
	cr_assert(eq(i64, got.value.len, 1));
	cr_assert(eq(i64, got.value.p[0], 0xc0));
}

Test(proto, decoding_allocates_nothing)
{
	struct proto_op ops[64];
	struct proto_msg m = { .type = PROTO_TXN }, g;
	struct proto_err err;
	struct proto_iter it;
	struct proto_op op;
	unsigned long before;
	int n = 0;

	for (int i = 0; i < 64; i++)
		ops[i] = (struct proto_op){ .kind = PROTO_OP_CREATE,
					    .table = S("issues"),
					    .id = S("x"),
					    .space = S("s"),
					    .data = row("t", i) };
	m.u.txn = (struct proto_txn){ 1, S("c"), 1, PROTO_LIST(64, ops) };
	cr_assert(eq(i64, proto_encode(&out, &m, 0, NULL), 0));
	before = allocs;
	cr_assert(
		eq(i64, proto_decode(out.data + 4, out.len - 4, &g, &err), 0));
	proto_iter_init(&it, &g.u.txn.ops);
	while (proto_next_op(&it, &op) == 1)
		n++;
	cr_assert(eq(i64, allocs, before), "decoder allocated %lu times",
		  allocs - before);
	cr_assert(eq(i64, n, 64));
	/* and the counter works: encoding into a fresh buffer allocates */
	struct buf b2;
	buf_init(&b2, 0);
	before = allocs;
	proto_encode(&b2, &m, 0, NULL);
	cr_assert(lt(i64, before, allocs), "allocation counter is live");
	buf_fini(&b2);
}

/* ---- encoder refuses what the decoder would refuse ---- */

Test(proto, encoder_rejects_invalid_messages)
{
	struct proto_op bad = { .kind = PROTO_OP_SET,
				.table = S("t"),
				.id = S("i") }; /* set without field */
	struct proto_msg m = { .type = PROTO_TXN };

	m.u.txn = (struct proto_txn){ 1, S("c"), 1, PROTO_LIST(1, &bad) };
	cr_assert(eq(i64, proto_encode(&out, &m, 0, NULL), WEFT_EINVAL));
	cr_assert(eq(i64, out.len, 0), "output left as it was");
	cr_assert(eq(i64, out.err, 0));

	m.u.txn = (struct proto_txn){ 1, S("c"), 0, PROTO_LIST(0, NULL) };
	cr_assert(eq(i64, proto_encode(&out, &m, 0, NULL), WEFT_EINVAL),
		  "mid 0, no ops");

	m = (struct proto_msg){ .type = PROTO_ERROR };
	m.u.error = (struct proto_error){ .code = -1, .msg = S("") };
	cr_assert(eq(i64, proto_encode(&out, &m, 0, NULL), 0),
		  "empty text is fine");

	m = (struct proto_msg){ .type = PROTO_ACK };
	m.u.ack.mid = 1;
	struct proto_record r = { S("t"),  S("i"),
				  S("s"),  1,
				  false,   { (const uint8_t *)"\x01", 1 },
				  { 0, 0 } };
	m.u.ack.records = PROTO_LIST(1, &r);
	cr_assert(eq(i64, proto_encode(&out, &m, 0, NULL), WEFT_EINVAL),
		  "data must be a map");
}

Test(proto, encoder_respects_max_frame)
{
	struct proto_msg m = { .type = PROTO_ERROR };
	char text[600];

	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	m.u.error = (struct proto_error){ 1, WEFT_EIO, S(text), 0, false };
	buf_append(&out, "keep", 4);
	cr_assert(eq(i64, proto_encode(&out, &m, 100, NULL), WEFT_ETOOBIG));
	cr_assert(eq(i64, out.len, 4), "output left as it was");
	cr_assert(eq(i64, proto_encode(&out, &m, 1000, NULL), 0));
}

/* ---- malformed input: each class gets its own error ---- */

static int
decode_sb(struct proto_err *err)
{
	struct proto_msg g;

	return proto_decode((const uint8_t *)sb.data, sb.size, &g, err);
}

static void
pack_key(const char *k)
{
	msgpack_pack_str_with_body(&pk, k, strlen(k));
}

/* [3, {"client": "c", "mid": 1, "ops": [ {op: 5, table: T, id: "i"} ]}]
 * with the op's table packed by the caller-supplied function */
static void
txn_with_table(void (*table)(void))
{
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, PROTO_TXN);
	msgpack_pack_map(&pk, 3);
	pack_key("client");
	pack_key("c");
	pack_key("mid");
	msgpack_pack_uint8(&pk, 1);
	pack_key("ops");
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 3);
	pack_key("op");
	msgpack_pack_uint8(&pk, PROTO_OP_DELETE);
	pack_key("table");
	table();
	pack_key("id");
	pack_key("i");
}

static void
table_int(void)
{
	msgpack_pack_uint8(&pk, 7);
}

static void
table_ok(void)
{
	pack_key("issues");
}

static void
table_long(void)
{
	static char big[PROTO_MAX_NAME + 1];

	memset(big, 'a', sizeof(big));
	msgpack_pack_str_with_body(&pk, big, sizeof(big));
}

static void
table_bad_utf8(void)
{
	msgpack_pack_str_with_body(&pk, "\xff\xfe", 2);
}

static void
table_empty(void)
{
	msgpack_pack_str_with_body(&pk, "", 0);
}

Test(proto, wrong_type_names_the_field)
{
	struct proto_err err;

	txn_with_table(table_int);
	cr_assert(eq(i64, decode_sb(&err), WEFT_ETYPE));
	cr_assert_str_eq(err.path, "ops[0].table");
	cr_assert_str_eq(err.msg, "ops[0].table: expected str, got uint");
}

Test(proto, valid_base_decodes)
{
	struct proto_err err;

	txn_with_table(table_ok);
	cr_assert(eq(i64, decode_sb(&err), 0), "%s", err.msg);
}

Test(proto, oversized_string_is_etoobig)
{
	struct proto_err err;

	txn_with_table(table_long);
	cr_assert(eq(i64, decode_sb(&err), WEFT_ETOOBIG));
	cr_assert_str_eq(err.path, "ops[0].table");
}

Test(proto, bad_utf8_and_empty_names)
{
	struct proto_err err;

	txn_with_table(table_bad_utf8);
	cr_assert(eq(i64, decode_sb(&err), WEFT_EENCODING));
	msgpack_sbuffer_clear(&sb);
	txn_with_table(table_empty);
	cr_assert(eq(i64, decode_sb(&err), WEFT_ERANGE));
	cr_assert_str_eq(err.path, "ops[0].table");
}

Test(proto, every_truncation_is_an_error_never_a_crash)
{
	struct proto_err err;
	struct proto_msg g;

	txn_with_table(table_ok);
	for (size_t cut = 0; cut < sb.size; cut++) {
		int rc = proto_decode((const uint8_t *)sb.data, cut, &g, &err);

		cr_assert(rc == WEFT_ETRUNCATED || rc == WEFT_ECOUNT,
			  "cut at %zu: %s (%s)", cut, weft_errname(rc),
			  err.msg);
	}
}

Test(proto, truncated_inside_a_string_is_etruncated)
{
	struct proto_err err;
	struct proto_msg g;

	txn_with_table(table_ok);
	/* cut in the middle of the final "i" value's body is impossible
	 * (1 byte), so cut inside "issues" */
	const char *at = memmem(sb.data, sb.size, "issues", 6);
	size_t cut = (size_t)(at - sb.data) + 3;
	cr_assert(eq(i64, proto_decode((const uint8_t *)sb.data, cut, &g, &err),
		     WEFT_ETRUNCATED));
	cr_assert_str_eq(err.path, "ops[0].table");
}

Test(proto, trailing_bytes_are_rejected)
{
	struct proto_err err;

	txn_with_table(table_ok);
	msgpack_pack_nil(&pk);
	cr_assert(eq(i64, decode_sb(&err), WEFT_ETRAILING));
	cr_assert_not_null(strstr(err.msg, "1 bytes after"), "%s", err.msg);
}

Test(proto, huge_claimed_counts_are_ecount)
{
	/* [13, {"changes": array32 claiming 2^32-1 elements}] */
	static const uint8_t in[] = { 0x92, 0x0d, 0x81, 0xa7, 'c', 'h',
				      'a',  'n',  'g',	'e',  's', 0xdd,
				      0xff, 0xff, 0xff, 0xff, 0xc0 };
	/* [1, map32 claiming 2^31 pairs] */
	static const uint8_t in2[] = { 0x92, 0x01, 0xdf, 0x80, 0, 0, 0, 0xc0 };
	struct proto_err err;
	struct proto_msg g;
	unsigned long before = allocs;

	cr_assert(eq(i64, proto_decode(in, sizeof(in), &g, &err), WEFT_ECOUNT));
	cr_assert_str_eq(err.path, "changes");
	cr_assert(
		eq(i64, proto_decode(in2, sizeof(in2), &g, &err), WEFT_ECOUNT));
	cr_assert(eq(i64, allocs, before), "nothing allocated for the claims");
}

Test(proto, list_over_protocol_limit_is_etoobig)
{
	struct proto_err err;

	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, PROTO_SUBSCRIBE);
	msgpack_pack_map(&pk, 1);
	pack_key("keys");
	msgpack_pack_array(&pk, PROTO_MAX_LIST + 1);
	for (int i = 0; i < PROTO_MAX_LIST + 1; i++)
		pack_key("k");
	cr_assert(eq(i64, decode_sb(&err), WEFT_ETOOBIG));
	cr_assert_str_eq(err.path, "keys");
}

Test(proto, deep_nesting_is_edepth)
{
	struct proto_err err;

	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, PROTO_TXN);
	msgpack_pack_map(&pk, 3);
	pack_key("client");
	pack_key("c");
	pack_key("mid");
	msgpack_pack_uint8(&pk, 1);
	pack_key("ops");
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 5);
	pack_key("op");
	msgpack_pack_uint8(&pk, PROTO_OP_SET);
	pack_key("table");
	pack_key("t");
	pack_key("id");
	pack_key("i");
	pack_key("field");
	pack_key("f");
	pack_key("value");
	for (int i = 0; i < PROTO_MAX_DEPTH + 1; i++)
		msgpack_pack_array(&pk, 1);
	msgpack_pack_nil(&pk);
	cr_assert(eq(i64, decode_sb(&err), WEFT_EDEPTH));
	cr_assert_str_eq(err.path, "ops[0].value");
}

Test(proto, deep_nesting_in_unknown_field_is_edepth)
{
	struct proto_err err;

	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, PROTO_PING);
	msgpack_pack_map(&pk, 1);
	pack_key("future");
	for (int i = 0; i < 10000; i++)
		msgpack_pack_array(&pk, 1);
	msgpack_pack_nil(&pk);
	cr_assert(eq(i64, decode_sb(&err), WEFT_EDEPTH));
	cr_assert_str_eq(err.path, "future");
}

Test(proto, unknown_fields_are_skipped)
{
	struct proto_err err;
	struct proto_msg g;

	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, PROTO_PING);
	msgpack_pack_map(&pk, 2);
	pack_key("future");
	msgpack_pack_map(&pk, 1);
	pack_key("x");
	msgpack_pack_bin_with_body(&pk, "zz", 2);
	pack_key("nonce");
	msgpack_pack_uint8(&pk, 9);
	cr_assert(eq(i64,
		     proto_decode((const uint8_t *)sb.data, sb.size, &g, &err),
		     0),
		  "%s", err.msg);
	cr_assert(eq(i64, g.u.ping.nonce, 9));
}

Test(proto, missing_required_field_is_emissing)
{
	struct proto_err err;

	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, PROTO_HELLO);
	msgpack_pack_map(&pk, 2);
	pack_key("proto");
	msgpack_pack_uint8(&pk, 1);
	pack_key("client");
	pack_key("c");
	cr_assert(eq(i64, decode_sb(&err), WEFT_EMISSING));
	cr_assert_str_eq(err.path, "token");
}

Test(proto, op_specific_required_field_is_emissing)
{
	struct proto_err err;

	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, PROTO_TXN);
	msgpack_pack_map(&pk, 3);
	pack_key("client");
	pack_key("c");
	pack_key("mid");
	msgpack_pack_uint8(&pk, 1);
	pack_key("ops");
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 3);
	pack_key("op");
	msgpack_pack_uint8(&pk, PROTO_OP_CREATE);
	pack_key("table");
	pack_key("t");
	pack_key("id");
	pack_key("i");
	cr_assert(eq(i64, decode_sb(&err), WEFT_EMISSING));
	cr_assert_str_eq(err.path, "ops[0].space");
}

Test(proto, duplicate_field_is_edupfield)
{
	struct proto_err err;

	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, PROTO_PING);
	msgpack_pack_map(&pk, 2);
	pack_key("nonce");
	msgpack_pack_uint8(&pk, 1);
	pack_key("nonce");
	msgpack_pack_uint8(&pk, 2);
	cr_assert(eq(i64, decode_sb(&err), WEFT_EDUPFIELD));
	cr_assert_str_eq(err.path, "nonce");
}

Test(proto, unknown_message_type_and_op_kind_are_eunknown)
{
	struct proto_err err;

	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, 99);
	msgpack_pack_map(&pk, 0);
	cr_assert(eq(i64, decode_sb(&err), WEFT_EUNKNOWN));
	cr_assert_str_eq(err.path, "type");

	msgpack_sbuffer_clear(&sb);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, PROTO_TXN);
	msgpack_pack_map(&pk, 3);
	pack_key("client");
	pack_key("c");
	pack_key("mid");
	msgpack_pack_uint8(&pk, 1);
	pack_key("ops");
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 3);
	pack_key("op");
	msgpack_pack_uint8(&pk, 42);
	pack_key("table");
	pack_key("t");
	pack_key("id");
	pack_key("i");
	cr_assert(eq(i64, decode_sb(&err), WEFT_EUNKNOWN));
	cr_assert_str_eq(err.path, "ops[0].op");
}

Test(proto, out_of_range_numbers_are_erange)
{
	struct proto_err err;

	/* version 0 in a record: versions start at 1 */
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, PROTO_ACK);
	msgpack_pack_map(&pk, 2);
	pack_key("mid");
	msgpack_pack_uint8(&pk, 1);
	pack_key("records");
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 4);
	pack_key("table");
	pack_key("t");
	pack_key("id");
	pack_key("i");
	pack_key("space");
	pack_key("s");
	pack_key("ver");
	msgpack_pack_uint8(&pk, 0);
	cr_assert(eq(i64, decode_sb(&err), WEFT_ERANGE));
	cr_assert_str_eq(err.path, "records[0].ver");

	/* a u32 field given 2^32 */
	msgpack_sbuffer_clear(&sb);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, PROTO_BACKOFF);
	msgpack_pack_map(&pk, 1);
	pack_key("retry_ms");
	msgpack_pack_uint64(&pk, 1ull << 32);
	cr_assert(eq(i64, decode_sb(&err), WEFT_ERANGE));
	cr_assert_str_eq(err.path, "retry_ms");
}

Test(proto, frame_must_be_a_two_element_array)
{
	struct proto_err err;

	msgpack_pack_map(&pk, 0);
	cr_assert(eq(i64, decode_sb(&err), WEFT_ETYPE));
	cr_assert_str_eq(err.msg,
			 "frame: expected array [type, fields], got map");
	msgpack_sbuffer_clear(&sb);
	msgpack_pack_array(&pk, 3);
	msgpack_pack_uint8(&pk, 16);
	msgpack_pack_map(&pk, 0);
	msgpack_pack_nil(&pk);
	cr_assert(eq(i64, decode_sb(&err), WEFT_ETYPE));
}

Test(proto, incr_needs_a_number)
{
	struct proto_op op = { .kind = PROTO_OP_INCR,
			       .table = S("t"),
			       .id = S("i"),
			       .field = S("f"),
			       .value = row("x", 1) };
	struct proto_msg m = { .type = PROTO_TXN };

	m.u.txn = (struct proto_txn){ 1, S("c"), 1, PROTO_LIST(1, &op) };
	cr_assert(eq(i64, proto_encode(&out, &m, 0, NULL), WEFT_EINVAL));
}

Test(proto, names)
{
	cr_assert_str_eq(proto_type_name(PROTO_PUSH), "push");
	cr_assert_str_eq(proto_type_name(0), "?");
	cr_assert_str_eq(proto_op_name(PROTO_OP_LIST_REMOVE), "list_remove");
	cr_assert_str_eq(proto_op_name(99), "?");
}

/* ---- stricter rules: what a field means, not just its type ---- */

static int
encode_rc(const struct proto_msg *m)
{
	buf_reset(&out);
	return proto_encode(&out, m, 0, NULL);
}

/* encode through a permissive path is impossible, so hand-build bodies */
static void
op_body(unsigned kind, const char *extra_key, void (*extra_val)(void))
{
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, PROTO_TXN);
	msgpack_pack_map(&pk, 3);
	pack_key("client");
	pack_key("c");
	pack_key("mid");
	msgpack_pack_uint8(&pk, 1);
	pack_key("ops");
	msgpack_pack_array(&pk, 1);
	msgpack_pack_map(&pk, 3 + (extra_key != NULL));
	pack_key("op");
	msgpack_pack_uint8(&pk, (uint8_t)kind);
	pack_key("table");
	pack_key("t");
	pack_key("id");
	pack_key("i");
	if (extra_key) {
		pack_key(extra_key);
		extra_val();
	}
}

static void
val_map(void)
{
	msgpack_pack_map(&pk, 0);
}

static void
val_nested_bin(void)
{
	msgpack_pack_map(&pk, 1);
	pack_key("a");
	msgpack_pack_array(&pk, 1);
	msgpack_pack_bin_with_body(&pk, "x", 1);
}

static void
val_c1_name(void)
{
	msgpack_pack_str_with_body(&pk,
				   "a\xc2\x85"
				   "b",
				   4);
}

Test(proto, fields_that_do_not_apply_to_the_op_are_rejected)
{
	struct proto_err err;

	op_body(PROTO_OP_DELETE, "data", val_map);
	cr_assert(eq(i64, decode_sb(&err), WEFT_EINVAL));
	cr_assert_str_eq(err.path, "ops[0].data");
	cr_assert_not_null(strstr(err.msg, "does not apply to op 'delete'"),
			   "%s", err.msg);
}

Test(proto, nested_bin_in_row_data_is_named_precisely)
{
	struct proto_err err;

	op_body(PROTO_OP_PUT, "data", val_nested_bin);
	cr_assert(eq(i64, decode_sb(&err), WEFT_ETYPE));
	cr_assert_str_eq(err.path, "ops[0].data");
	cr_assert_not_null(strstr(err.msg, "a record cannot store"), "%s",
			   err.msg);
	cr_assert_not_null(strstr(err.msg, "near bin"), "%s", err.msg);
}

Test(proto, c1_control_characters_are_not_names)
{
	struct proto_err err;

	op_body(PROTO_OP_UNSET, "field", val_c1_name);
	cr_assert(eq(i64, decode_sb(&err), WEFT_EENCODING));
	cr_assert_str_eq(err.path, "ops[0].field");
}

Test(proto, encoder_refuses_absent_required_strings_and_zero_codes)
{
	struct proto_msg m = { .type = PROTO_REJECT };

	m.u.reject = (struct proto_reject){ .mid = 1, .code = WEFT_EPERM };
	cr_assert(eq(i64, encode_rc(&m), WEFT_EINVAL), "msg is required");
	m.u.reject.msg = S("no");
	m.u.reject.code = 0;
	cr_assert(eq(i64, encode_rc(&m), WEFT_EINVAL), "code 0 is not a "
						       "rejection");
	m.u.reject.code = WEFT_EPERM;
	cr_assert(eq(i64, encode_rc(&m), 0));
}

Test(proto, decoder_refuses_non_error_codes)
{
	struct proto_err err;

	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint8(&pk, PROTO_ERROR);
	msgpack_pack_map(&pk, 2);
	pack_key("code");
	msgpack_pack_int(&pk, 5);
	pack_key("msg");
	pack_key("x");
	cr_assert(eq(i64, decode_sb(&err), WEFT_ERANGE));
	cr_assert_str_eq(err.path, "code");
}

Test(proto, push_cursor_must_not_be_zero)
{
	struct proto_change ch = { { 0, 0 },	    { NULL, 0 }, S("t"),
				   S("i"),	    S("s"),	 1,
				   PROTO_OP_DELETE, true,	 { NULL, 0 } };
	struct proto_msg m = { .type = PROTO_PUSH };

	m.u.push =
		(struct proto_push){ { 5, 0 }, { 0, 0 }, PROTO_LIST(1, &ch) };
	cr_assert(eq(i64, encode_rc(&m), WEFT_EINVAL), "zero change cursor");
	ch.cursor = (struct proto_cursor){ 5, 0 };
	cr_assert(eq(i64, encode_rc(&m), 0));
	m.u.push.cursor = (struct proto_cursor){ 0, 0 };
	cr_assert(eq(i64, encode_rc(&m), WEFT_EINVAL), "zero push cursor");
}

Test(proto, tombstones_carry_no_data)
{
	struct proto_record r = { S("t"), S("i"),      S("s"),	   2,
				  true,	  row("x", 1), { NULL, 0 } };
	struct proto_msg m = { .type = PROTO_ACK };

	m.u.ack = (struct proto_ack){ 1, 1, false, PROTO_LIST(1, &r) };
	cr_assert(eq(i64, encode_rc(&m), WEFT_EINVAL));
	r.data = (struct proto_bytes){ NULL, 0 };
	cr_assert(eq(i64, encode_rc(&m), 0));
}

Test(proto, record_subscription_keys_fit_two_max_names)
{
	static char key[PROTO_MAX_KEY + 2];
	struct proto_str keys[1];
	struct proto_msg m = { .type = PROTO_SUBSCRIBE }, g;

	memset(key, 'k', sizeof(key) - 1);
	key[PROTO_MAX_KEY] = '\0'; /* exactly PROTO_MAX_KEY bytes */
	cr_assert_gt(PROTO_MAX_KEY, 4 + 2 * PROTO_MAX_NAME + 1);
	keys[0] = S(key);
	m.u.subscribe =
		(struct proto_subscribe){ 1, PROTO_LIST(1, keys), { 0, 0 } };
	round_trip(&m, &g);
	key[PROTO_MAX_KEY] = 'k'; /* one byte over */
	keys[0] = S(key);
	cr_assert(eq(i64, encode_rc(&m), WEFT_EINVAL));
}

Test(proto, welcome_max_frame_is_bounded_by_the_hard_cap)
{
	struct proto_msg m = { .type = PROTO_WELCOME };

	m.u.welcome = (struct proto_welcome){
		1, 1, S("u"), { NULL, 0 }, 0, 1000, FRAME_MAX_HARD + 1, 0
	};
	cr_assert(eq(i64, encode_rc(&m), WEFT_EINVAL));
	m.u.welcome.max_frame = FRAME_MAX_HARD;
	cr_assert(eq(i64, encode_rc(&m), 0));
}

Test(proto, decoded_list_in_a_field_of_another_type_is_refused)
{
	struct proto_keyref ref = { S("issues"), S("i1") };
	struct proto_msg m = { .type = PROTO_FETCH }, g, m2;
	struct proto_err err;
	struct buf o2;

	m.u.fetch = (struct proto_fetch){ 1, PROTO_LIST(1, &ref) };
	round_trip(&m, &g); /* g borrows from out: encode elsewhere */
	buf_init(&o2, 0);
	/* records and keyrefs look alike on the wire; the tag tells */
	m2 = (struct proto_msg){ .type = PROTO_RECORDS };
	m2.u.records.missing = g.u.fetch.keys;
	cr_assert(eq(i64, proto_encode(&o2, &m2, 0, &err), 0),
		  "same element type: fine (%s)", err.msg);
	m2.u.records.missing = (struct proto_list){ 0 };
	m2.u.records.records = g.u.fetch.keys;
	cr_assert(eq(i64, proto_encode(&o2, &m2, 0, &err), WEFT_EINVAL));
	cr_assert_str_eq(err.path, "records");
	/* a count that the raw bytes do not hold */
	m2.u.records.records = (struct proto_list){ 0 };
	m2.u.records.missing = g.u.fetch.keys;
	m2.u.records.missing.n = 3;
	cr_assert(eq(i64, proto_encode(&o2, &m2, 0, &err), WEFT_EINVAL));
	cr_assert_not_null(strstr(err.msg, "does not hold 3"), "%s", err.msg);
	buf_fini(&o2);
}

/* a PUSH made of changes encoded once (proto_encode_change) is the same
 * frame as one encoded from the structs */
Test(proto, push_of_changes_encoded_once_is_byte_identical)
{
	static const uint8_t row[] = { 0x81, 0xa1, 't', 0xa2, 'h', 'i' };
	struct proto_change ch[] = {
		{ { 500, 0 },
		  S("space/a"),
		  S("issues"),
		  S("i1"),
		  S("a"),
		  3,
		  PROTO_OP_SET,
		  false,
		  { row, sizeof(row) } },
		{ { 500, 1 },
		  S("rec/issues/i2"),
		  S("issues"),
		  S("i2"),
		  S("a"),
		  2,
		  PROTO_OP_DELETE,
		  true,
		  { NULL, 0 } },
	};
	struct proto_change bad = ch[1];
	struct proto_msg m = { .type = PROTO_PUSH };
	struct proto_err err;
	struct buf enc, a, b;

	buf_init(&enc, 0);
	buf_init(&a, 0);
	buf_init(&b, 0);
	for (int i = 0; i < 2; i++)
		cr_assert(eq(i64, proto_encode_change(&enc, &ch[i], &err), 0),
			  "%s", err.msg);
	/* a delete that is not a tombstone: refused, enc untouched */
	bad.deleted = false;
	cr_assert(eq(i64, proto_encode_change(&enc, &bad, &err), WEFT_EINVAL));
	cr_assert_not_null(strstr(err.msg, "tombstone"), "%s", err.msg);
	m.u.push = (struct proto_push){ { 500, 1 },
					{ 420, 7 },
					PROTO_LIST(2, ch) };
	cr_assert(eq(i64, proto_encode(&a, &m, 0, NULL), 0));
	m.u.push.changes = proto_list_changes(2, enc.data, enc.len);
	cr_assert(eq(i64, proto_encode(&b, &m, 0, &err), 0), "%s", err.msg);
	cr_assert(eq(sz, a.len, b.len));
	cr_assert(memcmp(a.data, b.data, a.len) == 0, "same bytes");
	/* encoded changes belong in a PUSH only */
	m = (struct proto_msg){ .type = PROTO_PAGE };
	m.u.page.rid = 1;
	m.u.page.space = S("a");
	m.u.page.records = proto_list_changes(2, enc.data, enc.len);
	cr_assert(eq(i64, proto_encode(&b, &m, 0, &err), WEFT_EINVAL));
	cr_assert_str_eq(err.path, "records");
	buf_fini(&enc);
	buf_fini(&a);
	buf_fini(&b);
}

Test(proto, null_string_with_a_length_is_einval_not_a_crash)
{
	struct proto_str keys[] = { { NULL, 5 } };
	struct proto_msg m = { .type = PROTO_SUBSCRIBE };
	struct proto_err err;

	m.u.subscribe.keys = PROTO_LIST(1, keys);
	cr_assert(eq(i64, proto_encode(&out, &m, 0, &err), WEFT_EINVAL));
	cr_assert_str_eq(err.path, "keys[0]");
}

Test(proto, full_output_buffer_is_eagain_and_oversize_is_etoobig)
{
	struct proto_msg m = { .type = PROTO_ERROR };
	struct proto_err err;
	struct buf small;
	char text[200];

	memset(text, 'x', sizeof(text) - 1);
	text[sizeof(text) - 1] = '\0';
	m.u.error = (struct proto_error){ 1, WEFT_EIO, S(text), 0, false };
	buf_init(&small, 64);
	cr_assert(eq(i64, proto_encode(&small, &m, 0, &err), WEFT_EAGAIN),
		  "a full out-queue is retryable");
	cr_assert(eq(sz, small.len, 0));
	cr_assert(eq(i64, small.err, 0), "buffer usable again");
	cr_assert(eq(i64, proto_encode(&out, &m, 100, &err), WEFT_ETOOBIG),
		  "a message over the frame cap is not");
	cr_assert_not_null(strstr(err.msg, "frame cap"), "%s", err.msg);
	buf_fini(&small);
}

Test(proto, encoder_error_detail_names_the_field)
{
	struct proto_op bad = { .kind = PROTO_OP_SET,
				.table = S("t"),
				.id = S("i"),
				.field = S("f") };
	struct proto_msg m = { .type = PROTO_TXN };
	struct proto_err err;

	m.u.txn = (struct proto_txn){ 1, S("c"), 1, PROTO_LIST(1, &bad) };
	cr_assert(eq(i64, proto_encode(&out, &m, 0, &err), WEFT_EINVAL));
	cr_assert_str_eq(err.path, "ops[0].value");
	cr_assert(eq(i64, err.code, WEFT_EINVAL));
}

Test(proto, change_op_and_tombstone_flag_agree)
{
	struct proto_change ch = { .cursor = { 9, 0 },
				   .table = S("t"),
				   .id = S("i"),
				   .space = S("s"),
				   .version = 2,
				   .op = PROTO_OP_DELETE,
				   .deleted = false };
	struct proto_msg m = { .type = PROTO_PUSH };
	struct proto_err err;

	m.u.push =
		(struct proto_push){ { 9, 0 }, { 0, 0 }, PROTO_LIST(1, &ch) };
	cr_assert(eq(i64, proto_encode(&out, &m, 0, &err), WEFT_EINVAL));
	cr_assert_str_eq(err.path, "changes[0].deleted");
	ch.deleted = true;
	cr_assert(eq(i64, proto_encode(&out, &m, 0, &err), 0), "%s", err.msg);
	ch.op = PROTO_OP_CREATE;
	cr_assert(eq(i64, proto_encode(&out, &m, 0, &err), WEFT_EINVAL));
}

/* a record's fields as JSON text ("dj"): one form or the other, an
 * object, never on a tombstone */
Test(proto, records_may_carry_their_fields_as_json_text)
{
	struct proto_record r = { S("t"),
				  S("i"),
				  S("s"),
				  2,
				  false,
				  { NULL, 0 },
				  S(" {\"title\": \"x\", \"n\": 1.5} ") };
	struct proto_msg m = { .type = PROTO_PAGE }, g;
	struct proto_iter it;
	struct proto_record got;

	m.u.page = (struct proto_page){ .rid = 3,
					.space = S("s"),
					.records = PROTO_LIST(1, &r) };
	round_trip(&m, &g);
	proto_iter_init(&it, &g.u.page.records);
	cr_assert(eq(i64, proto_next_record(&it, &got), 1));
	cr_assert(eq(u32, got.json.len, r.json.len));
	cr_assert(eq(i64, memcmp(got.json.p, r.json.p, r.json.len), 0));
	cr_assert_null(got.data.p);
	r.data = row("x", 1); /* both forms */
	cr_assert(eq(i64, encode_rc(&m), WEFT_EINVAL));
	r.data = (struct proto_bytes){ NULL, 0 };
	r.deleted = true; /* a tombstone */
	cr_assert(eq(i64, encode_rc(&m), WEFT_EINVAL));
	r.deleted = false;
	/* not an object (the encoder calls every such mistake EINVAL) */
	r.json = S("[1, 2]");
	cr_assert(eq(i64, encode_rc(&m), WEFT_EINVAL));
	r.json = S("{");
	cr_assert(eq(i64, encode_rc(&m), WEFT_EINVAL));
}
