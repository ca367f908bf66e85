/*
 * relay.h - weft-relay's engine: tail the outbox through logical decoding
 * and append each inserted row to a Redis stream, in commit order, with
 * IDs that make every replay a rejected duplicate.
 *
 * State (one thread runs it; see relay_run):
 *
 *   CONNECTING --slot busy (another relay is active)--> STANDBY
 *       |   ^                                              |
 *       |   +-------------- retry every standby_ms --------+
 *       | START_REPLICATION ok
 *       v
 *    ACTIVE --connection lost / Redis down--> CONNECTING (after backoff)
 *
 * Exactly one relay is ACTIVE: Postgres lets one connection at a time
 * stream from a replication slot, so the slot itself is the lock.  When
 * the active relay dies, its walsender exits and a standby's next
 * START_REPLICATION succeeds.
 *
 * Guarantees: an LSN is confirmed to Postgres only after Redis has
 * answered every XADD up to it (with appendfsync always, after the AOF
 * fsync).  Entry IDs are <commit LSN>-<index in the commit>, so after any
 * restart the re-sent entries that Redis already holds are refused as
 * "equal or smaller than the top item" and counted as duplicates.
 */
#ifndef WEFT_RELAY_RELAY_H
#define WEFT_RELAY_RELAY_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

struct relay_config {
	const char *pg_url;
	const char *redis_url;
	const char *slot;	 /* replication slot name */
	const char *publication; /* the outbox's publication */
	const char *stream;	 /* Redis stream key */
	int batch_max;		 /* XADDs per pipeline */
	long long stream_maxlen; /* MAXLEN ~ of every XADD */
	int retention_s;	 /* outbox rows older than this are pruned */
	int standby_ms;		 /* a standby retries the slot this often */
	long long lag_warn;	 /* bytes behind before a warning */
};

enum relay_state { RELAY_CONNECTING, RELAY_STANDBY, RELAY_ACTIVE };

struct relay_stats {
	enum relay_state state;
	uint64_t rows;		/* entries appended (not counting dups) */
	uint64_t duplicates;	/* entries Redis already held */
	uint64_t txns;		/* commits relayed */
	uint64_t batches;	/* pipelines flushed */
	uint64_t batch_hist[8]; /* entries per pipeline: 1, 2-3, ... 128+ */
	uint64_t redis_errors;
	uint64_t pg_errors;
	uint64_t pruned;       /* outbox rows deleted */
	uint64_t takeovers;    /* times this relay became active */
	uint64_t confirmed;    /* LSN confirmed to Postgres */
	uint64_t wal_end;      /* the server's WAL end, as last reported */
	uint64_t lag_hist[16]; /* commit -> XADD answered: bucket k holds
				* [0.25 * 2^k, 0.25 * 2^(k+1)) ms (0: under
				* 0.5 ms), the last one everything above */
	double lag_sum_s;
	uint64_t lag_n;
	double last_lag_ms; /* of the newest commit relayed */
};

/* relay_run - run until *stop is set; 0 on a clean stop, or a weft_err
 * for a configuration that can never work (logged). */
int relay_run(const struct relay_config *cfg, const atomic_int *stop);

/* relay_stats - a snapshot of the counters.  Thread-safe. */
void relay_stats(struct relay_stats *out);

#endif /* WEFT_RELAY_RELAY_H */
