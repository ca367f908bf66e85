/*
 * proto_bench.c - how fast the wire codec is, beside the raw limits
 * measured in the same run on the same bytes:
 *   decode  vs msgpack-c's msgpack_unpack() (a decoder that validates
 *           nothing and allocates a tree) and a plain memcpy of the frame;
 *   encode  vs msgpack-c packing the same fields with no validation.
 * Each figure is the median of 5 runs.  Usage: proto_bench [seconds-per-run]
 */
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "proto/frame.h"
#include "proto/msg.h"

#define RUNS 5
#define S(x) proto_str_c(x)

static double run_seconds = 0.3;
static volatile size_t sink;

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* median ops/s of fn over RUNS timed runs */
static double
measure(void (*fn)(void *), void *arg)
{
	double rates[RUNS];

	for (int r = 0; r < RUNS; r++) {
		uint64_t t0 = clock_now_ns(), n = 0, dt;

		do {
			for (int k = 0; k < 64; k++)
				fn(arg);
			n += 64;
			dt = clock_now_ns() - t0;
		} while (dt < (uint64_t)(run_seconds * 1e9));
		rates[r] = (double)n / ((double)dt / 1e9);
	}
	qsort(rates, RUNS, sizeof(rates[0]), cmp_double);
	return rates[RUNS / 2];
}

struct fixture {
	const char *name;
	struct proto_msg msg;
	struct buf frame; /* encoded once */
};

static void
do_decode(void *arg)
{
	struct fixture *f = arg;
	struct proto_msg m;
	struct proto_err err;

	if (proto_decode(f->frame.data + FRAME_HEADER,
			 f->frame.len - FRAME_HEADER, &m, &err) != 0)
		abort();
	sink += m.type;
}

static void
do_unpack(void *arg)
{
	static msgpack_zone zone;
	static int init;
	struct fixture *f = arg;
	msgpack_object obj;
	size_t off = 0;

	if (!init) {
		msgpack_zone_init(&zone, 4096);
		init = 1;
	}
	if (msgpack_unpack((const char *)f->frame.data + FRAME_HEADER,
			   f->frame.len - FRAME_HEADER, &off, &zone,
			   &obj) != MSGPACK_UNPACK_SUCCESS)
		abort();
	sink += obj.type;
	msgpack_zone_clear(&zone);
}

static void
do_memcpy(void *arg)
{
	static uint8_t dst[1 << 21];
	struct fixture *f = arg;

	memcpy(dst, f->frame.data, f->frame.len);
	sink += dst[f->frame.len / 2];
}

static void
do_encode(void *arg)
{
	static struct buf b;
	struct fixture *f = arg;

	if (!b.max)
		buf_init(&b, 0);
	buf_reset(&b);
	if (proto_encode(&b, &f->msg, 0, NULL) != 0)
		abort();
	sink += b.len;
}

static struct proto_bytes
row(void)
{
	static char store[256];
	msgpack_sbuffer s;
	msgpack_packer p;

	msgpack_sbuffer_init(&s);
	msgpack_packer_init(&p, &s, msgpack_sbuffer_write);
	msgpack_pack_map(&p, 5);
	msgpack_pack_str_with_body(&p, "title", 5);
	msgpack_pack_str_with_body(&p, "Login fails on Safari", 21);
	msgpack_pack_str_with_body(&p, "status", 6);
	msgpack_pack_str_with_body(&p, "in_progress", 11);
	msgpack_pack_str_with_body(&p, "priority", 8);
	msgpack_pack_int(&p, 2);
	msgpack_pack_str_with_body(&p, "assignee", 8);
	msgpack_pack_str_with_body(&p, "user-42", 7);
	msgpack_pack_str_with_body(&p, "labels", 6);
	msgpack_pack_array(&p, 2);
	msgpack_pack_str_with_body(&p, "bug", 3);
	msgpack_pack_str_with_body(&p, "web", 3);
	memcpy(store, s.data, s.size);
	struct proto_bytes b = { (const uint8_t *)store, (uint32_t)s.size };
	msgpack_sbuffer_destroy(&s);
	return b;
}

int
main(int argc, char **argv)
{
	static struct proto_change changes[64];
	static struct proto_keyref refs[16384];
	static char ids[16384][16];
	static const uint8_t status = 0xa4; /* fixstr 4 follows */
	static uint8_t value[5];
	struct proto_op op;
	struct fixture fx[3];

	if (argc > 1)
		run_seconds = strtod(argv[1], NULL);
	memcpy(value, &status, 1);
	memcpy(value + 1, "done", 4);
	op = (struct proto_op){ .kind = PROTO_OP_SET,
				.table = S("issues"),
				.id = S("issue-000123"),
				.field = S("status"),
				.value = { value, 5 },
				.expect = 7 };
	fx[0] = (struct fixture){ .name = "txn (1 set)" };
	fx[0].msg.type = PROTO_TXN;
	fx[0].msg.u.txn = (struct proto_txn){ 1, S("client-7f3a"), 99,
					      PROTO_LIST(1, &op) };
	for (int i = 0; i < 64; i++)
		changes[i] = (struct proto_change){
			.cursor = { 1000000 + (uint64_t)i, 0 },
			.key = S("space/team-a"),
			.table = S("issues"),
			.id = S("issue-000123"),
			.space = S("team-a"),
			.version = 10 + (uint64_t)i,
			.op = PROTO_OP_SET,
			.data = row()
		};
	fx[1] = (struct fixture){ .name = "push (64 changes)" };
	fx[1].msg.type = PROTO_PUSH;
	fx[1].msg.u.push = (struct proto_push){ { 1000063, 0 },
						{ 999999, 0 },
						PROTO_LIST(64, changes) };
	for (int i = 0; i < 16384; i++) {
		snprintf(ids[i], sizeof(ids[i]), "issue-%06d", i);
		refs[i] = (struct proto_keyref){ S("issues"), S(ids[i]) };
	}
	fx[2] = (struct fixture){ .name = "fetch (16384 keys)" };
	fx[2].msg.type = PROTO_FETCH;
	fx[2].msg.u.fetch = (struct proto_fetch){ 1, PROTO_LIST(16384, refs) };

	printf("proto codec, median of %d runs of %.2fs each; raw limits "
	       "measured in the same run\n\n",
	       RUNS, run_seconds);
	printf("%-20s %8s %14s %14s %8s %14s %8s %12s\n", "message", "bytes",
	       "decode/s", "msgpack-c/s", "ratio", "memcpy/s", "ratio",
	       "encode/s");
	for (int i = 0; i < 3; i++) {
		double dec, raw, cpy, enc;

		buf_init(&fx[i].frame, 0);
		if (proto_encode(&fx[i].frame, &fx[i].msg, 0, NULL) != 0)
			return 1;
		dec = measure(do_decode, &fx[i]);
		raw = measure(do_unpack, &fx[i]);
		cpy = measure(do_memcpy, &fx[i]);
		enc = measure(do_encode, &fx[i]);
		printf("%-20s %8zu %14.0f %14.0f %7.2fx %14.0f %7.3fx "
		       "%12.0f\n",
		       fx[i].name, fx[i].frame.len, dec, raw, dec / raw, cpy,
		       dec / cpy, enc);
		printf("%-20s %8s %11.1f MB/s (decode, validated)\n", "", "",
		       dec * (double)fx[i].frame.len / 1e6);
		buf_fini(&fx[i].frame);
	}
	return 0;
}
