/*
 * frame_test.c - the sans-IO frame reader: any chunking gives the same
 * frames; the cap is checked before allocation; errors are sticky.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <string.h>

#include <weft/error.h>

#include "proto/frame.h"

static size_t
make_frame(uint8_t *out, const char *body)
{
	size_t n = strlen(body);

	frame_put_header(out, (uint32_t)n);
	memcpy(out + FRAME_HEADER, body, n);
	return FRAME_HEADER + n;
}

Test(frame, header_round_trip)
{
	uint8_t h[4];

	frame_put_header(h, 0x01020304);
	cr_assert(eq(i64, h[0], 1));
	cr_assert(eq(i64, h[3], 4));
	cr_assert(eq(i64, frame_get_header(h), 0x01020304));
}

Test(frame, one_byte_at_a_time)
{
	struct frame_reader fr;
	uint8_t in[64];
	size_t n = make_frame(in, "hello world"), used;
	uint32_t len;
	const uint8_t *body;

	frame_reader_init(&fr, 1024);
	for (size_t i = 0; i < n; i++) {
		cr_assert_not(frame_reader_ready(&fr), "ready too early at %zu",
			      i);
		cr_assert(eq(i64, frame_reader_feed(&fr, in + i, 1, &used), 0));
		cr_assert(eq(i64, used, 1));
	}
	cr_assert(frame_reader_ready(&fr));
	body = frame_reader_body(&fr, &len);
	cr_assert(eq(i64, len, 11));
	cr_assert(eq(i64, memcmp(body, "hello world", 11), 0));
	frame_reader_fini(&fr);
}

Test(frame, several_frames_in_one_buffer_stop_at_each_boundary)
{
	struct frame_reader fr;
	uint8_t in[128];
	size_t n = 0, off = 0, used;
	const char *bodies[] = { "a", "bb", "ccc" };
	int got = 0;

	for (int i = 0; i < 3; i++)
		n += make_frame(in + n, bodies[i]);
	frame_reader_init(&fr, 1024);
	while (off < n) {
		cr_assert(eq(i64,
			     frame_reader_feed(&fr, in + off, n - off, &used),
			     0));
		off += used;
		if (frame_reader_ready(&fr)) {
			uint32_t len;
			const uint8_t *b = frame_reader_body(&fr, &len);

			cr_assert(eq(i64, len, strlen(bodies[got])));
			cr_assert(eq(i64, memcmp(b, bodies[got], len), 0));
			got++;
			frame_reader_next(&fr);
		}
	}
	cr_assert(eq(i64, got, 3));
	frame_reader_fini(&fr);
}

Test(frame, feeding_a_ready_reader_consumes_nothing)
{
	struct frame_reader fr;
	uint8_t in[64];
	size_t n = make_frame(in, "x"), used;

	n += make_frame(in + n, "y");
	frame_reader_init(&fr, 16);
	cr_assert(eq(i64, frame_reader_feed(&fr, in, n, &used), 0));
	cr_assert(eq(i64, used, 5), "stops after the first frame");
	cr_assert(
		eq(i64, frame_reader_feed(&fr, in + used, n - used, &used), 0));
	cr_assert(eq(i64, used, 0));
	frame_reader_fini(&fr);
}

Test(frame, oversized_length_fails_before_any_allocation)
{
	struct frame_reader fr;
	static const uint8_t huge[] = { 0xff, 0xff, 0xff, 0xff, 'x' };
	size_t used;

	frame_reader_init(&fr, 1024);
	cr_assert(eq(i64, frame_reader_feed(&fr, huge, sizeof(huge), &used),
		     WEFT_ETOOBIG));
	cr_assert_null(fr.body, "nothing was allocated for the claim");
	cr_assert(eq(i64, fr.body_cap, 0));
	cr_assert(eq(i64, frame_reader_feed(&fr, huge, 1, &used), WEFT_ETOOBIG),
		  "errors are sticky");
	cr_assert(eq(i64, used, 0));
	frame_reader_fini(&fr);
}

Test(frame, cap_is_exact)
{
	struct frame_reader fr;
	uint8_t in[FRAME_HEADER + 9];
	size_t used;

	frame_put_header(in, 8);
	frame_reader_init(&fr, 8);
	cr_assert(eq(i64, frame_reader_feed(&fr, in, FRAME_HEADER, &used), 0));
	frame_reader_fini(&fr);
	frame_put_header(in, 9);
	frame_reader_init(&fr, 8);
	cr_assert(eq(i64, frame_reader_feed(&fr, in, FRAME_HEADER, &used),
		     WEFT_ETOOBIG));
	frame_reader_fini(&fr);
}

Test(frame, zero_length_frame_is_an_error)
{
	struct frame_reader fr;
	static const uint8_t zero[] = { 0, 0, 0, 0 };
	size_t used;

	frame_reader_init(&fr, 1024);
	cr_assert(eq(i64, frame_reader_feed(&fr, zero, 4, &used), WEFT_ERANGE));
	frame_reader_fini(&fr);
}

Test(frame, configured_cap_is_clamped_to_the_hard_cap)
{
	struct frame_reader fr;

	frame_reader_init(&fr, UINT32_MAX);
	cr_assert(eq(i64, fr.max, FRAME_MAX_HARD));
	frame_reader_fini(&fr);
}

Test(frame, big_buffer_is_released_after_the_frame)
{
	struct frame_reader fr;
	static uint8_t in[FRAME_HEADER + FRAME_KEEP + 1];
	size_t used;

	frame_put_header(in, FRAME_KEEP + 1);
	frame_reader_init(&fr, FRAME_MAX_DEFAULT);
	cr_assert(eq(i64, frame_reader_feed(&fr, in, sizeof(in), &used), 0));
	cr_assert(frame_reader_ready(&fr));
	frame_reader_next(&fr);
	cr_assert_null(fr.body, "idle readers keep at most FRAME_KEEP");
	frame_reader_fini(&fr);
}

Test(frame, memory_follows_bytes_received_not_bytes_claimed)
{
	struct frame_reader fr;
	static uint8_t in[FRAME_HEADER + (1u << 20)];
	const uint32_t len = 1u << 20;
	size_t off = 0, used;
	uint32_t got;
	const uint8_t *body;

	for (uint32_t i = 0; i < len; i++)
		in[FRAME_HEADER + i] = (uint8_t)(i * 7 + 3);
	frame_put_header(in, len);
	frame_reader_init(&fr, FRAME_MAX_DEFAULT);
	/* a header alone pins at most FRAME_CHUNK */
	cr_assert(eq(i64, frame_reader_feed(&fr, in, FRAME_HEADER, &used), 0));
	off = used;
	cr_assert(le(u32, fr.body_cap, FRAME_CHUNK));
	/* then at most twice what arrived (or FRAME_CHUNK) */
	while (off < sizeof(in)) {
		size_t chunk = 1000 + off % 5000;

		if (chunk > sizeof(in) - off)
			chunk = sizeof(in) - off;
		cr_assert(eq(i64,
			     frame_reader_feed(&fr, in + off, chunk, &used),
			     0));
		off += used;
		cr_assert(le(u64, fr.body_cap,
			     2 * (uint64_t)fr.body_have + FRAME_CHUNK),
			  "cap %u for %u bytes received", fr.body_cap,
			  fr.body_have);
	}
	cr_assert(frame_reader_ready(&fr));
	body = frame_reader_body(&fr, &got);
	cr_assert(eq(u32, got, len));
	cr_assert(eq(i64, memcmp(body, in + FRAME_HEADER, len), 0),
		  "bytes survive the growth");
	frame_reader_fini(&fr);
}

