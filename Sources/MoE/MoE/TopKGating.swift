// TopKGating: the walkthrough's router. Which experts does each token go to,
// and how much does each one's answer count?
//
//     logits = x·Wᵀ                   [N, E]   (MoELayer.gate, before this router; no bias)
//     z̃      = logits + ε ⊙ softplus(noise_weights)   training only, ε ~ N(0, 1) [N, E]
//     p      = softmax(z̃ / T)         [N, E]   experts compete for the token
//     chosen = the k largest p per row [N, K]   (ties: the lower expert index)
//     w      = p[chosen] / Σ p[chosen] [N, K]   renormalised to sum to 1 (Mixtral)
//
// That is Part 2's `TopKGating.forward` line for line, except that the gate
// itself lives in the layer (`MoELayer.gate`): every router sees logits, so a
// student can swap the router without touching the gate (Router.swift). The
// learned noise is Part 1's "noisy gating": one scale per expert, softplus of a
// parameter that starts at 0 (scale ln 2), independent of the input, and only
// in training; balancing losses read the same noisy p the top-k was taken
// from, as Part 2's code does. Evaluation routes deterministically.
// (`noise: .none` drops it, the router this project used before 2026-12;
// NoisyTopKGating is Shazeer's input-dependent version.)
//
// Only k of the E experts run for a token; the others cost nothing. The choice
// itself is a step function of the logits and has no gradient; the weights w
// are smooth functions of the logits of the chosen experts, so the task loss
// still teaches the router, through w (Notebooks/part1-foundations.md, §8, and
// part2-implementation.md, §15). With renormalisation off, w = p[chosen].
//
// Variations, each a setting of this one class:
//   * k = 1 without renormalisation is Switch routing (Fedus et al. 2022): the
//     expert's output is scaled by its gate probability. With renormalisation,
//     k = 1 gives every token weight 1, and the task loss teaches the router
//     nothing (dL/dlogits = 0 exactly; a test shows it) — only a balancing
//     loss would move it.
//   * `order: .topKThenSoftmax`: pick the k largest logits, softmax over those
//     k only. Softmax is monotone, so the same experts win, and
//     exp(zᵢ)/Σ_chosen exp(z) = pᵢ/Σ_chosen p: the weights equal the
//     renormalised ones (a test checks it). Two roads, one answer.
//   * temperature T with a schedule (constant, linear or cosine from T₀ to T₁
//     over training): T > 1 flattens p so more experts get tried early, T < 1
//     sharpens it. The tiny-MoE notes anneal it (seed 000).
//   * expert dropout (training only): each step, each expert is left out of
//     the choice with probability `expertDropout`, so tokens must go
//     elsewhere. The notes warn that this jolts the router; it is here to be
//     measured, off by default.
//   * a selection bias (auxiliary-loss-free balancing) is added to p when
//     choosing, never to w.
//
// Legend (the code's letters; the walkthrough's in brackets): N tokens [B],
// E experts [N], K experts chosen per token [k].
import Foundation

/// How the router temperature moves over training (progress 0 → 1).
public struct TemperatureSchedule: Equatable {
    public enum Shape: String { case constant, linear, cosine }
    public var start: Float
    public var end: Float
    public var shape: Shape

    public init(start: Float = 1, end: Float? = nil, shape: Shape = .constant) {
        self.start = start
        self.end = end ?? start
        self.shape = end == nil ? .constant : shape
    }

    public static let none = TemperatureSchedule()

    /// T at a point of training: linear interpolates, cosine follows half a
    /// cosine wave (slow at both ends), constant stays at `start`.
    public func value(at progress: Double) -> Float {
        let s = Float(min(max(progress, 0), 1))
        switch shape {
        case .constant: return start
        case .linear: return start + (end - start) * s
        case .cosine: return end + (start - end) * 0.5 * (1 + cos(Float.pi * s))
        }
    }
}

