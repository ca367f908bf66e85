/*
 * file.h - reading a whole (small, bounded) file.
 */
#ifndef WEFT_FILE_H
#define WEFT_FILE_H

#include <stddef.h>

/*
 * file_read - the contents of path, NUL-terminated, in *out (caller owns;
 * free with free()), its length in *len (may be NULL).  Errors: WEFT_EIO
 * (cannot open or read), WEFT_ETOOBIG (longer than max bytes),
 * WEFT_ENOMEM.
 */
int file_read(const char *path, size_t max, char **out, size_t *len);

#endif /* WEFT_FILE_H */
