#!/usr/bin/env bash
# proxy.sh - measure a proxy under test beside direct and nginx in one run.
#
#   bench/proxy.sh --cmd 'COMMAND' --port PORT [options]
#
#   --cmd CMD          command that starts the proxy in the foreground (run with
#                      bash -c; it sees $APP_HTTP_PORT, $APP_GRPC_PORT, $APP_ID,
#                      $BENCH_WORKDIR and $BENCH_DIR; single-quote it)
#   --port PORT        HTTP port the proxy listens on (on 127.0.0.1)
#   --path PATH        path loaded on the proxy   [/v1.0/invoke/app/method/echo]
#   --ready URL        readiness URL, must answer 2xx [http://127.0.0.1:PORT/PATH]
#   --ready-timeout S  seconds to wait for readiness [30]
#   --name NAME        label of the proxy in the tables [proxy]
#   --grpc-port PORT   also load gRPC $GRPC_METHOD through the proxy on PORT
#   --grpc-header H    metadata sent on the proxy's gRPC calls, e.g. 'dapr-app-id: app'
#   --nginx W          nginx reference: nginx-auto (default) or nginx-w1
#   --peers "P.."      extra peers in the same run: haproxy caddy nginx-w1 ...
#   -d SECONDS         duration of each run [10];  -r ROUNDS  rounds [3]
#   --pin              load generator on CPU $LOAD_CPUS, everything else on $SERVER_CPUS
#   --no-grpc          skip gRPC even if --grpc-port is given
#   --no-http          skip the HTTP section (for a proxy that only proxies gRPC to a gRPC app)
#
# The last line of output is the summary:
#   proxy/direct rps ratio: 0.43  proxy/nginx rps ratio: 1.10  p99 ms: 1.9
set -uo pipefail

usage() { sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

NO_HTTP=0 P_CMD="" P_PORT="" P_PATH="" P_READY="" P_NAME=proxy P_GRPC_PORT="" P_GRPC_HDR=""
READY_TIMEOUT=30 NGINX_REF=${NGINX_REF:-nginx-auto} EXTRA_PEERS=${EXTRA_PEERS:-}
while (($#)); do
	case $1 in
	--cmd) P_CMD=$2; shift 2 ;;
	--port) P_PORT=$2; shift 2 ;;
	--path) P_PATH=$2; shift 2 ;;
	--ready) P_READY=$2; shift 2 ;;
	--ready-timeout) READY_TIMEOUT=$2; shift 2 ;;
	--name) P_NAME=$2; shift 2 ;;
	--grpc-port) P_GRPC_PORT=$2; shift 2 ;;
	--grpc-header) P_GRPC_HDR=$2; shift 2 ;;
	--nginx) NGINX_REF=$2; shift 2 ;;
	--peers) EXTRA_PEERS=$2; shift 2 ;;
	-d | --duration) DURATION=$2; shift 2 ;;
	-r | --rounds) ROUNDS=$2; shift 2 ;;
	--pin) PIN=1; shift ;;
	--no-grpc) GRPC=0; shift ;;
	--no-http) NO_HTTP=1; shift ;;
	-h | --help) usage 0 ;;
	*) echo "unknown argument: $1" >&2; usage 2 ;;
	esac
done
[[ -n $P_CMD && -n $P_PORT ]] || { echo "need --cmd and --port" >&2; usage 2; }
[[ -z $P_GRPC_PORT ]] && GRPC=0

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

need wrk curl ss setsid ps awk
[[ $GRPC == 1 && $GRPC_TOOL == h2load ]] && need h2load
[[ $PIN == 1 ]] && need taskset
case $P_NAME in direct | nginx-* | haproxy | caddy) die "--name must differ from the peers' names" ;; esac

