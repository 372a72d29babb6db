import Glibc
import Pool
import Synchronization

/// What every load thread reads (immutable once threads start, except the atomics).
final class LoadPlan: @unchecked Sendable {
    enum WireProtocol: String { case oneshot, framed, tagged }

    let socketPath: String
    let wireProtocol: WireProtocol
    let connections: Int
    let depth: Int
    let payload: [UInt8]
    let skewPercent: Double
    let skewPayload: [UInt8]
    let expect: [UInt8]?
    /// --verify: a reply must be its request's payload, echoed exactly.
    let verify: Bool
    /// With --verify and payloads of 8 B or more, each payload's last 8 bytes are a stamp (its
    /// connection and sequence number), so a reply to another request is told from its own.
    var stamped: Bool { verify && payload.count >= Stamp.bytes }
    let requests: Int?          // nil: run for `duration`
    let duration: Double
    let warmup: Double
    let timeout: Double

    /// Set by the main thread before `go` is released, read by load threads after they see it.
    var measureStart: UInt64 = 0
    var stopAt: UInt64 = .max
    let go = Atomic<Bool>(false)
    /// Load threads block reading this pipe until `release()` closes its write end: no polling,
    /// so a thousand waiting threads cost nothing while the others are being started.
    private let gate: (read: Int32, write: Int32)
    let ready = Atomic<Int>(0)
    let finished = Atomic<Int>(0)
    let issued = Atomic<Int>(0)

    init(socketPath: String, wireProtocol: WireProtocol, connections: Int, depth: Int, payload: [UInt8],
         skewPercent: Double, skewPayload: [UInt8], expect: [UInt8]?, verify: Bool, requests: Int?,
         duration: Double, warmup: Double, timeout: Double) {
        self.socketPath = socketPath
        self.wireProtocol = wireProtocol
        self.connections = connections
        self.depth = depth
        self.payload = payload
        self.skewPercent = skewPercent
        self.skewPayload = skewPayload
        self.expect = expect
        self.verify = verify
        self.requests = requests
        self.duration = duration
        self.warmup = warmup
        self.timeout = timeout
        var fds: [Int32] = [-1, -1]
        precondition(pipe(&fds) == 0, "pipe: \(errnoText(errno))")   // pool-bench never execs
        gate = (fds[0], fds[1])
    }

    deinit {
        close(gate.read)
        if !go.load(ordering: .relaxed) { close(gate.write) }
    }

    /// Starts every load thread (after `measureStart` and `stopAt` are set).
    func release() {
        go.store(true, ordering: .releasing)
        close(gate.write)
    }

    /// Blocks until `release()`.
    func waitForRelease() {
        while !go.load(ordering: .acquiring) {
            var probe = pollfd(fd: gate.read, events: Int16(POLLIN), revents: 0)
            _ = poll(&probe, 1, 100)
        }
    }

    enum Admission { case warmup, measured, stop }

    /// May a request be sent at `now`, and is it measured?
    @inline(__always)
    func admit(_ now: UInt64) -> Admission {
        if now < measureStart { return .warmup }
        if let requests {
            return issued.wrappingAdd(1, ordering: .relaxed).oldValue < requests ? .measured : .stop
        }
        return now < stopAt ? .measured : .stop
    }
}

/// One load thread's results; read by the main thread only after joining it (except the atomics).
final class LoadResult: @unchecked Sendable {
    let completed = Atomic<Int>(0)     // measured requests finished (ok or not): progress line
    let failed = Atomic<Int>(0)        // of which errors
    var latency = Histogram()          // every measured request answered ok (errors are counted, not timed)
    var normalLatency = Histogram()    // the same, without the skewed ones (only kept with --skew)
    /// Framed with --skew: the non-skew requests sent while no skew request was in flight before
    /// them on their connection. In-order responses hold the others behind the skew job whatever
    /// the dispatch does, so this separates the wait dispatch can change from the protocol's.
    var clearLatency = Histogram()
    var ok = 0
    var errors: [String: Int] = [:]
    var lastCompletion: UInt64 = 0     // the last reply (ok or error status)
    /// The last request that failed without a reply (a timeout, reset, failed connect). With
    /// --duration it counts only up to the end of the window: a request timing out 10 s after it
    /// would otherwise stretch the run's seconds and cut its requests/s.
    var lastUnanswered: UInt64 = 0
    var warmupRequests = 0
    /// --verify, framed: measured replies that came for a later request than the oldest one in
    /// flight (framed promises request order; each is still matched to its own request).
    var outOfOrder = 0

