import Foundation
import Glibc
import Pool
import Testing

private typealias S = OneshotShutdownSupport

extension OneshotShutdownSuites {
    /// Start-up refusals and shutdown of the built `pool-server` binary (oneshot protocol, ack replies).
    /// Every test checks that nothing is left: no socket file, no queue, no process.
    @Suite(.serialized) struct ShutdownIntegrationTests {
        // MARK: - SIGINT / SIGTERM

        /// One SIGINT or SIGTERM: exit status 0, socket file removed, every queue removed, every worker
        /// gone — having quit on request (exit 0), not been killed — and everything acknowledged handled.
        @Test(arguments: [SIGINT, SIGTERM])
        func stopSignalShutsDownCleanly(signal: Int32) throws {
            // Long timeouts: a shutdown that waited for the idle client or killed the workers at the
            // deadline would not finish within the 20 s allowed below.
            let server = try TestServer(["--workers", "3", "--handler", "log",
                                         "--shutdown-timeout", "60", "--idle-timeout", "60"])
            defer { server.stop() }
            #expect(waitUntil { server.workerPIDs.count == 3 })
            let workers = server.workerPIDs
            let queues = server.queueIDs
            #expect(queues.count == 3)
            #expect(Set(queues).isSubset(of: existingQueueIDs()))

            let messages = (0..<9).map { "before-signal-\(signal)-\($0)" }
            for message in messages {
                #expect(try S.oneshot(server.socketPath, message) == "ok")
            }
            // A client that connected and sent nothing must not hold the shutdown up.
            let idle = try SocketFD.unixStream(nonBlocking: false)
            defer { idle.close() }
            try idle.connect(path: server.socketPath)

            server.signal(signal)
            S.expectExit(server, status: 0, timeout: 20)
            try idle.setReceiveTimeout(seconds: 5)
            var byte: UInt8 = 0
            #expect(Glibc.read(idle.raw, &byte, 1) == 0, "the idle client should see the connection closed")
            S.expectNothingLeft(socketPath: server.socketPath, queueIDs: queues, masterPID: server.pid, workers: workers)

            let log = server.log
            for worker in workers {
                let lines = S.exitLines(of: worker, in: log)
                #expect(lines.count == 1 && lines.first?.contains("status=exit 0") == true,
                        "worker \(worker) should have quit with exit 0: \(lines)")
            }
            let counts = S.recvCounts(in: log)
            #expect(messages.allSatisfy { counts[$0] == 1 }, "acknowledged messages not logged exactly once:\n\(log)")
        }

        /// Work already queued when the stop signal arrives is handled before the worker quits: the
        /// worker is frozen (SIGSTOP) while 50 messages are acknowledged, SIGTERM is sent, the quit
        /// request lines up behind them, and once the worker resumes every one is handled, in order.
        @Test func queuedWorkIsHandledBeforeWorkersQuit() throws {
            let server = try TestServer(["--workers", "1", "--handler", "log"])
            defer { server.stop() }
            #expect(waitUntil { server.workerPIDs.count == 1 })
            let worker = try #require(server.workerPIDs.first)
            let queueID = try #require(server.queueIDs.first)
            let queue = MessageQueue(id: queueID)

            kill(worker, SIGSTOP)
            var resumed = false
            defer { if !resumed { kill(worker, SIGCONT) } }
            #expect(waitUntil { processState(worker) == "T" }, "the worker should be stopped")

            let messages = (0..<50).map { "queued-\($0)" }
            for message in messages {
                #expect(try S.oneshot(server.socketPath, message) == "ok")
            }
            #expect(try queue.status().messages == messages.count)

            server.signal(SIGTERM)
            // The quit request is queued behind the pending work, not in front of it.
            #expect(waitUntil { (try? queue.status().messages) == messages.count + 1 },
                    "expected \(messages.count) jobs + 1 quit in the queue, have \(String(describing: try? queue.status().messages))")
            #expect(S.isRunning(server), "the master must wait for its worker")

