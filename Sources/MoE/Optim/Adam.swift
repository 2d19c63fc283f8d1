// Adam (Kingma & Ba 2015), with PyTorch's defaults and bias correction.
//
// For each parameter θ with gradient g, at step t = 1, 2, …:
//
//     m ← β1·m + (1 − β1)·g            running mean of g
//     v ← β2·v + (1 − β2)·g²           running mean of g²
//     m̂ = m / (1 − β1ᵗ),  v̂ = v / (1 − β2ᵗ)   undo the bias of starting at 0
//     θ ← θ − lr · m̂ / (√v̂ + ε)
//
// Each weight gets its own step size, scaled by how large its gradients have
// been. The order of operations follows torch.optim.Adam (ε added after the
// square root), so the parity test agrees with PyTorch to float rounding.
// Notebooks/part2-implementation.md, §18.
import Foundation

/// The Adam optimiser. `step()` applies one update from the parameters' `grad`.
public final class Adam {
    public let parameters: [Parameter]
    public var learningRate: Float
    public let beta1: Float, beta2: Float, epsilon: Float
    /// Steps taken so far (t in the formulas).
    public private(set) var stepCount = 0

    /// A parameter's two moments. One object per parameter, so threads that
    /// update different parameters never touch the same object.
    final class Moments {
        var m: Tensor   // running mean of g,  same shape as the parameter
        var v: Tensor   // running mean of g², same shape as the parameter
        init(like t: Tensor) { m = .zeros(like: t); v = .zeros(like: t) }
    }
    private var moments: [Moments]

    /// First and second moments, one per parameter (for checkpoints).
    public var m: [Tensor] { moments.map(\.m) }
    public var v: [Tensor] { moments.map(\.v) }

    public init(parameters: [Parameter], learningRate: Float = 1e-3,
                beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon
        moments = parameters.map { Moments(like: $0.value) }
    }

    /// One update of every parameter from its current gradient.
    ///
    /// Adam reads four floats per weight, writes three, and does two divisions
    /// and a square root for each, which the core's divider does one vector at
    /// a time: the MNIST MoE's 733k weights take one core about 0.5 ms. From
    /// `parallelThreshold` weights on the update is spread over the threads in
    /// one parallel region (`plan`). Every weight's update is the same
    /// arithmetic whichever thread does it, so results do not depend on the
    /// thread count.
    public func step() {
        stepCount += 1
        let t = Float(stepCount)
        let rule = Rule(beta1: beta1, beta2: beta2, epsilon: epsilon,
                        stepSize: learningRate / (1 - pow(beta1, t)),
                        correction2Root: (1 - pow(beta2, t)).squareRoot())
        let total = parameters.reduce(0) { $0 + $1.value.count }
        let threads = total >= Adam.parallelThreshold ? max(1, Parallel.threads) : 1
        if plan.count != threads { plan = Adam.makePlan(sizes: parameters.map(\.value.count), threads: threads) }
        let plan = self.plan
        // Every tensor's storage is opened once, on this thread, before the
        // region: opening a tensor for writing may copy it (copy-on-write, when
        // its array is shared), and two threads opening the same tensor (a
        // large one, split) would each copy it at once.
        withEveryStorage { storage in
            Parallel.forEach(threads, threads: threads) { thread in
                for piece in plan[thread] {
                    guard let s = storage[piece.parameter] else { continue }
                    rule.apply(s.theta, s.m, s.v, s.g, piece.range)
                }
            }
        }
    }

    /// θ, m, v and g of one parameter, open for the duration of a step.
    private struct Storage {
        let theta: UnsafeMutablePointer<Float>, m: UnsafeMutablePointer<Float>
        let v: UnsafeMutablePointer<Float>, g: UnsafePointer<Float>
    }

    /// Runs `body` with the storage of every parameter (nil for an empty one),
    /// by opening them one inside the other: a pointer into an array is valid
    /// only inside the closure that lent it, so all of them must be open at
    /// once for one parallel region to use them. The nesting is as deep as
    /// there are parameter tensors (38 for the MNIST MoE, about a hundred for
    /// gpt-moe's GPT), each level a small stack frame.
    private func withEveryStorage(_ body: ([Storage?]) -> Void) {
        var open: [Storage?] = []
        open.reserveCapacity(parameters.count)
        func descend(_ index: Int) {
            if index == parameters.count { body(open); return }
            if parameters[index].value.count == 0 {
                open.append(nil)
                descend(index + 1)
                return
            }
            withStorage(index) { theta, m, v, g, _ in
                open.append(Storage(theta: theta, m: m, v: v, g: g))
                descend(index + 1)
            }
        }
        descend(0)
    }

    /// Below this many weights, one thread updates them all: a second thread
    /// starts some 0.06–0.1 ms late on the 2-vCPU machines this was measured
    /// on, more than half of a small model's update. Both MNIST models are above
    /// it: moe-bench's MoE step (733k weights) on two threads took 2.01, 3.76
    /// and 1.75 ms with Adam on one thread and 1.54, 3.13 and 1.53 ms with it
    /// split, the dense step (269k) the same either way (three interleaved runs,
    /// 2026-12-02; the second shared the machine with other work).
    static let parallelThreshold = 1 << 18

