// Exercise 6 — expert-choice routing.     (hard)
//
// Set in Notebooks/exercises.md, §6; the backward is part1-foundations.md,
// §2 (the softmax) with §3's rule: hold the choice fixed, differentiate the weights.
// Grade it with:    swift run exercises check 6
//
// Zhou et al. (2022) turn routing around: instead of each token choosing its
// k experts, each expert chooses its C tokens. The load is then even by
// construction — every expert gets exactly C — and no balancing loss is
// needed; the price is that a token may be chosen by several experts, or by
// none.
//
//     p = softmax(logits)                          [N, E]   per token, over experts, as before
//     C = min(N, max(1, ⌈capacityFactor · N · k / E⌉))      tokens per expert (exercise 3's capacity)
//     expert j takes the C tokens with the largest p[·, j] (a column of p);
//         ties: the lower token index
//
// The `Routing` has one slot per expert (k = E): slot j of token n is
// expert j if j took n, else −1 (empty); its weight is p[n, j] if taken, else
// 0. No renormalisation: a token taken by two experts gets p[n, i] + p[n, j]
// of output in all, one taken by none gets 0. The budget is sized like top-k's:
// E·C ≈ capacityFactor·N·k slots in all, so a token is seen by k·capacityFactor
// experts on average — that is `activeExperts`.
//
// The library has its own ExpertChoiceRouter (Sources/MoE/MoE/ExpertChoiceRouter.swift),
// with this same name and init; inside this module the name means yours (a
// module's own declarations shadow the ones it imports). Write yours first.
//
// Legend: N tokens, E experts (= slots per token), C tokens per expert.
import MoE

public final class ExpertChoiceRouter: Router {
    public let expertCount: Int
    /// The experts per token the budget is sized for, as in top-k.
    public let k: Int
    /// Headroom on that budget: C is capacityFactor × the even share N·k/E.
    public let capacityFactor: Double
    // What backward will need, cached by route. Add what you use.
    private var routing: Routing?

    public init(experts: Int, k: Int, capacityFactor: Double = 1) {
        expertCount = experts
        self.k = k
        self.capacityFactor = capacityFactor
    }

    public var name: String { "expert-choice-exercise" }
    public var slots: Int { expertCount }
    public var activeExperts: Double { Double(k) * capacityFactor }

    public func route(logits: Tensor, context: RoutingContext) -> Routing {
        let n = logits.shape[0], e = expertCount
        // Step 1. p = softmaxRows(logits) and C as above (`.rounded(.up)`).
        // Step 2. For each expert j: order the tokens by p[t, j], largest first,
        //         equal values by lower t (a sort with that comparison), and
        //         take the first C. Why by p and not by the logits? A logit is
        //         only comparable with the others of its own row (part 1, §3).
        // Step 3. experts [N·E] starts all −1 and weights [N, E] all 0; for each
        //         taken (t, j): experts[t·E + j] = j, weights[t, j] = p[t, j].
        // Step 4. Cache and return Routing(k: E, probabilities: p, experts:, weights:).
        //
        // Placeholder (wrong): no expert takes any token.
        let r = Routing(k: e, probabilities: Tensor(shape: [n, e], repeating: 1 / Float(max(e, 1))),
                        experts: [Int](repeating: -1, count: n * e), weights: Tensor.zeros([n, e]))
        routing = r
        return r
    }

    /// dL/dw [N, E] (0 at empty slots) and a balancing loss's dL/dp [N, E] or nil -> dL/dlogits [N, E].
    public func backward(weightGradient dw: Tensor, probabilityGradient: Tensor?) -> Tensor {
        let n = dw.shape[0], e = expertCount
        // Step 1. dp = `probabilityGradient` or zeros.
        // Step 2. In the forward pass w[t, j] = p[t, j] for a taken slot, so
        //         dp[t, j] += dw[t, j] there (and nothing for an empty slot).
        // Step 3. Return softmaxRowsBackward(probabilities: p, outputGradient: dp).
        //
        // Placeholder (wrong): no gradient.
        return Tensor.zeros([n, e])
    }
}
