/*
 * error.c - descriptions of the project-wide error codes (weft/error.h).
 */
#include <weft/error.h>

#include <stddef.h>

struct err_info {
	int code;
	const char *name;
	const char *text;
};

#define E(c, t)          \
	{                \
		c, #c, t \
	}
static const struct err_info errors[] = {
	E(WEFT_OK, "success"),
	E(WEFT_ENOMEM, "out of memory"),
	E(WEFT_EINVAL, "invalid argument"),
	E(WEFT_EIO, "i/o error"),
	E(WEFT_ETIMEDOUT, "timed out"),
	E(WEFT_ECLOSED, "closed"),
	E(WEFT_EAGAIN, "try again"),
	E(WEFT_EBUSY, "resource busy"),
	E(WEFT_ENOTFOUND, "not found"),
	E(WEFT_EEXIST, "already exists"),
	E(WEFT_ECONFIG, "bad configuration"),
	E(WEFT_EINTERNAL, "internal error"),
	E(WEFT_EUNAVAILABLE, "service unavailable"),
	E(WEFT_EAUTH, "authentication failed"),
	E(WEFT_EEXPIRED, "token expired"),
	E(WEFT_EPERM, "permission denied"),
	E(WEFT_EVALIDATION, "does not fit the schema"),
	E(WEFT_ECONFLICT, "version conflict"),
	E(WEFT_EGAP, "mutation id out of order"),
	E(WEFT_ELIMIT, "limit exceeded"),
	E(WEFT_ERETRY, "overloaded, retry later"),
	E(WEFT_ETOOBIG, "too big"),
	E(WEFT_ETRUNCATED, "truncated input"),
	E(WEFT_ETYPE, "wrong type"),
	E(WEFT_EDEPTH, "nested too deeply"),
	E(WEFT_ECOUNT, "element count exceeds input"),
	E(WEFT_ETRAILING, "trailing bytes after message"),
	E(WEFT_EMISSING, "required field missing"),
	E(WEFT_EDUPFIELD, "duplicate field"),
	E(WEFT_ERANGE, "value out of range"),
	E(WEFT_EUNKNOWN, "unknown message or op"),
	E(WEFT_EVERSION, "unsupported protocol version"),
	E(WEFT_EENCODING, "invalid encoding"),
	E(WEFT_ECATCHUP, "cursor outside the change-log window"),
};
#undef E

static const struct err_info *
lookup(int err)
{
	for (size_t i = 0; i < sizeof(errors) / sizeof(errors[0]); i++)
		if (errors[i].code == err)
			return &errors[i];
	return NULL;
}

const char *
weft_strerror(int err)
{
	const struct err_info *e = lookup(err);

	return e ? e->text : "unknown error";
}

const char *
weft_errname(int err)
{
	const struct err_info *e = lookup(err);

	return e ? e->name : "WEFT_E?";
}
