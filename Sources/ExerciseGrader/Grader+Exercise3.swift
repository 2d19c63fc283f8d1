// Exercise 3 — a capacity factor, overflow in token order, drops counted
// (Notebooks/exercises.md, §3).
//
// What is checked, in order:
//   1. capacityLimit on a table of cases, against the library's Capacity.limit;
//   2. a hand-made batch: 8 tokens all on expert 0 with capacity 2;
//   3. random batches: exactly the slots the token-order rule drops (the
//      library's Capacity with .tokenOrder is the reference);
//   4. the routing is otherwise untouched (experts, weights, probabilities);
//   5. empty slots and slots dropped before are skipped and take no place;
//   6. droppedSlotsSoFar is a running total over batches;
//   7. backward is the base router's;
//   8. inside an MoELayer: drops counted by the layer, dropped tokens give
//      zero rows, every gradient against GradientCheck.
import MoE

extension Grader {
    static func gradeCapacity(_ s: ExerciseSubmission, _ list: Checklist) {
        let later = ["a hand-made batch: 8 tokens on expert 0, capacity 2",
                     "random batches: exactly the slots the token-order rule drops",
                     "experts, weights and probabilities pass through unchanged",
                     "empty slots and slots dropped before take no place",
                     "droppedSlotsSoFar counts every drop over several batches",
                     "backward is the base router's backward",
                     "inside an MoELayer: drops, zero rows for dropped tokens, gradients"]

        let limitCases: [(tokens: Int, slots: Int, experts: Int, factor: Double)] = [
            (8, 2, 4, 1.0), (8, 2, 4, 1.25), (10, 1, 4, 1.0), (6, 2, 4, 1.5), (64, 2, 8, 1.25), (1, 1, 8, 1.0), (3, 2, 8, 0.5),
        ]
        guard list.check("capacityLimit = ⌈factor · N · K / E⌉, at least 1", {
            for c in limitCases {
                let expected = Capacity(factor: c.factor).limit(tokens: c.tokens, activeExperts: Double(c.slots), experts: c.experts)
                let got = s.capacityLimit(tokens: c.tokens, slots: c.slots, experts: c.experts, factor: c.factor)
                if got == expected { continue }
                let exact = c.factor * Double(c.tokens * c.slots) / Double(c.experts)
                var text = "capacityLimit(tokens: \(c.tokens), slots: \(c.slots), experts: \(c.experts), factor: \(c.factor)) " +
                    "is \(got), expected \(expected) (\(c.factor) · \(c.tokens) · \(c.slots) / \(c.experts) = \(fmt(exact)))"
                if got == Int(exact.rounded(.down)) && exact >= 1 { text += " — round up: a fractional place is still a place" }
                else if got == 0 { text += " — never less than 1, or a small batch could use no expert at all" }
                else if got == Int((c.factor * Double(c.tokens) / Double(c.experts)).rounded(.up)) {
                    text += " — each token fills K slots, so the even share is N·K/E"
                }
                return text
            }
            return nil
        }) else { return list.skip(later, because: "the capacity itself is wrong") }

        /// The routing after the library's token-order capacity: the reference drops.
        func expected(_ r: Routing, factor: Double) -> Routing {
            Capacity(factor: factor, overflow: .tokenOrder).apply(to: r, activeExperts: Double(r.k))
        }
        /// Compares the submission's drops with the reference, explaining the first difference.
        func dropProblem(_ got: Routing, input: Routing, factor: Double) -> String? {
            let want = expected(input, factor: factor)
            let k = got.k, n = got.tokenCount
            let capacity = s.capacityLimit(tokens: n, slots: k, experts: got.expertCount, factor: factor)
            let mine = got.dropped ?? [Bool](repeating: false, count: n * k)
            let theirs = want.dropped ?? [Bool](repeating: false, count: n * k)
            guard let i = (0..<(n * k)).first(where: { mine[$0] != theirs[$0] }) else { return nil }
            let expert = want.experts[i]
            let where_ = "token \(i / k), slot \(i % k)"
            if expert < 0 { return "\(where_) is empty (expert −1) but you marked it dropped; an empty slot asks for no expert" }
            if let before = input.dropped, before[i] {
                return "\(where_) was dropped before it reached this router and you let it through; keep an " +
                    "earlier drop (start from Routing.dropped when it is not nil)"
            }
            let earlier = (0..<i).filter { want.experts[$0] == expert && !theirs[$0] }
                .map { "token \($0 / k) slot \($0 % k)" }
            let taken = earlier.count
            if theirs[i] {
                return "\(where_) asks for expert \(expert), which already took \(taken) = C earlier slots (" +
                    earlier.prefix(capacity).joined(separator: ", ") + "): it must be dropped" +
                    (mine.contains(true) ? "" : " — your routing drops nothing; set Routing.dropped")
            }
            return "\(where_) asks for expert \(expert), which had taken only \(taken) of its C = \(capacity) places " +
                "before it (in token order, slot t·K + j before t·K + j + 1): it must not be dropped"
        }

        list.check(later[0]) {
            // 8 tokens, K = 1, all to expert 0; E = 4, factor 1: C = ⌈8·1/4⌉ = 2.
            let p = Tensor(shape: [8, 4], data: (0..<8).flatMap { _ in [Float(0.7), 0.1, 0.1, 0.1] })
            let base = FixedRouter(routing: Routing(k: 1, probabilities: p, experts: Array(repeating: 0, count: 8),
                                                    weights: Tensor(shape: [8, 1], repeating: 0.7)),
                                   backwardResult: .zeros([8, 4]))
            let router = s.makeCapacityRouter(base: base, factor: 1)
            let r = router.route(logits: .zeros([8, 4]), context: RoutingContext())
            if let problem = routingProblem(r, tokens: 8, experts: 4, slots: 1) { return problem }
            let want = [false, false, true, true, true, true, true, true]
            if (r.dropped ?? Array(repeating: false, count: 8)) != want {
                let mine = (r.dropped ?? []).enumerated().filter(\.element).map { String($0.offset) }
                return "with C = 2, tokens 0 and 1 reach expert 0 and tokens 2–7 are dropped (Routing.droppedCount 6); " +
                    "you dropped " + (mine.isEmpty ? "nothing" : "tokens " + mine.joined(separator: ", "))
            }
            return nil
        }

        // Random batches: 10 tokens × 2 slots over 4 experts, skewed toward the low
        // experts so that some overflow; C = ⌈0.75 · 20 / 4⌉ = 4.
        func randomRouting(seed: UInt64, empties: Bool, preDropped: Bool) -> Routing {
            var rng = Xoshiro256(seed: seed)
            let n = 10, k = 2, e = 4
            var experts: [Int] = []
            for _ in 0..<n {
                let first = min(rng.below(e), rng.below(e))
                var second = min(rng.below(e), rng.below(e))
                if second == first { second = (first + 1 + rng.below(e - 1)) % e }
                experts += [first, second]
            }
            if empties { for i in stride(from: 3, to: n * k, by: 7) { experts[i] = -1 } }
            let p = softmaxRows(.uniform([n, e], low: -1, high: 1, rng: &rng))
            let w = Tensor.uniform([n, k], low: 0.1, high: 0.9, rng: &rng)
            let dropped: [Bool]? = preDropped ? (0..<(n * k)).map { $0 % 5 == 1 } : nil
            return Routing(k: k, probabilities: p, experts: experts, weights: w, dropped: dropped)
        }

        list.check(later[1]) {
            for seed in UInt64(301)...305 {
                let r0 = randomRouting(seed: seed, empties: false, preDropped: false)
                let router = s.makeCapacityRouter(base: FixedRouter(routing: r0, backwardResult: .zeros([10, 4])), factor: 0.75)
                let r = router.route(logits: .zeros([10, 4]), context: RoutingContext())
                if let problem = routingProblem(r, tokens: 10, experts: 4, slots: 2) { return problem }
                if let problem = dropProblem(r, input: r0, factor: 0.75) { return problem }
            }
            return nil
        }

        list.check(later[2]) {
            let r0 = randomRouting(seed: 306, empties: false, preDropped: false)
            let router = s.makeCapacityRouter(base: FixedRouter(routing: r0, backwardResult: .zeros([10, 4])), factor: 0.5)
            let r = router.route(logits: .zeros([10, 4]), context: RoutingContext())
            if let problem = routingProblem(r, tokens: 10, experts: 4, slots: 2) { return problem }
            if r.experts != r0.experts {
                return "Routing.experts changed; a dropped slot keeps its expert (the router chose it, and its " +
                    "backward needs to know) — only Routing.dropped marks it"
            }
            if r.weights != r0.weights {
                let (i, _) = largestDifference(r.weights, r0.weights)
                return "weight\(cell(i, cols: 2)) changed from \(fmt(r0.weights.data[i])) to \(fmt(r.weights.data[i])); " +
                    "capacity does not renormalise: the other slots keep the weights the router gave them"
            }
            if r.probabilities != r0.probabilities { return "Routing.probabilities changed; pass them through" }
            return nil
        }

        list.check(later[3]) {
            let r0 = randomRouting(seed: 307, empties: true, preDropped: true)
            let router = s.makeCapacityRouter(base: FixedRouter(routing: r0, backwardResult: .zeros([10, 4])), factor: 0.5)
            let r = router.route(logits: .zeros([10, 4]), context: RoutingContext())
            if let problem = routingProblem(r, tokens: 10, experts: 4, slots: 2) { return problem }
            return dropProblem(r, input: r0, factor: 0.5)
        }

        list.check(later[4]) {
            let batches = [randomRouting(seed: 308, empties: false, preDropped: false),
                           randomRouting(seed: 309, empties: true, preDropped: false),
                           randomRouting(seed: 310, empties: false, preDropped: false)]
            let base = FixedRouter(routing: batches[0], backwardResult: .zeros([10, 4]))
            let router = s.makeCapacityRouter(base: base, factor: 0.75)
            var total = 0
            for (b, batch) in batches.enumerated() {
                base.routing = batch
                let r = router.route(logits: .zeros([10, 4]), context: RoutingContext())
                total += r.droppedCount
                if router.droppedSlotsSoFar != total {
                    return "after \(b + 1) batch\(b == 0 ? "" : "es") droppedSlotsSoFar is \(router.droppedSlotsSoFar), " +
                        "but the routings you returned dropped \(total) slots in all — add each batch's drops " +
                        "to the running total"
                }
            }
            return total == 0 ? "no slot was dropped in three batches that overflow; nothing to count" : nil
        }

        list.check(later[5]) {
            var rng = Xoshiro256(seed: 311)
            let r0 = randomRouting(seed: 312, empties: false, preDropped: false)
            let marker = Tensor.uniform([10, 4], low: -1, high: 1, rng: &rng)
            let base = FixedRouter(routing: r0, backwardResult: marker)
            let router = s.makeCapacityRouter(base: base, factor: 0.75)
            _ = router.route(logits: .zeros([10, 4]), context: RoutingContext())
            let g = router.backward(weightGradient: .zeros([10, 2]), probabilityGradient: nil)
            if base.backwardCalls == 0 { return "backward never called the base router's backward" }
            if g != marker {
                return "backward returned something other than the base router's dL/dlogits; capacity changes " +
                    "which slots run, not how the weights depend on the logits, so pass the base's result through"
            }
            return nil
        }

        list.check(later[6]) {
            // 10 tokens × top-2 over 4 experts with factor 0.5: C = ⌈0.5 · 20 / 4⌉ = 3, so at least 8 of 20 slots drop.
            var rng = Xoshiro256(seed: 313)
            let router = s.makeCapacityRouter(base: TopKGating(experts: 4, k: 2), factor: 0.5)
            let layer = MoELayer(modelDim: 6, hiddenDim: 5, experts: 4, router: router,
                                 balancing: [SwitchBalancing(weight: 0.1)], rng: &rng)
            let x = inputWithClearTopK(for: layer.gate, tokens: 10, k: 2, seed: 314)
            let y = layer.forward(x)
            guard let r = layer.lastRouting else { return "the layer kept no routing" }
            if let problem = routingProblem(r, tokens: 10, experts: 4, slots: 2) { return problem }
            if layer.statistics.droppedSlots != router.droppedSlotsSoFar || r.droppedCount < 8 {
                return "in an MoELayer with C = 3 the layer saw \(layer.statistics.droppedSlots) dropped slots and " +
                    "your counter says \(router.droppedSlotsSoFar); 20 slots for 12 places drop at least 8"
            }
            for t in 0..<10 where (0..<2).allSatisfy({ r.dispatchedExpert(token: t, slot: $0) == nil }) {
                if (0..<6).contains(where: { y[t, $0] != 0 }) {
                    return "token \(t) lost both its slots but its output row is not zero"
                }
            }
            return layerGradientProblem(layer, input: x)
        }
    }
}
