#!/usr/bin/env bash
# Every test: unit and integration (swift test, which spawns the built binaries) and the shell
# smoke test. This is the README's second command and what .ci/run runs.
set -euo pipefail
cd "$(dirname "$0")/.."
swift build --build-tests
scripts/smoke.sh

# Every test server lives in a /tmp/pool-test-* directory of its own and removes it when it
# stops. One left after the run means a server was not stopped — the test runner crashed, or a
# test leaked it: its master is stopped, its queues removed (through its state file), and the run
# fails, so a leak is seen rather than left on the machine.
# The run's directories are named after it (POOL_TEST_RUN), so another run at the same time is
# left alone; a pid from a state file is signalled only if it is still that directory's server.
export POOL_TEST_RUN="r$$"
# Whether pid $1's command line or working directory names a path under $2 (a test directory, or
# the run's prefix): a server started in its directory with a relative --socket names it only there.
# (Tested on a variable, not through `| grep -q`: grep leaves at its first match, and a writer
# still writing then dies of SIGPIPE, which pipefail made this function's answer.)
ours() {
    local text
    text="$(tr '\0' ' ' 2>/dev/null <"/proc/$1/cmdline") $(readlink "/proc/$1/cwd" 2>/dev/null)/"
    [[ $text == *"$2"* ]]
}
sweep() {
    local leaked=0 dir pid bin
    bin=$(swift build --show-bin-path)
    for dir in /tmp/pool-test-"$POOL_TEST_RUN"-*; do
        [[ -d $dir ]] || continue
        leaked=1
        echo "test.sh: left behind by the run: $dir" >&2
        pid=$(sed -n 's/^pid=//p' "$dir/pool.sock.state" 2>/dev/null | head -1)
        if [[ -n $pid ]] && ours "$pid" "$dir/"; then
            kill -TERM "$pid" 2>/dev/null || true
            for _ in $(seq 50); do ours "$pid" "$dir/" || break; sleep 0.1; done
            if ours "$pid" "$dir/"; then kill -KILL "$pid" 2>/dev/null || true; sleep 0.2; fi
        fi
        # In a namespace of its own the run's queues went with it (once its last process was
        # stopped, above); a cleanup from here would look for their ids among this namespace's.
        (( own_namespace )) || "$bin/pool-server" cleanup --socket "$dir/pool.sock" >&2 || true
        rm -rf "$dir"
    done
    return $leaked
}

# A server whose directory was removed but whose processes live on escapes the sweep: every
# process of the run is found by its command line (workers are forks: they keep the master's,
# whose --socket is in the run's directory), killed, and fails the run.
stray() {
    local found=0 pid
    for pid in /proc/[0-9]*; do
        pid=${pid#/proc/}
        if ours "$pid" "/tmp/pool-test-$POOL_TEST_RUN-"; then
            found=1
            echo "test.sh: still running after the run: pid $pid ($(tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline"))" >&2
            kill -KILL "$pid" 2>/dev/null || true
        fi
    done
    return $found
}
# Queues our uid created (the creator, $10: with --user a queue is owned by the workers' user).
our_queues() { awk -v uid="$(id -u)" 'NR > 1 && $10 == uid { print $2 }' /proc/sysvipc/msg | sort; }

# Suites that spawn servers run one at a time: on 2 cores, parallel suites only add noise and
# timeouts, and Foundation's Process can miss an exit when two children start at once.
status=0
queues_before=$(our_queues)
# In the background, so a signal to this script is handled at once rather than after the run:
# interrupted (Ctrl-C, a CI timeout's SIGTERM), the runner is stopped and what it started is
# cleaned up. Test servers run in process groups of their own and do not get a terminal's
# Ctrl-C; a runner killed mid-test never stops them itself. The runner gets a process group of
# its own (setsid), so it and the test process it starts are stopped together.
# The trap is in place before the runner starts (a signal in between would leave it running).
runner=""
own_namespace=0
interrupted() {
    trap '' INT TERM HUP
    echo "test.sh: interrupted; stopping the test runner and the run's servers" >&2
    if [[ -n $runner ]]; then
        kill -TERM -- "-$runner" 2>/dev/null || true
        # Bounded: a runner that outlives TERM for 10 s is killed.
        for _ in $(seq 100); do kill -0 "$runner" 2>/dev/null || break; sleep 0.1; done
        kill -KILL -- "-$runner" 2>/dev/null || true
        wait "$runner" 2>/dev/null || true
    fi
    sweep || true
    stray || true
    exit "$1"
}
trap 'interrupted 130' INT
trap 'interrupted 143' TERM
trap 'interrupted 129' HUP
# Where it can (root, unshare), the runner gets an IPC namespace of its own: every queue in it is
# the run's, so one left at the end is a leak for certain (named here, and removed by the kernel
# with the namespace), and no other software's queue is ever looked at. Elsewhere, the queues our
# uid created during the run stand in for that (below), less exactly.
if [[ ${POOL_TEST_IPC_NAMESPACE:-1} == 1 ]] && unshare --ipc true 2>/dev/null; then
    own_namespace=1
    setsid unshare --ipc bash -c '
        swift test --no-parallel; status=$?
        left=$(awk "NR > 1 { print \$2 }" /proc/sysvipc/msg | tr "\n" " ")
        if [[ -n ${left// /} ]]; then
            echo "test.sh: FAIL: queues left at the end of the run: $left(removed with its IPC namespace)" >&2
            (( status != 0 )) || status=1
        fi
        exit $status' &
else
    own_namespace=0
    setsid swift test --no-parallel &
fi
runner=$!
wait "$runner" || status=$?
trap - INT TERM HUP
if ! sweep; then
    echo "test.sh: FAIL: test servers were left running or not cleaned up (removed now)" >&2
    (( status != 0 )) || status=1
fi
if ! stray; then
    echo "test.sh: FAIL: processes of the run outlived it (killed now)" >&2
    (( status != 0 )) || status=1
fi
# Without a namespace of its own: queues created during the run and still there were leaked by a
# test, unless another pool of ours runs beside this one (then they may be its, and are only
# named). Removed: as root this may reach another program's queue created meanwhile.
new_queues=$( (( own_namespace )) || comm -13 <(echo "$queues_before") <(our_queues) | tr '\n' ' ')
if [[ -n ${new_queues// /} ]]; then
    if grep -qsx -e pool-server -e pool-worker /proc/[0-9]*/comm; then
        echo "test.sh: note: queues created during the run remain ($new_queues); another pool of ours is running, so they may be its" >&2
    else
        echo "test.sh: FAIL: queues created during the run remain: $new_queues(removed now)" >&2
        for q in $new_queues; do ipcrm -q "$q" 2>/dev/null || true; done
        (( status != 0 )) || status=1
    fi
fi
exit "$status"
