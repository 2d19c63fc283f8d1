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

    /// The settings `encode` wrote. Throws a problem that names the field
    /// ("field \"k\" is missing or not an integer"); the caller adds the file.
    /// Only the form is checked here; `RoutingSetup.validate` checks the values.
    static func decodeRouting(_ text: String) throws -> RoutingSetup {
        struct Problem: Error, CustomStringConvertible { let description: String }
        guard let o = try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any] else {
            throw Problem(description: "is not a JSON object")
        }
        func missing(_ key: String, _ what: String) -> Problem { Problem(description: "field \"\(key)\" is missing or not \(what)") }
        func string(_ key: String) throws -> String {
            guard let v = o[key] as? String else { throw missing(key, "a string") }
            return v
        }
        func int(_ key: String) throws -> Int {
            // JSONSerialization gives an NSNumber, and 2.5 may cast to Int too: compare back.
            guard let v = o[key] as? Int, (o[key] as? Double).map({ $0 == Double(v) }) ?? true else {
                throw missing(key, "an integer")
            }
            return v
        }
        func number<T: LosslessStringConvertible>(_ key: String, _ text: String) throws -> T {
            guard let v = T(text) else { throw missing(key, "a number written as text") }
            return v
        }
        // Checkpoints written before the gate settings existed had a biased, noiseless gate.
        var r = RoutingSetup.gptDefault
        if let text = o["gate_noise"] {
            guard let name = text as? String, let noise = TopKGating.Noise(rawValue: name) else {
                throw missing("gate_noise", "learned or none")
            }
            r.gateNoise = noise
        }
        if let b = o["gate_bias"] {
            guard let bias = b as? Bool else { throw missing("gate_bias", "true or false") }
            r.gateBias = bias
        }
        r.router = try string("router")
        r.k = try int("k")
        guard let renormalize = o["renormalize"] as? Bool else { throw missing("renormalize", "true or false") }
        r.renormalize = renormalize
        guard let order = TopKGating.Order(rawValue: try string("order")) else { throw missing("order", "softmax-topk or topk-softmax") }
        r.order = order
        guard let t = o["temperature"] as? [String], t.count == 3, let start = Float(t[0]), let end = Float(t[1]),
              let shape = TemperatureSchedule.Shape(rawValue: t[2]) else {
            throw missing("temperature", "[start, end, shape]")
        }
        r.temperature = TemperatureSchedule(start: start, end: end, shape: shape)
        r.expertDropout = try number("expert_dropout", try string("expert_dropout"))
        let capacity = try string("capacity_factor")
        r.capacityFactor = capacity == "none" ? nil : try number("capacity_factor", capacity) as Double
        guard let overflow = Capacity.Overflow(rawValue: try string("overflow")) else {
            throw missing("overflow", "token-order, score or choice-order")
        }
        r.overflow = overflow
        r.sharedExperts = try int("shared_experts")
        guard let balancing = o["balancing"] as? [String] else { throw missing("balancing", "a list of strings") }
        r.balancing = balancing
        r.auxWeight = try number("aux_weight", try string("aux_weight"))
        r.zWeight = try number("z_weight", try string("z_weight"))
        r.biasRate = try number("bias_rate", try string("bias_rate"))
        r.groups = try int("groups")
        r.topGroups = try int("top_groups")
        r.routedScaling = try number("routed_scaling", try string("routed_scaling"))
        r.expertChoiceFactor = try number("expert_choice_factor", try string("expert_choice_factor"))
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
        guard let routingText = m["routing"] else { throw fail("metadata \"routing\" is missing") }
        let routing: RoutingSetup
        do { routing = try decodeRouting(routingText) } catch { throw fail("metadata \"routing\": \(error)") }
        guard let seed = m["router_seed"].flatMap(UInt64.init) else {
            throw fail("metadata \"router_seed\" is missing or not a non-negative integer")
        }
        c.tieWeights = tie; c.routing = routing; c.routerSeed = seed
        guard c.vocabularySize > 0, c.contextLength > 0, c.layers > 0, c.heads > 0, c.width % c.heads == 0,
              c.hidden > 0, c.experts >= 1 else {
            throw fail("metadata describes an impossible model: \(c)")
        }
        // The same checks as the command line's (RoutingSetup.validate), before
        // any layer is built: a layer's initialiser would stop on what they reject.
        // A dense model's routing is checked too: a damaged file is not accepted in silence.
        do { try c.routing.validate(experts: c.experts) } catch let e as RoutingSetupError {
            throw fail("metadata \"routing\": \(e.fileDescription)")
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
        let tokenizer = try TokenizerFile.decode(text, source: url.path, expectedVocabularySize: c.vocabularySize)
        guard tokenizer.vocabularySize == c.vocabularySize else {
            throw fail("tokenizer has \(tokenizer.vocabularySize) tokens, the model \(c.vocabularySize)")
        }
        var rng = Xoshiro256(seed: 0)   // every value is overwritten by the file
        let model = GPT(config: c, rng: &rng)
        try Checkpoint.load(model.namedParameters, from: file, url: url)
        for (name, current) in model.namedBuffers where file.order.contains(name) {
            try model.restoreBuffer(named: name, value: try file.tensor(name, shape: current.shape))
        }
        return (model, tokenizer, m)
    }
}
