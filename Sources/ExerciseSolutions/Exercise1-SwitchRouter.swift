// ═══════════════════════════════════════════════════════════════════════════
//  REFERENCE SOLUTION — exercise 1. Try the exercise first, in
//  Sources/Exercises/Exercise1-SwitchRouter.swift; read this afterwards.
// ═══════════════════════════════════════════════════════════════════════════
//
// Top-1 (Switch) routing: every token goes to the one expert with the largest
// router probability, and that expert's output is scaled by the probability.
//
//     p = softmax(logits)              [N, E]
//     e(n) = argmax_i p[n, i]          [N]      (ties: the lower index)
//     w[n] = p[n, e(n)]                [N, 1]   Switch: no renormalisation
//     w[n] = p[n, e(n)] / p[n, e(n)]   = 1      with renormalisation
//
// Backward (Notebooks/exercises.md, §1; part1-foundations.md, §8–§9):
//
//     no renormalisation:  dp[n, e(n)] += dw[n]         (w is p itself)
//     renormalisation:     dp[n, e(n)] += (dw[n] − dw[n]·w[n]) / S = 0, S = p[n, e(n)]
//     then                 dlogits = softmax backward of dp (with the balancing dp added)
//
// Legend: N tokens, E experts.
import MoE

public final class SwitchRouter: Router {
    public let expertCount: Int
    /// Divide the chosen probability by itself (w ≡ 1). Off: the Switch Transformer's w = p.
    public let renormalize: Bool
    // Cached by route for backward:
    private var probabilities = Tensor.zeros([0, 0])   // p [N, E]
    private var chosen: [Int] = []                      // e(n) [N]
    private var weights = Tensor.zeros([0, 1])          // w [N, 1]

    public init(experts: Int, renormalize: Bool = false) {
        precondition(experts >= 1, "SwitchRouter: need at least one expert, got \(experts)")
        expertCount = experts
        self.renormalize = renormalize
    }

    public var name: String { renormalize ? "top1-renormalised" : "switch" }
    public var slots: Int { 1 }

    public func route(logits: Tensor, context: RoutingContext) -> Routing {
        let n = logits.shape[0], e = expertCount
        let p = softmaxRows(logits)                       // [N, E]
        var chosen = [Int](repeating: 0, count: n)        // [N]
        var weights = Tensor.zeros([n, 1])                // [N, 1]
        for t in 0..<n {
            // argmax with a strict `>`: the first of equal values wins.
            var best = 0
            for i in 1..<e where p[t, i] > p[t, best] { best = i }
            chosen[t] = best
            let s = p[t, best]                            // S: the sum over the one chosen expert
            weights.data[t] = renormalize ? p[t, best] / s : p[t, best]
        }
        probabilities = p
        self.chosen = chosen
        self.weights = weights
        return Routing(k: 1, probabilities: p, experts: chosen, weights: weights)
    }

    /// In the forward pass this was w[n] = p[n, e(n)] (or p/S), so now:
    ///
    ///     dp[n, e(n)] += dw[n]                       without renormalisation
    ///     dp[n, e(n)] += (dw[n] − dw[n]·w[n]) / S    with it; w = 1 makes this 0
    ///
    /// and the balancing loss's dL/dp, if any, is already in dp. One softmax
    /// backward then gives dL/dlogits for every expert, chosen or not.
    public func backward(weightGradient dw: Tensor, probabilityGradient: Tensor?) -> Tensor {
        let n = probabilities.shape[0], e = expertCount
        var dp = probabilityGradient ?? Tensor.zeros([n, e])   // [N, E]
        for t in 0..<n {
            let i = t * e + chosen[t]
            if renormalize {
                // w = p/p is exactly 1 in floating point, so this is exactly 0.
                dp.data[i] += (dw.data[t] - dw.data[t] * weights.data[t]) / probabilities.data[i]
            } else {
                dp.data[i] += dw.data[t]
            }
        }
        return softmaxRowsBackward(probabilities: probabilities, outputGradient: dp)   // [N, E]
    }
}
