// The two MNIST models of Part 3, behind one protocol so one trainer runs both.
//
//     MoEClassifier:   x [B, 784] → input_proj Linear(784→256) → ReLU → MoELayer(8 experts, top-2) → ReLU
//                                 → output_proj Linear(256→10)
//     DenseClassifier: x [B, 784] → input_proj Linear(784→256) → ReLU → FFN (one Expert-shaped MLP) → ReLU
//                                 → output_proj Linear(256→10)
//
// This is Part 2's `MoEClassifier` as it prints it, ReLU after the MoE layer
// included; `logits, aux_loss, expert_counts = model(x)` is `callAsFunction`.
// The dense model is the MoE model with one expert that every image uses,
// which makes the comparison fair: same input and output layers, same expert
// shape. (The walkthrough never prints its dense baseline; its parameter
// count fits this one.) Parameter counts (Notebooks/part1-foundations.md, §15; part2-implementation.md, §7):
//     input_proj 784·256 + 256 = 200,960;   expert 256·128 + 128 + 128·256 + 256 = 65,920
//     gating 256·8 (gate, no bias) + 8 (noise_weights) = 2,056;   output_proj 256·10 + 10 = 2,570
//     MoE total  200,960 + 2,056 + 8·65,920 + 2,570 = 732,946
//     MoE active 200,960 + 2,056 + 2·65,920 + 2,570 = 337,426
//     dense      200,960 + 65,920 + 2,570           = 269,450
//
// `Variant.v1` is the model this project built before 2026-12 (no ReLU after
// the MoE, a gate with a bias, no gate noise): `mnist-moe --variant v1`. The
// gate's 8 biases take the place of the 8 noise weights, so the counts agree.
//
// Legend: B images, P pixels (784), D hidden width (256), C classes (10).

/// Which of the two MNIST architectures to build.
public enum ClassifierVariant: String, CaseIterable {
    /// Part 2's: ReLU after the MoE (and after the dense FFN), bias-free gate, learned gate noise.
    case walkthrough
    /// This project's first model: no ReLU after the MoE or FFN, gate with bias, no noise.
    case v1
}

/// A model that maps images to class logits and can run its own backward pass.
public protocol Classifier: AnyObject {
    /// "moe" or "dense": the name used in summary.json and checkpoint files.
    var name: String { get }
    /// x [B, P] -> logits [B, C]
    func forward(_ x: Tensor) -> Tensor
    /// From dL/dlogits [B, C], adds every parameter's gradient (including any
    /// auxiliary loss's). Needs no input gradient: the input is data.
    func backward(_ dLogits: Tensor)
    /// The weighted auxiliary loss of the last forward (α·aux), 0 for a dense model.
    var weightedAuxLoss: Double { get }
    /// The unweighted auxiliary loss of the last forward, 0 for a dense model.
    var auxLoss: Double { get }
    /// Checkpoint names and parameters, PyTorch `nn.Module` naming.
    var namedParameters: [(name: String, parameter: Parameter)] { get }
    /// Parameters one input uses.
    var activeParameterCount: Int { get }
    /// Training (router noise, expert dropout on) or evaluation, and how far
    /// training has got (0 → 1) for schedules. Dense models ignore it.
    func setMode(training: Bool, progress: Double)
    /// After each optimiser step (the auxiliary-loss-free bias updates here).
    func afterStep()
    /// State saved beside the weights that is not trained by the optimiser.
    var namedBuffers: [(name: String, value: Tensor)] { get }
    func restoreBuffer(named name: String, value: Tensor) throws
    /// Positions of random generators inside the model (the router's noise),
    /// by name, so `--resume` continues their streams; none for a dense model.
    var randomStates: [(name: String, words: [UInt64])] { get }
    func restoreRandomState(named name: String, words: [UInt64]) throws
}

extension Classifier {
    public func setMode(training: Bool, progress: Double) {}
    public func afterStep() {}
    public var namedBuffers: [(name: String, value: Tensor)] { [] }
    public func restoreBuffer(named name: String, value: Tensor) throws {}
    public var randomStates: [(name: String, words: [UInt64])] { [] }
    public func restoreRandomState(named name: String, words: [UInt64]) throws {}
    public var parameters: [Parameter] { namedParameters.map(\.parameter) }
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }
    public func zeroGrad() { for p in parameters { p.zeroGrad() } }

    /// Part 2's `logits, aux_loss, expert_counts = model(x)`: the logits [B, C],
    /// the unweighted balancing loss L_balance (0 for a dense model) and the
    /// token-slots each expert received in this batch ([] for a dense model).
    public func callAsFunction(_ x: Tensor) -> (logits: Tensor, auxLoss: Double, expertCounts: [Int]) {
        let logits = forward(x)
        return (logits, auxLoss, (self as? MoEClassifier)?.moe.lastExpertCounts ?? [])
    }
}

/// Linear → ReLU → MoELayer → ReLU → Linear, the walkthrough's MoE classifier.
public final class MoEClassifier: Classifier {
    public let inputProj: Linear     // Part 2's input_proj, W [D, P]
    public let relu = ReLU()
    public let moe: MoELayer
    /// The ReLU after the MoE layer (Part 2's forward); nil in the v1 variant.
    public let reluAfterMoE: ReLU?
    public let outputProj: Linear    // Part 2's output_proj, W [C, D]
    public var name: String { "moe" }

