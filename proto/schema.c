/*
 * schema.c - load the app schema and check ops against it (see schema.h).
 */
#include "proto/schema.h"

#include <jansson.h>
#include <msgpack.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <weft/error.h>

#include "common/file.h"
#include "proto/json.h"
#include "proto/mp.h"

#include "common/banned.h"

enum stype { ST_STRING, ST_INT, ST_FLOAT, ST_BOOL, ST_LIST, ST_MAP, ST_JSON };

static const char *const type_names[] = { "string", "int", "float", "bool",
					  "list",   "map", "json" };

struct sfield {
	char *name;
	enum stype type;
	enum stype of; /* element type of a list (ST_JSON: any) */
	bool required;
	bool nullable;
	char **enumv; /* allowed strings, or NULL */
	size_t nenum;
	uint8_t *def; /* msgpack of the default, or NULL */
	size_t def_len;
};

struct stable {
	char *name;
	struct sfield *fields;
	size_t nfields;
};

struct schema {
	char *name;
	long long version;
	struct stable *tables;
	size_t ntables;
};

static void
field_fini(struct sfield *f)
{
	free(f->name);
	for (size_t i = 0; i < f->nenum; i++)
		free(f->enumv[i]);
	free(f->enumv);
	free(f->def);
}

void
schema_free(struct schema *s)
{
	if (!s)
		return;
	for (size_t t = 0; t < s->ntables; t++) {
		for (size_t f = 0; f < s->tables[t].nfields; f++)
			field_fini(&s->tables[t].fields[f]);
		free(s->tables[t].fields);
		free(s->tables[t].name);
	}
	free(s->tables);
	free(s->name);
	free(s);
}

const char *
schema_name(const struct schema *s)
{
	return s->name;
}

long long
schema_version(const struct schema *s)
{
	return s->version;
}

size_t
schema_ntables(const struct schema *s)
{
	return s->ntables;
}

const char *
schema_table(const struct schema *s, size_t t)
{
	return t < s->ntables ? s->tables[t].name : NULL;
}

size_t
schema_nfields(const struct schema *s, size_t t)
{
	return t < s->ntables ? s->tables[t].nfields : 0;
}

const char *
schema_field(const struct schema *s, size_t t, size_t f, const char **type_out)
{
	if (t >= s->ntables || f >= s->tables[t].nfields)
		return NULL;
	if (type_out)
		*type_out = type_names[s->tables[t].fields[f].type];
	return s->tables[t].fields[f].name;
}

static int
type_of(const char *name, enum stype *out)
{
	for (size_t i = 0; i < sizeof(type_names) / sizeof(type_names[0]);
	     i++) {
		if (strcmp(name, type_names[i]) == 0) {
			*out = (enum stype)i;
			return 0;
		}
	}
	return -1;
}

static const struct stable *
find_table(const struct schema *s, const char *name, size_t len)
{
	for (size_t i = 0; i < s->ntables; i++)
		if (strlen(s->tables[i].name) == len &&
		    memcmp(s->tables[i].name, name, len) == 0)
			return &s->tables[i];
	return NULL;
}

static const struct sfield *
find_field(const struct stable *t, const char *name, size_t len)
{
	for (size_t i = 0; i < t->nfields; i++)
		if (strlen(t->fields[i].name) == len &&
		    memcmp(t->fields[i].name, name, len) == 0)
			return &t->fields[i];
	return NULL;
}

/* does a JSON default fit its field? (checked once, at load) */
static bool
json_fits(const struct sfield *f, enum stype type, const json_t *v)
{
	if (json_is_null(v))
		return f->nullable;
	switch (type) {
	case ST_STRING:
		if (!json_is_string(v))
			return false;
		if (f->nenum) {
			for (size_t i = 0; i < f->nenum; i++)
				if (strcmp(f->enumv[i], json_string_value(v)) ==
				    0)
					return true;
			return false;
		}
		return true;
	case ST_INT:
		return json_is_integer(v);
	case ST_FLOAT:
		return json_is_number(v);
	case ST_BOOL:
		return json_is_boolean(v);
	case ST_LIST: {
		size_t i;
		json_t *e;
		struct sfield elem = { .type = f->of };

		if (!json_is_array(v))
			return false;
		json_array_foreach(
			v, i, e) if (!json_fits(&elem, f->of, e)) return false;
		return true;
	}
	case ST_MAP:
		return json_is_object(v);
	case ST_JSON:
		return true;
	}
	return false;
}

