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
// The B·H (sequence, head) pairs are independent, so they run in parallel,
// one pair per iteration of one parallel region for the forward pass and one
// for the backward, each writing disjoint slices. Derivation of the backward:
// Notebooks/part4-gpt.md, §4.
//
// How a pair is computed (`Head`, below). Its products are tiny (T = 64,
// hs = 16 in gpt-moe: a 64×16 by 16×64 product is 0.13 MFLOP), too small for
// the tiled `matmul`: calling it six times per pair spent more time on its
// horizontal sums, packing and allocations than on arithmetic, and attention
// took half of a GPT training step. So each pair works on its own small
// copies of Q, K, V in the layout that lets every product be written as
// broadcast-scalar × 16-wide row of the *output*: the result vectors are built
// in place and never summed across lanes. The mask is used to skip work:
// score blocks entirely above the diagonal are not computed, and the sums
// over keys of row i stop at key i.
//
// The additions happen in the same order as the `matmul` calls that this
// layer made before (gpt-moe's figures were measured with those), so the
// results are the same floats for T ≤ 64 and hs < 32; the test
// `testFusedAttentionEqualsTheMatmulProducts` checks it against those six
// calls. Sums over the head (S = Q·Kᵀ, dP = dO·Vᵀ) and over keys (O = P·V,
// dQ = dS·K) are taken in the dot-product kernel's order (Matmul+Dot.swift:
// 16 interleaved partial sums, a tree of halves, then the remainder); sums
// over queries (dV = Pᵀ·dO, dK = dSᵀ·Q) in the packed kernel's order, one
// fused multiply-add after another.
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

    // Cached by forward:
    private var projected = Tensor.zeros([0, 0])   // qkv's output [N, 3C]: row n is (Q | K | V) of token n
    private var probabilities: [Float] = []        // P of every pair i = b·H + h: [B·H, T, T], zero above the diagonal
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
        projected = qkv.forward(x.reshaped([b * t, c]))      // [N, 3C]
        var attended = Tensor.zeros([b * t, c])              // the heads' O, side by side
        if probabilities.count != b * h * t * t {            // reused from step to step
            probabilities = [Float](repeating: 0, count: b * h * t * t)
        }
        let scale = 1 / Float(hs).squareRoot()
        projected.data.withUnsafeBufferPointer { src in
            attended.data.withUnsafeMutableBufferPointer { dst in
                probabilities.withUnsafeMutableBufferPointer { pAll in
                    Parallel.forEach(b * h) { i in
                        let rows = (i / h) * t, column = (i % h) * hs
                        let qkvRows = src.baseAddress! + rows * 3 * c + column   // Q of the pair; K at +C, V at +2C
                        let p = pAll.baseAddress! + i * t * t
                        Head.withScratch(t: t, hs: hs) { head in
                            head.load(q: qkvRows, k: qkvRows + c, v: qkvRows + 2 * c, stride: 3 * c)
                            head.scores()                                     // S = Q·Kᵀ [T, T] (on and below the diagonal)
                            head.causalSoftmax(scale: scale, into: p)         // P [T, T]
                            head.attend(p, into: dst.baseAddress! + rows * c + column, stride: c)   // O = P·V [T, hs]
                        }
                    }
                }
            }
        }
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
    /// qkv projection's backward turns that into dL/dx. Uses the cached qkv
    /// output and P. dy [B, T, C] -> dx [B, T, C].
    public func backward(_ dy: Tensor) -> Tensor {
        precondition(dy.shape == [batch, time, width],
                     "CausalSelfAttention.backward: dy has shape \(dy.shape), forward output was [\(batch), \(time), \(width)]")
        let b = batch, t = time, c = width, h = heads, hs = headSize
        let scale = 1 / Float(hs).squareRoot()
        let dAttended = proj.backward(dy.reshaped([b * t, c]))   // dO of all heads, side by side [N, C]
        var dqkv = Tensor.zeros([b * t, 3 * c])
        projected.data.withUnsafeBufferPointer { src in
            dAttended.data.withUnsafeBufferPointer { dO in
                dqkv.data.withUnsafeMutableBufferPointer { dst in
                    probabilities.withUnsafeBufferPointer { pAll in
                        Parallel.forEach(b * h) { i in
                            let rows = (i / h) * t, column = (i % h) * hs
                            let qkvRows = src.baseAddress! + rows * 3 * c + column
                            let out = dst.baseAddress! + rows * 3 * c + column    // dQ here, dK at +C, dV at +2C
                            let p = pAll.baseAddress! + i * t * t
                            Head.withScratch(t: t, hs: hs) { head in
                                head.load(q: qkvRows, k: qkvRows + c, v: qkvRows + 2 * c, stride: 3 * c)
                                head.loadGradient(dO.baseAddress! + rows * c + column, stride: c)
                                head.valueGradient(p, into: out + 2 * c, stride: 3 * c)   // dV = Pᵀ·dO
                                head.scoreGradient(p, scale: scale)                      // dS·s, from dP = dO·Vᵀ
                                head.queryGradient(into: out, stride: 3 * c)             // dQ = (dS·s)·K
                                head.keyGradient(into: out + c, stride: 3 * c)           // dK = (dS·s)ᵀ·Q
                            }
                        }
                    }
                }
            }
        }
        return qkv.backward(dqkv).reshaped([b, t, c])
    }

    /// The attention weights P [T, T] of pair (sequence b, head h) from the last
    /// forward: row i is where token i looked. For inspection and tests.
    public func attentionWeights(sequence b: Int, head h: Int) -> Tensor {
        let start = (b * heads + h) * time * time
        return Tensor(shape: [time, time], data: Array(probabilities[start..<(start + time * time)]))
    }
}

