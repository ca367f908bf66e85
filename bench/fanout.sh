#!/usr/bin/env bash
# bench/fanout.sh - weft-fanout delivery rate beside a raw socket blast
# measured in the same run, and its memory per idle session.
#
#   bench/fanout.sh [BUILD_DIR] [DELIVERIES]     (build-rel, 2000000)
#   FANOUT_CONFS="SESSIONS:BATCH ..." picks the runs (default
#   "1000:1 15000:1 1000:100 15000:100")
#
# 1. starts its own Postgres + Redis (scratch dir) and one weft-fanout;
#    100 spaces b0..b99, user "bench" a member of each;
# 2. for 1,000 and 15,000 sessions (session k on space/b<k % 100), spread
#    over generator processes of at most 7,500 sessions (every process is
#    capped at 20,000 descriptors):
#    - RSS per idle session: the node's VmRSS growth / sessions (a
#      generator connects all its sessions before it reads, so the node
#      runs with a long --idle-timeout);
#    - deliveries: rounds of BATCH XADDs per space (each change reaches 1%
#      of the sessions), straight into the stream with redis-cli --pipe,
#      until DELIVERIES changes have been pushed; deliveries/s (first to
#      last push) and per fanout CPU-second.  BATCH 1: one update per
#      session per round (the worst case); BATCH 100: 100 consecutive
#      entries of one space (different records), so sessions receive
#      batches;
#    - raw limit: fanout_bench blast, one thread writing BATCH 64-byte
#      messages in one send per plain loopback socket per round to as many
#      sockets, sharded the same way;
# 3. latency at steady delivery rates: FANOUT_LAT="SESSIONS:DELIVERIES/s
#    ..." (default "1000:10000 1000:50000 15000:50000"), for LAT_SECONDS
#    (default 10) each: fanout_bench pace XADDs entries stamped with their
#    send time at the rate that makes that many deliveries/s (each entry
#    reaches SESSIONS/100 sessions), and every session records each
#    change's latency from its XADD to its arrival; p50/p99/p99.9/max over
#    all deliveries.
#
#   LAT_KEEP=DIR keeps each generator's latencies ("latency_us sent_ms" per
#   delivery, sent_ms within the hour) as DIR/lat-SESSIONS-RATE-gN, to see
#   when the slow ones were sent; FANOUT_BIN runs another weft-fanout (A/B).
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
# shellcheck source=bench/lib.sh
. "$REPO/bench/lib.sh"
BUILD=$(cd -- "${1:-$REPO/build-rel}" && pwd -P)
DELIVERIES=${2:-2000000}
SHARD=7500
DIR=$(mktemp -d /tmp/weft-bench-fanout.XXXXXX)
chmod 755 "$DIR"
FPID=
SECRET=bench-secret-0123456789abcdef0123456789
cleanup() {
	[[ -n $FPID ]] && kill "$FPID" 2>/dev/null && wait "$FPID" 2>/dev/null || true
	WEFT_WRITE_BIN=none WEFT_RELAY_BIN=none WEFT_FANOUT_BIN=none \
		"$REPO/deploy/local/stack" down --dir "$DIR" >/dev/null 2>&1 || true
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM # so that EXIT cleans up

GEN=$BUILD/bench/fanout_bench
FANOUT=${FANOUT_BIN:-$BUILD/services/fanout/weft-fanout}
for b in "$GEN" "$FANOUT"; do
	[[ -x $b ]] || { echo "fanout.sh: build $b first" >&2; exit 1; }
done
WEFT_WRITE_BIN=none WEFT_RELAY_BIN=none WEFT_FANOUT_BIN=none \
	"$REPO/deploy/local/stack" up --dir "$DIR" --ports auto >/dev/null
set -a
# shellcheck disable=SC1091
. "$DIR/env"
set +a
psql -X -q -d "$WEFT_PG_URL" <<'SQL'
INSERT INTO weft_spaces (id, created_by)
	SELECT 'b' || g, 'bench' FROM generate_series(0, 99) g;
INSERT INTO weft_members (space, user_id, role)
	SELECT 'b' || g, 'bench', 'reader' FROM generate_series(0, 99) g;
SQL
PORT=$(free_port_pair)
"$FANOUT" --listen="tcp://127.0.0.1:$PORT" --http="http://127.0.0.1:$((PORT + 1))" \
	--pg-url="$WEFT_PG_URL" --redis-url="$WEFT_REDIS_URL" \
	--jwt-secret="$SECRET" --max-sessions=16000 --queue-max=1000000 \
	--idle-timeout=10m \
	--log-level=warn &
FPID=$!
until [[ $(curl -s -o /dev/null -w '%{http_code}' \
	"http://127.0.0.1:$((PORT + 1))/healthz") == 200 ]]; do
	kill -0 "$FPID" 2>/dev/null || { echo "fanout.sh: weft-fanout exited" >&2; exit 1; }
	sleep 0.05
done
rss() { awk '/^VmRSS/ {print $2}' "/proc/$FPID/status"; }
ticks() { awk '{print $14 + $15}' "/proc/$FPID/stat"; }
HZ=$(getconf CLK_TCK)

# start_gens N EXPECT_EACH [LATPREFIX]: $gens generators of N / $gens
# sessions each (gens, per, pids and gfd<g> set here), each expecting
# EXPECT_EACH changes (and writing latencies to LATPREFIX<g>); returns once
# every session is subscribed
start_gens() {
	local n=$1 expect=$2 lat=${3:-} g fd line
	gens=$(((n + SHARD - 1) / SHARD))
	per=$((n / gens))
	pids=()
	for ((g = 0; g < gens; g++)); do
		mkfifo "$DIR/gen$g"
		"$GEN" sessions "tcp://127.0.0.1:$PORT" "$SECRET" "$per" 100 \
			"$expect" ${lat:+"$lat$g"} >"$DIR/gen$g" &
		pids+=($!)
		exec {fd}<"$DIR/gen$g"
		eval "gfd$g=$fd"
	done
	for ((g = 0; g < gens; g++)); do
		eval "fd=\$gfd$g"
		read -r line <&"$fd"
		[[ $line == ready ]] || { echo "generator $g: $line" >&2; exit 1; }
	done
}

# collect_gens: waits for the generators; sets got (changes, summed) and
# secs (the longest first-to-last span)
collect_gens() {
	local g fd c s
	got=0 secs=0
	for ((g = 0; g < gens; g++)); do
		eval "fd=\$gfd$g"
		read -r c s <&"$fd"
		wait "${pids[$g]}" || true
		got=$((got + c))
		secs=$(awk -v a="$secs" -v b="$s" 'BEGIN {print ((b > a) ? b : a)}')
		eval "exec $fd<&-"
		rm -f "$DIR/gen$g"
	done
}

echo "bench/fanout: one weft-fanout node, 100 spaces, $DELIVERIES deliveries per run"
printf '\n  %-9s %6s %14s %14s %16s %14s %8s %12s\n' sessions batch \
	"deliveries/s" "raw msgs/s" "per fanout CPU-s" "bytes/session" ratio "gens"
for conf in ${FANOUT_CONFS:-1000:1 15000:1 1000:100 15000:100}; do
	n=${conf%:*} batch=${conf#*:}
	rounds=$(((DELIVERIES + n * batch - 1) / (n * batch)))
	rss0=$(rss)
	start_gens "$n" $((rounds * (n / ((n + SHARD - 1) / SHARD)) * batch))
	sleep 1
	per_session=$(( ($(rss) - rss0) * 1024 / n ))
	t0=$(ticks)
	# the stream: BATCH entries per space per round, as the relay writes them
	"$GEN" rounds "$rounds" "$batch" | redis-cli -p "$WEFT_REDIS_PORT" --pipe >/dev/null
	collect_gens
	t1=$(ticks)
	rate=$(awk -v c="$got" -v s="$secs" 'BEGIN {printf "%d", (s > 0 ? c / s : 0)}')
	cpu=$(awk -v c="$got" -v t=$((t1 - t0)) -v hz="$HZ" \
		'BEGIN {printf "%d", (t > 0 ? c / (t / hz) : 0)}')
	# the raw limit, sharded the same way
	raw_msgs=0 raw_secs=0
	for ((g = 0; g < gens; g++)); do
		"$GEN" blast "$per" "$rounds" "$batch" >"$DIR/blast$g" &
	done
	wait_all=$(jobs -p | grep -v "^$FPID$" || true)
	for p in $wait_all; do wait "$p" || true; done
	for ((g = 0; g < gens; g++)); do
		read -r m s <"$DIR/blast$g"
		raw_msgs=$((raw_msgs + m))
		raw_secs=$(awk -v a="$raw_secs" -v b="$s" 'BEGIN {print ((b > a) ? b : a)}')
	done
	raw=$(awk -v c="$raw_msgs" -v s="$raw_secs" 'BEGIN {printf "%d", c / s}')
	printf '  %-9s %6s %14s %14s %16s %14s %7.2fx %12s\n' "$n" "$batch" "$rate" "$raw" \
		"$cpu" "$per_session" "$(awk -v a="$rate" -v b="$raw" 'BEGIN {print a / b}')" \
		"$gens x $per"
	[[ $got -ge $((rounds * n * batch)) ]] ||
		echo "    (only $got of $((rounds * n * batch)) deliveries arrived)"
done

echo
echo "  latency at a steady rate: an XADD stamped with its send time -> the PUSH's arrival, ${LAT_SECONDS:-10} s each"
printf '  %-9s %14s %14s %10s %10s %10s %10s\n' sessions "deliveries/s" achieved \
	"p50 ms" "p99 ms" "p99.9 ms" "max ms"
for conf in ${FANOUT_LAT:-1000:10000 1000:50000 15000:50000}; do
	n=${conf%:*} want=${conf#*:}
	secs=${LAT_SECONDS:-10}
	entries=$((want * 100 / n)) # entries/s: each reaches n / 100 sessions
	start_gens "$n" $((entries * secs * (n / ((n + SHARD - 1) / SHARD)) / 100)) \
		"$DIR/lat"
	sleep 1
	"$GEN" pace "$WEFT_REDIS_URL" 100 "$entries" "$secs" >"$DIR/pace"
	lsecs=$secs
	collect_gens
	secs=$lsecs
	read -r sent psecs <"$DIR/pace"
	cat "$DIR"/lat* | sort -n >"$DIR/lat.all"
	# LAT_KEEP=DIR keeps each generator's "latency_us sent_ms" lines
	[[ -z ${LAT_KEEP:-} ]] || for ((g = 0; g < gens; g++)); do
		cp "$DIR/lat$g" "$LAT_KEEP/lat-$n-$want-g$g"
	done
	awk -v n="$n" -v want="$want" -v got="$got" -v psecs="$psecs" '
		{ v[NR] = $1 }
		END {
			if (NR == 0) { printf "  %-9s %14s   (no samples)\n", n, want; exit }
			printf "  %-9s %14s %14d %10.2f %10.2f %10.2f %10.2f\n", n, want,
				got / psecs, v[int(NR * 0.50) + 1] / 1000,
				v[int(NR * 0.99) + 1] / 1000,
				v[int(NR * 0.999) + 1] / 1000, v[NR] / 1000
		}' "$DIR/lat.all"
	[[ $got -ge $((entries * secs * per / 100 * gens)) ]] ||
		echo "    (only $got of $((entries * secs * per / 100 * gens)) deliveries arrived)"
	rm -f "$DIR"/lat*
done
