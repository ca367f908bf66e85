#!/usr/bin/env bash
# stack_test.sh: checks every claim deploy/local/stack makes against real
# servers: a Postgres ready for logical replication with a non-superuser
# 'weft' role, a Redis whose writes reach its append-only file, weft-write
# answering /healthz with the stack's dev JWT secret, two weft-relays of
# which exactly one is active and the other takes over within 5 s of a
# kill -9, the two weft-fanouts, idempotent up/down, migrations applied
# exactly once, ports on loopback only, data that survives a restart, a
# stack without each service when it is not built or is turned off, and
# that only our own pids are ever stopped.
#
# Usage: tests/integration/stack_test.sh
#
# Each service binary (weft-write, weft-relay, weft-fanout) comes from its
# WEFT_<SERVICE>_BIN, else from the build tree ctest runs this in, else
# from the newest <repo>/build*/; a service's checks are skipped when there
# is none (the stack is then checked to skip it with a note).
#
# Runs its own stack in a fresh temporary directory on free ports, so it can
# run alongside a developer's stack and other tests. Prints TAP-style
# ok/not ok lines (expected vs got on failure), exits 1 if any check fails,
# and always stops what it started.
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/../.." && pwd -P)
readonly REPO
readonly STACK=$REPO/deploy/local/stack
readonly MIGRATE=$REPO/deploy/local/migrate

# The stack under test must come from our flags alone.
# (WEFT_STACK_TIMEOUT and WEFT_PG_BINDIR adapt to the machine, so stay.)
unset WEFT_STACK_DIR WEFT_PG_PORT WEFT_REDIS_PORT WEFT_STACK_PORTS \
	WEFT_PG_URL WEFT_REDIS_URL WEFT_PG_SOCKET_DIR WEFT_MIGRATIONS_DIR \
	WEFT_REDIS_APPENDFSYNC WEFT_WRITE_PORT WEFT_WRITE_HTTP_PORT \
	WEFT_WRITE_URL WEFT_WRITE_HTTP WEFT_JWT_SECRET \
	WEFT_RELAY_PORT WEFT_RELAY_A_HTTP WEFT_RELAY_B_HTTP \
	WEFT_FANOUT_PORT WEFT_FANOUT_A_URL WEFT_FANOUT_B_URL WEFT_FANOUT_URLS \
	WEFT_FANOUT_A_HTTP WEFT_FANOUT_B_HTTP

# As root the stack runs Postgres as 'postgres', which must be able to enter
# the directory; mktemp makes it 0700.
TMP=$(mktemp -d /tmp/weft-stack-test.XXXXXX)
chmod 755 "$TMP"
readonly TMP
readonly DIR=$TMP/stack
readonly OUT=$TMP/out

CHECKS=0
FAILED=0
LAST_OK=0
PG_PID=
REDIS_PID=
WRITE_PID=
RELAY_A_PID=
RELAY_B_PID=
FANOUT_A_PID=
FANOUT_B_PID=
DECOY_PID=

# ---- reporting ---------------------------------------------------------------

pass() {
	CHECKS=$((CHECKS + 1))
	printf 'ok %d - %s\n' "$CHECKS" "$1"
}

fail() {
	CHECKS=$((CHECKS + 1))
	FAILED=$((FAILED + 1))
	printf 'not ok %d - %s\n' "$CHECKS" "$1"
	# Newlines shown as \n keep multi-line values on one line.
	printf '#   expected: %s\n' "${2//$'\n'/\\n}"
	printf '#   got:      %s\n' "${3//$'\n'/\\n}"
}

# check_eq DESC EXPECTED GOT
check_eq() {
	if [[ $3 == "$2" ]]; then
		pass "$1"
	else
		fail "$1" "'$2'" "'$3'"
	fi
}

# check_rc DESC EXPECTED_STATUS CMD...: runs CMD, its output in $OUT;
# LAST_OK says whether the check passed.
check_rc() {
	local desc=$1 want=$2 rc=0
	shift 2
	"$@" >"$OUT" 2>&1 || rc=$?
	LAST_OK=1
	if [[ $want == nonzero ]]; then
		((rc != 0)) || LAST_OK=0
	else
		((rc == want)) || LAST_OK=0
	fi
	if ((LAST_OK)); then
		pass "$desc"
	else
		fail "$desc" "exit status $want" "exit status $rc; output:"
		sed 's/^/#     /' "$OUT"
	fi
}

# check_output DESC PATTERN: the last check_rc's output matches PATTERN (ERE).
check_output() {
	if grep -qE -- "$2" "$OUT"; then
		pass "$1"
	else
		fail "$1" "output matching /$2/" "output:"
		sed 's/^/#     /' "$OUT"
	fi
}

skip() {
	CHECKS=$((CHECKS + 1))
	printf 'ok %d - %s # SKIP %s\n' "$CHECKS" "$1" "$2"
}

bail() {
	printf 'Bail out! %s\n' "$*"
	exit 1
}

# ---- helpers -----------------------------------------------------------------

