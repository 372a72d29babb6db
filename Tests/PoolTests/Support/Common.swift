import Foundation
import Glibc
import Pool
import Testing

// Helpers every integration suite shares: /proc, System V queues, server logs and state files,
// launching and stopping servers, running commands, and raw framed I/O. One copy of each; where a
// suite needs something that really behaves differently it keeps its own and says why.

// MARK: - /proc

/// The fields of /proc/PID/stat after "PID (COMM)": [0] is field 3 (state), [n] is field n + 3
/// (the last one keeps its newline). Nil once the pid is gone (a zombie still has its line).
func procStatFields(_ pid: pid_t) -> [Substring]? {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
          let close = stat.lastIndex(of: ")") else { return nil }
    return stat[stat.index(after: close)...].split(separator: " ")
}

/// The state letter of /proc/PID/stat ("R", "S", "T", "Z", ...), nil if the pid is gone.
func processState(_ pid: pid_t) -> Character? { procStatFields(pid)?.first?.first }

/// The words of line `field` ("Uid", "SigBlk", …) of /proc/PID/status; empty if the pid is gone.
func procStatusField(_ field: String, of pid: pid_t) -> [String] {
    guard let status = try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8),
          let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }) else { return [] }
    return line.dropFirst(field.count + 1).split(whereSeparator: \.isWhitespace).map(String.init)
}

/// Whether `signo` is in the signal set `field` ("SigBlk", "SigIgn", "SigCgt", "SigPnd",
/// "ShdPnd") of /proc/PID/status; false if the pid is gone.
func signalSet(_ field: String, of pid: pid_t, contains signo: Int32) -> Bool {
    guard let word = procStatusField(field, of: pid).first, let mask = UInt64(word, radix: 16) else { return false }
    return mask & (1 << UInt64(signo - 1)) != 0
}

/// True if `pid` exists and is not a zombie.
func processIsAlive(_ pid: pid_t) -> Bool {
    guard let state = processState(pid) else { return false }
    return state != "Z" && state != "X"
}

/// Children of `pid` (live or zombie), from /proc.
func childPIDs(of pid: pid_t) -> [pid_t] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    var children: [pid_t] = []
    for entry in entries {
        guard let candidate = pid_t(entry), let fields = procStatFields(candidate) else { continue }
        if fields.count > 1, pid_t(fields[1]) == pid { children.append(candidate) }
    }
    return children.sorted()
}

/// Processes of the session `sid` leads (field 6 of /proc/PID/stat), itself left out.
func sessionMembers(_ sid: pid_t) -> [pid_t] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    return entries.compactMap { entry in
        guard let candidate = pid_t(entry), candidate != sid, let fields = procStatFields(candidate),
              fields.count > 3, pid_t(fields[3]) == sid else { return nil }
        return candidate
    }.sorted()
}

/// CPU time (utime + stime) of a process, in clock ticks (1/100 s on Linux).
func cpuTicks(_ pid: pid_t) -> Int? {
    // utime is field 14, stime field 15.
    guard let fields = procStatFields(pid), fields.count > 12,
          let user = Int(fields[11]), let system = Int(fields[12]) else { return nil }
    return user + system
}

/// SIGKILLs every pid of `pids` that is still alive (never fails).
/// Only processes of ours by name: a pid noted earlier may belong to anyone once its process
/// has gone and the numbers wrapped (the suite forks thousands; the tests run as root).
func killLiving(_ pids: some Sequence<pid_t>) {
    for pid in pids where processIsAlive(pid) && isPoolProcess(pid) { kill(pid, SIGKILL) }
}

/// A master or a worker of ours (a worker is `pool-server` until it names itself).
func isPoolProcess(_ pid: pid_t) -> Bool {
    guard let comm = try? String(contentsOfFile: "/proc/\(pid)/comm", encoding: .utf8) else { return false }
    return ["pool-server", "pool-worker"].contains(comm.trimmingCharacters(in: .whitespacesAndNewlines))
}

/// True if something (a file, socket, dangling link...) is at `path` (lstat).
func fileExists(_ path: String) -> Bool {
    var st = stat()
    return lstat(path, &st) == 0
}

// MARK: - System V queues (/proc/sysvipc/msg)

/// One row of /proc/sysvipc/msg.
struct QueueRow {
    var id: Int32
    var messages: Int
    var lastSendPID: pid_t
    var lastReceivePID: pid_t
}

