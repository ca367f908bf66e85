/*
 * write_bench.c - load generator for bench/write: CLIENTS connections,
 * each sending transactions of one `set` on a random record (of 100k, in
 * 100 spaces) to weft-write and waiting for each ack before the next.
 *
 *   write_bench URL SECRET CLIENTS SECONDS [RATE]   (URL: tcp://HOST:PORT)
 *
 * Without RATE the load is closed: each connection sends its next
 * transaction as soon as the last is acknowledged.  With RATE the load is
 * open: transaction k is due at start + k / RATE, whatever came back, and
 * goes out on an idle connection (each still has one in flight at most, so
 * its ids stay in order).  When none is idle it waits for one, and its
 * latency counts from when it was due, so a stall is not hidden by the
 * sends it delayed (no coordinated omission).
 *
 * Prints one line: clients, acked txns, TPS, ack latency p50/p99 (ms),
 * errors.  bench/write.sh runs it beside pgbench on the same Postgres.
 *
 * One thread drives every connection through epoll on plain non-blocking
 * sockets, speaking the protocol's framing directly: the load generator
 * shares the machine with the service and Postgres, so it must cost as
 * little CPU per transaction as it can (a thread per client cost more CPU
 * than weft-write itself).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "proto/frame.h"
#include "proto/msg.h"
#include "services/shared/auth.h"

#include "common/banned.h"

#define S(x) proto_str_c(x)

/* BENCH_LAT_MAX - latencies kept for percentiles */
#define BENCH_LAT_MAX 4000000

enum cstate { C_WELCOME, C_ACK, C_DONE };

struct client {
	int fd;
	int index;
	enum cstate state;
	char client_id[64];
	uint64_t mid;
	uint64_t sent_ns; /* when the pending txn was sent (or was due) */
	bool idle;	  /* open load: connected, nothing in flight */
	unsigned seed;
	struct frame_reader fr;
};

/* BENCH_USERS - connection i speaks for user bench-(i % BENCH_USERS), a
 * member of every space (bench/write.sh): one user per connection, as in
 * an app, so weft-write's limit per user (--user-rate) does not pace one
 * user's 256 connections */
#define BENCH_USERS 256

static char *tokens[BENCH_USERS];
static uint64_t run_id, acked, errors, nlat;
static uint64_t deadline_ms = UINT64_MAX; /* set when the load starts */
static int welcomed, live;
static uint32_t *lat_us;
/* WRITE_BENCH_TRACE=FILE: one line per ack, "sent_ms latency_us", sent
 * (or due) counted from the load's start, to find when slow acks happen */
static FILE *trace;
static uint64_t trace_t0_ns;

/* the open load (RATE given): due times not yet sent, oldest first */
static struct {
	bool on;
	uint64_t t0_ns, gap_ns; /* transaction k is due at t0 + k * gap */
	uint64_t due, sent;	/* due so far; sent so far */
	struct client **idle;	/* stack of idle connections */
	int nidle;
	uint64_t backlog_max; /* most transactions due and not yet sent */
	int timer;	      /* timerfd: one tick per transaction due */
	uint64_t secs;	      /* how long to run, from the first due */
} open_load;

static int
dial(const char *url)
{
	char host[256];
	const char *p = url + 6, *colon;
	struct addrinfo hints = { .ai_family = AF_INET,
				  .ai_socktype = SOCK_STREAM },
			*ai;
	int fd, one = 1;

	colon = strrchr(p, ':');
	if (strncmp(url, "tcp://", 6) != 0 || !colon ||
	    (size_t)(colon - p) >= sizeof(host))
		return -1;
	memcpy(host, p, (size_t)(colon - p));
	host[colon - p] = '\0';
	if (getaddrinfo(host, colon + 1, &hints, &ai) != 0)
		return -1;
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
		if (fd >= 0)
			close(fd);
		freeaddrinfo(ai);
		return -1;
	}
	freeaddrinfo(ai);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

/* send a whole frame; frames are small, so a full socket buffer is an
 * error here, not a case to wait for */
