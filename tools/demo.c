/*
 * demo.c - weft-demo, a terminal issue tracker on the demo schema
 * (deploy/schema/issues.json): a team's issues in a list, editable, with
 * others' edits appearing live.  Run two side by side (two users, or one
 * user on two stores) to see the whole idea: edit in one, watch it land in
 * the other; go offline in one, edit both, come back, both converge.
 *
 * It is a plain libweft app.  Every key commits a local transaction and
 * redraws at once; the sync thread does the rest.  The header shows the
 * connection state and how many transactions are waiting for the server;
 * a '*' marks rows with edits of yours not yet confirmed.
 *
 * Threads: the sync thread's callbacks only raise `dirty` (ncurses is not
 * thread-safe); the main loop redraws when it is set, when a key comes, or
 * every 100 ms (for the state and pending count).
 */
#include <inttypes.h>
#include <jansson.h>
#include <locale.h>
#include <ncurses.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "tools/cli.h"

#include "common/banned.h"

/* ROWS_MAX - issues shown; a team's open issues fit, and the list stays
 * cheap to rebuild on every change */
#define ROWS_MAX 2000

/* the demo schema's statuses, in the order 's' cycles through them */
static const char *const statuses[] = { "backlog", "todo", "in_progress",
					"done", "canceled" };
#define NSTATUS (sizeof(statuses) / sizeof(statuses[0]))

/* ID_BUF - an id and its NUL (the protocol allows 256 bytes) */
#define ID_BUF 257

struct row {
	char id[ID_BUF];
	char title[128];
	char status[16];
	char assignee[32];
	long long priority;
	uint64_t version;
	uint64_t pending; /* my queued transactions touching it */
};

struct demo {
	struct cli c;
	struct cli_conn cc;
	const char *space;
	atomic_int dirty; /* set by the sync thread: reload the rows */
	struct row rows[ROWS_MAX];
	size_t nrows;
	size_t sel;	     /* selected row */
	size_t top;	     /* first row shown */
	char sel_id[ID_BUF]; /* keeps the selection across reloads */
	char msg[600];	     /* the bottom line */
	uint64_t mid;	     /* my last commit, for its rejection */
	bool failed;	     /* the store could not be opened again */
	unsigned seen_rejects;
};

static volatile sig_atomic_t quit;

static void
on_signal(int sig)
{
	(void)sig;
	quit = 1;
}

static void
on_change(void *arg, const char *table, const char *id, uint64_t version,
	  int deleted, int origin)
{
	struct demo *d = arg;

	(void)table;
	(void)id;
	(void)version;
	(void)deleted;
	(void)origin;
	atomic_store(&d->dirty, 1);
}

static void
str_field(json_t *o, const char *key, char *dst, size_t cap, const char *dflt)
{
	json_t *v = json_object_get(o, key);

	snprintf(dst, cap, "%s",
		 json_is_string(v) ? json_string_value(v) : dflt);
}

static int
add_row(void *arg, const char *table, const char *id, const char *space,
	uint64_t version, const char *data)
{
	struct demo *d = arg;
	struct row *r;
	json_t *o;

	(void)table;
	(void)space;
	if (d->nrows == ROWS_MAX)
		return 1;
	r = &d->rows[d->nrows++];
	memset(r, 0, sizeof(*r));
	snprintf(r->id, sizeof(r->id), "%s", id);
	r->version = version;
	r->pending = weft_pending_record(d->c.st, "issues", id);
	o = json_loads(data, 0, NULL);
	str_field(o, "title", r->title, sizeof(r->title), "");
	str_field(o, "status", r->status, sizeof(r->status), "?");
	str_field(o, "assignee", r->assignee, sizeof(r->assignee), "-");
	r->priority = json_integer_value(json_object_get(o, "priority"));
	json_decref(o);
	return 0;
}

static void
reload(struct demo *d)
{
	d->nrows = 0;
	weft_each(d->c.st, "issues", d->space, add_row, d);
	d->sel = 0;
	for (size_t i = 0; i < d->nrows; i++) {
		if (strcmp(d->rows[i].id, d->sel_id) == 0)
			d->sel = i;
	}
}

