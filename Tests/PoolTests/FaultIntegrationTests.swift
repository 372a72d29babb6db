import Foundation
import Glibc
import Pool
import Testing

private typealias F = FaultSupport
private typealias Frame = FaultSupport.Frame

private let python = "/usr/bin/python3"
private let runuser = "/usr/sbin/runuser"
/// Running something as `nobody` needs root, runuser, and a python3 that nobody may execute
/// (the pyenv shim in PATH lives under /root).
private let canRunAsNobody = getuid() == 0 && FileManager.default.isExecutableFile(atPath: runuser)
    && FileManager.default.isExecutableFile(atPath: python)

/// Fault tolerance of the real `pool-server` binary: dead, hung and recycled workers, a killed
/// master, shutdown under faults, descriptor exhaustion, connection floods, removed queues,
/// permissions, load while a worker is killed, and fuzzed framed input.
///
/// Nothing asserts speed: every wait is for a condition with a generous timeout. The only CPU
/// measurement (the master's utime+stime over one second) checks for a busy loop — a spinning
/// master burns up to 100 ticks/s, an idle one ~0 — with a bound (25) far from both. Every test
/// ends by checking that the master exited and left nothing: none of its queues in `ipcs -q`, no
/// child or zombie, no socket, control socket or state file; leftovers are removed even on failure.
///
/// Tests that catch a race (silent loss of an acknowledged job) can only fail when the race is
/// hit; against a correct server every test here passes every time.
@Suite(.serialized) struct FaultIntegrationTests {
    static func statuses(_ responses: [PoolClient.Response]) -> [UInt8] { responses.map(\.statusByte) }

    // MARK: - 1. Respawn

    /// SIGKILL a worker: the master logs "worker died", forks a replacement (a new pid, the count
    /// back to 2), and the pool serves on both slots.
    @Test func killedWorkerIsReplaced() throws {
        let server = try TestServer(F.framedSim + ["--workers", "2"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let initial = try #require(waitForWorkers(server, 2))
        let victim = initial[0]

        kill(victim, SIGKILL)
        var now: [pid_t] = []
        let replaced = waitUntil(timeout: 20) {
            now = server.workerPIDs
            return now.count == 2 && !now.contains(victim)
        }
        #expect(replaced, "expected 2 workers without \(victim); now \(now)\n\(server.log)")
        #expect(Set(now).subtracting(initial).count == 1, "exactly one new pid: initial \(initial), now \(now)")
        let died = server.logLines(containing: "worker died").filter { F.line($0, has: "pid", "\(victim)") }
        #expect(died.count == 1 && died.first?.contains("status=signal 9") == true, "\(died)\n\(server.log)")

        // Both slots serve (round-robin over the pipeline).
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let payloads = (0..<6).map { "after-\($0)".bytes }
        let responses = try client.pipeline(payloads)
        #expect(Self.statuses(responses) == [0, 0, 0, 0, 0, 0])
        #expect(responses.map(\.body) == payloads)
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// A worker killed in the middle of a queue message: a job of that message it finished and
    /// whose reply was delivered is not lost, and the "worker died" line does not name it; the job
    /// it was running is (and is answered 5). The line used to list every finished job of the
    /// message, delivered or not.
    @Test func workerDiedNamesOnlyTheJobsItsClientsLost() throws {
        // --batch-time 1 ms: after echo jobs the master packs many jobs into one message, and a
        // 20 ms job (an eighth of it moves the average past 1 ms) has its reply sent at once.
        let server = try TestServer(F.framedSim + ["--workers", "1", "--batch-time", "0.001", "--log-level", "debug"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let worker = try #require(waitForWorkers(server, 1)?.first)
        let connection = try F.Connection(path: server.socketPath, timeout: 30)
        let warmup = (0..<200).map { "x\($0)".bytes }
        connection.send(FramedWire.requestFrames(warmup))
        #expect(connection.readFrames(warmup.count)?.map(\.status) == Array(repeating: 0, count: warmup.count))

        // Both in one write, so in one read and one message.
        connection.send(FramedWire.requestFrames(["sleep:20".bytes, "sleep:10000".bytes]))
        let first = connection.readFrames(1)?.first
        #expect(first == Frame(status: 0, body: "sleep:20".bytes), "\(String(describing: first))")
        #expect(waitUntil(timeout: 20) {
            OperationsSupport.status(server.socketPath)?.workers.first?.state == "busy"
        }, "the worker did not start the long job")
        // Otherwise the test proves nothing: the finished job must be in the dead worker's message.
        let queued = Array(server.logLines(containing: " queued ").suffix(2))
        let messages = queued.map { intField($0, "message") }
        #expect(messages.count == 2 && messages[0] != nil && messages[0] == messages[1], "the two jobs went in different messages: \(queued)")
        kill(worker, SIGKILL)
        let second = connection.readFrames(1)?.first
        #expect(second?.status == ResponseStatus.workerDied.rawValue, "\(String(describing: second))")
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "worker died").isEmpty })
        let died = server.logLines(containing: "worker died").first.map(String.init) ?? ""
        let lost = died.range(of: "lost=[").map { died[$0.upperBound...].prefix { $0 != "]" } } ?? ""
        #expect(lost.split(separator: ",").count == 1, "only the running job is lost: \(died)")
        connection.close()
        F.expectCleanExit(server, footprint)
    }

    /// With one worker: `sleep` then five requests pipelined; the worker is SIGKILLed during the
    /// sleep. The sleep request gets 5 (worker died); the five queued behind it stay in the slot's
    /// queue and are answered 0 by the replacement, in order.
    @Test func requestsQueuedForAKilledWorkerAreServedByItsReplacement() throws {
        let server = try TestServer(F.framedSim + ["--workers", "1"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let worker = try #require(waitForWorkers(server, 1)?.first)
        let queue = try #require(server.queueIDs.first)

        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        // 2 s rather than 0.5 s: the kill must land during the sleep even on a loaded machine.
        let payloads = ["sleep:2000", "q1", "q2", "q3", "q4", "q5"].map(\.bytes)
        for payload in payloads { try client.send(payload) }
        // The worker has taken the sleep (it received from its queue) and the other five wait there.
        let taken = waitUntil(timeout: 20) {
            guard let status = try? MessageQueue(id: queue).status() else { return false }
            return status.lastReceivePID == worker && status.messages == 5
        }
        #expect(taken, "the worker never took the sleep with 5 behind it: \(String(describing: try? MessageQueue(id: queue).status()))")
        kill(worker, SIGKILL)

        let responses = try payloads.map { _ in try client.receive() }
        #expect(Self.statuses(responses) == [5, 0, 0, 0, 0, 0], "\(responses.map { F.Frame(status: $0.statusByte, body: $0.body) })")
        #expect(responses.dropFirst().map(\.body) == Array(payloads.dropFirst()))
        let now = waitForWorkers(server, 1)
        #expect(now != nil && now?.contains(worker) == false, "a replacement should run: \(String(describing: now))")
        #expect(server.logLines(containing: "worker died").contains { F.line($0, has: "pid", "\(worker)") })
        // The connection stays usable.
        #expect(try client.request("after".bytes).body == "after".bytes)
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// Batching: once the workers' job times are known to be short, requests that arrive together
    /// travel to a worker in one queue message. Two workers; six requests in one write, so slot 0's
    /// message is [sleep, q2, q4] and slot 1's [q1, q3, q5]. Slot 0's worker is SIGKILLed during
    /// the sleep: the sleep gets 5, and q2 and q4 — taken with it but never started — are run by
    /// another worker and answered 0, in order. Nothing it held is lost or run twice.
    /// With `--spill-bytes 1` every payload travels through the payload arena: the unstarted jobs
    /// are read back out of it, and every chunk comes back.
    @Test(arguments: [[], ["--spill-bytes", "1"]])
    func jobsTakenWithAKilledWorkersJobButNotStartedAreRunElsewhere(spill: [String]) throws {
        // A generous --batch-time, so the debug build's job times still allow six jobs per message.
        let server = try TestServer(F.framedSim + ["--workers", "2", "--log-level", "debug", "--batch-time", "0.5"] + spill)
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 2))

        // Warm up: every worker gets a job time on record, which turns batching on.
        let connection = try F.Connection(path: server.socketPath)
        #expect(connection.send(FramedWire.requestFrames((0..<8).map { "warm-\($0)".bytes })))
        #expect(connection.readFrames(8)?.map(\.status) == Array(repeating: 0, count: 8))

        // Jobs 9–14; round-robin puts the sleep and every second request in one slot's message.
        let payloads = ["sleep:2000", "q1", "q2", "q3", "q4", "q5"].map(\.bytes)
        #expect(connection.send(FramedWire.requestFrames(payloads)))
        var sleeper: [String: Any]? = nil
        #expect(waitUntil(timeout: 20) {
            sleeper = Self.workerRows(server).first { $0["state"] as? String == "busy" }
            return sleeper != nil && server.logLines(containing: ": queued ").count >= 14
        }, "no worker took the sleep\n\(server.log)")
        let victim = try #require(sleeper?["pid"] as? Int)
        let queue = try #require(sleeper?["queue_id"] as? Int)
        let slotOf = { (job: Int) in server.logLines(containing: ": queued ").first { intField($0, "job") == job }.flatMap { intField($0, "slot") } }
        #expect(slotOf(9) != nil && slotOf(9) == slotOf(11) && slotOf(9) == slotOf(13), "\(server.log)")
        // q2 and q4 left the queue with the sleep: they are in the sleeping worker's hands.
        #expect(try MessageQueue(id: Int32(queue)).status().messages == 0)
        kill(pid_t(victim), SIGKILL)

