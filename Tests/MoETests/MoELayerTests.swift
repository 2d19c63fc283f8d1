// The MoE pieces: TopKGating, the Switch load-balancing loss, MoELayer and the
// two classifiers, each against finite differences, plus the routing cases
// that are easy to get wrong (ties, idle experts, a batch of one).
import XCTest
@testable import MoE

/// Each token's chosen experts as a sorted list: the order of the k choices does
/// not change the loss, only the set does.
func chosenSets(_ r: Routing) -> [[Int]] {
    (0..<r.tokenCount).map { t in r.experts[(t * r.k)..<(t * r.k + r.k)].sorted() }
}

final class MoELayerTests: XCTestCase {
    func testParameterCountsMatchTheWalkthrough() {
        var rng = Xoshiro256(seed: 0)
        let moe = MoEClassifier(rng: &rng)
        let dense = DenseClassifier(rng: &rng)
        XCTAssertEqual(moe.parameterCount, 732_946)
        XCTAssertEqual(moe.activeParameterCount, 337_426)
        XCTAssertEqual(dense.parameterCount, 269_450)
        XCTAssertEqual(dense.activeParameterCount, 269_450)
        // Part 2's module names, so its PyTorch classes load the checkpoints with strict keys.
        XCTAssertEqual(moe.namedParameters.map(\.name).filter { !$0.hasPrefix("moe.experts.") },
                       ["input_proj.weight", "input_proj.bias", "moe.gating.gate.weight", "moe.gating.noise_weights",
                        "output_proj.weight", "output_proj.bias"])
        XCTAssertTrue(moe.namedParameters.contains { $0.name == "moe.experts.7.net.2.bias" })
        XCTAssertEqual(dense.namedParameters.map(\.name),
                       ["input_proj.weight", "input_proj.bias", "ffn.net.0.weight", "ffn.net.0.bias",
                        "ffn.net.2.weight", "ffn.net.2.bias", "output_proj.weight", "output_proj.bias"])
        // The v1 variant spends the same 8 parameters on a gate bias instead of noise weights.
        let v1 = MoEClassifier(variant: .v1, rng: &rng)
        XCTAssertEqual(v1.parameterCount, 732_946)
        XCTAssertTrue(v1.namedParameters.contains { $0.name == "moe.gating.gate.bias" })
        XCTAssertNil(v1.reluAfterMoE)
    }

    func testTopKSelectionRenormalisesAndBreaksTiesByLowerIndex() {
        let p = Tensor(shape: [2, 4], data: [0.1, 0.4, 0.1, 0.4,     // tie between 1 and 3
                                             0.25, 0.25, 0.25, 0.25]) // all tied
        let r = TopKGating.select(probabilities: p, k: 2, renormalize: true)
        XCTAssertEqual(r.experts, [1, 3, 0, 1])
        XCTAssertEqual(r.weights.data, [0.5, 0.5, 0.5, 0.5])
        let raw = TopKGating.select(probabilities: p, k: 3, renormalize: false)
        XCTAssertEqual(raw.experts, [1, 3, 0, 0, 1, 2])
        XCTAssertEqual(raw.weights.data, [0.4, 0.4, 0.1, 0.25, 0.25, 0.25])
    }

    func testSwitchLossValueAtBalanceAndCollapse() {
        // Perfect balance: 4 tokens, 4 experts, k = 2, each expert chosen twice, uniform p.
        let uniform = Tensor(shape: [4, 4], repeating: 0.25)
        let balanced = Routing(k: 2, probabilities: uniform, experts: [0, 1, 2, 3, 0, 1, 2, 3],
                               weights: Tensor(shape: [4, 2], repeating: 0.5))
        XCTAssertEqual(SwitchLoadBalancingLoss(routing: balanced).value, 2, accuracy: 1e-6)   // = k
        // Collapse: every token to experts 0 and 1, which hold all the probability.
        let sure = Tensor(shape: [4, 4], data: (0..<4).flatMap { _ in [Float(0.5), 0.5, 0, 0] })
        let collapsed = Routing(k: 2, probabilities: sure, experts: [0, 1, 0, 1, 0, 1, 0, 1],
                                weights: Tensor(shape: [4, 2], repeating: 0.5))
        XCTAssertEqual(SwitchLoadBalancingLoss(routing: collapsed).value, 4, accuracy: 1e-6)  // = E
    }