/* a rejection of one of my transactions becomes the bottom line */
static void
check_rejects(struct demo *d)
{
	struct cli *c = &d->c;

	pthread_mutex_lock(&c->mu);
	if (c->nrejects != d->seen_rejects) {
		const struct cli_reject *r =
			&c->rejects[(c->nrejects - 1) % CLI_REJECTS_MAX];

		snprintf(d->msg, sizeof(d->msg),
			 "rejected by the server (rolled back): %s: %s",
			 weft_strerror(r->code), r->msg);
		d->seen_rejects = c->nrejects;
	}
	pthread_mutex_unlock(&c->mu);
}

static void
draw(struct demo *d)
{
	char detail[256];
	int h, w, s, list_h, y;
	const char *what;

	getmaxyx(stdscr, h, w);
	erase();
	s = cli_state(&d->c, detail, sizeof(detail));
	what = !d->c.online ? "offline (by you)" : weft_state_name(s);
	attron(A_BOLD);
	mvprintw(0, 0, "weft demo - team %s - %s", d->space,
		 *d->c.user ? d->c.user : "?");
	attroff(A_BOLD);
	mvprintw(0, w > 40 ? w - 40 : 0, "[%s] %" PRIu64 " pending", what,
		 weft_pending(d->c.st));
	mvhline(1, 0, ACS_HLINE, w);
	mvprintw(2, 0, "  %-12s %-12s %-3s %-10s %s", "ID", "STATUS", "PRI",
		 "ASSIGNEE", "TITLE");
	list_h = h - 6;
	if (list_h < 1)
		list_h = 1;
	if (d->sel < d->top)
		d->top = d->sel;
	if (d->sel >= d->top + (size_t)list_h)
		d->top = d->sel - (size_t)list_h + 1;
	for (y = 0; y < list_h && d->top + (size_t)y < d->nrows; y++) {
		const struct row *r = &d->rows[d->top + (size_t)y];
		bool cur = d->top + (size_t)y == d->sel;

		if (cur)
			attron(A_REVERSE);
		mvprintw(3 + y, 0, "%c %-12.12s %-12.12s %-3lld %-10.10s %s%s",
			 cur ? '>' : ' ', r->id, r->status, r->priority,
			 r->assignee, r->title, r->pending ? " *" : "");
		if (cur)
			attroff(A_REVERSE);
	}
	if (d->nrows == 0)
		mvprintw(3, 2, "(no issues yet: press n to create one)");
	mvhline(h - 3, 0, ACS_HLINE, w);
	mvprintw(h - 2, 0,
		 "n new  e title  s status  a assignee  p priority  x delete  "
		 "u undo  r redo  o on/offline  q quit");
	mvprintw(h - 1, 0, "%.*s", w > 1 ? w - 1 : 0, d->msg);
	refresh();
}

/* read a line at the bottom; false when empty or cancelled */
static bool
prompt(const char *label, const char *init, char *out, size_t cap)
{
	int h, w;

	(void)w;
	getmaxyx(stdscr, h, w);
	move(h - 1, 0);
	clrtoeol();
	if (init && *init)
		mvprintw(h - 1, 0, "%s (was '%s'): ", label, init);
	else
		mvprintw(h - 1, 0, "%s: ", label);
	echo();
	curs_set(1);
	timeout(-1);
	if (getnstr(out, (int)cap - 1) != OK)
		out[0] = '\0';
	noecho();
	curs_set(0);
	timeout(100);
	return out[0] != '\0';
}

/* commit one op built by the caller; the message says what happened */
static void
commit(struct demo *d, weft_txn *tx, int op_rc, const char *what)
{
	int rc;

	if (op_rc) {
		snprintf(d->msg, sizeof(d->msg), "%s: %s", what,
			 weft_last_error(d->c.st));
		weft_abort(tx);
		return;
	}
	rc = weft_commit(tx, &d->mid);
	snprintf(d->msg, sizeof(d->msg), "%s%s%s", what, rc ? ": " : "",
		 rc ? weft_last_error(d->c.st) : "");
	atomic_store(&d->dirty, 1);
}