    var unanswered = 0                 // of the errors, requests that got no reply at all

    /// Counts a measured request as an error under `key`; `answered`: the server replied (with an
    /// error status or unexpected text), as opposed to a timeout, reset or failed connect.
    @inline(__always)
    func fail(_ key: String, measured: Bool, answered: Bool = true) {
        guard measured else { return }
        if answered {
            lastCompletion = max(lastCompletion, monotonicNanos())
        } else {
            unanswered += 1
            lastUnanswered = max(lastUnanswered, monotonicNanos())
        }
        errors[key, default: 0] += 1
        failed.add(1, ordering: .relaxed)
        completed.add(1, ordering: .relaxed)
    }
}

@inline(__always)
func monotonicNanos() -> UInt64 {
    var ts = timespec()
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return UInt64(ts.tv_sec) &* 1_000_000_000 &+ UInt64(ts.tv_nsec)
}

func errnoText(_ code: Int32) -> String { String(cString: strerror(code)) }

/// A blocking Unix stream connection with send and receive timeouts (the send timeout also bounds
/// `connect`, which blocks while the listener's backlog is full). Returns the fd or `-errno`.
func connectUnix(_ path: String, timeout: Double) -> Int32 {
    let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return -errno }
    // The library's conversion: never a zero timeval, which would mean "wait forever".
    var tv = SocketFD.socketTimeout(timeout)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
    var address = sockaddr_un()
    address.sun_family = sa_family_t(AF_UNIX)
    let bytes = Array(path.utf8)
    let capacity = MemoryLayout.size(ofValue: address.sun_path)
    guard bytes.count < capacity else { close(fd); return -ENAMETOOLONG }
    withUnsafeMutableBytes(of: &address.sun_path) { raw in
        raw.copyBytes(from: bytes)
        raw[bytes.count] = 0
    }
    let rc = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
        }
    }
    if rc != 0 {
        let code = errno
        close(fd)
        return -code
    }
    return fd
}

/// Writes every byte (blocking). Returns 0 or an errno.
func writeAll(_ fd: Int32, _ base: UnsafeRawPointer, _ count: Int) -> Int32 {
    var done = 0
    while done < count {
        let n = send(fd, base + done, count - done, Int32(MSG_NOSIGNAL))
        if n < 0 {
            if errno == EINTR { continue }
            return errno
        }
        done += n
    }
    return 0
}

/// A tiny per-thread generator for the skew choice (xorshift64*).
struct SkewPicker {
    var state: UInt64
    let threshold: UInt64      // out of 1,000,000
    init(seed: Int, percent: Double) {
        state = 0x9E37_79B9_7F4A_7C15 &* UInt64(seed + 1)
        threshold = UInt64(max(0, min(100, percent)) * 10_000)
    }
    @inline(__always)
    mutating func next() -> Bool {
        guard threshold > 0 else { return false }
        state ^= state >> 12; state ^= state << 25; state ^= state >> 27
        return (state &* 0x2545_F491_4F6C_DD1D) % 1_000_000 < threshold
    }
}

/// --verify's stamp: connection index and sequence number, 8 bytes big-endian at the end of a
/// payload. Sequence numbers start at 1, so no stamp is 0 (a skewed slot's marker).
enum Stamp {
    static let bytes = 8

    @inline(__always)
    static func make(connection: Int, sequence: UInt64) -> UInt64 {
        UInt64(truncatingIfNeeded: connection) << 40 | (sequence & (1 << 40 - 1))
    }

    @inline(__always)
    static func write(_ stamp: UInt64, at end: UnsafeMutableRawPointer) {
        (end - bytes).storeBytes(of: stamp.bigEndian, as: UInt64.self)
    }

    @inline(__always)
    static func read(end: UnsafeRawPointer) -> UInt64 {
        UInt64(bigEndian: (end - bytes).loadUnaligned(as: UInt64.self))
    }
}

