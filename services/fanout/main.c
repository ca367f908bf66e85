/*
 * weft-fanout - holds client sessions, reads the change stream and pushes
 * each change to the sessions subscribed to it (see fanout.h).  Nodes
 * share nothing: run as many as you need behind any TCP balancer.
 */
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>

#include <weft/error.h>

#include "common/clock.h"
#include "common/config.h"
#include "common/log.h"
#include "proto/frame.h"
#include "services/fanout/fanout.h"
#include "services/shared/auth.h"
#include "services/shared/http.h"
#include "services/shared/svc.h"

#include "common/banned.h"

/* FD_RESERVE - descriptors kept for Postgres, Redis, HTTP and logs */
#define FD_RESERVE 64

/* set by the signal handler, read by the main loop and the HTTP thread:
 * a lock-free atomic is both async-signal-safe and race-free */
static atomic_int stop_signal;
_Static_assert(ATOMIC_INT_LOCK_FREE == 2, "stop_signal must be lock-free");

static void
on_signal(int sig)
{
	stop_signal = sig;
}

static bool
health(void *arg, struct buf *out)
{
	struct fanout *f = arg;
	struct fanout_stats st;

	fanout_stats(f, &st);
	if (stop_signal) {
		buf_appendf(out, "stopping");
		return false;
	}
	if (!fanout_redis_ok(f)) {
		buf_appendf(out, "unavailable: the change stream is down");
		return false;
	}
	buf_appendf(out, "ok: %llu sessions",
		    (unsigned long long)st.sessions_open);
	return true;
}

static void
metrics(void *arg, struct buf *out)
{
	struct fanout *f = arg;
	struct fanout_stats st;

	fanout_stats(f, &st);
	metric_gauge(out, "weft_fanout_sessions", "sessions open",
		     (double)st.sessions_open);
	metric_counter(out, "weft_fanout_sessions_total", "sessions accepted",
		       st.sessions_total);
	metric_counter(out, "weft_fanout_sessions_refused_total",
		       "sessions refused: node full", st.sessions_refused);
	metric_gauge(out, "weft_fanout_subscriptions",
		     "subscriptions held (live and catching up)",
		     (double)st.subscriptions);
	metric_counter(out, "weft_fanout_subscribe_refused_total",
		       "subscriptions refused (not a member, bad key)",
		       st.subscribe_refused);
	metric_counter(out, "weft_fanout_entries_total", "stream entries read",
		       st.entries);
	metric_counter(out, "weft_fanout_pushes_total", "PUSH frames sent",
		       st.pushes);
	metric_counter(out, "weft_fanout_delivered_total",
		       "changes queued to sessions", st.delivered);
	metric_counter(out, "weft_fanout_coalesced_total",
		       "queued changes replaced by a newer version",
		       st.coalesced);
	metric_counter(out, "weft_fanout_overflows_total",
		       "session queues dropped (told to catch up)",
		       st.overflows);
	metric_counter(out, "weft_fanout_catchups_total",
		       "catch-ups served from the stream", st.catchups);
	metric_counter(out, "weft_fanout_catchup_unavailable_total",
		       "catch-ups beyond the stream window",
		       st.catchup_unavailable);
	metric_counter(out, "weft_fanout_revoked_total",
		       "subscriptions ended by a membership change",
		       st.revoked);
	metric_counter(out, "weft_fanout_regranted_total",
		       "refused subscriptions granted by a membership change",
		       st.regranted);
	metric_counter(out, "weft_fanout_subscribe_churned_total",
		       "grants answered EUNAVAILABLE: membership moved during "
		       "three passes, or a removal was not yet visible",
		       st.subscribe_churned);
	metric_counter(out, "weft_fanout_redis_errors_total",
		       "failed Redis connects and reads", st.redis_errors);
	metric_gauge(out, "weft_fanout_stream_lag_ms",
		     "commit to read, newest entry", st.stream_lag_ms);
}

