#!/usr/bin/env bash
# Runs every comparison of BENCHMARKS.md once, on this machine, and prints the
# table (also written to bench/results/<timestamp>.md).
#
# Contenders, each its own process, started and stopped in turn:
#   stock   Caddy (this repository's ./cmd/caddy), site with reverse_proxy only
#   encode  the same binary, encode gzip zstd + reverse_proxy
#   sse     the same binary, encode gzip zstd + sse + reverse_proxy
#   nginx   Debian's nginx, proxy_pass with proxy_buffering off
#   floor   bench/floor: heartbeats written to idle connections from one
#           ticker, no proxy; what a heartbeat costs at the least
# The figures come from the server process's own accounting: VmRSS from
# /proc/<pid>/status and utime+stime from /proc/<pid>/stat (nginx: master and
# workers summed).
#
# Knobs (environment):
#   STREAMS=10000       idle streams for the large memory stage
#   SMALL_STREAMS=1000  idle streams for the small memory stage, and ticking streams for latency
#   ROUNDS=2            rounds of the throughput figure (contenders alternate)
#   LAT_ROUNDS=1        rounds of the latency figure
#   MEM_ROUNDS=1        rounds of the memory figure
#   LAT_WINDOW=25s FLOOD_WINDOW=10s HB_WINDOW=20s SETTLE=5s
#   HB_RATES="1500:1s 3000:5s 9900:15s"   heartbeat figure: streams:interval, sse against the floor
#   HB_GOROUTINES=1500  streams at which goroutines are counted with heartbeats on (1s) and off
#   FLOOD_CONTENDERS="stock encode sse nginx direct"   throughput figure contenders
#   EVENT_PAIRS=5 EVENT_STREAMS=200 EVENT_EVERY=20ms EVENT_WINDOW=10s
#                       events figure: Caddy's CPU per event, stock against sse
#                       (encode + sse), in alternating pairs
#   FIGURES="memory heartbeat latency throughput events gobench"   which figures to run
#   ZSTD=1              also measure memory of stock+encode for a zstd-only client (at SMALL_STREAMS)
#   PIN=1               servers on CPU $SERVER_CPU, load tool and upstream on CPU $CLIENT_CPU
#   SERVER_CPU=1 CLIENT_CPU=0 BENCH_COUNT=5
#   PROFILE=1           save a heap profile of each Caddy contender while it holds $STREAMS streams,
#                       and a CPU profile of stock and sse in the first pair of the events figure
# Small run: STREAMS=1000 SMALL_STREAMS=200 ROUNDS=1 LAT_ROUNDS=1 LAT_WINDOW=5s FLOOD_WINDOW=3s HB_WINDOW=5s SETTLE=2s HB_RATES="300:1s" HB_GOROUTINES=300 bench/run.sh
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$PWD

STREAMS=${STREAMS:-10000}
SMALL_STREAMS=${SMALL_STREAMS:-1000}
ROUNDS=${ROUNDS:-2}
LAT_ROUNDS=${LAT_ROUNDS:-1}
MEM_ROUNDS=${MEM_ROUNDS:-1}
LAT_WINDOW=${LAT_WINDOW:-25s}
FLOOD_WINDOW=${FLOOD_WINDOW:-10s}
HB_WINDOW=${HB_WINDOW:-20s}
SETTLE=${SETTLE:-5s}
FIGURES=${FIGURES:-memory heartbeat latency throughput events gobench}
EVENT_PAIRS=${EVENT_PAIRS:-5}
EVENT_STREAMS=${EVENT_STREAMS:-200}
EVENT_EVERY=${EVENT_EVERY:-20ms}
EVENT_WINDOW=${EVENT_WINDOW:-10s}
ZSTD=${ZSTD:-1}
PIN=${PIN:-1}
SERVER_CPU=${SERVER_CPU:-1}
CLIENT_CPU=${CLIENT_CPU:-0}
BENCH_COUNT=${BENCH_COUNT:-5}
PROFILE=${PROFILE:-1}
HB_RATES=${HB_RATES:-1500:1s 3000:5s 9900:15s}
HB_GOROUTINES=${HB_GOROUTINES:-1500}
FLOOD_CONTENDERS=${FLOOD_CONTENDERS:-stock encode sse nginx direct}

