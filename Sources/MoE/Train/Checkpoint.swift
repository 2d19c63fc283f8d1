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
        try load(model.namedParameters, from: file)
        try loadBuffers(into: model, from: file, url: url)
    }

    /// Buffers the file has, with the shape the model expects.
    static func loadBuffers(into model: Classifier, from file: SafetensorsFile, url: URL) throws {
        for (name, current) in model.namedBuffers where file.order.contains(name) {
            let value = try file.tensor(name, shape: current.shape)
            do { try model.restoreBuffer(named: name, value: value) } catch {
                throw SafetensorsError(source: url.path, problem: "\(error)")
            }
        }
    }

    static func load(_ named: [(name: String, parameter: Parameter)], from file: SafetensorsFile) throws {
        // Read every tensor first, so a bad file changes nothing.
        let values = try named.map { try file.tensor($0.name, shape: $0.parameter.value.shape) }
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

    /// Restores what `saveTrainingState` wrote into a trainer built with the same
    /// model shape and configuration.
    public static func restoreTrainingState(_ trainer: Trainer, from url: URL) throws {
        let file = try Safetensors.read(from: url)
        func fail(_ problem: String) -> Error { SafetensorsError(source: url.path, problem: problem) }
        guard let model = file.metadata["model"] else {
            throw fail("has no training state (adam_step, epochs_done, rng_state, history): not a resume checkpoint")
        }
        guard model == trainer.model.name else {
            throw fail("is a checkpoint of model '\(model)', not '\(trainer.model.name)'")
        }
        guard let step = file.metadata["adam_step"].flatMap(Int.init),
              let epochs = file.metadata["epochs_done"].flatMap(Int.init),
              let words = file.metadata["rng_state"]?.split(separator: ",").compactMap({ UInt64($0) }), words.count == 4,
              let history = file.metadata["history"].flatMap(decodeHistory) else {
            throw fail("has no training state (adam_step, epochs_done, rng_state, history): not a resume checkpoint")
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
        try load(named, from: file)
        try loadBuffers(into: trainer.model, from: file, url: url)
        for (name, words) in routerStates {
            do { try trainer.model.restoreRandomState(named: name, words: words) } catch {
                throw fail("metadata \"rng_state.\(name)\": \(error)")
            }
        }
        trainer.optimizer.restore(step: step, m: m, v: v)
        trainer.epochsDone = epochs
        trainer.rng = Xoshiro256(state: (words[0], words[1], words[2], words[3]))
        trainer.history = history
    }

    // The history travels as JSON text in the metadata (safetensors metadata is string → string).
    static func encodeHistory(_ h: [EpochRecord]) -> String {
        let rows = h.map { [Double($0.epoch), $0.trainLoss, $0.auxLoss, $0.trainAccuracy, $0.testAccuracy, $0.seconds] }
        // Doubles as their exact decimal text, NaN as null, so the round trip is exact.
        return "[" + rows.map { "[" + $0.map { $0.isNaN ? "null" : "\($0)" }.joined(separator: ",") + "]" }
            .joined(separator: ",") + "]"
    }

    static func decodeHistory(_ text: String) -> [EpochRecord]? {
        // JSONDecoder, not JSONSerialization: on Linux the latter parses some
        // decimals one ulp off, and a resumed run must carry its history exactly.
        guard let rows = try? JSONDecoder().decode([[Double?]].self, from: Data(text.utf8)) else { return nil }
        var out: [EpochRecord] = []
        for row in rows {
            guard row.count == 6 else { return nil }
            let v = row.map { $0 ?? .nan }
            out.append(EpochRecord(epoch: Int(v[0]), trainLoss: v[1], auxLoss: v[2], trainAccuracy: v[3],
                                   testAccuracy: v[4], seconds: v[5]))
        }
        return out
    }
}
