import CSysV
import Glibc
import SystemPackage

/// How a child ended, decoded from a wait status.
public enum ExitStatus: Equatable, Sendable, CustomStringConvertible {
    /// The process exited with this status (-1 if the wait status showed neither exit nor signal).
    case exited(Int32)
    /// The process was killed by this signal number; `coreDumped` if it left a core.
    case signaled(Int32, coreDumped: Bool)

    init(waitStatus status: Int32) {
        if csysv_wifsignaled(status) != 0 {
            self = .signaled(csysv_wtermsig(status), coreDumped: csysv_wcoredump(status) != 0)
        } else {
            self = .exited(csysv_wifexited(status) != 0 ? csysv_wexitstatus(status) : -1)
        }
    }

    /// `exit N` or `signal N`, plus `(core dumped)` when a core was written.
    public var description: String {
        switch self {
        case .exited(let code): return "exit \(code)"
        case .signaled(let sig, let core): return "signal \(sig)\(core ? " (core dumped)" : "")"
        }
    }
}

/// Process creation and reaping. Only the master forks, and only while single-threaded.
public enum ChildProcess {
    /// Forks. Returns the child's pid in the parent and `nil` in the child.
    ///
    /// Signals are blocked across the fork and the child resets every disposition and its mask
    /// before returning (all in C), optionally ignores the master's signals (Ctrl-C and hang-up go to
    /// the whole process group, and only the master should act on them) and sets a parent-death
    /// signal.
    ///
    /// In debug builds this traps if the process has more than one thread: a threaded parent
    /// leaves locks held by other threads locked forever in the child, and workers run Swift.
    ///
    /// The corresponding C function is `fork`.
    /// With `holdTermination`, the child starts with SIGTERM blocked (see `CSYSV_FORK_HOLD_SIGTERM`)
    /// and must call `Signals.unblock(SIGTERM)` once it handles it.
    #if DEBUG
    /// The forking process's /proc/self/task, and which process opened it.
    nonisolated(unsafe) private static var taskDirectory: Int32 = -1
    nonisolated(unsafe) private static var taskDirectoryOwner: pid_t = 0
    #endif

    public static func fork(parentDeathSignal: Int32 = SIGKILL, ignoreGroupSignals: Bool = true,
                            holdTermination: Bool = false) throws -> pid_t? {
        #if DEBUG
        // Counted in /proc/self/task, opened at the first fork and kept, so a master at its fd
        // limit that still respawns is checked too. Negative only without /proc (or with no
        // descriptor free at the very first fork): a check that cannot look must not stop it.
        if taskDirectoryOwner != getpid() {
            // A child that forks in turn: the number it inherited was closed with the master's
            // descriptors, and may be another descriptor now.
            taskDirectory = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
            taskDirectoryOwner = getpid()
        }
        let threads = taskDirectory >= 0 ? csysv_thread_count_in(taskDirectory) : csysv_thread_count()
        precondition(threads == 1 || threads < 0, "fork with \(threads) threads: the master must stay single-threaded")
        if DebugFailpoint.forks.nextCallFails() { throw SystemError("fork", .resourceTemporarilyUnavailable) }
        #endif
        var options: Int32 = 0
        if ignoreGroupSignals { options |= Int32(CSYSV_FORK_IGNORE_GROUP_SIGNALS) }
        if holdTermination { options |= Int32(CSYSV_FORK_HOLD_SIGTERM) }
        let pid = try valueOrErrno("fork") { csysv_fork(parentDeathSignal, options) }.get()
        return pid == 0 ? nil : pid
    }

    /// Reaps one exited child without blocking; `nil` when none is ready or none exist.
    ///
    /// The corresponding C function is `waitpid(-1, WNOHANG)`.
    public static func reapAny() -> (pid: pid_t, status: ExitStatus)? {
        var status: Int32 = 0
        guard case .success(let pid) = valueOrErrno("waitpid", { csysv_waitpid_nohang(-1, &status) }),
              pid > 0 else { return nil }
        return (pid, ExitStatus(waitStatus: status))
    }

    /// Reaps one specific child if it has exited, without blocking: `.success(nil)` while it
    /// runs; ECHILD when it is not (or no longer) a child of ours.
    ///
    /// The corresponding C function is `waitpid(pid, WNOHANG)`.
    public static func reap(_ pid: pid_t) -> Result<ExitStatus?, SystemError> {
        var status: Int32 = 0
        return valueOrErrno("waitpid") { csysv_waitpid_nohang(pid, &status) }
            .map { $0 == pid ? ExitStatus(waitStatus: status) : nil }
    }

    /// Sends a signal; a vanished process (ESRCH) is not an error.
    ///
    /// The corresponding C function is `kill`.
    public static func signal(_ pid: pid_t, _ signo: Int32) {
        _ = Glibc.kill(pid, signo)
    }

