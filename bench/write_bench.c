/*
 * write_bench.c - load generator for bench/write: C clients, each on its
 * own connection, sending transactions of one `set` on a random record
 * (of 100k, in 100 spaces) to weft-write and waiting for each ack.
 *
 *   write_bench URL SECRET CLIENTS SECONDS
 *
 * Prints one line: clients, acked txns, TPS, ack latency p50/p99 (ms),
 * errors.  bench/write.sh runs it beside pgbench on the same Postgres.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "services/shared/auth.h"
#include "tests/lib/wclient.h"

#include "common/banned.h"

#define S(x)	      proto_str_c(x)
/* BENCH_LAT_MAX - latencies kept per client for percentiles */
#define BENCH_LAT_MAX 200000

struct client {
	pthread_t thread;
	int index;
	const char *url;
	const char *token;
	uint64_t deadline_ms;
	uint64_t acked;
	uint64_t errors;
	uint32_t *lat_us; /* one per acked txn, up to BENCH_LAT_MAX */
	uint64_t nlat;
};

static uint64_t run_id;

static void *
client_main(void *arg)
{
	struct client *cl = arg;
	struct proto_msg m = { .type = PROTO_HELLO }, r;
	char client_id[64], rid[16];
	unsigned seed = (unsigned)(run_id * 1000 + (uint64_t)cl->index);
	struct wclient c;
	uint64_t mid = 1;

	snprintf(client_id, sizeof(client_id), "bench-%llu-%d",
		 (unsigned long long)run_id, cl->index);
	if (wclient_dial(&c, cl->url) != 0) {
		cl->errors++;
		return NULL;
	}
	m.u.hello = (struct proto_hello){
		1,	  PROTO_VERSION,   S(cl->token), S(client_id),
		{ 0, 0 }, S("write_bench")
	};
	if (wclient_send(&c, &m) || wclient_recv(&c, &r, 5000) ||
	    r.type != PROTO_WELCOME) {
		cl->errors++;
		wclient_close(&c);
		return NULL;
	}
	while (clock_now_ms() < cl->deadline_ms) {
		uint8_t value[9] = { 0xce }; /* uint32 */
		uint32_t v = (uint32_t)rand_r(&seed);
		struct proto_op op;
		uint64_t t0;

		value[1] = (uint8_t)(v >> 24);
		value[2] = (uint8_t)(v >> 16);
		value[3] = (uint8_t)(v >> 8);
		value[4] = (uint8_t)v;
		snprintf(rid, sizeof(rid), "r%d", 1 + rand_r(&seed) % 100000);
		op = (struct proto_op){ .kind = PROTO_OP_SET,
					.table = S("items"),
					.id = S(rid),
					.field = S("n"),
					.value = { value, 5 } };
		m = (struct proto_msg){ .type = PROTO_TXN };
		m.u.txn = (struct proto_txn){ mid, S(client_id), mid,
					      PROTO_LIST(1, &op) };
		t0 = clock_now_ns();
		if (wclient_send(&c, &m) || wclient_recv(&c, &r, 30000)) {
			cl->errors++;
			break;
		}
		if (r.type == PROTO_BACKOFF) {
			usleep(r.u.backoff.retry_ms * 1000u);
			continue; /* same mid again */
		}
		if (r.type != PROTO_ACK) {
			cl->errors++;
			if (r.type == PROTO_ERROR)
				continue; /* EUNAVAILABLE: resend */
			mid++;
			continue;
		}
		if (cl->nlat < BENCH_LAT_MAX)
			cl->lat_us[cl->nlat++] =
				(uint32_t)((clock_now_ns() - t0) / 1000);
		cl->acked++;
		mid++;
	}
	wclient_close(&c);
	return NULL;
}

static int
cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
	struct client *cls;
	uint64_t acked = 0, errors = 0, nlat = 0, t0, k = 0;
	uint32_t *all;
	char *tok;
	int n, secs;

	if (argc != 5) {
		fprintf(stderr,
			"usage: write_bench URL SECRET CLIENTS SECONDS\n");
		return 1;
	}
	n = (int)strtol(argv[3], NULL, 10);
	secs = (int)strtol(argv[4], NULL, 10);
	run_id = (uint64_t)time(NULL) * 1000 + (uint64_t)getpid() % 1000;
	tok = auth_mint_hs256(argv[2], "bench", (int64_t)time(NULL), 3600);
	cls = calloc((size_t)n, sizeof(*cls));
	t0 = clock_now_ms();
	for (int i = 0; i < n; i++) {
		cls[i] = (struct client){ .index = i,
					  .url = argv[1],
					  .token = tok,
					  .deadline_ms =
						  t0 + (uint64_t)secs * 1000,
					  .lat_us = malloc(BENCH_LAT_MAX * 4) };
		pthread_create(&cls[i].thread, NULL, client_main, &cls[i]);
	}
	for (int i = 0; i < n; i++) {
		pthread_join(cls[i].thread, NULL);
		acked += cls[i].acked;
		errors += cls[i].errors;
		nlat += cls[i].nlat;
	}
	all = malloc((nlat ? nlat : 1) * sizeof(*all));
	for (int i = 0; i < n; i++) {
		memcpy(all + k, cls[i].lat_us, cls[i].nlat * sizeof(*all));
		k += cls[i].nlat;
		free(cls[i].lat_us);
	}
	qsort(all, nlat, sizeof(*all), cmp_u32);
	printf("%d %llu %.0f %.2f %.2f %llu\n", n, (unsigned long long)acked,
	       (double)acked / ((double)(clock_now_ms() - t0) / 1000.0),
	       nlat ? all[nlat / 2] / 1000.0 : 0.0,
	       nlat ? all[(nlat * 99) / 100] / 1000.0 : 0.0,
	       (unsigned long long)errors);
	free(all);
	free(cls);
	free(tok);
	return errors && !acked ? 1 : 0;
}
