// The GPT's new layers: Embedding, LayerNorm and CausalSelfAttention, each
// against finite differences (tolerance `gradientTolerance`, GradientCheckTests.swift)
// and against a plain reference written a second time in Double, micrograd style;
// plus the property that makes attention causal.
import XCTest
@testable import MoE

final class GPTLayerTests: XCTestCase {

    // MARK: LayerNorm

    /// Reference: the formula of LayerNorm.swift, in Double, one row at a time.
    private func referenceLayerNorm(_ x: Tensor, gamma: [Float], beta: [Float], epsilon: Double = 1e-5) -> [Double] {
        let c = x.cols
        var out: [Double] = []
        for n in 0..<(x.count / c) {
            let row = (0..<c).map { Double(x.data[n * c + $0]) }
            let mean = row.reduce(0, +) / Double(c)
            let variance = row.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(c)
            for j in 0..<c { out.append(Double(gamma[j]) * (row[j] - mean) / (variance + epsilon).squareRoot() + Double(beta[j])) }
        }
        return out
    }

    func testLayerNormMatchesTheReference() {
        var rng = Xoshiro256(seed: 30)
        for (rows, c) in [(1, 1), (1, 2), (3, 5), (4, 16), (2, 33)] {
            let norm = LayerNorm(width: c)
            norm.weight.value = .uniform([c], low: 0.5, high: 1.5, rng: &rng)
            norm.bias.value = .uniform([c], low: -0.5, high: 0.5, rng: &rng)
            // An offset of 100: the two-pass variance must not lose the small spread.
            var x = Tensor.uniform([rows, c], low: -1, high: 1, rng: &rng)
            for i in 0..<x.count { x.data[i] += 100 }
            let y = norm.forward(x)
            let expected = referenceLayerNorm(x, gamma: norm.weight.value.data, beta: norm.bias.value.data)
            let worst = zip(y.data, expected).map { abs(Double($0) - $1) }.max() ?? 0
            // Float: x − μ loses ~100·6e-8 absolute, then scaled by r ≈ 1/σ ≈ 2: a few 1e-5.
            XCTAssertLessThan(worst, 1e-4, "[\(rows), \(c)]")
        }
    }

    /// LayerNorm.forward sums four rows side by side and splits a large batch
    /// between threads; neither may change a number. Against the same Float
    /// formula one row at a time, bit for bit, on 2,051 rows (a last group of
    /// three) with 1, 2 and 3 threads.
    func testLayerNormRowsSideBySideGiveTheOneRowNumbers() {
        let rows = 2051, c = 64
        XCTAssertGreaterThanOrEqual(rows * c, LayerNorm.parallelThreshold, "the split path must run")
        var rng = Xoshiro256(seed: 32)
        let norm = LayerNorm(width: c)
        norm.weight.value = .uniform([c], low: 0.5, high: 1.5, rng: &rng)
        norm.bias.value = .uniform([c], low: -0.5, high: 0.5, rng: &rng)
        let x = Tensor.uniform([rows, c], low: -3, high: 3, rng: &rng)
        var expected = [Float]()
        for n in 0..<rows {
            let row = Array(x.data[(n * c)..<((n + 1) * c)])
            var mean: Float = 0
            for v in row { mean += v }
            mean /= Float(c)
            var variance: Float = 0
            for v in row { let d = v - mean; variance += d * d }
            variance /= Float(c)
            let r = 1 / (variance + norm.epsilon).squareRoot()
            for j in 0..<c { expected.append(norm.weight.value.data[j] * ((row[j] - mean) * r) + norm.bias.value.data[j]) }
        }
        let saved = Parallel.threads
        defer { Parallel.threads = saved }
        for threads in [1, 2, 3] {
            Parallel.threads = threads
            let y = norm.forward(x)
            XCTAssertTrue(y.data.map(\.bitPattern) == expected.map(\.bitPattern), "\(threads) threads")
        }
    }

    func testLayerNormGradient() {
        var rng = Xoshiro256(seed: 31)
        let norm = LayerNorm(width: 6)
        // γ and β away from their initial 1 and 0, so a γ/β mix-up would show.
        norm.weight.value = .uniform([6], low: 0.5, high: 1.5, rng: &rng)
        norm.bias.value = .uniform([6], low: -0.5, high: 0.5, rng: &rng)
        let x = Tensor.uniform([2, 3, 6], low: -2, high: 2, rng: &rng)   // rank 3: rows are (b, t)
        let report = GradientCheck.check(norm, input: x)
        note(report)
        assertGradientsMatch(report, "LayerNorm")
        XCTAssertEqual(report.entries.map(\.name), ["input", "weight", "bias"])
    }

    // MARK: GELU's tanh

