import Foundation
import Glibc
import Pool
import Testing

/// Parent of OneshotIntegrationTests and ShutdownIntegrationTests, so the two suites run one after
/// the other rather than side by side. Side by side, two servers spawned at the same moment can
/// inherit each other's Foundation bookkeeping socket (Foundation closes a child's inherited
/// descriptors from a list taken just before posix_spawn), and then Foundation only notices a
/// server's exit once the other server exits too.
@Suite(.serialized) enum OneshotShutdownSuites {}

/// Helpers for OneshotIntegrationTests and ShutdownIntegrationTests, namespaced so they cannot
/// collide with other test files' helpers in the same module.
enum OneshotShutdownSupport {
    /// How many `recv` lines each rendered message has.
    static func recvCounts(in log: String) -> [String: Int] {
        var counts: [String: Int] = [:]
        for line in recvLines(in: log) { counts[line.message, default: 0] += 1 }
        return counts
    }

    /// The master's lines about worker `pid` ending ("worker exited/died/killed ... pid=N ...").
    static func exitLines(of pid: pid_t, in log: String) -> [Substring] {
        log.split(separator: "\n").filter { line in
            (line.contains("worker exited") || line.contains("worker died") || line.contains("worker killed"))
                && (line.contains(" pid=\(pid) ") || line.hasSuffix(" pid=\(pid)"))
        }
    }

    /// One oneshot round trip, the reply decoded as UTF-8.
    /// A one-worker `sim` pool: sends `payload` (`hang`, `sleep:MS`) and waits until the worker
    /// has taken it off its queue, so the queue is empty and the worker busy.
    static func occupyTheOnlyWorker(_ server: TestServer, with payload: String) throws -> (worker: pid_t, queue: MessageQueue) {
        #expect(waitUntil { server.workerPIDs.count == 1 })
        let worker = try #require(server.workerPIDs.first)
        let queue = MessageQueue(id: try #require(server.queueIDs.first))
        #expect(try oneshot(server.socketPath, payload) == "ok")
        #expect(waitUntil { (try? queue.status()).map { $0.messages == 0 && $0.lastReceivePID == worker } ?? false },
                "the worker should have taken \(payload)")
        return (worker, queue)
    }

    static func oneshot(_ socketPath: String, _ message: String, timeout: Double = 30) throws -> String {
        try oneshot(socketPath, bytes: Array(message.utf8), timeout: timeout)
    }

    static func oneshot(_ socketPath: String, bytes: [UInt8], timeout: Double = 30) throws -> String {
        String(decoding: try PoolClient.oneshot(socketPath: socketPath, message: bytes, timeout: timeout), as: UTF8.self)
    }

    /// Permission bits and file type of `path` (lstat), or nil if absent.
    static func fileMode(_ path: String) -> (permissions: mode_t, isSocket: Bool, isRegular: Bool)? {
        var st = stat()
        guard lstat(path, &st) == 0 else { return nil }
        return (st.st_mode & 0o7777, (st.st_mode & S_IFMT) == S_IFSOCK, (st.st_mode & S_IFMT) == S_IFREG)
    }

