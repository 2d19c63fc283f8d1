// What must hold for every batch, whatever the router learned: each token gets
// its k experts (fewer only when a capacity drops some), weights are
// non-negative and sum to 1 where the method says so, each expert in expert
// choice takes exactly its quota, DeepSeek-V3 stays inside its best groups,
// noise and dropout are off at evaluation, a seed fixes the routing, and a
// selection bias moves the choice but never the weights.
//
// Tolerance: 1e-6 on weights that should sum to 1 — a sum of ≤ 8 Floats near 1
// carries a rounding error of a few ulps (≈ 1e-7 each).
import XCTest
@testable import MoE

final class RouterInvariantTests: XCTestCase {
    /// logits [N, E] uniform in ±3 and an input x [N, D] for routers that read it.
    func batch(tokens n: Int, experts e: Int, modelDim d: Int = 5, seed: UInt64) -> (logits: Tensor, x: Tensor) {
        var rng = Xoshiro256(seed: seed)
        return (.uniform([n, e], low: -3, high: 3, rng: &rng), .uniform([n, d], low: -1, high: 1, rng: &rng))
    }

    /// The top-k routers, with what their weights should sum to per token (nil: no constraint).
    func topKRouters() -> [(router: Router, what: String, weightSum: Float?)] {
        let noisy = NoisyTopKGating(experts: 8, k: 2, modelDim: 5, seed: 1)
        var rng = Xoshiro256(seed: 2)
        noisy.noise.weight.value = .uniform([8, 5], low: -1, high: 1, rng: &rng)
        return [
            (TopKGating(experts: 8, k: 2), "top-2", 1),
            (TopKGating(experts: 8, k: 3, order: .topKThenSoftmax, temperature: TemperatureSchedule(start: 0.5)), "top-3 top-k → softmax", 1),
            (TopKGating(experts: 8, k: 1, renormalize: false), "switch", nil),
            (TopKGating(experts: 8, k: 2, expertDropout: 0.5, seed: 3), "top-2 with expert dropout", 1),
            (noisy, "noisy top-2", 1),
            (DeepSeekV3Router(experts: 8, k: 3, groups: 4, topGroups: 2), "deepseek-v3", 1),
            (DeepSeekV3Router(experts: 8, k: 2, routedScaling: 2.5), "deepseek-v3 λ = 2.5", 2.5),
        ]
    }

    func testEveryTokenGetsExactlyKExpertsWithValidWeights() {
        let (logits, x) = batch(tokens: 16, experts: 8, seed: 10)
        for (router, what, weightSum) in topKRouters() {
            let r = router.route(logits: logits, context: RoutingContext(training: true, input: x))
            let k = router.slots
            for t in 0..<16 {
                let chosen = Array(r.experts[(t * k)..<(t * k + k)])
                XCTAssertEqual(Set(chosen).count, k, "\(what): token \(t) must get \(k) distinct experts, got \(chosen)")
                XCTAssertTrue(chosen.allSatisfy { (0..<8).contains($0) }, "\(what): \(chosen)")
                let w = (0..<k).map { r.weights.data[t * k + $0] }
                XCTAssertTrue(w.allSatisfy { $0 >= 0 }, "\(what): negative weight in \(w)")
                if let weightSum { XCTAssertEqual(w.reduce(0, +), weightSum, accuracy: 1e-6, "\(what): token \(t)") }
                let p = (0..<8).map { r.probabilities.data[t * 8 + $0] }
                XCTAssertEqual(p.reduce(0, +), 1, accuracy: 1e-6, "\(what): probabilities of token \(t)")
                if weightSum == nil {   // Switch: w is the probability itself
                    XCTAssertEqual(w, chosen.map { p[$0] })
                }
            }
        }
    }

    /// With a capacity, a token keeps its k choices but some are marked dropped;
    /// it reaches k − (its dropped slots) experts, and no expert exceeds the limit.
    func testCapacityOnlyDropsNeverAddsOrMoves() {
        let (logits, x) = batch(tokens: 16, experts: 8, seed: 11)
        for (router, what, _) in topKRouters() {
            let routed = router.route(logits: logits, context: RoutingContext(training: false, input: x))
            for overflow in Capacity.Overflow.allCases {
                let capacity = Capacity(factor: 0.5, overflow: overflow)
                let r = capacity.apply(to: routed, activeExperts: router.activeExperts)
                let limit = capacity.limit(tokens: 16, activeExperts: router.activeExperts, experts: 8)
                XCTAssertEqual(r.experts, routed.experts)
                XCTAssertEqual(r.weights, routed.weights)
                var load = [Int](repeating: 0, count: 8)
                for t in 0..<16 {
                    let reached = (0..<r.k).compactMap { r.dispatchedExpert(token: t, slot: $0) }
                    let dropped = (0..<r.k).filter { r.dropped![t * r.k + $0] }.count
                    XCTAssertEqual(reached.count + dropped, r.k, "\(what) \(overflow.rawValue): token \(t)")
                    for e in reached { load[e] += 1 }
                }
                XCTAssertLessThanOrEqual(load.max()!, limit, "\(what) \(overflow.rawValue)")
                XCTAssertGreaterThan(r.droppedCount, 0, "\(what) \(overflow.rawValue): factor 0.5 must drop something")
            }
        }
    }

