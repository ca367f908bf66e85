/*
 * cli.h - what the weft command-line tool and the demo app share: the
 * options that say which store to use and how to reach the services, and
 * a store opened with them (struct cli), with the callbacks that let a
 * command learn whether its own transaction was accepted.
 *
 * Exit codes (the tools' contract, also in their --help):
 *   CLI_OK 0, CLI_USAGE 1 (bad flags or arguments, a bad value, a store
 *   that cannot be opened), CLI_REJECTED 2 (the server said no: a rejected
 *   transaction, a refused token or subscription), CLI_UNAVAILABLE 3 (the
 *   services could not be reached in time; local writes stay queued).
 */
#ifndef WEFT_TOOLS_CLI_H
#define WEFT_TOOLS_CLI_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <weft/weft.h>

#include "common/config.h"

enum cli_exit {
	CLI_OK = 0,
	CLI_USAGE = 1,
	CLI_REJECTED = 2,
	CLI_UNAVAILABLE = 3,
};

/* CLI_FANOUT_MAX - fanout URLs one client may be given: a client uses one
 * at a time and moves on when it fails, so a handful is plenty. */
#define CLI_FANOUT_MAX 16

/* CLI_REJECTS_MAX - rejections remembered per run, enough for the one
 * transaction a command commits plus any queued from earlier runs. */
#define CLI_REJECTS_MAX 64

/* the options every store-using command takes (borrowed from argv/environ) */
struct cli_conn {
	const char *store;	 /* store file; NULL = per-user default */
	const char *schema;	 /* app schema file */
	const char *write_url;	 /* weft-write */
	const char *fanout_urls; /* comma-separated weft-fanout URLs */
	const char *token;	 /* JWT */
	const char *tls_ca;	 /* CA file for tls+tcp:// and wss:// */
	bool offline;		 /* do not connect: commit locally only */
	int64_t timeout_ms;	 /* how long to wait for the services */
};

/* CLI_CONN_OPTS(cc) - the cfg_opt rows of struct cli_conn, to put in a
 * command's option table (so every command documents them in --help). */
#define CLI_CONN_OPTS(cc)                                                 \
	{ "store",                                                        \
	  CFG_STR,                                                        \
	  &(cc)->store,                                                   \
	  NULL,                                                           \
	  "store file (default: ~/.local/share/weft/<user>.db)",          \
	  0,                                                              \
	  0 },                                                            \
		{ "schema",                                               \
		  CFG_STR,                                                \
		  &(cc)->schema,                                          \
		  WEFT_SCHEMA_DEFAULT,                                    \
		  "app schema file (JSON)",                               \
		  0,                                                      \
		  0 },                                                    \
		{ "write-url",                                            \
		  CFG_STR,                                                \
		  &(cc)->write_url,                                       \
		  "tcp://127.0.0.1:7400",                                 \
		  "weft-write's URL",                                     \
		  0,                                                      \
		  0 },                                                    \
		{ "fanout-urls",                                          \
		  CFG_STR,                                                \
		  &(cc)->fanout_urls,                                     \
		  "tcp://127.0.0.1:7420",                                 \
		  "weft-fanout URLs, comma-separated (one is used at a "  \
		  "time)",                                                \
		  0,                                                      \
		  0 },                                                    \
		{ "token",                                                \
		  CFG_STR,                                                \
		  &(cc)->token,                                           \
		  NULL,                                                   \
		  "JWT of the user (see weft token)",                     \
		  0,                                                      \
		  0 },                                                    \
		{ "tls-ca",                                               \
		  CFG_STR,                                                \
		  &(cc)->tls_ca,                                          \
		  NULL,                                                   \
		  "CA file for tls+tcp:// and wss:// URLs",               \
		  0,                                                      \
		  0 },                                                    \
		{ "offline",                                              \
		  CFG_BOOL,                                               \
		  &(cc)->offline,                                         \
		  "false",                                                \
		  "do not connect: commit to the local store only",       \
		  0,                                                      \
		  0 },                                                    \
	{                                                                 \
		"timeout", CFG_DURATION, &(cc)->timeout_ms, "10s",        \
			"how long to wait for the services", 100, 3600000 \
	}

