// Layer and Parameter: the two abstractions of this project's backprop.
//
// There is no autograd. Each layer caches what its backward pass needs during
// `forward`, and `backward` turns the gradient of the loss with respect to the
// layer's output, dL/dy, into the gradient with respect to its input, dL/dx,
// while *adding* dL/dθ into each parameter's `grad` (Notebooks/part2-implementation.md, §10).
// Adding, not assigning, is what lets a parameter used twice collect both
// contributions, and it is why the training loop calls `zeroGrad()` before
// every backward pass (the llm.c convention).

/// A trainable tensor and the gradient of the loss with respect to it.
public final class Parameter {
    /// The values the optimiser updates. Shape fixed at creation.
    public var value: Tensor
    /// dL/d(value), same shape; backward passes add into it.
    public var grad: Tensor

    public init(_ value: Tensor) {
        self.value = value
        self.grad = Tensor.zeros(like: value)
    }

    /// Sets the gradient to zero, keeping its storage.
    public func zeroGrad() {
        grad.data.withUnsafeMutableBufferPointer { $0.update(repeating: 0) }
    }
}

/// Anything with a hand-written forward and backward pass.
///
/// The contract, which `GradientCheck` verifies numerically:
///   * `forward(x)` returns y and caches what backward needs (usually x).
///   * `backward(dy)`, called after `forward`, returns dL/dx for the cached
///     input and adds dL/dθ into every parameter's `grad`.
public protocol Layer: AnyObject {
    func forward(_ x: Tensor) -> Tensor
    func backward(_ dy: Tensor) -> Tensor
    /// Parameters with their names relative to the layer ("weight", "up.bias"),
    /// in a fixed order. Checkpoints use these names.
    var namedParameters: [(name: String, parameter: Parameter)] { get }
}

extension Layer {
    /// The parameters alone, in `namedParameters` order.
    public var parameters: [Parameter] { namedParameters.map(\.parameter) }

    /// Number of trainable scalars.
    public var parameterCount: Int { parameters.reduce(0) { $0 + $1.value.count } }

    public func zeroGrad() { for p in parameters { p.zeroGrad() } }
}

/// Prefixes every name of `layer`'s parameters with `prefix` and a dot:
/// `("weight", w)` becomes `("input_proj.weight", w)`.
public func prefixed(_ prefix: String, _ named: [(name: String, parameter: Parameter)])
    -> [(name: String, parameter: Parameter)] {
    named.map { (name: prefix + "." + $0.name, parameter: $0.parameter) }
}
