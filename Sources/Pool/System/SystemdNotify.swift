import CSysV
import Glibc
import SystemPackage

/// The sd_notify protocol without libsystemd: datagrams of `KEY=VALUE` lines to $NOTIFY_SOCKET.
/// A no-op when the variable is unset (not started by systemd).
public struct SystemdNotifier: Sendable {
    /// The `NOTIFY_SOCKET` address (`@` prefix: abstract namespace), or `nil` when not run by systemd.
    public let socketPath: String?
    /// `WatchdogSec=`: systemd's `WATCHDOG_USEC` in nanoseconds, when it is meant for this process
    /// (`WATCHDOG_PID` unset or ours); the master sends `WATCHDOG=1` twice per interval.
    public let watchdogNanoseconds: Int64?
    /// The datagram socket messages go out on, opened once by `takeEnvironment` (-1: one is
    /// opened per message). Kept, a master at its descriptor limit (clients fill it) still
    /// sends `WATCHDOG=1`: a socket per ping would fail with EMFILE, and systemd would kill a
    /// healthy pool. Close-on-exec, and closed in every worker with the master's other descriptors.
    public private(set) var descriptor: Int32 = -1

    /// Reads NOTIFY_SOCKET and the watchdog's variables once, at start-up. (The master unsets
    /// them, before any fork: `takeEnvironment`.)
    public init(environment socketPath: String? = getenv("NOTIFY_SOCKET").map { String(cString: $0) },
                watchdogMicroseconds: String? = getenv("WATCHDOG_USEC").map { String(cString: $0) },
                watchdogPID: String? = getenv("WATCHDOG_PID").map { String(cString: $0) }) {
        self.socketPath = socketPath?.isEmpty == false ? socketPath : nil
        let forUs = watchdogPID.map { pid_t($0) == getpid() } ?? true
        // Longer than a day is taken as a day (pings more often than asked are harmless, none
        // at all would have systemd kill the service): the nanoseconds stay inside an Int64.
        if self.socketPath != nil, forUs, let usec = watchdogMicroseconds.flatMap({ Int64($0) }), usec > 0 {
            watchdogNanoseconds = min(usec, 86_400_000_000) * 1000
        } else {
            watchdogNanoseconds = nil
        }
    }

    /// The notifier for this process, its variables then unset (as libsystemd's `unset_environment`
    /// does): workers and what their handlers start must not notify as the service — with
    /// `NotifyAccess=all` a handler's child could send `READY=1` or `MAINPID=` — nor learn where
    /// the notify socket is.
    public static func takeEnvironment() -> SystemdNotifier {
        var notifier = SystemdNotifier()
        for name in ["NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"] { unsetenv(name) }
        if notifier.socketPath != nil {
            notifier.descriptor = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        }
        return notifier
    }

    /// For `READY=1`, sent before the loop starts: lost to a full notify socket (at boot, or a
    /// container's default queue of 10), systemd would wait for `TimeoutStartSec` and kill a
    /// healthy pool. Tried again for up to `seconds`, every 10 ms; the loop's own lines
    /// (`STOPPING=1`, `STATUS=`, `WATCHDOG=1`) are sent once, as the loop never waits.
    /// Returns nil once sent (or with nothing to send to), else the last try's error.
    public func notifyPersistently(_ message: String, seconds: Double = 1) -> Errno? {
        guard socketPath != nil else { return nil }
        let end = monotonicNanoseconds() + Int64(seconds * 1e9)
        while !notify(message) {
            let error = Errno.current
            guard error == .resourceTemporarilyUnavailable || error == .noBufferSpace, monotonicNanoseconds() < end else { return error }
            usleep(10_000)
        }
        return nil
    }

    /// Sends `READY=1`, `STOPPING=1`, `STATUS=…` or any other assignment list.
    ///
    /// The corresponding C function is `sendto`.
    @discardableResult
    public func notify(_ message: String) -> Bool {
        guard let socketPath else { return false }
        var bytes = Array(message.utf8)
        return bytes.withUnsafeMutableBytes { csysv_notify_socket_send(descriptor, socketPath, $0.baseAddress, $0.count) } == 0
    }
}

/// Sockets passed by systemd socket activation ($LISTEN_PID / $LISTEN_FDS, first fd 3).
public enum SocketActivation {
    /// The first passed descriptor (`SD_LISTEN_FDS_START`); the others follow it in order.
    public static let firstDescriptor: Int32 = 3

    /// The inherited listening descriptors for this process, or empty. Unsets the variables so
    /// they are not mistaken for ours by anything started later.
    public static func takeListeners() -> [Int32] {
        guard let pidText = getenv("LISTEN_PID").map({ String(cString: $0) }),
              let fdsText = getenv("LISTEN_FDS").map({ String(cString: $0) }),
              pid_t(pidText) == getpid(), let count = Int32(fdsText), count > 0,
              // No more than could be open: a bogus count would overflow the descriptor numbers.
              Int(count) <= Int(getdtablesize()) - Int(firstDescriptor) else { return [] }
        unsetenv("LISTEN_PID")
        unsetenv("LISTEN_FDS")
        unsetenv("LISTEN_FDNAMES")
        return (0..<count).map { firstDescriptor + $0 }
    }
}
