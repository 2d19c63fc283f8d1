// LanguageModelTrainer: the loop that trains a GPT on token windows and
// measures what the notes measured.
//
// One step, each phase timed on its own (the notes' forward/backward/optimizer
// columns):
//
//     forward    logits = model.forward(inputs); loss = cross-entropy(logits, targets) + Σ α·aux
//     backward   model.zeroGrad(); model.backward(dL/dlogits)       (MoE layers add α·∂aux)
//     optimiser  adam.step(); model.afterStep()                     (the aux-loss-free bias moves)
//
// Before each step the MoE layers learn whether they are training (router
// noise and expert dropout apply only then) and how far training has got
// (step / planned steps), which drives schedules such as the router
// temperature; evaluation and sampling run in evaluation mode.
//
// Around it: windows shuffled once per epoch with a seeded generator; every
// `evalInterval` steps the validation loss on a fixed subset of validation
// windows, the mean training loss and throughput since the last evaluation,
// and per MoE layer what routing did on those training steps (expert usage,
// router entropy); early stopping when the validation loss has not improved
// for `patience` evaluations; the best weights kept in memory (and handed to
// `onImprovement`, which the command line uses to write the checkpoint).
// Notebooks/part4-gpt.md, §8.
//
// Legend: B windows per step, T context, N = B·T tokens per step, V vocabulary, E experts.
import Foundation

/// Settings of a training run.
public struct LanguageModelTrainingConfig {
    public var batchSize = 32
    public var learningRate: Float = 1e-3
    /// Stop after this many steps; 0 means no limit (then `epochs` decides).
    public var steps = 0
    /// Passes over the training windows; the run stops at whichever limit comes first.
    public var epochs = 1
    /// Steps between validation evaluations (there is always one at step 0 and at the end).
    public var evalInterval = 100
    /// Validation windows per evaluation, evenly spaced over the split; 0 means all.
    public var evalWindows = 0
    /// Stop when this many evaluations in a row did not improve the best validation loss; 0: never.
    public var patience = 0
    /// Validation windows whose top-1 routing every evaluation records (evenly
    /// spaced, the same ones each time; 0: none). Analysis/ProbeRouting.swift.
    public var probeWindows = 0
    public var seed: UInt64 = 0
    public init() {}
}

/// Seconds spent in each phase of a step (or summed over many).
public struct StepTiming {
    public var forward = 0.0, backward = 0.0, optimizer = 0.0
    public var total: Double { forward + backward + optimizer }
    public init() {}
    public static func += (a: inout StepTiming, b: StepTiming) {
        a.forward += b.forward; a.backward += b.backward; a.optimizer += b.optimizer
    }

    /// The median of each phase on its own (NaN for no timings).
    public static func median(_ timings: [StepTiming]) -> StepTiming {
        func median(_ values: [Double]) -> Double {
            guard !values.isEmpty else { return .nan }
            let sorted = values.sorted(), n = sorted.count
            return n % 2 == 1 ? sorted[n / 2] : (sorted[n / 2 - 1] + sorted[n / 2]) / 2
        }
        var t = StepTiming()
        t.forward = median(timings.map(\.forward))
        t.backward = median(timings.map(\.backward))
        t.optimizer = median(timings.map(\.optimizer))
        return t
    }
}

/// What routing did in one MoE layer over a stretch of steps.
public struct LayerRouting {
    /// The block index of the layer.
    public var layer: Int
    /// Share of routed token-slots per expert (sums to 1; uniform is 1/E).
    public var usage: [Double]
    /// Mean per-token entropy of the router distribution, nats (max ln E).
    public var routerEntropy: Double
    /// Coefficient of variation of the load (0: perfectly even).
    public var loadCV: Double

    public init(layer: Int, statistics s: RoutingStatistics) {
        self.layer = layer
        usage = s.usage
        routerEntropy = s.routerEntropy
        loadCV = s.loadCoefficientOfVariation
    }
}

/// One evaluation point of a run.
public struct EvaluationRecord {
    public var step: Int
    /// Epochs done, fractional (step / steps per epoch).
    public var epoch: Double
    /// Mean training cross-entropy over the steps since the previous record (nats per token; NaN at step 0).
    public var trainLoss: Double
    /// Mean Σ α·aux over the same steps (0 for a dense model).
    public var weightedAuxLoss: Double
    /// Mean cross-entropy on the evaluation windows of the validation split.
    public var validationLoss: Double
    /// Training tokens per second over the steps since the previous record (steps only, evaluation excluded).
    public var tokensPerSecond: Double
    /// Time in each phase, summed over the steps since the previous record.
    public var timing: StepTiming
    /// Per MoE layer, routing over the steps since the previous record.
    public var routing: [LayerRouting]
}

