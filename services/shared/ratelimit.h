/*
 * ratelimit.h - a rate limit per key: weft-write's transactions per user.
 *
 * Each key may take `rate` tokens a second, and up to `burst` at once
 * after a quiet spell: a client that reconnects with a queue of offline
 * transactions sends them at full speed up to the burst, then at the rate.
 *
 * The generic cell rate algorithm: a key keeps one time, when its bucket
 * would next be full ("theoretical arrival time").  A take is allowed if
 * that time is at most (burst - 1) intervals ahead of now, and moves it
 * one interval on; a refusal says how long until one would be allowed.
 * A key whose time has passed has a full bucket and holds nothing worth
 * keeping, so the table drops such keys as it grows: it holds the keys
 * whose buckets are not full yet, and some that are, until the next sweep
 * of their shard.
 *
 * A refusal names the wait until a tenth of the burst is back (at most a
 * second past the first token), not one token: a client that sent a
 * window of requests and had them refused then sends a window that goes
 * through, instead of one request each millisecond and a window of
 * refusals after it.
 *
 * Thread-safe: the keys are spread over shards, each with its own lock.
 */
#ifndef WEFT_SVC_RATELIMIT_H
#define WEFT_SVC_RATELIMIT_H

#include <stddef.h>
#include <stdint.h>

/* RATELIMIT_RATE_MAX - highest rate: one token a microsecond keeps the
 * interval (1e9 / rate ns) exact enough in whole nanoseconds */
#define RATELIMIT_RATE_MAX 1000000u

struct ratelimit;

/*
 * ratelimit_new - a limit of rate tokens a second per key, burst at once.
 * rate 0: no limit (every take is allowed, nothing is kept); otherwise
 * 1..RATELIMIT_RATE_MAX, and burst at least 1.  Caller owns; free with
 * ratelimit_free.  Aborts on out-of-memory (common/alloc.h).
 */
struct ratelimit *ratelimit_new(uint32_t rate, uint32_t burst);

/* ratelimit_free - frees rl and its keys; NULL does nothing */
void ratelimit_free(struct ratelimit *rl);

/*
 * ratelimit_take - takes one token from key's bucket at now_ns (a
 * monotonic clock, never going back for one rl).  Returns 0 when taken,
 * else how many milliseconds (at least 1) until a tenth of the burst (at
 * least one token, at most a second past it) is back; a refused take
 * takes nothing.  key is borrowed for the call.
 */
uint32_t ratelimit_take(struct ratelimit *rl, const char *key, uint64_t now_ns);

/*
 * ratelimit_refund - gives back a token key took, for a request that was
 * then not served after all (the queue was full).  Nothing if key holds
 * none (its bucket is full).  key is borrowed for the call.
 */
void ratelimit_refund(struct ratelimit *rl, const char *key, uint64_t now_ns);

/* ratelimit_keys - how many keys rl holds now (for metrics and tests) */
size_t ratelimit_keys(struct ratelimit *rl);

#endif
