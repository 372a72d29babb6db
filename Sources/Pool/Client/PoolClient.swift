import Glibc

/// A synchronous client for a pool's socket. It needs nothing of the server's process model:
/// plain blocking I/O plus `poll(2)` for pipelining, usable from any thread (one client per thread).
///
/// ```swift
/// let client = try PoolClient(socketPath: "pool.sock")
/// let reply = try client.request(Array("hello".utf8))   // framed protocol
/// print(reply.status, String(decoding: reply.body, as: UTF8.self))
/// ```
///
/// With `tagged: true` it speaks the tagged protocol: `send(_:tag:)` and `receiveTagged()` see
/// responses in completion order; `request` and `pipeline` still return them in request order.
public final class PoolClient {
    /// One framed response.
    public struct Response: Equatable, Sendable {
        /// The raw status byte (see `ResponseStatus`); unknown values are kept as they came.
        public var statusByte: UInt8
        /// The body: the handler's output, an error message, or empty.
        public var body: [UInt8]
        /// The decoded status, or `nil` for a byte this client does not know.
        public var status: ResponseStatus? { ResponseStatus(rawValue: statusByte) }
        /// Whether the status is `ok` (0).
        public var isOK: Bool { statusByte == ResponseStatus.ok.rawValue }
    }

    /// The server closed the connection or sent something that is not a response.
    public struct ProtocolError: Error, CustomStringConvertible, Sendable {
        /// What went wrong: closed, reset, timed out, or an unexpected frame.
        public let description: String
        /// No answer came within the timeout (nothing was lost: the stream is still in step).
        public var timedOut = false
    }

    /// `pipeline` ended before every request was answered — the server closed the connection
    /// (as it does after *too large* or *bad request*), reset it, or went quiet — with the
    /// responses that did arrive.
    public struct IncompletePipeline: Error, CustomStringConvertible, Sendable {
        /// Why it ended early.
        public let reason: String
        /// One entry per payload, in request order: its response, or nil if none arrived.
        public let responses: [Response?]
        public var description: String {
            "\(reason) (\(responses.lazy.filter { $0 != nil }.count) of \(responses.count) requests answered)"
        }
    }

    private let socket: SocketFD
    private var input: [UInt8] = []
    private var inputStart = 0
    private let timeout: Double?
    /// Speaks the tagged protocol (`pool-server --protocol tagged`).
    public let tagged: Bool
    /// Tagged: responses that arrived while `request`/`pipeline` waited for others, by tag.
    private var early: [UInt32: Response] = [:]
    private var nextTag: UInt32 = 0
    /// Why the connection failed, once one call has: a request that timed out may leave its answer
    /// still to come, and a write that timed out half a frame sent, so the next request would get
    /// the wrong answer or garble the stream. Every later call throws instead.
    private var failure: String?
    /// Why writing failed, when the server closed (EPIPE, ECONNRESET): later requests throw, but
    /// what it answered before closing can still be read with `receive`.
    private var writeFailure: String?
    /// Requests sent and not yet answered (pipelined ones included).
    private var answersOwed = 0

    /// Connects to a framed-protocol (or, with `tagged`, tagged-protocol) server.
    /// - Parameter timeout: seconds to wait for the connect (a full listen backlog blocks it), or
    ///   for any one write or read (`nil`: forever).
    public init(socketPath: String, timeout: Double? = 30, tagged: Bool = false) throws {
        self.tagged = tagged
        socket = try SocketFD.unixStream(nonBlocking: false)
        do {
            if let timeout { try socket.setSendTimeout(seconds: timeout) }
            try socket.connect(path: socketPath)
            if let timeout { try socket.setReceiveTimeout(seconds: timeout) }
        } catch {
            socket.close()
            throw error
        }
        self.timeout = timeout
    }

    deinit { socket.close() }

