/// A growable byte buffer with separate read and write positions, for socket I/O without
/// per-read allocation. Readable bytes are `[readIndex, writeIndex)`.
///
/// Storage is allocated on first use and can be given back once the buffer is empty (`release()`):
/// the master does so for connections that go quiet, so an idle connection costs no buffer memory
/// — 10,000 idle clients must not cost 10,000 buffers.
///
/// Stored properties are `@exclusivity(unchecked)` for the reason given on `Master`.
final class ByteBuffer {
    @exclusivity(unchecked) private var storage: UnsafeMutableRawPointer?
    @exclusivity(unchecked) private(set) var capacity = 0
    @exclusivity(unchecked) private var readIndex = 0
    @exclusivity(unchecked) private var writeIndex = 0
    /// First allocation size.
    private let initialCapacity: Int

    init(capacity: Int) {
        initialCapacity = max(capacity, 16)
    }

    deinit { storage?.deallocate() }

    var readableCount: Int { writeIndex - readIndex }
    var isEmpty: Bool { readIndex == writeIndex }

    var readable: UnsafeRawBufferPointer {
        guard let storage else { return UnsafeRawBufferPointer(start: nil, count: 0) }
        return UnsafeRawBufferPointer(start: storage + readIndex, count: writeIndex - readIndex)
    }

    /// Free space after the readable bytes, compacting and growing so at least `minimum` bytes
    /// (but the buffer never exceeds `limit` in total) are available.
    func writableSpace(minimum: Int, limit: Int) -> UnsafeMutableRawBufferPointer {
        if storage == nil { grow(to: min(limit, max(initialCapacity, minimum))) }
        if capacity - writeIndex < minimum && readIndex > 0 { compact() }
        if capacity - writeIndex < minimum && capacity < limit {
            grow(to: min(limit, max(capacity * 2, writeIndex + minimum)))
        }
        return UnsafeMutableRawBufferPointer(start: storage! + writeIndex, count: capacity - writeIndex)
    }

    func didWrite(_ count: Int) { writeIndex += count }

    func consume(_ count: Int) {
        readIndex += count
        if readIndex == writeIndex { readIndex = 0; writeIndex = 0 }
    }

    func append(_ bytes: UnsafeRawBufferPointer) {
        guard bytes.count > 0 else { return }
        let space = writableSpace(minimum: bytes.count, limit: .max)
        space.copyMemory(from: bytes)
        didWrite(bytes.count)
    }

    func append(_ bytes: [UInt8]) { bytes.withUnsafeBytes { append($0) } }

    /// Appends a header and a body with one look for room (a response is both, on every request).
    func append(_ header: UnsafeRawBufferPointer, _ body: UnsafeRawBufferPointer) {
        let space = writableSpace(minimum: header.count + body.count, limit: .max)
        if header.count > 0 { space.copyMemory(from: header) }
        if body.count > 0 { UnsafeMutableRawBufferPointer(rebasing: space[header.count...]).copyMemory(from: body) }
        didWrite(header.count + body.count)
    }

    /// Returns the storage to the allocator if nothing is buffered.
    func release() {
        guard isEmpty, let storage else { return }
        storage.deallocate()
        self.storage = nil
        capacity = 0
        readIndex = 0
        writeIndex = 0
    }

    private func compact() {
        guard let storage else { return }
        let count = readableCount
        if count > 0 { storage.copyMemory(from: storage + readIndex, byteCount: count) }
        readIndex = 0
        writeIndex = count
    }

    private func grow(to newCapacity: Int) {
        let newStorage = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 8)
        if let storage {
            newStorage.copyMemory(from: storage + readIndex, byteCount: readableCount)
            storage.deallocate()
        }
        writeIndex -= readIndex
        readIndex = 0
        storage = newStorage
        capacity = newCapacity
    }
}
