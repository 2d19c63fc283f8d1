// The GPT as a whole: blocks and the model against finite differences at tiny
// sizes (dense and MoE feed-forward, tied and untied head), parameter counts
// against the formula, and the first loss against ln V.
import XCTest
@testable import MoE

/// A model small enough that checking every tensor takes a fraction of a second.
func tinyGPTConfig(moeLayers: [Int], tie: Bool, topK: Int = 2) -> GPTConfig {
    var config = GPTConfig()
    config.vocabularySize = 11; config.contextLength = 6; config.layers = 2
    config.width = 8; config.heads = 2; config.hidden = 12
    config.moeLayers = moeLayers; config.experts = 4; config.routing.k = topK
    config.routing.auxWeight = 0.3   // large, so a wrong aux gradient would show
    config.tieWeights = tie
    return config
}

final class GPTModelTests: XCTestCase {

    func testBlockGradientDenseAndMoE() {
        for moe in [false, true] {
            var rng = Xoshiro256(seed: 40)
            let ffn: FeedForward = moe
                ? MoELayer(modelDim: 8, hiddenDim: 10, experts: 3, k: 2, auxLossWeight: 0, activation: .gelu,
                           noise: .none, gateBias: true, rng: &rng)
                : Expert(modelDim: 8, hiddenDim: 10, activation: .gelu, rng: &rng)
            let block = TransformerBlock(width: 8, heads: 2, feedForward: ffn, rng: &rng)
            let x = Tensor.uniform([2, 4, 8], low: -1, high: 1, rng: &rng)
            // ε = 3e-3, not the default 1e-2: through two LayerNorms and GELU the loss
            // bends enough over ±0.01 that the one-sided differences of small-gradient
            // elements disagree by more than the checker's 2% and get skipped as
            // "kinks" (13 of 32 elements of mlp.up.weight). That disagreement, relative
            // to the differences, shrinks in proportion to ε; going further down trades
            // it for Float noise (~1e-7·|L| / 2ε), which at 1e-3 already gives relative
            // errors of 2.4e-2 on the whole model's smallest gradients. 3e-3 sits between the two.
            // A perturbation that flips a top-k choice makes L jump; the checker sees
            // that and skips the element (counted).
            let report = GradientCheck.check(block, input: x, epsilon: 3e-3, maxElements: 32)
            note("block moe=\(moe)\n\(report)")
            assertGradientsMatch(report, "TransformerBlock moe=\(moe)")
        }
    }

    /// L = mean next-token cross-entropy + Σ α·aux, through every layer of the model.
    func testWholeModelGradient() {
        let cases: [(String, GPTConfig)] = [
            ("dense, untied head", tinyGPTConfig(moeLayers: [], tie: false)),
            ("MoE in block 1, tied head", tinyGPTConfig(moeLayers: [1], tie: true)),
        ]
        for (what, config) in cases {
            var rng = Xoshiro256(seed: 41)
            let model = GPT(config: config, rng: &rng)
            // Trained-size embeddings. At GPT-2's initial 0.02 the first LayerNorm sees
            // rows with σ ≈ 0.02, so a step ε = 0.01 is half a standard deviation: the
            // loss is far from linear over ±ε and the checker (rightly) calls it a kink.
            for p in [model.embedding.tokenTable, model.embedding.positionTable, model.headWeight] {
                p.value = .uniform(p.value.shape, low: -1, high: 1, rng: &rng)
            }
            let (batch, t) = (2, 5)
            let stream = (0..<(batch * t + 1)).map { _ in rng.below(config.vocabularySize) }
            let tokens = Array(stream[0..<(batch * t)]), targets = Array(stream[1...])
            func loss() -> Double {
                let ce = GPT.crossEntropy(logits: model.forward(tokens: tokens, batch: batch), targets: targets)
                return ce.loss + model.weightedAuxiliaryLoss
            }
            // ε = 3e-3 for the reason given in testBlockGradientDenseAndMoE.
            let report = GradientCheck.check(parameters: model.namedParameters, input: nil, epsilon: 3e-3, maxElements: 12,
                                             loss: { _ in loss() },
                                             backward: { _ in
                let ce = GPT.crossEntropy(logits: model.forward(tokens: tokens, batch: batch), targets: targets)
                model.backward(ce.gradient)
                return Tensor.zeros([0])
            })
            note("GPT \(what)\n\(report)")
            assertGradientsMatch(report, "GPT \(what)")
            XCTAssertEqual(report.entries.count, model.namedParameters.count)
        }
    }

