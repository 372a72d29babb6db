import ArgumentParser
import Glibc
import Logging
import Pool

// The CLI only parses flags into a PoolConfiguration; everything else lives in the Pool module.
// ParsableCommand (not AsyncParsableCommand): the master must stay single-threaded to fork.
struct PoolServerCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool-server",
        abstract: "A pre-forked worker pool behind a Unix socket, fed through System V message queues.",
        subcommands: [Serve.self, Status.self, Stop.self, Reload.self, Scale.self, Cleanup.self],
        defaultSubcommand: Serve.self)
}

/// `pool-server cleanup`: remove what a killed master left (queues, socket, state file).
struct Cleanup: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Remove the queues, stale socket and state file a dead master left behind.")

    @Option(name: .long, help: "Path of the server's Unix socket (default: the one the state file records, else pool.sock).")
    var socket: String?

    @Option(name: .long, help: "State file (default: <socket>.state).")
    var stateFile: String?

    func run() throws {
        // Given only the state file, the socket is the one it records: `pool.sock` here would be
        // probed (and unlinked if stale) in place of the master's, and its control socket is how
        // a master in another pid namespace is known to be alive.
        let recorded = stateFile.flatMap { PoolState.read(from: $0)?.socketPath }.flatMap { $0.isEmpty ? nil : $0 }
        let socket = self.socket ?? recorded ?? "pool.sock"
        let report = recoverStaleState(statePath: stateFile ?? PoolState.defaultPath(forSocket: socket), socketPath: socket)
        if report.isEmpty && report.liveMaster == nil && report.skippedQueues.isEmpty && report.keptStateFile == nil {
            print("nothing to clean up")
        }
        for line in report.lines { print(line) }
        if let reason = report.unlockedSocketCheck {
            FileHandleStderr.write("pool-server: warning: checked for a stale socket without the directory lock: \(reason)\n")
        }
        // Something left for somebody else to remove (another user's queues, a record that
        // cannot be read) is not a clean result: a script must not take it for one.
        if report.liveMaster != nil || report.keptStateFile != nil { throw ExitCode(1) }
    }
}

/// Options every operator subcommand shares.
struct ControlOptions: ParsableArguments {
    @Option(name: .long, help: "Path of the server's Unix socket (its control socket is <socket>.ctl).")
    var socket = "pool.sock"

    @Option(name: .long, help: "Seconds to wait for the operation to complete.")
    var timeout: Double = 60

    var controlSocket: String { socket + ".ctl" }

    func validate() throws {
        guard timeout > 0 && timeout <= 100_000_000 else { throw ValidationError("--timeout must be > 0 and at most 1e8 seconds") }
    }

    /// When `--timeout` seconds from now have passed: one budget for a subcommand's every step
    /// (its commands and its wait), read once at its start.
    func deadline() -> Int64 { monotonicNanoseconds() + Int64(timeout * 1e9) }

    /// One command, its answer awaited until `deadline` (default: `--timeout` seconds). An
    /// `error: …` answer (the master refused it) is a failure too.
    func send(_ command: String, until deadline: Int64? = nil) throws -> String {
        try sendNamingMaster(command, until: deadline).answer
    }

    /// `send`, with the answering master's pid as this process's pid namespace numbers it (0: not
    /// visible from here).
    func sendNamingMaster(_ command: String, until deadline: Int64? = nil) throws -> (answer: String, masterPID: pid_t) {
        let left = deadline.map { Double($0 - monotonicNanoseconds()) / 1e9 } ?? timeout
        guard left > 0 else { throw ControlFailure("timed out before sending '\(command)'") }
        let exchange: (answer: String, masterPID: pid_t)
        do {
            exchange = try ControlClient.sendNamingMaster(command, controlSocket: controlSocket, timeout: left)
        } catch let error as SystemError where error.call == "connect" {
            throw ControlFailure("cannot reach the server at \(controlSocket): \(error)")
        } catch {
            // Reached, but the answer did not come whole (a timeout, the master ended meanwhile).
            throw ControlFailure("no complete answer to '\(command)' from \(controlSocket): \(error)")
        }
        let answer = exchange.answer
        if answer.hasPrefix("error:") {
            throw ControlFailure("the server refused '\(command)': \(answer.hasSuffix("\n") ? String(answer.dropLast()) : answer)")
        }
        return exchange
    }

