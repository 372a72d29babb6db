import CSysV
import Glibc
import Logging
import SystemPackage

/// The listening socket file: safe creation over a possibly existing path, and removal only if
/// the path still names the socket we created.
struct Listener {
    let socket: SocketFD
    let path: String
    private let device: UInt64
    private let inode: UInt64
    /// Passed in by systemd socket activation: systemd owns the file, we never unlink it.
    let inherited: Bool

    /// Checks an inherited descriptor before anything is created: it must be a listening Unix
    /// stream socket (a stray fd 3 — a datagram socket, a file — would fail at the first accept
    /// with the workers up), and where its file can be seen here, that file must be `path`'s
    /// (the same file, however named): a unit whose socket differs from `--socket` would have the
    /// pool serve one path while its state, control socket and clients use another. A file this
    /// process cannot see (a container given only the descriptor, PrivateTmp=, an abstract or
    /// unnamed socket) cannot be compared: the caller logs the note returned, and `--socket`
    /// names it.
    static func checkInherited(descriptor: Int32, path: String) throws -> String? {
        var bound = [CChar](repeating: 0, count: Int(csysv_sun_path_max()) + 1)
        let kind = csysv_listening_unix_stream(descriptor, &bound, bound.count)
        guard kind >= 0 else {
            let error = Errno.current
            throw ConfigurationError("socket activation: passed descriptor \(descriptor) cannot be used: \(error)")
        }
        guard kind == 1 else {
            throw ConfigurationError("socket activation: passed descriptor \(descriptor) is not a listening Unix stream socket (check the unit's ListenStream=)")
        }
        let boundPath = String(decoding: bound.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        var theirs = stat()
        guard !boundPath.isEmpty, stat(boundPath, &theirs) == 0 else {
            return "the passed socket's file (\(boundPath.isEmpty ? "unnamed or abstract" : boundPath)) is not visible here; taking --socket \(path) as its name"
        }
        var ours = stat()
        guard stat(path, &ours) == 0, ours.st_dev == theirs.st_dev, ours.st_ino == theirs.st_ino else {
            throw ConfigurationError("socket activation: the passed socket is bound to \(boundPath), not to --socket \(path); give --socket the unit's ListenStream= path")
        }
        return nil
    }

    /// Adopts an inherited listening socket (socket activation), checked by `checkInherited`.
    static func adopt(descriptor: Int32, path: String) throws -> Listener {
        _ = try valueOrErrno("fcntl(O_NONBLOCK)") { csysv_set_nonblocking(descriptor, 1) }.get()
        _ = try valueOrErrno("fcntl(FD_CLOEXEC)") { csysv_set_cloexec(descriptor, 1) }.get()
        return Listener(socket: SocketFD(raw: descriptor), path: path, device: 0, inode: 0, inherited: true)
    }

    /// Checks the path, binds with `mode` (set through umask so the file never exists with looser
    /// bits), gives the file to `group` if one is named, and listens.
    /// Holds the socket directory's `DirectoryLock` from the probe to the listen, so that two
    /// masters starting on one path cannot both take it.
    static func open(path: String, mode: mode_t, group: gid_t? = nil, backlog: Int32, logger: Logger) throws -> Listener {
        var reason = ""
        let lock = DirectoryLock.lock(directoryOf: path, timeout: 5, reason: &reason)
        defer { lock?.unlock() }
        if lock == nil {
            logger.warning("starting without the start-up lock: another master starting on this socket at this moment could take it over",
                           metadata: ["socket": "\(path)", "reason": "\(reason)"])
        }
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
        var bound = false
        do {
            let previous = umask(0o777 & ~mode)
            defer { umask(previous) }
            do { try socket.bind(path: path) } catch let error as SystemError where error.errno == .fileNameTooLong {
                throw ConfigurationError("\(path): longer than a Unix socket path may be (\(unixSocketPathMax) bytes)")
            }
            bound = true
            // The umask gave the file `mode`, unless the directory has a default ACL. chmod would
            // follow a symlink put in the socket's place since the bind (a root master in a
            // directory others may write): the name is checked and changed without following.
            var made = stat()
            guard lstat(path, &made) == 0, made.st_mode & S_IFMT == S_IFSOCK else {
                throw ConfigurationError("\(path): the socket file was replaced right after its bind")
            }
            if made.st_mode & 0o7777 != mode && fchmodat(AT_FDCWD, path, mode, AT_SYMLINK_NOFOLLOW) != 0 {
                // glibc before 2.32, or without /proc, cannot do it: chmod, if the name still
                // leads to the socket bound (a small window, as before this check existed).
                let error = Errno.current
                var now = stat()
                guard error == .notSupported || error.rawValue == EOPNOTSUPP,
                      lstat(path, &now) == 0, now.st_dev == made.st_dev, now.st_ino == made.st_ino, chmod(path, mode) == 0 else {
                    throw SystemError("fchmodat(\(path), AT_SYMLINK_NOFOLLOW)", error)
                }
            }
            // Before listen: until then a connect is refused, so the group is right before anyone
            // can get in through it. lchown: the name is not followed if it was replaced.
            if let group, lchown(path, uid_t.max, group) != 0 {
                throw ConfigurationError("--socket-group: \(SystemError("lchown(\(path), group \(group))", .current))")
            }
            #if DEBUG
            // Debug builds only: widens the window in which the file exists but a connect is
            // refused, so a test can start another master inside it.
            if let delay = getenv("POOL_DEBUG_BIND_DELAY_MS").flatMap({ UInt32(String(cString: $0)) }) {
                logger.info("debug: holding between bind and listen", metadata: ["socket": "\(path)", "milliseconds": "\(delay)"])
                usleep(delay * 1000)
            }
            #endif
            try socket.listen(backlog: backlog)
            var st = stat()
            guard lstat(path, &st) == 0 else { throw SystemError("lstat(\(path))", .current) }
            return Listener(socket: socket, path: path, device: UInt64(st.st_dev), inode: UInt64(st.st_ino), inherited: false)
        } catch {
            // The file bind made is ours and useless now: it would be a stale socket.
            if bound { unlink(path) }
            socket.close()
            throw error
        }
    }

    /// Unlinks the socket file if it is still ours (another server may have replaced it).
    func unlinkIfOurs() {
        guard !inherited else { return }
        var st = stat()
        guard lstat(path, &st) == 0, UInt64(st.st_dev) == device, UInt64(st.st_ino) == inode else { return }
        unlink(path)
    }
}