static int
parse_field(struct sfield *f, const char *table, const char *name, json_t *def,
	    char *why, size_t whylen)
{
	json_t *t = json_object_get(def, "type"), *e, *d;
	size_t i;

	f->name = strdup(name);
	if (!f->name)
		return WEFT_ENOMEM;
	if (!json_is_object(def) || !json_is_string(t) ||
	    type_of(json_string_value(t), &f->type)) {
		snprintf(why, whylen,
			 "%s.%s: \"type\" must be one of string, int, float, "
			 "bool, list, map, json",
			 table, name);
		return WEFT_ECONFIG;
	}
	f->of = ST_JSON;
	if (f->type == ST_LIST && json_object_get(def, "of") &&
	    (!json_is_string(json_object_get(def, "of")) ||
	     type_of(json_string_value(json_object_get(def, "of")), &f->of) ||
	     f->of == ST_LIST)) {
		snprintf(why, whylen,
			 "%s.%s: \"of\" must be a type other than list", table,
			 name);
		return WEFT_ECONFIG;
	}
	f->required = json_is_true(json_object_get(def, "required"));
	f->nullable = json_is_true(json_object_get(def, "nullable"));
	e = json_object_get(def, "enum");
	if (e) {
		if (f->type != ST_STRING || !json_is_array(e) ||
		    json_array_size(e) == 0) {
			snprintf(why, whylen,
				 "%s.%s: \"enum\" is a non-empty list of "
				 "strings, for string fields",
				 table, name);
			return WEFT_ECONFIG;
		}
		f->enumv = calloc(json_array_size(e), sizeof(char *));
		if (!f->enumv)
			return WEFT_ENOMEM;
		json_array_foreach(e, i, d)
		{
			if (!json_is_string(d)) {
				snprintf(why, whylen,
					 "%s.%s: enum values must be strings",
					 table, name);
				return WEFT_ECONFIG;
			}
			f->enumv[f->nenum++] = strdup(json_string_value(d));
		}
	}
	d = json_object_get(def, "default");
	if (d) {
		msgpack_sbuffer sb;
		msgpack_packer pk;

		if (!json_fits(f, f->type, d)) {
			snprintf(why, whylen,
				 "%s.%s: the default does not fit the field's "
				 "type",
				 table, name);
			return WEFT_ECONFIG;
		}
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		if (json_to_mp(&pk, d) != 0) {
			msgpack_sbuffer_destroy(&sb);
			return WEFT_ENOMEM;
		}
		f->def = (uint8_t *)sb.data; /* take the buffer */
		f->def_len = sb.size;
	}
	return 0;
}

static int
add_table(struct schema *s, const char *name, json_t *def, char *why,
	  size_t whylen)
{
	json_t *fields = json_object_get(def, "fields"), *fd;
	struct stable *t;
	const char *fname;
	int rc;

	if (!json_is_object(fields)) {
		snprintf(why, whylen, "table %s: \"fields\" must be an object",
			 name);
		return WEFT_ECONFIG;
	}
	if (!name[0] || strlen(name) > PROTO_MAX_NAME) {
		snprintf(why, whylen, "table name '%s' is empty or too long",
			 name);
		return WEFT_ECONFIG;
	}
	t = &s->tables[s->ntables];
	t->name = strdup(name);
	t->fields = calloc(json_object_size(fields) + 1, sizeof(*t->fields));
	if (!t->name || !t->fields)
		return WEFT_ENOMEM;
	s->ntables++;
	json_object_foreach(fields, fname, fd)
	{
		rc = parse_field(&t->fields[t->nfields++], name, fname, fd, why,
				 whylen);
		if (rc)
			return rc;
	}
	return 0;
}

