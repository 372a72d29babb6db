import Glibc
import Logging

/// One worker position: a queue that outlives the processes bound to it, and the process now
/// bound to it. A respawned worker takes the same queue, so messages queued for its predecessor
/// are handled, not lost.
struct WorkerSlot {
    let index: Int
    var queue: MessageQueue
    var pid: pid_t?
    var startedAt: Int64 = 0
    var restarts = 0
    /// Jobs finished by the slot's ended worker processes (each one's scoreboard count at its end).
    var earlierJobsHandled: UInt64 = 0
    /// Consecutive deaths within `quickDeath` of starting; drives the respawn back-off.
    var crashStreak = 0
    var respawnAt: Int64?
    /// Jobs sent to this slot's queue and not known to be done, in queue order (with their message
    /// sizes, which tell queued jobs apart from quit messages in IPC_STAT's byte count).
    var outstanding = FIFO<QueuedJob>()
    /// Ack mode: how many of `outstanding` the current process has been seen to finish.
    var pruned: UInt64 = 0
    /// Job timeout: when SIGTERM was sent, and the job it was sent for.
    var terminatedAt: Int64?
    var timedOutJob: UInt64?
    /// `--slow-job`: the running job last logged as slow (one line per job).
    var slowReportedJob: UInt64?
    /// Scaling down: no new work; a quit is queued; the slot and its queue go when the worker exits.
    var retiring = false
    /// Retired and its queue removed; dropped from the end of the slot list.
    var removed = false
    /// Takes new work.
    var accepting: Bool { !retiring && !removed }
}

/// A job in a worker's queue, as the master tracks it.
struct QueuedJob: Equatable {
    var id: UInt64
    /// Bytes of its queue message (`msgsnd` length).
    var bytes: Int
}

/// What happened to a request when its worker went away.
struct LostJob {
    var id: UInt64
    var status: ResponseStatus
}

/// A job its dead worker had taken but never started: safe to run elsewhere.
struct UnstartedJob {
    var id: UInt64
    var payload: [UInt8]
}

/// What a reaped worker took down with it.
struct WorkerLoss {
    var slot: Int
    /// Jobs it was running, or (result mode) finished with no reply delivered: neither sent nor in
    /// its outbox, which the master reads before this.
    var lost: [LostJob]
    /// Jobs of its last message it had not started.
    var unstarted: [UnstartedJob]
    /// Set when the last worker that read a removed shared queue has been reaped: the jobs still
    /// in that queue are gone. No slot owned them, so the caller fails every request in flight
    /// except these (sent to the new queue since) and the ones it holds or has staged.
    var sharedQueueLost: Set<UInt64>? = nil
}

/// Forks workers, binds each to its slot's queue, reaps them, replaces the dead, kills the stuck.
/// Owns the queues and removes them; never touches client connections.
///
/// Stored properties are `@exclusivity(unchecked)` for the reason given on `Master`.
final class Supervisor {
    @exclusivity(unchecked) private(set) var slots: [WorkerSlot] = []
    let scoreboard: Scoreboard
    let inboxes: WorkerInboxes
    /// Result mode: where each worker builds its reply batch, readable after it is gone.
    let outboxes: ReplyOutboxes?
    /// Where large payloads travel (`nil`: `--spill-bytes 0` or `--arena-chunks 0`).
    let arena: PayloadArena?
    /// Where large replies travel (result mode; `nil`: `--spill-bytes 0` or `--reply-ring 0`).
    let replyRings: ReplyRings?
    /// Queues removed from outside whose losses wait for these workers (that read them) to be
    /// reaped: until then a worker may still hold one of its messages. A shared queue's entry
    /// also collects the jobs queued since its removal was found (they went to the replacement).
    /// `readers` over-estimates (every other live worker), so entries complete in the order
    /// they were found, also when a replacement queue is removed in turn.
    @exclusivity(unchecked) private var lostQueues: [LostQueue] = []

    private struct LostQueue {
        var queue: Int32
        var readers: Set<pid_t>
        var shared: Bool
        var queuedSince: Set<UInt64> = []
        /// Ack mode, shared queue: what was sent to it, to name what it took with it.
        var sent: SentMessages? = nil
    }
    /// Ack mode with a shared queue: the jobs sent to the current queue lately (`SentMessages`).
    @exclusivity(unchecked) private var sharedSent: SentMessages?
    /// Result mode: where workers send replies. Replaced if removed from outside.
    @exclusivity(unchecked) private(set) var replyQueue: MessageQueue?
    let doorbell: EventFD?
    /// Workers forked that may still hold copies of the master's descriptors (see `Master.close`):
    /// until each publishes its pid in the scoreboard (`runWorker` closes them before that) or is
    /// reaped.
    @exclusivity(unchecked) private var unsettledForks: [(slot: Int, pid: pid_t)] = []
    private let configuration: PoolConfiguration
    private let limits: QueueLimits
    private let queueBytes: Int
    private let makeHandler: MessageHandlerFactory
    private let logger: Logger
    private let workerLogger: Logger
    /// Descriptors a worker keeps (doorbell, log file).
    private let keepDescriptors: [Int32]

    static let maxWorkers = PoolConfiguration.maxWorkers
    /// A death this soon after the worker started counts towards the crash back-off.
    static let quickDeath: Int64 = {
        #if DEBUG
        // Debug builds only: a test may widen the window, to make a death it causes a quick
        // one however slowly the machine lets it act.
        if let ms = getenv("POOL_DEBUG_QUICK_DEATH_MS").flatMap({ Int64(String(cString: $0)) }) { return ms * 1_000_000 }
        #endif
        return 1_000_000_000
    }()
    static let termGrace: Int64 = 1_000_000_000

    /// `socketActivated`: recorded from the first record on, so a SIGKILL during the start leaves
    /// a record that says the socket is systemd's (a cleanup's probe would start the service).
    init(configuration: PoolConfiguration, limits: QueueLimits, makeHandler: @escaping MessageHandlerFactory,
         logger: Logger, workerLogger: Logger, keepDescriptors: [Int32], socketActivated: Bool = false) throws {
        self.configuration = configuration
        self.socketActivated = socketActivated
        self.limits = limits
        self.makeHandler = makeHandler
        self.logger = logger
        self.workerLogger = workerLogger
        scoreboard = try Scoreboard(slots: Self.maxWorkers)
        inboxes = try WorkerInboxes(slots: Self.maxWorkers, capacity: limits.maxMessageBytes)
        outboxes = configuration.replyMode == .result ? try ReplyOutboxes(slots: Self.maxWorkers, capacity: limits.maxMessageBytes) : nil
        // A chunk holds the largest payload one message could (msgmax − header).
        arena = configuration.spillBytes > 0 && configuration.arenaChunks > 0
            ? try PayloadArena(chunks: configuration.arenaChunks, chunkBytes: limits.maxMessageBytes - JobCodec.headerBytes,
                               threshold: configuration.spillBytes)
            : nil
        // Rings for four times the starting pool or `--max-workers`, whichever is larger (at least
        // 64 slots), not for all 1024 possible slots: a ring is 64 KiB of address space. Slots
        // added beyond (TTIN, `scale`) reply inline.
        let ringBytes = configuration.effectiveReplyRingBytes(limits: limits)
        let ringSlots = max(configuration.workers * 4, configuration.dynamicScaling?.maxWorkers ?? 0, 64)
        replyRings = configuration.replyMode == .result && configuration.spillBytes > 0 && ringBytes > 0
            ? try ReplyRings(slots: min(Self.maxWorkers, ringSlots), capacity: ringBytes,
                             threshold: configuration.spillBytes)
            : nil
        // Claimed before any queue exists, and recorded again as each is made: a SIGKILL at any
        // point of the start leaves a record of every queue it had created. Refused here, before
        // creating anything, if another master recorded itself since the start-up check.
        if let live = liveMasterRecorded(at: configuration.stateFilePath, socketPath: configuration.socketPath) {
            throw liveMasterError(live, socketPath: configuration.socketPath, statePath: configuration.stateFilePath)
        }
        var created: [MessageQueue] = []
        // Each queue's ctime is read once, when it is made (after its resize, which changes it):
        // re-reading every queue at every record would be quadratic in the pool's size.
        var recorded: [(id: Int32, changeTime: Int)] = []
        func record() throws {
            for queue in created.dropFirst(recorded.count) { recorded.append((queue.id, Self.changeTime(of: queue))) }
            try Self.recordState(recorded, configuration: configuration, socketActivated: socketActivated)
        }
        do {
            try record()
            let wanted = configuration.queueBytes ?? max(limits.defaultQueueBytes, 1 << 20)
            var granted = wanted
            var shared: MessageQueue? = nil
            for index in 0..<configuration.workers {
                // --dispatch shared: one queue every worker reads; otherwise one queue each.
                let queue = try shared ?? Self.createQueue(owner: configuration.workerUser)
                if configuration.effectiveDispatch == .shared { shared = queue }
                if index == 0 || shared == nil {
                    created.append(queue)
                    granted = Self.applyCapacity(queue, wanted: granted, limits: limits, logger: index == 0 ? logger : nil,
                                                 asked: configuration.queueBytes != nil)
                    // After the resize, which changes the queue's ctime the record must match.
                    try record()
                }
                slots.append(WorkerSlot(index: index, queue: queue))
            }
            queueBytes = granted
            try PoolConfiguration.checkQueueCapacity(granted, limits: limits)
            sharedSent = configuration.replyMode == .ack && configuration.effectiveDispatch == .shared
                ? SentMessages(queueBytes: granted) : nil
            if configuration.replyMode == .result {
                let queue = try Self.createQueue(owner: configuration.workerUser)
                created.append(queue)
                _ = Self.applyCapacity(queue, wanted: granted, limits: limits, logger: nil)
                try record()
                replyQueue = queue
            } else {
                replyQueue = nil
            }
            // Workers ring it: after a reply the master may be asleep for (result mode), and after
            // taking a message while the master holds jobs for lack of room (ack mode).
            doorbell = try EventFD.create()
        } catch {
            for queue in created { try? queue.remove() }
            if PoolState.read(from: configuration.stateFilePath)?.isOwn == true { unlink(configuration.stateFilePath) }
            throw error
        }
        self.keepDescriptors = keepDescriptors + (doorbell.map { [$0.fd] } ?? [])
        // The ctimes read for the start's records: `writeState` needs not read them again.
        queueTimes = Dictionary(recorded, uniquingKeysWith: { first, _ in first })
    }

