/*
 * weft-write - applies client transactions to Postgres, exactly once,
 * with an outbox row per changed record in the same transaction; serves
 * fetch-by-id and bootstrap pages.  This file only wires the parts
 * together: db.c (Postgres workers, group commit), server.c (clients),
 * services/shared/auth.c (tokens).
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <weft/error.h>

#include "common/clock.h"
#include "common/config.h"
#include "common/log.h"
#include "proto/frame.h"
#include "services/shared/auth.h"
#include "services/shared/http.h"
#include "services/shared/migrate.h"
#include "services/shared/ratelimit.h"
#include "services/shared/svc.h"
#include "services/write/db.h"
#include "services/write/server.h"

#include "common/banned.h"

/* set by the signal handler, read by the main loop and the HTTP thread:
 * a lock-free atomic is both async-signal-safe and race-free */
static atomic_int stop_signal;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "stop_signal must be lock-free");

static void
on_signal(int sig)
{
	stop_signal = sig;
}

/* what /healthz and /metrics read */
struct ops_view {
	struct db *db;
	struct server *srv;
	int workers;
};

static bool
health(void *arg, struct buf *out)
{
	struct ops_view *v = arg;
	struct db_stats ds;

	db_stats(v->db, &ds);
	if (stop_signal) {
		buf_appendf(out, "draining");
		return false;
	}
	buf_appendf(out, "%s: %d of %d postgres connections up",
		    ds.connected > 0 ? "ok" : "unavailable", ds.connected,
		    v->workers);
	return ds.connected > 0;
}

static void
metrics(void *arg, struct buf *out)
{
	static const double group_le[] = { 1, 3, 7, 15, 31, 63, 127 };
	struct ops_view *v = arg;
	struct server_stats ss;
	struct db_stats ds;
	double lat_le[15];

	db_stats(v->db, &ds);
	server_stats(v->srv, &ss);
	metric_counter(out, "weft_write_connections_total",
		       "client connections accepted", ss.conns);
	metric_gauge(out, "weft_write_connections_open",
		     "client connections open", (double)ss.open);
	metric_counter(out, "weft_write_requests_total", "frames received",
		       ss.requests);
	metric_counter(out, "weft_write_bad_frames_total",
		       "frames the decoder refused", ss.bad_frames);
	metric_counter(out, "weft_write_auth_failures_total",
		       "HELLOs with a bad token", ss.auth_failed);
	metric_counter(out, "weft_write_backoffs_total",
		       "requests refused with BACKOFF (queue full)",
		       ss.backoffs);
	metric_counter(out, "weft_write_rate_limited_total",
		       "transactions refused with BACKOFF: their user was over "
		       "--user-rate",
		       ss.rate_limited);
	metric_gauge(out, "weft_write_rate_users",
		     "users the rate limit tracks (their buckets not yet "
		     "full again, and some that are, until a sweep)",
		     (double)ss.rate_users);
	metric_counter(out, "weft_write_txns_total",
		       "client transactions answered", ds.txns);
	metric_counter(out, "weft_write_fast_txns_total",
		       "client transactions applied set-based "
		       "(weft_apply_fast)",
		       ds.fast);
	metric_counter(out, "weft_write_results_pruned_total",
		       "stored rejections deleted for age (--results-ttl)",
		       ds.results_pruned);
	metric_counter(out, "weft_write_tombstones_deleted_total",
		       "tombstones deleted for age (--tombstone-ttl)",
		       ds.tombstones_deleted);
	metric_counter(out, "weft_write_commits_total",
		       "Postgres transactions committed (groups)", ds.commits);
	metric_counter(out, "weft_write_group_waits_total",
		       "times a worker held a small group back for more "
		       "(--group-wait-us)",
		       ds.group_waits);
	metric_counter(out, "weft_write_group_retries_total",
		       "groups retried after a deadlock or serialisation "
		       "failure",
		       ds.retries);
	metric_counter(out, "weft_write_unavailable_total",
		       "requests answered EUNAVAILABLE (database trouble)",
		       ds.unavailable);
	metric_counter(out, "weft_write_reads_total",
		       "fetches and bootstrap pages served", ds.reads);
	metric_gauge(out, "weft_write_queue_depth",
		     "requests waiting for Postgres", ds.queued);
	metric_gauge(out, "weft_write_pg_connections",
		     "Postgres connections up", ds.connected);
	metric_gauge(out, "weft_write_pg_workers",
		     "Postgres connections configured", v->workers);
	buf_appendf(out, "# HELP weft_write_rejections_total rejected client "
			 "transactions by reason\n"
			 "# TYPE weft_write_rejections_total counter\n");
	for (int i = 1; i < 64; i++)
		if (ss.rejects[i])
			buf_appendf(out,
				    "weft_write_rejections_total{code=\"%s\"} "
				    "%llu\n",
				    weft_errname(-i),
				    (unsigned long long)ss.rejects[i]);
	metric_histogram(out, "weft_write_group_size",
			 "client transactions per Postgres transaction",
			 group_le, ds.group_hist, 7, (double)ds.group_txns);
	for (int k = 0; k < 15; k++)
		lat_le[k] = (double)(2u << k) * 100e-6;
	metric_histogram(out, "weft_write_group_seconds",
			 "a committed group's time in Postgres, its commit"
			 " included",
			 lat_le, ds.pg_hist, 15, (double)ds.pg_sum_us / 1e6);
	metric_histogram(out, "weft_write_queue_seconds",
			 "a client transaction's wait in the queue, until a "
			 "worker took it",
			 lat_le, ds.queue_hist, 15,
			 (double)ds.queue_sum_us / 1e6);
	metric_histogram(out, "weft_write_txn_latency_seconds",
			 "client transaction queued to answered", lat_le,
			 ss.lat_hist, 15, (double)ss.lat_sum_us / 1e6);
}

