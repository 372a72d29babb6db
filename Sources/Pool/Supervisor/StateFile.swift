import CSysV
import Glibc

/// What a running master records beside its socket so that, if it is SIGKILLed, the next start
/// (or `pool-server cleanup`) can remove the queues it left: System V queues outlive processes.
///
/// Format: one `key=value` per line — `pid`, `start` (the master's start time), `token` (random,
/// per run), `uid`, `socket`, `activated=1` when the socket came from systemd, and one
/// `queue=ID:CTIME` per queue (CTIME is the queue's `msg_ctime`, which tells a reused id
/// from ours).
public struct PoolState: Equatable, Sendable {
    /// The master's process id; while it runs a pool master, recovery touches nothing.
    public var pid: pid_t
    /// When that process started (field 22 of `/proc/PID/stat`, clock ticks since boot): with the
    /// pid it names one process, so a recycled pid is told from the master whatever the names.
    /// `nil` in a file written before this was recorded.
    public var startTime: UInt64?
    /// Random, drawn once per master process: how a master knows its own record. Its pid cannot
    /// say so: masters in two pid namespaces that share the IPC namespace and the socket's
    /// directory (two containers) may both be pid 1. `nil` in a file written before this existed.
    public var token: String?
    /// The user id the master ran as (`getuid()`).
    public var uid: uid_t
    /// The listening socket the master served (`--socket`).
    public var socketPath: String
    /// The socket was passed by systemd (socket activation): it is systemd's, so recovery neither
    /// probes it (a connect would start the service) nor unlinks it.
    public var socketActivated = false
    /// Every queue the master created: its id and its `msg_ctime` (seconds since the epoch),
    /// which tells our queue from a newer one that reused the id.
    public var queues: [(id: Int32, changeTime: Int)]

    /// Creates the record of a master's pid, uid, socket and queues.
    public init(pid: pid_t, startTime: UInt64? = nil, token: String? = nil, uid: uid_t, socketPath: String,
                queues: [(id: Int32, changeTime: Int)]) {
        self.pid = pid
        self.startTime = startTime
        self.token = token
        self.uid = uid
        self.socketPath = socketPath
        self.queues = queues
    }

    /// Field-by-field equality (spelled out because tuples, as in `queues`, are not `Equatable`).
    public static func == (a: PoolState, b: PoolState) -> Bool {
        a.pid == b.pid && a.startTime == b.startTime && a.token == b.token && a.uid == b.uid && a.socketPath == b.socketPath
            && a.socketActivated == b.socketActivated
            && a.queues.map(\.id) == b.queues.map(\.id) && a.queues.map(\.changeTime) == b.queues.map(\.changeTime)
    }

    /// This process's token (`token`), drawn at its first use.
    public static let ownToken: String = {
        var generator = SystemRandomNumberGenerator()
        let value = generator.next() as UInt64
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }()

    /// Whether this process wrote the record (its token; a record without one is another's).
    public var isOwn: Bool { token == Self.ownToken }

    /// The state file used for a socket when `--state-file` is not given.
    public static func defaultPath(forSocket socket: String) -> String { socket + ".state" }

    /// The file's text: `pid=`, `start=`, `uid=` and `socket=` lines, then one `queue=ID:CTIME`
    /// line per queue.
    public func encoded() -> String {
        var text = "pid=\(pid)\n"
        if let startTime { text += "start=\(startTime)\n" }
        if let token { text += "token=\(token)\n" }
        text += "uid=\(uid)\nsocket=\(socketPath)\n"
        if socketActivated { text += "activated=1\n" }
        for queue in queues { text += "queue=\(queue.id):\(queue.changeTime)\n" }
        return text
    }

    /// Parses text written by `encoded()`; `nil` if `pid` or `uid` is missing or a `queue` line is
    /// malformed. Unknown keys are ignored.
    public static func decode(_ text: String) -> PoolState? {
        var pid: pid_t?, startTime: UInt64?, token: String?, uid: uid_t?, socket = "", activated = false
        var queues: [(id: Int32, changeTime: Int)] = []
        for line in text.split(separator: "\n") {
            guard let eq = line.firstIndex(of: "=") else { continue }
            let key = line[..<eq], value = line[line.index(after: eq)...]
            switch key {
            case "pid": pid = pid_t(value)
            case "start": startTime = UInt64(value)
            case "token": token = String(value)
            case "uid": uid = uid_t(value)
            case "socket": socket = String(value)
            case "activated": activated = value == "1"
            case "queue":
                let parts = value.split(separator: ":")
                guard parts.count == 2, let id = Int32(parts[0]), let time = Int(parts[1]) else { return nil }
                queues.append((id, time))
            default: continue
            }
        }
        guard let pid, let uid else { return nil }
        var state = PoolState(pid: pid, startTime: startTime, token: token, uid: uid, socketPath: socket, queues: queues)
        state.socketActivated = activated
        return state
    }

