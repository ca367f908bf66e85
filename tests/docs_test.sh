#!/usr/bin/env bash
# docs_test.sh BUILD_DIR: the reference docs match the code.
#   - every flag in each service's --help is in docs/operations.md, under
#     that service's heading;
#   - every Prometheus metric the services define is in docs/operations.md;
#   - every command in `weft --help` is in docs/cli.md, and every flag of
#     its commands' --help is either there or one of the connection flags
#     docs/operations.md lists;
#   - the documents README links to exist;
#   - docker-compose.yml gives each service the flags the local stack does.
set -euo pipefail

REPO=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
BUILD=${1:?usage: docs_test.sh BUILD_DIR}
OPS=$REPO/docs/operations.md
CLI_DOC=$REPO/docs/cli.md
fail=0
bad() { echo "docs_test: $*" >&2; fail=1; }

flags() { # BINARY [ARGS]: the --flags its --help lists
	"$@" --help | sed -n 's/^  --\([a-z][a-z-]*\)[= ].*/\1/p' | grep -vx 'help\|version' || true
}
section() { # HEADING: the lines of docs/operations.md under "### HEADING"
	awk -v h="### $1" '$0 == h { on = 1; next } /^##/ { on = 0 } on' "$OPS"
}

for svc in write relay fanout; do
	bin=$BUILD/services/$svc/weft-$svc
	body=$(section "weft-$svc")
	[[ -n $body ]] || bad "operations.md has no '### weft-$svc' section"
	for f in $(flags "$bin"); do
		grep -qF -- "\`--$f\`" <<<"$body" || bad "operations.md: weft-$svc --$f is not documented"
	done
done

metrics=$(grep -ohE 'metric_(gauge|counter|histogram)\(\s*out,\s*"weft_[a-z_]+"' \
	"$REPO"/services/*/*.c | grep -oE 'weft_[a-z_]+' | sort -u)
[[ -n $metrics ]] || bad "found no metrics in services/"
for m in $metrics; do
	grep -qF -- "\`$m\`" "$OPS" || bad "operations.md: metric $m is not documented"
done

weft=$BUILD/tools/weft
cmds=$("$weft" --help | sed -n 's/^  \([a-z][a-z-]*\)  .*/\1/p')
[[ -n $cmds ]] || bad "weft --help lists no commands"
conn=$(section "weft (the CLI) and weft-demo")
for c in $cmds; do
	grep -qF -- "\`weft $c" "$CLI_DOC" || bad "cli.md: 'weft $c' is not documented"
	[[ $c == version ]] && continue
	for f in $(flags "$weft" "$c"); do
		grep -qF -- "--$f" "$CLI_DOC" || grep -qF -- "\`--$f\`" <<<"$conn" ||
			bad "weft $c --$f is in neither cli.md nor operations.md"
	done
done
for f in $(flags "$BUILD/tools/weft-demo"); do
	grep -qF -- "--$f" "$CLI_DOC" || grep -qF -- "\`--$f\`" <<<"$conn" ||
		bad "weft-demo --$f is in neither cli.md nor operations.md"
done

for d in $(grep -oE '\(docs/[a-zA-Z_]+\.md\)' "$REPO/README.md" | tr -d '()' | sort -u); do
	[[ -f $REPO/$d ]] || bad "README links to $d, which does not exist"
done
for d in architecture protocol operations client performance cli; do
	[[ -f $REPO/docs/$d.md ]] || bad "docs/$d.md is missing"
done

# docker-compose.yml runs each service with the flags the local stack gives
# it (the native tests run the stack, so they cover what compose runs)
stack_flags() { # CASE: the flags deploy/local/stack's svc_args sets there
	{
		awk -v c="	$1)" '/^svc_args\(\)/ { f = 1 } f && $0 == c { on = 1; next }
			on && /;;/ { exit } on' "$REPO/deploy/local/stack"
		echo '"--log-level'
	} | grep -oE '"--[a-z-]+' | tr -d '"' | sort -u
}
compose_flags() { # SERVICE: the flags docker-compose.yml gives it
	awk -v s="  $1:" '$0 ~ "^"s { on = 1; next } on && /^  [a-z]/ { exit } on' \
		"$REPO/docker-compose.yml" | grep -v '^ *#' | grep -oE -- '--[a-z-]+=' | tr -d '=' | sort -u
}
for pair in weft-write:write 'relay-*:relay-a' 'fanout-*:fanout'; do
	want=$(stack_flags "${pair%%:*}")
	got=$(compose_flags "${pair#*:}")
	[[ -n $want ]] || bad "no flags found for ${pair%%:*} in deploy/local/stack"
	[[ $want == "$got" ]] || bad "docker-compose.yml ${pair#*:} has flags" \
		"$(echo $got), the local stack gives $(echo $want)"
done

((fail == 0)) && echo "docs_test: ok: flags, metrics and commands are all documented"
exit "$fail"
