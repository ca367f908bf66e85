/*
 * entry_test.c - a change as a Redis stream entry (proto/entry.h): what
 * the relay packs the fanout parses back unchanged; bad values are refused
 * with their error, never read past their end.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include <weft/error.h>

#include "proto/entry.h"

static msgpack_sbuffer sb;
static msgpack_packer pk;

static void
setup(void)
{
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
}

static void
teardown(void)
{
	msgpack_sbuffer_destroy(&sb);
}

TestSuite(entry, .init = setup, .fini = teardown);

static bool
same(struct proto_str a, const char *b)
{
	return a.p && a.len == strlen(b) && memcmp(a.p, b, a.len) == 0;
}

/* {"title": "t", "n": [1, 2]} */
static const uint8_t data[] = { 0x82, 0xa5, 't',  'i', 't',  'l',  'e',
				0xa1, 't',  0xa1, 'n', 0x92, 0x01, 0x02 };

static struct stream_change
full(void)
{
	struct stream_change c = { 0 };

	c.table = proto_str_c("issues");
	c.id = proto_str_c("i-1");
	c.space = proto_str_c("team-b");
	c.prev = proto_str_c("team-a");
	c.version = 1ull << 40;
	c.op = PROTO_OP_PUT;
	c.data = data;
	c.data_len = sizeof(data);
	c.client = proto_str_c("client-7");
	c.user = proto_str_c("alice");
	c.mid = 42;
	c.when_ms = 1700000000123;
	c.when_us = 456;
	return c;
}

Test(entry, a_packed_change_parses_back_unchanged)
{
	struct stream_change in = full(), out;

	cr_assert(eq(int, stream_change_pack(&pk, &in), 0));
	cr_assert(
		eq(int,
		   stream_change_parse((const uint8_t *)sb.data, sb.size, &out),
		   0));
	cr_assert(same(out.table, "issues") && same(out.id, "i-1") &&
		  same(out.space, "team-b") && same(out.prev, "team-a") &&
		  same(out.client, "client-7") && same(out.user, "alice"));
	cr_assert(eq(u64, out.version, 1ull << 40));
	cr_assert(eq(u32, out.op, PROTO_OP_PUT));
	cr_assert(eq(int, out.deleted, 0));
	cr_assert(eq(u64, out.mid, 42));
	cr_assert(eq(i64, out.when_ms, 1700000000123));
	cr_assert(eq(u32, out.when_us, 456));
	cr_assert(eq(u32, out.data_len, sizeof(data)));
	cr_assert(eq(int, memcmp(out.data, data, sizeof(data)), 0));
	/* inside the input */
	cr_assert(out.data >= (const uint8_t *)sb.data &&
		  out.data + out.data_len <=
			  (const uint8_t *)sb.data + sb.size);
}

Test(entry, a_tombstone_has_no_data_and_optional_fields_stay_absent)
{
	struct stream_change in = { 0 }, out;

	in.table = proto_str_c("issues");
	in.id = proto_str_c("gone");
	in.space = proto_str_c("s");
	in.version = 3;
	in.op = PROTO_OP_DELETE;
	in.deleted = true;
	cr_assert(eq(int, stream_change_pack(&pk, &in), 0));
	cr_assert(
		eq(int,
		   stream_change_parse((const uint8_t *)sb.data, sb.size, &out),
		   0));
	cr_assert(eq(int, out.deleted, 1));
	cr_assert_null(out.data);
	cr_assert_null(out.prev.p);
	cr_assert_null(out.client.p);
	cr_assert_null(out.user.p);
}

/* every combination of the optional keys (p, d, c, u) and the tombstone
 * flag packs a map whose count matches, and parses back */
