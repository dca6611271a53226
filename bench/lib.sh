# shellcheck shell=bash
# Shared harness of the load benchmark (run.sh, startup.sh, proxy.sh,
# peers.sh). Source it; do not run it.
#
# Everything it starts runs in its own session (setsid; with SESSIONS=0 in a
# process group of its own inside the harness's session), so a target's whole
# process tree (e.g. nginx master + workers) can be measured and ended by
# that one id. An EXIT trap ends them all and removes the work dir it made.

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$BENCH_DIR/.." && pwd)   # the switchyard module root

# ---- knobs (environment) ---------------------------------------------------
DURATION=${DURATION:-10}          # seconds per measured run
ROUNDS=${ROUNDS:-3}               # interleaved rounds: A B C D A B C D ...
WARMUP=${WARMUP:-2}               # seconds of unrecorded load per target first (0: none)
COOLDOWN=${COOLDOWN:-1}           # seconds of pause between runs
CONNS=${CONNS:-64}                # wrk connections
THREADS=${THREADS:-1}             # wrk threads
LOAD_PATH=${LOAD_PATH:-/v1.0/invoke/app/method/echo}   # path loaded on proxies
DIRECT_PATH=${DIRECT_PATH:-/echo}                      # path loaded on the app itself
GRPC=${GRPC:-1}                   # 1: also run the gRPC section
GRPC_TOOL=${GRPC_TOOL:-h2load}    # h2load | ghz
GRPC_CONNS=${GRPC_CONNS:-16}      # gRPC connections (h2load -c, ghz --connections)
GRPC_STREAMS=${GRPC_STREAMS:-4}   # concurrent streams per connection (h2load -m)
GRPC_METHOD=${GRPC_METHOD:-/echo.Echo/Echo}
PIN=${PIN:-0}                     # 1: load generator on LOAD_CPUS, app+proxies on SERVER_CPUS
LOAD_CPUS=${LOAD_CPUS:-1}
SERVER_CPUS=${SERVER_CPUS:-0}
APP_HTTP_PORT=${APP_HTTP_PORT:-13000}
APP_GRPC_PORT=${APP_GRPC_PORT:-15051}
PEER_PORT_BASE=${PEER_PORT_BASE:-18000}   # peers listen on BASE+1.. (HTTP), BASE+101.. (gRPC)
RSS=${RSS:-1}                     # 1: sample memory of each target during its runs
MAX_NOISE=${MAX_NOISE-15}         # repeat a run whose foreign CPU% exceeded this ("": never) ...
NOISE_RETRIES=${NOISE_RETRIES:-3} # ... at most this many times (then keep the last try)
# 1: each target in a session of its own (setsid). Where the kernel groups
# tasks by session (/proc/sys/kernel/sched_autogroup_enabled = 1) each target
# then gets a CPU share of its own, much as containers in cgroups of their own.
# 0: each target in a process group of its own inside the harness's session:
# targets and load generator share one scheduling group, like processes that
# one shell starts. Ratios differ between the two; bench/README.md has figures.
SESSIONS=${SESSIONS:-1}

# ---- work dir --------------------------------------------------------------
if [[ -n ${BENCH_WORKDIR:-} ]]; then
	WORK=$BENCH_WORKDIR
	WORK_OWNED=0
	mkdir -p "$WORK"
else
	WORK=$(mktemp -d -t bench.XXXXXX)
	WORK_OWNED=1
fi
WORK=$(cd "$WORK" && pwd)
mkdir -p "$WORK/bin" "$WORK/logs" "$WORK/raw" "$WORK/conf"
RESULTS=$WORK/results.tsv   # section round target rps p50 p90 p99 errors noise%
MEMFILE=$WORK/mem.tsv       # target phase rss_kb pss_kb nprocs
: >"$RESULTS"
: >"$MEMFILE"

declare -a SIDS=()          # session (SESSIONS=0: process group) ids of everything started
declare -A T_URL=() T_SID=() T_GRPC=() T_GRPC_HDR=()
LOADPID=""
SAMPLERPID=""

# members ID[,ID...]: the pids in those sessions (SESSIONS=0: process groups).
members() {
	if [[ $SESSIONS == 1 ]]; then
		ps -o pid= -s "$1" 2>/dev/null
	else
		pgrep -g "$1" 2>/dev/null
	fi
}

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

