/*
 * config.c - table-driven flags + WEFT_* environment (see config.h).
 */
#include "common/config.h"

#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <weft/error.h>

#include "common/banned.h"

#ifndef WEFT_VERSION_STRING
#define WEFT_VERSION_STRING "0.1.0"
#endif

void
cfg_env_name(const char *flag, char *dst, size_t dstlen)
{
	size_t o = 0;

	if (dstlen == 0)
		return;
	for (const char *p = "WEFT_"; *p && o + 1 < dstlen; p++)
		dst[o++] = *p;
	for (const char *p = flag; *p && o + 1 < dstlen; p++)
		dst[o++] = *p == '-' ? '_' : (char)toupper((unsigned char)*p);
	dst[o] = '\0';
}

static int
parse_int(const char *s, int64_t *out, const char **rest)
{
	char *end;
	long long v;

	errno = 0;
	if (!*s || isspace((unsigned char)*s))
		return WEFT_EINVAL;
	v = strtoll(s, &end, 10);
	if (errno || end == s)
		return WEFT_EINVAL;
	*out = v;
	*rest = end;
	return 0;
}

int
cfg_parse_size(const char *s, int64_t *out)
{
	const char *rest;
	int64_t v, mul = 1;

	if (parse_int(s, &v, &rest) || v < 0)
		return WEFT_EINVAL;
	if (*rest) {
		switch (tolower((unsigned char)*rest)) {
		case 'k':
			mul = 1024;
			break;
		case 'm':
			mul = 1024 * 1024;
			break;
		case 'g':
			mul = 1024 * 1024 * 1024;
			break;
		default:
			return WEFT_EINVAL;
		}
		rest++;
		if (*rest == 'b' || *rest == 'B' ||
		    (*rest == 'i' && (rest[1] == 'b' || rest[1] == 'B')))
			rest += *rest == 'i' ? 2 : 1;
		if (*rest)
			return WEFT_EINVAL;
	}
	if (v > INT64_MAX / mul)
		return WEFT_EINVAL;
	*out = v * mul;
	return 0;
}

int
cfg_parse_duration(const char *s, int64_t *out)
{
	const char *rest;
	int64_t v, mul;

	if (parse_int(s, &v, &rest) || v < 0)
		return WEFT_EINVAL;
	if (!*rest || strcmp(rest, "ms") == 0)
		mul = 1;
	else if (strcmp(rest, "s") == 0)
		mul = 1000;
	else if (strcmp(rest, "m") == 0)
		mul = 60 * 1000;
	else if (strcmp(rest, "h") == 0)
		mul = 3600 * 1000;
	else if (strcmp(rest, "d") == 0)
		mul = INT64_C(86400) * 1000;
	else
		return WEFT_EINVAL;
	if (v > INT64_MAX / mul)
		return WEFT_EINVAL;
	*out = v * mul;
	return 0;
}

