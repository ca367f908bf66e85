/*
 * listen.h - the client-facing listener every weft service opens: nng's
 * byte-stream API on tcp://, tls+tcp://, ws:// or wss://, with TLS and
 * WebSocket settings applied the same way everywhere.
 */
#ifndef WEFT_SVC_LISTEN_H
#define WEFT_SVC_LISTEN_H

#include <nng/nng.h>
#include <stddef.h>
#include <stdint.h>

/*
 * listen_open - allocate and start a stream listener on url.
 *
 * tls_cert is a PEM file holding the certificate chain and its private
 * key; it is required for tls+tcp:// and wss:// and refused for the
 * others (a certificate that silently goes unused is a mistake).  For
 * ws:// and wss://, WebSocket frames larger than max_frame plus the
 * length prefix are refused by nng before they are buffered.
 *
 * Returns 0 with *out listening, or WEFT_ECONFIG with why filled in.
 */
int listen_open(nng_stream_listener **out, const char *url,
		const char *tls_cert, uint32_t max_frame, char *why,
		size_t whylen);

/* listen_is_tls - the URL's scheme carries TLS. */
int listen_is_tls(const char *url);

#endif /* WEFT_SVC_LISTEN_H */
