// The balancing methods: the CV² importance + load loss (Shazeer et al. 2017),
// the router z-loss (ST-MoE) and the auxiliary-loss-free bias (DeepSeek-V3),
// beside the Switch loss that MoELayerTests already covers.
//
//   * values against hand computations and against `referenceValues` on
//     hand-made balanced and collapsed routings, for several E and k;
//   * every gradient through the checker, alone (the loss of one routing,
//     differentiated with respect to the logits) and inside an MoELayer. The
//     choice of experts is a step function, so each check holds it fixed and
//     asserts that no ±ε perturbation changed it;
//   * CV² has a finite (zero) gradient at exact balance, where the
//     square-root form gives NaN;
//   * the bias moves the load toward balance, changes which experts are
//     chosen and never the weights they get;
//   * two methods in one layer: their gradients add.
//
// Tolerances: gradients use `gradientTolerance` (GradientCheckTests.swift);
// values computed two ways in Float use 1e-5 relative (a few Float roundings).
import XCTest
@testable import MoE

final class BalancingTests: XCTestCase {
    // MARK: - Helpers

    /// A hand-made routing of N = E tokens: token t takes experts t, t+1, …, t+k−1
    /// (mod E) with weight 1/k, and p is uniform. Every expert gets k slots and
    /// total weight 1: perfect balance.
    func balancedRouting(experts e: Int, k: Int) -> Routing {
        let n = e
        let experts = (0..<n).flatMap { t in (0..<k).map { (t + $0) % e } }
        return Routing(k: k, probabilities: Tensor(shape: [n, e], repeating: 1 / Float(e)), experts: experts,
                       weights: Tensor(shape: [n, k], repeating: 1 / Float(k)))
    }

    /// Total collapse: every one of N tokens takes experts 0…k−1 with weight 1/k,
    /// and the router is sure of them (p = 1/k on those, 0 elsewhere).
    func collapsedRouting(experts e: Int, k: Int, tokens n: Int = 6) -> Routing {
        let row = (0..<e).map { $0 < k ? 1 / Float(k) : 0 }
        return Routing(k: k, probabilities: Tensor(shape: [n, e], data: (0..<n).flatMap { _ in row }),
                       experts: (0..<n).flatMap { _ in Array(0..<k) },
                       weights: Tensor(shape: [n, k], repeating: 1 / Float(k)))
    }

    /// dL/dlogits of one method for the routing `router` made of `logits`, the way
    /// MoELayer.backward assembles it: weight and probability gradients through the
    /// router's backward, the logit gradient added after.
    func logitGradient(_ term: BalancingTerm, router: Router, tokens n: Int) -> Tensor {
        var dz = router.backward(weightGradient: term.weightGradient ?? Tensor.zeros([n, router.slots]),
                                 probabilityGradient: term.probabilityGradient)
        if let g = term.logitGradient { dz += g }
        return dz
    }

    /// Logits whose rows have clear gaps between consecutive sorted values, so
    /// that a ±ε perturbation cannot change the top-k.
    func separatedLogits(tokens n: Int, experts e: Int, rng: inout Xoshiro256) -> Tensor {
        var z = Tensor.zeros([n, e])
        for t in 0..<n {
            var levels = (0..<e).map { Float($0) * 0.6 }   // gaps of 0.6
            rng.shuffle(&levels)
            for i in 0..<e { z.data[t * e + i] = levels[i] + Float(rng.uniform()) * 0.2 - 1 }
        }
        return z
    }

    // MARK: - CV²

