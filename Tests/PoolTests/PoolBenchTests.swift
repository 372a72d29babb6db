import Foundation
import Glibc
import Testing
import CSysV

/// pool-bench's skew accounting, which `scripts/bench.sh` turns into the "not behind" columns of
/// the skew benchmark. Counts only: latencies are measured, never asserted.
@Suite(.serialized) struct PoolBenchTests {
    /// Runs pool-bench against `server` and returns its JSON report.
    private func bench(_ server: TestServer, _ arguments: [String]) throws -> [String: Any] {
        let run = try runCapturing(Binaries.path("pool-bench"),
                                   ["--socket", server.socketPath, "--json", "--quiet", "--timeout", "10"] + arguments,
                                   timeout: 60, overrunSignals: [SIGKILL])
        guard run.exitStatus == 0,
              let report = try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any] else {
            throw TestFailure("pool-bench \(arguments) exited \(String(describing: run.exitStatus)): \(run.stdout) \(run.stderr)")
        }
        return report
    }

    private func count(_ report: [String: Any], _ key: String) -> Int? {
        (report[key] as? [String: Any])?["count"] as? Int
    }

    /// In framed mode a non-skew request sent while a skew request is in flight ahead of it on its
    /// connection is held by the in-order reply whatever the dispatch; pool-bench keeps those out
    /// of `latency_non_skew_clear_us`. At depth 1 no request is ever behind another; at depth 4
    /// with half the requests skewed, many are.
    @Test func framedSkewSeparatesRequestsSentBehindASkewRequest() throws {
        let server = try TestServer(["--workers", "2", "--protocol", "framed", "--reply", "result", "--handler", "sim"])
        defer { server.stop() }
        let common = ["--protocol", "framed", "--connections", "2", "--payload", "16", "--requests", "400",
                      "--skew", "50:sleep:1", "--expect", "x"]

        let deep = try bench(server, common + ["--depth", "4"])
        let normal = try #require(count(deep, "latency_non_skew_us"))
        let clear = try #require(count(deep, "latency_non_skew_clear_us"))
        #expect(normal > 100, "about half of 400 requests are not skewed")
        #expect(clear > 0 && clear < normal, "depth 4: some but not all non-skew requests are behind a skew one (\(clear) of \(normal) clear)")

        let shallow = try bench(server, common + ["--depth", "1"])
        #expect(count(shallow, "latency_non_skew_clear_us") == count(shallow, "latency_non_skew_us"),
                "depth 1: nothing is ever sent behind another request")
    }

    /// `--verify`: every reply must be its own request's echo. Against echo pools of each protocol
    /// (stamped 16 B payloads, and 4 B ones that are too short for a stamp) every reply passes and
    /// framed counts none out of order; against the log handler, whose result is empty, every
    /// reply fails and the run exits 1.
    @Test func verifyPassesEchoesAndCatchesOtherReplies() throws {
        for wire in ["framed", "tagged", "oneshot"] {
            var flags = ["--workers", "2", "--reply", "result", "--handler", "echo"]
            if wire != "oneshot" { flags += ["--protocol", wire] }
            let server = try TestServer(flags)
            defer { server.stop() }
            for payload in ["16", "4"] {
                var arguments = ["--protocol", wire, "--connections", "2", "--payload", payload, "--requests", "400", "--verify"]
                if wire != "oneshot" { arguments += ["--depth", "8"] }
                let report = try bench(server, arguments)
                #expect(report["ok"] as? Int == 400, "\(wire) \(payload) B: \(report)")
                #expect(report["verified"] as? Bool == true)
                #expect((report["out_of_order"] as? Int) == (wire == "framed" ? 0 : nil), "\(wire): \(report)")
            }
        }
        let logging = try TestServer(["--workers", "1", "--protocol", "framed", "--reply", "result", "--handler", "log"])
        defer { logging.stop() }
        let run = try runCapturing(Binaries.path("pool-bench"),
                                   ["--socket", logging.socketPath, "--json", "--quiet", "--timeout", "10", "--protocol", "framed",
                                    "--requests", "50", "--verify"], timeout: 60, overrunSignals: [SIGKILL])
        #expect(run.exitStatus == 1, "\(run.stderr)")
        let report = try #require(try JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any])
        #expect(report["ok"] as? Int == 0 && report["errors_total"] as? Int == 50, "\(report)")
        #expect((report["errors"] as? [String: Int])?.keys.contains { $0.contains("--verify") } == true, "\(report)")
        #expect((report["latency_us"] as? [String: Any])?["count"] as? Int == 0, "errors are counted, not timed")
    }

    /// `out_of_order` counts replies that came for a later request than the oldest one in flight.
    /// A fake framed echo server (a thread here: nothing forks) answers each three requests as
    /// third, first, second: one overtaking per three. The swap pool-bench used to make put the
    /// oldest request behind the second, so the first's reply was counted too (20 of 30, not 10).
    @Test func outOfOrderCountsOnlyRepliesThatOvertook() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/reorder.sock"
        let listener = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        try #require(listener >= 0)
        defer { close(listener) }
        try #require(csysv_bind_unix(listener, path) == 0 && listen(listener, 4) == 0, "bind \(path)")
        let served = DispatchSemaphore(value: 0)
        let server = Thread {
            defer { served.signal() }
            let client = accept(listener, nil, nil)
            guard client >= 0 else { return }
            defer { close(client) }
            var timeout = timeval(tv_sec: 20, tv_usec: 0)
            setsockopt(client, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
            var input: [UInt8] = [], pending: [[UInt8]] = []
            var chunk = [UInt8](repeating: 0, count: 4096)
            while true {
                let n = read(client, &chunk, chunk.count)
                guard n > 0 else { return }
                input += chunk[0..<n]
                while input.count >= 4 {
                    let length = input[0..<4].reduce(0) { $0 << 8 | Int($1) }
                    guard input.count >= 4 + length else { break }
                    pending.append(Array(input[4..<(4 + length)]))
                    input.removeFirst(4 + length)
                }
                while pending.count >= 3 {
                    var out: [UInt8] = []
                    for payload in [pending[2], pending[0], pending[1]] {
                        let length = UInt32(payload.count + 1)
                        out += [UInt8(length >> 24), UInt8(length >> 16 & 0xff), UInt8(length >> 8 & 0xff), UInt8(length & 0xff), 0] + payload
                    }
                    pending.removeFirst(3)
                    guard out.withUnsafeBytes({ write(client, $0.baseAddress, $0.count) }) == out.count else { return }
                }
            }
        }
        server.start()
        let run = try runCapturing(Binaries.path("pool-bench"),
                                   ["--socket", path, "--json", "--quiet", "--timeout", "10", "--protocol", "framed",
                                    "--connections", "1", "--depth", "3", "--payload", "16", "--requests", "30", "--warmup", "0", "--verify"],
                                   timeout: 60, overrunSignals: [SIGKILL])
        #expect(served.wait(timeout: .now() + 30) == .success, "the fake server did not finish")
        let report = try #require(try? JSONSerialization.jsonObject(with: Data(run.stdout.utf8)) as? [String: Any],
                                  "pool-bench: \(run.stdout) \(run.stderr)")
        #expect(run.exitStatus == 0 && report["ok"] as? Int == 30, "\(report) \(run.stderr)")
        #expect(report["out_of_order"] as? Int == 10, "one reply in three overtook: \(report)")
    }

    /// `--hold` with a ready file: written whole once the connections are open (the count), and
    /// a file that cannot be written fails the run rather than leave a script waiting for it.
    @Test func holdWritesItsReadyFileOrFails() throws {
        let server = try TestServer(["--workers", "1", "--protocol", "framed", "--reply", "result", "--handler", "echo"])
        defer { server.stop() }
        func hold(_ readyFile: String) throws -> (status: Int32?, stderr: String) {
            let run = try runCapturing(Binaries.path("pool-bench"),
                                       ["--socket", server.socketPath, "--idle-connections", "3", "--hold", "0.1",
                                        "--ready-file", readyFile, "--quiet"], timeout: 60, overrunSignals: [SIGKILL])
            return (run.exitStatus, run.stderr)
        }
        let ready = server.directory + "/hold.ready"
        let written = try hold(ready)
        #expect(written.status == 0, "\(written.stderr)")
        #expect((try? String(contentsOfFile: ready, encoding: .utf8)) == "3\n")
        let failed = try hold(server.directory + "/missing-dir/hold.ready")
        #expect(failed.status == 1 && failed.stderr.contains("--ready-file"), "\(failed)")
    }
}
