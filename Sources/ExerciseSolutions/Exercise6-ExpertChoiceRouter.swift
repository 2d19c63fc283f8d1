// ═══════════════════════════════════════════════════════════════════════════
//  REFERENCE SOLUTION — exercise 6. Try the exercise first, in
//  Sources/Exercises/Exercise6-ExpertChoiceRouter.swift; read this afterwards.
// ═══════════════════════════════════════════════════════════════════════════
//
// Expert-choice routing (Zhou et al. 2022): the experts choose the tokens.
//
//     p = softmax(logits)                       [N, E]   over experts, per token, as usual
//     C = min(N, max(1, ⌈capacityFactor · N · k / E⌉))  tokens per expert (exercise 3's capacity)
//     expert j takes the C tokens with the largest p[·, j]  (ties: the lower token index)
//     slot j of token n: expert j if it took n, else empty (−1); weight p[n, j] or 0
//
// Every expert gets exactly C tokens, so the load is even by construction; a
// token may be taken by several experts, or by none (k · capacityFactor of
// them on average). This is the library's ExpertChoiceRouter written again.
// Backward
// (Notebooks/exercises.md, §6): w[n, j] = p[n, j] where taken, so
//
//     dp[n, j] += dw[n, j] where taken;   dlogits = softmax backward of dp
//
// Legend: N tokens, E experts (= slots per token), C tokens per expert.
import Foundation
import MoE

public final class ExpertChoiceRouter: Router {
    public let expertCount: Int
    /// The experts per token the budget is sized for, as in top-k.
    public let k: Int
    /// Headroom on that budget: C is capacityFactor × the even share N·k/E.
    public let capacityFactor: Double
    private var routing: Routing?   // cached for backward

    public init(experts: Int, k: Int, capacityFactor: Double = 1) {
        precondition(experts >= 1 && k >= 1 && capacityFactor > 0, "ExpertChoiceRouter: need experts, k ≥ 1 and a positive factor")
        expertCount = experts
        self.k = k
        self.capacityFactor = capacityFactor
    }

    public var name: String { "expert-choice" }
    public var slots: Int { expertCount }
    public var activeExperts: Double { Double(k) * capacityFactor }

    /// C = min(N, max(1, ⌈capacityFactor · N · k / E⌉)).
    public func tokensPerExpert(tokens n: Int) -> Int {
        min(n, max(1, Int((capacityFactor * Double(n * k) / Double(expertCount)).rounded(.up))))
    }

    public func route(logits: Tensor, context: RoutingContext) -> Routing {
        let n = logits.shape[0], e = expertCount
        let p = softmaxRows(logits)                                  // [N, E]
        let c = tokensPerExpert(tokens: n)
        var experts = [Int](repeating: -1, count: n * e)             // [N, E], slot j is expert j or −1
        var weights = Tensor.zeros([n, e])                           // [N, E]
        for j in 0..<e {
            // Expert j ranks the tokens by p[·, j]: larger first, then lower index.
            let ranked = (0..<n).sorted { a, b in p[a, j] != p[b, j] ? p[a, j] > p[b, j] : a < b }
            for t in ranked.prefix(c) {
                experts[t * e + j] = j
                weights[t, j] = p[t, j]
            }
        }
        let r = Routing(k: e, probabilities: p, experts: experts, weights: weights)
        routing = r
        return r
    }

    public func backward(weightGradient dw: Tensor, probabilityGradient: Tensor?) -> Tensor {
        guard let r = routing else { preconditionFailure("ExpertChoiceRouter.backward called before route") }
        let n = r.tokenCount, e = expertCount
        var dp = probabilityGradient ?? Tensor.zeros([n, e])        // [N, E]
        // In the forward pass this was w[n, j] = p[n, j] for a taken slot, so now:
        for i in 0..<(n * e) where r.experts[i] >= 0 { dp.data[i] += dw.data[i] }
        return softmaxRowsBackward(probabilities: r.probabilities, outputGradient: dp)   // [N, E]
    }
}