    /// `fastTanh` and `fastExp` (Activations.swift) against the C library in Double,
    /// on a grid of 2²⁰ points and at the ends of the range.
    func testFastTanhAndExpAccuracy() {
        func lanes(_ values: [Float], _ f: (SIMD16<Float>) -> SIMD16<Float>) -> [Float] {
            stride(from: 0, to: values.count, by: 16).flatMap { i -> [Float] in
                var v = SIMD16<Float>()
                for j in 0..<min(16, values.count - i) { v[j] = values[i + j] }
                let r = f(v)
                return (0..<min(16, values.count - i)).map { r[$0] }
            }
        }
        let n = 1 << 20
        let tanhInputs = (0..<n).map { Float(-20 + 40 * Double($0) / Double(n - 1)) } + [0, -0.0, 1e-30, 100, -100, 1e30, -1e30]
        let tanhOut = lanes(tanhInputs, fastTanh)
        let tanhError = zip(tanhInputs, tanhOut).map { abs(Double($1) - Foundation.tanh(Double($0))) }.max()!
        let expInputs = (0..<n).map { Float(-87 + 175 * Double($0) / Double(n - 1)) }
        let expOut = lanes(expInputs, fastExp)
        let expError = zip(expInputs, expOut).map { abs(Double($1) / Foundation.exp(Double($0)) - 1) }.max()!
        note(String(format: "fastTanh max abs error %.3e on [-20, 20]; fastExp max rel error %.3e on [-87, 88]",
                     tanhError, expError))
        // A Float has 2⁻²⁴ ≈ 6e-8 relative spacing: allow a few units in the last place.
        XCTAssertLessThan(tanhError, 4e-7)
        XCTAssertLessThan(expError, 4e-7)
        XCTAssertEqual(Array(tanhOut.suffix(4)), [1, -1, 1, -1], "saturates to exactly ±1")
        XCTAssertTrue(tanhOut.allSatisfy { $0.isFinite && abs($0) <= 1 })
    }

    // MARK: Embedding

    func testEmbeddingLooksUpAndAddsPositions() {
        var rng = Xoshiro256(seed: 32)
        let embed = Embedding(vocabularySize: 5, contextLength: 4, width: 3, rng: &rng)
        let x = embed.forward(tokens: [4, 0, 4, 1, 1, 2], batch: 2)   // two sequences of 3
        XCTAssertEqual(x.shape, [2, 3, 3])
        for (n, token) in [4, 0, 4, 1, 1, 2].enumerated() {
            for j in 0..<3 {
                XCTAssertEqual(x.data[n * 3 + j], embed.tokenTable.value[token, j] + embed.positionTable.value[n % 3, j])
            }
        }
    }

    func testEmbeddingGradient() {
        var rng = Xoshiro256(seed: 33)
        let embed = Embedding(vocabularySize: 6, contextLength: 5, width: 4, rng: &rng)
        let tokens = [2, 5, 2, 2, 0, 1, 5, 3]   // repeats: their rows must collect every use
        let r = Tensor.uniform([2, 4, 4], low: -1, high: 1, rng: &rng)
        let report = GradientCheck.check(parameters: embed.namedParameters, input: nil, loss: { _ in
            GradientCheck.dot(embed.forward(tokens: tokens, batch: 2), r)
        }, backward: { _ in
            _ = embed.forward(tokens: tokens, batch: 2)
            embed.backward(r)
            return Tensor.zeros([0])
        })
        note(report)
        assertGradientsMatch(report, "Embedding")
        // Token 4 never occurs, position 4 is beyond T = 4: both rows get exactly nothing.
        XCTAssertEqual(Array(embed.tokenTable.grad.data[16..<20]), [0, 0, 0, 0])
        XCTAssertEqual(Array(embed.positionTable.grad.data[16..<20]), [0, 0, 0, 0])
    }

    // MARK: Attention

    /// Reference attention in Double with explicit loops: the definition, no matmul,
    /// no masking trick (future scores are skipped by the loop bound).
    private func referenceAttention(_ layer: CausalSelfAttention, _ x: Tensor) -> [Double] {
        let (b, t, c, h) = (x.shape[0], x.shape[1], layer.width, layer.heads)
        let hs = c / h
        let wq = layer.qkv.weight.value, bq = layer.qkv.bias!.value
        func project(_ row: Int, _ out: Int) -> Double {   // (x·W_qkvᵀ + b)[row, out]
            var s = Double(bq.data[out])
            for j in 0..<c { s += Double(x.data[row * c + j]) * Double(wq[out, j]) }
            return s
        }
        var heads = [Double](repeating: 0, count: b * t * c)
        for seq in 0..<b {
            for head in 0..<h {
                for i in 0..<t {
                    let q = (0..<hs).map { project(seq * t + i, head * hs + $0) }
                    var scores: [Double] = []
                    for j in 0...i {
                        let k = (0..<hs).map { project(seq * t + j, c + head * hs + $0) }
                        scores.append(zip(q, k).map(*).reduce(0, +) / Double(hs).squareRoot())
                    }
                    let m = scores.max()!
                    let e = scores.map { Foundation.exp($0 - m) }
                    let sum = e.reduce(0, +)
                    for j in 0...i {
                        for d in 0..<hs {
                            heads[(seq * t + i) * c + head * hs + d] += e[j] / sum * project(seq * t + j, 2 * c + head * hs + d)
                        }
                    }
                }
            }
        }
        let wp = layer.proj.weight.value, bp = layer.proj.bias!.value
        var out: [Double] = []
        for row in 0..<(b * t) {
            for o in 0..<c {
                var s = Double(bp.data[o])
                for j in 0..<c { s += heads[row * c + j] * Double(wp[o, j]) }
                out.append(s)
            }
        }
        return out
    }

