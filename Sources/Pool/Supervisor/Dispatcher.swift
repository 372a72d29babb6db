/// Chooses a worker queue for each job and sends it with IPC_NOWAIT; on a full queue (EAGAIN) it
/// tries the others in turn before giving up. The master never blocks here.
///
/// - round-robin: the next slot in turn.
/// - shared: one queue all workers read; the first free worker takes the next job.
/// - least-busy: the slot with the fewest requests in flight — exact in result mode (queued and
///   not yet answered); in ack mode, where no answers come back, "busy now" from the scoreboard.
///   Ties go round-robin, so equal workers still share the load.
struct Dispatcher {
    private var next = 0
    let strategy: PoolConfiguration.DispatchStrategy

    init(strategy: PoolConfiguration.DispatchStrategy) { self.strategy = strategy }

    enum Outcome {
        case queued(slot: Int)
        /// Every queue is full (or gone): the caller answers busy or holds the job.
        case full
    }

    /// Sends the record already encoded in `buffer.text[0..<length]`.
    mutating func dispatch(_ buffer: MessageBuffer, length: Int, supervisor: Supervisor) -> Outcome {
        let slots = supervisor.slots
        let count = slots.count
        guard count > 0 else { return .full }
        if strategy == .shared {
            // Every slot holds the same queue: one send, no choice to make.
            guard let index = slots.firstIndex(where: \.accepting) ?? slots.indices.first else { return .full }
            let sent = (try? slots[index].queue.send(buffer, type: JobCodec.jobType, length: length, nowait: true)) ?? false
            return sent ? .queued(slot: index) : .full
        }
        var first = next % count
        if strategy == .leastBusy {
            var best = Int.max
            for attempt in 0..<count {
                let index = (next + attempt) % count
                guard slots[index].accepting else { continue }
                let load = slots[index].outstanding.count
                    + (supervisor.scoreboard.state(index) == .busy ? 1 : 0)
                if load < best { best = load; first = index }
                if load == 0 { break }
            }
        }
        for attempt in 0..<count {
            let index = (first + attempt) % count
            guard slots[index].accepting else { continue }
            do {
                if try slots[index].queue.send(buffer, type: JobCodec.jobType, length: length, nowait: true) {
                    next = (index + 1) % count
                    return .queued(slot: index)
                }
            } catch {
                // EIDRM/EINVAL: the queue was removed from outside. Its worker wakes with EIDRM and
                // exits; the supervisor recreates the queue when it reaps it. Skip it meanwhile.
                continue
            }
        }
        return .full
    }
}
