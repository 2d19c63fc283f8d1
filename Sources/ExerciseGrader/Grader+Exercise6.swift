// Exercise 6 — expert-choice routing (Notebooks/exercises.md, §6).
//
// What is checked, in order:
//   1. the router has E slots per token (slot j is expert j's);
//   2. the routing is well formed, slot j holds j or −1, p = softmax(logits);
//   3. every expert takes exactly C = min(N, max(1, ⌈capacityFactor·N·k/E⌉))
//      tokens, on several batch sizes;
//   4. they are its C most probable tokens, ties to the lower token index;
//   5. the weight of a taken slot is p[n, j], of an empty one 0;
//   6. dL/dlogits from the task loss, and from a balancing loss, against
//      finite differences with the choice held fixed;
//   7. inside an MoELayer: every expert gets exactly C tokens, and every
//      gradient agrees with GradientCheck.
import Foundation
import MoE

extension Grader {
    /// C = min(N, max(1, ⌈capacityFactor · N · k / E⌉)): tokens per expert.
    static func tokensPerExpert(tokens n: Int, experts e: Int, k: Int, factor: Double) -> Int {
        min(n, max(1, Int((factor * Double(n * k) / Double(e)).rounded(.up))))
    }

    /// The smallest gap, over experts, between the C-th and (C+1)-th largest
    /// log p in the expert's column: how far every expert's choice is from a tie.
    static func expertChoiceGap(_ z: Tensor, perExpert c: Int) -> Float {
        let n = z.shape[0], e = z.shape[1]
        guard c < n else { return .infinity }
        let p = softmaxRows(z)
        var gap = Float.infinity
        for j in 0..<e {
            let column = (0..<n).map { log(p[$0, j]) }.sorted(by: >)
            gap = min(gap, column[c - 1] - column[c])
        }
        return gap
    }

    /// Logits [N, E] uniform in [−2, 2), redrawn until every expert's choice is `margin` from a tie.
    static func logitsWithClearExpertChoice(tokens n: Int, experts e: Int, perExpert c: Int, seed: UInt64,
                                            margin: Float = 0.1) -> Tensor {
        var rng = Xoshiro256(seed: seed)
        var best = Tensor.zeros([n, e]), bestGap: Float = -1
        for _ in 0..<2000 {
            let z = Tensor.uniform([n, e], low: -2, high: 2, rng: &rng)
            let gap = expertChoiceGap(z, perExpert: c)
            if gap > bestGap { best = z; bestGap = gap }
            if gap >= margin { break }
        }
        return best
    }

    /// Slot-structure problems: slot j of every token holds expert j or −1.
    static func slotProblem(_ r: Routing) -> String? {
        let e = r.expertCount
        for i in 0..<r.experts.count where r.experts[i] != -1 && r.experts[i] != i % e {
            return "Routing.experts\(cell(i, cols: e)) is \(r.experts[i]); in expert-choice routing slot j of " +
                "every token belongs to expert j, so it holds j (taken) or −1 (not taken)"
        }
        return nil
    }

