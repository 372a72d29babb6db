import CSysV
import Glibc

/// Per-worker state in shared memory (`MAP_SHARED | MAP_ANONYMOUS`, mapped before the first
/// fork so every worker inherits it). Workers publish "busy with job X since T"; the master reads
/// it to attribute a crash or a timeout to the right request, and for status.
public final class Scoreboard {
    /// A slot's published state (`CSYSV_SLOT_*`): `empty` before any process took the slot, `idle`
    /// between jobs, `busy` while the handler runs.
    public enum SlotState: UInt32, Sendable { case empty = 0, idle = 1, busy = 2 }

    private let base: UnsafeMutablePointer<csysv_slot>
    /// The master's "may be asleep" flag, after the slots.
    private let hint: UnsafeMutablePointer<csysv_master_hint>
    /// Number of slots.
    public let count: Int

    private static func bytes(_ slots: Int) -> Int {
        max(slots, 1) * MemoryLayout<csysv_slot>.stride + MemoryLayout<csysv_master_hint>.stride
    }

    private let memory: SharedMemory

    public init(slots: Int) throws {
        memory = try SharedMemory(bytes: Self.bytes(slots))
        let address = memory.base
        base = address.bindMemory(to: csysv_slot.self, capacity: max(slots, 1))
        hint = (address + max(slots, 1) * MemoryLayout<csysv_slot>.stride).bindMemory(to: csysv_master_hint.self, capacity: 1)
        count = slots
    }

    deinit { memory.unmap() }

    /// Called by the master when a new process takes the slot.
    public func reset(_ slot: Int, pid: pid_t) { csysv_slot_reset(base + slot, pid) }
    /// Called by the worker when it starts, to publish its pid in the slot.
    public func setPID(_ slot: Int, _ pid: pid_t) { csysv_slot_set_pid(base + slot, pid) }
    /// The pid the slot's worker published (0 until it has started).
    public func pid(_ slot: Int) -> pid_t { csysv_slot_pid(base + slot) }
    /// Called by the worker before it runs the handler on `job`.
    public func begin(_ slot: Int, job: UInt64) { csysv_slot_begin(base + slot, job, monotonicNanoseconds()) }
    /// Called by the worker when the job is done (its reply may still be batched).
    public func end(_ slot: Int) { csysv_slot_end(base + slot, monotonicNanoseconds()) }

    /// The slot's state as its worker last published it; an unknown value reads as `.empty`.
    public func state(_ slot: Int) -> SlotState { SlotState(rawValue: csysv_slot_state(base + slot)) ?? .empty }
    /// Id of the job the slot's worker is running (meaningful while `state` is `.busy`).
    public func job(_ slot: Int) -> UInt64 { csysv_slot_job(base + slot) }
    /// When the current job began, in `monotonicNanoseconds()` (CLOCK_MONOTONIC, nanoseconds).
    /// Never negative (CLOCK_MONOTONIC is not): a worker's stray write must not make the master's
    /// `now - started` overflow, which would trap and take the pool down.
    public func jobStartedNanoseconds(_ slot: Int) -> Int64 { max(0, csysv_slot_started_ns(base + slot)) }
    /// Jobs finished by the slot's current process (reset to 0 when a new process takes the slot).
    public func jobsHandled(_ slot: Int) -> UInt64 { csysv_slot_jobs(base + slot) }
    /// Moving average of the slot's job durations in nanoseconds (0 until a job is done).
    /// At most 2⁴⁸ ns (3 days) — for the same reason: the master sums the workers' averages.
    public func averageJobNanoseconds(_ slot: Int) -> Int64 { min(csysv_slot_average_ns(base + slot), 1 << 48) }

    /// Master: set before its last look at the reply queue ahead of `epoll_wait`, cleared on waking.
    public func setMasterAsleep(_ asleep: Bool) { csysv_hint_flag_set(&hint.pointee.asleep, asleep ? 1 : 0) }
    /// Worker, after sending replies: whether the master may be asleep, so the doorbell must ring.
    public var masterMayBeAsleep: Bool { csysv_hint_flag_get(&hint.pointee.asleep) != 0 }
    /// Master (ack mode): set before its last retry of held jobs ahead of `epoll_wait`, cleared
    /// when nothing is held.
    public func setMasterWantsRoom(_ wants: Bool) { csysv_hint_flag_set(&hint.pointee.wants_room, wants ? 1 : 0) }
    /// Worker, after taking a message off its queue: whether the master waits for room, so the
    /// doorbell must ring.
    public var masterWantsRoom: Bool { csysv_hint_flag_get(&hint.pointee.wants_room) != 0 }
}
