/*
 * file_test.c - reading whole bounded files.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <weft/error.h>

#include "common/file.h"

Test(file, reads_whole_files_within_the_bound)
{
	char path[] = "/tmp/weft-file-test-XXXXXX";
	int fd = mkstemp(path);
	char *text;
	size_t len;

	cr_assert(ge(i64, fd, 0));
	cr_assert(eq(i64, write(fd, "hello\n", 6), 6));
	close(fd);
	cr_assert(eq(i64, file_read(path, 6, &text, &len), 0));
	cr_assert(eq(sz, len, 6));
	cr_assert_str_eq(text, "hello\n", "NUL-terminated");
	free(text);
	cr_assert(eq(i64, file_read(path, 5, &text, &len), WEFT_ETOOBIG));
	cr_assert_null(text);
	unlink(path);
	cr_assert(eq(i64, file_read(path, 5, &text, NULL), WEFT_EIO));
}
