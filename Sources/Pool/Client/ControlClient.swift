import Glibc

/// Talks to a running master over its control socket (`<socket>.ctl`): one command line, one
/// answer, then the master closes. Commands: `status [table|json|prometheus]`, `reload`,
/// `scale N`, `stop`.
public enum ControlClient {
    /// Sends one command line to the control socket at `path` and returns the master's whole
    /// answer, read until it closes. `timeout` is in seconds and applies to each read.
    public static func send(_ command: String, controlSocket path: String, timeout: Double = 10) throws -> String {
        let socket = try SocketFD.unixStream(nonBlocking: false)
        defer { socket.close() }
        try socket.connect(path: path)
        try socket.setReceiveTimeout(seconds: timeout)
        let line = Array((command + "\n").utf8)
        try line.withUnsafeBytes { try socket.writeAll($0) }
        var reply: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(socket.raw, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { throw SystemError("read", .current) }
            if n == 0 { break }
            reply.append(contentsOf: chunk[0..<n])
        }
        return String(decoding: reply, as: UTF8.self)
    }
}