# A live process (a zombie has released everything, so counts as gone).
alive() {
	local stat
	[[ -n $1 ]] || return 1
	stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
	stat=${stat##*) }
	[[ ${stat:0:1} != [ZX] ]]
}

# Waits up to 10 s for pid to be gone; prints "gone" or "alive".
gone_state() {
	local i
	for ((i = 0; i < 100; i++)); do
		alive "$1" || {
			echo gone
			return 0
		}
		sleep 0.1
	done
	echo alive
}

listening() {
	if [[ -n $(ss -Htln "sport = :$1") ]]; then echo listening; else echo closed; fi
}

sql() {
	PGCONNECT_TIMEOUT=5 psql -X -q -A -t -v ON_ERROR_STOP=1 "$WEFT_PG_URL" -c "$1" 2>&1
}

rcli() {
	timeout 10 redis-cli -h 127.0.0.1 -p "$WEFT_REDIS_PORT" "$@" 2>&1
}

load_env() {
	[[ -f $DIR/env ]] || bail "no $DIR/env after up"
	set -a
	# shellcheck source=/dev/null
	. "$DIR/env"
	set +a
}

read_pids() {
	PG_PID=$(head -n 1 "$DIR/pg/data/postmaster.pid" 2>/dev/null || true)
	REDIS_PID=$(cat "$DIR/run/redis.pid" 2>/dev/null || true)
	WRITE_PID=$(cat "$DIR/run/weft-write.pid" 2>/dev/null || true)
	RELAY_A_PID=$(cat "$DIR/run/relay-a.pid" 2>/dev/null || true)
	RELAY_B_PID=$(cat "$DIR/run/relay-b.pid" 2>/dev/null || true)
	FANOUT_A_PID=$(cat "$DIR/run/fanout-a.pid" 2>/dev/null || true)
	FANOUT_B_PID=$(cat "$DIR/run/fanout-b.pid" 2>/dev/null || true)
}

# find_bin VALUE PATH: the service binary under test: VALUE (the caller's
# WEFT_<SERVICE>_BIN) if set, else the one in the build tree we run in
# (ctest runs us in <build>/tests/integration), else the newest
# <repo>/build*/PATH. Prints nothing if there is none.
find_bin() {
	local d=$PWD b newest=''
	if [[ -n $1 ]]; then
		[[ ! -x $1 ]] || echo "$1"
		return 0
	fi
	while [[ $d != / ]]; do
		if [[ -f $d/CMakeCache.txt && -x $d/$2 ]]; then
			echo "$d/$2"
			return 0
		fi
		d=$(dirname "$d")
	done
	for b in "$REPO"/build*/"$2"; do
		[[ -x $b ]] || continue
		[[ -n $newest && ! $b -nt $newest ]] || newest=$b
	done
	[[ -z $newest ]] || echo "$newest"
}

# http_get PORT PATH: prints "STATUS BODY" (the body's first line) of a GET
# to 127.0.0.1, through bash's /dev/tcp; "none" if nothing answers.
http_get() {
	local resp first body=''
	# shellcheck disable=SC2016 # expanded by the inner bash
	resp=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf "GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" "$2" >&3
		cat <&3' http_get "$1" "$2" 2>/dev/null) || true
	first=${resp%%$'\r'*}
	if [[ ! $first =~ ^HTTP/1\.[01]\ ([0-9]{3}) ]]; then
		echo none
		return 0
	fi
	[[ $resp != *$'\r\n\r\n'* ]] || body=${resp#*$'\r\n\r\n'}
	body=${body%%$'\n'*}
	echo "${BASH_REMATCH[1]} ${body%$'\r'}"
}

# Prints "200 ok" if /healthz answers 200 with a body starting with "ok",
# else what it answered.
healthz_state() {
	local r
	r=$(http_get "$1" /healthz)
	if [[ $r == '200 ok'* ]]; then echo "200 ok"; else echo "$r"; fi
}

# relay_active PORT: the weft_relay_active gauge in the /metrics of the
# relay whose HTTP port is PORT ("1" or "0"), or "none".
relay_active() {
	local resp v
	# shellcheck disable=SC2016 # expanded by the inner bash
	resp=$(timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
		printf "GET /metrics HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" >&3
		cat <&3' relay_active "$1" 2>/dev/null) || true
	v=$(sed -n 's/^weft_relay_active \([0-9]*\)\r\{0,1\}$/\1/p' <<<"$resp")
	echo "${v:-none}"
}

# Prints "one active" if exactly one of the two relays says it is active
# and the other standing by, else what they said.
one_active() {
	local a b
	a=$(relay_active "$WEFT_RELAY_PORT")
	b=$(relay_active "$((WEFT_RELAY_PORT + 1))")
	if [[ $a$b == 10 || $a$b == 01 ]]; then
		echo "one active"
	else
		echo "relay-a: $a, relay-b: $b"
	fi
}

# wait_active PORT: polls the relay on PORT for up to 5 s; prints "active"
# once it says it is, else what it said last. The time it took goes to
# stderr as a TAP comment (stdout is the check's value).
wait_active() {
	local start now v
	start=${EPOCHREALTIME/./}
	while :; do
		v=$(relay_active "$1")
		now=${EPOCHREALTIME/./}
		if [[ $v == 1 ]]; then
			printf '# takeover seen after %d ms\n' "$(((now - start) / 1000))" >&2
			echo active
			return 0
		fi
		if ((now - start >= 5000000)); then
			echo "not active after 5 s (weft_relay_active: $v)"
			return 0
		fi
		sleep 0.1
	done
}

# listen_addrs PORT...: the local addresses listening on those ports.
listen_addrs() {
	local p filter=''
	for p in "$@"; do
		filter+="${filter:+ or }sport = :$p"
	done
	ss -Htln "( $filter )" | awk '{print $4}' | sort -u | paste -sd ' '
}

# ---- cleanup -----------------------------------------------------------------

# Kills pid if it is still a server running out of our temp dir.
kill_ours() {
	local pid=$1
	alive "$pid" || return 0
	[[ $(readlink "/proc/$pid/cwd" 2>/dev/null) == "$TMP"/* ]] || return 0
	kill -KILL "$pid" 2>/dev/null || true
}

cleanup() {
	local rc=$?
	set +e
	if [[ -d $DIR ]]; then
		"$STACK" down --dir "$DIR" >/dev/null 2>&1
		kill_ours "$WRITE_PID"
		kill_ours "$RELAY_A_PID"
		kill_ours "$RELAY_B_PID"
		kill_ours "$FANOUT_A_PID"
		kill_ours "$FANOUT_B_PID"
		kill_ours "$PG_PID"
		kill_ours "$REDIS_PID"
	fi
	if [[ -n $DECOY_PID ]] && alive "$DECOY_PID"; then
		kill "$DECOY_PID" 2>/dev/null
		wait "$DECOY_PID" 2>/dev/null
	fi
	if ((FAILED > 0 || rc != 0)) && [[ -d $DIR/log ]]; then
		local log
		for log in "$DIR"/log/postgres.log "$DIR"/log/redis.log \
			"$DIR"/log/weft-write.log "$DIR"/log/relay-a.log \
			"$DIR"/log/relay-b.log "$DIR"/log/fanout-a.log \
			"$DIR"/log/fanout-b.log; do
			[[ -f $log ]] || continue
			printf '# --- %s (last 20 lines)\n' "${log##*/}"
			tail -n 20 "$log" | sed 's/^/# /'
		done
	fi
	rm -rf -- "$TMP"
}
trap cleanup EXIT

# ---- the test ----------------------------------------------------------------

WRITE_BIN=$(find_bin "${WEFT_WRITE_BIN:-}" services/write/weft-write)
if [[ -n $WRITE_BIN ]]; then
	HAVE_WRITE=1
	export WEFT_WRITE_BIN=$WRITE_BIN
	printf '# weft-write: %s\n' "$WRITE_BIN"
else
	HAVE_WRITE=0
	export WEFT_WRITE_BIN=none
	printf '# weft-write: not built; its checks are skipped\n'
fi
RELAY_BIN=$(find_bin "${WEFT_RELAY_BIN:-}" services/relay/weft-relay)
if [[ -n $RELAY_BIN ]]; then
	HAVE_RELAY=1
	export WEFT_RELAY_BIN=$RELAY_BIN
	printf '# weft-relay: %s\n' "$RELAY_BIN"
else
	HAVE_RELAY=0
	export WEFT_RELAY_BIN=none
	printf '# weft-relay: not built; its checks are skipped\n'
fi
# Without a weft-fanout, point the stack at a missing one, to check that it
# says it skips it.
FANOUT_BIN=$(find_bin "${WEFT_FANOUT_BIN:-}" services/fanout/weft-fanout)
if [[ -n $FANOUT_BIN ]]; then
	HAVE_FANOUT=1
	export WEFT_FANOUT_BIN=$FANOUT_BIN
	printf '# weft-fanout: %s\n' "$FANOUT_BIN"
else
	HAVE_FANOUT=0
	export WEFT_FANOUT_BIN=$TMP/no-such/weft-fanout
	printf '# weft-fanout: not built; its checks are skipped\n'
fi
readonly WRITE_BIN HAVE_WRITE RELAY_BIN HAVE_RELAY FANOUT_BIN HAVE_FANOUT

check_rc "up on a fresh dir exits 0" 0 "$STACK" up --dir "$DIR" --ports auto
((LAST_OK)) || bail "stack up failed"
UP_OUT=$(cat "$OUT")
load_env
read_pids
if ((HAVE_FANOUT)); then
	check_output "up starts fanout-a" '^stack: fanout-a: started'
	check_output "up starts fanout-b" '^stack: fanout-b: started'
else
	check_output "up says weft-fanout was not started because it is not built" \
		"^stack: weft-fanout: not started because it is not built \(no $TMP/no-such/weft-fanout\)"
	check_eq "no fanout pidfiles" "none" \
		"$([[ -e $DIR/run/fanout-a.pid || -e $DIR/run/fanout-b.pid ]] && echo present || echo none)"
fi
if ((HAVE_RELAY)); then
	check_eq "up starts the relays before weft-write and the fanouts" \
		"relay-a relay-b$( ((HAVE_WRITE)) && echo ' weft-write')$( ((HAVE_FANOUT)) && echo ' fanout-a fanout-b')" \
		"$(sed -n 's/^stack: \([a-z-]*\): started.*/\1/p' <<<"$UP_OUT" |
			grep -v -e postgres -e redis | paste -sd ' ')"
fi

check_eq "env: WEFT_STACK_DIR is the dir" "$DIR" "$WEFT_STACK_DIR"
check_eq "env: WEFT_PG_URL" \
	"postgresql://weft@127.0.0.1:$WEFT_PG_PORT/weft" "$WEFT_PG_URL"
check_eq "env: WEFT_REDIS_URL" "redis://127.0.0.1:$WEFT_REDIS_PORT" "$WEFT_REDIS_URL"
check_eq "env: WEFT_PG_SOCKET_DIR" "$DIR/run" "$WEFT_PG_SOCKET_DIR"
check_eq "auto ports are distinct and not the defaults" "yes" \
	"$([[ $WEFT_PG_PORT != "$WEFT_REDIS_PORT" && $WEFT_PG_PORT != 54320 &&
		$WEFT_REDIS_PORT != 63790 ]] && echo yes || echo "no: pg $WEFT_PG_PORT, redis $WEFT_REDIS_PORT")"

