/*
 * frame.h - the framing of every weft connection: a 4-byte big-endian
 * body length, then the body (one msgpack message, see msg.h).
 *
 * struct frame_reader is sans-IO: feed it whatever bytes the socket gave,
 * take whole frames out.  It checks a frame's length against the cap as
 * soon as the 4 header bytes are in, before allocating anything, and its
 * buffer grows with the bytes that actually arrive (at most FRAME_CHUNK
 * up front, then doubling), never with the length a peer claims: an idle
 * peer that sent only a header pins at most FRAME_CHUNK, and no reader
 * ever holds more than one frame.  Errors are sticky: after one, the
 * connection must be closed.
 */
#ifndef WEFT_PROTO_FRAME_H
#define WEFT_PROTO_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* FRAME_HEADER - bytes of the length prefix. */
#define FRAME_HEADER 4

/*
 * FRAME_MAX_DEFAULT - default cap on a body: 1 MiB.  A transaction of 256
 * ops of 2 KiB each or a bootstrap page (bounded in bytes well below this)
 * fits; anything larger is a bug or an attack.  Configurable per service.
 */
#define FRAME_MAX_DEFAULT (1u << 20)

/*
 * FRAME_MAX_HARD - the cap no configuration can raise: 64 MiB.  The u32
 * prefix could claim 4 GiB; this bounds what one connection can pin.
 */
#define FRAME_MAX_HARD (64u << 20)

/*
 * FRAME_CHUNK - the most a reader allocates for a frame before its bytes
 * arrive: 16 KiB covers nearly every message in one step, and bounds what
 * a header alone can pin.
 */
#define FRAME_CHUNK (16u << 10)

/*
 * FRAME_KEEP - a reader keeps its body buffer between frames only up to
 * this size, so an idle connection that once got a big frame is small.
 */
#define FRAME_KEEP (64u << 10)

enum frame_state {
	FRAME_HDR,   /* collecting the 4 length bytes */
	FRAME_BODY,  /* collecting body_len bytes */
	FRAME_READY, /* a whole frame is held; frame_reader_next() drops it */
	FRAME_ERROR, /* bad length: sticky, close the connection */
};

struct frame_reader {
	enum frame_state state;
	uint8_t hdr[FRAME_HEADER]; /* length prefix being collected */
	uint32_t hdr_have;	   /* bytes of hdr filled */
	uint8_t *body;		   /* owned; body_cap bytes */
	uint32_t body_cap;	   /* allocated size of body */
	uint32_t body_len;	   /* length of the current frame */
	uint32_t body_have;	   /* bytes of the current frame received */
	uint32_t max;		   /* cap on body_len */
	int err;		   /* sticky error in FRAME_ERROR */
};

/* frame_reader_init - max is clamped to [1, FRAME_MAX_HARD]. */
void frame_reader_init(struct frame_reader *fr, uint32_t max);
void frame_reader_fini(struct frame_reader *fr);

/*
 * frame_reader_feed - consume bytes from p[0..n), at most up to the end of
 * the current frame; *used says how many.  Returns 0 (check
 * frame_reader_ready), or a sticky error: WEFT_ETOOBIG (length over the
 * cap), WEFT_ERANGE (a zero-length frame), WEFT_ENOMEM.  Feeding while a
 * frame is ready consumes nothing.
 */
int frame_reader_feed(struct frame_reader *fr, const uint8_t *p, size_t n,
		      size_t *used);

static inline bool
frame_reader_ready(const struct frame_reader *fr)
{
	return fr->state == FRAME_READY;
}

/*
 * frame_reader_body - the ready frame's body; borrowed, valid until the
 * next frame_reader_next/fini.  NULL if no frame is ready.
 */
const uint8_t *frame_reader_body(const struct frame_reader *fr, uint32_t *len);

/* frame_reader_next - drop the ready frame and wait for the next one. */
void frame_reader_next(struct frame_reader *fr);

/*
 * frame_reader_trim - free the body buffer if no frame is under way, so a
 * reader between frames holds nothing (for servers with many idle peers;
 * the next frame allocates again).
 */
void frame_reader_trim(struct frame_reader *fr);

/* frame_put_header - write a length prefix into out[0..4). */
void frame_put_header(uint8_t *out, uint32_t len);

/* frame_get_header - read a length prefix from in[0..4). */
uint32_t frame_get_header(const uint8_t *in);

#endif /* WEFT_PROTO_FRAME_H */