    /// E·B/A² − 1 equals σ²/μ² computed the textbook way, and its gradient
    /// matches central differences (in Double, so 1e-6 is ample).
    func testSquaredCoefficientOfVariationMatchesTheDefinition() {
        var rng = Xoshiro256(seed: 60)
        for e in [1, 2, 3, 5, 8] {
            let x = (0..<e).map { _ in Double(rng.uniform()) * 3 + 0.1 }
            let mean = x.reduce(0, +) / Double(e)
            let variance = x.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(e)
            XCTAssertEqual(ImportanceLoadBalancing.squaredCoefficientOfVariation(x), variance / (mean * mean),
                           accuracy: 1e-12, "E = \(e)")
            let g = ImportanceLoadBalancing.squaredCoefficientOfVariationGradient(x)
            for j in 0..<e {
                var plus = x, minus = x
                plus[j] += 1e-6; minus[j] -= 1e-6
                let numeric = (ImportanceLoadBalancing.squaredCoefficientOfVariation(plus)
                    - ImportanceLoadBalancing.squaredCoefficientOfVariation(minus)) / 2e-6
                XCTAssertEqual(g[j], numeric, accuracy: 1e-6, "E = \(e), j = \(j)")
            }
        }
        XCTAssertEqual(ImportanceLoadBalancing.squaredCoefficientOfVariation([4, 0, 0, 0]), 3)   // E − 1
        XCTAssertEqual(ImportanceLoadBalancing.squaredCoefficientOfVariation([0, 0, 0]), 0)      // no spread to measure
    }

    /// At exact balance the sums-of-squares gradient is exactly 0; the
    /// square-root chain (σ = √var, CV = σ/μ, CV²) divides 0 by 0 there.
    func testCV2GradientIsFiniteAtExactBalance() {
        let x: [Double] = [3, 3, 3, 3]
        XCTAssertEqual(ImportanceLoadBalancing.squaredCoefficientOfVariation(x), 0)
        XCTAssertEqual(ImportanceLoadBalancing.squaredCoefficientOfVariationGradient(x), [0, 0, 0, 0])

        // The obvious code, backward by hand: dCV = 2·CV, dσ = dCV/μ, dvar = dσ/(2σ).
        let variance = 0.0, sigma = variance.squareRoot(), mu = 3.0
        let cv = sigma / mu
        let dVariance = (2 * cv / mu) / (2 * sigma)
        XCTAssertTrue(dVariance.isNaN, "the square-root form is NaN at balance: why CV² goes through sums of squares")

        // Through the loss, on a balanced routing: finite, zero gradients.
        for importance in [ImportanceLoadBalancing.Importance.gateWeights, .probabilities] {
            let r = balancedRouting(experts: 4, k: 2)
            let term = ImportanceLoadBalancing(importance: importance).evaluate(routing: r, logits: Tensor.zeros([4, 4]))
            let g = term.weightGradient ?? term.probabilityGradient!
            XCTAssertTrue(g.data.allSatisfy { $0.isFinite && abs($0) < 1e-6 }, "\(importance): \(g.data)")
        }
    }

    // MARK: - Values at balance and collapse

    /// Each loss on hand-made balanced and collapsed routings, for several E and
    /// k, against its `referenceValues` (Switch: k and E; CV²: 0 and 2(E/k − 1)).
    func testValuesAtBalanceAndCollapseMatchReferenceValues() {
        let methods: [LoadBalancing] = [SwitchBalancing(), ImportanceLoadBalancing(importance: .gateWeights),
                                        ImportanceLoadBalancing(importance: .probabilities)]
        for (e, k) in [(1, 1), (2, 1), (3, 2), (4, 1), (4, 2), (5, 3), (8, 2)] {
            for method in methods {
                let reference = method.referenceValues(experts: e, k: k)!
                let balanced = method.evaluate(routing: balancedRouting(experts: e, k: k), logits: Tensor.zeros([e, e]))
                let collapsed = method.evaluate(routing: collapsedRouting(experts: e, k: k), logits: Tensor.zeros([6, e]))
                XCTAssertEqual(balanced.value, reference.balanced, accuracy: 1e-5 * max(1, reference.balanced),
                               "\(method.name) E = \(e) k = \(k) balanced")
                XCTAssertEqual(collapsed.value, reference.collapsed, accuracy: 1e-5 * max(1, reference.collapsed),
                               "\(method.name) E = \(e) k = \(k) collapsed")
            }
        }
        XCTAssertNil(RouterZLoss().referenceValues(experts: 8, k: 2))
        XCTAssertNil(AuxLossFreeBalancing().referenceValues(experts: 8, k: 2))
        // The MNIST model's numbers, as the CLI would print them.
        XCTAssertEqual(ImportanceLoadBalancing().referenceValues(experts: 8, k: 2)!.collapsed, 6)
        XCTAssertEqual(ImportanceLoadBalancing().referenceValues(experts: 8, k: 1)!.collapsed, 14)
    }

