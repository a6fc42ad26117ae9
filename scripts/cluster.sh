#!/usr/bin/env bash
# A local agentwire cluster on one machine: a throwaway PostgreSQL 15, three `agentwire serve`
# nodes sharing it (`--cluster`), and HAProxy in front hashing the agent path.
#
#   scripts/cluster.sh up            # start what is not running; last line: `front: http://…`
#   scripts/cluster.sh status        # PostgreSQL, HAProxy, each node: pid alive, /healthz
#   scripts/cluster.sh down          # stop everything and remove the state directory
#   scripts/cluster.sh env           # the ports, URLs and pids as shell variables
#   scripts/cluster.sh kill NODE     # kill -9 a node (n1, n2, …)
#   scripts/cluster.sh stop NODE     # SIGSTOP (freeze) a node
#   scripts/cluster.sh cont NODE     # SIGCONT a frozen node
#   scripts/cluster.sh start NODE    # (re)start a node that is not running, same port and data
#   scripts/cluster.sh psql [SQL]    # psql as the nodes' role; with SQL: run it, unaligned output
#   scripts/cluster.sh logs [NAME]   # print the logs (all, or postgres, haproxy, n1, …)
#   scripts/cluster.sh pg-up         # only the PostgreSQL (`up` reuses it); prints one line,
#                                    # `export AGENTWIRE_TEST_POSTGRES=postgres://…`, for eval
#   scripts/cluster.sh pg-down       # stop it and remove the state (when no node runs)
#
# Environment (all optional; ports are chosen on the first `up` and kept in the state dir):
#   CLUSTER_DIR      state directory [default: $CARGO_TARGET_DIR/cluster or target/cluster]
#   NODES            number of nodes [default: 3]
#   FRONT_PORT       HAProxy front port [default: a free port]
#   STATS_PORT       HAProxy statistics page (CSV at /;csv) [default: a free port]
#   PG_PORT          PostgreSQL port, on 127.0.0.1 [default: a free port]
#   NODE_PORTS       the nodes' ports, space-separated [default: free ports]
#   LEASE_TTL        lease time of an instance (`--lease-ttl`) [default: 3s]
#   NODE_ARGS        extra flags for every node, e.g. `--idle-timeout 2s`
#   CLUSTER_MODE     on | off: pass the cluster flags (`--cluster`, `--node-id`,
#                    `--advertise`, `--lease-ttl`), or run the nodes standalone (each with
#                    its own SQLite) behind the same HAProxy [default: on]
#   AGENTWIRE_BIN    the agentwire binary [default: $CARGO_TARGET_DIR/release/agentwire, built
#                    with `cargo build --release -p agentwire --bin agentwire` if missing]
#   PG_BIN           PostgreSQL binaries [default: /usr/lib/postgresql/15/bin]
#   RUST_LOG         the nodes' log filter [default: info]
#
# Each process logs to $CLUSTER_DIR/logs/. PostgreSQL runs as the `postgres` user when this runs
# as root (it refuses to run as root), listens on 127.0.0.1 and on a socket directory of its
# own, with a database and role `agentwire` (password `agentwire`) for the nodes.
set -euo pipefail

repo="$(cd "$(dirname "$0")/.." && pwd)"
target="${CARGO_TARGET_DIR:-$repo/target}"
state="$(realpath -m "${CLUSTER_DIR:-$target/cluster}")"
logs="$state/logs"
PG_BIN="${PG_BIN:-/usr/lib/postgresql/15/bin}"
DB_USER=agentwire
DB_PASS=agentwire
DB_NAME=agentwire

die() { echo "cluster.sh: $*" >&2; exit 1; }
note() { echo "-- $*" >&2; }

usage() {
  sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'
  exit "${1:-2}"
}

# ---------------------------------------------------------------------------------------------
# ports and the saved configuration

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Sets $port to a port in 20000-59999 that nothing listens on and that this run has not
# handed out yet.
taken=" "
free_port() {
  local p
  for _ in $(seq 1 200); do
    p=$((20000 + RANDOM % 40000))
    case "$taken" in *" $p "*) continue ;; esac
    if ! port_in_use "$p"; then
      taken="$taken$p "
      port="$p"
      return
    fi
  done
  die "no free port found"
}

