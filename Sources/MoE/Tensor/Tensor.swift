// Tensor: a shape and a flat, contiguous, row-major array of Floats.
//
// That is all a tensor is in this project. There is no autograd graph, no
// strides, no views, no broadcasting machinery: every layer knows the shapes it
// works with and writes its own backward pass by hand (Notebooks/part2-implementation.md, §10).
// Keeping the data contiguous and row-major means element (i, j) of a matrix
// of shape [rows, cols] lives at `data[i * cols + j]`, which is what the
// matmul kernels (Matmul.swift) and PyTorch's checkpoints both assume.
//
// `Tensor` is a value type. Swift arrays are copy-on-write, so passing a
// tensor around is cheap until someone mutates a shared copy.

/// An n-dimensional array of `Float`, stored contiguously in row-major order.
///
///     var x = Tensor.zeros([2, 3])    // shape [2, 3], six zeros
///     x[1, 2] = 5                     // data[1 * 3 + 2] = 5
public struct Tensor: Equatable, CustomStringConvertible {
    /// The size of each dimension, outermost first: `[rows, cols]` for a matrix.
    public var shape: [Int]
    /// `shape.reduce(1, *)` values, row-major: the last index varies fastest.
    public var data: [Float]

    /// Wraps existing values. The count of `data` must equal the product of `shape`.
    public init(shape: [Int], data: [Float]) {
        precondition(shape.allSatisfy { $0 >= 0 }, "Tensor: negative dimension in shape \(shape)")
        let count = shape.reduce(1, *)
        precondition(data.count == count,
                     "Tensor: shape \(shape) needs \(count) values, got \(data.count)")
        self.shape = shape
        self.data = data
    }

    /// A tensor of the given shape filled with `value`.
    public init(shape: [Int], repeating value: Float) {
        self.init(shape: shape, data: [Float](repeating: value, count: shape.reduce(1, *)))
    }

    /// A tensor of the given shape whose values `write` stores, every one of
    /// them, through the pointer it is given (to `shape.reduce(1, *)` floats).
    /// For a kernel that overwrites its whole output: nothing is zeroed or
    /// copied first. Values `write` leaves unwritten are undefined.
    public init(shape: [Int], writingEvery write: (UnsafeMutablePointer<Float>) -> Void) {
        let count = shape.reduce(1, *)
        let data = [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
            if count > 0 { write(buffer.baseAddress!) }
            initialized = count
        }
        self.init(shape: shape, data: data)
    }

    /// A tensor of zeros.
    public static func zeros(_ shape: [Int]) -> Tensor { Tensor(shape: shape, repeating: 0) }

    /// A tensor with the same shape as `other`, filled with zeros (used for gradients).
    public static func zeros(like other: Tensor) -> Tensor { zeros(other.shape) }

    /// Number of elements.
    @inlinable public var count: Int { data.count }
    /// Number of dimensions.
    @inlinable public var rank: Int { shape.count }
    /// Rows of a matrix (`shape[0]`).
    @inlinable public var rows: Int { shape[0] }
    /// Columns of a matrix (`shape[1]`), the length of a row.
    @inlinable public var cols: Int { shape[shape.count - 1] }

    /// Element (i, j) of a matrix.
    @inlinable public subscript(i: Int, j: Int) -> Float {
        get { data[i * shape[1] + j] }
        set { data[i * shape[1] + j] = newValue }
    }

    /// Rows `range` of a matrix, copied into a new tensor of shape [range.count, cols].
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(rank == 2 && range.lowerBound >= 0 && range.upperBound <= shape[0],
                     "Tensor.rows: range \(range) out of bounds for shape \(shape)")
        let c = shape[1]
        return Tensor(shape: [range.count, c], data: Array(data[(range.lowerBound * c)..<(range.upperBound * c)]))
    }

    /// The same values seen with another shape of equal element count.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(newShape.reduce(1, *) == count,
                     "Tensor.reshaped: cannot view shape \(shape) as \(newShape)")
        return Tensor(shape: newShape, data: data)
    }

    public var description: String {
        let head = data.prefix(8).map { String(format: "%.4f", $0) }.joined(separator: ", ")
        return "Tensor(shape: \(shape), data: [\(head)\(count > 8 ? ", …" : "")])"
    }
}

import Foundation  // String(format:) in `description`
