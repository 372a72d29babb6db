#!/usr/bin/env bash
# Benchmark matrix: pool-server (release build) side by side with the C reference servers of
# ../shared/bench-ref (cref, cref_framed; compiled here if gcc exists) and the seed's PHP server
# (oneshot 16 B rows, if php exists), every row under the same load from pool-bench, one server
# at a time, each started fresh, measured, and stopped with SIGINT. Then pool-server alone:
#   memory  master and worker RSS (/proc/PID/status) idle and with 10,000 idle framed connections
#   scale   framed 1-deep throughput with 8 busy connections against 1000, same server
#   skew    --dispatch modes (every value `pool-server help serve` lists) under 5 % 20 ms jobs, framed
#           with 2 workers, framed and tagged with a pool sized to the requests in flight
#   sizes   framed 8×16 echo throughput for payloads from 16 B to the largest message
#
# Prints a markdown table and writes it, with the machine and the exact commands, to
# docs/benchmarks.md. Leaves no process, queue or socket behind, even on failure or Ctrl-C.
#
#   BENCH_PARTS     comma-separated parts to run (default matrix,memory,scale,skew,sizes); a part
#                   left out is reported as not run
#   BENCH_DURATION  seconds measured per row, server and round (default 2)
#   BENCH_WARMUP    seconds of unmeasured load before each measurement (default 0.3)
#   BENCH_ROUNDS    measurements per cell, servers alternating; the median (by ok replies/s) is
#                   reported (default 3: on a shared machine one slow spell can otherwise decide a
#                   row; BENCH_ROUNDS=1 BENCH_DURATION=3 is the quick variant)
#   BENCH_OUTPUT    where to write the report (default docs/benchmarks.md)
#   BENCH_PART_DURATION, BENCH_PART_ROUNDS  seconds per measurement and rounds (median shown) of
#                   the memory/scale/skew/sizes parts (default 2 and 1)
#   BENCH_MEM_CONNECTIONS    idle connections of the memory part (default 10000)
#   BENCH_SCALE_CONNECTIONS  busy connections compared with 8 in the scale part (default 1000)
#   BENCH_SKEW_SETUPS        protocol:workers:loads of the skew part, a load being connections×depth
#                            (default "framed:2:8x4,4x1,2x1 framed:36:8x4 tagged:36:8x4,4x1")
#   BENCH_DISPATCH           dispatch modes to compare (default: every value of --dispatch)
#   BENCH_BUSY_POLL  the matrix also runs pool-server with --busy-poll SECONDS (default 0.00005;
#                   0: not run), in the same rounds, as a table of its own
#   BENCH_STATIC    1 (default): build with --static-swift-stdlib, as for deployment (one binary,
#                   no Swift runtime libraries to map: about 3 MiB less RSS per process); 0: the
#                   plain `swift build -c release`
set -euo pipefail
SCRIPT_START=$SECONDS
cd "$(dirname "$0")/.."
ROOT=$PWD
# The code measured: the commit, and whether the tree had changes besides (the doc itself aside).
COMMIT=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ $COMMIT != unknown && -n $(git -C "$ROOT" status --porcelain --untracked-files=no -- . ':!docs/benchmarks.md' 2>/dev/null) ]]; then
    COMMIT+=" (with uncommitted changes)"
fi
DURATION=${BENCH_DURATION:-2}
WARMUP=${BENCH_WARMUP:-0.3}
ROUNDS=${BENCH_ROUNDS:-3}
OUTPUT=${BENCH_OUTPUT:-docs/benchmarks.md}
TIMEOUT=3            # pool-bench: seconds without a reply before a request counts as a timeout
WORKERS=2
IDLE=1000
PARTS=${BENCH_PARTS:-matrix,memory,scale,skew,sizes}
PART_DURATION=${BENCH_PART_DURATION:-2}
PART_ROUNDS=${BENCH_PART_ROUNDS:-1}
MEM_CONNECTIONS=${BENCH_MEM_CONNECTIONS:-10000}
MEM_HOLD=4           # seconds the memory part's connections stay open (sampled right after opening)
MEM_TARGET_KB=$((16 * 1024))
SCALE_CONNECTIONS=${BENCH_SCALE_CONNECTIONS:-1000}
SKEW="5:sleep:20"
BUSY_POLL=${BENCH_BUSY_POLL:-0.00005}
# POLLS: 1 when the matrix also runs the --busy-poll server (BENCH_BUSY_POLL above 0).
POLLS=$(awk -v v="$BUSY_POLL" 'BEGIN { if (v !~ /^[0-9]*\.?[0-9]+([eE][-+]?[0-9]+)?$/) print "bad"; else if (v + 0 > 0.01) print "bad"; else print (v + 0 > 0) }')
SKEW_SETUPS=${BENCH_SKEW_SETUPS:-framed:$WORKERS:8x4,4x1,2x1 framed:36:8x4 tagged:36:8x4,4x1}
REF_DIR="$ROOT/../shared/bench-ref"
SEED_PHP="$ROOT/../shared/seed/server.php"

log() { printf '%s\n' "$*" >&2; }
command -v jq >/dev/null || { log "bench.sh needs jq (apt-get install jq)"; exit 2; }
command -v ps >/dev/null || { log "bench.sh needs ps (apt-get install procps)"; exit 2; }
for part in ${PARTS//,/ }; do
    case $part in matrix|memory|scale|skew|sizes) ;; *) log "BENCH_PARTS: unknown part '$part' (matrix,memory,scale,skew,sizes)"; exit 2 ;; esac
done
part() { [[ ",$PARTS," == *",$1,"* ]]; }
[[ $POLLS != bad ]] || { log "BENCH_BUSY_POLL: '$BUSY_POLL' is not a number of seconds from 0 to 0.01"; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pool-bench.XXXXXX")
SERVER_PID=""        # the running server's master; started with setsid, so also its process group
SERVER_PIDS=""       # every pid seen in that server's session (master + workers), for queue clean-up
SERVER_SOCKET=""
SERVER_KIND=""
SERVER_QUEUES=""     # the running pool-server's queues, from its state file
QUEUES_BEFORE=""     # msqids that existed before that server started
STARTED_PIDS=""      # every master started, checked at the end
SERVER_NOFILE=""     # when set, the soft descriptor limit the next server starts with
HOLD_PID=""          # the memory part's pool-bench --hold, running in the background
OUR_QUEUES=""        # every queue id a pool-server of ours recorded in its state file

queue_ids() { awk 'NR > 1 { print $2 }' /proc/sysvipc/msg | sort -n; }

start_time() {       # a process's start (clock ticks after boot), /proc/PID/stat field 22
    local stat
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 0
    stat=${stat##*) }
    # shellcheck disable=SC2086  # split into fields on purpose: field 22 is the 20th after ")"
    set -- $stat
    echo "${20}"
}

running() {          # a pid that exists and is not a zombie
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $state && $state != Z* ]]
}

# is_pool KIND — KIND is a pool-server (the default one, or `poll`: with --busy-poll).
is_pool() { [[ $1 == pool || $1 == poll ]]; }

session_pids() { ps -o pid= -s "$1" 2>/dev/null | tr -s ' \n' ' ' || true; }

stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    local pid=$SERVER_PID waited=0 patience=20
    SERVER_PIDS="$SERVER_PIDS $(session_pids "$pid")"
    kill -INT "$pid" 2>/dev/null || true
    # pool-server drains for up to --shutdown-timeout (3 s here); the refs and PHP stop at once
    # or (a deadlocked cref_framed) never.
    is_pool "$SERVER_KIND" && patience=60
    while running "$pid" && (( waited < patience )); do sleep 0.1; waited=$((waited + 1)); done
    if running "$pid"; then
        log "  $SERVER_KIND (pid $pid) did not stop within $((patience / 10)) s of SIGINT: SIGKILL to its process group"
        kill -KILL -- "-$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
    # Workers of the refs and of PHP do not die with their master: end whatever is left of the group.
    if kill -0 -- "-$pid" 2>/dev/null; then
        log "  $SERVER_KIND left processes in its group: SIGKILL"
        kill -KILL -- "-$pid" 2>/dev/null || true
        sleep 0.2
    fi
    # Queues that appeared since this server started and that its processes used.
    local line id lspid lrpid p
    while read -r line; do
        read -r _ id _ _ _ lspid lrpid _ <<<"$line"
        grep -qx "$id" <<<"$QUEUES_BEFORE" && continue
        for p in $SERVER_PIDS; do
            if [[ $p == "$lspid" || $p == "$lrpid" ]]; then
                log "  removing queue $id left by $SERVER_KIND"
                ipcrm -q "$id" 2>/dev/null || true
                break
            fi
        done
    done < <(awk 'NR > 1' /proc/sysvipc/msg)
    if is_pool "$SERVER_KIND"; then
        "$BIN/pool-server" cleanup --socket "$SERVER_SOCKET" >/dev/null 2>&1 || true
        for id in $SERVER_QUEUES; do
            if awk -v id="$id" 'NR > 1 && $2 == id { found = 1 } END { exit !found }' /proc/sysvipc/msg; then
                log "  removing queue $id recorded by pool-server"
                ipcrm -q "$id" 2>/dev/null || true
            fi
        done
    fi
    rm -f "$SERVER_SOCKET" "$SERVER_SOCKET.state"
    SERVER_PID=""
    SERVER_PIDS=""
    SERVER_QUEUES=""
}

