// Your answers, handed to the grader. You do not need to edit this file.
//
// `swift run exercises check N` grades the types in this module (the files
// Exercise1-… to Exercise6-… beside this one) through this adapter; the
// reference answers in Sources/ExerciseSolutions have an identical adapter,
// so both are graded by the same checks. Notebooks/exercises.md says what each
// exercise asks.
import MoE
import ExerciseGrader

public struct YourSubmission: ExerciseSubmission {
    public init() {}
    public var label: String { "your answers in Sources/Exercises" }

    public func makeSwitchRouter(experts: Int, renormalize: Bool) -> Router {
        SwitchRouter(experts: experts, renormalize: renormalize)
    }
    public func makeZLoss(weight: Float) -> LoadBalancing { RouterZLoss(weight: weight) }
    public func capacityLimit(tokens: Int, slots: Int, experts: Int, factor: Double) -> Int {
        Exercises.capacityLimit(tokens: tokens, slots: slots, experts: experts, factor: factor)
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
