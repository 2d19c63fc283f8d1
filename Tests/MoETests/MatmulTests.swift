// The tiled matmul against the naive triple loop, on shapes that straddle the
// register tiles (4 or 8 rows × 32 columns) and the K slice (256).
import XCTest
@testable import MoE

final class MatmulTests: XCTestCase {
    /// Tolerance: both sum K products of values in [−1, 1); the naive loop sums in
    /// Double, the kernel in Float with FMA, so the difference grows like
    /// √K · 2⁻²⁴ per element. 1e-5·√(K+1) leaves a wide margin above that.
    func assertMatches(m: Int, k: Int, n: Int, transposeA: Bool, transposeB: Bool,
                       threads: Int = 1, rng: inout Xoshiro256, file: StaticString = #filePath, line: UInt = #line) {
        let a = Tensor.uniform(transposeA ? [k, m] : [m, k], low: -1, high: 1, rng: &rng)
        let b = Tensor.uniform(transposeB ? [n, k] : [k, n], low: -1, high: 1, rng: &rng)
        let fast = matmul(a, b, transposeA: transposeA, transposeB: transposeB, threads: threads)
        let slow = naiveMatmul(a, b, transposeA: transposeA, transposeB: transposeB)
        XCTAssertEqual(fast.shape, [m, n], file: file, line: line)
        let tolerance = 1e-5 * Float(k + 1).squareRoot()
        let diff = fast.maxAbsDifference(slow)
        XCTAssertLessThanOrEqual(diff, tolerance,
            "M×K×N = \(m)×\(k)×\(n) transposeA \(transposeA) transposeB \(transposeB): max difference \(diff)",
            file: file, line: line)
    }

    func testEveryVariantOnEdgeSizes() {
        var rng = Xoshiro256(seed: 1)
        let sizes = [0, 1, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65]
        for (ta, tb) in [(false, false), (false, true), (true, false), (true, true)] {
            for m in sizes {
                for n in sizes {
                    assertMatches(m: m, k: [1, 3, 17][(m + n) % 3], n: n, transposeA: ta, transposeB: tb, rng: &rng)
                }
            }
        }
    }

    func testKAcrossTheSliceBoundary() {
        var rng = Xoshiro256(seed: 2)
        for k in [0, 1, 255, 256, 257, 511, 512, 513, 784] {
            for (ta, tb) in [(false, false), (false, true), (true, false)] {
                assertMatches(m: 9, k: k, n: 33, transposeA: ta, transposeB: tb, rng: &rng)
            }
        }
    }

    func testMNISTShapesAndThreadsGiveIdenticalResults() {
        var rng = Xoshiro256(seed: 3)
        for (m, k, n) in [(64, 784, 256), (64, 256, 8), (16, 256, 128), (16, 128, 256), (64, 256, 10), (130, 70, 300)] {
            for (ta, tb) in [(false, false), (false, true), (true, false)] {
                assertMatches(m: m, k: k, n: n, transposeA: ta, transposeB: tb, threads: 2, rng: &rng)
                let a = Tensor.uniform(ta ? [k, m] : [m, k], low: -1, high: 1, rng: &rng)
                let b = Tensor.uniform(tb ? [n, k] : [k, n], low: -1, high: 1, rng: &rng)
                // Threads split C into strips; each element is summed in the same
                // order either way, so the results must be bit-identical.
                XCTAssertEqual(matmul(a, b, transposeA: ta, transposeB: tb, threads: 1),
                               matmul(a, b, transposeA: ta, transposeB: tb, threads: 2))
            }
        }
    }

