import Glibc
import Logging
@testable import Pool
import Testing

/// The `sim` handler's `cpu:MS`: a CPU-bound job for benchmarks, run here in the test's own thread
/// (no fork), so its CPU time is this thread's.
@Suite struct SimHandlerTests {
    static func threadCPUSeconds() -> Double {
        var time = timespec()
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
        return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
    }

    @Test func cpuJobComputesForItsMillisecondsOfCPUTimeAndEchoes() throws {
        let context = WorkerContext(slot: 0, pid: getpid(), logger: Logger(label: "test"))
        let handler = BuiltinHandler.sim.factory(context)
        let before = Self.threadCPUSeconds()
        let reply = try handler(Array("cpu:30".utf8), context)
        let used = Self.threadCPUSeconds() - before
        #expect(reply == Array("cpu:30".utf8))
        #expect(used >= 0.029, "cpu:30 used \(used) s of CPU")
        // Not a number of milliseconds: echoed like any other message, without computing. Had
        // its leading digits been taken, it would compute for a minute: the bound only tells
        // that apart (a CPU-time bound, not a speed one).
        let start = Self.threadCPUSeconds()
        #expect(try handler(Array("cpu:60000x".utf8), context) == Array("cpu:60000x".utf8))
        #expect(Self.threadCPUSeconds() - start < 5)
        // Milliseconds whose nanoseconds overflow: a handler error (the worker trapped on them).
        #expect(throws: HandlerError.self) { try handler(Array("cpu:9223372036855".utf8), context) }
    }
}