# Postgres
check_eq "SHOW wal_level is logical" "logical" "$(sql 'SHOW wal_level')"
check_eq "replication limits" "10|10|1GB" "$(sql "SELECT current_setting('max_wal_senders'),
	current_setting('max_replication_slots'), current_setting('max_slot_wal_keep_size')")"
check_eq "postgres listens on 127.0.0.1 only" "127.0.0.1:$WEFT_PG_PORT" \
	"$(ss -Htln "sport = :$WEFT_PG_PORT" | awk '{print $4}' | sort -u | paste -sd ' ')"
check_eq "unix socket in WEFT_PG_SOCKET_DIR" "socket" \
	"$([[ -S $WEFT_PG_SOCKET_DIR/.s.PGSQL.$WEFT_PG_PORT ]] && echo socket || echo missing)"
check_eq "role weft: login, replication, not superuser" "weft|t|t|f" \
	"$(sql 'SELECT rolname, rolcanlogin, rolreplication, rolsuper
		FROM pg_roles WHERE rolname = current_user')"
check_eq "database weft is owned by weft" "weft" \
	"$(sql 'SELECT pg_get_userbyid(datdba) FROM pg_database
		WHERE datname = current_database()')"
check_eq "weft can create a logical slot (pgoutput)" "stack_test" \
	"$(sql "SELECT slot_name FROM
		pg_create_logical_replication_slot('stack_test', 'pgoutput', true)")"
