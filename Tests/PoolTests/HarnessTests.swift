import Foundation
import Glibc
import Pool
import Testing

@Suite(.serialized) struct HarnessTests {
    @Test func startsAndStopsCleanly() throws {
        let server = try TestServer(["--workers", "2"])
        #expect(server.queueIDs.count == 2)
        #expect(waitUntil { server.workerPIDs.count == 2 })
        let reply = try PoolClient.oneshot(socketPath: server.socketPath, message: "i am client".bytes)
        #expect(reply == "ok".bytes)
        server.signal(SIGINT)
        #expect(server.waitForExit() == 0)
        #expect(existingQueueIDs().isDisjoint(with: server.queueIDs))
        #expect(!FileManager.default.fileExists(atPath: server.socketPath))
        server.stop()
    }
}
