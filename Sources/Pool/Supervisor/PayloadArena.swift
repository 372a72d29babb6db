import CSysV
import Glibc

/// Chunks of memory shared by the master and every worker (`MAP_SHARED | MAP_ANONYMOUS`, mapped
/// before the first fork). A payload of at least `--spill-bytes` is copied into a chunk, and the
/// queue message carries a 24-byte record naming the chunk instead of the payload.
///
/// Why: a queue message holds at most `msgmax` (8192) bytes, so two 4 KiB jobs can never share
/// one. Each would cost its own `msgsnd`, two kernel allocations, two copies through the kernel and
/// a worker wake-up. Spilled, many such jobs travel in one message, and each payload is copied
/// once on each side, in user space.
///
/// Ownership: the master takes a chunk, writes it, and sends its reference with a new generation.
/// The worker that runs the job copies the payload out and *releases* the chunk by publishing
/// that generation. The master reuses a chunk only when the published generation equals its own,
/// so a stale reference (a dead worker's message, handled after the chunk moved on) can never
/// free a chunk in use. When no chunk is free, jobs travel inline as before: the arena never
/// refuses work.
///
/// Layout: `count` × u32 released generation (padded to 64 bytes), then `count` chunks.
public final class PayloadArena {
    /// A reference to one use of a chunk.
    public struct Chunk: Equatable, Sendable {
        public var index: UInt32
        public var generation: UInt32
        public init(index: UInt32, generation: UInt32) {
            self.index = index
            self.generation = generation
        }
    }

    private let memory: SharedMemory
    private let released: UnsafeMutablePointer<UInt32>
    private let chunks: UnsafeMutableRawPointer
    /// Bytes of one chunk (the payload limit rounded up to 64, so chunks stay cache-line aligned).
    public let chunkBytes: Int
    /// The largest payload stored (`chunkBytes` before rounding: the largest one message holds).
    /// A record naming more is corrupt — the inboxes are the workers' to write — and re-sent
    /// inline it would not fit a message.
    public let largestPayload: Int
    /// Payloads of at least this many bytes go through the arena (`--spill-bytes`).
    public let threshold: Int
    /// Number of chunks.
    public let count: Int

    // Master only (a worker's copies are stale after fork and unused).
    @exclusivity(unchecked) private var generation: [UInt32]
    @exclusivity(unchecked) private var free: [UInt32]
    /// Chunks in use, oldest first: jobs of one queue finish in order, so the oldest is usually
    /// the next released, and reusing it keeps few chunks (and pages) warm.
    @exclusivity(unchecked) private var taken = FIFO<UInt32>()
    /// Whether a full rescan of `taken` may run (`reclaimOutOfOrder`): once per loop turn after
    /// one that found nothing, so a full arena costs each spillable job a look at the oldest
    /// chunk, not a walk over every chunk (up to 65,536) and a new list.
    @exclusivity(unchecked) private var mayReclaim = true
    /// The queue each chunk in use was sent to, to take back chunks a removed queue lost.
    @exclusivity(unchecked) private var sentTo: [Int32]
    /// Jobs sent with their payload in the arena, since start.
    @exclusivity(unchecked) public private(set) var stored = 0
    /// Jobs sent inline, since start, because every chunk was in use when they were staged.
    @exclusivity(unchecked) public private(set) var exhausted = 0

    /// The corresponding C function is `mmap`.
    public init(chunks count: Int, chunkBytes: Int, threshold: Int = 1) throws {
        precondition(count >= 0 && count < Int(UInt32.max) && chunkBytes > 0 && threshold > 0)
        self.count = count
        self.threshold = threshold
        self.chunkBytes = (chunkBytes + 63) & ~63
        largestPayload = chunkBytes
        let header = (max(count, 1) * MemoryLayout<UInt32>.stride + 63) & ~63
        // Not reserved: only chunks that are used get pages.
        memory = try SharedMemory(bytes: header + count * self.chunkBytes, reserve: false)
        let address = memory.base
        released = address.bindMemory(to: UInt32.self, capacity: max(count, 1))
        chunks = address + header
        generation = Array(repeating: 0, count: count)
        sentTo = Array(repeating: -1, count: count)
        // Popped from the end: chunk 0 first.
        free = (0..<UInt32(count)).reversed()
    }

