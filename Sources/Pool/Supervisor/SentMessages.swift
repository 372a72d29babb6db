/// The jobs of the messages sent lately to one shared queue, oldest first, for ack mode: if the
/// queue is removed from outside (`ipcrm`), the jobs still in it are named, since their clients
/// were already told "ok" and nothing else records them.
///
/// Why this is exact: workers take a queue's messages in the order they were sent, so once some
/// worker is known to have taken a message (its inbox says so when it is reaped), every message
/// sent before it has left the queue too. What is left after the last reader of a removed queue
/// has been reaped went with the queue. A queue holds at most `limit` jobs (its byte capacity over
/// the smallest job record, 16 bytes), so while the record holds more, its oldest message has
/// surely left the queue and is dropped: the record stays bounded by the queue's size, without
/// asking the kernel (no IPC_STAT per message).
struct SentMessages {
    /// Job count of each message, oldest first.
    private var messages = FIFO<Int>()
    private var jobs = FIFO<UInt64>()
    let limit: Int

    init(queueBytes: Int) {
        limit = max(1, queueBytes / JobCodec.headerBytes)
    }

    /// A message holding `ids`, in order, went into the queue.
    mutating func sent(_ ids: some Sequence<UInt64>) {
        var count = 0
        for id in ids {
            jobs.append(id)
            count += 1
        }
        guard count > 0 else { return }
        messages.append(count)
        // The newest message stays whatever its size (a queue cannot take a message larger than
        // itself, so that only happens with a limit below the real capacity).
        while jobs.count > limit && messages.count > 1 { dropOldest() }
    }

    /// A worker took the message whose first job is `firstJob`: it and every older message have
    /// left the queue. An id not recorded here (older, or another queue's) changes nothing.
    /// Searched newest first: a queue that keeps up holds little, so a worker's last message is
    /// near the end.
    mutating func taken(firstJob: UInt64) {
        let counts = messages.elements
        let ids = jobs.elements
        var position = ids.endIndex
        for index in counts.indices.reversed() {
            position -= counts[index]
            if ids[position] == firstJob {
                for _ in counts.startIndex...index { dropOldest() }
                return
            }
        }
    }

    /// Jobs of the messages no worker is known to have taken, oldest first.
    var notTaken: [UInt64] { Array(jobs.elements) }

    private mutating func dropOldest() {
        guard let count = messages.removeFirst() else { return }
        for _ in 0..<count { jobs.removeFirst() }
    }
}
