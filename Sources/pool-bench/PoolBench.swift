import ArgumentParser
import Glibc
import Pool
import Synchronization

/// `pool-bench`: a load generator for a pool's socket (or any server speaking the same protocols).
/// One plain pthread per connection, blocking I/O with send/receive timeouts; per-thread
/// histograms merged at the end. See docs/benchmarks.md.
@main
struct PoolBench: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "pool-bench",
        abstract: "Load generator for pool-server: throughput, latency percentiles, errors by status, server CPU per request.",
        discussion: """
            oneshot: each request is connect, write the payload, read until EOF, close.
            framed: persistent connections, each keeping --depth requests in flight.
            tagged: the same, each request tagged; responses matched by tag, in any order.
            Payloads are 'x' repeated --payload times (or the --skew payload); with --verify, the
            last 8 bytes of each payload of 8 B or more (not --skew's) are its connection and
            sequence number instead.
            --hold S: no load; only hold --idle-connections connections open for S seconds.
            """)

    enum ProtocolChoice: String, ExpressibleByArgument, CaseIterable { case oneshot, framed, tagged }

    @Option(name: .long, help: "Path of the server's Unix socket.")
    var socket = "pool.sock"

    @Option(name: .customLong("protocol"), help: "oneshot, framed or tagged.")
    var wireProtocol: ProtocolChoice = .oneshot

    @Option(name: .long, help: "Concurrent connections (one thread each).")
    var connections = 1

    @Option(name: .long, help: "Framed: requests in flight per connection.")
    var depth = 1

    @Option(name: .long, help: "Payload size in bytes ('x' repeated).")
    var payload = 16

    @Option(name: .long, help: "Stop after this many measured requests.")
    var requests: Int?

    @Option(name: .long, help: "Seconds to measure (default 5 unless --requests).")
    var duration: Double?

    @Option(name: .long, help: "Seconds of load before measuring starts (not counted).")
    var warmup: Double = 0

    @Option(name: .long, help: "Replies whose body does not start with this are errors (not applied to --skew requests).")
    var expect: String?

    @Flag(name: .long, help: "Replies must echo their request exactly (an echo handler); payloads of 8 B or more end in an 8-byte stamp (connection, sequence) so a reply to another request is caught, and framed replies out of request order are counted (not applied to --skew requests).")
    var verify = false

    @Option(name: .long, help: "Report the CPU time of this server (master + its children) per request.")
    var serverPid: Int32?

    @Flag(name: .long, help: "Print the result as JSON on stdout.")
    var json = false

    @Option(name: .long, help: "Extra connections opened before the run and held idle during it.")
    var idleConnections = 0

    @Option(name: .long, help: "No load: only open --idle-connections connections, hold them this many seconds, close them.")
    var hold: Double?

    @Option(name: .long, help: "With --hold: create this file once every connection is open.")
    var readyFile: String?

    @Option(name: .long, help: "P:PAYLOAD — send PAYLOAD instead for P % of requests, e.g. 5:sleep:20.")
    var skew: String?

    @Option(name: .long, help: "Seconds to wait for a connect, write or reply before counting a timeout.")
    var timeout: Double = 10

    @Flag(name: .long, help: "No progress line on stderr.")
    var quiet = false

    func validate() throws {
        guard connections >= 1 && connections <= 10_000 else { throw ValidationError("--connections must be 1…10000") }
        guard depth >= 1 && depth <= 65_536 else { throw ValidationError("--depth must be 1…65536") }
        if wireProtocol == .oneshot && depth != 1 { throw ValidationError("--depth applies to --protocol framed and tagged only") }
        guard payload >= 0 && payload < 1 << 30 else { throw ValidationError("--payload must be 0…2^30-1") }
        if wireProtocol == .oneshot && payload == 0 { throw ValidationError("oneshot needs --payload ≥ 1 (an empty message is an idle client)") }
        // Each connection buffers its requests in flight and twice as much for replies: bounded so
        // that a large depth and payload are refused here rather than abort in an allocation.
        // A --skew payload is bounded the same way: the buffers hold the larger of the two.
        let largest = max(payload, try skew.map { try parseSkew($0).payload.count } ?? 0)
        guard connections * depth * (largest + 16) <= 1 << 31 else {
            throw ValidationError("--connections × --depth × (the larger of --payload and the --skew payload, + 16) must be at most 2^31 bytes (the requests in flight are buffered)")
        }
        if requests != nil && duration != nil { throw ValidationError("give --requests or --duration, not both") }
        if let requests, requests < 1 { throw ValidationError("--requests must be ≥ 1") }
        // Seconds become integer nanoseconds and timevals: bounded like the server's (10⁸ s).
        if let duration, !(duration > 0 && duration <= 1e8) { throw ValidationError("--duration must be > 0 and at most 1e8") }
        guard warmup >= 0 && warmup <= 1e8 else { throw ValidationError("--warmup must be from 0 to 1e8") }
        guard timeout > 0 && timeout <= 1e8 else { throw ValidationError("--timeout must be > 0 and at most 1e8") }
        // Each is a descriptor and a connection the server holds: bounded like --connections' sum.
        guard idleConnections >= 0 && idleConnections <= 1_000_000 else { throw ValidationError("--idle-connections must be 0…1000000") }
        if let skew { _ = try parseSkew(skew) }
        if let hold {
            guard hold >= 0 && hold <= 1e8 else { throw ValidationError("--hold must be from 0 to 1e8") }
            guard idleConnections >= 1 else { throw ValidationError("--hold needs --idle-connections ≥ 1") }
        }
        if readyFile != nil && hold == nil { throw ValidationError("--ready-file applies to --hold only") }
    }

    func parseSkew(_ text: String) throws -> (percent: Double, payload: [UInt8]) {
        guard let colon = text.firstIndex(of: ":"), let percent = Double(text[..<colon]),
              percent >= 0, percent <= 100 else {
            throw ValidationError("--skew takes PERCENT:PAYLOAD, e.g. 5:sleep:20")
        }
        let skewPayload = Array(text[text.index(after: colon)...].utf8)
        if wireProtocol == .oneshot && skewPayload.isEmpty { throw ValidationError("oneshot needs a non-empty --skew payload") }
        return (percent, skewPayload)
    }

    func run() throws {
        try? Signals.ignore(SIGPIPE)
        raiseDescriptorLimit(needed: connections + idleConnections + 64)
        let (skewPercent, skewPayload) = try skew.map(parseSkew) ?? (0, [])
        let plan = LoadPlan(
            socketPath: socket, wireProtocol: LoadPlan.WireProtocol(rawValue: wireProtocol.rawValue)!,
            connections: connections, depth: depth,
            payload: [UInt8](repeating: UInt8(ascii: "x"), count: payload),
            skewPercent: skewPercent, skewPayload: skewPayload, expect: expect.map { Array($0.utf8) },
            verify: verify, requests: requests, duration: duration ?? (requests == nil ? 5 : 0), warmup: warmup, timeout: timeout)

        // Idle connections first, so the server holds them for the whole run.
        var idle: [Int32] = []
        idle.reserveCapacity(idleConnections)
        let openStart = monotonicNanos()
        for _ in 0..<idleConnections {
            let fd = connectUnix(socket, timeout: timeout)
            guard fd >= 0 else {
                for fd in idle { close(fd) }
                // A run that failed, not a bad command line: exit 1, no usage text.
                var message = "pool-bench: idle connection \(idle.count + 1) of \(idleConnections): connect: \(errnoText(-fd))\n"
                message.withUTF8 { _ = write(STDERR_FILENO, $0.baseAddress, $0.count) }
                throw ExitCode(1)
            }
            idle.append(fd)
        }
        if let hold { return try runHold(idle, opened: openStart, seconds: hold) }
        if idleConnections > 0 { usleep(200_000) }   // let the server accept them before the load starts

        let results = (0..<connections).map { _ in LoadResult() }
        var threads: [pthread_t] = []
        for index in 0..<connections {
            let result = results[index]
            threads.append(startThread {
                switch plan.wireProtocol {
                case .oneshot: runOneshot(plan: plan, result: result, index: index)
                case .framed, .tagged: runFramed(plan: plan, result: result, index: index)
                }
                plan.finished.add(1, ordering: .releasing)
            })
        }
        while plan.ready.load(ordering: .acquiring) < connections { usleep(1000) }

        let begin = monotonicNanos()
        plan.measureStart = begin + UInt64(warmup * 1e9)
        if requests == nil { plan.stopAt = plan.measureStart + UInt64(plan.duration * 1e9) }
        plan.release()

        // Warm-up, then the "before" samples.
        sleepUntil(plan.measureStart) { plan.finished.load(ordering: .acquiring) == connections }
        let cpuBefore = serverPid.map { ServerCPUSample.take(masterPID: $0) }
        let clientBefore = selfCPUSeconds()

        // Progress once a second, for runs longer than 2 s.
        var lastCount = 0
        var tick = 1
        while plan.finished.load(ordering: .acquiring) < connections {
            let due = plan.measureStart + UInt64(tick) * 1_000_000_000
            let done = sleepUntil(due) { plan.finished.load(ordering: .acquiring) == connections }
            if done { break }
            let count = results.reduce(0) { $0 + $1.completed.load(ordering: .relaxed) }
            let failed = results.reduce(0) { $0 + $1.failed.load(ordering: .relaxed) }
            let long = requests == nil ? plan.duration > 2 : tick >= 2
            if !quiet && long {
                var line = "[\(tick) s] \(count - lastCount) req/s, \(count) done"
                if let requests { line += " of \(requests)" }
                line += ", \(failed) errors\n"
                writeStderr(line)
            }
            lastCount = count
            tick += 1
        }
        for thread in threads { pthread_join(thread, nil) }
        let clientAfter = selfCPUSeconds()
        let cpuAfter = serverPid.map { ServerCPUSample.take(masterPID: $0) }

        // Idle connections the server closed (or wrote to) during the run.
        var idleClosed = 0
        for fd in idle {
            var probe = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&probe, 1, 0) > 0 { idleClosed += 1 }
            close(fd)
        }

        // Merge.
        var latency = Histogram()
        var normal = Histogram()
        var clear = Histogram()
        var errors: [String: Int] = [:]
        var ok = 0
        var unanswered = 0
        var warmupRequests = 0
        var outOfOrder = 0
        var last = plan.measureStart
        for result in results {
            latency.merge(result.latency)
            normal.merge(result.normalLatency)
            clear.merge(result.clearLatency)
            ok += result.ok
            unanswered += result.unanswered
            warmupRequests += result.warmupRequests
            outOfOrder += result.outOfOrder
            for (key, count) in result.errors { errors[key, default: 0] += count }
            last = max(last, result.lastCompletion, min(result.lastUnanswered, plan.stopAt))
        }
        let errorTotal = errors.values.reduce(0, +)
        let completed = ok + errorTotal
        let elapsed = Double(last - plan.measureStart) / 1e9
        let rate = elapsed > 0 ? Double(completed) / elapsed : 0

        var serverCPU: (total: Double, master: Double, workers: Double)?
        // A master gone by the end (or the start) has no CPU to read: none is reported, rather than
        // a difference with zero.
        if let before = cpuBefore, let after = cpuAfter, before.masterAlive, after.masterAlive {
            let master = Double(Int64(bitPattern: after.masterNanos &- before.masterNanos)) / 1e9
            let total = Double(Int64(bitPattern: after.totalNanos &- before.totalNanos)) / 1e9
            serverCPU = (total, master, total - master)
        }
        let clientCPU = clientAfter - clientBefore
        // Per request the server answered (ok or an error status): a timeout or failed connect
        // cost it nothing to count.
        let answered = completed - unanswered
        let perRequest = { (seconds: Double) -> Double? in answered > 0 ? seconds / Double(answered) * 1e6 : nil }
        let sortedErrors = errors.sorted { $0.value != $1.value ? $0.value > $1.value : $0.key < $1.key }

        if json {
            var members: [(String, JSON)] = [
                ("protocol", .string(wireProtocol.rawValue)),
                ("socket", .string(socket)),
                ("connections", .integer(connections)),
                ("depth", .integer(depth)),
                ("payload_bytes", .integer(payload)),
                ("idle_connections", .integer(idleConnections)),
                ("idle_closed_by_server", .integer(idleClosed)),
                ("warmup_s", .number(warmup)),
                ("warmup_requests", .integer(warmupRequests)),
                ("elapsed_s", .number(elapsed)),
                ("requests", .integer(completed)),
                ("ok", .integer(ok)),
                ("errors_total", .integer(errorTotal)),
                ("unanswered", .integer(unanswered)),
                ("verified", .bool(verify)),
                ("errors", .object(sortedErrors.map { ($0.key, .integer($0.value)) })),
                ("requests_per_second", .number(rate)),
                ("ok_per_second", .number(elapsed > 0 ? Double(ok) / elapsed : 0)),
                ("latency_us", latencyJSON(latency)),
            ]
            if verify && wireProtocol == .framed { members.append(("out_of_order", .integer(outOfOrder))) }
            if skew != nil {
                members.append(("skew", .object([("percent", .number(skewPercent)),
                                                 ("payload", .string(String(decoding: skewPayload, as: UTF8.self)))])))
                members.append(("latency_non_skew_us", latencyJSON(normal)))
                if wireProtocol == .framed { members.append(("latency_non_skew_clear_us", latencyJSON(clear))) }
            }
            if let serverPid, let cpuAfter {
                members.append(("server", .object([
                    ("pid", .integer(Int(serverPid))),
                    ("alive_after", .bool(cpuAfter.masterAlive)),
                    ("workers_after", .array(cpuAfter.workers.map { .integer(Int($0)) })),
                    ("cpu_s", serverCPU.map { .number($0.total) } ?? .null),
                    ("master_cpu_s", serverCPU.map { .number($0.master) } ?? .null),
                    ("workers_cpu_s", serverCPU.map { .number($0.workers) } ?? .null),
                    ("cpu_us_per_request", serverCPU.flatMap { perRequest($0.total) }.map { .number($0) } ?? .null),
                ])))
            }
            members.append(("client_cpu_s", .number(clientCPU)))
            members.append(("client_cpu_us_per_request", perRequest(clientCPU).map { .number($0) } ?? .null))
            print(JSON.object(members).render())
        } else {
            var shape = "\(wireProtocol.rawValue), \(connections) connection\(connections == 1 ? "" : "s")"
            if wireProtocol != .oneshot { shape += " × \(depth) in flight" }
            shape += ", payload \(payload) B"
            if idleConnections > 0 { shape += ", \(idleConnections) idle connections (\(idleClosed) closed by the server)" }
            if skew != nil { shape += ", skew \(fixed(skewPercent, 2, trim: true)) % '\(String(decoding: skewPayload, as: UTF8.self))'" }
            func latencyLine(_ h: Histogram) -> String {
                "p50 \(formatNanos(h.percentile(50)))  p90 \(formatNanos(h.percentile(90)))  "
                    + "p99 \(formatNanos(h.percentile(99)))  max \(formatNanos(h.total > 0 ? h.maxValue : nil))"
            }
            var rows: [(String, String)] = [
                ("load", shape),
                ("socket", socket),
                ("measured", fixed(elapsed, 2) + " s" + (warmup > 0 ? " (after \(fixed(warmup, 2, trim: true)) s warm-up, \(warmupRequests) requests)" : "")),
                ("requests", "\(completed)  (ok \(ok), errors \(errorTotal)"
                    + (unanswered > 0 ? ", of which \(unanswered) got no reply)" : ")")),
                ("throughput", fixed(rate, 1) + " req/s" + (errorTotal > 0 ? "  (ok: \(fixed(elapsed > 0 ? Double(ok) / elapsed : 0, 1)) req/s)" : "")),
                ("latency", latencyLine(latency) + (errorTotal > 0 ? "  (ok replies only)" : "")),
            ]
            if verify {
                rows.append(("verified", "replies checked against their request's echo (failures under errors)"
                             + (wireProtocol == .framed ? "; \(outOfOrder) out of request order" : "")))
            }
            if skew != nil { rows.append(("latency non-skew", latencyLine(normal))) }
            if skew != nil && wireProtocol == .framed {
                let behind = normal.total - clear.total
                rows.append(("  not behind skew", latencyLine(clear)))
                rows.append(("", "(\(behind) of \(normal.total) non-skew requests were sent behind a skew request on their connection)"))
            }
            if let serverPid, let cpuAfter {
                if let serverCPU {
                    let value = perRequest(serverCPU.total).map { fixed($0, 2) + " us/req" } ?? "-"
                    rows.append(("server CPU", value + "  (pid \(serverPid): "
                                 + "master \(fixed(serverCPU.master, 2)) s, workers \(fixed(serverCPU.workers, 2)) s)"))
                } else {
                    rows.append(("server CPU", "-  (pid \(serverPid) \(cpuAfter.masterAlive ? "not there at the start" : "gone by the end"))"))
                }
            }
            rows.append(("client CPU", (perRequest(clientCPU).map { fixed($0, 2) + " us/req" } ?? "-")
                         + "  (\(fixed(clientCPU, 2)) s)"))
            if sortedErrors.isEmpty {
                rows.append(("errors", "none"))
            } else {
                for (index, error) in sortedErrors.enumerated() {
                    rows.append((index == 0 ? "errors" : "", "\(error.value)\t\(error.key)"))
                }
            }
            print(table(rows))
        }
        if completed == 0 || errorTotal > 0 { throw ExitCode(1) }
    }
}

