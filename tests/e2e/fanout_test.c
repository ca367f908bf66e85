/*
 * fanout_test.c - the realtime path end to end, every part a real
 * process: a private Postgres and Redis, weft-write, weft-relay and two
 * weft-fanout nodes.  Clients speak the wire protocol (tests/lib/wclient).
 *
 * It proves: a write reaches subscribers on both nodes, in order with an
 * unbroken prev-cursor chain; an unauthorised subscribe gets EPERM and no
 * data; removing a member ends their pushes at once; a client that moves
 * to the other node with its cursor misses nothing; a cursor older than
 * the stream window gets CATCHUP; a client that never reads is dropped to
 * catch-up while another session keeps its latency; hostile input gets
 * errors or a disconnect and the node stays up; SIGTERM sends
 * "reconnect elsewhere".
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <msgpack.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <weft/error.h>

#include "common/clock.h"
#include "services/shared/auth.h"
#include "services/shared/redis.h"
#include "tests/lib/proc.h"
#include "tests/lib/wclient.h"

#define S(x)	proto_str_c(x)
#define WAIT_MS 10000

static char dir[64], pg_url[256], redis_url[128];
static struct proc wr, relay, fa, fb;

/* a fanout node of this suite's stack */
static void
start_fanout(struct proc *p, const char *node, const char *extra)
{
	proc_start_fanout(p, node, pg_url, redis_url, extra);
}

static void
setup(void)
{
	proc_stack_up(dir, pg_url);
	proc_stack_env(dir, "WEFT_REDIS_URL", redis_url, sizeof(redis_url));
	proc_start_relay(&relay, pg_url, redis_url, NULL);
	proc_start_write_pg(&wr, pg_url, NULL);
	start_fanout(&fa, "fanout-a", NULL);
	start_fanout(&fb, "fanout-b", NULL);
}

static void
teardown(void)
{
	proc_kill9(&fa);
	proc_kill9(&fb);
	proc_kill9(&relay);
	proc_kill9(&wr);
	proc_stack_destroy(dir);
}

TestSuite(fanout, .init = setup, .fini = teardown, .timeout = 120);

/* ---- clients ---- */

static void
hello_as(struct wclient *c, const char *url, const char *user,
	 const char *client)
{
	struct proto_msg r;
	char *tok =
		auth_mint_hs256(PROC_SECRET, user, (int64_t)time(NULL), 3600);

	cr_assert(eq(i64, wclient_dial(c, url), 0), "dial %s", url);
	cr_assert(eq(i64, wclient_hello(c, tok, client, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_WELCOME), "got %s",
		  proto_type_name(r.type));
	free(tok);
}

static void
hello(struct wclient *c, const char *url, const char *user)
{
	hello_as(c, url, user, user);
}

/* the next message that is not a PING (answered), within ms */
static int
next_msg(struct wclient *c, struct proto_msg *r, int ms)
{
	uint64_t until = clock_now_ms() + (uint64_t)ms;

	for (;;) {
		uint64_t now = clock_now_ms();
		int rc;

		if (now >= until)
			return WEFT_ETIMEDOUT;
		rc = wclient_recv(c, r, (int)(until - now));
		if (rc || r->type != PROTO_PING)
			return rc;
		r->type = PROTO_PONG;
		wclient_send(c, r);
	}
}

/* send SUBSCRIBE for one key (rid 7) */
static void
subscribe_send(struct wclient *c, const char *key, struct proto_cursor from)
{
	struct proto_str k = S(key);
	struct proto_msg m = { .type = PROTO_SUBSCRIBE };

	m.u.subscribe = (struct proto_subscribe){ 7, PROTO_LIST(1, &k), from };
	cr_assert(eq(i64, wclient_send(c, &m), 0));
}

/* the code of the SUBSCRIBED answer (skipping anything before it) */
static int
subscribed(struct wclient *c, const char *key)
{
	struct proto_msg r;
	struct proto_iter it;
	struct proto_subres res;

	for (;;) {
		cr_assert(eq(i64, next_msg(c, &r, WAIT_MS), 0),
			  "SUBSCRIBED for %s", key);
		if (r.type == PROTO_SUBSCRIBED && r.u.subscribed.rid == 7)
			break;
	}
	proto_iter_init(&it, &r.u.subscribed.results);
	cr_assert(eq(i64, proto_next_subres(&it, &res), 1));
	return res.code;
}

/* subscribe to one key; returns the result code */
static int
subscribe(struct wclient *c, const char *key, struct proto_cursor from)
{
	subscribe_send(c, key, from);
	return subscribed(c, key);
}

static uint64_t next_mid[64];

static struct proto_bytes
map_str(const char *k, const char *v)
{
	static uint8_t store[8][128];
	static int n;
	uint8_t *d = store[n++ % 8];
	msgpack_sbuffer sb;
	msgpack_packer pk;
	struct proto_bytes b;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 2);
	msgpack_pack_str_with_body(&pk, "user", 4);
	msgpack_pack_str_with_body(&pk, k, strlen(k));
	msgpack_pack_str_with_body(&pk, "role", 4);
	msgpack_pack_str_with_body(&pk, v, strlen(v));
	memcpy(d, sb.data, sb.size);
	b = (struct proto_bytes){ d, (uint32_t)sb.size };
	msgpack_sbuffer_destroy(&sb);
	return b;
}

/* one transaction through weft-write as user (client id = user); the
 * ack's type */
