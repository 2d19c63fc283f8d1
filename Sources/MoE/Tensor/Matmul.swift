// Matmul: C = A·B, the one operation that decides how fast this project is.
//
// Every Linear layer, every expert and the router are matrix products, forward
// and backward (Notebooks/part2-implementation.md, §19 "The matmul"). Goals, in
// order:
//   1. Correct for every shape, including 0- and 1-sized dimensions and sizes
//      that are not multiples of the tile. `naiveMatmul` (Matmul+Naive.swift)
//      is the readable reference; the tests compare the two on many shapes.
//   2. Readable: one micro-kernel, one packing routine (for B), one loop nest.
//   3. Fast: close to the core's FMA peak on the MNIST MoE's shapes.
//
// Legend: C [M, N] = A [M, K] · B [K, N]. Row-major storage throughout.
//
// The three products backprop needs come from the same code:
//   forward       Y  = X · Wᵀ      A·Bᵀ   (W is [out, in], PyTorch's layout)
//   input grad    dX = dY · W      A·B
//   weight grad   dW = dYᵀ · X     Aᵀ·B
// A transpose is never materialised: B is *packed* (copied into small
// contiguous panels) anyway, packing can read rows or columns equally well,
// and A is read one scalar at a time. So "transposed" only changes two strides.
//
// How the fast path works (the BLIS recipe, cut down to what these sizes need;
// A·Bᵀ, whose operands are both read along rows, takes the dot-product kernel
// of Matmul+Dot.swift instead, which needs no packing):
//   * Register tile. The micro-kernel computes a tile of C of `mr` = 4 rows by
//     `nr` = 32 columns = 2 SIMD16<Float> vectors per row, so 8 accumulator
//     vectors stay in registers for the whole K loop. Per step of K it loads 2
//     vectors of B, broadcasts 4 scalars of A and issues 8 fused multiply-adds:
//     256 FLOPs per 6 loads, enough to keep the FMA units, not the loads, busy.
//     With AVX-512's 32 registers an 8-row tile (16 accumulators) keeps twice
//     as many FMAs in flight, which Intel's cores need (`wideTile`).
//   * Packing. The kernel reads B as [K][32], contiguous, so every load is a
//     sequential stream the prefetcher predicts. A B panel is packed once and
//     re-read by every row tile; partial panels are zero-padded so the kernel
//     never branches on the edge (only the final store does). A is not packed:
//     the kernel reads one scalar of each of its four rows per K step, in place.
//     Nor is a row-major B when few row tiles share its panel (M ≤ 64: an
//     expert's tokens, a batch): its rows already hold each K step's 32
//     values side by side, one row of B apart, and a copy re-read only a few
//     times costs more than it saves (`inPlaceRowTiles`).
//   * K blocking. K is cut into slices of `kc` = 256 so that a packed B panel
//     (256 × 32 floats = 32 KiB) and a row tile's slice of A (4 KiB) stay in the L1/L2 caches
//     while they are re-read. C accumulates across the slices.
//   * Threads. Large products are split into column (or row) strips, one per
//     thread, with `Parallel.forEach`; each strip packs its own panels, so the
//     threads share nothing but read-only inputs.
import Foundation

// MARK: - Public API

/// Matrix product of two rank-2 tensors, optionally transposing either operand
/// without copying it.
///
///     let y = matmul(x, w, transposeB: true)   // x [N, in], w [out, in] -> y [N, out]
///
/// - Precondition: the inner dimensions agree; the message names both shapes.
/// - Complexity: 2·M·N·K floating-point operations.
public func matmul(_ a: Tensor, _ b: Tensor, transposeA: Bool = false, transposeB: Bool = false,
                   threads: Int = Parallel.threads) -> Tensor {
    let (m, k, n) = matmulShape(a, b, transposeA: transposeA, transposeB: transposeB)
    // Every path of `Gemm.multiply` writes each element of C when not
    // accumulating (an empty sum, K = 0, writes zeros), so C is not zeroed first:
    // zeroing the GPT's 2,048 × 256 outputs was 2.5% of its training step.
    return Tensor(shape: [m, n]) { c in
        a.data.withUnsafeBufferPointer { ap in
            b.data.withUnsafeBufferPointer { bp in
                Gemm.multiply(m: m, n: n, k: k,
                              a: StridedMatrix(ap.baseAddress, rows: m, cols: k, transposed: transposeA),
                              b: StridedMatrix(bp.baseAddress, rows: k, cols: n, transposed: transposeB),
                              c: c, ldc: n, accumulate: false, threads: threads)
            }
        }
    }
}

