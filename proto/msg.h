/*
 * msg.h - every message of the weft wire protocol, as C structs, with one
 * encoder and one decoder for all of them (docs/protocol.md is the prose).
 *
 * A frame body is a msgpack array [type, fields]: `type` a small uint
 * (enum proto_type), `fields` a map from short string keys to values.
 * Unknown keys are skipped (so a newer peer can add fields); a known key
 * with the wrong type, a duplicate key or a missing required key is an
 * error naming the field ("ops[2].table: expected str, got uint").
 *
 * Decoding is zero-copy and allocation-free: strings, binaries, row data
 * and lists in a decoded message point into the frame body, which must
 * outlive the message.  A list is validated element by element during
 * decoding and read back with the proto_next_* iterators.  So a decoder
 * can never allocate on behalf of a peer; its work is linear in the bytes.
 *
 * Optional fields use "zero means absent": a NULL string or bytes, a 0
 * number, false.  Where 0 is a meaningful value the field is 1-based
 * (REJECT.opnum) or has no meaningful zero (versions and mutation ids
 * start at 1).  Row data and op values are raw msgpack (struct
 * proto_bytes) checked to be JSON-compatible (mp_check_value): a set to
 * null is the one byte 0xc0, not an absent value.
 */
#ifndef WEFT_PROTO_MSG_H
#define WEFT_PROTO_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/buf.h"

/* PROTO_VERSION - sent in HELLO; bumped on incompatible changes only. */
#define PROTO_VERSION 1

/*
 * Limits on single fields.  Each is a hard protocol limit: a peer that
 * exceeds one gets WEFT_ETOOBIG naming the field.
 */

/* PROTO_MAX_NAME - table, id, space, field, client id: identifiers. */
#define PROTO_MAX_NAME 256

/* PROTO_MAX_KEY - subscription keys: "rec/<table>/<id>" with both names
 * at their maximum still fits. */
#define PROTO_MAX_KEY (2 * PROTO_MAX_NAME + 16)

/* PROTO_MAX_TOKEN - a JWT with generous claims. */
#define PROTO_MAX_TOKEN 8192

/* PROTO_MAX_TEXT - error and rejection messages, for people. */
#define PROTO_MAX_TEXT 1024

/* PROTO_MAX_PAGE_TOKEN - opaque bootstrap position. */
#define PROTO_MAX_PAGE_TOKEN 1024

/* PROTO_MAX_LIST - elements in any list (ops, records, keys, changes);
 * services enforce lower, configurable limits on top. */
#define PROTO_MAX_LIST 65536

/* PROTO_MAX_DEPTH - nesting inside row data and op values; bounds the
 * recursion of every reader. */
#define PROTO_MAX_DEPTH 32

enum proto_type {
	PROTO_HELLO = 1,	/* c->s: authenticate the session */
	PROTO_WELCOME = 2,	/* s->c: session accepted */
	PROTO_TXN = 3,		/* c->s: one client transaction */
	PROTO_ACK = 4,		/* s->c: transaction applied */
	PROTO_REJECT = 5,	/* s->c: transaction rejected (id advanced) */
	PROTO_FETCH = 6,	/* c->s: records by (table, id) */
	PROTO_RECORDS = 7,	/* s->c: fetch result */
	PROTO_BOOTSTRAP = 8,	/* c->s: one page of a space snapshot */
	PROTO_PAGE = 9,		/* s->c: a bootstrap page */
	PROTO_SUBSCRIBE = 10,	/* c->s: start receiving pushes for keys */
	PROTO_UNSUBSCRIBE = 11, /* c->s: stop receiving pushes for keys */
	PROTO_SUBSCRIBED = 12,	/* s->c: per-key result of (un)subscribe */
	PROTO_PUSH = 13,	/* s->c: a batch of changes */
	PROTO_CATCHUP = 14,	/* s->c: catch-up unavailable; re-bootstrap */
	PROTO_ERROR = 15,	/* either way: request or session error */
	PROTO_PING = 16,	/* either way: heartbeat */
	PROTO_PONG = 17,	/* either way: heartbeat answer */
	PROTO_BACKOFF = 18,	/* s->c: retry after / reconnect elsewhere */
};
#define PROTO_TYPE_MAX 18

