// Trainer: the loop that turns a model and a data set into the numbers of Part 3.
//
// One step is the four lines every training loop has, written out by hand:
//
//     model.zeroGrad()                                   gradients start at 0 (backward adds)
//     logits = model.forward(x)                          [B, 10]
//     loss   = cross-entropy(logits, y) + α·aux          aux from the MoE layer
//     model.backward(dL/dlogits); adam.step()
//
// Around it: seeded shuffling, per-epoch records (loss, aux, accuracy, time),
// evaluation on the test set (timed separately: `train_seconds` counts steps
// only), and the routing analysis of Part 3 (expert usage, router entropy,
// digit × expert specialization). Notebooks/part3-mnist.md walks through a run.
//
// Legend: B batch size, P pixels (784), C classes (10), E experts.
import Foundation

/// Images and labels as the trainer consumes them.
public struct LabeledImages {
    /// [count, P] row-major, values in [0, 1].
    public let images: [Float]
    public let labels: [Int]
    public let pixels: Int
    public var count: Int { labels.count }

    public init(images: [Float], labels: [Int], pixels: Int) {
        precondition(images.count == labels.count * pixels,
                     "LabeledImages: \(images.count) pixel values for \(labels.count) labels of \(pixels) pixels")
        self.images = images; self.labels = labels; self.pixels = pixels
    }

    /// Rows `indices` as a batch tensor [B, P] and their labels.
    public func batch<Indices: Collection>(_ indices: Indices) -> (x: Tensor, y: [Int]) where Indices.Element == Int {
        var x = Tensor.zeros([indices.count, pixels])
        x.data.withUnsafeMutableBufferPointer { dst in
            images.withUnsafeBufferPointer { src in
                for (r, i) in indices.enumerated() {
                    (dst.baseAddress! + r * pixels).update(from: src.baseAddress! + i * pixels, count: pixels)
                }
            }
        }
        return (x, indices.map { labels[$0] })
    }
}

/// Hyperparameters of a run; the defaults are the walkthrough's.
public struct TrainingConfig {
    public var epochs = 30
    public var batchSize = 64
    public var learningRate: Float = 1e-3
    public var seed: UInt64 = 0
    public var shuffle = true
    public init() {}
}

/// What one epoch did.
public struct EpochRecord {
    public var epoch: Int
    /// Mean cross-entropy over the epoch's batches (the task loss, without aux).
    public var trainLoss: Double
    /// Mean unweighted load-balancing loss over the batches (0 for dense).
    public var auxLoss: Double
    /// Share of training images classified correctly, as the epoch went.
    public var trainAccuracy: Double
    /// Share of test images classified correctly after the epoch.
    public var testAccuracy: Double
    /// Seconds of training steps in this epoch (evaluation excluded).
    public var seconds: Double
}

/// The routing analysis of Part 3, measured on a data set.
public struct RoutingReport {
    public var statistics: RoutingStatistics
    /// [classes][experts]: of the routing slots of images of class c, the share
    /// that went to each expert (each row sums to 1; with top-k, an expert can
    /// hold at most 1/k of a class, since an image picks an expert once).
    public var specialization: [[Double]]
    /// The label of every image routed, in order.   [count]
    public var labels: [Int] = []
    /// Each image's top-1 expert (its highest-weight slot; −1 if no expert took it).   [count]
    public var topExperts: [Int] = []

    /// Class × top-1 expert counts, the table the mutual information is read from.
    public var topExpertTable: ContingencyTable {
        ContingencyTable(labels: labels, experts: topExperts, labelCount: specialization.count,
                         expertCount: statistics.usage.count)
    }

    /// I(class; top-1 expert) in bits beside its chance level under shuffled labels
    /// and the permutation p-value (Analysis/PermutationTest.swift;
    /// Notebooks/part6-specialization.md, §6 reads it for MNIST).
    public func specializationTest(permutations: Int = 1000, seed: UInt64 = 0) -> PermutationTest {
        .mutualInformation(labels: labels, experts: topExperts, labelCount: specialization.count,
                           expertCount: statistics.usage.count, permutations: permutations, seed: seed)
    }
}

/// Trains one classifier with Adam, epoch by epoch.
public final class Trainer {
    public let model: Classifier
    public let config: TrainingConfig
    public let optimizer: Adam
    /// The shuffling generator; its state at an epoch boundary is what `--resume` saves.
    public var rng: Xoshiro256
    /// Epochs finished so far.
    public var epochsDone = 0
    public var history: [EpochRecord] = []

