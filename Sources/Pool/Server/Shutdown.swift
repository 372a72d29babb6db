import Glibc
import Logging

/// Graceful shutdown (SIGINT/SIGTERM): stop accepting, finish connections, queue a quit behind
/// each worker's work, wait up to --shutdown-timeout, SIGKILL what is left, reap, remove every
/// queue. A second signal (or a fatal loop error) forces the immediate version.
extension Master {
    func beginShutdown() {
        logger.info("shutdown: stopped accepting; finishing connections in progress",
                    metadata: ["connections": "\(connections.count - controlConnectionCount)", "timeout": "\(configuration.shutdownTimeout)"])
        phase = .draining
        notifier.notify("STOPPING=1\nSTATUS=draining \(connections.count) connections")
        supervisor.cancelPendingChanges()
        let now = monotonicNanoseconds()
        deadline = now + Int64(configuration.shutdownTimeout * 1e9)
        supervisor.expediteRespawns(now: now)
        nextRespawn = now
        // Clients already waiting in the listen backlog are taken in rather than reset when the
        // listener closes: one whose request is there is answered (shutting down); one that has
        // sent nothing yet owes nothing and is closed in order, like any silent connection.
        // Unlinked first, so the backlog taken in is the one there now: clients connecting again
        // and again could otherwise hold the master in this loop past its deadline. (An
        // inherited socket stays connectable: bounded then by the largest backlog it can have,
        // the kernel's cap net.core.somaxconn, as systemd's Backlog= is not known here.)
        listener?.unlinkIfOurs()
        acceptClients(untilEmpty: true, limit: shutdownAcceptLimit())
        closeListener()
        // The operator's connections are left alone: the one that sent `stop` gets its answer.
        for connection in connections.values where !connection.isControl {
            // Requests already sent but not yet read get an answer (shutting down), not silence.
            if !connection.lingering && !connection.detached {
                switch configuration.wireProtocol {
                case .oneshot: readOneshot(connection)
                case .framed, .tagged: readFramed(connection)
                }
            }
            settle(connection)
        }
        advanceShutdown(now: monotonicNanoseconds())
    }

    /// Clients at most to take in from the listen backlog at the stop: all it can hold (the
    /// kernel keeps one more than the backlog). Ours was listened with --listen-backlog; an
    /// inherited one's backlog is systemd's, at most net.core.somaxconn (read now: it may have
    /// changed since the start, and this runs once).
    func shutdownAcceptLimit() -> Int {
        var backlog = Int(configuration.listenBacklog)
        if listener?.inherited == true { backlog = max(backlog, readProcInt("/proc/sys/net/core/somaxconn") ?? 4096) }
        return max(Self.acceptsPerTurn, backlog + 1)
    }

    func closeListener() {
        // Unlinked before closed: once closed, a master starting on the path finds the socket
        // stale and may bind its own there, which an unlink after the close could then remove.
        if let control {
            try? epoll.remove(control.socket.raw)
            control.unlinkIfOurs()
            control.socket.close()
            self.control = nil
        }
        guard let listener else { return }
        try? epoll.remove(listener.socket.raw)
        listener.unlinkIfOurs()
        listener.socket.close()
        self.listener = nil
    }

    func advanceShutdown(now: Int64) {
        // Jobs staged this turn go ahead of any quit message.
        flushBatches()
        // Workers are needed only for requests in flight. A connection that owes nothing but is
        // still open (a silent client, one lingering after a refusal, a slow reader being written
        // to) must not keep them from their quit until the deadline.
        if phase == .draining && held.isEmpty && connections.values.allSatisfy({ $0.inflight == 0 }) {
            logger.info("shutdown: nothing in flight; asking workers to quit after their queued work")
            phase = .quitting
        }
        if phase == .quitting {
            // Every live worker gets one quit behind its queue — including one respawned during
            // shutdown to finish the queue of a worker that died. A full queue is retried.
            let slots = supervisor.slots
            let targets = slots.indices.filter { slots[$0].pid.map { !quitSent.contains($0) } ?? false }
            if !targets.isEmpty {
                let full = Set(supervisor.sendQuit(to: targets, buffer: sendBuffer))
                for index in targets where !full.contains(index) { quitSent.insert(slots[index].pid!) }
            }
        }
        if (phase == .draining || phase == .quitting) && now >= deadline {
            logger.warning("shutdown: --shutdown-timeout reached; killing remaining workers",
                           metadata: ["workers": "\(supervisor.livePIDs)", "connections": "\(connections.count)"])
            phase = .killing
            supervisor.cancelRespawns()
            // A respawn time left from before (a fork that failed) would make every wait a
            // zero-timeout poll until the last reap.
            nextRespawn = nil
            // Replies already sent are answers, not "shutting down": this turn may have woken for
            // them (the doorbell) and not read them yet. Told 6, a client would run the job again.
            drainReplies(retryHeld: false)
            answerEverythingOwed(why: "the shutdown deadline passed")
            for connection in connections.values where !connection.isControl {
                closeAfterWritingWhatFits(connection, reason: "shutdown deadline")
            }
            supervisor.signalAll(SIGKILL)
            killedAt = now
        }
        // SIGKILL ends a worker at once, unless it is in uninterruptible sleep (a hung NFS mount):
        // such a one is left to init after a grace, as in a forced stop, so the queues still go.
        if phase == .killing && supervisor.hasWorkersOrRespawns && now - killedAt >= Self.killGraceNanoseconds {
            logger.error("shutdown: workers still alive after SIGKILL; not waiting for them", metadata: ["workers": "\(supervisor.livePIDs)"])
            logUnfinished(supervisor.killAndReapAll(deadline: 0, waited: Double(Self.killGraceNanoseconds) / 1e9), stop: "shutdown deadline")
        }
        // Answers still being written (a slow reader) are finished first, until the deadline; what
        // is left then owes nothing (silent, lingering) and is closed by `finish`.
        if ((phase == .quitting && connections.values.allSatisfy(\.isQuiescent)) || phase == .killing)
            && !supervisor.hasWorkersOrRespawns {
            phase = .finished
        }
    }

