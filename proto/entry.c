/*
 * entry.c - a change as a Redis stream entry (see entry.h).
 */
#include "proto/entry.h"

#include <string.h>
#include <weft/error.h>

#include "proto/mp.h"

#include "common/banned.h"

/* the packers return their write callback's result: nonzero on failure */
static int
pack_key(msgpack_packer *pk, char k)
{
	return msgpack_pack_str(pk, 1) | msgpack_pack_str_body(pk, &k, 1);
}

static int
pack_str(msgpack_packer *pk, char k, struct proto_str s)
{
	return pack_key(pk, k) | msgpack_pack_str(pk, s.len) |
	       msgpack_pack_str_body(pk, s.p ? s.p : "", s.len);
}

int
stream_change_pack(msgpack_packer *pk, const struct stream_change *c)
{
	size_t n = 9 + (c->prev.p != NULL) + (c->data != NULL) +
		   (c->client.p != NULL) + (c->user.p != NULL);
	int bad;

	if (c->data && (c->data_len == 0 || !mp_map_head(c->data[0])))
		return WEFT_EINVAL; /* not a map: the entry would not parse */
	if (c->when_us > 999)
		return WEFT_EINVAL; /* nor would this */

	bad = msgpack_pack_map(pk, n);
	bad |= pack_str(pk, 't', c->table);
	bad |= pack_str(pk, 'i', c->id);
	bad |= pack_str(pk, 's', c->space);
	if (c->prev.p)
		bad |= pack_str(pk, 'p', c->prev);
	bad |= pack_key(pk, 'v') | msgpack_pack_uint64(pk, c->version);
	bad |= pack_key(pk, 'o') | msgpack_pack_uint32(pk, c->op);
	bad |= pack_key(pk, 'x') |
	       (c->deleted ? msgpack_pack_true(pk) : msgpack_pack_false(pk));
	if (c->data) /* already msgpack: its bytes as they are */
		bad |= pack_key(pk, 'd') |
		       pk->callback(pk->data, (const char *)c->data,
				    c->data_len);
	if (c->client.p)
		bad |= pack_str(pk, 'c', c->client);
	if (c->user.p)
		bad |= pack_str(pk, 'u', c->user);
	bad |= pack_key(pk, 'm') | msgpack_pack_uint64(pk, c->mid);
	bad |= pack_key(pk, 'w') | msgpack_pack_int64(pk, c->when_ms);
	bad |= pack_key(pk, 'f') | msgpack_pack_uint32(pk, c->when_us);
	return bad ? WEFT_ENOMEM : 0;
}

/* the value of key k into out */
static int
parse_one(struct mp_reader *r, char k, struct stream_change *out)
{
	struct proto_str *s = NULL;
	uint64_t u;
	int rc;

	switch (k) {
	case 't':
		s = &out->table;
		break;
	case 'i':
		s = &out->id;
		break;
	case 's':
		s = &out->space;
		break;
	case 'p':
		s = &out->prev;
		break;
	case 'c':
		s = &out->client;
		break;
	case 'u':
		s = &out->user;
		break;
	case 'v':
		return mp_read_u64(r, &out->version);
	case 'm':
		return mp_read_u64(r, &out->mid);
	case 'o':
		if ((rc = mp_read_u64(r, &u)) != 0)
			return rc;
		if (u > UINT32_MAX)
			return WEFT_ERANGE;
		out->op = (uint32_t)u;
		return 0;
	case 'x':
		return mp_read_bool(r, &out->deleted);
	case 'w':
		return mp_read_i64(r, &out->when_ms);
	case 'f':
		if ((rc = mp_read_u64(r, &u)) != 0)
			return rc;
		if (u > 999)
			return WEFT_ERANGE;
		out->when_us = (uint32_t)u;
		return 0;
	case 'd': {
		const uint8_t *start = r->p;
		enum mp_type t;

		if ((rc = mp_peek(r, &t)) != 0)
			return rc;
		if (t != MP_MAP)
			return WEFT_ETYPE;
		if ((rc = mp_skip(r, STREAM_DATA_DEPTH)) != 0)
			return rc;
		out->data = start;
		out->data_len = (uint32_t)(r->p - start);
		return 0;
	}
	default: /* a key of a later version */
		return mp_skip(r, STREAM_DATA_DEPTH);
	}
	if ((rc = mp_read_str(r, &s->p, &s->len)) != 0)
		return rc;
	/* names are C strings downstream */
	return memchr(s->p, '\0', s->len) ? WEFT_EENCODING : 0;
}

int
stream_change_parse(const uint8_t *p, size_t len, struct stream_change *out)
{
	struct mp_reader r;
	uint32_t n, seen = 0;
	int rc;

	memset(out, 0, sizeof(*out));
	if (len > UINT32_MAX)
		return WEFT_ETOOBIG;
	mp_reader_init(&r, p, len);
	if ((rc = mp_read_map(&r, &n)) != 0)
		return rc;
	for (uint32_t i = 0; i < n; i++) {
		const char *k;
		uint32_t klen, bit;

		if ((rc = mp_read_str(&r, &k, &klen)) != 0)
			return rc;
		if (klen != 1 || k[0] < 'a' || k[0] > 'z')
			return WEFT_EINVAL;
		bit = 1u << (k[0] - 'a');
		if (seen & bit)
			return WEFT_EDUPFIELD;
		seen |= bit;
		if ((rc = parse_one(&r, k[0], out)) != 0)
			return rc;
	}
	if (mp_left(&r) != 0)
		return WEFT_ETRAILING;
	if (!out->table.p || !out->id.p || !out->space.p ||
	    !(seen & (1u << ('v' - 'a'))) || !(seen & (1u << ('o' - 'a'))))
		return WEFT_EMISSING;
	if (out->version == 0 || out->op == 0 || out->op > PROTO_OP_MAX)
		return WEFT_EINVAL;
	return 0;
}
