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

// MARK: - Your routers on the command line

/// The routers `mnist-moe --router NAME` and `gpt-moe --router NAME` can
/// train besides the library's (RouterRegistry.swift). Both programs call
/// `register()` before reading their options, so a name added here is a
/// `--router` word at the next `swift run`: trained, reported and written
/// to summary.json like `--router topk`. Notebooks/exercises.md, "Your router
/// on the command line", walks through it.
public enum ExerciseRouters {
    public static func register() {
        RouterRegistry.register("exercise1", about: "your SwitchRouter (exercise 1): top-1, w = p") { r in
            SwitchRouter(experts: r.experts, renormalize: false)
        }
        RouterRegistry.register("exercise3", about: "top-k with your CapacityRouter (exercise 3), factor 1.25") { r in
            CapacityRouter(base: TopKGating(experts: r.experts, k: r.k), factor: 1.25)
        }
        RouterRegistry.register("exercise5", about: "your NoisyTopKRouter (exercise 5)") { r in
            NoisyTopKRouter(modelDim: r.modelDim, experts: r.experts, k: r.k, seed: r.seed)
        }
        RouterRegistry.register("exercise6", about: "your ExpertChoiceRouter (exercise 6), capacity factor 1") { r in
            ExpertChoiceRouter(experts: r.experts, k: r.k, capacityFactor: 1)
        }
        // Your own router: write a class that conforms to `Router` in a new
        // file of this folder (Router.swift says how), then add it here, e.g.
        //
        //     RouterRegistry.register("mine", about: "my router") { r in
        //         MyRouter(experts: r.experts, k: r.k)
        //     }
        //
        // and train it with `swift run mnist-moe --router mine`.
    }
}
