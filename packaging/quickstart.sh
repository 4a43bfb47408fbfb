#!/usr/bin/env bash
# The README's first command: the whole story on a throwaway local PostgreSQL.
#
#   packaging/quickstart.sh [--keep]
#
# Installs what is missing (Debian packages), builds, starts a private
# PostgreSQL (initdb in a temporary directory; nothing outside is needed),
# loads the example fleet schema with 100k users over 1k tenants, installs the
# SQL, starts tenantcached, then shows with real output: a lookup that misses
# and is filled, the same lookup as a hit, a role UPDATE invalidating the entry
# at commit, a tenant change reaching every entry of the tenant, and
# tenantcachectl status. Everything it started is stopped at the end, unless
# --keep, which leaves it running and prints how to connect and how to stop.
set -euo pipefail

keep=false
case "${1:-}" in
  --keep) keep=true ;;
  "") ;;
  -h | --help)
    sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "usage: $0 [--keep]" >&2
    exit 2
    ;;
esac

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
if [ -t 1 ]; then bold=$'\033[1m' dim=$'\033[2m' off=$'\033[0m'; else bold='' dim='' off=''; fi
say() { printf '\n%s==> %s%s\n' "$bold" "$*" "$off"; }
run() { printf '%s$ %s%s\n' "$dim" "$*" "$off"; "$@"; }

say "Installing build dependencies (Debian packages; nothing if all present)"
bash packaging/bootstrap.sh

say "Building tenantcached, tenantcachectl and libtenantcache"
cmake -S . -B build/quickstart -G Ninja -DCMAKE_BUILD_TYPE=Release -DTC_BUILD_TESTS=OFF -DTC_BUILD_BENCH=OFF >/dev/null
cmake --build build/quickstart
bin=$root/build/quickstart
ctl() { "$bin/tenantcachectl" --cache "$cache" "$@"; }

pgbin=${TC_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)}
[ -x "$pgbin/initdb" ] || { echo "no PostgreSQL server found (apt-get install postgresql)" >&2; exit 1; }
work=$(mktemp -d /tmp/tenantcache-quickstart-XXXXXX)
chmod 755 "$work"
# The daemon refuses a cache directory other users can write (such as /dev/shm
# itself): a private one.
cachedir=$(mktemp -d /tmp/tenantcache-quickstart-cache-XXXXXX)
cache=$cachedir/cache
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" -eq 0 ] && chown postgres: "$work"
daemon_pid=""
stop_all() {
  [ -n "$daemon_pid" ] && kill -TERM "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null || true
  as_pg "$pgbin/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$work" "$cachedir"
}
$keep || trap stop_all EXIT

say "Starting a throwaway PostgreSQL in $work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg "$pgbin/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 --locale=C -N >/dev/null
as_pg "$pgbin/pg_ctl" -D "$work/data" -l "$work/postgresql.log" -w \
  -o "-p $port -c listen_addresses='' -c unix_socket_directories='$work'" start >/dev/null
conninfo="host=$work port=$port dbname=fleet user=postgres"
psql=(psql -X -q -v ON_ERROR_STOP=1 "$conninfo")
as_pg "$pgbin/createdb" -h "$work" -p "$port" -U postgres fleet
echo "PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on $work (port $port)"

say "Installing the SQL and the example fleet schema (100k users over 1k tenants)"
run "$bin/tenantcachectl" install-sql --conninfo "$conninfo" --sql-dir "$root/sql"
"${psql[@]}" -f sql/examples/fleet.sql
start=$(date +%s.%N)
"${psql[@]}" -c "SELECT fleet.generate(100000, 1000)" >/dev/null
awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "generated in %.1f s; watched tables:\n", b - a }'
"${psql[@]}" -c "SELECT table_name, tenant_column, triggers FROM tenantcache.watched_tables"

say "Starting tenantcached"
cat >"$work/tenantcached.toml" <<EOF
[daemon]
log_level = "info"

[cache]
path = "$cache"
capacity = 200000

[control]
socket = "$work/tenantcached.sock"

[[source]]
name = "main"
conninfo = "$conninfo"

[[namespace]]
name = "user"
kind = "uuid"
query = """
  SELECT r.id::text AS tenant_id, r.yacht_code AS tenant_code, r.tenant_url, u.role
    FROM fleet.user_accounts u JOIN fleet.fleet_registry r ON r.id = u.yacht_id
   WHERE u.id = \$1::uuid AND u.active"""
tenant_column = "tenant_id"
fields = ["tenant_code", "tenant_url", "role"]

[[namespace]]
name = "tenant"
kind = "uuid"
query = "SELECT id::text AS tenant_id, yacht_code, slug, host, tenant_url FROM fleet.fleet_registry WHERE id = \$1::uuid"
tenant_column = "tenant_id"
fields = ["yacht_code", "slug", "host", "tenant_url"]

