// CausalSelfAttention: each token gathers information from the tokens before it.
//
// The only place in a transformer where tokens talk to each other. For one
// sequence and one head, with X [T, C] the (normalised) token vectors:
//
//     Q = X·W_qᵀ, K = X·W_kᵀ, V = X·W_vᵀ     [T, hs]   query, key, value per token
//     S = Q·Kᵀ / √hs                          [T, T]    how well query i matches key j
//     S[i, j] = −∞ for j > i                            the causal mask: no peeking ahead
//     P = softmax(S) row by row               [T, T]    attention weights, rows sum to 1
//     O = P·V                                 [T, hs]   each token's weighted mix of values
//
// H heads do this side by side on slices of width hs = C/H, so each can attend
// to something different; their outputs are laid side by side again, [T, C],
// and mixed by an output projection. The 1/√hs keeps S's entries of order 1
// when Q and K have entries of order 1 (a dot of hs terms grows like √hs), so
// the softmax does not start out saturated.
//
// The mask is what makes this a *language model*: predicting token t+1 from
// position t must not see token t+1. With −∞ in S, exp gives exactly 0 in P,
// so the future contributes nothing to O and, in backward, receives no gradient.
// Here the masked entries are never exponentiated at all: the softmax of row i
// runs over j ≤ i and writes 0 to the rest.
//
// Every product is a call of the tiled `matmul`: per (sequence, head) pair,
// Q·Kᵀ, P·V forward and four products backward. The B·H pairs are independent,
// so they run in parallel, one thread each, writing disjoint slices.
// Derivation of the backward: Notebooks/part4-gpt.md, §4.
//
// Legend: B sequences, T positions, C model width, H heads, hs = C/H head size,
// N = B·T tokens.
import Foundation

/// Multi-head causal self-attention with a fused Q/K/V projection ("qkv", C → 3C)
/// and an output projection ("proj", C → C), as in GPT-2.
public final class CausalSelfAttention: Layer {
    public let width: Int
    public let heads: Int
    public var headSize: Int { width / heads }
    public let qkv: Linear    // W [3C, C], b [3C]: rows 0..<C make Q, C..<2C make K, 2C..<3C make V
    public let proj: Linear   // W [C, C], b [C]

    // Cached by forward, one entry per (sequence, head) pair i = b·H + h:
    private var queries: [Tensor] = []         // Q [T, hs]
    private var keys: [Tensor] = []            // K [T, hs]
    private var values: [Tensor] = []          // V [T, hs]
    private var probabilities: [Tensor] = []   // P [T, T], zero above the diagonal
    private var batch = 0, time = 0

    public init(width: Int, heads: Int, rng: inout Xoshiro256) {
        precondition(heads > 0 && width % heads == 0,
                     "CausalSelfAttention: width \(width) is not a multiple of \(heads) heads")
        self.width = width
        self.heads = heads
        qkv = Linear(inFeatures: width, outFeatures: 3 * width, rng: &rng)
        proj = Linear(inFeatures: width, outFeatures: width, rng: &rng)
    }

    public var namedParameters: [(name: String, parameter: Parameter)] {
        prefixed("qkv", qkv.namedParameters) + prefixed("proj", proj.namedParameters)
    }

