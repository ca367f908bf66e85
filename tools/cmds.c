/*
 * cmds.c - the weft tool's store commands: writes (space, put, set,
 * delete, undo, redo), reads (get, ls), and following the server (watch,
 * bootstrap, status, sync).
 *
 * Every command works on a local store (tools/cli.c), as an app does: a
 * write is committed locally first and then waited for; a read of a record
 * that is not local fetches it.  Output: records as JSON lines (one object
 * per record: table, id, space, version, pending, data), or, for ls and get
 * on a terminal, as "table/id vN field=value ..." lines.
 */
#include <inttypes.h>
#include <jansson.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/hash.h"
#include "tools/cli.h"
#include "tools/cmds.h"

#include "common/banned.h"

#define NOPTS(a) (sizeof(a) / sizeof((a)[0]))

/* NAME_BUF - a table, field or id and its NUL (the protocol allows
 * names of up to 256 bytes) */
#define NAME_BUF 257

/* EXIT_CODES - the paragraph every command's --help ends with */
#define EXIT_CODES                                                           \
	"\n\nExit codes: 0 ok, 1 usage, 2 rejected by the server (or not "   \
	"found), 3 services\nunavailable (a write stays queued locally and " \
	"goes out on the next online run)."

/* ---- printing records ---- */

static const char *
origin_name(int origin)
{
	return origin == WEFT_LOCAL    ? "local"
	       : origin == WEFT_REMOTE ? "remote"
				       : "rollback";
}

/* how records are printed: get's and ls's --format and --fields */
struct fmt {
	bool json;	    /* JSON lines, else text */
	const char *fields; /* comma-separated data fields to keep, or NULL */
};

#define FMT_OPTS(f, fmtname)                                            \
	{ "format",                                                     \
	  CFG_STR,                                                      \
	  &(fmtname),                                                   \
	  "auto",                                                       \
	  "json, text, or auto (text on a terminal, else JSON lines)",  \
	  0,                                                            \
	  0 },                                                          \
	{                                                               \
		"fields", CFG_STR, &(f)->fields, NULL,                  \
			"only these data fields, comma-separated", 0, 0 \
	}

/* resolve --format; false (and a message) when it is not a known one */
static bool
fmt_init(struct fmt *f, const char *name, const char *prog)
{
	if (strcmp(name, "json") == 0 || strcmp(name, "text") == 0) {
		f->json = name[0] == 'j';
		return true;
	}
	if (strcmp(name, "auto") == 0) {
		f->json = !isatty(STDOUT_FILENO);
		return true;
	}
	fprintf(stderr, "%s: --format must be json, text or auto, not '%s'\n",
		prog, name);
	return false;
}

/*
 * One record as a line: JSON (an object with data parsed, so the line is
 * one JSON value) or text.  extra (may be NULL) is merged into the JSON
 * object before data: watch's deleted and origin.
 */
static void
print_record(struct cli *c, const struct fmt *f, const char *table,
	     const char *id, const char *space, uint64_t version,
	     const char *data, json_t *extra)
{
	bool json = f->json;
	uint64_t pending = weft_pending_record(c->st, table, id);
	json_t *d = data ? json_loads(data, 0, NULL) : json_null();
	json_t *o;
	const char *k;
	json_t *v;
	char *s;

	if (!d)
		d = json_string(data); /* not expected: the store holds JSON */
	if (f->fields && json_is_object(d)) {
		/* the fields asked for, in the order asked */
		json_t *kept = json_object();
		char name[NAME_BUF];

		for (const char *p = f->fields; *p;) {
			size_t n = strcspn(p, ",");

			if (n < sizeof(name)) {
				memcpy(name, p, n);
				name[n] = '\0';
				v = json_object_get(d, name);
				if (v)
					json_object_set(kept, name, v);
			}
			p += n + (p[n] == ',');
		}
		json_decref(d);
		d = kept;
	}
	if (!json) {
		printf("%s/%s v%" PRIu64 " space=%s", table, id, version,
		       space ? space : "-");
		if (pending)
			printf(" pending=%" PRIu64, pending);
		json_object_foreach(d, k, v)
		{
			s = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
			printf(" %s=%s", k, s ? s : "?");
			free(s);
		}
		printf("\n");
		json_decref(d);
		json_decref(extra);
		return;
	}
	o = json_object();
	json_object_set_new(o, "table", json_string(table));
	json_object_set_new(o, "id", json_string(id));
	json_object_set_new(o, "space",
			    space ? json_string(space) : json_null());
	json_object_set_new(o, "version", json_integer((json_int_t)version));
	json_object_set_new(o, "pending", json_integer((json_int_t)pending));
	if (extra)
		json_object_update(o, extra);
	json_object_set_new(o, "data", d);
	s = json_dumps(o, JSON_COMPACT);
	if (s)
		printf("%s\n", s);
	free(s);
	json_decref(o);
	json_decref(extra);
}

