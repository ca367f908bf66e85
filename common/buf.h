/*
 * buf.h - growable byte buffers with a hard cap and a sticky error.
 *
 * A buf grows geometrically up to `max` bytes; past that, appends fail with
 * WEFT_ETOOBIG instead of growing (every buffer in weft is bounded).  The
 * first failure is remembered in `err` and later appends become no-ops, so
 * an encoder can append freely and check buf.err once at the end.
 *
 * Allocation failure returns WEFT_ENOMEM (this module is used by the client
 * library, which must not abort).  Not thread-safe: one owner at a time.
 */
#ifndef WEFT_BUF_H
#define WEFT_BUF_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

struct buf {
	uint8_t *data; /* owned; NULL until the first append */
	size_t len;    /* bytes in use */
	size_t cap;    /* bytes allocated */
	size_t max;    /* hard cap on len; appends past it fail */
	int err;       /* sticky: first error, or 0 */
};

/* BUF_MAX_DEFAULT - the cap when 0 (or more than SIZE_MAX / 2) is passed:
 * 1 GiB, beyond any frame. */
#define BUF_MAX_DEFAULT ((size_t)1 << 30)

void buf_init(struct buf *b, size_t max);
void buf_fini(struct buf *b);

/* buf_reset - empty the buffer and clear the sticky error; keeps memory. */
void buf_reset(struct buf *b);

/* buf_reserve - make room for n more bytes.  Errors: ETOOBIG, ENOMEM. */
int buf_reserve(struct buf *b, size_t n);

/* buf_append - append n bytes.  Errors: ETOOBIG, ENOMEM (also sticky). */
int buf_append(struct buf *b, const void *p, size_t n);

/* buf_appendf - printf-style append (no NUL is counted in len). */
int buf_appendf(struct buf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int buf_vappendf(struct buf *b, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));

/* buf_truncate - drop everything after the first n bytes (n <= len). */
void buf_truncate(struct buf *b, size_t n);

#endif /* WEFT_BUF_H */
