import Foundation
import Glibc
import Pool
import Testing

private typealias Frame = FramedSupport.Frame
private typealias RawConnection = FramedSupport.RawConnection

private extension PoolClient.Response {
    var frame: FramedSupport.Frame { FramedSupport.frame(self) }
}

/// The framed protocol and result mode, end to end through the real `pool-server` binary.
///
/// No test asserts speed: every wait is for a condition, with a generous timeout, so a loaded
/// two-core machine only makes them slower. Every test ends with `expectCleanShutdown`, which
/// checks that the server exits 0 and leaves no worker, queue, socket or state file.
@Suite(.serialized) struct FramedIntegrationTests {
    static let resultEcho = ["--protocol", "framed", "--reply", "result", "--handler", "echo"]
    static let resultSim = ["--protocol", "framed", "--reply", "result", "--handler", "sim"]

    static func statuses(_ responses: [PoolClient.Response]) -> [UInt8] { responses.map(\.statusByte) }

    // MARK: - Echo and sizes

    @Test func echoesSizesUpToTheDefaultMaximum() throws {
        let server = try TestServer(Self.resultEcho)
        let maximum = FramedSupport.kernelMsgmax() - JobCodec.headerBytes
        #expect(server.logLines(containing: "pool started").first?.contains("max-message=\(maximum)") == true,
                "the default --max-message should be msgmax - 16 = \(maximum):\n\(server.log)")

        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let payloads = [0, 1, 1000, maximum].map(FramedSupport.randomBytes)
        for payload in payloads {
            let response = try client.request(payload)
            #expect(response.statusByte == ResponseStatus.ok.rawValue, "size \(payload.count)")
            #expect(response.body == payload, "size \(payload.count): echo differs (got \(response.body.count) bytes)")
        }
        // The same sizes pipelined on the same connection.
        let pipelined = try client.pipeline(payloads)
        #expect(Self.statuses(pipelined) == [0, 0, 0, 0])
        #expect(pipelined.map(\.body) == payloads)

        // One byte over the maximum: too large, then the server closes the connection.
        let tooLarge = try client.request(FramedSupport.randomBytes(maximum + 1))
        #expect(tooLarge.statusByte == ResponseStatus.tooLarge.rawValue)
        expectServerClosed(client)

