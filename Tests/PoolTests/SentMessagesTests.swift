@testable import Pool
import Testing

/// `SentMessages`: which acknowledged jobs a removed shared queue took with it.
@Suite struct SentMessagesTests {
    /// A taken message clears itself and every older one; an id it does not hold changes nothing.
    @Test func takenMessageClearsItAndEveryOlderOne() {
        var sent = SentMessages(queueBytes: 1 << 20)
        sent.sent([1, 2])
        sent.sent([3])
        sent.sent([] as [UInt64])
        sent.sent([4, 5])
        #expect(sent.notTaken == [1, 2, 3, 4, 5])
        sent.taken(firstJob: 99)
        #expect(sent.notTaken == [1, 2, 3, 4, 5])
        // Only a message's first job identifies it.
        sent.taken(firstJob: 2)
        #expect(sent.notTaken == [1, 2, 3, 4, 5])
        sent.taken(firstJob: 3)
        #expect(sent.notTaken == [4, 5])
        // Older than what is recorded: nothing to clear.
        sent.taken(firstJob: 1)
        #expect(sent.notTaken == [4, 5])
        sent.taken(firstJob: 4)
        #expect(sent.notTaken.isEmpty)
    }

    /// A queue of 64 bytes holds at most 64 / 16 = 4 jobs (an empty job record each), so only the
    /// newest messages holding at most 4 jobs in all are kept: anything older has surely been
    /// taken, however many jobs a message carries.
    @Test func keepsNoMoreJobsThanTheQueueCanHold() {
        var sent = SentMessages(queueBytes: 64)
        #expect(sent.limit == 4)
        for first in stride(from: UInt64(1), through: 19, by: 2) { sent.sent([first, first + 1]) }
        #expect(sent.notTaken == Array(17...20))
        sent.sent([21, 22, 23])
        #expect(sent.notTaken == [21, 22, 23])
        sent.sent([24, 25, 26, 27, 28])
        #expect(sent.notTaken == [24, 25, 26, 27, 28], "a message larger than the limit is kept whole, alone")
        sent.taken(firstJob: 24)
        #expect(sent.notTaken.isEmpty)
    }

    /// A job run again after its worker died keeps its id: the new message is found once the old
    /// one has been cleared (at the same reap that re-queued the job).
    @Test func aJobSentAgainIsFoundInItsNewMessage() {
        var sent = SentMessages(queueBytes: 1 << 20)
        sent.sent([7, 8])
        sent.sent([9])
        sent.taken(firstJob: 7)
        sent.sent([8])
        sent.taken(firstJob: 9)
        #expect(sent.notTaken == [8])
        sent.taken(firstJob: 8)
        #expect(sent.notTaken.isEmpty)
    }
}