    /// Tensors at least this large are split between threads (64k floats = 256 KiB).
    static let largeTensor = 1 << 16

    /// Which weights each thread updates: a list of (parameter, range) per thread.
    /// Large tensors (the 784×256 input weight) are cut into equal ranges, one
    /// per thread; the many small ones are shared out whole, largest first, to
    /// the least loaded thread.
    private var plan: [[(parameter: Int, range: Range<Int>)]] = []

    static func makePlan(sizes: [Int], threads: Int) -> [[(parameter: Int, range: Range<Int>)]] {
        var plan = [[(parameter: Int, range: Range<Int>)]](repeating: [], count: threads)
        var load = [Int](repeating: 0, count: threads)
        for (index, count) in sizes.enumerated() where count >= largeTensor {
            for part in 0..<threads {
                let range = (count * part / threads)..<(count * (part + 1) / threads)
                plan[part].append((index, range))
                load[part] += range.count
            }
        }
        let small = sizes.indices.filter { sizes[$0] < largeTensor && sizes[$0] > 0 }
        for index in small.sorted(by: { sizes[$0] > sizes[$1] }) {
            let thread = load.indices.min { load[$0] < load[$1] }!
            plan[thread].append((index, 0..<sizes[index]))
            load[thread] += sizes[index]
        }
        return plan
    }

    /// The update of one weight, with this step's constants.
    struct Rule {
        let beta1: Float, beta2: Float, epsilon: Float
        let stepSize: Float          // lr / (1 − β1ᵗ)
        let correction2Root: Float   // √(1 − β2ᵗ)

        func apply(_ theta: UnsafeMutablePointer<Float>, _ m: UnsafeMutablePointer<Float>,
                   _ v: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>, _ range: Range<Int>) {
            for i in range {
                // A weight whose gradient has stopped (a dead ReLU unit, an
                // always-black border pixel's input weight) keeps m ← 0.9·m:
                // within a few hundred steps m falls below 2⁻¹²⁶ into the
                // subnormal floats, and every x86 instruction that meets one
                // takes a microcode detour of ~100 cycles. By the end of the
                // MNIST run 9% of m was subnormal and Adam took 39% of the
                // run. Such an m is flushed to 0: its update lr·m/(√v̂ + ε) is
                // below 10⁻³² and moves no weight larger than ~10⁻²⁵, so the
                // trained weights stay the same floats (checked on the MNIST runs
                // the notebooks quote; Notebooks/part2-implementation.md, §18).
                let mi = beta1 * m[i] + (1 - beta1) * g[i]
                m[i] = mi.magnitude < Float.leastNormalMagnitude ? 0 : mi
                v[i] = beta2 * v[i] + (1 - beta2) * g[i] * g[i]
                // PyTorch: θ −= (lr / c1) · m / (√v / √c2 + ε).
                // `.magnitude` changes nothing (v ≥ 0) but tells the compiler the
                // root's argument is never negative; otherwise, on Linux, it keeps a
                // per-element call to the C library's sqrtf (which must set errno
                // for negative input), the loop does not vectorise, and Adam took a
                // third of a training step.
                theta[i] -= stepSize * m[i] / (v[i].magnitude.squareRoot() / correction2Root + epsilon)
            }
        }
    }

    /// Runs `body` with the storage of parameter `index`: θ, m, v, g and the count.
    private func withStorage(_ index: Int, _ body: (UnsafeMutablePointer<Float>, UnsafeMutablePointer<Float>,
                                                    UnsafeMutablePointer<Float>, UnsafePointer<Float>, Int) -> Void) {
        let p = parameters[index], state = moments[index]
        guard p.value.count > 0 else { return }   // an empty tensor has no storage to point at
        p.value.data.withUnsafeMutableBufferPointer { theta in
            state.m.data.withUnsafeMutableBufferPointer { m in
                state.v.data.withUnsafeMutableBufferPointer { v in
                    p.grad.data.withUnsafeBufferPointer { g in
                        body(theta.baseAddress!, m.baseAddress!, v.baseAddress!, g.baseAddress!, theta.count)
                    }
                }
            }
        }
    }

    /// Restores the optimiser's state (for resuming a run from a checkpoint).
    public func restore(step: Int, m: [Tensor], v: [Tensor]) {
        precondition(m.count == parameters.count && v.count == parameters.count,
                     "Adam.restore: \(m.count)/\(v.count) moment tensors for \(parameters.count) parameters")
        for i in parameters.indices {
            precondition(m[i].shape == parameters[i].value.shape && v[i].shape == parameters[i].value.shape,
                         "Adam.restore: moment shape \(m[i].shape) does not match parameter \(parameters[i].value.shape)")
            moments[i].m = m[i]
            moments[i].v = v[i]
        }
        stepCount = step
    }
}

/// Plain stochastic gradient descent: θ ← θ − lr·g. The baseline Adam improves on.
public final class SGD {
    public let parameters: [Parameter]
    public var learningRate: Float

    public init(parameters: [Parameter], learningRate: Float) {
        self.parameters = parameters
        self.learningRate = learningRate
    }

    public func step() {
        for p in parameters {
            for i in 0..<p.value.count { p.value.data[i] -= learningRate * p.grad.data[i] }
        }
    }
}
