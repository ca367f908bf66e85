/*
 * log.h - structured logging: one line per event, key=value fields, stderr.
 *
 *   log_event(LOG_INFO, "pg_connected", "host=%s port=%d", host, port);
 *   -> ts=2026-11-22T02:41:44.123456Z level=info svc=weft-relay
 *      event=pg_connected host=127.0.0.1 port=54320
 *
 * The event name is a fixed snake_case word so logs can be grepped; fields
 * carry the variables.  Any value that comes from outside the process (a
 * client id, a table name, an error text from a peer) must go through
 * log_quote(), which quotes it logfmt-style when it holds a space, '=',
 * '"' or anything unusual, so a peer cannot forge keys or events.  As a
 * backstop, control characters left in the formatted fields are escaped,
 * so one event is always exactly one line.  Each line is written with one
 * write(2) (retried until complete), so lines from different threads never
 * interleave.
 *
 * The level may change at any time (it is atomic); the service name and the
 * output fd are set once at start, before threads.  This module is for the
 * services and tools: libweft does not link it.
 */
#ifndef WEFT_LOG_H
#define WEFT_LOG_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

enum log_level {
	LOG_DEBUG = 0,
	LOG_INFO = 1,
	LOG_WARN = 2,
	LOG_ERROR = 3,
};

/* LOG_LINE_MAX - longest line emitted; longer lines are cut, marked "...". */
#define LOG_LINE_MAX 2048

void log_set_level(enum log_level lvl);
enum log_level log_get_level(void);
void log_set_service(const char *name); /* borrowed: must outlive logging */

/* log_set_fd - where lines go (default 2, stderr); for tests. */
void log_set_fd(int fd);

/* log_level_parse - "debug"|"info"|"warn"|"error".  Errors: WEFT_EINVAL. */
int log_level_parse(const char *s, enum log_level *out);
const char *log_level_name(enum log_level lvl);

static inline bool
log_enabled(enum log_level lvl)
{
	return lvl >= log_get_level();
}

/*
 * log_quote - s as a safe field value, in dst (cap bytes, cut if longer):
 * unchanged when it is non-empty and made only of letters, digits and
 * ._:/@+-; otherwise in double quotes with '"', '\\' and control bytes
 * escaped.  Returns dst.  A NULL s gives "(null)", quoted.
 */
const char *log_quote(char *dst, size_t cap, const char *s);

/* LOG_QUOTE_MAX - a buffer size for log_quote that fits PROTO_MAX_NAME. */
#define LOG_QUOTE_MAX 1100

void log_event(enum log_level lvl, const char *event, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
void log_vevent(enum log_level lvl, const char *event, const char *fmt,
		va_list ap) __attribute__((format(printf, 3, 0)));

#endif /* WEFT_LOG_H */
