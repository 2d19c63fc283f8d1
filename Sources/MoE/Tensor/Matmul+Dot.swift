// The A·Bᵀ kernel: a tile of dot products, with no packing.
//
// In A·Bᵀ both operands are read along their rows: C[i, j] = Σ_p A[i, p]·B[j, p],
// where row i of A and row j of B are each K contiguous floats. That is the
// forward pass of every Linear layer (x · Wᵀ). The packed kernel of
// Matmul.swift would first have to transpose panels of B, a strided gather
// that costs as much as the arithmetic when M is small (an expert sees ~16
// tokens). This kernel reads both operands where they are instead.
//
// Register tile: 4 rows of A × 4 rows of B = 16 dot products in flight, each
// a SIMD16<Float> of partial sums over 16 consecutive values of K. Per step of
// 16 along K: 8 vector loads (4 of A, 4 of B) feed 16 fused multiply-adds.
// At the end each accumulator's 16 lanes are summed (a reduction tree of
// halves), and the K % 16 remainder is added by a scalar loop.
//
// Why a dot-product kernel and what it reaches: Notebooks/part2-implementation.md, §19.
//
// Legend: C [M, N] = A [M, K] · Bᵀ, B stored [N, K]; A and B row-major.

extension Gemm {
    /// Rows of A (and of C) per tile.
    static let dotRows = 4
    /// Rows of B (columns of C) per tile.
    static let dotCols = 4

    /// C[M, N] (+)= A[M, K]·B[N, K]ᵀ for A with unit column stride and B given as
    /// the transpose of a row-major [N, K] matrix (unit row stride).
    static func serialDot(m: Int, n: Int, k: Int, a: StridedMatrix, b: StridedMatrix,
                          c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
        let lda = a.rowStride, ldb = b.colStride   // floats between consecutive rows
        let aBase = a.base!, bBase = b.base!
        var i0 = 0
        while i0 < m {
            let rows = min(dotRows, m - i0)
            // Rows past M (last tile) repeat the last row: computed, never stored.
            let a0 = aBase + i0 * lda
            let a1 = aBase + min(i0 + 1, m - 1) * lda
            let a2 = aBase + min(i0 + 2, m - 1) * lda
            let a3 = aBase + min(i0 + 3, m - 1) * lda
            var j0 = 0
            while j0 < n {
                let cols = min(dotCols, n - j0)
                let b0 = bBase + j0 * ldb
                let b1 = bBase + min(j0 + 1, n - 1) * ldb
                let b2 = bBase + min(j0 + 2, n - 1) * ldb
                let b3 = bBase + min(j0 + 3, n - 1) * ldb
                let tile = dotTile(k: k, a: (a0, a1, a2, a3), b: (b0, b1, b2, b3))
                for r in 0..<rows {
                    for s in 0..<cols {
                        let out = c + (i0 + r) * ldc + j0 + s
                        out.pointee = accumulate ? out.pointee + tile[r * 4 + s] : tile[r * 4 + s]
                    }
                }
                j0 += dotCols
            }
            i0 += dotRows
        }
    }

    /// The 4×4 tile of dot products of rows a.0…a.3 with rows b.0…b.3, each K long,
    /// returned row-major in a SIMD16 (element 4·r + s is a_r · b_s).
    @inline(__always)
    static func dotTile(k: Int, a: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>),
                        b: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>)) -> SIMD16<Float> {
        typealias V = SIMD16<Float>
        var c00 = V(), c01 = V(), c02 = V(), c03 = V()
        var c10 = V(), c11 = V(), c12 = V(), c13 = V()
        var c20 = V(), c21 = V(), c22 = V(), c23 = V()
        var c30 = V(), c31 = V(), c32 = V(), c33 = V()
        let ra = (UnsafeRawPointer(a.0), UnsafeRawPointer(a.1), UnsafeRawPointer(a.2), UnsafeRawPointer(a.3))
        let rb = (UnsafeRawPointer(b.0), UnsafeRawPointer(b.1), UnsafeRawPointer(b.2), UnsafeRawPointer(b.3))
        let kMain = k & ~15
        var offset = 0
        while offset < kMain * 4 {   // byte offset, 64 bytes = 16 floats per step
            let x0 = ra.0.loadUnaligned(fromByteOffset: offset, as: V.self)
            let x1 = ra.1.loadUnaligned(fromByteOffset: offset, as: V.self)
            let x2 = ra.2.loadUnaligned(fromByteOffset: offset, as: V.self)
            let x3 = ra.3.loadUnaligned(fromByteOffset: offset, as: V.self)
            let y0 = rb.0.loadUnaligned(fromByteOffset: offset, as: V.self)
            let y1 = rb.1.loadUnaligned(fromByteOffset: offset, as: V.self)
            let y2 = rb.2.loadUnaligned(fromByteOffset: offset, as: V.self)
            let y3 = rb.3.loadUnaligned(fromByteOffset: offset, as: V.self)
            c00.addProduct(x0, y0); c01.addProduct(x0, y1); c02.addProduct(x0, y2); c03.addProduct(x0, y3)
            c10.addProduct(x1, y0); c11.addProduct(x1, y1); c12.addProduct(x1, y2); c13.addProduct(x1, y3)
            c20.addProduct(x2, y0); c21.addProduct(x2, y1); c22.addProduct(x2, y2); c23.addProduct(x2, y3)
            c30.addProduct(x3, y0); c31.addProduct(x3, y1); c32.addProduct(x3, y2); c33.addProduct(x3, y3)
            offset += 64
        }
        // Sum each accumulator's 16 lanes, all 16 at once: every level pairs up
        // vectors and adds their halves, so 16 vectors of 16 partial sums become
        // 8 of 8, then 4 of 4, 2 of 2 and finally one vector of 16 totals, in
        // 15 vector additions instead of 16 separate reduction trees.
        var t = V.totals(c00, c01, c02, c03, c10, c11, c12, c13,
                         c20, c21, c22, c23, c30, c31, c32, c33)
        // The last K % 16 products, one by one.
        if kMain < k {
            for p in kMain..<k {
                let x = SIMD4<Float>(a.0[p], a.1[p], a.2[p], a.3[p])
                let y = SIMD4<Float>(b.0[p], b.1[p], b.2[p], b.3[p])
                for r in 0..<4 { for s in 0..<4 { t[r * 4 + s] += x[r] * y[s] } }
            }
        }
        return t
    }
}

