// Exercise 1 — top-1 (Switch) routing, forward and backward.     (easy)
//
// Set in Notebooks/exercises.md, §1; the maths is part1-foundations.md, §8–§9.
// Grade it with:    swift run exercises check 1
//
// The Switch Transformer sends every token to exactly one expert, the one
// with the largest router probability, and scales that expert's output by the
// probability itself:
//
//     p    = softmax(logits)            [N, E]
//     e(n) = argmax_i p[n, i]           [N]      ties: the lower expert index
//     w[n] = p[n, e(n)]                 [N, 1]   no renormalisation
//
// With `renormalize: true` the weight is instead p[n, e(n)] / S with
// S = p[n, e(n)], the sum of the chosen probabilities — which is 1 for every
// token. Part 1, §8 says what that does to learning; the grader checks that
// your backward agrees exactly.
//
// What `route` and `backward` must do is the `Router` contract of
// Sources/MoE/MoE/Router.swift (read its header first). TopKGating.swift
// is the library's top-k router — TopKGating(experts:k: 1, renormalize: false)
// is this very router — you may read it, but write this one yourself.
//
// Legend: N tokens, E experts.
import MoE

public final class SwitchRouter: Router {
    public let expertCount: Int
    /// w = p / S (which is 1) instead of w = p.
    public let renormalize: Bool
    // What backward will need, cached by route. Add what you use.
    private var probabilities = Tensor.zeros([0, 0])   // p [N, E]
    private var chosen: [Int] = []                      // e(n) [N]

    public init(experts: Int, renormalize: Bool = false) {
        expertCount = experts
        self.renormalize = renormalize
    }

    public var name: String { "switch-exercise" }
    public var slots: Int { 1 }

    /// logits [N, E] -> the routing: one slot per token.
    public func route(logits: Tensor, context: RoutingContext) -> Routing {
        let n = logits.shape[0], e = expertCount
        // Step 1. p = softmax(logits), row by row (`softmaxRows`).
        // Step 2. For each token, e(n) = the index of the largest p[n, i]; on a
        //         tie keep the first (a strict `>` while scanning does that).
        // Step 3. The weight: p[n, e(n)], or p[n, e(n)] / S when `renormalize`.
        // Step 4. Cache p and e(n) for backward, and return
        //         Routing(k: 1, probabilities: p, experts: e(n) as [Int], weights: [N, 1]).
        //
        // Placeholder (wrong): uniform probabilities, everyone to expert 0 with weight 1.
        let p = Tensor(shape: [n, e], repeating: 1 / Float(max(e, 1)))
        probabilities = p
        chosen = [Int](repeating: 0, count: n)
        return Routing(k: 1, probabilities: p, experts: chosen, weights: Tensor(shape: [n, 1], repeating: 1))
    }

    /// dL/dw [N, 1] and a balancing loss's dL/dp [N, E] (or nil) -> dL/dlogits [N, E].
    public func backward(weightGradient dw: Tensor, probabilityGradient: Tensor?) -> Tensor {
        let n = probabilities.shape[0], e = expertCount
        // Step 1. Start dp [N, E] from `probabilityGradient`, or zeros when it is nil.
        // Step 2. Add what the weight contributes, at the chosen expert only:
        //           w = p[n, e(n)]       ⇒  dp[n, e(n)] += dw[n]
        //           w = p[n, e(n)] / S   ⇒  dp[n, e(n)] += (dw[n] − dw[n]·w[n]) / S   (part 1, §9)
        // Step 3. Return softmaxRowsBackward(probabilities: p, outputGradient: dp):
        //         every logit moves p[n, e(n)], not only the chosen one.
        //
        // Placeholder (wrong): no gradient at all.
        return Tensor.zeros([n, e])
    }
}