    func testExpertChoiceGivesEachExpertExactlyItsQuota() {
        let (logits, _) = batch(tokens: 10, experts: 4, seed: 12)
        for (k, factor, quota) in [(2, 1.0, 5), (1, 1.25, 4), (2, 1.25, 7), (4, 3.0, 10)] {   // c = min(10, ⌈factor·10·k/4⌉)
            let router = ExpertChoiceRouter(experts: 4, k: k, capacityFactor: factor)
            XCTAssertEqual(router.tokensPerExpert(tokens: 10), quota)
            XCTAssertEqual(router.activeExperts, Double(k) * factor)
            let r = router.route(logits: logits, context: RoutingContext())
            XCTAssertEqual(r.k, 4)
            for e in 0..<4 {
                let picked = (0..<10).filter { r.experts[$0 * 4 + e] == e }
                XCTAssertEqual(picked.count, quota, "k \(k), factor \(factor): expert \(e)")
                // They are the quota largest p[:, e]: every picked token beats every other.
                let others = (0..<10).filter { r.experts[$0 * 4 + e] < 0 }
                let lowestPicked = picked.map { r.probabilities.data[$0 * 4 + e] }.min()!
                for t in others { XCTAssertLessThanOrEqual(r.probabilities.data[t * 4 + e], lowestPicked) }
                for t in picked { XCTAssertEqual(r.weights.data[t * 4 + e], r.probabilities.data[t * 4 + e]) }
                for t in others { XCTAssertEqual(r.weights.data[t * 4 + e], 0) }
            }
            // Slots are either expert j in slot j or empty; a token's total weight is ≤ 1.
            for t in 0..<10 {
                for j in 0..<4 { XCTAssertTrue(r.experts[t * 4 + j] == j || r.experts[t * 4 + j] == -1) }
                XCTAssertLessThanOrEqual((0..<4).reduce(Float(0)) { $0 + r.weights.data[t * 4 + $1] }, 1 + 1e-6)
            }
        }
        // Ties go to the lower token index: five identical tokens, quota ⌈5·1/2⌉ = 3.
        let same = Tensor(shape: [5, 2], data: [Float](repeating: 0.3, count: 10))
        let r = ExpertChoiceRouter(experts: 2, k: 1).route(logits: same, context: RoutingContext())
        XCTAssertEqual(r.experts, [0, 1, 0, 1, 0, 1, -1, -1, -1, -1])
    }

    /// A hand-made token where the single best expert sits in a weak group:
    /// group-limited routing passes it over, unlimited routing takes it.
    func testDeepSeekV3KeepsToTheBestGroups() {
        //                    group 0    group 1   group 2     group 3
        let logits = Tensor(shape: [1, 8], data: [3, -3, 1, 1, 0.5, 0.5, -1, -1])
        // sigmoid: group sums of the best two are 1.00, 1.46, 1.25, 0.54: groups 1 and 2 win.
        let limited = DeepSeekV3Router(experts: 8, k: 2, groups: 4, topGroups: 2)
        let r = limited.route(logits: logits, context: RoutingContext())
        XCTAssertEqual(r.experts, [2, 3])   // expert 0 (the best, s = 0.95) is in group 0: left out
        XCTAssertEqual(r.weights.data, [0.5, 0.5])
        let free = DeepSeekV3Router(experts: 8, k: 2, groups: 4, topGroups: 4)
        let f = free.route(logits: logits, context: RoutingContext())
        XCTAssertEqual(f.experts, [0, 2])
        let s0: Float = 1 / (1 + exp(-3)), s2: Float = 1 / (1 + exp(-1))
        XCTAssertEqual(f.weights.data[0], s0 / (s0 + s2), accuracy: 1e-6)
        // And on random batches: every token's experts lie in at most topGroups groups.
        let (many, _) = batch(tokens: 32, experts: 8, seed: 13)
        let m = limited.route(logits: many, context: RoutingContext())
        for t in 0..<32 { XCTAssertLessThanOrEqual(Set(m.experts[(t * 2)..<(t * 2 + 2)].map { $0 / 2 }).count, 2) }
    }

