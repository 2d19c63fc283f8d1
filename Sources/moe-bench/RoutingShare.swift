// How much of an MoE training step is routing? (issue 4: keep it under 15%.)
//
// Routing is everything the MoE layer does besides running its experts:
//
//     gate      logits = h·Wᵀ + b, and its backward              Linear(256 → 8)
//     router    route (softmax, top-k, renormalise), balancing losses, the
//               routing statistics, the router's backward, the bias update
//     dispatch  group (token, slot) pairs by expert, gather each expert's rows;
//               backward: build each expert's dL/dY_e, scatter dL/dX_e back
//     combine   y[n] += w·Y_e[row]; backward: dL/dw[n, j] = dy[n]·Y_e[row]
//
// The rest of the step is the experts' own matmuls, the input and output
// layers, the loss and Adam. The share is reported twice, with the gate (the
// headline: the issue counts it as routing) and without it (the gate is an
// ordinary Linear that any dense model would also run).
//
// How it is measured. MoELayer.forward/backward are single functions, so the
// phases cannot be timed from outside. `timedStep` is a bench-local copy of
// one MoEClassifier training step with a clock lap after each phase, using
// the model's own layers and weights. Before timing, `verifyCopy` checks that
// the copy produces the model's logits and every parameter's gradient, so the
// copy cannot drift from MoELayer unnoticed. Two differences, both making
// routing look slower, not faster: the row gathers (forward) and the dL/dY_e
// builds (backward), which MoELayer does inside its parallel per-expert loop,
// run serially here so they can be timed apart from the experts.
//
// The measured step: Notebooks/part2-implementation.md, §19.
import Foundation
import MoE

enum RoutingPhase: Int, CaseIterable {
    case gate, router, dispatch, combine, experts, rest
    var name: String { String(describing: self) }
    /// Counted as routing (the gate only in the "with gate" share).
    var isRouting: Bool { self != .experts && self != .rest }
}

/// Adds the time since the last lap to a phase. One clock read per phase.
struct PhaseClock {
    var seconds = [Double](repeating: 0, count: RoutingPhase.allCases.count)
    var last = PhaseClock.now()
    static func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) * 1e-9 }
    mutating func lap(_ phase: RoutingPhase) {
        let t = PhaseClock.now()
        seconds[phase.rawValue] += t - last
        last = t
    }
}

/// One training step of `model` (forward, backward, no optimiser), phase by
/// phase, as MoEClassifier.forward/backward and MoELayer.forward/backward do
/// it. Returns the class logits [N, C]. Only the default configuration: no
/// capacity, no shared experts (checked).
func timedStep(_ model: MoEClassifier, x: Tensor, labels: [Int], clock: inout PhaseClock) -> Tensor {
    let layer = model.moe
    precondition(layer.capacity == nil && layer.sharedExperts.isEmpty, "routing share: default MoE layer only")
    let e = layer.experts.count, k = layer.router.slots, d = layer.modelDim
    clock.last = PhaseClock.now()

    // Forward.
    var h = model.inputProj.forward(x)             // [N, D]
    h = model.relu.forward(h)
    let n = h.shape[0]
    clock.lap(.rest)
    let logits = layer.gate.forward(h)             // [N, E]
    clock.lap(.gate)
    var bias: [Float]? = nil
    for b in layer.balancing {
        if let extra = b.selectionBias { bias = zip(bias ?? extra.map { _ in 0 }, extra).map { $0 + $1 } }
    }
    let routing = layer.router.route(logits: logits, context: RoutingContext(training: true, progress: layer.progress,
                                                                             selectionBias: bias, input: h))
    let terms = layer.balancing.map { $0.evaluate(routing: routing, logits: logits) }
    var statistics = RoutingStatistics(experts: e)   // MoELayer keeps these every step
    statistics.add(routing)
    clock.lap(.router)
    var groups = [[(token: Int, slot: Int)]](repeating: [], count: e)
    for t in 0..<n { for j in 0..<k { if let ex = routing.dispatchedExpert(token: t, slot: j) { groups[ex].append((t, j)) } } }
    let inputs = groups.map { rows in rows.isEmpty ? Tensor.zeros([0, d]) : h.gatherRows(rows.map(\.token)) }   // X_e [n_e, D]
    clock.lap(.dispatch)
    var outputs = [Tensor](repeating: .zeros([0, d]), count: e)                                               // Y_e [n_e, D]
    outputs.withUnsafeMutableBufferPointer { out in
        Parallel.forEach(e) { ex in if !groups[ex].isEmpty { out[ex] = layer.experts[ex].forward(inputs[ex]) } }
    }
    clock.lap(.experts)
    var y = Tensor.zeros([n, d])
    for ex in 0..<e {
        for (r, pair) in groups[ex].enumerated() {
            y.addRow(pair.token, scaledRow: r, of: outputs[ex], by: routing.weights.data[pair.token * k + pair.slot])
        }
    }
    clock.lap(.combine)
    if let relu = model.reluAfterMoE { y = relu.forward(y) }
    let classLogits = model.outputProj.forward(y)  // [N, C]
    let ce = SoftmaxCrossEntropy.compute(logits: classLogits, labels: labels)
    var dy = model.outputProj.backward(ce.gradient)    // [N, D]
    if let relu = model.reluAfterMoE { dy = relu.backward(dy) }
    clock.lap(.rest)

    // Backward.
    var dw = Tensor.zeros([n, k])                  // dL/dw [N, K]
    for ex in 0..<e {
        for (r, pair) in groups[ex].enumerated() {
            dw.data[pair.token * k + pair.slot] = dy.dotRow(pair.token, withRow: r, of: outputs[ex])
        }
    }
    clock.lap(.combine)
    let outputGradients = groups.map { rows -> Tensor in                                                     // dL/dY_e [n_e, D]
        var dye = Tensor.zeros([rows.count, d])
        for (r, pair) in rows.enumerated() {
            dye.addRow(r, scaledRow: pair.token, of: dy, by: routing.weights.data[pair.token * k + pair.slot])
        }
        return dye
    }
    clock.lap(.dispatch)
    var inputGradients = [Tensor](repeating: .zeros([0, d]), count: e)                                        // dL/dX_e [n_e, D]
    inputGradients.withUnsafeMutableBufferPointer { out in
        Parallel.forEach(e) { ex in if !groups[ex].isEmpty { out[ex] = layer.experts[ex].backward(outputGradients[ex]) } }
    }
    clock.lap(.experts)
    var dp: Tensor? = nil, dLogitsExtra: Tensor? = nil
    for (b, term) in zip(layer.balancing, terms) where b.weight != 0 {
        if let g = term.weightGradient { dw += g * b.weight }
        if let g = term.probabilityGradient { if dp == nil { dp = Tensor.zeros(g.shape) }; dp! += g * b.weight }
        if let g = term.logitGradient { if dLogitsExtra == nil { dLogitsExtra = Tensor.zeros(g.shape) }; dLogitsExtra! += g * b.weight }
    }
    var dLogits = layer.router.backward(weightGradient: dw, probabilityGradient: dp)   // [N, E]
    if let extra = dLogitsExtra { dLogits += extra }
    clock.lap(.router)
    var dx = layer.gate.backward(dLogits)          // [N, D]
    clock.lap(.gate)
    for ex in 0..<e {
        for (r, pair) in groups[ex].enumerated() { dx.addRow(pair.token, scaledRow: r, of: inputGradients[ex], by: 1) }
    }
    clock.lap(.dispatch)
    model.inputProj.backwardParameters(model.relu.backward(dx))
    clock.lap(.rest)
    for b in layer.balancing { b.update(after: routing) }   // MoELayer.afterStep
    clock.lap(.router)
    return classLogits
}

