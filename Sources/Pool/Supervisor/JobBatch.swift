/// Jobs bound for one worker slot, gathered during a loop turn and sent as one queue message:
/// one `msgsnd` (and one wake-up of the worker) for many requests. Flushed when full and at the
/// end of every loop turn, so batching never holds a job across a wait.
///
/// Stored properties are `@exclusivity(unchecked)` for the reason given on `Master`.
final class JobBatch {
    /// A staged job. Ack mode answers `ok` (or busy) to `ack` once the message is queued (or not).
    struct Entry {
        var id: UInt64
        /// Offset of its record in the message text.
        var offset: Int
        /// Bytes of its record (header and payload); the records of a message add up to its size.
        var bytes: Int
        /// Payload bytes (in the record, or in the arena).
        var payloadBytes: Int
        /// Set when the payload is in the arena.
        var spill: PayloadArena.Chunk?
        /// Inline only because the arena had no free chunk.
        var spillMissed = false
        var ack: Ack?
    }

    struct Ack {
        var connection: UInt64
        var sequence: UInt64
    }

    let buffer: MessageBuffer
    /// Bytes a message may reach with more than one job in it (a single job may use the whole buffer).
    let byteLimit: Int
    @exclusivity(unchecked) private(set) var length = 0
    @exclusivity(unchecked) private(set) var entries: [Entry] = []

    init(capacity: Int, byteLimit: Int) {
        buffer = MessageBuffer(capacity: capacity)
        self.byteLimit = min(byteLimit, capacity)
    }

    var isEmpty: Bool { entries.isEmpty }

    /// Whether a record of `recordBytes` may join; the first always may.
    func fits(recordBytes: Int, recordLimit: Int) -> Bool {
        entries.isEmpty || (entries.count < recordLimit && length + recordBytes <= byteLimit)
    }

    func append(id: UInt64, payload: UnsafeRawBufferPointer, ack: Ack?, spillMissed: Bool = false) {
        let end = JobCodec.encodeJob(id: id, payload: payload, into: buffer.text, at: length)
        entries.append(Entry(id: id, offset: length, bytes: end - length, payloadBytes: payload.count,
                             spillMissed: spillMissed, ack: ack))
        length = end
    }

    /// Adds a job whose payload is already in the arena's `chunk`.
    func append(id: UInt64, spilled chunk: PayloadArena.Chunk, length payloadBytes: Int, ack: Ack?) {
        let end = JobCodec.encodeSpilledJob(id: id, length: payloadBytes, chunk: chunk, into: buffer.text, at: length)
        entries.append(Entry(id: id, offset: length, bytes: end - length, payloadBytes: payloadBytes, spill: chunk, ack: ack))
        length = end
    }

    /// Writes the record count into the message; returns its length.
    func seal() -> Int {
        JobCodec.setBatchCount(entries.count, in: buffer.text)
        return length
    }

    /// The payload of a staged inline job (to hold it when no queue takes the message).
    func payload(of entry: Entry) -> [UInt8] {
        Array(UnsafeRawBufferPointer(rebasing: UnsafeRawBufferPointer(buffer.text)[(entry.offset + JobCodec.headerBytes)..<(entry.offset + entry.bytes)]))
    }

    func reset() {
        entries.removeAllKeepingStorage()
        length = 0
    }
}
