// The two MNIST models of Part 3, behind one protocol so one trainer runs both.
//
//     MoEClassifier:   x [N, 784] → Linear(784→256) → ReLU → MoELayer(8 experts, top-2) → Linear(256→10)
//     DenseClassifier: x [N, 784] → Linear(784→256) → ReLU → FFN (one Expert-shaped MLP) → Linear(256→10)
//
// The dense model is exactly the MoE model with one expert that every token
// uses, which makes the comparison fair: same input and output layers, same
// expert shape. Parameter counts (Notebooks/part1-foundations.md, §7):
//     input 784·256 + 256 = 200,960;  expert 256·128 + 128 + 128·256 + 256 = 65,920
//     router 256·8 + 8 = 2,056;       output 256·10 + 10 = 2,570
//     MoE total  200,960 + 2,056 + 8·65,920 + 2,570 = 732,946
//     MoE active 200,960 + 2,056 + 2·65,920 + 2,570 = 337,426
//     dense      200,960 + 65,920 + 2,570           = 269,450
//
// Legend: N images, P pixels (784), D hidden width (256), C classes (10).

/// A model that maps images to class logits and can run its own backward pass.
public protocol Classifier: AnyObject {
    /// "moe" or "dense": the name used in summary.json and checkpoint files.
    var name: String { get }
    /// x [N, P] -> logits [N, C]
    func forward(_ x: Tensor) -> Tensor
    /// From dL/dlogits [N, C], adds every parameter's gradient (including any
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
}

extension Classifier {
    public func setMode(training: Bool, progress: Double) {}
    public func afterStep() {}
    public var namedBuffers: [(name: String, value: Tensor)] { [] }
    public func restoreBuffer(named name: String, value: Tensor) throws {}
    public var parameters: [Parameter] { namedParameters.map(\.parameter) }
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }
    public func zeroGrad() { for p in parameters { p.zeroGrad() } }
}

/// Linear → ReLU → MoELayer → Linear, the walkthrough's MoE classifier.
public final class MoEClassifier: Classifier {
    public let input: Linear     // W [D, P]
    public let relu = ReLU()
    public let moe: MoELayer
    public let output: Linear    // W [C, D]
    public var name: String { "moe" }

    public convenience init(inputSize: Int = 784, hidden: Int = 256, expertHidden: Int = 128, experts: Int = 8,
                topK: Int = 2, classes: Int = 10, auxLossWeight: Float = 0.1, renormalize: Bool = true,
                rng: inout Xoshiro256) {
        self.init(inputSize: inputSize, hidden: hidden, classes: classes, rng: &rng) { rng in
            MoELayer(modelDim: hidden, hiddenDim: expertHidden, experts: experts, k: topK,
                     auxLossWeight: auxLossWeight, renormalize: renormalize, rng: &rng)
        }
    }

    /// With any MoE layer (another router, balancing, capacity, shared experts).
    /// `makeLayer` draws its weights from `rng` between the input and output layers'.
    public init(inputSize: Int = 784, hidden: Int = 256, classes: Int = 10, rng: inout Xoshiro256,
                makeLayer: (inout Xoshiro256) -> MoELayer) {
        input = Linear(inFeatures: inputSize, outFeatures: hidden, rng: &rng)
        moe = makeLayer(&rng)
        precondition(moe.modelDim == hidden, "MoEClassifier: the MoE layer is \(moe.modelDim) wide, the model \(hidden)")
        output = Linear(inFeatures: hidden, outFeatures: classes, rng: &rng)
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

    public func forward(_ x: Tensor) -> Tensor {
        var h = input.forward(x)   // [N, D]
        h = relu.forward(h)        // [N, D]
        h = moe.forward(h)         // [N, D]
        return output.forward(h)   // [N, C]
    }

    public func backward(_ dLogits: Tensor) {
        var g = output.backward(dLogits)   // [N, D]
        g = moe.backward(g)                // [N, D], includes α·∂aux
        g = relu.backward(g)               // [N, D]
        input.backwardParameters(g)
    }

    public var auxLoss: Double { moe.auxLoss }
    public var weightedAuxLoss: Double { moe.weightedAuxLoss }

    public var namedParameters: [(name: String, parameter: Parameter)] {
        prefixed("input", input.namedParameters) + prefixed("moe", moe.namedParameters)
            + prefixed("output", output.namedParameters)
    }

    public var activeParameterCount: Int {
        input.parameterCount + moe.activeParameterCount + output.parameterCount
    }
}

/// Linear → ReLU → FFN → Linear, the dense baseline.
public final class DenseClassifier: Classifier {
    public let input: Linear
    public let relu = ReLU()
    public let ffn: Expert
    public let output: Linear
    public var name: String { "dense" }

    public init(inputSize: Int = 784, hidden: Int = 256, expertHidden: Int = 128, classes: Int = 10,
                rng: inout Xoshiro256) {
        input = Linear(inFeatures: inputSize, outFeatures: hidden, rng: &rng)
        ffn = Expert(modelDim: hidden, hiddenDim: expertHidden, rng: &rng)
        output = Linear(inFeatures: hidden, outFeatures: classes, rng: &rng)
    }

    public func forward(_ x: Tensor) -> Tensor {
        output.forward(ffn.forward(relu.forward(input.forward(x))))
    }

    public func backward(_ dLogits: Tensor) {
        input.backwardParameters(relu.backward(ffn.backward(output.backward(dLogits))))
    }

    public var auxLoss: Double { 0 }
    public var weightedAuxLoss: Double { 0 }

    public var namedParameters: [(name: String, parameter: Parameter)] {
        prefixed("input", input.namedParameters) + prefixed("ffn", ffn.namedParameters)
            + prefixed("output", output.namedParameters)
    }

    public var activeParameterCount: Int { parameterCount }
}
