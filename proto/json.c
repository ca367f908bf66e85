/*
 * json.c - msgpack <-> JSON for record data (see json.h).
 */
#include "proto/json.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/error.h>

#include "common/hash.h"
#include "proto/mp.h"
#include "proto/msg.h"

#include "common/banned.h"

int
json_put_string(struct buf *out, const char *s, uint32_t n)
{
	static const char hex[] = "0123456789abcdef";
	uint32_t i, run = 0;

	buf_append(out, "\"", 1);
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[6] = { '\\', 'u', '0', '0', 0, 0 };

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		buf_append(out, s + run, i - run); /* the plain run before */
		run = i + 1;
		switch (c) {
		case '"':
			buf_append(out, "\\\"", 2);
			break;
		case '\\':
			buf_append(out, "\\\\", 2);
			break;
		case '\n':
			buf_append(out, "\\n", 2);
			break;
		case '\t':
			buf_append(out, "\\t", 2);
			break;
		case '\r':
			buf_append(out, "\\r", 2);
			break;
		default:
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			buf_append(out, esc, 6);
			break;
		}
	}
	buf_append(out, s + run, n - run);
	return buf_append(out, "\"", 1);
}

/* a set of map keys, for the duplicate check: open addressing, sized
 * for the map at hand (its pair count is bounded by the frame it came in) */
struct keyslot {
	const char *p;
	uint32_t len;
};

struct keyset {
	struct keyslot *slot;
	uint32_t mask; /* slots - 1, a power of two minus one */
};

/* KEYSET_LOCAL - slots on the stack: maps of up to half as many keys (a
 * record's usual size) need no allocation */
#define KEYSET_LOCAL 32

static int
keyset_init(struct keyset *ks, uint32_t n, struct keyslot *local)
{
	uint32_t cap = 8;

	while (cap < 2 * (uint64_t)n)
		cap *= 2;
	if (cap <= KEYSET_LOCAL) {
		ks->slot = local;
		memset(ks->slot, 0, cap * sizeof(*ks->slot));
	} else {
		ks->slot = calloc(cap, sizeof(*ks->slot));
	}
	ks->mask = cap - 1;
	return ks->slot ? 0 : WEFT_ENOMEM;
}

/* an integer's decimal digits (printf was a tenth of converting a
 * bootstrap's rows) */
static int
put_i64(struct buf *out, int64_t v)
{
	char t[24];
	size_t i = sizeof(t);
	uint64_t u = v < 0 ? 0 - (uint64_t)v : (uint64_t)v;

	do {
		t[--i] = (char)('0' + u % 10);
		u /= 10;
	} while (u);
	if (v < 0)
		t[--i] = '-';
	return buf_append(out, t + i, sizeof(t) - i);
}

/* add k; false if it was already there */
static bool
keyset_add(struct keyset *ks, const char *k, uint32_t len)
{
	uint32_t h = hash_bytes(HASH_INIT, k, len);

	for (h &= ks->mask;; h = (h + 1) & ks->mask) {
		if (!ks->slot[h].p) {
			ks->slot[h].p = k;
			ks->slot[h].len = len;
			return true;
		}
		if (ks->slot[h].len == len &&
		    memcmp(ks->slot[h].p, k, len) == 0)
			return false;
	}
}

