#!/usr/bin/env bash
# run.sh - switchyard's load benchmark: the sidecar beside the direct call and
# nginx, in one run, with interleaved rounds and per-round ratios.
#
#   bench/run.sh [-d SECONDS] [-r ROUNDS] [--scenario one-hop|two-hop|grpc-proxy|all]
#                [--no-grpc | --grpc] [--pin] [--nginx nginx-auto|nginx-w1]
#                [--peers "haproxy ..."] [--proxy-cmd 'CMD'] [--name NAME]
#
#   --scenario S    one-hop (default): wrk -> switchyard -> echo app (HTTP
#                   invoke), plus gRPC proxying (h2load -> switchyard -> app)
#                   unless --no-grpc; when switchyard fails the gRPC pre-check
#                   the gRPC section is skipped with a warning (--grpc: fail).
#                   two-hop: wrk -> sidecar A (app id "client") -> internal
#                   gRPC -> sidecar B (app id "app") -> echo app, and unless
#                   --no-grpc the same for gRPC proxying (h2load -> A ->
#                   internal gRPC -> B -> the echo app's gRPC server).
#                   grpc-proxy: gRPC proxying only (a failed pre-check fails).
#                   all: every section above in one run.
#   -d, -r          seconds per measured run [10], rounds [3]
#   --no-grpc       no gRPC section;  --grpc: gRPC must work (fail otherwise)
#   --pin           wrk/h2load on CPU $LOAD_CPUS, everything else on $SERVER_CPUS
#   --nginx W       the reference nginx: nginx-auto (default) or nginx-w1
#   --peers "P.."   extra peers in the same run: haproxy caddy nginx-w1
#   --proxy-cmd C   run C (bash -c) instead of the switchyard binary for every
#                   sidecar, and do not build switchyard; C sees $SY_HTTP_PORT,
#                   $SY_GRPC_PORT, $SY_INTERNAL_PORT, $SY_METRICS_PORT,
#                   $SY_ADMIN_PORT, $SY_APP_ID, $SY_APP_PORT, $SY_APP_PROTOCOL,
#                   $SY_CONFIG, $SY_UPSTREAM (host:port of the next HTTP hop),
#                   $APP_HTTP_PORT, $APP_GRPC_PORT, $BENCH_WORKDIR
#   --name NAME     label of the sidecar in the tables [switchyard]
#
# Environment knobs: see README.md (DURATION, ROUNDS, WARMUP, CONNS, MAX_NOISE,
# SY_PORT_BASE, SY_EXTRA_ARGS, SWITCHYARD_BIN, BENCH_WORKDIR, ...).
#
# The last line of output is the summary of the one-hop HTTP section:
#   switchyard/direct rps ratio: X  switchyard/nginx rps ratio: Y  p99 ms: Z (nginx p99 ms: W)
set -uo pipefail

usage() { sed -n '2,36p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

SCENARIO=one-hop GRPC_MODE=${GRPC_MODE:-auto} PROXY_CMD="" SY_NAME=switchyard
NGINX_REF=${NGINX_REF:-nginx-auto} EXTRA_PEERS=${EXTRA_PEERS:-} READY_TIMEOUT=${READY_TIMEOUT:-30}
while (($#)); do
	case $1 in
	--scenario) SCENARIO=$2; shift 2 ;;
	-d | --duration) DURATION=$2; shift 2 ;;
	-r | --rounds) ROUNDS=$2; shift 2 ;;
	--no-grpc) GRPC_MODE=0; shift ;;
	--grpc) GRPC_MODE=1; shift ;;
	--pin) PIN=1; shift ;;
	--nginx) NGINX_REF=$2; shift 2 ;;
	--peers) EXTRA_PEERS=$2; shift 2 ;;
	--proxy-cmd) PROXY_CMD=$2; shift 2 ;;
	--name) SY_NAME=$2; shift 2 ;;
	-h | --help) usage 0 ;;
	*) echo "unknown argument: $1" >&2; usage 2 ;;
	esac
