/// The framed and tagged protocols, as pure functions over bytes (no I/O), so they are tested
/// exhaustively.
///
/// framed:
/// - Request:  u32 big-endian length N, then N payload bytes (N may be 0).
/// - Response: u32 big-endian length N (N ≥ 1), then 1 status byte, then N−1 body bytes.
///
/// tagged (the same, with the client's u32 tag after the length; `tagged: true` below):
/// - Request:  u32 BE length N, u32 BE tag, then N payload bytes.
/// - Response: u32 BE length N (N ≥ 1), u32 BE tag (the request's), 1 status byte, N−1 body bytes.
public enum FrameCodec {
    /// Bytes of the length prefix.
    public static let lengthBytes = 4
    /// Bytes of a tagged frame's tag, right after the length.
    public static let tagBytes = 4
    /// Bytes before a response body: length prefix + status byte.
    public static let responseHeaderBytes = 5
    /// Bytes before a tagged response's body: length prefix + tag + status byte.
    public static let taggedResponseHeaderBytes = 9

    /// Bytes before a request's payload.
    @inline(__always)
    public static func requestHeaderBytes(tagged: Bool) -> Int { tagged ? lengthBytes + tagBytes : lengthBytes }
    /// Lengths at or above this are not a plausible request of any configuration: the peer is not
    /// speaking the protocol (e.g. an HTTP request, whose first four bytes read as ~1.2 GB).
    public static let garbageLength: UInt32 = 1 << 30

    /// What `decodeRequest` found at the start of a buffer.
    public enum Decoded: Equatable, Sendable {
        /// A complete request: its payload is `bytes[payloadStart ..< payloadStart + length]`, and the
        /// next request starts at `payloadStart + length`.
        case request(payloadStart: Int, length: Int)
        /// Not enough bytes yet; `needed` is the total the next request occupies, once known.
        case incomplete(needed: Int?)
        /// The declared length exceeds `maxPayload`; answer `tooLarge` and close.
        case tooLarge(length: UInt32)
        /// The declared length is nonsense; answer `badRequest` and close.
        case garbage(length: UInt32)
    }

    /// Decodes the request at the start of `bytes`. With `tagged`, nothing is decided before the
    /// whole 8-byte header is there, so even a refusal can name the request's tag (`requestTag`).
    public static func decodeRequest(_ bytes: UnsafeRawBufferPointer, maxPayload: Int, tagged: Bool = false) -> Decoded {
        let header = requestHeaderBytes(tagged: tagged)
        guard bytes.count >= header else { return .incomplete(needed: nil) }
        let length = readUInt32BE(bytes, at: 0)
        if length >= garbageLength { return .garbage(length: length) }
        if Int(length) > maxPayload { return .tooLarge(length: length) }
        let total = header + Int(length)
        guard bytes.count >= total else { return .incomplete(needed: total) }
        return .request(payloadStart: header, length: Int(length))
    }

    /// The tag of the tagged request at the start of `bytes` (its header must be complete: any
    /// `decodeRequest(tagged: true)` answer but `.incomplete` says it is).
    public static func requestTag(_ bytes: UnsafeRawBufferPointer) -> UInt32 { readUInt32BE(bytes, at: lengthBytes) }

    /// Appends a response frame to `out`; with a `tag`, a tagged one.
    public static func appendResponse(status: ResponseStatus, body: UnsafeRawBufferPointer, tag: UInt32? = nil, to out: inout [UInt8]) {
        appendUInt32BE(UInt32(body.count + 1), to: &out)
        if let tag { appendUInt32BE(tag, to: &out) }
        out.append(status.rawValue)
        out.append(contentsOf: body)
    }

    /// Appends a request frame to `out`; with a `tag`, a tagged one.
    public static func appendRequest(_ payload: UnsafeRawBufferPointer, tag: UInt32? = nil, to out: inout [UInt8]) {
        appendUInt32BE(UInt32(payload.count), to: &out)
        if let tag { appendUInt32BE(tag, to: &out) }
        out.append(contentsOf: payload)
    }

    /// Decodes the tagged response at the start of `bytes`: tag, status, body range and total
    /// size, or `nil` if incomplete. A zero length decodes as `badRequest` with an empty body.
    public static func decodeTaggedResponse(_ bytes: UnsafeRawBufferPointer) -> (tag: UInt32, status: UInt8, body: Range<Int>, total: Int)? {
        let header = lengthBytes + tagBytes
        guard bytes.count >= header else { return nil }
        let length = Int(readUInt32BE(bytes, at: 0))
        let tag = readUInt32BE(bytes, at: lengthBytes)
        guard bytes.count >= header + length else { return nil }
        if length == 0 { return (tag, ResponseStatus.badRequest.rawValue, header..<header, header) }
        return (tag, bytes[header], (header + 1)..<(header + length), header + length)
    }

    /// Decodes the response at the start of `bytes`: status, body range and total size, or `nil`
    /// if incomplete. A zero length (no status byte) decodes as `badRequest` with an empty body.
    public static func decodeResponse(_ bytes: UnsafeRawBufferPointer) -> (status: UInt8, body: Range<Int>, total: Int)? {
        guard bytes.count >= lengthBytes else { return nil }
        let length = Int(readUInt32BE(bytes, at: 0))
        guard bytes.count >= lengthBytes + length else { return nil }
        if length == 0 { return (ResponseStatus.badRequest.rawValue, lengthBytes..<lengthBytes, lengthBytes) }
        return (bytes[lengthBytes], (lengthBytes + 1)..<(lengthBytes + length), lengthBytes + length)
    }

    @inline(__always)
    static func readUInt32BE(_ bytes: UnsafeRawBufferPointer, at offset: Int) -> UInt32 {
        UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
    }

    @inline(__always)
    static func appendUInt32BE(_ value: UInt32, to out: inout [UInt8]) {
        out.append(UInt8(truncatingIfNeeded: value >> 24))
        out.append(UInt8(truncatingIfNeeded: value >> 16))
        out.append(UInt8(truncatingIfNeeded: value >> 8))
        out.append(UInt8(truncatingIfNeeded: value))
    }
}