    /// Every queue we own: the workers' and the reply queue.
    var allQueues: [MessageQueue] { jobQueues + (replyQueue.map { [$0] } ?? []) }

    /// The job queues of the slots in use, each once (a shared queue is every slot's).
    var jobQueues: [MessageQueue] {
        var seen = Set<Int32>()
        return slots.filter { !$0.removed }.map(\.queue).filter { seen.insert($0.id).inserted }
    }

    /// All workers read one queue (`--dispatch shared`).
    var sharesQueue: Bool { configuration.effectiveDispatch == .shared }

    /// Records our pid and queues (with their creation times) for recovery after a SIGKILL.
    func writeState() throws {
        let live = allQueues
        // Forget the ctimes of queues gone since, then learn those of new ones (once each).
        if queueTimes.count > live.count {
            let ids = Set(live.map(\.id))
            queueTimes = queueTimes.filter { ids.contains($0.key) }
        }
        for queue in live where queueTimes[queue.id] == nil { queueTimes[queue.id] = Self.changeTime(of: queue) }
        try Self.recordState(live.map { ($0.id, queueTimes[$0.id]!) }, configuration: configuration,
                             socketActivated: socketActivated)
        noteRecordIdentity()
    }

    /// The ctime recorded for each queue (see `writeState`). A queue's ctime changes only with
    /// IPC_SET, which the master makes when it creates the queue, before recording it.
    @exclusivity(unchecked) private var queueTimes: [Int32: Int] = [:]

    /// The listening socket came from systemd (recorded, so recovery leaves it alone).
    @exclusivity(unchecked) var socketActivated = false

    private static func changeTime(of queue: MessageQueue) -> Int { (try? queue.status().changeTime) ?? 0 }

    /// `writeState`, its failure logged: the pool goes on (only a crash's clean-up needs the file).
    /// A failure leaves the record to write again (`checkStateRecord`, once a second), said once
    /// until a write succeeds. True if written.
    @discardableResult
    func recordState() -> Bool {
        do {
            try writeState()
            if recordPending { logger.info("state file written again") }
            recordPending = false
            return true
        } catch {
            if !recordPending {
                logger.warning("could not update the state file; trying again every second", metadata: ["error": "\(error)"])
            }
            recordPending = true
            return false
        }
    }

    /// The last record could not be written: the file may name queues no longer ours, or miss new
    /// ones, until a write succeeds.
    @exclusivity(unchecked) private var recordPending = false

    /// How often the running master checks that the state file still holds its record.
    static let recordCheckInterval: Int64 = 1_000_000_000

    /// The file our last record made (device, inode): a check that finds it there costs one lstat.
    @exclusivity(unchecked) private var recordIdentity: (device: UInt64, inode: UInt64)?

    /// The file at the state path now (device, inode), if any.
    private func stateFileIdentity() -> (device: UInt64, inode: UInt64)? {
        var info = stat()
        return lstat(configuration.stateFilePath, &info) == 0 ? (UInt64(info.st_dev), UInt64(info.st_ino)) : nil
    }

    private func noteRecordIdentity() { recordIdentity = stateFileIdentity() }

    /// A file found at the state path that is not ours and was left alone (another running
    /// master's record, one that cannot be read, a dead master's whose queues could not all be
    /// removed): not looked at again, nor said again, until another file takes its place.
    @exclusivity(unchecked) private var leftAloneIdentity: (device: UInt64, inode: UInt64)?

    /// Records again when the state file no longer holds our record: without it a SIGKILL would
    /// leave our queues for good. It goes when a start racing ours records last and then fails
    /// (it unlinks its own record), or when a cleaner of old files or an operator removes it.
    /// A dead master's record in its place has its queues removed first (the only record of
    /// them); another running master's, or one this process cannot read, is left alone.
    func checkStateRecord() {
        let current = stateFileIdentity()
        if !recordPending, let current, let known = recordIdentity, current == known { return }
        if let current, let other = leftAloneIdentity, current == other { return }
        leftAloneIdentity = nil
        let path = configuration.stateFilePath
        let file = PoolState.readFile(from: path)
        let found = file?.state
        if let found, found.isOwn {
            if recordPending { recordState() } else { noteRecordIdentity() }
            return
        }
        func leaveAlone(_ why: String, _ metadata: Logger.Metadata = [:]) {
            leftAloneIdentity = current
            logger.warning("the state file is not this master's record and is left alone: \(why)",
                           metadata: metadata.merging(["state-file": "\(path)"]) { $1 })
        }
        if found == nil, let problem = unreadableStateFile(path) {
            return leaveAlone("it cannot be read (\(problem))")
        }
        if let found {
            // On our own socket the control socket that answers is ours: only its pid can say.
            let running = found.socketPath == configuration.socketPath
                ? recordedPIDIsMaster(found) : isRecordedMaster(found, controlSocket: found.socketPath + ".ctl")
            if running { return leaveAlone("it records another running master", ["pid": "\(found.pid)"]) }
            // As a cleanup would: only a record its uid owns is trusted with that uid's queues, and
            // only that uid or root may remove them.
            var report = RecoveryReport()
            let trusted = file?.owner == found.uid && (found.uid == getuid() || getuid() == 0)
            let left = trusted ? removeRecordedQueues(of: found, into: &report) : found.queues.count
            if !report.removedQueues.isEmpty {
                logger.warning("removed the queues of a dead master recorded in the state file", metadata: [
                    "state-file": "\(path)", "pid": "\(found.pid)", "queues": "\(report.removedQueues)"])
            }
            if left > 0 { return leaveAlone("it records \(left) queue(s) of a dead master that could not be removed", ["pid": "\(found.pid)"]) }
        }
        if recordState() {
            logger.warning("the state file no longer held this master's record; recorded again", metadata: ["state-file": "\(path)"])
        }
    }

