/*
 * cli.c - opening a store for the weft tools, and waiting for the server's
 * answer to what a command committed.
 *
 * A command commits to its local store first, exactly as an app does, and
 * then waits (up to --timeout) for the sync thread to have the queue
 * answered.  What is not answered in time stays queued in the store file
 * and goes out on the next online run: the tools never lose a write.
 */
#include <errno.h>
#include <jansson.h>
#include <jwt.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/clock.h"
#include "tools/cli.h"

#include "common/banned.h"

int
cli_token_user(const char *token, char *out, size_t len)
{
	jwt_t *jwt = NULL;
	const char *sub;
	int rc = -1;

	/* no key: decoded, not verified; the services verify it */
	if (!token || jwt_decode(&jwt, token, NULL, 0) != 0)
		return -1;
	sub = jwt_get_grant(jwt, "sub");
	if (sub && *sub && strlen(sub) < len) {
		memcpy(out, sub, strlen(sub) + 1);
		rc = 0;
	}
	jwt_free(jwt);
	return rc;
}

char *
cli_json_value(const char *text)
{
	json_error_t e;
	json_t *v = json_loads(text, JSON_DECODE_ANY, &e);
	char *s;

	if (v) {
		json_decref(v);
		return strdup(text);
	}
	v = json_string(text);
	if (!v)
		return NULL; /* not UTF-8: the op will say so */
	s = json_dumps(v, JSON_ENCODE_ANY);
	json_decref(v);
	return s;
}

/* mkdir -p for the default store's directory, private to the user */
static int
make_dirs(char *path)
{
	for (char *p = path + 1; *p; p++) {
		if (*p != '/')
			continue;
		*p = '\0';
		if (mkdir(path, 0700) != 0 && errno != EEXIST) {
			*p = '/';
			return -1;
		}
		*p = '/';
	}
	return 0;
}

static int
default_store(struct cli *c)
{
	const char *xdg = getenv("XDG_DATA_HOME"), *home = getenv("HOME");
	char name[sizeof(c->user)];
	int n;

	/* the user id as a file name: no directories, no hidden file */
	snprintf(name, sizeof(name), "%s", *c->user ? c->user : "local");
	for (char *p = name; *p; p++)
		if (*p == '/' || (p == name && *p == '.'))
			*p = '_';
	if (xdg && *xdg == '/')
		n = snprintf(c->path, sizeof(c->path), "%s/weft/%s.db", xdg,
			     name);
	else if (home && *home)
		n = snprintf(c->path, sizeof(c->path),
			     "%s/.local/share/weft/%s.db", home, name);
	else
		return -1;
	if (n < 0 || (size_t)n >= sizeof(c->path))
		return -1;
	return make_dirs(c->path);
}

/* an error of cli_open: into c->err, and to stderr unless quiet */
static int
open_error(struct cli *c, int code, const char *fmt, ...)
{
	va_list ap;
	int n;

	n = snprintf(c->err, sizeof(c->err), "%s: ", c->prog);
	if (n < 0 || (size_t)n >= sizeof(c->err))
		n = 0;
	va_start(ap, fmt);
	vsnprintf(c->err + n, sizeof(c->err) - (size_t)n, fmt, ap);
	va_end(ap);
	if (!c->quiet)
		fprintf(stderr, "%s\n", c->err);
	return code;
}

/* split "a,b,c" into c->fanout */
static size_t
split_fanout(struct cli *c, const char *list)
{
	size_t n = 0, len;

	if (!list)
		return 0;
	len = strlen(list);
	if (len >= sizeof(c->fanout_buf))
		len = sizeof(c->fanout_buf) - 1;
	memcpy(c->fanout_buf, list, len);
	c->fanout_buf[len] = '\0';
	for (char *p = c->fanout_buf, *next; p && n < CLI_FANOUT_MAX;
	     p = next) {
		next = strchr(p, ',');
		if (next)
			*next++ = '\0';
		while (*p == ' ')
			p++;
		if (*p)
			c->fanout[n++] = p;
	}
	return n;
}

static void
on_state(void *arg, int state, const char *detail)
{
	struct cli *c = arg;

	pthread_mutex_lock(&c->mu);
	c->state = state;
	snprintf(c->detail, sizeof(c->detail), "%s", detail ? detail : "");
	pthread_mutex_unlock(&c->mu);
}

static void
on_reject(void *arg, uint64_t mid, int code, const char *msg, unsigned opnum,
	  const char *field)
{
	struct cli *c = arg;
	struct cli_reject *r;

	(void)opnum;
	pthread_mutex_lock(&c->mu);
	r = &c->rejects[c->nrejects++ % CLI_REJECTS_MAX];
	r->mid = mid;
	r->code = code;
	snprintf(r->msg, sizeof(r->msg), "%s", msg ? msg : "");
	snprintf(r->field, sizeof(r->field), "%s", field ? field : "");
	pthread_mutex_unlock(&c->mu);
}

static void
on_change(void *arg, const char *table, const char *id, uint64_t version,
	  int deleted, int origin)
{
	struct cli *c = arg;

	if (c->on_change)
		c->on_change(c->arg, table, id, version, deleted, origin);
}

