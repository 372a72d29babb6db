import Foundation
import Glibc
import Pool
import Testing

private typealias S = OneshotShutdownSupport

/// `php` if installed (the seed's client is a PHP script).
private let phpPath: String? = OneshotShutdownSupport.executableInPath("php")
/// The seed's client, copied verbatim into `Tests/Fixtures/seed-client.php` (so a clean clone
/// has it); `../shared/seed/client.php` beside the repository is the original.
private let seedClientPath: String = {
    let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()
    let fixture = packageRoot.appendingPathComponent("Tests/Fixtures/seed-client.php").path
    if FileManager.default.fileExists(atPath: fixture) { return fixture }
    return packageRoot.deletingLastPathComponent().appendingPathComponent("shared/seed/client.php").path
}()
private let seedClientRunnable = phpPath != nil && FileManager.default.fileExists(atPath: seedClientPath)

extension OneshotShutdownSuites {
    /// The oneshot protocol with `--reply ack` (the defaults), end to end through the built
    /// `pool-server` binary. Nothing here asserts speed: every wait is for a condition with a generous
    /// timeout, so a loaded machine only makes the tests slower.
    @Suite(.serialized) struct OneshotIntegrationTests {
        // MARK: - Seed compatibility

        /// The seed's PHP client writes 11 bytes without half-closing, echoes the byte count, then
        /// echoes the reply: its output must be exactly `11ok`.
        @Test(.enabled(if: seedClientRunnable, "php is not installed"))
        func seedPHPClientGets11ok() throws {
            let server = try TestServer(["--workers", "3", "--handler", "log"])
            defer { server.stop() }
            try FileManager.default.copyItem(atPath: seedClientPath, toPath: server.directory + "/client.php")
            let result = try S.run(try #require(phpPath), ["client.php"], in: server.directory)
            #expect(result.status == 0, "php exited \(String(describing: result.status)); stderr: \(result.stderr)")
            #expect(result.stdout == "11ok", "stdout \(result.stdout.debugDescription), stderr \(result.stderr)")
            #expect(waitUntil { S.recvCounts(in: server.log)["i am client"] == 1 },
                    "the seed client's message should be logged once:\n\(server.log)")
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
        }

        /// The seed's way of running: `--socket pool.sock`, relative to the server's working
        /// directory. Served there, and removed from there on shutdown.
        @Test func relativeSocketPathIsUsedAndRemoved() throws {
            let server = try TestServer(["--workers", "2", "--handler", "log"], socketPath: "pool.sock")
            defer { server.stop() }
            let absolute = server.directory + "/pool.sock"
            #expect(S.fileMode(absolute)?.isSocket == true, "no socket at \(absolute)")
            #expect(try S.oneshot(absolute, "relative") == "ok")
            #expect(waitUntil { S.recvCounts(in: server.log)["relative"] == 1 })
            let workers = server.workerPIDs
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
            S.expectNothingLeft(socketPath: absolute, queueIDs: server.queueIDs, masterPID: server.pid, workers: workers)
        }