int
main(int argc, char **argv)
{
	const char *listen_url, *tls_cert, *node, *pg_url, *redis_url, *stream;
	const char *secret, *pubkey_file, *http_url;
	const char *level = NULL;
	int64_t max_frame, max_sessions, max_subs, queue_max, heartbeat, idle;
	const struct cfg_opt opts[] = {
		{ "listen", CFG_STR, &listen_url, "tcp://127.0.0.1:7420",
		  "URL clients connect to: tcp://, tls+tcp:// or wss:// (with "
		  "--tls-cert), ws://",
		  0, 0 },
		{ "tls-cert", CFG_STR, &tls_cert, NULL,
		  "PEM file with the TLS certificate chain and its key", 0, 0 },
		{ "pg-url", CFG_STR, &pg_url,
		  "postgresql://weft@127.0.0.1:54320/weft",
		  "Postgres URL (membership checks at subscribe)", 0, 0 },
		{ "redis-url", CFG_STR, &redis_url, "redis://127.0.0.1:63790",
		  "Redis URL of the change stream", 0, 0 },
		{ "stream", CFG_STR, &stream, "weft:changes",
		  "Redis stream key", 0, 0 },
		{ "jwt-secret", CFG_STR, &secret, NULL,
		  "HS256 secret tokens are signed with (>= 32 bytes)", 0, 0 },
		{ "jwt-public-key", CFG_STR, &pubkey_file, NULL,
		  "PEM file of the RS256 public key (instead of a secret)", 0,
		  0 },
		{ "max-frame", CFG_SIZE, &max_frame, "64k",
		  "largest request body accepted", 1024, FRAME_MAX_HARD },
		{ "max-sessions", CFG_INT, &max_sessions, "15000",
		  "sessions on this node (also capped by the open-file "
		  "limit)",
		  1, 1000000 },
		{ "max-subs", CFG_INT, &max_subs, "256",
		  "subscriptions per session", 1, 100000 },
		{ "queue-max", CFG_INT, &queue_max, "4096",
		  "changes queued per session before it must catch up", 16,
		  1000000 },
		{ "heartbeat", CFG_DURATION, &heartbeat, "15s",
		  "ping interval, announced to clients: a session sent "
		  "nothing for this long gets a PING",
		  100, 3600000 },
		{ "idle-timeout", CFG_DURATION, &idle, "45s",
		  "close a session that sends nothing for this long", 1000,
		  86400000 },
		{ "http", CFG_STR, &http_url, "http://127.0.0.1:7421",
		  "/healthz and /metrics listen URL (empty: none)", 0, 0 },
		{ "node", CFG_STR, &node, "weft-fanout",
		  "name reported to clients and in logs", 0, 0 },
		{ "log-level", CFG_STR, &level, "info",
		  "debug, info, warn or error", 0, 0 },
	};
	const struct cfg_spec spec = {
		"weft-fanout", "[options]",
		"Holds client sessions and pushes each change of the stream to "
		"the sessions\nsubscribed to it.",
		opts, sizeof(opts) / sizeof(opts[0])
	};
	struct fanout_config fcfg;
	struct fanout *f = NULL;
	struct http_ops *http = NULL;
	struct auth *auth = NULL;
	struct rlimit rl;
	char why[256];
	int rc = svc_args(&spec, argc, argv, &level);

	if (rc)
		return rc < 0 ? 0 : 1;
	if (svc_auth("weft-fanout", secret, pubkey_file, &auth))
		return 1;
	/* a session is one descriptor: never accept more than we can hold */
	if (getrlimit(RLIMIT_NOFILE, &rl) == 0 &&
	    rl.rlim_cur != RLIM_INFINITY &&
	    (int64_t)rl.rlim_cur - FD_RESERVE < max_sessions) {
		int64_t cap = (int64_t)rl.rlim_cur - FD_RESERVE;

		log_event(LOG_WARN, "sessions_capped",
			  "max_sessions=%lld nofile=%llu msg=\"the open-file "
			  "limit caps sessions\"",
			  (long long)max_sessions,
			  (unsigned long long)rl.rlim_cur);
		max_sessions = cap > 1 ? cap : 1;
	}
	fcfg = (struct fanout_config){
		listen_url,
		tls_cert,
		node,
		pg_url,
		redis_url,
		stream,
		auth,
		(uint32_t)max_frame,
		(uint32_t)max_sessions,
		(uint32_t)max_subs,
		(uint32_t)queue_max,
		(uint32_t)heartbeat,
		(uint32_t)idle,
	};
	if (fanout_new(&f, &fcfg, why, sizeof(why)) != 0) {
		log_event(LOG_ERROR, "listen_failed", "why=\"%s\"", why);
		auth_free(auth);
		return 1;
	}
	if (http_url && *http_url &&
	    http_ops_start(&http, http_url, health, metrics, f, why,
			   sizeof(why)) != 0) {
		log_event(LOG_ERROR, "http_failed", "why=\"%s\"", why);
		fanout_free(f);
		auth_free(auth);
		return 1;
	}
	signal(SIGTERM, on_signal);
	signal(SIGINT, on_signal);
	signal(SIGPIPE, SIG_IGN);
	log_event(LOG_INFO, "started", "listen=%s node=%s max_sessions=%lld",
		  listen_url, node, (long long)max_sessions);
	while (!stop_signal)
		clock_sleep_ms(100);
	log_event(LOG_INFO, "stopping", "signal=%d", (int)stop_signal);
	http_ops_stop(http);
	fanout_free(f);
	auth_free(auth);
	log_event(LOG_INFO, "stopped", NULL);
	return 0;
}