static void
on_progress(void *arg, const char *space, uint64_t records, uint64_t bytes,
	    uint64_t total, int done)
{
	struct cli *c = arg;

	atomic_store(&c->progress_ms, (int64_t)clock_now_ms());
	if (c->on_progress)
		c->on_progress(c->arg, space, records, bytes, total, done);
}

/* ARGS_MAX - arguments one command takes: set's 64 field pairs, flags */
#define ARGS_MAX 256

/* the option spec names, or NULL: "--name=v" and "--name" both match */
static const struct cfg_opt *
find_opt(const struct cfg_spec *spec, const char *arg)
{
	size_t len = strcspn(arg + 2, "=");

	for (size_t i = 0; i < spec->nopts; i++) {
		if (strlen(spec->opts[i].name) == len &&
		    strncmp(spec->opts[i].name, arg + 2, len) == 0)
			return &spec->opts[i];
	}
	return NULL;
}

/*
 * Flags first: cfg_parse stops at the first argument, so move every flag
 * (and the value of a non-bool flag given as "--name value") ahead of the
 * positional arguments, keeping both orders.  "--" ends the flags.
 */
static int
flags_first(const struct cfg_spec *spec, int argc, const char *const *argv,
	    const char **out)
{
	const char *pos[ARGS_MAX];
	int n = 0, np = 0, i;

	if (argc > ARGS_MAX)
		return -1;
	out[n++] = argv[0];
	for (i = 1; i < argc; i++) {
		const struct cfg_opt *o;

		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		}
		if (strncmp(argv[i], "--", 2) != 0 || argv[i][2] == '\0') {
			pos[np++] = argv[i];
			continue;
		}
		out[n++] = argv[i];
		o = find_opt(spec, argv[i]);
		if (o && o->type != CFG_BOOL && !strchr(argv[i], '=')) {
			if (i + 1 >= argc) {
				fprintf(stderr, "%s: %s needs a value\n",
					spec->prog, argv[i]);
				return -2;
			}
			out[n++] = argv[++i];
		}
	}
	out[n++] = "--";
	for (int k = 0; k < np; k++)
		out[n++] = pos[k];
	for (; i < argc; i++)
		out[n++] = argv[i];
	return n;
}

int
cli_parse(const struct cfg_spec *spec, int *argcp, const char *const **argvp,
	  int *argi, int min, int max)
{
	static const char *args[ARGS_MAX + 2];
	char err[CFG_ERR_MAX];
	int rc, n, argc;

	argc = flags_first(spec, *argcp, *argvp, args);
	if (argc < 0) {
		if (argc == -1)
			fprintf(stderr, "%s: too many arguments\n", spec->prog);
		return CLI_USAGE;
	}
	*argcp = argc;
	*argvp = args;
	rc = cfg_parse(spec, argc, args, argi, stdout, err, sizeof(err));
	if (rc == CFG_EXIT)
		return -1;
	if (rc) {
		fprintf(stderr, "%s: %s\n", spec->prog, err);
		return CLI_USAGE;
	}
	n = argc - *argi;
	if (n < min || n > max) {
		fprintf(stderr, "usage: %s %s\n(%s --help for more)\n",
			spec->prog, spec->usage, spec->prog);
		return CLI_USAGE;
	}
	return CLI_OK;
}

int
cli_open(struct cli *c, const struct cli_conn *cc, const char *prog)
{
	struct weft_options o = { 0 };
	struct weft_callbacks cb = { on_change, on_state, on_reject,
				     on_progress, c };
	char err[512];
	size_t nf;
	int rc;

	c->prog = prog;
	c->st = NULL;
	c->state = WEFT_OFFLINE;
	c->detail[0] = '\0';
	c->err[0] = '\0';
	c->nrejects = 0;
	c->user[0] = '\0';
	c->timeout_ms = cc->timeout_ms;
	c->deadline_ms = (int64_t)clock_now_ms() + cc->timeout_ms;
	atomic_store(&c->progress_ms, 0);
	if (cc->token && *cc->token &&
	    cli_token_user(cc->token, c->user, sizeof(c->user)) != 0)
		return open_error(c, CLI_USAGE,
				  "--token (WEFT_TOKEN) is not a JWT with a "
				  "user ('sub'); mint one with weft token");
	c->online = !cc->offline;
	if (c->online && !*c->user)
		return open_error(c, CLI_USAGE,
				  "a token is needed to reach the services: "
				  "--token or WEFT_TOKEN (or --offline)");
	if (cc->store && *cc->store) {
		if (strlen(cc->store) >= sizeof(c->path))
			return open_error(c, CLI_USAGE,
					  "--store path too long");
		memcpy(c->path, cc->store, strlen(cc->store) + 1);
	} else if (default_store(c) != 0) {
		return open_error(c, CLI_USAGE,
				  "no --store (WEFT_STORE) and no usable "
				  "$HOME for the default one");
	}
	nf = split_fanout(c, cc->fanout_urls);
	o.path = c->path;
	o.schema_path = cc->schema;
	o.write_url = c->online ? cc->write_url : NULL;
	o.fanout_urls = c->online ? c->fanout : NULL;
	o.nfanout = c->online ? nf : 0;
	o.token = cc->token;
	o.tls_ca_file = cc->tls_ca;
	o.errbuf = err;
	o.errlen = sizeof(err);
	err[0] = '\0';
	/* the callbacks' lock: from here until cli_close */
	pthread_mutex_init(&c->mu, NULL);
	rc = weft_open(&o, &c->st);
	if (rc) {
		c->st = NULL;
		pthread_mutex_destroy(&c->mu);
		/* a store that cannot be opened (busy, a bad path or schema,
		 * a newer format) is the caller's to fix */
		return open_error(c, CLI_USAGE, "%s",
				  *err ? err : weft_strerror(rc));
	}
	weft_set_callbacks(c->st, &cb);
	/* a state change before the callbacks were in place */
	pthread_mutex_lock(&c->mu);
	if (c->state == WEFT_OFFLINE)
		c->state = weft_state(c->st);
	pthread_mutex_unlock(&c->mu);
	return CLI_OK;
}