    /// Sends one request and waits for its response. A server that answered and closed before
    /// the request went out (*busy* past `--max-connections`) fails the write; its answer is
    /// still read and returned.
    /// Throws `ProtocolError` (the connection stays usable) while answers to requests written with
    /// `send` are still to be received: the next answer would be one of theirs.
    public func request(_ payload: [UInt8]) throws -> Response {
        try Self.requireFramable(payload)
        try requireInStep("request")
        return try guarded(writes: true) {
            let tag = tagged ? takeTag() : 0
            do { try sendFrame(payload, tag: tag) } catch let error as SystemError where Self.peerClosed(error) {
                // Only when nothing else is owed is the first answer surely this request's (a
                // refusal at accept carries tag 0).
                guard answersOwed == 1, early.isEmpty, let (_, answer) = try? nextResponse() else { throw error }
                return answer
            }
            return tagged ? try receive(tag: tag) : try nextResponse().response
        }
    }

    /// Writes one request frame without waiting (pipelining); collect responses with `receive()`
    /// (tagged: `receiveTagged()`). `tag` is sent only on a tagged connection.
    public func send(_ payload: [UInt8], tag: UInt32 = 0) throws {
        try Self.requireFramable(payload)
        try guarded(writes: true) { try sendFrame(payload, tag: tag) }
    }

    /// A length of 2³⁰ or more is no request of the protocol's (the server takes it for another
    /// protocol's bytes), and from 2³² on it does not fit the length field. Nothing is sent.
    private static func requireFramable(_ payload: [UInt8]) throws {
        guard payload.count < Int(FrameCodec.garbageLength) else {
            throw ProtocolError(description: "a payload of \(payload.count) bytes: the framed protocol's lengths stop below 2^30")
        }
    }

    private func sendFrame(_ payload: [UInt8], tag: UInt32) throws {
        answersOwed += 1
        var frame: [UInt8] = []
        frame.reserveCapacity(payload.count + 8)
        payload.withUnsafeBytes { FrameCodec.appendRequest($0, tag: tagged ? tag : nil, to: &frame) }
        try frame.withUnsafeBytes { try socket.writeAll($0) }
    }

    /// Reads the next response: in request order (framed), in completion order (tagged).
    public func receive() throws -> Response {
        try receiveTagged().response
    }

    /// Reads the next response and its tag (always 0 on a framed connection).
    public func receiveTagged() throws -> (tag: UInt32, response: Response) {
        if let (tag, response) = early.first {
            early[tag] = nil
            return (tag, response)
        }
        return try guarded(writes: false, survivesTimeout: true) { try nextResponse() }
    }

    /// `request` and `pipeline` take the next answers as theirs (framed: the next in order;
    /// tagged: their own tags, which could clash with tags the caller chose for `send`).
    private func requireInStep(_ call: String) throws {
        // A failed connection says so in `guarded`.
        if failure != nil || writeFailure != nil { return }
        let outstanding = answersOwed + early.count
        guard outstanding == 0 else {
            throw ProtocolError(description: "\(call): \(outstanding) answers to requests written with send() are still to be received; receive them first")
        }
    }

    private func nextResponse() throws -> (tag: UInt32, response: Response) {
        while true {
            if let tagged = try bufferedResponse() { return tagged }
            try fill()
        }
    }

    /// Runs one public call. After a failure the connection is shut down and every later call
    /// throws (`failure`), but for two that leave the stream in step: a `receive` that timed out
    /// (`survivesTimeout`), and a write the server's close refused, after which only writing
    /// calls throw (`writeFailure`) and what it answered before closing can still be read.
    private func guarded<T>(writes: Bool, survivesTimeout: Bool = false, _ body: () throws -> T) throws -> T {
        if let failure {
            throw ProtocolError(description: "the connection failed earlier (\(failure)); open a new one")
        }
        if writes, let writeFailure {
            throw ProtocolError(description: "the server closed the connection earlier (\(writeFailure)); open a new one")
        }
        do { return try body() } catch let error as ProtocolError where survivesTimeout && error.timedOut {
            throw error
        } catch let error as SystemError where Self.peerClosed(error) {
            writeFailure = "\(error)"
            throw error
        } catch {
            failure = "\(error)"
            shutdown(socket.raw, Int32(SHUT_RDWR))
            throw error
        }
    }

    private static func peerClosed(_ error: SystemError) -> Bool {
        error.errno == .brokenPipe || error.errno == .connectionReset
    }

    /// Tagged: the response to `tag`, keeping any others that arrive first.
    private func receive(tag: UInt32) throws -> Response {
        while true {
            if let response = early.removeValue(forKey: tag) { return response }
            let (other, response) = try nextResponse()
            if other == tag { return response }
            early[other] = response
        }
    }

