/*
 * weft-relay - tails the outbox through logical decoding into a Redis
 * stream, in commit order, with IDs that make replays duplicates (see
 * relay.h for the engine and its states).  Run two: one is active, the
 * other waits for the replication slot and takes over when it frees.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>

#include <weft/error.h>

#include "common/config.h"
#include "common/log.h"
#include "services/relay/relay.h"
#include "services/shared/http.h"
#include "services/shared/svc.h"

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

static const char *const state_names[] = { "connecting", "standby", "active" };

static bool
health(void *arg, struct buf *out)
{
	struct relay_stats st;

	(void)arg;
	relay_stats(&st);
	if (stop_signal) {
		buf_appendf(out, "stopping");
		return false;
	}
	buf_appendf(out, "%s: %s",
		    st.state == RELAY_CONNECTING ? "unavailable" : "ok",
		    state_names[st.state]);
	return st.state != RELAY_CONNECTING;
}

static void
metrics(void *arg, struct buf *out)
{
	static const double batch_le[] = { 1, 3, 7, 15, 31, 63, 127 };
	double lag_le[15];
	struct relay_stats st;

	(void)arg;
	relay_stats(&st);
	metric_gauge(out, "weft_relay_active",
		     "1 if this relay holds the slot and streams",
		     st.state == RELAY_ACTIVE);
	metric_counter(out, "weft_relay_takeovers_total",
		       "times this relay became the active one", st.takeovers);
	metric_counter(out, "weft_relay_rows_total", "stream entries appended",
		       st.rows);
	metric_counter(out, "weft_relay_duplicates_total",
		       "entries re-sent that Redis already held",
		       st.duplicates);
	metric_counter(out, "weft_relay_txns_total", "commits relayed",
		       st.txns);
	metric_counter(out, "weft_relay_redis_errors_total",
		       "failed Redis connects and pipelines", st.redis_errors);
	metric_counter(out, "weft_relay_pg_errors_total",
		       "failed Postgres connects and streams", st.pg_errors);
	metric_counter(out, "weft_relay_outbox_pruned_total",
		       "outbox rows deleted after the retention", st.pruned);
	metric_gauge(out, "weft_relay_confirmed_lsn",
		     "WAL position confirmed to Postgres",
		     (double)st.confirmed);
	metric_gauge(out, "weft_relay_lag_bytes",
		     "WAL bytes between the server's end and what is confirmed",
		     st.wal_end > st.confirmed
			     ? (double)(st.wal_end - st.confirmed)
			     : 0.0);
	metric_gauge(out, "weft_relay_lag_ms",
		     "commit to XADD answered, newest commit relayed",
		     st.last_lag_ms);
	metric_histogram(out, "weft_relay_batch_size",
			 "entries per Redis pipeline", batch_le, st.batch_hist,
			 7, 0);
	for (int k = 0; k < 15; k++)
		lag_le[k] = 0.25 * (double)(2u << k) / 1000.0;
	metric_histogram(out, "weft_relay_lag_seconds",
			 "commit to XADD answered, per flush", lag_le,
			 st.lag_hist, 15, st.lag_sum_s);
}

int
main(int argc, char **argv)
{
	const char *pg_url, *redis_url, *slot, *publication, *stream;
	const char *level = NULL;
	const char *http_url;
	int64_t batch, maxlen, retention, standby, lag_warn;
	const struct cfg_opt opts[] = {
		{ "pg-url", CFG_STR, &pg_url,
		  "postgresql://weft@127.0.0.1:54320/weft",
		  "Postgres connection URL (the role needs REPLICATION)", 0,
		  0 },
		{ "redis-url", CFG_STR, &redis_url, "redis://127.0.0.1:63790",
		  "Redis URL (redis://host:port[/db]); run it with "
		  "appendfsync always",
		  0, 0 },
		{ "slot", CFG_STR, &slot, "weft_relay",
		  "logical replication slot (created when missing)", 0, 0 },
		{ "publication", CFG_STR, &publication, "weft_outbox_pub",
		  "publication of the outbox table", 0, 0 },
		{ "stream", CFG_STR, &stream, "weft:changes",
		  "Redis stream key", 0, 0 },
		{ "batch-max", CFG_INT, &batch, "1000",
		  "XADDs per Redis pipeline", 1, 100000 },
		{ "stream-maxlen", CFG_INT, &maxlen, "1000000",
		  "entries the stream keeps (MAXLEN ~): the catch-up window",
		  1000, 1000000000 },
		{ "outbox-retention", CFG_DURATION, &retention, "1h",
		  "outbox rows older than this are deleted (0: never)", 0,
		  INT64_C(365) * 86400000 },
		{ "standby-retry", CFG_DURATION, &standby, "500ms",
		  "how often a standby tries to take the slot", 50, 60000 },
		{ "lag-warn", CFG_SIZE, &lag_warn, "256m",
		  "log a warning when this many WAL bytes are unconfirmed",
		  1 << 20, INT64_C(1) << 40 },
		{ "http", CFG_STR, &http_url, "http://127.0.0.1:7410",
		  "/healthz and /metrics listen URL (empty: none)", 0, 0 },
		{ "log-level", CFG_STR, &level, "info",
		  "debug, info, warn or error", 0, 0 },
	};
	const struct cfg_spec spec = {
		"weft-relay", "[options]",
		"Tails the outbox by logical decoding into a Redis stream, in "
		"commit order,\nexactly once per change.  Run two: one is "
		"active, the other takes over.",
		opts, sizeof(opts) / sizeof(opts[0])
	};
	struct relay_config rcfg;
	struct http_ops *http = NULL;
	char why[256];
	int rc = svc_args(&spec, argc, argv, &level);

	if (rc)
		return rc < 0 ? 0 : 1;
	rcfg = (struct relay_config){ pg_url,
				      redis_url,
				      slot,
				      publication,
				      stream,
				      (int)batch,
				      (long long)maxlen,
				      (int)(retention / 1000),
				      (int)standby,
				      (long long)lag_warn };
	if (http_url && *http_url &&
	    http_ops_start(&http, http_url, health, metrics, NULL, why,
			   sizeof(why)) != 0) {
		log_event(LOG_ERROR, "http_failed", "why=\"%s\"", why);
		return 1;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);
	log_event(LOG_INFO, "started", "slot=%s stream=%s", slot, stream);
	rc = relay_run(&rcfg, &stop_signal);
	http_ops_stop(http);
	log_event(LOG_INFO, "stopped", NULL);
	return rc ? 1 : 0;
}
