import Foundation
import Glibc
import Pool
import Testing

/// `--dispatch shared`: one queue that every worker reads.
@Suite(.serialized) struct SharedDispatchTests {
    private func status(_ server: TestServer) throws -> [String: Any] {
        let text = try ControlClient.send("status json", controlSocket: server.socketPath + ".ctl")
        return try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    private func workers(_ server: TestServer) throws -> [[String: Any]] {
        try #require(try status(server)["workers"] as? [[String: Any]])
    }

    /// The shared check (every queue the log or state file names, the reply queue included, every
    /// worker ever spawned, the socket and state file), plus the status's own queue ids.
    private func expectClean(_ server: TestServer, sourceLocation: SourceLocation = #_sourceLocation) throws {
        let queues = Set(try workers(server).compactMap { ($0["queue_id"] as? Int).map(Int32.init) })
        #expect(!queues.isEmpty, sourceLocation: sourceLocation)
        FramedSupport.expectCleanShutdown(server, queues: queues, sourceLocation: sourceLocation)
    }

    @Test func everyWorkerReadsOneQueueAndAFreeWorkerTakesTheNextJob() throws {
        let server = try TestServer(["--workers", "2", "--protocol", "framed", "--reply", "result",
                                     "--handler", "sim", "--dispatch", "shared"])
        let slots = try workers(server)
        #expect(slots.count == 2)
        #expect(Set(slots.compactMap { $0["queue_id"] as? Int }).count == 1)
        #expect(server.queueIDs.count == 2) // the shared job queue, logged once per slot
        // Both workers waiting in msgrcv before the jobs arrive.
        #expect(waitUntil(timeout: 20) { (try? workers(server))?.filter { $0["state"] as? String == "idle" }.count == 2 })
        let client = try PoolClient(socketPath: server.socketPath)
        let replies = try client.pipeline(["sleep:3000", "a", "b", "c", "d"].map(\.bytes))
        #expect(replies.map(\.statusByte) == [0, 0, 0, 0, 0])
        #expect(replies.map { String(decoding: $0.body, as: UTF8.self) } == ["sleep:3000", "a", "b", "c", "d"])
        // Round-robin would have queued two of the fast jobs behind the sleep; here the free
        // worker took all four.
        let jobs = try workers(server).compactMap { $0["jobs_handled"] as? Int }.sorted()
        #expect(jobs == [1, 4])
        try expectClean(server)
    }

    /// Without --dispatch: result mode shares one queue, ack mode keeps the seed's round-robin.
    @Test func sharedIsTheDefaultForResultModeOnly() throws {
        let result = try TestServer(["--workers", "2", "--protocol", "framed", "--reply", "result", "--handler", "echo"])
        #expect(try status(result)["dispatch"] as? String == "shared")
        #expect(Set(try workers(result).compactMap { $0["queue_id"] as? Int }).count == 1)
        try expectClean(result)
        let ack = try TestServer(["--workers", "2"])
        #expect(try status(ack)["dispatch"] as? String == "round-robin")
        #expect(Set(try workers(ack).compactMap { $0["queue_id"] as? Int }).count == 2)
        try expectClean(ack)
    }

    @Test func pipelinedRequestsAreAllAnsweredInOrder() throws {
        let server = try TestServer(["--workers", "3", "--protocol", "framed", "--reply", "result",
                                     "--handler", "echo", "--dispatch", "shared"])
        let client = try PoolClient(socketPath: server.socketPath)
        let payloads = (0..<3000).map { "m\($0)".bytes }
        let replies = try client.pipeline(payloads)
        #expect(replies.allSatisfy { $0.isOK })
        #expect(replies.map(\.body) == payloads)
        try expectClean(server)
    }

    @Test func aCrashAnswersWorkerDiedForThatRequestOnly() throws {
        let server = try TestServer(["--workers", "2", "--protocol", "framed", "--reply", "result",
                                     "--handler", "sim", "--dispatch", "shared"])
        let client = try PoolClient(socketPath: server.socketPath)
        let replies = try client.pipeline(["a", "crash", "b", "c"].map(\.bytes))
        #expect(replies.map(\.statusByte) == [0, 5, 0, 0])
        #expect(waitUntil { server.workerPIDs.count == 2 })
        #expect(try client.request("after".bytes).body == "after".bytes)
        try expectClean(server)
    }

    @Test func rollingRestartAndScalingRetireTheRightWorkersWithoutLoss() throws {
        let server = try TestServer(["--workers", "2", "--protocol", "framed", "--reply", "result",
                                     "--handler", "sim", "--dispatch", "shared"])
        let before = Set(server.workerPIDs)
        #expect(before.count == 2)
        // A rolling restart while a job runs: the job finishes (SIGTERM is graceful), every pid changes.
        let client = try PoolClient(socketPath: server.socketPath)
        try client.send("sleep:6000".bytes)
        #expect(waitUntil(timeout: 5) { ((try? workers(server)) ?? []).contains { $0["state"] as? String == "busy" } },
                "the job should be running when SIGHUP lands")
        server.signal(SIGHUP)
        #expect(try client.receive().statusByte == 0)
        #expect(waitUntil(timeout: 20) {
            let now = Set(server.workerPIDs)
            return now.count == 2 && now.isDisjoint(with: before)
                && ((try? status(server)["rolling_restart"] as? Bool) ?? true) == false
        })
        // Scale to 3 and back to 1: still one queue; work keeps flowing.
        server.signal(SIGTTIN)
        #expect(waitUntil { server.workerPIDs.count == 3 })
        #expect(Set(try workers(server).compactMap { $0["queue_id"] as? Int }).count == 1)
        // One signal at a time: signals of one kind sent back to back may arrive as one.
        server.signal(SIGTTOU)
        #expect(waitUntil(timeout: 20) { server.workerPIDs.count == 2 && ((try? workers(server).count) ?? 0) == 2 })
        server.signal(SIGTTOU)
        #expect(waitUntil(timeout: 20) { server.workerPIDs.count == 1 && ((try? workers(server).count) ?? 0) == 1 })
        let replies = try client.pipeline((0..<200).map { "x\($0)".bytes })
        #expect(replies.allSatisfy { $0.isOK })
        try expectClean(server)
    }
}