    /// Polls the JSON status until `done` holds or `deadline` has passed (by the clock, each
    /// poll bounded by what is left of it). A master that is gone (its control socket missing or
    /// refusing) ends the wait at once: what it waits for cannot come.
    func waitFor(_ what: String, until deadline: Int64, _ done: (String) -> Bool) throws {
        while case let left = Double(deadline - monotonicNanoseconds()) / 1e9, left > 0 {
            do {
                if done(try ControlClient.send("status json", controlSocket: controlSocket, timeout: left)) { return }
            } catch let error as SystemError
                        where error.call == "connect" && [ENOENT, ECONNREFUSED].contains(error.errno.rawValue) {
                throw ControlFailure("the server at \(controlSocket) is gone while waiting for \(what): \(error)")
            } catch {
                // Busy (too many control connections) or slow: asked again.
            }
            usleep(100_000)
        }
        throw ControlFailure("timed out waiting for \(what)")
    }
}

/// A subcommand that parsed but could not do its work (server unreachable, timed out): exit 1,
/// not the usage error's 64, since the command line was right.
struct ControlFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// Pulls `"key":value` pairs out of the status JSON without a JSON library (the master's own format).
func jsonField(_ json: String, _ key: String) -> [Substring] {
    let needle = Array("\"\(key)\":".utf8)
    let bytes = Array(json.utf8)
    var values: [Substring] = []
    var i = 0
    while i + needle.count <= bytes.count {
        if bytes[i..<(i + needle.count)].elementsEqual(needle) {
            var end = i + needle.count
            while end < bytes.count && bytes[end] != UInt8(ascii: ",") && bytes[end] != UInt8(ascii: "}") { end += 1 }
            values.append(Substring(String(decoding: bytes[(i + needle.count)..<end], as: UTF8.self)))
            i = end
        } else {
            i += 1
        }
    }
    return values
}

struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Print the running pool's status.")
    @OptionGroup var options: ControlOptions
    @Option(name: .long, help: "table, json or prometheus.")
    var format = "table"
    func run() throws {
        guard ["table", "json", "prometheus"].contains(format) else { throw ValidationError("--format must be table, json or prometheus") }
        print(try options.send("status \(format)"), terminator: "")
    }
}

struct Stop: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Stop the running pool gracefully and wait until it has exited.")
    @OptionGroup var options: ControlOptions
    func run() throws {
        let deadline = options.deadline()
        // The pid from the connection, not the status: the status names the master in its own pid
        // namespace, which may not be this one's (a socket shared into a container).
        let pid = try options.sendNamingMaster("stop", until: deadline).masterPID
        guard pid > 0 else {
            // Its exit cannot be watched from here: say so rather than claim it.
            print("stop requested; the master is in another pid namespace, so its exit is not awaited")
            return
        }
        // A zombie has exited: its parent has only not reaped it yet.
        while processIsRunning(pid) && monotonicNanoseconds() < deadline {
            usleep(100_000)
        }
        guard !processIsRunning(pid) else { throw ControlFailure("pid \(pid) still running after \(options.timeout) s") }
        print("stopped pid \(pid)")
    }
}

struct Reload: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Restart every worker, one at a time, and wait until done (like SIGHUP).")
    @OptionGroup var options: ControlOptions
    func run() throws {
        let deadline = options.deadline()
        let before = Set(jsonField(try options.send("status json", until: deadline), "pid").dropFirst())
        print(try options.send("reload", until: deadline), terminator: "")
        try options.waitFor("the rolling restart", until: deadline) { status in
            jsonField(status, "rolling_restart").first == "false"
                && Set(jsonField(status, "pid").dropFirst()).isDisjoint(with: before)
                && !jsonField(status, "pid").dropFirst().contains("null")
        }
        print("reload complete")
    }
}

