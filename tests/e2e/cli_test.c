/*
 * cli_test.c - the weft CLI and the demo app as a person would use them,
 * against the services as real processes (weft-write, a weft-relay, two
 * weft-fanout nodes on a private Postgres and Redis):
 *
 *   - the Quick start's convergence scenario (scripts/demo-scenario),
 *     twice, with the server's rows checked in Postgres;
 *   - every exit code: usage, rejected, unavailable (the write stays
 *     queued and lands exactly once later), offline;
 *   - weft watch's JSON lines and clean exit on SIGTERM; bootstrap's
 *     progress;
 *   - weft-demo driven in tmux: an issue made in one window appears in the
 *     other, and an offline edit converges.
 */
#include <criterion/criterion.h>
#include <criterion/new/assert.h>
#include <libpq-fe.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "services/shared/auth.h"
#include "tests/lib/proc.h"

/* OUT_MAX - a command's output kept for assertions */
#define OUT_MAX 65536

static struct proc_cluster cl;
static char alice[1024], bob[1024], carol[1024];

static void
mint(char *out, size_t cap, const char *user)
{
	char *t = auth_mint_hs256(PROC_SECRET, user, (int64_t)time(NULL), 3600);

	cr_assert_not_null(t);
	snprintf(out, cap, "%s", t);
	free(t);
}

static void
setup(void)
{
	proc_cluster_up(&cl, "cli", NULL);
	mint(alice, sizeof(alice), "alice");
	mint(bob, sizeof(bob), "bob");
	mint(carol, sizeof(carol), "carol");
	/* what every command below reads: the stack, as the env file says */
	setenv("WEFT_WRITE_URL", cl.wr.url, 1);
	setenv("WEFT_FANOUT_URLS", cl.fa.url, 1);
	setenv("WEFT_FANOUT_A_URL", cl.fa.url, 1);
	setenv("WEFT_FANOUT_B_URL", cl.fb.url, 1);
	setenv("WEFT_JWT_SECRET", PROC_SECRET, 1);
	setenv("WEFT_SCHEMA", getenv("WEFT_DEMO_SCHEMA"), 1);
	setenv("WEFT_STACK_DIR", cl.tmp, 1);
	setenv("XDG_DATA_HOME", cl.tmp, 1);
	unsetenv("WEFT_TOKEN");
	unsetenv("WEFT_STORE");
}

static char sock[256]; /* the tmux tests' server */

static void
teardown(void)
{
	char cmd[512];

	/* a tmux test that failed half-way left its server (and demos) */
	if (sock[0]) {
		snprintf(cmd, sizeof(cmd),
			 "tmux -S '%s' kill-server 2>/dev/null", sock);
		(void)!system(cmd);
		sock[0] = '\0';
	}
	proc_cluster_down(&cl);
}

TestSuite(cli, .init = setup, .fini = teardown, .timeout = 300);

/* ---- helpers ---- */

/*
 * Run a shell command line (stderr joined to stdout) into out; returns its
 * exit code.  The line is printed first, so a failure shows what ran.
 */
