// GradientCheck: is a hand-written backward pass right? Ask the forward pass.
//
// Every backward in this project is derived by hand, so every one is checked
// against the definition of the derivative, the central difference
//
//     ∂L/∂θᵢ ≈ (L(θ + ε·eᵢ) − L(θ − ε·eᵢ)) / 2ε,
//
// whose error is O(ε²) for a smooth L. For a layer y = f(x), the checker makes
// the scalar L = Σ y ⊙ r with a fixed random r, so dL/dy = r is what backward
// receives: a random projection exercises every output at once
// (Notebooks/part2-implementation.md, §9).
//
// Reading the numbers. Forward passes run in Float, so L carries rounding
// noise of about 1e-7·|L|, which the difference divides by 2ε; the O(ε²)
// truncation error pulls the other way. ε = 1e-2 balances the two for losses
// of order 1: expect relative errors around 1e-4…1e-3 for a correct backward
// and near 1 for a wrong one (a missing term, a transposed index, a sign).
// The relative error of one element is
//
//     |analytic − numeric| / max(|analytic|, |numeric|, 5% of the tensor's largest gradient, 1e-4)
//
// so that elements whose true gradient is ~0 are judged against the tensor's
// scale instead of dividing noise by noise. A wrong backward is wrong on the
// tensor's large elements too, so the floor hides no bug.
//
// Non-smooth points: ReLU's kink makes L non-differentiable where a
// pre-activation sits within ε of 0, and there the central difference averages
// two slopes. The checker detects this from the forward pass alone: for a
// smooth L the one-sided differences d₊ = L(θ+ε) − L(θ) and d₋ = L(θ) − L(θ−ε)
// agree to O(ε²); across a kink they differ by the jump in slope. Such
// elements (|d₊ − d₋| > 2% of |d₊| + |d₋|) are skipped and counted (`skippedNonSmooth`), never judged: the
// test is the forward pass, so skipping cannot hide a wrong backward, it only
// narrows what was checked. Top-k's discrete choice is not detected this way:
// hold the choice fixed (the MoE tests assert the routing did not change).

/// Compares a backward pass with central finite differences.
///
///     let report = GradientCheck.check(layer, input: x)
///     print(report)                      // one line per parameter
///     assert(report.worstRelativeError < 1e-2)
public enum GradientCheck {
    /// The comparison for one tensor (a parameter or the input).
    public struct Entry: CustomStringConvertible {
        public let name: String
        public let checkedElements: Int
        /// Elements skipped because L has a kink within ε of them.
        public let skippedNonSmooth: Int
        public let maxAbsoluteError: Double
        public let maxRelativeError: Double
        /// Largest |analytic gradient| seen, for scale.
        public let maxGradient: Double

        public var description: String {
            func f(_ x: Double) -> String {
                x == 0 ? "0" : (abs(x) >= 1e-3 && abs(x) < 1e4 ? String(format: "%.6f", x) : String(format: "%.3e", x))
            }
            return "\(name.padding(toLength: 28, withPad: " ", startingAt: 0)) checked \(checkedElements)" +
                (skippedNonSmooth > 0 ? " (\(skippedNonSmooth) at a kink, skipped)" : "") + " " +
                "max|grad| \(f(maxGradient))  max abs err \(f(maxAbsoluteError))  max rel err \(f(maxRelativeError))"
        }
    }

    public struct Report: CustomStringConvertible {
        public let entries: [Entry]
        public var worstRelativeError: Double { entries.map(\.maxRelativeError).max() ?? 0 }
        public func entry(_ name: String) -> Entry? { entries.first { $0.name == name } }
        public var description: String { entries.map(\.description).joined(separator: "\n") }
    }

    /// Checks a `Layer`: its input gradient and every parameter's gradient, for
    /// L = Σ forward(x) ⊙ r with r uniform in [−1, 1) from `seed`.
    ///
    /// - Parameters:
    ///   - epsilon: the finite-difference step.
    ///   - maxElements: per tensor, how many elements to perturb (a seeded
    ///     random sample when the tensor is larger; every one when smaller).
    public static func check(_ layer: Layer, input: Tensor, epsilon: Float = 1e-2,
                             maxElements: Int = 64, seed: UInt64 = 1) -> Report {
        var rng = Xoshiro256(seed: seed)
        let probe = layer.forward(input)
        let r = Tensor.uniform(probe.shape, low: -1, high: 1, rng: &rng)
        return check(parameters: layer.namedParameters, input: input, epsilon: epsilon,
                     maxElements: maxElements, seed: seed,
                     loss: { x in dot(layer.forward(x!), r) },
                     backward: { x in _ = layer.forward(x!); return layer.backward(r) })
    }