check_rc "weft can open a replication connection" 0 \
	psql -X -A -t "dbname=weft replication=database host=127.0.0.1 port=$WEFT_PG_PORT user=weft" \
	-c IDENTIFY_SYSTEM
check_eq "postmaster pid is alive" "alive" "$(alive "$PG_PID" && echo alive || echo "dead ($PG_PID)")"

# Redis
check_eq "redis appendonly is yes" $'appendonly\nyes' "$(rcli CONFIG GET appendonly)"
check_eq "redis appendfsync is always" $'appendfsync\nalways' "$(rcli CONFIG GET appendfsync)"
check_eq "redis dir is DIR/redis" $'dir\n'"$DIR/redis" "$(rcli CONFIG GET dir)"
check_eq "redis listens on 127.0.0.1 only" "127.0.0.1:$WEFT_REDIS_PORT" \
	"$(ss -Htln "sport = :$WEFT_REDIS_PORT" | awk '{print $4}' | sort -u | paste -sd ' ')"
check_eq "XADD succeeds" "1-1" "$(rcli XADD stack_test 1-1 k v)"
aof=$(find "$DIR/redis/appendonlydir" -name '*.incr.aof' 2>/dev/null | head -n 1)
check_eq "the write is in the AOF right away" "found" \
	"$([[ -n $aof ]] && grep -q stack_test "$aof" && echo found ||
		echo "not found (aof: '${aof:-none}')")"
check_eq "redis pid is alive" "alive" "$(alive "$REDIS_PID" && echo alive || echo "dead ($REDIS_PID)")"

# The JWT secret and weft-write's ports are in DIR/env, built or not.
check_eq "env: WEFT_WRITE_URL" "tcp://127.0.0.1:$WEFT_WRITE_PORT" "$WEFT_WRITE_URL"
check_eq "env: WEFT_WRITE_HTTP is the next port" \
	"http://127.0.0.1:$((WEFT_WRITE_PORT + 1))" "$WEFT_WRITE_HTTP"
check_eq "env: WEFT_WRITE_HTTP_PORT" "$((WEFT_WRITE_PORT + 1))" "$WEFT_WRITE_HTTP_PORT"
check_eq "weft-write's auto ports are distinct from the others and not the default" "yes" \
	"$([[ $WEFT_WRITE_PORT != 7400 && $WEFT_WRITE_PORT != "$WEFT_PG_PORT" &&
		$WEFT_WRITE_PORT != "$WEFT_REDIS_PORT" &&
		$WEFT_WRITE_HTTP_PORT != "$WEFT_PG_PORT" &&
		$WEFT_WRITE_HTTP_PORT != "$WEFT_REDIS_PORT" ]] && echo yes ||
		echo "no: write $WEFT_WRITE_PORT, pg $WEFT_PG_PORT, redis $WEFT_REDIS_PORT")"
check_eq "DIR/jwt-secret is mode 600" "600" "$(stat -c %a "$DIR/jwt-secret" 2>&1)"
check_eq "DIR/env (which holds the secret) is mode 600" "600" "$(stat -c %a "$DIR/env")"
SECRET=$(head -n 1 "$DIR/jwt-secret" 2>/dev/null || true)
check_eq "env: WEFT_JWT_SECRET is DIR/jwt-secret" "$SECRET" "$WEFT_JWT_SECRET"
check_eq "the secret is 64 hex digits" "yes" \
	"$([[ $SECRET =~ ^[0-9a-f]{64}$ ]] && echo yes || echo "no: '$SECRET'")"

# The relays' and fanouts' addresses are in DIR/env, built or not.
check_eq "env: WEFT_RELAY_A_HTTP" "http://127.0.0.1:$WEFT_RELAY_PORT" "$WEFT_RELAY_A_HTTP"
check_eq "env: WEFT_RELAY_B_HTTP is the next port" \
	"http://127.0.0.1:$((WEFT_RELAY_PORT + 1))" "$WEFT_RELAY_B_HTTP"
check_eq "env: WEFT_FANOUT_A_URL" "tcp://127.0.0.1:$WEFT_FANOUT_PORT" "$WEFT_FANOUT_A_URL"
check_eq "env: WEFT_FANOUT_A_HTTP is the next port" \
	"http://127.0.0.1:$((WEFT_FANOUT_PORT + 1))" "$WEFT_FANOUT_A_HTTP"
check_eq "env: WEFT_FANOUT_B_URL is 2 ports on" \
	"tcp://127.0.0.1:$((WEFT_FANOUT_PORT + 2))" "$WEFT_FANOUT_B_URL"
check_eq "env: WEFT_FANOUT_B_HTTP is 3 ports on" \
	"http://127.0.0.1:$((WEFT_FANOUT_PORT + 3))" "$WEFT_FANOUT_B_HTTP"
check_eq "env: WEFT_FANOUT_URLS lists both" \
	"$WEFT_FANOUT_A_URL,$WEFT_FANOUT_B_URL" "$WEFT_FANOUT_URLS"
all_ports="$WEFT_PG_PORT $WEFT_REDIS_PORT $WEFT_WRITE_PORT $WEFT_WRITE_HTTP_PORT"
all_ports+=" $WEFT_RELAY_PORT $((WEFT_RELAY_PORT + 1))"
all_ports+=" $WEFT_FANOUT_PORT $((WEFT_FANOUT_PORT + 1))"
all_ports+=" $((WEFT_FANOUT_PORT + 2)) $((WEFT_FANOUT_PORT + 3))"
check_eq "all 10 auto ports are distinct" "10" \
	"$(tr ' ' '\n' <<<"$all_ports" | sort -u | wc -l)"
