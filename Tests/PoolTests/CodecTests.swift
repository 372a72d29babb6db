import Foundation
@testable import Pool
import Testing

// Pure, in-memory tests: the framed protocol, the queue records, and the small containers the
// master's loop is built from. Nothing here touches the kernel.

// MARK: - Helpers

private func bigEndian(_ value: UInt32) -> [UInt8] {
    [UInt8(value >> 24), UInt8((value >> 16) & 0xFF), UInt8((value >> 8) & 0xFF), UInt8(value & 0xFF)]
}

private func requestFrame(_ payload: [UInt8]) -> [UInt8] {
    var out: [UInt8] = []
    payload.withUnsafeBytes { FrameCodec.appendRequest($0, to: &out) }
    return out
}

private func decode(_ bytes: [UInt8], maxPayload: Int) -> FrameCodec.Decoded {
    bytes.withUnsafeBytes { FrameCodec.decodeRequest($0, maxPayload: maxPayload) }
}

/// Decodes every complete request at the start of `bytes`; returns the payloads, the bytes they
/// used, and what the decoder said about the rest.
private func decodeAll(_ bytes: UnsafeRawBufferPointer, maxPayload: Int) -> (payloads: [[UInt8]], consumed: Int, rest: FrameCodec.Decoded) {
    var payloads: [[UInt8]] = []
    var offset = 0
    while true {
        let rest = UnsafeRawBufferPointer(rebasing: bytes[offset...])
        let decoded = FrameCodec.decodeRequest(rest, maxPayload: maxPayload)
        guard case .request(let start, let length) = decoded else { return (payloads, offset, decoded) }
        payloads.append(Array(rest[start..<(start + length)]))
        offset += start + length
    }
}

private func decodeResponse(_ bytes: [UInt8]) -> (status: UInt8, body: Range<Int>, total: Int)? {
    bytes.withUnsafeBytes { FrameCodec.decodeResponse($0) }
}

private func bytes(_ n: Int, seed: Int) -> [UInt8] { (0..<n).map { UInt8(truncatingIfNeeded: $0 * 7 + seed) } }

/// Everything in this file, grouped so `--filter CodecTests` selects all of it.
@Suite struct CodecTests {}

// MARK: - FrameCodec

extension CodecTests {
    @Suite struct FrameCodecTests {
        static let payloads: [[UInt8]] = [
            Array("hello".utf8), [], [0, 0, 0, 0], bytes(300, seed: 1), [0xFF], [], bytes(17, seed: 5), Array("GET /".utf8),
        ]
        static let stream: [UInt8] = payloads.flatMap(requestFrame)

        @Test func requestEncodingIsBigEndianLengthThenPayload() {
            #expect(requestFrame([]) == [0, 0, 0, 0])
            #expect(requestFrame([9, 8, 7]) == [0, 0, 0, 3, 9, 8, 7])
            #expect(requestFrame(bytes(258, seed: 0)).prefix(4) == [0, 0, 1, 2])
            #expect(FrameCodec.lengthBytes == 4)
            #expect(FrameCodec.responseHeaderBytes == 5)
            #expect(FrameCodec.garbageLength == 1 << 30)
        }

        /// Every prefix of the stream decodes to exactly the requests that lie wholly inside it, and
        /// reports what the next one needs.
        @Test func everyPrefixDecodesTheCompleteRequests() {
            let stream = Self.stream
            // Frame boundaries: frame i occupies starts[i] ..< starts[i + 1].
            var starts = [0]
            for payload in Self.payloads { starts.append(starts.last! + 4 + payload.count) }
            #expect(starts.last == stream.count)

            for prefix in 0...stream.count {
                let result = stream.withUnsafeBytes {
                    decodeAll(UnsafeRawBufferPointer(rebasing: $0[0..<prefix]), maxPayload: 1000)
                }
                let complete = starts.dropFirst().filter { $0 <= prefix }.count
                #expect(result.payloads == Array(Self.payloads.prefix(complete)), "prefix \(prefix)")
                #expect(result.consumed == starts[complete], "prefix \(prefix)")
                let leftover = prefix - starts[complete]
                if complete == Self.payloads.count {
                    #expect(result.rest == .incomplete(needed: nil))
                } else if leftover < 4 {
                    #expect(result.rest == .incomplete(needed: nil), "prefix \(prefix)")
                } else {
                    #expect(result.rest == .incomplete(needed: 4 + Self.payloads[complete].count), "prefix \(prefix)")
                }
            }
        }

        /// Split the stream in two at every byte boundary and feed it through a ByteBuffer as the
        /// master does: the requests come out the same.
        @Test func streamSplitAtEveryBoundaryDecodesTheSame() {
            let stream = Self.stream
            for split in 0...stream.count {
                let buffer = ByteBuffer(capacity: 16)
                var decoded: [[UInt8]] = []
                for part in [stream[0..<split], stream[split...]] {
                    buffer.append(Array(part))
                    let result = decodeAll(buffer.readable, maxPayload: 1000)
                    decoded += result.payloads
                    buffer.consume(result.consumed)
                }
                #expect(decoded == Self.payloads, "split at \(split)")
                #expect(buffer.isEmpty, "split at \(split)")
            }
        }

