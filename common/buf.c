/*
 * buf.c - growable, capped byte buffers (see buf.h).
 */
#include "common/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/error.h>

#include "common/banned.h"

/* BUF_MIN_CAP - first allocation; small enough for idle sessions. */
#define BUF_MIN_CAP 256

void
buf_init(struct buf *b, size_t max)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	/* SIZE_MAX / 2 keeps len + n and max + 1 from overflowing */
	b->max = max && max <= SIZE_MAX / 2 ? max : BUF_MAX_DEFAULT;
	b->err = 0;
}

void
buf_fini(struct buf *b)
{
	free(b->data);
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
	b->err = 0;
}

void
buf_reset(struct buf *b)
{
	b->len = 0;
	b->err = 0;
}

static int
fail(struct buf *b, int err)
{
	if (!b->err)
		b->err = err;
	return err;
}

/* make cap >= need (need <= limit), doubling up to limit */
static int
grow(struct buf *b, size_t need, size_t limit)
{
	size_t cap;
	uint8_t *p;

	if (need <= b->cap)
		return 0;
	cap = b->cap ? b->cap : BUF_MIN_CAP;
	while (cap < need)
		cap = cap > limit / 2 ? limit : cap * 2;
	if (cap > limit)
		cap = limit;
	p = realloc(b->data, cap);
	if (!p)
		return fail(b, WEFT_ENOMEM);
	b->data = p;
	b->cap = cap;
	return 0;
}

int
buf_reserve(struct buf *b, size_t n)
{
	if (b->err)
		return b->err;
	if (n > b->max - b->len)
		return fail(b, WEFT_ETOOBIG);
	return grow(b, b->len + n, b->max);
}

int
buf_append(struct buf *b, const void *p, size_t n)
{
	int rc;

	if (n == 0)
		return b->err;
	rc = buf_reserve(b, n);
	if (rc)
		return rc;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

int
buf_vappendf(struct buf *b, const char *fmt, va_list ap)
{
	va_list ap2;
	int n, rc;

	if (b->err)
		return b->err;
	va_copy(ap2, ap);
	n = vsnprintf(NULL, 0, fmt, ap2);
	va_end(ap2);
	if (n < 0)
		return fail(b, WEFT_EINVAL);
	if ((size_t)n > b->max - b->len)
		return fail(b, WEFT_ETOOBIG);
	/* vsnprintf writes a NUL after the text: the one byte that may
	 * go past max (it is never counted in len) */
	rc = grow(b, b->len + (size_t)n + 1, b->max + 1);
	if (rc)
		return rc;
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	return 0;
}

int
buf_appendf(struct buf *b, const char *fmt, ...)
{
	va_list ap;
	int rc;

	va_start(ap, fmt);
	rc = buf_vappendf(b, fmt, ap);
	va_end(ap);
	return rc;
}

void
buf_truncate(struct buf *b, size_t n)
{
	if (n < b->len)
		b->len = n;
}
