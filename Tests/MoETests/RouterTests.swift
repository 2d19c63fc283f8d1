// Every router against finite differences, alone and inside an MoELayer; the
// case where the gradient must be exactly zero; and a router written here, in
// the test file, that plugs into the layer without touching the library.
//
// Holding the choice fixed. Which experts a token goes to is a step function
// of the logits: it has no derivative, and a finite difference that flips a
// choice measures a jump, not a slope. So every check asserts that no ±ε
// perturbation changed any token's set of experts (and, with a capacity, the
// drop mask), exactly as MoELayerTests does; the gradient checked is that of
// the weights (and probabilities) with the choice held fixed, which is the
// gradient every router's backward computes. Seeds are chosen so the top-k has
// clear gaps; if an assertion about the routing changing fires, pick a seed
// with larger gaps, do not loosen the test. Noisy top-k also holds its noise
// fixed: the generator is saved once and restored before every route.
//
// Tolerance: `gradientTolerance` (GradientCheckTests.swift), 3e-2.
import XCTest
@testable import MoE

final class RouterTests: XCTestCase {
    // MARK: - Helpers

    /// A router alone, behind a gate Linear(D → E), with the choice held fixed:
    ///
    ///     L = Σ_{n, j} w[n, j] · R[n, e(n, j)]  +  α · Σ p ⊙ Q
    ///
    /// R and Q are fixed random [N, E]; the second term sends a dense
    /// dL/dprobabilities = α·Q, like a balancing loss but touching every entry.
    /// Checks the gate's parameters, the router's own, and x.
    func assertRouterGradient(_ router: Router, _ what: String, seed: UInt64, tokens: Int = 7, modelDim: Int = 6,
                              training: Bool = true, progress: Double = 0, bias: [Float]? = nil,
                              replay: @escaping () -> Void = {},
                              file: StaticString = #filePath, line: UInt = #line) {
        var rng = Xoshiro256(seed: seed)
        let e = router.expertCount
        let gate = Linear(inFeatures: modelDim, outFeatures: e, rng: &rng)
        let x = Tensor.uniform([tokens, modelDim], low: -2, high: 2, rng: &rng)   // [N, D]
        let reward = Tensor.uniform([tokens, e], low: -1, high: 1, rng: &rng)     // R [N, E]
        let probe = Tensor.uniform([tokens, e], low: -1, high: 1, rng: &rng)      // Q [N, E]
        let alpha: Float = 0.3
        func route(_ x: Tensor) -> Routing {
            replay()
            let context = RoutingContext(training: training, progress: progress, selectionBias: bias, input: x)
            return router.route(logits: gate.forward(x), context: context)
        }
        func weightGradient(_ r: Routing) -> Tensor {   // dL/dw [N, K]: R at the slot's expert, 0 for an empty slot
            var dw = Tensor.zeros([r.tokenCount, r.k])
            for i in 0..<r.experts.count where r.experts[i] >= 0 {
                dw.data[i] = reward.data[(i / r.k) * e + r.experts[i]]
            }
            return dw
        }
        let choice = chosenSets(route(x))
        let report = GradientCheck.check(parameters: prefixed("gate", gate.namedParameters) + prefixed("router", router.namedParameters),
                                         input: x, loss: { x in
            let r = route(x!)
            XCTAssertEqual(chosenSets(r), choice, "\(what): a perturbation changed the routing", file: file, line: line)
            return GradientCheck.dot(r.weights, weightGradient(r)) + Double(alpha) * GradientCheck.dot(r.probabilities, probe)
        }, backward: { x in
            let r = route(x!)
            var dx = gate.backward(router.backward(weightGradient: weightGradient(r), probabilityGradient: probe * alpha))
            if let own = router.inputGradient() { dx += own }
            return dx
        })
        assertGradientsMatch(report, what, file: file, line: line)
    }