/* one local record; CLI_REJECTED (and a message) if there is none */
static int
show(struct cli *c, const struct fmt *f, const char *table, const char *id)
{
	char *data = NULL, *space = NULL;
	uint64_t version;
	int rc;

	rc = weft_get(c->st, table, id, &data, &version, &space);
	if (rc == WEFT_ENOTFOUND) {
		fprintf(stderr, "%s: %s/%s: not found%s\n", c->prog, table, id,
			c->online ? " (or not visible to this user)"
				  : " in the local store");
		return CLI_REJECTED;
	}
	if (rc) {
		fprintf(stderr, "%s: %s\n", c->prog, weft_last_error(c->st));
		return CLI_UNAVAILABLE;
	}
	print_record(c, f, table, id, space, version, data, NULL);
	weft_free(data);
	weft_free(space);
	fflush(stdout);
	return CLI_OK;
}

/*
 * Make table/id local if it exists: online, a record not in the store is
 * fetched (within the command's deadline).  Returns 0 when it is there
 * (live) afterwards, WEFT_ENOTFOUND when it is not (online: the server
 * has no such record for this user), or the fetch's error when the
 * services did not answer.
 */
static int
ensure_local(struct cli *c, const char *table, const char *id)
{
	const char *ids[1] = { id };
	char *data = NULL;
	int rc;

	rc = weft_get(c->st, table, id, &data, NULL, NULL);
	weft_free(data);
	if (rc != WEFT_ENOTFOUND || !c->online)
		return rc;
	rc = weft_fetch(c->st, table, ids, 1, cli_left_ms(c));
	if (rc)
		return rc;
	data = NULL;
	rc = weft_get(c->st, table, id, &data, NULL, NULL);
	weft_free(data);
	return rc;
}

/* ensure_local's outcome when it is not 0: the exit code, said */
static int
not_local(struct cli *c, const char *table, const char *id, int rc)
{
	char what[NAME_BUF * 2 + 16];

	if (rc == WEFT_ENOTFOUND) {
		fprintf(stderr, "%s: %s/%s: not found%s\n", c->prog, table, id,
			c->online ? " (or not visible to this user)"
				  : " in the local store");
		return CLI_REJECTED;
	}
	snprintf(what, sizeof(what), "load %s/%s", table, id);
	return cli_trouble(c, what, rc);
}

/* ---- writes ---- */

/*
 * Commit tx (an op function's error, op_rc, aborts it with a message),
 * wait for the answer, then print table/id as it stands (or the deletion).
 */
static int
finish(struct cli *c, weft_txn *tx, int op_rc, const char *table,
       const char *id)
{
	struct fmt f = { !isatty(STDOUT_FILENO), NULL };
	uint64_t mid = 0;
	int rc;

	if (op_rc) {
		/* refused locally, against the store's view: a missing or
		 * existing record is the "not found / exists" of exit 2, the
		 * rest (schema, arguments) is usage */
		fprintf(stderr, "%s: %s\n", c->prog, weft_last_error(c->st));
		weft_abort(tx);
		return op_rc == WEFT_ENOTFOUND || op_rc == WEFT_EEXIST
			       ? CLI_REJECTED
			       : CLI_USAGE;
	}
	rc = weft_commit(tx, &mid);
	if (rc) {
		fprintf(stderr, "%s: %s\n", c->prog, weft_last_error(c->st));
		return CLI_USAGE;
	}
	rc = cli_wait(c, mid);
	if (rc == CLI_REJECTED || !table)
		return rc;
	if (show(c, &f, table, id) != CLI_OK)
		printf("%s/%s deleted\n", table, id);
	return rc;
}

