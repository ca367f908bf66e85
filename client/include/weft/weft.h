/*
 * weft/weft.h - the weft client library (libweft).
 *
 * libweft keeps a local SQLite copy of the data a user may see, applies
 * writes to it at once, and syncs with the weft services in the
 * background.  This header is the umbrella: include it and nothing else.
 * The store API arrives with the client-library issue; today the library
 * exposes its version and the project's error codes.
 */
#ifndef WEFT_WEFT_H
#define WEFT_WEFT_H

#include <weft/error.h>

#ifdef __cplusplus
extern "C" {
#endif

#define WEFT_VERSION_MAJOR 0
#define WEFT_VERSION_MINOR 1
#define WEFT_VERSION_PATCH 0

/*
 * weft_version - the library's version, "MAJOR.MINOR.PATCH".  Static
 * string; thread-safe.  Compare with WEFT_VERSION_* to detect a header /
 * library mismatch.
 */
WEFT_API const char *weft_version(void);

/*
 * weft_protocol_version - the wire protocol version this library speaks.
 * Thread-safe.
 */
WEFT_API unsigned weft_protocol_version(void);

#ifdef __cplusplus
}
#endif
#endif /* WEFT_WEFT_H */
