import Glibc

/// A point-in-time view of a running pool, as `pool-server status` prints it.
public struct StatusReport: Sendable {
    /// One worker slot's row of the report.
    public struct Worker: Sendable {
        /// The slot index (from 0); a respawned worker keeps its slot and queue.
        public var slot: Int
        /// The slot's current process, or `nil` while it waits for a respawn.
        public var pid: pid_t?
        /// idle, busy, starting (waiting for a respawn), retiring.
        public var state: String
        /// Jobs finished by the current process (starts at 0 for each new process).
        public var jobsHandled: UInt64
        /// Jobs finished by all the slot's processes so far, the current one's included (starts at
        /// 0 only with the slot: scaled up anew).
        public var slotJobsHandled: UInt64 = 0
        /// Running a job now (a retiring worker too).
        public var busy = false
        /// Times the slot's worker process was replaced.
        public var restarts: Int
        /// Seconds the current job has run (busy only).
        public var jobAge: Double?
        /// The slot's System V queue id, as `ipcs -q` shows it.
        public var queueID: Int32
        /// Messages waiting in the slot's queue (IPC_STAT).
        public var queueMessages: Int
        /// Bytes of text waiting in the slot's queue (IPC_STAT).
        public var queueBytes: Int
        /// Resident memory of the worker in bytes, from /proc; `nil` without a process.
        public var rssBytes: Int?
    }

    /// The payload arena's use (`nil` without one: `--spill-bytes 0` or `--arena-chunks 0`).
    public struct Arena: Sendable {
        /// Chunks in the arena (`--arena-chunks`).
        public var chunks: Int
        /// Chunks holding a payload no worker has taken yet.
        public var inUse: Int
        /// Jobs whose payload went through the arena since start.
        public var spilled: Int
        /// Jobs that would have gone through it but travelled inline: every chunk was in use.
        public var inlineWhenFull: Int
        /// Result mode: replies whose body came back through the worker's reply ring.
        public var repliesSpilled: Int
    }

    /// The master's pid.
    public var pid: pid_t
    /// Seconds since the master started.
    public var uptime: Double
    /// The client protocol: `oneshot` or `framed`.
    public var wireProtocol: String
    /// The reply mode: `ack` or `result`.
    public var replyMode: String
    /// The dispatch strategy: `round-robin`, `least-busy` or `shared`.
    public var dispatch: String
    /// Client connections accepted since start, including those then refused or answered busy.
    public var acceptedConnections: Int
    /// Client connections open now (control connections not counted).
    public var activeConnections: Int
    /// Responses written, by status name (ok, busy, …).
    public var responses: [(status: String, count: Int)]
    /// Requests held in the master because every queue was full (at most `--max-backlog`).
    public var heldRequests: Int
    /// Whether a rolling restart (SIGHUP or `reload`) is in progress.
    public var rollingRestart: Bool
    /// One entry per worker slot, in slot order, retiring ones included.
    public var workers: [Worker]
    public var arena: Arena?
    /// `--user`: who the workers run as (`name (uid N, gid N)`); `nil`: the master's user.
    public var workerUser: String? = nil
    /// Jobs logged as slow (`--slow-job`) since the start.
    public var slowJobs: Int = 0
    /// `--max-workers`, or `nil` for a pool of fixed size.
    public var maxWorkers: Int? = nil
    /// Looks (one a second) that found the pool at `--max-workers` and short of spare workers.
    public var maxWorkersReached: Int = 0
    /// Jobs finished by every worker process since the start, ended ones and removed slots' too.
    public var jobsHandled: UInt64 = 0

