/// A growable byte buffer with separate read and write positions, for socket I/O without
/// per-read allocation. Readable bytes are `[readIndex, writeIndex)`.
final class ByteBuffer {
    private var storage: UnsafeMutableRawPointer
    private(set) var capacity: Int
    private var readIndex = 0
    private var writeIndex = 0

    init(capacity: Int) {
        self.capacity = max(capacity, 16)
        storage = .allocate(byteCount: self.capacity, alignment: 8)
    }

    deinit { storage.deallocate() }

    var readableCount: Int { writeIndex - readIndex }
    var isEmpty: Bool { readIndex == writeIndex }

    var readable: UnsafeRawBufferPointer {
        UnsafeRawBufferPointer(start: storage + readIndex, count: writeIndex - readIndex)
    }

    /// Free space after the readable bytes, compacting and growing so at least `minimum` bytes
    /// (but the buffer never exceeds `limit` in total) are available.
    func writableSpace(minimum: Int, limit: Int) -> UnsafeMutableRawBufferPointer {
        if capacity - writeIndex < minimum && readIndex > 0 { compact() }
        if capacity - writeIndex < minimum && capacity < limit {
            grow(to: min(limit, max(capacity * 2, writeIndex + minimum)))
        }
        return UnsafeMutableRawBufferPointer(start: storage + writeIndex, count: capacity - writeIndex)
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

    /// Returns memory to the system when a burst has passed (idle connections stay small).
    func shrinkIfIdle(to size: Int) {
        guard isEmpty, capacity > size else { return }
        storage.deallocate()
        capacity = size
        storage = .allocate(byteCount: size, alignment: 8)
        readIndex = 0
        writeIndex = 0
    }

    private func compact() {
        let count = readableCount
        if count > 0 { (storage).copyMemory(from: storage + readIndex, byteCount: count) }
        readIndex = 0
        writeIndex = count
    }

    private func grow(to newCapacity: Int) {
        let newStorage = UnsafeMutableRawPointer.allocate(byteCount: newCapacity, alignment: 8)
        newStorage.copyMemory(from: storage + readIndex, byteCount: readableCount)
        writeIndex -= readIndex
        readIndex = 0
        storage.deallocate()
        storage = newStorage
        capacity = newCapacity
    }
}
