import Glibc
import Logging

/// The master process's event loop: accepts clients, reads requests, dispatches them to worker
/// queues, routes replies back in request order, and runs shutdown. Single-threaded and never
/// blocking: every socket is non-blocking, every `msgsnd`/`msgrcv` uses IPC_NOWAIT, and every
/// wait is `epoll_wait` with a timeout derived from the next deadline.
///
/// Stored properties are `@exclusivity(unchecked)`: only the master's one thread touches them,
/// never with an access held across a call, and the runtime checks were about a third of the
/// master's instructions per request (callgrind, oneshot ack). Debug and release behave the same.
final class Master {
    enum Phase: Equatable {
        case running
        /// Stopped accepting; finishing connections in progress.
        case draining
        /// Connections done; quit messages sent, waiting for workers to exit.
        case quitting
        /// Deadline passed; stragglers were SIGKILLed, waiting to reap them.
        case killing
        case finished
    }

    /// Where a result-mode reply goes.
    struct Route {
        var connection: UInt64
        /// The request's place on its connection: a sequence number (in-order protocols) or the
        /// client's tag (tagged).
        var sequence: UInt64
    }

    /// A job held in the master while every queue is full, or taken back from a worker that died
    /// before starting it.
    struct Held {
        var id: UInt64
        var payload: [UInt8]
        /// Ack mode: already answered `ok`, so it must run — it has no route to check.
        var acknowledged = false
        /// Ack mode: the client still waits for its `ok`, given when the job is queued.
        var ack: JobBatch.Ack? = nil
    }

    enum Token {
        static let listener: UInt64 = 1
        static let signals: UInt64 = 2
        static let doorbell: UInt64 = 3
        static let control: UInt64 = 4
        static let scanTimer: UInt64 = 5
    }

    /// A client that does not read its responses stops being read above this much unwritten output.
    static let outputHighWater = 1 << 20
    /// An emptied output buffer up to this size stays with a busy connection (`flush`): 10,000
    /// active connections keep at most 40 MiB, returned by the idle scan once they go quiet.
    static let keptOutputCapacity = 4096
    /// Most bytes a framed connection's input buffer holds: a whole largest frame, and room to read
    /// on behind it.
    var framedInputLimit: Int { FrameCodec.lengthBytes + maxMessage + 65_536 }
    /// Bytes read and discarded from one connection (see `drainAndIgnore`) before it is closed.
    static let discardLimit = 4 << 20
    /// How often job ages are checked against `--job-timeout` (and the SIGKILL grace after it).
    static let jobScanInterval: Int64 = 100_000_000

    let configuration: PoolConfiguration
    let maxMessage: Int
    let logger: Logger
    let epoll: Epoll
    let wake: EventFD
    let supervisor: Supervisor
    @exclusivity(unchecked) var listener: Listener?
    /// The operator's channel (`<socket>.ctl`): status, reload, scale, stop.
    @exclusivity(unchecked) var control: Listener?
    /// Of `connections`, how many are the operator's (status and the like, not clients).
    @exclusivity(unchecked) var controlConnectionCount = 0
    let notifier: SystemdNotifier
    let startedAt = monotonicNanoseconds()
    @exclusivity(unchecked) var dispatcher: Dispatcher
    @exclusivity(unchecked) var connections = ConnectionTable()
    @exclusivity(unchecked) var nextRequestID: UInt64 = 1
    /// The clock, read once per loop turn when `epoll_wait` returns (before the turn's first
    /// event): connections' activity stamps and the timers use it. A reading is a vDSO call
    /// costing about as much as a tenth of the master's other work per request, and six of them
    /// were taken per framed request; nothing in a turn needs finer time than the turn.
    @exclusivity(unchecked) var turnStart = monotonicNanoseconds()
    @exclusivity(unchecked) var routes = RequestIDMap<Route>()
    @exclusivity(unchecked) var held = FIFO<Held>()
    /// A connection with requests in flight closed while jobs were held (`backlogHasRoom`).
    @exclusivity(unchecked) var heldMayHaveOrphans = false
    /// The loop turn of the last pass dropping held jobs of clients gone.
    @exclusivity(unchecked) var heldCompactedTurn: UInt64 = .max
    /// Jobs staged this loop turn, one batch per slot (index = slot).
    @exclusivity(unchecked) var batches: [JobBatch] = []
    /// Set when a job is staged, cleared by `flushBatches`: the loop flushes three times a turn,
    /// and most of those find nothing staged (a scan of every slot's batch).
    @exclusivity(unchecked) var anyStaged = false
    /// `flushBatches`: jobs of batches no queue took, returned to `held` in one merge.
    @exclusivity(unchecked) var collectingReturns = false
    @exclusivity(unchecked) var returning: [Held] = []
    /// Replies received and workers reaped so far: room may have come since a count was taken.
    @exclusivity(unchecked) var roomSignals = 0
    /// A drain of the reply queue stopped at its bound with messages left: the next wait does not
    /// sleep (`drainReplies`).
    @exclusivity(unchecked) var repliesLeft = false
    /// The turn in which a retry of held jobs last found every queue full, and `roomSignals` then.
    @exclusivity(unchecked) var heldRetryBlocked: (turn: UInt64, roomSignals: Int)? = nil
    /// Most jobs one queue message may carry: about `--batch-time` of work at the workers' average
    /// job time, so slow jobs are not batched behind each other.
    @exclusivity(unchecked) var recordLimit = 1
    let batchNanoseconds: Int64
    /// Whether debug lines are written: asked once, because asking the log handler per queued
    /// job cost about 130 instructions per request (callgrind) at the default level.
    let logsDebug: Bool
    #if DEBUG
    /// Debug builds only (`POOL_DEBUG_HELD_WAIT_FOR_REAP`): held jobs are not sent while a child's
    /// death is counted and not yet handled, so a test can have the master reap a worker before
    /// it sends the jobs held for room, as it does when the death and the room come in one turn.
    let heldWaitsForReap = getenv("POOL_DEBUG_HELD_WAIT_FOR_REAP") != nil
    #endif
    /// `--busy-poll`: how long the loop polls before it sleeps, after a turn with traffic.
    let busyPollNanoseconds: Int64
    let batchCapacity: Int
    let batchByteLimit: Int
    @exclusivity(unchecked) var dirty: [Connection] = []
    /// `setMasterWantsRoom(true)` is in force (jobs held for lack of queue room).
    @exclusivity(unchecked) var wantsRoom = false
    /// The dirty list being flushed (its storage is reused turn after turn).
    @exclusivity(unchecked) var flushing: [Connection] = []
    let sendBuffer: MessageBuffer
    let receiveBuffer: MessageBuffer
    @exclusivity(unchecked) var responseScratch: [UInt8] = []
    /// Oneshot: where a new connection's first read lands (`maxMessage + 1` bytes, so one read
    /// also tells a message over the limit). A message that arrives whole is taken from here and
    /// the connection never allocates an input buffer.
    let oneshotScratch: UnsafeMutableRawBufferPointer
    /// Where `drainAndIgnore` reads what it throws away.
    let discardScratch = UnsafeMutableRawBufferPointer.allocate(byteCount: 65_536, alignment: 16)
    /// Kept open so that at EMFILE we can close it, accept, and shed the connection.
    @exclusivity(unchecked) var spareFD: Int32
    /// Out of descriptors with none to spare (ENFILE: another process took the one freed): the
    /// listeners are left out of the wait until then, or their waiting clients would wake every
    /// turn for an accept that cannot succeed, and the loop would spin.
    @exclusivity(unchecked) var listenersPausedUntil: Int64? = nil
    static let listenerPauseNanoseconds: Int64 = 100_000_000
    @exclusivity(unchecked) var phase = Phase.running
    /// A failure asked for a stop, begun by the next `runTimers` (see `failReplies`).
    @exclusivity(unchecked) var stopRequested = false
    /// SIGINT/SIGTERM received so far: the second forces the stop.
    @exclusivity(unchecked) var stopSignals = 0
    /// Per-client refusals and *busy* answers are logged at most once a second per kind.
    @exclusivity(unchecked) var logThrottle = LogThrottle()
    /// What `run` returns after a graceful stop: 1 if the stop was forced on us by a failure.
    @exclusivity(unchecked) var exitStatus: Int32 = 0
    /// The reply queue failed for good: it is not read again.
    @exclusivity(unchecked) var repliesFailed = false
    /// Every worker is to be restarted (SIGTERM) at the next timer run: a new reply queue.
    @exclusivity(unchecked) var restartWorkers = false
    @exclusivity(unchecked) var deadline: Int64 = .max
    /// When the shutdown deadline's SIGKILL went out: reaping is waited for until 5 s after it.
    @exclusivity(unchecked) var killedAt: Int64 = .max
    /// Workers that have been sent their quit message (shutdown).
    @exclusivity(unchecked) var quitSent: Set<pid_t> = []
    @exclusivity(unchecked) var nextIdleScan: Int64 = 0
    /// `WatchdogSec=`: when the next `WATCHDOG=1` is due (`.max` without a watchdog). Sent from the
    /// loop, so a master stuck anywhere stops sending and systemd restarts it.
    @exclusivity(unchecked) var nextWatchdog: Int64 = .max
    /// With `--job-timeout`: when the loop must next wake to check job ages.
    @exclusivity(unchecked) var nextJobScan: Int64 = 0
    /// When the state file is next checked to still hold our record (`Supervisor.checkStateRecord`).
    @exclusivity(unchecked) var nextRecordCheck: Int64 = 0
    /// Wakes the loop for the idle scan and job-timeout checks (see `armScanTimer`).
    let scanTimer: TimerFD
    /// The deadline `scanTimer` is armed for; nil once it has fired (or was never armed).
    @exclusivity(unchecked) var scanTimerDeadline: Int64?
    @exclusivity(unchecked) var nextRespawn: Int64? = nil
    /// `--max-workers`: the sizing policy, when its next look is due, and how often it found the
    /// pool at its ceiling while short of spare workers (and when it last said so).
    @exclusivity(unchecked) var scalingPolicy: ScalingPolicy?
    @exclusivity(unchecked) var nextScaleCheck: Int64 = 0
    @exclusivity(unchecked) var ceilingReached = 0
    @exclusivity(unchecked) var lastCeilingWarning: Int64? = nil
    let idleTimeoutNanoseconds: Int64
    let controlTimeoutNanoseconds: Int64
    let idleScanInterval: Int64

