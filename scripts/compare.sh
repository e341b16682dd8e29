#!/usr/bin/env bash
# Side-by-side harness (issue 6 item 2): the same echo worker measured
#   direct   loadtest → worker (NVCF-FUNCTION-VERSION-ID sent by the client), path /echo
#   nginx    loadtest → nginx (reverse proxy, worker_processes 1, upstream keepalive) → worker
#   gateway  loadtest → our dataplane (host-routed, `Host: <fid>.invocation.127.0.0.1`, API key) → worker
# for HTTP/1.1 (-c 64) and h2c (-c 8 -m 16), ROUNDS rounds of A B C interleaved, small bodies.
# The control plane, the dataplane (gateway) and the worker run as three processes, so the
# gateway's CPU is the dataplane's alone. CPU µs per request = Δ(utime+stime) of the proxy process
# (nginx's worker process / the dataplane) from /proc/<pid>/stat over the measured window ÷ requests;
# each run's log line also gives the kernel part (stime) of the proxy's and the worker's.
#
# Usage (from anywhere):   scripts/compare.sh
#   ROUNDS=5 DURATION=10s WARMUP=2s   rounds per arm, measured time and warm-up per run (defaults)
#   BODY_SIZE=256                     request body bytes (octet-stream)
#   H1_CONNS=64 H2_CONNS=8 H2_STREAMS=16
#   GW_THREADS="<nproc>s <nproc>"     the dataplane's threads, one gateway arm (and one dataplane process)
#                                     per value, at most 3: <n>s (arm gateway-<n>s) is `serving-threads =
#                                     <n>` (n threads with a single-threaded runtime each serve the
#                                     connections; the default config on an n-core machine), <n> (arm
#                                     gateway-<n>t) is `serving-threads = 0` and `runtime-threads = <n>`
#                                     (the connections on the process's runtime; 1: single-threaded);
#                                     the summary takes the better arm (performance.md: "try the proxy
#                                     with 1 and 2 runtime threads and report the better"; nginx runs
#                                     worker_processes 1). GW_THREADS=2s alone saves a quarter of the time.
#                                     A value ending in `:b` (arm gateway-<n>s-b, gateway-<n>t-b) runs the
#                                     dataplane of another build, GATEWAY_BIN_B, beside this one's in the
#                                     same interleaved rounds, against the same worker, nginx and client:
#                                     an A/B of two builds that the machine's drift between runs cannot
#                                     bias, e.g. GW_THREADS="2s 2s:b" GATEWAY_BIN_B=/tmp/old/nvcf-gateway
#                                     EXTRA= WRITE_DOC=0 (the summary's "better arm" may then be either)
#   SKIP_BUILD=1                      do not run `cargo build --release` (default: build, a no-op when fresh)
#   GATEWAY_BIN=<path> LOADTEST_BIN=<path>  the nvcf-gateway and loadtest binaries to run (default: this
#                                     checkout's target/release ones): another build, or binaries built
#                                     elsewhere on a machine without cargo (with SKIP_BUILD=1)
#   WRITE_DOC=0                       do not append the table to docs/performance.md (DOC=path to change it)
#   NOTE="..."                        free text added to the doc section (e.g. "smoke run")
#   KEEP_TMP=1                        keep the temp dir (configs, logs, per-run JSON) after exit
#   PROFILE=<dir>                     instead of the rounds: one HTTP/1.1 gateway run (first GW_THREADS
#                                     value) under `perf record -g` of the dataplane, and the perf
#                                     report (self and children, by symbol) written to <dir>
#   CALLGRIND=<dir>                   instead of the rounds: the gateway (one, 1 runtime thread) runs under
#                                     valgrind's callgrind, and CG_REQUESTS (20000) HTTP/1.1 calls (-c 8,
#                                     after CG_WARM=2000 uncounted) give its user-space instructions per
#                                     request: a count that does not move with the machine's noise, for
#                                     A/B checks of changes worth less than a microsecond. The annotated
#                                     profile (inclusive, by function) is written to <dir>.
#                                     CG_PROTO=h2c counts h2c calls instead (-c 2 -m 8); CG_BARE=1 runs
#                                     that gateway with `access-log = false` and no admin listener (so no
#                                     metrics recorder): the count without the access log and metrics;
#                                     CG_BARE=log: without the access log only; CG_TARGET=worker counts the
#                                     echo worker's instructions per call instead (calls still go through
#                                     the gateway, so the worker sees the gateway's requests);
#                                     CG_TARGET=nginx counts nginx's (one process, `master_process off`,
#                                     calls through nginx as in its arm): the same count for the yardstick.
#                                     CG_SIM=1 adds valgrind's cache and branch simulation (I1/D1/LL misses,
#                                     mispredicted branches), each printed per request: where instructions
#                                     are not the cost, a simulated miss count says whether it is the caches
# Extra measurements, after the closed-loop rounds, on the better gateway arm (by closed-loop median):
#   EXTRA=open,1mib,streams,h3,logcost,reuse,stall  which ones (default: all; EXTRA= or EXTRA=none for none)
#     open     open loop (`loadtest --rate`), HTTP/1.1 -c H1_CONNS, at OPEN_LOADS (default "25 50") % of
#              nginx's closed-loop HTTP/1.1 median req/s: direct, nginx, gateway; p50/p99 and the
#              latency added over direct; p99_added_vs_nginx = (gw p99 - direct p99) / (nginx p99 - direct p99)
#     1mib     MIB_SIZE (1048576) byte POSTs echoed back (so 1 MiB responses), HTTP/1.1 -c MIB_CONNS (8):
#              direct, nginx, gateway; response MB/s; mib_vs_direct = gateway MB/s / direct MB/s
#     streams  h2c gateway, -c 1 -m 64 vs -c 8 -m 16; h2_1x64_vs_8x16 = req/s ratio
#     h3       enables the dataplanes' TLS + QUIC listeners (self-signed cert from their data dir) and
#              runs the gateway with --proto h2 (HTTP/2 over TLS) and --proto h3, -c TLS_CONNS -m
#              TLS_STREAMS (default H2_CONNS, H2_STREAMS), host-routed; h3_vs_h2 = h3 req/s / h2 req/s
#     logcost  what the access log and metrics cost: the better HTTP/1.1 arm against a second dataplane
#              of the same build and thread count with `access-log = false` and no admin listener (so no
#              metrics recorder), and a third with `access-log = false` only (the split between the two),
#              HTTP/1.1 -c H1_CONNS closed loop, interleaved;
#              log_metrics_cost = 1 - req/s with both on / req/s with both off (goal <= 0.05)
#     reuse    reads the dataplanes' /metrics (admin listener) before and after the closed-loop rounds:
#              upstream_reuse = 1 - delta(gateway_worker_connections_opened_total) / delta(sum function_request)
#     stall    on every dataplane: STALL_N (16) connections POST a STALL_SIZE (100 MiB) echo body and never
#              read the response; dataplane VmRSS growth / STALL_N = stall_mib_per_download
#   OPEN_CAP=<req/s>                  the open loop's 100% instead of nginx's closed-loop median (A/B runs
#                                     of two gateway arms at one load)
#   OPEN_LOADS="25 50" MIB_SIZE=1048576 MIB_CONNS=8 TLS_CONNS=$H2_CONNS TLS_STREAMS=$H2_STREAMS
#   STALL_N=16 STALL_SIZE=104857600
#   NGINX_BUFFERING=0                 nginx streams bodies (proxy_request_buffering off, proxy_buffering
#                                     off) instead of its default of spooling big ones to temp files
#                                     (client_max_body_size 0 is always set, for the 1 MiB bodies)
#   NGINX_WORKER_HEADERS=1            nginx also sends the worker the worker-owned headers the gateway sends
#                                     (NVCF-INVOCATION-REGION, -REQID from $request_id, nvcf-poll-seconds;
#                                     the ones that describe the function the worker adds itself), so that
#                                     the worker does the same work behind both proxies; default 0: only
#                                     NVCF-FUNCTION-VERSION-ID, which the worker needs, beside
#                                     performance.md's configuration
#   EXTRA_GW=<n>                      run the extras on gateway-<n>t (one of GW_THREADS) instead of the
#                                     better closed-loop arm
#   EXTRA_ROUNDS=3 EXTRA_DURATION=5s EXTRA_WARMUP=1s   rounds, measured time and warm-up of each extra run
#                                     (EXTRA_DURATION=10s EXTRA_WARMUP=2s follows the method to the letter
#                                     and adds about 5 minutes)
# Needs: curl, jq, python3; installs Debian's nginx with apt-get when missing.
# Prints markdown tables, appends them under "Side-by-side" in docs/performance.md, and prints as its
# LAST line a one-line JSON summary:
#   {"h1_vs_nginx":…, "h1_vs_direct":…, "cpu_per_req_vs_nginx":…, "added_p50_ms":…, "h2c_vs_direct":…,
#    "open25_added_p50_ms":…, "open25_nginx_added_p50_ms":…, "open25_p99_added_vs_nginx":…, (and open50_…),
#    "mib_vs_direct":…, "h2_1x64_vs_8x16":…, "h3_vs_h2":…, "log_metrics_cost":…, "upstream_reuse":…}
# Ratios are of the arms' medians over the rounds; the `*_paired` keys (h1_vs_nginx_paired,
# open<pct>_p99_added_vs_nginx_paired, log_metrics_cost_paired) are the medians of each round's own
# ratio instead, which cancels the machine's drift over a run (rounds interleave the arms).
# (keys of extras that were not run are left out; a ratio whose denominator is not positive is null).
# With the defaults it takes about 14 minutes on the 2-core VM once the release build is made (the
# README's `cargo run --release` makes it; from nothing the build adds about 4 minutes): the
# closed-loop rounds (4 arms × 2 protocols × 5 rounds × 12 s) about 8, the extras (18 open-loop + 9
# 1-MiB + 6 streams + 6 TLS + 9 log-cost runs of 6 s, and the stalled downloads) about 5, the set-up
# under a minute. EXTRA= gives an 8.5-minute run.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
WARMUP=${WARMUP:-2s}
BODY_SIZE=${BODY_SIZE:-256}
H1_CONNS=${H1_CONNS:-64}
H2_CONNS=${H2_CONNS:-8}
H2_STREAMS=${H2_STREAMS:-16}
NPROC=$(nproc)
GW_THREADS=${GW_THREADS:-${NPROC}s $NPROC}
read -r -a GW_T <<<"$GW_THREADS"
(( ${#GW_T[@]} >= 1 && ${#GW_T[@]} <= 3 )) || { echo "GW_THREADS: 1 to 3 values" >&2; exit 2; }
for t in "${GW_T[@]}"; do [[ $t =~ ^[1-9][0-9]*s?(:b)?$ ]] || { echo "GW_THREADS: bad value $t" >&2; exit 2; }; done
GATEWAY_BIN_B=${GATEWAY_BIN_B:-}
if [[ " ${GW_T[*]}" == *:b* && ! -x $GATEWAY_BIN_B ]]; then
  echo "GW_THREADS: a value ending in :b needs GATEWAY_BIN_B, the path of another build's nvcf-gateway" >&2; exit 2
fi
# An arm's name: gateway-<n>s or gateway-<n>t, with -b for the other build (python's gw_name below).
gw_name() { local t=${1%:b} n; [[ $t == *s ]] && n="gateway-$t" || n="gateway-${t}t"; [[ $1 == *:b ]] && n+=-b; echo "$n"; }
gw_names() { GW_NAME=(); for t in "${GW_T[@]}"; do GW_NAME+=("$(gw_name "$t")"); done; }
gw_names
# The dataplane binary of a GW_THREADS value.
gw_bin() { [[ $1 == *:b ]] && echo "$GATEWAY_BIN_B" || echo "$GATEWAY_BIN"; }
SKIP_BUILD=${SKIP_BUILD:-0}
WRITE_DOC=${WRITE_DOC:-1}
DOC=${DOC:-docs/performance.md}
NOTE=${NOTE:-}
KEEP_TMP=${KEEP_TMP:-0}
EXTRA=${EXTRA-open,1mib,streams,h3,logcost,reuse,stall}
[[ $EXTRA == none || -n ${PROFILE:-} || -n ${CALLGRIND:-} ]] && EXTRA=   # PROFILE, CALLGRIND: no extras
CALLGRIND=${CALLGRIND:-}
CG_REQUESTS=${CG_REQUESTS:-20000}
CG_WARM=${CG_WARM:-2000}
CG_PROTO=${CG_PROTO:-h1}
CG_BARE=${CG_BARE:-0}
CG_TARGET=${CG_TARGET:-gateway}
CG_SIM=${CG_SIM:-0}
[[ $CG_SIM =~ ^[01]$ ]] || { echo "CG_SIM is 0 or 1" >&2; exit 2; }
[[ $CG_TARGET =~ ^(gateway|worker|nginx)$ ]] || { echo "CG_TARGET is gateway, worker or nginx" >&2; exit 2; }
case $CG_PROTO in
  h1) CG_SHAPE=(--proto h1 -c 8) ;;
  h2c) CG_SHAPE=(--proto h2c -c 2 -m 8) ;;
  *) echo "CG_PROTO: h1 or h2c" >&2; exit 2 ;;
