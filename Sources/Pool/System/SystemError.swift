import SystemPackage

/// A failed system call: which call, and the `errno` it left.
///
/// Errors name the call (`msgsnd`, `accept4`, …) so a log line says what failed, not only why.
public struct SystemError: Error, Equatable, CustomStringConvertible, Sendable {
    /// The failing call, as it appears in section 2 of the manual (or the shim function's purpose).
    public let call: String
    /// The error number the call set.
    public let errno: Errno

    /// Records that `call` failed with `errno`.
    public init(_ call: String, _ errno: Errno) {
        self.call = call
        self.errno = errno
    }

    /// `call: error (errno N)`, as log lines show it.
    public var description: String { "\(call): \(errno) (errno \(errno.rawValue))" }
}

extension Errno {
    /// The calling thread's current `errno`.
    @inline(__always)
    static var current: Errno { Errno(rawValue: Glibc.errno) }
}

import Glibc

/// Runs a raw call that returns -1 and sets `errno` on failure, retrying on EINTR.
///
/// The middle of the three layers every wrapper here has: the C call, this helper turning
/// `-1` + `errno` into a `Result`, and a one-line throwing API on top.
@inline(__always)
func valueOrErrno<I: FixedWidthInteger>(
    _ call: String, retryOnInterrupt: Bool = true, _ body: () -> I
) -> Result<I, SystemError> {
    while true {
        let value = body()
        if value != -1 { return .success(value) }
        let errno = Errno.current
        if retryOnInterrupt && errno == .interrupted { continue }
        return .failure(SystemError(call, errno))
    }
}

/// Like `valueOrErrno`, but maps "would block" (EAGAIN) to `nil`: the answer a non-blocking
/// caller expects, not an error.
@inline(__always)
func valueOrWouldBlock<I: FixedWidthInteger>(
    _ call: String, _ body: () -> I
) -> Result<I?, SystemError> {
    switch valueOrErrno(call, body) {
    case .success(let value): return .success(value)
    case .failure(let error) where error.errno == .resourceTemporarilyUnavailable: return .success(nil)
    case .failure(let error): return .failure(error)
    }
}