    @exclusivity(unchecked) private(set) var accepted = 0
    /// Queue messages sent (debug log lines name the message a job went in).
    @exclusivity(unchecked) private var messagesQueued: UInt64 = 0
    @exclusivity(unchecked) private(set) var statusCounts = [Int](repeating: 0, count: 8)
    /// Loop turns since the start (a clock reading may repeat on a coarse clocksource).
    @exclusivity(unchecked) var turn: UInt64 = 0
    /// The status report built in loop turn `turn` (`reportOfThisTurn`).
    @exclusivity(unchecked) var turnReport: (turn: UInt64, report: StatusReport)?

    init(configuration: PoolConfiguration, maxMessage: Int, limits: QueueLimits, logger: Logger,
         supervisor: Supervisor, listener: Listener, control: Listener?, wake: EventFD, notifier: SystemdNotifier) throws {
        self.configuration = configuration
        self.control = control
        self.notifier = notifier
        dispatcher = Dispatcher(strategy: configuration.effectiveDispatch)
        self.maxMessage = maxMessage
        self.logger = logger
        self.supervisor = supervisor
        self.listener = listener
        self.wake = wake
        epoll = try Epoll(maxEvents: 512)
        scanTimer = try TimerFD.create()
        sendBuffer = MessageBuffer(capacity: limits.maxMessageBytes)
        batchCapacity = limits.maxMessageBytes
        batchNanoseconds = Int64(configuration.batchTime * 1e9)
        logsDebug = logger.logLevel <= .debug
        busyPollNanoseconds = Int64(configuration.busyPoll * 1e9)
        // Two full batches fit in a queue, so a worker finds the next one waiting.
        batchByteLimit = max(JobCodec.headerBytes, supervisor.grantedQueueBytes / 2)
        receiveBuffer = MessageBuffer(capacity: limits.maxMessageBytes)
        oneshotScratch = .allocate(byteCount: configuration.wireProtocol == .oneshot ? maxMessage + 1 : 0, alignment: 16)
        spareFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
        #if DEBUG
        // Debug builds only: start without the spare (`POOL_DEBUG_NO_SPARE_FD`), as after another
        // process took the descriptor it freed at ENFILE, so a test reaches that state under a
        // descriptor limit of its own.
        if getenv("POOL_DEBUG_NO_SPARE_FD") != nil {
            Glibc.close(spareFD)
            spareFD = -1
        }
        #endif
        idleTimeoutNanoseconds = Int64(configuration.idleTimeout * 1e9)
        controlTimeoutNanoseconds = min(idleTimeoutNanoseconds, Int64(configuration.controlTimeout * 1e9))
        idleScanInterval = max(10_000_000, min(1_000_000_000, controlTimeoutNanoseconds / 4))
        scalingPolicy = configuration.dynamicScaling.map { ScalingPolicy($0, floor: configuration.workers) }
        nextScaleCheck = monotonicNanoseconds() + Self.scaleCheckInterval
        try epoll.add(listener.socket.raw, events: .readable, token: Token.listener)
        try epoll.add(wake.fd, events: .readable, token: Token.signals)
        try epoll.add(scanTimer.fd, events: .readable, token: Token.scanTimer)
        if let control { try epoll.add(control.socket.raw, events: .readable, token: Token.control) }
        if let doorbell = supervisor.doorbell {
            // Edge-triggered: a ring only wakes the loop; the reply queue is drained every turn
            // anyway, so the eventfd never needs reading.
            try epoll.add(doorbell.fd, events: [.readable, .edgeTriggered], token: Token.doorbell)
        }
    }

    // MARK: - Loop

    /// Runs until shutdown completes. Returns the process exit status.
    func run() -> Int32 {
        let scoreboard = supervisor.scoreboard
        let collectsReplies = supervisor.replyQueue != nil
        // Busy polling follows traffic only (clients, worker replies): a wait ended by its timeout,
        // a timer or a signal is followed by a plain sleep, so an idle server does not poll. A
        // turn that does not sleep (timeout 0) keeps the traffic seen for the next wait that does.
        var trafficSeen = false
        // Signals are counted by the C handler, which also rings `wake`: they need looking at
        // (seven atomic exchanges) only in a turn that woke for them, and in the first.
        var signalsRang = true
        while phase != .finished {
            // Queues found full are tried again after the wait: workers drain them meanwhile
            // (often the very reason the loop wakes).
            dispatcher.forgetFull()
            turn &+= 1
            supervisor.beginTurn()
            armScanTimer()
            let timeout = nextTimeout()
            let busyPoll = trafficSeen ? busyPollNanoseconds : 0
            if timeout != 0 { trafficSeen = false }
            // The turn's clock is read when the wait ends, before its first event is handled
            // (reads and writes in the events stamp connections with it).
            var clockRead = false
            do {
                try epoll.wait(timeoutMilliseconds: timeout, busyPollNanoseconds: busyPoll) { token, events in
                    if !clockRead {
                        turnStart = monotonicNanoseconds()
                        clockRead = true
                    }
                    switch token {
                    case Token.listener:
                        trafficSeen = true
                        acceptClients(untilEmpty: configuration.wireProtocol != .oneshot)
                    case Token.control: acceptControl()
                    case Token.signals:
                        wake.drain()
                        signalsRang = true
                    case Token.doorbell: trafficSeen = true
                    case Token.scanTimer:
                        scanTimer.drain()
                        scanTimerDeadline = nil
                    default:
                        trafficSeen = true
                        connectionEvent(token, events)
                    }
                }
            } catch {
                logger.critical("epoll_wait failed; stopping", metadata: ["error": "\(error)"])
                return forcedStop(reason: "event loop failure")
            }
            if !clockRead { turnStart = monotonicNanoseconds() }
            if collectsReplies { scoreboard.setMasterAsleep(false) }
            if signalsRang {
                signalsRang = false
                if let forced = handleSignals() { return forced }
            }
            flushBatches()
            runTimers()
            if collectsReplies {
                // Workers ring the doorbell only while this is set; a reply sent before they could
                // see it is taken here. Both sides fence, so none is missed (`csysv_master_hint`).
                scoreboard.setMasterAsleep(true)
                drainReplies(stopWhenNoneAwaited: true)
            }
            // Writing responses frees in-flight room, which parses requests already buffered;
            // their batches go out before the wait, and ack mode answers them in turn.
            flushDirty()
            flushBatches()
            flushDirty()
            if !held.isEmpty {
                // Jobs wait for queue room. Workers ring the doorbell when they take a message
                // while this is set; room made before they could see it is found by this retry
                // (the same fenced pair as `setMasterAsleep`).
                if !wantsRoom {
                    scoreboard.setMasterWantsRoom(true)
                    wantsRoom = true
                    // The retry below is this flag's pair: it must run even if a pass this turn
                    // found the queues full (a worker that made room just before the flag rang
                    // no doorbell).
                    heldRetryBlocked = nil
                }
                dispatchHeld()
                flushBatches()
                flushDirty()
            } else if wantsRoom {
                scoreboard.setMasterWantsRoom(false)
                wantsRoom = false
            }
        }
        return finish()
    }

    /// Milliseconds until the nearest deadline of a state that passes (respawn, shutdown, held
    /// retry); -1 when there is none, as in steady state: the periodic deadlines are the scan
    /// timer's, so a wait arms no kernel timer.
    func nextTimeout() -> Int32 {
        let none = Int64.max
        var until = none
        // Only these deadlines need the clock, read now rather than at the turn's start: that
        // turn's work may have taken a while.
        if nextRespawn != nil || phase != .running || listenersPausedUntil != nil {
            let now = monotonicNanoseconds()
            if let respawn = nextRespawn { until = min(until, respawn - now) }
            if let paused = listenersPausedUntil { until = min(until, paused - now) }
            // Killing, the deadline is past: SIGCHLD wakes the loop for each reap, and only the
            // bound on waiting for them is left (a zero timeout would spin until the last reap).
            if phase != .running {
                let end = phase == .killing ? killedAt + Self.killGraceNanoseconds : deadline
                until = min(until, end - now, 50_000_000)
            }
        }
        // Held jobs are retried when a worker makes room (the doorbell) or a reply arrives; for
        // them the 5 ms timer is only a safety net.
        // Quitting: quits may wait for queue room and workers are being reaped; once they are all
        // gone, a stop held open by a slow reader needs no ticking.
        if !held.isEmpty || (phase == .quitting && supervisor.hasWorkersOrRespawns) {
            until = min(until, 5_000_000)
        }
        if supervisor.needsTick { until = min(until, Supervisor.tickInterval) }
        // Never sleep on staged jobs (a safety net: every path flushes them before the wait), nor
        // on a stop a failure asked for at the end of this turn.
        if anyStaged || stopRequested || repliesLeft { until = 0 }
        // Nor on unwritten answers: the turn's last flush can itself produce one (a refusal parsed
        // once the in-flight cap freed up), and epoll is not watching for writability then.
        if !dirty.isEmpty { until = 0 }
        if until == none { return -1 }
        return Int32(clamping: max(0, (until + 999_999) / 1_000_000))
    }