    /// Writes the record of `queues` (ids and current ctimes) with our pid, start time and uid.
    /// The first record of a starting master is written before its first queue (see `init`):
    /// two masters started at the same moment on one socket, the first to record wins and the
    /// other stops at its check, before its record could replace the winner's and be removed with
    /// its failed start. Only a record landing between that check and this rename can still be
    /// replaced.
    private static func recordState(_ queues: [(id: Int32, changeTime: Int)], configuration: PoolConfiguration,
                                    socketActivated: Bool = false) throws {
        var state = PoolState(pid: getpid(), startTime: ownStartTime, token: PoolState.ownToken, uid: getuid(),
                              socketPath: configuration.socketPath, queues: queues)
        state.socketActivated = socketActivated
        try state.write(to: configuration.stateFilePath)
    }

    /// This process's start time (clock ticks after boot), read once: it never changes, and the
    /// state file is rewritten from the event loop (scaling, a queue replaced).
    private static let ownStartTime = processStatus(getpid())?.startTime

    /// Capacity each queue actually got.
    var grantedQueueBytes: Int { queueBytes }

    /// A new queue, 0600, given to `owner` if workers run as another user (before any other
    /// IPC_SET: the state file records the change time that follows).
    private static func createQueue(owner: WorkerUser?) throws -> MessageQueue {
        do {
            let queue = try MessageQueue.createPrivate(mode: 0o600)
            if let owner {
                do { try queue.setOwner(uid: owner.uid, gid: owner.gid) } catch {
                    try? queue.remove()
                    throw error
                }
            }
            return queue
        } catch let error as SystemError where error.errno == .noSpace {
            throw ConfigurationError("cannot create a message queue: the system limit of queues is reached (msgmni, /proc/sys/kernel/msgmni); remove stale ones (ipcs -q, ipcrm -q ID) or raise it")
        } catch let error as SystemError where error.errno == .permissionDenied {
            throw ConfigurationError("cannot create a message queue: \(error)")
        }
    }

    /// Raises a queue's capacity if we may; falls back to what the kernel gave (msgmnb). Not
    /// getting a size the operator `asked` for (`--queue-bytes`) is a warning; the default's
    /// 1 MiB is only a wish.
    private static func applyCapacity(_ queue: MessageQueue, wanted: Int, limits: QueueLimits, logger: Logger?,
                                      asked: Bool = false) -> Int {
        guard let current = try? queue.status().capacityBytes else { return limits.defaultQueueBytes }
        if wanted == current { return current }
        do {
            try queue.setCapacity(bytes: wanted)
            return wanted
        } catch {
            logger?.log(level: asked ? .warning : .info,
                        "queue capacity stays at \(current) bytes (raising it to \(wanted) needs CAP_SYS_RESOURCE)", metadata: ["error": "\(error)"])
            return current
        }
    }

    // MARK: Lifecycle

    func spawnAll() throws {
        for index in slots.indices { try spawn(index) }
    }

    /// Forks a worker for slot `index`. In the child this never returns.
    func spawn(_ index: Int) throws {
        var limit: Int? = nil
        if let maxJobs = configuration.maxJobs {
            limit = maxJobs + (configuration.maxJobsJitter > 0 ? Int.random(in: 0...configuration.maxJobsJitter) : 0)
        }
        let environment = WorkerEnvironment(
            slot: index, queue: slots[index].queue, replyQueue: replyQueue, doorbell: doorbell,
            scoreboard: scoreboard, inboxes: inboxes, outboxes: outboxes, arena: arena, replyRings: replyRings,
            messageCapacity: limits.maxMessageBytes,
            batchNanoseconds: Int64(configuration.batchTime * 1e9), jobLimit: limit,
            scheduling: configuration.effectiveWorkerScheduling, user: geteuid() == 0 ? configuration.workerUser : nil,
            makeHandler: makeHandler, logger: workerLogger, keepDescriptors: keepDescriptors)
        // Reset the slot's scoreboard before the fork: the child may take and finish a job before
        // the parent runs again, and a reset after that would erase its busy state and job count.
        scoreboard.reset(index, pid: 0)
        // Whatever the slot's previous worker held was accounted for when it was reaped, and every
        // reply it sent was drained then: the new worker starts with an empty reply ring.
        inboxes.reset(index)
        outboxes?.reset(index)
        replyRings?.reset(index)
        guard let pid = try ChildProcess.fork(parentDeathSignal: SIGKILL, ignoreGroupSignals: true, holdTermination: true) else {
            runWorker(environment)
        }
        slots[index].pid = pid
        slots[index].startedAt = monotonicNanoseconds()
        // Pruned first: only a close with a registered connection prunes it otherwise, and a pool
        // serving oneshot clients in their first turn, recycling workers, would let it grow.
        _ = forkCopiesMayLinger()
        unsettledForks.append((index, pid))
        slots[index].respawnAt = nil
        slots[index].terminatedAt = nil
        slots[index].timedOutJob = nil
        logger.info("worker spawned", metadata: ["slot": "\(index)", "pid": "\(pid)", "queue": "\(slots[index].queue.id)"])
    }

    /// Whether a worker forked may still hold copies of the master's descriptors: facts, not a
    /// guess of how long its first steps take (a worker descheduled for long on a busy machine).
    func forkCopiesMayLinger() -> Bool {
        guard !unsettledForks.isEmpty else { return false }
        unsettledForks.removeAll { fork in
            !slots.indices.contains(fork.slot) || slots[fork.slot].pid != fork.pid || scoreboard.pid(fork.slot) == fork.pid
        }
        return !unsettledForks.isEmpty
    }

    var livePIDs: [pid_t] { slots.compactMap(\.pid) }
    /// Workers alive or about to be respawned.
    var hasWorkersOrRespawns: Bool { slots.contains { $0.pid != nil || $0.respawnAt != nil } }

    /// Shutdown: respawn slots in back-off now, so their queued work is handled before the end.
    /// A slot added by `scale` whose first worker has not started yet gets none if nothing is
    /// queued for it (as a worker that ends in a stop with nothing queued is not replaced): a
    /// stop right after `scale 1000` forked hundreds of workers only to quit them.
    func expediteRespawns(now: Int64) {
        for index in slots.indices where slots[index].pid == nil && slots[index].respawnAt != nil {
            if slots[index].startedAt == 0 && (sharesQueue || (try? slots[index].queue.status())?.bytes == 0) {
                slots[index].respawnAt = nil
                continue
            }
            slots[index].respawnAt = now
        }
    }

    /// Jobs just went into slot `index`'s queue: if it has no worker and none is due, one is due
    /// now. In a stop a worker that ended with nothing queued is not replaced; jobs held for queue
    /// room and sent after that (every slot workerless, so one of them takes them) would
    /// otherwise wait for a reader that never comes — answered 6 at the deadline, or, acknowledged,
    /// removed unrun with the queue. Returns whether a respawn was scheduled.
    func ensureWorker(_ index: Int, now: Int64) -> Bool {
        guard slots.indices.contains(index), slots[index].pid == nil, slots[index].respawnAt == nil,
              !slots[index].removed else { return false }
        slots[index].respawnAt = now
        return true
    }

    /// Forgets pending respawns (the shutdown deadline passed).
    func cancelRespawns() {
        for index in slots.indices { slots[index].respawnAt = nil }
    }

    func slotIndex(of pid: pid_t) -> Int? { slots.firstIndex { $0.pid == pid } }

    /// Master, once per queue message before `noteQueued` for its jobs: records the message's
    /// jobs (ack mode with a shared queue; see `SentMessages`).
    func noteMessageQueued(_ ids: some Sequence<UInt64>) {
        sharedSent?.sent(ids)
    }

    /// Records that a job was queued to a slot, for attribution if its worker dies.
    func noteQueued(_ id: UInt64, bytes: Int, slot: Int) {
        // With a shared queue no slot owns a job until a worker takes it; the scoreboard says which.
        guard !sharesQueue else {
            for index in lostQueues.indices where lostQueues[index].shared { lostQueues[index].queuedSince.insert(id) }
            return
        }
        slots[slot].outstanding.append(QueuedJob(id: id, bytes: bytes))
    }

    /// Result mode: records that a reply arrived.
    func noteAnswered(_ id: UInt64, slot: Int) {
        guard slots.indices.contains(slot) else { return }
        _ = slots[slot].outstanding.remove { $0.id == id }
    }