    private func takeTag() -> UInt32 {
        defer { nextTag &+= 1 }
        return nextTag
    }

    /// Sends every payload and returns every response, in order, writing and reading at the same
    /// time so neither side's buffers fill up (a client that writes everything before reading can
    /// deadlock against a server that applies backpressure).
    /// Tagged: every request gets its own tag, and the responses, whatever order they come in,
    /// are returned in request order.
    /// Like `request`, throws while answers to requests written with `send` are still to come.
    public func pipeline(_ payloads: [[UInt8]]) throws -> [Response] {
        for payload in payloads { try Self.requireFramable(payload) }
        try requireInStep("pipeline")
        return try guarded(writes: true) {
            answersOwed += payloads.count
            return try pipelineRequests(payloads)
        }
    }

    private func pipelineRequests(_ payloads: [[UInt8]]) throws -> [Response] {
        var out: [UInt8] = []
        var tags: [UInt32: Int] = [:]
        for (index, payload) in payloads.enumerated() {
            let tag = tagged ? takeTag() : nil
            if let tag { tags[tag] = index }
            payload.withUnsafeBytes { FrameCodec.appendRequest($0, tag: tag, to: &out) }
        }
        var written = 0
        var responses: [Response] = []
        responses.reserveCapacity(payloads.count)
        var byIndex: [Int: Response] = [:]
        var received = 0
        func take(_ tag: UInt32, _ response: Response) throws {
            received += 1
            guard tagged else { responses.append(response); return }
            guard let index = tags.removeValue(forKey: tag) else {
                throw ProtocolError(description: "a response with tag \(tag), which no request in flight has")
            }
            byIndex[index] = response
        }
        while received < payloads.count {
            // Take what is already buffered first.
            while received < payloads.count, let (tag, response) = try bufferedResponse() {
                try take(tag, response)
            }
            if received == payloads.count { break }
            var fds = [pollfd(fd: socket.raw, events: Int16(POLLIN), revents: 0)]
            if written < out.count { fds[0].events |= Int16(POLLOUT) }
            // Milliseconds, rounded up (a positive timeout never polls for 0 ms) and clamped.
            // NaN as the socket options take it (`SocketFD.socketTimeout`): the longest wait.
            let ready = poll(&fds, 1, timeout.map { Int32(clamping: Int($0.isNaN ? 2e9 : ($0 * 1000).rounded(.up).clamped(to: 1...2e9))) } ?? -1)
            if ready < 0 { if errno == EINTR { continue }; throw SystemError("poll", .current) }
            if ready == 0 { throw incomplete("timed out waiting for the server") }
            // Read before writing: a server that refuses a request answers what came before it
            // and closes, and those answers must be taken before a write fails on the closed socket.
            if fds[0].revents & Int16(POLLIN | POLLHUP | POLLERR) != 0 {
                do { try fill(nonBlocking: true) } catch let error as ProtocolError {
                    while received < payloads.count, let (tag, response) = try bufferedResponse() { try take(tag, response) }
                    if received == payloads.count { break }
                    throw incomplete(error.description)
                }
            }
            if written < out.count && fds[0].revents & Int16(POLLOUT) != 0 {
                let chunk = min(out.count - written, 1 << 16)
                let n = out.withUnsafeBytes {
                    Glibc.send(socket.raw, $0.baseAddress! + written, chunk, Int32(MSG_NOSIGNAL | MSG_DONTWAIT))
                }
                if n > 0 {
                    written += n
                } else if n < 0 && (errno == EPIPE || errno == ECONNRESET) {
                    // The server stopped reading: nothing more goes out; what it answered is
                    // still to be read.
                    written = out.count
                } else if n < 0 && errno != EAGAIN && errno != EINTR {
                    throw SystemError("send", .current)
                }
            }
        }
        return tagged ? (0..<payloads.count).compactMap { byIndex[$0] } : responses

        func incomplete(_ reason: String) -> IncompletePipeline {
            let answered: [Response?] = tagged
                ? (0..<payloads.count).map { byIndex[$0] }
                : (0..<payloads.count).map { $0 < responses.count ? responses[$0] : nil }
            return IncompletePipeline(reason: reason, responses: answered)
        }
    }