    /// A human-readable table.
    public func table() -> String {
        var out = "master pid \(pid), up \(formatSeconds(uptime)), protocol \(wireProtocol), reply \(replyMode), dispatch \(dispatch)"
        out += workerUser.map { ", workers run as \($0)\n" } ?? "\n"
        out += "connections: \(acceptedConnections) accepted, \(activeConnections) active; held requests: \(heldRequests); slow jobs: \(slowJobs)"
        if let maxWorkers { out += "; dynamic size, at most \(maxWorkers) workers (reached \(maxWorkersReached) times)" }
        out += rollingRestart ? "; rolling restart in progress\n" : "\n"
        out += "responses: " + responses.map { "\($0.status) \($0.count)" }.joined(separator: ", ") + "\n"
        if let arena {
            out += "payload arena: \(arena.inUse) of \(arena.chunks) chunks in use; \(arena.spilled) payloads spilled, "
            out += "\(arena.inlineWhenFull) sent inline while it was full; \(arena.repliesSpilled) replies through reply rings\n"
        }
        let header = ["slot", "pid", "state", "jobs", "restarts", "job age", "queue", "msgs", "bytes", "rss"]
        var rows = [header]
        for w in workers {
            rows.append([
                "\(w.slot)", w.pid.map { "\($0)" } ?? "-", w.state, "\(w.jobsHandled)", "\(w.restarts)",
                w.jobAge.map { formatSeconds($0) } ?? "-", "\(w.queueID)", "\(w.queueMessages)", "\(w.queueBytes)",
                w.rssBytes.map { "\($0 / 1024) KiB" } ?? "-",
            ])
        }
        let widths = header.indices.map { column in rows.map { $0[column].count }.max() ?? 0 }
        for row in rows {
            out += row.enumerated().map { $1.padding(to: widths[$0]) }.joined(separator: "  ") + "\n"
        }
        return out
    }

    /// A JSON object (stable key order).
    public func json() -> String {
        func q(_ s: String) -> String { LineLogHandler.jsonString(s) }
        func opt<T>(_ v: T?) -> String { v.map { "\($0)" } ?? "null" }
        var out = "{\"pid\":\(pid),\"uptime_seconds\":\(uptime),\"protocol\":\(q(wireProtocol)),\"reply\":\(q(replyMode)),"
        out += "\"dispatch\":\(q(dispatch)),\"worker_user\":\(workerUser.map(q) ?? "null"),\"accepted_connections\":\(acceptedConnections),"
        out += "\"active_connections\":\(activeConnections),\"held_requests\":\(heldRequests),\"slow_jobs\":\(slowJobs),"
        out += "\"max_workers\":\(opt(maxWorkers)),\"max_workers_reached\":\(maxWorkersReached),\"jobs_handled\":\(jobsHandled),"
        out += "\"rolling_restart\":\(rollingRestart),\"responses\":{"
        out += responses.map { "\(q($0.status)):\($0.count)" }.joined(separator: ",") + "},"
        if let arena {
            out += "\"arena\":{\"chunks\":\(arena.chunks),\"in_use\":\(arena.inUse),\"spilled\":\(arena.spilled),"
            out += "\"inline_when_full\":\(arena.inlineWhenFull),\"replies_spilled\":\(arena.repliesSpilled)},"
        }
        out += "\"workers\":["
        out += workers.map { w in
            "{\"slot\":\(w.slot),\"pid\":\(opt(w.pid)),\"state\":\(q(w.state)),\"busy\":\(w.busy),\"jobs_handled\":\(w.jobsHandled),"
                + "\"slot_jobs_handled\":\(w.slotJobsHandled),"
                + "\"restarts\":\(w.restarts),\"job_age_seconds\":\(opt(w.jobAge)),\"queue_id\":\(w.queueID),"
                + "\"queue_messages\":\(w.queueMessages),\"queue_bytes\":\(w.queueBytes),\"rss_bytes\":\(opt(w.rssBytes))}"
        }.joined(separator: ",")
        return out + "]}\n"
    }

