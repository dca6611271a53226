#!/usr/bin/env bash
# startup.sh - switchyard's start-up time and idle memory.
#
#   bench/startup.sh [-n STARTS] [-d SECONDS] [--no-load] [--no-ref] [--cmd 'CMD']
#
#   -n STARTS     how many times to start switchyard [20]
#   -d SECONDS    length of the one-hop wrk load before the after-load RSS [5]
#   --no-load     skip the load (and the after-load RSS)
#   --no-ref      skip the reference start-up of a bare fasthttp server (the
#                 echo app's proxy mode, which also answers /v1.0/healthz 204)
#   --cmd CMD     run CMD (bash -c) instead of the switchyard binary and do not
#                 build switchyard; CMD sees the same $SY_* variables as
#                 run.sh --proxy-cmd
#
# With the echo app already listening, bench/startprobe starts switchyard,
# polls GET /v1.0/healthz every 200 us and records the time from process start
# to the first 204 (and to the first accepted connection, and from SIGTERM to
# exit); repeated -n times. Then one switchyard runs on: VmRSS after 2 s idle,
# then after a one-hop wrk load of -d seconds (and its peak, VmHWM).
# The last lines are the summary:
#   switchyard startup ms (process start -> /v1.0/healthz 204): min A median B p90 C (n=20)
#   switchyard RSS MiB: idle X  after one-hop load Y  peak Z
set -uo pipefail

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

STARTS=${STARTS:-20} LOAD_SECONDS=${LOAD_SECONDS:-5} DO_LOAD=1 DO_REF=1 PROXY_CMD=""
while (($#)); do
	case $1 in
	-n) STARTS=$2; shift 2 ;;
	-d | --duration) LOAD_SECONDS=$2; shift 2 ;;
	--no-load) DO_LOAD=0; shift ;;
	--no-ref) DO_REF=0; shift ;;
	--cmd) PROXY_CMD=$2; shift 2 ;;
	-h | --help) usage 0 ;;
	*) echo "unknown argument: $1" >&2; usage 2 ;;
	esac
done
GRPC=0

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

need curl ss setsid ps awk
((DO_LOAD)) && need wrk

SY_PORT_BASE=${SY_PORT_BASE:-20000}
SY_EXTRA_ARGS=${SY_EXTRA_ARGS:-}
P=$SY_PORT_BASE
for p in $P $((P + 1)) $((P + 2)) $((P + 3)) $((P + 4)); do
	port_free "$p" || die "port $p busy (set SY_PORT_BASE to move the sidecar ports)"
done
READY_URL=http://127.0.0.1:$P/v1.0/healthz

echo "# $(date -u +%FT%TZ)  host cpus: $(nproc)  loadavg: $(cut -d' ' -f1-3 /proc/loadavg)  go $(go env GOVERSION 2>/dev/null)"
echo "# switchyard source: $(src_version)"
log "work dir: $WORK"
build_echoapp
build_startprobe
if [[ -z $PROXY_CMD ]]; then
	build_switchyard
	# shellcheck disable=SC2206 # extra args are split on purpose
	SY_CMD=("$SY_BIN" --app-id app --app-port "$APP_HTTP_PORT" --dapr-http-port "$P" --dapr-grpc-port $((P + 1))
		--dapr-internal-grpc-port $((P + 2)) --metrics-port $((P + 3)) --admin-port $((P + 4)) --log-level warn $SY_EXTRA_ARGS)
	echo "# switchyard binary: $(stat -c %s "$SY_BIN" | awk '{ printf "%.1f MiB", $1 / 1048576 }')"
else
	SY_CMD=(env SY_HTTP_PORT="$P" SY_GRPC_PORT=$((P + 1)) SY_INTERNAL_PORT=$((P + 2)) SY_METRICS_PORT=$((P + 3))
		SY_ADMIN_PORT=$((P + 4)) SY_APP_ID=app SY_APP_PORT="$APP_HTTP_PORT" SY_APP_PROTOCOL= SY_CONFIG=
		SY_UPSTREAM="127.0.0.1:$APP_HTTP_PORT" APP_HTTP_PORT="$APP_HTTP_PORT" APP_GRPC_PORT="$APP_GRPC_PORT"
		BENCH_WORKDIR="$WORK" bash -c "exec $PROXY_CMD")
