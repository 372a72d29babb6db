import Glibc
import Logging

/// The listening socket file: safe creation over a possibly existing path, and removal only if
/// the path still names the socket we created.
struct Listener {
    let socket: SocketFD
    let path: String
    private let device: UInt64
    private let inode: UInt64

    /// Checks the path, binds with `mode` (set through umask so the file never exists with looser
    /// bits), and listens.
    static func open(path: String, mode: mode_t, backlog: Int32, logger: Logger) throws -> Listener {
        switch probeSocketPath(path) {
        case .absent:
            break
        case .live:
            throw ConfigurationError("\(path): another server is listening on this socket; refusing to start (stop it first, or choose another --socket)")
        case .notASocket:
            throw ConfigurationError("\(path): exists and is not a socket; refusing to touch it")
        case .stale:
            logger.info("removing stale socket nobody listens on", metadata: ["socket": "\(path)"])
            guard unlink(path) == 0 || errno == ENOENT else {
                throw SystemError("unlink(\(path))", .current)
            }
        case .unusable(let error):
            throw ConfigurationError("\(path): cannot check the existing socket: \(error)")
        }
        let socket = try SocketFD.unixStream(nonBlocking: true)
        do {
            let previous = umask(0o777 & ~mode)
            defer { umask(previous) }
            do { try socket.bind(path: path) } catch let error as SystemError where error.errno == .fileNameTooLong {
                throw ConfigurationError("\(path): longer than a Unix socket path may be (\(unixSocketPathMax) bytes)")
            }
            guard chmod(path, mode) == 0 else { throw SystemError("chmod(\(path))", .current) }
            try socket.listen(backlog: backlog)
            var st = stat()
            guard lstat(path, &st) == 0 else { throw SystemError("lstat(\(path))", .current) }
            return Listener(socket: socket, path: path, device: UInt64(st.st_dev), inode: UInt64(st.st_ino))
        } catch {
            socket.close()
            throw error
        }
    }

    /// Unlinks the socket file if it is still ours (another server may have replaced it).
    func unlinkIfOurs() {
        var st = stat()
        guard lstat(path, &st) == 0, UInt64(st.st_dev) == device, UInt64(st.st_ino) == inode else { return }
        unlink(path)
    }
}
