import Logging

/// Lines caused by what clients do (refusals, *busy* answers) logged at most once per interval per
/// kind, the next one saying how many were left out. A flood of bad or surplus requests must not
/// become a flood of log writes: the master writes its log itself, and a slow reader of it (a full
/// pipe to journald) would hold up the event loop.
struct LogThrottle {
    let interval: Int64
    private var kinds: [String: (last: Int64, suppressed: Int)] = [:]

    init(interval: Int64 = 1_000_000_000) { self.interval = interval }

    /// nil: leave this one out. Otherwise log it, with this many left out since the last one.
    mutating func admit(_ kind: String, now: Int64) -> Int? {
        if let entry = kinds[kind], now - entry.last < interval {
            kinds[kind]?.suppressed += 1
            return nil
        }
        let suppressed = kinds[kind]?.suppressed ?? 0
        kinds[kind] = (now, 0)
        return suppressed
    }
}

extension Logger {
    /// Logs through `throttle`: at most once per interval per message text, or per message text
    /// and `kind` (a cause, such as an errno, that must not hide behind another of the same text:
    /// keep its values few, each is remembered).
    func log(throttledBy throttle: inout LogThrottle, level: Logger.Level, _ message: String, kind: String = "",
             metadata: Logger.Metadata = [:]) {
        guard logLevel <= level, let suppressed = throttle.admit(kind.isEmpty ? message : message + "\u{0}" + kind, now: monotonicNanoseconds()) else { return }
        var metadata = metadata
        if suppressed > 0 { metadata["suppressed"] = "\(suppressed)" }
        log(level: level, "\(message)", metadata: metadata)
    }
}
