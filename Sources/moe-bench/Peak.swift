// Peak: how close to the machine's limit is a training step?
//
// A step time alone does not say whether it is good. Two numbers make it a
// fraction:
//
//   * the step's arithmetic, counted from the model's shapes: every matmul is
//     2·M·K·N floating-point operations (a multiply and an add per term), and a
//     Linear layer costs three of them per step — forward y = x·Wᵀ, dL/dx =
//     dL/dy·W and dL/dW = dL/dyᵀ·x — except the first layer, whose input is
//     data and needs no dL/dx (Linear.swift, `backwardParameters`). The MoE's
//     experts see B·k rows between them (every token's k slots, none dropped),
//     whatever the split. Everything else (ReLU, softmax, routing, Adam) is
//     under 1% of the operations and left out, so the fraction is slightly
//     flattering to the step, never unfair to it.
//   * the peak: what the cores' FMA units do when given nothing but
//     independent fused multiply-adds on SIMD16<Float> registers — the same
//     instruction the matmul's micro-kernel issues, with enough independent
//     accumulators (12) to cover the FMA latency. It is measured, not read off
//     a data sheet, so it is this machine's peak at this moment (turbo, other
//     tenants), on the same thread counts as the step.
//
// step GFLOP/s = step FLOPs / step seconds; "of peak" = that / the peak.
//
// And what a step pays besides arithmetic each time it uses more than one
// thread: the cost of entering a parallel region (`measureRegion`, at the end).
import Dispatch
import MoE

/// The matmul operations of one training step (forward, backward) of `model`
/// on a batch of `batch` rows, from its layer shapes.
func trainingStepFLOPs(_ model: Classifier, batch: Int) -> Double {
    func product(_ rows: Int, _ layer: Linear, inputGradient: Bool = true) -> Double {
        2 * Double(rows * layer.inFeatures * layer.outFeatures) * (inputGradient ? 3 : 2)
    }
    if let moe = model as? MoEClassifier {
        let slots = batch * moe.moe.router.slots                        // B·k rows among the experts
        let expert = moe.moe.experts[0]
        return product(batch, moe.inputProj, inputGradient: false)
            + product(batch, moe.moe.gate)                               // the gate's logits [B, N]
            + product(slots, expert.up) + product(slots, expert.down)
            + product(batch, moe.outputProj)
    }
    if let dense = model as? DenseClassifier {
        return product(batch, dense.inputProj, inputGradient: false)
            + product(batch, dense.ffn.up) + product(batch, dense.ffn.down)
            + product(batch, dense.outputProj)
    }
    return .nan
}

/// The measured FMA peak on `threads` threads, GFLOP/s: each thread runs
/// 12 independent chains of `acc = acc + a·b` on SIMD16<Float> (16 lanes × 2
/// operations per FMA), median of 7 runs of about 20 ms each.
func fmaPeakGFLOPS(threads: Int) -> Double {
    let iterations = 400_000
    var samples: [Double] = []
    for _ in 0..<7 {
        var sinks = [Float](repeating: 0, count: threads)
        let t0 = now()
        sinks.withUnsafeMutableBufferPointer { out in
            Parallel.forEach(threads, threads: threads) { t in out[t] = fmaChains(iterations, seed: Float(t + 1)) }
        }
        let seconds = now() - t0
        precondition(sinks.allSatisfy(\.isFinite))   // keeps the work from being optimised away
        samples.append(Double(threads * iterations * 12 * 16 * 2) / seconds / 1e9)
    }
    samples.sort()
    return samples[samples.count / 2]
}

/// 12 accumulators, so 12 FMAs are in flight: an FMA takes about 4 cycles and
/// a core starts two per cycle, so fewer chains would measure latency, not
/// throughput. a·b is kept near 1 and the accumulators decay (× 0.5 + …), so
/// nothing overflows however long it runs.
@inline(never)
func fmaChains(_ iterations: Int, seed: Float) -> Float {
    let a = SIMD16<Float>(repeating: 0.5), b = SIMD16<Float>(repeating: seed / (seed + 1))
    var c0 = SIMD16<Float>(repeating: 0), c1 = c0 + 1, c2 = c0 + 2, c3 = c0 + 3, c4 = c0 + 4, c5 = c0 + 5
    var c6 = c0 + 6, c7 = c0 + 7, c8 = c0 + 8, c9 = c0 + 9, c10 = c0 + 10, c11 = c0 + 11
    for _ in 0..<iterations {
        c0 = b.addingProduct(c0, a); c1 = b.addingProduct(c1, a); c2 = b.addingProduct(c2, a)
        c3 = b.addingProduct(c3, a); c4 = b.addingProduct(c4, a); c5 = b.addingProduct(c5, a)
        c6 = b.addingProduct(c6, a); c7 = b.addingProduct(c7, a); c8 = b.addingProduct(c8, a)
        c9 = b.addingProduct(c9, a); c10 = b.addingProduct(c10, a); c11 = b.addingProduct(c11, a)
    }
    let sum = (c0 + c1 + c2 + c3) + (c4 + c5 + c6 + c7) + (c8 + c9 + c10 + c11)
    return sum.sum()
}

// MARK: - What a parallel region costs

/// One row of the region table: `threads` units of FMA work of `unitSeconds`
/// each, run one per thread in one `Parallel.forEach` (`regionSeconds`), against
/// the same units one after another on one thread (`serialSeconds`). A region
/// that cost nothing would take `unitSeconds`; what it takes beyond that is the
/// price of entering it — on a virtual machine mostly the time a sleeping
/// vCPU takes to wake — and a split pays only for work well above it.
struct RegionRow { let threads: Int, unitSeconds: Double, serialSeconds: Double, regionSeconds: Double }

/// Medians of 201 back-to-back regions, as a training step enters them, for
/// units of about `unitMicroseconds`.
func measureRegion(threads: Int, unitMicroseconds: Double) -> RegionRow {
    // Calibrate: iterations of fmaChains (12 FMAs on SIMD16 each) per µs.
    let probe = 20_000
    var t0 = now()
    var sink = fmaChains(probe, seed: 1)
    let perIteration = (now() - t0) / Double(probe)
    let iterations = max(1, Int(unitMicroseconds * 1e-6 / perIteration))
    func median(_ body: () -> Void) -> Double {
        var samples: [Double] = []
        for _ in 0..<201 { t0 = now(); body(); samples.append(now() - t0) }
        samples.sort()
        return samples[samples.count / 2]
    }
    var out = [Float](repeating: 0, count: threads)
    let unit = median { sink += fmaChains(iterations, seed: 2) }
    let serial = median { for t in 0..<threads { sink += fmaChains(iterations, seed: Float(t + 2)) } }
    let region = median {
        out.withUnsafeMutableBufferPointer { o in
            Parallel.forEach(threads, threads: threads) { t in o[t] = fmaChains(iterations, seed: Float(t + 2)) }
        }
    }
    precondition(sink.isFinite && out.allSatisfy(\.isFinite))   // keeps the work from being optimised away
    return RegionRow(threads: threads, unitSeconds: unit, serialSeconds: serial, regionSeconds: region)
}