static void
set_field(struct demo *d, const char *field, const char *json)
{
	const struct row *r = &d->rows[d->sel];
	char what[160];
	weft_txn *tx;

	if (weft_begin(d->c.st, &tx) != 0)
		return;
	snprintf(what, sizeof(what), "%s: %s = %s", r->id, field, json);
	commit(d, tx, weft_set(tx, "issues", r->id, field, json), what);
}

static void
set_string(struct demo *d, const char *field, const char *text)
{
	json_t *v = json_string(text);
	char *js = v ? json_dumps(v, JSON_ENCODE_ANY) : NULL;

	if (js)
		set_field(d, field, js);
	free(js);
	json_decref(v);
}

/*
 * A new id: "<user>-<6 random base-36 digits>".  Random, so two stores
 * (two users, or one user on two machines) creating offline do not
 * collide; short, so it fits the list.
 */
static void
new_id(struct demo *d, char *out, size_t cap)
{
	static const char digits[] = "0123456789abcdefghijklmnopqrstuvwxyz";
	uint8_t rnd[6] = { 0 };
	char suffix[7];
	FILE *f = fopen("/dev/urandom", "rb");

	if (!f || fread(rnd, 1, sizeof(rnd), f) != sizeof(rnd)) {
		uint64_t t = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 20);

		for (size_t i = 0; i < sizeof(rnd); i++, t >>= 7)
			rnd[i] = (uint8_t)t;
	}
	if (f)
		fclose(f);
	for (size_t i = 0; i < sizeof(rnd); i++)
		suffix[i] = digits[rnd[i] % 36];
	suffix[6] = '\0';
	snprintf(out, cap, "%s-%s", *d->c.user ? d->c.user : "local", suffix);
}

static void
create_issue(struct demo *d)
{
	char title[120], id[ID_BUF], what[ID_BUF + 16];
	json_t *o;
	char *js;
	weft_txn *tx;

	if (!prompt("new issue title", NULL, title, sizeof(title)))
		return;
	new_id(d, id, sizeof(id));
	o = json_pack("{s:s,s:s}", "title", title, "status", "todo");
	js = o ? json_dumps(o, JSON_COMPACT) : NULL;
	json_decref(o);
	if (!js || weft_begin(d->c.st, &tx) != 0) {
		free(js);
		return;
	}
	snprintf(what, sizeof(what), "created %s", id);
	snprintf(d->sel_id, sizeof(d->sel_id), "%s", id);
	commit(d, tx, weft_create(tx, "issues", id, d->space, js), what);
	free(js);
}

static void
toggle_online(struct demo *d)
{
	cli_close(&d->c);
	d->cc.offline = !d->cc.offline;
	if (cli_open(&d->c, &d->cc, "weft-demo") != CLI_OK) {
		snprintf(d->msg, sizeof(d->msg), "%s", d->c.err);
		/* back as it was: the store opened a moment ago */
		d->cc.offline = !d->cc.offline;
		if (cli_open(&d->c, &d->cc, "weft-demo") != CLI_OK) {
			snprintf(d->msg, sizeof(d->msg), "%s", d->c.err);
			d->failed = true;
			quit = 1;
		}
		return;
	}
	d->seen_rejects = 0;
	snprintf(d->msg, sizeof(d->msg), "%s",
		 d->cc.offline ? "offline: edits queue locally"
			       : "online: sending queued edits");
	atomic_store(&d->dirty, 1);
}