P_PATH=${P_PATH:-$LOAD_PATH}
P_READY=${P_READY:-http://127.0.0.1:$P_PORT$P_PATH}
read -r -a PEER_LIST <<<"$NGINX_REF $EXTRA_PEERS"
# de-duplicate, keep order
declare -A seen=()
PEERS=()
for p in "${PEER_LIST[@]}"; do [[ -n ${seen[$p]:-} ]] || { seen[$p]=1; PEERS+=("$p"); }; done
TARGETS=(direct "${PEERS[@]}" "$P_NAME")

print_env
echo "# $P_NAME: $P_CMD"
echo "# reference nginx: $NGINX_REF ($(nginx -v 2>&1))"

build_echoapp
prepare_grpc_payload
[[ $GRPC == 1 && $GRPC_TOOL == ghz ]] && build_ghz

start_echoapp
for p in "${PEERS[@]}"; do start_peer "$p"; done

port_free "$P_PORT" || die "port $P_PORT busy before the proxy started"
[[ -n $P_GRPC_PORT ]] && { port_free "$P_GRPC_PORT" || die "port $P_GRPC_PORT busy before the proxy started"; }
export APP_HTTP_PORT APP_GRPC_PORT APP_ID=app BENCH_WORKDIR=$WORK BENCH_DIR
start_bg "$P_NAME" bash -c "$P_CMD"
log "waiting for $P_NAME at $P_READY"
wait_http "$P_READY" "$READY_TIMEOUT" "$P_NAME" || die "$P_NAME not ready at $P_READY (see $WORK/logs/$P_NAME.log)"
T_URL[$P_NAME]="http://127.0.0.1:$P_PORT$P_PATH"
if [[ -n $P_GRPC_PORT ]]; then
	T_GRPC[$P_NAME]="127.0.0.1:$P_GRPC_PORT"
	T_GRPC_HDR[$P_NAME]=$P_GRPC_HDR
fi

for t in "${TARGETS[@]}"; do [[ $NO_HTTP == 1 && $t == "$P_NAME" ]] || check_http "$t"; done
if [[ $GRPC == 1 ]]; then
	for t in "${TARGETS[@]}"; do check_grpc "$t"; done
fi
sleep 1
for t in "${TARGETS[@]}"; do record_mem "$t" idle-start; done

if [[ $NO_HTTP == 0 ]]; then
	log "HTTP: ${TARGETS[*]}"
	run_section http "${TARGETS[@]}"
fi
if [[ $GRPC == 1 ]]; then
	log "gRPC: ${TARGETS[*]}"
	run_section grpc "${TARGETS[@]}"
fi
sleep 2
for t in "${TARGETS[@]}"; do record_mem "$t" idle-after; done

if [[ $NO_HTTP == 0 ]]; then
echo
echo "== HTTP  wrk -t$THREADS -c$CONNS, ${DURATION}s x $ROUNDS rounds; direct=GET $DIRECT_PATH, peers=GET $LOAD_PATH, $P_NAME=GET $P_PATH"
summarize http "direct $NGINX_REF" "${TARGETS[@]}"
fi
if [[ $GRPC == 1 ]]; then
	echo
	echo "== gRPC  $GRPC_TOOL $GRPC_METHOD c=$GRPC_CONNS streams/conn=$GRPC_STREAMS, 66-byte message, ${DURATION}s x $ROUNDS rounds"
	summarize grpc "direct $NGINX_REF" "${TARGETS[@]}"
fi
if [[ $RSS == 1 ]]; then
	echo
	echo "== memory, MiB RSS/PSS summed over each target's processes (load = max of 0.5 s samples)"
	mem_table "${TARGETS[@]}"
fi
echo
echo "ratios (x...) are medians of per-round ratios against the reference measured in the same round"
if [[ $GRPC == 1 ]]; then
	echo "grpc proxy/direct rps ratio: $(summary_value grpc "$P_NAME" direct ratio)  grpc proxy/nginx rps ratio: $(summary_value grpc "$P_NAME" "$NGINX_REF" ratio)  grpc p99 ms: $(summary_value grpc "$P_NAME" - p99)"
fi
[[ $NO_HTTP == 1 ]] || echo "proxy/direct rps ratio: $(summary_value http "$P_NAME" direct ratio)  proxy/nginx rps ratio: $(summary_value http "$P_NAME" "$NGINX_REF" ratio)  p99 ms: $(summary_value http "$P_NAME" - p99)"