    /// The router inside an MoELayer (4 experts, Switch loss α = 0.5):
    /// L = Σ y ⊙ r + α·aux, with the choice and the capacity drops held fixed.
    func assertLayerGradient(_ router: Router, _ what: String, seed: UInt64, capacity: Capacity? = nil,
                             sharedExperts: Int = 0, prepare: (MoELayer) -> Void = { _ in },
                             replay: @escaping () -> Void = {},
                             file: StaticString = #filePath, line: UInt = #line) {
        var rng = Xoshiro256(seed: seed)
        let layer = MoELayer(modelDim: 6, hiddenDim: 5, experts: router.expertCount, router: router,
                             balancing: [SwitchBalancing(weight: 0.5)], capacity: capacity,
                             sharedExperts: sharedExperts, rng: &rng)
        prepare(layer)
        let x = Tensor.uniform([9, 6], low: -2, high: 2, rng: &rng)
        let r = Tensor.uniform([9, 6], low: -1, high: 1, rng: &rng)
        replay(); _ = layer.forward(x)
        let choice = chosenSets(layer.lastRouting!), drops = layer.lastRouting!.dropped
        let report = GradientCheck.check(parameters: layer.namedParameters, input: x, maxElements: 24, loss: { x in
            replay()
            let y = layer.forward(x!)
            XCTAssertEqual(chosenSets(layer.lastRouting!), choice, "\(what): a perturbation changed the routing", file: file, line: line)
            XCTAssertEqual(layer.lastRouting!.dropped, drops, "\(what): a perturbation changed the drops", file: file, line: line)
            return GradientCheck.dot(y, r) + layer.weightedAuxLoss
        }, backward: { x in
            replay(); _ = layer.forward(x!)
            return layer.backward(r)
        })
        assertGradientsMatch(report, what, file: file, line: line)
    }

    // MARK: - Each router alone

    func testTopKGatingGradientInBothOrdersAndWithATemperature() {
        let cosine = TemperatureSchedule(start: 2, end: 0.5, shape: .cosine)
        for order in [TopKGating.Order.softmaxThenTopK, .topKThenSoftmax] {
            assertRouterGradient(TopKGating(experts: 5, k: 2, order: order), "top-2 \(order.rawValue)", seed: 30)
            assertRouterGradient(TopKGating(experts: 5, k: 2, order: order, temperature: cosine),
                                 "top-2 \(order.rawValue), T = \(cosine.value(at: 0.3))", seed: 30, progress: 0.3)
        }
        assertRouterGradient(TopKGating(experts: 5, k: 2, renormalize: false, temperature: TemperatureSchedule(start: 0.7)),
                             "top-2 not renormalised, T = 0.7", seed: 30)
        assertRouterGradient(TopKGating(experts: 5, k: 3), "top-3 with a selection bias", seed: 31,
                             bias: [0.05, -0.05, 0.1, 0, -0.1])
    }

    func testSwitchGradient() {
        let router = TopKGating(experts: 5, k: 1, renormalize: false)
        XCTAssertEqual(router.name, "switch")
        assertRouterGradient(router, "switch (top-1, w = p)", seed: 31)
    }

    func testNoisyTopKGatingGradientIncludingTheNoiseNetworkAndX() {
        let router = NoisyTopKGating(experts: 5, k: 2, modelDim: 6, seed: 3)
        // Zero at init (the paper's choice): σ = softplus(0) = ln 2 for every token and expert.
        XCTAssertEqual(router.noise.weight.value.data.map(abs).max(), 0)
        XCTAssertEqual(router.noise.bias!.value.data.map(abs).max(), 0)
        var rng = Xoshiro256(seed: 32)
        _ = router.route(logits: .zeros([3, 5]), context: RoutingContext(input: .uniform([3, 6], low: -1, high: 1, rng: &rng)))
        for sigma in router.lastNoiseScale!.data { XCTAssertEqual(sigma, Float(log(2.0)), accuracy: 1e-7) }
        // Random here, so every term of the backward is exercised.
        rng = Xoshiro256(seed: 32)
        router.noise.weight.value = .uniform([5, 6], low: -0.5, high: 0.5, rng: &rng)
        router.noise.bias!.value = .uniform([5], low: -0.5, high: 0.5, rng: &rng)
        let saved = router.generator
        assertRouterGradient(router, "noisy top-2, training", seed: 34, replay: { router.generator = saved })
        XCTAssertGreaterThan(router.noise.weight.grad.data.map(abs).max()!, 0, "the noise network must learn")
        XCTAssertEqual(router.namedParameters.map(\.name), ["noise.weight", "noise.bias"])
        // Evaluation: no noise, no noise path, no dL/dx of the router's own.
        assertRouterGradient(router, "noisy top-2, evaluation", seed: 34, training: false)
        XCTAssertNil(router.inputGradient())
        XCTAssertEqual(router.noise.weight.grad.data.map(abs).max()!, 0)
    }

    func testExpertChoiceGradient() {
        assertRouterGradient(ExpertChoiceRouter(experts: 4, k: 2), "expert choice, c = ⌈7·2/4⌉ = 4", seed: 33)
        assertRouterGradient(ExpertChoiceRouter(experts: 4, k: 1, capacityFactor: 1.5), "expert choice, c = 3", seed: 33)
    }

