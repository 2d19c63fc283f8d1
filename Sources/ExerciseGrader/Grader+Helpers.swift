// The tools every exercise's checks share: printing numbers, validating a
// routing before anything indexes into it, finite differences of a router's
// loss element by element, and a gradient check of a whole MoE layer.
//
// Finite differences (Notebooks/part2-implementation.md, §9). A router's
// backward is checked on the scalar
//
//     L = Σ_{n,j} w[n, j] · R[n, e(n, j)]  +  Σ_{n,i} p[n, i] · G[n, i]
//
// with R and G fixed random [N, E] tables: the first term is a task loss seen
// through the combine weights (dL/dw[n, j] = R[n, e(n, j)], what MoELayer's
// combine step would send), the second a balancing loss seen through the
// probabilities (dL/dp = G, what `Router.backward` receives as
// `probabilityGradient`). The choice of experts is a step function (part 1,
// §3), so the logits are drawn with every decision at least 0.4 away from a
// tie, and every perturbed evaluation asserts that the choice did not move.
//
// Legend: N tokens, D model width, E experts, K slots per token.
import Foundation
import MoE

// MARK: - Printing numbers

/// Four decimals for ordinary sizes, scientific notation for tiny or huge ones.
func fmt(_ x: Double) -> String {
    if x.isNaN { return "NaN" }
    if x.isInfinite { return x > 0 ? "inf" : "-inf" }
    return x == 0 || (abs(x) >= 1e-3 && abs(x) < 1e5) ? String(format: "%.4f", x) : String(format: "%.3e", x)
}
func fmt(_ x: Float) -> String { fmt(Double(x)) }

/// "[n,j]" for element i of a matrix with `cols` columns.
func cell(_ i: Int, cols: Int) -> String { "[\(i / max(cols, 1)),\(i % max(cols, 1))]" }

/// The first element of `t` that is NaN or infinite, or nil.
func firstNonFinite(_ t: Tensor) -> Int? { t.data.firstIndex { !$0.isFinite } }

// MARK: - Validating what a submission returned

/// What is wrong with a routing's shape and contents, or nil. Run before
/// anything indexes into it, so a broken routing becomes a message, not a crash.
func routingProblem(_ r: Routing, tokens n: Int, experts e: Int, slots k: Int) -> String? {
    if r.k != k { return "the Routing has k = \(r.k) slots per token; this router should return \(k)" }
    if r.probabilities.shape != [n, e] {
        return "Routing.probabilities has shape \(r.probabilities.shape); it should be [N, E] = [\(n), \(e)]"
    }
    if let bad = r.experts.firstIndex(where: { $0 < -1 || $0 >= e }) {
        return "Routing.experts[\(bad)] is \(r.experts[bad]); an expert index must be in 0..<\(e) (or −1 for an empty slot)"
    }
    if let bad = firstNonFinite(r.probabilities) {
        return "Routing.probabilities\(cell(bad, cols: e)) is \(fmt(r.probabilities.data[bad])): exp overflowed or a 0/0 crept in"
    }
    if let bad = firstNonFinite(r.weights) {
        return "Routing.weights\(cell(bad, cols: k)) is \(fmt(r.weights.data[bad])): exp overflowed or a 0/0 crept in"
    }
    if let d = r.dropped, d.count != n * k {
        return "Routing.dropped has \(d.count) flags for \(n) tokens × \(k) slots"
    }
    return nil
}

/// What is wrong with a gradient's shape or values, or nil.
func gradientProblem(_ g: Tensor, expected shape: [Int], name: String) -> String? {
    if g.shape != shape { return "\(name) has shape \(g.shape); it should be \(shape), the shape of what it differentiates" }
    if let bad = firstNonFinite(g) { return "\(name)\(cell(bad, cols: shape.last ?? 1)) is \(fmt(g.data[bad]))" }
    return nil
}

/// The largest |a − b| over two tensors of one shape, and where.
func largestDifference(_ a: Tensor, _ b: Tensor) -> (index: Int, difference: Float) {
    var worst = (index: 0, difference: Float(0))
    for i in 0..<min(a.count, b.count) where abs(a.data[i] - b.data[i]) > worst.difference {
        worst = (i, abs(a.data[i] - b.data[i]))
    }
    return worst
}

