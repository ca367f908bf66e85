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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif
