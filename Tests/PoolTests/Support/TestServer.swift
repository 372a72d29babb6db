import Foundation
import Glibc
import Pool

/// Where `swift build` put the executables: beside the test bundle.
enum Binaries {
    static let directory: String = {
        let exe = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe")) ?? CommandLine.arguments[0]
        var dir = (exe as NSString).deletingLastPathComponent
        // On Linux the test binary is `.build/<triple>/debug/<Package>PackageTests.xctest`.
        if dir.hasSuffix(".xctest") { dir = (dir as NSString).deletingLastPathComponent }
        return dir
    }()

    static func path(_ name: String) -> String { directory + "/" + name }
}

/// System V queues that exist now, by id (from /proc/sysvipc/msg).
func existingQueueIDs() -> Set<Int32> {
    guard let text = try? String(contentsOfFile: "/proc/sysvipc/msg", encoding: .utf8) else { return [] }
    var ids = Set<Int32>()
    for line in text.split(separator: "\n").dropFirst() {
        let fields = line.split(separator: " ", omittingEmptySubsequences: true)
        if fields.count > 1, let id = Int32(fields[1]) { ids.insert(id) }
    }
    return ids
}

/// True if `pid` exists and is not a zombie.
func processIsAlive(_ pid: pid_t) -> Bool {
    guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return false }
    guard let close = stat.lastIndex(of: ")") else { return false }
    let state = stat[stat.index(close, offsetBy: 2)]
    return state != "Z" && state != "X"
}

/// Children of `pid` (live or zombie), from /proc.
func childPIDs(of pid: pid_t) -> [pid_t] {
    guard let entries = try? FileManager.default.contentsOfDirectory(atPath: "/proc") else { return [] }
    var children: [pid_t] = []
    for entry in entries {
        guard let candidate = pid_t(entry),
              let stat = try? String(contentsOfFile: "/proc/\(candidate)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { continue }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        if fields.count > 1, pid_t(fields[1]) == pid { children.append(candidate) }
    }
    return children.sorted()
}

/// Polls `condition` every 10 ms until it holds or `timeout` seconds pass.
@discardableResult
func waitUntil(timeout: Double = 10, _ condition: () -> Bool) -> Bool {
    let end = Date().addingTimeInterval(timeout)
    while Date() < end {
        if condition() { return true }
        usleep(10_000)
    }
    return condition()
}

/// A fresh short directory under /tmp (socket paths must fit in 107 bytes).
func makeTemporaryDirectory() -> String {
    var template = Array("/tmp/pool-test-XXXXXX".utf8CString)
    return template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
}

/// A `pool-server` started from the built binary, with its output captured to a file.
///
/// Tests never fork in the runner: this spawns the executable. `stop()` (or deinit) makes sure
/// nothing is left: the master and workers are gone, the queues it logged are removed, and the
/// temporary directory is deleted.
final class TestServer {
    let directory: String
    let socketPath: String
    let logPath: String
    let process: Process
    private var stopped = false

    var pid: pid_t { process.processIdentifier }

    /// Starts `pool-server --socket <tmp>/pool.sock ARGUMENTS` and waits for "pool started".
    init(_ arguments: [String] = [], socketPath: String? = nil, waitForStart: Bool = true,
         environment: [String: String]? = nil) throws {
        directory = makeTemporaryDirectory()
        self.socketPath = socketPath ?? directory + "/pool.sock"
        logPath = directory + "/server.log"
        FileManager.default.createFile(atPath: logPath, contents: nil)
        let log = FileHandle(forWritingAtPath: logPath)!
        process = Process()
        process.executableURL = URL(fileURLWithPath: Binaries.path("pool-server"))
        process.arguments = ["--socket", self.socketPath] + arguments
        process.currentDirectoryURL = URL(fileURLWithPath: directory)
        process.standardOutput = log
        process.standardError = log
        process.standardInput = FileHandle.nullDevice
        if let environment { process.environment = environment }
        try process.run()
        if waitForStart {
            let started = waitUntil(timeout: 20) { self.log.contains("pool started") || !self.process.isRunning }
            guard started, process.isRunning else {
                let output = self.log
                stop()
                throw TestFailure("pool-server did not start:\n\(output)")
            }
        }
    }

    deinit { stop() }

    /// Everything the server (master and workers) has written so far.
    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Lines of the log containing `text`.
    func logLines(containing text: String) -> [Substring] {
        log.split(separator: "\n").filter { $0.contains(text) }
    }

    /// Queue ids from the "pool started" line.
    var queueIDs: [Int32] {
        guard let line = logLines(containing: "pool started").first,
              let range = line.range(of: "queues=[") else { return [] }
        let rest = line[range.upperBound...].prefix { $0 != "]" }
        return rest.split(separator: ",").compactMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
    }

    /// Current live worker processes (children of the master).
    var workerPIDs: [pid_t] { childPIDs(of: pid).filter(processIsAlive) }

    func signal(_ signo: Int32) { kill(pid, signo) }

    /// Waits for the master to exit; returns its exit status or nil on timeout.
    func waitForExit(timeout: Double = 20) -> Int32? {
        guard waitUntil(timeout: timeout, { !process.isRunning }) else { return nil }
        return process.terminationStatus
    }

    /// Exited, even if Foundation has not reaped it yet (a zombie counts as exited).
    var hasExited: Bool { !process.isRunning || !processIsAlive(pid) }

    /// Stops the server if it still runs (SIGTERM, then SIGKILL), and removes anything it left:
    /// processes, queues, files. Safe to call more than once.
    func stop() {
        guard !stopped else { return }
        stopped = true
        let workers = childPIDs(of: pid)
        if !hasExited {
            kill(pid, SIGTERM)
            if !waitUntil(timeout: 15, { hasExited }) {
                kill(pid, SIGKILL)
                _ = waitUntil(timeout: 5) { hasExited }
            }
        }
        for worker in workers where processIsAlive(worker) { kill(worker, SIGKILL) }
        for id in queueIDs where existingQueueIDs().contains(id) {
            _ = try? MessageQueue(id: id).remove()
        }
        try? FileManager.default.removeItem(atPath: directory)
    }
}

struct TestFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

extension String {
    var bytes: [UInt8] { Array(utf8) }
}