        /// Byte by byte (a split at every boundary at once).
        @Test func streamFedOneByteAtATimeDecodesTheSame() {
            let buffer = ByteBuffer(capacity: 16)
            var decoded: [[UInt8]] = []
            for byte in Self.stream {
                buffer.append([byte])
                let result = decodeAll(buffer.readable, maxPayload: 1000)
                decoded += result.payloads
                buffer.consume(result.consumed)
            }
            #expect(decoded == Self.payloads)
            #expect(buffer.isEmpty)
        }

        @Test func zeroLengthRequest() {
            #expect(decode([0, 0, 0, 0], maxPayload: 0) == .request(payloadStart: 4, length: 0))
            #expect(decode([0, 0, 0, 0, 0xAA], maxPayload: 10) == .request(payloadStart: 4, length: 0))
            #expect(decode([], maxPayload: 10) == .incomplete(needed: nil))
            #expect(decode([0, 0, 0], maxPayload: 10) == .incomplete(needed: nil))
        }

        @Test func limitsOfTheDeclaredLength() {
            let max = 100
            // Exactly maxPayload: fine, and incomplete until every byte is there.
            let exact = requestFrame(bytes(max, seed: 2))
            #expect(decode(exact, maxPayload: max) == .request(payloadStart: 4, length: max))
            #expect(decode(Array(exact.dropLast()), maxPayload: max) == .incomplete(needed: 4 + max))
            #expect(decode(Array(exact.prefix(4)), maxPayload: max) == .incomplete(needed: 4 + max))
            // One more: too large, known from the header alone.
            #expect(decode(bigEndian(UInt32(max + 1)), maxPayload: max) == .tooLarge(length: UInt32(max + 1)))
            #expect(decode(requestFrame(bytes(max + 1, seed: 2)), maxPayload: max) == .tooLarge(length: UInt32(max + 1)))
            #expect(decode(bigEndian(1), maxPayload: 0) == .tooLarge(length: 1))
            // Garbage from 1 << 30 up, whatever the configured limit.
            #expect(decode(bigEndian(1 << 30), maxPayload: max) == .garbage(length: 1 << 30))
            #expect(decode(bigEndian(1 << 30), maxPayload: Int(UInt32.max)) == .garbage(length: 1 << 30))
            #expect(decode(bigEndian(.max), maxPayload: Int.max) == .garbage(length: .max))
            #expect(decode(bigEndian((1 << 30) - 1), maxPayload: max) == .tooLarge(length: (1 << 30) - 1))
            #expect(decode(bigEndian((1 << 30) - 1), maxPayload: 1 << 30) == .incomplete(needed: 4 + (1 << 30) - 1))
            // An HTTP request is garbage.
            #expect(decode(Array("GET / HTTP/1.1\r\n".utf8), maxPayload: 1 << 20) == .garbage(length: 0x4745_5420))
        }

