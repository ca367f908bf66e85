/*
 * auth_test.c - every kind of bad token gets its own error; good HS256
 * and RS256 tokens give the user id.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <jwt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <weft/error.h>

#include "services/shared/auth.h"

#define SECRET "0123456789abcdef0123456789abcdef-test"

static struct auth *hs;
static int64_t now;

static void
setup(void)
{
	struct auth_config cfg = { SECRET, NULL };
	char why[128];

	now = (int64_t)time(NULL);
	cr_assert(eq(i64, auth_new(&hs, &cfg, why, sizeof(why)), 0), "%s", why);
}

static void
teardown(void)
{
	auth_free(hs);
}

TestSuite(auth, .init = setup, .fini = teardown);

static int
verify(const struct auth *a, const char *tok, char *user, char *why)
{
	int64_t exp;

	return auth_verify(a, tok, strlen(tok), now, user, &exp, why, 128);
}

/* a token with arbitrary header and claims, signed by libjwt or not */
static char *
make(jwt_alg_t alg, const char *key, const char *claims_json)
{
	jwt_t *jwt;
	char *tok;

	cr_assert(eq(i64, jwt_new(&jwt), 0));
	cr_assert(eq(i64, jwt_add_grants_json(jwt, claims_json), 0));
	cr_assert(eq(i64,
		     jwt_set_alg(jwt, alg, (const unsigned char *)key,
				 key ? (int)strlen(key) : 0),
		     0));
	tok = jwt_encode_str(jwt);
	jwt_free(jwt);
	cr_assert_not_null(tok);
	return tok;
}

static char *
claims(const char *sub, int64_t exp)
{
	static char buf[256];

	if (sub)
		snprintf(buf, sizeof(buf), "{\"sub\":\"%s\",\"exp\":%lld}", sub,
			 (long long)exp);
	else
		snprintf(buf, sizeof(buf), "{\"exp\":%lld}", (long long)exp);
	return buf;
}

Test(auth, good_hs256_token_gives_the_user)
{
	char user[AUTH_USER_MAX], why[128];
	char *tok = auth_mint_hs256(SECRET, "alice", now, 3600);
	int64_t exp;

	cr_assert(eq(i64,
		     auth_verify(hs, tok, strlen(tok), now, user, &exp, why,
				 sizeof(why)),
		     0),
		  "%s", why);
	cr_assert_str_eq(user, "alice");
	cr_assert(eq(i64, exp, now + 3600));
	free(tok);
}

Test(auth, expired_token_is_eexpired)
{
	char user[AUTH_USER_MAX], why[128];
	char *tok = auth_mint_hs256(SECRET, "alice", now - 7200, 3600);

	cr_assert(eq(i64, verify(hs, tok, user, why), WEFT_EEXPIRED));
	cr_assert_not_null(strstr(why, "expired"), "%s", why);
	cr_assert_str_eq(user, "", "no user on failure");
	free(tok);
	/* within the leeway it still passes */
	tok = auth_mint_hs256(SECRET, "alice", now - 3600 - 5, 3600);
	cr_assert(eq(i64, verify(hs, tok, user, why), 0), "%s", why);
	free(tok);
}

Test(auth, unsigned_token_is_eunsigned)
{
	char user[AUTH_USER_MAX], why[128];
	char *tok = make(JWT_ALG_NONE, NULL, claims("alice", now + 60));

	cr_assert(eq(i64, verify(hs, tok, user, why), WEFT_EUNSIGNED));
	cr_assert_not_null(strstr(why, "alg none"), "%s", why);
	free(tok);
}

Test(auth, wrong_key_and_tampering_are_ebadsig)
{
	char user[AUTH_USER_MAX], why[128];
	char *tok = auth_mint_hs256("another-secret-another-secret-xx", "alice",
				    now, 60);
	char *dot;

	cr_assert(eq(i64, verify(hs, tok, user, why), WEFT_EBADSIG));
	free(tok);
	/* a good token whose claims were edited: "alice" -> "alicf" */
	tok = auth_mint_hs256(SECRET, "alice", now, 60);
	dot = strchr(tok, '.');
	cr_assert_not_null(dot);
	{
		/* flip one base64url char of the payload (keep it valid) */
		char *p = dot + 3;

		*p = *p == 'A' ? 'B' : 'A';
	}
	cr_assert(eq(i64, verify(hs, tok, user, why), WEFT_EBADSIG), "%s", why);
	free(tok);
}

