import CSysV
import Foundation
import Glibc
@testable import Pool
import Testing

// Tests of the CSysV shim and the typed wrappers in Sources/Pool/System against the real kernel.
// Each System V queue created here is removed in a `defer` (see `withQueue`), so a failing
// expectation never leaks one. Nothing here forks: the test runner is multi-threaded.

// MARK: - Helpers

/// Creates a private queue, runs `body`, and removes the queue whatever happens; then checks that
/// the kernel no longer lists it.
private func withQueue<T>(mode: Int32 = 0o600, _ body: (MessageQueue) throws -> T) throws -> T {
    let queue = try MessageQueue.createPrivate(mode: mode)
    defer {
        _ = csysv_msgctl_remove(queue.id)
        #expect(!existingQueueIDs().contains(queue.id), "queue \(queue.id) was not removed")
    }
    return try body(queue)
}

/// Same for a queue created through the raw C call.
private func withRawQueue<T>(mode: Int32 = 0o600, _ body: (Int32) throws -> T) throws -> T {
    let qid = csysv_msgget_private(mode)
    guard qid >= 0 else { throw TestFailure("msgget failed: errno \(Glibc.errno)") }
    defer {
        _ = csysv_msgctl_remove(qid)
        #expect(!existingQueueIDs().contains(qid), "queue \(qid) was not removed")
    }
    return try body(qid)
}

/// A connected pair of blocking Unix stream sockets; the caller closes both.
private func socketPair() throws -> [Int32] {
    var fds: [Int32] = [-1, -1]
    guard socketpair(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0, &fds) == 0 else { throw TestFailure("socketpair failed: errno \(Glibc.errno)") }
    return fds
}

/// A raw `csysv_msgbuf`-shaped allocation with `capacity` bytes of text.
private final class RawMessage {
    let base: UnsafeMutableRawPointer
    let capacity: Int
    init(capacity: Int) {
        self.capacity = capacity
        base = .allocate(byteCount: Int(csysv_msg_header_size()) + capacity, alignment: 8)
    }
    deinit { base.deallocate() }
    var text: UnsafeMutableRawPointer { csysv_msg_text(base) }
    func set(_ bytes: [UInt8]) {
        precondition(bytes.count <= capacity)
        bytes.withUnsafeBytes { if $0.count > 0 { text.copyMemory(from: $0.baseAddress!, byteCount: $0.count) } }
    }
    func get(_ count: Int) -> [UInt8] { Array(UnsafeRawBufferPointer(start: text, count: count)) }
}

/// Deterministic, non-constant bytes (so a shifted or truncated copy would not compare equal).
private func pattern(_ count: Int, seed: UInt8 = 0) -> [UInt8] {
    (0..<count).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ Int(seed) &+ ($0 >> 8)) }
}

private func fill(_ buffer: MessageBuffer, _ bytes: [UInt8]) {
    precondition(bytes.count <= buffer.capacity)
    buffer.text.copyBytes(from: bytes)
}

private func received(_ buffer: MessageBuffer, _ length: Int) -> [UInt8] { Array(buffer.text[0..<length]) }

private func procInt(_ path: String) throws -> Int {
    let text = try String(contentsOfFile: path, encoding: .utf8)
    guard let value = Int(text.trimmingCharacters(in: .whitespacesAndNewlines)) else {
        throw TestFailure("\(path): not an integer: \(text)")
    }
    return value
}

/// Expects `body` to throw a `SystemError` naming `call` with one of `errnos`.
@discardableResult
private func expectSystemError<T>(
    _ call: String, _ errnos: Set<Int32>, sourceLocation: SourceLocation = #_sourceLocation,
    _ body: () throws -> T
) -> SystemError? {
    do {
        let value = try body()
        Issue.record("expected \(call) to fail with errno in \(errnos.sorted()), got \(value)", sourceLocation: sourceLocation)
        return nil
    } catch let error as SystemError {
        #expect(error.call == call, "\(error)", sourceLocation: sourceLocation)
        #expect(errnos.contains(error.errno.rawValue), "\(error)", sourceLocation: sourceLocation)
        return error
    } catch {
        Issue.record("expected a SystemError, got \(error)", sourceLocation: sourceLocation)
        return nil
    }
}

/// Result slot written by a helper thread.
private final class ThreadResult: @unchecked Sendable {
    private let lock = NSLock()
    private var value: Result<(type: Int, length: Int)?, any Error>?
    func set(_ v: Result<(type: Int, length: Int)?, any Error>) { lock.lock(); value = v; lock.unlock() }
    func get() -> Result<(type: Int, length: Int)?, any Error>? { lock.lock(); defer { lock.unlock() }; return value }
}

/// The msgrcv syscall number, to recognise a thread blocked in it through /proc/self/task/*/syscall.
private let msgrcvSyscallNumber: Int? = {
    #if arch(x86_64)
    return 70
    #elseif arch(arm64)
    return 188
    #else
    return nil
    #endif
}()

/// True if some thread of this process is blocked in msgrcv on queue `qid`.
private func someThreadIsBlockedInMsgrcv(on qid: Int32) -> Bool {
    guard let number = msgrcvSyscallNumber,
          let tasks = try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task") else { return false }
    for task in tasks {
        guard let text = try? String(contentsOfFile: "/proc/self/task/\(task)/syscall", encoding: .utf8) else { continue }
        let fields = text.split(separator: " ")
        guard fields.count > 1, Int(fields[0]) == number else { continue }
        if fields[1] == "0x" + String(qid, radix: 16) { return true }
    }
    return false
}

/// Runs `raise(signo)` `times` times on a new thread that first calls `Signals.unblockAll()`.
/// Returns the thread's blocked mask after unblocking (nil if unreadable) and raise's results.
private func raiseInUnblockedThread(_ signo: Int32, times: Int) -> (blockedAfterUnblock: UInt64?, results: [Int32]) {
    final class Box: @unchecked Sendable {
        var blocked: UInt64?
        var results: [Int32] = []
        let done = DispatchSemaphore(value: 0)
    }
    let box = Box()
    let thread = Thread {
        Signals.unblockAll()
        box.blocked = currentThreadBlockedSignals()
        for _ in 0..<times { box.results.append(raise(signo)) }
        box.done.signal()
    }
    thread.start()
    if box.done.wait(timeout: .now() + 10) == .timedOut {
        Issue.record("signal thread did not finish")
        return (nil, [])
    }
    return (box.blocked, box.results)
}

/// The calling thread's blocked-signal mask, from /proc/thread-self/status.
private func currentThreadBlockedSignals() -> UInt64? {
    guard let text = try? String(contentsOfFile: "/proc/thread-self/status", encoding: .utf8),
          let line = text.split(separator: "\n").first(where: { $0.hasPrefix("SigBlk:") }) else { return nil }
    return UInt64(line.dropFirst("SigBlk:".count).trimmingCharacters(in: .whitespaces), radix: 16)
}

