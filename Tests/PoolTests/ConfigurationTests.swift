import Foundation
import Glibc
import Pool
import Testing

/// `PoolConfiguration.validate`: what a start refuses before any worker, queue or socket exists.
@Suite struct ConfigurationTests {
    static let limits = QueueLimits.current()

    static func refusal(_ change: (inout PoolConfiguration) -> Void) -> String? {
        var configuration = PoolConfiguration()
        change(&configuration)
        do {
            _ = try configuration.validate(limits: limits)
            return nil
        } catch {
            return "\(error)"
        }
    }

    /// systemd's watchdog interval: longer than a day is pinged as if a day (it was taken as no
    /// watchdog, and systemd killed the service after `WatchdogSec=2d`); foreign or absent: none.
    @Test func watchdogIntervalsBeyondADayAreKept() {
        let day: Int64 = 86_400_000_000_000
        #expect(SystemdNotifier(environment: "/run/n", watchdogMicroseconds: "30000000", watchdogPID: nil).watchdogNanoseconds == 30_000_000_000)
        #expect(SystemdNotifier(environment: "/run/n", watchdogMicroseconds: "172800000000", watchdogPID: nil).watchdogNanoseconds == day)
        #expect(SystemdNotifier(environment: "/run/n", watchdogMicroseconds: "\(Int64.max)", watchdogPID: nil).watchdogNanoseconds == day)
        #expect(SystemdNotifier(environment: "/run/n", watchdogMicroseconds: "0", watchdogPID: nil).watchdogNanoseconds == nil)
        #expect(SystemdNotifier(environment: nil, watchdogMicroseconds: "30000000", watchdogPID: nil).watchdogNanoseconds == nil)
        #expect(SystemdNotifier(environment: "/run/n", watchdogMicroseconds: "30000000", watchdogPID: "1").watchdogNanoseconds == nil)
    }

    @Test func defaultsAreValid() {
        #expect(Self.refusal { _ in } == nil)
    }

    /// Deadlines are Int64 nanoseconds: a timeout beyond 10⁸ s, infinite or NaN is refused at
    /// start (each used to pass, then trap in the running master and leave its queues behind).
    @Test(arguments: [1e12, .infinity, .nan])
    func hugeOrNonFiniteTimeoutsAreRefused(seconds: Double) {
        let idle = Self.refusal { $0.idleTimeout = seconds }
        let shutdown = Self.refusal { $0.shutdownTimeout = seconds }
        let job = Self.refusal { $0.jobTimeout = seconds }
        for refusal in [idle, shutdown, job] {
            #expect(refusal?.contains("timeout") == true, "\(String(describing: refusal))")
        }
    }

    /// The scoreboard and inboxes are mapped for `maxWorkers` slots at start, so a larger pool is
    /// refused rather than writing past them.
    @Test func workerCountIsBoundedBySlots() {
        #expect(Self.refusal { $0.workers = PoolConfiguration.maxWorkers } == nil)
        for workers in [0, PoolConfiguration.maxWorkers + 1] {
            let refusal = Self.refusal { $0.workers = workers }
            #expect(refusal?.contains("--workers") == true, "\(workers): \(String(describing: refusal))")
        }
    }

