// RMSNorm: LayerNorm without the mean (Zhang & Sennrich 2019), what every
// family here uses before attention, before the MoE block and at the end.
//
//     rms(x) = √(mean(x²) + ε)            one number per token
//     y      = g ⊙ x / rms(x)             [T, D], g the learned gain [D]
//
// LayerNorm (Layers/LayerNorm.swift, the toy's) also subtracts the mean and
// adds a bias; dropping both saves work and, measured by the papers that
// adopted it, costs nothing. Notebooks/part5-pretrained.md, §2.
//
// Legend: T tokens, D width.
import Foundation

struct RMSNorm {
    /// The gain g.   [D]
    let weight: [Float]
    let epsilon: Float

    /// x [T, D] → y [T, D], each row on its own.
    func callAsFunction(_ x: [Float]) -> [Float] {
        let d = weight.count
        var y = x
        for t in 0..<(x.count / d) {
            var sumSquares: Float = 0
            for i in 0..<d { sumSquares += x[t * d + i] * x[t * d + i] }
            let scale = 1 / (sumSquares / Float(d) + epsilon).squareRoot()
            for i in 0..<d { y[t * d + i] = weight[i] * (x[t * d + i] * scale) }
        }
        return y
    }
}
