/*
 * wclient.h - a small blocking protocol client for tests: dial a weft
 * service, send messages, receive whole frames with a timeout.
 */
#ifndef WEFT_TEST_WCLIENT_H
#define WEFT_TEST_WCLIENT_H

#include <stdint.h>

#include "common/buf.h"
#include "proto/frame.h"
#include "proto/msg.h"

struct wclient {
	void *stream; /* nng_stream */
	struct frame_reader fr;
	uint8_t rx[16384];
	size_t rx_len, rx_off; /* unread bytes in rx */
	uint8_t *frame;	       /* last frame received (owned) */
	uint32_t frame_len;
};

/* wclient_dial - connect to url; 0 or a weft_err. */
int wclient_dial(struct wclient *c, const char *url);

/* wclient_dial_ca - the same; for tls+tcp:// and wss://, the server's
 * certificate must chain to ca_file and name "localhost". */
int wclient_dial_ca(struct wclient *c, const char *url, const char *ca_file);
void wclient_close(struct wclient *c);

/* wclient_send - encode and send one message; 0 or a weft_err. */
int wclient_send(struct wclient *c, const struct proto_msg *m);

/* wclient_send_raw - send bytes as they are (hostile input). */
int wclient_send_raw(struct wclient *c, const void *p, size_t n);

/* wclient_recv - the next message, waiting up to ms; it borrows from the
 * client until the next recv.  0, WEFT_ETIMEDOUT, WEFT_ECLOSED, or the
 * decoder's error. */
int wclient_recv(struct wclient *c, struct proto_msg *m, int ms);

/* wclient_hello - send HELLO (protocol 1, token, client name, agent
 * "test") and receive the answer into reply, waiting up to ms; 0 or as
 * wclient_send and wclient_recv.  The caller checks that it is WELCOME. */
int wclient_hello(struct wclient *c, const char *token, const char *client,
		  struct proto_msg *reply, int ms);

#endif
