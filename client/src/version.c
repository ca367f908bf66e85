/*
 * version.c - library and protocol versions (weft/weft.h).
 */
#include <weft/weft.h>

#include "proto/msg.h"

#include "common/banned.h"

#define STR2(x) #x
#define STR(x)	STR2(x)

const char *
weft_version(void)
{
	return STR(WEFT_VERSION_MAJOR) "." STR(WEFT_VERSION_MINOR) "." STR(
		WEFT_VERSION_PATCH);
}

unsigned
weft_protocol_version(void)
{
	return PROTO_VERSION;
}
