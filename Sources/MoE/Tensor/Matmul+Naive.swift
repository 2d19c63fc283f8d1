// The reference matmul: three nested loops, exactly the definition
//
//     C[i, j] = Σ_p A[i, p] · B[p, j]
//
// It is slow (no tiling, no SIMD, no threads) and obviously right, which is its
// job: the tests compare the tiled kernel in Matmul.swift against it on every
// awkward shape, and moe-bench prints its speed beside the kernel's so the
// reader sees what tiling and packing buy (Notebooks/part2-implementation.md, §19).
// Accumulates in Double so that it is a slightly *better* answer than the
// kernel, not an equally rounded one.

/// C = op(A) · op(B) by the textbook triple loop. Same arguments as `matmul`.
public func naiveMatmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false) -> Tensor {
    let (m, k, n) = matmulShape(a, b, transposeA: transposeA, transposeB: transposeB)
    // Element (i, p) of op(A) and (p, j) of op(B), whatever the storage order.
    func aAt(_ i: Int, _ p: Int) -> Float { transposeA ? a.data[p * m + i] : a.data[i * k + p] }
    func bAt(_ p: Int, _ j: Int) -> Float { transposeB ? b.data[j * k + p] : b.data[p * n + j] }
    var c = Tensor.zeros([m, n])
    for i in 0..<m {
        for j in 0..<n {
            var sum = 0.0
            for p in 0..<k { sum += Double(aAt(i, p)) * Double(bAt(p, j)) }
            c.data[i * n + j] = Float(sum)
        }
    }
    return c
}
