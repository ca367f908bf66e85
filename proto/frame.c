/*
 * frame.c - length-prefixed framing, sans-IO (see frame.h).
 *
 * State diagram:
 *
 *            4 header bytes, 0 < len <= max
 *   FRAME_HDR --------------------------------> FRAME_BODY
 *      ^  |                                       | len bytes
 *      |  | len == 0 or len > max                 v
 *      |  +-------------> FRAME_ERROR         FRAME_READY
 *      +------------------------------------------+
 *                  frame_reader_next()
 *
 * Transitions: frame_reader_feed (HDR->BODY, HDR->ERROR, BODY->READY),
 * frame_reader_next (READY->HDR).
 */
#include "proto/frame.h"

#include <stdlib.h>
#include <string.h>

#include <weft/error.h>

#include "common/banned.h"

void
frame_put_header(uint8_t *out, uint32_t len)
{
	out[0] = (uint8_t)(len >> 24);
	out[1] = (uint8_t)(len >> 16);
	out[2] = (uint8_t)(len >> 8);
	out[3] = (uint8_t)len;
}

uint32_t
frame_get_header(const uint8_t *in)
{
	return (uint32_t)in[0] << 24 | (uint32_t)in[1] << 16 |
	       (uint32_t)in[2] << 8 | (uint32_t)in[3];
}

void
frame_reader_init(struct frame_reader *fr, uint32_t max)
{
	memset(fr, 0, sizeof(*fr));
	fr->state = FRAME_HDR;
	if (max == 0)
		max = 1;
	fr->max = max > FRAME_MAX_HARD ? FRAME_MAX_HARD : max;
}

void
frame_reader_fini(struct frame_reader *fr)
{
	free(fr->body);
	fr->body = NULL;
	fr->body_cap = 0;
}

static int
fail(struct frame_reader *fr, int err)
{
	fr->state = FRAME_ERROR;
	fr->err = err;
	return err;
}

int
frame_reader_feed(struct frame_reader *fr, const uint8_t *p, size_t n,
		  size_t *used)
{
	size_t off = 0;

	*used = 0;
	if (fr->state == FRAME_ERROR)
		return fr->err;
	while (off < n && fr->state != FRAME_READY) {
		if (fr->state == FRAME_HDR) {
			size_t take = FRAME_HEADER - fr->hdr_have;

			if (take > n - off)
				take = n - off;
			memcpy(fr->hdr + fr->hdr_have, p + off, take);
			fr->hdr_have += (uint32_t)take;
			off += take;
			if (fr->hdr_have < FRAME_HEADER)
				break;
			fr->body_len = frame_get_header(fr->hdr);
			if (fr->body_len == 0) {
				*used = off;
				return fail(fr, WEFT_ERANGE);
			}
			if (fr->body_len > fr->max) {
				*used = off;
				return fail(fr, WEFT_ETOOBIG);
			}
			/* memory follows the bytes that arrive, not the
			 * length claimed: start with at most FRAME_CHUNK */
			if (fr->body_cap < FRAME_CHUNK &&
			    fr->body_cap < fr->body_len) {
				uint32_t want = fr->body_len < FRAME_CHUNK
							? fr->body_len
							: FRAME_CHUNK;
				uint8_t *b = malloc(want); /* nothing to keep */

				if (!b) {
					*used = off;
					return fail(fr, WEFT_ENOMEM);
				}
				free(fr->body);
				fr->body = b;
				fr->body_cap = want;
			}
			fr->body_have = 0;
			fr->state = FRAME_BODY;
		} else {
			size_t take = fr->body_len - fr->body_have;

			if (take > n - off)
				take = n - off;
			if (fr->body_have + take > fr->body_cap) {
				/* double, up to the frame's length */
				uint64_t cap = (uint64_t)fr->body_cap * 2;
				uint8_t *b;

				if (cap < fr->body_have + take)
					cap = fr->body_have + take;
				if (cap > fr->body_len)
					cap = fr->body_len;
				b = realloc(fr->body, (size_t)cap);
				if (!b) {
					*used = off;
					return fail(fr, WEFT_ENOMEM);
				}
				fr->body = b;
				fr->body_cap = (uint32_t)cap;
			}
			memcpy(fr->body + fr->body_have, p + off, take);
			fr->body_have += (uint32_t)take;
			off += take;
			if (fr->body_have == fr->body_len)
				fr->state = FRAME_READY;
		}
	}
	*used = off;
	return 0;
}

const uint8_t *
frame_reader_body(const struct frame_reader *fr, uint32_t *len)
{
	if (fr->state != FRAME_READY) {
		*len = 0;
		return NULL;
	}
	*len = fr->body_len;
	return fr->body;
}

void
frame_reader_trim(struct frame_reader *fr)
{
	if (fr->state != FRAME_HDR || fr->hdr_have != 0)
		return;
	free(fr->body);
	fr->body = NULL;
	fr->body_cap = 0;
}

void
frame_reader_next(struct frame_reader *fr)
{
	if (fr->state != FRAME_READY)
		return;
	if (fr->body_cap > FRAME_KEEP) {
		free(fr->body);
		fr->body = NULL;
		fr->body_cap = 0;
	}
	fr->hdr_have = 0;
	fr->body_len = 0;
	fr->body_have = 0;
	fr->state = FRAME_HDR;
}