struct Scale: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Set the number of workers and wait until the pool has it (like SIGTTIN/SIGTTOU).")
    @OptionGroup var options: ControlOptions
    @Argument(help: "Number of workers (at least 1).")
    var workers: Int
    func run() throws {
        guard workers >= 1 else { throw ValidationError("the pool needs at least 1 worker") }
        guard workers <= PoolConfiguration.maxWorkers else { throw ValidationError("the pool has at most \(PoolConfiguration.maxWorkers) workers") }
        let deadline = options.deadline()
        print(try options.send("scale \(workers)", until: deadline), terminator: "")
        try options.waitFor("\(workers) workers", until: deadline) { status in
            let states = jsonField(status, "state")
            return states.count == workers && !states.contains("\"retiring\"") && !states.contains("\"starting\"")
        }
        print("scaled to \(workers) workers")
    }
}

/// `pool-server [serve]`: run the pool.
struct Serve: ParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Run the pool (the default).")

    @Option(name: .long, help: "Path of the listening Unix socket.")
    var socket = "pool.sock"

    @Option(name: .long, help: "Number of worker processes.")
    var workers = 3

    @Option(name: .long, help: "Grow the pool up to this many workers when too few are spare, and back down to --workers (default: a fixed size).")
    var maxWorkers: Int?

    @Option(name: .long, help: "With --max-workers: start workers when fewer than this many are spare (default: 1).")
    var minSpare: Int?

    @Option(name: .long, help: "With --max-workers: retire a worker a second while more than this many are spare (default: 3).")
    var maxSpare: Int?

    @Option(name: .long, help: "Message handler run by each worker: log, echo or sim.")
    var handler: HandlerChoice = .log

    @Option(name: .customLong("protocol"), help: "Client protocol: oneshot (the seed's), framed (length-prefixed, in order) or tagged (framed with a client tag per request, answered as completed).")
    var wireProtocol: ProtocolChoice = .oneshot

    @Option(name: .long, help: "What clients get back: ack (queued) or result (the handler's output).")
    var reply: ReplyChoice = .ack

    @Option(name: .long, help: "How a worker is chosen: round-robin, least-busy, or shared (one queue all workers read). Default: shared with --reply result, round-robin with --reply ack.")
    var dispatch: DispatchChoice?

    @Option(name: .long, help: "Kernel scheduling of workers: normal (SCHED_OTHER) or batch (SCHED_BATCH: a waking worker does not preempt the master). Default: batch with --reply ack; with --reply result workers keep the master's policy.")
    var workerSched: WorkerSchedChoice?

    @Option(name: .long, help: "Largest message in bytes (default: msgmax minus the 16-byte record header).")
    var maxMessage: Int?

    @Option(name: .long, help: "Permission bits of the socket file, in octal.")
    var socketMode = "0600"

    @Option(name: .long, help: "Group of the socket file (name or gid), e.g. a web server's, with --socket-mode 0660. Default: the master's.")
    var socketGroup: String?

    @Option(name: .long, help: "Capacity of each queue in bytes (default: the larger of 1 MiB and msgmnb if permitted, else msgmnb; a size asked for and not granted is logged as a warning).")
    var queueBytes: Int?

    @Option(name: .long, help: "Seconds to finish work after SIGINT/SIGTERM before killing workers.")
    var shutdownTimeout: Double = 10

    @Option(name: .long, help: "Seconds a connection may stay idle before it is closed.")
    var idleTimeout: Double = 10

    @Option(name: .long, help: "Seconds a control connection may stay idle before it is closed (at most --idle-timeout).")
    var controlTimeout: Double = 10

    @Option(name: .long, help: "Control connections open at once (1...1024); more are refused with an error line.")
    var maxControlConnections = 64

    @Option(name: .long, help: "Framed: requests in flight per connection before reading pauses.")
    var maxInflight = 64

    @Option(name: .long, help: "Connections beyond this are answered busy and closed.")
    var maxConnections = 10_000

    @Option(name: .long, help: "Connections the kernel queues for accept (listen(2) backlog; capped by net.core.somaxconn).")
    var listenBacklog: Int32 = 1024

    @Option(name: .long, help: "Requests held while all queues are full (their clients wait), before answering busy; 0 answers busy at once.")
    var maxBacklog = 10_000

    @Option(name: .long, help: "Seconds of work batched into one queue message, and of replies held by a worker to send together (0: no batching).")
    var batchTime = 0.0001

    @Option(name: .long, help: "Seconds the master polls for events before it sleeps, after a busy turn (0: never); lower latency for few clients at the cost of CPU.")
    var busyPoll = 0.0

    @Option(name: .long, help: "Payloads of at least this many bytes reach the worker through shared memory, so several share one queue message (0: never).")
    var spillBytes = 1024

    @Option(name: .long, help: "Chunks of shared memory for such payloads, msgmax bytes each (0: none); when all are in use, payloads travel inside the message.")
    var arenaChunks = 256

    @Option(name: .long, help: "Result mode: bytes of each worker's shared ring for replies of at least --spill-bytes (0: replies always inside the message; default: 65536, or msgmax rounded up to 64 when larger).")
    var replyRing: Int?

    @Option(name: .long, help: "Seconds a job may run before its worker is killed and replaced (default: no limit).")
    var jobTimeout: Double?

    @Option(name: .long, help: "Seconds after which a running job is logged once as slow, its worker left alone (default: off).")
    var slowJob: Double?

    @Option(name: .long, help: "Jobs a worker handles before it is replaced (default: no limit).")
    var maxJobs: Int?

    @Option(name: .long, help: "Random extra jobs (0...N) added to --max-jobs per worker (needs --max-jobs).")
    var maxJobsJitter = 0

    @Option(name: .long, help: "Comma-separated uids allowed to connect (checked with SO_PEERCRED).")
    var allowUid: String?

    @Option(name: .long, help: "Run workers as this user (name or uid; the master must be root). Default: the master's user.")
    var user: String?

    @Option(name: .long, help: "With --user: the workers' group (name or gid). Default: the user's primary group.")
    var group: String?

    @Option(name: .long, help: "State file recording pid and queues, for clean-up after a crash (default: <socket>.state).")
    var stateFile: String?

    @Option(name: .long, help: "Write the master's pid to this file once it serves; removed at exit (default: none).")
    var pidFile: String?

    @Option(name: .long, help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel: Logger.Level = .info

    @Option(name: .long, help: "Log format: text or json.")
    var logFormat: LineLogHandler.Format = .text

    @Option(name: .long, help: "Append logs to this file instead of stderr (reopened on SIGUSR1).")
    var logFile: String?

    @Option(name: .long, help: "JSON file of defaults, keys are the long flag names ({\"workers\": 2}); flags given on the command line win.")
    var config: String?

    func run() throws {
        // Before the log file's open, which must not take a closed 2's number.
        StandardDescriptors.ensureOpen()
        guard let mode = mode_t(socketMode, radix: 8) else {
            throw ValidationError("--socket-mode must be octal, e.g. 0600")
        }
        var configuration = PoolConfiguration()
        configuration.socketPath = socket
        configuration.workers = workers
        configuration.wireProtocol = wireProtocol.value
        configuration.replyMode = reply.value
        configuration.dispatch = dispatch?.value
        configuration.workerScheduling = workerSched?.value
        configuration.maxMessage = maxMessage
        configuration.socketMode = mode
        configuration.queueBytes = queueBytes
        configuration.shutdownTimeout = shutdownTimeout
        configuration.idleTimeout = idleTimeout
        configuration.controlTimeout = controlTimeout
        configuration.maxControlConnections = maxControlConnections
        configuration.maxInflight = maxInflight
        configuration.maxConnections = maxConnections
        configuration.listenBacklog = listenBacklog
        configuration.maxBacklog = maxBacklog
        configuration.jobTimeout = jobTimeout
        configuration.slowJob = slowJob
        configuration.batchTime = batchTime
        configuration.busyPoll = busyPoll
        configuration.spillBytes = spillBytes
        configuration.arenaChunks = arenaChunks
        configuration.replyRingBytes = replyRing
        configuration.maxJobs = maxJobs
        configuration.maxJobsJitter = maxJobsJitter
        if let maxWorkers {
            configuration.dynamicScaling = DynamicScaling(maxWorkers: maxWorkers, minSpare: minSpare ?? DynamicScaling.defaultMinSpare,
                                                          maxSpare: maxSpare ?? max(DynamicScaling.defaultMaxSpare, minSpare ?? 0))
        } else if minSpare != nil || maxSpare != nil {
            throw ValidationError("--min-spare and --max-spare apply with --max-workers only")
        }
        configuration.stateFile = stateFile
        configuration.pidFile = pidFile
        if let socketGroup {
            do { configuration.socketGroup = try lookUpGroup(socketGroup, flag: "--socket-group") } catch {
                throw ValidationError("\(error)")
            }
        }
        if let user {
            do { configuration.workerUser = try WorkerUser.lookUp(user: user, group: group) } catch {
                throw ValidationError("\(error)")
            }
        } else if group != nil {
            throw ValidationError("--group applies with --user only")
        }
        if let allowUid {
            let uids = allowUid.split(separator: ",").map { uid_t(String($0.filter { $0 != " " })) }
            // An empty list (also a config file's []) would let nobody in: refused.
            guard !uids.isEmpty, !uids.contains(nil) else { throw ValidationError("--allow-uid takes numeric uids, e.g. 0,1000") }
            configuration.allowedUIDs = uids.compactMap { $0 }
        }
        if let logFile {
            // Like any other resource the server cannot get at start: exit 2, reason on stderr.
            do {
                try configuration.checkLogFile(logFile)
                try LogFile.redirectStandardError(to: logFile, workersUID: configuration.workerUser?.uid)
            } catch {
                let line = "pool-server: cannot start: --log-file \(logFile): \(error)\n"
                _ = line.withCString { write(STDERR_FILENO, $0, strlen($0)) }
                throw ExitCode(2)
            }
        }
        let level = logLevel
        let format = logFormat
        // The master's lines never wait for a slow log reader (dropped and counted instead).
        let master = Logger(label: "pool.master") { LineLogHandler(label: $0, level: level, format: format, nonBlocking: true) }
        let worker = Logger(label: "pool.worker") { LineLogHandler(label: $0, level: level, format: format) }
        let server = PoolServer(configuration: configuration, logger: master, workerLogger: worker,
                                makeHandler: handler.value.factory)
        do {
            let status = try server.run()
            throw ExitCode(status)
        } catch let error as ConfigurationError {
            master.critical("cannot start: \(error)")
            throw ExitCode(2)
        } catch let error as SystemError {
            master.critical("cannot start: \(error)")
            throw ExitCode(2)
        }
    }
}

