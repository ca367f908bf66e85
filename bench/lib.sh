# bench/lib.sh - helpers the bench scripts source.
# shellcheck shell=bash

# free_port_pair: prints a loopback port P with P and P + 1 both free,
# below the kernel's ephemeral range (32768 up), so that no outgoing
# connection (pgbench's, say) can take it between the pick and the bind
free_port_pair() {
	local p tries=0
	while ((tries++ < 500)); do
		p=$((20000 + RANDOM % 12000))
		ss -Htan "( sport = :$p or sport = :$((p + 1)) )" | grep -q . ||
			{ echo "$p"; return 0; }
	done
	echo "bench: no free pair of ports in 20000-32000" >&2
	return 1
}
