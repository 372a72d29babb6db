import ArgumentParser
import Glibc

/// `--config FILE`: a flat JSON object whose keys are long flag names. Its entries become flags
/// placed before the command line's own, so the command line wins (the last value of an option
/// is the one kept). Values: strings, numbers, booleans (true adds the flag), arrays of numbers
/// (joined with commas, for `allow-uid`; an empty one is `--allow-uid=`, refused like the flag).
///
/// One file serves the pool and the operator subcommands, as php-fpm.conf does: `serve` takes
/// every key but the operator-only ones (a misspelt key is its usage error), and each operator
/// subcommand only the keys it has (`status --config pool.json` finds the socket there).
enum ConfigFile {
    /// The keys each operator subcommand takes from the file.
    static let operatorKeys: [String: Set<String>] = [
        "status": ["socket", "timeout", "format"],
        "stop": ["socket", "timeout"],
        "reload": ["socket", "timeout"],
        "scale": ["socket", "timeout"],
        "cleanup": ["socket", "state-file"],
    ]
    /// Keys of operator subcommands only, which `serve` skips.
    static let operatorOnlyKeys: Set<String> = ["timeout", "format"]
    /// The largest file read: settings, not data (`--config /dev/zero` must not fill memory).
    static let maxBytes = 1 << 20

    static func expand(_ arguments: [String]) -> [String] {
        guard let index = arguments.firstIndex(where: { $0 == "--config" || $0.hasPrefix("--config=") }) else {
            return arguments
        }
        let path: String
        var rest = arguments
        if arguments[index] == "--config" {
            guard index + 1 < arguments.count else { return arguments }
            path = arguments[index + 1]
            rest.removeSubrange(index...(index + 1))
        } else {
            path = String(arguments[index].dropFirst("--config=".count))
            rest.remove(at: index)
        }
        // One file: a second would be ignored, and a setting the operator meant to apply silently not.
        if rest.contains(where: { $0 == "--config" || $0.hasPrefix("--config=") }) {
            FileHandleStderr.write("pool-server: --config given more than once; put the settings in one file\n")
            exit(64)
        }
        var flags: [String]
        do {
            flags = try parse(read(path))
        } catch {
            FileHandleStderr.write("pool-server: --config \(path): \(error)\n")
            exit(2)
        }
        let subcommand = rest.first.flatMap { $0.hasPrefix("-") ? nil : $0 }
        flags = flags.filter { flag in
            let key = String(flag.dropFirst(2).prefix { $0 != "=" })
            if let subcommand, let keys = operatorKeys[subcommand] { return keys.contains(key) }
            return !operatorOnlyKeys.contains(key)
        }
        // A subcommand name must stay first.
        if let subcommand { return [subcommand] + flags + rest.dropFirst() }
        return flags + rest
    }

    struct ParseError: Error, CustomStringConvertible { let description: String }

    /// `-?(0|[1-9][0-9]*)(.[0-9]+)?([eE][+-]?[0-9]+)?`, RFC 8259's number.
    static func isJSONNumber(_ token: String) -> Bool {
        var rest = Array(token.utf8)[...]
        func digits() -> Int {
            let count = rest.prefix { $0 >= UInt8(ascii: "0") && $0 <= UInt8(ascii: "9") }.count
            rest.removeFirst(count)
            return count
        }
        if rest.first == UInt8(ascii: "-") { rest.removeFirst() }
        let leadingZero = rest.first == UInt8(ascii: "0")
        let whole = digits()
        guard whole > 0, !(leadingZero && whole > 1) else { return false }
        if rest.first == UInt8(ascii: ".") {
            rest.removeFirst()
            guard digits() > 0 else { return false }
        }
        if rest.first == UInt8(ascii: "e") || rest.first == UInt8(ascii: "E") {
            rest.removeFirst()
            if rest.first == UInt8(ascii: "+") || rest.first == UInt8(ascii: "-") { rest.removeFirst() }
            guard digits() > 0 else { return false }
        }
        return rest.isEmpty
    }

