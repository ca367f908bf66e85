/*
 * schema_test.c - the app schema file: loading (and refusing bad files),
 * ops checked against it with errors naming table and field, defaults
 * filled on create.  Uses the shipped demo schema.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <msgpack.h>
#include <stdlib.h>
#include <string.h>

#include <weft/error.h>

#include "proto/mp.h"
#include "proto/schema.h"

#define S(x) proto_str_c(x)

static struct schema *sch;
static msgpack_sbuffer sb;
static msgpack_packer pk;
static char why[256];
static const char *field;

static void
setup(void)
{
	const char *path = getenv("WEFT_DEMO_SCHEMA");

	cr_assert_not_null(path, "WEFT_DEMO_SCHEMA not set (run via ctest)");
	cr_assert(eq(i64, schema_load(&sch, path, why, sizeof(why)), 0), "%s",
		  why);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
}

static void
teardown(void)
{
	schema_free(sch);
	msgpack_sbuffer_destroy(&sb);
}

TestSuite(schema, .init = setup, .fini = teardown);

static void
key(const char *k)
{
	msgpack_pack_str_with_body(&pk, k, strlen(k));
}

static struct proto_bytes
packed(void)
{
	return (struct proto_bytes){ (const uint8_t *)sb.data,
				     (uint32_t)sb.size };
}

static int
check(const struct proto_op *op, struct buf *out, bool *completed)
{
	return schema_check_op(sch, op, out, completed, why, sizeof(why),
			       &field);
}

Test(schema, demo_schema_loads_with_system_tables)
{
	struct proto_op op = { .kind = PROTO_OP_DELETE,
			       .table = S("members"),
			       .id = S("x") };
	struct buf out;
	bool done;

	cr_assert_str_eq(schema_name(sch), "issues");
	cr_assert(eq(i64, schema_version(sch), 1));
	buf_init(&out, 0);
	cr_assert(eq(i64, check(&op, &out, &done), 0), "%s", why);
	op.table = S("spaces");
	cr_assert(eq(i64, check(&op, &out, &done), 0), "%s", why);
	buf_fini(&out);
}

Test(schema, create_fills_defaults_and_needs_required_fields)
{
	struct proto_op op = { .kind = PROTO_OP_CREATE,
			       .table = S("issues"),
			       .id = S("i"),
			       .space = S("s") };
	struct mp_reader r;
	struct buf out;
	uint32_t n;
	bool done;

	buf_init(&out, 0);
	msgpack_pack_map(&pk, 1);
	key("priority");
	msgpack_pack_int(&pk, 2);
	op.data = packed();
	cr_assert(eq(i64, check(&op, &out, &done), WEFT_EVALIDATION));
	cr_assert_str_eq(why, "issues.title: required field missing");
	cr_assert_str_eq(field, "title");

	msgpack_sbuffer_clear(&sb);
	msgpack_pack_map(&pk, 1);
	key("title");
	key("Fix it");
	op.data = packed();
	cr_assert(eq(i64, check(&op, &out, &done), 0), "%s", why);
	cr_assert(done, "defaults were added");
	mp_reader_init(&r, out.data, out.len);
	cr_assert(eq(i64, mp_read_map(&r, &n), 0));
	cr_assert(eq(u32, n, 6),
		  "title + description, status, priority, assignee, labels");
	mp_reader_init(&r, out.data, out.len);
	cr_assert(eq(i64, mp_check_value(&r, 32), 0));
	cr_assert(eq(sz, mp_left(&r), 0));
	cr_assert_not_null(memmem(out.data, out.len, "backlog", 7));
	buf_fini(&out);
}

Test(schema, wrong_types_unknown_fields_and_enums_name_the_field)
{
	struct proto_op op = { .kind = PROTO_OP_PUT,
			       .table = S("issues"),
			       .id = S("i") };
	struct buf out;
	bool done;

	buf_init(&out, 0);
	msgpack_pack_map(&pk, 2);
	key("title");
	key("t");
	key("priority");
	key("high");
	op.data = packed();
	cr_assert(eq(i64, check(&op, &out, &done), WEFT_EVALIDATION));
	cr_assert_str_eq(why, "issues.priority: expected int, got str");
	cr_assert_str_eq(field, "priority");

	msgpack_sbuffer_clear(&sb);
	msgpack_pack_map(&pk, 2);
	key("title");
	key("t");
	key("colour");
	key("red");
	op.data = packed();
	cr_assert(eq(i64, check(&op, &out, &done), WEFT_EVALIDATION));
	cr_assert_str_eq(why, "issues.colour: no such field in the schema");

	op = (struct proto_op){ .kind = PROTO_OP_SET,
				.table = S("issues"),
				.id = S("i"),
				.field = S("status") };
	msgpack_sbuffer_clear(&sb);
	key("blocked");
	op.value = packed();
	cr_assert(eq(i64, check(&op, &out, &done), WEFT_EVALIDATION));
	cr_assert_not_null(strstr(why, "issues.status: expected string (one "
				       "of the enum)"),
			   "%s", why);
	op.table = S("boards");
	cr_assert(eq(i64, check(&op, &out, &done), WEFT_EVALIDATION));
	cr_assert_str_eq(why, "boards: no such table in the schema");
	buf_fini(&out);
}

Test(schema, nulls_list_ops_incr_and_unset)
{
	struct proto_op op = { .kind = PROTO_OP_SET,
			       .table = S("issues"),
			       .id = S("i"),
			       .field = S("assignee") };
	struct buf out;
	bool done;

	buf_init(&out, 0);
	msgpack_pack_nil(&pk);
	op.value = packed();
	cr_assert(eq(i64, check(&op, &out, &done), 0), "nullable: %s", why);
	op.field = S("title");
	cr_assert(eq(i64, check(&op, &out, &done), WEFT_EVALIDATION),
		  "title is not nullable");

	op = (struct proto_op){ .kind = PROTO_OP_LIST_ADD,
				.table = S("issues"),
				.id = S("i"),
				.field = S("labels") };
	msgpack_sbuffer_clear(&sb);
	key("bug");
	op.value = packed();
	cr_assert(eq(i64, check(&op, &out, &done), 0), "%s", why);
	msgpack_sbuffer_clear(&sb);
	msgpack_pack_int(&pk, 3);
	op.value = packed();
	cr_assert(eq(i64, check(&op, &out, &done), WEFT_EVALIDATION));
	cr_assert_str_eq(why, "issues.labels: elements are string");
	op.field = S("title");
	cr_assert(eq(i64, check(&op, &out, &done), WEFT_EVALIDATION));
	cr_assert_not_null(strstr(why, "need a list field"), "%s", why);

	op = (struct proto_op){ .kind = PROTO_OP_INCR,
				.table = S("issues"),
				.id = S("i"),
				.field = S("priority") };
	msgpack_sbuffer_clear(&sb);
	msgpack_pack_int(&pk, 1);
	op.value = packed();
	cr_assert(eq(i64, check(&op, &out, &done), 0), "%s", why);
	msgpack_sbuffer_clear(&sb);
	msgpack_pack_double(&pk, 0.5);
	op.value = packed();
	cr_assert(eq(i64, check(&op, &out, &done), WEFT_EVALIDATION),
		  "an int field takes integer steps");
	op.field = S("estimate");
	cr_assert(eq(i64, check(&op, &out, &done), 0), "%s", why);

	op = (struct proto_op){ .kind = PROTO_OP_UNSET,
				.table = S("issues"),
				.id = S("i"),
				.field = S("title") };
	cr_assert(eq(i64, check(&op, &out, &done), WEFT_EVALIDATION));
	op.field = S("estimate");
	cr_assert(eq(i64, check(&op, &out, &done), 0));
	buf_fini(&out);
}

Test(schema, bad_files_are_refused_with_a_reason)
{
	static const struct {
		const char *text, *want;
	} bad[] = {
		{ "{", "not JSON" },
		{ "{}", "\"tables\"" },
		{ "{\"tables\":{\"t\":{\"fields\":{\"f\":{\"type\":\"date\"}}}}}",
		  "t.f: \"type\"" },
		{ "{\"tables\":{\"t\":{\"fields\":{\"f\":{\"type\":\"int\","
		  "\"default\":\"x\"}}}}}",
		  "t.f: the default" },
		{ "{\"tables\":{\"t\":{\"fields\":{\"f\":{\"type\":\"int\","
		  "\"enum\":[1]}}}}}",
		  "t.f: \"enum\"" },
		{ "{\"tables\":{\"t\":{\"fields\":{}},\"t\":{}}}", "not JSON" },
	};
	struct schema *s;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cr_assert(eq(i64,
			     schema_parse(&s, bad[i].text, strlen(bad[i].text),
					  why, sizeof(why)),
			     WEFT_ECONFIG),
			  "%s", bad[i].text);
		cr_assert_not_null(strstr(why, bad[i].want), "%s -> %s",
				   bad[i].text, why);
	}
	cr_assert(eq(i64,
		     schema_load(&s, "/nonexistent.json", why, sizeof(why)),
		     WEFT_EIO));
}
