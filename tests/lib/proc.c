/*
 * proc.c - start and stop services for end-to-end tests (see proc.h).
 */
#include "tests/lib/proc.h"

#include <arpa/inet.h>
#include <criterion/criterion.h>
#include <criterion/hooks.h>
#include <glob.h>
#include <libpq-fe.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tests/lib/testenv.h"
#include "tests/lib/wclient.h"

int
proc_free_port(void)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t len = sizeof(a);
	int fd = socket(AF_INET, SOCK_STREAM, 0), port;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	cr_assert(fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0);
	getsockname(fd, (struct sockaddr *)&a, &len);
	port = ntohs(a.sin_port);
	close(fd);
	return port;
}

void
proc_start_write(struct proc *p, const char *const *extra)
{
	proc_start_write_pg(p, testenv_get("WEFT_PG_URL"), extra);
}

static void start_write(struct proc *p, const char *pg_url, const char *scheme,
			const char *path, const char *ca_file,
			const char *const *extra);

void
proc_start_write_pg(struct proc *p, const char *pg_url,
		    const char *const *extra)
{
	start_write(p, pg_url, "tcp", "", NULL, extra);
}

void
proc_start_write_on(struct proc *p, const char *scheme, const char *path,
		    const char *ca_file, const char *const *extra)
{
	start_write(p, testenv_get("WEFT_PG_URL"), scheme, path, ca_file,
		    extra);
}

static void
start_write(struct proc *p, const char *pg_url, const char *scheme,
	    const char *path, const char *ca_file, const char *const *extra)
{
	const char *bin = getenv("WEFT_WRITE_BIN");
	char listen[128], http[80];
	const char *argv[32];
	int n = 0;

	cr_assert_not_null(bin, "WEFT_WRITE_BIN is not set (run via ctest)");
	snprintf(p->url, sizeof(p->url), "%s://127.0.0.1:%d%s", scheme,
		 proc_free_port(), path);
	snprintf(listen, sizeof(listen), "--listen=%s", p->url);
	p->http_port = proc_free_port();
	snprintf(http, sizeof(http), "--http=http://127.0.0.1:%d",
		 p->http_port);
	argv[n++] = bin;
	argv[n++] = listen;
	argv[n++] = http;
	argv[n++] = "--pg-workers=2";
	argv[n++] = "--log-level=warn";
	for (; extra && *extra && n < 30; extra++)
		argv[n++] = *extra;
	argv[n] = NULL;
	setenv("WEFT_PG_URL", pg_url, 1);
	setenv("WEFT_JWT_SECRET", PROC_SECRET, 1);
	p->pid = fork();
	cr_assert(p->pid >= 0);
	if (p->pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the test */
		execv(bin, (char *const *)(uintptr_t)argv);
		_exit(127);
	}
	/* up to 15 s: a loaded machine starts ASan builds slowly */
	for (int i = 0; i < 600; i++) {
		struct wclient c;
		int status;

		if (wclient_dial_ca(&c, p->url, ca_file) == 0) {
			wclient_close(&c);
			return;
		}
		wclient_close(&c);
		if (waitpid(p->pid, &status, WNOHANG) == p->pid)
			cr_assert_fail("weft-write exited at start (wait "
				       "status %d); listen %s",
				       status, p->url);
		usleep(25000);
	}
	kill(p->pid, SIGKILL);
	cr_assert_fail("weft-write did not start listening on %s in 15 s",
		       p->url);
}

void
proc_stop(struct proc *p)
{
	int status = 0;

	if (p->pid <= 0)
		return;
	kill(p->pid, SIGTERM);
	for (int i = 0; i < 200; i++) {
		if (waitpid(p->pid, &status, WNOHANG) == p->pid) {
			p->pid = 0;
			cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
				  "weft-write exited with status %d", status);
			return;
		}
		usleep(25000);
	}
	kill(p->pid, SIGKILL);
	waitpid(p->pid, &status, 0);
	p->pid = 0;
	cr_assert_fail("weft-write did not stop within 5 s of SIGTERM");
}

