import Glibc

/// Everything a pool needs to run. Defaults reproduce the seed: `pool.sock`, 3 workers, oneshot, ack.
public struct PoolConfiguration: Sendable {
    /// The client protocol on the listening socket.
    public enum WireProtocol: String, Sendable, CaseIterable {
        /// The seed's: one message per connection, one reply, close.
        case oneshot
        /// Length-prefixed requests and responses on a persistent connection, answered in order.
        case framed
        /// framed with a client-chosen tag on each request, echoed on its response; responses go
        /// out as they complete, so a slow request never holds up the ones behind it.
        case tagged

        /// Length-prefixed frames (framed or tagged).
        public var isFramed: Bool { self != .oneshot }
    }

    /// What a client is told.
    public enum ReplyMode: String, Sendable, CaseIterable {
        /// "Your message is in a worker's queue" (the seed's `ok`).
        case ack
        /// The handler's output.
        case result
    }

    /// How a worker is chosen for each message.
    public enum DispatchStrategy: String, Sendable, CaseIterable {
        /// Each worker in turn.
        case roundRobin = "round-robin"
        /// The worker with the fewest requests in flight.
        case leastBusy = "least-busy"
        /// One queue that every worker reads: whichever worker is free takes the next message.
        case shared
    }

    /// Path of the listening Unix socket (`--socket`); at most 103 bytes, so that `<socket>.ctl`
    /// still fits in `sun_path`.
    public var socketPath: String = "pool.sock"
    /// How a worker is chosen for each message (`--dispatch`); `nil` = the default for the reply
    /// mode (`effectiveDispatch`).
    public var dispatch: DispatchStrategy? = nil
    /// The dispatch in force: as set, else `shared` for `--reply result` (an idle worker takes the
    /// next job, so short jobs do not wait behind long ones; see the README's trade-offs) and
    /// `round-robin` for `--reply ack` (the seed's).
    public var effectiveDispatch: DispatchStrategy { dispatch ?? (replyMode == .result ? .shared : .roundRobin) }

    /// How the kernel schedules worker processes (`--worker-sched`).
    public enum WorkerScheduling: String, Sendable, CaseIterable {
        /// SCHED_OTHER, like any process.
        case normal
        /// SCHED_BATCH: the same share of CPU, but a worker that wakes up does not preempt the
        /// running process (the master, mid-turn, or a client).
        case batch
    }