            kill(worker, SIGCONT)
            resumed = true
            S.expectExit(server, status: 0, timeout: 20)
            let handled = recvLines(in: server.log).map(\.message).filter { $0.hasPrefix("queued-") }
            #expect(handled == messages, "handled \(handled.count) of \(messages.count): \(handled.prefix(5))...")
            let lines = S.exitLines(of: worker, in: server.log)
            #expect(lines.count == 1 && lines.first?.contains("status=exit 0") == true, "\(lines)")
            S.expectNothingLeft(socketPath: server.socketPath, queueIDs: [queueID], masterPID: server.pid, workers: [worker])
        }

        /// Held for queue room when the stop begins, then the only worker dies with its queue
        /// drained, while the master is frozen (SIGSTOP). Two orders of what the master does next:
        /// - it sends the held messages into the dead, unreaped worker's queue first (what it does
        ///   when the room and the death come in different turns): the reap must see them there
        ///   and start a worker for them;
        /// - it reaps first (both in one turn; `POOL_DEBUG_HELD_WAIT_FOR_REAP` makes it so): the
        ///   worker is not replaced then (nothing queued), so the messages it then sends into the
        ///   workerless slot must bring a worker with them (`Supervisor.ensureWorker`). They used
        ///   to wait for a reader that never came: acknowledged `ok`, then removed unrun.
        @Test(arguments: [false, true])
        func heldMessagesOfAStopWhoseOnlyWorkerDiedAreRun(reapFirst: Bool) throws {
            var environment = ProcessInfo.processInfo.environment
            if reapFirst { environment["POOL_DEBUG_HELD_WAIT_FOR_REAP"] = "1" }
            let server = try TestServer(["--workers", "1", "--handler", "log", "--queue-bytes", "16384", "--shutdown-timeout", "60"],
                                        environment: environment)
            defer { server.stop() }
            #expect(waitUntil { server.workerPIDs.count == 1 })
            let worker = try #require(server.workerPIDs.first)
            let queue = MessageQueue(id: try #require(server.queueIDs.first))
            var frozen: Set<pid_t> = []
            defer { for pid in frozen { kill(pid, SIGCONT) } }
            func freeze(_ pid: pid_t) {
                kill(pid, SIGSTOP)
                frozen.insert(pid)
                #expect(waitUntil { processState(pid) == "T" }, "\(pid) should be stopped")
            }
            func thaw(_ pid: pid_t) {
                kill(pid, SIGCONT)
                frozen.remove(pid)
            }
            freeze(worker)

            // About 900 bytes each: the 16 KiB queue takes some, the master holds the rest.
            let messages = (0..<40).map { "held-\($0)-" + String(repeating: "x", count: 900) }
            let record = S.SendRecord()
            let path = server.socketPath
            let senders = messages.map { message in
                Thread {
                    do { record.reply(message, try S.oneshot(path, message, timeout: 90)) } catch { record.error(message, "\(error)") }
                }
            }
            senders.forEach { $0.start() }
            // Every client is in: acknowledged (its message queued) or held, as the master counts.
            var acknowledged = 0
            let settled = waitUntil(timeout: 30) {
                guard let status = try? ControlClient.send("status json", controlSocket: path + ".ctl", timeout: 10),
                      let object = try? JSONSerialization.jsonObject(with: Data(status.utf8)) as? [String: Any],
                      let held = object["held_requests"] as? Int, let responses = object["responses"] as? [String: Any],
                      let ok = responses["ok"] as? Int else { return false }
                acknowledged = ok
                return ok + held == messages.count
            }
            try #require(settled, "not every client was acknowledged or held (\(acknowledged) acknowledged)")
            try #require(acknowledged < messages.count, "nothing was held: the queue took all \(acknowledged)")

            server.signal(SIGTERM)
            #expect(waitUntil { server.log.contains("shutdown: stopped accepting") }, "\(server.log)")
            freeze(server.pid)
            thaw(worker)
            // Every acknowledged job run, and the worker back in msgrcv on an empty queue: killed
            // there it leaves nothing unstarted (that alone would have it replaced).
            #expect(waitUntil(timeout: 20) {
                (try? queue.status().messages) == 0 && recvLines(in: server.log).count == acknowledged
            }, "the worker did not run the \(acknowledged) queued jobs")
            let msgrcv = try #require(SyscallNumber.msgrcv, "msgrcv's system call number on this architecture")
            #expect(waitUntil(timeout: 20) { blockedSyscall(worker) == msgrcv },
                    "the worker is not waiting in msgrcv: \(OneshotShutdownSupport.diagnose(worker))")
            kill(worker, SIGKILL)
            #expect(waitUntil { processState(worker) == "Z" }, "the worker should be dead, not yet reaped")
            thaw(server.pid)

            S.expectExit(server, status: 0, timeout: 30)
            #expect(waitUntil(timeout: 30) { record.replies.count + record.errors.count == messages.count },
                    "\(record.replies.count) of \(messages.count) answered")
            let answers = Dictionary(record.replies.map { ($0.message, $0.reply) }) { first, _ in first }
            #expect(record.errors.isEmpty && messages.allSatisfy { answers[$0] == "ok" },
                    "\(Set(answers.values)) \(record.errors.prefix(3))")
            let handled: [String] = recvLines(in: server.log).map { $0.message.split(separator: "-").prefix(2).joined(separator: "-") }
            let expected = (0..<40).map { "held-\($0)" }
            #expect(Set(handled).isSuperset(of: expected) && handled.count == expected.count,
                    "handled \(handled.count) of \(expected.count)\n\(server.log.suffix(3000))")
            #expect(!server.log.contains("not run"), "\(server.log.suffix(3000))")
            S.expectNothingLeft(socketPath: server.socketPath, queueIDs: server.queueIDs, masterPID: server.pid, workers: Array(spawnedWorkerPIDs(inLog: server.log)))
        }

        /// A client keeps sending while SIGTERM arrives. Whatever was acknowledged `ok` is handled
        /// (logged exactly once), and nothing that was not acknowledged is handled.
        @Test func acknowledgedMessagesSurviveAStopRacingClients() throws {
            let server = try TestServer(["--workers", "1", "--handler", "log"])
            defer { server.stop() }
            let record = S.SendRecord()
            let path = server.socketPath
            let done = DispatchSemaphore(value: 0)
            let sender = Thread {
                var index = 0
                var failuresAfterStop = 0
                while index < 20_000 && failuresAfterStop < 3 {
                    let message = "race-\(index)"
                    index += 1
                    do {
                        record.reply(message, try S.oneshot(path, message))
                    } catch {
                        let stopping = record.shouldStop
                        record.error(message, "\(stopping ? "after" : "before") stop: \(error)")
                        if stopping { failuresAfterStop += 1 }
                    }
                }
                done.signal()
            }
            sender.start()
            #expect(waitUntil(timeout: 30) { record.okCount >= 200 })
            record.shouldStop = true
            server.signal(SIGTERM)
            #expect(done.wait(timeout: .now() + 60) == .success, "the sender did not finish")
            S.expectExit(server, status: 0, timeout: 30)

            let replies = record.replies
            let acknowledged = Set(replies.filter { $0.reply == "ok" }.map(\.message))
            let strange = replies.filter { !["ok", "error: shutting down", "error: busy", ""].contains($0.reply) }
            #expect(strange.isEmpty, "unexpected replies: \(strange.prefix(5))")
            let early = record.errors.filter { $0.error.hasPrefix("before") }
            #expect(early.isEmpty, "client errors before the stop: \(early.prefix(5))")

            var counts: [String: Int] = [:]
            for line in recvLines(in: server.log) where line.message.hasPrefix("race-") { counts[line.message, default: 0] += 1 }
            let lost = acknowledged.filter { counts[$0] == nil }
            let twice = counts.filter { $0.value > 1 }.map(\.key)
            let unacknowledged = Set(counts.keys).subtracting(acknowledged)
            #expect(lost.isEmpty, "\(lost.count) acknowledged message(s) never handled: \(lost.sorted().prefix(10))")
            #expect(twice.isEmpty, "handled more than once: \(twice.prefix(10))")
            #expect(unacknowledged.isEmpty, "handled without an ok: \(unacknowledged.sorted().prefix(10))")
            var others: [String: Int] = [:]
            for reply in replies where reply.reply != "ok" { others[reply.reply.debugDescription, default: 0] += 1 }
            print("stop race: \(acknowledged.count) ok, other replies \(others), client errors \(record.errors.map(\.error))")
            S.expectNothingLeft(socketPath: server.socketPath, queueIDs: server.queueIDs, masterPID: server.pid, workers: Array(spawnedWorkerPIDs(inLog: server.log)))
        }

        // MARK: - Forced stop

        /// Whether `signo` is set to SIG_IGN in `pid` (the `SigIgn` mask of /proc/PID/status).
        static func ignores(_ pid: pid_t, _ signo: Int32) -> Bool { signalSet("SigIgn", of: pid, contains: signo) }

        /// With a worker stuck in a job and --shutdown-timeout 30, one SIGINT waits; a second SIGINT
        /// stops at once (exit status 1), still removing queues and socket and leaving no process.
        @Test func secondSIGINTForcesAnImmediateStop() throws {
            let server = try TestServer(["--workers", "1", "--handler", "sim", "--shutdown-timeout", "30"])
            defer { server.stop() }
            let (worker, queue) = try S.occupyTheOnlyWorker(server, with: "hang")
            let workers = [worker]
            let queues = [queue.id]

            server.signal(SIGINT)
            #expect(waitUntil { !server.logLines(containing: "shutdown: stopped accepting").isEmpty }, "the SIGINT was not taken")
            #expect(S.isRunning(server), "one SIGINT must wait for the stuck worker (shutdown-timeout 30)")
            #expect(processIsAlive(worker))

            server.signal(SIGINT)
            let status = S.waitForExit(server, timeout: 10)
            #expect(status == 1, "a second SIGINT should stop at once with status 1, got \(String(describing: status))\n\(S.diagnose(server.pid))\nlog tail:\n\(server.log.suffix(3000))")
            S.expectNothingLeft(socketPath: server.socketPath, queueIDs: queues, masterPID: server.pid, workers: workers)
        }

        /// At --shutdown-timeout, acknowledged messages that will never run are named in the log:
        /// the one its SIGKILLed worker was running and the ones still in its queue (before, those
        /// were removed with the queue without a word).
        @Test func shutdownDeadlineNamesAcknowledgedMessagesNotRun() throws {
            let server = try TestServer(["--workers", "1", "--handler", "sim", "--batch-time", "0", "--shutdown-timeout", "1"])
            defer { server.stop() }
            let (worker, queue) = try S.occupyTheOnlyWorker(server, with: "hang")
            let workers = [worker]
            let queues = [queue.id]
            for message in ["a", "b", "c"] { #expect(try S.oneshot(server.socketPath, message) == "ok") }
            #expect((try? queue.status())?.messages == 3)

            server.signal(SIGTERM)
            S.expectExit(server, status: 0)
            let log = server.log
            #expect(log.split(separator: "\n").contains { $0.contains("acknowledged message lost with its worker") && $0.contains("job=1") },
                    "the running message (job 1) should be logged lost:\n\(log)")
            #expect(log.split(separator: "\n").contains { $0.contains("acknowledged messages not run: removed with their queues") && $0.contains("[2, 3, 4]") },
                    "the queued messages (jobs 2, 3, 4) should be named:\n\(log)")
            S.expectNothingLeft(socketPath: server.socketPath, queueIDs: queues, masterPID: server.pid, workers: workers)
        }

        /// A forced stop (a second SIGTERM) names the acknowledged messages it takes: the one its
        /// killed worker was running and the ones still in the queue. It used to name only the
        /// queued ones: the job in the worker's hands vanished without a word.
        @Test func forcedStopNamesAcknowledgedMessagesInWorkersHands() throws {
            let server = try TestServer(["--workers", "1", "--handler", "sim", "--batch-time", "0", "--shutdown-timeout", "30"])
            defer { server.stop() }
            let (worker, queue) = try S.occupyTheOnlyWorker(server, with: "hang")
            for message in ["a", "b"] { #expect(try S.oneshot(server.socketPath, message) == "ok") }
            #expect((try? queue.status())?.messages == 2)

            server.signal(SIGTERM)
            #expect(waitUntil { !server.logLines(containing: "shutdown: stopped accepting").isEmpty }, "the SIGTERM was not taken")
            server.signal(SIGTERM)
            let status = S.waitForExit(server, timeout: 20)
            #expect(status == 1, "a second SIGTERM is a forced stop (status 1), got \(String(describing: status))")
            let log = server.log
            #expect(log.split(separator: "\n").contains { $0.contains("acknowledged messages lost with their workers at the forced stop") && $0.contains("[1]") },
                    "the running message (job 1) should be named:\n\(log)")
            #expect(log.split(separator: "\n").contains { $0.contains("acknowledged messages not run: removed with their queues") && $0.contains("[2, 3]") },
                    "the queued messages (jobs 2, 3) should be named:\n\(log)")
            S.expectNothingLeft(socketPath: server.socketPath, queueIDs: [queue.id], masterPID: server.pid, workers: [worker])
        }

        // MARK: - SIGINT and workers

        /// A SIGINT sent to a worker alone (as a terminal would send to the whole group) is ignored:
        /// the worker keeps running and keeps handling messages.
        @Test func workerIgnoresSIGINT() throws {
            let server = try TestServer(["--workers", "3", "--handler", "log"])
            defer { server.stop() }
            #expect(waitUntil { server.workerPIDs.count == 3 })
            let workers = server.workerPIDs
            let target = try #require(workers.first)

            // Ignored, not handled: the kernel discards it at once, so the worker cannot die of it.
            #expect(Self.ignores(target, SIGINT), "worker \(target) does not ignore SIGINT")
            #expect(kill(target, SIGINT) == 0)
            #expect(processIsAlive(target), "worker \(target) died of SIGINT")
            #expect(server.workerPIDs == workers)

            // Round robin: three consecutive messages reach the three workers, the target included.
            let messages = (0..<3).map { "after-worker-sigint-\($0)" }
            for message in messages {
                #expect(try S.oneshot(server.socketPath, message) == "ok")
            }
            #expect(waitUntil { let counts = S.recvCounts(in: server.log); return messages.allSatisfy { counts[$0] == 1 } })
            let handlers = Set(recvLines(in: server.log).filter { messages.contains($0.message) }.map(\.pid))
            #expect(handlers.contains(target), "the worker that got SIGINT should still handle messages: \(handlers)")

            server.signal(SIGINT)
            S.expectExit(server, status: 0)
            let lines = S.exitLines(of: target, in: server.log)
            #expect(lines.count == 1 && lines.first?.contains("status=exit 0") == true, "\(lines)")
            S.expectNothingLeft(socketPath: server.socketPath, queueIDs: server.queueIDs, masterPID: server.pid, workers: workers)
        }

        /// A worker that replaces one that died ignores SIGINT as well.
        @Test func respawnedWorkerIgnoresSIGINT() throws {
            let server = try TestServer(["--workers", "1", "--handler", "sim"])
            defer { server.stop() }
            #expect(waitUntil { server.workerPIDs.count == 1 })
            let original = try #require(server.workerPIDs.first)
            #expect(try S.oneshot(server.socketPath, "exit:7") == "ok")
            #expect(waitUntil(timeout: 15) { let now = server.workerPIDs; return now.count == 1 && now[0] != original },
                    "the dead worker should be replaced:\n\(server.log)")
            let replacement = try #require(server.workerPIDs.first)
            #expect(Self.ignores(replacement, SIGINT), "the replacement worker does not ignore SIGINT")
            #expect(kill(replacement, SIGINT) == 0)
            #expect(processIsAlive(replacement), "the replacement worker died of SIGINT")
            #expect(server.workerPIDs == [replacement])
            #expect(try S.oneshot(server.socketPath, "still served") == "ok")
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
            S.expectNothingLeft(socketPath: server.socketPath, queueIDs: server.queueIDs, masterPID: server.pid,
                                workers: [original, replacement])
        }

        /// Ctrl-C in a terminal sends SIGINT to the whole foreground process group: master and workers.
        /// The workers ignore it, the master shuts down cleanly, and the workers quit on request.
        @Test func ctrlCToTheProcessGroupShutsDownCleanly() throws {
            let server = try ProcessGroupServer(["--workers", "2", "--handler", "log"])
            defer { server.stop() }
            #expect(server.processGroup == server.pid, "the server should lead its own process group")
            #expect(waitUntil { server.workerPIDs.count == 2 })
            let workers = server.workerPIDs
            let queues = server.queueIDs
            for worker in workers {
                #expect(getpgid(worker) == server.pid, "worker \(worker) should share the master's group")
            }
            #expect(try S.oneshot(server.socketPath, "before ctrl-c") == "ok")

            #expect(server.signalGroup(SIGINT))
            let status = server.waitForExit(timeout: 20)
            #expect(status == 0, "exit status \(String(describing: status))\n\(S.diagnose(server.pid))\nlog:\n\(server.log)")
            S.expectNothingLeft(socketPath: server.socketPath, queueIDs: queues, masterPID: server.pid, workers: workers)
            let log = server.log
            for worker in workers {
                let lines = S.exitLines(of: worker, in: log)
                #expect(lines.count == 1 && lines.first?.contains("status=exit 0") == true,
                        "worker \(worker) should quit on request, not die of SIGINT: \(lines)")
            }
            #expect(S.recvCounts(in: log)["before ctrl-c"] == 1)
        }

        // MARK: - Socket path safety

        /// A socket path of 108 bytes does not fit sun_path: the server refuses quickly, non-zero,
        /// saying why, and creates nothing.
        @Test func socketPathLongerThan107BytesIsRefused() throws {
            let directory = makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let path = directory + "/" + String(repeating: "s", count: 108 - directory.utf8.count - 1)
            #expect(path.utf8.count == 108)
            let server = try TestServer(["--workers", "2"], socketPath: path, waitForStart: false)
            defer {
                let queues = spawnedQueueIDs(inLog: server.log)
                server.stop()
                removeQueues(queues)
            }
            let status = S.waitForExit(server, timeout: 20)
            #expect(status != nil && status != 0, "exit status \(String(describing: status))")
            let log = server.log
            #expect(log.contains("sun_path") || log.contains("longer"), "log should say why:\n\(log)")
            #expect(!log.contains("pool started"))
            #expect(S.filesBeside(socketPath: path).isEmpty, "left: \(S.filesBeside(socketPath: path))")
            let leftQueues = spawnedQueueIDs(inLog: log).intersection(existingQueueIDs())
            #expect(leftQueues.isEmpty, "queues left: \(leftQueues)")
        }

        /// A long path that fits (100 bytes) is used.
        @Test func longSocketPathThatFitsWorks() throws {
            let directory = makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let path = directory + "/" + String(repeating: "s", count: 100 - directory.utf8.count - 1)
            #expect(path.utf8.count == 100)
            let server = try TestServer(["--workers", "1"], socketPath: path)
            defer { server.stop() }
            #expect(try S.oneshot(path, "long path") == "ok")
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
            S.expectNothingLeft(socketPath: path, queueIDs: server.queueIDs, masterPID: server.pid, workers: Array(spawnedWorkerPIDs(inLog: server.log)))
        }

        /// A socket a live server listens on is not taken over: the second server exits non-zero,
        /// cleaning up what it created, and the first one still answers `ok`.
        @Test func liveSocketIsNotTakenOver() throws {
            let first = try TestServer(["--workers", "1", "--handler", "log"])
            defer { first.stop() }
            let firstFiles = S.filesBeside(socketPath: first.socketPath)
            let firstQueues = first.queueIDs
            let second = try TestServer(["--workers", "2"], socketPath: first.socketPath, waitForStart: false)
            defer {
                let queues = spawnedQueueIDs(inLog: second.log)
                second.stop()
                removeQueues(queues)
            }
            let status = S.waitForExit(second, timeout: 20)
            #expect(status != nil && status != 0, "exit status \(String(describing: status))")
            let secondLog = second.log
            #expect(!secondLog.contains("pool started"), "second server started:\n\(secondLog)")
            // What the refused server created is gone.
            let leftQueues = spawnedQueueIDs(inLog: secondLog).intersection(existingQueueIDs())
            #expect(leftQueues.isEmpty, "the refused server left queues \(leftQueues)")
            let secondWorkers = spawnedWorkerPIDs(inLog: secondLog)
            #expect(waitUntil(timeout: 5) { secondWorkers.allSatisfy { !processIsAlive($0) } })

            #expect(S.fileMode(first.socketPath)?.isSocket == true, "the first server's socket file is gone")
            #expect(S.filesBeside(socketPath: first.socketPath) == firstFiles, "the refused server changed the first one's files")
            #expect(Set(firstQueues).isSubset(of: existingQueueIDs()), "the refused server removed the first one's queues")
            #expect(try S.oneshot(first.socketPath, "first still serves") == "ok")
            #expect(waitUntil { S.recvCounts(in: first.log)["first still serves"] == 1 })
            first.signal(SIGINT)
            S.expectExit(first, status: 0)
            #expect(S.filesBeside(socketPath: first.socketPath).isEmpty, "left: \(S.filesBeside(socketPath: first.socketPath))")
        }

        /// A socket file nobody listens on (a crashed server's leftover) is replaced.
        @Test func staleSocketFileIsReplaced() throws {
            let directory = makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let path = directory + "/stale.sock"
            let stale = try SocketFD.unixStream(nonBlocking: false)
            try stale.bind(path: path)
            stale.close()
            #expect(S.fileMode(path)?.isSocket == true)

            let server = try TestServer(["--workers", "1", "--handler", "log"], socketPath: path)
            defer { server.stop() }
            #expect(try S.oneshot(path, "over a stale socket") == "ok")
            #expect(waitUntil { S.recvCounts(in: server.log)["over a stale socket"] == 1 })
            server.signal(SIGINT)
            S.expectExit(server, status: 0)
            S.expectNothingLeft(socketPath: path, queueIDs: server.queueIDs, masterPID: server.pid, workers: Array(spawnedWorkerPIDs(inLog: server.log)))
        }

        /// A master killed with SIGKILL leaves its socket file (and queues) behind; a new server on the
        /// same path starts over them and serves, and the killed master's queues do not outlive the
        /// new server.
        @Test func serverStartsOverTheLeftoversOfAKilledMaster() throws {
            let first = try TestServer(["--workers", "2"])
            defer { first.stop() }
            #expect(waitUntil { first.workerPIDs.count == 2 })
            let oldWorkers = first.workerPIDs
            let oldQueues = first.queueIDs
            first.signal(SIGKILL)
            #expect(S.waitForExit(first) != nil)
            // The workers die with their master (parent-death signal); the socket file stays.
            #expect(waitUntil { oldWorkers.allSatisfy { !processIsAlive($0) } }, "workers outlived their master")
            #expect(S.fileMode(first.socketPath)?.isSocket == true)

            let second = try TestServer(["--workers", "2", "--handler", "log"], socketPath: first.socketPath)
            defer { second.stop() }
            #expect(try S.oneshot(first.socketPath, "after a killed master") == "ok")
            #expect(waitUntil { S.recvCounts(in: second.log)["after a killed master"] == 1 })
            let workers = second.workerPIDs
            second.signal(SIGINT)
            S.expectExit(second, status: 0)
            S.expectNothingLeft(socketPath: first.socketPath, queueIDs: second.queueIDs, masterPID: second.pid, workers: workers)
            let leftover = existingQueueIDs().intersection(oldQueues)
            #expect(leftover.isEmpty, "the killed master's queues are still there: \(leftover.sorted())")
        }

        /// A regular file at the socket path is never touched: the server refuses, non-zero, and the
        /// file keeps its content and mode.
        @Test func regularFileAtTheSocketPathIsLeftAlone() throws {
            let directory = makeTemporaryDirectory()
            defer { try? FileManager.default.removeItem(atPath: directory) }
            let path = directory + "/pool.sock"
            let content = "not a socket: precious data\n"
            try content.write(toFile: path, atomically: false, encoding: .utf8)
            let modeBefore = try #require(S.fileMode(path))

            let server = try TestServer(["--workers", "2"], socketPath: path, waitForStart: false)
            defer {
                let queues = spawnedQueueIDs(inLog: server.log)
                server.stop()
                removeQueues(queues)
            }
            let status = S.waitForExit(server, timeout: 20)
            #expect(status != nil && status != 0, "exit status \(String(describing: status))")
            let log = server.log
            #expect(!log.contains("pool started"), "server started over a regular file:\n\(log)")
            let modeAfter = S.fileMode(path)
            #expect(modeAfter?.isRegular == true && modeAfter?.permissions == modeBefore.permissions)
            #expect((try? String(contentsOfFile: path, encoding: .utf8)) == content)
            #expect(S.filesBeside(socketPath: path) == ["pool.sock"], "left: \(S.filesBeside(socketPath: path))")
            let leftQueues = spawnedQueueIDs(inLog: log).intersection(existingQueueIDs())
            #expect(leftQueues.isEmpty, "the refused server left queues \(leftQueues)")
            let workers = spawnedWorkerPIDs(inLog: log)
            #expect(waitUntil(timeout: 5) { workers.allSatisfy { !processIsAlive($0) } })
        }
    }
}
