import Glibc

/// Anonymous memory shared with every process forked after it is mapped: the scoreboard, the
/// inboxes and outboxes, the payload arena and the reply rings. Mapped by the master before the first fork;
/// a worker inherits the mapping and never maps or unmaps one itself.
struct SharedMemory {
    let base: UnsafeMutableRawPointer
    let bytes: Int

    /// `reserve: false` adds MAP_NORESERVE, for regions of which only the parts in use get pages.
    /// The corresponding C function is `mmap`.
    init(bytes: Int, reserve: Bool = true) throws {
        let flags = MAP_SHARED | MAP_ANONYMOUS | (reserve ? 0 : MAP_NORESERVE)
        let address = mmap(nil, bytes, PROT_READ | PROT_WRITE, flags, -1, 0)
        guard let address, address != MAP_FAILED else { throw SystemError("mmap", .current) }
        base = address
        self.bytes = bytes
    }

    /// One region of `bytesEach` per worker slot, each starting on a cache line of its own (no
    /// false sharing between workers). Not reserved: only a slot in use gets pages.
    static func perSlot(_ slots: Int, bytesEach: Int) throws -> (memory: SharedMemory, stride: Int) {
        let stride = (bytesEach + 63) & ~63
        return (try SharedMemory(bytes: max(slots, 1) * stride, reserve: false), stride)
    }

    /// The corresponding C function is `munmap`.
    func unmap() { munmap(base, bytes) }
}
