// Linear: the affine map y = x·Wᵀ + b, PyTorch's `nn.Linear`.
//
// Legend: N rows (tokens, images), I input features, O output features.
// The weight is stored [O, I] as PyTorch stores it, so checkpoints load into
// `nn.Linear` unchanged. Derivation: Notebooks/part2-implementation.md, §11.

/// A fully connected layer, y [N, O] = x [N, I] · Wᵀ [I, O] + b [O].
public final class Linear: Layer {
    public let inFeatures: Int
    public let outFeatures: Int
    public let weight: Parameter  // [O, I]
    /// [O], or nil for a map without bias (the walkthrough's gate, `nn.Linear(…, bias=False)`).
    public let bias: Parameter?
    /// Threads this layer's products may use; `MoELayer` sets 1 for experts
    /// because it already runs experts in parallel.
    public var threads: Int? = nil
    private var input = Tensor.zeros([0, 0])  // x [N, I], cached by forward

    /// PyTorch's default initialisation: W and b uniform in (−1/√I, 1/√I)
    /// (kaiming_uniform with a = √5 for W, which works out to the same bound),
    /// so a model built here starts in the same distribution as PyTorch's.
    /// Without a bias, only W is drawn (PyTorch draws nothing for it either).
    public init(inFeatures: Int, outFeatures: Int, bias hasBias: Bool = true, rng: inout Xoshiro256) {
        precondition(inFeatures > 0 && outFeatures > 0,
                     "Linear: sizes must be positive, got in \(inFeatures), out \(outFeatures)")
        self.inFeatures = inFeatures
        self.outFeatures = outFeatures
        let bound = 1 / Float(inFeatures).squareRoot()
        weight = Parameter(.uniform([outFeatures, inFeatures], low: -bound, high: bound, rng: &rng))
        bias = hasBias ? Parameter(.uniform([outFeatures], low: -bound, high: bound, rng: &rng)) : nil
    }

    public var namedParameters: [(name: String, parameter: Parameter)] {
        [("weight", weight)] + (bias.map { [("bias", $0)] } ?? [])
    }

    /// y = x·Wᵀ + b.   x [N, I] -> y [N, O]
    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rank == 2 && x.shape[1] == inFeatures,
                     "Linear(\(inFeatures)→\(outFeatures)): input has shape \(x.shape), expected [N, \(inFeatures)]")
        input = x
        var y = matmul(x, weight.value, transposeB: true, threads: threads ?? Parallel.threads)  // [N, O]
        if let bias { y.addRowVector(bias.value) }
        return y
    }

    /// Backward of y = x·Wᵀ + b, for dy = dL/dy [N, O]:
    ///
    ///     dL/dW [O, I] += dyᵀ · x      (each weight sees every row's x, weighted by dy)
    ///     dL/db [O]    += Σₙ dy[n, :]       (when there is a bias)
    ///     dL/dx [N, I]  = dy · W
    ///
    /// Returns dL/dx. Use `backwardParameters` when dL/dx is not needed (the
    /// first layer of a network, whose input is data) to skip its matmul.
    public func backward(_ dy: Tensor) -> Tensor {
        checkGradientShape(dy)
        let dx = Linear.inputGradientAndWeightGradient(dy, input: input, weight: weight,
                                                       threads: threads ?? Parallel.threads)
        bias?.grad.addColumnSums(of: dy)
        return dx
    }

    /// dL/dx = dy·W, returned, and dL/dW += dyᵀ·x, for y = x·Wᵀ (also the GPT's
    /// tied head).   dy [N, O], x [N, I], W [O, I] -> dL/dx [N, I]
    ///
    /// The two products are independent and cost the same, 2·N·I·O FLOPs. Large
    /// ones (a GPT block's) run side by side in one parallel region, each on half
    /// the threads, instead of in two regions one after the other: entering a
    /// region costs tens of µs of waiting for the other cores (README "Speed").
    /// A product's numbers do not depend on its threads.
    static func inputGradientAndWeightGradient(_ dy: Tensor, input x: Tensor, weight: Parameter, threads: Int) -> Tensor {
        guard threads >= 2, 2 * dy.shape[0] * x.shape[1] * dy.shape[1] >= Gemm.parallelThreshold else {
            matmulAccumulate(into: &weight.grad, dy, x, transposeA: true, threads: threads)    // [O, N]·[N, I] -> [O, I]
            return matmul(dy, weight.value, threads: threads)                                 // [N, O]·[O, I] -> [N, I]
        }
        var dx = Tensor.zeros([0])
        Parallel.forEach(2, threads: 2) { half in
            if half == 0 {
                dx = matmul(dy, weight.value, threads: threads / 2)
            } else {
                matmulAccumulate(into: &weight.grad, dy, x, transposeA: true, threads: threads - threads / 2)
            }
        }
        return dx
    }

    /// Adds dL/dW and dL/db into the parameters' gradients; computes no dL/dx.
    public func backwardParameters(_ dy: Tensor) {
        checkGradientShape(dy)
        matmulAccumulate(into: &weight.grad, dy, input, transposeA: true, threads: threads ?? Parallel.threads)
        bias?.grad.addColumnSums(of: dy)
    }

    private func checkGradientShape(_ dy: Tensor) {
        precondition(dy.shape == [input.shape[0], outFeatures],
                     "Linear(\(inFeatures)→\(outFeatures)).backward: dy has shape \(dy.shape), expected [\(input.shape[0]), \(outFeatures)]")
    }
}
