/*
 * log.c - one-line key=value logging to stderr (see log.h).
 */
#include "common/log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <weft/error.h>

#include "common/banned.h"

static enum log_level cur_level = LOG_INFO;
static const char *service = "weft";
static int out_fd = 2;

void
log_set_level(enum log_level lvl)
{
	cur_level = lvl;
}

enum log_level
log_get_level(void)
{
	return cur_level;
}

void
log_set_service(const char *name)
{
	service = name;
}

void
log_set_fd(int fd)
{
	out_fd = fd;
}

static const char *const level_names[] = { "debug", "info", "warn", "error" };

const char *
log_level_name(enum log_level lvl)
{
	if ((unsigned)lvl > LOG_ERROR)
		return "?";
	return level_names[lvl];
}

int
log_level_parse(const char *s, enum log_level *out)
{
	for (int i = LOG_DEBUG; i <= LOG_ERROR; i++) {
		if (strcmp(s, level_names[i]) == 0) {
			*out = (enum log_level)i;
			return 0;
		}
	}
	if (strcmp(s, "warning") == 0) {
		*out = LOG_WARN;
		return 0;
	}
	return WEFT_EINVAL;
}

/* escape control characters in place-ish: copy src to dst, bounded */
static size_t
escape_into(char *dst, size_t cap, const char *src, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	for (size_t i = 0; i < n && o + 4 < cap; i++) {
		unsigned char c = (unsigned char)src[i];

		if (c == '\n') {
			dst[o++] = '\\';
			dst[o++] = 'n';
		} else if (c < 0x20 || c == 0x7f) {
			dst[o++] = '\\';
			dst[o++] = 'x';
			dst[o++] = hex[c >> 4];
			dst[o++] = hex[c & 15];
		} else {
			dst[o++] = (char)c;
		}
	}
	return o;
}

void
log_vevent(enum log_level lvl, const char *event, const char *fmt, va_list ap)
{
	char fields[LOG_LINE_MAX];
	char line[LOG_LINE_MAX + 8];
	struct timespec ts;
	struct tm tm;
	size_t len;
	int n, f;

	if (lvl < cur_level)
		return;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	n = snprintf(line, LOG_LINE_MAX,
		     "ts=%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ level=%s svc=%s "
		     "event=%s",
		     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
		     tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000,
		     log_level_name(lvl), service, event);
	if (n < 0)
		return;
	len = (size_t)n < LOG_LINE_MAX ? (size_t)n : LOG_LINE_MAX - 1;
	f = fmt && *fmt ? vsnprintf(fields, sizeof(fields), fmt, ap) : 0;
	if (f > 0) {
		size_t flen = (size_t)f < sizeof(fields) ? (size_t)f
							 : sizeof(fields) - 1;
		line[len++] = ' ';
		len += escape_into(line + len, LOG_LINE_MAX - len, fields,
				   flen);
		if ((size_t)f >= sizeof(fields) || len >= LOG_LINE_MAX - 5) {
			memcpy(line + len, "...", 3);
			len += 3;
		}
	}
	line[len++] = '\n';
	(void)!write(out_fd, line, len);
}

void
log_event(enum log_level lvl, const char *event, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vevent(lvl, event, fmt, ap);
	va_end(ap);
}
