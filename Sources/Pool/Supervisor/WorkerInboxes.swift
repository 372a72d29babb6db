import CSysV
import Glibc

/// Every worker's receive buffer, in memory shared with the master (`MAP_SHARED | MAP_ANONYMOUS`,
/// mapped before the first fork), with two progress counters in front of each.
///
/// Why: a worker that dies takes the queue message it last received with it, and with batching
/// that message holds several jobs. The kernel copies a message into the receiver's buffer before
/// `msgrcv` returns, even if a SIGKILL is already pending, so once a message has left the queue its
/// text is here, where the master can read it after reaping the worker. With the counters the
/// master knows exactly which of those jobs finished, which one was running and which never
/// started (and can be run elsewhere) — also with a shared queue, where no other record says which
/// worker took which message.
///
/// Layout of one inbox: `u32 started, u32 done, u64 last taken`, then a `struct msgbuf`
/// (`long mtype`, text). The worker writes; the master reads only after `waitpid` has reaped the
/// worker, so no atomics.
final class WorkerInboxes {
    private let memory: SharedMemory
    private var base: UnsafeMutableRawPointer { memory.base }
    private let stride: Int
    /// Text capacity of each inbox (`msgmax`).
    let capacity: Int
    let count: Int

    private static let counterBytes = 16

    init(slots: Int, capacity: Int) throws {
        (memory, stride) = try SharedMemory.perSlot(slots, bytesEach: Self.counterBytes + MessageBuffer.headerBytes + capacity + 1)
        self.capacity = capacity
        count = slots
    }

    deinit { memory.unmap() }

    private func counters(_ slot: Int) -> UnsafeMutablePointer<UInt32> {
        (base + slot * stride).assumingMemoryBound(to: UInt32.self)
    }

    /// The `msgbuf` of the slot's inbox (its `mtype` first).
    private func message(_ slot: Int) -> UnsafeMutableRawPointer { base + slot * stride + Self.counterBytes }

    /// The slot's receive buffer (worker side): one byte longer than any message of the pool's,
    /// so that a longer one (not the master's: msgmax raised since the start) shows as filling it
    /// when taken cut, instead of failing every receive with E2BIG and stopping the queue.
    func buffer(_ slot: Int) -> MessageBuffer {
        MessageBuffer(borrowing: message(slot), capacity: capacity + 1)
    }

    /// The first job id of the last job message the slot's worker took (0: none yet).
    private func lastTaken(_ slot: Int) -> UnsafeMutablePointer<UInt64> {
        (base + slot * stride + 8).assumingMemoryBound(to: UInt64.self)
    }

    /// Worker, before each receive: nothing held. A message the kernel copies in sets `mtype`.
    /// The last taken id stays: it outlives the message it names.
    func clear(_ slot: Int) {
        // The message goes first: a worker killed between these stores must not leave a finished
        // message with its counters at zero, which would read as "none of its jobs started" and
        // run them all again.
        message(slot).storeBytes(of: 0, as: Int.self)
        csysv_compiler_fence()
        // And the old message's first record: `msgrcv` writes the type before it copies the text,
        // so a copy that faults (EFAULT: the message is gone) would leave the new type over the
        // old, finished text. With no record count there, it reads as holding nothing.
        (message(slot) + MessageBuffer.headerBytes).initializeMemory(as: UInt8.self, repeating: 0, count: JobCodec.headerBytes)
        counters(slot)[0] = 0
        counters(slot)[1] = 0
    }

    /// Master, before a new worker takes the slot: nothing held, nothing taken.
    func reset(_ slot: Int) {
        clear(slot)
        lastTaken(slot).pointee = 0
    }

    /// Worker: took a job message whose first job is `id`. Until the next `clear` the message
    /// itself says so; after it, this does.
    @inline(__always)
    func noteTaken(_ slot: Int, firstJob id: UInt64) { lastTaken(slot).pointee = id }

    /// The first job of the last job message a reaped worker took: the one it holds, or else the
    /// one it noted before clearing its inbox for the next receive. `nil` if it took none.
    func lastTakenFirstJob(_ slot: Int) -> UInt64? {
        let buffer = buffer(slot)
        // Job ids start at 1: a zero is a cleared record (see `clear`).
        if buffer.type == JobCodec.jobType, let job = JobCodec.decodeJob(UnsafeRawBufferPointer(buffer.text), length: capacity, at: 0),
           job.id != 0 {
            return job.id
        }
        let noted = lastTaken(slot).pointee
        return noted == 0 ? nil : noted
    }

    /// Worker: about to run the job at `index` of the message held.
    @inline(__always)
    func markStarted(_ slot: Int, index: Int) { counters(slot)[0] = UInt32(index + 1) }

    /// Worker: the job at `index` is done.
    @inline(__always)
    func markDone(_ slot: Int, index: Int) { counters(slot)[1] = UInt32(index + 1) }

    /// What a reaped worker held: the jobs of the message it last received, in order, with how
    /// many it had started and finished. `nil` if it held no job message. The job count comes from
    /// the batch header (`JobCodec`), so stale bytes beyond the message are never read as jobs.
    /// Spilled payloads are copied out of `arena` and their chunks given back (a chunk the worker
    /// released, and the master has reused since, is left alone: its generation moved on). A
    /// payload is `nil` when its reference is corrupt (out of range: the inbox is the worker's to
    /// write): such a job cannot be run again.
    func held(_ slot: Int, arena: PayloadArena?) -> (jobs: [(id: UInt64, payload: [UInt8]?)], started: Int, done: Int)? {
        let buffer = buffer(slot)
        guard buffer.type == JobCodec.jobType else { return nil }
        let text = UnsafeRawBufferPointer(buffer.text)
        guard let records = JobCodec.batchCount(text, length: capacity) else { return nil }
        var jobs: [(id: UInt64, payload: [UInt8]?)] = []
        var offset = 0
        for _ in 0..<records {
            guard let job = JobCodec.decodeJob(text, length: capacity, at: offset) else { break }
            if let spill = job.spill {
                jobs.append((job.id, arena?.payload(spill).map { Array($0) }))
                arena?.drop(spill.chunk)
            } else {
                jobs.append((job.id, job.payloadBytes(in: text)))
            }
            offset = job.end
        }
        let started = min(Int(counters(slot)[0]), jobs.count)
        let done = min(Int(counters(slot)[1]), started)
        return (jobs, started, done)
    }
}
