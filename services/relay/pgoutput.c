/*
 * pgoutput.c - see pgoutput.h.  Formats: Postgres 15 documentation,
 * "Streaming Replication Protocol" (XLogData, keepalive, standby status
 * update) and "Logical Replication Message Formats" (protocol 1).
 */
#include "services/relay/pgoutput.h"

#include <string.h>

#include <weft/error.h>

#include "common/banned.h"

struct rd {
	const uint8_t *p;
	size_t n;
	int err;
};

static uint64_t
be(struct rd *r, size_t k)
{
	uint64_t v = 0;

	if (r->err)
		return 0;
	if (r->n < k) {
		r->err = WEFT_ETRUNCATED;
		return 0;
	}
	for (size_t i = 0; i < k; i++)
		v = v << 8 | r->p[i];
	r->p += k;
	r->n -= k;
	return v;
}

/* a NUL-terminated string */
static struct pgo_str
cstr(struct rd *r)
{
	struct pgo_str s = { NULL, 0 };
	const uint8_t *nul;

	if (r->err)
		return s;
	nul = memchr(r->p, '\0', r->n);
	if (!nul) {
		r->err = WEFT_ETRUNCATED;
		return s;
	}
	s.p = (const char *)r->p;
	s.len = (uint32_t)(nul - r->p);
	r->n -= s.len + 1u;
	r->p = nul + 1;
	return s;
}

int
pgo_copy_decode(const uint8_t *p, size_t n, struct pgo_copy *out)
{
	struct rd r = { p, n, 0 };

	memset(out, 0, sizeof(*out));
	out->kind = (char)be(&r, 1);
	switch (out->kind) {
	case 'w':
		out->wal_start = be(&r, 8);
		out->wal_end = be(&r, 8);
		out->send_time = (int64_t)be(&r, 8);
		out->data = r.p;
		out->len = r.n;
		break;
	case 'k':
		out->wal_end = be(&r, 8);
		out->send_time = (int64_t)be(&r, 8);
		out->reply_now = be(&r, 1) != 0;
		break;
	default:
		return r.err ? r.err : WEFT_EINVAL;
	}
	return r.err;
}

static int
tuple(struct rd *r, struct pgo_msg *m)
{
	uint64_t ncols = be(r, 2);

	if (r->err)
		return r->err;
	if (ncols > PGO_MAX_COLS)
		return WEFT_ECOUNT;
	m->ncols = (uint16_t)ncols;
	for (uint16_t i = 0; i < m->ncols; i++) {
		struct pgo_col *c = &m->cols[i];
		uint64_t len;

		c->kind = (enum pgo_col_kind)be(r, 1);
		c->value = (struct pgo_str){ NULL, 0 };
		switch (c->kind) {
		case PGO_COL_NULL:
		case PGO_COL_UNCHANGED:
			break;
		case PGO_COL_TEXT:
		case PGO_COL_BINARY:
			len = be(r, 4);
			if (r->err)
				return r->err;
			if (len > r->n)
				return WEFT_ETRUNCATED;
			c->value = (struct pgo_str){ (const char *)r->p,
						     (uint32_t)len };
			r->p += len;
			r->n -= len;
			break;
		default:
			return r->err ? r->err : WEFT_EINVAL;
		}
	}
	return r->err;
}

int
pgo_decode(const uint8_t *p, size_t n, struct pgo_msg *m)
{
	struct rd r = { p, n, 0 };
	uint64_t ncols;

	m->raw_kind = (char)be(&r, 1);
	m->kind = PGO_OTHER;
	m->ncols = 0;
	if (r.err)
		return r.err;
	switch (m->raw_kind) {
	case 'B':
		m->kind = PGO_BEGIN;
		m->final_lsn = be(&r, 8);
		m->commit_time = (int64_t)be(&r, 8);
		m->xid = (uint32_t)be(&r, 4);
		break;
	case 'C':
		m->kind = PGO_COMMIT;
		(void)be(&r, 1); /* flags, unused */
		m->commit_lsn = be(&r, 8);
		m->end_lsn = be(&r, 8);
		m->commit_time = (int64_t)be(&r, 8);
		break;
	case 'R':
		m->kind = PGO_RELATION;
		m->relid = (uint32_t)be(&r, 4);
		m->nspace = cstr(&r);
		m->relname = cstr(&r);
		(void)be(&r, 1); /* replica identity */
		ncols = be(&r, 2);
		if (r.err)
			return r.err;
		if (ncols > PGO_MAX_COLS)
			return WEFT_ECOUNT;
		m->ncols = (uint16_t)ncols;
		for (uint16_t i = 0; i < m->ncols && !r.err; i++) {
			(void)be(&r, 1); /* flags: part of the key */
			m->names[i] = cstr(&r);
			(void)be(&r, 4); /* type oid */
			(void)be(&r, 4); /* type modifier */
		}
		break;
	case 'I':
		m->kind = PGO_INSERT;
		m->relid = (uint32_t)be(&r, 4);
		if (be(&r, 1) != 'N' && !r.err)
			return WEFT_EINVAL;
		if (!r.err)
			return tuple(&r, m);
		break;
	case 'O': /* origin */
	case 'Y': /* type */
	case 'U': /* update */
	case 'D': /* delete */
	case 'T': /* truncate */
	case 'M': /* logical message */
		break;
	default:
		return WEFT_EINVAL;
	}
	return r.err;
}

static void
put_be(uint8_t *out, uint64_t v, size_t k)
{
	for (size_t i = 0; i < k; i++)
		out[i] = (uint8_t)(v >> (8 * (k - 1 - i)));
}

void
pgo_status_update(uint8_t out[34], uint64_t write_lsn, uint64_t flush_lsn,
		  int64_t now_us, bool reply)
{
	out[0] = 'r';
	put_be(out + 1, write_lsn, 8);
	put_be(out + 9, flush_lsn, 8);
	put_be(out + 17, flush_lsn, 8); /* applied = flushed */
	put_be(out + 25, (uint64_t)(now_us - PGO_EPOCH_OFFSET_US), 8);
	out[33] = reply ? 1 : 0;
}
