// Softmax and the fused softmax + cross-entropy loss.
//
// softmax turns a row of scores (logits) into probabilities:
//
//     p_j = exp(z_j) / Σ_k exp(z_k)
//
// The router uses it to make experts compete for a token, the classifier to
// turn class scores into a distribution. Derivation of both backward passes:
// Notebooks/part2-implementation.md, §13.
//
// Numerical stability: exp overflows Float for z > 88. Since softmax(z) =
// softmax(z − c) for any constant c, we subtract the row's maximum first; then
// every exponent is ≤ 0, the largest term is exactly 1, and the sum is ≥ 1.
import Foundation

/// Row-wise softmax.   z [N, C] -> p [N, C], each row summing to 1.
public func softmaxRows(_ z: Tensor) -> Tensor {
    precondition(z.rank == 2, "softmax: expected a matrix [N, C], got shape \(z.shape)")
    var p = z
    let c = z.shape[1]
    guard c > 0 else { return p }
    p.data.withUnsafeMutableBufferPointer { d in
        for n in 0..<z.shape[0] {
            let row = d.baseAddress! + n * c
            var m = row[0]
            for j in 1..<c { m = max(m, row[j]) }
            var s: Float = 0
            for j in 0..<c { row[j] = exp(row[j] - m); s += row[j] }
            let inv = 1 / s
            for j in 0..<c { row[j] *= inv }
        }
    }
    return p
}

/// Backward of p = softmax(z), row by row. The Jacobian is
/// ∂p_i/∂z_j = p_i·(δ_ij − p_j), so for dp = dL/dp:
///
///     dL/dz_j = Σ_i dp_i · p_i·(δ_ij − p_j) = p_j · (dp_j − Σ_i dp_i·p_i)
///
/// An O(C) formula per row instead of the O(C²) Jacobian.   p, dp [N, C] -> dz [N, C]
public func softmaxRowsBackward(probabilities p: Tensor, outputGradient dp: Tensor) -> Tensor {
    precondition(p.shape == dp.shape, "softmax backward: p \(p.shape) and dp \(dp.shape) differ")
    var dz = dp
    let c = p.shape[1]
    for n in 0..<p.shape[0] {
        var dot: Float = 0
        for j in 0..<c { dot += dp.data[n * c + j] * p.data[n * c + j] }
        for j in 0..<c { dz.data[n * c + j] = p.data[n * c + j] * (dp.data[n * c + j] - dot) }
    }
    return dz
}

/// Softmax followed by cross-entropy against integer labels, mean over rows:
///
///     L = −(1/N) Σₙ log p[n, yₙ],   p = softmax(z)
///
/// Fused because the combination has a far simpler and more stable gradient
/// than its parts: dL/dz = (p − onehot(y)) / N.
public struct SoftmaxCrossEntropy {
    /// The loss value, the probabilities p [N, C] and the gradient dL/dz [N, C].
    public struct Result {
        /// Kept in Double: a Float loss would add 1e-7 rounding noise that a
        /// gradient check divides by 2ε.
        public let loss: Double
        public let probabilities: Tensor
        public let gradient: Tensor
    }

    /// Loss and gradient for logits z [N, C] and labels in 0..<C.
    /// log p is computed as (z − max) − log Σ exp(z − max), never as log(p),
    /// so a probability that underflows to 0 gives a large finite loss, not inf.
    public static func compute(logits z: Tensor, labels: [Int]) -> Result {
        precondition(z.rank == 2 && labels.count == z.shape[0],
                     "cross-entropy: logits \(z.shape) and \(labels.count) labels do not match")
        let n = z.shape[0], c = z.shape[1]
        for y in labels { precondition(y >= 0 && y < c, "cross-entropy: label \(y) out of range 0..<\(c)") }
        var p = Tensor.zeros(z.shape)
        var grad = Tensor.zeros(z.shape)
        var rowLoss = [Double](repeating: 0, count: n)   // −log p[n, yₙ] per row, summed in order below
        // Rows are independent, so a large batch (a GPT step's 2,048 × 66) is split
        // between threads; each row's numbers are the same on any thread.
        let blocks = n * c >= parallelThreshold ? max(1, min(n, Parallel.threads)) : 1
        z.data.withUnsafeBufferPointer { zs in
        p.data.withUnsafeMutableBufferPointer { ps in
        grad.data.withUnsafeMutableBufferPointer { gs in
        rowLoss.withUnsafeMutableBufferPointer { losses in
            Parallel.forEach(blocks) { b in
                // In Double: N·C values, so it costs little, and the loss then has no
                // Float rounding noise of its own (which the gradient checker would see).
                withUnsafeTemporaryAllocation(of: Double.self, capacity: c) { row in
                    for r in (b * n / blocks)..<((b + 1) * n / blocks) {
                        let y = labels[r]
                        for j in 0..<c { row[j] = Double(zs[r * c + j]) }
                        var m = row[0]
                        for j in 1..<c where m < row[j] { m = row[j] }
                        var sum = 0.0
                        for j in 0..<c { sum += exp(row[j] - m) }
                        let logS = log(sum)
                        losses[r] = row[y] - m - logS
                        for j in 0..<c {
                            let pj = Float(exp(row[j] - m - logS))
                            ps[r * c + j] = pj
                            gs[r * c + j] = (pj - (j == y ? 1 : 0)) / Float(n)
                        }
                    }
                }
            }
        } } } }
        var total = 0.0
        for r in 0..<n { total -= rowLoss[r] }
        return Result(loss: n > 0 ? total / Double(n) : 0, probabilities: p, gradient: grad)
    }

    /// At least this many logits are split between threads (2¹⁵: a GPT batch of
    /// 2,048 × 66 is, the MNIST batch of 64 × 10 is not; a parallel region costs
    /// tens of µs, README "Speed").
    static let parallelThreshold = 1 << 15
}
