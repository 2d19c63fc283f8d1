// DeepSeekV3Router: sigmoid scores, group-limited selection, and weights that
// never see the balancing bias (DeepSeek-AI 2024, "DeepSeek-V3 Technical
// Report", §2.1.2; group-limited routing from DeepSeek-V2).
//
// Three departures from softmax top-k:
//
//   1. Sigmoid, not softmax. Each expert's affinity s_e = sigmoid(logit_e) is
//      judged on its own, so experts do not compete for a fixed total of 1;
//      with hundreds of fine-grained experts a softmax spreads too thin.
//   2. Group-limited selection. The experts are split into G groups (on a
//      cluster, a group is a node), and a token may only use experts of its
//      `topGroups` best groups, which bounds how many nodes a token's
//      activations travel to. A group's score is the sum of its two best
//      expert scores (one, if the group has a single expert).
//   3. The choice is made on s + b, where b is the auxiliary-loss-free
//      balancing bias (RoutingContext.selectionBias); the weights use s alone,
//      renormalised over the chosen experts and scaled by λ (`routedScaling`).
//
//     s        = sigmoid(logits)                             [N, E]
//     c        = s + b                                       [N, E]   scores for choosing only
//     score_g  = sum of the best two c in group g            [N, G]   groups: E/G consecutive experts
//     kept     = the topGroups best groups                   (ties: the lower group index)
//     chosen   = the k largest c among the kept groups' experts  [N, K]  (ties: lower expert index)
//     w        = λ · s[chosen] / Σ s[chosen]                 [N, K]   sums to λ; b never enters
//     q        = s / Σ_e s                                   [N, E]   the probabilities statistics
//                                                                     and balancing losses see
//
// q is s normalised over all E experts, which is what DeepSeek-V3's
// complementary sequence-wise balance loss uses, so the Switch loss and the
// router entropy read it as they read a softmax. DeepSeek-V3 itself has E =
// 256, G = 8, topGroups = 4, k = 8 and λ = 2.5 (λ makes up for the small
// weights of many fine-grained experts); λ = 1 here by default, so the weights
// sum to 1 like the other routers' and the layer's output scale is comparable.
// With G = 1 (the default) there is no group limit: sigmoid top-k.
//
// The gradient flows through w (choice held fixed) and, from a balancing
// loss, through q; both chain through the sigmoid. Derivation beside
// `backward`; the renormalisation is the one of Notebooks/part1-foundations.md, §9;
// the whole router is derived in part1-foundations.md, §14.
//
// Legend: N tokens, E experts, G groups, K experts chosen per token.
import Foundation

/// DeepSeek-V3 routing: sigmoid affinities, top groups then top-k, bias-free weights.
public final class DeepSeekV3Router: Router {
    public let expertCount: Int
    public let k: Int
    /// G, the number of expert groups (E/G consecutive experts each).
    public let groups: Int
    /// Groups a token may use.
    public let topGroups: Int
    /// λ, the factor on the renormalised weights (DeepSeek-V3: 2.5).
    public let routedScaling: Float
    // Cached by route for backward:
    private var routing: Routing?
    private var scores = Tensor.zeros([0, 0])   // s = sigmoid(logits) [N, E]

    /// - Parameters:
    ///   - experts: E; must be a multiple of `groups`.
    ///   - k: experts per token; at most topGroups · E/G, the experts a token can reach.
    ///   - groups: G, 1 (no group limit) by default.
    ///   - topGroups: groups a token may use, 1…G; all G by default.
    ///   - routedScaling: λ, 1 by default.
    public init(experts: Int, k: Int, groups: Int = 1, topGroups: Int? = nil, routedScaling: Float = 1) {
        let top = topGroups ?? groups
        precondition(experts >= 1 && k >= 1 && k <= experts,
                     "DeepSeekV3Router: need 1 ≤ k ≤ experts, got k = \(k), experts = \(experts)")
        precondition(groups >= 1 && experts % groups == 0,
                     "DeepSeekV3Router: \(groups) groups do not divide \(experts) experts evenly")
        precondition(top >= 1 && top <= groups,
                     "DeepSeekV3Router: topGroups must be in 1…\(groups) (the number of groups), got \(top)")
        precondition(top * (experts / groups) >= k,
                     "DeepSeekV3Router: \(top) groups of \(experts / groups) experts offer \(top * (experts / groups)) experts, fewer than k = \(k)")
        precondition(routedScaling > 0, "DeepSeekV3Router: routedScaling must be > 0, got \(routedScaling)")
        expertCount = experts
        self.k = k
        self.groups = groups
        self.topGroups = top
        self.routedScaling = routedScaling
    }

    public var name: String { "deepseek" }     // as RoutingSetup and mnist-moe --router call it
    public var slots: Int { k }

