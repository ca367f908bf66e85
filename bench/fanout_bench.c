/*
 * fanout_bench.c - load generator for bench/fanout.sh.
 *
 *   fanout_bench sessions URL SECRET SESSIONS SPACES EXPECT [LATFILE]
 *       open SESSIONS sessions to a weft-fanout node (one epoll thread,
 *       plain sockets), session k subscribed to space/b<k % SPACES>;
 *       print "ready" once all are subscribed, then count the changes
 *       pushed until EXPECT have arrived (or 60 s of silence); print
 *       "changes seconds" (first to last change).  With LATFILE, each
 *       change whose id is "L<ns>" (see pace) adds a line to it: its
 *       latency in microseconds, from the XADD to its arrival here.
 *
 *   fanout_bench pace REDIS_URL SPACES RATE SECONDS
 *       XADD RATE entries per second for SECONDS into the change stream,
 *       round-robin over spaces b0..b<SPACES-1>, each with id "L<ns>",
 *       the CLOCK_REALTIME time it was sent; print "entries seconds".
 *
 *   fanout_bench streamlag REDIS_URL STREAM SECONDS
 *       for bench/relay.sh: read STREAM from its end for SECONDS (XREAD
 *       BLOCK, as a fanout node does) and time each entry from its commit
 *       (its change's "w" and "f", Unix ms and the µs past it) to when
 *       this reader has it; print "entries p50 p99 max" in ms.
 *
 *   fanout_bench rounds ROUNDS BATCH
 *       for bench/fanout.sh: print, as RESP for redis-cli --pipe, ROUNDS
 *       rounds of BATCH XADDs per space b0..b99 into weft:changes, each a
 *       change as weft-relay writes it (proto/entry.h).
 *
 *   fanout_bench blast PAIRS ROUNDS [BATCH]
 *       the raw limit: PAIRS loopback TCP connections; one thread writes
 *       BATCH (default 1) 64-byte messages per connection per round, in
 *       one send, and reads them back; print "messages seconds".
 *
 * Every process here may hold at most 20,000 descriptors: bench/fanout.sh
 * runs several generators for large session counts.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "common/buf.h"
#include "common/clock.h"
#include "proto/entry.h"
#include "proto/frame.h"
#include "proto/msg.h"
#include "services/shared/auth.h"
#include "services/shared/redis.h"

#include "common/banned.h"

#define S(x) proto_str_c(x)

struct sess {
	int fd;
	int state; /* 0 welcome, 1 subscribed, 2 live */
	struct frame_reader fr;
};

static int
dial(const char *url)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	const char *colon = strrchr(url, ':');
	int fd, one = 1;

	if (strncmp(url, "tcp://", 6) != 0 || !colon)
		return -1;
	a.sin_port = htons((uint16_t)strtol(colon + 1, NULL, 10));
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	return fd;
}

static int
send_msg(int fd, const struct proto_msg *m)
{
	static struct buf b;

	if (!b.max)
		buf_init(&b, 0);
	buf_reset(&b);
	if (proto_encode(&b, m, 0, NULL))
		return -1;
	return send(fd, b.data, b.len, MSG_NOSIGNAL) == (ssize_t)b.len ? 0 : -1;
}

/* latencies in microseconds, to write out at the end */
struct lat {
	uint32_t *v;
	uint32_t *at; /* its send time, ms within the run's hour */
	size_t n, cap;
};

