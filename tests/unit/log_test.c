/*
 * log_test.c - one line per event, key=value, levels, no line injection.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <string.h>
#include <unistd.h>

#include <weft/error.h>

#include "common/log.h"

static int fds[2];

static void
capture(void)
{
	cr_assert(eq(i64, pipe(fds), 0));
	log_set_fd(fds[1]);
	log_set_service("weft-test");
	log_set_level(LOG_INFO);
}

static size_t
drain(char *out, size_t cap)
{
	ssize_t n;

	close(fds[1]);
	n = read(fds[0], out, cap - 1);
	cr_assert(ge(i64, n, 0));
	out[n] = '\0';
	close(fds[0]);
	return (size_t)n;
}

Test(log, event_line_has_fields_in_order, .init = capture)
{
	char out[1024];

	log_event(LOG_INFO, "pg_connected", "host=%s port=%d", "127.0.0.1",
		  5432);
	drain(out, sizeof(out));
	cr_assert(eq(i64, strncmp(out, "ts=", 3), 0), "got: %s", out);
	cr_assert_not_null(strstr(out, "Z level=info svc=weft-test "
				       "event=pg_connected host=127.0.0.1 "
				       "port=5432\n"),
			   "got: %s", out);
	cr_assert(eq(ptr, (void *)strchr(out, '\n'),
		     (void *)(out + strlen(out) - 1)),
		  "exactly one line");
}

Test(log, levels_below_threshold_are_dropped, .init = capture)
{
	char out[1024];

	log_event(LOG_DEBUG, "noise", "a=1");
	log_event(LOG_WARN, "kept", "b=2");
	drain(out, sizeof(out));
	cr_assert_null(strstr(out, "noise"), "got: %s", out);
	cr_assert_not_null(strstr(out, "level=warn"), "got: %s", out);
}

Test(log, newlines_in_fields_are_escaped, .init = capture)
{
	char out[1024];

	log_event(LOG_ERROR, "bad_input", "msg=\"%s\"",
		  "line1\nlevel=fatal event=forged\r");
	drain(out, sizeof(out));
	cr_assert(eq(ptr, (void *)strchr(out, '\n'),
		     (void *)(out + strlen(out) - 1)),
		  "a peer string must not start a new line: %s", out);
	cr_assert_not_null(strstr(out, "line1\\nlevel=fatal"), "got: %s", out);
	cr_assert_not_null(strstr(out, "\\x0d"), "got: %s", out);
}

Test(log, long_lines_are_cut_and_marked, .init = capture)
{
	char big[LOG_LINE_MAX * 2];
	char out[LOG_LINE_MAX * 3];

	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	log_event(LOG_INFO, "big", "v=%s", big);
	drain(out, sizeof(out));
	cr_assert(le(i64, strlen(out), LOG_LINE_MAX + 8));
	cr_assert_not_null(strstr(out, "...\n"), "got a cut line");
}

Test(log, level_names_parse)
{
	enum log_level l;

	cr_assert(eq(i64, log_level_parse("debug", &l), 0));
	cr_assert(eq(i64, l, LOG_DEBUG));
	cr_assert(eq(i64, log_level_parse("warning", &l), 0));
	cr_assert(eq(i64, l, LOG_WARN));
	cr_assert(eq(i64, log_level_parse("loud", &l), WEFT_EINVAL));
}

Test(log, quoted_values_cannot_forge_fields, .init = capture)
{
	char out[1024], q[LOG_QUOTE_MAX];

	log_event(LOG_WARN, "auth_failed", "user=%s",
		  log_quote(q, sizeof(q), "bob level=error event=admin ok=1"));
	drain(out, sizeof(out));
	cr_assert_not_null(strstr(out, "user=\"bob level=error event=admin "
				       "ok=1\"\n"),
			   "got: %s", out);
	cr_assert_null(strstr(out, " event=admin ok=1\n"), "forged: %s", out);
}

Test(log, quote_rules)
{
	char q[64];

	cr_assert_str_eq(log_quote(q, sizeof(q), "client-1"), "client-1");
	cr_assert_str_eq(log_quote(q, sizeof(q), ""), "\"\"");
	cr_assert_str_eq(log_quote(q, sizeof(q), NULL), "\"(null)\"");
	cr_assert_str_eq(log_quote(q, sizeof(q), "a\"b\\c"), "\"a\\\"b\\\\c\"");
	cr_assert_str_eq(log_quote(q, sizeof(q), "x\ny"), "\"x\\x0ay\"");
	cr_assert_str_eq(log_quote(q, sizeof(q), "a\xc2\x85z"),
			 "\"a\\xc2\\x85z\"", "C1 control NEL escaped");
	cr_assert_str_eq(log_quote(q, 8, "a b c d e f g"), "\"a b c\"",
			 "cut, still closed");
}
