#!/usr/bin/env bash
# peers.sh - measure the upstream echo app directly and through peer proxies
# (nginx with 1 worker and with "auto" workers, haproxy, caddy), HTTP with wrk
# and gRPC with h2load (or ghz), interleaving targets round by round.
#
#   bench/peers.sh [-d SECONDS] [-r ROUNDS] [--peers "nginx-w1 caddy"] [--pin] [--no-grpc]
#
# All knobs are also environment variables; see lib.sh and README.md.
set -uo pipefail

usage() { sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

PEERS=${PEERS:-nginx-w1 nginx-auto haproxy caddy}
while (($#)); do
	case $1 in
	-d | --duration) DURATION=$2; shift 2 ;;
	-r | --rounds) ROUNDS=$2; shift 2 ;;
	--peers) PEERS=$2; shift 2 ;;
	--pin) PIN=1; shift ;;
	--no-grpc) GRPC=0; shift ;;
	-h | --help) usage 0 ;;
	*) echo "unknown argument: $1" >&2; usage 2 ;;
	esac
done

# shellcheck source=lib.sh
. "$(dirname "$0")/lib.sh"

need wrk curl ss setsid ps awk
[[ $GRPC == 1 && $GRPC_TOOL == h2load ]] && need h2load
[[ $PIN == 1 ]] && need taskset

read -r -a PEER_LIST <<<"$PEERS"
TARGETS=(direct "${PEER_LIST[@]}")

print_env
for p in "${PEER_LIST[@]}"; do
	case $p in
	nginx-*) echo "# $(nginx -v 2>&1)" ;;
	haproxy) echo "# $(haproxy -v 2>&1 | head -1)" ;;
	caddy) echo "# caddy $(caddy version 2>&1)" ;;
	esac
done | sort -u

build_echoapp
prepare_grpc_payload
[[ $GRPC == 1 && $GRPC_TOOL == ghz ]] && build_ghz

start_echoapp
for p in "${PEER_LIST[@]}"; do start_peer "$p"; done
for t in "${TARGETS[@]}"; do check_http "$t"; done
if [[ $GRPC == 1 ]]; then
	for t in "${TARGETS[@]}"; do check_grpc "$t"; done
fi
sleep 1
for t in "${TARGETS[@]}"; do record_mem "$t" idle-start; done

log "HTTP: ${TARGETS[*]}"
run_section http "${TARGETS[@]}"
if [[ $GRPC == 1 ]]; then
	log "gRPC: ${TARGETS[*]}"
	run_section grpc "${TARGETS[@]}"
fi
sleep 2
for t in "${TARGETS[@]}"; do record_mem "$t" idle-after; done

echo
echo "== HTTP  wrk -t$THREADS -c$CONNS, ${DURATION}s x $ROUNDS rounds; direct=GET $DIRECT_PATH, peers=GET $LOAD_PATH"
summarize http direct "${TARGETS[@]}"
if [[ $GRPC == 1 ]]; then
	echo
	echo "== gRPC  $GRPC_TOOL $GRPC_METHOD c=$GRPC_CONNS streams/conn=$GRPC_STREAMS, 66-byte message, ${DURATION}s x $ROUNDS rounds"
	summarize grpc direct "${TARGETS[@]}"
fi
if [[ $RSS == 1 ]]; then
	echo
	echo "== memory, MiB RSS/PSS summed over each target's processes (load = max of 0.5 s samples)"
	mem_table "${TARGETS[@]}"
fi
echo
echo "ratios (x...) are medians of per-round ratios against the reference measured in the same round"