    func testNoiseAndExpertDropoutAreOffAtEvaluation() {
        let (logits, x) = batch(tokens: 16, experts: 8, seed: 14)
        let evaluation = RoutingContext(training: false, input: x)
        // Noisy top-k at evaluation = top-k → softmax on the clean logits, every time.
        let noisy = topKRouters()[4].router as! NoisyTopKGating
        let plain = TopKGating(experts: 8, k: 2, order: .topKThenSoftmax).route(logits: logits, context: evaluation)
        let first = noisy.route(logits: logits, context: evaluation)
        let second = noisy.route(logits: logits, context: evaluation)
        for r in [first, second] {
            XCTAssertEqual(r.experts, plain.experts)
            XCTAssertEqual(r.weights, plain.weights)
            XCTAssertEqual(r.probabilities, plain.probabilities)
        }
        XCTAssertNil(noisy.lastNoiseScale)
        // In training it does move the choice (so the evaluation test is not vacuous).
        let trained = noisy.route(logits: logits, context: RoutingContext(training: true, input: x))
        XCTAssertNotEqual(trained.experts, plain.experts)
        XCTAssertEqual(trained.probabilities, plain.probabilities, "statistics see the clean softmax")

        // Expert dropout: at evaluation, the same as no dropout; in training, experts sit out.
        let dropout = TopKGating(experts: 8, k: 2, expertDropout: 0.5, seed: 4)
        let reference = TopKGating(experts: 8, k: 2).route(logits: logits, context: evaluation)
        for _ in 0..<2 {
            let r = dropout.route(logits: logits, context: evaluation)
            XCTAssertEqual(r.experts, reference.experts)
            XCTAssertEqual(r.weights, reference.weights)
        }
        XCTAssertNotEqual(dropout.route(logits: logits, context: RoutingContext(training: true)).experts, reference.experts)
    }

    func testAFixedSeedGivesIdenticalRouting() {
        let (logits, x) = batch(tokens: 16, experts: 8, seed: 15)
        let training = RoutingContext(training: true, input: x)
        func runs(_ make: () -> Router) -> [[Int]] {
            let router = make()
            return (0..<3).map { _ in router.route(logits: logits, context: training).experts }
        }
        func noisy(seed: UInt64) -> Router {
            let router = NoisyTopKGating(experts: 8, k: 2, modelDim: 5, seed: seed)
            router.noise.bias!.value = Tensor(shape: [8], repeating: 1)   // σ = softplus(1) ≈ 1.3: noise that matters
            return router
        }
        XCTAssertEqual(runs { noisy(seed: 7) }, runs { noisy(seed: 7) })
        XCTAssertNotEqual(runs { noisy(seed: 7) }, runs { noisy(seed: 8) })
        XCTAssertEqual(runs { TopKGating(experts: 8, k: 2, expertDropout: 0.3, seed: 7) },
                       runs { TopKGating(experts: 8, k: 2, expertDropout: 0.3, seed: 7) })
        XCTAssertNotEqual(runs { TopKGating(experts: 8, k: 2, expertDropout: 0.3, seed: 7) },
                          runs { TopKGating(experts: 8, k: 2, expertDropout: 0.3, seed: 8) })
    }

    /// Auxiliary-loss-free balancing adds a bias to the scores for choosing only.
    /// The chosen experts' weights must be what the unbiased router gives that
    /// set: p_e / Σ_chosen p (renormalised), p_e (not renormalised), and
    /// λ·s_e / Σ_chosen s = λ·q_e / Σ_chosen q for DeepSeek-V3.
    func testSelectionBiasChangesTheChoiceButNeverTheWeights() {
        let (logits, _) = batch(tokens: 32, experts: 8, seed: 16)
        let bias: [Float] = [0.3, -0.3, 0, 0.2, 0, -0.2, 0.1, 0]
        let routers: [(Router, String, Bool, Float)] = [   // router, what, renormalised, scale
            (TopKGating(experts: 8, k: 2), "top-2", true, 1),
            (TopKGating(experts: 8, k: 2, renormalize: false), "top-2 not renormalised", false, 1),
            (TopKGating(experts: 8, k: 2, order: .topKThenSoftmax), "top-2 top-k → softmax", true, 1),
            (DeepSeekV3Router(experts: 8, k: 2, groups: 4, topGroups: 2, routedScaling: 2.5), "deepseek-v3", true, 2.5),
        ]
        for (router, what, renormalised, scale) in routers {
            let plain = router.route(logits: logits, context: RoutingContext())
            let biased = router.route(logits: logits, context: RoutingContext(selectionBias: bias))
            XCTAssertNotEqual(chosenSets(biased), chosenSets(plain), "\(what): the bias must change some choices")
            XCTAssertEqual(biased.probabilities, plain.probabilities, "\(what): the bias is not in the probabilities")
            for t in 0..<32 {
                let chosen = biased.experts[(t * 2)..<(t * 2 + 2)]
                let q = chosen.map { biased.probabilities.data[t * 8 + $0] }
                let total = renormalised ? q.reduce(0, +) : 1
                for (j, qe) in q.enumerated() {
                    XCTAssertEqual(biased.weights.data[t * 2 + j], scale * qe / total, accuracy: 1e-6, "\(what): token \(t)")
                }
            }
            // A large bias on one expert puts it in every token's choice, still with unbiased weights.
            var strong = [Float](repeating: 0, count: 8); strong[5] = 10
            let forced = router.route(logits: logits, context: RoutingContext(selectionBias: strong))
            for t in 0..<32 { XCTAssertTrue(forced.experts[(t * 2)..<(t * 2 + 2)].contains(5), "\(what): token \(t)") }
        }
    }
}
