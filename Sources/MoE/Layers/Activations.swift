// Activations: ReLU and GELU, element-wise non-linearities.
//
// Both act on each number independently, so their Jacobian is diagonal and the
// backward pass is an element-wise product: dL/dx = dL/dy ⊙ f′(x).
// Derivations: Notebooks/part2-implementation.md, §3.
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
public final class GELU: Layer {
    private var input = Tensor.zeros([0])  // x, cached
    static let c = Float((2.0 / Double.pi).squareRoot())  // √(2/π)
    static let a: Float = 0.044715

    public init() {}
    public var namedParameters: [(name: String, parameter: Parameter)] { [] }

    public func forward(_ x: Tensor) -> Tensor {
        input = x
        var y = x
        for i in 0..<y.count {
            let v = x.data[i]
            let u = GELU.c * (v + GELU.a * v * v * v)
            y.data[i] = 0.5 * v * (1 + tanhf(u))
        }
        return y
    }

    /// With t = tanh(u) and du/dx = √(2/π)·(1 + 3·0.044715·x²):
    ///
    ///     dy/dx = ½·(1 + t) + ½·x·(1 − t²)·du/dx
    ///
    /// dL/dx = dL/dy ⊙ dy/dx. Caches x.
    public func backward(_ dy: Tensor) -> Tensor {
        precondition(dy.shape == input.shape, "GELU.backward: dy has shape \(dy.shape), forward input was \(input.shape)")
        var dx = dy
        for i in 0..<dx.count {
            let v = input.data[i]
            let t = tanhf(GELU.c * (v + GELU.a * v * v * v))
            let du = GELU.c * (1 + 3 * GELU.a * v * v)
            dx.data[i] = dy.data[i] * (0.5 * (1 + t) + 0.5 * v * (1 - t * t) * du)
        }
        return dx
    }
}