int
cmd_space(int argc, const char *const *argv)
{
	struct cli_conn cc;
	const struct cfg_opt opts[] = { CLI_CONN_OPTS(&cc) };
	const struct cfg_spec spec = {
		"weft space",
		"[options] create SPACE [NAME] | add-member SPACE USER "
		"[reader|writer|admin] | remove-member SPACE USER",
		"Creates a space (you become its admin), or adds or removes a "
		"member (admins only).\nMembers are records of the 'members' "
		"table (id SPACE:USER), so these are ordinary\nwrites: they "
		"queue offline and are checked by weft-write." EXIT_CODES,
		opts, NOPTS(opts)
	};
	const char *verb, *space, *user;
	char id[256];
	struct cli c = { 0 };
	weft_txn *tx;
	int argi, rc, op, lrc;

	rc = cli_parse(&spec, &argc, &argv, &argi, 2, 4);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	verb = argv[argi];
	space = argv[argi + 1];
	if (!((strcmp(verb, "create") == 0 && argc - argi <= 3) ||
	      (strcmp(verb, "add-member") == 0 && argc - argi >= 3) ||
	      (strcmp(verb, "remove-member") == 0 && argc - argi == 3))) {
		fprintf(stderr, "usage: weft space %s\n", spec.usage);
		return CLI_USAGE;
	}
	if ((rc = cli_open(&c, &cc, "weft space")) != CLI_OK)
		return rc;
	if (weft_begin(c.st, &tx) != 0) {
		cli_close(&c);
		return CLI_UNAVAILABLE;
	}
	if (strcmp(verb, "create") == 0) {
		json_t *o =
			json_pack("{s:s}", "name",
				  argc - argi == 3 ? argv[argi + 2] : space);
		char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;

		op = js ? weft_create(tx, "spaces", space, space, js)
			: WEFT_EINVAL;
		free(js);
		json_decref(o);
		rc = finish(&c, tx, op, "spaces", space);
		cli_close(&c);
		return rc;
	}
	user = argv[argi + 2];
	snprintf(id, sizeof(id), "%s:%s", space, user);
	lrc = ensure_local(&c, "members", id);
	if (lrc &&
	    (lrc != WEFT_ENOTFOUND || strcmp(verb, "remove-member") == 0)) {
		weft_abort(tx);
		rc = not_local(&c, "members", id, lrc);
		cli_close(&c);
		return rc;
	}
	if (strcmp(verb, "remove-member") == 0) {
		op = weft_delete(tx, "members", id);
	} else {
		const char *role = argc - argi == 4 ? argv[argi + 3] : "writer";
		json_t *o = json_pack("{s:s,s:s}", "user", user, "role", role);
		char *js = o ? json_dumps(o, JSON_COMPACT) : NULL;

		if (!js)
			op = WEFT_EINVAL;
		else if (lrc == 0)
			op = weft_put(tx, "members", id, NULL, js);
		else
			op = weft_create(tx, "members", id, space, js);
		free(js);
		json_decref(o);
	}
	rc = finish(&c, tx, op, "members", id);
	cli_close(&c);
	return rc;
}

int
cmd_put(int argc, const char *const *argv)
{
	struct cli_conn cc;
	const char *space;
	const struct cfg_opt opts[] = {
		CLI_CONN_OPTS(&cc),
		{ "space", CFG_STR, &space, NULL,
		  "the record's space (needed to create it; another space "
		  "moves it)",
		  0, 0 },
	};
	const struct cfg_spec spec = {
		"weft put", "[options] TABLE ID JSON",
		"Writes a whole record: creates it (in --space) when it does "
		"not exist, else replaces\nevery field.  With the services out "
		"of reach, a record this store does not hold\nis created (and "
		"rejected later if the server has it).\nJSON is an object; "
		"schema defaults fill missing fields." EXIT_CODES,
		opts, NOPTS(opts)
	};
	const char *table, *id, *js;
	struct cli c = { 0 };
	weft_txn *tx;
	int argi, rc, op, lrc;

	rc = cli_parse(&spec, &argc, &argv, &argi, 3, 3);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	table = argv[argi];
	id = argv[argi + 1];
	js = argv[argi + 2];
	if ((rc = cli_open(&c, &cc, "weft put")) != CLI_OK)
		return rc;
	if (weft_begin(c.st, &tx) != 0) {
		cli_close(&c);
		return CLI_UNAVAILABLE;
	}
	lrc = ensure_local(&c, table, id);
	if (lrc == 0) {
		op = weft_put(tx, table, id, space, js);
	} else if (lrc != WEFT_ENOTFOUND && (!space || !*space)) {
		/* unknown here, the server out of reach, no space to create
		 * it in: nothing to queue */
		weft_abort(tx);
		rc = not_local(&c, table, id, lrc);
		cli_close(&c);
		return rc;
	} else if (!space || !*space) {
		fprintf(stderr,
			"weft put: %s/%s does not exist%s; --space is "
			"needed to create it\n",
			table, id, c.online ? "" : " locally");
		weft_abort(tx);
		cli_close(&c);
		return CLI_USAGE;
	} else {
		op = weft_create(tx, table, id, space, js);
	}
	rc = finish(&c, tx, op, table, id);
	cli_close(&c);
	return rc;
}

