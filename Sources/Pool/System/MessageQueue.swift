import CSysV
import Glibc
import SystemPackage

/// A buffer laid out as the kernel's `struct msgbuf` (`long mtype` + text), allocated once and
/// reused so the hot path never allocates. Only `text` is exposed.
public final class MessageBuffer {
    /// Start of the allocation (the `mtype` header).
    let base: UnsafeMutableRawPointer
    /// The text area: `capacity` bytes after the header.
    public let text: UnsafeMutableRawBufferPointer
    /// Largest text this buffer holds.
    public var capacity: Int { text.count }

    /// Whether `base` was allocated here (and is freed with the buffer).
    private let owned: Bool

    /// Bytes of the `mtype` header before the text.
    public static var headerBytes: Int { Int(csysv_msg_header_size()) }

    /// Allocates room for the `mtype` header plus `capacity` bytes of text (at most `msgmax` is useful).
    public init(capacity: Int) {
        base = .allocate(byteCount: Self.headerBytes + capacity, alignment: MemoryLayout<Int>.alignment)
        text = UnsafeMutableRawBufferPointer(start: csysv_msg_text(base), count: capacity)
        owned = true
    }

    /// Lays a buffer over memory owned elsewhere (`headerBytes + capacity` bytes at `memory`, aligned
    /// for `long`) — shared memory the master can read after the worker that received into it died.
    public init(borrowing memory: UnsafeMutableRawPointer, capacity: Int) {
        base = memory
        text = UnsafeMutableRawBufferPointer(start: csysv_msg_text(base), count: capacity)
        owned = false
    }

    /// The `mtype` of the message last received into the buffer (whatever was stored there before
    /// if none was).
    public var type: Int { base.load(as: Int.self) }

    deinit { if owned { base.deallocate() } }
}

/// What IPC_STAT reports about a queue.
public struct QueueStatus: Equatable, Sendable {
    /// Messages in the queue (`msg_qnum`).
    public var messages: Int
    /// Bytes of text in the queue (`__msg_cbytes`).
    public var bytes: Int
    /// Capacity in bytes (`msg_qbytes`).
    public var capacityBytes: Int
    /// Permission bits (within 0777).
    public var mode: Int32
    /// The owner's user id.
    public var uid: uid_t
    /// The creator's user id (`cuid`), which IPC_SET never changes.
    public var creatorUID: uid_t
    /// Pid of the last process to send (`msg_lspid`).
    public var lastSendPID: pid_t
    /// Pid of the last process to receive (`msg_lrpid`).
    public var lastReceivePID: pid_t
    /// Creation time or last IPC_SET (`msg_ctime`), seconds since the epoch.
    public var changeTime: Int
}

/// A System V message queue, identified by its kernel id.
///
/// Queues outlive processes: whoever creates one must `remove()` it. In the pool only the
/// master does.
public struct MessageQueue: Hashable, Sendable, CustomStringConvertible {
    /// The kernel's queue id (`msqid`), as `ipcs -q` shows it.
    public let id: Int32

    /// Refers to an existing queue by id; creates nothing.
    public init(id: Int32) { self.id = id }

    /// `queue ID`, for logs.
    public var description: String { "queue \(id)" }

    /// Creates a new private queue (`IPC_PRIVATE`) with permission bits `mode`.
    ///
    /// The corresponding C function is `msgget`.
    public static func createPrivate(mode: Int32 = 0o600) throws -> MessageQueue {
        #if DEBUG
        if DebugFailpoint.queues.nextCallFails() { throw SystemError("msgget", .noSpace) }
        #endif
        return try MessageQueue(id: valueOrErrno("msgget") { csysv_msgget_private(mode) }.get())
    }

    /// Sends `length` bytes of `buffer.text` with type `type` (> 0).
    ///
    /// With `nowait` a full queue returns `false` instead of blocking; without it the call blocks
    /// until there is room. Other failures throw (E2BIG never: the kernel checks `msgmax` with
    /// EINVAL; EIDRM/EINVAL when the queue was removed).
    ///
    /// The corresponding C function is `msgsnd`.
    @discardableResult
    public func send(_ buffer: MessageBuffer, type: Int, length: Int, nowait: Bool) throws -> Bool {
        precondition(type > 0 && length <= buffer.capacity)
        return try valueOrWouldBlock("msgsnd") {
            csysv_msgsnd(id, buffer.base, type, length, nowait ? 1 : 0)
        }.get() != nil
    }

    /// Receives the first message whose type matches `type` (0: any; > 0: exactly; < 0: lowest
    /// type ≤ |type|) into `buffer.text`.
    ///
    /// Returns `nil` when `nowait` is set and nothing is waiting (ENOMSG). A message larger than
    /// the buffer throws E2BIG and stays in the queue: messages are never truncated. With
    /// `retryOnInterrupt` false a signal makes it throw EINTR (msgrcv is never restarted by
    /// SA_RESTART), so a blocked worker can notice a request to stop.
    ///
    /// The corresponding C function is `msgrcv`.
    public func receive(into buffer: MessageBuffer, type: Int = 0, nowait: Bool,
                        retryOnInterrupt: Bool = true) throws -> (type: Int, length: Int)? {
        var received = 0
        let result = valueOrErrno("msgrcv", retryOnInterrupt: retryOnInterrupt) {
            csysv_msgrcv(id, buffer.base, buffer.capacity, type, nowait ? 1 : 0, &received)
        }
        switch result {
        case .success(let length): return (received, length)
        case .failure(let error) where error.errno == .noMessage: return nil
        case .failure(let error): throw error
        }
    }