/// Every System V queue on the system now, with depth and last sender/receiver.
func queueRows() -> [QueueRow] {
    guard let text = try? String(contentsOfFile: "/proc/sysvipc/msg", encoding: .utf8) else { return [] }
    var rows: [QueueRow] = []
    // key msqid perms cbytes qnum lspid lrpid uid gid cuid cgid stime rtime ctime
    for line in text.split(separator: "\n").dropFirst() {
        let f = line.split(separator: " ", omittingEmptySubsequences: true)
        guard f.count >= 7, let id = Int32(f[1]), let qnum = Int(f[4]),
              let lspid = pid_t(f[5]), let lrpid = pid_t(f[6]) else { continue }
        rows.append(QueueRow(id: id, messages: qnum, lastSendPID: lspid, lastReceivePID: lrpid))
    }
    return rows
}

func queueRow(_ id: Int32) -> QueueRow? { queueRows().first { $0.id == id } }

/// System V queues that exist now, by id.
func existingQueueIDs() -> Set<Int32> { Set(queueRows().map(\.id)) }

/// Queues last sent to or received from by one of `pids`.
func queuesLastUsed(by pids: Set<pid_t>) -> Set<Int32> {
    Set(queueRows().filter { pids.contains($0.lastSendPID) || pids.contains($0.lastReceivePID) }.map(\.id))
}

/// Removes every queue of `ids` that still exists (never fails): for clean-up after a test.
func removeQueues(_ ids: some Sequence<Int32>) {
    let existing = existingQueueIDs()
    for id in ids where existing.contains(id) { _ = try? MessageQueue(id: id).remove() }
}

// MARK: - Server logs and state files

/// Integer after ` key=` in a log line's metadata.
func intField(_ line: Substring, _ key: String) -> Int? {
    guard let range = line.range(of: " \(key)=") else { return nil }
    return Int(line[range.upperBound...].prefix { $0.isNumber })
}

/// Worker pids from the master's "worker spawned ... pid=N" lines.
func spawnedWorkerPIDs(inLog log: String) -> Set<pid_t> {
    Set(log.split(separator: "\n").filter { $0.contains("worker spawned") }.compactMap { intField($0, "pid").map(pid_t.init) })
}

/// Queue ids from the master's "worker spawned ... queue=N" lines (present even when the server
/// failed before logging "pool started").
func spawnedQueueIDs(inLog log: String) -> Set<Int32> {
    Set(log.split(separator: "\n").filter { $0.contains("worker spawned") }.compactMap { intField($0, "queue").map(Int32.init) })
}

/// The list of a "pool started ... queues=[A, B]" line, in order.
func startedQueueIDs(inLine line: Substring) -> [Int32] {
    guard let range = line.range(of: "queues=[") else { return [] }
    let rest = line[range.upperBound...].prefix { $0 != "]" }
    return rest.split(separator: ",").compactMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
}

/// Queue ids a log names: every "pool started" list and every spawned worker's queue.
func loggedQueueIDs(inLog log: String) -> Set<Int32> {
    let started = log.split(separator: "\n").filter { $0.contains("pool started") }.flatMap { startedQueueIDs(inLine: $0) }
    return spawnedQueueIDs(inLog: log).union(started)
}

/// One line the `log` handler wrote: `child pid N recv LEN bytes: MSG`.
struct RecvLine: Hashable, CustomStringConvertible {
    var pid: pid_t
    var length: Int
    /// The message as the handler rendered it (non-printables escaped).
    var message: String

    var description: String { "pid \(pid) len \(length) \(message)" }
}

/// Every `recv` line of a server log, in log order. Trailing ` key=value` metadata the log
/// handler appends (e.g. ` slot=0`) is stripped from the message.
func recvLines(in log: String) -> [RecvLine] {
    var lines: [RecvLine] = []
    for line in log.split(separator: "\n", omittingEmptySubsequences: true) {
        guard let marker = line.range(of: "child pid ") else { continue }
        var rest = line[marker.upperBound...]
        guard let space = rest.firstIndex(of: " "), let pid = pid_t(rest[..<space]) else { continue }
        rest = rest[space...]
        guard rest.hasPrefix(" recv ") else { continue }
        rest = rest.dropFirst(" recv ".count)
        guard let space2 = rest.firstIndex(of: " "), let length = Int(rest[..<space2]) else { continue }
        rest = rest[space2...]
        guard rest.hasPrefix(" bytes: ") else { continue }
        rest = rest.dropFirst(" bytes: ".count)
        while let lastSpace = rest.lastIndex(of: " ") {
            let token = rest[rest.index(after: lastSpace)...]
            guard let equals = token.firstIndex(of: "="), equals != token.startIndex,
                  token[..<equals].allSatisfy({ $0.isLetter || $0 == "-" || $0 == "_" }) else { break }
            rest = rest[..<lastSpace]
        }
        lines.append(RecvLine(pid: pid, length: length, message: String(rest)))
    }
    return lines
}