int
proc_http_get(const struct proc *p, const char *path, char *out, size_t cap)
{
	struct sockaddr_in a = { .sin_family = AF_INET };
	char req[256], *body;
	size_t got = 0;
	ssize_t n;
	int fd, status = -1;

	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	a.sin_port = htons((uint16_t)p->http_port);
	fd = socket(AF_INET, SOCK_STREAM, 0);
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	snprintf(req, sizeof(req),
		 "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: "
		 "close\r\n\r\n",
		 path);
	if (write(fd, req, strlen(req)) < 0) {
		close(fd);
		return -1;
	}
	while (got + 1 < cap && (n = read(fd, out + got, cap - 1 - got)) > 0)
		got += (size_t)n;
	out[got] = '\0';
	close(fd);
	if (sscanf(out, "HTTP/1.%*d %d", &status) != 1)
		return -1;
	body = strstr(out, "\r\n\r\n");
	if (body)
		memmove(out, body + 4, strlen(body + 4) + 1);
	return status;
}

static const char *
stack_script(void)
{
	const char *s = getenv("WEFT_STACK_SCRIPT");

	cr_assert_not_null(s, "WEFT_STACK_SCRIPT not set (run via ctest)");
	return s;
}

void
proc_stack(const char *dir, const char *verb)
{
	char cmd[1024];

	/* Postgres and Redis only: tests start the services they need */
	snprintf(cmd, sizeof(cmd),
		 "WEFT_WRITE_BIN=none WEFT_RELAY_BIN=none WEFT_FANOUT_BIN=none "
		 "%s %s --dir %s --ports auto >/dev/null",
		 stack_script(), verb, dir);
	cr_assert(system(cmd) == 0, "stack %s failed", verb);
}

void
proc_stack_up(char *dir, char *url)
{
	char path[128], line[256];
	FILE *f;

	/* named after the runner (the test's parent), whose POST_ALL hook
	 * stops what a failed .init leaves behind (criterion skips .fini) */
	snprintf(dir, 64, "/tmp/weft-test-stack-%ld-XXXXXX", (long)getppid());
	cr_assert_not_null(mkdtemp(dir));
	chmod(dir, 0755); /* Postgres may run as another user */
	proc_stack(dir, "up");
	snprintf(path, sizeof(path), "%s/env", dir);
	f = fopen(path, "r");
	cr_assert_not_null(f);
	url[0] = '\0';
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, "WEFT_PG_URL=", 12) == 0)
			snprintf(url, 256, "%.*s",
				 (int)strcspn(line + 12, "\n"), line + 12);
	fclose(f);
	cr_assert(url[0] != '\0', "no WEFT_PG_URL in %s", path);
}