        // The server itself is unaffected.
        let other = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try other.request("still here".bytes).frame == Frame(status: 0, body: "still here".bytes))
        other.close()
        FramedSupport.expectCleanShutdown(server)
    }

    @Test func explicitMaxMessageIsExactAndOneMoreIsRefused() throws {
        let server = try TestServer(Self.resultEcho + ["--max-message", "5000"])
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        for _ in 0..<3 {
            let payload = FramedSupport.randomBytes(5000)
            let response = try client.request(payload)
            #expect(response.statusByte == ResponseStatus.ok.rawValue)
            #expect(response.body == payload, "5000 random bytes must come back byte-exact")
        }

        // A request before the oversize one is still answered, in order, before the refusal.
        let before = FramedSupport.randomBytes(4999)
        try client.send(before)
        try client.send(FramedSupport.randomBytes(5001))
        let first = try client.receive()
        #expect(first.statusByte == ResponseStatus.ok.rawValue)
        #expect(first.body == before)
        let refused = try client.receive()
        #expect(refused.statusByte == ResponseStatus.tooLarge.rawValue)
        #expect(refused.status == .tooLarge)
        #expect(String(decoding: refused.body, as: UTF8.self).contains("5001"))

        // Then the connection is closed: a further receive reports that the server closed it.
        expectServerClosed(client, "after a too-large response")

        // The same on a fresh connection whose first request is the oversize one (the server's
        // input buffer is still small, so it refuses before it has read the whole request).
        let fresh = try PoolClient(socketPath: server.socketPath, timeout: 30)
        try fresh.send(FramedSupport.randomBytes(5001))
        let freshRefused = try fresh.receive()
        #expect(freshRefused.statusByte == ResponseStatus.tooLarge.rawValue)
        expectServerClosed(fresh, "after the too-large response on a fresh connection")
        // Raw view of the same: one too-large frame, then the stream ends cleanly (EOF, not a reset).
        let raw = try RawConnection(path: server.socketPath)
        try raw.write(FramedWire.requestFrames([FramedSupport.randomBytes(5001)]))
        let (frames, rest, end) = raw.readToEnd()
        #expect(frames.map(\.status) == [ResponseStatus.tooLarge.rawValue])
        #expect(rest.isEmpty)
        #expect(end == .eof, "the connection should end with EOF after the too-large response, not \(end)")
        raw.close()
        FramedSupport.expectCleanShutdown(server)
    }

    // MARK: - Pipelining and order

    @Test func thousandPipelinedRequestsAnsweredInOrder() throws {
        let server = try TestServer(Self.resultEcho)
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let payloads = (0..<1000).map { Array("request \($0) \(String(repeating: "x", count: $0 % 37))".utf8) }
        let responses = try client.pipeline(payloads)
        #expect(responses.count == 1000)
        let allOK = responses.allSatisfy { $0.isOK }
        #expect(allOK)
        let firstMismatch = zip(responses, payloads).enumerated().first { $0.element.0.body != $0.element.1 }?.offset
        #expect(firstMismatch == nil, "response \(firstMismatch ?? -1) is not its request's echo")
        FramedSupport.expectCleanShutdown(server)
    }

    @Test func tenThousandPipelinedWithTwoWorkers() throws {
        let server = try TestServer(Self.resultEcho + ["--workers", "2"])
        let client = try PoolClient(socketPath: server.socketPath, timeout: 60)
        let payloads = (0..<10_000).map { Array("m\($0)".utf8) }
        let responses = try client.pipeline(payloads)
        #expect(responses.count == 10_000)
        let notOK = responses.filter { !$0.isOK }.count
        #expect(notOK == 0, "\(notOK) responses were not ok")
        let firstMismatch = zip(responses, payloads).enumerated().first { $0.element.0.body != $0.element.1 }?.offset
        #expect(firstMismatch == nil, "response \(firstMismatch ?? -1) is out of order or wrong")
        FramedSupport.expectCleanShutdown(server)
    }

    @Test func slowRequestFirstKeepsRequestOrder() throws {
        let server = try TestServer(Self.resultSim)
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let payloads = ["sleep:300", "fast-1", "fast-2", "fast-3", "fast-4"].map(\.bytes)
        let responses = try client.pipeline(payloads)
        #expect(Self.statuses(responses) == [0, 0, 0, 0, 0])
        #expect(responses.map(\.body) == payloads, "the sleep's response must come first, then the rest in order")
        // And with send/receive instead of pipeline().
        for payload in payloads { try client.send(payload) }
        let received = try payloads.map { _ in try client.receive() }
        #expect(received.map(\.body) == payloads)
        FramedSupport.expectCleanShutdown(server)
    }

    // MARK: - Failures

    @Test func crashAnswersWorkerDiedForThatRequestOnly() throws {
        let server = try TestServer(Self.resultSim + ["--workers", "2"])
        let initial = try #require(waitForWorkers(server, 2))
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let responses = try client.pipeline(["a", "crash", "b", "c"].map(\.bytes))
        #expect(Self.statuses(responses) == [0, 5, 0, 0], "\(responses)")
        #expect(responses.count == 4 && responses[0].body == "a".bytes && responses[2].body == "b".bytes
                && responses[3].body == "c".bytes)
        #expect(responses.count == 4 && responses[1].status == .workerDied)

        // The pool recovers: a replacement worker (a new pid) and N workers again.
        var current: [pid_t] = []
        let replaced = waitUntil(timeout: 20) {
            current = server.workerPIDs
            return current.count == 2 && !Set(current).isSubset(of: Set(initial))
        }
        #expect(replaced, "expected 2 workers including a new pid; initial \(initial), now \(current)\n\(server.log)")
        #expect(!server.logLines(containing: "worker died").isEmpty)

        // Same connection and a new one keep working.
        let after = try client.pipeline(["after-1", "after-2", "after-3"].map(\.bytes))
        #expect(after.map(\.body) == ["after-1", "after-2", "after-3"].map(\.bytes))
        #expect(Self.statuses(after) == [0, 0, 0])
        let other = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try other.request("new connection".bytes).frame == Frame(status: 0, body: "new connection".bytes))
        other.close()
        FramedSupport.expectCleanShutdown(server)
    }

    @Test func handlerErrorIsStatusOneAndConnectionContinues() throws {
        let server = try TestServer(Self.resultSim)
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let failed = try client.request("fail:boom".bytes)
        #expect(failed.statusByte == ResponseStatus.handlerError.rawValue)
        #expect(failed.body == "boom".bytes)
        #expect(try client.request("after".bytes).frame == Frame(status: 0, body: "after".bytes))
        let mixed = try client.pipeline(["x", "fail:boom", "y", "fail:", "z"].map(\.bytes))
        #expect(Self.statuses(mixed) == [0, 1, 0, 1, 0])
        #expect(mixed.map(\.body) == ["x", "boom", "y", "", "z"].map(\.bytes))
        FramedSupport.expectCleanShutdown(server)
    }

    /// PoolClient: `request` and `pipeline` refuse while answers to `send`s are still to come
    /// (the next answer would be taken as theirs), and the connection stays usable. Framed and
    /// tagged (where a caller's tag could also clash with the automatic ones).
    @Test func poolClientDoesNotHandOutAnAnswerOfAnEarlierSend() throws {
        for tagged in [false, true] {
            let server = try TestServer(tagged ? ["--protocol", "tagged", "--reply", "result", "--handler", "echo"] : Self.resultEcho)
            let client = try PoolClient(socketPath: server.socketPath, timeout: 30, tagged: tagged)
            try client.send("early".bytes, tag: 0)
            #expect(throws: PoolClient.ProtocolError.self) { _ = try client.request("late".bytes) }
            #expect(throws: PoolClient.ProtocolError.self) { _ = try client.pipeline(["late".bytes]) }
            #expect(try client.receive().body == "early".bytes)
            #expect(try client.request("late".bytes).body == "late".bytes)
            #expect(try client.pipeline(["x".bytes, "y".bytes]).map(\.body) == ["x".bytes, "y".bytes])
            client.close()
            FramedSupport.expectCleanShutdown(server)
        }
    }

    @Test func clientLeavingWithRequestsInFlightHarmsNobody() throws {
        let server = try TestServer(Self.resultSim)
        let leaver = try RawConnection(path: server.socketPath)
        try leaver.write(FramedWire.requestFrames(Array(repeating: "sleep:200".bytes, count: 4)))
        // Gone once its requests are in flight: a hang-up seen before they are read leaves them
        // unread (and not run).
        let taken = OperationsSupport.waitForStatus(server.socketPath, timeout: 20) { status in
            status.workers.contains { $0.state == "busy" || $0.jobsHandled > 0 }
        }
        #expect(taken.ok, "no worker took a sleep: \(String(describing: taken.last?.workers))")
        leaver.close()

        // The next client gets exactly its own replies, in order, and nothing else. Its jobs queue
        // behind the abandoned sleeps, so their replies come back while it is connected.
        let next = try RawConnection(path: server.socketPath)
        let payloads = ["after-1", "sleep:100", "after-2", "after-3"].map(\.bytes)
        try next.write(FramedWire.requestFrames(payloads))
        let frames = next.readFrames(payloads.count)
        #expect(frames == payloads.map { Frame(status: 0, body: $0) }, "\(frames.map { "\($0)" } ?? "connection ended")")
        // Anything owed to the first client arriving late must not leak here.
        let stray = next.unexpectedBytes(within: 0.7)
        #expect(stray.isEmpty, "stray bytes after our replies: \(FramedSupport.decodeFrames(stray).frames)")
        next.close()

        let errors = FramedSupport.errorLines(server)
        #expect(errors.isEmpty, "unexpected error lines:\n\(errors.joined(separator: "\n"))")
        FramedSupport.expectCleanShutdown(server)
    }

    /// A client that closes with a request in flight must not make the master spin. (The master
    /// registers no events for such a connection, but EPOLLHUP is always reported.)
    @Test func abandonedConnectionDoesNotBusyLoopTheMaster() throws {
        let server = try TestServer(Self.resultSim + ["--workers", "1"])
        let queue = try #require(server.queueIDs.first)
        let worker = try #require(waitForWorkers(server, 1)?.first)
        let leaver = try RawConnection(path: server.socketPath)
        try leaver.write(FramedWire.requestFrames(["sleep:3000".bytes]))
        // The worker has taken the job (it received from its queue), so the connection is
        // abandoned with one request in flight for the next ~3 s.
        #expect(waitUntil(timeout: 20) { queueRow(queue)?.lastReceivePID == worker })
        leaver.close()
        usleep(100_000)
        let before = try #require(cpuTicks(server.pid))
        usleep(1_000_000)
        let after = try #require(cpuTicks(server.pid))
        // An idle master uses ~0 ticks per second; a spinning one ~100 (1 tick = 10 ms).
        #expect(after - before < 30,
                "the master used \(after - before) ticks of CPU in 1 s while idle (busy loop on the abandoned connection)")
        // It still serves.
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("hello".bytes).frame == Frame(status: 0, body: "hello".bytes))
        client.close()
        FramedSupport.expectCleanShutdown(server)
    }

    /// A connection closed while a worker forked before it had its copy of the socket (held open
    /// here for 3 s by POOL_DEBUG_WORKER_CLOSE_DELAY_MS, as a worker descheduled on a busy machine
    /// would): its epoll registration is removed, since the close does not end the open socket.
    /// It was removed only within 1 s of the fork; later, the client's hang-up woke every wait
    /// under a key nobody had, and the master spun until the worker closed its copies.
    @Test func aConnectionClosedWhileANewWorkerHoldsACopyDoesNotSpinTheMaster() throws {
        let server = try TestServer(Self.resultSim + ["--workers", "1"],
                                    environment: FaultIntegrationTests.debugEnvironment("POOL_DEBUG_WORKER_CLOSE_DELAY_MS", "3000"))
        let first = try #require(waitForWorkers(server, 1)?.first)
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        defer { client.close() }
        #expect(try client.request("hello".bytes).body == "hello".bytes)
        // The replacement is forked with the client's socket open in the master.
        kill(first, SIGKILL)
        #expect(waitUntil(timeout: 20) { server.workerPIDs.contains { $0 != first } }, "no replacement worker")
        usleep(1_500_000)
        client.close()
        usleep(100_000)
        let before = try #require(cpuTicks(server.pid))
        usleep(1_000_000)
        let after = try #require(cpuTicks(server.pid))
        // An idle master uses ~0 ticks per second; a spinning one ~100 (1 tick = 10 ms).
        #expect(after - before < 30, "the master used \(after - before) ticks of CPU in 1 s (spinning on the closed connection)")
        let next = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try next.request("again".bytes).body == "again".bytes)
        next.close()
        FramedSupport.expectCleanShutdown(server)
    }

    /// `--busy-poll` at its longest (10 ms). Sequential requests, whose next one arrives while the
    /// master polls, are all answered. One request every 5 ms keeps it polling all the time: ~75
    /// ticks (1 tick = 10 ms) for 150 requests where a sleeping master uses ~1, and a master given
    /// a third of a core still ~25. Polling follows
    /// traffic only: the master wakes ten times a second for `--job-timeout`'s scan, and a poll
    /// after each of those would cost it ~10 ticks a second; an idle master uses ~0.
    @Test func busyPollingAnswersEveryRequestAndStopsWhenTrafficDoes() throws {
        let server = try TestServer(Self.resultSim + ["--workers", "2", "--busy-poll", "0.01", "--job-timeout", "60"])
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        func ticks(during body: () throws -> Void) throws -> Int {
            let before = try #require(cpuTicks(server.pid))
            try body()
            return try #require(cpuTicks(server.pid)) - before
        }
        func request(_ index: Int) throws -> Bool {
            let payload = "request-\(index)".bytes
            let response = try client.request(payload)
            if response.frame != Frame(status: 0, body: payload) { Issue.record("request \(index): \(response.frame)") }
            return response.frame == Frame(status: 0, body: payload)
        }
        for index in 0..<200 where try !request(index) { break }

        let paced = try ticks {
            for index in 0..<150 {
                guard try request(index) else { break }
                usleep(5_000)
            }
        }
        #expect(paced >= 15, "a request every 5 ms cost the master \(paced) ticks: it does not poll")

        usleep(200_000)
        let idle = try ticks { usleep(2_000_000) }
        #expect(idle < 8, "the master used \(idle) ticks of CPU in 2 s with no traffic (polling after timer wake-ups)")
        #expect(try request(-1))
        client.close()
        FramedSupport.expectCleanShutdown(server)
    }

    @Test func halfClosedClientStillGetsEveryResponse() throws {
        let server = try TestServer(Self.resultSim)
        let connection = try RawConnection(path: server.socketPath)
        let payloads = ["sleep:300", "x", "", "y"].map(\.bytes)
        try connection.write(FramedWire.requestFrames(payloads))
        try connection.shutdownWrite()
        let (frames, rest, end) = connection.readToEnd()
        #expect(frames == payloads.map { Frame(status: 0, body: $0) }, "\(frames)")
        #expect(rest.isEmpty)
        #expect(end == .eof, "after the last response the server should close the connection")
        FramedSupport.expectCleanShutdown(server)
    }

    /// A result-mode client that hangs up (closes both ways) with requests written but not yet
    /// read: nobody can take their answers, so they are not run — the connection is closed at the
    /// hang-up. They used to be read and run, as held jobs of clients gone after a timeout were.
    /// The master is frozen (SIGSTOP) while the client writes and goes, so the hang-up and the
    /// requests reach it in one event.
    @Test func requestsOfAClientThatHungUpAreNotRun() throws {
        let server = try TestServer(Self.resultEcho + ["--workers", "1"])
        defer { kill(server.pid, SIGCONT) }
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("first".bytes).body == "first".bytes)
        kill(server.pid, SIGSTOP)
        try #require(waitUntil(timeout: 20) { processState(server.pid) == "T" }, "the master did not stop")
        for payload in ["gone-1", "gone-2", "gone-3"] { try client.send(payload.bytes) }
        client.close()
        kill(server.pid, SIGCONT)
        let closed = OperationsSupport.waitForStatus(server.socketPath, timeout: 20) { $0.activeConnections == 0 }
        #expect(closed.ok, "\(String(describing: closed.last?.raw))")
        // One worker, one queue, first in first out: once "next" is answered, anything dispatched
        // before it has run.
        let next = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try next.request("next".bytes).body == "next".bytes)
        next.close()
        // (Waited for: the count may be taken a moment after the reply is sent.)
        let jobs = OperationsSupport.waitForStatus(server.socketPath, timeout: 10) { $0.workers.map(\.jobsHandled) == [2] }
        #expect(jobs.ok, "jobs handled per worker: \(String(describing: jobs.last?.workers.map(\.jobsHandled)))\n\(server.log.suffix(2000))")
        FramedSupport.expectCleanShutdown(server)
    }

    /// An ack-mode producer may write its messages and go without reading its `ok`s: all of them
    /// are still read and queued, also past --max-inflight (1 here). Only the first was: its `ok`
    /// met the closed socket (EPIPE) and the connection was closed with the rest unread. The
    /// master is frozen while the client writes and goes, so it finds all of it at once.
    @Test func ackModeRunsEverythingAProducerWroteBeforeHangingUp() throws {
        let server = try TestServer(["--protocol", "framed", "--workers", "1", "--max-inflight", "1"])
        defer { kill(server.pid, SIGCONT) }
        let count = 100
        let producer = try RawConnection(path: server.socketPath)
        try producer.write(FramedWire.requestFrames(["warm-up".bytes]))
        let warm = OperationsSupport.waitForStatus(server.socketPath, timeout: 20) { $0.workers.first?.jobsHandled == 1 }
        #expect(warm.ok)
        kill(server.pid, SIGSTOP)
        try #require(waitUntil(timeout: 20) { processState(server.pid) == "T" }, "the master did not stop")
        try producer.write(FramedWire.requestFrames((0..<count).map { "message-\($0)".bytes }))
        producer.close()
        kill(server.pid, SIGCONT)
        let done = OperationsSupport.waitForStatus(server.socketPath, timeout: 20) {
            $0.activeConnections == 0 && $0.workers.first?.jobsHandled == count + 1
        }
        #expect(done.ok, "jobs handled: \(String(describing: done.last?.workers.first?.jobsHandled)) of \(count + 1)\n\(server.log.suffix(2000))")
        #expect(server.logLines(containing: "message-\(count - 1)").count == 1, "the last message was not logged")
        FramedSupport.expectCleanShutdown(server)
    }

    /// Jobs held for queue room whose client has gone do not take --max-backlog from new
    /// clients. One worker sleeps; 7000-byte jobs fill its one-message queue and a backlog of 3:
    /// two of a live client first, then one of a client that hangs up. The next client's request
    /// used to be answered busy: the held jobs are retried oldest first and the retry stops at
    /// the second live one (no room), so the dead one behind them stayed until they had gone.
    @Test func heldJobsOfAClientGoneLeaveTheBacklog() throws {
        let server = try TestServer(Self.resultSim + ["--workers", "1", "--dispatch", "round-robin", "--queue-bytes", "8192",
                                                      "--arena-chunks", "0", "--max-backlog", "3"])
        let big = Array(repeating: UInt8(0x42), count: 7_000)
        let sleeper = try PoolClient(socketPath: server.socketPath, timeout: 30)
        defer { sleeper.close() }
        try sleeper.send("sleep:3000".bytes)
        let busy = OperationsSupport.waitForStatus(server.socketPath, timeout: 20) { $0.workers.first?.state == "busy" }
        try #require(busy.ok, "the worker never took the sleep: \(String(describing: busy.last?.workers))")
        // Frozen in its sleep while the backlog is filled, however slow the machine.
        let worker = try #require(busy.last?.workers.first?.pid)
        kill(worker, SIGSTOP)
        defer { kill(worker, SIGCONT) }
        // One big job fills the queue, the next two are held.
        let live = try PoolClient(socketPath: server.socketPath, timeout: 30)
        defer { live.close() }
        for _ in 0..<3 { try live.send(big) }
        try #require(OperationsSupport.waitForStatus(server.socketPath, timeout: 20) { $0.heldRequests == 2 }.ok)
        let leaver = try RawConnection(path: server.socketPath)
        try leaver.write(FramedWire.requestFrame(big))
        let full = OperationsSupport.waitForStatus(server.socketPath, timeout: 20) { $0.heldRequests == 3 }
        try #require(full.ok, "the backlog never filled: \(String(describing: full.last?.raw))")
        leaver.close()
        #expect(OperationsSupport.waitForStatus(server.socketPath, timeout: 20) { $0.activeConnections == 2 }.ok)
        kill(worker, SIGCONT)
        let next = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let answer = try next.request("next".bytes)
        #expect(answer.status == .ok && answer.body == "next".bytes, "\(answer)")
        next.close()
        #expect(try sleeper.receive().body == "sleep:3000".bytes)
        #expect(try (0..<3).map { _ in try live.receive().body } == [big, big, big])
        FramedSupport.expectCleanShutdown(server)
    }

    // MARK: - Ack mode, garbage, limits

    @Test func ackModeAnswersOkWithEmptyBodies() throws {
        let server = try TestServer(["--protocol", "framed", "--workers", "2"])
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let payloads = ["first", "", "third message", String(repeating: "z", count: 3000)].map(\.bytes)
        let responses = try client.pipeline(payloads)
        #expect(responses.map(\.frame) == payloads.map { _ in Frame(status: 0, body: []) })
        #expect(try client.request("single".bytes).frame == Frame(status: 0, body: []))
        // The messages really reached the (log) handler.
        #expect(waitUntil(timeout: 20) {
            server.log.contains("recv 5 bytes: first") && server.log.contains("recv 0 bytes")
                && server.log.contains("recv 13 bytes: third message") && server.log.contains("recv 6 bytes: single")
        }, "\(server.log)")
        FramedSupport.expectCleanShutdown(server)
    }

    /// Ack mode, one worker asleep, a queue that holds two of these messages: the rest wait in the
    /// master (the client gets each `ok` when its message is queued, never *busy*), and the worker
    /// runs them in the order they were sent — jobs put back after a failed send keep their place.
    // Its sizes are laid out for queues of 8192 bytes, which only a msgmax of 8192 allows.
    @Test(.enabled(if: FramedSupport.kernelMsgmax() == 8192, "sized for kernel.msgmax 8192"))
    func ackModeHeldMessagesKeepTheirOrder() throws {
        let server = try TestServer(["--protocol", "framed", "--handler", "sim", "--workers", "1",
                                     "--queue-bytes", "8192", "--log-level", "debug"])
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let payloads = ["sleep:400".bytes] + (0..<12).map { Array("m\($0)-".utf8) + FramedSupport.randomBytes(3000) }
        let responses = try client.pipeline(payloads)
        #expect(responses.map(\.frame) == payloads.map { _ in Frame(status: 0, body: []) }, "every message acknowledged ok")
        // Job ids are given in arrival order; the worker logs each as it finishes it.
        var handled: [Int] = []
        _ = waitUntil(timeout: 20) {
            handled = server.log.split(separator: "\n").compactMap { line -> Int? in
                guard let range = line.range(of: "handled job ") else { return nil }
                return Int(line[range.upperBound...].prefix { $0.isNumber })
            }
            return handled.count >= payloads.count
        }
        #expect(handled.count == payloads.count, "handled: \(handled)")
        #expect(handled == handled.sorted(), "the worker ran them out of order: \(handled)")
        #expect(!server.log.contains("answering busy"))
        client.close()
        FramedSupport.expectCleanShutdown(server)
    }

    @Test func garbageLengthIsBadRequestThenClose() throws {
        let server = try TestServer(Self.resultEcho)
        let connection = try RawConnection(path: server.socketPath)
        try connection.write("GET ".bytes)  // reads as a length of 1,195,725,856
        let (frames, rest, end) = connection.readToEnd()
        #expect(frames.count == 1 && frames.first?.status == ResponseStatus.badRequest.rawValue, "\(frames)")
        #expect(rest.isEmpty)
        #expect(end == .eof)
        // The server still serves others.
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("fine".bytes).frame == Frame(status: 0, body: "fine".bytes))
        client.close()
        FramedSupport.expectCleanShutdown(server)
    }

    @Test func maxInflightBackpressureLosesNothing() throws {
        let server = try TestServer(Self.resultSim + ["--max-inflight", "2"])
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let payloads = (0..<6).map { "sleep:\(200 + $0)".bytes }
        let responses = try client.pipeline(payloads)
        #expect(Self.statuses(responses) == [0, 0, 0, 0, 0, 0])
        #expect(responses.map(\.body) == payloads)
        // Everything written at once, before reading anything, works as well.
        let raw = try RawConnection(path: server.socketPath)
        let more = (0..<6).map { $0 % 2 == 0 ? "sleep:\(200 + $0)".bytes : "quick-\($0)".bytes }
        try raw.write(FramedWire.requestFrames(more))
        #expect(raw.readFrames(6) == more.map { Frame(status: 0, body: $0) })
        raw.close()
        // And when the client half-closes right after writing: the requests not yet read when
        // it did are still read and answered, then the server closes.
        let halfClosed = try RawConnection(path: server.socketPath)
        try halfClosed.write(FramedWire.requestFrames(more))
        try halfClosed.shutdownWrite()
        let (frames, rest, end) = halfClosed.readToEnd()
        #expect(frames == more.map { Frame(status: 0, body: $0) })
        #expect(rest.isEmpty)
        #expect(end == .eof)
        FramedSupport.expectCleanShutdown(server)
    }

    /// Full-size requests pipelined far beyond what the worker queues hold (each holds two at
    /// --queue-bytes 2×msgmax): the master holds the rest (--max-backlog) and dispatches them as
    /// room appears; every one comes back byte-exact and in order.
    @Test func fullSizeRequestsBeyondQueueCapacityAreHeldNotLost() throws {
        let maximum = FramedSupport.kernelMsgmax() - JobCodec.headerBytes
        // --spill-bytes 0: payloads travel inside the messages, so the queues' bytes fill.
        let server = try TestServer(Self.resultEcho + ["--workers", "2", "--queue-bytes", "\(2 * FramedSupport.kernelMsgmax())",
                                                       "--spill-bytes", "0"])
        let payloads = (0..<200).map { _ in FramedSupport.randomBytes(maximum) }
        let first = try PoolClient(socketPath: server.socketPath, timeout: 60)
        let second = try PoolClient(socketPath: server.socketPath, timeout: 60)
        // Fill the queues from one connection while another pipelines as well.
        try first.send(payloads[0])
        let responses = try second.pipeline(payloads)
        let firstResponse = try first.receive()
        #expect(firstResponse.isOK && firstResponse.body == payloads[0])
        #expect(responses.count == payloads.count)
        let notOK = responses.filter { !$0.isOK }.map(\.statusByte)
        #expect(notOK.isEmpty, "statuses other than ok: \(notOK)")
        let firstMismatch = zip(responses, payloads).enumerated().first { $0.element.0.body != $0.element.1 }?.offset
        #expect(firstMismatch == nil, "response \(firstMismatch ?? -1) is out of order or corrupted")
        FramedSupport.expectCleanShutdown(server)
    }

    /// With --max-backlog 0 nothing is held: once the (single) queue is full, requests are
    /// answered busy (2) in their place in the order; the rest are answered normally.
    @Test func fullQueuesWithoutBacklogAnswerBusyInOrder() throws {
        let maximum = FramedSupport.kernelMsgmax() - JobCodec.headerBytes
        let server = try TestServer(Self.resultSim + ["--workers", "1", "--max-backlog", "0", "--spill-bytes", "0",
                                                      "--queue-bytes", "\(2 * FramedSupport.kernelMsgmax())"])
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        // The worker sleeps on the first; its queue holds at most two full-size jobs meanwhile.
        let big = (0..<5).map { i in Array("big-\(i)-".utf8) + FramedSupport.randomBytes(maximum - 6) }
        let payloads = ["sleep:2000".bytes] + big
        let responses = try client.pipeline(payloads)
        #expect(responses.count == 6)
        #expect(responses.first.map(FramedSupport.frame) == Frame(status: 0, body: "sleep:2000".bytes))
        let statuses = Self.statuses(responses)
        #expect(statuses.allSatisfy { $0 == 0 || $0 == 2 }, "\(statuses)")
        #expect(statuses.filter { $0 == 2 }.count >= 3, "a queue of 2×msgmax holds at most 2 full-size jobs: \(statuses)")
        for (response, payload) in zip(responses, payloads) where response.isOK {
            #expect(response.body == payload)
        }
        for response in responses where response.statusByte == 2 { #expect(response.body.isEmpty) }
        // Once the worker is free again, the same connection is served normally.
        #expect(try client.request("later".bytes).frame == Frame(status: 0, body: "later".bytes))
        FramedSupport.expectCleanShutdown(server)
    }

    /// A worker that exits (with any status, even 0) or overruns --job-timeout costs exactly the
    /// request it was handling: 5 (worker died) or 4 (timeout); the queued ones behind it are
    /// handled by its replacement.
    @Test func exitAndJobTimeoutCostOnlyTheirOwnRequest() throws {
        let server = try TestServer(Self.resultSim + ["--workers", "1", "--job-timeout", "1"])
        let client = try PoolClient(socketPath: server.socketPath, timeout: 60)
        let payloads = ["a", "exit:7", "b", "exit:0", "c", "hang", "d"].map(\.bytes)
        let responses = try client.pipeline(payloads)
        #expect(Self.statuses(responses) == [0, 5, 0, 5, 0, 4, 0], "\(responses.map(FramedSupport.frame))")
        #expect(responses.count == 7 && [0, 2, 4, 6].allSatisfy { responses[$0].body == payloads[$0] })
        #expect(waitForWorkers(server, 1) != nil)
        #expect(try client.request("e".bytes).frame == Frame(status: 0, body: "e".bytes))
        FramedSupport.expectCleanShutdown(server)
    }

    // MARK: - --idle-timeout

    /// A client refused while still writing (a request over --max-message) may finish its write:
    /// what it sends is read and thrown away, and, as on any connection, each byte moved starts
    /// --idle-timeout again. The discarding did not count: a client writing more slowly than the
    /// timeout was closed in the middle of its write (its next send failed with EPIPE).
    @Test func aRefusedClientStillWritingIsNotIdle() throws {
        let server = try TestServer(Self.resultEcho + ["--workers", "1", "--idle-timeout", "2", "--max-message", "100"])
        let connection = try RawConnection(path: server.socketPath, timeout: 30)
        defer { connection.close() }
        let frame = FramedWire.requestFrame(Array(repeating: 0x41, count: 2_000))
        try connection.write(Array(frame[0..<54]))
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "request over --max-message").isEmpty }, "\(server.log)")
        // 4.8 s of a slow write, more than twice the idle timeout, a piece every 0.4 s.
        var offset = 54
        for _ in 0..<12 {
            usleep(400_000)
            try connection.write(Array(frame[offset..<offset + 50]))
            offset += 50
        }
        try connection.write(Array(frame[offset...]))
        let answer = connection.readFrames(1)
        #expect(answer?.first?.status == ResponseStatus.tooLarge.rawValue, "\(String(describing: answer))")
        connection.close()
        FramedSupport.expectCleanShutdown(server)
    }

    /// Idle time counts from the last byte moved, not from the last request read: a connection
    /// whose 7 s job outlived --idle-timeout 3 is not closed the moment its answer is written,
    /// and can send again. A silent connection beside it is closed, not before the timeout.
    @Test func idleTimeCountsFromTheLastByteMoved() throws {
        let server = try TestServer(Self.resultSim + ["--workers", "2", "--idle-timeout", "3"])
        // The silent connection: closed, not before the timeout. Timed from before the connect
        // to the moment the close is readable, so a slow machine only makes it look later.
        let start = monotonicNanoseconds()
        let silent = try RawConnection(path: server.socketPath, timeout: 30)
        var probe = pollfd(fd: silent.fd.raw, events: Int16(POLLIN), revents: 0)
        #expect(poll(&probe, 1, 20_000) == 1, "the silent connection was not closed within 20 s")
        let closedAfter = Double(monotonicNanoseconds() - start) / 1e9
        #expect(closedAfter >= 2.95, "the silent connection was closed after \(closedAfter) s, before --idle-timeout 3")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("sleep:7000".bytes).frame == Frame(status: 0, body: "sleep:7000".bytes))
        // Idle scans run every quarter of the timeout (0.75 s): one would have closed the
        // connection by now had its idle time started with the request; 1.8 s of margin remain.
        usleep(1_200_000)
        #expect(try client.request("again".bytes).frame == Frame(status: 0, body: "again".bytes))

        // What the silent connection reads: nothing but the end.
        let (frames, rest, end) = silent.readToEnd()
        #expect(frames.isEmpty && rest.isEmpty && end == .eof, "\(frames) \(rest) \(end)")
        client.close()
        FramedSupport.expectCleanShutdown(server)
    }

    /// A client that stops reading its answers is closed once --idle-timeout passes without a byte
    /// moving, rather than holding its unwritten output (up to 1 MiB) for good.
    @Test func clientThatStopsReadingIsClosedAfterTheIdleTimeout() throws {
        let server = try TestServer(Self.resultEcho + ["--workers", "2", "--idle-timeout", "1"])
        let connection = try RawConnection(path: server.socketPath, timeout: 30)
        let frame = FramedWire.requestFrame(FramedSupport.randomBytes(4000))
        // Write requests without reading until the server stops taking them (its output is past
        // the high-water mark and the socket buffers are full): 2 s without progress, or the
        // server closing the connection (EPIPE) once a second has passed with nothing moving.
        var requestsWritten = 0
        var offset = 0
        var stalls = 0
        writing: while stalls < 40 && requestsWritten < 2000 {
            let n = frame.withUnsafeBytes {
                send(connection.fd.raw, $0.baseAddress! + offset, $0.count - offset, Int32(MSG_DONTWAIT | MSG_NOSIGNAL))
            }
            if n > 0 {
                stalls = 0
                offset += n
                if offset == frame.count { offset = 0; requestsWritten += 1 }
                continue
            }
            switch errno {
            case EAGAIN, EINTR:
                stalls += 1
                usleep(50_000)
            case EPIPE, ECONNRESET:
                break writing
            case let error:
                Issue.record("send failed: errno \(error)")
                break writing
            }
        }
        #expect(requestsWritten < 2000, "the server never stopped reading")
        // More than a second has passed with no byte moved: the connection is closed, with what it
        // was owed beyond the socket buffer dropped.
        let (frames, _, end) = connection.readToEnd()
        #expect(end == .eof || end == .reset, "expected the server to close the connection, got \(end)")
        #expect(frames.count < requestsWritten, "all \(requestsWritten) answers arrived: the connection was never closed")
        #expect(frames.allSatisfy { $0.status == 0 && $0.body.count == 4000 })
        // Others are served.
        let other = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try other.request("next".bytes).frame == Frame(status: 0, body: "next".bytes))
        other.close()
        FramedSupport.expectCleanShutdown(server)
    }

    /// The client library: a request that timed out leaves its answer to come, so the connection
    /// is done with — the next call throws instead of returning the late answer as its own.
    /// And a server that answered *busy* and closed before the request went out (the write fails
    /// with EPIPE) still has that answer returned.
    @Test func theClientLibraryNeverReturnsAnotherRequestsAnswer() throws {
        let server = try TestServer(Self.resultSim + ["--max-connections", "1"])
        let slow = try PoolClient(socketPath: server.socketPath, timeout: 0.3)
        #expect(throws: (any Error).self) { try slow.request("sleep:1000".bytes) }
        usleep(1_000_000)
        var later: PoolClient.Response? = nil
        #expect(throws: (any Error).self) { later = try slow.request("next".bytes) }
        #expect(later == nil, "the late answer was returned for another request: \(String(describing: later))")
        slow.close()
        // A receive that times out consumes nothing: the answer is taken by the next one.
        var patient: PoolClient? = nil
        #expect(waitUntil(timeout: 20) {
            patient = try? PoolClient(socketPath: server.socketPath, timeout: 0.3)
            return (try? patient?.request("sleep:1".bytes))??.isOK == true
        })
        let waiting = try #require(patient)
        try waiting.send("sleep:1000".bytes)
        #expect(throws: (any Error).self) { try waiting.receive() }
        // Each receive that times out leaves the answer for the next: asked until it comes.
        var late: PoolClient.Response? = nil
        #expect(waitUntil(timeout: 20) { late = try? waiting.receive(); return late != nil })
        #expect(late?.body == "sleep:1000".bytes)
        waiting.close()

        // The one connection allowed, once the master has closed the first client's.
        var holding: PoolClient? = nil
        #expect(waitUntil(timeout: 20) {
            guard let client = try? PoolClient(socketPath: server.socketPath, timeout: 30),
                  (try? client.request("holding".bytes))?.isOK == true else { return false }
            holding = client
            return true
        })
        let holder = try #require(holding)
        let refused = try PoolClient(socketPath: server.socketPath, timeout: 30)
        // Accepted, answered busy and closed by the master before this client writes.
        #expect(waitUntil(timeout: 10) { (OperationsSupport.status(server.socketPath)?.responses["busy"] ?? 0) >= 1 })
        usleep(200_000)
        let answer = try refused.request("too many".bytes)
        #expect(answer.status == .busy, "\(answer)")
        refused.close()
        // The same with send, then receive: the failed write does not strand the answer, and
        // writing again is refused.
        let sender = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(waitUntil(timeout: 10) { (OperationsSupport.status(server.socketPath)?.responses["busy"] ?? 0) >= 2 })
        usleep(200_000)
        #expect(throws: (any Error).self) { try sender.send("too many".bytes) }
        #expect(try sender.receive().status == .busy)
        #expect(throws: (any Error).self) { try sender.send("again".bytes) }
        sender.close()
        holder.close()
        FramedSupport.expectCleanShutdown(server)
    }

    @Test func connectionsBeyondTheLimitGetBusyAndAreClosed() throws {
        let server = try TestServer(Self.resultEcho + ["--max-connections", "2"])
        let first = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let second = try PoolClient(socketPath: server.socketPath, timeout: 30)
        // Both are served (and therefore accepted) before the third connects.
        #expect(try first.request("one".bytes).frame == Frame(status: 0, body: "one".bytes))
        #expect(try second.request("two".bytes).frame == Frame(status: 0, body: "two".bytes))

        let third = try RawConnection(path: server.socketPath)
        let (frames, rest, end) = third.readToEnd()
        #expect(frames == [Frame(status: ResponseStatus.busy.rawValue, body: [])], "\(frames)")
        #expect(rest.isEmpty)
        #expect(end == .eof, "the third connection should be closed after its busy response")
        #expect(!server.logLines(containing: "connection limit reached").isEmpty)

        // The first two are unaffected; once one leaves, a new connection is served.
        #expect(try first.request("one again".bytes).frame == Frame(status: 0, body: "one again".bytes))
        first.close()
        var served = false
        _ = waitUntil(timeout: 20) {
            guard let client = try? PoolClient(socketPath: server.socketPath, timeout: 30),
                  let response = try? client.request("four".bytes) else { return false }
            served = response.frame == Frame(status: 0, body: "four".bytes)
            return served
        }
        #expect(served)
        #expect(try second.request("two again".bytes).frame == Frame(status: 0, body: "two again".bytes))
        second.close()
        FramedSupport.expectCleanShutdown(server)
    }

    // MARK: - Shutdown

    /// SIGTERM while a request is running: it finishes and is answered ok; a request sent after
    /// the server began shutting down is answered "shutting down" (6); then the connection is
    /// closed and the server exits 0 leaving nothing behind.
    @Test func shutdownDrainsInFlightAndRefusesNewWork() throws {
        // One worker, so "the worker took the job" is visible on its queue. The sleep is long
        // enough that the connection is still owed a response when the next request arrives.
        let server = try TestServer(Self.resultSim + ["--workers", "1"])
        let queue = try #require(server.queueIDs.first)
        let worker = try #require(waitForWorkers(server, 1)?.first)
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        try client.send("sleep:5000".bytes)
        #expect(waitUntil(timeout: 20) { queueRow(queue)?.lastReceivePID == worker }, "the worker never took the job")

        let queues = FramedSupport.ownedQueueIDs(server)
        server.signal(SIGTERM)
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "shutdown: stopped accepting").isEmpty })
        // The listener is gone at once.
        #expect(!FileManager.default.fileExists(atPath: server.socketPath))
        #expect(throws: (any Error).self) { _ = try PoolClient(socketPath: server.socketPath, timeout: 5) }

        try client.send("late".bytes)
        let drained = try client.receive()
        #expect(drained.frame == Frame(status: ResponseStatus.ok.rawValue, body: "sleep:5000".bytes))
        let late = try client.receive()
        #expect(late.statusByte == ResponseStatus.shuttingDown.rawValue, "\(late)")
        #expect(throws: PoolClient.ProtocolError.self, "the connection should be closed once drained") {
            _ = try client.receive()
        }
        #expect(server.waitForExit(timeout: 30) == 0)
        #expect(existingQueueIDs().isDisjoint(with: queues))
        FramedSupport.expectCleanShutdown(server, alreadySignalled: true, queues: queues)
    }

    /// SIGTERM while a client has pipelined far more than --max-inflight (most of it still unread
    /// in the socket): every request gets an answer — ok for those in flight, 6 for the rest, in
    /// order — and then end of stream; none is cut off by a reset.
    @Test func stopAnswersPipelinedRequestsNotYetRead() throws {
        let server = try TestServer(Self.resultSim + ["--workers", "2", "--max-inflight", "4"])
        let connection = try RawConnection(path: server.socketPath, timeout: 30)
        let count = 1000
        // Long enough that none of the 4 in flight can finish before the stop.
        try connection.write(FramedWire.requestFrames(Array(repeating: "sleep:3000".bytes, count: count)))
        #expect(waitUntil(timeout: 20) {
            OperationsSupport.status(server.socketPath)?.workers.filter { $0.state == "busy" }.count == 2
        }, "both workers should be running a sleep")
        let queues = FramedSupport.ownedQueueIDs(server)
        server.signal(SIGTERM)
        let (frames, rest, end) = connection.readToEnd()
        #expect(frames.count == count && rest.isEmpty, "\(frames.count) of \(count) answered")
        #expect(end == .eof, "expected end of stream, got \(end)")
        let okCount = frames.prefix { $0.status == ResponseStatus.ok.rawValue }.count
        #expect(okCount >= 2 && okCount <= 4, "answered ok: \(okCount); 2 to --max-inflight 4 were in flight when stopped")
        #expect(frames.prefix(okCount).allSatisfy { $0.body == "sleep:3000".bytes })
        #expect(frames.dropFirst(okCount).allSatisfy { $0 == Frame(status: ResponseStatus.shuttingDown.rawValue, body: []) })
        FramedSupport.expectCleanShutdown(server, alreadySignalled: true, queues: queues)
    }

    /// At --shutdown-timeout a request still running gets 6 (shutting down), and the answers
    /// already computed behind it go out with it, in order, before the connection is closed.
    @Test func shutdownDeadlineAnswersWhatIsOwed() throws {
        let server = try TestServer(Self.resultSim + ["--workers", "2", "--dispatch", "shared", "--shutdown-timeout", "1"])
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        try client.send("hang".bytes)
        // The hanging job holds one worker; the other computes these two, which wait behind it.
        // (Sent once it runs, so they do not share the hanging job's queue message.)
        #expect(waitUntil(timeout: 20) {
            OperationsSupport.status(server.socketPath)?.workers.filter { $0.state == "busy" }.count == 1
        }, "a worker should be running the hanging job")
        try client.send("hi".bytes)
        try client.send("there".bytes)
        #expect(waitUntil(timeout: 20) {
            OperationsSupport.status(server.socketPath)?.workers.map(\.jobsHandled).reduce(0, +) == 2
        }, "the other worker should have computed both")
        let queues = FramedSupport.ownedQueueIDs(server)
        server.signal(SIGTERM)
        let answers = try (0..<3).map { _ in try client.receive().frame }
        #expect(answers == [Frame(status: ResponseStatus.shuttingDown.rawValue, body: []),
                            Frame(status: 0, body: "hi".bytes), Frame(status: 0, body: "there".bytes)], "\(answers)")
        expectServerClosed(client, "after the deadline")
        #expect(!server.logLines(containing: "--shutdown-timeout reached").isEmpty)
        FramedSupport.expectCleanShutdown(server, alreadySignalled: true, queues: queues)
    }

    /// A reply that reached the reply queue before the deadline was acted on is delivered, not
    /// replaced by 6: the deadline's turn read it only after answering everything owed "shutting
    /// down" (a client then runs the job again). The master is frozen from just after the stop
    /// began until after the deadline, while its worker finishes the job and sends the reply.
    @Test func aReplySentBeforeTheDeadlineIsDeliveredAtIt() throws {
        // Seconds apart, so a slow machine neither reaches the deadline before the freeze nor
        // finishes the job before it.
        let server = try TestServer(Self.resultSim + ["--workers", "1", "--shutdown-timeout", "3"])
        defer { kill(server.pid, SIGCONT) }
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        try client.send("sleep:4000".bytes)
        let busy = OperationsSupport.waitForStatus(server.socketPath, timeout: 20) { $0.workers.first?.state == "busy" }
        try #require(busy.ok, "the worker never took the job")
        let worker = try #require(busy.last?.workers.first?.pid)
        let queues = FramedSupport.ownedQueueIDs(server)
        let stopSent = Date()
        server.signal(SIGTERM)
        try #require(waitUntil(timeout: 10) { !server.logLines(containing: "shutdown: stopped accepting").isEmpty })
        kill(server.pid, SIGSTOP)
        let msgrcv = try #require(SyscallNumber.msgrcv, "msgrcv's system call number on this architecture")
        try #require(blockedSyscall(worker) != msgrcv, "the job ended before the freeze: nothing to test")
        // The job done and its reply sent (the worker idle in msgrcv again), the deadline passed
        // (3 s after the stop, the job's end 4 s after its start).
        #expect(waitUntil(timeout: 20) { blockedSyscall(worker) == msgrcv }, "the worker did not finish its job")
        // Frozen until past the deadline (a wait for the precondition, not a measure of speed).
        let pastDeadline = 3.5 - Date().timeIntervalSince(stopSent)
        if pastDeadline > 0 { usleep(UInt32(pastDeadline * 1_000_000)) }
        kill(server.pid, SIGCONT)
        let answer = try client.receive()
        #expect(answer.status == .ok && answer.body == "sleep:4000".bytes, "\(answer)")
        // The case under test: the deadline's turn found the reply waiting.
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "--shutdown-timeout reached").isEmpty },
                "the deadline was not reached at the resume: nothing tested\n\(server.log.suffix(2000))")
        FramedSupport.expectCleanShutdown(server, alreadySignalled: true, queues: queues)
    }

    /// `pool-server stop` with --shutdown-timeout 0 (the deadline at once) still gets its answer
    /// and waits for the exit: the deadline closed every connection, the control one with the
    /// command still being answered (it wrote to a closed descriptor, and `stop` exited 1).
    @Test func stopWithAZeroShutdownTimeoutIsAnswered() throws {
        let server = try TestServer(Self.resultEcho + ["--workers", "1", "--shutdown-timeout", "0"])
        let queues = FramedSupport.ownedQueueIDs(server)
        let result = try OperationsSupport.poolServer(["stop", "--socket", server.socketPath])
        #expect(result.status == 0 && result.stdout.contains("stopped pid \(server.pid)"), "\(result.stdout) \(result.stderr)")
        FramedSupport.expectCleanShutdown(server, alreadySignalled: true, queues: queues)
    }

    /// A connection that owes nothing but stays open — here lingering after a refusal, its client
    /// neither reading nor closing — does not keep the workers from quitting: the stop completes
    /// without reaching --shutdown-timeout and the workers exit on their quit message.
    @Test func openConnectionOwingNothingDoesNotHoldTheStop() throws {
        let server = try TestServer(Self.resultEcho + ["--workers", "2", "--shutdown-timeout", "20", "--idle-timeout", "60", "--max-message", "100"])
        let lingering = try RawConnection(path: server.socketPath, timeout: 30)
        try lingering.write(FramedWire.requestFrame(Array(repeating: 0x41, count: 101)))
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "request over --max-message").isEmpty })
        let workers = Set(server.workerPIDs)
        let queues = FramedSupport.ownedQueueIDs(server)
        server.signal(SIGTERM)
        #expect(server.waitForExit(timeout: 15) == 0, "the stop waited for the lingering connection")
        #expect(server.logLines(containing: "--shutdown-timeout reached").isEmpty)
        for worker in workers {
            let lines = OneshotShutdownSupport.exitLines(of: worker, in: server.log)
            #expect(lines.count == 1 && lines.first?.contains("status=exit 0") == true, "worker \(worker) should have quit on request: \(lines)")
        }
        lingering.close()
        FramedSupport.expectCleanShutdown(server, alreadySignalled: true, queues: queues)
    }
}
