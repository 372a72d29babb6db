import Foundation
import Glibc
import Pool

/// A `pool-server` spawned as the leader of its own process group (posix_spawn with
/// POSIX_SPAWN_SETPGROUP), so a test can do what a terminal's Ctrl-C does: send SIGINT to the whole
/// group (master and workers) with `kill(-pgid, SIGINT)`, without ever signalling the test runner.
///
/// Like TestServer, `stop()` (or deinit) leaves nothing behind: processes, queues, files.
final class ProcessGroupServer {
    let directory: String
    let socketPath: String
    let logPath: String
    let pid: pid_t
    private var status: Int32?
    private var stopped = false
    private var seenWorkers = Set<pid_t>()

    /// glibc's `posix_spawn_file_actions_addclosefrom_np` (2.34+), which Swift's Glibc module does
    /// not import (it is declared under __USE_MISC).
    private typealias AddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>, Int32) -> Int32
    private static let addCloseFrom: AddCloseFrom? = {
        guard let symbol = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np") else { return nil }
        return unsafeBitCast(symbol, to: AddCloseFrom.self)
    }()

    struct SpawnError: Error, CustomStringConvertible {
        let description: String
    }

    /// Starts `pool-server --socket <tmp>/pool.sock ARGUMENTS` in a new process group and waits
    /// for "pool started".
    init(_ arguments: [String] = []) throws {
        directory = makeTemporaryDirectory()
        socketPath = directory + "/pool.sock"
        logPath = directory + "/server.log"
        let executable = Binaries.path("pool-server")
        let argv = [executable, "--socket", socketPath] + arguments

        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, logPath, O_WRONLY | O_CREAT | O_APPEND, 0o644)
        posix_spawn_file_actions_adddup2(&actions, 1, 2)
        // Do not leak the runner's descriptors (e.g. Foundation's per-Process socketpairs, which
        // would keep another TestServer looking alive) into the server.
        if let closeFrom = Self.addCloseFrom { _ = closeFrom(&actions, 3) }

        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }
        var defaults = sigset_t()
        sigemptyset(&defaults)
        for signo in [SIGINT, SIGTERM, SIGCHLD, SIGPIPE, SIGHUP, SIGQUIT] { sigaddset(&defaults, signo) }
        posix_spawnattr_setsigdefault(&attributes, &defaults)
        var mask = sigset_t()
        sigemptyset(&mask)
        posix_spawnattr_setsigmask(&attributes, &mask)
        posix_spawnattr_setpgroup(&attributes, 0)
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGDEF | POSIX_SPAWN_SETSIGMASK))

        let cArguments: [UnsafeMutablePointer<CChar>?] = argv.map { strdup($0) } + [nil]
        defer { for pointer in cArguments { free(pointer) } }
        var child: pid_t = 0
        let rc = posix_spawn(&child, executable, &actions, &attributes, cArguments, environ)
        guard rc == 0 else {
            try? FileManager.default.removeItem(atPath: directory)
            throw SpawnError(description: "posix_spawn(\(executable)) failed: \(String(cString: strerror(rc)))")
        }
        pid = child

        let started = waitUntil(timeout: 20) { self.log.contains("pool started") || !self.isRunning }
        guard started, isRunning else {
            let output = log
            stop()
            throw SpawnError(description: "pool-server did not start:\n\(output)")
        }
    }

    deinit { stop() }

    var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Queue ids from the "pool started" line.
    var queueIDs: [Int32] {
        guard let line = log.split(separator: "\n").first(where: { $0.contains("pool started") }),
              let range = line.range(of: "queues=[") else { return [] }
        let rest = line[range.upperBound...].prefix { $0 != "]" }
        return rest.split(separator: ",").compactMap { Int32($0.trimmingCharacters(in: .whitespaces)) }
    }

    /// Live workers (children of the master), remembered for cleanup.
    var workerPIDs: [pid_t] {
        let workers = childPIDs(of: pid).filter(processIsAlive)
        seenWorkers.formUnion(workers)
        return workers
    }

    /// Process group of the server (its pid, if it is the group leader as it should be).
    var processGroup: pid_t { getpgid(pid) }

    /// Reaps the master if it has exited; true while it runs.
    var isRunning: Bool {
        if status != nil { return false }
        var raw: Int32 = 0
        let got = waitpid(pid, &raw, WNOHANG)
        if got == pid {
            // Exit code if it exited, 128 + signal if a signal killed it.
            status = (raw & 0x7f) == 0 ? (raw >> 8) & 0xff : 128 + (raw & 0x7f)
            return false
        }
        if got < 0 && errno == ECHILD { status = -1; return false }
        return true
    }

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
        let queues = queueIDs
        if isRunning {
            kill(pid, SIGTERM)
            if !waitUntil(timeout: 15, { !isRunning }) {
                kill(pid, SIGKILL)
                _ = waitUntil(timeout: 5) { !isRunning }
            }
        }
        for worker in workers where processIsAlive(worker) { kill(worker, SIGKILL) }
        let existing = existingQueueIDs()
        for id in queues where existing.contains(id) { _ = try? MessageQueue(id: id).remove() }
        try? FileManager.default.removeItem(atPath: directory)
    }
}