# Writes $state/ports.env on the first `up`; later calls read it, so ports stay stable.
load_config() {
  if [ -f "$state/ports.env" ]; then
    # shellcheck disable=SC1091
    . "$state/ports.env"
    return
  fi
  [ "${1:-}" = create ] || die "no cluster in $state (run \`scripts/cluster.sh up\`)"
  mkdir -p "$state" "$logs"
  local n="${NODES:-3}" ports=() i port
  [[ "$n" =~ ^[1-9][0-9]*$ ]] || die "NODES must be a positive number, not '$n'"
  taken=" ${FRONT_PORT:-} ${STATS_PORT:-} ${PG_PORT:-} ${NODE_PORTS:-} "
  [ -n "${FRONT_PORT:-}" ] || { free_port; FRONT_PORT=$port; }
  [ -n "${STATS_PORT:-}" ] || { free_port; STATS_PORT=$port; }
  [ -n "${PG_PORT:-}" ] || { free_port; PG_PORT=$port; }
  if [ -n "${NODE_PORTS:-}" ]; then
    read -r -a ports <<< "$NODE_PORTS"
    [ "${#ports[@]}" -eq "$n" ] || die "NODE_PORTS has ${#ports[@]} ports for $n nodes"
  else
    for i in $(seq 1 "$n"); do free_port; ports+=("$port"); done
  fi
  {
    echo "NODES=$n"
    echo "FRONT_PORT=$FRONT_PORT"
    echo "STATS_PORT=$STATS_PORT"
    echo "PG_PORT=$PG_PORT"
    echo "NODE_PORTS=\"${ports[*]}\""
    echo "LEASE_TTL=${LEASE_TTL:-3s}"
    printf 'NODE_ARGS=%q\n' "${NODE_ARGS:-}"
  } > "$state/ports.env"
  # shellcheck disable=SC1091
  . "$state/ports.env"
}

node_ids() { seq -f 'n%g' 1 "$NODES"; }

node_port() {
  local idx="${1#n}" ports
  read -r -a ports <<< "$NODE_PORTS"
  [[ "$idx" =~ ^[0-9]+$ ]] && [ "$idx" -ge 1 ] && [ "$idx" -le "$NODES" ] \
    || die "no node '$1' (nodes: $(node_ids | tr '\n' ' '))"
  echo "${ports[$((idx - 1))]}"
}

database_url() { echo "postgres://$DB_USER:$DB_PASS@127.0.0.1:$PG_PORT/$DB_NAME"; }

pid_of() { [ -f "$state/$1.pid" ] && cat "$state/$1.pid" || true; }

# The process exists and is not a zombie (a killed node may wait a moment to be reaped).
alive() {
  case "$(proc_state "$1")" in running | stopped) return 0 ;; *) return 1 ;; esac
}

# "running", "stopped" (SIGSTOP), "dead" or "zombie" from /proc.
proc_state() {
  local pid s
  pid="$(pid_of "$1")"
  [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || { echo dead; return; }
  s="$(sed 's/^.*) \(.\).*/\1/' "/proc/$pid/stat" 2>/dev/null || echo X)"
  case "$s" in T | t) echo stopped ;; Z) echo zombie ;; X) echo dead ;; *) echo running ;; esac
}

healthz() { curl -fsS -m 2 -o /dev/null "http://127.0.0.1:$1/healthz" 2>/dev/null; }

wait_for() { # wait_for SECONDS DESCRIPTION COMMAND…
  local secs="$1" what="$2" end
  shift 2
  end=$((SECONDS + secs))
  until "$@"; do
    [ "$SECONDS" -lt "$end" ] || return 1
    sleep 0.1
  done
}

# ---------------------------------------------------------------------------------------------
# PostgreSQL

as_pg() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

# PostgreSQL runs as the `postgres` user, who must be able to reach its directory. When the state
# directory lies under a private parent (a checkout in /root, say), PostgreSQL's directory goes
# to /tmp instead, linked from the state directory (and removed with it).
pg_alt="/tmp/agentwire-pg-$(printf %s "$state" | md5sum | cut -c1-12)"
pg_home() {
  if [ "$(id -u)" = 0 ] && [ ! -e "$state/pg" ] \
    && ! runuser -u postgres -- test -x "$state" 2> /dev/null; then
    rm -rf "$pg_alt"
    mkdir -p "$pg_alt"
    chown postgres: "$pg_alt"
    ln -s "$pg_alt" "$state/pg"
  fi
}

# the real path of PostgreSQL's directory (through the link, if any)
pgd() { readlink -f "$state/pg"; }

pg_running() { [ -e "$state/pg" ] && as_pg "$PG_BIN/pg_ctl" -D "$(pgd)/data" status > /dev/null 2>&1; }

