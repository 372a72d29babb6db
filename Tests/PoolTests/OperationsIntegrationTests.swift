import Foundation
import CSysV
import Glibc
import Pool
import Testing

private typealias S = OperationsSupport

/// The operator's side of `pool-server`, end to end through the real binaries: status in three
/// formats, SIGHUP/`reload` rolling restarts under load, SIGTTIN/SIGTTOU/`scale`, sd_notify,
/// socket activation, log file reopening, `--config`, and `stop`.
///
/// Subcommands run as separate processes. No test asserts speed: every wait is for a condition
/// with a generous timeout. Every test ends by checking that nothing is left: no worker, no queue
/// (worker queues and the reply queue), no socket, `.ctl` or `.state` file.
@Suite(.serialized) struct OperationsIntegrationTests {
    // Per-worker queues (not result mode's default shared queue): these tests count, remove and
    // follow queues slot by slot. SharedDispatchTests covers the shared queue.
    static let framedSim = ["--protocol", "framed", "--reply", "result", "--handler", "sim", "--dispatch", "round-robin"]
    static let framedEcho = ["--protocol", "framed", "--reply", "result", "--handler", "echo", "--dispatch", "round-robin"]

    static func text(_ bytes: [UInt8]) -> String { String(decoding: bytes, as: UTF8.self) }

    // MARK: - 1. Status

