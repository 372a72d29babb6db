/// A first-in first-out queue over an array with a moving head; amortised O(1) with no
/// per-element allocation (Swift's standard library has no deque).
struct FIFO<Element> {
    private var storage: [Element] = []
    private var head = 0

    var isEmpty: Bool { head == storage.count }
    var count: Int { storage.count - head }
    var first: Element? { isEmpty ? nil : storage[head] }

    mutating func append(_ element: Element) { storage.append(element) }

    /// Puts `element` at the front (O(1) while earlier elements have been removed, else O(n)).
    mutating func prepend(_ element: Element) {
        if head > 0 {
            head -= 1
            storage[head] = element
        } else {
            storage.insert(element, at: 0)
        }
    }

    /// Puts `elements` at the front, in their order: O(k) into room earlier removals left, else
    /// one O(n) rebuild (prepending one by one was O(n) each once the storage was compacted).
    mutating func prepend(contentsOf elements: [Element]) {
        guard !elements.isEmpty else { return }
        if head >= elements.count {
            head -= elements.count
            storage.replaceSubrange(head..<(head + elements.count), with: elements)
        } else {
            storage = elements + storage[head...]
            head = 0
        }
    }

    @discardableResult
    mutating func removeFirst() -> Element? {
        guard !isEmpty else { return nil }
        let element = storage[head]
        head += 1
        if head >= 1024 && head * 2 >= storage.count {
            storage.removeFirst(head)
            head = 0
        }
        return element
    }

    /// Removes the first element equal to `value` (usually the head); returns whether found.
    mutating func remove(_ value: Element) -> Bool where Element: Equatable {
        remove { $0 == value }
    }

    /// Removes the first element matching `predicate` (usually the head); returns whether found.
    mutating func remove(where predicate: (Element) -> Bool) -> Bool {
        if let first, predicate(first) { removeFirst(); return true }
        guard let index = storage[head...].firstIndex(where: predicate) else { return false }
        storage.remove(at: index)
        return true
    }

    /// Removes every element matching `predicate`, keeping the others' order (O(n)).
    mutating func removeAll(where predicate: (Element) -> Bool) {
        storage.removeSubrange(..<head)
        head = 0
        storage.removeAll(where: predicate)
    }

    /// The elements, oldest first.
    var elements: ArraySlice<Element> { storage[head...] }

    mutating func removeAll() -> [Element] {
        let rest = Array(storage[head...])
        storage = []
        head = 0
        return rest
    }
}