int
cmd_set(int argc, const char *const *argv)
{
	struct cli_conn cc;
	const struct cfg_opt opts[] = { CLI_CONN_OPTS(&cc) };
	const struct cfg_spec spec = {
		"weft set", "[options] TABLE ID FIELD VALUE [FIELD VALUE...]",
		"Sets fields of a record, in one transaction.  VALUE is JSON "
		"(3, true, null,\n[\"a\"], \"text\") or, when it is not valid "
		"JSON, a string: status done sets\n\"done\".  Other fields keep "
		"their values, so concurrent edits of other fields\nboth "
		"land." EXIT_CODES,
		opts, NOPTS(opts)
	};
	const char *table, *id;
	struct cli c = { 0 };
	weft_txn *tx;
	int argi, rc, op = 0;

	rc = cli_parse(&spec, &argc, &argv, &argi, 4, 2 + 2 * 64);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if ((argc - argi) % 2 != 0) {
		fprintf(stderr, "weft set: each FIELD needs a VALUE\n");
		return CLI_USAGE;
	}
	table = argv[argi];
	id = argv[argi + 1];
	if ((rc = cli_open(&c, &cc, "weft set")) != CLI_OK)
		return rc;
	if ((rc = ensure_local(&c, table, id)) != 0) {
		rc = not_local(&c, table, id, rc);
		cli_close(&c);
		return rc;
	}
	if (weft_begin(c.st, &tx) != 0) {
		cli_close(&c);
		return CLI_UNAVAILABLE;
	}
	for (int i = argi + 2; i < argc && !op; i += 2) {
		char *v = cli_json_value(argv[i + 1]);

		if (!v) {
			fprintf(stderr,
				"weft set: the value of %s is not "
				"valid UTF-8\n",
				argv[i]);
			weft_abort(tx);
			cli_close(&c);
			return CLI_USAGE;
		}
		op = weft_set(tx, table, id, argv[i], v);
		free(v);
	}
	rc = finish(&c, tx, op, table, id);
	cli_close(&c);
	return rc;
}

int
cmd_delete(int argc, const char *const *argv)
{
	struct cli_conn cc;
	const struct cfg_opt opts[] = { CLI_CONN_OPTS(&cc) };
	const struct cfg_spec spec = {
		"weft delete", "[options] TABLE ID",
		"Deletes a record (it becomes a tombstone; its id may be "
		"created again)." EXIT_CODES,
		opts, NOPTS(opts)
	};
	struct cli c = { 0 };
	weft_txn *tx;
	int argi, rc;

	rc = cli_parse(&spec, &argc, &argv, &argi, 2, 2);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if ((rc = cli_open(&c, &cc, "weft delete")) != CLI_OK)
		return rc;
	if ((rc = ensure_local(&c, argv[argi], argv[argi + 1])) != 0) {
		rc = not_local(&c, argv[argi], argv[argi + 1], rc);
		cli_close(&c);
		return rc;
	}
	if (weft_begin(c.st, &tx) != 0) {
		cli_close(&c);
		return CLI_UNAVAILABLE;
	}
	rc = finish(&c, tx, weft_delete(tx, argv[argi], argv[argi + 1]), NULL,
		    NULL);
	if (rc == CLI_OK)
		printf("%s/%s deleted\n", argv[argi], argv[argi + 1]);
	cli_close(&c);
	return rc;
}

int
cmd_undo(int argc, const char *const *argv)
{
	bool redo = strcmp(argv[0], "redo") == 0;
	struct cli_conn cc;
	const struct cfg_opt opts[] = { CLI_CONN_OPTS(&cc) };
	const struct cfg_spec spec = {
		redo ? "weft redo" : "weft undo", "[options]",
		redo ? "Redoes what the last weft undo undid." EXIT_CODES
		     : "Undoes the store's newest transaction not yet undone, "
		       "field by field (others'\nlater edits to other fields "
		       "stay).  It is a new transaction." EXIT_CODES,
		opts, NOPTS(opts)
	};
	struct cli c = { 0 };
	uint64_t mid = 0;
	int argi, rc;

	rc = cli_parse(&spec, &argc, &argv, &argi, 0, 0);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if ((rc = cli_open(&c, &cc, spec.prog)) != CLI_OK)
		return rc;
	rc = redo ? weft_redo(c.st, &mid) : weft_undo(c.st, &mid);
	if (rc == WEFT_ENOTFOUND) {
		fprintf(stderr, "%s: nothing to %s\n", spec.prog,
			redo ? "redo" : "undo");
		cli_close(&c);
		return CLI_REJECTED;
	}
	if (rc) {
		fprintf(stderr, "%s: %s\n", spec.prog, weft_last_error(c.st));
		cli_close(&c);
		return CLI_UNAVAILABLE;
	}
	rc = cli_wait(&c, mid);
	if (rc == CLI_OK)
		printf("%s: transaction %" PRIu64 "\n",
		       redo ? "redone" : "undone", mid);
	cli_close(&c);
	return rc;
}

/* ---- reads ---- */

