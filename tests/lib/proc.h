/*
 * proc.h - run a weft service as a real process for end-to-end tests.
 */
#ifndef WEFT_TEST_PROC_H
#define WEFT_TEST_PROC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

struct proc {
	pid_t pid;
	char url[96];  /* where it listens */
	int http_port; /* /healthz and /metrics */
};

/*
 * proc_http_get - GET path from the service's ops endpoint into out (cap
 * bytes, NUL-terminated body).  Returns the HTTP status, or -1.
 */
int proc_http_get(const struct proc *p, const char *path, char *out,
		  size_t cap);

/* proc_free_port - a loopback TCP port that was free a moment ago. */
int proc_free_port(void);

/*
 * proc_start_write - start weft-write ($WEFT_WRITE_BIN) against the
 * harness's Postgres with the test secret, listening on a free port;
 * returns once it accepts connections (fails the test otherwise).
 * extra: more NULL-terminated arguments, or NULL.
 */
void proc_start_write(struct proc *p, const char *const *extra);

/* proc_start_write_pg - the same against another Postgres. */
void proc_start_write_pg(struct proc *p, const char *pg_url,
			 const char *const *extra);

/*
 * proc_start_write_on - the same, listening on scheme://127.0.0.1:PORT
 * path (scheme tcp, tls+tcp, ws or wss; path "" or "/weft" for ws);
 * for TLS, the readiness check verifies the certificate with ca_file.
 */
void proc_start_write_on(struct proc *p, const char *scheme, const char *path,
			 const char *ca_file, const char *const *extra);

/* proc_stop - SIGTERM, wait; fails the test if it does not exit 0. */
void proc_stop(struct proc *p);

/*
 * proc_stack_up - a private Postgres and Redis (deploy/local/stack, path
 * in $WEFT_STACK_SCRIPT) in a new scratch directory, for tests that must
 * not disturb the shared ones.  dir[64] receives its path, url[256] its
 * Postgres URL.  proc_stack(dir, "down"|"up") stops and restarts it;
 * proc_stack_destroy stops it and removes the directory.  The directory is
 * /tmp/weft-test-stack-<runner pid>-XXXXXX: a stack a failed .init leaves
 * (criterion runs no .fini then) is stopped by the runner's POST_ALL hook.
 */
void proc_stack_up(char *dir, char *url);
void proc_stack(const char *dir, const char *verb);
void proc_stack_destroy(const char *dir);

/*
 * proc_start_svc - run argv[0] (NULL-terminated argv) with an added
 * --http on a free port; returns once /healthz answers at all.
 */
void proc_start_svc(struct proc *p, const char *const *argv);

/*
 * proc_start_relay - weft-relay (WEFT_TEST_RELAY_BIN) on pg_url and
 * redis_url, with extra flags (NULL-terminated, may be NULL); returns once
 * /healthz says 200 (the slot exists: every later commit is relayed).
 */
void proc_start_relay(struct proc *p, const char *pg_url, const char *redis_url,
		      const char *const *extra);

/*
 * proc_start_fanout - weft-fanout (WEFT_TEST_FANOUT_BIN) named node on a
 * free port (p->url), verifying PROC_SECRET tokens, heartbeat 1 s; extra
 * is one more flag or NULL (default --idle-timeout=30s).  Returns once
 * /healthz says 200 (it reads the stream).
 */
void proc_start_fanout(struct proc *p, const char *node, const char *pg_url,
		       const char *redis_url, const char *extra);

/* proc_kill9 - SIGKILL and reap; no check of the status. */
void proc_kill9(struct proc *p);

/*
 * proc_stack_restart - stop one server of a private stack by its pid file
 * (relative to dir) with sig, wait until it is gone, then `stack up`
 * starts it again.  SIGINT for Postgres (a fast shutdown: a smart one
 * waits for every client to leave), SIGTERM for Redis.
 */
void proc_stack_restart(const char *dir, const char *pidfile, int sig);

/* proc_stack_env - KEY's value from a private stack's env file. */
void proc_stack_env(const char *dir, const char *key, char *out, size_t cap);

/*
 * proc_cluster - the whole stack as processes, for end-to-end tests of
 * clients: a private Postgres and Redis (proc_stack_up), one weft-relay,
 * weft-write with the demo schema ($WEFT_DEMO_SCHEMA), two weft-fanout
 * nodes, and a scratch directory for the clients' files.
 */
struct proc_cluster {
	char dir[64];	     /* the private stack */
	char pg_url[256];    /* its Postgres */
	char redis_url[128]; /* its Redis */
	char tmp[128];	     /* scratch for clients: <dir>/<name> */
	struct proc relay, wr, fa, fb;
};

/* proc_cluster_up - start it all; relay_extra: more weft-relay flags
 * (NULL-terminated) or NULL.  proc_cluster_down - kill it all (SIGKILL:
 * the tests check state, not shutdown) and remove both directories. */
void proc_cluster_up(struct proc_cluster *c, const char *name,
		     const char *const *relay_extra);
void proc_cluster_down(struct proc_cluster *c);

/*
 * proc_pg_value - the first column of the first row of sql (a query) on
 * pg_url into out ("" when there is no row); fails the test on an error.
 */
void proc_pg_value(const char *pg_url, const char *sql, char *out, size_t cap);

/* proc_metric - a metric's value from /metrics (first sample), or -1. */
int64_t proc_metric(const struct proc *p, const char *name);

/* PROC_SECRET - the HS256 secret test services verify tokens with. */
#define PROC_SECRET "weft-test-secret-0123456789abcdef0123"

#endif