fi
echo "# switchyard: ${SY_CMD[*]}"

start_echoapp

# ---- start-up time ---------------------------------------------------------
echo
echo "== start-up: process start -> first GET /v1.0/healthz 204 (poll every 200 us), $STARTS starts, app already listening"
"$WORK/bin/startprobe" -n "$STARTS" -url "$READY_URL" -status 204 -log "$WORK/logs/startprobe-switchyard.log" \
	-- "${SY_CMD[@]}" >"$WORK/raw/startup-switchyard.txt" 2>&1 ||
	{ cat "$WORK/raw/startup-switchyard.txt"; die "start-up probe failed (switchyard output: $WORK/logs/startprobe-switchyard.log)"; }
sed 's/^/  /' "$WORK/raw/startup-switchyard.txt"
if ((DO_REF)); then
	echo
	echo "== reference: the echo app's fasthttp proxy mode (a bare Go fasthttp server), same probe"
	"$WORK/bin/startprobe" -n "$STARTS" -url "$READY_URL" -status 204 -log "$WORK/logs/startprobe-ref.log" \
		-- "$WORK/bin/echoapp" -http-port "$P" -grpc-port 0 -proxy-to "127.0.0.1:$APP_HTTP_PORT" \
		>"$WORK/raw/startup-ref.txt" 2>&1 || { cat "$WORK/raw/startup-ref.txt"; die "reference start-up probe failed"; }
	grep -v '^run ' "$WORK/raw/startup-ref.txt" | sed 's/^/  /'
fi

# ---- memory ----------------------------------------------------------------
# rss_of NAME -> "rss_kb hwm_kb" summed over the target's session
rss_of() {
	local p r h rss=0 hwm=0
	for p in $(members "${T_SID[$1]}"); do
		r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)
		h=$(awk '/^VmHWM:/ {print $2}' "/proc/$p/status" 2>/dev/null)
		rss=$((rss + ${r:-0}))
		hwm=$((hwm + ${h:-0}))
	done
	echo "$rss $hwm"
}
mib() { awk -v k="$1" 'BEGIN { printf "%.1f", k / 1024 }'; }

echo
echo "== memory of one running switchyard (VmRSS; peak = VmHWM)"
start_bg switchyard "${SY_CMD[@]}"
wait_http "$READY_URL" 30 switchyard || die "switchyard not ready at $READY_URL (see $WORK/logs/switchyard.log)"
sleep 2
read -r IDLE_RSS IDLE_HWM < <(rss_of switchyard)
echo "  idle 2 s after ready:  RSS $(mib "$IDLE_RSS") MiB  (peak so far $(mib "$IDLE_HWM") MiB)"
AFTER="" PEAK=$IDLE_HWM
if ((DO_LOAD)); then
	URL=http://127.0.0.1:$P$LOAD_PATH
	code=$(curl -s -o /dev/null --max-time 3 -w '%{http_code}' "$URL")
	[[ $code == 200 ]] || die "GET $URL answered $code; the after-load RSS needs one-hop invocation"
	wrk -t"$THREADS" -c"$CONNS" -d"${LOAD_SECONDS}s" "$URL" >"$WORK/raw/startup-load.txt" 2>&1
	read -r LOAD_RSS _ < <(rss_of switchyard)
	sleep 2
	read -r AFTER_RSS AFTER_HWM < <(rss_of switchyard)
	rps=$(awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$WORK/raw/startup-load.txt")
	echo "  right after wrk -t$THREADS -c$CONNS -d${LOAD_SECONDS}s on $LOAD_PATH ($rps rps): RSS $(mib "$LOAD_RSS") MiB"
	echo "  2 s after the load:    RSS $(mib "$AFTER_RSS") MiB  (peak $(mib "$AFTER_HWM") MiB)"
	AFTER=$AFTER_RSS PEAK=$AFTER_HWM
fi

echo
awk '/^ready ms:/ { sub(/^ready ms: /, ""); sub(/ max [0-9.]+/, ""); print "switchyard startup ms (process start -> /v1.0/healthz 204): " $0 }' "$WORK/raw/startup-switchyard.txt"
echo "switchyard RSS MiB: idle $(mib "$IDLE_RSS")  after one-hop load $([[ -n $AFTER ]] && mib "$AFTER" || echo n/a)  peak $(mib "$PEAK")"
exit 0
