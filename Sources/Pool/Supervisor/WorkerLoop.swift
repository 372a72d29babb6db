import Glibc
import Logging

/// Everything a worker process needs, captured by the master before fork.
struct WorkerEnvironment {
    var slot: Int
    var queue: MessageQueue
    /// Result mode: where replies go. The doorbell wakes the master (for replies, and for room in
    /// the queues when it holds jobs).
    var replyQueue: MessageQueue?
    var doorbell: EventFD?
    var scoreboard: Scoreboard
    /// Where the worker receives, readable by the master after the worker is gone.
    var inboxes: WorkerInboxes
    /// Result mode: where the worker builds its reply batch, readable by the master after it is gone.
    var outboxes: ReplyOutboxes?
    /// Where spilled payloads are; the worker releases each chunk once it has copied it.
    var arena: PayloadArena?
    /// Result mode: where large replies go (the slot's ring), if anywhere.
    var replyRings: ReplyRings?
    /// Text capacity of one queue message (`msgmax`).
    var messageCapacity: Int
    /// `--batch-time`: how long finished replies may wait to be sent together (0: never).
    var batchNanoseconds: Int64
    /// Jobs to handle before exiting for recycling (`nil` = forever).
    var jobLimit: Int?
    /// The policy to switch to (`--worker-sched`); `nil`: keep the master's.
    var scheduling: PoolConfiguration.WorkerScheduling?
    /// `--user`: who the worker becomes before its handler starts; `nil`: stay the master's user.
    var user: WorkerUser?
    var makeHandler: MessageHandlerFactory
    var logger: Logger
    /// Descriptors the worker keeps; every other inherited fd (listener, clients) is closed.
    var keepDescriptors: [Int32]
}

/// Worker exit codes the master interprets.
enum WorkerExit {
    /// Quit on request, or recycled after `--max-jobs`.
    static let normal: Int32 = 0
    /// Its queue disappeared (IPC_RMID by someone): the master recreates it.
    static let queueGone: Int32 = 3
    /// An unexpected error receiving or replying.
    static let ipcFailure: Int32 = 4
    /// It could not shed the master's descriptors or install its SIGTERM handler; running on
    /// would hold clients' sockets open or die on the master's first retire request.
    static let setupFailure: Int32 = 5
}

