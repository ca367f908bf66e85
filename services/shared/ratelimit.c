/*
 * ratelimit.c - a rate limit per key (see ratelimit.h).
 *
 * Keys live in RL_SHARDS chained hash tables, each under its own lock, so
 * threads taking tokens for different users seldom meet.  A shard drops
 * its full-bucket keys when it has grown to twice what its last sweep
 * left, and to at least half its slots (and RL_SWEEP_MIN): a sweep walks
 * every slot, and the inserts since the last one pay for it, so a take
 * stays O(1) amortised even after a peak has grown the slots.
 */
#include "services/shared/ratelimit.h"

#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/alloc.h"
#include "common/hash.h"

#include "common/banned.h"

/* RL_SHARDS - independent tables: enough that nng's few task threads
 * rarely wait on each other's lock */
#define RL_SHARDS 16

/* RL_SWEEP_MIN - a shard never sweeps below this many keys: a sweep of a
 * handful would cost more than the memory it frees */
#define RL_SWEEP_MIN 64

/* RL_REFILL_MAX_NS - a refusal waits for a tenth of the burst, but never
 * more than this past the first token: with a large burst and a low rate
 * a tenth could be minutes */
#define RL_REFILL_MAX_NS 1000000000ull

struct rl_key {
	struct rl_key *next; /* in its slot's chain */
	uint32_t hash;	     /* of key */
	uint64_t full_ns;    /* when the bucket is full again */
	char key[];	     /* NUL-terminated */
};

struct rl_shard {
	pthread_mutex_t mu; /* everything below */
	struct rl_key **slot;
	size_t nslots; /* a power of two */
	size_t n;      /* keys held */
	size_t sweep_at;
};

struct ratelimit {
	uint64_t interval_ns;  /* between tokens; 0: no limit */
	uint64_t tolerance_ns; /* (burst - 1) intervals */
	uint64_t refill_ns;    /* a refusal's wait past the first token */
	struct rl_shard shard[RL_SHARDS];
};

struct ratelimit *
ratelimit_new(uint32_t rate, uint32_t burst)
{
	struct ratelimit *rl = xcalloc(1, sizeof(*rl));

	if (rate > 0) {
		if (rate > RATELIMIT_RATE_MAX)
			rate = RATELIMIT_RATE_MAX;
		rl->interval_ns = 1000000000u / rate;
		rl->tolerance_ns = rl->interval_ns * (burst ? burst - 1 : 0);
		/* a tenth of the burst: burst / 10 - 1 tokens past one */
		rl->refill_ns =
			burst >= 20 ? rl->interval_ns * (burst / 10 - 1) : 0;
		if (rl->refill_ns > RL_REFILL_MAX_NS)
			rl->refill_ns = RL_REFILL_MAX_NS;
	}
	for (int i = 0; i < RL_SHARDS; i++) {
		struct rl_shard *sh = &rl->shard[i];

		pthread_mutex_init(&sh->mu, NULL);
		sh->nslots = 16;
		sh->slot = xcalloc(sh->nslots, sizeof(*sh->slot));
		sh->sweep_at = RL_SWEEP_MIN;
	}
	return rl;
}

void
ratelimit_free(struct ratelimit *rl)
{
	if (!rl)
		return;
	for (int i = 0; i < RL_SHARDS; i++) {
		struct rl_shard *sh = &rl->shard[i];

		for (size_t s = 0; s < sh->nslots; s++) {
			struct rl_key *k = sh->slot[s], *next;

			for (; k; k = next) {
				next = k->next;
				free(k);
			}
		}
		free(sh->slot);
		pthread_mutex_destroy(&sh->mu);
	}
	free(rl);
}

static size_t
slot_of(const struct rl_shard *sh, uint32_t hash)
{
	return (hash / RL_SHARDS) & (sh->nslots - 1);
}

/* sh->mu held: drop the keys whose buckets are full by now */
static void
shard_sweep(struct rl_shard *sh, uint64_t now_ns)
{
	for (size_t s = 0; s < sh->nslots; s++) {
		struct rl_key **pp = &sh->slot[s];

		while (*pp) {
			struct rl_key *k = *pp;

			if (k->full_ns <= now_ns) {
				*pp = k->next;
				free(k);
				sh->n--;
			} else {
				pp = &k->next;
			}
		}
	}
	sh->sweep_at = sh->n * 2 > RL_SWEEP_MIN ? sh->n * 2 : RL_SWEEP_MIN;
	if (sh->sweep_at < sh->nslots / 2)
		sh->sweep_at = sh->nslots / 2;
}