static int
write_op(const char *user, int slot, struct proto_op op)
{
	struct wclient c;
	struct proto_msg m = { .type = PROTO_TXN }, r;
	int type;

	hello(&c, wr.url, user);
	m.u.txn = (struct proto_txn){ 1, S(user), ++next_mid[slot],
				      PROTO_LIST(1, &op) };
	cr_assert(eq(i64, wclient_send(&c, &m), 0));
	cr_assert(eq(i64, wclient_recv(&c, &r, WAIT_MS), 0));
	type = (int)r.type;
	wclient_close(&c);
	return type;
}

static struct proto_op
create_op(const char *table, const char *id, const char *space)
{
	static const uint8_t empty = 0x80;

	return (struct proto_op){ .kind = PROTO_OP_CREATE,
				  .table = S(table),
				  .id = S(id),
				  .space = S(space),
				  .data = { &empty, 1 } };
}

static struct proto_op
set_op(const char *id, int v)
{
	static uint8_t vals[16][9];
	static int n;
	uint8_t *d = vals[n++ % 16];

	d[0] = 0xd2; /* int32 */
	d[1] = (uint8_t)(v >> 24);
	d[2] = (uint8_t)(v >> 16);
	d[3] = (uint8_t)(v >> 8);
	d[4] = (uint8_t)v;
	return (struct proto_op){ .kind = PROTO_OP_SET,
				  .table = S("issues"),
				  .id = S(id),
				  .field = S("n"),
				  .value = { d, 5 } };
}

/* a create with a 120 KB row: a few fill a socket's buffers */
static struct proto_op
big_create_op(const char *id, const char *space)
{
	static uint8_t *d;
	static uint32_t n;

	if (!d) {
		msgpack_sbuffer sb;
		msgpack_packer pk;
		static char blob[120000];

		memset(blob, 'x', sizeof(blob));
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_pack_map(&pk, 1);
		msgpack_pack_str_with_body(&pk, "blob", 4);
		msgpack_pack_str_with_body(&pk, blob, sizeof(blob));
		d = malloc(sb.size);
		memcpy(d, sb.data, sb.size);
		n = (uint32_t)sb.size;
		msgpack_sbuffer_destroy(&sb);
	}
	struct proto_op op = create_op("issues", id, space);
	op.data = (struct proto_bytes){ d, n };
	return op;
}

/* the changes of the next PUSH: versions of ids, its cursors */
#define GOT_MAX 1024 /* more than a PUSH carries (256 in weft-fanout) */

struct got {
	int n;
	char ids[GOT_MAX][64];
	uint64_t ver[GOT_MAX];
	bool has_data[GOT_MAX];
	uint8_t data[GOT_MAX][32]; /* the first bytes of each one's data */
	uint32_t data_len[GOT_MAX];
	struct proto_cursor cursor, prev;
};

static int
next_push(struct wclient *c, struct got *g, int ms)
{
	struct proto_msg r;
	struct proto_iter it;
	struct proto_change ch;
	int rc;

	do {
		rc = next_msg(c, &r, ms);
		if (rc)
			return rc;
	} while (r.type != PROTO_PUSH && r.type != PROTO_CATCHUP);
	if (r.type == PROTO_CATCHUP)
		return WEFT_ECATCHUP;
	g->n = 0;
	g->cursor = r.u.push.cursor;
	g->prev = r.u.push.prev;
	proto_iter_init(&it, &r.u.push.changes);
	while (proto_next_change(&it, &ch) == 1) {
		cr_assert(lt(i64, g->n, GOT_MAX), "a PUSH larger than %d",
			  GOT_MAX);
		snprintf(g->ids[g->n], 64, "%.*s", (int)ch.id.len, ch.id.p);
		g->ver[g->n] = ch.version;
		g->has_data[g->n] = ch.data.p != NULL;
		g->data_len[g->n] = ch.data.p ? ch.data.len : 0;
		memcpy(g->data[g->n],
		       ch.data.p ? ch.data.p : (const uint8_t *)"",
		       ch.data.p && ch.data.len < 32 ? ch.data.len : 0);
		g->n++;
	}
	return 0;
}

/* wait for a push carrying id; false on timeout */
static bool
wait_change(struct wclient *c, const char *id, struct got *g, int ms)
{
	uint64_t until = clock_now_ms() + (uint64_t)ms;

	while (clock_now_ms() < until) {
		if (next_push(c, g, (int)(until - clock_now_ms())) != 0)
			return false;
		for (int i = 0; i < g->n; i++)
			if (strcmp(g->ids[i], id) == 0)
				return true;
	}
	return false;
}

/* resident set of a process, KiB (VmRSS) */
static long
rss_kb(pid_t pid)
{
	char path[64], line[256];
	long kb = -1;
	FILE *f;

	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %ld kB", &kb) == 1)
			break;
	fclose(f);
	return kb;
}

/* a team: alice's space with bob as a writer */
static void
team(const char *sp)
{
	char mid[128];
	struct proto_op add;

	cr_assert(eq(i64, write_op("alice", 0, create_op("spaces", sp, sp)),
		     PROTO_ACK));
	snprintf(mid, sizeof(mid), "%s:bob", sp);
	add = create_op("members", mid, sp);
	add.data = map_str("bob", "writer");
	cr_assert(eq(i64, write_op("alice", 0, add), PROTO_ACK));
}

