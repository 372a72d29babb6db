import CSysV
import Foundation
import Glibc
import Pool
import Testing

/// Helpers for OperationsIntegrationTests: the operator subcommands, the status JSON, clean-up
/// checks that include the control socket, a background load generator, an sd_notify receiver,
/// and a launcher for socket activation. Namespaced so nothing collides with other suites.
enum OperationsSupport {
    // MARK: Subcommands

    /// Runs `pool-server ARGUMENTS` as a separate process (stdout/stderr captured through files).
    static func poolServer(_ arguments: [String], timeout: Double = 60) throws -> FramedSupport.CommandResult {
        try FramedSupport.runCommand(Binaries.path("pool-server"), arguments, timeout: timeout)
    }

    // MARK: Status

    struct Worker {
        var slot: Int
        var pid: pid_t?
        var state: String
        var jobsHandled: Int
        var restarts: Int
        var queueID: Int32
        var queueMessages: Int
        var queueBytes: Int
    }

    /// The status JSON, decoded with JSONSerialization (so it is also checked to be valid JSON).
    struct Status {
        var pid: pid_t
        var acceptedConnections: Int
        var activeConnections: Int
        var heldRequests: Int
        var rollingRestart: Bool
        var responses: [String: Int]
        var workers: [Worker]
        var raw: [String: Any]

        var workerPIDs: [pid_t] { workers.compactMap(\.pid) }
        var queueIDs: Set<Int32> { Set(workers.map(\.queueID)) }
        /// Every slot has a running worker and none is retiring or waiting for a respawn.
        var settled: Bool { workers.allSatisfy { $0.pid != nil && ($0.state == "idle" || $0.state == "busy") } }
    }

    struct StatusError: Error, CustomStringConvertible {
        let description: String
    }