        /// Fifty clients connect and send while the master is frozen (SIGSTOP), so all of them wait
        /// in the listen backlog at once. After SIGCONT every one is answered `ok`. The master takes
        /// one oneshot client per loop turn and relies on the listener being level-triggered to be
        /// told of the rest: were it edge-triggered, all but the first would wait for a new connect.
        @Test func clientsWaitingInTheListenBacklogAreAllAnswered() throws {
            let server = try TestServer(["--workers", "2", "--handler", "echo"])
            var stopped = false
            defer {
                if stopped { kill(server.pid, SIGCONT) }
                server.stop()
            }
            #expect(try S.oneshot(server.socketPath, "before") == "ok")
            kill(server.pid, SIGSTOP)
            stopped = true
            #expect(waitUntil(timeout: 10) { processState(server.pid) == "T" })
            let clients = try (0..<50).map { index in
                let client = try FaultSupport.Connection(path: server.socketPath, timeout: 30)
                #expect(client.send("waiting-\(index)".bytes))
                return client
            }
            kill(server.pid, SIGCONT)
            stopped = false
            // One deadline for all fifty (each read's own timeout would add up to minutes).
            #expect(waitUntil(timeout: 30) { clients.allSatisfy { $0.readable(within: 0) } },
                    "clients with no answer: \(clients.indices.filter { !clients[$0].readable(within: 0) })")
            for (index, client) in clients.enumerated() where client.readable(within: 0) {
                let (bytes, end) = client.readToEnd()
                #expect(String(decoding: bytes, as: UTF8.self) == "ok" && end == .eof,
                        "client \(index): \(bytes.count) bytes, \(end)")
            }
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
        }

        // MARK: - The log handler

        /// 1000 distinct messages, one connection each: every one is acknowledged `ok` (busy is retried)
        /// and, after a clean stop, each appears in exactly one `recv` line with its length.
        @Test func thousandMessagesAreEachLoggedExactlyOnce() throws {
            let server = try TestServer(["--workers", "3", "--handler", "log"])
            defer { server.stop() }
            #expect(waitUntil { server.workerPIDs.count == 3 })
            let workers = Set(server.workerPIDs)
            let messages = (0..<1000).map { "msg-\($0)" }

            var busyRetries = 0
            var unexpected: [String] = []
            for message in messages {
                var attempts = 0
                while true {
                    let reply = try S.oneshot(server.socketPath, message)
                    if reply == "ok" { break }
                    if reply == "error: busy" && attempts < 500 {
                        attempts += 1
                        busyRetries += 1
                        usleep(10_000)
                        continue
                    }
                    unexpected.append("\(message) -> \(reply.debugDescription)")
                    break
                }
            }
            #expect(unexpected.isEmpty, "replies other than ok: \(unexpected.prefix(20))")
            if busyRetries > 0 { print("thousandMessages: \(busyRetries) busy answer(s) retried") }

            server.signal(SIGINT)
            S.expectExit(server, status: 0, timeout: 30)

            let lines = recvLines(in: server.log)
            var counts: [String: Int] = [:]
            for line in lines { counts[line.message, default: 0] += 1 }
            let missing = messages.filter { counts[$0] == nil }
            let duplicated = messages.filter { (counts[$0] ?? 0) > 1 }
            #expect(missing.isEmpty, "\(missing.count) message(s) never logged, e.g. \(missing.prefix(10))")
            // A busy answer must never come with a delivery: a retried message logged twice shows it.
            #expect(duplicated.isEmpty, "\(duplicated.count) message(s) logged more than once, e.g. \(duplicated.prefix(10))")
            #expect(lines.count == messages.count, "recv lines: \(lines.count)")
            let wrongLength = lines.filter { $0.length != $0.message.utf8.count }
            #expect(wrongLength.isEmpty, "recv lines with a wrong LEN: \(wrongLength.prefix(5))")
            let strangers = Set(lines.map(\.pid)).subtracting(workers)
            #expect(strangers.isEmpty, "lines from pids that are not the workers \(workers.sorted()): \(strangers.sorted())")
            // Round robin: every worker gets a share. (Not asserted to be exactly even: a worker that
            // falls far behind on a loaded machine fills its queue and the next one takes over.)
            var perWorker: [pid_t: Int] = [:]
            for line in lines { perWorker[line.pid, default: 0] += 1 }
            #expect(perWorker.count == 3, "workers that handled messages: \(perWorker)")
            print("thousandMessages: per worker \(perWorker.values.sorted())")
        }

        /// Non-printable bytes are escaped in the log line (`\x01`), and LEN counts raw bytes.
        @Test func nonPrintableBytesAreEscapedInTheLog() throws {
            let server = try TestServer(["--workers", "1", "--handler", "log"])
            defer { server.stop() }
            // Includes a NUL: the message is bytes, not a C string.
            let payload: [UInt8] = [0x01, 0x61, 0x00, 0x62, 0xFF]
            #expect(try S.oneshot(server.socketPath, bytes: payload) == "ok")
            let expected = #"\x01a\x00b\xff"#
            #expect(waitUntil { recvLines(in: server.log).contains { $0.message == expected } },
                    "expected a recv line with \(expected):\n\(server.log)")
            let line = recvLines(in: server.log).first { $0.message == expected }
            #expect(line?.length == payload.count)
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
        }

        /// Other client styles: one that half-closes after writing still gets `ok`; one that writes
        /// and closes at once, never reading, still has its message queued and handled.
        @Test func halfClosingAndFireAndForgetClientsAreServed() throws {
            let server = try TestServer(["--workers", "2", "--handler", "log"])
            defer { server.stop() }

            let halfClosing = try SocketFD.unixStream(nonBlocking: false)
            defer { halfClosing.close() }
            try halfClosing.connect(path: server.socketPath)
            try halfClosing.setReceiveTimeout(seconds: 30)
            try Array("half-closed".utf8).withUnsafeBytes { try halfClosing.writeAll($0) }
            try halfClosing.shutdownWrite()
            let reply = receiveToEnd(halfClosing.raw)
            #expect(String(decoding: reply, as: UTF8.self) == "ok")

            let fireAndForget = try SocketFD.unixStream(nonBlocking: false)
            try fireAndForget.connect(path: server.socketPath)
            try Array("fire-and-forget".utf8).withUnsafeBytes { try fireAndForget.writeAll($0) }
            fireAndForget.close()

            #expect(waitUntil { let counts = S.recvCounts(in: server.log)
                                return counts["half-closed"] == 1 && counts["fire-and-forget"] == 1 },
                    "both messages should be handled once:\n\(server.log)")
            #expect(try S.oneshot(server.socketPath, "and the server goes on") == "ok")
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
        }

        // MARK: - quit is just data

        /// Unlike the seed (whose workers stopped on any message starting with "quit"), a `quit`
        /// payload is an ordinary message: every worker keeps running and later messages still work.
        @Test func quitPayloadsLeaveEveryWorkerRunning() throws {
            let server = try TestServer(["--workers", "3", "--handler", "log"])
            defer { server.stop() }
            #expect(waitUntil { server.workerPIDs.count == 3 })
            let before = server.workerPIDs

            let payloads = ["quit", "QUIT now", "Quit"]
            for payload in payloads {
                #expect(try S.oneshot(server.socketPath, payload) == "ok", "payload \(payload)")
            }
            // Each is handled (logged) by a worker, i.e. the workers did take them...
            #expect(waitUntil { let counts = S.recvCounts(in: server.log); return payloads.allSatisfy { counts[$0] == 1 } },
                    "quit payloads should be logged once each:\n\(server.log)")
            // ...and went on: one more message for each (round robin) is handled after them, so a
            // worker that had quit would have been replaced by now.
            let markers = (0..<3).map { "marker-\($0)" }
            for marker in markers { #expect(try S.oneshot(server.socketPath, marker) == "ok") }
            #expect(waitUntil { let counts = S.recvCounts(in: server.log); return markers.allSatisfy { counts[$0] == 1 } })
            #expect(server.workerPIDs == before, "workers before \(before), after \(server.workerPIDs)")
            #expect(before.allSatisfy(processIsAlive))
            #expect(server.logLines(containing: "worker exited").isEmpty && server.logLines(containing: "worker died").isEmpty,
                    "a worker ended:\n\(server.log)")

            let later = (0..<6).map { "after-quit-\($0)" }
            for message in later {
                #expect(try S.oneshot(server.socketPath, message) == "ok")
            }
            #expect(waitUntil { let counts = S.recvCounts(in: server.log); return later.allSatisfy { counts[$0] == 1 } },
                    "later messages should be logged once each:\n\(server.log)")
            let handlers = Set(recvLines(in: server.log).filter { later.contains($0.message) }.map(\.pid))
            #expect(handlers == Set(before), "every original worker should still handle messages: \(handlers.sorted()) vs \(before)")
            #expect(server.workerPIDs == before)

            server.signal(SIGINT)
            S.expectExit(server, status: 0)
        }

        // MARK: - Idle connections

        /// A client that connects and sends nothing must not hold up another client: the second
        /// client's round trips finish while the idle connection is still open (--idle-timeout 10).
        @Test func idleClientDoesNotDelayAnother() throws {
            let server = try TestServer(["--workers", "2", "--handler", "log", "--idle-timeout", "10"])
            defer { server.stop() }
            let idle = try SocketFD.unixStream(nonBlocking: false)
            var idleOpen = true
            defer { if idleOpen { idle.close() } }
            try idle.connect(path: server.socketPath)

            let messages = (0..<5).map { "beside-idle-\($0)" }
            for message in messages {
                #expect(try S.oneshot(server.socketPath, message) == "ok")
            }
            // The idle connection is still open: no end of stream, nothing to read. Had the server
            // waited on it, the round trips above could only have finished after the idle timeout
            // closed it.
            var byte: UInt8 = 0
            let n = recv(idle.raw, &byte, 1, Int32(MSG_DONTWAIT))
            let error = errno
            #expect(n == -1 && (error == EAGAIN || error == EWOULDBLOCK),
                    "the idle connection should still be open (recv returned \(n), errno \(error))")
            #expect(waitUntil { let counts = S.recvCounts(in: server.log); return messages.allSatisfy { counts[$0] == 1 } })
            idle.close()
            idleOpen = false
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
        }

        /// The server closes a connection that sends nothing once --idle-timeout has passed (not
        /// before), and keeps serving others.
        @Test func idleConnectionIsClosedAfterTheIdleTimeout() throws {
            let server = try TestServer(["--workers", "1", "--idle-timeout", "1"])
            defer { server.stop() }
            let start = monotonicNanoseconds()
            let idle = try SocketFD.unixStream(nonBlocking: false)
            defer { idle.close() }
            try idle.connect(path: server.socketPath)
            try idle.setReceiveTimeout(seconds: 20)
            var buffer = [UInt8](repeating: 0, count: 64)
            var n: Int
            var error: Int32 = 0
            repeat {
                n = buffer.withUnsafeMutableBytes { Glibc.read(idle.raw, $0.baseAddress, $0.count) }
                error = errno
            } while n < 0 && error == EINTR
            let elapsed = Double(monotonicNanoseconds() - start) / 1e9
            #expect(n == 0, "expected end of stream from the server (read returned \(n), errno \(error), after \(elapsed) s)")
            #expect(elapsed >= 0.95, "closed after \(elapsed) s, before --idle-timeout 1")
            #expect(try S.oneshot(server.socketPath, "still serving") == "ok")
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
        }

        /// A client that keeps streaming after its refusal is read only so far (what it sent is
        /// thrown away, a few 64 KiB reads per loop turn), then closed once 4 MiB have been
        /// discarded: it cannot keep the master reading for as long as it likes.
        @Test func clientStreamingAfterItsRefusalIsClosed() throws {
            let server = try TestServer(["--workers", "1", "--handler", "log", "--max-message", "100", "--idle-timeout", "60"])
            defer { server.stop() }
            let flood = try SocketFD.unixStream(nonBlocking: false)
            defer { flood.close() }
            try flood.connect(path: server.socketPath)
            var timeout = timeval(tv_sec: 20, tv_usec: 0)
            #expect(setsockopt(flood.raw, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size)) == 0)
            let chunk = [UInt8](repeating: 0x43, count: 65_536)
            var written = 0
            var failure: Int32 = 0
            while written < 32 << 20 {
                let n = chunk.withUnsafeBytes { send(flood.raw, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = errno
                    break
                }
                written += n
            }
            #expect(failure == EPIPE || failure == ECONNRESET,
                    "expected the server to close the connection (errno \(failure) after \(written) bytes)")
            #expect(written < 32 << 20, "the server read \(written) bytes without closing")
            #expect(waitUntil { !server.logLines(containing: "kept sending after its message or refusal").isEmpty }, "\(server.log)")
            // Nothing of it reached a worker, and the server still serves.
            #expect(try S.oneshot(server.socketPath, "after the flood") == "ok")
            #expect(waitUntil { S.recvCounts(in: server.log)["after the flood"] == 1 })
            #expect(S.recvCounts(in: server.log).count == 1, "only the last message should have been delivered")
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
        }

        /// A refused connection is answered and then drained (so the client can finish writing
        /// without a reset) until --idle-timeout counted from its refusal, also when the refusal
        /// came in the first loop turn after the server sat idle for longer than that: activity is
        /// stamped with that turn's time, not with the time before the idle wait (else the idle
        /// scan due in the same turn closes the connection at once).
        @Test func refusalAfterALongIdleSpellIsStillDrained() throws {
            let server = try TestServer(["--workers", "1", "--max-message", "100", "--idle-timeout", "2"])
            defer { server.stop() }
            // No connection: the master sleeps without a timer, and its idle scan falls overdue.
            usleep(2_500_000)
            let client = try SocketFD.unixStream(nonBlocking: false)
            defer { client.close() }
            try client.connect(path: server.socketPath)
            try client.setReceiveTimeout(seconds: 20)
            let message = [UInt8](repeating: 0x42, count: 101)
            #expect(message.withUnsafeBytes { send(client.raw, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) } == 101)
            let answer = receiveToEnd(client.raw)
            #expect(String(decoding: answer, as: UTF8.self) == "error: too large")
            // Still drained a moment later: the rest of a message is taken, not refused with EPIPE.
            usleep(200_000)
            let rest = [UInt8](repeating: 0x43, count: 10)
            let sent = rest.withUnsafeBytes { send(client.raw, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            #expect(sent == 10, "the rest of the message got \(sent) (errno \(errno)): the refused connection was closed at once")
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
        }

        // MARK: - --max-message

        /// With --max-message 100: 101 bytes (and far more) get exactly `error: too large` and reach
        /// no worker; exactly 100 bytes get `ok` and are logged.
        @Test func maxMessageIsInclusiveAndLargerMessagesAreRefused() throws {
            let server = try TestServer(["--workers", "2", "--handler", "log", "--max-message", "100"])
            defer { server.stop() }
            let over = String(repeating: "B", count: 101)
            let farOver = String(repeating: "C", count: 5000)
            let exact = String(repeating: "A", count: 100)
            #expect(try S.oneshot(server.socketPath, over) == "error: too large")
            #expect(try S.oneshot(server.socketPath, farOver) == "error: too large")
            #expect(try S.oneshot(server.socketPath, exact) == "ok")
            #expect(waitUntil { S.recvCounts(in: server.log)[exact] == 1 }, "the 100-byte message should be logged:\n\(server.log)")

            // Stop cleanly so everything queued has been handled before looking for what was not.
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
            let lines = recvLines(in: server.log)
            #expect(lines.filter { $0.message == exact && $0.length == 100 }.count == 1)
            let leaked = lines.filter { $0.length > 100 || $0.message.contains("B") || $0.message.contains("C") }
            #expect(leaked.isEmpty, "too-large messages reached a worker: \(leaked)")
            #expect(lines.count == 1, "recv lines: \(lines)")
        }

        // MARK: - Busy

        /// One hung worker, a queue of 8192 bytes and ~4000-byte messages, and `--max-backlog 0` (no
        /// client may wait for room): the queue fills, the next message is answered `error: busy`,
        /// and the `ok`s are exactly the messages queued (the hang, taken by the worker, plus what
        /// sits in the queue). Busy messages are not queued.
        // Its sizes are laid out for queues of 8192 bytes, which only a msgmax of 8192 allows.
        @Test(.enabled(if: FramedSupport.kernelMsgmax() == 8192, "sized for kernel.msgmax 8192"))
        func fullQueueAnswersBusyAndEveryOkIsQueued() throws {
            // --spill-bytes 0: payloads travel inside the messages, so the queue's bytes fill.
            let server = try TestServer(["--workers", "1", "--handler", "sim", "--queue-bytes", "8192",
                                         "--shutdown-timeout", "1", "--max-backlog", "0", "--spill-bytes", "0"])
            defer { server.stop() }
            #expect(waitUntil { server.workerPIDs.count == 1 })
            let worker = try #require(server.workerPIDs.first)
            let queueID = try #require(server.queueIDs.first)
            let queue = MessageQueue(id: queueID)
            #expect(try queue.status().capacityBytes == 8192)

            #expect(try S.oneshot(server.socketPath, "hang") == "ok")
            // The worker takes the hang and never comes back for more.
            #expect(waitUntil { (try? queue.status()).map { $0.messages == 0 && $0.lastReceivePID == worker } ?? false },
                    "the worker should have taken the hang message")

            let size = 4000
            var ok = 1  // the hang
            var busy = 0
            var other: [String] = []
            var sent = 0
            while busy == 0 && sent < 20 {
                let fill = Character(Unicode.Scalar(UInt8(65 + sent % 26)))
                sent += 1
                let reply = try S.oneshot(server.socketPath, String(repeating: fill, count: size))
                switch reply {
                case "ok": ok += 1
                case "error: busy": busy += 1
                default: other.append(reply)
                }
            }
            #expect(other.isEmpty, "unexpected replies: \(other)")
            #expect(busy == 1, "a full queue should answer busy (sent \(sent), ok \(ok))")
            let status = try queue.status()
            #expect(ok == 1 + status.messages, "ok replies \(ok) != 1 (hang) + \(status.messages) queued")
            #expect(status.bytes == status.messages * (size + JobCodec.headerBytes), "queue bytes \(status.bytes)")
            #expect(status.messages == 8192 / (size + JobCodec.headerBytes), "queued \(status.messages)")

            // Still full: more attempts are busy and queue nothing.
            for _ in 0..<3 {
                #expect(try S.oneshot(server.socketPath, String(repeating: "z", count: size)) == "error: busy")
            }
            #expect(try queue.status().messages == status.messages)

            // The worker hangs: --shutdown-timeout 1 ends it.
            let workers = server.workerPIDs
            server.signal(SIGINT)
            let exitStatus = S.waitForExit(server, timeout: 30)
            #expect(exitStatus == 0, "a stop that reaches --shutdown-timeout still exits 0 (1 is a forced stop): exit status \(String(describing: exitStatus))")
            S.expectNothingLeft(socketPath: server.socketPath, queueIDs: server.queueIDs, masterPID: server.pid, workers: workers)
        }

        /// The same full queue with the default --max-backlog: the next client is not answered
        /// busy but waits (backpressure) and gets its `ok` once the worker has made room — and a
        /// client that gives up while waiting has its message dropped, never run.
        // Its sizes are laid out for queues of 8192 bytes, which only a msgmax of 8192 allows.
        @Test(.enabled(if: FramedSupport.kernelMsgmax() == 8192, "sized for kernel.msgmax 8192"))
        func fullQueueHoldsTheClientUntilThereIsRoom() throws {
            let server = try TestServer(["--workers", "1", "--handler", "sim", "--queue-bytes", "8192",
                                         "--shutdown-timeout", "5", "--spill-bytes", "0"])
            defer { server.stop() }
            // Long enough that the queue is still full when the client below gives up, even on a
            // loaded machine.
            let (worker, queue) = try S.occupyTheOnlyWorker(server, with: "sleep:3000")
            // Two messages fill the 8192 bytes exactly: not even a 5-byte one fits after them.
            let size = 4096 - JobCodec.headerBytes
            let capacity = 8192 / (size + JobCodec.headerBytes)
            for index in 0..<capacity {
                #expect(try S.oneshot(server.socketPath, String(repeating: Character(Unicode.Scalar(UInt8(65 + index))), count: size)) == "ok")
            }
            #expect(try queue.status().messages == capacity && queue.status().bytes == 8192)

            // The queue is full while the worker sleeps. A client that stops waiting after 0.2 s
            // leaves a message that must not run: "crash" would take the worker down.
            #expect(throws: (any Error).self) { try PoolClient.oneshot(socketPath: server.socketPath, message: "crash".bytes, timeout: 0.2) }
            // This one waits, and is acknowledged once the worker, awake again, takes a message.
            let reply = try S.oneshot(server.socketPath, String(repeating: "w", count: size), timeout: 30)
            #expect(reply == "ok", "a full queue should hold the client, not answer \(reply)")
            #expect(waitUntil(timeout: 20) { (try? queue.status())?.messages == 0 }, "the queue should drain")
            // One more message behind everything: the worker takes it only after finishing all
            // before it, so had "crash" run, a replacement would be the one to take it.
            #expect(try S.oneshot(server.socketPath, "after-abandoned") == "ok")
            #expect(waitUntil(timeout: 20) { (try? queue.status()).map { $0.messages == 0 && $0.lastReceivePID != 0 } ?? false })
            #expect((try? queue.status())?.lastReceivePID == worker, "the last message was taken by another worker")
            #expect(server.workerPIDs == [worker], "the abandoned \"crash\" ran: the worker changed")
            #expect(server.logLines(containing: "worker exited").isEmpty && server.logLines(containing: "worker died").isEmpty,
                    "no worker may have ended:\n\(server.log)")
            let workers = server.workerPIDs
            server.signal(SIGTERM)
            S.expectExit(server, status: 0)
            S.expectNothingLeft(socketPath: server.socketPath, queueIDs: server.queueIDs, masterPID: server.pid, workers: workers)
        }

        /// When one worker's queue is full the message goes to the next queue instead: worker A is
        /// frozen (SIGSTOP) with a queue of two ~4000-byte messages; every message is still
        /// acknowledged, A's queue holds exactly two, the others go to B. Then SIGTERM while A's queue
        /// is still full (the quit request has to wait for room), SIGCONT: everything acknowledged is
        /// handled exactly once and both workers quit on request.
        // Its sizes are laid out for queues of 8192 bytes, which only a msgmax of 8192 allows.
        @Test(.enabled(if: FramedSupport.kernelMsgmax() == 8192, "sized for kernel.msgmax 8192"))
        func fullQueueFallsBackToTheNextWorker() throws {
            let server = try TestServer(["--workers", "2", "--handler", "log", "--queue-bytes", "8192",
                                         "--shutdown-timeout", "60", "--spill-bytes", "0"])
            defer { server.stop() }
            #expect(waitUntil { server.workerPIDs.count == 2 })
            let workers = server.workerPIDs
            let queues = server.queueIDs
            #expect(queues.count == 2)
            // Which queue the frozen worker reads does not matter: its queue is the one that fills.
            let frozen = workers[0]
            kill(frozen, SIGSTOP)
            var resumed = false
            defer { if !resumed { kill(frozen, SIGCONT) } }
            #expect(waitUntil { processState(frozen) == "T" })

            let size = 4000
            let messages = (0..<12).map { index in
                let head = "fill-\(index < 10 ? "0" : "")\(index):"
                return head + String(repeating: "x", count: size - head.utf8.count)
            }
            var busy = 0
            var other: [String] = []
            for message in messages {
                var attempts = 0
                while true {
                    let reply = try S.oneshot(server.socketPath, message)
                    if reply == "ok" { break }
                    if reply == "error: busy" && attempts < 500 { attempts += 1; busy += 1; usleep(10_000); continue }
                    other.append(reply)
                    break
                }
            }
            #expect(other.isEmpty, "unexpected replies: \(other.map { $0.prefix(40) })")
            let perRecord = size + JobCodec.headerBytes
            let depths = try queues.map { try MessageQueue(id: $0).status().messages }
            // The frozen worker's queue is full with exactly what fits; the running worker took the rest.
            #expect(depths.contains(8192 / perRecord), "queue depths \(depths)")
            let running = workers[1]
            #expect(waitUntil {
                recvLines(in: server.log).filter { $0.pid == running && $0.message.hasPrefix("fill-") }.count
                    == messages.count - 8192 / perRecord
            }, "the running worker should handle every message the frozen one's full queue could not take:\n\(server.log.suffix(3000))")
            if busy > 0 { print("fullQueueFallsBackToTheNextWorker: \(busy) busy answer(s) retried") }

            server.signal(SIGTERM)
            usleep(200_000)
            #expect(S.isRunning(server), "the master must wait for the frozen worker's queued work")
            kill(frozen, SIGCONT)
            resumed = true
            S.expectExit(server, status: 0, timeout: 20)

            let lines = recvLines(in: server.log).filter { $0.message.hasPrefix("fill-") }
            for message in messages {
                let head = String(message.prefix(8))
                let count = lines.filter { $0.message.hasPrefix(head) }.count
                #expect(count == 1, "\(head) handled \(count) times")
            }
            #expect(lines.filter { $0.pid == frozen }.count == 8192 / perRecord)
            for worker in workers {
                let exits = S.exitLines(of: worker, in: server.log)
                #expect(exits.count == 1 && exits.first?.contains("status=exit 0") == true,
                        "worker \(worker) should quit on request: \(exits)")
            }
            S.expectNothingLeft(socketPath: server.socketPath, queueIDs: queues, masterPID: server.pid, workers: workers)
        }

        // MARK: - Permissions

        @Test func socketIs0600AndQueuesAre0600ByDefault() throws {
            let server = try TestServer(["--workers", "2"])
            defer { server.stop() }
            let mode = try #require(S.fileMode(server.socketPath))
            #expect(mode.isSocket)
            #expect(mode.permissions == 0o600, "socket mode \(String(mode.permissions, radix: 8))")
            #expect(server.queueIDs.count == 2)
            for id in server.queueIDs {
                let queueMode = try MessageQueue(id: id).status().mode
                #expect(queueMode == 0o600, "queue \(id) mode \(String(queueMode, radix: 8))")
            }
            #expect(try S.oneshot(server.socketPath, "mode check") == "ok")
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
        }

        @Test func socketModeOptionSetsTheSocketFileMode() throws {
            let server = try TestServer(["--workers", "2", "--socket-mode", "0660"])
            defer { server.stop() }
            let mode = try #require(S.fileMode(server.socketPath))
            #expect(mode.isSocket)
            #expect(mode.permissions == 0o660, "socket mode \(String(mode.permissions, radix: 8))")
            #expect(server.queueIDs.count == 2)
            for id in server.queueIDs {
                let queueMode = try MessageQueue(id: id).status().mode
                #expect(queueMode == 0o600, "queue \(id) mode \(String(queueMode, radix: 8))")
            }
            #expect(try S.oneshot(server.socketPath, "mode check") == "ok")
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
        }
    }
}
