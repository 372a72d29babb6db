import Foundation
import Glibc
import Pool

/// A `pool-server` spawned as the leader of its own process group (posix_spawn with
/// POSIX_SPAWN_SETPGROUP), so a test can do what a terminal's Ctrl-C does: send SIGINT to the whole
/// group (master and workers) with `kill(-pgid, SIGINT)`, without ever signalling the test runner.
///
/// Like TestServer, `stop()` (or deinit) leaves nothing behind: processes, queues, files. Apart
/// from OperationsSupport.ActivatedServer (same posix_spawn launch): no inherited listener, and
/// its own process group.
final class ProcessGroupServer {
    let directory: String
    let socketPath: String
    let logPath: String
    let pid: pid_t
    private var status: Int32?
    private var stopped = false
    private var seenWorkers = Set<pid_t>()

    /// Starts `pool-server --socket <tmp>/pool.sock ARGUMENTS` in a new process group and waits
    /// for "pool started".
    init(_ arguments: [String] = []) throws {
        directory = makeTemporaryDirectory()
        socketPath = directory + "/pool.sock"
        logPath = directory + "/server.log"
        let argv = [Binaries.path("pool-server"), "--socket", socketPath] + arguments
        do {
            pid = try spawnLogged(argv, logPath: logPath, defaultSignals: [SIGINT, SIGTERM, SIGCHLD, SIGPIPE, SIGHUP, SIGQUIT],
                                  newProcessGroup: true)
        } catch {
            try? FileManager.default.removeItem(atPath: directory)
            throw error
        }
        try requirePoolStart("pool-server", log: { self.log }, isRunning: { self.isRunning }, stop: { self.stop() })
    }

    deinit { stop() }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Queue ids from the "pool started" line.
    var queueIDs: [Int32] { log.split(separator: "\n").first { $0.contains("pool started") }.map { startedQueueIDs(inLine: $0) } ?? [] }

    /// Live workers (children of the master), remembered for cleanup.
    var workerPIDs: [pid_t] {
        let workers = childPIDs(of: pid).filter(processIsAlive)
        seenWorkers.formUnion(workers)
        return workers
    }

    /// Process group of the server (its pid, if it is the group leader as it should be).
    var processGroup: pid_t { getpgid(pid) }

    /// Reaps the master if it has exited; true while it runs.
    var isRunning: Bool { childIsRunning(pid, status: &status) }

    /// Sends `signo` to the whole process group, as a terminal's Ctrl-C does. Refuses (returns
    /// false) unless the server really leads its own group, so the runner is never signalled.
    @discardableResult
    func signalGroup(_ signo: Int32) -> Bool {
        let group = getpgid(pid)
        guard group == pid, group != getpgrp() else { return false }
        return kill(-group, signo) == 0
    }

    /// Waits for the master to exit; returns its exit code (128 + signal if signalled), or nil on timeout.
    func waitForExit(timeout: Double = 20) -> Int32? {
        guard waitUntil(timeout: timeout, { !isRunning }) else { return nil }
        return status
    }

    func stop() {
        guard !stopped else { return }
        stopped = true
        let workers = seenWorkers.union(childPIDs(of: pid))
        // As TestServer.stop: the state file (read while it is this master's) names every queue,
        // the reply queue and scaled ones included; the log names those of a start cut short.
        let recorded = stateFilePID(stateFilePath) == pid ? stateFileQueueIDs(stateFilePath) : []
        let queues = Set(queueIDs).union(recorded).union(loggedQueueIDs(inLog: log))
        terminateGracefully(pid) { !isRunning }
        killLiving(workers)
        removeQueues(queues)
        try? FileManager.default.removeItem(atPath: directory)
    }
}