    static func gradeExpertChoice(_ s: ExerciseSubmission, _ list: Checklist) {
        let n = 12, e = 4, k = 1, factor = 1.0
        let c = tokensPerExpert(tokens: n, experts: e, k: k, factor: factor)   // 3
        let router = s.makeExpertChoiceRouter(experts: e, k: k, capacityFactor: factor)
        let later = ["slot j holds expert j or −1; p = softmax(logits)",
                     "every expert takes exactly C tokens (N = 12, 1, 3, 5; k = 1, 2; factors 1, 1.5, 4)",
                     "each expert takes its C most probable tokens, ties to the lower index",
                     "the weight of a taken slot is p[n, j], of an empty slot 0",
                     "backward: the task loss's dL/dlogits", "backward: the balancing loss's dL/dp is used",
                     "inside an MoELayer: C tokens per expert, every gradient"]

        guard list.check("a Router with E = \(e) slots per token", {
            if router.slots != e { return "`slots` is \(router.slots); in expert-choice routing a token has one slot per expert, E = \(e)" }
            if router.expertCount != e { return "`expertCount` is \(router.expertCount) for \(e) experts" }
            return nil
        }) else { return list.skip(later, because: "the router's shape is wrong") }

        let z = logitsWithClearExpertChoice(tokens: n, experts: e, perExpert: c, seed: 601)
        let p = softmaxRows(z)
        let r = router.route(logits: z, context: RoutingContext())
        guard list.check(later[0], {
            if let problem = routingProblem(r, tokens: n, experts: e, slots: e) { return problem }
            if let problem = slotProblem(r) { return problem }
            let (i, d) = largestDifference(r.probabilities, p)
            if d > 1e-5 {
                return "Routing.probabilities\(cell(i, cols: e)) is \(fmt(r.probabilities.data[i])) but softmax(logits) " +
                    "gives \(fmt(p.data[i])); the probabilities are still a softmax over each token's experts"
            }
            return nil
        }) else { return list.skip(Array(later[1...]), because: "what the experts chose is judged once the routing above is right") }

        list.check(later[1]) {
            // C: 3; ⌈1.5·12·2/4⌉ = 9; 1 (N = 1); ⌈3·1/8⌉ = 1; ⌈4·5·1/2⌉ = 10, clamped to N = 5.
            let cases: [(n: Int, e: Int, k: Int, factor: Double)] = [(12, 4, 1, 1), (12, 4, 2, 1.5), (1, 4, 2, 1), (3, 8, 1, 1), (5, 2, 1, 4)]
            for (index, q) in cases.enumerated() {
                let want = tokensPerExpert(tokens: q.n, experts: q.e, k: q.k, factor: q.factor)
                let rq = index == 0 ? r : s.makeExpertChoiceRouter(experts: q.e, k: q.k, capacityFactor: q.factor)
                    .route(logits: logitsWithClearExpertChoice(tokens: q.n, experts: q.e, perExpert: want, seed: 602 + UInt64(index)),
                           context: RoutingContext())
                if let problem = routingProblem(rq, tokens: q.n, experts: q.e, slots: q.e) ?? slotProblem(rq) { return problem }
                for j in 0..<q.e {
                    let taken = (0..<q.n).filter { rq.experts[$0 * q.e + j] == j }.count
                    if taken != want {
                        return "with N = \(q.n), E = \(q.e), k = \(q.k), capacityFactor \(q.factor) expert \(j) took " +
                            "\(taken) tokens; every expert takes C = min(N, max(1, ⌈capacityFactor·N·k/E⌉)) = \(want)"
                    }
                }
            }
            return nil
        }

        list.check(later[2]) {
            for j in 0..<e {
                let taken = (0..<n).filter { r.experts[$0 * e + j] == j }
                let left = (0..<n).filter { r.experts[$0 * e + j] != j }
                guard let weakest = taken.min(by: { p[$0, j] < p[$1, j] }),
                      let strongest = left.max(by: { p[$0, j] < p[$1, j] }) else { continue }
                if p[strongest, j] > p[weakest, j] {
                    var text = "expert \(j) took token \(weakest) (p = \(fmt(p[weakest, j]))) but not token \(strongest) " +
                        "(p = \(fmt(p[strongest, j]))); an expert takes the tokens where its probability is largest"
                    let byLogit = (0..<n).sorted { z[$0, j] != z[$1, j] ? z[$0, j] > z[$1, j] : $0 < $1 }.prefix(c)
                    if Set(byLogit) == Set(taken) {
                        text += " — you ranked by the logits; a logit is only comparable within its own token's row " +
                            "(softmax ignores a constant added to a row, part 1 §3), so rank by p"
                    }
                    return text
                }
            }
            // Ties: four identical tokens, C = 1: every expert takes token 0.
            let tied = Tensor(shape: [4, 4], data: (0..<4).flatMap { _ in [Float(0.5), 0, -0.5, 1] })
            let rt = router.route(logits: tied, context: RoutingContext())
            if let problem = routingProblem(rt, tokens: 4, experts: 4, slots: 4) ?? slotProblem(rt) { return problem }
            for j in 0..<4 where rt.experts[j] != j {
                return "four identical tokens, C = 1: expert \(j) did not take token 0; ties go to the lower token index"
            }
            return nil
        }

        list.check(later[3]) {
            for i in 0..<(n * e) {
                let want: Float = r.experts[i] >= 0 ? p.data[i] : 0
                if abs(r.weights.data[i] - want) > 1e-5 {
                    let t = i / e
                    let rowSum = (0..<e).reduce(Float(0)) { $0 + r.weights[t, $1] }
                    let taken = (0..<e).contains { r.experts[t * e + $0] >= 0 }
                    return "weight\(cell(i, cols: e)) is \(fmt(r.weights.data[i])), expected \(fmt(want))" +
                        (r.experts[i] < 0 ? " (an empty slot multiplies nothing: weight 0)" :
                            (taken && abs(rowSum - 1) < 1e-5 ? " — token \(t)'s weights sum to 1: expert choice does " +
                                "not renormalise; the weight is the token's probability for that expert, p[n, j]" : ""))
                }
            }
            return nil
        }

        list.check(later[4]) {
            let probe = RouterProbe(tokens: n, experts: e, withBalancing: false, seed: 610)
            return routerBackwardProblem(router, logits: z, context: RoutingContext(), probe: probe)
        }
        list.check(later[5]) {
            var rng = Xoshiro256(seed: 611)
            let probe = RouterProbe(reward: .zeros([n, e]), balance: .uniform([n, e], low: -1, high: 1, rng: &rng))
            return routerBackwardProblem(router, logits: z, context: RoutingContext(), probe: probe) { g in
                g.analyticIsZero ? "a balancing loss sends dL/dp (`probabilityGradient`): add it to dp before " +
                    "the softmax backward" : nil
            }
        }

        list.check(later[6]) {
            var rng = Xoshiro256(seed: 612)
            let tokens = 8
            let perExpert = tokensPerExpert(tokens: tokens, experts: 4, k: 2, factor: 1)   // 4
            let layer = MoELayer(modelDim: 6, hiddenDim: 5, experts: 4,
                                 router: s.makeExpertChoiceRouter(experts: 4, k: 2, capacityFactor: 1),
                                 balancing: [], rng: &rng)
            var best = Tensor.zeros([tokens, 6]), bestGap: Float = -1
            for _ in 0..<500 {
                let x = Tensor.uniform([tokens, 6], low: -2, high: 2, rng: &rng)
                let gap = expertChoiceGap(layer.gate.forward(x), perExpert: perExpert)
                if gap > bestGap { best = x; bestGap = gap }
                if gap >= 0.08 { break }
            }
            _ = layer.forward(best)
            if layer.statistics.tokenCounts != Array(repeating: perExpert, count: 4) {
                return "in an MoELayer each expert should receive exactly C = \(perExpert) tokens; the layer counted " +
                    "\(layer.statistics.tokenCounts)"
            }
            return layerGradientProblem(layer, input: best)
        }
    }
}
