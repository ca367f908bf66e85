/*
 * mp.c - bounded msgpack reader (see mp.h).
 */
#include "proto/mp.h"

#include <math.h>
#include <string.h>

#include <weft/error.h>

#include "common/banned.h"

static const char *const type_names[] = {
	"nil", "bool",	"uint", "int", "float",	  "str",
	"bin", "array", "map",	"ext", "invalid",
};

const char *
mp_type_name(enum mp_type t)
{
	if ((unsigned)t > MP_INVALID)
		return "?";
	return type_names[t];
}

static enum mp_type
type_of(uint8_t b)
{
	if (b <= 0x7f)
		return MP_UINT;
	if (b <= 0x8f)
		return MP_MAP;
	if (b <= 0x9f)
		return MP_ARRAY;
	if (b <= 0xbf)
		return MP_STR;
	if (b >= 0xe0)
		return MP_INT;
	switch (b) {
	case 0xc0:
		return MP_NIL;
	case 0xc2:
	case 0xc3:
		return MP_BOOL;
	case 0xc4:
	case 0xc5:
	case 0xc6:
		return MP_BIN;
	case 0xc7:
	case 0xc8:
	case 0xc9:
	case 0xd4:
	case 0xd5:
	case 0xd6:
	case 0xd7:
	case 0xd8:
		return MP_EXT;
	case 0xca:
	case 0xcb:
		return MP_FLOAT;
	case 0xcc:
	case 0xcd:
	case 0xce:
	case 0xcf:
		return MP_UINT;
	case 0xd0:
	case 0xd1:
	case 0xd2:
	case 0xd3:
		return MP_INT; /* signed encodings; value may be >= 0 */
	case 0xd9:
	case 0xda:
	case 0xdb:
		return MP_STR;
	case 0xdc:
	case 0xdd:
		return MP_ARRAY;
	case 0xde:
	case 0xdf:
		return MP_MAP;
	default:
		return MP_INVALID; /* 0xc1 */
	}
}

int
mp_peek(const struct mp_reader *r, enum mp_type *t)
{
	if (r->p >= r->end)
		return WEFT_ETRUNCATED;
	*t = type_of(*r->p);
	return 0;
}

/* read a big-endian unsigned of n bytes (1, 2, 4, 8) */
static int
take_be(struct mp_reader *r, unsigned n, uint64_t *v)
{
	uint64_t x = 0;

	if (mp_left(r) < n)
		return WEFT_ETRUNCATED;
	for (unsigned i = 0; i < n; i++)
		x = (x << 8) | r->p[i];
	r->p += n;
	*v = x;
	return 0;
}

int
mp_read_nil(struct mp_reader *r)
{
	if (r->p >= r->end)
		return WEFT_ETRUNCATED;
	if (*r->p != 0xc0)
		return WEFT_ETYPE;
	r->p++;
	return 0;
}

int
mp_read_bool(struct mp_reader *r, bool *v)
{
	if (r->p >= r->end)
		return WEFT_ETRUNCATED;
	if (*r->p != 0xc2 && *r->p != 0xc3)
		return WEFT_ETYPE;
	*v = *r->p == 0xc3;
	r->p++;
	return 0;
}

/*
 * read any integer encoding as a sign flag plus magnitude bits:
 * neg=false: value is u; neg=true: value is (int64_t)u (negative)
 */
static int
read_int(struct mp_reader *r, uint64_t *u, bool *neg)
{
	uint8_t b;
	uint64_t x;
	int rc;

	if (r->p >= r->end)
		return WEFT_ETRUNCATED;
	b = *r->p;
	if (b <= 0x7f) {
		r->p++;
		*u = b;
		*neg = false;
		return 0;
	}
	if (b >= 0xe0) {
		r->p++;
		*u = (uint64_t)(int64_t)(int8_t)b;
		*neg = true;
		return 0;
	}
	if (b >= 0xcc && b <= 0xcf) {
		r->p++;
		rc = take_be(r, 1u << (b - 0xcc), &x);
		if (rc)
			return rc;
		*u = x;
		*neg = false;
		return 0;
	}
	if (b >= 0xd0 && b <= 0xd3) {
		unsigned n = 1u << (b - 0xd0);
		int64_t s;

		r->p++;
		rc = take_be(r, n, &x);
		if (rc)
			return rc;
		switch (n) {
		case 1:
			s = (int8_t)(uint8_t)x;
			break;
		case 2:
			s = (int16_t)(uint16_t)x;
			break;
		case 4:
			s = (int32_t)(uint32_t)x;
			break;
		default:
			s = (int64_t)x;
			break;
		}
		*u = (uint64_t)s;
		*neg = s < 0;
		return 0;
	}
	return WEFT_ETYPE;
}

