// Auxiliary-loss-free balancing (Wang et al. 2024, "Auxiliary-Loss-Free Load
// Balancing Strategy for Mixture-of-Experts"; used by DeepSeek-V3): no loss at
// all, a per-expert bias that is used only to *choose* experts.
//
//     chosen_n = top-k of (s[n, i] + b_i)_i        the bias moves the choice   [N, K]
//     w[n, j]  = from s[n, e(n, j)] alone           never the weights          [N, K]
//     after each training step, with c_i the slots dispatched to expert i and
//     c̄ = Σᵢ cᵢ / E their mean:
//         b_i ← b_i + u · sign(c̄ − c_i)             u = 1e-3 by default (the paper's)
//
// s is whatever the router ranks on: TopKGating adds the bias to p (its
// default order) or to the logits (top-k → softmax), never to the weights
// (TopKGating.select). DeepSeek-V3 adds it to sigmoid affinities; p, like
// them, lies in [0, 1], so u = 1e-3 is a step of a tenth of a percent of the
// score's range. An underloaded expert's bias rises until it starts winning
// tokens; an overloaded one's falls. Derivation: Notebooks/part1-foundations.md, §11.
//
// Why a rule and not a gradient: b enters only the selection, a step function
// of the scores (§3), so ∂L/∂b = 0 wherever it exists; backpropagation has
// nothing to say about it. The rule is a feedback controller that uses only
// the *sign* of each expert's error, so one badly skewed batch moves every
// bias by at most u. At equilibrium the biases jitter by ±u around the values
// that balance the load.
//
// What it buys: the Switch and CV² losses add a gradient that competes with
// the task on the router and on every layer before it; this adds none, so the
// parameters follow the task alone. Its `value` is 0 and its `weight` is
// ignored (it is always 0); switch it off with `updateRate = 0`, or by
// leaving it out of the layer's list. Read its effect from the load: the
// layer's `statistics.loadCoefficientOfVariation`, or `lastLoad` here.
//
// The bias is state that changes routing at evaluation too (MoELayer adds it
// whether training or not), but it is not a `Parameter`: a checkpoint that
// should reproduce the routing must save `bias` beside the weights.
//
// Legend: N tokens, E experts, K slots per token.

/// A per-expert selection bias steered toward even load after every step.
///
///     let balancing = AuxLossFreeBalancing(updateRate: 1e-3)
///     let layer = MoELayer(modelDim: 256, hiddenDim: 128, experts: 8,
///                          router: TopKGating(experts: 8, k: 2), balancing: [balancing], rng: &rng)
///     // each training step: forward, backward, optimiser, then
///     layer.afterStep()        // calls balancing.update(after: the step's routing)
///     print(balancing.bias)    // [E]
public final class AuxLossFreeBalancing: LoadBalancing {
    /// u: the size of every bias step.
    public var updateRate: Float
    /// b, one per expert; empty until the expert count is known (from `init`
    /// or the first update), which reads as all zeros.   [E]
    public private(set) var bias: [Float]
    /// The dispatched slots per expert in the routing of the last update.   [E]
    public private(set) var lastLoad: [Int] = []
    /// How many updates have been applied.
    public private(set) var updates = 0

    /// - Parameters:
    ///   - updateRate: u, 1e-3 by default (Wang et al. 2024, and DeepSeek-V3
    ///     for most of its training).
    ///   - experts: E, to start the bias at zeros now; nil sizes it from the
    ///     first routing it sees.
    public init(updateRate: Float = 1e-3, experts: Int? = nil) {
        precondition(updateRate >= 0, "AuxLossFreeBalancing: the update rate \(updateRate) is negative")
        self.updateRate = updateRate
        bias = [Float](repeating: 0, count: experts ?? 0)
    }

    public var name: String { "bias" }

    /// Not a loss: always 0, and setting it does nothing.
    public var weight: Float {
        get { 0 }
        set {}
    }

    public var selectionBias: [Float]? { bias.isEmpty ? nil : bias }

    /// Value 0, no gradient: the bias acts through the choice, not the loss.
    public func evaluate(routing: Routing, logits: Tensor) -> BalancingTerm { BalancingTerm(value: 0) }

    /// b_i += u · sign(c̄ − c_i), with c the dispatched (not empty, not
    /// capacity-dropped) slots per expert in `routing` and c̄ their mean.
    /// An expert exactly at the mean keeps its bias (sign 0).
    ///
    /// - Complexity: O(N·K + E).
    public func update(after routing: Routing) {
        let e = routing.expertCount
        if bias.isEmpty { bias = [Float](repeating: 0, count: e) }
        precondition(bias.count == e, "AuxLossFreeBalancing: a bias for \(bias.count) experts, a routing over \(e)")
        var load = [Int](repeating: 0, count: e)   // c [E]
        for t in 0..<routing.tokenCount {
            for j in 0..<routing.k {
                if let expert = routing.dispatchedExpert(token: t, slot: j) { load[expert] += 1 }
            }
        }
        lastLoad = load
        updates += 1
        // Compare E·c_i with Σc rather than c_i with Σc/E: integers, no rounding.
        let total = load.reduce(0, +)
        for i in 0..<e {
            let error = total - e * load[i]   // E·(c̄ − c_i)
            if error > 0 { bias[i] += updateRate } else if error < 0 { bias[i] -= updateRate }
        }
    }

    /// The value is always 0: nothing to read. Watch the load's coefficient of variation.
    public func referenceValues(experts: Int, k: Int) -> (balanced: Double, collapsed: Double)? { nil }

    /// Back to zeros (all experts equal), e.g. before a new run.
    /// The bias, for checkpoints (a buffer in PyTorch's words: state, not a weight).   [E]
    public var savedState: Tensor? { bias.isEmpty ? nil : Tensor(shape: [bias.count], data: bias) }

    public func restore(state: Tensor) throws {
        guard state.rank == 1, bias.isEmpty || state.count == bias.count else {
            throw RoutingSetupError(message: "the saved aux-loss-free bias has shape \(state.shape), expected [\(bias.count)]")
        }
        bias = state.data
    }

    public func reset() {
        for i in bias.indices { bias[i] = 0 }
        lastLoad = []
        updates = 0
    }
}
