/*
 * json.h - record data between its two forms: msgpack on the wire, JSON
 * in Postgres (jsonb) and SQLite.
 *
 * Both directions cover exactly the JSON-compatible domain that
 * mp_check_value() accepts (nil, bool, int64, finite double, UTF-8
 * string, array, string-keyed map), so a value survives msgpack -> JSON ->
 * msgpack unchanged, except that a double with an integral value may come
 * back as an integer (JSON does not tell 1.0 from 1).
 */
#ifndef WEFT_PROTO_JSON_H
#define WEFT_PROTO_JSON_H

#include <jansson.h>
#include <msgpack.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/*
 * json_from_mp - append the JSON text of one msgpack value p[0..len) to
 * out.  The value must have passed mp_check_value (depth-bounded, valid
 * UTF-8); anything else gives WEFT_EINVAL.  Duplicate keys in a map are
 * refused (WEFT_EVALIDATION): Postgres and SQLite would each keep a
 * different one.  Errors: EINVAL, EVALIDATION, the buffer's errors.
 */
int json_from_mp(struct buf *out, const uint8_t *p, size_t len);

/*
 * json_put_string - append s[0..n) (UTF-8) as a quoted JSON string.
 * Returns the buffer's error state.
 */
int json_put_string(struct buf *out, const char *s, uint32_t n);

/*
 * json_to_mp - pack a jansson value as msgpack.  Errors: WEFT_EINVAL (a
 * value outside the domain, e.g. NaN), the packer's write errors as
 * WEFT_ENOMEM.  Depth is bounded by the caller (jansson parses with
 * JSON_DECODE_ANY and a depth limit of its own).
 */
int json_to_mp(msgpack_packer *pk, const json_t *v);

/*
 * json_text_to_mp - pack the JSON text text[0..len) (any value) as
 * msgpack.  Errors: WEFT_EINVAL (not JSON, or outside the domain), the
 * packer's write errors as WEFT_ENOMEM.
 */
int json_text_to_mp(msgpack_packer *pk, const char *text, size_t len);

#endif /* WEFT_PROTO_JSON_H */
