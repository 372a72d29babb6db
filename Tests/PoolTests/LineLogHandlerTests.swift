import Glibc
import Logging
@testable import Pool
import Testing

/// `LineLogHandler` on an output that takes only part of a line (a non-blocking stream socket,
/// as journald's is, with little room): the cut line is ended before the next one, so no line of
/// the log holds two entries. Serialized: the "line left open" state is the process's.
@Suite(.serialized) struct LineLogHandlerTests {
    @Test func aLineCutShortIsEndedBeforeTheNext() throws {
        var pair: [Int32] = [-1, -1]
        try #require(socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0, &pair) == 0)
        defer { close(pair[0]); close(pair[1]) }
        let (writer, reader) = (pair[0], pair[1])
        // The smallest send buffer the kernel allows (a few KiB), written without waiting.
        var small: Int32 = 1
        #expect(setsockopt(writer, SOL_SOCKET, SO_SNDBUF, &small, socklen_t(MemoryLayout<Int32>.size)) == 0)
        #expect(fcntl(writer, F_SETFL, fcntl(writer, F_GETFL) | O_NONBLOCK) == 0)

        let logger = Logger(label: "cut") { _ in LineLogHandler(label: "cut", level: .info, fd: { writer }) }
        // Far more than the buffer holds: some of it goes out, the rest and its newline do not.
        logger.info("long \(String(repeating: "x", count: 200_000))")
        let first = drain(reader)
        #expect(first.count > 0 && first.count < 200_000, "the socket took \(first.count) bytes of the long line")
        #expect(first.last != 0x0A, "the cut line was ended at once; the test needs a full buffer there")

        logger.info("after the cut")
        let text = String(decoding: first + drain(reader), as: UTF8.self)
        let lines = text.split(separator: "\n", omittingEmptySubsequences: false)
        let stamp = #/\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z /#
        #expect(lines.allSatisfy { $0.matches(of: stamp).count <= 1 }, "two entries on one line")
        // The fragment, then the next entry whole on its own line, then the end of the text.
        #expect(lines.count == 3 && lines[1].hasSuffix("cut[\(getpid())]: after the cut")
                && lines[1].firstMatch(of: stamp)?.range.lowerBound == lines[1].startIndex && lines[2].isEmpty,
                "\(lines.map { $0.prefix(80) })")
    }

    /// Everything `fd` holds now (it is a socket: what was sent is there to read).
    private func drain(_ fd: Int32) -> [UInt8] {
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while case let n = recv(fd, &chunk, chunk.count, Int32(MSG_DONTWAIT)), n > 0 { bytes += chunk[0..<n] }
        return bytes
    }
}
