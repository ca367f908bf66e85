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

/*
 * WEFT_ERRNO_MAP(X) - every error: X(name, value, description).  The one
 * list the enum, weft_strerror() and the tests are generated from.
 */
#define WEFT_ERRNO_MAP(X)                                 \
	X(OK, 0, "success")                               \
	X(ENOMEM, -1, "out of memory")                    \
	X(EINVAL, -2, "invalid argument")                 \
	X(EIO, -3, "i/o error")                           \
	X(ETIMEDOUT, -4, "timed out")                     \
	X(ECLOSED, -5, "closed")                          \
	X(EAGAIN, -6, "try again")                        \
	X(EBUSY, -7, "resource busy")                     \
	X(ENOTFOUND, -8, "not found")                     \
	X(EEXIST, -9, "already exists")                   \
	X(ECONFIG, -10, "bad configuration")              \
	X(EINTERNAL, -11, "internal error")               \
	X(EUNAVAILABLE, -12, "service unavailable")       \
	X(EAUTH, -20, "authentication failed")            \
	X(EEXPIRED, -21, "token expired")                 \
	X(EPERM, -22, "permission denied")                \
	X(EBADSIG, -23, "token signature invalid")        \
	X(EUNSIGNED, -24, "unsigned token refused")       \
	X(EVALIDATION, -30, "does not fit the schema")    \
	X(ECONFLICT, -31, "version conflict")             \
	X(EGAP, -32, "mutation id out of order")          \
	X(ELIMIT, -33, "limit exceeded")                  \
	X(ERETRY, -34, "overloaded, retry later")         \
	X(ETOOBIG, -40, "too big")                        \
	X(ETRUNCATED, -41, "truncated input")             \
	X(ETYPE, -42, "wrong type")                       \
	X(EDEPTH, -43, "nested too deeply")               \
	X(ECOUNT, -44, "element count exceeds input")     \
	X(ETRAILING, -45, "trailing bytes after message") \
	X(EMISSING, -46, "required field missing")        \
	X(EDUPFIELD, -47, "duplicate field")              \
	X(ERANGE, -48, "value out of range")              \
	X(EUNKNOWN, -49, "unknown message or op")         \
	X(EVERSION, -50, "unsupported protocol version")  \
	X(EENCODING, -51, "invalid encoding")             \
	X(ECATCHUP, -52, "cursor outside the change-log window")

enum weft_err {
#define WEFT_ERR_ENUM(name, value, text) WEFT_##name = value,
	WEFT_ERRNO_MAP(WEFT_ERR_ENUM)
#undef WEFT_ERR_ENUM
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