Test(fanout, a_write_reaches_subscribers_on_both_nodes_in_order)
{
	struct wclient a, b;
	struct got g;
	struct proto_cursor last = { 0, 0 };

	team("t1");
	hello(&a, fa.url, "alice");
	hello(&b, fb.url, "bob");
	cr_assert(eq(i64, subscribe(&a, "space/t1", last), 0));
	cr_assert(eq(i64, subscribe(&b, "space/t1", last), 0));
	cr_assert(eq(i64, write_op("bob", 1, create_op("issues", "i1", "t1")),
		     PROTO_ACK));
	for (int v = 1; v <= 5; v++)
		cr_assert(eq(i64, write_op("alice", 0, set_op("i1", v)),
			     PROTO_ACK));
	/* both see the last version; each push chains to the one before */
	for (int k = 0; k < 2; k++) {
		struct wclient *c = k ? &b : &a;
		uint64_t seen = 0;

		last = (struct proto_cursor){ 0, 0 };
		while (seen < 6) {
			cr_assert(eq(i64, next_push(c, &g, WAIT_MS), 0),
				  "push %d, version %llu so far", k,
				  (unsigned long long)seen);
			cr_assert(g.prev.lsn == last.lsn &&
					  g.prev.idx == last.idx,
				  "prev chains to the previous push");
			last = g.cursor;
			/* the space's own records (team) may come first: a
			 * node whose reader lags routes them after the
			 * subscription; versions grow per record */
			for (int i = 0; i < g.n; i++) {
				cr_assert(g.has_data[i]);
				if (strcmp(g.ids[i], "i1") != 0)
					continue;
				cr_assert(g.ver[i] > seen,
					  "versions only grow");
				seen = g.ver[i];
			}
		}
	}
	wclient_close(&a);
	wclient_close(&b);
}

/* a stream written by a relay from before the one-field entries (a field
 * per column) is still delivered, and so is what follows it */
Test(fanout, entries_with_a_field_per_column_are_still_delivered)
{
	static const uint8_t data[] = { 0x81, 0xa5, 't', 'i', 't', 'l',
					'e',  0xa3, 'o', 'l', 'd' };
	char why[256], id[64];
	redisContext *r;
	redisReply *top;
	struct wclient a;
	struct got g;

	team("t8");
	hello(&a, fa.url, "alice");
	cr_assert(eq(i64,
		     subscribe(&a, "space/t8", (struct proto_cursor){ 0, 0 }),
		     0));
	cr_assert(eq(i64, write_op("alice", 0, create_op("issues", "i8", "t8")),
		     PROTO_ACK));
	cr_assert(wait_change(&a, "i8", &g, WAIT_MS));
	/* after the stream's top, in the same commit: the relay's next
	 * entries come from later commits, so above it */
	r = redis_open(redis_url, 5000, why, sizeof(why));
	cr_assert_not_null(r, "%s", why);
	top = redisCommand(r, "XREVRANGE weft:changes + - COUNT 1");
	cr_assert(top && top->type == REDIS_REPLY_ARRAY && top->elements == 1);
	snprintf(id, sizeof(id), "%.*s-999",
		 (int)strcspn(top->element[0]->element[0]->str, "-"),
		 top->element[0]->element[0]->str);
	freeReplyObject(top);
	top = redisCommand(r,
			   "XADD weft:changes %s t issues i legacy s t8 v 4"
			   " o 1 x f d %b c old-client m 1 u alice w %lld",
			   id, data, sizeof(data), (long long)(clock_now_ms()));
	cr_assert(top && top->type == REDIS_REPLY_STRING, "%s",
		  top ? top->str : r->errstr);
	freeReplyObject(top);
	redisFree(r);
	cr_assert(wait_change(&a, "legacy", &g, WAIT_MS),
		  "the entry with a field per column is pushed");
	for (int i = 0; i < g.n; i++) {
		if (strcmp(g.ids[i], "legacy") != 0)
			continue;
		cr_assert(eq(u64, g.ver[i], 4));
		cr_assert(eq(u32, g.data_len[i], sizeof(data)));
		cr_assert(eq(int, memcmp(g.data[i], data, sizeof(data)), 0),
			  "its data, byte for byte");
	}
	cr_assert(eq(i64, write_op("alice", 0, set_op("i8", 1)), PROTO_ACK));
	cr_assert(wait_change(&a, "i8", &g, WAIT_MS),
		  "and the relay's next entry after it");
	wclient_close(&a);
}

/* enough sessions on one node that each routed change is sent by the
 * reader and its send helper together (fanout.c, HELPER_MIN): every
 * session still gets a chain of PUSHes ending at the last version */
#define MANY 80

Test(fanout, many_sessions_on_one_node_each_get_every_version_in_order)
{
	static struct wclient cs[MANY];
	struct got g;

	team("t9");
	cr_assert(eq(i64, write_op("alice", 0, create_op("issues", "i9", "t9")),
		     PROTO_ACK));
	for (int k = 0; k < MANY; k++) {
		char client[32];

		snprintf(client, sizeof(client), "many-%d", k);
		hello_as(&cs[k], fa.url, "alice", client);
		cr_assert(eq(i64,
			     subscribe(&cs[k], "space/t9",
				       (struct proto_cursor){ 0, 0 }),
			     0));
	}
	for (int v = 1; v <= 30; v++)
		cr_assert(eq(i64, write_op("alice", 0, set_op("i9", v)),
			     PROTO_ACK));
	for (int k = 0; k < MANY; k++) {
		struct proto_cursor last = { 0, 0 };
		uint64_t seen = 0;

		while (seen < 31) {
			cr_assert(eq(i64, next_push(&cs[k], &g, WAIT_MS), 0),
				  "session %d: version %llu so far", k,
				  (unsigned long long)seen);
			cr_assert(g.prev.lsn == last.lsn &&
					  g.prev.idx == last.idx,
				  "session %d: prev chains to the last push",
				  k);
			last = g.cursor;
			/* the space's own records (team) may come first, if
			 * this session subscribed before the reader met them */
			for (int i = 0; i < g.n; i++) {
				if (strcmp(g.ids[i], "i9") != 0)
					continue;
				cr_assert(g.ver[i] > seen,
					  "session %d: versions of i9 only grow"
					  " (%llu after %llu)",
					  k, (unsigned long long)g.ver[i],
					  (unsigned long long)seen);
				seen = g.ver[i];
			}
		}
		cr_assert(eq(u64, seen, 31));
		wclient_close(&cs[k]);
	}
}