    /// With top-1, the router must learn from the task loss, not only from the
    /// balancing loss: with α = 0 its gradient must still be non-zero. (A
    /// renormalised top-1 weight is p/p = 1, which would make it exactly zero.)
    func testTopOneRouterLearnsFromTheTask() {
        var rng = Xoshiro256(seed: 45)
        var config = tinyGPTConfig(moeLayers: [1], tie: true, topK: 1)
        config.routing.auxWeight = 0
        XCTAssertTrue(config.routing.renormalize, "asked for, but…")
        XCTAssertFalse(config.layerRouting.renormalize, "…not used with k = 1")
        XCTAssertTrue(tinyGPTConfig(moeLayers: [1], tie: true, topK: 2).layerRouting.renormalize)
        let model = GPT(config: config, rng: &rng)
        let tokens = (0..<10).map { _ in rng.below(11) }, targets = (0..<10).map { _ in rng.below(11) }
        model.zeroGrad()
        model.backward(GPT.crossEntropy(logits: model.forward(tokens: tokens, batch: 2), targets: targets).gradient)
        let router = model.moeLayers[0].moe.gate.weight.grad
        XCTAssertGreaterThan(router.data.map(abs).max()!, 1e-6, "the router got no gradient from the task")
    }

    /// Parameter counts from the formula: embedding V·C + T·C; per block 2·2C (two
    /// LayerNorms) + attention 3C² + 3C + C² + C + an MLP 2·C·H + H + C; final 2C;
    /// an untied head V·C. An MoE block has E MLPs and a router C·E + E, of which
    /// a token uses k MLPs and the router.
    func testParameterCounts() {
        let (v, t, c, h, e) = (11, 6, 8, 12, 4)
        let mlp = 2 * c * h + h + c, attention = 4 * c * c + 4 * c, router = c * e + e
        let block = 4 * c + attention + mlp
        var rng = Xoshiro256(seed: 42)
        let dense = GPT(config: tinyGPTConfig(moeLayers: [], tie: false), rng: &rng)
        XCTAssertEqual(dense.parameterCount, v * c + t * c + 2 * block + 2 * c + v * c)
        XCTAssertEqual(dense.activeParameterCount, dense.parameterCount)
        let moe = GPT(config: tinyGPTConfig(moeLayers: [1], tie: true), rng: &rng)
        XCTAssertEqual(moe.parameterCount, v * c + t * c + 2 * block + (e - 1) * mlp + router + 2 * c)
        XCTAssertEqual(moe.activeParameterCount, v * c + t * c + 2 * block + (2 - 1) * mlp + router + 2 * c)
        // Tied: the token table is listed once, and the head is that very tensor.
        XCTAssertTrue(moe.headWeight === moe.embedding.tokenTable)
        XCTAssertEqual(moe.namedParameters.filter { $0.parameter === moe.embedding.tokenTable }.count, 1)
        XCTAssertNil(moe.namedParameters.first { $0.name == "head.weight" })
        XCTAssertTrue(moe.namedParameters.contains { $0.name == "blocks.1.moe.experts.3.net.2.bias" })
        XCTAssertTrue(moe.namedParameters.contains { $0.name == "blocks.0.mlp.net.0.weight" })
        XCTAssertEqual(Set(moe.namedParameters.map(\.name)).count, moe.namedParameters.count, "names are unique")
    }

    /// At initialisation the logits are near 0, so the loss is near ln V (a uniform guess).
    func testInitialLossIsNearLogV() {
        var rng = Xoshiro256(seed: 43)
        var config = tinyGPTConfig(moeLayers: [1], tie: true)
        config.vocabularySize = 50
        let model = GPT(config: config, rng: &rng)
        let tokens = (0..<12).map { _ in rng.below(50) }, targets = (0..<12).map { _ in rng.below(50) }
        let loss = model.loss(tokens: tokens, targets: targets, batch: 2)
        // Logits of size ~0.02·√C·|x̂| ≈ 0.06 move the loss by a few hundredths at most.
        XCTAssertEqual(loss, Foundation.log(50.0), accuracy: 0.1)
    }

    func testSamplingIsSeededAndRespectsTopK() {
        let logits: [Float] = [0.1, 3, 2.9, -1, 0]
        var a = Xoshiro256(seed: 7), b = Xoshiro256(seed: 7)
        let drawsA = (0..<50).map { _ in GPT.sample(logits: logits, temperature: 1, topK: 2, rng: &a) }
        let drawsB = (0..<50).map { _ in GPT.sample(logits: logits, temperature: 1, topK: 2, rng: &b) }
        XCTAssertEqual(drawsA, drawsB)
        XCTAssertEqual(Set(drawsA), [1, 2], "top-2 keeps the two largest logits, and 50 draws see both")
        XCTAssertEqual(GPT.sample(logits: logits, temperature: 0, topK: 0, rng: &a), 1, "temperature 0 is argmax")

        var rng = Xoshiro256(seed: 44)
        let model = GPT(config: tinyGPTConfig(moeLayers: [1], tie: true), rng: &rng)
        var s1 = Xoshiro256(seed: 9), s2 = Xoshiro256(seed: 9)
        let g1 = model.generate(prompt: [1, 2, 3], count: 10, temperature: 0.8, topK: 5, rng: &s1)
        let g2 = model.generate(prompt: [1, 2, 3], count: 10, temperature: 0.8, topK: 5, rng: &s2)
        XCTAssertEqual(g1, g2)
        XCTAssertEqual(g1.count, 10, "longer than the context of 6: the window slides")
        XCTAssertTrue(g1.allSatisfy { (0..<11).contains($0) })
    }
}
