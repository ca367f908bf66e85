/*
 * wclient.c - blocking test client over nng streams (see wclient.h).
 */
#include "tests/lib/wclient.h"

#include <nng/nng.h>
#include <stdlib.h>
#include <string.h>

#include <weft/error.h>

int
wclient_dial(struct wclient *c, const char *url)
{
	return wclient_dial_ca(c, url, NULL);
}

int
wclient_dial_ca(struct wclient *c, const char *url, const char *ca_file)
{
	nng_stream_dialer *d;
	nng_aio *aio;
	int rv = 0;

	memset(c, 0, sizeof(*c));
	frame_reader_init(&c->fr, FRAME_MAX_HARD);
	if (nng_stream_dialer_alloc(&d, url) != 0)
		return WEFT_EINVAL;
	if (ca_file) /* verify the server: certificate and name */
		rv = nng_stream_dialer_set_string(d, NNG_OPT_TLS_CA_FILE,
						  ca_file) ||
		     nng_stream_dialer_set_string(d, NNG_OPT_TLS_SERVER_NAME,
						  "localhost");
	if (rv) {
		nng_stream_dialer_free(d);
		return WEFT_EINVAL;
	}
	nng_aio_alloc(&aio, NULL, NULL);
	nng_aio_set_timeout(aio, 5000);
	nng_stream_dialer_dial(d, aio);
	nng_aio_wait(aio);
	rv = nng_aio_result(aio);
	if (rv == 0)
		c->stream = nng_aio_get_output(aio, 0);
	nng_aio_free(aio);
	nng_stream_dialer_free(d);
	return rv ? WEFT_EUNAVAILABLE : 0;
}

void
wclient_close(struct wclient *c)
{
	if (c->stream) {
		nng_stream_close(c->stream);
		nng_stream_free(c->stream);
	}
	c->stream = NULL;
	frame_reader_fini(&c->fr);
	free(c->frame);
	c->frame = NULL;
}

int
wclient_send_raw(struct wclient *c, const void *p, size_t n)
{
	nng_aio *aio;
	size_t off = 0;
	int rv = 0;

	nng_aio_alloc(&aio, NULL, NULL);
	nng_aio_set_timeout(aio, 5000);
	while (off < n && rv == 0) {
		nng_iov iov = { (uint8_t *)(uintptr_t)p + off, n - off };

		nng_aio_set_iov(aio, 1, &iov);
		nng_stream_send(c->stream, aio);
		nng_aio_wait(aio);
		rv = nng_aio_result(aio);
		off += nng_aio_count(aio);
	}
	nng_aio_free(aio);
	return rv ? WEFT_ECLOSED : 0;
}

int
wclient_send(struct wclient *c, const struct proto_msg *m)
{
	struct buf b;
	int rc;

	buf_init(&b, 0);
	rc = proto_encode(&b, m, 0, NULL);
	if (!rc)
		rc = wclient_send_raw(c, b.data, b.len);
	buf_fini(&b);
	return rc;
}

int
wclient_hello(struct wclient *c, const char *token, const char *client,
	      struct proto_msg *reply, int ms)
{
	struct proto_msg m = { .type = PROTO_HELLO };
	int rc;

	m.u.hello = (struct proto_hello){ 1,
					  PROTO_VERSION,
					  proto_str_c(token),
					  proto_str_c(client),
					  { 0, 0 },
					  proto_str_c("test") };
	rc = wclient_send(c, &m);
	return rc ? rc : wclient_recv(c, reply, ms);
}

int
wclient_recv(struct wclient *c, struct proto_msg *m, int ms)
{
	struct proto_err err;

	for (;;) {
		if (c->rx_off < c->rx_len) {
			size_t used;
			int rc =
				frame_reader_feed(&c->fr, c->rx + c->rx_off,
						  c->rx_len - c->rx_off, &used);

			c->rx_off += used;
			if (rc)
				return rc;
			if (frame_reader_ready(&c->fr)) {
				uint32_t len;
				const uint8_t *body =
					frame_reader_body(&c->fr, &len);

				free(c->frame);
				c->frame = malloc(len);
				memcpy(c->frame, body, len);
				c->frame_len = len;
				frame_reader_next(&c->fr);
				return proto_decode(c->frame, len, m, &err);
			}
			continue;
		}
		nng_aio *aio;
		nng_iov iov = { c->rx, sizeof(c->rx) };
		int rv;

		nng_aio_alloc(&aio, NULL, NULL);
		nng_aio_set_timeout(aio, ms);
		nng_aio_set_iov(aio, 1, &iov);
		nng_stream_recv(c->stream, aio);
		nng_aio_wait(aio);
		rv = nng_aio_result(aio);
		c->rx_len = rv ? 0 : nng_aio_count(aio);
		c->rx_off = 0;
		nng_aio_free(aio);
		if (rv == NNG_ETIMEDOUT)
			return WEFT_ETIMEDOUT;
		if (rv)
			return WEFT_ECLOSED;
	}
}