/// Each token's dispatched experts, sorted: what the loss depends on.
func chosenSets(_ r: Routing) -> [[Int]] {
    (0..<r.tokenCount).map { t in (0..<r.k).compactMap { r.dispatchedExpert(token: t, slot: $0) }.sorted() }
}

// MARK: - Inputs with clear decisions

/// Logits [N, E] whose rows hold distinct values at least 0.4 apart (a shuffled
/// ladder of steps of 0.6, each rung moved by at most ±0.1): every top-k
/// choice is 0.4 away from a tie, far beyond a finite-difference step of 0.01.
func separatedLogits(tokens n: Int, experts e: Int, rng: inout Xoshiro256) -> Tensor {
    var z = Tensor.zeros([n, e])
    for t in 0..<n {
        var ladder = (0..<e).map { Float($0) * 0.6 - 0.3 * Float(e - 1) }
        rng.shuffle(&ladder)
        for i in 0..<e { z[t, i] = ladder[i] + rng.uniform(-0.1, 0.1) }
    }
    return z
}

// MARK: - The router probe: a loss through w and p

/// L = Σ w[n, j]·R[n, e(n, j)] + Σ p ⊙ G, and the gradients a router's backward receives.
struct RouterProbe {
    let reward: Tensor        // R [N, E]
    let balance: Tensor?      // G [N, E], or nil for "no balancing loss"

    init(reward: Tensor, balance: Tensor?) {
        self.reward = reward
        self.balance = balance
    }

    init(tokens n: Int, experts e: Int, withBalancing: Bool, seed: UInt64) {
        var rng = Xoshiro256(seed: seed)
        reward = .uniform([n, e], low: -1, high: 1, rng: &rng)
        balance = withBalancing ? .uniform([n, e], low: -1, high: 1, rng: &rng) : nil
    }

    func loss(_ r: Routing) -> Double {
        let e = reward.shape[1]
        var s = 0.0
        for t in 0..<r.tokenCount {
            for j in 0..<r.k {
                guard let expert = r.dispatchedExpert(token: t, slot: j) else { continue }
                s += Double(r.weights.data[t * r.k + j]) * Double(reward.data[t * e + expert])
            }
        }
        if let g = balance { s += GradientCheck.dot(r.probabilities, g) }
        return s
    }

    /// dL/dw [N, K]: R at each dispatched slot, 0 at empty or dropped ones.
    func weightGradient(_ r: Routing) -> Tensor {
        var dw = Tensor.zeros([r.tokenCount, r.k])
        for t in 0..<r.tokenCount {
            for j in 0..<r.k {
                if let expert = r.dispatchedExpert(token: t, slot: j) { dw[t, j] = reward[t, expert] }
            }
        }
        return dw
    }
}

// MARK: - Finite differences, element by element

/// An analytic gradient beside central differences of the loss, element by element.
struct GradientComparison {
    let analytic: [Double]
    let numeric: [Double]
    let cols: Int
    /// The largest relative error a right backward may have. A backward off by
    /// 1% anywhere — every element scaled by 0.99 — has relative error 0.01 at
    /// its largest element and must fail, so the bound sits below that; a
    /// right one, with these inputs (every decision far from a tie, losses of
    /// order 1, ε = 0.01), measures below 1e-3 (ExerciseGraderTests prints the
    /// largest it saw when it fails).
    static let tolerance = 4e-3

    /// Per element |a − n| / max(|a|, |n|, 5% of the largest, 1e-4), GradientCheck's measure.
    var relativeErrors: [Double] {
        let scale = zip(analytic, numeric).map { max(abs($0), abs($1)) }.max() ?? 0
        return zip(analytic, numeric).map { a, n in abs(a - n) / max(abs(a), abs(n), 0.05 * scale, 1e-4) }
    }
    var worst: Int { relativeErrors.indices.max { relativeErrors[$0] < relativeErrors[$1] } ?? 0 }
    var maxRelativeError: Double { relativeErrors.max() ?? 0 }
    var passes: Bool { maxRelativeError <= Self.tolerance }

