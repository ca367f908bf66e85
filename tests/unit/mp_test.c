/*
 * mp_test.c - the bounded msgpack reader: every integer width, counts
 * checked against the bytes left, depth caps, JSON-compatibility rules.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <math.h>
#include <msgpack.h>
#include <string.h>

#include <weft/error.h>

#include "proto/mp.h"

/* pack with msgpack-c into a static buffer */
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

static struct mp_reader
reader(void)
{
	struct mp_reader r;

	mp_reader_init(&r, sb.data, sb.size);
	return r;
}

TestSuite(mp, .init = setup, .fini = teardown);

Test(mp, unsigned_integers_of_every_width)
{
	static const uint64_t vals[] = { 0,	      1,	 127,
					 128,	      255,	 256,
					 65535,	      65536,	 4294967295u,
					 4294967296u, UINT64_MAX };
	struct mp_reader r;

	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
		msgpack_pack_uint64(&pk, vals[i]);
	r = reader();
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		uint64_t v;

		cr_assert(eq(i64, mp_read_u64(&r, &v), 0));
		cr_assert(eq(i64, v, vals[i]), "value %zu", i);
	}
	cr_assert(eq(i64, mp_left(&r), 0));
}

Test(mp, signed_integers_of_every_width)
{
	static const int64_t vals[] = { -1,	   -32,	   -33,	     -128,
					-129,	   -32768, -32769,   INT32_MIN,
					INT64_MIN, 5,	   INT64_MAX };
	struct mp_reader r;

	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++)
		msgpack_pack_int64(&pk, vals[i]);
	r = reader();
	for (size_t i = 0; i < sizeof(vals) / sizeof(vals[0]); i++) {
		int64_t v;

		cr_assert(eq(i64, mp_read_i64(&r, &v), 0));
		cr_assert(eq(i64, v, vals[i]), "value %zu", i);
	}
}

Test(mp, signed_encoding_of_positive_value_reads_as_uint)
{
	static const uint8_t in[] = { 0xd0, 0x05 }; /* int8 5 */
	struct mp_reader r;
	uint64_t v;

	mp_reader_init(&r, in, sizeof(in));
	cr_assert(eq(i64, mp_read_u64(&r, &v), 0));
	cr_assert(eq(i64, v, 5));
}

Test(mp, ranges_are_checked)
{
	struct mp_reader r;
	uint64_t u;
	int64_t i;

	msgpack_pack_int64(&pk, -5);
	msgpack_pack_uint64(&pk, UINT64_MAX);
	r = reader();
	cr_assert(eq(i64, mp_read_u64(&r, &u), WEFT_ERANGE),
		  "negative as uint");
	cr_assert(eq(i64, mp_read_i64(&r, &i), 0),
		  "position kept after ERANGE");
	cr_assert(eq(i64, i, -5));
	cr_assert(eq(i64, mp_read_i64(&r, &i), WEFT_ERANGE),
		  "u64 max as int64");
}

Test(mp, wrong_type_is_etype)
{
	struct mp_reader r;
	const char *s;
	uint32_t n;

	msgpack_pack_uint8(&pk, 1);
	r = reader();
	cr_assert(eq(i64, mp_read_str(&r, &s, &n), WEFT_ETYPE));
	cr_assert(eq(i64, mp_read_map(&r, &n), WEFT_ETYPE));
	cr_assert(eq(i64, mp_read_nil(&r), WEFT_ETYPE));
}

Test(mp, strings_and_binaries_point_into_input)
{
	struct mp_reader r;
	const char *s;
	const uint8_t *b;
	uint32_t n;

	msgpack_pack_str(&pk, 5);
	msgpack_pack_str_body(&pk, "hello", 5);
	msgpack_pack_bin(&pk, 3);
	msgpack_pack_bin_body(&pk, "\x00\x01\x02", 3);
	r = reader();
	cr_assert(eq(i64, mp_read_str(&r, &s, &n), 0));
	cr_assert(eq(i64, n, 5));
	cr_assert(eq(i64, memcmp(s, "hello", 5), 0));
	cr_assert(s > sb.data && s < sb.data + sb.size);
	cr_assert(eq(i64, mp_read_bin(&r, &b, &n), 0));
	cr_assert(eq(i64, n, 3));
	cr_assert(eq(i64, b[2], 2));
}

Test(mp, truncated_inputs)
{
	static const uint8_t str[] = { 0xa5, 'a', 'b' }; /* fixstr 5, 2 */
	static const uint8_t u32[] = { 0xce, 0, 0 };
	static const uint8_t f64[] = { 0xcb, 0, 0, 0 };
	struct mp_reader r;
	const char *s;
	uint32_t n;
	uint64_t u;
	double d;

	mp_reader_init(&r, str, sizeof(str));
	cr_assert(eq(i64, mp_read_str(&r, &s, &n), WEFT_ETRUNCATED));
	mp_reader_init(&r, u32, sizeof(u32));
	cr_assert(eq(i64, mp_read_u64(&r, &u), WEFT_ETRUNCATED));
	mp_reader_init(&r, f64, sizeof(f64));
	cr_assert(eq(i64, mp_read_f64(&r, &d), WEFT_ETRUNCATED));
	mp_reader_init(&r, str, 0);
	cr_assert(eq(i64, mp_read_nil(&r), WEFT_ETRUNCATED));
}

