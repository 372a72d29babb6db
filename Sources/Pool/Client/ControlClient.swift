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
        // A refusal (too many control connections, a line too long) is written and the socket
        // closed before our line is read: the write may then fail, and the read end with a
        // reset, but the answer is there to read first.
        var writeError: SystemError? = nil
        do {
            try Array((command + "\n").utf8).withUnsafeBytes { try socket.writeAll($0) }
        } catch let error as SystemError where error.errno == .brokenPipe || error.errno == .connectionReset {
            writeError = error
        }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(socket.raw, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 && errno == ECONNRESET && !reply.isEmpty { break }
            if n < 0 { throw writeError ?? SystemError("read", .current) }
            if n == 0 { break }
            reply.append(contentsOf: chunk[0..<n])
        }
        if let writeError, reply.isEmpty { throw writeError }
        return String(decoding: reply, as: UTF8.self)
    }
}
