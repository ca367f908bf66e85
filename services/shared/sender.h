/*
 * sender.h - the sending half of a framed stream connection, shared by
 * weft-write's connections and weft-fanout's sessions.
 *
 * Frames are appended to `out` while one send, of `sending`, is in
 * flight; when it completes, the buffers swap and the next send starts.
 * A stream send may write only part of its buffer: sender_done resumes it
 * from where it stopped.  So at most one nng send is ever in flight, and
 * frames leave in the order they were appended.
 *
 * Sends now.  nng completes every aio that has a callback on one of its
 * task threads, so each send cost a thread wake-up and two context
 * switches: on a fanout node pushing one change per session, most of the
 * node's time (bench/fanout).  A sender made with `now` first writes on
 * the caller's thread through a second aio that has no callback (nng then
 * completes it inline): nng's TCP transport makes one non-blocking
 * sendmsg() for it, and either completes it with what that wrote, or
 * queues it, having written nothing, until the socket drains.  So right
 * after the send the sender cancels it (a no-op if it completed) and
 * waits for it (immediate either way): completed, the bytes are counted
 * and the next ones go the same way; cancelled, nothing of it was
 * written, and the rest goes as an ordinary send through the callback.
 * That argument holds for nng 1.5's POSIX tcp:// transport, so only it
 * uses this (tests/unit/sender_test.c checks it over a real socket); TLS
 * and WebSocket streams buffer and frame what they are given, and keep the
 * callback path, as does ipc://, untested.
 *
 * Not locked: the owner calls every function under its own lock, and
 * takes one reference on itself for each send in flight (sender_kick
 * returns KICK_STARTED when it started one; sender_done says whether the
 * send still holds it).
 */
#ifndef WEFT_SVC_SENDER_H
#define WEFT_SVC_SENDER_H

#include <nng/nng.h>
#include <stdbool.h>
#include <stddef.h>

#include "common/buf.h"

struct sender {
	nng_stream *stream; /* borrowed: the owner frees it */
	nng_aio *aio;	    /* the send in flight (the owner's callback) */
	nng_aio *now;	    /* sends on the caller's thread, or NULL */
	struct buf out;	    /* frames waiting for the next send */
	struct buf sending; /* frames of the send in flight */
	size_t sent;	    /* bytes of sending written so far */
	bool busy;	    /* a send is in flight */
};

/*
 * sender_init - a sender on stream whose buffers hold at most max bytes
 * each (0: unbounded), completing sends through cb(arg) on nng's threads;
 * with now, writing on the caller's thread first (see above: only for a
 * stream of nng's tcp:// transport; sender_sends_now() says which URLs).
 * Returns 0, or nng's error when an aio cannot be allocated.
 */
int sender_init(struct sender *s, nng_stream *stream, size_t max, bool now,
		void (*cb)(void *), void *arg);

/* sender_sends_now - whether streams accepted on url may write now */
bool sender_sends_now(const char *url);

/* sender_fini - reap the aio (safe from inside its callback), free the
 * buffers.  The stream is the owner's to free, before this. */
void sender_fini(struct sender *s);

enum sender_kick {
	KICK_IDLE,    /* nothing to do: a send is in flight, or out is empty */
	KICK_WROTE,   /* all of out was written now; no send is in flight */
	KICK_STARTED, /* a send is in flight: the owner takes a reference */
	KICK_FAILED,  /* the stream failed: the owner closes it */
};

/*
 * sender_kick - send everything in out, unless a send is in flight or out
 * is empty: written now when the sender may and the socket takes it all,
 * otherwise (the rest) by a send whose completion calls the callback.
 */
enum sender_kick sender_kick(struct sender *s);

enum sender_result {
	SENDER_FAILED, /* the send failed: close; its reference is dropped */
	SENDER_MORE,   /* part was written; the rest is being sent, and the
			* send keeps its reference */
	SENDER_IDLE,   /* all written; its reference is dropped (kick again
			* for what was appended meanwhile) */
};

/*
 * sender_done - in the aio's callback, under the owner's lock: account
 * for what the send wrote.  closed: the owner is closing, so a partial
 * send is not resumed (the result is then SENDER_IDLE).
 */
enum sender_result sender_done(struct sender *s, bool closed);

/*
 * sender_trim - while idle, give back buffers whose capacity is at most
 * small (an idle connection then holds no output memory).  Bigger ones
 * are kept: freeing them after every large send churns the allocator.
 */
void sender_trim(struct sender *s, size_t small);

#endif /* WEFT_SVC_SENDER_H */