        let responses = try #require(connection.readFrames(6), "\(server.log)")
        #expect(responses.map(\.status) == [5, 0, 0, 0, 0, 0], "\(responses)\n\(server.log)")
        #expect(responses.dropFirst().map(\.body) == Array(payloads.dropFirst()))
        #expect(server.logLines(containing: "worker died").contains { F.line($0, has: "pid", "\(victim)") })
        if !spill.isEmpty { Self.expectArenaSettles(server, spilled: 14 + 2) }
        connection.close()
        F.expectCleanExit(server, footprint)
    }

    /// The payload arena's counters (`status json`), if it has one.
    private static func arenaCounts(_ server: TestServer) -> [String: Int]? {
        guard let text = try? ControlClient.send("status json", controlSocket: server.socketPath + ".ctl"),
              let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return nil }
        return object["arena"] as? [String: Int]
    }

    /// Every chunk of the payload arena comes back, and at least `spilled` payloads went through it.
    private static func expectArenaSettles(_ server: TestServer, spilled: Int, sourceLocation: SourceLocation = #_sourceLocation) {
        func arena() -> [String: Int]? { arenaCounts(server) }
        #expect(waitUntil(timeout: 10) { arena()?["in_use"] == 0 }, "arena: \(String(describing: arena()))", sourceLocation: sourceLocation)
        #expect((arena()?["spilled"] ?? 0) >= spilled, "arena: \(String(describing: arena()))", sourceLocation: sourceLocation)
    }

    /// The control channel's per-worker rows (`status json`).
    private static func workerRows(_ server: TestServer) -> [[String: Any]] {
        guard let text = try? ControlClient.send("status json", controlSocket: server.socketPath + ".ctl"),
              let object = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return [] }
        return object["workers"] as? [[String: Any]] ?? []
    }

    /// A worker that exits (`exit:3`) costs its request (5) and is replaced.
    @Test func exitingWorkerIsReplaced() throws {
        let server = try TestServer(F.framedSim + ["--workers", "1"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let worker = try #require(waitForWorkers(server, 1)?.first)

        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let exited = try client.request("exit:3".bytes)
        #expect(exited.status == .workerDied, "\(exited)")
        let died = server.logLines(containing: "worker died").filter { F.line($0, has: "pid", "\(worker)") }
        #expect(died.count == 1 && died.first?.contains("status=exit 3") == true, "\(died)")
        var now: [pid_t] = []
        #expect(waitUntil(timeout: 20) { now = server.workerPIDs; return now.count == 1 && now[0] != worker },
                "no replacement: \(now)")
        let next = try client.request("next".bytes)
        #expect(next.isOK && next.body == "next".bytes)
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// Quick consecutive crashes: each replacement dies within 1 s of its start, so respawns are
    /// delayed (the log says "crash-looping", with a doubling delay); the pool still answers.
    @Test func crashLoopBacksOffAndThePoolRecovers() throws {
        let server = try TestServer(F.framedSim + ["--workers", "1"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 1))

        let client = try PoolClient(socketPath: server.socketPath, timeout: 60)
        let payloads = ["crash", "crash", "crash", "crash", "alive?"].map(\.bytes)
        let responses = try client.pipeline(payloads)
        #expect(Self.statuses(responses) == [5, 5, 5, 5, 0], "\(responses.map { F.Frame(status: $0.statusByte, body: $0.body) })")
        #expect(responses.last?.body == "alive?".bytes)

        let looping = server.logLines(containing: "crash-looping")
        #expect(looping.count >= 3, "expected crash-looping lines for the quick deaths:\n\(server.log)")
        let delays = looping.compactMap { line -> Int? in
            guard let range = line.range(of: "respawn in ") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
        #expect(delays.count == looping.count && delays.first.map { $0 >= 100 } == true, "\(delays)")
        #expect(zip(delays, delays.dropFirst()).allSatisfy { $1 == min($0 * 2, 10_000) },
                "the back-off should double: \(delays)")
        #expect(server.logLines(containing: "worker died").count == 4)

        // Still answering, on the same and on a new connection.
        #expect(try client.request("again".bytes).body == "again".bytes)
        let other = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try other.request("new".bytes).body == "new".bytes)
        other.close()
        client.close()
        #expect(waitForWorkers(server, 1) != nil)
        F.expectCleanExit(server, footprint)
    }

    /// Spawns of slot 0's workers, from the log.
    static func slot0Spawns(_ server: TestServer) -> [pid_t] {
        server.logLines(containing: "worker spawned").filter { F.line($0, has: "slot", "0") }.compactMap { intField($0, "pid").map(pid_t.init) }
    }

    /// Kills slot 0's workers as soon as they start until its crash back-off is `milliseconds`
    /// (3.2 s, or a doubling of it); returns its spawn count then (a later one means it had a
    /// worker again).
    static func putSlot0InLongBackOff(_ server: TestServer, milliseconds: Int = 3200) -> Int {
        func slot0Spawns() -> [pid_t] { Self.slot0Spawns(server) }
        // Each replacement dies within 1 s of its start, so each respawn waits twice as long as the
        // last (from 100 ms), until the delay is long enough. A death counts once the master has reaped
        // the worker and logged it: from then on the slot has no worker.
        var delay = 0
        for _ in 0..<10 where delay < milliseconds {
            let spawns = slot0Spawns()
            guard let pid = spawns.last else { break }
            Glibc.kill(pid, SIGKILL)
            #expect(waitUntil(timeout: 20) { !server.logLines(containing: "worker died").filter { F.line($0, has: "pid", "\(pid)") }.isEmpty },
                    "\(server.log)")
            delay = server.logLines(containing: "crash-looping").last.flatMap { line in
                line.range(of: "respawn in ").flatMap { Int(line[$0.upperBound...].prefix { $0.isNumber }) }
            } ?? 0
            if delay < milliseconds { #expect(waitUntil(timeout: 20) { slot0Spawns().count == spawns.count + 1 }, "\(server.log)") }
        }
        #expect(delay >= milliseconds, "\(server.log)")
        return slot0Spawns().count
    }

    /// Jobs already in a slot's queue when its worker dies into a crash back-off are run by
    /// another worker, not left to wait out the back-off (up to 10 s) for the slot's next one.
    /// Slot 0's worker is frozen, given every other job (round-robin, one job a message), and
    /// killed; a debug-widened quick-death window makes that death count towards the back-off.
    /// The log handler names the worker that ran each job: slot 1's, for all of them.
    @Test func jobsQueuedForACrashLoopingSlotRunElsewhere() throws {
        let server = try TestServer(["--protocol", "framed", "--reply", "result", "--handler", "log", "--dispatch", "round-robin",
                                     "--batch-time", "0", "--workers", "2"],
                                    environment: Self.debugEnvironment("POOL_DEBUG_QUICK_DEATH_MS", "600000"))
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 2))
        let status = try #require(OperationsSupport.status(server.socketPath))
        let slot0 = try #require(status.workers.first { $0.slot == 0 }?.pid), slot1 = try #require(status.workers.first { $0.slot == 1 }?.pid)
        kill(slot0, SIGSTOP)
        defer { kill(slot0, SIGCONT) }
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let names = (0..<8).map { "queued-\($0)" }
        for name in names { try client.send(name.bytes) }
        // Slot 1 runs its half; slot 0's half waits in its queue behind the frozen worker.
        #expect(waitUntil(timeout: 20) { recvLines(in: server.log).count == names.count / 2 }, "\(server.log.suffix(2000))")
        kill(slot0, SIGKILL)
        let answers = try names.map { _ in try client.receive() }
        client.close()
        #expect(answers.allSatisfy { $0.statusByte == 0 }, "\(answers.map(\.statusByte))")
        #expect(server.log.contains("crash-looping") && server.log.contains("taken back for other workers"), "\(server.log.suffix(2000))")
        let ran = Dictionary(recvLines(in: server.log).map { ($0.message, $0.pid) }) { first, _ in first }
        #expect(names.allSatisfy { ran[$0] == slot1 }, "jobs run by \(ran), slot 1's worker is \(slot1)")
        F.expectCleanExit(server, footprint)
    }

    /// A slot whose worker is waiting out a crash back-off gets no new work while another slot has
    /// a worker: its queue would hold the jobs until the replacement starts (3.2 s or more here).
    /// Slot 0's workers are killed as soon as they start until its back-off is 3.2 s; then requests
    /// sent meanwhile are all answered by slot 1 before slot 0 has a worker again. Before, every
    /// other one went to slot 0's queue and the framed connection waited for the respawn.
    @Test func aSlotInCrashBackOffGetsNoNewWorkWhileAnotherHasAWorker() throws {
        let server = try TestServer(F.framedSim + ["--workers", "2"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 2))
        let spawnsBefore = Self.putSlot0InLongBackOff(server)

        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let payloads = (0..<10).map { "r\($0)".bytes }
        let responses = try client.pipeline(payloads)
        #expect(Self.statuses(responses) == Array(repeating: 0, count: 10))
        #expect(responses.map(\.body) == payloads)
        #expect(Self.slot0Spawns(server).count == spawnsBefore, "answered only once slot 0 had a worker again: \(server.log)")
        client.close()
        #expect(waitForWorkers(server, 2) != nil)
        F.expectCleanExit(server, footprint)
    }

    /// The same, for a message that finds the live worker's queue full: it is held until that
    /// queue has room, not sent to the back-off slot's queue (where it waited for the respawn).
    /// Slot 1's worker sleeps 3 s on one connection while another sends six jobs of 3/8 msgmax:
    /// two to a message, and a queue of msgmax bytes holds one message, so a later one finds it
    /// full — seen as held requests in the status. A 6.4 s back-off leaves room around that.
    @Test func aMessageFindingTheLiveQueueFullIsHeldNotSentToASlotInCrashBackOff() throws {
        let msgmax = FramedSupport.kernelMsgmax()
        let server = try TestServer(F.framedSim + ["--workers", "2", "--queue-bytes", "\(msgmax)", "--arena-chunks", "0"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 2))
        let spawnsBefore = Self.putSlot0InLongBackOff(server, milliseconds: 6400)

        let sleeper = try PoolClient(socketPath: server.socketPath, timeout: 30)
        try sleeper.send("sleep:3000".bytes)
        // Slot 1's worker takes it and sleeps; its queue is empty again.
        let sleeping = OperationsSupport.waitForStatus(server.socketPath) { status in
            status.workers.contains { $0.slot == 1 && $0.state == "busy" }
        }
        #expect(sleeping.ok, "slot 1 should be running the sleep job: \(String(describing: sleeping.last))")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let payloads = (0..<6).map { index in Array(repeating: UInt8(ascii: "a") + UInt8(index), count: msgmax * 3 / 8) }
        for payload in payloads { try client.send(payload) }
        let held = OperationsSupport.waitForStatus(server.socketPath, timeout: 10) { $0.heldRequests > 0 }
        #expect(held.ok, "no job was held: the live queue never filled, or a message went elsewhere: \(String(describing: held.last))")
        let responses = try payloads.map { _ in try client.receive() }
        #expect(Self.statuses(responses) == Array(repeating: 0, count: 6))
        #expect(responses.map(\.body) == payloads)
        #expect(Self.slot0Spawns(server).count == spawnsBefore, "answered only once slot 0 had a worker again: \(server.log)")
        #expect(try sleeper.receive().status == .ok)
        client.close()
        sleeper.close()
        #expect(waitForWorkers(server, 2) != nil)
        F.expectCleanExit(server, footprint)
    }

    // MARK: - 2. Orphan safety and stale IPC recovery

    /// SIGKILL the master: every worker dies with it (PR_SET_PDEATHSIG). Its queues stay; a new
    /// server on the same socket removes them ("stale state of a dead master: removed queue N")
    /// and starts normally.
    @Test func killedMasterTakesItsWorkersAndTheNextStartRemovesItsQueues() throws {
        let dead = try TestServer(F.framedSim + ["--workers", "3"])
        let deadFootprint = F.Footprint(dead)
        // Runs last: `dead.stop()` deletes the directory that holds the socket both servers use.
        defer { dead.stop(); deadFootprint.removeLeftovers() }
        let workers = try #require(waitForWorkers(dead, 3))
        // Orphans (init's children once the master is gone) are no TestServer's to stop.
        defer { killLiving(workers) }
        let queues = stateFileQueueIDs(dead.stateFilePath)
        #expect(queues.count == 4, "3 worker queues + the reply queue in the state file: \(queues)")
        deadFootprint.observe()

        kill(dead.pid, SIGKILL)
        #expect(dead.waitForExit(timeout: 20) != nil, "the master should be gone")
        let orphans = { workers.filter(processIsAlive) }
        #expect(waitUntil(timeout: 10) { orphans().isEmpty }, "workers outlived their master: \(orphans())")
        // System V queues outlive processes: they are all still there, and so is the socket.
        #expect(Set(queues).isSubset(of: existingQueueIDs()), "the dead master's queues should remain until recovery")
        #expect(fileExists(dead.socketPath))

        let next = try TestServer(["--workers", "2"], socketPath: dead.socketPath)
        let nextFootprint = F.Footprint(next)
        defer { next.stop(); nextFootprint.removeLeftovers() }
        let recovered = next.logLines(containing: "stale state of a dead master: removed queue")
        for queue in queues {
            #expect(recovered.contains { $0.contains("removed queue \(queue) ") || $0.hasSuffix("removed queue \(queue)") },
                    "queue \(queue) should be reported removed:\n\(next.log)")
        }
        #expect(existingQueueIDs().isDisjoint(with: queues), "the dead master's queues should be gone")
        #expect(Set(next.queueIDs).isDisjoint(with: queues))
        #expect(try String(decoding: PoolClient.oneshot(socketPath: next.socketPath, message: "hello".bytes), as: UTF8.self) == "ok")
        F.expectCleanExit(next, nextFootprint)
    }

    /// `pool-server cleanup` after a SIGKILLed master removes its queues (printing
    /// "removed queue N" for each), its stale socket and state file — everything it left.
    @Test func cleanupRemovesADeadMastersLeftovers() throws {
        let dead = try TestServer(F.framedSim + ["--workers", "2"])
        let footprint = F.Footprint(dead)
        defer { dead.stop(); footprint.removeLeftovers() }
        let workers = try #require(waitForWorkers(dead, 2))
        defer { killLiving(workers) }
        let queues = stateFileQueueIDs(dead.stateFilePath)
        #expect(queues.count == 3, "2 worker queues + the reply queue: \(queues)")

        kill(dead.pid, SIGKILL)
        #expect(dead.waitForExit(timeout: 20) != nil)
        #expect(waitUntil(timeout: 10) { workers.allSatisfy { !processIsAlive($0) } })
        #expect(Set(queues).isSubset(of: existingQueueIDs()))

        let result = try F.run(Binaries.path("pool-server"), ["cleanup", "--socket", dead.socketPath])
        #expect(result.status == 0, "\(result)")
        let lines = result.stdout.split(separator: "\n").map(String.init)
        for queue in queues {
            #expect(lines.contains("removed queue \(queue)"), "missing 'removed queue \(queue)': \(result)")
        }
        #expect(lines.contains("removed stale socket") && lines.contains("removed state file"), "\(result)")
        #expect(existingQueueIDs().isDisjoint(with: queues), "queues left after cleanup: \(existingQueueIDs().intersection(queues))")
        #expect(!fileExists(dead.socketPath), "socket left after cleanup")
        #expect(!fileExists(dead.stateFilePath), "state file left after cleanup")
        #expect(workers.allSatisfy { !processIsAlive($0) })
        // The dead master also left its control socket (<socket>.ctl); cleanup must remove it too.
        #expect(!fileExists(dead.socketPath + ".ctl"),
                "`pool-server cleanup` left the dead master's control socket \(dead.socketPath).ctl behind")
    }

    /// A pool that ran as another user (systemd's `User=`), SIGKILLed, and cleaned up by root
    /// (`sudo pool-server cleanup`): its queues go, though root did not create them — they are
    /// the recorded master's — and the state file with them. (Cleanup compared their creator with
    /// its own uid, left every queue, and removed the state file: nothing found them again.)
    @Test(.enabled(if: getuid() == 0 && getpwnam("nobody") != nil && fileExists("/usr/bin/setpriv"), "needs root, nobody and setpriv"))
    func rootCleansUpAfterAPoolThatRanAsAnotherUser() throws {
        let nobody = try #require(getpwnam("nobody")).pointee
        try #require(nobodyCanRun(Binaries.path("pool-server")), "nobody cannot run \(Binaries.path("pool-server"))")
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(chmod(directory, 0o777) == 0)
        let server = try F.ShellServer(
            prelude: "exec /usr/bin/setpriv --reuid=\(nobody.pw_uid) --regid=\(nobody.pw_gid) --clear-groups \"$0\" \"$@\"",
            ["--workers", "2"], directory: directory)
        defer { server.stop() }
        let workers = try #require(waitForWorkers(server, 2))
        defer { killLiving(workers) }
        let queues = stateFileQueueIDs(server.stateFilePath)
        #expect(queues.count == 2, "\(queues)")
        for queue in queues { #expect(try MessageQueue(id: queue).status().creatorUID == nobody.pw_uid) }

        kill(server.pid, SIGKILL)
        #expect(server.waitForExit(timeout: 20) != nil)
        #expect(waitUntil(timeout: 10) { workers.allSatisfy { !processIsAlive($0) } }, "workers outlived their master")
        let result = try F.run(Binaries.path("pool-server"), ["cleanup", "--socket", server.socketPath])
        #expect(result.status == 0, "\(result)")
        for queue in queues { #expect(result.stdout.contains("removed queue \(queue)\n"), "\(result)") }
        #expect(existingQueueIDs().isDisjoint(with: queues), "queues left: \(existingQueueIDs().intersection(queues))")
        #expect(!fileExists(server.stateFilePath) && !fileExists(server.socketPath) && !fileExists(server.socketPath + ".ctl"))
    }

    /// A state file the caller may not read (root's, 0600: a `sudo pool-server` run in the same
    /// directory) is not "no state file": `cleanup` as another user says so and exits 1, and a
    /// start refuses (exit 2) instead of recording itself over it. It was taken as absent: the
    /// start replaced root's only record of its queues, and cleanup said "nothing to clean up".
    @Test(.enabled(if: getuid() == 0 && getpwnam("nobody") != nil && fileExists("/usr/bin/setpriv"), "needs root, nobody and setpriv"))
    func aStateFileTheCallerCannotReadIsNotTakenForNone() throws {
        let nobody = try #require(getpwnam("nobody")).pointee
        try #require(nobodyCanRun(Binaries.path("pool-server")), "nobody cannot run \(Binaries.path("pool-server"))")
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        #expect(chmod(directory, 0o777) == 0)
        let socket = directory + "/pool.sock"
        let queue = try MessageQueue.createPrivate()
        defer { try? queue.remove() }
        let record = PoolState(pid: 0x3FFF_FFF0, token: "0123456789abcdef", uid: 0, socketPath: socket,
                               queues: [(queue.id, try queue.status().changeTime)])
        try record.write(to: socket + ".state")
        let asNobody = ["--reuid=\(nobody.pw_uid)", "--regid=\(nobody.pw_gid)", "--clear-groups", Binaries.path("pool-server")]
        let cleanup = try F.run("/usr/bin/setpriv", asNobody + ["cleanup", "--socket", socket], timeout: 20)
        #expect(cleanup.status == 1 && cleanup.stdout.contains("kept state file: cannot be read (Permission denied)")
                && !cleanup.stdout.contains("nothing to clean up"), "\(cleanup)")
        let start = try F.run("/usr/bin/setpriv", asNobody + ["--socket", socket, "--workers", "1"], timeout: 20)
        #expect(start.status == 2 && start.stderr.contains("refusing to start over it"), "\(start)")
        #expect(PoolState.read(from: socket + ".state") == record, "the record was replaced or removed")
        #expect(existingQueueIDs().contains(queue.id))
        #expect(!fileExists(socket) && !fileExists(socket + ".ctl"))
    }

    /// The running master's record removed (a cleaner of old files, an operator's rm, or a start
    /// that raced ours, recorded last and unlinked its own record when it failed) or replaced by
    /// a dead master's: within about a second the master records itself again, so a SIGKILL after
    /// that still leaves every queue findable. (Without the record, its queues leaked for good.)
    @Test func aRunningMasterRecordsItselfAgainWhenItsStateFileGoes() throws {
        let server = try TestServer(F.framedEcho + ["--workers", "2"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        try #require(waitForWorkers(server, 2) != nil, "\(server.log)")
        let original = try #require(PoolState.read(from: server.stateFilePath))
        #expect(original.token != nil && original.queues.count == 3, "\(original)")

        #expect(unlink(server.stateFilePath) == 0)
        #expect(waitUntil(timeout: 20) { PoolState.read(from: server.stateFilePath) == original },
                "not recorded again after the file was removed: \(String(describing: PoolState.read(from: server.stateFilePath)))")
        // A dead master's record, naming a queue of its own that is still there: the only record
        // of it, so that queue is removed before the record is replaced.
        let leaked = try MessageQueue.createPrivate()
        defer { try? leaked.remove() }
        let dead = PoolState(pid: 0x3FFF_FFF0, token: "feedfacefeedface", uid: getuid(), socketPath: server.socketPath,
                             queues: [(leaked.id, try leaked.status().changeTime)])
        try dead.write(to: server.stateFilePath)
        #expect(waitUntil(timeout: 20) { PoolState.read(from: server.stateFilePath) == original },
                "a dead master's record was left in place of the running one's")
        #expect(!existingQueueIDs().contains(leaked.id), "the dead master's queue was left, its record gone")
        #expect(server.logLines(containing: "removed the queues of a dead master").count == 1, "\(server.log.suffix(2000))")
        // Said once the record is written, so just after the file is seen.
        #expect(waitUntil(timeout: 10) { server.logLines(containing: "no longer held this master's record; recorded again").count == 2 },
                "\(server.log.suffix(2000))")

        // What it is for: killed now, its queues are found and removed by the next cleanup.
        kill(server.pid, SIGKILL)
        #expect(server.waitForExit(timeout: 20) != nil)
        let result = try F.run(Binaries.path("pool-server"), ["cleanup", "--socket", server.socketPath])
        #expect(result.status == 0, "\(result)")
        let queues = Set(original.queues.map(\.id))
        #expect(existingQueueIDs().isDisjoint(with: queues), "queues left: \(existingQueueIDs().intersection(queues))")
    }

    /// A live master whose recorded pid names nothing here — as seen from outside the container
    /// whose pid namespace it runs in, with the IPC namespace and the socket's directory shared —
    /// keeps its queues: its control socket answers. `cleanup` (and a second start) judged it by
    /// its pid alone and removed every queue of the running pool. The record is rewritten to a pid
    /// no process has, with no start time, which is what such a reader sees.
    @Test func cleanupLeavesALiveMasterWhosePIDNamesNothingHere() throws {
        let server = try TestServer(F.framedEcho + ["--workers", "2"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        try #require(waitForWorkers(server, 2) != nil, "\(server.log)")
        let queues = stateFileQueueIDs(server.stateFilePath)
        #expect(queues.count == 3, "two worker queues and the reply queue: \(queues)")
        let record = try String(contentsOfFile: server.stateFilePath, encoding: .utf8)
        let foreign = record.split(separator: "\n").filter { !$0.hasPrefix("start=") }
            .map { $0.hasPrefix("pid=") ? "pid=\(0x3FFF_FFF0)" : String($0) }.joined(separator: "\n") + "\n"
        try foreign.write(toFile: server.stateFilePath, atomically: true, encoding: .utf8)

        let result = try F.run(Binaries.path("pool-server"), ["cleanup", "--socket", server.socketPath])
        #expect(result.status == 1 && result.stdout.contains("is running; nothing removed"), "\(result)")
        #expect(existingQueueIDs().isSuperset(of: queues), "queues removed: \(Set(queues).subtracting(existingQueueIDs()))")
        let second = try F.run(Binaries.path("pool-server"), ["--socket", server.socketPath, "--workers", "1"], timeout: 20)
        #expect(second.status == 2 && second.stderr.contains("is running; refusing to start"), "\(second)")
        #expect(existingQueueIDs().isSuperset(of: queues))
        // Given only the state file, cleanup goes by the socket it records: with ./pool.sock in
        // its place it found no control socket answering and removed every queue of the pool.
        let byRecord = try F.run(Binaries.path("pool-server"), ["cleanup", "--state-file", server.stateFilePath])
        #expect(byRecord.status == 1 && byRecord.stdout.contains("is running; nothing removed"), "\(byRecord)")
        #expect(existingQueueIDs().isSuperset(of: queues), "queues removed: \(Set(queues).subtracting(existingQueueIDs()))")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("still served".bytes).body == "still served".bytes)
        client.close()
    }

    /// A state file whose queues a start may not remove — here a record of uid 65534 in a file
    /// root owns, as if planted — is kept, and the start refuses (exit 2) instead of recording
    /// itself over the only record of those queues. The queue it names is left alone.
    @Test func aStartRefusesToRecordOverAStateFileItCouldNotClear() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/pool.sock"
        let queue = try MessageQueue.createPrivate()
        defer { try? queue.remove() }
        let record = PoolState(pid: 0x3FFF_FFF0, uid: 65534, socketPath: socket, queues: [(queue.id, try queue.status().changeTime)])
        try record.write(to: socket + ".state")
        let server = try TestServer(["--workers", "1"], socketPath: socket, waitForStart: false)
        defer { server.stop() }
        #expect(server.waitForExit(timeout: 30) == 2, "\(server.log)")
        #expect(server.log.contains("refusing to start over it") && server.log.contains("not by the uid it records"), "\(server.log)")
        #expect(existingQueueIDs().contains(queue.id), "the recorded queue was removed")
        #expect(PoolState.read(from: socket + ".state") == record, "the record was replaced")
        #expect(!fileExists(socket) && !fileExists(socket + ".ctl"))
    }

    /// A FIFO at the state file's path (planted, or a mistake) hangs neither `cleanup` nor a
    /// start: the record is read without waiting for a writer, and only from a regular file. (The
    /// read used to block in open until something wrote to the FIFO.)
    @Test func aFIFOAtTheStateFilePathHangsNothing() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/pool.sock"
        #expect(mkfifo(socket + ".state", 0o600) == 0)
        let cleanup = try F.run(Binaries.path("pool-server"), ["cleanup", "--socket", socket], timeout: 20)
        #expect(cleanup.status == 0 && cleanup.stdout.contains("nothing to clean up"), "\(cleanup)")
        let server = try TestServer(F.framedEcho + ["--workers", "1"], socketPath: socket)
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let client = try PoolClient(socketPath: socket, timeout: 30)
        #expect(try client.request("served".bytes).body == "served".bytes)
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// The groups the group database gives `user` with primary group `gid` (the test's own
    /// getgrouplist, for comparison with what the workers got).
    static func groupList(_ user: String, _ gid: gid_t) -> [gid_t] {
        var count: Int32 = 256
        var groups = [gid_t](repeating: 0, count: 256)
        guard getgrouplist(user, gid, &groups, &count) >= 0 else { return [gid] }
        return Array(groups.prefix(Int(count)))
    }

    /// A user in the user database that the group database lists as a member of a group other
    /// than its primary one (on this machine's image: postgres in ssl-cert), if any.
    static let userWithSupplementaryGroups: (name: String, uid: uid_t, gid: gid_t, extra: Set<gid_t>)? = {
        guard let text = try? String(contentsOfFile: "/etc/group", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let fields = line.split(separator: ":", omittingEmptySubsequences: false)
            guard fields.count == 4, let gid = gid_t(fields[2]) else { continue }
            for member in fields[3].split(separator: ",") {
                guard let entry = getpwnam(String(member)), entry.pointee.pw_gid != gid, entry.pointee.pw_uid != 0 else { continue }
                let name = String(member), primary = entry.pointee.pw_gid
                return (name, entry.pointee.pw_uid, primary, Set(groupList(name, primary)).subtracting([primary]))
            }
        }
        return nil
    }()

    /// `--user` gives workers the user's supplementary groups too (initgroups' list, as PHP-FPM
    /// and Gunicorn do): a handler relying on them to reach a file got EACCES with the one group.
    @Test(.enabled(if: getuid() == 0 && userWithSupplementaryGroups != nil, "needs root and a user with supplementary groups"))
    func workersUnderUserGetItsSupplementaryGroups() throws {
        let user = try #require(Self.userWithSupplementaryGroups)
        let server = try TestServer(F.framedEcho + ["--workers", "1", "--user", user.name])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let worker = try #require(waitForWorkers(server, 1)?.first)
        #expect(waitUntil(timeout: 20) { procStatusField("Uid", of: worker).first == "\(user.uid)" })
        let groups = Set(procStatusField("Groups", of: worker).compactMap { gid_t($0) })
        #expect(!user.extra.isEmpty && groups == user.extra.union([user.gid]), "worker groups \(groups), \(user.name)'s: \(user.gid) + \(user.extra)")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("grouped".bytes).body == "grouped".bytes)
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// Workers under `--user nobody` see nobody's USER, LOGNAME and HOME (PHP-FPM sets them), not
    /// root's: a handler writing a cache under $HOME wrote into root's home, or failed to.
    @Test(.enabled(if: getuid() == 0 && getpwnam("nobody") != nil, "needs root and a user named nobody"))
    func workersUnderUserGetThatUsersEnvironment() throws {
        let nobody = try #require(getpwnam("nobody")).pointee
        let home = String(cString: nobody.pw_dir)
        var environment = ProcessInfo.processInfo.environment
        environment["HOME"] = "/root"
        environment["USER"] = "root"
        environment["LOGNAME"] = "root"
        let server = try TestServer(F.framedSim + ["--workers", "2", "--user", "nobody"], environment: environment)
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        // Twice each: both workers (round-robin).
        for name in ["USER", "LOGNAME", "HOME", "USER", "LOGNAME", "HOME"] {
            let reply = try client.request("env:\(name)".bytes)
            #expect(reply.statusByte == 0 && reply.body == (name == "HOME" ? home : "nobody").bytes,
                    "\(name): status \(reply.statusByte), \(String(decoding: reply.body, as: UTF8.self))")
        }
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// `--user nobody` under a root master: every worker runs as nobody (uid, gid, and the groups
    /// the group database gives it: nogroup alone, as a rule) while the master stays root; the queues are nobody's (created by root) so
    /// the workers can use them, and requests are served. SIGKILLing the master still takes the
    /// workers (the uid change cleared their parent-death signal; they asked for it again), and
    /// `cleanup` removes the queues though another user owns them (it goes by their creator).
    @Test(.enabled(if: getuid() == 0 && getpwnam("nobody") != nil, "needs root and a user named nobody"))
    func workersRunAsTheUserGivenWithUser() throws {
        let nobody = try #require(getpwnam("nobody")).pointee
        let server = try TestServer(F.framedEcho + ["--workers", "2", "--user", "nobody"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let workers = try #require(waitForWorkers(server, 2))
        func ids(_ pid: pid_t, _ field: String) -> [String] { procStatusField(field, of: pid) }
        for pid in workers {
            // A worker listed as soon as it was forked may not have switched yet.
            #expect(waitUntil(timeout: 20) { ids(pid, "Uid") == Array(repeating: "\(nobody.pw_uid)", count: 4) },
                    "worker \(pid): \(ids(pid, "Uid"))")
            #expect(ids(pid, "Gid") == Array(repeating: "\(nobody.pw_gid)", count: 4), "worker \(pid): \(ids(pid, "Gid"))")
            #expect(Set(ids(pid, "Groups")) == Set(Self.groupList("nobody", nobody.pw_gid).map { "\($0)" }), "worker \(pid): \(ids(pid, "Groups"))")
        }
        #expect(ids(server.pid, "Uid").first == "0")
        let queues = stateFileQueueIDs(server.stateFilePath)
        #expect(queues.count == 3, "2 worker queues + the reply queue: \(queues)")
        for queue in queues {
            let status = try MessageQueue(id: queue).status()
            #expect(status.uid == nobody.pw_uid && status.creatorUID == 0 && status.mode == 0o600, "queue \(queue): \(status)")
        }
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        for index in 0..<4 { #expect(try client.request("as-nobody-\(index)".bytes).body == "as-nobody-\(index)".bytes) }
        let said = "nobody (uid \(nobody.pw_uid), gid \(nobody.pw_gid))"
        let json = try ControlClient.send("status json", controlSocket: server.socketPath + ".ctl")
        #expect(json.contains("\"worker_user\":\"\(said)\""), "\(json)")
        let table = try ControlClient.send("status", controlSocket: server.socketPath + ".ctl")
        #expect(table.split(separator: "\n").first?.hasSuffix("workers run as \(said)") == true, "\(table)")

        // A slot added later gets a queue of nobody's too, and its worker serves (round-robin:
        // six requests reach all three).
        #expect(try ControlClient.send("scale 3", controlSocket: server.socketPath + ".ctl").hasPrefix("ok scaling to 3"))
        let scaled = try #require(waitForWorkers(server, 3), "\(server.log.suffix(3000))")
        let allQueues = stateFileQueueIDs(server.stateFilePath)
        #expect(allQueues.count == 4 && Set(allQueues).isSuperset(of: queues), "\(allQueues)")
        for queue in allQueues {
            let status = try MessageQueue(id: queue).status()
            #expect(status.uid == nobody.pw_uid && status.creatorUID == 0, "queue \(queue): \(status)")
        }
        for index in 0..<6 { #expect(try client.request("scaled-\(index)".bytes).body == "scaled-\(index)".bytes) }
        client.close()

        kill(server.pid, SIGKILL)
        #expect(server.waitForExit(timeout: 20) != nil)
        let everyWorker = Set(workers).union(scaled)
        #expect(waitUntil(timeout: 10) { everyWorker.allSatisfy { !processIsAlive($0) } }, "workers outlived the SIGKILLed master")
        let result = try F.run(Binaries.path("pool-server"), ["cleanup", "--socket", server.socketPath])
        #expect(result.status == 0, "\(result)")
        #expect(existingQueueIDs().isDisjoint(with: allQueues), "queues left after cleanup: \(existingQueueIDs().intersection(allQueues))")
        for path in [server.socketPath, server.socketPath + ".ctl", server.stateFilePath] {
            #expect(!fileExists(path), "\(path) left after cleanup")
        }

        // Names that are not there, and --group alone, are usage errors.
        for arguments in [["--user", "no-such-user-for-pool-tests"], ["--user", "nobody", "--group", "no-such-group-for-pool-tests"],
                          ["--group", "nogroup"]] {
            let refused = try F.run(Binaries.path("pool-server"), arguments + ["--socket", server.socketPath + ".x"])
            #expect(refused.status == 64 && refused.stderr.contains(arguments.count == 2 && arguments[0] == "--group" ? "--group" : arguments[arguments.count - 2]),
                    "\(arguments): \(refused)")
        }
        // A switch the kernel refuses (setuid(-1): EINVAL) is found by the probe before anything
        // is created: exit 2 naming the call, instead of workers failing it for ever.
        let queuesBefore = existingQueueIDs()
        let refusedSwitch = try F.run(Binaries.path("pool-server"), ["--user", "\(uid_t.max)", "--group", "0",
                                                                     "--socket", server.socketPath + ".y"], timeout: 15)
        // Started after all (and killed by F.run's timeout): what it left goes.
        if refusedSwitch.status != 2 { _ = try? F.run(Binaries.path("pool-server"), ["cleanup", "--socket", server.socketPath + ".y"]) }
        #expect(refusedSwitch.status == 2 && refusedSwitch.stderr.contains("cannot become") && refusedSwitch.stderr.contains("setuid"),
                "\(refusedSwitch)")
        #expect(existingQueueIDs().subtracting(queuesBefore).isEmpty && !fileExists(server.socketPath + ".y"))
        // A master that is not root cannot change its workers' user: it does not start (exit 2).
        if fileExists("/usr/bin/setpriv") && nobodyCanRun(Binaries.path("pool-server")) {
            let unprivileged = try F.run("/usr/bin/setpriv", ["--reuid=\(nobody.pw_uid)", "--regid=\(nobody.pw_gid)", "--clear-groups",
                                                             Binaries.path("pool-server"), "--user", "root", "--socket", server.socketPath + ".x"])
            #expect(unprivileged.status == 2 && unprivileged.stderr.contains("need a master running as root"), "\(unprivileged)")
            #expect(!fileExists(server.socketPath + ".x"))
        }
    }

    /// `--socket-group` with `--socket-mode 0660`: the socket file is that group's, so a user in
    /// it (nobody, with nogroup, through setpriv) is served, one outside it is refused (EACCES);
    /// the control socket stays the master's alone (0600). An unknown group is a usage error.
    @Test(.enabled(if: getuid() == 0 && getpwnam("nobody") != nil && fileExists("/usr/bin/setpriv")
                       && nobodyCanRun(Binaries.path("pool-client")),
                   "needs root, a user named nobody that can run pool-client, and setpriv"))
    func socketGroupLetsItsMembersConnect() throws {
        let nobody = try #require(getpwnam("nobody")).pointee
        let server = try TestServer(["--workers", "1", "--socket-group", "\(nobody.pw_gid)", "--socket-mode", "0660"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        // Its directory (0700 from mkdtemp) must let nobody through to the socket.
        let directory = String(server.socketPath.dropLast("/pool.sock".count))
        #expect(chmod(directory, 0o711) == 0)
        var st = stat()
        #expect(lstat(server.socketPath, &st) == 0 && st.st_gid == nobody.pw_gid && st.st_mode & 0o777 == 0o660,
                "gid \(st.st_gid) mode \(String(st.st_mode & 0o777, radix: 8))")
        #expect(lstat(server.socketPath + ".ctl", &st) == 0 && st.st_gid == 0 && st.st_mode & 0o777 == 0o600)
        func clientAsNobody(group: gid_t) throws -> F.CommandResult {
            try F.run("/usr/bin/setpriv", ["--reuid=\(nobody.pw_uid)", "--regid=\(group)", "--clear-groups",
                                           Binaries.path("pool-client"), "--socket", server.socketPath, "from-the-group"])
        }
        let member = try clientAsNobody(group: nobody.pw_gid)
        #expect(member.status == 0 && member.stdout == "ok\n", "\(member)")
        let outsider = try clientAsNobody(group: nobody.pw_gid == 1 ? 2 : 1)
        #expect(outsider.status != 0 && outsider.stderr.contains("Permission denied"), "\(outsider)")
        let unknown = try F.run(Binaries.path("pool-server"), ["--socket-group", "no-such-group-for-pool-tests",
                                                               "--socket", server.socketPath + ".x"])
        #expect(unknown.status == 64 && unknown.stderr.contains("--socket-group"), "\(unknown)")
        F.expectCleanExit(server, footprint)
    }

    /// `pool-server cleanup` refuses while the recorded master runs, also when it runs under
    /// another process name (a renamed binary, an embedding program): the state file names it by
    /// pid and start time. Its queues and socket are untouched. Before, only a master of the same
    /// name as the cleanup's counted as alive, and its queues were removed under it.
    @Test func cleanupRefusesWhileTheMasterRunsUnderAnotherName() throws {
        let server = try TestServer(F.framedSim + ["--workers", "1"], executableName: "poold")
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 1))
        let comm = (try? String(contentsOfFile: "/proc/\(server.pid)/comm", encoding: .utf8)) ?? ""
        #expect(comm.hasPrefix("poold"), "the master should run as poold: \(comm)")
        let queues = stateFileQueueIDs(server.stateFilePath)
        #expect(queues.count == 2, "1 worker queue + the reply queue: \(queues)")

        let result = try F.run(Binaries.path("pool-server"), ["cleanup", "--socket", server.socketPath])
        #expect(result.status == 1, "\(result)")
        #expect(result.stdout.contains("master pid \(server.pid) is running; nothing removed"), "\(result)")
        #expect(Set(queues).isSubset(of: existingQueueIDs()), "cleanup removed a live master's queues")
        #expect(fileExists(server.socketPath) && fileExists(server.stateFilePath))
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("still here".bytes).body == "still here".bytes)
        client.close()
        F.expectCleanExit(server, footprint)
    }

    // MARK: - 3. Job timeout

    /// `hang` overruns --job-timeout 0.5: the request gets 4 (timeout), its worker is terminated
    /// and replaced, and the same connection is served by the replacement.
    @Test func jobTimeoutAnswersTimeoutAndReplacesTheWorker() throws {
        let server = try TestServer(F.framedSim + ["--workers", "1", "--job-timeout", "0.5"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let worker = try #require(waitForWorkers(server, 1)?.first)

        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let hung = try client.request("hang".bytes)
        #expect(hung.status == .timeout, "\(hung)")
        #expect(server.logLines(containing: "exceeded --job-timeout").contains { F.line($0, has: "pid", "\(worker)") },
                "\(server.log)")
        #expect(waitUntil(timeout: 10) { !processIsAlive(worker) }, "the hung worker should be gone")
        let died = server.logLines(containing: "worker died").filter { F.line($0, has: "pid", "\(worker)") }
        #expect(died.count == 1 && died.first?.contains("cause=job timeout") == true, "\(died)")

        let next = try client.request("next".bytes)
        #expect(next.isOK && next.body == "next".bytes, "\(next)")
        let now = waitForWorkers(server, 1)
        #expect(now != nil && now?.contains(worker) == false, "the replacement serves: \(String(describing: now))")
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// `--slow-job 0.2`: a job sleeping 1.2 s is logged once as slow (not at every 0.1 s scan),
    /// naming its worker, and its worker is left alone to answer it; a quick job is not logged.
    @Test func slowJobsAreLoggedOnceAndLeftToFinish() throws {
        let server = try TestServer(F.framedSim + ["--workers", "1", "--slow-job", "0.2"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let worker = try #require(waitForWorkers(server, 1)?.first)
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("quick".bytes).body == "quick".bytes)
        let slow = try client.request("sleep:1200".bytes)
        #expect(slow.isOK, "\(slow)")
        let lines = server.logLines(containing: "slow job")
        #expect(lines.count == 1 && lines.first.map { F.line($0, has: "pid", "\(worker)") && $0.contains(" warning ") } == true,
                "\(server.log.suffix(3000))")
        let seconds = lines.first.flatMap { line in line.range(of: "seconds=").flatMap { Double(line[$0.upperBound...].prefix { !$0.isWhitespace }) } }
        #expect(seconds.map { $0 >= 0.2 && $0 < 1.2 } == true, "\(lines)")
        #expect(processIsAlive(worker) && server.logLines(containing: "worker died").isEmpty)
        let status = try ControlClient.send("status json", controlSocket: server.socketPath + ".ctl")
        #expect(status.contains("\"slow_jobs\":1,"), "\(status)")
        let metrics = try ControlClient.send("status prometheus", controlSocket: server.socketPath + ".ctl")
        #expect(metrics.contains("\npool_slow_jobs_total 1\n"), "\(metrics)")
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// A job's reply still held in its worker's batch when a later job of the same message times
    /// out is answered with that reply, not "worker died": the batch is built in shared memory,
    /// where the master finds it after reaping the worker. "fast" and "hang" travel in one queue
    /// message (checked in the debug log); "fast" finishes at once, and its reply waits for the
    /// batch while "hang" runs into --job-timeout. Before, the reply died with the worker.
    @Test func aFinishedReplyHeldForTheBatchOutlivesAWorkerKilledForTheNextJob() throws {
        // A long --batch-time: the batch rule (at the average job time, as much work as it) must
        // not split them, whatever a debug build's first job took.
        let server = try TestServer(F.framedSim + ["--workers", "1", "--job-timeout", "0.5", "--batch-time", "0.5", "--log-level", "debug"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let worker = try #require(waitForWorkers(server, 1)?.first)

        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        // A finished job first: until every worker has one, the master sends one job per message.
        #expect(try client.request("warm".bytes).isOK)
        let responses = try client.pipeline(["fast".bytes, "hang".bytes])
        #expect(responses.first?.status == .ok && responses.first?.body == "fast".bytes, "\(responses)")
        #expect(responses.last?.status == .timeout, "\(responses)")
        let queued = server.logLines(containing: " queued ").suffix(2).map { intField($0, "message") }
        #expect(queued.count == 2 && queued[0] != nil && queued[0] == queued[1],
                "fast and hang should share one queue message: \(server.logLines(containing: " queued ").suffix(3))")
        #expect(waitUntil(timeout: 10) { !processIsAlive(worker) }, "the hung worker should be gone")
        let next = try client.request("next".bytes)
        #expect(next.isOK && next.body == "next".bytes, "\(next)")
        client.close()
        F.expectCleanExit(server, footprint)
    }

    // MARK: - 4. Recycling

    /// --max-jobs 5 with one worker: 12 pipelined requests are all answered, in order, while the
    /// worker is recycled twice (exit 0, "recycled"), never counted as a death.
    /// With `--spill-bytes 1` payloads and replies travel through shared memory: a recycled
    /// worker's unstarted jobs are read back from the arena, and every chunk comes back.
    @Test(arguments: [[], ["--spill-bytes", "1"]])
    func maxJobsRecyclesWorkersWithoutLosingRequests(spill: [String]) throws {
        let server = try TestServer(["--max-jobs", "5", "--workers", "1", "--reply", "result",
                                     "--protocol", "framed", "--handler", "echo"] + spill)
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let first = try #require(waitForWorkers(server, 1)?.first)

        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let payloads = (0..<12).map { "job-\($0)".bytes }
        let responses = try client.pipeline(payloads)
        #expect(Self.statuses(responses) == Array(repeating: 0, count: 12))
        #expect(responses.map(\.body) == payloads)

        #expect(waitUntil(timeout: 20) { server.logLines(containing: "recycled").count >= 2 }, "\(server.log)")
        let spawned = spawnedWorkerPIDs(inLog: server.log)
        #expect(Set(spawned).count >= 3, "the worker pid should change at least twice: \(spawned)")
        let now = waitForWorkers(server, 1)
        #expect(now != nil && now?.contains(first) == false)
        #expect(server.logLines(containing: "worker died").isEmpty, "recycling is not a death:\n\(server.log)")
        #expect(server.logLines(containing: "worker exited").filter { $0.contains("status=exit 0") }.count >= 2)
        if !spill.isEmpty { Self.expectArenaSettles(server, spilled: 12) }
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// A stop while a worker recycled by --max-jobs leaves jobs of its last message unstarted and
    /// its queue empty: during a stop such a worker is not replaced, and those jobs went back to
    /// its slot's queue with no one to read it, to be answered 6 at --shutdown-timeout. Now a
    /// worker that leaves jobs unstarted is replaced during a stop too, and every request is
    /// answered.
    @Test func unstartedJobsOfAWorkerRecycledDuringAStopAreStillRun() throws {
        let server = try TestServer(F.framedSim + ["--workers", "1", "--max-jobs", "5", "--batch-time", "0.05", "--shutdown-timeout", "15"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let worker = try #require(waitForWorkers(server, 1)?.first)
        let queue = MessageQueue(id: try #require(server.queueIDs.first))
        // Three quick jobs teach the master that jobs are short (--batch-time 0.05: many fit in one
        // message), so the next burst, read at once, goes out as one message: the worker runs the
        // sleep and "a" (its fifth job), then leaves with "b" and "c" unstarted.
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(Self.statuses(try client.pipeline(["w1", "w2", "w3"].map(\.bytes))) == [0, 0, 0])
        let raw = try FramedSupport.RawConnection(path: server.socketPath, timeout: 60)
        let burst = ["sleep:8000", "a", "b", "c"]
        try raw.write(FramedWire.requestFrames(burst.map(\.bytes)))
        // The worker takes the burst and sleeps 8 s; the stop must land in that sleep (looked for
        // during 6 s of it, for a loaded machine). Had the burst gone out as several messages, some
        // would still be queued: the test needs them in one (its jobs unstarted, the queue empty).
        var held = try queue.status()
        #expect(waitUntil(timeout: 6) {
            held = (try? queue.status()) ?? held
            return held.messages == 0 && OperationsSupport.status(server.socketPath)?.workers.first?.state == "busy"
        }, "the worker should be running the sleep: \(held)")
        #expect(held.lastReceivePID == worker, "the worker should hold the whole burst: \(held)")
        server.signal(SIGTERM)
        let frames = raw.readFrames(4)
        #expect(frames?.map(\.status) == [0, 0, 0, 0], "\(String(describing: frames))\n\(server.log)")
        #expect(server.logLines(containing: "recycled").count == 1, "\(server.log)")
        raw.close()
        client.close()
        F.expectCleanExit(server, footprint, alreadySignalled: true)
    }

    // MARK: - 5. Shutdown under faults

    /// A worker stuck in `hang` at SIGTERM is SIGKILLed at --shutdown-timeout 1; its client gets
    /// status 6 (shutting down), then the connection is closed; the master exits 0, leaving nothing.
    @Test func hungWorkerIsKilledAtTheShutdownTimeout() throws {
        let server = try TestServer(F.framedSim + ["--workers", "2", "--shutdown-timeout", "1"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let workers = try #require(waitForWorkers(server, 2))
        let queues = server.queueIDs

        let connection = try F.Connection(path: server.socketPath, timeout: 30)
        #expect(connection.send(FramedWire.requestFrame("hang".bytes)))
        var hung: pid_t?
        #expect(waitUntil(timeout: 20) {
            hung = queues.compactMap { try? MessageQueue(id: $0).status().lastReceivePID }.first { workers.contains($0) }
            return hung != nil
        }, "no worker took the hang job")

        footprint.observe()
        server.signal(SIGTERM)
        let (bytes, end) = connection.readToEnd()
        let (frames, rest, malformed) = F.parseResponses(bytes)
        #expect(frames.map(\.status) == [ResponseStatus.shuttingDown.rawValue] && rest.isEmpty && malformed == nil,
                "the hung request should be answered 6 at the deadline: \(frames) \(rest) \(String(describing: malformed))")
        #expect(end == .eof, "then the connection should be closed: \(end)")
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log)")
        #expect(!server.logLines(containing: "--shutdown-timeout reached").isEmpty)
        if let hung {
            let lines = server.logLines(containing: "worker exited").filter { F.line($0, has: "pid", "\(hung)") }
            #expect(lines.count == 1 && lines.first?.contains("status=signal 9") == true, "hung worker: \(lines)")
            // The idle worker never got its quit message (quits are queued only once every
            // connection is done, and the hung one never is), so it ends at the deadline too.
            for other in workers where other != hung {
                let lines = server.logLines(containing: "worker exited").filter { F.line($0, has: "pid", "\(other)") }
                #expect(lines.count == 1, "idle worker: \(lines)")
            }
        }
        F.expectCleanExit(server, footprint, alreadySignalled: true)
    }

    /// SIGTERM while the only slot waits out its crash-loop back-off (its worker died quickly five
    /// times, the respawn is ≥ 800 ms away). A message acknowledged meanwhile sits in the slot's
    /// queue; a graceful stop handles queued work before the workers quit, so it must be handled
    /// (at the very least reported lost), not dropped with the queue.
    @Test func stopDuringRespawnBackOffKeepsAcknowledgedMessages() throws {
        let server = try TestServer(["--workers", "1", "--handler", "log"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        var killed: [pid_t] = []
        // Six quick deaths: a back-off of 3.2 s, time enough to see no worker and send a message.
        for _ in 0..<6 {
            var next: pid_t = 0
            let found = waitUntil(timeout: 20) {
                guard let pid = server.workerPIDs.first(where: { !killed.contains($0) }) else { return false }
                next = pid
                return true
            }
            #expect(found, "no new worker after \(killed)")
            guard found else { break }
            kill(next, SIGKILL)
            killed.append(next)
        }
        footprint.observe()
        #expect(waitUntil(timeout: 20) { server.logLines(containing: "worker died").count == 6 })
        let delays = server.logLines(containing: "crash-looping").compactMap { line -> Int? in
            guard let range = line.range(of: "respawn in ") else { return nil }
            return Int(line[range.upperBound...].prefix { $0.isNumber })
        }
        // The last death's back-off, not any: a slow last kill resets it to 100 ms, and the slot
        // would respawn before the stop below.
        #expect((delays.last ?? 0) >= 800, "the slot should be in a long back-off: \(delays)")
        #expect(server.workerPIDs.isEmpty, "no worker should run during the back-off")

        let reply = String(decoding: try PoolClient.oneshot(socketPath: server.socketPath, message: "during-backoff".bytes), as: UTF8.self)
        #expect(reply == "ok")
        server.signal(SIGTERM)
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log)")
        let log = server.log
        // Still in the back-off when the stop came: no respawn for the sixth death before it.
        let beforeStop = log.components(separatedBy: "shutdown: stopped accepting").first ?? log
        #expect(F.lines(beforeStop, containing: "worker spawned").count == 6, "the back-off ended before the stop:\n\(log.suffix(2000))")
        let handled = F.recvMessages(inLog: log).filter { $0 == "during-backoff" }.count
        let reportedLost = F.lines(log, containing: "acknowledged message lost").count
        #expect(handled == 1,
                "a message acknowledged during the respawn back-off was \(handled == 0 ? "never handled" : "handled \(handled) times") (\(reportedLost) 'lost' line(s)); shutdown removed its queue:\n\(log.suffix(1500))")
        F.expectNothingLeft(footprint)
    }

    /// Ctrl-C as a terminal sends it: SIGINT to the whole process group. Workers ignore it; the
    /// master shuts down gracefully: every acknowledged message handled, workers quit (exit 0).
    @Test func sigintToTheProcessGroupShutsDownCleanly() throws {
        let server = try ProcessGroupServer(["--workers", "3", "--handler", "log"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let workers = try #require(waitForWorkers(server, 3))
        #expect(server.processGroup == server.pid, "the server should lead its own process group")

        let messages = (0..<6).map { "pg-\($0)" }
        for message in messages {
            #expect(try String(decoding: PoolClient.oneshot(socketPath: server.socketPath, message: message.bytes), as: UTF8.self) == "ok")
        }
        footprint.observe()
        #expect(server.signalGroup(SIGINT))
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log)")
        let log = server.log
        for worker in workers {
            let lines = F.lines(log, containing: "worker exited").filter { F.line($0, has: "pid", "\(worker)") }
            #expect(lines.count == 1 && lines.first?.contains("status=exit 0") == true,
                    "worker \(worker) should ignore SIGINT and quit on request: \(lines)")
        }
        let handled = F.recvMessages(inLog: log)
        #expect(messages.allSatisfy { message in handled.filter { $0 == message }.count == 1 }, "\(handled)")
        F.expectNothingLeft(footprint)
    }

    /// Launched with SIGCHLD and SIGINT ignored (through bash: dash will not ignore CHLD). The
    /// master restores SIGCHLD, so a crashed worker is still reaped and replaced, and SIGTERM
    /// still stops it with exit 0.
    @Test func ignoredSIGCHLDAndSIGINTAtLaunchStillReapAndStop() throws {
        // The launch really ignores both signals: what bash passes through exec.
        let probe = try F.run("/bin/bash", ["-c", "trap \"\" CHLD INT; exec grep SigIgn /proc/self/status"])
        let mask = probe.stdout.split(separator: "\t").last.flatMap { UInt64($0.trimmingCharacters(in: .whitespacesAndNewlines), radix: 16) }
        let ignoresBoth = mask.map { $0 & (1 << UInt64(SIGCHLD - 1)) != 0 && $0 & (1 << UInt64(SIGINT - 1)) != 0 } ?? false
        #expect(ignoresBoth, "bash should exec with SIGCHLD and SIGINT ignored: \(probe)")

        let server = try F.ShellServer(prelude: "trap \"\" CHLD INT", F.framedSim + ["--workers", "1"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let worker = try #require(waitForWorkers(server, 1)?.first)

        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let crashed = try client.request("crash".bytes)
        #expect(crashed.status == .workerDied, "\(crashed)")
        var now: [pid_t] = []
        #expect(waitUntil(timeout: 20) { now = server.workerPIDs; return now.count == 1 && now[0] != worker },
                "the crashed worker should be reaped and replaced: \(now)\n\(server.log)")
        #expect(server.logLines(containing: "worker died").contains { F.line($0, has: "pid", "\(worker)") })
        let zombies = childPIDs(of: server.pid).filter { processState($0) == "Z" }
        #expect(zombies.isEmpty, "unreaped children: \(zombies)")
        #expect(try client.request("after".bytes).body == "after".bytes)
        client.close()

        footprint.observe()
        server.signal(SIGTERM)
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log)")
        F.expectNothingLeft(footprint)
    }

    // MARK: - 6. Resource exhaustion

    /// Opens `count` connections to a server whose master runs under `ulimit -n 64`, and waits
    /// until it has dealt with every one (accepted — holding a descriptor — or shed).
    private func saturate(_ server: F.ShellServer, count: Int, baseDescriptors: Int) -> (connections: [F.Connection], shed: Int) {
        var connections: [F.Connection] = []
        for _ in 0..<count {
            if let connection = try? F.Connection(path: server.socketPath, timeout: 20) { connections.append(connection) }
        }
        // A shed connection has its busy answer (or EOF) waiting; an accepted one has nothing yet.
        // (Counted here, not from the log: those lines are throttled.)
        var shed = 0
        let settled = waitUntil(timeout: 30) {
            shed = connections.filter { connection in
                var probe = pollfd(fd: connection.fd, events: Int16(POLLIN), revents: 0)
                return poll(&probe, 1, 0) > 0
            }.count
            return F.descriptorCount(server.pid) - baseDescriptors + shed >= connections.count
        }
        #expect(settled, "the master did not deal with every connection: \(F.descriptorCount(server.pid)) fds, \(shed) shed")
        #expect(!server.logLines(containing: "out of file descriptors").isEmpty || shed == 0, "shed without a log line")
        return (connections, shed)
    }

    /// Closes `connections`; a new client is then served (descriptors are free again).
    private func expectRecovery(closing connections: [F.Connection], _ server: F.ShellServer,
                                sourceLocation: SourceLocation = #_sourceLocation) {
        for connection in connections { connection.close() }
        var recovered = false
        _ = waitUntil(timeout: 20) {
            guard let client = try? PoolClient(socketPath: server.socketPath, timeout: 10),
                  let response = try? client.request("recovered".bytes) else { return false }
            recovered = response.isOK && response.body == "recovered".bytes
            return recovered
        }
        #expect(recovered, "no client served after the descriptors were freed", sourceLocation: sourceLocation)
    }

    /// `ulimit -n 64`, 200 clients: the master accepts what fits, sheds the rest (busy, then
    /// close) without busy-looping, keeps serving the accepted ones, and serves new clients once
    /// descriptors are free again.
    @Test func lowDescriptorLimitShedsWithoutSpinningAndRecovers() throws {
        let server = try F.ShellServer(prelude: "ulimit -n 64", F.framedEcho + ["--workers", "2", "--idle-timeout", "120"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 2))
        let limits = (try? String(contentsOfFile: "/proc/\(server.pid)/limits", encoding: .utf8)) ?? ""
        #expect(limits.split(separator: "\n").contains { $0.hasPrefix("Max open files") && $0.contains(" 64 ") }, "\(limits)")
        let base = F.descriptorCount(server.pid)

        let (connections, shed) = saturate(server, count: 200, baseDescriptors: base)
        #expect(shed > 100, "200 connections cannot fit under 64 descriptors (shed \(shed))")
        // Logged at most once a second, not once per connection shed.
        let lines = server.logLines(containing: "out of file descriptors").count
        #expect(lines >= 1 && lines < shed / 2, "\(lines) log lines for \(shed) shed connections")

        // While the connections sit there the master must not spin. An idle master uses ~0 ticks
        // per second; a spinning one a whole core (100), and still more than a third of one on
        // two cores shared with two other CPU hogs: 25 separates the two on a loaded machine too.
        let ticks = try #require(F.cpuTicksUsed(by: server.pid, during: 1.0))
        #expect(ticks < 25, "the master used \(ticks) ticks of CPU in 1 s at the descriptor limit (busy loop)")

        // Accepted clients are served; shed ones got busy (2) and were closed.
        var served = 0, busy = 0
        var other: [String] = []
        for (index, connection) in connections.enumerated() {
            let payload = "client-\(index)".bytes
            connection.send(FramedWire.requestFrame(payload))
            guard let frame = connection.readFrames(1)?.first else { other.append("\(index): no frame"); continue }
            if frame == Frame(status: 0, body: payload) { served += 1 } else if frame.status == 2 { busy += 1 } else {
                other.append("\(index): \(frame)")
            }
        }
        #expect(served > 0 && busy > 0 && other.isEmpty, "served \(served), busy \(busy), other \(other.prefix(5))")
        #expect(served + busy == connections.count)

        // Recovery: once the clients leave, a new client is served.
        expectRecovery(closing: connections, server)
        #expect(server.process.isRunning)

        footprint.observe()
        server.signal(SIGTERM)
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log.suffix(3000))")
        F.expectNothingLeft(footprint)
    }

    /// Out of descriptors with no spare to free (at ENFILE another process takes the one freed;
    /// here the debug build starts without it, `POOL_DEBUG_NO_SPARE_FD`): the waiting clients can
    /// be neither accepted nor shed, so the master stops listening for 100 ms at a time instead
    /// of waking for them every turn (it spun), serves again once descriptors are free, and has
    /// its spare back for the next shortage.
    @Test func noSpareDescriptorAtTheLimitPausesTheListener() throws {
        let server = try F.ShellServer(prelude: "export POOL_DEBUG_NO_SPARE_FD=1; ulimit -n 64",
                                       F.framedEcho + ["--workers", "2", "--idle-timeout", "120"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 2))
        var connections: [F.Connection] = []
        for _ in 0..<100 {
            if let connection = try? F.Connection(path: server.socketPath, timeout: 20) { connections.append(connection) }
        }
        #expect(connections.count == 100)
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "none to spare").isEmpty }, "\(server.log.suffix(2000))")
        let ticks = try #require(F.cpuTicksUsed(by: server.pid, during: 1.0))
        #expect(ticks < 25, "the master used \(ticks) ticks of CPU in 1 s with clients it cannot accept (busy loop)")
        #expect(server.logLines(containing: "none to spare").count < 5, "one line per pause")

        expectRecovery(closing: connections, server)
        // The pause's end took a spare descriptor again: the next shortage answers busy.
        var again: [F.Connection] = []
        for _ in 0..<100 {
            if let connection = try? F.Connection(path: server.socketPath, timeout: 20) { again.append(connection) }
        }
        #expect(waitUntil(timeout: 20) {
            again.contains { connection in
                var probe = pollfd(fd: connection.fd, events: Int16(POLLIN), revents: 0)
                return poll(&probe, 1, 0) > 0 && connection.readFrames(1)?.first?.status == 2
            }
        }, "no connection was answered busy at the next shortage")
        for connection in again { connection.close() }
        footprint.observe()
        server.signal(SIGTERM)
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log.suffix(3000))")
        F.expectNothingLeft(footprint)
    }

    /// At the descriptor limit, a connection waiting on the control socket (`<socket>.ctl`, what
    /// `pool-server status` uses) must be dealt with like one on the client socket: no busy loop,
    /// and not left hanging.
    @Test func controlConnectionAtTheDescriptorLimitDoesNotSpinTheMaster() throws {
        let server = try F.ShellServer(prelude: "ulimit -n 64", F.framedEcho + ["--workers", "2", "--idle-timeout", "120"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 2))
        let base = F.descriptorCount(server.pid)
        var (connections, shed) = saturate(server, count: 200, baseDescriptors: base)
        #expect(shed > 0)
        let idle = try #require(F.cpuTicksUsed(by: server.pid, during: 1.0))
        #expect(idle < 25, "\(idle) ticks in 1 s before the control connection")

        let control = try F.Connection(path: server.socketPath + ".ctl", timeout: 5)
        // The master may shed the connection before this write lands (the write then fails with
        // EPIPE): what matters is that it does not spin and does not leave the client hanging.
        _ = control.send("status\n".bytes)
        usleep(300_000)
        let ticks = try #require(F.cpuTicksUsed(by: server.pid, during: 1.0))
        #expect(ticks < 25, "the master used \(ticks) ticks of CPU in 1 s with a control connection pending at the descriptor limit (busy loop)")
        let (_, end) = control.readToEnd()
        #expect(end != .timeout, "the control connection was left hanging (neither answered nor closed) at the descriptor limit")
        control.close()

        for connection in connections { connection.close() }
        connections = []
        var status = F.CommandResult(status: nil, stdout: "", stderr: "")
        _ = waitUntil(timeout: 20) {
            status = (try? F.run(Binaries.path("pool-server"), ["status", "--socket", server.socketPath], timeout: 10)) ?? status
            return status.status == 0
        }
        #expect(status.status == 0 && status.stdout.contains("\(server.pid)"), "status after recovery: \(status)")

        footprint.observe()
        server.signal(SIGTERM)
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log.suffix(3000))")
        F.expectNothingLeft(footprint)
    }

    /// A worker forked while the master is at its descriptor limit (here: recycled by
    /// `--max-jobs 1`) must still shed every inherited client socket. Listing /proc/self/fd needs a
    /// free descriptor, which neither the master nor its fresh child has there; the old code then
    /// kept all of them open in the worker (and the debug thread check trapped the master).
    @Test func workerForkedAtTheDescriptorLimitHoldsNoClientSocket() throws {
        let server = try F.ShellServer(prelude: "ulimit -n 64",
                                       F.framedEcho + ["--workers", "2", "--idle-timeout", "120", "--max-jobs", "1"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let first = Set(try #require(waitForWorkers(server, 2)))
        let workerBase = first.map(F.descriptorCount).max() ?? 0
        let base = F.descriptorCount(server.pid)
        let (connections, shed) = saturate(server, count: 200, baseDescriptors: base)
        #expect(shed > 0, "200 connections cannot fit under 64 descriptors")
        #expect(F.descriptorCount(server.pid) >= 60, "the master is not at its limit: \(F.descriptorCount(server.pid)) fds")

        // One job per worker: each then exits and is replaced while the master's table is full.
        var served = 0
        for (index, connection) in connections.enumerated() where served < 2 {
            let payload = "recycle-\(index)".bytes
            connection.send(FramedWire.requestFrame(payload))
            if let frame = connection.readFrames(1)?.first, frame == Frame(status: 0, body: payload) { served += 1 }
        }
        #expect(served == 2, "the accepted connections were not served")
        var fresh: [pid_t] = []
        let replaced = waitUntil(timeout: 20) {
            fresh = server.workerPIDs.filter { !first.contains($0) && processState($0) != "Z" }
            return fresh.count >= 1
        }
        #expect(replaced, "no worker was forked at the limit: \(server.log.suffix(2000))")
        for pid in fresh {
            let count = F.descriptorCount(pid)
            #expect(count <= workerBase, "worker \(pid) forked at the limit holds \(count) fds, one forked before \(workerBase)")
        }
        #expect(server.process.isRunning, "\(server.log.suffix(2000))")
        for connection in connections { connection.close() }

        footprint.observe()
        server.signal(SIGTERM)
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log.suffix(3000))")
        F.expectNothingLeft(footprint)
    }

    /// Started with descriptors 0–2 closed (`2>&-`, as some supervisors do) and `--log-file`: the file
    /// gets every line, before and after a reopen (SIGUSR1), and the stop's too. The file used to
    /// be opened on the free descriptor 2 and closed again by the same open-and-dup2 step, so
    /// nothing reached it and later descriptors (an eventfd, a socket) took its number.
    @Test func aLogFileGetsEveryLineWhenStderrStartsClosed() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let logPath = directory + "/pool.log"
        func read() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
        let server = try F.ShellServer(prelude: "exec 0<&- 1>&- 2>&-", F.framedEcho + ["--workers", "1", "--log-file", logPath],
                                       directory: directory, waitForStart: false)
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        try #require(waitUntil(timeout: 20) { read().contains("pool started") && !footprint.server.workerPIDs.isEmpty },
                     "nothing logged to the file:\n\(read())")
        // 0 and 1 were given /dev/null too, so no socket took their numbers.
        for fd in 0...1 {
            let target = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(server.pid)/fd/\(fd)")) ?? "closed"
            #expect(target == "/dev/null", "descriptor \(fd): \(target)")
        }
        server.signal(SIGUSR1)
        #expect(waitUntil(timeout: 20) { read().contains("log file reopened") }, "\(read())")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("logged".bytes).body == "logged".bytes)
        client.close()
        footprint.observe()
        server.signal(SIGTERM)
        #expect(server.waitForExit(timeout: 30) == 0, "\(read())")
        #expect(read().contains("shutdown complete"), "\(read())")
        F.expectNothingLeft(footprint, log: read())
    }

    /// The reply queue belongs to the workers (with `--user`, to their user), so anything running
    /// as that user can put a record in it. Forged ring references — one whose end overflows, one
    /// past what the worker wrote — are refused: the first trapped the master, the second moved
    /// the ring's head past replies not yet taken. Large replies through the ring stay exact.
    @Test func forgedReplyRecordsNeitherCrashTheMasterNorMoveTheRing() throws {
        let server = try TestServer(F.framedEcho + ["--workers", "1"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let workerQueues = spawnedQueueIDs(inLog: server.log)
        let replyQueue = try #require(Set(stateFileQueueIDs(server.stateFilePath)).subtracting(workerQueues).first, "\(server.log)")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        defer { client.close() }
        let large = [UInt8]((0..<5000).map { UInt8(truncatingIfNeeded: $0 &* 7) })
        #expect(try client.request(large).body == large, "a reply through the ring before")

        let forged = MessageBuffer(capacity: JobCodec.spilledRecordBytes)
        for position in [UInt64.max - 10, 1 << 20] {
            let length = JobCodec.encodeSpilledReply(id: 1 << 60, status: .ok, slot: 0, length: 100, position: position,
                                                     into: forged.text, at: 0)
            #expect(try MessageQueue(id: replyQueue).send(forged, type: JobCodec.replyType, length: length, nowait: true))
        }
        #expect(try client.request("after".bytes).body == "after".bytes, "the master did not survive the forged records")
        for round in 0..<20 {
            let body = large.map { $0 &+ UInt8(round) }
            #expect(try client.request(body).body == body, "round \(round): a reply through the ring came back wrong")
        }
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// LISTEN_PID naming the server with a LISTEN_FDS no process could have (a broken unit, a
    /// stray environment): not socket activation. The server binds its own socket and serves;
    /// the descriptor numbers from 3 on used to overflow Int32 and trap at start.
    @Test func aBogusListenFDsCountIsNotSocketActivation() throws {
        let server = try F.ShellServer(prelude: "export LISTEN_PID=$$ LISTEN_FDS=2147483647", F.framedEcho + ["--workers", "1"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        #expect(!server.log.contains("socket activation"), "\(server.log)")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("bound itself".bytes).body == "bound itself".bytes)
        client.close()
        footprint.observe()
        server.signal(SIGTERM)
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log.suffix(3000))")
        F.expectNothingLeft(footprint, log: server.log)
    }

    /// The master's stderr is a pipe whose reader has stopped reading (a wedged journald or
    /// `| tee`), full before the server starts. The master must serve anyway, dropping its lines;
    /// once the reader drains the pipe, the next line says how many were dropped. (Its blocking
    /// write used to stop the whole event loop at the first log line.)
    @Test func masterServesWhileItsLogPipeIsFull() throws {
        let directory = makeTemporaryDirectory()
        // The server's stop removes it too; this covers a failure before the server starts.
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let reader = try Self.fullFIFO(directory + "/log.fifo")
        defer { close(reader) }
        try Self.expectServedWhileTheLogIsFull(prelude: "exec 2>log.fifo", directory: directory, reader: reader)
    }

    /// The log pipe stays full through the whole stop: the stop's lines are dropped, and their count
    /// used to go out only ahead of a next line, of which there was none — the log ended without a
    /// trace of them. The exiting master waits (at most a second, its loop over) for the reader,
    /// and says how many it dropped.
    @Test func linesDroppedAtTheStopAreCountedAtTheExit() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let reader = try Self.fullFIFO(directory + "/log.fifo")
        defer { close(reader) }
        // Its exit waits up to 20 s here (1 s as shipped), so a slow test thread still finds it.
        let server = try F.ShellServer(prelude: "export POOL_DEBUG_EXIT_LOG_WAIT_MS=20000; exec 2>log.fifo",
                                       F.framedEcho + ["--workers", "1"], directory: directory, waitForStart: false)
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let served = waitUntil(timeout: 20) {
            guard let client = try? PoolClient(socketPath: server.socketPath, timeout: 5) else { return false }
            return (try? client.request("logless".bytes)) != nil
        }
        #expect(served, "not served while the log was full")
        footprint.observe()
        server.signal(SIGTERM)
        // The stop done, its lines dropped: the master waits for room in poll.
        let polls = try #require(SyscallNumber.polls, "no poll syscall numbers for this architecture")
        #expect(waitUntil(timeout: 20) { blockedSyscall(server.pid).map(polls.contains) == true || !server.process.isRunning },
                "the master did not wait for the log's reader")
        let text = String(decoding: Self.readUntilQuiet(reader), as: UTF8.self)
        #expect(server.waitForExit(timeout: 30) == 0)
        #expect(text.contains("log lines dropped") && text.contains("exiting"), "\(text.suffix(1000))")
        // The workers' exit lines were among those dropped: what is left is checked directly.
        let path = server.socketPath
        #expect(!fileExists(path) && !fileExists(path + ".ctl") && !fileExists(path + ".state"))
        #expect(!footprint.queues.isEmpty && existingQueueIDs().isDisjoint(with: footprint.queues))
        #expect(waitUntil(timeout: 5) { footprint.workers.allSatisfy { !processIsAlive($0) && processState($0) != "Z" } })
    }

    /// The same with the master's stderr on a terminal whose output is stopped (Ctrl-S; a stalled
    /// ssh session fills it likewise): a tty blocks its writers like a full pipe. (The master wrote
    /// to a terminal blocking, so the whole pool stopped with its output.)
    @Test(.enabled(if: fileExists("/dev/ptmx"), "needs pseudo-terminals (/dev/ptmx)"))
    func masterServesWhileItsLogTerminalIsStopped() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (terminal, name) = try #require(openPseudoTerminal())
        defer { close(terminal) }
        // Held open until the end, so the terminal does not hang up between its writers.
        let control = open(name, O_WRONLY | O_NOCTTY | O_NONBLOCK | O_CLOEXEC)
        try #require(control >= 0)
        defer { close(control) }
        #expect(isatty(control) == 1)
        // Ctrl-S: output stops, and every writer of the terminal waits (or gets EAGAIN) until Ctrl-Q.
        try #require(tcflow(control, TCOOFF) == 0)
        let probe: [UInt8] = [0x2E]
        #expect(write(control, probe, 1) == -1 && errno == EAGAIN, "the stopped terminal took a byte")
        try Self.expectServedWhileTheLogIsFull(prelude: "exec 2>\(name)", directory: directory, reader: terminal,
                                               resume: { #expect(tcflow(control, TCOON) == 0) })
    }

    /// A master run in the background of its controlling terminal (`pool-server &` under job
    /// control) with `stty tostop` set, logging to that terminal. Each write there raised SIGTTOU,
    /// which the master handles (scale down), so the write restarted forever: the master spun and
    /// never served. It writes with SIGTTOU blocked now, which lets the write through.
    @Test(.enabled(if: fileExists("/dev/ptmx") && fileExists("/bin/bash"), "needs pseudo-terminals and bash"))
    func masterInTheBackgroundOfATostopTerminalServes() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (terminal, name) = try #require(openPseudoTerminal())
        defer { close(terminal) }
        let socketPath = directory + "/pool.sock"
        let pidFile = directory + "/server.pid"
        // Job control (set -m) puts the server in a background process group of the session whose
        // controlling terminal this is (bash leads a new session and opens the terminal first).
        let script = "set -m; stty tostop || exit 9; \"$0\" --socket \(socketPath) --workers 1 \(F.framedEcho.joined(separator: " ")) & echo $! > \(pidFile); wait"
        let shell = try Self.spawnOnTerminal(["/bin/bash", "-c", script, Binaries.path("pool-server")], terminal: name)
        var shellStatus: Int32? = nil
        var server: pid_t = 0
        // A master stuck at its first log line (the defect) has not recorded its first queue yet:
        // that one is left; test.sh reports it with the failure and removes it (only it knows
        // which queues are new and no other pool's).
        defer { Self.endTerminalSession(shell, status: &shellStatus, master: server, socketPath: socketPath) }
        #expect(waitUntil(timeout: 20) {
            server = (try? String(contentsOfFile: pidFile, encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
            return server > 0 || !childIsRunning(shell, status: &shellStatus)
        }, "no server pid")
        try #require(server > 0, "the shell ended first (status \(String(describing: shellStatus)))")
        #expect(getpgid(server) != tcgetpgrp(terminal), "the server should be in a background process group")

        var reply: PoolClient.Response? = nil
        let served = waitUntil(timeout: 20) {
            guard let client = try? PoolClient(socketPath: socketPath, timeout: 5) else { return false }
            reply = try? client.request("in the background".bytes)
            return reply != nil
        }
        #expect(served && reply?.body == "in the background".bytes,
                "not served (master state \(String(describing: processState(server))), cpu ticks \(String(describing: cpuTicks(server))))")
        let queues = stateFileQueueIDs(socketPath + ".state")
        #expect(kill(server, SIGTERM) == 0)
        #expect(waitUntil(timeout: 30) { !childIsRunning(shell, status: &shellStatus) }, "the server did not stop")
        #expect(!fileExists(socketPath) && !fileExists(socketPath + ".ctl") && !fileExists(socketPath + ".state"))
        #expect(queues.count == 2 && existingQueueIDs().isDisjoint(with: queues), "queues \(queues) left: \(existingQueueIDs().intersection(queues))")
    }

    /// Another member of the master's background process group reads the terminal (a handler's
    /// child prompting, a pipeline's other end): the kernel sends SIGTTIN to the whole group. That
    /// is not an operator's "one worker more" — each such read used to add a worker. A SIGTTIN
    /// sent with kill still is.
    @Test(.enabled(if: fileExists("/dev/ptmx") && fileExists("/bin/bash"), "needs pseudo-terminals and bash"))
    func aTerminalsSIGTTINToTheMastersGroupDoesNotScale() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let (terminal, name) = try #require(openPseudoTerminal())
        defer { close(terminal) }
        let socketPath = directory + "/pool.sock"
        let pidFile = directory + "/server.pid", readerFile = directory + "/reader.pid"
        // The braces are one background job (its own process group; no job control inside), so
        // the server and the `cat` that becomes the subshell share that group. `cat` reads the
        // terminal only once the server's handlers are in place (the socket exists). The shell
        // becomes `sleep`: bash's `wait` would return when the job stops, and bash exiting with a
        // stopped job sends it SIGTERM.
        let logPath = directory + "/server.log"
        let server = "\"$0\" --socket \(socketPath) --workers 1 \(F.framedEcho.joined(separator: " ")) 2>\(logPath)"
        func log() -> String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }
        let script = "set -m; { \(server) & echo $! > \(pidFile); while [ ! -S \(socketPath) ]; do sleep 0.05; done; "
            + "echo $BASHPID > \(readerFile); exec cat; } & exec sleep 600"
        let shell = try Self.spawnOnTerminal(["/bin/bash", "-c", script, Binaries.path("pool-server")], terminal: name)
        var shellStatus: Int32? = nil
        func pid(in file: String) -> pid_t {
            (try? String(contentsOfFile: file, encoding: .utf8)).flatMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) } ?? 0
        }
        var master: pid_t = 0, reader: pid_t = 0
        defer {
            if reader > 0 { kill(reader, SIGKILL) }
            Self.endTerminalSession(shell, status: &shellStatus, master: master, socketPath: socketPath)
        }
        #expect(waitUntil(timeout: 20) {
            master = pid(in: pidFile)
            reader = pid(in: readerFile)
            return (master > 0 && reader > 0) || !childIsRunning(shell, status: &shellStatus)
        }, "no pids")
        try #require(master > 0 && reader > 0, "the shell ended first (status \(String(describing: shellStatus)))")
        #expect(getpgid(master) == getpgid(reader) && getpgid(master) != tcgetpgrp(terminal),
                "the server and the reader should share a background process group")
        // The reader's read stops it with SIGTTIN, sent to the whole group first.
        #expect(waitUntil(timeout: 20) { processState(reader) == "T" }, "the reader did not stop (state \(String(describing: processState(reader))))")
        #expect(waitUntil(timeout: 20) { !signalSet("ShdPnd", of: master, contains: SIGTTIN) }, "SIGTTIN still pending at the master")
        // The handler has run; three statuses in a row are answered in turns after the one that
        // takes its count, so a counted signal would show by the last.
        var slots: [Int] = []
        for _ in 0..<3 { slots.append(OperationsSupport.status(socketPath)?.workers.count ?? -1) }
        #expect(slots == [1, 1, 1], "slots after the terminal's SIGTTIN: \(slots)\n\(log())")
        // An operator's SIGTTIN still scales.
        #expect(kill(master, SIGTTIN) == 0)
        #expect(waitUntil(timeout: 20) { (OperationsSupport.status(socketPath)?.workers.count ?? 0) >= 2 }, "kill -TTIN did not add a worker")
        #expect(OperationsSupport.status(socketPath)?.workers.count == 2)

        let queues = stateFileQueueIDs(socketPath + ".state")
        kill(reader, SIGKILL)
        #expect(kill(master, SIGTERM) == 0)
        #expect(waitUntil(timeout: 30) { !processIsAlive(master) }, "the server did not stop")
        master = 0
        #expect(!fileExists(socketPath) && !fileExists(socketPath + ".ctl") && !fileExists(socketPath + ".state"))
        #expect(queues.count == 3 && existingQueueIDs().isDisjoint(with: queues), "queues \(queues) left: \(existingQueueIDs().intersection(queues))")
    }

    /// Ends what a test started on a terminal (`spawnOnTerminal`): the master (`master`, 0 if its
    /// pid was never read) stopped and the queues its state file records removed; any other pool
    /// process of the shell's session (a master whose pid file was not written yet: it is in a
    /// process group of its own that no SIGHUP reaches); then the shell.
    private static func endTerminalSession(_ shell: pid_t, status: inout Int32?, master: pid_t, socketPath: String) {
        if master > 0 {
            let queues = stateFileQueueIDs(socketPath + ".state")
            terminateGracefully(master) { !processIsAlive(master) }
            removeQueues(queues)
        }
        for member in sessionMembers(shell) where isPoolProcess(member) && member != master {
            terminateGracefully(member) { !processIsAlive(member) }
        }
        terminateGracefully(shell) { !childIsRunning(shell, status: &status) }
    }

    /// Starts `argv` as the leader of a new session whose controlling terminal is `terminal`
    /// (opened as stdin, stdout and stderr, without O_NOCTTY). The caller reaps it.
    private static func spawnOnTerminal(_ argv: [String], terminal: String) throws -> pid_t {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, terminal, O_RDWR, 0)
        posix_spawn_file_actions_adddup2(&actions, 0, 1)
        posix_spawn_file_actions_adddup2(&actions, 0, 2)
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signo in [SIGINT, SIGTERM, SIGCHLD, SIGPIPE, SIGHUP, SIGTTOU, SIGTTIN, SIGTSTP] { sigaddset(&defaults, signo) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        // POSIX_SPAWN_SETSID (glibc 2.26), a macro Swift does not import.
        let setsid: Int32 = 0x80
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF | setsid))
        return try spawn(argv, actions: &actions, attributes: &attributes)
    }

    /// Starts a framed echo pool whose stderr `prelude` points at a full log, expects a request
    /// served, then lets the log move again (`resume`, and draining `reader`, non-blocking) and
    /// expects the stop's lines to say how many lines were dropped.
    private static func expectServedWhileTheLogIsFull(prelude: String, directory: String, reader: Int32, resume: () -> Void = {},
                                                     sourceLocation: SourceLocation = #_sourceLocation) throws {
        // Workers log nothing per job at info level, so only the master writes to the log.
        let server = try F.ShellServer(prelude: prelude, F.framedEcho + ["--workers", "1"],
                                       directory: directory, waitForStart: false)
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        var reply: PoolClient.Response? = nil
        let served = waitUntil(timeout: 20) {
            guard let client = try? PoolClient(socketPath: server.socketPath, timeout: 5) else { return false }
            reply = try? client.request("logless".bytes)
            return reply != nil
        }
        #expect(served && reply?.isOK == true && reply?.body == "logless".bytes,
                "not served while the log was full: \(String(describing: reply))", sourceLocation: sourceLocation)

        // The reader catches up; the stop's lines then get through, the first saying what was lost.
        resume()
        _ = readUntilQuiet(reader)
        footprint.observe()
        server.signal(SIGTERM)
        #expect(server.waitForExit(timeout: 30) == 0, sourceLocation: sourceLocation)
        let text = String(decoding: readUntilQuiet(reader), as: UTF8.self)
        #expect(text.contains("log lines dropped") && text.contains("dropped="), "\(text.suffix(2000))", sourceLocation: sourceLocation)
        // A line cut short by the full output is ended before the next: no line holds two.
        let stamp = #/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /#
        let runOn = text.split(whereSeparator: \.isNewline).filter { $0.matches(of: stamp).count > 1 }
        #expect(runOn.isEmpty, "lines run together: \(runOn.prefix(3))", sourceLocation: sourceLocation)
        F.expectNothingLeft(footprint, log: text, sourceLocation: sourceLocation)
    }

    /// Makes a FIFO at `path` and fills it: the pipe holds what it holds, then refuses (EAGAIN).
    /// Returns its reader (non-blocking), which keeps it open; the caller closes it.
    private static func fullFIFO(_ path: String) throws -> Int32 {
        #expect(mkfifo(path, 0o600) == 0)
        let reader = open(path, O_RDONLY | O_NONBLOCK | O_CLOEXEC)
        try #require(reader >= 0)
        let filler = open(path, O_WRONLY | O_NONBLOCK | O_CLOEXEC)
        guard filler >= 0 else {
            close(reader)
            throw TestFailure("open \(path) for writing: \(String(cString: strerror(errno)))")
        }
        let block = [UInt8](repeating: 0x2E, count: 4096)
        var filled = 0
        while case let n = block.withUnsafeBytes({ write(filler, $0.baseAddress, $0.count) }), n > 0 { filled += n }
        close(filler)
        #expect(filled >= 4096, "the pipe took \(filled) bytes")
        return reader
    }

    /// Reads `fd` (non-blocking) until nothing more arrives for 0.3 s. A terminal passes what its
    /// writer wrote on to its reader asynchronously, so "nothing now" is not "nothing left".
    private static func readUntilQuiet(_ fd: Int32) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
        while poll(&ready, 1, 300) > 0 {
            let n = read(fd, &chunk, chunk.count)
            if n > 0 { bytes += chunk[0..<n] } else if n == 0 || errno != EAGAIN && errno != EINTR { break }
        }
        return bytes
    }

    /// 2000 non-blocking connects while the master is stopped (SIGSTOP), so they overflow its
    /// listen backlog (EAGAIN beyond it). After SIGCONT the master is alive and serves old and new
    /// connections, and after they all close, new ones.
    @Test(.enabled(if: F.ensureDescriptorLimit(2400), "needs 2400 descriptors (the hard nofile limit is lower)"))
    func connectionFloodBeyondTheListenBacklog() throws {
        let server = try TestServer(F.framedEcho + ["--workers", "2"])
        let footprint = F.Footprint(server)
        var flood: [Int32] = []
        var stopped = false
        defer {
            if stopped { kill(server.pid, SIGCONT) }
            for fd in flood { close(fd) }
            server.stop()
            footprint.removeLeftovers()
        }
        let warmup = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try warmup.request("before".bytes).isOK)
        warmup.close()

        kill(server.pid, SIGSTOP)
        stopped = true
        #expect(waitUntil(timeout: 10) { processState(server.pid) == "T" })
        var wouldBlock = 0
        var otherErrors: [Int32: Int] = [:]
        for _ in 0..<2000 {
            let (fd, error) = F.connectNonBlocking(server.socketPath)
            if let fd { flood.append(fd) } else if error == EAGAIN { wouldBlock += 1 } else { otherErrors[error, default: 0] += 1 }
        }
        kill(server.pid, SIGCONT)
        stopped = false
        #expect(wouldBlock > 0, "2000 connects should overflow the backlog: \(flood.count) connected")
        #expect(otherErrors.isEmpty, "connected \(flood.count), other errors \(otherErrors)")
        try #require(!flood.isEmpty, "no connection of the flood was accepted into the backlog")

        // Alive and serving: a new client, and connections from the flood itself.
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("after flood".bytes).body == "after flood".bytes)
        client.close()
        for fd in [flood[0], flood[flood.count - 1]] {
            let frame = FramedWire.requestFrame("flooded".bytes)
            let sent = frame.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            #expect(sent == frame.count)
            var pfd = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            var reply: [UInt8] = []
            while reply.count < 12, poll(&pfd, 1, 20_000) > 0 {
                var chunk = [UInt8](repeating: 0, count: 64)
                let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
                if n <= 0 { break }
                reply += chunk[0..<n]
            }
            #expect(F.parseResponses(reply).frames == [Frame(status: 0, body: "flooded".bytes)], "\(reply)")
        }
        for fd in flood { close(fd) }
        flood = []
        #expect(server.process.isRunning)
        let later = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try later.request("later".bytes).body == "later".bytes)
        later.close()
        F.expectCleanExit(server, footprint)
    }

    /// `ipcrm -q` of the live worker queue while its worker handles a job with two more queued:
    /// the job in hand is answered, the two lost with the queue get 5, the master creates a new
    /// queue ("was removed from outside"), records it in the state file, and serves again; after
    /// shutdown neither the old nor the new queue exists.
    /// With `--spill-bytes 1` the jobs lost with the queue had their payloads in the arena: their
    /// chunks are taken back.
    @Test(arguments: [[], ["--spill-bytes", "1"]])
    func removedWorkerQueueIsRecreated(spill: [String]) throws {
        let server = try TestServer(F.framedSim + ["--workers", "1"] + spill)
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let worker = try #require(waitForWorkers(server, 1)?.first)
        let old = try #require(server.queueIDs.first)

        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let payloads = ["sleep:5000", "a", "b"].map(\.bytes)
        for payload in payloads { try client.send(payload) }
        #expect(waitUntil(timeout: 20) {
            guard let status = try? MessageQueue(id: old).status() else { return false }
            return status.lastReceivePID == worker && status.messages == 2
        })
        try MessageQueue(id: old).remove()

        let responses = try payloads.map { _ in try client.receive() }
        #expect(Self.statuses(responses) == [0, 5, 5], "\(responses.map { F.Frame(status: $0.statusByte, body: $0.body) })")
        #expect(responses.first?.body == payloads[0])

        let recreated = server.logLines(containing: "was removed from outside")
        #expect(recreated.count == 1 && recreated.first.map { F.line($0, has: "old", "\(old)") } == true, "\(server.log)")
        let new = try #require(recreated.first.flatMap(F.createdQueue(in:)))
        footprint.observe()
        #expect(new != old)
        #expect(existingQueueIDs().contains(new) && !existingQueueIDs().contains(old))
        let recorded = stateFileQueueIDs(server.stateFilePath)
        #expect(recorded.contains(new) && !recorded.contains(old), "state file: \(recorded)")
        #expect(try MessageQueue(id: new).status().mode & 0o777 == 0o600)
        #expect(server.logLines(containing: "worker died").contains { F.line($0, has: "pid", "\(worker)") && $0.contains("status=exit 3") })

        let after = (0..<10).map { "after-\($0)".bytes }
        let served = try client.pipeline(after)
        #expect(Self.statuses(served) == Array(repeating: 0, count: 10))
        #expect(served.map(\.body) == after)
        if !spill.isEmpty { Self.expectArenaSettles(server, spilled: 13) }
        client.close()
        F.expectCleanExit(server, footprint)
        #expect(!existingQueueIDs().contains(new) && !existingQueueIDs().contains(old))
    }

    /// Ack mode, `--dispatch shared`: `ipcrm -q` of the one queue while every worker runs a long
    /// job and three acknowledged messages wait in it. Their clients were told "ok", so the log
    /// names exactly those three jobs (it used to say only that some were lost), and not the
    /// jobs the workers had taken before: one finished, the long ones in hand. With 2 workers the
    /// first one reaped finds the queue gone while the other still reads it: the jobs are named
    /// once that one has exited too. Each worker has cleared its inbox for its next receive by
    /// then, so how far the queue was read comes from the id it noted when it took its message.
    @Test(arguments: [1, 2])
    func removedSharedQueueNamesTheAcknowledgedJobsItTook(workers: Int) throws {
        let server = try TestServer(["--workers", "\(workers)"] + Self.sharedAckSim)
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let started = try #require(waitForWorkers(server, workers))
        let old = try #require(server.queueIDs.first)
        // Job ids count from 1 in arrival order: "first" is 1, the long jobs follow, then the three.
        try Self.sendAcknowledged(server, "first")
        #expect(waitUntil { (try? MessageQueue(id: old).status())?.messages == 0 })
        try Self.removeSharedQueueWithThreeWaiting(server, old, behind: (0..<workers).map { "sleep:\(2000 + 500 * $0)" })

        let named = UInt64(2 + workers)...UInt64(4 + workers)
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "acknowledged messages lost with the removed shared queue").isEmpty },
                "\(server.log)")
        let lines = server.logLines(containing: "acknowledged messages lost with the removed shared queue")
        #expect(lines.count == 1 && lines.allSatisfy {
            $0.contains("jobs=\(Array(named))") && F.line($0, has: "count", "3") && F.line($0, has: "queue", "\(old)")
        }, "\(lines)")
        #expect(server.logLines(containing: "was removed from outside").count == 1, "\(server.log)")
        if workers > 1 {
            #expect(server.logLines(containing: "named once its last reader has exited").count == 1, "\(server.log)")
        }
        // The pool serves again, from the new queue, with new workers.
        #expect(waitUntil { let pids = server.workerPIDs; return pids.count == workers && Set(pids).isDisjoint(with: started) })
        try Self.sendAcknowledged(server, "after")
        F.expectCleanExit(server, footprint)
        #expect(!existingQueueIDs().contains(old))
    }

    static let sharedAckSim = ["--dispatch", "shared", "--handler", "sim", "--batch-time", "0"]

    static func sendAcknowledged(_ server: TestServer, _ message: String, sourceLocation: SourceLocation = #_sourceLocation) throws {
        #expect(try PoolClient.oneshot(socketPath: server.socketPath, message: message.bytes, timeout: 30) == "ok".bytes,
                sourceLocation: sourceLocation)
    }

    /// Ack mode, shared queue `old`: every worker takes one of `longJobs`, then "a", "b" and "c"
    /// wait in the queue, which is removed from outside.
    static func removeSharedQueueWithThreeWaiting(_ server: TestServer, _ old: Int32, behind longJobs: [String],
                                                  sourceLocation: SourceLocation = #_sourceLocation) throws {
        for job in longJobs { try sendAcknowledged(server, job, sourceLocation: sourceLocation) }
        #expect(waitUntil { (try? MessageQueue(id: old).status())?.messages == 0 }, "every worker should hold a long job",
                sourceLocation: sourceLocation)
        for message in ["a", "b", "c"] { try sendAcknowledged(server, message, sourceLocation: sourceLocation) }
        #expect((try? MessageQueue(id: old).status())?.messages == 3, sourceLocation: sourceLocation)
        try MessageQueue(id: old).remove()
    }

    /// The same with a forced stop (a second SIGINT) while a reader of the removed queue still runs
    /// a long job: the first worker's exit found the queue gone and said its messages may be lost;
    /// the forced stop kills the other reader and names them then (it used to reap without a word).
    @Test func forcedStopNamesTheJobsARemovedSharedQueueTook() throws {
        let server = try TestServer(["--workers", "2"] + Self.sharedAckSim)
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 2))
        let old = try #require(server.queueIDs.first)
        try Self.removeSharedQueueWithThreeWaiting(server, old, behind: ["sleep:2500", "sleep:60000"])
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "may be lost; they are named once its last reader has exited").isEmpty },
                "\(server.log)")
        #expect(server.logLines(containing: "acknowledged messages lost with the removed shared queue").isEmpty)

        footprint.observe()
        server.signal(SIGINT)
        #expect(waitUntil { !server.logLines(containing: "shutdown: stopped accepting").isEmpty }, "the SIGINT was not taken")
        server.signal(SIGINT)
        let status = server.waitForExit(timeout: 30)
        #expect(status == 1, "a second SIGINT is a forced stop (status 1), got \(String(describing: status))")
        let lines = server.logLines(containing: "acknowledged messages lost with the removed shared queue")
        #expect(lines.count == 1 && lines.allSatisfy { $0.contains("jobs=[3, 4, 5]") && F.line($0, has: "count", "3") }, "\(server.log)")
        F.expectNothingLeft(footprint)
        #expect(!existingQueueIDs().contains(old))
    }

    /// `ipcrm -q` of the reply queue: the master creates a new one (recorded in the state file),
    /// restarts the workers so they send to it, and serves again; after shutdown neither queue
    /// exists. (It used to stop the whole pool, with exit status 0.)
    @Test func removedReplyQueueIsRecreated() throws {
        let server = try TestServer(F.framedEcho + ["--workers", "2"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let workers = try #require(waitForWorkers(server, 2))
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("before".bytes).body == "before".bytes)
        let old = try #require(Set(stateFileQueueIDs(server.stateFilePath)).subtracting(server.queueIDs).first)

        try MessageQueue(id: old).remove()
        // The master finds out on its next loop turn; a request makes one. Its reply can only
        // have gone to the removed queue, so it is answered 5 (worker died), never ok.
        let wake = try client.request("wake".bytes)
        #expect(wake.statusByte == ResponseStatus.workerDied.rawValue, "\(wake)")
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "reply queue was removed from outside").isEmpty }, "\(server.log)")
        // Both workers are restarted (they held the old id) before the pool serves again.
        #expect(waitUntil(timeout: 20) {
            let alive = Set(server.workerPIDs)
            return alive.count == 2 && alive.isDisjoint(with: workers)
        }, "the workers were not restarted: \(server.workerPIDs) (before: \(workers))")
        footprint.observe()
        let recorded = Set(stateFileQueueIDs(server.stateFilePath))
        let new = try #require(recorded.subtracting(server.queueIDs).first)
        #expect(new != old && existingQueueIDs().contains(new) && !recorded.contains(old), "state file: \(recorded)")

        let after = (0..<10).map { "after-\($0)".bytes }
        let served = try client.pipeline(after)
        #expect(Self.statuses(served) == Array(repeating: 0, count: 10))
        #expect(served.map(\.body) == after)
        client.close()
        F.expectCleanExit(server, footprint)
        #expect(!existingQueueIDs().contains(new))
    }

    /// A worker's queue removed from outside whose replacement cannot be created at first
    /// (POOL_DEBUG_FAIL_QUEUES: the 3rd creation, after the worker's and the reply queue): the
    /// failure is logged, naming the slot (nothing said why the slot's workers kept dying), and
    /// the next respawn's try succeeds, so the pool serves again.
    @Test func aQueueThatCannotBeRecreatedAtOnceIsLoggedAndRetried() throws {
        let server = try TestServer(F.framedEcho + ["--workers", "1"], environment: Self.debugEnvironment("POOL_DEBUG_FAIL_QUEUES", "3"))
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        try #require(waitForWorkers(server, 1) != nil, "\(server.log)")
        let queue = try #require(server.queueIDs.first)
        footprint.observe()
        try MessageQueue(id: queue).remove()
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "no new one could be created; retrying at its next respawn").isEmpty },
                "\(server.log.suffix(3000))")
        #expect(waitUntil(timeout: 30) { !server.logLines(containing: "was removed from outside (ipcrm?); created").isEmpty },
                "\(server.log.suffix(3000))")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(waitUntil(timeout: 30) { (try? client.request("again".bytes))?.body == "again".bytes }, "\(server.log.suffix(3000))")
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// The reply queue removed and no new one possible (POOL_DEBUG_FAIL_QUEUES: the 4th queue
    /// creation, after the two workers' and the reply queue, fails as at kernel.msgmni): the
    /// request in flight is answered 6 and the master stops, exit 1, leaving nothing. The stop is
    /// begun after the turn's reaps (this can happen while reaping, and the stop's first steps
    /// must not signal a pid just reaped).
    @Test func aReplyQueueThatCannotBeRecreatedStopsThePool() throws {
        let server = try TestServer(F.framedEcho + ["--workers", "2"], environment: Self.debugEnvironment("POOL_DEBUG_FAIL_QUEUES", "4"))
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        try #require(waitForWorkers(server, 2) != nil, "\(server.log)")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("before".bytes).body == "before".bytes)
        let replyQueue = try #require(Set(stateFileQueueIDs(server.stateFilePath)).subtracting(server.queueIDs).first)
        footprint.observe()
        try MessageQueue(id: replyQueue).remove()
        let wake = try client.request("wake".bytes)
        #expect(wake.statusByte == ResponseStatus.shuttingDown.rawValue || wake.statusByte == ResponseStatus.workerDied.rawValue, "\(wake)")
        #expect(server.waitForExit(timeout: 30) == 1, "\(server.log.suffix(3000))")
        #expect(!server.logLines(containing: "no new one could be created; stopping").isEmpty, "\(server.log.suffix(3000))")
        client.close()
        F.expectNothingLeft(footprint, log: server.log)
    }

    /// The reply queue removed while two jobs run and four wait in the job queues: only the two a
    /// worker had taken are answered 5 (their replies go to the removed queue); the four never
    /// taken are kept and run by the restarted workers, answered ok, in order. (All six were
    /// answered 5 and the four then ran anyway: a client retrying ran them twice.)
    @Test func jobsNotYetTakenSurviveARemovedReplyQueue() throws {
        let server = try TestServer(F.framedSim + ["--workers", "2", "--batch-time", "0"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 2))
        let replyQueue = MessageQueue(id: try #require(Set(stateFileQueueIDs(server.stateFilePath)).subtracting(server.queueIDs).first))
        let client = try PoolClient(socketPath: server.socketPath, timeout: 60)
        // Round-robin, one job a message: the first two run (6 s: time enough to remove the
        // queue while they do), two more wait in each queue.
        let jobs = ["sleep:6000", "sleep:6000", "a", "b", "c", "d"]
        for job in jobs { try client.send(job.bytes) }
        try #require(waitUntil(timeout: 20) {
            OperationsSupport.status(server.socketPath)?.workers.filter { $0.state == "busy" }.count == 2
        }, "both workers should be running a job")
        try replyQueue.remove()
        // The master finds out at its next drain; a request makes a loop turn.
        try client.send("wake".bytes)
        let answers = try (0..<7).map { _ in try client.receive() }
        client.close()
        #expect(Self.statuses(answers) == [5, 5, 0, 0, 0, 0, 0], "\(server.log.suffix(2000))")
        #expect(answers.dropFirst(2).map(\.body) == (jobs.dropFirst(2) + ["wake"]).map(\.bytes))
        #expect(!server.logLines(containing: "reply queue was removed from outside").isEmpty)
        F.expectCleanExit(server, footprint)
    }

    /// Replies lost with a removed reply queue (the master stopped while they arrived) are
    /// answered 5; the jobs they answered must not be thought still queued: scaling down then
    /// retires the slot once, and the stop completes before its deadline. (The books kept them,
    /// and the retired slot was respawned and re-quit in a loop.)
    @Test func lostRepliesDoNotKeepARetiredSlotAlive() throws {
        let server = try TestServer(F.framedSim + ["--workers", "2", "--shutdown-timeout", "10"])
        let footprint = F.Footprint(server)
        defer { kill(server.pid, SIGCONT); server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 2))
        let replyQueue = MessageQueue(id: try #require(Set(stateFileQueueIDs(server.stateFilePath)).subtracting(server.queueIDs).first))
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        // Queued to the workers; the master is stopped while they run, so their replies wait in
        // the reply queue when it is removed.
        for _ in 0..<4 { try client.send("sleep:1000".bytes) }
        #expect(waitUntil(timeout: 20) {
            OperationsSupport.status(server.socketPath)?.workers.filter { $0.state == "busy" }.count == 2
        }, "both workers should be running a job")
        kill(server.pid, SIGSTOP)
        #expect(waitUntil(timeout: 20) { processState(server.pid) == "T" })
        #expect(waitUntil(timeout: 20) { ((try? replyQueue.status())?.messages ?? 0) > 0 }, "no reply arrived")
        try replyQueue.remove()
        kill(server.pid, SIGCONT)
        let answers = try (0..<4).map { _ in try client.receive() }
        #expect(answers.contains { $0.statusByte == ResponseStatus.workerDied.rawValue }, "\(Self.statuses(answers))")
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "reply queue was removed from outside").isEmpty })

        let spawnedBefore = server.logLines(containing: "worker spawned").count
        server.signal(SIGTTOU)
        #expect(waitUntil(timeout: 20) {
            guard let status = OperationsSupport.status(server.socketPath) else { return false }
            return status.workers.count == 1 && status.settled
        }, "the pool did not settle at 1 worker")
        let spawned = server.logLines(containing: "worker spawned").count - spawnedBefore
        #expect(spawned <= 4, "\(spawned) workers spawned after the scale-down")
        client.close()
        server.signal(SIGTERM)
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log.suffix(3000))")
        #expect(server.logLines(containing: "--shutdown-timeout reached").isEmpty)
        F.expectCleanExit(server, footprint, alreadySignalled: true)
    }

    /// A worker being retired (scaled down) that ends before taking its quit — here recycled by
    /// --max-jobs — keeps its slot until its queue is drained: every acknowledged message still
    /// runs, exactly once. (Its queue used to be removed with the messages in it.)
    @Test func retiredWorkerEndingEarlyStillDrainsItsQueue() throws {
        let server = try TestServer(["--workers", "2", "--handler", "log", "--dispatch", "round-robin",
                                     "--batch-time", "0", "--max-jobs", "3"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 2))
        // Both workers are frozen while messages pile up in their queues, so that no slot is
        // spare and scaling down retires the highest, slot 1; its quit goes behind its messages;
        // then its worker runs 3 jobs and is recycled.
        let spawned = server.logLines(containing: "worker spawned").first { F.line($0, has: "slot", "1") }
        let worker = pid_t(try #require(spawned.flatMap { intField($0, "pid") }))
        let workers = server.workerPIDs
        for frozen in workers { kill(frozen, SIGSTOP) }
        defer { for frozen in workers { kill(frozen, SIGCONT) } }
        #expect(waitUntil(timeout: 20) { workers.allSatisfy { processState($0) == "T" } }, "the workers did not stop")
        let messages = (0..<20).map { "retire-\($0)" }
        for message in messages {
            #expect(try PoolClient.oneshot(socketPath: server.socketPath, message: message.bytes, timeout: 30) == "ok".bytes)
        }
        server.signal(SIGTTOU)
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "scale down: retiring slot 1").isEmpty })
        #expect(workers.contains(worker))
        for frozen in workers { kill(frozen, SIGCONT) }
        #expect(waitUntil(timeout: 30) {
            let counts = F.recvMessages(inLog: server.log).reduce(into: [String: Int]()) { $0[$1, default: 0] += 1 }
            return messages.allSatisfy { counts[$0] != nil }
        }, "acknowledged messages were not run: \(Set(messages).subtracting(F.recvMessages(inLog: server.log)).sorted())")
        let counts = F.recvMessages(inLog: server.log).reduce(into: [String: Int]()) { $0[$1, default: 0] += 1 }
        #expect(messages.allSatisfy { counts[$0] == 1 }, "run more than once: \(counts.filter { $0.value > 1 })")
        #expect(server.logLines(containing: "not run").isEmpty && server.logLines(containing: "lost").isEmpty, "\(server.log)")
        F.expectCleanExit(server, footprint)
    }

    /// Workers that end without taking their quit (here SIGTERMed directly, as systemd's
    /// KillMode=control-group does along with the master's) leave quits in the shared queue. The
    /// stop completes anyway: leftover quits get no replacement worker. (Counting them as work
    /// respawned and re-quit workers in a loop until --shutdown-timeout.)
    @Test func leftoverQuitsInTheSharedQueueDoNotRespawnWorkers() throws {
        let server = try TestServer(F.framedEcho + ["--dispatch", "shared", "--workers", "2", "--shutdown-timeout", "10"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let workers = try #require(waitForWorkers(server, 2))
        // Stopped workers are out of msgrcv, so the quits the master sends stay in the queue.
        for worker in workers { kill(worker, SIGSTOP) }
        defer { for worker in workers { kill(worker, SIGCONT) } }
        #expect(waitUntil(timeout: 20) { workers.allSatisfy { processState($0) == "T" } }, "the workers did not stop")
        server.signal(SIGTERM)
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "asking workers to quit").isEmpty }, "\(server.log)")
        let queue = MessageQueue(id: try #require(server.queueIDs.first))
        #expect(waitUntil(timeout: 20) { (try? queue.status())?.messages == 2 }, "two quits should be queued")
        // Resumed with SIGTERM pending, each leaves without taking a quit.
        for worker in workers { kill(worker, SIGTERM); kill(worker, SIGCONT) }
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log.suffix(3000))")
        #expect(server.logLines(containing: "--shutdown-timeout reached").isEmpty, "\(server.log.suffix(3000))")
        let spawns = server.logLines(containing: "worker spawned").count
        #expect(spawns == 2, "\(spawns) workers spawned")
        F.expectCleanExit(server, footprint, alreadySignalled: true)
    }

    // MARK: - 7. Security

    /// Socket, control socket and queues are 0600: another user (nobody) cannot connect to the
    /// socket (PermissionError) or send to a queue (msgsnd: Permission denied).
    @Test(.enabled(if: canRunAsNobody, "needs root, runuser and /usr/bin/python3"))
    func socketAndQueuesRefuseOtherUsers() throws {
        let server = try TestServer(F.framedEcho + ["--workers", "2"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        // nobody must be able to reach the socket's directory, so that only the socket's own
        // mode can stop it.
        #expect(chmod(server.directory, 0o755) == 0)

        for path in [server.socketPath, server.socketPath + ".ctl"] {
            var st = stat()
            #expect(lstat(path, &st) == 0)
            #expect(st.st_mode & S_IFMT == S_IFSOCK && st.st_mode & 0o777 == 0o600,
                    "\(path): mode \(String(st.st_mode & 0o7777, radix: 8))")
        }
        let queues = stateFileQueueIDs(server.stateFilePath)
        #expect(queues.count == 3)
        for queue in queues {
            let status = try MessageQueue(id: queue).status()
            #expect(status.mode & 0o777 == 0o600 && status.uid == 0, "queue \(queue): mode \(String(status.mode, radix: 8))")
        }

        let connect = "import socket, sys\ns = socket.socket(socket.AF_UNIX)\ns.connect(sys.argv[1])\nprint('connected')"
        for path in [server.socketPath, server.socketPath + ".ctl"] {
            let asRoot = try F.run(python, ["-c", connect, path])
            #expect(asRoot.status == 0 && asRoot.stdout.contains("connected"), "root should connect: \(asRoot)")
            let asNobody = try F.run(runuser, ["-u", "nobody", "--", python, "-c", connect, path])
            #expect(asNobody.status != 0 && asNobody.stderr.contains("PermissionError"), "nobody must not connect to \(path): \(asNobody)")
        }

        // A copy of csysv-demo nobody can surely execute.
        let demo = server.directory + "/csysv-demo"
        try FileManager.default.copyItem(atPath: Binaries.path("csysv-demo"), toPath: demo)
        #expect(chmod(demo, 0o755) == 0)
        for queue in queues {
            let result = try F.run(runuser, ["-u", "nobody", "--", demo, "send", "\(queue)"])
            #expect(result.status == 1 && result.stdout.contains("msgsnd: Permission denied"), "queue \(queue): \(result)")
            #expect(try MessageQueue(id: queue).status().messages == 0)
        }
        try? FileManager.default.removeItem(atPath: demo)

        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("still fine".bytes).body == "still fine".bytes)
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// --allow-uid: a peer whose uid is not listed is closed without an answer ("not in
    /// --allow-uid"), a listed one is served — even with the socket open to everyone (0666).
    @Test(.enabled(if: canRunAsNobody, "needs root, runuser and /usr/bin/python3"))
    func allowUIDRefusesUnlistedPeers() throws {
        let refusing = try TestServer(F.framedEcho + ["--workers", "1", "--allow-uid", "12345"])
        let refusingFootprint = F.Footprint(refusing)
        defer { refusing.stop(); refusingFootprint.removeLeftovers() }
        let connection = try F.Connection(path: refusing.socketPath, timeout: 20)
        connection.send(FramedWire.requestFrame("let me in".bytes))
        let (bytes, end) = connection.readToEnd()
        #expect(bytes.isEmpty && (end == .eof || end == .reset), "uid 0 is not allowed: got \(bytes) \(end)")
        connection.close()
        #expect(waitUntil(timeout: 10) {
            refusing.logLines(containing: "not in --allow-uid").contains { F.line($0, has: "uid", "0") }
        }, "\(refusing.log)")
        F.expectCleanExit(refusing, refusingFootprint)

        let admitting = try TestServer(F.framedEcho + ["--workers", "1", "--allow-uid", "0", "--socket-mode", "0666"])
        let admittingFootprint = F.Footprint(admitting)
        defer { admitting.stop(); admittingFootprint.removeLeftovers() }
        #expect(chmod(admitting.directory, 0o755) == 0)
        let client = try PoolClient(socketPath: admitting.socketPath, timeout: 30)
        #expect(try client.request("root is in".bytes).body == "root is in".bytes)
        client.close()
        // nobody gets through the 0666 socket but not through --allow-uid 0: closed, no answer.
        let probe = """
        import socket, sys
        s = socket.socket(socket.AF_UNIX)
        s.connect(sys.argv[1])
        s.settimeout(20)
        try:
            s.sendall(b'\\x00\\x00\\x00\\x02hi')
        except OSError:
            pass
        try:
            data = s.recv(100)
        except ConnectionResetError:
            data = b''
        print(len(data))
        """
        let asNobody = try F.run(runuser, ["-u", "nobody", "--", python, "-c", probe, admitting.socketPath])
        #expect(asNobody.status == 0 && asNobody.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "\(asNobody)")
        #expect(waitUntil(timeout: 10) {
            admitting.logLines(containing: "not in --allow-uid").contains { F.line($0, has: "uid", "65534") }
        }, "\(admitting.log)")
        F.expectCleanExit(admitting, admittingFootprint)
    }

    // MARK: - 8. Load while a worker is killed, then a stop under load

    /// 8 threads send `c<thread>-<n>` (oneshot, ack) continuously; a worker is SIGKILLed in the
    /// middle; then SIGTERM arrives while they are still sending. Exit 0; every acknowledged
    /// message is logged exactly once, except at most one per "acknowledged message lost" line
    /// (the job the killed worker had in hand); none is logged twice, none without an ok.
    @Test func acknowledgedMessagesSurviveAKilledWorkerAndAStopUnderLoad() throws {
        let server = try TestServer(["--workers", "3", "--handler", "log"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let initial = try #require(waitForWorkers(server, 3))

        let record = F.LoadRecord()
        let threads = 8
        F.startOneshotLoad(path: server.socketPath, threads: threads, record: record)
        var finishedCleanly = false
        defer {
            // Never leave the senders running into the next test.
            record.stopping = true
            if !finishedCleanly { server.stop(); _ = waitUntil(timeout: 60) { record.finishedCount == threads } }
        }

        #expect(waitUntil(timeout: 30) { record.acknowledgedCount >= 200 }, "the load never got going")
        usleep(700_000)
        let victim = initial[1]
        kill(victim, SIGKILL)
        #expect(waitUntil(timeout: 20) {
            let now = server.workerPIDs
            return now.count == 3 && !now.contains(victim)
        }, "no replacement for \(victim)")
        let beforeStop = record.acknowledgedCount
        #expect(waitUntil(timeout: 30) { record.acknowledgedCount >= beforeStop + 200 }, "no progress after the kill")

        footprint.observe()
        record.stopping = true
        server.signal(SIGTERM)
        #expect(waitUntil(timeout: 60) { record.finishedCount == threads }, "the senders did not finish")
        finishedCleanly = true
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log.suffix(3000))")

        let log = server.log
        let acknowledged = record.acknowledgedMessages
        var counts: [String: Int] = [:]
        for message in F.recvMessages(inLog: log) where message.hasPrefix("c") { counts[message, default: 0] += 1 }
        let missing = acknowledged.filter { counts[$0] == nil }
        let lostLines = F.lines(log, containing: "acknowledged message lost")
        let twice = counts.filter { $0.value > 1 }.map(\.key).sorted()
        let unacknowledged = Set(counts.keys).subtracting(acknowledged).sorted()
        #expect(Set(acknowledged).count == acknowledged.count)
        #expect(missing.count <= lostLines.count,
                "\(missing.count) acknowledged message(s) never handled (\(missing.prefix(10))), only \(lostLines.count) reported lost: \(lostLines)")
        #expect(lostLines.count <= 1, "only the killed worker's job in hand can be lost: \(lostLines)")
        #expect(twice.isEmpty, "handled more than once: \(twice.prefix(10))")
        #expect(unacknowledged.isEmpty, "handled without an ok: \(unacknowledged.prefix(10))")
        #expect(record.errorsBeforeStop.isEmpty, "client errors before the stop: \(record.errorsBeforeStop.prefix(5))")
        // Before the stop only busy may replace ok. After it, "error: shutting down", or nothing
        // at all: a connection still in the listen backlog, or accepted with its message unread,
        // is closed when the listener goes (PoolClient.oneshot reads that as an empty reply).
        let early = record.otherReplies(afterStop: false).keys.filter { $0 != "error: busy" }
        #expect(early.isEmpty, "unexpected replies before the stop: \(record.otherReplies(afterStop: false))")
        let late = record.otherReplies(afterStop: true).keys.filter { !["error: shutting down", "error: busy", ""].contains($0) }
        #expect(late.isEmpty, "unexpected replies after the stop: \(record.otherReplies(afterStop: true))")
        print("load + kill: \(acknowledged.count) acknowledged, \(lostLines.count) lost line(s), other replies before the stop \(record.otherReplies(afterStop: false)), after \(record.otherReplies(afterStop: true))")
        F.expectNothingLeft(footprint)
        server.stop()
    }

    /// The same load with debug logging, six workers SIGKILLed one after another (each time the
    /// pool is back to 3 before the next). Accounting by job id: every job the master queued
    /// ("queued ... job=N") is handled ("handled job N") or reported lost ("acknowledged message
    /// lost ... job=N"); none may vanish silently.
    /// Also with every payload spilled into the arena (`--spill-bytes 1`).
    @Test(arguments: [[], ["--spill-bytes", "1"]])
    func repeatedWorkerKillsUnderLoadNeverLoseAJobSilently(spill: [String]) throws {
        let server = try TestServer(["--workers", "3", "--handler", "log", "--log-level", "debug"] + spill)
        let footprint = F.Footprint(server)
        let record = F.LoadRecord()
        let threads = 8
        defer {
            record.stopping = true
            server.stop()
            footprint.removeLeftovers()
            _ = waitUntil(timeout: 60) { record.finishedCount == threads }
        }
        _ = try #require(waitForWorkers(server, 3))
        F.startOneshotLoad(path: server.socketPath, threads: threads, record: record)
        #expect(waitUntil(timeout: 30) { record.acknowledgedCount >= 200 }, "the load never got going")

        let kills = 6
        for index in 0..<kills {
            guard let workers = waitForWorkers(server, 3) else {
                Issue.record("the pool did not get back to 3 workers")
                break
            }
            let victim = workers[index % workers.count]
            let before = record.acknowledgedCount
            #expect(waitUntil(timeout: 30) { record.acknowledgedCount >= before + 100 })
            kill(victim, SIGKILL)
            #expect(waitUntil(timeout: 20) {
                let now = server.workerPIDs
                return now.count == 3 && !now.contains(victim)
            }, "no replacement for \(victim)")
        }
        let before = record.acknowledgedCount
        #expect(waitUntil(timeout: 30) { record.acknowledgedCount >= before + 100 })

        if !spill.isEmpty { #expect((Self.arenaCounts(server)?["spilled"] ?? 0) >= 200, "\(String(describing: Self.arenaCounts(server)))") }
        record.stopping = true
        server.signal(SIGTERM)
        #expect(waitUntil(timeout: 60) { record.finishedCount == threads }, "the senders did not finish")
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log.suffix(3000))")

        // One pass over the (large, debug-level) log.
        var queued = Set<Int>(), handled = Set<Int>(), lost = Set<Int>()
        var queuedLines: [Int: Substring] = [:]
        var diedLines: [Substring] = []
        let log = server.log
        for line in log.split(separator: "\n") {
            if line.contains(": queued "), let id = intField(line, "job") {
                queued.insert(id)
                queuedLines[id] = line
            } else if let range = line.range(of: "handled job ") {
                if let id = Int(line[range.upperBound...].prefix { $0.isNumber }) { handled.insert(id) }
            } else if line.contains("acknowledged message lost"), let id = intField(line, "job") {
                lost.insert(id)
            } else if line.contains("worker died") {
                diedLines.append(line)
            }
        }
        let silent = queued.subtracting(handled).subtracting(lost).sorted()
        #expect(queued.count >= record.acknowledgedCount, "every ok should have a 'queued' line")
        #expect(lost.count <= kills, "at most the job in hand of each killed worker: \(lost.sorted())")
        let context = silent.prefix(3).compactMap { queuedLines[$0].map(String.init) } + diedLines.map(String.init)
        #expect(silent.isEmpty,
                "\(silent.count) acknowledged job(s) vanished: queued, never handled, not reported lost: \(silent.prefix(10))\n\(context.joined(separator: "\n"))")
        print("repeated kills: \(queued.count) queued, \(lost.count) reported lost, \(silent.count) silently lost")
        // Six workers died holding spilled jobs; after the graceful stop no chunk is left taken
        // (the master warns at exit if one is), and jobs did go through the arena.
        #expect(server.logLines(containing: "chunks still taken at exit").isEmpty, "\(server.logLines(containing: "chunks still taken"))")
        F.expectNothingLeft(footprint)
    }

    // MARK: - 9. Fuzzed framed input

    /// One fuzz input: frames, oversize and implausible lengths, truncated frames and noise.
    private static func fuzzBlob(_ rng: inout SplitMix64, maxMessage: Int) -> [UInt8] {
        func random(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8.random(in: 0...255, using: &rng) } }
        func header(_ length: UInt32) -> [UInt8] {
            [UInt8(length >> 24), UInt8((length >> 16) & 0xff), UInt8((length >> 8) & 0xff), UInt8(length & 0xff)]
        }
        var blob: [UInt8] = []
        for _ in 0..<Int.random(in: 1...6, using: &rng) {
            switch Int.random(in: 0..<100, using: &rng) {
            case 0..<40: blob += FramedWire.requestFrame(random(Int.random(in: 0...40, using: &rng)))
            case 40..<48: blob += FramedWire.requestFrame(random(Int.random(in: (maxMessage - 12)...maxMessage, using: &rng)))
            case 48..<58: blob += header(UInt32.random(in: UInt32(maxMessage + 1)..<(1 << 30), using: &rng)) + random(Int.random(in: 0...8, using: &rng))
            case 58..<66: blob += header(UInt32.random(in: (1 << 30)...UInt32.max, using: &rng)) + random(Int.random(in: 0...8, using: &rng))
            case 66..<84: blob += random(Int.random(in: 1...16, using: &rng))
            default:
                let length = Int.random(in: 1...100, using: &rng)
                blob += header(UInt32(length)) + random(Int.random(in: 0..<length, using: &rng))
            }
        }
        return blob
    }

    /// What the protocol says the server answers to `blob` (then end of stream from our side):
    /// an echo per complete frame; 7 and close at a length ≥ 2³⁰; 3 and close above the maximum;
    /// nothing for an incomplete tail. Written from the README, not from the server's codec.
    private static func expectedResponses(_ blob: [UInt8], maxMessage: Int) -> [Frame] {
        var out: [Frame] = []
        var offset = 0
        while blob.count - offset >= 4 {
            let length = Int(FramedWire.be32(blob, offset))
            if length >= 1 << 30 { out.append(Frame(status: 7, body: [])); break }
            if length > maxMessage { out.append(Frame(status: 3, body: [])); break }
            guard blob.count - offset - 4 >= length else { break }
            out.append(Frame(status: 0, body: Array(blob[(offset + 4)..<(offset + 4 + length)])))
            offset += 4 + length
        }
        return out
    }

    /// 200 seeded random inputs, each on a fresh framed connection, written in 1–3 pieces, then
    /// half-closed. Every response stream is well-formed (length ≥ 1, known status, nothing
    /// partial) and is exactly what the protocol prescribes; the server never crashes and still
    /// serves a normal request at the end.
    @Test func fuzzedFramedInputNeverBreaksTheServer() throws {
        let maxMessage = 512
        let server = try TestServer(F.framedEcho + ["--workers", "2", "--max-message", "\(maxMessage)"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        var rng = SplitMix64(seed: 0x5EED_F00D_2024)
        var failures: [String] = []
        var statusesSeen = Set<UInt8>()

        for index in 0..<200 {
            let blob = Self.fuzzBlob(&rng, maxMessage: maxMessage)
            let expected = Self.expectedResponses(blob, maxMessage: maxMessage)
            let pieces = Int.random(in: 1...3, using: &rng)
            var cuts = (0..<(pieces - 1)).map { _ in Int.random(in: 0...blob.count, using: &rng) }.sorted()
            cuts = [0] + cuts + [blob.count]

            let connection = try F.Connection(path: server.socketPath, timeout: 20)
            for (from, to) in zip(cuts, cuts.dropFirst()) where from < to {
                if !connection.send(Array(blob[from..<to])) { break }  // the server may close after 3 or 7
                usleep(1_000)
            }
            connection.shutdownWrite()
            let (bytes, end) = connection.readToEnd()
            connection.close()
            let (frames, rest, malformed) = F.parseResponses(bytes)
            statusesSeen.formUnion(frames.map(\.status))
            let got = frames.map { $0.status == 0 ? $0 : Frame(status: $0.status, body: []) }
            if malformed != nil || !rest.isEmpty || end == .timeout || got != expected {
                failures.append("blob \(index) (\(blob.count) bytes \(blob.prefix(24).map { String(format: "%02x", $0) }.joined())): "
                                + "malformed \(malformed ?? "no"), rest \(rest.count), end \(end), got \(got.map(\.status)), expected \(expected.map(\.status))")
            }
            if !server.process.isRunning { failures.append("server died at blob \(index)"); break }
        }
        #expect(failures.isEmpty, "\(failures.count) bad response stream(s):\n\(failures.prefix(10).joined(separator: "\n"))")
        #expect(statusesSeen.isSuperset(of: [0, 3, 7]), "the fuzz inputs should reach ok, too large and bad request: \(statusesSeen.sorted())")

        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("normal".bytes).body == "normal".bytes)
        client.close()
        #expect(server.logLines(containing: "worker died").isEmpty && server.logLines(containing: " critical ").isEmpty,
                "\(server.log.suffix(3000))")
        F.expectCleanExit(server, footprint)
    }

    #if DEBUG
    // MARK: - Fork failures (debug builds: POOL_DEBUG_FAIL_FORKS)
    // These need the failpoints of a debug pool-server. So do tests elsewhere that call
    // `debugEnvironment`: the suite is built and run in debug only (`swift test -c release` does
    // not build it).

    /// The test runner's environment plus `POOL_DEBUG_FAIL_FORKS`: the master's forks numbered
    /// in `calls` (from 1) fail with EAGAIN, as at the process limit, which root does not meet.
    static func failingForks(_ calls: String) -> [String: String] { debugEnvironment("POOL_DEBUG_FAIL_FORKS", calls) }

    /// This process's environment plus one of the debug builds' failpoint variables.
    static func debugEnvironment(_ variable: String, _ value: String) -> [String: String] {
        var environment = ProcessInfo.processInfo.environment
        environment[variable] = value
        return environment
    }

    /// Two masters started at the same moment on one socket. The late one, held by
    /// POOL_DEBUG_START_DELAY_MS between its start-up check and its first record, finds the winner
    /// recorded by then and refuses before writing anything, so the winner's record (its queues,
    /// for a cleanup after a SIGKILL) stays. The late one used to replace the record, fail to bind,
    /// and remove it as its own.
    @Test func aMasterStartedBesideAnotherRefusesWithoutReplacingItsRecord() throws {
        let late = try TestServer(F.framedSim + ["--workers", "1"], waitForStart: false,
                                  environment: Self.debugEnvironment("POOL_DEBUG_START_DELAY_MS", "5000"))
        defer { late.stop() }
        // Its start-up check is done (it found no record) once it says it is holding.
        try #require(waitUntil(timeout: 20) { late.log.contains("debug: holding the start") }, "\(late.log)")
        let winner = try TestServer(F.framedSim + ["--workers", "1"], socketPath: late.socketPath)
        let footprint = F.Footprint(winner)
        defer { winner.stop(); footprint.removeLeftovers() }
        let recorded = stateFileQueueIDs(winner.stateFilePath)
        #expect(stateFilePID(winner.stateFilePath) == winner.pid && recorded.count == 2, "\(recorded)")
        try #require(!late.hasExited, "the late master ended before the winner had started:\n\(late.log)")

        #expect(late.waitForExit(timeout: 30) == 2, "\(late.log)")
        #expect(late.log.contains("master pid \(winner.pid) recorded in \(winner.stateFilePath) is running; refusing to start"),
                "\(late.log)")
        #expect(stateFilePID(winner.stateFilePath) == winner.pid && stateFileQueueIDs(winner.stateFilePath) == recorded,
                "the winner's record was replaced or removed")
        let client = try PoolClient(socketPath: winner.socketPath, timeout: 30)
        #expect(try client.request("winner".bytes).body == "winner".bytes)
        client.close()
        F.expectCleanExit(winner, footprint)
    }

    /// Two masters on one socket with different state files, so the record cannot tell the late
    /// one about the first. The first, held between its bind and its listen, has a socket file
    /// that refuses connections, as a stale one does: the late one used to unlink it and start,
    /// leaving the first listening on a name nobody could reach. The lock on the socket's
    /// directory makes it wait for the first's listen and then refuse. (The hold, 2 s for each of
    /// the two sockets, stays within the lock's 5 s wait, past which the late one would go on
    /// without the lock.)
    @Test func aMasterStartingOnASocketAnotherIsBindingRefuses() throws {
        let first = try TestServer(F.framedEcho + ["--workers", "1"], waitForStart: false,
                                   environment: Self.debugEnvironment("POOL_DEBUG_BIND_DELAY_MS", "2000"))
        let footprint = F.Footprint(first)
        defer { first.stop(); footprint.removeLeftovers() }
        try #require(waitUntil(timeout: 20) { first.log.contains("debug: holding between bind and listen") }, "\(first.log)")
        let late = try TestServer(F.framedEcho + ["--workers", "1", "--state-file", first.directory + "/late.state"],
                                  socketPath: first.socketPath, waitForStart: false)
        defer { late.stop() }
        #expect(late.waitForExit(timeout: 30) == 2, "\(late.log)")
        #expect(late.log.contains("another server is listening on this socket"), "\(late.log)")
        try requirePoolStart("pool-server", log: { first.log }, isRunning: { first.process.isRunning }, stop: { first.stop() })
        let client = try PoolClient(socketPath: first.socketPath, timeout: 30)
        #expect(try client.request("first".bytes).body == "first".bytes)
        client.close()
        F.expectCleanExit(first, footprint)
    }

    /// A message longer than any of the pool's in a worker's queue (msgmax raised since the
    /// start — here the pool is made to size its messages for 2048 — and someone else's send):
    /// the worker takes it cut, drops it with an error and goes on. It used to fail every
    /// receive with E2BIG, exit, and have its replacement do the same: the queue served nothing.
    @Test func aMessageLongerThanThePoolsIsDroppedByTheWorker() throws {
        let (server, footprint, worker) = try oneWorkerServer(debug: "POOL_DEBUG_MSGMAX", "2048")
        defer { server.stop(); footprint.removeLeftovers() }
        let row = try #require(Self.workerRows(server).first, "\(server.log)")
        let queue = MessageQueue(id: Int32(try #require(row["queue_id"] as? Int)))
        let foreign = MessageBuffer(capacity: 4000)
        foreign.text.initializeMemory(as: UInt8.self, repeating: 0x41)
        #expect(try queue.send(foreign, type: JobCodec.jobType, length: 4000, nowait: true))
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("after".bytes).body == "after".bytes)
        client.close()
        #expect(processIsAlive(worker) && server.workerPIDs == [worker], "\(server.log)")
        #expect(server.logLines(containing: "dropped a queue message longer than any of the pool's").count == 1, "\(server.log)")
        F.expectCleanExit(server, footprint)
    }

    /// A one-worker framed echo server started with a failpoint variable, and its worker's pid.
    /// (Stopped by its deinit if the worker never shows up.)
    private func oneWorkerServer(debug variable: String, _ value: String) throws -> (TestServer, F.Footprint, pid_t) {
        let server = try TestServer(F.framedEcho + ["--workers", "1"], environment: Self.debugEnvironment(variable, value))
        let footprint = F.Footprint(server)
        guard let worker = waitForWorkers(server, 1)?.first else {
            server.stop()
            footprint.removeLeftovers()
            throw TestFailure("no worker started:\n\(server.log.suffix(2000))")
        }
        return (server, footprint, worker)
    }

    /// accept failing with an error it gives again at once (EPERM from a security module; the
    /// connection stays in the backlog): the master pauses the listeners 100 ms per failure, with
    /// a throttled log line, then serves the client. It retried every turn, spinning on the
    /// readable listener with a warning each time.
    @Test func anAcceptErrorThatRepeatsPausesTheListeners() throws {
        let failures = 25
        let server = try TestServer(F.framedEcho + ["--workers", "1"],
                                    environment: Self.debugEnvironment("POOL_DEBUG_FAIL_ACCEPTS", (1...failures).map(String.init).joined(separator: ",")))
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let client = try PoolClient(socketPath: server.socketPath, timeout: 60)
        #expect(try client.request("after the refusals".bytes).body == "after the refusals".bytes)
        client.close()
        let lines = server.logLines(containing: "accept failed")
        #expect(!lines.isEmpty && lines.allSatisfy { $0.contains("not accepting for 100 ms") && $0.contains("Operation not permitted") },
                "\(lines)")
        // 25 failures at least 100 ms apart take at least 2.4 s: a line a second (so at least
        // two), the rest counted. Unpaused they all come within milliseconds: one line if
        // throttled, 25 if not.
        #expect(lines.count < failures / 2, "\(lines.count) lines for \(failures) failures: not throttled, or not paused")
        #expect(lines.count >= 2, "\(lines.count) line(s) for \(failures) failures: not 100 ms apart, so not paused")
        F.expectCleanExit(server, footprint)
    }

    /// epoll refusing to watch a new framed connection (ENOSPC past fs.epoll.max_user_watches):
    /// the client is answered busy, as past --max-connections, instead of closed without a word;
    /// the next connection is served.
    @Test func aConnectionEpollCannotWatchIsAnsweredBusy() throws {
        let server = try TestServer(F.framedEcho + ["--workers", "1"], environment: Self.debugEnvironment("POOL_DEBUG_FAIL_WATCHES", "1"))
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let refused = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let answer = try refused.receive()
        #expect(answer.statusByte == ResponseStatus.busy.rawValue, "\(answer)")
        refused.close()
        #expect(server.logLines(containing: "cannot watch a new connection; answering busy").count == 1, "\(server.log.suffix(2000))")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("watched".bytes).body == "watched".bytes)
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// The second of three forks at start fails: the master exits 2 naming the call and leaves
    /// nothing. The worker it had started is killed and reaped, its four queues (three workers',
    /// one for replies) are removed, and no socket, control socket or state file stays.
    @Test func forkFailingAtStartLeavesNothing() throws {
        let server = try TestServer(F.framedEcho + ["--workers", "3"], waitForStart: false,
                                    environment: Self.failingForks("2"))
        defer { server.stop() }
        #expect(server.waitForExit(timeout: 30) == 2, "\(server.log)")
        #expect(server.log.contains("cannot start: fork"), "\(server.log)")
        let started = spawnedWorkerPIDs(inLog: server.log)
        #expect(started.count == 1, "\(server.log)")
        #expect(waitUntil(timeout: 10) { started.allSatisfy { !processIsAlive($0) } }, "a worker outlived the failed start")
        let removedLine = try #require(server.logLines(containing: "queues removed").first, "\(server.log)")
        let removed = Set(startedQueueIDs(inLine: removedLine))
        defer { removeQueues(removed.union(spawnedQueueIDs(inLog: server.log))) }
        #expect(removed.count == 4 && removed.isSuperset(of: spawnedQueueIDs(inLog: server.log)), "\(server.log)")
        #expect(existingQueueIDs().isDisjoint(with: removed), "queues left: \(existingQueueIDs().intersection(removed))")
        for path in [server.socketPath, server.socketPath + ".ctl", server.stateFilePath] {
            #expect(!fileExists(path), "\(path) left behind")
        }
    }

    /// The fork for a slot added by `scale 3` fails. The slot takes jobs from then on, so its
    /// worker is retried a second later, and the jobs round-robin gave its queue are answered.
    /// (The slot used to stay without a worker for good, and its jobs were never answered.)
    @Test func workerOfAScaledUpSlotIsRetriedWhenItsForkFails() throws {
        let server = try TestServer(F.framedEcho + ["--workers", "2"], environment: Self.failingForks("3"))
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 2))
        let reply = try ControlClient.send("scale 3", controlSocket: server.socketPath + ".ctl")
        #expect(reply.hasPrefix("ok scaling to 3"), "\(reply)")
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "could not start the worker of slot 2").isEmpty },
                "\(server.log.suffix(3000))")
        // Six requests in turn over three slots: two go to slot 2, whether its worker runs yet or not.
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        for index in 0..<6 { try client.send("job-\(index)".bytes) }
        let answers = try (0..<6).map { _ in try client.receive() }
        #expect(answers.map(\.body) == (0..<6).map { "job-\($0)".bytes }, "\(Self.statuses(answers))")
        client.close()
        #expect(waitForWorkers(server, 3) != nil, "\(server.log.suffix(3000))")
        F.expectCleanExit(server, footprint)
    }

    /// `scale 4` on two workers when the second new queue cannot be created (msgget's ENOSPC at
    /// kernel.msgmni, through POOL_DEBUG_FAIL_QUEUES: two worker queues and the reply queue at
    /// start, then the 4th and the failing 5th): the answer says how far it got, and
    /// `pool-server scale` fails at once with it instead of waiting its whole --timeout for a
    /// count that cannot come. The pool serves with the three it has.
    @Test func scaleShortOfItsTargetSaysSo() throws {
        let server = try TestServer(F.framedEcho + ["--workers", "2"], environment: Self.debugEnvironment("POOL_DEBUG_FAIL_QUEUES", "5"))
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 2))
        let scaled = try OperationsSupport.poolServer(["scale", "4", "--socket", server.socketPath, "--timeout", "60"], timeout: 30)
        #expect(scaled.status == 1 && scaled.stderr.contains("scaled to 3 of 4 workers"), "\(scaled)")
        #expect(server.log.contains("scale up failed") && server.log.contains("system limit of queues"), "\(server.log.suffix(3000))")
        #expect(waitForWorkers(server, 3) != nil, "\(server.log.suffix(3000))")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        for index in 0..<6 { try client.send("job-\(index)".bytes) }
        #expect(try (0..<6).map { _ in try client.receive().body } == (0..<6).map { "job-\($0)".bytes })
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// A slot whose fork failed (its worker retried a second later) is scaled away before the
    /// retry, with nothing queued: it goes at once, with its queue. (It was kept, and a worker was
    /// forked for it a second later only to be told to quit.)
    @Test func aScaledDownSlotWithoutAWorkerGoesAtOnce() throws {
        // Its retries a second apart fail too: `scale 2` has 3 s to land before a worker could.
        let server = try TestServer(F.framedEcho + ["--workers", "2"], environment: Self.failingForks("3,4,5"))
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 2))
        #expect(try ControlClient.send("scale 3", controlSocket: server.socketPath + ".ctl").hasPrefix("ok scaling to 3"))
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "could not start the worker of slot 2").isEmpty },
                "\(server.log.suffix(3000))")
        let queue = try #require(OperationsSupport.status(server.socketPath)?.workers.first { $0.slot == 2 }?.queueID)
        #expect(try ControlClient.send("scale 2", controlSocket: server.socketPath + ".ctl").hasPrefix("ok scaling to 2"))
        let failures = server.logLines(containing: "could not start the worker of slot 2").count
        #expect(waitUntil(timeout: 10) { !existingQueueIDs().contains(queue) }, "the empty slot's queue \(queue) was kept")
        usleep(1_500_000)
        // A retry (a second after the last failure, by design failing too) would log it again.
        #expect(server.logLines(containing: "could not start the worker of slot 2").count == failures,
                "the removed slot was retried\n\(server.log.suffix(3000))")
        #expect(!server.log.split(separator: "\n").contains { $0.contains("worker spawned") && $0.contains("slot=2") },
                "a worker was forked for the removed slot\n\(server.log.suffix(3000))")
        #expect(waitForWorkers(server, 2) != nil)
        F.expectCleanExit(server, footprint)
    }

    /// Scaled down below a slot kept busy, a middle slot is removed; the next slot added takes its
    /// place instead of a new index (each such cycle used one more, toward the 1024 slots the
    /// shared mappings hold). Round-robin: requests in turn go to slots 0, 1, 2.
    @Test func aSlotRemovedInTheMiddleIsTakenAgain() throws {
        let server = try TestServer(["--workers", "3", "--protocol", "framed", "--reply", "result", "--handler", "sim",
                                     "--dispatch", "round-robin"])
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        _ = try #require(waitForWorkers(server, 3))
        let control = server.socketPath + ".ctl"
        func slots() -> [Int] { OperationsSupport.status(server.socketPath)?.workers.map(\.slot) ?? [] }
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        defer { client.close() }
        for _ in 0..<2 { #expect(try client.request("sleep:1".bytes).isOK) }
        try client.send("sleep:6000".bytes)
        #expect(waitUntil(timeout: 10) { OperationsSupport.status(server.socketPath)?.workers.last?.state == "busy" })
        // Slot 2 retires busy, slot 1 idle: 1 goes now, 2 stays until its job ends.
        #expect(try ControlClient.send("scale 1", controlSocket: control).hasPrefix("ok scaling to 1"))
        #expect(waitUntil(timeout: 10) { slots() == [0, 2] }, "\(slots())")
        // Back up: slot 2 is kept, and the new slot takes index 1 again.
        #expect(try ControlClient.send("scale 3", controlSocket: control).hasPrefix("ok scaling to 3"))
        #expect(waitUntil(timeout: 10) { slots() == [0, 1, 2] }, "\(slots())\n\(server.log.suffix(2000))")
        #expect(waitForWorkers(server, 3) != nil)
        #expect(try client.receive().body == "sleep:6000".bytes)
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// A SIGTERM sent to a worker before it has installed its handler (the window held open for a
    /// few seconds by POOL_DEBUG_WORKER_START_DELAY_MS) waits, blocked since the fork, and then ends the
    /// worker gracefully (exit 0) instead of killing it (signal 15, logged as a crash).
    @Test func terminationSentWhileAWorkerStartsIsHandledGracefully() throws {
        let (server, footprint, worker) = try oneWorkerServer(debug: "POOL_DEBUG_WORKER_START_DELAY_MS", "5000")
        defer { server.stop(); footprint.removeLeftovers() }
        // Inside the window: SIGTERM blocked and no handler yet (else the test proves nothing).
        try #require(signalSet("SigBlk", of: worker, contains: SIGTERM) && !signalSet("SigCgt", of: worker, contains: SIGTERM),
                     "the worker was not signalled inside its start window")
        kill(worker, SIGTERM)
        let exitLine = "pid=\(worker) "
        #expect(waitUntil(timeout: 20) {
            server.logLines(containing: "worker ").contains { $0.contains(exitLine) && !$0.contains("worker spawned") }
        }, "\(server.log.suffix(3000))")
        let ended = server.logLines(containing: exitLine).filter { !$0.contains("worker spawned") }
        #expect(ended.contains { $0.contains("worker exited") && $0.contains("status=exit 0") }, "\(ended)")
        #expect(server.logLines(containing: "worker died").isEmpty, "\(server.log.suffix(3000))")
        F.expectCleanExit(server, footprint)
    }

    /// During a graceful stop, a slot whose workers die at once without taking a job (a handler
    /// that cannot start) waits out the crash back-off between forks, as it does while running:
    /// the log shows the doubling delay. It used to fork again at once, in a loop until the
    /// deadline. Here each worker is killed inside its start window
    /// (POOL_DEBUG_WORKER_START_DELAY_MS), before it can take the job waiting in its queue; the
    /// one then left alive runs that job, and the pool stops cleanly.
    @Test func workersDyingAtStartDuringAStopBackOff() throws {
        // Long enough for the steps before the first kill on a loaded machine: a worker past its
        // window would take the job, and no replacement would come.
        let server = try TestServer(F.framedEcho + ["--workers", "1"],
                                    environment: Self.debugEnvironment("POOL_DEBUG_WORKER_START_DELAY_MS", "4000"))
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let queue = try #require(F.queueIDs(inLog: server.log).first, "\(server.log)")
        var spawns = Self.slot0Spawns(server)
        let first = try #require(spawns.last, "\(server.log)")
        // Its job waits in the queue while it sleeps before its first receive.
        try #require(!signalSet("SigCgt", of: first, contains: SIGTERM), "the worker was past its start window")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 60)
        defer { client.close() }
        try client.send("waiting".bytes)
        try #require(waitUntil(timeout: 20) { (queueRow(queue)?.messages ?? 0) > 0 }, "the job never reached the queue")
        kill(server.pid, SIGTERM)
        try #require(waitUntil(timeout: 20) { !server.logLines(containing: "shutdown: stopped accepting").isEmpty }, "\(server.log)")

        // Kill each new worker as it appears, until two respawns waited (or ten kills without).
        var killed = 0
        while killed < 10 && server.logLines(containing: "crash-looping").count < 2 {
            guard let pid = spawns.last else { break }
            kill(pid, SIGKILL)
            killed += 1
            #expect(waitUntil(timeout: 20) { Self.slot0Spawns(server).count > spawns.count || server.hasExited },
                    "no replacement: \(server.log.suffix(3000))")
            spawns = Self.slot0Spawns(server)
        }
        let delays = server.logLines(containing: "crash-looping").compactMap { line in
            line.range(of: "respawn in ").flatMap { Int(line[$0.upperBound...].prefix { $0.isNumber }) }
        }
        #expect(delays.count >= 2 && zip(delays, delays.dropFirst()).allSatisfy { $1 == $0 * 2 },
                "after \(killed) kills during the stop: \(delays)\n\(server.log.suffix(3000))")
        // The last one lives: it runs the job, and the pool ends.
        let answer = try client.receive()
        #expect(answer.isOK && answer.body == "waiting".bytes, "\(answer)")
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log.suffix(3000))")
        F.expectNothingLeft(footprint, log: server.log)
    }

    /// A SIGTERM that lands after a worker's check and before its msgrcv is only seen once msgrcv
    /// returns a message: the worker must leave without starting it (a restart for a new reply
    /// queue depends on that), and the master must run the untouched message on the replacement.
    /// Debug builds widen the window with `POOL_DEBUG_WORKER_RECEIVE_DELAY_MS`.
    @Test func workerSignalledBeforeItsReceiveLeavesTheMessageUnstarted() throws {
        let (server, footprint, worker) = try oneWorkerServer(debug: "POOL_DEBUG_WORKER_RECEIVE_DELAY_MS", "4000")
        defer { server.stop(); footprint.removeLeftovers() }
        // Its handler is in place, so it is now in the delay before its first msgrcv.
        try #require(waitUntil(timeout: 20) { signalSet("SigCgt", of: worker, contains: SIGTERM) })
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        try client.send("untouched".bytes)
        kill(worker, SIGTERM)
        let response = try client.receive()
        #expect(response.isOK && response.body == "untouched".bytes, "\(response)")
        #expect(!server.logLines(containing: "before starting its message").isEmpty, "\(server.log.suffix(3000))")
        #expect(server.logLines(containing: "worker died").isEmpty, "\(server.log.suffix(3000))")
        #expect(!server.workerPIDs.contains(worker))
        client.close()
        F.expectCleanExit(server, footprint)
    }

    /// A respawn whose fork fails is retried a second later, and the pool is whole again.
    @Test func respawnIsRetriedWhenItsForkFails() throws {
        let server = try TestServer(F.framedEcho + ["--workers", "2"], environment: Self.failingForks("3"))
        let footprint = F.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        let workers = try #require(waitForWorkers(server, 2))
        kill(workers[0], SIGKILL)
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "respawn failed; retrying in 1 s").isEmpty },
                "\(server.log.suffix(3000))")
        #expect(waitUntil(timeout: 20) {
            let now = server.workerPIDs
            return now.count == 2 && !now.contains(workers[0])
        }, "\(server.log.suffix(3000))")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        for index in 0..<4 { try client.send("after-\(index)".bytes) }
        let answers = try (0..<4).map { _ in try client.receive() }
        #expect(answers.map(\.body) == (0..<4).map { "after-\($0)".bytes }, "\(Self.statuses(answers))")
        client.close()
        F.expectCleanExit(server, footprint)
    }
    #endif
}