pg_up() {
  if [ ! -x "$PG_BIN/initdb" ] && [ "$PG_BIN" = /usr/lib/postgresql/15/bin ] && [ "$(id -u)" = 0 ] \
    && command -v apt-get > /dev/null; then
    note "installing postgresql-15"
    apt-get update -qq && apt-get install -y -qq postgresql-15 > /dev/null
  fi
  [ -x "$PG_BIN/initdb" ] || die "PostgreSQL not found in $PG_BIN (install postgresql-15 or set PG_BIN)"
  if [ ! -f "$state/pg/data/PG_VERSION" ]; then
    note "initdb (PostgreSQL in $state/pg)"
    if [ -L "$state/pg" ]; then rm -rf "$state/pg/"*; else rm -rf "$state/pg"; fi
    pg_home
    mkdir -p "$state/pg/data" "$state/pg/sock"
    [ "$(id -u)" = 0 ] && chown -R postgres: "$(pgd)"
    chmod 700 "$state/pg/data"
    as_pg "$PG_BIN/initdb" -D "$(pgd)/data" -U postgres -E UTF8 --locale=C.UTF-8 \
      --auth-local=trust --auth-host=scram-sha-256 > "$logs/initdb.log" 2>&1 \
      || { cat "$logs/initdb.log" >&2; die "initdb failed"; }
  fi
  local sock
  sock="$(pgd)/sock"
  if ! pg_running; then
    note "starting PostgreSQL on 127.0.0.1:$PG_PORT"
    # the log is written by PostgreSQL itself, in its own directory (linked from the logs)
    [ "$(id -u)" = 0 ] && touch "$state/pg/postgres.log" && chown postgres: "$state/pg/postgres.log"
    ln -sfn "$state/pg/postgres.log" "$logs/postgres.log"
    as_pg "$PG_BIN/pg_ctl" -D "$(pgd)/data" -l "$(pgd)/postgres.log" -w -t 30 \
      -o "-p $PG_PORT -k $sock -c listen_addresses=127.0.0.1 -c max_connections=200" \
      start > /dev/null || { tail -20 "$logs/postgres.log" >&2; die "PostgreSQL did not start"; }
  fi
  head -1 "$state/pg/data/postmaster.pid" > "$state/postgres.pid"
  if ! as_pg "$PG_BIN/psql" -h "$sock" -p "$PG_PORT" -U postgres -XAtq -d postgres \
    -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'" | grep -q 1; then
    note "creating role and database $DB_NAME"
    as_pg "$PG_BIN/psql" -h "$sock" -p "$PG_PORT" -U postgres -Xq -v ON_ERROR_STOP=1 -d postgres \
      -c "CREATE ROLE $DB_USER LOGIN CREATEDB PASSWORD '$DB_PASS'" \
      -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" > /dev/null
  fi
}

pg_down() {
  if [ -f "$state/pg/data/PG_VERSION" ] && pg_running; then
    as_pg "$PG_BIN/pg_ctl" -D "$(pgd)/data" -m fast -w -t 20 stop > /dev/null || true
  fi
}

