#!/usr/bin/env bash
# Benchmark matrix: pool-server (release build) side by side with the C reference servers of
# ../shared/bench-ref (cref, cref_framed; compiled here if gcc exists) and the seed's PHP server
# (oneshot 16 B rows, if php exists), every row under the same load from pool-bench, one server
# at a time, each started fresh, measured, and stopped with SIGINT.
#
# Prints a markdown table and writes it, with the machine and the exact commands, to
# docs/benchmarks.md. Leaves no process, queue or socket behind, even on failure or Ctrl-C.
#
#   BENCH_DURATION  seconds measured per row, server and round (default 2)
#   BENCH_WARMUP    seconds of unmeasured load before each measurement (default 0.3)
#   BENCH_ROUNDS    measurements per cell, servers alternating; the median (by ok replies/s) is
#                   reported (default 3: on a shared machine one slow spell can otherwise decide a
#                   row; BENCH_ROUNDS=1 BENCH_DURATION=3 is the quick variant)
#   BENCH_OUTPUT    where to write the report (default docs/benchmarks.md)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
DURATION=${BENCH_DURATION:-2}
WARMUP=${BENCH_WARMUP:-0.3}
ROUNDS=${BENCH_ROUNDS:-3}
OUTPUT=${BENCH_OUTPUT:-docs/benchmarks.md}
TIMEOUT=3            # pool-bench: seconds without a reply before a request counts as a timeout
WORKERS=2
IDLE=1000
REF_DIR="$ROOT/../shared/bench-ref"
SEED_PHP="$ROOT/../shared/seed/server.php"

log() { printf '%s\n' "$*" >&2; }
command -v jq >/dev/null || { log "bench.sh needs jq (apt-get install jq)"; exit 2; }

TMP=$(mktemp -d "${TMPDIR:-/tmp}/pool-bench.XXXXXX")
SERVER_PID=""        # the running server's master; started with setsid, so also its process group
SERVER_PIDS=""       # every pid seen in that server's session (master + workers), for queue clean-up
SERVER_SOCKET=""
SERVER_KIND=""
QUEUES_BEFORE=""     # msqids that existed before that server started
STARTED_PIDS=""      # every master started, checked at the end

queue_ids() { awk 'NR > 1 { print $2 }' /proc/sysvipc/msg | sort -n; }

running() {          # a pid that exists and is not a zombie
    local state
    state=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
    [[ -n $state && $state != Z* ]]
}

session_pids() { ps -o pid= -s "$1" 2>/dev/null | tr -s ' \n' ' ' || true; }

stop_server() {
    [[ -n $SERVER_PID ]] || return 0
    local pid=$SERVER_PID waited=0 patience=20
    SERVER_PIDS="$SERVER_PIDS $(session_pids "$pid")"
    kill -INT "$pid" 2>/dev/null || true
    # pool-server drains for up to --shutdown-timeout (3 s here); the refs and PHP stop at once
    # or (a deadlocked cref_framed) never.
    [[ $SERVER_KIND == pool ]] && patience=60
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
    if [[ $SERVER_KIND == pool ]]; then
        "$BIN/pool-server" cleanup --socket "$SERVER_SOCKET" >/dev/null 2>&1 || true
    fi
    rm -f "$SERVER_SOCKET" "$SERVER_SOCKET.state"
    SERVER_PID=""
    SERVER_PIDS=""
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    stop_server || true
    rm -rf "$TMP"
    exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# Descriptors: 1000 idle connections on both ends (the servers inherit this limit).
hard=$(ulimit -Hn)
if [[ $hard == unlimited ]] || (( hard >= 8192 )); then ulimit -n 8192; else ulimit -n "$hard"; fi
(( $(ulimit -n) > IDLE + 100 )) || log "warning: ulimit -n is $(ulimit -n); the idle row needs more than $((IDLE + 100))"

log "building (release)…"
swift build -c release >&2
BIN=$(swift build -c release --show-bin-path)

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
    (cd "$dir" && exec setsid "$@" >"$TMP/logs/$SERVER_KIND.out" 2>"$TMP/logs/$SERVER_KIND.err" </dev/null) &
    SERVER_PID=$!
    STARTED_PIDS="$STARTED_PIDS $SERVER_PID"
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
    local protocol connections depth payload idle expect
    IFS='|' read -r _ protocol connections depth payload idle <<<"${ROWS[$1]}"
    [[ $protocol == oneshot ]] && expect=ok || expect=x
    BENCH_ARGS=(--protocol "$protocol" --connections "$connections")
    [[ $protocol == framed ]] && BENCH_ARGS+=(--depth "$depth")
    BENCH_ARGS+=(--payload "$payload" --duration "$DURATION" --warmup "$WARMUP" --timeout "$TIMEOUT" --expect "$expect")
    if (( idle > 0 )); then BENCH_ARGS+=(--idle-connections "$idle"); fi
}

