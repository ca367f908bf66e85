/*
 * fanout.h - weft-fanout's engine: client sessions over nng streams,
 * subscriptions authorised against Postgres, and the change stream read
 * from Redis and routed to the sessions subscribed to each key.
 *
 * Threads:
 *   - nng's callback threads: frames from clients (HELLO, SUBSCRIBE,
 *     UNSUBSCRIBE, PING), send completions (which pump the next PUSH);
 *   - the auth thread: checks each SUBSCRIBE against Postgres;
 *   - the reader thread: XREAD BLOCK on the stream, catch-up reads, and
 *     routing into per-session queues;
 *   - the housekeeping thread: heartbeats, token expiry.
 *
 * Session state:
 *
 *   HELLO --valid HELLO--> LIVE --SIGTERM: BACKOFF reconnect--> DRAINING
 *     |                     |                                     |
 *     +--bad token----------+--error, idle, peer gone--> CLOSED <--+
 *
 * Subscription state (per session and key):
 *
 *   (auth thread) CHECKING --allowed, no cursor--> LIVE
 *                          --allowed, cursor-----> CATCHING_UP
 *                          --refused------------> (none; SUBSCRIBED
 *                                                  carries the error)
 *   (reader) CATCHING_UP --XRANGE (cursor, last read] queued--> LIVE
 *   (reader) LIVE --membership removed in the stream--> (none; told)
 *
 * Each change goes to a session at most once per push, newest version
 * per record (coalesced), in stream order.  Every PUSH carries the
 * cursor of the previous PUSH to that session, so a client sees any gap.
 */
#ifndef WEFT_FANOUT_FANOUT_H
#define WEFT_FANOUT_FANOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "services/shared/auth.h"

struct fanout_config {
	const char *listen_url;
	const char *tls_cert;
	const char *node;
	const char *pg_url;
	const char *redis_url;
	const char *stream;
	const struct auth *auth;
	uint32_t max_frame;    /* largest request body accepted */
	uint32_t max_sessions; /* sessions on this node */
	uint32_t max_subs;     /* subscriptions per session */
	uint32_t queue_max;    /* changes queued per session before it is
				* told to catch up */
	uint32_t heartbeat_ms; /* announced; the server pings this often */
	uint32_t idle_ms;      /* a session silent this long is closed */
};

struct fanout_stats {
	uint64_t sessions_total;
	uint64_t sessions_open;
	uint64_t sessions_refused; /* over max_sessions */
	uint64_t subscriptions;	   /* live + catching up, now */
	uint64_t subscribe_refused;
	uint64_t entries;   /* stream entries read */
	uint64_t pushes;    /* PUSH frames queued */
	uint64_t delivered; /* changes in those pushes */
	uint64_t coalesced; /* changes replaced by a newer one unsent */
	uint64_t overflows; /* queues dropped, catch-up asked */
	uint64_t catchups;  /* catch-up reads served */
	uint64_t catchup_unavailable;
	uint64_t revoked;   /* subscriptions ended by a membership change */
	uint64_t regranted; /* refused keys granted by a membership change */
	uint64_t subscribe_churned; /* grants withheld: churn, three times */
	uint64_t redis_errors;
	double stream_lag_ms; /* now - commit time of the newest entry */
};

struct fanout;

/* fanout_new - listen and start the threads.  Errors: ECONFIG (why). */
int fanout_new(struct fanout **out, const struct fanout_config *cfg, char *why,
	       size_t whylen);

/* fanout_stats - a snapshot.  Thread-safe. */
void fanout_stats(struct fanout *f, struct fanout_stats *out);

/* fanout_redis_ok - the stream reader is connected. */
bool fanout_redis_ok(struct fanout *f);

/*
 * fanout_free - stop accepting, tell every session to reconnect
 * elsewhere (BACKOFF, reconnect), give the sends up to 2 s, close them
 * all and stop the threads.  NULL is fine.
 */
void fanout_free(struct fanout *f);

#endif /* WEFT_FANOUT_FANOUT_H */