// MARK: - Tests

@Suite(.serialized) struct ShimTests {
    // MARK: Creation, ownership, limits

    @Test func privateQueueHasMode0600AndOurUID() throws {
        try withQueue { queue throws in
            let status = try queue.status()
            #expect(status.mode == 0o600)
            #expect(status.uid == getuid())
            #expect(status.messages == 0)
            #expect(status.bytes == 0)
            #expect(status.capacityBytes == (try procInt("/proc/sys/kernel/msgmnb")))
            #expect(existingQueueIDs().contains(queue.id))
        }
        try withQueue(mode: 0o640) { queue throws in
            #expect(try queue.status().mode == 0o640)
        }
        // Raw: msgget(IPC_PRIVATE) + IPC_STAT; only the permission bits of `mode` are used.
        try withRawQueue(mode: 0o7600) { qid throws in
            var info = csysv_msqinfo()
            #expect(csysv_msgctl_stat(qid, &info) == 0)
            #expect(info.mode == 0o600)
            #expect(info.uid == getuid())
            #expect(info.messages == 0 && info.bytes == 0)
        }
        // Two private queues are distinct.
        try withQueue { a throws in try withQueue { b throws in #expect(a.id != b.id) } }
    }

    @Test func queueLimitsMatchProc() throws {
        let limits = QueueLimits.current()
        #expect(limits.maxMessageBytes == (try procInt("/proc/sys/kernel/msgmax")))
        #expect(limits.defaultQueueBytes == (try procInt("/proc/sys/kernel/msgmnb")))
        #expect(limits.maxQueues == (try procInt("/proc/sys/kernel/msgmni")))
        #expect(Int(csysv_msg_header_size()) == MemoryLayout<Int>.size)
    }

    // MARK: Round trips

    @Test func roundTripThroughWrapperIncludingEmptyAndMsgmax() throws {
        let msgmax = try procInt("/proc/sys/kernel/msgmax")
        try withQueue { queue throws in
            let out = MessageBuffer(capacity: msgmax)
            let inb = MessageBuffer(capacity: msgmax)
            for (index, size) in [0, 1, 7, 4096, msgmax - 1, msgmax].enumerated() {
                let bytes = pattern(size, seed: UInt8(index))
                fill(out, bytes)
                // Poison the receive buffer so stale bytes would show.
                inb.text.initializeMemory(as: UInt8.self, repeating: 0xEE)
                #expect(try queue.send(out, type: 3, length: size, nowait: true))
                let got = try #require(try queue.receive(into: inb, nowait: true))
                #expect(got.type == 3)
                #expect(got.length == size)
                #expect(received(inb, got.length) == bytes, "size \(size)")
            }
            #expect(try queue.status().messages == 0)
        }
    }

    @Test func roundTripThroughRawShimIncludingEmptyAndMsgmax() throws {
        let msgmax = try procInt("/proc/sys/kernel/msgmax")
        try withRawQueue { qid throws in
            let out = RawMessage(capacity: msgmax)
            let inb = RawMessage(capacity: msgmax)
            for size in [0, 1, 100, msgmax] {
                let bytes = pattern(size, seed: 9)
                out.set(bytes)
                #expect(csysv_msgsnd(qid, out.base, 42, size, 1) == 0)
                // The shim stores mtype in the header.
                #expect(out.base.load(as: Int.self) == 42)
                var type = 0
                let n = csysv_msgrcv(qid, inb.base, msgmax, 0, 1, &type)
                #expect(n == size)
                #expect(type == 42)
                #expect(inb.get(max(n, 0)) == bytes)
            }
            // out_type may be NULL.
            #expect(csysv_msgsnd(qid, out.base, 5, 3, 1) == 0)
            #expect(csysv_msgrcv(qid, inb.base, msgmax, 0, 1, nil) == 3)
        }
    }

    @Test func mtypeIsPreservedAndSelectsMessages() throws {
        try withQueue { queue throws in
            let buffer = MessageBuffer(capacity: 64)
            fill(buffer, "one".bytes)
            try queue.send(buffer, type: 1, length: 3, nowait: true)
            fill(buffer, "two".bytes)
            try queue.send(buffer, type: 2, length: 3, nowait: true)

            // Type 2 first, although type 1 was sent first.
            let second = try #require(try queue.receive(into: buffer, type: 2, nowait: true))
            #expect(second.type == 2)
            #expect(received(buffer, second.length) == "two".bytes)
            // No more type 2.
            #expect(try queue.receive(into: buffer, type: 2, nowait: true) == nil)
            let first = try #require(try queue.receive(into: buffer, type: 0, nowait: true))
            #expect(first.type == 1)
            #expect(received(buffer, first.length) == "one".bytes)

            // Negative type: the lowest type <= |type|.
            for type in [5, 3, 4] {
                fill(buffer, [UInt8(type)])
                try queue.send(buffer, type: type, length: 1, nowait: true)
            }
            let lowest = try #require(try queue.receive(into: buffer, type: -4, nowait: true))
            #expect(lowest.type == 3)
            #expect(buffer.text[0] == 3)
            let next = try #require(try queue.receive(into: buffer, type: -4, nowait: true))
            #expect(next.type == 4)
            #expect(try queue.receive(into: buffer, type: -4, nowait: true) == nil)
            #expect(try queue.receive(into: buffer, nowait: true)?.type == 5)

            // A large mtype survives the round trip.
            let big = 1 << 40 + 12345
            try queue.send(buffer, type: big, length: 0, nowait: true)
            #expect(try queue.receive(into: buffer, nowait: true)?.type == big)
        }
    }

    // MARK: Would-block, empty, too big

    @Test func fullQueueWithNowaitReturnsFalseAndRawEAGAIN() throws {
        try withQueue { queue throws in
            let capacity = try queue.status().capacityBytes
            let size = 1024
            let buffer = MessageBuffer(capacity: size)
            fill(buffer, pattern(size))
            var sent = 0
            while try queue.send(buffer, type: 1, length: size, nowait: true) {
                sent += 1
                if sent > capacity { break } // a queue that never fills is a failure, not a hang
            }
            #expect(sent == capacity / size)
            let status = try queue.status()
            #expect(status.messages == sent)
            #expect(status.bytes == sent * size)

            // Still full: the wrapper says false again, and the raw call fails with EAGAIN.
            #expect(try queue.send(buffer, type: 1, length: size, nowait: true) == false)
            let raw = RawMessage(capacity: size)
            Glibc.errno = 0
            #expect(csysv_msgsnd(queue.id, raw.base, 1, size, 1) == -1)
            #expect(Glibc.errno == EAGAIN)

            // Room again after one receive.
            #expect(try queue.receive(into: buffer, nowait: true)?.length == size)
            #expect(try queue.send(buffer, type: 1, length: size, nowait: true))
            #expect(try queue.send(buffer, type: 1, length: size, nowait: true) == false)
        }
    }

    @Test func nowaitReceiveOnEmptyQueueIsNilAndRawENOMSG() throws {
        try withQueue { queue throws in
            let buffer = MessageBuffer(capacity: 16)
            #expect(try queue.receive(into: buffer, nowait: true) == nil)
            #expect(try queue.receive(into: buffer, type: 7, nowait: true) == nil)
            var type = -1
            Glibc.errno = 0
            #expect(csysv_msgrcv(queue.id, buffer.base, 16, 0, 1, &type) == -1)
            #expect(Glibc.errno == ENOMSG)
            #expect(type == -1, "out_type must not be written on failure")
        }
    }

    @Test func receiveIntoSmallBufferFailsE2BIGAndKeepsTheMessage() throws {
        try withQueue { queue throws in
            let bytes = pattern(100, seed: 3)
            let big = MessageBuffer(capacity: 200)
            fill(big, bytes)
            try queue.send(big, type: 9, length: 100, nowait: true)

            let small = MessageBuffer(capacity: 99)
            expectSystemError("msgrcv", [E2BIG]) { try queue.receive(into: small, nowait: true) }
            var type = 0
            Glibc.errno = 0
            #expect(csysv_msgrcv(queue.id, small.base, 10, 0, 1, &type) == -1)
            #expect(Glibc.errno == E2BIG)

            // Not lost, not truncated.
            #expect(try queue.status().messages == 1)
            big.text.initializeMemory(as: UInt8.self, repeating: 0)
            let got = try #require(try queue.receive(into: big, nowait: true))
            #expect(got.type == 9)
            #expect(got.length == 100)
            #expect(received(big, 100) == bytes)
            #expect(try queue.status().messages == 0)
        }
    }

    @Test func sendingMoreThanMsgmaxFailsEINVAL() throws {
        let msgmax = try procInt("/proc/sys/kernel/msgmax")
        try withQueue { queue throws in
            let buffer = MessageBuffer(capacity: msgmax + 1)
            expectSystemError("msgsnd", [EINVAL]) { try queue.send(buffer, type: 1, length: msgmax + 1, nowait: true) }
            let raw = RawMessage(capacity: msgmax + 1)
            Glibc.errno = 0
            #expect(csysv_msgsnd(queue.id, raw.base, 1, msgmax + 1, 1) == -1)
            #expect(Glibc.errno == EINVAL)
            // mtype must be > 0 as well.
            Glibc.errno = 0
            #expect(csysv_msgsnd(queue.id, raw.base, 0, 1, 1) == -1)
            #expect(Glibc.errno == EINVAL)
            #expect(try queue.status().messages == 0)
            // The same errno as a removed queue's: only IPC_STAT tells the two apart.
            #expect(!queue.isRemoved())
            // msgmax itself is fine (see the round trip test); the boundary is exact.
            #expect(try queue.send(buffer, type: 1, length: msgmax, nowait: true))
        }
    }

    // MARK: Removal

    @Test func operationsOnARemovedQueueFailWithEIDRMOrEINVAL() throws {
        try withQueue { queue throws in
            let buffer = MessageBuffer(capacity: 16)
            try queue.send(buffer, type: 1, length: 4, nowait: true)
            #expect(!queue.isRemoved())
            try queue.remove()
            #expect(!existingQueueIDs().contains(queue.id))
            #expect(queue.isRemoved())

            let gone: Set<Int32> = [EIDRM, EINVAL]
            expectSystemError("msgsnd", gone) { try queue.send(buffer, type: 1, length: 4, nowait: true) }
            expectSystemError("msgsnd", gone) { try queue.send(buffer, type: 1, length: 4, nowait: false) }
            expectSystemError("msgrcv", gone) { try queue.receive(into: buffer, nowait: true) }
            expectSystemError("msgrcv", gone) { try queue.receive(into: buffer, nowait: false) }
            expectSystemError("msgctl(IPC_STAT)", gone) { try queue.status() }
            expectSystemError("msgctl(IPC_SET)", gone) { try queue.setCapacity(bytes: 4096) }
            expectSystemError("msgctl(IPC_RMID)", gone) { try queue.remove() }

            var info = csysv_msqinfo()
            Glibc.errno = 0
            #expect(csysv_msgctl_stat(queue.id, &info) == -1)
            #expect(gone.contains(Glibc.errno))
            Glibc.errno = 0
            #expect(csysv_msgsnd(queue.id, buffer.base, 1, 1, 1) == -1)
            #expect(gone.contains(Glibc.errno))
            Glibc.errno = 0
            #expect(csysv_msgrcv(queue.id, buffer.base, 16, 0, 1, nil) == -1)
            #expect(gone.contains(Glibc.errno))
            #expect(csysv_msgctl_remove(queue.id) == -1)
            #expect(csysv_msgctl_set_max_bytes(queue.id, 4096) == -1)
        }
    }

    @Test func removalWakesABlockedReceiverWithEIDRM() throws {
        let result = ThreadResult()
        try withQueue { queue throws in
            let thread = Thread {
                let buffer = MessageBuffer(capacity: 64)
                result.set(Result { try queue.receive(into: buffer, nowait: false) })
            }
            thread.start()
            // Wait until the thread is really asleep in msgrcv on this queue, so removal (not a
            // missing id) is what ends the call.
            #expect(waitUntil(timeout: 10) { someThreadIsBlockedInMsgrcv(on: queue.id) },
                    "helper thread never blocked in msgrcv")
            #expect(csysv_thread_count() >= 2)
            #expect(result.get() == nil, "blocking receive returned on an empty queue")
            try queue.remove()
            #expect(waitUntil(timeout: 10) { result.get() != nil }, "blocked receiver did not wake on IPC_RMID")
        }
        switch result.get() {
        case .failure(let error as SystemError)?:
            #expect(error.call == "msgrcv")
            #expect(error.errno.rawValue == EIDRM, "\(error)")
        case let other:
            Issue.record("expected msgrcv to fail with EIDRM, got \(String(describing: other))")
        }
    }

    // MARK: Capacity and depth

    @Test func setCapacityRaisesOrFailsEPERMAndLoweringAlwaysWorks() throws {
        try withQueue { queue throws in
            let initial = try queue.status().capacityBytes
            #expect(initial == (try procInt("/proc/sys/kernel/msgmnb")))
            let raised = initial * 2
            do {
                try queue.setCapacity(bytes: raised)
                #expect(try queue.status().capacityBytes == raised)
            } catch let error as SystemError {
                // Without CAP_SYS_RESOURCE the kernel refuses to go above msgmnb.
                #expect(error.errno.rawValue == EPERM, "\(error)")
                #expect(error.call == "msgctl(IPC_SET)")
                #expect(try queue.status().capacityBytes == initial)
            }

            // Lowering below the current capacity always works...
            try queue.setCapacity(bytes: 2048)
            #expect(try queue.status().capacityBytes == 2048)
            let buffer = MessageBuffer(capacity: 1024)
            #expect(try queue.send(buffer, type: 1, length: 1024, nowait: true))
            #expect(try queue.send(buffer, type: 1, length: 1024, nowait: true))
            #expect(try queue.send(buffer, type: 1, length: 1, nowait: true) == false)

            // ...even below what is queued now (raw shim); nothing queued is dropped.
            #expect(csysv_msgctl_set_max_bytes(queue.id, 1024) == 0)
            var info = csysv_msqinfo()
            #expect(csysv_msgctl_stat(queue.id, &info) == 0)
            #expect(info.max_bytes == 1024)
            #expect(info.messages == 2)
            #expect(info.bytes == 2048)
            #expect(try queue.status().capacityBytes == 1024)
        }
    }

    @Test func queueDepthAfterThreeMessages() throws {
        try withQueue { queue throws in
            let buffer = MessageBuffer(capacity: 64)
            for size in [10, 20, 30] { try queue.send(buffer, type: 1, length: size, nowait: true) }
            var status = try queue.status()
            #expect(status.messages == 3)
            #expect(status.bytes == 60)
            #expect(status.lastSendPID == getpid())
            #expect(status.lastReceivePID == 0)

            #expect(try queue.receive(into: buffer, nowait: true)?.length == 10)
            status = try queue.status()
            #expect(status.messages == 2)
            #expect(status.bytes == 50)
            #expect(status.lastReceivePID == getpid())

            var info = csysv_msqinfo()
            #expect(csysv_msgctl_stat(queue.id, &info) == 0)
            #expect(info.messages == 2 && info.bytes == 50)
            #expect(info.last_send_pid == getpid() && info.last_receive_pid == getpid())
        }
    }

    // MARK: Wait statuses

    /// On this test thread only (the policy is per thread), and put back afterwards.
    @Test func batchSchedulingSetAndReset() throws {
        #expect(!ChildProcess.hasBatchScheduling)
        try ChildProcess.setBatchScheduling(true)
        // Put back however this test ends: what the thread spawns later would inherit it.
        defer { try? ChildProcess.setBatchScheduling(false) }
        #expect(ChildProcess.hasBatchScheduling)
        #expect(csysv_scheduling_policy() == 3)
        try ChildProcess.setBatchScheduling(false)
        #expect(!ChildProcess.hasBatchScheduling && csysv_scheduling_policy() == 0)
    }

    @Test func waitStatusMacrosAndExitStatus() {
        // exit(3)
        let exited3: Int32 = 3 << 8
        #expect(csysv_wifexited(exited3) != 0)
        #expect(csysv_wexitstatus(exited3) == 3)
        #expect(csysv_wifsignaled(exited3) == 0)
        #expect(ExitStatus(waitStatus: exited3) == .exited(3))
        // exit(0), exit(255)
        #expect(ExitStatus(waitStatus: 0) == .exited(0))
        #expect(csysv_wexitstatus(255 << 8) == 255)
        #expect(ExitStatus(waitStatus: 255 << 8) == .exited(255))
        // killed by SIGKILL
        #expect(csysv_wifexited(9) == 0)
        #expect(csysv_wifsignaled(9) != 0)
        #expect(csysv_wtermsig(9) == 9)
        #expect(csysv_wcoredump(9) == 0)
        #expect(ExitStatus(waitStatus: 9) == .signaled(9, coreDumped: false))
        // SIGABRT with a core dump
        let core: Int32 = 0x80 | 6
        #expect(csysv_wifsignaled(core) != 0)
        #expect(csysv_wtermsig(core) == 6)
        #expect(csysv_wcoredump(core) != 0)
        #expect(ExitStatus(waitStatus: core) == .signaled(6, coreDumped: true))
        // Stopped (0x7f in the low byte): neither exited nor signaled.
        let stopped: Int32 = (SIGSTOP << 8) | 0x7f
        #expect(csysv_wifexited(stopped) == 0)
        #expect(csysv_wifsignaled(stopped) == 0)
        #expect(ExitStatus(waitStatus: stopped) == .exited(-1))

        #expect(ExitStatus.exited(3).description == "exit 3")
        #expect(ExitStatus.signaled(9, coreDumped: false).description == "signal 9")
        #expect(ExitStatus.signaled(6, coreDumped: true).description == "signal 6 (core dumped)")
    }

    // MARK: Sockets and descriptors

    @Test func socketPathLimits() throws {
        #expect(unixSocketPathMax == 107)
        #expect(csysv_sun_path_max() == 107)

        var addr = sockaddr_un()
        var length: socklen_t = 0
        let longest = String(repeating: "p", count: 107)
        #expect(csysv_sockaddr_un(longest, &addr, &length) == 0)
        #expect(Int32(addr.sun_family) == AF_UNIX)
        #expect(Int(length) == MemoryLayout<sa_family_t>.size + 107 + 1)
        let stored = withUnsafeBytes(of: addr.sun_path) { Array($0) }
        #expect(stored.prefix(107) == ArraySlice(longest.utf8))
        #expect(stored[107] == 0)

        for count in [108, 200] {
            Glibc.errno = 0
            #expect(csysv_sockaddr_un(String(repeating: "p", count: count), &addr, &length) == -1)
            #expect(Glibc.errno == ENAMETOOLONG)
        }

        let socket = try SocketFD.unixStream(nonBlocking: false)
        defer { socket.close() }
        expectSystemError("bind", [ENAMETOOLONG]) { try socket.bind(path: "/tmp/" + String(repeating: "x", count: 195)) }
        expectSystemError("bind", [ENAMETOOLONG]) { try socket.bind(path: String(repeating: "x", count: 108)) }
        expectSystemError("connect", [ENAMETOOLONG]) { try socket.connect(path: String(repeating: "x", count: 200)) }
    }

    @Test func bindListenConnectAcceptAtTheLongestPath() throws {
        let directory = makeTemporaryDirectory()
        let path = directory + "/" + String(repeating: "s", count: unixSocketPathMax - directory.utf8.count - 1)
        #expect(path.utf8.count == 107)
        defer {
            unlink(path)
            rmdir(directory)
        }
        #expect(probeSocketPath(path) == .absent)

        let listener = try SocketFD.unixStream(nonBlocking: true)
        var listenerOpen = true
        defer { if listenerOpen { listener.close() } }
        try listener.bind(path: path)
        try listener.listen(backlog: 4)
        #expect(try listener.accept() == nil, "nothing should be waiting") // EAGAIN -> nil
        #expect(probeSocketPath(path) == .live)
        // The probe's connection is queued on the listener; take it out of the way.
        let probe = try #require(try listener.accept())
        probe.close()
        #expect(try listener.accept() == nil)

        let client = try SocketFD.unixStream(nonBlocking: false)
        defer { client.close() }
        try client.connect(path: path)
        let server = try #require(try listener.accept())
        defer { server.close() }
        #expect(fcntl(server.raw, F_GETFL) & O_NONBLOCK != 0)
        #expect(fcntl(server.raw, F_GETFD) & FD_CLOEXEC != 0)

        let credentials = try server.peerCredentials()
        #expect(credentials.pid == getpid())
        #expect(credentials.uid == getuid())
        #expect(credentials.gid == getgid())

        try "ping".bytes.withUnsafeBytes { try client.writeAll($0) }
        var buffer = [UInt8](repeating: 0, count: 16)
        var n: Int? = nil
        #expect(waitUntil(timeout: 5) {
            n = try? buffer.withUnsafeMutableBytes { try server.read(into: $0) }
            return n != nil
        })
        #expect(n == 4)
        #expect(Array(buffer.prefix(4)) == "ping".bytes)
        // Nothing more: a non-blocking read says "would block" (nil), not end of stream (0).
        #expect(try buffer.withUnsafeMutableBytes { try server.read(into: $0) } == nil)
        try client.shutdownWrite()
        #expect(waitUntil(timeout: 5) { (try? buffer.withUnsafeMutableBytes { try server.read(into: $0) }) == 0 })