    /// x [B, T, C] -> y [B, T, C]. Output row (b, t) depends on rows (b, 0...t) only.
    /// - Complexity: O(N·C²) for the projections, O(B·T²·C) for the heads.
    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rank == 3 && x.shape[2] == width,
                     "CausalSelfAttention(\(width)): input has shape \(x.shape), expected [B, T, \(width)]")
        let b = x.shape[0], t = x.shape[1], c = width, h = heads, hs = headSize
        batch = b; time = t
        let qkvOut = qkv.forward(x.reshaped([b * t, c]))   // [N, 3C]
        var attended = Tensor.zeros([b * t, c])              // the heads' O, side by side
        var q = [Tensor](repeating: .zeros([0, 0]), count: b * h), k = q, v = q, p = q
        let scale = 1 / Float(hs).squareRoot()
        qkvOut.data.withUnsafeBufferPointer { src in
            attended.data.withUnsafeMutableBufferPointer { dst in
                q.withUnsafeMutableBufferPointer { qs in
                k.withUnsafeMutableBufferPointer { ks in
                v.withUnsafeMutableBufferPointer { vs in
                p.withUnsafeMutableBufferPointer { ps in
                    Parallel.forEach(b * h) { i in
                        let rows = (i / h) * t, column = (i % h) * hs
                        let qi = Self.copyColumns(src.baseAddress!, stride: 3 * c, firstRow: rows, rows: t, column: column, count: hs)
                        let ki = Self.copyColumns(src.baseAddress!, stride: 3 * c, firstRow: rows, rows: t, column: c + column, count: hs)
                        let vi = Self.copyColumns(src.baseAddress!, stride: 3 * c, firstRow: rows, rows: t, column: 2 * c + column, count: hs)
                        var s = matmul(qi, ki, transposeB: true, threads: 1)   // S = Q·Kᵀ [T, T]
                        Self.causalSoftmax(&s, scale: scale)                    // P [T, T]
                        let o = matmul(s, vi, threads: 1)                       // O = P·V [T, hs]
                        Self.addColumns(o, into: dst.baseAddress!, stride: c, firstRow: rows, column: column)
                        qs[i] = qi; ks[i] = ki; vs[i] = vi; ps[i] = s
                    }
                }}}}
            }
        }
        queries = q; keys = k; values = v; probabilities = p
        return proj.forward(attended).reshaped([b, t, c])     // [N, C] -> [B, T, C]
    }

    /// In the forward pass, per (sequence, head): S = Q·Kᵀ·s (s = 1/√hs),
    /// P = causal-softmax(S), O = P·V. So now, from dO (the slice of the
    /// gradient reaching the heads' outputs):
    ///
    ///     dV = Pᵀ·dO                         [T, hs]   (O = P·V, the matmul rule)
    ///     dP = dO·Vᵀ                         [T, T]
    ///     dS = P ⊙ (dP − rowsum(P ⊙ dP))     [T, T]    (softmax backward; 0 where masked, as P is)
    ///     dQ = s · dS·K                      [T, hs]
    ///     dK = s · dSᵀ·Q                     [T, hs]
    ///
    /// dQ, dK, dV go back into the columns of dL/d(qkv) they came from, and the
    /// qkv projection's backward turns that into dL/dx. Caches Q, K, V and P per
    /// pair. dy [B, T, C] -> dx [B, T, C].
    public func backward(_ dy: Tensor) -> Tensor {
        precondition(dy.shape == [batch, time, width],
                     "CausalSelfAttention.backward: dy has shape \(dy.shape), forward output was [\(batch), \(time), \(width)]")
        let b = batch, t = time, c = width, h = heads, hs = headSize
        let scale = 1 / Float(hs).squareRoot()
        let dAttended = proj.backward(dy.reshaped([b * t, c]))   // dO of all heads, side by side [N, C]
        var dqkv = Tensor.zeros([b * t, 3 * c])
        dAttended.data.withUnsafeBufferPointer { src in
            dqkv.data.withUnsafeMutableBufferPointer { dst in
                Parallel.forEach(b * h) { i in
                    let rows = (i / h) * t, column = (i % h) * hs
                    let dO = Self.copyColumns(src.baseAddress!, stride: c, firstRow: rows, rows: t, column: column, count: hs)
                    let p = probabilities[i]
                    let dV = matmul(p, dO, transposeA: true, threads: 1)               // Pᵀ·dO [T, hs]
                    var dS = matmul(dO, values[i], transposeB: true, threads: 1)      // dP = dO·Vᵀ [T, T]
                    Self.softmaxBackwardInPlace(gradient: &dS, probabilities: p, scale: scale)  // dS·s
                    let dQ = matmul(dS, keys[i], threads: 1)                          // [T, hs]
                    let dK = matmul(dS, queries[i], transposeA: true, threads: 1)     // [T, hs]
                    Self.addColumns(dQ, into: dst.baseAddress!, stride: 3 * c, firstRow: rows, column: column)
                    Self.addColumns(dK, into: dst.baseAddress!, stride: 3 * c, firstRow: rows, column: c + column)
                    Self.addColumns(dV, into: dst.baseAddress!, stride: 3 * c, firstRow: rows, column: 2 * c + column)
                }
            }
        }
        return qkv.backward(dqkv).reshaped([b, t, c])
    }

    /// The attention weights P [T, T] of pair (sequence b, head h) from the last
    /// forward: row i is where token i looked. For inspection and tests.
    public func attentionWeights(sequence b: Int, head h: Int) -> Tensor { probabilities[b * heads + h] }

    // MARK: Kernels

    /// S ← causal-softmax(scale · S), row by row, in place.   S [T, T]
    /// Row i: pᵢⱼ = exp(scale·sᵢⱼ − m) / Σ_{k≤i} exp(scale·sᵢₖ − m) for j ≤ i, 0 for j > i,
    /// with m the row's largest scaled score over j ≤ i (the usual overflow guard).
    static func causalSoftmax(_ s: inout Tensor, scale: Float) {
        let t = s.shape[0]
        s.data.withUnsafeMutableBufferPointer { d in
            for i in 0..<t {
                let row = d.baseAddress! + i * t
                var m = -Float.infinity
                for j in 0...i { m = max(m, scale * row[j]) }
                var sum: Float = 0
                for j in 0...i { row[j] = exp(scale * row[j] - m); sum += row[j] }
                let inv = 1 / sum
                for j in 0...i { row[j] *= inv }
                for j in (i + 1)..<t { row[j] = 0 }
            }
        }
    }

    /// dS ← scale · P ⊙ (dP − rowsum(P ⊙ dP)), in place (dS holds dP on entry).
    /// Where P is 0 (the masked future) the result is 0.   [T, T]
    static func softmaxBackwardInPlace(gradient g: inout Tensor, probabilities p: Tensor, scale: Float) {
        let t = p.shape[0]
        g.data.withUnsafeMutableBufferPointer { d in
            p.data.withUnsafeBufferPointer { pp in
                for i in 0..<t {
                    let row = d.baseAddress! + i * t, prow = pp.baseAddress! + i * t
                    var dot: Float = 0
                    for j in 0...i { dot += prow[j] * row[j] }
                    for j in 0...i { row[j] = scale * prow[j] * (row[j] - dot) }
                    for j in (i + 1)..<t { row[j] = 0 }
                }
            }
        }
    }

    /// Rows firstRow..<firstRow+rows, columns column..<column+count of a row-major
    /// matrix with `stride` columns, copied into a contiguous [rows, count] tensor.
    static func copyColumns(_ m: UnsafePointer<Float>, stride: Int, firstRow: Int, rows: Int,
                            column: Int, count: Int) -> Tensor {
        var out = Tensor.zeros([rows, count])
        out.data.withUnsafeMutableBufferPointer { o in
            for r in 0..<rows {
                (o.baseAddress! + r * count).update(from: m + (firstRow + r) * stride + column, count: count)
            }
        }
        return out
    }

    /// The reverse of `copyColumns`, adding: m[firstRow + r, column + j] += block[r, j].
    static func addColumns(_ block: Tensor, into m: UnsafeMutablePointer<Float>, stride: Int, firstRow: Int, column: Int) {
        let rows = block.shape[0], count = block.shape[1]
        block.data.withUnsafeBufferPointer { b in
            for r in 0..<rows {
                let dst = m + (firstRow + r) * stride + column, src = b.baseAddress! + r * count
                for j in 0..<count { dst[j] += src[j] }
            }
        }
    }
}
