// Exercise 5 — noisy top-k gating, with its noise network's backward.     (hard)
//
// Set in Notebooks/exercises.md, §5 (the derivation is there); part1-foundations.md,
// §3–§4 for the top-k and renormalisation it builds on.
// Grade it with:    swift run exercises check 5
//
// Shazeer et al. (2017) add Gaussian noise to the router's logits before
// choosing, so that early in training experts that are slightly behind still
// get tried. The size of the noise is learned, per token and expert, by a
// second linear map of the token:
//
//     raw = x·W_noiseᵀ + b_noise        [N, E]   `noise`, a Linear(D → E)
//     σ   = softplus(raw)               [N, E]   softplus(a) = log(1 + eᵃ) > 0
//     ε   ~ N(0, 1)                     [N, E]   in training; no noise at all in evaluation
//     h   = z + ε ⊙ σ                   [N, E]   z: the gate's logits
//     chosen = the k largest h per token
//     w   = softmax of h over the chosen [N, K]  (the paper's Softmax(KeepTopK(h, k)))
//     p   = softmax(z)                  [N, E]   Routing.probabilities: the *clean* ones
//
// Why p is clean: statistics and balancing losses read Routing.probabilities,
// and they should see what the router believes, not one draw of the noise
// (Notebooks/exercises.md, §5, has the argument and the library's choice).
// That gives the backward two roads to z, one through w and one through p.
//
// The noise network has weights of its own, so this router uses the parts of
// the `Router` protocol most routers leave alone: it reads x from
// `context.input`, lists its parameters in `namedParameters` (MoELayer hands
// them to the optimiser as "gating.noise.weight", …) and returns its share of
// dL/dx from `inputGradient()`.
//
// Holding ε fixed. The choice and ε are both held fixed when differentiating:
// ε is a constant drawn once per step, like a dropout mask. `fixedNoise` lets
// the grader supply ε, so finite differences see the same noise every time.
//
// The library's own version is NoisyTopKGating (Sources/MoE/MoE/NoisyTopKGating.swift).
// Write yours first; compare afterwards.
//
// Legend: N tokens, D model width, E experts, K chosen per token.
import Foundation
import MoE
import ExerciseGrader

public final class NoisyTopKRouter: NoiseHoldingRouter {
    public let expertCount: Int
    public let k: Int
    /// The noise network, Linear(D → E).   W [E, D], b [E]
    public let noise: Linear
    /// ε [N, E] to use in training instead of drawing it; nil: draw.
    public var fixedNoise: Tensor?
    private var rng: Xoshiro256
    // What backward will need, cached by route. Add what you use.
    private var raw: Tensor?                          // x·W_noiseᵀ + b [N, E]; nil in evaluation
    private var epsilon: Tensor?                      // ε [N, E]; nil in evaluation
    private var routing: Routing?
    private var noiseInputGradient: Tensor?           // dL/dx from the noise network [N, D]

    public init(modelDim: Int, experts: Int, k: Int, seed: UInt64 = 0) {
        expertCount = experts
        self.k = k
        rng = Xoshiro256(seed: seed)
        noise = Linear(inFeatures: modelDim, outFeatures: experts, rng: &rng)
        // Shazeer et al. start the noise network at zero: every σ = softplus(0) = ln 2.
        noise.weight.value = .zeros(noise.weight.value.shape)
        noise.bias!.value = .zeros(noise.bias!.value.shape)
    }

    public var name: String { "noisy-topk-exercise" }
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

    /// ε for this call: `fixedNoise` when set, else fresh N(0, 1) values (done for you).
    private func drawNoise(tokens n: Int) -> Tensor {
        fixedNoise ?? Tensor.normal([n, expertCount], rng: &rng)
    }

    public func route(logits z: Tensor, context: RoutingContext) -> Routing {
        let n = z.shape[0], e = expertCount
        // Step 1. In training: x = context.input (MoELayer always sets it, the
        //         grader too), raw = noise.forward(x), ε = drawNoise(tokens: n),
        //         and h = z + ε ⊙ softplus(raw), element by element. In
        //         evaluation (context.training false): h = z, and nothing to cache.
        // Step 2. The choice and the weights: the top-k of h, weighted by the
        //         softmax of h over the chosen — which is the renormalised
        //         softmax(h) at the chosen (part 1, §9), so
        //         TopKGating.select(probabilities: softmaxRows(h), k: k, renormalize: true)
        //         gives both.
        // Step 3. Return a Routing with those experts and weights but the clean
        //         probabilities softmaxRows(z); cache it, raw and ε for backward.
        //
        // Placeholder (wrong): experts 0 ..< k for every token, equal weights, no noise.
        var experts: [Int] = []
        for _ in 0..<n { experts += (0..<k).map { $0 < e ? $0 : -1 } }
        let r = Routing(k: k, probabilities: Tensor(shape: [n, e], repeating: 1 / Float(max(e, 1))),
                        experts: experts, weights: Tensor(shape: [n, k], repeating: 1 / Float(max(k, 1))))
        routing = r
        return r
    }

    public func backward(weightGradient dw: Tensor, probabilityGradient: Tensor?) -> Tensor {
        let n = dw.shape[0], e = expertCount
        // Step 1. The road through w. w is a softmax over the chosen h, so for
        //         token n with chosen experts e_0 … e_{k−1} (part 1, §9):
        //             dh[n, e_i] = w_i · (dw_i − Σ_j dw_j·w_j),   0 for the experts not chosen
        // Step 2. h = z + ε ⊙ σ, so dL/dz gets dh; and the road through p:
        //         add softmaxRowsBackward(probabilities: p, outputGradient: dp)
        //         when a balancing loss sent dp (`probabilityGradient`).
        // Step 3. The noise network (training only): σ = softplus(raw), so
        //             dL/draw = dh ⊙ ε ⊙ softplus'(raw),   softplus' = sigmoid
        //         and noiseInputGradient = noise.backward(dL/draw): Linear's
        //         backward adds dW_noise and db_noise into the parameters'
        //         grads and returns the noise network's dL/dx. In evaluation: nil.
        // Step 4. Return dL/dz.
        //
        // Placeholder (wrong): no gradient anywhere.
        noiseInputGradient = nil
        return Tensor.zeros([n, e])
    }
}

/// softplus(a) = log(1 + eᵃ), computed as max(a, 0) + log(1 + e^(−|a|)) so that
/// exp only ever sees a number ≤ 0 (for a = 100, eᵃ alone would overflow Float).
func softplus(_ a: Float) -> Float { max(a, 0) + log1p(exp(-abs(a))) }