int
mp_read_u64(struct mp_reader *r, uint64_t *v)
{
	const uint8_t *start = r->p;
	uint64_t u;
	bool neg;
	int rc = read_int(r, &u, &neg);

	if (rc)
		return rc;
	if (neg) {
		r->p = start;
		return WEFT_ERANGE;
	}
	*v = u;
	return 0;
}

int
mp_read_i64(struct mp_reader *r, int64_t *v)
{
	const uint8_t *start = r->p;
	uint64_t u;
	bool neg;
	int rc = read_int(r, &u, &neg);

	if (rc)
		return rc;
	if (!neg && u > (uint64_t)INT64_MAX) {
		r->p = start;
		return WEFT_ERANGE;
	}
	*v = (int64_t)u;
	return 0;
}

int
mp_read_f64(struct mp_reader *r, double *v)
{
	uint64_t x;
	int rc;

	if (r->p >= r->end)
		return WEFT_ETRUNCATED;
	if (*r->p == 0xca) {
		uint32_t w;
		float f;

		r->p++;
		rc = take_be(r, 4, &x);
		if (rc)
			return rc;
		w = (uint32_t)x;
		memcpy(&f, &w, sizeof(f));
		*v = f;
		return 0;
	}
	if (*r->p == 0xcb) {
		r->p++;
		rc = take_be(r, 8, &x);
		if (rc)
			return rc;
		memcpy(v, &x, sizeof(*v));
		return 0;
	}
	return WEFT_ETYPE;
}

/* length prefix of str/bin/array/map/ext given the leading byte */
static int
read_len(struct mp_reader *r, enum mp_type want, uint32_t *len)
{
	uint8_t b;
	uint64_t x;
	unsigned n;
	int rc;

	if (r->p >= r->end)
		return WEFT_ETRUNCATED;
	b = *r->p;
	if (type_of(b) != want)
		return WEFT_ETYPE;
	if (want == MP_STR && b <= 0xbf) {
		r->p++;
		*len = b & 0x1f;
		return 0;
	}
	if (want == MP_ARRAY && b <= 0x9f) {
		r->p++;
		*len = b & 0x0f;
		return 0;
	}
	if (want == MP_MAP && b <= 0x8f) {
		r->p++;
		*len = b & 0x0f;
		return 0;
	}
	switch (b) {
	case 0xd9:
	case 0xc4:
		n = 1;
		break;
	case 0xda:
	case 0xc5:
	case 0xdc:
	case 0xde:
		n = 2;
		break;
	default: /* 0xdb, 0xc6, 0xdd, 0xdf */
		n = 4;
		break;
	}
	r->p++;
	rc = take_be(r, n, &x);
	if (rc)
		return rc;
	*len = (uint32_t)x;
	return 0;
}

int
mp_read_str(struct mp_reader *r, const char **s, uint32_t *len)
{
	const uint8_t *start = r->p;
	uint32_t n;
	int rc = read_len(r, MP_STR, &n);

	if (rc)
		return rc;
	if (mp_left(r) < n) {
		r->p = start;
		return WEFT_ETRUNCATED;
	}
	*s = (const char *)r->p;
	*len = n;
	r->p += n;
	return 0;
}

int
mp_read_bin(struct mp_reader *r, const uint8_t **p, uint32_t *len)
{
	const uint8_t *start = r->p;
	uint32_t n;
	int rc = read_len(r, MP_BIN, &n);

	if (rc)
		return rc;
	if (mp_left(r) < n) {
		r->p = start;
		return WEFT_ETRUNCATED;
	}
	*p = r->p;
	*len = n;
	r->p += n;
	return 0;
}

int
mp_read_array(struct mp_reader *r, uint32_t *n)
{
	const uint8_t *start = r->p;
	int rc = read_len(r, MP_ARRAY, n);

	if (rc)
		return rc;
	if (*n > mp_left(r)) { /* each element takes >= 1 byte */
		r->p = start;
		return WEFT_ECOUNT;
	}
	return 0;
}

int
mp_read_map(struct mp_reader *r, uint32_t *n)
{
	const uint8_t *start = r->p;
	int rc = read_len(r, MP_MAP, n);

	if (rc)
		return rc;
	if ((uint64_t)*n * 2 > mp_left(r)) { /* a key and a value each */
		r->p = start;
		return WEFT_ECOUNT;
	}
	return 0;
}