/* The operations of a transaction (DESIGN.md §3); also the op of a change. */
enum proto_op_kind {
	PROTO_OP_CREATE = 1,   /* new record: space + data */
	PROTO_OP_PUT = 2,      /* replace all fields: data (+ space: move) */
	PROTO_OP_SET = 3,      /* one field := value (LWW per field) */
	PROTO_OP_UNSET = 4,    /* remove one field */
	PROTO_OP_DELETE = 5,   /* tombstone */
	PROTO_OP_LIST_ADD = 6, /* add value to a list field (set semantics) */
	PROTO_OP_LIST_REMOVE = 7, /* remove value from a list field */
	PROTO_OP_INCR = 8,	  /* add a number to a numeric field */
};
#define PROTO_OP_MAX 8

/* proto_op_name - "create", "put", ...; "?" for unknown. */
const char *proto_op_name(unsigned kind);
/* proto_type_name - "hello", "txn", ...; "?" for unknown. */
const char *proto_type_name(unsigned type);

/* A string borrowed from a frame (not NUL-terminated) or a C string. */
struct proto_str {
	const char *p; /* NULL = absent */
	uint32_t len;
};

/* Bytes borrowed from a frame: a bin field, or raw msgpack (row data). */
struct proto_bytes {
	const uint8_t *p; /* NULL = absent */
	uint32_t len;
};

/*
 * A position in the change log: the commit LSN of the change and its index
 * within that commit (the Redis stream ID <lsn>-<idx>).  Totally ordered;
 * {0, 0} means "none".  Wire form: [lsn, idx].
 */
struct proto_cursor {
	uint64_t lsn;
	uint32_t idx;
};

/*
 * A list field.  To encode, set n and items (a C array of n element
 * structs, or of struct proto_str for key lists).  A decoded list has
 * items NULL and raw/raw_len covering the already validated elements;
 * encoding a decoded list copies those bytes unchanged.
 */
struct proto_list {
	uint32_t n;
	const void *items;  /* encode: C array of n elements */
	const uint8_t *raw; /* decoded: msgpack of the n elements */
	size_t raw_len;
	const void *elem; /* decoded: element type (internal; lets the
			   * encoder refuse a list put in the wrong field) */
};

/* PROTO_LIST - a list to encode from a C array of n elements. */
#define PROTO_LIST(n, items) \
	((struct proto_list){ (uint32_t)(n), (items), NULL, 0, NULL })

/* ---- list elements ---- */

struct proto_op {
	uint32_t kind;		/* enum proto_op_kind (required) */
	struct proto_str table; /* required */
	struct proto_str id;	/* required */
	struct proto_str space; /* create: required; put: move to this space */
	struct proto_str field; /* set, unset, list_add/remove, incr */
	struct proto_bytes value; /* set, list_add/remove, incr (number) */
	struct proto_bytes data;  /* create, put: map of fields */
	uint64_t expect;	  /* expect_version; 0 = no expectation */
};

struct proto_record {
	struct proto_str table;	 /* required */
	struct proto_str id;	 /* required */
	struct proto_str space;	 /* required */
	uint64_t version;	 /* required, >= 1 */
	bool deleted;		 /* tombstone */
	struct proto_bytes data; /* map of fields; absent for tombstones */
	/* "dj": the fields as JSON text (an object) instead of data.  Only in
	 * the PAGE records of a BOOTSTRAP that asked for it: both ends hold
	 * the row as JSON, so neither has to convert it. */
	struct proto_str json;
};

struct proto_keyref {
	struct proto_str table; /* required */
	struct proto_str id;	/* required */
};

struct proto_subres {
	struct proto_str key; /* required: "space/<id>" or "rec/<t>/<id>" */
	int32_t code;	      /* 0 ok, or a weft_err (EPERM, ELIMIT...) */
	struct proto_str msg; /* why, when code != 0 */
};

struct proto_change {
	struct proto_cursor cursor; /* required: this change's position */
	struct proto_str key;	    /* the subscription key it matched */
	struct proto_str table;	    /* required */
	struct proto_str id;	    /* required */
	struct proto_str space;	    /* required */
	uint64_t version;	    /* required */
	uint32_t op;		    /* required: the op kind that made it */
	bool deleted;		    /* tombstone */
	struct proto_bytes data;    /* the row after the change, if visible */
};

/* ---- messages ---- */