check_eq "the relays' and fanouts' auto ports are not the defaults" "yes" \
	"$([[ $WEFT_RELAY_PORT != 7410 && $WEFT_FANOUT_PORT != 7420 ]] && echo yes ||
		echo "no: relay $WEFT_RELAY_PORT, fanout $WEFT_FANOUT_PORT")"

# weft-write
if ((HAVE_WRITE)); then
	check_eq "weft-write pid is alive" "alive" \
		"$(alive "$WRITE_PID" && echo alive || echo "dead ('$WRITE_PID')")"
	check_eq "weft-write /healthz answers 200 ok" "200 ok" \
		"$(healthz_state "$WEFT_WRITE_HTTP_PORT")"
	check_eq "weft-write listens on 127.0.0.1 only" \
		"127.0.0.1:$WEFT_WRITE_PORT 127.0.0.1:$WEFT_WRITE_HTTP_PORT" \
		"$(ss -Htln "( sport = :$WEFT_WRITE_PORT or sport = :$WEFT_WRITE_HTTP_PORT )" |
			awk '{print $4}' | sort -u | paste -sd ' ')"
	cmdline=$(tr '\0' ' ' <"/proc/$WRITE_PID/cmdline" 2>/dev/null || true)
	check_eq "weft-write runs with the demo schema and the stack's Postgres" "yes" \
		"$([[ $cmdline == *"--schema=$REPO/deploy/schema/issues.json"* &&
			$cmdline == *"--pg-url=$WEFT_PG_URL"* ]] && echo yes || echo "no: $cmdline")"
	check_eq "the secret is not on weft-write's command line" "absent" \
		"$([[ -n $SECRET && $cmdline != *"$SECRET"* ]] && echo absent || echo present)"
	check_eq "weft-write gets the secret through its environment" "yes" \
		"$(tr '\0' '\n' <"/proc/$WRITE_PID/environ" 2>/dev/null |
			grep -qx "WEFT_JWT_SECRET=$SECRET" && echo yes || echo no)"
else
	skip "weft-write checks" "weft-write is not built"
fi

# weft-relay: two, one active, the other standing by
if ((HAVE_RELAY)); then
	check_eq "relay-a pid is alive" "alive" \
		"$(alive "$RELAY_A_PID" && echo alive || echo "dead ('$RELAY_A_PID')")"
	check_eq "relay-b pid is alive" "alive" \
		"$(alive "$RELAY_B_PID" && echo alive || echo "dead ('$RELAY_B_PID')")"
	check_eq "relay-a /healthz answers 200 ok" "200 ok" "$(healthz_state "$WEFT_RELAY_PORT")"
	check_eq "relay-b /healthz answers 200 ok" "200 ok" \
		"$(healthz_state "$((WEFT_RELAY_PORT + 1))")"
	check_eq "exactly one relay is active (weft_relay_active)" "one active" "$(one_active)"
	check_eq "the relays listen on 127.0.0.1 only" \
		"127.0.0.1:$WEFT_RELAY_PORT 127.0.0.1:$((WEFT_RELAY_PORT + 1))" \
		"$(listen_addrs "$WEFT_RELAY_PORT" "$((WEFT_RELAY_PORT + 1))")"
	for pid in "$RELAY_A_PID" "$RELAY_B_PID"; do
		cmdline=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)
		check_eq "relay pid $pid runs as weft-relay with the stack's Postgres and Redis" "yes" \
			"$([[ $cmdline == "weft-relay "* && $cmdline == *"--pg-url=$WEFT_PG_URL "* &&
				$cmdline == *"--redis-url=$WEFT_REDIS_URL "* ]] && echo yes || echo "no: $cmdline")"
		check_eq "relay pid $pid gets no JWT secret" "none" \
			"$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null |
				grep -q '^WEFT_JWT_SECRET=' && echo present || echo none)"
	done
else
	skip "weft-relay checks" "weft-relay is not built"
fi

# weft-fanout: two
if ((HAVE_FANOUT)); then
	check_eq "fanout-a pid is alive" "alive" \
		"$(alive "$FANOUT_A_PID" && echo alive || echo "dead ('$FANOUT_A_PID')")"
	check_eq "fanout-b pid is alive" "alive" \
		"$(alive "$FANOUT_B_PID" && echo alive || echo "dead ('$FANOUT_B_PID')")"
	check_eq "fanout-a /healthz answers 200" "200" \
		"$(http_get "$((WEFT_FANOUT_PORT + 1))" /healthz | cut -d ' ' -f 1)"
	check_eq "fanout-b /healthz answers 200" "200" \
		"$(http_get "$((WEFT_FANOUT_PORT + 3))" /healthz | cut -d ' ' -f 1)"
	check_eq "the fanouts listen on 127.0.0.1 only" \
		"$(printf '127.0.0.1:%s ' "$WEFT_FANOUT_PORT" "$((WEFT_FANOUT_PORT + 1))" \
			"$((WEFT_FANOUT_PORT + 2))" "$((WEFT_FANOUT_PORT + 3))" | sed 's/ $//')" \
		"$(listen_addrs "$WEFT_FANOUT_PORT" "$((WEFT_FANOUT_PORT + 1))" \
			"$((WEFT_FANOUT_PORT + 2))" "$((WEFT_FANOUT_PORT + 3))")"
	cmdline=$(tr '\0' ' ' <"/proc/$FANOUT_B_PID/cmdline" 2>/dev/null || true)
	check_eq "fanout-b runs with its node name and the stack's Postgres and Redis" "yes" \
		"$([[ $cmdline == *"--node=fanout-b "* && $cmdline == *"--pg-url=$WEFT_PG_URL "* &&
			$cmdline == *"--redis-url=$WEFT_REDIS_URL "* ]] && echo yes || echo "no: $cmdline")"
	check_eq "the secret is not on fanout-b's command line" "absent" \
		"$([[ -n $SECRET && $cmdline != *"$SECRET"* ]] && echo absent || echo present)"
	check_eq "fanout-b gets the secret through its environment" "yes" \
		"$(tr '\0' '\n' <"/proc/$FANOUT_B_PID/environ" 2>/dev/null |
			grep -qx "WEFT_JWT_SECRET=$SECRET" && echo yes || echo no)"
