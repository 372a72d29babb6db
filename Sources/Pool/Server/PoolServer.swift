import Glibc
import Logging

/// A pre-forked process pool serving a Unix socket: the public entry point of the `Pool` module.
///
/// ```swift
/// var configuration = PoolConfiguration()
/// configuration.replyMode = .result
/// let server = PoolServer(configuration: configuration) { _ in
///     { message, _ in message.reversed() }
/// }
/// exit(try server.run())
/// ```
///
/// `run()` forks the workers and must be called while the process has a single thread: no
/// Dispatch, no `Task`, no async main before it. Each worker builds its own handler with the
/// factory after fork and calls it on every message.
public final class PoolServer {
    /// The longest write a Unix stream socket hands its reader whole: the kernel queues a longer
    /// one in pieces of about 36 KiB (32 KiB of pages and a head), and a reader woken by the first
    /// may find the socket dry before the next — which oneshot takes for the message's end.
    static let oneshotWholeWrite = 32_768

    /// The configuration the pool runs with; `run()` validates it against the kernel's limits.
    public let configuration: PoolConfiguration
    private let makeHandler: MessageHandlerFactory
    private let logger: Logger
    private let workerLogger: Logger

    /// - Parameters:
    ///   - logger: the master's logger. Its handler must neither start a thread (the master forks
    ///     its workers, which run Swift after the fork) nor block (it runs in the event loop). The
    ///     default writes standard error as `pool-server` does, never waiting for its reader; the
    ///     process's `LoggingSystem` default (`StreamLogHandler`) takes a lock and waits.
    ///   - workerLogger: the workers' logger (defaults to `logger` relabelled `pool.worker`).
    ///   - makeHandler: called once in each worker process after fork.
    public init(configuration: PoolConfiguration,
                logger: Logger = Logger(label: "pool.master") { LineLogHandler(label: $0, level: .info, nonBlocking: true) },
                workerLogger: Logger? = nil,
                makeHandler: @escaping MessageHandlerFactory) {
        self.configuration = configuration
        self.makeHandler = makeHandler
        self.logger = logger
        self.workerLogger = workerLogger ?? logger
    }

