#!/usr/bin/env bash
# Side-by-side harness (issue 6 item 2): the same echo worker measured
#   direct   loadtest → worker (NVCF-FUNCTION-VERSION-ID sent by the client), path /echo
#   nginx    loadtest → nginx (reverse proxy, worker_processes 1, upstream keepalive) → worker
#   gateway  loadtest → our dataplane (host-routed, `Host: <fid>.invocation.127.0.0.1`, API key) → worker
# for HTTP/1.1 (-c 64) and h2c (-c 8 -m 16), ROUNDS rounds of A B C interleaved, small bodies.
# The control plane, the dataplane (gateway) and the worker run as three processes, so the
# gateway's CPU is the dataplane's alone. CPU µs per request = Δ(utime+stime) of the proxy process
# (nginx's worker process / the dataplane) from /proc/<pid>/stat over the measured window ÷ requests.
#
# Usage (from anywhere):   scripts/compare.sh
#   ROUNDS=5 DURATION=10s WARMUP=2s   rounds per arm, measured time and warm-up per run (defaults)
#   BODY_SIZE=256                     request body bytes (octet-stream)
#   H1_CONNS=64 H2_CONNS=8 H2_STREAMS=16
#   GW_THREADS="<nproc> 1"            tokio worker threads of the dataplane (TOKIO_WORKER_THREADS),
#                                     one gateway arm (and one dataplane process) per value, at most 3;
#                                     the summary takes the better arm (performance.md: "try the proxy
#                                     with 1 and 2 runtime threads and report the better"; nginx runs
#                                     worker_processes 1). GW_THREADS=2 alone saves a quarter of the time.
#   SKIP_BUILD=1                      do not run `cargo build --release` (default: build, a no-op when fresh)
#   WRITE_DOC=0                       do not append the table to docs/performance.md (DOC=path to change it)
#   NOTE="..."                        free text added to the doc section (e.g. "smoke run")
#   KEEP_TMP=1                        keep the temp dir (configs, logs, per-run JSON) after exit
# Needs: curl, jq, python3; installs Debian's nginx with apt-get when missing.
# Prints a markdown table, appends it under "Side-by-side" in docs/performance.md, and prints as its
# LAST line a one-line JSON summary:
#   {"h1_vs_nginx":…, "h1_vs_direct":…, "cpu_per_req_vs_nginx":…, "added_p50_ms":…, "h2c_vs_direct":…}
# With the defaults (4 arms × 2 protocols × 5 rounds × 12 s) it takes about 8 minutes on the 2-core VM.
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
GW_THREADS=${GW_THREADS:-$NPROC $([[ $NPROC != 1 ]] && echo 1 || true)}
read -r -a GW_T <<<"$GW_THREADS"
(( ${#GW_T[@]} >= 1 && ${#GW_T[@]} <= 3 )) || { echo "GW_THREADS: 1 to 3 values" >&2; exit 2; }
for t in "${GW_T[@]}"; do [[ $t =~ ^[1-9][0-9]*$ ]] || { echo "GW_THREADS: bad value $t" >&2; exit 2; }; done
SKIP_BUILD=${SKIP_BUILD:-0}
WRITE_DOC=${WRITE_DOC:-1}
DOC=${DOC:-docs/performance.md}
NOTE=${NOTE:-}
KEEP_TMP=${KEEP_TMP:-0}

GATEWAY_BIN=$ROOT/target/release/nvcf-gateway
LOADTEST_BIN=$ROOT/target/release/loadtest

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

# Free loopback ports, all bound at once so they are distinct.
read -r P_CP P_WK P_NG1 P_NG2 P_ADM1 P_ADM3 P_GWS0 P_GWS1 P_GWS2 P_GWA0 P_GWA1 P_GWA2 < <(python3 - <<'EOF'
import socket
socks = []
for _ in range(12):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
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
P_GWS=("$P_GWS0" "$P_GWS1" "$P_GWS2"); P_GWA=("$P_GWA0" "$P_GWA1" "$P_GWA2")
for i in "${!GW_T[@]}"; do
  mkdir -p "$TMP/dp$i"
  cat >"$TMP/dataplane$i.toml" <<EOF
log = "info"
internal-token = "$TOKEN"
[admin]
listen = "127.0.0.1:${P_GWA[$i]}"
[dataplane]
listen = "127.0.0.1:${P_GWS[$i]}"
controlplane-url = "http://127.0.0.1:$P_CP"
tls-listen = ""
quic-listen = ""
data-dir = "$TMP/dp$i"
EOF
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
"$GATEWAY_BIN" worker --config "$TMP/worker.toml" >"$TMP/worker.log" 2>&1 &
PIDS+=($!); WK_PID=$!
GW_PIDS=()
for i in "${!GW_T[@]}"; do
  TOKIO_WORKER_THREADS=${GW_T[$i]} "$GATEWAY_BIN" dataplane --config "$TMP/dataplane$i.toml" >"$TMP/dataplane$i.log" 2>&1 &
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
cat >"$TMP/nginx/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  keepalive_requests 1000000;
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
      proxy_set_header NVCF-FUNCTION-VERSION-ID $VID;
    }
  }
  server {
    listen 127.0.0.1:$P_NG2 http2;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header NVCF-FUNCTION-VERSION-ID $VID;
    }
  }
}
EOF
# Run as the invoking user; a root master would hand the worker to `nobody`, which cannot write $TMP.
if [[ $(id -u) == 0 ]]; then sed -i '1i user root;' "$TMP/nginx/nginx.conf"; fi
"$NGINX_BIN" -t -q -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx/" >&2
"$NGINX_BIN" -c "$TMP/nginx/nginx.conf" -p "$TMP/nginx/" >"$TMP/nginx.log" 2>&1 &
NGINX_MASTER=$!
NGINX_WORKER=
for _ in $(seq 1 50); do
  kill -0 "$NGINX_MASTER" 2>/dev/null || die "nginx exited"
  NGINX_WORKER=$(ps -o pid= --ppid "$NGINX_MASTER" | tr -d ' ' | head -n1 || true)
  [[ -n $NGINX_WORKER ]] && break
  sleep 0.1
