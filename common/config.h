/*
 * config.h - configuration from flags and WEFT_* environment variables.
 *
 * A binary describes its settings once, as a table of struct cfg_opt; the
 * same table drives parsing, validation and --help, so the help can never
 * drift from what is accepted.  Precedence: default < environment < flag.
 * The environment name is derived from the flag: "pg-url" -> WEFT_PG_URL.
 *
 * Flags: --name=value or --name value; a bool flag alone means true.
 * Parsing stops at the first argument that is not a flag (a subcommand or
 * positional argument) or after "--"; *argi tells where.
 *
 * Values:
 *   CFG_STR       const char *: borrowed from argv/environ/the default
 *   CFG_INT       int64_t, checked against [min, max]
 *   CFG_BOOL      bool: true/false, yes/no, on/off, 1/0
 *   CFG_SIZE      int64_t bytes: 512, 64k, 1m, 2g (powers of 1024)
 *   CFG_DURATION  int64_t milliseconds: 250ms, 5s, 2m, 1h, 7d (bare = ms)
 */
#ifndef WEFT_CONFIG_H
#define WEFT_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum cfg_type { CFG_STR, CFG_INT, CFG_BOOL, CFG_SIZE, CFG_DURATION };

struct cfg_opt {
	const char *name; /* flag name without "--", lowercase-with-dashes */
	enum cfg_type type;
	void *ptr;	  /* const char ** | int64_t * | bool * */
	const char *def;  /* default as text (parsed like a flag), or NULL */
	const char *help; /* one line */
	int64_t min, max; /* numeric bounds (inclusive); both 0 = unbounded */
};

struct cfg_spec {
	const char *prog;	    /* "weft-relay" */
	const char *usage;	    /* "[options]", shown after prog */
	const char *summary;	    /* one paragraph shown by --help */
	const struct cfg_opt *opts; /* borrowed */
	size_t nopts;
};

/* cfg_parse's positive result: --help or --version was printed. */
#define CFG_EXIT 1

/* CFG_ERR_MAX - size of the error text buffer cfg_parse fills. */
#define CFG_ERR_MAX 256

/*
 * cfg_parse - apply defaults, then WEFT_* variables, then flags.
 * Returns 0, CFG_EXIT (help or version printed to `out`; exit 0), or
 * WEFT_ECONFIG with a message in err naming the flag or variable and the
 * bad value.  *argi is set to the index of the first unparsed argument
 * (on an error: of the argument at fault).
 * Not thread-safe (reads the environment).
 */
int cfg_parse(const struct cfg_spec *spec, int argc, const char *const *argv,
	      int *argi, FILE *out, char *err, size_t errlen);

/* cfg_help - print the usage and every option with its variable, default. */
void cfg_help(const struct cfg_spec *spec, FILE *out);

/* cfg_env_name - "pg-url" -> "WEFT_PG_URL" into dst (NUL-terminated). */
void cfg_env_name(const char *flag, char *dst, size_t dstlen);

/* cfg_parse_size, cfg_parse_duration - the value syntaxes above. */
int cfg_parse_size(const char *s, int64_t *out);
int cfg_parse_duration(const char *s, int64_t *out);

#endif /* WEFT_CONFIG_H */
