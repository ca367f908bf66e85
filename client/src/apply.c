/*
 * apply.c - the ops of DESIGN.md §3 applied to a local row, the way
 * weft_apply() in deploy/migrations/0002_core.sql applies them to the
 * server's row, so that the view predicts what the server will hold.
 *
 * Authorisation and expect_version are the server's to judge: the client
 * cannot know the current role or version, and a wrong guess here would
 * only hide a write the server accepts.  Everything else matches,
 * including the errors (a set on a missing record is ENOTFOUND, an incr
 * of a non-number EVALIDATION).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "client/src/internal.h"
#include "proto/json.h"

#include "common/banned.h"

json_t *
mp_to_json(const uint8_t *p, size_t len)
{
	struct buf b;
	json_t *j = NULL;

	buf_init(&b, 0);
	if (json_from_mp(&b, p, len) == 0 && !b.err)
		j = json_loadb((const char *)b.data, b.len, JSON_DECODE_ANY,
			       NULL);
	buf_fini(&b);
	return j;
}

int
buf_mp_write(void *data, const char *p, size_t len)
{
	return buf_append(data, p, len) ? -1 : 0;
}

int
json_to_mpbuf(struct buf *out, const json_t *v)
{
	msgpack_packer pk;

	msgpack_packer_init(&pk, out, buf_mp_write);
	if (json_to_mp(&pk, v) != 0 || out->err)
		return WEFT_EINVAL;
	return 0;
}

void
str_copy(char *out, size_t cap, struct proto_str s)
{
	size_t n = s.p ? s.len : 0;

	if (n >= cap)
		n = cap - 1;
	if (n)
		memcpy(out, s.p, n);
	out[n] = '\0';
}

/* a + b as the server's numeric addition would give it: integers stay
 * integers while they fit, anything else is a double */
static json_t *
add_numbers(const json_t *a, const json_t *b)
{
	if (json_is_integer(a) && json_is_integer(b)) {
		json_int_t x = json_integer_value(a), y = json_integer_value(b);
		json_int_t r;

		if (!__builtin_add_overflow(x, y, &r))
			return json_integer(r);
	}
	return json_real(json_number_value(a) + json_number_value(b));
}

/* r moves to space sp */
static int
set_space(struct lrow *r, struct proto_str sp)
{
	char *c = strndup(sp.p ? sp.p : "", sp.len);

	if (!c)
		return WEFT_ENOMEM;
	free(r->space);
	r->space = c;
	return 0;
}

static bool
list_has(const json_t *arr, const json_t *v)
{
	size_t i;
	json_t *e;

	json_array_foreach(arr, i, e)
	{
		if (json_equal(e, v))
			return true;
	}
	return false;
}

int
apply_op(struct lrow *r, const struct proto_op *op, char *why, size_t whylen)
{
	char tbl[PROTO_MAX_NAME + 1], id[PROTO_MAX_NAME + 1];
	char fld[PROTO_MAX_NAME + 1];
	json_t *val = NULL, *data = NULL, *cur;
	int rc = 0;

	str_copy(tbl, sizeof(tbl), op->table);
	str_copy(id, sizeof(id), op->id);
	str_copy(fld, sizeof(fld), op->field);
	if (op->value.p) {
		val = mp_to_json(op->value.p, op->value.len);
		if (!val) {
			snprintf(why, whylen, "%s/%s: value is not JSON", tbl,
				 id);
			return WEFT_EINVAL;
		}
	}
	if (op->data.p) {
		data = mp_to_json(op->data.p, op->data.len);
		if (!json_is_object(data)) {
			json_decref(val);
			json_decref(data);
			snprintf(why, whylen, "%s/%s: data is not an object",
				 tbl, id);
			return WEFT_EINVAL;
		}
	}
	if (op->kind == PROTO_OP_CREATE) {
		if (r->exists && !r->deleted) {
			snprintf(why, whylen, "%s/%s already exists", tbl, id);
			rc = WEFT_EEXIST;
			goto out;
		}
		if ((rc = set_space(r, op->space)) != 0)
			goto out;
		json_decref(r->data);
		r->data = data;
		data = NULL;
		r->exists = true;
		r->deleted = false;
		goto out;
	}
	if (!r->exists || r->deleted) {
		snprintf(why, whylen, "no record %s/%s", tbl, id);
		rc = WEFT_ENOTFOUND;
		goto out;
	}
	if (!r->data && op->kind != PROTO_OP_DELETE)
		r->data = json_object();
	switch (op->kind) {
	case PROTO_OP_PUT:
		if (op->space.p && (rc = set_space(r, op->space)) != 0)
			goto out;
		json_decref(r->data);
		r->data = data;
		data = NULL;
		break;
	case PROTO_OP_SET:
		json_object_set(r->data, fld, val ? val : json_null());
		break;
	case PROTO_OP_UNSET:
		json_object_del(r->data, fld);
		break;
	case PROTO_OP_DELETE:
		json_decref(r->data);
		r->data = NULL;
		r->deleted = true;
		break;
	case PROTO_OP_LIST_ADD:
	case PROTO_OP_LIST_REMOVE:
		cur = json_object_get(r->data, fld);
		if (cur && !json_is_array(cur)) {
			snprintf(why, whylen, "field %s of %s/%s is not a list",
				 fld, tbl, id);
			rc = WEFT_EVALIDATION;
			goto out;
		}
		if (op->kind == PROTO_OP_LIST_ADD) {
			json_t *arr = cur ? json_copy(cur) : json_array();

			if (!list_has(arr, val))
				json_array_append(arr, val);
			json_object_set_new(r->data, fld, arr);
		} else {
			json_t *arr = json_array();
			size_t i;
			json_t *e;

			if (cur)
				json_array_foreach(cur, i, e)
				{
					if (!json_equal(e, val))
						json_array_append(arr, e);
				}
			json_object_set_new(r->data, fld, arr);
		}
		break;
	case PROTO_OP_INCR:
		cur = json_object_get(r->data, fld);
		if (cur && !json_is_number(cur)) {
			snprintf(why, whylen,
				 "field %s of %s/%s is not a number", fld, tbl,
				 id);
			rc = WEFT_EVALIDATION;
			goto out;
		}
		if (!json_is_number(val)) {
			snprintf(why, whylen, "incr of %s/%s by a non-number",
				 tbl, id);
			rc = WEFT_EVALIDATION;
			goto out;
		}
		{
			json_t *zero = json_integer(0);
			json_t *sum = add_numbers(cur ? cur : zero, val);

			json_decref(zero);
			if (json_is_real(sum) &&
			    !isfinite(json_real_value(sum))) {
				json_decref(sum);
				snprintf(why, whylen, "incr of %s/%s overflows",
					 tbl, id);
				rc = WEFT_EVALIDATION;
				goto out;
			}
			json_object_set_new(r->data, fld, sum);
		}
		break;
	default:
		snprintf(why, whylen, "unknown op %u", op->kind);
		rc = WEFT_EUNKNOWN;
		break;
	}
out:
	json_decref(val);
	json_decref(data);
	return rc;
}