    /// Ack mode, where no replies come back: forgets the jobs the slot's worker has finished, by
    /// the count it publishes on the scoreboard (jobs are taken in queue order).
    func pruneFinished() {
        guard configuration.replyMode == .ack else { return }
        for index in slots.indices where slots[index].pid != nil {
            let done = scoreboard.jobsHandled(index)
            while slots[index].pruned < done, slots[index].outstanding.removeFirst() != nil {
                slots[index].pruned += 1
            }
        }
    }

    /// Handles a reaped worker: returns its slot and the request(s) it took down with it.
    /// Call after draining the reply queue, so replies it sent before dying are not counted lost.
    /// `awaitsReply`: result mode, whether a job's reply is still owed to a client (a job it
    /// finished whose reply was delivered is not lost, and is not named so in the log).
    func workerExited(pid: pid_t, status: ExitStatus, shuttingDown: Bool,
                      awaitsReply: (UInt64) -> Bool = { _ in true }) -> WorkerLoss? {
        guard let index = slotIndex(of: pid) else { return nil }
        // Reaped: its pid may be reused at once, by a worker respawned before the next tick.
        restarting[pid] = nil
        termAskedAt[pid] = nil
        let now = monotonicNanoseconds()
        var slot = slots[index]
        slot.pid = nil
        // Its count goes into the slot's and the pool's totals before a new worker resets it.
        let handled = scoreboard.jobsHandled(index)
        slot.earlierJobsHandled &+= handled
        jobsHandledByEndedWorkers &+= handled
        var lost: [LostJob] = []
        // Only the job the worker was condemned for timed out. The worker may have finished it and
        // started the next one between the master's look at the scoreboard and the signal; that
        // one was cut short by the kill, not by its own running time.
        func lostStatus(_ job: UInt64) -> ResponseStatus { job == slot.timedOutJob ? .timeout : .workerDied }

        // Jobs it finished are pruned (ack: by its published count; result: by the replies the
        // caller drained first). What it still held is in its inbox, exactly: the message it last
        // took, with how far it got. Everything else outstanding is still in its queue.
        if configuration.replyMode == .ack {
            let done = scoreboard.jobsHandled(index)
            while slot.pruned < done, slot.outstanding.removeFirst() != nil { slot.pruned += 1 }
        }
        slot.pruned = 0
        var unstarted: [UnstartedJob] = []
        noteTaken(by: index)
        var tookMessage = false
        if let held = inboxes.held(index, arena: arena) {
            tookMessage = true
            for (position, job) in held.jobs.enumerated() {
                if !sharesQueue { _ = slot.outstanding.remove { $0.id == job.id } }
                if position < held.done {
                    // Finished: its reply was sent or left in the outbox, both delivered before
                    // this; still owed only if that went wrong (a reply queue removed meanwhile).
                    if configuration.replyMode == .result && awaitsReply(job.id) { lost.append(LostJob(id: job.id, status: .workerDied)) }
                } else if position < held.started {
                    // Running — or finished just as it died, its reply in the outbox but not yet
                    // marked done: answered then, so not named lost.
                    if configuration.replyMode == .ack || awaitsReply(job.id) { lost.append(LostJob(id: job.id, status: lostStatus(job.id))) }
                } else if let payload = job.payload {
                    unstarted.append(UnstartedJob(id: job.id, payload: payload))
                } else {
                    // A corrupt reference: its payload is unknown, so it is not run again.
                    lost.append(LostJob(id: job.id, status: .workerDied))
                }
            }
            inboxes.clear(index)
        }
        // This worker's last message is accounted for (above): if it was the last reader of a
        // removed queue, that queue's chunks come back now (or below, if it is this one's).
        for lost in lostQueues.indices { lostQueues[lost].readers.remove(pid) }
        // Gone only if IPC_STAT says so (EINVAL, EIDRM): a queue we may no longer read (its mode
        // changed from outside: EACCES) still holds its jobs and is still ours to remove.
        let queueStatus = try? slot.queue.status()
        let queueAlive = queueStatus != nil || !slot.queue.isRemoved()
        if !queueAlive {
            for job in slot.outstanding.removeAll() { lost.append(LostJob(id: job.id, status: .workerDied)) }
            // Its messages are gone, so no worker will release their chunks. A queue of its own
            // had no other reader; a shared queue's other workers may still be reading chunks of
            // messages they took before, so those wait until the last of them is reaped.
            let readers = sharesQueue ? Set(slots.indices.filter { $0 != index }.compactMap { slots[$0].pid }) : []
            lostQueues.append(LostQueue(queue: slot.queue.id, readers: readers, shared: sharesQueue,
                                        sent: sharesQueue ? sharedSent : nil))
            if sharedSent != nil, sharesQueue {
                // The replacement's record starts empty; the removed queue's is completed as its
                // other readers are reaped, and its losses are named then (below).
                sharedSent = SentMessages(queueBytes: queueBytes)
                if !readers.isEmpty {
                    logger.warning("acknowledged messages in the removed shared queue may be lost; they are named once its last reader has exited",
                                   metadata: ["queue": "\(slot.queue.id)", "readers": "\(readers.sorted())"])
                }
            }
            let replacement: MessageQueue?
            do {
                replacement = shuttingDown ? nil : try Self.createQueue(owner: configuration.workerUser)
            } catch {
                // Tried again when the slot's worker, respawned on the removed queue, exits on it.
                replacement = nil
                logger.log(throttledBy: &logThrottle, level: .error,
                           "queue of slot \(index) was removed from outside (ipcrm?) and no new one could be created; retrying at its next respawn",
                           kind: "\((error as? SystemError)?.errno.rawValue ?? 0)", metadata: ["old": "\(slot.queue.id)", "error": "\(error)"])
            }
            if let queue = replacement {
                _ = Self.applyCapacity(queue, wanted: queueBytes, limits: limits, logger: nil)
                logger.error("queue of slot \(index) was removed from outside (ipcrm?); created \(queue.id) in its place",
                             metadata: ["old": "\(slot.queue.id)"])
                slot.queue = queue
                slots[index].queue = queue
                if sharesQueue {
                    for other in slots.indices { slots[other].queue = queue }
                }
                recordState()
            }
        }

        // Of shared entries completing together, the newest's list is the one that counts: what
        // was queued before it went to a queue that is gone as well.
        var sharedQueueLost: Set<UInt64>? = nil
        lostQueues.removeAll { lost in
            guard lost.readers.isEmpty else { return false }
            if lost.shared { sharedQueueLost = lost.queuedSince }
            finish(lost)
            return true
        }

        let normal = status == .exited(WorkerExit.normal)
        let quickDeath = !normal && now - slot.startedAt < Self.quickDeath
        if shuttingDown {
            // Stopping, a slot with jobs left is respawned at once, so only a worker that died
            // before taking any (a handler that cannot start) counts towards the back-off: it
            // would be forked again and again until the deadline. One that died on a job made
            // progress, and the jobs behind it must not wait.
            slot.crashStreak = quickDeath && !tookMessage ? slot.crashStreak + 1 : 0
            logger.info("worker exited", metadata: ["slot": "\(index)", "pid": "\(pid)", "status": "\(status)"])
        } else if normal {
            slot.crashStreak = 0
            logger.info("worker exited", metadata: ["slot": "\(index)", "pid": "\(pid)", "status": "\(status)"])
        } else {
            slot.crashStreak = quickDeath ? slot.crashStreak + 1 : 0
            logger.error("worker died", metadata: [
                "slot": "\(index)", "pid": "\(pid)", "status": "\(status)",
                "lost": "\(lost.map(\.id))", "cause": "\(slot.timedOutJob != nil ? "job timeout" : "crash")",
            ])
        }
        if rollingCurrent == index { rollingCurrent = nil }
        if sharesQueue {
            // A retiring slot goes below, however its worker ended: the others read the queue.
            quitPending.remove(index)
        } else if !slot.retiring && !shuttingDown {
            // A quit asked of this worker (a rolling restart's, still to send or queued behind its
            // jobs) ended with it: its replacement starts with the current code. Kept, it would
            // restart that fresh worker too, while the restart went on to the next slot.
            quitPending.remove(index)
            removeQueuedQuits(slot.queue)
        }
        // A retiring worker with a queue of its own leaves its slot only once that queue holds no
        // job (a quit carries no bytes). It may have ended before its quit (a crash, --max-jobs, a
        // job timeout, a handler's exit 0) or taken an earlier quit with jobs queued behind it
        // (scaled down, up, and down again).
        // Its inbox is accounted for above, so a job still owed is a job still in the queue: the
        // queue's bytes say so even where the books cannot (replies lost with a removed reply
        // queue leave their jobs in `outstanding`).
        let jobsQueued = (queueStatus?.bytes ?? 0) > 0
        let drained = sharesQueue || !jobsQueued
        if slot.retiring && !shuttingDown && !drained {
            // A replacement finishes the queue, then quits.
            quitPending.insert(index)
        } else if slot.retiring && !shuttingDown {
            // A queue of its own that can no longer be read (its mode changed from outside) may
            // still hold jobs: removed with it, they are named lost, so their clients are answered.
            if queueStatus == nil && !sharesQueue {
                for job in slot.outstanding.removeAll() { lost.append(LostJob(id: job.id, status: .workerDied)) }
            }
            slots[index] = slot
            removeRetired(index)
            recordState()
            return WorkerLoss(slot: index, lost: lost, unstarted: unstarted, sharedQueueLost: sharedQueueLost)
        }
        if shuttingDown {
            // Acknowledged work still in its queue must be handled before the pool stops. A shared
            // queue is not tracked per job: a job left in it (jobs taken back from a dead worker
            // may sit behind the quits) gets a worker, which is then sent its own quit. So do the
            // jobs it left unstarted, which are sent again and must not wait, with no worker left
            // to read them, for the deadline. Quits left over (a worker that ended without taking
            // one) carry no bytes and get none: counting them respawned and re-quit workers in a
            // loop until the deadline.
            let pending = jobsQueued || !unstarted.isEmpty
            if queueAlive && pending && !slot.removed {
                slot.restarts += 1
                slot.respawnAt = now + respawnDelay(slot)
            }
        } else {
            slot.restarts += 1
            let delay = respawnDelay(slot)
            slot.respawnAt = now + delay
            // A crash back-off (up to 10 s): the jobs already in its queue would wait it out while
            // another worker could run them. Taken back, behind its inbox's, for the master to
            // send elsewhere: nothing goes to a workerless slot while another has a worker.
            // (Not a retiring slot's: its replacement is to finish its queue and quit.)
            if delay > 0 && !sharesQueue && jobsQueued && !slot.retiring
                && slots.contains(where: { $0.index != index && $0.accepting && $0.pid != nil }) {
                let (taken, corrupt) = takeQueuedJobs(from: slot.queue, slot: &slot)
                lost += corrupt.map { LostJob(id: $0, status: .workerDied) }
                if !taken.isEmpty {
                    logger.info("jobs queued for slot \(index) taken back for other workers during its back-off",
                                metadata: ["jobs": "\(taken.count)"])
                }
                unstarted += taken
            }
        }
        slot.terminatedAt = nil
        slot.timedOutJob = nil
        slots[index] = slot
        return WorkerLoss(slot: index, lost: lost, unstarted: unstarted, sharedQueueLost: sharedQueueLost)
    }