static int
send_msg(struct client *c, const struct proto_msg *m)
{
	static struct buf b; /* one thread: reused for every frame */
	ssize_t n;
	int rc;

	if (!b.max)
		buf_init(&b, 0);
	buf_reset(&b);
	rc = proto_encode(&b, m, 0, NULL);
	if (rc)
		return rc;
	n = send(c->fd, b.data, b.len, MSG_NOSIGNAL);
	return n == (ssize_t)b.len ? 0 : -1;
}

static int
send_txn(struct client *c, uint64_t start_ns)
{
	uint8_t value[5] = { 0xce }; /* uint32 */
	uint32_t v = (uint32_t)rand_r(&c->seed);
	char rid[16];
	struct proto_op op;
	struct proto_msg m = { .type = PROTO_TXN };

	value[1] = (uint8_t)(v >> 24);
	value[2] = (uint8_t)(v >> 16);
	value[3] = (uint8_t)(v >> 8);
	value[4] = (uint8_t)v;
	snprintf(rid, sizeof(rid), "r%d", 1 + rand_r(&c->seed) % 100000);
	op = (struct proto_op){ .kind = PROTO_OP_SET,
				.table = S("items"),
				.id = S(rid),
				.field = S("n"),
				.value = { value, 5 } };
	m.u.txn = (struct proto_txn){ c->mid, S(c->client_id), c->mid,
				      PROTO_LIST(1, &op) };
	c->sent_ns = start_ns;
	return send_msg(c, &m);
}

/* open load: send what is due on idle connections; -1 ends the run */
static int
open_pump(void)
{
	while (open_load.sent < open_load.due && open_load.nidle > 0 &&
	       clock_now_ms() < deadline_ms) {
		struct client *c = open_load.idle[--open_load.nidle];
		uint64_t due =
			open_load.t0_ns + open_load.sent * open_load.gap_ns;

		c->idle = false;
		open_load.sent++;
		if (send_txn(c, due)) {
			c->state = C_DONE;
			errors++;
		}
	}
	if (open_load.due - open_load.sent > open_load.backlog_max)
		open_load.backlog_max = open_load.due - open_load.sent;
	return 0;
}

/* TICK_MIN_NS - the open load's timer ticks at most this often and sends
 * everything due at each tick: a tick per transaction cost the generator
 * twice the CPU of the closed loads, taken from the cores the service
 * runs on.  A transaction's latency still counts from when it was due, so
 * the tick's delay is in the figures (at most 0.25 ms). */
#define TICK_MIN_NS 250000u

/* open load: every connection is ready, start the clock */
static void
open_start(void)
{
	struct itimerspec its = { 0 };
	uint64_t tick =
		open_load.gap_ns > TICK_MIN_NS ? open_load.gap_ns : TICK_MIN_NS;

	open_load.t0_ns = clock_now_ns();
	trace_t0_ns = open_load.t0_ns;
	its.it_value.tv_nsec = 1; /* the first is due at once */
	its.it_interval.tv_sec = (time_t)(tick / 1000000000u);
	its.it_interval.tv_nsec = (long)(tick % 1000000000u);
	timerfd_settime(open_load.timer, 0, &its, NULL);
	deadline_ms = open_load.t0_ns / 1000000u + open_load.secs * 1000u;
}

/* open load: the timer ticked; count what became due and send it */
static int
open_tick(void)
{
	uint64_t ticks;

	if (read(open_load.timer, &ticks, sizeof(ticks)) == sizeof(ticks)) {
		/* transaction k is due at t0 + k * gap, until the end */
		uint64_t since = clock_now_ns() - open_load.t0_ns;
		uint64_t due = since / open_load.gap_ns + 1;
		uint64_t last = open_load.secs * 1000000000u / open_load.gap_ns;

		open_load.due = due < last ? due : last;
	}
	return open_pump();
}

/* c has nothing in flight: send its next transaction, or (open load)
 * offer it to the due ones */
static int
next_txn(struct client *c)
{
	if (!open_load.on)
		return send_txn(c, clock_now_ns());
	c->idle = true;
	open_load.idle[open_load.nidle++] = c;
	return open_pump();
}