    /// Writes the file atomically (`writeFileAtomically`), readable by its owner only.
    public func write(to path: String) throws {
        try writeFileAtomically(encoded(), to: path, mode: 0o600)
    }

    /// The largest state file read: 1024 slots' queues take about 28 KiB.
    static let maxFileBytes = 1 << 20

    /// Reads and decodes the state file at `path`; `nil` if it is missing, unreadable, malformed,
    /// or not a regular file (read as `readWrittenFile` reads: a FIFO or a symlink planted there
    /// neither blocks nor redirects the read).
    public static func read(from path: String) -> PoolState? {
        readFile(from: path)?.state
    }

    /// The state, the file's text (to tell later whether the file is still this one) and owner.
    static func readFile(from path: String) -> (state: PoolState, text: [UInt8], owner: uid_t)? {
        guard let (bytes, owner) = readWrittenFile(path, limit: maxFileBytes),
              let state = decode(String(decoding: bytes, as: UTF8.self)) else { return nil }
        return (state, bytes, owner)
    }
}

/// What a stale-state recovery found and did.
public struct RecoveryReport: Sendable {
    /// The recorded master is still running: nothing was touched.
    public var liveMaster: pid_t?
    /// Ids of the dead master's queues that were removed.
    public var removedQueues: [Int32] = []
    /// Recorded queues left alone: gone already, or no longer ours (reused id, other owner).
    public var skippedQueues: [(id: Int32, reason: String)] = []
    /// A stale listening socket (nobody accepting on it) was unlinked.
    public var removedSocket = false
    /// A stale control socket (`<socket>.ctl`) was unlinked.
    public var removedControlSocket = false
    /// The state file was unlinked.
    public var removedStateFile = false
    /// Why the stale-socket checks ran without the lock on the socket's directory, if they did
    /// (see `DirectoryLock`): a master starting beside this one could lose its socket to them.
    public var unlockedSocketCheck: String?
    /// Why the state file was left in place, when it was: queues it records could not be removed
    /// (it still names them for a later try), or it was not its recorded user's to trust.
    public var keptStateFile: String?

    /// Nothing was removed (skipped queues and a live master do not count).
    public var isEmpty: Bool { removedQueues.isEmpty && !removedSocket && !removedControlSocket && !removedStateFile }

    /// One human-readable line per action, as `pool-server cleanup` prints them; a single refusal
    /// line when the recorded master is alive.
    public var lines: [String] {
        if let liveMaster { return ["master pid \(liveMaster) is running; nothing removed (stop it first)"] }
        var out = removedQueues.map { "removed queue \($0)" }
        out += skippedQueues.map { "left queue \($0.id) alone: \($0.reason)" }
        if removedSocket { out.append("removed stale socket") }
        if removedControlSocket { out.append("removed stale control socket") }
        if removedStateFile { out.append("removed state file") }
        if let keptStateFile { out.append("kept state file: \(keptStateFile)") }
        return out
    }
}

