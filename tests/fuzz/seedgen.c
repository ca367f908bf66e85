/*
 * seedgen.c - writes the seed corpus for the fuzz targets: one valid
 * encoding of every message type (with every field that type has) plus
 * a few classic malformations, into <dir>/{proto,frame,mp,entry}/.
 *
 *   build/tests/fuzz/seedgen tests/fuzz/corpus
 *
 * Re-run it when a message changes; commit the files it writes.
 */
#include <msgpack.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "proto/entry.h"
#include "proto/frame.h"
#include "proto/msg.h"

#define S(x) proto_str_c(x)

static const char *outdir;
static int count;

static void
write_file(const char *sub, const char *name, const uint8_t *p, size_t n)
{
	char path[1024];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s/%s", outdir, sub, name);
	f = fopen(path, "wb");
	if (!f || fwrite(p, 1, n, f) != n) {
		perror(path);
		return;
	}
	fclose(f);
	count++;
}

static struct proto_bytes
row(void)
{
	static char store[128];
	msgpack_sbuffer s;
	msgpack_packer p;

	msgpack_sbuffer_init(&s);
	msgpack_packer_init(&p, &s, msgpack_sbuffer_write);
	msgpack_pack_map(&p, 4);
	msgpack_pack_str_with_body(&p, "title", 5);
	msgpack_pack_str_with_body(&p, "Fix login", 9);
	msgpack_pack_str_with_body(&p, "priority", 8);
	msgpack_pack_int(&p, 2);
	msgpack_pack_str_with_body(&p, "estimate", 8);
	msgpack_pack_double(&p, 1.5);
	msgpack_pack_str_with_body(&p, "labels", 6);
	msgpack_pack_array(&p, 2);
	msgpack_pack_str_with_body(&p, "bug", 3);
	msgpack_pack_nil(&p);
	memcpy(store, s.data, s.size);
	struct proto_bytes b = { (const uint8_t *)store, (uint32_t)s.size };
	msgpack_sbuffer_destroy(&s);
	return b;
}

static void
emit(const char *name, const struct proto_msg *m)
{
	struct buf b;
	uint8_t *framed;

	buf_init(&b, 0);
	if (proto_encode(&b, m, 0, NULL) != 0) {
		fprintf(stderr, "seedgen: cannot encode %s\n", name);
		buf_fini(&b);
		return;
	}
	write_file("proto", name, b.data + FRAME_HEADER, b.len - FRAME_HEADER);
	/* frame seeds: a chunking byte, then the frame twice */
	framed = malloc(1 + 2 * b.len);
	framed[0] = 7;
	memcpy(framed + 1, b.data, b.len);
	memcpy(framed + 1 + b.len, b.data, b.len);
	write_file("frame", name, framed, 1 + 2 * b.len);
	free(framed);
	buf_fini(&b);
}

/* stream entries (proto/entry.h): a moved row with every field, and a
 * tombstone */
static void
entry_seeds(struct proto_bytes data)
{
	struct stream_change c = { 0 };
	msgpack_sbuffer s;
	msgpack_packer p;

	c.table = S("issues");
	c.id = S("i1");
	c.space = S("team2");
	c.prev = S("team");
	c.version = 7;
	c.op = PROTO_OP_PUT;
	c.data = data.p;
	c.data_len = data.len;
	c.client = S("client-1");
	c.user = S("u1");
	c.mid = 3;
	c.when_ms = 1700000000000;
	msgpack_sbuffer_init(&s);
	msgpack_packer_init(&p, &s, msgpack_sbuffer_write);
	if (stream_change_pack(&p, &c) == 0)
		write_file("entry", "moved", (const uint8_t *)s.data, s.size);
	memset(&c, 0, sizeof(c));
	c.table = S("issues");
	c.id = S("i1");
	c.space = S("team");
	c.version = 8;
	c.op = PROTO_OP_DELETE;
	c.deleted = true;
	s.size = 0;
	if (stream_change_pack(&p, &c) == 0)
		write_file("entry", "tombstone", (const uint8_t *)s.data,
			   s.size);
	msgpack_sbuffer_destroy(&s);
}