    /// `--worker-sched`; `nil` = the default for the reply mode (`effectiveWorkerScheduling`).
    public var workerScheduling: WorkerScheduling? = nil
    /// The policy workers switch to: as set, else `batch` for `--reply ack`, where the client has
    /// its answer before the worker runs, so its wake-up should not interrupt the master answering
    /// others. `nil` for `--reply result` unless set: the worker is what the client waits for, and
    /// it keeps whatever policy the master was started with (`chrt`, systemd's CPUSchedulingPolicy).
    public var effectiveWorkerScheduling: WorkerScheduling? { workerScheduling ?? (replyMode == .ack ? .batch : nil) }
    /// Most worker slots a pool has (the shared mappings are sized for them).
    public static let maxWorkers = 1024
    /// Number of worker processes, 1…1024 (`--workers`).
    public var workers: Int = 3
    /// The client protocol on the listening socket (`--protocol`).
    public var wireProtocol: WireProtocol = .oneshot
    /// Whether clients get `ok` once queued or the handler's output (`--reply`).
    public var replyMode: ReplyMode = .ack
    /// Largest accepted message; `nil` = the most one queue message holds (`msgmax` − 16).
    public var maxMessage: Int? = nil
    /// Permission bits of the socket file (queues are always 0600).
    public var socketMode: mode_t = 0o600
    /// Group of the socket file (`--socket-group`), so that with `--socket-mode 0660` that
    /// group's members may connect (a web server's, say); `nil`: the master's group.
    public var socketGroup: gid_t? = nil
    /// Capacity to ask for each queue, in bytes; `nil` = 1 MiB if allowed, else `msgmnb`.
    public var queueBytes: Int? = nil
    /// Seconds from SIGINT/SIGTERM until remaining workers are SIGKILLed.
    public var shutdownTimeout: Double = 10
    /// Seconds a connection may sit with nothing in flight before it is closed.
    public var idleTimeout: Double = 10
    /// The same for a control connection (at most `idleTimeout`): a script that hangs holding
    /// them must not keep the operator out for as long as clients may idle.
    public var controlTimeout: Double = 10
    /// Control connections open at once; more are answered `error: too many control connections`.
    public var maxControlConnections = 64
    /// Framed: requests in flight per connection before the server stops reading it.
    public var maxInflight: Int = 64
    /// Connections beyond this get a busy answer and are closed.
    public var maxConnections: Int = 10_000
    /// Requests held in the master while every queue is full, before answering busy (ack mode's
    /// clients wait for their `ok` meanwhile; result mode's for their result).
    public var maxBacklog: Int = 10_000
    /// Batching: about this many seconds of work (at the workers' average job time) travel in one
    /// queue message, and a worker holds finished replies about this long to send them together.
    /// 0 sends every job and every reply on its own.
    public var batchTime: Double = 0.0001
    /// Seconds the master's loop polls for events before it sleeps, after a turn that had some
    /// (`--busy-poll`; 0: never polls). Off by default: it trades CPU for latency.
    public var busyPoll: Double = 0
    /// Payloads of at least this many bytes travel to the worker through the shared payload arena
    /// instead of inside the queue message, so that several fit one message (`--spill-bytes`;
    /// 0: never).
    public var spillBytes: Int = 1024
    /// Chunks in the payload arena, each holding one payload of up to `msgmax` − 16 bytes
    /// (`--arena-chunks`; 0: no arena). When every chunk is in use, payloads travel inline.
    public var arenaChunks: Int = 256
    /// Result mode: bytes of each worker's ring for replies of at least `spillBytes` (`--reply-ring`;
    /// 0: every reply inline). A multiple of 64, at least `msgmax`. `nil`: 64 KiB, or `msgmax`
    /// rounded up to 64 where the kernel allows larger messages (none above 16 MiB, the most a
    /// ring may have: replies then travel inline), so the default always starts.
    public var replyRingBytes: Int? = nil

    /// The ring size in effect under `limits` (see `replyRingBytes`).
    public func effectiveReplyRingBytes(limits: QueueLimits) -> Int {
        if let replyRingBytes { return replyRingBytes }
        let fitting = max(65_536, (limits.maxMessageBytes + 63) / 64 * 64)
        return fitting <= 1 << 24 ? fitting : 0
    }
    /// `listen(2)` backlog.
    public var listenBacklog: Int32 = 1024
    /// Longest accepted value of each timeout, in seconds.
    public static let longestTimeout = 100_000_000.0
    /// Longest `--busy-poll`, in seconds: beyond a few wake-up costs, polling only burns CPU.
    public static let longestBusyPoll = 0.01
    /// Largest `--max-connections`.
    public static let mostConnections = 1_000_000
    /// Seconds a job may run before its worker is killed and replaced (`nil` = no limit).
    public var jobTimeout: Double? = nil
    /// Seconds after which a running job is logged once as slow (`--slow-job`, like PHP-FPM's
    /// `request_slowlog_timeout`); `nil` = never. Its worker is left alone.
    public var slowJob: Double? = nil
    /// Whether the master looks at running jobs' ages (for `--job-timeout` or `--slow-job`).
    var scansJobs: Bool { jobTimeout != nil || slowJob != nil }
    /// Jobs a worker handles before it is replaced (`nil` = forever), plus up to this much jitter.
    public var maxJobs: Int? = nil
    /// Up to this many extra jobs, drawn at random for each worker process, so recycled workers do
    /// not all restart together (`--max-jobs-jitter`).
    public var maxJobsJitter: Int = 0
    /// UIDs allowed to connect (SO_PEERCRED); `nil` = anyone the socket mode lets in.
    public var allowedUIDs: [uid_t]? = nil
    /// `--user`/`--group`: workers drop to this user after the fork (the master must be root);
    /// their queues are given to it. `nil`: workers run as the master does.
    public var workerUser: WorkerUser? = nil
    /// Where the master records its pid and queue ids; `nil` = `<socket>.state`.
    public var stateFile: String? = nil
    /// `--pid-file`: where the master writes its pid once it serves; `nil` = nowhere.
    public var pidFile: String? = nil
    /// `--max-workers` with `--min-spare`/`--max-spare`: the pool grows and shrinks between
    /// `workers` and its ceiling; `nil` = a fixed size (changed only by `scale`, SIGTTIN/SIGTTOU).
    public var dynamicScaling: DynamicScaling? = nil

