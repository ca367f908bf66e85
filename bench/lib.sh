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

# seed_write_bench URL USERS: what write_bench writes into: spaces s1..s100,
# users bench-0..USERS-1 writers in every one (write_bench's connection k
# is user bench-k), and 100,000 records items/r1..r100000 spread over the
# spaces.  Spaces already there are kept.
seed_write_bench() {
	psql -X -q -v ON_ERROR_STOP=1 -v users="$2" -d "$1" <<'SQL'
INSERT INTO weft_spaces (id, created_by)
	SELECT 's' || g, 'bench' FROM generate_series(1, 100) g
	ON CONFLICT DO NOTHING;
INSERT INTO weft_members (space, user_id, role)
	SELECT 's' || g, 'bench-' || u, 'writer'
	FROM generate_series(1, 100) g, generate_series(0, :users - 1) u;
INSERT INTO weft_records (tbl, id, space, version, data, updated_by)
	SELECT 'items', 'r' || g, 's' || (g % 100 + 1), 1,
	       jsonb_build_object('n', 0, 'title', 'item number ' || g,
				  'status', 'open'), 'bench'
	FROM generate_series(1, 100000) g;
VACUUM ANALYZE weft_records, weft_members, weft_spaces;
SQL
}