/* the system tables, unless the file declares them itself */
static const char SYSTEM_TABLES[] =
	"{\"spaces\": {\"fields\": {\"name\": {\"type\": \"string\", "
	"\"default\": \"\"}}},"
	" \"members\": {\"fields\": {\"user\": {\"type\": \"string\", "
	"\"required\": true}, \"role\": {\"type\": \"string\", \"required\": "
	"true, \"enum\": [\"reader\", \"writer\", \"admin\"]}}}}";

int
schema_parse(struct schema **out, const char *text, size_t len, char *why,
	     size_t whylen)
{
	json_t *root, *tables, *sys, *def;
	json_error_t jerr;
	struct schema *s;
	const char *name;
	int rc = 0;

	*out = NULL;
	root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		snprintf(why, whylen, "schema is not JSON: line %d: %s",
			 jerr.line, jerr.text);
		return WEFT_ECONFIG;
	}
	tables = json_object_get(root, "tables");
	if (!json_is_object(tables)) {
		json_decref(root);
		snprintf(why, whylen, "schema needs a \"tables\" object");
		return WEFT_ECONFIG;
	}
	sys = json_loads(SYSTEM_TABLES, 0, NULL);
	s = calloc(1, sizeof(*s));
	if (!s || !sys) {
		json_decref(root);
		json_decref(sys);
		free(s);
		return WEFT_ENOMEM;
	}
	s->tables = calloc(json_object_size(tables) + 2, sizeof(*s->tables));
	s->name = strdup(
		json_is_string(json_object_get(root, "name"))
			? json_string_value(json_object_get(root, "name"))
			: "app");
	s->version = json_integer_value(json_object_get(root, "version"));
	if (!s->tables || !s->name)
		rc = WEFT_ENOMEM;
	json_object_foreach(tables, name, def)
	{
		if (rc)
			break;
		rc = add_table(s, name, def, why, whylen);
	}
	json_object_foreach(sys, name, def)
	{
		if (rc)
			break;
		if (!json_object_get(tables, name))
			rc = add_table(s, name, def, why, whylen);
	}
	json_decref(sys);
	json_decref(root);
	if (rc) {
		schema_free(s);
		return rc;
	}
	*out = s;
	return 0;
}

int
schema_load(struct schema **out, const char *path, char *why, size_t whylen)
{
	char *text;
	size_t n;
	int rc;

	*out = NULL;
	rc = file_read(path, SCHEMA_MAX_BYTES, &text, &n);
	if (rc == WEFT_ETOOBIG) {
		snprintf(why, whylen, "schema '%s' is over %u bytes", path,
			 SCHEMA_MAX_BYTES);
		return WEFT_ECONFIG;
	}
	if (rc) {
		snprintf(why, whylen, "cannot read schema '%s'", path);
		return rc == WEFT_ENOMEM ? rc : WEFT_EIO;
	}
	rc = schema_parse(out, text, n, why, whylen);
	free(text);
	return rc;
}

/* ------------------------------------------------------------------ */
/* checking values */

static const char *
mp_name(struct mp_reader *r)
{
	enum mp_type t;

	return mp_peek(r, &t) ? "nothing" : mp_type_name(t);
}