    func testAttentionMatchesTheReference() {
        var rng = Xoshiro256(seed: 34)
        for (b, t, c, h) in [(1, 1, 4, 1), (2, 3, 8, 2), (1, 7, 12, 3), (3, 9, 16, 4)] {
            let layer = CausalSelfAttention(width: c, heads: h, rng: &rng)
            let x = Tensor.uniform([b, t, c], low: -1, high: 1, rng: &rng)
            let y = layer.forward(x)
            XCTAssertEqual(y.shape, [b, t, c])
            let worst = zip(y.data, referenceAttention(layer, x)).map { abs(Double($0) - $1) }.max() ?? 0
            // Float products of length ≤ 16 on values of order 1: ~1e-6.
            XCTAssertLessThan(worst, 1e-5, "B \(b) T \(t) C \(c) H \(h)")
            // Attention weights: rows sum to 1, nothing above the diagonal.
            let p = layer.attentionWeights(sequence: b - 1, head: h - 1)
            for i in 0..<t {
                XCTAssertEqual((0..<t).reduce(Float(0)) { $0 + p[i, $1] }, 1, accuracy: 1e-5)
                for j in (i + 1)..<t { XCTAssertEqual(p[i, j], 0) }
            }
        }
    }

    func testAttentionGradient() {
        var rng = Xoshiro256(seed: 35)
        let layer = CausalSelfAttention(width: 8, heads: 2, rng: &rng)
        let x = Tensor.uniform([2, 5, 8], low: -1, high: 1, rng: &rng)
        let report = GradientCheck.check(layer, input: x)
        note(report)
        assertGradientsMatch(report, "CausalSelfAttention")
        XCTAssertEqual(report.entries.map(\.name), ["input", "qkv.weight", "qkv.bias", "proj.weight", "proj.bias"])
    }

    /// Causality: changing tokens t+1… must leave outputs 0…t untouched, exactly.
    /// Exactly, not approximately: masked weights are exactly 0, so the changed
    /// values enter the sums only as 0·v = 0, and every row's arithmetic is
    /// otherwise the same. And the gradient must not flow backwards in time:
    /// a loss on output t gives input rows after t a zero gradient.
    func testAttentionIsCausal() {
        var rng = Xoshiro256(seed: 36)
        let layer = CausalSelfAttention(width: 8, heads: 2, rng: &rng)
        let (t, c) = (6, 8)
        let x = Tensor.uniform([1, t, c], low: -1, high: 1, rng: &rng)
        let before = layer.forward(x)
        for cut in 0..<t {
            var changed = x
            for i in ((cut + 1) * c)..<(t * c) { changed.data[i] = rng.uniform(-3, 3) }
            let after = layer.forward(changed)
            XCTAssertEqual(Array(after.data[0..<((cut + 1) * c)]), Array(before.data[0..<((cut + 1) * c)]),
                           "changing positions after \(cut) changed an output at or before it")
            if cut + 1 < t { XCTAssertNotEqual(Array(after.data[((cut + 1) * c)...]), Array(before.data[((cut + 1) * c)...])) }
        }
        for target in 0..<t {
            _ = layer.forward(x)
            var dy = Tensor.zeros([1, t, c])
            for j in 0..<c { dy.data[target * c + j] = 1 }
            let dx = layer.backward(dy)
            XCTAssertTrue(dx.data[((target + 1) * c)...].allSatisfy { $0 == 0 }, "gradient leaked to the future of \(target)")
            XCTAssertTrue(dx.data[0..<((target + 1) * c)].contains { $0 != 0 })
        }
    }

    /// The whole GPT is causal too: logits at position t do not depend on later tokens.
    func testModelIsCausal() {
        var rng = Xoshiro256(seed: 37)
        var config = GPTConfig()
        config.vocabularySize = 13; config.contextLength = 8; config.width = 16; config.heads = 2
        config.hidden = 24; config.layers = 2; config.moeLayers = [1]; config.experts = 3; config.routing.k = 1
        let model = GPT(config: config, rng: &rng)
        assertCausal(model, rng: &rng, "the GPT with a top-1 MoE block")
    }
}

import Foundation