int
cmd_get(int argc, const char *const *argv)
{
	struct cli_conn cc;
	struct fmt f = { false, NULL };
	const char *fmtname;
	const struct cfg_opt opts[] = {
		CLI_CONN_OPTS(&cc),
		FMT_OPTS(&f, fmtname),
	};
	const struct cfg_spec spec = {
		"weft get", "[options] TABLE ID",
		"Prints a record: online, the server's current row (fetched), "
		"with your pending\nedits applied; offline, the local store's." EXIT_CODES,
		opts, NOPTS(opts)
	};
	struct cli c = { 0 };
	int argi, rc;

	rc = cli_parse(&spec, &argc, &argv, &argi, 2, 2);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if (!fmt_init(&f, fmtname, "weft get"))
		return CLI_USAGE;
	if ((rc = cli_open(&c, &cc, "weft get")) != CLI_OK)
		return rc;
	if (c.online) {
		/* the server's current row, even when an older one is local */
		const char *ids[1] = { argv[argi + 1] };
		char *data = NULL;
		int frc = weft_fetch(c.st, argv[argi], ids, 1, cli_left_ms(&c));

		if (frc) {
			/* say so, then show the local copy if there is one */
			rc = not_local(&c, argv[argi], argv[argi + 1], frc);
			if (weft_get(c.st, argv[argi], argv[argi + 1], &data,
				     NULL, NULL) == 0) {
				fprintf(stderr, "weft get: the local copy:\n");
				show(&c, &f, argv[argi], argv[argi + 1]);
			}
			weft_free(data);
			cli_close(&c);
			return rc;
		}
	}
	rc = show(&c, &f, argv[argi], argv[argi + 1]);
	cli_close(&c);
	return rc;
}

struct ls_ctx {
	struct cli *c;
	const struct fmt *f;
};

static int
ls_row(void *arg, const char *table, const char *id, const char *space,
       uint64_t version, const char *data)
{
	struct ls_ctx *x = arg;

	print_record(x->c, x->f, table, id, space, version, data, NULL);
	return 0;
}

/*
 * Follow space (online): subscribe, wait for it to load.  Returns an exit
 * code, having printed why it is not CLI_OK.
 */
static int
follow(struct cli *c, const char *space)
{
	int rc;

	if (!c->online)
		return CLI_OK;
	rc = weft_subscribe_space(c->st, space);
	if (rc) {
		fprintf(stderr, "%s: %s\n", c->prog, weft_last_error(c->st));
		return CLI_USAGE;
	}
	rc = cli_wait(c, 0);
	if (rc != CLI_OK)
		return rc;
	if (weft_space_status(c->st, space) == WEFT_EPERM) {
		fprintf(stderr,
			"%s: space '%s' refused: user '%s' is not a member\n",
			c->prog, space, c->user);
		return CLI_REJECTED;
	}
	return CLI_OK;
}

int
cmd_ls(int argc, const char *const *argv)
{
	struct cli_conn cc;
	const char *space, *fmtname;
	struct fmt f = { false, NULL };
	const struct cfg_opt opts[] = {
		CLI_CONN_OPTS(&cc),
		{ "space", CFG_STR, &space, NULL,
		  "only this space; online, the store follows it (loads it "
		  "first)",
		  0, 0 },
		FMT_OPTS(&f, fmtname),
	};
	const struct cfg_spec spec = {
		"weft ls", "[options] [TABLE]",
		"Lists the live records of the local store, in (table, id) "
		"order, with your\npending edits applied." EXIT_CODES,
		opts, NOPTS(opts)
	};
	struct cli c = { 0 };
	struct ls_ctx x = { &c, &f };
	int argi, rc;

	rc = cli_parse(&spec, &argc, &argv, &argi, 0, 1);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if (!fmt_init(&f, fmtname, "weft ls"))
		return CLI_USAGE;
	if ((rc = cli_open(&c, &cc, "weft ls")) != CLI_OK)
		return rc;
	if (space && (rc = follow(&c, space)) != CLI_OK) {
		cli_close(&c);
		return rc;
	}
	rc = weft_each(c.st, argi < argc ? argv[argi] : NULL, space, ls_row,
		       &x);
	if (rc) {
		fprintf(stderr, "weft ls: %s\n", weft_last_error(c.st));
		rc = CLI_UNAVAILABLE;
	}
	cli_close(&c);
	return rc;
}

/* ---- following ---- */

static volatile sig_atomic_t stop_signal;

static void
on_signal(int sig)
{
	stop_signal = sig;
}

static void
catch_signals(void)
{
	struct sigaction sa;

	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	signal(SIGPIPE, SIG_IGN);
}

/* WATCH_SEEN_BUCKETS - the hash of records seen live in the watched
 * space (a tombstone has no space: a deletion is printed only for a
 * record this watch saw in its space); grows by chaining, one entry per
 * record of the space */
