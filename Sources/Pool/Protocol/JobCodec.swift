/// The records the master and workers exchange through System V queues. Both ends are the same
/// binary on the same host, so integers are native-endian. A queue message holds one or more
/// records back to back; a worker handles them in order.
///
/// Job record (master → worker, mtype `jobType`):   u64 id, u32 length, u32 count, payload —
/// `count` is the number of records in the message in the first record, 0 in the others.
/// A spilled job (its payload in the shared `PayloadArena`) has the top bit of `length` set, and
/// instead of the payload 8 bytes: u32 chunk index, u32 chunk generation.
/// Reply record (worker → master, mtype `replyType`): u64 id, u32 length, u8 status, u8 reserved,
/// u16 slot, body. A spilled reply (its body in the worker's `ReplyRings` ring) has the top bit of
/// `length` set, and instead of the body a u64 ring position.
/// Quit (master → worker, mtype `quitType`): no text. Control never travels as payload.
public enum JobCodec {
    /// `mtype` of a job message (master → worker).
    public static let jobType = 1
    /// `mtype` of a quit message (master → worker); it carries no text.
    public static let quitType = 2
    /// `mtype` of a reply message (worker → master); replies use their own queue, so it may equal `jobType`.
    public static let replyType = 1

    /// Bytes of a job record header; a queue message carries at most `msgmax − headerBytes` of payload.
    public static let headerBytes = 16

    /// Bytes of a spilled job record: the header and the chunk reference.
    public static let spilledRecordBytes = headerBytes + 8
    /// Set in a job record's `length` when the payload is in the arena, not in the message.
    static let spilledFlag: UInt32 = 1 << 31

    /// Where a spilled job's payload is: a chunk of the `PayloadArena`.
    public struct Spill: Equatable, Sendable {
        public var chunk: PayloadArena.Chunk
        /// Payload bytes at the start of the chunk.
        public var length: Int
    }

    /// A decoded job record.
    public struct Job: Equatable, Sendable {
        /// The request id the master assigned; the reply carries it back.
        public var id: UInt64
        /// Byte offsets of the payload within the message text (of the chunk reference, if spilled).
        public var payload: Range<Int>
        /// Set when the payload is in the arena.
        public var spill: Spill? = nil
        /// Offset of the next record.
        public var end: Int { payload.upperBound }

        /// A copy of the inline payload out of `text`, the message it was decoded from. Through a
        /// buffer pointer: an Array built from the slice takes the generic path (about 100
        /// instructions more per job, by callgrind), this one a `memcpy`.
        public func payloadBytes(in text: UnsafeRawBufferPointer) -> [UInt8] {
            Array(UnsafeRawBufferPointer(rebasing: text[payload]))
        }
    }

    /// A decoded reply record.
    public struct Reply: Equatable, Sendable {
        /// The id of the job this answers.
        public var id: UInt64
        /// The outcome; an unknown status byte decodes as `handlerError`.
        public var status: ResponseStatus
        /// The slot of the worker that sent it.
        public var slot: Int
        /// Byte offsets of the body within the message text (of the ring position, if spilled).
        public var body: Range<Int>
        /// Set when the body is in the slot's reply ring.
        public var spill: RingSpill? = nil
        /// Offset of the next record.
        public var end: Int { body.upperBound }
    }

    /// Where a spilled reply's body is in its slot's reply ring.
    public struct RingSpill: Equatable, Sendable {
        /// Ring position of the first byte (bytes written to the ring before it).
        public var position: UInt64
        public var length: Int
    }

