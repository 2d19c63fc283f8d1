// Exercise 2 — the router z-loss (Notebooks/exercises.md, §2; derivation in
// Notebooks/part1-foundations.md, §11).
//
// What is checked, in order:
//   1. the term carries a gradient on the logits [N, E], none on p;
//   2. the value on part 1 §11's worked example (lse = 2.4952, L_z = 6.2259);
//   3. the gradient on that example, (3.041, 1.119, 0.679, 0.151);
//   4. on a batch of 5 tokens: the value is a mean over tokens, and the
//      gradient agrees with finite differences of the value;
//   5. logits near ±1000: finite and right (the max-subtraction);
//   6. inside an MoELayer beside the Switch loss, every gradient (GradientCheck).
//
// The expected numbers come from the formulas of part 1, §11, evaluated here in
// Double: lse = m + log Σ exp(z − m), L_z = mean lse², dL_z/dz = 2·lse·p/N.
import Foundation
import MoE

extension Grader {
    /// lse per row, L_z, and dL_z/dz in Double: part 1, §11's formulas.
    static func zLossFormula(_ z: Tensor) -> (lse: [Double], value: Double, gradient: [Double]) {
        let n = z.shape[0], e = z.shape[1]
        var lse = [Double](), gradient = [Double](repeating: 0, count: n * e)
        for t in 0..<n {
            let row = (0..<e).map { Double(z[t, $0]) }
            let m = row.max()!
            let l = m + log(row.reduce(0) { $0 + exp($1 - m) })
            lse.append(l)
            for j in 0..<e { gradient[t * e + j] = 2 * l * exp(row[j] - l) / Double(n) }
        }
        return (lse, lse.reduce(0) { $0 + $1 * $1 } / Double(n), gradient)
    }

