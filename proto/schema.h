/*
 * schema.h - the app schema: tables, their fields, types, required fields
 * and defaults, read from a JSON file shared by weft-write and the client.
 *
 *   { "name": "issues", "version": 1,
 *     "tables": { "issues": { "fields": {
 *         "title":  { "type": "string", "required": true },
 *         "status": { "type": "string", "default": "backlog",
 *                     "enum": ["backlog", "done"] },
 *         "labels": { "type": "list", "of": "string", "default": [] } } } } }
 *
 * Types: string, int (int64), float (any number), bool, list (of a type),
 * map (any object), json (any value).  A field may be "nullable"; null is
 * refused otherwise.  The system tables `spaces` ({name}) and `members`
 * ({user, role}) are always present.
 *
 * A loaded schema is immutable: share it between threads freely.
 */
#ifndef WEFT_PROTO_SCHEMA_H
#define WEFT_PROTO_SCHEMA_H

#include <stddef.h>

#include "common/buf.h"
#include "proto/msg.h"

/* SCHEMA_MAX_BYTES - a schema file larger than this is refused. */
#define SCHEMA_MAX_BYTES (1u << 20)

struct schema;

/*
 * schema_parse, schema_load - a schema from JSON text or a file.  Errors:
 * WEFT_ECONFIG with a sentence in why naming the table and field at fault,
 * WEFT_EIO (file), WEFT_ENOMEM.  Caller owns *out; free with schema_free.
 */
int schema_parse(struct schema **out, const char *text, size_t len, char *why,
		 size_t whylen);
int schema_load(struct schema **out, const char *path, char *why,
		size_t whylen);
void schema_free(struct schema *s);

/* schema_name, schema_version - as declared in the file. */
const char *schema_name(const struct schema *s);
long long schema_version(const struct schema *s);

/*
 * schema_ntables, schema_table, schema_nfields, schema_field - the tables
 * (the system tables spaces and members included) and their fields, in
 * the file's order, for code that derives something from the schema (the
 * client's SQL views).  Names are borrowed from the schema.  *type_out
 * (may be NULL) gets the field's type name ("string", "int", ...).
 */
size_t schema_ntables(const struct schema *s);
const char *schema_table(const struct schema *s, size_t t);
size_t schema_nfields(const struct schema *s, size_t t);
const char *schema_field(const struct schema *s, size_t t, size_t f,
			 const char **type_out);

/*
 * schema_check_op - does op fit the schema?  Returns 0, or
 * WEFT_EVALIDATION with a sentence naming table and field in why and the
 * field (borrowed from the schema, or NULL) in *field.  For a create whose
 * data lacks fields that have defaults, the completed data is written to
 * data_out (msgpack; the caller sends it instead of op->data) and
 * *completed is set; otherwise data_out is untouched.
 */
int schema_check_op(const struct schema *s, const struct proto_op *op,
		    struct buf *data_out, bool *completed, char *why,
		    size_t whylen, const char **field);

#endif /* WEFT_PROTO_SCHEMA_H */