/// Removes what a dead master left: its queues (only those still matching the recorded id and
/// creation time and created by the recorded master's uid), its stale socket (only if nobody
/// listens), its state file (only once nothing it records is left to remove). Does nothing if the
/// recorded master is alive.
///
/// With `probeSocket` false (socket activation: the socket is systemd's and already listening) the
/// socket is neither probed nor unlinked — a probe would even queue a phantom connection.
public func recoverStaleState(statePath: String, socketPath: String, probeSocket: Bool = true) -> RecoveryReport {
    let controlPath = socketPath + ".ctl"
    var report = RecoveryReport()
    // One reading decides everything: read twice, a record a master starting now wrote in between
    // would be taken for the dead one's, and its live queues removed.
    let file = PoolState.readFile(from: statePath)
    // Its own control socket too, when it recorded another socket than the one given: a master
    // in another pid namespace is known alive by that alone.
    func recordedControlAnswers(_ state: PoolState) -> Bool {
        !state.socketPath.isEmpty && state.socketPath != socketPath && probeSocketPath(state.socketPath + ".ctl") == .live
    }
    if let state = file?.state, !state.isOwn,
       isRecordedMaster(state, controlSocket: controlPath) || recordedControlAnswers(state) {
        report.liveMaster = state.pid
        return report
    }
    if file == nil, let problem = unreadableStateFile(statePath) {
        // Not read is not absent: another user's record (root's, 0600) may be the only record of
        // a live pool's queues, or of leaked ones. Replaced by ours, they could never be found.
        report.keptStateFile = "cannot be read (\(problem)); its queues, if any, left alone"
    }
    if let (state, text, owner) = file {
        var left = 0
        if owner != state.uid {
            // Its master writes it as itself: a record of uid N in another user's file is not to
            // be trusted with uid N's queues (root's cleanup would remove them on its word).
            report.keptStateFile = "owned by uid \(owner), not by the uid it records (\(state.uid)); its queues left alone"
        } else {
            left = removeRecordedQueues(of: state, into: &report)
            if left > 0 {
                report.keptStateFile = "\(left) of its queues could not be removed (run cleanup as their creator, uid \(state.uid), or root)"
            } else {
                // Only if still the file read above: a master starting now may have claimed the path.
                report.removedStateFile = unlinkIfUnchanged(statePath, text: text)
            }
        }
    }
    // Temporaries of the atomic writer left by a master killed between its open and rename.
    removeAbandonedTemporaries(of: statePath)
    if probeSocket && !(file?.state.socketActivated ?? false) {
        report.removedSocket = unlinkIfStale(socketPath, unlocked: &report.unlockedSocketCheck)
    }
    // The control socket is always ours (never passed by systemd).
    report.removedControlSocket = unlinkIfStale(controlPath, unlocked: &report.unlockedSocketCheck)
    return report
}

/// Removes the queues a dead master's record names — only those still matching the recorded id
/// and creation time and created by the recorded uid — noting each in `report`; returns how many
/// matched but could not be removed.
func removeRecordedQueues(of state: PoolState, into report: inout RecoveryReport) -> Int {
    var left = 0
    for queue in state.queues {
        guard let status = try? MessageQueue(id: queue.id).status() else {
            report.skippedQueues.append((queue.id, "already gone"))
            continue
        }
        // The creator, not the owner: a pool whose workers run as another user (--user)
        // gave its queues to that user. Root (`sudo pool-server cleanup`) may remove the
        // queues of a master that ran as anyone.
        guard status.creatorUID == state.uid else {
            report.skippedQueues.append((queue.id, "created by uid \(status.creatorUID), not the recorded master's uid \(state.uid)"))
            continue
        }
        guard status.changeTime == queue.changeTime else {
            report.skippedQueues.append((queue.id, "id reused by a newer queue"))
            continue
        }
        do {
            try MessageQueue(id: queue.id).remove()
            report.removedQueues.append(queue.id)
        } catch {
            report.skippedQueues.append((queue.id, "could not remove it: \(error)"))
            left += 1
        }
    }
    return left
}

/// Unlinks a socket file nobody listens on, under the lock a starting master holds from its
/// probe to its listen (`Listener.open`): between its bind and its listen a connect is refused,
/// and its socket would look stale. Without the lock (the directory unreadable, or held for
/// long) the check is made anyway, as before the lock existed, and `unlocked` says why.
private func unlinkIfStale(_ path: String, unlocked: inout String?) -> Bool {
    var reason = ""
    let lock = DirectoryLock.lock(directoryOf: path, timeout: 5, reason: &reason)
    defer { lock?.unlock() }
    if lock == nil { unlocked = reason }
    return probeSocketPath(path) == .stale && unlink(path) == 0
}

