// Random numbers that are the same on every machine.
//
// A run is reproducible only if its random numbers are: the initial weights,
// the shuffling of the data, the noise of noisy gating. Swift's
// `SystemRandomNumberGenerator` cannot be seeded, and the C library's `random()`
// differs between macOS and Linux, so this file carries its own generator:
//
//   * SplitMix64 turns the user's seed (any 64-bit number, 0 included) into a
//     well-mixed 256-bit state; it is the seeding method xoshiro's authors
//     recommend (Blackman & Vigna, "Scrambled linear pseudorandom number
//     generators", 2021).
//   * xoshiro256** produces the stream: four 64-bit words, shifts, rotations and
//     one multiply per number. Integer arithmetic only, so every platform
//     computes the same bits.
//
// Floats are made from the top 24 bits (a Float's significand), so they are
// exact multiples of 2⁻²⁴ in [0, 1). Normal deviates use the Marsaglia polar
// method with a logarithm computed here from +, −, ×, ÷ and √ alone (all
// correctly rounded by IEEE 754), because the C library's `log` may differ in
// its last bit between platforms.

/// A seedable, portable pseudo-random generator (xoshiro256**).
///
///     var rng = Xoshiro256(seed: 0)
///     let u = rng.uniform()          // Float in [0, 1)
///     let z = rng.normal()           // Float ~ N(0, 1)
public struct Xoshiro256: RandomNumberGenerator, Equatable {
    /// The generator's whole state; saving these four words saves the stream's position.
    public var state: (UInt64, UInt64, UInt64, UInt64)

    public init(seed: UInt64) {
        var sm = seed
        func splitMix() -> UInt64 {
            sm &+= 0x9E37_79B9_7F4A_7C15
            var z = sm
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        state = (splitMix(), splitMix(), splitMix(), splitMix())
    }

    /// Restores a generator from a saved state (see `state`).
    public init(state: (UInt64, UInt64, UInt64, UInt64)) { self.state = state }

    public static func == (l: Xoshiro256, r: Xoshiro256) -> Bool {
        l.state.0 == r.state.0 && l.state.1 == r.state.1 && l.state.2 == r.state.2 && l.state.3 == r.state.3
    }

    public mutating func next() -> UInt64 {
        @inline(__always) func rotl(_ x: UInt64, _ k: UInt64) -> UInt64 { (x << k) | (x >> (64 - k)) }
        let result = rotl(state.1 &* 5, 7) &* 9
        let t = state.1 << 17
        state.2 ^= state.0
        state.3 ^= state.1
        state.1 ^= state.2
        state.0 ^= state.3
        state.2 ^= t
        state.3 = rotl(state.3, 45)
        return result
    }

    /// A Float in [0, 1): the top 24 bits of the next number, times 2⁻²⁴.
    public mutating func uniform() -> Float {
        Float(next() >> 40) * (1.0 / 16_777_216.0)
    }

    /// A Float in [low, high).
    public mutating func uniform(_ low: Float, _ high: Float) -> Float {
        low + (high - low) * uniform()
    }

    /// An integer in 0..<bound, without modulo bias (Lemire's multiply-shift
    /// with rejection), so shuffles are uniform and portable.
    public mutating func below(_ bound: Int) -> Int {
        precondition(bound > 0, "Xoshiro256.below: bound must be positive, got \(bound)")
        let b = UInt64(bound)
        while true {
            let (high, low) = next().multipliedFullWidth(by: b)
            if low >= (0 &- b) % b { return Int(high) }
        }
    }

    /// A standard normal deviate (mean 0, variance 1), Marsaglia's polar method:
    /// draw (u, v) uniform in the unit disc, s = u² + v², then u·√(−2 ln s / s)
    /// is N(0, 1). The second deviate of each pair is discarded to keep the
    /// state simple to save.
    public mutating func normal() -> Float {
        while true {
            let u = 2 * Double(next() >> 11) * 0x1p-53 - 1
            let v = 2 * Double(next() >> 11) * 0x1p-53 - 1
            let s = u * u + v * v
            if s > 0 && s < 1 {
                return Float(u * (-2 * portableLog(s) / s).squareRoot())
            }
        }
    }

    /// Fisher–Yates shuffle of `array`, the same permutation on every platform.
    public mutating func shuffle<T>(_ array: inout [T]) {
        guard array.count > 1 else { return }
        for i in stride(from: array.count - 1, to: 0, by: -1) {
            array.swapAt(i, below(i + 1))
        }
    }
}

/// ln(x) for x > 0 from IEEE-exact operations only, so it is bit-identical on
/// every platform. Write x = m·2^e with m in [1, 2); then
/// ln x = e·ln 2 + 2·atanh(t) with t = (m − 1)/(m + 1) in [0, 1/3], and
/// atanh(t) = t + t³/3 + t⁵/5 + …, which is below 1e-17 after 20 terms.
func portableLog(_ x: Double) -> Double {
    precondition(x > 0 && x.isFinite, "portableLog: needs a positive finite number, got \(x)")
    let e = Double(Int(x.exponent))
    let m = x.significand  // in [1, 2), exact
    let t = (m - 1) / (m + 1), t2 = t * t
    var term = t, sum = 0.0
    for n in stride(from: 1, through: 39, by: 2) {
        sum += term / Double(n)
        term *= t2
    }
    return e * 0.693_147_180_559_945_309_4 + 2 * sum
}

extension Tensor {
    /// Values drawn uniformly from [low, high).
    public static func uniform(_ shape: [Int], low: Float, high: Float, rng: inout Xoshiro256) -> Tensor {
        var t = Tensor.zeros(shape)
        for i in 0..<t.count { t.data[i] = rng.uniform(low, high) }
        return t
    }

    /// Values drawn from a normal distribution N(mean, std²).
    public static func normal(_ shape: [Int], mean: Float = 0, std: Float = 1, rng: inout Xoshiro256) -> Tensor {
        var t = Tensor.zeros(shape)
        for i in 0..<t.count { t.data[i] = mean + std * rng.normal() }
        return t
    }
}