    func testDeepSeekV3RouterGradient() {
        assertRouterGradient(DeepSeekV3Router(experts: 8, k: 3, groups: 4, topGroups: 2, routedScaling: 2.5),
                             "deepseek-v3 G = 4, top 2 groups, k = 3, λ = 2.5", seed: 34)
        assertRouterGradient(DeepSeekV3Router(experts: 6, k: 2), "deepseek-v3 no groups, with a bias", seed: 34,
                             bias: [0.1, -0.1, 0, 0.05, 0, -0.05])
    }

    // MARK: - Each router inside an MoELayer

    func testEveryRouterThroughAnMoELayer() {
        assertLayerGradient(TopKGating(experts: 4, k: 2), "layer, top-2", seed: 40)
        assertLayerGradient(TopKGating(experts: 4, k: 2, order: .topKThenSoftmax, temperature: TemperatureSchedule(start: 1.5)),
                            "layer, top-2 top-k → softmax, T = 1.5", seed: 40)
        assertLayerGradient(TopKGating(experts: 4, k: 1, renormalize: false), "layer, switch", seed: 41)
        assertLayerGradient(ExpertChoiceRouter(experts: 4, k: 2), "layer, expert choice", seed: 42)
        assertLayerGradient(DeepSeekV3Router(experts: 4, k: 2, groups: 2, topGroups: 1, routedScaling: 2),
                            "layer, deepseek-v3", seed: 43)

        let noisy = NoisyTopKGating(experts: 4, k: 2, modelDim: 6, seed: 5)
        let saved = noisy.generator
        assertLayerGradient(noisy, "layer, noisy top-2", seed: 44, prepare: { layer in
            var rng = Xoshiro256(seed: 45)
            noisy.noise.weight.value = .uniform([4, 6], low: -0.5, high: 0.5, rng: &rng)
            XCTAssertTrue(layer.namedParameters.contains { $0.name == "gating.noise.weight" })
        }, replay: { noisy.generator = saved })

        // The walkthrough's learned gate noise, ε held fixed after the first draw:
        // checks ∂L/∂noise_weights beside the rest, in both orders and with a temperature.
        for (order, t, seed) in [(TopKGating.Order.softmaxThenTopK, Float(1), UInt64(50)), (.topKThenSoftmax, 1.5, 47)] {
            let learned = TopKGating(experts: 4, k: 2, order: order, temperature: TemperatureSchedule(start: t),
                                     noise: .learned, seed: seed)
            var calls = 0
            assertLayerGradient(learned, "layer, top-2 with learned noise, \(order.rawValue), T = \(t)", seed: seed, prepare: { layer in
                learned.noiseWeights!.value = Tensor(shape: [4], data: [-0.5, 0.2, 0.8, -1.0])
                XCTAssertTrue(layer.namedParameters.contains { $0.name == "gating.noise_weights" })
            }, replay: { calls += 1; if calls > 1 { learned.replaysNoise = true } })
            XCTAssertGreaterThan(learned.noiseWeights!.grad.data.map(abs).max()!, 0, "the noise scale is learned")
        }

        for overflow in Capacity.Overflow.allCases {
            assertLayerGradient(TopKGating(experts: 4, k: 2), "layer, top-2, capacity 0.75 \(overflow.rawValue)", seed: 46,
                                capacity: Capacity(factor: 0.75, overflow: overflow))
        }
    }

    /// Shared experts (DeepSeekMoE): every token's output gains Σ_s Shared_s(x),
    /// and their gradient is the full dy.
    func testSharedExpertsGradient() {
        assertLayerGradient(TopKGating(experts: 4, k: 2), "layer, top-2 + 1 shared expert", seed: 48, sharedExperts: 1)
    }

    // MARK: - Exactly zero

