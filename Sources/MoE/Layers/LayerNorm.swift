// LayerNorm: give every token's vector mean 0 and variance 1, then let the
// model rescale it (Ba, Kiros & Hinton 2016).
//
// For one row x of C numbers (one token's vector):
//
//     μ    = (1/C) Σⱼ xⱼ                     the row's mean
//     σ²   = (1/C) Σⱼ (xⱼ − μ)²              its (biased) variance
//     r    = 1 / √(σ² + ε)                   "rstd", cached for backward
//     x̂ⱼ   = (xⱼ − μ) · r                    normalised: mean 0, variance ≈ 1
//     yⱼ   = γⱼ · x̂ⱼ + βⱼ                    learned scale γ and shift β, per channel
//
// Why a transformer needs it: the residual stream x ← x + f(x) grows as blocks
// add to it, and a sublayer's input scale would drift with depth. Normalising
// each sublayer's *input* (pre-LN, as GPT-2 does) keeps every sublayer seeing
// numbers of the same size, which is what lets a stack train without warm-up
// tricks. ε = 1e-5 (PyTorch's default) keeps r finite for a constant row.
//
// Every row is normalised on its own, so the layer works on any shape and
// treats all leading dimensions as rows: [N, C] or [B, T, C].
// Derivation of the backward: Notebooks/part4-gpt.md, §3.
//
// Legend: N rows (tokens), C channels (the model width).
import Foundation

/// Layer normalisation over the last dimension, with learned γ ("weight") and β ("bias").
public final class LayerNorm: Layer {
    public let width: Int
    public let epsilon: Float
    public let weight: Parameter   // γ [C], starts at 1: the identity after normalising
    public let bias: Parameter     // β [C], starts at 0
    private var normalised = Tensor.zeros([0])   // x̂, same shape as the input, cached
    private var rstd: [Float] = []               // r per row [N], cached

    public init(width: Int, epsilon: Float = 1e-5) {
        precondition(width > 0, "LayerNorm: width must be positive, got \(width)")
        self.width = width
        self.epsilon = epsilon
        weight = Parameter(Tensor(shape: [width], repeating: 1))
        bias = Parameter(Tensor.zeros([width]))
    }

    public var namedParameters: [(name: String, parameter: Parameter)] {
        [("weight", weight), ("bias", bias)]
    }

    /// y = γ ⊙ (x − μ)·r + β per row.   x [..., C] -> y [..., C]
    public func forward(_ x: Tensor) -> Tensor {
        precondition(x.rank >= 1 && x.cols == width,
                     "LayerNorm(\(width)): input has shape \(x.shape), expected [..., \(width)]")
        let c = width, rows = x.count / c
        var xhat = x
        var y = x
        var r = [Float](repeating: 0, count: rows)
        // Rows are independent: a GPT batch (2,048 × 64) is split between threads.
        let blocks = x.count >= LayerNorm.parallelThreshold ? max(1, min(rows, Parallel.threads)) : 1
        xhat.data.withUnsafeMutableBufferPointer { xh in
            y.data.withUnsafeMutableBufferPointer { out in
                r.withUnsafeMutableBufferPointer { rs in
                    weight.value.data.withUnsafeBufferPointer { gamma in
                        bias.value.data.withUnsafeBufferPointer { beta in
                            Parallel.forEach(blocks) { b in
                                LayerNorm.normalise(rows: (b * rows / blocks)..<((b + 1) * rows / blocks), width: c,
                                                    epsilon: epsilon, x: xh.baseAddress!, y: out.baseAddress!,
                                                    rstd: rs.baseAddress!, gamma: gamma.baseAddress!, beta: beta.baseAddress!)
                            }
                        }
                    }
                }
            }
        }
        rstd = r
        normalised = xhat
        return y
    }

    /// At least this many values are split between threads (2¹⁷, a GPT batch; a
    /// parallel region costs tens of µs, README "Speed").
    static let parallelThreshold = 1 << 17

