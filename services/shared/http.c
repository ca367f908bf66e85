/*
 * http.c - /healthz and /metrics (see http.h).
 */
#include "services/shared/http.h"

#include <nng/nng.h>
#include <nng/supplemental/http/http.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/error.h>

#include "common/banned.h"

struct http_ops {
	nng_http_server *srv;
	http_health_fn health;
	http_metrics_fn metrics;
	void *arg;
};

static void
respond(nng_aio *aio, uint16_t status, const char *type, struct buf *body)
{
	nng_http_res *res;

	if (nng_http_res_alloc(&res) != 0) {
		nng_aio_finish(aio, NNG_ENOMEM);
		return;
	}
	nng_http_res_set_status(res, status);
	nng_http_res_set_header(res, "Content-Type", type);
	nng_http_res_copy_data(res, body->data ? (void *)body->data : "",
			       body->len);
	nng_aio_set_output(aio, 0, res);
	nng_aio_finish(aio, 0);
}

static void
health_cb(nng_aio *aio)
{
	struct http_ops *h =
		nng_http_handler_get_data(nng_aio_get_input(aio, 1));
	struct buf body;
	bool ok;

	buf_init(&body, 4096);
	ok = h->health(h->arg, &body);
	buf_append(&body, "\n", 1);
	respond(aio, ok ? 200 : 503, "text/plain", &body);
	buf_fini(&body);
}

static void
metrics_cb(nng_aio *aio)
{
	struct http_ops *h =
		nng_http_handler_get_data(nng_aio_get_input(aio, 1));
	struct buf body;

	buf_init(&body, 1 << 20);
	h->metrics(h->arg, &body);
	respond(aio, body.err ? 500 : 200, "text/plain; version=0.0.4", &body);
	buf_fini(&body);
}

static int
add(struct http_ops *h, const char *path, void (*cb)(nng_aio *))
{
	nng_http_handler *hd;
	int rv = nng_http_handler_alloc(&hd, path, cb);

	if (rv)
		return rv;
	nng_http_handler_set_method(hd, "GET");
	nng_http_handler_set_data(hd, h, NULL);
	rv = nng_http_server_add_handler(h->srv, hd);
	if (rv)
		nng_http_handler_free(hd);
	return rv;
}

int
http_ops_start(struct http_ops **out, const char *url, http_health_fn health,
	       http_metrics_fn metrics, void *arg, char *why, size_t whylen)
{
	struct http_ops *h = calloc(1, sizeof(*h));
	nng_url *u = NULL;
	int rv;

	*out = NULL;
	if (!h)
		return WEFT_ENOMEM;
	h->health = health;
	h->metrics = metrics;
	h->arg = arg;
	rv = nng_url_parse(&u, url);
	if (!rv)
		rv = nng_http_server_hold(&h->srv, u);
	if (!rv)
		rv = add(h, "/healthz", health_cb);
	if (!rv)
		rv = add(h, "/metrics", metrics_cb);
	if (!rv)
		rv = nng_http_server_start(h->srv);
	nng_url_free(u);
	if (rv) {
		snprintf(why, whylen, "cannot serve http on '%s': %s", url,
			 nng_strerror(rv));
		if (h->srv)
			nng_http_server_release(h->srv);
		free(h);
		return WEFT_ECONFIG;
	}
	*out = h;
	return 0;
}

void
http_ops_stop(struct http_ops *h)
{
	if (!h)
		return;
	nng_http_server_stop(h->srv);
	nng_http_server_release(h->srv);
	free(h);
}

void
metric_counter(struct buf *out, const char *name, const char *help,
	       uint64_t value)
{
	buf_appendf(out, "# HELP %s %s\n# TYPE %s counter\n%s %llu\n", name,
		    help, name, name, (unsigned long long)value);
}

void
metric_gauge(struct buf *out, const char *name, const char *help, double value)
{
	buf_appendf(out, "# HELP %s %s\n# TYPE %s gauge\n%s %.17g\n", name,
		    help, name, name, value);
}

void
metric_histogram(struct buf *out, const char *name, const char *help,
		 const double *le, const uint64_t *buckets, int n, double sum)
{
	uint64_t cum = 0;

	buf_appendf(out, "# HELP %s %s\n# TYPE %s histogram\n", name, help,
		    name);
	for (int i = 0; i < n; i++) {
		cum += buckets[i];
		buf_appendf(out, "%s_bucket{le=\"%.6g\"} %llu\n", name, le[i],
			    (unsigned long long)cum);
	}
	cum += buckets[n];
	buf_appendf(out,
		    "%s_bucket{le=\"+Inf\"} %llu\n%s_sum %.17g\n"
		    "%s_count %llu\n",
		    name, (unsigned long long)cum, name, sum, name,
		    (unsigned long long)cum);
}