static int
convert(struct mp_reader *r, struct buf *out, unsigned depth)
{
	enum mp_type t;
	uint32_t n;
	int rc;

	if (depth == 0)
		return WEFT_EINVAL;
	if (mp_peek(r, &t))
		return WEFT_EINVAL;
	switch (t) {
	case MP_NIL:
		mp_read_nil(r);
		return buf_append(out, "null", 4);
	case MP_BOOL: {
		bool b;

		mp_read_bool(r, &b);
		return b ? buf_append(out, "true", 4)
			 : buf_append(out, "false", 5);
	}
	case MP_UINT:
	case MP_INT: {
		int64_t v;

		if (mp_read_i64(r, &v))
			return WEFT_EINVAL;
		return put_i64(out, v);
	}
	case MP_FLOAT: {
		double d;

		if (mp_read_f64(r, &d) || !isfinite(d))
			return WEFT_EINVAL;
		/* %.17g round-trips every double */
		return buf_appendf(out, "%.17g", d);
	}
	case MP_STR: {
		const char *s;

		if (mp_read_str(r, &s, &n) || !mp_utf8_valid(s, n))
			return WEFT_EINVAL;
		return json_put_string(out, s, n);
	}
	case MP_ARRAY:
		if (mp_read_array(r, &n))
			return WEFT_EINVAL;
		buf_append(out, "[", 1);
		for (uint32_t i = 0; i < n; i++) {
			if (i)
				buf_append(out, ",", 1);
			rc = convert(r, out, depth - 1);
			if (rc)
				return rc;
		}
		return buf_append(out, "]", 1);
	case MP_MAP: {
		struct keyset ks;
		struct keyslot local[KEYSET_LOCAL];

		if (mp_read_map(r, &n))
			return WEFT_EINVAL;
		if (keyset_init(&ks, n, local))
			return WEFT_ENOMEM;
		buf_append(out, "{", 1);
		rc = 0;
		for (uint32_t i = 0; i < n && !rc; i++) {
			const char *k;
			uint32_t klen;

			if (mp_read_str(r, &k, &klen) ||
			    !mp_utf8_valid(k, klen)) {
				rc = WEFT_EINVAL;
				break;
			}
			if (!keyset_add(&ks, k, klen)) {
				rc = WEFT_EVALIDATION; /* duplicate key */
				break;
			}
			if (i)
				buf_append(out, ",", 1);
			json_put_string(out, k, klen);
			buf_append(out, ":", 1);
			rc = convert(r, out, depth - 1);
		}
		if (ks.slot != local)
			free(ks.slot);
		return rc ? rc : buf_append(out, "}", 1);
	}
	default:
		return WEFT_EINVAL;
	}
}

int
json_from_mp(struct buf *out, const uint8_t *p, size_t len)
{
	struct mp_reader r;
	size_t mark = out->len;
	int rc;

	mp_reader_init(&r, p, len);
	rc = convert(&r, out, PROTO_MAX_DEPTH);
	if (!rc && r.p != r.end)
		rc = WEFT_EINVAL;
	if (!rc)
		rc = out->err;
	if (rc && rc != out->err)
		buf_truncate(out, mark);
	return rc;
}

int
json_to_mp(msgpack_packer *pk, const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_NULL:
		return msgpack_pack_nil(pk) ? WEFT_ENOMEM : 0;
	case JSON_TRUE:
		return msgpack_pack_true(pk) ? WEFT_ENOMEM : 0;
	case JSON_FALSE:
		return msgpack_pack_false(pk) ? WEFT_ENOMEM : 0;
	case JSON_INTEGER:
		return msgpack_pack_int64(pk, json_integer_value(v))
			       ? WEFT_ENOMEM
			       : 0;
	case JSON_REAL:
		if (!isfinite(json_real_value(v)))
			return WEFT_EINVAL;
		return msgpack_pack_double(pk, json_real_value(v)) ? WEFT_ENOMEM
								   : 0;
	case JSON_STRING:
		return msgpack_pack_str_with_body(pk, json_string_value(v),
						  json_string_length(v))
			       ? WEFT_ENOMEM
			       : 0;
	case JSON_ARRAY: {
		size_t i;
		json_t *e;
		int rc;

		if (msgpack_pack_array(pk, json_array_size(v)))
			return WEFT_ENOMEM;
		json_array_foreach(v, i, e)
		{
			rc = json_to_mp(pk, e);
			if (rc)
				return rc;
		}
		return 0;
	}
	case JSON_OBJECT: {
		const char *k;
		json_t *e;
		int rc;

		if (msgpack_pack_map(pk, json_object_size(v)))
			return WEFT_ENOMEM;
		json_object_foreach((json_t *)(uintptr_t)v, k, e)
		{
			if (msgpack_pack_str_with_body(pk, k, strlen(k)))
				return WEFT_ENOMEM;
			rc = json_to_mp(pk, e);
			if (rc)
				return rc;
		}
		return 0;
	}
	}
	return WEFT_EINVAL;
}

int
json_text_to_mp(msgpack_packer *pk, const char *text, size_t len)
{
	json_error_t jerr;
	json_t *j = json_loadb(text, len, JSON_DECODE_ANY, &jerr);
	int rc;

	if (!j)
		return WEFT_EINVAL;
	rc = json_to_mp(pk, j);
	json_decref(j);
	return rc;
}
