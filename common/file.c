/*
 * file.c - read a whole bounded file (see file.h).
 */
#include "common/file.h"

#include <stdio.h>
#include <stdlib.h>

#include <weft/error.h>

#include "common/banned.h"

int
file_read(const char *path, size_t max, char **out, size_t *len)
{
	FILE *f = fopen(path, "rb");
	char *text;
	size_t n;

	*out = NULL;
	if (!f)
		return WEFT_EIO;
	text = malloc(max + 1);
	if (!text) {
		fclose(f);
		return WEFT_ENOMEM;
	}
	n = fread(text, 1, max + 1, f); /* one more: detect "too long" */
	if (ferror(f)) {
		fclose(f);
		free(text);
		return WEFT_EIO;
	}
	fclose(f);
	if (n > max) {
		free(text);
		return WEFT_ETOOBIG;
	}
	text[n] = '\0';
	*out = text;
	if (len)
		*len = n;
	return 0;
}