# measure ROW KIND ROUND — run pool-bench against the running server; JSON in
# $TMP/r$ROW-$KIND-$ROUND.json.
measure() {
    local row=$1 kind=$2 round=$3
    bench_args "$row"
    local json="$TMP/r$row-$kind-$round.json"
    timeout $(( ${DURATION%.*} + ${WARMUP%.*} + 4 * TIMEOUT + 30 )) \
        "$BIN/pool-bench" --socket "$SERVER_SOCKET" --server-pid "$SERVER_PID" --json --quiet "${BENCH_ARGS[@]}" \
        >"$json" 2>"$TMP/logs/bench.err" || true
    if ! jq -e .requests_per_second "$json" >/dev/null 2>&1; then
        log "  $kind: pool-bench failed: $(tail -n 2 "$TMP/logs/bench.err" | tr '\n' ' ')"
        echo '{"failed": true}' >"$json"
        return 0
    fi
    log "  $(printf '%-5s' "$kind")$( (( ROUNDS > 1 )) && printf ' #%s' "$round") $(jq -r '"\(.requests_per_second | floor) req/s, p50 \(.latency_us.p50) us, p99 \(.latency_us.p99) us, errors \(.errors_total), server \(.server.cpu_us_per_request) us/req"' "$json")"
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

# median ROW KIND — the round with the median ok replies/s (of two, the better) becomes $TMP/r$ROW-$KIND.json.
median() {
    local files=("$TMP/r$1-$2-"*.json)
    [[ -f ${files[0]} ]] || return 0
    jq -s '(map(select((.ok // 0) == 0 or (.unanswered // 0) > 0)) | length) as $stalled
        | (length) as $rounds
        | sort_by(.ok_per_second // 0) | .[length / 2 | floor] + {stalled_rounds: $stalled, rounds: $rounds}' \
        "${files[@]}" >"$TMP/r$1-$2.json"
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
START_TIME=$(date -u '+%Y-%m-%d %H:%M UTC')
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
    for ((round = 1; round <= ROUNDS; round++)); do
        run_server "$row" pool "$round" "$TMP/pool.sock" "$ROOT" "${pool[@]}"
        if (( HAVE_REF )); then
            run_server "$row" ref "$round" "$TMP/ref.sock" "$TMP" "$TMP/$ref" "$TMP/ref.sock" "$WORKERS"
        fi
        if (( HAVE_PHP )) && [[ $protocol == oneshot ]] && (( payload <= 1000 )); then
            run_server "$row" php "$round" "$TMP/php/pool.sock" "$TMP/php" php "$SEED_PHP"
        fi
    done
    for kind in pool ref php; do median "$row" "$kind"; done
done
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
        elif $f == "cpu" then (if .server.cpu_us_per_request == null then "–" else "\((.server.cpu_us_per_request * 10 | round) / 10) µs" end)
        else "?" end' "$json"
}
ratio() {  # pool req/s ÷ other req/s
    local a="$TMP/r$1-pool.json" b="$TMP/r$1-$2.json"
    [[ -f $a && -f $b ]] || { printf '–'; return; }
    jq -rn --slurpfile a "$a" --slurpfile b "$b" '
        if ($a[0].ok // 0) > 0 and ($b[0].ok // 0) > 0 and $a[0].unanswered == 0 and $b[0].unanswered == 0
        then "\((($a[0].ok_per_second / $b[0].ok_per_second) * 100 | round) / 100)×" else "–" end'
}
size() { (( $1 >= 1024 )) && echo "$(( $1 / 1024 )) KiB" || echo "$1 B"; }

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
ERRORS=$(
    for row in "${!ROWS[@]}"; do
        IFS='|' read -r label _ _ _ payload _ <<<"${ROWS[$row]}"
        for json in "$TMP/r$row-"{pool,ref,php}-*.json; do
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

ROUNDS_TABLE=$(
    echo "| load | payload | pool | ref | PHP |"
    echo "|---|---|--:|--:|--:|"
    for row in "${!ROWS[@]}"; do
        IFS='|' read -r label _ _ _ payload _ <<<"${ROWS[$row]}"
        printf '| %s | %s |' "$label" "$(size "$payload")"
        for kind in pool ref php; do
            files=("$TMP/r$row-$kind-"*.json)
            if [[ -f ${files[0]} ]]; then
                printf ' %s |' "$(jq -rs 'map(if (.ok // 0) == 0 then "stalled" else
                    (if .ok_per_second >= 1000 then "\((.ok_per_second / 100 | round) / 10)k" else "\(.ok_per_second | round)" end)
                    + (if .unanswered > 0 then " (stalled)" else "" end) end) | join(" · ")' "${files[@]}")"
            else
                printf ' – |'
            fi
        done
        echo
    done
)
CPU_MODEL=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
{
    echo "# Benchmarks"
    echo
    echo "Written by \`scripts/bench.sh\` on $START_TIME. pool-server (release) beside the reference"
    echo "servers of \`../shared/bench-ref\` (\`cref\` for oneshot, \`cref_framed\` for framed; C, same architecture,"
    echo "no error handling: a floor, not a design) and the seed's PHP server, each row measured back to back"
    echo "with the same load from \`pool-bench\`. The machine is shared and noisy: compare the columns of one row,"
    echo "not one run with another, and re-run before drawing conclusions from a single cell."
    echo
    echo "## Machine"
    echo
    echo "- $(nproc) cores: $CPU_MODEL; kernel $(uname -r); $(swift --version 2>/dev/null | head -n 1)"
    echo "- load average (1, 5, 15 min) before: $LOAD_BEFORE; after: $LOAD_AFTER"
    echo "- kernel.msgmax $(cat /proc/sys/kernel/msgmax), kernel.msgmnb $(cat /proc/sys/kernel/msgmnb) (the refs' queue size);"
    echo "  pool-server's queues: ${QUEUE_BYTES:-?} bytes (it asks for 1 MiB, which needs CAP_SYS_RESOURCE)"
    echo "- client and servers on the same cores; $DURATION s measured per cell after $WARMUP s of warm-up;"
    echo "  $ROUNDS round(s) per cell, servers alternating$( (( ROUNDS > 1 )) && printf ', the median round (by ok replies/s) shown')"
    echo
    echo "## Throughput and latency"
    echo
    echo "$TABLE"
    echo
    echo "pool/ref and pool/PHP: pool-server's ok replies per second divided by the other's (above 1: pool-server is"
    echo "faster; an error reply such as *busy* counts in req/s but not in the ratio; no ratio beside a stall)."
    echo "Latency is per request, from the write that sent it to the read that completed its reply (oneshot: from"
    echo "connect to EOF). *stalled*: no request answered at all, or some never answered (no reply within"
    echo "$TIMEOUT s: see the notes)."
    echo
    echo "## Server CPU per request"
    echo
    echo "utime + stime of the master and its workers (and of any reaped worker), from /proc, over the measured"
    echo "window, divided by the requests answered. Less sensitive to the machine's noise than requests/s."
    echo
    echo "$CPU_TABLE"
    echo
    echo "## Every round"
    echo
    echo "ok replies per second of each round, in the order run (the servers of a row alternate). A spread"
    echo "within one cell is the machine's noise, not the server's."
    echo
    echo "$ROUNDS_TABLE"
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
    echo "  (\`--expect x\`: status ok and the echoed payload)."
    echo "- In ack mode pool-server answers *busy* when every worker queue is full (\`msgsnd\` with IPC_NOWAIT;"
    echo "  at 4 KiB a 16 KiB queue holds 3 messages), where cref blocks its whole loop in \`msgsnd\` until a worker"
    echo "  makes room: pool-server's busy replies count in its req/s, not in the ratio."
    echo "- cref_framed sends to its queues with blocking \`msgsnd\` from the master, so when a worker's queue and"
    echo "  the reply queue are both full (16 KiB each by default: 3 messages of 4 KiB) master and workers wait on"
    echo "  each other for ever. pool-server never blocks its master (IPC_NOWAIT, backlog in the master). cref_framed"
    echo "  also writes responses in completion order; its latencies are matched to requests in order."
    echo "- The idle row holds $IDLE extra connections open and idle for the whole run (pool-server gets"
    echo "  \`--idle-timeout 600\` there so they are not closed during it) while 8 connections keep 1 request each"
    echo "  in flight."
    echo "- pool-bench runs one thread per connection with blocking I/O; a framed connection reads every response"
    echo "  available and tops up to its depth in one write. Percentiles come from a log-bucketed histogram"
    echo "  (128 sub-buckets per power of two: within 0.8 %)."
    echo
    echo "## Commands"
    echo
    echo "\`BENCH_DURATION=$DURATION BENCH_WARMUP=$WARMUP BENCH_ROUNDS=$ROUNDS scripts/bench.sh\`, which ran, with \`\$TMP\` its temporary"
    echo "directory, \`\$BIN\` = \`${BIN#"$ROOT"/}\` (\`swift build -c release --show-bin-path\`),"
    echo "the references built with \`gcc -O2 -o \$TMP/cref ../shared/bench-ref/cref.c\` (and cref_framed alike),"
    echo "each server started in its own session, its socket waited for, measured with the row's pool-bench"
    echo "command (\`--json --quiet\` added; SOCKET and PID are that server's), then stopped with SIGINT:"
    echo
    echo '```'
    printf '%s\n' "${COMMANDS[@]}"
    echo '```'
} >"$OUTPUT"

echo "$TABLE"
log ""
log "server CPU per request:"
log "$CPU_TABLE"
[[ -n $ERRORS ]] && { log ""; log "errors:"; log "$ERRORS"; }
log ""
log "written to $OUTPUT"

# Nothing of ours may remain: no server process, no queue it created.
for pid in $STARTED_PIDS; do
    if running "$pid" || kill -0 -- "-$pid" 2>/dev/null; then log "warning: process group $pid still alive"; fi
done
