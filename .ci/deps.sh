#!/usr/bin/env bash
# Installs what switchyard's tests need on a fresh Debian machine: the real
# brokers (redis-server, nats-server) the pub/sub tests start, iproute2 for
# the mDNS test's network namespaces, and the Go modules. Only what is
# missing is installed.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
command -v nats-server >/dev/null || need+=(nats-server)
command -v ip >/dev/null || need+=(iproute2)
command -v curl >/dev/null || need+=(curl)
if [[ ${BENCH:-0} == 1 ]]; then
	command -v nginx >/dev/null || need+=(nginx)
	command -v wrk >/dev/null || need+=(wrk)
	command -v h2load >/dev/null || need+=(nghttp2-client)
fi
if ((${#need[@]})); then
	sudo=""
	[[ $(id -u) == 0 ]] || sudo=sudo
	echo "installing: ${need[*]}"
	$sudo apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
go mod download