/// Softmax → top-k → (renormalise), the default router.
public final class TopKGating: Router {
    public enum Order: String { case softmaxThenTopK = "softmax-topk", topKThenSoftmax = "topk-softmax" }
    /// Gate noise in training: none, or the walkthrough's ε·softplus(noise_weights).
    public enum Noise: String { case none, learned }

    public let expertCount: Int
    public let k: Int
    /// Renormalise the chosen probabilities to sum to 1 (Mixtral). Off: w = p[chosen].
    public var renormalize: Bool
    public var order: Order
    public var temperature: TemperatureSchedule
    /// Probability that an expert sits out a training step (0: off).
    public var expertDropout: Float
    public let noise: Noise
    /// Part 2's `noise_weights`: the learned noise scale of each expert is
    /// softplus(noiseWeights[i]); zeros at the start (scale ln 2). nil without noise.   [E]
    public let noiseWeights: Parameter?
    /// Gradient checks need the same function at every call: when true, a
    /// training forward reuses the last ε instead of drawing new noise.
    public var replaysNoise = false
    private var rng: Xoshiro256              // expert dropout
    private var noiseGenerator: Xoshiro256   // ε
    // Cached by route for backward:
    private var routing: Routing?
    private var currentTemperature: Float = 1
    private var epsilon: [Float]? = nil      // ε of the last training forward [N, E]
    private var usedNoise = false            // the last route added ε

    public init(experts: Int, k: Int, renormalize: Bool = true, order: Order = .softmaxThenTopK,
                temperature: TemperatureSchedule = .none, expertDropout: Float = 0, noise: Noise = .none,
                seed: UInt64 = 0) {
        precondition(experts >= 1 && k >= 1 && k <= experts,
                     "TopKGating: need 1 ≤ k ≤ experts, got k = \(k), experts = \(experts)")
        precondition(expertDropout >= 0 && expertDropout < 1, "TopKGating: expert dropout \(expertDropout) is not in [0, 1)")
        expertCount = experts
        self.k = k
        self.renormalize = renormalize
        self.order = order
        self.temperature = temperature
        self.expertDropout = expertDropout
        self.noise = noise
        noiseWeights = noise == .learned ? Parameter(.zeros([experts])) : nil
        rng = Xoshiro256(seed: seed ^ 0x5EED_D20B)
        noiseGenerator = Xoshiro256(seed: seed ^ 0x0015_E5CA_1E)
    }

    public var name: String { k == 1 && !renormalize ? "switch" : "topk" }
    public var slots: Int { k }
    public var namedParameters: [(name: String, parameter: Parameter)] {
        noiseWeights.map { [("noise_weights", $0)] } ?? []
    }

    /// Uses `epsilon` [N, E] (row-major) as the noise of the next training
    /// forwards instead of drawing it: how the PyTorch parity test gives both
    /// implementations the very same draws. Sets `replaysNoise`.
    public func useNoise(_ epsilon: [Float]) {
        self.epsilon = epsilon
        replaysNoise = true
    }

    /// Both generators' positions (expert dropout, then ε), for `--resume`.
    public var randomState: [UInt64] {
        let a = rng.state, b = noiseGenerator.state
        return [a.0, a.1, a.2, a.3, b.0, b.1, b.2, b.3]
    }

    public func restoreRandomState(_ words: [UInt64]) throws {
        guard words.count == 8, words[0..<4].contains(where: { $0 != 0 }), words[4..<8].contains(where: { $0 != 0 }) else {
            throw RoutingSetupError(message: "TopKGating: a saved generator state is 8 words, not all zero per generator; got \(words.count)")
        }
        rng = Xoshiro256(state: (words[0], words[1], words[2], words[3]))
        noiseGenerator = Xoshiro256(state: (words[4], words[5], words[6], words[7]))
    }

