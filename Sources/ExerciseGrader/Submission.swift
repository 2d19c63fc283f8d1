// Submission: what the grader needs from a set of answers, and nothing more.
//
// The exercises (Notebooks/exercises.md) are graded twice: a student's answers
// in `Sources/Exercises` and the reference answers in `Sources/ExerciseSolutions`.
// Both modules define the same types (`SwitchRouter`, `RouterZLoss`, …) and
// hand them to the grader through this one protocol, so the grader never
// imports either module and cannot tell them apart: the same checks run on
// both. That is what lets the tests prove the grader can fail (an untouched
// skeleton must fail every exercise) as well as pass (the references must pass).
//
// Wherever the library already has the right protocol, the answers implement
// it: a router is a `Router`, a balancing loss a `LoadBalancing`, exactly as
// they would be if they were added to the library. Two small protocols below
// add the one thing a check needs to see on top of that (a drop counter, a way
// to hold the noise fixed), and three value types carry exercise 4's numbers.
//
// Legend: N tokens, D model width, E experts, K slots per token.
import MoE

/// One set of answers to the six exercises.
public protocol ExerciseSubmission {
    /// What is being graded, for the report ("your answers in Sources/Exercises").
    var label: String { get }

    // Exercise 1 — top-1 (Switch) routing.
    /// `SwitchRouter(experts:renormalize:)`.
    func makeSwitchRouter(experts: Int, renormalize: Bool) -> Router

    // Exercise 2 — the router z-loss.
    /// `RouterZLoss(weight:)`.
    func makeZLoss(weight: Float) -> LoadBalancing

    // Exercise 3 — a capacity factor, overflow in token order, drops counted.
    /// ⌈factor · tokens · slots / experts⌉, at least 1.
    func capacityLimit(tokens: Int, slots: Int, experts: Int, factor: Double) -> Int
    /// `CapacityRouter(base:factor:)`.
    func makeCapacityRouter(base: Router, factor: Double) -> DropCountingRouter

    // Exercise 4 — remove the balancing loss and measure the collapse.
    /// The load of a set of experts, from how many token-slots each received.
    func measureLoad(tokenCounts: [Int]) -> LoadMeasurement
    /// Trains `task`'s model with or without the Switch loss and measures its routing.
    func runCollapseExperiment(balanced: Bool, task: CollapseTask) -> CollapseRun

    // Exercise 5 — noisy top-k gating.
    /// `NoisyTopKRouter(modelDim:experts:k:seed:)`.
    func makeNoisyTopKRouter(modelDim: Int, experts: Int, k: Int, seed: UInt64) -> NoiseHoldingRouter

    // Exercise 6 — expert-choice routing.
    /// `ExpertChoiceRouter(experts:k:capacityFactor:)`.
    func makeExpertChoiceRouter(experts: Int, k: Int, capacityFactor: Double) -> Router
}

/// A router that turns tokens away when an expert is full, and counts them.
public protocol DropCountingRouter: Router {
    /// Slots dropped by every `route` call so far (a running total).
    var droppedSlotsSoFar: Int { get }
}

/// A router with random noise that a check can hold fixed.
public protocol NoiseHoldingRouter: Router {
    /// ε [N, E]: when set, training-mode routing uses these values instead of
    /// drawing new ones. Finite differences need the same ε on every
    /// evaluation, or they would measure the noise instead of the gradient.
    var fixedNoise: Tensor? { get set }
}

// MARK: - Exercise 4's numbers

/// How evenly a set of experts was used.
public struct LoadMeasurement: Equatable, CustomStringConvertible {
    /// Share of all routed token-slots each expert received; sums to 1
    /// (all 0 when nothing was routed).   [E]
    public var shares: [Double]
    /// Standard deviation of the shares over their mean, 1/E (population
    /// standard deviation, divided by E): 0 for an even load, √(E−1) when
    /// one expert takes everything.
    public var coefficientOfVariation: Double
    /// The largest share.
    public var largestShare: Double
    /// Experts whose share is below `LoadMeasurement.idleShare` (1%).
    public var idleExperts: Int

    /// The share below which an expert counts as idle.
    public static let idleShare = 0.01

    public init(shares: [Double], coefficientOfVariation: Double, largestShare: Double, idleExperts: Int) {
        self.shares = shares
        self.coefficientOfVariation = coefficientOfVariation
        self.largestShare = largestShare
        self.idleExperts = idleExperts
    }

    public var description: String {
        let percent = shares.map { String(format: "%.1f%%", 100 * $0) }.joined(separator: " ")
        return "shares [\(percent)], CV \(String(format: "%.3f", coefficientOfVariation)), " +
            "largest \(String(format: "%.1f%%", 100 * largestShare)), idle \(idleExperts)"
    }
}

/// What one run of exercise 4's experiment produced.
public struct CollapseRun {
    /// The trained model; the grader reads its balancing terms and accuracy.
    public var model: MoEClassifier
    /// Routing over the whole test set after training (`Trainer.routingReport`).
    public var statistics: RoutingStatistics
    /// `measureLoad(tokenCounts: statistics.tokenCounts)`.
    public var measurement: LoadMeasurement

    public init(model: MoEClassifier, statistics: RoutingStatistics, measurement: LoadMeasurement) {
        self.model = model
        self.statistics = statistics
        self.measurement = measurement
    }
}

import Foundation  // String(format:)
