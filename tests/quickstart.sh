#!/usr/bin/env bash
# quickstart.sh: README Quick start command one, as a newcomer runs it, on
# a clean checkout of this repository's HEAD: scripts/quickstart must
# finish (within WEFT_QUICKSTART_TIMEOUT seconds, default 900) with the
# convergence scenario converged, and leave a stack the interactive demo
# joins: weft-demo, in tmux, as alice, shows the team live.  The stack is
# stopped and the checkout removed afterwards (kept on failure, for the
# logs).  scripts/test runs this last.
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
LIMIT=${WEFT_QUICKSTART_TIMEOUT:-900}
WORK=$(mktemp -d /tmp/weft-quickstart.XXXXXX)
chmod 755 -- "$WORK" # as root, Postgres runs as postgres and must reach its data
CO=$WORK/weft
SOCK=$WORK/tmux.sock
ok=0
cleanup() {
	tmux -S "$SOCK" kill-server 2>/dev/null || true
	[[ -x $CO/deploy/local/stack ]] && (cd "$CO" && deploy/local/stack down >/dev/null 2>&1) || true
	if ((ok)); then rm -rf -- "$WORK"; else echo "quickstart.sh: kept $WORK for its logs" >&2; fi
}
trap cleanup EXIT

git clone -q -- "$REPO" "$CO"
cd "$CO"
echo "quickstart.sh: scripts/quickstart in a clean checkout of $(git rev-parse --short HEAD)"
# free ports, so a developer's own stack on the default ones is left alone
if ! WEFT_STACK_PORTS=auto timeout "$LIMIT" scripts/quickstart >"$WORK/quickstart.log" 2>&1; then
	tail -n 40 "$WORK/quickstart.log" >&2
	echo "quickstart.sh: scripts/quickstart failed or ran over ${LIMIT}s (log: $WORK/quickstart.log)" >&2
	exit 1
fi
grep -q '^Converged: both clients hold the same 3 issues' "$WORK/quickstart.log" || {
	echo "quickstart.sh: the scenario did not report convergence" >&2
	exit 1
}
grep -q 'scripts/demo' "$WORK/quickstart.log" || {
	echo "quickstart.sh: the closing text does not say how to open the demo" >&2
	exit 1
}

# the interactive demo joins the stack it left
set -a
# shellcheck disable=SC1091
. var/stack/env
set +a
# the demo, then how it ended (a demo that exits at once leaves its
# last screen and its status for the diagnostic)
tmux -S "$SOCK" new-session -d -s q -x 120 -y 24 \
	"WEFT_TOKEN=\$(cat var/stack/demo/alice.token) build/tools/weft-demo --space demo --store $WORK/alice-app.db --write-url $WEFT_WRITE_URL --fanout-urls $WEFT_FANOUT_A_URL; echo exit=\$?; sleep 600"
screen=
for _ in $(seq 100); do
	screen=$(tmux -S "$SOCK" capture-pane -p -t q:0.0 || true)
	[[ $screen == *'[live]'* && $screen == *'Login fails on Safari'* ]] && break
	sleep 0.2
done
if [[ $screen != *'[live]'* || $screen != *'Login fails on Safari'* ]]; then
	printf '%s\n' "$screen" >&2
	echo "quickstart.sh: weft-demo did not show the demo team live" >&2
	exit 1
fi
tmux -S "$SOCK" send-keys -t q:0.0 q
ok=1
echo "quickstart.sh: ok: the scenario converged and weft-demo joined the stack"
