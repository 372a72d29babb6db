@testable import Pool
import Testing

/// `RequestIDMap`: the master's routes by request id, against a Dictionary doing the same.
@Suite struct RequestIDMapTests {
    @Test func insertLookUpReplaceRemove() {
        var map = RequestIDMap<String>()
        #expect(map.isEmpty && map[1] == nil)
        map[1] = "a"
        map[2] = "b"
        map[1] = "a2"
        #expect(map.count == 2 && map[1] == "a2" && map[2] == "b" && map[3] == nil)
        #expect(map.removeValue(forKey: 1) == "a2")
        #expect(map.removeValue(forKey: 1) == nil)
        map[2] = nil
        #expect(map.isEmpty && map[2] == nil && map.entries.isEmpty)
    }

    /// Ids that share a home slot: removing the first of a probe run must keep the rest
    /// reachable, also when the run wraps past the table's end.
    @Test func removalInsideAProbeRunKeepsTheRestReachable() {
        var map = RequestIDMap<UInt64>(capacity: 8)   // 16 slots; 5 entries do not grow it
        let last = 15                                  // the table's last slot
        func ids(home: Int, count: Int) -> [UInt64] { Array((1...100_000).lazy.filter { map.home($0) == home }.prefix(count)) }
        let atEnd = ids(home: last, count: 3), atStart = ids(home: 0, count: 2)
        #expect(atEnd.count == 3 && atStart.count == 2)
        let all = atEnd + atStart                      // slots 15, 0, 1, then 2, 3: the run wraps
        for id in all { map[id] = id * 10 }
        #expect(map.longestProbe == 3, "the run should wrap as laid out")
        #expect(map.removeValue(forKey: atEnd[0]) == atEnd[0] * 10)
        for id in all.dropFirst() { #expect(map[id] == id * 10, "id \(id)") }
        #expect(map.removeValue(forKey: atStart[0]) == atStart[0] * 10)
        let rest = [atEnd[1], atEnd[2], atStart[1]]
        for id in rest { #expect(map[id] == id * 10, "id \(id)") }
        #expect(map.count == 3)
        #expect(Set(map.entries.map(\.id)) == Set(rest))
        #expect(map.removeValue(forKey: 0) == nil && map[0] == nil && map.count == 3, "id 0 is never present")
    }

    /// A burst of 1000 long jobs in flight, then 100,000 quick requests one after another: probes
    /// stay short (with ids placed by their low bits the burst forms one run, and the quick ids
    /// that land in it probe past the whole of it).
    @Test func aBurstOfLongJobsDoesNotLengthenProbes() {
        var map = RequestIDMap<UInt64>()
        var next: UInt64 = 1
        for _ in 0..<1000 { map[next] = next; next += 1 }
        var longest = 0
        for _ in 0..<100_000 {
            map[next] = next
            if next % 97 == 0 { longest = max(longest, map.longestProbe) }
            map[next] = nil
            next += 1
        }
        #expect(map.count == 1000)
        #expect(longest < 40, "longest probe \(longest)")
    }

    /// 200,000 random operations in the master's pattern, checked against a Dictionary after
    /// every step: ids in sequence, most answered soon and in order, a few (sleepers) in flight
    /// for thousands of ids, so later ids share their home slots and removals happen inside
    /// probe runs; now and then everything is answered at once. The table grows from its
    /// smallest size.
    @Test func agreesWithADictionaryUnderTheMastersPattern() {
        var rng = SplitMix64(seed: 0x5EED_0000_1D5A_0001)
        var map = RequestIDMap<UInt64>(capacity: 1)
        var model: [UInt64: UInt64] = [:]
        var next: UInt64 = 1
        var prompt: [UInt64] = []
        var sleepers: [UInt64] = []
        var displaced = 0
        for step in 0..<200_000 {
            switch rng.next() % 100 {
            case 0..<50:
                let value = rng.next()
                map[next] = value
                model[next] = value
                if rng.next() % 100 == 0 { sleepers.append(next) } else { prompt.append(next) }
                next += 1
            case 50..<95 where !prompt.isEmpty:
                // Mostly the oldest (in-order replies), sometimes one of the next few.
                let id = prompt.remove(at: Int(rng.next() % UInt64(min(4, prompt.count))))
                #expect(map.removeValue(forKey: id) == model.removeValue(forKey: id), "step \(step) id \(id)")
            case 95..<96 where !sleepers.isEmpty:
                let id = sleepers.remove(at: Int(rng.next() % UInt64(sleepers.count)))
                #expect(map.removeValue(forKey: id) == model.removeValue(forKey: id), "step \(step) id \(id)")
            case 96..<99:
                let id = rng.next() % (next + 2)   // present or not
                #expect(map[id] == model[id], "step \(step) id \(id)")
            default:
                if rng.next() % 200 == 0 {
                    map.removeAll()
                    model.removeAll()
                    prompt.removeAll()
                    sleepers.removeAll()
                }
            }
            #expect(map.count == model.count, "step \(step)")
            if let oldest = sleepers.first, next - oldest > 2 * UInt64(max(model.count, 8)) { displaced += 1 }
            if step % 10_000 == 0 {
                let entries = map.entries
                #expect(Dictionary(uniqueKeysWithValues: entries.map { ($0.id, $0.value) }) == model, "step \(step)")
            }
        }
        for (id, value) in model { #expect(map[id] == value, "id \(id)") }
        // The pattern did what it is for: sleepers outlived a whole table of later ids.
        #expect(displaced > 1_000, "steps with a sleeper older than the table: \(displaced)")
    }
}