/// Is `body` exactly `payload`, carrying `stamp` in its last 8 bytes when stamped?
@inline(__always)
func echoes(_ body: UnsafeRawBufferPointer, _ payload: [UInt8], stamp: UInt64, stamped: Bool) -> Bool {
    guard body.count == payload.count else { return false }
    if body.isEmpty { return true }
    let fixed = stamped ? payload.count - Stamp.bytes : payload.count
    let same = payload.withUnsafeBytes { memcmp(body.baseAddress!, $0.baseAddress!, fixed) == 0 }
    return same && (!stamped || Stamp.read(end: body.baseAddress! + body.count) == stamp)
}

/// Printable form of a reply, for error keys (non-printable bytes as \xNN, cut at 60 bytes).
func printable(_ bytes: UnsafeRawBufferPointer) -> String {
    var text = ""
    for byte in bytes.prefix(60) {
        if byte >= 0x20 && byte < 0x7f && byte != UInt8(ascii: "\\") {
            text.unicodeScalars.append(Unicode.Scalar(byte))
        } else {
            let hex = Array("0123456789abcdef")
            text += "\\x" + String(hex[Int(byte >> 4)]) + String(hex[Int(byte & 15)])
        }
    }
    if bytes.count > 60 { text += "…" }
    return text
}

func waitForGo(_ plan: LoadPlan) {
    plan.ready.add(1, ordering: .releasing)
    plan.waitForRelease()
}

// MARK: - oneshot

/// Oneshot: each request is connect, write the payload, read until EOF (the reply), close.
func runOneshot(plan: LoadPlan, result: LoadResult, index: Int) {
    var picker = SkewPicker(seed: index, percent: plan.skewPercent)
    var reply = [UInt8](repeating: 0, count: 65_536)
    let oneshotError = Array("error: ".utf8)
    var request = plan.payload
    var sequence: UInt64 = 0
    var stamp: UInt64 = 0
    waitForGo(plan)
    while true {
        let start = monotonicNanos()
        let admission = plan.admit(start)
        if admission == .stop { break }
        let measured = admission == .measured
        if !measured { result.warmupRequests += 1 }
        let skewed = picker.next()
        let fd = connectUnix(plan.socketPath, timeout: plan.timeout)
        if fd < 0 {
            result.fail("connect: " + errnoText(-fd), measured: measured, answered: false)
            usleep(1000)
            continue
        }
        if plan.stamped && !skewed {
            sequence += 1
            stamp = Stamp.make(connection: index, sequence: sequence)
            request.withUnsafeMutableBytes { Stamp.write(stamp, at: $0.baseAddress! + $0.count) }
        }
        let payload = skewed ? plan.skewPayload : request
        let writeError = payload.withUnsafeBytes { writeAll(fd, $0.baseAddress!, $0.count) }
        if writeError != 0 && writeError != EPIPE && writeError != ECONNRESET {
            // EPIPE/ECONNRESET: the server may have answered and closed already; read it.
            close(fd)
            result.fail("write: " + errnoText(writeError), measured: measured, answered: false)
            continue
        }
        var length = 0
        var readError: Int32 = 0
        while true {
            if length == reply.count { reply += [UInt8](repeating: 0, count: reply.count) }
            let n = reply.withUnsafeMutableBytes { read(fd, $0.baseAddress! + length, $0.count - length) }
            if n > 0 { length += n; continue }
            if n == 0 { break }
            if errno == EINTR { continue }
            if errno == ECONNRESET { break }
            readError = errno
            break
        }
        close(fd)
        let end = monotonicNanos()
        if readError != 0 {
            let key = readError == EAGAIN ? "timeout (no reply in \(plan.timeout) s)" : "read: " + errnoText(readError)
            result.fail(key, measured: measured, answered: false)
            continue
        }
        guard measured else { continue }
        result.lastCompletion = end
        let verdict: String? = reply.withUnsafeBytes { raw in
            let body = UnsafeRawBufferPointer(rebasing: raw[0..<length])
            if length == 0 { return "empty reply (closed without answering)" }
            // The server's refusal first: an --expect of "" or "error" must not pass it as ok.
            if body.starts(with: oneshotError) { return printable(body) }
            if !skewed && plan.verify && !echoes(body, plan.payload, stamp: stamp, stamped: plan.stamped) {
                return "reply is not the request's echo (--verify): " + printable(body)
            }
            if !skewed, let expect = plan.expect, !body.starts(with: expect) { return printable(body) }
            return nil
        }
        if let verdict {
            result.fail(verdict, measured: true, answered: length > 0)
        } else {
            result.ok += 1
            result.completed.add(1, ordering: .relaxed)
            result.latency.record(end - start)
            if plan.skewPercent > 0 && !skewed { result.normalLatency.record(end - start) }
        }
    }
    result.lastCompletion = max(result.lastCompletion, plan.measureStart)
}

