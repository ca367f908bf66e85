/*
 * e2e_bench.c - write -> push latency through the whole path: a client
 * sends a one-`set` transaction to weft-write; another client, subscribed
 * to the space on a weft-fanout node, times the arrival of that change.
 * Meanwhile a background writer sends LOAD other writes per second to
 * the same space (0 = idle).
 *
 *   e2e_bench WRITE_URL FANOUT_URL SECRET SPACE SAMPLES LOAD
 *
 * The space must exist with user "bench" as a writer, and hold records
 * p0 (probed) and b0..b31 (one per background connection).  Prints:
 * samples, p50 ms, p99 ms, max ms, background writes/s achieved, then
 * the probe's ack p50, p99 and max ms (the write's part of the latency).
 * E2E_TRACE=FILE also writes every sample there, in the order taken.
 * bench/e2e.sh sets it all up.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "services/shared/auth.h"
#include "tests/lib/wclient.h"

#include "common/banned.h"

#define S(x) proto_str_c(x)

static const char *write_url, *secret, *space;
static volatile int stop;
static atomic_ullong bg_done;

/* HELLO as user (a member of the space bench, bench/e2e.sh) */
static int
session(struct wclient *c, const char *url, const char *client,
	const char *user)
{
	struct proto_msg m = { .type = PROTO_HELLO }, r;
	char *tok = auth_mint_hs256(secret, user, (int64_t)time(NULL), 3600);
	int rc;

	if (wclient_dial(c, url) != 0) {
		free(tok);
		return -1;
	}
	m.u.hello =
		(struct proto_hello){ 1,	 PROTO_VERSION, S(tok),
				      S(client), { 0, 0 },	S("bench") };
	rc = wclient_send(c, &m) || wclient_recv(c, &r, 5000) ||
			     r.type != PROTO_WELCOME
		     ? -1
		     : 0;
	free(tok);
	return rc;
}

static struct proto_bytes
int_value(uint8_t d[5], uint32_t v)
{
	d[0] = 0xce;
	d[1] = (uint8_t)(v >> 24);
	d[2] = (uint8_t)(v >> 16);
	d[3] = (uint8_t)(v >> 8);
	d[4] = (uint8_t)v;
	return (struct proto_bytes){ d, 5 };
}

/* one set on id through c as client, waiting for the ack; *ver gets
 * the record's new version */
static int
set_once(struct wclient *c, const char *client, uint64_t mid, const char *id,
	 uint32_t v, uint64_t *ver)
{
	struct proto_iter it;
	struct proto_record rec;
	uint8_t d[5];
	struct proto_op op = { .kind = PROTO_OP_SET,
			       .table = S("issues"),
			       .id = S(id),
			       .field = S("priority"),
			       .value = int_value(d, v) };
	struct proto_msg m = { .type = PROTO_TXN }, r;

	m.u.txn = (struct proto_txn){ mid, S(client), mid, PROTO_LIST(1, &op) };
	if (wclient_send(c, &m) || wclient_recv(c, &r, 10000) ||
	    r.type != PROTO_ACK)
		return -1;
	proto_iter_init(&it, &r.u.ack.records);
	if (proto_next_record(&it, &rec) != 1)
		return -1;
	*ver = rec.version;
	return 0;
}

/* BG_WRITERS - background connections: each waits for its ack, so at
 * 2,000 writes/s each has 16 ms per write, well above an ack under load
 * (8 connections reached only 1,200-1,500/s) */
#define BG_WRITERS 32

struct bgw {
	pthread_t thread;
	int index, rate; /* its number; the whole load, writes/s */
};

static void *
background(void *arg)
{
	struct bgw *b = arg;
	int load = b->rate;
	struct wclient c;
	char client[64], rec[8], user[32];
	uint64_t mid = 1, next = clock_now_ns();

	snprintf(client, sizeof(client), "bench-bg-%d-%d-%d", (int)getpid(),
		 load, b->index);
	snprintf(rec, sizeof(rec), "b%d", b->index);
	/* a user each, as in an app: the load is not one user's rate */
	snprintf(user, sizeof(user), "bench-bg-%d", b->index);
	if (session(&c, write_url, client, user) != 0)
		return NULL;
	while (!stop) {
		/* pipelined at a fixed rate: one ack per send keeps it
		 * simple; a slow ack slows the load (reported) */
		uint64_t ver;

		if (set_once(&c, client, mid, rec, (uint32_t)mid, &ver) == 0) {
			mid++;
			bg_done++;
		}
		/* each writer carries 1 / BG_WRITERS of the load */
		next += 1000000000ull * BG_WRITERS / (uint64_t)load;
		/* one sleep to the deadline: polling with short sleeps woke
		 * each writer 10,000 times a second, load on the two cores
		 * that the measured path shares */
		if (clock_now_ns() < next && !stop) {
			struct timespec at = { (time_t)(next / 1000000000ull),
					       (long)(next % 1000000000ull) };

			clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &at,
					NULL);
		}
	}
	wclient_close(&c);
	return NULL;
}

