// Checkpoints: a model's weights, and everything needed to continue a run.
//
// Two files, both safetensors (IO/Safetensors.swift):
//   * `moe.safetensors` / `dense.safetensors`: the weights alone, named as a
//     PyTorch module names them (`input_proj.weight`, `moe.gating.gate.weight`, `moe.experts.3.net.0.bias`, …) in
//     nn.Linear's [out, in] layout, so `model.load_state_dict(load_file(path))`
//     works on an equivalent PyTorch module with strict key checking.
//   * `moe.resume.safetensors`: the weights plus Adam's two moments per
//     parameter (`optimizer.m.<name>`, `optimizer.v.<name>`) and, in the
//     metadata, Adam's step, the epochs done, the shuffling generator's state
//     and the history so far. `--resume` continues from it bit-exactly: the
//     data order of the next epoch comes from the saved generator state.
// Routing state that is not a weight (the auxiliary-loss-free bias) travels in
// both files under its own name (`moe.balancing.0.bias`), like a PyTorch
// buffer; a file without it leaves the model's current value (zeros) alone.
// Both are written atomically: a crash mid-write leaves the old file intact.
//
// The run whose checkpoints these are: Notebooks/part3-mnist.md, §1.
import Foundation

public enum Checkpoint {
    /// Writes the model's weights (and `metadata`) to `url`.
    public static func saveWeights(_ model: Classifier, to url: URL, metadata: [String: String] = [:]) throws {
        try Safetensors.write(model.namedParameters.map { ($0.name, $0.parameter.value) } + model.namedBuffers.map { ($0.name, $0.value) },
                              metadata: metadata, to: url)
    }

    /// Loads weights saved by `saveWeights` (or by PyTorch) into `model`. Every
    /// parameter must be present with its exact shape; the error names the file,
    /// the tensor and both shapes.
    public static func loadWeights(into model: Classifier, from url: URL) throws {
        let file = try Safetensors.read(from: url)
        try load(model.namedParameters, from: file, url: url)
        try loadBuffers(into: model, from: file, url: url)
    }

    /// Buffers the file has, with the shape the model expects.
    static func loadBuffers(into model: Classifier, from file: SafetensorsFile, url: URL) throws {
        for (name, current) in model.namedBuffers where file.order.contains(name) {
            let value = try file.tensor(name, shape: current.shape)
            try requireFinite(value, name, url)
            do { try model.restoreBuffer(named: name, value: value) } catch {
                throw SafetensorsError(source: url.path, problem: "\(error)")
            }
        }
    }

    static func load(_ named: [(name: String, parameter: Parameter)], from file: SafetensorsFile, url: URL) throws {
        // Read (and check) every tensor first, so a bad file changes nothing.
        let values = try named.map { try file.tensor($0.name, shape: $0.parameter.value.shape) }
        for (p, v) in zip(named, values) { try requireFinite(v, p.name, url) }
        for (p, v) in zip(named, values) { p.parameter.value = v }
    }

    /// Weights, optimiser moments and the run's position, for `--resume`.
    public static func saveTrainingState(_ trainer: Trainer, to url: URL, metadata: [String: String] = [:]) throws {
        let named = trainer.model.namedParameters
        var tensors = named.map { ($0.name, $0.parameter.value) } + trainer.model.namedBuffers.map { ($0.name, $0.value) }
        for (i, p) in named.enumerated() {
            tensors.append(("optimizer.m." + p.name, trainer.optimizer.m[i]))
            tensors.append(("optimizer.v." + p.name, trainer.optimizer.v[i]))
        }
        let s = trainer.rng.state
        var meta = metadata
        meta["model"] = trainer.model.name
        meta["adam_step"] = String(trainer.optimizer.stepCount)
        meta["epochs_done"] = String(trainer.epochsDone)
        meta["rng_state"] = [s.0, s.1, s.2, s.3].map(String.init).joined(separator: ",")
        meta["history"] = encodeHistory(trainer.history)
        // The router's generators (gate noise, expert dropout): "rng_state.moe.gating".
        for (name, words) in trainer.model.randomStates {
            meta["rng_state." + name] = words.map(String.init).joined(separator: ",")
        }
        try Safetensors.write(tensors, metadata: meta, to: url)
    }

