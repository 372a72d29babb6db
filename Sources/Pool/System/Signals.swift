import CSysV
import Glibc

/// Signal delivery for a single-threaded event loop: C handlers count each signal and ring a wake
/// fd the loop polls; the loop then asks `take(_:)` how many arrived. No Swift runs in a handler.
public enum Signals {
    /// Where handlers ring. Set before installing any handler.
    public static func setWakeFD(_ fd: Int32) { csysv_signal_set_wake_fd(fd) }

    /// Installs the counting handler for each signal.
    ///
    /// The corresponding C function is `sigaction`.
    public static func install(_ signals: [Int32]) throws {
        for signo in signals {
            _ = try valueOrErrno("sigaction(\(signo))") { csysv_signal_install(signo) }.get()
        }
    }

    /// Installs the counting handler for each signal, counting only those a process sent (kill,
    /// sigqueue): the kernel's own (a terminal's job-control SIGTTIN/SIGTTOU to a background
    /// process group) are dropped.
    ///
    /// The corresponding C function is `sigaction` (with `SA_SIGINFO`).
    public static func installCountingSentOnly(_ signals: [Int32]) throws {
        for signo in signals {
            _ = try valueOrErrno("sigaction(\(signo))") { csysv_signal_install_if_sent(signo) }.get()
        }
    }

    /// Sets a signal to SIG_IGN. The corresponding C function is `sigaction`.
    public static func ignore(_ signo: Int32) throws {
        _ = try valueOrErrno("sigaction(\(signo), SIG_IGN)") { csysv_signal_ignore(signo) }.get()
    }

    /// Sets a signal to SIG_DFL — e.g. SIGCHLD inherited as ignored, which would make the kernel
    /// reap children behind our back. The corresponding C function is `sigaction`.
    public static func setDefault(_ signo: Int32) throws {
        _ = try valueOrErrno("sigaction(\(signo), SIG_DFL)") { csysv_signal_default(signo) }.get()
    }

    /// Unblocks all signals (a launcher may have left some blocked).
    ///
    /// The corresponding C function is `pthread_sigmask`.
    public static func unblockAll() {
        _ = csysv_signal_unblock_all()
    }

    /// Unblocks one signal (held blocked since the fork, until its handler was installed).
    ///
    /// The corresponding C function is `pthread_sigmask(SIG_UNBLOCK)`.
    public static func unblock(_ signo: Int32) {
        _ = csysv_signal_unblock(signo)
    }

    /// How many times `signo` arrived since the last call.
    public static func take(_ signo: Int32) -> Int { Int(csysv_signal_take(signo)) }

    /// How many times `signo` arrived since the last `take`, without taking them.
    public static func peek(_ signo: Int32) -> Int { Int(csysv_signal_peek(signo)) }
}
