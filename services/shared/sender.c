/*
 * sender.c - the sending half of a framed stream connection (sender.h).
 */
#include "services/shared/sender.h"

#include <string.h>

#include "common/banned.h"

int
sender_init(struct sender *s, nng_stream *stream, size_t max, bool now,
	    void (*cb)(void *), void *arg)
{
	int rv;

	s->stream = stream;
	s->sent = 0;
	s->busy = false;
	s->now = NULL;
	buf_init(&s->out, max);
	buf_init(&s->sending, max);
	rv = nng_aio_alloc(&s->aio, cb, arg);
	if (!rv && now && (rv = nng_aio_alloc(&s->now, NULL, NULL)) != 0) {
		nng_aio_free(s->aio);
		s->aio = NULL;
	}
	return rv;
}

bool
sender_sends_now(const char *url)
{
	static const char *const ok[] = { "tcp://", "tcp4://", "tcp6://" };

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++)
		if (strncmp(url, ok[i], strlen(ok[i])) == 0)
			return true;
	return false;
}

void
sender_fini(struct sender *s)
{
	nng_aio_reap(s->aio); /* we may be inside its callback */
	s->aio = NULL;
	if (s->now)
		nng_aio_free(s->now); /* never in flight outside a kick */
	s->now = NULL;
	buf_fini(&s->out);
	buf_fini(&s->sending);
}

/* send sending from s->sent on */
static void
send_rest(struct sender *s)
{
	nng_iov iov = { s->sending.data + s->sent, s->sending.len - s->sent };

	s->busy = true;
	nng_aio_set_iov(s->aio, 1, &iov);
	nng_stream_send(s->stream, s->aio);
}

/*
 * as much of sending as the socket takes now, on this thread (sender.h):
 * 1 all written, 0 the socket is full, -1 the stream failed
 */
static int
write_now(struct sender *s)
{
	while (s->sent < s->sending.len) {
		nng_iov iov = { s->sending.data + s->sent,
				s->sending.len - s->sent };
		int rv;

		nng_aio_set_iov(s->now, 1, &iov);
		nng_stream_send(s->stream, s->now);
		nng_aio_cancel(s->now); /* queued: nothing of it was written */
		nng_aio_wait(s->now);
		rv = nng_aio_result(s->now);
		if (rv == NNG_ECANCELED)
			return 0;
		if (rv != 0)
			return -1;
		if (nng_aio_count(s->now) == 0)
			return 0;
		s->sent += nng_aio_count(s->now);
	}
	return 1;
}

enum sender_kick
sender_kick(struct sender *s)
{
	struct buf t;

	if (s->busy || s->out.len == 0)
		return KICK_IDLE;
	t = s->sending; /* swap: out becomes the frames being sent */
	s->sending = s->out;
	s->out = t;
	buf_reset(&s->out);
	s->sent = 0;
	if (s->now) {
		int w = write_now(s);

		if (w < 0)
			return KICK_FAILED;
		if (w > 0) {
			buf_reset(&s->sending);
			return KICK_WROTE;
		}
	}
	send_rest(s);
	return KICK_STARTED;
}

enum sender_result
sender_done(struct sender *s, bool closed)
{
	s->busy = false;
	if (nng_aio_result(s->aio) != 0)
		return SENDER_FAILED;
	s->sent += nng_aio_count(s->aio);
	if (s->sent < s->sending.len && !closed) {
		send_rest(s); /* a stream send may write only part */
		return SENDER_MORE;
	}
	buf_reset(&s->sending);
	return SENDER_IDLE;
}

void
sender_trim(struct sender *s, size_t small)
{
	if (s->busy || s->out.len != 0 || s->sending.cap > small ||
	    s->out.cap > small)
		return;
	buf_fini(&s->sending);
	buf_fini(&s->out);
	buf_init(&s->sending, s->sending.max);
	buf_init(&s->out, s->out.max);
}