static int
cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
	struct wclient w, sub;
	struct proto_str key;
	struct proto_msg m = { .type = PROTO_SUBSCRIBE }, r;
	char client[64], keytext[128];
	struct bgw bg[BG_WRITERS];
	uint64_t *lat, *acks, t_start, bg_start;
	int samples, load, got = 0;
	/* E2E_TRACE=FILE: each sample as "ms since the first, ack µs,
	 * push µs", to see when the slow ones happened */
	const char *trace_path = getenv("E2E_TRACE");
	FILE *trace = trace_path ? fopen(trace_path, "w") : NULL;

	if (argc != 7) {
		fprintf(stderr, "usage: e2e_bench WRITE_URL FANOUT_URL SECRET "
				"SPACE SAMPLES LOAD\n");
		return 1;
	}
	write_url = argv[1];
	secret = argv[3];
	space = argv[4];
	samples = (int)strtol(argv[5], NULL, 10);
	load = (int)strtol(argv[6], NULL, 10);
	lat = calloc((size_t)samples, sizeof(*lat));
	acks = calloc((size_t)samples, sizeof(*acks));
	snprintf(client, sizeof(client), "bench-probe-%d-%d", (int)getpid(),
		 load);
	if (!lat || !acks || session(&w, write_url, client, "bench") != 0 ||
	    session(&sub, argv[2], "bench-sub", "bench") != 0) {
		fprintf(stderr, "e2e_bench: cannot connect\n");
		free(lat);
		free(acks);
		return 1;
	}
	snprintf(keytext, sizeof(keytext), "space/%s", space);
	key = S(keytext);
	m.u.subscribe =
		(struct proto_subscribe){ 1, PROTO_LIST(1, &key), { 0, 0 } };
	if (wclient_send(&sub, &m) || wclient_recv(&sub, &r, 5000) ||
	    r.type != PROTO_SUBSCRIBED) {
		fprintf(stderr, "e2e_bench: subscribe failed\n");
		free(lat);
		free(acks);
		return 1;
	}
	for (int k = 0; load > 0 && k < BG_WRITERS; k++) {
		bg[k] = (struct bgw){ .index = k, .rate = load };
		pthread_create(&bg[k].thread, NULL, background, &bg[k]);
	}
	usleep(300000);
	t_start = clock_now_ns();
	bg_start = atomic_load(&bg_done); /* the rate counts from here */
	for (int i = 0; i < samples; i++) {
		uint32_t v = (uint32_t)(1000000 + i);
		uint64_t t0 = clock_now_ns(), ver = 0;
		bool seen = false;

		if (set_once(&w, client, (uint64_t)i + 1, "p0", v, &ver) != 0) {
			fprintf(stderr, "e2e_bench: write %d failed\n", i);
			break;
		}
		acks[got] = clock_now_ns() - t0;
		/* the push of p0 with this value (others: background) */
		while (!seen) {
			struct proto_iter it;
			struct proto_change ch;

			if (wclient_recv(&sub, &r, 10000) != 0) {
				fprintf(stderr, "e2e_bench: no push\n");
				goto out;
			}
			if (r.type == PROTO_PING) {
				r.type = PROTO_PONG;
				wclient_send(&sub, &r);
				continue;
			}
			if (r.type != PROTO_PUSH)
				continue;
			proto_iter_init(&it, &r.u.push.changes);
			while (proto_next_change(&it, &ch) == 1)
				if (proto_str_eq(ch.id, "p0") &&
				    ch.version >= ver)
					seen = true;
		}
		lat[got] = clock_now_ns() - t0;
		if (trace)
			fprintf(trace, "%.3f %llu %llu\n",
				(double)(t0 - t_start) / 1e6,
				(unsigned long long)(acks[got] / 1000),
				(unsigned long long)(lat[got] / 1000));
		got++;
		usleep(2000);
	}
out:
	stop = 1;
	if (trace)
		fclose(trace);
	for (int k = 0; load > 0 && k < BG_WRITERS; k++)
		pthread_join(bg[k].thread, NULL);
	qsort(lat, (size_t)got, sizeof(*lat), cmp_u64);
	qsort(acks, (size_t)got, sizeof(*acks), cmp_u64);
	printf("%d %.2f %.2f %.2f %.0f %.2f %.2f %.2f\n", got,
	       got ? (double)lat[got / 2] / 1e6 : 0.0,
	       got ? (double)lat[(got * 99) / 100] / 1e6 : 0.0,
	       got ? (double)lat[got - 1] / 1e6 : 0.0,
	       (double)(atomic_load(&bg_done) - bg_start) * 1e9 /
		       (double)(clock_now_ns() - t_start),
	       got ? (double)acks[got / 2] / 1e6 : 0.0,
	       got ? (double)acks[(got * 99) / 100] / 1e6 : 0.0,
	       got ? (double)acks[got - 1] / 1e6 : 0.0);
	wclient_close(&w);
	wclient_close(&sub);
	free(lat);
	free(acks);
	return got == samples ? 0 : 1;
}