    /// The operator's control socket: `<socket>.ctl`.
    public var controlSocketPath: String { socketPath + ".ctl" }

    /// The state file in effect.
    public var stateFilePath: String { stateFile ?? PoolState.defaultPath(forSocket: socketPath) }

    /// The defaults: `pool.sock`, 3 workers, oneshot, ack, round-robin.
    public init() {}
}

/// A configuration that cannot run, with the reason.
public struct ConfigurationError: Error, CustomStringConvertible, Sendable {
    /// What is wrong, naming the flag or kernel limit involved.
    public let description: String
    /// Creates an error with the message shown to the operator.
    public init(_ description: String) { self.description = description }
}

extension PoolConfiguration {
    /// Refuses queues smaller than msgmax (what the queues got, `granted`, is known only once
    /// they exist). Such a queue never takes a message of msgmax bytes, and the inboxes, the
    /// batches, the arena and `--max-message` are sized for one: its send would be refused forever
    /// (a job, held at the head of the line) or wait forever (a worker's reply). Only a msgmax
    /// raised without msgmnb, and without CAP_SYS_RESOURCE for `--queue-bytes`, gets here.
    public static func checkQueueCapacity(_ granted: Int, limits: QueueLimits) throws {
        guard granted < limits.maxMessageBytes else { return }
        throw ConfigurationError("message queues hold \(granted) bytes, less than kernel.msgmax (\(limits.maxMessageBytes)), so the largest messages would never fit: raise kernel.msgmnb to at least msgmax, run with CAP_SYS_RESOURCE (--queue-bytes), or lower kernel.msgmax")
    }

    /// Largest payload one queue message holds with our record header, given `msgmax`.
    /// With `framed`, also below the framed protocols' 2³⁰, which they take for another
    /// protocol's bytes (a msgmax raised that far would otherwise make valid lengths "bad request").
    public static func largestMessage(limits: QueueLimits, framed: Bool = false) -> Int {
        let queue = limits.maxMessageBytes - JobCodec.headerBytes
        return framed ? min(queue, Int(FrameCodec.garbageLength) - 1) : queue
    }

    /// Where `path` leads, to tell two spellings of one file apart: its directory resolved
    /// (symbolic links, `.`, `..`, the working directory), then its last component as written (the
    /// file itself need not exist). A directory that cannot be resolved leaves the path as given.
    /// Refuses a `--log-file` that is one of the pool's other files (compared as `validate`
    /// compares them): opened first, it would be created where the socket must be bound, or renamed
    /// away by the state or pid file's atomic writes (every line then lost, later ones written into
    /// that file).
    public func checkLogFile(_ path: String) throws {
        let others = [socketPath, controlSocketPath, stateFilePath] + (pidFile.map { [$0] } ?? [])
        if others.map(Self.location(of:)).contains(Self.location(of: path)) {
            throw ConfigurationError("--log-file must not be the socket, <socket>.ctl, the state file or the pid file (\(path))")
        }
    }

    static func location(of path: String) -> String {
        let (directory, name) = splitPath(path)
        guard let resolved = realpath(directory, nil) else { return path }
        defer { free(resolved) }
        let base = String(cString: resolved)
        return (base == "/" ? "" : base) + "/" + name
    }

