#!/usr/bin/env bash
# Salon and Janus side by side: the same synthetic participants
# (`salon load-test`) against each server, one after the other, in one run,
# on this machine. Prints a comparison table; the JSON reports stay in
# $OUT (default target/compare-janus).
#
# Everything runs in a network namespace this script makes and removes: Janus
# (libnice) never gathers candidates on loopback, so the namespace gets an
# address of its own (10.99.0.2 on a veth pair whose both ends stay inside)
# and no route out. Needs root (ip netns, apt-get).
#
# Knobs: DURATION (default 15s), FANOUT (1 → N subscribers, default 150),
# MEETING (people in the meeting, default 10), LISTENERS (audio-only room,
# default 100), SCENARIOS (default "fanout meeting audio"), SERVERS
# (default "salon janus"). BASELINE=/path/to/an/older/salon also runs that
# build as the server (row "before", driven by the current generator), to
# measure a change before and after on one machine. LOAD_ARGS adds to the
# generator's arguments for every run (e.g. "--pacing-factor 0"). PIN=1 runs
# each server on CPU 0 and the generator on CPU 1, so that latency is the
# server's own and not the two waiting for each other's core (BENCHMARKS.md,
# "Waiting for a core"); CPU per packet is comparable either way.
set -euo pipefail
cd "$(dirname "$0")/.."

DURATION=${DURATION:-15s}
FANOUT=${FANOUT:-150}
MEETING=${MEETING:-10}
LISTENERS=${LISTENERS:-100}
SCENARIOS=${SCENARIOS:-"fanout meeting audio"}
export SERVERS=${SERVERS:-"salon janus"}
BASELINE=${BASELINE:-}
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
OUT=${OUT:-$CARGO_TARGET_DIR/compare-janus}
NS=salon-bench-$$
ADDR=10.99.0.2

[ "$(id -u)" = 0 ] || { echo "run as root: the script makes a network namespace" >&2; exit 1; }
if [[ " $SERVERS " == *" janus "* ]] && ! command -v janus >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq janus >/dev/null
fi
cargo build --release --quiet --bin salon
SALON=$CARGO_TARGET_DIR/release/salon
mkdir -p "$OUT"

SERVER_PID=
cleanup() {
  [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
  ip netns pids "$NS" 2>/dev/null | xargs -r kill 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT

ip netns add "$NS"
in_ns() { ip netns exec "$NS" "$@"; }
SERVER_CPU=()
LOAD_CPU=()
if [ "${PIN:-0}" = 1 ]; then
  SERVER_CPU=(taskset -c 0)
  LOAD_CPU=(taskset -c 1)
fi
in_ns ip link set lo up
in_ns ip link add bench0 type veth peer name bench1
in_ns ip addr add "$ADDR/24" dev bench0
in_ns ip link set bench0 up
in_ns ip link set bench1 up

scenario_args() {
  case "$1" in
    fanout) echo "--video-publishers 1 --audio-publishers 1 --subscribers $FANOUT" ;;
    meeting) echo "--video-publishers $MEETING --audio-publishers $MEETING --subscribers 0 --publishers-subscribe" ;;
    audio) echo "--video-publishers 0 --audio-publishers 1 --subscribers $LISTENERS" ;;
    *) echo "unknown scenario $1" >&2; exit 1 ;;
  esac
}

wait_port() {
  for _ in $(seq 50); do
    in_ns bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null && return 0
    sleep 0.2
  done
  echo "nothing listens on port $1" >&2
  return 1
}

stop_server() {
  kill "$SERVER_PID" 2>/dev/null || true
  wait "$SERVER_PID" 2>/dev/null || true
  SERVER_PID=
}

# One layer per publisher (720p, about 1.6 Mb/s): both servers forward the
# same stream, so per-packet figures compare like for like.
COMMON=(--duration "$DURATION" --no-simulcast --join-rate 10 --json ${LOAD_ARGS:-})

