import Foundation
import Glibc
import Testing

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