    /// TopKGating's backward with the choice held fixed: the loss is
    /// L = Σ w[n, j]·R[n, e(n, j)] + α·aux, differentiated through w (renormalised
    /// softmax) and through P (aux). Inputs are drawn so the top-k has clear gaps.
    func testTopKGatingGradient() {
        for renormalize in [true, false] {
            var rng = Xoshiro256(seed: 20)
            let linear = Linear(inFeatures: 6, outFeatures: 5, rng: &rng)   // the MoE layer's gate
            let gate = TopKGating(experts: 5, k: 2, renormalize: renormalize)
            let x = Tensor.uniform([7, 6], low: -2, high: 2, rng: &rng)
            let reward = Tensor.uniform([7, 5], low: -1, high: 1, rng: &rng)
            let alpha: Float = 0.3
            func loss(_ r: Routing) -> Double {
                var s = 0.0
                for t in 0..<r.tokenCount { for j in 0..<r.k {
                    s += Double(r.weights.data[t * r.k + j]) * Double(reward.data[t * 5 + r.experts[t * r.k + j]])
                } }
                return s + Double(alpha) * SwitchLoadBalancingLoss(routing: r).value
            }
            func route(_ x: Tensor) -> Routing { gate.route(logits: linear.forward(x), context: RoutingContext()) }
            let choice = chosenSets(route(x))
            // The choice must not change under the ±ε perturbations: asserted below.
            let report = GradientCheck.check(parameters: linear.namedParameters, input: x, loss: { x in
                let r = route(x!)
                XCTAssertEqual(chosenSets(r), choice, "a perturbation changed the routing; pick a larger gap")
                return loss(r)
            }, backward: { x in
                let r = route(x!)
                var dw = Tensor.zeros([7, 2])
                for t in 0..<7 { for j in 0..<2 { dw.data[t * 2 + j] = reward.data[t * 5 + r.experts[t * 2 + j]] } }
                let aux = SwitchLoadBalancingLoss(routing: r)
                return linear.backward(gate.backward(weightGradient: dw,
                                                     probabilityGradient: aux.probabilityGradient(tokens: 7, scale: alpha)))
            })
            assertGradientsMatch(report, "TopKGating renormalize=\(renormalize)")
        }
    }

    /// The whole layer: L = Σ y ⊙ r + α·aux, through experts, combine weights and router.
    func testMoELayerGradient() {
        var rng = Xoshiro256(seed: 21)
        let layer = MoELayer(modelDim: 6, hiddenDim: 5, experts: 4, k: 2, auxLossWeight: 0.5, rng: &rng)
        let x = Tensor.uniform([9, 6], low: -1, high: 1, rng: &rng)
        let r = Tensor.uniform([9, 6], low: -1, high: 1, rng: &rng)
        _ = layer.forward(x)
        // The walkthrough's learned noise: hold ε fixed, so every evaluation is
        // the same function, and check ∂L/∂noise_weights with the rest.
        (layer.router as! TopKGating).replaysNoise = true
        let choice = chosenSets(layer.lastRouting!)
        let report = GradientCheck.check(parameters: layer.namedParameters, input: x, maxElements: 40, loss: { x in
            let y = layer.forward(x!)
            XCTAssertEqual(chosenSets(layer.lastRouting!), choice, "a perturbation changed the routing")
            return GradientCheck.dot(y, r) + layer.weightedAuxLoss
        }, backward: { x in
            _ = layer.forward(x!)
            return layer.backward(r)
        })
        assertGradientsMatch(report, "MoELayer")
        // Every expert that received tokens must have a non-zero gradient.
        let counts = layer.statistics.tokenCounts
        for (e, expert) in layer.experts.enumerated() where counts[e] > 0 {
            XCTAssertGreaterThan(expert.up.weight.grad.data.map(abs).max()!, 0)
        }
    }

