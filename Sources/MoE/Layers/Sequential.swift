// Sequential: layers applied one after another, y = fₙ(…f₂(f₁(x))).
//
// Backward is the chain rule read right to left: each layer turns the gradient
// of its output into the gradient of its input, which is the gradient of the
// previous layer's output.

/// A chain of named layers, e.g. `Sequential([("up", up), ("act", ReLU()), ("down", down)])`.
public final class Sequential: Layer {
    public let layers: [(name: String, layer: Layer)]

    public init(_ layers: [(name: String, layer: Layer)]) { self.layers = layers }

    public func forward(_ x: Tensor) -> Tensor {
        var h = x
        for (_, layer) in layers { h = layer.forward(h) }
        return h
    }

    public func backward(_ dy: Tensor) -> Tensor {
        var g = dy
        for (_, layer) in layers.reversed() { g = layer.backward(g) }
        return g
    }

    public var namedParameters: [(name: String, parameter: Parameter)] {
        layers.flatMap { prefixed($0.name, $0.layer.namedParameters) }
    }
}
