import Foundation
import Glibc
import Pool
import Testing

/// Helpers for FaultIntegrationTests, namespaced so they cannot collide with other suites'.
/// Independent of the other suites' support files (which may change under us); what every suite
/// shares comes from Common.swift and TestServer.swift.
enum FaultSupport {
    // Per-worker queues (not result mode's default shared queue): these tests count, remove and
    // follow queues slot by slot. SharedDispatchTests covers the shared queue.
    static let framedSim = ["--protocol", "framed", "--reply", "result", "--handler", "sim", "--dispatch", "round-robin"]
    static let framedEcho = ["--protocol", "framed", "--reply", "result", "--handler", "echo", "--dispatch", "round-robin"]

    // MARK: - Processes

    /// CPU ticks `pid` used during `seconds` of wall time.
    static func cpuTicksUsed(by pid: pid_t, during seconds: Double) -> Int? {
        guard let before = cpuTicks(pid) else { return nil }
        usleep(UInt32(seconds * 1_000_000))
        guard let after = cpuTicks(pid) else { return nil }
        return after - before
    }

    /// Open descriptors of a process.
    static func descriptorCount(_ pid: pid_t) -> Int {
        (try? FileManager.default.contentsOfDirectory(atPath: "/proc/\(pid)/fd").count) ?? -1
    }

    /// Makes sure this process may open `count` descriptors (raises the soft RLIMIT_NOFILE up to
    /// the hard limit if needed). Returns false if it cannot.
    static func ensureDescriptorLimit(_ count: Int) -> Bool {
        var limit = rlimit()
        let resource = __rlimit_resource_t(RLIMIT_NOFILE.rawValue)
        guard getrlimit(resource, &limit) == 0 else { return false }
        if limit.rlim_cur >= rlim_t(count) { return true }
        guard limit.rlim_max >= rlim_t(count) else { return false }
        limit.rlim_cur = rlim_t(count)
        return setrlimit(resource, &limit) == 0
    }

    // MARK: - Logs and state files

    /// Lines of `log` containing `text`.
    static func lines(_ log: String, containing text: String) -> [Substring] {
        log.split(separator: "\n").filter { $0.contains(text) }
    }

    /// True if a log line's metadata has `key=value` (keys are space separated).
    static func line(_ line: Substring, has key: String, _ value: String) -> Bool {
        line.contains(" \(key)=\(value) ") || line.hasSuffix(" \(key)=\(value)")
    }

    /// Every queue id a server's log names as its own: the "pool started" list, the queue of every
    /// spawned worker, and (unlike the common `loggedQueueIDs`) queues created in place of removed ones.
    static func queueIDs(inLog log: String) -> Set<Int32> {
        var ids = loggedQueueIDs(inLog: log)
        for line in lines(log, containing: "in its place") {
            if let id = createdQueue(in: line) { ids.insert(id) }
        }
        return ids
    }

    /// The new queue id of a "queue of slot N was removed from outside ...; created ID in its place" line.
    static func createdQueue(in line: Substring) -> Int32? {
        guard let range = line.range(of: "; created ") else { return nil }
        return Int32(line[range.upperBound...].prefix { $0.isNumber })
    }

    /// `recv` lines of the log handler: the logged message (trailing ` key=value` metadata stripped).
    static func recvMessages(inLog log: String) -> [String] { recvLines(in: log).map(\.message) }

    // MARK: - Footprint: what a server owned, and the check that nothing of it is left

    /// Accumulates every queue and worker pid a server is seen to own while it runs (the state
    /// file vanishes at shutdown, so observe before stopping).
    final class Footprint {
        let server: ObservableServer
        let masterPID: pid_t
        let socketPath: String
        private(set) var queues = Set<Int32>()
        private(set) var workers = Set<pid_t>()

        init(_ server: ObservableServer) {
            self.server = server
            masterPID = server.pid
            socketPath = server.socketPath
            observe()
        }

        func observe() {
            // One pass over the master's lines (logs can be large at debug level).
            for line in server.log.split(separator: "\n") where line.contains("pool.master") {
                if line.contains("worker spawned") {
                    if let pid = intField(line, "pid") { workers.insert(pid_t(pid)) }
                    if let queue = intField(line, "queue") { queues.insert(Int32(queue)) }
                } else if line.contains("pool started") || line.contains("in its place") {
                    queues.formUnion(FaultSupport.queueIDs(inLog: String(line)))
                }
            }
            queues.formUnion(stateFileQueueIDs(server.stateFilePath))
            workers.formUnion(server.workerPIDs)
        }