int
main(int argc, char **argv)
{
	static const uint8_t tok[] = { 1, 2, 3, 4 };
	static const uint8_t nil = 0xc0, three = 3;
	struct proto_bytes data = row();
	struct proto_op ops[] = {
		{ PROTO_OP_CREATE,
		  S("issues"),
		  S("i1"),
		  S("team"),
		  { 0, 0 },
		  { 0, 0 },
		  data,
		  0 },
		{ PROTO_OP_PUT,
		  S("issues"),
		  S("i1"),
		  S("team2"),
		  { 0, 0 },
		  { 0, 0 },
		  data,
		  3 },
		{ PROTO_OP_SET,
		  S("issues"),
		  S("i1"),
		  { 0, 0 },
		  S("title"),
		  { &nil, 1 },
		  { 0, 0 },
		  1 },
		{ PROTO_OP_UNSET,
		  S("issues"),
		  S("i1"),
		  { 0, 0 },
		  S("title"),
		  { 0, 0 },
		  { 0, 0 },
		  0 },
		{ PROTO_OP_DELETE,
		  S("issues"),
		  S("i1"),
		  { 0, 0 },
		  { 0, 0 },
		  { 0, 0 },
		  { 0, 0 },
		  9 },
		{ PROTO_OP_LIST_ADD,
		  S("issues"),
		  S("i1"),
		  { 0, 0 },
		  S("labels"),
		  { &three, 1 },
		  { 0, 0 },
		  0 },
		{ PROTO_OP_LIST_REMOVE,
		  S("issues"),
		  S("i1"),
		  { 0, 0 },
		  S("labels"),
		  { &three, 1 },
		  { 0, 0 },
		  0 },
		{ PROTO_OP_INCR,
		  S("issues"),
		  S("i1"),
		  { 0, 0 },
		  S("votes"),
		  { &three, 1 },
		  { 0, 0 },
		  0 },
	};
	struct proto_record recs[] = {
		{ S("issues"), S("i1"), S("team"), 4, false, data, { 0, 0 } },
		{ S("issues"),
		  S("i2"),
		  S("team"),
		  2,
		  true,
		  { 0, 0 },
		  { 0, 0 } },
		{ S("issues"),
		  S("i3"),
		  S("team"),
		  1,
		  false,
		  { 0, 0 },
		  S("{\"title\": \"as JSON\", \"n\": [1, 2.5]}") },
	};
	struct proto_keyref refs[] = { { S("issues"), S("i1") } };
	struct proto_str keys[] = { S("space/team"), S("rec/issues/i1") };
	struct proto_subres res[] = { { S("space/team"), 0, { 0, 0 } },
				      { S("space/x"), -22, S("denied") } };
	struct proto_change ch[] = {
		{ { 77, 0 },
		  S("space/team"),
		  S("issues"),
		  S("i1"),
		  S("team"),
		  5,
		  PROTO_OP_SET,
		  false,
		  data },
		{ { 77, 1 },
		  S("space/team"),
		  S("issues"),
		  S("i2"),
		  S("team"),
		  3,
		  PROTO_OP_DELETE,
		  true,
		  { 0, 0 } },
	};
	struct proto_msg m;
	char dir[1024];

	if (argc != 2) {
		fprintf(stderr, "usage: seedgen <corpus-dir>\n");
		return 1;
	}
	outdir = argv[1];
	for (int i = 0; i < 4; i++) {
		snprintf(
			dir, sizeof(dir), "%s/%s", outdir,
			(const char *[]){ "proto", "frame", "mp", "entry" }[i]);
		mkdir(outdir, 0755);
		mkdir(dir, 0755);
	}

#define MSG(t, field, ...)                                          \
	do {                                                        \
		memset(&m, 0, sizeof(m));                           \
		m.type = t;                                         \
		m.u.field = (__typeof__(m.u.field)){ __VA_ARGS__ }; \
		emit(#t, &m);                                       \
	} while (0)

	MSG(PROTO_HELLO, hello, 1, 1, S("eyJhbGciOiJIUzI1NiJ9.e30.x"),
	    S("client-1"), { 5, 1 }, S("libweft/0.1.0"));
	MSG(PROTO_WELCOME, welcome, 1, 1, S("u1"), S("node-a"), 9, 15000,
	    1 << 20, 256);
	MSG(PROTO_TXN, txn, 2, S("client-1"), 1, PROTO_LIST(8, ops));
	MSG(PROTO_ACK, ack, 2, 1, true, PROTO_LIST(2, recs));
	MSG(PROTO_REJECT, reject, 2, 2, -31, S("version conflict"), 1,
	    S("title"), false, PROTO_LIST(1, recs));
	MSG(PROTO_FETCH, fetch, 3, PROTO_LIST(1, refs));
	MSG(PROTO_RECORDS, records, 3, PROTO_LIST(2, recs),
	    PROTO_LIST(1, refs));
	MSG(PROTO_BOOTSTRAP, bootstrap, 4, S("team"), { tok, 4 }, 65536, true);
	MSG(PROTO_PAGE, page, 4, S("team"), PROTO_LIST(3, recs), { tok, 4 },
	    { 70, 0 }, 2);
	MSG(PROTO_SUBSCRIBE, subscribe, 5, PROTO_LIST(2, keys), { 70, 0 });
	MSG(PROTO_UNSUBSCRIBE, subscribe, 6, PROTO_LIST(1, keys), { 0, 0 });
	MSG(PROTO_SUBSCRIBED, subscribed, 5, PROTO_LIST(2, res));
	MSG(PROTO_PUSH, push, { 77, 1 }, { 70, 3 }, PROTO_LIST(2, ch));
	MSG(PROTO_CATCHUP, catchup, PROTO_LIST(1, keys), { 60, 0 },
	    S("too old"));
	MSG(PROTO_ERROR, error, 2, -32, S("gap"), 7, true);
	MSG(PROTO_PING, ping, 42);
	MSG(PROTO_PONG, ping, 42);
	MSG(PROTO_BACKOFF, backoff, 0, 1500, true, S("draining"));

	/* malformations worth starting from */
	write_file("proto", "huge_count",
		   (const uint8_t *)"\x92\x0d\x81\xa7"
				    "changes\xdd\xff\xff\xff\xff",
		   16);
	write_file(
		"proto", "deep",
		(const uint8_t *)"\x92\x10\x81\xa1x"
				 "\x91\x91\x91\x91\x91\x91\x91\x91\x91\x91\xc0",
		16);
	write_file("frame", "oversize",
		   (const uint8_t *)"\x01\x00\x10\x00"
				    "\x01\x92\x10\x80",
		   8);
	write_file("mp", "row", data.p, data.len);
	write_file("mp", "ext", (const uint8_t *)"\xd6\x01\x00\x00\x00\x01", 6);
	write_file("mp", "nan",
		   (const uint8_t *)"\xcb\x7f\xf8\x00\x00\x00\x00\x00\x00", 9);
	entry_seeds(data);
	printf("seedgen: wrote %d files under %s\n", count, outdir);
	return 0;
}