/// `c += op(a) · op(b)`: the same product, added into an existing tensor.
/// Backward passes use it to *accumulate* weight gradients, llm.c style.
public func matmulAccumulate(into c: inout Tensor, _ a: Tensor, _ b: Tensor,
                             transposeA: Bool = false, transposeB: Bool = false,
                             threads: Int = Parallel.threads) {
    let (m, _, n) = matmulShape(a, b, transposeA: transposeA, transposeB: transposeB)
    precondition(c.shape == [m, n],
                 "matmulAccumulate: result has shape \(c.shape) but the product of \(a.shape) and \(b.shape) is [\(m), \(n)]")
    multiply(into: &c, a, b, transposeA: transposeA, transposeB: transposeB, accumulate: true, threads: threads)
}

/// Hands the three tensors' storage to the kernel as strided matrices.
private func multiply(into c: inout Tensor, _ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool,
                      accumulate: Bool, threads: Int) {
    let (m, k, n) = (c.shape[0], transposeA ? a.shape[0] : a.shape[1], c.shape[1])
    c.data.withUnsafeMutableBufferPointer { cp in
        a.data.withUnsafeBufferPointer { ap in
            b.data.withUnsafeBufferPointer { bp in
                Gemm.multiply(m: m, n: n, k: k,
                              a: StridedMatrix(ap.baseAddress, rows: m, cols: k, transposed: transposeA),
                              b: StridedMatrix(bp.baseAddress, rows: k, cols: n, transposed: transposeB),
                              c: cp.baseAddress, ldc: n, accumulate: accumulate, threads: threads)
            }
        }
    }
}

/// Checks the operands of a product and returns (M, K, N). Stops with a message
/// naming both shapes when they do not fit, before any memory is touched.
func matmulShape(_ a: Tensor, _ b: Tensor, transposeA: Bool, transposeB: Bool) -> (Int, Int, Int) {
    let opA = transposeA ? "Aᵀ" : "A", opB = transposeB ? "Bᵀ" : "B"
    precondition(a.rank == 2 && b.rank == 2,
                 "matmul: \(opA)·\(opB) needs two matrices, got A \(a.shape) and B \(b.shape)")
    let (m, ka) = transposeA ? (a.shape[1], a.shape[0]) : (a.shape[0], a.shape[1])
    let (kb, n) = transposeB ? (b.shape[1], b.shape[0]) : (b.shape[0], b.shape[1])
    precondition(ka == kb,
                 "matmul: \(opA)·\(opB) with A \(a.shape) and B \(b.shape): inner dimensions \(ka) and \(kb) differ")
    return (m, ka, n)
}

// MARK: - Operands

/// A read-only matrix seen through two strides: element (i, j) of the *logical*
/// matrix is `base[i * rowStride + j * colStride]`. A row-major [rows, cols]
/// matrix has strides (cols, 1); its transpose, stored as [cols, rows], has (1, rows).
struct StridedMatrix {
    let base: UnsafePointer<Float>?
    let rowStride: Int
    let colStride: Int

    /// The logical [rows, cols] matrix at `base`, stored row-major, or stored as
    /// its transpose ([cols, rows] row-major) when `transposed`.
    init(_ base: UnsafePointer<Float>?, rows: Int, cols: Int, transposed: Bool) {
        self.base = base
        if transposed { rowStride = 1; colStride = rows } else { rowStride = cols; colStride = 1 }
    }

    init(base: UnsafePointer<Float>?, rowStride: Int, colStride: Int) {
        self.base = base; self.rowStride = rowStride; self.colStride = colStride
    }
}

// MARK: - The blocked, packed, parallel product