    /// f such that analytic ≈ f · numeric in the least-squares sense, when that
    /// fits every element to 3% of the largest value: "off by a constant factor".
    var constantFactor: Double? {
        let nn = numeric.reduce(0) { $0 + $1 * $1 }
        guard nn > 0 else { return nil }
        let f = zip(analytic, numeric).reduce(0) { $0 + $1.0 * $1.1 } / nn
        let scale = max(analytic.map(abs).max() ?? 0, (numeric.map(abs).max() ?? 0) * abs(f))
        let fits = zip(analytic, numeric).allSatisfy { abs($0 - f * $1) <= 0.03 * scale }
        return fits && scale > 0 ? f : nil
    }
    var analyticIsZero: Bool { analytic.allSatisfy { $0 == 0 } }

    /// "dL/dlogits[0,3] is 0.0000 but finite differences give 0.4120 — hint", or nil when it passes.
    func problem(name: String, hint: (GradientComparison) -> String? = { _ in nil }) -> String? {
        if passes { return nil }
        let i = worst
        var text = "\(name)\(cell(i, cols: cols)) is \(fmt(analytic[i])) but finite differences give \(fmt(numeric[i]))"
        if let specific = hint(self) {
            text += " — " + specific
        } else if analyticIsZero {
            text += " — your backward returns only zeros"
        } else if let f = constantFactor, abs(f + 1) < 0.02 {
            text += " — the sign is flipped everywhere"
        } else if let f = constantFactor {
            text += " — every element is \(fmt(f)) × the right value, so a constant factor is wrong"
        }
        return text
    }
}

/// Central differences of `loss` at `point`, every element, compared with `analytic`.
func compareWithFiniteDifferences(analytic: Tensor, at point: Tensor, epsilon: Float = 1e-2,
                                  loss: (Tensor) -> Double) -> GradientComparison {
    var x = point
    var numeric = [Double](repeating: 0, count: x.count)
    for i in 0..<x.count {
        let original = x.data[i]
        x.data[i] = original + epsilon; let plus = loss(x)
        x.data[i] = original - epsilon; let minus = loss(x)
        x.data[i] = original
        numeric[i] = (plus - minus) / (Double(original + epsilon) - Double(original - epsilon))
    }
    return GradientComparison(analytic: analytic.data.map(Double.init), numeric: numeric, cols: point.shape.last ?? 1)
}

/// Routes `logits`, runs the router's backward for the probe's loss, and
/// compares dL/dlogits with finite differences, the choice held fixed. nil
/// when it agrees; otherwise what is wrong.
func routerBackwardProblem(_ router: Router, logits: Tensor, context: RoutingContext, probe: RouterProbe,
                           hint: (GradientComparison) -> String? = { _ in nil }) -> String? {
    let n = logits.shape[0], e = logits.shape[1]
    let r = router.route(logits: logits, context: context)
    if let problem = routingProblem(r, tokens: n, experts: e, slots: router.slots) { return problem }
    let analytic = router.backward(weightGradient: probe.weightGradient(r), probabilityGradient: probe.balance)
    if let problem = gradientProblem(analytic, expected: [n, e], name: "dL/dlogits") { return problem }
    let choice = chosenSets(r)
    var moved = false
    let comparison = compareWithFiniteDifferences(analytic: analytic, at: logits) { z in
        let perturbed = router.route(logits: z, context: context)
        if routingProblem(perturbed, tokens: n, experts: e, slots: router.slots) != nil { moved = true; return 0 }
        if chosenSets(perturbed) != choice { moved = true }
        return probe.loss(perturbed)
    }
    if moved {
        return "changing one logit by 0.01 changed which experts were chosen, although every decision in these " +
            "logits is at least 0.4 from a tie: the forward pass does not choose by the rule the exercise sets, " +
            "so its gradient cannot be checked yet"
    }
    return comparison.problem(name: "dL/dlogits", hint: hint)
}

// MARK: - A whole MoE layer

