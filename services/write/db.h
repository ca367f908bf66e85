/*
 * db.h - weft-write's database side: a bounded job queue and a pool of
 * worker threads, each with its own Postgres connection.
 *
 * Transactions are group-committed: a worker takes up to batch_max queued
 * client transactions and sends them in one libpq pipeline as one Postgres
 * transaction (BEGIN; weft_apply() per client transaction; COMMIT), so one
 * WAL flush covers them all.  weft_apply() turns a client's mistake into a
 * stored rejection without raising, so one bad client transaction never
 * fails the others; a transient failure (deadlock, serialisation) rolls the
 * whole group back and it is retried.  If the connection dies, or the
 * outcome of COMMIT is unknown, every job of the group gets WEFT_EUNAVAILABLE
 * (retryable): never a false ack.  A resend of the same mutation id is then
 * answered from the stored result, so the client sees each effect once.
 *
 * Reads (fetch, bootstrap pages) are single statements on the same pool.
 */
#ifndef WEFT_WRITE_DB_H
#define WEFT_WRITE_DB_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"
#include "proto/msg.h"
#include "services/shared/auth.h"

enum job_kind {
	JOB_TXN,       /* weft_apply() */
	JOB_FETCH,     /* records by (table, id), authorised */
	JOB_BOOTSTRAP, /* one page of a space */
};

struct job;

/*
 * page_out - one bootstrap page as the worker builds it for the reply:
 * proto records whose strings point into the query's result and whose
 * data is msgpack in data.  (Built straight from the rows: a jansson tree
 * per record, parsed and packed again, was most of a page's cost.)
 */
struct page_out {
	bool denied;	/* the user is not a member of the space */
	char lsn[32];	/* pg_current_wal_lsn() before the page's query */
	bool has_total; /* page 1: the space's record count */
	uint64_t total; /* when has_total */
	char *next;	/* owned: the next page's token; NULL: the last */
	struct proto_record *recs; /* owned */
	uint32_t n;
	struct buf data; /* the records' data, msgpack */
	void *pgres;	 /* the PGresult the strings point into */
};

/*
 * job_done_fn - called exactly once per submitted job, on a worker
 * thread: status 0 with res (borrowed, valid during the call), or a
 * weft_err (WEFT_EUNAVAILABLE: retry later) with res NULL.  It must free
 * the job (job_free) or hand it on.
 */
typedef void (*job_done_fn)(struct job *job, int status, json_t *res);

struct job {
	struct job *next; /* queue link */
	enum job_kind kind;
	job_done_fn done;
	void *owner;	    /* the connection, for done() */
	uint64_t rid;	    /* request id to answer */
	uint64_t queued_ns; /* for latency metrics */
	bool taken;	    /* by a worker (db.c's own) */
	bool client_kept;   /* client_id is freed by db.c, not job_free */
	char user[AUTH_USER_MAX];
	/* JOB_TXN */
	char *client_id; /* owned */
	uint64_t mid;
	char *ops_json;	   /* owned: JSON array of ops, or NULL */
	char *reject_json; /* owned: a rejection decided before the db */
	/* a transaction of one set (fast_op 1) or unset (2) on an app table,
	 * without expect_version, may take the set-based path */
	int fast_op;
	char *fast_tbl, *fast_id, *fast_field; /* owned, when fast_op */
	char *fast_value; /* owned: JSON; "null" for unset */
	/* JOB_FETCH */
	char *keys_json; /* owned: [{"table":..,"id":..}, ...] */
	/* JOB_BOOTSTRAP */
	char *space; /* owned */
	char *after; /* owned: "tbl\x1fid" of the last row sent */
	uint32_t max_bytes;
	bool json;	       /* the client takes fields as JSON text */
	struct page_out *page; /* owned: the answer, when status is 0 */
};

/* job_free - free a job and the strings it owns; NULL is fine. */
void job_free(struct job *job);

struct db_config {
	const char *pg_url;
	int workers;	  /* Postgres connections */
	int batch_max;	  /* client transactions per Postgres transaction */
	int gather_us;	  /* a small group waits this long for more while
			   * another worker is in Postgres; 0: never */
	int queue_max;	  /* jobs waiting; beyond it: WEFT_EAGAIN */
	int max_record;	  /* bytes of one record's JSON; 0 = no limit */
	int keep_results; /* stored rejections kept per client */
	int page_rows;	  /* rows fetched per bootstrap query */
	int max_reply;	  /* bytes of rows one reply may carry: a txn touching
			   * more is rejected ELIMIT, a larger fetch refused */
	int64_t results_ttl_ms; /* stored rejections older are deleted; 0: never
				 */
	int64_t tombstone_ttl_ms; /* tombstones older are deleted; 0: never */
};

struct db_stats {
	uint64_t commits;	 /* Postgres transactions committed */
	uint64_t txns;		 /* client transactions answered */
	uint64_t fast;		 /* of which applied by weft_apply_fast() */
	uint64_t retries;	 /* groups retried after a transient error */
	uint64_t group_waits;	 /* times a worker waited for a group to fill */
	uint64_t unavailable;	 /* jobs answered WEFT_EUNAVAILABLE */
	uint64_t reads;		 /* fetches and bootstrap pages */
	uint64_t results_pruned; /* stored results deleted by age */
	uint64_t tombstones_deleted; /* tombstones deleted by age */
	uint64_t group_hist[8];	     /* group sizes: 1, 2-3, 4-7, ... 128+ */
	uint64_t group_txns;	     /* client transactions in those groups */
	/* a committed group's time in Postgres (its round trips, retries
	 * and commit): bucket k < 15 up to (2 << k) * 100 us, 15 beyond */
	uint64_t pg_hist[16];
	uint64_t pg_sum_us;
	/* a transaction's wait in the queue, until a worker took it: the
	 * same buckets */
	uint64_t queue_hist[16];
	uint64_t queue_sum_us;
	int queued;
	int connected; /* workers with a live connection */
};

struct db;

/* db_new - connect the pool and start its workers.  A worker that cannot
 * connect keeps retrying with backoff.  Errors: ENOMEM, ECONFIG. */
int db_new(struct db **out, const struct db_config *cfg);

/* db_submit - queue a job; takes ownership on success.  WEFT_EAGAIN when
 * the queue is full or the pool is stopping (the caller answers BACKOFF);
 * WEFT_EUNAVAILABLE when no worker has a connection (the caller answers
 * that at once, rather than queueing for a database that is down). */
int db_submit(struct db *db, struct job *job);

/* db_stats - a snapshot of the counters.  Thread-safe. */
void db_stats(struct db *db, struct db_stats *out);

/* db_free - stop accepting jobs, let the workers finish what is queued,
 * then disconnect.  NULL is fine. */
void db_free(struct db *db);

#endif /* WEFT_WRITE_DB_H */