for scenario in $SCENARIOS; do
  read -r -a args <<<"$(scenario_args "$scenario")"
  room="bench-$scenario-$$"

  salons=()
  [ -n "$BASELINE" ] && salons+=("before=$BASELINE")
  [[ " $SERVERS " == *" salon "* ]] && salons+=("salon=$SALON")
  for entry in "${salons[@]}"; do
    name=${entry%%=*}
    echo "== $scenario: $name" >&2
    # Not through in_ns: $! must be the server itself (ip netns exec execs it).
    # The current build also reports its own forwarding delay (a baseline
    # from before 2026-12-01 has no --prometheus-port).
    metrics=()
    [ "$name" = salon ] && metrics=(--server-metrics http://127.0.0.1:6789/metrics)
    if [ "$name" = salon ]; then
      ip netns exec "$NS" "${SERVER_CPU[@]}" "${entry#*=}" dev --port 7880 --web-dir /nonexistent --prometheus-port 6789 \
        >"$OUT/$name-$scenario.log" 2>&1 &
    else
      ip netns exec "$NS" "${SERVER_CPU[@]}" "${entry#*=}" dev --port 7880 --web-dir /nonexistent >"$OUT/$name-$scenario.log" 2>&1 &
    fi
    SERVER_PID=$!
    wait_port 7880
    in_ns "${LOAD_CPU[@]}" "$SALON" load-test --url ws://127.0.0.1:7880 --room "$room" --server-pid "$SERVER_PID" \
      "${COMMON[@]}" "${args[@]}" "${metrics[@]}" >"$OUT/$name-$scenario.json" || true
    stop_server
  done

  [[ " $SERVERS " == *" janus "* ]] || continue
  echo "== $scenario: janus" >&2
  ip netns exec "$NS" "${SERVER_CPU[@]}" janus -F "$PWD/benches/janus" -C "$PWD/benches/janus/janus.jcfg" \
    >"$OUT/janus-$scenario.log" 2>&1 &
  SERVER_PID=$!
  wait_port 8188
  in_ns "${LOAD_CPU[@]}" "$SALON" load-test --target janus --url ws://127.0.0.1:8188 --bind-ip "$ADDR" \
    --room "$room" --server-pid "$SERVER_PID" "${COMMON[@]}" "${args[@]}" \
    >"$OUT/janus-$scenario.json" || true
  stop_server
done

python3 - "$OUT" $SCENARIOS <<'EOF'
import json, sys, os
out, scenarios = sys.argv[1], sys.argv[2:]
def load(server, scenario):
    try:
        with open(os.path.join(out, f"{server}-{scenario}.json")) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None
def fmt(v, spec):
    return "-" if v is None else format(v, spec)
head = f"{'scenario':<10} {'server':<6} {'joined':>7} {'delivered':>10} {'fwd pkt/s':>10} {'CPU µs/pkt':>11} {'pkt/CPU-s':>10} {'lat p50':>8} {'lat p99':>8} {'srv p99':>8} {'RSS/sub kB':>11} {'join p95':>9} {'gen CPU':>8}"
print(head)
print("-" * len(head))
for scenario in scenarios:
    rows = {}
    for server in ("before", "salon", "janus"):
        r = load(server, scenario)
        rows[server] = r
        if r is None and (server == "before" or server not in os.environ["SERVERS"].split()):
            continue
        if r is None:
            print(f"{scenario:<10} {server:<6} {'failed: see the log in ' + out}")
            continue
        s = r.get("server") or {}
        expected = r["packets_expected"]
        delivered = r["packets_received"] / expected * 100 if expected else None
        print(f"{scenario:<10} {server:<6} {str(r['joined']) + '/' + str(r['participants']):>7} "
              f"{fmt(delivered, '.2f') + ' %':>10} {fmt(r['forwarded_packets_per_s'], '.0f'):>10} "
              f"{fmt(s.get('cpu_us_per_forwarded_packet'), '.2f'):>11} {fmt(s.get('forwarded_packets_per_cpu_s'), '.0f'):>10} "
              f"{fmt(r['latency_p50_ms'], '.2f'):>8} {fmt(r['latency_p99_ms'], '.2f'):>8} "
              f"{fmt((r.get('server_delay') or {}).get('p99_ms'), '.2f'):>8} "
              f"{fmt(s.get('rss_per_subscriber_kb'), '.0f'):>11} {fmt(r['join']['p95_ms'], '.0f') + ' ms':>9} "
              f"{fmt(r['generator_cpu_percent'], '.0f') + ' %':>8}")
    for other, label in (("janus", "Janus's"), ("before", "the baseline's")):
        a, b = rows.get("salon"), rows.get(other)
        if a and b and a.get("server") and b.get("server"):
            x, y = a["server"].get("forwarded_packets_per_cpu_s"), b["server"].get("forwarded_packets_per_cpu_s")
            if x and y:
                print(f"{'':<10} salon forwards {x / y:.2f}× {label} packets per CPU-second")
EOF