/* skip an ext value: 0xd4..0xd8 fixext, 0xc7..0xc9 ext8/16/32 */
static int
skip_ext(struct mp_reader *r)
{
	uint8_t b = *r->p;
	uint64_t n;
	int rc;

	r->p++;
	if (b >= 0xd4 && b <= 0xd8) {
		n = 1u + (1u << (b - 0xd4)); /* type byte + data */
	} else {
		rc = take_be(r, 1u << (b - 0xc7), &n);
		if (rc)
			return rc;
		n += 1; /* type byte */
	}
	if (mp_left(r) < n)
		return WEFT_ETRUNCATED;
	r->p += n;
	return 0;
}

/* shared walker: json=true applies the JSON-compatibility rules */
static int
walk(struct mp_reader *r, unsigned depth, bool json)
{
	enum mp_type t;
	uint32_t n;
	int rc;

	if (depth == 0)
		return WEFT_EDEPTH;
	rc = mp_peek(r, &t);
	if (rc)
		return rc;
	switch (t) {
	case MP_NIL:
		return mp_read_nil(r);
	case MP_BOOL:
		return mp_read_bool(r, &(bool){ false });
	case MP_UINT:
	case MP_INT: {
		int64_t v;
		uint64_t u;
		bool neg;

		if (json)
			return mp_read_i64(r, &v);
		return read_int(r, &u, &neg);
	}
	case MP_FLOAT: {
		double d;

		rc = mp_read_f64(r, &d);
		if (!rc && json && !isfinite(d))
			return WEFT_EENCODING;
		return rc;
	}
	case MP_STR: {
		const char *s;

		rc = mp_read_str(r, &s, &n);
		if (!rc && json && !mp_utf8_valid(s, n))
			return WEFT_EENCODING;
		return rc;
	}
	case MP_BIN:
		if (json)
			return WEFT_ETYPE;
		return mp_read_bin(r, &(const uint8_t *){ NULL }, &n);
	case MP_EXT:
		if (json)
			return WEFT_ETYPE;
		return skip_ext(r);
	case MP_ARRAY:
		rc = mp_read_array(r, &n);
		for (uint32_t i = 0; !rc && i < n; i++)
			rc = walk(r, depth - 1, json);
		return rc;
	case MP_MAP:
		rc = mp_read_map(r, &n);
		for (uint32_t i = 0; !rc && i < n; i++) {
			if (json) {
				enum mp_type kt;

				rc = mp_peek(r, &kt);
				if (!rc && kt != MP_STR)
					rc = WEFT_ETYPE;
				if (!rc)
					rc = walk(r, 1, true);
			} else {
				rc = walk(r, depth - 1, false);
			}
			if (!rc)
				rc = walk(r, depth - 1, json);
		}
		return rc;
	case MP_INVALID:
		return WEFT_ETYPE;
	}
	return WEFT_ETYPE;
}

int
mp_skip(struct mp_reader *r, unsigned depth)
{
	return walk(r, depth, false);
}

int
mp_check_value(struct mp_reader *r, unsigned depth)
{
	return walk(r, depth, true);
}

bool
mp_utf8_valid(const char *str, size_t len)
{
	const unsigned char *s = (const unsigned char *)str;
	size_t i = 0;

	while (i < len) {
		unsigned c = s[i];
		unsigned need;
		uint32_t cp;

		if (c == 0)
			return false;
		if (c < 0x80) {
			i++;
			continue;
		}
		if (c >= 0xc2 && c <= 0xdf) {
			need = 1;
			cp = c & 0x1f;
		} else if (c >= 0xe0 && c <= 0xef) {
			need = 2;
			cp = c & 0x0f;
		} else if (c >= 0xf0 && c <= 0xf4) {
			need = 3;
			cp = c & 0x07;
		} else {
			return false;
		}
		if (len - i <= need)
			return false;
		for (unsigned k = 1; k <= need; k++) {
			if ((s[i + k] & 0xc0) != 0x80)
				return false;
			cp = (cp << 6) | (s[i + k] & 0x3f);
		}
		/* overlong, surrogate, or beyond U+10FFFF */
		if ((need == 2 && cp < 0x800) || (need == 3 && cp < 0x10000) ||
		    (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
			return false;
		i += need + 1;
	}
	return true;
}
