/// Chooses a worker queue for each job: round-robin, and on a full queue (EAGAIN with
/// IPC_NOWAIT) the next ones in turn before giving up. The master never blocks here.
struct Dispatcher {
    private var next = 0

    enum Outcome {
        case queued(slot: Int)
        /// Every queue is full (or gone): the caller answers busy or holds the job.
        case full
    }

    /// Sends the record already encoded in `buffer.text[0..<length]`.
    mutating func dispatch(_ buffer: MessageBuffer, length: Int, supervisor: Supervisor) -> Outcome {
        let slots = supervisor.slots
        let count = slots.count
        for attempt in 0..<count {
            let index = (next + attempt) % count
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
