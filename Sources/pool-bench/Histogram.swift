/// A latency histogram in the HDR style: log-bucketed, fixed memory, O(1) to record, mergeable.
///
/// Values are nanoseconds. Below 256 every value has its own bucket; above, each power of two
/// [2^k, 2^(k+1)) is split into 128 equal sub-buckets, so a value is known to within 1/128 of
/// itself (< 0.8 %) from 256 ns up to 2^64 ns, in 7,424 counters. Percentiles report the highest
/// value of the bucket holding the rank (as HdrHistogram does), capped at the exact maximum.
struct Histogram {
    static let subBits = 7
    static let subCount = 1 << subBits                       // 128 sub-buckets per power of two
    static let bucketCount = (64 - subBits + 1) * subCount   // 7,424: covers every UInt64

    private(set) var counts = [UInt64](repeating: 0, count: Histogram.bucketCount)
    private(set) var total: UInt64 = 0
    private(set) var sum: Double = 0
    private(set) var minValue: UInt64 = .max
    private(set) var maxValue: UInt64 = 0

    @inline(__always)
    static func index(of value: UInt64) -> Int {
        if value < UInt64(2 * subCount) { return Int(value) }
        let exponent = (63 - value.leadingZeroBitCount) - subBits     // ≥ 1
        // value >> exponent lies in [128, 256): bucket = exponent·128 + that.
        return exponent * subCount + Int(truncatingIfNeeded: value >> UInt64(exponent))
    }

    /// The lowest and highest value that fall in bucket `index`.
    static func range(of index: Int) -> ClosedRange<UInt64> {
        if index < 2 * subCount { return UInt64(index)...UInt64(index) }
        let exponent = index / subCount - 1
        let mantissa = UInt64(index - exponent * subCount)
        let low = mantissa << UInt64(exponent)
        let high = exponent >= 56 && mantissa == 255 ? UInt64.max : ((mantissa + 1) << UInt64(exponent)) - 1
        return low...high
    }

    @inline(__always)
    mutating func record(_ value: UInt64) {
        counts[Histogram.index(of: value)] &+= 1
        total &+= 1
        sum += Double(value)
        if value < minValue { minValue = value }
        if value > maxValue { maxValue = value }
    }

    mutating func merge(_ other: Histogram) {
        guard other.total > 0 else { return }
        for i in 0..<counts.count { counts[i] &+= other.counts[i] }
        total &+= other.total
        sum += other.sum
        minValue = min(minValue, other.minValue)
        maxValue = max(maxValue, other.maxValue)
    }

    /// The value at percentile `p` (0…100, to a thousandth): the smallest recorded value such that
    /// at least p % of the recorded values are ≤ it, to the histogram's precision. `nil` when empty.
    func percentile(_ p: Double) -> UInt64? {
        guard total > 0 else { return nil }
        if p >= 100 { return maxValue }
        // In integers: 99.9 / 100 × 1000 is 999.0000000000001 in doubles, which rounds up to the
        // maximum instead of the 999th value.
        let thousandths = UInt64(max(0, (p * 1000).rounded()))
        let (high, low) = thousandths.multipliedFullWidth(by: total)
        let (quotient, remainder) = UInt64(100_000).dividingFullWidth((high, low))
        let rank = max(1, quotient + (remainder > 0 ? 1 : 0))
        var cumulative: UInt64 = 0
        for i in 0..<counts.count where counts[i] > 0 {
            cumulative &+= counts[i]
            if cumulative >= rank { return min(max(Histogram.range(of: i).upperBound, minValue), maxValue) }
        }
        return maxValue
    }

    var mean: Double? { total > 0 ? sum / Double(total) : nil }
}
