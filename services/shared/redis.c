/*
 * redis.c - see redis.h.
 */
#include "services/shared/redis.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "common/banned.h"

redisContext *
redis_open(const char *url, int timeout_ms, char *why, size_t whylen)
{
	char host[256];
	const char *p, *colon, *slash;
	long port = 6379, db = 0;
	struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
	redisContext *c;
	size_t hl;

	if (strncmp(url, "redis://", 8) != 0) {
		snprintf(why, whylen, "'%s' is not a redis://host:port URL",
			 url);
		return NULL;
	}
	p = url + 8;
	slash = strchr(p, '/');
	colon = memchr(p, ':', slash ? (size_t)(slash - p) : strlen(p));
	hl = colon ? (size_t)(colon - p)
		   : (slash ? (size_t)(slash - p) : strlen(p));
	if (hl == 0 || hl >= sizeof(host)) {
		snprintf(why, whylen, "'%s': bad host", url);
		return NULL;
	}
	memcpy(host, p, hl);
	host[hl] = '\0';
	if (colon) {
		char *end;

		port = strtol(colon + 1, &end, 10);
		if (port < 1 || port > 65535 || (*end && *end != '/')) {
			snprintf(why, whylen, "'%s': bad port", url);
			return NULL;
		}
	}
	if (slash && slash[1]) {
		char *end;

		db = strtol(slash + 1, &end, 10);
		if (db < 0 || *end) {
			snprintf(why, whylen, "'%s': bad database number", url);
			return NULL;
		}
	}
	c = redisConnectWithTimeout(host, (int)port, tv);
	if (!c || c->err) {
		snprintf(why, whylen, "cannot connect to %s: %s", url,
			 c ? c->errstr : "out of memory");
		redisFree(c);
		return NULL;
	}
	redisSetTimeout(c, tv);
	redisEnableKeepAlive(c);
	if (db) {
		redisReply *r = redisCommand(c, "SELECT %ld", db);

		if (!r || r->type == REDIS_REPLY_ERROR) {
			snprintf(why, whylen, "SELECT %ld on %s failed", db,
				 url);
			freeReplyObject(r);
			redisFree(c);
			return NULL;
		}
		freeReplyObject(r);
	}
	return c;
}