    // MARK: - The z-loss by hand

    /// Notebooks/part1-foundations.md, §11: z = (2, 1, 0.5, −1) gives lse = 2.4952
    /// and ∂L_z/∂z = (3.041, 1.119, 0.679, 0.151) for N = 1. A second row of
    /// zeros gives lse = ln 4, and the mean halves each row's gradient.
    func testZLossByHand() {
        let z = Tensor(shape: [1, 4], data: [2, 1, 0.5, -1])
        let r = TopKGating.select(probabilities: softmaxRows(z), k: 2, renormalize: true)
        let term = RouterZLoss(weight: 1).evaluate(routing: r, logits: z)
        let lse = log(exp(2.0) + exp(1.0) + exp(0.5) + exp(-1.0))
        XCTAssertEqual(lse, 2.4952, accuracy: 1e-4)
        XCTAssertEqual(term.value, lse * lse, accuracy: 1e-5 * lse * lse)
        XCTAssertNil(term.probabilityGradient)
        XCTAssertNil(term.weightGradient)
        for (a, b) in zip(term.logitGradient!.data, [3.041, 1.119, 0.679, 0.151]) { XCTAssertEqual(Double(a), b, accuracy: 1e-3) }

        let two = Tensor(shape: [2, 4], data: [2, 1, 0.5, -1, 0, 0, 0, 0])
        let r2 = TopKGating.select(probabilities: softmaxRows(two), k: 2, renormalize: true)
        let term2 = RouterZLoss().evaluate(routing: r2, logits: two)
        XCTAssertEqual(term2.value, (lse * lse + RouterZLoss.valueAtZeroLogits(experts: 4)) / 2, accuracy: 1e-5)
        for j in 0..<4 {
            XCTAssertEqual(term2.logitGradient!.data[j], term.logitGradient!.data[j] / 2, accuracy: 1e-5)
            XCTAssertEqual(Double(term2.logitGradient!.data[4 + j]), 2 * log(4.0) * 0.25 / 2, accuracy: 1e-5)
        }
        // Large logits: lse stays finite (the row maximum is subtracted first).
        let big = RouterZLoss.logSumExp(Tensor(shape: [1, 2], data: [1000, 999]))
        XCTAssertEqual(Double(big[0]), 1000 + log(1 + exp(-1.0)), accuracy: 1e-3)
    }

    // MARK: - Gradients, alone

    /// Each loss as a function of the logits alone: L(z) = value(route(z)), its
    /// analytic dL/dz (through the router's backward where it enters on w or p)
    /// against central differences, with the top-k held fixed. Covers renormalised
    /// and raw weights, k = 1 and k = 2.
    func testEachLossGradientWithTheChoiceHeldFixed() {
        let n = 7, e = 5
        for (k, renormalize) in [(1, false), (2, true), (2, false), (3, true)] {
            let makers: [(String, () -> LoadBalancing)] = [
                ("cv2 weights", { ImportanceLoadBalancing(weight: 1, importance: .gateWeights) }),
                ("cv2 probabilities", { ImportanceLoadBalancing(weight: 1, importance: .probabilities) }),
                ("z", { RouterZLoss(weight: 1) }),
                ("switch", { SwitchBalancing(weight: 1) }),
            ]
            for (label, make) in makers {
                var rng = Xoshiro256(seed: 61)
                let logits = separatedLogits(tokens: n, experts: e, rng: &rng)
                let router = TopKGating(experts: e, k: k, renormalize: renormalize)
                let method = make()
                let route = { (z: Tensor) in router.route(logits: z, context: RoutingContext()) }
                let choice = chosenSets(route(logits))
                let what = "\(label) k = \(k) renormalize = \(renormalize)"
                let report = GradientCheck.check(parameters: [], input: logits, loss: { z in
                    let r = route(z!)
                    XCTAssertEqual(chosenSets(r), choice, "\(what): a perturbation changed the routing")
                    return method.evaluate(routing: r, logits: z!).value
                }, backward: { z in
                    let r = route(z!)
                    return self.logitGradient(method.evaluate(routing: r, logits: z!), router: router, tokens: n)
                })
                note("\(what):\n\(report)")
                assertGradientsMatch(report, what)
            }
        }
    }