    private func bufferedResponse() throws -> (tag: UInt32, response: Response)? {
        // Decoded and copied inside the closure: the buffer's address is valid only there.
        let taken: (tag: UInt32, response: Response, total: Int)? = input.withUnsafeBytes { all in
            let available = UnsafeRawBufferPointer(rebasing: all[inputStart...])
            let decoded: (tag: UInt32, status: UInt8, body: Range<Int>, total: Int)?
            if tagged {
                decoded = FrameCodec.decodeTaggedResponse(available)
            } else {
                decoded = FrameCodec.decodeResponse(available).map { (0, $0.status, $0.body, $0.total) }
            }
            return decoded.map { ($0.tag, Response(statusByte: $0.status, body: Array(available[$0.body])), $0.total) }
        }
        guard let taken else { return nil }
        answersOwed -= 1
        inputStart += taken.total
        if inputStart == input.count {
            input.removeAll(keepingCapacity: true)
            inputStart = 0
        } else if inputStart >= 65_536 && inputStart * 2 >= input.count {
            // A pipelining reader's reads rarely end on a frame's end, so "all taken" seldom
            // comes: without this the buffer kept every byte ever received.
            input.removeSubrange(0..<inputStart)
            inputStart = 0
        }
        return (taken.tag, taken.response)
    }

    private func fill(nonBlocking: Bool = false) throws {
        var chunk = [UInt8](repeating: 0, count: 65_536)
        let n = chunk.withUnsafeMutableBytes {
            recv(socket.raw, $0.baseAddress, $0.count, nonBlocking ? Int32(MSG_DONTWAIT) : 0)
        }
        if n < 0 {
            if errno == EINTR || (nonBlocking && errno == EAGAIN) { return }
            if errno == EAGAIN { throw ProtocolError(description: "timed out waiting for the server", timedOut: true) }
            if errno == ECONNRESET { throw ProtocolError(description: "the server reset the connection") }
            throw SystemError("recv", .current)
        }
        if n == 0 { throw ProtocolError(description: "the server closed the connection") }
        input.append(contentsOf: chunk[0..<n])
    }

    /// Closes the connection.
    public func close() { shutdown(socket.raw, Int32(SHUT_RDWR)) }

    /// The oneshot protocol: connect, write `message`, read the reply until the server closes.
    /// The seed's client does exactly this (without half-closing).
    public static func oneshot(socketPath: String, message: [UInt8], timeout: Double? = 30) throws -> [UInt8] {
        let socket = try SocketFD.unixStream(nonBlocking: false)
        defer { socket.close() }
        if let timeout { try socket.setSendTimeout(seconds: timeout) }
        try socket.connect(path: socketPath)
        if let timeout { try socket.setReceiveTimeout(seconds: timeout) }
        return try socket.requestThenReadToEnd(message)
    }
}

extension SocketFD {
    /// Writes `request`, then reads until the server closes. A server refusing the connection
    /// (busy at `--max-connections`, the control socket's refusals) answers and closes at once,
    /// often before the request is written: the write then fails (EPIPE) and the read may end in
    /// a reset, but the answer is there to read first. Only with nothing read is either error the
    /// outcome.
    func requestThenReadToEnd(_ request: [UInt8]) throws -> [UInt8] {
        var writeError: SystemError? = nil
        do {
            try request.withUnsafeBytes { try writeAll($0) }
        } catch let error as SystemError where error.errno == .brokenPipe || error.errno == .connectionReset {
            writeError = error
        }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { Glibc.read(raw, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                if errno == EAGAIN { throw PoolClient.ProtocolError(description: "timed out waiting for the server") }
                // A reset after the reply (a server closing with our unread bytes) ends it; one
                // before any reply is a refusal, not an empty answer.
                if errno == ECONNRESET {
                    if !reply.isEmpty { break }
                    throw writeError ?? PoolClient.ProtocolError(description: "the server reset the connection without a reply")
                }
                throw writeError ?? SystemError("read", .current)
            }
            if n == 0 { break }
            reply.append(contentsOf: chunk[0..<n])
        }
        if let writeError, reply.isEmpty { throw writeError }
        return reply
    }
}

private extension Double {
    func clamped(to range: ClosedRange<Double>) -> Double { Swift.min(Swift.max(self, range.lowerBound), range.upperBound) }
}
