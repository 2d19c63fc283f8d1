// PretrainedKernels: the matrix–vector products a pretrained model spends its time in.
//
// Every projection of a transformer layer — q, k, v, o, the router, each
// expert's gate, up and down — is y = x·Wᵀ with W stored as PyTorch stores a
// Linear: [out, in], one row per output. At decode time x is a single token,
// so each weight is read once per token and used for one multiply-add: the
// speed limit is memory bandwidth, not arithmetic (Notebooks/part5-pretrained.md, §6).
// That is why the weights stay in their 16-bit form: half the bytes to
// stream. A BF16 number is the top 16 bits of a Float, so widening it is one
// shift; F16 needs a real conversion (halfToFloat).
//
// The kernel walks W four rows at a time: widen the rows into a small Float
// buffer (in L1 cache), then take their dot products with each of the T input
// rows. Rows are split between threads in contiguous blocks, each thread
// writing its own columns of y, so there are no races and the result does not
// depend on the thread count (each dot product is summed in the same order).
//
// Legend: T tokens, I input width, O output width.
import Foundation

enum PretrainedKernels {
    /// y[t, o] = Σᵢ x[t, i]·W[o, i] (+ bias[o]).   x [T, I], W [O, I] → y [T, O]
    /// `threads: 1` when the caller already runs several products side by side
    /// (the experts of a layer): the result is the same for any thread count.
    static func linear(_ x: [Float], tokens: Int, _ w: WeightTensor, bias: [Float]? = nil,
                       threads: Int = Parallel.threads) -> [Float] {
        linear(x, tokens: tokens, [w], biases: [bias], threads: threads)[0]
    }

