/*
 * pgoutput_fuzz.c - weft-relay's replication-stream decoder on arbitrary
 * bytes, both as a CopyData envelope and as a bare pgoutput message: it
 * must fail cleanly or return values that lie inside the input.
 */
#include <stdlib.h>

#include "services/relay/pgoutput.h"
#include "tests/fuzz/fuzz.h"

static void
check_msg(const uint8_t *data, size_t size)
{
	static struct pgo_msg m;

	if (pgo_decode(data, size, &m) != 0)
		return;
	if (m.ncols > PGO_MAX_COLS)
		abort();
	if (m.kind == PGO_RELATION) {
		fuzz_inside(data, size, m.nspace.p, m.nspace.len);
		fuzz_inside(data, size, m.relname.p, m.relname.len);
	}
	for (int i = 0; i < m.ncols; i++) {
		if (m.kind == PGO_RELATION)
			fuzz_inside(data, size, m.names[i].p, m.names[i].len);
		if (m.kind == PGO_INSERT)
			fuzz_inside(data, size, m.cols[i].value.p,
				    m.cols[i].value.len);
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct pgo_copy cp;

	if (pgo_copy_decode(data, size, &cp) == 0 && cp.kind == 'w') {
		if (cp.data < data || cp.data + cp.len != data + size)
			abort();
		check_msg(cp.data, cp.len);
	}
	check_msg(data, size);
	return 0;
}
