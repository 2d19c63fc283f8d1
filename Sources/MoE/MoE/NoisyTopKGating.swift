// NoisyTopKGating: learned, input-dependent noise on the router logits while
// training (Shazeer et al. 2017, "Outrageously Large Neural Networks: The
// Sparsely-Gated Mixture-of-Experts Layer", §2.1 and Appendix A).
//
// A router that always picks its current favourites never finds out whether
// another expert would have done better. The paper's answer is to jitter the
// logits with Gaussian noise whose size the network learns, per token and per
// expert, and to keep the top k of the *noisy* scores:
//
//     logits = x·W_gᵀ + b_g                  [N, E]   MoELayer.gate, before this router
//     a      = x·W_noiseᵀ + b_noise          [N, E]   this router's own Linear, `noise`
//     σ      = softplus(a) = ln(1 + eᵃ)      [N, E]   the noise's standard deviation, > 0
//     H      = logits + ε ⊙ σ,  ε ~ N(0, 1)  [N, E]   training only; H = logits at evaluation
//     chosen = the k largest H per row       [N, K]   (ties: the lower expert index)
//     w      = softmax over the chosen H     [N, K]   G(x) = Softmax(KeepTopK(H(x), k))
//
// KeepTopK sets every entry outside the top k to −∞, so the softmax over the
// whole row equals a softmax over the k kept entries: exactly
// TopKGating's `.topKThenSoftmax` order, applied to H. At evaluation there is
// no noise, so this router then routes exactly as that TopKGating does (a
// test checks it).
//
// Choices made here, and why:
//   * The probabilities that statistics and balancing losses see are
//     softmax(logits), the *clean* logits. They then say what the router
//     believes rather than what one draw of the noise did, they are the same
//     in training and evaluation, and a balancing loss pushes on the gate, not
//     on the noise. (The paper's own smooth "load" estimator, P(x, i) =
//     Φ((clean_i − kth_excluding(H, k, i)) / σ_i), needs H and σ: both are
//     readable here after `route`, as `lastNoisyLogits` and `lastNoiseScale`.)
//   * W_noise and b_noise start at zero, as the paper initialises W_noise
//     ("which yields no signal and some noise"): σ = softplus(0) = ln 2 ≈ 0.69
//     for every token and expert at the first step, and the network then learns
//     where more or less noise helps. The tests overwrite them with random
//     values, so the gradient check sees every term of the backward.
//   * With k = 1 every weight is 1 (a softmax over one entry), so, like top-1
//     with renormalisation, the task loss teaches neither the gate nor the
//     noise network anything; only a balancing loss would (TopKGating.swift).
//   * A selection bias (auxiliary-loss-free balancing) is added to H when
//     choosing, never to w.
//   * The noise comes from this router's own generator, seeded at init, so a
//     seed gives the same routing on every machine. `generator` is public:
//     save it before `route` and restore it to replay the same ε (the
//     gradient check holds the choice fixed this way).
//
// Legend: N tokens, D model width, E experts, K experts chosen per token.
import Foundation

/// Noisy top-k gating: top-k → softmax on logits + learned Gaussian noise (training only).
public final class NoisyTopKGating: Router {
    public let expertCount: Int
    public let k: Int
    /// The noise network Linear(D → E): its output a gives σ = softplus(a).   W [E, D], b [E]
    public let noise: Linear
    /// Where ε comes from. Save and restore it to replay the same noise.
    public var generator: Xoshiro256
    /// H, the scores the last `route` chose on (logits + ε ⊙ σ, or the logits at evaluation).   [N, E]
    public private(set) var lastNoisyLogits: Tensor?
    /// σ = softplus(a) of the last training `route`, nil at evaluation.   [N, E]
    public private(set) var lastNoiseScale: Tensor?

    // Cached by route for backward:
    private var routing: Routing?
    private var noiseInput: Tensor?   // a [N, E], nil at evaluation (the noise network did not run)
    private var epsilon: Tensor?      // ε [N, E], held fixed by backward
    private var dx: Tensor?           // dL/dx [N, D] through the noise network

    /// - Parameters:
    ///   - experts: E, the number of experts.
    ///   - k: experts per token, 1 ≤ k ≤ E.
    ///   - modelDim: D, the width of the layer's input x, which the noise network reads.
    ///   - seed: seeds the noise generator (the noise network starts at zero, so no weights are drawn).
    public init(experts: Int, k: Int, modelDim: Int, seed: UInt64 = 0) {
        precondition(experts >= 1 && k >= 1 && k <= experts,
                     "NoisyTopKGating: need 1 ≤ k ≤ experts, got k = \(k), experts = \(experts)")
        precondition(modelDim >= 1, "NoisyTopKGating: modelDim must be ≥ 1, got \(modelDim)")
        expertCount = experts
        self.k = k
        var unused = Xoshiro256(seed: seed)   // Linear draws a PyTorch-style init, which we then zero
        noise = Linear(inFeatures: modelDim, outFeatures: experts, rng: &unused)
        noise.weight.value = .zeros([experts, modelDim])
        noise.bias!.value = .zeros([experts])
        generator = Xoshiro256(seed: seed ^ 0x0015_E7D0_6A7E)
    }

    public var name: String { "noisy" }        // as RoutingSetup and mnist-moe --router call it
    public var slots: Int { k }
    public var namedParameters: [(name: String, parameter: Parameter)] { prefixed("noise", noise.namedParameters) }

