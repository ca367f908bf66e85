/*
 * entry.h - a change as a Redis stream entry: what weft-relay writes and
 * weft-fanout reads.
 *
 * An entry has one field, STREAM_FIELD ("e"), whose value is a msgpack map
 * with one-letter keys:
 *
 *   t, i, s  table, id, space (str; required)
 *   p        the space the record left, when it moved (str; optional)
 *   v        version (uint; required, > 0)
 *   o        op kind, as in the protocol (uint; required, 1..PROTO_OP_MAX)
 *   x        tombstone (bool)
 *   d        the row after the change (map; absent for tombstones)
 *   c, u     client id and user of the transaction (str)
 *   m        its mutation id (uint)
 *   w        commit time, Unix milliseconds (int)
 *   f        its microseconds past w (uint, 0..999; optional, 0 when
 *            absent: entries written before it was added)
 *
 * One field rather than one per column: Redis spends its time per field
 * (parsing, its listpack), and the relay's drain and the fanout's reads
 * halve with it.  Keys are one lowercase letter; unknown ones are
 * skipped, so keys can be added.
 *
 * Invariants: the parser is bounded and allocation-free (proto/mp.h); what
 * it returns points into its input; data, when present, is one whole
 * msgpack map nested at most STREAM_DATA_DEPTH levels.
 */
#ifndef WEFT_PROTO_ENTRY_H
#define WEFT_PROTO_ENTRY_H

#include <msgpack.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/msg.h"

#define STREAM_FIELD	  "e"
/* nesting of a row's data, the map itself included */
#define STREAM_DATA_DEPTH 64

struct stream_change {
	struct proto_str table, id, space;
	struct proto_str prev; /* p == NULL: not moved */
	uint64_t version;
	uint32_t op;
	bool deleted;
	const uint8_t *data; /* msgpack map, or NULL */
	uint32_t data_len;
	struct proto_str client, user; /* p == NULL: absent */
	uint64_t mid;
	int64_t when_ms;
	uint32_t when_us; /* microseconds past when_ms, 0..999 */
};

/*
 * stream_change_pack - pack c as an entry's value.  c->data, when not
 * NULL, must be one msgpack map; its bytes are copied as they are.
 * Errors: WEFT_EINVAL (data that does not start with a map header, or
 * when_us over 999),
 * WEFT_ENOMEM (the packer's write failed).
 */
int stream_change_pack(msgpack_packer *pk, const struct stream_change *c);

/*
 * stream_change_parse - an entry's value p[0..len) into out (pointers
 * into p).  Errors: WEFT_ETRUNCATED, WEFT_ETYPE (a value or a key of
 * another type), WEFT_ECOUNT, WEFT_EDEPTH, WEFT_ERANGE (as proto/mp.h, and
 * an f over 999),
 * WEFT_EMISSING (t, i, s, v or o absent), WEFT_EINVAL (version 0, an
 * unknown op, a key that is not one lowercase letter), WEFT_EENCODING (a
 * NUL inside a string), WEFT_EDUPFIELD, WEFT_ETRAILING, WEFT_ETOOBIG.
 */
int stream_change_parse(const uint8_t *p, size_t len,
			struct stream_change *out);

#endif /* WEFT_PROTO_ENTRY_H */