cleanup() {
	local rc=$? sid p i
	trap - EXIT INT TERM
	for p in $LOADPID $SAMPLERPID; do
		kill "$p" 2>/dev/null
	done
	for sid in "${SIDS[@]}"; do
		kill -TERM -- "-$sid" 2>/dev/null
	done
	for ((i = 0; i < 50; i++)); do
		p=0
		for sid in "${SIDS[@]}"; do
			[[ -n $(members "$sid") ]] && p=1
		done
		((p == 0)) && break
		sleep 0.1
	done
	for sid in "${SIDS[@]}"; do
		[[ -n $(members "$sid") ]] && kill -KILL -- "-$sid" 2>/dev/null
	done
	wait 2>/dev/null
	if ((WORK_OWNED == 1)) && [[ ${BENCH_KEEP:-0} != 1 ]]; then
		rm -rf "$WORK"
	elif ((rc != 0)); then
		log "work dir kept: $WORK"
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

need() {
	local c
	for c in "$@"; do
		command -v "$c" >/dev/null 2>&1 || die "missing tool: $c"
	done
}

port_free() { [[ -z $(ss -Hltn "sport = :$1" 2>/dev/null) ]]; }

server_prefix() { if [[ $PIN == 1 ]]; then echo taskset -c "$SERVER_CPUS"; fi; }
load_prefix() { if [[ $PIN == 1 ]]; then echo taskset -c "$LOAD_CPUS"; fi; }

# start_bg NAME CMD... : start CMD in a session (SESSIONS=0: process group)
# of its own and record it.
start_bg() {
	local name=$1 pid id
	shift
	local -a pre
	read -r -a pre <<<"$(server_prefix)"
	if [[ $SESSIONS == 1 ]]; then
		setsid "${pre[@]}" "$@" >"$WORK/logs/$name.log" 2>&1 </dev/null &
		pid=$!
	else
		set -m # with job control on, a background job gets a process group of its own
		"${pre[@]}" "$@" >"$WORK/logs/$name.log" 2>&1 </dev/null &
		pid=$!
		set +m
	fi
	SIDS+=("$pid")
	T_SID[$name]=$pid
	sleep 0.05
	id=$(ps -o "$([[ $SESSIONS == 1 ]] && echo sid || echo pgid)=" -p "$pid" 2>/dev/null | tr -d ' ')
	[[ -z $id || $id == "$pid" ]] || log "warning: $name pid $pid does not lead a session/process group of its own ($id)"
}

# wait_http URL [SECONDS] [TARGET]: wait until URL answers 2xx (fail early if TARGET died).
wait_http() {
	local url=$1 t=${2:-15} name=${3:-} i
	for ((i = 0; i < t * 10; i++)); do
		curl -sf -o /dev/null --max-time 1 "$url" && return 0
		[[ -n $name ]] && ! alive "$name" && return 1
		sleep 0.1
	done
	return 1
}

alive() { [[ -n $(members "${T_SID[$1]}") ]]; }

# mem_of SID -> "rss_kb pss_kb nprocs" summed over the session.
mem_of() {
	local p r s rss=0 pss=0 n=0
	for p in $(members "$1"); do
		r=$(awk '/^VmRSS:/ {print $2}' "/proc/$p/status" 2>/dev/null)
		s=$(awk '/^Pss:/ {print $2}' "/proc/$p/smaps_rollup" 2>/dev/null)
		rss=$((rss + ${r:-0}))
		pss=$((pss + ${s:-0}))
		n=$((n + 1))
	done
	echo "$rss $pss $n"
}

record_mem() { # target phase
	[[ $RSS == 1 ]] || return 0
	local m
	m=$(mem_of "${T_SID[$1]}")
	printf '%s\t%s\t%s\n' "$1" "$2" "${m// /$'\t'}" >>"$MEMFILE"
}

# sampler TARGET: while LOADPID lives, record the max memory of TARGET.
start_sampler() { # target phase
	[[ $RSS == 1 ]] || return 0
	local t=$1 ph=$2 lp=$LOADPID sid=${T_SID[$1]}
	(
		mr=0 mp=0 mn=0
		while kill -0 "$lp" 2>/dev/null; do
			sleep 0.5
			read -r r p n < <(mem_of "$sid")
			((r > mr)) && mr=$r && mn=$n
			((p > mp)) && mp=$p
		done
		printf '%s\t%s\t%s\t%s\t%s\n' "$t" "$ph" "$mr" "$mp" "$mn" >>"$MEMFILE"
	) &
	SAMPLERPID=$!
}

stop_sampler() {
	if [[ -n $SAMPLERPID ]]; then
		wait "$SAMPLERPID" 2>/dev/null
		SAMPLERPID=""
	fi
}

# ---- noise: CPU used during a run by processes that are not ours -----------
# foreign% = (machine busy ticks - ticks of our sessions and reaped children)
#            / all ticks of all CPUs, over the run. Steal time counts as busy.
CLK_TCK=$(getconf CLK_TCK 2>/dev/null || echo 100)

cpu_mark() { # sets CPU_BUSY CPU_TOTAL OUR_TICKS
	local _c u n s i w q sq st _r
	read -r _c u n s i w q sq st _r </proc/stat
	CPU_BUSY=$((u + n + s + q + sq + st))
	CPU_TOTAL=$((CPU_BUSY + i + w))
	local p files=() sess=0
	if ((${#SIDS[@]})); then
		for p in $(members "$(IFS=,; echo "${SIDS[*]}")"); do files+=("/proc/$p/stat"); done
	fi
	((${#files[@]})) && sess=$(cat "${files[@]}" 2>/dev/null | awk '{ sub(/^.*\) /, ""); s += $12 + $13 } END { print s + 0 }')
	{ times; } >"$WORK/.times"
	local cu cs
	{ read -r _ _; read -r cu cs; } <"$WORK/.times"
	OUR_TICKS=$((sess + $(dur2ticks "$cu") + $(dur2ticks "$cs")))
}

dur2ticks() { # "1m2.345s" -> ticks
	local m=${1%%m*} x=${1#*m}
	x=${x%s}
	local i=${x%.*} f=${x#*.}000
	echo $((((10#$m * 60 + 10#$i) * 1000 + 10#${f:0:3}) * CLK_TCK / 1000))
}

# foreign_pct BUSY0 TOTAL0 OURS0: set NOISE, the foreign CPU% since that mark.
# (Not in a subshell: "times" must see this shell's reaped children.)
foreign_pct() {
	local b0=$1 t0=$2 o0=$3
	cpu_mark
	local db=$((CPU_BUSY - b0)) dt=$((CPU_TOTAL - t0)) dours=$((OUR_TICKS - o0))
	NOISE=0
	((dt > 0)) && NOISE=$(((db - dours) * 100 / dt))
	((NOISE < 0)) && NOISE=0
	return 0
}

# ---- build -----------------------------------------------------------------
# The echo app and the start-up probe are main packages of the root module.
build_echoapp() {
	need go
	log "building echoapp -> $WORK/bin/echoapp"
	(cd "$REPO_ROOT" && go build -buildvcs=false -o "$WORK/bin/echoapp" ./bench/echoapp) ||
		die "echoapp build failed"
}

build_startprobe() {
	need go
	log "building startprobe -> $WORK/bin/startprobe"
	(cd "$REPO_ROOT" && go build -buildvcs=false -o "$WORK/bin/startprobe" ./bench/startprobe) ||
		die "startprobe build failed"
}

# build_switchyard: SWITCHYARD_BIN (a prebuilt binary) wins over a build.
build_switchyard() {
	if [[ -n ${SWITCHYARD_BIN:-} ]]; then
		[[ -x $SWITCHYARD_BIN ]] || die "SWITCHYARD_BIN=$SWITCHYARD_BIN is not an executable"
		SY_BIN=$SWITCHYARD_BIN
		log "using prebuilt switchyard: $SY_BIN"
		return 0
	fi
	need go
	[[ -d $REPO_ROOT/cmd/switchyard ]] || die "no cmd/switchyard in $REPO_ROOT yet (use --proxy-cmd to try the harness with a stand-in)"
	log "building switchyard -> $WORK/bin/switchyard"
	(cd "$REPO_ROOT" && CGO_ENABLED=0 go build -trimpath -tags grpcnotrace -o "$WORK/bin/switchyard" ./cmd/switchyard) ||
		die "switchyard build failed (go build ./cmd/switchyard)"
	SY_BIN=$WORK/bin/switchyard
}

# src_version: the checkout's commit, "+dirty" when it has changes.
src_version() {
	local c
	c=$(git -C "$REPO_ROOT" rev-parse --short HEAD 2>/dev/null) || { echo unknown; return; }
	[[ -n $(git -C "$REPO_ROOT" status --porcelain -- . ':(exclude)bench' 2>/dev/null) ]] && c+="+dirty"
	echo "$c"
}

build_ghz() {
	[[ -x $WORK/bin/ghz ]] && return 0
	if command -v ghz >/dev/null 2>&1; then
		ln -sf "$(command -v ghz)" "$WORK/bin/ghz"
		return 0
	fi
	need go
	log "building ghz from the Go module proxy -> $WORK/bin/ghz"
	(cd "$WORK" && GOBIN=$WORK/bin go install github.com/bojand/ghz/cmd/ghz@"${GHZ_VERSION:-v0.93.0}") ||
		die "ghz build failed"
}

# ---- targets ---------------------------------------------------------------
start_echoapp() {
	local p
	for p in "$APP_HTTP_PORT" "$APP_GRPC_PORT"; do port_free "$p" || die "port $p busy"; done
	start_bg direct "$WORK/bin/echoapp" -http-port "$APP_HTTP_PORT" -grpc-port "$APP_GRPC_PORT"
	T_URL[direct]="http://127.0.0.1:$APP_HTTP_PORT$DIRECT_PATH"
	T_GRPC[direct]="127.0.0.1:$APP_GRPC_PORT"
	wait_http "http://127.0.0.1:$APP_HTTP_PORT/healthz" 15 direct || die "echoapp not ready (see $WORK/logs/direct.log)"
	"$WORK/bin/echoapp" -check-grpc "127.0.0.1:$APP_GRPC_PORT" >/dev/null || die "echoapp gRPC check failed"
}

# The invoke prefix that peers rewrite away: /v1.0/invoke/app/method/echo -> /echo
INVOKE_PREFIX=${INVOKE_PREFIX:-/v1.0/invoke/app/method}

# With UPSTREAM_HTTP_PORT (another proxy, for a two-hop chain) the invoke path
# is passed on unchanged instead of being rewritten to /<m>.
start_nginx() { # name workers http_port grpc_port [upstream_http_port]
	need nginx
	local name=$1 workers=$2 hp=$3 gp=$4 d=$WORK/conf/$1
	local up=${5:-$APP_HTTP_PORT} pass=http://echo_http/
	[[ -n ${5:-} ]] && pass=http://echo_http
	port_free "$hp" || die "port $hp busy"
	port_free "$gp" || die "port $gp busy"
	mkdir -p "$d/tmp"
	cat >"$d/nginx.conf" <<EOF
worker_processes $workers;
daemon off;
master_process on;
pid $d/nginx.pid;
error_log $d/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    keepalive_timeout 120s;
    client_body_temp_path $d/tmp/body;
    proxy_temp_path $d/tmp/proxy;
    fastcgi_temp_path $d/tmp/fastcgi;
    uwsgi_temp_path $d/tmp/uwsgi;
    scgi_temp_path $d/tmp/scgi;
    upstream echo_http {
        server 127.0.0.1:$up;
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 120s;
    }
    upstream echo_grpc {
        server 127.0.0.1:$APP_GRPC_PORT;
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 120s;
    }
    server {
        listen 127.0.0.1:$hp;
        location = /healthz { return 200 "ok\n"; }
        # sidecar-style rewrite: $INVOKE_PREFIX/echo -> /echo
        location $INVOKE_PREFIX/ {
            proxy_pass $pass;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
    server {
        listen 127.0.0.1:$gp http2;
        location / { grpc_pass grpc://echo_grpc; }
    }
}
EOF
	start_bg "$name" nginx -p "$d" -c "$d/nginx.conf" -e "$d/error.log"
	T_URL[$name]="http://127.0.0.1:$hp$LOAD_PATH"
	T_GRPC[$name]="127.0.0.1:$gp"
}

start_haproxy() { # name http_port grpc_port
	need haproxy
	local name=$1 hp=$2 gp=$3 d=$WORK/conf/$1
	port_free "$hp" || die "port $hp busy"
	port_free "$gp" || die "port $gp busy"
	mkdir -p "$d"
	cat >"$d/haproxy.cfg" <<EOF
global
    maxconn 4096
defaults
    mode http
    timeout connect 5s
    timeout client 120s
    timeout server 120s
    timeout http-keep-alive 120s
    http-reuse always
frontend fe_http
    bind 127.0.0.1:$hp
    http-request return status 200 content-type text/plain string ok if { path /healthz }
    # sidecar-style rewrite: $INVOKE_PREFIX/echo -> /echo
    http-request replace-path ^${INVOKE_PREFIX//./\\.}(/.*)\$ \1
    default_backend be_http
backend be_http
    server app 127.0.0.1:$APP_HTTP_PORT
frontend fe_grpc
    bind 127.0.0.1:$gp proto h2
    default_backend be_grpc
backend be_grpc
    server app 127.0.0.1:$APP_GRPC_PORT proto h2
EOF
	haproxy -c -q -f "$d/haproxy.cfg" || die "haproxy config invalid"
	start_bg "$name" haproxy -db -f "$d/haproxy.cfg"
	T_URL[$name]="http://127.0.0.1:$hp$LOAD_PATH"
	T_GRPC[$name]="127.0.0.1:$gp"
}

start_caddy() { # name http_port grpc_port
	need caddy
	local name=$1 hp=$2 gp=$3 d=$WORK/conf/$1
	port_free "$hp" || die "port $hp busy"
	port_free "$gp" || die "port $gp busy"
	mkdir -p "$d/xdg-config" "$d/xdg-data"
	cat >"$d/Caddyfile" <<EOF
{
    admin off
    auto_https off
    servers {
        protocols h1 h2 h2c
    }
}
http://127.0.0.1:$hp {
    bind 127.0.0.1
    respond /healthz "ok" 200
    # sidecar-style rewrite: $INVOKE_PREFIX/echo -> /echo
    uri strip_prefix $INVOKE_PREFIX
    reverse_proxy 127.0.0.1:$APP_HTTP_PORT {
        transport http {
            keepalive 120s
            keepalive_idle_conns 256
            keepalive_idle_conns_per_host 256
        }
    }
}
http://127.0.0.1:$gp {
    bind 127.0.0.1
    reverse_proxy h2c://127.0.0.1:$APP_GRPC_PORT
}
EOF
	start_bg "$name" env XDG_CONFIG_HOME="$d/xdg-config" XDG_DATA_HOME="$d/xdg-data" HOME="$d" \
		caddy run --adapter caddyfile --config "$d/Caddyfile"
	T_URL[$name]="http://127.0.0.1:$hp$LOAD_PATH"
	T_GRPC[$name]="127.0.0.1:$gp"
}

# start_peer NAME: nginx-w1 | nginx-auto | haproxy | caddy
start_peer() {
	local b=$PEER_PORT_BASE
	case $1 in
	nginx-w1) start_nginx nginx-w1 1 $((b + 1)) $((b + 101)) ;;
	nginx-auto) start_nginx nginx-auto auto $((b + 2)) $((b + 102)) ;;
	haproxy) start_haproxy haproxy $((b + 3)) $((b + 103)) ;;
	caddy) start_caddy caddy $((b + 4)) $((b + 104)) ;;
	*) die "unknown peer: $1 (want nginx-w1 nginx-auto haproxy caddy)" ;;
	esac
}

# check_http TARGET: the loaded URL must answer 200 with the echo payload.
check_http() {
	local t=$1 url=${T_URL[$1]} body code
	wait_http "$url" 15 "$t" || die "$t not ready at $url (see $WORK/logs/$t.log)"
	body=$(curl -s --max-time 2 -w '\n%{http_code}' "$url")
	code=${body##*$'\n'}
	body=${body%$'\n'*}
	[[ $code == 200 && ${#body} -ge 60 ]] || die "$t: bad response from $url (code $code, ${#body} bytes)"
}

check_grpc() {
	local t=$1
	local hdr=()
	[[ -n ${T_GRPC_HDR[$t]:-} ]] && hdr=(-check-header "${T_GRPC_HDR[$t]}")
	local i
	for ((i = 0; i < 50; i++)); do
		"$WORK/bin/echoapp" -check-grpc "${T_GRPC[$t]}" "${hdr[@]}" >/dev/null 2>&1 && return 0
		sleep 0.2
	done
	"$WORK/bin/echoapp" -check-grpc "${T_GRPC[$t]}" "${hdr[@]}"
	die "$t: gRPC echo through ${T_GRPC[$t]} failed"
}

# ---- load ------------------------------------------------------------------
parse_wrk() { # file -> "rps p50 p90 p99 errors" (ms)
	awk '
	function ms(v) {
		if (v ~ /us$/) return substr(v, 1, length(v) - 2) / 1000
		if (v ~ /ms$/) return substr(v, 1, length(v) - 2) + 0
		if (v ~ /m$/)  return substr(v, 1, length(v) - 1) * 60000
		if (v ~ /s$/)  return substr(v, 1, length(v) - 1) * 1000
		return v + 0
	}
	/Latency Distribution/ { d = 1; next }
	d && $1 == "50%" { p50 = ms($2) }
	d && $1 == "90%" { p90 = ms($2) }
	d && $1 == "99%" { p99 = ms($2) }
	/^Requests\/sec:/ { rps = $2 }
	/Non-2xx or 3xx responses:/ { err += $NF }
	/Socket errors:/ { gsub(",", ""); err += $4 + $6 + $8 + $10 }
	END { printf "%.1f\t%.3f\t%.3f\t%.3f\t%d\n", rps, p50, p90, p99, err }' "$1"
}

# run_load SECTION TARGET ROUND (ROUND 0 = warm-up, not recorded)
run_load() {
	local sec=$1 t=$2 r=$3 dur=$DURATION out try lrc
	((r == 0)) && dur=$WARMUP
	out=$WORK/raw/$sec-$t-r$r.txt
	for ((try = 1; ; try++)); do
		alive "$t" || die "$t died (see $WORK/logs/$t.log)"
		cpu_mark
		local m_b=$CPU_BUSY m_t=$CPU_TOTAL m_o=$OUR_TICKS
		start_load "$sec" "$t" "$dur" "$out"
		((r > 0)) && start_sampler "$t" "load-$sec"
		wait "$LOADPID"
		lrc=$?
		LOADPID=""
		stop_sampler
		foreign_pct "$m_b" "$m_t" "$m_o"
		((lrc == 0)) || log "warning: load generator exited $lrc for $t (see $out)"
		((COOLDOWN > 0)) && sleep "$COOLDOWN"
		((r == 0)) && return 0
		if [[ -n $MAX_NOISE ]] && ((NOISE > MAX_NOISE && try <= NOISE_RETRIES)); then
			log "$sec r$r $t: foreign CPU ${NOISE}% > MAX_NOISE=$MAX_NOISE, repeating (try $try)"
			continue
		fi
		break
	done
	local line
	if [[ $sec == http ]]; then
		line=$(parse_wrk "$out")
	elif [[ $GRPC_TOOL == ghz ]]; then
		line=$(parse_ghz "$out")
	else
		line=$(parse_h2load "$out")
	fi
	printf '%s\t%s\t%s\t%s\t%s\n' "$sec" "$r" "$t" "$line" "$NOISE" >>"$RESULTS"
	# shellcheck disable=SC2086 # $line is split into its fields on purpose
	log "$(printf '%-5s r%-2s %-16s rps %-10s p50 %-7s p90 %-7s p99 %-7s err %-4s foreign-cpu %s%%' "$sec" "$r" "$t" $line "$NOISE")"
}

# start_load SECTION TARGET SECONDS OUTFILE: start the load generator, set LOADPID.
start_load() {
	local sec=$1 t=$2 dur=$3 out=$4
	local -a pre
	read -r -a pre <<<"$(load_prefix)"
	if [[ $sec == http ]]; then
		"${pre[@]}" wrk -t"$THREADS" -c"$CONNS" -d"${dur}s" --latency "${T_URL[$t]}" >"$out" 2>&1 &
	elif [[ $GRPC_TOOL == ghz ]]; then
		local md=()
		if [[ -n ${T_GRPC_HDR[$t]:-} ]]; then
			local k=${T_GRPC_HDR[$t]%%:*} v=${T_GRPC_HDR[$t]#*:}
			md=(--metadata "{\"${k}\":\"${v# }\"}")
		fi
		"${pre[@]}" "$WORK/bin/ghz" --insecure --proto "$BENCH_DIR/echoapp/echo.proto" \
			--call echo.Echo/Echo -d "\"$GRPC_B64\"" "${md[@]}" \
			-c $((GRPC_CONNS * GRPC_STREAMS)) --connections "$GRPC_CONNS" -z "${dur}s" \
			"${T_GRPC[$t]}" >"$out" 2>&1 &
	else
		local hdr=()
		[[ -n ${T_GRPC_HDR[$t]:-} ]] && hdr=(-H "${T_GRPC_HDR[$t]}")
		"${pre[@]}" h2load -t1 -c"$GRPC_CONNS" -m"$GRPC_STREAMS" -D"$dur" \
			-d "$WORK/grpc-request.bin" -H 'content-type: application/grpc' -H 'te: trailers' \
			"${hdr[@]}" --log-file="$out.log" "http://${T_GRPC[$t]}$GRPC_METHOD" >"$out" 2>&1 &
	fi
	LOADPID=$!
}

parse_h2load() { # file -> "rps p50 p90 p99 errors"
	local f=$1 rps err pct
	rps=$(awk '/^finished in/ { print $4 }' "$f")
	err=$(awk '/^requests:/ { e += $10 + $12 + $14 } /^status codes:/ { e += $5 + $7 + $9 } END { print e + 0 }' "$f")
	pct=$(awk -F'\t' '$2 == 200 { print $3 }' "$f.log" 2>/dev/null | sort -n | awk '
		{ a[NR] = $1 }
		function q(p,  i) { i = int(NR * p + 0.999999); if (i < 1) i = 1; return a[i] / 1000 }
		END { if (NR == 0) print "0\t0\t0"; else printf "%.3f\t%.3f\t%.3f\n", q(0.5), q(0.9), q(0.99) }')
	rm -f "$f.log"
	printf '%.1f\t%s\t%s\n' "${rps:-0}" "$pct" "$err"
}

parse_ghz() {
	awk '
	function ms(v, u) {
		if (u ~ /^(us|µs|μs)$/) return v / 1000
		if (u == "s") return v * 1000
		return v + 0
	}
	/Requests\/sec:/ { rps = $2 }
	/^ *50 % in/ { p50 = ms($4, $5) }
	/^ *90 % in/ { p90 = ms($4, $5) }
	/^ *99 % in/ { p99 = ms($4, $5) }
	# errors: everything in "Error distribution" except the in-flight calls that
	# ghz itself cancels when -z runs out ("... is closing")
	/^Error distribution/ { ed = 1; next }
	ed && /^ *\[[0-9]+\]/ && !/is closing/ { n = $1; gsub(/[^0-9]/, "", n); err += n }
	END { printf "%.1f\t%.3f\t%.3f\t%.3f\t%d\n", rps, p50, p90, p99, err }' "$1"
}

prepare_grpc_payload() {
	# gRPC frame: flag 0, length 66, then BytesValue{value: 64 x "x"} (0x0a 0x40 + 64 bytes)
	printf '\x00\x00\x00\x00\x42\x0a\x40' >"$WORK/grpc-request.bin"
	head -c 64 /dev/zero | tr '\0' x >>"$WORK/grpc-request.bin"
	GRPC_B64=$(head -c 64 /dev/zero | tr '\0' x | base64 -w0)
}

# run_section SECTION TARGET...: warm-up each, then ROUNDS interleaved rounds.
run_section() {
	local sec=$1 t r
	shift
	if ((WARMUP > 0)); then
		for t in "$@"; do run_load "$sec" "$t" 0; done
	fi
	for ((r = 1; r <= ROUNDS; r++)); do
		for t in "$@"; do run_load "$sec" "$t" "$r"; done
	done
}

# ---- report ----------------------------------------------------------------
# summarize SECTION "REF1 REF2.." TARGET... : medians over rounds, per-round ratios.
summarize() {
	local sec=$1 refs=$2
	shift 2
	awk -F'\t' -v sec="$sec" -v refs="$refs" -v order="$*" '
	function sortn(a, n,   i, j, v) {
		for (i = 2; i <= n; i++) { v = a[i]; for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
	}
	function med(a, n) { sortn(a, n); if (n == 0) return 0; return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2 }
	$1 == sec { k = $3 SUBSEP $2; rps[k] = $4; p50[k] = $5; p90[k] = $6; p99[k] = $7; err[$3] += $8; nz[k] = $9; if ($2 + 0 > maxr) maxr = $2 + 0 }
	END {
		nt = split(order, T, " "); nr = split(refs, R, " ")
		printf "%-16s %10s %19s %6s %8s %8s %8s", "target", "rps(med)", "rps min..max", "cv%", "p50 ms", "p90 ms", "p99 ms"
		for (j = 1; j <= nr; j++) printf " %10s", "x" R[j]
		printf " %12s %7s %6s\n", "x" R[1] " lo..hi", "noise%", "errors"
		for (i = 1; i <= nt; i++) {
			t = T[i]; n = 0; s = 0; ss = 0; mn = 1e18; mx = 0
			for (r = 1; r <= maxr; r++) if ((t SUBSEP r) in rps) {
				n++; v = rps[t SUBSEP r]; A[n] = v; B[n] = p50[t SUBSEP r]; C[n] = p90[t SUBSEP r]; D[n] = p99[t SUBSEP r]; E[n] = nz[t SUBSEP r]
				s += v; ss += v * v; if (v < mn) mn = v; if (v > mx) mx = v
			}
			if (n == 0) continue
			mean = s / n; var = ss / n - mean * mean; if (var < 0) var = 0
			printf "%-16s %10.0f %9.0f..%-9.0f %6.1f %8.2f %8.2f %8.2f", t, med(A, n), mn, mx, 100 * sqrt(var) / mean, med(B, n), med(C, n), med(D, n)
			for (j = 1; j <= nr; j++) {
				m = 0
				for (r = 1; r <= maxr; r++) if ((t SUBSEP r) in rps && (R[j] SUBSEP r) in rps && rps[R[j] SUBSEP r] > 0) { m++; Q[m] = rps[t SUBSEP r] / rps[R[j] SUBSEP r] }
				if (m) printf " %10.2f", med(Q, m); else printf " %10s", "-"
				if (j == 1) { lo = m ? Q[1] : 0; hi = m ? Q[m] : 0 }   # Q is sorted by med()
			}
			printf " %5.2f..%-5.2f %7.0f %6d\n", lo, hi, med(E, n), err[t]
		}
	}' "$RESULTS"
}

# summary_value SECTION TARGET REF FIELD: median per-round rps ratio (FIELD=ratio) or median p99 (FIELD=p99)
summary_value() {
	awk -F'\t' -v sec="$1" -v t="$2" -v ref="$3" -v f="$4" '
	function med(a, n,   i, j, v) {
		for (i = 2; i <= n; i++) { v = a[i]; for (j = i - 1; j >= 1 && a[j] > v; j--) a[j + 1] = a[j]; a[j + 1] = v }
		if (n == 0) return -1; return (n % 2) ? a[(n + 1) / 2] : (a[n / 2] + a[n / 2 + 1]) / 2
	}
	$1 == sec { rps[$3 SUBSEP $2] = $4; p99[$3 SUBSEP $2] = $7; if ($2 + 0 > maxr) maxr = $2 + 0 }
	END {
		n = 0
		for (r = 1; r <= maxr; r++) {
			if (!((t SUBSEP r) in rps)) continue
			if (f == "p99") { n++; a[n] = p99[t SUBSEP r]; continue }
			if ((ref SUBSEP r) in rps && rps[ref SUBSEP r] > 0) { n++; a[n] = rps[t SUBSEP r] / rps[ref SUBSEP r] }
		}
		v = med(a, n); if (v < 0) print "n/a"; else if (f == "p99") printf "%.2f\n", v; else printf "%.2f\n", v
	}' "$RESULTS"
}

mem_table() { # TARGET...
	[[ $RSS == 1 ]] || return 0
	awk -F'\t' -v order="$*" '
	{ k = $1 SUBSEP $2; if (!(k in rss) || $3 > rss[k]) { rss[k] = $3; pss[k] = $4; np[k] = $5 } }
	function f(t, ph) { k = t SUBSEP ph; return (k in rss) ? sprintf("%7.1f/%-7.1f", rss[k] / 1024, pss[k] / 1024) : sprintf("%15s", "-") }
	END {
		printf "%-16s %5s %15s %15s %15s %15s\n", "target", "procs", "idle(start)", "HTTP load", "gRPC load", "idle(after)"
		n = split(order, T, " ")
		for (i = 1; i <= n; i++) { t = T[i]; printf "%-16s %5s %15s %15s %15s %15s\n", t, np[t SUBSEP "idle-start"], f(t, "idle-start"), f(t, "load-http"), f(t, "load-grpc"), f(t, "idle-after") }
	}' "$MEMFILE"
}

print_env() {
	log "work dir: $WORK"
	echo "# $(date -u +%FT%TZ)  host cpus: $(nproc)  loadavg: $(cut -d' ' -f1-3 /proc/loadavg)"
	echo "# duration ${DURATION}s x ${ROUNDS} rounds (+${WARMUP}s warm-up), wrk -t${THREADS} -c${CONNS}, gRPC ${GRPC_TOOL} c=${GRPC_CONNS} m=${GRPC_STREAMS}, MAX_NOISE=${MAX_NOISE:-off}%, PIN=${PIN}$([[ $PIN == 1 ]] && echo " (load on cpu ${LOAD_CPUS}, servers on cpu ${SERVER_CPUS})")"
	echo "# scheduling: sched_autogroup_enabled=$(cat /proc/sys/kernel/sched_autogroup_enabled 2>/dev/null || echo n/a), SESSIONS=$SESSIONS ($([[ $SESSIONS == 1 ]] && echo "each target in a session of its own" || echo "targets in process groups of the harness's session"))"
	echo "# wrk $(wrk -v 2>&1 | awk 'NR==1{print $2}'), $(h2load --version 2>&1 | head -1), go $(go env GOVERSION 2>/dev/null)"
}