        /// Removes whatever is left (queues, live workers); never fails.
        func removeLeftovers() {
            removeQueues(queues)
            killLiving(workers)
        }
    }

    /// After the master exited: no socket, control socket or state file; none of its queues in
    /// `ipcs -q`; every worker reaped by the master itself (its log has the reap line for each:
    /// once the master is gone its orphans are init's, so their absence alone would not show who
    /// reaped them) and gone (not alive, not a zombie). Anything left is removed afterwards.
    /// Stricter than the common `expectServerGone` (reaping, zombies, `.ctl`), so kept apart.
    /// `log`: where the master's log went, if not to the server's log file.
    static func expectNothingLeft(_ footprint: Footprint, log: String? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
        footprint.observe()
        let path = footprint.socketPath
        #expect(!footprint.queues.isEmpty, "no queue ids were observed", sourceLocation: sourceLocation)
        #expect(!fileExists(path), "socket file left at \(path)", sourceLocation: sourceLocation)
        #expect(!fileExists(path + ".ctl"), "control socket left at \(path).ctl", sourceLocation: sourceLocation)
        #expect(!fileExists(path + ".state"), "state file left at \(path).state", sourceLocation: sourceLocation)
        let left = existingQueueIDs().intersection(footprint.queues)
        #expect(left.isEmpty, "queues left in ipcs -q: \(left.sorted())", sourceLocation: sourceLocation)
        let reaped = Set((log ?? footprint.server.log).split(separator: "\n").filter { line in
            line.contains("pool.master") && ["worker exited", "worker died", "worker killed"].contains { line.contains($0) }
                && !line.contains("status=?")
        }.compactMap { intField($0, "pid").map(pid_t.init) })
        let unreaped = footprint.workers.subtracting(reaped).sorted()
        #expect(unreaped.isEmpty, "workers the master did not reap (no exit line in its log): \(unreaped)",
                sourceLocation: sourceLocation)
        let lingering = { footprint.workers.filter { processIsAlive($0) || processState($0) == "Z" }.sorted() }
        _ = waitUntil(timeout: 5) { lingering().isEmpty }
        #expect(lingering().isEmpty, "workers alive or unreaped (zombie) after the master exited: \(lingering())",
                sourceLocation: sourceLocation)
        footprint.removeLeftovers()
    }

    /// Sends `signo` (unless already signalled), expects exit status 0 and nothing left.
    static func expectCleanExit(_ server: TestServer, _ footprint: Footprint, signal signo: Int32 = SIGTERM,
                                alreadySignalled: Bool = false, sourceLocation: SourceLocation = #_sourceLocation) {
        footprint.observe()
        if !alreadySignalled { server.signal(signo) }
        expectExitStatusZero(server.waitForExit(timeout: 30), log: String(server.log.suffix(3000)), sourceLocation: sourceLocation)
        expectNothingLeft(footprint, sourceLocation: sourceLocation)
        server.stop()
    }

    // MARK: - Frames (an independent decoder: it does not use the server's FrameCodec)

    typealias Frame = FramedWire.Frame

    /// Splits a response stream into frames. `malformed` names the first frame that breaks the
    /// protocol (length 0 — no status byte —, an unknown status, an absurd length); decoding stops there.
    static func parseResponses(_ bytes: [UInt8]) -> (frames: [Frame], rest: [UInt8], malformed: String?) {
        var frames: [Frame] = []
        var offset = 0
        while bytes.count - offset >= 4 {
            let length = Int(FramedWire.be32(bytes, offset))
            if length == 0 { return (frames, Array(bytes[offset...]), "frame \(frames.count) has length 0 (no status byte)") }
            if length > 1 << 24 { return (frames, Array(bytes[offset...]), "frame \(frames.count) has absurd length \(length)") }
            guard bytes.count - offset >= 4 + length else { break }
            let status = bytes[offset + 4]
            if status > 7 { return (frames, Array(bytes[offset...]), "frame \(frames.count) has unknown status \(status)") }
            frames.append(Frame(status: status, body: Array(bytes[(offset + 5)..<(offset + 4 + length)])))
            offset += 4 + length
        }
        return (frames, Array(bytes[offset...]), nil)
    }

    // MARK: - Raw client connections

    /// A blocking Unix stream connection with a receive timeout; writes never raise SIGPIPE.
    /// Apart from FramedSupport.RawConnection: frames are checked by the strict `parseResponses`,
    /// sends report failure instead of throwing, and read errors keep their errno.
    final class Connection {
        enum End: Error, Equatable { case eof, reset, timeout, other(Int32) }

        let fd: Int32
        private var closed = false
        private var buffered: [UInt8] = []

        init(path: String, timeout: Double = 20) throws { fd = try connectBlocking(path: path, timeout: timeout).raw }

        deinit { close() }

        /// Writes everything; false if the peer is gone (EPIPE, ECONNRESET).
        @discardableResult
        func send(_ bytes: [UInt8]) -> Bool {
            var offset = 0
            while offset < bytes.count {
                let n = bytes.withUnsafeBytes { Glibc.send(fd, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_NOSIGNAL)) }
                if n < 0 {
                    if errno == EINTR { continue }
                    return false
                }
                offset += n
            }
            return true
        }

        func shutdownWrite() { _ = Glibc.shutdown(fd, Int32(SHUT_WR)) }

        func close() {
            guard !closed else { return }
            closed = true
            _ = Glibc.close(fd)
        }

        private func readChunk() -> Result<[UInt8], End> {
            receiveChunk(fd).mapError { end in
                switch end {
                case .eof: return .eof
                case .timeout: return .timeout
                case .failed(ECONNRESET): return .reset
                case .failed(let error): return .other(error)
                }
            }
        }

        /// Everything until the stream ends (or the receive timeout passes).
        func readToEnd() -> (bytes: [UInt8], end: End) {
            var bytes = buffered
            buffered = []
            while true {
                switch readChunk() {
                case .success(let chunk): bytes += chunk
                case .failure(let end): return (bytes, end)
                }
            }
        }

        /// Reads until `count` frames have arrived; nil if the stream ends (or times out) first or
        /// a malformed frame arrives.
        func readFrames(_ count: Int) -> [Frame]? {
            var frames: [Frame] = []
            while true {
                let (decoded, rest, malformed) = parseResponses(buffered)
                if malformed != nil { return nil }
                frames += decoded
                buffered = rest
                if frames.count >= count { return frames }
                guard case .success(let bytes) = readChunk() else { return nil }
                buffered += bytes
            }
        }

        /// True if bytes or end of stream can be read right now (within `seconds`).
        func readable(within seconds: Double) -> Bool {
            if !buffered.isEmpty { return true }
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            return poll(&pfd, 1, Int32(seconds * 1000)) > 0
        }
    }

    /// Non-blocking `connect` to a Unix socket path: the descriptor (connected or pending), or the
    /// errno of a failed connect (EAGAIN when the listen backlog is full).
    static func connectNonBlocking(_ path: String) -> (fd: Int32?, errno: Int32) {
        guard let socket = try? SocketFD.unixStream(nonBlocking: true) else { return (nil, errno) }
        do {
            try socket.connect(path: path)
            return (socket.raw, 0)
        } catch let error as SystemError {
            socket.close()
            return (nil, error.errno.rawValue)
        } catch {
            socket.close()
            return (nil, -1)
        }
    }

    // MARK: - Running commands

    struct CommandResult: CustomStringConvertible {
        var status: Int32?
        var stdout: String
        var stderr: String
        var description: String { "status \(status.map { "\($0)" } ?? "timeout"), stdout \(stdout.debugDescription), stderr \(stderr.debugDescription)" }
    }

    /// Runs a program to completion (SIGTERM after `timeout`, then SIGKILL), capturing stdout and
    /// stderr. SIGTERM first: a `pool-server` expected to refuse its start that started after all
    /// (a regression) stops and removes its queues, rather than leaving them.
    static func run(_ executable: String, _ arguments: [String], timeout: Double = 30) throws -> CommandResult {
        let run = try runCapturing(executable, arguments, timeout: timeout, overrunSignals: [SIGTERM, SIGKILL])
        return CommandResult(status: run.exitStatus, stdout: run.stdout, stderr: run.stderr)
    }

    // MARK: - A server launched through a shell (ulimit, trap)

    /// `pool-server --socket <tmp>/pool.sock ARGUMENTS`, started as `bash -c 'PRELUDE; exec pool-server ...'`
    /// so the shell can change what the server inherits (a lower `ulimit -n`, ignored signals)
    /// before it `exec`s: the pid is the shell's, then the server's. bash, not sh: dash (Debian's
    /// /bin/sh) silently refuses `trap "" CHLD`, bash really sets SIGCHLD to SIG_IGN.
    /// Not a TestServer: its stop() also removes every queue its log or state file names, which
    /// TestServer.stop must not (two TestServers may share a socket path, hence a state file).
    final class ShellServer: ObservableServer {
        let directory: String
        let socketPath: String
        let logPath: String
        let process: Process
        private var stopped = false

        var pid: pid_t { process.processIdentifier }

        /// `prelude` runs in bash first, in `directory` (`$PWD`). `waitForStart: false` for a
        /// prelude that sends the log elsewhere (no "pool started" to wait for).
        init(prelude: String, _ arguments: [String], directory: String? = nil, waitForStart: Bool = true) throws {
            self.directory = directory ?? makeTemporaryDirectory()
            socketPath = self.directory + "/pool.sock"
            logPath = self.directory + "/server.log"
            do {
                process = try launchLogged("/bin/bash", ["-c", "\(prelude); exec \"$0\" \"$@\"", Binaries.path("pool-server"),
                                                         "--socket", socketPath] + arguments,
                                           directory: self.directory, logPath: logPath)
            } catch {
                // Not initialized, so deinit will not run: a directory made here goes here.
                if directory == nil { try? FileManager.default.removeItem(atPath: self.directory) }
                throw error
            }
            if waitForStart {
                try requirePoolStart("pool-server (via bash)", log: { self.log }, isRunning: { self.process.isRunning },
                                     stop: { self.stop() })
            }
        }

        deinit { stop() }

        var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
        var workerPIDs: [pid_t] { childPIDs(of: pid).filter(processIsAlive) }
        func logLines(containing text: String) -> [Substring] { FaultSupport.lines(log, containing: text) }
        func signal(_ signo: Int32) { kill(pid, signo) }

        func waitForExit(timeout: Double = 20) -> Int32? {
            guard waitUntil(timeout: timeout, { !process.isRunning }) else { return nil }
            return process.terminationStatus
        }

        func stop() {
            guard !stopped else { return }
            stopped = true
            let workers = childPIDs(of: pid)
            let queues = FaultSupport.queueIDs(inLog: log).union(stateFileQueueIDs(stateFilePath))
            terminateGracefully(pid) { !process.isRunning }
            killLiving(workers)
            removeQueues(queues)
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    // MARK: - Concurrency helpers

    /// Thread-safe record of what the load generators saw.
    final class LoadRecord: @unchecked Sendable {
        private let lock = NSLock()
        private var _acknowledged: [String] = []
        private var _otherReplies: [Bool: [String: Int]] = [:]
        private var _errorsBeforeStop: [String] = []
        private var _errorsAfterStop = 0
        private var _stopping = false
        private var _finished = 0

        func acknowledged(_ message: String) { lock.lock(); _acknowledged.append(message); lock.unlock() }
        func other(_ reply: String, stopping: Bool) {
            lock.lock(); _otherReplies[stopping, default: [:]][reply, default: 0] += 1; lock.unlock()
        }
        func failed(_ message: String, _ error: Error) {
            lock.lock(); defer { lock.unlock() }
            if _stopping { _errorsAfterStop += 1 } else { _errorsBeforeStop.append("\(message): \(error)") }
        }
        func finished() { lock.lock(); _finished += 1; lock.unlock() }

        var stopping: Bool {
            get { lock.lock(); defer { lock.unlock() }; return _stopping }
            set { lock.lock(); _stopping = newValue; lock.unlock() }
        }
        var acknowledgedMessages: [String] { lock.lock(); defer { lock.unlock() }; return _acknowledged }
        var acknowledgedCount: Int { lock.lock(); defer { lock.unlock() }; return _acknowledged.count }
        func otherReplies(afterStop: Bool) -> [String: Int] {
            lock.lock(); defer { lock.unlock() }; return _otherReplies[afterStop] ?? [:]
        }
        var errorsBeforeStop: [String] { lock.lock(); defer { lock.unlock() }; return _errorsBeforeStop }
        var finishedCount: Int { lock.lock(); defer { lock.unlock() }; return _finished }
    }

    /// Starts `threads` threads that each send `c<thread>-<n>` over the oneshot protocol, one
    /// connection per message, until `record.stopping` is set and three attempts have failed since.
    static func startOneshotLoad(path: String, threads: Int, record: LoadRecord) {
        for thread in 0..<threads {
            Thread {
                var n = 0
                var failuresAfterStop = 0
                while failuresAfterStop < 3 && n < 500_000 {
                    let message = "c\(thread)-\(n)"
                    n += 1
                    do {
                        let reply = String(decoding: try PoolClient.oneshot(socketPath: path, message: Array(message.utf8), timeout: 30),
                                           as: UTF8.self)
                        let stopping = record.stopping
                        if reply == "ok" { record.acknowledged(message) } else {
                            record.other(reply, stopping: stopping)
                            if stopping { failuresAfterStop += 1 }
                        }
                    } catch {
                        let stopping = record.stopping
                        record.failed(message, error)
                        if stopping {
                            failuresAfterStop += 1
                            usleep(5_000)
                        }
                    }
                }
                record.finished()
            }.start()
        }
    }
}