    /// Checks the configuration against itself and the kernel's limits; returns the effective
    /// max message size.
    public func validate(limits: QueueLimits) throws -> Int {
        guard workers >= 1 else { throw ConfigurationError("--workers must be at least 1 (got \(workers))") }
        guard workers <= Self.maxWorkers else { throw ConfigurationError("--workers must be at most \(Self.maxWorkers) (got \(workers))") }
        let largest = Self.largestMessage(limits: limits, framed: wireProtocol.isFramed)
        guard largest >= 1 else {
            throw ConfigurationError("msgmax (\(limits.maxMessageBytes)) leaves no room for a message after the \(JobCodec.headerBytes)-byte header")
        }
        let effective = maxMessage ?? largest
        guard effective >= 1 else { throw ConfigurationError("--max-message must be at least 1") }
        guard effective <= largest || !wireProtocol.isFramed || largest < Int(FrameCodec.garbageLength) - 1 else {
            throw ConfigurationError("--max-message \(effective) is not below 2^30, where the framed protocol's lengths stop")
        }
        guard effective <= largest else {
            throw ConfigurationError("--max-message \(effective) exceeds what one queue message holds: msgmax \(limits.maxMessageBytes) − \(JobCodec.headerBytes) header = \(largest); raise /proc/sys/kernel/msgmax")
        }
        if let workerUser, workerUser.uid != geteuid() || workerUser.gid != getegid(), geteuid() != 0 {
            throw ConfigurationError("--user/--group need a master running as root (it runs as uid \(geteuid()))")
        }
        if let scaling = dynamicScaling {
            guard scaling.maxWorkers >= workers, scaling.maxWorkers <= Self.maxWorkers else {
                throw ConfigurationError("--max-workers must be within --workers (\(workers))…\(Self.maxWorkers) (got \(scaling.maxWorkers))")
            }
            guard scaling.minSpare >= 1, scaling.maxSpare >= scaling.minSpare else {
                throw ConfigurationError("--min-spare must be at least 1 and --max-spare at least --min-spare (got \(scaling.minSpare) and \(scaling.maxSpare))")
            }
            // More spare workers than the pool may have: never met, it would never shrink.
            guard scaling.minSpare <= scaling.maxWorkers else {
                throw ConfigurationError("--min-spare (\(scaling.minSpare)) must be at most --max-workers (\(scaling.maxWorkers))")
            }
        }
        guard !socketPath.isEmpty else { throw ConfigurationError("--socket must not be empty") }
        // The state file records the path as a line of its own: a newline in it would add lines.
        guard !socketPath.unicodeScalars.contains(where: { $0.value < 0x20 || $0.value == 0x7F }) else {
            throw ConfigurationError("--socket must not contain control characters (newlines, tabs, …)")
        }
        for (flag, path) in [("--state-file", stateFile), ("--pid-file", pidFile)] where path?.isEmpty == true {
            throw ConfigurationError("\(flag) must not be empty")
        }
        // One file each: the pid file renamed over the socket or the state file would take its
        // place. Compared by where they lead (`./pool.sock` is `pool.sock`), not by spelling.
        let socketFiles = [socketPath, controlSocketPath].map(Self.location(of:))
        if let pidFile, (socketFiles + [Self.location(of: stateFilePath)]).contains(Self.location(of: pidFile)) {
            throw ConfigurationError("--pid-file must not be the socket, <socket>.ctl or the state file (\(pidFile))")
        }
        if socketFiles.contains(Self.location(of: stateFilePath)) {
            throw ConfigurationError("--state-file must not be the socket or <socket>.ctl (\(stateFilePath))")
        }
        guard controlSocketPath.utf8.count <= unixSocketPathMax else {
            throw ConfigurationError("--socket path is \(socketPath.utf8.count) bytes; a Unix socket path holds at most \(unixSocketPathMax) bytes (sun_path), and the control socket <socket>.ctl needs 4 more. Use a shorter or relative path")
        }
        guard socketMode & ~0o777 == 0 else { throw ConfigurationError("--socket-mode must be within 0777") }
        for (flag, seconds) in [("--shutdown-timeout", shutdownTimeout), ("--idle-timeout", idleTimeout), ("--control-timeout", controlTimeout),
                                ("--job-timeout", jobTimeout ?? 1), ("--slow-job", slowJob ?? 1), ("--batch-time", batchTime), ("--busy-poll", busyPoll)]
        where seconds.isNaN {
            throw ConfigurationError("\(flag) must be a number of seconds, not nan")
        }
        guard shutdownTimeout >= 0 else { throw ConfigurationError("--shutdown-timeout must be 0 or more") }
        // At least a microsecond: a positive value that rounds to 0 ns would be the refused 0
        // (every idle connection closed, every job timed out, at the first scan).
        guard idleTimeout >= 1e-6 else { throw ConfigurationError("--idle-timeout must be positive (at least 0.000001)") }
        guard controlTimeout >= 1e-6 else { throw ConfigurationError("--control-timeout must be positive (at least 0.000001)") }
        // Each is a descriptor beside the clients'.
        guard (1...1024).contains(maxControlConnections) else { throw ConfigurationError("--max-control-connections must be within 1…1024") }
        // Deadlines are nanoseconds in an Int64: about 292 years; 10⁸ s (3 years) is plenty.
        for (flag, seconds) in [("--shutdown-timeout", shutdownTimeout), ("--idle-timeout", idleTimeout), ("--control-timeout", controlTimeout), ("--job-timeout", jobTimeout ?? 1), ("--slow-job", slowJob ?? 1)]
        where !(seconds <= Self.longestTimeout) {
            throw ConfigurationError("\(flag) must be at most \(Int(Self.longestTimeout)) seconds")
        }
        guard maxInflight >= 1 else { throw ConfigurationError("--max-inflight must be at least 1") }
        guard maxConnections >= 1 else { throw ConfigurationError("--max-connections must be at least 1") }
        // Connection keys hold the descriptor in 20 bits (ConnectionTable), and descriptors are
        // handed out lowest first: this keeps every client's below 2²⁰ with room for the master's own.
        guard maxConnections <= Self.mostConnections else {
            throw ConfigurationError("--max-connections must be at most \(Self.mostConnections)")
        }
        guard maxBacklog >= 0 else { throw ConfigurationError("--max-backlog must be 0 or more") }
        guard listenBacklog >= 1 else { throw ConfigurationError("--listen-backlog must be at least 1") }
        guard spillBytes >= 0 else { throw ConfigurationError("--spill-bytes must be 0 (never) or more") }
        guard arenaChunks >= 0, arenaChunks <= 65_536 else { throw ConfigurationError("--arena-chunks must be within 0…65536") }
        let ring = effectiveReplyRingBytes(limits: limits)
        guard ring == 0 || (ring % 64 == 0 && ring >= limits.maxMessageBytes && ring <= 1 << 24) else {
            throw ConfigurationError("--reply-ring must be 0, or a multiple of 64 from msgmax (\(limits.maxMessageBytes)) to 16 MiB")
        }
        guard batchTime >= 0, batchTime <= 1 else { throw ConfigurationError("--batch-time must be within 0…1 seconds") }
        guard busyPoll >= 0, busyPoll <= Self.longestBusyPoll else {
            throw ConfigurationError("--busy-poll must be within 0…\(Self.longestBusyPoll) seconds")
        }
        if let jobTimeout, jobTimeout < 1e-6 { throw ConfigurationError("--job-timeout must be positive (at least 0.000001)") }
        if let slowJob, !(slowJob >= 1e-6) { throw ConfigurationError("--slow-job must be positive (at least 0.000001)") }
        if let maxJobs, maxJobs < 1 { throw ConfigurationError("--max-jobs must be at least 1") }
        guard maxJobsJitter >= 0 else { throw ConfigurationError("--max-jobs-jitter must be 0 or more") }
        // Jitter spreads the replacements --max-jobs causes; alone it would silently do nothing.
        if maxJobsJitter > 0 && maxJobs == nil { throw ConfigurationError("--max-jobs-jitter needs --max-jobs") }
        // Each worker's limit is --max-jobs plus a draw up to the jitter, computed in the master.
        if let maxJobs, maxJobs.addingReportingOverflow(maxJobsJitter).overflow {
            throw ConfigurationError("--max-jobs-jitter \(maxJobsJitter) plus --max-jobs \(maxJobs) exceeds \(Int.max)")
        }
        if let queueBytes, queueBytes < limits.maxMessageBytes {
            throw ConfigurationError("--queue-bytes \(queueBytes) is below msgmax \(limits.maxMessageBytes): a full-size message would never fit")
        }
        return effective
    }
}
