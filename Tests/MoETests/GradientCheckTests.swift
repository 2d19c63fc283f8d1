// Every backward pass in the engine against central finite differences.
// Tolerance: in Float, a correct backward shows relative errors of ~1e-4…1e-2
// (rounding noise and the O(ε²) truncation, see GradientCheck.swift); a wrong
// one shows errors near 1, and a backward that is off by 10% shows 0.1.
// 3e-2 separates them; testCheckerCatchesAWrongBackward proves the separation.
import XCTest
@testable import MoE

let gradientTolerance = 3e-2

/// Softmax as a Layer, so the generic checker can test its backward.
final class SoftmaxLayer: Layer {
    var p = Tensor.zeros([0, 0])
    func forward(_ x: Tensor) -> Tensor { p = softmaxRows(x); return p }
    func backward(_ dy: Tensor) -> Tensor { softmaxRowsBackward(probabilities: p, outputGradient: dy) }
    var namedParameters: [(name: String, parameter: Parameter)] { [] }
}

func assertGradientsMatch(_ report: GradientCheck.Report, _ what: String,
                          tolerance: Double = gradientTolerance, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertFalse(report.entries.isEmpty, "\(what): nothing was checked", file: file, line: line)
    for entry in report.entries {
        XCTAssertGreaterThan(entry.checkedElements, 0, file: file, line: line)
        // Kinks are rare at these sizes; most elements must really be compared.
        XCTAssertLessThanOrEqual(entry.skippedNonSmooth * 4, entry.checkedElements + entry.skippedNonSmooth,
                                 "\(what) \(entry): too many elements skipped", file: file, line: line)
        XCTAssertLessThan(entry.maxRelativeError, tolerance, "\(what) \(entry)", file: file, line: line)
    }
}

/// Inputs kept at least `margin` away from 0, so ReLU's kink is never within ε.
func awayFromZero(_ shape: [Int], margin: Float = 0.05, rng: inout Xoshiro256) -> Tensor {
    var t = Tensor.uniform(shape, low: -1, high: 1, rng: &rng)
    for i in 0..<t.count { t.data[i] += t.data[i] < 0 ? -margin : margin }
    return t
}

final class GradientCheckTests: XCTestCase {
    func testLinear() {
        var rng = Xoshiro256(seed: 10)
        let layer = Linear(inFeatures: 7, outFeatures: 5, rng: &rng)
        let x = Tensor.uniform([6, 7], low: -1, high: 1, rng: &rng)
        let report = GradientCheck.check(layer, input: x)
        assertGradientsMatch(report, "Linear")
        XCTAssertEqual(report.entries.map(\.name), ["input", "weight", "bias"])
    }

    func testReLU() {
        var rng = Xoshiro256(seed: 11)
        assertGradientsMatch(GradientCheck.check(ReLU(), input: awayFromZero([4, 9], rng: &rng)), "ReLU")
    }

    func testGELU() {
        var rng = Xoshiro256(seed: 12)
        let x = Tensor.uniform([4, 9], low: -3, high: 3, rng: &rng)
        assertGradientsMatch(GradientCheck.check(GELU(), input: x), "GELU")
    }

    /// GELU's forward makes its outputs without zeroing them first
    /// (Tensor(shape:writingEvery:)), so every value must be written: empty,
    /// shorter than one 16-lane block, a partial last block, and large enough
    /// to be split between two threads. Against the formula in Double.
    func testGELUWritesEveryValue() {
        var rng = Xoshiro256(seed: 15)
        Parallel.threads = 2
        defer { Parallel.threads = ProcessInfo.processInfo.activeProcessorCount }
        for count in [0, 5, 16, 33, (1 << 17) + 7] {
            let x = Tensor.uniform([count], low: -4, high: 4, rng: &rng)
            let y = GELU().forward(x)
            XCTAssertEqual(y.shape, [count])
            let worst = zip(x.data, y.data).map { xv, yv -> Double in
                let v = Double(xv), u = (2 / Double.pi).squareRoot() * (v + 0.044715 * v * v * v)
                return abs(0.5 * v * (1 + tanh(u)) - Double(yv))
            }.max() ?? 0
            XCTAssertLessThan(worst, 1e-5, "\(count) values")
        }
    }

    func testSoftmax() {
        var rng = Xoshiro256(seed: 13)
        let x = Tensor.uniform([5, 6], low: -2, high: 2, rng: &rng)
        assertGradientsMatch(GradientCheck.check(SoftmaxLayer(), input: x), "softmax")
    }

    func testSoftmaxCrossEntropy() {
        var rng = Xoshiro256(seed: 14)
        let z = Tensor.uniform([6, 5], low: -2, high: 2, rng: &rng)
        let labels = [0, 4, 2, 2, 1, 3]
        let report = GradientCheck.check(parameters: [], input: z, loss: { x in
            SoftmaxCrossEntropy.compute(logits: x!, labels: labels).loss
        }, backward: { x in SoftmaxCrossEntropy.compute(logits: x!, labels: labels).gradient })
        assertGradientsMatch(report, "softmax + cross-entropy")
    }

    func testStackOfLayers() {
        var rng = Xoshiro256(seed: 15)
        let stack = Sequential([
            ("fc1", Linear(inFeatures: 6, outFeatures: 8, rng: &rng)), ("relu", ReLU()),
            ("fc2", Linear(inFeatures: 8, outFeatures: 8, rng: &rng)), ("gelu", GELU()),
            ("fc3", Linear(inFeatures: 8, outFeatures: 3, rng: &rng)),
        ])
        let x = Tensor.uniform([5, 6], low: -1, high: 1, rng: &rng)
        let report = GradientCheck.check(stack, input: x)
        assertGradientsMatch(report, "Linear-ReLU-Linear-GELU-Linear")
        XCTAssertEqual(report.entries.count, 1 + 6)
    }

    func testExpert() {
        var rng = Xoshiro256(seed: 16)
        let expert = Expert(modelDim: 6, hiddenDim: 5, rng: &rng)
        let report = GradientCheck.check(expert, input: Tensor.uniform([4, 6], low: -1, high: 1, rng: &rng))
        assertGradientsMatch(report, "Expert")
        XCTAssertEqual(report.entries.map(\.name), ["input", "net.0.weight", "net.0.bias", "net.2.weight", "net.2.bias"])
    }

    /// A checker that cannot fail would be worthless: break a backward pass on
    /// purpose and make sure the report says so.
    func testCheckerCatchesAWrongBackward() {
        final class WrongLinear: Layer {
            let inner: Linear
            init(_ l: Linear) { inner = l }
            func forward(_ x: Tensor) -> Tensor { inner.forward(x) }
            func backward(_ dy: Tensor) -> Tensor { inner.backward(dy * 2) }   // wrong by a factor of 2
            var namedParameters: [(name: String, parameter: Parameter)] { inner.namedParameters }
        }
        var rng = Xoshiro256(seed: 17)
        let layer = WrongLinear(Linear(inFeatures: 4, outFeatures: 3, rng: &rng))
        let report = GradientCheck.check(layer, input: Tensor.uniform([2, 4], low: -1, high: 1, rng: &rng))
        XCTAssertGreaterThan(report.worstRelativeError, 0.3)
    }
}
