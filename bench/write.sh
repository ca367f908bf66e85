#!/usr/bin/env bash
# bench/write.sh - weft-write throughput and ack latency, beside the raw
# Postgres equivalent measured in the same run on the same database.
#
#   bench/write.sh [BUILD_DIR] [SECONDS]     (defaults: build-rel, 10)
#
# 1. starts its own local stack (deploy/local/stack, scratch dir) and seeds
#    100 spaces, 100k records, and 256 users who write in every space (one
#    per connection).  weft-write runs with --user-rate at its highest: the
#    limit per user is checked on every transaction, as in production, but
#    never paces the one-connection run, which is one user at full speed.
#    Only Postgres and Redis run: the relays
#    and fanouts would decode and push every outbox row on the same two
#    cores, a cost that is the same per row for pgbench and weft-write and
#    is measured by bench/relay.sh and bench/e2e.sh.  WRITE_BENCH_STACK=full
#    starts them too;
# 2. raw limit: pgbench, one transaction per write that bumps the record's
#    version and inserts the outbox row (one statement, prepared), at 1, 16
#    and 64 clients, synchronous_commit=on, with Postgres' CPU per write;
#    then weft-write's SQL alone: pgbench calling weft_apply_fast() with
#    groups of 64 writes, as weft-write's two workers do (see sql_alone());
# 3. weft-write: write_bench with 1, 16, 64 and 256 clients, each sending
#    one `set` per transaction and waiting for its ack (TPS, p50/p99 ack);
# 4. prints both and the ratio to the best pgbench figure, and for each
#    weft-write run the CPU time per acked transaction of Postgres (the
#    postmaster and its children), weft-write and the load generator, from
#    /proc/PID/stat: all three share this machine's cores.  The summary
#    sets Postgres' CPU per write under pgbench against weft-write's (the
#    ratio weft-write would reach if it kept Postgres as busy as pgbench
#    does) and weft-write's TPS against its SQL alone (how much of what
#    Postgres can do with that SQL weft-write gets);
# 5. the latency target's load: an open load (transactions due at a fixed
#    rate, whatever comes back, latency counted from when each was due) at
#    80% of weft-write's best TPS above, over 256 connections.
# Steps 2-5 run twice, once for each way of sharing the machine's CPUs
# (WRITE_BENCH_CPUS=shared or split runs only one):
#  - shared: every process may run on every CPU, as on a laptop.  The
#    ratio then also charges weft-write and its load generator's CPU to
#    the database's cores, where pgbench's client uses little;
#  - split: Postgres (the postmaster and every child, by taskset) on the
#    first half of the CPUs, and the load (pgbench, or weft-write and
#    write_bench) on the other half, as when the database has a machine
#    of its own.  Both sides of the ratio get the same database CPUs, so
#    it says how many more writes the same database takes through
#    weft-write.
# WRITE_BENCH_TRACE=FILE passes through to write_bench, which writes a line
# per ack ("sent_ms latency_us"); each run overwrites it, so it ends up
# holding the open load.
# Build first:  cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release &&
#               cmake --build build-rel
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
BUILD=${1:-$REPO/build-rel}
SECS=${2:-10}
SECRET=bench-secret-0123456789abcdef0123456789
DIR=$(mktemp -d /tmp/weft-bench-write.XXXXXX)
chmod 755 "$DIR"
WPID=
cleanup() {
	[[ -n $WPID ]] && kill "$WPID" 2>/dev/null && wait "$WPID" 2>/dev/null || true
	"$REPO/deploy/local/stack" down --dir "$DIR" >/dev/null 2>&1 || true
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM # so that EXIT cleans up

for b in "$BUILD/services/write/weft-write" "$BUILD/bench/write_bench"; do
	[[ -x $b ]] || { echo "write.sh: build $b first" >&2; exit 1; }
done
if [[ ${WRITE_BENCH_STACK:-} != full ]]; then
	export WEFT_WRITE_BIN=none WEFT_RELAY_BIN=none WEFT_FANOUT_BIN=none
fi
"$REPO/deploy/local/stack" up --dir "$DIR" --ports auto >/dev/null
set -a
# shellcheck disable=SC1091
. "$DIR/env"
set +a
PGBIN=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
[[ -x $PGBIN/pgbench ]] || PGBIN=/usr/lib/postgresql/15/bin
seed_write_bench "$WEFT_PG_URL" 256
# sql_alone()'s clients: 256 sets of 64 (alone-SET-K, user bench-K) past
# their first transaction; the sequence numbers its groups, and group G is
# set G % 256's next transaction, mid 2 + G / 256
psql -X -q -v ON_ERROR_STOP=1 -d "$WEFT_PG_URL" <<'SQL'
CREATE SEQUENCE weft_bench_alone MINVALUE 0 START 0;
INSERT INTO weft_clients (client_id, user_id, last_mid)
	SELECT 'alone-' || s || '-' || k, 'bench-' || k, 1
	FROM generate_series(0, 255) s, generate_series(0, 63) k;
SQL
ALONE_MIDS="SELECT sum(last_mid) FROM weft_clients WHERE client_id LIKE 'alone-%'"
cat >"$DIR/alone.sql" <<'SQL'
SELECT nextval('weft_bench_alone') AS g \gset
\set set :g % 256
\set mid 2 + :g / 256
SELECT count(*) FROM weft_apply_fast(ARRAY(SELECT 'alone-' || :set || '-' || k FROM generate_series(0, 63) k), ARRAY(SELECT 'bench-' || k FROM generate_series(0, 63) k), array_fill(:mid::bigint, ARRAY[64]), array_fill('items'::text, ARRAY[64]), ARRAY(SELECT 'r' || (1 + floor(random() * 100000))::int FROM generate_series(0, 63) k), array_fill(3::smallint, ARRAY[64]), array_fill('n'::text, ARRAY[64]), ARRAY(SELECT to_jsonb(k) FROM generate_series(0, 63) k), 262144, 256);
SQL
cat >"$DIR/write.sql" <<'SQL'
\set id random(1, 100000)
\set v random(1, 1000000)
WITH u AS (UPDATE weft_records SET data = jsonb_set(data, '{n}', to_jsonb(:v::int)), version = version + 1, updated_at = now() WHERE tbl = 'items' AND id = 'r' || :id::text RETURNING tbl, id, space, version, data) INSERT INTO weft_outbox (tbl, id, space, version, op, deleted, data, client_id, mid, user_id) SELECT tbl, id, space, version, 3, false, data, 'pgbench', 0, 'bench' FROM u;
SQL

echo "bench/write: ${SECS}s per run, Postgres $(psql -X -At -d "$WEFT_PG_URL" -c 'SHOW server_version'), synchronous_commit=$(psql -X -At -d "$WEFT_PG_URL" -c 'SHOW synchronous_commit')"
echo "relays and fanouts: $([[ ${WRITE_BENCH_STACK:-} == full ]] && echo running || echo 'not started (WRITE_BENCH_STACK=full starts them)')"

# pg_postmaster: the postmaster's pid; pg_kids: its children's
pg_postmaster() { head -n 1 "$DIR/pg/data/postmaster.pid"; }
pg_kids() { ps -o pid= --ppid "$(pg_postmaster)"; }
# pg_ticks [CHILDREN]: CPU of Postgres so far, in clock ticks: the
# postmaster's own and that of the children it has reaped (a pgbench run's
# backends exit after it), plus the live children's.  With CHILDREN, it
# first waits (up to 5 s) until no more than that many children are left:
# a backend's time reaches its parent only once it is reaped
pg_ticks() {
	local i
	for ((i = 0; i < 100; i++)); do
		(($(pg_kids | wc -l) <= ${1:-1000})) && break
		sleep 0.05
	done
	# shellcheck disable=SC2046 # a list of pids
	echo $(($(awk '{print $14 + $15 + $16 + $17}' \
		"/proc/$(pg_postmaster)/stat") + $(cpu_ticks $(pg_kids))))
}
# cpu_ticks PID...: utime + stime of those processes, in clock ticks
cpu_ticks() {
	local t=0 p v
	for p in "$@"; do
		# a process may exit between listing and reading: count it 0
		v=$(awk '{print $14 + $15}' "/proc/$p/stat" 2>/dev/null) || v=0
		t=$((t + ${v:-0}))
	done
	echo "$t"
}
# pg_cpus LIST: Postgres' processes (the postmaster and its children:
# backends, WAL writer, ...), every thread, on those CPUs; the backends it
# forks later inherit the postmaster's
pg_cpus() {
	local p
	for p in $(pg_postmaster) $(pg_kids); do
		taskset -a -p -c "$1" "$p" >/dev/null 2>&1 || true
	done
	[[ $(awk '/^Cpus_allowed_list/ {print $2}' \
		"/proc/$(pg_postmaster)/status") == "$1" ]] ||
		echo "write.sh: could not move Postgres to CPU $1" \
			"(the layout below is not what it says)" >&2
}
HZ=$(getconf CLK_TCK)
NCPU=$(nproc --all)
# cpus A B: CPUs A to B as /proc/PID/status lists them
cpus() { if (($1 == $2)); then echo "$1"; else echo "$1-$2"; fi; }
ALL=$(cpus 0 $((NCPU - 1)))

# per_txn TICKS N: microseconds of CPU per transaction
per_txn() {
	awk -v t="$1" -v n="$2" -v hz="$HZ" \
		'BEGIN {printf "%.0f", n ? t * 1e6 / hz / n : 0}'
}

# sql_alone PIN...: what Postgres does with weft-write's SQL alone.  pgbench
# calls weft_apply_fast(), the statement weft-write's workers send, with
# groups of 64 transactions of one `set`, over 2 connections (the defaults
# of --batch-max and --pg-workers), with no weft-write in between.  Its
# arrays are built in SQL, about 4 us of Postgres CPU a transaction more
# than weft-write's.  Sets alone_tps; prints one line
sql_alone() {
	local pg0 pg1 m0 m1 n kids

	m0=$(psql -X -At -d "$WEFT_PG_URL" -c "$ALONE_MIDS")
	kids=$(pg_kids | wc -l)
	pg0=$(pg_ticks)
	"$@" "$PGBIN/pgbench" -n -M prepared -c 2 -j 2 -T "$SECS" \
		-f "$DIR/alone.sql" "$WEFT_PG_URL" >"$DIR/pgbench.out" \
		2>"$DIR/pgbench.err" || true
	pg1=$(pg_ticks "$kids")
	m1=$(psql -X -At -d "$WEFT_PG_URL" -c "$ALONE_MIDS")
	n=$((m1 - m0)) # transactions applied: each moved its client on
	((n > 0)) || { cat "$DIR/pgbench.err" >&2; exit 1; }
	alone_tps=$((n / SECS))
	alone_us=$(per_txn $((pg1 - pg0)) "$n")
	printf '  sql      weft_apply_fast() alone %8s tps   cpu pg %4s  (groups of 64, 2 connections)\n' \
		"$alone_tps" "$alone_us"
}

# run_layout NAME DB_CPUS LOAD_CPUS: pgbench, then weft-write closed and
# open, with Postgres on DB_CPUS and the load (and weft-write) on
# LOAD_CPUS; sets SUMMARY
run_layout() {
	local name=$1 c tps best=0 best_us=0 peak=0 peak_us=0 rate n acked
	local p50 p99 errs b us kids alone_tps alone_us
	local pg0 pg1 w0 w1 BPID args owner
	local -a PIN=(taskset -c "$3")

	pg_cpus "$2"
	# each layout starts from the same tables: no outbox left by the
	# last, dead tuples vacuumed, and no checkpoint owed
	psql -X -q -d "$WEFT_PG_URL" -c 'TRUNCATE weft_outbox' \
		-c 'VACUUM ANALYZE weft_records, weft_outbox, weft_clients'
	# as the cluster's owner: weft may not checkpoint
	owner=$(stat -c %U "$DIR/pg/data")
	psql -X -q -d "${WEFT_PG_URL/\/weft@/\/$owner@}" -c 'CHECKPOINT'
	echo
	echo "== CPUs $name: Postgres on CPU $2, the load on CPU $3"
	echo "raw limit: pgbench, one write transaction (version bump + outbox row)"
	echo "  cpu pg: microseconds of Postgres CPU per transaction"
	for c in 1 16 64; do
		kids=$(pg_kids | wc -l)
		pg0=$(pg_ticks)
		"${PIN[@]}" "$PGBIN/pgbench" -n -M prepared -c "$c" -j 2 \
			-T "$SECS" -f "$DIR/write.sql" "$WEFT_PG_URL" \
			>"$DIR/pgbench.out" 2>"$DIR/pgbench.err" || true
		pg1=$(pg_ticks "$kids")
		tps=$(awk '/^tps/ {printf "%d", $3}' "$DIR/pgbench.out")
		n=$(awk '/actually processed/ {split($NF, a, "/"); print a[1]}' \
			"$DIR/pgbench.out")
		[[ -n $tps && -n $n ]] || { cat "$DIR/pgbench.err" >&2; exit 1; }
		us=$(per_txn $((pg1 - pg0)) "$n")
		printf '  pgbench  clients %-4s %8s tps   cpu pg %4s\n' \
			"$c" "$tps" "$us"
		((tps > best)) && best=$tps && best_us=$us
	done
	sql_alone "${PIN[@]}"

	WPORT=$(free_port_pair)
	"${PIN[@]}" "$BUILD/services/write/weft-write" \
		--listen="tcp://127.0.0.1:$WPORT" \
		--http="http://127.0.0.1:$((WPORT + 1))" \
		--jwt-secret="$SECRET" --pg-url="$WEFT_PG_URL" \
		--log-level=warn --user-rate=1000000 \
		${WEFT_BENCH_WRITE_ARGS:-} &
	WPID=$!
	sleep 1
	echo
	echo "weft-write (one set per transaction, each client waits for its ack)"
	echo "  cpu: microseconds of CPU per acked transaction, by process"
	printf '  %-8s %-8s %10s %8s %10s %10s %8s %9s %9s %9s\n' "" \
		clients acked tps "p50 ms" "p99 ms" "x best" "cpu pg" \
		"cpu weft" "cpu load"
	for c in 1 16 64 256 open; do
		args=("$c" "$SECS")
		if [[ $c == open ]]; then
			rate=$((peak * 8 / 10))
			echo
			echo "open load at 80% of weft-write's best ($peak tps):" \
				"$rate transactions/s due over 256 connections"
			args=(256 "$SECS" "$rate")
		fi
		pg0=$(pg_ticks)
		w0=$(cpu_ticks "$WPID")
		"${PIN[@]}" "$BUILD/bench/write_bench" "tcp://127.0.0.1:$WPORT" \
			"$SECRET" "${args[@]}" >"$DIR/bench.out" \
			2>"$DIR/bench.err" &
		BPID=$!
		# the load generator's own ticks, read just before it exits
		b=0
		while kill -0 "$BPID" 2>/dev/null; do
			b=$(cpu_ticks "$BPID")
			sleep 0.2
		done
		wait "$BPID" || true
		pg1=$(pg_ticks)
		w1=$(cpu_ticks "$WPID")
		read -r n acked tps p50 p99 errs <"$DIR/bench.out"
		us=$(per_txn $((pg1 - pg0)) "$acked")
		[[ $c != open ]] && ((tps > peak)) && peak=$tps && peak_us=$us
		[[ $c == open ]] && n="@$rate/s"
		printf '  weft     %-8s %10s %8s %10s %10s %7.2fx %9s %9s %9s%s\n' \
			"$n" "$acked" "$tps" "$p50" "$p99" \
			"$(awk -v a="$tps" -v b="$best" 'BEGIN {print a / b}')" \
			"$us" "$(per_txn $((w1 - w0)) "$acked")" "$(per_txn "$b" "$acked")" \
			"$([[ $errs != 0 ]] && echo "  ($errs errors)")"
	done
	cat "$DIR/bench.err" >&2
	kill "$WPID" 2>/dev/null && wait "$WPID" 2>/dev/null || true
	WPID=
	SUMMARY+=$(printf '  %-7s best pgbench %6s tps, weft-write %6s tps = %5.2fx (target >= 3x); at 80%%: p99 %s ms (target <= 20)' \
		"$name" "$best" "$peak" \
		"$(awk -v a="$peak" -v b="$best" 'BEGIN {print a / b}')" "$p99")$'\n'
	SUMMARY+=$(printf '          Postgres CPU per write: pgbench %s us, weft-write %s us (%.2fx less); weft-write at %.0f%% of its SQL alone (%s tps)' \
		"$best_us" "$peak_us" \
		"$(awk -v a="$best_us" -v b="$peak_us" 'BEGIN {print b ? a / b : 0}')" \
		"$(awk -v a="$peak" -v b="$alone_tps" 'BEGIN {print b ? 100 * a / b : 0}')" \
		"$alone_tps")$'\n'
}

SUMMARY=
layouts=${WRITE_BENCH_CPUS:-both}
if ((NCPU < 2)) && [[ $layouts != shared ]]; then
	echo "one CPU: only the shared layout"
	layouts=shared
fi
[[ $layouts == both || $layouts == shared ]] &&
	run_layout shared "$ALL" "$ALL"
[[ $layouts == both || $layouts == split ]] &&
	run_layout split "$(cpus 0 $((NCPU / 2 - 1)))" \
		"$(cpus $((NCPU / 2)) $((NCPU - 1)))"
pg_cpus "$ALL"
echo
echo "summary"
printf '%s' "$SUMMARY"
