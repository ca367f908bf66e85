/*
 * auth.h - session tokens: JWT verification shared by every service.
 *
 * A token is a JWT signed HS256 with a shared secret or, optionally, RS256
 * with the issuer's key (verified with the public key).  `sub` is the user
 * id, `exp` is required and enforced (with a small leeway for clock skew).
 * Verification is done by libjwt; before it, the header is parsed here so
 * that each kind of bad token gets its own error:
 *
 *   WEFT_EAUTH      malformed: not three base64url parts, header or claims
 *                   not JSON, no `sub`, no `exp`, an algorithm other than
 *                   the configured one
 *   WEFT_EUNSIGNED  "alg": "none" (libjwt would accept it without a key)
 *   WEFT_EBADSIG    signature does not verify with the configured key
 *   WEFT_EEXPIRED   `exp` is in the past (beyond the leeway)
 *
 * struct auth is immutable after auth_new, so one may be shared by any
 * number of threads.
 */
#ifndef WEFT_SVC_AUTH_H
#define WEFT_SVC_AUTH_H

#include <stddef.h>
#include <stdint.h>

#include "proto/msg.h"

/* AUTH_LEEWAY_S - seconds of clock skew tolerated on `exp`. */
#define AUTH_LEEWAY_S 30

/* AUTH_USER_MAX - room for a user id: a protocol name plus its NUL. */
#define AUTH_USER_MAX (PROTO_MAX_NAME + 1)

struct auth_config {
	const char *hs256_secret; /* shared secret, or NULL */
	const char *rs256_pubkey; /* PEM text of the public key, or NULL */
};

struct auth;

/*
 * auth_new - keys for verifying.  Exactly one of hs256_secret (at least
 * 32 bytes: HS256 with a short secret is guessable) and rs256_pubkey must
 * be set.  The strings are copied.  Errors: WEFT_ECONFIG (with why),
 * WEFT_ENOMEM.  Caller owns *out; free with auth_free.
 */
int auth_new(struct auth **out, const struct auth_config *cfg, char *why,
	     size_t whylen);
void auth_free(struct auth *a);

/*
 * auth_verify - check token[0..len) at time `now` (Unix seconds).  On
 * success copies the user id into user[AUTH_USER_MAX] and the expiry into
 * *exp.  Errors as listed above, with a sentence in why.  Thread-safe.
 */
int auth_verify(const struct auth *a, const char *token, size_t len,
		int64_t now, char *user, int64_t *exp, char *why,
		size_t whylen);

/*
 * auth_mint_hs256 - a development token for user, valid for ttl_s seconds
 * from now, signed with secret.  Returns a string the caller frees with
 * free(), or NULL (no memory, or libjwt refused).  For tools and tests.
 */
char *auth_mint_hs256(const char *secret, const char *user, int64_t now,
		      int64_t ttl_s);

/* AUTH_TOKEN_MAX - room for a development token (a few hundred bytes) */
#define AUTH_TOKEN_MAX 1024

/*
 * struct auth_minter and auth_minter_token - libweft's token callback
 * (weft_token_fn, with the minter as its argument) for development and
 * tests: each call mints a fresh token for user, valid an hour, into tok.
 * One minter per store: the callback runs on that store's sync thread.
 */
struct auth_minter {
	const char *secret;	  /* borrowed */
	const char *user;	  /* borrowed */
	char tok[AUTH_TOKEN_MAX]; /* the last token minted ("" on failure) */
};

const char *auth_minter_token(void *minter);

#endif /* WEFT_SVC_AUTH_H */