run_psql() {
  local args=(-h 127.0.0.1 -p "$PG_PORT" -U "$DB_USER" -d "$DB_NAME" -X -v ON_ERROR_STOP=1)
  if [ $# -gt 0 ]; then
    PGPASSWORD="$DB_PASS" "$PG_BIN/psql" "${args[@]}" -At -F '|' -c "$*"
  else
    PGPASSWORD="$DB_PASS" exec "$PG_BIN/psql" "${args[@]}"
  fi
}

# ---------------------------------------------------------------------------------------------
# HAProxy

haproxy_conf() {
  local id
  cat << EOF
# written by scripts/cluster.sh
global
    # each proxied connection takes two descriptors: keep under the usual open-files limits
    maxconn 4000
    log stderr format raw local0 info
    stats socket $state/haproxy.sock mode 600 level admin

defaults
    mode http
    log global
    option httplog
    option dontlognull
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 10s
    # an upgraded connection (WebSocket) may stay open and quiet this long
    timeout tunnel 1h
    # a failed connection is retried, then sent to another node
    retries 2
    option redispatch 1

frontend front
    bind 127.0.0.1:$FRONT_PORT
    default_backend nodes

backend nodes
    # /agents/{namespace}/{name}/… hashes on "/agents/{namespace}/{name}" (three levels, the
    # query left out), so every request and socket of an instance goes to the same node while
    # the nodes stay up; consistent hashing moves only the instances of a node that leaves.
    balance uri depth 3
    hash-type consistent
    option httpchk GET /healthz
    http-check expect status 200
    default-server inter 500ms fastinter 250ms downinter 500ms fall 2 rise 2
EOF
  for id in $(node_ids); do
    echo "    server $id 127.0.0.1:$(node_port "$id") check"
  done
  cat << EOF

listen stats
    bind 127.0.0.1:$STATS_PORT
    stats enable
    stats uri /
    stats refresh 1s
EOF
}

haproxy_up() {
  command -v haproxy > /dev/null || {
    note "installing haproxy"
    [ "$(id -u)" = 0 ] || die "haproxy is missing (apt-get install haproxy)"
    apt-get update -qq && apt-get install -y -qq haproxy > /dev/null
  }
  haproxy_conf > "$state/haproxy.cfg"
  haproxy -c -q -f "$state/haproxy.cfg" || die "haproxy rejected $state/haproxy.cfg"
  alive haproxy && return
  note "starting HAProxy on 127.0.0.1:$FRONT_PORT (statistics: http://127.0.0.1:$STATS_PORT/)"
  setsid haproxy -db -f "$state/haproxy.cfg" >> "$logs/haproxy.log" 2>&1 < /dev/null &
  echo $! > "$state/haproxy.pid"
  wait_for 10 "HAProxy" port_in_use "$FRONT_PORT" \
    || { tail -20 "$logs/haproxy.log" >&2; die "HAProxy did not start"; }
}

# ---------------------------------------------------------------------------------------------
# nodes

agentwire_bin() {
  local bin="${AGENTWIRE_BIN:-$target/release/agentwire}"
  if [ ! -x "$bin" ]; then
    [ -z "${AGENTWIRE_BIN:-}" ] || die "AGENTWIRE_BIN=$bin is not an executable"
    note "building agentwire (release)"
    (cd "$repo" && cargo build --release -p agentwire --bin agentwire) >&2
  fi
  echo "$bin"
}

node_start() {
  local id="$1" port bin flags=() extra=()
  port="$(node_port "$id")"
  if alive "$id"; then
    [ "$(proc_state "$id")" != stopped ] || note "$id is frozen (SIGSTOP); \`cluster.sh cont $id\`"
    return
  fi
  bin="$(agentwire_bin)"
  case "${CLUSTER_MODE:-on}" in
    on) flags=(--cluster "$(database_url)" --node-id "$id" --advertise "127.0.0.1:$port"
               --lease-ttl "$LEASE_TTL") ;;
    off) ;;
    *) die "CLUSTER_MODE must be on or off, not '$CLUSTER_MODE'" ;;
  esac
  [ -n "$NODE_ARGS" ] && read -r -a extra <<< "$NODE_ARGS"
  mkdir -p "$state/$id/data"
  wait_for 5 "port $port" sh -c "! (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null" \
    || die "port $port of $id is taken by another process"
  echo "== $(date -u +%FT%TZ) start $id" >> "$logs/$id.log"
  RUST_LOG="${RUST_LOG:-info}" setsid "$bin" serve --addr "127.0.0.1:$port" \
    --data "$state/$id/data" "${flags[@]}" "${extra[@]}" >> "$logs/$id.log" 2>&1 < /dev/null &
  echo $! > "$state/$id.pid"
}

node_wait() {
  local id="$1" port
  port="$(node_port "$id")"
  wait_for 30 "$id" node_ready "$id" "$port" \
    || { tail -30 "$logs/$id.log" >&2; die "$id did not become healthy on 127.0.0.1:$port"; }
}

node_ready() {
  alive "$1" || { tail -30 "$logs/$1.log" >&2; die "$1 exited"; }
  healthz "$2"
}

node_signal() { # node_signal SIGNAL NODE
  local pid
  node_port "$2" > /dev/null
  alive "$2" || die "$2 is not running"
  pid="$(pid_of "$2")"
  kill "-$1" "$pid"
  echo "$2 (pid $pid): SIG$1"
}

stop_pid() { # stop_pid NAME: TERM (and CONT, if frozen), then KILL after 8 s
  local pid
  pid="$(pid_of "$1")"
  [ -n "$pid" ] || return 0
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    kill -CONT "$pid" 2>/dev/null || true
    wait_for 8 "$1" sh -c "! kill -0 $pid 2>/dev/null" || kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$state/$1.pid"
}

# ---------------------------------------------------------------------------------------------
# commands

