// ExpertChoiceRouter: the experts choose their tokens, not the other way round
// (Zhou et al. 2022, "Mixture-of-Experts with Expert Choice Routing").
//
// Token-choice routing (top-k) lets every token pick its favourite experts,
// and nothing stops them all picking the same ones: hence balancing losses
// and capacity drops. Expert choice turns the table round. Each expert takes
// a fixed number c of tokens, the ones that want it most, so the load is
// perfectly even by construction, with no auxiliary loss and nothing dropped:
//
//     p      = softmax(logits)                         [N, E]   as in top-k: experts compete for a token
//     c      = min(N, ⌈capacityFactor · N · k / E⌉)    tokens per expert
//     T_e    = the c tokens with the largest p[:, e]   (ties: the lower token index)
//     w[n,e] = p[n, e]  if n ∈ T_e, else 0 (empty slot) [N, E]
//
// The paper writes S = Softmax(X·W_g), then I, G = TopK(Sᵀ, k) with k = n·c/e:
// its "k" is our c (tokens per expert) and its "capacity factor c" (average
// experts per token) is our k · capacityFactor.
//
// What changes for the rest of the layer:
//   * Slots: a token can be picked by 0, 1, … or all E experts, so the
//     routing has E slots per token, slot j standing for expert j (−1 when j
//     did not pick the token). A token nobody picked leaves this layer as a
//     zero vector (the residual stream of a transformer would carry it on).
//   * Active experts: c·E/N per token on average, which is k · capacityFactor
//     up to the rounding of c; that is what `activeExperts` reports.
//   * The weights are not renormalised: a token picked by two experts gets
//     p[n, e₁] + p[n, e₂] ≤ 1 in total, one picked by none gets 0.
//   * Causality: which tokens an expert takes depends on the whole batch, so
//     a token's output depends on the other tokens. Harmless for classifying
//     a batch of images; for autoregressive decoding it leaks the future, the
//     paper's own caveat.
//   * A selection bias (auxiliary-loss-free balancing) would add the same
//     number to a whole column of p, which cannot change that column's top c:
//     it is ignored here (and there is nothing to balance).
//   * No noise and no dropout: routing is the same in training and evaluation.
//
// The gradient, as for top-k, flows through the weights with the choice held
// fixed: dL/dw[n, e] reaches p[n, e] for the picked entries only, then the
// softmax backward. Notebooks/part1-foundations.md, §8 and §13.
//
// Legend: N tokens, E experts, c tokens per expert, K = E slots per token here.

/// Expert-choice routing: each expert takes its top-c tokens by router probability.
public final class ExpertChoiceRouter: Router {
    public let expertCount: Int
    /// The nominal experts per token k that sizes c (the paper's capacity factor is k · capacityFactor).
    public let k: Int
    /// Headroom on c: 1 is exactly k experts per token on average.
    public let capacityFactor: Double
    private var routing: Routing?   // cached by route for backward

    /// - Parameters:
    ///   - experts: E.
    ///   - k: average experts per token the budget is sized for (1 ≤ k ≤ E).
    ///   - capacityFactor: multiplies the budget; c = min(N, ⌈capacityFactor · N · k / E⌉).
    public init(experts: Int, k: Int, capacityFactor: Double = 1) {
        precondition(experts >= 1 && k >= 1 && k <= experts,
                     "ExpertChoiceRouter: need 1 ≤ k ≤ experts, got k = \(k), experts = \(experts)")
        precondition(capacityFactor > 0, "ExpertChoiceRouter: capacityFactor must be > 0, got \(capacityFactor)")
        expertCount = experts
        self.k = k
        self.capacityFactor = capacityFactor
    }

    public var name: String { "expert-choice" }   // as RoutingSetup and mnist-moe --router call it
    public var slots: Int { expertCount }
    public var activeExperts: Double { Double(k) * capacityFactor }

    /// c, the tokens each expert takes from a batch of `n`: min(n, ⌈capacityFactor · n · k / E⌉).
    public func tokensPerExpert(tokens n: Int) -> Int {
        min(n, Int((capacityFactor * Double(n) * Double(k) / Double(expertCount)).rounded(.up)))
    }

    /// - Complexity: O(E · N log N), a sort of each expert's column.
    public func route(logits: Tensor, context: RoutingContext) -> Routing {
        precondition(logits.rank == 2 && logits.shape[1] == expertCount,
                     "ExpertChoiceRouter: logits have shape \(logits.shape), expected [N, \(expertCount)]")
        let n = logits.shape[0], e = expertCount
        let p = softmaxRows(logits)                              // [N, E]
        let c = tokensPerExpert(tokens: n)
        var experts = [Int](repeating: -1, count: n * e)         // [N, E]: slot j is expert j, or −1
        var weights = Tensor.zeros([n, e])                       // [N, E]
        for j in 0..<e {
            // Column j, largest first; equal probabilities keep token order.
            let ranked = (0..<n).sorted { a, b in
                let pa = p.data[a * e + j], pb = p.data[b * e + j]
                return pa != pb ? pa > pb : a < b
            }
            for t in ranked.prefix(c) {
                experts[t * e + j] = j
                weights.data[t * e + j] = p.data[t * e + j]
            }
        }
        let r = Routing(k: e, probabilities: p, experts: experts, weights: weights)
        routing = r
        return r
    }

    /// Backward with each expert's picks held fixed. In the forward pass
    /// w[n, j] = p[n, j] where expert j picked token n (and 0, a constant, elsewhere), so
    ///
    ///     dL/dp[n, j] = dw[n, j]  (picked)  + dp_balancing[n, j]
    ///     dL/dlogits  = softmax_backward(p, dL/dp)      (Notebooks/part2-implementation.md, §13)
    ///
    /// Cached: the routing (p and the picks).   dw [N, E], dp [N, E] or nil -> [N, E]
    public func backward(weightGradient dw: Tensor, probabilityGradient dpExtra: Tensor?) -> Tensor {
        guard let r = routing else { preconditionFailure("ExpertChoiceRouter.backward called before route") }
        let n = r.tokenCount, e = expertCount
        precondition(dw.shape == [n, e], "ExpertChoiceRouter.backward: dw has shape \(dw.shape), expected [\(n), \(e)]")
        var dp = dpExtra ?? Tensor.zeros([n, e])                 // dL/dp [N, E]
        precondition(dp.shape == [n, e], "ExpertChoiceRouter.backward: dp has shape \(dp.shape), expected [\(n), \(e)]")
        for i in 0..<(n * e) where r.experts[i] >= 0 { dp.data[i] += dw.data[i] }
        return softmaxRowsBackward(probabilities: r.probabilities, outputGradient: dp)
    }
}
