import CSysV
import Glibc

/// A CLOCK_MONOTONIC timer as a descriptor, so the loop's slow periodic work (the idle scan,
/// `--job-timeout` checks) wakes it through epoll.
///
/// Why not `epoll_wait`'s timeout: that arms and cancels a kernel timer on every wait, which is
/// every request at low load. This one is armed once per deadline (about once a second), and the
/// waits between are untimed. In a VM, where programming the timer may trap to the hypervisor,
/// that was worth about 4 % of framed 1×1 latency.
public struct TimerFD: Sendable {
    /// The timer descriptor; readable once the deadline has passed.
    public let fd: Int32

    /// A disarmed, non-blocking timer on CLOCK_MONOTONIC (the clock of `monotonicNanoseconds`).
    ///
    /// The corresponding C function is `timerfd_create`.
    public static func create() throws -> TimerFD {
        TimerFD(fd: try valueOrErrno("timerfd_create") {
            timerfd_create(CLOCK_MONOTONIC, Int32(TFD_NONBLOCK) | Int32(TFD_CLOEXEC))
        }.get())
    }

    /// Fires once at `deadline` (`monotonicNanoseconds` time); a deadline already past fires at once.
    /// Replaces any earlier setting.
    ///
    /// The corresponding C function is `timerfd_settime(TFD_TIMER_ABSTIME)`.
    public func arm(at deadline: Int64) throws {
        let at = max(deadline, 1)  // all zeroes would disarm
        var setting = itimerspec()
        setting.it_value = timespec(tv_sec: Int(at / 1_000_000_000), tv_nsec: Int(at % 1_000_000_000))
        _ = try valueOrErrno("timerfd_settime") { timerfd_settime(fd, Int32(TFD_TIMER_ABSTIME), &setting, nil) }.get()
    }

    /// Takes the expiry, so the descriptor stops being readable; returns how many there were.
    ///
    /// The corresponding C function is `read`.
    @discardableResult
    public func drain() -> UInt64 {
        var expirations: UInt64 = 0
        if case .success(8) = valueOrErrno("read", { Glibc.read(fd, &expirations, 8) }) { return expirations }
        return 0
    }

    /// Closes the descriptor.
    ///
    /// The corresponding C function is `close`.
    public func close() { _ = Glibc.close(fd) }
}