    static func parseStatus(_ text: String) throws -> Status {
        guard let object = try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw StatusError(description: "status is not a JSON object: \(text)")
        }
        func int(_ dictionary: [String: Any], _ key: String) throws -> Int {
            guard let value = dictionary[key] as? NSNumber else { throw StatusError(description: "no integer \(key) in \(dictionary)") }
            return value.intValue
        }
        guard let responses = object["responses"] as? [String: Any], let workers = object["workers"] as? [[String: Any]],
              let rolling = object["rolling_restart"] as? Bool else {
            throw StatusError(description: "missing responses/workers/rolling_restart: \(text)")
        }
        var counts: [String: Int] = [:]
        for (key, value) in responses {
            guard let number = value as? NSNumber else { throw StatusError(description: "response count \(key) is not a number") }
            counts[key] = number.intValue
        }
        let parsedWorkers = try workers.map { w in
            Worker(slot: try int(w, "slot"), pid: (w["pid"] as? NSNumber).map { pid_t($0.intValue) },
                   state: w["state"] as? String ?? "?", jobsHandled: try int(w, "jobs_handled"),
                   restarts: try int(w, "restarts"), queueID: Int32(try int(w, "queue_id")),
                   queueMessages: try int(w, "queue_messages"), queueBytes: try int(w, "queue_bytes"))
        }
        return Status(pid: pid_t(try int(object, "pid")), acceptedConnections: try int(object, "accepted_connections"),
                      activeConnections: try int(object, "active_connections"), heldRequests: try int(object, "held_requests"),
                      rollingRestart: rolling, responses: counts, workers: parsedWorkers, raw: object)
    }

    /// The status asked directly over `<socket>.ctl` (library client: cheap enough to poll).
    static func status(_ socketPath: String) -> Status? {
        guard let text = try? ControlClient.send("status json", controlSocket: socketPath + ".ctl", timeout: 10) else { return nil }
        return try? parseStatus(text)
    }

    /// Hands `commands` to a frozen master (SIGSTOP), one control connection each, in order, then
    /// lets it go: it accepts them in one loop turn and reads them in the next, in that order.
    /// Returns the answers. (The caller's clean-up should SIGCONT the master in case this throws.)
    static func commandsInOneTurn(_ server: TestServer, _ commands: [String]) throws -> [String] {
        // The control socket's backlog (16): one more connect would wait for the frozen master.
        guard commands.count <= 16 else { throw StatusError(description: "at most 16 commands in one turn") }
        kill(server.pid, SIGSTOP)
        defer { kill(server.pid, SIGCONT) }
        guard waitUntil(timeout: 20, { processState(server.pid) == "T" }) else {
            throw StatusError(description: "the master did not stop")
        }
        var sockets: [SocketFD] = []
        defer { for socket in sockets { socket.close() } }
        for command in commands {
            let socket = try SocketFD.unixStream(nonBlocking: false)
            sockets.append(socket)
            try socket.setReceiveTimeout(seconds: 30)
            try socket.setSendTimeout(seconds: 30)  // also bounds connect (AF_UNIX)
            try socket.connect(path: server.socketPath + ".ctl")
            let line = Array((command + "\n").utf8)
            guard try line.withUnsafeBytes({ try socket.write($0) }) == line.count else {
                throw StatusError(description: "short write of \(command)")
            }
        }
        kill(server.pid, SIGCONT)
        return sockets.map { String(decoding: receiveToEnd($0.raw), as: UTF8.self) }
    }

    /// A pool logging to `pool.log` (`--log-file`) in a directory of its own, started with
    /// `arguments`, and waited for until that file says it started and, with `workers`, until it
    /// has that many settled workers (`worker` is the first); throws if not. The caller stops the
    /// server and removes `directory`.
    static func startLoggingToFile(_ arguments: [String], workers: Int? = nil, environment: [String: String]? = nil) throws
        -> (server: TestServer, logPath: String, directory: String, worker: pid_t?) {
        let directory = makeTemporaryDirectory()
        let logPath = directory + "/pool.log"
        do {
            let server = try TestServer(arguments + ["--log-file", logPath], waitForStart: false, environment: environment)
            guard waitUntil(timeout: 20, { fileText(logPath).contains("pool started") || !server.process.isRunning }),
                  server.process.isRunning else {
                let output = server.log + "\n" + fileText(logPath)
                server.stop()
                throw TestFailure("pool-server did not start:\n\(output)")
            }
            guard let count = workers else { return (server, logPath, directory, nil) }
            guard let pids = waitForWorkerCount(server, count) else {
                let output = server.log + "\n" + fileText(logPath)
                server.stop()
                throw TestFailure("the pool never had \(count) settled workers:\n\(output)")
            }
            return (server, logPath, directory, pids.first)
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
    }

    /// A regular file's text, "" if it cannot be read (never read a FIFO: that waits for a writer).
    static func fileText(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    /// Polls the status until `condition` holds; returns the last status seen (nil if none).
    @discardableResult
    static func waitForStatus(_ socketPath: String, timeout: Double = 30, _ condition: (Status) -> Bool) -> (ok: Bool, last: Status?) {
        var last: Status?
        let ok = waitUntil(timeout: timeout) {
            guard let status = status(socketPath) else { return false }
            last = status
            return condition(status)
        }
        return (ok, last)
    }

    /// Waits until the pool has exactly `count` settled workers, both in its status and among the
    /// master's live children. Returns their pids (sorted) or nil.
    static func waitForWorkerCount(_ server: TestServer, _ count: Int, timeout: Double = 30) -> [pid_t]? {
        var pids: [pid_t] = []
        let ok = waitUntil(timeout: timeout) {
            guard let status = status(server.socketPath), status.workers.count == count, status.settled else { return false }
            let live = server.workerPIDs
            pids = status.workerPIDs.sorted()
            return live.sorted() == pids
        }
        return ok ? pids : nil
    }

    // MARK: What a server owns

    /// Queue ids recorded in a state file (`queue=ID:CTIME`), including the reply queue. Read
    /// through the library's PoolState, unlike the common `stateFileQueueIDs(_:)`: these tests
    /// check what the operator tools themselves will see.
    static func stateFileQueueIDs(_ path: String) -> Set<Int32> {
        guard let state = PoolState.read(from: path) else { return [] }
        return Set(state.queues.map(\.id))
    }

    /// Everything the server can be seen to own now: queues (log, state file, status, queues last
    /// used by its processes) and worker pids.
    static func owned(_ server: TestServer, extraLog: String = "") -> (queues: Set<Int32>, workers: Set<pid_t>) {
        let log = server.log + "\n" + extraLog
        var workers = spawnedWorkerPIDs(inLog: log).union(server.workerPIDs)
        var queues = loggedQueueIDs(inLog: log).union(stateFileQueueIDs(server.stateFilePath))
        if let status = status(server.socketPath) {
            queues.formUnion(status.queueIDs)
            workers.formUnion(status.workerPIDs)
        }
        queues.formUnion(queuesLastUsed(by: workers.union([server.pid])))
        return (queues, workers)
    }

    /// Stops the server with `signo` (unless `signal` is nil: it was already told to stop), and
    /// checks that it exits 0 leaving nothing: no worker, no queue, no socket, `.ctl` or `.state`
    /// file. Leftovers are removed afterwards so one failure does not leak into the next test.
    static func expectCleanExit(_ server: TestServer, signal signo: Int32? = SIGTERM, extraLog: () -> String = { "" },
                                knownQueues: Set<Int32> = [], knownWorkers: Set<pid_t> = [],
                                sourceLocation: SourceLocation = #_sourceLocation) {
        var (queues, workers) = server.process.isRunning ? owned(server, extraLog: extraLog()) : ([], [])
        queues.formUnion(knownQueues)
        workers.formUnion(knownWorkers)
        if let signo { server.signal(signo) }
        let status = server.waitForExit(timeout: 30)
        // Lines written during shutdown may name more (e.g. a respawn): take them too.
        queues.formUnion(loggedQueueIDs(inLog: server.log + "\n" + extraLog()))
        workers.formUnion(spawnedWorkerPIDs(inLog: server.log + "\n" + extraLog()))
        expectExitStatusZero(status, log: server.log + extraLog(), sourceLocation: sourceLocation)
        expectNothingLeft(socketPath: server.socketPath, queues: queues, workers: workers, sourceLocation: sourceLocation)
        server.stop()
    }

    /// No live worker, no queue of `queues`, no socket, `.ctl` or `.state` file. Removes leftovers.
    /// The common `expectServerGone`, plus: some queue was seen, and no control socket is left.
    static func expectNothingLeft(socketPath: String, queues: Set<Int32>, workers: Set<pid_t>, socketOwnedByUs: Bool = false,
                                  sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(!queues.isEmpty, "no queue of the server was ever seen", sourceLocation: sourceLocation)
        expectServerGone(socketPath: socketPath, queues: queues, workers: workers, socketOwnedByUs: socketOwnedByUs,
                         sourceLocation: sourceLocation)
        #expect(!FileManager.default.fileExists(atPath: socketPath + ".ctl"), "control socket left behind", sourceLocation: sourceLocation)
    }

    // MARK: Load

    /// Pipelines batches of requests on `connections` connections from background threads until
    /// stopped, checking (if `verify`) that every response is status 0 with the request's payload
    /// as body (`sim` handler: `sleep:MS` and plain strings are echoed).
    final class LoadGenerator: @unchecked Sendable {
        private let lock = NSLock()
        private var stopRequested = false
        private var _answered = 0
        private var _failures: [String] = []
        private let finished = DispatchSemaphore(value: 0)
        private let connections: Int

        init(socketPath: String, connections: Int = 2, batch: Int = 16, verify: Bool = true) {
            self.connections = connections
            for index in 0..<connections {
                let thread = Thread { [self] in
                    run(index: index, socketPath: socketPath, batch: batch, verify: verify)
                    finished.signal()
                }
                thread.start()
            }
        }

        private func run(index: Int, socketPath: String, batch: Int, verify: Bool) {
            let client: PoolClient
            do { client = try PoolClient(socketPath: socketPath, timeout: 30) } catch {
                fail("connection \(index): connect: \(error)")
                return
            }
            var round = 0
            while !shouldStop {
                let payloads: [[UInt8]] = (0..<batch).map { i in
                    i % 4 == 0 ? Array("sleep:5".utf8) : Array("c\(index)-r\(round)-\(i)".utf8)
                }
                round += 1
                let responses: [PoolClient.Response]
                do { responses = try client.pipeline(payloads) } catch {
                    fail("connection \(index) round \(round): \(error)")
                    return
                }
                var bad: [String] = []
                for (payload, response) in zip(payloads, responses)
                where verify && (response.statusByte != 0 || response.body != payload) {
                    bad.append("\(String(decoding: payload, as: UTF8.self)) -> status \(response.statusByte) \"\(String(decoding: response.body, as: UTF8.self))\"")
                }
                lock.lock()
                _answered += responses.count
                _failures += bad
                lock.unlock()
            }
        }

        private func fail(_ text: String) {
            lock.lock(); _failures.append(text); lock.unlock()
        }

        private var shouldStop: Bool { lock.lock(); defer { lock.unlock() }; return stopRequested }
        var answered: Int { lock.lock(); defer { lock.unlock() }; return _answered }
        var failures: [String] { lock.lock(); defer { lock.unlock() }; return _failures }

        /// Asks the threads to stop after their current batch; true once all have.
        func stop(timeout: Double = 60) -> Bool {
            lock.lock(); stopRequested = true; lock.unlock()
            for _ in 0..<connections {
                if finished.wait(timeout: .now() + timeout) != .success { return false }
            }
            return true
        }
    }

    // MARK: sd_notify

    /// A Unix datagram socket standing in for systemd's notify socket: a path, or an abstract
    /// name when `name` starts with "@" (as in NOTIFY_SOCKET).
    final class NotifyReceiver {
        let name: String
        let fd: Int32
        private(set) var messages: [String] = []

        init(_ name: String) throws {
            self.name = name
            fd = socket(AF_UNIX, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { throw TestFailure("socket(AF_UNIX, SOCK_DGRAM): \(String(cString: strerror(errno)))") }
            let rc: Int32
            if name.hasPrefix("@") {
                // Abstract namespace: sun_path starts with NUL, the length covers exactly the name.
                var address = sockaddr_un()
                address.sun_family = sa_family_t(AF_UNIX)
                let bytes = Array(name.utf8.dropFirst())
                withUnsafeMutableBytes(of: &address.sun_path) { path in
                    path[0] = 0
                    for (i, byte) in bytes.enumerated() { path[i + 1] = byte }
                }
                let length = socklen_t(MemoryLayout<sockaddr_un>.offset(of: \sockaddr_un.sun_path)! + 1 + bytes.count)
                rc = withUnsafePointer(to: &address) {
                    $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(fd, $0, length) }
                }
            } else {
                rc = csysv_bind_unix(fd, name)
            }
            guard rc == 0 else {
                let error = String(cString: strerror(errno))
                Glibc.close(fd)
                throw TestFailure("bind(\(name)): \(error)")
            }
        }

        deinit {
            Glibc.close(fd)
            if !name.hasPrefix("@") { unlink(name) }
        }

        /// Receives datagrams until one satisfies `condition` (or `timeout` passes); every
        /// datagram received is kept in `messages`.
        func waitFor(timeout: Double = 20, _ condition: (String) -> Bool) -> String? {
            if let seen = messages.first(where: condition) { return seen }
            let end = Date().addingTimeInterval(timeout)
            while Date() < end {
                var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
                let ms = Int32(max(1, min(1000, end.timeIntervalSinceNow * 1000)))
                guard poll(&pfd, 1, ms) > 0 else { continue }
                var buffer = [UInt8](repeating: 0, count: 4096)
                let n = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, Int32(MSG_DONTWAIT)) }
                guard n > 0 else { continue }
                let message = String(decoding: buffer[0..<n], as: UTF8.self)
                messages.append(message)
                if condition(message) { return message }
            }
            return nil
        }
    }

    // MARK: Socket activation

    /// `pool-server` started as systemd would with socket activation: a socket the test bound
    /// and put into the listening state is on fd 3, with LISTEN_FDS=1 and LISTEN_PID set to the
    /// server's own pid (through `/bin/sh -c 'export LISTEN_PID=$$ ...; exec "$0" "$@"'`).
    final class ActivatedServer {
        let directory: String
        let socketPath: String
        let logPath: String
        let pid: pid_t
        private var exitStatus: Int32?
        private var stopped = false

        /// With `listening` false the passed socket is bound but never listened on; with
        /// `boundName` it is bound to that name in the directory instead of `pool.sock`, which
        /// stays `--socket`; with `unlinkBound` its file is removed before the server starts (as
        /// in a container that sees only the descriptor). With `expectStart` false the caller
        /// watches the server fail.
        init(_ arguments: [String], listening: Bool = true, boundName: String? = nil, unlinkBound: Bool = false,
             expectStart: Bool = true) throws {
            let directory = makeTemporaryDirectory()
            self.directory = directory
            socketPath = directory + "/pool.sock"
            logPath = directory + "/server.log"
            let boundPath = boundName.map { directory + "/" + $0 } ?? socketPath

            // The listening socket, bound by "systemd" (us).
            var listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard listener >= 0 else {
                // Not initialized yet, so deinit will not run: the directory goes here.
                try? FileManager.default.removeItem(atPath: directory)
                throw TestFailure("socket: \(String(cString: strerror(errno)))")
            }
            if listener <= 3 {
                // adddup2(3, 3) would keep FD_CLOEXEC on older glibc: move it out of the way.
                let moved = fcntl(listener, F_DUPFD_CLOEXEC, 10)
                Glibc.close(listener)
                listener = moved
            }
            defer { Glibc.close(listener) }
            guard csysv_bind_unix(listener, boundPath) == 0, !listening || listen(listener, 64) == 0 else {
                let error = String(cString: strerror(errno))
                try? FileManager.default.removeItem(atPath: directory)
                throw TestFailure("bind/listen \(boundPath): \(error)")
            }
            if unlinkBound { unlink(boundPath) }

            let executable = Binaries.path("pool-server")
            let argv = ["/bin/sh", "-c", "export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" \"$@\"",
                        executable, "--socket", socketPath] + arguments

            do {
                // Also resets the signals the server itself uses for operator commands.
                pid = try spawnLogged(argv, logPath: logPath, inheriting: [listener],
                                      defaultSignals: [SIGINT, SIGTERM, SIGCHLD, SIGPIPE, SIGHUP, SIGQUIT, SIGUSR1, SIGTTIN, SIGTTOU])
            } catch {
                unlink(boundPath)
                try? FileManager.default.removeItem(atPath: directory)
                throw error
            }
            guard expectStart else { return }
            try requirePoolStart("pool-server (socket activation)", log: { self.log }, isRunning: { self.isRunning },
                                 stop: { self.stop() })
        }

        deinit { stop() }

        var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

        var isRunning: Bool { childIsRunning(pid, status: &exitStatus) }

        func waitForExit(timeout: Double = 30) -> Int32? {
            guard waitUntil(timeout: timeout, { !isRunning }) else { return nil }
            return exitStatus
        }

        /// Kills what is left, removes queues it logged, the socket (ours, as systemd's) and the directory.
        func stop() {
            guard !stopped else { return }
            stopped = true
            let workers = Set(childPIDs(of: pid)).union(spawnedWorkerPIDs(inLog: log))
            let queues = loggedQueueIDs(inLog: log).union(OperationsSupport.stateFileQueueIDs(socketPath + ".state"))
            terminateGracefully(pid) { !isRunning }
            killLiving(workers)
            removeQueues(queues)
            unlink(socketPath)
            try? FileManager.default.removeItem(atPath: directory)
        }
    }

    // MARK: Prometheus

    /// One sample line of the text exposition format.
    struct Sample {
        var name: String
        var labels: String
        var value: Double
    }

    /// Checks the exposition format's rules we rely on; returns the samples and any violations.
    static func checkPrometheus(_ text: String) -> (samples: [Sample], problems: [String]) {
        var help = Set<String>(), types: [String: String] = [:]
        var samples: [Sample] = []
        var problems: [String] = []
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            if line.isEmpty { continue }
            if line.hasPrefix("# HELP ") {
                let parts = line.split(separator: " ", maxSplits: 3)
                if parts.count < 4 { problems.append("HELP without text: \(line)") }
                if parts.count > 2 { help.insert(String(parts[2])) }
                continue
            }
            if line.hasPrefix("# TYPE ") {
                let parts = line.split(separator: " ")
                guard parts.count == 4 else { problems.append("bad TYPE line: \(line)"); continue }
                let name = String(parts[2])
                if !help.contains(name) { problems.append("TYPE before HELP for \(name)") }
                if types[name] != nil { problems.append("second TYPE for \(name)") }
                types[name] = String(parts[3])
                if !["counter", "gauge", "histogram", "summary", "untyped"].contains(String(parts[3])) {
                    problems.append("unknown type in \(line)")
                }
                continue
            }
            if line.hasPrefix("#") { continue }
            let nameEnd = line.firstIndex { $0 == "{" || $0 == " " } ?? line.endIndex
            let name = String(line[..<nameEnd])
            var labels = ""
            var rest = line[nameEnd...]
            if rest.hasPrefix("{") {
                guard let close = rest.firstIndex(of: "}") else { problems.append("unclosed labels: \(line)"); continue }
                labels = String(rest[rest.index(after: rest.startIndex)..<close])
                rest = rest[rest.index(after: close)...]
            }
            let fields = rest.split(separator: " ")
            guard let valueText = fields.first, let value = Double(valueText) else {
                problems.append("sample without a numeric value: \(line)")
                continue
            }
            if !help.contains(name) { problems.append("sample of \(name) before its # HELP") }
            guard let type = types[name] else { problems.append("sample of \(name) before its # TYPE"); continue }
            if type == "counter" && value < 0 { problems.append("negative counter: \(line)") }
            samples.append(Sample(name: name, labels: labels, value: value))
        }
        for (name, type) in types where type == "counter" && !name.hasSuffix("_total") {
            problems.append("counter \(name) does not end in _total")
        }
        return (samples, problems)
    }
}