cleanup() {
    local status=$?
    # Ignored, not default: a second Ctrl-C must not cut the clean-up short (a reference server's
    # workers do not die with their master, and its queues outlive both).
    trap '' INT TERM
    trap - EXIT
    if [[ -n $HOLD_PID ]]; then kill -TERM "$HOLD_PID" 2>/dev/null || true; wait "$HOLD_PID" 2>/dev/null || true; fi
    stop_server || true
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Descriptors: 1000 idle connections on both ends in the matrix (the servers inherit this soft
# limit); the memory part raises the soft limit towards the hard one (30000 if we may raise it).
hard=$(ulimit -Hn)
# Raised only: a hard limit already higher stays (lowering it would cap the memory part).
if [[ $hard != unlimited ]] && (( hard < 30000 )); then ulimit -Hn 30000 2>/dev/null || true; fi
hard=$(ulimit -Hn)
if [[ $hard == unlimited ]] || (( hard >= 8192 )); then ulimit -Sn 8192; else ulimit -Sn "$hard"; fi
(( $(ulimit -n) > IDLE + 100 )) || log "warning: ulimit -n is $(ulimit -n); the idle row needs more than $((IDLE + 100))"

BUILD=(swift build -c release)
[[ ${BENCH_STATIC:-1} == 1 ]] && BUILD+=(--static-swift-stdlib)
log "building: ${BUILD[*]}"
# Others may be editing the sources: "modified during the build" is worth another try.
for attempt in 1 2 3; do
    if "${BUILD[@]}" >"$TMP/build.log" 2>&1; then cat "$TMP/build.log" >&2; break; fi
    cat "$TMP/build.log" >&2
    if (( attempt < 3 )) && grep -q 'modified during the build' "$TMP/build.log"; then
        log "a source changed during the build: building again"
        sleep 2
        continue
    fi
    exit 1
done
BIN=$("${BUILD[@]}" --show-bin-path)

HAVE_REF=0
if command -v gcc >/dev/null && [[ -f $REF_DIR/cref.c ]]; then
    gcc -O2 -o "$TMP/cref" "$REF_DIR/cref.c"
    gcc -O2 -o "$TMP/cref_framed" "$REF_DIR/cref_framed.c"
    HAVE_REF=1
else
    log "no gcc (or no $REF_DIR): reference columns left empty"
fi
HAVE_PHP=0
PHP_MODULES=$(php -m 2>/dev/null || true)
if command -v php >/dev/null && [[ -f $SEED_PHP ]] && grep -qx pcntl <<<"$PHP_MODULES" \
    && grep -qx sysvmsg <<<"$PHP_MODULES" && grep -qx sockets <<<"$PHP_MODULES"; then
    HAVE_PHP=1
else
    log "no php with pcntl, sysvmsg and sockets (or no seed): PHP columns left empty"
fi
mkdir -p "$TMP/php" "$TMP/logs"

# start_server KIND SOCKET DIR COMMAND... — start in its own session, wait for the socket.
start_server() {
    SERVER_KIND=$1 SERVER_SOCKET=$2
    local dir=$3 waited=0
    shift 3
    rm -f "$SERVER_SOCKET"
    QUEUES_BEFORE=$(queue_ids)
    (if [[ -n $SERVER_NOFILE ]]; then ulimit -Sn "$SERVER_NOFILE"; fi
     cd "$dir" && exec setsid "$@" >"$TMP/logs/$SERVER_KIND.out" 2>"$TMP/logs/$SERVER_KIND.err" </dev/null) &
    SERVER_PID=$!
    STARTED_PIDS="$STARTED_PIDS $SERVER_PID:$(start_time "$SERVER_PID")"
    while [[ ! -S $SERVER_SOCKET ]]; do
        if ! running "$SERVER_PID" || (( waited >= 100 )); then
            log "  $SERVER_KIND did not come up: $*"
            tail -n 5 "$TMP/logs/$SERVER_KIND.err" >&2 || true
            stop_server
            return 1
        fi
        sleep 0.1
        waited=$((waited + 1))
    done
    sleep 0.3    # bind happens just before listen; let the workers settle too
    SERVER_PIDS=$(session_pids "$SERVER_PID")
    if is_pool "$SERVER_KIND" && [[ -f $SERVER_SOCKET.state ]]; then
        SERVER_QUEUES=$(sed -n 's/^queue=\([0-9]*\):.*/\1/p' "$SERVER_SOCKET.state" | tr '\n' ' ')
        OUR_QUEUES="$OUR_QUEUES $SERVER_QUEUES"
    fi
    if [[ $SERVER_KIND == pool && -z ${QUEUE_BYTES:-} ]]; then
        QUEUE_BYTES=$(grep -o 'queue-bytes=[0-9]*' "$TMP/logs/pool.err" | head -n 1 | cut -d= -f2 || true)
    fi
}

# The matrix: label | protocol | connections | depth | payload bytes | idle connections
ROWS=(
    "oneshot ack, 1 conn|oneshot|1|1|16|0"
    "oneshot ack, 8 conn|oneshot|8|1|16|0"
    "framed echo 1×1|framed|1|1|16|0"
    "framed echo 8×1|framed|8|1|16|0"
    "framed echo 1×16|framed|1|16|16|0"
    "framed echo 8×16|framed|8|16|16|0"
    "oneshot ack, 1 conn|oneshot|1|1|4096|0"
    "oneshot ack, 8 conn|oneshot|8|1|4096|0"
    "framed echo 1×1|framed|1|1|4096|0"
    "framed echo 8×1|framed|8|1|4096|0"
    "framed echo 1×16|framed|1|16|4096|0"
    "framed echo 8×16|framed|8|16|4096|0"
    "framed echo 8×1 + $IDLE idle|framed|8|1|16|$IDLE"
)

# A command line for the report: quoted, with $TMP and $BIN for the temporary and build paths.
quote() {
    local out="" a
    for a in "$@"; do out+="${out:+ }$(printf '%q' "$a")"; done
    out=${out//$TMP/\$TMP}
    [[ -n ${BIN:-} ]] && out=${out//$BIN/\$BIN}
    printf '%s' "${out//$ROOT\//}"
}
COMMANDS=()

# bench_args ROW — pool-bench's arguments for a row (but the socket and pid) into BENCH_ARGS.
bench_args() {
    local protocol connections depth payload idle check
    IFS='|' read -r _ protocol connections depth payload idle <<<"${ROWS[$1]}"
    # oneshot rows are ack mode (the reply is ok); framed rows echo, and every body is checked.
    [[ $protocol == oneshot ]] && check=(--expect ok) || check=(--verify)
    BENCH_ARGS=(--protocol "$protocol" --connections "$connections")
    [[ $protocol == framed ]] && BENCH_ARGS+=(--depth "$depth")
    BENCH_ARGS+=(--payload "$payload" --duration "$DURATION" --warmup "$WARMUP" --timeout "$TIMEOUT" "${check[@]}")
    if (( idle > 0 )); then BENCH_ARGS+=(--idle-connections "$idle"); fi
}

# run_bench JSON LABEL SECONDS ARGS... — pool-bench (--json --quiet, --server-pid) against the
# running server, measuring SECONDS; its JSON in JSON, or {"failed": true}.
run_bench() {
    local json=$1 label=$2 seconds=$3
    shift 3
    # --foreground: pool-bench stays in our process group, so a Ctrl-C reaches it at once.
    timeout --foreground $(( ${seconds%.*} + ${WARMUP%.*} + 4 * TIMEOUT + 60 )) \
        "$BIN/pool-bench" --socket "$SERVER_SOCKET" --server-pid "$SERVER_PID" --json --quiet "$@" \
        >"$json" 2>"$TMP/logs/bench.err" || true
    if ! jq -e .requests_per_second "$json" >/dev/null 2>&1; then
        log "  $label: pool-bench failed: $(tail -n 2 "$TMP/logs/bench.err" | tr '\n' ' ')"
        echo '{"failed": true}' >"$json"
        return 0
    fi
    log "  $label: $(jq -r '"\(.requests_per_second | floor) req/s, p50 \(.latency_us.p50) us, p99 \(.latency_us.p99) us"
        + (if .latency_non_skew_us then ", non-skew p50 \(.latency_non_skew_us.p50) us, p99 \(.latency_non_skew_us.p99) us" else "" end)
        + ", errors \(.errors_total), server \(.server.cpu_us_per_request) us/req"' "$json")"
}

# measure ROW KIND ROUND — run pool-bench against the running server; JSON in
# $TMP/r$ROW-$KIND-$ROUND.json.
measure() {
    local row=$1 kind=$2 round=$3
    bench_args "$row"
    run_bench "$TMP/r$row-$kind-$round.json" "$kind$( (( ROUNDS > 1 )) && printf ' #%s' "$round")" \
        "$DURATION" "${BENCH_ARGS[@]}"
}

# run_server ROW KIND ROUND SOCKET DIR COMMAND... — start, measure, stop; a server that does not
# come up leaves a failed cell.
run_server() {
    local row=$1 kind=$2 round=$3 socket=$4 dir=$5
    shift 5
    if (( round == 1 )); then COMMANDS+=("    $kind: $(quote "$@")"); fi
    if start_server "$kind" "$socket" "$dir" "$@"; then
        measure "$row" "$kind" "$round"
        stop_server
    else
        echo '{"failed": true, "reason": "did not start"}' >"$TMP/r$row-$kind-$round.json"
    fi
}

# median ROW KIND — the round with the median ok replies/s (of two, the better) becomes $TMP/r$ROW-$KIND.json,
# with p50_median_us added: the median of the rounds' p50s (null if a round stalled), which the p50
# targets judge (the round with the median throughput need not have the median p50).
median() {
    local files=("$TMP/r$1-$2-"*.json)
    [[ -f ${files[0]} ]] || return 0
    jq -s '(map(select((.ok // 0) == 0 or (.unanswered // 0) > 0)) | length) as $stalled
        | (length) as $rounds
        | (map(.latency_us.p50 // null) | sort) as $p50s
        | (if $stalled > 0 or ($p50s | length) == 0 then null
           elif ($p50s | length) % 2 == 1 then $p50s[($p50s | length) / 2 | floor]
           else ($p50s[($p50s | length) / 2 - 1] + $p50s[($p50s | length) / 2]) / 2 end) as $p50
        | sort_by(.ok_per_second // 0) | .[length / 2 | floor] + {stalled_rounds: $stalled, rounds: $rounds, p50_median_us: $p50}' \
        "${files[@]}" >"$TMP/r$1-$2.json"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START_TIME=$(date -u '+%Y-%m-%d %H:%M UTC')
if part matrix; then
    for row in "${!ROWS[@]}"; do
        IFS='|' read -r label protocol connections depth payload idle <<<"${ROWS[$row]}"
        log "row $((row + 1))/${#ROWS[@]}: $label, $payload B"
        bench_args "$row"
        COMMANDS+=("- $label, $payload B: pool-bench --socket SOCKET --server-pid PID $(quote "${BENCH_ARGS[@]}")")
        pool=("$BIN/pool-server" --socket "$TMP/pool.sock" --workers "$WORKERS" --shutdown-timeout 3)
        if [[ $protocol == oneshot ]]; then
            pool+=(--handler echo)
        else
            pool+=(--protocol framed --reply result --handler echo)
        fi
        (( idle > 0 )) && pool+=(--idle-timeout 600)
        ref=cref; [[ $protocol == framed ]] && ref=cref_framed
        kinds=(pool)
        (( POLLS )) && kinds+=(poll)
        (( HAVE_REF )) && kinds+=(ref)
        (( HAVE_PHP )) && [[ $protocol == oneshot ]] && (( payload <= 1000 )) && kinds+=(php)
        for ((round = 1; round <= ROUNDS; round++)); do
            # The servers' order rotates each round, so what drifts over a row's rounds (another
            # job on the machine, a warming cache) does not always land on the same server.
            for ((i = 0; i < ${#kinds[@]}; i++)); do
                case ${kinds[(i + round - 1) % ${#kinds[@]}]} in
                pool) run_server "$row" pool "$round" "$TMP/pool.sock" "$ROOT" "${pool[@]}" ;;
                poll) run_server "$row" poll "$round" "$TMP/pool.sock" "$ROOT" "${pool[@]}" --busy-poll "$BUSY_POLL" ;;
                ref) run_server "$row" ref "$round" "$TMP/ref.sock" "$TMP" "$TMP/$ref" "$TMP/ref.sock" "$WORKERS" ;;
                php) run_server "$row" php "$round" "$TMP/php/pool.sock" "$TMP/php" php "$SEED_PHP" ;;
                esac
            done
        done
        for kind in pool poll ref php; do median "$row" "$kind"; done
    done
fi
LOAD_AFTER_MATRIX=$(cut -d' ' -f1-3 /proc/loadavg)
# --- pool-server alone: memory, scale, skew, sizes ------------------------------------------------
PART_COMMANDS=()     # the parts' commands, for the report
JQ_DEFS='def lat: if . == null then "–" elif . < 1000 then "\(. | round) µs" else "\((. / 10 | round) / 100) ms" end;
def rps: if . == null then "–" elif . >= 1000 then "\((. / 100 | round) / 10)k" else "\(. | round)" end;
def cpu: if . == null then "–" else "\((. * 10 | round) / 10) µs" end;
def errs: if .failed then "pool-bench failed"
    elif (.errors_total // 0) == 0 then "0"
    else [.errors | to_entries[] | "\(.value) × \(.key)"] | join(", ") end;'


# pick_median OUT KEY FILES... — the round with the median KEY (a jq expression) becomes OUT.
pick_median() {
    local out=$1 key=$2
    shift 2
    jq -s "sort_by($key) | .[length / 2 | floor] + {rounds: length}" "$@" >"$out"
}

# pick_rounds PREFIX KEY — of the rounds PREFIX-N.json, the median by KEY becomes PREFIX.json.
pick_rounds() {
    local files=("$1-"*.json)
    if [[ -f ${files[0]} ]]; then pick_median "$1.json" "$2" "${files[@]}"; fi
}

status_kb() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status" 2>/dev/null || true; }

# mem_sample STAGE — the running pool-server's master VmRSS and VmHWM, its open descriptors and
# each worker's VmRSS (kB), into $TMP/mem-STAGE as "rss|hwm|fds|worker worker…".
mem_sample() {
    local pid=$SERVER_PID workers="" w rss
    for w in $(ps -o pid= --ppid "$pid" 2>/dev/null); do
        rss=$(status_kb "$w" VmRSS)
        [[ -n $rss ]] && workers+="${workers:+ }$rss"
    done
    echo "$(status_kb "$pid" VmRSS)|$(status_kb "$pid" VmHWM)|$(ls "/proc/$pid/fd" 2>/dev/null | wc -l)|$workers" >"$TMP/mem-$1"
    log "  $1: master VmRSS $(cut -d'|' -f1 "$TMP/mem-$1") kB (peak $(cut -d'|' -f2 "$TMP/mem-$1") kB), $(cut -d'|' -f3 "$TMP/mem-$1") descriptors; workers $workers kB"
}

pool_framed=("$BIN/pool-server" --socket "$TMP/pool.sock" --workers "$WORKERS" --shutdown-timeout 3
             --protocol framed --reply result --handler echo)

if part memory; then
    log "memory: master and worker RSS, idle and with $MEM_CONNECTIONS idle framed connections"
    need=$((MEM_CONNECTIONS + 200))
    hard=$(ulimit -Hn)
    MEM_NOTE=""
    if [[ $hard != unlimited ]] && (( hard < need )); then
        MEM_NOTE="the hard descriptor limit is $hard, so only $((hard - 200)) connections instead of $MEM_CONNECTIONS"
        log "  warning: $MEM_NOTE"
        MEM_CONNECTIONS=$((hard - 200))
        need=$hard
    fi
    MEM_NOFILE=$need
    pool=("${pool_framed[@]}" --max-connections 20000 --idle-timeout 600)
    hold=("$BIN/pool-bench" --socket "$TMP/pool.sock" --hold "$MEM_HOLD" --idle-connections "$MEM_CONNECTIONS"
          --ready-file "$TMP/hold.ready" --timeout "$TIMEOUT" --json --quiet)
    PART_COMMANDS+=("- memory (descriptor soft limit $MEM_NOFILE for both):"
        "    pool: $(quote "${pool[@]}")"
        "    connections: $(quote "${hold[@]}")")
    SERVER_NOFILE=$MEM_NOFILE
    if start_server pool "$TMP/pool.sock" "$ROOT" "${pool[@]}"; then
        SERVER_NOFILE=""
        sleep 0.5
        mem_sample idle
        rm -f "$TMP/hold.ready"
        (ulimit -Sn "$MEM_NOFILE"; exec "${hold[@]}") >"$TMP/hold.json" 2>"$TMP/logs/hold.err" &
        HOLD_PID=$!
        waited=0
        while [[ ! -s $TMP/hold.ready ]] && running "$HOLD_PID" && (( waited < 600 )); do sleep 0.1; waited=$((waited + 1)); done
        if [[ -s $TMP/hold.ready ]]; then
            # connect() returns once the connection is in the listen backlog: wait until the master
            # holds them all (its descriptors), at most 10 s.
            base=$(cut -d'|' -f3 "$TMP/mem-idle")
            waited=0
            while (( $(ls "/proc/$SERVER_PID/fd" 2>/dev/null | wc -l) < base + MEM_CONNECTIONS )) && (( waited < 100 )); do
                sleep 0.1; waited=$((waited + 1))
            done
            sleep 0.3
            mem_sample held
        else
            log "  pool-bench --hold did not open its connections: $(tail -n 2 "$TMP/logs/hold.err" | tr '\n' ' ')"
        fi
        wait "$HOLD_PID" 2>/dev/null || true
        HOLD_PID=""
        sleep 0.5
        mem_sample after
        stop_server
    fi
    SERVER_NOFILE=""
fi

if part scale; then
    log "scale: framed 1-deep, 8 against $SCALE_CONNECTIONS busy connections"
    for ((round = 1; round <= PART_ROUNDS; round++)); do
        # A fresh server per round, both loads on it (8 first).
        start_server pool "$TMP/pool.sock" "$ROOT" "${pool_framed[@]}" || continue
        for c in 8 "$SCALE_CONNECTIONS"; do
            args=(--protocol framed --connections "$c" --depth 1 --payload 16 --duration "$PART_DURATION"
                  --warmup "$WARMUP" --timeout "$TIMEOUT" --verify)
            (( round == 1 )) && PART_COMMANDS+=("- scale, $c connections: pool-bench --socket SOCKET --server-pid PID $(quote "${args[@]}")")
            run_bench "$TMP/scale-$c-$round.json" "$c conn$( (( PART_ROUNDS > 1 )) && printf ' #%s' "$round")" "$PART_DURATION" "${args[@]}"
        done
        stop_server
    done
    PART_COMMANDS+=("    pool (one per round, both loads): $(quote "${pool_framed[@]}")")
    for c in 8 "$SCALE_CONNECTIONS"; do
        pick_rounds "$TMP/scale-$c" '.ok_per_second // 0'
    done
fi

if part skew; then
    if [[ -n ${BENCH_DISPATCH:-} ]]; then
        DISPATCH_MODES=${BENCH_DISPATCH//,/ }
    else
        # Every value the server lists for --dispatch now (others may add some), round-robin first.
        listed=$("$BIN/pool-server" help serve 2>/dev/null | tr '\n' ' ' | tr -s ' ' \
                 | grep -o -- '--dispatch <dispatch>.*' | grep -o 'values: [^;)]*' | head -n 1 | sed 's/values: //; s/,/ /g' || true)
        [[ -n $listed ]] || listed="round-robin least-busy"
        DISPATCH_MODES="round-robin"
        for m in $listed; do [[ $m == round-robin ]] || DISPATCH_MODES+=" $m"; done
    fi
    log "skew: --skew $SKEW, dispatch: $DISPATCH_MODES; protocol:workers:loads $SKEW_SETUPS"
    for setup in $SKEW_SETUPS; do
        IFS=: read -r proto skew_workers loads <<<"$setup"
        loads=${loads//,/ }
        for mode in $DISPATCH_MODES; do
            pool=("$BIN/pool-server" --socket "$TMP/pool.sock" --workers "$skew_workers" --shutdown-timeout 3
                  --protocol "$proto" --reply result --handler sim --dispatch "$mode")
            PART_COMMANDS+=("- skew, $proto, $skew_workers workers, $mode: $(quote "${pool[@]}")")
            for ((round = 1; round <= PART_ROUNDS; round++)); do
                start_server pool "$TMP/pool.sock" "$ROOT" "${pool[@]}" || continue
                for load in $loads; do
                    c=${load%x*} d=${load#*x}
                    args=(--protocol "$proto" --connections "$c" --depth "$d" --payload 16 --skew "$SKEW"
                          --duration "$PART_DURATION" --warmup "$WARMUP" --timeout "$TIMEOUT" --verify)
                    if [[ $mode == round-robin ]] && (( round == 1 )); then
                        PART_COMMANDS+=("    load ${c}×$d (every mode, one server per mode and round): pool-bench --socket SOCKET --server-pid PID $(quote "${args[@]}")")
                    fi
                    run_bench "$TMP/skew-$setup-$mode-$load-$round.json" "$proto/$skew_workers $mode ${c}×$d$( (( PART_ROUNDS > 1 )) && printf ' #%s' "$round")" "$PART_DURATION" "${args[@]}"
                done
                stop_server
            done
            for load in $loads; do
                pick_rounds "$TMP/skew-$setup-$mode-$load" '.latency_non_skew_us.p99 // 1e18'
            done
        done
    done
fi

MSGMAX=$(cat /proc/sys/kernel/msgmax)
SIZES="16 256 1024 4096 $((MSGMAX - 16))"
if part sizes; then
    log "sizes: framed echo 8×16, payloads $SIZES"
    PART_COMMANDS+=("- sizes: $(quote "${pool_framed[@]}") (one per round, every size)")
    for ((round = 1; round <= PART_ROUNDS; round++)); do
        start_server pool "$TMP/pool.sock" "$ROOT" "${pool_framed[@]}" || continue
        for size in $SIZES; do
            args=(--protocol framed --connections 8 --depth 16 --payload "$size" --duration "$PART_DURATION"
                  --warmup "$WARMUP" --timeout "$TIMEOUT" --verify)
            (( round == 1 )) && PART_COMMANDS+=("    $size B: pool-bench --socket SOCKET --server-pid PID $(quote "${args[@]}")")
            run_bench "$TMP/size-$size-$round.json" "$size B$( (( PART_ROUNDS > 1 )) && printf ' #%s' "$round")" "$PART_DURATION" "${args[@]}"
        done
        stop_server
    done
    for size in $SIZES; do
        pick_rounds "$TMP/size-$size" '.ok_per_second // 0'
    done
fi
LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- the report ---------------------------------------------------------------------------------
cell() {   # cell ROW KIND FIELD: rps | p50 | p99 | cpu
    local json="$TMP/r$1-$2.json"
    [[ -f $json ]] || { printf '–'; return; }
    jq -r --arg f "$3" '
        def lat: if . == null then "–" elif . < 1000 then "\(. | round) µs" else "\((. / 10 | round) / 100) ms" end;
        if .failed then (if $f == "rps" then "failed" else "–" end)
        elif .ok == 0 then (if $f == "rps" then "stalled" else "–" end)
        elif $f == "rps" then
            (if .requests_per_second >= 1000 then "\((.requests_per_second / 100 | round) / 10)k" else "\(.requests_per_second | round)" end)
            + (if .unanswered > 0 then " (stalled: \(.unanswered) unanswered)"
               elif .errors_total > 0 then " (\(.errors_total) err)" else "" end)
            + (if (.stalled_rounds // 0) > 0 and .unanswered == 0
               then " (stalled in \(.stalled_rounds) of \(.rounds) rounds)" else "" end)
        elif $f == "p50" then .latency_us.p50 | lat
        elif $f == "p99" then .latency_us.p99 | lat
        elif $f == "cpu" then (if .server.cpu_us_per_request == null or .unanswered > 0 then "–" else "\((.server.cpu_us_per_request * 10 | round) / 10) µs" end)
        else "?" end' "$json"
}
ratio() {  # ratio ROW OTHER [KIND]: KIND's (default pool) req/s ÷ OTHER's
    local a="$TMP/r$1-${3:-pool}.json" b="$TMP/r$1-$2.json"
    [[ -f $a && -f $b ]] || { printf '–'; return; }
    jq -rn --slurpfile a "$a" --slurpfile b "$b" '
        if ($a[0].ok // 0) > 0 and ($b[0].ok // 0) > 0 and $a[0].unanswered == 0 and $b[0].unanswered == 0
        then "\((($a[0].ok_per_second / $b[0].ok_per_second) * 100 | round) / 100)×" else "–" end'
}
size() { (( $1 >= 1024 )) && echo "$(( $1 / 1024 )) KiB" || echo "$1 B"; }
p50_ratio() {  # p50_ratio ROW KIND OTHER: KIND's p50 ÷ OTHER's, or – when either has none
    local a="$TMP/r$1-$2.json" b="$TMP/r$1-$3.json"
    [[ -f $a && -f $b ]] || { printf '–'; return; }
    jq -rn --slurpfile a "$a" --slurpfile b "$b" '
        if ($a[0].ok // 0) > 0 and ($b[0].ok // 0) > 0 and $a[0].unanswered == 0 and $b[0].unanswered == 0
        then "\((($a[0].latency_us.p50 / $b[0].latency_us.p50) * 100 | round) / 100)×" else "–" end'
}

TABLE=$(
    echo "| load | payload | pool req/s | pool p50 | pool p99 | ref req/s | ref p50 | ref p99 | pool/ref | PHP req/s | PHP p50 | PHP p99 | pool/PHP |"
    echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"
    for row in "${!ROWS[@]}"; do
        IFS='|' read -r label protocol _ _ payload _ <<<"${ROWS[$row]}"
        printf '| %s | %s |' "$label" "$(size "$payload")"
        for kind in pool ref php; do
            printf ' %s | %s | %s |' "$(cell "$row" $kind rps)" "$(cell "$row" $kind p50)" "$(cell "$row" $kind p99)"
            [[ $kind == pool ]] || printf ' %s |' "$(ratio "$row" $kind)"
        done
        echo
    done
)
CPU_TABLE=$(
    echo "| load | payload | pool | ref | PHP |"
    echo "|---|---|--:|--:|--:|"
    for row in "${!ROWS[@]}"; do
        IFS='|' read -r label _ _ _ payload _ <<<"${ROWS[$row]}"
        echo "| $label | $(size "$payload") | $(cell "$row" pool cpu) | $(cell "$row" ref cpu) | $(cell "$row" php cpu) |"
    done
)
BUSY_TABLE=$(
    echo "| load | payload | req/s | p50 | p99 | req/s ÷ ref | p50 ÷ ref | req/s ÷ pool | p50 ÷ pool | CPU/request: pool → --busy-poll |"
    echo "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|"
    for row in "${!ROWS[@]}"; do
        IFS='|' read -r label _ _ _ payload _ <<<"${ROWS[$row]}"
        printf '| %s | %s | %s | %s | %s |' "$label" "$(size "$payload")" \
            "$(cell "$row" poll rps)" "$(cell "$row" poll p50)" "$(cell "$row" poll p99)"
        printf ' %s | %s | %s | %s |' "$(ratio "$row" ref poll)" "$(p50_ratio "$row" poll ref)" \
            "$(ratio "$row" pool poll)" "$(p50_ratio "$row" poll pool)"
        echo " $(cell "$row" pool cpu) → $(cell "$row" poll cpu) |"
    done
)
ERRORS=$(
    for row in "${!ROWS[@]}"; do
        IFS='|' read -r label _ _ _ payload _ <<<"${ROWS[$row]}"
        for json in "$TMP/r$row-"{pool,poll,ref,php}-*.json; do
            [[ -f $json ]] || continue
            kind=${json##*/r$row-}; kind=${kind%.json}; round=${kind##*-}; kind=${kind%-*}
            jq -r --arg where "$label, $(size "$payload"), $kind$( (( ROUNDS > 1 )) && printf ', round %s' "$round")" '
                if .failed then "- \($where): \(.reason // "pool-bench failed")"
                elif .errors_total > 0 then "- \($where): " + ([.errors | to_entries[] | "\(.value) × \(.key)"] | join(", "))
                else empty end,
                if (.idle_closed_by_server // 0) > 0
                then "- \($where): \(.idle_closed_by_server) of \(.idle_connections) idle connections closed by the server"
                else empty end' "$json"
        done
    done
)

# ORDER — framed replies out of request order per server, summed over the matrix's rounds (pool-bench
# --verify matches each reply to its own request by the stamp in its payload, and counts those that
# overtook an older request).
ORDER=$(
    for kind in pool poll ref; do
        files=()
        for row in "${!ROWS[@]}"; do
            for json in "$TMP/r$row-$kind-"*.json; do
                [[ -f $json && ! $json =~ -$kind\.json$ ]] && jq -e '.out_of_order != null' "$json" >/dev/null 2>&1 && files+=("$json")
            done
        done
        (( ${#files[@]} > 0 )) || continue
        jq -rs --arg kind "$kind" '"\($kind): \(map(.out_of_order) | add) of \(map(.ok) | add) ok framed replies"' "${files[@]}"
    done | paste -sd ';' | sed 's/;/; /g'
)

# rounds_table CELL — the table of every round: CELL is a jq expression turning one round's JSON
# into its cell (rounds in the order run: files sorted by round number, not by name).
rounds_table() {
    if (( POLLS )); then
        echo "| load | payload | pool | pool --busy-poll | ref | PHP |"
        echo "|---|---|--:|--:|--:|--:|"
    else
        echo "| load | payload | pool | ref | PHP |"
        echo "|---|---|--:|--:|--:|"
    fi
    for row in "${!ROWS[@]}"; do
        IFS='|' read -r label _ _ _ payload _ <<<"${ROWS[$row]}"
        printf '| %s | %s |' "$label" "$(size "$payload")"
        for kind in "${ROUND_KINDS[@]}"; do
            files=("$TMP/r$row-$kind-"*.json)
            if [[ -f ${files[0]} ]]; then
                mapfile -t files < <(printf '%s\n' "${files[@]}" | sort -V)
                printf ' %s |' "$(jq -rs "$JQ_DEFS map(if (.ok // 0) == 0 then \"stalled\" else ($1)
                    + (if .unanswered > 0 then \" (stalled)\" else \"\" end) end) | join(\" · \")" "${files[@]}")"
            else
                printf ' – |'
            fi
        done
        echo
    done
}
ROUND_KINDS=(pool ref php)
(( POLLS )) && ROUND_KINDS=(pool poll ref php)
# --- the parts' report ----------------------------------------------------------------------------
mib() { awk -v kb="$1" 'BEGIN { if (kb == "") print "–"; else printf "%.1f MiB", kb / 1024 }'; }
mib2() { awk -v kb="$1" 'BEGIN { if (kb == "") print "–"; else printf "%.2f MiB", kb / 1024 }'; }
verdict() { if [[ $1 == 1 ]]; then echo "met"; elif [[ $1 == 0 ]]; then echo "**not met**"; else echo "no result"; fi; }
# jqf FILE EXPR [JQ OPTIONS...] — EXPR (with the JQ_DEFS helpers) of a part's JSON, or – without one
jqf() { local file=$1 expr=$2; shift 2; if [[ -f $file ]]; then jq -r "$@" "$JQ_DEFS $expr" "$file"; else printf '–'; fi; }
# p99_ratio A B KEY [DIGITS] — A's .KEY.p99 over B's, to DIGITS decimals (2), or – when either is missing
# or either run had an error: a request that timed out is not in the histogram, so a mode that lets
# its slow requests time out would otherwise read fast.
p99_ratio() {
    jq -rn --slurpfile a "$1" --slurpfile b "$2" --arg k "$3" --argjson digits "${4:-2}" '
        def clean(r): (r.ok // 0) > 0 and (r.unanswered // 1) == 0 and (r.errors_total // 1) == 0;
        if clean($a[0]) and clean($b[0]) and ($a[0][$k].p99 // null) != null and ($b[0][$k].p99 // 0) > 0
        then ($a[0][$k].p99 / $b[0][$k].p99 * pow(10; $digits) | round) / pow(10; $digits) else "–" end'
}
# ok_ratio A B — A's ok replies/s ÷ B's, unrounded ("" if either failed or stalled)
ok_ratio() {
    [[ -f $1 && -f $2 ]] || return 0
    jq -rn --slurpfile a "$1" --slurpfile b "$2" '
        if ($a[0].ok // 0) > 0 and ($b[0].ok // 0) > 0 and $a[0].unanswered == 0 and $b[0].unanswered == 0
        then $a[0].ok_per_second / $b[0].ok_per_second else empty end'
}
# two NUMBER — NUMBER to 2 decimals, for display (verdicts judge the unrounded value)
two() { awk -v v="$1" 'BEGIN { printf "%.2f", v }'; }
TARGETS=()           # "| target | this run | verdict |" rows

# matrix_target TEXT KIND CHECK THRESHOLD LOAD... — a target of item 3 over the matrix rows LOAD
# ("label|payload"), for KIND (pool, or poll = --busy-poll): CHECK rps (KIND's ok replies/s ÷
# ref's ≥ THRESHOLD on every row, the rounds with the median ok replies/s) or p50 (the median of
# KIND's rounds' p50s ÷ the same of ref's ≤ THRESHOLD on every row). Judged on
# the exact ratio, shown to 2 decimals; a row that missed makes it "not met", else a row without a
# result (failed, stalled) "no result".
matrix_target() {
    local text=$1 kind=$2 check=$3 threshold=$4 load row label payload value values="" missed=0 missing=0
    shift 4
    for load in "$@"; do
        value=""
        for row in "${!ROWS[@]}"; do
            IFS='|' read -r label _ _ _ payload _ <<<"${ROWS[$row]}"
            [[ "$label|$payload" == "$load" ]] || continue
            local a="$TMP/r$row-$kind.json" b="$TMP/r$row-ref.json"
            [[ -f $a && -f $b ]] || continue
            # A p50 needs every round answered (the median's p50 is null after a stall); a
            # throughput only the median round's ok replies. A pool-server that stalled where the
            # reference did not misses the target; a reference that stalled gives no result.
            value=$(jq -rn --slurpfile a "$a" --slurpfile b "$b" --arg check "$check" '
                def measured(r): (r.ok // 0) > 0 and r.unanswered == 0
                    and ($check == "rps" or (r.p50_median_us // 0) > 0);
                if measured($b[0]) | not then empty
                elif measured($a[0]) | not then "stalled"
                elif $check == "rps" then $a[0].ok_per_second / $b[0].ok_per_second
                else $a[0].p50_median_us / $b[0].p50_median_us end' || true)
        done
        local where="${load%%|*} $(size "${load##*|}")"
        if [[ -z $value ]]; then missing=1; values+="${values:+, }$where: no result"; continue; fi
        if [[ $value == stalled ]]; then missed=1; values+="${values:+, }$where: pool-server stalled"; continue; fi
        values+="${values:+, }$where: $(awk -v v="$value" 'BEGIN { printf "%.2f", v }')×"
        if [[ $check == rps ]]; then
            awk -v v="$value" -v t="$threshold" 'BEGIN { exit !(v >= t) }' || missed=1
        else
            awk -v v="$value" -v t="$threshold" 'BEGIN { exit !(v <= t) }' || missed=1
        fi
    done
    local met=1
    if (( missed )); then met=0; elif (( missing )); then met=""; fi
    TARGETS+=("| $text | $values | $(verdict "$met") |")
}
if part matrix && (( HAVE_REF )); then
    for kind in pool poll; do
        [[ $kind == poll ]] && (( ! POLLS )) && continue
        with=""; [[ $kind == poll ]] && with=", with \`--busy-poll $BUSY_POLL\`"
        matrix_target "oneshot/ack throughput ≥ 1.0× the reference's$with" "$kind" rps 1.0 \
            "oneshot ack, 1 conn|16" "oneshot ack, 8 conn|16" "oneshot ack, 1 conn|4096" "oneshot ack, 8 conn|4096"
        matrix_target "framed 1×1 p50 latency ≤ 1.1× the reference's$with" "$kind" p50 1.1 \
            "framed echo 1×1|16" "framed echo 1×1|4096"
        matrix_target "framed 8×16 throughput ≥ 1.5× the reference's (16 B: at 4 KiB the reference stalls)$with" "$kind" rps 1.5 \
            "framed echo 8×16|16"
    done
fi

MEM_SECTION="Not run (BENCH_PARTS=$PARTS)."
if part memory && [[ -f $TMP/mem-idle ]]; then
    mem_row() {
        local label=$1 file="$TMP/mem-$2" rss hwm fds workers w list=""
        [[ -f $file ]] || { echo "| $label | – | – | – | – |"; return; }
        IFS='|' read -r rss hwm fds workers <"$file"
        for w in $workers; do list+="${list:+, }$(mib "$w")"; done
        echo "| $label | $(mib "$rss") | $(mib "$hwm") | $fds | ${list:-–} |"
    }
    held_rss=""; idle_rss=$(cut -d'|' -f1 "$TMP/mem-idle")
    [[ -f $TMP/mem-held ]] && held_rss=$(cut -d'|' -f1 "$TMP/mem-held")
    closed=$(jq -r '.idle_closed_by_server // "?"' "$TMP/hold.json" 2>/dev/null || echo "?")
    open_s=$(jq -r '.open_s // "?"' "$TMP/hold.json" 2>/dev/null || echo "?")
    held_fds=""; idle_fds=$(cut -d'|' -f3 "$TMP/mem-idle")
    [[ -f $TMP/mem-held ]] && held_fds=$(cut -d'|' -f3 "$TMP/mem-held")
    if [[ -n $held_rss ]] && { (( held_fds < idle_fds + MEM_CONNECTIONS )) || [[ $closed != 0 ]]; }; then
        # Fewer connections held than the target names: its RSS says nothing about the target.
        met=""; per="?"
        TARGETS+=("| master RSS with $MEM_CONNECTIONS idle framed connections ≤ 16 MiB | $held_rss kB, but the master held $((held_fds - idle_fds)) connections ($closed closed by it) | no result |")
    elif [[ -n $held_rss ]]; then
        met=$(( held_rss <= MEM_TARGET_KB ? 1 : 0 ))
        per=$(awk -v a="$held_rss" -v b="$idle_rss" -v n="$MEM_CONNECTIONS" 'BEGIN { printf "%.2f", (a - b) * 1024 / n / 1024 }')
        TARGETS+=("| master RSS with $MEM_CONNECTIONS idle framed connections ≤ 16 MiB | $held_rss kB = $(mib2 "$held_rss") (idle: $(mib "$idle_rss")) | $(verdict "$met") |")
    else
        met=""; per="?"
        TARGETS+=("| master RSS with $MEM_CONNECTIONS idle framed connections ≤ 16 MiB | connections not opened | no result |")
    fi
    {
        echo "pool-server \`--protocol framed --reply result --handler echo --workers $WORKERS --max-connections 20000"
        echo "--idle-timeout 600\`, descriptor soft limit $MEM_NOFILE. VmRSS and VmHWM (peak RSS) from \`/proc/PID/status\`;"
        echo "the master's descriptors from \`/proc/PID/fd\` (they show the connections were accepted, not just queued"
        echo "in the listen backlog). The connections are opened by \`pool-bench --hold\` (no load: connect, hold"
        echo "$MEM_HOLD s, close); sampled 0.5 s after start, once the master holds every connection, and 0.5 s after"
        echo "they closed."
        echo
        echo "| state | master VmRSS | master VmHWM | master descriptors | each worker's VmRSS |"
        echo "|---|--:|--:|--:|--:|"
        mem_row "idle, just started" idle
        mem_row "$MEM_CONNECTIONS idle connections open" held
        mem_row "after they closed" after
        echo
        echo "- Target: master RSS ≤ 16 MiB ($MEM_TARGET_KB kB) with $MEM_CONNECTIONS idle connections: ${held_rss:-?} kB = $(mib2 "$held_rss") — $(verdict "$met")."
        echo "  That is about $per KiB of master memory per idle connection over the idle master."
        echo "- The $MEM_CONNECTIONS connections were opened in $open_s s; $closed of them were closed by the server"
        echo "  while held (expected 0)."
        [[ -n $MEM_NOTE ]] && echo "- Note: $MEM_NOTE (\`ulimit -Hn\` cannot be raised here)."
        echo "- Workers do not see connections (the master owns them), so their RSS should not move."
    } >"$TMP/section-mem.md"
    MEM_SECTION=$(cat "$TMP/section-mem.md")
fi

SCALE_SECTION="Not run (BENCH_PARTS=$PARTS)."
if part scale; then
    r=$(ok_ratio "$TMP/scale-$SCALE_CONNECTIONS.json" "$TMP/scale-8.json")
    if [[ -n $r ]]; then
        met=$(jq -n "if $r >= 0.8 then 1 else 0 end")
        r=$(two "$r")
        TARGETS+=("| framed 1-deep, $SCALE_CONNECTIONS busy connections ≥ 0.8× the req/s of 8 | ${r}× | $(verdict "$met") |")
    else
        met=""
        TARGETS+=("| framed 1-deep, $SCALE_CONNECTIONS busy connections ≥ 0.8× the req/s of 8 | no ratio (failed or stalled) | no result |")
    fi
    cpu_r=$(jq -rn --slurpfile a "$TMP/scale-$SCALE_CONNECTIONS.json" --slurpfile b "$TMP/scale-8.json" \
        'if $a[0].server.cpu_us_per_request and $b[0].server.cpu_us_per_request
         then ($a[0].server.cpu_us_per_request / $b[0].server.cpu_us_per_request * 100 | round) / 100 else "?" end' 2>/dev/null || echo "?")
    {
        echo "One pool-server (\`--protocol framed --reply result --handler echo --workers $WORKERS\`) per round, 8"
        echo "connections then $SCALE_CONNECTIONS, each connection keeping 1 request of 16 B in flight; $PART_DURATION s"
        echo "measured after $WARMUP s of warm-up, $PART_ROUNDS round(s)$( (( PART_ROUNDS > 1 )) && printf ', the median (by ok replies/s) shown')."
        echo
        echo "| busy connections | req/s | p50 | p99 | server CPU / req | client CPU / req | errors |"
        echo "|--:|--:|--:|--:|--:|--:|---|"
        for c in 8 "$SCALE_CONNECTIONS"; do
            echo "| $c | $(jqf "$TMP/scale-$c.json" 'if .failed then "failed" else "\(.requests_per_second | rps) | \(.latency_us.p50 | lat) | \(.latency_us.p99 | lat) | \(.server.cpu_us_per_request | cpu) | \(.client_cpu_us_per_request | cpu) | \(errs)" end') |"
        done
        echo
        echo "- Target: $SCALE_CONNECTIONS connections ≥ 0.8× the ok replies/s of 8: ${r:-?}× — $(verdict "$met")."
        echo "  Server CPU per request, $SCALE_CONNECTIONS ÷ 8: ${cpu_r}× (above 1: each request costs the server more with"
        echo "  $SCALE_CONNECTIONS connections)."
        echo "- pool-bench runs one thread per connection: with $SCALE_CONNECTIONS threads on the same 2 cores the"
        echo "  client's own scheduling cost is part of what is measured (its CPU per request is in the table);"
        echo "  server CPU per request is the less client-dependent comparison."
    } >"$TMP/section-scale.md"
    SCALE_SECTION=$(cat "$TMP/section-scale.md")
fi

SKEW_SECTION="Not run (BENCH_PARTS=$PARTS)."
if part skew; then
    {
        echo "pool-server \`--reply result --handler sim --dispatch MODE\` with each protocol and pool size below (one"
        echo "server per mode$( (( PART_ROUNDS > 1 )) && printf ' and round'), every load on it), pool-bench \`--skew $SKEW\`: 5 % of requests are"
        echo "\`sleep:20\` (the worker sleeps 20 ms), the rest 16 B echoed at once. Dispatch modes: the values"
        echo "\`pool-server help serve\` listed for \`--dispatch\` in this run ($DISPATCH_MODES). Latency columns are of the"
        echo "non-skew requests only; \"÷ rr\" is that p99 divided by round-robin's at the same load and setup."
        echo "$PART_DURATION s per cell after $WARMUP s of warm-up, $PART_ROUNDS round(s)$( (( PART_ROUNDS > 1 )) && printf ', the median by non-skew p99 shown')."
        for setup in $SKEW_SETUPS; do
            IFS=: read -r proto skew_workers loads <<<"$setup"
            for load in ${loads//,/ }; do
                c=${load%x*} d=${load#*x}
                echo
                echo "### $proto, $skew_workers workers: ${c} connections × $d in flight"
                echo
                echo "| dispatch | req/s (all) | non-skew p50 | non-skew p99 | p99 ÷ rr | p99 of all | not behind: share | not behind: p99 | ÷ rr | errors |"
                echo "|---|--:|--:|--:|--:|--:|--:|--:|--:|---|"
                rr="$TMP/skew-$setup-round-robin-$load.json"
                best="" best_exact="" best_mode="" clear_best="" clear_best_exact="" clear_mode=""
                for mode in $DISPATCH_MODES; do
                    f="$TMP/skew-$setup-$mode-$load.json"
                    ratio="–" clear_ratio="–" exact="–" clear_exact="–"
                    if [[ -f $f && -f $rr ]]; then
                        ratio=$(p99_ratio "$f" "$rr" latency_non_skew_us)
                        clear_ratio=$(p99_ratio "$f" "$rr" latency_non_skew_clear_us)
                        # The best is chosen on the unrounded ratio: two modes at "0.01×" still differ.
                        exact=$(p99_ratio "$f" "$rr" latency_non_skew_us 9)
                        clear_exact=$(p99_ratio "$f" "$rr" latency_non_skew_clear_us 9)
                    fi
                    if [[ $mode != round-robin && $exact != "–" ]] && { [[ -z $best ]] || jq -en "$exact < $best_exact" >/dev/null; }; then
                        best=$ratio best_exact=$exact best_mode=$mode
                    fi
                    if [[ $mode != round-robin && $clear_exact != "–" ]] && { [[ -z $clear_best ]] || jq -en "$clear_exact < $clear_best_exact" >/dev/null; }; then
                        clear_best=$clear_ratio clear_best_exact=$clear_exact clear_mode=$mode
                    fi
                    echo "| $mode | $(jqf "$f" 'if .failed then "failed | – | –" else "\(.requests_per_second | rps) | \(.latency_non_skew_us.p50 | lat) | \(.latency_non_skew_us.p99 | lat)" end') | $( [[ $ratio == "–" ]] && echo "–" || echo "${ratio}×") | $(jqf "$f" 'if .failed then "–" else .latency_us.p99 | lat end') | $(jqf "$f" 'if (.latency_non_skew_clear_us // null) == null or .latency_non_skew_us.count == 0 then "– | –" else "\((1 - .latency_non_skew_clear_us.count / .latency_non_skew_us.count) * 100 | round) % | \(.latency_non_skew_clear_us.p99 | lat)" end') | $( [[ $clear_ratio == "–" ]] && echo "–" || echo "${clear_ratio}×") | $(jqf "$f" 'errs') |"
                done
                echo
                if [[ -n $best ]]; then
                    met=$(jq -n "if $best_exact <= 0.2 then 1 else 0 end")
                    echo "Best: $best_mode at ${best}× round-robin's non-skew p99 (target ≤ 0.2×): $(verdict "$met")."
                    TARGETS+=("| skew ${c}×$d, $proto, $skew_workers workers: best dispatch's non-skew p99 ≤ 0.2× round-robin's | $best_mode ${best}× | $(verdict "$met") |")
                    if [[ -n $clear_best ]]; then
                        echo "Of the non-skew requests not sent behind a sleep job on their own connection: $clear_mode at ${clear_best}×"
                        echo "round-robin's p99 (the wait the dispatch decides; the others wait for the sleep job ahead of them)."
                        TARGETS+=("| (diagnostic) skew ${c}×$d, $proto, $skew_workers workers: the same for non-skew requests not behind a sleep job on their connection | $clear_mode ${clear_best}× | not a target |")
                    fi
                else
                    echo "No ratio (a run failed, or only round-robin was measured)."
                    TARGETS+=("| skew ${c}×$d, $proto, $skew_workers workers: best dispatch's non-skew p99 ≤ 0.2× round-robin's | no ratio | no result |")
                fi
            done
        done
        echo
        echo "- Offered load: a request costs on average 5 % × 20 ms = 1 ms of worker time in sleep jobs against"
        echo "  about 0.1 ms of work for the others, so a closed-loop connection with 1 request in flight keeps"
        echo "  about 0.9 worker busy, and nearly all of the requests in flight at any moment are sleep jobs."
        echo "  With 2 workers, 8×4 and 4×1 offer more than the pool can serve: every worker is asleep most of"
        echo "  the time, so a short request waits whichever worker is chosen. Only 2×1 leaves a worker free"
        echo "  most of the time — there least-busy or shared can send a short request to the worker that is"
        echo "  not sleeping, which round-robin cannot."
        echo "- Framed responses come in request order per connection, so with depth 4 a short request pipelined"
        echo "  behind a sleep job on its own connection waits for it whatever the dispatch: about 1 − 0.95³ ≈ 14 %"
        echo "  of the short requests at 8×4, which puts their p99 at ≥ 20 ms for every mode. The tagged protocol"
        echo "  answers each request when it completes, so that wait is gone. The *not behind* columns (framed"
        echo "  only) measure it: *share* is the part of the short requests pool-bench sent while a sleep job was"
        echo "  in flight before them on their connection; *p99* is that of the others, whose wait the dispatch"
        echo "  decides, and *÷ rr* compares it with round-robin's."
        echo "- A sleep job stands for I/O: the pool is sized to the requests in flight (36 ≥ 8 × 4 workers, as"
        echo "  PHP-FPM's max_children is sized to concurrency, not cores). Then shared and least-busy hand a"
        echo "  short request to a worker that is not sleeping, while round-robin still queues it behind a"
        echo "  sleep job in the next worker's queue."
    } >"$TMP/section-skew.md"
    SKEW_SECTION=$(cat "$TMP/section-skew.md")
fi

SIZES_SECTION="Not run (BENCH_PARTS=$PARTS)."
if part sizes; then
    {
        echo "pool-server \`--protocol framed --reply result --handler echo --workers $WORKERS\` (one per round, every size"
        echo "on it), pool-bench framed, 8 connections × 16 in flight, every reply checked. $((MSGMAX - 16)) B is the largest"
        echo "message (kernel.msgmax $MSGMAX − the 16-byte record header). MB/s is payload bytes × ok replies/s (one"
        echo "way, 10⁶ bytes; the echo carries as much back). $PART_DURATION s per cell after $WARMUP s of warm-up."
        echo
        echo "| payload | req/s | MB/s | p50 | p99 | server CPU / req | errors |"
        echo "|--:|--:|--:|--:|--:|--:|---|"
        for size in $SIZES; do
            echo "| $size B | $(jqf "$TMP/size-$size.json" 'if .failed then "failed | – | – | – | – | –" else "\(.requests_per_second | rps) | \((.ok_per_second * $size / 1e5 | round) / 10) | \(.latency_us.p50 | lat) | \(.latency_us.p99 | lat) | \(.server.cpu_us_per_request | cpu) | \(errs)" end' --argjson size "$size") |"
        done
        echo
        echo "- The queues hold ${QUEUE_BYTES:-?} bytes each (16 KiB without CAP_SYS_RESOURCE): one message of the"
        echo "  largest size per queue, so at that size the master holds the rest in its backlog."
    } >"$TMP/section-sizes.md"
    SIZES_SECTION=$(cat "$TMP/section-sizes.md")
fi

CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
{
    echo "# Benchmarks"
    echo
    echo "Written by \`scripts/bench.sh\` on $START_TIME at commit $COMMIT (parts: $PARTS; the whole script took $((SECONDS - SCRIPT_START)) s)."
    echo "The matrix: pool-server (release) beside the reference"
    echo "servers of \`../shared/bench-ref\` (\`cref\` for oneshot, \`cref_framed\` for framed; C, same architecture,"
    echo "no error handling: a floor, not a design) and the seed's PHP server, each row measured back to back"
    echo "with the same load from \`pool-bench\`. Then pool-server alone: memory with 10,000 idle connections,"
    echo "throughput with 1000 busy connections, dispatch under skewed job lengths, payload sizes."
    echo "The machine is shared and noisy (other jobs run on it, and client and servers share its 2 cores):"
    echo "compare the columns of one row, not one run with another, and re-run before drawing conclusions from"
    echo "a single cell. The new parts run 1 short round each by default, so their numbers are the noisiest here."
    echo
    echo "## Machine"
    echo
    echo "- $(nproc) cores: $CPU_MODEL; kernel $(uname -r); $(swift --version 2>/dev/null | head -n 1)"
    echo "- $( (( HAVE_REF )) && gcc --version | head -n 1 || echo "no gcc (no reference servers)"); $( (( HAVE_PHP )) && php -v | head -n 1 || echo "no php (no seed server)")"
    if [[ -n ${MEM_NOFILE:-} ]]; then
        echo "- descriptor limits (soft/hard): $(ulimit -Sn)/$(ulimit -Hn) for every server and pool-bench (in the memory part: soft"
        echo "  $MEM_NOFILE)"
    else
        echo "- descriptor limits (soft/hard): $(ulimit -Sn)/$(ulimit -Hn) for every server and pool-bench"
    fi
    echo "- load average (1, 5, 15 min) before: $LOAD_BEFORE; after the matrix: $LOAD_AFTER_MATRIX; at the end: $LOAD_AFTER"
    echo "  (it counts runnable threads, other users' included: the scale part's $SCALE_CONNECTIONS client threads raise the"
    echo "  last figure, and a bench run that ended minutes before raises the first)"
    echo "- kernel.msgmax $(cat /proc/sys/kernel/msgmax), kernel.msgmnb $(cat /proc/sys/kernel/msgmnb) (the refs' queue size);"
    echo "  pool-server's queues: ${QUEUE_BYTES:-?} bytes (it asks for 1 MiB, which needs CAP_SYS_RESOURCE)"
    echo "- client and servers on the same cores; matrix: $DURATION s measured per cell after $WARMUP s of warm-up,"
    echo "  $ROUNDS round(s) per cell, servers alternating$( (( ROUNDS > 1 )) && printf ', the median round (by ok replies/s) shown');"
    echo "  memory/scale/skew/sizes: $PART_DURATION s per measurement, $PART_ROUNDS round(s)"
    echo
    echo "## Targets in this run"
    echo
    if (( ${#TARGETS[@]} > 0 )); then
        echo "Met or not in this one run ($ROUNDS round(s) per matrix cell, $PART_ROUNDS for the other parts, on a noisy"
        echo "machine: a verdict near its threshold can flip on a re-run; see each section). Throughput targets judge"
        echo "the round with the median ok replies/s, p50 targets the median of the rounds' p50s, each to its unrounded"
        echo "ratio (shown to 2 decimals)."
        echo
        echo "| target | this run | |"
        echo "|---|---|---|"
        printf '%s\n' "${TARGETS[@]}"
    else
        echo "No part with a target was run."
    fi
    echo
    if ! part matrix; then
        echo "## Throughput and latency (matrix)"
        echo
        echo "Not run (BENCH_PARTS=$PARTS)."
        echo
    else
    echo "## Throughput and latency"
    echo
    echo "$TABLE"
    echo
    echo "pool/ref and pool/PHP: pool-server's ok replies per second divided by the other's (above 1: pool-server is"
    echo "faster; an error reply such as *busy* counts in req/s but not in the ratio; no ratio beside a stall)."
    echo "Latency is per request answered ok, from the write that sent it to the read that completed its reply"
    echo "(oneshot: from connect to EOF); errors are counted, not timed. pool-bench is closed-loop: each"
    echo "connection sends its next request only when one is answered, so a stall delays the requests it would"
    echo "have sent instead of timing them (coordinated omission): the percentiles are of service times at the"
    echo "load the server sustained, not of waits at a fixed offered rate. *stalled*: no request answered at all,"
    echo "or some never answered (no reply within $TIMEOUT s: see the notes)."
    echo
    if (( POLLS )); then
    echo "## With \`--busy-poll $BUSY_POLL\`"
    echo
    echo "The same pool-server with \`--busy-poll $BUSY_POLL\` (off by default), measured in the same rounds as the"
    echo "columns above: after a turn with traffic the master polls for up to $BUSY_POLL s before it sleeps. It"
    echo "saves the master's wake-ups, which are costly where waking a sleeping CPU is (virtual machines"
    echo "especially), and spends CPU polling instead (the last column)."
    echo
    echo "$BUSY_TABLE"
    echo
    echo "req/s ÷: above 1, the busy-polling pool is faster; p50 ÷: below 1, it answers sooner."
    echo
    fi
    echo "## Server CPU per request"
    echo
    echo "CPU time of the master and its workers over the measured window (live processes from"
    echo "/proc/PID/task/*/schedstat in nanoseconds, workers reaped meanwhile from the master's cutime + cstime in"
    echo "clock ticks), divided by the requests answered (ok or an error status). Less sensitive to the machine's"
    echo "noise than requests/s; lower is better. The window opens as warm-up ends, while up to connections ×"
    echo "depth warm-up requests are still in flight: their remaining CPU is counted, they are not."
    echo
    echo "$CPU_TABLE"
    echo
    echo "## Every round"
    echo
    echo "ok replies per second of each round, in the order run (the servers of a row alternate, their order"
    echo "rotating each round). A spread within one cell is the machine's noise, not the server's."
    echo
    rounds_table '.ok_per_second | rps'
    echo
    echo "The p50 latency of each round, in the same order (the main table shows the p50 of the median"
    echo "round by ok replies/s):"
    echo
    rounds_table '.latency_us.p50 | lat'
    echo
    echo "## Errors"
    echo
    if [[ -n $ERRORS ]]; then echo "$ERRORS"; else echo "None: every request got the expected reply."; fi
    echo
    echo "## Notes"
    echo
    echo "- Every server runs $WORKERS workers, except the seed's PHP server, which has 3 built in. The PHP server"
    echo "  only runs the oneshot 16 B rows: it reads at most 1024 bytes of a message, and its workers"
    echo "  (\`msg_receive\` of at most 1024 bytes) spin forever on a larger serialized message."
    echo "- Oneshot rows run pool-server with \`--handler echo\` in the default ack mode (the reply is \`ok\`, as from"
    echo "  cref and the seed): the default \`log\` handler writes a line per message at info level."
    echo "- Framed rows: \`--protocol framed --reply result --handler echo\`; every reply is checked"
    echo "  (\`--verify\`: status ok, and the body exactly its own request's payload, whose last 8 bytes carry"
    echo "  the connection and a sequence number). Replies out of request order (matched to their own request"
    echo "  for the latency, and counted): ${ORDER:-none measured}."
    echo "- When every worker queue is full (at 4 KiB a 16 KiB queue holds 3 messages) pool-server holds the"
    echo "  client until a queue has room (\`msgsnd\` with IPC_NOWAIT, retried; *busy* only past \`--max-backlog\`),"
    echo "  where cref blocks its whole loop in \`msgsnd\`. A *busy* reply counts in req/s, not in the ratio."
    echo "- cref_framed sends to its queues with blocking \`msgsnd\` from the master, so when a worker's queue and"
    echo "  the reply queue are both full (16 KiB each by default: 3 messages of 4 KiB) master and workers wait on"
    echo "  each other for ever. pool-server never blocks its master (IPC_NOWAIT, backlog in the master). cref_framed"
    echo "  also writes responses in completion order, which the framed protocol does not allow (counted above)."
    echo "- The idle row holds $IDLE extra connections open and idle for the whole run (pool-server gets"
    echo "  \`--idle-timeout 600\` there so they are not closed during it) while 8 connections keep 1 request each"
    echo "  in flight."
    echo "- pool-bench runs one thread per connection with blocking I/O; a framed connection reads every response"
    echo "  available and tops up to its depth in one write. Percentiles come from a log-bucketed histogram"
    echo "  (128 sub-buckets per power of two: within 0.8 %)."
    echo
    fi
    echo "## Memory"
    echo
    echo "$MEM_SECTION"
    echo
    echo "## Many busy connections"
    echo
    echo "$SCALE_SECTION"
    echo
    echo "## Dispatch under skewed job lengths"
    echo
    echo "$SKEW_SECTION"
    echo
    echo "## Payload sizes"
    echo
    echo "$SIZES_SECTION"
    echo
    echo "## Commands"
    echo
    echo "\`BENCH_PARTS=$PARTS BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_ROUNDS=$ROUNDS BENCH_BUSY_POLL=$BUSY_POLL"
    echo "BENCH_PART_DURATION=$PART_DURATION BENCH_PART_ROUNDS=$PART_ROUNDS scripts/bench.sh\`, which ran, with \`\$TMP\` its temporary"
    echo "directory, \`\$BIN\` = \`${BIN#"$ROOT"/}\` (built by \`${BUILD[*]}\`),"
    echo "the references built with \`gcc -O2 -o \$TMP/cref ../shared/bench-ref/cref.c\` (and cref_framed alike),"
    echo "each server started in its own session, its socket waited for, measured with the row's pool-bench"
    echo "command (\`--json --quiet\` added; SOCKET and PID are that server's), then stopped with SIGINT:"
    echo
    echo '```'
    if (( ${#COMMANDS[@]} > 0 )); then printf '%s\n' "${COMMANDS[@]}"; fi
    if (( ${#PART_COMMANDS[@]} > 0 )); then printf '%s\n' "${PART_COMMANDS[@]}"; fi
    echo '```'
} >"$OUTPUT"

if part matrix; then
    echo "$TABLE"
    log ""
    log "server CPU per request:"
    log "$CPU_TABLE"
    if [[ -n $ERRORS ]]; then log ""; log "errors:"; log "$ERRORS"; fi
fi
if (( ${#TARGETS[@]} > 0 )); then
    echo
    echo "| target | this run | |"
    echo "|---|---|---|"
    printf '%s\n' "${TARGETS[@]}"
fi
log ""
log "written to $OUTPUT ($((SECONDS - SCRIPT_START)) s)"

# Nothing of ours may remain: no server process, no queue it created. A leftover fails the run
# (after the table is written: the measurements stand, the leak is the server's or this script's).
leaked=0
# By the start time taken at the start and by name: after minutes of forking the pid numbers
# wrap (pid_max is often 32768), and a number may be another process's by now.
for entry in $STARTED_PIDS; do
    pid=${entry%%:*} started=${entry#*:}
    if running "$pid" && [[ -n $started && $(start_time "$pid") == "$started" ]]; then
        log "FAIL: server $pid still alive"; leaked=1
    elif members=$(ps -o comm= -g "$pid" 2>/dev/null) && grep -qE '^(pool-server|pool-worker|cref|cref_framed|php)' <<<"$members"; then
        log "FAIL: processes of server $pid's group still alive"; leaked=1
    fi
done
for id in $OUR_QUEUES; do
    if awk -v id="$id" 'NR > 1 && $2 == id { found = 1 } END { exit !found }' /proc/sysvipc/msg; then
        log "FAIL: queue $id of a pool-server of ours still exists"
        leaked=1
    fi
done
(( leaked == 0 )) || exit 1