        @Test func responseRoundTrip() {
            for status in ResponseStatus.allCases {
                for body in [[], Array("boom".utf8), bytes(1000, seed: Int(status.rawValue))] {
                    var out: [UInt8] = []
                    body.withUnsafeBytes { FrameCodec.appendResponse(status: status, body: $0, to: &out) }
                    #expect(out.count == FrameCodec.responseHeaderBytes + body.count)
                    #expect(Array(out.prefix(4)) == bigEndian(UInt32(body.count + 1)))
                    #expect(out[4] == status.rawValue)
                    let decoded = decodeResponse(out)
                    #expect(decoded?.status == status.rawValue)
                    #expect(decoded?.total == out.count)
                    if let decoded { #expect(Array(out[decoded.body]) == body) }
                    // Every strict prefix is incomplete.
                    for cut in 0..<out.count { #expect(decodeResponse(Array(out.prefix(cut))) == nil, "cut \(cut)") }
                }
            }
            // Exact bytes of an empty ok response.
            var ok: [UInt8] = []
            [UInt8]().withUnsafeBytes { FrameCodec.appendResponse(status: .ok, body: $0, to: &ok) }
            #expect(ok == [0, 0, 0, 1, 0])
            let empty = decodeResponse(ok)
            #expect(empty?.status == 0 && empty?.body == 5..<5 && empty?.total == 5)
        }

        @Test func responsesBackToBackAndZeroLength() {
            var out: [UInt8] = []
            Array("first".utf8).withUnsafeBytes { FrameCodec.appendResponse(status: .ok, body: $0, to: &out) }
            Array("2nd".utf8).withUnsafeBytes { FrameCodec.appendResponse(status: .busy, body: $0, to: &out) }
            let first = decodeResponse(out)
            #expect(first?.status == ResponseStatus.ok.rawValue)
            #expect(first?.total == 10)
            let second = decodeResponse(Array(out.dropFirst(10)))
            #expect(second?.status == ResponseStatus.busy.rawValue)
            if let second { #expect(Array(out.dropFirst(10)[(10 + second.body.lowerBound)..<(10 + second.body.upperBound)]) == Array("2nd".utf8)) }
            #expect(second?.total == 8)

            // Length 0 (no status byte): bad request, empty body, 4 bytes used.
            let zero = decodeResponse([0, 0, 0, 0, 0xAB])
            #expect(zero?.status == ResponseStatus.badRequest.rawValue)
            #expect(zero?.body == 4..<4)
            #expect(zero?.total == 4)
        }

        /// 20,000 random buffers: decodeRequest never crashes and every answer agrees with an
        /// independent reading of the first four bytes; every request lies inside the buffer.
        @Test func fuzzDecodeRequest() {
            var rng = SplitMix64(seed: 0x5EED_CAFE_F00D_0001)
            let limits = [0, 1, 16, 64, 1000, 1 << 20, 1 << 30, Int(UInt32.max), Int.max]
            var seen = (request: 0, incomplete: 0, tooLarge: 0, garbage: 0)
            for iteration in 0..<20_000 {
                let count = Int(rng.next() % 80)
                var buffer = (0..<count).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
                // Bias towards small lengths half the time, so complete requests are common.
                if count >= 4 && rng.next() % 2 == 0 {
                    buffer[0] = 0
                    buffer[1] = 0
                    buffer[2] = 0
                    buffer[3] = UInt8(rng.next() % 90)
                }
                let maxPayload = limits[Int(rng.next() % UInt64(limits.count))]
                let decoded = decode(buffer, maxPayload: maxPayload)
                let declared: UInt32? = count >= 4
                    ? UInt32(buffer[0]) << 24 | UInt32(buffer[1]) << 16 | UInt32(buffer[2]) << 8 | UInt32(buffer[3]) : nil
                switch decoded {
                case .request(let payloadStart, let length):
                    seen.request += 1
                    #expect(payloadStart == 4 && length >= 0 && payloadStart + length <= count, "iteration \(iteration)")
                    #expect(declared.map(Int.init) == length && length <= maxPayload, "iteration \(iteration)")
                case .incomplete(let needed):
                    seen.incomplete += 1
                    if let needed {
                        #expect(needed > count && needed == 4 + Int(declared ?? 0) && declared != nil, "iteration \(iteration)")
                        #expect(Int(declared ?? 0) <= maxPayload && declared! < 1 << 30, "iteration \(iteration)")
                    } else {
                        #expect(count < 4, "iteration \(iteration)")
                    }
                case .tooLarge(let length):
                    seen.tooLarge += 1
                    #expect(declared == length && Int(length) > maxPayload && length < 1 << 30, "iteration \(iteration)")
                case .garbage(let length):
                    seen.garbage += 1
                    #expect(declared == length && length >= 1 << 30, "iteration \(iteration)")
                }
            }
            // The generator exercised every outcome.
            #expect(seen.request > 100 && seen.incomplete > 100 && seen.tooLarge > 100 && seen.garbage > 100, "\(seen)")
        }
    }
}

// MARK: - JobCodec

extension CodecTests {
    @Suite struct JobCodecTests {
        @Test func constants() {
            #expect(JobCodec.headerBytes == 16)
            #expect(JobCodec.jobType == 1)
            #expect(JobCodec.quitType == 2)
            #expect(JobCodec.replyType == 1)
            #expect(JobCodec.jobType != JobCodec.quitType)
        }

        @Test func jobRoundTrip() {
            let text = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
            defer { text.deallocate() }
            let payload = Array("hello".utf8)
            let end = payload.withUnsafeBytes { JobCodec.encodeJob(id: 0xDEAD_BEEF_CAFE_BABE, payload: $0, into: text, at: 0) }
            #expect(end == 21)
            let job = JobCodec.decodeJob(UnsafeRawBufferPointer(text), length: end, at: 0)
            #expect(job == JobCodec.Job(id: 0xDEAD_BEEF_CAFE_BABE, payload: 16..<21))
            if let job { #expect(Array(text[job.payload]) == payload) }
            // Native-endian header fields as documented.
            #expect(text.loadUnaligned(fromByteOffset: 8, as: UInt32.self) == 5)
            #expect(text.loadUnaligned(fromByteOffset: 12, as: UInt32.self) == 0)
        }

        @Test func replyRoundTrip() {
            let text = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
            defer { text.deallocate() }
            for status in ResponseStatus.allCases {
                for (slot, body) in [(0, [UInt8]()), (3, Array("result".utf8)), (65535, bytes(40, seed: 9))] {
                    let id = UInt64(status.rawValue) << 40 | UInt64(slot)
                    let end = body.withUnsafeBytes {
                        JobCodec.encodeReply(id: id, status: status, slot: slot, body: $0, into: text, at: 0)
                    }
                    #expect(end == 16 + body.count)
                    let reply = JobCodec.decodeReply(UnsafeRawBufferPointer(text), length: end, at: 0)
                    #expect(reply == JobCodec.Reply(id: id, status: status, slot: slot, body: 16..<(16 + body.count)))
                    if let reply { #expect(Array(text[reply.body]) == body) }
                }
            }
            // An unknown status byte reads as a handler error rather than failing.
            let end = [UInt8]().withUnsafeBytes { JobCodec.encodeReply(id: 1, status: .ok, slot: 2, body: $0, into: text, at: 0) }
            text[12] = 200
            #expect(JobCodec.decodeReply(UnsafeRawBufferPointer(text), length: end, at: 0)?.status == .handlerError)
        }

        @Test func multipleRecordsBackToBackAtUnalignedOffsets() {
            let text = UnsafeMutableRawBufferPointer.allocate(byteCount: 1024, alignment: 8)
            defer { text.deallocate() }
            let payloads: [[UInt8]] = [Array("abc".utf8), [], bytes(101, seed: 4), [0], Array("last one".utf8)]
            var offset = 0
            for (i, payload) in payloads.enumerated() {
                offset = payload.withUnsafeBytes { JobCodec.encodeJob(id: UInt64(1000 + i), payload: $0, into: text, at: offset) }
            }
            #expect(offset == payloads.reduce(0) { $0 + 16 + $1.count })

            var decoded: [(UInt64, [UInt8])] = []
            var at = 0
            while at < offset, let job = JobCodec.decodeJob(UnsafeRawBufferPointer(text), length: offset, at: at) {
                decoded.append((job.id, Array(text[job.payload])))
                at = job.payload.upperBound
            }
            #expect(at == offset)
            #expect(decoded.map(\.0) == (0..<payloads.count).map { UInt64(1000 + $0) })
            #expect(decoded.map(\.1) == payloads)

            // Replies back to back, too.
            var end = 0
            for (i, body) in payloads.enumerated() {
                end = body.withUnsafeBytes {
                    JobCodec.encodeReply(id: UInt64(i), status: .ok, slot: i, body: $0, into: text, at: end)
                }
            }
            var replies: [JobCodec.Reply] = []
            at = 0
            while at < end, let reply = JobCodec.decodeReply(UnsafeRawBufferPointer(text), length: end, at: at) {
                replies.append(reply)
                at = reply.body.upperBound
            }
            #expect(replies.map(\.slot) == Array(0..<payloads.count))
            #expect(replies.map { Array(text[$0.body]) } == payloads)
        }

        @Test func truncatedRecordsDecodeAsNil() {
            let text = UnsafeMutableRawBufferPointer.allocate(byteCount: 256, alignment: 8)
            defer { text.deallocate() }
            let first = Array("12345".utf8).withUnsafeBytes { JobCodec.encodeJob(id: 1, payload: $0, into: text, at: 0) }
            let end = Array("abcdefgh".utf8).withUnsafeBytes { JobCodec.encodeJob(id: 2, payload: $0, into: text, at: first) }
            let raw = UnsafeRawBufferPointer(text)
            #expect(JobCodec.decodeJob(raw, length: end, at: first)?.id == 2)
            // Payload cut short, header cut short, nothing at all.
            for length in [end - 1, first + 16, first + 15, first + 1, first] {
                #expect(JobCodec.decodeJob(raw, length: length, at: first) == nil, "length \(length)")
                #expect(JobCodec.decodeReply(raw, length: length, at: first) == nil, "length \(length)")
            }
            #expect(JobCodec.decodeJob(raw, length: 0, at: 0) == nil)
            // A length field claiming more than is there (the top bit would mean "spilled").
            text.storeBytes(of: UInt32(Int32.max), toByteOffset: 8, as: UInt32.self)
            #expect(JobCodec.decodeJob(raw, length: end, at: 0) == nil)
            #expect(JobCodec.decodeReply(raw, length: end, at: 0) == nil)
        }
    }
}

// MARK: - ResponseStatus

extension CodecTests {
    @Suite struct ResponseStatusTests {
        @Test func rawValuesAsDocumented() {
            let expected: [(ResponseStatus, UInt8)] = [
                (.ok, 0), (.handlerError, 1), (.busy, 2), (.tooLarge, 3),
                (.timeout, 4), (.workerDied, 5), (.shuttingDown, 6), (.badRequest, 7),
            ]
            for (status, raw) in expected {
                #expect(status.rawValue == raw)
                #expect(ResponseStatus(rawValue: raw) == status)
            }
            #expect(ResponseStatus.allCases.count == 8)
            #expect(ResponseStatus(rawValue: 8) == nil)
            #expect(ResponseStatus(rawValue: 255) == nil)
            #expect(Set(ResponseStatus.allCases.map(\.description)).count == 8)
            #expect(ResponseStatus.workerDied.description == "worker died")
        }
    }
}

// MARK: - FIFO

extension CodecTests {
    @Suite struct FIFOTests {
        /// Several at the front, in their order: into the room removals left, and (no room, or
        /// not enough) by a rebuild.
        @Test func prependingSeveralKeepsTheirOrder() {
            var fifo = FIFO<Int>()
            for value in 1...6 { fifo.append(value) }
            _ = fifo.removeFirst()
            _ = fifo.removeFirst()
            _ = fifo.removeFirst()
            fifo.prepend(contentsOf: [10, 11])            // room for both
            #expect(Array(fifo.elements) == [10, 11, 4, 5, 6])
            fifo.prepend(contentsOf: [20, 21, 22])        // room for one only
            #expect(Array(fifo.elements) == [20, 21, 22, 10, 11, 4, 5, 6])
            fifo.prepend(contentsOf: [])
            #expect(fifo.count == 8 && fifo.first == 20)
            var drained: [Int] = []
            while let value = fifo.removeFirst() { drained.append(value) }
            #expect(drained == [20, 21, 22, 10, 11, 4, 5, 6])
            fifo.prepend(contentsOf: [1, 2])              // empty again
            #expect(Array(fifo.elements) == [1, 2])
        }

        @Test func emptyFIFO() {
            var fifo = FIFO<Int>()
            #expect(fifo.isEmpty && fifo.count == 0 && fifo.first == nil)
            let none = fifo.removeFirst()
            #expect(none == nil)
            let missing = fifo.remove(1)
            #expect(missing == false)
            let all = fifo.removeAll()
            #expect(all.isEmpty)
        }

        @Test func orderAcrossTheCompactionThreshold() {
            var fifo = FIFO<Int>()
            for i in 0..<3000 { fifo.append(i) }
            for i in 0..<1500 { // compacts at head 1500 (>= 1024 and half of 3000)
                let value = fifo.removeFirst()
                #expect(value == i)
            }
            #expect(fifo.count == 1500)
            #expect(fifo.first == 1500)
            for i in 3000..<3100 { fifo.append(i) }
            var rest: [Int] = []
            while let value = fifo.removeFirst() { rest.append(value) }
            #expect(rest == Array(1500..<3100))
            #expect(fifo.isEmpty)
        }

        @Test func interleavedAgainstAReference() {
            var fifo = FIFO<Int>()
            var reference: [Int] = []
            var rng = SplitMix64(seed: 42)
            var next = 0
            for _ in 0..<20_000 {
                if rng.next() % 3 != 0 {
                    fifo.append(next)
                    reference.append(next)
                    next += 1
                } else {
                    let expected = reference.isEmpty ? nil : reference.removeFirst()
                    let value = fifo.removeFirst()
                    #expect(value == expected)
                }
                if fifo.count != reference.count || fifo.first != reference.first {
                    Issue.record("diverged: count \(fifo.count) vs \(reference.count)")
                    return
                }
            }
            let rest = fifo.removeAll()
            #expect(rest == reference)
            #expect(fifo.isEmpty)
        }

        @Test func removeValue() {
            var fifo = FIFO<Int>()
            for i in 0..<2000 { fifo.append(i) }
            for _ in 0..<1100 { fifo.removeFirst() } // head past the compaction threshold
            let head = fifo.remove(1100)
            #expect(head)
            #expect(fifo.first == 1101)
            let middle = fifo.remove(1500)
            let tail = fifo.remove(1999)
            #expect(middle && tail)
            let again = fifo.remove(1500) // already gone
            let early = fifo.remove(5)    // removed earlier by removeFirst
            let never = fifo.remove(99_999)
            #expect(!again && !early && !never)
            #expect(fifo.count == 2000 - 1100 - 3)
            let rest = fifo.removeAll()
            #expect(rest == Array(1101..<1500) + Array(1501..<1999))
            #expect(fifo.isEmpty && fifo.count == 0)
            fifo.append(7)
            #expect(fifo.first == 7 && fifo.count == 1)
        }
    }
}

// MARK: - ByteBuffer

extension CodecTests {
    @Suite struct ByteBufferTests {
        @Test func appendAndConsume() {
            let buffer = ByteBuffer(capacity: 4)
            #expect(buffer.capacity == 0) // lazy: nothing until first use
            #expect(buffer.isEmpty && buffer.readableCount == 0)
            buffer.append(Array("hello world".utf8))
            #expect(buffer.capacity == 16) // the minimum first allocation
            #expect(Array(buffer.readable) == Array("hello world".utf8))
            buffer.consume(6)
            #expect(Array(buffer.readable) == Array("world".utf8))
            buffer.append([])
            #expect(buffer.readableCount == 5)
            buffer.append(Array("!".utf8))
            #expect(Array(buffer.readable) == Array("world!".utf8))
            buffer.consume(6)
            #expect(buffer.isEmpty)
            // Fully consumed: positions reset, the whole capacity is writable again.
            #expect(buffer.writableSpace(minimum: 1, limit: 16).count == buffer.capacity)
        }

        @Test func appendGrowsPastCapacityKeepingContents() {
            let buffer = ByteBuffer(capacity: 16)
            let data = bytes(1000, seed: 3)
            for chunk in stride(from: 0, to: data.count, by: 37) {
                buffer.append(Array(data[chunk..<min(chunk + 37, data.count)]))
            }
            #expect(Array(buffer.readable) == data)
            #expect(buffer.capacity >= 1000)
        }

        @Test func writableSpaceCompactsBeforeGrowing() {
            let buffer = ByteBuffer(capacity: 16)
            buffer.append(bytes(13, seed: 1))
            buffer.consume(3) // readable: 10 bytes at offset 3 (overlapping move when compacted)
            let expected = Array(bytes(13, seed: 1).dropFirst(3))
            // 3 bytes free at the end, 8 wanted: compaction alone makes room; no growth.
            let space = buffer.writableSpace(minimum: 6, limit: 1000)
            #expect(buffer.capacity == 16)
            #expect(space.count == 6)
            #expect(Array(buffer.readable) == expected)
            // Writing into the space and committing it.
            space.copyBytes(from: [1, 2, 3])
            buffer.didWrite(3)
            #expect(Array(buffer.readable) == expected + [1, 2, 3])
        }

        @Test func writableSpaceGrowthRespectsTheLimit() {
            let buffer = ByteBuffer(capacity: 16)
            buffer.append(bytes(10, seed: 2))
            // Grows to min(limit, max(2 × capacity, needed)).
            #expect(buffer.writableSpace(minimum: 100, limit: 64).count == 54)
            #expect(buffer.capacity == 64)
            // At the limit: no growth, less than the minimum is offered.
            #expect(buffer.writableSpace(minimum: 100, limit: 64).count == 54)
            #expect(buffer.capacity == 64)
            #expect(buffer.writableSpace(minimum: 100, limit: 32).count == 54) // never shrinks here
            // A higher limit: doubling is not enough, so exactly what is needed.
            #expect(buffer.writableSpace(minimum: 200, limit: 10_000).count == 200)
            #expect(buffer.capacity == 210)
            // Doubling is enough.
            #expect(buffer.writableSpace(minimum: 201, limit: 10_000).count == 410)
            #expect(buffer.capacity == 420)
            #expect(Array(buffer.readable) == bytes(10, seed: 2))
            // Enough room already: nothing changes.
            #expect(buffer.writableSpace(minimum: 1, limit: 16).count == 410)
        }

        @Test func storageIsLazyAndReleasedWhenEmpty() {
            let buffer = ByteBuffer(capacity: 16)
            #expect(buffer.capacity == 0) // nothing allocated before first use
            #expect(buffer.readable.count == 0)
            buffer.append(bytes(500, seed: 0))
            let grown = buffer.capacity
            buffer.release() // not empty: nothing happens
            #expect(buffer.capacity == grown)
            #expect(Array(buffer.readable) == bytes(500, seed: 0))
            buffer.consume(500)
            buffer.release()
            #expect(buffer.capacity == 0)
            #expect(buffer.isEmpty)
            buffer.append(Array("x".utf8))
            #expect(buffer.capacity == 16)
            #expect(Array(buffer.readable) == Array("x".utf8))
        }
    }
}

// MARK: - Connection

extension CodecTests {
    @Suite struct ConnectionTests {
        private func makeConnection() -> Connection {
            // No system call happens until the connection is read or written.
            Connection(key: 1, fd: SocketFD(raw: -1), now: 0, inputCapacity: 64)
        }

        @Test func outOfOrderResolutionIsWrittenInOrder() {
            let connection = makeConnection()
            #expect(connection.isQuiescent)
            let a = connection.push(id: 10)
            let b = connection.push(id: 11)
            let c = connection.push(id: 12)
            #expect([a, b, c] == [0, 1, 2])
            #expect(connection.inflight == 3)
            #expect(!connection.isQuiescent)

            #expect(connection.resolve(c, status: .ok, body: Array("c".utf8)))
            #expect(connection.popReady() == nil) // a is not resolved yet
            #expect(connection.resolve(b, status: .busy, body: Array("b".utf8)))
            #expect(connection.popReady() == nil)
            #expect(connection.resolve(a, status: .handlerError, body: Array("a".utf8)))

            let first = connection.popReady()
            #expect(first?.status == .handlerError && first?.body == Array("a".utf8))
            let second = connection.popReady()
            #expect(second?.status == .busy && second?.body == Array("b".utf8))
            let third = connection.popReady()
            #expect(third?.status == .ok && third?.body == Array("c".utf8))
            #expect(connection.popReady() == nil)
            #expect(connection.inflight == 0)
            #expect(connection.headSequence == 3)
            #expect(connection.isQuiescent)

            // Sequence numbers keep counting after a full drain.
            #expect(connection.push(id: 13) == 3)
        }

        @Test func resolveRejectsDuplicatesPastAndFuture() {
            let connection = makeConnection()
            let a = connection.push(id: 1)
            let b = connection.push(id: 2)
            #expect(connection.resolve(a, status: .ok, body: []))
            #expect(connection.resolve(a, status: .timeout, body: []) == false) // already answered
            #expect(connection.resolve(b + 1, status: .ok, body: []) == false)  // never pushed
            #expect(connection.popReady()?.status == .ok) // the first answer stands
            #expect(connection.resolve(a, status: .ok, body: []) == false)      // already written
            #expect(connection.inflight == 1)
            #expect(connection.resolve(b, status: .workerDied, body: []))
            #expect(connection.popReady()?.status == .workerDied)
        }

        @Test func manyPendingAcrossCompaction() {
            let connection = makeConnection()
            let total = 3000
            var sequences: [UInt64] = []
            for i in 0..<total { sequences.append(connection.push(id: UInt64(i))) }
            #expect(sequences == (0..<UInt64(total)).map { $0 })
            // Resolve and write the first 1100 (past the 1024 compaction point), with more pushed.
            for i in 0..<1100 { #expect(connection.resolve(sequences[i], status: .ok, body: [UInt8(i & 0xFF)])) }
            for i in 0..<1100 {
                let ready = connection.popReady()
                #expect(ready?.body == [UInt8(i & 0xFF)], "response \(i)")
            }
            #expect(connection.popReady() == nil)
            #expect(connection.headSequence == 1100)
            #expect(connection.inflight == total - 1100)
            // The rest, resolved in reverse order, still come out in request order.
            for i in (1100..<total).reversed() {
                #expect(connection.resolve(sequences[i], status: .ok, body: [UInt8(i & 0xFF), UInt8(i >> 8)]))
            }
            for i in 1100..<total {
                let ready = connection.popReady()
                #expect(ready?.body == [UInt8(i & 0xFF), UInt8(i >> 8)], "response \(i)")
            }
            #expect(connection.popReady() == nil)
            #expect(connection.inflight == 0)
        }
    }
}

// MARK: - displayEscaped

extension CodecTests {
    @Suite struct DisplayEscapedTests {
        @Test func printableAsciiUnchanged() {
            #expect(displayEscaped(Array("Hello, world! ~".utf8)) == "Hello, world! ~")
            #expect(displayEscaped([UInt8]()) == "")
        }

        @Test func nonPrintablesAreEscaped() {
            #expect(displayEscaped([0x00, 0x01, 0x1F, 0x7F, 0x80, 0xFF]) == "\\x00\\x01\\x1f\\x7f\\x80\\xff")
            #expect(displayEscaped(Array("a\nb\rc\td\\e".utf8)) == "a\\nb\\rc\\td\\\\e")
            // UTF-8 is not passed through: each byte is escaped.
            #expect(displayEscaped(Array("é".utf8)) == "\\xc3\\xa9")
            // Works on any collection of bytes.
            #expect(displayEscaped(Array("ab\n".utf8)[1...]) == "b\\n")
        }

        @Test func longInputIsTruncatedWithACount() {
            let long = [UInt8](repeating: UInt8(ascii: "a"), count: 300)
            #expect(displayEscaped(long) == String(repeating: "a", count: 200) + "…(+100 bytes)")
            #expect(displayEscaped(Array(long.prefix(200))) == String(repeating: "a", count: 200))
            #expect(displayEscaped(Array(long.prefix(201))) == String(repeating: "a", count: 200) + "…(+1 bytes)")
            #expect(displayEscaped(Array("abcdef".utf8), limit: 3) == "abc…(+3 bytes)")
            // Escaped bytes count by their rendered width; the count stays exact.
            let zeros = [UInt8](repeating: 0, count: 20)
            let shown = displayEscaped(zeros, limit: 10)
            #expect(shown == "\\x00\\x00\\x00…(+17 bytes)")
        }
    }
}

// MARK: - FrameCodec, tagged

extension CodecTests {
    @Suite struct TaggedFrameCodecTests {
        @Test func requestIsLengthThenTagThenPayload() {
            var out: [UInt8] = []
            [UInt8]([9, 8, 7]).withUnsafeBytes { FrameCodec.appendRequest($0, tag: 0x0102_0304, to: &out) }
            #expect(out == [0, 0, 0, 3, 1, 2, 3, 4, 9, 8, 7])
            out.withUnsafeBytes { raw in
                #expect(FrameCodec.decodeRequest(raw, maxPayload: 3, tagged: true) == .request(payloadStart: 8, length: 3))
                #expect(FrameCodec.requestTag(raw) == 0x0102_0304)
                // The same bytes read as framed are a 3-byte request of [1, 2, 3].
                #expect(FrameCodec.decodeRequest(raw, maxPayload: 3) == .request(payloadStart: 4, length: 3))
            }
            #expect(FrameCodec.requestHeaderBytes(tagged: true) == 8 && FrameCodec.requestHeaderBytes(tagged: false) == 4)
        }

        /// Nothing is decided on fewer than 8 bytes, so every refusal can name its request's tag.
        @Test func decisionsWaitForTheWholeHeader() {
            let tooLarge: [UInt8] = [0, 0, 1, 0, 0xDE, 0xAD, 0xBE, 0xEF]
            let garbage: [UInt8] = Array("GET / HT".utf8)
            let complete: [UInt8] = [0, 0, 0, 2, 0, 0, 0, 5, 0xAA, 0xBB]
            for cut in 0..<8 {
                for bytes in [tooLarge, garbage, complete] {
                    Array(bytes.prefix(cut)).withUnsafeBytes { raw in
                        #expect(FrameCodec.decodeRequest(raw, maxPayload: 100, tagged: true) == .incomplete(needed: nil), "cut \(cut)")
                    }
                }
            }
            tooLarge.withUnsafeBytes { raw in
                #expect(FrameCodec.decodeRequest(raw, maxPayload: 100, tagged: true) == .tooLarge(length: 256))
                #expect(FrameCodec.requestTag(raw) == 0xDEAD_BEEF)
            }
            garbage.withUnsafeBytes { raw in
                #expect(FrameCodec.decodeRequest(raw, maxPayload: 1 << 20, tagged: true) == .garbage(length: 0x4745_5420))
            }
            for cut in 8..<complete.count {
                Array(complete.prefix(cut)).withUnsafeBytes { raw in
                    #expect(FrameCodec.decodeRequest(raw, maxPayload: 100, tagged: true) == .incomplete(needed: 10), "cut \(cut)")
                }
            }
        }

        @Test func responseRoundTripAtEveryCut() {
            for status in ResponseStatus.allCases {
                for (tag, body) in [(UInt32(0), [UInt8]()), (0xFFFF_FFFF, Array("boom".utf8)), (77, bytes(1000, seed: 3))] {
                    var out: [UInt8] = []
                    body.withUnsafeBytes { FrameCodec.appendResponse(status: status, body: $0, tag: tag, to: &out) }
                    #expect(out.count == FrameCodec.taggedResponseHeaderBytes + body.count)
                    #expect(Array(out.prefix(4)) == bigEndian(UInt32(body.count + 1)))
                    #expect(Array(out[4..<8]) == bigEndian(tag))
                    #expect(out[8] == status.rawValue)
                    out.withUnsafeBytes { raw in
                        let decoded = FrameCodec.decodeTaggedResponse(raw)
                        #expect(decoded?.tag == tag && decoded?.status == status.rawValue && decoded?.total == out.count)
                        if let decoded { #expect(Array(out[decoded.body]) == body) }
                        for cut in 0..<out.count {
                            #expect(FrameCodec.decodeTaggedResponse(UnsafeRawBufferPointer(rebasing: raw[0..<cut])) == nil, "cut \(cut)")
                        }
                    }
                }
            }
            // A zero length (no status byte) is a bad request with an empty body, 8 bytes used.
            [UInt8]([0, 0, 0, 0, 0, 0, 0, 9, 0xAB]).withUnsafeBytes { raw in
                let zero = FrameCodec.decodeTaggedResponse(raw)
                #expect(zero?.tag == 9 && zero?.status == ResponseStatus.badRequest.rawValue && zero?.body == 8..<8 && zero?.total == 8)
            }
        }
    }
}

// MARK: - ConnectionTable

extension CodecTests {
    @Suite struct ConnectionTableTests {
        /// A connection object for descriptor `fd` (never used for I/O here).
        static func connection(_ table: inout ConnectionTable, fd: Int32) -> Connection {
            Connection(key: table.makeKey(fd: fd)!, fd: SocketFD(raw: fd), now: 0, inputCapacity: 16)
        }

        @Test func insertLookUpRemove() {
            var table = ConnectionTable()
            #expect(table.isEmpty && table.values.isEmpty)
            let a = Self.connection(&table, fd: 5), b = Self.connection(&table, fd: 900)
            table.insert(a)
            table.insert(b)
            #expect(table.count == 2)
            #expect(table[a.key] === a && table[b.key] === b)
            #expect(Set(table.values.map(\.key)) == [a.key, b.key])
            #expect(table.removeValue(forKey: a.key) === a)
            #expect(table[a.key] == nil && table.count == 1)
            #expect(table.removeValue(forKey: a.key) == nil, "removing twice is a no-op")
            #expect(table.count == 1 && table[b.key] === b)
        }

        /// A descriptor is reused as soon as it is closed: the old key (held by a route or an
        /// epoll event from before) must not find the new connection.
        @Test func aReusedDescriptorDoesNotAnswerToTheOldKey() {
            var table = ConnectionTable()
            let first = Self.connection(&table, fd: 7)
            table.insert(first)
            table.removeValue(forKey: first.key)
            let second = Self.connection(&table, fd: 7)
            table.insert(second)
            #expect(first.key != second.key)
            #expect(first.key & 0xF_FFFF == 7 && second.key & 0xF_FFFF == 7)
            #expect(table[first.key] == nil)
            #expect(table[second.key] === second)
            #expect(table.removeValue(forKey: first.key) == nil && table.count == 1)
        }

        /// Keys stay clear of the loop's fixed epoll tokens (listener, signals, doorbell, control,
        /// scan timer); a descriptor too large for a key gets none.
        @Test func keysAreAboveTheFixedTokens() {
            var table = ConnectionTable()
            for fd in [0, 1, 3, 1023, Int32(ConnectionTable.descriptorLimit - 1)] {
                #expect((table.makeKey(fd: fd) ?? 0) > Master.Token.scanTimer)
            }
            #expect(table.makeKey(fd: Int32(ConnectionTable.descriptorLimit)) == nil)
            #expect(table.makeKey(fd: -1) == nil)
            #expect(table[3] == nil && table[UInt64.max] == nil)
        }

        /// The most connections the flags allow, plus the master's own descriptors, still fit a key.
        @Test func theConnectionLimitLeavesRoomInTheDescriptorField() {
            #expect(PoolConfiguration.mostConnections + 10_000 < ConnectionTable.descriptorLimit)
        }
    }
}
