/*
 * alloc.c - abort-on-OOM allocation wrappers for the services (see alloc.h).
 */
#include "common/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/banned.h"

_Noreturn void
alloc_oom(size_t n)
{
	char line[96];
	int len;

	/* no allocation here: we are out of memory */
	len = snprintf(line, sizeof(line),
		       "level=fatal event=out_of_memory bytes=%zu\n", n);
	if (len > 0)
		(void)!write(2, line, (size_t)len);
	abort();
}

void *
xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p)
		alloc_oom(n);
	return p;
}

void *
xcalloc(size_t nmemb, size_t size)
{
	void *p = calloc(nmemb ? nmemb : 1, size ? size : 1);

	if (!p)
		alloc_oom(nmemb * size);
	return p;
}

void *
xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (!q)
		alloc_oom(n);
	return q;
}

char *
xstrdup(const char *s)
{
	size_t n = strlen(s) + 1;
	char *d = xmalloc(n);

	memcpy(d, s, n);
	return d;
}
