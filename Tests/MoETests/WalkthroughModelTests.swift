// The walkthrough's model (Part 2): ReLU after the MoE layer, a bias-free gate,
// and learned gate noise ε·softplus(noise_weights) in training only. Its
// gradients are checked in MoELayerTests and RouterTests (ε held fixed) and
// against PyTorch in PyTorchParityTests; here, what the noise does and does not do.
import XCTest
@testable import MoE

final class WalkthroughModelTests: XCTestCase {
    private func model(seed: UInt64) -> MoEClassifier {
        var rng = Xoshiro256(seed: seed)
        return MoEClassifier(inputSize: 12, hidden: 8, expertHidden: 6, experts: 4, topK: 2, classes: 3,
                             seed: seed, rng: &rng)
    }

    private func batch() -> Tensor {
        var rng = Xoshiro256(seed: 99)
        return .uniform([16, 12], low: 0, high: 1, rng: &rng)
    }

    func testTheDefaultIsPart2sArchitecture() {
        let m = model(seed: 0)
        XCTAssertNotNil(m.reluAfterMoE, "ReLU after the MoE layer")
        XCTAssertNil(m.moe.gate.bias, "the gate is nn.Linear(…, bias=False)")
        let gating = m.moe.router as! TopKGating
        XCTAssertEqual(gating.noise, .learned)
        XCTAssertEqual(gating.noiseWeights?.value.data, [0, 0, 0, 0], "noise_weights start at zero: scale ln 2")
        XCTAssertTrue(gating.renormalize)
        XCTAssertEqual(gating.order, .softmaxThenTopK)
        XCTAssertEqual(RoutingSetup().summary, "topk k=2, learned noise, switch α=0.1")
    }

    /// Evaluation routes deterministically, on softmax(gate(x)); training adds
    /// fresh noise at every call, and balancing sees the noisy probabilities.
    func testNoiseIsOffAtEvaluationAndOnInTraining() {
        let m = model(seed: 0), x = batch()
        m.setMode(training: false, progress: 1)
        let a = m.forward(x), b = m.forward(x)
        XCTAssertEqual(a, b, "evaluation is deterministic")
        let h = ReLU().forward(m.inputProj.forward(x))
        let clean = softmaxRows(m.moe.gate.forward(h))
        XCTAssertEqual(m.moe.lastRouting!.probabilities, clean, "no noise at evaluation")

        m.setMode(training: true, progress: 0)
        let c = m.forward(x)
        let noisy = m.moe.lastRouting!.probabilities
        let d = m.forward(x)
        XCTAssertNotEqual(c, a, "training adds noise")
        XCTAssertNotEqual(c, d, "a fresh ε at every training forward")
        XCTAssertGreaterThan(noisy.maxAbsDifference(clean), 1e-3)
        // The aux loss is computed from the probabilities the top-k was taken from (Part 2's code).
        XCTAssertEqual(SwitchLoadBalancingLoss(routing: m.moe.lastRouting!).value, m.auxLoss, accuracy: 1e-9)
    }

    /// The same seed gives the same noise, a different seed other noise.
    func testNoiseIsSeeded() {
        let x = batch()
        let one = model(seed: 3), two = model(seed: 3), other = model(seed: 4)
        other.moe.gate.weight.value = one.moe.gate.weight.value   // only the noise may differ below
        for m in [one, two, other] { m.setMode(training: true, progress: 0) }
        _ = one.forward(x); _ = two.forward(x); _ = other.forward(x)
        XCTAssertEqual(one.moe.lastRouting!.probabilities, two.moe.lastRouting!.probabilities)
        XCTAssertNotEqual(one.moe.lastRouting!.probabilities, other.moe.lastRouting!.probabilities)
    }

    /// softplus(noise_weights) scales ε: a very negative weight switches the noise off.
    func testANegativeNoiseWeightSilencesTheNoise() {
        let m = model(seed: 0), x = batch()
        let gating = m.moe.router as! TopKGating
        gating.noiseWeights!.value = Tensor(shape: [4], repeating: -60)   // softplus ≈ 1e-26
        m.setMode(training: false, progress: 1)
        let clean = m.forward(x)
        m.setMode(training: true, progress: 0)
        XCTAssertLessThan(m.forward(x).maxAbsDifference(clean), 1e-6)
    }

    /// The generators' state travels with --resume: restoring it replays the same ε.
    func testTheNoiseGeneratorStateRoundTrips() throws {
        let m = model(seed: 5), x = batch()
        m.setMode(training: true, progress: 0)
        let saved = m.randomStates
        XCTAssertEqual(saved.map(\.name), ["moe.gating"])
        let first = m.forward(x)
        try m.restoreRandomState(named: "moe.gating", words: saved[0].words)
        XCTAssertEqual(m.forward(x), first)
        XCTAssertThrowsError(try m.restoreRandomState(named: "moe.gating", words: [UInt64](repeating: 0, count: 8)))
        XCTAssertThrowsError(try m.restoreRandomState(named: "moe.gating", words: [1, 2, 3]))
    }

    /// Part 2's call shapes: model(x) -> (logits, aux, counts), moe(x) -> (y, aux, counts).
    func testPart2sReturnValues() {
        let m = model(seed: 0), x = batch()
        m.setMode(training: false, progress: 1)
        let (logits, aux, counts) = m(x)
        XCTAssertEqual(logits.shape, [16, 3])
        XCTAssertEqual(aux, m.auxLoss)
        XCTAssertEqual(counts.count, 4)
        XCTAssertEqual(counts.reduce(0, +), 16 * 2, "every token fills k = 2 slots")
        let h = ReLU().forward(m.inputProj.forward(x))
        let (y, layerAux, layerCounts) = m.moe(h)
        XCTAssertEqual(y.shape, [16, 8])
        XCTAssertEqual(layerAux, aux, accuracy: 1e-12)
        XCTAssertEqual(layerCounts, counts)
    }
}
