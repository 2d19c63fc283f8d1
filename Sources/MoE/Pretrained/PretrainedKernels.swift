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
// The kernel walks W one row at a time: widen the row into a small Float
// buffer (in L1 cache), then take its dot product with each of the T input
// rows. Rows are split between threads in contiguous blocks, each thread
// writing its own columns of y, so there are no races and the result does not
// depend on the thread count (each dot product is summed in the same order).
//
// Legend: T tokens, I input width, O output width.
import Foundation

enum PretrainedKernels {
    /// y[t, o] = Σᵢ x[t, i]·W[o, i] (+ bias[o]).   x [T, I], W [O, I] → y [T, O]
    static func linear(_ x: [Float], tokens: Int, _ w: WeightTensor, bias: [Float]? = nil) -> [Float] {
        let outputs = w.shape[0], inputs = w.shape[1]
        precondition(x.count == tokens * inputs, "linear: input has \(x.count) values, expected \(tokens)×\(inputs) for \(w.name)")
        var y = [Float](repeating: 0, count: tokens * outputs)
        // Enough blocks to balance the threads, each big enough to be worth a dispatch.
        let blocks = min(outputs, max(1, min(Parallel.threads * 4, outputs * inputs * max(tokens, 1) / 32_768)))
        x.withUnsafeBufferPointer { xp in
            y.withUnsafeMutableBufferPointer { yp in
                let out = yp.baseAddress!, input = xp.baseAddress!
                Parallel.forEach(blocks) { block in
                    let start = block * outputs / blocks, end = (block + 1) * outputs / blocks
                    withUnsafeTemporaryAllocation(of: Float.self, capacity: inputs) { row in
                        for o in start..<end {
                            let r = widenRow(w, o, into: row.baseAddress!)
                            for t in 0..<tokens {
                                out[t * outputs + o] = dot(input + t * inputs, r, inputs) + (bias?[o] ?? 0)
                            }
                        }
                    }
                }
            }
        }
        return y
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