// MARK: - One (sequence, head) pair

/// The working copies of one (sequence, head) pair and the kernels on them.
///
/// Layout, chosen so that every product is a broadcast scalar times a 16-wide
/// row of its output (V = SIMD16<Float>):
///   q, k, v, dO   [T, hsPad]   rows of hs values, zero-padded to a multiple of 16
///   kT, vT        [hs, tPad]   Kᵀ and Vᵀ, rows zero-padded to a multiple of 16
///   s             [T, tPad]    scores S, then dP and dS·s in backward
/// Padding makes every 16-wide load and store stay inside its buffer; padded
/// lanes hold zeros and are never written back.
struct Head {
    typealias V = SIMD16<Float>
    let t: Int, hs: Int, hsPad: Int, tPad: Int
    let q: UnsafeMutablePointer<Float>, k: UnsafeMutablePointer<Float>, v: UnsafeMutablePointer<Float>
    let dO: UnsafeMutablePointer<Float>
    let kT: UnsafeMutablePointer<Float>, vT: UnsafeMutablePointer<Float>
    let s: UnsafeMutablePointer<Float>

    /// Runs `body` with zeroed scratch buffers for a pair of T positions and head size hs
    /// (on the stack when small: no allocation per pair in a step).
    static func withScratch(t: Int, hs: Int, _ body: (Head) -> Void) {
        let hsPad = (hs + 15) / 16 * 16, tPad = (t + 15) / 16 * 16
        let rowsSize = t * hsPad, transposedSize = hs * tPad, scoresSize = t * tPad
        let total = 4 * rowsSize + 2 * transposedSize + scoresSize
        withUnsafeTemporaryAllocation(of: Float.self, capacity: total) { buffer in
            let base = buffer.baseAddress!
            base.initialize(repeating: 0, count: total)
            body(Head(t: t, hs: hs, hsPad: hsPad, tPad: tPad,
                      q: base, k: base + rowsSize, v: base + 2 * rowsSize, dO: base + 3 * rowsSize,
                      kT: base + 4 * rowsSize, vT: base + 4 * rowsSize + transposedSize,
                      s: base + 4 * rowsSize + 2 * transposedSize))
        }
    }

    @inline(__always) static func load(_ p: UnsafePointer<Float>) -> V {
        UnsafeRawPointer(p).loadUnaligned(as: V.self)
    }

    /// Stores the first `count` (≤ 16) lanes of x at p.
    @inline(__always) static func store(_ x: V, count: Int, to p: UnsafeMutablePointer<Float>) {
        if count == 16 { UnsafeMutableRawPointer(p).storeBytes(of: x, as: V.self); return }
        for l in 0..<count { p[l] = x[l] }
    }

