/// The master's open connections, indexed by descriptor.
///
/// Why not a dictionary: every event, answer and close looks a connection up, and hashing the key
/// was a tenth of the master's instructions per oneshot request (callgrind). Descriptors are small
/// and dense, so an array indexed by fd needs no hashing and no per-entry allocation. A key is
/// `generation << 32 | fd`: a descriptor is reused as soon as it is closed, and the generation
/// tells a stale key (an epoll event or a reply for the connection that had the fd before) from
/// the current one.
struct ConnectionTable {
    private var slots: [Connection?] = []
    private var generation: UInt64 = 1
    private(set) var count = 0

    /// Keys never collide with the loop's fixed epoll tokens, which are below 2³²: the generation
    /// runs from 1 to 2³¹ − 1 and starts again at 1.
    mutating func makeKey(fd: Int32) -> UInt64 {
        defer { generation = generation == (1 << 31) - 1 ? 1 : generation + 1 }
        return generation << 32 | UInt64(UInt32(bitPattern: fd))
    }

    var isEmpty: Bool { count == 0 }

    subscript(key: UInt64) -> Connection? {
        let index = Int(key & 0xFFFF_FFFF)
        guard index < slots.count, let connection = slots[index], connection.key == key else { return nil }
        return connection
    }

    /// Adds a connection whose key came from `makeKey` (its fd is not in the table).
    mutating func insert(_ connection: Connection) {
        let index = Int(connection.key & 0xFFFF_FFFF)
        if index >= slots.count { slots.append(contentsOf: repeatElement(nil, count: max(index + 1, slots.count * 2) - slots.count)) }
        precondition(slots[index] == nil, "descriptor \(index) is already in the connection table")
        slots[index] = connection
        count += 1
    }

    @discardableResult
    mutating func removeValue(forKey key: UInt64) -> Connection? {
        guard let connection = self[key] else { return nil }
        slots[Int(key & 0xFFFF_FFFF)] = nil
        count -= 1
        return connection
    }

    /// Every connection, as an array (callers close connections while they go through it).
    var values: [Connection] { slots.compactMap { $0 } }
}
