// CollapseTask: exercise 4's small, fast stand-in for MNIST.
//
// Part 3, §4 trains the MNIST model without its balancing loss and watches two
// or three experts take almost every token. Exercise 4 repeats that experiment
// in a second and a half, on data that needs no download: points around a few
// class centres in a 16-dimensional space, classified by the same model shape
// (Linear → ReLU → MoELayer → Linear) at a smaller width. What collapses the
// router is the same feedback loop as on MNIST — an expert that receives tokens
// improves, so the router sends it more (Notebooks/part1-foundations.md, §5) —
// and it needs nothing of MNIST to happen.
//
// The data. Each class c has a centre μ_c drawn once from N(0, s²·I); a point
// of class c is μ_c + N(0, σ²·I), labels uniform over the classes. With s = 1
// and σ = 1 the clusters overlap a little, so the task is learnable (test
// accuracy about 97%) but not trivial. Four classes for eight experts: there is
// more room than the task needs, as on MNIST (part 3, §4), so nothing forces
// the router to use every expert. Everything is drawn from one seeded
// `Xoshiro256`, so the same task is built on every machine.
//
// The sizes were chosen by running the experiment (the reference answer) over
// 4 data seeds × 3 model seeds: without balancing the load's coefficient of
// variation ended between 0.75 and 1.09, with the Switch loss between 0.04 and
// 0.17. The grader's thresholds (exercise 4) sit well inside that gap.
//
// Legend: P features per point, C classes, D width of the MoE layer, H expert
// hidden width, E experts, K experts per token.
import MoE

/// The data and the model sizes of exercise 4.
public struct CollapseTask {
    public var features: Int        // P
    public var classes: Int         // C
    public var hidden: Int          // D, the MoE layer's width
    public var expertHidden: Int    // H
    public var experts: Int         // E
    public var k: Int               // K, top-k with renormalisation, as in part 3
    /// α of the Switch loss in the balanced run; the walkthrough's 0.1.
    public var auxWeight: Float
    /// Epochs, batch size, learning rate and the seed of the data order.
    public var training: TrainingConfig
    /// Seed of the model's initial weights.
    public var modelSeed: UInt64
    public let train: LabeledImages   // [trainCount, P]
    public let test: LabeledImages    // [testCount, P]

    /// The task the grader runs: 2,048 training points of 4 classes, 512 test
    /// points, 8 experts, top-2, 8 epochs of 32 batches (about 0.1 s per run).
    public static func standard() -> CollapseTask {
        var training = TrainingConfig()
        training.epochs = 8          // long enough for the unbalanced router to settle
        training.batchSize = 64      // the walkthrough's
        training.learningRate = 1e-3 // the walkthrough's
        training.seed = 0
        return CollapseTask(features: 16, classes: 4, hidden: 32, expertHidden: 16, experts: 8, k: 2,
                            auxWeight: 0.1, training: training, modelSeed: 0,
                            trainCount: 2048, testCount: 512, dataSeed: 4)
    }

    public init(features: Int, classes: Int, hidden: Int, expertHidden: Int, experts: Int, k: Int,
                auxWeight: Float, training: TrainingConfig, modelSeed: UInt64,
                trainCount: Int, testCount: Int, dataSeed: UInt64,
                centreSpread: Float = 1, pointSpread: Float = 1) {
        self.features = features
        self.classes = classes
        self.hidden = hidden
        self.expertHidden = expertHidden
        self.experts = experts
        self.k = k
        self.auxWeight = auxWeight
        self.training = training
        self.modelSeed = modelSeed
        var rng = Xoshiro256(seed: dataSeed)
        let centres = Tensor.normal([classes, features], std: centreSpread, rng: &rng)   // μ [C, P]
        func points(_ count: Int) -> LabeledImages {
            var x = [Float](repeating: 0, count: count * features)   // [count, P]
            var labels = [Int](repeating: 0, count: count)
            for n in 0..<count {
                let c = rng.below(classes)
                labels[n] = c
                for f in 0..<features { x[n * features + f] = centres[c, f] + pointSpread * rng.normal() }
            }
            return LabeledImages(images: x, labels: labels, pixels: features)
        }
        train = points(trainCount)
        test = points(testCount)
    }
}
