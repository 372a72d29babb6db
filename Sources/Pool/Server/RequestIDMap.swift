/// Values by request id, for the master's requests in flight (result mode's routes).
///
/// Why not a dictionary: every request inserts its route and every reply looks it up and
/// removes it, and hashing the id (SipHash) with the dictionary's bookkeeping was about a tenth
/// of the master's instructions per framed request (callgrind). Here an id is placed by one
/// multiplication (Fibonacci hashing: the top bits of id × 2⁶⁴/φ) in an open-addressed table kept
/// at most half full. Not by the id's low bits, which would be cheaper still: ids are handed out
/// in sequence, so a burst of long jobs would sit in one run of adjacent slots that every later
/// id landing in it had to probe past (hundreds of probes per request with 1000 such jobs).
struct RequestIDMap<Value> {
    /// 0 marks an empty slot: ids start at 1.
    private var keys: [UInt64]
    private var values: [Value?]
    private var mask: Int
    /// 64 − log₂(table size): the product's top bits are the slot.
    private var shift: UInt64
    private(set) var count = 0

    init(capacity: Int = 64) {
        var size = 8
        while size < capacity * 2 { size *= 2 }
        keys = Array(repeating: 0, count: size)
        values = Array(repeating: nil, count: size)
        mask = size - 1
        shift = UInt64(64 - size.trailingZeroBitCount)
    }

    var isEmpty: Bool { count == 0 }

    /// The slot where `id` belongs (internal for tests).
    func home(_ id: UInt64) -> Int { Int(truncatingIfNeeded: (id &* 0x9E37_79B9_7F4A_7C15) >> shift) }

    /// The slot holding `id`, if any: its probe run ends at the first empty slot.
    private func slot(of id: UInt64) -> Int? {
        guard id != 0 else { return nil }   // would match an empty slot (a foreign reply's id)
        var index = home(id)
        while true {
            let key = keys[index]
            if key == id { return index }
            if key == 0 { return nil }
            index = (index + 1) & mask
        }
    }

    subscript(id: UInt64) -> Value? {
        get { slot(of: id).flatMap { values[$0] } }
        set {
            if let newValue { set(newValue, for: id) } else { removeValue(forKey: id) }
        }
    }

    private mutating func set(_ value: Value, for id: UInt64) {
        precondition(id != 0, "request id 0 is reserved for empty slots")
        if let index = slot(of: id) {
            values[index] = value
            return
        }
        if (count + 1) * 2 > keys.count { grow() }
        var index = home(id)
        while keys[index] != 0 { index = (index + 1) & mask }
        keys[index] = id
        values[index] = value
        count += 1
    }

    private mutating func grow() {
        let old = entries
        var bigger = RequestIDMap(capacity: keys.count)
        for (id, value) in old { bigger.set(value, for: id) }
        self = bigger
    }

    /// Removes and returns the value for `id`. Entries after it in its probe run move back into
    /// the hole (backward-shift deletion), so no lookup ever stops short at it and no tombstones
    /// accumulate.
    @discardableResult
    mutating func removeValue(forKey id: UInt64) -> Value? {
        guard var hole = slot(of: id) else { return nil }
        let removed = values[hole]
        var next = hole
        while true {
            next = (next + 1) & mask
            let key = keys[next]
            if key == 0 { break }
            // The entry at `next` may fill the hole unless its home lies cyclically in
            // (hole, next]: then moving it before its home would hide it from lookups.
            let home = home(key)
            let staysPut = hole <= next ? (hole < home && home <= next) : (hole < home || home <= next)
            if !staysPut {
                keys[hole] = key
                values[hole] = values[next]
                hole = next
            }
        }
        keys[hole] = 0
        values[hole] = nil
        count -= 1
        return removed
    }

    mutating func removeAll() {
        guard count > 0 else { return }
        for index in keys.indices where keys[index] != 0 {
            keys[index] = 0
            values[index] = nil
        }
        count = 0
    }

    /// The farthest any entry sits from its home slot (for tests: how long probes get).
    var longestProbe: Int {
        keys.indices.filter { keys[$0] != 0 }.map { ($0 - home(keys[$0])) & mask }.max() ?? 0
    }

    /// Every id with its value, in no particular order.
    var entries: [(id: UInt64, value: Value)] {
        var result: [(id: UInt64, value: Value)] = []
        result.reserveCapacity(count)
        for index in keys.indices where keys[index] != 0 {
            if let value = values[index] { result.append((keys[index], value)) }
        }
        return result
    }
}