    /// Normalises `rows` of x in place into x̂, writes y and r. Four rows at a
    /// time: each row's sums run in the order of that row alone, from 0, but the
    /// four run side by side in the lanes of a SIMD4 — one running sum waits for
    /// each addition before the next, four overlap — so the numbers are those of
    /// one row at a time.
    static func normalise(rows: Range<Int>, width c: Int, epsilon: Float, x: UnsafeMutablePointer<Float>,
                          y: UnsafeMutablePointer<Float>, rstd: UnsafeMutablePointer<Float>,
                          gamma: UnsafePointer<Float>, beta: UnsafePointer<Float>) {
        var n = rows.lowerBound
        while n < rows.upperBound {
            let lanes = min(4, rows.upperBound - n)
            // Row n + l in lane l; a short last group repeats its first row.
            let p0 = x + n * c, p1 = lanes > 1 ? p0 + c : p0, p2 = lanes > 2 ? p0 + 2 * c : p0, p3 = lanes > 3 ? p0 + 3 * c : p0
            var mean = SIMD4<Float>(repeating: 0)
            for j in 0..<c { mean += SIMD4(p0[j], p1[j], p2[j], p3[j]) }
            mean /= SIMD4(repeating: Float(c))
            // The variance from the centred values (two passes), not
            // E[x²] − μ², which cancels catastrophically when |μ| ≫ σ.
            var variance = SIMD4<Float>(repeating: 0)
            for j in 0..<c {
                let d = SIMD4(p0[j], p1[j], p2[j], p3[j]) - mean
                variance += d * d
            }
            variance /= SIMD4(repeating: Float(c))
            let r = 1 / (variance + SIMD4(repeating: epsilon)).squareRoot()
            for l in 0..<lanes {
                let row = p0 + l * c, o = y + (n + l) * c
                rstd[n + l] = r[l]
                for j in 0..<c {
                    row[j] = (row[j] - mean[l]) * r[l]
                    o[j] = gamma[j] * row[j] + beta[j]
                }
            }
            n += lanes
        }
    }

    /// In the forward pass this was yⱼ = γⱼ·x̂ⱼ + βⱼ with x̂ = (x − μ)·r. So now,
    /// per row, with g = dy ⊙ γ (the gradient reaching x̂):
    ///
    ///     dL/dγ += Σ_rows dy ⊙ x̂        dL/dβ += Σ_rows dy
    ///     dL/dx  = r · (g − mean(g) − x̂ · mean(g ⊙ x̂))
    ///
    /// The last line is what is left of the C×C Jacobian of the normalisation
    /// after the two paths through μ and σ² are summed: subtracting mean(g)
    /// removes the part of g that would shift the mean (which normalising
    /// undoes), subtracting x̂·mean(g ⊙ x̂) the part that would change the
    /// spread. Notebooks/part4-gpt.md, §3, derives it. Caches x̂ and r.
    public func backward(_ dy: Tensor) -> Tensor {
        precondition(dy.shape == normalised.shape,
                     "LayerNorm.backward: dy has shape \(dy.shape), forward input was \(normalised.shape)")
        let c = width, rows = dy.count / c
        var dx = dy
        dx.data.withUnsafeMutableBufferPointer { d in
            normalised.data.withUnsafeBufferPointer { xh in
                weight.value.data.withUnsafeBufferPointer { gamma in
                    weight.grad.data.withUnsafeMutableBufferPointer { dgamma in
                        bias.grad.data.withUnsafeMutableBufferPointer { dbeta in
                            for n in 0..<rows {
                                let g = d.baseAddress! + n * c, xhat = xh.baseAddress! + n * c
                                var meanG: Float = 0, meanGX: Float = 0
                                for j in 0..<c {
                                    dgamma[j] += g[j] * xhat[j]
                                    dbeta[j] += g[j]
                                    let gj = g[j] * gamma[j]
                                    meanG += gj
                                    meanGX += gj * xhat[j]
                                }
                                meanG /= Float(c)
                                meanGX /= Float(c)
                                let r = rstd[n]
                                for j in 0..<c { g[j] = r * (g[j] * gamma[j] - meanG - xhat[j] * meanGX) }
                            }
                        }
                    }
                }
            }
        }
        return dx
    }
}