/// Checks every gradient of `layer` (gate, router, experts, input) against
/// finite differences with `GradientCheck`, for L = Σ y ⊙ r + Σ α·aux, the
/// routing held fixed. nil when every parameter's gradient agrees to
/// `GradientComparison.tolerance` and dL/dx to `inputTolerance`: dL/dx runs
/// through every expert's ReLU, and a kink a little more than ε away still
/// bends the finite difference (a right backward measured 0.02 here), so the
/// input is judged as loosely as the library's own tests judge it. The
/// router's gradient is not let off: gate.weight = dL/dlogits·x is judged
/// tightly, and the standalone checks above judge dL/dlogits itself.
func layerGradientProblem(_ layer: MoELayer, input x: Tensor, seed: UInt64 = 7, maxElements: Int = 24,
                          inputTolerance: Double = 3e-2, hint: (String) -> String? = { _ in nil }) -> String? {
    var rng = Xoshiro256(seed: seed)
    let r = Tensor.uniform([x.shape[0], layer.modelDim], low: -1, high: 1, rng: &rng)
    let y = layer.forward(x)
    guard let routing = layer.lastRouting else { return "the layer kept no routing" }
    if let bad = firstNonFinite(y) { return "the layer's output\(cell(bad, cols: layer.modelDim)) is \(fmt(y.data[bad]))" }
    let choice = chosenSets(routing)
    var moved = false
    let report = GradientCheck.check(parameters: layer.namedParameters, input: x, maxElements: maxElements, loss: { x in
        let y = layer.forward(x!)
        if chosenSets(layer.lastRouting!) != choice { moved = true }
        return GradientCheck.dot(y, r) + layer.weightedAuxLoss
    }, backward: { x in
        _ = layer.forward(x!)
        return layer.backward(r)
    })
    if moved {
        return "inside an MoE layer, a perturbation of 0.01 changed which experts were chosen; the router's forward " +
            "does not follow the exercise's rule (the standalone checks above say where)"
    }
    func bound(_ name: String) -> Double { name == "input" ? inputTolerance : GradientComparison.tolerance }
    let bad = report.entries.filter { !($0.maxRelativeError <= bound($0.name)) }
    guard let worst = bad.max(by: { $0.maxRelativeError / bound($0.name) < $1.maxRelativeError / bound($1.name) }) else { return nil }
    var text = "inside an MoE layer, the gradient of \(worst.name) disagrees with finite differences " +
        "(worst relative error \(fmt(worst.maxRelativeError)); a correct backward stays below \(fmt(bound(worst.name))))"
    if bad.count > 1 { text += "; so do " + bad.filter { $0.name != worst.name }.map(\.name).joined(separator: ", ") }
    if let specific = hint(worst.name) { text += " — " + specific }
    return text
}

/// x [N, D] uniform in [−1, 1), redrawn until the layer's gate logits keep
/// every row's top-`k` at least `margin` from a tie (bounded tries).
func inputWithClearTopK(for gate: Linear, tokens n: Int, k: Int, margin: Float = 0.05, seed: UInt64) -> Tensor {
    var rng = Xoshiro256(seed: seed)
    var best = Tensor.zeros([n, gate.inFeatures]), bestGap: Float = -1
    for _ in 0..<200 {
        let x = Tensor.uniform([n, gate.inFeatures], low: -1, high: 1, rng: &rng)
        let gap = topKGap(gate.forward(x), k: k)
        if gap > bestGap { best = x; bestGap = gap }
        if gap >= margin { break }
    }
    return best
}

/// The smallest, over rows, of (k-th largest − (k+1)-th largest) value.
func topKGap(_ z: Tensor, k: Int) -> Float {
    let e = z.shape[1]
    guard k < e else { return .infinity }
    var gap = Float.infinity
    for t in 0..<z.shape[0] {
        let row = (0..<e).map { z[t, $0] }.sorted(by: >)
        gap = min(gap, row[k - 1] - row[k])
    }
    return gap
}

// MARK: - A router that returns what it is told

/// A `Router` that returns a fixed routing and a fixed backward, to see what a
/// wrapper (exercise 3) does to them.
final class FixedRouter: Router {
    var routing: Routing
    let backwardResult: Tensor
    private(set) var backwardCalls = 0
    init(routing: Routing, backwardResult: Tensor) {
        self.routing = routing
        self.backwardResult = backwardResult
    }
    var name: String { "fixed" }
    var expertCount: Int { routing.expertCount }
    var slots: Int { routing.k }
    func route(logits: Tensor, context: RoutingContext) -> Routing { routing }
    func backward(weightGradient: Tensor, probabilityGradient: Tensor?) -> Tensor {
        backwardCalls += 1
        return backwardResult
    }
}