static int
sh(char *out, size_t cap, const char *fmt, ...)
{
	char cmd[8192];
	va_list ap;
	FILE *f;
	size_t n = 0, r;
	int st;

	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	strncat(cmd, " 2>&1", sizeof(cmd) - strlen(cmd) - 1);
	f = popen(cmd, "r");
	cr_assert_not_null(f, "%s", cmd);
	while (cap > 1 && (r = fread(out + n, 1, cap - 1 - n, f)) > 0)
		n += r;
	if (cap)
		out[n] = '\0';
	/* drain whatever did not fit */
	while (fread(cmd, 1, sizeof(cmd), f) > 0)
		;
	st = pclose(f);
	return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* the CLI, as tok's user, with a store named store in the scratch dir,
 * into out (OUT_MAX); returns its exit code */
static int
weft(char *out, const char *tok, const char *store, const char *fmt, ...)
{
	char args[4096];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	return sh(out, OUT_MAX, "WEFT_TOKEN='%s' WEFT_STORE='%s/%s.db' '%s' %s",
		  tok, cl.tmp, store, getenv("WEFT_TEST_CLI_BIN"), args);
}

/* the CLI as in weft(), which must exit with want (the command and its
 * output are in the failure message) */
static void expect(int want, char *out, const char *tok, const char *store,
		   const char *fmt, ...) __attribute__((format(printf, 5, 6)));

static void
expect(int want, char *out, const char *tok, const char *store, const char *fmt,
       ...)
{
	char args[4096];
	va_list ap;
	int rc;

	va_start(ap, fmt);
	vsnprintf(args, sizeof(args), fmt, ap);
	va_end(ap);
	rc = weft(out, tok, store, "%s", args);
	cr_assert(rc == want, "weft %s: exit %d, want %d:\n%s", args, rc, want,
		  out);
}

/* got must be want (the output of a command, compared whole) */
static void
str_is(const char *got, const char *want)
{
	cr_assert(strcmp(got, want) == 0, "got '%s', want '%s'", got, want);
}

/* the first value sql returns, from this suite's Postgres */
static void
pg_one(const char *sql, char *out, size_t cap)
{
	proc_pg_value(cl.pg_url, sql, out, cap);
}

/* alice's team sp, with bob a writer */
static void
team(const char *sp)
{
	static char out[OUT_MAX];

	expect(0, out, alice, "alice", "space create %s", sp);
	expect(0, out, alice, "alice", "space add-member %s bob", sp);
}

/* ---- tests ---- */

Test(cli, quickstart_scenario_converges_and_runs_again)
{
	static char out[OUT_MAX];
	char v[256];
	int rc;

	for (int run = 1; run <= 2; run++) {
		rc = sh(out, sizeof(out),
			"'%s/scripts/demo-scenario' --weft '%s'",
			getenv("WEFT_SOURCE_DIR"), getenv("WEFT_TEST_CLI_BIN"));
		cr_assert(eq(int, rc, 0), "run %d:\n%s", run, out);
		cr_assert(strstr(out, "Converged: both clients "
				      "hold the same 3 issues") != NULL,
			  "run %d:\n%s", run, out);
		/* step 7 shows the views apart, bob's edit pending */
		cr_assert(strstr(out, "pending=1") != NULL, "%s", out);
		/* alice's watcher saw bob's offline edit arrive live */
		cr_assert(strstr(out, "status=in_progress (remote)") != NULL,
			  "%s", out);
	}
	/* the server has both edits of DEMO-1 and bob's offline issue, once */
	pg_one("SELECT data->>'status' || ' ' || (data->>'assignee')"
	       " FROM weft_records WHERE tbl = 'issues' AND id = 'DEMO-1'",
	       v, sizeof(v));
	str_is(v, "in_progress alice");
	pg_one("SELECT count(*) FROM weft_records WHERE tbl = 'issues'"
	       " AND id = 'DEMO-3' AND NOT deleted",
	       v, sizeof(v));
	str_is(v, "1");
}

Test(cli, usage_errors_exit_1)
{
	static char out[OUT_MAX];

	expect(1, out, alice, "u", "frobnicate");
	cr_assert(strstr(out, "unknown command") != NULL, "%s", out);
	expect(1, out, alice, "u", "set issues x");
	cr_assert(strstr(out, "usage: weft set") != NULL, "%s", out);
	expect(1, out, alice, "u", "set issues x title");
	expect(1, out, alice, "u", "ls --format xml");
	expect(1, out, alice, "u", "put --timeout=soon t i {}");
	/* no token and not offline */
	expect(1, out, "", "u", "ls");
	cr_assert(strstr(out, "token is needed") != NULL, "%s", out);
	/* a write that does not fit the schema is refused locally */
	team("us");
	expect(1, out, alice, "alice",
	       "put --space us issues u1 '{\"title\": 7}'");
	cr_assert(strstr(out, "title") != NULL, "%s", out);
	/* a flag with no value, a value that is not UTF-8, a store that
	 * cannot be opened */
	expect(1, out, alice, "alice",
	       "put issues u2 '{\"title\":\"x\"}' --space");
	cr_assert(strstr(out, "--space needs a value") != NULL, "%s", out);
	expect(0, out, alice, "alice",
	       "put --space us issues u3 '{\"title\":\"x\"}'");
	expect(1, out, alice, "alice",
	       "set issues u3 title \"$(printf '\\377')\"");
	cr_assert(strstr(out, "not valid UTF-8") != NULL, "%s", out);
	cr_assert(eq(int,
		     sh(out, OUT_MAX,
			"'%s' ls --offline --store /nonexistent/dir/x.db",
			getenv("WEFT_TEST_CLI_BIN")),
		     1),
		  "%s", out);
	/* --help is not an error, and lists every variable */
	expect(0, out, alice, "u", "watch --help");
	cr_assert(strstr(out, "WEFT_FANOUT_URLS") != NULL, "%s", out);
}

Test(cli, rejections_exit_2)
{
	static char out[OUT_MAX];
	char bad[1100];

	team("rj");
	/* carol is no member: her write is rejected by the server, and her
	 * local store rolls it back */
	expect(2, out, carol, "carol",
	       "put --space rj issues r1 '{\"title\":\"x\"}'");
	cr_assert(strstr(out, "rejected by the server") != NULL, "%s", out);
	expect(2, out, carol, "carol", "get issues r1");
	/* ... and may not follow the space */
	expect(2, out, carol, "carol", "ls --space rj");
	cr_assert(strstr(out, "not a member") != NULL, "%s", out);
	/* removing someone who is not a member: not found */
	expect(2, out, alice, "alice", "space remove-member rj nobody");
	/* bob (a writer) may not add members */
	expect(2, out, bob, "bob", "space add-member rj carol");
	/* a wrongly signed token */
	snprintf(bad, sizeof(bad), "%sx", alice);
	expect(2, out, bad, "bad", "status");
	/* a record that does not exist */
	expect(2, out, alice, "alice", "get issues nope");
	cr_assert(strstr(out, "not found") != NULL, "%s", out);
	/* a conflicting create: the id exists */
	expect(0, out, alice, "alice",
	       "put --space rj issues r2 '{\"title\":\"a\"}'");
	expect(0, out, bob, "bob2",
	       "put --offline --space rj issues r2 "
	       "'{\"title\":\"b\"}'");
	expect(2, out, bob, "bob2", "sync");
	cr_assert(strstr(out, "already exists") != NULL, "%s", out);
}

Test(cli, unavailable_exits_3_and_the_write_lands_later_exactly_once)
{
	static char out[OUT_MAX];
	char v[64];
	int dead = proc_free_port();

	team("ua");
	/* a record this store does not have cannot be loaded: exit 3,
	 * nothing queued (not "not found") */
	expect(3, out, alice, "fresh",
	       "set --write-url tcp://127.0.0.1:%d --timeout 1s "
	       "issues nope status done",
	       dead);
	cr_assert(strstr(out, "cannot load issues/nope") != NULL, "%s", out);
	expect(3, out, alice, "fresh",
	       "get --write-url tcp://127.0.0.1:%d --timeout 1s "
	       "issues nope",
	       dead);
	expect(0, out, alice, "fresh", "status --offline");
	cr_assert(strstr(out, "pending    0") != NULL, "%s", out);
	/* weft-write out of reach: committed locally, queued, exit 3 */
	expect(3, out, alice, "ua",
	       "put --write-url tcp://127.0.0.1:%d --timeout 1s "
	       "--space ua issues q1 '{\"title\":\"queued\"}'",
	       dead);
	cr_assert(strstr(out, "stay queued") != NULL, "%s", out);
	expect(3, out, alice, "ua",
	       "status --write-url tcp://127.0.0.1:%d --timeout 1s", dead);
	cr_assert(strstr(out, "pending    1") != NULL, "%s", out);
	/* visible locally at once, offline */
	expect(0, out, alice, "ua", "get --offline --format json issues q1");
	cr_assert(strstr(out, "\"pending\":1") != NULL, "%s", out);
	/* the next online run sends it; a second sync sends nothing */
	expect(0, out, alice, "ua", "sync");
	cr_assert(strstr(out, "1 transaction(s) sent, 0 rejected,"
			      " 0 pending") != NULL,
		  "%s", out);
	expect(0, out, alice, "ua", "sync");
	cr_assert(strstr(out, "0 transaction(s) sent") != NULL, "%s", out);
	pg_one("SELECT version || ' ' || (data->>'title') FROM weft_records"
	       " WHERE tbl = 'issues' AND id = 'q1'",
	       v, sizeof(v));
	str_is(v, "1 queued");
}

Test(cli, set_get_delete_undo_and_text_output)
{
	static char out[OUT_MAX];

	team("sg");
	expect(0, out, alice, "alice",
	       "put --space sg issues s1 '{\"title\":\"one\"}'");
	/* flags after arguments too; a bare word is a string, JSON is JSON */
	expect(0, out, alice, "alice",
	       "set issues s1 status done priority 3 labels "
	       "'[\"ui\"]' --timeout 5s");
	expect(0, out, bob, "bob",
	       "get --format text --fields status,priority,labels "
	       "issues s1");
	str_is(out, "issues/s1 v2 space=sg status=\"done\" priority=3 "
		    "labels=[\"ui\"]\n");
	expect(0, out, alice, "alice", "undo");
	expect(0, out, bob, "bob",
	       "get --format text --fields status issues s1");
	str_is(out, "issues/s1 v3 space=sg status=\"backlog\"\n");
	expect(0, out, alice, "alice", "redo");
	expect(0, out, alice, "alice", "delete issues s1");
	expect(2, out, bob, "bob", "get issues s1");
	expect(0, out, alice, "alice", "ls --space sg issues");
	str_is(out, "");
}

Test(cli, watch_prints_json_lines_live_and_exits_0_on_sigterm)
{
	static char out[OUT_MAX];
	char cmd[4096], line[4096];
	FILE *f;
	bool seen = false, ok;
	pid_t pid;
	int st;

	team("wt");
	team("wt2");
	/* the watching store also follows wt2, with a record there */
	expect(0, out, alice, "alice",
	       "put --space wt2 issues other '{\"title\":\"o\"}'");
	expect(0, out, bob, "w", "ls --space wt2");
	snprintf(cmd, sizeof(cmd),
		 "echo $$; exec env WEFT_TOKEN='%s' WEFT_STORE='%s/w.db' '%s' "
		 "watch --space wt issues 2>/dev/null",
		 bob, cl.tmp, getenv("WEFT_TEST_CLI_BIN"));
	f = popen(cmd, "r");
	cr_assert_not_null(f);
	cr_assert_not_null(fgets(line, sizeof(line), f));
	pid = (pid_t)atoi(line);
	cr_assert(lt(int, 0, pid));
	/* an issue made after watch started shows up as one JSON line */
	for (int i = 0; i < 50 && !seen; i++) {
		expect(0, out, alice, "alice",
		       "put --space wt issues w%d "
		       "'{\"title\":\"live %d\"}'",
		       i, i);
		/* the first line for w<i> (watch may print earlier ones) */
		while (fgets(line, sizeof(line), f)) {
			if (strstr(line, "\"title\":\"live "))
				break;
		}
		seen = strncmp(line, "{\"table\":\"issues\",\"id\":\"w", 25) ==
			       0 &&
		       strstr(line, "\"origin\":\"remote\"") &&
		       strstr(line, "\"deleted\":false") &&
		       line[strlen(line) - 1] == '\n';
	}
	cr_assert(seen, "last line: %s", line);
	/* a deletion in wt2 is not wt's; one in wt is, with no data */
	expect(0, out, alice, "alice", "delete issues other");
	expect(0, out, alice, "alice", "delete issues w0");
	while (fgets(line, sizeof(line), f)) {
		cr_assert(strstr(line, "\"id\":\"other\"") == NULL, "%s", line);
		if (strstr(line, "\"id\":\"w0\"") &&
		    strstr(line, "\"deleted\":true"))
			break;
	}
	cr_assert(strstr(line, "\"data\":null") != NULL, "%s", line);
	cr_assert(strstr(line, "\"space\":\"wt\"") != NULL, "%s", line);
	kill(pid, SIGTERM);
	st = pclose(f);
	ok = WIFEXITED(st) && WEXITSTATUS(st) == 0;
	cr_assert(ok, "watch: status %d", st);
}

Test(cli, bootstrap_reports_progress)
{
	static char out[OUT_MAX];
	char json[64];

	team("bs");
	for (int i = 0; i < 20; i++) {
		snprintf(json, sizeof(json), "'{\"title\":\"t%d\"}'", i);
		expect(0, out, alice, "alice", "put --space bs issues b%02d %s",
		       i, json);
	}
	expect(0, out, bob, "bb", "bootstrap --space bs");
	/* 20 issues, the space and two members; one line a second and the
	 * last one (piped: no bar) */
	cr_assert(strstr(out, "bs: 23 records") != NULL, "%s", out);
	cr_assert(strstr(out, ", done\n") != NULL, "%s", out);
	cr_assert(strstr(out, "space bs: 23 records local, live") != NULL, "%s",
		  out);
	expect(0, out, bob, "bb", "ls --offline issues");
	cr_assert(eq(int, (int)(strlen(out) > 0), 1));
}

/* ---- the demo app, in tmux ---- */

/* tmux on this test's own server socket */
static int
tmux(char *out, size_t cap, const char *args)
{
	return sh(out, cap, "tmux -S '%s' %s", sock, args);
}

/* wait until pane shows text; false after ~20 s */
static bool
screen_has(const char *pane, const char *text, char *screen, size_t cap)
{
	char args[128];

	snprintf(args, sizeof(args), "capture-pane -p -t %s", pane);
	for (int i = 0; i < 200; i++) {
		if (tmux(screen, cap, args) == 0 && strstr(screen, text))
			return true;
		clock_sleep_ms(100);
	}
	return false;
}

/* the line of screen that holds a also holds b */
static void
line_has(const char *screen, const char *a, const char *b)
{
	const char *p = strstr(screen, a), *start, *end;

	cr_assert(p != NULL, "no '%s' in\n%s", a, screen);
	for (start = p; start > screen && start[-1] != '\n'; start--)
		;
	end = strchr(p, '\n');
	if (!end)
		end = p + strlen(p);
	cr_assert(memmem(start, (size_t)(end - start), b, strlen(b)) != NULL,
		  "'%.*s' has no '%s'", (int)(end - start), start, b);
}

static void
keys(const char *pane, const char *k)
{
	static char out[4096];
	char args[512];

	snprintf(args, sizeof(args), "send-keys -t %s %s", pane, k);
	if (tmux(out, sizeof(out), args) != 0) {
		static char a[OUT_MAX], b[OUT_MAX];

		(void)tmux(a, sizeof(a), "capture-pane -p -t d:0.0");
		(void)tmux(b, sizeof(b), "capture-pane -p -t d:0.1");
		cr_assert(false, "send-keys %s to %s: %s\nd.0:\n%s\nd.1:\n%s",
			  k, pane, out, a, b);
	}
}

Test(cli, demo_in_tmux_shows_the_other_windows_edits_live)
{
	static char out[OUT_MAX], screen[OUT_MAX];
	char args[4096];
	const char *demo = getenv("WEFT_TEST_DEMO_BIN");

	team("td");
	snprintf(sock, sizeof(sock), "%s/tmux.sock", cl.tmp);
	/* each pane runs its demo, then says how it ended and stays */
	snprintf(args, sizeof(args),
		 "new-session -d -s d -x 120 -y 24 \"WEFT_TOKEN='%s' '%s' "
		 "--space td --store '%s/da.db' --fanout-urls '%s'; "
		 "echo exit=\\$?; sleep 600\"",
		 alice, demo, cl.tmp, cl.fa.url);
	cr_assert(eq(int, tmux(out, sizeof(out), args), 0), "%s", out);
	snprintf(args, sizeof(args),
		 "split-window -v -t d \"WEFT_TOKEN='%s' '%s' --space td "
		 "--store '%s/db.db' --fanout-urls '%s'; echo exit=\\$?; "
		 "sleep 600\"",
		 bob, demo, cl.tmp, cl.fb.url);
	cr_assert(eq(int, tmux(out, sizeof(out), args), 0), "%s", out);
	cr_assert(screen_has("d:0.0", "[live]", screen, sizeof(screen)), "%s",
		  screen);
	cr_assert(screen_has("d:0.1", "[live]", screen, sizeof(screen)), "%s",
		  screen);

	/* alice files an issue: bob's window shows it */
	keys("d:0.0", "n");
	cr_assert(
		screen_has("d:0.0", "new issue title", screen, sizeof(screen)),
		"%s", screen);
	keys("d:0.0", "'Fix the login bug' Enter");
	cr_assert(screen_has("d:0.1", "Fix the login bug", screen,
			     sizeof(screen)),
		  "%s", screen);
	line_has(screen, "Fix the login bug", "alice-");
	line_has(screen, "Fix the login bug", " todo ");

	/* bob goes offline and moves it on; alice assigns it meanwhile */
	keys("d:0.1", "o");
	cr_assert(screen_has("d:0.1", "[offline (by you)]", screen,
			     sizeof(screen)),
		  "%s", screen);
	keys("d:0.1", "s");
	cr_assert(screen_has("d:0.1", "1 pending", screen, sizeof(screen)),
		  "%s", screen);
	/* the header and the row are drawn by one refresh, but tmux may
	 * show the screen between its writes: wait for the row too */
	cr_assert(screen_has("d:0.1", "in_progress", screen, sizeof(screen)),
		  "%s", screen);
	keys("d:0.0", "a");
	keys("d:0.0", "alice Enter");
	cr_assert(screen_has("d:0.0", "todo         0   alice", screen,
			     sizeof(screen)),
		  "%s", screen);
	/* bob comes back: both windows converge on both edits */
	keys("d:0.1", "o");
	cr_assert(screen_has("d:0.1", "in_progress  0   alice", screen,
			     sizeof(screen)),
		  "%s", screen);
	cr_assert(screen_has("d:0.0", "in_progress  0   alice", screen,
			     sizeof(screen)),
		  "%s", screen);
	cr_assert(screen_has("d:0.1", "0 pending", screen, sizeof(screen)),
		  "%s", screen);
	/* q quits cleanly (under ASan: no leak, no error) */
	keys("d:0.0", "q");
	keys("d:0.1", "q");
	cr_assert(screen_has("d:0.0", "exit=0", screen, sizeof(screen)), "%s",
		  screen);
	cr_assert(screen_has("d:0.1", "exit=0", screen, sizeof(screen)), "%s",
		  screen);
	(void)tmux(out, sizeof(out), "kill-server");
}

Test(cli, bootstrap_draws_a_progress_bar_on_a_terminal)
{
	static char out[OUT_MAX], screen[OUT_MAX];
	char args[4096];

	team("tb");
	for (int i = 0; i < 5; i++)
		expect(0, out, alice, "alice",
		       "put --space tb issues t%d "
		       "'{\"title\":\"t\"}'",
		       i);
	snprintf(sock, sizeof(sock), "%s/tmux.sock", cl.tmp);
	/* on a terminal: a bar with the count of the total, then the
	 * summary, then how it ended */
	snprintf(args, sizeof(args),
		 "new-session -d -s b -x 120 -y 10 \"WEFT_TOKEN='%s' '%s' "
		 "bootstrap --space tb --store '%s/tb.db'; echo exit=\\$?; "
		 "sleep 600\"",
		 bob, getenv("WEFT_TEST_CLI_BIN"), cl.tmp);
	cr_assert(eq(int, tmux(out, sizeof(out), args), 0), "%s", out);
	cr_assert(screen_has("b:0.0", "exit=0", screen, sizeof(screen)), "%s",
		  screen);
	cr_assert(strstr(screen, "tb [##############################] 8/8 "
				 "records") != NULL,
		  "%s", screen);
	cr_assert(strstr(screen, "space tb: 8 records local, live") != NULL,
		  "%s", screen);
	(void)tmux(out, sizeof(out), "kill-server");
}