    static func gradeRouterZLoss(_ s: ExerciseSubmission, _ list: Checklist) {
        let loss = s.makeZLoss(weight: 1)
        /// Any routing will do: the z-loss reads only the logits.
        func evaluate(_ z: Tensor) -> BalancingTerm {
            loss.evaluate(routing: TopKGating.select(probabilities: softmaxRows(z), k: 1, renormalize: false), logits: z)
        }
        let later = ["value on part 1 §11's example", "gradient on part 1 §11's example",
                     "a batch of 5 tokens: mean value, gradient against finite differences",
                     "logits near ±1000 stay finite", "inside an MoELayer beside the Switch loss"]

        let example = Tensor(shape: [1, 4], data: [2, 1, 0.5, -1])   // part 1, §8 and §11
        let term = evaluate(example)
        guard list.check("evaluate returns dL/dlogits [N, E] (the z-loss acts on the logits)", {
            guard let g = term.logitGradient else {
                return "BalancingTerm.logitGradient is nil; the z-loss's gradient is on the logits, so return it there " +
                    "(MoELayer adds it to dL/dlogits after the router's backward)"
            }
            if let problem = gradientProblem(g, expected: [1, 4], name: "logitGradient") { return problem }
            if let w = term.weightGradient, w.data.contains(where: { $0 != 0 }) {
                return "BalancingTerm.weightGradient is set; the z-loss does not depend on the combine weights"
            }
            if let p = term.probabilityGradient, p.data.contains(where: { $0 != 0 }) {
                return "BalancingTerm.probabilityGradient is set too; the z-loss does not depend on p, only on the " +
                    "logits — returning both would count the gradient twice"
            }
            return nil
        }) else { return list.skip(later, because: "there is no logit gradient to check") }

        let formula = zLossFormula(example)   // lse 2.4952, value 6.2259
        let standalone = list.mark
        list.check(later[0] + String(format: ": lse = %.4f, L_z = lse² = %.4f", formula.lse[0], formula.value)) {
            let v = term.value
            if abs(v - formula.value) <= 1e-4 * formula.value { return nil }
            var text = "the value is \(fmt(v)) but L_z = lse² = \(fmt(formula.value)) for logits (2, 1, 0.5, −1)"
            if abs(v - formula.lse[0]) < 1e-3 { text += " — you returned lse itself; the loss is its square" }
            else if v == 0 { text += " — compute lse = m + log Σ exp(z − m) per token, then the mean of lse²" }
            return text
        }

        list.check(later[1] + ": (3.041, 1.119, 0.679, 0.151)") {
            let c = GradientComparison(analytic: term.logitGradient!.data.map(Double.init), numeric: formula.gradient, cols: 4)
            guard let problem = c.problem(name: "dL/dlogits", hint: { c in zLossHint(c, lse: formula.lse[0], tokens: 1) })
            else { return nil }
            return problem.replacingOccurrences(of: "but finite differences give", with: "but 2·lse·p/N gives")
        }

        list.check(later[2]) {
            var rng = Xoshiro256(seed: 201)
            let z = Tensor.uniform([5, 4], low: -3, high: 3, rng: &rng)
            let batch = zLossFormula(z)
            let t = evaluate(z)
            if abs(t.value - batch.value) > 1e-4 * batch.value {
                let ratio = t.value / batch.value
                return "the value is \(fmt(t.value)) but the mean of lse² over the 5 tokens is \(fmt(batch.value))" +
                    (abs(ratio - 5) < 1e-3 ? " — you summed over tokens; L_z is the mean, so divide by N" : "")
            }
            guard let g = t.logitGradient else { return "logitGradient is nil for a batch of 5 tokens" }
            if let problem = gradientProblem(g, expected: [5, 4], name: "logitGradient") { return problem }
            let c = compareWithFiniteDifferences(analytic: g, at: z, epsilon: 1e-3) { evaluate($0).value }
            return c.problem(name: "dL/dlogits") { c in zLossHint(c, lse: nil, tokens: 5) }
        }

        list.check(later[3]) {
            let z = Tensor(shape: [2, 4], data: [1000, 999, 998, 0, -1000, -1001, -999, -1000])
            let expected = zLossFormula(z)
            let t = evaluate(z)
            if !t.value.isFinite || abs(t.value - expected.value) > 1e-4 * expected.value {
                return "for logits (1000, 999, 998, 0) and (−1000, −1001, −999, −1000) the value is \(fmt(t.value)), " +
                    "expected \(fmt(expected.value)) — exp(1000) overflows: compute lse as m + log Σ exp(z − m) " +
                    "with m the row's largest logit"
            }
            guard let g = t.logitGradient, g.shape == [2, 4] else { return "logitGradient is missing or misshapen" }
            for i in 0..<8 where !g.data[i].isFinite || abs(Double(g.data[i]) - expected.gradient[i]) > 1e-3 * max(1, abs(expected.gradient[i])) {
                return "dL/dlogits\(cell(i, cols: 4)) is \(fmt(g.data[i])) for large logits, expected " +
                    "\(fmt(expected.gradient[i])) — take p from the same shifted exponentials, p = exp(z − lse)"
            }
            return nil
        }

        guard list.allPassed(since: standalone) else {
            return list.skip([later[4]], because: "the layer is checked once the loss is right on its own")
        }
        list.check(later[4]) {
            var rng = Xoshiro256(seed: 202)
            let layer = MoELayer(modelDim: 6, hiddenDim: 5, experts: 4,
                                 router: TopKGating(experts: 4, k: 2),
                                 balancing: [SwitchBalancing(weight: 0.1), s.makeZLoss(weight: 0.5)], rng: &rng)
            let x = inputWithClearTopK(for: layer.gate, tokens: 8, k: 2, seed: 203)
            return layerGradientProblem(layer, input: x) { name in
                name.hasPrefix("gate") || name == "input"
                    ? "the gate's gradient includes 0.5 × your z-loss gradient; MoELayer multiplies the term by " +
                      "`weight` itself, so evaluate must return the unweighted value and gradient" : nil
            }
        }
    }

    /// The usual ways a z-loss gradient is off by a factor.
    static func zLossHint(_ c: GradientComparison, lse: Double?, tokens n: Int) -> String? {
        guard let f = c.constantFactor else { return nil }
        if let lse, abs(f - 1 / (2 * lse)) < 0.02 / lse {
            return "you returned p; did you forget the 2·lse factor? d(lse²)/dz = 2·lse · d(lse)/dz = 2·lse·p"
        }
        if let lse, abs(f - 1 / lse) < 0.02 / lse {
            return "you returned 2·p; did you forget the lse in 2·lse·p? (the chain rule: d(lse²) = 2·lse · d(lse))"
        }
        if abs(f - 0.5) < 0.01 { return "half the right value: d(lse²)/dz = 2·lse·p, did you forget the 2?" }
        if n > 1, abs(f - Double(n)) < 0.02 * Double(n) {
            return "\(n) × the right value: L_z is a mean over the \(n) tokens, so divide the gradient by N"
        }
        if n > 1, abs(f - 1 / Double(n)) < 0.02 / Double(n) { return "1/\(n) of the right value: you divided by N twice" }
        return nil
    }
}
