// Router: the seam where a student changes how tokens find their experts.
//
// An MoE layer splits routing into three pieces (Notebooks/part1-foundations.md, §4):
//
//     logits  = x·Wᵀ + b                     [N, E]   MoELayer.gate, a Linear ("gate.weight")
//     routing = router.route(logits)         which experts, with what weights   ← a Router
//     aux     = Σ balancing losses(routing)  keeps the load even                ← LoadBalancing
//
// The gate is the same for every method. Everything that differs between the
// papers — softmax or sigmoid, top-k or top-1, noise, temperature, experts
// choosing tokens — happens between the logits and the routing decision, so a
// `Router` sees only the logits and returns a `Routing`. Its backward goes the
// other way: from the gradient of the combine weights (and of the
// probabilities, for a balancing loss) to the gradient of the logits. The
// layer then runs the gate's backward. (A router with weights of its own, such
// as noisy top-k's noise network, also reads x from the context, lists its
// parameters and hands back its share of dL/dx; most routers have none.)
//
// Writing your own router, in the order you would do it:
//   1. Decide the slots: how many experts a token can go to (`slots`). Top-k
//      routers have k; expert-choice routing has E (slot j = expert j, if it
//      picked the token).
//   2. Write `route`: from logits [N, E] compute the probabilities you want
//      statistics and balancing losses to see (usually a softmax), choose the
//      experts of each slot (or −1 for an empty slot) and their weights. Keep
//      in `self` whatever backward needs (the probabilities, the choice).
//   3. Write `backward`: the choice is a step function, so hold it fixed and
//      differentiate only the weights: dL/dweights [N, slots] → dL/dlogits
//      [N, E], plus dL/dprobabilities [N, E] when a balancing loss sent one.
//   4. Check it: `GradientCheck` with the choice held fixed (see
//      MoELayerTests/RouterTests), then the invariants (weights ≥ 0, sum to 1
//      where they should, every token gets its slots).
//   5. Plug it in: `MoELayer(…, router: MyRouter(…))`. Nothing in the
//      library needs to change; a test does exactly this with a router
//      written inside the test file.
//
// Legend: N tokens, D model width, E experts, K slots per token.

/// What a router decided for a batch of N tokens.
public struct Routing {
    /// Slots per token: k for top-k routing, E for expert choice.
    public let k: Int
    /// The router's probabilities over experts, what statistics and balancing
    /// losses read: softmax(logits) for most routers.   [N, E]
    public let probabilities: Tensor
    /// The expert of each slot, best first for top-k; −1 for an empty slot.
    /// Row n is experts[n*k ..< n*k+k].   [N, K]
    public let experts: [Int]
    /// The combine weight of each slot (0 for an empty slot).   [N, K]
    public let weights: Tensor
    /// Slots whose token was turned away by a full expert (capacity). The
    /// expert stays in `experts` — it was chosen, and the router's backward
    /// still needs to know that — but the token never reaches it. nil: none.
    public var dropped: [Bool]?

    public init(k: Int, probabilities: Tensor, experts: [Int], weights: Tensor, dropped: [Bool]? = nil) {
        precondition(experts.count == probabilities.shape[0] * k && weights.shape == [probabilities.shape[0], k],
                     "Routing: \(experts.count) experts and weights \(weights.shape) for \(probabilities.shape[0]) tokens × \(k) slots")
        self.k = k
        self.probabilities = probabilities
        self.experts = experts
        self.weights = weights
        self.dropped = dropped
    }

    public var tokenCount: Int { probabilities.shape[0] }
    public var expertCount: Int { probabilities.shape[1] }

    /// The expert that slot `slot` of token `token` is dispatched to, or nil
    /// when the slot is empty or its token was dropped.
    @inline(__always)
    public func dispatchedExpert(token: Int, slot: Int) -> Int? {
        let i = token * k + slot
        let e = experts[i]
        if e < 0 { return nil }
        if let d = dropped, d[i] { return nil }
        return e
    }

    /// Slots dispatched to an expert (not empty, not dropped).
    public var dispatchedCount: Int {
        var c = 0
        for t in 0..<tokenCount { for j in 0..<k where dispatchedExpert(token: t, slot: j) != nil { c += 1 } }
        return c
    }

    /// Slots that chose an expert but were dropped by its capacity.
    public var droppedCount: Int { dropped?.reduce(0) { $0 + ($1 ? 1 : 0) } ?? 0 }
}

/// What a router may need to know besides the logits.
public struct RoutingContext {
    /// Training (noise and expert dropout on) or evaluation (both off). Capacity
    /// applies in both: MoELayer.forward limits every batch it routes (part 1, §12).
    public var training: Bool
    /// How far training has got, 0 at the first step and 1 at the last: for
    /// schedules such as an annealed temperature.
    public var progress: Double
    /// Per-expert bias added to the scores when *choosing* experts, never to
    /// the weights (auxiliary-loss-free balancing, LoadBalancing.swift).   [E] or nil
    public var selectionBias: [Float]?
    /// The layer's input x [N, D], for routers with parameters of their own.
    public var input: Tensor?

    public init(training: Bool = true, progress: Double = 0, selectionBias: [Float]? = nil, input: Tensor? = nil) {
        self.training = training
        self.progress = progress
        self.selectionBias = selectionBias
        self.input = input
    }
}

/// A routing method: logits in, routing decision out, and the way back.
public protocol Router: AnyObject {
    /// A short name for tables and summary.json ("topk", "switch", …).
    var name: String { get }
    /// Experts available.
    var expertCount: Int { get }
    /// Slots per token in the `Routing` this router returns (k, or E).
    var slots: Int { get }
    /// Experts a token uses on average: what "active parameters" counts.
    var activeExperts: Double { get }
    /// logits [N, E] → the decision. Keeps what `backward` needs.
    func route(logits: Tensor, context: RoutingContext) -> Routing
    /// dL/dweights [N, K] and, from balancing losses, dL/dprobabilities
    /// [N, E] (or nil) → dL/dlogits [N, E], with the last choice held fixed.
    func backward(weightGradient: Tensor, probabilityGradient: Tensor?) -> Tensor
    /// Weights of the router's own (none for most; noisy top-k has its noise network).
    var namedParameters: [(name: String, parameter: Parameter)] { get }
    /// After `backward`: the router's own contribution to dL/dx [N, D], or nil.
    func inputGradient() -> Tensor?
    /// The positions of the router's random generators (noise, expert dropout),
    /// saved by `--resume` so a continued run draws what the uninterrupted one
    /// would have; empty for a router that draws nothing.
    var randomState: [UInt64] { get }
    /// Restores `randomState`; throws on words this router cannot have saved.
    func restoreRandomState(_ words: [UInt64]) throws
}

extension Router {
    public var activeExperts: Double { Double(slots) }
    public var namedParameters: [(name: String, parameter: Parameter)] { [] }
    public func inputGradient() -> Tensor? { nil }
    public var randomState: [UInt64] { [] }
    public func restoreRandomState(_ words: [UInt64]) throws {
        guard words.isEmpty else {
            throw RoutingSetupError(message: "router '\(name)' has no random state, but \(words.count) words were saved")
        }
    }
}