esac
if [[ -n $CALLGRIND ]]; then
  GW_T=(1)
  gw_names
  command -v valgrind >/dev/null || { echo "CALLGRIND needs valgrind (apt-get install valgrind)" >&2; exit 2; }
fi
for x in ${EXTRA//,/ }; do
  [[ $x =~ ^(open|1mib|streams|h3|logcost|reuse|stall)$ ]] || { echo "EXTRA: unknown item $x (open,1mib,streams,h3,logcost,reuse,stall)" >&2; exit 2; }
done
has_extra() { [[ ,$EXTRA, == *,$1,* ]]; }
EXTRA_ROUNDS=${EXTRA_ROUNDS:-3}
EXTRA_DURATION=${EXTRA_DURATION:-5s}
EXTRA_WARMUP=${EXTRA_WARMUP:-1s}
OPEN_LOADS=${OPEN_LOADS:-25 50}
read -r -a OPEN_L <<<"$OPEN_LOADS"
for l in "${OPEN_L[@]}"; do [[ $l =~ ^[1-9][0-9]?$ ]] || { echo "OPEN_LOADS: percentages 1-99, got $l" >&2; exit 2; }; done
MIB_SIZE=${MIB_SIZE:-1048576}
MIB_CONNS=${MIB_CONNS:-8}
STALL_N=${STALL_N:-16}
STALL_SIZE=${STALL_SIZE:-104857600}
TLS_CONNS=${TLS_CONNS:-$H2_CONNS}
TLS_STREAMS=${TLS_STREAMS:-$H2_STREAMS}
NGINX_BUFFERING=${NGINX_BUFFERING:-1}
NGINX_WORKER_HEADERS=${NGINX_WORKER_HEADERS:-0}
EXTRA_GW=${EXTRA_GW:-}
[[ -z $EXTRA_GW || " ${GW_T[*]} " == *" $EXTRA_GW "* ]] || { echo "EXTRA_GW: not one of GW_THREADS ($GW_THREADS)" >&2; exit 2; }
[[ $NGINX_BUFFERING =~ ^[01]$ ]] || { echo "NGINX_BUFFERING: 0 or 1" >&2; exit 2; }
[[ $NGINX_WORKER_HEADERS =~ ^[01]$ ]] || { echo "NGINX_WORKER_HEADERS: 0 or 1" >&2; exit 2; }

GATEWAY_BIN=${GATEWAY_BIN:-$ROOT/target/release/nvcf-gateway}   # another build for A/B runs (SKIP_BUILD=1)
LOADTEST_BIN=${LOADTEST_BIN:-$ROOT/target/release/loadtest}   # another build (SKIP_BUILD=1)

log() { printf '[compare %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for tool in curl jq python3; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

# ---------------------------------------------------------------- build, nginx
if [[ $SKIP_BUILD != 1 ]] || [[ ! -x $GATEWAY_BIN || ! -x $LOADTEST_BIN ]]; then
  log "cargo build --release -p nvcf-gateway -p loadtest"
  cargo build --release --locked -p nvcf-gateway -p loadtest >&2
fi
NGINX_BIN=$(command -v nginx || true)
[[ -z $NGINX_BIN && -x /usr/sbin/nginx ]] && NGINX_BIN=/usr/sbin/nginx
if [[ -z $NGINX_BIN ]]; then
  log "installing Debian's nginx"
  SUDO=; [[ $(id -u) != 0 ]] && SUDO=sudo
  if ! $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx >&2; then
    $SUDO apt-get update >&2
    $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends nginx >&2
  fi
  NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
  [[ -x $NGINX_BIN ]] || die "nginx install failed"
fi

# ---------------------------------------------------------------- temp dir, cleanup
TMP=$(mktemp -d /tmp/nvcf-compare.XXXXXX)
PIDS=()
NGINX_MASTER=
LT_PID=
cleanup() {
  local rc=$?
  trap - EXIT INT TERM
  if [[ -n $NGINX_MASTER ]] && kill -0 "$NGINX_MASTER" 2>/dev/null; then
    kill -QUIT "$NGINX_MASTER" 2>/dev/null || true
  fi
  local p
  [[ -n $LT_PID ]] && kill "$LT_PID" 2>/dev/null || true
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${PIDS[@]}" $NGINX_MASTER; do
    for _ in 1 2 3 4 5 6 7 8 9 10; do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done
    kill -KILL "$p" 2>/dev/null || true
  done
  if [[ $rc != 0 ]]; then
    log "failed (exit $rc); last lines of the logs in $TMP:"
    for f in "$TMP"/*.log "$TMP"/nginx/logs/error.log; do
      [[ -f $f ]] && { echo "--- $f" >&2; tail -n 15 "$f" >&2; }
    done
    KEEP_TMP=1
  fi
  if [[ $KEEP_TMP == 1 ]]; then log "kept $TMP"; else rm -rf "$TMP"; fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Free loopback ports, all bound at once so they are distinct; the last three (TLS on TCP, QUIC on
# UDP) are free on both.
read -r P_CP P_WK P_NG1 P_NG2 P_ADM1 P_ADM3 P_GWS0 P_GWS1 P_GWS2 P_GWA0 P_GWA1 P_GWA2 P_GWB P_GWL P_GWLA P_TLS0 P_TLS1 P_TLS2 < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(15):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
both = []
while len(both) < 3:
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        u.bind(("127.0.0.1", s.getsockname()[1])); socks.append(u); both.append(s)
    except OSError:
        u.close()
print(" ".join(str(s.getsockname()[1]) for s in socks[:15] + both))
EOF
)
TOKEN=$(python3 -c 'import secrets; print(secrets.token_hex(24))')

# ---------------------------------------------------------------- the stack: three processes
mkdir -p "$TMP"/cp "$TMP"/dp "$TMP"/wk
cat >"$TMP/controlplane.toml" <<EOF
log = "info"
internal-token = "$TOKEN"
[admin]
listen = "127.0.0.1:$P_ADM1"
[controlplane]
listen = "127.0.0.1:$P_CP"
data-dir = "$TMP/cp"
EOF
P_GWS=("$P_GWS0" "$P_GWS1" "$P_GWS2"); P_GWA=("$P_GWA0" "$P_GWA1" "$P_GWA2"); P_TLS=("$P_TLS0" "$P_TLS1" "$P_TLS2")
dataplane_toml() { # name threads port admin-listen tls-listen access-log: writes $TMP/<name>.toml, data dir $TMP/<name>
  mkdir -p "$TMP/$1"
  cat >"$TMP/$1.toml" <<EOF
log = "info"
internal-token = "$TOKEN"
runtime-threads = ${2%s}
[admin]
listen = "$4"
[dataplane]
serving-threads = $( [[ $2 == *s ]] && echo "${2%s}" || echo 0 )
access-log = $6
listen = "127.0.0.1:$3"
controlplane-url = "http://127.0.0.1:$P_CP"
tls-listen = "$5"
quic-listen = "$5"
data-dir = "$TMP/$1"
EOF
}
for i in "${!GW_T[@]}"; do
  TLS_L=; has_extra h3 && TLS_L=127.0.0.1:${P_TLS[$i]}
  ADMIN_L=127.0.0.1:${P_GWA[$i]} ACCESS_LOG=true
  [[ -n $CALLGRIND && $CG_BARE == 1 ]] && { ADMIN_L=; ACCESS_LOG=false; }
  [[ -n $CALLGRIND && $CG_BARE == log ]] && ACCESS_LOG=false
  dataplane_toml "dataplane$i" "${GW_T[$i]%:b}" "${P_GWS[$i]}" "$ADMIN_L" "$TLS_L" "$ACCESS_LOG"
done
cat >"$TMP/worker.toml" <<EOF
log = "info"
internal-token = "$TOKEN"
[admin]
listen = "127.0.0.1:$P_ADM3"
[worker]
listen = "127.0.0.1:$P_WK"
controlplane-url = "http://127.0.0.1:$P_CP"
data-dir = "$TMP/wk"
device = "cpu"
EOF
"$GATEWAY_BIN" check-config "$TMP/controlplane.toml" "$TMP"/dataplane*.toml "$TMP/worker.toml" >&2

log "starting control plane :$P_CP, worker :$P_WK, gateway(s) :${P_GWS[*]:0:${#GW_T[@]}} (tokio threads ${GW_T[*]})"
"$GATEWAY_BIN" controlplane --config "$TMP/controlplane.toml" >"$TMP/controlplane.log" 2>&1 &
PIDS+=($!); CP_PID=$!
GW_PREFIX=()
WK_PREFIX=()
if [[ -n $CALLGRIND ]]; then
  mkdir -p "$CALLGRIND"
  # Counting starts by hand (callgrind_control -i on) once the stack is set up and warm.
  cg=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$CALLGRIND/callgrind.out")
  [[ $CG_SIM == 1 ]] && cg+=(--cache-sim=yes --branch-sim=yes)
  [[ $CG_TARGET == worker ]] && WK_PREFIX=("${cg[@]}")
  [[ $CG_TARGET == gateway ]] && GW_PREFIX=("${cg[@]}")
fi
"${WK_PREFIX[@]}" "$GATEWAY_BIN" worker --config "$TMP/worker.toml" >"$TMP/worker.log" 2>&1 &
PIDS+=($!); WK_PID=$!
GW_PIDS=()
for i in "${!GW_T[@]}"; do
  "${GW_PREFIX[@]}" "$(gw_bin "${GW_T[$i]}")" dataplane --config "$TMP/dataplane$i.toml" >"$TMP/dataplane$i.log" 2>&1 &
  PIDS+=($!); GW_PIDS+=($!)
done

GW=127.0.0.1:$P_GWS0   # set-up calls go through the first gateway
alive() { for p in "$CP_PID" "$WK_PID" "${GW_PIDS[@]}"; do kill -0 "$p" 2>/dev/null || die "a stack process (pid $p) exited"; done; }

# Admin token (loopback may mint one), through the gateway once it is up.
NVCF_TOKEN=
for _ in $(seq 1 100); do
  alive
  NVCF_TOKEN=$(curl -s -m 2 -X POST "http://$GW/v1/admin/keys" -H "Host: api-keys.$GW" 2>/dev/null | jq -r '.value // empty' 2>/dev/null || true)
  [[ -n $NVCF_TOKEN ]] && break
  sleep 0.2
done
[[ -n $NVCF_TOKEN ]] || die "could not mint an admin token"
AUTH=(-H "Authorization: Bearer $NVCF_TOKEN")

EXPIRES=$(date -u -d '+1 day' +%Y-%m-%dT%H:%M:%SZ)
KEY_JSON=$(curl -s -X POST "http://$GW/v1/keys" \
  -H "Host: api-keys.$GW" -H "Content-Type: application/json" \
  -H "Key-Issuer-Service: nvcf-api" \
  -H "Key-Issuer-Id: nvidia-cloud-functions-ncp-service-id-aketm" \
  -H "Key-Owner-Id: compare@nvcf-api.local" \
  -d '{"description": "compare key", "expires_at": "'"$EXPIRES"'",
       "audience_service_ids": ["nvidia-cloud-functions-ncp-service-id-aketm"],
       "authorizations": {"policies": [{"aud": "nvidia-cloud-functions-ncp-service-id-aketm",
         "auds": ["nvidia-cloud-functions-ncp-service-id-aketm"], "product": "nv-cloud-functions",
         "resources": [{"id": "*", "type": "account-functions"}, {"id": "*", "type": "authorized-functions"}],
         "scopes": ["invoke_function", "list_functions"]}]}}')
NVCF_API_KEY=$(jq -r '.value // empty' <<<"$KEY_JSON" 2>/dev/null || true)
[[ -n $NVCF_API_KEY ]] || die "could not mint an API key: ${KEY_JSON:0:500}"

# Wait for the worker to register (a cluster group with a GPU appears).
GPU=; ITYPE=
for _ in $(seq 1 100); do
  alive
  CG=$(curl -s -m 2 "http://$GW/v2/nvcf/clusterGroups" -H "Host: api.$GW" "${AUTH[@]}" || true)
  GPU=$(jq -r '.clusterGroups[0].gpus[0].name // empty' <<<"$CG" 2>/dev/null || true)
  ITYPE=$(jq -r '(.clusterGroups[0].gpus[0].instanceTypes[] | select(.default == true) | .name) // .clusterGroups[0].gpus[0].instanceTypes[0].name // empty' <<<"$CG" 2>/dev/null | head -n1 || true)
  [[ -n $GPU && -n $ITYPE ]] && break
  sleep 0.2
done
[[ -n $GPU && -n $ITYPE ]] || die "no worker registered (clusterGroups: ${CG:-})"

FN=$(curl -s -X POST "http://$GW/v2/nvcf/functions" -H "Host: api.$GW" "${AUTH[@]}" \
  -H "Content-Type: application/json" \
  -d '{"name": "compare-echo", "inferenceUrl": "/echo", "containerImage": "builtin/echo"}')
FID=$(jq -r '.function.id // empty' <<<"$FN" 2>/dev/null || true)
VID=$(jq -r '.function.versionId // empty' <<<"$FN" 2>/dev/null || true)
[[ -n $FID && -n $VID ]] || die "could not create the function: ${FN:0:500}"
DEP=$(curl -s -w '\n%{http_code}' -X POST "http://$GW/v2/nvcf/deployments/functions/$FID/versions/$VID" -H "Host: api.$GW" \
  "${AUTH[@]}" -H "Content-Type: application/json" \
  -d '{"deploymentSpecifications": [{"gpu": "'"$GPU"'", "instanceType": "'"$ITYPE"'",
       "minInstances": 1, "maxInstances": 1, "maxRequestConcurrency": 1024}]}')
[[ ${DEP##*$'\n'} == 2* ]] || die "could not deploy: ${DEP:0:500}"
STATUS=
for _ in $(seq 1 150); do
  alive
  STATUS=$(curl -s -m 2 "http://$GW/v2/nvcf/functions/$FID/versions/$VID" -H "Host: api.$GW" "${AUTH[@]}" | jq -r '.function.status // empty' || true)
  [[ $STATUS == ACTIVE ]] && break
  sleep 0.2
done
[[ $STATUS == ACTIVE ]] || die "function $FID not ACTIVE (status: $STATUS)"
log "builtin/echo ACTIVE: function $FID version $VID on $GPU/$ITYPE"

# ---------------------------------------------------------------- nginx
mkdir -p "$TMP/nginx/logs" "$TMP/nginx/tmp"
NG_HEADERS="      proxy_set_header NVCF-FUNCTION-VERSION-ID $VID;"
if [[ $NGINX_WORKER_HEADERS == 1 ]]; then
  NG_HEADERS+="
      proxy_set_header NVCF-INVOCATION-REGION local;
      proxy_set_header NVCF-REQID \$request_id;
      proxy_set_header NVCF-POLL-SECONDS 60;"
fi
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
  client_max_body_size 0;
$([[ $NGINX_BUFFERING == 0 ]] && printf '  proxy_request_buffering off;\n  proxy_buffering off;\n' || true)
  client_body_temp_path $TMP/nginx/tmp/body;
  proxy_temp_path $TMP/nginx/tmp/proxy;
  fastcgi_temp_path $TMP/nginx/tmp/fastcgi;
  uwsgi_temp_path $TMP/nginx/tmp/uwsgi;
  scgi_temp_path $TMP/nginx/tmp/scgi;
  upstream backend { server 127.0.0.1:$P_WK; keepalive 128; keepalive_requests 1000000; }
  server {
    listen 127.0.0.1:$P_NG1;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
$NG_HEADERS
    }
  }
  server {
    listen 127.0.0.1:$P_NG2 http2;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
$NG_HEADERS
    }
  }
}
EOF
# Run as the invoking user; a root master would hand the worker to `nobody`, which cannot write $TMP.
if [[ $(id -u) == 0 ]]; then sed -i '1i user root;' "$TMP/nginx/nginx.conf"; fi
NG_PREFIX=()
if [[ -n $CALLGRIND && $CG_TARGET == nginx ]]; then
  # One process that serves (no master), so that callgrind counts the process that proxies.
  sed -i '1i master_process off;' "$TMP/nginx/nginx.conf"
  NG_PREFIX=("${cg[@]}")
fi
"$NGINX_BIN" -t -q -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx/" >&2
"${NG_PREFIX[@]}" "$NGINX_BIN" -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx/" >"$TMP/nginx.log" 2>&1 &
NGINX_MASTER=$!
NGINX_WORKER=
[[ ${#NG_PREFIX[@]} -gt 0 ]] && NGINX_WORKER=$NGINX_MASTER
for _ in $(seq 1 50); do
  [[ -n $NGINX_WORKER ]] && break
  kill -0 "$NGINX_MASTER" 2>/dev/null || die "nginx exited"
  NGINX_WORKER=$(ps -o pid= --ppid "$NGINX_MASTER" | tr -d ' ' | head -n1 || true)
  [[ -n $NGINX_WORKER ]] && break
  sleep 0.1
done
[[ -n $NGINX_WORKER ]] || die "no nginx worker process"
for _ in $(seq 1 100); do   # listening (under valgrind it takes seconds)
  curl -s -m 1 -o /dev/null "http://127.0.0.1:$P_NG1/" && break
  kill -0 "$NGINX_WORKER" 2>/dev/null || die "nginx exited"
  sleep 0.1
done
log "nginx $("$NGINX_BIN" -v 2>&1 | sed 's/.*\///') on :$P_NG1 (h1) and :$P_NG2 (h2c), worker pid $NGINX_WORKER"

# ---------------------------------------------------------------- sanity: each arm answers 200 with the body
BODY=$(head -c "$BODY_SIZE" /dev/zero | tr '\0' x)
check() { # name, curl args...
  local name=$1; shift
  local out code
  out=$(curl -s -m 5 -w '\n%{http_code}' -X POST -H 'Content-Type: application/octet-stream' --data-binary "$BODY" "$@")
  code=${out##*$'\n'}
  [[ $code == 200 && ${out%$'\n'*} == "$BODY" ]] || die "$name: expected 200 + echoed body, got $code: ${out:0:300}"
}
check direct  "http://127.0.0.1:$P_WK/echo" -H "NVCF-FUNCTION-VERSION-ID: $VID"
check nginx   "http://127.0.0.1:$P_NG1/echo"
check_gateway() { # name port: once it learned the function and the key from the feed, it echoes
  local code
  for _ in $(seq 1 100); do
    code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST --data-binary "$BODY" "http://127.0.0.1:$2/echo" \
      -H "Host: $FID.invocation.127.0.0.1" -H "Authorization: Bearer $NVCF_API_KEY" || true)
    [[ $code == 200 ]] && break
    sleep 0.1
  done
  check "$1" "http://127.0.0.1:$2/echo" -H "Host: $FID.invocation.127.0.0.1" -H "Authorization: Bearer $NVCF_API_KEY"
}
for i in "${!GW_T[@]}"; do
  check_gateway "${GW_NAME[$i]}" "${P_GWS[$i]}"
done
curl -s -m 5 --http2-prior-knowledge -o /dev/null -w '%{http_code}' -X POST --data-binary "$BODY" "http://127.0.0.1:$P_NG2/echo" | grep -q 200 \
  || die "nginx h2c arm does not answer 200"
GW_HDRS=("Host: $FID.invocation.127.0.0.1" "Authorization: Bearer $NVCF_API_KEY")
if has_extra 1mib; then # each arm echoes a MIB_SIZE body whole
  head -c "$MIB_SIZE" /dev/zero | tr '\0' x >"$TMP/mib.body"
  check_mib() { # name, curl args...
    local name=$1; shift
    local code
    code=$(curl -s -m 20 -o "$TMP/mib.out" -w '%{http_code}' -X POST -H 'Content-Type: application/octet-stream' \
      --data-binary @"$TMP/mib.body" "$@" || true)
    [[ $code == 200 ]] && cmp -s "$TMP/mib.body" "$TMP/mib.out" \
      || die "$name: a $MIB_SIZE-byte body did not come back whole (HTTP $code, $(stat -c %s "$TMP/mib.out" 2>/dev/null || echo 0) bytes)"
  }
  check_mib direct "http://127.0.0.1:$P_WK/echo" -H "NVCF-FUNCTION-VERSION-ID: $VID"
  check_mib nginx  "http://127.0.0.1:$P_NG1/echo"
  for i in "${!GW_T[@]}"; do
    check_mib "${GW_NAME[$i]}" "http://127.0.0.1:${P_GWS[$i]}/echo" -H "${GW_HDRS[0]}" -H "${GW_HDRS[1]}"
  done
fi
TLS_CA=() # per gateway: the self-signed cert its data dir holds, or empty (then --insecure)
tls_trust() { if [[ -n ${TLS_CA[$1]} ]]; then echo "--cacert ${TLS_CA[$1]}"; else echo --insecure; fi; }
if has_extra h3; then # HTTP/2 over TLS and HTTP/3, host-routed like the plain arm (SNI: none, the URL is an IP)
  for i in "${!GW_T[@]}"; do
    TLS_CA[$i]=$(find "$TMP/dataplane$i" -name cert.pem -print -quit)
    read -r -a TLS_TRUST <<<"$(tls_trust "$i")"
    for proto in h2 h3; do
      out=$("$LOADTEST_BIN" --proto "$proto" -c 1 -n 20 --body-size "$BODY_SIZE" --json -q "${TLS_TRUST[@]}" \
        -H "${GW_HDRS[0]}" -H "${GW_HDRS[1]}" "https://127.0.0.1:${P_TLS[$i]}/echo" 2>"$TMP/loadtest.err") \
        || die "${GW_NAME[$i]} $proto: loadtest failed: $(tail -n 5 "$TMP/loadtest.err")"
      [[ $(jq '.ok' <<<"$out") == 20 ]] || die "${GW_NAME[$i]} $proto: not 20 × 200: $(jq -c '{requests, ok, errors, status, errors_by_kind}' <<<"$out")"
    done
  done
  log "gateway TLS (h2) and QUIC (h3) listeners on :${P_TLS[*]:0:${#GW_T[@]}} answer host-routed calls (${TLS_TRUST[*]})"
fi

# ---------------------------------------------------------------- runs
to_secs() { python3 -c 'import sys,re
s=sys.argv[1].strip(); m=re.fullmatch(r"([0-9.]+)(ms|s|m)?", s)
if not m: sys.exit("bad duration: "+s)
v=float(m.group(1)); u=m.group(2) or "s"
print(v/1000 if u=="ms" else v*60 if u=="m" else v)' "$1"; }
WARMUP_S=$(to_secs "$WARMUP")
CLK_TCK=$(getconf CLK_TCK)
ctx_switches() { # voluntary + involuntary context switches of all threads of a pid
  cat /proc/"$1"/task/*/status 2>/dev/null | awk '/ctxt_switches/ { s += $2 } END { print s + 0 }'
}
stat_fields() { # the fields of /proc/<pid>/stat after `comm` (which may hold spaces): proc(5)'s field n at index n-3
  local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || die "process $1 went away (stopped from outside the script?)"
  echo "${s##*) }"
}
cpu_ticks() { # utime + stime of a pid (fields 14, 15)
  local f; read -r -a f <<<"$(stat_fields "$1")"
  echo $(( f[11] + f[12] ))
}
sys_ticks() { # stime of a pid (field 15): its time in the kernel
  local f; read -r -a f <<<"$(stat_fields "$1")"
  echo "${f[12]}"
}
busy_ticks() { # the machine's busy CPU ticks, all cores (user+nice+system+irq+softirq of /proc/stat; not idle, iowait, steal)
  local _cpu user nice system _idle _iowait irq softirq _rest
  read -r _cpu user nice system _idle _iowait irq softirq _rest </proc/stat
  echo $((user + nice + system + irq + softirq))
}
min_faults() { # minor page faults of a pid (field 10): memory handed back and touched again
  local f; read -r -a f <<<"$(stat_fields "$1")"
  echo "${f[7]}"
}

EXTRA_WARMUP_S=$(to_secs "$EXTRA_WARMUP")
to_secs "$EXTRA_DURATION" >/dev/null

RESULTS=$TMP/results.jsonl
: >"$RESULTS"
declare -A OPEN_RATE=()
LT_MORE=()     # extra loadtest flags for the next run_arm calls (TLS trust)
run_arm() { # kind round arm proxy_pid url [headers...]
  # kind: h1, h2c (the closed-loop rounds); open<pct>, mib, h2c-1x64, h2c-8x16, tls-h2, tls-h3, logcost (extras)
  local kind=$1 round=$2 arm=$3 ppid=$4 url=$5; shift 5
  local hdrs=() h
  for h in "$@"; do hdrs+=(-H "$h"); done
  local dur=$EXTRA_DURATION wu=$EXTRA_WARMUP wus=$EXTRA_WARMUP_S body=$BODY_SIZE shape
  case $kind in
    h1)       shape=(--proto h1 -c "$H1_CONNS"); dur=$DURATION; wu=$WARMUP; wus=$WARMUP_S ;;
    h2c)      shape=(--proto h2c -c "$H2_CONNS" -m "$H2_STREAMS"); dur=$DURATION; wu=$WARMUP; wus=$WARMUP_S ;;
    open*)    shape=(--proto h1 -c "$H1_CONNS" --rate "${OPEN_RATE[${kind#open}]}") ;;
    mib)      shape=(--proto h1 -c "$MIB_CONNS"); body=$MIB_SIZE ;;
    h2c-1x64) shape=(--proto h2c -c 1 -m 64) ;;
    logcost)  shape=(--proto h1 -c "$H1_CONNS") ;;
    h2c-8x16) shape=(--proto h2c -c 8 -m 16) ;;
    tls-h2|tls-h3) shape=(--proto "${kind#tls-}" -c "$TLS_CONNS" -m "$TLS_STREAMS") ;;
    *) die "run_arm: unknown kind $kind" ;;
  esac
  local out=$TMP/run-$kind-$round-$arm.json
  "$LOADTEST_BIN" "${shape[@]}" "${LT_MORE[@]}" -d "$dur" --warmup "$wu" \
    --body-size "$body" --json -q "${hdrs[@]}" "$url" >"$out" 2>"$TMP/loadtest.err" &
  local lt=$!
  LT_PID=$lt
  sleep "$wus"
  local p0 w0 p1 w1 c0 c1 f0 f1 b0 b1 s0 s1 ws0 ws1
  p0=$(cpu_ticks "$ppid"); w0=$(cpu_ticks "$WK_PID"); c0=$(ctx_switches "$ppid"); f0=$(min_faults "$ppid"); b0=$(busy_ticks)
  s0=$(sys_ticks "$ppid"); ws0=$(sys_ticks "$WK_PID")
  wait "$lt" || die "loadtest failed ($kind $arm): $(tail -n 5 "$TMP/loadtest.err")"
  LT_PID=
  p1=$(cpu_ticks "$ppid"); w1=$(cpu_ticks "$WK_PID"); c1=$(ctx_switches "$ppid"); f1=$(min_faults "$ppid"); b1=$(busy_ticks)
  s1=$(sys_ticks "$ppid"); ws1=$(sys_ticks "$WK_PID")
  jq -c --arg proto "$kind" --arg arm "$arm" --argjson round "$round" --argjson st $((s1 - s0)) --argjson wst $((ws1 - ws0)) \
     --argjson pt $((p1 - p0)) --argjson wt $((w1 - w0)) --argjson tck "$CLK_TCK" --argjson cs $((c1 - c0)) --argjson pf $((f1 - f0)) --argjson bt $((b1 - b0)) \
     '{proto: $proto, arm: $arm, round: $round, rps: .throughput.req_per_s, mb_s: .throughput.resp_mb_per_s,
       rate: .target_rate, late: (.open_loop.client_late_sends // null),
       p50: .latency_us.p50, p99: .latency_us.p99, requests, ok, errors,
       proxy_cpu_us: (if .requests > 0 then $pt * 1e6 / $tck / .requests else null end),
       proxy_sys_us: (if .requests > 0 then $st * 1e6 / $tck / .requests else null end),
       worker_cpu_us: (if .requests > 0 then $wt * 1e6 / $tck / .requests else null end),
       worker_sys_us: (if .requests > 0 then $wst * 1e6 / $tck / .requests else null end),
       all_cpu_us: (if .requests > 0 then $bt * 1e6 / $tck / .requests else null end),
       proxy_cs: (if .requests > 0 then $cs / .requests else null end),
       proxy_faults: (if .requests > 0 then $pf / .requests else null end)}' \
     "$out" >>"$RESULTS"
  log "$(tail -n 1 "$RESULTS" | jq -r '"\(.proto) round \(.round) \(.arm): \(.rps|floor) req/s\(if .rate then " (target \(.rate))" else "" end)\(if .proto == "mib" then ", \(.mb_s|floor) MB/s" else "" end), p50 \(.p50) µs, p99 \(.p99) µs, ok \(.ok)/\(.requests), errors \(.errors), proxy \(.proxy_cpu_us|tostring|.[0:5]) µs/req (kernel \(.proxy_sys_us|tostring|.[0:5]), \(.proxy_cs|tostring|.[0:4]) context switches, \(.proxy_faults|tostring|.[0:5]) page faults), worker \(.worker_cpu_us|tostring|.[0:5]) µs/req (kernel \(.worker_sys_us|tostring|.[0:5])), machine \(.all_cpu_us|tostring|.[0:5]) µs/req"')"
}
median_rps() { # kind arm → the median req/s of its runs so far
  python3 - "$RESULTS" "$1" "$2" <<'EOF'
import json, statistics, sys
rs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
print(statistics.median([r["rps"] for r in rs if r["proto"] == sys.argv[2] and r["arm"] == sys.argv[3]]))
EOF
}
best_gw() { # kind → index (into GW_T) of the gateway arm with the best median req/s
  local i best=0 v bv=-1
  for i in "${!GW_T[@]}"; do
    v=$(median_rps "$1" "${GW_NAME[$i]}")
    if python3 -c 'import sys; sys.exit(0 if float(sys.argv[1]) > float(sys.argv[2]) else 1)' "$v" "$bv"; then best=$i; bv=$v; fi
  done
  echo "$best"
}
gw_metrics() { # index → "<gateway_worker_connections_opened_total> <Σ function_request>" from its admin /metrics
  curl -s -m 5 "http://127.0.0.1:${P_GWA[$1]}/metrics" | awk '
    $1 ~ /^gateway_worker_connections_opened_total(\{|$)/ { o += $2; seen_o = 1 }
    $1 ~ /^function_request(\{|$)/ { r += $2; seen_r = 1 }
    END { if (!seen_o || !seen_r) exit 1; printf "%.0f %.0f\n", o, r }'
}

if [[ -n $CALLGRIND ]]; then
  pid=${GW_PIDS[0]}
  [[ $CG_TARGET == worker ]] && pid=$WK_PID
  CG_ARM=(-H "Host: $FID.invocation.127.0.0.1" -H "Authorization: Bearer $NVCF_API_KEY" "http://127.0.0.1:${P_GWS[0]}/echo")
  if [[ $CG_TARGET == nginx ]]; then
    pid=$NGINX_WORKER
    CG_ARM=("http://127.0.0.1:$P_NG1/echo")
    [[ $CG_PROTO == h2c ]] && CG_ARM=("http://127.0.0.1:$P_NG2/echo")
  fi
  cg_calls() { # requests → runs them through the proxy counted (CG_SHAPE), and checks they all succeeded
    "$LOADTEST_BIN" "${CG_SHAPE[@]}" -n "$1" --body-size "$BODY_SIZE" --json -q \
      "${CG_ARM[@]}" >"$TMP/cg.json" 2>"$TMP/loadtest.err" \
      || die "loadtest failed under callgrind: $(tail -n 5 "$TMP/loadtest.err")"
    [[ $(jq -r .ok "$TMP/cg.json") == "$1" ]] || die "under callgrind: $(jq -c '{ok, errors, status}' "$TMP/cg.json")"
  }
  log "callgrind ($CG_PROTO, counting the $CG_TARGET): $CG_WARM calls to warm up, then $CG_REQUESTS counted (the counted process runs about 50 times slower)"
  cg_calls "$CG_WARM"
  callgrind_control -i on "$pid" >/dev/null 2>&1
  cg_calls "$CG_REQUESTS"
  callgrind_control -i off "$pid" >/dev/null 2>&1
  callgrind_control -d "$pid" >/dev/null 2>&1
  sleep 1
  out=$(ls -t "$CALLGRIND"/callgrind.out* | head -n 1)
  callgrind_annotate --inclusive=yes "$out" >"$CALLGRIND/inclusive.txt" 2>/dev/null || true
  callgrind_annotate "$out" >"$CALLGRIND/self.txt" 2>/dev/null || true
  ir=$(grep -m1 -E '^ *[0-9,]+ .*PROGRAM TOTALS' "$CALLGRIND/self.txt" | awk '{ gsub(",", "", $1); print $1 }')
  [[ -n $ir ]] || die "no totals in $out"
  per=$(( ir / CG_REQUESTS ))
  log "callgrind: the $CG_TARGET ran $ir instructions over $CG_REQUESTS calls = $per per request (user space; reports in $CALLGRIND)"
  if [[ $CG_SIM == 1 ]]; then
    # Every simulated event per request: "Ir 23226 I1mr 12 ... Bcm 310 ..."
    sim=$(awk -v n="$CG_REQUESTS" '/^Events shown:/ { for (i = 3; i <= NF; i++) ev[i - 2] = $i; k = NF - 2 }
      /PROGRAM TOTALS/ { j = 0; for (i = 1; i <= NF && j < k; i++) if ($i ~ /^[0-9,]+$/) { v = $i; gsub(",", "", v); j++; printf "%s %.1f ", ev[j], v / n } exit }' \
      "$CALLGRIND/self.txt")
    log "callgrind simulation, per request: $sim"
  fi
  echo "{\"instructions_per_request\": $per}"
  exit 0
fi

if [[ -n ${PROFILE:-} ]]; then
  command -v perf >/dev/null || die "PROFILE needs perf"
  mkdir -p "$PROFILE"
  log "profiling ${GW_NAME[0]} (pid ${GW_PIDS[0]}) under HTTP/1.1 -c $H1_CONNS for $DURATION"
  perf record -F 2000 -g --call-graph dwarf,16384 -o "$PROFILE/perf.data" -p "${GW_PIDS[0]}" 2>"$PROFILE/perf-record.log" &
  PERF_PID=$!
  run_arm h1 1 "${GW_NAME[0]}" "${GW_PIDS[0]}" "http://127.0.0.1:${P_GWS[0]}/echo" \
    "Host: $FID.invocation.127.0.0.1" "Authorization: Bearer $NVCF_API_KEY"
  kill -INT "$PERF_PID"; wait "$PERF_PID" || true
  # Whole reports to files (a `| head` would SIGPIPE perf under pipefail).
  perf report -i "$PROFILE/perf.data" --no-children --sort symbol --stdio -g none >"$PROFILE/self.txt" 2>/dev/null || true
  perf report -i "$PROFILE/perf.data" --children --sort symbol --stdio -g none >"$PROFILE/children.txt" 2>/dev/null || true
  log "perf reports in $PROFILE (self.txt, children.txt); raw data $PROFILE/perf.data"
  # The yardstick's profile under the same load: where nginx's CPU goes (kernel share).
  perf record -F 2000 -g -o "$PROFILE/perf-nginx.data" -p "$NGINX_WORKER" 2>>"$PROFILE/perf-record.log" &
  PERF_PID=$!
  run_arm h1 1 nginx "$NGINX_WORKER" "http://127.0.0.1:$P_NG1/echo"
  kill -INT "$PERF_PID"; wait "$PERF_PID" || true
  perf report -i "$PROFILE/perf-nginx.data" --no-children --sort symbol --stdio -g none >"$PROFILE/self-nginx.txt" 2>/dev/null || true
  for f in self self-nginx; do
    log "$f: $(grep -E '^ +[0-9]' "$PROFILE/$f.txt" | awk '{ v = $1; sub("%", "", v); s[$2] += v } END { printf "kernel %.1f%%, user %.1f%%", s["[k]"], s["[.]"] }')"
  done
  # Syscalls per request, the gateway's and nginx's worker's, each over one more run, counted by
  # tracepoints (`perf stat`: cheap enough not to change the load, unlike `perf trace`).
  SYSCALLS=(writev write sendto sendmsg read readv recvfrom recvmsg epoll_wait epoll_pwait epoll_ctl futex getsockopt setsockopt sched_yield)
  EVENTS=$(printf 'syscalls:sys_enter_%s,' "${SYSCALLS[@]}"); EVENTS=${EVENTS%,}
  for arm in gateway nginx; do
    if [[ $arm == gateway ]]; then pid=${GW_PIDS[0]}; else pid=$NGINX_WORKER; fi
    # Counting starts as the warm-up ends, as the measured window does.
    (sleep "$WARMUP_S"; exec perf stat -x, -e "$EVENTS" -o "$PROFILE/syscalls-$arm.csv" -p "$pid" 2>/dev/null) &
    PERF_PID=$!
    # The worker's behind each proxy too: how a proxy writes to it changes what it does.
    (sleep "$WARMUP_S"; exec perf stat -x, -e "$EVENTS" -o "$PROFILE/syscalls-worker-behind-$arm.csv" -p "$WK_PID" 2>/dev/null) &
    PERF_WK_PID=$!
    if [[ $arm == gateway ]]; then
      run_arm h1 2 "${GW_NAME[0]}" "$pid" "http://127.0.0.1:${P_GWS[0]}/echo" \
        "Host: $FID.invocation.127.0.0.1" "Authorization: Bearer $NVCF_API_KEY"
    else
      run_arm h1 2 nginx "$pid" "http://127.0.0.1:$P_NG1/echo"
    fi
    kill -INT "$PERF_PID" "$PERF_WK_PID"; wait "$PERF_PID" || true; wait "$PERF_WK_PID" || true
    n=$(tail -n 1 "$RESULTS" | jq -r .requests)
    for who in "$arm" "worker-behind-$arm"; do
      awk -F, -v n="$n" '$1 ~ /^[0-9]+$/ && $1 > 0 { sub("syscalls:sys_enter_", "", $3); t += $1; printf "%-12s %7.3f per request\n", $3, $1 / n }
        END { printf "%-12s %7.3f per request\n", "all", t / n }' "$PROFILE/syscalls-$who.csv" >"$PROFILE/syscalls-$who-per-request.txt"
      log "$who syscalls per request: $(tr -s ' ' <"$PROFILE/syscalls-$who-per-request.txt" | paste -sd, | sed 's/ per request//g')"
    done
  done
  exit 0
fi

REUSE=$TMP/reuse.jsonl
: >"$REUSE"
declare -a M0=()
if has_extra reuse; then
  for i in "${!GW_T[@]}"; do
    M0[$i]=$(gw_metrics "$i") || die "${GW_NAME[$i]}: no gateway_worker_connections_opened_total / function_request on http://127.0.0.1:${P_GWA[$i]}/metrics"
  done
fi
START=$(date -u +%s)
for proto in h1 h2c; do
  ng_port=$P_NG1; [[ $proto == h2c ]] && ng_port=$P_NG2
  for round in $(seq 1 "$ROUNDS"); do
    alive
    run_arm "$proto" "$round" direct  "$WK_PID"       "http://127.0.0.1:$P_WK/echo" "NVCF-FUNCTION-VERSION-ID: $VID"
    run_arm "$proto" "$round" nginx   "$NGINX_WORKER" "http://127.0.0.1:$ng_port/echo"
    for i in "${!GW_T[@]}"; do
      run_arm "$proto" "$round" "${GW_NAME[$i]}" "${GW_PIDS[$i]}" "http://127.0.0.1:${P_GWS[$i]}/echo" \
        "Host: $FID.invocation.127.0.0.1" "Authorization: Bearer $NVCF_API_KEY"
    done
  done
done
ELAPSED=$(( $(date -u +%s) - START ))
if has_extra reuse; then
  for i in "${!GW_T[@]}"; do
    m1=$(gw_metrics "$i") || die "${GW_NAME[$i]}: /metrics unreadable after the rounds"
    read -r o0 r0 <<<"${M0[$i]}"; read -r o1 r1 <<<"$m1"
    jq -cn --arg arm "${GW_NAME[$i]}" --argjson o $((o1 - o0)) --argjson r $((r1 - r0)) '{arm: $arm, opened: $o, requests: $r}' >>"$REUSE"
    log "upstream reuse ${GW_NAME[$i]} over the closed-loop rounds: $((o1 - o0)) worker connections opened for $((r1 - r0)) function requests"
  done
fi

# ---------------------------------------------------------------- extras (on the better gateway arm)
XSTART=$(date -u +%s)
GB1=0; GB2=0
if [[ -n $EXTRA_GW ]]; then
  for i in "${!GW_T[@]}"; do [[ ${GW_T[$i]} == "$EXTRA_GW" ]] && { GB1=$i; GB2=$i; }; done
elif [[ -n $EXTRA ]]; then
  GB1=$(best_gw h1); GB2=$(best_gw h2c)
fi
GW1=(${GW_NAME[$GB1]} "${GW_PIDS[$GB1]}" "http://127.0.0.1:${P_GWS[$GB1]}/echo" "${GW_HDRS[@]}")
GW2=(${GW_NAME[$GB2]} "${GW_PIDS[$GB2]}" "http://127.0.0.1:${P_GWS[$GB2]}/echo" "${GW_HDRS[@]}")
if has_extra open; then
  NGINX_CAP=${OPEN_CAP:-$(median_rps h1 nginx | cut -d. -f1)}
  for l in "${OPEN_L[@]}"; do OPEN_RATE[$l]=$(python3 -c 'import sys; print(max(1, round(float(sys.argv[1]) * int(sys.argv[2]) / 100)))' "$NGINX_CAP" "$l"); done
  log "open loop at ${OPEN_L[*]} % of nginx's HTTP/1.1 median ($NGINX_CAP req/s): $(for l in "${OPEN_L[@]}"; do printf '%s req/s ' "${OPEN_RATE[$l]}"; done)on direct, nginx, ${GW1[0]}"
  for round in $(seq 1 "$EXTRA_ROUNDS"); do
    for l in "${OPEN_L[@]}"; do
      alive
      run_arm "open$l" "$round" direct "$WK_PID"       "http://127.0.0.1:$P_WK/echo" "NVCF-FUNCTION-VERSION-ID: $VID"
      run_arm "open$l" "$round" nginx  "$NGINX_WORKER" "http://127.0.0.1:$P_NG1/echo"
      run_arm "open$l" "$round" "${GW1[@]}"
    done
  done
fi
if has_extra 1mib; then
  for round in $(seq 1 "$EXTRA_ROUNDS"); do
    alive
    run_arm mib "$round" direct "$WK_PID"       "http://127.0.0.1:$P_WK/echo" "NVCF-FUNCTION-VERSION-ID: $VID"
    run_arm mib "$round" nginx  "$NGINX_WORKER" "http://127.0.0.1:$P_NG1/echo"
    run_arm mib "$round" "${GW1[@]}"
  done
fi
if has_extra streams; then
  for round in $(seq 1 "$EXTRA_ROUNDS"); do
    alive
    run_arm h2c-1x64 "$round" "${GW2[@]}"
    run_arm h2c-8x16 "$round" "${GW2[@]}"
  done
fi
if has_extra h3; then
  read -r -a LT_MORE <<<"$(tls_trust "$GB2")"
  for round in $(seq 1 "$EXTRA_ROUNDS"); do
    alive
    run_arm tls-h2 "$round" "${GW2[0]}" "${GW2[1]}" "https://127.0.0.1:${P_TLS[$GB2]}/echo" "${GW_HDRS[@]}"
    run_arm tls-h3 "$round" "${GW2[0]}" "${GW2[1]}" "https://127.0.0.1:${P_TLS[$GB2]}/echo" "${GW_HDRS[@]}"
  done
  LT_MORE=()
fi
if has_extra logcost; then # the same build and thread count without the access log, and without both
  dataplane_toml dataplane-bare "${GW_T[$GB1]%:b}" "$P_GWB" "" "" false
  "$(gw_bin "${GW_T[$GB1]}")" dataplane --config "$TMP/dataplane-bare.toml" >"$TMP/dataplane-bare.log" 2>&1 &
  PIDS+=($!); BARE_PID=$!
  check_gateway "${GW1[0]}-bare" "$P_GWB"
  dataplane_toml dataplane-nolog "${GW_T[$GB1]%:b}" "$P_GWL" "127.0.0.1:$P_GWLA" "" false
  "$(gw_bin "${GW_T[$GB1]}")" dataplane --config "$TMP/dataplane-nolog.toml" >"$TMP/dataplane-nolog.log" 2>&1 &
  PIDS+=($!); NOLOG_PID=$!
  check_gateway "${GW1[0]}-nolog" "$P_GWL"
  for round in $(seq 1 "$EXTRA_ROUNDS"); do
    alive
    run_arm logcost "$round" "${GW1[@]}"
    run_arm logcost "$round" "${GW1[0]}-nolog" "$NOLOG_PID" "http://127.0.0.1:$P_GWL/echo" "${GW_HDRS[@]}"
    run_arm logcost "$round" "${GW1[0]}-bare" "$BARE_PID" "http://127.0.0.1:$P_GWB/echo" "${GW_HDRS[@]}"
  done
  kill "$BARE_PID" "$NOLOG_PID" 2>/dev/null || true
fi
STALL=$TMP/stall.jsonl
: >"$STALL"
if has_extra stall; then # STALL_N downloads of a STALL_SIZE echo whose responses are never read
  for i in "${!GW_T[@]}"; do
    alive
    python3 - "$FID" "$NVCF_API_KEY" "${P_GWS[$i]}" "${GW_PIDS[$i]}" "$STALL_N" "$STALL_SIZE" "${GW_NAME[$i]}" >>"$STALL" <<'PY'
import json, socket, sys, time
fid, key, port, pid, n, size, arm = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), int(sys.argv[6]), sys.argv[7]
def rss_kib():
    for line in open(f"/proc/{pid}/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
def stall(n):
    """n downloads that send until flow control stops them and never read; open sockets back."""
    socks = []
    for _ in range(n):
        s = socket.create_connection(("127.0.0.1", port))
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)  # the client reads nothing
        s.sendall((f"POST /stall HTTP/1.1\r\nHost: {fid}.invocation.127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
                   f"Content-Type: application/octet-stream\r\nContent-Length: {size}\r\n\r\n").encode())
        s.setblocking(False)
        socks.append([s, 0, None])
    chunk = b"x" * 65536
    deadline = time.time() + 60
    while time.time() < deadline:
        busy = False
        for st in socks:
            s, sent, since = st
            if sent >= size or (since is not None and time.time() - since > 2):
                continue
            busy = True
            try:
                st[1] += s.send(chunk[: size - sent])
                st[2] = None
            except BlockingIOError:
                st[2] = st[2] or time.time()
            except OSError:
                st[1] = size  # the gateway gave up on it
        if not busy:
            break
        time.sleep(0.001)
    time.sleep(1)
    return socks
# A first round, closed again, brings the allocator to its steady state (otherwise what it
# kept or gave back from earlier runs is larger than what is measured).
for st in stall(n):
    st[0].close()
time.sleep(2)
before = rss_kib()
socks = stall(n)
after = rss_kib()
for st in socks:
    st[0].close()
print(json.dumps({"arm": arm, "downloads": n, "sent_mib": round(sum(st[1] for st in socks) / n / 1048576, 1),
                  "rss_before_kib": before, "rss_after_kib": after,
                  "per_download_kib": round((after - before) / n, 1)}))
PY
    log "stalled downloads on ${GW_NAME[$i]}: $(tail -n 1 "$STALL")"
  done
fi
EXTRA_ELAPSED=$(( $(date -u +%s) - XSTART ))

# ---------------------------------------------------------------- report
export RESULTS ROUNDS DURATION WARMUP BODY_SIZE H1_CONNS H2_CONNS H2_STREAMS GW_THREADS NOTE ELAPSED WRITE_DOC DOC
export REUSE STALL EXTRA EXTRA_ROUNDS EXTRA_DURATION EXTRA_WARMUP OPEN_LOADS MIB_SIZE MIB_CONNS TLS_CONNS TLS_STREAMS EXTRA_ELAPSED
export NGINX_CAP=${NGINX_CAP:-} NGINX_BUFFERING NGINX_WORKER_HEADERS EXTRA_GW STALL_SIZE GATEWAY_BIN_B
export NGINX_VERSION=$("$NGINX_BIN" -v 2>&1 | sed 's/.*\///')
export MACHINE="$(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //' || echo unknown)), $(uname -r)"
python3 - <<'EOF'
import json, os, statistics, datetime

rows = [json.loads(l) for l in open(os.environ["RESULTS"]) if l.strip()]
med = lambda xs: statistics.median(xs) if xs else float("nan")
def agg(proto, arm):
    rs = [r for r in rows if r["proto"] == proto and r["arm"] == arm]
    return {
        "rps": med([r["rps"] for r in rs]),
        "runs": [r["rps"] for r in rs],
        "p50": med([r["p50"] for r in rs]),
        "p99": med([r["p99"] for r in rs]),
        "proxy_cpu": med([r["proxy_cpu_us"] for r in rs if r["proxy_cpu_us"] is not None]),
        "worker_cpu": med([r["worker_cpu_us"] for r in rs if r["worker_cpu_us"] is not None]),
        "all_cpu": med([r["all_cpu_us"] for r in rs if r.get("all_cpu_us") is not None]),
        "errors": sum(r["errors"] for r in rs),
        "non2xx": sum(r["requests"] - r["ok"] for r in rs),
        "mb_s": med([r["mb_s"] for r in rs if r.get("mb_s") is not None]),
        "rate": rs[0].get("rate") if rs else None,
        "late": sum(r.get("late") or 0 for r in rs),
        "n": len(rs),
    }
def gw_name(t):
    """The arm of a GW_THREADS value, as the script's gw_name names it."""
    base = t.removesuffix(":b")
    name = f"gateway-{base}" if base.endswith("s") else f"gateway-{base}t"
    return name + "-b" if t.endswith(":b") else name
GWS = [gw_name(t) for t in os.environ["GW_THREADS"].split()]
ARMS = ["direct", "nginx"] + GWS
A = {(p, a): agg(p, a) for p in ("h1", "h2c") for a in ARMS}
# The better gateway arm per protocol (by median req/s), as performance.md's method asks.
best = {p: max(GWS, key=lambda a: A[(p, a)]["rps"]) for p in ("h1", "h2c")}
for p in ("h1", "h2c"):
    A[(p, "gateway")] = A[(p, best[p])]
E = os.environ
shape = {"h1": f"HTTP/1.1, -c {E['H1_CONNS']}", "h2c": f"h2c, -c {E['H2_CONNS']} -m {E['H2_STREAMS']}"}
lines = ["| Arm | req/s (median) | ÷ direct | ÷ nginx | p50 | p99 | proxy CPU µs/req | worker CPU µs/req | machine CPU µs/req | req/s per run | errors / non-2xx |",
         "|---|---|---|---|---|---|---|---|---|---|---|"]
for p in ("h1", "h2c"):
    d, n = A[(p, "direct")], A[(p, "nginx")]
    for a in ARMS:
        x = A[(p, a)]
        cpu = "—" if a == "direct" else f"{x['proxy_cpu']:.1f}"
        lines.append(
            f"| {shape[p]} {a} | {x['rps']:,.0f} | {x['rps']/d['rps']:.2f} | {x['rps']/n['rps']:.2f} | "
            f"{x['p50']/1000:.2f} ms | {x['p99']/1000:.2f} ms | {cpu} | {x['worker_cpu']:.1f} | {x['all_cpu']:.1f} | "
            + ", ".join(f"{v/1000:.1f}k" for v in x["runs"]) + f" | {x['errors']} / {x['non2xx']} |")
table = "\n".join(lines)
r = lambda v: round(v, 3)
summary = {
    "h1_vs_nginx": r(A[("h1", "gateway")]["rps"] / A[("h1", "nginx")]["rps"]),
    "h1_vs_direct": r(A[("h1", "gateway")]["rps"] / A[("h1", "direct")]["rps"]),
    "cpu_per_req_vs_nginx": r(A[("h1", "gateway")]["proxy_cpu"] / A[("h1", "nginx")]["proxy_cpu"]),
    "added_p50_ms": r((A[("h1", "gateway")]["p50"] - A[("h1", "direct")]["p50"]) / 1000),
    "h2c_vs_direct": r(A[("h2c", "gateway")]["rps"] / A[("h2c", "direct")]["rps"]),
}
extra = {
    "h2c_vs_nginx": r(A[("h2c", "gateway")]["rps"] / A[("h2c", "nginx")]["rps"]),
    "h2c_cpu_per_req_vs_nginx": r(A[("h2c", "gateway")]["proxy_cpu"] / A[("h2c", "nginx")]["proxy_cpu"]),
    "nginx_added_p50_ms": r((A[("h1", "nginx")]["p50"] - A[("h1", "direct")]["p50"]) / 1000),
}
# The better arm by throughput can be either when their throughputs are within the noise, and their
# CPU per request is not: the text gives every arm's.
cpu_by_arm = ", ".join(
    f"{a} {r(A[('h1', a)]['proxy_cpu'] / A[('h1', 'nginx')]['proxy_cpu'])}" for a in GWS)
def paired(kind, arms, f):
    """The median over rounds of f(row of each arm in that round): a ratio taken within one round,
    whose arms ran minutes apart at most, so that the machine's drift over the run cancels
    ("ratios in one run, medians of several runs"). None when no round gives a value."""
    by = {}
    for x in rows:
        if x["proto"] == kind and x["arm"] in arms:
            by.setdefault(x["round"], {})[x["arm"]] = x
    vs = [v for rr in by.values() if len(rr) == len(arms)
          for v in [f(*(rr[a] for a in arms))] if v is not None]
    return r(statistics.median(vs)) if vs else None
def div(a, b):
    """a ÷ b, or None where b is not positive or either is not a number."""
    return a / b if b and b > 0 and a == a and b == b else None
paired_h1 = paired("h1", [best["h1"], "nginx"], lambda g, n: div(g["rps"], n["rps"]))
paired_cpu = paired("h1", [best["h1"], "nginx"], lambda g, n: div(g["proxy_cpu_us"], n["proxy_cpu_us"]))
summary["h1_vs_nginx_paired"] = paired_h1
# ---- extras (absent kinds are skipped): rows of (kind, arm) actually run
EXTRA = [x for x in E.get("EXTRA", "").split(",") if x]
kinds = {(r["proto"], r["arm"]) for r in rows}
X = lambda k, a: agg(k, a) if (k, a) in kinds else None
def ratio(num, den):
    q = div(num, den)
    return None if q is None else r(q)
gw_arm = lambda k: next((a for (kk, a) in sorted(kinds) if kk == k and a.startswith("gateway")), None)
xlines = ["| Run | Arm | req/s (median) | resp MB/s | p50 | p99 | p50 − direct | p99 − direct | proxy CPU µs/req | req/s per run | errors / non-2xx / late sends |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
def xrow(label, k, a, base=None):
    x = X(k, a)
    if x is None:
        return
    d = lambda f: "—" if base is None or a == "direct" else f"{(x[f] - base[f]) / 1000:+.2f} ms"
    cpu = "—" if a == "direct" else f"{x['proxy_cpu']:.1f}"
    xlines.append(f"| {label} | {a} | {x['rps']:,.0f} | {x['mb_s']:,.1f} | {x['p50']/1000:.2f} ms | {x['p99']/1000:.2f} ms | "
                  f"{d('p50')} | {d('p99')} | {cpu} | " + ", ".join(f"{v/1000:.1f}k" for v in x["runs"])
                  + f" | {x['errors']} / {x['non2xx']} / {x['late']} |")
xprose = []
for l in E.get("OPEN_LOADS", "").split():
    k = f"open{l}"
    g = gw_arm(k)
    d, n = X(k, "direct"), X(k, "nginx")
    if not (g and d and n):
        continue
    G = X(k, g)
    label = f"open loop {l}% ({d['rate']:,.0f} req/s), HTTP/1.1 -c {E['H1_CONNS']}"
    for a in ("direct", "nginx", g):
        xrow(label, k, a, d)
    summary[f"open{l}_added_p50_ms"] = r((G["p50"] - d["p50"]) / 1000)
    summary[f"open{l}_nginx_added_p50_ms"] = r((n["p50"] - d["p50"]) / 1000)
    summary[f"open{l}_p99_added_vs_nginx"] = ratio(G["p99"] - d["p99"], n["p99"] - d["p99"])
    summary[f"open{l}_p99_added_vs_nginx_paired"] = paired(
        k, [g, "nginx", "direct"], lambda G_, n_, d_: div(G_["p99"] - d_["p99"], n_["p99"] - d_["p99"]))
    xprose.append(f"open loop at {l}% of nginx's capacity ({d['rate']:,.0f} req/s): added p50 over direct gateway "
                  f"**{summary[f'open{l}_added_p50_ms']} ms**, nginx {summary[f'open{l}_nginx_added_p50_ms']} ms; "
                  f"added p99 gateway ÷ nginx **{summary[f'open{l}_p99_added_vs_nginx'] if summary[f'open{l}_p99_added_vs_nginx'] is not None else 'n/a'}** "
                  f"({(G['p99'] - d['p99'])/1000:+.2f} ms vs {(n['p99'] - d['p99'])/1000:+.2f} ms; "
                  f"the median of the rounds' own ratios: {summary[f'open{l}_p99_added_vs_nginx_paired']})")
g = gw_arm("mib")
if g and X("mib", "direct") and X("mib", "nginx"):
    d, n, G = X("mib", "direct"), X("mib", "nginx"), X("mib", g)
    for a in ("direct", "nginx", g):
        xrow(f"{int(E['MIB_SIZE']):,}-byte echo, HTTP/1.1 -c {E['MIB_CONNS']}", "mib", a, d)
    summary["mib_vs_direct"] = ratio(G["mb_s"], d["mb_s"])
    xprose.append(f"{int(E['MIB_SIZE']):,}-byte responses: gateway ÷ direct MB/s **{summary['mib_vs_direct']}**, "
                  f"nginx ÷ direct {ratio(n['mb_s'], d['mb_s'])} (nginx "
                  + ("with its default buffering: bodies over its buffers spooled to temp files" if E["NGINX_BUFFERING"] == "1"
                     else "with proxy_request_buffering and proxy_buffering off") + ")")
g = gw_arm("h2c-1x64")
if g and X("h2c-8x16", g):
    xrow("h2c -c 1 -m 64", "h2c-1x64", g)
    xrow("h2c -c 8 -m 16", "h2c-8x16", g)
    summary["h2_1x64_vs_8x16"] = ratio(X("h2c-1x64", g)["rps"], X("h2c-8x16", g)["rps"])
    xprose.append(f"h2c on one connection × 64 streams ÷ 8 × 16 ({g}): **{summary['h2_1x64_vs_8x16']}**")
g = gw_arm("tls-h3")
if g and X("tls-h2", g):
    xrow(f"HTTP/2 over TLS -c {E['TLS_CONNS']} -m {E['TLS_STREAMS']}", "tls-h2", g)
    xrow(f"HTTP/3 -c {E['TLS_CONNS']} -m {E['TLS_STREAMS']}", "tls-h3", g)
    summary["h3_vs_h2"] = ratio(X("tls-h3", g)["rps"], X("tls-h2", g)["rps"])
    xprose.append(f"HTTP/3 ÷ HTTP/2 over TLS ({g}, host-routed): **{summary['h3_vs_h2']}**")
g = gw_arm("logcost")
if g and X("logcost", g + "-bare"):
    G, B = X("logcost", g), X("logcost", g + "-bare")
    xrow(f"access log + metrics on, HTTP/1.1 -c {E['H1_CONNS']}", "logcost", g)
    if X("logcost", g + "-nolog"):
        xrow(f"access log off, metrics on, HTTP/1.1 -c {E['H1_CONNS']}", "logcost", g + "-nolog")
    xrow(f"both off, HTTP/1.1 -c {E['H1_CONNS']}", "logcost", g + "-bare")
    summary["log_metrics_cost"] = r(1 - G["rps"] / B["rps"])
    summary["log_metrics_cost_paired"] = paired(
        "logcost", [g, g + "-bare"], lambda on, off: 1 - on["rps"] / off["rps"] if off["rps"] > 0 else None)
    xprose.append(f"access log and metrics ({g} against the same build and thread count with `access-log = false` and no "
                  f"admin listener, hence no metrics recorder): throughput cost **{summary['log_metrics_cost']}** "
                  f"(1 − {G['rps']:,.0f} ÷ {B['rps']:,.0f} req/s; the median of the rounds' own costs: {summary['log_metrics_cost_paired']}), "
                  f"CPU per request {G['proxy_cpu']:.1f} against {B['proxy_cpu']:.1f} µs")
    if X("logcost", g + "-nolog"):
        L = X("logcost", g + "-nolog")
        xprose.append(f"of which the access log (against `access-log = false` with metrics on): {r(1 - G['rps'] / L['rps'])} "
                      f"of throughput, CPU {G['proxy_cpu']:.1f} against {L['proxy_cpu']:.1f} µs; metrics: {r(1 - L['rps'] / B['rps'])}, "
                      f"CPU {L['proxy_cpu']:.1f} against {B['proxy_cpu']:.1f} µs")
reuse = {}
if os.path.exists(E.get("REUSE", "")):
    for l in open(E["REUSE"]):
        if l.strip():
            x = json.loads(l)
            reuse[x["arm"]] = None if x["requests"] <= 0 else round(1 - x["opened"] / x["requests"], 6)
            xprose.append(f"upstream connection reuse over the closed-loop rounds, {x['arm']}: "
                          f"{x['opened']} worker connections opened for {x['requests']:,} function requests → "
                          f"**{reuse[x['arm']]}**")
    if reuse:
        summary["upstream_reuse"] = reuse.get(best["h1"], min((v for v in reuse.values() if v is not None), default=None))
if os.path.exists(E.get("STALL", "")):
    stalls = {}
    for l in open(E["STALL"]):
        if l.strip():
            x = json.loads(l)
            stalls[x["arm"]] = x
            xprose.append(f"{x['downloads']} stalled downloads of a {int(E['STALL_SIZE']):,}-byte echo on {x['arm']} "
                          f"(responses never read; {x['sent_mib']} MiB of each body got in before flow control stopped it): "
                          f"dataplane RSS {x['rss_before_kib'] / 1024:.1f} → {x['rss_after_kib'] / 1024:.1f} MiB, "
                          f"**{x['per_download_kib'] / 1024:.2f} MiB per stalled download**")
    if stalls:
        pick = stalls.get(best["h1"]) or next(iter(stalls.values()))
        summary["stall_mib_per_download"] = round(pick["per_download_kib"] / 1024, 3)
xtable = "\n".join(xlines) if len(xlines) > 2 else ""
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
threads = " and ".join(E["GW_THREADS"].split())
params = (f"`ROUNDS={E['ROUNDS']} DURATION={E['DURATION']} WARMUP={E['WARMUP']} BODY_SIZE={E['BODY_SIZE']} "
          f"H1_CONNS={E['H1_CONNS']} H2_CONNS={E['H2_CONNS']} H2_STREAMS={E['H2_STREAMS']} "
          f"GW_THREADS=\"{E['GW_THREADS']}\" EXTRA={E['EXTRA'] or 'none'}"
          + (f" EXTRA_ROUNDS={E['EXTRA_ROUNDS']} EXTRA_DURATION={E['EXTRA_DURATION']} EXTRA_WARMUP={E['EXTRA_WARMUP']}"
             f" OPEN_LOADS=\"{E['OPEN_LOADS']}\" MIB_SIZE={E['MIB_SIZE']} MIB_CONNS={E['MIB_CONNS']}"
             f" TLS_CONNS={E['TLS_CONNS']} TLS_STREAMS={E['TLS_STREAMS']}" if EXTRA else "")
          + (" NGINX_BUFFERING=0" if E["NGINX_BUFFERING"] == "0" else "")
          + (" NGINX_WORKER_HEADERS=1" if E["NGINX_WORKER_HEADERS"] == "1" else "")
          + (f" EXTRA_GW={E['EXTRA_GW']}" if E["EXTRA_GW"] and EXTRA else "")
          + " scripts/compare.sh`")
xsection = "" if not (xtable or xprose) else f"""
Extras ({E['EXTRA_ELAPSED']} s of runs; rounds: {E['EXTRA_ROUNDS']}, each run {E['EXTRA_DURATION']} after {E['EXTRA_WARMUP']} warm-up,
interleaved; medians; on {f"{gw_name(E['EXTRA_GW'])} (EXTRA_GW)" if E['EXTRA_GW'] else f"the better gateway arm: {best['h1']} for the HTTP/1.1 runs, {best['h2c']} for h2c, h2 and h3"}).
Open loop: `loadtest --rate` at the given share of nginx's closed-loop HTTP/1.1 median ({E['NGINX_CAP'] or '—'} req/s),
latency from each request's intended send time; "late sends" counts sends the client itself could not make on time.
Host-routed gateway calls over TLS (h2) and QUIC (h3) go to the dataplane's TLS/QUIC port with the same `Host`
header (no SNI: the URL's host is 127.0.0.1).

{xtable}

""" + ";\n".join(xprose) + ("." if xprose else "") + "\n"
section = f"""
### {now}{' — ' + E['NOTE'] if E['NOTE'] else ''}

Machine: {E['MACHINE']}; nothing pinned; loadtest, nginx {E['NGINX_VERSION']} (`worker_processes 1`), the
dataplane (one process per `GW_THREADS` value: {threads}; arm `gateway-Ns` is `serving-threads = N`, N threads with a single-threaded runtime each serving the connections, and `gateway-Nt` is `serving-threads = 0` with `runtime-threads = N`, where 1 is the single-threaded runtime{"; an arm ending in `-b` is the dataplane of another build, `" + E.get("GATEWAY_BIN_B", "") + "`" if ":b" in E["GW_THREADS"] else ""}), the worker (CPU backend, `builtin/echo`) and the control plane
all share the machine. Command: {params} ({E['ELAPSED']} s of runs). Closed loop, {E['BODY_SIZE']}-byte POSTs
to `/echo`, rounds of direct → nginx → gateway arm(s) interleaved; medians over the rounds. Latency here is
closed-loop (not for latency goals). Proxy CPU = Δ(utime+stime) of nginx's worker process / the dataplane
process over the measured window ÷ requests; worker CPU likewise for the echo worker; machine CPU = the busy
time of both cores (`/proc/stat`: user, nice, system, irq, softirq) ÷ requests, the whole call with the client's share.

{table}

Ratios (medians; "gateway" = the better thread count: {best['h1']} for HTTP/1.1, {best['h2c']} for h2c):
HTTP/1.1 gateway ÷ nginx **{summary['h1_vs_nginx']}** (the median of the rounds' own ratios: {paired_h1}), ÷ direct **{summary['h1_vs_direct']}**;
CPU per request ÷ nginx **{summary['cpu_per_req_vs_nginx']}** (by thread count: {cpu_by_arm}; rounds' own ratios: {paired_cpu}); added p50 over direct **{summary['added_p50_ms']} ms**
(nginx: {extra['nginx_added_p50_ms']} ms); h2c gateway ÷ direct **{summary['h2c_vs_direct']}**, ÷ nginx {extra['h2c_vs_nginx']},
h2c CPU per request ÷ nginx {extra['h2c_cpu_per_req_vs_nginx']}.
{xsection}
`{json.dumps(summary)}`
"""
print()
print(table)
print()
if xtable:
    print(xtable)
    print()
for l in xprose:
    print(l)
if E["WRITE_DOC"] == "1":
    doc = E["DOC"]
    text = open(doc).read() if os.path.exists(doc) else ""
    with open(doc, "a") as f:
        if "\n## Side-by-side" not in text:
            f.write("\n## Side-by-side: direct vs nginx vs gateway (`scripts/compare.sh`)\n\n"
                    "Each run of `scripts/compare.sh` appends one dated section below (newest last).\n")
        f.write(section)
    print(f"appended to {doc}")
print(json.dumps(summary))
EOF
