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

/// A fresh short directory under /tmp (socket paths must fit in 107 bytes). Under
/// `scripts/test.sh` its name carries the run's id (`POOL_TEST_RUN`), so that the script's sweep
/// for leftovers takes only this run's.
func makeTemporaryDirectory() -> String {
    let run = ProcessInfo.processInfo.environment["POOL_TEST_RUN"].map { "\($0.prefix(12))-" } ?? ""
    var template = Array("/tmp/pool-test-\(run)XXXXXX".utf8CString)
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
    /// `executableName`: run the binary through a symlink of that name in the server's directory
    /// (its process name is then that, not `pool-server`).
    init(_ arguments: [String] = [], socketPath: String? = nil, waitForStart: Bool = true,
         environment: [String: String]? = nil, executableName: String? = nil) throws {
        directory = makeTemporaryDirectory()
        self.socketPath = socketPath ?? directory + "/pool.sock"
        logPath = directory + "/server.log"
        var executable = Binaries.path("pool-server")
        do {
            if let executableName {
                let link = directory + "/" + executableName
                guard symlink(executable, link) == 0 else { throw TestFailure("symlink \(link): errno \(errno)") }
                executable = link
            }
            process = try launchLogged(executable, ["--socket", self.socketPath] + arguments,
                                       directory: directory, logPath: logPath, environment: environment)
        } catch {
            // No deinit runs for an object whose init threw: its directory goes here.
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        if waitForStart {
            try requirePoolStart("pool-server", log: { self.log }, isRunning: { self.process.isRunning }, stop: { self.stop() })
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
    var queueIDs: [Int32] { logLines(containing: "pool started").first.map { startedQueueIDs(inLine: $0) } ?? [] }

    /// Current live worker processes (children of the master).
    var workerPIDs: [pid_t] { childPIDs(of: pid).filter(processIsAlive) }

    func signal(_ signo: Int32) { if !hasExited { kill(pid, signo) } }

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
        // Only while it runs: once it has gone its pid may be another process's, with other children.
        let workers = hasExited ? [] : childPIDs(of: pid)
        // The state file lists every queue (the reply queue, recreated ones); a graceful exit
        // deletes it, so it is read first, for the case where the server has to be killed. It is
        // read only if it is this server's: a second server refused on the same socket path must
        // not take the first one's queues down. The log names the rest, including the queues of
        // a start that failed before its state file was written.
        let recorded = stateFilePID(stateFilePath) == pid ? stateFileQueueIDs(stateFilePath) : []
        terminateGracefully(pid) { hasExited }
        killLiving(workers)
        removeQueues(Set(queueIDs).union(recorded).union(loggedQueueIDs(inLog: log)))
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
