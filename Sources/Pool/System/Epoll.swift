import CSysV
import Glibc
import SystemPackage

/// An epoll instance with a reusable event array. Level-triggered: the loop changes interest
/// explicitly (stop reading a connection for backpressure, watch writability only while output
/// is pending), which keeps the state visible in one place.
public final class Epoll {
    /// Interest and readiness bits (`EPOLL*`).
    public struct Events: OptionSet, Sendable {
        /// The `epoll_event.events` bit mask.
        public let rawValue: UInt32
        /// Wraps a raw `EPOLL*` mask.
        public init(rawValue: UInt32) { self.rawValue = rawValue }
        /// Data to read, end of stream, or a pending connection on a listener (`EPOLLIN`).
        public static let readable = Events(rawValue: EPOLLIN.rawValue)
        /// Room to write (`EPOLLOUT`).
        public static let writable = Events(rawValue: EPOLLOUT.rawValue)
        /// Both directions are closed (`EPOLLHUP`); reported even when not asked for.
        public static let hangup = Events(rawValue: EPOLLHUP.rawValue)
        /// An error is pending on the descriptor (`EPOLLERR`); reported even when not asked for.
        public static let error = Events(rawValue: EPOLLERR.rawValue)
        /// The peer shut down its writing half (`EPOLLRDHUP`).
        public static let readHangup = Events(rawValue: EPOLLRDHUP.rawValue)
        /// Report a change once rather than a state for as long as it lasts (`EPOLLET`).
        public static let edgeTriggered = Events(rawValue: EPOLLET.rawValue)
    }

    /// The epoll descriptor itself, closed on deinit.
    public let fd: Int32
    /// Filled by each `epoll_wait`. Raw memory rather than an array in a `var`: the master's loop
    /// reads it every turn, and an array property would cost an exclusivity check and a
    /// uniqueness check each time.
    private let events: UnsafeMutableBufferPointer<epoll_event>

    /// The corresponding C function is `epoll_create1`.
    public init(maxEvents: Int = 256) throws {
        fd = try valueOrErrno("epoll_create1") { epoll_create1(Int32(EPOLL_CLOEXEC)) }.get()
        events = .allocate(capacity: max(1, maxEvents))
        events.initialize(repeating: epoll_event())
    }

    deinit {
        close(fd)
        events.deallocate()
    }

    /// The corresponding C function is `epoll_ctl(EPOLL_CTL_ADD)`.
    public func add(_ target: Int32, events interest: Events, token: UInt64) throws {
        try control(EPOLL_CTL_ADD, target, interest, token, "epoll_ctl(ADD)")
    }

    /// The corresponding C function is `epoll_ctl(EPOLL_CTL_MOD)`.
    public func modify(_ target: Int32, events interest: Events, token: UInt64) throws {
        try control(EPOLL_CTL_MOD, target, interest, token, "epoll_ctl(MOD)")
    }

    /// The corresponding C function is `epoll_ctl(EPOLL_CTL_DEL)`.
    public func remove(_ target: Int32) throws {
        var event = epoll_event()
        _ = try valueOrErrno("epoll_ctl(DEL)") { epoll_ctl(fd, EPOLL_CTL_DEL, target, &event) }.get()
    }

    private func control(_ op: Int32, _ target: Int32, _ interest: Events, _ token: UInt64, _ name: String) throws {
        var event = epoll_event()
        event.events = interest.rawValue
        event.data.u64 = token
        _ = try valueOrErrno(name) { epoll_ctl(fd, op, target, &event) }.get()
    }

    /// Waits up to `timeoutMilliseconds` (-1: forever) and calls `body` for each ready fd.
    /// A signal interrupting the wait returns 0 events (the loop then looks at its signal state).
    ///
    /// `busyPollNanoseconds` > 0: before sleeping, polls (a zero timeout, yielding the CPU to
    /// anything else runnable between polls) for up to that long, and no longer than the timeout.
    /// Waking a sleeping process costs tens of microseconds on a virtual machine, more than a
    /// short request takes, so a low-concurrency load is answered sooner; the price is CPU spent
    /// polling. Polling and the sleep after it together last the timeout, rounded up to a whole
    /// millisecond (so a wait with nothing ready ends up to 1 ms late, never early).
    ///
    /// The corresponding C function is `epoll_wait`.
    @discardableResult
    public func wait(timeoutMilliseconds: Int32, busyPollNanoseconds: Int64 = 0,
                     _ body: (UInt64, Events) throws -> Void) throws -> Int {
        let polls = busyPollNanoseconds > 0 && timeoutMilliseconds != 0
        guard var count = try collect(timeoutMilliseconds: polls ? 0 : timeoutMilliseconds) else { return 0 }
        if count == 0 && polls {
            let start = monotonicNanoseconds()
            let timeout = timeoutMilliseconds > 0 ? Int64(timeoutMilliseconds) * 1_000_000 : Int64.max
            let span = min(busyPollNanoseconds, timeout)
            let end = span > Int64.max - start ? Int64.max : start + span
            while count == 0 && monotonicNanoseconds() < end {
                sched_yield()
                guard let polled = try collect(timeoutMilliseconds: 0) else { return 0 }
                count = polled
            }
            if count == 0 {
                let rest = timeout == .max ? -1 : max(0, Int32((timeout - (monotonicNanoseconds() - start) + 999_999) / 1_000_000))
                guard let slept = try collect(timeoutMilliseconds: rest) else { return 0 }
                count = slept
            }
        }
        for i in 0..<count {
            try body(events[i].data.u64, Events(rawValue: events[i].events))
        }
        return count
    }

    /// One `epoll_wait` into `events`: the count ready, or `nil` if a signal interrupted it.
    private func collect(timeoutMilliseconds: Int32) throws -> Int? {
        let count = epoll_wait(fd, events.baseAddress, Int32(events.count), timeoutMilliseconds)
        if count < 0 {
            if Glibc.errno == EINTR { return nil }
            throw SystemError("epoll_wait", .current)
        }
        return Int(count)
    }
}