cmd_up() {
  load_config create
  mkdir -p "$logs"
  pg_up
  local id
  for id in $(node_ids); do node_start "$id"; done
  for id in $(node_ids); do node_wait "$id"; done
  haproxy_up
  # The front answers once HAProxy's checks have seen the nodes (rise 2: about a second).
  wait_for 15 "front" healthz "$FRONT_PORT" || die "http://127.0.0.1:$FRONT_PORT/healthz does not answer"
  write_env
  cmd_status || die "not every part of the cluster is up (logs: $logs)"
  echo "front: http://127.0.0.1:$FRONT_PORT"
}

write_env() {
  local id
  {
    echo "CLUSTER_DIR=$state"
    echo "FRONT_URL=http://127.0.0.1:$FRONT_PORT"
    echo "STATS_URL=http://127.0.0.1:$STATS_PORT/"
    echo "DATABASE_URL=$(database_url)"
    echo "LEASE_TTL=$LEASE_TTL"
    echo "NODES=\"$(node_ids | tr '\n' ' ' | sed 's/ $//')\""
    for id in $(node_ids); do
      echo "${id^^}_ADDR=127.0.0.1:$(node_port "$id")"
      echo "${id^^}_PID=$(pid_of "$id")"
    done
  } > "$state/cluster.env"
}

cmd_status() {
  load_config
  local ok=0 id port st
  if [ -f "$state/pg/data/PG_VERSION" ] && pg_running; then
    echo "postgres  127.0.0.1:$PG_PORT  pid $(pid_of postgres)  up  $(database_url)"
  else
    echo "postgres  127.0.0.1:$PG_PORT  down"; ok=1
  fi
  if alive haproxy; then
    if healthz "$FRONT_PORT"; then st="up"; else st="up, /healthz failing"; ok=1; fi
    echo "haproxy   127.0.0.1:$FRONT_PORT  pid $(pid_of haproxy)  $st  (statistics http://127.0.0.1:$STATS_PORT/)"
  else
    echo "haproxy   127.0.0.1:$FRONT_PORT  down"; ok=1
  fi
  for id in $(node_ids); do
    port="$(node_port "$id")"
    st="$(proc_state "$id")"
    case "$st" in
      running) if healthz "$port"; then st="up, /healthz 200"; else st="running, /healthz failing"; ok=1; fi ;;
      stopped) st="frozen (SIGSTOP)"; ok=1 ;;
      *) ok=1 ;;
    esac
    echo "$id        127.0.0.1:$port  pid $(pid_of "$id")  $st"
  done
  return $ok
}

cmd_down() {
  if [ ! -d "$state" ]; then
    echo "no cluster in $state"
    return
  fi
  if [ -f "$state/ports.env" ]; then
    load_config
    local id
    for id in $(node_ids); do stop_pid "$id"; done
    stop_pid haproxy
    pg_down
  fi
  rm -rf "$state" "$pg_alt"
  echo "cluster stopped, $state removed"
}

# Only PostgreSQL, for tests that start nodes themselves: everything but the export line goes
# to stderr, so that `eval "$(scripts/cluster.sh pg-up)"` sets the variable.
cmd_pg_up() {
  load_config create
  mkdir -p "$logs"
  pg_up >&2
  echo "export AGENTWIRE_TEST_POSTGRES=$(database_url)"
}

cmd_pg_down() {
  if [ ! -f "$state/ports.env" ]; then
    echo "no cluster in $state" >&2
    return
  fi
  load_config
  local id
  for id in haproxy $(node_ids); do
    alive "$id" && die "$id is running in $state: use \`scripts/cluster.sh down\`"
  done
  pg_down
  rm -rf "$state" "$pg_alt"
  echo "PostgreSQL stopped, $state removed" >&2
}

cmd_logs() {
  load_config
  local f
  for f in "$logs"/${1:-*}.log; do
    [ -f "$f" ] || die "no log ${1:-}"
    echo "===== $f"
    cat "$f"
  done
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  env) load_config; write_env; cat "$state/cluster.env" ;;
  kill) [ $# -eq 2 ] || usage; load_config; node_signal KILL "$2" ;;
  stop) [ $# -eq 2 ] || usage; load_config; node_signal STOP "$2" ;;
  cont) [ $# -eq 2 ] || usage; load_config; node_signal CONT "$2" ;;
  start)
    [ $# -eq 2 ] || usage
    load_config
    node_start "$2"
    node_wait "$2"
    write_env
    echo "$2 up on 127.0.0.1:$(node_port "$2") (pid $(pid_of "$2"))"
    ;;
  psql) shift; load_config; run_psql "$@" ;;
  logs) load_config; cmd_logs "${2:-}" ;;
  pg-up) cmd_pg_up ;;
  pg-down) cmd_pg_down ;;
  -h | --help | help) usage 0 ;;
  *) usage ;;
esac