#define WATCH_SEEN_BUCKETS 4096

struct seen {
	struct seen *next;
	char key[]; /* "table\0id" */
};

struct watch_ctx {
	struct cli *c;
	const char *space;  /* only changes in it */
	const char *table;  /* NULL = every table */
	atomic_bool failed; /* stdout is gone (set on the sync thread) */
	struct fmt f;	    /* JSON lines */
	pthread_mutex_t mu; /* guards seen */
	struct seen *seen[WATCH_SEEN_BUCKETS]; /* records of the space */
};

/* w->mu held: table/id in the seen set: found (or, with add, added) */
static bool
seen_has_locked(struct watch_ctx *w, const char *table, const char *id,
		bool add)
{
	size_t tl = strlen(table), il = strlen(id);
	/* table and id with table's NUL between them */
	uint32_t h = hash_bytes(hash_bytes(HASH_INIT, table, tl + 1), id, il);
	struct seen *e;

	for (e = w->seen[h % WATCH_SEEN_BUCKETS]; e; e = e->next)
		if (strcmp(e->key, table) == 0 &&
		    strcmp(e->key + tl + 1, id) == 0)
			return true;
	if (!add || !(e = malloc(sizeof(*e) + tl + il + 2)))
		return false;
	memcpy(e->key, table, tl + 1);
	memcpy(e->key + tl + 1, id, il + 1);
	e->next = w->seen[h % WATCH_SEEN_BUCKETS];
	w->seen[h % WATCH_SEEN_BUCKETS] = e;
	return false;
}

static bool
seen_has(struct watch_ctx *w, const char *table, const char *id, bool add)
{
	bool found;

	pthread_mutex_lock(&w->mu);
	found = seen_has_locked(w, table, id, add);
	pthread_mutex_unlock(&w->mu);
	return found;
}

/* weft_each: the records the store already has in the space */
static int
seed_seen(void *arg, const char *table, const char *id, const char *space,
	  uint64_t version, const char *data)
{
	(void)space;
	(void)version;
	(void)data;
	seen_has(arg, table, id, true);
	return 0;
}

static void
seen_free(struct watch_ctx *w)
{
	for (size_t b = 0; b < WATCH_SEEN_BUCKETS; b++) {
		while (w->seen[b]) {
			struct seen *e = w->seen[b];

			w->seen[b] = e->next;
			free(e);
		}
	}
}

/* sync thread (or this one, for nothing: watch commits nothing) */
static void
watch_change(void *arg, const char *table, const char *id, uint64_t version,
	     int deleted, int origin)
{
	struct watch_ctx *w = arg;
	char *data = NULL, *space = NULL;
	json_t *extra;

	if (w->table && strcmp(w->table, table) != 0)
		return;
	if (!deleted &&
	    weft_get(w->c->st, table, id, &data, NULL, &space) != 0) {
		deleted = 1; /* gone again since */
	}
	if (space && strcmp(space, w->space) != 0)
		goto out;
	/* a deletion has no space: print it for records seen here */
	if (space)
		(void)seen_has(w, table, id, true);
	else if (!seen_has(w, table, id, false))
		goto out;
	extra = json_pack("{s:b,s:s}", "deleted", deleted, "origin",
			  origin_name(origin));
	print_record(w->c, &w->f, table, id, deleted ? w->space : space,
		     version, deleted ? NULL : data, extra);
	if (fflush(stdout) != 0)
		atomic_store(&w->failed, true);
out:
	weft_free(data);
	weft_free(space);
}