extension PoolBench {
    /// `--hold`: the connections are open; tell the caller (ready file), hold them, then report how
    /// many the server closed (or wrote to) meanwhile, and close them.
    func runHold(_ idle: [Int32], opened openStart: UInt64, seconds: Double) throws {
        let openSeconds = Double(monotonicNanos() - openStart) / 1e9
        if let readyFile {
            // A file is written whole under a temporary name, then renamed: a script waiting for
            // it never reads it empty. Anything else there (a FIFO, /dev/stdout) is written
            // through. One that cannot be written fails the run, or its reader would wait forever.
            var info = stat()
            let special = lstat(readyFile, &info) == 0 && (info.st_mode & S_IFMT) != S_IFREG
            let line = "\(idle.count)\n"
            var failure: String? = nil
            if special {
                let fd = open(readyFile, O_WRONLY | O_CLOEXEC)
                let written = fd >= 0 ? line.utf8.withContiguousStorageIfAvailable { write(fd, $0.baseAddress, $0.count) } ?? -1 : -1
                failure = written < 0 ? errnoText(errno) : written != line.utf8.count ? "short write" : nil
                if fd >= 0 { close(fd) }
            } else {
                do { try writeFileAtomically(line, to: readyFile, mode: 0o644) } catch { failure = "\(error)" }
            }
            if let failure {
                for fd in idle { close(fd) }
                writeStderr("pool-bench: --ready-file \(readyFile): \(failure)\n")
                throw ExitCode.failure
            }
        }
        if !quiet { writeStderr("holding \(idle.count) connections for \(fixed(seconds, 2, trim: true)) s\n") }
        let until = monotonicNanos() + UInt64(seconds * 1e9)
        sleepUntil(until) { false }
        var closedByServer = 0
        for fd in idle {
            var probe = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
            if poll(&probe, 1, 0) > 0 { closedByServer += 1 }
            close(fd)
        }
        if json {
            print(JSON.object([
                ("mode", .string("hold")),
                ("socket", .string(socket)),
                ("idle_connections", .integer(idle.count)),
                ("open_s", .number(openSeconds)),
                ("hold_s", .number(seconds)),
                ("idle_closed_by_server", .integer(closedByServer)),
            ]).render())
        } else {
            print(table([
                ("hold", "\(idle.count) connections to \(socket), opened in \(fixed(openSeconds, 2)) s, held \(fixed(seconds, 2, trim: true)) s"),
                ("closed by server", "\(closedByServer)"),
            ]))
        }
        if closedByServer > 0 { throw ExitCode(1) }
    }
}

/// Sleeps until `deadline` (monotonic ns) in steps of at most 50 ms; returns early (true) once
/// `done()` holds.
@discardableResult
func sleepUntil(_ deadline: UInt64, done: () -> Bool) -> Bool {
    while true {
        if done() { return true }
        let now = monotonicNanos()
        if now >= deadline { return false }
        usleep(UInt32(min(deadline - now, 50_000_000) / 1000))
    }
}

/// Raises the soft RLIMIT_NOFILE towards the hard limit when `needed` descriptors would not fit.
func raiseDescriptorLimit(needed: Int) {
    var limit = rlimit()
    guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit) == 0 else { return }
    guard limit.rlim_cur < rlim_t(needed) else { return }
    limit.rlim_cur = min(limit.rlim_max, rlim_t(needed))
    setrlimit(Int32(RLIMIT_NOFILE.rawValue), &limit)
}

/// One write(2) to stderr (no stdio: `stderr` is shared mutable state to Swift 6).
func writeStderr(_ text: String) {
    var text = text
    text.withUTF8 { _ = write(2, $0.baseAddress, $0.count) }
}