struct cli_reject {
	uint64_t mid;	/* the rejected transaction */
	int code;	/* enum weft_err */
	char msg[256];	/* the server's sentence */
	char field[64]; /* the field at fault, or "" */
};

struct cli {
	const char *prog;    /* "weft put", for messages */
	bool quiet;	     /* cli_open's errors go to err only (the demo:
			      * stderr is its screen) */
	char err[512];	     /* cli_open's last error */
	int64_t timeout_ms;  /* --timeout */
	int64_t deadline_ms; /* monotonic: open + timeout */
	_Atomic int64_t progress_ms;	    /* monotonic: the last bootstrap
					     * progress (pushes the deadline) */
	weft_store *st;			    /* the open store */
	char path[512];			    /* its file */
	char user[128];			    /* the token's sub, or "" */
	bool online;			    /* a sync thread runs */
	const char *fanout[CLI_FANOUT_MAX]; /* into fanout_buf */
	char fanout_buf[2048];		    /* fanout URLs, NUL-separated */
	pthread_mutex_t mu;		    /* guards what follows */
	int state;			    /* enum weft_state */
	char detail[256];		    /* why, as the library said */
	struct cli_reject rejects[CLI_REJECTS_MAX]; /* ring */
	unsigned nrejects;			    /* total seen */
	/* extra callbacks a command adds (the demo, watch); may be NULL */
	weft_change_fn on_change;
	weft_progress_fn on_progress;
	void *arg;
};

/*
 * cli_parse - parse a command's flags (anywhere among its arguments:
 * *argcp and *argvp are replaced by a copy with the flags first; not
 * reentrant), then check that it has min to max positional arguments.
 * Returns -1 after --help (exit 0), CLI_USAGE after printing why, or
 * CLI_OK with *argi at the first positional argument.
 */
int cli_parse(const struct cfg_spec *spec, int *argcp,
	      const char *const **argvp, int *argi, int min, int max);

/*
 * cli_open - open the store cc names for prog, online unless cc->offline.
 * The callbacks in c->on_change / on_progress (set before the call) are
 * chained.  Returns CLI_OK, or an exit code after printing why.
 */
int cli_open(struct cli *c, const struct cli_conn *cc, const char *prog);

/* cli_close - close the store (the queue stays in the file). */
void cli_close(struct cli *c);

/*
 * cli_wait - wait until what was committed is answered and subscriptions
 * are loaded, until the command's deadline (--timeout after the open, and
 * never less than --timeout after the last bootstrap progress); then,
 * when mid is nonzero, report whether transaction mid was accepted.
 * Offline, it only says the commit is queued.  Returns an exit code,
 * having printed any failure.
 */
int cli_wait(struct cli *c, uint64_t mid);

/* cli_left_ms - time left before the command's deadline (at least 1) */
int cli_left_ms(struct cli *c);

/*
 * cli_trouble - the exit code for a service that did not answer: 2 when
 * the server refused the token (NEEDS_AUTH / ERROR), else 3; prints why,
 * about what ("load issues/x").
 */
int cli_trouble(struct cli *c, const char *what, int err);

/* cli_state - the connection state and its detail (copied into detail). */
int cli_state(struct cli *c, char *detail, size_t len);

/* cli_json_value - text given for a field value as JSON: itself when it
 * parses as JSON, else a JSON string of it.  Caller frees with free(). */
char *cli_json_value(const char *text);

/* cli_token_user - the sub of a JWT (not verified) into out; 0 or -1. */
int cli_token_user(const char *token, char *out, size_t len);

#endif /* WEFT_TOOLS_CLI_H */
