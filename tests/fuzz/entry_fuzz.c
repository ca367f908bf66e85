/*
 * entry_fuzz.c - the stream-entry parser weft-fanout runs on what it reads
 * from Redis, on arbitrary bytes: it must fail cleanly, or return values
 * that lie inside the input and that pack back into an entry that parses
 * to the same change.
 */
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include "proto/entry.h"
#include "tests/fuzz/fuzz.h"

static bool
same(struct proto_str a, struct proto_str b)
{
	return (a.p == NULL) == (b.p == NULL) && a.len == b.len &&
	       (a.len == 0 || memcmp(a.p, b.p, a.len) == 0);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct stream_change c, back;
	msgpack_sbuffer sb;
	msgpack_packer pk;

	if (stream_change_parse(data, size, &c) != 0)
		return 0;
	fuzz_inside(data, size, c.table.p, c.table.len);
	fuzz_inside(data, size, c.id.p, c.id.len);
	fuzz_inside(data, size, c.space.p, c.space.len);
	fuzz_inside(data, size, c.prev.p, c.prev.len);
	fuzz_inside(data, size, c.client.p, c.client.len);
	fuzz_inside(data, size, c.user.p, c.user.len);
	fuzz_inside(data, size, c.data, c.data_len);
	if (c.version == 0 || c.op == 0 || c.op > PROTO_OP_MAX)
		abort();
	/* round trip: what parsed packs into an entry that parses the same */
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	if (stream_change_pack(&pk, &c) != 0 ||
	    stream_change_parse((const uint8_t *)sb.data, sb.size, &back) !=
		    0 ||
	    !same(c.table, back.table) || !same(c.id, back.id) ||
	    !same(c.space, back.space) || !same(c.prev, back.prev) ||
	    !same(c.client, back.client) || !same(c.user, back.user) ||
	    c.version != back.version || c.op != back.op ||
	    c.deleted != back.deleted || c.mid != back.mid ||
	    c.when_ms != back.when_ms || c.when_us != back.when_us ||
	    c.data_len != back.data_len ||
	    (c.data_len && memcmp(c.data, back.data, c.data_len) != 0))
		abort();
	msgpack_sbuffer_destroy(&sb);
	return 0;
}