Test(fanout, unauthorised_subscribe_gets_eperm_and_no_data)
{
	struct wclient c;
	struct got g;

	team("t2");
	hello(&c, fa.url, "carol");
	cr_assert(eq(i64, subscribe(&c, "space/t2", (struct proto_cursor){ 0 }),
		     WEFT_EPERM));
	cr_assert(eq(i64,
		     subscribe(&c, "rec/spaces/t2", (struct proto_cursor){ 0 }),
		     WEFT_EPERM));
	cr_assert(eq(i64, subscribe(&c, "nonsense", (struct proto_cursor){ 0 }),
		     WEFT_EINVAL));
	cr_assert(eq(i64, write_op("alice", 0, create_op("issues", "i2", "t2")),
		     PROTO_ACK));
	cr_assert(ne(i64, next_push(&c, &g, 1500), 0), "no data, ever");
	wclient_close(&c);
}

Test(fanout, removing_a_member_stops_their_pushes_at_once)
{
	struct wclient b;
	struct got g;
	struct proto_msg r;
	struct proto_op del = { .kind = PROTO_OP_DELETE,
				.table = S("members"),
				.id = S("t3:bob") };
	bool told = false;

	team("t3");
	hello(&b, fb.url, "bob");
	cr_assert(eq(i64, subscribe(&b, "space/t3", (struct proto_cursor){ 0 }),
		     0));
	cr_assert(eq(i64, write_op("alice", 0, create_op("issues", "i3", "t3")),
		     PROTO_ACK));
	cr_assert(wait_change(&b, "i3", &g, WAIT_MS));
	cr_assert(eq(i64, write_op("alice", 0, del), PROTO_ACK));
	/* bob is told his subscription ended */
	for (uint64_t until = clock_now_ms() + WAIT_MS;
	     !told && clock_now_ms() < until;) {
		if (next_msg(&b, &r, WAIT_MS) != 0)
			break;
		if (r.type == PROTO_SUBSCRIBED && r.u.subscribed.rid == 0) {
			struct proto_iter it;
			struct proto_subres res;

			proto_iter_init(&it, &r.u.subscribed.results);
			cr_assert(eq(i64, proto_next_subres(&it, &res), 1));
			cr_assert(eq(i64, res.code, WEFT_EPERM));
			told = true;
		}
	}
	cr_assert(told, "the session heard of the removal");
	cr_assert(eq(i64, write_op("alice", 0, set_op("i3", 9)), PROTO_ACK));
	cr_assert(ne(i64, next_push(&b, &g, 1500), 0), "no more pushes");
	/* and cannot subscribe again: EPERM (EUNAVAILABLE, "retry", while
	 * the check's snapshot does not see the removal yet) */
	{
		int code = WEFT_EUNAVAILABLE;

		for (int i = 0; i < 50 && code == WEFT_EUNAVAILABLE; i++) {
			if (i)
				usleep(100000);
			code = subscribe(&b, "space/t3",
					 (struct proto_cursor){ 0 });
		}
		cr_assert(eq(i64, code, WEFT_EPERM), "refused: %s",
			  weft_errname(code));
	}
	wclient_close(&b);
}

/* the next unsolicited SUBSCRIBED (rid 0) within ms: how many of its
 * results have code want, and that it has no other; -1 if none came in
 * time (any other failure to read is reported as it is) */
static int
unasked_subscribed(struct wclient *c, int want, int ms)
{
	struct proto_msg r;
	struct proto_iter it;
	struct proto_subres res;
	int n = 0, rc, seen = 0;
	char last[160] = "none";

	do {
		rc = next_msg(c, &r, ms);
		if (rc == WEFT_ETIMEDOUT)
			return -1;
		cr_assert(eq(i64, rc, 0),
			  "reading the session failed: %s, after %d other "
			  "messages, the last %s",
			  weft_errname(rc), seen, last);
		seen++;
		if (r.type == PROTO_ERROR)
			snprintf(last, sizeof(last), "ERROR %s: %.*s",
				 weft_errname(r.u.error.code),
				 (int)r.u.error.msg.len, r.u.error.msg.p);
		else
			snprintf(last, sizeof(last), "%s",
				 proto_type_name(r.type));
	} while (r.type != PROTO_SUBSCRIBED || r.u.subscribed.rid != 0);
	proto_iter_init(&it, &r.u.subscribed.results);
	while (proto_next_subres(&it, &res) == 1) {
		cr_assert(eq(i64, res.code, want), "%.*s", (int)res.key.len,
			  res.key.p);
		n++;
	}
	return n;
}

