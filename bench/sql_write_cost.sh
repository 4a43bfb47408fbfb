#!/usr/bin/env bash
# What the triggers cost the application's writes: pgbench runs the same
# single-row UPDATE of a watched column (and, for contrast, of an unwatched
# one) on a throwaway local cluster, without triggers, with triggers and the
# invalidation log, and with triggers but no log. Prints transactions per
# second and mean latency for each.
#
#   bench/sql_write_cost.sh [seconds per run, default 10] [clients, default 1]
set -euo pipefail
secs=${1:-10}
clients=${2:-1}
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
as_pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/log" -w -o "-p $port -c listen_addresses='' -c unix_socket_directories='$work' -c fsync=off -c synchronous_commit=off" start >/dev/null
psql=(psql -X -q -v ON_ERROR_STOP=1 -h "$work" -p "$port" -U postgres -d postgres)
"${psql[@]}" -f "$root/sql/install.sql" -f "$root/sql/examples/fleet.sql" -c "SELECT fleet.generate(100000, 1000)" >/dev/null

cat > "$work/watched.sql" <<'SQL'
\set u random(1, 100000)
\set r random(1, 4)
UPDATE fleet.user_accounts SET role = (ARRAY['owner','captain','crew','guest'])[:r] WHERE id = fleet.user_id(:u);
SQL
cat > "$work/unwatched.sql" <<'SQL'
\set u random(1, 100000)
UPDATE fleet.user_accounts SET last_login_at = now() WHERE id = fleet.user_id(:u);
SQL

run() {  # label script
  local out
  if ! out=$(pgbench -n -h "$work" -p "$port" -U postgres -c "$clients" -j "$clients" -T "$secs" -f "$work/$2" postgres 2>&1); then
    echo "$out" >&2
    exit 1
  fi
  printf '%-42s %10s tps  %8s ms\n' "$1" "$(sed -n 's/^tps = \([0-9.]*\).*/\1/p' <<<"$out" | head -n1)" \
    "$(sed -n 's/^latency average = \([0-9.]*\) ms/\1/p' <<<"$out")"
  "${psql[@]}" -c "SELECT tenantcache.prune_log('0')" >/dev/null
}

echo "single-row UPDATE, $clients client(s), ${secs}s each, PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}')"
run "watched column, triggers + log" watched.sql
run "unwatched column, triggers + log" unwatched.sql
"${psql[@]}" -c "UPDATE tenantcache.settings SET log_enabled = false" >/dev/null
run "watched column, triggers, no log" watched.sql
"${psql[@]}" -c "SELECT tenantcache.unwatch_table('fleet.user_accounts')" >/dev/null
run "watched column, no triggers" watched.sql