    /// Becomes user `uid` with group `gid` and the supplementary `groups` (`[gid]` if empty): the
    /// supplementary groups, then the gid, then the uid (in that order: once the uid is dropped
    /// the others may no longer be changed). For a worker of a root master; clears the
    /// parent-death signal (see `renewParentDeathSignal`). The list is looked up before the fork
    /// (`WorkerUser.lookUp`), so no user-database lookup runs in the child.
    ///
    /// The corresponding C functions are `setgroups`, `setgid` and `setuid`.
    public static func become(uid: uid_t, gid: gid_t, groups: [gid_t] = []) throws {
        var list = groups.isEmpty ? [gid] : groups
        _ = try valueOrErrno("setgroups") { setgroups(list.count, &list) }.get()
        _ = try valueOrErrno("setgid") { setgid(gid) }.get()
        _ = try valueOrErrno("setuid") { setuid(uid) }.get()
    }

    /// A probe child that neither succeeded nor named the call that failed.
    public struct ProbeFailure: Error, CustomStringConvertible {
        public let description: String
    }

    /// Whether a child of this process can `become(uid:gid:)`: a probe child tries it and exits. A
    /// master checks this before it starts (a user namespace without that uid or gid mapped, a
    /// `setgroups` denied): every worker would otherwise fail the same way, for ever. Throws the
    /// failed call's `SystemError`, or `ProbeFailure`.
    ///
    /// The corresponding C functions are `fork`, `setgroups`, `setgid`, `setuid` and `waitpid`.
    public static func checkCanBecome(uid: uid_t, gid: gid_t, groups: [gid_t] = []) throws {
        let calls = ["setgroups", "setgid", "setuid"]
        guard let pid = try fork(parentDeathSignal: SIGKILL, ignoreGroupSignals: true) else {
            // The exit status carries which call failed and its errno: 64 × (call + 1) + errno.
            do { try become(uid: uid, gid: gid, groups: groups) } catch let error as SystemError {
                let call = calls.firstIndex(of: error.call) ?? 0
                exitImmediately(Int32(64 * (call + 1)) + min(error.errno.rawValue, 63))
            } catch {
                exitImmediately(255)
            }
            exitImmediately(0)
        }
        // It does three syscalls: a blocking wait, bounded in case it cannot even run them.
        let deadline = monotonicNanoseconds() + 10_000_000_000
        while true {
            switch reap(pid) {
            case .success(nil) where monotonicNanoseconds() < deadline:
                usleep(1000)
            case .success(nil):
                // Reaped if it ends within a second; one stuck where SIGKILL cannot end it (an
                // uninterruptible sleep) is left to the reaping of whatever runs next, not waited on.
                signal(pid, SIGKILL)
                let killed = monotonicNanoseconds()
                while case .success(nil) = reap(pid), monotonicNanoseconds() - killed < 1_000_000_000 { usleep(1000) }
                throw ProbeFailure(description: "the probe did not finish in 10 s")
            case .success(.exited(0)):
                return
            case .success(.exited(let code)) where code >= 64 && code < 255:
                throw SystemError(calls[Int(code / 64) - 1], Errno(rawValue: code % 64))
            case .success(let status?):
                throw ProbeFailure(description: "the probe ended with \(status)")
            case .failure(let error):
                throw error
            }
        }
    }

    /// Asks for `signo` when the parent dies, again: a change of credentials clears the request
    /// (the fork window made it). False if `parent` is no longer the parent, having died before
    /// the request took effect (no signal will come then).
    ///
    /// The corresponding C function is `prctl(PR_SET_PDEATHSIG)`.
    public static func renewParentDeathSignal(_ signo: Int32, parent: pid_t) -> Bool {
        _ = csysv_set_parent_death_signal(signo)
        return getppid() == parent
    }

    /// Ends the calling process at once: no atexit handlers, no deinit, no flushing of stdio.
    /// What a worker does instead of returning, so it never runs the master's cleanup.
    public static func exitImmediately(_ status: Int32) -> Never {
        csysv_exit_now(status)
        fatalError("unreachable")
    }

    /// Closes every descriptor from 3 up except `keep` (at most 64; run in a freshly forked
    /// worker). It needs no free descriptor, so it works in the child of a master at its limit.
    ///
    /// The corresponding C function is `close_range`.
    public static func closeDescriptors(except keep: [Int32]) throws {
        _ = try valueOrErrno("close_range") {
            keep.withUnsafeBufferPointer { csysv_close_fds_except($0.baseAddress, Int32($0.count)) }
        }.get()
    }

    /// Puts the calling process under SCHED_BATCH (`batch`) or back under SCHED_OTHER: a batch
    /// process gets its full share of CPU, but its wake-ups do not preempt the running process.
    ///
    /// The corresponding C function is `sched_setscheduler`.
    public static func setBatchScheduling(_ batch: Bool) throws {
        _ = try valueOrErrno("sched_setscheduler") { csysv_set_batch_scheduling(batch ? 1 : 0) }.get()
    }

    /// Whether the calling process runs under SCHED_BATCH.
    ///
    /// The corresponding C function is `sched_getscheduler`.
    public static var hasBatchScheduling: Bool { csysv_scheduling_policy() == SCHED_BATCH }

    /// Names the calling process for `ps`/`top` (truncated to 15 bytes by the kernel).
    ///
    /// The corresponding C function is `prctl(PR_SET_NAME)`.
    public static func setName(_ name: String) {
        _ = csysv_set_process_name(name)
    }
}
