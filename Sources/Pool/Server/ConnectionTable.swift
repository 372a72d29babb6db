/// The master's open connections, indexed by descriptor.
///
/// Why not a dictionary: every event, answer and close looks a connection up, and hashing the key
/// was a tenth of the master's instructions per oneshot request (callgrind). Descriptors are small
/// and dense, so an array indexed by fd needs no hashing and no per-entry allocation. A key is
/// `generation << 20 | fd`: a descriptor is reused as soon as it is closed, and the generation
/// tells a stale key (an epoll event, or the route of a reply, for the connection that had the fd
/// before) from the current one. With 44 bits it would take 1.7 · 10¹³ connections for a key to
/// come round again, so a route left by a request still running (a hung job) can never reach a
/// later connection on the same descriptor.
struct ConnectionTable {
    /// Descriptors below 2²⁰ fit a key. The kernel hands out the lowest free descriptor, and the
    /// master holds at most --max-connections (at most 1,000,000) plus a few dozen of its own.
    static let descriptorBits = 20
    static let descriptorLimit = 1 << descriptorBits
    private var slots: [Connection?] = []
    private var generation: UInt64 = 1
    private(set) var count = 0

    /// The key for a new connection on `fd`, or nil if `fd` is too large for one. Keys never
    /// collide with the loop's fixed epoll tokens, which are below 2²⁰: the generation runs from
    /// 1 to 2⁴⁴ − 1 and starts again at 1.
    mutating func makeKey(fd: Int32) -> UInt64? {
        guard fd >= 0, Int(fd) < Self.descriptorLimit else { return nil }
        defer { generation = generation == (1 << (64 - Self.descriptorBits)) - 1 ? 1 : generation + 1 }
        return generation << UInt64(Self.descriptorBits) | UInt64(fd)
    }

    private static func index(_ key: UInt64) -> Int { Int(key & UInt64(descriptorLimit - 1)) }

    var isEmpty: Bool { count == 0 }

    subscript(key: UInt64) -> Connection? {
        let index = Self.index(key)
        guard index < slots.count, let connection = slots[index], connection.key == key else { return nil }
        return connection
    }

    /// Adds a connection whose key came from `makeKey` (its fd is not in the table).
    mutating func insert(_ connection: Connection) {
        let index = Self.index(connection.key)
        if index >= slots.count { slots.append(contentsOf: repeatElement(nil, count: max(index + 1, slots.count * 2) - slots.count)) }
        precondition(slots[index] == nil, "descriptor \(index) is already in the connection table")
        slots[index] = connection
        count += 1
    }

    @discardableResult
    mutating func removeValue(forKey key: UInt64) -> Connection? {
        guard let connection = self[key] else { return nil }
        slots[Self.index(key)] = nil
        count -= 1
        return connection
    }

    /// Every connection, as an array (callers close connections while they go through it).
    var values: [Connection] { slots.compactMap { $0 } }
}