/// The worker's main loop: receive from its own queue (blocking — a worker may block, the master
/// never does), run the handler on each job of the message, reply if asked. Never returns; ends
/// with `_exit`, so nothing of the master's (atexit, deinit, the socket file, queues) is touched.
func runWorker(_ env: WorkerEnvironment) -> Never {
    // The fork window checked that the master was alive after asking for its death signal.
    let master = getppid()
    MasterLogOutput.becomeWorker()
    #if DEBUG
    // Debug builds only: a worker slow to shed the master's descriptors (descheduled on a busy
    // machine), so a test can close a connection while a copy of it lives here.
    if let delay = getenv("POOL_DEBUG_WORKER_CLOSE_DELAY_MS").flatMap({ UInt32(String(cString: $0)) }) {
        usleep(delay * 1000)
    }
    #endif
    do { try ChildProcess.closeDescriptors(except: env.keepDescriptors) } catch {
        env.logger.critical("worker cannot close the master's descriptors; exiting", metadata: ["error": "\(error)"])
        ChildProcess.exitImmediately(WorkerExit.setupFailure)
    }
    ChildProcess.setName("pool-worker")
    // A forked child starts with the master's policy; switch only when one was chosen.
    if let scheduling = env.scheduling {
        do { try ChildProcess.setBatchScheduling(scheduling == .batch) } catch {
            env.logger.warning("cannot switch the worker's scheduling policy; keeping the master's",
                               metadata: ["wanted": "\(scheduling.rawValue)", "error": "\(error)"])
        }
    }
    #if DEBUG
    // Debug builds only: widens the window between the fork and the SIGTERM and SIGUSR1
    // handlers, so a test can signal a worker inside it (`POOL_DEBUG_WORKER_START_DELAY_MS`).
    if let delay = getenv("POOL_DEBUG_WORKER_START_DELAY_MS").flatMap({ UInt32(String(cString: $0)) }) {
        usleep(delay * 1000)
    }
    #endif
    // Its first reopen of the log file runs as the master's user; later ones need the file
    // writable by the worker's (README: --user).
    LogFile.enableReopenOnSignal()
    if let user = env.user {
        do { try ChildProcess.become(uid: user.uid, gid: user.gid, groups: user.groups) } catch {
            env.logger.critical("worker cannot become \(user); exiting", metadata: ["error": "\(error)"])
            ChildProcess.exitImmediately(WorkerExit.setupFailure)
        }
        user.exportEnvironment()
        // The uid change cleared the death signal: asked for again at once, so a master killed
        // while the handler factory runs (it may block) still takes this worker.
        if !ChildProcess.renewParentDeathSignal(SIGKILL, parent: master) {
            env.logger.error("the master died while the worker started; exiting")
            ChildProcess.exitImmediately(WorkerExit.setupFailure)
        }
    }
    // SIGTERM asks for a graceful exit: finish the job in hand, then leave (jobs of the message
    // not yet started are run elsewhere by the master). That is how the master retires one
    // particular worker when several share a queue (a quit message would go to whichever worker
    // takes it). A worker stuck in a job is SIGKILLed after a grace period.
    do { try Signals.install([SIGTERM]) } catch {
        env.logger.critical("worker cannot install its SIGTERM handler; exiting", metadata: ["error": "\(error)"])
        ChildProcess.exitImmediately(WorkerExit.setupFailure)
    }
    // Blocked since the fork (a SIGTERM sent while the worker started waited here, not killed it).
    Signals.unblock(SIGTERM)
    let pid = getpid()
    let slot = env.slot
    env.scoreboard.setPID(slot, pid)
    var logger = env.logger
    logger[metadataKey: "slot"] = "\(slot)"
    let context = WorkerContext(slot: slot, pid: pid, logger: logger)
    let handler = env.makeHandler(context)
    // A change of credentials (--user, or a factory dropping to a service user itself) cleared
    // the master's death signal: asked for again, so a SIGKILLed master takes its workers.
    if !ChildProcess.renewParentDeathSignal(SIGKILL, parent: master) {
        logger.error("the master died while the worker started; exiting")
        ChildProcess.exitImmediately(WorkerExit.setupFailure)
    }
    let inbox = env.inboxes.buffer(slot)
    var replies = env.replyQueue.map {
        ReplyBatch(queue: $0, doorbell: env.doorbell!, scoreboard: env.scoreboard, outboxes: env.outboxes!, slot: slot,
                   budget: env.batchNanoseconds, rings: env.replyRings, logger: logger)
    }
    let maxReplyBody = env.messageCapacity - JobCodec.headerBytes
    var handled = 0

    func leave(_ reason: String) -> Never {
        replies?.send()
        logger.info("\(reason)")
        ChildProcess.exitImmediately(WorkerExit.normal)
    }

    #if DEBUG
    // Debug builds only: widens the window between the SIGTERM check and msgrcv, so a test can
    // land a signal inside it (`POOL_DEBUG_WORKER_RECEIVE_DELAY_MS`).
    let receiveDelay = getenv("POOL_DEBUG_WORKER_RECEIVE_DELAY_MS").flatMap { UInt32(String(cString: $0)) }
    #endif
    logger.debug("worker started", metadata: ["queue": "\(env.queue.id)"])
    while true {
        if Signals.take(SIGTERM) > 0 { leave("worker exiting on SIGTERM") }
        // (SIGUSR1, log rotation, reopens in its handler: `LogFile.enableReopenOnSignal`.)
        env.inboxes.clear(slot)
        #if DEBUG
        if let receiveDelay { usleep(receiveDelay * 1000) }
        #endif
        let received: (type: Int, length: Int)?
        do {
            received = try env.queue.receiveTruncating(into: inbox, nowait: false, retryOnInterrupt: false)
        } catch let error as SystemError where error.errno == .interrupted {
            continue
        } catch {
            exitOnQueueFailure(error, "msgrcv of a job", queue: env.queue, logger: logger)
        }
        guard let (type, length) = received else { continue }
        if length > env.inboxes.capacity {
            // Longer than any message of the master's: someone else's, taken cut. Cleared first, so
            // that a worker killed now does not leave it for the master to read as its jobs.
            env.inboxes.clear(slot)
            logger.error("dropped a queue message longer than any of the pool's (not the master's; msgmax raised since the start?)",
                         metadata: ["type": "\(type)", "bytes": "> \(env.inboxes.capacity)"])
            continue
        }
        // A SIGTERM that landed just before msgrcv blocked was counted but did not interrupt
        // it: leave before starting anything. The message's jobs, none started, are run by
        // another worker (the master reads them from this slot's inbox).
        if Signals.take(SIGTERM) > 0 { leave("worker exiting on SIGTERM before starting its message") }
        if type == JobCodec.quitType {
            logger.debug("worker quitting on the master's request")
            ChildProcess.exitImmediately(WorkerExit.normal)
        }
        guard type == JobCodec.jobType else {
            logger.warning("ignoring queue message of unknown type \(type)")
            continue
        }
        // Taking the message made room in the queue; the master may be asleep waiting for some.
        if env.scoreboard.masterWantsRoom { env.doorbell?.ring() }
        let text = UnsafeRawBufferPointer(inbox.text)
        // Outlives the inbox's next clear: if this queue is removed while the worker waits for its
        // next message, the master still learns how far the queue had been read.
        if let first = JobCodec.decodeJob(text, length: length, at: 0) { env.inboxes.noteTaken(slot, firstJob: first.id) }
        var offset = 0
        var index = 0
        while let job = JobCodec.decodeJob(text, length: length, at: offset) {
            offset = job.end
            env.inboxes.markStarted(slot, index: index)
            env.scoreboard.begin(slot, job: job.id)
            var message: [UInt8]? = nil
            if let spill = job.spill {
                if let bytes = env.arena?.payload(spill) {
                    message = Array(bytes)
                    env.arena?.release(spill.chunk)
                }
            } else {
                message = job.payloadBytes(in: text)
            }
            var status = ResponseStatus.ok
            var body: [UInt8]
            do {
                guard let message else { throw ArenaReferenceError() }
                body = try handler(message, context)
            } catch {
                status = .handlerError
                body = Array("\(error)".utf8)
            }
            if replies != nil {
                if body.count > maxReplyBody {
                    status = .handlerError
                    // Cut to the limit too: with a tiny msgmax the explanation is itself too long.
                    body = Array(Array("reply of \(body.count) bytes exceeds the \(maxReplyBody)-byte limit of one queue message".utf8)
                        .prefix(maxReplyBody))
                }
                replies!.append(id: job.id, status: status, slot: slot, body: body)
            } else {
                logger.debug("handled job \(job.id) status \(status)")
            }
            // Done first: killed between the two, the job counts as finished by the inbox (not
            // named lost) and the master's by-id pruning makes up for the count lagging by one.
            env.inboxes.markDone(slot, index: index)
            env.scoreboard.end(slot)
            index += 1
            handled += 1
            replies?.sendIfDue(averageJob: env.scoreboard.averageJobNanoseconds(slot))
            if let limit = env.jobLimit, handled >= limit { leave("worker recycled after \(handled) jobs") }
            if Signals.take(SIGTERM) > 0 { leave("worker exiting on SIGTERM") }
        }
        replies?.send()
    }
}