    public func route(logits: Tensor, context: RoutingContext) -> Routing {
        precondition(logits.rank == 2 && logits.shape[1] == expertCount,
                     "TopKGating: logits have shape \(logits.shape), expected [N, \(expertCount)]")
        let t = temperature.value(at: context.progress)
        currentTemperature = t
        // z̃ = logits + ε ⊙ softplus(noise_weights), in training only; row-major
        // draws, so the noise is the same for any thread count.
        var z = logits                                              // z̃ [N, E]
        if let w = noiseWeights, context.training {
            let e = expertCount, count = logits.count
            var eps = epsilon ?? []
            if !(replaysNoise && eps.count == count) {
                eps = [Float](repeating: 0, count: count)
                for i in 0..<count { eps[i] = noiseGenerator.normal() }
            }
            let scale = w.value.data.map(NoisyTopKGating.softplus)  // [E]
            for i in 0..<count { z.data[i] += eps[i] * scale[i % e] }
            epsilon = eps
        } else if !replaysNoise {
            epsilon = nil
        }
        let p = softmaxRows(t == 1 ? z : z * (1 / t))
        // Scores the choice is made on: p (or the logits), plus the bias, minus
        // the experts sitting out. The weights always come from p.
        var bias = context.selectionBias ?? [Float](repeating: 0, count: expertCount)
        if context.training && expertDropout > 0 {
            // Each expert sits out with probability `expertDropout`, but at least
            // k stay in so every token can still fill its slots.
            var out = (0..<expertCount).map { _ in rng.uniform() < expertDropout }
            while out.filter({ !$0 }).count < k { out[rng.below(expertCount)] = false }
            for i in 0..<expertCount where out[i] { bias[i] = -.infinity }
        }
        let scores = order == .softmaxThenTopK ? p : z
        var r = TopKGating.select(probabilities: p, k: k, renormalize: renormalize || order == .topKThenSoftmax,
                                  scores: scores, bias: bias)
        if order == .topKThenSoftmax { r = TopKGating.softmaxOverChosen(logits: z, temperature: t, routing: r) }
        routing = r
        usedNoise = context.training && noiseWeights != nil
        return r
    }

    /// Top-k of each row, ties to the lower index, and the combine weights.
    /// k passes over the row, each taking the largest score not yet taken; a
    /// strict `>` keeps the first (lowest-index) of equal values. The choice
    /// is made on `scores + bias` (default: p itself), the weights are p's.
    public static func select(probabilities p: Tensor, k: Int, renormalize: Bool,
                              scores: Tensor? = nil, bias: [Float]? = nil) -> Routing {
        let n = p.shape[0], e = p.shape[1]
        let s = scores ?? p
        var experts = [Int](repeating: 0, count: n * k)
        var weights = Tensor.zeros([n, k])
        var taken = [Bool](repeating: false, count: e)
        for t in 0..<n {
            for j in 0..<e { taken[j] = false }
            var sum: Float = 0
            for slot in 0..<k {
                var best = -1, bestScore = -Float.infinity
                for j in 0..<e where !taken[j] {
                    let v = s.data[t * e + j] + (bias?[j] ?? 0)
                    if best < 0 || v > bestScore { best = j; bestScore = v }
                }
                taken[best] = true
                experts[t * k + slot] = best
                weights.data[t * k + slot] = p.data[t * e + best]
                sum += p.data[t * e + best]
            }
            if renormalize && sum > 0 {
                for slot in 0..<k { weights.data[t * k + slot] /= sum }
            }
        }
        return Routing(k: k, probabilities: p, experts: experts, weights: weights)
    }

    /// Weights as a softmax over the chosen logits only: w_j = exp(z_j/T) / Σ_chosen exp(z/T).
    static func softmaxOverChosen(logits: Tensor, temperature t: Float, routing r: Routing) -> Routing {
        let n = r.tokenCount, e = r.expertCount, k = r.k
        var w = Tensor.zeros([n, k])
        for row in 0..<n {
            var m = -Float.infinity
            for j in 0..<k { m = max(m, logits.data[row * e + r.experts[row * k + j]] / t) }
            var sum: Float = 0
            for j in 0..<k {
                let v = exp(logits.data[row * e + r.experts[row * k + j]] / t - m)
                w.data[row * k + j] = v
                sum += v
            }
            for j in 0..<k { w.data[row * k + j] /= sum }
        }
        return Routing(k: k, probabilities: r.probabilities, experts: r.experts, weights: w)
    }