    /// Starts the pool and serves until SIGINT or SIGTERM; returns the exit status (0 after a
    /// clean shutdown, 1 after a forced one). Throws if the pool cannot start, having removed
    /// whatever it had created.
    public func run() throws -> Int32 {
        StandardDescriptors.ensureOpen()
        var limits = QueueLimits.current()
        #if DEBUG
        // Debug builds only: the pool sizes its messages for this msgmax, as if the kernel's had
        // been raised since the start, so a test can put a message longer than any of the pool's
        // in a worker's queue without changing the machine's limit.
        if let msgmax = getenv("POOL_DEBUG_MSGMAX").flatMap({ Int(String(cString: $0)) }), msgmax < limits.maxMessageBytes {
            limits.maxMessageBytes = msgmax
        }
        #endif
        let maxMessage = try configuration.validate(limits: limits)
        let notifier = SystemdNotifier.takeEnvironment()
        let activated = SocketActivation.takeListeners()

        // Signals first, so a worker dying during start-up is noticed. SIGCHLD may have been
        // inherited as ignored, which would make the kernel reap children behind our back.
        try Signals.setDefault(SIGCHLD)
        try Signals.ignore(SIGPIPE)
        let wake = try EventFD.create()
        Signals.setWakeFD(wake.fd)
        try Signals.install([SIGINT, SIGTERM, SIGCHLD, SIGHUP, SIGUSR1])
        // Scale commands only when sent: a handler's child or a pipeline member that touches the
        // terminal from the master's background process group makes the kernel send them too.
        try Signals.installCountingSentOnly([SIGTTIN, SIGTTOU])
        Signals.unblockAll()

        // A master that was SIGKILLed left its queues (they outlive processes): remove them.
        let recovery = recoverStaleState(statePath: configuration.stateFilePath, socketPath: configuration.socketPath,
                                         probeSocket: activated.isEmpty)
        if let reason = recovery.unlockedSocketCheck {
            logger.warning("checked for a stale socket without the start-up lock: another master starting on this socket at this moment could lose it",
                           metadata: ["socket": "\(configuration.socketPath)", "reason": "\(reason)"])
        }
        if let live = recovery.liveMaster {
            throw liveMasterError(live, socketPath: configuration.socketPath, statePath: configuration.stateFilePath)
        }
        // Recording ourselves would replace the only record of a dead master's queues we could
        // not remove (another user's): they would be lost for good.
        if let kept = recovery.keptStateFile {
            for line in recovery.lines {
                logger.warning("stale state of a dead master: \(line)", metadata: ["state-file": "\(configuration.stateFilePath)"])
            }
            throw ConfigurationError("\(configuration.stateFilePath): \(kept); refusing to start over it (run `pool-server cleanup` as that uid or root, or give this pool another --state-file)")
        }
        #if DEBUG
        // Debug builds only: widens the window between this check and the first record
        // (the start of `Supervisor.init`), so a test can start another master inside it.
        if let delay = getenv("POOL_DEBUG_START_DELAY_MS").flatMap({ UInt32(String(cString: $0)) }) {
            logger.info("debug: holding the start", metadata: ["milliseconds": "\(delay)"])
            usleep(delay * 1000)
        }
        #endif
        for line in recovery.lines {
            logger.warning("stale state of a dead master: \(line)", metadata: ["state-file": "\(configuration.stateFilePath)"])
        }

        // Before any queue exists: a passed socket the pool cannot serve stops the start here.
        if let inherited = activated.first,
           let note = try Listener.checkInherited(descriptor: inherited, path: configuration.socketPath) {
            logger.warning("socket activation: \(note)")
        }

        // Before any queue exists: a user the workers cannot become stops the start here.
        if let user = configuration.workerUser, geteuid() == 0 {
            do { try ChildProcess.checkCanBecome(uid: user.uid, gid: user.gid, groups: user.groups) } catch {
                throw ConfigurationError("--user: a worker cannot become \(user): \(error)")
            }
        }
        let supervisor = try Supervisor(
            configuration: configuration, limits: limits, makeHandler: makeHandler,
            logger: logger, workerLogger: workerLogger, keepDescriptors: [], socketActivated: !activated.isEmpty)
        var listener: Listener? = nil
        var control: Listener? = nil
        var pidFile: PIDFile? = nil
        /// Undoes a failed start: nothing of it may outlive the process (queues above all).
        func abandon(_ error: Error) -> Error {
            for open in [listener, control].compactMap({ $0 }) {
                open.unlinkIfOurs()
                open.socket.close()
            }
            pidFile?.removeIfOurs()
            supervisor.killAndReapAll()
            supervisor.removeQueues()
            return error
        }
        let master: Master
        do {
            try supervisor.spawnAll()
            if let inherited = activated.first {
                listener = try Listener.adopt(descriptor: inherited, path: configuration.socketPath)
                logger.info("using the socket passed by systemd (socket activation)", metadata: ["fd": "\(inherited)"])
            } else {
                listener = try Listener.open(path: configuration.socketPath, mode: configuration.socketMode,
                                             group: configuration.socketGroup,
                                             backlog: configuration.listenBacklog, logger: logger)
            }
            control = try Listener.open(path: configuration.controlSocketPath, mode: 0o600, backlog: 16, logger: logger)
            // Written again now that the socket is ours, whatever the file holds: a master started
            // at the same moment on the same socket may have recorded itself since; it fails to
            // bind and removes only a record of its own (`removeQueues`).
            try supervisor.writeState()
            pidFile = try configuration.pidFile.map(PIDFile.write(to:))
            master = try Master(configuration: configuration, maxMessage: maxMessage, limits: limits, logger: logger,
                                supervisor: supervisor, listener: listener!, control: control, wake: wake, notifier: notifier)
        } catch {
            throw abandon(error)
        }
        logger.info("pool started", metadata: [
            "pid": "\(getpid())", "socket": "\(configuration.socketPath)", "workers": "\(configuration.workers)",
            "protocol": "\(configuration.wireProtocol)", "reply": "\(configuration.replyMode)",
            "dispatch": "\(configuration.effectiveDispatch.rawValue)",
            "worker-sched": "\(configuration.effectiveWorkerScheduling?.rawValue ?? "inherited")",
            "worker-user": "\(configuration.workerUser.map { "\($0)" } ?? "inherited")",
            "max-workers": "\(configuration.dynamicScaling.map { "\($0.maxWorkers) (spare \($0.minSpare)…\($0.maxSpare))" } ?? "fixed")",
            // Stated because it shows in the master's CPU use (it polls after traffic).
            "busy-poll": "\(configuration.busyPoll > 0 ? "\(Int((configuration.busyPoll * 1e6).rounded()))us" : "off")",
            "max-message": "\(maxMessage)", "queue-bytes": "\(supervisor.grantedQueueBytes)",
            "queues": "\(supervisor.slots.map(\.queue.id))", "limits": "\(limits)",
        ])
        if configuration.wireProtocol == .oneshot && maxMessage > Self.oneshotWholeWrite {
            logger.warning("oneshot messages over \(Self.oneshotWholeWrite) bytes may be taken cut: the protocol has no length, and the kernel hands a longer write to the reader in pieces; use --protocol framed for them",
                           metadata: ["max-message": "\(maxMessage)"])
        }
        if let error = notifier.notifyPersistently("READY=1\nMAINPID=\(getpid())") {
            logger.error("could not tell systemd the pool is ready (READY=1); a Type=notify unit may time out and stop it",
                         metadata: ["notify-socket": "\(notifier.socketPath ?? "")", "error": "\(SystemError("sendto", error))"])
        }
        master.notifyStatus()
        // The first WATCHDOG=1 in the loop's first turn, the next ones from its timers.
        if notifier.watchdogNanoseconds != nil { master.nextWatchdog = monotonicNanoseconds() }
        let status = master.run()
        pidFile?.removeIfOurs()
        // Lines dropped at the end (the stop's own, "shutdown complete") are counted ahead of the
        // next line, and there is none: one bounded wait for the reader, then a last line that
        // carries the count. (The loop is over: waiting here holds nothing up.)
        var wait: Int32 = 1000
        #if DEBUG
        // Debug builds only: a test reading the log at the exit gets more than a second to start.
        if let ms = getenv("POOL_DEBUG_EXIT_LOG_WAIT_MS").flatMap({ Int32(String(cString: $0)) }) { wait = ms }
        #endif
        // (Not at all when the level would drop the line that carries the count.)
        if MasterLogOutput.dropped > 0 && logger.logLevel <= .warning && MasterLogOutput.waitForRoom(milliseconds: wait) {
            logger.warning("exiting", metadata: ["status": "\(status)"])
        }
        return status
    }
}