Test(mp, claimed_counts_are_checked_against_bytes_left)
{
	/* array32 claiming 4294967295 elements, in 6 bytes */
	static const uint8_t arr[] = { 0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0 };
	/* map16 claiming 3 pairs with 5 bytes left */
	static const uint8_t map[] = { 0xde, 0x00, 0x03, 1, 2, 3, 4, 5 };
	/* str32 claiming 4 GiB */
	static const uint8_t str[] = { 0xdb, 0xff, 0xff, 0xff, 0xff, 'a' };
	struct mp_reader r;
	const char *s;
	uint32_t n;

	mp_reader_init(&r, arr, sizeof(arr));
	cr_assert(eq(i64, mp_read_array(&r, &n), WEFT_ECOUNT));
	mp_reader_init(&r, map, sizeof(map));
	cr_assert(eq(i64, mp_read_map(&r, &n), WEFT_ECOUNT));
	mp_reader_init(&r, str, sizeof(str));
	cr_assert(eq(i64, mp_read_str(&r, &s, &n), WEFT_ETRUNCATED));
	mp_reader_init(&r, arr, sizeof(arr));
	cr_assert(eq(i64, mp_skip(&r, 8), WEFT_ECOUNT));
}

Test(mp, depth_is_capped)
{
	struct mp_reader r;

	for (int i = 0; i < 40; i++)
		msgpack_pack_array(&pk, 1);
	msgpack_pack_nil(&pk);
	r = reader();
	cr_assert(eq(i64, mp_skip(&r, 32), WEFT_EDEPTH));
	r = reader();
	cr_assert(eq(i64, mp_check_value(&r, 32), WEFT_EDEPTH));
	r = reader();
	cr_assert(eq(i64, mp_skip(&r, 41), 0), "41 levels fit a cap of 41");
	cr_assert(eq(i64, mp_left(&r), 0));
}

Test(mp, skip_covers_every_type)
{
	struct mp_reader r;

	msgpack_pack_nil(&pk);
	msgpack_pack_true(&pk);
	msgpack_pack_int8(&pk, -3);
	msgpack_pack_double(&pk, 1.5);
	msgpack_pack_float(&pk, 2.5f);
	msgpack_pack_bin(&pk, 2);
	msgpack_pack_bin_body(&pk, "xy", 2);
	msgpack_pack_ext(&pk, 3, 7);
	msgpack_pack_ext_body(&pk, "abc", 3);
	msgpack_pack_ext(&pk, 4, 7); /* fixext4 */
	msgpack_pack_ext_body(&pk, "abcd", 4);
	msgpack_pack_map(&pk, 1);
	msgpack_pack_uint8(&pk, 1); /* non-string key: fine for skip */
	msgpack_pack_array(&pk, 0);
	r = reader();
	for (int i = 0; i < 9; i++)
		cr_assert(eq(i64, mp_skip(&r, 4), 0), "value %d", i);
	cr_assert(eq(i64, mp_left(&r), 0));
}

Test(mp, never_used_byte_is_rejected)
{
	static const uint8_t in[] = { 0xc1 };
	struct mp_reader r;

	mp_reader_init(&r, in, 1);
	cr_assert(eq(i64, mp_skip(&r, 4), WEFT_ETYPE));
}

Test(mp, json_values_accept_the_record_domain)
{
	struct mp_reader r;

	msgpack_pack_map(&pk, 6);
	msgpack_pack_str(&pk, 1);
	msgpack_pack_str_body(&pk, "a", 1);
	msgpack_pack_nil(&pk);
	msgpack_pack_str(&pk, 1);
	msgpack_pack_str_body(&pk, "b", 1);
	msgpack_pack_false(&pk);
	msgpack_pack_str(&pk, 1);
	msgpack_pack_str_body(&pk, "c", 1);
	msgpack_pack_int64(&pk, -7);
	msgpack_pack_str(&pk, 1);
	msgpack_pack_str_body(&pk, "d", 1);
	msgpack_pack_double(&pk, 0.25);
	msgpack_pack_str(&pk, 1);
	msgpack_pack_str_body(&pk, "e", 1);
	msgpack_pack_str(&pk, 5);
	msgpack_pack_str_body(&pk, "\xc3\xa9t\xc3\xa9", 5);
	msgpack_pack_str(&pk, 1);
	msgpack_pack_str_body(&pk, "f", 1);
	msgpack_pack_array(&pk, 1);
	msgpack_pack_uint8(&pk, 1);
	r = reader();
	cr_assert(eq(i64, mp_check_value(&r, 8), 0));
	cr_assert(eq(i64, mp_left(&r), 0));
}