done
case $SCENARIO in
one-hop) DO_HTTP1=1 DO_HTTP2=0 DO_GRPC=1 DO_GRPC2=0 ;;
two-hop) DO_HTTP1=0 DO_HTTP2=1 DO_GRPC=1 DO_GRPC2=1 ;;
grpc-proxy) DO_HTTP1=0 DO_HTTP2=0 DO_GRPC=1 DO_GRPC2=0 GRPC_MODE=1 ;;
all) DO_HTTP1=1 DO_HTTP2=1 DO_GRPC=1 DO_GRPC2=1 ;;
*) echo "unknown --scenario: $SCENARIO (want one-hop, two-hop, grpc-proxy or all)" >&2; exit 2 ;;
esac
[[ $GRPC_MODE == 0 ]] && DO_GRPC=0 DO_GRPC2=0
((DO_HTTP1 + DO_HTTP2 + DO_GRPC > 0)) || { echo "nothing to measure (--scenario $SCENARIO with --no-grpc)" >&2; exit 2; }
GRPC=$DO_GRPC # for lib.sh

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

need wrk curl ss setsid ps awk
((DO_GRPC)) && [[ $GRPC_TOOL == h2load ]] && need h2load
[[ $PIN == 1 ]] && need taskset
case $SY_NAME in direct | nginx-* | haproxy | caddy) die "--name must differ from the peers' names" ;; esac

# Sidecar ports: SY_PORT_BASE + 10*i + {0 HTTP, 1 gRPC, 2 internal gRPC, 3 metrics, 4 admin}
# i = 0: one-hop sidecar (HTTP app; also sidecar B of two-hop)
# i = 1: gRPC-proxying sidecar (gRPC app, --app-protocol grpc)
# i = 2: two-hop sidecar A (app id "client")
# i = 3: gRPC two-hop sidecar A (app id "client-grpc"; B is sidecar 1)
SY_PORT_BASE=${SY_PORT_BASE:-20000}
SY_EXTRA_ARGS=${SY_EXTRA_ARGS:-}     # appended to every switchyard command line
SY_GRPC_APP_ARGS=${SY_GRPC_APP_ARGS:---app-protocol grpc}   # how the gRPC sidecar is told its app speaks gRPC
N_HTTP1=$SY_NAME N_GRPC=$SY_NAME-grpc N_HTTP2=$SY_NAME-2hop N_GRPC2=$SY_NAME-grpc-2hop

# start_sidecar NAME INDEX APP_ID APP_PORT UPSTREAM CONFIG [EXTRA...]
# Starts switchyard (or --proxy-cmd) in its own session and waits for /v1.0/healthz.
# Returns 1 (with the reason in SY_ERR) instead of dying, so callers decide.
start_sidecar() {
	local name=$1 i=$2 app_id=$3 app_port=$4 upstream=$5 conf=$6
	shift 6
	local b=$((SY_PORT_BASE + 10 * i)) p
	for p in $b $((b + 1)) $((b + 2)) $((b + 3)) $((b + 4)); do
		port_free "$p" || die "port $p busy (set SY_PORT_BASE to move the sidecar ports)"
	done
	SY_HTTP[$name]=$b SY_INTERNAL[$name]=$((b + 2))
	local -a cmd
	if [[ -n $PROXY_CMD ]]; then
		cmd=(env SY_HTTP_PORT="$b" SY_GRPC_PORT=$((b + 1)) SY_INTERNAL_PORT=$((b + 2))
			SY_METRICS_PORT=$((b + 3)) SY_ADMIN_PORT=$((b + 4)) SY_APP_ID="$app_id"
			SY_APP_PORT="$app_port" SY_APP_PROTOCOL="$*" SY_CONFIG="$conf" SY_UPSTREAM="$upstream"
			APP_HTTP_PORT="$APP_HTTP_PORT" APP_GRPC_PORT="$APP_GRPC_PORT" BENCH_WORKDIR="$WORK"
			bash -c "$PROXY_CMD")
	else
		cmd=("$SY_BIN" --app-id "$app_id")
		[[ -n $app_port ]] && cmd+=(--app-port "$app_port")
		cmd+=(--dapr-http-port "$b" --dapr-grpc-port $((b + 1)) --dapr-internal-grpc-port $((b + 2))
			--metrics-port $((b + 3)) --admin-port $((b + 4)) --log-level warn)
		[[ -n $conf ]] && cmd+=(--config "$conf")
		# shellcheck disable=SC2206 # extra args are split on purpose
		cmd+=("$@" $SY_EXTRA_ARGS)
	fi
	echo "# $name: ${cmd[*]}"
	start_bg "$name" "${cmd[@]}"
	log "waiting for $name at http://127.0.0.1:$b/v1.0/healthz"
	if ! wait_http "http://127.0.0.1:$b/v1.0/healthz" "$READY_TIMEOUT" "$name"; then
		if alive "$name"; then
			SY_ERR="$name not ready: GET /v1.0/healthz on :$b did not answer 2xx within ${READY_TIMEOUT}s"
		else
			SY_ERR="$name exited: $(tail -n 3 "$WORK/logs/$name.log" | tr '\n' ' ')"
		fi
		return 1
	fi
	T_URL[$name]="http://127.0.0.1:$b$LOAD_PATH"
	T_GRPC[$name]="127.0.0.1:$((b + 1))"
	T_GRPC_HDR[$name]="dapr-app-id: app"
}
declare -A SY_HTTP=() SY_INTERNAL=()