    /// Takes every job message out of `queue` (IPC_NOWAIT; quits stay, for the workers they are
    /// for): its jobs, in queue order, as unstarted ones (their payloads copied, spilled ones'
    /// chunks given back), forgotten by `slot`'s books when it owns the queue. A message that
    /// cannot be taken ends the taking: what is left waits for a worker, as before. `corrupt`:
    /// jobs whose spilled payload reference is out of range, which cannot be run.
    private func takeQueuedJobs(from queue: MessageQueue, slot: inout WorkerSlot) -> (jobs: [UnstartedJob], corrupt: [UInt64]) {
        var jobs: [UnstartedJob] = []
        var corrupt: [UInt64] = []
        drainJobs(from: queue, into: scratch, quitsToo: false) { job, text in
            if !sharesQueue { _ = slot.outstanding.remove { $0.id == job.id } }
            if let spill = job.spill {
                if let payload = arena?.payload(spill) {
                    jobs.append(UnstartedJob(id: job.id, payload: Array(payload)))
                } else {
                    corrupt.append(job.id)
                }
                arena?.drop(spill.chunk)
            } else {
                jobs.append(UnstartedJob(id: job.id, payload: job.payloadBytes(in: text)))
            }
        }
        return (jobs, corrupt)
    }

    /// Empties `queue` of job messages without waiting (with `quitsToo`, of every message),
    /// calling `body` with each job, in queue order, and the message text it lies in. A message
    /// too large for `buffer` (E2BIG) is taken cut, and what of it fits decoded: left at the head
    /// it would end the draining, and the jobs behind it would be missed.
    /// At most one full queue's worth of messages (no queue holds more than its byte capacity in
    /// messages): the queue is writable by the workers' user, and messages sent as fast as they
    /// are taken must not hold the master here, nor grow what it keeps, without end.
    private func drainJobs(from queue: MessageQueue, into buffer: MessageBuffer, quitsToo: Bool,
                           _ body: (JobCodec.Job, UnsafeRawBufferPointer) -> Void) {
        let type = quitsToo ? 0 : JobCodec.jobType
        for _ in 0..<max(queueBytes, 1) {
            let received: (type: Int, length: Int)?
            do {
                received = try queue.receive(into: buffer, type: type, nowait: true)
            } catch let error as SystemError where error.errno == .argListTooLong {
                received = (try? queue.receiveTruncating(into: buffer, type: type)) ?? nil
            } catch {
                return
            }
            guard let (messageType, length) = received else { return }
            guard messageType == JobCodec.jobType else { continue }
            let text = UnsafeRawBufferPointer(buffer.text)
            var offset = 0
            while let job = JobCodec.decodeJob(text, length: length, at: offset) {
                offset = job.end
                body(job, text)
            }
        }
    }

    /// Every job still waiting in a job queue, taken out in queue order (see `takeQueuedJobs`):
    /// for the master to hold and send again. The reply queue was removed, and the workers, who
    /// would send their replies to it, are being restarted; jobs no worker has taken yet were
    /// never run, and are run later instead of being answered as lost.
    /// (Jobs with a corrupt payload reference are left out: not kept, they are answered as lost.)
    func takeBackQueuedJobs() -> [UnstartedJob] {
        var jobs: [UnstartedJob] = []
        var seen = Set<Int32>()
        for index in slots.indices where !slots[index].removed && seen.insert(slots[index].queue.id).inserted {
            jobs += takeQueuedJobs(from: slots[index].queue, slot: &slots[index]).jobs
        }
        return jobs
    }

    /// Receives what `takeQueuedJobs` takes back (allocated on first use).
    private lazy var scratch = MessageBuffer(capacity: limits.maxMessageBytes)

    /// The crash-loop back-off after `slot.crashStreak` quick deaths in a row: none without one,
    /// 100 ms after the first, doubling up to 10 s. Logged when there is one.
    private func respawnDelay(_ slot: WorkerSlot) -> Int64 {
        guard slot.crashStreak > 0 else { return 0 }
        let delay = min(Int64(100_000_000) << min(slot.crashStreak - 1, 7), 10_000_000_000)
        logger.warning("worker of slot \(slot.index) is crash-looping; respawn in \(delay / 1_000_000) ms",
                       metadata: ["deaths": "\(slot.crashStreak)"])
        return delay
    }

    // MARK: Scaling and rolling restarts

    /// Slots still to restart (SIGHUP), and the one whose quit has been queued.
    @exclusivity(unchecked) private var rollingPending: [Int] = []
    /// Slots a rolling restart had still to restart when they were retired: kept (scaled back
    /// up), they go back on its list.
    @exclusivity(unchecked) private var rollingSetAside: Set<Int> = []
    @exclusivity(unchecked) private var rollingCurrent: Int? = nil
    /// Slots whose quit message found the queue full; retried on every tick.
    @exclusivity(unchecked) private var quitPending: Set<Int> = []

    var isRollingRestart: Bool { rollingCurrent != nil || !rollingPending.isEmpty }

