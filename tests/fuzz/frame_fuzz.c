/*
 * frame_fuzz.c - a byte stream split into chunks (sizes taken from the
 * input) through the frame reader, each frame through proto_decode.  The
 * reader must never hold more than its cap and never lose or invent bytes.
 */
#include <stdlib.h>

#include "proto/frame.h"
#include "proto/msg.h"
#include "tests/fuzz/fuzz.h"

/* small cap so the fuzzer reaches the ETOOBIG path */
#define FUZZ_MAX_FRAME 4096

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct frame_reader fr;
	size_t off = 1, total = 0;
	uint8_t chunk_seed;

	if (size < 1)
		return 0;
	chunk_seed = data[0];
	frame_reader_init(&fr, FUZZ_MAX_FRAME);
	while (off < size) {
		size_t chunk = 1 + (chunk_seed + off) % 97, used;
		int rc;

		if (chunk > size - off)
			chunk = size - off;
		rc = frame_reader_feed(&fr, data + off, chunk, &used);
		if (used > chunk || fr.body_cap > FUZZ_MAX_FRAME)
			abort();
		off += used;
		total += used;
		if (rc)
			break;
		if (frame_reader_ready(&fr)) {
			struct proto_msg m;
			struct proto_err err;
			uint32_t len;
			const uint8_t *body = frame_reader_body(&fr, &len);

			if (!body || len == 0 || len > FUZZ_MAX_FRAME)
				abort();
			proto_decode(body, len, &m, &err);
			frame_reader_next(&fr);
		} else if (used == 0) {
			abort(); /* not ready and consumed nothing: stuck */
		}
	}
	if (total > size - 1)
		abort();
	frame_reader_fini(&fr);
	return 0;
}
