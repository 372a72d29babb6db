#!/usr/bin/env bash
# End-to-end smoke test of the user's path, in shell: build, start pool-server, talk to it with a
# minimal client (python3's socket module, or php's seed client if installed), SIGINT, and check
# that nothing is left behind. Exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

fail() { echo "smoke: FAIL: $*" >&2; [ -f "${log:-}" ] && sed 's/^/  server: /' "$log" >&2; exit 1; }

swift build >/dev/null
bin=$(swift build --show-bin-path)
work=$(mktemp -d /tmp/pool-smoke-XXXXXX)
log="$work/server.log"
server_pid=""
queues=""            # the server's queues, from its "pool started" line
worker_pids=""
passed=0
# On a failure: stop the server gracefully if it will (it removes its queues), else kill it; then
# remove what a dead master left (state file, socket, queues) and what is left of its workers,
# before the directory holding the state file goes. A crashed master is no longer there to kill,
# so this runs whatever happened to it. After a pass there is nothing left, and nothing is
# touched: a queue id seen gone may belong to someone else by now.
cleanup() {
  [ "$passed" = 1 ] && { rm -rf "$work"; return; }
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -TERM "$server_pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$server_pid" 2>/dev/null || true
    sleep 0.2
  fi
  "$bin/pool-server" cleanup --socket "$work/pool.sock" >/dev/null 2>&1 || true
  for pid in $worker_pids; do
    [ "$(cat /proc/"$pid"/comm 2>/dev/null)" = pool-worker ] && kill -KILL "$pid" 2>/dev/null || true
  done
  # Only ids still listed: the server may have removed its queues before the failure, and a freed
  # id may be someone else's by now.
  for q in $queues; do
    queue_listed "$q" && ipcrm -q "$q" 2>/dev/null || true
  done
  rm -rf "$work"
}
trap cleanup EXIT
# Whether queue id $1 is still listed (by the kernel; awk alone, so no pipe can hide a miss).
queue_listed() { awk -v q="$1" 'NR > 1 && $2 == q { found = 1 } END { exit !found }' /proc/sysvipc/msg; }
# A process's children, from /proc (procps' pgrep may not be installed).
children() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | grep -c . || true; }
child_pids() { cat /proc/"$1"/task/*/children 2>/dev/null | tr ' ' '\n' | { grep . || true; } | sort -n | tr '\n' ' '; }

# The shim's layout asserts against glibc's own structs (struct msgbuf, struct ucred) compile only
# under _GNU_SOURCE, which the Swift module must not set (see CShim/csysv.h): compile them here.
cc_bin=$(command -v clang || command -v cc || true)
[ -n "$cc_bin" ] || fail "no C compiler (clang ships with the Swift toolchain) to check the shim's layout asserts"
printf '#include "csysv.h"\n#ifndef __USE_GNU\n#error "_GNU_SOURCE had no effect: the layout asserts were skipped"\n#endif\nint main(void) { return 0; }\n' \
  | "$cc_bin" -D_GNU_SOURCE -fsyntax-only -Werror -x c -I CShim - || fail "CShim/csysv.h: layout asserts failed under _GNU_SOURCE"

# The C shim used directly from Swift, without the Pool module.
"$bin/csysv-demo" | grep -q "received type 1: hello, queue" || fail "csysv-demo did not round-trip a message"
cd "$work"
"$bin/pool-server" --workers 3 >"$log" 2>&1 &
server_pid=$!
for _ in $(seq 100); do grep -q "pool started" "$log" && break; sleep 0.1; done
grep -q "pool started" "$log" || fail "server did not start"
queues=$(sed -n 's/.*queues=\[\([0-9, ]*\)\].*/\1/p' "$log" | head -1 | tr -d ' ' | tr ',' ' ')
[ -n "$queues" ] || fail "the start line names no queues"
[ -S pool.sock ] || fail "no socket file"
[ "$(stat -c %a pool.sock)" = "600" ] || fail "socket mode is $(stat -c %a pool.sock), expected 600"
for _ in $(seq 100); do [ "$(children "$server_pid")" -eq 3 ] && break; sleep 0.1; done
workers=$(children "$server_pid")
[ "$workers" -eq 3 ] || fail "expected 3 workers, found $workers"
workers_before=$(child_pids "$server_pid")
worker_pids=$workers_before

# The seed's protocol with a minimal client: connect, write, read the answer (no half-close).
if command -v python3 >/dev/null; then
reply=$(python3 - <<'PY'
import socket
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(20)   # a wedged server fails the test instead of hanging it
s.connect("pool.sock")
s.sendall(b"i am client")
print(s.recv(1024).decode(), end="")
s.close()
PY
)
else
  echo "smoke: no python3; the seed's message goes through pool-client instead"
  reply=$("$bin/pool-client" --socket pool.sock "i am client")
fi
[ "$reply" = "ok" ] || fail "the seed's message got '$reply', expected 'ok'"

# A payload of quit is data, not a command.
reply=$("$bin/pool-client" --socket pool.sock quit)
[ "$reply" = "ok" ] || fail "pool-client got '$reply'"

if command -v php >/dev/null; then
  seed="$root/Tests/Fixtures/seed-client.php"
  if [ -f "$seed" ]; then
    cp "$seed" client.php
    out=$(timeout 20 php client.php) || fail "seed client.php failed or hung: $out"
    [ "$out" = "11ok" ] || fail "seed client.php printed '$out', expected '11ok'"
    echo "smoke: seed client.php printed 11ok"
  else
    echo "smoke: SKIP seed client.php: $seed is missing"
  fi
else
  echo "smoke: SKIP seed client.php: no php (apt-get install php8.2-cli)"
fi

# The worker that took "quit" must have handled it before its survival below means anything.
for _ in $(seq 50); do grep -q "recv 4 bytes: quit" "$log" && grep -q "recv 11 bytes: i am client" "$log" && break; sleep 0.1; done
grep -q "recv 11 bytes: i am client" "$log" || fail "worker did not log the message"
grep -q "recv 4 bytes: quit" "$log" || fail "no worker logged the 'quit' payload"
# A worker that quit would log its exit (or death) a moment after the line above; give it 1 s.
sleep 1
if grep -qE "worker (exited|died)" "$log"; then fail "a worker ended after a 'quit' payload: $(grep -E "worker (exited|died)" "$log")"; fi
[ "$(child_pids "$server_pid")" = "$workers_before" ] || fail "a worker stopped after a 'quit' payload (workers $workers_before, now $(child_pids "$server_pid"))"

worker_pids=$(child_pids "$server_pid")
kill -INT "$server_pid"
for _ in $(seq 100); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$server_pid" 2>/dev/null; then fail "server still running 10 s after SIGINT"; fi
wait "$server_pid" && status=0 || status=$?
server_pid=""
# From here on the clean-up removes only queues and workers seen left behind: the server removed
# the others, and their ids may be someone else's by now.
left=""
for q in $queues; do
  # awk alone: with pipefail, grep -q quitting early can fail the pipe (awk's SIGPIPE).
  queue_listed "$q" && left="$left $q"
done
queues=$left
alive=""
for pid in $worker_pids; do [ -d "/proc/$pid" ] && alive="$alive $pid"; done
worker_pids=$alive
[ "$status" -eq 0 ] || fail "exit status $status after SIGINT"
[ -z "$left" ] || fail "queues left behind (ipcs -q):$left"
[ ! -e pool.sock ] || fail "socket file left behind"
[ -z "$worker_pids" ] || fail "workers left running:$worker_pids"
[ ! -e pool.sock.state ] || fail "state file left behind"
[ ! -e pool.sock.ctl ] || fail "control socket left behind"
passed=1
echo "smoke: ok — build, start, python/pool-client/php clients, quit payload, SIGINT clean-up"
