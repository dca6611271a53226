#!/usr/bin/env bash
# remoteapps.sh - memory of an idle sidecar that has resolved and invoked N
# remote app ids (one sidecar cluster, resolver and gRPC connection each).
#
#   bench/remoteapps.sh [-n 100]
#
# Sidecar A resolves app0..app(N-1) statically to sidecar B's internal port,
# invokes each once, idles 2 s, and its RSS (and anonymous RSS) is printed
# before and after, with Go heap figures from A's admin pprof endpoint.
set -euo pipefail
N=100
[[ ${1:-} == -n ]] && N=$2
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d -t remoteapps.XXXXXX)
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
BASE=${SY_PORT_BASE:-22000}
APP=$BASE B_INT=$((BASE + 12)) A_HTTP=$((BASE + 20)) A_ADMIN=$((BASE + 24))
cd "$ROOT"
CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -o "$WORK/switchyard" ./cmd/switchyard
go build -o "$WORK/echoapp" ./bench/echoapp
{
	echo "name_resolution:"
	echo "  scheme: static"
	echo "  config:"
	echo "    apps:"
	for ((i = 0; i < N; i++)); do echo "      app$i: [\"127.0.0.1:$B_INT\"]"; done
} >"$WORK/a.yaml"
"$WORK/echoapp" -http-port "$APP" -grpc-port 0 >/dev/null 2>&1 &
PIDS+=($!)
"$WORK/switchyard" --app-id app --app-port "$APP" --dapr-http-port $((BASE + 10)) --dapr-grpc-port $((BASE + 11)) \
	--dapr-internal-grpc-port "$B_INT" --metrics-port $((BASE + 13)) --admin-port $((BASE + 14)) --log-level warn >"$WORK/b.log" 2>&1 &
PIDS+=($!)
"$WORK/switchyard" --app-id client -c "$WORK/a.yaml" --dapr-http-port "$A_HTTP" --dapr-grpc-port $((BASE + 21)) \
	--metrics-port $((BASE + 23)) --admin-port "$A_ADMIN" --log-level warn >"$WORK/a.log" 2>&1 &
APID=$!
PIDS+=($APID)
for _ in $(seq 100); do
	[[ $(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$A_HTTP/v1.0/healthz/outbound" || true) == 204 ]] && break
	sleep 0.1
done
mem() { awk '/^(VmRSS|RssAnon):/ { printf "%s %.1f MiB  ", $1, $2 / 1024 }' "/proc/$APID/status"; curl -s "http://127.0.0.1:$A_ADMIN/debug/pprof/heap?debug=1" | awk '/^# (HeapInuse|Stack) =/ { printf "%s %.1f MiB  ", $2, $4 / 1048576 }'; echo; }
sleep 2
echo "idle, no remote app ids:   $(mem)"
for ((i = 0; i < N; i++)); do
	code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$A_HTTP/v1.0/invoke/app$i/method/echo")
	[[ $code == 200 ]] || { echo "invoke app$i: $code" >&2; exit 1; }
done
sleep 2
echo "idle, $N remote app ids:  $(mem)"
[[ -n ${HEAP_OUT:-} ]] && curl -s -o "$HEAP_OUT" "http://127.0.0.1:$A_ADMIN/debug/pprof/heap"
curl -s "http://127.0.0.1:$A_ADMIN/clusters" | grep -c '"app[0-9]*"' | xargs echo "remote app clusters:"