    /// What the socket takes of what the connection is owed, then close: a client not reading
    /// loses the rest.
    func closeAfterWritingWhatFits(_ connection: Connection, reason: String) {
        try? writeOutput(connection)
        close(connection, reason: reason)
    }

    /// The shutdown deadline (or its end with work no queue took): every request still owed an
    /// answer gets "shutting down" (answers already computed behind it, in order, go out with it),
    /// and acknowledged messages that will not run are named in the log.
    func answerEverythingOwed(why: String) {
        answerEveryRoute(.shuttingDown, body: [])
        var notRun: [UInt64] = []
        for job in held.removeAll() {
            if let ack = job.ack {
                // Never acknowledged: the client is told, nothing is lost.
                if let connection = connections[ack.connection] { answer(connection, ack.sequence, .shuttingDown, []) }
            } else if job.acknowledged {
                notRun.append(job.id)
            }
        }
        if !notRun.isEmpty {
            logger.error("acknowledged messages not run: \(why)", metadata: ["jobs": "\(notRun)"])
        }
    }

    /// Names the jobs left in the queues being removed (only after a deadline or a forced stop:
    /// a graceful stop quits each worker behind its queued work). Their clients were answered
    /// (result mode) or acknowledged (ack mode: lost, hence an error).
    func logJobsLeftInQueues() {
        let left = supervisor.takeUnrunJobs(buffer: receiveBuffer)
        guard !left.isEmpty else { return }
        if configuration.replyMode == .ack {
            logger.error("acknowledged messages not run: removed with their queues at shutdown", metadata: ["jobs": "\(left)"])
        } else {
            logger.warning("jobs not run: removed with their queues at shutdown", metadata: ["jobs": "\(left)"])
        }
    }

    func finish() -> Int32 {
        closeListener()
        // Nothing is owed by now, unless jobs went back to the master that no queue would take
        // (a worker left mid-message while the queues were removed from outside): answered or
        // named as at the deadline, not dropped unsaid.
        answerEverythingOwed(why: "no queue took them before the stop ended")
        for connection in connections.values { closeAfterWritingWhatFits(connection, reason: "shutdown") }
        logJobsLeftInQueues()
        supervisor.removeQueues()
        // Every worker is reaped and every queue was drained: a chunk still taken was lost track
        // of (a bug; harmless now, the memory goes with the process, but worth knowing).
        if let arena = supervisor.arena, arena.inUse > 0 {
            logger.warning("payload arena chunks still taken at exit", metadata: ["in_use": "\(arena.inUse)"])
        }
        logger.info("shutdown complete")
        return exitStatus
    }

    /// How long the shutdown waits for SIGKILLed workers to be reaped (`killAndReapAll`'s bound).
    static let killGraceNanoseconds: Int64 = 5_000_000_000

    /// Names the acknowledged jobs killed workers took with them (`unfinished`, from
    /// `killAndReapAll`) and those still held. Their clients were told "ok"; result mode's clients
    /// see their connections close unanswered.
    func logUnfinished(_ unfinished: [(id: UInt64, started: Bool)], stop: String) {
        guard configuration.replyMode == .ack else { return }
        let inHand = unfinished.filter(\.started).map(\.id)
        let notRun = unfinished.filter { !$0.started }.map(\.id) + held.removeAll().filter(\.acknowledged).map(\.id)
        if !inHand.isEmpty {
            logger.error("acknowledged messages lost with their workers at the \(stop)", metadata: ["jobs": "\(inHand)"])
        }
        if !notRun.isEmpty {
            logger.error("acknowledged messages not run: \(stop)", metadata: ["jobs": "\(notRun)"])
        }
    }

    /// A second stop signal, or a fatal loop error: kill everything now, still cleaning up.
    func forcedStop(reason: String) -> Int32 {
        logger.warning("forced stop: killing workers now", metadata: ["reason": "\(reason)"])
        notifier.notify("STOPPING=1\nSTATUS=forced stop")
        closeListener()
        for connection in connections.values { close(connection, reason: "forced stop") }
        logUnfinished(supervisor.killAndReapAll(), stop: "forced stop")
        logJobsLeftInQueues()
        supervisor.removeQueues()
        logger.info("shutdown complete (forced)")
        return 1
    }
}
