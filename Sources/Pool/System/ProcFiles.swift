import Glibc

/// Reads a whole small file (from /proc or /sys) as text.
func readSmallFile(_ path: String) -> String? {
    let fd = open(path, O_RDONLY | O_CLOEXEC)
    guard fd >= 0 else { return nil }
    defer { close(fd) }
    var bytes: [UInt8] = []
    var chunk = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        if n < 0 && Glibc.errno == EINTR { continue }
        if n <= 0 { break }
        bytes.append(contentsOf: chunk[0..<n])
    }
    return String(decoding: bytes, as: UTF8.self)
}

/// A process's state letter and start time (clock ticks since boot) from `/proc/PID/stat`: fields
/// 3 and 22, counted after the command name, which may itself hold spaces and parentheses.
func processStatus(_ pid: pid_t) -> (state: Character, startTime: UInt64)? {
    // Bytes, not Characters: a name ending in a combining character would fuse with ")".
    guard let stat = readSmallFile("/proc/\(pid)/stat")?.utf8, let close = stat.lastIndex(of: UInt8(ascii: ")")) else { return nil }
    let fields = stat[stat.index(after: close)...].split(separator: UInt8(ascii: " "))
    guard fields.count > 19, let state = fields[0].first, let started = UInt64(String(decoding: fields[19], as: UTF8.self)) else {
        return nil
    }
    return (Character(Unicode.Scalar(state)), started)
}

/// Whether `pid` is a running process: it exists and is not a zombie (dead, not yet reaped by its
/// parent), which `kill(pid, 0)` alone would count as alive.
public func processIsRunning(_ pid: pid_t) -> Bool {
    // kill(0 or a negative pid, 0) asks about a process group, not a process.
    guard pid > 0, kill(pid, 0) == 0 || Glibc.errno == EPERM else { return false }
    // No /proc to look in (a chroot, a minimal container): kill's answer stands.
    guard let (state, _) = processStatus(pid) else { return true }
    return state != "Z" && state != "X"
}

/// A file holding one integer, such as /proc/sys/kernel/msgmax.
func readProcInt(_ path: String) -> Int? {
    readSmallFile(path).flatMap { Int($0.trimmingWhitespace()) }
}

extension String {
    func trimmingWhitespace() -> String {
        var s = Substring(self)
        while let c = s.first, c.isWhitespace { s.removeFirst() }
        while let c = s.last, c.isWhitespace { s.removeLast() }
        return String(s)
    }
}