/// Unlinks the file at `path` only if it still holds `text`. Moved aside first and compared there:
/// a compare then an unlink left a window in which a starting master's new record could be the
/// one unlinked (its queues then unrecorded). A record found moved aside that is not `text` is
/// put back, unless a newer one has taken the path meanwhile (its writer's later word wins).
/// The aside name is the atomic writer's temporary, which a later cleanup removes if this
/// process dies holding it.
func unlinkIfUnchanged(_ path: String, text: [UInt8]) -> Bool {
    let aside = path + temporaryInfix + "\(getpid())"
    guard rename(path, aside) == 0 else { return false }
    if readWrittenFile(aside, limit: PoolState.maxFileBytes)?.bytes == text { return unlink(aside) == 0 }
    if csysv_rename_noreplace(aside, path) != 0 {
        // EEXIST: a later record took the path, superseding this one as its rename would have.
        // Anything else (a file system without either way to refuse): put back all the same.
        if errno == EEXIST { unlink(aside) } else { rename(aside, path) }
    }
    return false
}

/// Removes `<path>.tmp.<pid>` files (`writeFileAtomically`'s) whose writer no longer runs.
func removeAbandonedTemporaries(of path: String) {
    let (directory, target) = splitPath(path)
    let prefix = target + temporaryInfix
    guard let dir = opendir(directory) else { return }
    defer { closedir(dir) }
    while let entry = readdir(dir) {
        let entryName = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
        guard entryName.hasPrefix(prefix), let pid = pid_t(entryName.dropFirst(prefix.count)), pid != getpid(),
              !processIsRunning(pid) else { continue }
        unlink(directory + "/" + entryName)
    }
}

/// Why a regular file at the state file's path could not be opened (`nil`: absent, not a regular
/// file, or opened fine). A file that is not a record (a FIFO, a directory, malformed or oversized
/// text) names no queue anyone could find; one the caller may not open (another user's, 0600)
/// may name live ones.
func unreadableStateFile(_ path: String) -> String? {
    var info = stat()
    guard lstat(path, &info) == 0 else { return errno == ENOENT ? nil : String(cString: strerror(errno)) }
    guard info.st_mode & S_IFMT == S_IFREG else { return nil }
    let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
    guard fd >= 0 else { return String(cString: strerror(errno)) }
    close(fd)
    return nil
}

/// The pid of another master recorded in the state file at `path` that still runs, if any.
func liveMasterRecorded(at path: String, socketPath: String) -> pid_t? {
    guard let state = PoolState.read(from: path), !state.isOwn,
          isRecordedMaster(state, controlSocket: socketPath + ".ctl") else { return nil }
    return state.pid
}

/// A start refused because the master recorded for the socket still runs.
func liveMasterError(_ pid: pid_t, socketPath: String, statePath: String) -> ConfigurationError {
    ConfigurationError("\(socketPath): master pid \(pid) recorded in \(statePath) is running; refusing to start")
}

/// Whether the recorded master still runs: the process with its pid is alive (not a zombie) and
/// started when it did, or its control socket answers. A recycled pid of another process does not
/// keep stale queues alive, and a master whose binary has another name than ours is still seen.
/// A record without a start time (an older master's) falls back to comparing process names.
/// The control socket: a master in another pid namespace (a container that shares this IPC
/// namespace and the socket's directory) has a pid that names nothing, or someone else, here —
/// judged by its pid alone, its live queues were removed. Only a running master listens there (a
/// starting one records itself before it binds; a stopping one closes it first).
func isRecordedMaster(_ state: PoolState, controlSocket: String) -> Bool {
    recordedPIDIsMaster(state) || probeSocketPath(controlSocket) == .live
}

func recordedPIDIsMaster(_ state: PoolState) -> Bool {
    // Our own pid under another token: a master of another pid namespace (both pid 1), or a
    // previous run of ours. This process says nothing about it: the control socket decides.
    if state.pid == getpid() && !state.isOwn { return false }
    // Running: alive (another user's too) and not a zombie, which is dead for our purposes.
    guard processIsRunning(state.pid) else { return false }
    // Alive by kill but no /proc to tell more (a chroot, a minimal container): taken as the master.
    // A recycled pid then keeps the leftovers until `cleanup` is run where /proc is; the other
    // way round, a live pool would lose its queues.
    guard let (_, started) = processStatus(state.pid) else { return true }
    if let recorded = state.startTime { return started == recorded }
    guard let name = readSmallFile("/proc/\(state.pid)/comm")?.trimmingWhitespace() else { return false }
    guard let own = readSmallFile("/proc/self/comm")?.trimmingWhitespace() else { return true }
    return name == own
}
