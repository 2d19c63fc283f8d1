// The attention heads are computed by the fused per-pair kernels of
// CausalSelfAttention.swift (`Head`), not by calls of `matmul`. This file keeps
// the plain version, six `matmul` calls per (sequence, head) pair as the
// formulas read, and checks that the two give the same floats, bit for bit,
// forward and backward, on gpt-moe's shape (T = 64, hs = 16) and on others
// with T ≤ 64 and hs < 32 (where the kernels promise the same order of
// additions as those `matmul` calls). Beyond that they are checked to agree
// to float rounding, and GPTLayerTests checks both against Double references
// and finite differences.
import XCTest
@testable import MoE

final class FusedAttentionTests: XCTestCase {

    /// The six products of one layer, as CausalSelfAttention computed them
    /// before the fused kernels: per pair, Q, K, V copied out of the qkv
    /// projection's output, S = Q·Kᵀ, P = causal-softmax(s·S), O = P·V; and
    /// backward dV = Pᵀ·dO, dP = dO·Vᵀ, dS, dQ = s·dS·K, dK = s·dSᵀ·Q.
    /// Uses the layer's own qkv and proj, so their weights and gradients are shared.
    struct MatmulAttention {
        let layer: CausalSelfAttention
        var q: [Tensor] = [], k: [Tensor] = [], v: [Tensor] = [], p: [Tensor] = []
        var shape = (b: 0, t: 0)

        init(_ layer: CausalSelfAttention) { self.layer = layer }

        /// Columns [column, column + count) of rows [first, first + rows) of m [*, stride].
        static func slice(_ m: Tensor, first: Int, rows: Int, column: Int, count: Int) -> Tensor {
            let stride = m.shape[1]
            var out = Tensor.zeros([rows, count])
            for r in 0..<rows { for j in 0..<count { out.data[r * count + j] = m.data[(first + r) * stride + column + j] } }
            return out
        }

        static func add(_ block: Tensor, into m: inout Tensor, first: Int, column: Int) {
            let stride = m.shape[1], (rows, count) = (block.shape[0], block.shape[1])
            for r in 0..<rows { for j in 0..<count { m.data[(first + r) * stride + column + j] += block.data[r * count + j] } }
        }

        mutating func forward(_ x: Tensor) -> Tensor {
            let (b, t, c, h, hs) = (x.shape[0], x.shape[1], layer.width, layer.heads, layer.headSize)
            shape = (b, t)
            let scale = 1 / Float(hs).squareRoot()
            let qkvOut = layer.qkv.forward(x.reshaped([b * t, c]))
            var attended = Tensor.zeros([b * t, c])
            q = []; k = []; v = []; p = []
            for i in 0..<(b * h) {
                let rows = (i / h) * t, column = (i % h) * hs
                let qi = Self.slice(qkvOut, first: rows, rows: t, column: column, count: hs)
                let ki = Self.slice(qkvOut, first: rows, rows: t, column: c + column, count: hs)
                let vi = Self.slice(qkvOut, first: rows, rows: t, column: 2 * c + column, count: hs)
                var s = matmul(qi, ki, transposeB: true, threads: 1)
                for r in 0..<t {   // the causal softmax, as the layer writes it
                    var m = -Float.infinity
                    for j in 0...r { m = max(m, scale * s[r, j]) }
                    var sum: Float = 0
                    for j in 0...r { s.data[r * t + j] = exp(scale * s[r, j] - m); sum += s[r, j] }
                    let inv = 1 / sum
                    for j in 0...r { s.data[r * t + j] *= inv }
                    for j in (r + 1)..<t { s.data[r * t + j] = 0 }
                }
                Self.add(matmul(s, vi, threads: 1), into: &attended, first: rows, column: column)
                q.append(qi); k.append(ki); v.append(vi); p.append(s)
            }
            return layer.proj.forward(attended).reshaped([b, t, c])
        }

