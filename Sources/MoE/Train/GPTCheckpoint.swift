// GPTCheckpoint: a trained language model in one safetensors file.
//
// The tensors are the model's parameters under `GPT.namedParameters` names
// ("embedding.token", "blocks.1.moe.experts.3.net.0.weight", …) and its routing
// buffers (the auxiliary-loss-free bias, "blocks.1.moe.balancing.0.bias"). The
// metadata (safetensors allows a string → string map) holds everything needed
// to rebuild the model without the command line that made it: the GPTConfig
// fields, the routing settings and the tokenizer, the last two as JSON. So
// `gpt-moe sample --checkpoint FILE` needs the file and nothing else. Written
// atomically, like every file here.
//
// The trainer that writes it: Notebooks/part4-gpt.md, §8.
import Foundation

public enum GPTCheckpoint {
    /// Writes the weights, the configuration and the tokenizer to `url`; `metadata` adds entries.
    public static func save(_ model: GPT, tokenizer: Tokenizer, to url: URL, metadata: [String: String] = [:]) throws {
        try Safetensors.write(model.namedParameters.map { ($0.name, $0.parameter.value) }
                                + model.namedBuffers.map { ($0.name, $0.value) },
                              metadata: metadata.merging(describe(model.config, tokenizer: tokenizer)) { _, new in new },
                              to: url)
    }

    /// The configuration and tokenizer as metadata entries.
    static func describe(_ c: GPTConfig, tokenizer: Tokenizer) -> [String: String] {
        ["format": "gpt-moe", "vocabulary_size": String(c.vocabularySize), "context_length": String(c.contextLength),
         "layers": String(c.layers), "width": String(c.width), "heads": String(c.heads), "hidden": String(c.hidden),
         "moe_layers": c.moeLayers.map(String.init).joined(separator: ","), "experts": String(c.experts),
         "routing": encode(c.routing), "router_seed": String(c.routerSeed), "tie_weights": String(c.tieWeights),
         "tokenizer": tokenizer.serialized()]
    }

    /// The routing settings as JSON text; numbers as their decimal text, so they come back exactly.
    static func encode(_ r: RoutingSetup) -> String {
        let object: [String: Any] = [
            "router": r.router, "k": r.k, "renormalize": r.renormalize, "order": r.order.rawValue,
            "temperature": ["\(r.temperature.start)", "\(r.temperature.end)", r.temperature.shape.rawValue],
            "expert_dropout": "\(r.expertDropout)", "capacity_factor": r.capacityFactor.map { "\($0)" } ?? "none",
            "overflow": r.overflow.rawValue, "shared_experts": r.sharedExperts, "balancing": r.balancing,
            "aux_weight": "\(r.auxWeight)", "z_weight": "\(r.zWeight)", "bias_rate": "\(r.biasRate)",
            "groups": r.groups, "top_groups": r.topGroups, "routed_scaling": "\(r.routedScaling)",
            "expert_choice_factor": "\(r.expertChoiceFactor)",
            "gate_noise": r.gateNoise.rawValue, "gate_bias": r.gateBias,
        ]
        let data = try! JSONSerialization.data(withJSONObject: object, options: [.sortedKeys])
        return String(decoding: data, as: UTF8.self)
    }

    /// The settings `encode` wrote, or nil if the text is not such an object.
    static func decodeRouting(_ text: String) -> RoutingSetup? {
        guard let o = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else { return nil }
        func float(_ key: String) -> Float? { (o[key] as? String).flatMap(Float.init) }
        guard let router = o["router"] as? String, let k = o["k"] as? Int, let renormalize = o["renormalize"] as? Bool,
              let order = (o["order"] as? String).flatMap(TopKGating.Order.init(rawValue:)),
              let t = o["temperature"] as? [String], t.count == 3, let start = Float(t[0]), let end = Float(t[1]),
              let shape = TemperatureSchedule.Shape(rawValue: t[2]),
              let dropout = float("expert_dropout"), let capacity = o["capacity_factor"] as? String,
              let overflow = (o["overflow"] as? String).flatMap(Capacity.Overflow.init(rawValue:)),
              let shared = o["shared_experts"] as? Int, let balancing = o["balancing"] as? [String],
              let aux = float("aux_weight"), let z = float("z_weight"), let bias = float("bias_rate"),
              let groups = o["groups"] as? Int, let topGroups = o["top_groups"] as? Int,
              let scaling = float("routed_scaling"), let choice = (o["expert_choice_factor"] as? String).flatMap(Double.init)
        else { return nil }
        // Checkpoints written before the gate settings existed had a biased, noiseless gate.
        var r = RoutingSetup.gptDefault
        if let text = o["gate_noise"] as? String {
            guard let noise = TopKGating.Noise(rawValue: text) else { return nil }
            r.gateNoise = noise
        }
        if let b = o["gate_bias"] { guard let bias = b as? Bool else { return nil }; r.gateBias = bias }
        r.router = router; r.k = k; r.renormalize = renormalize; r.order = order
        r.temperature = TemperatureSchedule(start: start, end: end, shape: shape)
        r.expertDropout = dropout
        if capacity != "none" { guard let c = Double(capacity) else { return nil }; r.capacityFactor = c }
        r.overflow = overflow; r.sharedExperts = shared; r.balancing = balancing
        r.auxWeight = aux; r.zWeight = z; r.biasRate = bias
        r.groups = groups; r.topGroups = topGroups; r.routedScaling = scaling; r.expertChoiceFactor = choice
        return r
    }

