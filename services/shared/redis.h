/*
 * redis.h - connecting to Redis the way every weft service does: from a
 * redis://host:port[/db] URL, with a connect timeout, a read timeout and
 * TCP keepalive, so a silently dead server fails calls instead of
 * hanging them (hiredis 0.14 has no timeout of its own after connect).
 */
#ifndef WEFT_SVC_REDIS_H
#define WEFT_SVC_REDIS_H

#include <hiredis/hiredis.h>
#include <stddef.h>

/*
 * redis_open - connect to url; timeout_ms bounds the connect and every
 * later call.  Returns a context (the caller redisFree()s it), or NULL
 * with why filled in.
 */
redisContext *redis_open(const char *url, int timeout_ms, char *why,
			 size_t whylen);

#endif /* WEFT_SVC_REDIS_H */
