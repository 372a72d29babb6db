import Glibc

/// `--pid-file`: the master's pid as text (`1234\n`), for what finds a daemon by file — an init
/// script, logrotate's `postrotate kill -USR1 $(cat …)`, a monitor — as Gunicorn's `--pid` and
/// PHP-FPM's `pid` write it. Written once the pool serves; removed when the master exits, unless
/// another master has written its own pid there since.
struct PIDFile {
    let path: String

    /// Writes this process's pid to `path` (atomically, mode 0644 less the umask: others may read
    /// it, as they may `ps`).
    static func write(to path: String) throws -> PIDFile {
        do { try writeFileAtomically("\(getpid())\n", to: path, mode: 0o644) } catch {
            throw ConfigurationError("--pid-file \(path): \(error)")
        }
        return PIDFile(path: path)
    }

    /// Removes the file if it still names this process. Read as the write was made: not through
    /// a symlink, not waiting on a FIFO planted there, only a regular file, only its first bytes
    /// (the master is on its way out and must not hang on it).
    func removeIfOurs() {
        guard let (bytes, _) = readWrittenFile(path, limit: 32),
              pid_t(String(decoding: bytes, as: UTF8.self).prefix { $0 != "\n" }) == getpid() else { return }
        unlink(path)
    }
}