/* sh->mu held: twice the slots, once they are fewer than the keys */
static void
shard_grow(struct rl_shard *sh)
{
	size_t old = sh->nslots;
	struct rl_key **was = sh->slot;

	sh->nslots = old * 2;
	sh->slot = xcalloc(sh->nslots, sizeof(*sh->slot));
	for (size_t s = 0; s < old; s++) {
		struct rl_key *k = was[s], *next;

		for (; k; k = next) {
			size_t to = slot_of(sh, k->hash);

			next = k->next;
			k->next = sh->slot[to];
			sh->slot[to] = k;
		}
	}
	free(was);
}

/* sh->mu held: key's entry, made (with a full bucket) if it has none */
static struct rl_key *
shard_get(struct rl_shard *sh, const char *key, uint32_t hash, uint64_t now_ns)
{
	struct rl_key *k;
	size_t len;

	for (k = sh->slot[slot_of(sh, hash)]; k; k = k->next)
		if (k->hash == hash && strcmp(k->key, key) == 0)
			return k;
	if (sh->n >= sh->sweep_at)
		shard_sweep(sh, now_ns);
	if (sh->n >= sh->nslots)
		shard_grow(sh);
	len = strlen(key);
	k = xmalloc(sizeof(*k) + len + 1);
	memcpy(k->key, key, len + 1);
	k->hash = hash;
	k->full_ns = now_ns;
	k->next = sh->slot[slot_of(sh, hash)];
	sh->slot[slot_of(sh, hash)] = k;
	sh->n++;
	return k;
}

uint32_t
ratelimit_take(struct ratelimit *rl, const char *key, uint64_t now_ns)
{
	uint32_t hash = hash_str(HASH_INIT, key);
	struct rl_shard *sh = &rl->shard[hash % RL_SHARDS];
	struct rl_key *k;
	uint64_t full, wait_ms;

	if (rl->interval_ns == 0)
		return 0;
	pthread_mutex_lock(&sh->mu);
	k = shard_get(sh, key, hash, now_ns);
	full = k->full_ns > now_ns ? k->full_ns : now_ns;
	if (full - now_ns <= rl->tolerance_ns) {
		k->full_ns = full + rl->interval_ns;
		pthread_mutex_unlock(&sh->mu);
		return 0;
	}
	pthread_mutex_unlock(&sh->mu);
	/* one token is back once full - now is within the tolerance; the
	 * rest of the tenth, an interval each after it */
	wait_ms = (full - rl->tolerance_ns + rl->refill_ns - now_ns + 999999u) /
		  1000000u;
	return wait_ms > UINT32_MAX ? UINT32_MAX : (uint32_t)wait_ms;
}

void
ratelimit_refund(struct ratelimit *rl, const char *key, uint64_t now_ns)
{
	uint32_t hash = hash_str(HASH_INIT, key);
	struct rl_shard *sh = &rl->shard[hash % RL_SHARDS];

	if (rl->interval_ns == 0)
		return;
	pthread_mutex_lock(&sh->mu);
	for (struct rl_key *k = sh->slot[slot_of(sh, hash)]; k; k = k->next) {
		if (k->hash != hash || strcmp(k->key, key) != 0)
			continue;
		/* no further back than a full bucket */
		if (k->full_ns > now_ns)
			k->full_ns = k->full_ns - now_ns > rl->interval_ns
					     ? k->full_ns - rl->interval_ns
					     : now_ns;
		break;
	}
	pthread_mutex_unlock(&sh->mu);
}

size_t
ratelimit_keys(struct ratelimit *rl)
{
	size_t n = 0;

	for (int i = 0; i < RL_SHARDS; i++) {
		pthread_mutex_lock(&rl->shard[i].mu);
		n += rl->shard[i].n;
		pthread_mutex_unlock(&rl->shard[i].mu);
	}
	return n;
}
