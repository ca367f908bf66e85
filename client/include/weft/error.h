/*
 * weft/error.h - the one error enum of the whole project.
 *
 * Every weft function that can fail returns an int: 0 (WEFT_OK) on success,
 * one of the negative codes below on failure.  The values are part of the
 * wire protocol (rejections and error replies carry them), so they are
 * fixed: never renumber, only append.
 */
#ifndef WEFT_ERROR_H
#define WEFT_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

/* WEFT_API - marks the functions libweft exports; everything else is
 * hidden (the library is built with -fvisibility=hidden). */
#ifndef WEFT_API
#define WEFT_API __attribute__((visibility("default")))
#endif

enum weft_err {
	WEFT_OK = 0,

	/* generic */
	WEFT_ENOMEM = -1,	 /* out of memory */
	WEFT_EINVAL = -2,	 /* invalid argument */
	WEFT_EIO = -3,		 /* I/O error */
	WEFT_ETIMEDOUT = -4,	 /* timed out */
	WEFT_ECLOSED = -5,	 /* object or connection closed */
	WEFT_EAGAIN = -6,	 /* try again (would block, queue full) */
	WEFT_EBUSY = -7,	 /* resource locked by someone else */
	WEFT_ENOTFOUND = -8,	 /* no such record, file or key */
	WEFT_EEXIST = -9,	 /* already exists */
	WEFT_ECONFIG = -10,	 /* bad configuration */
	WEFT_EINTERNAL = -11,	 /* internal error (a bug) */
	WEFT_EUNAVAILABLE = -12, /* a dependency (server, database) is down */

	/* authentication and authorisation */
	WEFT_EAUTH = -20,    /* token missing, malformed or badly signed */
	WEFT_EEXPIRED = -21, /* token expired */
	WEFT_EPERM = -22,    /* authenticated, but not allowed */

	/* writes */
	WEFT_EVALIDATION = -30, /* does not fit the schema */
	WEFT_ECONFLICT = -31,	/* expect_version did not match */
	WEFT_EGAP = -32,	/* mutation id skips ahead; resend in order */
	WEFT_ELIMIT = -33,	/* a configured limit was exceeded */
	WEFT_ERETRY = -34,	/* overloaded: retry after the given delay */

	/* wire protocol and decoding */
	WEFT_ETOOBIG = -40,    /* frame or element larger than its cap */
	WEFT_ETRUNCATED = -41, /* input ends inside a value */
	WEFT_ETYPE = -42,      /* a field has the wrong type */
	WEFT_EDEPTH = -43,     /* nesting deeper than allowed */
	WEFT_ECOUNT = -44,     /* claimed element count exceeds bytes left */
	WEFT_ETRAILING = -45,  /* bytes left over after the message */
	WEFT_EMISSING = -46,   /* a required field is absent */
	WEFT_EDUPFIELD = -47,  /* a field appears twice */
	WEFT_ERANGE = -48,     /* a value is out of its allowed range */
	WEFT_EUNKNOWN = -49,   /* unknown message type or op kind */
	WEFT_EVERSION = -50,   /* unsupported protocol version */
	WEFT_EENCODING = -51,  /* bad UTF-8, NUL in a string, NaN... */
	WEFT_ECATCHUP = -52,   /* cursor older than the change-log window */
};

/*
 * weft_strerror - a short, static, lowercase description of an error code.
 * Never returns NULL; unknown codes give "unknown error".  Thread-safe.
 */
WEFT_API const char *weft_strerror(int err);

/*
 * weft_errname - the symbolic name of an error code ("WEFT_ETYPE"), for
 * logs and tests.  Never returns NULL.  Thread-safe.
 */
WEFT_API const char *weft_errname(int err);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_ERROR_H */
