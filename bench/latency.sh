#!/usr/bin/env bash
# latency.sh - latency added by switchyard at a fixed request rate (open
# loop): the echo app directly, through one sidecar, and through two
# sidecars (client -> sidecar A -> internal port (the peer link) -> sidecar B -> app).
#
#   bench/latency.sh [-rate 1000] [-d 10s] [-r 3] [-paired] [-idle-poll] [-samples FILE]
#
# -idle-poll (root) holds a PM QoS request of 0 µs on /dev/cpu_dma_latency
# while measuring, so that idle CPUs poll instead of halting, as latency
# tuning does (tuned's latency-performance profile). On this virtual machine
# (cpuidle haltpoll with guest_halt_poll_ns 0) a halted vCPU goes back to the
# host, and on a busy host waking it can take milliseconds: without the
# request the p99 measures the host as much as the proxies.
#
# -paired runs each target at the same time as the direct call (each at the
# rate), so that what a target adds is counted against direct calls made in
# the same moments; without it the targets take turns, and a second of a busy
# host falls on one of them only. -samples writes every request's latency.
#
# SY_EXTRA_ARGS is appended to both sidecars' command lines (for example
# --internal-http=false: the sidecars talk internal gRPC instead of the link);
# SY_ENV is put before both (for example SY_ENV="env GOMAXPROCS=1").
# SWITCHYARD_BIN runs a prebuilt binary instead of building the checkout.
# SWITCHYARD_BIN_B=path starts a second pair of sidecars from another build
# and measures it in the same rounds (targets one-hop-b, two-hop-b): the way
# to compare two builds on a machine whose latency moves from run to run.
#
# With nginx installed, the same one and two hops through nginx (two nginx
# processes for two hops, 1 worker each, keep-alive upstreams) are measured
# too, for what a proxy adds on this machine. Prints p50/p90/p99/max per
# target and what each adds at p50 and p99 over the direct call, counted from
# the scheduled send time and from the moment the request was sent (the
# sender's own lateness left out).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d -t latency.XXXXXX)
SY_EXTRA_ARGS=${SY_EXTRA_ARGS:-}
SY_ENV=${SY_ENV:-env}
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
BASE=${SY_PORT_BASE:-21000}
APP=$((BASE)) B_HTTP=$((BASE + 10)) A_HTTP=$((BASE + 20))
cd "$ROOT"
if [[ -n ${SWITCHYARD_BIN:-} ]]; then
	cp "$SWITCHYARD_BIN" "$WORK/switchyard"
else
	CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -o "$WORK/switchyard" ./cmd/switchyard
fi
[[ -z ${SWITCHYARD_BIN_B:-} ]] || cp "$SWITCHYARD_BIN_B" "$WORK/switchyard-b"
go build -o "$WORK/echoapp" ./bench/echoapp
go build -o "$WORK/fixedrate" ./bench/fixedrate
"$WORK/echoapp" -http-port "$APP" -grpc-port 0 >"$WORK/app.log" 2>&1 &
PIDS+=($!)
# sidecars BIN BASE: sidecar B (app id app, HTTP on BASE+10, internal port
# BASE+12) in front of the app, and sidecar A (app id client, HTTP on
# BASE+20) that finds B by static name resolution; waits until both are ready.
sidecars() {
	local bin=$1 base=$2 url
	cat >"$WORK/a-$base.yaml" <<YAML
name_resolution:
  scheme: static
  config:
    apps:
      app: ["127.0.0.1:$((base + 12))"]
YAML
	# shellcheck disable=SC2086 # SY_ENV and SY_EXTRA_ARGS are split on purpose
	$SY_ENV "$bin" --app-id app --app-port "$APP" --dapr-http-port $((base + 10)) --dapr-grpc-port $((base + 11)) \
		--dapr-internal-grpc-port $((base + 12)) --metrics-port $((base + 13)) --admin-port $((base + 14)) --log-level warn $SY_EXTRA_ARGS >"$WORK/b-$base.log" 2>&1 &
	PIDS+=($!)
	# shellcheck disable=SC2086
	$SY_ENV "$bin" --app-id client -c "$WORK/a-$base.yaml" --dapr-http-port $((base + 20)) --dapr-grpc-port $((base + 21)) \
		--metrics-port $((base + 23)) --admin-port $((base + 24)) --log-level warn $SY_EXTRA_ARGS >"$WORK/a-$base.log" 2>&1 &
	PIDS+=($!)
	for url in "http://127.0.0.1:$((base + 10))/v1.0/healthz" "http://127.0.0.1:$((base + 20))/v1.0/healthz/outbound"; do
		for _ in $(seq 100); do
			code=$(curl -s -o /dev/null -w '%{http_code}' "$url" || true)
			[[ $code == 204 ]] && break
			sleep 0.1
		done
	done
	curl -sf -o /dev/null "http://127.0.0.1:$((base + 20))/v1.0/invoke/app/method/echo" ||
		{ echo "two-hop pre-check failed; logs in $WORK" >&2; cat "$WORK/a-$base.log" >&2; exit 1; }
}
sidecars "$WORK/switchyard" "$BASE"
TARGETS=(one-hop="http://127.0.0.1:$B_HTTP/v1.0/invoke/app/method/echo"
	two-hop="http://127.0.0.1:$A_HTTP/v1.0/invoke/app/method/echo")
if [[ -n ${SWITCHYARD_BIN_B:-} ]]; then
	sidecars "$WORK/switchyard-b" $((BASE + 40))
	TARGETS+=(one-hop-b="http://127.0.0.1:$((BASE + 50))/v1.0/invoke/app/method/echo"
		two-hop-b="http://127.0.0.1:$((BASE + 60))/v1.0/invoke/app/method/echo")
fi
NGINX=()
if command -v nginx >/dev/null; then
	N1=$((BASE + 30)) N2=$((BASE + 31))
	# nginx one hop on N1 (-> app); two hops on N2, a second nginx (-> N1 ->
	# app): two processes, as two sidecars are. Each runs 1 worker and keeps
	# its upstream connections alive.
	nginx_hop() { # dir port upstream-port location-prefix proxy-pass-path
		local d=$WORK/$1
		mkdir -p "$d/tmp"
		cat >"$d/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    keepalive_requests 1000000;
    upstream up { server 127.0.0.1:$3; keepalive 64; }
    server {
        listen 127.0.0.1:$2;
        location $4 { proxy_pass http://up$5; proxy_http_version 1.1; proxy_set_header Connection ""; }
    }
}
EOF
		nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log" &
		PIDS+=($!)
	}
	nginx_hop nginx1 "$N1" "$APP" /v1.0/invoke/app/method/ /
	nginx_hop nginx2 "$N2" "$N1" / ""
	for _ in $(seq 50); do
		curl -sf -o /dev/null "http://127.0.0.1:$N2/v1.0/invoke/app/method/echo" && break
		sleep 0.1
	done
	NGINX=(nginx-1hop="http://127.0.0.1:$N1/v1.0/invoke/app/method/echo" nginx-2hop="http://127.0.0.1:$N2/v1.0/invoke/app/method/echo")
fi
"$WORK/fixedrate" "$@" direct="http://127.0.0.1:$APP/echo" "${TARGETS[@]}" "${NGINX[@]}"