/* one whole message from the server; -1 ends this client */
static int
on_msg(struct client *c, const struct proto_msg *r)
{
	if (c->state == C_WELCOME) {
		if (r->type != PROTO_WELCOME)
			return -1;
		c->state = C_ACK;
		if (++welcomed == live && open_load.on)
			open_start();
		return next_txn(c);
	}
	switch (r->type) {
	case PROTO_ACK:
		if (nlat < BENCH_LAT_MAX)
			lat_us[nlat++] =
				(uint32_t)((clock_now_ns() - c->sent_ns) /
					   1000);
		if (trace)
			fprintf(trace, "%.3f %u\n",
				(double)(c->sent_ns - trace_t0_ns) / 1e6,
				lat_us[nlat - 1]);
		acked++;
		c->mid++;
		break;
	case PROTO_BACKOFF: /* the same mid again, after a pause */
		usleep(r->u.backoff.retry_ms * 1000u);
		break;
	case PROTO_ERROR: /* EUNAVAILABLE: resend the same mid */
		errors++;
		break;
	default: /* a rejection: counted, and the id moved on */
		errors++;
		c->mid++;
		break;
	}
	if (clock_now_ms() >= deadline_ms) {
		c->state = C_DONE;
		return 0;
	}
	if (r->type == PROTO_BACKOFF || r->type == PROTO_ERROR)
		return send_txn(c, c->sent_ns); /* the same mid again */
	return next_txn(c);
}

