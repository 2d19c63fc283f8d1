// Exercise 4 — remove the balancing loss and measure the collapse.     (medium)
//
// Set in Notebooks/exercises.md, §4; the same experiment on MNIST is
// part3-mnist.md, §4, and why balancing is needed is part1-foundations.md, §5.
// Grade it with:    swift run exercises check 4      (trains two tiny models, about 0.1 s)
//
// A behaviour exercise. You train the same small MoE classifier twice on a
// synthetic task (CollapseTask, in Sources/ExerciseGrader), once with the
// Switch load-balancing loss and once with no balancing at all, then measure
// how evenly each spreads the test set over its experts. The grader checks
// your measurements against the statistics your runs recorded and that the
// unbalanced run really collapsed.
//
//     share_i = c_i / Σ_m c_m            c_i: token-slots expert i received
//     CV      = σ / μ                    μ = 1/E (the shares' mean), σ² = (1/E) Σ_i (share_i − μ)²
//
// CV is 0 for a perfectly even load and √(E − 1) when one expert takes all.
//
// Legend: E experts, c_i token-slots of expert i.
import MoE
import ExerciseGrader

public enum CollapseExperiment {
    /// Shares, coefficient of variation, largest share and idle experts of a load.
    public static func measureLoad(tokenCounts: [Int]) -> LoadMeasurement {
        // Step 1. The shares: each count over the total. If nothing was routed
        //         (total 0), every share is 0 and the CV is 0 — no 0/0.
        // Step 2. The CV as defined above: the population variance (divide by
        //         E, not E − 1), its square root, over the mean 1/E.
        // Step 3. The largest share, and how many shares are below
        //         LoadMeasurement.idleShare (1%): the idle experts.
        //
        // Placeholder (wrong): all zeros.
        return LoadMeasurement(shares: tokenCounts.map { _ in 0 }, coefficientOfVariation: 0,
                               largestShare: 0, idleExperts: 0)
    }

    /// Trains the task's model with (`balanced`) or without the Switch loss and
    /// measures its routing on the test set.
    public static func run(balanced: Bool, task: CollapseTask) -> CollapseRun {
        // Step 1. The model, from a generator seeded with task.modelSeed:
        //         MoEClassifier(inputSize: task.features, hidden: task.hidden,
        //                       classes: task.classes, rng: &rng) { rng in MoELayer(…) }
        //         with an MoELayer of task.experts experts of width
        //         task.expertHidden, router TopKGating(experts: task.experts,
        //         k: task.k), and balancing [SwitchBalancing(weight:
        //         task.auxWeight)] when `balanced` — and when not? That is the
        //         one line this exercise is about.
        // Step 2. Train: a Trainer(model:config: task.training), and
        //         task.training.epochs calls of trainEpoch(on: task.train).
        // Step 3. Route the test set: Trainer.routingReport(of: model, on: task.test).statistics.
        // Step 4. Return CollapseRun(model:statistics:measurement:) with
        //         measurement = measureLoad(tokenCounts: statistics.tokenCounts).
        //
        // Placeholder (wrong): ignores `balanced`, does not train, measures nothing.
        var rng = Xoshiro256(seed: task.modelSeed)
        let model = MoEClassifier(inputSize: task.features, hidden: task.hidden, classes: task.classes,
                                  rng: &rng) { rng in
            MoELayer(modelDim: task.hidden, hiddenDim: task.expertHidden, experts: task.experts,
                     router: TopKGating(experts: task.experts, k: task.k),
                     balancing: [SwitchBalancing(weight: task.auxWeight)], rng: &rng)
        }
        let statistics = RoutingStatistics(experts: task.experts)
        return CollapseRun(model: model, statistics: statistics,
                           measurement: measureLoad(tokenCounts: statistics.tokenCounts))
    }
}
