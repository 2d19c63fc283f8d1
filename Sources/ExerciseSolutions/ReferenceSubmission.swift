// ═══════════════════════════════════════════════════════════════════════════
//  REFERENCE SOLUTIONS — the answers to Notebooks/exercises.md, kept out of
//  Sources/Exercises so that they are not read by accident. Each file opens
//  with this warning; try the exercise before you read its answer.
// ═══════════════════════════════════════════════════════════════════════════
//
// This file hands the reference answers to the grader. `swift run exercises
// check all --reference` grades them (they must pass; the tests check that).
import MoE
import ExerciseGrader

public struct ReferenceSubmission: ExerciseSubmission {
    public init() {}
    public var label: String { "the reference solutions in Sources/ExerciseSolutions" }

    public func makeSwitchRouter(experts: Int, renormalize: Bool) -> Router {
        SwitchRouter(experts: experts, renormalize: renormalize)
    }
    public func makeZLoss(weight: Float) -> LoadBalancing { RouterZLoss(weight: weight) }
    public func capacityLimit(tokens: Int, slots: Int, experts: Int, factor: Double) -> Int {
        ExerciseSolutions.capacityLimit(tokens: tokens, slots: slots, experts: experts, factor: factor)
    }
    public func makeCapacityRouter(base: Router, factor: Double) -> DropCountingRouter {
        CapacityRouter(base: base, factor: factor)
    }
    public func measureLoad(tokenCounts: [Int]) -> LoadMeasurement {
        CollapseExperiment.measureLoad(tokenCounts: tokenCounts)
    }
    public func runCollapseExperiment(balanced: Bool, task: CollapseTask) -> CollapseRun {
        CollapseExperiment.run(balanced: balanced, task: task)
    }
    public func makeNoisyTopKRouter(modelDim: Int, experts: Int, k: Int, seed: UInt64) -> NoiseHoldingRouter {
        NoisyTopKRouter(modelDim: modelDim, experts: experts, k: k, seed: seed)
    }
    public func makeExpertChoiceRouter(experts: Int, k: Int, capacityFactor: Double) -> Router {
        ExpertChoiceRouter(experts: experts, k: k, capacityFactor: capacityFactor)
    }
}
