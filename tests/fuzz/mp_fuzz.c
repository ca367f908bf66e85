/*
 * mp_fuzz.c - the bounded msgpack reader on arbitrary bytes: skip and the
 * JSON-value check must agree on where a value ends when both succeed, and
 * never read past the input.
 */
#include <stdlib.h>

#include "proto/mp.h"
#include "tests/fuzz/fuzz.h"

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct mp_reader a, b;
	int ra, rb;

	mp_reader_init(&a, data, size);
	mp_reader_init(&b, data, size);
	ra = mp_skip(&a, 32);
	rb = mp_check_value(&b, 32);
	if (ra == 0 && rb == 0 && a.p != b.p)
		abort();
	if (rb == 0 && ra != 0)
		abort(); /* a JSON value is always skippable */
	if ((ra == 0 && a.p > data + size) || (rb == 0 && b.p > data + size))
		abort();
	return 0;
}