# stop_target NAME: end a target's session (e.g. a sidecar that is not measured).
stop_target() {
	local sid=${T_SID[$1]:-}
	[[ -n $sid ]] || return 0
	kill -TERM -- "-$sid" 2>/dev/null
	local i
	for ((i = 0; i < 30; i++)); do alive "$1" || return 0; sleep 0.1; done
	kill -KILL -- "-$sid" 2>/dev/null
}

# invoke_check NAME: GET the loaded URL until it answers 2xx (at most ~3 s:
# ready may come a moment before the first route works); sets IC_CODE, IC_BODY.
invoke_check() {
	local out i
	for ((i = 0; i < 15; i++)); do
		out=$(curl -s --max-time 3 -w '\n%{http_code}' "${T_URL[$1]}")
		IC_CODE=${out##*$'\n'}
		IC_BODY=${out%$'\n'*}
		[[ $IC_CODE == 2?? ]] && return 0
		sleep 0.2
	done
	return 1
}

# grpc_check NAME: one gRPC echo through the target (a few tries); sets GC_ERR.
grpc_check() {
	local i
	for ((i = 0; i < 10; i++)); do
		GC_ERR=$("$WORK/bin/echoapp" -check-grpc "${T_GRPC[$1]}" -check-header "${T_GRPC_HDR[$1]}" 2>&1) && return 0
		sleep 0.2
	done
	return 1
}

# ---- start -----------------------------------------------------------------
read -r -a PEER_LIST <<<"$NGINX_REF $EXTRA_PEERS"
declare -A seen=()
PEERS=()
for p in "${PEER_LIST[@]}"; do [[ -n ${seen[$p]:-} ]] || { seen[$p]=1; PEERS+=("$p"); }; done

print_env
echo "# scenario: $SCENARIO  (one-hop HTTP: $DO_HTTP1, two-hop HTTP: $DO_HTTP2, gRPC proxying: $DO_GRPC$([[ $DO_GRPC == 1 && $GRPC_MODE == auto ]] && echo ", skipped if the pre-check fails"))"
echo "# switchyard source: $(src_version)  reference nginx: $NGINX_REF ($(nginx -v 2>&1))"

build_echoapp
if [[ -n $PROXY_CMD ]]; then
	echo "# $SY_NAME: --proxy-cmd stand-in: $PROXY_CMD"
else
	build_switchyard
fi
prepare_grpc_payload
((DO_GRPC)) && [[ $GRPC_TOOL == ghz ]] && build_ghz

start_echoapp
for p in "${PEERS[@]}"; do start_peer "$p"; done
export APP_HTTP_PORT APP_GRPC_PORT

# Sidecar 0 (app id "app", HTTP app): the one-hop target and sidecar B of two-hop.
if ((DO_HTTP1 || DO_HTTP2)); then
	start_sidecar "$N_HTTP1" 0 app "$APP_HTTP_PORT" "127.0.0.1:$APP_HTTP_PORT" "" || die "$SY_ERR"
	invoke_check "$N_HTTP1"
	[[ $IC_CODE == 200 && ${#IC_BODY} -ge 60 ]] ||
		die "$N_HTTP1: GET ${T_URL[$N_HTTP1]} answered $IC_CODE (${#IC_BODY} bytes: ${IC_BODY:0:200}); want 200 and the 64-byte echo"
fi

# two_hop_conf A B: writes sidecar A's config, in which app id "app"
# resolves statically to sidecar B's internal gRPC port; prints its folder.
two_hop_conf() {
	local d=$WORK/conf/$1
	mkdir -p "$d"
	cat >"$d/switchyard.yaml" <<EOF
# Generated by bench/run.sh (two-hop): sidecar A ($1) sends invocations of
# app id "app" to sidecar B's ($2) internal gRPC port.
name_resolution:
  scheme: static
  config:
    apps:
      app: ["127.0.0.1:${SY_INTERNAL[$2]}"]
EOF
	echo "# $1 config ($d/switchyard.yaml): name_resolution static, app -> 127.0.0.1:${SY_INTERNAL[$2]}" >&2
	echo "$d"
}

# Two-hop: sidecar A (app id "client") resolves "app" statically to B's internal gRPC port.
if ((DO_HTTP2)); then
	d=$(two_hop_conf "$N_HTTP2" "$N_HTTP1")
	start_sidecar "$N_HTTP2" 2 client "${SY_A_APP_PORT:-}" "127.0.0.1:${SY_HTTP[$N_HTTP1]}" "$d/switchyard.yaml" ||
		die "two-hop: $SY_ERR"
	invoke_check "$N_HTTP2"
	if [[ $IC_CODE != 2?? ]]; then
		die "two-hop: sidecar A answered $IC_CODE to GET ${T_URL[$N_HTTP2]} (body: ${IC_BODY:0:300})." \
			"Two-hop needs sidecar-to-sidecar invocation (A -> B's internal port :${SY_INTERNAL[$N_HTTP1]} -> app)."
	fi
	[[ ${#IC_BODY} -ge 60 ]] || die "two-hop: sidecar A answered $IC_CODE but ${#IC_BODY} bytes (${IC_BODY:0:200}); want the 64-byte echo"
fi

# gRPC proxying: its own sidecar, whose app is the echo app's gRPC port.
GRPC_SKIPPED=""
if ((DO_GRPC)); then
	# shellcheck disable=SC2086 # SY_GRPC_APP_ARGS is split on purpose
	if ! start_sidecar "$N_GRPC" 1 app "$APP_GRPC_PORT" "127.0.0.1:$APP_GRPC_PORT" "" $SY_GRPC_APP_ARGS; then
		GRPC_SKIPPED=$SY_ERR
	elif ! grpc_check "$N_GRPC"; then
		GRPC_SKIPPED="gRPC echo with 'dapr-app-id: app' through ${T_GRPC[$N_GRPC]} failed: $GC_ERR"
	fi
	if [[ -n $GRPC_SKIPPED ]]; then
		[[ $GRPC_MODE == 1 ]] && die "gRPC proxying: $GRPC_SKIPPED"
		log "WARNING: gRPC section skipped: $GRPC_SKIPPED (use --no-grpc to silence, --grpc to make this fatal)"
		stop_target "$N_GRPC"
		DO_GRPC=0 DO_GRPC2=0 GRPC=0
	fi
fi

# gRPC two-hop: h2load -> sidecar A (app id "client-grpc") with
# 'dapr-app-id: app' -> internal gRPC -> the gRPC-proxying sidecar (B) -> app.
if ((DO_GRPC2)); then
	d=$(two_hop_conf "$N_GRPC2" "$N_GRPC")
	start_sidecar "$N_GRPC2" 3 client-grpc "" "" "$d/switchyard.yaml" || die "gRPC two-hop: $SY_ERR"
	grpc_check "$N_GRPC2" || die "gRPC two-hop: echo through $N_GRPC2 -> $N_GRPC failed: $GC_ERR"
fi

# The two-hop reference: a second nginx in front of the reference nginx.
NGINX2=""
if ((DO_HTTP2)); then
	NGINX2=nginx-2hop
	ref_port=${T_URL[$NGINX_REF]#http://127.0.0.1:}
	start_nginx "$NGINX2" auto $((PEER_PORT_BASE + 5)) $((PEER_PORT_BASE + 105)) "${ref_port%%/*}"
fi

HTTP_TARGETS=(direct "${PEERS[@]}")
((DO_HTTP1)) && HTTP_TARGETS+=("$N_HTTP1")
((DO_HTTP2)) && HTTP_TARGETS+=("$NGINX2" "$N_HTTP2")
GRPC_TARGETS=(direct "${PEERS[@]}" "$N_GRPC")
((DO_GRPC2)) && GRPC_TARGETS+=("$N_GRPC2")
ALL_TARGETS=("${HTTP_TARGETS[@]}")
((DO_GRPC)) && ALL_TARGETS+=("$N_GRPC")
((DO_GRPC2)) && ALL_TARGETS+=("$N_GRPC2")
((DO_HTTP1 + DO_HTTP2 == 0)) && ALL_TARGETS=("${GRPC_TARGETS[@]}")
((DO_HTTP2 && !DO_HTTP1)) && ALL_TARGETS+=("$N_HTTP1") # B's memory, though it is not loaded directly

for t in "${PEERS[@]}" direct $NGINX2; do check_http "$t"; done
if ((DO_GRPC)); then
	for t in direct "${PEERS[@]}"; do check_grpc "$t"; done
fi
sleep 1
for t in "${ALL_TARGETS[@]}"; do record_mem "$t" idle-start; done

# ---- load ------------------------------------------------------------------
if ((DO_HTTP1 + DO_HTTP2)); then
	log "HTTP: ${HTTP_TARGETS[*]}"
	run_section http "${HTTP_TARGETS[@]}"
fi
if ((DO_GRPC)); then
	log "gRPC: ${GRPC_TARGETS[*]}"
	run_section grpc "${GRPC_TARGETS[@]}"
fi
sleep 2
for t in "${ALL_TARGETS[@]}"; do record_mem "$t" idle-after; done

# ---- report ----------------------------------------------------------------
if ((DO_HTTP1 + DO_HTTP2)); then
	echo
	echo "== HTTP  wrk -t$THREADS -c$CONNS, ${DURATION}s x $ROUNDS rounds; direct=GET $DIRECT_PATH, others=GET $LOAD_PATH"
	((DO_HTTP2)) && echo "   $N_HTTP2 = wrk -> $N_HTTP2 (A, app id client) -> $N_HTTP1 (B, internal port: the peer link) -> app;  $NGINX2 = wrk -> nginx -> $NGINX_REF -> app"
	summarize http "direct $NGINX_REF $NGINX2" "${HTTP_TARGETS[@]}"
fi
if ((DO_GRPC)); then
	echo
	echo "== gRPC proxying  $GRPC_TOOL $GRPC_METHOD c=$GRPC_CONNS streams/conn=$GRPC_STREAMS, 66-byte message, ${DURATION}s x $ROUNDS rounds; $N_GRPC with 'dapr-app-id: app'"
	((DO_GRPC2)) && echo "   $N_GRPC2 = h2load -> $N_GRPC2 (A, app id client-grpc) -> $N_GRPC (B, internal port: HTTP/2 frames) -> app's gRPC server"
	summarize grpc "direct $NGINX_REF" "${GRPC_TARGETS[@]}"
fi
if [[ $RSS == 1 ]]; then
	echo
	echo "== memory, MiB RSS/PSS summed over each target's processes (load = max of 0.5 s samples)"
	mem_table "${ALL_TARGETS[@]}"
fi
echo
echo "ratios (x...) are medians of per-round ratios against the reference measured in the same round"
[[ -n $GRPC_SKIPPED ]] && echo "grpc: not measured: $GRPC_SKIPPED"
summary_line() { # SECTION TARGET PREFIX NGINX
	echo "$3$2/direct rps ratio: $(summary_value "$1" "$2" direct ratio)  $2/nginx rps ratio: $(summary_value "$1" "$2" "$4" ratio)  p99 ms: $(summary_value "$1" "$2" - p99) (nginx p99 ms: $(summary_value "$1" "$4" - p99))"
}
((DO_GRPC)) && summary_line grpc "$N_GRPC" "grpc " "$NGINX_REF"
((DO_GRPC2)) && summary_line grpc "$N_GRPC2" "two-hop grpc " "$NGINX_REF"
((DO_HTTP2)) && summary_line http "$N_HTTP2" "two-hop " "$NGINX2"
((DO_HTTP1)) && summary_line http "$N_HTTP1" "" "$NGINX_REF"
exit 0
