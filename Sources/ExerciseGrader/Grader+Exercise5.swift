// Exercise 5 — noisy top-k gating (Notebooks/exercises.md, §5).
//
// What is checked, in order:
//   1. the router has k slots and a noise network "noise.weight" [E, D],
//      "noise.bias" [E] in namedParameters;
//   2. in evaluation (context.training false) there is no noise: the routing
//      is plain top-k of softmax(logits), renormalised (TopKGating.select);
//   3. in training with ε held fixed: the top-k of h = z + ε ⊙ softplus(x·W_noiseᵀ
//      + b_noise), weights the softmax of h over the chosen, and the clean
//      probabilities p = softmax(z) for statistics and balancing losses;
//   4. without fixed noise, each call draws fresh noise;
//   5. dL/dlogits against finite differences, ε fixed;
//   6. the noise network's gradients and dL/dx against GradientCheck, ε fixed;
//   7. inside an MoELayer (training, ε fixed), every gradient.
// The grader sets the noise network's weights to random values first, so that
// the noise path carries a visible gradient (a zero-initialised W_noise would
// let a missing term pass unnoticed).
import Foundation
import MoE

extension Grader {
    /// raw = x·Wᵀ + b for the noise network's current parameters.   x [N, D] -> [N, E]
    static func noiseNetworkOutput(_ x: Tensor, weight w: Tensor, bias b: Tensor) -> Tensor {
        let n = x.shape[0], d = x.shape[1], e = w.shape[0]
        var raw = Tensor.zeros([n, e])
        for t in 0..<n {
            for i in 0..<e {
                var s = b.data[i]
                for c in 0..<d { s += x[t, c] * w[i, c] }
                raw[t, i] = s
            }
        }
        return raw
    }

    static func softplusReference(_ a: Float) -> Float { max(a, 0) + log1p(exp(-abs(a))) }