    /// Copies the pair's Q, K, V (T rows of hs values, `stride` apart) into q, k,
    /// v, and K and V transposed into kT, vT.
    func load(q qs: UnsafePointer<Float>, k ks: UnsafePointer<Float>, v vs: UnsafePointer<Float>, stride: Int) {
        for r in 0..<t {
            (q + r * hsPad).update(from: qs + r * stride, count: hs)
            (k + r * hsPad).update(from: ks + r * stride, count: hs)
            (v + r * hsPad).update(from: vs + r * stride, count: hs)
            for d in 0..<hs {
                kT[d * tPad + r] = ks[r * stride + d]
                vT[d * tPad + r] = vs[r * stride + d]
            }
        }
    }

    /// Copies dO of the pair (T rows of hs values, `stride` apart) into dO.
    func loadGradient(_ g: UnsafePointer<Float>, stride: Int) {
        for r in 0..<t { (dO + r * hsPad).update(from: g + r * stride, count: hs) }
    }

    /// Σ_{r < count} a[r·aStride] · b[r·ldb ..< r·ldb + 16], summed in the order
    /// of the dot-product kernel (Matmul+Dot.swift) over a sum of length `count`:
    /// lane l of 16 accumulates terms r = l, l + 16, l + 32, … by fused
    /// multiply-adds (below `stop`: the terms from `stop` on are known to be 0,
    /// and adding a 0 changes no value, at most the sign of a zero sum);
    /// the 16 partial sums are added in a tree of halves (l + 8, then l + 4, l + 2,
    /// l + 1); the count % 16 remaining terms are then added one by one.
    /// Each "lane" here is a whole vector of 16 outputs, so no sum crosses lanes.
    @inline(__always)
    static func dotOrder(count: Int, stop: Int, a: UnsafePointer<Float>, aStride: Int,
                         b: UnsafePointer<Float>, ldb: Int) -> V {
        let main = count & ~15
        return withUnsafeTemporaryAllocation(of: V.self, capacity: 16) { partial in
            let end = min(main, stop)
            for l in 0..<16 {
                var sum = V()
                var r = l
                while r < end { sum.addProduct(V(repeating: a[r * aStride]), load(b + r * ldb)); r += 16 }
                partial[l] = sum
            }
            for l in 0..<8 { partial[l] += partial[l + 8] }
            for l in 0..<4 { partial[l] += partial[l + 4] }
            for l in 0..<2 { partial[l] += partial[l + 2] }
            var total = partial[0] + partial[1]
            var r = main
            while r < min(count, stop) { total += V(repeating: a[r * aStride]) * load(b + r * ldb); r += 1 }
            return total
        }
    }

    /// S = Q·Kᵀ into s: for each row i only the 16-wide blocks that reach j ≤ i
    /// (the rest would be masked). Sums over the head, in the dot kernel's order.
    func scores() { lowerBlocks(rows: q, transposed: kT) }

    /// s[i, j] = rows[i] · (columns of `transposed`)[j] for the 16-wide blocks of
    /// j that reach j ≤ i: a product of two [T, hs] matrices, one given as its
    /// transpose [hs, tPad], summed over hs in the dot kernel's order.
    func lowerBlocks(rows a: UnsafePointer<Float>, transposed bT: UnsafePointer<Float>) {
        for i in 0..<t {
            var j0 = 0
            while j0 <= i {
                let block = Head.dotOrder(count: hs, stop: hs, a: a + i * hsPad, aStride: 1, b: bT + j0, ldb: tPad)
                Head.store(block, count: 16, to: s + i * tPad + j0)
                j0 += 16
            }
        }
    }

    /// P ← causal-softmax(scale · S), row by row, from s into p [T, T].
    /// Row i: pᵢⱼ = exp(scale·sᵢⱼ − m) / Σ_{k≤i} exp(scale·sᵢₖ − m) for j ≤ i, 0 for j > i,
    /// with m the row's largest scaled score over j ≤ i (the usual overflow guard).
    func causalSoftmax(scale: Float, into p: UnsafeMutablePointer<Float>) {
        for i in 0..<t {
            let scoresRow = s + i * tPad, row = p + i * t
            // The row's largest scaled score, 16 at a time: a maximum is the same
            // whichever order the values are compared in.
            var largest = V(repeating: -.infinity)
            var j = 0
            while j + 16 <= i + 1 { largest = pointwiseMax(largest, scale * Head.load(scoresRow + j)); j += 16 }
            var m = largest.max()
            while j <= i { m = max(m, scale * scoresRow[j]); j += 1 }
            var sum: Float = 0
            for j in 0...i { row[j] = exp(scale * scoresRow[j] - m); sum += row[j] }
            let inv = 1 / sum
            for j in 0...i { row[j] *= inv }
            for j in (i + 1)..<t { row[j] = 0 }
        }
    }