/// The copy against the model: same logits, same gradient for every parameter.
/// Returns the largest difference, relative to the largest gradient.
func verifyCopy(_ model: MoEClassifier, x: Tensor, labels: [Int]) -> Double {
    var clock = PhaseClock()
    model.zeroGrad()
    let copyLogits = timedStep(model, x: x, labels: labels, clock: &clock)
    let copyGrads = model.parameters.map(\.grad)
    model.zeroGrad()
    // The same ε as the copy drew: the gate noise is replayed, not drawn anew.
    let gating = model.moe.router as? TopKGating
    gating?.replaysNoise = true
    defer { gating?.replaysNoise = false }
    let logits = model.forward(x)
    model.backward(SoftmaxCrossEntropy.compute(logits: logits, labels: labels).gradient)
    var worst = Double(copyLogits.maxAbsDifference(logits))
    for (p, g) in zip(model.parameters, copyGrads) {
        let scale = max(Double(p.grad.data.map(abs).max() ?? 0), 1e-6)
        worst = max(worst, Double(p.grad.maxAbsDifference(g)) / scale)
    }
    model.zeroGrad()
    return worst
}

struct RoutingShareRow {
    let threads: Int
    /// Median of each phase over the timed steps, and of the whole step, in ms.
    let phaseMs: [RoutingPhase: Double]
    let stepMs: Double
    /// Median over steps of routing time / step time, with and without the gate.
    let share: Double
    let shareWithoutGate: Double
}

/// Times `steps` training steps (forward, backward, Adam) of the default
/// MoEClassifier on a random batch of 64, phase by phase.
func measureRoutingShare(threads: Int, steps: Int = 200) -> RoutingShareRow {
    Parallel.threads = threads
    defer { Parallel.threads = ProcessInfo.processInfo.activeProcessorCount }
    var rng = Xoshiro256(seed: 0)
    let model = MoEClassifier(rng: &rng)
    var data = Xoshiro256(seed: 7)
    let x = Tensor.uniform([64, 784], low: 0, high: 1, rng: &data)
    let labels = (0..<64).map { $0 % 10 }
    let mismatch = verifyCopy(model, x: x, labels: labels)
    precondition(mismatch < 1e-4, "moe-bench: the timed copy of the step differs from MoEClassifier (\(mismatch))")
    let adam = Adam(parameters: model.parameters)
    var perStep: [[Double]] = []   // [steps, phases] seconds
    for step in 0..<(steps + 10) {
        var clock = PhaseClock()
        model.zeroGrad()
        clock.lap(.rest)
        _ = timedStep(model, x: x, labels: labels, clock: &clock)
        adam.step()
        clock.lap(.rest)
        if step >= 10 { perStep.append(clock.seconds) }   // the first 10 warm up caches and threads
    }
    func median(_ v: [Double]) -> Double { let s = v.sorted(); return s[s.count / 2] }
    var phaseMs: [RoutingPhase: Double] = [:]
    for p in RoutingPhase.allCases { phaseMs[p] = 1e3 * median(perStep.map { $0[p.rawValue] }) }
    let totals = perStep.map { $0.reduce(0, +) }
    let routing = perStep.map { s in RoutingPhase.allCases.filter(\.isRouting).reduce(0) { $0 + s[$1.rawValue] } }
    return RoutingShareRow(
        threads: threads, phaseMs: phaseMs, stepMs: 1e3 * median(totals),
        share: median(zip(routing, totals).map { $0 / $1 }),
        shareWithoutGate: median(zip(perStep, totals).map { s, t in
            (RoutingPhase.allCases.filter { $0.isRouting && $0 != .gate }.reduce(0) { $0 + s[$1.rawValue] }) / t
        }))
}
