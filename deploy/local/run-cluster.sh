#!/usr/bin/env bash
# Run a distributed Butterfly network on this machine, in the foreground, until SIGTERM
# or Ctrl-C: the address book and Passport (one process, so that one HTTP address serves
# Passport and the address-book SOAP services), CLUSTER_GATEWAYS notification-server
# gateways and CLUSTER_SWITCHBOARDS switchboard shards, each its own process, on
# loopback ports counted up from CLUSTER_BASE_PORT, against BUTTERFLY_DATABASE_URL
# (Postgres) and BUTTERFLY_REDIS_URL. Migrations run first. For a Redis Cluster, set
# BUTTERFLY_REDIS_CLUSTER=true and list seed nodes in BUTTERFLY_REDIS_URL, comma-separated.
#
# When every process is ready it prints one line per role, "ROLE ADDRESS" (the address
# clients or other roles connect to: gRPC for the address book, HTTP for Passport), then
# "http ADDRESS" (every HTTP path clients use), then "ready". Process logs go to
# CLUSTER_LOG_DIR.
#
#   BUTTERFLY_DATABASE_URL=postgres://postgres@127.0.0.1/butterfly \
#   BUTTERFLY_REDIS_URL=redis://127.0.0.1:6379 deploy/local/run-cluster.sh
set -euo pipefail

die() { echo "run-cluster: $*" >&2; exit 1; }

: "${BUTTERFLY_DATABASE_URL:?set BUTTERFLY_DATABASE_URL to a Postgres URL (postgres://user@host/db)}"
: "${BUTTERFLY_REDIS_URL:?set BUTTERFLY_REDIS_URL (redis://127.0.0.1:6379)}"
gateways=${CLUSTER_GATEWAYS:-2}
switchboards=${CLUSTER_SWITCHBOARDS:-2}
base=${CLUSTER_BASE_PORT:-21860}
host=${CLUSTER_HOST:-127.0.0.1}
log_dir=${CLUSTER_LOG_DIR:-$(mktemp -d -t butterfly-cluster.XXXXXX)}
# Every role must share the ticket key; a fresh one per run unless given.
secret=${BUTTERFLY_TICKET_SECRET:-$(od -An -tx1 -N32 /dev/urandom | tr -d ' \n')}
export BUTTERFLY_TICKET_SECRET=$secret
export BUTTERFLY_REDIS_PREFIX=${BUTTERFLY_REDIS_PREFIX:-bf:}
export BUTTERFLY_LOG=${BUTTERFLY_LOG:-info}

[[ $gateways =~ ^[1-9][0-9]*$ ]] || die "CLUSTER_GATEWAYS must be a positive number"
[[ $switchboards =~ ^[1-9][0-9]*$ ]] || die "CLUSTER_SWITCHBOARDS must be a positive number"
[[ $base =~ ^[0-9]+$ ]] || die "CLUSTER_BASE_PORT must be a port number"
mkdir -p "$log_dir"

root=$(cd "$(dirname "$0")/../.." && pwd)
bin=${BUTTERFLY_BIN:-}
if [[ -z $bin ]]; then
    echo "run-cluster: building butterfly (release)…" >&2
    cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin butterfly
    bin=$root/target/release/butterfly
fi
[[ -x $bin ]] || die "no butterfly binary at $bin"

"$bin" migrate --database-url "$BUTTERFLY_DATABASE_URL" >&2

pids=()
names=()
outs=()
# stop [CODE]: SIGTERM every process (each drains gracefully), wait, exit.
stop() {
    trap - TERM INT
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    wait "${pids[@]}" 2>/dev/null || true
    exit "${1:-0}"
}
trap 'stop 0' TERM INT

# alloc: the next port of the range, in $got (not printed: a $(…) subshell would lose
# the count).
port=$base
alloc() { got=$port; port=$((port + 1)); }

# start NAME ARGS…: a `butterfly serve` in the background, stdout and stderr logged.
start() {
    local name=$1; shift
    local out="$log_dir/$name.out"
    alloc
    "$bin" serve --admin-listen "$host:$got" --public-host "$host" "$@" \
        >"$out" 2>"$log_dir/$name.log" &
    pids+=($!)
    names+=("$name")
    outs+=("$out")
}

# wait_ready I: until process I printed its admin line (it prints that last).
wait_ready() {
    local i=$1 tries=0
    until grep -q '^admin listening on ' "${outs[$i]}" 2>/dev/null; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "run-cluster: ${names[$i]} exited; its log:" >&2
            tail -n 30 "$log_dir/${names[$i]}.log" >&2
            stop 1
        fi
        tries=$((tries + 1))
        ((tries < 600)) || { echo "run-cluster: ${names[$i]} not ready after 60 s" >&2; stop 1; }
        sleep 0.1
    done
}

# listener I KIND: the address process I printed for KIND ("ns", "sb", "http", "grpc").
listener() { sed -n "s/^$2 listening on //p" "${outs[$1]}" | head -n 1; }

# The address book (gRPC for the other roles, SOAP over HTTP for clients) and Passport
# share a process and so one HTTP listener: every HTTP path is at one address. The
# address book publishes what its SOAP edits mean for signed-in users through Redis.
alloc
grpc_port=$got
alloc
start addressbook --target addressbook,passport --database-url "$BUTTERFLY_DATABASE_URL" \
    --redis-url "$BUTTERFLY_REDIS_URL" --grpc-listen "$host:$grpc_port" --http-listen "$host:$got"
wait_ready 0
book_url="http://$(listener 0 grpc)"

# The other roles reach the database only through the address book: they do not
# inherit its URL.
unset BUTTERFLY_DATABASE_URL
for ((i = 0; i < switchboards; i++)); do
    alloc
    start "switchboard-$i" --target switchboard --redis-url "$BUTTERFLY_REDIS_URL" \
        --addressbook-url "$book_url" --sb-listen "$host:$got" --shard-id "sb-$i"
done
# Shards are registered before any gateway starts, so XFR works from the first `ready`.
for i in "${!pids[@]}"; do wait_ready "$i"; done
for ((i = 0; i < gateways; i++)); do
    alloc
    ns_port=$got
    alloc
    # Each gateway also serves the HTTP gateway (/gateway/gateway.dll) on its own port.
    start "ns-gateway-$i" --target ns-gateway --redis-url "$BUTTERFLY_REDIS_URL" \
        --addressbook-url "$book_url" --ns-listen "$host:$ns_port" --http-listen "$host:$got"
done
for i in "${!pids[@]}"; do wait_ready "$i"; done

echo "addressbook $(listener 0 grpc)"
echo "passport $(listener 0 http)"
for i in "${!pids[@]}"; do
    case ${names[$i]} in
    switchboard-*) echo "switchboard $(listener "$i" sb)" ;;
    ns-gateway-*) echo "ns-gateway $(listener "$i" ns)" ;;
    esac
done
echo "http $(listener 0 http)"
echo "logs $log_dir" >&2
echo ready

# Until a signal, or until a process dies (then everything stops: a half network
# would mislead whoever probes it).
while true; do
    for i in "${!pids[@]}"; do
        if ! kill -0 "${pids[$i]}" 2>/dev/null; then
            echo "run-cluster: ${names[$i]} exited; stopping the rest" >&2
            tail -n 30 "$log_dir/${names[$i]}.log" >&2
            pids=("${pids[@]:0:$i}" "${pids[@]:$((i + 1))}")
            stop 1
        fi
    done
    sleep 1 &
    wait $! || true
done
