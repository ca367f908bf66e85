#!/usr/bin/env bash
# bench/relay.sh - weft-relay: backlog drain rate and commit->XADD lag,
# beside the raw Redis limit measured in the same run.
#
#   bench/relay.sh [BUILD_DIR] [ROWS] [SECONDS]   (build-rel, 200000, 10)
#
# 1. starts its own Postgres + Redis (deploy/local/stack, scratch dir);
# 2. raw limits: redis-benchmark, pipelined XADD (-P 1000) of an entry
#    shaped like the relay's (one 94-byte field), on the same Redis; and
#    the same entries in MULTI/EXEC batches of 1,000 (as the relay sends
#    them) through redis-cli --pipe;
# 3. drain: with the relay stopped, commits ROWS outbox rows (100 per
#    transaction), then starts weft-relay and times it from start until
#    every row is in the stream (changes/s, and the ratio to the raw XADD
#    rate);
# 4. lag: pgbench commits one outbox row per transaction at 5,000/s for
#    SECONDS while the relay runs; the relay's weft_relay_lag_seconds
#    histogram (commit time -> Redis answered, measured on the oldest
#    commit of each pipeline) gives p50/p99 as bucket bounds; and
#    fanout_bench streamlag reads the stream as a fanout node does and
#    times every entry from its commit to its arrival (p50/p99/max);
# 5. the same lag with the writes coming as they do in weft: write_bench
#    sends RATE transactions a second (open load, 64 connections, one
#    `set` each) through weft-write, which group-commits them, so there
#    are fewer, larger commits than pgbench's one row each, and weft-write
#    and its load generator share the cores with the relay.
# Build first: cmake -S . -B build-rel -DCMAKE_BUILD_TYPE=Release &&
#              cmake --build build-rel
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
BUILD=${1:-$REPO/build-rel}
ROWS=${2:-200000}
SECS=${3:-10}
RATE=5000
DIR=$(mktemp -d /tmp/weft-bench-relay.XXXXXX)
chmod 755 "$DIR"
RPID=
WPID=
cleanup() {
	[[ -n $RPID ]] && kill "$RPID" 2>/dev/null && wait "$RPID" 2>/dev/null || true
	[[ -n $WPID ]] && kill "$WPID" 2>/dev/null && wait "$WPID" 2>/dev/null || true
	WEFT_WRITE_BIN=none WEFT_RELAY_BIN=none WEFT_FANOUT_BIN=none \
		"$REPO/deploy/local/stack" down --dir "$DIR" >/dev/null 2>&1 || true
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM # so that EXIT cleans up

RELAY=$BUILD/services/relay/weft-relay
[[ -x $RELAY ]] || { echo "relay.sh: build $RELAY first" >&2; exit 1; }
for b in "$BUILD/services/write/weft-write" "$BUILD/bench/write_bench"; do
	[[ -x $b ]] || { echo "relay.sh: build $b first" >&2; exit 1; }
done
[[ -x $BUILD/bench/fanout_bench ]] ||
	{ echo "relay.sh: build $BUILD/bench/fanout_bench first" >&2; exit 1; }
WEFT_WRITE_BIN=none WEFT_RELAY_BIN=none WEFT_FANOUT_BIN=none \
	"$REPO/deploy/local/stack" up --dir "$DIR" --ports auto >/dev/null
set -a
# shellcheck disable=SC1091
. "$DIR/env"
set +a
PGBIN=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
[[ -x $PGBIN/pgbench ]] || PGBIN=/usr/lib/postgresql/15/bin
HPORT=$(free_port_pair)
rcli() { redis-cli -p "$WEFT_REDIS_PORT" "$@"; }
metric() { # NAME: its value from the relay's /metrics
	curl -s "http://127.0.0.1:$HPORT/metrics" |
		awk -v n="$1" '$1 == n {print $2; exit}'
}
start_relay() {
	"$RELAY" --pg-url="$WEFT_PG_URL" --redis-url="$WEFT_REDIS_URL" \
		--http="http://127.0.0.1:$HPORT" --log-level=warn \
		--outbox-retention=0 &
	RPID=$!
	local until=$((SECONDS + 30))
	until [[ $(curl -s -o /dev/null -w '%{http_code}' \
		"http://127.0.0.1:$HPORT/healthz") == 200 ]]; do
		kill -0 "$RPID" 2>/dev/null || { echo "relay.sh: weft-relay exited" >&2; RPID=; exit 1; }
		((SECONDS < until)) || { echo "relay.sh: weft-relay not healthy after 30 s" >&2; exit 1; }
		sleep 0.05
	done
}
stop_relay() {
	kill "$RPID"
	wait "$RPID" || true
	RPID=
}
now_ms() { date +%s%3N; }

echo "bench/relay: Postgres $(psql -X -At -d "$WEFT_PG_URL" -c 'SHOW server_version'), Redis $(rcli INFO server | awk -F: '/^redis_version/ {print $2}' | tr -d '\r'), appendfsync $(rcli CONFIG GET appendfsync | tail -1)"

# 2. the raw limit
# an entry shaped like the relay's: one field, "e", of 94 bytes (the
# msgpack change of one of the drain's rows, proto/entry.h)
VAL=$(printf 'x%.0s' {1..94})
raw=$(redis-benchmark -p "$WEFT_REDIS_PORT" -n "$ROWS" -P 1000 -c 1 -q \
	XADD bench:raw '*' e "$VAL" | tr '\r' '\n' |
	grep -o '[0-9.]* requests per second' | awk '{print int($1)}')
rcli DEL bench:raw >/dev/null
# the same entries as the relay sends them: MULTI, 1,000 XADDs, EXEC (one
# AOF fsync per EXEC), through redis-cli --pipe
awk -v n="$ROWS" -v val="$VAL" 'function bulk(s) { printf "$%d\r\n%s\r\n", length(s), s }
	BEGIN {
		split("XADD bench:raw * e " val, a, " ")
		for (i = 0; i < n; i++) {
			if (i % 1000 == 0) printf "*1\r\n$5\r\nMULTI\r\n"
			printf "*%d\r\n", length(a)
			for (k = 1; k <= length(a); k++) bulk(a[k])
			if (i % 1000 == 999 || i == n - 1) printf "*1\r\n$4\r\nEXEC\r\n"
		}
	}' >"$DIR/multi.resp"
m0=$(now_ms)
rcli --pipe <"$DIR/multi.resp" >/dev/null
m1=$(now_ms)
raw_multi=$(awk -v n="$ROWS" -v ms=$((m1 - m0)) 'BEGIN {printf "%d", n * 1000 / (ms ? ms : 1)}')
rcli DEL bench:raw >/dev/null
echo
echo "raw limit: redis-benchmark XADD, pipelined 1000: $raw entries/s"
echo "raw limit: XADD in MULTI/EXEC batches of 1000 (redis-cli --pipe, as the relay sends them): $raw_multi entries/s"

# 3. drain a backlog: the slot exists (relay started once), rows
#    committed while it is down
start_relay
stop_relay
psql -X -q -d "$WEFT_PG_URL" <<SQL
DO \$\$
BEGIN
	FOR b IN 0 .. $ROWS / 100 - 1 LOOP
		INSERT INTO weft_outbox (tbl, id, space, version, op, deleted,
					 data, client_id, mid, user_id)
		SELECT 'items', 'r' || (b * 100 + g), 's' || (g % 100), 1, 3,
		       false, jsonb_build_object('n', g, 'title',
						 'item number ' || g),
		       'bench', b * 100 + g, 'alice'
		FROM generate_series(1, 100) g;
		COMMIT;
	END LOOP;
END
\$\$;
SQL
t0=$(now_ms)
start_relay
[[ -n ${WEFT_BENCH_PERF:-} ]] && perf record -F 999 -g -p "$RPID" -o "$WEFT_BENCH_PERF" -- sleep 2 >/dev/null 2>&1 &
drain_until=$((SECONDS + 300))
until [[ $(rcli XLEN weft:changes) -ge $ROWS ]]; do
	kill -0 "$RPID" 2>/dev/null || { echo "relay.sh: weft-relay exited while draining" >&2; RPID=; exit 1; }
	((SECONDS < drain_until)) || { echo "relay.sh: the drain took over 300 s" >&2; exit 1; }
	sleep 0.02
done
t1=$(now_ms)
drain=$(awk -v n="$ROWS" -v ms=$((t1 - t0)) 'BEGIN {printf "%d", n * 1000 / ms}')
echo
echo "drain: $ROWS rows in $((t1 - t0)) ms (relay start to last XADD): $drain changes/s, $(awk -v a="$drain" -v b="$raw" 'BEGIN {printf "%.2f", a / b}')x pipelined XADD, $(awk -v a="$drain" -v b="$raw_multi" 'BEGIN {printf "%.2f", a / b}')x XADD in MULTI batches"

# 4. lag at a steady write rate
cat >"$DIR/insert.sql" <<'SQL'
INSERT INTO weft_outbox (tbl, id, space, version, op, deleted, data, client_id, mid, user_id) VALUES ('items', 'lag', 's1', 1, 3, false, '{"n": 1}', 'bench', 0, 'alice');
SQL
hist0=$(curl -s "http://127.0.0.1:$HPORT/metrics" | grep '^weft_relay_lag_seconds_bucket')
# every entry's lag as a stream reader sees it, beside the histogram
"$BUILD/bench/fanout_bench" streamlag "$WEFT_REDIS_URL" weft:changes \
	$((SECS + 1)) >"$DIR/streamlag" &
LPID=$!
"$PGBIN/pgbench" -n -c 8 -j 2 -R "$RATE" -T "$SECS" -f "$DIR/insert.sql" \
	"$WEFT_PG_URL" >"$DIR/pgbench.out" 2>&1
wait "$LPID" || true
sleep 0.5
hist1=$(curl -s "http://127.0.0.1:$HPORT/metrics" | grep '^weft_relay_lag_seconds_bucket')
tps=$(awk '/^tps/ {printf "%d", $3}' "$DIR/pgbench.out")
# percentiles from the bucket deltas (upper bound of the bucket reached)
read -r p50 p99 n < <(paste <(echo "$hist0") <(echo "$hist1") | awk '
	{ split($1, a, "\""); le[NR] = a[2]; d[NR] = $4 - $2 }
	END {
		for (i = 1; i <= NR; i++) if (le[i] == "+Inf") total = d[i]
		p50 = p99 = "+Inf"
		for (i = 1; i <= NR; i++) {
			if (p50 == "+Inf" && d[i] >= total * 0.50) p50 = le[i] * 1000
			if (p99 == "+Inf" && d[i] >= total * 0.99) p99 = le[i] * 1000
		}
		print p50, p99, total
	}')
echo
echo "lag: pgbench at ${RATE}/s for ${SECS}s (achieved $tps commits/s), $n pipelines:"
echo "  commit -> XADD answered, oldest commit of each pipeline: p50 <= ${p50} ms, p99 <= ${p99} ms (histogram bucket bounds)"
read -r ln lp50 lp99 lmax <"$DIR/streamlag"
echo "  commit -> entry read from the stream, every entry ($ln): p50 ${lp50} ms, p99 ${lp99} ms, max ${lmax} ms"

# 5. the same through weft-write: write_bench's seed (seed_write_bench), 64
#    users, and an open load at RATE
SECRET=bench-secret-0123456789abcdef0123456789
seed_write_bench "$WEFT_PG_URL" 64
WPORT=$(free_port_pair)
"$BUILD/services/write/weft-write" --listen="tcp://127.0.0.1:$WPORT" \
	--http="http://127.0.0.1:$((WPORT + 1))" --jwt-secret="$SECRET" \
	--pg-url="$WEFT_PG_URL" --log-level=warn 2>"$DIR/write.err" &
WPID=$!
sleep 1
"$BUILD/bench/fanout_bench" streamlag "$WEFT_REDIS_URL" weft:changes \
	$((SECS + 1)) >"$DIR/streamlag" &
LPID=$!
"$BUILD/bench/write_bench" "tcp://127.0.0.1:$WPORT" "$SECRET" 64 "$SECS" \
	"$RATE" >"$DIR/write.out" 2>>"$DIR/write.err" || true
wait "$LPID" || true
read -r _ wacked wtps wp50 wp99 werrs <"$DIR/write.out"
commits=$(curl -s "http://127.0.0.1:$((WPORT + 1))/metrics" |
	awk '$1 == "weft_write_commits_total" {print $2; exit}')
echo
echo "lag through weft-write: ${RATE} transactions/s due for ${SECS}s (acked $wacked, $wtps/s, ack p50 $wp50 ms, p99 $wp99 ms, $werrs errors) in $commits Postgres commits:"
read -r ln lp50 lp99 lmax <"$DIR/streamlag"
echo "  commit -> entry read from the stream, every entry ($ln): p50 ${lp50} ms, p99 ${lp99} ms, max ${lmax} ms"
kill "$WPID"
wait "$WPID" || true
WPID=
stop_relay