        func backward(_ dy: Tensor) -> Tensor {
            let (b, t, c, h, hs) = (shape.b, shape.t, layer.width, layer.heads, layer.headSize)
            let scale = 1 / Float(hs).squareRoot()
            let dAttended = layer.proj.backward(dy.reshaped([b * t, c]))
            var dqkv = Tensor.zeros([b * t, 3 * c])
            for i in 0..<(b * h) {
                let rows = (i / h) * t, column = (i % h) * hs
                let dO = Self.slice(dAttended, first: rows, rows: t, column: column, count: hs)
                let dV = matmul(p[i], dO, transposeA: true, threads: 1)
                var dS = matmul(dO, v[i], transposeB: true, threads: 1)
                for r in 0..<t {   // softmax backward, as the layer writes it
                    var dot: Float = 0
                    for j in 0...r { dot += p[i][r, j] * dS[r, j] }
                    for j in 0...r { dS.data[r * t + j] = scale * p[i][r, j] * (dS[r, j] - dot) }
                    for j in (r + 1)..<t { dS.data[r * t + j] = 0 }
                }
                Self.add(matmul(dS, k[i], threads: 1), into: &dqkv, first: rows, column: column)
                Self.add(matmul(dS, q[i], transposeA: true, threads: 1), into: &dqkv, first: rows, column: c + column)
                Self.add(dV, into: &dqkv, first: rows, column: 2 * c + column)
            }
            return layer.qkv.backward(dqkv).reshaped([b, t, c])
        }
    }

    /// Output, input gradient and the four parameter gradients: by the fused
    /// kernels and by the six products, from the same weights, input and dy.
    private func bothWays(b: Int, t: Int, c: Int, h: Int, seed: UInt64)
        -> (fused: [[Float]], products: [[Float]]) {
        var rng = Xoshiro256(seed: seed)
        let layer = CausalSelfAttention(width: c, heads: h, rng: &rng)
        let x = Tensor.uniform([b, t, c], low: -1, high: 1, rng: &rng)
        let dy = Tensor.uniform([b, t, c], low: -1, high: 1, rng: &rng)
        func gradients() -> [[Float]] { layer.namedParameters.map { $0.parameter.grad.data } }

        layer.zeroGrad()
        var reference = MatmulAttention(layer)
        let y0 = reference.forward(x), dx0 = reference.backward(dy)
        let products = [y0.data, dx0.data] + gradients()

        layer.zeroGrad()
        let y1 = layer.forward(x), dx1 = layer.backward(dy)
        return ([y1.data, dx1.data] + gradients(), products)
    }

    private let names = ["output", "input gradient", "qkv.weight", "qkv.bias", "proj.weight", "proj.bias"]

    func testFusedAttentionEqualsTheMatmulProducts() {
        Parallel.threads = 1
        defer { Parallel.threads = ProcessInfo.processInfo.activeProcessorCount }
        // (B, T, C, H): gpt-moe's own layer first (T 64, hs 16), then sizes that
        // are not multiples of 16 in T or hs (hs 8, 24, 12), and T = 1.
        for (n, (b, t, c, h)) in [(2, 64, 64, 4), (1, 37, 32, 2), (2, 17, 16, 2), (1, 50, 48, 2),
                                  (1, 1, 16, 1), (3, 9, 36, 3)].enumerated() {
            let (fused, products) = bothWays(b: b, t: t, c: c, h: h, seed: 90 + UInt64(n))
            for (name, (f, p)) in zip(names, zip(fused, products)) {
                // `==` on floats: equal values (a zero's sign may differ, see Head.dotOrder).
                let first = zip(f, p).enumerated().first { $0.element.0 != $0.element.1 }
                XCTAssertNil(first, "B \(b) T \(t) C \(c) H \(h): \(name)[\(first?.offset ?? 0)] is \(first?.element.0 ?? 0), the products give \(first?.element.1 ?? 0)")
            }
        }
    }

    /// T > 64 and hs ≥ 32: there `matmul` picks its packed kernel for some of
    /// the products, whose order of additions differs, so the results agree to
    /// float rounding only.
    func testFusedAttentionAgreesBeyondTheDotKernelShapes() {
        Parallel.threads = 1
        defer { Parallel.threads = ProcessInfo.processInfo.activeProcessorCount }
        for (n, (b, t, c, h)) in [(1, 100, 64, 2), (2, 70, 64, 4), (1, 40, 96, 3)].enumerated() {
            let (fused, products) = bothWays(b: b, t: t, c: c, h: h, seed: 80 + UInt64(n))
            for (name, (f, p)) in zip(names, zip(fused, products)) {
                let scale = p.map { abs($0) }.max() ?? 1
                let worst = zip(f, p).map { abs($0 - $1) }.max() ?? 0
                XCTAssertLessThanOrEqual(worst, 1e-5 * max(scale, 1), "B \(b) T \(t) C \(c) H \(h): \(name) differs by \(worst) (largest value \(scale))")
            }
        }
    }
}
