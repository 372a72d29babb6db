import Glibc

#if DEBUG
/// Debug builds only: calls of one kind numbered from 1, of which those listed in an environment
/// variable fail as the kernel would at a limit the tests cannot reach. They run as root, whom
/// RLIMIT_NPROC does not bind, and may not lower the whole machine's kernel.msgmni.
final class DebugFailpoint {
    /// `POOL_DEBUG_FAIL_FORKS=3,4`: the master's 3rd and 4th forks fail with EAGAIN (start, scale
    /// up and respawn have fork-failure paths).
    nonisolated(unsafe) static let forks = DebugFailpoint("POOL_DEBUG_FAIL_FORKS")
    /// `POOL_DEBUG_FAIL_QUEUES=5`: the 5th queue creation fails with ENOSPC, as msgget does at
    /// kernel.msgmni.
    nonisolated(unsafe) static let queues = DebugFailpoint("POOL_DEBUG_FAIL_QUEUES")
    /// `POOL_DEBUG_FAIL_QUITS=1,2`: the master's 1st and 2nd quit messages fail with ENOMEM,
    /// as msgsnd does when the kernel cannot allocate the message.
    nonisolated(unsafe) static let quits = DebugFailpoint("POOL_DEBUG_FAIL_QUITS")
    /// `POOL_DEBUG_FAIL_ACCEPTS=1,2`: the master's 1st and 2nd accepts (client and control
    /// sockets alike) fail with EPERM and leave the connection in the backlog, as accept does when
    /// a security module refuses it.
    nonisolated(unsafe) static let accepts = DebugFailpoint("POOL_DEBUG_FAIL_ACCEPTS")
    /// `POOL_DEBUG_FAIL_WATCHES=1`: registering the 1st new framed/tagged connection with epoll
    /// fails with ENOSPC, as epoll_ctl does past fs.epoll.max_user_watches.
    nonisolated(unsafe) static let watches = DebugFailpoint("POOL_DEBUG_FAIL_WATCHES")

    /// Calls so far; only the single-threaded master forks, creates queues and sends quits.
    private var calls = 0
    private let failing: Set<Int>

    private init(_ variable: String) {
        failing = getenv(variable).map { Set(String(cString: $0).split(separator: ",").compactMap { Int($0) }) } ?? []
    }

    /// Counts a call; true if it is one to fail.
    func nextCallFails() -> Bool {
        calls += 1
        return failing.contains(calls)
    }
}
#endif
