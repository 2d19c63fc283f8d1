// Activations: ReLU and GELU, element-wise non-linearities.
//
// Both act on each number independently, so their Jacobian is diagonal and the
// backward pass is an element-wise product: dL/dx = dL/dy ⊙ f′(x).
// Derivations: Notebooks/part2-implementation.md, §12.
import Foundation

/// ReLU(x) = max(0, x). The MNIST model's non-linearity.
public final class ReLU: Layer {
    private var output = Tensor.zeros([0])  // y, cached: y > 0 exactly where x > 0

    public init() {}
    public var namedParameters: [(name: String, parameter: Parameter)] { [] }

    /// y = max(0, x), any shape.
    public func forward(_ x: Tensor) -> Tensor {
        var y = x
        y.data.withUnsafeMutableBufferPointer { p in
            for i in p.indices where p[i] < 0 { p[i] = 0 }
        }
        output = y
        return y
    }

    /// y = max(0, x)  ⇒  dy/dx = 1 where x > 0, else 0 (we take 0 at the kink).
    /// So dL/dx = dL/dy where y > 0, else 0. Caches y, which tells the same as x.
    public func backward(_ dy: Tensor) -> Tensor {
        precondition(dy.shape == output.shape, "ReLU.backward: dy has shape \(dy.shape), forward output was \(output.shape)")
        var dx = dy
        dx.data.withUnsafeMutableBufferPointer { d in
            output.data.withUnsafeBufferPointer { y in
                for i in d.indices where y[i] <= 0 { d[i] = 0 }
            }
        }
        return dx
    }
}

/// GELU, tanh form (Hendrycks & Gimpel 2016; GPT-2's choice):
///
///     GELU(x) = ½·x·(1 + tanh(u)),   u = √(2/π)·(x + 0.044715·x³)
///
/// Computed 16 values at a time with SIMD16<Float> and `fastTanh` (below);
/// forward caches t = tanh(u), so backward needs no second tanh. Large tensors
/// (the dense MLP of a GPT block: tokens × hidden units) are split between threads.
public final class GELU: Layer {
    private var input = Tensor.zeros([0])  // x, cached
    private var tanhU = Tensor.zeros([0])  // t = tanh(u), same shape, cached
    static let c = Float((2.0 / Double.pi).squareRoot())  // √(2/π)
    static let a: Float = 0.044715
    /// Tensors with at least this many elements are split between threads
    /// (2¹⁷ floats = 512 KiB; below that the hand-off costs more than it saves,
    /// and an MoE already runs its experts on separate threads).
    static let parallelThreshold = 1 << 17

    public init() {}
    public var namedParameters: [(name: String, parameter: Parameter)] { [] }

    public func forward(_ x: Tensor) -> Tensor {
        input = x
        let count = x.count
        // y and t are written whole by the loop: made without zeroing or copying x.
        var t = Tensor.zeros([0])
        let y = Tensor(shape: x.shape, writingEvery: { yp in
            t = Tensor(shape: x.shape, writingEvery: { tp in
                x.data.withUnsafeBufferPointer { xs in
                    let xp = xs.baseAddress!
                    let (c, a) = (GELU.c, GELU.a)   // locals: a static is re-checked on every use
                    // Full blocks load and store 16 lanes directly, apart from the short
                    // tail: with one path for both, the compiler computed every block one
                    // lane at a time (scalar code, 4–7× slower; measured on x86-64).
                    GELU.forEachBlock(count) { i, n in
                        @inline(__always) func tanhOfU(_ v: SIMD16<Float>) -> SIMD16<Float> { fastTanh(c * (v + a * v * v * v)) }
                        if n == 16 {
                            let v = UnsafeRawPointer(xp + i).loadUnaligned(as: SIMD16<Float>.self)
                            let th = tanhOfU(v)
                            UnsafeMutableRawPointer(tp + i).storeBytes(of: th, as: SIMD16<Float>.self)
                            UnsafeMutableRawPointer(yp + i).storeBytes(of: 0.5 * v * (1 + th), as: SIMD16<Float>.self)
                        } else {
                            let v = loadFloats(xp + i, n)
                            let th = tanhOfU(v)
                            storeFloats(th, tp + i, n)
                            storeFloats(0.5 * v * (1 + th), yp + i, n)
                        }
                    }
                }
            })
        })
        tanhU = t
        return y
    }