    /// Arms the scan timer for the earliest periodic deadline: the idle scan while a connection is
    /// open, the job-age check with `--job-timeout`. Re-armed only for an earlier deadline than the
    /// one set (a later one waits for the firing), so at most once per deadline, not per turn.
    func armScanTimer() {
        var deadline = connections.isEmpty ? Int64.max : nextIdleScan
        if configuration.scansJobs { deadline = min(deadline, nextJobScan) }
        if scalingPolicy != nil && phase == .running { deadline = min(deadline, nextScaleCheck) }
        deadline = min(deadline, nextWatchdog)
        if phase == .running { deadline = min(deadline, nextRecordCheck) }
        guard deadline != .max, scanTimerDeadline.map({ deadline < $0 }) ?? true else { return }
        do {
            try scanTimer.arm(at: deadline)
            scanTimerDeadline = deadline
        } catch {
            // Cannot happen with a valid descriptor and time; without the timer, idle connections
            // would be closed late, so say so rather than spin.
            logger.error("could not arm the scan timer", metadata: ["error": "\(error)"])
        }
    }

    func runTimers() {
        let now = turnStart
        if stopRequested {
            stopRequested = false
            if phase == .running { beginShutdown() }
        }
        if restartWorkers {
            restartWorkers = false
            supervisor.restartAll()
        }
        if configuration.scansJobs, now >= nextJobScan {
            nextJobScan = now + Self.jobScanInterval
            supervisor.reportSlowJobs(now: now)
        }
        // The calls below that can have nothing to do are skipped here rather than left to their
        // own guards: this runs once or twice per request, and each call costs more than its test.
        if scalingPolicy != nil { adjustPoolSize(now: now) }
        if now >= nextIdleScan {
            nextIdleScan = now + idleScanInterval
            closeIdleConnections(now: now)
        }
        if phase == .running, now >= nextRecordCheck {
            nextRecordCheck = now + Supervisor.recordCheckInterval
            supervisor.checkStateRecord()
        }
        if now >= nextWatchdog, let interval = notifier.watchdogNanoseconds {
            nextWatchdog = now + interval / 2
            notifier.notify("WATCHDOG=1")
        }
        if configuration.jobTimeout != nil { supervisor.enforceJobTimeout(now: now) }
        if configuration.replyMode == .ack { supervisor.pruneFinished() }
        if listenersPausedUntil != nil { resumeListenersIfDue(now: now) }
        if phase != .killing, nextRespawn.map({ $0 <= now }) ?? false {
            nextRespawn = supervisor.respawnDue(now: now)
        }
        // After the respawns: a slot's pending quit waits for its replacement worker, and goes to
        // it in the turn it starts.
        if phase == .running && supervisor.needsTick { supervisor.tick(buffer: sendBuffer) }
        if !held.isEmpty { dispatchHeld() }
        if phase != .running { advanceShutdown(now: now) }
    }

    // MARK: - Signals and children

    /// Returns an exit status if a second stop signal forced an immediate exit.
    func handleSignals() -> Int32? {
        if Signals.take(SIGCHLD) > 0 { reapChildren() }
        if Signals.take(SIGUSR1) > 0 { reopenLog() }
        if phase == .running {
            if Signals.take(SIGHUP) > 0 { supervisor.startRollingRestart() }
            let more = Signals.take(SIGTTIN), fewer = Signals.take(SIGTTOU)
            if more != fewer { scale(to: supervisor.activeCount + more - fewer) }
        }
        let stops = Signals.take(SIGINT) + Signals.take(SIGTERM)
        guard stops > 0 else { return nil }
        stopSignals += stops
        // The second stop *signal* forces: a stop begun otherwise (`pool-server stop`, a failure)
        // still drains when the first comes, as from `systemctl stop` after `pool-server stop`.
        guard stopSignals >= 2 else {
            if phase == .running { beginShutdown() }
            return nil
        }
        return forcedStop(reason: "second stop signal")
    }

    /// Result mode, a removed shared queue: every worker that read it has been reaped, so a
    /// request in flight that is not held, staged, or queued since (`queuedSince`) was in it.
    func failRequestsLostWithTheSharedQueue(except queuedSince: Set<UInt64>) {
        var alive = queuedSince
        for job in held.elements { alive.insert(job.id) }
        for batch in batches { for entry in batch.entries { alive.insert(entry.id) } }
        let lost = routes.entries.filter { !alive.contains($0.id) }
        if !lost.isEmpty { logger.error("requests lost with the removed shared queue", metadata: ["jobs": "\(lost.map(\.id).sorted())"]) }
        for (id, route) in lost {
            routes.removeValue(forKey: id)
            deliver(route, status: .workerDied, body: Array("the job queue was removed".utf8))
        }
    }

    func reapChildren() {
        while let (pid, status) = ChildProcess.reapAny() {
            roomSignals &+= 1
            // A worker forked later may get this pid again (after pid numbers wrap); it must get
            // a quit of its own.
            quitSent.remove(pid)
            // Replies a worker sent before it exited are in the reply queue: take them first so
            // they are delivered, not reported lost. Per child, since each may have exited after
            // the previous drain.
            drainReplies(retryHeld: false)
            if let slot = supervisor.slotIndex(of: pid) { deliverUnsentReplies(slot: slot) }
            guard let loss = supervisor.workerExited(pid: pid, status: status, shuttingDown: phase != .running,
                                                     awaitsReply: { self.routes[$0] != nil }) else {
                continue
            }
            // Never started: run elsewhere, ahead of what is held after them, in the order their
            // requests came (its inbox's, and with a crash back-off its queue's too).
            var rerun: [Held] = []
            for job in loss.unstarted {
                if phase == .killing {
                    if let route = routes.removeValue(forKey: job.id) {
                        deliver(route, status: .shuttingDown, body: [])
                    } else if configuration.replyMode == .ack {
                        logger.error("acknowledged message not run: the shutdown deadline passed", metadata: ["job": "\(job.id)"])
                    }
                } else if configuration.replyMode == .ack || routes[job.id] != nil {
                    rerun.append(Held(id: job.id, payload: job.payload, acknowledged: configuration.replyMode == .ack))
                }
            }
            returnToHeld(rerun)
            for job in loss.lost {
                if let route = routes.removeValue(forKey: job.id) {
                    deliver(route, status: job.status, body: Array("worker \(pid) ended (\(status))".utf8))
                } else if configuration.replyMode == .ack {
                    logger.error("acknowledged message lost with its worker", metadata: ["job": "\(job.id)", "status": "\(job.status)"])
                }
            }
            if let queuedSince = loss.sharedQueueLost { failRequestsLostWithTheSharedQueue(except: queuedSince) }
        }
        if phase == .killing {
            // Past the shutdown deadline nothing is restarted, whatever is left in the queues.
            supervisor.cancelRespawns()
            nextRespawn = nil
        } else {
            nextRespawn = supervisor.respawnDue(now: monotonicNanoseconds())
        }
    }

    // MARK: - Accepting

    /// Takes clients from the listen backlog. With `untilEmpty` false it returns after admitting one
    /// oneshot client: at one client at a time the backlog is empty after each accept, so the
    /// accept that would find it empty is a wasted syscall on every request (measured: 10–20 %
    /// of oneshot one-connection throughput). The listener is level-triggered, so a backlog that
    /// is not empty is reported again by the next `epoll_wait`, whose turn also serves what else
    /// is ready. Framed clients stay connected, so their accepts are rare and taken in a batch.
    /// Either way at most `limit` connections are taken (refused ones too): clients that connect
    /// as fast as they are taken — or refused, at the connection limit — must not keep the loop
    /// from the replies, the other connections and the timers. (The stop takes the whole
    /// backlog before it closes the listener.)
    func acceptClients(untilEmpty: Bool, limit: Int = Master.acceptsPerTurn) {
        guard let listener else { return }
        for _ in 0..<limit {
            let client: SocketFD?
            do {
                client = try listener.socket.accept()
            } catch let error as SystemError where error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesInSystem {
                shedOneConnection(listener)
                return
            } catch let error as SystemError where error.errno == .connectionAbort || error.errno == .protocolError {
                continue
            } catch {
                // An error accept gives again at once (a security module refusing it, ENOMEM,
                // ENOBUFS) leaves the connection in the backlog, which keeps the listener
                // readable: without a pause the loop would spin on it, a log line a turn.
                pauseListeners("accept failed; not accepting for 100 ms", metadata: ["error": "\(error)"])
                return
            }
            guard let client else { return }
            accepted += 1
            if let allowed = configuration.allowedUIDs {
                let uid = (try? client.peerCredentials().uid) ?? uid_t.max
                if !allowed.contains(uid) {
                    logger.log(throttledBy: &logThrottle, level: .warning, "connection refused: peer uid not in --allow-uid", metadata: ["uid": "\(uid)"])
                    client.close()
                    continue
                }
            }
            // The operator's connections do not count: `status` must work on a full server.
            if connections.count - controlConnectionCount >= configuration.maxConnections {
                logger.log(throttledBy: &logThrottle, level: .warning, "connection limit reached; answering busy",
                           metadata: ["max-connections": "\(configuration.maxConnections)"])
                rejectBusy(client)
                continue
            }
            let now = monotonicNanoseconds()
            guard let key = connections.makeKey(fd: client.raw) else {
                // Not reached while --max-connections is within its limit (descriptors are
                // handed out lowest first); refused like a connection past that limit.
                logger.log(throttledBy: &logThrottle, level: .warning, "descriptor too large for a connection key; answering busy",
                           metadata: ["fd": "\(client.raw)"])
                rejectBusy(client)
                continue
            }
            if configuration.wireProtocol == .oneshot {
                // Sized for a whole message, so one read takes it (a 4 KiB message must not need
                // a second read to see the socket run dry).
                let connection = Connection(key: key, fd: client, now: now, inputCapacity: min(maxMessage + 1, 65_536))
                connections.insert(connection)
                // The client writes right after connect(), usually before this accept: reading
                // now saves an epoll_ctl and a whole loop turn per request. `settle` registers
                // the connection with epoll only if it has to wait (no data yet, a reply to come).
                readOneshot(connection)
                if untilEmpty { continue }
                return
            }
            // Registered before it is kept: one epoll cannot watch (past fs.epoll.max_user_watches,
            // which can be far below --max-connections; ENOMEM) is refused busy like one past
            // --max-connections, not closed without a word.
            do {
                #if DEBUG
                if DebugFailpoint.watches.nextCallFails() { throw SystemError("epoll_ctl(ADD)", .noSpace) }
                #endif
                try epoll.add(client.raw, events: .readable, token: key)
            } catch {
                logger.log(throttledBy: &logThrottle, level: .warning, "cannot watch a new connection; answering busy",
                           metadata: ["error": "\(error)"])
                rejectBusy(client)
                continue
            }
            let connection = Connection(key: key, fd: client, now: now, inputCapacity: 4096,
                                        ordered: configuration.wireProtocol != .tagged)
            connection.registered = true
            connection.interest = .readable
            connections.insert(connection)
        }
    }

