#!/usr/bin/env bash
# What the triggers cost the application's writes. On a throwaway local
# cluster (fsync off) with 100k users of sql/examples/fleet.sql, it runs each
# write with the tenantcache triggers (log on) and then without any trigger,
# interleaved, `reps` times, and prints a markdown section: each write's
# throughput (pgbench, single-row statements) or time (one 100k-row
# statement) both ways and their ratio, as the range over the repetitions.
# A second table splits the cost of a watched single-row UPDATE: the same
# triggers without the NOTIFY (the notifying commit's lock is PostgreSQL's)
# and without the log.
#
#   bench/sql_write_cost.sh [seconds per pgbench run, default 5] [repetitions, default 2]
set -euo pipefail
secs=${1:-5}
reps=${2:-2}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
pgbin=${TC_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)}

work=$(mktemp -d /tmp/tc-sqlbench-XXXXXX)
chmod 755 "$work"
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres: "$work"
cleanup() { as_pg "$pgbin/pg_ctl" -D "$work/data" -m immediate -w stop >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT

as_pg "$pgbin/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 --locale=C -N >/dev/null
port=$((20000 + RANDOM % 20000))
as_pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/log" -w -o "-p $port -c listen_addresses='' -c unix_socket_directories='$work' -c fsync=off -c synchronous_commit=off -c autovacuum=off" start >/dev/null
psql=(psql -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres -d postgres)
"${psql[@]}" -f "$root/sql/install.sql" -f "$root/sql/examples/fleet.sql" \
  -c "SELECT fleet.generate(100000, 1000); CREATE SEQUENCE fleet.bench_ids START 1000000" >/dev/null

watch_sql="SELECT tenantcache.watch_table('fleet.user_accounts', NULL, '{\"user\": \"id\"}', ARRAY['yacht_id', 'role', 'active']);"
unwatch_sql="SELECT tenantcache.unwatch_table('fleet.user_accounts');"
watch() { "${psql[@]}" -c "$watch_sql" >/dev/null; }
unwatch() { "${psql[@]}" -c "$unwatch_sql" >/dev/null; }
set_log() { "${psql[@]}" -c "UPDATE tenantcache.settings SET log_enabled = $1" >/dev/null; }
# The message function as installed, and a copy that builds the same payload
# but does not NOTIFY.
"${psql[@]}" -At -c "SELECT pg_get_functiondef('tenantcache._emit(\"char\", text, text)'::regprocedure)" >"$work/emit.sql"
sed 's/sent := pg_notify(/sent := concat(/' "$work/emit.sql" >"$work/emit-silent.sql"
grep -q 'sent := concat(' "$work/emit-silent.sql" || { echo "sql_write_cost.sh: _emit no longer calls pg_notify as expected" >&2; exit 1; }
set_notify() { "${psql[@]}" -f "$work/$([ "$1" = on ] && echo emit.sql || echo emit-silent.sql)" >/dev/null; }

# The statements measured, once for pgbench (as scripts) and for the
# instruction counts below: @U@ is a random user, @R@ a random role, @T@ a
# random tenant.
declare -A stmt=(
  [watched]="UPDATE fleet.user_accounts SET role = (ARRAY['owner','captain','crew','guest'])[@R@] WHERE id = fleet.user_id(@U@);"
  [unwatched]="UPDATE fleet.user_accounts SET last_login_at = now() WHERE id = fleet.user_id(@U@);"
  [insert]="INSERT INTO fleet.user_accounts (id, yacht_id, email, role) VALUES (fleet.user_id(nextval('fleet.bench_ids')::integer), fleet.tenant_id(@T@), 'bench', 'crew');"
)
for k in "${!stmt[@]}"; do
  {
    [[ ${stmt[$k]} == *@U@* ]] && echo '\set u random(1, 100000)'
    [[ ${stmt[$k]} == *@R@* ]] && echo '\set r random(1, 4)'
    [[ ${stmt[$k]} == *@T@* ]] && echo '\set t random(1, 1000)'
    sed 's/@U@/:u/g; s/@R@/:r/g; s/@T@/:t/g' <<<"${stmt[$k]}"
  } >"$work/$k.sql"
done

tps() {  # script clients -> transactions per second
  local out
  if ! out=$(pgbench -n -h "$work" -p "$port" -U postgres -c "$2" -j "$2" -T "$secs" -f "$work/$1" postgres 2>&1); then
    echo "$out" >&2
    exit 1
  fi
  sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n 1
}
ms() {  # SQL -> milliseconds of one run of it (after a VACUUM, not timed)
  "${psql[@]}" -c "VACUUM fleet.user_accounts" >/dev/null
  "${psql[@]}" -c '\timing on' -c "$1" | sed -n 's/^Time: \([0-9.]*\) ms.*/\1/p' | tail -n 1
}
prune() { "${psql[@]}" -c "SELECT tenantcache.prune_log('0')" >/dev/null; }

declare -A v  # v[row,config,rep]
rows_tps=("watched 1" "unwatched 1" "watched 8" "unwatched 8" "insert 1")
for rep in $(seq 1 "$reps"); do
  for row in "${rows_tps[@]}"; do
    read -r what clients <<<"$row"
    watch
    v[$row,on,$rep]=$(tps "$what.sql" "$clients")
    prune
    if [ "$what" = watched ]; then
      set_notify off
      v[$row,silent,$rep]=$(tps "$what.sql" "$clients")
      set_notify on
      prune
      set_log false
      v[$row,nolog,$rep]=$(tps "$what.sql" "$clients")
      set_log true
    fi
    unwatch
    v[$row,off,$rep]=$(tps "$what.sql" "$clients")
  done
  # Which goes first alternates between the repetitions: the first 100k-row
  # statements after the pgbench runs are slower either way.
  order="on off"; [ $((rep % 2)) -eq 0 ] && order="off on"
  for cfg in $order; do
    [ "$cfg" = on ] && watch || unwatch
    v[update100k,$cfg,$rep]=$(ms "UPDATE fleet.user_accounts SET role = CASE role WHEN 'crew' THEN 'guest' ELSE 'crew' END")
    v[unwatched100k,$cfg,$rep]=$(ms "UPDATE fleet.user_accounts SET last_login_at = now()")
    v[insert100k,$cfg,$rep]=$(ms "INSERT INTO fleet.user_accounts (id, yacht_id, email, role) SELECT fleet.user_id(2000000 + g), fleet.tenant_id(1 + g % 1000), 'bulk', 'crew' FROM generate_series(1, 100000) g")
    v[delete100k,$cfg,$rep]=$(ms "DELETE FROM fleet.user_accounts WHERE email = 'bulk'")
    prune
  done
done
watch

# Instructions per statement: each statement run n1 and then n2 times by a
# single-user backend (postgres --single, on a copy of the cluster) under
# callgrind, the difference divided by n2 - n1 (so that start-up and the
# first executions' planning cancel out). Unlike throughput on a shared VM,
# the count is the same from run to run; it leaves out the kernel (the WAL
# write, the wake-ups).
ir_n1=50 ir_n2=250 ir_all=1
# A smoke run (1 s per pgbench run) counts the two UPDATEs only.
[ "$secs" -le 1 ] && ir_n1=10 ir_n2=30 ir_all=0
declare -A ir  # ir[statement,config]
if command -v valgrind >/dev/null; then
  as_pg "$pgbin/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null
  instructions() {  # setup-sql statement-template count -> instructions of the whole run
    local d=$work/ir
    rm -rf "$d"
    cp -a "$work/data" "$d"
    # -j: a statement ends at ";" and an empty line, so the setup's own
    # empty lines go.
    { sed '/^[[:space:]]*$/d' <<<"$1"; printf ';\n\n'
      awk -v n="$3" -v t="$2" 'BEGIN { srand(7); for (i = 0; i < n; i++) { s = t
        gsub(/@U@/, int(1 + rand() * 100000), s); gsub(/@R@/, int(1 + rand() * 4), s)
        gsub(/@T@/, int(1 + rand() * 1000), s); print s "\n" } }'
    } >"$d.in"
    [ "$(id -u)" -eq 0 ] && chown -R postgres: "$d" "$d.in"
    as_pg valgrind --tool=callgrind --callgrind-out-file="$d.cg" "$pgbin/postgres" --single -j -D "$d" \
      -c fsync=off -c synchronous_commit=off -c autovacuum=off postgres <"$d.in" >"$d.out" 2>"$d.err"
    if grep -q ERROR "$d.err" "$d.out"; then
      echo "sql_write_cost.sh: a single-user run failed:" >&2
      grep -m 3 ERROR "$d.err" "$d.out" >&2
      exit 1
    fi
    sed -n 's/^\(summary\|totals\): //p' "$d.cg" | head -n 1
    rm -rf "$d" "$d.in" "$d.cg" "$d.out" "$d.err"
  }
  per_statement() {  # setup-sql statement-template
    local a b
    a=$(instructions "$1" "$2" "$ir_n1")
    b=$(instructions "$1" "$2" "$ir_n2")
    echo $(((b - a) / (ir_n2 - ir_n1)))
  }
  kinds=(watched unwatched)
  [ "$ir_all" = 1 ] && kinds+=(insert)
  for k in "${kinds[@]}"; do
    ir[$k,off]=$(per_statement "$unwatch_sql" "${stmt[$k]}")
    ir[$k,on]=$(per_statement "$watch_sql" "${stmt[$k]}")
  done
  if [ "$ir_all" = 1 ]; then
    ir[watched,silent]=$(per_statement "$watch_sql $(cat "$work/emit-silent.sql");" "${stmt[watched]}")
    ir[watched,nolog]=$(per_statement "$watch_sql UPDATE tenantcache.settings SET log_enabled = false;" "${stmt[watched]}")
  fi
