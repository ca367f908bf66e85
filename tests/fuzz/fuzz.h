/*
 * fuzz.h - the libFuzzer entry point every target in tests/fuzz defines.
 * Built with clang -fsanitize=fuzzer (WEFT_FUZZ=ON) it is driven by
 * libFuzzer; otherwise replay.c's main() feeds it the committed corpus, so
 * every build re-checks every seed and past finding.
 */
#ifndef WEFT_FUZZ_H
#define WEFT_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* fuzz_inside - abort unless p[0..len) lies inside data[0..size) */
static inline void
fuzz_inside(const uint8_t *data, size_t size, const void *p, uint32_t len)
{
	if (len && ((const uint8_t *)p < data ||
		    (const uint8_t *)p + len > data + size))
		abort();
}

#endif
