/*
 * weft - the command-line tool: development tokens and migrations (here),
 * and, on a local store through libweft, spaces, writes, reads, watching
 * and syncing (cmds.c).  It works offline: writes queue in the store and
 * go out on the next online run.
 *
 * Exit codes (tools/cli.h): 0 ok, 1 usage, 2 rejected by the server,
 * 3 unavailable.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/config.h"
#include "services/shared/auth.h"
#include "services/shared/migrate.h"
#include "tools/cli.h"
#include "tools/cmds.h"

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
	char *tok;
	int argi, rc;

	rc = cli_parse(&spec, &argc, &argv, &argi, 0, 0);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if (!user || !*user) {
		fprintf(stderr,
			"weft token: --user is required (see --help)\n");
		return CLI_USAGE;
	}
	if (!secret || strlen(secret) < 32) {
		fprintf(stderr, "weft token: --jwt-secret (or "
				"WEFT_JWT_SECRET) of at least 32 bytes is "
				"required\n");
		return CLI_USAGE;
	}
	tok = auth_mint_hs256(secret, user, (int64_t)time(NULL), ttl / 1000);
	if (!tok) {
		fprintf(stderr, "weft token: could not sign the token\n");
		return CLI_UNAVAILABLE;
	}
	printf("%s\n", tok);
	free(tok);
	return CLI_OK;
}

static int
cmd_migrate(int argc, const char *const *argv)
{
	const char *pg_url, *dir;
	const struct cfg_opt opts[] = {
		{ "pg-url", CFG_STR, &pg_url,
		  "postgresql://weft@127.0.0.1:54320/weft",
		  "the database (libpq URL)", 0, 0 },
		{ "migrations-dir", CFG_STR, &dir, WEFT_MIGRATIONS_DIR,
		  "where the NNNN_name.sql migrations are", 0, 0 },
	};
	const struct cfg_spec spec = {
		"weft migrate", "[options]",
		"Applies weft's database migrations that are missing, in "
		"order, each exactly once\n(safe to run again, and "
		"concurrently).",
		opts, sizeof(opts) / sizeof(opts[0])
	};
	char why[512];
	int argi, rc, applied = 0;

	rc = cli_parse(&spec, &argc, &argv, &argi, 0, 0);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	rc = migrate_run(pg_url, dir, &applied, why, sizeof(why));
	if (rc) {
		fprintf(stderr, "weft migrate: %s\n", why);
		return rc == WEFT_EUNAVAILABLE ? CLI_UNAVAILABLE : CLI_USAGE;
	}
	printf("migrations applied now: %d; the database is up to date\n",
	       applied);
	return CLI_OK;
}

static const struct command {
	const char *name;
	int (*run)(int argc, const char *const *argv);
	const char *help;
} commands[] = {
	{ "token", cmd_token, "mint a development token (JWT) for a user" },
	{ "migrate", cmd_migrate, "apply the database migrations" },
	{ "space", cmd_space, "create a space; add or remove members" },
	{ "put", cmd_put, "create or replace a record" },
	{ "set", cmd_set, "set fields of a record" },
	{ "delete", cmd_delete, "delete a record" },
	{ "get", cmd_get, "print a record" },
	{ "ls", cmd_ls, "list records (of a space)" },
	{ "watch", cmd_watch, "print each change of a space as a JSON line" },
	{ "bootstrap", cmd_bootstrap, "load a space, with progress" },
	{ "status", cmd_status, "connection state, pending writes, cursor" },
	{ "sync", cmd_sync, "send queued writes and catch up, then exit" },
	{ "undo", cmd_undo, "undo this store's last transaction" },
	{ "redo", cmd_undo, "redo what undo undid" },
	{ "version", NULL, "print the version" },
};

static void
usage(FILE *out)
{
	fprintf(out, "usage: weft <command> [options] [arguments]\n\n"
		     "commands:\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(out, "  %-10s %s\n", commands[i].name,
			commands[i].help);
	fprintf(out,
		"\nweft <command> --help lists a command's options; each has "
		"a WEFT_* variable\n(--write-url: WEFT_WRITE_URL).  "
		"Options may come\nbefore or after the arguments.\n\n"
		"The store commands work on a local store (--store, default "
		"~/.local/share/weft/\n<user>.db): writes are committed there "
		"first, then sent; with --offline, or when\nthe services are "
		"down, they stay queued and go out on the next online run.\n"
		"With a local stack running: set -a; . var/stack/env; set +a\n"
		"\nexit codes: 0 ok, 1 usage, 2 rejected by the server (or "
		"not found), 3 services\nunavailable\n");
}

int
main(int argc, char **argv)
{
	const char *const *args = (const char *const *)argv;

	if (argc < 2 || strcmp(argv[1], "--help") == 0 ||
	    strcmp(argv[1], "help") == 0 || strcmp(argv[1], "-h") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? CLI_USAGE : CLI_OK;
	}
	if (strcmp(argv[1], "version") == 0 ||
	    strcmp(argv[1], "--version") == 0) {
		printf("weft %s (protocol %u)\n", weft_version(),
		       weft_protocol_version());
		return CLI_OK;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
		if (commands[i].run && strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(argc - 1, args + 1);
	}
	fprintf(stderr, "weft: unknown command '%s'\n\n", argv[1]);
	usage(stderr);
	return CLI_USAGE;
}
