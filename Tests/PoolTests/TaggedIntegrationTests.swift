import Foundation
import Glibc
import Pool
import Testing

/// The tagged protocol end to end through the real `pool-server` binary: every request carries a
/// client tag, its response carries the same tag, and responses go out as they complete.
///
/// No test asserts speed; order is asserted only where a 300+ ms sleep separates the two answers.
/// Every test ends with `expectCleanShutdown` (exit 0, no worker, queue, socket or state file left).
@Suite(.serialized) struct TaggedIntegrationTests {
    static let resultSim = ["--protocol", "tagged", "--reply", "result", "--handler", "sim"]

    /// One tagged response as it came off the wire.
    struct Tagged: Hashable, CustomStringConvertible {
        var tag: UInt32
        var status: UInt8
        var body: [UInt8]
        var description: String { "tag \(tag) status \(status) \(String(decoding: body, as: UTF8.self).prefix(40))" }
    }

    static func request(_ payload: [UInt8], tag: UInt32) -> [UInt8] {
        var out: [UInt8] = []
        payload.withUnsafeBytes { FrameCodec.appendRequest($0, tag: tag, to: &out) }
        return out
    }

    /// Reads from a raw connection until `count` tagged responses have arrived or the stream ends.
    static func readTagged(_ fd: SocketFD, count: Int) -> (responses: [Tagged], rest: [UInt8], ended: Bool) {
        var buffered: [UInt8] = []
        var responses: [Tagged] = []
        while true {
            var offset = 0
            buffered.withUnsafeBytes { all in
                while let (tag, status, body, total) = FrameCodec.decodeTaggedResponse(UnsafeRawBufferPointer(rebasing: all[offset...])) {
                    responses.append(Tagged(tag: tag, status: status, body: Array(all[(offset + body.lowerBound)..<(offset + body.upperBound)])))
                    offset += total
                }
            }
            buffered.removeFirst(offset)
            if responses.count >= count { return (responses, buffered, false) }
            guard case .success(let chunk) = receiveChunk(fd.raw) else { return (responses, buffered, true) }
            buffered += chunk
        }
    }

    @Test func aSlowRequestDoesNotHoldUpTheOnesBehindIt() throws {
        let server = try TestServer(Self.resultSim + ["--workers", "2"])
        #expect(waitForWorkers(server, 2) != nil)
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30, tagged: true)
        try client.send("sleep:3000".bytes, tag: 7)
        try client.send("quick".bytes, tag: 9)
        let first = try client.receiveTagged()
        let second = try client.receiveTagged()
        // framed would answer 7 first (request order); tagged answers what completes first.
        #expect(first.tag == 9 && first.response.isOK && first.response.body == "quick".bytes, "\(first)")
        #expect(second.tag == 7 && second.response.isOK && second.response.body == "sleep:3000".bytes, "\(second)")

