// The few element-wise and reduction helpers the layers need, and no more.
//
// Each is a plain loop over the contiguous storage. They are not the
// bottleneck (the matmuls are), so they stay simple enough to read at a glance.

extension Tensor {
    /// self[n, :] += v for every row n.   self [N, C], v [C]
    public mutating func addRowVector(_ v: Tensor) {
        precondition(rank == 2 && v.count == shape[1],
                     "addRowVector: vector of shape \(v.shape) does not fit rows of \(shape)")
        let c = shape[1]
        data.withUnsafeMutableBufferPointer { d in
            v.data.withUnsafeBufferPointer { b in
                for n in 0..<shape[0] {
                    let row = d.baseAddress! + n * c
                    for j in 0..<c { row[j] += b[j] }
                }
            }
        }
    }

    /// self[j] += Σₙ m[n, j]: adds the column sums of a matrix (a bias gradient).
    ///   self [C], m [N, C]
    public mutating func addColumnSums(of m: Tensor) {
        precondition(m.rank == 2 && count == m.shape[1],
                     "addColumnSums: matrix of shape \(m.shape) does not fit a vector of shape \(shape)")
        let c = m.shape[1]
        data.withUnsafeMutableBufferPointer { d in
            m.data.withUnsafeBufferPointer { src in
                for n in 0..<m.shape[0] {
                    let row = src.baseAddress! + n * c
                    for j in 0..<c { d[j] += row[j] }
                }
            }
        }
    }

    /// The rows `indices` of a matrix, in that order, as a new matrix.
    ///   self [N, C] -> [indices.count, C]   (the MoE's dispatch: X_e = x[tokens of e])
    public func gatherRows(_ indices: [Int]) -> Tensor {
        precondition(rank == 2, "gatherRows: expected a matrix, got shape \(shape)")
        let c = shape[1]
        var out = Tensor.zeros([indices.count, c])
        out.data.withUnsafeMutableBufferPointer { dst in
            data.withUnsafeBufferPointer { src in
                for (r, i) in indices.enumerated() {
                    precondition(i >= 0 && i < shape[0], "gatherRows: row \(i) out of range for shape \(shape)")
                    (dst.baseAddress! + r * c).update(from: src.baseAddress! + i * c, count: c)
                }
            }
        }
        return out
    }

    /// self[row, :] += scale · other[otherRow, :]   (rows of equal length)
    /// The MoE's combine and scatter steps, one routed token at a time.
    @inlinable
    public mutating func addRow(_ row: Int, scaledRow otherRow: Int, of other: Tensor, by scale: Float) {
        let c = shape[1]
        precondition(other.shape[1] == c && row < shape[0] && otherRow < other.shape[0],
                     "addRow: row \(otherRow) of \(other.shape) does not fit row \(row) of \(shape)")
        data.withUnsafeMutableBufferPointer { dst in
            other.data.withUnsafeBufferPointer { src in
                let d = dst.baseAddress! + row * c, s = src.baseAddress! + otherRow * c
                for j in 0..<c { d[j] += scale * s[j] }
            }
        }
    }

    /// Σⱼ self[row, j] · other[otherRow, j], the dot product of two rows.
    @inlinable
    public func dotRow(_ row: Int, withRow otherRow: Int, of other: Tensor) -> Float {
        let c = shape[1]
        precondition(other.shape[1] == c && row < shape[0] && otherRow < other.shape[0],
                     "dotRow: row \(otherRow) of \(other.shape) does not fit row \(row) of \(shape)")
        return data.withUnsafeBufferPointer { a in
            other.data.withUnsafeBufferPointer { b in
                let x = a.baseAddress! + row * c, y = b.baseAddress! + otherRow * c
                var s: Float = 0
                for j in 0..<c { s += x[j] * y[j] }
                return s
            }
        }
    }

    /// self += other, element-wise; shapes must match.
    public static func += (lhs: inout Tensor, rhs: Tensor) {
        precondition(lhs.shape == rhs.shape, "+=: shapes \(lhs.shape) and \(rhs.shape) differ")
        lhs.data.withUnsafeMutableBufferPointer { l in
            rhs.data.withUnsafeBufferPointer { r in
                for i in l.indices { l[i] += r[i] }
            }
        }
    }

    /// self * scalar, element-wise.
    public static func * (lhs: Tensor, rhs: Float) -> Tensor {
        Tensor(shape: lhs.shape, data: lhs.data.map { $0 * rhs })
    }

    /// Sum of all elements, accumulated in Double.
    public func sum() -> Double { data.reduce(0.0) { $0 + Double($1) } }

    /// Index of the largest value in row n (the first one on ties).   self [N, C]
    public func argmaxRow(_ n: Int) -> Int {
        let c = shape[1]
        var best = 0
        for j in 1..<c where data[n * c + j] > data[n * c + best] { best = j }
        return best
    }

    /// The largest absolute difference between two tensors of the same shape.
    public func maxAbsDifference(_ other: Tensor) -> Float {
        precondition(shape == other.shape, "maxAbsDifference: shapes \(shape) and \(other.shape) differ")
        var m: Float = 0
        for i in 0..<count { m = Swift.max(m, abs(data[i] - other.data[i])) }
        return m
    }
}