else
	skip "weft-fanout checks" "weft-fanout is not built"
fi

# Migrations: every file in deploy/migrations, each recorded once
NMIG=$(find "$REPO/deploy/migrations" -name '[0-9][0-9][0-9][0-9]_*.sql' | wc -l)
check_eq "every migration recorded exactly once" "$NMIG|$NMIG" \
	"$(sql 'SELECT count(*), count(DISTINCT version) FROM weft_schema_migrations')"
check_eq "0001_bootstrap ran" "weft" \
	"$(sql "SELECT value FROM weft_meta WHERE key = 'created_by'")"

# Idempotence
cp "$DIR/env" "$TMP/env.before"
cp "$DIR/jwt-secret" "$TMP/jwt-secret.before"
first_pg=$PG_PID first_redis=$REDIS_PID first_write=$WRITE_PID
first_relay_a=$RELAY_A_PID first_relay_b=$RELAY_B_PID
first_fanout_a=$FANOUT_A_PID first_fanout_b=$FANOUT_B_PID
check_rc "up again exits 0" 0 "$STACK" up --dir "$DIR" --ports auto
check_output "up again says postgres is already running" \
	'^stack: postgres: already running'
check_output "up again says redis is already running" \
	'^stack: redis: already running'
read_pids
check_eq "up again keeps the postgres pid" "$first_pg" "$PG_PID"
check_eq "up again keeps the redis pid" "$first_redis" "$REDIS_PID"
if ((HAVE_WRITE)); then
	check_output "up again says weft-write is already running" \
		'^stack: weft-write: already running'
	check_eq "up again keeps the weft-write pid" "$first_write" "$WRITE_PID"
fi
if ((HAVE_RELAY)); then
	check_output "up again says relay-a is already running" \
		'^stack: relay-a: already running'
	check_output "up again says relay-b is already running" \
		'^stack: relay-b: already running'
	check_eq "up again keeps the relay pids" "$first_relay_a $first_relay_b" \
		"$RELAY_A_PID $RELAY_B_PID"
	check_eq "still exactly one relay active" "one active" "$(one_active)"
fi
if ((HAVE_FANOUT)); then
	check_eq "up again keeps the fanout pids" "$first_fanout_a $first_fanout_b" \
		"$FANOUT_A_PID $FANOUT_B_PID"
fi
check_eq "up again leaves DIR/env as it was" "same" \
	"$(cmp -s "$TMP/env.before" "$DIR/env" && echo same || echo changed)"
check_rc "migrate again exits 0" 0 "$MIGRATE" --url "$WEFT_PG_URL"
check_output "migrate again applies nothing" '^migrate: up to date'
check_eq "still exactly one migration row per version" "$NMIG|$NMIG" \
	"$(sql 'SELECT count(*), count(DISTINCT version) FROM weft_schema_migrations')"

check_rc "status exits 0 when up" 0 "$STACK" status --dir "$DIR"
check_output "status shows postgres with wal_level" \
	"^postgres +running +pid $PG_PID +port $WEFT_PG_PORT +wal_level=logical"
check_output "status shows redis with appendonly" \
	"^redis +running +pid $REDIS_PID +port $WEFT_REDIS_PORT +appendonly=yes"
if ((HAVE_WRITE)); then
	check_output "status shows weft-write with its /healthz" \
		"^weft-write +running +pid $WRITE_PID +port $WEFT_WRITE_PORT +http $WEFT_WRITE_HTTP_PORT +healthz: ok"
fi
if ((HAVE_RELAY)); then
	check_output "status shows relay-a with its role" \
		"^relay-a +running +pid $RELAY_A_PID +http $WEFT_RELAY_PORT +(active|standby)\$"
	check_output "status shows relay-b with its role" \
		"^relay-b +running +pid $RELAY_B_PID +http $((WEFT_RELAY_PORT + 1)) +(active|standby)\$"
	check_eq "status shows one relay active, one standby" "active standby" \
		"$(sed -n 's/^relay-[ab] .* \(active\|standby\)$/\1/p' "$OUT" | sort | paste -sd ' ')"
fi
if ((HAVE_FANOUT)); then
	check_output "status shows fanout-a with its /healthz" \
		"^fanout-a +running +pid $FANOUT_A_PID +port $WEFT_FANOUT_PORT +http $((WEFT_FANOUT_PORT + 1)) +healthz: "
	check_output "status shows fanout-b with its /healthz" \
		"^fanout-b +running +pid $FANOUT_B_PID +port $((WEFT_FANOUT_PORT + 2)) +http $((WEFT_FANOUT_PORT + 3)) +healthz: "
else
	check_output "status says weft-fanout is not built" '^weft-fanout +not built'
fi