    /// Part 2's `MoEClassifier(input_dim, hidden_dim, num_classes, num_experts, top_k)`,
    /// with the expert width (128) and α (0.1) it hard-codes spelled out.
    public convenience init(inputSize: Int = 784, hidden: Int = 256, expertHidden: Int = 128, experts: Int = 8,
                topK: Int = 2, classes: Int = 10, auxLossWeight: Float = 0.1, renormalize: Bool = true,
                variant: ClassifierVariant = .walkthrough, seed: UInt64 = 0, rng: inout Xoshiro256) {
        self.init(inputSize: inputSize, hidden: hidden, classes: classes, reluAfterMoE: variant == .walkthrough,
                  rng: &rng) { rng in
            MoELayer(modelDim: hidden, hiddenDim: expertHidden, experts: experts, k: topK,
                     auxLossWeight: auxLossWeight, renormalize: renormalize,
                     noise: variant == .walkthrough ? .learned : .none, gateBias: variant == .v1, seed: seed, rng: &rng)
        }
    }

    /// With any MoE layer (another router, balancing, capacity, shared experts).
    /// `makeLayer` draws its weights from `rng` between the input and output layers'.
    public init(inputSize: Int = 784, hidden: Int = 256, classes: Int = 10, reluAfterMoE: Bool = true,
                rng: inout Xoshiro256, makeLayer: (inout Xoshiro256) -> MoELayer) {
        inputProj = Linear(inFeatures: inputSize, outFeatures: hidden, rng: &rng)
        moe = makeLayer(&rng)
        precondition(moe.modelDim == hidden, "MoEClassifier: the MoE layer is \(moe.modelDim) wide, the model \(hidden)")
        self.reluAfterMoE = reluAfterMoE ? ReLU() : nil
        outputProj = Linear(inFeatures: hidden, outFeatures: classes, rng: &rng)
    }

    public func setMode(training: Bool, progress: Double) {
        moe.training = training
        moe.progress = progress
    }

    public func afterStep() { moe.afterStep() }

    public var namedBuffers: [(name: String, value: Tensor)] {
        moe.namedBuffers.map { ("moe." + $0.name, $0.value) }
    }

    public func restoreBuffer(named name: String, value: Tensor) throws {
        if name.hasPrefix("moe.") { try moe.restoreBuffer(named: String(name.dropFirst(4)), value: value) }
    }

    public var randomStates: [(name: String, words: [UInt64])] {
        let words = moe.router.randomState
        return words.isEmpty ? [] : [("moe.gating", words)]
    }

    public func restoreRandomState(named name: String, words: [UInt64]) throws {
        if name == "moe.gating" { try moe.router.restoreRandomState(words) }
    }

    /// Part 2's forward: relu(input_proj(x)) → moe → relu → output_proj.
    public func forward(_ x: Tensor) -> Tensor {
        var h = inputProj.forward(x)                           // [B, P] -> [B, D]
        h = relu.forward(h)                                    // [B, D]
        h = moe.forward(h)                                     // [B, D]
        if let r = reluAfterMoE { h = r.forward(h) }           // [B, D]
        return outputProj.forward(h)                           // [B, D] -> [B, C]
    }

    /// The forward read bottom-up, each layer's backward in turn.
    public func backward(_ dLogits: Tensor) {
        var g = outputProj.backward(dLogits)                   // [B, D]
        if let r = reluAfterMoE { g = r.backward(g) }          // [B, D]
        g = moe.backward(g)                                    // [B, D], includes α·∂aux
        g = relu.backward(g)                                   // [B, D]
        inputProj.backwardParameters(g)
    }

    public var auxLoss: Double { moe.auxLoss }
    public var weightedAuxLoss: Double { moe.weightedAuxLoss }

    public var namedParameters: [(name: String, parameter: Parameter)] {
        prefixed("input_proj", inputProj.namedParameters) + prefixed("moe", moe.namedParameters)
            + prefixed("output_proj", outputProj.namedParameters)
    }

    public var activeParameterCount: Int {
        inputProj.parameterCount + moe.activeParameterCount + outputProj.parameterCount
    }
}

/// Linear → ReLU → FFN → ReLU → Linear, the dense baseline.
public final class DenseClassifier: Classifier {
    public let inputProj: Linear     // W [D, P]
    public let relu = ReLU()
    public let ffn: Expert
    /// The ReLU after the FFN, as after the MoE layer; nil in the v1 variant.
    public let reluAfterFFN: ReLU?
    public let outputProj: Linear    // W [C, D]
    public var name: String { "dense" }

    public init(inputSize: Int = 784, hidden: Int = 256, expertHidden: Int = 128, classes: Int = 10,
                variant: ClassifierVariant = .walkthrough, rng: inout Xoshiro256) {
        inputProj = Linear(inFeatures: inputSize, outFeatures: hidden, rng: &rng)
        ffn = Expert(modelDim: hidden, hiddenDim: expertHidden, rng: &rng)
        reluAfterFFN = variant == .walkthrough ? ReLU() : nil
        outputProj = Linear(inFeatures: hidden, outFeatures: classes, rng: &rng)
    }

    public func forward(_ x: Tensor) -> Tensor {
        var h = relu.forward(inputProj.forward(x))             // [B, D]
        h = ffn.forward(h)                                     // [B, D]
        if let r = reluAfterFFN { h = r.forward(h) }
        return outputProj.forward(h)                           // [B, C]
    }

    public func backward(_ dLogits: Tensor) {
        var g = outputProj.backward(dLogits)
        if let r = reluAfterFFN { g = r.backward(g) }
        inputProj.backwardParameters(relu.backward(ffn.backward(g)))
    }

    public var auxLoss: Double { 0 }
    public var weightedAuxLoss: Double { 0 }

    public var namedParameters: [(name: String, parameter: Parameter)] {
        prefixed("input_proj", inputProj.namedParameters) + prefixed("ffn", ffn.namedParameters)
            + prefixed("output_proj", outputProj.namedParameters)
    }

    public var activeParameterCount: Int { parameterCount }
}