    @Test func longestTimeoutIsAccepted() {
        #expect(Self.refusal {
            $0.idleTimeout = PoolConfiguration.longestTimeout
            $0.shutdownTimeout = PoolConfiguration.longestTimeout
            $0.jobTimeout = PoolConfiguration.longestTimeout
            $0.busyPoll = PoolConfiguration.longestBusyPoll
        } == nil)
    }

    /// The default reply ring follows a kernel that allows messages larger than 64 KiB (the ring
    /// must hold one), so the default server still starts there; an explicit size is checked.
    /// msgmax raised to 65536 with msgmnb left at 16384 and no CAP_SYS_RESOURCE: the queues get
    /// 16384 bytes and a message of msgmax would never fit, so the start is refused, naming msgmnb.
    @Test func queuesSmallerThanMsgmaxAreRefused() throws {
        let raised = QueueLimits(maxMessageBytes: 65_536, defaultQueueBytes: 16_384, maxQueues: 32_000)
        let error = #expect(throws: ConfigurationError.self) { try PoolConfiguration.checkQueueCapacity(16_384, limits: raised) }
        #expect(error?.description.contains("kernel.msgmnb") == true, "\(String(describing: error))")
        try PoolConfiguration.checkQueueCapacity(65_536, limits: raised)
        try PoolConfiguration.checkQueueCapacity(16_384, limits: QueueLimits(maxMessageBytes: 8192, defaultQueueBytes: 16_384, maxQueues: 32_000))
    }

    /// msgmax raised past 2³⁰ (its ceiling is 2³¹ − 1): the largest message stays below the
    /// framed protocol's 2³⁰, which it takes for another protocol's bytes — valid lengths up to
    /// msgmax would be answered *bad request*.
    @Test func theLargestMessageStaysBelowTheFramedGarbageLength() throws {
        let huge = QueueLimits(maxMessageBytes: Int(Int32.max), defaultQueueBytes: Int(Int32.max), maxQueues: 32_000)
        var configuration = PoolConfiguration()
        configuration.replyRingBytes = 0
        // Oneshot has no length field: only msgmax bounds it.
        #expect(try configuration.validate(limits: huge) == Int(Int32.max) - JobCodec.headerBytes)
        configuration.wireProtocol = .framed
        #expect(try configuration.validate(limits: huge) == Int(FrameCodec.garbageLength) - 1)
        configuration.maxMessage = Int(FrameCodec.garbageLength)
        let error = #expect(throws: ConfigurationError.self) { try configuration.validate(limits: huge) }
        #expect(error?.description.contains("2^30") == true, "\(String(describing: error))")
    }

    @Test func defaultReplyRingFitsTheLargestMessage() throws {
        let big = QueueLimits(maxMessageBytes: 100_000, defaultQueueBytes: 200_000, maxQueues: 32_000)
        let configuration = PoolConfiguration()
        #expect(throws: Never.self) { _ = try configuration.validate(limits: big) }
        #expect(configuration.effectiveReplyRingBytes(limits: big) == 100_032)
        #expect(configuration.effectiveReplyRingBytes(limits: Self.limits) == max(65_536, (Self.limits.maxMessageBytes + 63) / 64 * 64))
        var explicit = configuration
        explicit.replyRingBytes = 65_536
        #expect(throws: ConfigurationError.self) { _ = try explicit.validate(limits: big) }
        explicit.replyRingBytes = 0
        #expect(throws: Never.self) { _ = try explicit.validate(limits: big) }
        // Beyond the largest ring (16 MiB) the default is no ring, not a refusal.
        let huge = QueueLimits(maxMessageBytes: (1 << 24) + 1, defaultQueueBytes: 1 << 25, maxQueues: 32_000)
        #expect(configuration.effectiveReplyRingBytes(limits: huge) == 0)
        #expect(throws: Never.self) { _ = try configuration.validate(limits: huge) }
    }

    /// Each limit's refusal names its own flag.
    @Test func refusalsNameTheirFlag() {
        let cases: [(String, (inout PoolConfiguration) -> Void)] = [
            ("--max-inflight", { $0.maxInflight = 0 }),
            // The state file's record is line by line.
            ("--socket", { $0.socketPath = "p.sock\npid=1" }),
            ("--socket", { $0.socketPath = "p\t.sock" }),
            ("--max-connections", { $0.maxConnections = 0 }),
            ("--max-connections", { $0.maxConnections = PoolConfiguration.mostConnections + 1 }),
            ("--max-backlog", { $0.maxBacklog = -1 }),
            ("--shutdown-timeout", { $0.shutdownTimeout = -1 }),
            ("--idle-timeout", { $0.idleTimeout = 0 }),
            ("--listen-backlog", { $0.listenBacklog = 0 }),
            ("--busy-poll", { $0.busyPoll = -0.001 }),
            ("--busy-poll", { $0.busyPoll = PoolConfiguration.longestBusyPoll * 2 }),
            ("--busy-poll", { $0.busyPoll = .nan }),
            ("--max-jobs-jitter", { $0.maxJobsJitter = -1 }),
            ("--max-jobs-jitter", { $0.maxJobs = .max; $0.maxJobsJitter = 1 }),
            ("--max-jobs-jitter", { $0.maxJobs = nil; $0.maxJobsJitter = 5 }),
            ("--max-control-connections", { $0.maxControlConnections = 0 }),
            ("--max-control-connections", { $0.maxControlConnections = 1025 }),
            ("--control-timeout", { $0.controlTimeout = 0 }),
            // Other spellings of the same files (pool.sock is relative to the working directory).
            ("--pid-file", { $0.socketPath = "pool.sock"; $0.pidFile = "./pool.sock" }),
            ("--pid-file", { $0.socketPath = "pool.sock"; $0.pidFile = FileManager.default.currentDirectoryPath + "/pool.sock.ctl" }),
            ("--pid-file", { $0.socketPath = "/tmp/p.sock"; $0.pidFile = "/tmp/../tmp/p.sock.state" }),
            ("--state-file", { $0.socketPath = "pool.sock"; $0.stateFile = "./pool.sock.ctl" }),
            ("--slow-job", { $0.slowJob = 0 }),
            ("--slow-job", { $0.slowJob = .nan }),
            ("--slow-job", { $0.slowJob = 1e9 }),
        ]
        for (flag, change) in cases {
            let refusal = Self.refusal(change)
            #expect(refusal?.contains(flag) == true, "\(flag): \(String(describing: refusal))")
        }
    }

    /// A group number is taken as given, but for (gid_t)-1, which chown reads as "unchanged".
    @Test func groupMinusOneIsNoGroup() throws {
        #expect(try lookUpGroup("0", flag: "--socket-group") == 0)
        #expect(throws: ConfigurationError.self) { try lookUpGroup("\(gid_t.max)", flag: "--socket-group") }
    }

    /// `--user`/`--group` look names and numbers up in the user database; a number it does not
    /// know needs a group.
    @Test func workerUsersAreLookedUpByNameOrNumber() throws {
        let root = try WorkerUser.lookUp(user: "root", group: nil)
        #expect(root.uid == 0 && root.gid == 0 && root.name == "root")
        let byNumber = try WorkerUser.lookUp(user: "0", group: nil)
        #expect(byNumber == root)
        let unknown = "\(uid_t(Int32.max) - 7)"
        #expect(throws: ConfigurationError.self) { try WorkerUser.lookUp(user: unknown, group: nil) }
        let numbered = try WorkerUser.lookUp(user: unknown, group: "0")
        #expect(numbered.uid == uid_t(unknown) && numbered.gid == 0)
        #expect(throws: ConfigurationError.self) { try WorkerUser.lookUp(user: "no-such-user-for-pool-tests", group: nil) }
        #expect(throws: ConfigurationError.self) { try WorkerUser.lookUp(user: "root", group: "no-such-group-for-pool-tests") }
    }
}