static int
check_one(void (*pack)(void))
{
	struct mp_reader r;

	msgpack_sbuffer_clear(&sb);
	pack();
	r = reader();
	return mp_check_value(&r, 8);
}

static void
pack_bin(void)
{
	msgpack_pack_bin(&pk, 1);
	msgpack_pack_bin_body(&pk, "x", 1);
}

static void
pack_ext(void)
{
	msgpack_pack_ext(&pk, 1, 1);
	msgpack_pack_ext_body(&pk, "x", 1);
}

static void
pack_int_key(void)
{
	msgpack_pack_map(&pk, 1);
	msgpack_pack_uint8(&pk, 1);
	msgpack_pack_nil(&pk);
}

static void
pack_nan(void)
{
	msgpack_pack_double(&pk, NAN);
}

static void
pack_inf(void)
{
	msgpack_pack_float(&pk, INFINITY);
}

static void
pack_bad_utf8(void)
{
	msgpack_pack_str(&pk, 2);
	msgpack_pack_str_body(&pk, "\xc3\x28", 2);
}

static void
pack_nul(void)
{
	msgpack_pack_str(&pk, 3);
	msgpack_pack_str_body(&pk, "a\0b", 3);
}

static void
pack_big_uint(void)
{
	msgpack_pack_uint64(&pk, (uint64_t)INT64_MAX + 1);
}

Test(mp, json_values_reject_what_jsonb_cannot_hold)
{
	cr_assert(eq(i64, check_one(pack_bin), WEFT_ETYPE));
	cr_assert(eq(i64, check_one(pack_ext), WEFT_ETYPE));
	cr_assert(eq(i64, check_one(pack_int_key), WEFT_ETYPE));
	cr_assert(eq(i64, check_one(pack_nan), WEFT_EENCODING));
	cr_assert(eq(i64, check_one(pack_inf), WEFT_EENCODING));
	cr_assert(eq(i64, check_one(pack_bad_utf8), WEFT_EENCODING));
	cr_assert(eq(i64, check_one(pack_nul), WEFT_EENCODING));
	cr_assert(eq(i64, check_one(pack_big_uint), WEFT_ERANGE));
}

Test(mp, utf8_validation)
{
	cr_assert(mp_utf8_valid("plain", 5));
	cr_assert(mp_utf8_valid("\xe2\x82\xac", 3));	     /* euro */
	cr_assert(mp_utf8_valid("\xf0\x9f\x98\x80", 4));     /* emoji */
	cr_assert_not(mp_utf8_valid("\xc0\xaf", 2));	     /* overlong */
	cr_assert_not(mp_utf8_valid("\xe0\x80\xaf", 3));     /* overlong */
	cr_assert_not(mp_utf8_valid("\xed\xa0\x80", 3));     /* surrogate */
	cr_assert_not(mp_utf8_valid("\xf4\x90\x80\x80", 4)); /* > 10FFFF */
	cr_assert_not(mp_utf8_valid("\xe2\x82", 2));	     /* cut */
	cr_assert_not(mp_utf8_valid("\x80", 1));	     /* stray */
}

Test(mp, ext_lengths_of_every_width_and_their_truncations)
{
	/* ext8 len 2, ext16 len 1, ext32 len 1: type byte + data */
	static const uint8_t ok[] = { 0xc7, 2,	  7, 'a', 'b', 0xc8, 0, 1,  7,
				      'c',  0xc9, 0, 0,	  0,   1,    7, 'd' };
	static const uint8_t cut8[] = { 0xc7, 5, 7, 'a' };
	static const uint8_t cut16[] = { 0xc8, 0 };
	static const uint8_t cut32[] = { 0xc9, 0xff, 0xff, 0xff, 0xff, 7 };
	struct mp_reader r;

	mp_reader_init(&r, ok, sizeof(ok));
	for (int i = 0; i < 3; i++)
		cr_assert(eq(i64, mp_skip(&r, 2), 0), "ext %d", i);
	cr_assert(eq(sz, mp_left(&r), 0));
	mp_reader_init(&r, cut8, sizeof(cut8));
	cr_assert(eq(i64, mp_skip(&r, 2), WEFT_ETRUNCATED));
	mp_reader_init(&r, cut16, sizeof(cut16));
	cr_assert(eq(i64, mp_skip(&r, 2), WEFT_ETRUNCATED));
	mp_reader_init(&r, cut32, sizeof(cut32));
	cr_assert(eq(i64, mp_skip(&r, 2), WEFT_ETRUNCATED));
}

Test(mp, never_used_byte_inside_a_value_is_rejected)
{
	static const uint8_t in[] = { 0x81, 0xa1, 'k', 0x91, 0xc1 };
	struct mp_reader r;

	mp_reader_init(&r, in, sizeof(in));
	cr_assert(eq(i64, mp_check_value(&r, 8), WEFT_ETYPE));
	mp_reader_init(&r, in, sizeof(in));
	cr_assert(eq(i64, mp_skip(&r, 8), WEFT_ETYPE));
}