Test(auth, malformed_tokens_are_eauth)
{
	static const char *const bad[] = {
		"",	     "abc",
		"a.b",	     "a.b.c.d",
		"!!!.e30.x", "bm90IGpzb24.e30.x", /* header "not json" */
		"e30.e30.x",			  /* header {} without alg */
	};
	char user[AUTH_USER_MAX], why[128];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert(eq(i64, verify(hs, bad[i], user, why), WEFT_EAUTH),
			  "'%s': %s", bad[i], why);
		cr_assert_not_null(strstr(why, "malformed"), "'%s': %s", bad[i],
				   why);
	}
}

Test(auth, missing_claims_and_other_algorithms_are_eauth)
{
	char user[AUTH_USER_MAX], why[128];
	char *tok = make(JWT_ALG_HS256, SECRET, "{\"sub\":\"alice\"}");

	cr_assert(eq(i64, verify(hs, tok, user, why), WEFT_EAUTH));
	cr_assert_not_null(strstr(why, "no exp"), "%s", why);
	free(tok);
	tok = make(JWT_ALG_HS256, SECRET, claims(NULL, now + 60));
	cr_assert(eq(i64, verify(hs, tok, user, why), WEFT_EAUTH));
	cr_assert_not_null(strstr(why, "sub"), "%s", why);
	free(tok);
	tok = make(JWT_ALG_HS384, SECRET, claims("alice", now + 60));
	cr_assert(eq(i64, verify(hs, tok, user, why), WEFT_EAUTH));
	cr_assert_not_null(strstr(why, "HS384"), "%s", why);
	free(tok);
}

Test(auth, config_is_checked)
{
	struct auth *a;
	struct auth_config shortkey = { "short", NULL };
	struct auth_config both = { SECRET, "pem" };
	struct auth_config none = { NULL, NULL };
	char why[128];

	cr_assert(eq(i64, auth_new(&a, &shortkey, why, sizeof(why)),
		     WEFT_ECONFIG));
	cr_assert(eq(i64, auth_new(&a, &both, why, sizeof(why)), WEFT_ECONFIG));
	cr_assert(eq(i64, auth_new(&a, &none, why, sizeof(why)), WEFT_ECONFIG));
}

static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	static char buf[8192];
	size_t n;

	cr_assert_not_null(f, "open %s", path);
	n = fread(buf, 1, sizeof(buf) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return strdup(buf);
}

Test(auth, rs256_with_a_public_key)
{
	char dir[] = "/tmp/weft-auth-XXXXXX", cmd[512], path[256];
	char user[AUTH_USER_MAX], why[128];
	char *priv, *pub, *tok;
	struct auth *rs;
	struct auth_config cfg = { NULL, NULL };

	cr_assert_not_null(mkdtemp(dir));
	snprintf(cmd, sizeof(cmd),
		 "openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 "
		 "-out %s/k.pem 2>/dev/null && openssl pkey -in %s/k.pem "
		 "-pubout -out %s/p.pem",
		 dir, dir, dir);
	cr_assert(eq(i64, system(cmd), 0), "openssl failed");
	snprintf(path, sizeof(path), "%s/k.pem", dir);
	priv = slurp(path);
	snprintf(path, sizeof(path), "%s/p.pem", dir);
	pub = slurp(path);
	cfg.rs256_pubkey = pub;
	cr_assert(eq(i64, auth_new(&rs, &cfg, why, sizeof(why)), 0), "%s", why);
	tok = make(JWT_ALG_RS256, priv, claims("carol", now + 60));
	cr_assert(eq(i64, verify(rs, tok, user, why), 0), "%s", why);
	cr_assert_str_eq(user, "carol");
	free(tok);
	/* an HS256 token signed with the public key text: the classic
	 * algorithm-confusion attack */
	tok = make(JWT_ALG_HS256, pub, claims("mallory", now + 60));
	cr_assert(eq(i64, verify(rs, tok, user, why), WEFT_EAUTH), "%s", why);
	free(tok);
	auth_free(rs);
	free(priv);
	free(pub);
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	cr_assert(eq(i64, system(cmd), 0));
}
