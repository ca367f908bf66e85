/*
 * weft - the command-line tool.  Today: `weft token`, which mints a
 * development JWT; the rest of the CLI (put, get, watch, status...)
 * arrives with the client library.
 *
 * Exit codes: 0 ok, 1 usage, 2 rejected, 3 unavailable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/config.h"
#include "services/shared/auth.h"

#include "common/banned.h"

static int
cmd_token(int argc, const char *const *argv)
{
	const char *user, *secret;
	int64_t ttl;
	const struct cfg_opt opts[] = {
		{ "user", CFG_STR, &user, NULL, "user id (the token's sub)", 0,
		  0 },
		{ "ttl", CFG_DURATION, &ttl, "24h", "how long it is valid",
		  1000, 366LL * 24 * 3600 * 1000 },
		{ "jwt-secret", CFG_STR, &secret, NULL,
		  "HS256 secret the services verify with (>= 32 bytes)", 0, 0 },
	};
	const struct cfg_spec spec = {
		"weft token", "--user U [options]",
		"Mints a development token (HS256 JWT) for a user and prints "
		"it.",
		opts, sizeof(opts) / sizeof(opts[0])
	};
	char err[CFG_ERR_MAX];
	char *tok;
	int argi, rc;

	rc = cfg_parse(&spec, argc, argv, &argi, stdout, err, sizeof(err));
	if (rc == CFG_EXIT)
		return 0;
	if (rc || argi < argc || !user || !*user) {
		fprintf(stderr, "weft token: %s\n",
			rc ? err : "--user is required (see --help)");
		return 1;
	}
	if (!secret || strlen(secret) < 32) {
		fprintf(stderr, "weft token: --jwt-secret (or "
				"WEFT_JWT_SECRET) of at least 32 bytes is "
				"required\n");
		return 1;
	}
	tok = auth_mint_hs256(secret, user, (int64_t)time(NULL), ttl / 1000);
	if (!tok) {
		fprintf(stderr, "weft token: could not sign the token\n");
		return 3;
	}
	printf("%s\n", tok);
	free(tok);
	return 0;
}

static void
usage(FILE *out)
{
	fprintf(out, "usage: weft <command> [options]\n\n"
		     "commands:\n"
		     "  token     mint a development token for a user\n"
		     "  version   print the version\n\n"
		     "weft <command> --help shows a command's options; each "
		     "also reads WEFT_* variables.\n"
		     "exit codes: 0 ok, 1 usage, 2 rejected by the server, 3 "
		     "unavailable\n");
}

int
main(int argc, char **argv)
{
	const char *const *args = (const char *const *)argv;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 1 : 0;
	}
	if (strcmp(argv[1], "token") == 0)
		return cmd_token(argc - 1, args + 1);
	if (strcmp(argv[1], "version") == 0 ||
	    strcmp(argv[1], "--version") == 0) {
		printf("weft 0.1.0\n");
		return 0;
	}
	fprintf(stderr, "weft: unknown command '%s'\n\n", argv[1]);
	usage(stderr);
	return 1;
}