    /// Workers that take new work (the pool's size as an operator sees it).
    var activeCount: Int { slots.filter(\.accepting).count }

    /// Workers that run no job and have none waiting, for `--max-workers`' look once a second. One
    /// still starting counts (it takes work in a moment). With one shared queue, the messages
    /// waiting in it are taken from the idle workers that will run them (one IPC_STAT).
    func spareWorkers() -> Int {
        let candidates = slots.filter { $0.accepting && $0.pid != nil && scoreboard.state($0.index) != .busy }
        guard sharesQueue else { return candidates.filter { isIdle($0.index) }.count }
        let waiting = slots.first.flatMap { try? $0.queue.status().messages } ?? 0
        return max(0, candidates.count - waiting)
    }

    /// The slot's worker runs no job and has none outstanding (with per-worker queues, none
    /// queued for it either).
    private func isIdle(_ index: Int) -> Bool {
        slots[index].pid != nil && scoreboard.state(index) != .busy && slots[index].outstanding.isEmpty
    }

    /// A slot that takes work is waiting for its worker (a respawn, maybe in a crash back-off).
    var awaitsWorker: Bool { slots.contains { $0.accepting && $0.pid == nil } }

    /// Replaces every worker, one at a time: each gets a quit behind its queued work, and the
    /// replacement takes the same queue, so nothing queued is lost.
    func startRollingRestart() {
        rollingPending = slots.indices.filter { slots[$0].accepting }
        rollingSetAside = []
        logger.info("rolling restart of \(rollingPending.count) workers")
    }

    /// A retired slot whose queue holds no job leaves: its queue is removed (a shared one stays),
    /// and removed slots at the end of the list are dropped. The caller records the state.
    private func removeRetired(_ index: Int) {
        if !sharesQueue {
            // Drained as a rule, and its worker gone; but a queue that could not be read (its
            // mode changed from outside) goes with jobs in it, whose chunks nobody would release.
            arena?.dropAll(sentTo: slots[index].queue.id)
            try? slots[index].queue.remove()
        }
        quitPending.remove(index)
        rollingSetAside.remove(index)
        slots[index].removed = true
        slots[index].respawnAt = nil
        while let last = slots.last, last.removed { slots.removeLast() }
    }

    /// Grows or shrinks the pool to `target` workers (at least 1). New slots get a new queue, in
    /// the place of a removed one if there is one, and their workers from `respawnDue` in the
    /// turns that follow; removed ones stop taking work, finish their queue, and exit. Returns the
    /// number of slots taking work afterwards: short of the target when a queue could not be
    /// created or no slot was left (said in the log).
    /// `spareFirst` (the dynamic sizer's shrink): retire spare slots before busy ones
    /// (`slotToRetire`); else the highest taking work, the newest, as `scale N` and SIGTTOU do.
    @discardableResult
    func scale(to requested: Int, spareFirst: Bool = false) -> Int {
        let target = min(max(requested, 1), Self.maxWorkers)
        var active = activeCount
        let now = monotonicNanoseconds()
        var unrecorded = 0
        while active < target {
            if let index = slots.indices.last(where: { slots[$0].retiring && !slots[$0].removed }) {
                // Un-retire a slot still draining rather than creating a queue. Its quit stays
                // pending if a rolling restart asked for it too (that restart waits for it).
                slots[index].retiring = false
                if index != rollingCurrent { quitPending.remove(index) }
                if rollingSetAside.remove(index) != nil { rollingPending.append(index) }
                logger.info("scale up: slot \(index) kept", metadata: ["workers": "\(active + 1)"])
            } else {
                // Slot indices index the shared mappings (scoreboard, inboxes, rings), sized for
                // `maxWorkers`: a slot removed in the middle (scaled down below one that was kept)
                // is taken again, or indices would creep up with every such cycle. `spawn` resets
                // the mappings' state for the index.
                let hole = slots.firstIndex(where: \.removed)
                guard hole != nil || slots.count < Self.maxWorkers else {
                    logger.error("scale up stopped: no slot left", metadata: ["slots": "\(slots.count)", "max": "\(Self.maxWorkers)"])
                    break
                }
                let queue: MessageQueue
                do {
                    if sharesQueue, let existing = slots.first?.queue {
                        queue = existing
                    } else {
                        queue = try Self.createQueue(owner: configuration.workerUser)
                        _ = Self.applyCapacity(queue, wanted: queueBytes, limits: limits, logger: nil)
                    }
                } catch {
                    logger.error("scale up failed", metadata: ["error": "\(error)"])
                    break
                }
                let index = hole ?? slots.count
                let slot = WorkerSlot(index: index, queue: queue)
                if hole != nil { slots[index] = slot } else { slots.append(slot) }
                // A reused index still shows its last worker's job times until the fork resets
                // it: batch sizing (`Master.updateRecordLimit`) reads them for accepting slots.
                scoreboard.reset(index, pid: 0)
                // Its worker is started by `respawnDue`, at most `startsPerTurn` per loop turn:
                // forked here, all of them in one turn, `scale 1000` held every client for a
                // second. The slot takes no work while another has a worker (`Dispatcher`).
                slots[index].respawnAt = now
                logger.info("scale up: added slot \(index)", metadata: ["workers": "\(active + 1)"])
                // The state file names the new queues before any of their workers is forked
                // (after this call), and while this loop runs at most 64 queues are unrecorded,
                // microseconds' worth: recorded after each, `scale 1000` rewrote the growing
                // file a thousand times (a second of the loop's time with the forks).
                unrecorded += 1
                if !sharesQueue && unrecorded == 64 {
                    recordState()
                    unrecorded = 0
                }
            }
            active += 1
        }
        while active > target {
            // Spare: no worker yet (a respawn to come), or an idle one.
            let chosen = Self.slotToRetire(count: slots.count, accepting: { self.slots[$0].accepting }, spare: { index in
                spareFirst && (self.slots[index].pid == nil || self.isIdle(index))
            })
            guard let index = chosen else { break }
            slots[index].retiring = true
            if rollingPending.contains(index) {
                rollingPending.removeAll { $0 == index }
                rollingSetAside.insert(index)
            }
            // A rolling restart's current slot has its quit already: one more would end its
            // replacement too if the slot is kept (scaled back up).
            if index != rollingCurrent { quitPending.insert(index) }
            active -= 1
            logger.info("scale down: retiring slot \(index) after its queued work", metadata: ["workers": "\(active)"])
            // No worker (a fork to retry, a crash back-off) and no job queued: nothing to finish,
            // so nothing to fork a worker for only to tell it to quit.
            if slots[index].pid == nil, index != rollingCurrent,
               sharesQueue || (try? slots[index].queue.status())?.bytes == 0 {
                removeRetired(index)
            }
        }
        recordState()
        return active
    }

    /// The slot the dynamic sizer's shrink retires: the highest spare one (taking work, and no
    /// worker running a job of it), as PHP-FPM ends only idle children; the highest taking work
    /// only when none is. Retiring a busy one left the spare count as it was, so the sizer's next
    /// looks retired more, down to the floor, with the long jobs still running — then grew back.
    /// (An operator's `scale N` retires the highest: a busy slot finishes its job first, and the
    /// idle ones stay to serve.)
    static func slotToRetire(count: Int, accepting: (Int) -> Bool, spare: (Int) -> Bool) -> Int? {
        (0..<count).last { accepting($0) && spare($0) } ?? (0..<count).last(where: accepting)
    }

    /// Restarts every live worker (SIGTERM: finish the job in hand, then exit; the slot respawns).
    func restartAll() {
        let now = monotonicNanoseconds()
        restarting = [:]
        for index in slots.indices { if let pid = slots[index].pid { restarting[pid] = index } }
        for (pid, index) in restarting { askToFinish(pid, slot: index, now: now) }
    }

    /// SIGTERM (finish the job in hand, then exit), repeated by each tick at most every 0.5 s
    /// until the worker is reaped, but only while it is not running a job: a worker idle in
    /// msgrcv when the signal lands just before it blocks sees it only when a message comes,
    /// while a busy one has it counted already — and every repeat would cut short a sleep, a
    /// poll or a SysV call of its handler with EINTR (SA_RESTART does not restart those).
    private func askToFinish(_ pid: pid_t, slot index: Int, now: Int64) {
        if let asked = termAskedAt[pid] {
            guard now - asked >= 500_000_000, scoreboard.state(index) != .busy else { return }
        }
        termAskedAt[pid] = now
        ChildProcess.signal(pid, SIGTERM)
    }

