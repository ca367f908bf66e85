/*
 * buf_test.c - growable buffers: growth, the hard cap, the sticky error.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <string.h>

#include <weft/error.h>

#include "common/buf.h"

Test(buf, appends_and_grows)
{
	struct buf b;
	char chunk[100];

	memset(chunk, 'x', sizeof(chunk));
	buf_init(&b, 0);
	for (int i = 0; i < 100; i++)
		cr_assert(eq(i64, buf_append(&b, chunk, sizeof(chunk)), 0));
	cr_assert(eq(i64, b.len, 10000));
	cr_assert(ge(i64, b.cap, b.len));
	cr_assert(eq(i64, b.data[9999], 'x'));
	buf_fini(&b);
	cr_assert_null(b.data);
}

Test(buf, cap_is_enforced_and_error_is_sticky)
{
	struct buf b;

	buf_init(&b, 10);
	cr_assert(eq(i64, buf_append(&b, "12345678", 8), 0));
	cr_assert(eq(i64, buf_append(&b, "abc", 3), WEFT_ETOOBIG));
	cr_assert(eq(i64, b.len, 8), "a failed append must not change len");
	cr_assert(eq(i64, buf_append(&b, "z", 1), WEFT_ETOOBIG),
		  "later appends fail too (sticky)");
	cr_assert(eq(i64, b.err, WEFT_ETOOBIG));
	buf_reset(&b);
	cr_assert(eq(i64, b.err, 0));
	cr_assert(eq(i64, buf_append(&b, "0123456789", 10), 0));
	cr_assert(le(i64, b.cap, 10), "never allocates past the cap");
	buf_fini(&b);
}

Test(buf, appendf_formats_without_counting_nul)
{
	struct buf b;

	buf_init(&b, 0);
	cr_assert(eq(i64, buf_appendf(&b, "a=%d ", 1), 0));
	cr_assert(eq(i64, buf_appendf(&b, "b=%s", "two"), 0));
	cr_assert(eq(i64, b.len, 9));
	cr_assert(eq(i64, memcmp(b.data, "a=1 b=two", 9), 0));
	buf_fini(&b);
}

Test(buf, appendf_respects_cap)
{
	struct buf b;

	buf_init(&b, 4);
	cr_assert(eq(i64, buf_appendf(&b, "%s", "too long"), WEFT_ETOOBIG));
	cr_assert(eq(i64, b.len, 0));
	buf_fini(&b);
}

Test(buf, truncate)
{
	struct buf b;

	buf_init(&b, 0);
	buf_append(&b, "hello", 5);
	buf_truncate(&b, 2);
	cr_assert(eq(i64, b.len, 2));
	buf_truncate(&b, 10);
	cr_assert(eq(i64, b.len, 2), "truncate never grows");
	buf_fini(&b);
}

Test(buf, appendf_may_fill_the_buffer_exactly)
{
	struct buf b;

	buf_init(&b, 4);
	cr_assert(eq(i64, buf_appendf(&b, "%s", "abcd"), 0));
	cr_assert(eq(sz, b.len, 4));
	cr_assert(eq(i64, memcmp(b.data, "abcd", 4), 0));
	cr_assert(eq(i64, buf_appendf(&b, "x"), WEFT_ETOOBIG));
	buf_fini(&b);
}
