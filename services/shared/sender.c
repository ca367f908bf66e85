/*
 * sender.c - the sending half of a framed stream connection (sender.h).
 */
#include "services/shared/sender.h"

#include "common/banned.h"

int
sender_init(struct sender *s, nng_stream *stream, size_t max,
	    void (*cb)(void *), void *arg)
{
	s->stream = stream;
	s->sent = 0;
	s->busy = false;
	buf_init(&s->out, max);
	buf_init(&s->sending, max);
	return nng_aio_alloc(&s->aio, cb, arg);
}

void
sender_fini(struct sender *s)
{
	nng_aio_reap(s->aio); /* we may be inside its callback */
	s->aio = NULL;
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

bool
sender_kick(struct sender *s)
{
	struct buf t;

	if (s->busy || s->out.len == 0)
		return false;
	t = s->sending; /* swap: out becomes the frames being sent */
	s->sending = s->out;
	s->out = t;
	buf_reset(&s->out);
	s->sent = 0;
	send_rest(s);
	return true;
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