enum Gemm {
    /// Rows of C per register tile (scalars of A broadcast per K step).
    static let mr = 4
    /// Columns of C per register tile: 32 floats = 2 SIMD16<Float> vectors.
    static let nr = 32
    /// K slice: a packed B panel is kc × nr = 256 × 32 floats = 32 KiB.
    static let kc = 256
    /// Below this many FLOPs (2·M·N·K), one thread is as fast as two: waking a
    /// second core costs microseconds, and each strip packs its own copy of the
    /// shared operand. moe-bench measured 64×784×256 (2^24.6 FLOPs) barely
    /// faster on 2 threads, 512³ 1.7× faster, and a whole dense training step
    /// slower when its 4-MFLOP products were split too.
    static let parallelThreshold = 1 << 24
    /// Up to this many row tiles (M ≤ 64), a row-major B panel is read in place
    /// instead of packed. Packing costs a copy of the panel and pays back only
    /// when many row tiles re-read it: an expert's input gradients (16 × 256 × 128,
    /// 16 × 128 × 256) went from 70 and 83 to 107–109 GFLOP/s read in place
    /// (moe-bench, one thread). With many row tiles the copy wins again: a
    /// panel read in place is 256 rows a power-of-two stride apart, which crowd
    /// a few sets of the L1 cache, and 512³ Aᵀ·B fell from 107 to 84 GFLOP/s
    /// read in place.
    static let inPlaceRowTiles = 16

    /// Whether `serial` uses the 8-row register tile (`microKernel8`) or only the
    /// 4-row one. Its 16 SIMD16 accumulators fit only in AVX-512's 32 vector
    /// registers: compiled for AVX2 (16 registers of 8 floats, each SIMD16
    /// taking two) they spill to the stack, and the 8-row tile ran at 0.65-0.8×
    /// the 4-row one (the same code built with `-target-cpu haswell`, on the
    /// Xeon of part 2, §19). On arm64 (NEON: 32 registers of 4 floats) the
    /// 4-row tile already fills the registers. The package compiles for the
    /// host CPU, so the host's features are the compiled code's. Tests set it
    /// both ways and compare the results bit for bit.
    nonisolated(unsafe) static var wideTile: Bool = HostCPU.hasAVX512

    /// How `multiply` shared a product between threads.
    enum Split: Equatable {
        case serial                   // one thread (or one strip)
        case transposed               // Aᵀ·B with few columns, one thread: Cᵀ = Bᵀ·A
        case columns(strips: Int)     // strips of column tiles
        case rows(strips: Int)        // strips of row tiles
    }

    /// A hook for tests: when set, `multiply` reports each split it chooses, so a
    /// test can check that the branch it means to test really ran. nil (always,
    /// outside tests) costs one load per product.
    nonisolated(unsafe) static var splitObserver: ((Split) -> Void)? = nil