fi

range() {  # values... -> "min–max" (or the one value), rounded
  printf '%s\n' "$@" | sort -g | awk 'function fmt(x) { s = sprintf(f, x); return s ~ /^-0(\.0+)?$/ ? substr(s, 2) : s }
    { a[NR] = $1 } END { f = (a[1] >= 100) ? "%.0f" : "%.2f"; lo = fmt(a[1]); hi = fmt(a[NR])
    if (NR == 1 || lo == hi) printf "%s", lo; else printf "%s–%s", lo, hi }'
}
ratios() {  # key numerator-config denominator-config [invert] -> per-rep ratios
  for rep in $(seq 1 "$reps"); do
    awk -v a="${v[$1,$2,$rep]}" -v b="${v[$1,$3,$rep]}" 'BEGIN { printf "%.4f\n", a / b }'
  done
}
added() {  # key clients -> per-rep ms a single-row write takes longer with the triggers (latency = clients / tps)
  for rep in $(seq 1 "$reps"); do
    awk -v a="${v[$1,on,$rep]}" -v b="${v[$1,off,$rep]}" -v c="$2" 'BEGIN { printf "%.4f\n", c * 1000 * (1 / a - 1 / b) }'
  done
}
added_per_row() {  # key -> per-rep µs a row of the 100k-row statement takes longer with the triggers
  for rep in $(seq 1 "$reps"); do
    awk -v a="${v[$1,on,$rep]}" -v b="${v[$1,off,$rep]}" 'BEGIN { printf "%.4f\n", (a - b) * 1000 / 100000 }'
  done
}
cell() {  # key config
  local xs=()
  for rep in $(seq 1 "$reps"); do xs+=("${v[$1,$2,$rep]}"); done
  range "${xs[@]}"
}

