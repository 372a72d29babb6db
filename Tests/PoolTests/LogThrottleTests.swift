@testable import Pool
import Testing

/// `LogThrottle`: one line per kind per interval, the next one counting those left out.
@Suite struct LogThrottleTests {
    @Test func admitsOncePerIntervalPerKindAndCountsTheRest() {
        var throttle = LogThrottle(interval: 1_000)
        #expect(throttle.admit("busy", now: 0) == 0)
        #expect(throttle.admit("busy", now: 10) == nil)
        #expect(throttle.admit("busy", now: 999) == nil)
        // Another kind is not held back by the first.
        #expect(throttle.admit("too large", now: 500) == 0)
        // The interval has passed: logged, with the two left out.
        #expect(throttle.admit("busy", now: 1_000) == 2)
        #expect(throttle.admit("busy", now: 1_500) == nil)
        #expect(throttle.admit("busy", now: 2_000) == 1)
        #expect(throttle.admit("busy", now: 5_000) == 0)
    }
}
