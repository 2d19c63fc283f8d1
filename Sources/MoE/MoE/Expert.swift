// Expert: one feed-forward network, the unit an MoE layer has many of.
//
// An expert is the same two-layer MLP a dense transformer block or the dense
// MNIST baseline uses, Linear(D→H) → activation → Linear(H→D). What makes it an
// expert is only that it sees the tokens the router sends it. In the MNIST
// model D = 256, H = 128: 65,920 parameters per expert.
// Notebooks/part2-implementation.md, §3 and §14.
//
// Legend: n tokens routed here, D model width, H hidden width.

/// The activation between an expert's two layers.
public enum ExpertActivation: String {
    case relu, gelu
}

/// Linear(D→H) → ReLU (or GELU) → Linear(H→D): Part 2's
/// `Expert.net = nn.Sequential(Linear, ReLU, Linear)`. The two maps are `up`
/// and `down` here; in checkpoints they are `net.0` and `net.2`, the names
/// PyTorch gives the Sequential's first and third modules, so a module
/// written with Part 2's class structure loads them unchanged.
public final class Expert: Layer {
    public let up: Linear      // W [H, D], b [H]
    public let activation: Layer
    public let down: Linear    // W [D, H], b [D]

    public init(modelDim: Int, hiddenDim: Int, activation: ExpertActivation = .relu, rng: inout Xoshiro256) {
        up = Linear(inFeatures: modelDim, outFeatures: hiddenDim, rng: &rng)
        self.activation = activation == .relu ? ReLU() as Layer : GELU()
        down = Linear(inFeatures: hiddenDim, outFeatures: modelDim, rng: &rng)
    }

    /// Threads the two matmuls may use (MoELayer runs experts in parallel, one thread each).
    public var threads: Int? {
        get { up.threads }
        set { up.threads = newValue; down.threads = newValue }
    }

    /// x [n, D] -> h [n, H] -> a [n, H] -> y [n, D]
    public func forward(_ x: Tensor) -> Tensor {
        down.forward(activation.forward(up.forward(x)))
    }

    /// The chain rule through the three steps, last first. dy [n, D] -> dx [n, D]
    public func backward(_ dy: Tensor) -> Tensor {
        up.backward(activation.backward(down.backward(dy)))
    }

    public var namedParameters: [(name: String, parameter: Parameter)] {
        prefixed("net.0", up.namedParameters) + prefixed("net.2", down.namedParameters)
    }
}
