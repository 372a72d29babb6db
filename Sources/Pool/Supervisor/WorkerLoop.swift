import Glibc
import Logging

/// Everything a worker process needs, captured by the master before fork.
struct WorkerEnvironment {
    var slot: Int
    var queue: MessageQueue
    /// Result mode: where replies go, and the doorbell that wakes the master.
    var replyQueue: MessageQueue?
    var doorbell: EventFD?
    var scoreboard: Scoreboard
    /// Text capacity of one queue message (`msgmax`).
    var messageCapacity: Int
    /// Jobs to handle before exiting for recycling (`nil` = forever).
    var jobLimit: Int?
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
}

/// The worker's main loop: receive from its own queue (blocking — a worker may block, the master
/// never does), run the handler, reply if asked. Never returns; ends with `_exit`, so nothing of
/// the master's (atexit, deinit, the socket file, queues) is touched.
func runWorker(_ env: WorkerEnvironment) -> Never {
    ChildProcess.closeDescriptors(except: env.keepDescriptors)
    ChildProcess.setName("pool-worker")
    LogFile.enableReopenOnSignal()
    // SIGTERM asks for a graceful exit: finish the job in hand, then leave. That is how the master
    // retires one particular worker when several share a queue (a quit message would go to
    // whichever worker takes it). A worker stuck in a job is SIGKILLed after a grace period.
    _ = try? Signals.install([SIGTERM])
    let pid = getpid()
    env.scoreboard.setPID(env.slot, pid)
    var logger = env.logger
    logger[metadataKey: "slot"] = "\(env.slot)"
    let context = WorkerContext(slot: env.slot, pid: pid, logger: logger)
    let handler = env.makeHandler(context)
    let inbox = MessageBuffer(capacity: env.messageCapacity)
    let outbox = MessageBuffer(capacity: env.messageCapacity)
    let maxReplyBody = env.messageCapacity - JobCodec.headerBytes
    var handled = 0

    logger.debug("worker started", metadata: ["queue": "\(env.queue.id)"])
    while true {
        if Signals.take(SIGTERM) > 0 {
            logger.info("worker exiting on SIGTERM")
            ChildProcess.exitImmediately(WorkerExit.normal)
        }
        let received: (type: Int, length: Int)?
        do {
            received = try env.queue.receive(into: inbox, nowait: false, retryOnInterrupt: false)
        } catch let error as SystemError where error.errno == .interrupted {
            continue
        } catch let error as SystemError where error.errno == .identifierRemoved || error.errno == .invalidArgument {
            logger.error("queue removed under the worker; exiting so the master can recreate it", metadata: ["error": "\(error)"])
            ChildProcess.exitImmediately(WorkerExit.queueGone)
        } catch {
            logger.error("msgrcv failed", metadata: ["error": "\(error)"])
            ChildProcess.exitImmediately(WorkerExit.ipcFailure)
        }
        guard let (type, length) = received else { continue }
        if type == JobCodec.quitType {
            logger.debug("worker quitting on the master's request")
            ChildProcess.exitImmediately(WorkerExit.normal)
        }
        guard type == JobCodec.jobType else {
            logger.warning("ignoring queue message of unknown type \(type)")
            continue
        }
        let text = UnsafeRawBufferPointer(inbox.text)
        var offset = 0
        while let job = JobCodec.decodeJob(text, length: length, at: offset) {
            offset = job.payload.upperBound
            env.scoreboard.begin(env.slot, job: job.id)
            let message = Array(text[job.payload])
            var status = ResponseStatus.ok
            var body: [UInt8]
            do {
                body = try handler(message, context)
            } catch {
                status = .handlerError
                body = Array("\(error)".utf8)
            }
            if let replyQueue = env.replyQueue, let doorbell = env.doorbell {
                if body.count > maxReplyBody {
                    status = .handlerError
                    body = Array("reply of \(body.count) bytes exceeds the \(maxReplyBody)-byte limit of one queue message".utf8)
                }
                let end = body.withUnsafeBytes {
                    JobCodec.encodeReply(id: job.id, status: status, slot: env.slot, body: $0, into: outbox.text, at: 0)
                }
                sendReply(replyQueue, outbox, length: end, logger: logger)
                doorbell.ring()
            } else {
                logger.debug("handled job \(job.id) status \(status)")
            }
            env.scoreboard.end(env.slot)
            handled += 1
            if let limit = env.jobLimit, handled >= limit {
                logger.info("worker recycled after \(handled) jobs")
                ChildProcess.exitImmediately(WorkerExit.normal)
            }
        }
    }
}

/// Blocking send of a reply: the master drains the reply queue whenever the doorbell rings and
/// never waits on a worker, so this wait always ends.
private func sendReply(_ queue: MessageQueue, _ buffer: MessageBuffer, length: Int, logger: Logger) {
    do {
        try queue.send(buffer, type: JobCodec.replyType, length: length, nowait: false)
    } catch let error as SystemError where error.errno == .identifierRemoved || error.errno == .invalidArgument {
        logger.error("reply queue removed; exiting", metadata: ["error": "\(error)"])
        ChildProcess.exitImmediately(WorkerExit.queueGone)
    } catch {
        logger.error("msgsnd of a reply failed", metadata: ["error": "\(error)"])
        ChildProcess.exitImmediately(WorkerExit.ipcFailure)
    }
}
