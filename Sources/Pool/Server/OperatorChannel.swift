import Glibc
import Logging

/// The operator's channel: `<socket>.ctl` (mode 0600) takes one command line — `status
/// [table|json|prometheus]`, `reload`, `scale N`, `stop` — answers it and closes. Also the other
/// operator actions the signals trigger (scaling, log reopening) and the status report.
extension Master {
    func acceptControl() {
        guard let control else { return }
        // Bounded per turn as the clients' accepts are (`acceptClients`).
        for _ in 0..<Self.acceptsPerTurn {
            let client: SocketFD?
            do {
                client = try control.socket.accept()
            } catch let error as SystemError where error.errno == .tooManyOpenFiles || error.errno == .tooManyOpenFilesInSystem {
                // Same as the client socket: shed it, or the pending connection keeps the listener
                // readable and the loop spins.
                shedOneConnection(control, control: true)
                return
            } catch let error as SystemError where error.errno == .connectionAbort || error.errno == .protocolError {
                // That one connection is gone; the next may be fine.
                continue
            } catch {
                // As for the client socket (`acceptClients`): paused, or the loop spins on it.
                pauseListeners("accept failed on the control socket; not accepting for 100 ms", metadata: ["error": "\(error)"])
                return
            }
            guard let client else { return }
            // The control socket is the owner's alone (0600), but a stuck script could still open
            // connections without end: past the cap, answer and close at once.
            if controlConnectionCount >= configuration.maxControlConnections {
                // One short write to a fresh non-blocking socket: it fits, or the answer is lost.
                let refusal = Array("error: too many control connections (\(configuration.maxControlConnections))\n".utf8)
                _ = refusal.withUnsafeBytes { try? client.write($0) }
                client.close()
                continue
            }
            guard let key = connections.makeKey(fd: client.raw) else {
                client.close()
                continue
            }
            let connection = Connection(key: key, fd: client, now: monotonicNanoseconds(), inputCapacity: 256)
            guard (try? epoll.add(client.raw, events: .readable, token: key)) != nil else {
                client.close()
                continue
            }
            connection.interest = .readable
            connection.registered = true
            connection.isControl = true
            connections.insert(connection)
            controlConnectionCount += 1
        }
    }

    /// Longest control command line, its newline included (the protocol's: every command fits).
    static let maxControlLine = 1024

    /// One command line in, one answer out, then close.
    func controlEvent(_ connection: Connection, _ events: Epoll.Events) {
        // Once answered, only writing the answer remains: more bytes (a second command) or a
        // hang-up from the client must neither run anything nor add to the answer.
        if events.contains(.writable) || connection.closeWhenDone { flush(connection); return }
        reading: while true {
            switch readChunk(connection, minimum: 256, limit: Self.maxControlLine) {
            case .failed: return
            case .data: continue
            case .noSpace, .wouldBlock, .endOfStream: break reading
            }
        }
        let bytes = Array(connection.input.readable)
        let answer: String
        if let newline = bytes.firstIndex(of: 0x0A), newline < Self.maxControlLine {
            answer = runControl(String(decoding: bytes[..<newline], as: UTF8.self))
        } else if connection.peerClosed && bytes.count < Self.maxControlLine {
            // Ended by EOF alone: it may be a client killed mid-write (`scale 1` of `scale 12`),
            // so only a command that changes nothing runs that way.
            let line = String(decoding: bytes, as: UTF8.self)
            answer = line.split(whereSeparator: \.isWhitespace).first == "status" || line.isEmpty
                ? runControl(line) : "error: a command that changes the pool must end with a newline\n"
        } else if bytes.count >= Self.maxControlLine || connection.peerClosed {
            // Never run a command cut short: `scale 1` is not what `scale 10…` meant.
            answer = "error: command line longer than \(Self.maxControlLine - 1) bytes\n"
        } else {
            return
        }
        // A command may end in closing connections (`stop` with --shutdown-timeout 0 reaches its
        // deadline at once); this one is kept for its answer, but check.
        guard connections[connection.key] != nil else { return }
        connection.input.consume(bytes.count)
        connection.output.append(Array(answer.utf8))
        connection.closeWhenDone = true
        connection.messageTaken = true
        flush(connection)
    }