// MARK: - framed

/// Framed and tagged: one persistent connection keeping `depth` requests in flight. After each
/// read it takes every complete response, then sends as many new requests as were answered in one
/// write. What the socket does not take at once is sent as it takes it, while responses are read
/// meanwhile: a server stops reading a client that does not read its responses (1 MiB of them
/// unread, in pool-server), so waiting for the whole write first could wait for ever. Latency is
/// from the write that carried a request to the read that completed its response. Framed responses match requests in order (the protocol answers in request order);
/// tagged ones by tag, which is the request's slot (0..<depth), so they may come in any order.
func runFramed(plan: LoadPlan, result: LoadResult, index: Int) {
    var picker = SkewPicker(seed: index, percent: plan.skewPercent)
    let depth = plan.depth
    let tagged = plan.wireProtocol == .tagged
    var normalFrame: [UInt8] = []
    plan.payload.withUnsafeBytes { FrameCodec.appendRequest($0, tag: tagged ? 0 : nil, to: &normalFrame) }
    var skewFrame: [UInt8] = []
    plan.skewPayload.withUnsafeBytes { FrameCodec.appendRequest($0, tag: tagged ? 0 : nil, to: &skewFrame) }
    let frameCapacity = max(normalFrame.count, skewFrame.count)

    // Requests in flight, by slot: send time and flags (1 measured, 2 skewed, 4 in flight,
    // 8 sent behind a skewed request in flight on this connection: framed only, see clearLatency).
    // Framed: slots form a ring, oldest at `head`. Tagged: any free slot, its number the tag.
    var sentAt = [UInt64](repeating: 0, count: depth)
    var flags = [UInt8](repeating: 0, count: depth)
    var head = 0
    var inflight = 0
    var freeSlots = Array((0..<depth).reversed())
    var skewedInflight = 0
    // --verify: each slot's stamp (0: skewed or unstamped), and this connection's last sequence.
    var stamps = [UInt64](repeating: 0, count: depth)
    var sequence: UInt64 = 0

    let output = UnsafeMutableRawPointer.allocate(byteCount: depth * frameCapacity, alignment: 8)
    defer { output.deallocate() }
    var inputCapacity = max(65_536, 2 * depth * (frameCapacity + 8))
    var input = UnsafeMutableRawPointer.allocate(byteCount: inputCapacity, alignment: 8)
    defer { input.deallocate() }
    var inputLength = 0
    // Requests staged but not yet taken by the socket: output[outputStart..<outputEnd].
    var outputStart = 0
    var outputEnd = 0
    let timeoutMilliseconds = Int32(min(plan.timeout * 1000, Double(Int32.max)).rounded(.up))

    var fd = connectUnix(plan.socketPath, timeout: plan.timeout)
    var connectError = fd < 0 ? -fd : 0
    waitForGo(plan)
    var sending = true

    /// Every request in flight failed (connection lost): count them, forget them.
    func failInflight(_ key: String) {
        for slot in 0..<depth where flags[slot] & 4 != 0 {
            result.fail(key, measured: flags[slot] & 1 != 0, answered: false)
            flags[slot] = 0
        }
        head = 0
        inflight = 0
        skewedInflight = 0
        inputLength = 0
        outputStart = 0
        outputEnd = 0
        freeSlots = Array((0..<depth).reversed())
    }

    while true {
        if fd < 0 {
            guard sending else { break }
            if connectError == 0 {
                fd = connectUnix(plan.socketPath, timeout: plan.timeout)
                if fd < 0 { connectError = -fd }
            }
            if fd < 0 {
                // A failed connect costs one request, so --requests always ends.
                let admission = plan.admit(monotonicNanos())
                if admission == .stop { sending = false; break }
                result.fail("connect: " + errnoText(connectError), measured: admission == .measured, answered: false)
                connectError = 0
                usleep(10_000)
                continue
            }
        }
        // Top up to `depth` in flight, in one write. The staged bytes of requests in flight never
        // exceed `depth` frames, so the unsent rest moved to the front leaves room for the new ones.
        if sending && inflight < depth {
            let now = monotonicNanos()
            if outputStart > 0 {
                if outputEnd > outputStart { memmove(output, output + outputStart, outputEnd - outputStart) }
                outputEnd -= outputStart
                outputStart = 0
            }
            var length = outputEnd
            while inflight < depth {
                let admission = plan.admit(now)
                if admission == .stop { sending = false; break }
                let skewed = picker.next()
                let frame = skewed ? skewFrame : normalFrame
                frame.withUnsafeBytes { (output + length).copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
                let slot = tagged ? freeSlots.removeLast() : (head + inflight) % depth
                if tagged {
                    (output + length + FrameCodec.lengthBytes).storeBytes(of: UInt32(slot).bigEndian, as: UInt32.self)
                }
                var stamp: UInt64 = 0
                if plan.stamped && !skewed {
                    sequence += 1
                    stamp = Stamp.make(connection: index, sequence: sequence)
                    Stamp.write(stamp, at: output + length + frame.count)
                }
                stamps[slot] = stamp
                length += frame.count
                sentAt[slot] = now
                let behind = !tagged && skewedInflight > 0
                flags[slot] = (admission == .measured ? 1 : 0) | (skewed ? 2 : 0) | 4 | (behind ? 8 : 0)
                if skewed { skewedInflight += 1 }
                if admission == .warmup { result.warmupRequests += 1 }
                inflight += 1
            }
            outputEnd = length
        }
        // Send what the socket takes now.
        while outputEnd > outputStart {
            let n = send(fd, output + outputStart, outputEnd - outputStart, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
            if n < 0 && errno == EINTR { continue }
            if n < 0 { break }
            outputStart += n
        }
        if outputEnd > outputStart && errno != EAGAIN && errno != EWOULDBLOCK {
            let error = errno
            close(fd); fd = -1
            failInflight("write: " + errnoText(error))
            continue
        }
        if inflight == 0 {
            if !sending { break }
            continue
        }
        if outputEnd > outputStart {
            // Part of the requests is still unsent: wait for room or for responses, whichever comes.
            var ready = pollfd(fd: fd, events: Int16(POLLIN | POLLOUT), revents: 0)
            let polled = poll(&ready, 1, timeoutMilliseconds)
            if polled < 0 && errno == EINTR { continue }
            if polled == 0 {
                close(fd); fd = -1
                failInflight("timeout (write blocked \(plan.timeout) s)")
                continue
            }
            // Room only: send more before reading (a read now would wait).
            if polled > 0 && ready.revents & Int16(POLLIN | POLLERR | POLLHUP) == 0 { continue }
        }
        // Read what is there (blocking, bounded by SO_RCVTIMEO).
        if inputLength == inputCapacity {
            let bigger = UnsafeMutableRawPointer.allocate(byteCount: inputCapacity * 2, alignment: 8)
            bigger.copyMemory(from: input, byteCount: inputLength)
            input.deallocate()
            input = bigger
            inputCapacity *= 2
        }
        let n = read(fd, input + inputLength, inputCapacity - inputLength)
        if n <= 0 {
            if n < 0 && errno == EINTR { continue }
            let key = n == 0 ? "connection closed by server"
                : errno == EAGAIN ? "timeout (no reply in \(plan.timeout) s)"
                : "read: " + errnoText(errno)
            close(fd); fd = -1
            failInflight(key)
            continue
        }
        inputLength += n
        let now = monotonicNanos()
        var position = 0
        while let (tag, status, body, total) = decodeResponse(
            UnsafeRawBufferPointer(start: input + position, count: inputLength - position), tagged: tagged) {
            defer { position += total }
            let slot = tagged ? Int(tag) : head
            guard inflight > 0, slot < depth, flags[slot] & 4 != 0 else {
                // An error of the server's, counted once measuring has begun like any other.
                result.fail(tagged ? "response with a tag no request in flight has" : "response to no request",
                            measured: now >= plan.measureStart)
                continue
            }
            let bodyBytes = UnsafeRawBufferPointer(start: input + position + body.lowerBound, count: body.count)
            var wrongBody = false
            if plan.verify && status == 0
                && !(flags[slot] & 2 == 0 && echoes(bodyBytes, plan.payload, stamp: stamps[slot], stamped: plan.stamped)) {
                // Not the echo of the request it answers (or that one is skewed, whose reply is not
                // checked). Framed and stamped: it may be the echo of a later request on this
                // connection, answered out of order; swap that one to the head and count it.
                var match: Int? = nil
                if !tagged && plan.stamped && bodyBytes.count == plan.payload.count {
                    let wanted = Stamp.read(end: bodyBytes.baseAddress! + bodyBytes.count)
                    for offset in 1..<max(inflight, 1) {
                        let other = (head + offset) % depth
                        if stamps[other] == wanted && flags[other] & 6 == 4
                            && echoes(bodyBytes, plan.payload, stamp: wanted, stamped: true) {
                            match = other
                            break
                        }
                    }
                }
                if let other = match {
                    // Rotated to the head, not swapped: the requests it overtook keep their order
                    // behind it, so the reply to the oldest of them, when it comes, is not
                    // counted out of order too (a swap put the head at the match's place).
                    var index = other
                    while index != head {
                        let previous = (index + depth - 1) % depth
                        sentAt.swapAt(index, previous)
                        flags.swapAt(index, previous)
                        stamps.swapAt(index, previous)
                        index = previous
                    }
                    if flags[head] & 1 != 0 { result.outOfOrder += 1 }
                } else {
                    wrongBody = flags[slot] & 2 == 0
                }
            }
            flags[slot] &= ~4
            if tagged { freeSlots.append(slot) } else { head = (head + 1) % depth }
            inflight -= 1
            let skewed = flags[slot] & 2 != 0
            if skewed { skewedInflight -= 1 }
            let measured = flags[slot] & 1 != 0
            guard measured else { continue }
            result.lastCompletion = now
            if status != 0 {
                result.fail(ResponseStatus(rawValue: status)?.description ?? "status \(status)", measured: true)
            } else if wrongBody {
                result.fail("ok, but the body is not the request's echo (--verify)", measured: true)
            } else if !skewed, let expect = plan.expect, !bodyBytes.starts(with: expect) {
                result.fail("ok, but the body does not start with --expect", measured: true)
            } else {
                result.ok += 1
                result.completed.add(1, ordering: .relaxed)
                let latency = now &- sentAt[slot]
                result.latency.record(latency)
                if plan.skewPercent > 0 && !skewed {
                    result.normalLatency.record(latency)
                    if !tagged && flags[slot] & 8 == 0 { result.clearLatency.record(latency) }
                }
            }
        }
        if position > 0 {
            if position < inputLength { (input).copyMemory(from: input + position, byteCount: inputLength - position) }
            inputLength -= position
        }
    }
    if fd >= 0 { close(fd) }
    result.lastCompletion = max(result.lastCompletion, plan.measureStart)
}

/// One framed or tagged response (tag 0 when framed).
@inline(__always)
private func decodeResponse(_ bytes: UnsafeRawBufferPointer, tagged: Bool) -> (tag: UInt32, status: UInt8, body: Range<Int>, total: Int)? {
    if tagged { return FrameCodec.decodeTaggedResponse(bytes) }
    return FrameCodec.decodeResponse(bytes).map { (0, $0.status, $0.body, $0.total) }
}

// MARK: - threads

private final class ThreadBody {
    let body: () -> Void
    init(_ body: @escaping () -> Void) { self.body = body }
}

/// Starts a plain pthread running `body`.
func startThread(_ body: @escaping @Sendable () -> Void) -> pthread_t {
    let context = Unmanaged.passRetained(ThreadBody(body)).toOpaque()
    var thread = pthread_t()
    let rc = pthread_create(&thread, nil, { raw in
        let box = Unmanaged<ThreadBody>.fromOpaque(raw!).takeRetainedValue()
        box.body()
        return nil
    }, context)
    precondition(rc == 0, "pthread_create: \(errnoText(rc))")
    return thread
}
