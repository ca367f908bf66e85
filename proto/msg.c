/*
 * msg.c - the wire messages: one table-driven encoder and decoder.
 *
 * Each message and list element is described once by a struct proto_desc:
 * its fields' wire names, kinds, offsets in the C struct, limits and
 * whether they are required.  decode_map() and encode_map() walk those
 * tables, so adding a field is one line, and the encoder enforces exactly
 * the rules the decoder checks: what we send always decodes.
 */
#include "proto/msg.h"

#include <msgpack.h>
#include <stdio.h>
#include <string.h>

#include <weft/error.h>

#include "proto/frame.h"
#include "proto/mp.h"

#include "common/banned.h"

enum pkind {
	PK_U64,	    /* uint64_t */
	PK_U32,	    /* uint32_t */
	PK_I32,	    /* int32_t (error codes: negative) */
	PK_BOOL,    /* bool */
	PK_NAME,    /* struct proto_str: non-empty identifier, no controls */
	PK_TEXT,    /* struct proto_str: UTF-8 text, may be empty */
	PK_BIN,	    /* struct proto_bytes: opaque bytes */
	PK_VALUE,   /* struct proto_bytes: a JSON-compatible msgpack value */
	PK_MAP,	    /* struct proto_bytes: a JSON-compatible msgpack map */
	PK_CURSOR,  /* struct proto_cursor: [lsn, idx] */
	PK_LIST,    /* struct proto_list of elem structs */
	PK_STRLIST, /* struct proto_list of PK_NAME strings */
};

struct proto_desc;
struct path;

struct pfield {
	const char *name; /* wire key */
	uint8_t nlen;	  /* strlen(name) */
	enum pkind kind;
	bool required;
	uint16_t off; /* offsetof in the C struct */
	uint32_t max; /* str/bin bytes, list elements (0: kind default) */
	uint64_t min; /* numbers: minimum when present; lists: count */
	const struct proto_desc *elem; /* PK_LIST element */
};

struct proto_desc {
	const char *name; /* for messages: "op", "record" */
	size_t size;	  /* sizeof the C struct */
	const struct pfield *fields;
	unsigned nfields;
	/* semantic rules beyond single fields; sets err->msg, returns err */
	int (*check)(const void *obj, const struct path *path,
		     struct proto_err *err);
};

/* an element of a key list (PK_STRLIST) */
static const struct pfield key_elem = {
	.name = "key",
	.nlen = 3,
	.kind = PK_NAME,
	.required = true,
	.max = PROTO_MAX_KEY,
};

/* PROTO_MAX_FIELDS - fields per struct, bounded by the `seen` bitmask. */
#define PROTO_MAX_FIELDS 32

/* a scratch element big enough for any list element struct */
union any_elem {
	struct proto_op op;
	struct proto_record rec;
	struct proto_keyref ref;
	struct proto_subres res;
	struct proto_change ch;
};

/* ------------------------------------------------------------------ */
/* errors */

/*
 * A field path ("ops[2].table") is built on the stack as the codec
 * descends, one node per level, and rendered to text only when an error
 * is reported: the success path never formats anything.
 */
struct path {
	const struct path *up; /* enclosing level; NULL at the top */
	const char *name;      /* field name, or NULL for a list element */
	uint32_t nlen;	       /* bytes of name (keys are not NUL-terminated) */
	uint32_t idx;	       /* list index, when name is NULL */
};

/* PATH_MAX_DEPTH - levels rendered; deeper paths keep their innermost. */
#define PATH_MAX_DEPTH 16

static struct path
path_at(const struct path *up, const char *name)
{
	struct path p = { up, name, (uint32_t)strlen(name), 0 };

	return p;
}

static struct path
path_idx(const struct path *up, uint32_t idx)
{
	struct path p = { up, NULL, 0, idx };

	return p;
}

/* render into dst; a path cut by cap is acceptable (messages only) */
static void
path_render(const struct path *p, char *dst, size_t cap)
{
	const struct path *nodes[PATH_MAX_DEPTH] = { NULL };
	size_t n = 0, o = 0;

	for (; p && n < PATH_MAX_DEPTH; p = p->up)
		nodes[n++] = p;
	dst[0] = '\0';
	while (n-- > 0 && o + 1 < cap) {
		const struct path *q = nodes[n];
		int w;

		if (q->name)
			w = snprintf(dst + o, cap - o, "%s%.*s", o ? "." : "",
				     (int)(q->nlen > 64 ? 64 : q->nlen),
				     q->name);
		else
			w = snprintf(dst + o, cap - o, "[%u]", q->idx);
		if (w < 0)
			break;
		o += (size_t)w < cap - o ? (size_t)w : cap - o - 1;
	}
}

