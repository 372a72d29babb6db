import Glibc
import Logging

/// A swift-log handler that writes each entry as one line with a single `write(2)`.
///
/// Not `StreamLogHandler`: stdio buffers are copied by `fork`, so a line buffered in the master
/// could be printed again by every worker. One unbuffered write per line also keeps lines from
/// different processes sharing the fd whole (up to PIPE_BUF). The master's handler is
/// `nonBlocking` (see `MasterLogOutput`): its event loop never waits for the log's reader.
public struct LineLogHandler: LogHandler {
    /// `text`: `time level label[pid]: message key=value`; `json`: one JSON object per line.
    public enum Format: String, Sendable, CaseIterable { case text, json }

    /// Entries below this level are dropped.
    public var logLevel: Logger.Level
    /// Metadata added to every entry; an entry's own metadata wins on a key conflict.
    public var metadata: Logger.Metadata = [:]
    /// Part of swift-log's `LogHandler` interface; stored, but this handler does not call it.
    public var metadataProvider: Logger.MetadataProvider?
    private let label: String
    private let format: Format
    private let fd: @Sendable () -> Int32
    private let nonBlocking: Bool

    /// - Parameters:
    ///   - fd: where to write, read on every entry (so a reopened log file takes effect).
    ///   - nonBlocking: for the master's logger: write stderr through `MasterLogOutput`, dropping
    ///     (and counting) a line a full pipe or socket has no room for instead of waiting.
    public init(label: String, level: Logger.Level, format: Format = .text, nonBlocking: Bool = false,
                fd: @escaping @Sendable () -> Int32 = { 2 }) {
        self.label = label
        self.logLevel = level
        self.format = format
        self.nonBlocking = nonBlocking
        self.fd = fd
    }

    /// One entry of `metadata`.
    public subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    /// Formats `event` as one line and writes it to `fd()` with `write(2)`.
    public func log(event: LogEvent) {
        var all = metadata
        if let extra = event.metadata { all.merge(extra) { $1 } }
        if nonBlocking && MasterLogOutput.dropped > 0 {
            let notice = line(level: .warning, message: "log lines dropped: the log's reader had no room for them",
                              metadata: ["dropped": "\(MasterLogOutput.dropped)"])
            guard write(notice) else { MasterLogOutput.dropped += 1; return }
            MasterLogOutput.dropped = 0
        }
        if !write(line(level: event.level, message: "\(event.message)", metadata: all)) && nonBlocking {
            MasterLogOutput.dropped += 1
        }
    }

    private func line(level: Logger.Level, message: String, metadata: Logger.Metadata) -> String {
        var line: String
        let pid = getpid()
        switch format {
        case .text:
            line = "\(Self.timestamp()) \(level) \(label)[\(pid)]: \(message)"
            for (key, value) in metadata.sorted(by: { $0.key < $1.key }) { line += " \(key)=\(value)" }
        case .json:
            line = "{\"time\":\"\(Self.timestamp())\",\"level\":\"\(level)\",\"label\":\(Self.jsonString(label)),\"pid\":\(pid),\"message\":\(Self.jsonString(message))"
            for (key, value) in metadata.sorted(by: { $0.key < $1.key }) { line += ",\(Self.jsonString(key)):\(Self.jsonString("\(value)"))" }
            line += "}"
        }
        return line + "\n"
    }

    /// A line was cut short and its end could not be written either: the next write starts with a
    /// newline, so the next line does not run on from the fragment (a JSON reader would lose both).
    nonisolated(unsafe) private static var lineOpen = false

    /// Writes one line; false unless all of it went out (the non-blocking output was full, or the
    /// descriptor is closed): a line cut short counts as dropped.
    private func write(_ line: String) -> Bool {
        var bytes = Array(line.utf8)
        if Self.lineOpen { bytes.insert(0x0A, at: 0) }
        let target = fd()
        let viaMasterOutput = nonBlocking && target == 2
        return bytes.withUnsafeMutableBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = viaMasterOutput
                    ? MasterLogOutput.write(buffer.baseAddress! + offset, buffer.count - offset)
                    : Glibc.write(target, buffer.baseAddress! + offset, buffer.count - offset)
                if n < 0 && errno == EINTR { continue }
                if n <= 0 {
                    // The rest of the line is lost. If part of it went out, end that part now or
                    // before the next line.
                    if offset > 0 {
                        var newline: UInt8 = 0x0A
                        let ended = viaMasterOutput ? MasterLogOutput.write(&newline, 1) : Glibc.write(target, &newline, 1)
                        Self.lineOpen = ended != 1
                    }
                    return false
                }
                offset += n
                Self.lineOpen = false
            }
            return true
        }
    }

    static func timestamp() -> String {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        var tmValue = tm()
        var seconds = ts.tv_sec
        gmtime_r(&seconds, &tmValue)
        func pad(_ v: Int32, _ width: Int) -> String {
            let s = String(v)
            return String(repeating: "0", count: max(0, width - s.count)) + s
        }
        return "\(tmValue.tm_year + 1900)-\(pad(tmValue.tm_mon + 1, 2))-\(pad(tmValue.tm_mday, 2))T"
            + "\(pad(tmValue.tm_hour, 2)):\(pad(tmValue.tm_min, 2)):\(pad(tmValue.tm_sec, 2))."
            + "\(pad(Int32(ts.tv_nsec / 1_000_000), 3))Z"
    }

    /// `s` as a JSON string literal, quoted and escaped.
    public static func jsonString(_ s: String) -> String {
        var out = "\""
        for scalar in s.unicodeScalars {
            switch scalar {
            case "\"": out += "\\\""
            case "\\": out += "\\\\"
            case "\n": out += "\\n"
            case "\r": out += "\\r"
            case "\t": out += "\\t"
            case _ where scalar.value < 0x20:
                let hex = String(scalar.value, radix: 16)
                out += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
            default: out.unicodeScalars.append(scalar)
            }
        }
        return out + "\""
    }
}

/// Renders bytes for a log line: printable ASCII as is, everything else escaped (`\n`, `\xNN`),
/// and anything past `limit` characters replaced by a count of what was left out.
public func displayEscaped(_ bytes: some Collection<UInt8>, limit: Int = 200) -> String {
    var out = ""
    var shown = 0
    for byte in bytes {
        if out.count >= limit { break }
        switch byte {
        case 0x0A: out += "\\n"
        case 0x0D: out += "\\r"
        case 0x09: out += "\\t"
        case 0x5C: out += "\\\\"
        case 0x20...0x7E: out.unicodeScalars.append(Unicode.Scalar(byte))
        default:
            let hex = String(byte, radix: 16)
            out += "\\x" + (hex.count == 1 ? "0" : "") + hex
        }
        shown += 1
    }
    if shown < bytes.count { out += "…(+\(bytes.count - shown) bytes)" }
    return out
}