    /// The largest `epochs_done` a resume file may claim (mnist-moe's --epochs allows 10,000).
    public static let maxEpochs = 10_000
    /// The largest `adam_step`: far beyond any run, far below where `Int` or
    /// Adam's `pow(β, t)` would overflow or lose the step.
    public static let maxAdamStep = 1 << 40

    /// Restores what `saveTrainingState` wrote into a trainer built with the same
    /// model shape and configuration. Every number is checked before anything
    /// changes: `adam_step` in 0...2⁴⁰ (and, given `batchesPerEpoch`, exactly
    /// `epochs_done` × that), `epochs_done` in 0...10,000 and equal to the
    /// history's length, each history row numbered in order with finite,
    /// non-negative values (accuracies in 0...1), `rng_state` four unsigned
    /// integers not all zero (xoshiro never leaves the zero state, so a shuffle
    /// with it would never end), and every tensor finite (Adam's v ≥ 0). A bad
    /// file throws an error naming the file and the field, and the trainer is unchanged.
    public static func restoreTrainingState(_ trainer: Trainer, from url: URL, batchesPerEpoch: Int? = nil) throws {
        let file = try Safetensors.read(from: url)
        func fail(_ problem: String) -> Error { SafetensorsError(source: url.path, problem: problem) }
        guard let model = file.metadata["model"] else {
            throw fail("has no training state (adam_step, epochs_done, rng_state, history): not a resume checkpoint")
        }
        guard model == trainer.model.name else {
            throw fail("is a checkpoint of model '\(model)', not '\(trainer.model.name)'")
        }
        guard let stepText = file.metadata["adam_step"], let epochsText = file.metadata["epochs_done"],
              let rngText = file.metadata["rng_state"], let historyText = file.metadata["history"] else {
            throw fail("has no training state (adam_step, epochs_done, rng_state, history): not a resume checkpoint")
        }
        guard let step = Int(stepText), (0...maxAdamStep).contains(step) else {
            throw fail("metadata \"adam_step\" is '\(stepText)', expected an integer in 0...\(maxAdamStep)")
        }
        guard let epochs = Int(epochsText), (0...maxEpochs).contains(epochs) else {
            throw fail("metadata \"epochs_done\" is '\(epochsText)', expected an integer in 0...\(maxEpochs)")
        }
        let words = rngText.split(separator: ",", omittingEmptySubsequences: false).map { UInt64($0) }
        guard words.count == 4, words.allSatisfy({ $0 != nil }) else {
            throw fail("metadata \"rng_state\" is '\(rngText.prefix(80))', expected four unsigned integers separated by commas")
        }
        guard words.contains(where: { $0 != 0 }) else {
            throw fail("metadata \"rng_state\" is all zeros, a state the generator can never be in")
        }
        let history: [EpochRecord]
        do { history = try decodeHistory(historyText) } catch { throw fail("metadata \"history\": \(error)") }
        guard history.count == epochs else {
            throw fail("metadata \"history\" has \(history.count) epochs, but \"epochs_done\" is \(epochs)")
        }
        if let b = batchesPerEpoch {
            let (steps, overflow) = epochs.multipliedReportingOverflow(by: b)
            guard !overflow && step == steps else {
                throw fail("metadata \"adam_step\" is \(step), but \(epochs) epochs of \(b) batches take \(steps) steps")
            }
        }
        var routerStates: [(String, [UInt64])] = []
        for (name, current) in trainer.model.randomStates {
            let key = "rng_state." + name
            guard let text = file.metadata[key] else { throw fail("has no \"\(key)\" (the router's generator state)") }
            let words = text.split(separator: ",", omittingEmptySubsequences: false).map { UInt64($0) }
            guard words.count == current.count, !words.contains(nil) else {
                throw fail("metadata \"\(key)\" must be \(current.count) comma-separated unsigned integers, got '\(text.prefix(80))'")
            }
            routerStates.append((name, words.map { $0! }))
        }
        let named = trainer.model.namedParameters
        let m = try named.map { try file.tensor("optimizer.m." + $0.name, shape: $0.parameter.value.shape) }
        let v = try named.map { try file.tensor("optimizer.v." + $0.name, shape: $0.parameter.value.shape) }
        for (p, (mi, vi)) in zip(named, zip(m, v)) {
            try requireFinite(mi, "optimizer.m." + p.name, url)
            try requireFinite(vi, "optimizer.v." + p.name, url)
            if vi.data.contains(where: { $0 < 0 }) {
                throw fail("tensor 'optimizer.v.\(p.name)' has a negative value; Adam's second moment is never negative")
            }
        }
        try load(named, from: file, url: url)
        try loadBuffers(into: trainer.model, from: file, url: url)
        for (name, words) in routerStates {
            do { try trainer.model.restoreRandomState(named: name, words: words) } catch {
                throw fail("metadata \"rng_state.\(name)\": \(error)")
            }
        }
        trainer.optimizer.restore(step: step, m: m, v: v)
        trainer.epochsDone = epochs
        trainer.rng = Xoshiro256(state: (words[0]!, words[1]!, words[2]!, words[3]!))
        trainer.history = history
    }

