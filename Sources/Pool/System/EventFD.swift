import CSysV
import Glibc

/// An eventfd used as a doorbell: workers (or a signal handler) ring it, the loop drains it.
public struct EventFD: Sendable {
    /// The eventfd descriptor: the loop watches it with epoll, and forked workers inherit it to ring it.
    public let fd: Int32

    /// A non-blocking eventfd. Created before fork when workers must ring it; not close-on-exec
    /// matters not (we never exec), so it is close-on-exec for hygiene.
    ///
    /// The corresponding C function is `eventfd`.
    public static func create() throws -> EventFD {
        EventFD(fd: try valueOrErrno("eventfd") {
            eventfd(0, Int32(EFD_NONBLOCK) | Int32(EFD_CLOEXEC))
        }.get())
    }

    /// Adds 1 to the counter. A saturated counter (EAGAIN) already means "ring", so it is ignored.
    ///
    /// The corresponding C function is `write`.
    public func ring() {
        var one: UInt64 = 1
        _ = valueOrErrno("write") { Glibc.write(fd, &one, 8) }
    }

    /// Resets the counter; returns how many rings there were (0 if none).
    ///
    /// The corresponding C function is `read`.
    @discardableResult
    public func drain() -> UInt64 {
        var value: UInt64 = 0
        let n = valueOrErrno("read") { Glibc.read(fd, &value, 8) }
        if case .success(8) = n { return value }
        return 0
    }

    /// Closes the descriptor.
    ///
    /// The corresponding C function is `close`.
    public func close() { _ = Glibc.close(fd) }
}