    @Test func statusInAllThreeFormatsMatchesKnownActivity() throws {
        let server = try TestServer(["--workers", "2"] + Self.framedSim)
        defer { server.stop() }
        guard let workers = S.waitForWorkerCount(server, 2) else {
            Issue.record("the pool never had 2 settled workers:\n\(server.log)")
            return
        }

        // 37 echoes and 3 handler errors, pipelined on one connection.
        var payloads = (0..<37).map { Array("echo-\($0)".utf8) }
        for position in [3, 20, 39] { payloads.insert(Array("fail:x".utf8), at: position) }
        let client = try PoolClient(socketPath: server.socketPath)
        let responses = try client.pipeline(payloads)
        #expect(responses.count == 40)
        for (payload, response) in zip(payloads, responses) {
            if payload == Array("fail:x".utf8) {
                #expect(response.statusByte == 1 && Self.text(response.body) == "x", "fail:x -> \(response)")
            } else {
                #expect(response.statusByte == 0 && response.body == payload, "\(Self.text(payload)) -> \(response)")
            }
        }

        // A worker bumps its job counter just after sending the reply: wait for the last one.
        let counted = S.waitForStatus(server.socketPath, timeout: 20) { $0.workers.map(\.jobsHandled).reduce(0, +) == 40 }
        #expect(counted.ok, "jobs_handled never summed to 40: \(counted.last.map { $0.workers.map(\.jobsHandled) } ?? [])")

        // JSON
        let json = try S.poolServer(["status", "--socket", server.socketPath, "--format", "json"])
        #expect(json.status == 0, "status --format json failed: \(json.stderr)")
        let status = try S.parseStatus(json.stdout)
        #expect(status.pid == server.pid)
        #expect(status.raw["protocol"] as? String == "framed")
        #expect(status.raw["reply"] as? String == "result")
        #expect(status.responses["ok"] == 37, "responses: \(status.responses)")
        #expect(status.responses["handler_error"] == 3, "responses: \(status.responses)")
        #expect(Set(status.responses.keys) == ["ok", "handler_error", "busy", "too_large", "timeout", "worker_died",
                                               "shutting_down", "bad_request"])
        for (name, count) in status.responses where name != "ok" && name != "handler_error" {
            #expect(count == 0, "responses.\(name) = \(count)")
        }
        #expect(status.acceptedConnections >= 1)
        #expect(status.activeConnections == 1, "the client's connection is still open")
        #expect(status.heldRequests == 0)
        #expect(status.rollingRestart == false)
        #expect(status.workers.count == 2)
        #expect(status.workers.map(\.slot) == [0, 1])
        #expect(status.workerPIDs.sorted() == workers, "status pids \(status.workerPIDs), live workers \(workers)")
        #expect(Set(status.workerPIDs) == Set(server.workerPIDs))
        #expect(status.workers.map(\.jobsHandled).reduce(0, +) == 40)
        #expect(status.workers.allSatisfy { $0.queueMessages == 0 && $0.queueBytes == 0 })
        #expect(status.workers.allSatisfy { $0.state == "idle" && $0.restarts == 0 })
        #expect(Set(status.queueIDs).isSubset(of: existingQueueIDs()))
        #expect(Set(status.queueIDs) == Set(server.queueIDs))

        // Prometheus
        let prometheus = try S.poolServer(["status", "--socket", server.socketPath, "--format", "prometheus"])
        #expect(prometheus.status == 0, "status --format prometheus failed: \(prometheus.stderr)")
        let (samples, problems) = S.checkPrometheus(prometheus.stdout)
        #expect(problems.isEmpty, "exposition format problems: \(problems)\n\(prometheus.stdout)")
        #expect(prometheus.stdout.contains("\npool_responses_total{status=\"ok\"} 37\n"), "\(prometheus.stdout)")
        #expect(prometheus.stdout.contains("\npool_responses_total{status=\"handler_error\"} 3\n"), "\(prometheus.stdout)")
        #expect(samples.first { $0.name == "pool_up" }?.value == 1)
        #expect(samples.first { $0.name == "pool_workers" }?.value == 2)
        #expect(samples.first { $0.name == "pool_connections_accepted_total" }.map { $0.value >= 1 } == true)
        let jobs = samples.filter { $0.name == "pool_worker_jobs_handled_total" }
        #expect(jobs.count == 2 && jobs.map(\.value).reduce(0, +) == 40, "jobs samples: \(jobs)")
        #expect(Set(jobs.map(\.labels)) == ["slot=\"0\"", "slot=\"1\""])
        #expect(samples.filter { $0.name == "pool_worker_queue_messages" }.allSatisfy { $0.value == 0 })

        // Table (also the default format)
        for format in [["--format", "table"], []] {
            let table = try S.poolServer(["status", "--socket", server.socketPath] + format)
            #expect(table.status == 0, "status \(format) failed: \(table.stderr)")
            #expect(table.stdout.contains("master pid \(server.pid),"), "\(table.stdout)")
            let rows = table.stdout.split(separator: "\n").map { $0.split(separator: " ", omittingEmptySubsequences: true) }
            for pid in workers {
                #expect(rows.contains { $0.count > 2 && $0[1] == "\(pid)" }, "worker \(pid) missing from the table:\n\(table.stdout)")
            }
            #expect(table.stdout.contains("ok 37") && table.stdout.contains("handler_error 3"), "\(table.stdout)")
        }

        client.close()
        S.expectCleanExit(server)
    }

    // MARK: - 2. Rolling restarts

    /// A rolling restart's current slot scaled down and straight back up keeps the restart's
    /// request to its worker. Shared queue: the request is SIGTERM, repeated every 0.5 s until the
    /// worker goes, since one landing just before msgrcv blocks is only seen at the next message
    /// (`POOL_DEBUG_WORKER_RECEIVE_DELAY_MS` holds fresh workers in that window). The scale back
    /// up cancelled the repeats: the worker waited in msgrcv and the restart never finished.
    @Test func scalingTheRestartingSlotDownAndUpLetsTheRestartFinish() throws {
        let server = try TestServer(["--workers", "2", "--protocol", "framed", "--reply", "result", "--handler", "echo"],
                                    environment: FaultIntegrationTests.debugEnvironment("POOL_DEBUG_WORKER_RECEIVE_DELAY_MS", "4000"))
        defer { server.stop() }
        let workers = spawnedWorkerPIDs(inLog: server.log)
        try #require(workers.count == 2, "\(server.log)")
        let control = server.socketPath + ".ctl"
        #expect(try ControlClient.send("reload", controlSocket: control).hasPrefix("ok"))
        // Slot 0's worker goes at the second SIGTERM; slot 1's has its first now, inside its window.
        #expect(waitUntil(timeout: 10) { workers.contains { !processIsAlive($0) } }, "\(server.log)")
        let waiting = Array(workers.filter(processIsAlive))
        try #require(waiting.count == 1, "both workers went before the scale: \(server.log)")
        #expect(try ControlClient.send("scale 1", controlSocket: control).hasPrefix("ok"))
        #expect(try ControlClient.send("scale 2", controlSocket: control).hasPrefix("ok"))
        // Both commands landed while the restarting slot's worker still waited in its window.
        try #require(processIsAlive(waiting[0]), "the scale came after the worker had gone: the case was not reached")
        let done = S.waitForStatus(server.socketPath, timeout: 10) { !$0.rollingRestart && $0.workers.count == 2 && $0.settled }
        #expect(done.ok && server.log.contains("rolling restart complete"),
                "\(String(describing: done.last?.workers))\n\(server.log.suffix(2000))")
        #expect(workers.allSatisfy { !processIsAlive($0) }, "a worker was not restarted")
        S.expectCleanExit(server)
    }

    /// A framed sim server of one worker on a shared queue, running `job` sent by the client
    /// returned (which is owed its answer). The server is stopped if the worker never takes it.
    static func oneSharedWorkerRunning(_ job: String) throws -> (TestServer, PoolClient) {
        let server = try TestServer(["--workers", "1", "--protocol", "framed", "--reply", "result",
                                     "--handler", "sim", "--dispatch", "shared"])
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        try client.send(job.bytes)
        let busy = S.waitForStatus(server.socketPath, timeout: 10) { $0.workers.first?.state == "busy" }
        guard busy.ok else {
            server.stop()
            throw TestFailure("the worker never took the job: \(String(describing: busy.last?.workers))")
        }
        return (server, client)
    }

    /// A reload on a shared queue asks a busy worker to finish its job with one SIGTERM. It is
    /// repeated only while the worker is not running a job (one idle in msgrcv may have missed
    /// it); every 0.5 s it used to cut the job's sleeps, polls and SysV calls short with EINTR,
    /// which SA_RESTART does not restart. The sim handler's sleep logs its interruptions.
    @Test func aReloadSignalsABusyWorkerOnce() throws {
        let (server, client) = try Self.oneSharedWorkerRunning("sleep:2500")
        defer { server.stop() }
        // Inside its sleep (busy is marked just before it), so the first SIGTERM interrupts it.
        let worker = try #require(server.workerPIDs.first)
        let sleeps = try #require(SyscallNumber.sleeps, "sleep system call numbers of this architecture")
        try #require(waitUntil(timeout: 10) { blockedSyscall(worker).map(sleeps.contains) == true },
                     "the worker never slept: \(OneshotShutdownSupport.diagnose(server.pid))")
        let control = server.socketPath + ".ctl"
        #expect(try ControlClient.send("reload", controlSocket: control).hasPrefix("ok"))
        let answer = try client.receive()
        #expect(answer.status == .ok && answer.body == "sleep:2500".bytes, "\(answer)")
        client.close()
        let done = S.waitForStatus(server.socketPath, timeout: 10) { !$0.rollingRestart && $0.workers.count == 1 && $0.settled }
        #expect(done.ok, "\(server.log.suffix(2000))")
        let interruptions = server.logLines(containing: "sim: sleep:2500 interrupted by")
        #expect(interruptions.count == 1 && interruptions[0].contains("by 1 signal(s)"), "\(interruptions)")
        S.expectCleanExit(server)
    }

    /// Jobs-handled counters survive worker restarts: with --max-jobs 2 a worker is replaced every
    /// two jobs, and after five the slot's and the pool's counters say 5 (Prometheus counters that
    /// went back to 0 with each process lost what came before to `rate`), while the current
    /// process's count is its own.
    @Test func jobCountersSurviveWorkerRestarts() throws {
        let server = try TestServer(["--workers", "1", "--max-jobs", "2"] + Self.framedEcho)
        defer { server.stop() }
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        defer { client.close() }
        for index in 0..<5 { #expect(try client.request("job \(index)".bytes).isOK) }
        let settled = S.waitForStatus(server.socketPath, timeout: 20) {
            $0.workers.first?.jobsHandled == 1 && ($0.raw["jobs_handled"] as? Int) == 5
        }
        #expect(settled.ok, "\(String(describing: settled.last?.raw))")
        let worker = try #require((settled.last?.raw["workers"] as? [[String: Any]])?.first)
        #expect(worker["slot_jobs_handled"] as? Int == 5 && worker["busy"] as? Bool == false, "\(worker)")
        let metrics = try ControlClient.send("status prometheus", controlSocket: server.socketPath + ".ctl")
        #expect(metrics.contains("\npool_jobs_handled_total 5\n"), "\(metrics)")
        #expect(metrics.contains("\npool_worker_jobs_handled_total{slot=\"0\"} 5\n"), "\(metrics)")
        client.close()
        S.expectCleanExit(server)
    }

    /// While a reload waits for a worker on a long job (shared queue: asked by SIGTERM, repeated
    /// only while it is idle), the master wakes about ten times a second, not 200 (it ticked every
    /// 5 ms for as long as the job ran). Counted as its voluntary context switches over 1 s: a
    /// loaded machine can only make them fewer.
    @Test func aReloadWaitingForALongJobLetsTheMasterSleep() throws {
        let (server, client) = try Self.oneSharedWorkerRunning("sleep:4000")
        defer { server.stop() }
        defer { client.close() }
        #expect(try ControlClient.send("reload", controlSocket: server.socketPath + ".ctl").hasPrefix("ok"))
        usleep(200_000)
        func wakeups() -> Int? { procStatusField("voluntary_ctxt_switches", of: server.pid).first.flatMap { Int($0) } }
        let before = try #require(wakeups())
        usleep(1_000_000)
        let after = try #require(wakeups())
        #expect(after - before < 60, "the master woke \(after - before) times in 1 s while the worker ran its job")
        #expect(try client.receive().body == "sleep:4000".bytes)
        #expect(S.waitForStatus(server.socketPath, timeout: 20) { !$0.rollingRestart && $0.settled }.ok)
        client.close()
        S.expectCleanExit(server)
    }

    /// A quit message the kernel refuses (ENOMEM here, by a debug failpoint) is tried again. It
    /// used to be given up on with a warning: the rolling restart waited for that slot for good,
    /// and `pool-server reload` never returned.
    @Test func aReloadWhoseQuitFailsOnceStillCompletes() throws {
        let server = try TestServer(["--workers", "2"] + Self.framedEcho,
                                    environment: FaultIntegrationTests.debugEnvironment("POOL_DEBUG_FAIL_QUITS", "1"))
        defer { server.stop() }
        guard let original = S.waitForWorkerCount(server, 2) else {
            Issue.record("the pool never had 2 workers:\n\(server.log)")
            return
        }
        let reload = try S.poolServer(["reload", "--socket", server.socketPath], timeout: 30)
        #expect(reload.status == 0 && !reload.timedOut && reload.stdout.contains("reload complete"),
                "reload (\(reload.status)): \(reload.stdout) \(reload.stderr)\n\(server.log.suffix(2000))")
        #expect(server.logLines(containing: "could not queue a quit; trying again").count == 1, "\(server.log)")
        #expect(Set(server.workerPIDs).isDisjoint(with: original), "workers \(original) -> \(server.workerPIDs)")
        S.expectCleanExit(server)
    }

    /// A rolling restart's quit waits behind a long job; the worker is killed before taking it.
    /// Its replacement already starts with the current code: the quit is void and is taken out of
    /// the queue. (It stayed, and the fresh worker quit at once and was replaced again.)
    @Test func aQuitForAWorkerThatDiedIsNotLeftForItsReplacement() throws {
        let server = try TestServer(["--workers", "1"] + Self.framedSim)
        defer { server.stop() }
        let first = try #require(S.waitForWorkerCount(server, 1)?.first, "no worker:\n\(server.log)")
        let sleeper = try PoolClient(socketPath: server.socketPath, timeout: 30)
        // Long: it is killed, never finished (finished, the worker would take its quit).
        try sleeper.send("sleep:60000".bytes)
        #expect(waitUntil(timeout: 20) { S.status(server.socketPath)?.workers.first?.state == "busy" }, "the job never started")
        server.signal(SIGHUP)
        #expect(waitUntil(timeout: 20) { S.status(server.socketPath)?.workers.first?.queueMessages == 1 },
                "the quit was not queued behind the job: \(String(describing: S.status(server.socketPath)?.workers))")
        try #require(processIsAlive(first) && S.status(server.socketPath)?.workers.first?.pid == first, "the first worker is gone")
        kill(first, SIGKILL)
        let lost = try sleeper.receive()
        #expect(lost.statusByte == ResponseStatus.workerDied.rawValue, "\(lost)")
        sleeper.close()
        // Behind the quit, were it left there: the replacement would take the quit first.
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("after".bytes).body == "after".bytes)
        client.close()
        #expect(S.status(server.socketPath)?.workers.first?.queueMessages == 0)
        let spawned = server.logLines(containing: "worker spawned")
        #expect(spawned.count == 2, "the original and the one replacing the killed worker only:\n\(spawned.joined(separator: "\n"))")
        #expect(server.log.contains("rolling restart complete"))
        S.expectCleanExit(server)
    }

    @Test func sighupAndReloadUnderLoadLoseNothingAndReplaceEveryWorker() throws {
        let server = try TestServer(["--workers", "3"] + Self.framedSim)
        defer { server.stop() }
        guard let original = S.waitForWorkerCount(server, 3), let before = S.status(server.socketPath) else {
            Issue.record("the pool never had 3 settled workers:\n\(server.log)")
            return
        }
        let queues = before.queueIDs

        // SIGHUP while two connections pipeline continuously.
        let load = S.LoadGenerator(socketPath: server.socketPath)
        #expect(waitUntil(timeout: 30) { load.answered >= 100 || !load.failures.isEmpty }, "the load never got going")
        server.signal(SIGHUP)
        let restarted = S.waitForStatus(server.socketPath, timeout: 60) { status in
            !status.rollingRestart && status.workers.count == 3 && status.settled
                && Set(status.workerPIDs).isDisjoint(with: original)
        }
        #expect(restarted.ok, "the rolling restart did not replace every worker: \(String(describing: restarted.last?.workers))")
        let afterRestart = load.answered
        #expect(waitUntil(timeout: 30) { load.answered >= afterRestart + 50 || !load.failures.isEmpty })
        #expect(load.stop(), "the load threads did not finish")
        #expect(load.failures.isEmpty, "requests lost or wrong during SIGHUP: \(load.failures.prefix(10))")
        #expect(load.answered > 150)

        let replaced = server.workerPIDs
        #expect(replaced.count == 3 && Set(replaced).isDisjoint(with: original), "workers \(original) -> \(replaced)")
        let after = try #require(S.status(server.socketPath), "no status after SIGHUP")
        #expect(after.queueIDs == queues, "a replacement must take its slot's queue")
        #expect(after.workers.allSatisfy { $0.restarts == 1 }, "restarts: \(after.workers.map(\.restarts))")
        #expect(Set(after.workerPIDs) == Set(replaced))
        #expect(server.log.contains("rolling restart complete"))
        #expect(FramedSupport.errorLines(server).isEmpty, "errors logged: \(FramedSupport.errorLines(server))")

        // `pool-server reload` does the same and returns once it is complete.
        let middle = replaced
        let load2 = S.LoadGenerator(socketPath: server.socketPath)
        #expect(waitUntil(timeout: 30) { load2.answered >= 100 || !load2.failures.isEmpty })
        let reload = try S.poolServer(["reload", "--socket", server.socketPath], timeout: 90)
        #expect(reload.status == 0 && !reload.timedOut, "reload failed (\(reload.status)): \(reload.stdout) \(reload.stderr)")
        #expect(reload.stdout.contains("reload complete"), "\(reload.stdout)")
        // Complete when it returned: no waiting here.
        if let after = S.status(server.socketPath) {
            #expect(!after.rollingRestart)
            #expect(after.workers.count == 3 && Set(after.workerPIDs).isDisjoint(with: middle),
                    "pids after reload \(after.workerPIDs), before \(middle)")
            #expect(after.queueIDs == queues)
            #expect(after.workers.allSatisfy { $0.restarts == 2 }, "restarts: \(after.workers.map(\.restarts))")
        } else {
            Issue.record("no status after reload")
        }
        let reloaded = server.workerPIDs
        #expect(reloaded.count == 3 && Set(reloaded).isDisjoint(with: middle), "workers \(middle) -> \(reloaded)")
        let afterReload = load2.answered
        #expect(waitUntil(timeout: 30) { load2.answered >= afterReload + 50 || !load2.failures.isEmpty })
        #expect(load2.stop(), "the load threads did not finish")
        #expect(load2.failures.isEmpty, "requests lost or wrong during reload: \(load2.failures.prefix(10))")
        #expect(FramedSupport.errorLines(server).isEmpty, "errors logged: \(FramedSupport.errorLines(server))")

        S.expectCleanExit(server, knownQueues: queues)
    }

    // MARK: - 3. Scaling

    @Test func ttinTtouAndScaleChangeTheWorkerCountAndQueues() throws {
        let server = try TestServer(["--workers", "2"] + Self.framedSim)
        defer { server.stop() }
        let statePath = server.socketPath + ".state"
        var everQueues = S.stateFileQueueIDs(statePath)
        guard let two = S.waitForWorkerCount(server, 2) else {
            Issue.record("the pool never had 2 settled workers:\n\(server.log)")
            return
        }

        // TTIN: 2 -> 3, a new slot with a new queue.
        server.signal(SIGTTIN)
        guard let three = S.waitForWorkerCount(server, 3), let s3 = S.status(server.socketPath) else {
            Issue.record("SIGTTIN did not give 3 workers: \(String(describing: S.status(server.socketPath)?.workers))")
            return
        }
        #expect(Set(two).isSubset(of: three), "existing workers must stay: \(two) -> \(three)")
        #expect(s3.workers.map(\.slot) == [0, 1, 2])
        #expect(s3.queueIDs.count == 3 && s3.queueIDs.isSubset(of: existingQueueIDs()))
        let queueOf = Dictionary(uniqueKeysWithValues: s3.workers.map { ($0.slot, $0.queueID) })
        everQueues.formUnion(s3.queueIDs)
        everQueues.formUnion(S.stateFileQueueIDs(statePath))
        #expect(S.stateFileQueueIDs(statePath).isSuperset(of: s3.queueIDs), "the state file must list the new queue")

        // TTOU: 3 -> 2 -> 1; each removed slot's queue is deleted.
        server.signal(SIGTTOU)
        let twoAgain = S.waitForWorkerCount(server, 2)
        #expect(twoAgain.map(Set.init) == Set(two), "TTOU should retire the newest slot: \(String(describing: twoAgain))")
        #expect(waitUntil(timeout: 10) { !existingQueueIDs().contains(queueOf[2]!) }, "queue of removed slot 2 still exists")
        server.signal(SIGTTOU)
        let one = S.waitForWorkerCount(server, 1)
        let slot0 = s3.workers.first { $0.slot == 0 }?.pid
        #expect(one == slot0.map { [$0] }, "TTOU twice should leave slot 0's worker: \(String(describing: one))")
        #expect(waitUntil(timeout: 10) { !existingQueueIDs().contains(queueOf[1]!) }, "queue of removed slot 1 still exists")
        #expect(existingQueueIDs().contains(queueOf[0]!))
        let stateQueues = S.stateFileQueueIDs(statePath)
        #expect(!stateQueues.contains(queueOf[1]!) && !stateQueues.contains(queueOf[2]!) && stateQueues.contains(queueOf[0]!),
                "state file queues after scaling down: \(stateQueues)")
        everQueues.formUnion(stateQueues)

        // TTOU at 1: never below 1.
        server.signal(SIGTTOU)
        // The signal is pending before this status request connects; the loop turn that answers
        // it takes its signals after, so the status after that one reflects the TTOU.
        _ = S.status(server.socketPath)
        if let s1 = S.status(server.socketPath) {
            #expect(s1.workers.count == 1 && s1.workerPIDs == slot0.map { [$0] }, "workers after TTOU at 1: \(s1.workers)")
            #expect(s1.settled)
        } else {
            Issue.record("no status after TTOU at 1")
        }
        #expect(server.workerPIDs == slot0.map { [$0] })
        let client = try PoolClient(socketPath: server.socketPath)
        let payloads = (0..<10).map { Array("one-\($0)".utf8) }
        #expect(try client.pipeline(payloads).map(\.body) == payloads)

        // `pool-server scale 4`: returns once there are 4.
        let up = try S.poolServer(["scale", "4", "--socket", server.socketPath])
        #expect(up.status == 0 && !up.timedOut, "scale 4 failed (\(up.status)): \(up.stdout) \(up.stderr)")
        #expect(up.stdout.contains("scaled to 4 workers"), "\(up.stdout)")
        if let s4 = S.status(server.socketPath) {
            #expect(s4.workers.count == 4 && s4.settled, "after scale 4: \(s4.workers)")
            #expect(s4.workers.map(\.slot) == [0, 1, 2, 3])
            #expect(s4.queueIDs.count == 4 && s4.queueIDs.isSubset(of: existingQueueIDs()))
            everQueues.formUnion(s4.queueIDs)
        } else {
            Issue.record("no status after scale 4")
        }
        everQueues.formUnion(S.stateFileQueueIDs(statePath))
        let four = S.waitForWorkerCount(server, 4, timeout: 10)
        #expect(four?.count == 4, "live workers: \(server.workerPIDs)")
        let more = (0..<40).map { Array("four-\($0)".utf8) }
        #expect(try client.pipeline(more).map(\.body) == more)
        let spread = S.waitForStatus(server.socketPath, timeout: 20) { status in
            status.workers.count == 4 && status.workers.filter { $0.slot > 0 }.allSatisfy { $0.jobsHandled > 0 }
        }
        #expect(spread.ok, "new workers got no work: \(String(describing: spread.last?.workers))")

        // `pool-server scale 2`: returns once slots 2 and 3 are gone, queues included.
        let before = S.status(server.socketPath)
        let down = try S.poolServer(["scale", "2", "--socket", server.socketPath])
        #expect(down.status == 0 && !down.timedOut, "scale 2 failed (\(down.status)): \(down.stdout) \(down.stderr)")
        let (was, now) = (try #require(before, "no status before scale 2"), try #require(S.status(server.socketPath), "no status after scale 2"))
        #expect(now.workers.map(\.slot) == [0, 1] && now.settled, "after scale 2: \(now.workers)")
        let removed = was.workers.filter { $0.slot >= 2 }.map(\.queueID)
        #expect(removed.count == 2 && existingQueueIDs().intersection(removed).isEmpty, "queues of removed slots: \(removed)")
        #expect(S.stateFileQueueIDs(statePath).intersection(removed).isEmpty)
        #expect(S.waitForWorkerCount(server, 2, timeout: 10) != nil)
        #expect(FramedSupport.errorLines(server).isEmpty, "errors logged: \(FramedSupport.errorLines(server))")

        client.close()
        S.expectCleanExit(server, knownQueues: everQueues)
    }

    /// `scale` starts the new workers a few per loop turn (`Supervisor.startsPerTurn`), not all in
    /// the turn of the command: forked together, `scale 1000` held every client for a second.
    /// The commands reach a frozen master, so it reads them in one turn, in order: the status
    /// right behind two scales finds all but one turn's starts still to come (it found none;
    /// with a budget per command, two commands' worth gone). Then every slot gets its worker,
    /// and the new ones take work.
    @Test func scaleUpStartsItsWorkersAFewPerLoopTurn() throws {
        let server = try TestServer(["--workers", "2"] + Self.framedSim)
        let footprint = FaultSupport.Footprint(server)
        defer { kill(server.pid, SIGCONT); server.stop(); footprint.removeLeftovers() }
        _ = try #require(S.waitForWorkerCount(server, 2))
        // Two scales: the turn's budget is shared by every start in it, not per command.
        let answers = try S.commandsInOneTurn(server, ["scale 20", "scale 30", "status json"])
        #expect(answers[0].hasPrefix("ok scaling to 20") && answers[1].hasPrefix("ok scaling to 30"), "\(answers)")
        let report = try S.parseStatus(answers[2])
        let starting = report.workers.filter { $0.pid == nil }.count
        // 8: `Supervisor.startsPerTurn` (internal), forked in the turn of the command.
        #expect(report.workers.count == 30 && starting >= 28 - 8,
                "\(starting) of 28 new slots starting: \(report.workers.map { "\($0.slot):\($0.state)" })")
        #expect(S.waitForWorkerCount(server, 30, timeout: 60) != nil, "\(server.log.suffix(3000))")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        let payloads = (0..<60).map { Array("job-\($0)".utf8) }
        #expect(try client.pipeline(payloads).map(\.body) == payloads)
        client.close()
        #expect(S.waitForStatus(server.socketPath, timeout: 20) { $0.workers.allSatisfy { $0.jobsHandled > 0 } }.ok,
                "a new worker got no work")
        FaultSupport.expectCleanExit(server, footprint)
    }

    /// A stop read right behind `scale 30`: the new slots whose workers have not started, with
    /// nothing queued for them, get none (after `scale 1000` hundreds were forked only to be
    /// told to quit, and the stop waited for them all); the stop completes and leaves nothing.
    @Test func aStopRightAfterAScaleStartsNoIdleNewWorkers() throws {
        let server = try TestServer(["--workers", "2"] + Self.framedSim)
        let footprint = FaultSupport.Footprint(server)
        defer { kill(server.pid, SIGCONT); server.stop(); footprint.removeLeftovers() }
        _ = try #require(S.waitForWorkerCount(server, 2))
        let answers = try S.commandsInOneTurn(server, ["scale 30", "stop"])
        #expect(answers[0].hasPrefix("ok scaling to 30") && answers[1].hasPrefix("ok stopping"), "\(answers)")
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log.suffix(3000))")
        // 2 at the start, at most 8 (`Supervisor.startsPerTurn`) in the turn of the scale.
        let spawned = server.logLines(containing: "worker spawned").count
        #expect(spawned <= 2 + 8, "\(spawned) workers spawned")
        FaultSupport.expectCleanExit(server, footprint, alreadySignalled: true)
    }

    /// Status requests read in one loop turn share one report (with 1000 workers each cost the
    /// loop 10–20 ms): three of them handed to a frozen master get the same report, to the
    /// nanosecond of its uptime; a command between two (here `scale`) makes the second one anew.
    @Test func statusRequestsOfOneLoopTurnShareOneReport() throws {
        let server = try TestServer(["--workers", "2"] + Self.framedSim)
        let footprint = FaultSupport.Footprint(server)
        defer { kill(server.pid, SIGCONT); server.stop(); footprint.removeLeftovers() }
        _ = try #require(S.waitForWorkerCount(server, 2))
        // An unknown command between them changes nothing, so it does not cost a rebuild either.
        let same = try S.commandsInOneTurn(server, ["status json", "status json", "bogus", "status json"])
        #expect(same[2].hasPrefix("error: unknown command"), "\(same[2])")
        let uptimes = try [same[0], same[1], same[3]].map { try #require(S.parseStatus($0).raw["uptime_seconds"] as? NSNumber).doubleValue }
        #expect(Set(uptimes).count == 1, "uptimes \(uptimes)")
        let around = try S.commandsInOneTurn(server, ["status json", "scale 3", "status json"])
        #expect(around[1].hasPrefix("ok scaling to 3"), "\(around[1])")
        let (before, after) = (try S.parseStatus(around[0]), try S.parseStatus(around[2]))
        #expect(before.workers.count == 2 && after.workers.count == 3, "\(before.workers.count) then \(after.workers.count) slots")
        #expect(S.waitForWorkerCount(server, 3) != nil)
        FaultSupport.expectCleanExit(server, footprint)
    }

    /// SIGTTOU while a rolling restart waits for the very slot being retired: the retired worker
    /// exits, its slot is removed, and the restart must still finish (and later ones must run).
    @Test func scalingDownTheSlotARollingRestartWaitsForLetsTheRestartFinish() throws {
        let server = try TestServer(["--workers", "3"] + Self.framedSim)
        defer { server.stop() }
        guard let original = S.waitForWorkerCount(server, 3), let before = S.status(server.socketPath),
              let slot2 = before.workers.first(where: { $0.slot == 2 })?.pid else {
            Issue.record("the pool never had 3 settled workers:\n\(server.log)")
            return
        }
        let queues = before.queueIDs.union(S.stateFileQueueIDs(server.socketPath + ".state"))

        // Round-robin from a fresh start: "a" -> slot 0, "b" -> slot 1, the slow job -> slot 2.
        let client = try PoolClient(socketPath: server.socketPath, timeout: 60)
        let payloads = ["a", "b", "sleep:5000"].map { Array($0.utf8) }
        for payload in payloads { try client.send(payload) }
        let busy = S.waitForStatus(server.socketPath, timeout: 20) { $0.workers.first { $0.slot == 2 }?.state == "busy" }
        guard busy.ok else {
            Issue.record("the slow job did not land on slot 2: \(String(describing: busy.last?.workers))")
            return
        }

        // SIGHUP: slots 0 and 1 are replaced at once; slot 2's quit waits behind the slow job.
        server.signal(SIGHUP)
        let waiting = S.waitForStatus(server.socketPath, timeout: 20) { status in
            let pids = Dictionary(uniqueKeysWithValues: status.workers.map { ($0.slot, $0.pid) })
            return status.rollingRestart && pids[2] == slot2 && status.workers.count == 3
                && [0, 1].allSatisfy { pids[$0] != nil && pids[$0]! != nil && !original.contains(pids[$0]!!) }
        }
        guard waiting.ok else {
            Issue.record("the restart did not reach slot 2 while its job ran: \(String(describing: waiting.last?.workers))")
            return
        }
        // Now retire slot 2 (the highest): it finishes the slow job, quits, and its slot goes.
        server.signal(SIGTTOU)
        let responses = try payloads.map { _ in try client.receive() }
        #expect(responses.map(\.statusByte) == [0, 0, 0] && responses.map(\.body) == payloads, "\(responses)")
        #expect(S.waitForWorkerCount(server, 2, timeout: 20) != nil,
                "slot 2 was not removed: \(String(describing: S.status(server.socketPath)?.workers))")
        let restartFinished = S.waitForStatus(server.socketPath, timeout: 10) { !$0.rollingRestart }.ok
        #expect(restartFinished, "rolling_restart stays true after the slot the restart waited for was scaled away")
        if restartFinished {
            #expect(waitUntil(timeout: 5) { server.log.contains("rolling restart complete") }, "no \"rolling restart complete\" in the log")
            // A later reload still works.
            let reload = try S.poolServer(["reload", "--socket", server.socketPath, "--timeout", "30"], timeout: 60)
            #expect(reload.status == 0, "reload after the interrupted restart failed: \(reload.stderr)")
        }
        client.close()
        S.expectCleanExit(server, knownQueues: queues)
    }

    /// `--max-workers` (PHP-FPM's dynamic process manager): five 5-second jobs on a pool of one
    /// worker that may grow to four and wants one spare. It starts a worker a second while short,
    /// counts the looks that found it at its ceiling and still short, runs every job, and once
    /// they are done retires a worker a second back to its floor of one.
    @Test func dynamicSizingGrowsToTheCeilingUnderLoadAndShrinksBackWhenIdle() throws {
        let server = try TestServer(["--workers", "1", "--max-workers", "4", "--min-spare", "1", "--max-spare", "1",
                                     "--protocol", "framed", "--reply", "result", "--handler", "sim"])
        defer { server.stop() }
        #expect(server.log.contains("max-workers=4 (spare 1…1)"), "\(server.log)")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 60)
        defer { client.close() }
        for _ in 0..<5 { try client.send("sleep:5000".bytes) }
        let grown = S.waitForStatus(server.socketPath, timeout: 20) { $0.workers.count == 4 && $0.settled }
        #expect(grown.ok, "\(String(describing: grown.last?.workers))\n\(server.log)")
        let starts = server.log.split(separator: "\n").filter { $0.contains("dynamic scaling: starting workers") }
        #expect(starts.count == 3 && starts.allSatisfy { $0.contains("spare=0") }, "\(starts)")
        // Four running, one waiting: at the ceiling and short of a spare worker.
        let ceiling = S.waitForStatus(server.socketPath, timeout: 20) { ($0.raw["max_workers_reached"] as? Int ?? 0) >= 1 }
        #expect(ceiling.ok && ceiling.last?.raw["max_workers"] as? Int == 4, "\(String(describing: ceiling.last?.raw))")
        #expect(server.log.contains("--max-workers reached"), "\(server.log)")
        for _ in 0..<5 {
            let answer = try client.receive()
            #expect(answer.isOK && answer.body == "sleep:5000".bytes, "\(answer)")
        }
        // Idle now, four spare against a maximum of one: back to the floor, a worker a second.
        let shrunk = S.waitForStatus(server.socketPath, timeout: 30) { $0.workers.count == 1 && $0.settled }
        #expect(shrunk.ok, "\(String(describing: shrunk.last?.workers))\n\(server.log)")
        #expect(server.log.split(separator: "\n").filter { $0.contains("dynamic scaling: retiring a worker") }.count == 3, "\(server.log)")
        client.close()
        S.expectCleanExit(server)
    }

    /// The sizer's shrink retires a spare worker, not a busy one above it. Least-busy dispatch puts
    /// a 6 s job on slot 0, then (grown) one on slot 1, then (grown again) a 14 s one on slot 2 (the
    /// sizer looks once a second: 6 s leave room for two looks on a slow machine). Once the
    /// short ones end, two are spare against one: slot 1 is retired and one spare is left. Slot 2
    /// used to be retired first (the highest), which left two spare, so the next look retired slot
    /// 1 too — down to the floor while the long job still ran.
    @Test func dynamicShrinkRetiresASpareWorkerNotABusyOne() throws {
        let server = try TestServer(["--workers", "1", "--max-workers", "3", "--min-spare", "1", "--max-spare", "1",
                                     "--protocol", "framed", "--reply", "result", "--handler", "sim", "--dispatch", "least-busy"])
        defer { server.stop() }
        let clients = try (0..<3).map { _ in try PoolClient(socketPath: server.socketPath, timeout: 60) }
        defer { for client in clients { client.close() } }
        func slot(_ index: Int, _ status: S.Status?) -> S.Worker? { status?.workers.first { $0.slot == index } }
        try clients[0].send("sleep:6000".bytes)
        try #require(S.waitForStatus(server.socketPath, timeout: 20) { $0.workers.count == 2 && $0.settled }.ok, "\(server.log)")
        try clients[1].send("sleep:6000".bytes)
        try #require(S.waitForStatus(server.socketPath, timeout: 20) { $0.workers.count == 3 && $0.settled }.ok, "\(server.log)")
        try clients[2].send("sleep:14000".bytes)
        let placed = S.waitForStatus(server.socketPath, timeout: 10) { status in
            (0..<3).allSatisfy { slot($0, status)?.state == "busy" }
        }
        try #require(placed.ok, "the three jobs are not one a slot: \(String(describing: placed.last?.workers))")
        #expect(try clients[0].receive().body == "sleep:6000".bytes)
        #expect(try clients[1].receive().body == "sleep:6000".bytes)
        #expect(waitUntil(timeout: 10) { server.log.contains("dynamic scaling: retiring a worker") }, "\(server.log)")
        // Two more looks.
        usleep(2_500_000)
        let status = S.status(server.socketPath)
        #expect(slot(2, status)?.state == "busy" && slot(0, status)?.state == "idle",
                "\(String(describing: status?.workers))\n\(server.log.suffix(2000))")
        #expect(server.logLines(containing: "dynamic scaling: retiring a worker").count == 1, "\(server.log.suffix(2000))")
        #expect(try clients[2].receive().body == "sleep:14000".bytes)
        for client in clients { client.close() }
        S.expectCleanExit(server)
    }

    /// The sizing flags' refusals: the ceiling below the floor or above 1024, spare bounds out of
    /// order or beyond the ceiling (never met, the pool would never shrink), and spare bounds
    /// without a ceiling.
    @Test func dynamicSizingRefusesInconsistentBounds() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/pool.sock"
        for (flags, status, text) in [(["--workers", "3", "--max-workers", "2"], 2, "--max-workers must be within"),
                                      (["--max-workers", "1025"], 2, "--max-workers must be within"),
                                      (["--max-workers", "4", "--min-spare", "0"], 2, "--min-spare must be at least 1"),
                                      (["--max-workers", "4", "--min-spare", "3", "--max-spare", "2"], 2, "--max-spare at least --min-spare"),
                                      (["--max-workers", "4", "--min-spare", "5"], 2, "--min-spare (5) must be at most --max-workers"),
                                      (["--max-spare", "2"], 64, "apply with --max-workers only")] {
            let result = try S.poolServer(["--socket", socket] + flags, timeout: 30)
            #expect(result.status == Int32(status) && result.stderr.contains(text), "\(flags): \(result.status) \(result.stderr)")
            #expect(!fileExists(socket))
        }
    }

    /// Values the checks let through before: a timeout that rounds to 0 ns (every idle connection
    /// closed, every job timed out, at the first scan), `nan` (refused as "at most"), and a log
    /// file that is the socket (created there first, so the bind failed and every later start on
    /// that socket too, the reason written into it) or the state file (renamed away by the first
    /// record, every line lost). Exit 2, the flag named; nothing created.
    @Test func timeoutsThatRoundToZeroNaNAndALogFileOnThePoolsFilesAreRefused() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/pool.sock"
        for (flags, text) in [(["--idle-timeout", "1e-10"], "--idle-timeout must be positive"),
                              (["--control-timeout", "1e-10"], "--control-timeout must be positive"),
                              (["--job-timeout", "1e-10"], "--job-timeout must be positive"),
                              (["--job-timeout", "nan"], "--job-timeout must be a number of seconds, not nan"),
                              (["--log-file", socket], "--log-file must not be the socket"),
                              (["--log-file", socket + ".state"], "--log-file must not be the socket"),
                              (["--pid-file", directory + "/pid", "--log-file", directory + "/./pid"], "--log-file must not be the socket")] {
            let result = try S.poolServer(["--socket", socket] + flags, timeout: 30)
            #expect(result.status == 2 && result.stderr.contains(text), "\(flags): \(result.status) \(result.stderr)")
            #expect(!fileExists(socket) && !fileExists(socket + ".state") && !fileExists(directory + "/pid"), "\(flags)")
        }
    }

    // MARK: - 4. sd_notify

    @Test func sdNotifyReportsReadyStatusAndStopping() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }

        for name in [directory + "/notify.sock", "@pool-test-notify-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"] {
            let receiver = try S.NotifyReceiver(name)
            var environment = ProcessInfo.processInfo.environment
            environment["NOTIFY_SOCKET"] = name
            let server = try TestServer(["--workers", "2"], environment: environment)
            defer { server.stop() }

            func lines(_ message: String) -> [Substring] { message.split(separator: "\n") }
            let ready = receiver.waitFor { lines($0).contains("READY=1") }
            #expect(ready != nil, "no READY=1 on \(name): \(receiver.messages)")
            #expect(ready.map { lines($0).contains("MAINPID=\(server.pid)") } == true, "READY without MAINPID: \(String(describing: ready))")
            let status = receiver.waitFor { lines($0).contains { $0.hasPrefix("STATUS=") } }
            #expect(status?.contains("STATUS=2 workers") == true, "status: \(String(describing: status))")

            server.signal(SIGTTIN)
            let scaled = receiver.waitFor { $0.contains("STATUS=3 workers") }
            #expect(scaled != nil, "no STATUS after SIGTTIN: \(receiver.messages)")
            #expect(S.waitForWorkerCount(server, 3) != nil)

            S.expectCleanExit(server)
            let stopping = receiver.waitFor(timeout: 5) { lines($0).contains("STOPPING=1") }
            #expect(stopping != nil, "no STOPPING=1 on \(name): \(receiver.messages)")
            let readyIndex = receiver.messages.firstIndex { lines($0).contains("READY=1") }
            let stoppingIndex = receiver.messages.firstIndex { lines($0).contains("STOPPING=1") }
            if let readyIndex, let stoppingIndex { #expect(readyIndex < stoppingIndex) }
            #expect(receiver.messages.filter { lines($0).contains("READY=1") }.count == 1,
                    "READY=1 sent more than once (workers must not notify): \(receiver.messages)")
        }
    }

    /// `WatchdogSec=`: with WATCHDOG_USEC (here 0.4 s) for this process, the master sends
    /// `WATCHDOG=1` about twice per interval from its loop, idle or not; WATCHDOG_PID naming
    /// another process leaves it out.
    @Test func sdNotifyWatchdogIsFedFromTheLoop() throws {
        for forUs in [true, false] {
            let name = "@pool-test-watchdog-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
            let receiver = try S.NotifyReceiver(name)
            var environment = ProcessInfo.processInfo.environment
            environment["NOTIFY_SOCKET"] = name
            environment["WATCHDOG_USEC"] = "400000"
            if !forUs { environment["WATCHDOG_PID"] = "1" }
            let server = try TestServer(["--workers", "1"], environment: environment)
            defer { server.stop() }
            #expect(receiver.waitFor { $0.contains("READY=1") } != nil, "no READY=1: \(receiver.messages)")
            let pings = { receiver.messages.filter { $0.split(separator: "\n").contains("WATCHDOG=1") }.count }
            if forUs {
                // Several intervals of an idle pool: at least one ping per interval (2 s = 5).
                _ = receiver.waitFor(timeout: 20) { _ in pings() >= 4 }
                #expect(pings() >= 4, "\(pings()) WATCHDOG=1 in \(receiver.messages)")
            } else {
                _ = receiver.waitFor(timeout: 1.5) { _ in false }
                #expect(pings() == 0, "WATCHDOG=1 sent though WATCHDOG_PID names another process: \(receiver.messages)")
            }
            S.expectCleanExit(server)
        }
    }

    /// The master at its descriptor limit (clients hold every one it may open; `ulimit -n 40`)
    /// still feeds the watchdog: it sends on a socket opened at start. A socket per ping failed
    /// with EMFILE there, and systemd would kill a healthy pool after two missed intervals.
    @Test func theWatchdogIsFedWithTheDescriptorsExhausted() throws {
        let name = "@pool-test-watchdog-fds-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        let receiver = try S.NotifyReceiver(name)
        let server = try FaultSupport.ShellServer(prelude: "ulimit -n 40; export NOTIFY_SOCKET=\(name) WATCHDOG_USEC=400000",
                                                  // Idle clients kept: closing them would free descriptors.
                                                  ["--workers", "1", "--idle-timeout", "600"] + Self.framedEcho)
        let footprint = FaultSupport.Footprint(server)
        defer { server.stop(); footprint.removeLeftovers() }
        #expect(receiver.waitFor { $0.contains("READY=1") } != nil, "no READY=1: \(receiver.messages)")
        var clients: [Int32] = []
        defer { for fd in clients { close(fd) } }
        for _ in 0..<48 {
            let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
            guard fd >= 0 else { break }
            clients.append(fd)
            _ = csysv_connect_unix(fd, server.socketPath)
        }
        #expect(waitUntil(timeout: 20) { !server.logLines(containing: "out of file descriptors").isEmpty },
                "the master never ran out of descriptors:\n\(server.log.suffix(2000))")
        let pings = { receiver.messages.filter { $0.split(separator: "\n").contains("WATCHDOG=1") }.count }
        _ = receiver.waitFor(timeout: 0.1) { _ in false }
        let before = pings()
        _ = receiver.waitFor(timeout: 20) { _ in pings() >= before + 4 }
        #expect(pings() >= before + 4, "\(pings() - before) WATCHDOG=1 after the descriptors ran out: \(receiver.messages.suffix(5))")
        for fd in clients { close(fd) }
        clients = []
        footprint.observe()
        server.signal(SIGTERM)
        #expect(server.waitForExit(timeout: 30) == 0, "\(server.log.suffix(2000))")
        FaultSupport.expectNothingLeft(footprint, log: server.log)
    }

    // MARK: - 5. Socket activation

    @Test func socketActivationServesTheInheritedSocketAndNeverUnlinksIt() throws {
        let server = try S.ActivatedServer(["--workers", "2"] + Self.framedEcho)
        defer { server.stop() }
        var st = stat()
        #expect(lstat(server.socketPath, &st) == 0)
        let inode = st.st_ino

        #expect(server.log.contains("socket activation"), "\(server.log)")
        #expect(server.log.contains("fd=3"), "\(server.log)")
        #expect(!server.log.contains("removing stale socket"))
        // Recorded, so a cleanup after a crash leaves systemd's socket alone.
        #expect(PoolState.read(from: server.socketPath + ".state")?.socketActivated == true)
        let client = try PoolClient(socketPath: server.socketPath)
        let reply = try client.request(Array("activated".utf8))
        #expect(reply.statusByte == 0 && Self.text(reply.body) == "activated", "\(reply)")
        let pipelined = (0..<20).map { Array("a-\($0)".utf8) }
        #expect(try client.pipeline(pipelined).map(\.body) == pipelined)

        // The control socket works beside it, and the status counts just our client.
        guard let status = S.status(server.socketPath) else {
            Issue.record("no status over \(server.socketPath).ctl:\n\(server.log)")
            return
        }
        #expect(status.pid == server.pid)
        #expect(status.workers.count == 2)
        #expect(status.acceptedConnections == 1,
                "one client connected, but accepted_connections is \(status.acceptedConnections)")
        #expect(status.responses["ok"] == 21)
        let queues = status.queueIDs.union(loggedQueueIDs(inLog: server.log)).union(S.stateFileQueueIDs(server.socketPath + ".state"))
        let workers = Set(status.workerPIDs).union(spawnedWorkerPIDs(inLog: server.log))
        client.close()

        kill(server.pid, SIGTERM)
        #expect(server.waitForExit() == 0, "\(server.log)")
        #expect(lstat(server.socketPath, &st) == 0 && st.st_ino == inode,
                "the socket file systemd owns was unlinked or replaced by the server")
        S.expectNothingLeft(socketPath: server.socketPath, queues: queues, workers: workers, socketOwnedByUs: true)
        #expect(server.log.contains("shutdown complete"))
        server.stop()
        #expect(!FileManager.default.fileExists(atPath: server.socketPath))
    }

    /// A passed socket that is not listening, or listens on another path than `--socket`, stops
    /// the start (exit 2, naming why) before any queue or worker exists, leaving the file alone.
    /// The pool used to adopt any fd 3: not listening, its first accept failed with the workers
    /// up; on another path, clients, status and cleanup went to `--socket` and found nothing.
    @Test(arguments: [(false, nil), (true, "elsewhere.sock")] as [(Bool, String?)])
    func socketActivationRefusesASocketItCannotServe(listening: Bool, boundName: String?) throws {
        let server = try S.ActivatedServer(["--workers", "2"] + Self.framedEcho,
                                           listening: listening, boundName: boundName, expectStart: false)
        defer { server.stop() }
        let boundPath = server.directory + "/" + (boundName ?? "pool.sock")
        var st = stat()
        #expect(lstat(boundPath, &st) == 0)
        let inode = st.st_ino
        #expect(server.waitForExit() == 2, "\(server.log)")
        let expected = listening ? "bound to \(boundPath), not to --socket \(server.socketPath)"
                                 : "is not a listening Unix stream socket"
        #expect(server.log.contains(expected), "\(server.log)")
        #expect(!server.log.contains("pool started"), "\(server.log)")
        #expect(lstat(boundPath, &st) == 0 && st.st_ino == inode, "the passed socket's file was removed or replaced")
        #expect(loggedQueueIDs(inLog: server.log).isEmpty && spawnedWorkerPIDs(inLog: server.log).isEmpty,
                "queues or workers created before the check: \(server.log)")
        expectServerGone(socketPath: server.socketPath, queues: [], workers: [], socketOwnedByUs: boundName == nil,
                         sourceLocation: #_sourceLocation)
        #expect(!FileManager.default.fileExists(atPath: server.socketPath + ".ctl"))
    }

    /// A passed socket whose file this process cannot see (a container given only the
    /// descriptor, PrivateTmp=): nothing to compare `--socket` with, so it is served under that
    /// name, with a warning, and the control socket beside it works.
    @Test func socketActivationServesASocketWhoseFileIsNotVisible() throws {
        let server = try S.ActivatedServer(["--workers", "1"] + Self.framedEcho, unlinkBound: true)
        defer { server.stop() }
        #expect(server.log.contains("is not visible here; taking --socket \(server.socketPath) as its name"), "\(server.log)")
        let status = try #require(S.status(server.socketPath), "no status:\n\(server.log)")
        #expect(status.workers.count == 1)
        let queues = status.queueIDs.union(S.stateFileQueueIDs(server.socketPath + ".state"))
        let workers = Set(status.workerPIDs)
        kill(server.pid, SIGTERM)
        #expect(server.waitForExit() == 0, "\(server.log)")
        S.expectNothingLeft(socketPath: server.socketPath, queues: queues, workers: workers)
    }

    @Test func listenPIDOfAnotherProcessIsIgnored() throws {
        var environment = ProcessInfo.processInfo.environment
        environment["LISTEN_PID"] = "1"
        environment["LISTEN_FDS"] = "1"
        let server = try TestServer(["--workers", "1"] + Self.framedEcho, environment: environment)
        defer { server.stop() }
        #expect(!server.log.contains("socket activation"), "\(server.log)")
        let reply = try PoolClient(socketPath: server.socketPath).request(Array("bound".utf8))
        #expect(reply.statusByte == 0 && Self.text(reply.body) == "bound")
        S.expectCleanExit(server)
    }

    // MARK: - 6. Log file

    @Test func logFileIsReopenedAfterRenameAndSIGUSR1() throws {
        let (server, logPath, logDirectory, _) = try S.startLoggingToFile(["--workers", "2", "--handler", "log"])
        defer { server.stop(); try? FileManager.default.removeItem(atPath: logDirectory) }
        let rotated = logPath + ".1"
        let read = S.fileText
        func received(_ path: String) -> Set<String> { Set(recvLines(in: read(path)).map(\.message)) }
        let extraLog = { read(logPath) + "\n" + read(rotated) }
        guard let workers = S.waitForWorkerCount(server, 2) else {
            Issue.record("pool-server did not start:\n\(server.log)\n\(read(logPath))")
            return
        }
        #expect(!server.log.contains("pool started"), "with --log-file nothing should go to stderr")

        #expect(try Self.text(PoolClient.oneshot(socketPath: server.socketPath, message: Array("before-rotation".utf8))) == "ok")
        #expect(waitUntil(timeout: 20) { received(logPath).contains("before-rotation") }, "\(read(logPath))")

        #expect(rename(logPath, rotated) == 0)
        server.signal(SIGUSR1)
        #expect(waitUntil(timeout: 20) { read(logPath).contains("log file reopened") }, "no new pool.log from the master")

        let after = (0..<4).map { "after-rotation-\($0)" }
        for message in after {
            #expect(try Self.text(PoolClient.oneshot(socketPath: server.socketPath, message: Array(message.utf8))) == "ok")
        }
        #expect(waitUntil(timeout: 20) { received(logPath).isSuperset(of: after) },
                "workers did not write to the new pool.log:\nnew:\n\(read(logPath))\nold:\n\(read(rotated))")
        let old = read(rotated), new = read(logPath)
        #expect(!old.contains("after-rotation"), "a worker kept writing to the renamed file:\n\(old)")
        #expect(old.contains("before-rotation") && !new.contains("before-rotation"))
        #expect(!old.contains("log file reopened"))
        // Round-robin: both workers wrote their lines to the new file.
        let writers = Set(recvLines(in: new).map(\.pid))
        #expect(writers == Set(workers), "recv lines in the new file came from \(writers), workers are \(workers)")

        S.expectCleanExit(server, extraLog: extraLog)
        #expect(read(logPath).contains("shutdown complete"))
        #expect(!read(rotated).contains("shutdown complete"))
    }

    /// A rotation that finds a FIFO with no reader at the log's path (a collector restarting, or
    /// planted by the workers' user) does not hold the master in `open`: the reopen fails, the
    /// master says so in the file it keeps, and it goes on serving. (A blocking open waited for a
    /// reader for ever, and the request below timed out.)
    @Test func logReopenOntoAFIFOWithoutReaderDoesNotBlock() throws {
        let (server, logPath, logDirectory, _) = try S.startLoggingToFile(["--workers", "1", "--handler", "echo"])
        defer { server.stop(); try? FileManager.default.removeItem(atPath: logDirectory) }
        let rotated = logPath + ".1"
        // Only regular files are read: reading the FIFO would wait for a writer.
        let read = S.fileText

        #expect(rename(logPath, rotated) == 0)
        #expect(mkfifo(logPath, 0o600) == 0)
        server.signal(SIGUSR1)
        #expect(waitUntil(timeout: 20) { read(rotated).contains("could not reopen the log file") }, "\(read(rotated))")
        #expect(try Self.text(PoolClient.oneshot(socketPath: server.socketPath, message: Array("still-serving".utf8), timeout: 10)) == "ok")
        S.expectCleanExit(server, extraLog: { read(rotated) })
        #expect(read(rotated).contains("shutdown complete"))
    }

    /// SIGUSR1 reaching an idle worker just before it blocks in msgrcv (the debug receive delay
    /// holds it in that window, asleep): msgrcv has no signal mask to wait with, so a reopen left
    /// to the loop waited for the next message, the worker holding the renamed file. It reopens in
    /// the handler now: its stderr is the new file while it waits.
    @Test func anIdleWorkerSignalledJustBeforeItsWaitReopensTheLog() throws {
        let sleeps = try #require(SyscallNumber.sleeps, "no sleep syscall numbers for this architecture")
        let msgrcv = try #require(SyscallNumber.msgrcv, "no msgrcv number for this architecture")
        var environment = ProcessInfo.processInfo.environment
        // Long, so the window cannot pass before the signal; the signal cuts the sleep short.
        environment["POOL_DEBUG_WORKER_RECEIVE_DELAY_MS"] = "30000"
        let (server, logPath, logDirectory, worker) = try S.startLoggingToFile(["--workers", "1"] + Self.framedEcho,
                                                                               environment: environment)
        defer { server.stop(); try? FileManager.default.removeItem(atPath: logDirectory) }
        let rotated = logPath + ".1"
        let pid = try #require(worker ?? S.waitForWorkerCount(server, 1)?.first, "no worker:\n\(S.fileText(logPath))")
        func stderrTarget() -> String {
            var buffer = [CChar](repeating: 0, count: 4096)
            let n = readlink("/proc/\(pid)/fd/2", &buffer, buffer.count - 1)
            return n > 0 ? String(decoding: buffer[0..<n].map { UInt8(bitPattern: $0) }, as: UTF8.self) : ""
        }
        #expect(waitUntil(timeout: 20) { blockedSyscall(pid).map(sleeps.contains) == true },
                "the worker never slept before its wait (syscall \(String(describing: blockedSyscall(pid))))")
        #expect(stderrTarget() == logPath)
        #expect(rename(logPath, rotated) == 0)
        // Still in the window (else the signal would interrupt msgrcv and test nothing new).
        try #require(blockedSyscall(pid).map(sleeps.contains) == true, "the worker left its sleep before the signal")
        server.signal(SIGUSR1)
        #expect(waitUntil(timeout: 20) { S.fileText(logPath).contains("log file reopened") }, "no new pool.log from the master")
        // Past the delay, waiting for a message that does not come.
        #expect(waitUntil(timeout: 20) { blockedSyscall(pid) == msgrcv }, "the worker is not waiting in msgrcv")
        #expect(waitUntil(timeout: 20) { stderrTarget() == logPath },
                "the idle worker still writes to \(stderrTarget()), not the new \(logPath)")
        S.expectCleanExit(server, extraLog: { S.fileText(logPath) + "\n" + S.fileText(rotated) })
    }

    /// A rotation while a worker starts, before its SIGUSR1 handler is in (until then the signal is
    /// ignored, so the master's forwarded one is lost): the worker opens the log file again as it
    /// installs the handler, so its lines go to the new file. (They went on to the renamed one.)
    @Test func aWorkerStartingDuringARotationWritesToTheNewFile() throws {
        let (server, logPath, logDirectory, started) = try S.startLoggingToFile(
            ["--workers", "1", "--handler", "log"], workers: 1,
            environment: FaultIntegrationTests.debugEnvironment("POOL_DEBUG_WORKER_START_DELAY_MS", "6000"))
        defer { server.stop(); try? FileManager.default.removeItem(atPath: logDirectory) }
        let worker = try #require(started)
        let rotated = logPath + ".1"
        let read = S.fileText
        try #require(!signalSet("SigCgt", of: worker, contains: SIGUSR1), "the worker was past its start window")
        #expect(rename(logPath, rotated) == 0)
        server.signal(SIGUSR1)
        #expect(waitUntil(timeout: 20) { read(logPath).contains("log file reopened") }, "no new pool.log from the master")
        // The master forwarded the signal before saying so: it reached the worker in its window.
        try #require(!signalSet("SigCgt", of: worker, contains: SIGUSR1), "the worker was past its start window")

        #expect(try Self.text(PoolClient.oneshot(socketPath: server.socketPath, message: Array("started-late".utf8))) == "ok")
        #expect(waitUntil(timeout: 30) { recvLines(in: read(logPath)).contains { $0.message == "started-late" } },
                "the worker did not write to the new pool.log:\nnew:\n\(read(logPath))\nold:\n\(read(rotated))")
        #expect(!read(rotated).contains("started-late"), "the worker wrote to the renamed file:\n\(read(rotated))")
        S.expectCleanExit(server, extraLog: { read(logPath) + "\n" + read(rotated) })
    }

    /// An idle worker, waiting in msgrcv, opens the new log file when SIGUSR1 interrupts the wait,
    /// not before its next line: it held the renamed file (and, once logrotate deleted it, its
    /// disk space) for as long as it logged nothing, and a crash's output would have gone there.
    @Test func anIdleWorkerLeavesTheRotatedLogFileAtOnce() throws {
        let (server, logPath, logDirectory, started) = try S.startLoggingToFile(["--workers", "1", "--handler", "echo"], workers: 1)
        defer { server.stop(); try? FileManager.default.removeItem(atPath: logDirectory) }
        let worker = try #require(started)
        let rotated = logPath + ".1"
        let read = S.fileText
        #expect(waitUntil(timeout: 20) { signalSet("SigCgt", of: worker, contains: SIGUSR1) }, "the worker never took SIGUSR1")
        let stderrOf = { (pid: pid_t) in (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/fd/2")) ?? "" }
        #expect(stderrOf(worker) == logPath)
        #expect(rename(logPath, rotated) == 0)
        server.signal(SIGUSR1)
        #expect(waitUntil(timeout: 20) { read(logPath).contains("log file reopened") }, "no new pool.log from the master")
        #expect(waitUntil(timeout: 20) { stderrOf(worker) == logPath }, "the idle worker still writes to \(stderrOf(worker))")
        S.expectCleanExit(server, extraLog: { read(logPath) + "\n" + read(rotated) })
    }

    /// SIGUSR1 (logrotate) while workers are being forked (here: recycled after every job). The
    /// master forwards SIGUSR1 to every worker; one forked a moment ago must not die of it.
    @Test func sigusr1NeverKillsAFreshlyForkedWorker() throws {
        let (server, logPath, logDirectory, _) = try S.startLoggingToFile(["--workers", "2", "--max-jobs", "1"] + Self.framedSim, workers: 2)
        defer { server.stop(); try? FileManager.default.removeItem(atPath: logDirectory) }
        func read() -> String { S.fileText(logPath) }
        // Continuous recycling; the responses themselves are not what this test is about.
        let load = S.LoadGenerator(socketPath: server.socketPath, verify: false)
        #expect(waitUntil(timeout: 30) { load.answered >= 100 })
        for _ in 0..<200 {
            server.signal(SIGUSR1)
            usleep(10_000)
        }
        #expect(load.stop(), "the load threads did not finish")
        #expect(waitUntil(timeout: 10) { read().contains("log file reopened") })
        let killed = read().split(separator: "\n").filter { $0.contains("worker died") && $0.contains("signal \(SIGUSR1)") }
        let killedCount = killed.count
        #expect(killedCount == 0, "\(killedCount) workers died of SIGUSR1 (sent by the master's log reopen), e.g. \(killed.prefix(2))")
        S.expectCleanExit(server, extraLog: read)
    }

    // MARK: - 7. --config

    @Test func configFileGivesDefaultsAndTheCommandLineWins() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = directory + "/pool.json"
        #expect(FileManager.default.createFile(
            // 2.0: JSON's one number type, for an Int option; timeout and format: the operator
            // subcommands' keys, which serve skips (one file serves both).
            atPath: config, contents: Data(#"{"workers": 2.0, "handler": "echo", "reply": "result", "protocol": "framed", "timeout": 10, "format": "json"}"#.utf8)))

        for (arguments, expected) in [(["--config", config], 2), (["--config", config, "--workers", "3"], 3),
                                      (["--workers", "1", "--config=\(config)"], 1)] {
            let server = try TestServer(arguments)
            defer { server.stop() }
            let pids = S.waitForWorkerCount(server, expected)
            #expect(pids != nil, "\(arguments): expected \(expected) workers, status: \(String(describing: S.status(server.socketPath)?.workers))")
            #expect(server.logLines(containing: "pool started").first?.contains("workers=\(expected)") == true)
            let reply = try PoolClient(socketPath: server.socketPath).request(Array("configured".utf8))
            #expect(reply.statusByte == 0 && Self.text(reply.body) == "configured", "\(arguments): \(reply)")
            let status = try #require(S.status(server.socketPath))
            #expect(status.raw["protocol"] as? String == "framed" && status.raw["reply"] as? String == "result")
            S.expectCleanExit(server)
        }
    }

    /// The operator subcommands read the same file, taking the keys they have (socket, timeout,
    /// format) and skipping the pool's: `status --config` finds the socket and the format there.
    @Test func operatorSubcommandsShareTheConfigFile() throws {
        let server = try TestServer(["--workers", "1"])
        defer { server.stop() }
        let config = server.directory + "/shared.json"
        #expect(FileManager.default.createFile(atPath: config, contents: Data(
            #"{"socket": "\#(server.socketPath)", "workers": 1, "handler": "echo", "allow-uid": [0], "timeout": 10, "format": "json"}"#.utf8)))
        let status = try S.poolServer(["status", "--config", config], timeout: 30)
        #expect(status.status == 0 && status.stdout.hasPrefix("{") && status.stdout.contains("\"pid\":\(server.pid)"),
                "\(status.stdout) \(status.stderr)")
        // The command line still wins over the file.
        let table = try S.poolServer(["status", "--config", config, "--format", "table"], timeout: 30)
        #expect(table.status == 0 && !table.stdout.hasPrefix("{"), "\(table.stdout) \(table.stderr)")
        S.expectCleanExit(server)
    }

    /// The scheduling policy of a process: field 41 of /proc/PID/stat (0 SCHED_OTHER, 3 SCHED_BATCH).
    static func schedulingPolicy(_ pid: pid_t) -> Int? {
        guard let stat = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8),
              let close = stat.lastIndex(of: ")") else { return nil }
        let fields = stat[stat.index(after: close)...].split(separator: " ")
        return fields.count > 38 ? Int(fields[38]) : nil   // fields[0] is field 3 (state)
    }

    /// Ack mode's workers run under SCHED_BATCH, result mode's keep the master's policy (here
    /// SCHED_OTHER), and --worker-sched overrides either; the master is never changed.
    @Test func workerSchedulingFollowsTheReplyModeUnlessSet() throws {
        for (arguments, expected) in [([String](), 3), (["--reply", "result"], 0),
                                      (["--reply", "result", "--worker-sched", "batch"], 3),
                                      (["--worker-sched", "normal"], 0)] {
            let server = try TestServer(arguments + ["--workers", "2"])
            defer { server.stop() }
            let pids = S.waitForWorkerCount(server, 2)
            #expect(pids != nil, "\(arguments): no workers")
            for pid in pids ?? [] {
                #expect(Self.schedulingPolicy(pid) == expected, "\(arguments): worker \(pid) has policy \(String(describing: Self.schedulingPolicy(pid)))")
            }
            #expect(Self.schedulingPolicy(server.pid) == 0, "the master keeps SCHED_OTHER")
            let named = arguments.contains("normal") ? "normal" : expected == 3 ? "batch" : "inherited"
            #expect(server.logLines(containing: "pool started").first?.contains("worker-sched=\(named)") == true)
            S.expectCleanExit(server)
        }
    }

    @Test func malformedConfigFilesAreRefused() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let malformed = [
            ("truncated", #"{"workers": 2, "handler": "echo""#),
            ("bad value", #"{"workers": two}"#),
            ("not an object", "[1, 2]"),
            ("trailing garbage", #"{"workers": 2} trailing garbage"#),
            // C would read this path as "pool.sock", which the string checks never saw.
            ("NUL in a string", #"{"state-file": "pool.sock\u0000x"}"#),
            ("a second config", #"{"config": "other.json"}"#),
            ("help", #"{"help": true}"#),
            // true inside a list: its internal marker (a NUL) ended up in the value.
            ("true in a list", #"{"allow-uid": [0, true]}"#),
            // Not JSON, though Double or a lax reader takes them (each of these used to start).
            ("hex number", #"{"workers": 0x2}"#),
            ("plus sign", #"{"workers": +2}"#),
            ("leading zero", #"{"workers": 02}"#),
            ("duplicate key", #"{"workers": 2, "workers": 3}"#),
            ("comma before the bracket", #"{"allow-uid": [0,]}"#),
            ("no comma in a list", #"{"allow-uid": [0 1]}"#),
            ("no-break space", "{\"workers\":\u{00A0}2}"),
            ("signed escape", #"{"handler": "\u+065cho"}"#),
        ]
        for (name, text) in malformed {
            let path = directory + "/\(name.replacingOccurrences(of: " ", with: "-")).json"
            _ = FileManager.default.createFile(atPath: path, contents: Data(text.utf8))
            // Spawned without waiting for a start that should not happen; stopped if it does.
            let server = try TestServer(["--config", path], waitForStart: false)
            defer { server.stop() }
            let ended = waitUntil(timeout: 20) { !server.process.isRunning || server.log.contains("pool started") }
            #expect(ended && !server.process.isRunning,
                    "\(name) config \(text): pool-server started anyway:\n\(server.log)")
            if server.process.isRunning {
                S.expectCleanExit(server)
                continue
            }
            #expect(server.process.terminationStatus != 0, "\(name): exit status 0")
            #expect(server.log.contains("--config"), "\(name): the error does not mention --config: \(server.log)")
            #expect(!FileManager.default.fileExists(atPath: server.socketPath) && !FileManager.default.fileExists(atPath: server.socketPath + ".ctl")
                    && !FileManager.default.fileExists(atPath: server.socketPath + ".state"), "\(name): the server got as far as creating files")
        }
        let missing = try S.poolServer(["--socket", directory + "/bad.sock", "--config", directory + "/missing.json"], timeout: 30)
        #expect(!missing.timedOut && missing.status != 0 && missing.stderr.contains("--config"), "missing: \(missing.stderr)")
        let notAFile = try S.poolServer(["--socket", directory + "/bad.sock", "--config", directory], timeout: 30)
        #expect(!notAFile.timedOut && notAFile.status == 2 && notAFile.stderr.contains("Is a directory"), "a directory: \(notAFile.stderr)")
        // An empty list of uids is refused as `--allow-uid ""` is, not read as "anyone".
        let empty = directory + "/empty-allow.json"
        _ = FileManager.default.createFile(atPath: empty, contents: Data(#"{"allow-uid": []}"#.utf8))
        let nobody = try S.poolServer(["--socket", directory + "/bad.sock", "--config", empty], timeout: 30)
        #expect(!nobody.timedOut && nobody.status == 64 && nobody.stderr.contains("allow-uid"), "empty allow-uid: \(nobody.stderr)")
        #expect(!FileManager.default.fileExists(atPath: directory + "/bad.sock"))
    }

    /// String values are JSON strings: an escape such as \u0065 ("e") means what JSON says.
    @Test func configFileStringEscapesAreJSON() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let config = directory + "/escaped.json"
        #expect(FileManager.default.createFile(
            atPath: config, contents: Data(#"{"workers": 1, "handler": "\u0065cho", "reply": "res\u0075lt", "protocol": "framed"}"#.utf8)))
        let server = try TestServer(["--config", config], waitForStart: false)
        defer { server.stop() }
        let started = waitUntil(timeout: 20) { server.log.contains("pool started") || !server.process.isRunning }
        guard started, server.process.isRunning else {
            Issue.record("a config with JSON \\u escapes was refused: \(server.log)")
            return
        }
        let reply = try PoolClient(socketPath: server.socketPath).request(Array("escaped".utf8))
        #expect(reply.statusByte == 0 && Self.text(reply.body) == "escaped", "\(reply)")
        S.expectCleanExit(server)
    }

    // MARK: - 7b. --pid-file

    /// `--pid-file`: the master's pid, once it serves, for scripts (`kill -USR1 $(cat …)`); gone
    /// after a clean stop. One that another master has written its pid into since is left alone.
    @Test func pidFileNamesTheMasterWhileItServes() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let pidFile = directory + "/pool.pid"
        func read() -> String? { try? String(contentsOfFile: pidFile, encoding: .utf8) }
        let server = try TestServer(["--workers", "1", "--pid-file", pidFile] + Self.framedEcho)
        defer { server.stop() }
        #expect(read() == "\(server.pid)\n")
        #expect(FileManager.default.fileExists(atPath: pidFile + ".tmp.\(server.pid)") == false)
        S.expectCleanExit(server)
        #expect(read() == nil, "the pid file outlived the master")

        let second = try TestServer(["--workers", "1", "--pid-file", pidFile] + Self.framedEcho)
        defer { second.stop() }
        #expect(read() == "\(second.pid)\n")
        // Another master took the file over: not ours to remove.
        #expect(FileManager.default.createFile(atPath: pidFile, contents: Data("1\n".utf8)))
        S.expectCleanExit(second)
        #expect(read() == "1\n", "a pid file naming another process was removed")
    }

    /// A pid file that cannot be written stops the start with exit 2, naming the flag, after the
    /// queues, workers and sockets were made: none of them stays. One at the path of the socket,
    /// its control socket or the state file is refused before anything is made.
    @Test func unwritablePidFileStopsTheStartLeavingNothing() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/pool.sock"
        let result = try S.poolServer(["--socket", socket, "--workers", "2", "--pid-file", directory + "/missing-dir/pool.pid"], timeout: 30)
        #expect(!result.timedOut && result.status == 2, "status \(result.status): \(result.stderr)")
        #expect(result.stderr.contains("cannot start: --pid-file") && result.stderr.contains("No such file"), "\(result.stderr)")
        let queues = spawnedQueueIDs(inLog: result.stderr).union(loggedQueueIDs(inLog: result.stderr))
        let workers = spawnedWorkerPIDs(inLog: result.stderr)
        // Whatever the failed start left is this test's to remove, after checking it.
        defer { removeQueues(queues); killLiving(workers) }
        #expect(queues.count == 2 && workers.count == 2, "\(result.stderr)")
        #expect(existingQueueIDs().isDisjoint(with: queues), "queues left: \(existingQueueIDs().intersection(queues))")
        #expect(waitUntil(timeout: 10) { workers.allSatisfy { !processIsAlive($0) } }, "a worker outlived the failed start")
        for path in [socket, socket + ".ctl", socket + ".state"] { #expect(!fileExists(path), "\(path) left behind") }
        let empty = try S.poolServer(["--socket", socket, "--pid-file", ""], timeout: 30)
        #expect(empty.status == 2 && empty.stderr.contains("--pid-file must not be empty"), "\(empty.stderr)")
        // Renamed over the socket or the state file, it would take their place.
        for path in [socket, socket + ".ctl", socket + ".state"] {
            let clash = try S.poolServer(["--socket", socket, "--pid-file", path], timeout: 30)
            #expect(clash.status == 2 && clash.stderr.contains("--pid-file must not be the socket"), "\(path): \(clash.stderr)")
        }
        let stateClash = try S.poolServer(["--socket", socket, "--state-file", socket], timeout: 30)
        #expect(stateClash.status == 2 && stateClash.stderr.contains("--state-file must not be the socket"), "\(stateClash.stderr)")
        #expect(!fileExists(socket))
    }

    // MARK: - 8. stop

    @Test func stopCommandReturnsAfterTheMasterExitedLeavingNothing() throws {
        let server = try TestServer(["--workers", "2"] + Self.framedEcho)
        defer { server.stop() }
        guard S.waitForWorkerCount(server, 2) != nil else {
            Issue.record("the pool never had 2 settled workers:\n\(server.log)")
            return
        }
        let reply = try PoolClient(socketPath: server.socketPath).request(Array("before stop".utf8))
        #expect(reply.statusByte == 0)
        let (queues, workers) = S.owned(server)
        #expect(queues.count == 3, "2 worker queues and the reply queue: \(queues)")
        let master = server.pid

        let result = try S.poolServer(["stop", "--socket", server.socketPath])
        #expect(result.status == 0 && !result.timedOut, "stop failed (\(result.status)): \(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("stopped pid \(master)"), "\(result.stdout)")
        // Already gone when `stop` returns: no waiting before these checks.
        #expect(!processIsAlive(master), "the master still runs after stop returned")
        S.expectNothingLeft(socketPath: server.socketPath, queues: queues, workers: workers)
        #expect(server.waitForExit(timeout: 10) == 0, "\(server.log)")
        #expect(server.log.contains("shutdown complete"))
        server.stop()
    }

    /// A master whose parent has not reaped it yet (a zombie, as under a supervisor that is slow to
    /// wait) has exited: `stop` reports it stopped. (It used to count the zombie as running and
    /// fail after its whole --timeout.) Launched with posix_spawn, which, unlike Foundation's
    /// Process, leaves the reaping to this test.
    @Test func stopCountsAnUnreapedMasterAsStopped() throws {
        let server = try ProcessGroupServer(["--workers", "1"] + Self.framedEcho)
        defer { server.stop() }
        var workers: [pid_t] = []
        #expect(waitUntil(timeout: 20) { workers = server.workerPIDs; return workers.count == 1 }, "\(server.log)")
        let queues = Set(stateFileQueueIDs(server.stateFilePath))
        #expect(queues.count == 2, "the worker's queue and the reply queue: \(queues)")

        let result = try S.poolServer(["stop", "--socket", server.socketPath, "--timeout", "30"])
        #expect(result.status == 0 && !result.timedOut, "stop failed (\(result.status)): \(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("stopped pid \(server.pid)"), "\(result.stdout)")
        #expect(processState(server.pid) == "Z", "the master was to stay unreaped until now")
        #expect(server.waitForExit(timeout: 10) == 0, "\(server.log)")
        S.expectNothingLeft(socketPath: server.socketPath, queues: queues, workers: Set(workers))
    }

    /// The first SIGTERM after `pool-server stop` (systemd's, say) lets the stop drain as it was:
    /// only a second stop *signal* forces it. It used to kill the workers at once, their jobs
    /// answered *shutting down*.
    @Test func aSignalDuringAStopAskedForOverTheControlSocketDoesNotForceIt() throws {
        let (server, client) = try Self.oneSharedWorkerRunning("sleep:1500")
        defer { server.stop() }
        defer { client.close() }
        #expect(try ControlClient.send("stop", controlSocket: server.socketPath + ".ctl").hasPrefix("ok stopping"))
        server.signal(SIGTERM)
        let answer = try client.receive()
        #expect(answer.status == .ok && answer.body == "sleep:1500".bytes, "\(answer)")
        #expect(server.waitForExit(timeout: 20) == 0, "\(server.log.suffix(2000))")
        #expect(!server.log.contains("second stop signal"), "\(server.log.suffix(2000))")
    }

    /// `stop` run in another pid namespace (as from a container the socket was shared into) cannot
    /// see the master: it says so instead of waiting on the pid the status reports, which is the
    /// master's own namespace's number (here nobody's: it claimed "stopped" at once, with the
    /// master still running; elsewhere it may be another process's). The stop still happens.
    @Test(.enabled(if: Self.canUnsharePIDNamespace, "needs unshare --pid (root with CAP_SYS_ADMIN)"))
    func stopFromAnotherPIDNamespaceDoesNotWaitOnAForeignPID() throws {
        let server = try TestServer(["--workers", "1"] + Self.framedEcho)
        defer { server.stop() }
        guard let (queues, workers) = Self.settledOneWorker(server) else { return }
        let result = try FramedSupport.runCommand("/usr/bin/unshare", ["--pid", "--fork", Binaries.path("pool-server"),
                                                                       "stop", "--socket", server.socketPath])
        #expect(result.status == 0 && !result.timedOut, "stop failed (\(result.status)): \(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("the master is in another pid namespace, so its exit is not awaited"), "\(result.stdout)")
        #expect(!result.stdout.contains("stopped pid"), "\(result.stdout)")
        #expect(server.waitForExit(timeout: 20) == 0, "\(server.log)")
        S.expectNothingLeft(socketPath: server.socketPath, queues: queues, workers: workers)
    }

    /// Two containers sharing the IPC namespace and the socket's directory, each master pid 1 in
    /// its own: a start in the second found the first's record naming its own pid, took it for
    /// its own, skipped the liveness check and removed the live pool's queues. A master knows its
    /// record by a token now; here the record (the live master's, rewritten to say pid 1) is not
    /// the starting one's, whose pid is 1, and the live control socket keeps it alive.
    @Test(.enabled(if: Self.canUnsharePIDNamespace, "needs unshare --pid (root with CAP_SYS_ADMIN)"))
    func aStartWhosePIDTheLiveRecordNamesLeavesThatPoolAlone() throws {
        let server = try TestServer(["--workers", "1"] + Self.framedEcho)
        defer { server.stop() }
        guard let (queues, workers) = Self.settledOneWorker(server) else { return }
        let statePath = server.socketPath + ".state"
        let text = try String(contentsOfFile: statePath, encoding: .utf8)
        #expect(text.contains("token="), "\(text)")
        let asPID1 = text.split(separator: "\n").map { $0.hasPrefix("pid=") ? "pid=1" : String($0) }.joined(separator: "\n") + "\n"
        try asPID1.write(toFile: statePath, atomically: true, encoding: .utf8)
        let result = try FramedSupport.runCommand("/usr/bin/unshare", ["--pid", "--fork", Binaries.path("pool-server"),
                                                                       "--socket", server.socketPath, "--workers", "1"] + Self.framedEcho)
        #expect(result.status == 2, "(\(result.status)) \(result.stdout) \(result.stderr)")
        #expect(result.stderr.contains("master pid 1 recorded in \(statePath) is running; refusing to start"), "\(result.stderr)")
        #expect(!result.stderr.contains("queues removed"), "\(result.stderr)")
        #expect(existingQueueIDs().isSuperset(of: queues), "the live pool's queues were removed")
        let client = try PoolClient(socketPath: server.socketPath, timeout: 30)
        #expect(try client.request("still served".bytes).body == "still served".bytes)
        client.close()
        kill(server.pid, SIGTERM)
        #expect(server.waitForExit() == 0, "\(server.log)")
        S.expectNothingLeft(socketPath: server.socketPath, queues: queues, workers: workers)
    }

    /// Root in a container without CAP_SYS_ADMIN has unshare but may not use it.
    static let canUnsharePIDNamespace = fileExists("/usr/bin/unshare")
        && (try? FramedSupport.runCommand("/usr/bin/unshare", ["--pid", "--fork", "/bin/true"], timeout: 10))?.status == 0

    /// The operator's connections do not count against --max-connections: with one allowed and a
    /// control connection held open, a client is still served (it used to get *busy*).
    @Test func controlConnectionsDoNotCountAgainstMaxConnections() throws {
        let server = try TestServer(["--workers", "1", "--max-connections", "1"] + Self.framedEcho)
        defer { server.stop() }
        let held = try SocketFD.unixStream(nonBlocking: false)
        var heldOpen = true
        defer { if heldOpen { held.close() } }
        try held.connect(path: server.socketPath + ".ctl")
        // Answered only after a loop turn that accepted every pending control connection.
        #expect(S.status(server.socketPath) != nil)
        let reply = try PoolClient(socketPath: server.socketPath).request(Array("served".utf8))
        #expect(reply.statusByte == 0 && Self.text(reply.body) == "served", "\(reply)")
        held.close()
        heldOpen = false
        S.expectCleanExit(server)
    }

    /// Sends `bytes` on a fresh control connection, half-closes it, and reads the answer to EOF.
    private static func controlExchange(_ server: TestServer, _ bytes: [UInt8]) throws -> String {
        let socket = try connectBlocking(path: server.socketPath + ".ctl", timeout: 10)
        defer { socket.close() }
        try bytes.withUnsafeBytes { try socket.writeAll($0) }
        try? socket.shutdownWrite()
        var answer: [UInt8] = []
        while case .success(let chunk) = receiveChunk(socket.raw) { answer += chunk }
        return text(answer)
    }

    /// A command line past 1023 bytes is refused whole: cut at the limit, `scale 1` followed by
    /// padding used to run as `scale 1`.
    @Test func overlongControlLineIsRefusedNotCut() throws {
        let server = try TestServer(["--workers", "2"] + Self.framedEcho)
        defer { server.stop() }
        #expect(S.waitForWorkerCount(server, 2) != nil, "\(server.log)")
        let padded = Array("scale 1".utf8) + [UInt8](repeating: 0x20, count: 1100) + [0x0A]
        let answer = try Self.controlExchange(server, padded)
        #expect(answer.hasPrefix("error: command line longer than 1023 bytes"), "\(answer.debugDescription)")
        // Exactly at the limit (1023 bytes and the newline) still runs.
        let fits = Array("status json".utf8) + [UInt8](repeating: 0x20, count: 1023 - 11) + [0x0A]
        #expect(try Self.controlExchange(server, fits).hasPrefix("{"))
        // Ended by EOF without a newline (a client killed mid-write): `status` runs, a command
        // that changes the pool does not.
        #expect(try Self.controlExchange(server, Array("status json".utf8)).hasPrefix("{"))
        let cut = try Self.controlExchange(server, Array("scale 1".utf8))
        #expect(cut.hasPrefix("error: a command that changes the pool must end with a newline"), "\(cut.debugDescription)")
        // Had it run, it ran in the turn that answered: a retiring slot (not settled) and its line.
        let after = S.status(server.socketPath)
        #expect(after?.workers.count == 2 && after?.settled == true, "the cut-short command ran: \(String(describing: after?.workers))")
        #expect(server.logLines(containing: "scale down").isEmpty, "the cut-short command ran")
        S.expectCleanExit(server)
    }

    /// A control connection that sends nothing is closed after --control-timeout, though clients
    /// may idle for far longer (--idle-timeout 600): a hung script holds one of the 64 that long
    /// at most. A silent client connection opened with it is still open.
    @Test func silentControlConnectionsCloseAfterTheControlTimeout() throws {
        let server = try TestServer(["--workers", "1", "--idle-timeout", "600", "--control-timeout", "1"])
        defer { server.stop() }
        let client = try FramedSupport.RawConnection(path: server.socketPath, timeout: 30)
        defer { client.close() }
        let control = try SocketFD.unixStream(nonBlocking: false)
        defer { control.close() }
        // Timed from before the connect: the master's idle clock starts at its accept.
        let start = monotonicNanoseconds()
        try control.connect(path: server.socketPath + ".ctl")
        try control.setReceiveTimeout(seconds: 20)
        var byte: UInt8 = 0
        let n = read(control.raw, &byte, 1)
        let waited = Double(monotonicNanoseconds() - start) / 1e9
        #expect(n == 0, "the control connection was not closed within 20 s (read \(n))")
        #expect(waited >= 0.99, "closed after \(waited) s, before --control-timeout 1")
        var probe = pollfd(fd: client.fd.raw, events: Int16(POLLIN), revents: 0)
        #expect(poll(&probe, 1, 0) == 0, "the silent client connection was closed too")
        S.expectCleanExit(server)
    }

    /// A --queue-bytes the kernel does not grant (raising a queue above msgmnb needs
    /// CAP_SYS_RESOURCE) is said at warning level: the operator asked for it. The default's 1 MiB
    /// falls back at info level. (Where the capability is held, both are granted: then the
    /// queue's own capacity shows it.)
    @Test func anUngrantedQueueSizeIsAWarningWhenAskedFor() throws {
        let wanted = 1 << 20
        for asked in [true, false] {
            let server = try TestServer(["--workers", "1"] + (asked ? ["--queue-bytes", "\(wanted)"] : []))
            defer { server.stop() }
            let capacity = try MessageQueue(id: try #require(server.queueIDs.first)).status().capacityBytes
            let line = server.logLines(containing: "queue capacity stays").first
            if capacity == wanted {
                #expect(line == nil, "\(server.log)")
            } else {
                let level = try #require(line, "capacity \(capacity) without a log line:\n\(server.log)")
                #expect(level.contains(asked ? " warning " : " info "), "\(level)")
            }
            S.expectCleanExit(server)
        }
    }

    /// Control connections are capped (64 open at once): the next one is told so and closed, and
    /// the socket serves again once they go.
    @Test func controlConnectionsAreCapped() throws {
        let server = try TestServer(["--workers", "1", "--idle-timeout", "60"] + Self.framedEcho)
        defer { server.stop() }
        var held: [SocketFD] = []
        defer { for socket in held { socket.close() } }
        for _ in 0..<64 { held.append(try connectBlocking(path: server.socketPath + ".ctl", timeout: 10)) }
        // The master accepts them on its next turns; the 65th is then over the cap.
        var answer = ""
        let refused = waitUntil(timeout: 20) {
            answer = (try? Self.controlExchange(server, Array("status\n".utf8))) ?? ""
            return answer.hasPrefix("error: too many control connections (64)")
        }
        #expect(refused, "65th control connection: \(answer.debugDescription)")
        // The CLI reads that answer (the master closes before reading its line) and fails with it.
        let cli = try S.poolServer(["status", "--socket", server.socketPath], timeout: 30)
        #expect(cli.status == 1 && cli.stderr.contains("too many control connections (64)"), "\(cli)")
        for socket in held { socket.close() }
        held = []
        #expect(waitUntil(timeout: 20) { S.status(server.socketPath) != nil }, "no status after the held connections closed")
        S.expectCleanExit(server)

        // The cap is --max-control-connections.
        let small = try TestServer(["--workers", "1", "--max-control-connections", "2"] + Self.framedEcho)
        defer { small.stop() }
        for _ in 0..<2 { held.append(try connectBlocking(path: small.socketPath + ".ctl", timeout: 10)) }
        let refusedSmall = waitUntil(timeout: 20) {
            answer = (try? Self.controlExchange(small, Array("status\n".utf8))) ?? ""
            return answer.hasPrefix("error: too many control connections (2)")
        }
        #expect(refusedSmall, "3rd control connection with a cap of 2: \(answer.debugDescription)")
        for socket in held { socket.close() }
        held = []
        S.expectCleanExit(small)
    }

    /// What a pool of one worker owns once that worker has settled (for the checks after its
    /// stop); nil, with the issue recorded, if it never does.
    static func settledOneWorker(_ server: TestServer) -> (queues: Set<Int32>, workers: Set<pid_t>)? {
        guard S.waitForWorkerCount(server, 1) != nil else {
            Issue.record("the pool never had a settled worker:\n\(server.log)")
            return nil
        }
        return S.owned(server)
    }

    /// `stop` on the control socket is answered (`ok stopping`) before that connection closes.
    @Test func controlStopIsAnswered() throws {
        let server = try TestServer(["--workers", "1"] + Self.framedEcho)
        defer { server.stop() }
        guard let (queues, workers) = Self.settledOneWorker(server) else { return }
        let answer = try ControlClient.send("stop", controlSocket: server.socketPath + ".ctl")
        #expect(answer == "ok stopping\n", "\(answer.debugDescription)")
        #expect(server.waitForExit(timeout: 20) == 0, "\(server.log)")
        S.expectNothingLeft(socketPath: server.socketPath, queues: queues, workers: workers)
        server.stop()
    }

    /// A control answer cut short (the master died mid-answer) is a failure, not a half-read
    /// "ok": a stand-in master answers `ok stop` without its newline and closes.
    @Test func aControlAnswerCutShortFails() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/pool.sock"
        let listener = try SocketFD.unixStream(nonBlocking: false)
        defer { listener.close() }
        try listener.bind(path: socket + ".ctl")
        try listener.listen(backlog: 4)
        try listener.setReceiveTimeout(seconds: 30)
        let served = DispatchSemaphore(value: 0)
        let thread = Thread {
            defer { served.signal() }
            guard let client = try? listener.accept() else { return }
            defer { client.close() }
            try? client.setReceiveTimeout(seconds: 10)
            var line = [UInt8](repeating: 0, count: 64)
            _ = try? line.withUnsafeMutableBytes { try client.read(into: $0) }
            _ = try? Array("ok stop".utf8).withUnsafeBytes { try client.writeAll($0) }
        }
        thread.start()
        let result = try S.poolServer(["stop", "--socket", socket, "--timeout", "20"], timeout: 60)
        served.wait()
        #expect(!result.timedOut && result.status == 1, "status \(result.status): \(result.stderr)")
        #expect(result.stderr.contains("cut short after 7 bytes"), "\(result.stderr)")
    }

    @Test func subcommandsWithoutAServerFailWithAReason() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/none.sock"
        for arguments in [["status"], ["stop"], ["reload"], ["scale", "2"]] {
            // The command line was right, the server is not there: a failure (1), not a usage
            // error (64), and no usage text.
            let result = try S.poolServer(arguments + ["--socket", socket], timeout: 30)
            #expect(!result.timedOut && result.status == 1, "\(arguments): status \(result.status)")
            #expect(result.stderr.contains("cannot reach") && !result.stderr.contains("Usage:"), "\(arguments): \(result.stderr)")
        }
        let zero = try S.poolServer(["scale", "0", "--socket", socket], timeout: 30)
        #expect(zero.status == 64 && zero.stderr.contains("at least 1"), "\(zero.stderr)")
        let format = try S.poolServer(["status", "--format", "xml", "--socket", socket], timeout: 30)
        #expect(format.status == 64 && format.stderr.contains("--format"), "\(format.stderr)")
        let timeout = try S.poolServer(["status", "--timeout", "0", "--socket", socket], timeout: 30)
        #expect(timeout.status == 64 && timeout.stderr.contains("--timeout"), "\(timeout.stderr)")
        // An empty uid list would let nobody in: refused before anything starts.
        let uids = try S.poolServer(["--allow-uid", ",", "--socket", socket], timeout: 30)
        #expect(uids.status == 64 && uids.stderr.contains("--allow-uid"), "\(uids.stderr)")
        #expect(!fileExists(socket))
        // Seconds past 10⁸ would trap converting to integers: refused, in the client and bench too.
        let client = try FramedSupport.runCommand(Binaries.path("pool-client"), ["--socket", socket, "--timeout", "1e19", "x"])
        #expect(client.status == 64 && client.stderr.contains("at most 1e8"), "\(client.stderr)")
        // A second --config would be ignored: refused.
        let configs = try S.poolServer(["--config", "/dev/null", "--config=/dev/null", "--socket", socket], timeout: 30)
        #expect(configs.status == 64 && configs.stderr.contains("--config given more than once"), "\(configs.stderr)")
        #expect(!fileExists(socket))
        // The buffers' bound counts the --skew payload (the plain payload alone is within it).
        for flag in [["--timeout", "inf"], ["--duration", "2e10"], ["--warmup", "inf"], ["--idle-connections", "1000001"],
                     ["--depth", "65536", "--payload", "1073741823", "--protocol", "framed"],
                     ["--connections", "1000", "--depth", "65536", "--protocol", "framed",
                      "--skew", "1:" + String(repeating: "x", count: 100)]] {
            let bench = try FramedSupport.runCommand(Binaries.path("pool-bench"), ["--socket", socket] + flag)
            #expect(bench.status == 64 && bench.stderr.contains(flag[0]), "\(flag): \(bench.stderr)")
        }
    }

    /// With --user the root master opens --log-file following no symlink and taking no regular
    /// file with more than one link: were the log's directory writable by the workers' user, a
    /// name it replaced with a link to a system file would have the master append to that file.
    /// Both are refused at start (exit 2); the file they lead to is left untouched.
    @Test func withUserTheLogFileIsNotALink() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let target = directory + "/system-file"
        try Data("precious\n".utf8).write(to: URL(fileURLWithPath: target))
        try #require(symlink(target, directory + "/symlinked.log") == 0 && link(target, directory + "/linked.log") == 0)
        for (name, reason) in [("symlinked.log", "symbolic links"), ("linked.log", "one link")] {
            let socket = directory + "/pool.sock"
            let result = try S.poolServer(["--socket", socket, "--user", "nobody", "--log-file", directory + "/" + name], timeout: 30)
            #expect(!result.timedOut && result.status == 2, "\(name): status \(result.status): \(result.stderr)")
            #expect(result.stderr.contains("--log-file") && result.stderr.contains(reason), "\(name): \(result.stderr)")
            #expect(!FileManager.default.fileExists(atPath: socket))
        }
        #expect((try? String(contentsOfFile: target, encoding: .utf8)) == "precious\n")
    }

    /// With `--user`, a FIFO without a reader at the log's name (planted by the workers' user,
    /// where the directory lets it) fails the start at once (exit 2) instead of holding it in a
    /// blocking open for good.
    @Test(.enabled(if: getuid() == 0 && getpwnam("nobody") != nil, "needs root and a user named nobody"))
    func withUserALogFIFOWithoutReaderFailsTheStart() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let fifo = directory + "/pool.log"
        try #require(mkfifo(fifo, 0o600) == 0)
        let socket = directory + "/pool.sock"
        let result = try S.poolServer(["--socket", socket, "--user", "nobody", "--log-file", fifo], timeout: 20)
        #expect(!result.timedOut && result.status == 2, "status \(result.status), timed out \(result.timedOut): \(result.stderr)")
        #expect(result.stderr.contains("--log-file"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: socket) && !FileManager.default.fileExists(atPath: socket + ".state"))
    }

    /// A log file that cannot be opened is a resource the server cannot get, like its socket:
    /// exit 2 with the reason, and nothing created.
    @Test func unopenableLogFileStopsTheStartWithExit2() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let socket = directory + "/pool.sock"
        let result = try S.poolServer(["--socket", socket, "--log-file", directory + "/missing-dir/pool.log"], timeout: 30)
        #expect(!result.timedOut && result.status == 2, "status \(result.status): \(result.stderr)")
        #expect(result.stderr.contains("--log-file") && result.stderr.contains("No such file"), "\(result.stderr)")
        #expect(!FileManager.default.fileExists(atPath: socket) && !FileManager.default.fileExists(atPath: socket + ".state"))
    }
}