done
[[ -n $NGINX_WORKER ]] || die "no nginx worker process"
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
for i in "${!GW_T[@]}"; do
  # A gateway learns the function and the key from the feed; give each a moment.
  for _ in $(seq 1 50); do
    code=$(curl -s -m 5 -o /dev/null -w '%{http_code}' -X POST --data-binary "$BODY" "http://127.0.0.1:${P_GWS[$i]}/echo" \
      -H "Host: $FID.invocation.127.0.0.1" -H "Authorization: Bearer $NVCF_API_KEY" || true)
    [[ $code == 200 ]] && break
    sleep 0.1
  done
  check "gateway-${GW_T[$i]}t" "http://127.0.0.1:${P_GWS[$i]}/echo" -H "Host: $FID.invocation.127.0.0.1" -H "Authorization: Bearer $NVCF_API_KEY"
done
curl -s -m 5 --http2-prior-knowledge -o /dev/null -w '%{http_code}' -X POST --data-binary "$BODY" "http://127.0.0.1:$P_NG2/echo" | grep -q 200 \
  || die "nginx h2c arm does not answer 200"

# ---------------------------------------------------------------- runs
to_secs() { python3 -c 'import sys,re
s=sys.argv[1].strip(); m=re.fullmatch(r"([0-9.]+)(ms|s|m)?", s)
if not m: sys.exit("bad duration: "+s)
v=float(m.group(1)); u=m.group(2) or "s"
print(v/1000 if u=="ms" else v*60 if u=="m" else v)' "$1"; }
WARMUP_S=$(to_secs "$WARMUP")
CLK_TCK=$(getconf CLK_TCK)
cpu_ticks() { # utime + stime of a pid (fields 14, 15 of /proc/pid/stat; comm may hold spaces)
  local s; s=$(<"/proc/$1/stat"); s=${s##*) }
  # shellcheck disable=SC2086
  set -- $s
  echo $(( ${12} + ${13} ))
}

RESULTS=$TMP/results.jsonl
: >"$RESULTS"
run_arm() { # proto round arm proxy_pid url [headers...]
  local proto=$1 round=$2 arm=$3 ppid=$4 url=$5; shift 5
  local hdrs=() h
  for h in "$@"; do hdrs+=(-H "$h"); done
  local shape=(-c "$H1_CONNS")
  [[ $proto == h2c ]] && shape=(-c "$H2_CONNS" -m "$H2_STREAMS")
  local out=$TMP/run-$proto-$round-$arm.json
  "$LOADTEST_BIN" --proto "$proto" "${shape[@]}" -d "$DURATION" --warmup "$WARMUP" \
    --body-size "$BODY_SIZE" --json -q "${hdrs[@]}" "$url" >"$out" 2>"$TMP/loadtest.err" &
  local lt=$!
  LT_PID=$lt
  sleep "$WARMUP_S"
  local p0 w0 p1 w1
  p0=$(cpu_ticks "$ppid"); w0=$(cpu_ticks "$WK_PID")
  wait "$lt" || die "loadtest failed ($proto $arm): $(tail -n 5 "$TMP/loadtest.err")"
  LT_PID=
  p1=$(cpu_ticks "$ppid"); w1=$(cpu_ticks "$WK_PID")
  jq -c --arg proto "$proto" --arg arm "$arm" --argjson round "$round" \
     --argjson pt $((p1 - p0)) --argjson wt $((w1 - w0)) --argjson tck "$CLK_TCK" \
     '{proto: $proto, arm: $arm, round: $round, rps: .throughput.req_per_s,
       p50: .latency_us.p50, p99: .latency_us.p99, requests, ok, errors,
       proxy_cpu_us: (if .requests > 0 then $pt * 1e6 / $tck / .requests else null end),
       worker_cpu_us: (if .requests > 0 then $wt * 1e6 / $tck / .requests else null end)}' \
     "$out" >>"$RESULTS"
  log "$(tail -n 1 "$RESULTS" | jq -r '"\(.proto) round \(.round) \(.arm): \(.rps|floor) req/s, p50 \(.p50) µs, p99 \(.p99) µs, ok \(.ok)/\(.requests), errors \(.errors), proxy \(.proxy_cpu_us|tostring|.[0:5]) µs/req, worker \(.worker_cpu_us|tostring|.[0:5]) µs/req"')"
}

START=$(date -u +%s)
for proto in h1 h2c; do
  ng_port=$P_NG1; [[ $proto == h2c ]] && ng_port=$P_NG2
  for round in $(seq 1 "$ROUNDS"); do
    alive
    run_arm "$proto" "$round" direct  "$WK_PID"       "http://127.0.0.1:$P_WK/echo" "NVCF-FUNCTION-VERSION-ID: $VID"
    run_arm "$proto" "$round" nginx   "$NGINX_WORKER" "http://127.0.0.1:$ng_port/echo"
    for i in "${!GW_T[@]}"; do
      run_arm "$proto" "$round" "gateway-${GW_T[$i]}t" "${GW_PIDS[$i]}" "http://127.0.0.1:${P_GWS[$i]}/echo" \
        "Host: $FID.invocation.127.0.0.1" "Authorization: Bearer $NVCF_API_KEY"
    done
  done
done
ELAPSED=$(( $(date -u +%s) - START ))

# ---------------------------------------------------------------- report
export RESULTS ROUNDS DURATION WARMUP BODY_SIZE H1_CONNS H2_CONNS H2_STREAMS GW_THREADS NOTE ELAPSED WRITE_DOC DOC
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
        "errors": sum(r["errors"] for r in rs),
        "non2xx": sum(r["requests"] - r["ok"] for r in rs),
    }