    /// The documented limits of the paper's importance loss: with renormalised
    /// top-1 every weight is 1, so its gradient is exactly 0; with renormalised
    /// top-k, the experts a token did not choose get exactly 0 (their logits
    /// are moved only by the `.probabilities` variant).
    func testImportanceGradientReachesOnlyTheChosenExperts() {
        var rng = Xoshiro256(seed: 62)
        let n = 9, e = 4
        let logits = separatedLogits(tokens: n, experts: e, rng: &rng)
        for k in [1, 2] {
            let router = TopKGating(experts: e, k: k, renormalize: true)
            let r = router.route(logits: logits, context: RoutingContext())
            let dz = logitGradient(ImportanceLoadBalancing(importance: .gateWeights).evaluate(routing: r, logits: logits),
                                   router: router, tokens: n)
            for t in 0..<n {
                let chosen = Set(r.experts[(t * k)..<(t * k + k)])
                for i in 0..<e where k == 1 || !chosen.contains(i) {
                    XCTAssertEqual(abs(dz.data[t * e + i]), 0, accuracy: 1e-7, "k = \(k) token \(t) expert \(i)")
                }
            }
            if k == 2 { XCTAssertGreaterThan(dz.data.map(abs).max()!, 1e-3, "top-2: chosen experts do move") }
            let dzP = logitGradient(ImportanceLoadBalancing(importance: .probabilities).evaluate(routing: r, logits: logits),
                                    router: router, tokens: n)
            XCTAssertGreaterThan(dzP.data.map(abs).max()!, 1e-3, "probabilities variant, k = \(k): every logit moves")
        }
    }

    // MARK: - Gradients inside an MoELayer

    /// The whole layer with several balancing methods at once: L = Σ y ⊙ r + Σ α_b·value_b,
    /// through experts, combine weights, router and gate, the choice held fixed.
    func testBalancingGradientsInsideAnMoELayer() {
        // The last case adds a capacity that drops some slots: a dropped slot's
        // weight still counts in the importance, so its gradient still flows.
        let lists: [(String, () -> [LoadBalancing], Capacity?)] = [
            ("switch + z", { [SwitchBalancing(weight: 0.3), RouterZLoss(weight: 0.2)] }, nil),
            ("cv2 weights", { [ImportanceLoadBalancing(weight: 0.5, importance: .gateWeights)] }, nil),
            ("cv2 probabilities + z", { [ImportanceLoadBalancing(weight: 0.5, importance: .probabilities),
                                        RouterZLoss(weight: 0.1)] }, nil),
            ("cv2 weights, capacity 0.5", { [ImportanceLoadBalancing(weight: 0.5, importance: .gateWeights)] },
             Capacity(factor: 0.5)),
        ]
        for (label, make, capacity) in lists {
            var rng = Xoshiro256(seed: 63)
            let layer = MoELayer(modelDim: 6, hiddenDim: 5, experts: 4, router: TopKGating(experts: 4, k: 2),
                                 balancing: make(), capacity: capacity, rng: &rng)
            let x = awayFromZero([9, 6], rng: &rng)
            let r = Tensor.uniform([9, 6], low: -1, high: 1, rng: &rng)
            _ = layer.forward(x)
            // Each token's dispatched experts, as sets (slot order may swap on a near-tie).
            func dispatched(_ r: Routing) -> [Set<Int>] {
                (0..<r.tokenCount).map { t in Set((0..<r.k).compactMap { r.dispatchedExpert(token: t, slot: $0) }) }
            }
            let choice = chosenSets(layer.lastRouting!), dispatchedSets = dispatched(layer.lastRouting!)
            if capacity != nil { XCTAssertGreaterThan(layer.lastRouting!.droppedCount, 0, "\(label): nothing dropped") }
            let report = GradientCheck.check(parameters: layer.namedParameters, input: x, maxElements: 40, loss: { x in
                let y = layer.forward(x!)
                XCTAssertEqual(chosenSets(layer.lastRouting!), choice, "\(label): a perturbation changed the routing")
                XCTAssertEqual(dispatched(layer.lastRouting!), dispatchedSets, "\(label): a perturbation changed the drops")
                return GradientCheck.dot(y, r) + layer.weightedAuxLoss
            }, backward: { x in
                _ = layer.forward(x!)
                return layer.backward(r)
            })
            note("MoELayer \(label):\n\(report)")
            assertGradientsMatch(report, "MoELayer \(label)")
        }
    }