    deinit { memory.unmap() }

    // MARK: Master

    /// Whether a payload of `count` bytes should go through the arena (if a chunk is free).
    @inline(__always)
    public func takes(_ count: Int) -> Bool { count >= threshold }

    /// Copies `payload` into a free chunk and returns its reference; `nil` if it does not fit or
    /// every chunk is in use (the job then travels inline).
    public func store(_ payload: UnsafeRawBufferPointer) -> Chunk? {
        guard payload.count <= largestPayload else { return nil }
        while let oldest = taken.first, isReleased(oldest) {
            taken.removeFirst()
            free.append(oldest)
        }
        if free.isEmpty && mayReclaim {
            reclaimOutOfOrder()
            mayReclaim = !free.isEmpty
        }
        guard let index = free.popLast() else { return nil }
        generation[Int(index)] &+= 1
        // Its previous use went to some queue; this one has gone nowhere yet (`dropAll`).
        sentTo[Int(index)] = -1
        if payload.count > 0 {
            UnsafeMutableRawBufferPointer(start: chunks + Int(index) * chunkBytes, count: payload.count).copyMemory(from: payload)
        }
        taken.append(index)
        return Chunk(index: index, generation: generation[Int(index)])
    }

    /// Records the queue the chunk's job was sent to. (Counted here, not in `store`: a job staged
    /// while every queue is full is staged again on each retry.)
    public func noteSent(_ chunk: Chunk, queue: Int32) {
        sentTo[Int(chunk.index)] = queue
        stored += 1
    }

    /// Counts a job sent inline because no chunk was free when it was staged.
    public func noteSentInlineWhenFull() { exhausted += 1 }

    /// Master: gives the chunk back if `chunk` is still its current use — for a job that will
    /// never reach a worker (no queue took it; its worker died holding it). A stale reference does
    /// nothing.
    public func drop(_ chunk: Chunk) {
        guard Int(chunk.index) < count, generation[Int(chunk.index)] == chunk.generation else { return }
        csysv_arena_release(released + Int(chunk.index), chunk.generation)
    }

    /// Master: a queue was removed with messages in it; no worker will ever release their chunks.
    /// Only for a queue that no live worker reads (one worker per queue, and it has been reaped).
    public func dropAll(sentTo queue: Int32) {
        for index in taken.elements where sentTo[Int(index)] == queue {
            csysv_arena_release(released + Int(index), generation[Int(index)])
        }
    }

    /// Chunks in use now (for status and tests).
    public var inUse: Int {
        taken.elements.reduce(0) { $0 + (isReleased($1) ? 0 : 1) }
    }

    private func isReleased(_ index: UInt32) -> Bool {
        csysv_arena_released(released + Int(index)) == generation[Int(index)]
    }

    /// Master, at each loop turn: chunks released since a rescan that found none may be taken back.
    public func beginTurn() { mayReclaim = true }

    /// Jobs of different queues finish out of order: take back every released chunk.
    private func reclaimOutOfOrder() {
        var still = FIFO<UInt32>()
        for index in taken.elements {
            if isReleased(index) { free.append(index) } else { still.append(index) }
        }
        taken = still
    }

    // MARK: Worker (and master, for a reaped worker's jobs)

    /// The payload a spilled record names; `nil` if the reference is out of range.
    public func payload(_ spill: JobCodec.Spill) -> UnsafeRawBufferPointer? {
        guard Int(spill.chunk.index) < count, spill.length <= largestPayload else { return nil }
        return UnsafeRawBufferPointer(start: chunks + Int(spill.chunk.index) * chunkBytes, count: spill.length)
    }

    /// Worker: done reading the chunk; the master may reuse it.
    public func release(_ chunk: Chunk) {
        guard Int(chunk.index) < count else { return }
        csysv_arena_release(released + Int(chunk.index), chunk.generation)
    }
}