STAMP=$(date -u +%Y%m%dT%H%M%SZ)
RESULTS=$ROOT/bench/results
OUT=$RESULTS/$STAMP
BIN=$RESULTS/bin
mkdir -p "$OUT/json" "$OUT/conf" "$OUT/log" "$BIN"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
has() { [[ " $FIGURES " == *" $1 "* ]]; }

# port_free fails if something already accepts on 127.0.0.1:$1. Caddy binds
# with SO_REUSEPORT, so a stray Caddy left on a contender's port would
# silently take half of its streams.
port_free() {
	if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then
		log "port $1 is already in use by another process: stop it first"
		return 1
	fi
}

# N streams hold 2N sockets in a proxy (client side and upstream side). Go
# raises its soft limit to the hard one by itself, nginx is told with
# worker_rlimit_nofile. Raising the hard limit needs CAP_SYS_RESOURCE; without
# it, STREAMS is capped to what the hard limit allows, and the run says so.
ulimit -Hn 1048576 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
NOFILE=$(ulimit -Hn)
if [[ $NOFILE != unlimited ]] && ((2 * STREAMS + 100 > NOFILE)); then
	capped=$(((NOFILE - 100) / 2 / 100 * 100))
	echo "note: RLIMIT_NOFILE hard limit is $NOFILE and cannot be raised here; STREAMS=$STREAMS capped to $capped (a proxy holds 2 sockets per stream)" >&2
	STREAMS=$capped
fi

if [[ $PIN == 1 ]]; then
	SRV=(taskset -c "$SERVER_CPU")
	CLI=(taskset -c "$CLIENT_CPU")
	NGINX_WORKERS=1
else
	SRV=()
	CLI=()
	NGINX_WORKERS=auto
fi

if ! command -v nginx >/dev/null; then
	log "installing nginx"
	DEBIAN_FRONTEND=noninteractive apt-get install -y nginx >/dev/null
fi

log "building"
go build -o "$BIN/caddy" ./cmd/caddy
go build -C bench -o "$BIN/upstream" ./upstream
go build -C bench -o "$BIN/load" ./load
go build -C bench -o "$BIN/report" ./report
go build -C bench -o "$BIN/floor" ./floor

{
	echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
	echo "nproc: $(nproc)"
	echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')"
	echo "kernel: $(uname -r)"
	echo "go: $(go version | cut -d' ' -f3-)"
	echo "caddy: $("$BIN/caddy" version | cut -d' ' -f1)"
	echo "nginx: $(nginx -v 2>&1 | cut -d/ -f2)"
	echo "pinning: $([[ $PIN == 1 ]] && echo "server on CPU $SERVER_CPU, load tool and upstream on CPU $CLIENT_CPU" || echo none)"
	echo "open files: hard limit $NOFILE"
	echo "knobs: STREAMS=$STREAMS SMALL_STREAMS=$SMALL_STREAMS ROUNDS=$ROUNDS LAT_ROUNDS=$LAT_ROUNDS MEM_ROUNDS=$MEM_ROUNDS LAT_WINDOW=$LAT_WINDOW FLOOD_WINDOW=$FLOOD_WINDOW HB_WINDOW=$HB_WINDOW SETTLE=$SETTLE HB_RATES=\"$HB_RATES\" HB_GOROUTINES=$HB_GOROUTINES FLOOD_CONTENDERS=\"$FLOOD_CONTENDERS\""
	echo "uptime before: $(uptime | sed 's/^ *//')"
} >"$OUT/machine.txt"

# --- processes -------------------------------------------------------------

PIDS=()
cleanup() {
	local p
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null || true
	done
	wait 2>/dev/null || true
}
trap cleanup EXIT