/// A job record names a chunk the worker's arena does not have (never sent by a correct master).
private struct ArenaReferenceError: Error, CustomStringConvertible {
    var description: String { "the job's payload reference is outside the payload arena" }
}

/// Replies of finished jobs, sent together in one queue message. The master is woken (the
/// doorbell) only if it may be asleep; while it is awake it looks at the reply queue every turn.
/// Built in the slot's outbox, where the master finds them if the worker dies before sending.
private struct ReplyBatch {
    let queue: MessageQueue
    let doorbell: EventFD
    let scoreboard: Scoreboard
    let outboxes: ReplyOutboxes
    let slot: Int
    let buffer: MessageBuffer
    let logger: Logger
    /// How long the oldest reply may wait (`--batch-time`).
    let budget: Int64
    /// Large bodies go to the slot's ring when it has room.
    let rings: ReplyRings?
    var length = 0
    /// When the oldest reply held was added.
    var since: Int64 = 0

    init(queue: MessageQueue, doorbell: EventFD, scoreboard: Scoreboard, outboxes: ReplyOutboxes, slot: Int, budget: Int64,
         rings: ReplyRings?, logger: Logger) {
        self.budget = budget
        self.queue = queue
        self.doorbell = doorbell
        self.scoreboard = scoreboard
        self.outboxes = outboxes
        self.slot = slot
        buffer = outboxes.buffer(slot)
        self.rings = rings
        self.logger = logger
    }