int
cmd_watch(int argc, const char *const *argv)
{
	struct cli_conn cc;
	const char *space;
	const struct cfg_opt opts[] = {
		CLI_CONN_OPTS(&cc),
		{ "space", CFG_STR, &space, NULL,
		  "the space to watch (required)", 0, 0 },
	};
	const struct cfg_spec spec = {
		"weft watch", "--space S [options] [TABLE]",
		"Follows a space and prints one JSON line per change as it "
		"happens, flushed at once:\ntable, id, space, version, "
		"pending, deleted, origin (local, remote, rollback) and\ndata "
		"(null when deleted).  A store new to the space first prints "
		"its records as\nthey load.  Runs until SIGINT or SIGTERM "
		"(exit 0); state changes go to stderr." EXIT_CODES,
		opts, NOPTS(opts)
	};
	struct cli c = { 0 };
	static struct watch_ctx w;
	int argi, rc, last = -1, s;
	char detail[256];

	rc = cli_parse(&spec, &argc, &argv, &argi, 0, 1);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if (!space || !*space || cc.offline) {
		fprintf(stderr, "weft watch: %s\n",
			cc.offline ? "--offline makes no sense here"
				   : "--space is required");
		return CLI_USAGE;
	}
	w.c = &c;
	w.f.json = true;
	pthread_mutex_init(&w.mu, NULL);
	w.space = space;
	w.table = argi < argc ? argv[argi] : NULL;
	catch_signals();
	c.on_change = watch_change;
	c.arg = &w;
	if ((rc = cli_open(&c, &cc, "weft watch")) != CLI_OK)
		return rc;
	weft_each(c.st, w.table, space, seed_seen, &w);
	rc = follow(&c, space);
	while (rc == CLI_OK && !stop_signal && !atomic_load(&w.failed)) {
		s = cli_state(&c, detail, sizeof(detail));
		if (s != last) {
			fprintf(stderr, "weft watch: %s%s%s\n",
				weft_state_name(s), *detail ? ": " : "",
				detail);
			last = s;
		}
		if (s == WEFT_NEEDS_AUTH) {
			rc = CLI_REJECTED;
			break;
		}
		if (weft_space_status(c.st, space) == WEFT_EPERM) {
			fprintf(stderr,
				"weft watch: space '%s' refused (no "
				"longer a member)\n",
				space);
			rc = CLI_REJECTED;
			break;
		}
		clock_sleep_ms(100);
	}
	cli_close(&c);
	seen_free(&w);
	pthread_mutex_destroy(&w.mu);
	return rc;
}

static int
count_row(void *arg, const char *table, const char *id, const char *space,
	  uint64_t version, const char *data)
{
	(void)table;
	(void)id;
	(void)space;
	(void)version;
	(void)data;
	++*(unsigned long *)arg;
	return 0;
}

struct boot_ctx {
	bool tty;
	int64_t last_ms; /* of the last plain line */
	int64_t start_ms;
};

static void
boot_progress(void *arg, const char *space, uint64_t records, uint64_t bytes,
	      uint64_t total, int done)
{
	struct boot_ctx *b = arg;
	enum { WIDTH = 30 };
	char bar[WIDTH + 1];
	int64_t t = (int64_t)clock_now_ms();
	size_t fill;

	if (!b->tty) {
		/* a line a second, and the last one */
		if (!done && t - b->last_ms < 1000)
			return;
		b->last_ms = t;
		printf("%s: %" PRIu64 " records, %" PRIu64 " bytes", space,
		       records, bytes);
		if (total)
			printf(" (of %" PRIu64 " records)", total);
		printf("%s\n", done ? ", done" : "");
		fflush(stdout);
		return;
	}
	fill = total ? (size_t)(records * WIDTH / (total ? total : 1)) : 0;
	if (done || fill > WIDTH)
		fill = WIDTH;
	memset(bar, '#', fill);
	memset(bar + fill, '-', WIDTH - fill);
	bar[WIDTH] = '\0';
	printf("\r%s [%s] %" PRIu64, space, bar, records);
	if (total)
		printf("/%" PRIu64, total);
	printf(" records, %.1f MB", (double)bytes / 1e6);
	if (done)
		printf("\n");
	fflush(stdout);
}

int
cmd_bootstrap(int argc, const char *const *argv)
{
	struct cli_conn cc;
	const char *space;
	const struct cfg_opt opts[] = {
		CLI_CONN_OPTS(&cc),
		{ "space", CFG_STR, &space, NULL,
		  "the space to load (required)", 0, 0 },
	};
	const struct cfg_spec spec = {
		"weft bootstrap", "--space S [options]",
		"Loads a space into the local store (subscribing first, so no "
		"change is missed),\nwith a progress bar on a terminal and a "
		"line a second otherwise.  The store then\nfollows the space: "
		"later commands keep it current." EXIT_CODES,
		opts, NOPTS(opts)
	};
	struct boot_ctx b = { 0 };
	struct cli c = { 0 };
	unsigned long n = 0;
	int argi, rc;

	rc = cli_parse(&spec, &argc, &argv, &argi, 0, 0);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if (!space || !*space || cc.offline) {
		fprintf(stderr, "weft bootstrap: %s\n",
			cc.offline ? "--offline makes no sense here"
				   : "--space is required");
		return CLI_USAGE;
	}
	b.tty = isatty(STDOUT_FILENO);
	b.start_ms = (int64_t)clock_now_ms();
	c.on_progress = boot_progress;
	c.arg = &b;
	if ((rc = cli_open(&c, &cc, "weft bootstrap")) != CLI_OK)
		return rc;
	rc = follow(&c, space);
	if (rc == CLI_OK) {
		weft_each(c.st, NULL, space, count_row, &n);
		printf("space %s: %lu records local, live (%.2f s)\n", space, n,
		       (double)((int64_t)clock_now_ms() - b.start_ms) / 1000);
	}
	cli_close(&c);
	return rc;
}

