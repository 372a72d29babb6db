import CSysV
import Glibc

/// Every worker's reply batch (result mode), built in memory shared with the master
/// (`MAP_SHARED | MAP_ANONYMOUS`, mapped before the first fork), with a count of the bytes not yet
/// sent in front of each.
///
/// Why: a worker holds the replies of finished jobs for about `--batch-time` — or, behind a slower
/// job of the same message, for that job's run — and sends them in one `msgsnd`. Killed meanwhile
/// (a job timeout, a crash), it took them with it, and the master answered jobs that had run with
/// *worker died*. Built here, they outlive it: after reaping the worker, and after draining the
/// reply queue, the master delivers what the outbox still holds.
///
/// Layout of one outbox: `u64 pending` (bytes of whole reply records not yet sent; 0 once their
/// message is sent), then a `struct msgbuf` (`long mtype`, text). The worker writes; the master
/// reads only after `waitpid` has reaped the worker, so no atomics — only the order of the
/// worker's own stores, which a compiler fence keeps (a record is whole before it is counted).
final class ReplyOutboxes {
    private let memory: SharedMemory
    private let stride: Int
    /// Text capacity of each outbox (`msgmax`).
    let capacity: Int

    private static let counterBytes = 8

    init(slots: Int, capacity: Int) throws {
        (memory, stride) = try SharedMemory.perSlot(slots, bytesEach: Self.counterBytes + MessageBuffer.headerBytes + capacity)
        self.capacity = capacity
    }

    deinit { memory.unmap() }

    private func pendingBytes(_ slot: Int) -> UnsafeMutablePointer<UInt64> {
        (memory.base + slot * stride).assumingMemoryBound(to: UInt64.self)
    }

    /// The slot's send buffer (worker side).
    func buffer(_ slot: Int) -> MessageBuffer {
        MessageBuffer(borrowing: memory.base + slot * stride + Self.counterBytes, capacity: capacity)
    }

    /// Worker: the first `length` bytes of the text are whole records not yet sent (0: sent).
    @inline(__always)
    func publish(_ slot: Int, length: Int) {
        csysv_compiler_fence()
        pendingBytes(slot).pointee = UInt64(length)
    }

    /// Master, after reaping the slot's worker: the replies it built and did not send. A worker
    /// killed between its `msgsnd` and the count's reset leaves replies already delivered from the
    /// queue; their routes are gone by then, so they are not answered twice.
    func unsent(_ slot: Int) -> UnsafeRawBufferPointer? {
        let length = Int(clamping: pendingBytes(slot).pointee)
        guard length > 0, length <= capacity else { return nil }
        return UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer(slot).text)[0..<length])
    }

    /// Master: nothing pending (after delivering it, and before a new worker takes the slot).
    func reset(_ slot: Int) { pendingBytes(slot).pointee = 0 }
}
