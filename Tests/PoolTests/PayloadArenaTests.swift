import Foundation
import Glibc
@testable import Pool
import Testing

/// The payload arena on its own, in this process (no fork: one process plays both sides), and the
/// spilled job record.
@Suite struct PayloadArenaUnitTests {
    private func store(_ arena: PayloadArena, _ bytes: [UInt8]) -> PayloadArena.Chunk? {
        bytes.withUnsafeBytes { arena.store($0) }
    }

    private func read(_ arena: PayloadArena, _ chunk: PayloadArena.Chunk, _ length: Int) -> [UInt8]? {
        arena.payload(JobCodec.Spill(chunk: chunk, length: length)).map { Array($0) }
    }

    @Test func storedPayloadsReadBackAndChunksAreReusedOnlyOnceReleased() throws {
        let arena = try PayloadArena(chunks: 2, chunkBytes: 100)
        #expect(arena.chunkBytes == 128) // rounded to a cache line
        let a = Array(repeating: UInt8(ascii: "a"), count: 100)
        let b = Array("b".utf8)
        let first = try #require(store(arena, a))
        let second = try #require(store(arena, b))
        #expect(first.index != second.index)
        #expect(read(arena, first, a.count) == a)
        #expect(read(arena, second, b.count) == b)
        #expect(arena.inUse == 2)

        // Both in use: the next payload travels inline.
        #expect(store(arena, b) == nil)

        // A worker releases the second; only that chunk comes back, with a new generation — at
        // the next loop turn: this turn's rescan (the store above) found nothing, and a full
        // arena is rescanned once a turn, not for every job.
        arena.release(second)
        #expect(arena.inUse == 1)
        #expect(store(arena, b) == nil)
        arena.beginTurn()
        let third = try #require(store(arena, Array("c".utf8)))
        #expect(third.index == second.index && third.generation != second.generation)
        #expect(read(arena, third, 1) == Array("c".utf8))
        #expect(read(arena, first, a.count) == a, "a chunk in use is never overwritten")
        // Counted when sent, not when stored (a held job is staged again on every retry).
        #expect(arena.stored == 0 && arena.exhausted == 0)
        arena.noteSent(first, queue: 1)
        arena.noteSentInlineWhenFull()
        #expect(arena.stored == 1 && arena.exhausted == 1)
    }

    @Test func referencesOutOfRangeReadAsNil() throws {
        let arena = try PayloadArena(chunks: 2, chunkBytes: 64)
        let chunk = try #require(store(arena, [1]))
        #expect(read(arena, chunk, 64) != nil)
        #expect(read(arena, chunk, 65) == nil, "longer than a chunk")
        #expect(read(arena, PayloadArena.Chunk(index: 2, generation: 1), 1) == nil, "no such chunk")
        // A chunk is rounded up to 64 bytes, but no payload is longer than the limit it was made
        // for (msgmax − the record header): a reference to more is corrupt (re-sent inline, such
        // a payload would not fit one message).
        let odd = try PayloadArena(chunks: 1, chunkBytes: 8176)
        #expect(odd.chunkBytes == 8192 && odd.largestPayload == 8176)
        let whole = try #require(store(odd, [UInt8](repeating: 7, count: 8176)))
        #expect(read(odd, whole, 8176) != nil)
        #expect(read(odd, whole, 8177) == nil, "longer than the largest payload, though within the chunk")
        #expect(store(odd, [UInt8](repeating: 7, count: 8177)) == nil)
    }

    @Test func aStaleReferenceNeverFreesTheChunksNextUse() throws {
        let arena = try PayloadArena(chunks: 1, chunkBytes: 64)
        let old = try #require(store(arena, [1, 2, 3]))
        arena.release(old)                    // the worker took it
        let new = try #require(store(arena, [4, 5, 6]))
        #expect(new.index == old.index)
        arena.drop(old)                       // the master, later, for a reaped worker's message
        #expect(arena.inUse == 1)
        #expect(store(arena, [7]) == nil, "the chunk still holds the new payload")
        #expect(read(arena, new, 3) == [4, 5, 6])
        arena.drop(new)
        #expect(arena.inUse == 0)
    }

