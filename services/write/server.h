/*
 * server.h - weft-write's client side: the nng stream listener, one
 * connection per client speaking the framed protocol of proto/, and the
 * translation between protocol messages and database jobs (db.h).
 *
 * Requests (TXN, FETCH, BOOTSTRAP) may be pipelined on one connection;
 * every reply carries the request's rid.  A client's transactions are
 * applied in the order they arrive.  When the job queue is full the server
 * answers BACKOFF with a retry delay instead of queueing without bound, and
 * so it does to a transaction whose user is over its rate
 * (services/shared/ratelimit.h), which then waits for no one else.
 */
#ifndef WEFT_WRITE_SERVER_H
#define WEFT_WRITE_SERVER_H

#include <stdint.h>

#include "proto/schema.h"
#include "services/shared/auth.h"
#include "services/write/db.h"

struct server_config {
	const char *listen_url; /* tcp://127.0.0.1:7400, tls+tcp://, ws://,
				 * wss:// */
	const char *tls_cert;	/* PEM cert + key: tls+tcp://, wss:// only */
	const char *node;	/* name sent in WELCOME */
	uint32_t max_frame;	/* largest request body accepted */
	uint32_t max_ops;	/* ops per transaction */
	uint32_t max_record;	/* bytes of one record's data */
	uint32_t max_out;	/* bytes queued to one slow client */
	uint32_t page_bytes;	/* default and cap of a bootstrap page */
	uint32_t heartbeat_ms;	/* announced in WELCOME */
	uint32_t idle_ms;	/* a silent client is closed after this */
	uint32_t retry_ms;	/* BACKOFF delay when overloaded */
	uint32_t user_rate;	/* transactions a second per user (0: no
				 * limit) */
	uint32_t user_burst;	/* ... and at once after a quiet spell */
};

struct server_stats {
	uint64_t conns;	     /* connections accepted */
	uint64_t open;	     /* connections open now */
	uint64_t requests;   /* frames decoded */
	uint64_t bad_frames; /* frames refused by the decoder */
	uint64_t auth_failed;
	uint64_t backoffs;     /* requests refused with BACKOFF (queue full) */
	uint64_t rate_limited; /* transactions refused with BACKOFF: their
				* user was over --user-rate */
	uint64_t rate_users;   /* users the rate limit holds now */
	uint64_t rejects[64];  /* rejections by -code (index 0..63) */
	uint64_t lat_hist[16]; /* txn latency, queued to answered: bucket
				* k holds [2^k, 2^(k+1)) * 100 us (0: < 200 us)
				*/
	uint64_t lat_sum_us;   /* sum of those latencies */
};

struct server;

/*
 * server_new - listen on cfg->listen_url and serve.  auth, schema (NULL:
 * accept any table and field) and db are borrowed and must outlive the
 * server.  Errors: WEFT_ECONFIG (bad URL,
 * address in use; a sentence in why), WEFT_ENOMEM.
 */
int server_new(struct server **out, const struct server_config *cfg,
	       const struct auth *auth, const struct schema *schema,
	       struct db *db, char *why, size_t whylen);

/* server_stats - a snapshot of the counters.  Thread-safe. */
void server_stats(struct server *srv, struct server_stats *out);

/*
 * server_drain - for a clean shutdown: stop accepting connections and
 * reading requests, then wait (up to timeout_ms) until every request
 * already taken has been answered and every reply sent.  Returns 0, or
 * WEFT_ETIMEDOUT if some were still in flight.  Call server_free next.
 */
int server_drain(struct server *srv, uint32_t timeout_ms);

/*
 * server_free - stop accepting, close every connection and wait until
 * each is gone.  Jobs still in the database queue are answered into the
 * void.  NULL is fine.
 */
void server_free(struct server *srv);

#endif /* WEFT_WRITE_SERVER_H */
