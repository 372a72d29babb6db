import Glibc

/// Talks to a running master over its control socket (`<socket>.ctl`): one command line, one
/// answer, then the master closes. Commands: `status [table|json|prometheus]`, `reload`,
/// `scale N`, `stop`.
public enum ControlClient {
    /// Sends one command line to the control socket at `path` and returns the master's whole
    /// answer, read until it closes. `timeout` is in seconds and bounds the connect, the write
    /// and each read.
    public static func send(_ command: String, controlSocket path: String, timeout: Double = 10) throws -> String {
        let socket = try SocketFD.unixStream(nonBlocking: false)
        defer { socket.close() }
        try socket.setSendTimeout(seconds: timeout)
        try socket.connect(path: path)
        try socket.setReceiveTimeout(seconds: timeout)
        // A refusal (too many control connections, a line too long) may come before the line is
        // read: `requestThenReadToEnd` still returns it.
        let reply = try socket.requestThenReadToEnd(Array((command + "\n").utf8))
        return String(decoding: reply, as: UTF8.self)
    }
}
