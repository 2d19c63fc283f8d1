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
//     ε   ~ N(0, 1)                     [N, E]   training only; 0 in evaluation
//     h   = z + ε ⊙ σ                   [N, E]   z: the gate's logits
//     p   = softmax(h)                  [N, E]
//     chosen = top-k of p; w = p[chosen] / Σ p[chosen]   (renormalised, as TopKGating)
//
// Backward, with ε held fixed (Notebooks/exercises.md, §5):
//
//     dp     = balancing dL/dp + (dw_j − Σ_i dw_i w_i) / S at the chosen experts
//     dh     = softmax backward of dp
//     dz     = dh                                  (h = z + …)
//     draw   = dh ⊙ ε ⊙ sigmoid(raw)               (softplus' = sigmoid)
//     dW_noise += drawᵀ·x, db_noise += Σ_n draw,  dx_noise = draw·W_noise   (Linear.backward)
//
// Legend: N tokens, D model width, E experts, K chosen per token.
import Foundation
import MoE
import ExerciseGrader

public final class NoisyTopKRouter: NoiseHoldingRouter {
    public let expertCount: Int
    public let k: Int
    /// The noise network, Linear(D → E), "router.noise" in a checkpoint.   W [E, D], b [E]
    public let noise: Linear
    public var fixedNoise: Tensor?
    private var rng: Xoshiro256
    // Cached by route for backward:
    private var raw = Tensor.zeros([0, 0])         // x·W_noiseᵀ + b [N, E]
    private var epsilon = Tensor.zeros([0, 0])     // ε [N, E] (zeros in evaluation)
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
        noise.bias.value = .zeros(noise.bias.value.shape)
    }

    public var name: String { "noisy-topk" }
    public var slots: Int { k }
    public var namedParameters: [(name: String, parameter: Parameter)] { prefixed("noise", noise.namedParameters) }
    public func inputGradient() -> Tensor? { noiseInputGradient }

    public func route(logits z: Tensor, context: RoutingContext) -> Routing {
        guard let x = context.input else { preconditionFailure("NoisyTopKRouter needs the layer's input x") }
        let n = z.shape[0], e = expertCount
        raw = noise.forward(x)                                    // [N, E]
        if context.training {
            epsilon = fixedNoise ?? Tensor.normal([n, e], rng: &rng)   // [N, E]
        } else {
            epsilon = .zeros([n, e])                              // evaluation: no noise
        }
        var h = z                                                 // [N, E]
        for i in 0..<h.count { h.data[i] += epsilon.data[i] * softplus(raw.data[i]) }
        let p = softmaxRows(h)                                    // [N, E]
        let r = TopKGating.select(probabilities: p, k: k, renormalize: true, bias: context.selectionBias)
        routing = r
        return r
    }

    public func backward(weightGradient dw: Tensor, probabilityGradient: Tensor?) -> Tensor {
        guard let r = routing else { preconditionFailure("NoisyTopKRouter.backward called before route") }
        let n = r.tokenCount, e = expertCount
        // In the forward pass this was w_j = p_{e_j} / S, so now (part 1, §4):
        //     dp_{e_i} += (dw_i − Σ_j dw_j w_j) / S
        var dp = probabilityGradient ?? Tensor.zeros([n, e])     // [N, E]
        for t in 0..<n {
            var sum: Float = 0, dot: Float = 0
            for j in 0..<k {
                sum += r.probabilities[t, r.experts[t * k + j]]
                dot += dw[t, j] * r.weights[t, j]
            }
            for j in 0..<k { dp[t, r.experts[t * k + j]] += (dw[t, j] - dot) / sum }
        }
        // p = softmax(h), so dh = p ⊙ (dp − Σ dp·p); and h = z + ε ⊙ softplus(raw):
        let dh = softmaxRowsBackward(probabilities: r.probabilities, outputGradient: dp)   // [N, E]
        var dRaw = Tensor.zeros([n, e])                                                    // [N, E]
        for i in 0..<dRaw.count { dRaw.data[i] = dh.data[i] * epsilon.data[i] * sigmoid(raw.data[i]) }
        noiseInputGradient = noise.backward(dRaw)   // adds dW_noise, db_noise; returns dx [N, D]
        return dh                                   // dL/dz = dL/dh
    }
}

/// softplus(a) = log(1 + eᵃ), written so that neither branch overflows:
/// max(a, 0) + log(1 + e^(−|a|)).
func softplus(_ a: Float) -> Float { max(a, 0) + log1p(exp(-abs(a))) }

/// sigmoid(a) = 1 / (1 + e^(−a)), the derivative of softplus.
func sigmoid(_ a: Float) -> Float { a >= 0 ? 1 / (1 + exp(-a)) : exp(a) / (1 + exp(a)) }