# one upstream serves every contender, on its own port per contender
UP_BASE=19100
for p in $(seq $UP_BASE $((UP_BASE + 9))); do
	port_free "$p"
done
"${CLI[@]}" "$BIN/upstream" -addr "$(seq -s, -f "127.0.0.1:%g" $UP_BASE $((UP_BASE + 9)))" >"$OUT/log/upstream.log" 2>&1 &
UPSTREAM_PID=$!
PIDS+=("$UPSTREAM_PID")

# wait_port waits until something accepts on 127.0.0.1:$1.
wait_port() {
	local i
	for i in $(seq 1 200); do
		if (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	log "nothing listening on port $1"
	return 1
}
wait_port $UP_BASE

# contender settings: listen port, upstream port, admin port
declare -A PORT=([stock]=18081 [encode]=18082 [sse]=18083 [nginx]=18084 [sse_hb1]=18085 [sse_hboff]=18086 [sse_hb]=18087 [floor]=18088)
declare -A UPORT=([stock]=$UP_BASE [encode]=$((UP_BASE + 1)) [sse]=$((UP_BASE + 2)) [nginx]=$((UP_BASE + 3)) [sse_hb1]=$((UP_BASE + 4)) [sse_hboff]=$((UP_BASE + 5)) [sse_hb]=$((UP_BASE + 6)))
declare -A ADMIN=([stock]=12081 [encode]=12082 [sse]=12083 [sse_hb1]=12085 [sse_hboff]=12086 [sse_hb]=12087)

# HB_INTERVAL is the heartbeat interval of the sse_hb and floor contenders.
HB_INTERVAL=15s

caddyfile() {
	local name=$1 extra
	case $name in
	stock) extra="" ;;
	encode) extra="encode gzip zstd" ;;
	sse) extra=$'encode gzip zstd\n\tsse {\n\t\theartbeat 15s\n\t}' ;;
	sse_hb1) extra=$'encode gzip zstd\n\tsse {\n\t\theartbeat 1s\n\t}' ;;
	sse_hboff) extra=$'encode gzip zstd\n\tsse {\n\t\theartbeat off\n\t}' ;;
	sse_hb) extra=$'encode gzip zstd\n\tsse {\n\t\theartbeat '"$HB_INTERVAL"$'\n\t}' ;;
	esac
	cat <<EOF
{
	admin 127.0.0.1:${ADMIN[$name]}
	auto_https off
	persist_config off
	grace_period 1s
	log {
		level ERROR
	}
}

http://127.0.0.1:${PORT[$name]} {
	bind 127.0.0.1
	${extra}
	reverse_proxy 127.0.0.1:${UPORT[$name]}
}
EOF
}

nginxconf() {
	local name=$1 dir=$2
	cat <<EOF
worker_processes $NGINX_WORKERS;
worker_rlimit_nofile $NOFILE;
daemon off;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events {
	worker_connections 32768;
}
http {
	access_log off;
	client_body_temp_path $dir/tmp;
	proxy_temp_path $dir/tmp;
	fastcgi_temp_path $dir/tmp;
	uwsgi_temp_path $dir/tmp;
	scgi_temp_path $dir/tmp;
	server {
		listen 127.0.0.1:${PORT[$name]};
		location / {
			proxy_pass http://127.0.0.1:${UPORT[$name]};
			proxy_http_version 1.1;
			proxy_set_header Connection "";
			proxy_buffering off;
			proxy_read_timeout 1h;
		}
	}
}
EOF
}