    func testIdleExpertGetsNoGradientAndBatchOfOneWorks() {
        var rng = Xoshiro256(seed: 22)
        let layer = MoELayer(modelDim: 4, hiddenDim: 3, experts: 6, k: 2, rng: &rng)
        let x = Tensor.uniform([1, 4], low: -1, high: 1, rng: &rng)   // one token: 4 of 6 experts idle
        let y = layer.forward(x)
        XCTAssertEqual(y.shape, [1, 4])
        layer.zeroGrad()
        let dx = layer.backward(Tensor(shape: [1, 4], repeating: 1))
        XCTAssertEqual(dx.shape, [1, 4])
        let chosen = Set(layer.lastRouting!.experts)
        XCTAssertEqual(chosen.count, 2)
        for (e, expert) in layer.experts.enumerated() {
            let gradNorm = expert.parameters.map { $0.grad.data.map(abs).max() ?? 0 }.max()!
            if chosen.contains(e) { XCTAssertGreaterThan(gradNorm, 0) } else { XCTAssertEqual(gradNorm, 0) }
        }
        // The output is the weighted sum of the two chosen experts' outputs.
        let r = layer.lastRouting!
        var expected = Tensor.zeros([1, 4])
        for j in 0..<2 {
            let out = layer.experts[r.experts[j]].forward(x)
            for c in 0..<4 { expected.data[c] += r.weights.data[j] * out.data[c] }
        }
        XCTAssertLessThan(y.maxAbsDifference(expected), 1e-6)
    }

    /// One expert with k = 1 is the dense FFN: the gate weight is exactly 1.
    func testOneExpertEqualsTheDenseFFN() {
        var rng = Xoshiro256(seed: 23)
        let layer = MoELayer(modelDim: 5, hiddenDim: 4, experts: 1, k: 1, rng: &rng)
        let x = Tensor.uniform([3, 5], low: -1, high: 1, rng: &rng)
        XCTAssertEqual(layer.forward(x), layer.experts[0].forward(x))
    }

    func testClassifierGradients() {
        var rng = Xoshiro256(seed: 24)
        let labels = [0, 1, 2, 3, 4, 0, 2]
        let x = Tensor.uniform([7, 10], low: 0, high: 1, rng: &rng)
        let models: [Classifier] = [
            MoEClassifier(inputSize: 10, hidden: 8, expertHidden: 6, experts: 4, topK: 2, classes: 5, rng: &rng),
            DenseClassifier(inputSize: 10, hidden: 8, expertHidden: 6, classes: 5, rng: &rng),
        ]
        for model in models {
            _ = model.forward(x)
            ((model as? MoEClassifier)?.moe.router as? TopKGating)?.replaysNoise = true   // ε held fixed
            // ε = 1e-3: a bias moves a unit's pre-activation in every row at once, so
            // a larger step would cross ReLU's kink too often; the loss is computed
            // in Double (SoftmaxCrossEntropy), so the smaller step is not too noisy.
            let report = GradientCheck.check(parameters: model.namedParameters, input: nil, epsilon: 1e-3,
                                             maxElements: 24, loss: { _ in
                let ce = SoftmaxCrossEntropy.compute(logits: model.forward(x), labels: labels)
                return ce.loss + model.weightedAuxLoss
            }, backward: { _ in
                let ce = SoftmaxCrossEntropy.compute(logits: model.forward(x), labels: labels)
                model.backward(ce.gradient)
                return Tensor.zeros([0])
            })
            assertGradientsMatch(report, model.name)
        }
    }
}
