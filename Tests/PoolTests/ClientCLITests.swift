import Foundation
import Glibc
import Pool
import Testing

/// The `pool-client` executable against a real `pool-server`: exact stdout, stderr and exit codes.
@Suite(.serialized) struct ClientCLITests {
    static var client: String { Binaries.path("pool-client") }

    func run(_ server: TestServer, _ arguments: [String], stdin: String? = nil) throws -> FramedSupport.CommandResult {
        let result = try FramedSupport.runCommand(Self.client, ["--socket", server.socketPath] + arguments, stdin: stdin, timeout: 30)
        #expect(!result.timedOut, "pool-client \(arguments) did not finish")
        #expect(result.reason == .exit, "pool-client \(arguments) was killed by a signal")
        return result
    }

    @Test func framedEchoPrintsTheReply() throws {
        let server = try TestServer(["--protocol", "framed", "--reply", "result", "--handler", "echo"])
        let result = try run(server, ["--protocol", "framed", "hello"])
        #expect(result.stdout == "hello\n")
        #expect(result.stderr == "")
        #expect(result.status == 0)

        let several = try run(server, ["--protocol", "framed", "one", "two words", "three"])
        #expect(several.stdout == "one\ntwo words\nthree\n")
        #expect(several.status == 0)
        FramedSupport.expectCleanShutdown(server)
    }

    /// A reply that cannot be printed (standard output full: /dev/full gives ENOSPC) is a failure
    /// named on stderr, not a silent exit 0.
    @Test(.enabled(if: fileExists("/dev/full"), "needs /dev/full"))
    func aReplyThatCannotBePrintedFailsTheRun() throws {
        let server = try TestServer(["--protocol", "framed", "--reply", "result", "--handler", "echo"])
        let result = try FramedSupport.runCommand("/bin/sh", ["-c", "exec \"$0\" --socket \"$1\" --protocol framed hello >/dev/full",
                                                              Self.client, server.socketPath], timeout: 30)
        #expect(!result.timedOut)
        #expect(result.status == 1, "exit \(result.status): \(result.stderr)")
        #expect(result.stderr.contains("could not write to standard output"), "stderr: \(result.stderr)")
        FramedSupport.expectCleanShutdown(server)
    }

    @Test func framedHandlerErrorFailsAndNamesTheStatus() throws {
        let server = try TestServer(["--protocol", "framed", "--reply", "result", "--handler", "sim"])
        let result = try run(server, ["--protocol", "framed", "fail:x"])
        #expect(result.status != 0)
        #expect(result.stdout == "")
        #expect(result.stderr.contains("handler error"), "stderr: \(result.stderr)")
        #expect(result.stderr.contains("x"), "stderr: \(result.stderr)")

        // Successes around a failure are still printed, in order; the exit status reports the failure.
        let mixed = try run(server, ["--protocol", "framed", "before", "fail:x", "after"])
        #expect(mixed.stdout == "before\nafter\n")
        #expect(mixed.stderr.contains("handler error"))
        #expect(mixed.status != 0)
        FramedSupport.expectCleanShutdown(server)
    }

    @Test func framedStdinSendsOneMessagePerLine() throws {
        let server = try TestServer(["--protocol", "framed", "--reply", "result", "--handler", "echo"])
        let result = try run(server, ["--protocol", "framed", "--stdin"], stdin: "a\nb\n")
        #expect(result.stdout == "a\nb\n")
        #expect(result.stderr == "")
        #expect(result.status == 0)
        FramedSupport.expectCleanShutdown(server)
    }

    /// A refusal closes the connection (too large): the replies before it are still printed, the
    /// refusal is named, and each request left without a reply is reported; exit status 1.
    @Test func framedRefusalKeepsTheRepliesBeforeIt() throws {
        let server = try TestServer(["--protocol", "framed", "--reply", "result", "--handler", "echo", "--max-message", "100"])
        let result = try run(server, ["--protocol", "framed", "hello", String(repeating: "y", count: 101), "after"])
        #expect(result.stdout == "hello\n", "stdout: \(result.stdout)")
        #expect(result.stderr.contains("error: too large"), "stderr: \(result.stderr)")
        #expect(result.stderr.contains("error: no reply"), "stderr: \(result.stderr)")
        #expect(result.status == 1)
        FramedSupport.expectCleanShutdown(server)
    }

    /// --stdin splits on newlines only and takes the bytes as they are (a `\r` before the newline
    /// is part of the message).
    @Test func stdinLinesAreSentByteForByte() throws {
        let server = try TestServer(["--protocol", "framed", "--reply", "result", "--handler", "echo"])
        let input = "a\u{FF}b\nx\r\n"   // as UTF-8: 61 C3 BF 62 0A 78 0D 0A
        let result = try run(server, ["--protocol", "framed", "--stdin"], stdin: input)
        #expect(Array(result.stdout.utf8) == Array("a\u{FF}b\nx\r\n".utf8), "stdout: \(Array(result.stdout.utf8))")
        #expect(result.status == 0)
        FramedSupport.expectCleanShutdown(server)
    }

    @Test func oneshotAgainstTheDefaultServerPrintsOk() throws {
        let server = try TestServer()
        let result = try run(server, ["hello"])
        #expect(result.stdout == "ok\n")
        #expect(result.stderr == "")
        #expect(result.status == 0)
        #expect(waitUntil(timeout: 20) { server.log.contains("recv 5 bytes: hello") }, "\(server.log)")
        FramedSupport.expectCleanShutdown(server)
    }

    /// Past --max-connections the server answers busy and closes, usually before the client has
    /// written its message: the write fails (EPIPE) but the answer is there to read. The client
    /// used to report the broken pipe in about two of three tries.
    @Test func oneshotAtTheConnectionLimitReportsBusyNotABrokenPipe() throws {
        let server = try TestServer(["--max-connections", "2", "--idle-timeout", "60"])
        var held: [SocketFD] = []
        defer { for socket in held { socket.close() } }
        for _ in 0..<2 { held.append(try connectBlocking(path: server.socketPath, timeout: 10)) }
        #expect(waitUntil(timeout: 20) {
            (try? PoolClient.oneshot(socketPath: server.socketPath, message: "probe".bytes, timeout: 10)) == "error: busy".bytes
        }, "the held connections never filled the limit")
        var answers: [String: Int] = [:]
        for _ in 0..<40 {
            let answer: String
            do {
                answer = String(decoding: try PoolClient.oneshot(socketPath: server.socketPath, message: "over".bytes, timeout: 10), as: UTF8.self)
            } catch {
                answer = "thrown: \(error)"
            }
            answers[answer, default: 0] += 1
        }
        #expect(answers == ["error: busy": 40], "\(answers)")
        let result = try run(server, ["over"])
        #expect(result.status == 1 && result.stderr.contains("error: busy"), "\(result.stderr)")
        for socket in held { socket.close() }
        held = []
        FramedSupport.expectCleanShutdown(server)
    }

    @Test func noServerIsAnError() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let result = try FramedSupport.runCommand(Self.client, ["--socket", directory + "/absent.sock", "--protocol", "framed", "x"])
        #expect(!result.timedOut)
        #expect(result.status != 0)
        #expect(result.stdout == "")
        #expect(!result.stderr.isEmpty)
    }
}