    @Test func outOfOrderReleasesAreReclaimedAndOversizedPayloadsStayInline() throws {
        let arena = try PayloadArena(chunks: 3, chunkBytes: 64)
        let chunks = try (0..<3).map { i in try #require(store(arena, [UInt8(i)])) }
        arena.release(chunks[2])              // the newest first: another queue's worker
        let again = try #require(store(arena, [9]))
        #expect(again.index == chunks[2].index)
        #expect(store(arena, Array(repeating: 0, count: 65)) == nil, "larger than a chunk")
    }

    @Test func chunksSentToARemovedQueueAreTakenBack() throws {
        let arena = try PayloadArena(chunks: 3, chunkBytes: 64)
        let kept = try #require(store(arena, [1]))
        let lost = try (0..<2).map { _ in try #require(store(arena, [2])) }
        arena.noteSent(kept, queue: 10)
        for chunk in lost { arena.noteSent(chunk, queue: 11) }
        arena.dropAll(sentTo: 11)
        #expect(arena.inUse == 1)
        #expect(read(arena, kept, 1) == [1])
    }

    /// A chunk reused for a job not sent yet no longer counts as sent to its previous use's queue.
    @Test func aReusedChunkForgetsItsPreviousQueue() throws {
        let arena = try PayloadArena(chunks: 1, chunkBytes: 64)
        let first = try #require(store(arena, [1]))
        arena.noteSent(first, queue: 11)
        arena.release(first)                  // its worker took it
        let second = try #require(store(arena, [2]))   // staged, not sent
        arena.dropAll(sentTo: 11)             // queue 11 removed from outside
        #expect(arena.inUse == 1)
        #expect(store(arena, [3]) == nil, "the staged job's chunk is still in use")
        #expect(read(arena, second, 1) == [2])
    }

    @Test func spilledRecordsRoundTripBesideInlineOnes() {
        let text = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
        defer { text.deallocate() }
        let chunk = PayloadArena.Chunk(index: 7, generation: 0xFFFF_FFFE)
        var end = JobCodec.encodeSpilledJob(id: 41, length: 4096, chunk: chunk, into: text, at: 0)
        #expect(end == JobCodec.spilledRecordBytes)
        end = Array("inline".utf8).withUnsafeBytes { JobCodec.encodeJob(id: 42, payload: $0, into: text, at: end) }
        end = JobCodec.encodeSpilledJob(id: 43, length: 0, chunk: chunk, into: text, at: end)
        let raw = UnsafeRawBufferPointer(text)

        let first = JobCodec.decodeJob(raw, length: end, at: 0)
        #expect(first?.id == 41 && first?.spill == JobCodec.Spill(chunk: chunk, length: 4096))
        let second = first.flatMap { JobCodec.decodeJob(raw, length: end, at: $0.end) }
        #expect(second?.id == 42 && second?.spill == nil)
        if let second { #expect(Array(text[second.payload]) == Array("inline".utf8)) }
        let third = second.flatMap { JobCodec.decodeJob(raw, length: end, at: $0.end) }
        #expect(third?.id == 43 && third?.spill?.length == 0 && third?.end == end)
        // A spilled record cut short decodes as nil.
        if let third {
            #expect(JobCodec.decodeJob(raw, length: end - 1, at: second!.end) == nil)
            _ = third
        }
    }
}

/// The reply rings, in this process (one process plays worker and master).
@Suite struct ReplyRingUnitTests {
    private func write(_ rings: ReplyRings, _ slot: Int, _ bytes: [UInt8]) -> UInt64? {
        bytes.withUnsafeBytes { rings.write(slot, $0) }
    }

    @Test func bodiesNeverWrapAndSpaceComesBackInOrder() throws {
        let rings = try ReplyRings(slots: 2, capacity: 256)
        let a = [UInt8](repeating: 1, count: 100), b = [UInt8](repeating: 2, count: 100), c = [UInt8](repeating: 3, count: 100)
        #expect(write(rings, 0, a) == 0)
        #expect(write(rings, 0, b) == 100)
        // 56 bytes left at the end, 0 free at the start: no room, the body goes inline.
        #expect(write(rings, 0, c) == nil)
        #expect(rings.pending(0) == 200)
        #expect(Array(try #require(rings.body(0, position: 100, length: 100))) == b)
        #expect(rings.consume(0, position: 0, length: 100))       // the master took a
        // c does not fit in the 56 bytes at the end: it starts the next lap, at offset 0.
        let position = try #require(write(rings, 0, c))
        #expect(position == 256 && position % 256 == 0)
        #expect(Array(try #require(rings.body(0, position: position, length: 100))) == c)
        #expect(Array(try #require(rings.body(0, position: 100, length: 100))) == b, "b is not overwritten before it is taken")
        #expect(rings.consume(0, position: 100, length: 100))
        #expect(rings.consume(0, position: position, length: 100))
        #expect(rings.pending(0) == 0)
        // Slots are independent, and a reset empties one.
        #expect(write(rings, 1, a) == 0)
        rings.reset(1)
        #expect(rings.pending(1) == 0)
        #expect(write(rings, 1, [UInt8](repeating: 0, count: 257)) == nil, "larger than the ring")
        #expect(rings.body(0, position: 200, length: 100) == nil, "a body may not run past the ring's end")
        #expect(write(rings, 2, a) == nil, "a slot beyond the rings replies inline")
    }

    /// The reply queue belongs to the workers' user (`--user`), so a record may be forged: a
    /// reference that overflows, runs past what was written or behind what was taken is refused
    /// (it trapped the master, or moved the head past replies not yet taken); a head the worker
    /// finds past its tail means no room, not a trap.
    @Test func aForgedReferenceMovesNothing() throws {
        let rings = try ReplyRings(slots: 1, capacity: 256)
        let a = [UInt8](repeating: 1, count: 100)
        #expect(write(rings, 0, a) == 0)
        #expect(!rings.consume(0, position: UInt64.max - 10, length: 100), "overflow")
        #expect(!rings.consume(0, position: 100, length: 100), "past the tail")
        #expect(rings.pending(0) == 100)
        #expect(rings.consume(0, position: 0, length: 100))
        #expect(!rings.consume(0, position: 0, length: 50), "behind the head")
        #expect(rings.pending(0) == 0)
        #expect(write(rings, 0, a) == 100)
        // Its end is between head and tail, its start behind the head: not a body the ring holds.
        #expect(!rings.holds(0, position: 50, length: 100) && !rings.consume(0, position: 50, length: 100))
        #expect(rings.holds(0, position: 100, length: 100) && rings.consume(0, position: 100, length: 100))
        #expect(!rings.consume(1, position: 0, length: 0) && !rings.consume(0, position: 0, length: -1))
    }

    @Test func spilledRepliesRoundTripBesideInlineOnes() {
        let text = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
        defer { text.deallocate() }
        var end = JobCodec.encodeSpilledReply(id: 7, status: .ok, slot: 513, length: 5000, position: 1 << 40, into: text, at: 0)
        #expect(end == JobCodec.spilledRecordBytes)
        end = Array("inline".utf8).withUnsafeBytes { JobCodec.encodeReply(id: 8, status: .handlerError, slot: 1, body: $0, into: text, at: end) }
        let raw = UnsafeRawBufferPointer(text)
        let first = JobCodec.decodeReply(raw, length: end, at: 0)
        #expect(first?.id == 7 && first?.slot == 513 && first?.status == .ok)
        #expect(first?.spill == JobCodec.RingSpill(position: 1 << 40, length: 5000))
        let second = first.flatMap { JobCodec.decodeReply(raw, length: end, at: $0.end) }
        #expect(second?.id == 8 && second?.spill == nil && second?.end == end)
        #expect(JobCodec.decodeReply(raw, length: JobCodec.spilledRecordBytes - 1, at: 0) == nil)
    }
}

/// Large payloads through the built server: intact, in order, and every chunk comes back —
/// also when a worker dies holding spilled jobs or its queue is removed.
@Suite(.serialized) struct PayloadArenaIntegrationTests {
    private func status(_ server: TestServer) throws -> [String: Any] {
        let text = try ControlClient.send("status json", controlSocket: server.socketPath + ".ctl")
        return try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
    }

    private func arena(_ server: TestServer) throws -> [String: Int] {
        try #require(try status(server)["arena"] as? [String: Int], "status json has no arena")
    }

    /// Indices of replies that are not ok or differ from their request.
    private func mismatches(_ replies: [PoolClient.Response], _ payloads: [[UInt8]]) -> [Int] {
        zip(replies, payloads).enumerated().filter { $1.0.statusByte != 0 || $1.0.body != $1.1 }.map(\.offset)
    }

    /// Closes the client, stops the server with SIGTERM: it exits 0 without warning of a chunk left taken.
    private func stopCleanly(_ server: TestServer, _ client: PoolClient, sourceLocation: SourceLocation = #_sourceLocation) {
        client.close()
        server.signal(SIGTERM)
        #expect(server.waitForExit() == 0, sourceLocation: sourceLocation)
        #expect(!server.log.contains("chunks still taken at exit"), sourceLocation: sourceLocation)
    }

    /// Distinct payloads; each byte depends on the index and position, so a payload read from the
    /// wrong chunk, or a chunk overwritten too early, cannot go unnoticed.
    private func payload(_ index: Int, size: Int) -> [UInt8] {
        let prefix = Array("p\(index):".utf8)
        return prefix + (0..<max(0, size - prefix.count)).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ index &* 7) }
    }

    @Test func largePayloadsArriveIntactAndEveryChunkComesBack() throws {
        // Four chunks for 2 workers and 40 requests in flight: the arena runs full, so payloads
        // also travel inline, and chunks are reused many times.
        let server = try TestServer(["--workers", "2", "--protocol", "framed", "--reply", "result",
                                     "--handler", "sim", "--arena-chunks", "4"])
        defer { server.stop() }
        let sizes = [1023, 1024, 4096, 8176, 2000]
        let client = try PoolClient(socketPath: server.socketPath)
        var sent = 0
        for round in 0..<8 {
            let payloads = (0..<40).map { i in payload(round * 40 + i, size: sizes[(round + i) % sizes.count]) }
            let replies = try client.pipeline(payloads)
            #expect(replies.map(\.statusByte) == Array(repeating: 0, count: payloads.count))
            let wrong = mismatches(replies, payloads)
            #expect(wrong.isEmpty, "round \(round): replies \(wrong) differ from their requests")
            sent += payloads.count
        }
        var counts = try arena(server)
        #expect(counts["chunks"] == 4)
        let eligible = sent * 4 / 5   // every size but 1023 is at least --spill-bytes (1024)
        #expect(counts["spilled", default: 0] > 0 && counts["inline_when_full", default: 0] > 0, "\(counts)")
        #expect(counts["spilled", default: 0] + counts["inline_when_full", default: 0] == eligible, "\(counts)")
        #expect(waitUntil(timeout: 10) { (try? arena(server)["in_use"]) == 0 }, "\(String(describing: try? arena(server)))")
        #expect(counts["replies_spilled", default: 0] > 0, "echoed bodies come back through the reply rings: \(counts)")

        // Below --spill-bytes nothing is spilled.
        let before = counts["spilled", default: 0] + counts["inline_when_full", default: 0]
        let small = (0..<10).map { payload(1000 + $0, size: 1023) }
        #expect(try client.pipeline(small).map(\.body) == small)
        counts = try arena(server)
        #expect(counts["spilled", default: 0] + counts["inline_when_full", default: 0] == before, "\(counts)")
        stopCleanly(server, client)
    }

    /// Ack mode: every payload, spilled or not, reaches a worker exactly once and whole (the log
    /// handler logs its length and bytes).
    @Test func acknowledgedSpilledMessagesAreEachHandledOnceAndWhole() throws {
        let server = try TestServer(["--workers", "2", "--handler", "log", "--spill-bytes", "1"])
        defer { server.stop() }
        // At most 190 bytes: the log line shows such a message whole, so it is compared byte for
        // byte (larger payloads through the arena are compared exactly in result mode above).
        let messages = (0..<200).map { i in "m\(i)-" + String(repeating: "abcdefghij", count: (i * 7) % 19) + "\(i % 10)" }
        for message in messages {
            #expect(try PoolClient.oneshot(socketPath: server.socketPath, message: Array(message.utf8), timeout: 30) == Array("ok".utf8))
        }
        #expect(waitUntil(timeout: 20) { (try? arena(server)["in_use"]) == 0 })
        #expect(try arena(server)["spilled", default: 0] > 0)
        server.signal(SIGINT)
        #expect(server.waitForExit() == 0)
        let lines = recvLines(in: server.log)
        var counts: [String: Int] = [:]
        for line in lines where line.length == line.message.utf8.count { counts[line.message, default: 0] += 1 }
        let wrong = messages.indices.filter { counts[messages[$0]] != 1 }
        #expect(wrong.isEmpty, "messages not logged exactly once, whole: \(wrong.prefix(20))")
        #expect(lines.count == messages.count)
    }

    /// The smallest reply ring (one msgmax): large replies often find it full or at its end, so
    /// they also travel inline and the ring wraps; every reply is still whole and in order.
    @Test func aSmallReplyRingWrapsAndOverflowsInline() throws {
        let server = try TestServer(["--workers", "2", "--protocol", "framed", "--reply", "result", "--handler", "sim",
                                     "--reply-ring", "\(FramedSupport.kernelMsgmax())", "--batch-time", "0.01"])
        defer { server.stop() }
        let client = try PoolClient(socketPath: server.socketPath)
        for round in 0..<5 {
            let payloads = (0..<48).map { i in payload(round * 48 + i, size: [3000, 5000, 1500, 8176][i % 4]) }
            let replies = try client.pipeline(payloads)
            let wrong = mismatches(replies, payloads)
            #expect(replies.count == payloads.count && wrong.isEmpty, "round \(round): replies \(wrong) differ")
        }
        #expect(try arena(server)["replies_spilled", default: 0] > 0)
        stopCleanly(server, client)
    }

    /// Every queue full while payloads spill: one worker sleeps, its 8 KiB queue fills with
    /// records and, once the 4 chunks are taken, with inline payloads; the rest are held in the
    /// master (their chunks given back while they wait) and sent as room appears. Every reply is
    /// whole and in order, and every chunk comes back.
    @Test func heldJobsWithSpilledPayloadsAreAllAnsweredWhole() throws {
        let server = try TestServer(["--workers", "1", "--protocol", "framed", "--reply", "result", "--handler", "sim",
                                     "--spill-bytes", "1", "--arena-chunks", "4", "--queue-bytes", "\(FramedSupport.kernelMsgmax())",
                                     "--max-inflight", "1000"])
        defer { server.stop() }
        let client = try PoolClient(socketPath: server.socketPath, timeout: 60)
        let payloads = [Array("sleep:5000".utf8)] + (1..<300).map { payload($0, size: 1000 + $0 % 7) }
        for payload in payloads { try client.send(payload) }
        #expect(waitUntil(timeout: 20) { ((try? status(server)["held_requests"]) as? Int ?? 0) > 0 },
                "no request was held: the queue never filled")
        let replies = try payloads.map { _ in try client.receive() }
        let wrong = mismatches(replies, payloads)
        #expect(wrong.isEmpty, "replies \(wrong.prefix(20)) differ from their requests")
        let counts = try arena(server)
        #expect(waitUntil(timeout: 10) { (try? arena(server)["in_use"]) == 0 }, "\(counts)")
        #expect(counts["spilled", default: 0] > 0 && counts["inline_when_full", default: 0] > 0, "\(counts)")
        #expect(counts["spilled", default: 0] + counts["inline_when_full", default: 0] == payloads.count,
                "each job counted once, when sent: \(counts)")
        stopCleanly(server, client)
    }

    /// `--dispatch shared` and the one job queue removed from outside while both workers sleep
    /// with spilled jobs waiting in it: those jobs are lost (status 5), and their chunks come back
    /// once the last worker that read the old queue has been reaped (only their return is checked,
    /// not the moment).
    @Test func chunksLostWithARemovedSharedQueueComeBack() throws {
        let server = try TestServer(["--workers", "2", "--protocol", "framed", "--reply", "result", "--handler", "sim",
                                     "--dispatch", "shared", "--spill-bytes", "1", "--batch-time", "0"])
        defer { server.stop() }
        let workers = try #require(try status(server)["workers"] as? [[String: Any]])
        let queue = try #require(workers.first?["queue_id"] as? Int)
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        // Sleeps long enough for every step below on a slow machine: a and b must still be queued.
        let payloads = ["sleep:5000", "sleep:5000", "a", "b"].map(\.bytes)
        // Both workers asleep first, so a and b can only wait in the queue.
        for payload in payloads.prefix(2) { try client.send(payload) }
        let bothBusy = waitUntil(timeout: 20) {
            ((try? status(server)["workers"]) as? [[String: Any]])?.filter { $0["state"] as? String == "busy" }.count == 2
        }
        try #require(bothBusy, "both workers should be running a sleep")
        for payload in payloads.suffix(2) { try client.send(payload) }
        #expect(waitUntil(timeout: 20) { (try? MessageQueue(id: Int32(queue)).status().messages) == 2 },
                "a and b waiting in the queue")
        #expect(try arena(server)["in_use"] == 2)
        try MessageQueue(id: Int32(queue)).remove()

        let replies = try payloads.map { _ in try client.receive() }
        #expect(replies.map(\.statusByte) == [0, 0, 5, 5], "\(replies.map(\.statusByte))\n\(server.log)")
        #expect(waitUntil(timeout: 10) { (try? arena(server)["in_use"]) == 0 }, "\(String(describing: try? arena(server)))")
        let after = (0..<6).map { "after-\($0)".bytes }
        #expect(try client.pipeline(after).map(\.body) == after)
        stopCleanly(server, client)
        #expect(!existingQueueIDs().contains(Int32(queue)))
    }

    @Test func noArenaWithSpillBytesZero() throws {
        let server = try TestServer(["--workers", "1", "--protocol", "framed", "--reply", "result",
                                     "--handler", "sim", "--spill-bytes", "0"])
        defer { server.stop() }
        let client = try PoolClient(socketPath: server.socketPath)
        let big = payload(1, size: 8000)
        #expect(try client.pipeline([big]).map(\.body) == [big])
        #expect(try status(server)["arena"] == nil)
        stopCleanly(server, client)
    }
}