    /// See `acceptClients`: about one loop turn's worth of new clients, whose first reads come
    /// in that same turn (oneshot) or the next.
    static let acceptsPerTurn = 64

    /// Out of descriptors: free the spare, take the waiting connection and close it so the client
    /// is not left hanging in the backlog and the listener does not spin.
    /// `control`: the operator's socket, whose clients read text, not the client protocol.
    func shedOneConnection(_ listener: Listener, control: Bool = false) {
        // Caused by clients like the other refusals, so throttled like them: a connect flood at
        // the limit must not become a log line per connection.
        logger.log(throttledBy: &logThrottle, level: .warning, "out of file descriptors; closing a new connection (raise ulimit -n)")
        if spareFD >= 0 { Glibc.close(spareFD) }
        let shed = try? listener.socket.accept()
        if let client = shed {
            if control {
                let refusal = Array("error: out of file descriptors (raise ulimit -n)\n".utf8)
                _ = refusal.withUnsafeBytes { try? client.write($0) }
                client.close()
            } else {
                rejectBusy(client)
            }
        }
        spareFD = open("/dev/null", O_RDONLY | O_CLOEXEC)
        if shed == nil && spareFD < 0 { pauseListeners() }
    }

    /// Stops waiting for new connections for `listenerPauseNanoseconds` (`listenersPausedUntil`).
    func pauseListeners(_ reason: String = "out of file descriptors with none to spare; not accepting for 100 ms",
                        metadata: Logger.Metadata = [:]) {
        guard listenersPausedUntil == nil else { return }
        logger.log(throttledBy: &logThrottle, level: .warning, reason, metadata: metadata)
        listenersPausedUntil = monotonicNanoseconds() + Self.listenerPauseNanoseconds
        _ = setListenerInterest([])
    }

    /// Waits for new connections again once the pause is over, taking a spare descriptor again
    /// first if one is free now (without it, the next shortage could only pause again, never
    /// answer busy). A listener that cannot be watched again stays paused and is retried.
    func resumeListenersIfDue(now: Int64) {
        guard let until = listenersPausedUntil, now >= until else { return }
        if spareFD < 0 { spareFD = open("/dev/null", O_RDONLY | O_CLOEXEC) }
        if let error = setListenerInterest(.readable) {
            logger.log(throttledBy: &logThrottle, level: .error, "cannot watch the listening sockets again; retrying in 100 ms",
                       metadata: ["error": "\(error)"])
            listenersPausedUntil = now + Self.listenerPauseNanoseconds
            return
        }
        listenersPausedUntil = nil
    }

    /// Sets what epoll watches the listening and control sockets for; the first failure, if any.
    private func setListenerInterest(_ events: Epoll.Events) -> Error? {
        var failure: Error? = nil
        for (open, token) in [(listener, Token.listener), (control, Token.control)] {
            guard let open else { continue }
            do { try epoll.modify(open.socket.raw, events: events, token: token) } catch { failure = failure ?? error }
        }
        return failure
    }

    /// Best-effort busy answer to a connection we will not serve, then close.
    func rejectBusy(_ client: SocketFD) {
        responseScratch.removeAll(keepingCapacity: true)
        encodeResponse(status: .busy, body: [], into: &responseScratch)
        responseScratch.withUnsafeBytes { _ = try? client.write($0) }
        statusCounts[Int(ResponseStatus.busy.rawValue)] += 1
        client.close()
    }

    // MARK: - Connections

    func connectionEvent(_ key: UInt64, _ events: Epoll.Events) {
        guard let connection = connections[key] else { return }
        if connection.isControl {
            controlEvent(connection, events)
            return
        }
        if events.contains(.hangup) || events.contains(.error) {
            connection.hungUp = true
            // The peer closed both ways (a half-close is not a hang-up): no answer can reach it.
            // Result mode closes now, so that requests it left unread are not read, and those held
            // for queue room are not run: under overload, clients that time out and go would
            // otherwise keep the workers busy with answers nobody can take. What its workers have
            // taken still runs; the replies find no connection and are dropped. Ack mode keeps
            // reading: a producer may write its messages and go without waiting for its `ok`s.
            if configuration.replyMode == .result && !connection.lingering {
                close(connection, reason: "client hung up")
                return
            }
            // Ack mode: its jobs held for room are dropped (`dispatchHeld`, `backlogHasRoom`).
            if connection.inflight > 0 { heldMayHaveOrphans = true }
            if readsAfterHangUp(connection) { discardOutput(connection) }
        }
        if events.contains(.writable) || events.contains(.error) {
            flush(connection)
            guard connections[key] != nil else { return }
        }
        if connection.lingering {
            settle(connection)
            return
        }
        if events.contains(.readable) || events.contains(.hangup) {
            switch configuration.wireProtocol {
            case .oneshot: readOneshot(connection)
            case .framed, .tagged: readFramed(connection)
            }
        }
    }

    /// Reads of one connection per readiness event. Ack mode frees in-flight room as its batches
    /// go out, within the read loop, so a producer keeping its socket full would otherwise hold
    /// the loop (and every other client) until the queues fill. Epoll is level-triggered: what is
    /// left is reported again by the next wait.
    static let readsPerEvent = 16

    func readFramed(_ connection: Connection) {
        let limit = framedInputLimit
        var reads = 0
        while !connection.closeWhenDone && !connection.peerClosed && connection.inflight < configuration.maxInflight
                && connection.output.readableCount < Self.outputHighWater && reads < Self.readsPerEvent {
            reads += 1
            let chunk = readChunk(connection, minimum: 4096, limit: limit)
            if case .failed = chunk { return }
            guard case .data(let drained) = chunk else { break }
            parseFrames(connection)
            // Closed meanwhile (a hung-up client's held jobs dropped to make room, an epoll_ctl
            // failure): its descriptor number is no longer its to read.
            guard connections[connection.key] != nil else { return }
            if drained { break }
        }
        parseFrames(connection)
        guard connections[connection.key] != nil else { return }
        settle(connection)
    }

    func parseFrames(_ connection: Connection) {
        let tagged = !connection.ordered
        while !connection.closeWhenDone && connection.inflight < configuration.maxInflight
                && connection.output.readableCount < Self.outputHighWater {
            let bytes = connection.input.readable
            let decoded = FrameCodec.decodeRequest(bytes, maxPayload: maxMessage, tagged: tagged)
            // Complete for every answer but .incomplete (the decoder waits for the whole header).
            let tag = tagged && bytes.count >= FrameCodec.requestHeaderBytes(tagged: true) ? FrameCodec.requestTag(bytes) : 0
            switch decoded {
            case .request(let start, let length):
                let payload = UnsafeRawBufferPointer(rebasing: bytes[start..<(start + length)])
                accept(request: payload, tag: tag, on: connection)
                connection.input.consume(start + length)
                // Closed meanwhile (an epoll_ctl failure): nobody is left to answer.
                if connections[connection.key] == nil { return }
            case .incomplete:
                return
            case .tooLarge(let length):
                logger.log(throttledBy: &logThrottle, level: .info, "request over --max-message; closing the connection",
                           metadata: ["length": "\(length)", "max": "\(maxMessage)"])
                refuse(connection, status: .tooLarge, body: "request of \(length) bytes exceeds --max-message \(maxMessage)", tag: tag)
                return
            case .garbage(let length):
                logger.log(throttledBy: &logThrottle, level: .info, "implausible frame length; closing the connection", metadata: ["length": "\(length)"])
                refuse(connection, status: .badRequest, body: "implausible frame length \(length)", tag: tag)
                return
            }
        }
    }

    func readOneshot(_ connection: Connection) {
        guard !connection.messageTaken else {
            // Anything after the one message is ignored; only end of stream matters.
            drainAndIgnore(connection)
            settle(connection)
            return
        }
        if connection.input.isEmpty && !connection.peerClosed && readWholeMessage(connection) { return }
        var wouldBlock = false
        reading: while true {
            switch readChunk(connection, minimum: 4096, limit: maxMessage + 1) {
            case .failed: return
            case .data(let drained):
                if drained { wouldBlock = true; break reading }
            case .wouldBlock:
                wouldBlock = true
                break reading
            case .noSpace, .endOfStream:
                break reading
            }
        }
        let count = connection.input.readableCount
        if count > maxMessage {
            connection.messageTaken = true
            logger.log(throttledBy: &logThrottle, level: .info, "oneshot message over --max-message; not delivered", metadata: ["max": "\(maxMessage)"])
            refuse(connection, status: .tooLarge, body: "")
        } else if count > 0 && (wouldBlock || connection.peerClosed) {
            // The message is what the client has sent when the socket runs dry: the seed's client
            // writes once and waits for the answer without half-closing, so EOF never comes.
            connection.messageTaken = true
            accept(request: connection.input.readable, on: connection)
            connection.input.consume(count)
            connection.closeWhenDone = true
        }
        settle(connection)
    }

    /// Oneshot, nothing buffered yet: one read into `oneshotScratch`. A short read is the whole
    /// message (the socket ran dry), taken from there. Returns false when `readOneshot` must go
    /// on: the read filled the scratch (kept in the connection's input) or saw end of stream.
    func readWholeMessage(_ connection: Connection) -> Bool {
        let n: Int?
        do { n = try connection.fd.read(into: oneshotScratch) } catch {
            close(connection, reason: "read: \(error)")
            return true
        }
        guard let n else {
            settle(connection)   // nothing yet: wait for it
            return true
        }
        if n == 0 {
            connection.peerClosed = true
            return false
        }
        connection.lastActivity = turnStart
        guard n < oneshotScratch.count else {
            connection.input.append(UnsafeRawBufferPointer(oneshotScratch))
            return false
        }
        connection.messageTaken = true
        accept(request: UnsafeRawBufferPointer(rebasing: oneshotScratch[0..<n]), on: connection)
        connection.closeWhenDone = true
        settle(connection)
        return true
    }

