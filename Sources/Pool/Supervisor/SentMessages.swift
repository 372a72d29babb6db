/// The jobs of the messages sent lately to one shared queue, oldest first, for ack mode: if the
/// queue is removed from outside (`ipcrm`), the jobs still in it are named, since their clients
/// were already told "ok" and nothing else records them.
///
/// Why this is exact: workers take a queue's messages in the order they were sent, so once some
/// worker is known to have taken a message (its inbox says so when it is reaped), every message
/// sent before it has left the queue too. What is left after the last reader of a removed queue
/// has been reaped went with the queue. A queue holds at most `limit` messages (its byte capacity
/// over the smallest message, one empty job record), so older entries are dropped as they are
/// surely taken: the record stays bounded without asking the kernel (no IPC_STAT per message).
struct SentMessages {
    private var messages = FIFO<Int>()
    private var jobs = FIFO<UInt64>()
    let limit: Int

    init(queueBytes: Int) {
        limit = max(1, queueBytes / JobCodec.headerBytes + 1)
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
        while messages.count > limit { dropOldest() }
    }

    /// A worker took the message whose first job is `firstJob`: it and every older message have
    /// left the queue. An id not recorded here (older, or another queue's) changes nothing.
    mutating func taken(firstJob: UInt64) {
        var position = 0
        var dropping = 0
        for count in messages.elements {
            dropping += 1
            if jobs.elements[jobs.elements.startIndex + position] == firstJob {
                for _ in 0..<dropping { dropOldest() }
                return
            }
            position += count
        }
    }

    /// Jobs of the messages no worker is known to have taken, oldest first.
    var notTaken: [UInt64] { Array(jobs.elements) }

    private mutating func dropOldest() {
        guard let count = messages.removeFirst() else { return }
        for _ in 0..<count { jobs.removeFirst() }
    }
}
