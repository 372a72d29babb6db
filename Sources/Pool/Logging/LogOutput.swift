import CSysV
import Glibc

/// Where the master's log lines go without ever blocking its event loop.
///
/// Descriptor 2 is shared with the workers (and often with a shell), so its file status flags are
/// not ours to change. When it is a pipe or FIFO (a journald stream is a socket, `| tee` a pipe)
/// or a terminal (stopped with Ctrl-S, or behind a stalled ssh, it blocks writers), the master
/// reopens it through /proc/self/fd/2, which gives a description of its own that can be
/// non-blocking; a socket is written with `MSG_DONTWAIT`. A line the reader has no room for is
/// dropped and counted, and the next line that gets through is preceded by a count of them. A
/// regular file is written as before (it never reports "full"). Workers keep the blocking
/// descriptor: a worker may wait for its log, the master may not.
enum MasterLogOutput {
    /// `pollFirst`: a pipe or terminal with no description of its own (no /proc, no descriptor
    /// free when it was prepared): written only when poll says it has room, one pipe buffer's
    /// worth at most per write, which a pipe with room takes without waiting.
    enum Mode { case blocking, privatePipe(Int32), terminal(Int32), socket, pollFirst }

    nonisolated(unsafe) private static var mode: Mode?
    /// Lines dropped since the last one written.
    nonisolated(unsafe) static var dropped = 0

    /// Chooses the mode for what descriptor 2 is now (again after a log file was reopened onto it).
    static func prepare() {
        switch mode {
        case .privatePipe(let fd), .terminal(let fd): close(fd)
        default: break
        }
        mode = .blocking
        var info = stat()
        guard fstat(2, &info) == 0 else { return }
        let kind = info.st_mode & S_IFMT
        // Of the character devices only a terminal blocks (/dev/null above all never does).
        let terminal = kind == S_IFCHR && isatty(2) != 0
        if kind == S_IFIFO || terminal {
            let fd = open("/proc/self/fd/2", O_WRONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY)
            mode = fd < 0 ? .pollFirst : terminal ? .terminal(fd) : .privatePipe(fd)
        } else if kind == S_IFSOCK {
            mode = .socket
        }
    }

    /// In a worker just forked: its copy of the master's own descriptor was closed with the rest,
    /// and its number may be reused by a handler's file. A logger shared with the master (a library
    /// user's default) writes descriptor 2 from now on, blocking, as a worker may.
    static func becomeWorker() {
        mode = .blocking
        dropped = 0
    }

    /// Waits up to `milliseconds` for the log's reader to have room (true if it has). Only for the
    /// master's exit, when the loop no longer runs: lines dropped last would otherwise leave no
    /// trace (their count goes out ahead of the next line, and there is none).
    static func waitForRoom(milliseconds: Int32) -> Bool {
        if mode == nil { prepare() }
        let fd: Int32
        switch mode ?? .blocking {
        case .blocking: return true
        case .privatePipe(let own), .terminal(let own): fd = own
        case .socket, .pollFirst: fd = 2
        }
        var room = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        let end = monotonicNanoseconds() + Int64(milliseconds) * 1_000_000
        while true {
            let left = Int32(clamping: max(0, (end - monotonicNanoseconds()) / 1_000_000))
            let n = poll(&room, 1, left)
            if n < 0 && errno == EINTR { continue }
            return n == 1 && room.revents & Int16(POLLOUT) != 0
        }
    }

    /// Writes `count` bytes at `bytes` once: the bytes written, or -1 with errno (EAGAIN: no room).
    static func write(_ bytes: UnsafeRawPointer, _ count: Int) -> Int {
        if mode == nil { prepare() }
        switch mode ?? .blocking {
        case .blocking: return Glibc.write(2, bytes, count)
        case .privatePipe(let fd): return Glibc.write(fd, bytes, count)
        // SIGTTOU held: in the background with `stty tostop`, it would restart the write forever.
        case .terminal(let fd): return csysv_write_holding_signal(fd, bytes, count, SIGTTOU)
        case .socket: return send(2, bytes, count, Int32(MSG_DONTWAIT) | Int32(MSG_NOSIGNAL))
        case .pollFirst:
            var room = pollfd(fd: 2, events: Int16(POLLOUT), revents: 0)
            guard poll(&room, 1, 0) == 1, room.revents & Int16(POLLOUT) != 0 else {
                errno = EAGAIN
                return -1
            }
            return csysv_write_holding_signal(2, bytes, min(count, Int(PIPE_BUF)), SIGTTOU)
        }
    }
}
