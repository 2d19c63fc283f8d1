// ═══════════════════════════════════════════════════════════════════════════
//  REFERENCE SOLUTION — exercise 5. Try the exercise first, in
//  Sources/Exercises/Exercise5-NoisyTopKRouter.swift; read this afterwards.
// ═══════════════════════════════════════════════════════════════════════════
//
// Noisy top-k gating (Shazeer et al. 2017): before choosing, add to each logit
// Gaussian noise whose size a second linear map of the token learns.
//
//     raw = x·W_noiseᵀ + b_noise        [N, E]   the noise network, `noise`
//     σ   = softplus(raw)               [N, E]   a positive noise scale
//     ε   ~ N(0, 1)                     [N, E]   training only; no noise in evaluation
//     h   = z + ε ⊙ σ                   [N, E]   z: the gate's logits
//     chosen = the k largest h per token
//     w   = softmax over the chosen h   [N, K]   (= renormalised softmax(h) at the chosen)
//     p   = softmax(z)                  [N, E]   the clean probabilities, for statistics and balancing
//
// Backward, with ε and the choice held fixed (Notebooks/exercises.md, §5):
//
//     dh[e_i]  = w_i · (dw_i − Σ_j dw_j w_j)          softmax over the chosen (part 1, §9); 0 elsewhere
//     dz       = dh + softmax backward of the balancing dp     (h = z + …, and p = softmax(z))
//     draw     = dh ⊙ ε ⊙ sigmoid(raw)                 softplus' = sigmoid
//     dW_noise += drawᵀ·x, db_noise += Σ_n draw,  dx_noise = draw·W_noise   (Linear.backward)
//
// This is the library's NoisyTopKGating written again; the library's version
// draws ε from a generator you save and restore, this one takes `fixedNoise`.
//
// Legend: N tokens, D model width, E experts, K chosen per token.
import Foundation
import MoE
import ExerciseGrader

public final class NoisyTopKRouter: NoiseHoldingRouter {
    public let expertCount: Int
    public let k: Int
    /// The noise network, Linear(D → E), "gating.noise" in a checkpoint.   W [E, D], b [E]
    public let noise: Linear
    public var fixedNoise: Tensor?
    private var rng: Xoshiro256
    // Cached by route for backward:
    private var raw: Tensor?                       // x·W_noiseᵀ + b [N, E]; nil in evaluation
    private var epsilon: Tensor?                   // ε [N, E]; nil in evaluation
    private var routing: Routing?
    private var noiseInputGradient: Tensor?        // dx from the noise network [N, D]

    public init(modelDim: Int, experts: Int, k: Int, seed: UInt64 = 0) {
        precondition(experts >= 1 && k >= 1 && k <= experts, "NoisyTopKRouter: need 1 ≤ k ≤ experts")
        expertCount = experts
        self.k = k
        rng = Xoshiro256(seed: seed)
        noise = Linear(inFeatures: modelDim, outFeatures: experts, rng: &rng)
        // Shazeer et al. start the noise network at zero: every scale is
        // softplus(0) = ln 2 until training says otherwise.
        noise.weight.value = .zeros(noise.weight.value.shape)
        noise.bias!.value = .zeros(noise.bias!.value.shape)
    }

    public var name: String { "noisy-topk" }
    public var slots: Int { k }
    public var namedParameters: [(name: String, parameter: Parameter)] { prefixed("noise", noise.namedParameters) }
    public func inputGradient() -> Tensor? { noiseInputGradient }

    /// The noise generator's position, so `--resume` continues with the draws an
    /// uninterrupted run would make (done for you: a router that draws random
    /// numbers saves its generator here; Router.swift, `randomState`).
    public var randomState: [UInt64] { let s = rng.state; return [s.0, s.1, s.2, s.3] }

    public func restoreRandomState(_ words: [UInt64]) throws {
        guard words.count == 4, words.contains(where: { $0 != 0 }) else {
            throw RoutingSetupError(message: "\(name): a saved generator state is 4 words, not all zero; got \(words.count)")
        }
        rng = Xoshiro256(state: (words[0], words[1], words[2], words[3]))
    }

    public func route(logits z: Tensor, context: RoutingContext) -> Routing {
        let n = z.shape[0], e = expertCount
        var h = z                                                 // [N, E]
        if context.training {
            guard let x = context.input else { preconditionFailure("NoisyTopKRouter needs the layer's input x") }
            let a = noise.forward(x)                              // raw [N, E]
            let eps = fixedNoise ?? Tensor.normal([n, e], rng: &rng)   // ε [N, E]
            for i in 0..<h.count { h.data[i] += eps.data[i] * softplus(a.data[i]) }
            raw = a
            epsilon = eps
        } else {
            raw = nil                                             // evaluation: no noise, no noise network
            epsilon = nil
        }
        let p = softmaxRows(z)                                    // clean [N, E]
        // Choose on h; the weights are the renormalised softmax(h) of the chosen,
        // which is the softmax over the chosen h alone (part 1, §9).
        var r = TopKGating.select(probabilities: softmaxRows(h), k: k, renormalize: true, bias: context.selectionBias)
        r = Routing(k: k, probabilities: p, experts: r.experts, weights: r.weights)
        routing = r
        return r
    }

    public func backward(weightGradient dw: Tensor, probabilityGradient: Tensor?) -> Tensor {
        guard let r = routing else { preconditionFailure("NoisyTopKRouter.backward called before route") }
        let n = r.tokenCount, e = expertCount
        // In the forward pass w = softmax over the chosen h, so (part 1, §9):
        //     dh[e_i] = w_i · (dw_i − Σ_j dw_j w_j), and 0 for the experts not chosen
        var dh = Tensor.zeros([n, e])                              // [N, E]
        for t in 0..<n {
            var dot: Float = 0
            for j in 0..<k { dot += dw[t, j] * r.weights[t, j] }
            for j in 0..<k { dh[t, r.experts[t * k + j]] += r.weights[t, j] * (dw[t, j] - dot) }
        }
        // h = z + ε ⊙ σ gives dz = dh; p = softmax(z) adds the balancing loss's share.
        var dz = dh
        if let dp = probabilityGradient { dz += softmaxRowsBackward(probabilities: r.probabilities, outputGradient: dp) }
        // σ = softplus(raw) gives draw = dh ⊙ ε ⊙ sigmoid(raw), and the noise network's backward.
        if let a = raw, let eps = epsilon {
            var dRaw = Tensor.zeros([n, e])                        // [N, E]
            for i in 0..<dRaw.count { dRaw.data[i] = dh.data[i] * eps.data[i] * sigmoid(a.data[i]) }
            noiseInputGradient = noise.backward(dRaw)              // adds dW_noise, db_noise; dx [N, D]
        } else {
            noiseInputGradient = nil
        }
        return dz
    }
}

/// softplus(a) = log(1 + eᵃ), computed as max(a, 0) + log(1 + e^(−|a|)) so that
/// exp only ever sees a number ≤ 0 (for a = 100, eᵃ alone would overflow Float).
func softplus(_ a: Float) -> Float { max(a, 0) + log1p(exp(-abs(a))) }

/// sigmoid(a) = 1 / (1 + e^(−a)), the derivative of softplus.
func sigmoid(_ a: Float) -> Float { a >= 0 ? 1 / (1 + exp(-a)) : exp(a) / (1 + exp(a)) }