    /// C[M,N] (+)= A[M,K] · B[K,N] with A and B given by strides and C row-major
    /// with leading dimension `ldc`.
    static func multiply(m: Int, n: Int, k: Int, a: StridedMatrix, b: StridedMatrix,
                         c: UnsafeMutablePointer<Float>?, ldc: Int, accumulate: Bool, threads: Int) {
        guard m > 0, n > 0, let c = c else { return }
        if k == 0 {  // an empty sum: C = 0 (or unchanged when accumulating)
            if !accumulate { for i in 0..<m { (c + i * ldc).initialize(repeating: 0, count: n) } }
            return
        }
        let flops = 2 * m * n * k
        let threads = flops >= parallelThreshold ? threads : 1
        // Fewer columns than one 32-wide panel (the router's 8 experts, the
        // classifier's 10 classes) would leave most of the register tile empty.
        // Two ways around it, both measured with moe-bench:
        //   A·B:  B is only N·K floats; copy it into rows of K ([N, K], a
        //         packing like any other) and use the dot-product kernel below.
        //   Aᵀ·B: compute Cᵀ = Bᵀ·A [N, M] instead, where the wide side M fills
        //         the tile, then transpose that small result into C.
        var b = b
        var packedTransposeB: UnsafeMutablePointer<Float>? = nil
        defer { packedTransposeB?.deallocate() }
        if n < nr && b.rowStride != 1 {
            if a.colStride == 1 {
                let bt = UnsafeMutablePointer<Float>.allocate(capacity: n * k)
                for p in 0..<k {
                    let src = b.base! + p * b.rowStride
                    for j in 0..<n { bt[j * k + p] = src[j * b.colStride] }
                }
                packedTransposeB = bt
                b = StridedMatrix(base: bt, rowStride: 1, colStride: k)
            } else if threads == 1 {
                splitObserver?(.transposed)
                transposedProduct(m: m, n: n, k: k, a: a, b: b, c: c, ldc: ldc, accumulate: accumulate)
                return
            }
        }
        // A·Bᵀ with both operands read along contiguous rows of K can skip packing
        // with the dot-product kernel (Matmul+Dot.swift). It wins where packing
        // cannot pay for itself: few rows to reuse a packed B panel (an expert's
        // ~16 tokens, a batch of 64) or fewer columns than one 32-wide panel (the
        // router's 8, the classifier's 10). Larger products pack (moe-bench).
        let rowsContiguous = a.colStride == 1 && b.rowStride == 1
        let kernel = rowsContiguous && (m <= 64 || n < nr) ? Gemm.serialDot : Gemm.serial
        // Split C into strips, one per thread: by columns when there are enough
        // column tiles to share, else by rows. Strip edges fall on tile edges.
        let columnTiles = (n + nr - 1) / nr, rowTiles = (m + mr - 1) / mr
        let strips = min(threads, max(columnTiles, rowTiles))
        if strips <= 1 {
            splitObserver?(.serial)
            kernel(m, n, k, a, b, c, ldc, accumulate)
            return
        }
        let byColumns = columnTiles >= rowTiles || columnTiles >= strips
        splitObserver?(byColumns ? .columns(strips: strips) : .rows(strips: strips))
        Parallel.forEach(strips, threads: strips) { s in
            if byColumns {
                let j0 = (columnTiles * s / strips) * nr, j1 = min(n, (columnTiles * (s + 1) / strips) * nr)
                guard j0 < j1 else { return }
                let bs = StridedMatrix(base: b.base! + j0 * b.colStride, rowStride: b.rowStride, colStride: b.colStride)
                kernel(m, j1 - j0, k, a, bs, c + j0, ldc, accumulate)
            } else {
                let i0 = (rowTiles * s / strips) * mr, i1 = min(m, (rowTiles * (s + 1) / strips) * mr)
                guard i0 < i1 else { return }
                let asub = StridedMatrix(base: a.base! + i0 * a.rowStride, rowStride: a.rowStride, colStride: a.colStride)
                kernel(i1 - i0, n, k, asub, b, c + i0 * ldc, ldc, accumulate)
            }
        }
    }

    /// C (+)= A·B computed as Cᵀ = Bᵀ·Aᵀ [N, M] into a scratch buffer, then
    /// written transposed into C: for products with few columns and many rows.
    static func transposedProduct(m: Int, n: Int, k: Int, a: StridedMatrix, b: StridedMatrix,
                                  c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
        let ct = UnsafeMutablePointer<Float>.allocate(capacity: n * m)
        defer { ct.deallocate() }
        // Element (j, p) of Bᵀ is B(p, j): swap the strides; likewise for Aᵀ.
        serial(m: n, n: m, k: k,
               a: StridedMatrix(base: b.base, rowStride: b.colStride, colStride: b.rowStride),
               b: StridedMatrix(base: a.base, rowStride: a.colStride, colStride: a.rowStride),
               c: ct, ldc: m, accumulate: false)
        for i in 0..<m {
            let row = c + i * ldc
            for j in 0..<n { row[j] = accumulate ? row[j] + ct[j * m + i] : ct[j * m + i] }
        }
    }