GWS = [f"gateway-{t}t" for t in os.environ["GW_THREADS"].split()]
ARMS = ["direct", "nginx"] + GWS
A = {(p, a): agg(p, a) for p in ("h1", "h2c") for a in ARMS}
# The better gateway arm per protocol (by median req/s), as performance.md's method asks.
best = {p: max(GWS, key=lambda a: A[(p, a)]["rps"]) for p in ("h1", "h2c")}
for p in ("h1", "h2c"):
    A[(p, "gateway")] = A[(p, best[p])]
E = os.environ
shape = {"h1": f"HTTP/1.1, -c {E['H1_CONNS']}", "h2c": f"h2c, -c {E['H2_CONNS']} -m {E['H2_STREAMS']}"}
lines = ["| Arm | req/s (median) | ÷ direct | ÷ nginx | p50 | p99 | proxy CPU µs/req | worker CPU µs/req | req/s per run | errors / non-2xx |",
         "|---|---|---|---|---|---|---|---|---|---|"]
for p in ("h1", "h2c"):
    d, n = A[(p, "direct")], A[(p, "nginx")]
    for a in ARMS:
        x = A[(p, a)]
        cpu = "—" if a == "direct" else f"{x['proxy_cpu']:.1f}"
        lines.append(
            f"| {shape[p]} {a} | {x['rps']:,.0f} | {x['rps']/d['rps']:.2f} | {x['rps']/n['rps']:.2f} | "
            f"{x['p50']/1000:.2f} ms | {x['p99']/1000:.2f} ms | {cpu} | {x['worker_cpu']:.1f} | "
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
now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
threads = " and ".join(E["GW_THREADS"].split())
params = (f"`ROUNDS={E['ROUNDS']} DURATION={E['DURATION']} WARMUP={E['WARMUP']} BODY_SIZE={E['BODY_SIZE']} "
          f"H1_CONNS={E['H1_CONNS']} H2_CONNS={E['H2_CONNS']} H2_STREAMS={E['H2_STREAMS']} "
          f"GW_THREADS=\"{E['GW_THREADS']}\" scripts/compare.sh`")
section = f"""
### {now}{' — ' + E['NOTE'] if E['NOTE'] else ''}

Machine: {E['MACHINE']}; nothing pinned; loadtest, nginx {E['NGINX_VERSION']} (`worker_processes 1`), the
dataplane (one process per tokio worker-thread count: {threads}; arm `gateway-Nt`), the worker (CPU backend, `builtin/echo`) and the control plane
all share the machine. Command: {params} ({E['ELAPSED']} s of runs). Closed loop, {E['BODY_SIZE']}-byte POSTs
to `/echo`, rounds of direct → nginx → gateway arm(s) interleaved; medians over the rounds. Latency here is
closed-loop (not for latency goals). Proxy CPU = Δ(utime+stime) of nginx's worker process / the dataplane
process over the measured window ÷ requests; worker CPU likewise for the echo worker.

{table}

Ratios (medians; "gateway" = the better thread count: {best['h1']} for HTTP/1.1, {best['h2c']} for h2c):
HTTP/1.1 gateway ÷ nginx **{summary['h1_vs_nginx']}**, ÷ direct **{summary['h1_vs_direct']}**;
CPU per request ÷ nginx **{summary['cpu_per_req_vs_nginx']}**; added p50 over direct **{summary['added_p50_ms']} ms**
(nginx: {extra['nginx_added_p50_ms']} ms); h2c gateway ÷ direct **{summary['h2c_vs_direct']}**, ÷ nginx {extra['h2c_vs_nginx']},
h2c CPU per request ÷ nginx {extra['h2c_cpu_per_req_vs_nginx']}.

`{json.dumps(summary)}`
"""
print()
print(table)
print()
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