    /// Files next to `socketPath` whose names start with the socket's name (the socket itself,
    /// and whatever the server derives from it: control socket, state file...).
    static func filesBeside(socketPath: String) -> [String] {
        let directory = (socketPath as NSString).deletingLastPathComponent
        let name = (socketPath as NSString).lastPathComponent
        let entries = (try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []
        return entries.filter { $0.hasPrefix(name) }.sorted()
    }

    /// Absolute path of an executable found in PATH (like `which`), or nil.
    static func executableInPath(_ name: String) -> String? {
        let path = ProcessInfo.processInfo.environment["PATH"] ?? ""
        for directory in path.split(separator: ":").map(String.init) + ["/usr/local/bin", "/usr/bin", "/bin"] {
            let candidate = "\(directory)/\(name)"
            if access(candidate, X_OK) == 0 { return candidate }
        }
        return nil
    }

    /// Runs a program to completion in `directory` (SIGTERMed after `timeout`), capturing stdout
    /// and stderr.
    static func run(_ executable: String, _ arguments: [String], in directory: String,
                    timeout: Double = 30) throws -> (status: Int32?, stdout: String, stderr: String) {
        let run = try runCapturing(executable, arguments, in: directory, timeout: timeout, overrunSignals: [SIGTERM])
        return (run.exitStatus, run.stdout, run.stderr)
    }

    /// What a process is doing, for a failure message: state, kernel wait channel, and the same
    /// for its children.
    static func diagnose(_ pid: pid_t) -> String {
        func one(_ pid: pid_t) -> String {
            let wchan = (try? String(contentsOfFile: "/proc/\(pid)/wchan", encoding: .utf8)) ?? "?"
            let syscall = (try? String(contentsOfFile: "/proc/\(pid)/syscall", encoding: .utf8))?
                .split(separator: " ").first.map(String.init) ?? "?"
            return "pid \(pid) state \(processState(pid).map(String.init) ?? "gone") wchan \(wchan) syscall \(syscall)"
        }
        return ([one(pid)] + childPIDs(of: pid).map { "  child " + one($0) }).joined(separator: "\n")
    }

    /// The exit status of a zombie (exited, not yet reaped) from /proc/PID/stat field 52, in the
    /// form Foundation reports it: the exit code, or the signal number if a signal killed it.
    /// (Not the launchers' 128 + signal form: this one is compared with Process.terminationStatus.)
    static func zombieExitStatus(_ pid: pid_t) -> Int32? {
        guard let fields = procStatFields(pid) else { return nil }
        // fields[0] is field 3 (state); field 52 (exit_code) is fields[49].
        guard fields.count > 49, fields[0] == "Z", let raw = Int32(fields[49].trimmingCharacters(in: .whitespacesAndNewlines)) else {
            return nil
        }
        return raw & 0x7f == 0 ? (raw >> 8) & 0xff : raw & 0x7f
    }

    /// Like `TestServer.waitForExit`, but judges "exited" by the kernel, not only by Foundation,
    /// whose notice of a child's exit can lag (it waits for a socket shared with the child to
    /// close, and a child spawned concurrently by another test may briefly hold a copy).
    static func waitForExit(_ server: TestServer, timeout: Double = 20) -> Int32? {
        guard waitUntil(timeout: timeout, { server.hasExited }) else { return nil }
        if waitUntil(timeout: 2, { !server.process.isRunning }) { return server.process.terminationStatus }
        return zombieExitStatus(server.pid)
    }

    /// True while the server's master process exists and is not a zombie.
    static func isRunning(_ server: TestServer) -> Bool { !server.hasExited }

    /// Waits for `server` to exit and checks its status; on a timeout the failure shows what the
    /// processes were doing and the end of the log.
    @discardableResult
    static func expectExit(_ server: TestServer, status expected: Int32, timeout: Double = 20,
                           sourceLocation: SourceLocation = #_sourceLocation) -> Int32? {
        let status = waitForExit(server, timeout: timeout)
        if status == nil {
            Issue.record("pool-server did not exit within \(timeout) s:\n\(diagnose(server.pid))\nlog tail:\n\(server.log.suffix(4000))",
                         sourceLocation: sourceLocation)
        } else {
            #expect(status == expected, "exit status; log tail:\n\(server.log.suffix(3000))", sourceLocation: sourceLocation)
        }
        return status
    }

    /// Checks that a finished server left nothing behind: no socket file, none of its queues, no
    /// child of the master, none of the worker pids seen while it ran. Unlike the common
    /// `expectServerGone`: any file beside the socket counts, workers get only 2 s, nothing is removed.
    static func expectNothingLeft(socketPath: String, queueIDs: [Int32], masterPID: pid_t, workers: [pid_t],
                                  sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!queueIDs.isEmpty, "no queue ids known", sourceLocation: sourceLocation)
        #expect(!workers.isEmpty, "no worker pids known", sourceLocation: sourceLocation)
        #expect(!fileExists(socketPath), "socket file left at \(socketPath)", sourceLocation: sourceLocation)
        let besides = filesBeside(socketPath: socketPath)
        #expect(besides.isEmpty, "files left beside the socket: \(besides)", sourceLocation: sourceLocation)
        let leftQueues = existingQueueIDs().intersection(queueIDs)
        #expect(leftQueues.isEmpty, "queues left: \(leftQueues.sorted())", sourceLocation: sourceLocation)
        #expect(childPIDs(of: masterPID).isEmpty, "children of \(masterPID) left", sourceLocation: sourceLocation)
        // The master reaps its workers before it exits, so they must already be gone; the short
        // wait only covers a process that is already dead but not yet out of /proc.
        let alive = { workers.filter(processIsAlive) }
        _ = waitUntil(timeout: 2) { alive().isEmpty }
        #expect(alive().isEmpty, "workers still alive after the master exited: \(alive())", sourceLocation: sourceLocation)
    }

    /// Thread-safe record of what a background sender saw.
    final class SendRecord: @unchecked Sendable {
        private let lock = NSLock()
        private var _replies: [(message: String, reply: String)] = []
        private var _errors: [(message: String, error: String)] = []
        private var _okCount = 0
        private var _stop = false

        func reply(_ message: String, _ reply: String) {
            lock.lock(); defer { lock.unlock() }
            _replies.append((message, reply))
            if reply == "ok" { _okCount += 1 }
        }

        func error(_ message: String, _ error: String) {
            lock.lock(); defer { lock.unlock() }
            _errors.append((message, error))
        }

        var okCount: Int { lock.lock(); defer { lock.unlock() }; return _okCount }
        var replies: [(message: String, reply: String)] { lock.lock(); defer { lock.unlock() }; return _replies }
        var errors: [(message: String, error: String)] { lock.lock(); defer { lock.unlock() }; return _errors }
        var shouldStop: Bool {
            get { lock.lock(); defer { lock.unlock() }; return _stop }
            set { lock.lock(); _stop = newValue; lock.unlock() }
        }
    }
}