    /// Advances rolling restarts and retries quit messages that found a full queue.
    func tick(buffer: MessageBuffer) {
        let now = monotonicNanoseconds()
        for (pid, index) in restarting { askToFinish(pid, slot: index, now: now) }
        if rollingCurrent == nil, !rollingPending.isEmpty {
            let index = rollingPending.removeFirst()
            if slots.indices.contains(index), slots[index].accepting, slots[index].pid != nil {
                rollingCurrent = index
                quitPending.insert(index)
            }
        }
        if !quitPending.isEmpty && sharesQueue {
            // A quit message in a shared queue would stop whichever worker takes it: ask this one
            // with SIGTERM instead.
            for index in quitPending {
                guard slots.indices.contains(index), let pid = slots[index].pid else { continue }
                askToFinish(pid, slot: index, now: now)
            }
        } else if !quitPending.isEmpty {
            // A slot waiting for its replacement worker gets its quit once that worker runs.
            let waiting = quitPending.filter { slots.indices.contains($0) && slots[$0].pid == nil && !slots[$0].removed }
            let retry = sendQuit(to: Array(quitPending.subtracting(waiting)), buffer: buffer)
            quitPending = Set(retry).union(waiting)
        }
        if rollingCurrent == nil && rollingPending.isEmpty && rollingWasActive {
            rollingWasActive = false
            logger.info("rolling restart complete")
        }
        if rollingCurrent != nil || !rollingPending.isEmpty { rollingWasActive = true }
    }

    @exclusivity(unchecked) private var rollingWasActive = false
    /// When each worker asked to finish (`askToFinish`) was last sent SIGTERM, until reaped.
    @exclusivity(unchecked) private var termAskedAt: [pid_t: Int64] = [:]
    /// `restartAll`: the workers still to go, with their slots.
    @exclusivity(unchecked) private var restarting: [pid_t: Int] = [:]

    /// True while something needs another tick soon (quit retries, a restart in progress).
    var needsTick: Bool { !quitPending.isEmpty || isRollingRestart || rollingWasActive || !restarting.isEmpty }

    /// How soon the loop must tick, without other events, while `needsTick`: enough for SIGTERMs
    /// repeated every 0.5 s and for quits the kernel refused (ENOMEM) or that wait for a queue
    /// full by message count (a quit has no bytes, so a queue full of bytes still takes it).
    /// Everything else a restart waits for wakes the loop: a worker's exit (SIGCHLD), and the
    /// respawn that a slot's pending quit waits for, which the same turn's tick follows. A 5 ms
    /// tick kept the master waking 200 times a second for as long as a worker ran a long job or
    /// sat in a crash back-off (up to 10 s).
    static let tickInterval: Int64 = 100_000_000

    /// Stops rolling restarts and scaling (shutdown takes over).
    func cancelPendingChanges() {
        rollingPending = []
        rollingSetAside = []
        rollingCurrent = nil
        rollingWasActive = false
        quitPending = []
        restarting = [:]
    }

    /// Workers forked in one loop turn at most. A fork costs the master 0.2–1 ms here (more as
    /// it grows); a thousand due at once (`scale 1000`, a pool killed by the OOM killer) are
    /// started over a hundred-odd turns, with clients served in between, instead of in one.
    static let startsPerTurn = 8
    /// Starts left in this loop turn: `respawnDue` has three callers per turn (a command, the
    /// reaps, the timers), which share the budget.
    @exclusivity(unchecked) private var startsLeft = startsPerTurn

    /// The master's loop begins a turn.
    @inline(__always)
    func beginTurn() {
        startsLeft = Self.startsPerTurn
        arena?.beginTurn()
    }

    /// Forks replacements whose back-off has elapsed, and new slots' first workers, while this
    /// turn's budget (`startsPerTurn`) lasts. Returns the earliest pending start: now, if some
    /// due ones have to wait for the next turn.
    func respawnDue(now: Int64) -> Int64? {
        var next: Int64? = nil
        for index in slots.indices where slots[index].pid == nil {
            guard let at = slots[index].respawnAt else { continue }
            if at <= now {
                guard startsLeft > 0 else {
                    next = min(next ?? .max, now)
                    continue
                }
                startsLeft -= 1
                // A slot added by scaling has had no worker yet (`startedAt` 0).
                let firstStart = slots[index].startedAt == 0
                do { try spawn(index) } catch {
                    if firstStart {
                        logger.error("scale up: could not start the worker of slot \(index); retrying in 1 s", metadata: ["error": "\(error)"])
                    } else {
                        logger.error("respawn failed; retrying in 1 s", metadata: ["slot": "\(index)", "error": "\(error)"])
                    }
                    slots[index].respawnAt = now + 1_000_000_000
                    next = min(next ?? .max, now + 1_000_000_000)
                }
            } else {
                next = min(next ?? .max, at)
            }
        }
        return next
    }

    /// The job slot `index`'s worker is running and when it started, if it is busy. The worker
    /// may end this job and begin another between these loads: the start is that job's only if
    /// the same job is still running after it was read.
    private func runningJob(_ index: Int) -> (job: UInt64, started: Int64)? {
        guard scoreboard.state(index) == .busy else { return nil }
        let job = scoreboard.job(index)
        let started = scoreboard.jobStartedNanoseconds(index)
        guard scoreboard.job(index) == job, scoreboard.state(index) == .busy else { return nil }
        return (job, started)
    }

    /// Jobs finished by worker processes that have ended, since the start.
    @exclusivity(unchecked) private var jobsHandledByEndedWorkers: UInt64 = 0

    /// Jobs finished by every worker process since the start, live ones and removed slots' too
    /// (status: `jobs_handled`).
    var jobsHandled: UInt64 {
        slots.reduce(jobsHandledByEndedWorkers) { $1.pid == nil ? $0 : $0 &+ scoreboard.jobsHandled($1.index) }
    }

    /// Jobs logged as slow since the start (status: `slow_jobs`).
    @exclusivity(unchecked) private(set) var slowJobs = 0

    /// `--slow-job`: logs each job running longer, once, with its worker and age; the worker is
    /// left alone (`--job-timeout` is the limit that acts).
    func reportSlowJobs(now: Int64) {
        guard let threshold = configuration.slowJob else { return }
        let limit = Int64(threshold * 1e9)
        for index in slots.indices {
            guard let pid = slots[index].pid, let (job, started) = runningJob(index),
                  now - started >= limit, slots[index].slowReportedJob != job else { continue }
            slots[index].slowReportedJob = job
            slowJobs += 1
            logger.warning("slow job: running longer than --slow-job", metadata: [
                "slot": "\(index)", "pid": "\(pid)", "job": "\(job)",
                "seconds": "\(Double((now - started) / 1_000_000) / 1000)", "slow-job": "\(threshold)",
            ])
        }
    }

    /// Enforces `--job-timeout`: SIGTERM a worker whose job is too old, SIGKILL it after a grace.
    func enforceJobTimeout(now: Int64) {
        guard let timeout = configuration.jobTimeout else { return }
        let limit = Int64(timeout * 1e9)
        for index in slots.indices {
            guard let pid = slots[index].pid else { continue }
            if let termAt = slots[index].terminatedAt {
                guard now - termAt >= Self.termGrace else { continue }
                if let running = runningJob(index)?.job, running != slots[index].timedOutJob {
                    // The timed-out job ended as the SIGTERM came and the worker took its next:
                    // that one is not killed for the other's time. The SIGTERM has it leave after
                    // this job, which runs under its own timeout (and a death in it is not the
                    // other's timeout).
                    slots[index].terminatedAt = nil
                    slots[index].timedOutJob = nil
                    continue
                }
                ChildProcess.signal(pid, SIGKILL)
                continue
            }
            guard let (job, started) = runningJob(index), now - started >= limit else { continue }
            // Signalled first: the log line's write is time in which the job could end and the
            // worker take its next.
            slots[index].timedOutJob = job
            slots[index].terminatedAt = now
            ChildProcess.signal(pid, SIGTERM)
            logger.warning("job exceeded --job-timeout; terminating its worker", metadata: [
                "slot": "\(index)", "pid": "\(pid)", "job": "\(job)", "timeout": "\(timeout)",
            ])
        }
    }