/// Trains one `GPT` with Adam on a training split, evaluating on a validation split.
public final class LanguageModelTrainer {
    public let model: GPT
    public let optimizer: Adam
    public let train: TokenWindows
    public let validation: TokenWindows
    public let config: LanguageModelTrainingConfig
    /// The shuffling generator (a stream of its own, so the data order does not depend on the model).
    public var rng: Xoshiro256
    public private(set) var step = 0
    public private(set) var history: [EvaluationRecord] = []
    /// Time per phase summed over every step so far.
    public private(set) var totalTiming = StepTiming()
    /// Every step's timing, in order (for medians: on a shared machine the mean
    /// includes the steps another process interrupted, the median does not).
    public private(set) var stepTimings: [StepTiming] = []
    public private(set) var bestValidationLoss = Double.infinity
    public private(set) var bestStep = 0
    private var bestWeights: [Tensor] = []
    /// The probe's windows, fixed at the start: every probe routes exactly these tokens.   [P windows][T]
    public let probeInputs: [[Int]]
    /// Per evaluation, the probe's top-1 experts (Analysis/ProbeRouting.swift).
    public internal(set) var probeRecords: [ProbeRecord] = []
    /// Seconds spent routing the probe, summed over the run.
    public internal(set) var probeSeconds = 0.0

    public init(model: GPT, train: TokenWindows, validation: TokenWindows, config: LanguageModelTrainingConfig) {
        precondition(train.count > 0, "LanguageModelTrainer: the training split has no window of \(train.context + 1) tokens")
        precondition(validation.count > 0,
                     "LanguageModelTrainer: the validation split has no window of \(validation.context + 1) tokens")
        self.model = model
        self.train = train
        self.validation = validation
        self.config = config
        optimizer = Adam(parameters: model.parameters, learningRate: config.learningRate)
        rng = Xoshiro256(seed: config.seed ^ 0xDA7A_0DE5)
        probeInputs = Self.probeWindows(config.probeWindows, of: validation)
    }

    /// Steps in one pass over the training windows (the last batch may be smaller).
    public var stepsPerEpoch: Int { (train.count + config.batchSize - 1) / config.batchSize }

    /// The number of steps `run` will take unless it stops early.
    public var plannedSteps: Int {
        let byEpochs = config.epochs * stepsPerEpoch
        return config.steps > 0 ? min(config.steps, byEpochs) : byEpochs
    }