    /// A tensor read from `url` must hold finite numbers only: a NaN or ∞ weight
    /// would make every loss after it NaN.
    static func requireFinite(_ t: Tensor, _ name: String, _ url: URL) throws {
        if let i = t.data.firstIndex(where: { !$0.isFinite }) {
            throw SafetensorsError(source: url.path, problem: "tensor '\(name)' holds \(t.data[i]) at element \(i); expected finite numbers")
        }
    }

    // The history travels as JSON text in the metadata (safetensors metadata is string → string).
    static func encodeHistory(_ h: [EpochRecord]) -> String {
        let rows = h.map { [Double($0.epoch), $0.trainLoss, $0.auxLoss, $0.trainAccuracy, $0.testAccuracy, $0.seconds] }
        // Doubles as their exact decimal text, NaN as null, so the round trip is exact.
        return "[" + rows.map { "[" + $0.map { $0.isNaN ? "null" : "\($0)" }.joined(separator: ",") + "]" }
            .joined(separator: ",") + "]"
    }

    /// The rows `encodeHistory` wrote. Each row is [epoch, train loss, aux loss,
    /// train accuracy, test accuracy, seconds]: the epoch must be the row's
    /// number (1, 2, …), the losses and seconds finite and ≥ 0, the accuracies in
    /// 0...1; test accuracy may be null (NaN: the epoch was not evaluated).
    static func decodeHistory(_ text: String) throws -> [EpochRecord] {
        struct Problem: Error, CustomStringConvertible { let description: String }
        // JSONDecoder, not JSONSerialization: on Linux the latter parses some
        // decimals one ulp off, and a resumed run must carry its history exactly.
        guard let rows = try? JSONDecoder().decode([[Double?]].self, from: Data(text.utf8)) else {
            throw Problem(description: "is not a JSON list of rows of numbers")
        }
        var out: [EpochRecord] = []
        for (i, row) in rows.enumerated() {
            guard row.count == 6 else { throw Problem(description: "row \(i + 1) has \(row.count) values, expected 6") }
            let names = ["epoch", "train loss", "aux loss", "train accuracy", "test accuracy", "seconds"]
            for (j, value) in row.enumerated() where !(j == 4 && value == nil) {
                // Accuracies are shares; losses and seconds are finite and non-negative.
                let limit = j == 3 || j == 4 ? 1.0 : Double.greatestFiniteMagnitude
                guard let x = value, x.isFinite, x >= 0, x <= limit else {
                    throw Problem(description: "row \(i + 1): \(names[j]) is \(value.map { "\($0)" } ?? "null"), expected a number in "
                                  + (limit == 1 ? "0...1" : "0 or more"))
                }
            }
            guard row[0] == Double(i + 1) else {
                throw Problem(description: "row \(i + 1) is numbered epoch \(row[0]!), expected \(i + 1)")
            }
            out.append(EpochRecord(epoch: i + 1, trainLoss: row[1]!, auxLoss: row[2]!, trainAccuracy: row[3]!,
                                   testAccuracy: row[4] ?? .nan, seconds: row[5]!))
        }
        return out
    }
}