    /// Queues a quit behind each live worker's pending work. Returns the slots to try again: the
    /// queue was full, or the send failed (ENOMEM, a queue removed or its mode changed from
    /// outside: the slot's queue may be replaced by the next try). A quit given up on would leave
    /// a rolling restart waiting for that slot, and a retiring slot running, for good.
    func sendQuit(to indices: [Int], buffer: MessageBuffer) -> [Int] {
        var retry: [Int] = []
        for index in indices where slots.indices.contains(index) && slots[index].pid != nil {
            do {
                #if DEBUG
                if DebugFailpoint.quits.nextCallFails() { throw SystemError("msgsnd", .noMemory) }
                #endif
                if try !slots[index].queue.send(buffer, type: JobCodec.quitType, length: 0, nowait: true) {
                    retry.append(index)
                }
            } catch {
                retry.append(index)
                let errno = (error as? SystemError).map { "\($0.errno.rawValue)" } ?? ""
                logger.log(throttledBy: &logThrottle, level: .warning, "could not queue a quit; trying again", kind: errno,
                           metadata: ["slot": "\(index)", "error": "\(error)"])
            }
        }
        return retry
    }

    /// Takes the quits out of a queue whose worker is gone (jobs stay: only type 2 is read). The
    /// replacement is not forked yet, so nothing else reads it now.
    ///
    /// The corresponding C function is `msgrcv` (IPC_NOWAIT, msgtyp 2).
    private func removeQueuedQuits(_ queue: MessageQueue) {
        // A quit carries no text; more than a few in one queue would be somebody else's.
        for _ in 0..<16 {
            guard (try? queue.receive(into: quitBuffer, type: JobCodec.quitType, nowait: true)) != nil else { return }
        }
    }

    /// Room for a quit (no text) and a few bytes of anything else of that type.
    private let quitBuffer = MessageBuffer(capacity: 64)

    /// Lines of retried failures (quit sends every tick, a queue recreated at each respawn):
    /// each text at most once a second.
    @exclusivity(unchecked) private var logThrottle = LogThrottle()

    func signalAll(_ signo: Int32) {
        for pid in livePIDs { ChildProcess.signal(pid, signo) }
    }

    /// Forced stop: SIGKILL every worker and reap them, polling for at most `deadline` seconds.
    /// A worker SIGKILL cannot end at once (uninterruptible sleep, e.g. on a hung NFS mount) is
    /// logged and left to init; the queues are removed anyway, so it gets EIDRM when it wakes.
    /// Returns the jobs the killed workers held and had not finished (from their inboxes, as
    /// `workerExited` reads them), for the caller to name: `started` had begun to run.
    @discardableResult
    /// `waited`: seconds the caller already gave them since an earlier SIGKILL (for the log).
    func killAndReapAll(deadline: Double = 5, waited: Double = 0) -> [(id: UInt64, started: Bool)] {
        var pending: [(index: Int, pid: pid_t)] = []
        for index in slots.indices {
            guard let pid = slots[index].pid else { continue }
            ChildProcess.signal(pid, SIGKILL)
            pending.append((index, pid))
        }
        let killed = pending.map(\.index)
        let end = monotonicNanoseconds() + Int64(deadline * 1e9)
        while !pending.isEmpty {
            pending.removeAll { index, pid in
                let status: String
                switch ChildProcess.reap(pid) {
                case .success(nil): return false
                case .success(let exit?): status = "\(exit)"
                case .failure(let error): status = "? (\(error))"   // reaped already: gone
                }
                logger.info("worker killed", metadata: ["slot": "\(index)", "pid": "\(pid)", "status": "\(status)"])
                slots[index].pid = nil
                return true
            }
            if pending.isEmpty || monotonicNanoseconds() >= end { break }
            usleep(1_000)
        }
        for (index, pid) in pending {
            logger.error("worker still alive after SIGKILL; not waiting for it",
                         metadata: ["slot": "\(index)", "pid": "\(pid)", "waited_s": "\(waited + deadline)"])
            slots[index].pid = nil
        }
        // Removed shared queues still waiting for readers: those readers are gone now (or past
        // waiting for), so what they took is final and the rest is named.
        for index in slots.indices { noteTaken(by: index) }
        for lost in lostQueues { finish(lost) }
        lostQueues.removeAll()
        var unfinished: [(id: UInt64, started: Bool)] = []
        for index in killed {
            guard let held = inboxes.held(index, arena: arena) else { continue }
            for (position, job) in held.jobs.enumerated() where position >= held.done {
                unfinished.append((job.id, position < held.started))
            }
            inboxes.clear(index)
        }
        return unfinished
    }

    /// Ack mode, shared queue: a reaped worker took every message up to its last one, from the
    /// current queue or from one removed since (ids are never in both).
    private func noteTaken(by index: Int) {
        guard sharedSent != nil, let first = inboxes.lastTakenFirstJob(index) else { return }
        sharedSent?.taken(firstJob: first)
        for lost in lostQueues.indices { lostQueues[lost].sent?.taken(firstJob: first) }
    }

    /// A removed queue no worker reads any more: its arena chunks come back, and (ack mode,
    /// shared queue) the acknowledged jobs it took with it are named.
    private func finish(_ lost: LostQueue) {
        arena?.dropAll(sentTo: lost.queue)
        guard let gone = lost.sent?.notTaken else { return }
        if gone.isEmpty {
            logger.info("the removed shared queue held no acknowledged message", metadata: ["queue": "\(lost.queue)"])
        } else {
            logger.error("acknowledged messages lost with the removed shared queue",
                         metadata: ["queue": "\(lost.queue)", "count": "\(gone.count)", "jobs": "\(gone)"])
        }
    }

    /// Every worker reaped: empties the job queues (IPC_NOWAIT) and returns the ids of the jobs
    /// still in them, giving their arena chunks back.
    func takeUnrunJobs(buffer: MessageBuffer) -> [UInt64] {
        var ids: [UInt64] = []
        for queue in jobQueues {
            drainJobs(from: queue, into: buffer, quitsToo: true) { job, _ in
                ids.append(job.id)
                if let spill = job.spill { arena?.drop(spill.chunk) }
            }
        }
        return ids
    }

    /// Result mode, the replies in flight were lost (the reply queue removed or failed) and their
    /// requests answered: no slot waits for them any more.
    func forgetRepliesInFlight() {
        for index in slots.indices { _ = slots[index].outstanding.removeAll() }
    }

    /// The reply queue was removed from outside: creates another and records it (state file).
    /// Workers started from now on send to it; the caller restarts the running ones.
    func replaceReplyQueue() throws -> (old: Int32?, new: Int32) {
        let queue = try Self.createQueue(owner: configuration.workerUser)
        _ = Self.applyCapacity(queue, wanted: queueBytes, limits: limits, logger: nil)
        let old = replyQueue?.id
        replyQueue = queue
        recordState()
        return (old, queue.id)
    }

    /// Removes every queue. Only the master calls this, once, after its workers are reaped.
    func removeQueues() {
        var removed: [Int32] = []
        for queue in allQueues {
            do {
                try queue.remove()
                removed.append(queue.id)
            } catch {
                logger.warning("could not remove queue", metadata: ["queue": "\(queue.id)", "error": "\(error)"])
            }
        }
        // The operator's answer to "did it leave anything in ipcs -q?", after a failed start too.
        logger.info("queues removed", metadata: ["queues": "\(removed)"])
        doorbell?.close()
        // Only our own record: a master that failed to start (its socket was live) must not
        // remove the record of one started beside it at the same moment, which wrote after ours
        // — without it, that master's queues could not be found after a SIGKILL. (That master
        // writes its record again once its socket is bound, and a later start finds it there
        // and refuses before recording itself: `Supervisor.init`.)
        // Ours by its token only: an unreadable record (another user's, damaged) is not ours.
        if PoolState.read(from: configuration.stateFilePath)?.isOwn == true { unlink(configuration.stateFilePath) }
    }
}
