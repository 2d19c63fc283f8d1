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
// Notebooks/part2-implementation.md, §7.
import Foundation

/// The Adam optimiser. `step()` applies one update from the parameters' `grad`.
public final class Adam {
    public let parameters: [Parameter]
    public var learningRate: Float
    public let beta1: Float, beta2: Float, epsilon: Float
    /// Steps taken so far (t in the formulas).
    public private(set) var stepCount = 0
    /// First and second moments, one per parameter, same shapes.
    public private(set) var m: [Tensor]
    public private(set) var v: [Tensor]

    public init(parameters: [Parameter], learningRate: Float = 1e-3,
                beta1: Float = 0.9, beta2: Float = 0.999, epsilon: Float = 1e-8) {
        self.parameters = parameters
        self.learningRate = learningRate
        self.beta1 = beta1; self.beta2 = beta2; self.epsilon = epsilon
        m = parameters.map { Tensor.zeros(like: $0.value) }
        v = parameters.map { Tensor.zeros(like: $0.value) }
    }

    /// One update of every parameter from its current gradient.
    public func step() {
        stepCount += 1
        let t = Float(stepCount)
        let correction1 = 1 - pow(beta1, t)
        let correction2Root = (1 - pow(beta2, t)).squareRoot()
        let (b1, b2, eps) = (beta1, beta2, epsilon)
        let stepSize = learningRate / correction1
        for (index, p) in parameters.enumerated() {
            let count = p.value.count
            p.value.data.withUnsafeMutableBufferPointer { thetaBuffer in
                m[index].data.withUnsafeMutableBufferPointer { mBuffer in
                    v[index].data.withUnsafeMutableBufferPointer { vBuffer in
                        p.grad.data.withUnsafeBufferPointer { gBuffer in
                            // 16 weights at a time with SIMD16 (the compiler does not
                            // vectorise the scalar loop: it cannot prove the four arrays
                            // do not overlap), then the scalar remainder.
                            let theta = UnsafeMutableRawPointer(thetaBuffer.baseAddress!)
                            let mm = UnsafeMutableRawPointer(mBuffer.baseAddress!)
                            let vv = UnsafeMutableRawPointer(vBuffer.baseAddress!)
                            let g = UnsafeRawPointer(gBuffer.baseAddress!)
                            typealias V = SIMD16<Float>
                            var i = 0
                            while i + 16 <= count {
                                let o = i * 4
                                let gi = g.loadUnaligned(fromByteOffset: o, as: V.self)
                                let mi = b1 * mm.loadUnaligned(fromByteOffset: o, as: V.self) + (1 - b1) * gi
                                let vi = b2 * vv.loadUnaligned(fromByteOffset: o, as: V.self) + (1 - b2) * gi * gi
                                mm.storeBytes(of: mi, toByteOffset: o, as: V.self)
                                vv.storeBytes(of: vi, toByteOffset: o, as: V.self)
                                // PyTorch: θ −= (lr / c1) · m / (√v / √c2 + ε)
                                let t = theta.loadUnaligned(fromByteOffset: o, as: V.self)
                                    - stepSize * mi / (vi.squareRoot() / correction2Root + eps)
                                theta.storeBytes(of: t, toByteOffset: o, as: V.self)
                                i += 16
                            }
                            let thetaF = thetaBuffer.baseAddress!, mF = mBuffer.baseAddress!
                            let vF = vBuffer.baseAddress!, gF = gBuffer.baseAddress!
                            while i < count {
                                mF[i] = b1 * mF[i] + (1 - b1) * gF[i]
                                vF[i] = b2 * vF[i] + (1 - b2) * gF[i] * gF[i]
                                thetaF[i] -= stepSize * mF[i] / (vF[i].squareRoot() / correction2Root + eps)
                                i += 1
                            }
                        }
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
        }
        self.stepCount = step; self.m = m; self.v = v
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
