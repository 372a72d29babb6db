extension Array {
    /// Empties the array and keeps its storage for the next turn's appends.
    ///
    /// Why not `removeAll(keepingCapacity: true)`: it goes through the unspecialized generic
    /// `replaceSubrange` (about 70 instructions and an `arrayDestroy` call even for one element,
    /// by callgrind), and the master clears a few such arrays on every request; the arrays
    /// cleared this way hold a handful of elements.
    @inline(__always)
    mutating func removeAllKeepingStorage() {
        while !isEmpty { removeLast() }
    }
}