    /// Top-1 with renormalisation: w = p_e / p_e = 1 for every token, whatever
    /// the logits, so the task loss gives dL/dlogits = 0, exactly, not nearly.
    /// The router learns only from a balancing loss (TopKGating.swift says so).
    func testTopOneWithRenormalisationTeachesTheRouterNothing() {
        var rng = Xoshiro256(seed: 50)
        let logits = Tensor.uniform([6, 4], low: -3, high: 3, rng: &rng)
        let dw = Tensor.uniform([6, 1], low: -1, high: 1, rng: &rng)
        for order in [TopKGating.Order.softmaxThenTopK, .topKThenSoftmax] {
            let router = TopKGating(experts: 4, k: 1, renormalize: true, order: order)
            let r = router.route(logits: logits, context: RoutingContext())
            XCTAssertEqual(r.weights.data, [Float](repeating: 1, count: 6))
            let dLogits = router.backward(weightGradient: dw, probabilityGradient: nil)
            XCTAssertEqual(dLogits.data, [Float](repeating: 0, count: 24), "\(order.rawValue): must be exactly zero")
        }
        // Noisy top-1: a softmax over one kept entry is also 1.
        let noisy = NoisyTopKGating(experts: 4, k: 1, modelDim: 3, seed: 1)
        _ = noisy.route(logits: logits, context: RoutingContext(input: .uniform([6, 3], low: -1, high: 1, rng: &rng)))
        XCTAssertEqual(noisy.backward(weightGradient: dw, probabilityGradient: nil).data, [Float](repeating: 0, count: 24))

        // In a layer without a balancing loss: the gate's gradient is exactly zero,
        // the chosen experts' gradients are not. Switch routing (w = p) does teach the gate.
        for renormalize in [true, false] {
            var rng = Xoshiro256(seed: 51)
            let layer = MoELayer(modelDim: 5, hiddenDim: 4, experts: 4,
                                 router: TopKGating(experts: 4, k: 1, renormalize: renormalize), balancing: [], rng: &rng)
            let x = Tensor.uniform([8, 5], low: -1, high: 1, rng: &rng)
            _ = layer.forward(x)
            layer.zeroGrad()
            _ = layer.backward(.uniform([8, 5], low: -1, high: 1, rng: &rng))
            let gateGradient = layer.gate.weight.grad.data.map(abs).max()! + (layer.gate.bias?.grad.data.map(abs).max() ?? 0)
            if renormalize { XCTAssertEqual(gateGradient, 0) } else { XCTAssertGreaterThan(gateGradient, 0) }
            let used = Set(layer.lastRouting!.experts)
            XCTAssertGreaterThan(layer.experts[used.first!].up.weight.grad.data.map(abs).max()!, 0)
        }
    }

    // MARK: - A router written by a student

    /// Everything a student writes to try an idea: token n goes to expert n mod E
    /// with weight 1. The choice ignores the logits, so there is nothing for the
    /// gate to learn: backward returns zeros. Nothing in the library changes.
    final class RoundRobinRouter: Router {
        let expertCount: Int
        private var tokens = 0
        init(experts: Int) { expertCount = experts }
        var name: String { "round-robin" }
        var slots: Int { 1 }

        func route(logits: Tensor, context: RoutingContext) -> Routing {
            tokens = logits.shape[0]
            return Routing(k: 1,
                           probabilities: Tensor(shape: logits.shape, repeating: 1 / Float(expertCount)),  // [N, E]
                           experts: (0..<tokens).map { $0 % expertCount },                                 // [N, 1]
                           weights: Tensor(shape: [tokens, 1], repeating: 1))                              // [N, 1]
        }

        func backward(weightGradient: Tensor, probabilityGradient: Tensor?) -> Tensor {
            .zeros([tokens, expertCount])
        }
    }

    func testAStudentWrittenRouterPlugsInAndTrains() {
        var rng = Xoshiro256(seed: 60)
        let layer = MoELayer(modelDim: 4, hiddenDim: 8, experts: 3, router: RoundRobinRouter(experts: 3),
                             balancing: [], rng: &rng)
        let x = Tensor.uniform([12, 4], low: -1, high: 1, rng: &rng)
        _ = layer.forward(x)
        XCTAssertEqual(layer.lastRouting!.experts, (0..<12).map { $0 % 3 })
        XCTAssertEqual(layer.statistics.tokenCounts, [4, 4, 4])

        // Its gradients check like any other router's.
        let report = GradientCheck.check(layer, input: x, maxElements: 24)
        assertGradientsMatch(report, "layer, round-robin")

        // And it trains: fit y = x·M with mean squared error, 60 Adam steps.
        let m = Tensor.uniform([4, 4], low: -1, high: 1, rng: &rng)
        let target = matmul(x, m)
        let adam = Adam(parameters: layer.parameters, learningRate: 1e-2)
        func step() -> Double {
            let y = layer.forward(x)
            var dy = Tensor.zeros(y.shape), loss = 0.0
            for i in 0..<y.count {
                let d = y.data[i] - target.data[i]
                loss += Double(d * d) / Double(y.count)
                dy.data[i] = 2 * d / Float(y.count)
            }
            layer.zeroGrad()
            _ = layer.backward(dy)
            adam.step()
            return loss
        }
        let first = step()
        var last = first
        for _ in 0..<60 { last = step() }
        XCTAssertLessThan(last, first / 4, "the student's router should train: MSE \(first) → \(last)")
    }
}
