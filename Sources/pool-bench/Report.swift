import Pool
/// A minimal JSON value and writer (keys keep their order; non-finite numbers become null).
indirect enum JSON {
    case number(Double)
    case integer(Int)
    case string(String)
    case bool(Bool)
    case null
    case object([(String, JSON)])
    case array([JSON])

    func render(indent: Int = 0) -> String {
        let pad = String(repeating: "  ", count: indent + 1)
        let closing = String(repeating: "  ", count: indent)
        switch self {
        case .number(let value): return value.isFinite ? fixed(value, 3, trim: true) : "null"
        case .integer(let value): return String(value)
        case .string(let value): return JSON.quote(value)
        case .bool(let value): return value ? "true" : "false"
        case .null: return "null"
        case .array(let items):
            if items.isEmpty { return "[]" }
            return "[\n" + items.map { pad + $0.render(indent: indent + 1) }.joined(separator: ",\n") + "\n" + closing + "]"
        case .object(let members):
            if members.isEmpty { return "{}" }
            return "{\n" + members.map { pad + JSON.quote($0.0) + ": " + $0.1.render(indent: indent + 1) }
                .joined(separator: ",\n") + "\n" + closing + "}"
        }
    }

    static func quote(_ text: String) -> String { LineLogHandler.jsonString(text) }
}

/// `value` with `digits` decimals (no Foundation); `trim` drops trailing zeros.
func fixed(_ value: Double, _ digits: Int, trim: Bool = false) -> String {
    guard value.isFinite else { return "-" }
    var scale: UInt64 = 1
    for _ in 0..<digits { scale *= 10 }
    let scaled = (abs(value) * Double(scale)).rounded()
    guard scaled < 1.8e19 else { return String(value) }
    let n = UInt64(scaled)
    var text = (value < 0 && n > 0 ? "-" : "") + String(n / scale)
    if digits > 0 {
        var fraction = String(n % scale)
        fraction = String(repeating: "0", count: digits - fraction.count) + fraction
        if trim { while fraction.hasSuffix("0") { fraction.removeLast() } }
        if !fraction.isEmpty { text += "." + fraction }
    }
    return text
}

/// A duration in nanoseconds, human-readable: 812 ns, 45.1 us, 1.23 ms, 2.50 s.
func formatNanos(_ nanos: UInt64?) -> String {
    guard let nanos else { return "-" }
    let value = Double(nanos)
    if value < 1_000 { return "\(nanos) ns" }
    if value < 1_000_000 { return fixed(value / 1e3, value < 10_000 ? 2 : 1) + " us" }
    if value < 1_000_000_000 { return fixed(value / 1e6, value < 10_000_000 ? 2 : 1) + " ms" }
    return fixed(value / 1e9, 2) + " s"
}

func micros(_ nanos: UInt64?) -> JSON {
    guard let nanos else { return .null }
    return .number(Double(nanos) / 1e3)
}

func latencyJSON(_ histogram: Histogram) -> JSON {
    .object([
        ("count", .integer(Int(histogram.total))),
        ("min", micros(histogram.total > 0 ? histogram.minValue : nil)),
        ("mean", histogram.mean.map { .number($0 / 1e3) } ?? .null),
        ("p50", micros(histogram.percentile(50))),
        ("p90", micros(histogram.percentile(90))),
        ("p99", micros(histogram.percentile(99))),
        ("p999", micros(histogram.percentile(99.9))),
        ("max", micros(histogram.total > 0 ? histogram.maxValue : nil)),
    ])
}

/// Two aligned columns.
func table(_ rows: [(String, String)]) -> String {
    let width = rows.map { $0.0.count }.max() ?? 0
    return rows.map { $0.0 + String(repeating: " ", count: width - $0.0.count) + "  " + $0.1 }.joined(separator: "\n")
}