/* one msgpack value (already JSON-compatible) against a field's type */
static bool
value_fits(const struct sfield *f, enum stype type, struct mp_reader *r,
	   bool nullable)
{
	enum mp_type t;
	uint32_t n;

	if (mp_peek(r, &t))
		return false;
	if (t == MP_NIL) {
		mp_read_nil(r);
		return nullable || type == ST_JSON;
	}
	switch (type) {
	case ST_STRING: {
		const char *s;

		if (t != MP_STR || mp_read_str(r, &s, &n))
			return false;
		if (!f->nenum)
			return true;
		for (size_t i = 0; i < f->nenum; i++)
			if (strlen(f->enumv[i]) == n &&
			    memcmp(f->enumv[i], s, n) == 0)
				return true;
		return false;
	}
	case ST_INT: {
		int64_t v;

		return (t == MP_INT || t == MP_UINT) && !mp_read_i64(r, &v);
	}
	case ST_FLOAT:
		if (t == MP_FLOAT) {
			double d;

			return !mp_read_f64(r, &d);
		}
		return (t == MP_INT || t == MP_UINT) &&
		       !mp_read_i64(r, &(int64_t){ 0 });
	case ST_BOOL:
		return t == MP_BOOL && !mp_read_bool(r, &(bool){ false });
	case ST_LIST: {
		struct sfield elem = { .type = f->of };

		if (t != MP_ARRAY || mp_read_array(r, &n))
			return false;
		for (uint32_t i = 0; i < n; i++)
			if (!value_fits(&elem, f->of, r, false))
				return false;
		return true;
	}
	case ST_MAP:
		return t == MP_MAP && !mp_skip(r, PROTO_MAX_DEPTH);
	case ST_JSON:
		return !mp_skip(r, PROTO_MAX_DEPTH);
	}
	return false;
}

static int refuse(char *why, size_t whylen, const char **field,
		  const struct sfield *f, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static int
refuse(char *why, size_t whylen, const char **field, const struct sfield *f,
       const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, whylen, fmt, ap);
	va_end(ap);
	*field = f ? f->name : NULL;
	return WEFT_EVALIDATION;
}

static const char *
describe(const struct sfield *f)
{
	static _Thread_local char buf[64];

	if (f->type == ST_LIST && f->of != ST_JSON)
		snprintf(buf, sizeof(buf), "list of %s", type_names[f->of]);
	else
		snprintf(buf, sizeof(buf), "%s%s", type_names[f->type],
			 f->nenum ? " (one of the enum)" : "");
	return buf;
}

/* data of a create/put: a map of declared fields with fitting values */
static int
check_data(const struct stable *t, struct proto_bytes data, bool *seen,
	   char *why, size_t whylen, const char **field)
{
	struct mp_reader r;
	uint32_t n;

	mp_reader_init(&r, data.p, data.len);
	if (mp_read_map(&r, &n))
		return refuse(why, whylen, field, NULL, "%s: data is not a map",
			      t->name);
	for (uint32_t i = 0; i < n; i++) {
		const struct sfield *f;
		struct mp_reader at;
		const char *k;
		uint32_t klen;

		if (mp_read_str(&r, &k, &klen))
			return refuse(why, whylen, field, NULL,
				      "%s: a field name is not a string",
				      t->name);
		f = find_field(t, k, klen);
		if (!f)
			return refuse(why, whylen, field, NULL,
				      "%s.%.*s: no such field in the schema",
				      t->name, (int)klen, k);
		at = r;
		if (!value_fits(f, f->type, &r, f->nullable)) {
			return refuse(why, whylen, field, f,
				      "%s.%s: expected %s, got %s", t->name,
				      f->name, describe(f), mp_name(&at));
		}
		seen[f - t->fields] = true;
	}
	for (size_t i = 0; i < t->nfields; i++)
		if (t->fields[i].required && !seen[i])
			return refuse(why, whylen, field, &t->fields[i],
				      "%s.%s: required field missing", t->name,
				      t->fields[i].name);
	return 0;
}

/* data plus the defaults of the fields it lacks */
static int
complete(const struct stable *t, struct proto_bytes data, const bool *seen,
	 struct buf *out)
{
	struct mp_reader r;
	uint32_t n, add = 0;
	msgpack_packer pk;
	msgpack_sbuffer sb;