struct proto_hello {
	uint64_t rid;		    /* request id, echoed in WELCOME/ERROR */
	uint32_t proto;		    /* required: PROTO_VERSION spoken */
	struct proto_str token;	    /* required: JWT */
	struct proto_str client_id; /* required: this store's client id */
	struct proto_cursor cursor; /* last change the client has applied */
	struct proto_str agent;	    /* "libweft/0.1.0", for logs */
};

struct proto_welcome {
	uint64_t rid;
	uint32_t proto;	       /* required: version the server speaks */
	struct proto_str user; /* required: user id from the token */
	struct proto_str node; /* server node name, for logs */
	uint64_t session;      /* session id, for logs */
	uint32_t heartbeat_ms; /* required: ping at least this often */
	uint32_t max_frame;    /* required: largest body accepted */
	uint32_t max_ops;      /* ops per transaction accepted */
};

struct proto_txn {
	uint64_t rid;
	struct proto_str client_id; /* required */
	uint64_t mid;		    /* required: mutation id, dense, >= 1 */
	struct proto_list ops;	    /* required: of struct proto_op, >= 1 */
};

struct proto_ack {
	uint64_t rid;
	uint64_t mid;		   /* required */
	bool replay;		   /* a resend: this is the stored result */
	struct proto_list records; /* of struct proto_record: touched rows */
};

struct proto_reject {
	uint64_t rid;
	uint64_t mid;		   /* required */
	int32_t code;		   /* required: weft_err reason */
	struct proto_str msg;	   /* required: human-readable reason */
	uint32_t opnum;		   /* 1-based op at fault; 0 = whole txn */
	struct proto_str field;	   /* field at fault, if any */
	bool replay;		   /* a resend: this is the stored result */
	struct proto_list records; /* of struct proto_record: server rows */
};

struct proto_fetch {
	uint64_t rid;
	struct proto_list keys; /* required: of struct proto_keyref */
};

struct proto_records {
	uint64_t rid;
	struct proto_list records; /* of struct proto_record */
	struct proto_list missing; /* of struct proto_keyref: absent or
				    * not visible (indistinguishable) */
};

struct proto_bootstrap {
	uint64_t rid;
	struct proto_str space;	  /* required */
	struct proto_bytes token; /* page token from the previous PAGE */
	uint32_t max_bytes;	  /* page size wanted; server caps it */
	bool json; /* records' fields may come as JSON text ("dj") */
};

struct proto_page {
	uint64_t rid;
	struct proto_str space;	    /* required */
	struct proto_list records;  /* of struct proto_record */
	struct proto_bytes next;    /* token of the next page; absent = last */
	struct proto_cursor cursor; /* snapshot position (first page) */
	uint64_t total;		    /* records in the space, if known */
};

struct proto_subscribe {
	uint64_t rid;
	struct proto_list keys;	    /* required: of struct proto_str */
	struct proto_cursor cursor; /* catch up from here (0 = live only) */
};

struct proto_subscribed {
	uint64_t rid;
	struct proto_list results; /* of struct proto_subres */
};

struct proto_push {
	struct proto_cursor cursor; /* required: cursor of the last change */
	struct proto_cursor prev;   /* cursor of the previous push to this
				     * session; {0,0} for the first */
	struct proto_list changes;  /* required: of struct proto_change */
};

struct proto_catchup {
	struct proto_list keys;	    /* required: of struct proto_str */
	struct proto_cursor oldest; /* oldest cursor still available */
	struct proto_str msg;
};

struct proto_error {
	uint64_t rid;	      /* request it answers; 0 = the session */
	int32_t code;	      /* required: weft_err */
	struct proto_str msg; /* required */
	uint64_t expected;    /* EGAP: the mutation id expected next */
	bool fatal;	      /* the sender closes the connection */
};

struct proto_ping {
	uint64_t nonce; /* echoed by PONG */
};

struct proto_backoff {
	uint64_t rid;	   /* request not processed (0 = whole session) */
	uint32_t retry_ms; /* required: wait at least this long */
	bool reconnect;	   /* close and reconnect (maybe elsewhere) */
	struct proto_str msg;
};

struct proto_msg {
	enum proto_type type;
	union {
		struct proto_hello hello;
		struct proto_welcome welcome;
		struct proto_txn txn;
		struct proto_ack ack;
		struct proto_reject reject;
		struct proto_fetch fetch;
		struct proto_records records;
		struct proto_bootstrap bootstrap;
		struct proto_page page;
		struct proto_subscribe subscribe; /* also UNSUBSCRIBE */
		struct proto_subscribed subscribed;
		struct proto_push push;
		struct proto_catchup catchup;
		struct proto_error error;
		struct proto_ping ping; /* also PONG */
		struct proto_backoff backoff;
	} u;
};

