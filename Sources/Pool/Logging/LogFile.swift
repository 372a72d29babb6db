import CSysV
import Glibc
import SystemPackage

/// Logging to a file instead of stderr, by putting the file on descriptor 2: every line, in the
/// master and in workers (which inherit it), and anything the runtime prints on a crash, lands in
/// the file. Reopening (SIGUSR1, after logrotate renamed it) repeats the open + dup2.
public enum LogFile {
    nonisolated(unsafe) private static var path: String?
    /// Workers run as another user (`redirectStandardError(to:workersUID:)`).
    nonisolated(unsafe) private static var untrustedDirectory = false

    /// Sends stderr to `path` (appending, created 0640). At start a FIFO is waited for (opened
    /// blocking until it has a reader), as a shell's `2>fifo` would.
    ///
    /// `workersUID`: the workers run as this other user (`--user`). The master's opens (this one
    /// and every SIGUSR1 reopen) then follow no symlink and take only a FIFO or a regular file
    /// with one link: were the log's directory writable by that user, a name it replaced with a
    /// link to a system file would have the root master append to it — and hand the descriptor
    /// to every worker.
    public static func redirectStandardError(to path: String, workersUID: uid_t? = nil) throws {
        self.path = path
        untrustedDirectory = workersUID.map { $0 != geteuid() } ?? false
        // With --user not even at the start: a FIFO the workers' user planted, with no reader,
        // would hold the start for good (systemd restarting it into the same wait).
        try open(waitingForReader: !untrustedDirectory)
    }

    /// Opens the path again and puts it on descriptor 2 (after a rename, a new file appears).
    /// Never waits: a FIFO put there with no reader (a log collector restarting, or something
    /// the workers' user planted) fails with ENXIO and the old descriptor stays, where a blocking
    /// open would hold the master's loop until a reader came.
    ///
    /// The corresponding C functions are `open` and `dup2`.
    public static func reopen() throws {
        try open(waitingForReader: false)
    }

    /// The flags of every open; `O_NONBLOCK` for all but a start's (see `reopen`).
    private static func openFlags(waitingForReader: Bool) -> Int32 {
        O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY | (waitingForReader ? 0 : O_NONBLOCK)
            | (untrustedDirectory ? O_NOFOLLOW : 0)
    }

    private static func open(waitingForReader: Bool) throws {
        guard let path else { return }
        let flags = openFlags(waitingForReader: waitingForReader)
        let opened = valueOrErrno("open(\(path))") { csysv_open_creating(path, flags, 0o640) }
        if untrustedDirectory, case .failure(let error) = opened, error.errno == .tooManySymbolicLinkLevels {
            throw SystemError("open(\(path)): a symlink, which with --user is not followed (give the file itself; for a container's stderr such as /dev/stderr, leave --log-file out)", error.errno)
        }
        let fd = try opened.get()
        if untrustedDirectory {
            var st = stat()
            let kind = fstat(fd, &st) == 0 ? st.st_mode & S_IFMT : 0
            guard kind == S_IFIFO || kind == S_IFCHR || (kind == S_IFREG && st.st_nlink == 1) else {
                close(fd)
                throw SystemError("open(\(path)): with --user, a FIFO, a device such as /dev/null, or a regular file with one link (not a symlink, not a hard link)", .notPermitted)
            }
        }
        // The description is shared with the workers, whose writes wait (MasterLogOutput gives
        // the master its own non-blocking one): O_NONBLOCK was for the open only.
        if !waitingForReader && csysv_set_nonblocking(fd, 0) != 0 {
            let error = SystemError("fcntl(F_SETFL)", .current)
            close(fd)
            throw error
        }
        // Opened on 2 itself (it was closed): it is in place, and closing it would close the log.
        guard fd != 2 else {
            // Opened with O_CLOEXEC like any other: as stderr it must reach what handlers exec.
            _ = csysv_set_cloexec(2, 0)
            return
        }
        defer { close(fd) }
        _ = try valueOrErrno("dup2") { dup2(fd, 2) }.get()
    }

    /// Whether a log file is in use.
    public static var isActive: Bool { path != nil }

    /// In a worker: SIGUSR1 reopens at once, in its handler (`csysv_log_reopen_handler`: the same
    /// open, checks and dup2, async-signal-safe). A worker spends its life blocked in msgrcv or
    /// in a job; a reopen left to the loop or the next line could wait for either, holding the
    /// renamed file (and its disk space, once deleted) and sending a crash's output there.
    static func enableReopenOnSignal() {
        guard let path else { return }
        if csysv_log_reopen_install(path, openFlags(waitingForReader: false), untrustedDirectory ? 1 : 0) != 0 {
            // ENAMETOOLONG: a path of 4096 bytes or more; else sigaction's error.
            let error = Glibc.errno
            let line = "\(getpid()): SIGUSR1 will not reopen the log file in this worker (errno \(error))\n"
            _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
        }
        // A rotation signalled since the fork found SIGUSR1 still ignored (the fork window's
        // default for a worker) and was lost: opened once now, the file is the current one.
        reopenReportingFailure()
    }

    /// A worker's reopen; a failure (a worker whose handler dropped privileges may not open a file
    /// the master created) is said in the file it keeps writing to.
    private static func reopenReportingFailure() {
        do { try reopen() } catch {
            // The signal handler's format (`csysv_log_reopen_handler`), one for both.
            let errno = (error as? SystemError)?.errno.rawValue ?? 0
            let line = "\(getpid()): cannot reopen the log file; still writing to the one opened before (errno \(errno))\n"
            _ = line.withCString { Glibc.write(2, $0, strlen($0)) }
        }
    }
}
