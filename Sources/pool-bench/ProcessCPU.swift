import Glibc

/// CPU time of a server: its master and the master's children.
///
/// Workers may die and be replaced during a run, so one sample is the sum of
/// - the master's own CPU time,
/// - the master's cutime + cstime: every child it has already reaped (a dead worker's whole life),
/// - the CPU time of each live process whose parent is the master (found by scanning /proc/*/stat).
/// The difference of two samples is then the CPU the whole pool used in between, whether or not
/// workers came and went (a worker that died but is not yet reaped is missed until it is).
/// Live processes are read in nanoseconds from /proc/PID/task/*/schedstat (the scheduler's own
/// sum, per thread); /proc/PID/stat counts whole clock ticks (10 ms), which over a 2-second run of
/// three processes is a few percent. Reaped children exist only in ticks.
struct ServerCPUSample {
    var masterNanos: UInt64 = 0
    var reapedNanos: UInt64 = 0
    var workerNanos: UInt64 = 0
    var workers: [Int32] = []
    var masterAlive = false

    var totalNanos: UInt64 { masterNanos + reapedNanos + workerNanos }

    static let ticksPerSecond = UInt64(sysconf(Int32(_SC_CLK_TCK)))

    /// A worker reaped between the master's read and the scan would be in neither sum: the scan
    /// is taken again (up to three times) while the master's reaped-children time moved under it.
    static func take(masterPID: Int32) -> ServerCPUSample {
        var sample = ServerCPUSample()
        for _ in 0..<3 {
            sample = takeOnce(masterPID: masterPID)
            guard sample.masterAlive, let after = ProcStat.read(pid: masterPID) else { return sample }
            if (after.cutime + after.cstime) * 1_000_000_000 / ticksPerSecond == sample.reapedNanos { break }
        }
        return sample
    }

    private static func takeOnce(masterPID: Int32) -> ServerCPUSample {
        var sample = ServerCPUSample()
        guard let master = ProcStat.read(pid: masterPID) else { return sample }
        sample.masterAlive = true
        sample.masterNanos = cpuNanos(pid: masterPID, stat: master)
        sample.reapedNanos = (master.cutime + master.cstime) * 1_000_000_000 / ticksPerSecond
        guard let dir = opendir("/proc") else { return sample }
        defer { closedir(dir) }
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> String in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            guard let pid = Int32(name), pid != masterPID else { continue }
            guard let stat = ProcStat.read(pid: pid), stat.ppid == masterPID else { continue }
            sample.workerNanos += cpuNanos(pid: pid, stat: stat)
            sample.workers.append(pid)
        }
        sample.workers.sort()
        return sample
    }

    /// A live process's CPU time: its threads' schedstat sums, or its stat ticks without them.
    static func cpuNanos(pid: Int32, stat: ProcStat) -> UInt64 {
        let ticks = (stat.utime + stat.stime) * 1_000_000_000 / ticksPerSecond
        guard let dir = opendir("/proc/\(pid)/task") else { return ticks }
        defer { closedir(dir) }
        var total: UInt64 = 0
        var threads = 0
        while let entry = readdir(dir) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { raw -> String in
                String(decoding: raw.prefix(while: { $0 != 0 }), as: UTF8.self)
            }
            guard Int32(name) != nil else { continue }
            guard let nanos = firstNumber(of: "/proc/\(pid)/task/\(name)/schedstat") else { return ticks }
            total += nanos
            threads += 1
        }
        return threads > 0 ? total : ticks
    }

    /// The first space-separated number in a small /proc file.
    static func firstNumber(of path: String) -> UInt64? {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 128)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n > 0, let end = buffer[0..<n].firstIndex(where: { $0 < UInt8(ascii: "0") || $0 > UInt8(ascii: "9") }),
              end > 0 else { return nil }
        return UInt64(String(decoding: buffer[0..<end], as: UTF8.self))
    }
}

/// The fields of /proc/PID/stat that the benchmark needs (times in clock ticks).
struct ProcStat {
    var ppid: Int32
    var utime: UInt64
    var stime: UInt64
    var cutime: UInt64
    var cstime: UInt64

    static func read(pid: Int32) -> ProcStat? {
        let fd = open("/proc/\(pid)/stat", O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { return nil }
        defer { close(fd) }
        var buffer = [UInt8](repeating: 0, count: 1024)
        let n = buffer.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        guard n > 0 else { return nil }
        // Field 2 (comm) is in parentheses and may hold spaces or ')': parse after the last ')'.
        guard let close = buffer[0..<n].lastIndex(of: UInt8(ascii: ")")) else { return nil }
        let fields = buffer[(close + 1)..<n].split(separator: UInt8(ascii: " "))
        // fields[0] = state (field 3), [1] = ppid (4), … [11] = utime (14), [12] = stime (15),
        // [13] = cutime (16), [14] = cstime (17).
        guard fields.count > 14 else { return nil }
        func number(_ i: Int) -> UInt64? { UInt64(String(decoding: fields[i], as: UTF8.self)) }
        guard let ppid = number(1), let u = number(11), let s = number(12),
              let cu = number(13), let cs = number(14) else { return nil }
        return ProcStat(ppid: Int32(truncatingIfNeeded: ppid), utime: u, stime: s, cutime: cu, cstime: cs)
    }
}

/// CPU time of this process (all its threads): user + system, in seconds.
func selfCPUSeconds() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF.rawValue, &usage)
    func seconds(_ t: timeval) -> Double { Double(t.tv_sec) + Double(t.tv_usec) / 1e6 }
    return seconds(usage.ru_utime) + seconds(usage.ru_stime)
}