/* Decoder error detail: code plus a message naming the field. */
struct proto_err {
	int code;      /* the weft_err also returned */
	char path[96]; /* "ops[2].table", or "" for the frame */
	char msg[224]; /* "ops[2].table: expected str, got uint" */
};

/*
 * proto_decode - decode one frame body (without the length prefix) into
 * *msg.  Returns 0 or a weft_err with detail in *err: ETRUNCATED,
 * ETYPE, EDEPTH, ECOUNT, ETRAILING, EMISSING, EDUPFIELD, ERANGE,
 * ETOOBIG, EUNKNOWN, EENCODING, or EINVAL (a field that does not apply
 * to the op kind, such as data on a delete; data on a tombstone).
 * *msg borrows from body.  Allocates nothing; thread-safe.
 */
int proto_decode(const uint8_t *body, size_t len, struct proto_msg *msg,
		 struct proto_err *err);

/*
 * proto_encode - append one whole frame (length prefix and body) for msg
 * to out.  Returns 0 or, with out left as it was and detail in *err when
 * err is not NULL:
 *   WEFT_ETOOBIG  the body would exceed max_frame (0 = FRAME_MAX_HARD):
 *                 permanent for this message
 *   WEFT_EAGAIN   out reached its own cap (a full out-queue): retry later
 *   WEFT_EINVAL   msg breaks a rule the decoder enforces (a required field
 *                 absent, an op kind out of range, a decoded list put in a
 *                 field of another element type...)
 *   WEFT_ENOMEM
 * What it produces always decodes.  Thread-safe for distinct out buffers.
 */
int proto_encode(struct buf *out, const struct proto_msg *msg,
		 uint32_t max_frame, struct proto_err *err);

/* ---- reading decoded lists ---- */

struct proto_iter {
	const void *items;  /* list built for encoding, or NULL */
	uint32_t idx;	    /* next index into items */
	const uint8_t *p;   /* decoded list: next element */
	const uint8_t *end; /* decoded list: end of the elements */
	uint32_t left;	    /* elements not yet returned */
};

void proto_iter_init(struct proto_iter *it, const struct proto_list *l);

/*
 * proto_next_* - the next element of a list of that element type.
 * Returns 1 (an element), 0 (end), or a weft_err if the list was not one
 * produced by proto_decode for that element type.  Results borrow from
 * the frame body.  Lists built for encoding (items set) are read too.
 */
int proto_next_op(struct proto_iter *it, struct proto_op *op);
int proto_next_record(struct proto_iter *it, struct proto_record *rec);
int proto_next_keyref(struct proto_iter *it, struct proto_keyref *ref);
int proto_next_subres(struct proto_iter *it, struct proto_subres *res);
int proto_next_change(struct proto_iter *it, struct proto_change *ch);
int proto_next_str(struct proto_iter *it, struct proto_str *s);

/*
 * proto_encode_change - append one change to out as a PUSH element (its
 * msgpack map; no frame), checked as proto_encode checks it.  For a
 * sender that encodes a change once and puts it in many PUSH frames with
 * proto_list_changes().  0, or a weft_err with err filled (out is left as
 * it was).
 */
int proto_encode_change(struct buf *out, const struct proto_change *ch,
			struct proto_err *err);

/*
 * proto_list_changes - a list of n changes already encoded, back to back,
 * by proto_encode_change(), for the `changes` of a PUSH.  The encoder
 * copies the bytes as they are: the caller vouches that they are n
 * elements from proto_encode_change() (walking them again cost 6% of a
 * fanout node's CPU).
 */
struct proto_list proto_list_changes(uint32_t n, const uint8_t *raw,
				     size_t len);

/* proto_cursor_cmp - <0, 0, >0 as a is before, at or after b. */
int proto_cursor_cmp(struct proto_cursor a, struct proto_cursor b);

/* proto_str_c - a proto_str of a C string (NULL stays absent). */
struct proto_str proto_str_c(const char *s);

/* proto_str_eq - compare with a C string. */
bool proto_str_eq(struct proto_str s, const char *c);

#endif /* WEFT_PROTO_MSG_H */
