/*
 * log.c - one-line key=value logging to stderr (see log.h).
 */
#include "common/log.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <weft/error.h>

#include "common/banned.h"

static atomic_int cur_level = LOG_INFO; /* may change while threads log */
static const char *service = "weft";	/* set once, before threads */
static int out_fd = 2;			/* set once, before threads */

void
log_set_level(enum log_level lvl)
{
	atomic_store_explicit(&cur_level, (int)lvl, memory_order_relaxed);
}

enum log_level
log_get_level(void)
{
	return (enum log_level)atomic_load_explicit(&cur_level,
						    memory_order_relaxed);
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

/* one line, retried on EINTR and short writes; a broken fd drops it */
static void
write_all(const char *p, size_t len)
{
	while (len > 0) {
		ssize_t n = write(out_fd, p, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		p += n;
		len -= (size_t)n;
	}
}

static bool
plain_char(unsigned char c)
{
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	       (c >= '0' && c <= '9') || c == '.' || c == '_' || c == ':' ||
	       c == '/' || c == '@' || c == '+' || c == '-';
}

const char *
log_quote(char *dst, size_t cap, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0, i;
	bool plain;

	if (cap == 0)
		return dst;
	if (!s)
		s = "(null)";
	plain = *s != '\0';
	for (i = 0; s[i] && plain; i++)
		plain = plain_char((unsigned char)s[i]);
	if (plain) {
		snprintf(dst, cap, "%s", s);
		return dst;
	}
	/* room for the closing quote and NUL is kept at every step */
	if (cap >= 3)
		dst[o++] = '"';
	for (i = 0; s[i] && cap >= 3; i++) {
		unsigned char c = (unsigned char)s[i];
		bool c1 = c == 0xc2 && (unsigned char)s[i + 1] >= 0x80 &&
			  (unsigned char)s[i + 1] <= 0x9f;
		size_t need = c == '"' || c == '\\'   ? 2
			      : c < 0x20 || c == 0x7f ? 4
			      : c1		      ? 8
						      : 1;

		if (o + need + 2 > cap)
			break;
		if (need == 2) {
			dst[o++] = '\\';
			dst[o++] = (char)c;
		} else if (need >= 4) {
			for (size_t k = 0; k < need / 4; k++) {
				unsigned char b = (unsigned char)s[i + k];

				dst[o++] = '\\';
				dst[o++] = 'x';
				dst[o++] = hex[b >> 4];
				dst[o++] = hex[b & 15];
			}
			i += need / 4 - 1;
		} else {
			dst[o++] = (char)c;
		}
	}
	if (o + 1 < cap)
		dst[o++] = '"';
	dst[o] = '\0';
	return dst;
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

	if (lvl < log_get_level())
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
	write_all(line, len);
}

void
log_event(enum log_level lvl, const char *event, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	log_vevent(lvl, event, fmt, ap);
	va_end(ap);
}