/// The values of a state file's `KEY=` lines, in order, parsed here rather than by the library's
/// PoolState (empty if there is no file).
private func stateFileValues(_ path: String, key: String) -> [Substring] {
    guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
    let prefix = key + "="
    return text.split(separator: "\n").filter { $0.hasPrefix(prefix) }.map { $0.dropFirst(prefix.count) }
}

/// `queue=ID:CTIME` entries of a state file.
func stateFileQueues(_ path: String) -> [(id: Int32, changeTime: Int)] {
    stateFileValues(path, key: "queue").compactMap { value in
        let parts = value.split(separator: ":")
        guard parts.count == 2, let id = Int32(parts[0]), let time = Int(parts[1]) else { return nil }
        return (id, time)
    }
}

func stateFileQueueIDs(_ path: String) -> [Int32] { stateFileQueues(path).map(\.id) }

/// The master's pid a state file records (`pid=N`), if there is one.
func stateFilePID(_ path: String) -> pid_t? { stateFileValues(path, key: "pid").first.flatMap { pid_t($0) } }

// MARK: - Deterministic randomness

/// SplitMix64: a tiny deterministic PRNG (same sequence on every run and platform), for fixed seeds.
struct SplitMix64: RandomNumberGenerator {
    private var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

// MARK: - Launching and stopping servers

/// Starts `executable` through Foundation in `directory`, stdin from /dev/null, stdout and stderr
/// to `logPath` (created).
func launchLogged(_ executable: String, _ arguments: [String], directory: String, logPath: String,
                  environment: [String: String]? = nil) throws -> Process {
    FileManager.default.createFile(atPath: logPath, contents: nil)
    let log = FileHandle(forWritingAtPath: logPath)!
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    process.currentDirectoryURL = URL(fileURLWithPath: directory)
    process.standardOutput = log
    process.standardError = log
    process.standardInput = FileHandle.nullDevice
    if let environment { process.environment = environment }
    try process.run()
    return process
}

/// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34+), which Swift's Glibc module does
/// not import (it is declared under __USE_MISC).
private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
private let addCloseFrom: AddCloseFrom? = {
    guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return nil }
    return unsafeBitCast(symbol, to: AddCloseFrom.self)
}()

