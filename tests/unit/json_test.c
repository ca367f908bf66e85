/*
 * json_test.c - record data between msgpack and JSON: round trips,
 * escaping, number forms, and duplicate keys refused.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <math.h>
#include <string.h>

#include <weft/error.h>

#include "proto/json.h"

static msgpack_sbuffer sb;
static msgpack_packer pk;
static struct buf out;

static void
setup(void)
{
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	buf_init(&out, 0);
}

static void
teardown(void)
{
	msgpack_sbuffer_destroy(&sb);
	buf_fini(&out);
}

TestSuite(json, .init = setup, .fini = teardown);

static void
key(const char *k)
{
	msgpack_pack_str_with_body(&pk, k, strlen(k));
}

static const char *
text(void)
{
	buf_append(&out, "", 1); /* NUL for the assertions */
	out.len--;
	return (const char *)out.data;
}

Test(json, every_kind_of_value)
{
	msgpack_pack_map(&pk, 7);
	key("n");
	msgpack_pack_nil(&pk);
	key("t");
	msgpack_pack_true(&pk);
	key("i");
	msgpack_pack_int64(&pk, INT64_MIN);
	key("u");
	msgpack_pack_uint64(&pk, 42);
	key("d");
	msgpack_pack_double(&pk, 0.1);
	key("s");
	key("a\"b\\c\n\x01\xc3\xa9");
	key("l");
	msgpack_pack_array(&pk, 2);
	msgpack_pack_false(&pk);
	msgpack_pack_array(&pk, 0);
	cr_assert(eq(i64, json_from_mp(&out, (const uint8_t *)sb.data, sb.size),
		     0));
	cr_assert_str_eq(text(),
			 "{\"n\":null,\"t\":true,\"i\":-9223372036854775808,"
			 "\"u\":42,\"d\":0.10000000000000001,"
			 "\"s\":\"a\\\"b\\\\c\\n\\u0001\xc3\xa9\","
			 "\"l\":[false,[]]}");
}

Test(json, round_trip_through_jansson)
{
	json_error_t jerr;
	json_t *j;
	msgpack_sbuffer back;
	msgpack_packer bp;

	msgpack_pack_map(&pk, 3);
	key("title");
	key("Fix \"login\"");
	key("votes");
	msgpack_pack_int64(&pk, -7);
	key("tags");
	msgpack_pack_array(&pk, 2);
	key("bug");
	msgpack_pack_double(&pk, 2.5);
	cr_assert(eq(i64, json_from_mp(&out, (const uint8_t *)sb.data, sb.size),
		     0));
	j = json_loadb((const char *)out.data, out.len, JSON_PRESERVE_ORDER,
		       &jerr);
	cr_assert_not_null(j, "%s", jerr.text);
	msgpack_sbuffer_init(&back);
	msgpack_packer_init(&bp, &back, msgpack_sbuffer_write);
	cr_assert(eq(i64, json_to_mp(&bp, j), 0));
	cr_assert(eq(sz, back.size, sb.size));
	cr_assert(eq(i64, memcmp(back.data, sb.data, sb.size), 0),
		  "msgpack -> JSON -> msgpack is the identity here");
	msgpack_sbuffer_destroy(&back);
	json_decref(j);
}

Test(json, duplicate_keys_are_refused_at_any_depth)
{
	msgpack_pack_map(&pk, 1);
	key("outer");
	msgpack_pack_map(&pk, 2);
	key("a");
	msgpack_pack_int(&pk, 1);
	key("a");
	msgpack_pack_int(&pk, 2);
	buf_append(&out, "keep", 4);
	cr_assert(eq(i64, json_from_mp(&out, (const uint8_t *)sb.data, sb.size),
		     WEFT_EVALIDATION));
	cr_assert(eq(sz, out.len, 4), "output left as it was");
}

Test(json, large_maps_are_checked_in_linear_time)
{
	char k[16];

	msgpack_pack_map(&pk, 100000);
	for (int i = 0; i < 100000; i++) {
		snprintf(k, sizeof(k), "k%d", i);
		key(k);
		msgpack_pack_nil(&pk);
	}
	cr_assert(eq(i64, json_from_mp(&out, (const uint8_t *)sb.data, sb.size),
		     0));
	cr_assert(eq(i64, out.data[out.len - 1], '}'));
}

Test(json, invalid_input_is_einval)
{
	static const uint8_t bin[] = { 0xc4, 1, 'x' };
	static const uint8_t trailing[] = { 0xc0, 0xc0 };
	static const uint8_t cut[] = { 0x92, 0xc0 };

	cr_assert(eq(i64, json_from_mp(&out, bin, sizeof(bin)), WEFT_EINVAL));
	cr_assert(eq(i64, json_from_mp(&out, trailing, sizeof(trailing)),
		     WEFT_EINVAL));
	cr_assert(eq(i64, json_from_mp(&out, cut, sizeof(cut)), WEFT_EINVAL));
	cr_assert(eq(sz, out.len, 0));
}

Test(json, text_to_mp_packs_what_it_parses_and_refuses_the_rest)
{
	static const char doc[] = "{\"title\":\"Fix \\\"login\\\"\","
				  "\"votes\":-7,\"tags\":[\"bug\",2.5]}";

	cr_assert(eq(i64, json_text_to_mp(&pk, doc, strlen(doc)), 0));
	cr_assert(eq(i64, json_from_mp(&out, (const uint8_t *)sb.data, sb.size),
		     0));
	cr_assert(strcmp(text(), doc) == 0,
		  "JSON -> msgpack -> JSON is the identity here: %s", text());
	/* a bare value is JSON too */
	cr_assert(eq(i64, json_text_to_mp(&pk, "42", 2), 0));
	cr_assert(eq(i64, json_text_to_mp(&pk, "{\"a\":", 5), WEFT_EINVAL));
	cr_assert(eq(i64, json_text_to_mp(&pk, "", 0), WEFT_EINVAL));
	/* only len bytes are read: the rest of a longer buffer is not JSON */
	cr_assert(eq(i64, json_text_to_mp(&pk, "[1]xyz", 3), 0));
}
