/*
 * mp.h - a bounded, allocation-free msgpack reader for untrusted bytes.
 *
 * msgpack-c's decoder allocates count * 24 bytes as soon as it reads an
 * array header, before any element arrives, and caps nesting at a
 * compile-time 32 (shared/research/c-deps.md §3), so weft decodes peer
 * input with this cursor instead and keeps msgpack-c for encoding.
 *
 * Invariants:
 *  - never reads outside [p, end);
 *  - a claimed array/map count is checked against the bytes left before it
 *    is returned (every element takes at least one byte), so no caller can
 *    be made to loop or allocate on a count the input cannot back;
 *  - nesting is bounded by the caller's depth argument;
 *  - allocates nothing: strings and binaries are returned as pointers into
 *    the input.
 * After an error the reader's position is unspecified; stop using it.
 */
#ifndef WEFT_PROTO_MP_H
#define WEFT_PROTO_MP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct mp_reader {
	const uint8_t *p;   /* next unread byte */
	const uint8_t *end; /* one past the last byte */
};

enum mp_type {
	MP_NIL,
	MP_BOOL,
	MP_UINT,  /* non-negative integer (any width) */
	MP_INT,	  /* negative integer */
	MP_FLOAT, /* float32 or float64 */
	MP_STR,
	MP_BIN,
	MP_ARRAY,
	MP_MAP,
	MP_EXT,
	MP_INVALID, /* 0xc1, never used by msgpack */
};

static inline void
mp_reader_init(struct mp_reader *r, const void *p, size_t len)
{
	r->p = p;
	r->end = r->p + len;
}

static inline size_t
mp_left(const struct mp_reader *r)
{
	return (size_t)(r->end - r->p);
}

/* mp_map_head - does a value starting with byte h open a map (fixmap,
 * map 16, map 32)? */
static inline bool
mp_map_head(uint8_t h)
{
	return (h >= 0x80 && h <= 0x8f) || h == 0xde || h == 0xdf;
}

/* mp_type_name - "str", "uint", ... for error messages. */
const char *mp_type_name(enum mp_type t);

/* mp_peek - type of the next value.  Errors: WEFT_ETRUNCATED. */
int mp_peek(const struct mp_reader *r, enum mp_type *t);

/*
 * The readers below consume one value of the expected type.  Errors:
 * WEFT_ETRUNCATED (input ends inside it), WEFT_ETYPE (another type),
 * WEFT_ERANGE (an integer that does not fit), WEFT_ECOUNT (a count larger
 * than the bytes left).  Pointers returned point into the input.
 */
int mp_read_nil(struct mp_reader *r);
int mp_read_bool(struct mp_reader *r, bool *v);
int mp_read_u64(struct mp_reader *r, uint64_t *v);
int mp_read_i64(struct mp_reader *r, int64_t *v);
int mp_read_f64(struct mp_reader *r, double *v);
int mp_read_str(struct mp_reader *r, const char **s, uint32_t *len);
int mp_read_bin(struct mp_reader *r, const uint8_t **p, uint32_t *len);
int mp_read_array(struct mp_reader *r, uint32_t *n);
int mp_read_map(struct mp_reader *r, uint32_t *n);

/*
 * mp_skip - consume one value of any type, containers included, nested at
 * most `depth` levels (1 = a scalar or an empty container).
 * Errors: ETRUNCATED, ECOUNT, EDEPTH, ETYPE (0xc1).
 */
int mp_skip(struct mp_reader *r, unsigned depth);

/*
 * mp_check_value - consume one *JSON-compatible* value: nil, bool, integer
 * in int64 range, finite float, valid UTF-8 string without NUL, array, or
 * map with string keys; nested at most `depth` levels.  This is the domain
 * of record fields (DESIGN.md §2), so what passes can be stored as jsonb.
 * Errors: as mp_skip, plus ETYPE (bin, ext, non-string key), ERANGE
 * (uint64 above INT64_MAX), EENCODING (bad UTF-8, NUL, NaN or infinity).
 */
int mp_check_value(struct mp_reader *r, unsigned depth);

/* mp_utf8_valid - true if s[0..len) is valid UTF-8 with no NUL byte. */
bool mp_utf8_valid(const char *s, size_t len);

#endif /* WEFT_PROTO_MP_H */