    /// What one read into a connection's input buffer did.
    enum ReadChunk {
        /// Bytes arrived; `drained` if the read was short, i.e. the socket is now empty (a further
        /// read would only say EAGAIN).
        case data(drained: Bool)
        /// The input buffer is at its limit.
        case noSpace
        case wouldBlock
        /// The peer closed its side (recorded on the connection).
        case endOfStream
        /// The read failed and the connection was closed.
        case failed
    }

    /// Reads once into the connection's input buffer (growing it to at least `minimum` free bytes,
    /// never beyond `limit` in total), recording activity and end of stream.
    func readChunk(_ connection: Connection, minimum: Int, limit: Int) -> ReadChunk {
        let space = connection.input.writableSpace(minimum: minimum, limit: limit)
        if space.count == 0 { return .noSpace }
        let n: Int?
        do { n = try connection.fd.read(into: space) } catch {
            close(connection, reason: "read: \(error)")
            return .failed
        }
        guard let n else { return .wouldBlock }
        if n == 0 {
            connection.peerClosed = true
            return .endOfStream
        }
        connection.input.didWrite(n)
        connection.lastActivity = turnStart
        return .data(drained: n < space.count)
    }

    /// Reads and throws away what a client sends after its oneshot message or after a refusal,
    /// watching for end of stream. Reading lets a client finish the write it was in and read its
    /// answer instead of a reset; the bounds keep a client streaming junk from costing more than
    /// that: a few 64 KiB reads per loop turn (level-triggered epoll brings the rest next turn, so
    /// others are served in between), and `discardLimit` bytes in all before the connection is
    /// closed.
    func drainAndIgnore(_ connection: Connection) {
        for _ in 0..<4 {
            let n: Int?? = try? connection.fd.read(into: discardScratch)
            // Would block, or failed: the next event (or the close) deals with it.
            guard let n, let count = n else { return }
            if count == 0 { connection.peerClosed = true; return }
            connection.discardedBytes += count
            // Bytes moved, as the idle timeout counts them: a client still finishing its write
            // is not idle (the discard limit bounds what it may send).
            connection.lastActivity = turnStart
            if connection.discardedBytes > Self.discardLimit {
                // Client-caused, so throttled like the other refusals (many clients at once).
                logger.log(throttledBy: &logThrottle, level: .info, "closing a connection that kept sending after its message or refusal",
                           metadata: ["discarded-bytes": "\(connection.discardedBytes)"])
                close(connection, reason: "sent too much to discard")
                return
            }
        }
    }

    /// Answers `status` (in order, or at once under `tag` on a tagged connection) and closes the
    /// connection once everything owed is written.
    func refuse(_ connection: Connection, status: ResponseStatus, body: String, tag: UInt32 = 0) {
        connection.closeWhenDone = true
        connection.lingerOnClose = true
        if connection.ordered {
            let sequence = connection.push(id: 0)
            _ = connection.resolve(sequence, status: status, body: Array(body.utf8))
            emitReady(connection)
        } else {
            Array(body.utf8).withUnsafeBytes { writeTagged(connection, tag: tag, status, body: $0) }
        }
    }

    // MARK: - Requests

    /// Takes one complete request from a connection and sends it on its way.
    func accept(request payload: UnsafeRawBufferPointer, tag: UInt32 = 0, on connection: Connection) {
        let id = nextRequestID
        nextRequestID += 1
        let sequence: UInt64
        if connection.ordered {
            sequence = connection.push(id: id)
        } else {
            connection.unorderedInflight += 1
            sequence = UInt64(tag)
        }
        // A stop a failure asked for is already one: its replies could not be read.
        if phase != .running || stopRequested {
            answer(connection, sequence, .shuttingDown, [])
            return
        }
        switch configuration.replyMode {
        case .ack:
            // Answered when its batch is queued (`flush`): in this loop turn, or, while every
            // queue is full, once a queue has room (the client waits: backpressure).
            let ack = JobBatch.Ack(connection: connection.key, sequence: sequence)
            if held.isEmpty, stage(id: id, payload: payload, ack: ack) { return }
            if connection.hungUp {
                // A producer gone: what it wrote is queued while there is room; from the first
                // message that would wait for room (or be answered busy, which nobody reads), it
                // and everything behind it are dropped, none of them acknowledged.
                close(connection, reason: "client left; its messages would wait for queue room")
                return
            }
            let room = backlogHasRoom()
            // The pass making room may close this very connection (hung up with jobs held).
            guard connections[connection.key] != nil else { return }
            if room {
                held.append(Held(id: id, payload: Array(payload), ack: ack))
                watchWhileHeld(ack)
            } else {
                answerBusy(connection.key, sequence, id: id)
            }
        case .result:
            let route = Route(connection: connection.key, sequence: sequence)
            if held.isEmpty, stage(id: id, payload: payload, ack: nil) {
                routes[id] = route
            } else if backlogHasRoom() {
                routes[id] = route
                held.append(Held(id: id, payload: Array(payload)))
            } else {
                answerBusy(connection.key, sequence, id: id)
            }
        }
    }

    /// Adds a job to the batch of the slot the dispatcher chooses, sending that batch first if
    /// the job does not fit. Returns false if no slot takes work, or if that send found every
    /// queue full: the batch's jobs are held then, and this one must wait behind them.
    func stage(id: UInt64, payload: UnsafeRawBufferPointer, ack: JobBatch.Ack?) -> Bool {
        guard let slot = dispatcher.choose(supervisor: supervisor, staged: batches) else { return false }
        let batch = batch(for: slot)
        let spills = supervisor.arena?.takes(payload.count) == true
        let chunk = spills ? supervisor.arena?.store(payload) : nil
        let recordBytes = chunk == nil ? JobCodec.headerBytes + payload.count : JobCodec.spilledRecordBytes
        // A message's size is settled when it would take a second job, at the workers' job times
        // then.
        if batch.entries.count == 1 { updateRecordLimit() }
        if !batch.fits(recordBytes: recordBytes, recordLimit: recordLimit) {
            guard flush(slot) else {
                if let chunk { supervisor.arena?.drop(chunk) }
                return false
            }
        }
        if let chunk {
            batch.append(id: id, spilled: chunk, length: payload.count, ack: ack)
        } else {
            batch.append(id: id, payload: payload, ack: ack, spillMissed: spills)
        }
        anyStaged = true
        return true
    }

    /// The slot's batch, created when the slot is first used (slots are added by scaling up).
    func batch(for slot: Int) -> JobBatch {
        while batches.count <= slot { batches.append(JobBatch(capacity: batchCapacity, byteLimit: batchByteLimit)) }
        return batches[slot]
    }

    /// Sends every staged batch (`stage` sizes them: `updateRecordLimit`).
    func flushBatches() {
        guard anyStaged else { return }
        anyStaged = false
        // Batches no queue takes go back to `held` in one merge at the end: each holds every N-th
        // job of a retry, and merging batch after batch re-sorted the growing front each time.
        collectingReturns = true
        for slot in batches.indices where !batches[slot].isEmpty {
            flush(slot)
        }
        collectingReturns = false
        if !returning.isEmpty {
            returnToHeld(returning)
            returning.removeAll(keepingCapacity: true)
        }
    }

    /// How many jobs a message takes: one until every worker has a job time on record (a slow
    /// first job must not hold others behind it), then `--batch-time` worth at the workers'
    /// average job time. Worked out when a message would take its second job (it was worked out
    /// on each of the four flushes of a framed request's two turns, batching or not). A message
    /// already past its second job keeps the size it had then, also if a worker is replaced
    /// before it is sent, as before.
    func updateRecordLimit() {
        guard batchNanoseconds > 0 else { return }
        var total: Int64 = 0
        var counted: Int64 = 0
        for index in supervisor.slots.indices where supervisor.slots[index].accepting {
            let average = supervisor.scoreboard.averageJobNanoseconds(index)
            guard average > 0 else { recordLimit = 1; return }
            total += average
            counted += 1
        }
        recordLimit = counted > 0 ? max(1, Int(batchNanoseconds / (total / counted))) : 1
    }

    /// Sends one slot's batch (to another queue if that one is full). Ack mode answers each job
    /// now; jobs no queue takes are held (result mode, and ack jobs already answered) or refused.
    /// Returns whether the batch was queued.
    @discardableResult
    func flush(_ slot: Int) -> Bool {
        let batch = batches[slot]
        guard !batch.isEmpty else { return true }
        defer { batch.reset() }
        let length = batch.seal()
        switch dispatcher.send(batch.buffer, length: length, preferred: slot, supervisor: supervisor) {
        case .full(let failures):
            holdUnsent(batch, failures: failures)
            return false
        case .queued(let target):
            messagesQueued &+= 1
            // Only a stop leaves a slot workerless with nothing due (`ensureWorker`); the check
            // is one load on this path.
            if supervisor.slots[target].pid == nil, phase != .killing, supervisor.ensureWorker(target, now: turnStart) {
                nextRespawn = min(nextRespawn ?? .max, turnStart)
            }
            supervisor.noteMessageQueued(batch.entries.lazy.map(\.id))
            for entry in batch.entries {
                if logsDebug { logQueued(entry, slot: target) }
                supervisor.noteQueued(entry.id, bytes: entry.bytes, slot: target)
                if let chunk = entry.spill {
                    supervisor.arena?.noteSent(chunk, queue: supervisor.slots[target].queue.id)
                } else if entry.spillMissed {
                    supervisor.arena?.noteSentInlineWhenFull()
                }
                if let ack = entry.ack, let connection = connections[ack.connection] {
                    answer(connection, ack.sequence, .ok, [])
                }
            }
            return true
        }
    }

