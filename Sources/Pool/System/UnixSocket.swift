import CSysV
import Glibc
import SystemPackage

/// Longest socket path `sun_path` holds (107 bytes on Linux).
public let unixSocketPathMax = Int(csysv_sun_path_max())

/// A stream socket file descriptor the caller owns (close it with `close()`).
public struct SocketFD: Hashable, Sendable {
    /// The descriptor number.
    public let raw: Int32

    /// Wraps a descriptor that is already open (an accepted or systemd-passed socket); nothing is duplicated.
    public init(raw: Int32) { self.raw = raw }

    /// A new `AF_UNIX` stream socket, close-on-exec, optionally non-blocking.
    ///
    /// The corresponding C function is `socket`.
    public static func unixStream(nonBlocking: Bool) throws -> SocketFD {
        let flags = Int32(SOCK_CLOEXEC.rawValue) | (nonBlocking ? Int32(SOCK_NONBLOCK.rawValue) : 0)
        return try SocketFD(raw: valueOrErrno("socket") {
            socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | flags, 0)
        }.get())
    }

    /// Binds to a filesystem path. Paths longer than `unixSocketPathMax` fail with ENAMETOOLONG.
    ///
    /// The corresponding C function is `bind`.
    public func bind(path: String) throws {
        _ = try valueOrErrno("bind") { csysv_bind_unix(raw, path) }.get()
    }

    /// The corresponding C function is `listen`.
    public func listen(backlog: Int32) throws {
        _ = try valueOrErrno("listen") { Glibc.listen(raw, backlog) }.get()
    }

    /// Connects to a filesystem path (blocking or not, as the socket was made).
    ///
    /// The corresponding C function is `connect`.
    public func connect(path: String) throws {
        _ = try valueOrErrno("connect") { csysv_connect_unix(raw, path) }.get()
    }

    /// Accepts one connection as a non-blocking, close-on-exec socket; `nil` when none is waiting.
    ///
    /// The corresponding C function is `accept4`.
    public func accept() throws -> SocketFD? {
        #if DEBUG
        if DebugFailpoint.accepts.nextCallFails() { throw SystemError("accept4", .notPermitted) }
        #endif
        return try valueOrWouldBlock("accept4") { csysv_accept(raw) }.get().map(SocketFD.init(raw:))
    }

    /// Reads into `buffer`; returns the byte count (0 at end of stream) or `nil` if it would block.
    ///
    /// The corresponding C function is `read`.
    public func read(into buffer: UnsafeMutableRawBufferPointer) throws -> Int? {
        try valueOrWouldBlock("read") { Glibc.read(raw, buffer.baseAddress, buffer.count) }.get()
    }

    /// Writes without raising SIGPIPE; returns the bytes written or `nil` if it would block.
    ///
    /// The corresponding C function is `send` with `MSG_NOSIGNAL`.
    public func write(_ buffer: UnsafeRawBufferPointer) throws -> Int? {
        try valueOrWouldBlock("send") {
            Glibc.send(raw, buffer.baseAddress, buffer.count, Int32(MSG_NOSIGNAL))
        }.get()
    }

    /// Writes every byte, blocking as needed (client side only; the master never calls this).
    /// Throws `ETIMEDOUT` when the socket's send timeout (`setSendTimeout`) passes: a blocking
    /// send reports that as EAGAIN, and trying again would wait past the bound the caller set.
    public func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var offset = 0
        while offset < bytes.count {
            let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
            guard let n = try write(rest) else { throw SystemError("send", .timedOut) }
            offset += n
        }
    }

    /// Shuts down the writing half (the peer sees end of stream).
    ///
    /// The corresponding C function is `shutdown`.
    public func shutdownWrite() throws {
        _ = try valueOrErrno("shutdown") { Glibc.shutdown(raw, Int32(SHUT_WR)) }.get()
    }

    /// The connected peer's pid, uid and gid.
    ///
    /// The corresponding C function is `getsockopt(SO_PEERCRED)`.
    public func peerCredentials() throws -> (pid: pid_t, uid: uid_t, gid: gid_t) {
        var pid: pid_t = 0, uid: uid_t = 0, gid: gid_t = 0
        _ = try valueOrErrno("getsockopt(SO_PEERCRED)") { csysv_peer_credentials(raw, &pid, &uid, &gid) }.get()
        return (pid, uid, gid)
    }

    /// `seconds` as a socket timeout: at least 1 µs, since a zero `timeval` means "never time
    /// out", and at most 10⁸ s, which also keeps the conversion from trapping (NaN counts as 10⁸).
    public static func socketTimeout(_ seconds: Double) -> timeval {
        let bounded = seconds.isNaN ? 1e8 : min(max(seconds, 1e-6), 1e8)
        let microseconds = max(1, Int((bounded * 1e6).rounded(.up)))
        return timeval(tv_sec: microseconds / 1_000_000, tv_usec: microseconds % 1_000_000)
    }

    /// Sets a receive timeout (client side, blocking sockets); see `socketTimeout` for the bounds.
    public func setReceiveTimeout(seconds: Double) throws {
        var tv = Self.socketTimeout(seconds)
        _ = try valueOrErrno("setsockopt(SO_RCVTIMEO)") {
            setsockopt(raw, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }.get()
    }

    /// Sets a send timeout (client side, blocking sockets). On a Unix socket it also bounds
    /// `connect`, which blocks while the listener's backlog is full.
    public func setSendTimeout(seconds: Double) throws {
        var tv = Self.socketTimeout(seconds)
        _ = try valueOrErrno("setsockopt(SO_SNDTIMEO)") {
            setsockopt(raw, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        }.get()
    }

    /// Closes the descriptor. EINTR is not retried: on Linux the fd is gone either way.
    ///
    /// The corresponding C function is `close`.
    public func close() {
        _ = Glibc.close(raw)
    }
}

/// What is at a socket path before we bind it.
public enum SocketPathState: Equatable, Sendable {
    /// Nothing there.
    case absent
    /// A socket that accepts connections: another server owns it.
    case live
    /// A socket nobody listens on (a crashed server's leftover).
    case stale
    /// Something that is not a socket; never touched.
    case notASocket
    /// A socket we cannot probe (e.g. EACCES).
    case unusable(SystemError)
}

/// Looks at `path` without changing it: what is there, and is anyone listening?
public func probeSocketPath(_ path: String) -> SocketPathState {
    var st = stat()
    if lstat(path, &st) != 0 {
        return Glibc.errno == ENOENT ? .absent : .unusable(SystemError("lstat", .current))
    }
    guard (st.st_mode & S_IFMT) == S_IFSOCK else { return .notASocket }
    let probe: SocketFD
    do { probe = try SocketFD.unixStream(nonBlocking: true) } catch let error as SystemError {
        return .unusable(error)
    } catch {
        return .unusable(SystemError("socket", .ioError))
    }
    defer { probe.close() }
    do {
        try probe.connect(path: path)
        return .live
    } catch let error as SystemError {
        switch error.errno {
        case .connectionRefused: return .stale
        // A non-blocking connect to a listener whose backlog is full: someone is listening.
        case .resourceTemporarilyUnavailable, .nowInProgress: return .live
        default: return .unusable(error)
        }
    } catch {
        return .unusable(SystemError("connect", .ioError))
    }
}