    /// The packed kernel reads A in place, a row-major A along its rows and a
    /// transposed one down its columns; both feed the micro-kernel the same
    /// values in the same order, so A·B and (Aᵀ stored)ᵀ·B must be the same
    /// floats, bit for bit: M not a multiple of the 4-row tile, K across the 256
    /// slice, the GPT's 2,048 × 256 × 64, and accumulating into C.
    func testRowMajorAndTransposedAGiveTheSameFloats() {
        var rng = Xoshiro256(seed: 5)
        for (m, k, n) in [(9, 513, 33), (67, 300, 100), (2048, 256, 64), (130, 70, 300)] {
            let a = Tensor.uniform([m, k], low: -1, high: 1, rng: &rng)
            var aT = Tensor.zeros([k, m])
            for i in 0..<m { for p in 0..<k { aT.data[p * m + i] = a.data[i * k + p] } }
            let b = Tensor.uniform([k, n], low: -1, high: 1, rng: &rng)
            XCTAssertEqual(matmul(a, b, threads: 1), matmul(aT, b, transposeA: true, threads: 1), "\(m)×\(k)×\(n)")
            let start = Tensor.uniform([m, n], low: -1, high: 1, rng: &rng)
            var inPlace = start, packed = start
            matmulAccumulate(into: &inPlace, a, b, threads: 1)
            matmulAccumulate(into: &packed, aT, b, transposeA: true, threads: 1)
            XCTAssertEqual(inPlace, packed, "\(m)×\(k)×\(n), accumulating")
        }
    }

    /// For M ≤ 64 the packed kernel reads a row-major B in place (full 32-column
    /// panels) and copies the rest: a transposed B, the last partial panel, and
    /// every panel of a product with more rows. Each copy feeds the micro-kernel
    /// the same values in the same order, so the floats must agree bit for bit:
    /// B row-major against B stored transposed (gathered), and a 64-row product
    /// against the first 64 rows of a 68-row one (packed).
    func testRowMajorBReadInPlaceGivesThePackedFloats() {
        var rng = Xoshiro256(seed: 6)
        for (m, k, n) in [(16, 256, 128), (64, 784, 256), (9, 300, 70), (2, 17, 32)] {
            let aT = Tensor.uniform([k, m + 4], low: -1, high: 1, rng: &rng)   // Aᵀ stored, 4 rows spare
            let b = Tensor.uniform([k, n], low: -1, high: 1, rng: &rng)
            var bT = Tensor.zeros([n, k])
            for p in 0..<k { for j in 0..<n { bT.data[j * k + p] = b.data[p * n + j] } }
            var aTm = Tensor.zeros([k, m])   // the first m columns of aT: A has m rows
            for p in 0..<k { for i in 0..<m { aTm.data[p * m + i] = aT.data[p * (m + 4) + i] } }
            let inPlace = matmul(aTm, b, transposeA: true, threads: 1)
            XCTAssertEqual(inPlace, matmul(aTm, bT, transposeA: true, transposeB: true, threads: 1), "\(m)×\(k)×\(n)")
            if m + 4 > 64 {
                let taller = matmul(aT, b, transposeA: true, threads: 1)   // [m + 4, n], every panel packed
                XCTAssertEqual(Array(taller.data[0..<(m * n)]), inPlace.data, "\(m)×\(k)×\(n) against \(m + 4) rows")
            }
            let start = Tensor.uniform([m, n], low: -1, high: 1, rng: &rng)
            var accumulated = start, gathered = start
            matmulAccumulate(into: &accumulated, aTm, b, transposeA: true, threads: 1)
            matmulAccumulate(into: &gathered, aTm, bT, transposeA: true, transposeB: true, threads: 1)
            XCTAssertEqual(accumulated, gathered, "\(m)×\(k)×\(n), accumulating")
        }
    }

    func testAccumulateAddsToExistingValues() {
        var rng = Xoshiro256(seed: 4)
        for (m, k, n) in [(5, 300, 40), (64, 64, 64), (1, 1, 1)] {
            let a = Tensor.uniform([k, m], low: -1, high: 1, rng: &rng)
            let b = Tensor.uniform([k, n], low: -1, high: 1, rng: &rng)
            let start = Tensor.uniform([m, n], low: -1, high: 1, rng: &rng)
            var c = start
            matmulAccumulate(into: &c, a, b, transposeA: true)
            var expected = naiveMatmul(a, b, transposeA: true)
            expected += start
            XCTAssertLessThanOrEqual(c.maxAbsDifference(expected), 1e-4)
        }
    }

