// TopKGating: the walkthrough's router. Which experts does each token go to,
// and how much does each one's answer count?
//
//     logits = x·Wᵀ + b               [N, E]   (MoELayer.gate, before this router)
//     p      = softmax(logits / T)     [N, E]   experts compete for the token
//     chosen = the k largest p per row [N, K]   (ties: the lower expert index)
//     w      = p[chosen] / Σ p[chosen] [N, K]   renormalised to sum to 1 (Mixtral)
//
// Only k of the E experts run for a token; the others cost nothing. The choice
// itself is a step function of the logits and has no gradient; the weights w
// are smooth functions of the logits of the chosen experts, so the task loss
// still teaches the router, through w (Notebooks/part1-foundations.md, §3, and
// part2-implementation.md, §6). With renormalisation off, w = p[chosen].
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
// Legend: N tokens, E experts, K experts chosen per token.
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

    public let expertCount: Int
    public let k: Int
    /// Renormalise the chosen probabilities to sum to 1 (Mixtral). Off: w = p[chosen].
    public var renormalize: Bool
    public var order: Order
    public var temperature: TemperatureSchedule
    /// Probability that an expert sits out a training step (0: off).
    public var expertDropout: Float
    private var rng: Xoshiro256
    // Cached by route for backward:
    private var routing: Routing?
    private var currentTemperature: Float = 1

    public init(experts: Int, k: Int, renormalize: Bool = true, order: Order = .softmaxThenTopK,
                temperature: TemperatureSchedule = .none, expertDropout: Float = 0, seed: UInt64 = 0) {
        precondition(experts >= 1 && k >= 1 && k <= experts,
                     "TopKGating: need 1 ≤ k ≤ experts, got k = \(k), experts = \(experts)")
        precondition(expertDropout >= 0 && expertDropout < 1, "TopKGating: expert dropout \(expertDropout) is not in [0, 1)")
        expertCount = experts
        self.k = k
        self.renormalize = renormalize
        self.order = order
        self.temperature = temperature
        self.expertDropout = expertDropout
        rng = Xoshiro256(seed: seed ^ 0x5EED_D20B)
    }

    public var name: String { k == 1 && !renormalize ? "switch" : "topk" }
    public var slots: Int { k }

    public func route(logits: Tensor, context: RoutingContext) -> Routing {
        precondition(logits.rank == 2 && logits.shape[1] == expertCount,
                     "TopKGating: logits have shape \(logits.shape), expected [N, \(expertCount)]")
        let t = temperature.value(at: context.progress)
        currentTemperature = t
        let p = softmaxRows(t == 1 ? logits : logits * (1 / t))
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
        let scores = order == .softmaxThenTopK ? p : logits
        var r = TopKGating.select(probabilities: p, k: k, renormalize: renormalize || order == .topKThenSoftmax,
                                  scores: scores, bias: bias)
        if order == .topKThenSoftmax { r = TopKGating.softmaxOverChosen(logits: logits, temperature: t, routing: r) }
        routing = r
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
        return currentTemperature == 1 ? dLogits : dLogits * (1 / currentTemperature)
    }
}
