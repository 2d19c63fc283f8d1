// RotaryEmbedding (RoPE, Su et al. 2021): position enters attention as a rotation.
//
// The toy GPT adds a learned position vector to each token's embedding. These
// models instead rotate q and k. Split a head's Dh numbers into Dh/2 pairs;
// pair i of the token at position p is turned by the angle p·θᵢ, with
//
//     θᵢ = base^(−2i/Dh)          i = 0 … Dh/2 − 1, base = rope_theta (10⁴ to 10⁶)
//
//     [q'ᵢ      ]   [cos pθᵢ  −sin pθᵢ] [qᵢ      ]
//     [q'ᵢ₊Dh/2 ] = [sin pθᵢ   cos pθᵢ] [qᵢ₊Dh/2 ]
//
// (Hugging Face pairs element i with element i + Dh/2 — "rotate half" — not
// neighbours 2i and 2i+1 as the paper writes it; the checkpoints were trained
// that way, so we do the same.) The point: a rotation by pθ dotted with a
// rotation by sθ depends only on p − s, so q·k sees relative position, for
// free, at any length. Notebooks/part5-pretrained.md, §3.
//
// Legend: T tokens, Dh head width, n heads in the vector.
import Foundation

struct RotaryEmbedding {
    /// θᵢ for each pair, computed as transformers does (in Float) so angles match.   [Dh/2]
    let frequencies: [Float]

    init(headSize: Int, base: Double) {
        let half = headSize / 2
        frequencies = (0..<half).map { i in 1 / Float(pow(base, Double(Float(2 * i) / Float(headSize)))) }
    }

    /// Rotates every head of x [n·Dh] (one token) for position p, in place.
    func apply(_ x: inout [Float], offset: Int, heads: Int, position: Int) {
        let half = frequencies.count, dh = 2 * half
        for i in 0..<half {
            let angle = Float(position) * frequencies[i]
            let c = cos(angle), s = sin(angle)
            for h in 0..<heads {
                let a = offset + h * dh + i, b = a + half
                let (x0, x1) = (x[a], x[b])
                x[a] = x0 * c - x1 * s
                x[b] = x1 * c + x0 * s
            }
        }
    }
}