    /// Rebuilds the model and tokenizer saved by `save`.
    /// - Throws: `SafetensorsError` / `TextError` naming the file and what is wrong with it.
    public static func load(from url: URL) throws -> (model: GPT, tokenizer: Tokenizer, metadata: [String: String]) {
        let file = try Safetensors.read(from: url)
        let m = file.metadata
        func fail(_ problem: String) -> Error { SafetensorsError(source: url.path, problem: problem) }
        guard m["format"] == "gpt-moe" else { throw fail("is not a gpt-moe checkpoint (no \"format\": \"gpt-moe\" in its metadata)") }
        func int(_ key: String) throws -> Int {
            guard let v = m[key].flatMap(Int.init), v >= 0 else { throw fail("metadata \"\(key)\" is missing or not a count") }
            return v
        }
        var c = GPTConfig()
        c.vocabularySize = try int("vocabulary_size"); c.contextLength = try int("context_length")
        c.layers = try int("layers"); c.width = try int("width"); c.heads = try int("heads")
        c.hidden = try int("hidden"); c.experts = try int("experts")
        let layers = (m["moe_layers"] ?? "").split(separator: ",").map { Int($0) }
        guard layers.allSatisfy({ $0 != nil && $0! >= 0 && $0! < c.layers }) else { throw fail("metadata \"moe_layers\" is not a list of block indices") }
        c.moeLayers = layers.map { $0! }
        guard let tie = m["tie_weights"].flatMap(Bool.init) else { throw fail("metadata \"tie_weights\" is missing") }
        guard let routing = m["routing"].flatMap(decodeRouting), let seed = m["router_seed"].flatMap(UInt64.init) else {
            throw fail("metadata \"routing\" or \"router_seed\" is missing or not readable")
        }
        c.tieWeights = tie; c.routing = routing; c.routerSeed = seed
        guard c.vocabularySize > 0, c.contextLength > 0, c.layers > 0, c.heads > 0, c.width % c.heads == 0,
              c.hidden > 0, c.experts >= 1 else {
            throw fail("metadata describes an impossible model: \(c)")
        }
        if !c.moeLayers.isEmpty {
            do { try c.routing.validate(experts: c.experts) } catch { throw fail("metadata \"routing\": \(error)") }
        }
        // The metadata says how big a model to build; the tensors say how big a
        // model the file holds. Check them against each other *before* building,
        // so a corrupt or hostile header cannot make us allocate a huge model: the
        // tensors below were read from the file, so they bound its size.
        func requireShape(_ name: String, _ shape: [Int]) throws {
            guard let t = file.tensors[name] else { throw fail("metadata describes tensor '\(name)', which the file does not hold") }
            guard t.shape == shape else {
                throw fail("tensor '\(name)' has shape \(t.shape), but the metadata describes \(shape)")
            }
        }
        try requireShape("embedding.token", [c.vocabularySize, c.width])
        try requireShape("embedding.position", [c.contextLength, c.width])
        try requireShape("blocks.\(c.layers - 1).ln1.weight", [c.width])
        guard file.tensors["blocks.\(c.layers).ln1.weight"] == nil else {
            throw fail("the file holds more blocks than the metadata's \(c.layers)")
        }
        for block in 0..<c.layers {
            if c.moeLayers.contains(block) {
                try requireShape("blocks.\(block).moe.experts.\(c.experts - 1).net.0.weight", [c.hidden, c.width])
            } else {
                try requireShape("blocks.\(block).mlp.net.0.weight", [c.hidden, c.width])
            }
        }
        guard let text = m["tokenizer"] else { throw fail("metadata has no \"tokenizer\"") }
        let tokenizer = try TokenizerFile.decode(text, source: url.path)
        guard tokenizer.vocabularySize == c.vocabularySize else {
            throw fail("tokenizer has \(tokenizer.vocabularySize) tokens, the model \(c.vocabularySize)")
        }
        var rng = Xoshiro256(seed: 0)   // every value is overwritten by the file
        let model = GPT(config: c, rng: &rng)
        try Checkpoint.load(model.namedParameters, from: file)
        for (name, current) in model.namedBuffers where file.order.contains(name) {
            try model.restoreBuffer(named: name, value: try file.tensor(name, shape: current.shape))
        }
        return (model, tokenizer, m)
    }
}
