/*
 * listen.c - see listen.h.
 */
#include "services/shared/listen.h"

#include <stdio.h>
#include <string.h>

#include <weft/error.h>

#include "proto/frame.h"

#include "common/banned.h"

static int
has_prefix(const char *s, const char *p)
{
	return strncmp(s, p, strlen(p)) == 0;
}

int
listen_is_tls(const char *url)
{
	return has_prefix(url, "tls+tcp://") || has_prefix(url, "wss://");
}

int
listen_open(nng_stream_listener **out, const char *url, const char *tls_cert,
	    uint32_t max_frame, char *why, size_t whylen)
{
	nng_stream_listener *l = NULL;
	const char *step = "listen";
	int rv;

	*out = NULL;
	if (listen_is_tls(url) && (!tls_cert || !*tls_cert)) {
		snprintf(why, whylen,
			 "'%s' needs --tls-cert (a PEM file with the "
			 "certificate and its key)",
			 url);
		return WEFT_ECONFIG;
	}
	if (!listen_is_tls(url) && tls_cert && *tls_cert) {
		snprintf(why, whylen,
			 "--tls-cert is set but '%s' is not tls+tcp:// or "
			 "wss://",
			 url);
		return WEFT_ECONFIG;
	}
	rv = nng_stream_listener_alloc(&l, url);
	if (!rv && listen_is_tls(url)) {
		step = "load the certificate and key from --tls-cert";
		rv = nng_stream_listener_set_string(
			l, NNG_OPT_TLS_CERT_KEY_FILE, tls_cert);
	}
	if (!rv && (has_prefix(url, "ws://") || has_prefix(url, "wss://"))) {
		step = "set the WebSocket frame limit";
		rv = nng_stream_listener_set_size(l, NNG_OPT_WS_RECVMAXFRAME,
						  (size_t)max_frame +
							  FRAME_HEADER);
		if (!rv)
			rv = nng_stream_listener_set_size(l, NNG_OPT_RECVMAXSZ,
							  (size_t)max_frame +
								  FRAME_HEADER);
	}
	if (!rv) {
		step = "listen";
		rv = nng_stream_listener_listen(l);
	}
	if (rv) {
		snprintf(why, whylen, "cannot %s on '%s': %s", step, url,
			 nng_strerror(rv));
		nng_stream_listener_free(l);
		return WEFT_ECONFIG;
	}
	*out = l;
	return 0;
}