    /// The packed kernel's two register tiles (8 rows where AVX-512 has the
    /// registers for them, else 4: `Gemm.wideTile`) run each element of C as
    /// the same chain of FMAs, so switching tiles must not change a bit: every
    /// M from 1 to 20 (tails of 1-4 rows after tiles of 8, and the 4-row tile
    /// alone), an expert's 13 and 19 tokens, the GPT's 2,048 rows, K across
    /// the 256 slice, A row-major and transposed, accumulating; and both tiles
    /// against the naive loop on the edge sizes.
    func testWideAndNarrowTilesGiveTheSameFloats() {
        let saved = Gemm.wideTile
        defer { Gemm.wideTile = saved }
        var rng = Xoshiro256(seed: 7)
        var shapes = (1...20).map { ($0, 40, 70) }
        shapes += [(13, 256, 128), (19, 128, 256), (67, 300, 100), (130, 513, 33), (2048, 256, 64)]
        for (m, k, n) in shapes {
            for (ta, tb) in [(false, false), (true, false), (false, true)] {
                let a = Tensor.uniform(ta ? [k, m] : [m, k], low: -1, high: 1, rng: &rng)
                let b = Tensor.uniform(tb ? [n, k] : [k, n], low: -1, high: 1, rng: &rng)
                let start = Tensor.uniform([m, n], low: -1, high: 1, rng: &rng)
                var results: [Tensor] = []
                for wide in [true, false] {
                    Gemm.wideTile = wide
                    var c = start
                    matmulAccumulate(into: &c, a, b, transposeA: ta, transposeB: tb, threads: 1)
                    results += [matmul(a, b, transposeA: ta, transposeB: tb, threads: 1), c]
                }
                XCTAssertEqual(results[0], results[2], "\(m)×\(k)×\(n) transposeA \(ta) transposeB \(tb)")
                XCTAssertEqual(results[1], results[3], "\(m)×\(k)×\(n) transposeA \(ta) transposeB \(tb), accumulating")
            }
        }
        for wide in [true, false] {
            Gemm.wideTile = wide
            for m in [1, 4, 5, 8, 9, 12, 13, 17] {
                for (ta, tb) in [(false, false), (true, false), (false, true)] {
                    assertMatches(m: m + 64, k: 300, n: 33, transposeA: ta, transposeB: tb, rng: &rng)
                    assertMatches(m: m, k: 17, n: 65, transposeA: ta, transposeB: tb, rng: &rng)
                }
            }
        }
    }

    /// The A·Bᵀ kernel's lane sums (`SIMD16.totals`, built from whole-vector
    /// shuffles) against the tree they stand for, written lane by lane: lane
    /// l + 8 onto l, then l + 4, l + 2, l + 1. Values spread over 2⁻²⁰…2²⁰ so
    /// that any other pairing rounds differently; bit-identical required.
    func testLaneTotalsAreTheTreeOfHalves() {
        var rng = Xoshiro256(seed: 8)
        func tree(_ v: SIMD16<Float>) -> Float {
            var s = (0..<16).map { v[$0] }
            for w in [8, 4, 2, 1] { s = (0..<w).map { s[$0] + s[$0 + w] } }
            return s[0]
        }
        for _ in 0..<200 {
            var vs: [SIMD16<Float>] = []
            for _ in 0..<16 {
                var v = SIMD16<Float>()
                for l in 0..<16 {
                    let u = Tensor.uniform([2], low: -1, high: 1, rng: &rng).data
                    v[l] = u[0] * Float(pow(2.0, Double(Int(u[1] * 20))))
                }
                vs.append(v)
            }
            let t = SIMD16<Float>.totals(vs[0], vs[1], vs[2], vs[3], vs[4], vs[5], vs[6], vs[7],
                                         vs[8], vs[9], vs[10], vs[11], vs[12], vs[13], vs[14], vs[15])
            for i in 0..<16 {
                XCTAssertEqual(t[i].bitPattern, tree(vs[i]).bitPattern, "vector \(i)")
                XCTAssertEqual(vs[i].total.bitPattern, tree(vs[i]).bitPattern, "vector \(i), .total")
            }
        }
    }

    func testSmallProductByHand() {
        // [1 2; 3 4] · [5 6; 7 8] = [19 22; 43 50]
        let a = Tensor(shape: [2, 2], data: [1, 2, 3, 4])
        let b = Tensor(shape: [2, 2], data: [5, 6, 7, 8])
        XCTAssertEqual(matmul(a, b).data, [19, 22, 43, 50])
        XCTAssertEqual(matmul(a, b, transposeB: true).data, [17, 23, 39, 53])   // A·Bᵀ
        XCTAssertEqual(matmul(a, b, transposeA: true).data, [26, 30, 38, 44])   // Aᵀ·B
    }
}