    /// Out of line for the reason given on `replyQueueFailed`.
    @inline(never)
    func logQueued(_ entry: JobBatch.Entry, slot: Int) {
        logger.debug("queued", metadata: ["job": "\(entry.id)", "slot": "\(slot)", "bytes": "\(entry.payloadBytes)",
                                          "message": "\(messagesQueued)"])
    }

    /// No queue took `batch` (before its reset). Out of line for the reason given on
    /// `replyQueueFailed`.
    @inline(never)
    func holdUnsent(_ batch: JobBatch, failures: [(slot: Int, error: SystemError)]) {
        // Besides full queues, sends the kernel refused: the jobs are held or refused below as
        // for a full queue, but an operator must learn why no worker gets work.
        for (failed, error) in failures {
            // Throttled per errno: a second cause must not pass unseen behind the first.
            logger.log(throttledBy: &logThrottle, level: .error, "cannot queue jobs for a worker", kind: "\(error.errno.rawValue)",
                       metadata: ["slot": "\(failed)", "error": "\(error)"])
        }
        // No queue took the message. With --max-backlog 0 its clients are answered busy at once.
        // Otherwise its jobs go back to the front of `held`, in order: they are older than anything
        // held since (staged while nothing was held, or taken from `held`) and were admitted under
        // the backlog already, so none is refused now (`held` may exceed --max-backlog by at most
        // the jobs of one message per worker).
        var keep: [(entry: JobBatch.Entry, payload: [UInt8])] = []
        for entry in batch.entries {
            // A spilled payload comes back out of the arena: a held job owns its bytes.
            let payload = heldPayload(of: entry, in: batch)
            if configuration.maxBacklog == 0, let ack = entry.ack {
                answerBusy(ack.connection, ack.sequence, id: entry.id)
            } else if configuration.maxBacklog == 0, configuration.replyMode == .result, let route = routes.removeValue(forKey: entry.id) {
                logger.log(throttledBy: &logThrottle, level: .warning, "every worker queue is full and --max-backlog is 0; answering busy",
                           metadata: ["job": "\(entry.id)"])
                deliver(route, status: .busy, body: [])
            } else {
                keep.append((entry, payload))
            }
        }
        // Merged with the jobs of batches that failed before this one in the same pass: each
        // batch holds every N-th job of a retry, and prepending batch after batch would put a
        // later slot's jobs ahead of older ones (`flushBatches` merges them all at once).
        let jobs = keep.map { Held(id: $0.entry.id, payload: $0.payload,
                                   acknowledged: $0.entry.ack == nil && configuration.replyMode == .ack, ack: $0.entry.ack) }
        if collectingReturns { returning += jobs } else { returnToHeld(jobs) }
        for (entry, _) in keep { if let ack = entry.ack { watchWhileHeld(ack) } }
    }

    /// Puts jobs taken back from batches or queues (older than anything held after them) at the
    /// front of `held`, merged by id — the order their requests came in — with what is there.
    func returnToHeld(_ jobs: [Held]) {
        guard let newest = jobs.map(\.id).max() else { return }
        var front = jobs
        while let first = held.first, first.id < newest, let taken = held.removeFirst() { front.append(taken) }
        front.sort { $0.id < $1.id }
        held.prepend(contentsOf: front)
    }

    /// The payload of a staged job that no queue took, as bytes of its own; a spilled one's chunk
    /// is given back.
    func heldPayload(of entry: JobBatch.Entry, in batch: JobBatch) -> [UInt8] {
        guard let chunk = entry.spill, let arena = supervisor.arena else { return batch.payload(of: entry) }
        defer { arena.drop(chunk) }
        return arena.payload(JobCodec.Spill(chunk: chunk, length: entry.payloadBytes)).map { Array($0) } ?? []
    }

    /// Ack mode: a client waits for its `ok` while its job is held. A oneshot connection answered
    /// within its first turn is never registered with epoll; this one must be, so that a hang-up is
    /// noticed and the job dropped instead of run. Registered with no events: epoll reports
    /// EPOLLHUP and EPOLLERR regardless, and asking for readability could make an end of stream
    /// (or a framed client at --max-inflight) wake the loop on every turn.
    func watchWhileHeld(_ ack: JobBatch.Ack) {
        if let connection = connections[ack.connection], !connection.registered, !connection.hungUp {
            watch(connection, [])
        }
    }

    /// No queue took the job and --max-backlog jobs already wait.
    func answerBusy(_ key: UInt64, _ sequence: UInt64, id: UInt64) {
        logger.log(throttledBy: &logThrottle, level: .warning, "every worker queue is full and --max-backlog is reached; answering busy",
                   metadata: ["job": "\(id)"])
        guard let connection = connections[key] else { return }
        answer(connection, sequence, .busy, [])
    }

    /// Whether `held` takes one more job under --max-backlog, once the jobs of clients gone are
    /// out of it. `dispatchHeld` drops those when they reach the front, but behind live ones they
    /// would fill the backlog meanwhile, and new clients would be answered busy. Dropped here in
    /// one pass over `held`, only when it is full, a connection that had requests in flight has
    /// closed since the last pass, and not yet this loop turn.
    func backlogHasRoom() -> Bool {
        if held.count < configuration.maxBacklog { return true }
        guard heldMayHaveOrphans, heldCompactedTurn != turn else { return false }
        heldCompactedTurn = turn
        heldMayHaveOrphans = false
        held.removeAll(where: dropIfOrphaned)
        return held.count < configuration.maxBacklog
    }

    /// Whether nobody waits for a held job any more, so that it is not to be run; if so, what it
    /// leaves behind is dropped too. Ack mode: its client left before its `ok` (nothing was
    /// promised), and a hung-up connection is closed, since no answer will ever come to close it
    /// by. Result mode: its request's connection is gone, and its route goes. An acknowledged
    /// job always runs.
    func dropIfOrphaned(_ job: Held) -> Bool {
        if let ack = job.ack {
            guard let connection = connections[ack.connection] else { return true }
            guard connection.hungUp else { return false }
            close(connection, reason: "client left while its message was held")
            return true
        }
        if job.acknowledged { return false }
        guard let route = routes[job.id], connections[route.connection] != nil else {
            routes.removeValue(forKey: job.id)
            return true
        }
        return false
    }

    /// Moves held jobs, oldest first, into batches until a queue is full again.
    func dispatchHeld() {
        #if DEBUG
        if heldWaitsForReap && Signals.peek(SIGCHLD) > 0 { return }
        #endif
        // Called when room may have come (a reply, the doorbell, a reap, the timer) — but a pass
        // that found every queue full is not repeated within the turn unless a reply or a reap
        // came since: each costs a staging and un-staging of up to a message's worth of jobs
        // per worker, two or three times a turn under overload.
        if let blocked = heldRetryBlocked, blocked.turn == turn, blocked.roomSignals == roomSignals { return }
        // What an earlier pass staged goes out (or back to `held`) first: staged again behind
        // younger jobs of the same connection, it would run after them.
        flushBatches()
        dispatcher.forgetFull()
        while let job = held.first {
            // Its client left: do not spend a worker on it.
            if dropIfOrphaned(job) {
                held.removeFirst()
                continue
            }
            // A full queue sends the batch back to `held`; stop until replies make room.
            let staged = job.payload.withUnsafeBytes { stage(id: job.id, payload: $0, ack: job.ack) }
            guard staged else {
                heldRetryBlocked = (turn, roomSignals)
                return
            }
            held.removeFirst()
        }
    }

