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

    func testSGDStep() {
        let p = Parameter(Tensor(shape: [2], data: [1, -1]))
        p.grad = Tensor(shape: [2], data: [0.5, -2])
        SGD(parameters: [p], learningRate: 0.1).step()
        XCTAssertEqual(p.value.data, [0.95, -0.8])
    }
}
