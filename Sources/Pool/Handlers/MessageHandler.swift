import Glibc
import Logging

/// What a handler knows about the worker it runs in.
public struct WorkerContext: Sendable {
    /// The worker's slot (0 ..< workers); a respawned worker keeps its slot and queue.
    public let slot: Int
    /// The worker process's pid.
    public let pid: pid_t
    /// A logger for the handler's own lines.
    public var logger: Logger
}

/// An error a handler throws to answer a request with status 1 and a message.
public struct HandlerError: Error, Sendable, CustomStringConvertible {
    /// The text sent back as the body of the status-1 response.
    public let message: String
    /// Creates an error that answers with `message`.
    public init(_ message: String) { self.message = message }
    /// The message itself.
    public var description: String { message }
}

/// A handler runs inside a worker process on each message and returns the reply body
/// (sent back only with `--reply result`). Throwing answers status 1 with the error's text.
public typealias MessageHandler = (_ message: [UInt8], _ context: WorkerContext) throws -> [UInt8]

/// Builds a worker's handler after fork, in the worker, so per-worker state (connections, caches)
/// is created where it is used and never shared.
public typealias MessageHandlerFactory = @Sendable (_ context: WorkerContext) -> MessageHandler

/// The handlers `pool-server --handler` offers.
public enum BuiltinHandler: String, CaseIterable, Sendable {
    /// Logs pid, length and the (escaped, shortened) message, like the seed's `child pid N recv MSG`.
    case log
    /// Returns the message unchanged.
    case echo
    /// For tests: `sleep:MS` sleeps then echoes (logging how many signals interrupted it),
    /// `cpu:MS` computes for MS milliseconds of CPU time then echoes, `crash` aborts, `hang` never
    /// returns, `fail:MSG` throws MSG, `exit:N` exits with status N, `env:NAME` answers the
    /// worker's environment variable NAME (status 1 if unset); anything else is echoed.
    case sim

    /// The factory that builds this handler in each worker.
    public var factory: MessageHandlerFactory {
        switch self {
        case .log:
            return { _ in
                { message, context in
                    context.logger.info("child pid \(context.pid) recv \(message.count) bytes: \(displayEscaped(message))")
                    return []
                }
            }
        case .echo:
            return { _ in { message, _ in message } }
        case .sim:
            return { _ in simulate }
        }
    }
}

private func simulate(_ message: [UInt8], _ context: WorkerContext) throws -> [UInt8] {
    func after(_ prefix: String) -> String? {
        let p = Array(prefix.utf8)
        guard message.starts(with: p) else { return nil }
        return String(decoding: message[p.count...], as: UTF8.self)
    }
    if let ms = after("sleep:"), let value = Int(ms) {
        var request = timespec(tv_sec: value / 1000, tv_nsec: (value % 1000) * 1_000_000)
        var remaining = timespec()
        var interruptions = 0
        while nanosleep(&request, &remaining) != 0 && errno == EINTR {
            request = remaining
            interruptions += 1
        }
        // What a handler sleeping, polling or waiting in a SysV call would see: tests count it.
        if interruptions > 0 { context.logger.info("sim: sleep:\(value) interrupted by \(interruptions) signal(s)") }
        return message
    }
    // A CPU-bound job (a template render, a hash): measured in the thread's own CPU time, so time
    // spent waiting for a CPU does not count as work done.
    if let ms = after("cpu:"), let value = Int(ms) {
        // Past about 292 years of CPU the nanoseconds overflow: a handler error, not a trap.
        let (nanoseconds, overflow) = Int64(value).multipliedReportingOverflow(by: 1_000_000)
        guard !overflow, nanoseconds <= Int64.max / 2 else { throw HandlerError("cpu:\(ms) is out of range") }
        let end = threadCPUNanoseconds() + nanoseconds
        while threadCPUNanoseconds() < end {}
        return message
    }
    if message == Array("crash".utf8) { abort() }
    if message == Array("hang".utf8) {
        while true { sleep(3600) }
    }
    if let text = after("fail:") { throw HandlerError(text) }
    if let code = after("exit:"), let status = Int32(code) { ChildProcess.exitImmediately(status) }
    if let name = after("env:") {
        guard let value = getenv(name) else { throw HandlerError("\(name) is not set") }
        return Array(String(cString: value).utf8)
    }
    return message
}

/// This thread's CPU time.
private func threadCPUNanoseconds() -> Int64 {
    var time = timespec()
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
    return Int64(time.tv_sec) * 1_000_000_000 + Int64(time.tv_nsec)
}
