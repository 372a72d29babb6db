import CSysV
import Glibc
import SystemPackage

/// An exclusive advisory lock on the directory that holds a path, held for a few system calls.
///
/// Masters starting on one socket path take it around probe → unlink → bind → listen. Without
/// it, a second master can find the first one's socket bound but not yet listening (a connect is
/// refused, as at a stale socket), unlink it and bind its own: the first then listens on a name
/// nobody can reach. A lock on the directory leaves no file behind (a lock file would need
/// removing, with races of its own) and `flock` works on directories on Linux.
struct DirectoryLock {
    private let descriptor: Int32

    /// Directories this process found locked for a whole timeout: anyone who may read a directory
    /// may lock it (another user, in /tmp), and a start takes the lock up to four times. After one
    /// timeout the others try once, without waiting. (Not synchronized: the master, which is
    /// single-threaded, and `pool-server cleanup` lock; a multi-threaded embedder calling
    /// `recoverStaleState` from several threads at once could race on this set.)
    nonisolated(unsafe) private static var heldByOthers: Set<String> = []

    /// Locks the directory holding `path`, polling for at most `timeout` seconds: a holder keeps
    /// it for microseconds, and the master must not hang on someone else's lock at start. nil if
    /// the directory cannot be opened for reading or stays locked; `reason` says which.
    ///
    /// The corresponding C function is `flock`.
    static func lock(directoryOf path: String, timeout: Double, reason: inout String) -> DirectoryLock? {
        let directory = splitPath(path).directory
        let descriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard descriptor >= 0 else {
            reason = "\(SystemError("open(\(directory))", .current))"
            return nil
        }
        let deadline = monotonicNanoseconds() + (heldByOthers.contains(directory) ? 0 : Int64(timeout * 1e9))
        while true {
            switch valueOrErrno("flock(\(directory))", { csysv_flock_exclusive_nowait(descriptor) }) {
            case .success:
                return DirectoryLock(descriptor: descriptor)
            case .failure(let error) where error.errno == .resourceTemporarilyUnavailable && monotonicNanoseconds() < deadline:
                usleep(1_000)
            case .failure(let error):
                if error.errno == .resourceTemporarilyUnavailable {
                    heldByOthers.insert(directory)
                    reason = "\(directory) is locked by another process (given up after \(timeout) s once)"
                } else {
                    reason = "\(error)"
                }
                close(descriptor)
                return nil
            }
        }
    }

    /// Gives the lock back (closing the only descriptor of its open file does).
    func unlock() {
        close(descriptor)
    }
}