    /// Tokens per step (B·T).
    public var tokensPerStep: Int { config.batchSize * train.context }

    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }

    /// One training step on the given windows; returns the cross-entropy, Σ α·aux and the timing.
    public func trainStep(inputs: [Int], targets: [Int]) -> (loss: Double, weightedAux: Double, timing: StepTiming) {
        var timing = StepTiming()
        let batch = inputs.count / train.context
        model.setMode(training: true, progress: Double(step) / Double(max(plannedSteps, 1)))
        var t0 = Self.now()
        let logits = model.forward(tokens: inputs, batch: batch)                // [N, V]
        let ce = GPT.crossEntropy(logits: logits, targets: targets)
        let aux = model.weightedAuxiliaryLoss
        var t1 = Self.now()
        timing.forward = t1 - t0
        t0 = t1
        model.zeroGrad()
        model.backward(ce.gradient)
        t1 = Self.now()
        timing.backward = t1 - t0
        t0 = t1
        optimizer.step()
        model.afterStep()
        timing.optimizer = Self.now() - t0
        return (ce.loss, aux, timing)
    }

    /// Mean cross-entropy over `windows` validation windows, evenly spaced (0: all).
    /// Routing statistics of MoE layers are reset afterwards (evaluation is not
    /// training) unless `keepingRoutingStatistics`: then they hold the routing
    /// of exactly these windows, for `currentRouting()`.
    public func evaluate(windows: Int? = nil, keepingRoutingStatistics: Bool = false) -> Double {
        let all = validation.count
        let requested = windows ?? config.evalWindows
        let n = requested > 0 ? min(requested, all) : all
        model.setMode(training: false, progress: Double(step) / Double(max(plannedSteps, 1)))
        let chosen = (0..<n).map { $0 * all / n }
        var total = 0.0
        var start = 0
        while start < n {
            let slice = chosen[start..<min(n, start + config.batchSize)]
            let (x, y) = validation.batch(slice)
            // Weighted by windows, so a smaller last batch counts for what it holds.
            total += model.loss(tokens: x, targets: y, batch: slice.count) * Double(slice.count)
            start += config.batchSize
        }
        if !keepingRoutingStatistics { for (_, moe) in model.moeLayers { moe.resetStatistics() } }
        return total / Double(n)
    }

    /// Per MoE layer, routing since the last reset.
    public func currentRouting() -> [LayerRouting] {
        model.moeLayers.map { LayerRouting(layer: $0.layer, statistics: $0.moe.statistics) }
    }

    /// Why `run` returned.
    public enum StopReason: Equatable { case finished, earlyStopped }

    /// Trains until `plannedSteps` or early stopping.
    ///
    /// - Parameters:
    ///   - onStep: after each step: (step, planned steps, loss, Σ α·aux, timing).
    ///   - onEvaluation: after each evaluation: the record and whether it is a new best
    ///     (the best weights are already saved in memory when it is called).
    public func run(onStep: (Int, Int, Double, Double, StepTiming) -> Void = { _, _, _, _, _ in },
                    onEvaluation: (EvaluationRecord, Bool) -> Void = { _, _ in }) -> StopReason {
        let planned = plannedSteps
        for (_, moe) in model.moeLayers { moe.resetStatistics() }
        if history.isEmpty { record(trainLoss: .nan, aux: 0, tokens: 0, timing: StepTiming(), onEvaluation) }

        var order: [Int] = []
        var position = 0
        var lossSum = 0.0, auxSum = 0.0, stepsSince = 0, timingSince = StepTiming()
        var stale = 0
        while step < planned {
            if position >= order.count {   // a new epoch: a fresh permutation of the windows
                order = Array(0..<train.count)
                rng.shuffle(&order)
                position = 0
            }
            let slice = order[position..<min(order.count, position + config.batchSize)]
            position += slice.count
            let (x, y) = train.batch(slice)
            let result = trainStep(inputs: x, targets: y)
            step += 1
            totalTiming += result.timing
            stepTimings.append(result.timing)
            lossSum += result.loss; auxSum += result.weightedAux; stepsSince += 1; timingSince += result.timing
            onStep(step, planned, result.loss, result.weightedAux, result.timing)

            if step % config.evalInterval == 0 || step == planned {
                let improved = record(trainLoss: lossSum / Double(stepsSince), aux: auxSum / Double(stepsSince),
                                      tokens: stepsSince * tokensPerStep, timing: timingSince, onEvaluation)
                lossSum = 0; auxSum = 0; stepsSince = 0; timingSince = StepTiming()
                stale = improved ? 0 : stale + 1
                if config.patience > 0 && stale >= config.patience && step < planned { return .earlyStopped }
            }
        }
        return .finished
    }

    /// Evaluates, appends a record, keeps the weights if they are the best so far.
    @discardableResult
    private func record(trainLoss: Double, aux: Double, tokens: Int, timing: StepTiming,
                        _ onEvaluation: (EvaluationRecord, Bool) -> Void) -> Bool {
        let routing = currentRouting()
        let validationLoss = evaluate()
        if !probeInputs.isEmpty { recordProbe() }
        let improved = validationLoss < bestValidationLoss
        if improved {
            bestValidationLoss = validationLoss
            bestStep = step
            bestWeights = model.parameters.map(\.value)
        }
        let entry = EvaluationRecord(step: step, epoch: Double(step) / Double(stepsPerEpoch), trainLoss: trainLoss,
                                     weightedAuxLoss: aux, validationLoss: validationLoss,
                                     tokensPerSecond: timing.total > 0 ? Double(tokens) / timing.total : .nan,
                                     timing: timing, routing: routing)
        history.append(entry)
        onEvaluation(entry, improved)
        return improved
    }

    /// The median of each phase over the steps so far.
    public var medianTiming: StepTiming { StepTiming.median(stepTimings) }

    /// Puts the best weights seen by an evaluation back into the model.
    public func restoreBestWeights() {
        guard !bestWeights.isEmpty else { return }
        for (p, w) in zip(model.parameters, bestWeights) { p.value = w }
    }
}