# start_server starts contender $1 and sets SPID.
start_server() {
	local name=$1
	port_free "${PORT[$name]}"
	[[ -z ${ADMIN[$name]:-} ]] || port_free "${ADMIN[$name]}"
	if [[ $name == floor ]]; then
		"${SRV[@]}" "$BIN/floor" -addr "127.0.0.1:${PORT[$name]}" -interval "$HB_INTERVAL" >>"$OUT/log/floor.log" 2>&1 &
	elif [[ $name == nginx ]]; then
		local dir=$OUT/conf/nginx
		mkdir -p "$dir/tmp"
		nginxconf "$name" "$dir" >"$dir/nginx.conf"
		"${SRV[@]}" nginx -p "$dir" -c "$dir/nginx.conf" >"$OUT/log/nginx.log" 2>&1 &
	else
		caddyfile "$name" >"$OUT/conf/$name.Caddyfile"
		XDG_CONFIG_HOME=$OUT/conf/xdg XDG_DATA_HOME=$OUT/conf/xdg \
			"${SRV[@]}" "$BIN/caddy" run --adapter caddyfile --config "$OUT/conf/$name.Caddyfile" \
			>>"$OUT/log/$name.log" 2>&1 &
	fi
	SPID=$!
	PIDS+=("$SPID")
	wait_port "${PORT[$name]}"
}

stop_server() {
	kill "$SPID" 2>/dev/null || true
	wait "$SPID" 2>/dev/null || true
	sleep 1
}

# load runs the load tool against contender $1 (path $2), writes JSON to $3;
# the rest are load tool flags.
load() {
	local name=$1 path=$2 out=$3
	shift 3
	local url=http://127.0.0.1:$((UP_BASE + 9))$path
	[[ $name != direct ]] && url=http://127.0.0.1:${PORT[$name]}$path
	if ! "${CLI[@]}" "$BIN/load" -url "$url" "$@" >"$out" 2>"$out.err"; then
		log "load $name $path failed: $(tail -c 600 "$out.err")"
		return 1
	fi
}

# alternate contender order from round to round
order() {
	local round=$1
	shift
	if ((round % 2 == 1)); then
		printf '%s\n' "$@"
	else
		printf '%s\n' "$@" | tac
	fi
}

AE="gzip, zstd"

if has memory; then
	for r in $(seq 1 "$MEM_ROUNDS"); do
		contenders=(stock encode sse nginx)
		for c in $(order "$r" "${contenders[@]}"); do
			log "memory r$r $c: quiet streams ${SMALL_STREAMS},${STREAMS}"
			start_server "$c"
			prof=()
			if [[ $PROFILE == 1 && -n ${ADMIN[$c]:-} ]]; then
				# a heap profile while the last stage is held (gc=1 collects first);
				# the load tool samples the memory again after it
				prof=(-fetch "http://127.0.0.1:${ADMIN[$c]}/debug/pprof/heap?gc=1" -fetch-out "$OUT/heap-$c-r$r.pprof")
			fi
			load "$c" /quiet "$OUT/json/memory-$c-r$r.json" -stages "$SMALL_STREAMS,$STREAMS" \
				-ae "$AE" -pid "$SPID" -settle "$SETTLE" -window 0 "${prof[@]}" || true
			stop_server
		done
		if [[ $ZSTD == 1 ]]; then
			log "memory r$r encode, zstd-only client"
			start_server encode
			load encode /quiet "$OUT/json/memory-encode_zstd-r$r.json" -stages "$SMALL_STREAMS" \
				-ae "zstd" -pid "$SPID" -settle "$SETTLE" -window 0 || true
			stop_server
		fi
	done
fi

