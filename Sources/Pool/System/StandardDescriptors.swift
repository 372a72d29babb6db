import CSysV
import Glibc

/// Descriptors 0, 1 and 2 of a process started with some of them closed (`2>&-`, a careless
/// supervisor). Left closed, the next open takes the number: the log file's open would get 2 and
/// its reopen close it again, or the listening socket would get 1 and stdout text would go to it.
public enum StandardDescriptors {
    /// Opens /dev/null on each of 0, 1 and 2 that is closed. Call it before anything else opens a
    /// descriptor.
    ///
    /// The corresponding C functions are `fcntl(F_GETFD)`, `open` and `dup2`.
    public static func ensureOpen() {
        for fd: Int32 in 0...2 where csysv_fd_is_open(fd) == 0 {
            // The lowest free number is this one: every lower one is open by now.
            let opened = open("/dev/null", fd == 0 ? O_RDONLY : O_WRONLY)
            if opened >= 0 && opened != fd { _ = dup2(opened, fd); close(opened) }
        }
    }
}