    /// Takes the next message even if it is larger than the buffer, keeping only what fits;
    /// `nil` when `nowait` and the queue is empty. For an oversized message (sent by something
    /// that is not the pool, or before msgmax was lowered) that `receive` would fail on with E2BIG
    /// every time, leaving the queue's head stuck.
    ///
    /// The corresponding C function is `msgrcv` with `MSG_NOERROR`.
    public func receiveTruncating(into buffer: MessageBuffer, type: Int = 0, nowait: Bool = true,
                                  retryOnInterrupt: Bool = true) throws -> (type: Int, length: Int)? {
        var received = 0
        let result = valueOrErrno("msgrcv", retryOnInterrupt: retryOnInterrupt) {
            csysv_msgrcv_truncating(id, buffer.base, buffer.capacity, type, nowait ? 1 : 0, &received)
        }
        switch result {
        case .success(let length): return (received, length)
        case .failure(let error) where error.errno == .noMessage: return nil
        case .failure(let error): throw error
        }
    }

    /// Depth, capacity and owner of the queue.
    ///
    /// The corresponding C function is `msgctl(IPC_STAT)`.
    public func status() throws -> QueueStatus {
        var info = csysv_msqinfo()
        _ = try valueOrErrno("msgctl(IPC_STAT)") { csysv_msgctl_stat(id, &info) }.get()
        return QueueStatus(
            messages: Int(info.messages), bytes: Int(info.bytes), capacityBytes: Int(info.max_bytes),
            mode: Int32(info.mode), uid: info.uid, creatorUID: info.creator_uid,
            lastSendPID: info.last_send_pid, lastReceivePID: info.last_receive_pid,
            changeTime: info.change_time)
    }

    /// Whether the queue is gone (IPC_RMID by someone). A call failing with EINVAL means that, or
    /// for `msgsnd` a message over `kernel.msgmax` (lowered while running): only IPC_STAT, which
    /// fails with EINVAL for a removed id alone, tells the two apart.
    ///
    /// The corresponding C function is `msgctl(IPC_STAT)`.
    public func isRemoved() -> Bool {
        do {
            _ = try status()
            return false
        } catch let error as SystemError {
            return error.errno == .invalidArgument || error.errno == .identifierRemoved
        } catch {
            return false
        }
    }

    /// Sets the queue's capacity in bytes. Above `/proc/sys/kernel/msgmnb` this needs
    /// CAP_SYS_RESOURCE and otherwise throws EPERM.
    ///
    /// The corresponding C function is `msgctl(IPC_SET)`.
    public func setCapacity(bytes: Int) throws {
        _ = try valueOrErrno("msgctl(IPC_SET)") { csysv_msgctl_set_max_bytes(id, UInt(bytes)) }.get()
    }

    /// Makes `uid`/`gid` the queue's owner, so workers running as that user may use it (mode
    /// 0600 lets the owner in; the creator keeps its access only as root, CAP_IPC_OWNER).
    ///
    /// The corresponding C function is `msgctl(IPC_SET)`.
    public func setOwner(uid: uid_t, gid: gid_t) throws {
        _ = try valueOrErrno("msgctl(IPC_SET)") { csysv_msgctl_set_owner(id, uid, gid) }.get()
    }

    /// Removes the queue. Processes blocked on it wake with EIDRM.
    ///
    /// The corresponding C function is `msgctl(IPC_RMID)`.
    public func remove() throws {
        _ = try valueOrErrno("msgctl(IPC_RMID)") { csysv_msgctl_remove(id) }.get()
    }
}

/// The kernel's System V message queue limits, from `/proc/sys/kernel`.
public struct QueueLimits: Sendable, CustomStringConvertible {
    /// Largest message text in bytes (`msgmax`).
    public var maxMessageBytes: Int
    /// Default capacity of a new queue in bytes (`msgmnb`).
    public var defaultQueueBytes: Int
    /// Largest number of queues on the system (`msgmni`).
    public var maxQueues: Int

    /// Limits as given (what a configuration would meet on another kernel).
    public init(maxMessageBytes: Int, defaultQueueBytes: Int, maxQueues: Int) {
        self.maxMessageBytes = maxMessageBytes
        self.defaultQueueBytes = defaultQueueBytes
        self.maxQueues = maxQueues
    }

    /// Reads the limits in force now; falls back to the Linux defaults if /proc is unreadable.
    public static func current() -> QueueLimits {
        QueueLimits(
            maxMessageBytes: readProcInt("/proc/sys/kernel/msgmax") ?? 8192,
            defaultQueueBytes: readProcInt("/proc/sys/kernel/msgmnb") ?? 16384,
            maxQueues: readProcInt("/proc/sys/kernel/msgmni") ?? 32000)
    }

    /// `msgmax=… msgmnb=… msgmni=…`, as the start-up log shows the limits.
    public var description: String {
        "msgmax=\(maxMessageBytes) msgmnb=\(defaultQueueBytes) msgmni=\(maxQueues)"
    }
}