if has heartbeat; then
	# CPU per heartbeat, sse against the floor, at each rate; the two
	# alternate in order from rate to rate
	i=0
	for rate in $HB_RATES; do
		n=${rate%%:*}
		HB_INTERVAL=${rate#*:}
		i=$((i + 1))
		for c in $(order "$i" sse_hb floor); do
			log "heartbeat $c: $n quiet streams at $HB_INTERVAL, $HB_WINDOW"
			start_server "$c"
			load "$c" /quiet "$OUT/json/heartbeat-${c}_${HB_INTERVAL}_$n.json" -stages "$n" -ae "$AE" -pid "$SPID" \
				-settle "$SETTLE" -window "$HB_WINDOW" || true
			stop_server
		done
	done
	# goroutines of Caddy holding the same idle streams, heartbeats on and off
	for c in sse_hb1 sse_hboff; do
		log "goroutines $c: $HB_GOROUTINES quiet streams"
		start_server "$c"
		load "$c" /quiet "$OUT/json/goroutines-$c.json" -stages "$HB_GOROUTINES" -ae "$AE" -pid "$SPID" \
			-settle "$SETTLE" -window 0 -fetch "http://127.0.0.1:${ADMIN[$c]}/debug/pprof/goroutine?debug=1" \
			-fetch-out "$OUT/goroutines-$c.txt" || true
		stop_server
	done
fi

if has latency; then
	for r in $(seq 1 "$LAT_ROUNDS"); do
		for c in $(order "$r" stock encode sse nginx); do
			log "latency r$r $c: $SMALL_STREAMS ticking streams, $LAT_WINDOW"
			start_server "$c"
			load "$c" /tick "$OUT/json/latency-$c-r$r.json" -stages "$SMALL_STREAMS" -ae "$AE" -pid "$SPID" \
				-settle 3s -window "$LAT_WINDOW" || true
			stop_server
		done
	done
fi

if has throughput; then
	for r in $(seq 1 "$ROUNDS"); do
		# shellcheck disable=SC2086 # a list of names
		for c in $(order "$r" $FLOOD_CONTENDERS); do
			log "throughput r$r $c: one flooding stream, $FLOOD_WINDOW"
			if [[ $c == direct ]]; then
				load direct /flood "$OUT/json/throughput-direct-r$r.json" -n 1 -warmup 0 -ae "$AE" \
					-settle 1s -window "$FLOOD_WINDOW" || true
				continue
			fi
			start_server "$c"
			load "$c" /flood "$OUT/json/throughput-$c-r$r.json" -n 1 -warmup 1 -ae "$AE" -pid "$SPID" \
				-settle 1s -window "$FLOOD_WINDOW" || true
			stop_server
		done
	done
fi

if has events; then
	# LLM-like token rates: every event its own upstream write. A pair is one
	# run of each contender, back to back, in alternating order; the report
	# takes the median of the pairs' ratios
	for r in $(seq 1 "$EVENT_PAIRS"); do
		for c in $(order "$r" stock sse); do
			log "events pair $r $c: $EVENT_STREAMS streams, an event every $EVENT_EVERY, $EVENT_WINDOW"
			start_server "$c"
			# with PROFILE=1, the first pair also takes a CPU profile of
			# each contender, before its measurement window
			prof=()
			if [[ $PROFILE == 1 && $r == 1 ]]; then
				prof=(-fetch "http://127.0.0.1:${ADMIN[$c]}/debug/pprof/profile?seconds=8" -fetch-out "$OUT/cpu-events-$c.pprof")
			fi
			load "$c" "/tick?every=$EVENT_EVERY" "$OUT/json/events-$c-r$r.json" -stages "$EVENT_STREAMS" -ae "$AE" -pid "$SPID" \
				-settle 2s -window "$EVENT_WINDOW" "${prof[@]}" || true
			stop_server
		done
	done
fi

if has gobench; then
	log "go test -bench='BenchmarkWrite|BenchmarkBeat'"
	if ls ./*_bench_test.go >/dev/null 2>&1 && grep -q 'func BenchmarkWrite' ./*_bench_test.go; then
		"${SRV[@]}" go test -run='^$' -bench='BenchmarkWrite|BenchmarkBeat' -benchmem -count="$BENCH_COUNT" . >"$OUT/gobench.txt" 2>&1 ||
			log "go test -bench failed: $(tail -5 "$OUT/gobench.txt")"
	else
		log "no BenchmarkWrite in this tree: hot-path figures left out"
	fi
fi

echo "uptime after: $(uptime | sed 's/^ *//')" >>"$OUT/machine.txt"
"$BIN/report" -dir "$OUT" | tee "$RESULTS/$STAMP.md"
log "raw results in $OUT, table in $RESULTS/$STAMP.md"