	for (size_t i = 0; i < t->nfields; i++)
		if (!seen[i] && t->fields[i].def)
			add++;
	mp_reader_init(&r, data.p, data.len);
	mp_read_map(&r, &n);
	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, n + add);
	buf_append(out, sb.data, sb.size);
	msgpack_sbuffer_destroy(&sb);
	buf_append(out, r.p, mp_left(&r)); /* the client's pairs */
	for (size_t i = 0; i < t->nfields; i++) {
		const struct sfield *f = &t->fields[i];

		if (seen[i] || !f->def)
			continue;
		msgpack_sbuffer_init(&sb);
		msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
		msgpack_pack_str_with_body(&pk, f->name, strlen(f->name));
		buf_append(out, sb.data, sb.size);
		msgpack_sbuffer_destroy(&sb);
		buf_append(out, f->def, f->def_len);
	}
	return out->err;
}

int
schema_check_op(const struct schema *s, const struct proto_op *op,
		struct buf *data_out, bool *completed, char *why, size_t whylen,
		const char **field)
{
	const struct stable *t = find_table(s, op->table.p, op->table.len);
	const struct sfield *f = NULL;
	struct mp_reader r;
	bool seen[256] = { false };
	int rc;

	*completed = false;
	*field = NULL;
	if (!t)
		return refuse(why, whylen, field, NULL,
			      "%.*s: no such table in the schema",
			      (int)op->table.len, op->table.p);
	if (t->nfields > sizeof(seen))
		return refuse(why, whylen, field, NULL,
			      "%s: too many fields to check", t->name);
	if (op->field.p) {
		f = find_field(t, op->field.p, op->field.len);
		if (!f)
			return refuse(why, whylen, field, NULL,
				      "%s.%.*s: no such field in the schema",
				      t->name, (int)op->field.len, op->field.p);
	}
	switch (op->kind) {
	case PROTO_OP_CREATE:
	case PROTO_OP_PUT:
		rc = check_data(t, op->data, seen, why, whylen, field);
		if (rc || op->kind != PROTO_OP_CREATE)
			return rc;
		for (size_t i = 0; i < t->nfields; i++) {
			if (!seen[i] && t->fields[i].def) {
				*completed = true;
				return complete(t, op->data, seen, data_out);
			}
		}
		return 0;
	case PROTO_OP_SET:
		mp_reader_init(&r, op->value.p, op->value.len);
		if (!value_fits(f, f->type, &r, f->nullable && !f->required)) {
			mp_reader_init(&r, op->value.p, op->value.len);
			return refuse(why, whylen, field, f,
				      "%s.%s: expected %s, got %s", t->name,
				      f->name, describe(f), mp_name(&r));
		}
		return 0;
	case PROTO_OP_UNSET:
		if (f->required)
			return refuse(why, whylen, field, f,
				      "%s.%s: a required field cannot be "
				      "unset",
				      t->name, f->name);
		return 0;
	case PROTO_OP_LIST_ADD:
	case PROTO_OP_LIST_REMOVE: {
		struct sfield elem = { .type = f->of };

		if (f->type != ST_LIST)
			return refuse(why, whylen, field, f,
				      "%s.%s: list ops need a list field, "
				      "not %s",
				      t->name, f->name, describe(f));
		mp_reader_init(&r, op->value.p, op->value.len);
		if (!value_fits(&elem, f->of, &r, false))
			return refuse(why, whylen, field, f,
				      "%s.%s: elements are %s", t->name,
				      f->name, type_names[f->of]);
		return 0;
	}
	case PROTO_OP_INCR:
		mp_reader_init(&r, op->value.p, op->value.len);
		if ((f->type != ST_INT && f->type != ST_FLOAT) ||
		    !value_fits(f, f->type, &r, false))
			return refuse(why, whylen, field, f,
				      "%s.%s: incr needs a number field and "
				      "a %s step",
				      t->name, f->name,
				      f->type == ST_INT ? "integer" : "number");
		return 0;
	default: /* delete */
		return 0;
	}
}
