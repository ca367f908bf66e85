/*
 * testenv.c - read the harness's env file (see testenv.h).
 */
#include "tests/lib/testenv.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* TESTENV_MAX - keys remembered; the file has about six. */
#define TESTENV_MAX 32

static char keys[TESTENV_MAX][64];
static char vals[TESTENV_MAX][512];
static int nkeys = -1;

static void
load(void)
{
	const char *path = getenv("WEFT_TEST_ENV");
	char line[640];
	FILE *f;

	cr_assert_not_null(path, "WEFT_TEST_ENV is not set: run integration "
				 "tests through ctest (the servers fixture)");
	f = fopen(path, "r");
	cr_assert_not_null(f, "cannot open '%s' (WEFT_TEST_ENV)", path);
	nkeys = 0;
	while (fgets(line, sizeof(line), f) && nkeys < TESTENV_MAX) {
		char *eq = strchr(line, '=');
		size_t n;

		if (line[0] == '#' || !eq)
			continue;
		*eq = '\0';
		n = strcspn(eq + 1, "\r\n");
		eq[1 + n] = '\0';
		if (snprintf(keys[nkeys], sizeof(keys[0]), "%s", line) >=
			    (int)sizeof(keys[0]) ||
		    snprintf(vals[nkeys], sizeof(vals[0]), "%s", eq + 1) >=
			    (int)sizeof(vals[0]))
			continue; /* longer than any key or value we use */
		nkeys++;
	}
	fclose(f);
}

const char *
testenv_get(const char *key)
{
	if (nkeys < 0)
		load();
	for (int i = 0; i < nkeys; i++)
		if (strcmp(keys[i], key) == 0)
			return vals[i];
	cr_assert_fail("key '%s' missing from '%s'", key,
		       getenv("WEFT_TEST_ENV"));
	return NULL;
}