    /// Writes a job record at `offset` of `text`; returns the offset after it.
    @inline(__always)
    public static func encodeJob(id: UInt64, payload: UnsafeRawBufferPointer, into text: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
        text.storeBytes(of: id, toByteOffset: offset, as: UInt64.self)
        text.storeBytes(of: UInt32(payload.count), toByteOffset: offset + 8, as: UInt32.self)
        text.storeBytes(of: 0, toByteOffset: offset + 12, as: UInt32.self)
        if payload.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: text[(offset + headerBytes)...]).copyMemory(from: payload)
        }
        return offset + headerBytes + payload.count
    }

    /// Writes a spilled job record (its payload already in `chunk`) at `offset` of `text`; returns
    /// the offset after it.
    @inline(__always)
    public static func encodeSpilledJob(id: UInt64, length: Int, chunk: PayloadArena.Chunk,
                                        into text: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
        text.storeBytes(of: id, toByteOffset: offset, as: UInt64.self)
        text.storeBytes(of: UInt32(length) | spilledFlag, toByteOffset: offset + 8, as: UInt32.self)
        text.storeBytes(of: 0, toByteOffset: offset + 12, as: UInt32.self)
        text.storeBytes(of: chunk.index, toByteOffset: offset + 16, as: UInt32.self)
        text.storeBytes(of: chunk.generation, toByteOffset: offset + 20, as: UInt32.self)
        return offset + spilledRecordBytes
    }

    /// Writes a reply record at `offset` of `text`; returns the offset after it.
    @inline(__always)
    public static func encodeReply(id: UInt64, status: ResponseStatus, slot: Int, body: UnsafeRawBufferPointer,
                                   into text: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
        text.storeBytes(of: id, toByteOffset: offset, as: UInt64.self)
        text.storeBytes(of: UInt32(body.count), toByteOffset: offset + 8, as: UInt32.self)
        text.storeBytes(of: status.rawValue, toByteOffset: offset + 12, as: UInt8.self)
        text.storeBytes(of: 0, toByteOffset: offset + 13, as: UInt8.self)
        text.storeBytes(of: UInt16(truncatingIfNeeded: slot), toByteOffset: offset + 14, as: UInt16.self)
        if body.count > 0 {
            UnsafeMutableRawBufferPointer(rebasing: text[(offset + headerBytes)...]).copyMemory(from: body)
        }
        return offset + headerBytes + body.count
    }

    /// Writes a spilled reply record (its body already at `position` of the slot's reply ring) at
    /// `offset` of `text`; returns the offset after it.
    @inline(__always)
    public static func encodeSpilledReply(id: UInt64, status: ResponseStatus, slot: Int, length: Int, position: UInt64,
                                          into text: UnsafeMutableRawBufferPointer, at offset: Int) -> Int {
        text.storeBytes(of: id, toByteOffset: offset, as: UInt64.self)
        text.storeBytes(of: UInt32(length) | spilledFlag, toByteOffset: offset + 8, as: UInt32.self)
        text.storeBytes(of: status.rawValue, toByteOffset: offset + 12, as: UInt8.self)
        text.storeBytes(of: 0, toByteOffset: offset + 13, as: UInt8.self)
        text.storeBytes(of: UInt16(truncatingIfNeeded: slot), toByteOffset: offset + 14, as: UInt16.self)
        text.storeBytes(of: position, toByteOffset: offset + 16, as: UInt64.self)
        return offset + spilledRecordBytes
    }

    /// Writes the number of records into the first record of a job message (its `count` field).
    @inline(__always)
    public static func setBatchCount(_ count: Int, in text: UnsafeMutableRawBufferPointer) {
        text.storeBytes(of: UInt32(count), toByteOffset: 12, as: UInt32.self)
    }

    /// The number of records a job message says it holds; `nil` if it cannot hold a record.
    @inline(__always)
    public static func batchCount(_ text: UnsafeRawBufferPointer, length: Int) -> Int? {
        guard length >= headerBytes else { return nil }
        return Int(text.loadUnaligned(fromByteOffset: 12, as: UInt32.self))
    }

    /// Reads the job record at `offset` of the first `length` bytes of `text`; `nil` if malformed.
    @inline(__always)
    public static func decodeJob(_ text: UnsafeRawBufferPointer, length: Int, at offset: Int) -> Job? {
        guard offset + headerBytes <= length else { return nil }
        let id = text.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        let raw = text.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)
        let start = offset + headerBytes
        if raw & spilledFlag != 0 {
            guard start + 8 <= length else { return nil }
            let chunk = PayloadArena.Chunk(index: text.loadUnaligned(fromByteOffset: start, as: UInt32.self),
                                           generation: text.loadUnaligned(fromByteOffset: start + 4, as: UInt32.self))
            return Job(id: id, payload: start..<(start + 8), spill: Spill(chunk: chunk, length: Int(raw & ~spilledFlag)))
        }
        let count = Int(raw)
        guard start + count <= length else { return nil }
        return Job(id: id, payload: start..<(start + count))
    }

    /// Reads the reply record at `offset` of the first `length` bytes of `text`; `nil` if malformed.
    @inline(__always)
    public static func decodeReply(_ text: UnsafeRawBufferPointer, length: Int, at offset: Int) -> Reply? {
        guard offset + headerBytes <= length else { return nil }
        let id = text.loadUnaligned(fromByteOffset: offset, as: UInt64.self)
        let raw = text.loadUnaligned(fromByteOffset: offset + 8, as: UInt32.self)
        let status = ResponseStatus(rawValue: text[offset + 12]) ?? .handlerError
        let slot = Int(text.loadUnaligned(fromByteOffset: offset + 14, as: UInt16.self))
        let start = offset + headerBytes
        if raw & spilledFlag != 0 {
            guard start + 8 <= length else { return nil }
            let position = text.loadUnaligned(fromByteOffset: start, as: UInt64.self)
            return Reply(id: id, status: status, slot: slot, body: start..<(start + 8),
                         spill: RingSpill(position: position, length: Int(raw & ~spilledFlag)))
        }
        let count = Int(raw)
        guard start + count <= length else { return nil }
        return Reply(id: id, status: status, slot: slot, body: start..<(start + count))
    }
}