    mutating func append(id: UInt64, status: ResponseStatus, slot: Int, body: [UInt8]) {
        // Into the ring before the record is placed: positions grow in the order records are sent.
        let position = rings.flatMap { rings in body.withUnsafeBytes { rings.write(slot, $0) } }
        let recordBytes = position == nil ? JobCodec.headerBytes + body.count : JobCodec.spilledRecordBytes
        if length + recordBytes > buffer.capacity { send() }
        if length == 0 { since = monotonicNanoseconds() }
        if let position {
            length = JobCodec.encodeSpilledReply(id: id, status: status, slot: slot, length: body.count, position: position,
                                                 into: buffer.text, at: length)
        } else {
            length = body.withUnsafeBytes {
                JobCodec.encodeReply(id: id, status: status, slot: slot, body: $0, into: buffer.text, at: length)
            }
        }
        outboxes.publish(self.slot, length: length)
    }

    /// Sends now if holding the replies for one more job (of `averageJob` nanoseconds) would keep
    /// the oldest past the batching budget: slow jobs' replies are never held.
    mutating func sendIfDue(averageJob: Int64) {
        guard length > 0 else { return }
        if budget == 0 || monotonicNanoseconds() - since + averageJob >= budget { send() }
    }

    /// Blocking send: the master drains the reply queue every loop turn and never waits on a
    /// worker, so this wait always ends.
    mutating func send() {
        guard length > 0 else { return }
        do {
            try queue.send(buffer, type: JobCodec.replyType, length: length, nowait: false)
        } catch {
            exitOnQueueFailure(error, "msgsnd of a reply", queue: queue, logger: logger)
        }
        length = 0
        outboxes.publish(slot, length: 0)
        if scoreboard.masterMayBeAsleep { doorbell.ring() }
    }
}

/// A worker's queue call failed: exit with the code that tells the master why. A removed queue
/// (EIDRM/EINVAL, e.g. `ipcrm`) exits `queueGone`, so the master recreates it; EINVAL from a
/// queue still there (a reply over a msgmax lowered while running) is an IPC failure.
private func exitOnQueueFailure(_ error: Error, _ call: String, queue: MessageQueue, logger: Logger) -> Never {
    if let error = error as? SystemError,
       error.errno == .identifierRemoved || (error.errno == .invalidArgument && queue.isRemoved()) {
        logger.error("queue removed under the worker (\(call)); exiting so the master can recreate it", metadata: ["error": "\(error)"])
        ChildProcess.exitImmediately(WorkerExit.queueGone)
    }
    logger.error("\(call) failed", metadata: ["error": "\(error)"])
    ChildProcess.exitImmediately(WorkerExit.ipcFailure)
}