# Failover: kill -9 the active relay; the standby takes over, and up
# restarts the killed one, which then stands by.
if ((HAVE_RELAY)); then
	if [[ $(relay_active "$WEFT_RELAY_PORT") == 1 ]]; then
		active=relay-a active_pid=$RELAY_A_PID active_port=$WEFT_RELAY_PORT
		standby=relay-b standby_pid=$RELAY_B_PID standby_port=$((WEFT_RELAY_PORT + 1))
	else
		active=relay-b active_pid=$RELAY_B_PID active_port=$((WEFT_RELAY_PORT + 1))
		standby=relay-a standby_pid=$RELAY_A_PID standby_port=$WEFT_RELAY_PORT
	fi
	printf '# active: %s (pid %s); standby: %s (pid %s)\n' \
		"$active" "$active_pid" "$standby" "$standby_pid"
	# Only ever our own relay: its pidfile's pid, running in DIR.
	[[ $(readlink "/proc/$active_pid/cwd" 2>/dev/null) == "$DIR" ]] ||
		bail "pid $active_pid is not a relay of our stack"
	kill -KILL "$active_pid"
	check_eq "the killed relay ($active) is gone" "gone" "$(gone_state "$active_pid")"
	check_eq "the standby ($standby) is active within 5 s" "active" \
		"$(wait_active "$standby_port")"
	check_eq "the standby kept its pid" "alive" \
		"$(alive "$standby_pid" && echo alive || echo dead)"
	check_rc "status exits nonzero with a relay down" nonzero "$STACK" status --dir "$DIR"
	check_output "status says the killed relay is stopped" \
		"^$active +stopped +http $active_port\$"
	check_output "status says the standby is now active" \
		"^$standby +running +pid $standby_pid +http $standby_port +active\$"
	check_rc "up after the kill exits 0" 0 "$STACK" up --dir "$DIR" --ports auto
	check_output "up restarts the killed relay" "^stack: $active: started"
	check_output "up leaves the new active relay alone" "^stack: $standby: already running"
	read_pids
	new_pid=$RELAY_A_PID
	[[ $active == relay-a ]] || new_pid=$RELAY_B_PID
	check_eq "the restarted relay runs under a new pid" "new" \
		"$(alive "$new_pid" && [[ $new_pid != "$active_pid" ]] && echo new ||
			echo "not a new live pid ('$new_pid', was $active_pid)")"
	check_eq "the restarted relay stands by" "0" "$(relay_active "$active_port")"
	check_eq "the relay that took over is still active" "1" "$(relay_active "$standby_port")"
	check_eq "the restarted relay's /healthz answers 200 ok" "200 ok" \
		"$(healthz_state "$active_port")"
	check_eq "DIR/env is unchanged by the restart" "same" \
		"$(cmp -s "$TMP/env.before" "$DIR/env" && echo same || echo changed)"
	# For the stop order below: the standby goes first.
	active=$standby
	standby=$( [[ $active == relay-a ]] && echo relay-b || echo relay-a)
fi

# Down: the services (the fanouts, weft-write, then the relays, the standby
# before the active one), then Postgres and Redis.
check_rc "down exits 0" 0 "$STACK" down --dir "$DIR"
want_order=
((!HAVE_FANOUT)) || want_order+="fanout-a fanout-b "
((!HAVE_WRITE)) || want_order+="weft-write "
((!HAVE_RELAY)) || want_order+="$standby $active "
want_order+="postgres redis"
check_eq "down stops the services in order, then postgres and redis" "$want_order" \
	"$(sed -n 's/^stack: \([a-z-]*\): stopped.*/\1/p' "$OUT" | paste -sd ' ')"
if ((HAVE_RELAY)); then
	check_eq "relay-a pid is gone" "gone" "$(gone_state "$RELAY_A_PID")"
	check_eq "relay-b pid is gone" "gone" "$(gone_state "$RELAY_B_PID")"
	check_eq "the relays logged a clean stop" "yes yes" \
		"$(for r in relay-a relay-b; do
			tail -n 1 "$DIR/log/$r.log" | grep -q 'event=stopped' && echo yes || echo no
		done | paste -sd ' ')"
	check_eq "the relays' ports are closed" "closed closed" \
		"$(listening "$WEFT_RELAY_PORT") $(listening "$((WEFT_RELAY_PORT + 1))")"
	check_eq "no relay pidfile left" "none" \
		"$([[ -e $DIR/run/relay-a.pid || -e $DIR/run/relay-b.pid ]] && echo present || echo none)"
fi
if ((HAVE_FANOUT)); then
	check_eq "fanout-a pid is gone" "gone" "$(gone_state "$FANOUT_A_PID")"
	check_eq "fanout-b pid is gone" "gone" "$(gone_state "$FANOUT_B_PID")"
	check_eq "no fanout pidfile left" "none" \
		"$([[ -e $DIR/run/fanout-a.pid || -e $DIR/run/fanout-b.pid ]] && echo present || echo none)"
fi
if ((HAVE_WRITE)); then
	check_eq "weft-write pid is gone" "gone" "$(gone_state "$WRITE_PID")"
	check_eq "weft-write logged a clean stop (drained)" "yes" \
		"$(grep -q 'event=stopped' "$DIR/log/weft-write.log" && echo yes || echo no)"
	check_eq "weft-write port is closed" "closed" "$(listening "$WEFT_WRITE_PORT")"
	check_eq "weft-write http port is closed" "closed" "$(listening "$WEFT_WRITE_HTTP_PORT")"
	check_eq "no weft-write pidfile left" "none" \
		"$([[ -e $DIR/run/weft-write.pid ]] && echo present || echo none)"
fi
check_eq "postgres pid is gone" "gone" "$(gone_state "$PG_PID")"
check_eq "redis pid is gone" "gone" "$(gone_state "$REDIS_PID")"
check_eq "postgres port is closed" "closed" "$(listening "$WEFT_PG_PORT")"
check_eq "redis port is closed" "closed" "$(listening "$WEFT_REDIS_PORT")"
check_rc "status exits nonzero when down" nonzero "$STACK" status --dir "$DIR"
check_rc "down when down exits 0" 0 "$STACK" down --dir "$DIR"

# Without a weft-write or weft-fanout binary, and with WEFT_RELAY_BIN=none,
# the stack is Postgres and Redis, as before.
no_services=(env WEFT_WRITE_BIN="$TMP/no-such/weft-write" WEFT_RELAY_BIN=none
	WEFT_FANOUT_BIN="$TMP/no-such/weft-fanout")
check_rc "up without weft-write and weft-fanout binaries and WEFT_RELAY_BIN=none exits 0" 0 \
	"${no_services[@]}" "$STACK" up --dir "$DIR" --ports auto
check_output "up says weft-write was not started because it is not built" \
	'^stack: weft-write: not started because it is not built'
check_output "up says the relays were not started (WEFT_RELAY_BIN=none)" \
	'^stack: weft-relay: not started \(WEFT_RELAY_BIN=none\)'