    /// The single-threaded blocked product. Loop nest, outermost first:
    ///   p0 (K slices) → for each column panel: pack the B panel, then run the
    ///   micro-kernel down every row tile.
    ///
    /// A is never packed. The kernel takes one scalar from each of its 4 rows
    /// per K step and broadcasts it, so it can read A where it is: a row-major
    /// A (A·B, A·Bᵀ: forward passes, input gradients) as four rows contiguous in
    /// K; a transposed one (Aᵀ·B: weight gradients) as four neighbouring floats
    /// per K step, one stored row apart. Packing A into [K][4] panels first, as
    /// BLAS does, copied the whole operand once per product, and that copy was
    /// shared by few column panels where N is small: in the GPT's 64-wide
    /// products it took about half as long as the arithmetic (part 2, §19).
    static func serial(m: Int, n: Int, k: Int, a: StridedMatrix, b: StridedMatrix,
                       c: UnsafeMutablePointer<Float>, ldc: Int, accumulate: Bool) {
        let rowTiles = (m + mr - 1) / mr
        let kcMax = min(kc, k)
        // The packed B panel, 64-byte aligned so every SIMD16 load is a whole cache line.
        let packedB = UnsafeMutableRawPointer.allocate(byteCount: nr * kcMax * 4, alignment: 64)
            .bindMemory(to: Float.self, capacity: nr * kcMax)
        defer { packedB.deallocate() }

        var p0 = 0
        while p0 < k {
            let kLen = min(kc, k - p0)
            // After the first K slice, C already holds a partial sum: add to it.
            let addToC = accumulate || p0 > 0
            var j0 = 0
            while j0 < n {
                let cols = min(nr, n - j0)
                // A row-major B already holds each K step's 32 columns side by
                // side: with few row tiles to share a copy, the kernel reads a
                // full panel where it is, one row of B apart per step. A
                // transposed B (gathered), a partial panel (zero-padded past N)
                // and a panel many row tiles re-read are copied.
                let panel: UnsafePointer<Float>, panelStride: Int
                if b.colStride == 1 && cols == nr && rowTiles <= inPlaceRowTiles {
                    panel = b.base! + p0 * b.rowStride + j0
                    panelStride = b.rowStride
                } else {
                    packB(b, depth: p0..<(p0 + kLen), cols: j0..<(j0 + cols), into: packedB)
                    panel = UnsafePointer(packedB)
                    panelStride = nr
                }
                // Row tiles of 8 where the wide tile pays (`wideTile`) and more
                // than 4 rows are left (the last may be partly empty), else of 4:
                // an expert's 12 tokens are a tile of 8 and one of 4, its 13 two
                // tiles of 8, the second storing 5 rows. Each
                // element of C is the same chain of FMAs over K in either
                // kernel, so the choice never changes a bit of C.
                var i0 = 0
                while i0 < m {
                    let wide = wideTile && m - i0 > 4
                    let rows = min(wide ? 8 : 4, m - i0)
                    // Rows past M (last tile) repeat the last row: computed, never stored.
                    let row = { (r: Int) in UnsafePointer(a.base! + min(i0 + r, m - 1) * a.rowStride + p0 * a.colStride) }
                    let cTile = c + i0 * ldc + j0
                    if wide {
                        microKernel8(kLen: kLen, a: (row(0), row(1), row(2), row(3), row(4), row(5), row(6), row(7)),
                                     step: a.colStride, b: panel, bStride: panelStride, c: cTile, ldc: ldc,
                                     rows: rows, cols: cols, accumulate: addToC)
                        i0 += 8
                    } else {
                        microKernel(kLen: kLen, a: TileRows(rows: (row(0), row(1), row(2), row(3)), step: a.colStride),
                                    b: panel, bStride: panelStride, c: cTile, ldc: ldc,
                                    rows: rows, cols: cols, accumulate: addToC)
                        i0 += 4
                    }
                }
                j0 += nr
            }
            p0 += kLen
        }
    }