static int
parse_bool(const char *s, bool *out)
{
	static const char *const yes[] = { "1", "true", "yes", "on" };
	static const char *const no[] = { "0", "false", "no", "off" };

	for (size_t i = 0; i < 4; i++) {
		if (strcasecmp(s, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(s, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return WEFT_EINVAL;
}

static const char *
type_hint(enum cfg_type t)
{
	switch (t) {
	case CFG_STR:
		return "STR";
	case CFG_INT:
		return "N";
	case CFG_BOOL:
		return "BOOL";
	case CFG_SIZE:
		return "SIZE";
	case CFG_DURATION:
		return "DURATION";
	}
	return "?";
}

/* set one option from text; `from` names the source for the message */
static int
set_value(const struct cfg_opt *o, const char *val, const char *from, char *err,
	  size_t errlen)
{
	int64_t n = 0;
	int rc = 0;

	switch (o->type) {
	case CFG_STR:
		*(const char **)o->ptr = val;
		return 0;
	case CFG_BOOL:
		rc = parse_bool(val, (bool *)o->ptr);
		break;
	case CFG_INT: {
		const char *rest = "";

		rc = parse_int(val, &n, &rest);
		if (!rc && *rest)
			rc = WEFT_EINVAL;
		break;
	}
	case CFG_SIZE:
		rc = cfg_parse_size(val, &n);
		break;
	case CFG_DURATION:
		rc = cfg_parse_duration(val, &n);
		break;
	}
	if (rc) {
		snprintf(err, errlen, "invalid %s for %s: '%s'",
			 type_hint(o->type), from, val);
		return WEFT_ECONFIG;
	}
	if (o->type == CFG_BOOL)
		return 0;
	if ((o->min || o->max) && (n < o->min || n > o->max)) {
		snprintf(err, errlen,
			 "%s out of range: '%s' (allowed %lld..%lld)", from,
			 val, (long long)o->min, (long long)o->max);
		return WEFT_ECONFIG;
	}
	*(int64_t *)o->ptr = n;
	return 0;
}

static const struct cfg_opt *
find_opt(const struct cfg_spec *spec, const char *name, size_t len)
{
	for (size_t i = 0; i < spec->nopts; i++) {
		const struct cfg_opt *o = &spec->opts[i];

		if (strlen(o->name) == len && memcmp(o->name, name, len) == 0)
			return o;
	}
	return NULL;
}

void
cfg_help(const struct cfg_spec *spec, FILE *out)
{
	char env[96], flag[96];

	fprintf(out, "usage: %s %s\n\n", spec->prog,
		spec->usage ? spec->usage : "[options]");
	if (spec->summary)
		fprintf(out, "%s\n\n", spec->summary);
	fprintf(out, "options (each also read from the environment variable "
		     "shown; flags win):\n");
	for (size_t i = 0; i < spec->nopts; i++) {
		const struct cfg_opt *o = &spec->opts[i];

		cfg_env_name(o->name, env, sizeof(env));
		snprintf(flag, sizeof(flag), "--%s=%s", o->name,
			 type_hint(o->type));
		fprintf(out, "  %-30s %s\n  %-30s   env %s", flag, o->help, "",
			env);
		if (o->def)
			fprintf(out, ", default '%s'", o->def);
		if (o->min || o->max)
			fprintf(out, ", range %lld..%lld", (long long)o->min,
				(long long)o->max);
		fputc('\n', out);
	}
	fprintf(out, "  %-30s %s\n  %-30s %s\n", "--help", "show this help",
		"--version", "show the version");
	fprintf(out, "\nSIZE: 512, 64k, 1m, 2g.  DURATION: 250ms, 5s, 2m, 1h "
		     "(bare numbers are ms).  BOOL: true/false.\n");
}

int
cfg_parse(const struct cfg_spec *spec, int argc, const char *const *argv,
	  int *argi, FILE *out, char *err, size_t errlen)
{
	char env[96], from[128];
	int i, rc;

	if (argi)
		*argi = 1;
	/* 1. defaults */
	for (size_t k = 0; k < spec->nopts; k++) {
		const struct cfg_opt *o = &spec->opts[k];

		if (!o->def) {
			if (o->type == CFG_STR)
				*(const char **)o->ptr = NULL;
			continue;
		}
		snprintf(from, sizeof(from), "default of --%s", o->name);
		rc = set_value(o, o->def, from, err, errlen);
		if (rc)
			return rc;
	}
	/* 2. environment */
	for (size_t k = 0; k < spec->nopts; k++) {
		const struct cfg_opt *o = &spec->opts[k];
		const char *v;

		cfg_env_name(o->name, env, sizeof(env));
		v = getenv(env);
		if (!v)
			continue;
		rc = set_value(o, v, env, err, errlen);
		if (rc)
			return rc;
	}
	/* 3. flags */
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *name, *eq, *val;
		const struct cfg_opt *o;
		size_t len;

		if (argi)
			*argi = i; /* also right when we return early */

		if (strcmp(a, "--") == 0) {
			i++;
			break;
		}
		if (a[0] != '-' || a[1] != '-' || a[2] == '\0')
			break; /* first positional argument or subcommand */
		name = a + 2;
		if (strcmp(name, "help") == 0) {
			cfg_help(spec, out);
			return CFG_EXIT;
		}
		if (strcmp(name, "version") == 0) {
			fprintf(out, "%s %s\n", spec->prog,
				WEFT_VERSION_STRING);
			return CFG_EXIT;
		}
		eq = strchr(name, '=');
		len = eq ? (size_t)(eq - name) : strlen(name);
		o = find_opt(spec, name, len);
		if (!o) {
			snprintf(err, errlen,
				 "unknown option '--%.*s' (see --help)",
				 (int)len, name);
			return WEFT_ECONFIG;
		}
		if (eq) {
			val = eq + 1;
		} else if (o->type == CFG_BOOL) {
			val = "true";
		} else if (i + 1 < argc) {
			val = argv[++i];
		} else {
			snprintf(err, errlen, "option '--%s' needs a value",
				 o->name);
			return WEFT_ECONFIG;
		}
		snprintf(from, sizeof(from), "--%s", o->name);
		rc = set_value(o, val, from, err, errlen);
		if (rc)
			return rc;
	}
	if (argi)
		*argi = i;
	return 0;
}