    /// O = P·V, written to `out` (T rows, `stride` apart). Row i sums over keys
    /// j ≤ i (P is 0 beyond), in the dot kernel's order over all T keys.
    func attend(_ p: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, stride: Int) {
        causalProduct(weights: p, weightStride: t, rows: v, into: out, stride: stride)
    }

    /// out[i] = Σ_{j ≤ i} w[i, j] · rows[j], for i < T: a lower-triangular [T, T]
    /// matrix times [T, hs] rows, summed over j in the dot kernel's order over
    /// all T (the terms j > i are 0 and skipped; see `dotOrder`).
    func causalProduct(weights w: UnsafePointer<Float>, weightStride: Int, rows: UnsafePointer<Float>,
                       into out: UnsafeMutablePointer<Float>, stride: Int) {
        for i in 0..<t {
            var d0 = 0
            while d0 < hs {
                let o = Head.dotOrder(count: t, stop: i + 1, a: w + i * weightStride, aStride: 1, b: rows + d0, ldb: hsPad)
                Head.store(o, count: min(16, hs - d0), to: out + i * stride + d0)
                d0 += 16
            }
        }
    }

    /// dV = Pᵀ·dO, written to `out`: row j sums pᵢⱼ·dOᵢ over queries i ≥ j (P is
    /// 0 for i < j), one fused multiply-add after another in i.
    func valueGradient(_ p: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, stride: Int) {
        Head.transposedChain(t: t, hs: hs, hsPad: hsPad, weights: p, weightStride: t, rows: dO, into: out, stride: stride)
    }

    /// dP = dO·Vᵀ into s (the blocks on and below the diagonal), then, in place,
    /// dS·s = scale · P ⊙ (dP − rowsum(P ⊙ dP)) for j ≤ i. Entries above the
    /// diagonal are left as they are: dS is 0 there, and nothing reads them.
    func scoreGradient(_ p: UnsafePointer<Float>, scale: Float) {
        lowerBlocks(rows: dO, transposed: vT)
        for i in 0..<t {
            let row = s + i * tPad, prow = p + i * t
            var dot: Float = 0
            for j in 0...i { dot += prow[j] * row[j] }
            for j in 0...i { row[j] = scale * prow[j] * (row[j] - dot) }
        }
    }

    /// dQ = (dS·s)·K, written to `out`; row i sums over keys j ≤ i in the dot
    /// kernel's order over all T keys, like O = P·V.
    func queryGradient(into out: UnsafeMutablePointer<Float>, stride: Int) {
        causalProduct(weights: s, weightStride: tPad, rows: k, into: out, stride: stride)
    }

    /// dK = (dS·s)ᵀ·Q, written to `out`: row j sums dSᵢⱼ·Qᵢ over queries i ≥ j,
    /// one fused multiply-add after another in i.
    func keyGradient(into out: UnsafeMutablePointer<Float>, stride: Int) {
        Head.transposedChain(t: t, hs: hs, hsPad: hsPad, weights: s, weightStride: tPad, rows: q, into: out, stride: stride)
    }

    /// out[j] = Σ_{i ≥ j} w[i, j] · rows[i], for j < T, as the packed kernel sums
    /// (Matmul.swift): one fused multiply-add per i, in increasing i, from 0.
    /// The terms i < j are skipped: their weights are masked zeros, and adding
    /// 0 to a sum that starts at +0 changes no bit.
    static func transposedChain(t: Int, hs: Int, hsPad: Int, weights w: UnsafePointer<Float>, weightStride: Int,
                                rows: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, stride: Int) {
        for j in 0..<t {
            var d0 = 0
            while d0 < hs {
                var sum = V()
                for i in j..<t { sum.addProduct(V(repeating: w[i * weightStride + j]), load(rows + i * hsPad + d0)) }
                store(sum, count: min(16, hs - d0), to: out + j * stride + d0)
                d0 += 16
            }
        }
    }
}
