import Foundation
import Glibc
import Pool
import Testing

/// Helpers for FramedIntegrationTests and ClientCLITests: raw framed connections, server clean-up
/// checks, System V queue inspection, and running the pool-client binary. Namespaced so they
/// cannot collide with other suites' helpers.
enum FramedSupport {
    /// `/proc/sys/kernel/msgmax`: the largest queue message text; the default --max-message is
    /// this minus the 16-byte record header.
    static func kernelMsgmax() -> Int {
        let text = (try? String(contentsOfFile: "/proc/sys/kernel/msgmax", encoding: .utf8)) ?? "8192"
        return Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) ?? 8192
    }

    /// `count` random bytes (every value 0...255 may appear).
    static func randomBytes(_ count: Int) -> [UInt8] {
        // Eight bytes per call: a per-byte loop is slow in debug builds for megabytes of payload.
        var generator = SystemRandomNumberGenerator()
        var bytes = [UInt8](repeating: 0, count: (count + 7) / 8 * 8)
        bytes.withUnsafeMutableBytes { buffer in
            for offset in stride(from: 0, to: buffer.count, by: 8) {
                buffer.storeBytes(of: generator.next() as UInt64, toByteOffset: offset, as: UInt64.self)
            }
        }
        return Array(bytes.prefix(count))
    }

    // MARK: Queues and processes

    /// One row of /proc/sysvipc/msg.
    struct QueueRow {
        var id: Int32
        var messages: Int
        var lastSendPID: pid_t
        var lastReceivePID: pid_t
    }

    /// Every System V queue on the system now, with depth and last sender/receiver.
    static func queueRows() -> [QueueRow] {
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

    static func queueRow(_ id: Int32) -> QueueRow? { queueRows().first { $0.id == id } }

    /// CPU time (user + system) a process has used, in clock ticks (1/100 s on Linux).
    static func cpuTicks(_ pid: pid_t) -> Int? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(close, offsetBy: 2)...].split(separator: " ")
        // After "pid (comm) ", field 3 (state) is index 0: utime (14) is 11, stime (15) is 12.
        guard fields.count > 12, let user = Int(fields[11]), let system = Int(fields[12]) else { return nil }
        return user + system
    }

    // MARK: TestServer inspection

    /// The state file the server writes beside its socket (`<socket>.state`).
    static func stateFilePath(_ server: TestServer) -> String { server.socketPath + ".state" }

    /// Pids of every worker the server has spawned so far (from its "worker spawned" lines).
    static func spawnedWorkerPIDs(_ server: TestServer) -> Set<pid_t> {
        var pids = Set<pid_t>()
        for line in server.logLines(containing: "worker spawned") {
            guard let range = line.range(of: " pid=") else { continue }
            let digits = line[range.upperBound...].prefix { $0.isNumber }
            if let pid = pid_t(digits) { pids.insert(pid) }
        }
        return pids
    }

    /// Every queue the server owns, as far as can be seen from outside: the worker queues of the
    /// "pool started" line, those recorded in the state file (which include the reply queue), and
    /// any queue last sent to or received from by the master or one of its workers.
    static func ownedQueueIDs(_ server: TestServer) -> Set<Int32> {
        var ids = Set(server.queueIDs)
        if let text = try? String(contentsOfFile: stateFilePath(server), encoding: .utf8) {
            for line in text.split(separator: "\n") where line.hasPrefix("queue=") {
                let value = line.dropFirst("queue=".count)
                if let id = Int32(value.prefix { $0 != ":" }) { ids.insert(id) }
            }
        }
        let pids = spawnedWorkerPIDs(server).union([server.pid])
        for row in queueRows() where pids.contains(row.lastSendPID) || pids.contains(row.lastReceivePID) {
            ids.insert(row.id)
        }
        return ids
    }

    /// Log lines at level error or critical ("<time> <level> <label>[pid]: ...").
    static func errorLines(_ server: TestServer) -> [Substring] {
        server.log.split(separator: "\n").filter { line in
            let fields = line.split(separator: " ", maxSplits: 2)
            return fields.count > 1 && (fields[1] == "error" || fields[1] == "critical")
        }
    }

    /// Live worker pids, once there are exactly `count` of them.
    static func waitForWorkers(_ server: TestServer, _ count: Int, timeout: Double = 20) -> [pid_t]? {
        var pids: [pid_t] = []
        let ok = waitUntil(timeout: timeout) {
            pids = server.workerPIDs
            return pids.count == count
        }
        return ok ? pids : nil
    }

    /// Stops the server with `signo` (SIGTERM by default; or it was already signalled) and checks
    /// that it exits 0 and leaves nothing behind: no worker process, no queue, no socket file, no
    /// state file. Whatever it did leave is removed afterwards so one failure does not leak.
    static func expectCleanShutdown(_ server: TestServer, signal signo: Int32 = SIGTERM, alreadySignalled: Bool = false,
                                    queues knownQueues: Set<Int32> = [],
                                    sourceLocation: SourceLocation = #_sourceLocation) {
        let queues = ownedQueueIDs(server).union(knownQueues)
        let workers = spawnedWorkerPIDs(server).union(server.workerPIDs)
        if !alreadySignalled { server.signal(signo) }
        let status = server.waitForExit(timeout: 30)
        #expect(status == 0, "pool-server did not exit 0 (status \(status.map { "\($0)" } ?? "still running")):\n\(server.log)",
                sourceLocation: sourceLocation)
        let lingering = { workers.filter(processIsAlive) }
        #expect(waitUntil(timeout: 10) { lingering().isEmpty }, "workers still alive: \(lingering())",
                sourceLocation: sourceLocation)
        let leftQueues = existingQueueIDs().intersection(queues)
        #expect(leftQueues.isEmpty, "queues left behind: \(leftQueues.sorted())", sourceLocation: sourceLocation)
        #expect(!FileManager.default.fileExists(atPath: server.socketPath), "socket file left behind",
                sourceLocation: sourceLocation)
        #expect(!FileManager.default.fileExists(atPath: stateFilePath(server)), "state file left behind",
                sourceLocation: sourceLocation)
        for id in leftQueues { _ = try? MessageQueue(id: id).remove() }
        for pid in lingering() { kill(pid, SIGKILL) }
        server.stop()
    }

    // MARK: Frames

    /// A framed response as raw status byte and body.
    struct Frame: Equatable, CustomStringConvertible {
        var status: UInt8
        var body: [UInt8]
        var text: String { String(decoding: body, as: UTF8.self) }
        var description: String { "Frame(status: \(status), body: \(body.count <= 64 ? "\"\(text)\"" : "\(body.count) bytes"))" }
    }

    static func frame(_ response: PoolClient.Response) -> Frame { Frame(status: response.statusByte, body: response.body) }

    /// Splits a byte stream into complete response frames; returns them and the undecoded rest.
    static func decodeFrames(_ bytes: [UInt8]) -> (frames: [Frame], rest: [UInt8]) {
        var frames: [Frame] = []
        var offset = 0
        bytes.withUnsafeBytes { all in
            while let (status, body, total) = FrameCodec.decodeResponse(UnsafeRawBufferPointer(rebasing: all[offset...])) {
                frames.append(Frame(status: status, body: Array(all[(offset + body.lowerBound)..<(offset + body.upperBound)])))
                offset += total
            }
        }
        return (frames, Array(bytes[offset...]))
    }

    /// Encodes request frames.
    static func requestFrames(_ payloads: [[UInt8]]) -> [UInt8] {
        var out: [UInt8] = []
        for payload in payloads { payload.withUnsafeBytes { FrameCodec.appendRequest($0, to: &out) } }
        return out
    }

    /// A blocking Unix socket for byte-exact tests (garbage input, abrupt close, half-close),
    /// where `PoolClient` would frame or buffer things for us.
    final class RawConnection {
        enum End: Error, Equatable { case eof, reset, timeout }

        let fd: SocketFD
        private var closed = false
        private var buffered: [UInt8] = []

        init(path: String, timeout: Double = 20) throws {
            fd = try SocketFD.unixStream(nonBlocking: false)
            do {
                try fd.connect(path: path)
                try fd.setReceiveTimeout(seconds: timeout)
            } catch {
                fd.close()
                throw error
            }
        }

        deinit { close() }

        func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try fd.writeAll($0) } }

        func shutdownWrite() throws { try fd.shutdownWrite() }

        func close() {
            guard !closed else { return }
            closed = true
            fd.close()
        }

        /// One read: bytes, or how the stream ended.
        private func readChunk() -> Result<[UInt8], End> {
            var chunk = [UInt8](repeating: 0, count: 65_536)
            while true {
                let n = chunk.withUnsafeMutableBytes { Glibc.read(fd.raw, $0.baseAddress, $0.count) }
                if n > 0 { return .success(Array(chunk[0..<n])) }
                if n == 0 { return .failure(.eof) }
                switch errno {
                case EINTR: continue
                case EAGAIN: return .failure(.timeout)
                default: return .failure(.reset)
                }
            }
        }

        /// Reads until at least `count` complete frames have arrived (all decoded ones are
        /// returned); nil on EOF/reset/timeout before that.
        func readFrames(_ count: Int) -> [Frame]? {
            var frames: [Frame] = []
            while true {
                let (decoded, rest) = decodeFrames(buffered)
                frames += decoded
                buffered = rest
                if frames.count >= count { return frames }
                guard case .success(let bytes) = readChunk() else { return nil }
                buffered += bytes
            }
        }

        /// Reads everything until the stream ends; returns the frames and how it ended.
        func readToEnd() -> (frames: [Frame], rest: [UInt8], end: End) {
            var bytes = buffered
            buffered = []
            while true {
                switch readChunk() {
                case .success(let chunk): bytes += chunk
                case .failure(let end):
                    let (frames, rest) = decodeFrames(bytes)
                    return (frames, rest, end)
                }
            }
        }

        /// Bytes that arrive within `seconds` (none expected when the server owes us nothing).
        func unexpectedBytes(within seconds: Double) -> [UInt8] {
            var extra = buffered
            let end = Date().addingTimeInterval(seconds)
            while Date() < end {
                var pfd = pollfd(fd: fd.raw, events: Int16(POLLIN), revents: 0)
                let ms = Int32(max(1, end.timeIntervalSinceNow * 1000))
                if poll(&pfd, 1, ms) <= 0 { continue }
                guard case .success(let bytes) = readChunk() else { break }
                extra += bytes
            }
            return extra
        }
    }

    // MARK: Commands

    /// What a finished command did.
    struct CommandResult {
        var status: Int32
        var reason: Process.TerminationReason
        var stdout: String
        var stderr: String
        var timedOut: Bool
    }

    /// Runs an executable with `arguments`, feeding `stdin` (or /dev/null) and capturing stdout
    /// and stderr through files (no pipe can fill up and stall it). Kills it after `timeout` s.
    static func runCommand(_ executable: String, _ arguments: [String], stdin: String? = nil,
                           timeout: Double = 30) throws -> CommandResult {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let outPath = directory + "/stdout", errPath = directory + "/stderr", inPath = directory + "/stdin"
        _ = FileManager.default.createFile(atPath: outPath, contents: nil)
        _ = FileManager.default.createFile(atPath: errPath, contents: nil)
        _ = FileManager.default.createFile(atPath: inPath, contents: Data((stdin ?? "").utf8))
        guard let out = FileHandle(forWritingAtPath: outPath), let err = FileHandle(forWritingAtPath: errPath),
              let input = FileHandle(forReadingAtPath: inPath) else {
            throw TestFailure("cannot open the capture files in \(directory)")
        }
        defer { try? out.close(); try? err.close(); try? input.close() }

        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        process.standardOutput = out
        process.standardError = err
        process.standardInput = stdin == nil ? FileHandle.nullDevice : input
        try process.run()
        var timedOut = false
        if !waitUntil(timeout: timeout, { !process.isRunning }) {
            timedOut = true
            process.terminate()
            if !waitUntil(timeout: 5, { !process.isRunning }) {
                kill(process.processIdentifier, SIGKILL)
                _ = waitUntil(timeout: 5) { !process.isRunning }
            }
        }
        let stdoutText = (try? String(contentsOfFile: outPath, encoding: .utf8)) ?? ""
        let stderrText = (try? String(contentsOfFile: errPath, encoding: .utf8)) ?? ""
        let running = process.isRunning
        return CommandResult(status: running ? -1 : process.terminationStatus,
                             reason: running ? .uncaughtSignal : process.terminationReason,
                             stdout: stdoutText, stderr: stderrText, timedOut: timedOut)
    }
}
