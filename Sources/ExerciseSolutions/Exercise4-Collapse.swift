// ═══════════════════════════════════════════════════════════════════════════
//  REFERENCE SOLUTION — exercise 4. Try the exercise first, in
//  Sources/Exercises/Exercise4-Collapse.swift; read this afterwards.
// ═══════════════════════════════════════════════════════════════════════════
//
// Remove the balancing loss and measure what happens to the load
// (Notebooks/exercises.md, §4; part3-mnist.md, §4 for the MNIST run).
//
//     share_i = c_i / Σ c          CV = sqrt( (1/E) Σ_i (share_i − 1/E)² ) / (1/E)
//
// Legend: E experts, c_i token-slots expert i received.
import MoE
import ExerciseGrader

public enum CollapseExperiment {
    /// Shares, coefficient of variation, largest share and idle experts of a load.
    public static func measureLoad(tokenCounts: [Int]) -> LoadMeasurement {
        let e = tokenCounts.count
        let total = tokenCounts.reduce(0, +)
        guard e > 0, total > 0 else {   // nothing routed: all shares 0, and no 0/0
            return LoadMeasurement(shares: tokenCounts.map { _ in 0 }, coefficientOfVariation: 0,
                                   largestShare: 0, idleExperts: e)
        }
        let shares = tokenCounts.map { Double($0) / Double(total) }   // [E], sums to 1
        let mean = 1 / Double(e)                                       // the shares' mean, always 1/E
        let variance = shares.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(e)   // population: ÷E
        return LoadMeasurement(shares: shares, coefficientOfVariation: variance.squareRoot() / mean,
                               largestShare: shares.max()!,
                               idleExperts: shares.filter { $0 < LoadMeasurement.idleShare }.count)
    }

    /// Builds the task's model with (α = task.auxWeight) or without the Switch
    /// loss, trains it, routes the test set and measures the load.
    public static func run(balanced: Bool, task: CollapseTask) -> CollapseRun {
        var rng = Xoshiro256(seed: task.modelSeed)
        let model = MoEClassifier(inputSize: task.features, hidden: task.hidden, classes: task.classes,
                                  rng: &rng) { rng in
            MoELayer(modelDim: task.hidden, hiddenDim: task.expertHidden, experts: task.experts,
                     router: TopKGating(experts: task.experts, k: task.k),
                     // The one line the experiment is about: no balancing method at all.
                     balancing: balanced ? [SwitchBalancing(weight: task.auxWeight)] : [],
                     rng: &rng)
        }
        let trainer = Trainer(model: model, config: task.training)
        for _ in 0..<task.training.epochs { _ = trainer.trainEpoch(on: task.train) }
        let statistics = Trainer.routingReport(of: model, on: task.test).statistics
        return CollapseRun(model: model, statistics: statistics,
                           measurement: measureLoad(tokenCounts: statistics.tokenCounts))
    }
}