Test(frame, zero_length_error_is_sticky)
{
	struct frame_reader fr;
	static const uint8_t in[] = { 0, 0, 0, 0, 0, 0, 0, 1, 'x' };
	size_t used;

	frame_reader_init(&fr, 1024);
	cr_assert(eq(i64, frame_reader_feed(&fr, in, sizeof(in), &used),
		     WEFT_ERANGE));
	cr_assert(
		eq(i64, frame_reader_feed(&fr, in + 4, 5, &used), WEFT_ERANGE));
	cr_assert(eq(sz, used, 0));
	frame_reader_fini(&fr);
}

/* trim frees the body between frames only, and the next frame still
 * arrives whole */
Test(frame, trim_frees_between_frames_only)
{
	struct frame_reader fr;
	uint8_t in[64];
	size_t n = make_frame(in, "abcdef"), used;
	uint32_t len;

	frame_reader_init(&fr, 1024);
	cr_assert(eq(i64, frame_reader_feed(&fr, in, n, &used), 0));
	frame_reader_next(&fr);
	cr_assert_not_null(fr.body, "kept between frames");
	frame_reader_trim(&fr);
	cr_assert_null(fr.body);
	cr_assert(eq(u32, fr.body_cap, 0));
	/* half a frame: trim keeps what has arrived */
	cr_assert(eq(i64, frame_reader_feed(&fr, in, 6, &used), 0));
	frame_reader_trim(&fr);
	cr_assert_not_null(fr.body);
	cr_assert(eq(i64, frame_reader_feed(&fr, in + 6, n - 6, &used), 0));
	cr_assert(frame_reader_ready(&fr));
	cr_assert(
		eq(i64, memcmp(frame_reader_body(&fr, &len), "abcdef", 6), 0));
	frame_reader_fini(&fr);
}