        listener.close()
        listenerOpen = false
        #expect(probeSocketPath(path) == .stale)
        // A second bind on a used path fails.
        let other = try SocketFD.unixStream(nonBlocking: false)
        defer { other.close() }
        expectSystemError("bind", [EADDRINUSE]) { try other.bind(path: path) }

        let file = directory + "/plain"
        #expect(FileManager.default.createFile(atPath: file, contents: Data()))
        defer { unlink(file) }
        #expect(probeSocketPath(file) == .notASocket)
    }

    @Test func nonblockingAndCloexecOnAPipe() throws {
        var fds: [Int32] = [-1, -1]
        #expect(pipe(&fds) == 0)
        defer {
            close(fds[0])
            close(fds[1])
        }
        let reader = fds[0]
        #expect(fcntl(reader, F_GETFL) & O_NONBLOCK == 0)
        #expect(fcntl(reader, F_GETFD) & FD_CLOEXEC == 0)

        #expect(csysv_set_nonblocking(reader, 1) == 0)
        #expect(fcntl(reader, F_GETFL) & O_NONBLOCK != 0)
        var byte: UInt8 = 0
        Glibc.errno = 0
        #expect(read(reader, &byte, 1) == -1)
        #expect(Glibc.errno == EAGAIN)
        // Other status flags survive.
        #expect(fcntl(reader, F_GETFL) & O_ACCMODE == O_RDONLY)

        #expect(csysv_set_nonblocking(reader, 0) == 0)
        #expect(fcntl(reader, F_GETFL) & O_NONBLOCK == 0)
        // Blocking again: with a byte written, the read returns it.
        var one: UInt8 = 0x5A
        #expect(write(fds[1], &one, 1) == 1)
        #expect(read(reader, &byte, 1) == 1 && byte == 0x5A)

        #expect(csysv_set_cloexec(reader, 1) == 0)
        #expect(fcntl(reader, F_GETFD) & FD_CLOEXEC != 0)
        #expect(csysv_set_cloexec(reader, 0) == 0)
        #expect(fcntl(reader, F_GETFD) & FD_CLOEXEC == 0)

        #expect(csysv_fd_is_open(reader) == 1)
        var spare: [Int32] = [-1, -1]
        #expect(pipe(&spare) == 0)
        close(spare[0])
        close(spare[1])
        #expect(csysv_fd_is_open(spare[0]) == 0)

        Glibc.errno = 0
        #expect(csysv_set_nonblocking(-1, 1) == -1)
        #expect(Glibc.errno == EBADF)
        #expect(csysv_set_cloexec(-1, 1) == -1)
    }

    /// close_range's fallback closes what /proc/self/fd lists in the range, and only that. Run on
    /// descriptors placed near the soft limit, where no other thread of the runner opens any.
    @Test func closingListedDescriptorsClosesExactlyTheRange() throws {
        // The soft descriptor limit.
        let top = Int32(min(sysconf(Int32(_SC_OPEN_MAX)), 1 << 20))
        try #require(top >= 64, "soft descriptor limit \(top)")
        let base = top - 40
        let numbers = [base, base + 1, base + 5, base + 9, base + 10]
        // The whole range free: the call closes whatever is listed in it.
        try #require((base...(base + 10)).allSatisfy { csysv_fd_is_open($0) == 0 }, "descriptors near the limit already in use")
        var pipeFDs: [Int32] = [-1, -1]
        #expect(pipe(&pipeFDs) == 0)
        defer {
            close(pipeFDs[0])
            close(pipeFDs[1])
        }
        for fd in numbers { #expect(dup2(pipeFDs[0], fd) == fd) }
        defer { numbers.forEach { close($0) } }
        // [base + 1, base + 9]: the first and the last two are outside it.
        #expect(csysv_close_listed_fds(UInt32(base + 1), UInt32(base + 9)) == 0)
        #expect(numbers.map { csysv_fd_is_open($0) } == [1, 0, 0, 0, 1])
        #expect(csysv_fd_is_open(pipeFDs[0]) == 1 && csysv_fd_is_open(pipeFDs[1]) == 1)
    }

    @Test func peerCredentialsOnASocketpair() throws {
        let fds = try socketPair()
        defer { fds.forEach { close($0) } }
        var pid: pid_t = -1
        var uid: uid_t = .max
        var gid: gid_t = .max
        #expect(csysv_peer_credentials(fds[0], &pid, &uid, &gid) == 0)
        #expect(pid == getpid())
        #expect(uid == getuid())
        #expect(gid == getgid())
        // Null out-parameters are allowed.
        #expect(csysv_peer_credentials(fds[1], nil, nil, nil) == 0)

        let credentials = try SocketFD(raw: fds[1]).peerCredentials()
        #expect(credentials.pid == getpid())
        #expect(credentials.uid == getuid())
        #expect(credentials.gid == getgid())

        // Not a socket.
        var pipeFDs: [Int32] = [-1, -1]
        #expect(pipe(&pipeFDs) == 0)
        defer {
            close(pipeFDs[0])
            close(pipeFDs[1])
        }
        expectSystemError("getsockopt(SO_PEERCRED)", [ENOTSOCK]) { try SocketFD(raw: pipeFDs[0]).peerCredentials() }
    }

    @Test func socketTimeoutsAreNeverZeroAndNeverOverflow() {
        func micros(_ seconds: Double) -> Int {
            let tv = SocketFD.socketTimeout(seconds)
            return tv.tv_sec * 1_000_000 + tv.tv_usec
        }
        #expect(micros(1.5) == 1_500_000)
        #expect(micros(0.05) == 50_000)
        // A zero timeval would mean "never time out".
        #expect(micros(1e-7) == 1)
        #expect(micros(0) == 1)
        #expect(micros(1e19) == 100_000_000 * 1_000_000)
        #expect(micros(.infinity) == 100_000_000 * 1_000_000)
        #expect(micros(.nan) == 100_000_000 * 1_000_000)
    }

    // Bounded: without the fix writeAll waits again after every timeout, forever.
    @Test(.timeLimit(.minutes(1))) func writeAllThrowsETIMEDOUTWhenTheSendTimeoutPasses() throws {
        let fds = try socketPair()
        defer { fds.forEach { close($0) } }
        // The peer never reads: once the socket buffers fill, a blocking send waits for the
        // timeout and reports EAGAIN, which writeAll must turn into an error, not another wait.
        let writer = SocketFD(raw: fds[0])
        try writer.setSendTimeout(seconds: 0.05)
        let bytes = [UInt8](repeating: 7, count: 16 << 20)
        expectSystemError("send", [ETIMEDOUT]) { try bytes.withUnsafeBytes { try writer.writeAll($0) } }
    }

    /// The state file is unlinked only if it still holds the record read: another record is left
    /// in place (moved aside to be compared, and put back), and nothing is left beside it.
    @Test func stateFileIsUnlinkedOnlyIfUnchanged() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/pool.sock.state"
        func write(_ text: String) throws { try writeFileAtomically(text, to: path, mode: 0o600) }
        try write("pid=1\nuid=0\n")
        #expect(unlinkIfUnchanged(path, text: Array("pid=1\nuid=0\n".utf8)))
        #expect(!fileExists(path))
        try write("pid=2\nuid=0\n")
        #expect(!unlinkIfUnchanged(path, text: Array("pid=1\nuid=0\n".utf8)))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "pid=2\nuid=0\n")
        #expect(try FileManager.default.contentsOfDirectory(atPath: directory) == ["pool.sock.state"])
        // Put back only onto a free name: a newer record there is kept.
        let aside = directory + "/aside"
        try "older".write(toFile: aside, atomically: false, encoding: .utf8)
        Glibc.errno = 0
        #expect(csysv_rename_noreplace(aside, path) == -1 && Glibc.errno == EEXIST)
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "pid=2\nuid=0\n")
        unlink(path)
        #expect(csysv_rename_noreplace(aside, path) == 0 && !fileExists(aside))
        #expect(try String(contentsOfFile: path, encoding: .utf8) == "older")
    }

    @Test func stateFileNamesTheMasterByPidAndStartTime() throws {
        let started = try #require(processStatus(getpid())).startTime
        // This process plays the recorded master: the record carries its token.
        let me = PoolState(pid: getpid(), startTime: started, token: PoolState.ownToken, uid: getuid(), socketPath: "/tmp/x.sock",
                           queues: [(id: 7, changeTime: 9)])
        #expect(PoolState.decode(me.encoded()) == me)
        #expect(me.encoded().contains("start=\(started)\n") && me.encoded().contains("token=\(PoolState.ownToken)\n"))
        #expect(me.isOwn && PoolState.ownToken.count == 16)
        #expect(isRecordedMaster(me, controlSocket: "/nonexistent/x.sock.ctl"))
        // Our pid under another token (a master of another pid namespace, pid 1 in both): this
        // process says nothing about it; only its control socket could.
        var foreign = me
        foreign.token = "0123456789abcdef"
        #expect(!foreign.isOwn && !isRecordedMaster(foreign, controlSocket: "/nonexistent/x.sock.ctl"))
        // Same pid, another start: a recycled pid, not the master.
        var recycled = me
        recycled.startTime = started + 1
        #expect(!isRecordedMaster(recycled, controlSocket: "/nonexistent/x.sock.ctl"))
        // A record written before start times were kept: the process name decides (ours matches).
        var old = try #require(PoolState.decode("pid=\(getpid())\nuid=\(getuid())\nsocket=/tmp/x.sock\n"))
        #expect(old.startTime == nil && old.token == nil)
        old.token = PoolState.ownToken
        #expect(isRecordedMaster(old, controlSocket: "/nonexistent/x.sock.ctl"))
        #expect(processIsRunning(getpid()))
        #expect(!processIsRunning(0x3FFF_FFF0))
        var activated = me
        activated.socketActivated = true
        #expect(activated.encoded().contains("activated=1\n") && PoolState.decode(activated.encoded()) == activated)
    }

    /// Recovery after a master whose socket was systemd's (recorded `activated=1`) leaves that
    /// socket alone — a probe's connect would start the service, and the file is systemd's —
    /// while a plain master's stale socket goes. Temporaries of the atomic writer whose writer is
    /// gone are removed; one whose writer runs (pid 1 here) is not.
    @Test func recoveryLeavesAnActivatedSocketAndClearsAbandonedTemporaries() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        for activated in [true, false] {
            let socket = directory + "/pool.sock", statePath = socket + ".state"
            let stale = try SocketFD.unixStream(nonBlocking: false)
            try stale.bind(path: socket)
            stale.close()
            var record = PoolState(pid: 0x3FFF_FFF0, uid: getuid(), socketPath: socket, queues: [])
            record.socketActivated = activated
            try record.write(to: statePath)
            let dead = statePath + ".tmp.\(0x3FFF_FFF0)", live = statePath + ".tmp.1"
            for path in [dead, live] { #expect(FileManager.default.createFile(atPath: path, contents: Data("x".utf8))) }
            let report = recoverStaleState(statePath: statePath, socketPath: socket)
            #expect(report.removedStateFile && report.removedSocket == !activated, "\(report.lines)")
            #expect(fileExists(socket) == activated)
            #expect(!fileExists(dead) && fileExists(live))
            unlink(socket)
            unlink(live)
        }
    }

    /// The state and pid files' writer never writes through a symlink planted at its temporary
    /// name (in a shared directory, a root master would truncate the file it points to), and
    /// replaces the target whole.
    @Test func atomicWriteDoesNotFollowAPlantedSymlink() throws {
        let directory = makeTemporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/pool.pid", victim = directory + "/victim"
        #expect(FileManager.default.createFile(atPath: victim, contents: Data("precious\n".utf8)))
        #expect(symlink(victim, "\(path).tmp.\(getpid())") == 0)
        #expect(FileManager.default.createFile(atPath: path, contents: Data("old, and longer than the new text\n".utf8)))
        try writeFileAtomically("42\n", to: path, mode: 0o644)
        #expect((try? String(contentsOfFile: victim, encoding: .utf8)) == "precious\n")
        #expect((try? String(contentsOfFile: path, encoding: .utf8)) == "42\n")
        #expect(!fileExists("\(path).tmp.\(getpid())"))
    }

    // MARK: Signals

    @Test func countingSignalHandlerCountsAndRingsTheWakeFD() throws {
        let wake = try EventFD.create()
        defer {
            Signals.setWakeFD(-1)
            _ = try? Signals.setDefault(SIGUSR2)
            wake.close()
        }
        _ = Signals.take(SIGUSR2) // start from zero
        Signals.setWakeFD(wake.fd)
        try Signals.install([SIGUSR2])

        // The test runner's threads block most signals, and raise(3) targets the calling thread,
        // so raise from a helper thread that first unblocks everything (Signals.unblockAll).
        let run = raiseInUnblockedThread(SIGUSR2, times: 2)
        #expect(run.blockedAfterUnblock == 0, "Signals.unblockAll left signals blocked")
        #expect(run.results == [0, 0])
        #expect(Signals.take(SIGUSR2) == 2)
        #expect(wake.drain() == 2)
        #expect(Signals.take(SIGUSR2) == 0)
        #expect(wake.drain() == 0)

        // The C side sees the same counter.
        #expect(raiseInUnblockedThread(SIGUSR2, times: 1).results == [0])
        #expect(csysv_signal_take(SIGUSR2) == 1)
        #expect(csysv_signal_take(SIGUSR2) == 0)
        #expect(wake.drain() == 1)
        #expect(csysv_signal_take(0) == 0)
        #expect(csysv_signal_take(100_000) == 0)

        // Without a wake fd the count still works.
        Signals.setWakeFD(-1)
        #expect(raiseInUnblockedThread(SIGUSR2, times: 1).results == [0])
        #expect(Signals.take(SIGUSR2) == 1)
        #expect(wake.drain() == 0)
        Signals.setWakeFD(wake.fd)

        // Ignored: nothing counted, nothing rung, and we are still here.
        try Signals.ignore(SIGUSR2)
        #expect(raiseInUnblockedThread(SIGUSR2, times: 1).results == [0])
        #expect(Signals.take(SIGUSR2) == 0)
        #expect(wake.drain() == 0)

        // Back to the default disposition.
        try Signals.setDefault(SIGUSR2)
        var action = sigaction()
        #expect(sigaction(SIGUSR2, nil, &action) == 0)
        #expect(action.__sigaction_handler.sa_handler == nil, "SIG_DFL is the null handler")

        expectSystemError("sigaction(\(SIGKILL))", [EINVAL]) { try Signals.install([SIGKILL]) }
    }

    // MARK: Threads, scoreboard, eventfd, epoll

    /// The count agrees with the kernel's `Threads:` of /proc/self/status (taken when that stays
    /// the same around the count: the runner's other threads come and go).
    @Test func threadCountMatchesTheKernels() throws {
        func kernels() -> Int? { procStatusField("Threads", of: getpid()).first.flatMap { Int($0) } }
        let dir = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        try #require(dir >= 0)
        defer { close(dir) }
        var agreed = false
        for _ in 0..<50 {
            let before = kernels(), opened = csysv_thread_count(), kept = csysv_thread_count_in(dir), after = kernels()
            guard let before, before == after else { continue }
            #expect(opened == before && kept == before, "counted \(opened) and \(kept), the kernel says \(before)")
            agreed = true
            break
        }
        #expect(agreed, "the thread count never held still for one look")
    }

    @Test func scoreboardBeginEndResetRoundTrip() throws {
        #expect(MemoryLayout<csysv_slot>.size == 64)
        #expect(MemoryLayout<csysv_master_hint>.size == 64)
        let board = try Scoreboard(slots: 3)
        #expect(board.count == 3)
        for slot in 0..<3 {
            #expect(board.state(slot) == .empty)
            #expect(board.job(slot) == 0)
            #expect(board.jobsHandled(slot) == 0)
        }

        board.reset(1, pid: 4242)
        #expect(board.state(1) == .idle)
        #expect(board.pid(1) == 4242)
        board.setPID(1, 4343)
        #expect(board.pid(1) == 4343)
        let before = monotonicNanoseconds()
        board.begin(1, job: 0xDEAD_BEEF_0000_0001)
        let after = monotonicNanoseconds()
        #expect(board.state(1) == .busy)
        #expect(board.job(1) == 0xDEAD_BEEF_0000_0001)
        #expect(board.jobStartedNanoseconds(1) >= before && board.jobStartedNanoseconds(1) <= after)
        board.end(1)
        #expect(board.state(1) == .idle)
        #expect(board.jobsHandled(1) == 1)
        board.begin(1, job: 7)
        board.end(1)
        #expect(board.jobsHandled(1) == 2)
        #expect(board.job(1) == 7)

        // Neighbours untouched.
        #expect(board.state(0) == .empty && board.state(2) == .empty)
        #expect(board.jobsHandled(0) == 0 && board.jobsHandled(2) == 0)

        board.reset(1, pid: 99)
        #expect(board.state(1) == .idle)
        #expect(board.jobsHandled(1) == 0)
        #expect(board.job(1) == 0)

        // The raw slot functions on a local slot.
        var slot = csysv_slot()
        csysv_slot_reset(&slot, 12)
        #expect(slot.pid == 12)
        csysv_slot_begin(&slot, 5, 1000)
        #expect(csysv_slot_state(&slot) == UInt32(CSYSV_SLOT_BUSY))
        #expect(csysv_slot_job(&slot) == 5)
        #expect(csysv_slot_started_ns(&slot) == 1000)
        csysv_slot_end(&slot, 1000 + 8000)
        #expect(csysv_slot_state(&slot) == UInt32(CSYSV_SLOT_IDLE))
        #expect(csysv_slot_jobs(&slot) == 1)
        // The first duration sets the average; later ones move it an eighth of the way.
        #expect(csysv_slot_average_ns(&slot) == 8000)
        csysv_slot_begin(&slot, 6, 20_000)
        csysv_slot_end(&slot, 20_000 + 16_000)
        #expect(csysv_slot_average_ns(&slot) == 9000)
        csysv_slot_reset(&slot, 13)
        #expect(csysv_slot_average_ns(&slot) == 0)

        // The doorbell hint: the master's flag as workers read it.
        #expect(!board.masterMayBeAsleep)
        board.setMasterAsleep(true)
        #expect(board.masterMayBeAsleep)
        board.setMasterAsleep(false)
        #expect(!board.masterMayBeAsleep)
        // The second flag, "wants room", is independent of the first.
        #expect(!board.masterWantsRoom)
        board.setMasterWantsRoom(true)
        #expect(board.masterWantsRoom && !board.masterMayBeAsleep)
        board.setMasterAsleep(true)
        board.setMasterWantsRoom(false)
        #expect(!board.masterWantsRoom && board.masterMayBeAsleep)
        board.setMasterAsleep(false)
    }

    @Test func eventFDRingAndDrain() throws {
        let event = try EventFD.create()
        defer { event.close() }
        #expect(fcntl(event.fd, F_GETFL) & O_NONBLOCK != 0)
        #expect(fcntl(event.fd, F_GETFD) & FD_CLOEXEC != 0)
        #expect(event.drain() == 0)
        event.ring()
        event.ring()
        event.ring()
        #expect(event.drain() == 3)
        #expect(event.drain() == 0)
    }

    @Test func epollReportsARungEventFD() throws {
        let epoll = try Epoll(maxEvents: 8)
        let event = try EventFD.create()
        defer { event.close() }
        try epoll.add(event.fd, events: .readable, token: 77)

        var seen: [(UInt64, Epoll.Events)] = []
        #expect(try epoll.wait(timeoutMilliseconds: 0) { seen.append(($0, $1)) } == 0)
        #expect(seen.isEmpty)

        event.ring()
        #expect(try epoll.wait(timeoutMilliseconds: 1000) { seen.append(($0, $1)) } == 1)
        #expect(seen.count == 1)
        #expect(seen.first?.0 == 77)
        #expect(seen.first?.1.contains(.readable) == true)

        // Level-triggered: still readable until drained.
        seen = []
        #expect(try epoll.wait(timeoutMilliseconds: 0) { seen.append(($0, $1)) } == 1)
        #expect(event.drain() == 1)
        seen = []
        #expect(try epoll.wait(timeoutMilliseconds: 0) { seen.append(($0, $1)) } == 0)

        // Modify: an eventfd is always writable.
        try epoll.modify(event.fd, events: .writable, token: 78)
        seen = []
        #expect(try epoll.wait(timeoutMilliseconds: 1000) { seen.append(($0, $1)) } == 1)
        #expect(seen.first?.0 == 78)
        #expect(seen.first?.1.contains(.writable) == true)
        #expect(seen.first?.1.contains(.readable) == false)

        expectSystemError("epoll_ctl(ADD)", [EEXIST]) { try epoll.add(event.fd, events: .readable, token: 1) }
        try epoll.remove(event.fd)
        seen = []
        #expect(try epoll.wait(timeoutMilliseconds: 0) { seen.append(($0, $1)) } == 0)
        expectSystemError("epoll_ctl(DEL)", [ENOENT]) { try epoll.remove(event.fd) }
    }

    /// `--busy-poll`'s wait: an event rung while it polls is taken, and the polling shows as this
    /// thread's CPU time (a sleeping wait uses next to none); after polling it still sleeps, for
    /// the rest of its timeout only, or forever with -1; a zero timeout never polls. The bounds
    /// are far from what a correct wait takes, so a loaded machine does not trip them.
    @Test func epollBusyPollTakesEventsWhilePollingThenSleepsTheRestOfItsTimeout() throws {
        let epoll = try Epoll(maxEvents: 8)
        let event = try EventFD.create()
        defer { event.close() }
        try epoll.add(event.fd, events: .readable, token: 5)
        func threadCPU() -> Double {
            var time = timespec()
            clock_gettime(CLOCK_THREAD_CPUTIME_ID, &time)
            return Double(time.tv_sec) + Double(time.tv_nsec) / 1e9
        }
        func measure(_ body: () throws -> Int) rethrows -> (count: Int, seconds: Double, cpu: Double) {
            let (start, cpu) = (monotonicNanoseconds(), threadCPU())
            let count = try body()
            return (count, Double(monotonicNanoseconds() - start) / 1e9, threadCPU() - cpu)
        }
        var tokens: [UInt64] = []

        // Rung 300 ms into a poll of up to 5 s: taken by the poll, which spent CPU meanwhile (a
        // tenth of that time is enough, so a loaded machine does not fail it).
        Thread.detachNewThread { usleep(300_000); event.ring() }
        let polled = try measure { try epoll.wait(timeoutMilliseconds: -1, busyPollNanoseconds: 5_000_000_000) { token, _ in tokens.append(token) } }
        #expect(polled.count == 1 && tokens == [5])
        #expect(polled.seconds < 2, "the event took \(polled.seconds) s to be seen while polling")
        #expect(polled.cpu >= 0.03, "300 ms of polling used \(polled.cpu) s of CPU: it slept instead")
        event.drain()

        // Rung 100 ms into a wait without timeout that polls 5 ms: the sleep after the poll takes it.
        tokens = []
        Thread.detachNewThread { usleep(100_000); event.ring() }
        let slept = try measure { try epoll.wait(timeoutMilliseconds: -1, busyPollNanoseconds: 5_000_000) { token, _ in tokens.append(token) } }
        #expect(slept.count == 1 && tokens == [5], "a wait without timeout returned \(slept.count) events after \(slept.seconds) s")
        event.drain()

        // Nothing ready: 1.9 s of polling, then a sleep for the rest of the 2 s only. Sleeping
        // the whole timeout after the poll would take 3.9 s; the bound leaves 1.5 s for load.
        let quiet = try measure { try epoll.wait(timeoutMilliseconds: 2000, busyPollNanoseconds: 1_900_000_000) { _, _ in } }
        #expect(quiet.count == 0)
        #expect(quiet.seconds >= 1.999, "returned after \(quiet.seconds) s, before its 2 s timeout")
        #expect(quiet.seconds < 3.5, "took \(quiet.seconds) s: it slept the whole timeout after polling")

        // The timeout bounds the poll: 20 ms, however long the poll allowed.
        let short = try measure { try epoll.wait(timeoutMilliseconds: 20, busyPollNanoseconds: 5_000_000_000) { _, _ in } }
        #expect(short.count == 0)
        #expect(short.seconds >= 0.019 && short.seconds < 2, "a 20 ms wait with a 5 s poll took \(short.seconds) s")

        // A zero timeout returns at once, however long the poll allowed.
        let immediate = try measure { try epoll.wait(timeoutMilliseconds: 0, busyPollNanoseconds: 5_000_000_000) { _, _ in } }
        #expect(immediate.count == 0)
        #expect(immediate.seconds < 2, "a zero-timeout wait polled for \(immediate.seconds) s")
    }
}
