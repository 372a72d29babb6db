@testable import Pool
import Testing

/// `ScalingPolicy`: PHP-FPM's dynamic process manager, a look a second.
@Suite struct DynamicScalingTests {
    @Test func shortOfSpareWorkersItStartsMoreInDoublingBursts() {
        var policy = ScalingPolicy(DynamicScaling(maxWorkers: 100, minSpare: 50, maxSpare: 60), floor: 2)
        var active = 2
        var steps: [Int] = []
        // Every worker busy each second: 1, 2, 4, … more, up to 32 a second, until the ceiling.
        while case .grow(let target) = policy.decide(active: active, spare: 0, canGrow: true) {
            steps.append(target - active)
            active = target
        }
        #expect(steps == [1, 2, 4, 8, 16, 32, 32, 3], "\(steps)")
        #expect(active == 100)
        #expect(policy.decide(active: active, spare: 0, canGrow: true) == .atCeiling)
    }

    @Test func itStartsNoMoreThanTheShortfallAndTheBurstFallsBackOnceMet() {
        var policy = ScalingPolicy(DynamicScaling(maxWorkers: 20, minSpare: 3, maxSpare: 5), floor: 2)
        #expect(policy.decide(active: 2, spare: 0, canGrow: true) == .grow(to: 3))
        #expect(policy.decide(active: 3, spare: 0, canGrow: true) == .grow(to: 5))
        // Two short: two, though the burst is 4 by now.
        #expect(policy.decide(active: 5, spare: 1, canGrow: true) == .grow(to: 7))
        #expect(policy.decide(active: 7, spare: 3, canGrow: true) == .stay)
        // Met once: the next shortfall starts from one again.
        #expect(policy.decide(active: 7, spare: 0, canGrow: true) == .grow(to: 8))
    }

    @Test func aboveMaxSpareItRetiresOneASecondDownToTheFloor() {
        var policy = ScalingPolicy(DynamicScaling(maxWorkers: 10, minSpare: 1, maxSpare: 2), floor: 3)
        #expect(policy.decide(active: 6, spare: 6, canGrow: true) == .shrink(to: 5))
        #expect(policy.decide(active: 5, spare: 5, canGrow: true) == .shrink(to: 4))
        #expect(policy.decide(active: 4, spare: 3, canGrow: true) == .shrink(to: 3))
        #expect(policy.decide(active: 3, spare: 3, canGrow: true) == .stay)
        #expect(policy.decide(active: 6, spare: 2, canGrow: true) == .stay)
    }

    /// A scale-down retires the highest spare slot, not a busy one above it: retiring a busy
    /// one leaves the spare count as it was, and the next looks retired more, down to the floor,
    /// while its job still ran. The highest slot taking work only when none is spare.
    @Test func aScaleDownRetiresASpareSlotBeforeABusyOne() {
        let accepting = [true, true, true, true, false]
        func choose(spare: [Bool]) -> Int? {
            Supervisor.slotToRetire(count: accepting.count, accepting: { accepting[$0] }, spare: { spare[$0] })
        }
        #expect(choose(spare: [true, true, false, false, true]) == 1)
        #expect(choose(spare: [false, false, false, false, true]) == 3)
        #expect(choose(spare: [true, true, true, true, true]) == 3)
        #expect(Supervisor.slotToRetire(count: 2, accepting: { _ in false }, spare: { _ in true }) == nil)
    }

    /// Workers dying at start leave their slots idle: that must not grow the pool to its ceiling.
    @Test func aSlotAwaitingItsWorkerHoldsGrowthBack() {
        var policy = ScalingPolicy(DynamicScaling(maxWorkers: 10, minSpare: 2, maxSpare: 4), floor: 2)
        #expect(policy.decide(active: 2, spare: 0, canGrow: false) == .stay)
        #expect(policy.decide(active: 2, spare: 0, canGrow: true) == .grow(to: 3))
    }
}