int
cmd_sync(int argc, const char *const *argv)
{
	struct cli_conn cc;
	const struct cfg_opt opts[] = { CLI_CONN_OPTS(&cc) };
	const struct cfg_spec spec = {
		"weft sync", "[options]",
		"Connects, sends every queued transaction, catches up the "
		"spaces the store follows,\nand reports.  What an app does in "
		"the background, as one command." EXIT_CODES,
		opts, NOPTS(opts)
	};
	struct cli c = { 0 };
	uint64_t before;
	unsigned rejected;
	int argi, rc;

	rc = cli_parse(&spec, &argc, &argv, &argi, 0, 0);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if (cc.offline) {
		fprintf(stderr, "weft sync: --offline makes no sense here\n");
		return CLI_USAGE;
	}
	if ((rc = cli_open(&c, &cc, "weft sync")) != CLI_OK)
		return rc;
	before = weft_pending(c.st);
	rc = cli_wait(&c, 0);
	if (rc == CLI_OK) {
		pthread_mutex_lock(&c.mu);
		rejected = c.nrejects;
		for (unsigned i = 0; i < rejected && i < CLI_REJECTS_MAX; i++)
			fprintf(stderr,
				"weft sync: transaction %" PRIu64
				" rejected: %s: %s\n",
				c.rejects[i].mid,
				weft_strerror(c.rejects[i].code),
				c.rejects[i].msg);
		pthread_mutex_unlock(&c.mu);
		printf("synced: %" PRIu64 " transaction(s) sent, %u rejected, "
		       "%" PRIu64 " pending\n",
		       before, rejected, weft_pending(c.st));
		if (rejected)
			rc = CLI_REJECTED;
	}
	cli_close(&c);
	return rc;
}

int
cmd_status(int argc, const char *const *argv)
{
	struct cli_conn cc;
	bool json;
	const struct cfg_opt opts[] = {
		CLI_CONN_OPTS(&cc),
		{ "json", CFG_BOOL, &json, "false", "one JSON object", 0, 0 },
	};
	const struct cfg_spec spec = {
		"weft status", "[options]",
		"Connects (unless --offline) and reports the store: its file, "
		"client id, user,\nconnection state, pending transactions and "
		"change-log cursor.  Exit 0 when live\n(or --offline), 2 when "
		"the server refused the token, 3 when it could not\nconnect in "
		"--timeout.",
		opts, NOPTS(opts)
	};
	struct cli c = { 0 };
	int64_t deadline;
	char detail[256], cursor[48];
	uint64_t lsn;
	uint32_t idx;
	int argi, rc, s;

	rc = cli_parse(&spec, &argc, &argv, &argi, 0, 0);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	if ((rc = cli_open(&c, &cc, "weft status")) != CLI_OK)
		return rc;
	deadline = (int64_t)clock_now_ms() + cc.timeout_ms;
	s = cli_state(&c, detail, sizeof(detail));
	while (c.online && s != WEFT_LIVE && s != WEFT_NEEDS_AUTH &&
	       s != WEFT_ERROR && (int64_t)clock_now_ms() < deadline) {
		clock_sleep_ms(20);
		s = cli_state(&c, detail, sizeof(detail));
	}
	weft_cursor(c.st, &lsn, &idx);
	snprintf(cursor, sizeof(cursor), "%" PRIu64 "-%" PRIu32, lsn, idx);
	if (json) {
		json_t *o = json_pack(
			"{s:s,s:s,s:s,s:s,s:s,s:I,s:s}", "store", c.path,
			"client_id", weft_client_id(c.st), "user", c.user,
			"state", c.online ? weft_state_name(s) : "offline",
			"detail", c.online ? detail : "--offline", "pending",
			(json_int_t)weft_pending(c.st), "cursor", cursor);
		char *t = o ? json_dumps(o, JSON_COMPACT) : NULL;

		if (t)
			printf("%s\n", t);
		free(t);
		json_decref(o);
	} else {
		printf("store      %s\n", c.path);
		printf("client id  %s\n", weft_client_id(c.st));
		printf("user       %s\n", *c.user ? c.user : "(no token)");
		printf("state      %s%s%s\n",
		       c.online ? weft_state_name(s) : "offline",
		       c.online && *detail ? " - " : "",
		       c.online ? detail : " (--offline: not connecting)");
		printf("pending    %" PRIu64 " transaction(s)\n",
		       weft_pending(c.st));
		printf("cursor     %s\n", cursor);
	}
	rc = !c.online || s == WEFT_LIVE	       ? CLI_OK
	     : s == WEFT_NEEDS_AUTH || s == WEFT_ERROR ? CLI_REJECTED
						       : CLI_UNAVAILABLE;
	cli_close(&c);
	return rc;
}