    /// The noise generator's position, for `--resume`.
    public var randomState: [UInt64] { let s = generator.state; return [s.0, s.1, s.2, s.3] }

    public func restoreRandomState(_ words: [UInt64]) throws {
        guard words.count == 4, words.contains(where: { $0 != 0 }) else {
            throw RoutingSetupError(message: "NoisyTopKGating: a saved generator state is 4 words, not all zero; got \(words.count)")
        }
        generator = Xoshiro256(state: (words[0], words[1], words[2], words[3]))
    }

    public func route(logits: Tensor, context: RoutingContext) -> Routing {
        precondition(logits.rank == 2 && logits.shape[1] == expertCount,
                     "NoisyTopKGating: logits have shape \(logits.shape), expected [N, \(expertCount)]")
        let n = logits.shape[0], e = expertCount
        var h = logits                                           // H [N, E]
        if context.training {
            guard let x = context.input else {
                preconditionFailure("NoisyTopKGating: training needs the layer input x in RoutingContext.input")
            }
            precondition(x.rank == 2 && x.shape == [n, noise.inFeatures],
                         "NoisyTopKGating: input x has shape \(x.shape), expected [\(n), \(noise.inFeatures)]")
            let a = noise.forward(x)                             // [N, D] -> [N, E]
            var sigma = Tensor.zeros([n, e])                     // σ = softplus(a) [N, E]
            var eps = Tensor.zeros([n, e])                       // ε ~ N(0, 1) [N, E], row by row
            for i in 0..<(n * e) {
                sigma.data[i] = NoisyTopKGating.softplus(a.data[i])
                eps.data[i] = generator.normal()
                h.data[i] += eps.data[i] * sigma.data[i]
            }
            noiseInput = a; epsilon = eps; lastNoiseScale = sigma
        } else {
            noiseInput = nil; epsilon = nil; lastNoiseScale = nil
        }
        lastNoisyLogits = h
        let p = softmaxRows(logits)                              // clean probabilities, for statistics [N, E]
        // Choose on H (+ bias); then w = softmax over the chosen H.
        let chosen = TopKGating.select(probabilities: p, k: k, renormalize: true, scores: h, bias: context.selectionBias)
        let r = TopKGating.softmaxOverChosen(logits: h, temperature: 1, routing: chosen)
        routing = r
        dx = nil
        return r
    }

    /// softplus(a) = ln(1 + eᵃ), written so that neither branch overflows:
    /// for a > 0 it is a + ln(1 + e⁻ᵃ).
    @inline(__always)
    static func softplus(_ a: Float) -> Float {
        a > 0 ? a + log1p(exp(-a)) : log1p(exp(a))
    }

    /// Backward with the choice and ε held fixed. In the forward pass:
    ///
    ///     w_j = exp(H_{e_j}) / Σ_chosen exp(H)      H = logits + ε ⊙ softplus(a),  a = x·W_noiseᵀ + b_noise
    ///     p   = softmax(logits)                     (statistics, balancing losses)
    ///
    /// so, with dw = dL/dw [N, K] and dp = dL/dp [N, E] (or nil):
    ///
    ///     dL/dH_{e_i}  = w_i · (dw_i − Σ_j dw_j·w_j)        the softmax over the k chosen; 0 elsewhere
    ///     dL/dlogits   = dL/dH + softmax_backward(p, dp)     ∂H/∂logits = 1
    ///     dL/da        = dL/dH ⊙ ε ⊙ sigmoid(a)              softplus′ = sigmoid
    ///     dL/dW_noise += (dL/da)ᵀ · x,  dL/db_noise += Σₙ dL/da,  dL/dx = dL/da · W_noise  (Linear.backward)
    ///
    /// Cached: the routing, p, ε and a. At evaluation there is no noise path
    /// and `inputGradient()` is nil. Softmax backward:
    /// Notebooks/part2-implementation.md, §13.
    public func backward(weightGradient dw: Tensor, probabilityGradient dp: Tensor?) -> Tensor {
        guard let r = routing else { preconditionFailure("NoisyTopKGating.backward called before route") }
        let n = r.tokenCount, e = expertCount
        precondition(dw.shape == [n, k], "NoisyTopKGating.backward: dw has shape \(dw.shape), expected [\(n), \(k)]")
        var dH = Tensor.zeros([n, e])                            // dL/dH [N, E]
        for t in 0..<n {
            var dot: Float = 0
            for j in 0..<k { dot += dw.data[t * k + j] * r.weights.data[t * k + j] }
            for j in 0..<k {
                dH.data[t * e + r.experts[t * k + j]] += r.weights.data[t * k + j] * (dw.data[t * k + j] - dot)
            }
        }
        var dLogits = dH                                         // [N, E]
        if let dp {
            precondition(dp.shape == [n, e], "NoisyTopKGating.backward: dp has shape \(dp.shape), expected [\(n), \(e)]")
            dLogits += softmaxRowsBackward(probabilities: r.probabilities, outputGradient: dp)
        }
        if let a = noiseInput, let eps = epsilon {
            var da = Tensor.zeros([n, e])                        // dL/da [N, E]
            for i in 0..<(n * e) { da.data[i] = dH.data[i] * eps.data[i] / (1 + exp(-a.data[i])) }
            dx = noise.backward(da)                              // [N, E] -> [N, D], adds dW_noise, db_noise
        } else {
            dx = nil
        }
        return dLogits
    }

    /// dL/dx [N, D] through the noise network, after a training `backward`; nil at evaluation.
    public func inputGradient() -> Tensor? { dx }
}