static int set_err(struct proto_err *err, int code, const struct path *path,
		   const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int
set_err(struct proto_err *err, int code, const struct path *path,
	const char *fmt, ...)
{
	char what[160];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	err->code = code;
	path_render(path, err->path, sizeof(err->path));
	/* a message cut at sizeof(err->msg) is acceptable */
	if (snprintf(err->msg, sizeof(err->msg), "%s%s%s", err->path,
		     err->path[0] ? ": " : "", what) < 0)
		err->msg[0] = '\0';
	return code;
}

/* the type at the reader's position, for messages */
static const char *
peek_name(const struct mp_reader *r)
{
	enum mp_type t;

	return mp_peek(r, &t) == 0 ? mp_type_name(t) : "end of input";
}

/* describe a low-level reader error for a field */
static int
reader_err(struct proto_err *err, int rc, const struct path *path,
	   const struct mp_reader *r, const char *expected)
{
	enum mp_type t;

	switch (rc) {
	case WEFT_ETYPE:
		if (expected && mp_peek(r, &t) == 0)
			return set_err(err, rc, path, "expected %s, got %s",
				       expected, mp_type_name(t));
		return set_err(err, rc, path,
			       "value of a type not allowed here");
	case WEFT_ETRUNCATED:
		return set_err(err, rc, path, "input ends inside the value");
	case WEFT_ECOUNT:
		return set_err(err, rc, path,
			       "claimed element count exceeds the bytes left");
	case WEFT_EDEPTH:
		return set_err(err, rc, path, "nested deeper than %d levels",
			       PROTO_MAX_DEPTH);
	case WEFT_ERANGE:
		return set_err(err, rc, path, "integer out of range");
	case WEFT_EENCODING:
		return set_err(err, rc, path,
			       "invalid UTF-8, NUL byte, NaN or infinity");
	default:
		return set_err(err, rc, path, "%s", weft_strerror(rc));
	}
}

/* ------------------------------------------------------------------ */
/* semantic checks */

static bool
name_ok(const char *s, uint32_t len)
{
	if (len == 0 || !mp_utf8_valid(s, len))
		return false;
	for (uint32_t i = 0; i < len; i++) {
		unsigned char c = (unsigned char)s[i];

		if (c < 0x20 || c == 0x7f)
			return false; /* C0 controls, DEL */
		if (c == 0xc2 && i + 1 < len && (unsigned char)s[i + 1] <= 0x9f)
			return false; /* C1 controls U+0080..U+009F */
	}
	return true;
}

static bool
is_number(struct proto_bytes v)
{
	enum mp_type t;
	struct mp_reader r;

	mp_reader_init(&r, v.p, v.len);
	return mp_peek(&r, &t) == 0 &&
	       (t == MP_UINT || t == MP_INT || t == MP_FLOAT);
}

static int
check_op(const void *obj, const struct path *path, struct proto_err *err)
{
	const struct proto_op *op = obj;
	struct path fp;
	const char *need = NULL, *extra;

	if (op->kind < 1 || op->kind > PROTO_OP_MAX) {
		fp = path_at(path, "op");
		return set_err(err, WEFT_EUNKNOWN, &fp, "unknown op kind %u",
			       op->kind);
	}
	switch (op->kind) {
	case PROTO_OP_CREATE:
		need = !op->space.p ? "space" : !op->data.p ? "data" : NULL;
		break;
	case PROTO_OP_PUT:
		need = !op->data.p ? "data" : NULL;
		break;
	case PROTO_OP_SET:
	case PROTO_OP_LIST_ADD:
	case PROTO_OP_LIST_REMOVE:
	case PROTO_OP_INCR:
		need = !op->field.p ? "field" : !op->value.p ? "value" : NULL;
		break;
	case PROTO_OP_UNSET:
		need = !op->field.p ? "field" : NULL;
		break;
	default: /* delete: table and id only */
		break;
	}
	if (need) {
		fp = path_at(path, need);
		return set_err(err, WEFT_EMISSING, &fp,
			       "required by op '%s' but missing",
			       proto_op_name(op->kind));
	}
	extra = op->kind == PROTO_OP_CREATE && op->expect ? "expect"
		: op->kind != PROTO_OP_CREATE && op->kind != PROTO_OP_PUT &&
				op->space.p
			? "space"
		: op->kind != PROTO_OP_CREATE && op->kind != PROTO_OP_PUT &&
				op->data.p
			? "data"
		: (op->kind == PROTO_OP_CREATE || op->kind == PROTO_OP_PUT ||
		   op->kind == PROTO_OP_DELETE) &&
				op->field.p
			? "field"
		: (op->kind == PROTO_OP_CREATE || op->kind == PROTO_OP_PUT ||
		   op->kind == PROTO_OP_DELETE || op->kind == PROTO_OP_UNSET) &&
				op->value.p
			? "value"
			: NULL;
	if (extra) {
		fp = path_at(path, extra);
		return set_err(err, WEFT_EINVAL, &fp,
			       "does not apply to op '%s'",
			       proto_op_name(op->kind));
	}
	if (op->kind == PROTO_OP_INCR && !is_number(op->value)) {
		fp = path_at(path, "value");
		return set_err(err, WEFT_ETYPE, &fp,
			       "op 'incr' needs a number");
	}
	return 0;
}

/* a tombstone carries no row (a live one may omit it: not visible) */
static int
check_tombstone(bool deleted, struct proto_bytes data, const struct path *path,
		struct proto_err *err)
{
	struct path fp;

	if (deleted && data.p) {
		fp = path_at(path, "data");
		return set_err(err, WEFT_EINVAL, &fp,
			       "a deleted record carries no data");
	}
	return 0;
}

static int
check_change(const void *obj, const struct path *path, struct proto_err *err)
{
	const struct proto_change *ch = obj;
	struct path fp;

	if (ch->op < 1 || ch->op > PROTO_OP_MAX) {
		fp = path_at(path, "op");
		return set_err(err, WEFT_EUNKNOWN, &fp, "unknown op kind %u",
			       ch->op);
	}
	if ((ch->op == PROTO_OP_DELETE) != ch->deleted) {
		fp = path_at(path, "deleted");
		return set_err(err, WEFT_EINVAL, &fp,
			       "%s for op '%s': only a delete makes a "
			       "tombstone",
			       ch->deleted ? "true" : "false",
			       proto_op_name(ch->op));
	}
	return check_tombstone(ch->deleted, ch->data, path, err);
}

static bool
json_ws(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* does s, whitespace aside, start with '{' and end with '}'? */
static bool
json_object_shaped(struct proto_str s)
{
	uint32_t a = 0, b = s.len;

	while (a < b && json_ws(s.p[a]))
		a++;
	while (b > a && json_ws(s.p[b - 1]))
		b--;
	return b - a >= 2 && s.p[a] == '{' && s.p[b - 1] == '}';
}

static int
check_record(const void *obj, const struct path *path, struct proto_err *err)
{
	const struct proto_record *rec = obj;
	struct path fp;

	if (rec->json.p) {
		fp = path_at(path, "dj");
		if (rec->deleted || rec->data.p)
			return set_err(err, WEFT_EINVAL, &fp, "%s",
				       rec->deleted
					       ? "a deleted record carries "
						 "no data"
					       : "data and dj are two forms "
						 "of one thing: one only");
		/* the whole text is checked where it is stored */
		if (!json_object_shaped(rec->json))
			return set_err(err, WEFT_ETYPE, &fp,
				       "not a JSON object");
	}
	return check_tombstone(rec->deleted, rec->data, path, err);
}

/* error codes on the wire are weft_err values: negative */
static int
check_code(int32_t code, bool zero_ok, const struct path *path,
	   struct proto_err *err)
{
	struct path fp;

	if (code < 0 || (zero_ok && code == 0))
		return 0;
	fp = path_at(path, "code");
	return set_err(err, WEFT_ERANGE, &fp,
		       "%d is not an error code (negative weft_err)%s", code,
		       zero_ok ? " or 0" : "");
}

static int
check_reject(const void *obj, const struct path *path, struct proto_err *err)
{
	return check_code(((const struct proto_reject *)obj)->code, false, path,
			  err);
}

static int
check_error(const void *obj, const struct path *path, struct proto_err *err)
{
	return check_code(((const struct proto_error *)obj)->code, false, path,
			  err);
}

static int
check_subres(const void *obj, const struct path *path, struct proto_err *err)
{
	return check_code(((const struct proto_subres *)obj)->code, true, path,
			  err);
}

/* ------------------------------------------------------------------ */
/* descriptors */

#define F(s, n, k, req, mem, mx, mn, el)                              \
	{                                                             \
		n, (uint8_t)(sizeof(n) - 1), k, req,                  \
			(uint16_t)offsetof(struct s, mem), mx, mn, el \
	}
#define NF(a) (unsigned)(sizeof(a) / sizeof(a[0]))
/* DESC - one descriptor; the `seen` bitmask of decode_map bounds fields */
#define DESC(s, nm, arr, chk)                                               \
	_Static_assert(NF(arr) <= PROTO_MAX_FIELDS,                         \
		       #nm " has too many fields");                         \
	static const struct proto_desc desc_##nm = { #nm, sizeof(struct s), \
						     arr, NF(arr), chk }

static const struct pfield op_fields[] = {
	F(proto_op, "op", PK_U32, true, kind, 0, 0, NULL),
	F(proto_op, "table", PK_NAME, true, table, 0, 0, NULL),
	F(proto_op, "id", PK_NAME, true, id, 0, 0, NULL),
	F(proto_op, "space", PK_NAME, false, space, 0, 0, NULL),
	F(proto_op, "field", PK_NAME, false, field, 0, 0, NULL),
	F(proto_op, "value", PK_VALUE, false, value, 0, 0, NULL),
	F(proto_op, "data", PK_MAP, false, data, 0, 0, NULL),
	F(proto_op, "expect", PK_U64, false, expect, 0, 0, NULL),
};
DESC(proto_op, op, op_fields, check_op);

static const struct pfield record_fields[] = {
	F(proto_record, "table", PK_NAME, true, table, 0, 0, NULL),
	F(proto_record, "id", PK_NAME, true, id, 0, 0, NULL),
	F(proto_record, "space", PK_NAME, true, space, 0, 0, NULL),
	F(proto_record, "ver", PK_U64, true, version, 0, 1, NULL),
	F(proto_record, "deleted", PK_BOOL, false, deleted, 0, 0, NULL),
	F(proto_record, "data", PK_MAP, false, data, 0, 0, NULL),
	F(proto_record, "dj", PK_TEXT, false, json, FRAME_MAX_HARD, 0, NULL),
};
DESC(proto_record, record, record_fields, check_record);

static const struct pfield keyref_fields[] = {
	F(proto_keyref, "table", PK_NAME, true, table, 0, 0, NULL),
	F(proto_keyref, "id", PK_NAME, true, id, 0, 0, NULL),
};
DESC(proto_keyref, keyref, keyref_fields, NULL);

static const struct pfield subres_fields[] = {
	F(proto_subres, "key", PK_NAME, true, key, PROTO_MAX_KEY, 0, NULL),
	F(proto_subres, "code", PK_I32, false, code, 0, 0, NULL),
	F(proto_subres, "msg", PK_TEXT, false, msg, PROTO_MAX_TEXT, 0, NULL),
};
DESC(proto_subres, subres, subres_fields, check_subres);

static const struct pfield change_fields[] = {
	F(proto_change, "cursor", PK_CURSOR, true, cursor, 0, 1, NULL),
	F(proto_change, "key", PK_NAME, false, key, PROTO_MAX_KEY, 0, NULL),
	F(proto_change, "table", PK_NAME, true, table, 0, 0, NULL),
	F(proto_change, "id", PK_NAME, true, id, 0, 0, NULL),
	F(proto_change, "space", PK_NAME, true, space, 0, 0, NULL),
	F(proto_change, "ver", PK_U64, true, version, 0, 1, NULL),
	F(proto_change, "op", PK_U32, true, op, 0, 0, NULL),
	F(proto_change, "deleted", PK_BOOL, false, deleted, 0, 0, NULL),
	F(proto_change, "data", PK_MAP, false, data, 0, 0, NULL),
};
DESC(proto_change, change, change_fields, check_change);

static const struct pfield hello_fields[] = {
	F(proto_hello, "rid", PK_U64, false, rid, 0, 0, NULL),
	F(proto_hello, "proto", PK_U32, true, proto, 0, 1, NULL),
	F(proto_hello, "token", PK_TEXT, true, token, PROTO_MAX_TOKEN, 0, NULL),
	F(proto_hello, "client", PK_NAME, true, client_id, 0, 0, NULL),
	F(proto_hello, "cursor", PK_CURSOR, false, cursor, 0, 0, NULL),
	F(proto_hello, "agent", PK_TEXT, false, agent, PROTO_MAX_NAME, 0, NULL),
};
DESC(proto_hello, hello, hello_fields, NULL);

static const struct pfield welcome_fields[] = {
	F(proto_welcome, "rid", PK_U64, false, rid, 0, 0, NULL),
	F(proto_welcome, "proto", PK_U32, true, proto, 0, 1, NULL),
	F(proto_welcome, "user", PK_NAME, true, user, 0, 0, NULL),
	F(proto_welcome, "node", PK_TEXT, false, node, PROTO_MAX_NAME, 0, NULL),
	F(proto_welcome, "session", PK_U64, false, session, 0, 0, NULL),
	F(proto_welcome, "heartbeat_ms", PK_U32, true, heartbeat_ms, 0, 1,
	  NULL),
	F(proto_welcome, "max_frame", PK_U32, true, max_frame, FRAME_MAX_HARD,
	  1, NULL),
	F(proto_welcome, "max_ops", PK_U32, false, max_ops, 0, 0, NULL),
};
DESC(proto_welcome, welcome, welcome_fields, NULL);

static const struct pfield txn_fields[] = {
	F(proto_txn, "rid", PK_U64, false, rid, 0, 0, NULL),
	F(proto_txn, "client", PK_NAME, true, client_id, 0, 0, NULL),
	F(proto_txn, "mid", PK_U64, true, mid, 0, 1, NULL),
	F(proto_txn, "ops", PK_LIST, true, ops, 0, 1, &desc_op),
};
DESC(proto_txn, txn, txn_fields, NULL);

static const struct pfield ack_fields[] = {
	F(proto_ack, "rid", PK_U64, false, rid, 0, 0, NULL),
	F(proto_ack, "mid", PK_U64, true, mid, 0, 1, NULL),
	F(proto_ack, "replay", PK_BOOL, false, replay, 0, 0, NULL),
	F(proto_ack, "records", PK_LIST, false, records, 0, 0, &desc_record),
};
DESC(proto_ack, ack, ack_fields, NULL);

static const struct pfield reject_fields[] = {
	F(proto_reject, "rid", PK_U64, false, rid, 0, 0, NULL),
	F(proto_reject, "mid", PK_U64, true, mid, 0, 1, NULL),
	F(proto_reject, "code", PK_I32, true, code, 0, 0, NULL),
	F(proto_reject, "msg", PK_TEXT, true, msg, PROTO_MAX_TEXT, 0, NULL),
	F(proto_reject, "opnum", PK_U32, false, opnum, 0, 0, NULL),
	F(proto_reject, "field", PK_NAME, false, field, 0, 0, NULL),
	F(proto_reject, "replay", PK_BOOL, false, replay, 0, 0, NULL),
	F(proto_reject, "records", PK_LIST, false, records, 0, 0, &desc_record),
};
DESC(proto_reject, reject, reject_fields, check_reject);

static const struct pfield fetch_fields[] = {
	F(proto_fetch, "rid", PK_U64, false, rid, 0, 0, NULL),
	F(proto_fetch, "keys", PK_LIST, true, keys, 0, 1, &desc_keyref),
};
DESC(proto_fetch, fetch, fetch_fields, NULL);

static const struct pfield records_fields[] = {
	F(proto_records, "rid", PK_U64, false, rid, 0, 0, NULL),
	F(proto_records, "records", PK_LIST, false, records, 0, 0,
	  &desc_record),
	F(proto_records, "missing", PK_LIST, false, missing, 0, 0,
	  &desc_keyref),
};
DESC(proto_records, records, records_fields, NULL);

static const struct pfield bootstrap_fields[] = {
	F(proto_bootstrap, "rid", PK_U64, false, rid, 0, 0, NULL),
	F(proto_bootstrap, "space", PK_NAME, true, space, 0, 0, NULL),
	F(proto_bootstrap, "token", PK_BIN, false, token, PROTO_MAX_PAGE_TOKEN,
	  0, NULL),
	F(proto_bootstrap, "max_bytes", PK_U32, false, max_bytes, 0, 0, NULL),
	F(proto_bootstrap, "json", PK_BOOL, false, json, 0, 0, NULL),
};
DESC(proto_bootstrap, bootstrap, bootstrap_fields, NULL);

static const struct pfield page_fields[] = {
	F(proto_page, "rid", PK_U64, false, rid, 0, 0, NULL),
	F(proto_page, "space", PK_NAME, true, space, 0, 0, NULL),
	F(proto_page, "records", PK_LIST, false, records, 0, 0, &desc_record),
	F(proto_page, "next", PK_BIN, false, next, PROTO_MAX_PAGE_TOKEN, 0,
	  NULL),
	F(proto_page, "cursor", PK_CURSOR, false, cursor, 0, 0, NULL),
	F(proto_page, "total", PK_U64, false, total, 0, 0, NULL),
};
DESC(proto_page, page, page_fields, NULL);

static const struct pfield subscribe_fields[] = {
	F(proto_subscribe, "rid", PK_U64, false, rid, 0, 0, NULL),
	F(proto_subscribe, "keys", PK_STRLIST, true, keys, 0, 1, NULL),
	F(proto_subscribe, "cursor", PK_CURSOR, false, cursor, 0, 0, NULL),
};
DESC(proto_subscribe, subscribe, subscribe_fields, NULL);

static const struct pfield subscribed_fields[] = {
	F(proto_subscribed, "rid", PK_U64, false, rid, 0, 0, NULL),
	F(proto_subscribed, "results", PK_LIST, false, results, 0, 0,
	  &desc_subres),
};
DESC(proto_subscribed, subscribed, subscribed_fields, NULL);

static const struct pfield push_fields[] = {
	F(proto_push, "cursor", PK_CURSOR, true, cursor, 0, 1, NULL),
	F(proto_push, "prev", PK_CURSOR, false, prev, 0, 0, NULL),
	F(proto_push, "changes", PK_LIST, true, changes, 0, 1, &desc_change),
};
DESC(proto_push, push, push_fields, NULL);

static const struct pfield catchup_fields[] = {
	F(proto_catchup, "keys", PK_STRLIST, true, keys, 0, 1, NULL),
	F(proto_catchup, "oldest", PK_CURSOR, false, oldest, 0, 0, NULL),
	F(proto_catchup, "msg", PK_TEXT, false, msg, PROTO_MAX_TEXT, 0, NULL),
};
DESC(proto_catchup, catchup, catchup_fields, NULL);

static const struct pfield error_fields[] = {
	F(proto_error, "rid", PK_U64, false, rid, 0, 0, NULL),
	F(proto_error, "code", PK_I32, true, code, 0, 0, NULL),
	F(proto_error, "msg", PK_TEXT, true, msg, PROTO_MAX_TEXT, 0, NULL),
	F(proto_error, "expected", PK_U64, false, expected, 0, 0, NULL),
	F(proto_error, "fatal", PK_BOOL, false, fatal, 0, 0, NULL),
};
DESC(proto_error, error, error_fields, check_error);

static const struct pfield ping_fields[] = {
	F(proto_ping, "nonce", PK_U64, false, nonce, 0, 0, NULL),
};
DESC(proto_ping, ping, ping_fields, NULL);

static const struct pfield backoff_fields[] = {
	F(proto_backoff, "rid", PK_U64, false, rid, 0, 0, NULL),
	F(proto_backoff, "retry_ms", PK_U32, true, retry_ms, 0, 0, NULL),
	F(proto_backoff, "reconnect", PK_BOOL, false, reconnect, 0, 0, NULL),
	F(proto_backoff, "msg", PK_TEXT, false, msg, PROTO_MAX_TEXT, 0, NULL),
};
DESC(proto_backoff, backoff, backoff_fields, NULL);

static const struct {
	const char *name;
	const struct proto_desc *desc;
} types[PROTO_TYPE_MAX + 1] = {
	[PROTO_HELLO] = { "hello", &desc_hello },
	[PROTO_WELCOME] = { "welcome", &desc_welcome },
	[PROTO_TXN] = { "txn", &desc_txn },
	[PROTO_ACK] = { "ack", &desc_ack },
	[PROTO_REJECT] = { "reject", &desc_reject },
	[PROTO_FETCH] = { "fetch", &desc_fetch },
	[PROTO_RECORDS] = { "records", &desc_records },
	[PROTO_BOOTSTRAP] = { "bootstrap", &desc_bootstrap },
	[PROTO_PAGE] = { "page", &desc_page },
	[PROTO_SUBSCRIBE] = { "subscribe", &desc_subscribe },
	[PROTO_UNSUBSCRIBE] = { "unsubscribe", &desc_subscribe },
	[PROTO_SUBSCRIBED] = { "subscribed", &desc_subscribed },
	[PROTO_PUSH] = { "push", &desc_push },
	[PROTO_CATCHUP] = { "catchup", &desc_catchup },
	[PROTO_ERROR] = { "error", &desc_error },
	[PROTO_PING] = { "ping", &desc_ping },
	[PROTO_PONG] = { "pong", &desc_ping },
	[PROTO_BACKOFF] = { "backoff", &desc_backoff },
};

static const char *const op_names[PROTO_OP_MAX + 1] = {
	[PROTO_OP_CREATE] = "create",
	[PROTO_OP_PUT] = "put",
	[PROTO_OP_SET] = "set",
	[PROTO_OP_UNSET] = "unset",
	[PROTO_OP_DELETE] = "delete",
	[PROTO_OP_LIST_ADD] = "list_add",
	[PROTO_OP_LIST_REMOVE] = "list_remove",
	[PROTO_OP_INCR] = "incr",
};

const char *
proto_op_name(unsigned kind)
{
	return kind >= 1 && kind <= PROTO_OP_MAX ? op_names[kind] : "?";
}

const char *
proto_type_name(unsigned type)
{
	return type >= 1 && type <= PROTO_TYPE_MAX ? types[type].name : "?";
}

struct proto_str
proto_str_c(const char *s)
{
	struct proto_str r = { s, s ? (uint32_t)strlen(s) : 0 };

	return r;
}

bool
proto_str_eq(struct proto_str s, const char *c)
{
	size_t n = strlen(c);

	return s.p && s.len == n && memcmp(s.p, c, n) == 0;
}

/* ------------------------------------------------------------------ */
/* decoding */

static uint32_t
str_max(const struct pfield *f)
{
	if (f->max)
		return f->max;
	return f->kind == PK_BIN ? PROTO_MAX_PAGE_TOKEN : PROTO_MAX_NAME;
}

static int decode_map(struct mp_reader *r, const struct proto_desc *d,
		      void *obj, const struct path *path,
		      struct proto_err *err);

static int
decode_str(struct mp_reader *r, const struct pfield *f, struct proto_str *s,
	   const struct path *path, struct proto_err *err)
{
	int rc = mp_read_str(r, &s->p, &s->len);

	if (rc)
		return reader_err(err, rc, path, r, "str");
	if (s->len > str_max(f))
		return set_err(err, WEFT_ETOOBIG, path,
			       "longer than %u bytes (%u)", str_max(f), s->len);
	if (f->kind == PK_NAME && s->len == 0)
		return set_err(err, WEFT_ERANGE, path, "must not be empty");
	if (f->kind == PK_NAME ? !name_ok(s->p, s->len)
			       : !mp_utf8_valid(s->p, s->len))
		return set_err(err, WEFT_EENCODING, path,
			       "invalid UTF-8, NUL or control character");
	return 0;
}

static int
decode_cursor(struct mp_reader *r, struct proto_cursor *c,
	      const struct path *path, struct proto_err *err)
{
	uint32_t n;
	uint64_t idx;
	int rc = mp_read_array(r, &n);

	if (rc)
		return reader_err(err, rc, path, r, "array [lsn, idx]");
	if (n != 2)
		return set_err(err, WEFT_ETYPE, path,
			       "expected array [lsn, idx], got %u elements", n);
	rc = mp_read_u64(r, &c->lsn);
	if (!rc)
		rc = mp_read_u64(r, &idx);
	if (rc)
		return reader_err(err, rc, path, r, "uint");
	if (idx > UINT32_MAX)
		return set_err(err, WEFT_ERANGE, path, "idx above 2^32-1");
	c->idx = (uint32_t)idx;
	return 0;
}

static int
decode_list(struct mp_reader *r, const struct pfield *f, struct proto_list *l,
	    const struct path *path, struct proto_err *err)
{
	uint32_t n, max = f->max ? f->max : PROTO_MAX_LIST;
	int rc = mp_read_array(r, &n);

	if (rc)
		return reader_err(err, rc, path, r, "array");
	if (n > max)
		return set_err(err, WEFT_ETOOBIG, path,
			       "%u elements, more than the limit of %u", n,
			       max);
	if (n < f->min)
		return set_err(err, WEFT_ERANGE, path,
			       "needs at least %llu element(s)",
			       (unsigned long long)f->min);
	l->n = n;
	l->items = NULL;
	l->raw = r->p;
	l->elem = f->kind == PK_STRLIST ? (const void *)&key_elem
					: (const void *)f->elem;
	for (uint32_t i = 0; i < n; i++) {
		struct path ep = path_idx(path, i);

		if (f->kind == PK_STRLIST) {
			struct proto_str s;

			rc = decode_str(r, &key_elem, &s, &ep, err);
		} else {
			union any_elem tmp;

			rc = decode_map(r, f->elem, &tmp, &ep, err);
		}
		if (rc)
			return rc;
	}
	l->raw_len = (size_t)(r->p - l->raw);
	return 0;
}

static int
decode_field(struct mp_reader *r, const struct pfield *f, void *obj,
	     const struct path *path, struct proto_err *err)
{
	char *at = (char *)obj + f->off;
	uint64_t u;
	int64_t i;
	int rc;

	switch (f->kind) {
	case PK_U64:
	case PK_U32:
		rc = mp_read_u64(r, &u);
		if (rc)
			return reader_err(err, rc, path, r, "uint");
		if (f->kind == PK_U32 && u > UINT32_MAX)
			return set_err(err, WEFT_ERANGE, path,
				       "%llu is above 2^32-1",
				       (unsigned long long)u);
		if (u < f->min)
			return set_err(err, WEFT_ERANGE, path,
				       "%llu is below the minimum %llu",
				       (unsigned long long)u,
				       (unsigned long long)f->min);
		if (f->max && u > f->max)
			return set_err(err, WEFT_ERANGE, path,
				       "%llu is above the maximum %u",
				       (unsigned long long)u, f->max);
		if (f->kind == PK_U64)
			memcpy(at, &u, sizeof(u));
		else
			memcpy(at, &(uint32_t){ (uint32_t)u }, 4);
		return 0;
	case PK_I32:
		rc = mp_read_i64(r, &i);
		if (rc)
			return reader_err(err, rc, path, r, "int");
		if (i < INT32_MIN || i > INT32_MAX)
			return set_err(err, WEFT_ERANGE, path,
				       "%lld does not fit 32 bits",
				       (long long)i);
		memcpy(at, &(int32_t){ (int32_t)i }, 4);
		return 0;
	case PK_BOOL:
		rc = mp_read_bool(r, (bool *)(void *)at);
		return rc ? reader_err(err, rc, path, r, "bool") : 0;
	case PK_NAME:
	case PK_TEXT:
		return decode_str(r, f, (struct proto_str *)(void *)at, path,
				  err);
	case PK_BIN: {
		struct proto_bytes *b = (struct proto_bytes *)(void *)at;

		rc = mp_read_bin(r, &b->p, &b->len);
		if (rc)
			return reader_err(err, rc, path, r, "bin");
		if (b->len > str_max(f))
			return set_err(err, WEFT_ETOOBIG, path,
				       "longer than %u bytes (%u)", str_max(f),
				       b->len);
		return 0;
	}
	case PK_VALUE:
	case PK_MAP: {
		struct proto_bytes *b = (struct proto_bytes *)(void *)at;
		const uint8_t *start = r->p;
		enum mp_type t;

		rc = mp_peek(r, &t);
		if (rc)
			return reader_err(err, rc, path, r, NULL);
		if (f->kind == PK_MAP && t != MP_MAP)
			return set_err(err, WEFT_ETYPE, path,
				       "expected map, got %s", mp_type_name(t));
		rc = mp_check_value(r, PROTO_MAX_DEPTH);
		if (rc == WEFT_ETYPE)
			return set_err(err, rc, path,
				       "holds what a record cannot store: bin, "
				       "ext, a non-string map key or byte "
				       "0xc1 (near %s)",
				       peek_name(r));
		if (rc)
			return reader_err(err, rc, path, r, NULL);
		b->p = start;
		b->len = (uint32_t)(r->p - start);
		return 0;
	}
	case PK_CURSOR: {
		struct proto_cursor *c = (struct proto_cursor *)(void *)at;

		rc = decode_cursor(r, c, path, err);
		if (!rc && f->min && !c->lsn && !c->idx)
			return set_err(err, WEFT_ERANGE, path,
				       "must not be the zero cursor");
		return rc;
	}
	case PK_LIST:
	case PK_STRLIST:
		return decode_list(r, f, (struct proto_list *)(void *)at, path,
				   err);
	}
	return set_err(err, WEFT_EINTERNAL, path, "bad field kind");
}

static int
decode_map(struct mp_reader *r, const struct proto_desc *d, void *obj,
	   const struct path *path, struct proto_err *err)
{
	struct path fp, top = path_at(NULL, d->name);
	uint32_t seen = 0, n;
	int rc;

	memset(obj, 0, d->size);
	rc = mp_read_map(r, &n);
	if (rc)
		return reader_err(err, rc, path ? path : &top, r, "map");
	for (uint32_t i = 0; i < n; i++) {
		const struct pfield *f = NULL;
		const char *key;
		uint32_t klen;
		unsigned k;

		rc = mp_read_str(r, &key, &klen);
		if (rc)
			return reader_err(err, rc, path ? path : &top, r,
					  "str key");
		for (k = 0; k < d->nfields; k++) {
			if (d->fields[k].nlen == klen &&
			    memcmp(d->fields[k].name, key, klen) == 0) {
				f = &d->fields[k];
				break;
			}
		}
		if (!f) { /* unknown: skip, for forward compatibility */
			rc = mp_skip(r, PROTO_MAX_DEPTH);
			if (rc) {
				struct path kp = { path, key, klen, 0 };

				return reader_err(err, rc, &kp, r, NULL);
			}
			continue;
		}
		fp = (struct path){ path, f->name, f->nlen, 0 };
		if (seen & (1u << k))
			return set_err(err, WEFT_EDUPFIELD, &fp,
				       "appears more than once");
		seen |= 1u << k;
		rc = decode_field(r, f, obj, &fp, err);
		if (rc)
			return rc;
	}
	for (unsigned k = 0; k < d->nfields; k++) {
		if (d->fields[k].required && !(seen & (1u << k))) {
			fp = path_at(path, d->fields[k].name);
			return set_err(err, WEFT_EMISSING, &fp,
				       "required field missing in %s", d->name);
		}
	}
	return d->check ? d->check(obj, path, err) : 0;
}

int
proto_decode(const uint8_t *body, size_t len, struct proto_msg *msg,
	     struct proto_err *err)
{
	const struct path frame = path_at(NULL, "frame");
	const struct path tpath = path_at(NULL, "type");
	struct mp_reader r;
	uint64_t type;
	uint32_t n;
	int rc;

	memset(err, 0, sizeof(*err));
	memset(msg, 0, sizeof(*msg));
	mp_reader_init(&r, body, len);
	rc = mp_read_array(&r, &n);
	if (rc)
		return reader_err(err, rc, &frame, &r, "array [type, fields]");
	if (n != 2)
		return set_err(err, WEFT_ETYPE, &frame,
			       "expected array [type, fields], got %u "
			       "elements",
			       n);
	rc = mp_read_u64(&r, &type);
	if (rc)
		return reader_err(err, rc, &tpath, &r, "uint");
	if (type < 1 || type > PROTO_TYPE_MAX)
		return set_err(err, WEFT_EUNKNOWN, &tpath,
			       "unknown message type %llu",
			       (unsigned long long)type);
	msg->type = (enum proto_type)type;
	rc = decode_map(&r, types[type].desc, &msg->u, NULL, err);
	if (rc)
		return rc;
	if (r.p != r.end)
		return set_err(err, WEFT_ETRAILING, &frame,
			       "%zu bytes after the message", mp_left(&r));
	return 0;
}

/* ------------------------------------------------------------------ */
/* list iteration */

void
proto_iter_init(struct proto_iter *it, const struct proto_list *l)
{
	it->items = l->items;
	it->idx = 0;
	it->p = l->raw;
	it->end = l->raw ? l->raw + l->raw_len : NULL;
	it->left = l->n;
}

static int
next_elem(struct proto_iter *it, const struct proto_desc *d, void *out)
{
	struct mp_reader r;
	struct proto_err err;
	int rc;

	if (it->left == 0)
		return 0;
	if (it->items) {
		memcpy(out, (const char *)it->items + it->idx * d->size,
		       d->size);
		it->idx++;
		it->left--;
		return 1;
	}
	if (!it->p)
		return WEFT_EINVAL;
	mp_reader_init(&r, it->p, (size_t)(it->end - it->p));
	rc = decode_map(&r, d, out, NULL, &err);
	if (rc)
		return rc;
	it->p = r.p;
	it->left--;
	return 1;
}

int
proto_next_op(struct proto_iter *it, struct proto_op *op)
{
	return next_elem(it, &desc_op, op);
}

int
proto_next_record(struct proto_iter *it, struct proto_record *rec)
{
	return next_elem(it, &desc_record, rec);
}

int
proto_next_keyref(struct proto_iter *it, struct proto_keyref *ref)
{
	return next_elem(it, &desc_keyref, ref);
}

int
proto_next_subres(struct proto_iter *it, struct proto_subres *res)
{
	return next_elem(it, &desc_subres, res);
}

int
proto_next_change(struct proto_iter *it, struct proto_change *ch)
{
	return next_elem(it, &desc_change, ch);
}

int
proto_next_str(struct proto_iter *it, struct proto_str *s)
{
	struct mp_reader r;
	int rc;

	if (it->left == 0)
		return 0;
	if (it->items) {
		*s = ((const struct proto_str *)it->items)[it->idx++];
		it->left--;
		return 1;
	}
	if (!it->p)
		return WEFT_EINVAL;
	mp_reader_init(&r, it->p, (size_t)(it->end - it->p));
	rc = mp_read_str(&r, &s->p, &s->len);
	if (rc)
		return rc;
	it->p = r.p;
	it->left--;
	return 1;
}

/* ------------------------------------------------------------------ */
/* encoding */

static int
buf_write(void *data, const char *p, size_t len)
{
	return buf_append(data, p, len) ? -1 : 0;
}

/* is an optional field present (the zero-means-absent rule)? */
static bool
present(const struct pfield *f, const void *obj)
{
	const char *at = (const char *)obj + f->off;

	switch (f->kind) {
	case PK_U64:
		return *(const uint64_t *)(const void *)at != 0;
	case PK_U32:
		return *(const uint32_t *)(const void *)at != 0;
	case PK_I32:
		return *(const int32_t *)(const void *)at != 0;
	case PK_BOOL:
		return *(const bool *)(const void *)at;
	case PK_NAME:
	case PK_TEXT:
		return ((const struct proto_str *)(const void *)at)->p != NULL;
	case PK_BIN:
	case PK_VALUE:
	case PK_MAP:
		return ((const struct proto_bytes *)(const void *)at)->p !=
		       NULL;
	case PK_CURSOR: {
		const struct proto_cursor *c = (const void *)at;

		return c->lsn || c->idx;
	}
	case PK_LIST:
	case PK_STRLIST:
		return ((const struct proto_list *)(const void *)at)->n != 0;
	}
	return false;
}

/*
 * can a required field be encoded from its zero value?  Numbers and bools
 * can (0 and false are values, bounded by min); strings, bytes, lists and
 * non-zero cursors cannot: there is nothing to send.
 */
static bool
absent_ok(const struct pfield *f)
{
	switch (f->kind) {
	case PK_U64:
	case PK_U32:
	case PK_I32:
	case PK_BOOL:
		return true;
	case PK_CURSOR:
		return f->min == 0;
	case PK_LIST:
	case PK_STRLIST:
		return f->min == 0;
	default:
		return false;
	}
}

static int encode_map(msgpack_packer *pk, struct buf *out,
		      const struct proto_desc *d, const void *obj,
		      const struct path *path, struct proto_err *err);

static int
encode_str(msgpack_packer *pk, const struct pfield *f, struct proto_str s,
	   const struct path *path, struct proto_err *err)
{
	if (!s.p && s.len)
		return set_err(err, WEFT_EINVAL, path,
			       "NULL string with length %u", s.len);
	if (s.len > str_max(f))
		return set_err(err, WEFT_EINVAL, path, "longer than %u bytes",
			       str_max(f));
	if (f->kind == PK_NAME ? !name_ok(s.p, s.len)
			       : s.len && !mp_utf8_valid(s.p, s.len))
		return set_err(err, WEFT_EINVAL, path,
			       "empty, invalid UTF-8 or control character");
	msgpack_pack_str(pk, s.len);
	msgpack_pack_str_body(pk, s.p ? s.p : "", s.len);
	return 0;
}

/* the elem of a list from proto_list_changes: its bytes come from
 * proto_encode_change, so encode_list copies them without walking them */
static const char encoded_changes = 'c';

static int
encode_list(msgpack_packer *pk, struct buf *out, const struct pfield *f,
	    const struct proto_list *l, const struct path *path,
	    struct proto_err *err)
{
	uint32_t max = f->max ? f->max : PROTO_MAX_LIST;
	int rc;

	if (l->n > max || l->n < f->min)
		return set_err(err, WEFT_EINVAL, path,
			       "%u elements, allowed %llu..%u", l->n,
			       (unsigned long long)f->min, max);
	msgpack_pack_array(pk, l->n);
	if (!l->items && l->elem == &encoded_changes) {
		if (f->elem != &desc_change || (l->n && !l->raw))
			return set_err(err, WEFT_EINVAL, path,
				       "encoded changes in another field");
		return buf_append(out, l->raw, l->raw_len) ? out->err : 0;
	}
	if (!l->items) { /* a decoded list: validated when it was decoded */
		const void *want = f->kind == PK_STRLIST
					   ? (const void *)&key_elem
					   : (const void *)f->elem;
		struct mp_reader r;
		uint32_t i;

		if (l->n && l->elem != want)
			return set_err(err, WEFT_EINVAL, path,
				       "list was decoded for another field "
				       "type");
		mp_reader_init(&r, l->raw, l->n ? l->raw_len : 0);
		for (i = 0; i < l->n; i++)
			if (mp_skip(&r, PROTO_MAX_DEPTH + 2) != 0)
				break;
		if (i != l->n || r.p != r.end || (l->n && !l->raw))
			return set_err(err, WEFT_EINVAL, path,
				       "decoded list does not hold %u "
				       "elements",
				       l->n);
		return buf_append(out, l->raw, l->raw_len) ? out->err : 0;
	}
	for (uint32_t i = 0; i < l->n; i++) {
		struct path ep = path_idx(path, i);

		if (f->kind == PK_STRLIST) {
			rc = encode_str(pk, &key_elem,
					((const struct proto_str *)l->items)[i],
					&ep, err);
		} else {
			rc = encode_map(pk, out, f->elem,
					(const char *)l->items +
						i * f->elem->size,
					&ep, err);
		}
		if (rc)
			return rc;
	}
	return 0;
}

static int
encode_field(msgpack_packer *pk, struct buf *out, const struct pfield *f,
	     const void *obj, const struct path *path, struct proto_err *err)
{
	const char *at = (const char *)obj + f->off;

	switch (f->kind) {
	case PK_U64:
	case PK_U32: {
		uint64_t u = f->kind == PK_U64
				     ? *(const uint64_t *)(const void *)at
				     : *(const uint32_t *)(const void *)at;

		if (u < f->min || (f->max && u > f->max))
			return set_err(err, WEFT_EINVAL, path,
				       "%llu is outside %llu..%llu",
				       (unsigned long long)u,
				       (unsigned long long)f->min,
				       f->max ? (unsigned long long)f->max
				       : f->kind == PK_U32 ? UINT32_MAX
							   : UINT64_MAX);
		msgpack_pack_uint64(pk, u);
		return 0;
	}
	case PK_I32:
		msgpack_pack_int32(pk, *(const int32_t *)(const void *)at);
		return 0;
	case PK_BOOL:
		if (*(const bool *)(const void *)at)
			msgpack_pack_true(pk);
		else
			msgpack_pack_false(pk);
		return 0;
	case PK_NAME:
	case PK_TEXT:
		return encode_str(pk, f,
				  *(const struct proto_str *)(const void *)at,
				  path, err);
	case PK_BIN: {
		const struct proto_bytes *b = (const void *)at;

		if (b->len > str_max(f) || (!b->p && b->len))
			return set_err(err, WEFT_EINVAL, path,
				       "NULL or longer than %u bytes",
				       str_max(f));
		msgpack_pack_bin(pk, b->len);
		msgpack_pack_bin_body(pk, b->p ? b->p : (const uint8_t *)"",
				      b->len);
		return 0;
	}
	case PK_VALUE:
	case PK_MAP: {
		const struct proto_bytes *b = (const void *)at;
		struct mp_reader r;
		enum mp_type t;
		int rc;

		mp_reader_init(&r, b->p, b->p ? b->len : 0);
		rc = mp_peek(&r, &t);
		if (!rc && f->kind == PK_MAP && t != MP_MAP)
			rc = WEFT_ETYPE;
		if (!rc)
			rc = mp_check_value(&r, PROTO_MAX_DEPTH);
		if (!rc && r.p != r.end)
			rc = WEFT_ETRAILING;
		if (rc)
			return set_err(err, WEFT_EINVAL, path,
				       "not one JSON-compatible %s (%s)",
				       f->kind == PK_MAP ? "map" : "value",
				       weft_strerror(rc));
		return buf_append(out, b->p, b->len) ? out->err : 0;
	}
	case PK_CURSOR: {
		const struct proto_cursor *c = (const void *)at;

		msgpack_pack_array(pk, 2);
		msgpack_pack_uint64(pk, c->lsn);
		msgpack_pack_uint32(pk, c->idx);
		return 0;
	}
	case PK_LIST:
	case PK_STRLIST:
		return encode_list(pk, out, f,
				   (const struct proto_list *)(const void *)at,
				   path, err);
	}
	return set_err(err, WEFT_EINTERNAL, path, "bad field kind");
}

static int
encode_map(msgpack_packer *pk, struct buf *out, const struct proto_desc *d,
	   const void *obj, const struct path *path, struct proto_err *err)
{
	struct path fp;
	uint32_t n = 0;
	int rc;

	if (d->check) {
		rc = d->check(obj, path, err);
		if (rc) {
			err->code = WEFT_EINVAL; /* the caller's mistake */
			return WEFT_EINVAL;
		}
	}
	for (unsigned k = 0; k < d->nfields; k++) {
		const struct pfield *f = &d->fields[k];

		if (f->required && !present(f, obj) && !absent_ok(f)) {
			fp = path_at(path, f->name);
			return set_err(err, WEFT_EINVAL, &fp,
				       "required field missing in %s", d->name);
		}
		if (f->required || present(f, obj))
			n++;
	}
	msgpack_pack_map(pk, n);
	for (unsigned k = 0; k < d->nfields; k++) {
		const struct pfield *f = &d->fields[k];

		if (!f->required && !present(f, obj))
			continue;
		fp = path_at(path, f->name);
		msgpack_pack_str(pk, strlen(f->name));
		msgpack_pack_str_body(pk, f->name, strlen(f->name));
		rc = encode_field(pk, out, f, obj, &fp, err);
		if (rc)
			return rc;
	}
	return out->err;
}

int
proto_cursor_cmp(struct proto_cursor a, struct proto_cursor b)
{
	if (a.lsn != b.lsn)
		return a.lsn < b.lsn ? -1 : 1;
	return (a.idx > b.idx) - (a.idx < b.idx);
}

int
proto_encode_change(struct buf *out, const struct proto_change *ch,
		    struct proto_err *err)
{
	struct proto_err scratch;
	msgpack_packer pk;
	size_t start = out->len;
	int rc;

	if (!err)
		err = &scratch;
	memset(err, 0, sizeof(*err));
	if (out->err)
		return set_err(err, out->err, NULL,
			       "output buffer already failed");
	msgpack_packer_init(&pk, out, buf_write);
	rc = encode_map(&pk, out, &desc_change, ch, NULL, err);
	if (!rc && out->err)
		rc = set_err(err, out->err, NULL, "output buffer full");
	if (rc) {
		buf_truncate(out, start);
		out->err = 0;
	}
	return rc;
}

struct proto_list
proto_list_changes(uint32_t n, const uint8_t *raw, size_t len)
{
	return (struct proto_list){ n, NULL, raw, len, &encoded_changes };
}

int
proto_encode(struct buf *out, const struct proto_msg *msg, uint32_t max_frame,
	     struct proto_err *err)
{
	static const uint8_t zero[FRAME_HEADER];
	struct proto_err scratch;
	msgpack_packer pk;
	size_t start = out->len, body;
	int rc;

	if (!err)
		err = &scratch;
	memset(err, 0, sizeof(*err));
	if (out->err)
		return set_err(
			err, out->err == WEFT_ETOOBIG ? WEFT_EAGAIN : out->err,
			NULL, "output buffer already failed");
	if (msg->type < 1 || msg->type > PROTO_TYPE_MAX)
		return set_err(err, WEFT_EINVAL, NULL,
			       "unknown message type %u", (unsigned)msg->type);
	if (max_frame == 0 || max_frame > FRAME_MAX_HARD)
		max_frame = FRAME_MAX_HARD;
	buf_append(out, zero, sizeof(zero));
	msgpack_packer_init(&pk, out, buf_write);
	msgpack_pack_array(&pk, 2);
	msgpack_pack_uint32(&pk, (uint32_t)msg->type);
	rc = encode_map(&pk, out, types[msg->type].desc, &msg->u, NULL, err);
	if (out->err) /* the buffer failed, whatever encode_map made of it */
		rc = set_err(err,
			     out->err == WEFT_ETOOBIG ? WEFT_EAGAIN : out->err,
			     NULL, "output buffer full (%zu bytes)", out->max);
	body = out->len - start - FRAME_HEADER;
	if (!rc && body > max_frame)
		rc = set_err(err, WEFT_ETOOBIG, NULL,
			     "%zu-byte body exceeds the %u-byte frame cap",
			     body, max_frame);
	if (rc) {
		buf_truncate(out, start);
		out->err = 0;
		return rc;
	}
	frame_put_header(out->data + start, (uint32_t)body);
	return 0;
}