    /// Composability: a layer with [Switch, z] gets the gradient of a layer with
    /// [Switch] plus that of a layer with [z], minus that of a layer with none
    /// (the task's share, counted twice otherwise). Same weights, same batch.
    func testTwoLossesGradientsAdd() {
        func run(_ balancing: [LoadBalancing]) -> (dx: Tensor, grads: [Tensor], aux: Double) {
            var rng = Xoshiro256(seed: 64)   // same seed: same gate and experts in every layer
            let layer = MoELayer(modelDim: 6, hiddenDim: 5, experts: 4, router: TopKGating(experts: 4, k: 2),
                                 balancing: balancing, rng: &rng)
            let x = Tensor.uniform([10, 6], low: -1, high: 1, rng: &rng)
            let dy = Tensor.uniform([10, 6], low: -1, high: 1, rng: &rng)
            _ = layer.forward(x)
            layer.zeroGrad()
            let dx = layer.backward(dy)
            return (dx, layer.parameters.map(\.grad), layer.weightedAuxLoss)
        }
        let both = run([SwitchBalancing(weight: 0.3), RouterZLoss(weight: 0.2)])
        let switchOnly = run([SwitchBalancing(weight: 0.3)])
        let zOnly = run([RouterZLoss(weight: 0.2)])
        let none = run([])
        XCTAssertEqual(both.aux, switchOnly.aux + zOnly.aux, accuracy: 1e-9)
        func combined(_ a: Tensor, _ b: Tensor, _ c: Tensor) -> Tensor { var s = a; s += b; s += c * -1; return s }
        XCTAssertLessThan(both.dx.maxAbsDifference(combined(switchOnly.dx, zOnly.dx, none.dx)), 1e-5)
        for i in both.grads.indices {
            let expected = combined(switchOnly.grads[i], zOnly.grads[i], none.grads[i])
            XCTAssertLessThan(both.grads[i].maxAbsDifference(expected), 1e-5, "parameter \(i)")
        }
        // And the balancing terms do reach the gate (else this test would prove nothing).
        XCTAssertGreaterThan(both.grads[0].maxAbsDifference(none.grads[0]), 1e-4)
    }

    // MARK: - The auxiliary-loss-free bias

    /// A skewed synthetic batch (expert 0 favoured by every token): repeated
    /// updates lower the coefficient of variation of the load; the overloaded
    /// expert's bias falls and the others' rise. Default u = 1e-3.
    func testAuxLossFreeBiasMovesTowardBalance() {
        var rng = Xoshiro256(seed: 65)
        let n = 64, e = 4
        var logits = Tensor.uniform([n, e], low: -0.5, high: 0.5, rng: &rng)
        for t in 0..<n { logits.data[t * e] += 1 }   // expert 0: p ≈ 0.45 against ≈ 0.18
        for k in [1, 2] {
            let router = TopKGating(experts: e, k: k)
            let balancing = AuxLossFreeBalancing()
            func loadCV() -> Double {
                var s = RoutingStatistics(experts: e)
                s.add(router.route(logits: logits, context: RoutingContext(selectionBias: balancing.selectionBias)))
                return s.loadCoefficientOfVariation
            }
            let before = loadCV()
            var history: [Double] = []
            for step in 0..<600 {
                let r = router.route(logits: logits, context: RoutingContext(selectionBias: balancing.selectionBias))
                balancing.update(after: r)
                if step % 100 == 99 { history.append(loadCV()) }
            }
            let after = loadCV()
            note("k = \(k): load CV \(before) → \(history) ; bias \(balancing.bias)")
            XCTAssertGreaterThan(before, 0.5, "k = \(k): the batch is skewed to begin with")
            XCTAssertLessThan(after, 0.25 * before, "k = \(k): the bias balanced the load")
            XCTAssertLessThan(balancing.bias[0], 0, "k = \(k): the overloaded expert's bias fell")
            XCTAssertEqual(balancing.updates, 600)
            XCTAssertEqual(balancing.lastLoad.reduce(0, +), n * k)
        }
    }