    private static func read(_ path: String) throws -> String {
        guard let file = fopen(path, "r") else { throw ParseError(description: String(cString: strerror(errno))) }
        defer { fclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = fread(&chunk, 1, chunk.count, file)
            if n == 0 {
                // A directory, or an I/O error: said as such, not as a truncated object.
                if ferror(file) != 0 { throw ParseError(description: String(cString: strerror(errno))) }
                break
            }
            bytes.append(contentsOf: chunk[0..<n])
            if bytes.count > maxBytes { throw ParseError(description: "larger than \(maxBytes) bytes") }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// Parses `{"key": value, ...}` into `--key value` arguments.
    static func parse(_ text: String) throws -> [String] {
        var chars = Array(text.unicodeScalars)[...]
        // JSON's four: a no-break space pasted from a web page is an error, not a separator.
        func isSpace(_ c: Unicode.Scalar) -> Bool { c == " " || c == "\t" || c == "\n" || c == "\r" }
        func skipSpace() { while let c = chars.first, isSpace(c) { chars.removeFirst() } }
        func expect(_ c: Unicode.Scalar) throws {
            skipSpace()
            guard chars.first == c else { throw ParseError(description: "expected '\(c)'") }
            chars.removeFirst()
        }
        func string() throws -> String {
            try expect("\"")
            var out = ""
            while let c = chars.popFirst() {
                if c == "\"" { return out }
                if c == "\\", let escaped = chars.popFirst() {
                    switch escaped {
                    case "n": out += "\n"
                    case "t": out += "\t"
                    case "r": out += "\r"
                    case "b": out += "\u{08}"
                    case "f": out += "\u{0C}"
                    case "\"", "\\", "/": out.unicodeScalars.append(escaped)
                    case "u":
                        var hex = ""
                        for _ in 0..<4 { if let h = chars.popFirst() { hex.unicodeScalars.append(h) } }
                        // Four hex digits: UInt32(_:radix:) alone also takes a sign (\u+041).
                        guard hex.unicodeScalars.count == 4, hex.unicodeScalars.allSatisfy(\.properties.isASCIIHexDigit),
                              let value = UInt32(hex, radix: 16) else {
                            throw ParseError(description: "bad \\u escape")
                        }
                        var scalar = Unicode.Scalar(value)
                        // A surrogate pair: \uD83D\uDE00.
                        if (0xD800..<0xDC00).contains(value), chars.starts(with: ["\\", "u"]) {
                            chars.removeFirst(2)
                            var low = ""
                            for _ in 0..<4 { if let h = chars.popFirst() { low.unicodeScalars.append(h) } }
                            if low.unicodeScalars.allSatisfy(\.properties.isASCIIHexDigit),
                               let lowValue = UInt32(low, radix: 16), (0xDC00..<0xE000).contains(lowValue) {
                                scalar = Unicode.Scalar(0x10000 + ((value - 0xD800) << 10) + (lowValue - 0xDC00))
                            }
                        }
                        guard let scalar else { throw ParseError(description: "bad \\u escape") }
                        // Paths end at a NUL in C: "pool.sock\u0000x" would pass a check on the
                        // Swift string and name pool.sock.
                        guard scalar.value != 0 else { throw ParseError(description: "NUL (\\u0000) in a string") }
                        out.unicodeScalars.append(scalar)
                    default:
                        throw ParseError(description: "bad escape \\\(escaped)")
                    }
                } else if c.value < 0x20 {
                    throw ParseError(description: "control character in a string")
                } else {
                    out.unicodeScalars.append(c)
                }
            }
            throw ParseError(description: "unterminated string")
        }
        func scalar() throws -> String? {
            skipSpace()
            if chars.first == "\"" { return try string() }
            var token = ""
            while let c = chars.first, c != ",", c != "}", c != "]", !isSpace(c) {
                token.unicodeScalars.append(c)
                chars.removeFirst()
            }
            if token == "true" { return flagOnly }
            if token == "false" || token == "null" { return nil }
            // JSON's number grammar: Double alone also takes 0x10, +1, .5, inf and nan, which
            // another reader of the same file (jq, a deployment tool) would refuse or read otherwise.
            guard isJSONNumber(token), let number = Double(token) else {
                throw ParseError(description: "unsupported value '\(token)'")
            }
            // JSON has one number type: 1e3 and 2.0 are the integers an Int option expects.
            if number == number.rounded(), abs(number) < 9e15 { return String(Int(number)) }
            return token
        }
        /// `true`: the flag alone, without a value.
        let flagOnly = "\u{0}true"
        var flags: [String] = []
        try expect("{")
        skipSpace()
        if chars.first == "}" {
            chars.removeFirst()
            skipSpace()
            guard chars.isEmpty else { throw ParseError(description: "unexpected text after the JSON object") }
            return []
        }
        var keys = Set<String>()
        while true {
            let key = try string()
            // Not settings: a second file would be ignored, and help would exit 0 without serving.
            if ["config", "help", "version"].contains(key) { throw ParseError(description: "'\(key)' is not a setting") }
            // Which one wins differs between JSON readers (and for a list option both would add
            // up): the operator meant one of them, so neither is guessed.
            guard keys.insert(key).inserted else { throw ParseError(description: "'\(key)' given twice") }
            try expect(":")
            skipSpace()
            var value: String?
            if chars.first == "[" {
                chars.removeFirst()
                var items: [String] = []
                skipSpace()
                while chars.first != "]" {
                    // Numbers and strings only: true/false/null have no place in a list, and true's
                    // internal marker must never reach a value.
                    guard let item = try scalar(), item != flagOnly else {
                        throw ParseError(description: "\(key): a list holds numbers or strings only")
                    }
                    items.append(item)
                    skipSpace()
                    if chars.isEmpty { throw ParseError(description: "unterminated array") }
                    if chars.first == "]" { break }
                    // Items are separated by one comma, and a comma is followed by an item.
                    try expect(",")
                    skipSpace()
                    if chars.first == "]" { throw ParseError(description: "\(key): a comma before ']'") }
                }
                chars.removeFirst()
                // An empty list is an empty value, refused as `--allow-uid ""` is: an operator
                // who meant "nobody" must not get "anyone".
                value = items.joined(separator: ",")
            } else {
                value = try scalar()
            }
            if let value {
                // One argument, `--key=value`: an empty string or a value starting with `-` stays a value.
                flags.append(value == flagOnly ? "--\(key)" : "--\(key)=\(value)")
            }
            skipSpace()
            if chars.first == "," { chars.removeFirst(); continue }
            try expect("}")
            skipSpace()
            guard chars.isEmpty else { throw ParseError(description: "unexpected text after the JSON object") }
            return flags
        }
    }
}

enum FileHandleStderr {
    static func write(_ text: String) {
        var bytes = Array(text.utf8)
        bytes.withUnsafeMutableBytes { _ = Glibc.write(2, $0.baseAddress, $0.count) }
    }
}