static int
on_readable(struct client *c)
{
	uint8_t rx[4096];
	ssize_t n = recv(c->fd, rx, sizeof(rx), 0);
	size_t off = 0;

	if (n <= 0)
		return n < 0 && errno == EAGAIN ? 0 : -1;
	while (off < (size_t)n) {
		size_t used;
		struct proto_msg r;
		struct proto_err err;
		uint32_t len;
		const uint8_t *body;

		if (frame_reader_feed(&c->fr, rx + off, (size_t)n - off, &used))
			return -1;
		off += used;
		if (!frame_reader_ready(&c->fr))
			continue;
		body = frame_reader_body(&c->fr, &len);
		if (proto_decode(body, len, &r, &err) || on_msg(c, &r))
			return -1;
		frame_reader_next(&c->fr);
	}
	return 0;
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
	struct epoll_event ev[64];
	struct client *cls;
	uint64_t t0;
	bool minted = true;
	int n, secs, ep;
	double rate = 0;

	if (argc != 5 && argc != 6) {
		fprintf(stderr, "usage: write_bench URL SECRET CLIENTS "
				"SECONDS [RATE]\n");
		return 1;
	}
	n = (int)strtol(argv[3], NULL, 10);
	secs = (int)strtol(argv[4], NULL, 10);
	if (argc == 6)
		rate = strtod(argv[5], NULL);
	if (n < 1 || secs < 1 || (argc == 6 && !(rate >= 1 && rate <= 1e6))) {
		fprintf(stderr, "write_bench: CLIENTS and SECONDS >= 1, "
				"RATE in 1..1000000 per second\n");
		return 1;
	}
	run_id = (uint64_t)time(NULL) * 1000 + (uint64_t)getpid() % 1000;
	for (int u = 0; u < BENCH_USERS && u < n; u++) {
		char user[32];

		snprintf(user, sizeof(user), "bench-%d", u);
		tokens[u] = auth_mint_hs256(argv[2], user, (int64_t)time(NULL),
					    3600);
		minted = minted && tokens[u];
	}
	lat_us = malloc(BENCH_LAT_MAX * sizeof(*lat_us));
	cls = calloc((size_t)n, sizeof(*cls));
	ep = epoll_create1(0);
	open_load.idle = calloc((size_t)n, sizeof(*open_load.idle));
	open_load.timer = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK);
	if (!minted || !lat_us || !cls || !open_load.idle || ep < 0 ||
	    open_load.timer < 0) {
		fprintf(stderr, "write_bench: out of memory or descriptors\n");
		exit(1);
	}
	if (rate > 0) {
		struct epoll_event e = { .events = EPOLLIN, .data.ptr = NULL };

		open_load.on = true;
		open_load.gap_ns = (uint64_t)(1e9 / rate);
		open_load.secs = (uint64_t)secs;
		if (epoll_ctl(ep, EPOLL_CTL_ADD, open_load.timer, &e)) {
			fprintf(stderr, "write_bench: no timer\n");
			exit(1);
		}
	} else {
		deadline_ms = clock_now_ms() + (uint64_t)secs * 1000;
	}
	t0 = clock_now_ms();
	trace_t0_ns = clock_now_ns();
	if (getenv("WRITE_BENCH_TRACE") &&
	    !(trace = fopen(getenv("WRITE_BENCH_TRACE"), "w"))) {
		fprintf(stderr, "write_bench: cannot write the trace\n");
		exit(1);
	}
	for (int i = 0; i < n; i++) {
		struct client *c = &cls[i];
		struct proto_msg m = { .type = PROTO_HELLO };
		struct epoll_event e = { .events = EPOLLIN, .data.ptr = c };

		c->index = i;
		c->mid = 1;
		c->seed = (unsigned)(run_id * 1000 + (uint64_t)i);
		snprintf(c->client_id, sizeof(c->client_id), "bench-%llu-%d",
			 (unsigned long long)run_id, i);
		frame_reader_init(&c->fr, FRAME_MAX_DEFAULT);
		c->fd = dial(argv[1]);
		m.u.hello = (struct proto_hello){ 1,
						  PROTO_VERSION,
						  S(tokens[i % BENCH_USERS]),
						  S(c->client_id),
						  { 0, 0 },
						  S("write_bench") };
		if (c->fd < 0 || send_msg(c, &m) ||
		    epoll_ctl(ep, EPOLL_CTL_ADD, c->fd, &e)) {
			errors++;
			c->state = C_DONE;
			continue;
		}
		live++;
	}
	while (live > 0) {
		int k = epoll_wait(ep, ev, 64, 100);

		if (k < 0 && errno != EINTR)
			break;
		if (k <= 0 && deadline_ms != UINT64_MAX &&
		    clock_now_ms() > deadline_ms + 30000)
			break; /* acks that never came: counted below */
		for (int i = 0; i < k; i++) {
			struct client *c = ev[i].data.ptr;

			if (!c) {
				open_tick();
				continue;
			}
			if (c->state == C_DONE)
				continue;
			if (on_readable(c) != 0) {
				errors++;
				c->state = C_DONE;
			}
			if (c->state == C_DONE) {
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				live--;
			}
		}
		if (open_load.on && clock_now_ms() >= deadline_ms) {
			/* the idle ones have nothing more to wait for */
			while (open_load.nidle > 0) {
				struct client *c =
					open_load.idle[--open_load.nidle];

				c->state = C_DONE;
				epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
				live--;
			}
		}
	}
	if (open_load.on) {
		t0 = open_load.t0_ns / 1000000u;
		fprintf(stderr,
			"write_bench: open load %.0f/s: %llu due, %llu sent, "
			"at most %llu waiting for a connection\n",
			rate, (unsigned long long)open_load.due,
			(unsigned long long)open_load.sent,
			(unsigned long long)open_load.backlog_max);
	}
	errors += (uint64_t)live;
	qsort(lat_us, nlat, sizeof(*lat_us), cmp_u32);
	printf("%d %llu %.0f %.2f %.2f %llu\n", n, (unsigned long long)acked,
	       (double)acked / ((double)(clock_now_ms() - t0) / 1000.0),
	       nlat ? lat_us[nlat / 2] / 1000.0 : 0.0,
	       nlat ? lat_us[(nlat * 99) / 100] / 1000.0 : 0.0,
	       (unsigned long long)errors);
	for (int i = 0; i < n; i++) {
		if (cls[i].fd >= 0)
			close(cls[i].fd);
		frame_reader_fini(&cls[i].fr);
	}
	close(ep);
	close(open_load.timer);
	free(open_load.idle);
	if (trace)
		fclose(trace);
	free(lat_us);
	free(cls);
	for (int u = 0; u < BENCH_USERS; u++)
		free(tokens[u]);
	return errors && !acked ? 1 : 0;
}