int
main(int argc, char **argv)
{
	const char *listen_url, *pg_url, *secret, *pubkey_file, *node;
	const char *level = NULL;
	const char *schema_path, *http_url, *migrations, *tls_cert;
	bool migrate_only;
	int64_t workers, batch, queue, max_frame, max_ops, max_record, max_out;
	int64_t page_bytes, heartbeat, idle, retry, keep, results_ttl;
	int64_t tombstone_ttl, gather, user_rate, user_burst;
	const struct cfg_opt opts[] = {
		{ "listen", CFG_STR, &listen_url, "tcp://127.0.0.1:7400",
		  "URL clients connect to: tcp://, tls+tcp:// or wss:// (with "
		  "--tls-cert), ws://",
		  0, 0 },
		{ "tls-cert", CFG_STR, &tls_cert, NULL,
		  "PEM file with the TLS certificate chain and its key", 0, 0 },
		{ "pg-url", CFG_STR, &pg_url,
		  "postgresql://weft@127.0.0.1:54320/weft",
		  "Postgres connection URL", 0, 0 },
		{ "jwt-secret", CFG_STR, &secret, NULL,
		  "HS256 secret tokens are signed with (>= 32 bytes)", 0, 0 },
		{ "jwt-public-key", CFG_STR, &pubkey_file, NULL,
		  "PEM file of the RS256 public key (instead of a secret)", 0,
		  0 },
		{ "pg-workers", CFG_INT, &workers, "2",
		  "Postgres connections (each commits groups in turn)", 1,
		  256 },
		{ "batch-max", CFG_INT, &batch, "64",
		  "client transactions per Postgres transaction", 1, 4096 },
		{ "group-wait-us", CFG_INT, &gather, "1000",
		  "while another worker is in Postgres, a group short of "
		  "--batch-max waits up to this long (from its oldest "
		  "transaction's arrival) for more (0: never)",
		  0, 1000000 },
		{ "queue-max", CFG_INT, &queue, "4096",
		  "requests waiting for Postgres; beyond it: BACKOFF", 1,
		  1000000 },
		{ "max-frame", CFG_SIZE, &max_frame, "1m",
		  "largest request body accepted", 1024, FRAME_MAX_HARD },
		{ "max-ops", CFG_INT, &max_ops, "256", "ops per transaction", 1,
		  65536 },
		{ "max-record", CFG_SIZE, &max_record, "256k",
		  "largest record (bytes of its data)", 64, 64 << 20 },
		{ "max-out", CFG_SIZE, &max_out, "8m",
		  "replies queued to one slow client before it is closed",
		  64 << 10, 1 << 30 },
		{ "page-bytes", CFG_SIZE, &page_bytes, "256k",
		  "bootstrap page size (default and cap)", 4096, 16 << 20 },
		{ "keep-results", CFG_INT, &keep, "256",
		  "rejections kept per client for resends (an ack's resend "
		  "is answered from the outbox)",
		  1, 100000 },
		{ "results-ttl", CFG_DURATION, &results_ttl, "7d",
		  "stored rejections older than this are deleted (0: never)", 0,
		  INT64_C(3650) * 86400000 },
		{ "tombstone-ttl", CFG_DURATION, &tombstone_ttl, "7d",
		  "tombstones (deleted records) older than this are deleted "
		  "(0: never)",
		  0, INT64_C(3650) * 86400000 },
		{ "heartbeat", CFG_DURATION, &heartbeat, "15s",
		  "ping interval announced to clients", 100, 3600000 },
		{ "idle-timeout", CFG_DURATION, &idle, "2m",
		  "close a client that sends nothing for this long", 1000,
		  86400000 },
		{ "retry-after", CFG_DURATION, &retry, "200ms",
		  "delay asked of clients when overloaded", 1, 60000 },
		{ "user-rate", CFG_INT, &user_rate, "1000",
		  "transactions a second one user may send, over all its "
		  "clients; beyond it: BACKOFF (0: no limit)",
		  0, RATELIMIT_RATE_MAX },
		{ "user-burst", CFG_INT, &user_burst, "10000",
		  "transactions one user may send at once after a quiet "
		  "spell (an offline queue goes at full speed up to this)",
		  1, 10000000 },
		{ "http", CFG_STR, &http_url, "http://127.0.0.1:7401",
		  "where /healthz and /metrics are served (empty: off)", 0, 0 },
		{ "schema", CFG_STR, &schema_path, NULL,
		  "app schema file (JSON); without one any table and field "
		  "is accepted",
		  0, 0 },
		{ "migrate", CFG_BOOL, &migrate_only, "false",
		  "apply the database migrations, then exit", 0, 0 },
		{ "migrations-dir", CFG_STR, &migrations, WEFT_MIGRATIONS_DIR,
		  "where NNNN_name.sql migrations are", 0, 0 },
		{ "node", CFG_STR, &node, "weft-write",
		  "name reported to clients and in logs", 0, 0 },
		{ "log-level", CFG_STR, &level, "info",
		  "debug, info, warn or error", 0, 0 },
	};
	const struct cfg_spec spec = {
		"weft-write", "[options]",
		"Applies client transactions to Postgres exactly once, with "
		"an outbox row per change,\nand serves fetch and bootstrap "
		"reads.",
		opts, sizeof(opts) / sizeof(opts[0])
	};
	struct server_config scfg;
	struct db_config dcfg;
	struct server *srv = NULL;
	struct auth *auth = NULL;
	struct schema *schema = NULL;
	struct http_ops *http = NULL;
	struct ops_view view;
	struct db *db = NULL;
	char why[256];
	int rc;

	rc = svc_args(&spec, argc, argv, &level);
	if (rc)
		return rc < 0 ? 0 : 1;
	if (migrate_only) {
		int applied;

		rc = migrate_run(pg_url, migrations, &applied, why,
				 sizeof(why));
		if (rc) {
			fprintf(stderr, "weft-write: migrate: %s\n", why);
			return 3;
		}
		printf("weft-write: migrations applied: %d (up to date)\n",
		       applied);
		return 0;
	}
	if (svc_auth("weft-write", secret, pubkey_file, &auth))
		return 1;
	if (schema_path) {
		if (schema_load(&schema, schema_path, why, sizeof(why)) != 0) {
			fprintf(stderr, "weft-write: %s\n", why);
			auth_free(auth);
			return 1;
		}
	} else {
		log_event(LOG_WARN, "no_schema",
			  "msg=\"no --schema: any table and field accepted\"");
	}

	if (max_record > max_out / 4) {
		fprintf(stderr, "weft-write: --max-record must be at most a "
				"quarter of --max-out (an ack carries the "
				"rows)\n");
		auth_free(auth);
		schema_free(schema);
		return 1;
	}
	dcfg = (struct db_config){ .pg_url = pg_url,
				   .workers = (int)workers,
				   .batch_max = (int)batch,
				   .gather_us = (int)gather,
				   .queue_max = (int)queue,
				   .max_record = (int)max_record,
				   .keep_results = (int)keep,
				   .page_rows = 1000,
				   .max_reply = (int)(max_out / 2),
				   .results_ttl_ms = results_ttl,
				   .tombstone_ttl_ms = tombstone_ttl };
	db_new(&db, &dcfg);
	scfg = (struct server_config){
		listen_url,
		tls_cert,
		node,
		(uint32_t)max_frame,
		(uint32_t)max_ops,
		(uint32_t)max_record,
		(uint32_t)max_out,
		(uint32_t)page_bytes,
		(uint32_t)heartbeat,
		(uint32_t)idle,
		(uint32_t)retry,
		(uint32_t)user_rate,
		(uint32_t)user_burst,
	};
	if (server_new(&srv, &scfg, auth, schema, db, why, sizeof(why)) != 0) {
		log_event(LOG_ERROR, "listen_failed", "why=\"%s\"", why);
		db_free(db);
		auth_free(auth);
		schema_free(schema);
		return 1;
	}
	view = (struct ops_view){ db, srv, (int)workers };
	if (http_url && *http_url &&
	    http_ops_start(&http, http_url, health, metrics, &view, why,
			   sizeof(why)) != 0) {
		log_event(LOG_ERROR, "http_failed", "why=\"%s\"", why);
		server_free(srv);
		db_free(db);
		auth_free(auth);
		schema_free(schema);
		return 1;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);
	log_event(LOG_INFO, "started",
		  "listen=%s pg_workers=%lld batch_max=%lld", listen_url,
		  (long long)workers, (long long)batch);
	while (!stop_signal)
		clock_sleep_ms(100);
	log_event(LOG_INFO, "stopping", "signal=%d", (int)stop_signal);
	/* stop taking requests; answer and flush everything taken */
	if (server_drain(srv, 10000) != 0)
		log_event(LOG_WARN, "drain_timeout",
			  "msg=\"requests still in flight after 10 s\"");
	http_ops_stop(http); /* its /metrics reads srv */
	server_free(srv);
	db_free(db); /* finish what is queued */
	auth_free(auth);
	schema_free(schema);
	log_event(LOG_INFO, "stopped", NULL);
	return 0;
}