    /// Commands of the operator channel. Answers start with `ok` or `error:`; status prints the report.
    func runControl(_ line: String) -> String {
        // Any whitespace: a CRLF tool (`nc -C`, socat's crlf) ends the line with \r.
        let words = line.split(whereSeparator: \.isWhitespace).map(String.init)
        let command = words.first ?? ""
        // A command that may change what a report shows has a status after it in the same turn
        // built anew. Only those: an unknown word or an empty line between statuses would
        // otherwise cost a rebuild each (an IPC_STAT and a /proc read per worker).
        if ["reload", "scale", "stop"].contains(command) { turnReport = nil }
        switch command {
        case "status":
            let report = reportOfThisTurn()
            switch words.dropFirst().first ?? "table" {
            case "json": return report.json()
            case "prometheus": return report.prometheus()
            default: return report.table()
            }
        case "reload":
            guard phase == .running else { return "error: shutting down\n" }
            supervisor.startRollingRestart()
            return "ok rolling restart started\n"
        case "scale":
            guard phase == .running else { return "error: shutting down\n" }
            guard words.count == 2, let n = Int(words[1]), n >= 1 else { return "error: usage: scale N (N >= 1)\n" }
            let target = min(n, Supervisor.maxWorkers)
            let reached = scale(to: target)
            // Short: a queue could not be created (kernel.msgmni) or no slot was left.
            guard reached == target else { return "error: scaled to \(reached) of \(target) workers; see the log\n" }
            return "ok scaling to \(target)\n"
        case "stop":
            if phase == .running { beginShutdown() }
            return "ok stopping\n"
        default:
            return "error: unknown command (status [table|json|prometheus], reload, scale N, stop)\n"
        }
    }

    @discardableResult
    func scale(to target: Int, spareFirst: Bool = false) -> Int {
        let reached = supervisor.scale(to: target, spareFirst: spareFirst)
        // A slot whose worker could not be started waits for a retry.
        nextRespawn = supervisor.respawnDue(now: monotonicNanoseconds())
        notifyStatus()
        return reached
    }

    func reopenLog() {
        guard LogFile.isActive else { return }
        do { try LogFile.reopen() } catch {
            logger.error("could not reopen the log file", metadata: ["error": "\(error)"])
        }
        MasterLogOutput.prepare()
        // Workers reopen theirs in the signal handler, idle or in a job.
        supervisor.signalAll(SIGUSR1)
        logger.info("log file reopened (SIGUSR1)")
    }

    func notifyStatus() {
        notifier.notify("STATUS=\(supervisor.activeCount) workers, \(connections.count - controlConnectionCount) connections, \(accepted) accepted")
    }

    /// Status requests read in one loop turn share one report: building it costs an IPC_STAT
    /// and a /proc read per worker (10–20 ms with 1000 workers), and 64 control connections
    /// asking at once cost the loop 64 times that. A later turn builds a fresh one.
    func reportOfThisTurn() -> StatusReport {
        if let turnReport, turnReport.turn == turn { return turnReport.report }
        let report = statusReport()
        turnReport = (turn, report)
        return report
    }

    func statusReport() -> StatusReport {
        let now = monotonicNanoseconds()
        let scoreboard = supervisor.scoreboard
        let workers = supervisor.slots.filter { !$0.removed }.map { slot -> StatusReport.Worker in
            let queue = try? slot.queue.status()
            let busy = slot.pid != nil && scoreboard.state(slot.index) == .busy
            let state = slot.retiring ? "retiring" : slot.pid == nil ? "starting" : busy ? "busy" : "idle"
            let handled = slot.pid == nil ? 0 : scoreboard.jobsHandled(slot.index)
            return StatusReport.Worker(
                slot: slot.index, pid: slot.pid, state: state,
                jobsHandled: handled, slotJobsHandled: slot.earlierJobsHandled &+ handled, busy: busy, restarts: slot.restarts,
                // Clamped: the start time is the worker's to write, and may lie in the future.
                jobAge: busy ? Double(max(0, now - scoreboard.jobStartedNanoseconds(slot.index))) / 1e9 : nil,
                queueID: slot.queue.id, queueMessages: queue?.messages ?? 0, queueBytes: queue?.bytes ?? 0,
                rssBytes: slot.pid.flatMap(residentBytes(of:)))
        }
        return StatusReport(
            pid: getpid(), uptime: Double(now - startedAt) / 1e9,
            wireProtocol: configuration.wireProtocol.rawValue, replyMode: configuration.replyMode.rawValue,
            dispatch: configuration.effectiveDispatch.rawValue, acceptedConnections: accepted,
            activeConnections: connections.count - controlConnectionCount,
            responses: ResponseStatus.allCases.map { ($0.metricName, statusCounts[Int($0.rawValue)]) },
            heldRequests: held.count, rollingRestart: supervisor.isRollingRestart, workers: workers,
            arena: supervisor.arena == nil && supervisor.replyRings == nil ? nil : StatusReport.Arena(
                chunks: supervisor.arena?.count ?? 0, inUse: supervisor.arena?.inUse ?? 0, spilled: supervisor.arena?.stored ?? 0,
                inlineWhenFull: supervisor.arena?.exhausted ?? 0, repliesSpilled: supervisor.replyRings?.taken ?? 0),
            workerUser: configuration.workerUser.map { "\($0)" }, slowJobs: supervisor.slowJobs,
            maxWorkers: configuration.dynamicScaling?.maxWorkers, maxWorkersReached: ceilingReached,
            jobsHandled: supervisor.jobsHandled)
    }
}
