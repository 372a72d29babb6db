/// The status byte of a framed response, also used inside the pool for every outcome of a request.
public enum ResponseStatus: UInt8, Sendable, CaseIterable, CustomStringConvertible {
    /// Handled (result mode) or queued (ack mode).
    case ok = 0
    /// The handler threw; the body is its message.
    case handlerError = 1
    /// Every worker queue was full and nothing more could be buffered.
    case busy = 2
    /// The request exceeded `--max-message`; the connection is closed after this response.
    case tooLarge = 3
    /// The worker exceeded `--job-timeout` and was replaced.
    case timeout = 4
    /// The worker died while handling this request.
    case workerDied = 5
    /// The server is shutting down and takes no new work.
    case shuttingDown = 6
    /// The request could not be parsed; the connection is closed after this response.
    case badRequest = 7

    /// The name used as a label value in status output and metrics (`handler_error`, …).
    public var metricName: String { description.replacingSpaces() }

    /// The name used in logs, on stderr of `pool-client`, and in oneshot error replies.
    public var description: String {
        switch self {
        case .ok: return "ok"
        case .handlerError: return "handler error"
        case .busy: return "busy"
        case .tooLarge: return "too large"
        case .timeout: return "timeout"
        case .workerDied: return "worker died"
        case .shuttingDown: return "shutting down"
        case .badRequest: return "bad request"
        }
    }
}

extension String {
    func replacingSpaces() -> String { String(map { $0 == " " ? "_" : $0 }) }
}
