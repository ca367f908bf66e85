#!/usr/bin/env bash
# bench/e2e.sh - write -> push latency through every service: weft-write,
# Postgres, weft-relay, Redis, weft-fanout.
#
#   bench/e2e.sh [BUILD_DIR] [SAMPLES]     (defaults: build-rel, 300)
#   E2E_LOADS="0 500 2000" picks the background loads
#   E2E_TRACE_DIR=DIR keeps every sample of load L in DIR/load-L ("ms
#   since the first, ack µs, push µs")
#
# 1. starts the whole local stack from BUILD_DIR in a scratch dir (two
#    relays, two fanout nodes);
# 2. raw limit: the latency of one durable commit here (pgbench, one
#    client, one outbox insert per transaction, synchronous_commit=on), the
#    floor under any acknowledged write;
# 3. e2e_bench at 0, 500 and 2,000 background writes/s: a probe client sets
#    one field through weft-write, a subscriber on fanout-a times the push
#    (p50/p99/max over SAMPLES), and the probe's ack (p50/p99/max): the
#    part of the latency before the commit is answered.
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD=$(cd -- "${1:-$REPO/build-rel}" && pwd -P)
SAMPLES=${2:-300}
DIR=$(mktemp -d /tmp/weft-bench-e2e.XXXXXX)
chmod 755 "$DIR"
export WEFT_WRITE_BIN=$BUILD/services/write/weft-write
export WEFT_RELAY_BIN=$BUILD/services/relay/weft-relay
export WEFT_FANOUT_BIN=$BUILD/services/fanout/weft-fanout
cleanup() {
	"$REPO/deploy/local/stack" down --dir "$DIR" >/dev/null 2>&1 || true
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM # so that EXIT cleans up

for b in "$WEFT_WRITE_BIN" "$WEFT_RELAY_BIN" "$WEFT_FANOUT_BIN" \
	"$BUILD/bench/e2e_bench"; do
	[[ -x $b ]] || { echo "e2e.sh: build $b first" >&2; exit 1; }
done
"$REPO/deploy/local/stack" up --dir "$DIR" --ports auto >/dev/null
set -a
# shellcheck disable=SC1091
. "$DIR/env"
set +a
PGBIN=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
[[ -x $PGBIN/pgbench ]] || PGBIN=/usr/lib/postgresql/15/bin
psql -X -q -d "$WEFT_PG_URL" <<'SQL'
INSERT INTO weft_spaces (id, created_by) VALUES ('bench', 'bench');
INSERT INTO weft_members (space, user_id, role) VALUES ('bench', 'bench', 'writer');
-- e2e_bench's background writers, a user each (bench-bg-0..31)
INSERT INTO weft_members (space, user_id, role)
	SELECT 'bench', 'bench-bg-' || g, 'writer' FROM generate_series(0, 31) g;
INSERT INTO weft_records (tbl, id, space, version, data, updated_by) VALUES
	('issues', 'p0', 'bench', 1, '{"title": "probe", "priority": 0}', 'bench');
INSERT INTO weft_records (tbl, id, space, version, data, updated_by)
	SELECT 'issues', 'b' || g, 'bench', 1,
	       '{"title": "load", "priority": 0}', 'bench'
	FROM generate_series(0, 31) g;
SQL

cat >"$DIR/commit.sql" <<'SQL'
INSERT INTO weft_outbox (tbl, id, space, version, op, deleted, data, client_id, mid, user_id) VALUES ('items', 'raw', 'nowhere', 1, 3, false, '{"n": 1}', 'bench', 0, 'bench');
SQL
raw=$("$PGBIN/pgbench" -n -c 1 -T 3 -f "$DIR/commit.sql" "$WEFT_PG_URL" \
	2>/dev/null | awk '/latency average/ {print $4}')
echo "bench/e2e: $SAMPLES samples per load; write via $WEFT_WRITE_URL, push from $WEFT_FANOUT_A_URL"
echo
echo "raw limit: one durable commit (pgbench, 1 client): ${raw} ms"
echo
printf '  %-18s %8s %9s %9s %9s %14s %10s %20s\n' "background" samples "p50 ms" \
	"p99 ms" "max ms" "bg writes/s" "p50/raw" "ack p50/p99/max ms"
for load in ${E2E_LOADS:-0 500 2000}; do
	read -r n p50 p99 max bg ack ack99 ackmax < <(E2E_TRACE=${E2E_TRACE_DIR:+$E2E_TRACE_DIR/load-$load} \
		"$BUILD/bench/e2e_bench" \
		"$WEFT_WRITE_URL" "$WEFT_FANOUT_A_URL" "$WEFT_JWT_SECRET" bench \
		"$SAMPLES" "$load")
	printf '  %-18s %8s %9s %9s %9s %14s %9.1fx %20s\n' "$load writes/s" "$n" \
		"$p50" "$p99" "$max" "$bg" \
		"$(awk -v a="$p50" -v b="$raw" 'BEGIN {print a / b}')" \
		"$ack / $ack99 / $ackmax"
done
