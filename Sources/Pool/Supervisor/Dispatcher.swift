/// Chooses the worker slot for each job, and sends a slot's batch with IPC_NOWAIT; on a full
/// queue (EAGAIN) it tries the other queues in turn before giving up. The master never blocks here.
///
/// - round-robin: the next slot in turn.
/// - shared: one queue all workers read; the first free worker takes the next message. Jobs are
///   still spread over one batch per worker, so every idle worker finds a message to take.
/// - least-busy: the slot with the fewest requests in flight — exact in result mode (queued and
///   not yet answered); in ack mode, where no answers come back, "busy now" from the scoreboard.
///   Jobs staged this turn count too. Ties go round-robin, so equal workers still share the load.
struct Dispatcher {
    private var next = 0
    let strategy: PoolConfiguration.DispatchStrategy
    /// Queues a send found full (EAGAIN) since `forgetFull`, not tried again until then. The
    /// master forgets them whenever room may have come (each loop turn, each retry of held jobs);
    /// in between, every batch staged for a retry would try every queue again: N² failing
    /// `msgsnd` calls with N workers, just when the master should answer quickly.
    private var full = Set<Int32>()

    /// Room may have come: every queue is tried again.
    @inline(__always)
    mutating func forgetFull() {
        if !full.isEmpty { full.removeAll(keepingCapacity: true) }
    }

    init(strategy: PoolConfiguration.DispatchStrategy) { self.strategy = strategy }

    enum Outcome {
        case queued(slot: Int)
        /// Every queue is full (or gone): the caller answers busy or holds the jobs. `failures`:
        /// sends that failed for another reason than a full queue (EACCES after someone's
        /// IPC_SET, a message over `msgmax`, ...), for the caller to log; a removed queue is not one.
        case full(failures: [(slot: Int, error: SystemError)])
    }

    /// The slot whose batch the next job joins; `nil` if no slot takes work.
    mutating func choose(supervisor: Supervisor, staged: [JobBatch]) -> Int? {
        let slots = supervisor.slots
        let count = slots.count
        guard count > 0 else { return nil }
        var chosen: Int? = nil
        var best = Int.max
        // A slot whose worker is gone (waiting out a crash back-off of up to 10 s, or a respawn
        // about to happen) takes work only when no slot has a worker: its queue would hold the
        // job until the replacement starts while a live worker could run it now.
        var workerless: Int? = nil
        for attempt in 0..<count {
            let index = (next + attempt) % count
            guard slots[index].accepting else { continue }
            if slots[index].pid == nil {
                if workerless == nil { workerless = index }
                continue
            }
            guard strategy == .leastBusy else { chosen = index; break }
            let load = slots[index].outstanding.count + (index < staged.count ? staged[index].entries.count : 0)
                + (supervisor.scoreboard.state(index) == .busy ? 1 : 0)
            if load < best { best = load; chosen = index }
            if load == 0 { break }
        }
        if chosen == nil { chosen = workerless }
        if let chosen { next = (chosen + 1) % count }
        return chosen
    }

    /// Sends the message in `buffer.text[0..<length]` to `preferred`'s queue, or to another that
    /// has room.
    mutating func send(_ buffer: MessageBuffer, length: Int, preferred: Int, supervisor: Supervisor) -> Outcome {
        let slots = supervisor.slots
        let count = slots.count
        guard count > 0 else { return .full(failures: []) }
        var failures: [(slot: Int, error: SystemError)] = []
        // With one shared queue there is nothing else to try.
        let attempts = strategy == .shared ? 1 : count
        // As in `choose`: a slot without a worker takes the message only when no slot has one.
        // Its queue would hold it until a replacement starts — in a stop none may ever start, and
        // the jobs would end unrun — while a live worker's queue makes room soon; full everywhere,
        // the jobs are held and retried. This is checked here too, not only in `choose`: the
        // preferred slot's worker may have been reaped since its jobs were staged. (A shared
        // queue is every worker's: there is no other to choose.)
        var anyWorker: Bool? = nil
        for attempt in 0..<attempts {
            let index = (preferred + attempt) % count
            guard slots[index].accepting || (attempt == 0 && strategy == .shared) else { continue }
            if strategy != .shared && slots[index].pid == nil {
                if anyWorker == nil { anyWorker = slots.contains { $0.accepting && $0.pid != nil } }
                if anyWorker == true { continue }
            }
            let queue = slots[index].queue
            if !full.isEmpty && full.contains(queue.id) { continue }
            do {
                if try queue.send(buffer, type: JobCodec.jobType, length: length, nowait: true) {
                    return .queued(slot: index)
                }
                full.insert(queue.id)
            } catch let error as SystemError {
                // EIDRM/EINVAL: the queue was removed from outside. Its worker wakes with EIDRM and
                // exits; the supervisor recreates the queue when it reaps it. Skip it meanwhile.
                // EINVAL with the queue still there (a message over a msgmax lowered while
                // running) is a failure to report: otherwise jobs would wait, unexplained, forever.
                let removed = error.errno == .identifierRemoved
                    || (error.errno == .invalidArgument && slots[index].queue.isRemoved())
                if !removed { failures.append((index, error)) }
            } catch {
                failures.append((index, SystemError("msgsnd", .ioError)))
            }
        }
        return .full(failures: failures)
    }
}