Test(entry, every_combination_of_optional_keys_parses_back)
{
	for (int mask = 0; mask < 32; mask++) {
		struct stream_change in = full(), out;

		if (!(mask & 1))
			in.prev = (struct proto_str){ 0 };
		if (!(mask & 2))
			in.data = NULL;
		if (!(mask & 4))
			in.client = (struct proto_str){ 0 };
		if (!(mask & 8))
			in.user = (struct proto_str){ 0 };
		in.deleted = (mask & 16) != 0;
		sb.size = 0;
		cr_assert(eq(int, stream_change_pack(&pk, &in), 0));
		cr_assert(eq(int,
			     stream_change_parse((const uint8_t *)sb.data,
						 sb.size, &out),
			     0),
			  "mask %d", mask);
		cr_assert(eq(int, out.prev.p != NULL, (mask & 1) != 0));
		cr_assert(eq(int, out.data != NULL, (mask & 2) != 0));
		cr_assert(eq(int, out.client.p != NULL, (mask & 4) != 0));
		cr_assert(eq(int, out.user.p != NULL, (mask & 8) != 0));
		cr_assert(eq(int, out.deleted, (mask & 16) != 0));
	}
}

/* data that is not a map is refused when packing: the entry would not
 * parse */
Test(entry, data_that_is_not_a_map_is_not_packed)
{
	static const uint8_t arr[] = { 0x91, 0x01 };
	struct stream_change in = full();

	in.data = arr;
	in.data_len = sizeof(arr);
	cr_assert(eq(int, stream_change_pack(&pk, &in), WEFT_EINVAL));
	in.data_len = 0;
	cr_assert(eq(int, stream_change_pack(&pk, &in), WEFT_EINVAL));
}

/* every proper prefix of a valid value fails cleanly */
Test(entry, every_truncation_is_refused)
{
	struct stream_change in = full(), out;

	cr_assert(eq(int, stream_change_pack(&pk, &in), 0));
	for (size_t n = 0; n < sb.size; n++) {
		uint8_t *copy = malloc(n ? n : 1);

		memcpy(copy, sb.data, n);
		cr_assert(ne(int, stream_change_parse(copy, n, &out), 0),
			  "prefix of %zu bytes", n);
		free(copy);
	}
}

/* a map of the pairs packed by fn */
#define MAP(n, body)                      \
	do {                              \
		sb.size = 0;              \
		msgpack_pack_map(&pk, n); \
		body;                     \
	} while (0)

static void
kv_str(const char *k, const char *v)
{
	msgpack_pack_str_with_body(&pk, k, strlen(k));
	msgpack_pack_str_with_body(&pk, v, strlen(v));
}

static void
kv_uint(const char *k, uint64_t v)
{
	msgpack_pack_str_with_body(&pk, k, strlen(k));
	msgpack_pack_uint64(&pk, v);
}

static int
parse(void)
{
	struct stream_change out;

	return stream_change_parse((const uint8_t *)sb.data, sb.size, &out);
}

Test(entry, bad_values_get_their_error)
{
	MAP(4, (kv_str("t", "a"), kv_str("i", "b"), kv_str("s", "c"),
		kv_uint("v", 1)));
	cr_assert(eq(int, parse(), WEFT_EMISSING), "no op");
	MAP(4, (kv_str("t", "a"), kv_str("i", "b"), kv_uint("v", 1),
		kv_uint("o", 3)));
	cr_assert(eq(int, parse(), WEFT_EMISSING), "no space");
	MAP(5, (kv_str("t", "a"), kv_str("i", "b"), kv_str("s", "c"),
		kv_uint("v", 0), kv_uint("o", 3)));
	cr_assert(eq(int, parse(), WEFT_EINVAL), "version 0");
	MAP(5, (kv_str("t", "a"), kv_str("i", "b"), kv_str("s", "c"),
		kv_uint("v", 1), kv_uint("o", PROTO_OP_MAX + 1)));
	cr_assert(eq(int, parse(), WEFT_EINVAL), "unknown op");
	MAP(5, (kv_str("t", "a"), kv_str("i", "b"), kv_str("s", "c"),
		kv_uint("v", 1), kv_uint("t", 3)));
	cr_assert(eq(int, parse(), WEFT_EDUPFIELD), "t twice");
	MAP(5, (kv_str("t", "a"), kv_str("i", "b"), kv_str("s", "c"),
		kv_uint("v", 1), kv_str("o", "3")));
	cr_assert(eq(int, parse(), WEFT_ETYPE), "op as a string");
	MAP(6, (kv_str("t", "a"), kv_str("i", "b"), kv_str("s", "c"),
		kv_uint("v", 1), kv_uint("o", 3), kv_uint("d", 7)));
	cr_assert(eq(int, parse(), WEFT_ETYPE), "data that is not a map");
	MAP(5, (kv_str("t", "a"), kv_str("id", "b"), kv_str("s", "c"),
		kv_uint("v", 1), kv_uint("o", 3)));
	cr_assert(eq(int, parse(), WEFT_EINVAL), "a two-letter key");
	MAP(5, (msgpack_pack_str_with_body(&pk, "t", 1),
		msgpack_pack_str_with_body(&pk, "a\0b", 3), kv_str("i", "b"),
		kv_str("s", "c"), kv_uint("v", 1), kv_uint("o", 3)));
	cr_assert(eq(int, parse(), WEFT_EENCODING), "a NUL in a name");
	MAP(5, (kv_str("t", "a"), kv_str("i", "b"), kv_str("s", "c"),
		kv_uint("v", 1), kv_uint("o", 3)));
	cr_assert(eq(int, parse(), 0));
	msgpack_pack_nil(&pk);
	cr_assert(eq(int, parse(), WEFT_ETRAILING), "bytes after the map");
	sb.size = 0;
	msgpack_pack_array(&pk, 0);
	cr_assert(eq(int, parse(), WEFT_ETYPE), "not a map");
	MAP(5, (kv_str("t", "a"), kv_str("i", "b"), kv_str("s", "c"),
		kv_uint("v", 1),
		(msgpack_pack_uint8(&pk, 7), msgpack_pack_uint8(&pk, 3))));
	cr_assert(eq(int, parse(), WEFT_ETYPE), "a key that is not a string");
	MAP(5, (kv_str("t", "a"), kv_str("i", "b"), kv_str("s", "c"),
		kv_uint("v", 1), kv_uint("O", 3)));
	cr_assert(eq(int, parse(), WEFT_EINVAL), "an upper-case key");
}

