/*
 * auth.c - JWT verification with libjwt, with distinct errors per failure
 * (see auth.h).
 */
#include "services/shared/auth.h"

#include <jansson.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <weft/error.h>

#include "common/banned.h"

/* AUTH_MIN_SECRET - HS256 secrets shorter than this are refused. */
#define AUTH_MIN_SECRET 32

/* AUTH_MAX_HEADER - a JWT header is a few dozen bytes; this bounds the
 * decode of a hostile one. */
#define AUTH_MAX_HEADER 1024

struct auth {
	jwt_alg_t alg;	    /* JWT_ALG_HS256 or JWT_ALG_RS256 */
	unsigned char *key; /* owned: secret or PEM public key */
	size_t keylen;
};

int
auth_new(struct auth **out, const struct auth_config *cfg, char *why,
	 size_t whylen)
{
	const char *k =
		cfg->hs256_secret ? cfg->hs256_secret : cfg->rs256_pubkey;
	struct auth *a;

	*out = NULL;
	if (!cfg->hs256_secret == !cfg->rs256_pubkey) {
		snprintf(why, whylen,
			 "set exactly one of an HS256 secret and "
			 "an RS256 public key");
		return WEFT_ECONFIG;
	}
	if (cfg->hs256_secret && strlen(cfg->hs256_secret) < AUTH_MIN_SECRET) {
		snprintf(why, whylen,
			 "the HS256 secret must be at least %d bytes",
			 AUTH_MIN_SECRET);
		return WEFT_ECONFIG;
	}
	a = calloc(1, sizeof(*a));
	if (!a)
		return WEFT_ENOMEM;
	a->alg = cfg->hs256_secret ? JWT_ALG_HS256 : JWT_ALG_RS256;
	a->keylen = strlen(k);
	a->key = malloc(a->keylen + 1);
	if (!a->key) {
		free(a);
		return WEFT_ENOMEM;
	}
	memcpy(a->key, k, a->keylen + 1);
	*out = a;
	return 0;
}

void
auth_free(struct auth *a)
{
	if (!a)
		return;
	free(a->key);
	free(a);
}

static int
b64url_val(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

/* base64url (no padding) of in[0..n) into out (cap); -1 if invalid */
static long
b64url_decode(const char *in, size_t n, char *out, size_t cap)
{
	uint32_t acc = 0;
	size_t o = 0;
	int bits = 0;

	for (size_t i = 0; i < n; i++) {
		int v = b64url_val((unsigned char)in[i]);

		if (v < 0)
			return -1;
		acc = (acc << 6) | (uint32_t)v;
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= cap)
				return -1;
			out[o++] = (char)((acc >> bits) & 0xff);
		}
	}
	return (long)o;
}

/* the "alg" of a token's header into alg; WEFT_EAUTH if it is not a
 * base64url JSON header with a string alg */
static int
header_alg(const char *token, size_t hlen, char *alg, size_t cap)
{
	char raw[AUTH_MAX_HEADER];
	json_error_t jerr;
	json_t *h, *a;
	long n;
	int rc = WEFT_EAUTH;

	n = b64url_decode(token, hlen, raw, sizeof(raw));
	if (n <= 0)
		return WEFT_EAUTH;
	h = json_loadb(raw, (size_t)n, 0, &jerr);
	if (!h)
		return WEFT_EAUTH;
	a = json_object_get(h, "alg");
	if (json_is_string(a)) {
		snprintf(alg, cap, "%s", json_string_value(a));
		rc = 0;
	}
	json_decref(h);
	return rc;
}

int
auth_verify(const struct auth *a, const char *token, size_t len, int64_t now,
	    char *user, int64_t *exp, char *why, size_t whylen)
{
	const char *dot1, *dot2;
	char alg[16], *copy;
	const char *sub;
	jwt_t *jwt = NULL;
	long e;
	int rc;

	user[0] = '\0';
	*exp = 0;
	if (len == 0 || len > PROTO_MAX_TOKEN || memchr(token, '\0', len)) {
		snprintf(why, whylen,
			 "malformed token: empty, too long or "
			 "binary");
		return WEFT_EAUTH;
	}
	dot1 = memchr(token, '.', len);
	dot2 = dot1 ? memchr(dot1 + 1, '.', len - (size_t)(dot1 + 1 - token))
		    : NULL;
	if (!dot1 || !dot2 ||
	    memchr(dot2 + 1, '.', len - (size_t)(dot2 + 1 - token))) {
		snprintf(why, whylen,
			 "malformed token: not three "
			 "dot-separated parts");
		return WEFT_EAUTH;
	}
	if (header_alg(token, (size_t)(dot1 - token), alg, sizeof(alg))) {
		snprintf(why, whylen,
			 "malformed token: header is not "
			 "base64url JSON with an alg");
		return WEFT_EAUTH;
	}
	if (strcmp(alg, "none") == 0) {
		snprintf(why, whylen, "unsigned token (alg none) refused");
		return WEFT_EUNSIGNED;
	}
	if (jwt_str_alg(alg) != a->alg) {
		snprintf(why, whylen, "token signed with %.15s, expected %s",
			 alg, jwt_alg_str(a->alg));
		return WEFT_EAUTH;
	}
	copy = malloc(len + 1); /* libjwt wants a C string */
	if (!copy)
		return WEFT_ENOMEM;
	memcpy(copy, token, len);
	copy[len] = '\0';
	rc = jwt_decode(&jwt, copy, a->key, (int)a->keylen);
	free(copy);
	if (rc != 0 || !jwt || jwt_get_alg(jwt) != a->alg) {
		jwt_free(jwt);
		snprintf(why, whylen, "token signature does not verify");
		return WEFT_EBADSIG;
	}
	e = jwt_get_grant_int(jwt, "exp");
	if (e <= 0) {
		jwt_free(jwt);
		snprintf(why, whylen, "token has no exp claim");
		return WEFT_EAUTH;
	}
	if ((int64_t)e + AUTH_LEEWAY_S < now) {
		jwt_free(jwt);
		snprintf(why, whylen, "token expired %lld s ago",
			 (long long)(now - e));
		return WEFT_EEXPIRED;
	}
	sub = jwt_get_grant(jwt, "sub");
	if (!sub || !*sub || strlen(sub) >= AUTH_USER_MAX) {
		jwt_free(jwt);
		snprintf(why, whylen, "token has no usable sub claim");
		return WEFT_EAUTH;
	}
	memcpy(user, sub, strlen(sub) + 1);
	*exp = e;
	jwt_free(jwt);
	return 0;
}

char *
auth_mint_hs256(const char *secret, const char *user, int64_t now,
		int64_t ttl_s)
{
	jwt_t *jwt = NULL;
	char *tok = NULL;

	if (jwt_new(&jwt) != 0)
		return NULL;
	if (jwt_add_grant(jwt, "sub", user) == 0 &&
	    jwt_add_grant_int(jwt, "iat", (long)now) == 0 &&
	    jwt_add_grant_int(jwt, "exp", (long)(now + ttl_s)) == 0 &&
	    jwt_set_alg(jwt, JWT_ALG_HS256, (const unsigned char *)secret,
			(int)strlen(secret)) == 0)
		tok = jwt_encode_str(jwt);
	jwt_free(jwt);
	return tok;
}

const char *
auth_minter_token(void *minter)
{
	struct auth_minter *m = minter;
	char *t =
		auth_mint_hs256(m->secret, m->user, (int64_t)time(NULL), 3600);

	snprintf(m->tok, sizeof(m->tok), "%s", t ? t : "");
	free(t);
	return m->tok;
}
