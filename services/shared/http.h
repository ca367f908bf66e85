/*
 * http.h - the operations endpoint every service runs: GET /healthz and
 * GET /metrics (Prometheus text format), on nng's HTTP server.
 *
 * The callbacks run on nng's threads; they must not block for long (they
 * read counters and format text).
 */
#ifndef WEFT_SVC_HTTP_H
#define WEFT_SVC_HTTP_H

#include <stdbool.h>
#include <stdint.h>

#include "common/buf.h"

/* health: true if serving; append a one-line reason either way */
typedef bool (*http_health_fn)(void *arg, struct buf *out);
/* metrics: append Prometheus text exposition */
typedef void (*http_metrics_fn)(void *arg, struct buf *out);

struct http_ops;

/*
 * http_ops_start - serve /healthz and /metrics at url (http://host:port).
 * arg is passed to both callbacks and must outlive the server.  Errors:
 * WEFT_ECONFIG (bad URL, address in use; why says which).  Caller owns
 * *out; stop with http_ops_stop.
 */
int http_ops_start(struct http_ops **out, const char *url,
		   http_health_fn health, http_metrics_fn metrics, void *arg,
		   char *why, size_t whylen);
void http_ops_stop(struct http_ops *h);

/* Prometheus helpers: one metric with its HELP and TYPE lines. */
void metric_counter(struct buf *out, const char *name, const char *help,
		    uint64_t value);
void metric_gauge(struct buf *out, const char *name, const char *help,
		  double value);
/*
 * metric_histogram - buckets[i] counts observations in
 * (le[i-1], le[i]]; the last count is +Inf.  n = number of finite le.
 */
void metric_histogram(struct buf *out, const char *name, const char *help,
		      const double *le, const uint64_t *buckets, int n,
		      double sum);

#endif /* WEFT_SVC_HTTP_H */