    /// With t = tanh(u) and du/dx = √(2/π)·(1 + 3·0.044715·x²):
    ///
    ///     dy/dx = ½·(1 + t) + ½·x·(1 − t²)·du/dx
    ///
    /// dL/dx = dL/dy ⊙ dy/dx. Caches x and t.
    public func backward(_ dy: Tensor) -> Tensor {
        precondition(dy.shape == input.shape, "GELU.backward: dy has shape \(dy.shape), forward input was \(input.shape)")
        var dx = dy
        let count = dx.count
        guard count > 0 else { return dx }
        input.data.withUnsafeBufferPointer { xs in
            tanhU.data.withUnsafeBufferPointer { ts in
                dx.data.withUnsafeMutableBufferPointer { ds in
                    let (xp, tp, dp) = (xs.baseAddress!, ts.baseAddress!, ds.baseAddress!)
                    let (c, a) = (GELU.c, GELU.a)
                    GELU.forEachBlock(count) { i, n in   // full blocks apart from the tail, as in forward
                        @inline(__always) func slope(_ v: SIMD16<Float>, _ th: SIMD16<Float>) -> SIMD16<Float> {
                            let du = c * (1 + 3 * a * v * v)
                            return 0.5 * (1 + th) + 0.5 * v * (1 - th * th) * du
                        }
                        if n == 16 {
                            let v = UnsafeRawPointer(xp + i).loadUnaligned(as: SIMD16<Float>.self)
                            let th = UnsafeRawPointer(tp + i).loadUnaligned(as: SIMD16<Float>.self)
                            let d = UnsafeRawPointer(dp + i).loadUnaligned(as: SIMD16<Float>.self)
                            UnsafeMutableRawPointer(dp + i).storeBytes(of: d * slope(v, th), as: SIMD16<Float>.self)
                        } else {
                            let v = loadFloats(xp + i, n), th = loadFloats(tp + i, n)
                            storeFloats(loadFloats(dp + i, n) * slope(v, th), dp + i, n)
                        }
                    }
                }
            }
        }
        return dx
    }

    /// Calls `body(i, n)` for blocks of n = 16 elements starting at i (the last
    /// block of each thread's share may be shorter), covering 0..<count once.
    /// Large counts are cut into one share per thread, at multiples of 16; the
    /// shares are disjoint, so the threads write disjoint elements.
    static func forEachBlock(_ count: Int, _ body: (Int, Int) -> Void) {
        let parts = count >= parallelThreshold ? max(1, Parallel.threads) : 1
        let blocks = (count + 15) / 16
        Parallel.forEach(parts) { p in
            var i = 16 * (blocks * p / parts)
            let end = min(count, 16 * (blocks * (p + 1) / parts))
            while i < end {
                body(i, min(16, end - i))
                i += 16
            }
        }
    }
}

/// n ≤ 16 floats from `p` into a vector, zeros after them.
@inline(__always)
func loadFloats(_ p: UnsafePointer<Float>, _ n: Int) -> SIMD16<Float> {
    if n == 16 { return UnsafeRawPointer(p).loadUnaligned(as: SIMD16<Float>.self) }
    var v = SIMD16<Float>()
    for j in 0..<n { v[j] = p[j] }
    return v
}

/// The first n ≤ 16 lanes of `v` to `p`.
@inline(__always)
func storeFloats(_ v: SIMD16<Float>, _ p: UnsafeMutablePointer<Float>, _ n: Int) {
    if n == 16 { UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD16<Float>.self); return }
    for j in 0..<n { p[j] = v[j] }
}