    public init(model: Classifier, config: TrainingConfig) {
        self.model = model
        self.config = config
        optimizer = Adam(parameters: model.parameters, learningRate: config.learningRate)
        // A stream of its own, so the initial weights and the data order do not
        // depend on each other: changing the model does not reshuffle the data.
        rng = Xoshiro256(seed: config.seed ^ 0xDA7A_0DE5)
    }

    /// Runs one epoch: shuffle, then a step per batch. `onBatch(done, total, loss, aux)`
    /// reports running means for a progress bar.
    public func trainEpoch(on data: LabeledImages,
                           onBatch: (Int, Int, Double, Double) -> Void = { _, _, _, _ in }) -> EpochRecord {
        var order = Array(0..<data.count)
        if config.shuffle { rng.shuffle(&order) }
        let batches = (data.count + config.batchSize - 1) / config.batchSize
        var lossSum = 0.0, auxSum = 0.0, correct = 0
        var seconds = 0.0
        for b in 0..<batches {
            let slice = order[(b * config.batchSize)..<min(data.count, (b + 1) * config.batchSize)]
            let (x, y) = data.batch(slice)
            let start = DispatchTime.now().uptimeNanoseconds
            model.setMode(training: true, progress: progress(batch: b, of: batches))
            model.zeroGrad()
            let logits = model.forward(x)                                         // [B, C]
            let ce = SoftmaxCrossEntropy.compute(logits: logits, labels: y)
            model.backward(ce.gradient)                                            // adds α·∂aux itself
            optimizer.step()
            model.afterStep()
            seconds += Double(DispatchTime.now().uptimeNanoseconds - start) * 1e-9
            lossSum += ce.loss
            auxSum += model.auxLoss
            for r in 0..<y.count where logits.argmaxRow(r) == y[r] { correct += 1 }
            onBatch(b + 1, batches, lossSum / Double(b + 1), auxSum / Double(b + 1))
        }
        epochsDone += 1
        let record = EpochRecord(epoch: epochsDone, trainLoss: lossSum / Double(max(batches, 1)),
                                 auxLoss: auxSum / Double(max(batches, 1)),
                                 trainAccuracy: Double(correct) / Double(max(data.count, 1)),
                                 testAccuracy: .nan, seconds: seconds)
        history.append(record)
        return record
    }

    /// Fraction of the whole run done before this batch's step: 0 at the first
    /// step of epoch 1, approaching 1 at the last step of the last epoch.
    private func progress(batch b: Int, of batches: Int) -> Double {
        let total = max(1, config.epochs * batches)
        return Double(epochsDone * batches + b) / Double(total)
    }

    /// Share of `data` the model classifies correctly, evaluated in chunks so the
    /// activations of 10,000 images never sit in memory at once.
    public static func accuracy(of model: Classifier, on data: LabeledImages, chunk: Int = 1000) -> Double {
        var correct = 0
        var start = 0
        model.setMode(training: false, progress: 1)
        while start < data.count {
            let (x, y) = data.batch(start..<min(data.count, start + chunk))
            let logits = model.forward(x)
            for r in 0..<y.count where logits.argmaxRow(r) == y[r] { correct += 1 }
            start += chunk
        }
        return Double(correct) / Double(max(data.count, 1))
    }

    /// Routes every image of `data` through the MoE layer and reports usage,
    /// entropy and the class × expert specialization.
    public static func routingReport(of model: MoEClassifier, on data: LabeledImages,
                                     classes: Int = 10, chunk: Int = 1000) -> RoutingReport {
        model.moe.resetStatistics()
        let e = model.moe.experts.count
        var counts = [[Int]](repeating: [Int](repeating: 0, count: e), count: classes)
        var start = 0
        var topExperts: [Int] = []
        model.setMode(training: false, progress: 1)
        while start < data.count {
            let (x, y) = data.batch(start..<min(data.count, start + chunk))
            _ = model.forward(x)
            let r = model.moe.lastRouting!
            for t in 0..<y.count {
                for j in 0..<r.k { if let e = r.dispatchedExpert(token: t, slot: j) { counts[y[t]][e] += 1 } }
            }
            topExperts += TokenRouting.Layer(layer: 0, routing: r).topExperts
            start += chunk
        }
        let specialization = counts.map { row -> [Double] in
            let total = row.reduce(0, +)
            return row.map { total > 0 ? Double($0) / Double(total) : 0 }
        }
        let report = RoutingReport(statistics: model.moe.statistics, specialization: specialization,
                                   labels: data.labels, topExperts: topExperts)
        model.moe.resetStatistics()
        return report
    }
}
