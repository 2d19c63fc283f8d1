// TopKGating: the router. Which experts does each token go to, and how much
// does each one's answer count?
//
//     logits = x·Wᵀ + b               [N, E]   one score per expert
//     p      = softmax(logits)         [N, E]   experts compete for the token
//     chosen = the k largest p per row [N, K]   (ties: the lower expert index)
//     w      = p[chosen] / Σ p[chosen] [N, K]   renormalised to sum to 1 (Mixtral)
//
// Only k of the E experts run for a token; the others cost nothing. The choice
// itself is a step function of the logits and has no gradient; the weights w
// are smooth functions of the logits of the chosen experts, so the task loss
// still teaches the router, through w (Notebooks/part1-foundations.md, §3, and
// part2-implementation.md, §6). With renormalisation off, w = p[chosen].
//
// Legend: N tokens, D model width, E experts, K experts chosen per token.

/// What the router decided for a batch of tokens.
public struct Routing {
    /// Experts chosen per token.
    public let k: Int
    /// Router probabilities p = softmax(logits)   [N, E]
    public let probabilities: Tensor
    /// Chosen experts, best first; row n is experts[n*k ..< n*k+k]   [N, K]
    public let experts: [Int]
    /// Combine weights of the chosen experts, same order   [N, K]
    public let weights: Tensor

    public var tokenCount: Int { probabilities.shape[0] }
    public var expertCount: Int { probabilities.shape[1] }
}

/// The linear router with softmax, top-k selection and (optional) renormalisation.
public final class TopKGating {
    public let router: Linear   // W [E, D], b [E]
    public let k: Int
    /// Renormalise the chosen probabilities to sum to 1 (Mixtral). Off: w = p[chosen].
    public var renormalize: Bool
    private var routing: Routing?   // cached by forward for backward

    public init(modelDim: Int, experts: Int, k: Int, renormalize: Bool = true, rng: inout Xoshiro256) {
        precondition(experts >= 1 && k >= 1 && k <= experts,
                     "TopKGating: need 1 ≤ k ≤ experts, got k = \(k), experts = \(experts)")
        router = Linear(inFeatures: modelDim, outFeatures: experts, rng: &rng)
        self.k = k
        self.renormalize = renormalize
    }

    public var expertCount: Int { router.outFeatures }

    /// x [N, D] -> the routing decision.
    public func forward(_ x: Tensor) -> Routing {
        let p = softmaxRows(router.forward(x))   // [N, E]
        let r = TopKGating.select(probabilities: p, k: k, renormalize: renormalize)
        routing = r
        return r
    }

    /// Top-k of each row of p, ties to the lower index, and the combine weights.
    /// k passes over the row, each taking the largest value not yet taken; a
    /// strict `>` keeps the first (lowest-index) of equal values.
    public static func select(probabilities p: Tensor, k: Int, renormalize: Bool) -> Routing {
        let n = p.shape[0], e = p.shape[1]
        var experts = [Int](repeating: 0, count: n * k)
        var weights = Tensor.zeros([n, k])
        var taken = [Bool](repeating: false, count: e)
        for t in 0..<n {
            for j in 0..<e { taken[j] = false }
            var sum: Float = 0
            for slot in 0..<k {
                var best = -1
                for j in 0..<e where !taken[j] && (best < 0 || p.data[t * e + j] > p.data[t * e + best]) { best = j }
                taken[best] = true
                experts[t * k + slot] = best
                weights.data[t * k + slot] = p.data[t * e + best]
                sum += p.data[t * e + best]
            }
            if renormalize {
                for slot in 0..<k { weights.data[t * k + slot] /= sum }
            }
        }
        return Routing(k: k, probabilities: p, experts: experts, weights: weights)
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
    /// dL/dlogits and the router's Linear backward gives dL/dx [N, D], which is
    /// returned; dL/dW and dL/db are added to the router's gradients.
    public func backward(weightGradient dw: Tensor, probabilityGradient dpExtra: Tensor?) -> Tensor {
        guard let r = routing else { preconditionFailure("TopKGating.backward called before forward") }
        let n = r.tokenCount, e = r.expertCount
        precondition(dw.shape == [n, k], "TopKGating.backward: dw has shape \(dw.shape), expected [\(n), \(k)]")
        var dp = dpExtra ?? Tensor.zeros([n, e])
        precondition(dp.shape == [n, e], "TopKGating.backward: dp has shape \(dp.shape), expected [\(n), \(e)]")
        for t in 0..<n {
            if renormalize {
                var sum: Float = 0, dot: Float = 0
                for j in 0..<k {
                    sum += r.probabilities.data[t * e + r.experts[t * k + j]]
                    dot += dw.data[t * k + j] * r.weights.data[t * k + j]
                }
                for j in 0..<k { dp.data[t * e + r.experts[t * k + j]] += (dw.data[t * k + j] - dot) / sum }
            } else {
                for j in 0..<k { dp.data[t * e + r.experts[t * k + j]] += dw.data[t * k + j] }
            }
        }
        let dLogits = softmaxRowsBackward(probabilities: r.probabilities, outputGradient: dp)
        return router.backward(dLogits)
    }

    public var namedParameters: [(name: String, parameter: Parameter)] { router.namedParameters }
}
