import CSysV
import Glibc

/// One ring of shared memory per worker slot for large replies (result mode), the way back of the
/// `PayloadArena`: a worker copies a reply body of at least `--spill-bytes` into its ring and sends
/// a 24-byte record naming the position, so many large replies share one reply message.
///
/// Each ring has one writer (the slot's worker) and one reader (the master), and the master takes
/// a slot's replies in the order the worker sent them (one reply queue, FIFO per sender). So a
/// position pair is all the bookkeeping there is: the worker writes at `tail`, the master
/// publishes `head` once it has copied a body out, and the worker reuses bytes below `head`. A body
/// never wraps: one that would is placed at the start of the ring, and the skipped bytes are taken
/// with it. A worker that finds no room sends the body inline, so it never waits for the master.
///
/// When a worker dies its replies sent are all drained before it is replaced, and the replacement
/// starts with an empty ring (`reset`, before the fork).
///
/// Layout per slot: a cache line (u64 head, written by the master; u64 tail, by the worker), then
/// the ring's bytes.
final class ReplyRings {
    private let memory: SharedMemory
    private var base: UnsafeMutableRawPointer { memory.base }
    private let stride: Int
    /// Bytes of one ring.
    let capacity: Int
    let count: Int
    /// Bodies of at least this many bytes go through a ring (`--spill-bytes`).
    let threshold: Int
    /// Master: replies whose body it took from a ring, since start.
    @exclusivity(unchecked) private(set) var taken = 0

    private static let headerBytes = 64

    init(slots: Int, capacity: Int, threshold: Int = 1) throws {
        precondition(capacity > 0 && capacity % 64 == 0 && threshold > 0)
        self.capacity = capacity
        self.threshold = threshold
        count = max(slots, 1)
        stride = Self.headerBytes + capacity
        // Not reserved: only the rings of workers that send large replies get pages.
        memory = try SharedMemory(bytes: count * stride, reserve: false)
    }

    deinit { memory.unmap() }

    private func head(_ slot: Int) -> UnsafeMutablePointer<UInt64> {
        (base + slot * stride).assumingMemoryBound(to: UInt64.self)
    }

    private func tail(_ slot: Int) -> UnsafeMutablePointer<UInt64> {
        (base + slot * stride + 8).assumingMemoryBound(to: UInt64.self)
    }

    private func bytes(_ slot: Int) -> UnsafeMutableRawPointer { base + slot * stride + Self.headerBytes }

    /// Master, before a new worker takes the slot: an empty ring.
    func reset(_ slot: Int) {
        guard slot >= 0, slot < count else { return }
        csysv_ring_publish(head(slot), 0)
        csysv_ring_publish(tail(slot), 0)
    }

    /// Worker: copies `body` into the slot's ring; returns its position, or `nil` if it is below
    /// the threshold, there is no room, or the slot has no ring (the body then travels inline).
    func write(_ slot: Int, _ body: UnsafeRawBufferPointer) -> UInt64? {
        let length = UInt64(body.count)
        guard slot >= 0, slot < count, body.count >= threshold, length <= UInt64(capacity) else { return nil }
        var start = csysv_ring_position(tail(slot))
        let offset = start % UInt64(capacity)
        if offset + length > UInt64(capacity) { start += UInt64(capacity) - offset }
        // The master's head is never past the tail; one that is (a stray write) means no room,
        // not an underflow that traps.
        let head = csysv_ring_position(head(slot))
        guard head <= start, start + length - head <= UInt64(capacity) else { return nil }
        UnsafeMutableRawBufferPointer(start: bytes(slot) + Int(start % UInt64(capacity)), count: body.count).copyMemory(from: body)
        csysv_ring_publish(tail(slot), start + length)
        return start
    }

    /// Master: the body a spilled reply names; `nil` if the reference is out of range.
    func body(_ slot: Int, position: UInt64, length: Int) -> UnsafeRawBufferPointer? {
        guard slot >= 0, slot < count, length > 0, length <= capacity,
              Int(position % UInt64(capacity)) + length <= capacity else { return nil }
        return UnsafeRawBufferPointer(start: bytes(slot) + Int(position % UInt64(capacity)), count: length)
    }

    /// Master: whether the body at `position` of `length` bytes lies between what was taken and
    /// what was written, as every body a worker sends does (it publishes its tail before sending
    /// the record). The reply queue belongs to the workers' user, so a record may be forged: one
    /// that fails this is not read, and moves nothing.
    func holds(_ slot: Int, position: UInt64, length: Int) -> Bool {
        guard slot >= 0, slot < count, length >= 0 else { return false }
        let (end, overflow) = position.addingReportingOverflow(UInt64(length))
        return !overflow && position >= csysv_ring_position(head(slot)) && end <= csysv_ring_position(tail(slot))
    }

    /// Master: done with the body at `position` of `length` bytes; the worker may write over it.
    /// False, moving nothing, for a body the ring does not hold (`holds`): published, its end
    /// would let the worker overwrite replies not yet taken.
    @discardableResult
    func consume(_ slot: Int, position: UInt64, length: Int) -> Bool {
        guard holds(slot, position: position, length: length) else { return false }
        taken += 1
        csysv_ring_publish(head(slot), position + UInt64(length))
        return true
    }

    /// Bytes written and not yet taken (for tests and status).
    func pending(_ slot: Int) -> UInt64 {
        guard slot >= 0, slot < count else { return 0 }
        return csysv_ring_position(tail(slot)) &- csysv_ring_position(head(slot))
    }
}
