import Foundation
import Glibc
import Pool
import Testing

/// Helpers for FramedIntegrationTests and ClientCLITests: raw framed connections, server clean-up
/// checks, and running the pool-client binary. Namespaced so they cannot collide with other
/// suites' helpers.
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

    // MARK: TestServer inspection

    /// Every queue the server owns, as far as can be seen from outside: the worker queues of the
    /// "pool started" line, those recorded in the state file (which include the reply queue), and
    /// any queue last sent to or received from by the master or one of its workers.
    static func ownedQueueIDs(_ server: TestServer) -> Set<Int32> {
        let pids = spawnedWorkerPIDs(inLog: server.log).union([server.pid])
        return Set(server.queueIDs).union(stateFileQueueIDs(server.stateFilePath)).union(queuesLastUsed(by: pids))
    }

    /// Log lines at level error or critical ("<time> <level> <label>[pid]: ...").
    static func errorLines(_ server: TestServer) -> [Substring] {
        server.log.split(separator: "\n").filter { line in
            let fields = line.split(separator: " ", maxSplits: 2)
            return fields.count > 1 && (fields[1] == "error" || fields[1] == "critical")
        }
    }

    /// Stops the server with `signo` (SIGTERM by default; or it was already signalled) and checks
    /// that it exits 0 and leaves nothing behind: no worker process, no queue, no socket file, no
    /// state file. Whatever it did leave is removed afterwards so one failure does not leak.
    static func expectCleanShutdown(_ server: TestServer, signal signo: Int32 = SIGTERM, alreadySignalled: Bool = false,
                                    queues knownQueues: Set<Int32> = [],
                                    sourceLocation: SourceLocation = #_sourceLocation) {
        let queues = ownedQueueIDs(server).union(knownQueues)
        let workers = spawnedWorkerPIDs(inLog: server.log).union(server.workerPIDs)
        if !alreadySignalled { server.signal(signo) }
        expectExitStatusZero(server.waitForExit(timeout: 30), log: server.log, sourceLocation: sourceLocation)
        expectServerGone(socketPath: server.socketPath, queues: queues, workers: workers, sourceLocation: sourceLocation)
        server.stop()
    }

    // MARK: Frames

    typealias Frame = FramedWire.Frame

    static func frame(_ response: PoolClient.Response) -> Frame { Frame(status: response.statusByte, body: response.body) }

    /// Splits a byte stream into complete response frames; returns them and the undecoded rest.
    /// Decoded by the library's FrameCodec, as PoolClient reads them (a zero length is a
    /// badRequest frame), unlike FaultSupport's strict `parseResponses`, which flags it.
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

    /// A blocking Unix socket for byte-exact tests (garbage input, abrupt close, half-close),
    /// where `PoolClient` would frame or buffer things for us.
    final class RawConnection {
        enum End: Error, Equatable { case eof, reset, timeout }

        let fd: SocketFD
        private var closed = false
        private var buffered: [UInt8] = []

        init(path: String, timeout: Double = 20) throws { fd = try connectBlocking(path: path, timeout: timeout) }

        deinit { close() }

        func write(_ bytes: [UInt8]) throws { try bytes.withUnsafeBytes { try fd.writeAll($0) } }

        func shutdownWrite() throws { try fd.shutdownWrite() }

        func close() {
            guard !closed else { return }
            closed = true
            fd.close()
        }

        /// One read: bytes, or how the stream ended (any error but the timeout counts as a reset).
        private func readChunk() -> Result<[UInt8], End> {
            receiveChunk(fd.raw).mapError { end in
                switch end {
                case .eof: return .eof
                case .timeout: return .timeout
                case .failed: return .reset
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

    /// Runs an executable with `arguments`, feeding `stdin` (or /dev/null), capturing stdout and
    /// stderr. Kills it after `timeout` s (SIGTERM, then SIGKILL). Kept apart from the other
    /// suites' runners for its result: an exit status even after a timeout, and how it ended.
    static func runCommand(_ executable: String, _ arguments: [String], stdin: String? = nil,
                           timeout: Double = 30) throws -> CommandResult {
        let run = try runCapturing(executable, arguments, stdin: stdin, timeout: timeout, overrunSignals: [SIGTERM, SIGKILL])
        let running = run.process.isRunning
        return CommandResult(status: running ? -1 : run.process.terminationStatus,
                             reason: running ? .uncaughtSignal : run.process.terminationReason,
                             stdout: run.stdout, stderr: run.stderr, timedOut: run.timedOut)
    }
}
