/// `--max-workers` (PHP-FPM's `pm = dynamic`): the pool grows when too few workers are spare and
/// shrinks when too many are, between `--workers` and `--max-workers`, looked at once a second.
public struct DynamicScaling: Equatable, Sendable {
    /// The most workers the pool grows to (`--max-workers`).
    public var maxWorkers: Int
    /// Fewer spare workers than this: start more (`--min-spare`, PHP-FPM's `pm.min_spare_servers`).
    public var minSpare: Int
    /// More spare workers than this: retire one (`--max-spare`, PHP-FPM's `pm.max_spare_servers`).
    public var maxSpare: Int

    /// The defaults of `--min-spare` and `--max-spare` (PHP-FPM's sample pool: 1 and 3).
    public static let defaultMinSpare = 1
    public static let defaultMaxSpare = 3
    /// Most workers started in one second (PHP-FPM's `FPM_MAX_SPAWN_RATE`).
    public static let largestBurst = 32

    public init(maxWorkers: Int, minSpare: Int = Self.defaultMinSpare, maxSpare: Int = Self.defaultMaxSpare) {
        self.maxWorkers = maxWorkers
        self.minSpare = minSpare
        self.maxSpare = maxSpare
    }
}

/// The once-a-second decision of `DynamicScaling`, apart from the processes it moves so that it
/// can be tested alone. As PHP-FPM does: short of spare workers, start up to the shortfall but at
/// most `burst`, which doubles (to 32) each second the pool is still short and falls back to 1
/// once it is not — a burst of load is met quickly, a trickle slowly; above `maxSpare`, retire one
/// worker a second, so a lull does not empty the pool at once.
struct ScalingPolicy {
    let scaling: DynamicScaling
    /// The fewest workers (`--workers`).
    let floor: Int
    private(set) var burst = 1

    init(_ scaling: DynamicScaling, floor: Int) {
        self.scaling = scaling
        self.floor = floor
    }

    enum Decision: Equatable {
        /// Start workers up to this size.
        case grow(to: Int)
        /// Retire a worker, to this size.
        case shrink(to: Int)
        /// Short of spare workers with `--max-workers` running (PHP-FPM: "reached
        /// pm.max_children").
        case atCeiling
        case stay
    }

    /// What to do with `active` workers of which `spare` run no job and have none waiting.
    /// `canGrow`: no worker is waiting for a respawn (a pool whose workers die at start must not
    /// be grown to its ceiling by the idleness that causes).
    mutating func decide(active: Int, spare: Int, canGrow: Bool) -> Decision {
        if spare < scaling.minSpare {
            guard active < scaling.maxWorkers else { return .atCeiling }
            guard canGrow else { return .stay }
            let more = min(burst, scaling.minSpare - spare, scaling.maxWorkers - active)
            burst = min(burst * 2, DynamicScaling.largestBurst)
            return .grow(to: active + more)
        }
        burst = 1
        if spare > scaling.maxSpare && active > floor { return .shrink(to: active - 1) }
        return .stay
    }
}
