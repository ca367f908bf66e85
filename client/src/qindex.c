/*
 * qindex.c - which queued transactions touch which record, in memory.
 *
 * Rebasing a record needs the queued transactions that touch it, in
 * mutation-id order.  Keeping that as a table cost every commit one more
 * page in the WAL (a commit is mostly its page writes), so it lives here
 * and is rebuilt from the queue's frames when the store opens.
 *
 * It may hold more than the queue (an entry whose transaction has left):
 * readers look each frame up in weft_queue and skip the missing ones.  It
 * must never hold less: entries are added once the commit is durable,
 * and if an add cannot allocate, the index marks itself stale and the
 * store rebuilds it before the next use.
 */
#include <stdlib.h>
#include <string.h>

#include "client/src/internal.h"
#include "common/hash.h"

#include "common/banned.h"

/* QI_BUCKETS - hash buckets: a queue of tens of thousands of records
 * (a long offline session) keeps chains short */
#define QI_BUCKETS 4096

struct qentry {
	struct qentry *next;
	uint64_t *mids; /* ascending */
	size_t n, cap;
	char key[]; /* table \x1f id */
};

static uint32_t
qhash(const char *table, const char *id)
{
	uint32_t h = hash_str(HASH_INIT, table);

	h = hash_bytes(h, "\x1f", 1);
	return hash_str(h, id) % QI_BUCKETS;
}

static bool
qmatch(const struct qentry *e, const char *table, const char *id)
{
	size_t tl = strlen(table);

	return strncmp(e->key, table, tl) == 0 && e->key[tl] == '\x1f' &&
	       strcmp(e->key + tl + 1, id) == 0;
}

static struct qentry **
qfind(struct qindex *qi, const char *table, const char *id)
{
	struct qentry **pp = &qi->buckets[qhash(table, id)];

	while (*pp && !qmatch(*pp, table, id))
		pp = &(*pp)->next;
	return pp;
}

void
qindex_clear(struct qindex *qi)
{
	if (qi->buckets)
		for (size_t b = 0; b < QI_BUCKETS; b++)
			while (qi->buckets[b]) {
				struct qentry *e = qi->buckets[b];

				qi->buckets[b] = e->next;
				free(e->mids);
				free(e);
			}
	qi->entries = 0;
	qi->stale = false;
}

void
qindex_fini(struct qindex *qi)
{
	qindex_clear(qi);
	free(qi->buckets);
	qi->buckets = NULL;
}

void
qindex_add(struct qindex *qi, const char *table, const char *id, uint64_t mid)
{
	struct qentry **pp, *e;

	if (!qi->buckets &&
	    !(qi->buckets = calloc(QI_BUCKETS, sizeof(*qi->buckets)))) {
		qi->stale = true;
		return;
	}
	pp = qfind(qi, table, id);
	if (!(e = *pp)) {
		size_t tl = strlen(table), il = strlen(id);

		e = calloc(1, sizeof(*e) + tl + il + 2);
		if (!e) {
			qi->stale = true;
			return;
		}
		memcpy(e->key, table, tl);
		e->key[tl] = '\x1f';
		memcpy(e->key + tl + 1, id, il + 1);
		*pp = e;
		qi->entries++;
	}
	if (e->n && e->mids[e->n - 1] >= mid) {
		for (size_t i = 0; i < e->n; i++)
			if (e->mids[i] == mid)
				return; /* already there */
	}
	if (e->n == e->cap) {
		size_t cap = e->cap ? e->cap * 2 : 4;
		uint64_t *v = realloc(e->mids, cap * sizeof(*v));

		if (!v) {
			qi->stale = true;
			return;
		}
		e->mids = v;
		e->cap = cap;
	}
	/* ids only grow, except while the index is rebuilt in order */
	e->mids[e->n++] = mid;
	for (size_t i = e->n - 1; i > 0 && e->mids[i - 1] > e->mids[i]; i--) {
		uint64_t t = e->mids[i];

		e->mids[i] = e->mids[i - 1];
		e->mids[i - 1] = t;
	}
}

void
qindex_del(struct qindex *qi, const char *table, const char *id, uint64_t mid)
{
	struct qentry **pp, *e;

	if (!qi->buckets)
		return;
	pp = qfind(qi, table, id);
	if (!(e = *pp))
		return;
	for (size_t i = 0; i < e->n; i++)
		if (e->mids[i] == mid) {
			memmove(e->mids + i, e->mids + i + 1,
				(e->n - i - 1) * sizeof(*e->mids));
			e->n--;
			break;
		}
	if (e->n == 0) {
		*pp = e->next;
		free(e->mids);
		free(e);
		qi->entries--;
	}
}

size_t
qindex_get(struct qindex *qi, const char *table, const char *id,
	   const uint64_t **mids)
{
	struct qentry *e = qi->buckets ? *qfind(qi, table, id) : NULL;

	*mids = e ? e->mids : NULL;
	return e ? e->n : 0;
}