    /// The Prometheus text exposition format (for node_exporter's textfile collector too).
    public func prometheus() -> String {
        var out = ""
        func metric(_ name: String, _ type: String, _ help: String, _ samples: [(labels: String, value: String)]) {
            out += "# HELP \(name) \(help)\n# TYPE \(name) \(type)\n"
            for sample in samples { out += "\(name)\(sample.labels.isEmpty ? "" : "{\(sample.labels)}") \(sample.value)\n" }
        }
        metric("pool_up", "gauge", "1 while the master runs.", [("", "1")])
        metric("pool_uptime_seconds", "gauge", "Seconds since the master started.", [("", "\(uptime)")])
        metric("pool_connections_accepted_total", "counter", "Connections accepted.", [("", "\(acceptedConnections)")])
        metric("pool_connections_active", "gauge", "Connections open now.", [("", "\(activeConnections)")])
        metric("pool_requests_held", "gauge", "Requests held in the master while queues are full.", [("", "\(heldRequests)")])
        metric("pool_slow_jobs_total", "counter", "Jobs that ran longer than --slow-job.", [("", "\(slowJobs)")])
        if let maxWorkers {
            metric("pool_max_workers", "gauge", "The most workers dynamic sizing starts (--max-workers).", [("", "\(maxWorkers)")])
            metric("pool_max_workers_reached_total", "counter", "Looks (one a second) that found the pool at --max-workers and short of spare workers.",
                   [("", "\(maxWorkersReached)")])
        }
        metric("pool_responses_total", "counter", "Responses written, by status.",
               responses.map { ("status=\"\($0.status)\"", "\($0.count)") })
        if let arena {
            metric("pool_arena_chunks", "gauge", "Payload arena chunks (--arena-chunks).", [("", "\(arena.chunks)")])
            metric("pool_arena_chunks_in_use", "gauge", "Payload arena chunks holding a payload not yet taken.", [("", "\(arena.inUse)")])
            metric("pool_arena_spilled_total", "counter", "Payloads sent through the payload arena.", [("", "\(arena.spilled)")])
            metric("pool_arena_inline_when_full_total", "counter", "Payloads sent inline because every arena chunk was in use.",
                   [("", "\(arena.inlineWhenFull)")])
            metric("pool_reply_ring_spilled_total", "counter", "Replies whose body came back through a worker's reply ring.",
                   [("", "\(arena.repliesSpilled)")])
        }
        metric("pool_workers", "gauge", "Worker slots taking work.", [("", "\(workers.filter { $0.state != "retiring" }.count)")])
        func perWorker(_ value: (Worker) -> String?) -> [(labels: String, value: String)] {
            workers.compactMap { w in value(w).map { ("slot=\"\(w.slot)\"", $0) } }
        }
        metric("pool_jobs_handled_total", "counter", "Jobs finished by every worker process since the start.", [("", "\(jobsHandled)")])
        metric("pool_worker_busy", "gauge", "1 while the worker runs a job (a retiring one too).", perWorker { $0.busy ? "1" : "0" })
        // A counter must not go back to 0 with each new process (--max-jobs, a crash, a reload):
        // `rate` over a scrape interval that saw it reset would lose what came before.
        metric("pool_worker_jobs_handled_total", "counter", "Jobs finished by the slot's worker processes, all of them.",
               perWorker { "\($0.slotJobsHandled)" })
        metric("pool_worker_restarts_total", "counter", "Times the slot's worker was replaced.", perWorker { "\($0.restarts)" })
        metric("pool_worker_job_age_seconds", "gauge", "Age of the current job.", perWorker { "\($0.jobAge ?? 0)" })
        metric("pool_worker_queue_messages", "gauge", "Messages waiting in the worker's queue (IPC_STAT).", perWorker { "\($0.queueMessages)" })
        metric("pool_worker_queue_bytes", "gauge", "Bytes waiting in the worker's queue (IPC_STAT).", perWorker { "\($0.queueBytes)" })
        metric("pool_worker_resident_bytes", "gauge", "Resident memory of the worker.", perWorker { $0.rssBytes.map { "\($0)" } })
        return out
    }
}

/// Resident set size of a process in bytes, from /proc/PID/statm.
func residentBytes(of pid: pid_t) -> Int? {
    guard let text = readSmallFile("/proc/\(pid)/statm") else { return nil }
    let fields = text.split(separator: " ")
    guard fields.count > 1, let pages = Int(fields[1]) else { return nil }
    return pages * Int(sysconf(Int32(_SC_PAGESIZE)))
}

private func formatSeconds(_ seconds: Double) -> String {
    if seconds < 1 { return "\(Int(seconds * 1000)) ms" }
    if seconds < 120 { return "\(Int(seconds)) s" }
    if seconds < 7200 { return "\(Int(seconds / 60)) min" }
    return "\(Int(seconds / 3600)) h"
}

extension String {
    func padding(to width: Int) -> String { self + String(repeating: " ", count: max(0, width - count)) }
}
