/*
 * error.c - descriptions of the project-wide error codes (weft/error.h).
 */
#include <weft/error.h>

#include <stddef.h>

#include "common/banned.h"

struct err_info {
	int code;
	const char *name;
	const char *text;
};

#define E(name, value, text) { WEFT_##name, "WEFT_" #name, text },
static const struct err_info errors[] = { WEFT_ERRNO_MAP(E) };
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