static uint64_t
realtime_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* every change of a PUSH stamped by pace: its latency */
static void
lat_push(struct lat *l, const struct proto_push *p)
{
	struct proto_iter it;
	struct proto_change ch;
	uint64_t now = realtime_ns();

	proto_iter_init(&it, &p->changes);
	while (proto_next_change(&it, &ch) == 1) {
		char digits[24];
		uint64_t sent;

		if (ch.id.len < 2 || ch.id.len > 21 || ch.id.p[0] != 'L')
			continue;
		memcpy(digits, ch.id.p + 1, ch.id.len - 1);
		digits[ch.id.len - 1] = '\0';
		sent = strtoull(digits, NULL, 10);
		if (sent == 0 || sent > now)
			continue;
		if (l->n == l->cap) {
			size_t cap = l->cap ? l->cap * 2 : 65536;
			uint32_t *v = realloc(l->v, cap * sizeof(*v));
			uint32_t *at;

			if (!v)
				return;
			l->v = v;
			at = realloc(l->at, cap * sizeof(*at));
			if (!at)
				return;
			l->at = at;
			l->cap = cap;
		}
		l->at[l->n] = (uint32_t)(sent / 1000000 % 3600000);
		l->v[l->n++] = (uint32_t)((now - sent) / 1000);
	}
}

static int
run_sessions(int argc, char **argv)
{
	const char *url = argv[2];
	int n = (int)strtol(argv[4], NULL, 10);
	int spaces = (int)strtol(argv[5], NULL, 10);
	long long expect = strtoll(argv[6], NULL, 10), got = 0;
	char *tok =
		auth_mint_hs256(argv[3], "bench", (int64_t)time(NULL), 3600);
	struct sess *ss = calloc((size_t)n, sizeof(*ss));
	struct epoll_event ev[256];
	int ep = epoll_create1(0), ready = 0;
	uint64_t first = 0, last = 0, quiet_since;
	const char *latfile = argc > 7 ? argv[7] : NULL;
	struct lat lat = { 0 };

	if (!ss || !tok || ep < 0)
		return 1;
	for (int i = 0; i < n; i++) {
		struct proto_msg m = { .type = PROTO_HELLO };
		struct epoll_event e = { .events = EPOLLIN,
					 .data.u32 = (uint32_t)i };
		char client[32];

		snprintf(client, sizeof(client), "fb-%d-%d", (int)getpid(), i);
		ss[i].fd = dial(url);
		frame_reader_init(&ss[i].fr, FRAME_MAX_DEFAULT);
		m.u.hello = (struct proto_hello){ 1,	    PROTO_VERSION,
						  S(tok),   S(client),
						  { 0, 0 }, S("fanout_bench") };
		if (ss[i].fd < 0 || send_msg(ss[i].fd, &m) ||
		    epoll_ctl(ep, EPOLL_CTL_ADD, ss[i].fd, &e)) {
			fprintf(stderr, "fanout_bench: session %d failed\n", i);
			return 1;
		}
	}
	quiet_since = clock_now_ms();
	while (got < expect && clock_now_ms() - quiet_since < 60000) {
		int k = epoll_wait(ep, ev, 256, 1000);

		for (int e = 0; e < k; e++) {
			struct sess *s = &ss[ev[e].data.u32];
			uint8_t rx[65536];
			ssize_t r = recv(s->fd, rx, sizeof(rx), 0);
			size_t off = 0;

			if (r <= 0) {
				fprintf(stderr, "fanout_bench: closed\n");
				return 1;
			}
			while (off < (size_t)r) {
				size_t used;
				uint32_t len;
				struct proto_msg msg;
				struct proto_err err;
				const uint8_t *body;

				if (frame_reader_feed(&s->fr, rx + off,
						      (size_t)r - off, &used))
					return 1;
				off += used;
				if (!frame_reader_ready(&s->fr))
					continue;
				body = frame_reader_body(&s->fr, &len);
				if (proto_decode(body, len, &msg, &err) == 0) {
					if (msg.type == PROTO_WELCOME) {
						char key[32];
						struct proto_str ks;
						struct proto_msg sub = {
							.type = PROTO_SUBSCRIBE
						};

						snprintf(key, sizeof(key),
							 "space/b%d",
							 (int)(s - ss) %
								 spaces);
						ks = S(key);
						sub.u.subscribe =
							(struct
							 proto_subscribe){
								2,
								PROTO_LIST(1,
									   &ks),
								{ 0, 0 }
							};
						send_msg(s->fd, &sub);
					} else if (msg.type ==
						   PROTO_SUBSCRIBED) {
						if (++ready == n) {
							printf("ready\n");
							fflush(stdout);
						}
					} else if (msg.type == PROTO_PUSH) {
						uint64_t now = clock_now_ns();

						if (!first)
							first = now;
						last = now;
						got += msg.u.push.changes.n;
						if (latfile)
							lat_push(&lat,
								 &msg.u.push);
						quiet_since = clock_now_ms();
					} else if (msg.type == PROTO_PING) {
						msg.type = PROTO_PONG;
						send_msg(s->fd, &msg);
					}
				}
				frame_reader_next(&s->fr);
			}
		}
	}
	if (latfile) {
		FILE *f = fopen(latfile, "w");

		for (size_t i = 0; f && i < lat.n; i++)
			fprintf(f, "%u %u\n", lat.v[i], lat.at[i]);
		if (f)
			fclose(f);
		free(lat.v);
		free(lat.at);
	}
	printf("%lld %.4f\n", got,
	       last > first ? (double)(last - first) / 1e9 : 0.0);
	for (int i = 0; i < n; i++) {
		close(ss[i].fd);
		frame_reader_fini(&ss[i].fr);
	}
	free(ss);
	free(tok);
	return got >= expect ? 0 : 1;
}

