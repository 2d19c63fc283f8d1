// Exercise 1 — top-1 (Switch) routing (Notebooks/exercises.md, §1).
//
// What is checked, in order:
//   1. the router has one slot per token and the right number of experts;
//   2. its routing is well formed; p = softmax(logits) (against the library);
//   3. each token goes to its most probable expert, ties to the lower index;
//   4. the weight is that expert's probability (no renormalisation);
//   5. dL/dlogits from the task loss (through w) against finite differences;
//   6. dL/dlogits from a balancing loss (through p) against finite differences;
//   7. renormalised: every weight is 1 and the task loss gives exactly zero;
//   8. inside an MoELayer with the Switch loss, every gradient against GradientCheck.
import MoE

extension Grader {
    static func gradeSwitchRouting(_ s: ExerciseSubmission, _ list: Checklist) {
        let n = 6, e = 5
        var rng = Xoshiro256(seed: 101)
        let logits = separatedLogits(tokens: n, experts: e, rng: &rng)   // [N, E]
        let router = s.makeSwitchRouter(experts: e, renormalize: false)
        let later = ["p = softmax(logits)", "each token goes to its most probable expert",
                     "ties go to the lower expert index", "the weight is the chosen expert's probability",
                     "backward: the task loss's dL/dlogits", "backward: the balancing loss's dL/dp is used",
                     "renormalised top-1: w = 1 and dL/dlogits = 0 exactly", "inside an MoELayer with the Switch loss"]

        guard list.check("a Router with one slot per token over \(e) experts", {
            if router.slots != 1 { return "`slots` is \(router.slots); top-1 routing fills exactly 1 slot per token" }
            if router.expertCount != e { return "`expertCount` is \(router.expertCount) for a router made with \(e) experts" }
            return nil
        }) else { return list.skip(later, because: "the router's shape is wrong") }

        let r = router.route(logits: logits, context: RoutingContext())
        guard list.check("route returns a well-formed Routing for \(n) tokens × 1 slot", {
            routingProblem(r, tokens: n, experts: e, slots: 1)
        }) else { return list.skip(later, because: "the routing is malformed") }

        let p = softmaxRows(logits)
        let forward = list.mark
        list.check(later[0]) {
            let (i, d) = largestDifference(r.probabilities, p)
            guard d > 1e-5 else { return nil }
            return "Routing.probabilities\(cell(i, cols: e)) is \(fmt(r.probabilities.data[i])) but softmax(logits) " +
                "gives \(fmt(p.data[i])): the router's probabilities are softmaxRows(logits) (part 1, §3)"
        }

        list.check(later[1]) {
            for t in 0..<n {
                let best = (0..<e).max { p[t, $0] < p[t, $1] }!
                if r.experts[t] != best {
                    return "token \(t) went to expert \(r.experts[t]), but expert \(best) has the largest " +
                        "probability (\(fmt(p[t, best])) against \(r.experts[t] >= 0 ? fmt(p[t, r.experts[t]]) : "none"))"
                }
            }
            return nil
        }

        list.check(later[2]) {
            // Row 0: experts 1 and 2 tie for first; row 1: all five tie.
            let tied = Tensor(shape: [2, e], data: [1, 3, 3, 0, -1, 0, 0, 0, 0, 0])
            let rt = router.route(logits: tied, context: RoutingContext())
            if let problem = routingProblem(rt, tokens: 2, experts: e, slots: 1) { return problem }
            if rt.experts != [1, 0] {
                return "for logits (1, 3, 3, 0, −1) the choice was expert \(rt.experts[0]) and for five equal logits " +
                    "expert \(rt.experts[1]); ties go to the lower index (experts 1 and 0), as TopKGating.select " +
                    "does with a strict `>`"
            }
            return nil
        }

        list.check(later[3]) {
            for t in 0..<n where r.experts[t] >= 0 {
                let expected = p[t, r.experts[t]]
                if abs(r.weights.data[t] - expected) > 1e-5 {
                    let allOne = r.weights.data.allSatisfy { abs($0 - 1) < 1e-6 }
                    return "token \(t)'s weight is \(fmt(r.weights.data[t])) but p[\(t), \(r.experts[t])] is \(fmt(expected))" +
                        (allOne ? " — every weight is 1: that is the renormalised weight; the Switch router keeps " +
                            "w = p so that the task loss can teach the router (exercises.md, §1)" : "")
                }
            }
            return nil
        }

        guard list.allPassed(since: forward) else {
            return list.skip(Array(later[4...]), because: "the backward can be checked once the forward pass is right")
        }

        list.check(later[4]) {
            let probe = RouterProbe(tokens: n, experts: e, withBalancing: false, seed: 102)
            return routerBackwardProblem(router, logits: logits, context: RoutingContext(), probe: probe) { c in
                // Only the chosen experts' logits moved: the softmax backward was skipped.
                let route = router.route(logits: logits, context: RoutingContext())
                let unchosenZero = (0..<c.analytic.count).allSatisfy { i in
                    route.experts[i / e] == i % e || c.analytic[i] == 0
                }
                if unchosenZero && !c.analyticIsZero {
                    return "only the chosen experts' logits got a gradient; w = p[n, e(n)] depends on every logit " +
                        "through the softmax's denominator, so finish with softmaxRowsBackward over the whole row"
                }
                return nil
            }
        }

        list.check(later[5]) {
            // No task loss (R = 0), only a balancing loss: L = Σ p ⊙ G. A backward
            // that ignores `probabilityGradient` returns zeros here.
            var rng = Xoshiro256(seed: 103)
            let probe = RouterProbe(reward: .zeros([n, e]), balance: .uniform([n, e], low: -1, high: 1, rng: &rng))
            return routerBackwardProblem(router, logits: logits, context: RoutingContext(), probe: probe) { c in
                c.analyticIsZero ? "a balancing loss sends dL/dp (`probabilityGradient`): add it to dp before " +
                    "the softmax backward" : nil
            }
        }

        list.check(later[6]) {
            let renormalised = s.makeSwitchRouter(experts: e, renormalize: true)
            let rr = renormalised.route(logits: logits, context: RoutingContext())
            if let problem = routingProblem(rr, tokens: n, experts: e, slots: 1) { return "with renormalize: true, " + problem }
            if let t = (0..<n).first(where: { abs(rr.weights.data[$0] - 1) > 1e-6 }) {
                return "with renormalize: true token \(t)'s weight is \(fmt(rr.weights.data[t])); p/p = 1 for every token"
            }
            let probe = RouterProbe(tokens: n, experts: e, withBalancing: false, seed: 104)
            let g = renormalised.backward(weightGradient: probe.weightGradient(rr), probabilityGradient: nil)
            if let problem = gradientProblem(g, expected: [n, e], name: "dL/dlogits") { return problem }
            let worst = g.data.indices.max { abs(g.data[$0]) < abs(g.data[$1]) }!
            if abs(g.data[worst]) > 1e-6 {
                return "with renormalisation dL/dlogits\(cell(worst, cols: e)) is \(fmt(g.data[worst])), but w ≡ 1 " +
                    "whatever the logits, so the task loss cannot move the router: every element must be 0 " +
                    "(part 1, §8). Apply the renormalised Jacobian (dw − Σ dw·w)/S with w = 1"
            }
            return nil
        }

        list.check(later[7]) {
            var rng = Xoshiro256(seed: 105)
            let layer = MoELayer(modelDim: 6, hiddenDim: 5, experts: 4,
                                 router: s.makeSwitchRouter(experts: 4, renormalize: false),
                                 balancing: [SwitchBalancing(weight: 0.5)], rng: &rng)
            let x = inputWithClearTopK(for: layer.gate, tokens: 9, k: 1, seed: 106)
            return layerGradientProblem(layer, input: x)
        }
    }
}
