// Exercise 3 — a capacity factor: overflow in token order, drops counted.     (medium)
//
// Set in Notebooks/exercises.md, §3.
// Grade it with:    swift run exercises check 3
//
// When experts live on different devices, each gets a buffer of fixed size,
// so an expert can take at most
//
//     C = ⌈factor · N · K / E⌉   token-slots per batch (and never fewer than 1)
//
// N·K/E is the even share; factor 1.25 leaves 25% headroom. Slots that ask for
// a full expert are *dropped*: first come, first served, in token order (slot
// t·K + j asks before slot t·K + j + 1). A dropped slot keeps its expert in
// `Routing.experts` but is marked in `Routing.dropped`; MoELayer then skips it
// and its weight multiplies nothing. Nothing is renormalised.
//
// You write it as a `Router` that wraps another router (TopKGating, say): it
// lets the base route, then marks the overflow. That is how a student's router
// plugs into `MoELayer(…, router:)` without changing the library.
//
// The library has its own version (Capacity.swift, three overflow policies).
// Try this before reading it.
//
// Legend: N tokens, E experts, K slots per token, C places per expert.
import MoE
import ExerciseGrader

/// ⌈factor · tokens · slots / experts⌉, at least 1.
public func capacityLimit(tokens: Int, slots: Int, experts: Int, factor: Double) -> Int {
    // Step 1. The even share N·K/E as a Double, times the factor.
    // Step 2. Round up (`.rounded(.up)`), and never return less than 1.
    //
    // Placeholder (wrong): every slot fits, so nothing is ever dropped.
    return tokens * slots
}

public final class CapacityRouter: DropCountingRouter {
    public let base: Router
    public let factor: Double
    /// Slots this router has dropped over all the batches it has routed.
    public private(set) var droppedSlotsSoFar = 0

    public init(base: Router, factor: Double) {
        self.base = base
        self.factor = factor
    }

    // The wrapper looks like its base from outside (done for you).
    public var name: String { base.name + "+capacity" }
    public var expertCount: Int { base.expertCount }
    public var slots: Int { base.slots }
    public var activeExperts: Double { base.activeExperts }
    public var namedParameters: [(name: String, parameter: Parameter)] { base.namedParameters }
    public func inputGradient() -> Tensor? { base.inputGradient() }

    public func route(logits: Tensor, context: RoutingContext) -> Routing {
        let r = base.route(logits: logits, context: context)
        // Step 1. C = capacityLimit(tokens: N, slots: K, experts: E, factor: factor).
        // Step 2. A count of places taken per expert, all 0, and the drop flags:
        //         start from r.dropped when it is not nil (an earlier stage may
        //         already have dropped some slots), else all false.
        // Step 3. Walk the slots in token order, i = 0 ..< N·K. Skip an empty
        //         slot (r.experts[i] == −1) and one already dropped: they take
        //         no place. Otherwise the slot gets a place if its expert has
        //         fewer than C, or is dropped (and counted in droppedSlotsSoFar).
        // Step 4. Return the routing with `dropped` set (Routing is a struct:
        //         `var out = r; out.dropped = flags`). Experts and weights stay.
        //
        // Placeholder (wrong): drops nothing.
        return r
    }

    /// Capacity decides which slots run, not how the weights depend on the
    /// logits. What does that make the backward? (One line.)
    public func backward(weightGradient: Tensor, probabilityGradient: Tensor?) -> Tensor {
        // Placeholder (wrong): no gradient.
        return Tensor.zeros([weightGradient.shape[0], expertCount])
    }
}