static int
run_blast(char **argv)
{
	int pairs = (int)strtol(argv[2], NULL, 10);
	int rounds = (int)strtol(argv[3], NULL, 10);
	int batch = argv[4] ? (int)strtol(argv[4], NULL, 10) : 1;
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t al = sizeof(a);
	int lfd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
	int *w = calloc((size_t)pairs, sizeof(int));
	int *r = calloc((size_t)pairs, sizeof(int));
	char *msg, in[65536];
	size_t len;
	uint64_t t0, t1;
	long long moved = 0;

	len = 64 * (size_t)(batch > 0 ? batch : 1);
	msg = malloc(len);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (batch < 1 || batch > 1000 || !msg || lfd < 0 || !w || !r ||
	    bind(lfd, (struct sockaddr *)&a, sizeof(a)) || listen(lfd, 4096) ||
	    getsockname(lfd, (struct sockaddr *)&a, &al)) {
		fprintf(stderr, "fanout_bench: cannot set up the blast\n");
		free(msg);
		free(w);
		free(r);
		return 1;
	}
	memset(msg, 'm', len);
	for (int i = 0; i < pairs; i++) {
		r[i] = socket(AF_INET, SOCK_STREAM, 0);
		if (r[i] < 0 ||
		    connect(r[i], (struct sockaddr *)&a, sizeof(a)) != 0 ||
		    (w[i] = accept(lfd, NULL, NULL)) < 0) {
			fprintf(stderr, "fanout_bench: pair %d: %s\n", i,
				strerror(errno));
			free(msg);
			free(w);
			free(r);
			return 1;
		}
		setsockopt(w[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	}
	t0 = clock_now_ns();
	for (int k = 0; k < rounds; k++) {
		for (int i = 0; i < pairs; i++)
			if (send(w[i], msg, len, MSG_NOSIGNAL) == (ssize_t)len)
				moved += batch;
		for (int i = 0; i < pairs; i++)
			for (size_t got = 0; got < len;) {
				ssize_t n = recv(r[i], in, sizeof(in), 0);

				if (n <= 0)
					break;
				got += (size_t)n;
			}
	}
	t1 = clock_now_ns();
	printf("%lld %.4f\n", moved, (double)(t1 - t0) / 1e9);
	for (int i = 0; i < pairs; i++) {
		close(w[i]);
		close(r[i]);
	}
	close(lfd);
	free(msg);
	free(w);
	free(r);
	return 0;
}

/* a change to record id of space sp at version v, as a stream entry's
 * value (proto/entry.h) in b, as weft-relay writes it, with no data */
static void
entry_value(struct buf *b, const char *id, const char *sp, uint64_t v,
	    int64_t when_ms)
{
	struct stream_change sc = { 0 };
	msgpack_sbuffer sb;
	msgpack_packer pk;

	sc.table = S("issues");
	sc.id = S(id);
	sc.space = S(sp);
	sc.version = v;
	sc.op = PROTO_OP_SET;
	sc.when_ms = when_ms;
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	b->len = 0;
	if (stream_change_pack(&pk, &sc) == 0)
		buf_append(b, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
}

static void
resp_bulk(const char *s, size_t len)
{
	printf("$%zu\r\n", len);
	fwrite(s, 1, len, stdout);
	fputs("\r\n", stdout);
}

/* RESP for redis-cli --pipe: ROUNDS rounds of BATCH changes per space
 * b0..b99, round r at version r + 1 */
static int
run_rounds(char **argv)
{
	long rounds = strtol(argv[2], NULL, 10);
	long batch = strtol(argv[3], NULL, 10);
	struct buf b;

	buf_init(&b, 0);
	for (long r = 0; r < rounds; r++)
		for (int sp = 0; sp < 100; sp++)
			for (long k = 0; k < batch; k++) {
				char id[48], spn[16];

				snprintf(id, sizeof(id), "r%ld_%ld", r, k);
				snprintf(spn, sizeof(spn), "b%d", sp);
				entry_value(&b, id, spn, (uint64_t)r + 1, 0);
				fputs("*5\r\n", stdout);
				resp_bulk("XADD", 4);
				resp_bulk("weft:changes", 12);
				resp_bulk("*", 1);
				resp_bulk(STREAM_FIELD, 1);
				resp_bulk((const char *)b.data, b.len);
			}
	buf_fini(&b);
	return fflush(stdout) == 0 ? 0 : 1;
}

static int
run_pace(char **argv)
{
	char why[256];
	redisContext *rc = redis_open(argv[2], 5000, why, sizeof(why));
	int spaces = (int)strtol(argv[3], NULL, 10);
	long long rate = strtoll(argv[4], NULL, 10);
	double secs = strtod(argv[5], NULL);
	long long total = (long long)((double)rate * secs), sent = 0;
	uint64_t t0, t1;
	struct buf ev;

	if (!rc || spaces < 1 || rate < 1 || total < 1) {
		fprintf(stderr, "fanout_bench pace: %s\n",
			rc ? "bad arguments" : why);
		return 1;
	}
	buf_init(&ev, 0);
	t0 = clock_now_ns();
	while (sent < total) {
		/* entry k is due at t0 + k / rate: send what is due, then
		 * sleep a millisecond */
		long long due = (long long)((double)(clock_now_ns() - t0) *
					    (double)rate / 1e9) +
				1;
		long long n = 0;
		struct timespec ms = { 0, 1000000 };

		if (due > total)
			due = total;
		for (; sent + n < due; n++) {
			char id[32], sp[16];
			const char *av[4] = { "XADD", "weft:changes", "*",
					      STREAM_FIELD };
			size_t al[5] = { 4, 12, 1, 1, 0 };
			const char *args[5];

			snprintf(id, sizeof(id), "L%llu",
				 (unsigned long long)realtime_ns());
			snprintf(sp, sizeof(sp), "b%lld", (sent + n) % spaces);
			entry_value(&ev, id, sp, (uint64_t)(sent + n + 1),
				    (int64_t)(realtime_ns() / 1000000));
			memcpy(args, av, sizeof(av));
			args[4] = (const char *)ev.data;
			al[4] = ev.len;
			redisAppendCommandArgv(rc, 5, args, al);
		}
		for (long long k = 0; k < n; k++) {
			void *r = NULL;

			if (redisGetReply(rc, &r) != REDIS_OK) {
				fprintf(stderr, "fanout_bench pace: %s\n",
					rc->errstr);
				redisFree(rc);
				buf_fini(&ev);
				return 1;
			}
			freeReplyObject(r);
		}
		sent += n;
		nanosleep(&ms, NULL);
	}
	t1 = clock_now_ns();
	printf("%lld %.4f\n", sent, (double)(t1 - t0) / 1e9);
	redisFree(rc);
	buf_fini(&ev);
	return 0;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

static int
run_streamlag(char **argv)
{
	char why[256], last[64] = "$";
	redisContext *rc = redis_open(argv[2], 5000, why, sizeof(why));
	const char *stream = argv[3];
	uint64_t until =
		clock_now_ms() + (uint64_t)(strtod(argv[4], NULL) * 1000.0);
	double *lag = NULL;
	size_t n = 0, cap = 0;

	if (!rc) {
		fprintf(stderr, "fanout_bench streamlag: %s\n", why);
		return 1;
	}
	while (clock_now_ms() < until) {
		redisReply *r = redisCommand(
			rc, "XREAD COUNT 1000 BLOCK 100 STREAMS %s %s", stream,
			last);
		double now = (double)realtime_ns() / 1e6;

		if (!r) {
			fprintf(stderr, "fanout_bench streamlag: %s\n",
				rc->errstr);
			break;
		}
		if (r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
		    r->element[0]->elements == 2) {
			redisReply *es = r->element[0]->element[1];

			for (size_t i = 0; i < es->elements; i++) {
				redisReply *e = es->element[i], *f;
				struct stream_change sc;

				if (e->type != REDIS_REPLY_ARRAY ||
				    e->elements != 2)
					continue;
				snprintf(last, sizeof(last), "%s",
					 e->element[0]->str);
				f = e->element[1];
				if (f->elements != 2 ||
				    strcmp(f->element[0]->str, STREAM_FIELD) !=
					    0 ||
				    stream_change_parse(
					    (const uint8_t *)f->element[1]->str,
					    f->element[1]->len, &sc) != 0)
					continue;
				if (n == cap) {
					double *t;

					cap = cap ? 2 * cap : 65536;
					t = realloc(lag, cap * sizeof(*lag));
					if (!t) {
						free(lag);
						return 1;
					}
					lag = t;
				}
				lag[n++] = now - (double)sc.when_ms -
					   sc.when_us / 1000.0;
			}
		}
		freeReplyObject(r);
	}
	redisFree(rc);
	if (n == 0) {
		printf("0 0 0 0\n");
		free(lag);
		return 0;
	}
	qsort(lag, n, sizeof(*lag), cmp_double);
	printf("%zu %.2f %.2f %.2f\n", n, lag[n / 2], lag[n * 99 / 100],
	       lag[n - 1]);
	free(lag);
	return 0;
}

int
main(int argc, char **argv)
{
	if ((argc == 7 || argc == 8) && strcmp(argv[1], "sessions") == 0)
		return run_sessions(argc, argv);
	if (argc == 6 && strcmp(argv[1], "pace") == 0)
		return run_pace(argv);
	if (argc == 5 && strcmp(argv[1], "streamlag") == 0)
		return run_streamlag(argv);
	if (argc == 4 && strcmp(argv[1], "rounds") == 0)
		return run_rounds(argv);
	if ((argc == 4 || argc == 5) && strcmp(argv[1], "blast") == 0)
		return run_blast(argv);
	fprintf(stderr,
		"usage: fanout_bench sessions URL SECRET SESSIONS "
		"SPACES EXPECT [LATFILE]\n"
		"       fanout_bench pace REDIS_URL SPACES RATE SECONDS\n"
		"       fanout_bench streamlag REDIS_URL STREAM SECONDS\n"
		"       fanout_bench rounds ROUNDS BATCH\n"
		"       fanout_bench blast PAIRS ROUNDS [BATCH]\n");
	return 2;
}