extension SIMD16 where Scalar == Float {
    /// Pairs two vectors and adds halves of width `w`: lane groups of x and y
    /// (each `2w` wide, taken in turn) are split into first and second halves,
    /// which are added. Going from 16 partials per value to 8, 4, 2, 1.
    ///
    /// Lane by lane, for each group g of x (and of y, into lanes 8…15):
    ///     result[g·w + l] = x[g·2w + l] + x[g·2w + w + l]      (l < w)
    /// The two operands of each addition are gathered with whole-vector
    /// shuffles (halves, quarters, even and odd pairs or lanes), one or two
    /// instructions each; written lane by lane, the compiler emitted some 200
    /// shuffles and inserts for the 15 calls of `totals`, more than the
    /// arithmetic of a K = 128 tile. The same pairs are added, so the sums are
    /// the same to the bit.
    @inline(__always)
    static func halve(_ x: SIMD16<Float>, _ y: SIMD16<Float>, width w: Int) -> SIMD16<Float> {
        typealias V = SIMD16<Float>
        let first: V, second: V
        switch w {
        case 8:   // halves of each vector
            first = V(lowHalf: x.lowHalf, highHalf: y.lowHalf)
            second = V(lowHalf: x.highHalf, highHalf: y.highHalf)
        case 4:   // quarters: the first and third of each vector, then the second and fourth
            first = V(lowHalf: SIMD8(lowHalf: x.lowHalf.lowHalf, highHalf: x.highHalf.lowHalf),
                      highHalf: SIMD8(lowHalf: y.lowHalf.lowHalf, highHalf: y.highHalf.lowHalf))
            second = V(lowHalf: SIMD8(lowHalf: x.lowHalf.highHalf, highHalf: x.highHalf.highHalf),
                       highHalf: SIMD8(lowHalf: y.lowHalf.highHalf, highHalf: y.highHalf.highHalf))
        case 2:   // pairs of lanes: a pair is one Double, so even and odd Doubles
            let xd = unsafeBitCast(x, to: SIMD8<Double>.self), yd = unsafeBitCast(y, to: SIMD8<Double>.self)
            first = unsafeBitCast(SIMD8(lowHalf: xd.evenHalf, highHalf: yd.evenHalf), to: V.self)
            second = unsafeBitCast(SIMD8(lowHalf: xd.oddHalf, highHalf: yd.oddHalf), to: V.self)
        default:  // single lanes: even and odd
            precondition(w == 1, "halve: width \(w) is not 8, 4, 2 or 1")
            first = V(lowHalf: x.evenHalf, highHalf: y.evenHalf)
            second = V(lowHalf: x.oddHalf, highHalf: y.oddHalf)
        }
        return first + second
    }

    /// Lane i of the result is the sum of the 16 lanes of argument i.
    @inline(__always)
    static func totals(_ v0: SIMD16<Float>, _ v1: SIMD16<Float>, _ v2: SIMD16<Float>, _ v3: SIMD16<Float>,
                       _ v4: SIMD16<Float>, _ v5: SIMD16<Float>, _ v6: SIMD16<Float>, _ v7: SIMD16<Float>,
                       _ v8: SIMD16<Float>, _ v9: SIMD16<Float>, _ v10: SIMD16<Float>, _ v11: SIMD16<Float>,
                       _ v12: SIMD16<Float>, _ v13: SIMD16<Float>, _ v14: SIMD16<Float>, _ v15: SIMD16<Float>) -> SIMD16<Float> {
        // Level 1: 8 partials per value, two values per vector.
        let a0 = halve(v0, v1, width: 8), a1 = halve(v2, v3, width: 8), a2 = halve(v4, v5, width: 8)
        let a3 = halve(v6, v7, width: 8), a4 = halve(v8, v9, width: 8), a5 = halve(v10, v11, width: 8)
        let a6 = halve(v12, v13, width: 8), a7 = halve(v14, v15, width: 8)
        // Level 2: 4 partials, four values per vector (order v0 v1 | v2 v3 ...).
        let b0 = halve(a0, a1, width: 4), b1 = halve(a2, a3, width: 4)
        let b2 = halve(a4, a5, width: 4), b3 = halve(a6, a7, width: 4)
        // Level 3 and 4.
        let d0 = halve(b0, b1, width: 2), d1 = halve(b2, b3, width: 2)
        return halve(d0, d1, width: 1)
    }

    /// The sum of the 16 lanes: halve the vector three times (16 → 8 → 4 → 2),
    /// adding the halves, then add the last pair.
    @inline(__always)
    var total: Float {
        let h8 = lowHalf + highHalf
        let h4 = h8.lowHalf + h8.highHalf
        let h2 = h4.lowHalf + h4.highHalf
        return h2[0] + h2[1]
    }
}