[[namespace]]
name = "tenant_by_slug"
kind = "slug"
query = "SELECT id::text AS tenant_id, yacht_code FROM fleet.fleet_registry WHERE slug = \$1"
tenant_column = "tenant_id"
fields = ["yacht_code"]

[[namespace]]
name = "tenant_by_host"
kind = "host"
query = "SELECT id::text AS tenant_id, yacht_code FROM fleet.fleet_registry WHERE lower(host) = \$1"
tenant_column = "tenant_id"
fields = ["yacht_code"]
EOF
run "$bin/tenantcached" --check-config --config "$work/tenantcached.toml"
"$bin/tenantcached" --config "$work/tenantcached.toml" 2>"$work/tenantcached.log" &
daemon_pid=$!
for _ in $(seq 1 200); do
  ctl status >/dev/null 2>&1 && break
  kill -0 "$daemon_pid" 2>/dev/null || { cat "$work/tenantcached.log"; exit 1; }
  sleep 0.1
done
ctl status >/dev/null || { echo "tenantcached did not become ready:"; cat "$work/tenantcached.log"; exit 1; }
sed 's/^/  /' "$work/tenantcached.log"

user=00000000-0001-4000-8000-000000000007   # user 7: tenant 7
tenant=00000000-0000-4000-8000-000000000007

say "A lookup of user $user: not cached yet, so the daemon fills it"
run "$bin/tenantcachectl" --cache "$cache" get user "$user" || true
run "$bin/tenantcachectl" --cache "$cache" lookup user "$user"

say "The same lookup again: a hit in shared memory, no daemon, no database"
run "$bin/tenantcachectl" --cache "$cache" get user "$user"

say "A role UPDATE: the entry is invalid the moment the commit is delivered"
ctl get user "$user" --wait-change 10000 >"$work/watch.out" &
watcher=$!
for _ in $(seq 1 100); do grep -q watching "$work/watch.out" 2>/dev/null && break; sleep 0.05; done
printf '%s$ UPDATE fleet.user_accounts SET role = '"'"'guest'"'"' WHERE id = '"'"'%s'"'"'%s\n' "$dim" "$user" "$off"
committed=$("${psql[@]}" -At -c "UPDATE fleet.user_accounts SET role = 'guest' WHERE id = '$user'" \
  -c "SELECT extract(epoch FROM clock_timestamp())")
wait "$watcher"
seen=$(sed -n 's/.* at \([0-9.]*\)$/\1/p' "$work/watch.out")
awk -v s="$seen" -v c="$committed" 'BEGIN { printf "entry invalid in shared memory %.0f us after the commit returned (negative: before psql got its own answer)\n", (s - c) * 1e6 }'
run "$bin/tenantcachectl" --cache "$cache" lookup user "$user"

say "A tenant change reaches every entry of that tenant, in every namespace"
for u in 7 1007 2007 3007; do ctl lookup user "$(printf '00000000-0001-4000-8000-%012x' "$u")" >/dev/null 2>&1; done
ctl lookup tenant "$tenant" >/dev/null 2>&1
ctl lookup tenant_by_slug yacht-7 >/dev/null 2>&1
ctl lookup tenant_by_host YACHT-7.fleet.example.com:443 >/dev/null 2>&1
echo "cached: users 7, 1007, 2007, 3007 of tenant 7; tenant 7 by id, slug and Host header"
run "${psql[@]}" -c "UPDATE fleet.fleet_registry SET tenant_url = 'https://yacht-7.example.org' WHERE id = '$tenant'"
for _ in $(seq 1 100); do ctl get tenant "$tenant" >/dev/null 2>&1 || break; sleep 0.01; done
for u in 7 1007 2007 3007; do
  printf 'user %-5s %s\n' "$u" "$(ctl get user "$(printf '00000000-0001-4000-8000-%012x' "$u")" 2>/dev/null | head -n 1)"
done
printf 'tenant by id    %s\n' "$(ctl get tenant "$tenant" 2>/dev/null | head -n 1)"
printf 'tenant by slug  %s\n' "$(ctl get tenant_by_slug yacht-7 2>/dev/null | head -n 1)"
printf 'tenant by host  %s\n' "$(ctl get tenant_by_host yacht-7.fleet.example.com 2>/dev/null | head -n 1)"
run "$bin/tenantcachectl" --cache "$cache" lookup user "$user"

say "tenantcachectl status"
ctl status

if $keep; then
  say "Left running (--keep)"
  cat <<EOF
  cache file     $cache
  control socket $work/tenantcached.sock
  database       psql "$conninfo"
  daemon log     $work/tenantcached.log (pid $daemon_pid)
  try            $bin/tenantcachectl --cache $cache lookup user $user
  stop           kill $daemon_pid; $( [ "$(id -u)" -eq 0 ] && echo "runuser -u postgres -- ")$pgbin/pg_ctl -D $work/data stop; rm -rf $work $cachedir
EOF
else
  say "Done; stopping tenantcached and PostgreSQL"
fi
