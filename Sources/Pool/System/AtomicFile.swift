import CSysV
import Glibc
import SystemPackage

/// Writes `text` to `path` atomically: a temporary file in the same directory, renamed over the
/// target, so a reader never sees half a file (the state file, the pid file, pool-bench's ready
/// file). The temporary is created new (`O_EXCL | O_NOFOLLOW`): in a directory others can write
/// (/tmp, /run/…) a symlink planted at its name would otherwise let a root master truncate the
/// file it points to; a rename replaces a symlink at `path` itself rather than following it.
/// `mode` passes through the umask. No fsync: the master calls this from its event loop (scaling, a recreated queue),
/// which must not wait on the disk, and what these files record does not outlive a reboot.
///
/// The corresponding C functions are `open`, `write` and `rename`.
public func writeFileAtomically(_ text: String, to path: String, mode: mode_t) throws {
    let temporary = path + temporaryInfix + "\(getpid())"
    // Ours from an earlier master with this pid, or planted: either way not to be written through.
    unlink(temporary)
    let fd = try valueOrErrno("open(\(temporary))") {
        csysv_open_creating(temporary, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
    }.get()
    // writeAll goes on after a short write and retries EINTR; a full disk throws ENOSPC.
    var failure: SystemError? = nil
    do {
        _ = try FileDescriptor(rawValue: fd).writeAll(Array(text.utf8))
    } catch let error as Errno {
        failure = SystemError("write(\(temporary))", error)
    } catch {
        failure = SystemError("write(\(temporary))", .ioError)
    }
    // NFS, FUSE and quotas may report a failed write only here: a temporary that may be cut short
    // must not replace the good file. (EINTR is not retried: the descriptor is gone either way.)
    if Glibc.close(fd) != 0 && failure == nil && Glibc.errno != EINTR {
        failure = SystemError("close(\(temporary))", .current)
    }
    if let failure {
        unlink(temporary)
        throw failure
    }
    guard rename(temporary, path) == 0 else {
        let error = SystemError("rename(\(path))", .current)
        unlink(temporary)
        throw error
    }
}

/// Between a target's name and the writer's pid in `writeFileAtomically`'s temporary name.
let temporaryInfix = ".tmp."

/// `path`'s directory (`.` for a bare name, `/` at the root) and its last component.
func splitPath(_ path: String) -> (directory: String, name: String) {
    guard let slash = path.lastIndex(of: "/") else { return (".", path) }
    return (slash == path.startIndex ? "/" : String(path[..<slash]), String(path[path.index(after: slash)...]))
}

/// Reads back a small file this program writes (the state file, the pid file) where others may
/// have put something else since: not through a symlink at `path`, not waiting on a FIFO there,
/// only a regular file of at most `limit` bytes (`nil` otherwise, or when it is missing). Also
/// returns the file's owner, which tells a record its user wrote from one planted beside it.
///
/// The corresponding C functions are `open`, `fstat` and `read`.
public func readWrittenFile(_ path: String, limit: Int) -> (bytes: [UInt8], owner: uid_t)? {
    let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { Glibc.close(fd) }
    var info = stat()
    guard fstat(fd, &info) == 0, info.st_mode & S_IFMT == S_IFREG, info.st_size <= limit else { return nil }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while bytes.count <= limit {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && Glibc.errno == EINTR { continue }
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[..<n])
    }
    return bytes.count <= limit ? (bytes, info.st_uid) : nil
}