        // request() and pipeline() still hand back request order, whatever order the wire had.
        let payloads = ["sleep:400", "a", "sleep:300", "b", "c"].map(\.bytes)
        let responses = try client.pipeline(payloads)
        #expect(responses.map(\.statusByte) == [0, 0, 0, 0, 0])
        #expect(responses.map(\.body) == payloads)
        #expect(try client.request("single".bytes).body == "single".bytes)
        client.close()
        FramedSupport.expectCleanShutdown(server)
    }

    /// Tags are the client's: any value, repeated or not, comes back exactly once per request.
    @Test func everyTagComesBackOncePerRequest() throws {
        let server = try TestServer(["--protocol", "tagged", "--reply", "result", "--handler", "echo", "--workers", "2"])
        let connection = try FramedSupport.RawConnection(path: server.socketPath)
        let tags: [UInt32] = [0, 1, 0xFFFF_FFFF, 42, 42, 0x8000_0000] + (0..<200).map { UInt32($0 * 7919) }
        var wire: [UInt8] = []
        for (index, tag) in tags.enumerated() { wire += Self.request("payload-\(index)-\(tag)".bytes, tag: tag) }
        try connection.write(wire)
        let (responses, rest, ended) = Self.readTagged(connection.fd, count: tags.count)
        #expect(!ended && rest.isEmpty && responses.count == tags.count)
        #expect(responses.allSatisfy { $0.status == 0 })
        // Each body names its request, so pair them up: the tag must be that request's.
        for response in responses {
            let parts = String(decoding: response.body, as: UTF8.self).split(separator: "-")
            #expect(parts.count == 3 && parts[2] == "\(response.tag)", "\(response)")
        }
        #expect(responses.map(\.tag).sorted() == tags.sorted())
        connection.close()
        FramedSupport.expectCleanShutdown(server)
    }

    @Test func errorsCarryTheTagOfTheirRequest() throws {
        let server = try TestServer(Self.resultSim + ["--max-message", "100"])
        // A handler error is status 1 under its tag; the connection stays usable.
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30, tagged: true)
        try client.send("fail:boom".bytes, tag: 31)
        let failed = try client.receiveTagged()
        #expect(failed.tag == 31 && failed.response.status == .handlerError, "\(failed)")
        #expect(String(decoding: failed.response.body, as: UTF8.self).contains("boom"))
        try client.send("ok".bytes, tag: 32)
        let fine = try client.receiveTagged()
        #expect(fine.tag == 32 && fine.response.isOK && fine.response.body == "ok".bytes)
        client.close()

        // Over --max-message: status 3 under the offending request's tag (decided from its
        // 8-byte header, before the payload), after the answer to the request before it; then close.
        let tooLarge = try FramedSupport.RawConnection(path: server.socketPath)
        try tooLarge.write(Self.request("sleep:300".bytes, tag: 5) + Self.request([UInt8](repeating: 0x61, count: 101), tag: 6))
        let (answers, rest, ended) = Self.readTagged(tooLarge.fd, count: 3)
        #expect(ended && rest.isEmpty, "the server should close after the refusal")
        #expect(answers.map(\.tag) == [6, 5] || answers.map(\.tag) == [5, 6], "\(answers)")
        #expect(answers.first { $0.tag == 6 }?.status == ResponseStatus.tooLarge.rawValue)
        #expect(answers.first { $0.tag == 5 }.map { $0.status == 0 && $0.body == "sleep:300".bytes } == true, "\(answers)")

        // A length no request can have (here an HTTP request line): status 7 under the bytes read
        // as its tag, then close.
        let garbage = try FramedSupport.RawConnection(path: server.socketPath)
        try garbage.write("GET / HTTP/1.1\r\n".bytes)
        let (refusal, _, closed) = Self.readTagged(garbage.fd, count: 2)
        #expect(closed)
        #expect(refusal.map(\.tag) == [0x2F20_4854] && refusal.first?.status == ResponseStatus.badRequest.rawValue
                && String(decoding: refusal.first?.body ?? [], as: UTF8.self).hasPrefix("implausible frame length"), "\(refusal)")
        tooLarge.close()
        garbage.close()
        FramedSupport.expectCleanShutdown(server)
    }

    @Test func ackModeAnswersEveryTagWithAnEmptyOk() throws {
        let server = try TestServer(["--protocol", "tagged", "--workers", "2"])
        let connection = try FramedSupport.RawConnection(path: server.socketPath)
        let tags: [UInt32] = [10, 20, 30, 40]
        try connection.write(tags.flatMap { Self.request("ack-\($0)".bytes, tag: $0) })
        let (responses, _, ended) = Self.readTagged(connection.fd, count: tags.count)
        #expect(!ended)
        #expect(Set(responses) == Set(tags.map { Tagged(tag: $0, status: 0, body: []) }), "\(responses)")
        #expect(waitUntil(timeout: 20) { tags.allSatisfy { server.log.contains("recv 6 bytes: ack-\($0)") } }, "\(server.log)")
        connection.close()
        FramedSupport.expectCleanShutdown(server)
    }

    /// SIGTERM with a slow request in flight: it is still answered under its tag; a request sent
    /// after that is answered "shutting down" under its own; then the server closes and exits 0.
    @Test func shutdownAnswersWhatIsInFlightUnderItsTag() throws {
        // One worker with its own queue, so "the worker took the job" is visible on that queue.
        let server = try TestServer(Self.resultSim + ["--workers", "1", "--dispatch", "round-robin"])
        let queue = try #require(server.queueIDs.first)
        let worker = try #require(waitForWorkers(server, 1)?.first)
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30, tagged: true)
        try client.send("sleep:5000".bytes, tag: 100)
        #expect(waitUntil(timeout: 20) { queueRow(queue)?.lastReceivePID == worker }, "the worker never took the job")
        let queues = FramedSupport.ownedQueueIDs(server)
        server.signal(SIGTERM)
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "shutdown: stopped accepting").isEmpty })
        try client.send("late".bytes, tag: 101)
        var answers: [UInt32: PoolClient.Response] = [:]
        for _ in 0..<2 {
            let (tag, response) = try client.receiveTagged()
            answers[tag] = response
        }
        #expect(answers[100].map { $0.isOK && $0.body == "sleep:5000".bytes } == true, "\(answers)")
        #expect(answers[101]?.status == .shuttingDown, "\(answers)")
        FramedSupport.expectCleanShutdown(server, alreadySignalled: true, queues: queues)
    }
}

extension ClientCLITests {
    @Test func taggedPrintsRepliesInMessageOrder() throws {
        let server = try TestServer(["--protocol", "tagged", "--reply", "result", "--handler", "sim"])
        let result = try run(server, ["--protocol", "tagged", "sleep:300", "quick", "fail:no"])
        #expect(result.stdout == "sleep:300\nquick\n")
        #expect(result.stderr.contains("handler error") && result.stderr.contains("no"), "stderr: \(result.stderr)")
        #expect(result.status != 0)
        FramedSupport.expectCleanShutdown(server)
    }
}
