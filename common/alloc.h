/*
 * alloc.h - the allocation policy.
 *
 * Services (weft-write, weft-relay, weft-fanout, tools) treat out-of-memory
 * as fatal: they call xmalloc() and friends, which log one line and abort()
 * through alloc_oom(), the single documented place a service dies of OOM.
 * Every size a peer can influence is bounded *before* it reaches an
 * allocator (frame caps, list caps), so OOM means the host is out of memory,
 * not that a client asked for too much.
 *
 * The client library (libweft), common/ and proto/ never call these: they
 * use malloc() and return WEFT_ENOMEM, because an app must not be killed by
 * a library.
 */
#ifndef WEFT_ALLOC_H
#define WEFT_ALLOC_H

#include <stddef.h>

void *xmalloc(size_t n);
void *xcalloc(size_t nmemb, size_t size);
void *xrealloc(void *p, size_t n);
char *xstrdup(const char *s);

/* alloc_oom - log "out of memory" with the size asked for, then abort. */
_Noreturn void alloc_oom(size_t n);

#endif /* WEFT_ALLOC_H */
