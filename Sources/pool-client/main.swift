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
        var payloads = messages.map { Array($0.utf8) }
        if stdin {
            while let line = readLine(strippingNewline: true) { payloads.append(Array(line.utf8)) }
        }
        guard !payloads.isEmpty else { throw ValidationError("give at least one MESSAGE, or --stdin") }
        var failures = 0
        switch wireProtocol {
        case "framed", "tagged":
            let client = try PoolClient(socketPath: socket, timeout: timeout, tagged: wireProtocol == "tagged")
            for response in try client.pipeline(payloads) {
                if response.isOK {
                    printLine(response.body)
                } else {
                    failures += 1
                    let name = response.status.map { "\($0)" } ?? "unknown status \(response.statusByte)"
                    printError("error: \(name)\(response.body.isEmpty ? "" : ": " + String(decoding: response.body, as: UTF8.self))")
                }
            }
        case "oneshot":
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
        if failures > 0 { throw ExitCode(1) }
    }

    private func printLine(_ bytes: [UInt8]) {
        var line = bytes
        line.append(0x0A)
        line.withUnsafeBytes { _ = write(1, $0.baseAddress, $0.count) }
    }

    private func printError(_ text: String) {
        var line = Array(text.utf8)
        line.append(0x0A)
        line.withUnsafeBytes { _ = write(2, $0.baseAddress, $0.count) }
    }
}

PoolClientCommand.main()
