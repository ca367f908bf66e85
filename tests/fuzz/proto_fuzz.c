/*
 * proto_fuzz.c - proto_decode on arbitrary bodies.  Beyond "no crash, no
 * leak", an oracle: whatever decodes must re-encode (the encoder enforces
 * the decoder's rules), and that encoding must decode and re-encode to
 * the same bytes; every list must iterate to exactly its count.
 */
#include <stdlib.h>
#include <string.h>

#include "proto/msg.h"
#include "tests/fuzz/fuzz.h"

static void
walk_list(const struct proto_list *l, int kind)
{
	struct proto_iter it;
	union {
		struct proto_op op;
		struct proto_record rec;
		struct proto_keyref ref;
		struct proto_subres res;
		struct proto_change ch;
		struct proto_str s;
	} e;
	uint32_t n = 0;
	int rc;

	proto_iter_init(&it, l);
	for (;;) {
		switch (kind) {
		case 0:
			rc = proto_next_op(&it, &e.op);
			break;
		case 1:
			rc = proto_next_record(&it, &e.rec);
			break;
		case 2:
			rc = proto_next_keyref(&it, &e.ref);
			break;
		case 3:
			rc = proto_next_subres(&it, &e.res);
			break;
		case 4:
			rc = proto_next_change(&it, &e.ch);
			break;
		default:
			rc = proto_next_str(&it, &e.s);
			break;
		}
		if (rc != 1)
			break;
		n++;
	}
	if (rc != 0 || n != l->n)
		abort(); /* a validated list must iterate exactly */
}

static void
walk_lists(const struct proto_msg *m)
{
	switch (m->type) {
	case PROTO_TXN:
		walk_list(&m->u.txn.ops, 0);
		break;
	case PROTO_ACK:
		walk_list(&m->u.ack.records, 1);
		break;
	case PROTO_REJECT:
		walk_list(&m->u.reject.records, 1);
		break;
	case PROTO_FETCH:
		walk_list(&m->u.fetch.keys, 2);
		break;
	case PROTO_RECORDS:
		walk_list(&m->u.records.records, 1);
		walk_list(&m->u.records.missing, 2);
		break;
	case PROTO_PAGE:
		walk_list(&m->u.page.records, 1);
		break;
	case PROTO_SUBSCRIBE:
	case PROTO_UNSUBSCRIBE:
		walk_list(&m->u.subscribe.keys, 5);
		break;
	case PROTO_SUBSCRIBED:
		walk_list(&m->u.subscribed.results, 3);
		break;
	case PROTO_PUSH:
		walk_list(&m->u.push.changes, 4);
		break;
	case PROTO_CATCHUP:
		walk_list(&m->u.catchup.keys, 5);
		break;
	default:
		break;
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct proto_msg m, m2;
	struct proto_err err;
	struct buf a, b;

	if (proto_decode(data, size, &m, &err) != 0) {
		if (err.code == 0 || err.msg[0] == '\0')
			abort(); /* every failure must say why */
		return 0;
	}
	walk_lists(&m);
	buf_init(&a, 0);
	buf_init(&b, 0);
	if (proto_encode(&a, &m, 0, NULL) != 0)
		abort(); /* decoded but does not re-encode: asymmetry */
	if (proto_decode(a.data + 4, a.len - 4, &m2, &err) != 0)
		abort();
	if (proto_encode(&b, &m2, 0, NULL) != 0 || a.len != b.len ||
	    memcmp(a.data, b.data, a.len) != 0)
		abort();
	buf_fini(&a);
	buf_fini(&b);
	return 0;
}
