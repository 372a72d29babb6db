import ArgumentParser
import Glibc
import Pool

/// Sends messages to a pool and prints each reply; exit status 1 if any reply is not ok.
struct PoolClientCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool-client",
        abstract: "Send messages to a pool-server and print the replies.")

    @Option(name: .long, help: "Path of the server's Unix socket.")
    var socket = "pool.sock"

    @Option(name: .customLong("protocol"), help: "oneshot (one connection per message), framed or tagged (one pipelined connection; replies printed in message order).")
    var wireProtocol: String = "oneshot"

    @Flag(name: .long, help: "Read messages from standard input, one per line.")
    var stdin = false

    @Option(name: .long, help: "Seconds to wait for a reply.")
    var timeout: Double = 30

    @Argument(help: "Messages to send.")
    var messages: [String] = []

    func run() throws {
        guard timeout > 0, timeout <= 1e8 else { throw ValidationError("--timeout must be > 0 and at most 1e8 seconds") }
        var payloads = messages.map { Array($0.utf8) }
        if stdin { payloads += Self.standardInputLines() }
        guard !payloads.isEmpty else { throw ValidationError("give at least one MESSAGE, or --stdin") }
        var failures = 0
        switch wireProtocol {
        case "framed", "tagged":
            let client = try PoolClient(socketPath: socket, timeout: timeout, tagged: wireProtocol == "tagged")
            var responses: [PoolClient.Response?]
            var ended: String? = nil
            do {
                responses = try client.pipeline(payloads)
            } catch let incomplete as PoolClient.IncompletePipeline {
                responses = incomplete.responses
                ended = incomplete.reason
            }
            for response in responses {
                guard let response else {
                    failures += 1
                    printError("error: no reply (\(ended ?? "connection ended"))")
                    continue
                }
                if response.isOK {
                    printLine(response.body)
                } else {
                    failures += 1
                    let name = response.status.map { "\($0)" } ?? "unknown status \(response.statusByte)"
                    printError("error: \(name)\(response.body.isEmpty ? "" : ": " + String(decoding: response.body, as: UTF8.self))")
                }
            }
        case "oneshot":
            // The protocol has no way to send nothing: the server would wait for the idle timeout.
            guard !payloads.contains(where: \.isEmpty) else { throw ValidationError("a oneshot message must have at least 1 byte") }
            for payload in payloads {
                let reply = try PoolClient.oneshot(socketPath: socket, message: payload, timeout: timeout)
                if reply.starts(with: Array("error: ".utf8)) {
                    failures += 1
                    printError(String(decoding: reply, as: UTF8.self))
                } else {
                    printLine(reply)
                }
            }
        default:
            throw ValidationError("--protocol must be oneshot, framed or tagged")
        }
        if failures > 0 || Self.outputFailed { throw ExitCode(1) }
    }

    /// Standard input split on newlines, byte for byte (no UTF-8 repair, no `\r` stripping).
    static func standardInputLines() -> [[UInt8]] {
        var all: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(0, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n <= 0 { break }
            all.append(contentsOf: chunk[0..<n])
        }
        var lines = all.split(separator: 0x0A, omittingEmptySubsequences: false).map(Array.init)
        if all.last == 0x0A || all.isEmpty { lines.removeLast() }
        return lines
    }

    private func printLine(_ bytes: [UInt8]) {
        var line = bytes
        line.append(0x0A)
        if !Self.writeFully(1, line) {
            // A reply that could not be printed is a reply lost: say so, and fail the run.
            printError("error: could not write to standard output: \(String(cString: strerror(errno)))")
            Self.outputFailed = true
        }
    }

    private func printError(_ text: String) {
        var line = Array(text.utf8)
        line.append(0x0A)
        _ = Self.writeFully(2, line)
    }

    /// Set when a reply could not be written to standard output; the exit status is then 1.
    nonisolated(unsafe) static var outputFailed = false

    /// Writes all of `bytes`: on after a short write or EINTR, and after EAGAIN once the
    /// descriptor takes more (an inherited non-blocking stdout). False on any other error.
    static func writeFully(_ fd: Int32, _ bytes: [UInt8]) -> Bool {
        bytes.withUnsafeBytes { buffer in
            var offset = 0
            while offset < buffer.count {
                let n = write(fd, buffer.baseAddress! + offset, buffer.count - offset)
                if n > 0 {
                    offset += n
                } else if n < 0 && errno == EINTR {
                    continue
                } else if n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK) {
                    var wanted = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
                    _ = poll(&wanted, 1, -1)
                } else {
                    return false
                }
            }
            return true
        }
    }
}

PoolClientCommand.main()
