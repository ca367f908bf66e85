/*
 * config_test.c - flags and WEFT_* variables: precedence, types, errors,
 * and --help listing every option with its variable.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdlib.h>
#include <string.h>

#include <weft/error.h>

#include "common/config.h"

struct settings {
	const char *url;
	int64_t port;
	bool tls;
	int64_t frame;
	int64_t timeout;
};

static struct settings s;

static const struct cfg_opt opts[] = {
	{ "pg-url", CFG_STR, &s.url, "postgresql://localhost/weft",
	  "Postgres connection URL", 0, 0 },
	{ "port", CFG_INT, &s.port, "5000", "listen port", 1, 65535 },
	{ "tls", CFG_BOOL, &s.tls, "false", "enable TLS", 0, 0 },
	{ "max-frame", CFG_SIZE, &s.frame, "1m", "largest frame", 0, 0 },
	{ "timeout", CFG_DURATION, &s.timeout, "5s", "request timeout", 0, 0 },
};

static const struct cfg_spec spec = { "weft-test", "[options] [args]",
				      "A test program.", opts,
				      sizeof(opts) / sizeof(opts[0]) };

static void
clear_env(void)
{
	unsetenv("WEFT_PG_URL");
	unsetenv("WEFT_PORT");
	unsetenv("WEFT_TLS");
	unsetenv("WEFT_MAX_FRAME");
	unsetenv("WEFT_TIMEOUT");
}

static int
parse(int argc, const char **argv, int *argi, char *err)
{
	return cfg_parse(&spec, argc, argv, argi, stdout, err, CFG_ERR_MAX);
}

TestSuite(config, .init = clear_env);

Test(config, defaults_apply)
{
	char err[CFG_ERR_MAX];
	const char *argv[] = { "prog", NULL };
	int argi;

	cr_assert(eq(i64, parse(1, argv, &argi, err), 0));
	cr_assert_str_eq(s.url, "postgresql://localhost/weft");
	cr_assert(eq(i64, s.port, 5000));
	cr_assert(eq(i64, s.tls, false));
	cr_assert(eq(i64, s.frame, 1 << 20));
	cr_assert(eq(i64, s.timeout, 5000));
	cr_assert(eq(i64, argi, 1));
}

Test(config, env_overrides_default_and_flag_overrides_env)
{
	char err[CFG_ERR_MAX];
	const char *argv[] = { "prog", "--port=7000", NULL };
	int argi;

	setenv("WEFT_PORT", "6000", 1);
	setenv("WEFT_PG_URL", "postgresql://db/x", 1);
	cr_assert(eq(i64, parse(2, argv, &argi, err), 0));
	cr_assert(eq(i64, s.port, 7000), "flag wins over env");
	cr_assert_str_eq(s.url, "postgresql://db/x", "env wins over default");
}

Test(config, flag_forms_and_positional_stop)
{
	char err[CFG_ERR_MAX];
	const char *argv[] = { "prog", "--tls",	    "--max-frame",
			       "64k",  "--timeout", "250ms",
			       "sub",  "--port=1",  NULL };
	int argi;

	cr_assert(eq(i64, parse(8, argv, &argi, err), 0), "%s", err);
	cr_assert(eq(i64, s.tls, true));
	cr_assert(eq(i64, s.frame, 65536));
	cr_assert(eq(i64, s.timeout, 250));
	cr_assert(eq(i64, argi, 6), "stops at the first positional argument");
	cr_assert(eq(i64, s.port, 5000),
		  "flags after a positional are not parsed");
}

Test(config, errors_name_the_flag_and_value)
{
	char err[CFG_ERR_MAX];
	const char *a1[] = { "prog", "--port=99999", NULL };
	const char *a2[] = { "prog", "--nope", NULL };
	const char *a3[] = { "prog", "--timeout=5 parsecs", NULL };
	const char *a4[] = { "prog", "--port", NULL };
	int argi;

	cr_assert(eq(i64, parse(2, a1, &argi, err), WEFT_ECONFIG));
	cr_assert_not_null(strstr(err, "--port"), "got: %s", err);
	cr_assert_not_null(strstr(err, "99999"), "got: %s", err);
	cr_assert(eq(i64, parse(2, a2, &argi, err), WEFT_ECONFIG));
	cr_assert_not_null(strstr(err, "--nope"), "got: %s", err);
	cr_assert(eq(i64, parse(2, a3, &argi, err), WEFT_ECONFIG));
	cr_assert_not_null(strstr(err, "DURATION"), "got: %s", err);
	cr_assert(eq(i64, parse(2, a4, &argi, err), WEFT_ECONFIG));
	cr_assert_not_null(strstr(err, "needs a value"), "got: %s", err);
}

Test(config, bad_env_is_an_error_naming_the_variable)
{
	char err[CFG_ERR_MAX];
	const char *argv[] = { "prog", NULL };
	int argi;

	setenv("WEFT_TLS", "maybe", 1);
	cr_assert(eq(i64, parse(1, argv, &argi, err), WEFT_ECONFIG));
	cr_assert_not_null(strstr(err, "WEFT_TLS"), "got: %s", err);
}

Test(config, help_lists_every_option_with_env_and_default)
{
	char buf[4096] = { 0 };
	FILE *f = fmemopen(buf, sizeof(buf) - 1, "w");
	char err[CFG_ERR_MAX];
	const char *argv[] = { "prog", "--help", NULL };
	int argi;

	cr_assert(eq(i64, cfg_parse(&spec, 2, argv, &argi, f, err, sizeof(err)),
		     CFG_EXIT));
	fclose(f);
	for (size_t i = 0; i < sizeof(opts) / sizeof(opts[0]); i++) {
		char env[64];

		cfg_env_name(opts[i].name, env, sizeof(env));
		cr_assert_not_null(strstr(buf, opts[i].name), "%s", buf);
		cr_assert_not_null(strstr(buf, env), "missing %s", env);
	}
	cr_assert_not_null(strstr(buf, "default '5s'"));
	cr_assert_not_null(strstr(buf, "range 1..65535"));
}

Test(config, env_names)
{
	char env[64];

	cfg_env_name("pg-url", env, sizeof(env));
	cr_assert_str_eq(env, "WEFT_PG_URL");
}

Test(config, size_and_duration_syntax)
{
	int64_t v;

	cr_assert(eq(i64, cfg_parse_size("2g", &v), 0));
	cr_assert(eq(i64, v, 2LL << 30));
	cr_assert(eq(i64, cfg_parse_size("10KiB", &v), 0));
	cr_assert(eq(i64, v, 10240));
	cr_assert(eq(i64, cfg_parse_size("-1", &v), WEFT_EINVAL));
	cr_assert(eq(i64, cfg_parse_size("1t", &v), WEFT_EINVAL));
	cr_assert(eq(i64, cfg_parse_size("99999999999g", &v), WEFT_EINVAL));
	cr_assert(eq(i64, cfg_parse_duration("2m", &v), 0));
	cr_assert(eq(i64, v, 120000));
	cr_assert(eq(i64, cfg_parse_duration("1h", &v), 0));
	cr_assert(eq(i64, v, 3600000));
	cr_assert(eq(i64, cfg_parse_duration("7d", &v), 0));
	cr_assert(eq(i64, v, 7LL * 86400 * 1000));
	cr_assert(eq(i64, cfg_parse_duration("1w", &v), WEFT_EINVAL));
	cr_assert(eq(i64, cfg_parse_duration("", &v), WEFT_EINVAL));
	cr_assert(eq(i64, cfg_parse_duration("5 s", &v), WEFT_EINVAL));
}