    /// The 4 rows of A a register tile multiplies: A(r, p) = rows.r[p · step],
    /// with step A's column stride (1 for a row-major A, M for a transposed one).
    struct TileRows {
        let rows: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>)
        let step: Int
    }

    /// Copies B[depth, cols] into `dst` as [depth][nr]: for each k, the nr values
    /// of one row of the panel, contiguous. Missing columns are 0.
    @inline(__always)
    static func packB(_ b: StridedMatrix, depth: Range<Int>, cols: Range<Int>, into dst: UnsafeMutablePointer<Float>) {
        let src = b.base!
        let width = cols.count
        if b.colStride == 1 {
            // B is row-major here: each packed row is a contiguous run of B.
            var d = dst
            for p in depth {
                let row = src + p * b.rowStride + cols.lowerBound
                d.update(from: row, count: width)
                if width < nr { (d + width).update(repeating: 0, count: nr - width) }
                d += nr
            }
        } else {
            // B is stored transposed: a packed row (fixed k) gathers one value
            // from each of `width` stored rows. Writing the panel row by row keeps
            // the writes contiguous; the reads are `width` sequential streams,
            // one per stored row, each using a cache line over 16 steps of k.
            var d = dst
            let first = src + cols.lowerBound * b.colStride
            for p in depth {
                let column = first + p * b.rowStride
                for cIndex in 0..<width { d[cIndex] = column[cIndex * b.colStride] }
                if width < nr { (d + width).update(repeating: 0, count: nr - width) }
                d += nr
            }
        }
    }

    /// The register tile: C[4, 32] (+)= A[4, kLen] · B[kLen][32], B's rows `bStride` floats apart
    /// (32 in a packed panel, N for a row-major B read in place).
    /// Eight SIMD16 accumulators (4 rows × 2 vectors) live in registers for the
    /// whole loop; each K step is 2 vector loads, 4 broadcasts and 8 FMAs.
    @inline(__always)
    static func microKernel(kLen: Int, a: TileRows, b: UnsafePointer<Float>, bStride: Int,
                            c: UnsafeMutablePointer<Float>, ldc: Int, rows: Int, cols: Int, accumulate: Bool) {
        typealias V = SIMD16<Float>
        var c00 = V(), c01 = V(), c10 = V(), c11 = V()
        var c20 = V(), c21 = V(), c30 = V(), c31 = V()
        let bBytes = bStride * 4
        let (r0, r1, r2, r3) = a.rows, step = a.step
        // Two running offsets instead of `p * bBytes` and `p * step` each step:
        // the multiplications, with their overflow checks, were 8 of the loop's
        // 24 instructions, and Intel's front end issues about 6 per cycle, so
        // they, not the 8 FMAs, set its pace.
        var bRow = UnsafeRawPointer(b)
        var q = 0   // A(r, p) is r_r[q], q = p · step
        for _ in 0..<kLen {
            // Unaligned loads: a panel read in place starts wherever its row does.
            let b0 = bRow.loadUnaligned(as: V.self)
            let b1 = bRow.loadUnaligned(fromByteOffset: 64, as: V.self)
            let a0 = V(repeating: r0[q]), a1 = V(repeating: r1[q])
            let a2 = V(repeating: r2[q]), a3 = V(repeating: r3[q])
            bRow += bBytes
            q &+= step
            c00.addProduct(a0, b0); c01.addProduct(a0, b1)
            c10.addProduct(a1, b0); c11.addProduct(a1, b1)
            c20.addProduct(a2, b0); c21.addProduct(a2, b1)
            c30.addProduct(a3, b0); c31.addProduct(a3, b1)
        }
        if rows == mr && cols == nr {
            // Full tile: straight to C.
            store(c00, c01, to: c, accumulate: accumulate)
            store(c10, c11, to: c + ldc, accumulate: accumulate)
            store(c20, c21, to: c + 2 * ldc, accumulate: accumulate)
            store(c30, c31, to: c + 3 * ldc, accumulate: accumulate)
        } else {
            // Edge tile: spill to a scratch tile, copy only the valid part.
            withUnsafeTemporaryAllocation(of: Float.self, capacity: mr * nr) { t in
                let r = UnsafeMutableRawPointer(t.baseAddress!)
                r.storeBytes(of: c00, toByteOffset: 0, as: V.self); r.storeBytes(of: c01, toByteOffset: 64, as: V.self)
                r.storeBytes(of: c10, toByteOffset: 128, as: V.self); r.storeBytes(of: c11, toByteOffset: 192, as: V.self)
                r.storeBytes(of: c20, toByteOffset: 256, as: V.self); r.storeBytes(of: c21, toByteOffset: 320, as: V.self)
                r.storeBytes(of: c30, toByteOffset: 384, as: V.self); r.storeBytes(of: c31, toByteOffset: 448, as: V.self)
                for i in 0..<rows {
                    for j in 0..<cols {
                        c[i * ldc + j] = accumulate ? c[i * ldc + j] + t[i * nr + j] : t[i * nr + j]
                    }
                }
            }
        }
    }

    /// The wide register tile: C[8, 32] (+)= A[8, kLen] · B[kLen][32], as
    /// `microKernel` but with 8 rows of A, so 16 accumulators.
    ///
    /// Why two tiles: an FMA's result is ready 4 cycles after it issues and a
    /// core issues two per cycle, so 8 accumulators are exactly the 8 FMAs in
    /// flight that keep both units busy, with no slack; any late load idles
    /// them. On AMD's Zen 5 the 4-row tile ran at about 90% of the FMA peak; on
    /// an Intel Xeon (Sapphire Rapids class) at 45-55%, and this tile, with
    /// twice the independent chains and 10 loads per 16 FMAs instead of 6 per
    /// 8, ran 1.4-1.7× faster there on the MNIST MoE's shapes (part 2, §19).
    /// 16 accumulators, 2 B vectors and a broadcast use 19 of AVX-512's 32
    /// vector registers; elsewhere it would spill (`wideTile`).
    @inline(__always)
    static func microKernel8(kLen: Int,
                             a: (UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>,
                                 UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>, UnsafePointer<Float>),
                             step: Int, b: UnsafePointer<Float>, bStride: Int,
                             c: UnsafeMutablePointer<Float>, ldc: Int, rows: Int, cols: Int, accumulate: Bool) {
        typealias V = SIMD16<Float>
        var c00 = V(), c01 = V(), c10 = V(), c11 = V(), c20 = V(), c21 = V(), c30 = V(), c31 = V()
        var c40 = V(), c41 = V(), c50 = V(), c51 = V(), c60 = V(), c61 = V(), c70 = V(), c71 = V()
        let bBytes = bStride * 4
        var bRow = UnsafeRawPointer(b)
        var q = 0   // A(r, p) is a.r[q], q = p · step
        for _ in 0..<kLen {
            let b0 = bRow.loadUnaligned(as: V.self)
            let b1 = bRow.loadUnaligned(fromByteOffset: 64, as: V.self)
            var x = V(repeating: a.0[q]); c00.addProduct(x, b0); c01.addProduct(x, b1)
            x = V(repeating: a.1[q]); c10.addProduct(x, b0); c11.addProduct(x, b1)
            x = V(repeating: a.2[q]); c20.addProduct(x, b0); c21.addProduct(x, b1)
            x = V(repeating: a.3[q]); c30.addProduct(x, b0); c31.addProduct(x, b1)
            x = V(repeating: a.4[q]); c40.addProduct(x, b0); c41.addProduct(x, b1)
            x = V(repeating: a.5[q]); c50.addProduct(x, b0); c51.addProduct(x, b1)
            x = V(repeating: a.6[q]); c60.addProduct(x, b0); c61.addProduct(x, b1)
            x = V(repeating: a.7[q]); c70.addProduct(x, b0); c71.addProduct(x, b1)
            bRow += bBytes
            q &+= step
        }
        if rows == 8 && cols == nr {
            store(c00, c01, to: c, accumulate: accumulate)
            store(c10, c11, to: c + ldc, accumulate: accumulate)
            store(c20, c21, to: c + 2 * ldc, accumulate: accumulate)
            store(c30, c31, to: c + 3 * ldc, accumulate: accumulate)
            store(c40, c41, to: c + 4 * ldc, accumulate: accumulate)
            store(c50, c51, to: c + 5 * ldc, accumulate: accumulate)
            store(c60, c61, to: c + 6 * ldc, accumulate: accumulate)
            store(c70, c71, to: c + 7 * ldc, accumulate: accumulate)
        } else {
            withUnsafeTemporaryAllocation(of: Float.self, capacity: 8 * nr) { t in
                let r = UnsafeMutableRawPointer(t.baseAddress!)
                for (i, v) in [c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51, c60, c61, c70, c71].enumerated() {
                    r.storeBytes(of: v, toByteOffset: 64 * i, as: V.self)
                }
                for i in 0..<rows {
                    for j in 0..<cols {
                        c[i * ldc + j] = accumulate ? c[i * ldc + j] + t[i * nr + j] : t[i * nr + j]
                    }
                }
            }
        }
    }

    @inline(__always)
    static func store(_ v0: SIMD16<Float>, _ v1: SIMD16<Float>, to c: UnsafeMutablePointer<Float>, accumulate: Bool) {
        let raw = UnsafeMutableRawPointer(c)
        if accumulate {
            let old0 = raw.loadUnaligned(as: SIMD16<Float>.self)
            let old1 = raw.loadUnaligned(fromByteOffset: 64, as: SIMD16<Float>.self)
            raw.storeBytes(of: old0 + v0, as: SIMD16<Float>.self)
            raw.storeBytes(of: old1 + v1, toByteOffset: 64, as: SIMD16<Float>.self)
        } else {
            raw.storeBytes(of: v0, as: SIMD16<Float>.self)
            raw.storeBytes(of: v1, toByteOffset: 64, as: SIMD16<Float>.self)
        }
    }
}