check_output "up says weft-fanout was not started because it is not built" \
	"^stack: weft-fanout: not started because it is not built \(no $TMP/no-such/weft-fanout\)"
check_eq "no service pidfile" "none" \
	"$(for f in weft-write relay-a relay-b fanout-a fanout-b; do
		[[ ! -e $DIR/run/$f.pid ]] || echo "$f.pid"
	done | paste -sd ' ' | grep . || echo none)"
check_rc "status without weft-write, weft-relay and weft-fanout exits 0" 0 \
	"${no_services[@]}" "$STACK" status --dir "$DIR"
check_output "status says weft-write is not built" '^weft-write +not built'
check_output "status says weft-relay is off" '^weft-relay +off \(WEFT_RELAY_BIN=none\)$'
check_output "status says weft-fanout is not built" '^weft-fanout +not built'
check_eq "DIR/env is unchanged" "same" \
	"$(cmp -s "$TMP/env.before" "$DIR/env" && echo same || echo changed)"
if ((HAVE_WRITE)); then
	check_rc "status exits nonzero when weft-write is built but stopped" nonzero \
		env WEFT_RELAY_BIN=none "$STACK" status --dir "$DIR"
	check_output "status says weft-write is stopped" \
		"^weft-write +stopped +port $WEFT_WRITE_PORT"
fi
if ((HAVE_RELAY)); then
	check_rc "status exits nonzero when weft-relay is built but stopped" nonzero \
		env WEFT_WRITE_BIN=none "$STACK" status --dir "$DIR"
	check_output "status says relay-a is stopped" \
		"^relay-a +stopped +http $WEFT_RELAY_PORT\$"
	check_output "status says relay-b is stopped" \
		"^relay-b +stopped +http $((WEFT_RELAY_PORT + 1))\$"
fi
check_rc "down without the services exits 0" 0 "$STACK" down --dir "$DIR"

# A stale pidfile naming someone else's process must not get it killed.
sleep 300 &
DECOY_PID=$!
echo "$DECOY_PID" >"$DIR/run/redis.pid"
echo "$DECOY_PID" >"$DIR/run/weft-write.pid"
echo "$DECOY_PID" >"$DIR/run/relay-a.pid"
echo "$DECOY_PID" >"$DIR/run/fanout-b.pid"
check_rc "down with stale redis and service pidfiles exits 0" 0 "$STACK" down --dir "$DIR"
check_output "down says the weft-write pidfile is stale" \
	"^stack: weft-write: not running \(stale pidfile: pid $DECOY_PID "
check_output "down says the relay-a pidfile is stale" \
	"^stack: relay-a: not running \(stale pidfile: pid $DECOY_PID "
check_output "down says the fanout-b pidfile is stale" \
	"^stack: fanout-b: not running \(stale pidfile: pid $DECOY_PID "
check_eq "down leaves the stale pidfiles' process alone" "alive" \
	"$(alive "$DECOY_PID" && echo alive || echo killed)"
kill "$DECOY_PID"
wait "$DECOY_PID" 2>/dev/null || true # it ends by SIGTERM: status 143
DECOY_PID=

# Restart: same ports, data kept.
check_rc "up after down exits 0" 0 "$STACK" up --dir "$DIR" --ports auto
read_pids
check_eq "up after down reuses the remembered ports" "same" \
	"$(cmp -s "$TMP/env.before" "$DIR/env" && echo same || echo changed)"
check_eq "up after down keeps the JWT secret" "same" \
	"$(cmp -s "$TMP/jwt-secret.before" "$DIR/jwt-secret" && echo same || echo changed)"
if ((HAVE_WRITE)); then
	check_eq "weft-write runs again" "alive" \
		"$(alive "$WRITE_PID" && [[ $WRITE_PID != "$first_write" ]] && echo alive ||
			echo "not a new live pid ('$WRITE_PID', was $first_write)")"
	check_eq "weft-write /healthz answers 200 ok again" "200 ok" \
		"$(healthz_state "$WEFT_WRITE_HTTP_PORT")"
fi
if ((HAVE_RELAY)); then
	check_eq "both relays run again" "alive alive" \
		"$(alive "$RELAY_A_PID" && echo alive || echo "dead ('$RELAY_A_PID')") $(
			alive "$RELAY_B_PID" && echo alive || echo "dead ('$RELAY_B_PID')")"
	check_eq "exactly one relay is active again" "one active" "$(one_active)"
fi
if ((HAVE_FANOUT)); then
	check_eq "both fanouts run again" "alive alive" \
		"$(alive "$FANOUT_A_PID" && echo alive || echo dead) $(
			alive "$FANOUT_B_PID" && echo alive || echo dead)"
fi
check_eq "the XADD survived the restart (AOF)" "1" "$(rcli XLEN stack_test)"
check_eq "migrations still recorded once each" "$NMIG" \
	"$(sql 'SELECT count(*) FROM weft_schema_migrations')"
check_rc "final down exits 0" 0 "$STACK" down --dir "$DIR"
if ((HAVE_WRITE)); then
	check_eq "weft-write pid is gone after final down" "gone" "$(gone_state "$WRITE_PID")"
fi
if ((HAVE_RELAY)); then
	check_eq "relay pids are gone after final down" "gone gone" \
		"$(gone_state "$RELAY_A_PID") $(gone_state "$RELAY_B_PID")"
fi
if ((HAVE_FANOUT)); then
	check_eq "fanout pids are gone after final down" "gone gone" \
		"$(gone_state "$FANOUT_A_PID") $(gone_state "$FANOUT_B_PID")"
fi
check_eq "postgres pid is gone after final down" "gone" "$(gone_state "$PG_PID")"
check_eq "redis pid is gone after final down" "gone" "$(gone_state "$REDIS_PID")"

printf '1..%d\n' "$CHECKS"
if ((FAILED > 0)); then
	printf '# %d of %d checks failed\n' "$FAILED" "$CHECKS"
	exit 1
fi
printf '# all %d checks passed\n' "$CHECKS"
