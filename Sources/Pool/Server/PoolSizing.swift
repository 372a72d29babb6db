import Logging

/// `--max-workers`: once a second, the pool's size follows its spare workers (`ScalingPolicy`),
/// through the same steps as `scale N`. Not during a stop or a rolling restart, which move
/// workers themselves.
extension Master {
    static let scaleCheckInterval: Int64 = 1_000_000_000

    func adjustPoolSize(now: Int64) {
        guard phase == .running, now >= nextScaleCheck, var policy = scalingPolicy else { return }
        nextScaleCheck = now + Self.scaleCheckInterval
        guard !supervisor.isRollingRestart else { return }
        let active = supervisor.activeCount, spare = supervisor.spareWorkers()
        let decision = policy.decide(active: active, spare: spare, canGrow: !supervisor.awaitsWorker)
        scalingPolicy = policy
        switch decision {
        case .grow(let target):
            logger.info("dynamic scaling: starting workers", metadata: [
                "spare": "\(spare)", "min-spare": "\(policy.scaling.minSpare)", "workers": "\(active)", "to": "\(target)",
            ])
            scale(to: target)
        case .shrink(let target):
            logger.info("dynamic scaling: retiring a worker", metadata: [
                "spare": "\(spare)", "max-spare": "\(policy.scaling.maxSpare)", "workers": "\(active)", "to": "\(target)",
            ])
            // A spare slot: one running a job would leave the spare count as it was.
            scale(to: target, spareFirst: true)
        case .atCeiling:
            ceilingReached += 1
            // Once a minute at most: under sustained load it would say the same every second.
            if lastCeilingWarning.map({ now - $0 >= 60_000_000_000 }) ?? true {
                lastCeilingWarning = now
                logger.warning("dynamic scaling: --max-workers reached with too few spare workers; consider raising it", metadata: [
                    "max-workers": "\(policy.scaling.maxWorkers)", "spare": "\(spare)", "min-spare": "\(policy.scaling.minSpare)",
                ])
            }
        case .stay:
            break
        }
    }
}