    /// The bias changes which experts are chosen, never the weights the chosen
    /// ones get: those are p of the chosen experts (renormalised or not),
    /// computed without the bias. And it is not a loss: value 0, no gradient.
    func testAuxLossFreeBiasChangesTheChoiceNotTheWeights() {
        var rng = Xoshiro256(seed: 66)
        let n = 32, e = 5
        var logits = Tensor.uniform([n, e], low: -1, high: 1, rng: &rng)
        for t in 0..<n { logits.data[t * e + 2] += 1 }   // expert 2 overloaded
        let balancing = AuxLossFreeBalancing(updateRate: 0.02, experts: e)
        for renormalize in [true, false] {
            let router = TopKGating(experts: e, k: 2, renormalize: renormalize)
            for _ in 0..<10 {
                balancing.update(after: router.route(logits: logits, context: RoutingContext(selectionBias: balancing.selectionBias)))
            }
            let plain = router.route(logits: logits, context: RoutingContext())
            let biased = router.route(logits: logits, context: RoutingContext(selectionBias: balancing.selectionBias))
            XCTAssertNotEqual(chosenSets(plain), chosenSets(biased), "renormalize = \(renormalize): the choice moved")
            let p = biased.probabilities
            XCTAssertEqual(p.data, plain.probabilities.data, "the bias never touches p")
            for t in 0..<n {
                let chosen = biased.experts[(t * 2)..<(t * 2 + 2)]
                let sum = chosen.reduce(Float(0)) { $0 + p.data[t * e + $1] }
                for (j, expert) in chosen.enumerated() {
                    let expected = renormalize ? p.data[t * e + expert] / sum : p.data[t * e + expert]
                    XCTAssertEqual(biased.weights.data[t * 2 + j], expected, accuracy: 1e-7)
                }
            }
            balancing.reset()
        }
        let term = balancing.evaluate(routing: TopKGating.select(probabilities: softmaxRows(logits), k: 2, renormalize: true),
                                      logits: logits)
        XCTAssertEqual(term.value, 0)
        XCTAssertNil(term.probabilityGradient); XCTAssertNil(term.logitGradient); XCTAssertNil(term.weightGradient)
        balancing.weight = 5
        XCTAssertEqual(balancing.weight, 0, "not a loss: the weight stays 0")
    }

    /// Inside a layer: MoELayer hands the bias to the router, and `afterStep`
    /// updates it from the step's routing; the gradients are those of the
    /// layer without it (the bias adds none).
    func testAuxLossFreeBiasInsideAnMoELayer() {
        var rng = Xoshiro256(seed: 67)
        let balancing = AuxLossFreeBalancing(updateRate: 0.05)
        let layer = MoELayer(modelDim: 6, hiddenDim: 5, experts: 4, router: TopKGating(experts: 4, k: 1),
                             balancing: [SwitchBalancing(weight: 0.1), balancing], rng: &rng)
        let x = Tensor.uniform([16, 6], low: -1, high: 1, rng: &rng)
        _ = layer.forward(x)
        XCTAssertNil(balancing.selectionBias, "no update yet: no bias")
        let before = layer.lastRouting!.experts
        for _ in 0..<20 { _ = layer.forward(x); layer.afterStep() }
        XCTAssertEqual(balancing.updates, 20)
        XCTAssertNotEqual(balancing.bias, [0, 0, 0, 0])
        _ = layer.forward(x)
        XCTAssertNotEqual(layer.lastRouting!.experts, before, "the layer routed with the bias")
        XCTAssertEqual(layer.balancingValues[1], 0)
        XCTAssertEqual(layer.weightedAuxLoss, Double(Float(0.1)) * layer.balancingValues[0], accuracy: 1e-12)
    }
}