/*
 * Keys refused because the user was not a member are granted, unasked,
 * once a members change lets them in; the client does not poll. Keys a
 * removal ended come back the same way when the user is added again.
 * Another refused user is not told anything.
 */
Test(fanout, a_new_member_is_granted_what_they_were_refused)
{
	struct wclient c, d;
	struct got g;
	struct proto_op add, del = { .kind = PROTO_OP_DELETE,
				     .table = S("members"),
				     .id = S("t9:carol") };

	team("t9");
	cr_assert(eq(i64, write_op("alice", 0, create_op("issues", "g9", "t9")),
		     PROTO_ACK));
	hello(&c, fa.url, "carol");
	hello(&d, fa.url, "dave");
	cr_assert(eq(i64, subscribe(&c, "space/t9", (struct proto_cursor){ 0 }),
		     WEFT_EPERM));
	cr_assert(eq(i64,
		     subscribe(&c, "rec/issues/g9", (struct proto_cursor){ 0 }),
		     WEFT_EPERM));
	cr_assert(eq(i64, subscribe(&d, "space/t9", (struct proto_cursor){ 0 }),
		     WEFT_EPERM));
	add = create_op("members", "t9:carol", "t9");
	add.data = map_str("carol", "reader");
	cr_assert(eq(i64, write_op("alice", 0, add), PROTO_ACK));
	cr_assert(eq(i64, unasked_subscribed(&c, 0, WAIT_MS), 2),
		  "both keys granted, in one answer, unasked");
	cr_assert(eq(i64, write_op("alice", 0, set_op("g9", 1)), PROTO_ACK));
	cr_assert(wait_change(&c, "g9", &g, WAIT_MS), "and pushed from then");
	cr_assert(eq(i64, unasked_subscribed(&d, 0, 1000), -1),
		  "dave is still out, and hears nothing");
	/* removed: both end; added again: both back */
	cr_assert(eq(i64, write_op("alice", 0, del), PROTO_ACK));
	cr_assert(eq(i64, unasked_subscribed(&c, WEFT_EPERM, WAIT_MS), 2));
	cr_assert(eq(i64, write_op("alice", 0, add), PROTO_ACK));
	cr_assert(eq(i64, unasked_subscribed(&c, 0, WAIT_MS), 2));
	cr_assert(eq(i64, write_op("alice", 0, set_op("g9", 2)), PROTO_ACK));
	cr_assert(wait_change(&c, "g9", &g, WAIT_MS));
	wclient_close(&c);
	wclient_close(&d);
}

Test(fanout, moving_nodes_with_a_cursor_misses_nothing)
{
	struct wclient b;
	struct got g;
	struct proto_cursor cur;
	char id[16];
	int seen = 0;

	team("t4");
	hello(&b, fa.url, "bob");
	cr_assert(eq(i64, subscribe(&b, "space/t4", (struct proto_cursor){ 0 }),
		     0));
	cr_assert(eq(i64, write_op("alice", 0, create_op("issues", "m0", "t4")),
		     PROTO_ACK));
	cr_assert(wait_change(&b, "m0", &g, WAIT_MS));
	cur = g.cursor;
	wclient_close(&b);
	/* offline: three changes, then one of another space */
	for (int i = 1; i <= 3; i++) {
		snprintf(id, sizeof(id), "m%d", i);
		cr_assert(
			eq(i64,
			   write_op("alice", 0, create_op("issues", id, "t4")),
			   PROTO_ACK));
	}
	team("t4x");
	usleep(300000);
	/* back, on the other node, from the cursor */
	hello(&b, fb.url, "bob");
	subscribe_send(&b, "space/t4", cur);
	while (seen < 3) {
		cr_assert(eq(i64, next_push(&b, &g, WAIT_MS), 0), "seen %d",
			  seen);
		for (int i = 0; i < g.n; i++) {
			snprintf(id, sizeof(id), "m%d", seen + 1);
			cr_assert(eq(str, g.ids[i], id), "in order");
			seen++;
		}
	}
	/* the answer comes once the catch-up is sent: a client holding it
	 * has everything up to now */
	cr_assert(eq(i64, subscribed(&b, "space/t4"), 0));
	/* and live after that */
	cr_assert(eq(i64, write_op("alice", 0, create_op("issues", "m4", "t4")),
		     PROTO_ACK));
	cr_assert(wait_change(&b, "m4", &g, WAIT_MS));
	wclient_close(&b);
}

Test(fanout, a_cursor_older_than_the_window_gets_catchup)
{
	struct wclient b;
	struct got g;

	team("t5");
	cr_assert(eq(i64, write_op("alice", 0, create_op("issues", "c1", "t5")),
		     PROTO_ACK));
	usleep(300000);
	hello(&b, fa.url, "bob");
	/* an LSN far below anything this cluster has written */
	subscribe_send(&b, "space/t5", (struct proto_cursor){ 1, 0 });
	cr_assert(eq(i64, next_push(&b, &g, WAIT_MS), WEFT_ECATCHUP));
	cr_assert(eq(i64, subscribed(&b, "space/t5"), 0),
		  "granted after the CATCHUP: live from here");
	wclient_close(&b);
}

