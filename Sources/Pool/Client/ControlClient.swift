import Glibc

/// Talks to a running master over its control socket (`<socket>.ctl`): one command line, one
/// answer, then the master closes. Commands: `status [table|json|prometheus]`, `reload`,
/// `scale N`, `stop`.
public enum ControlClient {
    /// Sends one command line to the control socket at `path` and returns the master's whole
    /// answer, read until it closes. `timeout` is in seconds and bounds the connect, the write
    /// and each read.
    public static func send(_ command: String, controlSocket path: String, timeout: Double = 10) throws -> String {
        try sendNamingMaster(command, controlSocket: path, timeout: timeout).answer
    }

    /// `send`, also returning the pid of the master that answered as this process's pid namespace
    /// numbers it (0 when the master's is not visible from here, as from a container the socket
    /// was shared into). The pid a status reports is the master's own namespace's number, which
    /// another namespace may give to another process.
    ///
    /// The corresponding C function is `getsockopt(SO_PEERCRED)`.
    public static func sendNamingMaster(_ command: String, controlSocket path: String,
                                        timeout: Double = 10) throws -> (answer: String, masterPID: pid_t) {
        let socket = try SocketFD.unixStream(nonBlocking: false)
        defer { socket.close() }
        try socket.setSendTimeout(seconds: timeout)
        try socket.connect(path: path)
        // The listening socket's credentials: the master's, taken when it called listen.
        let masterPID = try socket.peerCredentials().pid
        try socket.setReceiveTimeout(seconds: timeout)
        // A refusal (too many control connections, a line too long) may come before the line is
        // read: `requestThenReadToEnd` still returns it.
        let reply = try socket.requestThenReadToEnd(Array((command + "\n").utf8))
        // Every answer ends with a newline: without one the master closed mid-answer (it died,
        // or was killed), and a cut "ok …" or half a status report must not pass for the whole.
        guard reply.last == UInt8(ascii: "\n") else { throw AnswerCutShort(received: reply.count) }
        return (String(decoding: reply, as: UTF8.self), masterPID)
    }

    /// The connection closed before the answer's final newline.
    public struct AnswerCutShort: Error, CustomStringConvertible {
        public let received: Int
        public var description: String {
            received == 0 ? "the server closed the control connection without an answer"
                : "the server's answer was cut short after \(received) bytes"
        }
    }
}