echo "## 10. What the triggers cost the application's writes"
echo
echo "\`bench/sql_write_cost.sh $secs $reps\`: PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), a throwaway"
echo "cluster (fsync off, synchronous_commit off, autovacuum off), 100k users of \`sql/examples/fleet.sql\`"
echo "(\`user_accounts\` watched with \`columns => {yacht_id, role, active}\`, the log on). Each write runs"
echo "with the tenantcache triggers and without any trigger, interleaved, $reps times: ranges over the"
echo "runs; the ratio is taken within each run (above 1 = faster without triggers for times, below 1 ="
echo "slower with triggers for throughput). Single-row writes: pgbench, ${secs}s per run. Added: how much"
echo "longer a write takes with the triggers (single-row: clients / tps; 100k-row: per row)."
echo
echo "| write | no triggers | with tenantcache triggers | ratio | added | target |"
echo "|---|---:|---:|---:|---:|---|"
echo "| single-row UPDATE of a watched column (\`role\`), 1 client | $(cell "watched 1" off) tps | $(cell "watched 1" on) tps | $(range $(ratios "watched 1" on off))× | $(range $(added "watched 1" 1)) ms | ≥ 0.7× |"
echo "| single-row UPDATE of an **unwatched** column (\`last_login_at\`), 1 client — sends nothing | $(cell "unwatched 1" off) tps | $(cell "unwatched 1" on) tps | $(range $(ratios "unwatched 1" on off))× | $(range $(added "unwatched 1" 1)) ms | ≥ 0.95× |"
echo "| single-row UPDATE of a watched column, 8 clients | $(cell "watched 8" off) tps | $(cell "watched 8" on) tps | $(range $(ratios "watched 8" on off))× | $(range $(added "watched 8" 8)) ms | ≥ 0.5× |"
echo "| single-row UPDATE of an unwatched column, 8 clients — sends nothing | $(cell "unwatched 8" off) tps | $(cell "unwatched 8" on) tps | $(range $(ratios "unwatched 8" on off))× | $(range $(added "unwatched 8" 8)) ms | ≥ 0.95× |"
echo "| single-row INSERT, 1 client | $(cell "insert 1" off) tps | $(cell "insert 1" on) tps | $(range $(ratios "insert 1" on off))× | $(range $(added "insert 1" 1)) ms | |"
echo "| one 100k-row UPDATE of a watched column (one flush) | $(cell update100k off) ms | $(cell update100k on) ms | $(range $(ratios update100k on off))× the time | $(range $(added_per_row update100k)) µs/row | ≤ 1.5× |"
echo "| one 100k-row UPDATE of an **unwatched** column — sends nothing | $(cell unwatched100k off) ms | $(cell unwatched100k on) ms | $(range $(ratios unwatched100k on off))× the time | $(range $(added_per_row unwatched100k)) µs/row | ≤ 1.05× |"
echo "| one 100k-row INSERT (one flush) | $(cell insert100k off) ms | $(cell insert100k on) ms | $(range $(ratios insert100k on off))× the time | $(range $(added_per_row insert100k)) µs/row | |"
echo "| one 100k-row DELETE (one flush) | $(cell delete100k off) ms | $(cell delete100k on) ms | $(range $(ratios delete100k on off))× the time | $(range $(added_per_row delete100k)) µs/row | |"
echo
echo "Where a watched single-row UPDATE's cost goes (the same triggers, one part switched off; ratio to no"
echo "triggers in the same run). Without NOTIFY, commits no longer queue for the lock PostgreSQL takes to"
echo "order notifying transactions (it is taken at every NOTIFY-ing commit, whoever sends it):"
echo
echo "| single-row UPDATE of a watched column | 1 client | 8 clients |"
echo "|---|---:|---:|"
for cfg in "on:triggers, log, NOTIFY (as installed)" "silent:triggers and log, no NOTIFY" "nolog:triggers and NOTIFY, no log (log_enabled = false)"; do
  echo "| ${cfg#*:} | $(cell "watched 1" "${cfg%%:*}") tps ($(range $(ratios "watched 1" "${cfg%%:*}" off))×) | $(cell "watched 8" "${cfg%%:*}") tps ($(range $(ratios "watched 8" "${cfg%%:*}" off))×) |"
