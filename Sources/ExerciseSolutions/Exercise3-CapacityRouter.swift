// ═══════════════════════════════════════════════════════════════════════════
//  REFERENCE SOLUTION — exercise 3. Try the exercise first, in
//  Sources/Exercises/Exercise3-CapacityRouter.swift; read this afterwards.
// ═══════════════════════════════════════════════════════════════════════════
//
// A capacity factor: each expert takes at most
//
//     C = ⌈factor · N · K / E⌉   (at least 1)
//
// token-slots per batch; slots beyond that are dropped, first come first
// served in token order (slot t·K + j before slot t·K + j + 1). The router
// wraps another router and changes only `Routing.dropped`
// (Notebooks/exercises.md, §3).
//
// Legend: N tokens, E experts, K slots per token, C capacity per expert.
import MoE
import ExerciseGrader

/// ⌈factor · tokens · slots / experts⌉, and never less than 1.
public func capacityLimit(tokens: Int, slots: Int, experts: Int, factor: Double) -> Int {
    let evenShare = Double(tokens * slots) / Double(experts)   // N·K/E: slots per expert at perfect balance
    return max(1, Int((factor * evenShare).rounded(.up)))
}

public final class CapacityRouter: DropCountingRouter {
    public let base: Router
    public let factor: Double
    public private(set) var droppedSlotsSoFar = 0

    public init(base: Router, factor: Double) {
        precondition(factor > 0, "CapacityRouter: factor must be > 0, got \(factor)")
        self.base = base
        self.factor = factor
    }

    public var name: String { base.name + "+capacity" }
    public var expertCount: Int { base.expertCount }
    public var slots: Int { base.slots }
    public var activeExperts: Double { base.activeExperts }
    public var namedParameters: [(name: String, parameter: Parameter)] { base.namedParameters }
    public func inputGradient() -> Tensor? { base.inputGradient() }

    public func route(logits: Tensor, context: RoutingContext) -> Routing {
        var r = base.route(logits: logits, context: context)
        let n = r.tokenCount, k = r.k
        let capacity = capacityLimit(tokens: n, slots: k, experts: expertCount, factor: factor)
        var load = [Int](repeating: 0, count: expertCount)                  // places taken, per expert [E]
        var dropped = r.dropped ?? [Bool](repeating: false, count: n * k)   // [N, K]
        for slot in 0..<(n * k) {                                          // token order
            let expert = r.experts[slot]
            if expert < 0 || dropped[slot] { continue }   // empty, or already turned away: takes no place
            if load[expert] < capacity {
                load[expert] += 1
            } else {
                dropped[slot] = true
                droppedSlotsSoFar += 1
            }
        }
        r.dropped = dropped
        return r
    }

    /// Capacity changes which slots reach an expert, not the weights, so the
    /// base router's backward is the whole backward. A dropped slot's dL/dw is
    /// 0 (its weight multiplied nothing), and MoELayer already sends 0.
    public func backward(weightGradient: Tensor, probabilityGradient: Tensor?) -> Tensor {
        base.backward(weightGradient: weightGradient, probabilityGradient: probabilityGradient)
    }
}
