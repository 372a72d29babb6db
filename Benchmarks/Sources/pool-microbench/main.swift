import Benchmark
import Glibc
import Pool

// Microbenchmarks of the master's hot paths. Each group has a baseline measured in the same run
// (scripts/microbench.sh prints every result as a ratio to it), because absolute times on a
// shared machine drift from run to run. Not tests: nothing here asserts a time.

/// Keeps a value alive so the optimizer cannot drop the work that produced it.
@inline(never)
func consume<T>(_ value: T) { withExtendedLifetime(value) {} }

let jobs = 64
let small = [UInt8](repeating: 0x78, count: 16)
let large = [UInt8](repeating: 0x78, count: 4096)

/// `count` framed requests of `payload`, back to back, as a client pipelines them.
func framedStream(_ payload: [UInt8], count: Int) -> [UInt8] {
    var out: [UInt8] = []
    for _ in 0..<count { payload.withUnsafeBytes { FrameCodec.appendRequest($0, to: &out) } }
    return out
}

// MARK: - codec

let smallStream = framedStream(small, count: jobs)
let jobBuffer = MessageBuffer(capacity: 8192)
let copyTarget = UnsafeMutableRawBufferPointer.allocate(byteCount: 8192, alignment: 8)

/// A message of `count` 16-byte jobs, as the master batches them.
func encodeBatch(count: Int, into buffer: MessageBuffer) -> Int {
    var length = 0
    small.withUnsafeBytes { payload in
        for id in 0..<count { length = JobCodec.encodeJob(id: UInt64(id), payload: payload, into: buffer.text, at: length) }
    }
    JobCodec.setBatchCount(count, in: buffer.text)
    return length
}

let encodedBatchLength = encodeBatch(count: jobs, into: jobBuffer)

let codec = BenchmarkSuite(name: "codec") { suite in
    // What any codec must at least do: move 64 payloads of 16 B.
    suite.benchmark("baseline: memcpy 64 × 16 B") {
        small.withUnsafeBytes { payload in
            for index in 0..<jobs {
                UnsafeMutableRawBufferPointer(rebasing: copyTarget[(index * 16)..<(index * 16 + 16)]).copyMemory(from: payload)
            }
        }
        consume(copyTarget)
    }
    suite.benchmark("FrameCodec.decodeRequest 64 × 16 B") {
        var total = 0
        smallStream.withUnsafeBytes { stream in
            var offset = 0
            while case .request(let start, let length) = FrameCodec.decodeRequest(UnsafeRawBufferPointer(rebasing: stream[offset...]), maxPayload: 8176) {
                total += length
                offset += start + length
            }
        }
        consume(total)
    }
    suite.benchmark("JobCodec.encodeJob 64 × 16 B into one message") {
        consume(encodeBatch(count: jobs, into: jobBuffer))
    }
    suite.benchmark("JobCodec.decodeJob 64 × 16 B from one message") {
        var total = 0
        let text = UnsafeRawBufferPointer(jobBuffer.text)
        var offset = 0
        while let job = JobCodec.decodeJob(text, length: encodedBatchLength, at: offset) {
            total &+= Int(job.id)
            offset = job.payload.upperBound
        }
        consume(total)
    }
    suite.benchmark("FrameCodec.appendResponse 64 × 16 B") {
        var out: [UInt8] = []
        out.reserveCapacity(jobs * (16 + FrameCodec.responseHeaderBytes))
        small.withUnsafeBytes { body in
            for _ in 0..<jobs { FrameCodec.appendResponse(status: .ok, body: body, to: &out) }
        }
        consume(out)
    }
}

// MARK: - queue round trip (the dispatch path)

let queue = try! MessageQueue.createPrivate()
// Removed however the run ends (--help, an error in the harness): no queue is left behind.
_ = atexit { try? queue.remove() }
/// ...and when interrupted (Ctrl-C in scripts/microbench.sh), which skips atexit: removed in the
/// handler itself (msgctl and _exit are async-signal-safe).
let queueID = queue.id
for signo in [SIGINT, SIGTERM, SIGHUP] {
    signal(signo) { signo in
        _ = msgctl(queueID, IPC_RMID, nil)
        _exit(128 + signo)
    }
}
let receiveBuffer = MessageBuffer(capacity: 8192)
let sendBuffer = MessageBuffer(capacity: 8192)
let perBatch = 16
let arena = try! PayloadArena(chunks: 8, chunkBytes: 8192)
let doorbell = try! EventFD.create()

/// One msgsnd (IPC_NOWAIT, as the master sends) and the msgrcv a worker does.
@inline(__always)
func roundTrip(length: Int) {
    _ = try! queue.send(sendBuffer, type: JobCodec.jobType, length: length, nowait: true)
    consume(try! queue.receive(into: receiveBuffer, nowait: true))
}

let roundTrips = BenchmarkSuite(name: "queue") { suite in
    // The cheapest kernel round trip there is: write and read an eventfd (two syscalls).
    suite.benchmark("baseline: eventfd write + read") {
        doorbell.ring()
        consume(doorbell.drain())
    }
    suite.benchmark("1 job of 16 B: encode, msgsnd, msgrcv") {
        roundTrip(length: encodeBatch(count: 1, into: sendBuffer))
    }
    suite.benchmark("1 job of 4 KiB: encode, msgsnd, msgrcv") {
        let length = large.withUnsafeBytes { JobCodec.encodeJob(id: 1, payload: $0, into: sendBuffer.text, at: 0) }
        roundTrip(length: length)
    }
    // Batching: the same 16 jobs as 16 messages, or as one (what the master does per worker per
    // loop turn). Divide by 16 for the cost per job.
    suite.benchmark("16 jobs of 16 B as 16 messages") {
        for _ in 0..<perBatch { roundTrip(length: encodeBatch(count: 1, into: sendBuffer)) }
    }
    suite.benchmark("16 jobs of 16 B as one message") {
        roundTrip(length: encodeBatch(count: perBatch, into: sendBuffer))
    }
    // Large payloads: a 16 KiB queue message cannot hold two 4 KiB jobs, so without the arena
    // each is a message of its own; spilled, the four share one message of 24-byte records
    // (store into a chunk, send, receive, copy out and release: what master and worker do).
    suite.benchmark("4 jobs of 4 KiB as 4 messages") {
        for id in 0..<4 {
            let length = large.withUnsafeBytes { JobCodec.encodeJob(id: UInt64(id), payload: $0, into: sendBuffer.text, at: 0) }
            roundTrip(length: length)
            consume(Array(UnsafeRawBufferPointer(receiveBuffer.text)[JobCodec.headerBytes..<length]))
        }
    }
    suite.benchmark("4 jobs of 4 KiB spilled into the arena, one message") {
        var length = 0
        for id in 0..<4 {
            let chunk = large.withUnsafeBytes { arena.store($0) }!
            length = JobCodec.encodeSpilledJob(id: UInt64(id), length: large.count, chunk: chunk, into: sendBuffer.text, at: length)
        }
        roundTrip(length: length)
        var offset = 0
        while let job = JobCodec.decodeJob(UnsafeRawBufferPointer(receiveBuffer.text), length: length, at: offset), let spill = job.spill {
            consume(Array(arena.payload(spill)!))
            arena.release(spill.chunk)
            offset = job.end
        }
    }
}

Benchmark.main([codec, roundTrips])