    /// The general form, for anything with a scalar loss.
    ///
    /// - Parameters:
    ///   - parameters: the parameters to check, with names for the report.
    ///   - input: an input tensor to check too, or nil.
    ///   - loss: computes L for the current parameter values and the given input.
    ///   - backward: runs forward and backward for the given input, adding the
    ///     parameters' gradients (the checker zeroes them first), and returns dL/dinput
    ///     (ignored when `input` is nil).
    public static func check(parameters: [(name: String, parameter: Parameter)], input: Tensor?,
                             epsilon: Float = 1e-2, maxElements: Int = 64, seed: UInt64 = 1,
                             loss: (Tensor?) -> Double, backward: (Tensor?) -> Tensor) -> Report {
        var rng = Xoshiro256(seed: seed &+ 0x5EED)
        for p in parameters { p.parameter.zeroGrad() }
        let inputGradient = backward(input)
        var entries: [Entry] = []

        let centre = loss(input)   // L(θ), shared by every element's one-sided differences

        // Perturbs one element, returns (L+ − L−)/2ε, or nil where L has a kink within ε.
        func numeric(get: () -> Float, set: (Float) -> Void, evaluate: () -> Double) -> Double? {
            let original = get()
            set(original + epsilon); let plus = evaluate()
            set(original - epsilon); let minus = evaluate()
            set(original)
            let dPlus = plus - centre, dMinus = centre - minus
            let noise = 1e-6 * max(abs(centre), 1e-3)   // Float rounding of L, with margin
            if abs(dPlus - dMinus) > max(0.02 * (abs(dPlus) + abs(dMinus)), noise) { return nil }
            // Divide by the step actually taken: original ± ε is rounded to Float.
            let step = Double(original + epsilon) - Double(original - epsilon)
            return (plus - minus) / step
        }

        func compare(name: String, analytic: Tensor, indices: [Int], numericAt: (Int) -> Double?) -> Entry {
            var numbers: [(Double, Double)] = []
            for i in indices { if let n = numericAt(i) { numbers.append((Double(analytic.data[i]), n)) } }
            let scale = numbers.map { max(abs($0.0), abs($0.1)) }.max() ?? 0
            var maxAbs = 0.0, maxRel = 0.0
            for (a, n) in numbers {
                let err = abs(a - n)
                maxAbs = max(maxAbs, err)
                maxRel = max(maxRel, err / max(abs(a), abs(n), 0.05 * scale, 1e-4))
            }
            return Entry(name: name, checkedElements: numbers.count, skippedNonSmooth: indices.count - numbers.count,
                         maxAbsoluteError: maxAbs, maxRelativeError: maxRel,
                         maxGradient: analytic.data.map { Double(abs($0)) }.max() ?? 0)
        }

        func sample(_ count: Int) -> [Int] {
            if count <= maxElements { return Array(0..<count) }
            var all = Array(0..<count)
            rng.shuffle(&all)
            return Array(all.prefix(maxElements)).sorted()
        }

        if var x = input {
            precondition(inputGradient.shape == x.shape,
                         "GradientCheck: backward returned dL/dx of shape \(inputGradient.shape) for input \(x.shape)")
            entries.append(compare(name: "input", analytic: inputGradient, indices: sample(x.count)) { i in
                numeric(get: { x.data[i] }, set: { x.data[i] = $0 }, evaluate: { loss(x) })
            })
        }
        for (name, p) in parameters {
            let analytic = p.grad
            entries.append(compare(name: name, analytic: analytic, indices: sample(p.value.count)) { i in
                numeric(get: { p.value.data[i] }, set: { p.value.data[i] = $0 }, evaluate: { loss(input) })
            })
        }
        return Report(entries: entries)
    }

    /// Σ a ⊙ b in Double: the scalar loss of a layer check.
    public static func dot(_ a: Tensor, _ b: Tensor) -> Double {
        precondition(a.shape == b.shape, "GradientCheck.dot: shapes \(a.shape) and \(b.shape) differ")
        var s = 0.0
        for i in 0..<a.count { s += Double(a.data[i]) * Double(b.data[i]) }
        return s
    }
}

import Foundation  // String(format:)