    /// Drains the reply queue (result mode). Called every loop turn and before reaping.
    ///
    /// `stopWhenNoneAwaited`: once no request awaits a reply, stop without the `msgrcv` that would
    /// find the queue empty. At one request in flight that call sat between the reply and the
    /// response (the response is written after the drain). Only the loop turn stops early: what it
    /// leaves has no route (a reply nobody waits for) and is taken by the next drain; the drain
    /// before reaping goes to the end, so no reply of a dead worker survives its slot's reset.
    ///
    /// `retryHeld`: replies make room, so held jobs are tried again — but not from `reapChildren`,
    /// whose worker still counts as alive until `workerExited`: jobs staged for its slot would wait
    /// out a crash back-off in its queue. `runTimers` retries them after the reaps.
    ///
    /// At most one full queue's worth of messages per call (a queue never holds more messages than
    /// its byte capacity): the queue is writable by the workers' user, and messages sent as fast as
    /// the master takes them must not keep it from its clients, signals and timers. What is left
    /// is taken in the next turn, which does not sleep (`repliesLeft`).
    func drainReplies(stopWhenNoneAwaited: Bool = false, retryHeld: Bool = true) {
        guard !repliesFailed, let replyQueue = supervisor.replyQueue else { return }
        repliesLeft = false
        var budget = supervisor.grantedQueueBytes
        while true {
            if budget == 0 {
                repliesLeft = true
                break
            }
            budget -= 1
            let received: (type: Int, length: Int)?
            do {
                received = try replyQueue.receive(into: receiveBuffer, nowait: true)
            } catch {
                if replyQueueFailed(replyQueue, error) { continue }
                return
            }
            guard let (_, length) = received else { break }
            roomSignals &+= 1
            deliverReplies(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(receiveBuffer.text)[0..<length]))
            if stopWhenNoneAwaited && routes.isEmpty { break }
        }
        if retryHeld && !held.isEmpty { dispatchHeld() }
    }

    /// A failed receive from the reply queue; returns whether draining may go on. Kept out of
    /// line: a logger call in `drainReplies` made every drain pay swift-log's exclusivity check
    /// (the compiler hoisted the read of its handler to the function's entry).
    @inline(never)
    func replyQueueFailed(_ replyQueue: MessageQueue, _ error: Error) -> Bool {
        switch error {
        case let error as SystemError where error.errno == .identifierRemoved || error.errno == .invalidArgument:
            replaceReplyQueue(after: error)
            return false
        case let error as SystemError where error.errno == .argListTooLong:
            // Larger than msgmax: no worker of ours sent it (the queue is the workers' user's,
            // so anything running as it may have). Left there it would fail every drain.
            let cut = try? replyQueue.receiveTruncating(into: receiveBuffer)
            // Throttled: whoever sends them can send them as fast as the master removes them.
            logger.log(throttledBy: &logThrottle, level: .error, "reply queue: removed a message larger than msgmax, which no worker sends",
                       metadata: ["queue": "\(replyQueue.id)", "type": "\(cut?.type ?? 0)", "error": "\(error)"])
            return true
        default:
            logger.critical("reply queue failed; stopping", metadata: ["error": "\(error)"])
            failReplies()
            return false
        }
    }

    /// Answers the reply records in `text` (a reply message, or a dead worker's unsent batch).
    /// `fromQueue`: spilled bodies are given back to their ring, in order; a dead worker's ring is
    /// reset before its slot's next worker instead (its unsent records may lie behind ones taken).
    func deliverReplies(_ text: UnsafeRawBufferPointer, fromQueue: Bool = true) {
        var offset = 0
        while let reply = JobCodec.decodeReply(text, length: text.count, at: offset) {
            offset = reply.end
            supervisor.noteAnswered(reply.id, slot: reply.slot)
            let rings = supervisor.replyRings
            // A spilled body is read in the worker's ring, copied into the response, then given
            // back (also when nobody waits for it any more).
            // A sent record's body must lie between the ring's head and tail (a forged one is
            // answered as a handler error); a dead worker's unsent ones may lie behind bodies
            // taken since, and are only checked to be inside the ring.
            let body = reply.spill.map { spill in
                fromQueue && rings?.holds(reply.slot, position: spill.position, length: spill.length) != true
                    ? nil : rings?.body(reply.slot, position: spill.position, length: spill.length)
            } ?? UnsafeRawBufferPointer(rebasing: text[reply.body])
            if let route = routes.removeValue(forKey: reply.id), let connection = connections[route.connection] {
                if let body {
                    answer(connection, route.sequence, reply.status, body: body)
                } else {
                    answerForgedSpill(connection, route.sequence, id: reply.id, slot: reply.slot)
                }
            }
            if fromQueue, let spill = reply.spill, body != nil {
                rings?.consume(reply.slot, position: spill.position, length: spill.length)
            }
        }
    }

    /// Out of line for the reason given on `replyQueueFailed`.
    @inline(never)
    func answerForgedSpill(_ connection: Connection, _ sequence: UInt64, id: UInt64, slot: Int) {
        // Throttled: a worker (or its user) writing forged replies could flood the log otherwise.
        logger.log(throttledBy: &logThrottle, level: .error, "reply names bytes outside its worker's ring", metadata: ["job": "\(id)", "slot": "\(slot)"])
        answer(connection, sequence, .handlerError, [])
    }

    /// Result mode, a reaped worker's slot: the replies it built and never sent (held for the
    /// batch when it died) are answered like sent ones — those jobs ran. Called after the reply
    /// queue is drained, so the replies it did send are delivered first and not repeated.
    func deliverUnsentReplies(slot: Int) {
        guard let outboxes = supervisor.outboxes, let unsent = outboxes.unsent(slot) else { return }
        deliverReplies(unsent, fromQueue: false)
        outboxes.reset(slot)
    }

    /// The reply queue was removed from outside (`ipcrm`, logind's `RemoveIPC=`) with whatever
    /// replies were in it. A new one takes its place; every request in flight is answered 5
    /// (worker died: which replies were lost cannot be told), and the workers are restarted
    /// (SIGTERM: they finish the job in hand) so that they send to the new queue.
    func replaceReplyQueue(after error: SystemError) {
        let replaced: (old: Int32?, new: Int32)
        do { replaced = try supervisor.replaceReplyQueue() } catch let failure {
            logger.critical("the reply queue was removed and no new one could be created; stopping",
                            metadata: ["error": "\(error)", "create": "\(failure)"])
            failReplies()
            return
        }
        // Jobs no worker has taken yet (still queued, staged or held) were never run: they are
        // kept, and sent again, to the restarted workers. Only the rest — taken by a worker, or
        // answered into the removed queue — may have lost their reply, and are answered 5.
        let queued = supervisor.takeBackQueuedJobs()
        var kept = Set(queued.map(\.id))
        for job in held.elements { kept.insert(job.id) }
        for batch in batches { for entry in batch.entries { kept.insert(entry.id) } }
        let owed = routes.entries.filter { !kept.contains($0.id) }
        logger.error("the reply queue was removed from outside (ipcrm?); created a new one, answering the requests a worker had taken with 5 and restarting the workers",
                     metadata: ["old": "\(replaced.old.map(String.init) ?? "-")", "new": "\(replaced.new)",
                                "answered": "\(owed.count)", "kept": "\(kept.count)"])
        for (id, route) in owed {
            routes.removeValue(forKey: id)
            deliver(route, status: .workerDied, body: Array("the reply queue was removed".utf8))
        }
        supervisor.forgetRepliesInFlight()
        returnToHeld(queued.filter { routes[$0.id] != nil }.map { Held(id: $0.id, payload: $0.payload, acknowledged: false) })
        // Not here: this may run while reaping, between a worker's waitpid and its books, and that
        // pid must not be signalled again (it may be reused). `runTimers` sends it.
        restartWorkers = true
    }

    /// No reply queue to read any more: stop, answer what is in flight, and exit 1 (a failure).
    func failReplies() {
        repliesFailed = true
        exitStatus = 1
        answerEveryRoute(.shuttingDown, body: [])
        supervisor.forgetRepliesInFlight()
        // Not here: this may run while reaping, between a worker's waitpid and its books, and
        // the stop's first steps would send that reaped pid a quit or a SIGKILL (it may be
        // another process's by then). `runTimers` begins it, after the reaps.
        stopRequested = true
    }

    func answerEveryRoute(_ status: ResponseStatus, body: [UInt8]) {
        let owed = routes.entries
        routes.removeAll()
        for (_, route) in owed { deliver(route, status: status, body: body) }
    }

    func deliver(_ route: Route, status: ResponseStatus, body: [UInt8]) {
        guard let connection = connections[route.connection] else { return }
        answer(connection, route.sequence, status, body)
    }

    func answer(_ connection: Connection, _ sequence: UInt64, _ status: ResponseStatus, _ body: [UInt8]) {
        guard connection.ordered else {
            body.withUnsafeBytes { answerTagged(connection, sequence, status, body: $0) }
            return
        }
        guard connection.resolve(sequence, status: status, body: body) else { return }
        emitReady(connection)
    }

    /// Answers with a body still in the reply message: the next response owed (the usual case)
    /// is encoded straight into the output; one that must wait for an earlier one is stored.
    func answer(_ connection: Connection, _ sequence: UInt64, _ status: ResponseStatus, body: UnsafeRawBufferPointer) {
        guard connection.ordered else {
            answerTagged(connection, sequence, status, body: body)
            return
        }
        guard configuration.wireProtocol == .framed, connection.takeHead(sequence) else {
            answer(connection, sequence, status, Array(body))
            return
        }
        statusCounts[Int(status.rawValue)] += 1
        let header = (UInt32(body.count + 1).bigEndian, status.rawValue)
        withUnsafeBytes(of: header) { connection.output.append(UnsafeRawBufferPointer(rebasing: $0[0..<FrameCodec.responseHeaderBytes]), body) }
        emitReady(connection, emitted: true)
    }

    /// Tagged: a request in flight on `connection` is answered, at once, under its tag.
    func answerTagged(_ connection: Connection, _ tag: UInt64, _ status: ResponseStatus, body: UnsafeRawBufferPointer) {
        // Each request is answered once (its route or batch entry goes with the answer); the
        // guard only keeps a mistake from corrupting the count.
        guard connection.unorderedInflight > 0 else { return }
        connection.unorderedInflight -= 1
        writeTagged(connection, tag: UInt32(truncatingIfNeeded: tag), status, body: body)
    }

    /// Encodes a tagged response straight into the connection's output.
    func writeTagged(_ connection: Connection, tag: UInt32, _ status: ResponseStatus, body: UnsafeRawBufferPointer) {
        statusCounts[Int(status.rawValue)] += 1
        let header = (UInt32(body.count + 1).bigEndian, tag.bigEndian, status.rawValue)
        withUnsafeBytes(of: header) {
            connection.output.append(UnsafeRawBufferPointer(rebasing: $0[0..<FrameCodec.taggedResponseHeaderBytes]), body)
        }
        emitReady(connection, emitted: true)
    }

    /// Moves every in-order resolved response into the output buffer.
    func emitReady(_ connection: Connection, emitted alreadyEmitted: Bool = false) {
        var emitted = alreadyEmitted
        while let (status, body) = connection.popReady() {
            statusCounts[Int(status.rawValue)] += 1
            responseScratch.removeAll(keepingCapacity: true)
            encodeResponse(status: status, body: body, into: &responseScratch)
            if configuration.wireProtocol == .oneshot && connection.output.isEmpty {
                // Its one response: write it now, from the scratch, and buffer only what the
                // socket does not take (errors surface in the flush at the end of the turn).
                let written = responseScratch.withUnsafeBytes { (try? connection.fd.write($0)) ?? nil } ?? 0
                // Bytes moved restart the idle time, as `writeOutput` does: after a job longer than
                // --idle-timeout, a rest waiting for the client to read must not be cut off.
                if written > 0 { connection.lastActivity = turnStart }
                if written < responseScratch.count {
                    responseScratch.withUnsafeBytes { connection.output.append(UnsafeRawBufferPointer(rebasing: $0[written...])) }
                }
            } else {
                connection.output.append(responseScratch)
            }
            emitted = true
        }
        if emitted && !connection.isDirty {
            connection.isDirty = true
            dirty.append(connection)
        }
    }

    func encodeResponse(status: ResponseStatus, body: [UInt8], into out: inout [UInt8]) {
        switch configuration.wireProtocol {
        case .framed:
            body.withUnsafeBytes { FrameCodec.appendResponse(status: status, body: $0, to: &out) }
        case .tagged:
            // Only a refusal before any request is read (connection limit): no tag to echo yet.
            body.withUnsafeBytes { FrameCodec.appendResponse(status: status, body: $0, tag: 0, to: &out) }
        case .oneshot:
            switch (status, configuration.replyMode) {
            case (.ok, .ack): out.append(contentsOf: "ok".utf8)
            case (.ok, .result): out.append(contentsOf: body)
            case (.handlerError, _):
                out.append(contentsOf: "error: handler error: ".utf8)
                out.append(contentsOf: body)
            default: out.append(contentsOf: "error: \(status)".utf8)
            }
        }
    }

    // MARK: - Writing and closing

    func flushDirty() {
        guard !dirty.isEmpty else { return }
        // Swapped, not copied: a copy would make the next append allocate a new array (COW).
        swap(&dirty, &flushing)
        defer { flushing.removeAllKeepingStorage() }
        for connection in flushing {
            connection.isDirty = false
            guard connections[connection.key] != nil else { continue }
            flush(connection)
        }
    }

    func flush(_ connection: Connection) {
        do {
            try writeOutput(connection)
        } catch {
            // EPIPE/ECONNRESET: the client left; what it was owed is dropped with it. In ack mode
            // what it wrote before it went is still read and queued: a producer may write its
            // messages and go without reading its `ok`s.
            connection.hungUp = true
            guard readsAfterHangUp(connection) else {
                close(connection, reason: "write: \(error)")
                return
            }
            discardOutput(connection)
        }
        // A small buffer stays with its connection, so answering a busy client allocates nothing
        // per response; a grown one goes back at once, and the idle scan takes the small one back
        // once the connection goes quiet.
        if connection.output.isEmpty && connection.output.capacity > Self.keptOutputCapacity {
            connection.output.release()
        }
        settle(connection)
    }

    /// Ack mode (framed, tagged): a client gone both ways is still read to its end of stream, and
    /// what it wrote queued. Not result mode: nobody can take the results (`connectionEvent`).
    func readsAfterHangUp(_ connection: Connection) -> Bool {
        configuration.replyMode == .ack && configuration.wireProtocol.isFramed && !connection.isControl
            && !connection.peerClosed && !connection.closeWhenDone
    }

    /// From now on the connection's answers are dropped, not written: nobody reads them.
    func discardOutput(_ connection: Connection) {
        connection.discardsOutput = true
        connection.output.consume(connection.output.readableCount)
    }

    /// Writes what the socket takes of a connection's output, without blocking.
    func writeOutput(_ connection: Connection) throws {
        if connection.discardsOutput {
            discardOutput(connection)
            return
        }
        var wrote = false
        defer {
            // Progress in either direction is activity: a connection whose long job just got its
            // answer, or a slow reader catching up, starts its idle time now.
            if wrote { connection.lastActivity = turnStart }
        }
        while !connection.output.isEmpty, let n = try connection.fd.write(connection.output.readable) {
            connection.output.consume(n)
            wrote = true
        }
    }

    /// Closes a finished connection or updates what epoll watches for it.
    func settle(_ connection: Connection) {
        guard connections[connection.key] != nil else { return }
        if configuration.wireProtocol.isFramed && !connection.input.isEmpty
            && connection.inflight < configuration.maxInflight && !connection.closeWhenDone
            && connection.output.readableCount < Self.outputHighWater {
            // Requests already buffered while the in-flight cap was reached: no readable event
            // will announce them again.
            parseFrames(connection)
        }
        if connection.isQuiescent && connection.lingerOnClose && !connection.peerClosed && !connection.hungUp {
            if !connection.lingering {
                connection.lingering = true
                try? connection.fd.shutdownWrite()
            }
            drainAndIgnore(connection)
            guard connections[connection.key] != nil else { return }
            if !connection.peerClosed {
                if connection.interest != .readable || !connection.registered { watch(connection, .readable) }
                return
            }
        }
        if connection.isQuiescent && (connection.closeWhenDone || connection.peerClosed
                                      || (connection.hungUp && !readsAfterHangUp(connection))
                                      || (phase != .running && readBeforeClosing(connection))) {
            close(connection, reason: nil)
            return
        }
        guard connections[connection.key] != nil else { return }
        if connection.hungUp && readsAfterHangUp(connection) && connection.inflight < configuration.maxInflight {
            // Read on to the end of stream while in-flight room allows: each wait reports the
            // hang-up and the read makes progress. Out of epoll while full (as below), back in
            // when answers free room (they come through here).
            if connection.detached {
                connection.detached = false
                connection.registered = false
                connection.interest = []
            }
            if connection.interest != .readable || !connection.registered { watch(connection, .readable) }
            return
        }
        if connection.hungUp {
            // Nobody will read what is still owed; stop epoll from reporting the hang-up in a loop
            // and close when the last reply has been routed here.
            if !connection.detached {
                try? epoll.remove(connection.fd.raw)
                connection.detached = true
            }
            return
        }
        var wanted: Epoll.Events = []
        let reading = !connection.closeWhenDone && !connection.peerClosed
            && !(configuration.wireProtocol == .oneshot && connection.messageTaken)
            && connection.inflight < configuration.maxInflight
            && connection.output.readableCount < Self.outputHighWater
        if reading { wanted.insert(.readable) }
        // A dirty connection is flushed at the end of this loop turn; ask epoll for writability
        // only if that flush could not write everything.
        if !connection.output.isEmpty && !connection.isDirty { wanted.insert(.writable) }
        if configuration.wireProtocol == .oneshot && connection.messageTaken && !connection.peerClosed && !connection.isControl {
            // Ack mode answers within this loop turn (when the batch is queued); only a result
            // waits, and then a client that hangs up before it is written must still be noticed.
            if configuration.replyMode == .ack && wanted.isEmpty { return }
            wanted.insert(.readable)
        }
        if wanted != connection.interest || (!connection.registered && !wanted.isEmpty) {
            watch(connection, wanted)
        }
    }

    /// Stopping, a framed connection that owes nothing: reads what the client sent before it saw
    /// the stop (also what the in-flight cap or the output high-water mark had left unread), so
    /// each request gets an answer (shutting down) instead of a reset from closing with unread
    /// data. True when the connection may close: nothing owed, no partial frame, socket dry.
    func readBeforeClosing(_ connection: Connection) -> Bool {
        guard configuration.wireProtocol.isFramed && !connection.isControl else { return true }
        let limit = framedInputLimit
        // A few reads per turn, as for any connection: a client streaming frames during the stop
        // must not hold the loop (epoll brings this one back while it is readable).
        for _ in 0..<4 where connection.output.readableCount < Self.outputHighWater {
            switch readChunk(connection, minimum: 4096, limit: limit) {
            case .failed:
                return false   // closed
            case .data(let drained):
                parseFrames(connection)
                if connections[connection.key] == nil { return false }
                // A refusal (too large, garbage) ends the connection the usual way: lingering.
                if connection.closeWhenDone { return false }
                // A short read emptied the socket.
                if drained { return connection.isQuiescent && connection.input.isEmpty }
            case .wouldBlock:
                return connection.isQuiescent && connection.input.isEmpty
            case .endOfStream, .noSpace:
                return connection.isQuiescent
            }
        }
        return false
    }

    /// Sets what epoll reports for a connection, registering it on first use.
    func watch(_ connection: Connection, _ events: Epoll.Events) {
        do {
            if connection.registered {
                try epoll.modify(connection.fd.raw, events: events, token: connection.key)
            } else {
                try epoll.add(connection.fd.raw, events: events, token: connection.key)
                connection.registered = true
            }
            connection.interest = events
        } catch {
            logger.log(throttledBy: &logThrottle, level: .warning, "epoll_ctl failed; closing the connection", metadata: ["error": "\(error)"])
            close(connection, reason: "epoll_ctl: \(error)")
        }
    }

    func close(_ connection: Connection, reason: String?) {
        guard connections.removeValue(forKey: connection.key) != nil else { return }
        // Even with nothing held now: its jobs may be held later (a batch sent back this turn, the
        // unstarted jobs of a worker that dies), merged behind live ones.
        if connection.inflight > 0 { heldMayHaveOrphans = true }
        if connection.isControl { controlConnectionCount -= 1 }
        if let reason, connection.inflight > 0 {
            logger.debug("connection closed with requests in flight", metadata: ["reason": "\(reason)", "inflight": "\(connection.inflight)"])
        }
        // close(2) drops the epoll registration with the last reference to the open socket, so no
        // EPOLL_CTL_DEL is needed — unless a worker forked moments ago still holds a copy (it
        // closes the master's descriptors first thing): the registration would outlive the close,
        // and a client's hang-up would wake every wait, under a key nobody has, until then.
        if connection.registered && !connection.detached && supervisor.forkCopiesMayLinger() {
            try? epoll.remove(connection.fd.raw)
        }
        connection.fd.close()
    }

    /// Closes connections with nothing in flight and no bytes moved for `--idle-timeout`: silent
    /// clients, and clients that stopped reading what they are owed (whose output would
    /// otherwise be held for good).
    func closeIdleConnections(now: Int64) {
        // Not one answered this turn and not yet flushed: a long job's answer, produced by the
        // same turn's reap (a reply drained, a worker's death), is written first.
        for connection in connections.values where connection.inflight == 0 && !connection.isDirty {
            // Buffers of connections that went quiet go back to the allocator.
            if connection.isQuiescent {
                if connection.input.isEmpty { connection.input.release() }
                connection.output.release()
            }
            let limit = connection.isControl ? controlTimeoutNanoseconds : idleTimeoutNanoseconds
            if now - connection.lastActivity >= limit {
                logger.debug("closing idle connection", metadata: [
                    "timeout": "\(Double(limit) / 1e9)", "unwritten-bytes": "\(connection.output.readableCount)",
                    "control": "\(connection.isControl)",
                ])
                close(connection, reason: "idle timeout")
            }
        }
    }
}