void
proc_stack_destroy(const char *dir)
{
	char cmd[1024];

	if (!dir[0])
		return;
	snprintf(cmd, sizeof(cmd),
		 "%s down --dir %s >/dev/null 2>&1; rm -rf %s", stack_script(),
		 dir, dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleanup of %s failed\n", dir);
}

void
proc_start_svc(struct proc *p, const char *const *argv)
{
	const char *args[40];
	char http[80], body[256];
	int n = 0, status;

	for (; n < 38 && argv[n]; n++)
		args[n] = argv[n];
	args[n + 1] = NULL;
	/* a free port may be taken before the service binds it: a service
	 * that exits at once gets another port, twice at most */
	for (int attempt = 0; attempt < 3; attempt++) {
		p->http_port = proc_free_port();
		p->url[0] = '\0';
		snprintf(http, sizeof(http), "--http=http://127.0.0.1:%d",
			 p->http_port);
		args[n] = http;
		p->pid = fork();
		cr_assert(p->pid >= 0);
		if (p->pid == 0) {
			/* never outlive the test (a timeout kills it hard) */
			prctl(PR_SET_PDEATHSIG, SIGKILL);
			execv(args[0], (char *const *)(uintptr_t)args);
			_exit(127);
		}
		/* up to 15 s: a loaded machine starts ASan builds slowly */
		for (int i = 0; i < 600; i++) {
			if (proc_http_get(p, "/healthz", body, sizeof(body)) >
			    0)
				return;
			if (waitpid(p->pid, &status, WNOHANG) == p->pid)
				break;
			usleep(25000);
		}
		if (waitpid(p->pid, &status, WNOHANG) == 0) {
			kill(p->pid, SIGKILL);
			waitpid(p->pid, &status, 0);
			cr_assert_fail("%s did not answer /healthz in 15 s",
				       args[0]);
		}
	}
	cr_assert_fail("%s exited at start three times (last status %d)",
		       args[0], status);
}

/* until /healthz says 200, or fail the test */
static void
wait_healthy(const struct proc *p, const char *what)
{
	for (int i = 0; i < 200; i++) {
		char body[128];

		if (proc_http_get(p, "/healthz", body, sizeof(body)) == 200)
			return;
		usleep(25000);
	}
	cr_assert_fail("%s never became healthy", what);
}

void
proc_start_relay(struct proc *p, const char *pg_url, const char *redis_url,
		 const char *const *extra)
{
	char pg[300], rd[160];
	const char *argv[16] = { getenv("WEFT_TEST_RELAY_BIN"), pg, rd,
				 "--log-level=warn" };
	int n = 4;

	cr_assert_not_null(argv[0], "WEFT_TEST_RELAY_BIN not set");
	snprintf(pg, sizeof(pg), "--pg-url=%s", pg_url);
	snprintf(rd, sizeof(rd), "--redis-url=%s", redis_url);
	for (; extra && *extra && n < 15; extra++)
		argv[n++] = *extra;
	argv[n] = NULL;
	proc_start_svc(p, argv);
	wait_healthy(p, "weft-relay");
}

void
proc_start_fanout(struct proc *p, const char *node, const char *pg_url,
		  const char *redis_url, const char *extra)
{
	char listen[128], pg[300], rd[160], nd[64], url[96];
	const char *argv[] = { getenv("WEFT_TEST_FANOUT_BIN"),
			       listen,
			       pg,
			       rd,
			       nd,
			       "--jwt-secret=" PROC_SECRET,
			       "--log-level=warn",
			       "--heartbeat=1s",
			       extra ? extra : "--idle-timeout=30s",
			       NULL };

	cr_assert_not_null(argv[0], "WEFT_TEST_FANOUT_BIN not set");
	snprintf(url, sizeof(url), "tcp://127.0.0.1:%d", proc_free_port());
	snprintf(listen, sizeof(listen), "--listen=%s", url);
	snprintf(pg, sizeof(pg), "--pg-url=%s", pg_url);
	snprintf(rd, sizeof(rd), "--redis-url=%s", redis_url);
	snprintf(nd, sizeof(nd), "--node=%s", node);
	proc_start_svc(p, argv);
	snprintf(p->url, sizeof(p->url), "%s", url);
	wait_healthy(p, node);
}

void
proc_kill9(struct proc *p)
{
	int status;

	if (p->pid <= 0)
		return;
	kill(p->pid, SIGKILL);
	waitpid(p->pid, &status, 0);
	p->pid = 0;
}

void
proc_stack_env(const char *dir, const char *key, char *out, size_t cap)
{
	char path[128], line[512];
	size_t kl = strlen(key);
	FILE *f;

	snprintf(path, sizeof(path), "%s/env", dir);
	f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	out[0] = '\0';
	while (fgets(line, sizeof(line), f))
		if (strncmp(line, key, kl) == 0 && line[kl] == '=')
			snprintf(out, cap, "%.*s",
				 (int)strcspn(line + kl + 1, "\n"),
				 line + kl + 1);
	fclose(f);
	cr_assert(out[0] != '\0', "no %s in %s", key, path);
}

int64_t
proc_metric(const struct proc *p, const char *name)
{
	static char body[65536];
	char key[160];
	const char *at;

	if (proc_http_get(p, "/metrics", body, sizeof(body)) != 200)
		return -1;
	snprintf(key, sizeof(key), "\n%s ", name);
	at = strstr(body, key);
	return at ? (int64_t)strtod(at + strlen(key), NULL) : -1;
}

void
proc_stack_restart(const char *dir, const char *pidfile, int sig)
{
	char path[160];
	FILE *f;
	long pid = 0;

	snprintf(path, sizeof(path), "%s/%s", dir, pidfile);
	f = fopen(path, "r");
	cr_assert_not_null(f, "%s", path);
	cr_assert(fscanf(f, "%ld", &pid) == 1 && pid > 1, "pid in %s", path);
	fclose(f);
	kill((pid_t)pid, sig);
	for (int i = 0; i < 100 && kill((pid_t)pid, 0) == 0; i++)
		usleep(100000);
	cr_assert(kill((pid_t)pid, 0) != 0, "%s stopped", pidfile);
	proc_stack(dir, "up");
}

void
proc_pg_value(const char *pg_url, const char *sql, char *out, size_t cap)
{
	PGconn *pg = PQconnectdb(pg_url);
	PGresult *r;

	cr_assert(PQstatus(pg) == CONNECTION_OK, "%s", PQerrorMessage(pg));
	r = PQexec(pg, sql);
	cr_assert(PQresultStatus(r) == PGRES_TUPLES_OK, "%s: %s", sql,
		  PQerrorMessage(pg));
	snprintf(out, cap, "%s", PQntuples(r) ? PQgetvalue(r, 0, 0) : "");
	PQclear(r);
	PQfinish(pg);
}

void
proc_cluster_up(struct proc_cluster *c, const char *name,
		const char *const *relay_extra)
{
	char schema[512];
	const char *wextra[] = { schema, NULL };

	memset(c, 0, sizeof(*c));
	proc_stack_up(c->dir, c->pg_url);
	/* inside the stack's directory, so it goes with it */
	snprintf(c->tmp, sizeof(c->tmp), "%s/%s", c->dir, name);
	cr_assert(mkdir(c->tmp, 0755) == 0, "mkdir %s", c->tmp);
	proc_stack_env(c->dir, "WEFT_REDIS_URL", c->redis_url,
		       sizeof(c->redis_url));
	snprintf(schema, sizeof(schema), "--schema=%s",
		 getenv("WEFT_DEMO_SCHEMA"));
	proc_start_relay(&c->relay, c->pg_url, c->redis_url, relay_extra);
	proc_start_write_pg(&c->wr, c->pg_url, wextra);
	proc_start_fanout(&c->fa, "fanout-a", c->pg_url, c->redis_url, NULL);
	proc_start_fanout(&c->fb, "fanout-b", c->pg_url, c->redis_url, NULL);
}

void
proc_cluster_down(struct proc_cluster *c)
{
	proc_kill9(&c->fa);
	proc_kill9(&c->fb);
	proc_kill9(&c->relay);
	proc_kill9(&c->wr);
	proc_stack_destroy(c->dir);
	c->dir[0] = '\0';
	c->tmp[0] = '\0';
}

/*
 * After the whole run, in the runner: a stack whose test died in its
 * .init (criterion runs no .fini then) is still up.  Stop every stack of
 * this runner's tests that is left, by its own script (pidfiles only).
 */
ReportHook(POST_ALL)(struct criterion_global_stats *stats)
{
	const char *script = getenv("WEFT_STACK_SCRIPT");
	char pattern[64], cmd[1024];
	glob_t g;

	(void)stats;
	/* not stack_script(): an assertion here, in the runner, would wait
	 * forever for a test process to report it */
	if (!script) {
		fprintf(stderr, "cleanup: WEFT_STACK_SCRIPT not set (run via "
				"ctest); stacks of failed setups are left\n");
		return;
	}
	snprintf(pattern, sizeof(pattern), "/tmp/weft-test-stack-%ld-*",
		 (long)getpid());
	if (glob(pattern, GLOB_NOSORT, NULL, &g) != 0)
		return;
	for (size_t i = 0; i < g.gl_pathc; i++) {
		fprintf(stderr, "cleanup: %s was left by a failed setup\n",
			g.gl_pathv[i]);
		snprintf(cmd, sizeof(cmd),
			 "%s down --dir '%s' >/dev/null 2>&1; rm -rf '%s'",
			 script, g.gl_pathv[i], g.gl_pathv[i]);
		(void)!system(cmd);
	}
	globfree(&g);
}
