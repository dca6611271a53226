#!/usr/bin/env bash
# latency.sh - latency added by switchyard at a fixed request rate (open
# loop): the echo app directly, through one sidecar, and through two
# sidecars (client -> sidecar A -> internal port (the peer link) -> sidecar B -> app).
#
#   bench/latency.sh [-rate 1000] [-d 10s] [-r 3]
#
# SY_EXTRA_ARGS is appended to both sidecars' command lines (for example
# --internal-http=false: the sidecars talk internal gRPC instead of the link).
#
# Prints p50/p90/p99/max per target and what one and two hops add at p50
# and p99 over the direct call.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d -t latency.XXXXXX)
SY_EXTRA_ARGS=${SY_EXTRA_ARGS:-}
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
BASE=${SY_PORT_BASE:-21000}
APP=$((BASE)) B_HTTP=$((BASE + 10)) B_INT=$((BASE + 12)) A_HTTP=$((BASE + 20))
cd "$ROOT"
CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -o "$WORK/switchyard" ./cmd/switchyard
go build -o "$WORK/echoapp" ./bench/echoapp
go build -o "$WORK/fixedrate" ./bench/fixedrate
cat >"$WORK/a.yaml" <<YAML
name_resolution:
  scheme: static
  config:
    apps:
      app: ["127.0.0.1:$B_INT"]
YAML
"$WORK/echoapp" -http-port "$APP" -grpc-port 0 >"$WORK/app.log" 2>&1 &
PIDS+=($!)
"$WORK/switchyard" --app-id app --app-port "$APP" --dapr-http-port "$B_HTTP" --dapr-grpc-port $((BASE + 11)) \
	--dapr-internal-grpc-port "$B_INT" --metrics-port $((BASE + 13)) --admin-port $((BASE + 14)) --log-level warn $SY_EXTRA_ARGS >"$WORK/b.log" 2>&1 &
PIDS+=($!)
"$WORK/switchyard" --app-id client -c "$WORK/a.yaml" --dapr-http-port "$A_HTTP" --dapr-grpc-port $((BASE + 21)) \
	--metrics-port $((BASE + 23)) --admin-port $((BASE + 24)) --log-level warn $SY_EXTRA_ARGS >"$WORK/a.log" 2>&1 &
PIDS+=($!)
for url in "http://127.0.0.1:$B_HTTP/v1.0/healthz" "http://127.0.0.1:$A_HTTP/v1.0/healthz/outbound"; do
	for _ in $(seq 100); do
		code=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
		[[ $code == 204 ]] && break
		sleep 0.1
	done
done
curl -sf -o /dev/null "http://127.0.0.1:$A_HTTP/v1.0/invoke/app/method/echo" || { echo "two-hop pre-check failed; logs in $WORK" >&2; cat "$WORK/a.log" >&2; exit 1; }
"$WORK/fixedrate" "$@" direct="http://127.0.0.1:$APP/echo" \
	one-hop="http://127.0.0.1:$B_HTTP/v1.0/invoke/app/method/echo" \
	two-hop="http://127.0.0.1:$A_HTTP/v1.0/invoke/app/method/echo"