static void
key(struct demo *d, int ch)
{
	const struct row *r = d->nrows ? &d->rows[d->sel] : NULL;
	char buf[120];
	uint64_t mid;
	weft_txn *tx;

	switch (ch) {
	case KEY_UP:
	case 'k':
		if (d->sel > 0)
			d->sel--;
		break;
	case KEY_DOWN:
	case 'j':
		if (d->sel + 1 < d->nrows)
			d->sel++;
		break;
	case 'n':
		create_issue(d);
		break;
	case 'e':
		if (r && prompt("title", r->title, buf, sizeof(buf)))
			set_string(d, "title", buf);
		break;
	case 'a':
		if (r && prompt("assignee (- for nobody)", r->assignee, buf,
				sizeof(buf))) {
			if (strcmp(buf, "-") == 0)
				set_field(d, "assignee", "null");
			else
				set_string(d, "assignee", buf);
		}
		break;
	case 's':
		if (r) {
			size_t i = 0;

			while (i < NSTATUS && strcmp(statuses[i], r->status))
				i++;
			set_string(d, "status", statuses[(i + 1) % NSTATUS]);
		}
		break;
	case 'p':
		if (r) {
			snprintf(buf, sizeof(buf), "%lld",
				 (r->priority + 1) % 5);
			set_field(d, "priority", buf);
		}
		break;
	case 'x':
		if (r && weft_begin(d->c.st, &tx) == 0) {
			char what[ID_BUF + 16];

			snprintf(what, sizeof(what), "deleted %s", r->id);
			commit(d, tx, weft_delete(tx, "issues", r->id), what);
		}
		break;
	case 'u':
	case 'r':
		if ((ch == 'u' ? weft_undo : weft_redo)(d->c.st, &mid) == 0)
			snprintf(d->msg, sizeof(d->msg), "%s",
				 ch == 'u' ? "undone" : "redone");
		else
			snprintf(d->msg, sizeof(d->msg), "nothing to %s",
				 ch == 'u' ? "undo" : "redo");
		atomic_store(&d->dirty, 1);
		break;
	case 'o':
		toggle_online(d);
		break;
	case 'q':
		quit = 1;
		break;
	default:
		break;
	}
	/* a new issue selects itself (create_issue set sel_id) */
	if (ch != 'n' && d->nrows && d->sel < d->nrows)
		snprintf(d->sel_id, sizeof(d->sel_id), "%s",
			 d->rows[d->sel].id);
}

int
main(int argc, char **argv)
{
	static struct demo d;
	const struct cfg_opt opts[] = {
		CLI_CONN_OPTS(&d.cc),
		{ "space", CFG_STR, &d.space, "demo",
		  "the team (space) to show", 0, 0 },
	};
	const struct cfg_spec spec = {
		"weft-demo", "[options]",
		"A terminal issue tracker on libweft.  Keys: arrows or j/k "
		"move; n new issue;\ne edit title; s next status; a assignee; "
		"p priority; x delete; u undo; r redo;\no go offline / online; "
		"q quit.  '*' marks rows with edits not yet confirmed.\n"
		"With the local stack: set -a; . var/stack/env; set +a; "
		"WEFT_TOKEN=$(weft token --user alice) weft-demo",
		opts, sizeof(opts) / sizeof(opts[0])
	};
	const char *const *args = (const char *const *)argv;
	struct sigaction sa;
	int argi, rc, ch;

	rc = cli_parse(&spec, &argc, &args, &argi, 0, 0);
	if (rc)
		return rc < 0 ? CLI_OK : rc;
	d.c.on_change = on_change;
	d.c.arg = &d;
	if ((rc = cli_open(&d.c, &d.cc, "weft-demo")) != CLI_OK)
		return rc;
	d.c.quiet = true; /* from here on, stderr is under the screen */
	/* kept in the store: the team loads when it goes online */
	if (weft_subscribe_space(d.c.st, d.space) != 0) {
		fprintf(stderr, "weft-demo: %s\n", weft_last_error(d.c.st));
		cli_close(&d.c);
		return CLI_USAGE;
	}
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = on_signal;
	sigaction(SIGINT, &sa, NULL);
	sigaction(SIGTERM, &sa, NULL);
	setlocale(LC_ALL, "");
	initscr();
	cbreak();
	noecho();
	keypad(stdscr, TRUE);
	curs_set(0);
	timeout(100);
	atomic_store(&d.dirty, 1);
	while (!quit) {
		if (atomic_exchange(&d.dirty, 0))
			reload(&d);
		check_rejects(&d);
		if (d.c.online && !*d.msg &&
		    weft_space_status(d.c.st, d.space) == WEFT_EPERM)
			snprintf(d.msg, sizeof(d.msg),
				 "not a member of '%s' (yet): ask an admin "
				 "(weft space add-member)",
				 d.space);
		draw(&d);
		ch = getch();
		if (ch != ERR)
			key(&d, ch);
	}
	endwin();
	cli_close(&d.c);
	if (d.failed) {
		fprintf(stderr, "%s\n", d.msg);
		return CLI_USAGE;
	}
	return 0;
}