void
cli_close(struct cli *c)
{
	if (!c->st)
		return;
	weft_close(c->st);
	c->st = NULL;
	pthread_mutex_destroy(&c->mu);
}

int
cli_state(struct cli *c, char *detail, size_t len)
{
	int s;

	pthread_mutex_lock(&c->mu);
	s = c->state;
	if (detail && len)
		snprintf(detail, len, "%s", c->detail);
	pthread_mutex_unlock(&c->mu);
	return s;
}

/* the rejection of mid, copied to *out; false if it was not rejected */
static bool
find_reject(struct cli *c, uint64_t mid, struct cli_reject *out)
{
	bool found = false;
	unsigned n;

	pthread_mutex_lock(&c->mu);
	n = c->nrejects < CLI_REJECTS_MAX ? c->nrejects : CLI_REJECTS_MAX;
	for (unsigned i = 0; i < n && !found; i++) {
		if (c->rejects[i].mid == mid) {
			*out = c->rejects[i];
			found = true;
		}
	}
	pthread_mutex_unlock(&c->mu);
	return found;
}

int
cli_left_ms(struct cli *c)
{
	int64_t now = (int64_t)clock_now_ms(), end = c->deadline_ms;
	int64_t p = atomic_load(&c->progress_ms);

	/* a bootstrap that progresses has --timeout after each page */
	if (p && p + c->timeout_ms > end)
		end = p + c->timeout_ms;
	if (end - now > INT32_MAX)
		return INT32_MAX;
	return end > now ? (int)(end - now) : 1;
}

int
cli_trouble(struct cli *c, const char *what, int err)
{
	char detail[256];
	int s = cli_state(c, detail, sizeof(detail));

	if (s == WEFT_NEEDS_AUTH || s == WEFT_ERROR) {
		fprintf(stderr, "%s: refused by the server: %s\n", c->prog,
			*detail ? detail : weft_state_name(s));
		return CLI_REJECTED;
	}
	fprintf(stderr,
		"%s: cannot %s: the services did not answer within %lld ms "
		"(%s; %s%s%s)\n",
		c->prog, what, (long long)c->timeout_ms, weft_strerror(err),
		weft_state_name(s), *detail ? ": " : "", detail);
	return CLI_UNAVAILABLE;
}

int
cli_wait(struct cli *c, uint64_t mid)
{
	struct cli_reject r;
	char detail[256];
	int rc, s;

	if (!c->online) {
		if (mid)
			fprintf(stderr,
				"%s: offline: committed locally; %llu "
				"transaction(s) queued in '%s'\n",
				c->prog,
				(unsigned long long)weft_pending(c->st),
				c->path);
		return CLI_OK;
	}
	for (;;) {
		rc = weft_wait_synced(c->st, 100);
		if (rc == 0)
			break;
		if (rc != WEFT_ETIMEDOUT) {
			fprintf(stderr, "%s: %s\n", c->prog,
				weft_last_error(c->st));
			return CLI_UNAVAILABLE;
		}
		s = cli_state(c, detail, sizeof(detail));
		if (s == WEFT_NEEDS_AUTH || s == WEFT_ERROR) {
			fprintf(stderr, "%s: refused by the server: %s\n",
				c->prog, *detail ? detail : weft_state_name(s));
			return CLI_REJECTED;
		}
		if (cli_left_ms(c) <= 1) {
			fprintf(stderr,
				"%s: the services did not answer within "
				"%lld ms (%s%s%s); %llu transaction(s) stay "
				"queued in '%s' for the next online run\n",
				c->prog, (long long)c->timeout_ms,
				weft_state_name(s), *detail ? ": " : "", detail,
				(unsigned long long)weft_pending(c->st),
				c->path);
			return CLI_UNAVAILABLE;
		}
	}
	if (mid && find_reject(c, mid, &r)) {
		fprintf(stderr, "%s: rejected by the server: %s: %s%s%s%s\n",
			c->prog, weft_strerror(r.code), r.msg,
			*r.field ? " (field '" : "", r.field,
			*r.field ? "')" : "");
		return CLI_REJECTED;
	}
	return CLI_OK;
}