    /// Several products of the same input, yₘ = x·Wₘᵀ (+ biasₘ), in one parallel
    /// region: attention's q, k and v. The rows of all the W are dealt out as
    /// if they were one matrix, so a thread's block may end in k and go on in
    /// v; each output is the same dot product, in the same order, as `linear`
    /// of that W alone. One region instead of three saves two wake-ups of a
    /// sleeping core per layer and token (README "Speed").
    ///     x [T, I], Wₘ [Oₘ, I] → yₘ [T, Oₘ]
    static func linear(_ x: [Float], tokens: Int, _ ws: [WeightTensor], biases: [[Float]?],
                       threads: Int = Parallel.threads) -> [[Float]] {
        let inputs = ws[0].shape[1]
        for w in ws {
            precondition(w.shape[1] == inputs && x.count == tokens * inputs,
                         "linear: input has \(x.count) values, expected \(tokens)×\(w.shape[1]) for \(w.name)")
        }
        // Where each W's rows start in the rows of all of them; output m is the
        // segment [T, Oₘ] of one buffer, from tokens · first[m].
        var first = [0]
        for w in ws { first.append(first.last! + w.shape[0]) }
        let total = first.last!
        var y = [Float](repeating: 0, count: tokens * total)
        let blocks = blockCount(rows: total, inputs: inputs, tokens: tokens, threads: threads)
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                let input = xp.baseAddress!
                Parallel.forEach(blocks, threads: threads) { block in
                    let start = block * total / blocks, end = (block + 1) * total / blocks
                    for m in ws.indices where first[m] < end && start < first[m + 1] {
                        rows(max(start, first[m]) - first[m] ..< min(end, first[m + 1]) - first[m], of: ws[m],
                             bias: biases[m], input: input, tokens: tokens, into: yp.baseAddress! + tokens * first[m])
                    }
                }
            }
        }
        if ws.count == 1 { return [y] }   // one product: its buffer as it is, no copy
        return ws.indices.map { m in Array(y[(tokens * first[m])..<(tokens * first[m + 1])]) }
    }

    /// How many blocks of rows `linear` deals out (block b is rows b·R/n ..< (b+1)·R/n):
    /// enough to balance the threads, each big enough to be worth a dispatch.
    static func blockCount(rows: Int, inputs: Int, tokens: Int, threads: Int) -> Int {
        min(rows, max(1, min(threads * 4, rows * inputs * max(tokens, 1) / 32_768)))
    }

    /// out[t, o] = x[t]·W[o] (+ bias[o]) for the rows o in `range` of W.   out [T, O]
    private static func rows(_ range: Range<Int>, of w: WeightTensor, bias: [Float]?, input: UnsafePointer<Float>,
                             tokens: Int, into out: UnsafeMutablePointer<Float>) {
        let outputs = w.shape[0], inputs = w.shape[1]
        // Four rows of W at a time (16 KB of Floats at I = 1024: they stay in L1), so
        // each input row read from cache serves four dot products, not one. That is
        // what makes prefill (T in the hundreds) faster per token than decode.
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 4 * inputs) { rows in
            let scratch = rows.baseAddress!
            var o = range.lowerBound
            while o + 4 <= range.upperBound {
                let r0 = widenRow(w, o, into: scratch), r1 = widenRow(w, o + 1, into: scratch + inputs)
                let r2 = widenRow(w, o + 2, into: scratch + 2 * inputs), r3 = widenRow(w, o + 3, into: scratch + 3 * inputs)
                for t in 0..<tokens {
                    let d = dot4(input + t * inputs, r0, r1, r2, r3, inputs)
                    for j in 0..<4 { out[t * outputs + o + j] = d[j] + (bias?[o + j] ?? 0) }
                }
                o += 4
            }
            while o < range.upperBound {
                let r = widenRow(w, o, into: scratch)
                for t in 0..<tokens {
                    out[t * outputs + o] = dot(input + t * inputs, r, inputs) + (bias?[o] ?? 0)
                }
                o += 1
            }
        }
    }

    /// Row o of W as Floats: a pointer into the mapping for F32, else widened into `scratch`.
    @inline(__always)
    static func widenRow(_ w: WeightTensor, _ o: Int, into scratch: UnsafeMutablePointer<Float>) -> UnsafePointer<Float> {
        let n = w.shape[1]
        switch w.dtype {
        case .f32:
            let p = w.base + 4 * o * n
            if Int(bitPattern: p) % 4 == 0 { return p.assumingMemoryBound(to: Float.self) }
            for i in 0..<n { scratch[i] = p.loadUnaligned(fromByteOffset: 4 * i, as: Float.self) }
        case .bf16:
            // BF16 → Float: put the 16 bits on top of a 32-bit word, eight at a time.
            let p = w.base + 2 * o * n
            var i = 0
            while i + 8 <= n {
                let h = p.loadUnaligned(fromByteOffset: 2 * i, as: SIMD8<UInt16>.self)
                let f = unsafeBitCast(SIMD8<UInt32>(truncatingIfNeeded: h) &<< 16, to: SIMD8<Float>.self)
                UnsafeMutableRawPointer(scratch + i).storeBytes(of: f, as: SIMD8<Float>.self)
                i += 8
            }
            while i < n { scratch[i] = w.value(o * n + i); i += 1 }
        case .f16:
            for i in 0..<n { scratch[i] = halfToFloat(w.base.loadUnaligned(fromByteOffset: 2 * (o * n + i), as: UInt16.self)) }
        }
        return UnsafePointer(scratch)
    }

    /// Σᵢ a[i]·b[i], sixteen lanes at a time.
    @inline(__always)
    static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Float {
        var acc = SIMD16<Float>(repeating: 0)
        var i = 0
        let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
        while i + 16 <= n {
            acc.addProduct(ra.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self),
                           rb.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self))
            i += 16
        }
        var s = acc.sum()
        while i < n { s += a[i] * b[i]; i += 1 }
        return s
    }

    /// Four dot products of one input row with four weight rows, each summed in
    /// exactly the order `dot` sums it (so a row's result does not depend on
    /// whether it went through here or through `dot`).
    @inline(__always)
    static func dot4(_ a: UnsafePointer<Float>, _ b0: UnsafePointer<Float>, _ b1: UnsafePointer<Float>,
                     _ b2: UnsafePointer<Float>, _ b3: UnsafePointer<Float>, _ n: Int) -> SIMD4<Float> {
        var acc0 = SIMD16<Float>(repeating: 0), acc1 = acc0, acc2 = acc0, acc3 = acc0
        var i = 0
        let ra = UnsafeRawPointer(a)
        while i + 16 <= n {
            let x = ra.loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self)
            acc0.addProduct(x, UnsafeRawPointer(b0).loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self))
            acc1.addProduct(x, UnsafeRawPointer(b1).loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self))
            acc2.addProduct(x, UnsafeRawPointer(b2).loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self))
            acc3.addProduct(x, UnsafeRawPointer(b3).loadUnaligned(fromByteOffset: 4 * i, as: SIMD16<Float>.self))
            i += 16
        }
        var s = SIMD4<Float>(acc0.sum(), acc1.sum(), acc2.sum(), acc3.sum())
        while i < n {
            s[0] += a[i] * b0[i]; s[1] += a[i] * b1[i]; s[2] += a[i] * b2[i]; s[3] += a[i] * b3[i]
            i += 1
        }
        return s
    }

    /// One row of an embedding table [V, D], widened.   → [D]
    static func embeddingRow(_ table: WeightTensor, _ id: Int) -> [Float] {
        let d = table.shape[1]
        return [Float](unsafeUninitializedCapacity: d) { buffer, initialized in
            _ = widenRow(table, id, into: buffer.baseAddress!)
            if table.dtype == .f32 { for i in 0..<d { buffer[i] = table.value(id * d + i) } }
            initialized = d
        }
    }
}