Test(fanout, hostile_input_gets_errors_and_the_node_stays_up)
{
	static const uint8_t garbage[] = { 0, 0, 0, 3, 0xc1, 0xc1, 0xc1 };
	static const uint8_t huge[] = { 0x7f, 0xff, 0xff, 0xff, 1, 2 };
	struct wclient c, d;
	struct proto_msg r;
	char body[256];

	hello(&c, fa.url, "mallory");
	cr_assert(eq(i64, wclient_send_raw(&c, garbage, sizeof(garbage)), 0));
	cr_assert(eq(i64, next_msg(&c, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_ERROR));
	cr_assert(eq(i64, r.u.error.fatal, 0), "a bad frame is not fatal");
	/* an oversized length claim: a fatal error, then the close */
	cr_assert(eq(i64, wclient_send_raw(&c, huge, sizeof(huge)), 0));
	cr_assert(eq(i64, next_msg(&c, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_ERROR));
	cr_assert(r.u.error.fatal);
	cr_assert(ne(i64, next_msg(&c, &r, 3000), 0), "closed");
	wclient_close(&c);
	/* no HELLO: refused */
	cr_assert(eq(i64, wclient_dial(&d, fa.url), 0));
	{
		struct proto_str k = S("space/x");
		struct proto_msg m = { .type = PROTO_SUBSCRIBE };

		m.u.subscribe = (struct proto_subscribe){ 1,
							  PROTO_LIST(1, &k),
							  { 0, 0 } };
		cr_assert(eq(i64, wclient_send(&d, &m), 0));
		cr_assert(eq(i64, next_msg(&d, &r, WAIT_MS), 0));
		cr_assert(eq(i64, r.type, PROTO_ERROR));
		cr_assert(eq(i64, r.u.error.code, WEFT_EAUTH));
	}
	wclient_close(&d);
	cr_assert(eq(i64, proc_http_get(&fa, "/healthz", body, sizeof(body)),
		     200),
		  "still up: %s", body);
}

Test(fanout, a_client_that_never_reads_is_dropped_to_catchup)
{
	struct wclient slow, fast;
	struct got g;
	struct proto_msg r;
	struct proc small;
	char id[16];
	bool catchup = false;
	uint64_t worst = 0;
	long rss0;

	{
		/* under ASan, freed memory sits in a quarantine (256 MB by
		 * default) and RSS says nothing about what the node holds */
		char opts[512];
		const char *old = getenv("ASAN_OPTIONS");

		snprintf(opts, sizeof(opts), "%s%squarantine_size_mb=1",
			 old ? old : "", old && *old ? ":" : "");
		setenv("ASAN_OPTIONS", opts, 1);
		start_fanout(&small, "fanout-small", "--queue-max=16");
		if (old)
			setenv("ASAN_OPTIONS", old, 1);
		else
			unsetenv("ASAN_OPTIONS");
	}
	rss0 = rss_kb(small.pid);
	team("t6");
	hello(&slow, small.url, "bob");
	hello(&fast, small.url, "alice");
	cr_assert(eq(i64,
		     subscribe(&slow, "space/t6", (struct proto_cursor){ 0 }),
		     0));
	cr_assert(eq(i64,
		     subscribe(&fast, "space/t6", (struct proto_cursor){ 0 }),
		     0));
	/* many changes (with big rows, so the socket buffers fill); slow
	 * never reads while fast keeps up */
	for (int i = 0; i < 150; i++) {
		uint64_t t0 = clock_now_ms();

		snprintf(id, sizeof(id), "s%d", i);
		cr_assert(eq(i64, write_op("alice", 0, big_create_op(id, "t6")),
			     PROTO_ACK));
		cr_assert(wait_change(&fast, id, &g, WAIT_MS),
			  "fast session got %s", id);
		if (clock_now_ms() - t0 > worst)
			worst = clock_now_ms() - t0;
	}
	cr_assert(lt(u64, worst, 2000), "the fast session was not held up");
	/* 150 rows of 120 KB (18 MB) went by; the node keeps one PUSH in
	 * flight and 16 queued changes for the slow one, not the backlog
	 * (measured: about 9 MB of growth, ASan's own overhead included) */
	cr_assert(lt(i64, rss_kb(small.pid) - rss0, 12 * 1024),
		  "node memory grew %ld KiB", rss_kb(small.pid) - rss0);
	cr_assert(
		lt(i64, 0, proc_metric(&small, "weft_fanout_overflows_total")),
		"the slow queue overflowed");
	/* the slow one, reading at last, is told to catch up */
	for (int i = 0; i < 400 && !catchup; i++) {
		if (next_msg(&slow, &r, WAIT_MS) != 0)
			break;
		catchup = r.type == PROTO_CATCHUP;
	}
	cr_assert(catchup, "told to catch up");
	wclient_close(&slow);
	wclient_close(&fast);
	proc_stop(&small);
}

Test(fanout, sigterm_tells_sessions_to_reconnect_elsewhere)
{
	struct wclient c;
	struct proto_msg r;
	int status;

	hello(&c, fb.url, "alice");
	kill(fb.pid, SIGTERM);
	cr_assert(eq(i64, next_msg(&c, &r, WAIT_MS), 0));
	cr_assert(eq(i64, r.type, PROTO_BACKOFF));
	cr_assert(r.u.backoff.reconnect);
	cr_assert(eq(i64, waitpid(fb.pid, &status, 0), fb.pid));
	cr_assert(eq(i64, status, 0), "clean exit (wait status %d)", status);
	fb.pid = 0;
	wclient_close(&c);
}

/* ---- every committed change reaches every subscriber, through chaos ---- */

#define CHAOS_MAX 20000

/* creates d0, d1, ... in a space through weft-write, each resent with
 * the same mid until it is acknowledged, so each exists exactly once */
struct cwriter {
	pthread_t thread;
	const char *space;
	volatile bool stop;
	volatile int acked;
};

static void *
cwriter_main(void *arg)
{
	struct cwriter *w = arg;
	struct wclient c;
	bool up = false;
	uint64_t mid = 1;

	while (!w->stop && w->acked < CHAOS_MAX) {
		struct proto_msg m = { .type = PROTO_TXN }, r;
		struct proto_op op;
		char id[32];

		if (!up) {
			char *tok = auth_mint_hs256(PROC_SECRET, "alice",
						    (int64_t)time(NULL), 3600);

			up = wclient_dial(&c, wr.url) == 0 &&
			     wclient_hello(&c, tok, "chaos", &r, 2000) == 0 &&
			     r.type == PROTO_WELCOME;
			free(tok);
			if (!up) {
				wclient_close(&c);
				usleep(100000);
				continue;
			}
		}
		snprintf(id, sizeof(id), "d%d", w->acked);
		op = create_op("issues", id, w->space);
		m.u.txn = (struct proto_txn){ mid, S("chaos"), mid,
					      PROTO_LIST(1, &op) };
		if (wclient_send(&c, &m) != 0 ||
		    wclient_recv(&c, &r, 5000) != 0) {
			wclient_close(&c);
			up = false;
			continue;
		}
		if (r.type == PROTO_ACK) {
			w->acked++;
			mid++;
			usleep(3000);
		} else {
			usleep(50000); /* EUNAVAILABLE, BACKOFF: same mid */
		}
	}
	if (up)
		wclient_close(&c);
	return NULL;
}

/* a subscriber counting what it receives: seen[k] for record dk */
struct counter {
	pthread_t thread;
	const char *url, *user, *space;
	volatile bool stop;
	uint8_t seen[CHAOS_MAX];
	int distinct, dups;
};

static void *
counter_main(void *arg)
{
	struct counter *k = arg;
	struct wclient c;
	struct got g;

	hello(&c, k->url, k->user);
	cr_assert(eq(i64, subscribe(&c, k->space, (struct proto_cursor){ 0 }),
		     0));
	while (!k->stop) {
		if (next_push(&c, &g, 200) != 0)
			continue;
		for (int i = 0; i < g.n; i++) {
			int n;

			if (g.ids[i][0] != 'd')
				continue;
			n = atoi(g.ids[i] + 1);
			if (n < 0 || n >= CHAOS_MAX)
				continue;
			if (k->seen[n]++)
				k->dups++;
			else
				k->distinct++;
		}
	}
	wclient_close(&c);
	return NULL;
}

Test(fanout, every_change_reaches_every_subscriber_through_chaos)
{
	static struct counter ka, kb;
	struct cwriter w = { .space = "chaos" };
	struct proc relay2;
	char pg[300], rd[160];
	const char *rargv[] = {
		getenv("WEFT_TEST_RELAY_BIN"), pg,  rd, "--log-level=warn",
		"--standby-retry=200ms",       NULL
	};
	uint64_t until;

	snprintf(pg, sizeof(pg), "--pg-url=%s", pg_url);
	snprintf(rd, sizeof(rd), "--redis-url=%s", redis_url);
	proc_start_svc(&relay2, rargv); /* the standby */
	team("chaos");
	ka = (struct counter){ .url = fa.url,
			       .user = "alice",
			       .space = "space/chaos" };
	kb = (struct counter){ .url = fb.url,
			       .user = "bob",
			       .space = "space/chaos" };
	pthread_create(&ka.thread, NULL, counter_main, &ka);
	pthread_create(&kb.thread, NULL, counter_main, &kb);
	usleep(500000); /* subscribed */
	pthread_create(&w.thread, NULL, cwriter_main, &w);
	usleep(1000000);
	proc_kill9(&relay); /* the active one: the standby takes over */
	usleep(1500000);
	proc_stack_restart(dir, "run/redis.pid", SIGTERM);
	usleep(1500000);
	proc_stack_restart(dir, "pg/data/postmaster.pid", SIGINT);
	usleep(2000000);
	w.stop = true;
	pthread_join(w.thread, NULL);
	cr_assert(lt(i64, 200, w.acked), "writes went on (%d)", w.acked);
	until = clock_now_ms() + 30000;
	while ((ka.distinct < w.acked || kb.distinct < w.acked) &&
	       clock_now_ms() < until)
		usleep(100000);
	ka.stop = kb.stop = true;
	pthread_join(ka.thread, NULL);
	pthread_join(kb.thread, NULL);
	if (ka.distinct != w.acked || kb.distinct != w.acked) {
		fprintf(stderr,
			"chaos: acked %d, a %d, b %d; missing:", w.acked,
			ka.distinct, kb.distinct);
		for (int i = 0; i < w.acked; i++)
			if (!ka.seen[i] || !kb.seen[i])
				fprintf(stderr, " d%d(%s%s)", i,
					ka.seen[i] ? "" : "a",
					kb.seen[i] ? "" : "b");
		fprintf(stderr, "\n");
	}
	cr_assert(eq(i64, ka.distinct, w.acked), "alice (node a) got %d of %d",
		  ka.distinct, w.acked);
	cr_assert(eq(i64, kb.distinct, w.acked), "bob (node b) got %d of %d",
		  kb.distinct, w.acked);
	cr_assert(eq(i64, ka.dups + kb.dups, 0), "nothing twice");
	proc_stop(&relay2);
}

Test(fanout, pushes_fit_in_a_default_client_frame)
{
	struct wclient b;
	struct got g;
	char id[16];
	int seen = 0;

	team("t7");
	hello(&b, fa.url, "bob");
	/* a client with the protocol's default frame cap, as libweft has */
	frame_reader_fini(&b.fr);
	frame_reader_init(&b.fr, FRAME_MAX_DEFAULT);
	cr_assert(eq(i64, subscribe(&b, "space/t7", (struct proto_cursor){ 0 }),
		     0));
	/* 100 rows of 120 KB while bob does not read: they pile up in his
	 * queue and must leave it in pushes a 1 MiB reader accepts */
	for (int i = 0; i < 100; i++) {
		snprintf(id, sizeof(id), "big%d", i);
		cr_assert(eq(i64, write_op("alice", 0, big_create_op(id, "t7")),
			     PROTO_ACK));
	}
	/* only the big rows count: the team's own setup (bob's membership)
	 * may reach the stream after his subscription and be pushed too */
	while (seen < 100) {
		cr_assert(eq(i64, next_push(&b, &g, WAIT_MS), 0),
			  "push after %d changes", seen);
		for (int i = 0; i < g.n; i++)
			seen += strncmp(g.ids[i], "big", 3) == 0;
	}
	cr_assert(eq(i64, seen, 100), "each big row once");
	wclient_close(&b);
}

Test(fanout, a_slowloris_or_silent_peer_is_closed)
{
	static const uint8_t hello_start[] = { 0, 0, 1 }; /* never ends */
	struct proc quick;
	struct wclient drip, silent, live;
	struct proto_msg r;
	uint64_t t0 = clock_now_ms();
	int alive = 1;

	start_fanout(&quick, "fanout-quick", "--idle-timeout=2s");
	/* a session that drips one byte of a frame every 400 ms */
	hello(&drip, quick.url, "alice");
	cr_assert(eq(i64, wclient_dial(&silent, quick.url), 0));
	for (int i = 0; i < 3 && alive; i++) {
		alive = wclient_send_raw(&drip, hello_start + i, 1) == 0;
		usleep(400000);
	}
	while (alive && clock_now_ms() - t0 < 8000) {
		alive = wclient_send_raw(&drip, "x", 1) == 0;
		if (wclient_recv(&drip, &r, 400) == 0 &&
		    r.type == PROTO_ERROR && r.u.error.fatal)
			break;
	}
	cr_assert(lt(u64, clock_now_ms() - t0, 8000),
		  "the dripping session was closed");
	/* the one that never said HELLO is gone too: an ERROR, or simply
	 * the close (its receive timed out first) */
	{
		int rc = next_msg(&silent, &r, 4000);

		if (rc == 0) {
			cr_assert(eq(i64, r.type, PROTO_ERROR));
			cr_assert(eq(i64, r.u.error.code, WEFT_ETIMEDOUT));
			rc = next_msg(&silent, &r, 4000);
		}
		cr_assert(eq(i64, rc, WEFT_ECLOSED), "closed (%d)", rc);
	}
	/* and the node serves a well-behaved session */
	hello(&live, quick.url, "bob");
	cr_assert(eq(i64,
		     subscribe(&live, "space/none", (struct proto_cursor){ 0 }),
		     WEFT_EPERM));
	wclient_close(&drip);
	wclient_close(&silent);
	wclient_close(&live);
	proc_stop(&quick);
}

/* pings go to quiet sessions only: one that receives pushes more often
 * than the heartbeat (2 s, less a skew of up to 0.5 s) gets none over
 * 4.5 s, where the old node pinged it every heartbeat; an idle one still
 * gets them */
Test(fanout, only_quiet_sessions_are_pinged)
{
	struct proc hb;
	struct wclient busy, idle;
	struct proto_msg r;
	int busy_pings = 0, idle_pings = 0, pushes = 0;
	uint64_t t0;

	team("hb1");
	cr_assert(eq(i64,
		     write_op("bob", 1, create_op("issues", "hb-r", "hb1")),
		     PROTO_ACK));
	start_fanout(&hb, "fanout-hb", "--heartbeat=2s");
	hello(&busy, hb.url, "bob");
	hello(&idle, hb.url, "alice");
	cr_assert(eq(i64,
		     subscribe(&busy, "space/hb1", (struct proto_cursor){ 0 }),
		     0));
	t0 = clock_now_ms();
	for (int i = 0; clock_now_ms() - t0 < 4500; i++) {
		uint64_t until = clock_now_ms() + 100;

		cr_assert(eq(i64, write_op("bob", 1, set_op("hb-r", i)),
			     PROTO_ACK));
		while (clock_now_ms() < until &&
		       wclient_recv(&busy, &r, (int)(until - clock_now_ms())) ==
			       0) {
			if (r.type == PROTO_PING) {
				busy_pings++;
				r.type = PROTO_PONG;
				wclient_send(&busy, &r);
			} else if (r.type == PROTO_PUSH) {
				pushes++;
			}
		}
	}
	while (wclient_recv(&idle, &r, 50) == 0)
		idle_pings += r.type == PROTO_PING;
	cr_assert(ge(i64, pushes, 5), "the busy session got pushes");
	cr_assert(eq(i64, busy_pings, 0), "no pings beside pushes");
	cr_assert(ge(i64, idle_pings, 1), "the idle session is pinged");
	wclient_close(&busy);
	wclient_close(&idle);
	proc_stop(&hb);
}