done
echo "| no triggers | $(cell "watched 1" off) tps | $(cell "watched 8" off) tps |"
echo
if [ ${#ir[@]} -gt 0 ]; then
  kinstr() { awk -v a="$1" 'BEGIN { printf "%.0f k", a / 1000 }'; }
  as_ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
  echo "The same statements counted in instructions (callgrind, a single-user backend on a copy of the"
  echo "cluster, each statement run $ir_n1 and then $ir_n2 times: the difference per statement). The count"
  echo "does not move between runs as throughput does here; it leaves out the kernel's part (the WAL write,"
  echo "the wake-ups). Ratio: instructions without triggers / with them, comparable with the tps ratios above:"
  echo
  echo "| statement | no triggers | with tenantcache triggers | ratio |"
  echo "|---|---:|---:|---:|"
  ir_row() {  # label statement config
    [ -n "${ir[$2,$3]:-}" ] || return 0
    echo "| $1 | $(kinstr "${ir[$2,off]}") | $(kinstr "${ir[$2,$3]}") | $(as_ratio "${ir[$2,off]}" "${ir[$2,$3]}") |"
  }
  ir_row "single-row UPDATE of a watched column" watched on
  ir_row "single-row UPDATE of an **unwatched** column" unwatched on
  ir_row "single-row INSERT" insert on
  ir_row "watched UPDATE, triggers and log, no NOTIFY" watched silent
  ir_row "watched UPDATE, triggers and NOTIFY, no log" watched nolog
  echo
else
  echo "Instructions per statement: not counted, valgrind is not installed (packaging/bootstrap.sh --bench installs it)."
  echo "sql_write_cost.sh: valgrind not found: the instruction counts are left out" >&2
  echo
fi