enum HandlerChoice: String, ExpressibleByArgument, CaseIterable {
    case log, echo, sim
    var value: BuiltinHandler { BuiltinHandler(rawValue: rawValue)! }
}

enum ProtocolChoice: String, ExpressibleByArgument, CaseIterable {
    case oneshot, framed, tagged
    var value: PoolConfiguration.WireProtocol { .init(rawValue: rawValue)! }
}

enum DispatchChoice: String, ExpressibleByArgument, CaseIterable {
    case roundRobin = "round-robin", leastBusy = "least-busy", shared
    var value: PoolConfiguration.DispatchStrategy { .init(rawValue: rawValue)! }
}

enum WorkerSchedChoice: String, ExpressibleByArgument, CaseIterable {
    case normal, batch
    var value: PoolConfiguration.WorkerScheduling { .init(rawValue: rawValue)! }
}

enum ReplyChoice: String, ExpressibleByArgument, CaseIterable {
    case ack, result
    var value: PoolConfiguration.ReplyMode { .init(rawValue: rawValue)! }
}

extension Logger.Level: @retroactive ExpressibleByArgument {}
extension LineLogHandler.Format: ExpressibleByArgument {}

PoolServerCommand.main(ConfigFile.expand(Array(CommandLine.arguments.dropFirst())))
