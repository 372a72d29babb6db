/// One client connection as the master sees it: buffered input, buffered output, and the
/// responses it is owed, in request order. Responses may be resolved out of order (workers finish
/// when they finish) but are written strictly in order.
///
/// Stored properties are `@exclusivity(unchecked)` for the reason given on `Master`.
final class Connection {
    struct Pending {
        var id: UInt64
        var status: ResponseStatus?
        var body: [UInt8]
    }

    let key: UInt64
    let fd: SocketFD
    let input: ByteBuffer
    let output: ByteBuffer
    /// Responses owed, oldest first; `pending[pendingHead]` has sequence number `headSequence`.
    @exclusivity(unchecked) private var pending: [Pending] = []
    @exclusivity(unchecked) private var pendingHead = 0
    @exclusivity(unchecked) private(set) var headSequence: UInt64 = 0
    @exclusivity(unchecked) var lastActivity: Int64
    /// The peer sent end of stream.
    @exclusivity(unchecked) var peerClosed = false
    /// Close once every owed response is written (oneshot after its reply; framed after a fatal
    /// protocol error).
    @exclusivity(unchecked) var closeWhenDone = false
    /// Oneshot: the one message has been taken; nothing more is read.
    @exclusivity(unchecked) var messageTaken = false
    /// The peer is gone in both directions (EPOLLHUP/EPOLLERR): epoll would report it on every
    /// wait, so the fd is taken out of epoll while its last responses are still being computed.
    @exclusivity(unchecked) var hungUp = false
    @exclusivity(unchecked) var detached = false
    /// Ack mode, the peer gone: its `ok`s are thrown away instead of written (EPIPE) while what it
    /// wrote is still read and queued.
    @exclusivity(unchecked) var discardsOutput = false
    /// After a refusal the peer may still be sending: closing with unread input makes the kernel
    /// reset the connection and the client could lose the refusal. So: shut down our side, discard
    /// input until the peer closes (or the idle timeout), then close.
    @exclusivity(unchecked) var lingerOnClose = false
    @exclusivity(unchecked) var lingering = false
    /// Bytes read and thrown away after the message or a refusal (`Master.drainAndIgnore`).
    @exclusivity(unchecked) var discardedBytes = 0
    /// Events registered with epoll now, to skip redundant epoll_ctl calls.
    @exclusivity(unchecked) var interest: Epoll.Events = []
    /// The operator's channel (`<socket>.ctl`), not a client.
    @exclusivity(unchecked) var isControl = false
    /// Added to epoll (a oneshot connection whose message came with the accept never is).
    @exclusivity(unchecked) var registered = false
    /// In the master's set of connections to flush at the end of this loop turn.
    @exclusivity(unchecked) var isDirty = false

    /// Responses go out in request order (oneshot, framed); tagged connections answer each
    /// request when it completes and keep no list of what is owed, only how many.
    let ordered: Bool
    /// Tagged: requests accepted and not yet answered.
    @exclusivity(unchecked) var unorderedInflight = 0

    init(key: UInt64, fd: SocketFD, now: Int64, inputCapacity: Int, ordered: Bool = true) {
        self.key = key
        self.fd = fd
        self.ordered = ordered
        self.lastActivity = now
        input = ByteBuffer(capacity: inputCapacity)
        output = ByteBuffer(capacity: 256)
    }

    /// Requests accepted and not yet written back.
    var inflight: Int { ordered ? pending.count - pendingHead : unorderedInflight }

    /// Everything owed has been written.
    var isQuiescent: Bool { inflight == 0 && output.isEmpty }

    /// Registers a new request; returns its sequence number on this connection.
    func push(id: UInt64) -> UInt64 {
        pending.append(Pending(id: id, status: nil, body: []))
        return headSequence + UInt64(pending.count - pendingHead - 1)
    }

    /// Records the outcome of request `sequence`. Returns false if it was already answered.
    func resolve(_ sequence: UInt64, status: ResponseStatus, body: [UInt8]) -> Bool {
        guard sequence >= headSequence else { return false }
        let index = pendingHead + Int(sequence - headSequence)
        guard index < pending.count, pending[index].status == nil else { return false }
        pending[index].status = status
        pending[index].body = body
        return true
    }

    /// Takes request `sequence` off the list if it is the oldest one owed and still unanswered:
    /// its response can then be written at once, without being stored first.
    func takeHead(_ sequence: UInt64) -> Bool {
        guard sequence == headSequence, pendingHead < pending.count, pending[pendingHead].status == nil else { return false }
        advanceHead()
        return true
    }

    /// Removes and returns the oldest response if it is resolved.
    func popReady() -> (status: ResponseStatus, body: [UInt8])? {
        guard pendingHead < pending.count, let status = pending[pendingHead].status else { return nil }
        let body = pending[pendingHead].body
        advanceHead()
        return (status, body)
    }

    private func advanceHead() {
        // The body was handed out (or never stored); do not keep it alive in a dead entry.
        if !pending[pendingHead].body.isEmpty { pending[pendingHead].body = [] }
        pendingHead += 1
        headSequence += 1
        // Compacting costs as much for one dead entry as for many: do it every 32 requests on
        // an idle connection, or once 1024 have piled up before live ones.
        if pendingHead == pending.count && pendingHead >= 32 {
            pending.removeAll(keepingCapacity: pending.count <= 64)
            pendingHead = 0
        } else if pendingHead >= 1024 {
            pending.removeFirst(pendingHead)
            pendingHead = 0
        }
    }
}