/// A new pseudo-terminal: its master side (non-blocking, close-on-exec) and the path of its
/// terminal side. `unlockpt` and `ptsname_r` come through dlsym: Swift's Glibc module does not
/// import them (X/Open).
func openPseudoTerminal() -> (master: Int32, path: String)? {
    typealias Unlock = @convention(c) (Int32) -> Int32
    typealias Name = @convention(c) (Int32, UnsafeMutablePointer<CChar>, Int) -> Int32
    guard let unlockSymbol = dlsym(nil, "unlockpt"), let nameSymbol = dlsym(nil, "ptsname_r") else { return nil }
    let master = open("/dev/ptmx", O_RDWR | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
    guard master >= 0 else { return nil }
    var name = [CChar](repeating: 0, count: 128)
    guard unsafeBitCast(unlockSymbol, to: Unlock.self)(master) == 0,
          unsafeBitCast(nameSymbol, to: Name.self)(master, &name, name.count) == 0 else {
        close(master)
        return nil
    }
    return (master, String(cString: name))
}

/// Starts `argv` (argv[0] is the program's path) with posix_spawn, for launches Foundation cannot
/// do: stdin from /dev/null, stdout and stderr appended to `logPath`, `inherited[i]` as
/// descriptor 3 + i and every other descriptor closed (the runner's, e.g. Foundation's
/// per-Process socketpairs, would keep another TestServer looking alive), `defaultSignals` reset
/// to SIG_DFL with nothing blocked, and as the leader of a new process group if `newProcessGroup`.
/// The caller reaps the child (`childIsRunning`).
func spawnLogged(_ argv: [String], logPath: String, inheriting inherited: [Int32] = [],
                 defaultSignals: [Int32], newProcessGroup: Bool = false) throws -> pid_t {
    var actions = posix_spawn_file_actions_t()
    posix_spawn_file_actions_init(&actions)
    defer { posix_spawn_file_actions_destroy(&actions) }
    posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
    posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
    posix_spawn_file_actions_adddup2(&actions, 1, 2)
    for (index, fd) in inherited.enumerated() { posix_spawn_file_actions_adddup2(&actions, fd, 3 + Int32(index)) }
    if let closeFrom = addCloseFrom { _ = closeFrom(&actions, 3 + Int32(inherited.count)) }

    var attributes = posix_spawnattr_t()
    posix_spawnattr_init(&attributes)
    defer { posix_spawnattr_destroy(&attributes) }
    var defaults = sigset_t()
    sigemptyset(&defaults)
    for signo in defaultSignals { sigaddset(&defaults, signo) }
    posix_spawnattr_setsigdefault(&attributes, &defaults)
    var mask = sigset_t()
    sigemptyset(&mask)
    posix_spawnattr_setsigmask(&attributes, &mask)
    var flags = POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK
    if newProcessGroup {
        posix_spawnattr_setpgroup(&attributes, 0)
        flags |= POSIX_SPAWN_SETPGROUP
    }
    posix_spawnattr_setflags(&attributes, Int16(flags))
    return try spawn(argv, actions: &actions, attributes: &attributes)
}

/// `posix_spawn` of `argv` (its first element the executable's path) with the caller's actions
/// and attributes; the child's pid.
func spawn(_ argv: [String], actions: inout posix_spawn_file_actions_t, attributes: inout posix_spawnattr_t) throws -> pid_t {
    let cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
    defer { for pointer in cArguments { free(pointer) } }
    var child: pid_t = 0
    let rc = posix_spawn(&child, argv[0], &actions, &attributes, cArguments, environ)
    guard rc == 0 else { throw TestFailure("posix_spawn(\(argv[0])) failed: \(String(cString: strerror(rc)))") }
    return child
}

/// For a child started with `spawnLogged`: reaps it if it has exited, recording its exit code in
/// `status` (128 + the signal if a signal killed it; -1 if it is not our child). True while it runs.
func childIsRunning(_ pid: pid_t, status: inout Int32?) -> Bool {
    if status != nil { return false }
    var raw: Int32 = 0
    let got = waitpid(pid, &raw, WNOHANG)
    if got == pid {
        status = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
        return false
    }
    if got < 0 && errno == ECHILD { status = -1; return false }
    return true
}

/// Waits up to 20 s for "pool started" in the log, giving up early if the server ends. If it did
/// not start (or no longer runs), stops it with `stop` and throws "WHAT did not start" and its log.
func requirePoolStart(_ what: String, log: () -> String, isRunning: () -> Bool, stop: () -> Void) throws {
    let started = waitUntil(timeout: 20) { log().contains("pool started") || !isRunning() }
    guard started, isRunning() else {
        let output = log()
        stop()
        throw TestFailure("\(what) did not start:\n\(output)")
    }
}

/// Stops `pid` unless it has exited: SIGTERM, up to 15 s, then SIGKILL and up to 5 s more.
func terminateGracefully(_ pid: pid_t, hasExited: () -> Bool) {
    guard !hasExited() else { return }
    kill(pid, SIGTERM)
    if !waitUntil(timeout: 15, hasExited) {
        kill(pid, SIGKILL)
        _ = waitUntil(timeout: 5, hasExited)
    }
}

// MARK: - Running commands

/// A command run to the end (or its timeout) by `runCapturing`.
struct CapturedRun {
    let process: Process
    let timedOut: Bool
    let stdout: String
    let stderr: String
    /// The exit status, or nil if the command overran its timeout.
    var exitStatus: Int32? { timedOut ? nil : process.terminationStatus }
}

/// Runs `executable` with `arguments` (in `directory`, else the runner's own), feeding `stdin`
/// (or /dev/null), with stdout and stderr captured through files in a temporary directory (no
/// pipe can fill up and stall it). A command still running after `timeout` s is sent each of
/// `overrunSignals` in turn, 5 s apart, until it ends.
func runCapturing(_ executable: String, _ arguments: [String], in directory: String? = nil, stdin: String? = nil,
                  timeout: Double, overrunSignals: [Int32]) throws -> CapturedRun {
    let captures = makeTemporaryDirectory()
    defer { try? FileManager.default.removeItem(atPath: captures) }
    let outPath = captures + "/stdout", errPath = captures + "/stderr", inPath = captures + "/stdin"
    _ = FileManager.default.createFile(atPath: outPath, contents: nil)
    _ = FileManager.default.createFile(atPath: errPath, contents: nil)
    _ = FileManager.default.createFile(atPath: inPath, contents: Data((stdin ?? "").utf8))
    guard let out = FileHandle(forWritingAtPath: outPath), let err = FileHandle(forWritingAtPath: errPath),
          let input = FileHandle(forReadingAtPath: inPath) else {
        throw TestFailure("cannot open the capture files in \(captures)")
    }
    defer { try? out.close(); try? err.close(); try? input.close() }

    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let directory { process.currentDirectoryURL = URL(fileURLWithPath: directory) }
    process.standardOutput = out
    process.standardError = err
    process.standardInput = stdin == nil ? FileHandle.nullDevice : input
    try process.run()
    let timedOut = !waitUntil(timeout: timeout, { !process.isRunning })
    if timedOut {
        for signo in overrunSignals {
            kill(process.processIdentifier, signo)
            if waitUntil(timeout: 5, { !process.isRunning }) { break }
        }
    }
    return CapturedRun(process: process, timedOut: timedOut,
                       stdout: (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? "",
                       stderr: (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? "")
}

// MARK: - Raw framed I/O

/// The framed protocol's bytes, written out here rather than with the library's FrameCodec.
enum FramedWire {
    /// A response frame: status byte and body.
    struct Frame: Equatable, CustomStringConvertible {
        var status: UInt8
        var body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
        var description: String { "Frame(status: \(status), body: \(body.count <= 64 ? text.debugDescription : "\(body.count) bytes"))" }
    }

    /// A request frame: the payload's length (big-endian UInt32), then the payload.
    static func requestFrame(_ payload: [UInt8]) -> [UInt8] {
        let n = UInt32(payload.count)
        return [UInt8(n >> 24), UInt8((n >> 16) & 0xff), UInt8((n >> 8) & 0xff), UInt8(n & 0xff)] + payload
    }

    static func requestFrames(_ payloads: [[UInt8]]) -> [UInt8] { payloads.flatMap(requestFrame) }

    /// The big-endian UInt32 at `offset`.
    static func be32(_ bytes: [UInt8], _ offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
    }
}

/// A blocking Unix stream connection to `path` with a receive timeout of `timeout` s.
func connectBlocking(path: String, timeout: Double) throws -> SocketFD {
    let socket = try SocketFD.unixStream(nonBlocking: false)
    do {
        try socket.connect(path: path)
        try socket.setReceiveTimeout(seconds: timeout)
    } catch {
        socket.close()
        throw error
    }
    return socket
}

/// Why a read of a blocking socket brought no bytes.
enum ReceiveEnd: Error { case eof, timeout, failed(Int32) }

/// One read of up to 64 KiB from a blocking socket (retried on EINTR; EAGAIN is the receive timeout).
func receiveChunk(_ fd: Int32) -> Result<[UInt8], ReceiveEnd> {
    var chunk = [UInt8](repeating: 0, count: 65_536)
    while true {
        let n = chunk.withUnsafeMutableBytes { Glibc.read(fd, $0.baseAddress, $0.count) }
        if n > 0 { return .success(Array(chunk[0..<n])) }
        if n == 0 { return .failure(.eof) }
        let error = errno
        if error == EINTR { continue }
        return .failure(error == EAGAIN ? .timeout : .failed(error))
    }
}

/// Every byte a blocking socket gives until end of stream (or its receive timeout, or an error).
func receiveToEnd(_ fd: Int32) -> [UInt8] {
    var bytes: [UInt8] = []
    while case .success(let chunk) = receiveChunk(fd) { bytes += chunk }
    return bytes
}

// MARK: - Clean-shutdown checks

/// Expects a `waitForExit` status of 0, showing `log` if it is not.
func expectExitStatusZero(_ status: Int32?, log: @autoclosure () -> String, sourceLocation: SourceLocation) {
    #expect(status == 0, "pool-server did not exit 0 (status \(status.map { "\($0)" } ?? "still running")):\n\(log())",
            sourceLocation: sourceLocation)
}

/// After the master exited: none of `workers` alive (after up to 10 s), none of `queues` left, no
/// socket file (unless `socketOwnedByUs`) and no state file. Then removes whatever was left, so
/// one failure does not leak into the next test.
func expectServerGone(socketPath: String, queues: Set<Int32>, workers: Set<pid_t>, socketOwnedByUs: Bool = false,
                      sourceLocation: SourceLocation) {
    let lingering = { workers.filter(processIsAlive) }
    #expect(waitUntil(timeout: 10) { lingering().isEmpty }, "workers still alive: \(lingering())", sourceLocation: sourceLocation)
    let leftQueues = existingQueueIDs().intersection(queues)
    #expect(leftQueues.isEmpty, "queues left behind: \(leftQueues.sorted()) (known: \(queues.sorted()))", sourceLocation: sourceLocation)
    if !socketOwnedByUs {
        #expect(!FileManager.default.fileExists(atPath: socketPath), "socket file left behind", sourceLocation: sourceLocation)
    }
    #expect(!FileManager.default.fileExists(atPath: socketPath + ".state"), "state file left behind", sourceLocation: sourceLocation)
    removeQueues(leftQueues)
    killLiving(workers)
}

// MARK: - Servers, however launched

/// What the shared helpers need to know about a running `pool-server`, however it was launched
/// (TestServer, ProcessGroupServer, FaultSupport.ShellServer).
protocol ObservableServer: AnyObject {
    var pid: pid_t { get }
    var socketPath: String { get }
    var log: String { get }
    var workerPIDs: [pid_t] { get }
}

extension ObservableServer {
    /// The state file the server writes beside its socket (`<socket>.state`).
    var stateFilePath: String { socketPath + ".state" }
}

extension TestServer: ObservableServer {}
extension ProcessGroupServer: ObservableServer {}

/// Live worker pids (sorted), once there are exactly `count` of them.
func waitForWorkers(_ server: ObservableServer, _ count: Int, timeout: Double = 20) -> [pid_t]? {
    var pids: [pid_t] = []
    let ok = waitUntil(timeout: timeout) {
        pids = server.workerPIDs
        return pids.count == count
    }
    return ok ? pids.sorted() : nil
}

/// Whether user nobody can run `path`: it and every directory above it are open to others (a
/// checkout under /root, 0700, is not).
func nobodyCanRun(_ path: String) -> Bool {
    var current = path
    while !current.isEmpty && current != "/" {
        var st = stat()
        guard stat(current, &st) == 0, st.st_mode & S_IXOTH != 0 else { return false }
        current = String(current[..<(current.lastIndex(of: "/") ?? current.startIndex)])
    }
    return true
}

/// The server closed (or reset) the connection: the next receive fails with a `ProtocolError`
/// that is not a timeout. (Any error would also pass for a server gone silent, after the timeout.)
func expectServerClosed(_ client: PoolClient, _ comment: String = "", sourceLocation: SourceLocation = #_sourceLocation) {
    do {
        let response = try client.receive()
        Issue.record("the server should have closed the connection; it answered \(response). \(comment)", sourceLocation: sourceLocation)
    } catch let error as PoolClient.ProtocolError {
        #expect(!error.timedOut, "the receive timed out: the connection was not closed. \(comment)", sourceLocation: sourceLocation)
    } catch {
        Issue.record("expected the connection closed, got \(type(of: error)): \(error). \(comment)", sourceLocation: sourceLocation)
    }
}

/// The system call `pid` (its main thread) is blocked in, from /proc/PID/syscall; nil while it
/// runs or once it has gone.
func blockedSyscall(_ pid: pid_t) -> Int? {
    guard let text = try? String(contentsOfFile: "/proc/\(pid)/syscall", encoding: .utf8) else { return nil }
    return text.split(separator: " ").first.flatMap { Int($0) }
}

/// Numbers of the system calls the tests wait for a process to block in (nil where not known:
/// a test that needs one then fails, saying so, rather than passing without looking).
enum SyscallNumber {
    #if arch(x86_64)
    static let msgrcv: Int? = 70, sleeps: Set<Int>? = [35, 230]   // nanosleep, clock_nanosleep
    static let polls: Set<Int>? = [7, 271]                          // poll, ppoll
    #elseif arch(arm64)
    static let msgrcv: Int? = 188, sleeps: Set<Int>? = [101, 115]
    static let polls: Set<Int>? = [73]
    #else
    static let msgrcv: Int? = nil, sleeps: Set<Int>? = nil
    static let polls: Set<Int>? = nil
    #endif
}
