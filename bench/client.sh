#!/usr/bin/env bash
# bench/client.sh - libweft: local commit latency and the bootstrap of a
# 100k-record space, each beside its raw limit measured in the same run.
#
#   bench/client.sh [BUILD_DIR] [COMMITS] [RECORDS]  (build-rel, 20000, 100000)
#
# 1. commit: COMMITS offline commits of one `set` (synchronous=NORMAL)
#    beside as many raw SQLite one-row insert transactions, on the same
#    file system;
# 2. bootstrap: starts Postgres, Redis, weft-write and one weft-fanout
#    (scratch dir), seeds RECORDS issues of about 130 bytes in one space,
#    then times an empty store from subscribe until live; beside it, the
#    floors: Postgres exporting the same rows (COPY of the columns to
#    /dev/null) and a raw SQLite bulk insert of as many rows.  Peak RSS of
#    the client and of weft-write are printed.  BOOT_WRAP is prepended to
#    the bootstrap's command (e.g. BOOT_WRAP="perf record -g --").
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD=$(cd -- "${1:-$REPO/build-rel}" && pwd -P)
COMMITS=${2:-20000}
RECORDS=${3:-100000}
SCHEMA=$REPO/deploy/schema/issues.json
DIR=$(mktemp -d /tmp/weft-bench-client.XXXXXX)
chmod 755 "$DIR"
export WEFT_WRITE_BIN=$BUILD/services/write/weft-write
export WEFT_FANOUT_BIN=$BUILD/services/fanout/weft-fanout
export WEFT_RELAY_BIN=none
cleanup() {
	"$REPO/deploy/local/stack" down --dir "$DIR/stack" >/dev/null 2>&1 || true
	rm -rf "$DIR"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM # so that EXIT cleans up
GEN=$BUILD/bench/client_bench
for b in "$GEN" "$WEFT_WRITE_BIN" "$WEFT_FANOUT_BIN"; do
	[[ -x $b ]] || { echo "client.sh: build $b first" >&2; exit 1; }
done

"$GEN" commit "$DIR" "$SCHEMA" "$COMMITS"
echo

mkdir -p "$DIR/stack"
"$REPO/deploy/local/stack" up --dir "$DIR/stack" --ports auto >/dev/null
set -a
# shellcheck disable=SC1091
. "$DIR/stack/env"
set +a
psql -X -q -d "$WEFT_PG_URL" <<SQL
INSERT INTO weft_spaces (id, created_by) VALUES ('bench', 'bench');
INSERT INTO weft_members (space, user_id, role) VALUES ('bench', 'bench', 'reader');
INSERT INTO weft_records (tbl, id, space, version, data, updated_by)
SELECT 'issues', 'i' || lpad(g::text, 6, '0'), 'bench', 1,
       jsonb_build_object('title', 'Issue ' || lpad(g::text, 6, '0') ||
                                   ': the sync badge flickers',
                          'status', 'todo', 'priority', g % 4,
                          'assignee', 'user' || lpad((g % 50)::text, 2, '0'),
                          'labels', jsonb_build_array('bug', 'p' || g % 3)),
       'bench'
FROM generate_series(1, $RECORDS) g;
ANALYZE weft_records;
SQL
bytes=$(psql -X -At -d "$WEFT_PG_URL" -c \
	"SELECT avg(octet_length(data::text))::int FROM weft_records WHERE space = 'bench'")
echo "bench/client bootstrap: $RECORDS records of about $bytes bytes (JSON) in one space"
pg0=$(date +%s%N)
psql -X -q -d "$WEFT_PG_URL" -c \
	"COPY (SELECT tbl, id, space, version, deleted, data FROM weft_records WHERE space = 'bench' ORDER BY tbl, id) TO STDOUT" >/dev/null
pg1=$(date +%s%N)
printf '  %-34s %7d rows               %6.3f s\n' "Postgres export (COPY TO STDOUT)" \
	"$RECORDS" "$(awk -v a="$pg0" -v b="$pg1" 'BEGIN {print (b - a) / 1e9}')"
"$GEN" bulk "$DIR" "$RECORDS"
wpid=$(cat "$DIR/stack/run/weft-write.pid" 2>/dev/null || true)
${BOOT_WRAP:-} "$GEN" bootstrap "$DIR" "$SCHEMA" "$WEFT_WRITE_URL" "$WEFT_FANOUT_A_URL" \
	"$WEFT_JWT_SECRET" bench
if [[ -n $wpid && -r /proc/$wpid/status ]]; then
	echo "  weft-write peak RSS: $(awk '/^VmHWM/ {print int($2 / 1024)}' "/proc/$wpid/status") MB"
fi