    /// Backward from the gradients of the two things the router's outputs feed:
    /// dL/dw [N, K] (from the combine step) and dL/dp [N, E] (from a balancing
    /// loss, or nil). With S = Σ_slots p[chosen]:
    ///
    ///     w_j = p_{e_j} / S   ⇒   ∂w_j/∂p_{e_i} = (δ_ij − w_j) / S
    ///     dL/dp_{e_i} += (dw_i − Σ_j dw_j·w_j) / S        (renormalised)
    ///     dL/dp_{e_i} += dw_i                              (not renormalised)
    ///
    /// Experts not chosen get nothing from w. Then the softmax backward gives
    /// dL/d(logits/T), and dividing by T gives dL/dlogits [N, E].
    /// (top-k → softmax: w = softmax of the chosen logits/T, whose Jacobian
    /// gives dL/dz_{e_i} = w_i (dw_i − Σ_j dw_j·w_j) / T — the same numbers,
    /// since w_i/T·… equals p_{e_i}/S·… after the softmax backward.)
    ///
    /// With learned noise, everything above is dL/dz̃, and z̃ = z + ε ⊙ softplus(v):
    ///
    ///     dL/dz   = dL/dz̃                                   the noise is added, ∂z̃/∂z = 1
    ///     dL/dv_i += Σ_n dL/dz̃[n, i] · ε[n, i] · σ(v_i)      softplus′ = sigmoid σ
    ///
    /// (v = noise_weights.) Notebooks/part2-implementation.md, §15 derives both.
    public func backward(weightGradient dw: Tensor, probabilityGradient dpExtra: Tensor?) -> Tensor {
        guard let r = routing else { preconditionFailure("TopKGating.backward called before route") }
        let n = r.tokenCount, e = r.expertCount
        precondition(dw.shape == [n, k], "TopKGating.backward: dw has shape \(dw.shape), expected [\(n), \(k)]")
        var dp = dpExtra ?? Tensor.zeros([n, e])
        precondition(dp.shape == [n, e], "TopKGating.backward: dp has shape \(dp.shape), expected [\(n), \(e)]")
        let normalised = renormalize || order == .topKThenSoftmax
        var direct = Tensor.zeros([0])   // top-k → softmax: dL/dz from w, added after the softmax backward
        if order == .topKThenSoftmax { direct = Tensor.zeros([n, e]) }
        for t in 0..<n {
            if normalised {
                var sum: Float = 0, dot: Float = 0
                for j in 0..<k {
                    sum += r.probabilities.data[t * e + r.experts[t * k + j]]
                    dot += dw.data[t * k + j] * r.weights.data[t * k + j]
                }
                for j in 0..<k {
                    let i = t * e + r.experts[t * k + j]
                    if order == .topKThenSoftmax {
                        direct.data[i] += r.weights.data[t * k + j] * (dw.data[t * k + j] - dot)
                    } else if sum > 0 {
                        dp.data[i] += (dw.data[t * k + j] - dot) / sum
                    }
                }
            } else {
                for j in 0..<k { dp.data[t * e + r.experts[t * k + j]] += dw.data[t * k + j] }
            }
        }
        var dLogits = softmaxRowsBackward(probabilities: r.probabilities, outputGradient: dp)
        if order == .topKThenSoftmax { dLogits += direct }
        if currentTemperature != 1 { dLogits = dLogits * (1 / currentTemperature) }   // dL/dz̃ [N, E]
        if usedNoise, let v = noiseWeights, let eps = epsilon {
            for i in 0..<e {
                var sum: Float = 0
                for t in 0..<n { sum += dLogits.data[t * e + i] * eps[t * e + i] }
                v.grad.data[i] += sum / (1 + exp(-v.value.data[i]))   // · σ(v_i)
            }
        }
        return dLogits
    }
}
