import XCTest
@testable import MoE

final class OptimizerTests: XCTestCase {
    /// Adam by hand for one scalar, g = 2θ (the gradient of θ²), θ₀ = 1, lr 0.1:
    ///   t=1: m = 0.2, v = 0.004, m̂ = 2, v̂ = 4, θ = 1 − 0.1·2/(2 + 1e-8) = 0.9
    ///   t=2: g = 1.8, m = 0.9·0.2 + 0.1·1.8 = 0.36, v = 0.999·0.004 + 0.001·3.24 = 0.007236
    ///        m̂ = 0.36/0.19 = 1.894737, v̂ = 0.007236/0.001999 = 3.619810
    ///        θ = 0.9 − 0.1·1.894737/1.902580 = 0.800412
    func testAdamMatchesHandComputedSteps() {
        let p = Parameter(Tensor(shape: [1], data: [1]))
        let adam = Adam(parameters: [p], learningRate: 0.1)
        let expected: [Float] = [0.9, 0.800412]
        for e in expected {
            p.zeroGrad()
            p.grad.data[0] = 2 * p.value.data[0]
            adam.step()
            XCTAssertEqual(p.value.data[0], e, accuracy: 2e-6)
        }
        XCTAssertEqual(adam.stepCount, 2)
    }

    /// Adam sets a first moment that has decayed into the subnormal floats to 0
    /// (Adam.swift says why: subnormals are ~100× slower on x86), and only then.
    /// Weight 0 gets one gradient, then none: m = 0.1·g·0.9ˢ reaches the
    /// subnormals after ~760 steps (and would underflow to 0 only after ~915),
    /// so after 800 it must be exactly 0 where unflushed Adam has a subnormal. Weight 1 gets a
    /// gradient every step: its m stays normal and must match the same Adam
    /// arithmetic written out here, bit for bit. And weight 0 moves by the same
    /// floats as it would have without the flush: its last updates are far below
    /// half a unit in its last place.
    func testAdamFlushesSubnormalMomentsOnly() {
        let p = Parameter(Tensor(shape: [2], data: [0.5, -0.25]))
        let adam = Adam(parameters: [p], learningRate: 1e-3)
        var m: [Float] = [0, 0], v: [Float] = [0, 0], theta: [Float] = [0.5, -0.25]
        var sawSubnormal = false
        for step in 1...800 {
            let g: [Float] = [step == 1 ? 1e-2 : 0, 1e-3 * Float(step % 7 + 1)]
            p.grad.data = g
            adam.step()
            // The same update without the flush (Rule.apply's arithmetic).
            let t = Float(step)
            let stepSize = 1e-3 / (1 - pow(Float(0.9), t)), root2 = (1 - pow(Float(0.999), t)).squareRoot()
            for i in 0..<2 {
                m[i] = 0.9 * m[i] + (1 - 0.9) * g[i]
                v[i] = 0.999 * v[i] + (1 - 0.999) * g[i] * g[i]
                theta[i] -= stepSize * m[i] / (v[i].magnitude.squareRoot() / root2 + 1e-8)
            }
            if m[0] != 0 && m[0].magnitude < Float.leastNormalMagnitude { sawSubnormal = true }
            XCTAssertEqual(p.value.data, theta, "step \(step): the flush changed a weight")
        }
        XCTAssertTrue(sawSubnormal, "the unflushed moment never became subnormal: the test tests nothing")
        XCTAssertNotEqual(m[0], 0, "without the flush the moment is still a subnormal after 800 steps")
        XCTAssertEqual(adam.m[0].data[0], 0, "a subnormal first moment must be flushed to 0")
        XCTAssertEqual(adam.m[0].data[1], m[1], "a normal first moment must be left as Adam computed it")
        XCTAssertGreaterThanOrEqual(adam.m[0].data[1].magnitude, Float.leastNormalMagnitude)
    }

    func testSGDStep() {
        let p = Parameter(Tensor(shape: [2], data: [1, -1]))
        p.grad = Tensor(shape: [2], data: [0.5, -2])
        SGD(parameters: [p], learningRate: 0.1).step()
        XCTAssertEqual(p.value.data, [0.95, -0.8])
    }
}