/* the commit time's microseconds (f) are 0..999: more is not packed and
 * does not parse; an entry without f (an older relay's) reads 0 */
Test(entry, the_commit_times_microseconds_stay_below_a_millisecond)
{
	struct stream_change in = full(), out;

	in.when_us = 999;
	cr_assert(eq(int, stream_change_pack(&pk, &in), 0));
	cr_assert(
		eq(int,
		   stream_change_parse((const uint8_t *)sb.data, sb.size, &out),
		   0));
	cr_assert(eq(u32, out.when_us, 999));
	sb.size = 0;
	in.when_us = 1000;
	cr_assert(eq(int, stream_change_pack(&pk, &in), WEFT_EINVAL));
	MAP(7, (kv_str("t", "a"), kv_str("i", "b"), kv_str("s", "c"),
		kv_uint("v", 1), kv_uint("o", 3), kv_uint("w", 5),
		kv_uint("f", 1000)));
	cr_assert(eq(int, parse(), WEFT_ERANGE), "f over 999");
	MAP(7, (kv_str("t", "a"), kv_str("i", "b"), kv_str("s", "c"),
		kv_uint("v", 1), kv_uint("o", 3), kv_uint("w", 5),
		kv_str("f", "7")));
	cr_assert(eq(int, parse(), WEFT_ETYPE), "f as a string");
	MAP(6, (kv_str("t", "a"), kv_str("i", "b"), kv_str("s", "c"),
		kv_uint("v", 1), kv_uint("o", 3), kv_uint("w", 5)));
	cr_assert(
		eq(int,
		   stream_change_parse((const uint8_t *)sb.data, sb.size, &out),
		   0));
	cr_assert(eq(i64, out.when_ms, 5));
	cr_assert(eq(u32, out.when_us, 0), "no f: whole milliseconds");
}

/* keys a later relay adds are skipped, whatever their value */
Test(entry, unknown_keys_are_skipped)
{
	struct stream_change out;

	MAP(6, (kv_str("t", "a"), kv_str("i", "b"), kv_str("s", "c"),
		kv_uint("v", 9), kv_uint("o", 3),
		(msgpack_pack_str_with_body(&pk, "z", 1),
		 msgpack_pack_array(&pk, 2), msgpack_pack_map(&pk, 0),
		 msgpack_pack_nil(&pk))));
	cr_assert(
		eq(int,
		   stream_change_parse((const uint8_t *)sb.data, sb.size, &out),
		   0));
	cr_assert(eq(u64, out.version, 9));
}