    public func route(logits: Tensor, context: RoutingContext) -> Routing {
        precondition(logits.rank == 2 && logits.shape[1] == expertCount,
                     "DeepSeekV3Router: logits have shape \(logits.shape), expected [N, \(expertCount)]")
        let n = logits.shape[0], e = expertCount, size = e / groups
        let bias = context.selectionBias
        precondition(bias == nil || bias!.count == e, "DeepSeekV3Router: selection bias has \(bias!.count) entries, expected \(e)")
        var s = logits                                           // s = sigmoid(logits) [N, E]
        for i in 0..<s.count { s.data[i] = 1 / (1 + exp(-s.data[i])) }
        var q = s                                                // q = s / Σ_e s [N, E]
        var experts = [Int](repeating: 0, count: n * k)          // [N, K]
        var w = Tensor.zeros([n, k])                             // [N, K]
        var c = [Float](repeating: 0, count: e)                  // one token's choice scores s + b
        var allowed = [Bool](repeating: false, count: e)
        var groupScore = [Float](repeating: 0, count: groups)
        for t in 0..<n {
            var total: Float = 0
            for j in 0..<e { c[j] = s.data[t * e + j] + (bias?[j] ?? 0); total += s.data[t * e + j] }
            for j in 0..<e { q.data[t * e + j] /= total }
            // Group scores: the best two c of each group.
            for g in 0..<groups {
                var first = -Float.infinity, second = -Float.infinity
                for j in (g * size)..<((g + 1) * size) {
                    if c[j] > first { second = first; first = c[j] } else if c[j] > second { second = c[j] }
                }
                groupScore[g] = size >= 2 ? first + second : first
            }
            // Keep the topGroups best groups (a strict > keeps the lower index on ties).
            for j in 0..<e { allowed[j] = false }
            var keptGroup = [Bool](repeating: false, count: groups)
            for _ in 0..<topGroups {
                var best = -1
                for g in 0..<groups where !keptGroup[g] && (best < 0 || groupScore[g] > groupScore[best]) { best = g }
                keptGroup[best] = true
                for j in (best * size)..<((best + 1) * size) { allowed[j] = true }
            }
            // Top-k of c among the allowed experts; weights from s alone.
            var sum: Float = 0
            for slot in 0..<k {
                var best = -1
                for j in 0..<e where allowed[j] && (best < 0 || c[j] > c[best]) { best = j }
                allowed[best] = false
                experts[t * k + slot] = best
                w.data[t * k + slot] = s.data[t * e + best]
                sum += s.data[t * e + best]
            }
            for slot in 0..<k { w.data[t * k + slot] = sum > 0 ? routedScaling * w.data[t * k + slot] / sum : 0 }
        }
        scores = s
        let r = Routing(k: k, probabilities: q, experts: experts, weights: w)
        routing = r
        return r
    }

    /// Backward with the choice held fixed. In the forward pass, per token,
    /// with S = Σ_chosen s and T = Σ_e s:
    ///
    ///     w_j = λ·s_{e_j} / S     ⇒  ∂w_j/∂s_{e_i} = (λ·δ_ij − w_j) / S
    ///     q_e = s_e / T           ⇒  ∂q_e/∂s_f     = (δ_ef − q_e) / T
    ///     s   = sigmoid(z)        ⇒  ds/dz         = s·(1 − s)
    ///
    /// so, for dw = dL/dw [N, K] and dq = dL/dq [N, E] (from a balancing loss, or nil):
    ///
    ///     dL/ds_{e_i} = (λ·dw_i − Σ_j dw_j·w_j) / S       chosen experts only
    ///     dL/ds_f    += (dq_f − Σ_e dq_e·q_e) / T          every expert
    ///     dL/dz       = dL/ds ⊙ s ⊙ (1 − s)
    ///
    /// The bias b picked the experts but appears in neither w nor q, so it
    /// gets no gradient (it is not a parameter; it is updated by counting).
    /// Cached: s, q (in the routing), the choice.
    public func backward(weightGradient dw: Tensor, probabilityGradient dq: Tensor?) -> Tensor {
        guard let r = routing else { preconditionFailure("DeepSeekV3Router.backward called before route") }
        let n = r.tokenCount, e = expertCount
        precondition(dw.shape == [n, k], "DeepSeekV3Router.backward: dw has shape \(dw.shape), expected [\(n), \(k)]")
        if let dq { precondition(dq.shape == [n, e], "DeepSeekV3Router.backward: dq has shape \(dq.shape), expected [\(n), \(e)]") }
        var ds = Tensor.zeros([n, e])                            // dL/ds [N, E]
        for t in 0..<n {
            var chosenSum: Float = 0, dot: Float = 0
            for j in 0..<k {
                chosenSum += scores.data[t * e + r.experts[t * k + j]]
                dot += dw.data[t * k + j] * r.weights.data[t * k + j]
            }
            if chosenSum > 0 {
                for j in 0..<k {
                    ds.data[t * e + r.experts[t * k + j]] += (routedScaling * dw.data[t * k + j] - dot) / chosenSum
                }
            }
            if let dq {
                var total: Float = 0, dotQ: Float = 0
                for f in 0..<e {
                    total += scores.data[t * e + f]
                    dotQ += dq.data[t * e + f] * r.probabilities.data[t * e + f]
                }
                for f in 0..<e { ds.data[t * e + f] += (dq.data[t * e + f] - dotQ) / total }
            }
        }
        var dz = ds                                              // dL/dlogits [N, E]
        for i in 0..<dz.count { dz.data[i] *= scores.data[i] * (1 - scores.data[i]) }
        return dz
    }
}