    static func gradeNoisyTopK(_ s: ExerciseSubmission, _ list: Checklist) {
        let n = 7, d = 6, e = 5, k = 2
        let router = s.makeNoisyTopKRouter(modelDim: d, experts: e, k: k, seed: 1)
        let later = ["evaluation: no noise, plain top-k of softmax(logits)",
                     "training, ε fixed: top-k of h = z + ε ⊙ softplus(x·W_noiseᵀ + b_noise), w = softmax of the chosen h, p = softmax(z)",
                     "training without fixed noise: fresh ε on every call",
                     "backward: dL/dlogits with ε fixed",
                     "backward: the noise network's gradients and dL/dx",
                     "inside an MoELayer (training, ε fixed)"]

        let named = Dictionary(router.namedParameters.map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
        guard list.check("a Router with \(k) slots and a noise network noise.weight [E, D], noise.bias [E]", {
            if router.slots != k { return "`slots` is \(router.slots) for a router made with k = \(k)" }
            if router.expertCount != e { return "`expertCount` is \(router.expertCount) for \(e) experts" }
            guard let w = named["noise.weight"], let b = named["noise.bias"] else {
                return "namedParameters has \(router.namedParameters.map(\.name)); it should list the noise " +
                    "network as prefixed(\"noise\", noise.namedParameters): noise.weight and noise.bias"
            }
            if w.value.shape != [e, d] || b.value.shape != [e] {
                return "noise.weight has shape \(w.value.shape) and noise.bias \(b.value.shape); expected [\(e), \(d)] and [\(e)]"
            }
            return nil
        }) else { return list.skip(later, because: "the router's shape is wrong") }

        let weight = named["noise.weight"]!, bias = named["noise.bias"]!
        var rng = Xoshiro256(seed: 501)
        weight.value = .uniform([e, d], low: -0.5, high: 0.5, rng: &rng)
        bias.value = .uniform([e], low: -1, high: 1, rng: &rng)
        let x = Tensor.uniform([n, d], low: -1, high: 1, rng: &rng)          // [N, D]
        let epsilon = Tensor.normal([n, e], rng: &rng)                        // ε [N, E]
        let raw = noiseNetworkOutput(x, weight: weight.value, bias: bias.value)
        // Logits chosen so that h itself has clear gaps: z = h_target − ε ⊙ softplus(raw).
        let hTarget = separatedLogits(tokens: n, experts: e, rng: &rng)
        var z = hTarget
        for i in 0..<z.count { z.data[i] -= epsilon.data[i] * softplusReference(raw.data[i]) }
        var h = z                                                            // the noisy scores [N, E]
        for i in 0..<h.count { h.data[i] += epsilon.data[i] * softplusReference(raw.data[i]) }
        let train = RoutingContext(training: true, input: x)
        let evaluation = RoutingContext(training: false, input: x)

        let noisy = router
        /// The routing of noisy top-k for scores `h`: top-k of h, weights the
        /// renormalised softmax(h), probabilities the clean softmax(clean).
        func expected(scores h: Tensor, clean: Tensor) -> Routing {
            let r = TopKGating.select(probabilities: softmaxRows(h), k: k, renormalize: true)
            return Routing(k: k, probabilities: softmaxRows(clean), experts: r.experts, weights: r.weights)
        }
        /// What is wrong with `r` against `want`, naming the first difference.
        func difference(_ r: Routing, _ want: Routing, noiseHints: (Routing) -> String?) -> String? {
            if let problem = routingProblem(r, tokens: n, experts: e, slots: k) { return problem }
            let (i, d) = largestDifference(r.probabilities, want.probabilities)
            if d > 1e-5 {
                var text = "Routing.probabilities\(cell(i, cols: e)) is \(fmt(r.probabilities.data[i])), expected " +
                    "softmax(logits) = \(fmt(want.probabilities.data[i]))"
                if largestDifference(r.probabilities, softmaxRows(h)).difference < 1e-5 {
                    text += " — those are softmax(h): keep the probabilities that statistics and balancing losses " +
                        "read clean, p = softmax(logits), the same in training and evaluation (exercises.md, §5)"
                }
                return text
            }
            if chosenSets(r) != chosenSets(want) || largestDifference(r.weights, want.weights).difference > 1e-5 {
                let (j, _) = largestDifference(r.weights, want.weights)
                let what = chosenSets(r) != chosenSets(want)
                    ? "the chosen experts are not the top-\(k) of the scores"
                    : "weight\(cell(j, cols: k)) is \(fmt(r.weights.data[j])), expected \(fmt(want.weights.data[j]))"
                return what + (noiseHints(r).map { " — " + $0 } ?? "")
            }
            return nil
        }
        /// Does `r` choose and weigh as noisy top-k would with scores z + extra?
        func matches(_ r: Routing, extra: (Int) -> Float) -> Bool {
            var a = z
            for j in 0..<a.count { a.data[j] += extra(j) }
            let w = expected(scores: a, clean: z)
            return chosenSets(r) == chosenSets(w) && largestDifference(r.weights, w.weights).difference < 1e-5
        }

        list.check(later[0]) {
            noisy.fixedNoise = epsilon
            let zEval = separatedLogits(tokens: n, experts: e, rng: &rng)
            let r = noisy.route(logits: zEval, context: evaluation)
            var noisyEval = zEval
            for j in 0..<noisyEval.count { noisyEval.data[j] += epsilon.data[j] * softplusReference(raw.data[j]) }
            return difference(r, expected(scores: zEval, clean: zEval)) { r in
                let w = expected(scores: noisyEval, clean: zEval)
                return chosenSets(r) == chosenSets(w) && largestDifference(r.weights, w.weights).difference < 1e-5
                    ? "you added noise in evaluation; with context.training == false there is none, even when " +
                      "fixedNoise is set" : "in evaluation the routing is top-\(k) of the logits, renormalised, like TopKGating"
            }
        }

        let want = expected(scores: h, clean: z)
        guard list.check(later[1], {
            noisy.fixedNoise = epsilon
            let r = noisy.route(logits: z, context: train)
            return difference(r, want) { r in
                if matches(r, extra: { _ in 0 }) {
                    return "that is the routing of the clean logits: the noise never reached the choice (in training, " +
                        "use fixedNoise when it is set)"
                }
                if matches(r, extra: { epsilon.data[$0] * raw.data[$0] }) {
                    return "ε multiplies softplus(raw), not raw: the noise scale must be positive"
                }
                if matches(r, extra: { epsilon.data[$0] }) { return "ε must be scaled by softplus(x·W_noiseᵀ + b_noise)" }
                return "choose the top-\(k) of h = z + ε ⊙ softplus(raw), and weigh them by the softmax of h over " +
                    "the chosen (the renormalised softmax(h)), not of the clean logits"
            }
        }) else { return list.skip(Array(later[2...]), because: "the forward pass is not right yet") }

        list.check(later[2]) {
            noisy.fixedNoise = nil
            let first = noisy.route(logits: z, context: train)
            let second = noisy.route(logits: z, context: train)
            if first.weights == second.weights && first.experts == second.experts {
                return "two training-mode calls on the same logits gave the same routing; with fixedNoise nil, " +
                    "draw a new ε ~ N(0, 1) [N, E] on every call (Tensor.normal with the router's own generator)"
            }
            return nil
        }

        noisy.fixedNoise = epsilon
        list.check(later[3]) {
            let probe = RouterProbe(tokens: n, experts: e, withBalancing: true, seed: 502)
            return routerBackwardProblem(noisy, logits: z, context: train, probe: probe) { c in
                c.analyticIsZero ? "h = z + ε ⊙ σ, so dL/dz = dL/dh: return the softmax backward of dp" : nil
            }
        }

        list.check(later[4]) {
            let probe = RouterProbe(tokens: n, experts: e, withBalancing: true, seed: 503)
            var moved = false
            let choice = chosenSets(want)
            let report = GradientCheck.check(parameters: noisy.namedParameters, input: x, loss: { x in
                let r = noisy.route(logits: z, context: RoutingContext(training: true, input: x!))
                if routingProblem(r, tokens: n, experts: e, slots: k) != nil || chosenSets(r) != choice { moved = true; return 0 }
                return probe.loss(r)
            }, backward: { x in
                let r = noisy.route(logits: z, context: RoutingContext(training: true, input: x!))
                _ = noisy.backward(weightGradient: probe.weightGradient(r), probabilityGradient: probe.balance)
                return noisy.inputGradient() ?? .zeros([n, d])
            })
            if moved { return "a perturbation of 0.01 changed the routing; check the forward pass first" }
            let bad = report.entries.filter { !($0.maxRelativeError <= GradientComparison.tolerance) }
            guard let worst = bad.max(by: { $0.maxRelativeError < $1.maxRelativeError }) else { return nil }
            var text = "dL/d(\(worst.name)) disagrees with finite differences (worst relative error " +
                "\(fmt(worst.maxRelativeError)); a correct backward stays below \(fmt(GradientComparison.tolerance)))"
            if worst.name == "input" && bad.count == 1 {
                text += worst.maxGradient == 0
                    ? " — inputGradient() must return the noise network's dL/dx, the result of noise.backward"
                    : " — the noise network's dL/dx is noise.backward(dL/draw); is it the one inputGradient() returns?"
            } else if worst.maxGradient == 0 {
                text += " — it is zero: call noise.backward(dL/draw) with dL/draw = dL/dh ⊙ ε ⊙ sigmoid(raw)"
            } else {
                text += " — in the forward pass h = z + ε ⊙ softplus(raw), so dL/draw = dL/dh ⊙ ε ⊙ softplus'(raw), " +
                    "and softplus'(a) = sigmoid(a) = 1/(1 + e^(−a))"
            }
            return text
        }

        list.check(later[5]) {
            var rng = Xoshiro256(seed: 504)
            let layerRouter = s.makeNoisyTopKRouter(modelDim: 6, experts: 4, k: 2, seed: 2)
            let layer = MoELayer(modelDim: 6, hiddenDim: 5, experts: 4, router: layerRouter,
                                 balancing: [SwitchBalancing(weight: 0.5)], rng: &rng)
            for (_, p) in layerRouter.namedParameters { p.value = .uniform(p.value.shape, low: -0.5, high: 0.5, rng: &rng) }
            let named = Dictionary(layerRouter.namedParameters.map { ($0.name, $0.parameter) }, uniquingKeysWith: { a, _ in a })
            guard let w = named["noise.weight"], let b = named["noise.bias"] else { return "noise.weight or noise.bias is missing" }
            let tokens = 8
            let noise = Tensor.normal([tokens, 4], rng: &rng)
            layerRouter.fixedNoise = noise
            // Inputs whose noisy scores h keep clear top-2 gaps.
            var best = Tensor.zeros([tokens, 6]), bestGap: Float = -1
            for _ in 0..<200 {
                let x = Tensor.uniform([tokens, 6], low: -1, high: 1, rng: &rng)
                var h = layer.gate.forward(x)
                let raw = noiseNetworkOutput(x, weight: w.value, bias: b.value)
                for i in 0..<h.count { h.data[i] += noise.data[i] * softplusReference(raw.data[i]) }
                let gap = topKGap(h, k: 2)
                if gap > bestGap { best = x; bestGap = gap }
                if gap >= 0.1 { break }
            }
            return layerGradientProblem(layer, input: best) { name in
                name.hasPrefix("gating.noise") ? "the noise network's gradient: dL/draw = dL/dh ⊙ ε ⊙ sigmoid(raw)" :
                    name == "input" ? "dL/dx gets the gate's share and the noise network's (inputGradient())" : nil
            }
        }
    }
}
