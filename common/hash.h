/*
 * hash.h - FNV-1a, the one string hash of the in-memory tables (weft-write's
 * client pins and rate limits, the fanout's routes, libweft's indexes).
 *
 * Never stored or sent: a table may change its hash without a migration.
 * Not keyed, so a peer who picks its keys can make them collide; each
 * table that takes peer-chosen keys bounds its chains by other means (the
 * keys are authenticated user ids or subscriptions under a per-session
 * limit).
 */
#ifndef WEFT_COMMON_HASH_H
#define WEFT_COMMON_HASH_H

#include <stddef.h>
#include <stdint.h>

/* HASH_INIT - the value to start from (FNV-1a's 32-bit offset basis) */
#define HASH_INIT 2166136261u

/* hash_bytes - h continued over the n bytes at p */
static inline uint32_t
hash_bytes(uint32_t h, const void *p, size_t n)
{
	const unsigned char *b = p;

	for (size_t i = 0; i < n; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

/* hash_str - h continued over the string s (not its NUL) */
static inline uint32_t
hash_str(uint32_t h, const char *s)
{
	for (; *s; s++)
		h = (h ^ (unsigned char)*s) * 16777619u;
	return h;
}

#endif
