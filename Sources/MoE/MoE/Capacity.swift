// Capacity: how many tokens an expert may take in one batch, and who is
// turned away when more want in.
//
// When experts live on different devices, each gets a fixed-size buffer, so
// routing must respect a capacity (Switch Transformer, GShard):
//
//     capacity = ⌈ factor · N · k / E ⌉        tokens per expert per batch
//
// factor 1 is exactly the even share; 1.25 leaves 25% headroom. A slot whose
// expert is full is *dropped*: the token does not reach that expert, and the
// slot contributes zero to the layer's output (the other slots keep the weights
// the router gave them; nothing is renormalised). This MoE layer has no
// residual connection of its own, so a token that loses every slot leaves the
// layer as a zero vector; in a transformer block the residual stream would
// carry it past instead (Notebooks/part1-foundations.md, §12).
//
// Who gets in when an expert is oversubscribed is a policy:
//   * tokenOrder  — first come, first served, in the batch's token order;
//   * score       — the highest combine weights first (ties: token order);
//   * choiceOrder — everyone's first choice before anyone's second choice,
//                   each round in token order (Switch/GShard-style priority).
// Dropped slots keep their expert in `Routing.experts` and are marked in
// `Routing.dropped`, so the router's backward still sees the choice it made;
// a dropped slot's weight receives zero gradient because it multiplied nothing.

/// A capacity limit on every expert, with an overflow policy.
public struct Capacity: Equatable {
    public enum Overflow: String, CaseIterable { case tokenOrder = "token-order", score, choiceOrder = "choice-order" }

    public var factor: Double
    public var overflow: Overflow

    public init(factor: Double, overflow: Overflow = .tokenOrder) {
        precondition(factor > 0, "Capacity: factor must be > 0, got \(factor)")
        self.factor = factor
        self.overflow = overflow
    }

    /// ⌈factor · N · k / E⌉, at least 1.
    public func limit(tokens n: Int, activeExperts k: Double, experts e: Int) -> Int {
        max(1, Int((factor * Double(n) * k / Double(e)).rounded(.up)))
    }

    /// The routing with slots beyond each expert's capacity marked dropped.
    public func apply(to r: Routing, activeExperts: Double) -> Routing {
        let n = r.tokenCount, k = r.k, e = r.expertCount
        let cap = limit(tokens: n, activeExperts: activeExperts, experts: e)
        // The order in which slots ask for their expert.
        var order: [Int] = []   // slot indices t*k + j
        order.reserveCapacity(n * k)
        switch overflow {
        case .tokenOrder:
            order = Array(0..<(n * k))
        case .choiceOrder:
            for j in 0..<k { for t in 0..<n { order.append(t * k + j) } }
        case .score:
            order = Array(0..<(n * k))
            // A stable sort by weight, largest first: equal weights keep token order.
            order = order.enumerated().sorted { a, b in
                let wa = r.weights.data[a.element], wb = r.weights.data[b.element]
                return wa != wb ? wa > wb : a.offset < b.offset
            }.map(\.element)
        }
        var load = [Int](repeating: 0, count: e)
        var dropped = r.dropped ?? [Bool](repeating: false, count: n * k)
        for i in order {
            let expert = r.experts[i]
            guard expert >= 0, !dropped[i] else { continue }
            if load[expert] < cap { load[expert] += 1 } else { dropped[i] = true }
        }
        var out = r
        out.dropped = dropped
        return out
    }
}