// MARK: - tanh for GELU, in plain SIMD arithmetic
//
// Why this exists: GELU computes a tanh for every hidden unit of every token,
// 2048 × 256 of them per layer and step in gpt-moe's default model. The C
// library's `tanhf` is one call per element; profiling a training step found
// 45% of its time inside `tanhf` and the GELU loops, more than in all the
// matmuls together. Written as multiply-adds and bit operations on
// SIMD16<Float>, tanh costs a few instructions per 16 values.
//
// Goals, in order: (1) accurate to within a few units in the last place, so
// gradient checks cannot tell the difference from `tanhf` (GPTLayerTests
// measures the error over the whole range); (2) correct at the ends: no NaN,
// no inf, tanh saturates to exactly ±1; (3) fast.
//
// e^x by range reduction (Cody & Waite):
//     k = round(x / ln 2),  r = x − k·ln 2 ∈ [−ln2/2, ln2/2]
//     e^x = 2^k · e^r
// e^r is a Taylor polynomial to r⁶: the first term left out is |r|⁷/7! ≤ 1.2e-7,
// one unit in the last place of a Float. 2^k is built directly from its
// exponent bits. ln 2 is split in two parts (the first has few mantissa bits,
// so k times it is exact) so that r keeps its accuracy when |k| is large.
//
// tanh from e^x:  tanh(u) = 1 − 2 / (e^{2u} + 1). As u → +∞ the fraction goes
// to 0 and tanh to 1; as u → −∞, e^{2u} → 0 and tanh to −1. Near 0 the
// subtraction loses relative (not absolute) accuracy: the absolute error stays
// ~1e-7, which is all GELU needs (it multiplies tanh by x/2 and adds x/2).
// Notebooks/part4-gpt.md, §5.
//
// They live in this file, beside their one user, on purpose: a debug build
// (`swift run`) compiles files separately, and a function in another file is
// not inlined into GELU's loop.

/// e^x lane by lane, relative error ≤ 2.5e-7 (measured on [−87, 88] by GPTLayerTests); clamps x to [−87, 88]
/// (below, the result would be subnormal; above, inf); NaN stays NaN.
@inline(__always)
func fastExp(_ x: SIMD16<Float>) -> SIMD16<Float> {
    // Clamp and round with plain compares and adds, not `clamped(lowerBound:upperBound:)`
    // and `rounded(.toNearestOrEven)`: on x86-64 those two compiled to one lane at a
    // time (scalar vroundss and branches), and GELU took 13% of a GPT training step at
    // 12–15 ns per value; as selects and adds it runs at 1–2 ns. Same values, bit for bit,
    // for every non-NaN x (checked over [−100, 100] against the old form); a NaN now stays NaN.
    let low = SIMD16<Float>(repeating: -87), high = SIMD16<Float>(repeating: 88)
    let clamped = x.replacing(with: low, where: x .< low).replacing(with: high, where: x .> high)
    // Round to the nearest integer, ties to even: adding 1.5·2²³ pushes the fraction out
    // of the mantissa (the FPU rounds it away, to nearest even), and subtracting it
    // again leaves the integer. Exact for |y| < 2²²; here |y| ≤ 127.
    let shifter = SIMD16<Float>(repeating: 12_582_912)
    let k = (clamped * 1.442_695_04 + shifter) - shifter   // x / ln 2, nearest integer, k ∈ [−126, 127]
    // r = x − k·ln 2 with ln 2 = 0.693359375 − 2.12194440e-4 (the first part exact in 9 bits).
    let r = (clamped - k * 0.693_359_375) + k * 2.121_944_40e-4
    var p = SIMD16<Float>(repeating: 1.0 / 720)
    p = p * r + 1.0 / 120
    p = p * r + 1.0 / 24
    p = p * r + 1.0 / 6
    p = p * r + 0.5
    p = p * r + 1
    p = p * r + 1
    // 2^k from its exponent field, k + 127 ∈ [1, 254]. Adding 2²³ puts the integer
    // k + 127 into the mantissa bits of a Float, where a mask reads it off.
    let biased = unsafeBitCast(k + 8_388_735, to: SIMD16<UInt32>.self) & 0x7F_FFFF   // 8,388,735 = 2²³ + 127
    return p * unsafeBitCast(biased &<< 23, to: SIMD16<Float>.self)
}

/// tanh(x) = 1 − 2/(e^{2x} + 1) lane by lane, absolute error ≤ 1.9e-7 (measured on [−20, 20]); exactly ±1 for large |x|.
@inline(__always)
func fastTanh(_ x: SIMD16<Float>) -> SIMD16<Float> {
    1 - 2 / (fastExp(2 * x) + 1)
}
