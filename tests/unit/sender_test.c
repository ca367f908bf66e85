/*
 * sender_test.c - services/shared/sender.c over a real loopback TCP stream
 * of nng: a sender that writes on the caller's thread must hand over every
 * byte exactly once and in order, both when the socket takes them at once
 * and when it is full and the rest goes through the callback path.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <nng/nng.h>

#include "services/shared/sender.h"

/* a deterministic byte stream: chunk i is its number, then filler */
#define CHUNKS	  3000
#define CHUNK_MAX 16000

static size_t
chunk_len(uint32_t i)
{
	return 4 + (i * 7919u) % CHUNK_MAX;
}

static void
chunk_fill(uint8_t *p, uint32_t i)
{
	size_t n = chunk_len(i);

	memcpy(p, &i, 4);
	for (size_t k = 4; k < n; k++)
		p[k] = (uint8_t)(i + k);
}

struct side {
	pthread_mutex_t mu;
	struct sender tx;
	int wrote, started, failed;
};

static void
kick_locked(struct side *s)
{
	switch (sender_kick(&s->tx)) {
	case KICK_WROTE:
		s->wrote++;
		break;
	case KICK_STARTED:
		s->started++;
		break;
	case KICK_FAILED:
		s->failed++;
		break;
	case KICK_IDLE:
		break;
	}
}

static void
send_cb(void *arg)
{
	struct side *s = arg;

	pthread_mutex_lock(&s->mu);
	switch (sender_done(&s->tx, false)) {
	case SENDER_FAILED:
		s->failed++;
		break;
	case SENDER_MORE:
		break;
	case SENDER_IDLE:
		kick_locked(s);
		break;
	}
	pthread_mutex_unlock(&s->mu);
}

struct reader {
	nng_stream *st;
	uint8_t *got;
	size_t want, len;
	int err;
};

static void *
reader_main(void *arg)
{
	struct reader *r = arg;
	struct timespec pause = { 0, 300 * 1000000 };
	nng_aio *aio;

	/* asleep at first: the writer fills the socket and must fall back
	 * to the callback path */
	nanosleep(&pause, NULL);
	if (nng_aio_alloc(&aio, NULL, NULL) != 0) {
		r->err = -1;
		return NULL;
	}
	nng_aio_set_timeout(aio, 10000); /* a lost byte fails, not hangs */
	while (r->len < r->want) {
		nng_iov iov = { r->got + r->len, r->want - r->len };

		nng_aio_set_iov(aio, 1, &iov);
		nng_stream_recv(r->st, aio);
		nng_aio_wait(aio);
		if ((r->err = nng_aio_result(aio)) != 0)
			break;
		r->len += nng_aio_count(aio);
	}
	nng_aio_free(aio);
	return NULL;
}

Test(sender, writes_now_and_falls_back_without_losing_or_repeating_bytes)
{
	nng_stream_listener *l;
	nng_stream_dialer *d;
	nng_stream *srv, *cli;
	nng_aio *a1, *a2;
	struct side s = { .mu = PTHREAD_MUTEX_INITIALIZER };
	struct reader r = { 0 };
	uint8_t *chunk = malloc(CHUNK_MAX + 4), *want;
	char url[64];
	int port;
	pthread_t th;
	bool idle = false;

	cr_assert(sender_sends_now("tcp://127.0.0.1:1"));
	cr_assert(not(sender_sends_now("ipc:///tmp/x")));
	cr_assert(not(sender_sends_now("tls+tcp://127.0.0.1:1")));
	cr_assert(not(sender_sends_now("ws://127.0.0.1:1/x")));
	cr_assert(
		eq(int, nng_stream_listener_alloc(&l, "tcp://127.0.0.1:0"), 0));
	cr_assert(eq(int, nng_stream_listener_listen(l), 0));
	cr_assert(eq(
		int,
		nng_stream_listener_get_int(l, NNG_OPT_TCP_BOUND_PORT, &port),
		0));
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", port);
	cr_assert(eq(int, nng_stream_dialer_alloc(&d, url), 0));
	cr_assert(eq(int, nng_aio_alloc(&a1, NULL, NULL), 0));
	cr_assert(eq(int, nng_aio_alloc(&a2, NULL, NULL), 0));
	nng_stream_listener_accept(l, a1);
	nng_stream_dialer_dial(d, a2);
	nng_aio_wait(a1);
	nng_aio_wait(a2);
	cr_assert(eq(int, nng_aio_result(a1), 0));
	cr_assert(eq(int, nng_aio_result(a2), 0));
	srv = nng_aio_get_output(a1, 0);
	cli = nng_aio_get_output(a2, 0);
	cr_assert(eq(int, sender_init(&s.tx, srv, 0, true, send_cb, &s), 0));

	for (uint32_t i = 0; i < CHUNKS; i++)
		r.want += chunk_len(i);
	r.st = cli;
	r.got = malloc(r.want);
	want = malloc(r.want);
	cr_assert(r.got && want && chunk);
	pthread_create(&th, NULL, reader_main, &r);
	for (uint32_t i = 0, off = 0; i < CHUNKS; i++) {
		chunk_fill(chunk, i);
		memcpy(want + off, chunk, chunk_len(i));
		off += (uint32_t)chunk_len(i);
		pthread_mutex_lock(&s.mu);
		cr_assert(
			eq(int, buf_append(&s.tx.out, chunk, chunk_len(i)), 0));
		kick_locked(&s);
		pthread_mutex_unlock(&s.mu);
	}
	/* the callback path sends what is left */
	for (int t = 0; t < 3000 && !idle; t++) {
		struct timespec ms = { 0, 10 * 1000000 };

		pthread_mutex_lock(&s.mu);
		idle = !s.tx.busy && s.tx.out.len == 0;
		pthread_mutex_unlock(&s.mu);
		if (!idle)
			nanosleep(&ms, NULL);
	}
	pthread_join(th, NULL);
	cr_assert(idle, "everything was sent");
	cr_assert(eq(int, r.err, 0));
	cr_assert(eq(sz, r.len, r.want));
	cr_assert(eq(int, memcmp(r.got, want, r.want), 0),
		  "the bytes arrive once each, in order");
	cr_assert(eq(int, s.failed, 0));
	cr_assert(lt(int, 0, s.wrote), "some sends completed at once");
	cr_assert(lt(int, 0, s.started),
		  "a full socket made a send go through the callback");

	nng_stream_close(srv);
	nng_stream_close(cli);
	nng_stream_free(srv);
	nng_stream_free(cli);
	sender_fini(&s.tx);
	nng_aio_free(a1);
	nng_aio_free(a2);
	nng_stream_dialer_free(d);
	nng_stream_listener_free(l);
	free(r.got);
	free(want);
	free(chunk);
}
