// Two roads that must give one answer: the orders of softmax and top-k; k = E
// and the dense soft mixture; a capacity too large to bind and no capacity;
// shared experts and "routed part + shared expert". And one batch, made by
// hand, that the three overflow policies treat differently, with the exact
// slots each one drops.
//
// Tolerances: 1e-6 where the two sides compute the same numbers in a different
// order (weights ≤ 1, a few ulps); 1e-5 on layer outputs, whose entries are
// sums of E or k products of expert outputs of order 1, computed through
// matmuls of different shapes (different summation order).
import XCTest
@testable import MoE

final class RouterEquivalenceTests: XCTestCase {
    /// softmax → top-k → renormalise picks the experts with the largest p and
    /// divides by Σ_chosen p; top-k → softmax picks the largest logits (softmax
    /// is monotone: the same experts) and takes exp(z_i)/Σ_chosen exp(z) =
    /// p_i/Σ_chosen p. Same weights, and the same gradient.
    func testTheTwoOrdersGiveTheSameWeightsAndGradients() {
        var rng = Xoshiro256(seed: 70)
        let logits = Tensor.uniform([12, 6], low: -3, high: 3, rng: &rng)
        for temperature: Float in [1, 0.7, 2] {
            for k in 1...6 {
                let schedule = TemperatureSchedule(start: temperature)
                let a = TopKGating(experts: 6, k: k, order: .softmaxThenTopK, temperature: schedule)
                let b = TopKGating(experts: 6, k: k, order: .topKThenSoftmax, temperature: schedule)
                let ra = a.route(logits: logits, context: RoutingContext())
                let rb = b.route(logits: logits, context: RoutingContext())
                XCTAssertEqual(ra.experts, rb.experts, "k = \(k), T = \(temperature)")
                XCTAssertLessThan(ra.weights.maxAbsDifference(rb.weights), 1e-6, "k = \(k), T = \(temperature)")
                let dw = Tensor.uniform([12, k], low: -1, high: 1, rng: &rng)
                let dp = Tensor.uniform([12, 6], low: -1, high: 1, rng: &rng)
                let ga = a.backward(weightGradient: dw, probabilityGradient: dp)
                let gb = b.backward(weightGradient: dw, probabilityGradient: dp)
                XCTAssertLessThan(ga.maxAbsDifference(gb), 1e-6, "dL/dlogits, k = \(k), T = \(temperature)")
            }
        }
    }

    /// With every expert active and nothing dropped, a sparse layer is the dense
    /// soft mixture y = Σ_e p_e · Expert_e(x), p = softmax(gate(x)).
    func testAllExpertsWithoutDropsIsTheDenseSoftMixture() {
        let routers: [(Router, String)] = [
            (TopKGating(experts: 4, k: 4), "top-4 of 4, renormalised"),
            (TopKGating(experts: 4, k: 4, renormalize: false), "top-4 of 4, w = p"),
            (ExpertChoiceRouter(experts: 4, k: 4), "expert choice, c = N"),
        ]
        for (router, what) in routers {
            var rng = Xoshiro256(seed: 71)
            let layer = MoELayer(modelDim: 5, hiddenDim: 6, experts: 4, router: router, balancing: [], rng: &rng)
            let x = Tensor.uniform([10, 5], low: -1, high: 1, rng: &rng)
            let y = layer.forward(x)
            let p = softmaxRows(layer.gate.forward(x))           // [N, E]
            var dense = Tensor.zeros([10, 5])                    // Σ_e p_e · Expert_e(x)   [N, D]
            for e in 0..<4 {
                let out = layer.experts[e].forward(x)
                for n in 0..<10 { for d in 0..<5 { dense.data[n * 5 + d] += p.data[n * 4 + e] * out.data[n * 5 + d] } }
            }
            XCTAssertLessThan(y.maxAbsDifference(dense), 1e-5, what)
        }
    }

    /// capacity ⌈factor·N·k/E⌉ ≥ N for factor = E/k: no expert can overflow, so
    /// every policy must give the dropless layer's output and gradients, bit for bit.
    func testALargeCapacityEqualsDroplessRouting() {
        var rng = Xoshiro256(seed: 72)
        let layer = MoELayer(modelDim: 5, hiddenDim: 6, experts: 4, k: 2, noise: .none, gateBias: true, rng: &rng)
        let x = Tensor.uniform([12, 5], low: -1, high: 1, rng: &rng)
        let dy = Tensor.uniform([12, 5], low: -1, high: 1, rng: &rng)
        func run() -> (y: Tensor, dx: Tensor, gate: Tensor) {
            layer.zeroGrad()
            let y = layer.forward(x)
            return (y, layer.backward(dy), layer.gate.weight.grad)
        }
        let dropless = run()
        for overflow in Capacity.Overflow.allCases {
            layer.capacity = Capacity(factor: 2, overflow: overflow)
            layer.resetStatistics()
            let capped = run()
            XCTAssertEqual(capped.y, dropless.y, overflow.rawValue)
            XCTAssertEqual(capped.dx, dropless.dx, overflow.rawValue)
            XCTAssertEqual(capped.gate, dropless.gate, overflow.rawValue)
            XCTAssertEqual(layer.statistics.droppedSlots, 0)
            XCTAssertEqual(layer.statistics.chosenSlots, 24)
        }
    }