/// The aux-free bias is routing state, not a weight: it must survive a checkpoint.
final class BalancingCheckpointTests: XCTestCase {
    func testAuxLossFreeBiasTravelsWithTheWeights() throws {
        var setup = RoutingSetup()
        setup.balancing = ["bias"]
        setup.biasRate = 0.01
        func model(seed: UInt64) -> MoEClassifier {
            var rng = Xoshiro256(seed: seed)
            return MoEClassifier(inputSize: 12, hidden: 8, classes: 3, rng: &rng) { rng in
                setup.makeLayer(modelDim: 8, hiddenDim: 6, experts: 4, seed: seed, rng: &rng)
            }
        }
        let trained = model(seed: 1)
        var rng = Xoshiro256(seed: 2)
        for _ in 0..<5 {
            _ = trained.forward(Tensor.uniform([16, 12], low: 0, high: 1, rng: &rng))
            trained.afterStep()
        }
        let saved = try XCTUnwrap(trained.namedBuffers.first)
        XCTAssertEqual(saved.name, "moe.balancing.0.bias")
        XCTAssertNotEqual(saved.value.data, [0, 0, 0, 0], "five updates moved the bias")

        let url = FileManager.default.temporaryDirectory.appendingPathComponent("bias-\(UUID().uuidString).safetensors")
        defer { try? FileManager.default.removeItem(at: url) }
        try Checkpoint.saveWeights(trained, to: url)
        let restored = model(seed: 3)
        XCTAssertEqual(restored.namedBuffers.first?.value.data, [0, 0, 0, 0])
        try Checkpoint.loadWeights(into: restored, from: url)
        XCTAssertEqual(restored.namedBuffers.first?.value.data, saved.value.data)
        // Same weights and bias: the same routing.
        let x = Tensor.uniform([10, 12], low: 0, high: 1, rng: &rng)
        restored.setMode(training: false, progress: 1)
        trained.setMode(training: false, progress: 1)
        XCTAssertEqual(restored.forward(x), trained.forward(x))
        XCTAssertEqual(restored.moe.lastRouting?.experts, trained.moe.lastRouting?.experts)
    }
}

/// Part 1 of the series says any deviation from uniform routing raises the
/// Switch loss above its balanced value k "by Cauchy–Schwarz". Written out,
///     L = N Σᵢ fᵢ pᵢ = k + N Σᵢ (fᵢ − k/N)(pᵢ − 1/N),
/// and the second term is a covariance between load and mean probability,
/// which can be negative: an expert that wins many tokens narrowly, beside one
/// that is certain about the few it wins, gives L < k.
/// (Notebooks/part1-foundations.md works the same example by hand.)
extension BalancingTests {
    func testSwitchLossCanFallBelowK() {
        // N = 2 experts, k = 1, B = 3 tokens: (0.6, 0.4) twice, then (0.1, 0.9).
        let p = Tensor(shape: [3, 2], data: [0.6, 0.4, 0.6, 0.4, 0.1, 0.9])
        let routing = TopKGating.select(probabilities: p, k: 1, renormalize: false)
        XCTAssertEqual(routing.experts, [0, 0, 1], "each token goes to its most probable expert")
        let value = SwitchLoadBalancingLoss(routing: routing).value
        // f = (2/3, 1/3), p = (13/30, 17/30): L = 2·(26/90 + 17/90) = 86/90.
        XCTAssertEqual(value, 86.0 / 90.0, accuracy: 1e-6)
        XCTAssertLessThan(value, 1, "below the balanced value k = 1")
        // The decomposition, term by term.
        let f = [2.0 / 3, 1.0 / 3], mean = [13.0 / 30, 17.0 / 30]
        let covariance = 2 * zip(f, mean).reduce(0) { $0 + ($1.0 - 0.5) * ($1.1 - 0.5) }
        XCTAssertEqual(1 + covariance, value, accuracy: 1e-6)
    }

    /// The same happens to real routers, not only to hand-made tables: a search
    /// over random logits for the walkthrough's N = 8, k = 2 finds batches whose
    /// loss is below 2.
    func testRandomBatchesOfTheWalkthroughsShapeFallBelowKToo() {
        var rng = Xoshiro256(seed: 11)
        var lowest = Double.infinity
        for _ in 0..<200 {
            let logits = Tensor.normal([16, 8], std: 2, rng: &rng)
            let r = TopKGating.select(probabilities: softmaxRows(logits), k: 2, renormalize: true)
            lowest = min(lowest, SwitchLoadBalancingLoss(routing: r).value)
        }
        XCTAssertLessThan(lowest, 2, "some batch of 16 tokens has L < k = 2 (lowest \(lowest))")
    }
}