    /// Returns a routing fixed in advance, whatever the logits: for feeding a
    /// hand-made batch through the layer.
    final class FixedRouter: Router {
        let routing: Routing
        init(_ routing: Routing) { self.routing = routing }
        var name: String { "fixed" }
        var expertCount: Int { routing.expertCount }
        var slots: Int { routing.k }
        func route(logits: Tensor, context: RoutingContext) -> Routing { routing }
        func backward(weightGradient: Tensor, probabilityGradient: Tensor?) -> Tensor {
            .zeros([routing.tokenCount, routing.expertCount])
        }
    }

    /// Four tokens, two experts, k = 2, capacity ⌈0.5·4·2/2⌉ = 2 per expert:
    /// 8 slots ask for 4 places, so each policy drops 4 — but not the same 4.
    func testTheThreeOverflowPoliciesOnOneBatch() {
        //                       token 0     token 1     token 2     token 3
        let experts =           [1, 0,       1, 0,       0, 1,       1, 0]
        let weights = Tensor(shape: [4, 2], data: [0.6, 0.4, 0.7, 0.3, 0.9, 0.1, 0.8, 0.2])
        let routing = Routing(k: 2, probabilities: Tensor(shape: [4, 2], repeating: 0.5), experts: experts, weights: weights)
        let expected: [Capacity.Overflow: [Bool]] = [
            // First come, first served: tokens 0 and 1 fill both experts; 2 and 3 lose everything.
            .tokenOrder: [false, false, false, false, true, true, true, true],
            // Largest weights first: expert 1 takes 0.8 and 0.7, so token 0 loses its
            // first choice (0.6) but keeps its second (0.4 on expert 0, after 0.9).
            .score: [true, false, false, true, false, true, false, true],
            // First choices first, in token order: tokens 0, 1 fill expert 1, token 2
            // takes expert 0, token 3's first choice arrives too late; then token 0's
            // second choice takes expert 0's last place.
            .choiceOrder: [false, false, false, true, false, true, true, true],
        ]
        for overflow in Capacity.Overflow.allCases {
            let capacity = Capacity(factor: 0.5, overflow: overflow)
            XCTAssertEqual(capacity.limit(tokens: 4, activeExperts: 2, experts: 2), 2)
            let r = capacity.apply(to: routing, activeExperts: 2)
            XCTAssertEqual(r.dropped, expected[overflow], overflow.rawValue)
            XCTAssertEqual(r.droppedCount, 4)

            // Through a layer: the drops are counted in RoutingStatistics, and a
            // token that lost every slot leaves the layer as a zero vector.
            var rng = Xoshiro256(seed: 73)
            let layer = MoELayer(modelDim: 3, hiddenDim: 4, experts: 2, router: FixedRouter(routing), balancing: [],
                                 capacity: capacity, rng: &rng)
            let y = layer.forward(.uniform([4, 3], low: -1, high: 1, rng: &rng))
            XCTAssertEqual(layer.lastRouting!.dropped, expected[overflow])
            XCTAssertEqual(layer.statistics.droppedSlots, 4)
            XCTAssertEqual(layer.statistics.chosenSlots, 8)
            XCTAssertEqual(layer.statistics.droppedShare, 0.5)
            for t in 0..<4 {
                let lostEverything = expected[overflow]![t * 2] && expected[overflow]![t * 2 + 1]
                let row = Array(y.data[(t * 3)..<(t * 3 + 3)])
                if lostEverything { XCTAssertEqual(row, [0, 0, 0], "\(overflow.rawValue): token \(t)") }
                else { XCTAssertNotEqual(row, [0, 0, 0], "\(overflow.rawValue): token \(t)") }
            }
        }
    }

    /// DeepSeekMoE's shared experts: y = Σ_j w_j · Expert_{e_j}(x) + Shared(x).
    func testSharedExpertsAddTheirOutputToTheRoutedPart() {
        var rng = Xoshiro256(seed: 74)
        let layer = MoELayer(modelDim: 5, hiddenDim: 6, experts: 4, router: TopKGating(experts: 4, k: 2),
                             balancing: [SwitchBalancing()], sharedExperts: 1, sharedHiddenDim: 3, rng: &rng)
        let x = Tensor.uniform([8, 5], low: -1, high: 1, rng: &rng)
        let y = layer.forward(x)
        let r = layer.lastRouting!
        var expected = layer.sharedExperts[0].forward(x)         // Shared(x)   [N, D]
        let outputs = layer.experts.map { $0.forward(x) }        // Expert_e(x) [N, D], all tokens
        for n in 0..<8 {
            for j in 0..<2 {
                let e = r.experts[n * 2 + j], w = r.weights.data[n * 2 + j]
                for d in 0..<5 { expected.data[n * 5 + d] += w * outputs[e].data[n * 5 + d] }
            }
        }
        XCTAssertLessThan(y.maxAbsDifference(expected), 1e-5)
        // Total vs active parameters: the shared expert counts in both.
        let perExpert = layer.experts[0].parameterCount, shared = layer.sharedExperts[0].parameterCount
        XCTAssertEqual(shared, 5 * 3 + 3 + 3 * 5 + 5)
        XCTAssertEqual(layer.parameterCount, layer.gate.parameterCount + 4 * perExpert + shared)
        XCTAssertEqual(layer.activeParameterCount, layer.gate.parameterCount + 2 * perExpert + shared)
    }
}
